//! End-to-end tests against the real `eddy` binary for the app config file, the admin API,
//! `eddy export`, offline writes that sync after a server restart, and a fresh client
//! downloading 100,000 objects.

// Helpers outside `#[test]` fail loudly by design; a thread reads the child's stdout, and the
// clippy ban on spawning is for eddy-core only.
#![allow(clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::process::{Command, Stdio};
use std::time::Duration;

mod support;

use eddy_core::sim::sim_schema;
use eddy_core::store::ApplyError;
use eddy_core::value::{PrimaryKey, Value};
use eddy_server::client::Client;
use support::{anonymous_token, http, set_item, Server, WAIT};

/// Debug builds integrate 100,000 objects slowly.
const LONG_WAIT: Duration = Duration::from_secs(300);

/// Runs the binary to completion with `args`; returns success, stdout and stderr.
fn run_eddy(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
        std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
        let _ = tx.send((child.wait().unwrap().success(), out, err));
    });
    rx.recv_timeout(LONG_WAIT)
        .expect("eddy did not finish in time")
}

/// Percent-encodes everything but ASCII letters and digits.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_sets_up_the_app_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("app.toml");
    std::fs::write(
        &config,
        r#"
app_id = "config-test"
listen = "127.0.0.1:1"
data_dir = "from-file"

[schema.Item]
primaryKey = "_id"
properties = { _id = "int", n = "int?" }

[auth]
anonymous = false
access_token_ttl_secs = 120

[limits]
idle_timeout_secs = 60
"#,
    )
    .unwrap();
    let flag_dir = dir.path().join("from-flag");
    let server = Server::start(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        flag_dir.as_os_str(),
    ]);
    assert!(flag_dir.join("eddy.sqlite").exists(), "--data-dir wins");
    assert!(!dir.path().join("from-file").exists());
    let (status, body) = http(server.addr, "POST", "/api/auth/anonymous", &[], None).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("disabled"),
        "{body}"
    );
    let (status, collections) = server.admin("/api/admin/collections").await;
    assert_eq!(status, 200);
    assert_eq!(
        collections,
        serde_json::json!([{"name": "Item", "kind": "top_level", "count": 0}])
    );
}

