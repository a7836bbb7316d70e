//! End-to-end tests of the native client's transactions, async open and token refresh against
//! the real `eddy` binary in its own process.

// Helpers outside `#[test]` fail loudly by design; scoped threads wait for another client inside
// a transaction, and the clippy ban on spawning is for eddy-core only.
#![allow(clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::path::Path;
use std::time::Duration;

mod support;

use eddy_core::changeset::Path as FieldPath;
use eddy_core::client::ResetMode;
use eddy_core::protocol::{ErrorCode, TransactResult};
use eddy_core::sim::sim_schema;
use eddy_core::store::{ApplyError, Store};
use eddy_core::value::{PrimaryKey, Value};
use eddy_server::client::{Client, ClientError, ClientOptions, ClientStorage};
use support::{anonymous_client, anonymous_token, http, set_item, Server, WAIT};

fn item_field(store: &Store, key: i64, field: &str) -> Option<Value> {
    store
        .get("Item", &PrimaryKey::Int(key))
        .and_then(|doc| doc.get(field).cloned())
}

/// Starts a server enforcing the simulation schema with extra flags.
fn server_with(dir: &Path, extra: &[&str]) -> Server {
    let schema_file = dir.join("schema.json");
    std::fs::write(
        &schema_file,
        eddy_core::schema_json::schema_to_json(&sim_schema()).to_string(),
    )
    .unwrap();
    let data = dir.join("data");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--schema".as_ref(),
        schema_file.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    Server::start(&args)
}

/// Registers an email user; returns its refresh token and first access token.
async fn register(server: &Server) -> (String, String) {
    let creds = serde_json::json!({"email": "t@example.com", "password": "correct horse"});
    let (status, body) = http(server.addr, "POST", "/api/auth/register", &[], Some(creds)).await;
    assert_eq!(status, 201, "{body}");
    (
        body["refresh_token"].as_str().unwrap().to_string(),
        body["access_token"].as_str().unwrap().to_string(),
    )
}

