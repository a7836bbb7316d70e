//! The WebSocket sync endpoint `GET /api/sync` and the engine thread behind it.
//!
//! One dedicated thread owns the `ServerEngine` (SQLite is blocking). Connection tasks feed it
//! connect/frame/disconnect events through one bounded channel; it handles a batch of them, then
//! drains `poll_transmit` (which flushes storage once for the whole batch: group commit) and writes
//! each encoded frame into its connection's socket itself, through the socket's ordered write
//! queue (`crate::socket::Outgoing`): what the socket does not take at once waits there for the
//! connection's task. A connection with too many writes waiting is closed rather than allowed to
//! block the engine; closing it lets its task write what is queued, then a Close frame.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::header::SEC_WEBSOCKET_PROTOCOL;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use eddy_core::protocol::{encode_server_message, ErrorCode, MessageLimits, ServerMessage};
use eddy_core::server::{ConnectionId, ServerEngine, ServerEvent};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::auth::JwtAuth;
use crate::error::ServerError;
use crate::feed::{Bodies, FeedSender, Record};
use crate::ingest::{IngestBatch, IngestStats};
use crate::socket::{Outgoing, Peer};
use crate::storage::SqliteStorage;
use crate::{now_ms, AppState};

/// The only protocol version this server speaks, as a WebSocket subprotocol.
pub const PROTOCOL: &str = eddy_core::protocol::SUBPROTOCOL;
/// The same protocol under the name browsers can offer: their WebSocket API accepts only RFC 6455
/// tokens as subprotocols, and `/` is not a token character.
pub const BROWSER_PROTOCOL: &str = eddy_core::protocol::BROWSER_SUBPROTOCOL;
/// How many inputs wait for the engine before connection tasks are slowed down.
const ENGINE_QUEUE: usize = 4096;
/// Most inputs the engine handles before it transmits (and so flushes).
const MAX_BATCH: usize = 512;
/// The socket read chunk; tungstenite's default (128 KiB, allocated per connection) would
/// dominate the memory of an idle session. Larger frames still arrive, in more reads.
const READ_BUFFER: usize = 4 * 1024;
/// How long a closing connection may take to deliver its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The engine the server runs.
pub type Engine = ServerEngine<SqliteStorage, JwtAuth>;

/// What connection tasks tell the engine thread.
#[derive(Debug)]
enum EngineInput {
    /// A socket opened; frames for it are written through `out`.
    Connect {
        id: ConnectionId,
        out: Arc<Outgoing>,
        peer: SocketAddr,
    },
    /// A binary frame arrived.
    Frame { id: ConnectionId, bytes: Bytes },
    /// The socket broke the framing rules: send a connection-level ERROR and close it.
    Violation {
        id: ConnectionId,
        code: ErrorCode,
        message: String,
    },
    /// The socket closed.
    Disconnect { id: ConnectionId },
    /// Forget a device's Data Ingest queue report and figures; answers whether there were any,
    /// once the removal went to storage.
    ForgetIngestStatus {
        client_file_ident: u64,
        reply: Reply,
    },
    /// Flush, close every connection and stop.
    Shutdown,
}

/// Where the engine thread answers an admin request.
type Reply = oneshot::Sender<Result<bool, ServerError>>;

/// The handle connection tasks use to reach the engine thread.
#[derive(Debug)]
pub struct SyncHandle {
    tx: mpsc::Sender<EngineInput>,
    thread: Mutex<Option<JoinHandle<()>>>,
    next_id: AtomicU64,
    limits: MessageLimits,
}

impl SyncHandle {
    /// Starts the engine thread; it reports what it sees to `feed`, and Data Ingest figures to
    /// `ingest`.
    pub fn start(
        engine: Engine,
        limits: MessageLimits,
        feed: FeedSender,
        ingest: Arc<IngestStats>,
    ) -> Result<Self, ServerError> {
        let (tx, rx) = mpsc::channel(ENGINE_QUEUE);
        let thread = std::thread::Builder::new()
            .name("eddy-engine".into())
            .spawn(move || engine_thread(engine, rx, feed, ingest))?;
        Ok(SyncHandle {
            tx,
            thread: Mutex::new(Some(thread)),
            next_id: AtomicU64::new(1),
            limits,
        })
    }

