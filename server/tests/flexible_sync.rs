//! End-to-end tests of flexible-sync views and role permissions against the real `eddy` binary:
//! private objects never reach other users, forged writes are compensated and reported, a
//! subscription change brings objects in and removes others without a reconnect, and writes
//! entering many readers' views share their reset versions.

// Helpers outside `#[test]` fail loudly by design; the shared harness reads the server's output on
// a thread (the clippy ban on spawning is for eddy-core only).
#![allow(clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::Path;

mod support;

use eddy_core::changeset::Path as FieldPath;
use eddy_core::protocol::{ErrorCode, Subscription, SubscriptionSet};
use eddy_core::schema::Schema;
use eddy_core::sim::sim_schema;
use eddy_core::store::{ApplyError, Store, WriteTransaction};
use eddy_core::value::{PrimaryKey, Value};
use eddy_server::client::Client;
use support::{http, set_item, Server, WAIT};

/// Notes are readable by their owner, and by everyone when public; only the owner may write.
const APP_TOML: &str = r#"
[schema.Note]
primaryKey = "_id"
properties = { _id = "string", owner = "string", public = "bool?", text = "string?" }

[roles.Note]
read = { "$or" = [{ owner = "%%user.id" }, { public = true }] }
write = { owner = "%%user.id" }
"#;

fn server_with_roles(dir: &Path) -> Server {
    let config = dir.join("app.toml");
    std::fs::write(&config, APP_TOML).unwrap();
    let data = dir.join("data");
    Server::start(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ])
}

/// The schema the clients of [`APP_TOML`] declare.
fn note_schema() -> Schema {
    eddy_core::schema_json::schema_from_json(
        r#"{"Note": {"primaryKey": "_id", "properties": {"_id": "string", "owner": "string",
            "public": "bool?", "text": "string?"}}}"#,
    )
    .unwrap()
}

/// Signs in anonymously: the access token and the user id.
async fn sign_in(addr: SocketAddr) -> (String, String) {
    let (status, body) = http(addr, "POST", "/api/auth/anonymous", &[], None).await;
    assert_eq!(status, 200, "{body}");
    (
        body["access_token"].as_str().unwrap().to_string(),
        body["user_id"].as_str().unwrap().to_string(),
    )
}

fn put_note(
    tx: &mut WriteTransaction<'_>,
    id: &str,
    owner: &str,
    public: bool,
    text: &str,
) -> Result<(), ApplyError> {
    let key = PrimaryKey::String(id.into());
    tx.create("Note", key.clone())?;
    tx.set(FieldPath::field("Note", key.clone(), "owner"), owner.into())?;
    tx.set(
        FieldPath::field("Note", key.clone(), "public"),
        Value::Bool(public),
    )?;
    tx.set(FieldPath::field("Note", key, "text"), text.into())
}