#[test]
fn unknown_keys_and_bad_roles_in_a_config_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("app.toml");
    let data = dir.path().join("data");
    let serve = |text: &str| {
        std::fs::write(&config, text).unwrap();
        run_eddy(&[
            "serve".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ])
    };
    let (ok, _, err) = serve("app_id = \"x\"\n[auth]\nanonymus = true\n");
    assert!(!ok);
    assert!(err.contains("app.toml:3"), "{err}");
    assert!(err.contains("anonymus"), "{err}");
    let (ok, _, err) = serve(
        "app_id = \"x\"\n\n[roles.Task]\nread = { owner = { \"$bogus\" = 1 } }\nwrite = true\n",
    );
    assert!(!ok);
    assert!(err.contains("app.toml:3"), "{err}");
    assert!(err.contains("[roles]"), "{err}");
    assert!(err.contains("Task.read"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_the_key_and_show_what_clients_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_schema(dir.path(), "127.0.0.1:0");
    for path in [
        "/api/admin/collections",
        "/api/admin/collections/Item/documents",
        "/api/admin/users",
        "/api/admin/sessions",
    ] {
        let (status, body) = http(server.addr, "GET", path, &[], None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"], "unauthorized");
        let (status, body) = http(
            server.addr,
            "GET",
            path,
            &[("x-eddy-admin-key", "wrong")],
            None,
        )
        .await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"], "forbidden");
    }

    let token = anonymous_token(server.addr).await;
    let client = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
    client
        .write(|tx| {
            for key in 0..25 {
                set_item(tx, key, key * 2)?;
            }
            Ok::<_, ApplyError>(())
        })
        .unwrap();
    client.wait_for_upload(WAIT).await.unwrap();
    let ident = client.client_file_ident().unwrap();

    let (status, collections) = server.admin("/api/admin/collections").await;
    assert_eq!(status, 200);
    let item = collections
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Item")
        .unwrap();
    assert_eq!(item["count"], 25);
    assert_eq!(item["kind"], "top_level");

    let mut keys = Vec::new();
    let mut path = "/api/admin/collections/Item/documents?limit=10".to_string();
    loop {
        let (status, page) = server.admin(&path).await;
        assert_eq!(status, 200, "{page}");
        for doc in page["documents"].as_array().unwrap() {
            assert_eq!(doc["n"].as_i64().unwrap(), doc["_id"].as_i64().unwrap() * 2);
            keys.push(doc["_id"].as_i64().unwrap());
        }
        match page["next"].as_str() {
            Some(next) => {
                let next = percent_encode(next);
                path = format!("/api/admin/collections/Item/documents?limit=10&after={next}")
            }
            None => break,
        }
    }
    assert_eq!(keys, (0..25).collect::<Vec<_>>());
    let (status, body) = server
        .admin("/api/admin/collections/Item/documents?limit=0")
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, page) = server
        .admin(&format!(
            "/api/admin/collections/Item/documents?limit=2&after={}",
            percent_encode(r#"{"$numberLong":"20"}"#)
        ))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["documents"][0]["_id"], 21);
    assert_eq!(page["next"], "22");

    let (status, users) = server.admin("/api/admin/users").await;
    assert_eq!(status, 200);
    assert_eq!(users.as_array().unwrap().len(), 1);
    assert_eq!(users[0]["kind"], "anonymous");
    let (status, sessions) = server.admin("/api/admin/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(sessions[0]["client_file_ident"].as_u64(), Some(ident));
    assert_eq!(sessions[0]["user"], users[0]["id"]);
    // The client's declared schema (unchanged from the server's, so accepted) and its write.
    let (status, summary) = server.admin("/api/admin/history-count").await;
    assert_eq!(status, 200);
    assert_eq!(summary["count"], 2);

    // eddy export reads the data directory directly, with the server stopped.
    drop(client);
    server.kill9();
    let data = dir.path().join("data");
    let (ok, out, err) = run_eddy(&[
        "export".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--collection".as_ref(),
        "Item".as_ref(),
    ]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 25);
    assert!(lines.iter().all(|l| l["collection"] == "Item"));
    assert_eq!(lines[7]["document"], serde_json::json!({"_id": 7, "n": 14}));
    let (ok, _, err) = run_eddy(&[
        "export".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--collection".as_ref(),
        "Nope".as_ref(),
    ]);
    assert!(!ok);
    assert!(err.contains("\"Nope\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_writes_sync_after_the_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let addr = server.addr;
    let token = anonymous_token(addr).await;
    let writer = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
    writer.write(|tx| set_item(tx, 1, 1)).unwrap();
    writer.wait_for_upload(WAIT).await.unwrap();

    server.kill9();
    for key in 2..=10 {
        writer.write(|tx| set_item(tx, key, key)).unwrap();
    }
    let server = Server::with_schema(dir.path(), &addr.to_string());
    assert_eq!(server.addr, addr);
    // The writer reconnects by itself (backoff) and uploads what it wrote offline.
    writer.wait_for_upload(WAIT).await.unwrap();
    assert!(writer.progress().connects >= 2);

    let token = anonymous_token(addr).await;
    let reader = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
    reader.wait_for_download(WAIT).await.unwrap();
    let seen: Vec<(i64, Option<Value>)> = reader
        .read(|s| {
            s.objects("Item")
                .map(|(k, doc)| match k {
                    PrimaryKey::Int(k) => (*k, doc.get("n").cloned()),
                    other => panic!("unexpected key {other:?}"),
                })
                .collect()
        })
        .unwrap();
    let expected: Vec<(i64, Option<Value>)> = (1..=10).map(|k| (k, Some(Value::Int(k)))).collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_downloads_100_000_objects() {
    const OBJECTS: i64 = 100_000;
    const PER_CHANGESET: i64 = 25_000;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let token = anonymous_token(server.addr).await;
    let writer = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
    for start in (0..OBJECTS).step_by(PER_CHANGESET as usize) {
        writer
            .write(|tx| {
                for key in start..start + PER_CHANGESET {
                    set_item(tx, key, key)?;
                }
                Ok::<_, ApplyError>(())
            })
            .unwrap();
    }
    writer.wait_for_upload(LONG_WAIT).await.unwrap();
    drop(writer);

    let token = anonymous_token(server.addr).await;
    let reader = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
    reader.wait_for_download(LONG_WAIT).await.unwrap();
    let (count, sum) = reader
        .read(|s| {
            let sum: i64 = s
                .objects("Item")
                .map(|(_, doc)| match doc.get("n") {
                    Some(Value::Int(n)) => *n,
                    other => panic!("n missing: {other:?}"),
                })
                .sum();
            (s.len("Item"), sum)
        })
        .unwrap();
    assert_eq!(count as i64, OBJECTS);
    assert_eq!(sum, OBJECTS * (OBJECTS - 1) / 2);
}
