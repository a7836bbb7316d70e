//! End-to-end tests of the admin event feed (`/api/admin/events`) against the real `eddy`
//! binary: login by first message, live session/message/changeset events with merge decisions,
//! backfill on connect and server-side filters; and the console itself with its admin endpoints.

// Helpers outside `#[test]` fail loudly by design; the clippy ban on threads (used by the shared
// harness) is for eddy-core only.
#![allow(clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

mod support;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use eddy_core::changeset::{decode_changeset, DecodeLimits, Instruction};
use eddy_core::protocol::{decode_client_message, ClientMessage, MessageLimits};
use eddy_core::sim::sim_schema;
use eddy_core::value::{PrimaryKey, Value};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use support::{anonymous_client, http, set_item, Server, WAIT};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens the feed and sends `request` as the first message.
async fn open_feed(server: &Server, request: Json) -> Socket {
    let url = format!("ws://{}/api/admin/events", server.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    socket
        .send(Message::Text(request.to_string().into()))
        .await
        .unwrap();
    socket
}

/// The next JSON event, failing the test after [`WAIT`].
async fn next_event(socket: &mut Socket) -> Json {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("no feed event arrived in time")
            .expect("the feed closed")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// Reads events until one satisfies `pred`; returns it.
async fn wait_for(socket: &mut Socket, what: &str, pred: impl Fn(&Json) -> bool) -> Json {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed never showed {what}"
        );
        let event = next_event(socket).await;
        if pred(&event) {
            return event;
        }
    }
}

/// Reads events until `done` holds for all read so far; returns them.
async fn read_until(socket: &mut Socket, what: &str, done: impl Fn(&[Json]) -> bool) -> Vec<Json> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed never showed {what}; it showed {seen:?}"
        );
        seen.push(next_event(socket).await);
    }
    seen
}

