//! The admin event feed behind the dev console: `GET /api/admin/events` (a WebSocket).
//!
//! The engine thread hands raw records (connections, frames in and out, engine events) to one
//! feed thread, all the records of one batch of sync work at once, through a bounded channel with
//! `try_send`: when the feed falls behind, records are dropped and counted, never waited for, so
//! the feed cannot slow sync. The feed thread decodes what it needs for filtering with
//! eddy-core's decoders (frames from clients; frames to clients come labelled by the engine
//! thread, and keep their raw bytes: the console decodes them itself with the same decoders
//! compiled to wasm), turns each record into a [`FeedEvent`], keeps the last [`RING`] events (at
//! most [`RING_BYTES`]) for backfill and broadcasts each one to the connected consoles. A
//! message event's JSON (the frame in base64) is made only when a console reads it; most leave
//! the ring unread. A console that lags more than [`LAG`] events behind is
//! told how many it missed and carries on from the newest.
//!
//! A console authenticates with its first text message, `{"admin_key": "...", "filter": {...}}`,
//! so that the key never appears in a URL. The server answers `{"kind": "hello", ...}`, the
//! backfill, then live events; a later `{"filter": {...}}` replaces the filter and is answered
//! with `{"kind": "filter"}`. A wrong key or request is answered with `{"kind": "refused",
//! "message": ...}` and the socket closes.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use eddy_core::changeset::{
    body_sizes, encode_changeset, DecodeLimits, Insert, Instruction, PlainBody,
};
use eddy_core::protocol::{decode_client_message, ClientMessage, MessageLimits, SubscriptionSet};
use eddy_core::server::{ConnectionId, IntegrationDecision, ServerEvent};
use eddy_core::transform::{DecisionSide, Outcome};
use serde::Deserialize;
use serde_json::{json, Value as Json};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::admin::constant_time_eq;
use crate::sync::PROTOCOL;
use crate::{now_ms, AppState};

/// How many recent events a console receives when it connects.
pub const RING: usize = 4096;
/// The most bytes of event JSON the ring keeps (the oldest events go first).
pub const RING_BYTES: usize = 64 << 20;
/// Frames larger than this are reported without their bytes, so one bootstrap DOWNLOAD cannot
/// fill the ring.
pub const MAX_RAW: usize = 256 << 10;
/// How many recent changesets' collections are remembered to label DOWNLOADs.
const VERSIONS: usize = 100_000;
/// How many events a console may fall behind before it skips ahead.
pub const LAG: usize = 1024;
/// How many records wait for the feed thread before new ones are dropped.
const INPUT_QUEUE: usize = 16 * 1024;
/// About how many bytes an event's JSON takes besides its frame or changeset.
const MESSAGE_FIELDS: usize = 256;
/// How long a console has to send its admin key.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the engine thread tells the feed.
#[derive(Debug)]
pub enum Record {
    /// A sync socket opened.
    ConnectionOpened {
        /// The connection.
        connection: ConnectionId,
        /// The peer's address, when known.
        peer: Option<SocketAddr>,
    },
    /// A sync socket closed.
    ConnectionClosed {
        /// The connection.
        connection: ConnectionId,
    },
    /// A frame from a client.
    FrameIn {
        /// The connection.
        connection: ConnectionId,
        /// The frame as received.
        bytes: Bytes,
        /// An UPLOAD's collections when the engine read them (ingested objects only), so the
        /// feed need not read the bodies again.
        collections: Option<Vec<String>>,
    },
    /// A frame to a client. The engine thread knows what it sent, so the feed need not decode it.
    FrameOut {
        /// The connection.
        connection: ConnectionId,
        /// The frame as sent.
        bytes: Bytes,
        /// The message type (`DOWNLOAD`).
        name: &'static str,
        /// The session, for session-level messages.
        session: Option<u64>,
        /// The server versions of the changesets a DOWNLOAD carries.
        versions: Vec<u64>,
        /// The sizes of the changeset bodies it carries.
        bodies: Bodies,
    },
    /// Something the engine reported.
    Engine(ServerEvent),
}

/// The changeset bodies one message carries, summed: how many, how many of them compressed,
/// and their bytes as encoded and uncompressed (read from each body's header, never inflated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bodies {
    /// How many bodies.
    pub count: u64,
    /// How many of them are compressed.
    pub compressed: u64,
    /// Their bytes as encoded.
    pub encoded: u64,
    /// Their bytes uncompressed.
    pub uncompressed: u64,
}

impl Bodies {
    /// Counts one body (an empty one, which stands for none, is skipped).
    pub fn add(&mut self, body: &[u8]) {
        if body.is_empty() {
            return;
        }
        let sizes = body_sizes(body);
        self.count += 1;
        self.compressed += u64::from(sizes.compressed);
        self.encoded += sizes.encoded;
        self.uncompressed += sizes.uncompressed;
    }

    /// Adds `body_count`, `body_bytes`, `body_uncompressed_bytes` and `compressed_bodies` to an
    /// event, when there are bodies.
    fn describe(&self, body: &mut Json) {
        if let (Json::Object(map), true) = (body, self.count > 0) {
            map.insert("body_count".into(), json!(self.count));
            map.insert("compressed_bodies".into(), json!(self.compressed));
            map.insert("body_bytes".into(), json!(self.encoded));
            map.insert("body_uncompressed_bytes".into(), json!(self.uncompressed));
        }
    }
}

