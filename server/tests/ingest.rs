//! Data Ingest against the real `eddy` binary: ingested objects are stored once, readable through
//! the admin API and counted, never synced to any device, and a `kill -9` in the middle of a
//! large ingest loses nothing and stores nothing twice; devices' queue reports survive a restart
//! and go away when their file is reset.

// Helpers outside `#[test]` fail loudly by design; the support module spawns a reader thread.
#![allow(clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

mod support;

use eddy_core::protocol::{
    decode_server_message, encode_client_message, ClientMessage, DownloadCursor, IngestStatusEntry,
    MessageLimits, ServerMessage, SubscriptionSet,
};
use eddy_core::sim::sim_schema;
use eddy_core::value::{Document, PrimaryKey, Value};
use eddy_server::client::Client;
use futures_util::{SinkExt, StreamExt};
use support::{anonymous_client, anonymous_token, http, Server, WAIT};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// A sensor reading of about 100 bytes.
fn reading(n: i64) -> Document {
    let mut doc = Document::new();
    doc.insert("value".into(), Value::Int(n));
    doc.insert(
        "samples".into(),
        Value::List((0..8).map(|i| Value::Int(n * 10 + i)).collect()),
    );
    doc
}

/// Ingests readings `keys`, `per_write` objects per local commit.
fn ingest(client: &Client, keys: std::ops::Range<i64>, per_write: i64) -> Result<(), String> {
    let mut key = keys.start;
    while key < keys.end {
        let end = (key + per_write).min(keys.end);
        client
            .write(|tx| {
                (key..end).try_for_each(|k| tx.ingest("Reading", PrimaryKey::Int(k), reading(k)))
            })
            .map_err(|e| e.to_string())?;
        key = end;
    }
    Ok(())
}