/// A fresh access token for the same user.
async fn fresh_token(server: &Server, refresh_token: &str) -> String {
    let request = serde_json::json!({ "refresh_token": refresh_token });
    let (status, body) = http(server.addr, "POST", "/api/auth/refresh", &[], Some(request)).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_is_accepted_and_a_conflicting_one_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    // A's task runs on a runtime of its own: it blocks on A's lock while A's transaction waits
    // for B below, and must not hold up B's task meanwhile.
    let a_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let a_token = anonymous_token(server.addr).await;
    let a = {
        let _enter = a_runtime.enter();
        Client::connect(&server.sync_url(), &a_token, sim_schema()).unwrap()
    };
    let b = anonymous_client(&server).await;
    a.write(|tx| set_item(tx, 1, 0)).unwrap();

    // The transaction waits for the plain write's upload by itself.
    let accepted = a.transact(WAIT, |tx| set_item(tx, 1, 1)).await.unwrap();
    assert!(
        matches!(accepted, TransactResult::Accepted { server_version } if server_version > 0),
        "{accepted:?}"
    );
    assert_eq!(
        a.read(|s| item_field(s, 1, "n")).unwrap(),
        Some(Value::Int(1)),
        "an accepted transaction changes the local state"
    );
    b.wait_for_download(WAIT).await.unwrap();
    assert_eq!(
        b.read(|s| item_field(s, 1, "n")).unwrap(),
        Some(Value::Int(1))
    );

    // B changes the object while A builds its transaction: A's connection is locked meanwhile,
    // so A's base cannot include B's change, which the server integrates first.
    let handle = tokio::runtime::Handle::current();
    let mut before = 0;
    let rejected = a
        .transact(WAIT, |tx| {
            b.write(|btx| set_item(btx, 1, 2)).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| handle.block_on(b.wait_for_upload(WAIT)).unwrap())
                    .join()
                    .unwrap();
                before = s
                    .spawn(|| handle.block_on(server.history_count()))
                    .join()
                    .unwrap();
            });
            set_item(tx, 1, 3)?;
            tx.set(
                FieldPath::field("Item", PrimaryKey::Int(1), "s"),
                Value::String("from the transaction".into()),
            )
        })
        .await
        .unwrap();
    assert!(
        matches!(
            rejected,
            TransactResult::Rejected {
                code: ErrorCode::TransactConflict,
                ..
            }
        ),
        "{rejected:?}"
    );
    assert_eq!(
        server.history_count().await,
        before,
        "a rejected transaction adds nothing to the history"
    );
    for client in [&a, &b] {
        client.wait_for_download(WAIT).await.unwrap();
        let (n, s) = client
            .read(|s| (item_field(s, 1, "n"), item_field(s, 1, "s")))
            .unwrap();
        assert_eq!(
            n,
            Some(Value::Int(2)),
            "B's write wins, the transaction's is gone"
        );
        assert_eq!(s, None, "nothing of the rejected transaction is applied");
    }

    // With everything settled, the next transaction goes through again.
    let again = a.transact(WAIT, |tx| set_item(tx, 2, 7)).await.unwrap();
    assert!(
        matches!(again, TransactResult::Accepted { .. }),
        "{again:?}"
    );
    drop(a);
    a_runtime.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_without_a_server_reports_unsettled_uploads() {
    // Port 1 refuses connections, so the session never binds and the write never uploads.
    let options = ClientOptions::default();
    let client =
        Client::connect_with_options("ws://127.0.0.1:1/api/sync", "t", sim_schema(), options)
            .unwrap();
    client.write(|tx| set_item(tx, 1, 1)).unwrap();
    let err = client
        .transact(Duration::from_millis(300), |tx| set_item(tx, 1, 2))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::NotSettled { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("wait for upload completion"), "{text}");
    assert_eq!(
        client.read(|s| item_field(s, 1, "n")).unwrap(),
        Some(Value::Int(1)),
        "the refused transaction changed nothing locally"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_closure_errors_are_write_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let token = anonymous_token(server.addr).await;
    let client = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
    let err = client
        .transact(WAIT, |_| Err::<(), _>("no such thing"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Write(m) if m == "no such thing"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_open_downloads_a_hundred_thousand_objects() {
    const OBJECTS: i64 = 100_000;
    const BATCH: i64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let writer = anonymous_client(&server).await;
    for start in (0..OBJECTS).step_by(usize::try_from(BATCH).unwrap()) {
        writer
            .write(|tx| {
                for key in start..start + BATCH {
                    set_item(tx, key, key * 3 + 1)?;
                }
                Ok::<_, ApplyError>(())
            })
            .unwrap();
    }
    writer.wait_for_upload(WAIT).await.unwrap();
    let batches = u64::try_from(OBJECTS / BATCH).unwrap();
    assert!(server.history_count().await >= batches);

    let options = ClientOptions {
        async_open: true,
        ..ClientOptions::default()
    };
    let reader = Client::connect_with_options(
        &server.sync_url(),
        &anonymous_token(server.addr).await,
        sim_schema(),
        options,
    )
    .unwrap();
    reader.wait_for_download(WAIT * 4).await.unwrap();
    let (count, checksum) = reader
        .read(|s| {
            let checksum: i64 = s
                .objects("Item")
                .map(|(pk, doc)| match (pk, doc.get("n")) {
                    (PrimaryKey::Int(k), Some(Value::Int(n))) => k ^ n,
                    other => panic!("unexpected object {other:?}"),
                })
                .fold(0, i64::wrapping_add);
            (s.len("Item"), checksum)
        })
        .unwrap();
    let expected: i64 = (0..OBJECTS).map(|k| k ^ (k * 3 + 1)).sum();
    assert_eq!(count, usize::try_from(OBJECTS).unwrap());
    assert_eq!(checksum, expected);
    assert_eq!(reader.store().unwrap(), writer.store().unwrap());

    // The opened file keeps syncing both ways.
    reader.write(|tx| set_item(tx, OBJECTS, 1)).unwrap();
    reader.wait_for_upload(WAIT).await.unwrap();
    writer.wait_for_download(WAIT).await.unwrap();
    assert_eq!(
        writer.read(|s| s.len("Item")).unwrap(),
        usize::try_from(OBJECTS + 1).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshing_the_token_mid_session_keeps_syncing() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), &[]);
    let (refresh, token) = register(&server).await;
    let client = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
    client.write(|tx| set_item(tx, 1, 1)).unwrap();
    client.wait_for_upload(WAIT).await.unwrap();

    client
        .refresh_token(&fresh_token(&server, &refresh).await)
        .unwrap();
    client.write(|tx| set_item(tx, 2, 2)).unwrap();
    client.wait_for_upload(WAIT).await.unwrap();
    client.wait_for_download(WAIT).await.unwrap();
    let progress = client.progress();
    assert_eq!(progress.last_error, None, "{progress:?}");
    assert_eq!(progress.connects, 1, "REFRESH needs no reconnect");

    let other = anonymous_client(&server).await;
    other.wait_for_download(WAIT).await.unwrap();
    assert_eq!(other.read(|s| s.len("Item")).unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_binds_again_after_a_refresh() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough that the refreshed token outlives the re-upload on a loaded machine.
    let server = server_with(dir.path(), &["--access-token-ttl-secs", "6"]);
    let (refresh, token) = register(&server).await;
    let client = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
    client.write(|tx| set_item(tx, 1, 1)).unwrap();
    client.wait_for_upload(WAIT).await.unwrap();

    let mut progress = client.watch_progress();
    tokio::time::timeout(
        WAIT,
        progress.wait_for(|p| {
            p.last_error
                .as_ref()
                .is_some_and(|e| e.code == ErrorCode::TokenExpired)
        }),
    )
    .await
    .unwrap()
    .unwrap();
    // Writes keep working locally while the session waits for a token.
    client.write(|tx| set_item(tx, 2, 2)).unwrap();
    let token = fresh_token(&server, &refresh).await;
    client.refresh_token(&token).unwrap();
    client.wait_for_upload(WAIT).await.unwrap();
    let (status, docs) = server.admin("/api/admin/collections/Item/documents").await;
    assert_eq!(status, 200, "{docs}");
    assert!(docs.to_string().contains("\"n\":2"), "{docs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_development_mode_server_learns_the_schema_from_a_native_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::development(dir.path());
    let file = dir.path().join("device.eddy");
    let token = anonymous_token(server.addr).await;
    let writer = Client::open(&file, &server.sync_url(), &token, sim_schema()).unwrap();
    writer.write(|tx| set_item(tx, 7, 49)).unwrap();
    writer.wait_for_upload(WAIT).await.unwrap();

    let (status, collections) = server.admin("/api/admin/collections").await;
    assert_eq!(status, 200, "{collections}");
    let names: Vec<&str> = collections
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for collection in sim_schema().collections.values() {
        assert!(names.contains(&collection.name.as_str()), "{collections}");
    }
    let reader = anonymous_client(&server).await;
    reader.wait_for_download(WAIT).await.unwrap();
    assert_eq!(
        reader.read(|s| item_field(s, 7, "n")).unwrap(),
        Some(Value::Int(49))
    );

    // A file reopened with a schema that redefines a stored property is refused, not altered.
    drop(writer);
    let mut changed = sim_schema();
    let item = changed.collections.get_mut("Item").unwrap();
    item.properties.get_mut("n").unwrap().ty = eddy_core::schema::ScalarType::String;
    let error = Client::open(&file, &server.sync_url(), &token, changed).unwrap_err();
    assert!(matches!(error, ClientError::Schema(_)), "{error}");
    assert!(error.to_string().contains("(Item.n)"), "{error}");
    let reopened = Client::open(&file, &server.sync_url(), &token, sim_schema()).unwrap();
    assert_eq!(
        reopened.read(|s| item_field(s, 7, "n")).unwrap(),
        Some(Value::Int(49))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_opened_from_a_snapshot_teaches_a_development_mode_server_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::development(dir.path());
    let writer = anonymous_client(&server).await;
    writer.write(|tx| set_item(tx, 1, 1)).unwrap();
    writer.wait_for_upload(WAIT).await.unwrap();

    // The newer app declares a property the server has never seen.
    let mut extended = sim_schema();
    let item = extended.collections.get_mut("Item").unwrap();
    let mut note = item.properties.get("s").unwrap().clone();
    note.name = "note".into();
    item.properties.insert(note.name.clone(), note);
    let options = ClientOptions {
        async_open: true,
        ..ClientOptions::default()
    };
    let opened = Client::connect_with_options(
        &server.sync_url(),
        &anonymous_token(server.addr).await,
        extended.clone(),
        options,
    )
    .unwrap();
    opened.wait_for_download(WAIT).await.unwrap();
    assert_eq!(opened.read(|s| s.len("Item")).unwrap(), 1);
    opened
        .write(|tx| {
            tx.set(
                FieldPath::field("Item", PrimaryKey::Int(1), "note"),
                Value::String("from the snapshot".into()),
            )
        })
        .unwrap();
    opened.wait_for_upload(WAIT).await.unwrap();
    let progress = opened.progress();
    assert_eq!(progress.last_error, None, "{progress:?}");

    let reader = Client::connect(
        &server.sync_url(),
        &anonymous_token(server.addr).await,
        extended,
    )
    .unwrap();
    reader.wait_for_download(WAIT).await.unwrap();
    assert_eq!(
        reader.read(|s| item_field(s, 1, "note")).unwrap(),
        Some(Value::String("from the snapshot".into()))
    );
}

/// A device that wrote item 1 (acknowledged), then item 2 while its server was down, reopens
/// its file after the server came back with its data wiped: the first connection resets the
/// file in `mode`. Returns the client, the new server and what the reset reported.
async fn reset_by_a_wiped_server(
    dir: &Path,
    mode: ResetMode,
) -> (Client, Server, eddy_server::client::ClientReset) {
    let mut server = Server::with_schema(dir, "127.0.0.1:0");
    let listen = server.addr.to_string();
    let options = ClientOptions {
        reset_mode: mode,
        storage: ClientStorage::File(dir.join("device.eddy")),
        ..ClientOptions::default()
    };
    let token = anonymous_token(server.addr).await;
    let client =
        Client::connect_with_options(&server.sync_url(), &token, sim_schema(), options.clone())
            .unwrap();
    client.write(|tx| set_item(tx, 1, 1)).unwrap();
    client.wait_for_upload(WAIT).await.unwrap();
    server.kill9();
    client.write(|tx| set_item(tx, 2, 2)).unwrap();
    drop(client);

    std::fs::remove_dir_all(dir.join("data")).unwrap();
    let server = Server::with_schema(dir, &listen);
    // The wiped server signs with a new key: the device signs in again.
    let token = anonymous_token(server.addr).await;
    let client =
        Client::connect_with_options(&server.sync_url(), &token, sim_schema(), options).unwrap();
    let mut progress = client.watch_progress();
    let reset = tokio::time::timeout(WAIT, progress.wait_for(|p| p.client_resets == 1))
        .await
        .unwrap()
        .unwrap()
        .last_client_reset
        .unwrap();
    client.wait_for_upload(WAIT).await.unwrap();
    client.wait_for_download(WAIT).await.unwrap();
    (client, server, reset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_recovers_the_changes_a_wiped_server_never_saw() {
    let dir = tempfile::tempdir().unwrap();
    let (client, server, reset) = reset_by_a_wiped_server(dir.path(), ResetMode::Recover).await;
    assert_eq!(
        reset,
        eddy_server::client::ClientReset {
            recovered: 1,
            discarded: 0
        }
    );
    // Item 1 was lost with the server's data; item 2 was re-applied and uploaded again.
    assert_eq!(client.read(|s| item_field(s, 1, "n")).unwrap(), None);
    assert_eq!(
        client.read(|s| item_field(s, 2, "n")).unwrap(),
        Some(Value::Int(2))
    );
    let other = anonymous_client(&server).await;
    other.wait_for_download(WAIT).await.unwrap();
    assert_eq!(other.store().unwrap(), client.store().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_in_discard_mode_drops_and_counts_the_unsynced_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (client, server, reset) = reset_by_a_wiped_server(dir.path(), ResetMode::Discard).await;
    assert_eq!(
        reset,
        eddy_server::client::ClientReset {
            recovered: 0,
            discarded: 1
        }
    );
    assert_eq!(client.read(|s| s.len("Item")).unwrap(), 0);
    let other = anonymous_client(&server).await;
    other.wait_for_download(WAIT).await.unwrap();
    assert_eq!(other.store().unwrap(), client.store().unwrap());
}