fn notes(store: &Store) -> Vec<String> {
    store
        .objects("Note")
        .map(|(k, _)| match k {
            PrimaryKey::String(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn text_of(store: &Store, id: &str) -> Option<Value> {
    store
        .get("Note", &PrimaryKey::String(id.into()))
        .and_then(|d| d.get("text").cloned())
}

/// Waits, one download round trip at a time, until `done` holds of the client's store; fails
/// loudly with `what` after [`WAIT`].
async fn until(client: &Client, what: &str, done: impl Fn(&Store) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !client.read(&done).unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}; the client holds {:?}",
            client.read(Store::clone).unwrap()
        );
        client.wait_for_download(WAIT).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_never_receives_another_users_private_objects() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_roles(dir.path());
    // The console shows the rules the server enforces, as written.
    let (status, schema) = server.admin("/api/admin/schema").await;
    assert_eq!(status, 200, "{schema}");
    assert_eq!(schema["roles"][0]["collection"], "Note");
    assert_eq!(schema["roles"][0]["write"]["owner"], "%%user.id");
    let (a_token, a_id) = sign_in(server.addr).await;
    let (b_token, b_id) = sign_in(server.addr).await;
    let b = Client::connect(&server.sync_url(), &b_token, note_schema()).unwrap();
    b.write(|tx| put_note(tx, "b-private", &b_id, false, "mine"))
        .unwrap();
    b.write(|tx| put_note(tx, "b-public", &b_id, true, "hello"))
        .unwrap();
    b.wait_for_upload(WAIT).await.unwrap();

    let a = Client::connect(&server.sync_url(), &a_token, note_schema()).unwrap();
    a.write(|tx| put_note(tx, "a-private", &a_id, false, "ours"))
        .unwrap();
    a.wait_for_upload(WAIT).await.unwrap();
    until(&a, "A holds its own note and B's public one", |s| {
        notes(s) == ["a-private", "b-public"]
    })
    .await;
    // B changes its private note; A's next download still carries nothing of it.
    b.write(|tx| {
        tx.set(
            FieldPath::field("Note", PrimaryKey::String("b-private".into()), "text"),
            "changed".into(),
        )
    })
    .unwrap();
    b.wait_for_upload(WAIT).await.unwrap();
    a.wait_for_download(WAIT).await.unwrap();
    assert_eq!(a.read(notes).unwrap(), ["a-private", "b-public"]);
    until(&b, "B holds its notes only", |s| {
        notes(s) == ["b-private", "b-public"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_write_is_compensated_and_the_writer_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_roles(dir.path());
    let (a_token, _) = sign_in(server.addr).await;
    let (b_token, b_id) = sign_in(server.addr).await;
    let b = Client::connect(&server.sync_url(), &b_token, note_schema()).unwrap();
    b.write(|tx| put_note(tx, "b-public", &b_id, true, "hello"))
        .unwrap();
    b.wait_for_upload(WAIT).await.unwrap();
    let a = Client::connect(&server.sync_url(), &a_token, note_schema()).unwrap();
    until(&a, "A holds B's public note", |s| notes(s) == ["b-public"]).await;

    // A may read B's note but not write it: the server refuses the write and undoes it on A.
    a.write(|tx| {
        tx.set(
            FieldPath::field("Note", PrimaryKey::String("b-public".into()), "text"),
            "forged".into(),
        )
    })
    .unwrap();
    assert_eq!(
        a.read(|s| text_of(s, "b-public")).unwrap(),
        Some("forged".into())
    );
    a.wait_for_upload(WAIT).await.unwrap();
    until(&a, "the forged text is undone", |s| {
        text_of(s, "b-public") == Some("hello".into())
    })
    .await;
    // The error follows the DOWNLOAD that carried the undo.
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.progress().last_error.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A was never told about the refusal"
        );
        a.wait_for_download(WAIT).await.unwrap();
    }
    let error = a.progress().last_error.unwrap();
    assert_eq!(error.code, ErrorCode::CompensatingWrite, "{error:?}");
    let compensating = error
        .compensating
        .expect("the error names what was refused");
    assert!(compensating.server_version > 0);
    assert_eq!(compensating.rejected.len(), 1, "{compensating:?}");
    assert_eq!(compensating.rejected[0].collection, "Note");
    assert_eq!(compensating.rejected[0].key, "\"b-public\"");
    assert!(compensating.rejected[0].reason.contains("role"));

    // A cannot create a note in B's name either.
    a.write(|tx| put_note(tx, "fake", &b_id, true, "by b?"))
        .unwrap();
    a.wait_for_upload(WAIT).await.unwrap();
    until(&a, "the forged note is gone", |s| notes(s) == ["b-public"]).await;
    b.wait_for_download(WAIT).await.unwrap();
    assert_eq!(b.read(notes).unwrap(), ["b-public"]);
    assert_eq!(
        b.read(|s| text_of(s, "b-public")).unwrap(),
        Some("hello".into())
    );
}

fn items_where(query: &str) -> SubscriptionSet {
    SubscriptionSet {
        version: 0,
        subscriptions: vec![Subscription {
            name: "items".into(),
            collection: "Item".into(),
            query: query.into(),
        }],
    }
}

fn item_keys(store: &Store) -> Vec<i64> {
    store
        .objects("Item")
        .filter_map(|(k, _)| match k {
            PrimaryKey::Int(i) => Some(*i),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_change_brings_in_and_removes_objects_without_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let (b_token, _) = sign_in(server.addr).await;
    let b = Client::connect(&server.sync_url(), &b_token, sim_schema()).unwrap();
    for (key, n) in [(1, 5), (2, 15), (3, 25), (4, 35)] {
        b.write(|tx| set_item(tx, key, n)).unwrap();
    }
    b.wait_for_upload(WAIT).await.unwrap();

    let (a_token, _) = sign_in(server.addr).await;
    let a = Client::connect(&server.sync_url(), &a_token, sim_schema()).unwrap();
    until(&a, "A holds every item", |s| item_keys(s) == [1, 2, 3, 4]).await;
    let connects = a.progress().connects;

    a.update_subscriptions(items_where("n >= 20")).unwrap();
    until(&a, "A holds the items with n >= 20", |s| {
        item_keys(s) == [3, 4]
    })
    .await;
    a.update_subscriptions(items_where("n < 20")).unwrap();
    until(&a, "A holds the items with n < 20", |s| {
        item_keys(s) == [1, 2]
    })
    .await;

    // An object that comes to match arrives whole; one that stops matching leaves.
    b.write(|tx| {
        tx.set(
            FieldPath::field("Item", PrimaryKey::Int(3), "n"),
            Value::Int(3),
        )?;
        tx.set(
            FieldPath::field("Item", PrimaryKey::Int(1), "n"),
            Value::Int(50),
        )
    })
    .unwrap();
    b.wait_for_upload(WAIT).await.unwrap();
    until(&a, "item 3 entered and item 1 left", |s| {
        item_keys(s) == [2, 3]
    })
    .await;
    assert_eq!(
        a.read(|s| s.get("Item", &PrimaryKey::Int(3)).cloned())
            .unwrap()
            .and_then(|d| d.get("n").cloned()),
        Some(Value::Int(3))
    );
    assert!(a.progress().subscriptions_complete);
    assert_eq!(a.progress().connects, connects, "no reconnect happened");
    // B, subscribed to everything, still holds every item.
    b.wait_for_download(WAIT).await.unwrap();
    assert_eq!(b.read(item_keys).unwrap(), [1, 2, 3, 4]);
}

/// How many object rows the view of `client`'s file keeps, from `GET /api/admin/sessions`.
async fn view_objects(server: &Server, client: &Client) -> u64 {
    let ident = client.client_file_ident().unwrap();
    let (status, sessions) = server.admin("/api/admin/sessions").await;
    assert_eq!(status, 200, "{sessions}");
    sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["client_file_ident"].as_u64() == Some(ident))
        .and_then(|s| s["view_objects"].as_u64())
        .unwrap_or_else(|| panic!("client file {ident} is not listed: {sessions}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_s_view_forgets_erased_objects_once_it_reports_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let (a_token, _) = sign_in(server.addr).await;
    let a = Client::connect(&server.sync_url(), &a_token, sim_schema()).unwrap();
    a.update_subscriptions(items_where("n < 50")).unwrap();
    a.wait_for_download(WAIT).await.unwrap();

    let (b_token, _) = sign_in(server.addr).await;
    let b = Client::connect(&server.sync_url(), &b_token, sim_schema()).unwrap();
    b.write(|tx| (1..=20).try_for_each(|key| set_item(tx, key, key)))
        .unwrap();
    b.wait_for_upload(WAIT).await.unwrap();
    until(&a, "A holds the 20 items", |s| item_keys(s).len() == 20).await;
    assert_eq!(view_objects(&server, &a).await, 20);

    b.write(|tx| (1..=20).try_for_each(|key| tx.erase("Item", PrimaryKey::Int(key))))
        .unwrap();
    b.wait_for_upload(WAIT).await.unwrap();
    until(&a, "A saw the erases", |s| item_keys(s).is_empty()).await;
    // A only reads: its progress report (at most a second after the erases arrived) confirms
    // them, and its view drops the rows of the erased objects.
    let deadline = tokio::time::Instant::now() + WAIT;
    while view_objects(&server, &a).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A's view still keeps {} rows",
            view_objects(&server, &a).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A new item still reaches A, and A's own writes still go through.
    b.write(|tx| set_item(tx, 21, 21)).unwrap();
    until(&a, "A holds item 21", |s| item_keys(s) == [21]).await;
    a.write(|tx| {
        tx.set(
            FieldPath::field("Item", PrimaryKey::Int(21), "n"),
            Value::Int(22),
        )
    })
    .unwrap();
    a.wait_for_upload(WAIT).await.unwrap();
    assert!(
        a.progress().last_error.is_none(),
        "{:?}",
        a.progress().last_error
    );
    assert_eq!(a.progress().client_resets, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_entering_many_readers_views_share_their_reset_versions() {
    const READERS: u64 = 6;
    const WRITES: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let (token, _) = sign_in(server.addr).await;
    let writer = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let reader = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
        reader.update_subscriptions(items_where("n >= 10")).unwrap();
        readers.push(reader);
    }
    for reader in &readers {
        until(reader, "the subscription is complete", |_| {
            reader.progress().subscriptions_complete
        })
        .await;
    }
    writer.wait_for_download(WAIT).await.unwrap();
    let before = server.history_count().await;
    for key in 1..=WRITES {
        let key = i64::try_from(key).unwrap();
        writer.write(|tx| set_item(tx, key, 10 + key)).unwrap();
        writer.wait_for_upload(WAIT).await.unwrap();
    }
    let all: Vec<i64> = (1..=i64::try_from(WRITES).unwrap()).collect();
    for reader in &readers {
        until(reader, "the reader holds every write", |s| {
            item_keys(s) == all
        })
        .await;
    }
    // Each write enters every reader's view through a reset. The readers take their resets at
    // a shared reset version: one per write, or two when a write lands while the first
    // readers' DOWNLOADs are out; one per reader would make READERS per write.
    let grown = server.history_count().await - before;
    assert!(
        (2 * WRITES..=3 * WRITES).contains(&grown),
        "{WRITES} writes for {READERS} readers grew the history by {grown} versions"
    );
}
