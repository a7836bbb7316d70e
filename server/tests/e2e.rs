//! End-to-end tests against the real `eddy` binary in its own process: native clients converge,
//! malformed frames and bad tokens are refused, and acknowledged writes survive `kill -9`.

// Helpers outside `#[test]` fail loudly by design; a thread reads the child's stdout, and the
// clippy ban on spawning is for eddy-core only.
#![allow(clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

mod support;

use eddy_core::changeset::Path as FieldPath;
use eddy_core::protocol::{
    decode_server_message, encode_client_message, ClientMessage, ErrorCode, MessageLimits,
    ServerMessage,
};
use eddy_core::schema::Schema;
use eddy_core::sim::sim_schema;
use eddy_core::store::{ApplyError, WriteTransaction};
use eddy_core::value::{PrimaryKey, Value};
use eddy_server::client::Client;
use futures_util::{SinkExt, StreamExt};
use support::{anonymous_token, http, Server, WAIT};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

fn set_item(tx: &mut WriteTransaction<'_>, key: i64, n: i64) -> Result<(), ApplyError> {
    let pk = PrimaryKey::Int(key);
    if tx.get("Item", &pk).is_none() {
        tx.create("Item", pk.clone())?;
    }
    tx.set(FieldPath::field("Item", pk.clone(), "n"), Value::Int(n))?;
    tx.add_integer(FieldPath::field("Item", pk, "c"), 1)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw_socket(server: &Server) -> Socket {
    let mut request = server.sync_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("eddy-sync/5"),
    );
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// The next server message on a raw socket, or `None` once it closed.
async fn next_message(socket: &mut Socket) -> Option<ServerMessage> {
    loop {
        let read = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("the server did not answer in time");
        match read {
            Some(Ok(Message::Binary(bytes))) => {
                return Some(decode_server_message(&bytes, &MessageLimits::default()).unwrap())
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

async fn error_code(socket: &mut Socket) -> (u64, ErrorCode) {
    match next_message(socket).await {
        Some(ServerMessage::Error { session, code, .. }) => (session, code),
        other => panic!("expected ERROR, got {other:?}"),
    }
}

fn bind(token: &str) -> Message {
    let bind = ClientMessage::Bind {
        session: 1,
        path: "flx".into(),
        access_token: token.into(),
        need_client_file_ident: true,
    };
    Message::Binary(encode_client_message(&bind).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_write_concurrently_and_converge() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let (status, _) = http(server.addr, "GET", "/api/health", &[], None).await;
    assert_eq!(status, 200);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let token = anonymous_token(server.addr).await;
        clients.push(Client::connect(&server.sync_url(), &token, sim_schema()).unwrap());
    }
    // One client creates the objects with zeroed counters; then everyone increments concurrently.
    clients[0]
        .write(|tx| {
            for key in 0..5 {
                set_item(tx, key, 0)?;
                tx.set(
                    FieldPath::field("Item", PrimaryKey::Int(key), "c"),
                    Value::Int(0),
                )?;
            }
            Ok::<_, ApplyError>(())
        })
        .unwrap();
    clients[0].wait_for_upload(WAIT).await.unwrap();
    for client in &clients {
        client.wait_for_download(WAIT).await.unwrap();
    }
    const WRITES: i64 = 20;
    for i in 0..WRITES {
        for (c, client) in (0i64..).zip(&clients) {
            client
                .write(|tx| set_item(tx, i % 5, c * 1000 + i))
                .unwrap();
        }
        tokio::task::yield_now().await;
    }
    let store = converged(&clients).await;
    assert_eq!(store.len("Item"), 5);
    let counters: i64 = store
        .objects("Item")
        .map(|(_, doc)| match doc.get("c") {
            Some(Value::Int(c)) => *c,
            other => panic!("counter missing: {other:?}"),
        })
        .sum();
    assert_eq!(
        counters,
        3 * WRITES,
        "every increment of every client counts once"
    );
}

/// Waits until every client's uploads are acknowledged and it has downloaded everything; checks
/// that they all hold the same state and returns it.
async fn converged(clients: &[Client]) -> eddy_core::store::Store {
    for client in clients {
        client.wait_for_upload(WAIT).await.unwrap();
    }
    for client in clients {
        client.wait_for_download(WAIT).await.unwrap();
    }
    let stores: Vec<_> = clients.iter().map(|c| c.store().unwrap()).collect();
    assert!(stores.iter().all(|s| *s == stores[0]), "stores differ");
    stores.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_refused_while_others_keep_syncing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let token = anonymous_token(server.addr).await;
    let good = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
    good.write(|tx| set_item(tx, 1, 1)).unwrap();
    good.wait_for_upload(WAIT).await.unwrap();

    let mut bad = raw_socket(&server).await;
    bad.send(Message::Binary(vec![0xEE, 1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(error_code(&mut bad).await, (0, ErrorCode::UnknownMessage));
    assert!(
        next_message(&mut bad).await.is_none(),
        "the connection must close"
    );

    let mut text = raw_socket(&server).await;
    text.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(error_code(&mut text).await, (0, ErrorCode::BadSyntax));
    assert!(
        next_message(&mut text).await.is_none(),
        "the connection must close"
    );

    good.write(|tx| set_item(tx, 2, 2)).unwrap();
    good.wait_for_upload(WAIT).await.unwrap();
    good.wait_for_download(WAIT).await.unwrap();
    assert_eq!(good.read(|s| s.len("Item")).unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_forged_and_expired_tokens_are_refused() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let secret = std::fs::read_to_string(dir.path().join("data").join("jwt-secret")).unwrap();
    let now = eddy_server::now_ms() / 1000;
    let sign = |secret: &[u8], exp: u64| {
        let claims = eddy_server::auth::Claims {
            sub: "mallory".into(),
            exp,
            iat: now,
        };
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let cases = [
        ("garbage".to_string(), ErrorCode::BadAuthentication),
        (
            sign(b"not the server's secret at all!!", now + 600),
            ErrorCode::BadAuthentication,
        ),
        (
            sign(secret.trim().as_bytes(), now - 10),
            ErrorCode::TokenExpired,
        ),
    ];
    for (token, expected) in cases {
        let mut socket = raw_socket(&server).await;
        socket.send(bind(&token)).await.unwrap();
        assert_eq!(
            error_code(&mut socket).await,
            (1, expected),
            "token {token}"
        );
    }
    // A valid token signed with the real secret binds and gets a client file ident.
    let mut socket = raw_socket(&server).await;
    socket
        .send(bind(&sign(secret.trim().as_bytes(), now + 600)))
        .await
        .unwrap();
    assert!(matches!(
        next_message(&mut socket).await,
        Some(ServerMessage::Ident { .. })
    ));

    let addr = server.addr;
    let upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let (status, body) = http(addr, "GET", "/api/sync", &upgrade, None).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("eddy-sync/5"));
    let (status, _) = http(
        addr,
        "POST",
        "/api/auth/refresh",
        &[],
        Some(serde_json::json!({"refresh_token": "nope"})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = http(
        addr,
        "POST",
        "/api/auth/login",
        &[],
        Some(serde_json::json!({"email": "x@y.z", "password": "whatever1"})),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    let (status, _) = http(addr, "GET", "/api/admin/history-count", &[], None).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let token = anonymous_token(server.addr).await;
    let client = Arc::new(Client::connect(&server.sync_url(), &token, sim_schema()).unwrap());
    client.write(|tx| set_item(tx, 0, 0)).unwrap();
    client.wait_for_upload(WAIT).await.unwrap();
    let ident = client.client_file_ident().unwrap();

    // A writer keeps writing new objects while the server is killed.
    let writer = {
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            for key in 1..5_000i64 {
                if client.write(|tx| set_item(tx, key, key)).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut progress = client.progress();
    let deadline = tokio::time::Instant::now() + WAIT;
    while progress.uploaded < 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "uploads stalled: {progress:?}"
        );
        client.wait_for_upload(WAIT).await.unwrap();
        progress = client.progress();
    }
    server.kill9();
    writer.abort();
    let acknowledged = client.progress().uploaded;
    drop(client);
    assert!(acknowledged >= 50);

    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let (status, summary) = http(
        server.addr,
        "GET",
        "/api/admin/history-count",
        &[("x-eddy-admin-key", &server.admin_key)],
        None,
    )
    .await;
    assert_eq!(status, 200, "{summary}");
    let stored = summary["latest_client_versions"][ident.to_string()]
        .as_u64()
        .unwrap();
    assert!(
        stored >= acknowledged,
        "the server acknowledged client version {acknowledged} but holds only {stored}"
    );
    // A fresh client downloads every acknowledged object (one object per client version after
    // the first, which wrote the declared schema).
    let token = anonymous_token(server.addr).await;
    let fresh = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
    fresh.wait_for_download(WAIT).await.unwrap();
    let objects = fresh.read(|s| s.len("Item")).unwrap();
    assert!(
        objects as u64 + 1 >= acknowledged,
        "{objects} objects for {acknowledged} acknowledged writes"
    );
}

#[test]
fn schema_file_round_trips() {
    let text = eddy_core::schema_json::schema_to_json(&sim_schema()).to_string();
    let schema: Schema = eddy_core::schema_json::schema_from_json(&text).unwrap();
    assert_eq!(schema, sim_schema());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_keeps_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let token = anonymous_token(server.addr).await;
    let client = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
    client.write(|tx| set_item(tx, 7, 7)).unwrap();
    let acknowledged = client.wait_for_upload(WAIT).await.unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = std::mem::replace(&mut server.child, Command::new("true").spawn().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let exit = rx
        .recv_timeout(WAIT)
        .expect("the server did not stop after SIGTERM")
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
    drop(client);

    let server = Server::with_schema(dir.path(), "127.0.0.1:0");
    let (_, summary) = http(
        server.addr,
        "GET",
        "/api/admin/history-count",
        &[("x-eddy-admin-key", &server.admin_key)],
        None,
    )
    .await;
    assert_eq!(summary["count"].as_u64(), Some(acknowledged));
}

/// A server that holds no history in memory (`limits.history_cache_mib = 0`) reads every entry
/// it needs back from SQLite, also those of the transaction still open: concurrent writers
/// whose uploads are based on older versions converge, and after a `kill -9` and a restart a
/// fresh client downloads the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_holding_no_history_in_memory_reads_it_from_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("app.toml");
    std::fs::write(&config, "[limits]\nhistory_cache_mib = 0\n").unwrap();
    let start = || {
        Server::with_schema_and(
            dir.path(),
            "127.0.0.1:0",
            &["--config".as_ref(), config.as_os_str()],
        )
    };
    let mut server = start();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let token = anonymous_token(server.addr).await;
        clients.push(Client::connect(&server.sync_url(), &token, sim_schema()).unwrap());
    }
    for i in 0..30 {
        for (c, client) in (0i64..).zip(&clients) {
            client
                .write(|tx| set_item(tx, i % 5, c * 1000 + i))
                .unwrap();
        }
    }
    let store = converged(&clients).await;
    assert_eq!(store.len("Item"), 5);

    server.kill9();
    drop(clients);
    let server = start();
    let token = anonymous_token(server.addr).await;
    let fresh = Client::connect(&server.sync_url(), &token, sim_schema()).unwrap();
    fresh.wait_for_download(WAIT).await.unwrap();
    assert!(
        fresh.store().unwrap() == store,
        "the fresh client's state differs"
    );
}