    /// Forgets the Data Ingest queue report and figures of a device that will not come back;
    /// returns whether there were any.
    pub async fn forget_ingest_status(&self, client_file_ident: u64) -> Result<bool, ServerError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || ServerError::Internal("the sync engine stopped".into());
        self.tx
            .send(EngineInput::ForgetIngestStatus {
                client_file_ident,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Asks the engine to flush, close every connection and stop.
    pub async fn stop(&self) {
        // A closed channel means the engine already stopped.
        let _ = self.tx.send(EngineInput::Shutdown).await;
    }

    /// Waits for the engine thread to end (after [`SyncHandle::stop`]).
    pub async fn join(&self) -> Result<(), ServerError> {
        let thread = self
            .thread
            .lock()
            .map_err(|_| ServerError::Internal("the engine handle lock is poisoned".into()))?
            .take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| ServerError::Internal(format!("cannot join the engine: {e}")))?
                .map_err(|_| ServerError::Internal("the engine thread panicked".into()))?;
        }
        Ok(())
    }
}

fn engine_thread(
    engine: Engine,
    rx: mpsc::Receiver<EngineInput>,
    feed: FeedSender,
    ingest: Arc<IngestStats>,
) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime.block_on(EngineDriver::new(engine, feed, ingest).run(rx)),
        Err(e) => tracing::error!(error = %e, "cannot start the engine's runtime"),
    }
}

/// What woke the engine.
enum Wake {
    Input(EngineInput),
    Timeout,
    Closed,
}

struct EngineDriver {
    engine: Engine,
    connections: HashMap<ConnectionId, Arc<Outgoing>>,
    feed: FeedSender,
    ingest: Arc<IngestStats>,
    /// Answers to send once storage is flushed.
    replies: Vec<(Reply, Result<bool, ServerError>)>,
}

impl EngineDriver {
    fn new(engine: Engine, feed: FeedSender, ingest: Arc<IngestStats>) -> Self {
        EngineDriver {
            engine,
            connections: HashMap::new(),
            feed,
            ingest,
            replies: Vec::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<EngineInput>) {
        tracing::info!(
            version = self.engine.latest_version(),
            "sync engine started"
        );
        // A new file's history salt is buffered: commit it before anyone else needs the lock.
        self.transmit();
        self.feed.flush();
        loop {
            let wake = match self.engine.poll_timeout() {
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                    tokio::select! {
                        input = rx.recv() => input.map_or(Wake::Closed, Wake::Input),
                        () = tokio::time::sleep(wait) => Wake::Timeout,
                    }
                }
                None => rx.recv().await.map_or(Wake::Closed, Wake::Input),
            };
            let mut stop = match wake {
                Wake::Input(input) => self.apply(input),
                Wake::Timeout => {
                    self.engine.handle_timeout(now_ms());
                    false
                }
                Wake::Closed => true,
            };
            for _ in 0..MAX_BATCH {
                match rx.try_recv() {
                    Ok(input) => stop |= self.apply(input),
                    Err(_) => break,
                }
            }
            self.transmit();
            // Storage is flushed now: answer what waited for it.
            for (reply, result) in self.replies.drain(..) {
                let _ = reply.send(result);
            }
            self.feed.flush();
            if stop {
                break;
            }
        }
        tracing::info!(
            version = self.engine.latest_version(),
            connections = self.connections.len(),
            "sync engine stopped; closing connections"
        );
        for out in self.connections.values() {
            out.close();
        }
    }

    /// Handles one input; true when the engine must stop.
    fn apply(&mut self, input: EngineInput) -> bool {
        let now = now_ms();
        match input {
            EngineInput::Connect { id, out, peer } => {
                self.connections.insert(id, out);
                self.feed.record(Record::ConnectionOpened {
                    connection: id,
                    peer: Some(peer),
                });
                self.engine.handle_connect(id, now);
            }
            EngineInput::Frame { id, bytes } => {
                if self.connections.contains_key(&id) {
                    self.engine.handle_frame(id, now, &bytes);
                    self.feed.record(Record::FrameIn {
                        connection: id,
                        collections: self.engine.take_upload_collections(),
                        bytes,
                    });
                }
            }
            EngineInput::Violation { id, code, message } => {
                if let Some(out) = self.connections.remove(&id) {
                    tracing::info!(connection = id, ?code, %message, "closing connection");
                    let frame = Bytes::from(encode_server_message(&ServerMessage::Error {
                        session: 0,
                        code,
                        message,
                        compensating: None,
                    }));
                    self.feed.record(Record::FrameOut {
                        connection: id,
                        bytes: frame.clone(),
                        name: "ERROR",
                        session: None,
                        versions: Vec::new(),
                        bodies: Bodies::default(),
                    });
                    // The connection is closed either way.
                    let _ = out.send_binary(&frame);
                    out.close();
                    self.engine.handle_disconnect(id);
                    self.feed
                        .record(Record::ConnectionClosed { connection: id });
                }
            }
            EngineInput::Disconnect { id } => {
                if self.connections.remove(&id).is_some() {
                    self.engine.handle_disconnect(id);
                    self.feed
                        .record(Record::ConnectionClosed { connection: id });
                }
            }
            EngineInput::ForgetIngestStatus {
                client_file_ident,
                reply,
            } => {
                // The engine holds the stored queue report (none once the queue emptied), the
                // figures hold what the device ingested since the server started.
                let result = self
                    .engine
                    .forget_ingest_status(client_file_ident)
                    .map(|stored| self.ingest.forget(client_file_ident) || stored)
                    .map_err(ServerError::from);
                self.replies.push((reply, result));
            }
            EngineInput::Shutdown => return true,
        }
        false
    }