fn bytes(event: &Json, field: &str) -> Vec<u8> {
    BASE64.decode(event[field].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_needs_the_admin_key_in_its_first_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");

    let mut wrong = open_feed(&server, json!({ "admin_key": "not the key" })).await;
    let refused = next_event(&mut wrong).await;
    assert_eq!(refused["kind"], "refused", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("admin key"));

    // A key in the URL is ignored: the first message must carry it.
    let url = format!(
        "ws://{}/api/admin/events?admin_key={}",
        server.addr, server.admin_key
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    socket
        .send(Message::Text(json!({}).to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_event(&mut socket).await["kind"], "refused");

    let mut garbage = open_feed(&server, json!({ "admin_key": 5 })).await;
    let refused = next_event(&mut garbage).await;
    assert!(refused["message"].as_str().unwrap().contains("not valid"));

    let mut right = open_feed(&server, json!({ "admin_key": server.admin_key })).await;
    assert_eq!(next_event(&mut right).await["kind"], "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_shows_sessions_messages_and_changesets_with_merge_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let mut feed = open_feed(&server, json!({ "admin_key": server.admin_key })).await;
    assert_eq!(next_event(&mut feed).await["kind"], "hello");

    let a = anonymous_client(&server).await;
    let b = anonymous_client(&server).await;
    a.wait_for_download(WAIT).await.unwrap();
    b.wait_for_download(WAIT).await.unwrap();
    let a_ident = a.client_file_ident().unwrap();
    // Both write the same field before either hears of the other: the second to integrate is
    // transformed against the first.
    a.write(|tx| set_item(tx, 1, 1)).unwrap();
    b.write(|tx| set_item(tx, 1, 2)).unwrap();
    a.wait_for_upload(WAIT).await.unwrap();
    b.wait_for_upload(WAIT).await.unwrap();

    // The two clients race, so the events this test looks for may arrive in any order (B's
    // changeset before A's UPLOAD, say): read until all have been seen, then check each.
    let is_opened = |e: &Json| e["kind"] == "connection" && e["event"] == "opened";
    let is_session =
        |e: &Json| e["kind"] == "session" && e["event"] == "identified" && e["client"] == a_ident;
    let is_upload =
        |e: &Json| e["kind"] == "message" && e["type"] == "UPLOAD" && e["client"] == a_ident;
    // Changesets with objects: each client's first one is its declared schema.
    let is_changeset = |e: &Json| e["kind"] == "changeset" && e["objects"] != json!([]);
    let seen = read_until(
        &mut feed,
        "a connection, A's session and UPLOAD, two changesets",
        |seen| {
            seen.iter().any(is_opened)
                && seen.iter().any(is_session)
                && seen.iter().any(is_upload)
                && seen.iter().filter(|e| is_changeset(e)).count() >= 2
        },
    )
    .await;
    let first = |pred: &dyn Fn(&Json) -> bool| seen.iter().find(|e| pred(e)).cloned().unwrap();

    let opened = first(&is_opened);
    assert!(opened["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(opened["protocol"], eddy_core::protocol::SUBPROTOCOL);
    let session = first(&is_session);
    assert!(session["user"].as_str().unwrap().starts_with("anon-"));
    assert!(session["peer"].is_string());

    // The first UPLOAD with the write (the client file's declared schema may come before it, or
    // with it).
    let upload = first(&|e| {
        is_upload(e)
            && e["collections"]
                .as_array()
                .unwrap()
                .contains(&json!("Item"))
    });
    assert_eq!(upload["direction"], "in");
    let raw = bytes(&upload, "raw");
    assert_eq!(upload["size"], raw.len());
    match decode_client_message(&raw, &MessageLimits::default()).unwrap() {
        ClientMessage::Upload { changesets, .. } => {
            assert_eq!(upload["body_count"], changesets.len());
            let encoded: usize = changesets.iter().map(|c| c.body.len()).sum();
            assert_eq!(upload["body_bytes"], encoded);
            // Bodies this small are never compressed.
            assert_eq!(upload["compressed_bodies"], 0);
            assert_eq!(upload["body_uncompressed_bytes"], encoded);
        }
        other => panic!("the raw bytes are not an UPLOAD: {other:?}"),
    }

    let changesets: Vec<&Json> = seen.iter().filter(|e| is_changeset(e)).take(2).collect();
    let mut decisions = Vec::new();
    for changeset in &changesets {
        assert!(changeset["server_version"].as_u64().unwrap() > 0);
        assert_eq!(changeset["objects"], json!(["Item/1"]));
        let body = bytes(changeset, "instructions");
        assert_eq!(changeset["body_bytes"], body.len());
        assert_eq!(changeset["body_uncompressed_bytes"], body.len());
        let instructions = decode_changeset(&body, &DecodeLimits::default()).unwrap();
        assert!(!instructions.is_empty());
        for decision in changeset["decisions"].as_array().unwrap() {
            decisions.push(((*changeset).clone(), decision.clone()));
        }
    }
    assert!(
        decisions.iter().any(|(_, d)| d["rule"] == "LastWriterWins"),
        "the concurrent writes to Item[1].n were decided by last writer wins: {decisions:?}"
    );
    for (changeset, decision) in &decisions {
        let original = bytes(&decision["ours"], "original");
        assert_eq!(
            decode_changeset(&original, &DecodeLimits::default())
                .unwrap()
                .len(),
            1
        );
        // The concurrent changeset is named by its server version and origin: the other
        // client's changeset, integrated before this one.
        let other = changesets
            .iter()
            .find(|c| c["server_version"] != changeset["server_version"])
            .unwrap();
        assert_eq!(
            decision["theirs"]["server_version"], other["server_version"],
            "{decision}"
        );
        assert_eq!(decision["theirs"]["client"], other["client"], "{decision}");
        assert_ne!(decision["theirs"]["client"], changeset["client"]);
        assert!(
            decision["theirs"]["server_version"].as_u64().unwrap()
                < changeset["server_version"].as_u64().unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_console_is_backfilled_and_filters_apply_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let a = anonymous_client(&server).await;
    let b = anonymous_client(&server).await;
    a.write(|tx| set_item(tx, 1, 1)).unwrap();
    a.wait_for_upload(WAIT).await.unwrap();
    b.write(|tx| set_item(tx, 2, 2)).unwrap();
    b.wait_for_upload(WAIT).await.unwrap();
    let a_ident = a.client_file_ident().unwrap();

    // Connected after the writes: the history comes from the backfill.
    let mut feed = open_feed(
        &server,
        json!({
            "admin_key": server.admin_key,
            "filter": { "client": a_ident, "kinds": ["changeset", "message"] },
        }),
    )
    .await;
    let hello = next_event(&mut feed).await;
    assert_eq!(hello["kind"], "hello");
    assert!(hello["backfill"].as_u64().unwrap() > 0);
    // A's first changeset is its declared schema, which touches no object.
    let changeset = wait_for(&mut feed, "A's changeset", |e| {
        e["kind"] == "changeset" && e["objects"] != json!([])
    })
    .await;
    assert_eq!(changeset["client"], a_ident);
    assert_eq!(changeset["objects"], json!(["Item/1"]));

    // Live events pass the same filter: B's write never shows, A's next one does.
    b.write(|tx| set_item(tx, 3, 3)).unwrap();
    b.wait_for_upload(WAIT).await.unwrap();
    a.write(|tx| set_item(tx, 4, 4)).unwrap();
    a.wait_for_upload(WAIT).await.unwrap();
    let later = wait_for(&mut feed, "A's second changeset", |e| {
        assert!(
            e["kind"] == "changeset" || e["kind"] == "message",
            "the kinds filter let through {e}"
        );
        assert_eq!(e["client"], a_ident, "the client filter let through {e}");
        e["kind"] == "changeset" && e["objects"] == json!(["Item/4"])
    })
    .await;
    assert_eq!(later["collections"], json!(["Item"]));

    // A new filter replaces the old one once the server acknowledges it.
    let b_ident = b.client_file_ident().unwrap();
    feed.send(Message::Text(
        json!({ "filter": { "client": b_ident, "kinds": ["changeset"] } })
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    wait_for(&mut feed, "the filter acknowledgement", |e| {
        e["kind"] == "filter"
    })
    .await;
    a.write(|tx| set_item(tx, 5, 5)).unwrap();
    a.wait_for_upload(WAIT).await.unwrap();
    b.write(|tx| set_item(tx, 6, 6)).unwrap();
    b.wait_for_upload(WAIT).await.unwrap();
    let first = next_event(&mut feed).await;
    assert_eq!(
        first["objects"],
        json!(["Item/6"]),
        "A's later changeset passed a filter on B: {first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_and_its_admin_endpoints_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console");
    std::fs::create_dir(&console).unwrap();
    let data = dir.path().join("data");
    let schema_file = dir.path().join("schema.json");
    std::fs::write(
        &schema_file,
        eddy_core::schema_json::schema_to_json(&sim_schema()).to_string(),
    )
    .unwrap();
    let server = Server::start(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--schema".as_ref(),
        schema_file.as_os_str(),
        "--console-dir".as_ref(),
        console.as_os_str(),
    ]);
    let (status, _) = http(server.addr, "GET", "/console", &[], None).await;
    assert_eq!(status, 404, "an unbuilt console says so");
    std::fs::write(console.join("index.html"), "<!doctype html>").unwrap();
    std::fs::write(console.join("app.js"), "export {}").unwrap();
    for path in ["/console", "/console/", "/console/app.js"] {
        let (status, _) = http(server.addr, "GET", path, &[], None).await;
        assert_eq!(status, 200, "{path}");
    }

    let a = anonymous_client(&server).await;
    a.write(|tx| set_item(tx, 1, 1)).unwrap();
    a.write(|tx| set_item(tx, 2, 2)).unwrap();
    a.write(|tx| set_item(tx, 1, 3)).unwrap();
    a.wait_for_upload(WAIT).await.unwrap();

    let (status, history) = server
        .admin("/api/admin/collections/Item/history?key=1")
        .await;
    assert_eq!(status, 200, "{history}");
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(
        history[0]["origin_file_ident"],
        a.client_file_ident().unwrap()
    );
    let last = decode_changeset(&bytes(&history[1], "body"), &DecodeLimits::default()).unwrap();
    assert!(
        last.iter().any(|i| matches!(
            i,
            Instruction::Set {
                value: Value::Int(3),
                ..
            }
        )),
        "{last:?}"
    );
    let (status, body) = server
        .admin("/api/admin/collections/Item/history?key=nope")
        .await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("EJSON"));

    let version = history[1]["server_version"].as_u64().unwrap();
    let (status, stored) = server
        .admin(&format!("/api/admin/changesets/v{version}"))
        .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(
        stored, history[1],
        "one changeset reads as in a document history"
    );
    assert!(
        stored["user"].as_str().is_some_and(|u| !u.is_empty()),
        "{stored}"
    );
    assert!(stored["original_size"].as_u64().unwrap() > 0, "{stored}");
    let (status, body) = server.admin("/api/admin/changesets/999999").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["message"].as_str().unwrap().contains("999999"));
    let (status, body) = server.admin("/api/admin/changesets/latest").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = http(server.addr, "GET", "/api/admin/changesets/1", &[], None).await;
    assert_eq!(status, 401);

    let (status, schema) = server.admin("/api/admin/schema").await;
    assert_eq!(status, 200, "{schema}");
    assert_eq!(schema["development_mode"], false);
    assert!(schema["schema"].to_string().contains("Item"));
    assert_eq!(schema["roles"], json!([]));
    let (status, _) = http(server.addr, "GET", "/api/admin/schema", &[], None).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_ingest_batches_are_on_the_feed_backfilled_and_filterable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let sensor = anonymous_client(&server).await;
    let writer = anonymous_client(&server).await;
    sensor
        .write(|tx| {
            (0..25).try_for_each(|k| {
                let mut doc = eddy_core::value::Document::new();
                doc.insert("value".into(), Value::Int(k));
                tx.ingest("Reading", PrimaryKey::Int(k), doc)
            })
        })
        .unwrap();
    sensor.wait_for_upload(WAIT).await.unwrap();
    writer.write(|tx| set_item(tx, 1, 1)).unwrap();
    writer.wait_for_upload(WAIT).await.unwrap();
    let sensor_ident = sensor.client_file_ident().unwrap();

    // Connected after the upload: the batch comes from the backfill, and only ingest events
    // pass the filter.
    let mut feed = open_feed(
        &server,
        json!({
            "admin_key": server.admin_key,
            "filter": { "kinds": ["ingest"], "collection": "Reading" },
        }),
    )
    .await;
    assert_eq!(next_event(&mut feed).await["kind"], "hello");
    // The device reported its queue right after IDENT, before the batch was stored.
    let queue = wait_for(&mut feed, "the device's queue report", |e| {
        assert_eq!(e["kind"], "ingest", "the kinds filter let through {e}");
        e["event"] == "queue" && e["client"] == sensor_ident
    })
    .await;
    assert_eq!(queue["collections"], json!(["Reading"]));
    assert_eq!(queue["queue"][0]["collection"], "Reading");
    assert!(queue["queue"][0]["objects"].as_u64().unwrap() <= 25);
    let stored = wait_for(&mut feed, "the stored batch", |e| {
        assert_eq!(e["kind"], "ingest", "the kinds filter let through {e}");
        e["event"] == "stored"
    })
    .await;
    assert_eq!(stored["event"], "stored");
    assert_eq!(stored["client"], sensor_ident);
    assert!(stored["user"].as_str().unwrap().starts_with("anon-"));
    assert_eq!(stored["collections"], json!(["Reading"]));
    let batch = &stored["batch"];
    assert_eq!(batch["collection"], "Reading");
    assert_eq!(batch["objects"], 25);
    assert!(batch["bytes"].as_u64().unwrap() > 0, "{batch}");
    assert!(batch["server_version"].as_u64().unwrap() > 0);
    assert!(batch["lag_ms"].as_u64().unwrap() < WAIT.as_millis() as u64);

    // A live batch follows the same way; the other client's changeset never shows.
    sensor
        .ingest("Reading", PrimaryKey::Int(100), {
            let mut doc = eddy_core::value::Document::new();
            doc.insert("value".into(), Value::Int(100));
            doc
        })
        .unwrap();
    writer.write(|tx| set_item(tx, 2, 2)).unwrap();
    writer.wait_for_upload(WAIT).await.unwrap();
    let live = wait_for(&mut feed, "the live ingest batch", |e| {
        assert_eq!(e["kind"], "ingest", "the kinds filter let through {e}");
        e["event"] == "stored" && e["batch"]["objects"] == 1
    })
    .await;
    assert_eq!(live["client"], sensor_ident);
}
