//! The native client's durable client file against the real `eddy` binary: a reopened file keeps
//! its objects, pending uploads, ingest queue and subscriptions; a writer killed with SIGKILL
//! after its writes returned loses none of them, and the server ends up holding each once.

// Helpers outside `#[test]` fail loudly by design; the clippy bans are for eddy-core.
#![allow(clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

mod support;

use eddy_core::changeset::Path as FieldPath;
use eddy_core::protocol::{Subscription, SubscriptionSet};
use eddy_core::schema::{CollectionKind, PrimaryKeyType};
use eddy_core::sim::sim_schema;
use eddy_core::value::{Document, PrimaryKey, Value};
use eddy_server::client::{Client, ClientError};
use support::{anonymous_token, Server, WAIT};

/// A URL nothing listens on: port 1 refuses connections, so nothing uploads.
const NOWHERE: &str = "ws://127.0.0.1:1/api/sync";

fn write_item(client: &Client, key: i64) {
    client
        .write(|tx| {
            let pk = PrimaryKey::Int(key);
            tx.create("Item", pk.clone())?;
            tx.set(FieldPath::field("Item", pk.clone(), "n"), Value::Int(key))?;
            let mut reading = Document::new();
            reading.insert("value".into(), Value::Int(key));
            reading.insert("samples".into(), Value::List(Default::default()));
            tx.ingest("Reading", pk, reading)
        })
        .unwrap();
}

/// The server's object count of `collection` (ingested ones included).
async fn server_count(server: &Server, collection: &str) -> u64 {
    let (status, list) = server.admin("/api/admin/collections").await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == collection)
        .map_or(0, |c| c["count"].as_u64().unwrap())
}

/// Waits until the client's local `Item` keys are exactly `expected`, in key order.
async fn wait_for_items(client: &Client, expected: &[i64]) {
    let expected: Vec<PrimaryKey> = expected.iter().copied().map(PrimaryKey::Int).collect();
    let keys = || -> Vec<PrimaryKey> {
        client
            .read(|s| s.objects("Item").map(|(k, _)| k.clone()).collect())
            .unwrap()
    };
    let mut progress = client.watch_progress();
    let waited = tokio::time::timeout(WAIT, async {
        while keys() != expected {
            progress.changed().await.unwrap();
        }
    })
    .await;
    assert!(waited.is_ok(), "the local objects stayed {:?}", keys());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_file_keeps_objects_pending_uploads_ingest_queue_and_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.eddy");
    let subscriptions = SubscriptionSet {
        version: 0,
        subscriptions: vec![Subscription {
            name: "big".into(),
            collection: "Item".into(),
            query: "n > 2".into(),
        }],
    };
    let before = {
        let client = Client::open(&file, NOWHERE, "t", sim_schema()).unwrap();
        for key in 1..=5 {
            write_item(&client, key);
        }
        client
            .write(|tx| tx.erase("Item", PrimaryKey::Int(5)))
            .unwrap();
        write_item(&client, 6);
        client.update_subscriptions(subscriptions.clone()).unwrap();
        (client.store().unwrap(), client.ingest_queue().unwrap())
    };
    assert_eq!(before.1.objects, 6);

    let client = Client::open(&file, NOWHERE, "t", sim_schema()).unwrap();
    let store = client.store().unwrap();
    assert_eq!(store.digest(), before.0.digest());
    assert_eq!(store.len("Item"), 5);
    assert_eq!(client.ingest_queue().unwrap(), before.1);
    drop(client);

    // Now with a server: everything uploads once, under the subscription set kept in the file.
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let token = anonymous_token(server.addr).await;
    let client = Client::open(&file, &server.sync_url(), &token, sim_schema()).unwrap();
    client.wait_for_upload(WAIT).await.unwrap();
    client.wait_for_download(WAIT).await.unwrap();
    assert_eq!(client.ingest_queue().unwrap().objects, 0);
    assert_eq!(server_count(&server, "Item").await, 5);
    assert_eq!(server_count(&server, "Reading").await, 6);
    // Objects outside the reopened file's subscription (n > 2) leave it.
    wait_for_items(&client, &[3, 4, 6]).await;
}

/// Writes from async code: many at once on a single-threaded runtime, each durable when its
/// future resolves.
#[tokio::test]
async fn async_writes_are_durable_when_they_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.eddy");
    {
        let client = Client::open(&file, NOWHERE, "t", sim_schema()).unwrap();
        let writes = (1..=50).map(|key| {
            client.write_async(move |tx| {
                let pk = PrimaryKey::Int(key);
                tx.create("Item", pk.clone())?;
                tx.set(FieldPath::field("Item", pk, "n"), Value::Int(key))
            })
        });
        for written in futures_util::future::join_all(writes).await {
            written.unwrap();
        }
        let refused = client
            .write_async(|tx| tx.create("Nope", PrimaryKey::Int(1)))
            .await;
        assert!(matches!(refused, Err(ClientError::Write(_))), "{refused:?}");
    }
    let client = Client::open(&file, NOWHERE, "t", sim_schema()).unwrap();
    assert_eq!(client.store().unwrap().len("Item"), 50);
}

#[tokio::test]
async fn a_reopened_file_gains_what_the_declared_schema_added_since() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schema.eddy");
    let mut first = sim_schema();
    first.collections.remove("Reading");
    {
        let client = Client::open(&file, NOWHERE, "t", first).unwrap();
        // A schema change made locally is stored with the file.
        client
            .write(|tx| {
                tx.add_collection(
                    "Note",
                    CollectionKind::TopLevel,
                    Some(PrimaryKeyType::String),
                )
            })
            .unwrap();
    }
    let client = Client::open(&file, NOWHERE, "t", sim_schema()).unwrap();
    let schema = client.read(|s| s.schema().clone()).unwrap();
    assert!(
        schema.collection("Note").is_some(),
        "the stored schema stays"
    );
    write_item(&client, 1);
    assert_eq!(client.ingest_queue().unwrap().objects, 1);
}