    /// Sends everything the engine has queued, then acts on its events, until both are empty.
    /// Events already queued are acted on before each message goes out (`poll_transmit` has
    /// flushed what they report, and figures such as Data Ingest's must include a batch by the
    /// time its acknowledgement can reach the client), except closing a connection, which waits
    /// until every queued message (such as the ERROR that explains it) has been routed.
    fn transmit(&mut self) {
        let mut closing = Vec::new();
        loop {
            loop {
                match self.engine.poll_transmit() {
                    Ok(Some((id, msg))) => {
                        while let Some(event) = self.engine.poll_event() {
                            if matches!(event, ServerEvent::CloseConnection { .. }) {
                                closing.push(event);
                            } else {
                                self.on_event(event);
                            }
                        }
                        self.route(id, &msg);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "storage failed; closing every connection");
                        let ids: Vec<ConnectionId> = self.connections.keys().copied().collect();
                        for id in ids {
                            self.close(id);
                        }
                        break;
                    }
                }
            }
            let mut any = !closing.is_empty();
            for event in closing.drain(..) {
                self.on_event(event);
            }
            while let Some(event) = self.engine.poll_event() {
                any = true;
                self.on_event(event);
            }
            if !any {
                return;
            }
        }
    }

    fn route(&mut self, id: ConnectionId, msg: &ServerMessage) {
        let Some(out) = self.connections.get(&id) else {
            return;
        };
        let frame = Bytes::from(encode_server_message(msg));
        let mut bodies = Bodies::default();
        let versions = match msg {
            ServerMessage::Download {
                changesets,
                resets,
                leaving,
                ..
            } => {
                for body in changesets.iter().map(|c| &c.body).chain([resets, leaving]) {
                    bodies.add(body);
                }
                changesets.iter().map(|c| c.server_version).collect()
            }
            _ => Vec::new(),
        };
        self.feed.record(Record::FrameOut {
            connection: id,
            bytes: frame.clone(),
            name: msg.name(),
            session: msg.session(),
            versions,
            bodies,
        });
        if out.send_binary(&frame).is_err() {
            tracing::warn!(connection = id, "closing a connection too slow to keep up");
            self.close(id);
        }
    }

    /// Forgets a connection and closes its socket once the frames queued for it are written.
    fn close(&mut self, id: ConnectionId) {
        if let Some(out) = self.connections.remove(&id) {
            out.close();
            self.feed
                .record(Record::ConnectionClosed { connection: id });
        }
        self.engine.handle_disconnect(id);
    }

    fn on_event(&mut self, event: ServerEvent) {
        match &event {
            ServerEvent::CloseConnection { connection } => self.close(*connection),
            ServerEvent::SessionIdentified {
                connection,
                session,
                user,
                client_file_ident,
            } => {
                tracing::debug!(connection, session, %user, client_file_ident, "session identified")
            }
            ServerEvent::SessionEnded {
                connection,
                session,
            } => tracing::debug!(connection, session, "session ended"),
            ServerEvent::Integrated {
                server_version,
                origin_file_ident,
                client_version,
                ..
            } => tracing::trace!(
                server_version,
                origin_file_ident,
                client_version,
                "integrated"
            ),
            // Events come after the flush that made the batch durable: the lag ends now.
            ServerEvent::Ingested {
                origin_file_ident,
                origin_timestamp,
                collection,
                objects,
                bytes,
                ..
            } => self.ingest.record(
                now_ms(),
                IngestBatch {
                    origin_file_ident: *origin_file_ident,
                    origin_timestamp: *origin_timestamp,
                    collection,
                    objects: *objects,
                    bytes: *bytes,
                },
            ),
            // A stored report keeps the time the engine stored it with, so it reads the same
            // after a restart.
            ServerEvent::IngestStatus {
                client_file_ident,
                collections,
                ..
            } => self.ingest.report_queue(
                self.engine
                    .ingest_status_reported_ms(*client_file_ident)
                    .unwrap_or_else(now_ms),
                *client_file_ident,
                collections,
            ),
            ServerEvent::IngestStatusDropped { client_file_ident } => {
                self.ingest.forget(*client_file_ident);
            }
            ServerEvent::ErrorSent {
                connection,
                session,
                code,
                message,
            } => tracing::info!(connection, session, ?code, %message, "error sent"),
            other => tracing::debug!(event = ?other, "engine event"),
        }
        self.feed.record(Record::Engine(event));
    }
}