/// The kinds of feed events, as console filters name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A sync socket opened or closed.
    Connection,
    /// A session was identified or ended.
    Session,
    /// A protocol message, either direction.
    Message,
    /// A changeset was integrated into the history.
    Changeset,
    /// A session's subscription set changed.
    Subscription,
    /// The server sent an error.
    Error,
    /// Data Ingest: a batch of asymmetric objects became durable, or a device reported its
    /// upload queue.
    Ingest,
    /// The feed dropped events because it fell behind.
    Gap,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Connection => "connection",
            Kind::Session => "session",
            Kind::Message => "message",
            Kind::Changeset => "changeset",
            Kind::Subscription => "subscription",
            Kind::Error => "error",
            Kind::Ingest => "ingest",
            Kind::Gap => "gap",
        }
    }
}

/// One event of the feed, with what filters match on and its JSON text.
#[derive(Debug)]
pub struct FeedEvent {
    /// Increases by one per event (gaps mean dropped records).
    pub seq: u64,
    /// What happened.
    pub kind: Kind,
    /// The sync connection, when there is one.
    pub connection: Option<ConnectionId>,
    /// The session on that connection, when there is one.
    pub session: Option<u64>,
    /// The client file, when known.
    pub client: Option<u64>,
    /// The user, when known.
    pub user: Option<Arc<str>>,
    /// The collections the event touches.
    pub collections: Collections,
    /// The event as one JSON object, once rendered (see [`FeedEvent::json`]).
    json: OnceLock<String>,
    /// What the JSON is made from when a console first reads it; `None` once rendered.
    lazy: Option<Lazy>,
    /// What the event counts for in the ring's byte budget (fixed when it is published).
    ring_bytes: usize,
}

/// An event kept as recorded, before its JSON is made: most events leave the ring without any
/// console reading them, so the JSON of the frequent ones (messages, with the frame in base64,
/// and integrated changesets, with their instructions encoded in base64) is made only on reading.
#[derive(Debug)]
enum Lazy {
    Message(RawMessage),
    Changeset(RawChangeset),
}

/// An integrated changeset as the engine reported it.
#[derive(Debug)]
struct RawChangeset {
    at: u64,
    server_version: u64,
    client_version: u64,
    objects: BTreeSet<String>,
    instructions: Vec<Instruction>,
    decisions: Vec<IntegrationDecision>,
}

/// A protocol message as recorded.
#[derive(Debug)]
struct RawMessage {
    at: u64,
    direction: &'static str,
    name: &'static str,
    size: usize,
    /// The frame's bytes; `None` for frames over [`MAX_RAW`].
    raw: Option<Bytes>,
    bodies: Bodies,
}

impl FeedEvent {
    /// The event as one JSON object (what consoles receive); a message's JSON is made on the
    /// first call.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| match &self.lazy {
            Some(Lazy::Message(message)) => self.render_message(message),
            Some(Lazy::Changeset(changeset)) => self.render_changeset(changeset),
            None => String::new(),
        })
    }

    fn render_changeset(&self, changeset: &RawChangeset) -> String {
        // The same encoding as the history entry's body.
        let encoded = encode_changeset(&changeset.instructions);
        let mut sizes = Bodies::default();
        sizes.add(&encoded);
        let mut body = json!({
            "server_version": changeset.server_version,
            "client_version": changeset.client_version,
            "objects": changeset.objects,
            "instructions": BASE64.encode(&encoded),
            "decisions": changeset.decisions.iter().map(decision_json).collect::<Vec<_>>(),
        });
        sizes.describe(&mut body);
        self.label(&mut body, changeset.at);
        body.to_string()
    }

    fn render_message(&self, message: &RawMessage) -> String {
        let mut body = match &message.raw {
            Some(raw) => json!({
                "direction": message.direction,
                "type": message.name,
                "size": message.size,
                "raw": BASE64.encode(raw),
            }),
            None => json!({
                "direction": message.direction,
                "type": message.name,
                "size": message.size,
                "raw_omitted": format!("frames over {} KiB are not kept", MAX_RAW >> 10),
            }),
        };
        message.bodies.describe(&mut body);
        self.label(&mut body, message.at);
        body.to_string()
    }

    fn label(&self, body: &mut Json, at: u64) {
        let labels = Labels {
            connection: self.connection,
            session: self.session,
            client: self.client,
            user: self.user.clone(),
            collections: Arc::clone(&self.collections),
        };
        label(body, self.seq, self.kind, at, &labels);
    }
}

/// Adds the event's sequence number, kind, time and labels to its JSON object.
fn label(body: &mut Json, seq: u64, kind: Kind, at: u64, labels: &Labels) {
    if let Json::Object(map) = body {
        map.insert("seq".into(), json!(seq));
        map.insert("kind".into(), json!(kind.name()));
        map.insert("at".into(), json!(at));
        if let Some(c) = labels.connection {
            map.insert("connection".into(), json!(c));
        }
        if let Some(s) = labels.session {
            map.insert("session".into(), json!(s));
        }
        if let Some(c) = labels.client {
            map.insert("client".into(), json!(c));
        }
        if let Some(u) = &labels.user {
            map.insert("user".into(), json!(u.as_ref()));
        }
        map.insert("collections".into(), json!(labels.collections.as_ref()));
    }
}

/// Which events a console wants; every field given must match.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Only this sync connection.
    pub connection: Option<ConnectionId>,
    /// Only this session ident (with `connection`, one session).
    pub session: Option<u64>,
    /// Only events of this client file.
    pub client: Option<u64>,
    /// Only events of this user.
    pub user: Option<String>,
    /// Only events touching this collection.
    pub collection: Option<String>,
    /// Only these kinds (all when absent or empty).
    #[serde(default)]
    pub kinds: Vec<Kind>,
}