async fn stored_count(server: &Server) -> u64 {
    let (status, body) = server.admin("/api/admin/collections").await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Reading")
        .map(|c| {
            assert_eq!(c["kind"], "asymmetric");
            c["count"].as_u64().unwrap()
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingested_objects_are_stored_once_counted_and_never_synced() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let sensor = anonymous_client(&server).await;
    let viewer = anonymous_client(&server).await;
    ingest(&sensor, 0..1_990, 100).unwrap();
    for key in 1_990..2_000 {
        sensor
            .ingest("Reading", PrimaryKey::Int(key), reading(key))
            .unwrap();
    }
    assert!(sensor.ingest_queue().unwrap().objects <= 2_000);
    sensor.wait_for_upload(WAIT).await.unwrap();
    assert_eq!(sensor.ingest_queue().unwrap().objects, 0);
    assert_eq!(sensor.read(|s| s.len("Reading")).unwrap(), 0);

    assert_eq!(stored_count(&server).await, 2_000);
    let (status, page) = server
        .admin("/api/admin/collections/Reading/documents?limit=10")
        .await;
    assert_eq!(status, 200, "{page}");
    let documents = page["documents"].as_array().unwrap();
    assert_eq!(documents.len(), 10);
    assert_eq!(documents[3]["_id"], 3);
    assert_eq!(documents[3]["samples"][1], 31);
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, second) = server
        .admin(&format!(
            "/api/admin/collections/Reading/documents?limit=10&after={next}"
        ))
        .await;
    assert_eq!(second["documents"][0]["_id"], 10);

    let ident = sensor.client_file_ident().unwrap();
    let (status, figures) = server.admin("/api/admin/ingest").await;
    assert_eq!(status, 200, "{figures}");
    assert_eq!(figures["collections"]["Reading"]["objects"], 2_000);
    assert_eq!(
        figures["clients"][ident.to_string()]["Reading"]["objects"],
        2_000
    );
    assert!(figures["collections"]["Reading"]["bytes"].as_u64().unwrap() > 2_000 * 20);

    // Another device syncs everything else but never receives a reading.
    sensor
        .write(|tx| tx.create("Item", PrimaryKey::Int(1)))
        .unwrap();
    sensor.wait_for_upload(WAIT).await.unwrap();
    viewer.wait_for_download(WAIT).await.unwrap();
    assert_eq!(viewer.read(|s| s.len("Item")).unwrap(), 1);
    assert_eq!(viewer.read(|s| s.len("Reading")).unwrap(), 0);

    // `eddy export` includes ingested objects.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .arg("export")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--collection", "Reading"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2_000);
    assert_eq!(lines[5]["collection"], "Reading");
    assert_eq!(lines[5]["document"]["_id"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_of_a_large_ingest_arrives_exactly_once_across_kill_9() {
    const TOTAL: i64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let listen = server.addr.to_string();
    let client = Arc::new(anonymous_client(&server).await);
    client.wait_for_download(WAIT).await.unwrap();
    // The device keeps ingesting while the server dies and comes back.
    let writer = {
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            for start in (0..TOTAL).step_by(50) {
                ingest(&client, start..start + 50, 50).unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut progress = client.watch_progress();
    tokio::time::timeout(WAIT, progress.wait_for(|p| p.uploaded >= 20))
        .await
        .expect("uploads stalled before the kill")
        .unwrap();
    server.kill9();
    let server = Server::with_schema(dir.path(), &listen);
    writer.await.unwrap();
    client.wait_for_upload(WAIT * 2).await.unwrap();
    assert_eq!(client.ingest_queue().unwrap().objects, 0);
    assert_eq!(stored_count(&server).await, TOTAL as u64);
    // Every key is there (the collection holds each key at most once, so the count is exact).
    let mut seen = 0;
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => "/api/admin/collections/Reading/documents?limit=1000".to_owned(),
            Some(a) => format!("/api/admin/collections/Reading/documents?limit=1000&after={a}"),
        };
        let (status, page) = server.admin(&path).await;
        assert_eq!(status, 200, "{page}");
        seen += page["documents"].as_array().unwrap().len();
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, TOTAL as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reports_its_offline_queue_then_an_empty_one_to_the_feed_and_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let listen = server.addr.to_string();
    let url = server.sync_url();
    let token = anonymous_token(server.addr).await;
    server.kill9();

    // Offline: the readings wait in the device's queue.
    let sensor = Client::connect(&url, &token, sim_schema()).unwrap();
    ingest(&sensor, 0..500, 50).unwrap();
    let queue = sensor.ingest_queue().unwrap();
    assert_eq!(queue.objects, 500);

    let server = Server::with_schema(dir.path(), &listen);
    sensor.wait_for_upload(WAIT).await.unwrap();
    assert_eq!(sensor.ingest_queue().unwrap().objects, 0);
    let ident = sensor.client_file_ident().unwrap();

    // The feed keeps every report since the restart: first the queue as it was right after
    // IDENT, then, once the upload was acknowledged, an empty one.
    let url = format!("ws://{}/api/admin/events", server.addr);
    let (mut feed, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let request = serde_json::json!({
        "admin_key": server.admin_key,
        "filter": { "kinds": ["ingest"], "client": ident },
    });
    feed.send(Message::Text(request.to_string().into()))
        .await
        .unwrap();
    let mut reports = Vec::new();
    while reports.last() != Some(&0) {
        let message = tokio::time::timeout(WAIT, feed.next())
            .await
            .expect("the device never reported its emptied queue")
            .expect("the feed closed")
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        if event["event"] == "queue" {
            let entry = &event["queue"][0];
            assert_eq!(entry["collection"], "Reading");
            if entry["objects"] == 500 {
                assert_eq!(entry["bytes"], queue.bytes);
                assert!(entry["oldest_age_ms"].as_u64().unwrap() < WAIT.as_millis() as u64 * 2);
            }
            reports.push(entry["objects"].as_u64().unwrap());
        }
    }
    assert_eq!(reports.first(), Some(&500), "{reports:?}");

    // The admin API has the latest report: nothing pending, everything stored.
    let (status, figures) = server.admin("/api/admin/ingest").await;
    assert_eq!(status, 200, "{figures}");
    let mine = &figures["clients"][ident.to_string()]["Reading"];
    assert_eq!(mine["pending_objects"], 0, "{figures}");
    assert_eq!(mine["pending_bytes"], 0);
    assert_eq!(mine["oldest_pending_age_ms"], 0);
    assert!(mine["pending_reported_ms"].as_u64().unwrap() > 0);
    assert_eq!(mine["objects"], 500);
    assert_eq!(figures["collections"]["Reading"]["pending_objects"], 0);
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A device speaking the protocol by hand: it can report a queue without ever uploading it.
struct RawDevice {
    socket: Socket,
    file: u64,
    salt: u64,
}

impl RawDevice {
    /// Reports a queue of `objects` Readings (INGEST_STATUS).
    async fn report_readings(&mut self, objects: u64, bytes: u64, oldest_age_ms: u64) {
        self.send(ClientMessage::IngestStatus {
            session: 1,
            collections: vec![IngestStatusEntry {
                collection: "Reading".into(),
                objects,
                bytes,
                oldest_age_ms,
            }],
        })
        .await;
    }

    /// Connects, binds a new client file of the user of `token` and identifies it.
    async fn open(server: &Server, token: &str) -> RawDevice {
        let mut request = server.sync_url().into_client_request().unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("eddy-sync/5"),
        );
        let socket = tokio_tungstenite::connect_async(request).await.unwrap().0;
        let mut device = RawDevice {
            socket,
            file: 0,
            salt: 0,
        };
        device
            .send(ClientMessage::Bind {
                session: 1,
                path: "flx".into(),
                access_token: token.into(),
                need_client_file_ident: true,
            })
            .await;
        loop {
            if let ServerMessage::Ident {
                client_file_ident,
                client_file_ident_salt,
                ..
            } = device.next().await
            {
                device.file = client_file_ident;
                device.salt = client_file_ident_salt;
                break;
            }
        }
        let (file, salt) = (device.file, device.salt);
        device
            .send(ClientMessage::Ident {
                session: 1,
                client_file_ident: file,
                client_file_ident_salt: salt,
                download: DownloadCursor::default(),
                latest_server_version: 0,
                latest_server_version_salt: 0,
                subscriptions: SubscriptionSet::default(),
            })
            .await;
        device
    }

    async fn send(&mut self, message: ClientMessage) {
        self.socket
            .send(Message::Binary(encode_client_message(&message).into()))
            .await
            .unwrap();
    }

    async fn next(&mut self) -> ServerMessage {
        loop {
            let read = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("the server did not answer in time")
                .expect("the server closed the connection")
                .unwrap();
            if let Message::Binary(bytes) = read {
                return decode_server_message(&bytes, &MessageLimits::default()).unwrap();
            }
        }
    }
}

/// The admin API's figures of `file`'s Reading queue once `done` holds for them, polled until
/// `WAIT` runs out.
async fn device_figures(
    server: &Server,
    file: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, figures) = server.admin("/api/admin/ingest").await;
        assert_eq!(status, 200, "{figures}");
        let mine = figures["clients"][file.to_string()]["Reading"].clone();
        if done(&mine) {
            return mine;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admin API never showed the expected report: {figures}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server in a fresh directory with one raw device that has reported a queue of `objects`
/// Readings, once the admin API shows that report.
struct Reported {
    dir: tempfile::TempDir,
    server: Server,
    listen: String,
    token: String,
    device: RawDevice,
    figures: serde_json::Value,
}

async fn reported(objects: u64, bytes: u64, oldest_age_ms: u64) -> Reported {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let listen = server.addr.to_string();
    let token = anonymous_token(server.addr).await;
    let mut device = RawDevice::open(&server, &token).await;
    device.report_readings(objects, bytes, oldest_age_ms).await;
    let figures = device_figures(&server, device.file, |f| f["pending_objects"] == objects).await;
    Reported {
        dir,
        server,
        listen,
        token,
        device,
        figures,
    }
}

/// Asserts that the admin API shows no queue report of `file` and none pending for Reading.
async fn assert_report_gone(server: &Server, file: u64) {
    let (status, figures) = server.admin("/api/admin/ingest").await;
    assert_eq!(status, 200, "{figures}");
    assert!(figures["clients"][file.to_string()].is_null(), "{figures}");
    let pending = &figures["collections"]["Reading"]["pending_objects"];
    assert!(pending.is_null() || *pending == 0, "{figures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_queue_report_survives_a_restart_until_its_file_is_reset() {
    let Reported {
        dir,
        mut server,
        listen,
        token,
        device,
        figures: before,
    } = reported(7, 630, 1_500).await;
    assert_eq!(before["pending_bytes"], 630);
    let reported = before["pending_reported_ms"].as_u64().unwrap();
    assert!(reported > 0);

    // The device goes away for good; the server dies and comes back. Nothing reconnects, and
    // the report is still there, as of when it arrived.
    drop(device.socket);
    server.kill9();
    let server = Server::with_schema(dir.path(), &listen);
    let (status, figures) = server.admin("/api/admin/ingest").await;
    assert_eq!(status, 200, "{figures}");
    let after = &figures["clients"][device.file.to_string()]["Reading"];
    assert_eq!(after["pending_objects"], 7, "{figures}");
    assert_eq!(after["pending_bytes"], 630);
    assert_eq!(after["pending_reported_ms"], reported);
    assert!(after["oldest_pending_age_ms"].as_u64().unwrap() >= 1_500);
    assert_eq!(figures["collections"]["Reading"]["pending_objects"], 7);

    // The device resets its file (CLIENT_VERSION_REQUEST names the old one): the old file's
    // report goes, now and after another restart.
    let mut reset = RawDevice::open(&server, &token).await;
    reset
        .send(ClientMessage::ClientVersionRequest {
            from_client_version: 1,
            session: 1,
            client_file_ident: device.file,
            client_file_ident_salt: device.salt,
        })
        .await;
    loop {
        if let ServerMessage::ClientVersion { client_version, .. } = reset.next().await {
            assert_eq!(client_version, 0);
            break;
        }
    }
    device_figures(&server, device.file, serde_json::Value::is_null).await;
    assert_report_gone(&server, device.file).await;
    drop(reset);
    let mut server = server;
    server.kill9();
    let server = Server::with_schema(dir.path(), &listen);
    assert_report_gone(&server, device.file).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_report_of_a_device_that_never_returns_can_be_forgotten() {
    let Reported {
        dir,
        mut server,
        listen,
        device,
        ..
    } = reported(3, 270, 10).await;
    drop(device.socket);

    let path = format!("/api/admin/ingest/clients/{}", device.file);
    let (status, body) = http(server.addr, "DELETE", &path, &[], None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(server.admin_request("DELETE", &path).await.0, 204);
    assert_report_gone(&server, device.file).await;

    // Forgetting is durable, a second time finds nothing, and a bad ident is a bad request.
    server.kill9();
    let server = Server::with_schema(dir.path(), &listen);
    assert_report_gone(&server, device.file).await;
    let (status, body) = server.admin_request("DELETE", &path).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no ingest queue report"),
        "{body}"
    );
    let (status, body) = server
        .admin_request("DELETE", "/api/admin/ingest/clients/sensor-7")
        .await;
    assert_eq!(status, 400, "{body}");
}