/// `durable_writer`, built next to this test (`target/<profile>/examples/`).
fn durable_writer() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "eddy-server", "--example", "durable_writer"]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build.status().unwrap();
    assert!(
        status.success(),
        "building durable_writer failed ({status})"
    );
    profile_dir.join(format!(
        "examples/durable_writer{}",
        std::env::consts::EXE_SUFFIX
    ))
}

/// Runs the writer until it printed `done`, then kills it with SIGKILL.
fn write_then_kill(binary: &Path, url: &str, token: &str, file: &Path, first: i64, items: i64) {
    let mut child: Child = Command::new(binary)
        .args(["--url", url, "--token", token, "--file"])
        .arg(file)
        .args(["--first", &first.to_string(), "--items", &items.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut written = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        if line == "done" {
            break;
        }
        written.push(line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let expected: Vec<String> = (first..first + items)
        .map(|k| format!("written {k}"))
        .collect();
    assert_eq!(
        written, expected,
        "the writer stopped before writing everything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_acknowledged_before_a_kill_9_upload_once_after_reopening() {
    let binary = tokio::task::spawn_blocking(durable_writer).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("writer.eddy");
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let token = anonymous_token(server.addr).await;

    // Offline: nothing uploads before the kill.
    write_then_kill(&binary, NOWHERE, &token, &file, 1, 40);
    // Online: the kill lands somewhere in the middle of uploading.
    write_then_kill(&binary, &server.sync_url(), &token, &file, 41, 160);

    let client = Client::open(&file, &server.sync_url(), &token, sim_schema()).unwrap();
    assert_eq!(client.read(|s| s.len("Item")).unwrap(), 200);
    client.wait_for_upload(WAIT).await.unwrap();
    assert_eq!(client.ingest_queue().unwrap().objects, 0);
    assert_eq!(server_count(&server, "Item").await, 200);
    assert_eq!(server_count(&server, "Reading").await, 200);
    // One more: the client file's declared schema, written when it was created.
    assert_eq!(
        server.history_count().await,
        201,
        "each write reaches the history exactly once"
    );
}

#[tokio::test]
async fn a_damaged_or_busy_file_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.eddy");
    std::fs::write(
        &garbage,
        b"this is not a client file, just some text.".repeat(200),
    )
    .unwrap();
    let err = Client::open(&garbage, NOWHERE, "t", sim_schema()).unwrap_err();
    assert!(matches!(err, ClientError::Storage(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("garbage.eddy"), "{text}");
    assert!(text.contains("not a database"), "{text}");

    let file = dir.path().join("busy.eddy");
    let first = Client::open(&file, NOWHERE, "t", sim_schema()).unwrap();
    let err = Client::open(&file, NOWHERE, "t", sim_schema()).unwrap_err();
    assert!(err.to_string().contains("open in another client"), "{err}");
    drop(first);
    Client::open(&file, NOWHERE, "t", sim_schema()).unwrap();
}

/// Copies a closed client file (and its write-ahead log, if SQLite left one) over `to`.
fn copy_file(from: &Path, to: &Path) {
    let wal = |p: &Path| PathBuf::from(format!("{}-wal", p.display()));
    std::fs::copy(from, to).unwrap();
    let _ = std::fs::remove_file(wal(to));
    if wal(from).exists() {
        std::fs::copy(wal(from), wal(to)).unwrap();
    }
}

fn create_item(client: &Client, key: i64) {
    client
        .write(|tx| {
            let pk = PrimaryKey::Int(key);
            tx.create("Item", pk.clone())?;
            tx.set(FieldPath::field("Item", pk, "n"), Value::Int(key))
        })
        .unwrap();
}

/// A client file restored from a copy taken before its last upload reuses that upload's client
/// version for its next write. The upload cursor names the version with the time the server's
/// changeset was made, so the file sees that it lost changes: it resets and recovers the new
/// write instead of dropping it as acknowledged, and the server keeps both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_restored_from_a_copy_resets_and_keeps_its_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.eddy");
    let copy = dir.path().join("copy.eddy");
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let token = anonymous_token(server.addr).await;
    let online = || Client::open(&file, &server.sync_url(), &token, sim_schema()).unwrap();

    let client = online();
    create_item(&client, 1);
    client.wait_for_upload(WAIT).await.unwrap();
    let old_ident = client.client_file_ident().unwrap();
    drop(client);
    copy_file(&file, &copy);

    let client = online();
    create_item(&client, 2);
    client.wait_for_upload(WAIT).await.unwrap();
    drop(client);
    assert_eq!(server_count(&server, "Item").await, 2);

    // Back to the copy: the write of item 2 is gone from the file, and item 3 takes its version.
    copy_file(&copy, &file);
    let client = Client::open(&file, NOWHERE, "t", sim_schema()).unwrap();
    create_item(&client, 3);
    drop(client);

    let client = online();
    wait_for_items(&client, &[1, 2, 3]).await;
    client.wait_for_upload(WAIT).await.unwrap();
    assert_eq!(
        server_count(&server, "Item").await,
        3,
        "item 3 reached the server"
    );
    assert_ne!(
        client.client_file_ident().unwrap(),
        old_ident,
        "the file was reset under a new ident"
    );
}