impl Filter {
    /// Whether `event` passes. Gap notices always do: a console must know it missed events.
    pub fn matches(&self, event: &FeedEvent) -> bool {
        if event.kind == Kind::Gap {
            return true;
        }
        (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && self.connection.is_none_or(|c| event.connection == Some(c))
            && self.session.is_none_or(|s| event.session == Some(s))
            && self.client.is_none_or(|c| event.client == Some(c))
            && self
                .user
                .as_ref()
                .is_none_or(|u| event.user.as_deref() == Some(u.as_str()))
            && self
                .collection
                .as_ref()
                .is_none_or(|c| event.collections.contains(c))
    }
}

/// What a console sends: its key (first message only) and a filter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleRequest {
    admin_key: Option<String>,
    #[serde(default)]
    filter: Filter,
}

/// A console asking for the backfill and the live stream from the same point.
type Subscribe = oneshot::Sender<(Vec<Arc<FeedEvent>>, broadcast::Receiver<Arc<FeedEvent>>)>;

enum Input {
    /// Records the engine thread made since its last hand-off, oldest first, with their times.
    Records(Vec<(u64, Record)>),
    Subscribe(Subscribe),
}

/// The engine thread's end of the feed: never blocks. Records collect here and go to the feed
/// thread together at [`FeedSender::flush`], so the engine wakes the feed thread once per batch
/// of sync work rather than once per frame.
#[derive(Debug)]
pub struct FeedSender {
    tx: mpsc::Sender<Input>,
    dropped: Arc<AtomicU64>,
    /// Records handed off and not yet processed by the feed thread.
    queued: Arc<AtomicUsize>,
    /// The most records that may wait for the feed thread; newer ones are dropped.
    limit: usize,
    pending: Vec<(u64, Record)>,
}

impl Clone for FeedSender {
    fn clone(&self) -> Self {
        FeedSender {
            tx: self.tx.clone(),
            dropped: Arc::clone(&self.dropped),
            queued: Arc::clone(&self.queued),
            limit: self.limit,
            pending: Vec::new(),
        }
    }
}

impl FeedSender {
    /// Keeps `record` for the next [`FeedSender::flush`].
    pub fn record(&mut self, record: Record) {
        self.pending.push((now_ms(), record));
    }

    /// Hands the kept records to the feed thread, dropping and counting those that do not fit
    /// while it is behind.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let room = self
            .limit
            .saturating_sub(self.queued.load(Ordering::Acquire));
        if self.pending.len() > room {
            let over = self.pending.len() - room;
            self.pending.truncate(room);
            self.dropped.fetch_add(over as u64, Ordering::Relaxed);
        }
        let count = self.pending.len();
        if count == 0 {
            return;
        }
        self.queued.fetch_add(count, Ordering::AcqRel);
        let records = std::mem::take(&mut self.pending);
        if self.tx.try_send(Input::Records(records)).is_err() {
            self.queued.fetch_sub(count, Ordering::AcqRel);
            self.dropped.fetch_add(count as u64, Ordering::Relaxed);
        }
    }
}

/// The handlers' end of the feed.
#[derive(Debug)]
pub struct Feed {
    sender: FeedSender,
}