/// Whether the handshake offers [`PROTOCOL`] in `Sec-WebSocket-Protocol`.
fn offers_protocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == PROTOCOL || p.trim() == BROWSER_PROTOCOL)
}

/// `GET /api/sync`: upgrades to a WebSocket speaking `eddy-sync/5`.
pub async fn sync_endpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<Peer>>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !offers_protocol(&headers) {
        return ServerError::BadRequest(format!(
            "offer the WebSocket subprotocol \"{PROTOCOL}\" in Sec-WebSocket-Protocol; this server speaks only {PROTOCOL}"
        ))
        .into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ServerError::BadRequest(format!(
                "this endpoint needs a WebSocket upgrade: {}",
                rejection.body_text()
            ))
            .into_response()
        }
    };
    // The engine writes into the socket through the queue `eddy_server::run`'s listener made.
    let Some(Extension(ConnectInfo(peer))) = peer else {
        return ServerError::Internal(
            "the sync endpoint is served only by eddy_server::run's listener".into(),
        )
        .into_response();
    };
    let max = state.sync().limits.max_message_bytes;
    upgrade
        .protocols([PROTOCOL, BROWSER_PROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection(state, socket, peer))
}

/// Whether a socket read error was a frame over the size limit.
fn is_too_large(error: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    error
        .into_inner()
        .downcast_ref::<Error>()
        .is_some_and(|e| matches!(e, Error::Capacity(_)))
}

/// Runs one connection: reads frames into the engine, and writes out what the engine queued
/// when the socket could not take it at once, until either side closes.
async fn connection(state: AppState, mut socket: WebSocket, peer: Peer) {
    let sync = state.sync();
    let id = sync.next_id.fetch_add(1, Ordering::Relaxed);
    let out = Arc::clone(&peer.out);
    let connect = EngineInput::Connect {
        id,
        out: peer.out,
        peer: peer.addr,
    };
    if sync.tx.send(connect).await.is_err() {
        return;
    }
    tracing::debug!(connection = id, "connected");
    let writes = out.run();
    tokio::pin!(writes);
    let mut closed_by_engine = false;
    loop {
        tokio::select! {
            written = &mut writes => {
                closed_by_engine = written.is_ok();
                break;
            }
            read = socket.next() => {
                let input = match read {
                    Some(Ok(Message::Binary(bytes))) => EngineInput::Frame { id, bytes },
                    Some(Ok(Message::Text(_))) => EngineInput::Violation {
                        id,
                        code: ErrorCode::BadSyntax,
                        message: "text frames are not part of eddy-sync; send binary frames".into(),
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        if is_too_large(e) {
                            let _ = sync.tx.send(EngineInput::Violation {
                                id,
                                code: ErrorCode::LimitsExceeded,
                                message: format!("a frame is larger than {} bytes", sync.limits.max_message_bytes),
                            }).await;
                        }
                        break;
                    }
                };
                if sync.tx.send(input).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = sync.tx.send(EngineInput::Disconnect { id }).await;
    // The frames queued before the end still go out (then the engine's Close, or the reply to
    // the peer's), within a grace period: a peer that stopped reading never takes them.
    let finish = async {
        if closed_by_engine {
            let _ = socket.send(Message::Close(None)).await;
        } else {
            let _ = socket.flush().await;
        }
        let _ = out.drain().await;
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, finish).await;
    tracing::debug!(connection = id, "disconnected");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_protocol_must_be_offered() {
        let mut headers = HeaderMap::new();
        assert!(!offers_protocol(&headers));
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("eddy-sync/5, eddy-sync/3"),
        );
        assert!(offers_protocol(&headers));
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("eddy-sync/10"),
        );
        assert!(!offers_protocol(&headers));
        // Version 1 had no flexible-sync views, version 2 no INGEST_STATUS, version 3 no
        // changeset identities in upload cursors, version 4 no download cursor in UPLOAD; their
        // clients are refused.
        for old in [
            "eddy-sync/1",
            "eddy-sync/2",
            "eddy-sync/3",
            "eddy-sync/4",
            "eddy-sync.4",
        ] {
            headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(old));
            assert!(!offers_protocol(&headers), "{old}");
        }
    }
}