impl Feed {
    /// Starts the feed thread. It ends when every sender is gone.
    pub fn start(limits: MessageLimits) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let state = FeedState::new(limits, Arc::clone(&dropped));
        let processed = Arc::clone(&queued);
        std::thread::Builder::new()
            .name("eddy-feed".into())
            .spawn(move || state.run(rx, &processed))?;
        Ok(Feed {
            sender: FeedSender {
                tx,
                dropped,
                queued,
                limit: INPUT_QUEUE,
                pending: Vec::new(),
            },
        })
    }

    /// The sender the engine thread records through.
    pub fn sender(&self) -> FeedSender {
        self.sender.clone()
    }

    /// The recent events and a receiver of every later one, with nothing missed in between.
    pub async fn subscribe(
        &self,
    ) -> Option<(Vec<Arc<FeedEvent>>, broadcast::Receiver<Arc<FeedEvent>>)> {
        let (tx, rx) = oneshot::channel();
        self.sender.tx.send(Input::Subscribe(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// What the feed thread remembers to label events.
struct FeedState {
    limits: MessageLimits,
    changeset_limits: DecodeLimits,
    dropped: Arc<AtomicU64>,
    reported_dropped: u64,
    seq: u64,
    ring: VecDeque<Arc<FeedEvent>>,
    ring_bytes: usize,
    /// The collections of recent changesets by server version, oldest first.
    versions: VecDeque<(u64, Collections)>,
    live: broadcast::Sender<Arc<FeedEvent>>,
    peers: HashMap<ConnectionId, Option<SocketAddr>>,
    sessions: HashMap<(ConnectionId, u64), (u64, Arc<str>)>,
    users: HashMap<u64, Arc<str>>,
}

/// The collections an event touches, shared: most events of one changeset name the same ones
/// (its DOWNLOAD to every receiver), so they share one set rather than each copying it.
pub type Collections = Arc<BTreeSet<String>>;

/// No collections, shared by every event that touches none.
static NO_COLLECTIONS: LazyLock<Collections> = LazyLock::new(Collections::default);

/// The labels of an event before its JSON is attached.
#[derive(Clone)]
struct Labels {
    connection: Option<ConnectionId>,
    session: Option<u64>,
    client: Option<u64>,
    user: Option<Arc<str>>,
    collections: Collections,
}

impl Default for Labels {
    fn default() -> Self {
        Labels {
            connection: None,
            session: None,
            client: None,
            user: None,
            collections: Arc::clone(&NO_COLLECTIONS),
        }
    }
}

impl FeedState {
    fn new(limits: MessageLimits, dropped: Arc<AtomicU64>) -> Self {
        FeedState {
            limits,
            changeset_limits: DecodeLimits::default(),
            dropped,
            reported_dropped: 0,
            seq: 0,
            ring: VecDeque::with_capacity(RING),
            ring_bytes: 0,
            versions: VecDeque::new(),
            live: broadcast::channel(LAG).0,
            peers: HashMap::new(),
            sessions: HashMap::new(),
            users: HashMap::new(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Input>, queued: &AtomicUsize) {
        while let Some(input) = rx.blocking_recv() {
            match input {
                Input::Records(records) => {
                    let count = records.len();
                    for (at, record) in records {
                        self.report_drops(at);
                        self.record(at, record);
                    }
                    queued.fetch_sub(count, Ordering::AcqRel);
                }
                Input::Subscribe(reply) => {
                    let backfill = self.ring.iter().cloned().collect();
                    let _ = reply.send((backfill, self.live.subscribe()));
                }
            }
        }
    }

    fn publish(&mut self, kind: Kind, labels: Labels, at: u64, mut body: Json) {
        self.seq += 1;
        label(&mut body, self.seq, kind, at, &labels);
        let json = body.to_string();
        let ring_bytes = json.len();
        self.push(FeedEvent {
            seq: self.seq,
            kind,
            connection: labels.connection,
            session: labels.session,
            client: labels.client,
            user: labels.user,
            collections: labels.collections,
            json: OnceLock::from(json),
            lazy: None,
            ring_bytes,
        });
    }

    /// Keeps `event` in the ring and sends it to the connected consoles.
    fn push(&mut self, event: FeedEvent) {
        let event = Arc::new(event);
        self.ring_bytes += event.ring_bytes;
        self.ring.push_back(Arc::clone(&event));
        while self.ring.len() > RING || self.ring_bytes > RING_BYTES {
            match self.ring.pop_front() {
                Some(old) => self.ring_bytes -= old.ring_bytes,
                None => break,
            }
        }
        // No receivers is fine: the ring still keeps the event for the next console.
        let _ = self.live.send(event);
    }

    fn report_drops(&mut self, at: u64) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.reported_dropped {
            let missed = dropped - self.reported_dropped;
            self.reported_dropped = dropped;
            self.publish(
                Kind::Gap,
                Labels::default(),
                at,
                json!({ "missed": missed, "reason": "the feed fell behind the sync engine" }),
            );
        }
    }

    fn session_labels(&self, connection: ConnectionId, session: Option<u64>) -> Labels {
        let known = session.and_then(|s| self.sessions.get(&(connection, s)));
        Labels {
            connection: Some(connection),
            session,
            client: known.map(|(c, _)| *c),
            user: known.map(|(_, u)| Arc::clone(u)),
            collections: Arc::clone(&NO_COLLECTIONS),
        }
    }

    fn record(&mut self, at: u64, record: Record) {
        match record {
            Record::ConnectionOpened { connection, peer } => {
                self.peers.insert(connection, peer);
                let labels = self.session_labels(connection, None);
                let body = json!({
                    "event": "opened",
                    "peer": peer.map(|p| p.to_string()),
                    "protocol": PROTOCOL,
                });
                self.publish(Kind::Connection, labels, at, body);
            }
            Record::ConnectionClosed { connection } => {
                // Its sessions are forgotten as their SessionEnded events arrive.
                let peer = self.peers.remove(&connection).flatten();
                let labels = self.session_labels(connection, None);
                let body = json!({ "event": "closed", "peer": peer.map(|p| p.to_string()) });
                self.publish(Kind::Connection, labels, at, body);
            }
            Record::FrameIn {
                connection,
                bytes,
                collections,
            } => self.frame_in(at, connection, &bytes, collections),
            Record::FrameOut {
                connection,
                bytes,
                name,
                session,
                versions,
                bodies,
            } => {
                let mut labels = self.session_labels(connection, session);
                let mut sets = versions
                    .iter()
                    .filter_map(|v| self.collections_of_version(*v));
                if let Some(first) = sets.next() {
                    labels.collections = Arc::clone(first);
                    for more in sets {
                        Arc::make_mut(&mut labels.collections).extend(more.iter().cloned());
                    }
                }
                self.publish_message(at, labels, "out", name, &bytes, bodies);
            }
            Record::Engine(event) => self.engine_event(at, event),
        }
    }

    fn frame_in(
        &mut self,
        at: u64,
        connection: ConnectionId,
        bytes: &Bytes,
        read: Option<Vec<String>>,
    ) {
        let decoded = decode_client_message(bytes, &self.limits);
        let (name, session) = match &decoded {
            Ok(msg) => (msg.name(), msg.session()),
            Err(_) => ("UNDECODABLE", None),
        };
        let mut labels = self.session_labels(connection, session);
        let mut subscriptions = None;
        let mut bodies = Bodies::default();
        if let Ok(msg) = &decoded {
            match msg {
                ClientMessage::Upload { changesets, .. } => {
                    let unread = read.is_none();
                    let collections = Arc::make_mut(&mut labels.collections);
                    collections.extend(read.into_iter().flatten());
                    for c in changesets {
                        if unread {
                            self.collect_collections(&c.body, collections);
                        }
                        bodies.add(&c.body);
                    }
                }
                ClientMessage::Transact { changeset, .. } => {
                    self.collect_collections(
                        &changeset.body,
                        Arc::make_mut(&mut labels.collections),
                    );
                    bodies.add(&changeset.body);
                }
                ClientMessage::Release { objects, .. } => bodies.add(objects),
                ClientMessage::Ident {
                    subscriptions: set, ..
                }
                | ClientMessage::Query {
                    subscriptions: set, ..
                } => {
                    Arc::make_mut(&mut labels.collections)
                        .extend(set.subscriptions.iter().map(|s| s.collection.clone()));
                    subscriptions = Some(set.clone());
                }
                _ => {}
            }
        }
        let sub_labels = labels.clone();
        self.publish_message(at, labels, "in", name, bytes, bodies);
        if let Some(set) = subscriptions {
            self.publish_subscriptions(at, sub_labels, &set);
        }
    }

    /// The collections a recent changeset touched (versions arrive in increasing order).
    fn collections_of_version(&self, version: u64) -> Option<&Collections> {
        let first = self.versions.front()?.0;
        let index = usize::try_from(version.checked_sub(first)?).ok()?;
        self.versions
            .get(index)
            .filter(|(v, _)| *v == version)
            .map(|(_, c)| c)
            .or_else(|| {
                self.versions
                    .binary_search_by_key(&version, |(v, _)| *v)
                    .ok()
                    .map(|i| &self.versions[i].1)
            })
    }

    fn publish_message(
        &mut self,
        at: u64,
        labels: Labels,
        direction: &'static str,
        name: &'static str,
        bytes: &Bytes,
        bodies: Bodies,
    ) {
        self.seq += 1;
        let raw = (bytes.len() <= MAX_RAW).then(|| bytes.clone());
        // The rendered JSON's size: the frame in base64 plus about as much again for the fields.
        let ring_bytes = raw.as_ref().map_or(0, |r| r.len().div_ceil(3) * 4) + MESSAGE_FIELDS;
        self.push(FeedEvent {
            seq: self.seq,
            kind: Kind::Message,
            connection: labels.connection,
            session: labels.session,
            client: labels.client,
            user: labels.user,
            collections: labels.collections,
            json: OnceLock::new(),
            lazy: Some(Lazy::Message(RawMessage {
                at,
                direction,
                name,
                size: bytes.len(),
                raw,
                bodies,
            })),
            ring_bytes,
        });
    }

    fn publish_subscriptions(&mut self, at: u64, labels: Labels, set: &SubscriptionSet) {
        let subscriptions: Vec<Json> = set
            .subscriptions
            .iter()
            .map(|s| json!({ "name": s.name, "collection": s.collection, "query": s.query }))
            .collect();
        let body = json!({ "version": set.version, "subscriptions": subscriptions });
        self.publish(Kind::Subscription, labels, at, body);
    }

    fn collect_collections(&self, body: &[u8], out: &mut BTreeSet<String>) {
        let limits = &self.changeset_limits;
        let Ok(plain) = PlainBody::new(body, limits) else {
            return;
        };
        // A changeset of object creations and field writes (a batch of ingested objects) is
        // read without building its instructions, each of its few collections copied once.
        let mut found: Vec<String> = Vec::new();
        let inserts = plain.inserts(limits, |insert| {
            let (Insert::Create { collection, .. } | Insert::Set { collection, .. }) = insert;
            if !found.iter().any(|c| c == collection) {
                found.push(collection.to_owned());
            }
            true
        });
        if let Ok(true) = inserts {
            out.extend(found);
        } else if let Ok(instructions) = plain.decode(limits) {
            out.extend(instructions.iter().map(|i| collection_of(i).to_owned()));
        }
    }

    fn engine_event(&mut self, at: u64, event: ServerEvent) {
        match event {
            ServerEvent::SessionIdentified {
                connection,
                session,
                user,
                client_file_ident,
            } => {
                let user: Arc<str> = user.into();
                self.sessions.insert(
                    (connection, session),
                    (client_file_ident, Arc::clone(&user)),
                );
                self.users.insert(client_file_ident, user);
                let labels = self.session_labels(connection, Some(session));
                let peer = self.peers.get(&connection).copied().flatten();
                let body = json!({
                    "event": "identified",
                    "peer": peer.map(|p| p.to_string()),
                    "protocol": PROTOCOL,
                });
                self.publish(Kind::Session, labels, at, body);
            }
            ServerEvent::SessionEnded {
                connection,
                session,
            } => {
                let labels = self.session_labels(connection, Some(session));
                self.sessions.remove(&(connection, session));
                self.publish(Kind::Session, labels, at, json!({ "event": "ended" }));
            }
            ServerEvent::Integrated {
                server_version,
                origin_file_ident,
                client_version,
                instructions,
                decisions,
            } => {
                let objects: BTreeSet<String> = instructions.iter().filter_map(object_of).collect();
                let collections: Collections = Arc::new(
                    instructions
                        .iter()
                        .map(|i| collection_of(i).to_owned())
                        .collect(),
                );
                if self.versions.len() == VERSIONS {
                    self.versions.pop_front();
                }
                self.versions
                    .push_back((server_version, Arc::clone(&collections)));
                let labels = Labels {
                    client: Some(origin_file_ident),
                    user: self.users.get(&origin_file_ident).cloned(),
                    collections,
                    ..Labels::default()
                };
                // About the rendered size: instructions encode to a few dozen bytes each, and
                // grow by a third in base64; a decision's JSON takes a few hundred.
                let ring_bytes = MESSAGE_FIELDS
                    + instructions.len() * 64
                    + decisions.len() * 512
                    + objects.iter().map(|o| o.len() + 4).sum::<usize>();
                self.seq += 1;
                self.push(FeedEvent {
                    seq: self.seq,
                    kind: Kind::Changeset,
                    connection: labels.connection,
                    session: labels.session,
                    client: labels.client,
                    user: labels.user,
                    collections: labels.collections,
                    json: OnceLock::new(),
                    lazy: Some(Lazy::Changeset(RawChangeset {
                        at,
                        server_version,
                        client_version,
                        objects,
                        instructions,
                        decisions,
                    })),
                    ring_bytes,
                });
            }
            ServerEvent::ErrorSent {
                connection,
                session,
                code,
                message,
            } => {
                let session = (session != 0).then_some(session);
                let labels = self.session_labels(connection, session);
                let body = json!({
                    "code": code.to_string(),
                    "message": message,
                });
                self.publish(Kind::Error, labels, at, body);
            }
            ServerEvent::Ingested {
                server_version,
                origin_file_ident,
                origin_timestamp,
                collection,
                objects,
                bytes,
            } => {
                // `at` is when the engine thread saw the event, right after the commit that made
                // the batch durable: the same end of the lag that `/api/admin/ingest` uses.
                let labels = Labels {
                    client: Some(origin_file_ident),
                    user: self.users.get(&origin_file_ident).cloned(),
                    collections: Arc::new(BTreeSet::from([collection.clone()])),
                    ..Labels::default()
                };
                let body = json!({
                    "event": "stored",
                    "batch": {
                        "collection": collection,
                        "server_version": server_version,
                        "objects": objects,
                        "bytes": bytes,
                        "lag_ms": at.saturating_sub(origin_timestamp),
                    },
                });
                self.publish(Kind::Ingest, labels, at, body);
            }
            ServerEvent::IngestStatus {
                connection,
                session,
                client_file_ident,
                user,
                collections,
            } => {
                let mut labels = self.session_labels(connection, Some(session));
                labels.client = Some(client_file_ident);
                labels.user = Some(user.into());
                labels.collections =
                    Arc::new(collections.iter().map(|e| e.collection.clone()).collect());
                let queue: Vec<Json> = collections
                    .iter()
                    .map(|e| {
                        json!({
                            "collection": e.collection,
                            "objects": e.objects,
                            "bytes": e.bytes,
                            "oldest_age_ms": e.oldest_age_ms,
                        })
                    })
                    .collect();
                let body = json!({ "event": "queue", "queue": queue });
                self.publish(Kind::Ingest, labels, at, body);
            }
            // Closing is reported by the connection record; other events carry nothing a
            // console shows.
            _ => {}
        }
    }
}

/// The collection an instruction acts on.
fn collection_of(instruction: &Instruction) -> &str {
    match instruction {
        Instruction::AddCollection { name, .. } => name,
        Instruction::AddProperty { collection, .. }
        | Instruction::CreateObject { collection, .. }
        | Instruction::EraseObject { collection, .. } => collection,
        Instruction::Set { path, .. }
        | Instruction::AddInteger { path, .. }
        | Instruction::Clear { path } => &path.collection,
        Instruction::ListInsert { list, .. }
        | Instruction::ListSet { list, .. }
        | Instruction::ListMove { list, .. }
        | Instruction::ListErase { list, .. } => &list.collection,
        Instruction::SetInsert { set, .. } | Instruction::SetErase { set, .. } => &set.collection,
        Instruction::DictErase { dict, .. } => &dict.collection,
        _ => "",
    }
}

/// The object an instruction acts on, as `Collection/key` (key as EJSON), if any.
fn object_of(instruction: &Instruction) -> Option<String> {
    let (collection, key) = match instruction {
        Instruction::CreateObject { collection, key }
        | Instruction::EraseObject { collection, key } => (collection, key),
        Instruction::Set { path, .. }
        | Instruction::AddInteger { path, .. }
        | Instruction::Clear { path } => (&path.collection, &path.key),
        Instruction::ListInsert { list, .. }
        | Instruction::ListSet { list, .. }
        | Instruction::ListMove { list, .. }
        | Instruction::ListErase { list, .. } => (&list.collection, &list.key),
        Instruction::SetInsert { set, .. } | Instruction::SetErase { set, .. } => {
            (&set.collection, &set.key)
        }
        Instruction::DictErase { dict, .. } => (&dict.collection, &dict.key),
        _ => return None,
    };
    let key = eddy_core::value::Value::from(key.clone())
        .to_ejson(eddy_core::value::EjsonMode::Relaxed)
        .to_string();
    Some(format!("{collection}/{key}"))
}

fn side_json(side: &DecisionSide) -> Json {
    let (outcome, rewritten) = match &side.outcome {
        Outcome::Kept => ("kept", None),
        Outcome::Discarded => ("discarded", None),
        Outcome::Rewritten(i) => (
            "rewritten",
            Some(BASE64.encode(encode_changeset(std::slice::from_ref(i)))),
        ),
        _ => ("other", None),
    };
    json!({
        "changeset": side.changeset,
        "instruction": side.instruction,
        "original": BASE64.encode(encode_changeset(std::slice::from_ref(&side.original))),
        "outcome": outcome,
        "rewritten": rewritten,
    })
}

fn decision_json(named: &IntegrationDecision) -> Json {
    let decision = &named.decision;
    let mut theirs = side_json(&decision.theirs);
    if let Json::Object(map) = &mut theirs {
        map.insert("server_version".into(), json!(named.theirs_version));
        map.insert("client".into(), json!(named.theirs_origin));
    }
    json!({
        "rule": format!("{:?}", decision.rule),
        "ours": side_json(&decision.ours),
        "theirs": theirs,
    })
}

/// `GET /api/admin/events`: upgrades to the feed WebSocket; the key comes in the first message.
pub async fn events_endpoint(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| console(state, socket))
}

/// Sends `{"kind":"refused","message":...}` and closes.
async fn refuse(mut socket: WebSocket, message: &str) {
    let text = json!({ "kind": "refused", "message": message }).to_string();
    let _ = socket.send(Message::Text(text.into())).await;
    let _ = socket.send(Message::Close(None)).await;
}

fn parse_request(message: Option<Result<Message, axum::Error>>) -> Result<ConsoleRequest, String> {
    match message {
        Some(Ok(Message::Text(text))) => serde_json::from_str(text.as_str()).map_err(|e| {
            format!("the request is not valid: {e}; send {{\"admin_key\": \"...\", \"filter\": {{...}}}}")
        }),
        _ => Err("send {\"admin_key\": \"...\"} as the first text message".into()),
    }
}

async fn console(state: AppState, mut socket: WebSocket) {
    let first = match tokio::time::timeout(LOGIN_TIMEOUT, socket.recv()).await {
        Ok(message) => parse_request(message),
        Err(_) => Err("no admin key arrived within 10 s; send it as the first message".into()),
    };
    let mut filter = match first {
        Ok(ConsoleRequest {
            admin_key: Some(key),
            filter,
        }) if constant_time_eq(key.as_bytes(), state.admin_key().as_bytes()) => filter,
        Ok(ConsoleRequest {
            admin_key: Some(_), ..
        }) => {
            return refuse(
                socket,
                "the admin key does not match the one printed at startup",
            )
            .await
        }
        Ok(_) => return refuse(socket, "send the admin key printed at startup").await,
        Err(message) => return refuse(socket, &message).await,
    };
    let Some((backfill, mut live)) = state.feed().subscribe().await else {
        return refuse(socket, "the server is shutting down").await;
    };
    let hello = json!({ "kind": "hello", "backfill": backfill.len(), "ring": RING });
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    for event in backfill.iter().filter(|e| filter.matches(e)) {
        if socket
            .send(Message::Text(event.json().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    loop {
        tokio::select! {
            event = live.recv() => {
                let text = match event {
                    Ok(event) if filter.matches(&event) => event.json().to_owned(),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(missed)) => json!({
                        "kind": "gap",
                        "missed": missed,
                        "reason": "this console fell behind the feed",
                    })
                    .to_string(),
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Text(_))) => match parse_request(message) {
                    Ok(request) => {
                        filter = request.filter;
                        let ack = json!({ "kind": "filter" }).to_string();
                        if socket.send(Message::Text(ack.into())).await.is_err() {
                            break;
                        }
                    }
                    Err(message) => return refuse(socket, &message).await,
                },
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: Kind, client: Option<u64>, collection: Option<&str>) -> FeedEvent {
        FeedEvent {
            seq: 1,
            kind,
            connection: Some(1),
            session: Some(2),
            client,
            user: Some("u".into()),
            collections: Arc::new(collection.into_iter().map(str::to_owned).collect()),
            json: OnceLock::new(),
            lazy: None,
            ring_bytes: 0,
        }
    }

    #[test]
    fn a_full_feed_drops_records_instead_of_blocking_the_engine() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut sender = FeedSender {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            queued: Arc::new(AtomicUsize::new(0)),
            limit: 2,
            pending: Vec::new(),
        };
        for connection in 0..5 {
            sender.record(Record::ConnectionClosed { connection });
        }
        assert_eq!(
            sender.dropped.load(Ordering::Relaxed),
            0,
            "nothing is sent before a flush"
        );
        sender.flush();
        assert_eq!(sender.dropped.load(Ordering::Relaxed), 3);
        // The feed thread has not caught up: the next batch is dropped whole.
        sender.record(Record::ConnectionClosed { connection: 9 });
        sender.flush();
        assert_eq!(sender.dropped.load(Ordering::Relaxed), 4);

        let mut state = FeedState::new(MessageLimits::default(), Arc::clone(&sender.dropped));
        while let Ok(Input::Records(records)) = rx.try_recv() {
            for (at, record) in records {
                state.report_drops(at);
                state.record(at, record);
            }
        }
        let kinds: Vec<Kind> = state.ring.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [Kind::Gap, Kind::Connection, Kind::Connection]);
        assert!(state.ring[0].json().contains("\"missed\":4"));
    }

    #[test]
    fn downloads_are_labelled_by_their_changesets_and_large_frames_lose_their_bytes() {
        let mut state = FeedState::new(MessageLimits::default(), Arc::new(AtomicU64::new(0)));
        let set = Instruction::Set {
            path: eddy_core::changeset::Path::field(
                "Item",
                eddy_core::value::PrimaryKey::Int(1),
                "n",
            ),
            value: eddy_core::value::Value::Int(1),
        };
        state.record(
            0,
            Record::Engine(ServerEvent::Integrated {
                server_version: 7,
                origin_file_ident: 3,
                client_version: 1,
                instructions: vec![set],
                decisions: Vec::new(),
            }),
        );
        state.record(
            0,
            Record::FrameOut {
                connection: 1,
                bytes: Bytes::from(vec![0u8; MAX_RAW + 1]),
                name: "DOWNLOAD",
                session: Some(1),
                versions: vec![7],
                bodies: Bodies::default(),
            },
        );
        let download = state.ring.back().unwrap();
        assert_eq!(download.kind, Kind::Message);
        assert!(download.collections.contains("Item"));
        assert!(download.json().contains("raw_omitted"));
        assert!(!download.json().contains("\"raw\""));
    }

    #[test]
    fn messages_and_changesets_carry_encoded_and_uncompressed_body_sizes() {
        let mut state = FeedState::new(MessageLimits::default(), Arc::new(AtomicU64::new(0)));
        let instructions: Vec<Instruction> = (0..200)
            .map(|key| Instruction::Set {
                path: eddy_core::changeset::Path::field(
                    "Item",
                    eddy_core::value::PrimaryKey::Int(key),
                    "n",
                ),
                value: eddy_core::value::Value::Int(key),
            })
            .collect();
        let body = encode_changeset(&instructions);
        let small = encode_changeset(&instructions[..1]);
        let upload = eddy_core::protocol::encode_client_message(&ClientMessage::Upload {
            session: 1,
            download_server_version: 0,
            changesets: [body.clone(), small.clone()]
                .into_iter()
                .enumerate()
                .map(|(i, body)| eddy_core::protocol::UploadChangeset {
                    client_version: i as u64 + 1,
                    last_integrated_server_version: 0,
                    origin_timestamp: 0,
                    origin_file_ident: 0,
                    body,
                })
                .collect(),
        });
        state.record(
            0,
            Record::FrameIn {
                connection: 1,
                bytes: Bytes::from(upload.clone()),
                collections: None,
            },
        );
        let event: Json = serde_json::from_str(state.ring.back().unwrap().json()).unwrap();
        let big = body_sizes(&body);
        assert!(big.compressed && big.uncompressed > big.encoded, "{big:?}");
        assert_eq!(event["size"], upload.len());
        assert_eq!(event["body_count"], 2);
        assert_eq!(event["compressed_bodies"], 1);
        assert_eq!(event["body_bytes"], body.len() + small.len());
        assert_eq!(
            event["body_uncompressed_bytes"],
            big.uncompressed + small.len() as u64
        );
        let names = |state: &FeedState| -> Vec<String> {
            let labels = &state.ring.back().unwrap().collections;
            labels.iter().cloned().collect()
        };
        assert_eq!(names(&state), ["Item"]);
        // The collections the engine read label the UPLOAD as they are: no body is read again.
        state.record(
            0,
            Record::FrameIn {
                connection: 1,
                bytes: Bytes::from(upload.clone()),
                collections: Some(vec!["Reading".to_owned()]),
            },
        );
        assert_eq!(names(&state), ["Reading"]);
        let event: Json = serde_json::from_str(state.ring.back().unwrap().json()).unwrap();
        assert_eq!(event["body_count"], 2);

        state.record(
            0,
            Record::Engine(ServerEvent::Integrated {
                server_version: 1,
                origin_file_ident: 3,
                client_version: 1,
                instructions,
                decisions: Vec::new(),
            }),
        );
        let event: Json = serde_json::from_str(state.ring.back().unwrap().json()).unwrap();
        assert_eq!(event["body_bytes"], big.encoded);
        assert_eq!(event["body_uncompressed_bytes"], big.uncompressed);

        // A message without bodies has only its frame size.
        state.record(
            0,
            Record::ConnectionOpened {
                connection: 2,
                peer: None,
            },
        );
        state.record(
            0,
            Record::FrameOut {
                connection: 2,
                bytes: Bytes::from_static(b"\x01"),
                name: "PONG",
                session: None,
                versions: Vec::new(),
                bodies: Bodies::default(),
            },
        );
        let event: Json = serde_json::from_str(state.ring.back().unwrap().json()).unwrap();
        assert_eq!(event["size"], 1);
        assert!(event.get("body_bytes").is_none(), "{event}");
    }

    #[test]
    fn the_ring_keeps_only_the_newest_events() {
        let mut state = FeedState::new(MessageLimits::default(), Arc::new(AtomicU64::new(0)));
        for connection in 0..(RING as u64 + 10) {
            state.record(0, Record::ConnectionClosed { connection });
        }
        assert_eq!(state.ring.len(), RING);
        assert_eq!(state.ring[0].seq, 11);
    }

    #[test]
    fn filters_need_every_given_field_to_match() {
        let filter = Filter {
            client: Some(7),
            collection: Some("Task".into()),
            kinds: vec![Kind::Changeset],
            ..Filter::default()
        };
        assert!(filter.matches(&event(Kind::Changeset, Some(7), Some("Task"))));
        assert!(!filter.matches(&event(Kind::Changeset, Some(8), Some("Task"))));
        assert!(!filter.matches(&event(Kind::Changeset, Some(7), Some("Note"))));
        assert!(!filter.matches(&event(Kind::Message, Some(7), Some("Task"))));
        assert!(!filter.matches(&event(Kind::Changeset, None, Some("Task"))));
        assert!(filter.matches(&event(Kind::Gap, None, None)));
        assert!(Filter::default().matches(&event(Kind::Session, None, None)));
    }
}
