//! The sans-IO server sync engine: sessions, client file idents, history, integration of uploads
//! by operational transformation, downloads with cursors and acknowledgements, MARK, TRANSACT,
//! STATE snapshots, CLIENT_VERSION, subscriptions and keepalive.
//!
//! # Drive loop
//! ```text
//! on new socket:        engine.handle_connect(conn, now)
//! on binary frame:      engine.handle_frame(conn, now, &bytes)
//! on socket closed:     engine.handle_disconnect(conn)
//! at engine.poll_timeout(): engine.handle_timeout(now)
//! after any of these:   while let Some((conn, msg)) = engine.poll_transmit()? { send encode(msg) to conn }
//!                       while let Some(event) = engine.poll_event() { close sockets, feed the console }
//! ```
//! `poll_transmit` flushes storage before it releases the first message after a change, so every
//! acknowledgement the clients see is durable, and one flush covers everything handled since the
//! last one (group commit).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::ControlFlow;

use crate::changeset::{
    decode_changeset, encode_changeset, Changeset, ChangesetMeta, CodecError, DecodeLimits,
    Instruction, PlainBody,
};
use crate::client::SplitMix64;
use crate::ingest::{check_ingest_status, IngestError, Splitter};
use crate::protocol::{
    decode_client_message, BatchState, ClientMessage, CompensatingWrite, DownloadChangeset,
    DownloadCursor, ErrorCode, IngestStatusEntry, IntegratedChangeset, MessageLimits,
    RejectedWrite, ServerMessage, SessionIdent, SubscriptionSet, SyncProgress, TransactResult,
    UploadChangeset, UploadCursor, MAX_DOWNLOAD_BYTES, MAX_LISTED_INTEGRATIONS,
};
use crate::query;
use crate::schema::Schema;
use crate::server::history::{decode_stored, History, READ_CHUNK};
use crate::server::state::snapshot_instructions;
use crate::server::storage::{
    ClientFileRecord, HistoryEntry, IngestRecord, ServerStorage, StorageError, StoredIngestStatus,
};
use crate::server::view::{self, Backlinks, FileView, ObjectKey, SessionView, Touches};
use crate::sorted_map::SortedMap;
use crate::store::{ApplyError, Changes, Store};
use crate::transform::{transform, MergeDecision};
use crate::value::{EjsonMode, PrimaryKey, Value};

/// Identifies one client connection (chosen by the driver).
pub type ConnectionId = u64;

/// The largest client file ident (exclusive).
const MAX_FILE_IDENT: u64 = 1 << 63;

/// How many DOWNLOADs that changed views `poll_transmit` builds before one flush makes those
/// views durable: a bound on the messages queued at once, large enough that a changeset entering
/// many files' views costs a few flushes rather than one per file.
const DOWNLOADS_PER_FLUSH: usize = 256;

/// How the engine is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The schema the server enforces.
    pub schema: Schema,
    /// Whether clients may add collections and properties.
    pub development_mode: bool,
    /// Connections silent for longer are closed (default 10 minutes).
    pub idle_timeout_ms: u64,
    /// Most sessions one connection may bind.
    pub max_sessions_per_connection: usize,
    /// Most changeset bytes per DOWNLOAD.
    pub max_download_bytes: usize,
    /// Most bytes of object resets per DOWNLOAD; more are sent as a bootstrap over several
    /// DOWNLOADs (`MoreToCome` ... `LastInBatch`). Defaults to `max_download_bytes`.
    pub max_reset_bytes: usize,
    /// Size of STATE segments.
    pub state_segment_bytes: usize,
    /// Limits for decoding frames.
    pub message_limits: MessageLimits,
    /// Limits for decoding changeset bodies.
    pub changeset_limits: DecodeLimits,
    /// About how much memory the latest history entries may take, bodies and decoded
    /// instructions (64 MiB by default). Older entries are read back from storage when a client
    /// that far behind needs them; every entry's metadata stays in memory (32 bytes each).
    pub history_cache_bytes: usize,
    /// Whether [`ServerEvent::Integrated`] carries the integrated instructions and the merge
    /// decisions made while transforming them (for the dev console; costs a copy per changeset).
    pub record_merge_decisions: bool,
    /// Seed for client file idents and salts (drivers pass OS randomness).
    pub seed: u64,
    /// Read and write permissions per collection (none: everyone reads and writes everything).
    pub roles: view::Roles,
}

impl ServerConfig {
    /// Defaults for a schema.
    pub fn new(schema: Schema, seed: u64) -> Self {
        ServerConfig {
            schema,
            development_mode: false,
            idle_timeout_ms: 10 * 60 * 1000,
            max_sessions_per_connection: 256,
            max_download_bytes: MAX_DOWNLOAD_BYTES,
            max_reset_bytes: MAX_DOWNLOAD_BYTES,
            state_segment_bytes: 1024 * 1024,
            message_limits: MessageLimits::default(),
            changeset_limits: DecodeLimits::default(),
            history_cache_bytes: 64 << 20,
            record_merge_decisions: false,
            seed,
            roles: view::Roles::default(),
        }
    }
}

/// Who a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedUser {
    /// The user's id.
    pub id: String,
    /// When the token expires, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The token was valid but has expired.
    Expired,
    /// The token is malformed, forged, revoked or for another app.
    Invalid(String),
}

/// Checks access tokens (the server crate verifies JWTs; tests use simple tables).
pub trait Authenticator {
    /// The user a token belongs to, at time `now_ms`.
    fn authenticate(&self, token: &str, now_ms: u64) -> Result<AuthenticatedUser, AuthError>;
}

/// A merge decision made while integrating an upload, with the concurrent changeset it was
/// transformed against named by its place in the history (the transform itself only knows
/// indices into the slices it was given).
#[derive(Clone, Debug, PartialEq)]
pub struct IntegrationDecision {
    /// What the transform decided. `decision.theirs.changeset` is an index into the concurrent
    /// changesets of that transform; `theirs_version` and `theirs_origin` name that changeset.
    pub decision: MergeDecision,
    /// The server version of the concurrent changeset.
    pub theirs_version: u64,
    /// The client file the concurrent changeset came from (0 for the server itself).
    pub theirs_origin: u64,
}

/// Something the driver or the dev console should know.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ServerEvent {
    /// Close this connection (after sending what `poll_transmit` gave for it).
    CloseConnection {
        /// The connection.
        connection: ConnectionId,
    },
    /// A session was bound and identified.
    SessionIdentified {
        /// The connection.
        connection: ConnectionId,
        /// The session.
        session: SessionIdent,
        /// The user.
        user: String,
        /// The client file.
        client_file_ident: u64,
    },
    /// A session ended.
    SessionEnded {
        /// The connection.
        connection: ConnectionId,
        /// The session.
        session: SessionIdent,
    },
    /// A changeset was integrated into the history.
    Integrated {
        /// Its server version.
        server_version: u64,
        /// The client file it came from.
        origin_file_ident: u64,
        /// Its client version.
        client_version: u64,
        /// The integrated (transformed) instructions, when recording is on.
        instructions: Vec<Instruction>,
        /// Merge decisions made while transforming it (when recording is on), each naming the
        /// concurrent changeset by its server version.
        decisions: Vec<IntegrationDecision>,
    },
    /// Asymmetric objects of one collection, carried by one uploaded changeset, were stored
    /// (Data Ingest). Reported after the group commit that made them durable.
    Ingested {
        /// The server version of the changeset that carried them.
        server_version: u64,
        /// The client file they came from.
        origin_file_ident: u64,
        /// The device's timestamp of the changeset, in milliseconds since the Unix epoch.
        origin_timestamp: u64,
        /// The collection.
        collection: String,
        /// How many objects.
        objects: u64,
        /// Their share of the uploaded changeset body, in bytes.
        bytes: u64,
    },
    /// A client reported its Data Ingest upload queue (INGEST_STATUS); the engine keeps the
    /// latest report per client file ([`ServerEngine::ingest_status`]).
    IngestStatus {
        /// The connection.
        connection: ConnectionId,
        /// The session.
        session: SessionIdent,
        /// The client file.
        client_file_ident: u64,
        /// The user.
        user: String,
        /// One entry per asymmetric collection of the client's schema.
        collections: Vec<IngestStatusEntry>,
    },
    /// A client file's Data Ingest queue report is gone: the file was reset
    /// (CLIENT_VERSION_REQUEST for it), so the device's queue now belongs to the new file that
    /// replaces it, or the report was forgotten ([`ServerEngine::forget_ingest_status`]).
    IngestStatusDropped {
        /// The client file that was reset.
        client_file_ident: u64,
    },
    /// An error was sent to a client.
    ErrorSent {
        /// The connection.
        connection: ConnectionId,
        /// The session (0 for the connection).
        session: SessionIdent,
        /// The code.
        code: ErrorCode,
        /// The message.
        message: String,
    },
}

/// A failure of the engine itself (not of a client): storage stopped working.
pub type EngineError = StorageError;

#[derive(Debug)]
struct FileState {
    salt: u64,
    user_id: String,
    /// (server version, client version) of each integration from this file, in order.
    integrations: Vec<(u64, u64)>,
    bound: Option<(ConnectionId, SessionIdent)>,
}

impl FileState {
    fn last_integration(&self) -> (u64, u64) {
        self.integrations.last().copied().unwrap_or((0, 0))
    }

    /// The last client version integrated at or before `server_version`.
    fn client_version_at(&self, server_version: u64) -> u64 {
        let n = self
            .integrations
            .partition_point(|(sv, _)| *sv <= server_version);
        match n {
            0 => 0,
            n => self.integrations.get(n - 1).map_or(0, |(_, cv)| *cv),
        }
    }
}

#[derive(Debug)]
enum Phase {
    /// Bound; `file` is set once an ident was allocated or named.
    Bound { file: Option<u64> },
    /// Identified; changesets flow.
    Identified { file: u64, cursor: DownloadCursor },
}

#[derive(Debug)]
struct Session {
    /// Set after a session-level error: everything but UNBIND is ignored until the client
    /// unbinds (messages it sent before it saw the error may still arrive).
    failed: bool,
    user: AuthenticatedUser,
    phase: Phase,
    subscriptions: SubscriptionSet,
    marks: Vec<(u64, u64)>,
    needs_download: bool,
    view: SessionView,
}

#[derive(Debug, Default)]
struct Connection {
    /// Nearly always one session: a `BTreeMap` leaf would reserve room for eleven (4 KiB).
    sessions: SortedMap<SessionIdent, Session>,
    last_seen_ms: u64,
}

/// A session-level failure: ERROR to the client, then the session ends.
struct SessionFailure {
    code: ErrorCode,
    message: String,
}

fn fail(code: ErrorCode, message: impl Into<String>) -> SessionFailure {
    SessionFailure {
        code,
        message: message.into(),
    }
}

/// The server side of sync for one server file.
#[derive(Debug)]
pub struct ServerEngine<S, A> {
    config: ServerConfig,
    storage: S,
    auth: A,
    store: Store,
    /// Every entry's metadata; the latest entries' bodies and instructions.
    history: History,
    history_salt: u64,
    rng: SplitMix64,
    /// The latest time the driver passed in (server-made history entries carry it).
    clock_ms: u64,
    files: HashMap<u64, FileState>,
    connections: BTreeMap<ConnectionId, Connection>,
    needs_flush: bool,
    /// Sessions waiting for a DOWNLOAD, in a deterministic order.
    dirty: BTreeSet<(ConnectionId, SessionIdent)>,
    outbox: VecDeque<(ConnectionId, ServerMessage)>,
    events: VecDeque<ServerEvent>,
    state_cache: Option<(u64, Vec<u8>)>,
    /// The flexible-sync view of each client file that has one (see [`crate::server::view`]).
    views: HashMap<u64, FileView>,
    /// The last server version that touched each object.
    touches: Touches,
    /// Which objects link to each object.
    backlinks: Backlinks,
    /// Files whose view changed since the last flush.
    dirty_views: BTreeSet<u64>,
    /// The latest INGEST_STATUS of each client file that held anything, as stored.
    ingest_status: HashMap<u64, StoredIngestStatus>,
    /// The collections of the last UPLOAD handled, when it held ingested objects only (see
    /// [`ServerEngine::take_upload_collections`]).
    upload_collections: Option<Vec<String>>,
}

/// What the view adds to a DOWNLOAD.
#[derive(Default)]
struct ViewUpdate {
    resets: Vec<u8>,
    leaving: Vec<u8>,
    more_to_come: bool,
    refused: Vec<(ObjectKey, String)>,
}

/// Why a write to an object the client does not hold was refused.
const REFUSED_OUTSIDE_VIEW: &str = "the object is outside this client's view (not subscribed or \
     not readable, or written before the client received it); the write was not integrated";
/// Why a write the user's role does not allow was refused.
const REFUSED_BY_ROLE: &str =
    "the user's role does not allow this write (the collection's write filter); the write was not integrated";

impl<S: ServerStorage, A: Authenticator> ServerEngine<S, A> {
    /// Starts the engine on `storage`, rebuilding the current state from the stored history.
    pub fn new(config: ServerConfig, mut storage: S, auth: A) -> Result<Self, EngineError> {
        let stored = storage.load()?;
        let mut rng = SplitMix64(config.seed);
        let mut history_salt = stored.history_salt;
        let mut needs_flush = false;
        if history_salt == 0 {
            history_salt = (rng.next_u64() >> 1).max(1);
            storage.set_history_salt(history_salt)?;
            needs_flush = true;
        }
        let mut store = Store::new(config.schema.clone());
        let mut history = History::new(config.history_cache_bytes, config.changeset_limits);
        let mut files: HashMap<u64, FileState> = stored
            .client_files
            .into_iter()
            .map(|r| {
                (
                    r.ident,
                    FileState {
                        salt: r.salt,
                        user_id: r.user_id,
                        integrations: Vec::new(),
                        bound: None,
                    },
                )
            })
            .collect();
        let mut scratch = Changes::default();
        let mut touches = Touches::default();
        let mut backlinks = Backlinks::default();
        let mut views = HashMap::new();
        for (file, stored) in &stored.views {
            let view = FileView::from_stored(stored).map_err(|e| {
                StorageError(format!(
                    "the view of client file {file} does not decode: {e}"
                ))
            })?;
            views.insert(*file, view);
        }
        // A report of a file this server does not know (restored from an older backup) names
        // a device that cannot upload here again.
        let ingest_status: HashMap<u64, StoredIngestStatus> = stored
            .ingest_status
            .into_iter()
            .filter(|(file, _)| files.contains_key(file))
            .collect();
        // The history is read a chunk at a time, so starting never holds all of it.
        loop {
            let from = history.len() + 1;
            let chunk = storage.read_history(from, from + READ_CHUNK)?;
            let Some(last) = chunk.last().map(|e| e.server_version) else {
                break;
            };
            for (entry, expected) in chunk.into_iter().zip(from..) {
                if entry.server_version != expected {
                    return Err(StorageError(format!(
                        "stored history has version {} at position {expected}; the history must be gap-free",
                        entry.server_version
                    )));
                }
                let Changeset { instructions, .. } =
                    decode_stored(&entry, &config.changeset_limits)?;
                store.apply(&instructions, &mut scratch).map_err(|e| {
                    StorageError(format!(
                        "stored changeset {} does not apply: {e}",
                        entry.server_version
                    ))
                })?;
                scratch = Changes::default();
                touches.record(&instructions, entry.server_version);
                backlinks.record(&store, &instructions);
                if let Some(file) = files.get_mut(&entry.origin_file_ident) {
                    file.integrations
                        .push((entry.server_version, entry.client_version));
                }
                history.push(entry, instructions);
            }
            if last < from + READ_CHUNK - 1 {
                break;
            }
        }
        for view in views.values_mut() {
            view.note_all_erased(&store, &touches);
        }
        Ok(ServerEngine {
            config,
            storage,
            auth,
            store,
            history,
            history_salt,
            rng,
            clock_ms: 0,
            files,
            connections: BTreeMap::new(),
            needs_flush,
            dirty: BTreeSet::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            state_cache: None,
            views,
            touches,
            backlinks,
            dirty_views: BTreeSet::new(),
            ingest_status,
            upload_collections: None,
        })
    }

    /// The current state.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The latest server version.
    pub fn latest_version(&self) -> u64 {
        self.history.len()
    }

    /// How many of the latest history entries the engine holds in memory, bodies and
    /// instructions (see [`ServerConfig::history_cache_bytes`]).
    pub fn held_history_entries(&self) -> usize {
        self.history.held()
    }

    /// The storage (for drivers that inspect it, and simulations that crash it).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Consumes the engine, returning its storage (a simulated restart).
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// Number of bound sessions over all connections.
    pub fn session_count(&self) -> usize {
        self.connections.values().map(|c| c.sessions.len()).sum()
    }

    /// A new connection.
    pub fn handle_connect(&mut self, connection: ConnectionId, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.connections.insert(
            connection,
            Connection {
                sessions: SortedMap::default(),
                last_seen_ms: now_ms,
            },
        );
    }

    /// A connection closed: its sessions end; nothing it sent is lost.
    pub fn handle_disconnect(&mut self, connection: ConnectionId) {
        if let Some(conn) = self.connections.remove(&connection) {
            for (ident, session) in conn.sessions {
                self.release_file(connection, ident, &session);
                self.events.push_back(ServerEvent::SessionEnded {
                    connection,
                    session: ident,
                });
            }
        }
        self.outbox.retain(|(c, _)| *c != connection);
    }

    /// A binary frame arrived; a frame that does not decode ends the connection with an ERROR.
    pub fn handle_frame(&mut self, connection: ConnectionId, now_ms: u64, frame: &[u8]) {
        match decode_client_message(frame, &self.config.message_limits) {
            Ok(msg) => self.handle_message(connection, now_ms, msg),
            Err(e) => self.connection_error(connection, e.error_code(), e.to_string()),
        }
    }

    /// A decoded message arrived.
    pub fn handle_message(&mut self, connection: ConnectionId, now_ms: u64, msg: ClientMessage) {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        conn.last_seen_ms = now_ms;
        self.clock_ms = self.clock_ms.max(now_ms);
        let ident = match msg.session() {
            None => {
                if let ClientMessage::Ping { timestamp, .. } = msg {
                    self.outbox
                        .push_back((connection, ServerMessage::Pong { timestamp }));
                }
                return;
            }
            Some(0) => {
                return self.connection_error(
                    connection,
                    ErrorCode::BadSessionIdent,
                    "session ident 0 is reserved",
                );
            }
            Some(ident) => ident,
        };
        let result = match msg {
            ClientMessage::Bind {
                access_token,
                path,
                need_client_file_ident,
                ..
            } => self.on_bind(
                connection,
                ident,
                now_ms,
                &path,
                &access_token,
                need_client_file_ident,
            ),
            ClientMessage::Unbind { .. } => {
                if let Some(session) = self.remove_session(connection, ident) {
                    self.release_file(connection, ident, &session);
                    self.outbox
                        .push_back((connection, ServerMessage::Unbound { session: ident }));
                    self.events.push_back(ServerEvent::SessionEnded {
                        connection,
                        session: ident,
                    });
                }
                Ok(())
            }
            other => match self
                .connections
                .get(&connection)
                .and_then(|c| c.sessions.get(&ident))
            {
                None => {
                    return self.connection_error(
                        connection,
                        ErrorCode::BadSessionIdent,
                        format!(
                            "{} for session {ident}, which is not bound; send BIND first",
                            other.name()
                        ),
                    );
                }
                Some(session) if session.failed => Ok(()),
                Some(_) => self.on_session_message(connection, ident, now_ms, other),
            },
        };
        if let Err(failure) = result {
            self.session_error(connection, ident, failure);
        }
    }

    fn on_session_message(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        now_ms: u64,
        msg: ClientMessage,
    ) -> Result<(), SessionFailure> {
        match msg {
            ClientMessage::Ident {
                client_file_ident,
                client_file_ident_salt,
                download,
                latest_server_version,
                latest_server_version_salt,
                subscriptions,
                ..
            } => self.on_ident(
                connection,
                ident,
                client_file_ident,
                client_file_ident_salt,
                download,
                (latest_server_version, latest_server_version_salt),
                subscriptions,
            ),
            ClientMessage::Upload {
                download_server_version,
                changesets,
                ..
            } => self.on_upload(connection, ident, download_server_version, changesets),
            ClientMessage::Transact { changeset, .. } => {
                self.on_transact(connection, ident, changeset)
            }
            ClientMessage::Mark { request, .. } => {
                let latest = self.latest_version();
                let session = self.session_mut(connection, ident)?;
                match session.phase {
                    Phase::Identified { cursor, .. }
                        if cursor.server_version >= latest && !session.needs_download =>
                    {
                        self.outbox.push_back((
                            connection,
                            ServerMessage::Mark {
                                session: ident,
                                request,
                            },
                        ));
                    }
                    Phase::Identified { .. } => session.marks.push((request, latest)),
                    Phase::Bound { .. } => {
                        return Err(fail(ErrorCode::BadMessageOrder, "MARK before IDENT"))
                    }
                }
                Ok(())
            }
            ClientMessage::Refresh { access_token, .. } => {
                let user = self.authenticate(&access_token, now_ms)?;
                let session = self.session_mut(connection, ident)?;
                if user.id != session.user.id {
                    return Err(fail(
                        ErrorCode::UserMismatch,
                        "REFRESH with a token of another user",
                    ));
                }
                session.user = user;
                Ok(())
            }
            ClientMessage::StateRequest {
                server_version,
                server_version_salt,
                offset,
                ..
            } => self.on_state_request(
                connection,
                ident,
                server_version,
                server_version_salt,
                offset,
            ),
            ClientMessage::ClientVersionRequest {
                client_file_ident,
                client_file_ident_salt,
                from_client_version,
                ..
            } => {
                let user_id = self.session_mut(connection, ident)?.user.id.clone();
                // An unknown, forged or foreign file has nothing integrated as far as this user
                // can learn: answer 0 rather than revealing whether the ident exists.
                let own = self
                    .files
                    .get(&client_file_ident)
                    .filter(|f| f.salt == client_file_ident_salt && f.user_id == user_id);
                let client_version = own.map_or(0, |f| f.last_integration().1);
                let integrated = own.map_or_else(Vec::new, |f| {
                    let from = f
                        .integrations
                        .partition_point(|(_, cv)| *cv < from_client_version);
                    f.integrations
                        .iter()
                        .skip(from)
                        .take(MAX_LISTED_INTEGRATIONS)
                        .map(|&(sv, cv)| IntegratedChangeset {
                            client_version: cv,
                            origin_timestamp: self.history.made_at(sv),
                        })
                        .collect()
                });
                // The device resets this file: its ingest queue moves to the file replacing it.
                if own.is_some() {
                    self.drop_ingest_status(client_file_ident)?;
                }
                self.outbox.push_back((
                    connection,
                    ServerMessage::ClientVersion {
                        session: ident,
                        client_file_ident,
                        client_version,
                        integrated,
                    },
                ));
                Ok(())
            }
            ClientMessage::Query { subscriptions, .. } => {
                let session = self.session_mut(connection, ident)?;
                if !matches!(session.phase, Phase::Identified { .. }) {
                    return Err(fail(ErrorCode::BadMessageOrder, "QUERY before IDENT"));
                }
                if subscriptions.version <= session.subscriptions.version {
                    return Err(fail(
                        ErrorCode::BadProgress,
                        format!(
                            "subscription set version {} is not newer than {}",
                            subscriptions.version, session.subscriptions.version
                        ),
                    ));
                }
                self.set_subscriptions(connection, ident, subscriptions)
            }
            ClientMessage::Release { objects, .. } => self.on_release(connection, ident, &objects),
            ClientMessage::IngestStatus { collections, .. } => {
                self.on_ingest_status(connection, ident, now_ms, collections)
            }
            ClientMessage::Bind { .. } => Err(fail(
                ErrorCode::ReuseOfSessionIdent,
                "BIND for a session that is already bound",
            )),
            ClientMessage::Ping { .. } | ClientMessage::Unbind { .. } => Ok(()),
        }
    }

    fn authenticate(&self, token: &str, now_ms: u64) -> Result<AuthenticatedUser, SessionFailure> {
        self.auth.authenticate(token, now_ms).map_err(|e| match e {
            AuthError::Expired => fail(
                ErrorCode::TokenExpired,
                "the access token expired; refresh it and bind again",
            ),
            AuthError::Invalid(why) => fail(
                ErrorCode::BadAuthentication,
                format!("the access token is not valid: {why}"),
            ),
        })
    }

    fn on_bind(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        now_ms: u64,
        path: &str,
        token: &str,
        need_ident: bool,
    ) -> Result<(), SessionFailure> {
        let conn = self
            .connections
            .get(&connection)
            .ok_or_else(|| fail(ErrorCode::OtherSessionError, "no connection"))?;
        if conn.sessions.contains_key(&ident) {
            return Err(fail(
                ErrorCode::ReuseOfSessionIdent,
                format!("session {ident} is already bound"),
            ));
        }
        if conn.sessions.len() >= self.config.max_sessions_per_connection {
            return Err(fail(
                ErrorCode::TooManySessions,
                format!(
                    "at most {} sessions per connection",
                    self.config.max_sessions_per_connection
                ),
            ));
        }
        if path.is_empty()
            || path.len() > 256
            || !path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            return Err(fail(
                ErrorCode::IllegalRealmPath,
                format!("{path:?} is not a valid server file path"),
            ));
        }
        let user = self.authenticate(token, now_ms)?;
        let mut file = None;
        if need_ident {
            let (file_ident, salt) = self.allocate_file_ident();
            let record = ClientFileRecord {
                ident: file_ident,
                salt,
                user_id: user.id.clone(),
            };
            self.storage
                .add_client_file(&record)
                .map_err(|e| fail(ErrorCode::OtherSessionError, e.to_string()))?;
            self.needs_flush = true;
            self.files.insert(
                file_ident,
                FileState {
                    salt,
                    user_id: user.id.clone(),
                    integrations: Vec::new(),
                    bound: None,
                },
            );
            self.outbox.push_back((
                connection,
                ServerMessage::Ident {
                    session: ident,
                    client_file_ident: file_ident,
                    client_file_ident_salt: salt,
                },
            ));
            file = Some(file_ident);
        }
        let session = Session {
            failed: false,
            user,
            phase: Phase::Bound { file },
            subscriptions: SubscriptionSet::default(),
            marks: Vec::new(),
            needs_download: false,
            view: SessionView::default(),
        };
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.sessions.insert(ident, session);
        }
        Ok(())
    }

    fn allocate_file_ident(&mut self) -> (u64, u64) {
        loop {
            let ident = self.rng.next_u64() % MAX_FILE_IDENT;
            if ident != 0 && !self.files.contains_key(&ident) {
                let salt = (self.rng.next_u64() >> 1).max(1);
                return (ident, salt);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_ident(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        file_ident: u64,
        salt: u64,
        download: DownloadCursor,
        latest: (u64, u64),
        subscriptions: SubscriptionSet,
    ) -> Result<(), SessionFailure> {
        let latest_version = self.latest_version();
        let session = self.session_mut(connection, ident)?;
        let user_id = session.user.id.clone();
        match session.phase {
            Phase::Bound { file: Some(f) } if f != file_ident => {
                return Err(fail(
                    ErrorCode::BadClientFileIdent,
                    "IDENT names another file than the one allocated",
                ));
            }
            Phase::Bound { .. } => {}
            Phase::Identified { .. } => {
                return Err(fail(
                    ErrorCode::BadMessageOrder,
                    "second IDENT on one session",
                ))
            }
        }
        let file = self
            .files
            .get(&file_ident)
            .filter(|f| f.salt == salt)
            .ok_or_else(|| {
                fail(
                    ErrorCode::BadClientFileIdent,
                    format!("unknown client file {file_ident} or wrong salt"),
                )
            })?;
        if file.user_id != user_id {
            return Err(fail(
                ErrorCode::UserMismatch,
                "the client file belongs to another user",
            ));
        }
        if download.server_version > latest_version || latest.0 > latest_version {
            return Err(fail(
                ErrorCode::BadServerVersion,
                format!(
                    "server version {} is ahead of the server's {latest_version}",
                    download.server_version
                ),
            ));
        }
        if latest.0 > 0 && latest.1 != self.version_salt(latest.0) {
            return Err(fail(
                ErrorCode::BadServerVersion,
                format!("server version {} is not the one this client saw (restored from a backup?); reset the client file", latest.0),
            ));
        }
        let (_, integrated_cv) = file.last_integration();
        if download.last_integrated_client_version > integrated_cv
            || download.last_integrated_client_version
                != file.client_version_at(download.server_version)
        {
            return Err(fail(
                ErrorCode::BadProgress,
                "the download cursor does not match the server's history",
            ));
        }
        // A newer session for the same file replaces an older one (e.g. after a silent reconnect).
        if let Some((old_conn, old_session)) = self.files.get(&file_ident).and_then(|f| f.bound) {
            self.session_error(
                old_conn,
                old_session,
                fail(
                    ErrorCode::Superseded,
                    "a newer session for this client file started",
                ),
            );
        }
        if let Some(f) = self.files.get_mut(&file_ident) {
            f.bound = Some((connection, ident));
        }
        if !self.views.contains_key(&file_ident) {
            // A file that starts empty and subscribes narrows from the start; any other file
            // (one that never subscribed, or one opened from a full STATE) holds everything.
            let narrow = !view::Matcher::new(&subscriptions)
                .with_reads(&self.config.roles, &user_id)
                .selects_everything(self.store.schema());
            // With read rules every STATE carries only the schema, so a new file opened from
            // one holds nothing either.
            let view = if (download.server_version == 0 && narrow)
                || !self.config.roles.reads_everything()
            {
                FileView::empty()
            } else {
                FileView::everything()
            };
            self.save_view(file_ident, view);
        }
        let forgotten_at = self
            .views
            .get(&file_ident)
            .map_or(0, FileView::forgotten_at);
        if download.server_version < forgotten_at {
            return Err(fail(
                ErrorCode::BadClientFile,
                format!(
                    "the client file is at server version {}, but it already confirmed version \
                     {forgotten_at} and the server has forgotten objects erased before that (a \
                     file restored from a copy, or storage that lost commits): reset the client \
                     file",
                    download.server_version
                ),
            ));
        }
        self.resend_lost_resets(file_ident, download.server_version)?;
        self.confirm(file_ident, download.server_version);
        let session = self.session_mut(connection, ident)?;
        session.phase = Phase::Identified {
            file: file_ident,
            cursor: download,
        };
        session.needs_download = true;
        let matcher = view::Matcher::default().with_reads(&self.config.roles, &user_id);
        let session = self.session_mut(connection, ident)?;
        session.view = SessionView {
            recheck_all: true,
            matcher,
            ..SessionView::default()
        };
        let user = session.user.id.clone();
        self.dirty.insert((connection, ident));
        self.events.push_back(ServerEvent::SessionIdentified {
            connection,
            session: ident,
            user,
            client_file_ident: file_ident,
        });
        if subscriptions.version > 0 {
            self.set_subscriptions(connection, ident, subscriptions)?;
        }
        Ok(())
    }

    fn set_subscriptions(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        subscriptions: SubscriptionSet,
    ) -> Result<(), SessionFailure> {
        for sub in &subscriptions.subscriptions {
            let problem = if self.store.schema().collection(&sub.collection).is_none() {
                Some(format!(
                    "subscription {:?}: unknown collection {:?}",
                    sub.name, sub.collection
                ))
            } else if !view::viewable(self.store.schema(), &sub.collection) {
                Some(format!(
                    "subscription {:?}: {} is not a top-level collection (asymmetric and embedded objects are never synced to clients); subscribe to top-level collections only",
                    sub.name, sub.collection
                ))
            } else {
                query::parse(&sub.query)
                    .and_then(|q| q.validate(self.store.schema(), &sub.collection))
                    .err()
                    .map(|e| format!("subscription {:?} on {}: {e}", sub.name, sub.collection))
            };
            if let Some(message) = problem {
                self.outbox.push_back((
                    connection,
                    ServerMessage::QueryError {
                        session: ident,
                        query_version: subscriptions.version,
                        code: ErrorCode::BadQuery,
                        message,
                    },
                ));
                return Ok(());
            }
        }
        let user_id = self.session_mut(connection, ident)?.user.id.clone();
        let matcher = view::Matcher::new(&subscriptions).with_reads(&self.config.roles, &user_id);
        let session = self.session_mut(connection, ident)?;
        session.view.matcher = matcher;
        session.view.recheck_all = true;
        session.subscriptions = subscriptions;
        session.needs_download = true;
        self.dirty.insert((connection, ident));
        Ok(())
    }

    fn on_upload(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        download_server_version: u64,
        changesets: Vec<UploadChangeset>,
    ) -> Result<(), SessionFailure> {
        self.upload_collections = None;
        let uploaded = changesets.len();
        let session = self.session_mut(connection, ident)?;
        let Phase::Identified {
            file: file_ident,
            cursor,
        } = session.phase
        else {
            return Err(fail(ErrorCode::BadMessageOrder, "UPLOAD before IDENT"));
        };
        // The client cannot have integrated what the server has not sent it yet.
        if download_server_version > cursor.server_version {
            return Err(fail(
                ErrorCode::BadProgress,
                format!(
                    "UPLOAD reports download cursor {download_server_version}, but this session \
                     was sent only up to {}",
                    cursor.server_version
                ),
            ));
        }
        if let Some(c) = changesets
            .iter()
            .find(|c| c.last_integrated_server_version != download_server_version)
        {
            return Err(fail(
                ErrorCode::BadProgress,
                format!(
                    "changeset {} is based on server version {}, not on the UPLOAD's download \
                     cursor {download_server_version}",
                    c.client_version, c.last_integrated_server_version
                ),
            ));
        }
        if changesets.is_empty() {
            // A progress report: nothing to integrate or acknowledge.
            self.confirm(file_ident, download_server_version);
            return Ok(());
        }
        session.needs_download = true;
        self.dirty.insert((connection, ident));
        let file = self
            .files
            .get(&file_ident)
            .ok_or_else(|| fail(ErrorCode::BadClientFile, "client file vanished"))?;
        let (own_sv, own_cv) = file.last_integration();
        let mut previous = own_cv;
        let mut base = None;
        let mut fresh = Vec::new();
        for c in changesets {
            if c.client_version <= previous && c.client_version > own_cv {
                return Err(fail(
                    ErrorCode::BadClientVersion,
                    "client versions in an UPLOAD must increase",
                ));
            }
            if c.origin_file_ident != file_ident {
                return Err(fail(
                    ErrorCode::BadOriginFileIdent,
                    format!(
                        "changeset names origin {} on a session of file {file_ident}",
                        c.origin_file_ident
                    ),
                ));
            }
            if c.client_version <= own_cv {
                // Already integrated (a re-upload after a lost acknowledgement): idempotent,
                // unless the client file lost that changeset and made another with its version.
                if let Some(made) = self.integrated_timestamp(file_ident, c.client_version) {
                    if made != c.origin_timestamp {
                        return Err(fail(
                            ErrorCode::DivergingHistories,
                            format!(
                                "client version {} was integrated from a changeset made at {made} \
                                 ms, and this one was made at {} ms: the client file lost changes \
                                 the server holds (storage that did not keep a commit, or a file \
                                 restored from a copy), so it must reset",
                                c.client_version, c.origin_timestamp
                            ),
                        ));
                    }
                }
                continue;
            }
            previous = c.client_version;
            if *base.get_or_insert(c.last_integrated_server_version)
                != c.last_integrated_server_version
            {
                return Err(fail(
                    ErrorCode::BadProgress,
                    "every changeset of one UPLOAD must have the same base version",
                ));
            }
            fresh.push(c);
        }
        let Some(base) = base else { return Ok(()) };
        if base > self.latest_version() || base < own_sv {
            return Err(fail(
                ErrorCode::BadProgress,
                format!(
                    "upload base version {base} is outside {own_sv}..={}",
                    self.latest_version()
                ),
            ));
        }
        let mut ours = Vec::with_capacity(fresh.len());
        let mut ingested = Vec::with_capacity(fresh.len());
        let mut splitter = Splitter::new(self.store.schema());
        // The upload's collections, while every changeset is split straight from its body.
        let mut collections = (fresh.len() == uploaded).then(Vec::<String>::new);
        for c in &fresh {
            let limits = &self.config.changeset_limits;
            let bad = |e: CodecError| {
                fail(
                    ErrorCode::BadChangeset,
                    format!("changeset {}: {e}", c.client_version),
                )
            };
            let plain = PlainBody::new(&c.body, limits).map_err(bad)?;
            // Asymmetric objects never enter the synced state or the history: they go to
            // storage as documents, in the same commit as the changeset that carried them. A
            // changeset of ingested objects only is split as it is decoded.
            let split = match splitter.split_inserts(&plain, limits) {
                Some(split) => {
                    if let Some(collections) = collections.as_mut() {
                        for object in &split.ingested {
                            if !collections.contains(&object.collection) {
                                collections.push(object.collection.clone());
                            }
                        }
                    }
                    split
                }
                None => {
                    collections = None;
                    let instructions = plain.decode(limits).map_err(bad)?;
                    self.check_schema_changes(&instructions)?;
                    splitter.split(instructions).map_err(|e| {
                        let code = match e {
                            IngestError::NotInsertOnly { .. } => ErrorCode::AsymmetricWriteRefused,
                            _ => ErrorCode::BadChangeset,
                        };
                        fail(code, format!("changeset {}: {e}", c.client_version))
                    })?
                }
            };
            // The ingested objects' share of the uploaded body, for the ingest figures.
            let total = (split.synced.len() + split.ingested_instructions).max(1) as u64;
            let share = c.body.len() as u64 * split.ingested_instructions as u64 / total;
            let instructions = split.synced;
            ingested.push((split.ingested, share));
            ours.push(Changeset {
                meta: ChangesetMeta {
                    version: c.client_version,
                    last_integrated_remote_version: base,
                    origin_timestamp: c.origin_timestamp,
                    origin_file_ident: file_ident,
                },
                instructions,
            });
        }
        self.upload_collections = collections;
        let fresh_objects = self.admit_writes(connection, ident, file_ident, base, &mut ours);
        strip_known_schema(&mut ours, self.store.schema());
        // Only the concurrent changesets that can change ours are transformed against (and
        // cloned for it): with many clients writing, most of them touch other objects.
        let (objects, schema) = touched_objects(&ours);
        let mut theirs: Vec<Changeset> = Vec::new();
        if !objects.is_empty() || schema {
            self.history
                .walk(&mut self.storage, base + 1, u64::MAX, |_, c| {
                    if c.meta.origin_file_ident != file_ident && interacts(c, &objects, schema) {
                        theirs.push(c.clone());
                    }
                    ControlFlow::Continue(())
                })
                .map_err(|e| fail(ErrorCode::OtherSessionError, e.to_string()))?;
        }
        // The transform names changesets by index; the console needs their server versions.
        let concurrent: Vec<(u64, u64)> = theirs
            .iter()
            .map(|c| (c.meta.version, c.meta.origin_file_ident))
            .collect();
        let mut decisions = Vec::new();
        let log = self.config.record_merge_decisions.then_some(&mut decisions);
        transform(&mut ours, &mut theirs, log)
            .map_err(|e| fail(ErrorCode::BadChangeset, e.to_string()))?;
        let mut changes = Changes::default();
        let all: Vec<Instruction> = ours
            .iter()
            .flat_map(|c| c.instructions.iter().cloned())
            .collect();
        self.store.apply(&all, &mut changes).map_err(|e| {
            fail(
                ErrorCode::BadChangeset,
                format!("changeset does not apply: {e}"),
            )
        })?;
        let mut entries = Vec::with_capacity(ours.len());
        let mut records = Vec::new();
        let mut shares = Vec::new();
        for ((changeset, upload), (objects, share)) in ours.into_iter().zip(&fresh).zip(ingested) {
            let server_version = self.latest_version() + 1 + entries.len() as u64;
            if !objects.is_empty() {
                shares.push((server_version, share, objects.len() as u64));
            }
            records.extend(objects.into_iter().map(|object| IngestRecord {
                server_version,
                origin_file_ident: file_ident,
                origin_timestamp: changeset.meta.origin_timestamp,
                object,
            }));
            let body = encode_changeset(&changeset.instructions);
            let entry = HistoryEntry {
                server_version,
                origin_file_ident: file_ident,
                client_version: changeset.meta.version,
                origin_timestamp: changeset.meta.origin_timestamp,
                original_size: upload.body.len() as u64,
                body,
            };
            entries.push((entry, changeset.instructions));
        }
        if !records.is_empty() {
            self.storage
                .insert_ingested(&records)
                .map_err(|e| fail(ErrorCode::OtherSessionError, e.to_string()))?;
            self.report_ingest(&records, &shares);
            self.ingested_from(file_ident, &records)?;
        }
        let decisions_per_entry = decisions_per_entry(decisions, &concurrent, entries.len());
        self.hold(file_ident, fresh_objects);
        self.append(entries, decisions_per_entry)?;
        self.confirm(file_ident, base);
        Ok(())
    }

    /// Takes objects stored from `file` off its stored queue report until the device reports
    /// again, so a device that went away right after its upload does not look stuck after a
    /// restart (bytes shrink in proportion).
    fn ingested_from(&mut self, file: u64, records: &[IngestRecord]) -> Result<(), SessionFailure> {
        let Some(status) = self.ingest_status.get_mut(&file) else {
            return Ok(());
        };
        for entry in &mut status.collections {
            let stored = records
                .iter()
                .filter(|r| r.object.collection == entry.collection)
                .count() as u64;
            let left = entry.objects.saturating_sub(stored);
            entry.bytes = match entry.objects {
                0 => 0,
                all => u64::try_from(u128::from(entry.bytes) * u128::from(left) / u128::from(all))
                    .unwrap_or(entry.bytes),
            };
            entry.objects = left;
            if left == 0 {
                entry.oldest_age_ms = 0;
            }
        }
        if status.collections.iter().all(|entry| entry.objects == 0) {
            self.ingest_status.remove(&file);
            self.store_ingest_status(file, None)
        } else {
            let status = status.clone();
            self.store_ingest_status(file, Some(&status))
        }
    }

    /// Reports ingested objects per changeset and collection (the driver sees the events after
    /// the commit that makes them durable). `shares` gives, per server version, the bytes of the
    /// uploaded body the ingested objects took and how many objects there were.
    fn report_ingest(&mut self, records: &[IngestRecord], shares: &[(u64, u64, u64)]) {
        let mut batches: BTreeMap<(u64, &str), (u64, u64)> = BTreeMap::new();
        for r in records {
            let batch = batches
                .entry((r.server_version, r.object.collection.as_str()))
                .or_insert((r.origin_timestamp, 0));
            batch.1 += 1;
        }
        for ((server_version, collection), (origin_timestamp, objects)) in batches {
            let bytes = shares
                .iter()
                .find(|(sv, _, _)| *sv == server_version)
                .map_or(0, |(_, share, all)| share * objects / (*all).max(1));
            self.events.push_back(ServerEvent::Ingested {
                server_version,
                origin_file_ident: records.first().map_or(0, |r| r.origin_file_ident),
                origin_timestamp,
                collection: collection.to_owned(),
                objects,
                bytes,
            });
        }
    }

    /// Appends integrated entries (already applied to the store), each with its instructions, to
    /// the history.
    fn append(
        &mut self,
        entries: Vec<(HistoryEntry, Vec<Instruction>)>,
        decisions: Vec<Vec<IntegrationDecision>>,
    ) -> Result<(), SessionFailure> {
        let (stored, instructions): (Vec<HistoryEntry>, Vec<Vec<Instruction>>) =
            entries.into_iter().unzip();
        self.storage
            .append_history(&stored)
            .map_err(|e| fail(ErrorCode::OtherSessionError, e.to_string()))?;
        self.needs_flush = true;
        self.state_cache = None;
        let mut decisions = decisions.into_iter();
        for (entry, instructions) in stored.into_iter().zip(instructions) {
            self.touches.record(&instructions, entry.server_version);
            self.backlinks.record(&self.store, &instructions);
            if let Some(file) = self.files.get_mut(&entry.origin_file_ident) {
                file.integrations
                    .push((entry.server_version, entry.client_version));
            }
            let instructions_for_event = if self.config.record_merge_decisions {
                instructions.clone()
            } else {
                Vec::new()
            };
            self.events.push_back(ServerEvent::Integrated {
                server_version: entry.server_version,
                origin_file_ident: entry.origin_file_ident,
                client_version: entry.client_version,
                instructions: instructions_for_event,
                decisions: decisions.next().unwrap_or_default(),
            });
            self.history.push(entry, instructions);
        }
        for (connection, conn) in &mut self.connections {
            for (ident, session) in conn.sessions.iter_mut() {
                if matches!(session.phase, Phase::Identified { .. }) {
                    session.needs_download = true;
                    self.dirty.insert((*connection, *ident));
                }
            }
        }
        Ok(())
    }

    fn check_schema_changes(&self, instructions: &[Instruction]) -> Result<(), SessionFailure> {
        if self.config.development_mode {
            return Ok(());
        }
        for instruction in instructions {
            let unchanged = match instruction {
                Instruction::AddCollection {
                    name,
                    kind,
                    primary_key,
                } => self
                    .store
                    .schema()
                    .collection(name)
                    .is_some_and(|c| c.kind == *kind && c.primary_key == *primary_key),
                Instruction::AddProperty {
                    collection,
                    property,
                } => self
                    .store
                    .schema()
                    .collection(collection)
                    .and_then(|c| c.properties.get(&property.name))
                    .is_some_and(|p| p == property),
                _ => true,
            };
            if !unchanged {
                return Err(fail(
                    ErrorCode::InvalidSchemaChange,
                    format!("schema changes from clients need development mode: {instruction:?}"),
                ));
            }
        }
        Ok(())
    }

    fn on_transact(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        changeset: UploadChangeset,
    ) -> Result<(), SessionFailure> {
        let session = self.session_mut(connection, ident)?;
        let Phase::Identified {
            file: file_ident, ..
        } = session.phase
        else {
            return Err(fail(ErrorCode::BadMessageOrder, "TRANSACT before IDENT"));
        };
        let file = self
            .files
            .get(&file_ident)
            .ok_or_else(|| fail(ErrorCode::BadClientFile, "client file vanished"))?;
        let (own_sv, own_cv) = file.last_integration();
        if changeset.client_version <= own_cv {
            return Err(fail(
                ErrorCode::BadClientVersion,
                "TRANSACT with a client version already integrated",
            ));
        }
        if changeset.last_integrated_server_version < own_sv {
            return Err(fail(
                ErrorCode::TransactBeforeUpload,
                "TRANSACT based before this file's last integrated upload",
            ));
        }
        let base = changeset.last_integrated_server_version;
        if base > self.latest_version() {
            return Err(fail(
                ErrorCode::BadServerVersion,
                "TRANSACT base is ahead of the server",
            ));
        }
        let instructions = decode_changeset(&changeset.body, &self.config.changeset_limits)
            .map_err(|e| fail(ErrorCode::BadChangeset, e.to_string()))?;
        self.check_schema_changes(&instructions)?;
        let user_id = self.session_mut(connection, ident)?.user.id.clone();
        let objects: BTreeSet<(&str, &crate::value::PrimaryKey)> = instructions
            .iter()
            .filter_map(Instruction::object)
            .collect();
        let schema_change = instructions.iter().any(|i| i.object().is_none());
        // Accepted only if nothing integrated since the transaction's base touched the same
        // objects; a schema change conflicts with everything and everything with it.
        let mut conflict = None;
        self.history
            .walk(&mut self.storage, base + 1, u64::MAX, |_, c| {
                let touches_ours = c.instructions.iter().any(|i| match i.object() {
                    Some(object) => schema_change || objects.contains(&object),
                    None => true,
                });
                if touches_ours {
                    conflict = Some(c.meta.version);
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })
            .map_err(|e| fail(ErrorCode::OtherSessionError, e.to_string()))?;
        let refused = self.refused_objects(file_ident, &user_id, base, &instructions);
        let result = if let Some(((collection, key), why)) = refused.first() {
            TransactResult::Rejected {
                code: ErrorCode::WriteNotAllowed,
                reason: format!(
                    "the transaction writes {collection} {key:?}: {why}; nothing was integrated"
                ),
            }
        } else if let Some(version) = conflict {
            TransactResult::Rejected {
                code: ErrorCode::TransactConflict,
                reason: format!(
                    "server version {version} changed the same objects concurrently; nothing was integrated"
                ),
            }
        } else {
            let mut changes = Changes::default();
            match self.store.apply(&instructions, &mut changes) {
                Err(e) => TransactResult::Rejected {
                    code: match e {
                        ApplyError::Asymmetric { .. } => ErrorCode::AsymmetricWriteRefused,
                        _ => ErrorCode::BadChangeset,
                    },
                    reason: e.to_string(),
                },
                Ok(()) => {
                    let server_version = self.latest_version() + 1;
                    let entry = HistoryEntry {
                        server_version,
                        origin_file_ident: file_ident,
                        client_version: changeset.client_version,
                        origin_timestamp: changeset.origin_timestamp,
                        original_size: changeset.body.len() as u64,
                        body: changeset.body,
                    };
                    let fresh = view::touched(self.store.schema(), &instructions);
                    self.hold(file_ident, fresh);
                    self.append(vec![(entry, instructions)], Vec::new())?;
                    TransactResult::Accepted { server_version }
                }
            }
        };
        self.outbox.push_back((
            connection,
            ServerMessage::Transact {
                session: ident,
                client_version: changeset.client_version,
                result,
            },
        ));
        Ok(())
    }

    fn on_state_request(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        server_version: u64,
        salt: u64,
        offset: u64,
    ) -> Result<(), SessionFailure> {
        let latest = self.latest_version();
        if server_version != 0
            && (server_version > latest || salt != self.version_salt(server_version))
        {
            return Err(fail(
                ErrorCode::BadServerVersion,
                "STATE_REQUEST for a version this server does not have",
            ));
        }
        // With read rules a STATE carries only the schema; the objects the user may read arrive
        // as resets once the file is identified (its view starts empty, see `on_ident`).
        let restricted = !self.config.roles.reads_everything();
        let cached = self.state_cache.as_ref().is_some_and(|(v, _)| *v == latest);
        if !cached {
            let snapshot = if restricted {
                snapshot_instructions(&Store::new(self.store.schema().clone()))
            } else {
                snapshot_instructions(&self.store)
            };
            self.state_cache = Some((latest, encode_changeset(&snapshot)));
        }
        let Some((version, bytes)) = self.state_cache.as_ref() else {
            return Ok(());
        };
        if server_version != 0 && server_version != *version {
            // The state moved on while the client was fetching it: start over at the new version.
            return Err(fail(
                ErrorCode::OtherSessionError,
                "the server state changed during the transfer; request it again",
            ));
        }
        let begin = usize::try_from(offset)
            .ok()
            .filter(|o| *o <= bytes.len())
            .ok_or_else(|| {
                fail(
                    ErrorCode::BadProgress,
                    format!("STATE offset {offset} is past the end ({})", bytes.len()),
                )
            })?;
        let end = (begin + self.config.state_segment_bytes).min(bytes.len());
        let segment = bytes
            .get(begin..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let msg = ServerMessage::State {
            session: ident,
            server_version: *version,
            server_version_salt: self.version_salt(*version),
            begin_offset: offset,
            total_size: bytes.len() as u64,
            segment,
        };
        self.outbox.push_back((connection, msg));
        Ok(())
    }

    /// Time passed: close idle connections and end sessions whose token expired.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
        let idle: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, c)| now_ms.saturating_sub(c.last_seen_ms) > self.config.idle_timeout_ms)
            .map(|(id, _)| *id)
            .collect();
        for connection in idle {
            self.connection_error(
                connection,
                ErrorCode::ConnectionClosed,
                "no message for longer than the idle timeout",
            );
        }
        let expired: Vec<(ConnectionId, SessionIdent)> = self
            .connections
            .iter()
            .flat_map(|(id, c)| {
                c.sessions
                    .iter()
                    .filter(|(_, s)| !s.failed && s.user.expires_at_ms <= now_ms)
                    .map(move |(sid, _)| (*id, *sid))
            })
            .collect();
        for (connection, ident) in expired {
            self.session_error(
                connection,
                ident,
                fail(
                    ErrorCode::TokenExpired,
                    "the access token expired; refresh it and bind again",
                ),
            );
        }
    }

    /// When [`ServerEngine::handle_timeout`] next needs calling.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.connections
            .values()
            .flat_map(|c| {
                std::iter::once(
                    c.last_seen_ms
                        .saturating_add(self.config.idle_timeout_ms + 1),
                )
                .chain(
                    c.sessions
                        .values()
                        .filter(|s| !s.failed)
                        .map(|s| s.user.expires_at_ms),
                )
            })
            .min()
    }

    /// The next message to send. Flushes storage first when anything changed since the last
    /// flush, so nothing is acknowledged before it is durable.
    pub fn poll_transmit(&mut self) -> Result<Option<(ConnectionId, ServerMessage)>, EngineError> {
        if self.outbox.is_empty() {
            // DOWNLOADs that changed views are built together, so that their views become
            // durable in one flush rather than one per receiver. A first DOWNLOAD that changed
            // none waits for no flush but the one already due (for the changesets it carries),
            // so it goes out as soon as that is done, before any other receiver's DOWNLOAD is
            // built: each is then built as it goes out.
            for built in 0..DOWNLOADS_PER_FLUSH {
                let views = self.dirty_views.len();
                if !self.build_next_download() || (built == 0 && self.dirty_views.len() == views) {
                    break;
                }
            }
        }
        // After building: a DOWNLOAD that changed a view goes out only once the view is durable.
        let files = std::mem::take(&mut self.dirty_views);
        if let Err(e) = self.store_views(&files) {
            // What was buffered is lost with the failed transaction: each of these views is
            // stored whole next time.
            for file in files {
                if let Some(view) = self.views.get_mut(&file) {
                    view.store_failed();
                }
                self.dirty_views.insert(file);
            }
            return Err(e);
        }
        for file in &files {
            if let Some(view) = self.views.get_mut(file) {
                view.saved();
            }
        }
        Ok(self.outbox.pop_front())
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When client version `client_version` of a file was integrated into the history: the
    /// timestamp its changeset was made at (`None` when it is not in the history).
    fn integrated_timestamp(&self, file_ident: u64, client_version: u64) -> Option<u64> {
        let integrations = &self.files.get(&file_ident)?.integrations;
        let at = integrations
            .binary_search_by_key(&client_version, |(_, cv)| *cv)
            .ok()?;
        let (server_version, _) = *integrations.get(at)?;
        let entry = self.history.meta(server_version)?;
        (entry.client_version == client_version && entry.origin_file_ident == file_ident)
            .then_some(entry.origin_timestamp)
    }

    /// Stores what changed in the views of `files`, then flushes everything buffered.
    fn store_views(&mut self, files: &BTreeSet<u64>) -> Result<(), EngineError> {
        for file in files {
            if let Some(delta) = self.views.get(file).and_then(FileView::delta) {
                self.storage.save_view(*file, &delta)?;
            }
        }
        if self.needs_flush {
            self.storage.flush()?;
            self.needs_flush = false;
        }
        Ok(())
    }

    /// The collections of the last UPLOAD handled (each once, in the order they first appear),
    /// when every one of its changesets held ingested objects only and was split straight from
    /// its body: then the engine has read every instruction, and a driver labelling the frame
    /// (the dev console's feed) need not inflate and read the bodies again. `None` for any
    /// other UPLOAD, and once taken.
    pub fn take_upload_collections(&mut self) -> Option<Vec<String>> {
        self.upload_collections.take()
    }

    /// Builds the next owed DOWNLOAD; false when none is owed.
    fn build_next_download(&mut self) -> bool {
        // Sessions that need a DOWNLOAD queue up in `dirty`; entries of sessions that ended or
        // were served meanwhile are skipped.
        let target = std::iter::from_fn(|| self.dirty.pop_first()).find(|(c, s)| {
            self.connections
                .get(c)
                .and_then(|conn| conn.sessions.get(s))
                .is_some_and(|session| session.needs_download)
        });
        let Some((connection, ident)) = target else {
            return false;
        };
        let mut latest = self.latest_version();
        let Some(session) = self
            .connections
            .get_mut(&connection)
            .and_then(|c| c.sessions.get_mut(&ident))
        else {
            return true;
        };
        session.needs_download = false;
        let Phase::Identified {
            file: file_ident,
            cursor,
        } = session.phase
        else {
            return true;
        };
        let recheck_from = session
            .view
            .recheck_from
            .take()
            .unwrap_or(cursor.server_version);
        let Some(file) = self.files.get(&file_ident) else {
            return true;
        };
        let everything = FileView::default();
        let file_view = self.views.get(&file_ident).unwrap_or(&everything);
        let schema = self.store.schema();
        let mut changesets = Vec::new();
        let mut bytes = 0;
        let mut version = cursor.server_version;
        let max_bytes = self.config.max_download_bytes;
        let walked = self
            .history
            .walk(&mut self.storage, version + 1, latest, |entry, decoded| {
                if !changesets.is_empty()
                    && (bytes >= max_bytes || bytes + entry.body.len() > max_bytes)
                {
                    return ControlFlow::Break(());
                }
                version = entry.server_version;
                if entry.origin_file_ident == file_ident || decoded.instructions.is_empty() {
                    return ControlFlow::Continue(());
                }
                // Changes to objects outside the file's view are left out.
                let body = match view::filter_instructions(file_view, schema, &decoded.instructions)
                {
                    None => entry.body.clone(),
                    Some(kept) if kept.is_empty() => return ControlFlow::Continue(()),
                    Some(kept) => encode_changeset(&kept),
                };
                bytes += body.len();
                changesets.push(DownloadChangeset {
                    server_version: entry.server_version,
                    last_integrated_client_version: file.client_version_at(entry.server_version),
                    origin_timestamp: entry.origin_timestamp,
                    origin_file_ident: entry.origin_file_ident,
                    original_size: entry.original_size,
                    body,
                });
                ControlFlow::Continue(())
            });
        if let Err(e) = walked {
            let failure = fail(ErrorCode::OtherSessionError, e.to_string());
            self.session_error(connection, ident, failure);
            return true;
        }
        let mut update = ViewUpdate::default();
        if version == latest {
            update.leaving = self.recheck_view(connection, ident, file_ident, recheck_from);
            if self
                .views
                .get(&file_ident)
                .is_some_and(FileView::owes_resets)
                && self.reset_version_after(cursor.server_version).is_ok()
            {
                latest = self.latest_version();
                version = latest;
                self.emit_resets(connection, ident, file_ident, latest, &mut update);
            }
        }
        let latest_salt = self.version_salt(latest);
        let (Some(file), Some(session)) = (
            self.files.get(&file_ident),
            self.connections
                .get_mut(&connection)
                .and_then(|c| c.sessions.get_mut(&ident)),
        ) else {
            return true;
        };
        let (upload_sv, upload_cv) = file.last_integration();
        let upload_made = self.history.made_at(upload_sv);
        let new_cursor = DownloadCursor {
            server_version: version,
            last_integrated_client_version: file.client_version_at(version),
        };
        let downloadable_bytes = self
            .history
            .bytes_through(latest)
            .saturating_sub(self.history.bytes_through(version));
        session.phase = Phase::Identified {
            file: file_ident,
            cursor: new_cursor,
        };
        if version == latest && !update.more_to_come {
            session.view.complete_version = session.subscriptions.version;
        }
        update
            .refused
            .extend(std::mem::take(&mut session.view.refused));
        if version < latest {
            // The objects this part brought changes to are checked once the session catches up.
            session.view.recheck_from = Some(recheck_from);
        }
        // This DOWNLOAD reaches `latest`, so a reset version it appended needs no other.
        session.needs_download = version < latest || update.more_to_come;
        if session.needs_download {
            self.dirty.insert((connection, ident));
        }
        let progress = SyncProgress {
            download: new_cursor,
            upload: UploadCursor {
                client_version: upload_cv,
                last_integrated_server_version: upload_sv,
                origin_timestamp: upload_made,
            },
            latest_server_version: latest,
            latest_server_version_salt: latest_salt,
        };
        let batch_state = if update.more_to_come {
            session.view.in_batch = true;
            BatchState::MoreToCome
        } else if std::mem::take(&mut session.view.in_batch) {
            BatchState::LastInBatch
        } else {
            BatchState::SteadyState
        };
        let msg = ServerMessage::Download {
            session: ident,
            progress,
            downloadable_bytes,
            batch_state,
            query_version: session.view.complete_version,
            changesets,
            resets: update.resets,
            leaving: update.leaving,
        };
        self.outbox.push_back((connection, msg));
        let (reached, waiting): (Vec<_>, Vec<_>) = session
            .marks
            .drain(..)
            .partition(|(_, target)| *target <= version && !update.more_to_come);
        session.marks = waiting;
        for (request, _) in reached {
            self.outbox.push_back((
                connection,
                ServerMessage::Mark {
                    session: ident,
                    request,
                },
            ));
        }
        if !update.refused.is_empty() {
            self.send_compensating_write(connection, ident, latest, update.refused);
        }
        true
    }

    /// Makes the latest version one that a file whose download cursor is `cursor` can take
    /// resets at: the latest already is when it is a reset version (the only entries from file
    /// 0) past the cursor, made for another file's resets, typically those of the same
    /// changeset entering many views. Sharing it, the file still has seen nothing of that
    /// version when its resets arrive, so its uploads based before it are still the ones made
    /// before it saw them. One version per file instead would cost every other session one
    /// more DOWNLOAD per file: a changeset entering N views would take N² messages.
    fn reset_version_after(&mut self, cursor: u64) -> Result<(), SessionFailure> {
        let latest = self.latest_version();
        if latest > cursor
            && self
                .history
                .meta(latest)
                .is_some_and(|entry| entry.origin_file_ident == 0)
        {
            return Ok(());
        }
        self.append_reset_version()
    }

    /// Resets get a server version of their own: an empty changeset from the server. A client
    /// upload based before it was made before the client saw the resets (and is refused where it
    /// touches them); one based on it or later was made after. It carries the time it was made:
    /// its salt derives from its content, and two empty entries at the same version, one lost with
    /// a restore from backup and one made after it, must not share a salt.
    fn append_reset_version(&mut self) -> Result<(), SessionFailure> {
        let entry = HistoryEntry {
            server_version: self.latest_version() + 1,
            origin_file_ident: 0,
            client_version: 0,
            origin_timestamp: self.clock_ms,
            original_size: 0,
            body: encode_changeset(&[]),
        };
        self.append(vec![(entry, Vec::new())], Vec::new())
    }

    /// At a DOWNLOAD that brings a session to the latest version: checks which objects entered
    /// its view (owing the file a reset) and left it (returned as the `leaving` list) since
    /// `from_version`, or among every object after IDENT and QUERY.
    fn recheck_view(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        file_ident: u64,
        from_version: u64,
    ) -> Vec<u8> {
        let Some(session) = self
            .connections
            .get_mut(&connection)
            .and_then(|c| c.sessions.get_mut(&ident))
        else {
            return Vec::new();
        };
        let sv = &mut session.view;
        let Some(fv) = self.views.get_mut(&file_ident) else {
            return Vec::new();
        };
        let store = &self.store;
        let touches = &self.touches;
        let mut changed = false;
        if fv.holds_everything() && !sv.matcher.selects_everything(store.schema()) {
            // A file that held everything narrows: it holds exactly what exists now (and, should
            // this DOWNLOAD be lost, what it did not see erased; see `resend_lost_resets`).
            fv.narrow(view::all_objects(store), self.history.len());
            sv.recheck_all = true;
            changed = true;
        }
        let mut leaving = Vec::new();
        if let Some(held) = fv.held() {
            let candidates: BTreeSet<ObjectKey> = if sv.recheck_all {
                let mut all = view::all_objects(store);
                all.extend(held.iter().cloned());
                all
            } else {
                let mut touched = BTreeSet::new();
                let walked =
                    self.history
                        .walk(&mut self.storage, from_version + 1, u64::MAX, |_, c| {
                            touched.extend(view::touched(store.schema(), &c.instructions));
                            ControlFlow::Continue(())
                        });
                if walked.is_err() {
                    // Without the history since `from_version`, every object is checked: a
                    // recheck of more objects than changed gives the same view.
                    touched = view::all_objects(store);
                    touched.extend(held.iter().cloned());
                }
                let dependencies = sv.matcher.link_dependencies(store.schema());
                view::add_linking_objects(&self.backlinks, &dependencies, &mut touched);
                touched
            };
            sv.recheck_all = false;
            for object in candidates {
                let (collection, key) = (&object.0, &object.1);
                let wanted = sv.matcher.selects(store, collection, key);
                let holds = fv.holds(collection, key);
                if wanted {
                    sv.hinted.remove(&object);
                    if !holds && fv.owe_reset(object) {
                        changed = true;
                    }
                } else if holds {
                    if store.get(collection, key).is_none() {
                        // An erased object stays held: its erase reaches the client as an
                        // instruction, and so does a re-creation, which is hinted again. It is
                        // forgotten once the file confirms the erase.
                        sv.hinted.remove(&object);
                        fv.note_erased(object.clone(), touches.last(&object));
                    } else if sv.hinted.insert(object.clone()) {
                        leaving.push(object);
                    }
                }
            }
        }
        if changed {
            self.dirty_views.insert(file_ident);
            self.needs_flush = true;
        }
        view::encode_object_keys(&leaving)
    }

    /// Takes the resets owed to a file, within the DOWNLOAD size limit, positioned at `version`.
    fn emit_resets(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        file_ident: u64,
        version: u64,
        update: &mut ViewUpdate,
    ) {
        let Some(session) = self
            .connections
            .get_mut(&connection)
            .and_then(|c| c.sessions.get_mut(&ident))
        else {
            return;
        };
        let sv = &mut session.view;
        let Some(fv) = self.views.get_mut(&file_ident) else {
            return;
        };
        let store = &self.store;
        let mut resets = Vec::new();
        let mut bytes = 0;
        while let Some(object) = fv.take_reset() {
            if bytes >= self.config.max_reset_bytes {
                fv.owe_reset(object);
                update.more_to_come = true;
                break;
            }
            let (collection, key) = (&object.0, &object.1);
            let present = sv.matcher.selects(store, collection, key);
            let instructions = view::reset_instructions(store, collection, key, present);
            bytes += encode_changeset(&instructions).len();
            resets.extend(instructions);
            if !present {
                sv.hinted.remove(&object);
            }
            fv.record_reset(object, version, present);
        }
        if !resets.is_empty() {
            update.resets = encode_changeset(&resets);
        }
        self.dirty_views.insert(file_ident);
        self.needs_flush = true;
    }

    /// Refuses the writes of an upload (based on `base`) to objects the file may not write
    /// (outside its view, or not allowed by the user's role), so they are not integrated, and
    /// owes the file a reset of each. Returns the objects the file now holds because it created
    /// them.
    fn admit_writes(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        file_ident: u64,
        base: u64,
        changesets: &mut [Changeset],
    ) -> BTreeSet<ObjectKey> {
        let Ok(session) = self.session_mut(connection, ident) else {
            return BTreeSet::new();
        };
        let user = view::user_context(&session.user.id);
        let roles = &self.config.roles;
        let checks_writes = roles.collections.values().any(|r| !r.write.is_true());
        let unnarrowed = self
            .views
            .get(&file_ident)
            .is_none_or(FileView::is_unnarrowed);
        if unnarrowed && !checks_writes {
            return BTreeSet::new();
        }
        let fv = self
            .views
            .entry(file_ident)
            .or_insert_with(FileView::everything);
        let store = &self.store;
        let mut per_object: BTreeMap<ObjectKey, Vec<Instruction>> = BTreeMap::new();
        for instruction in changesets.iter().flat_map(|c| &c.instructions) {
            if let Some((collection, key)) = instruction.object() {
                if view::viewable(store.schema(), collection) {
                    per_object
                        .entry((collection.to_owned(), key.clone()))
                        .or_default()
                        .push(instruction.clone());
                }
            }
        }
        let mut fresh = BTreeSet::new();
        let mut refused = Vec::new();
        for (object, instructions) in &per_object {
            let (collection, key) = (object.0.as_str(), &object.1);
            if !fv.accepts(store, &self.touches, base, collection, key) {
                refused.push((object.clone(), REFUSED_OUTSIDE_VIEW.to_owned()));
            } else if !roles.may_write(store, &user, (collection, key), instructions) {
                refused.push((object.clone(), REFUSED_BY_ROLE.to_owned()));
            } else if !fv.holds(collection, key) {
                fresh.insert(object.clone());
            }
        }
        if refused.is_empty() {
            return fresh;
        }
        let refused_keys: BTreeSet<&ObjectKey> = refused.iter().map(|(o, _)| o).collect();
        for changeset in changesets.iter_mut() {
            changeset.instructions.retain(|i| {
                i.object()
                    .is_none_or(|(c, k)| !refused_keys.contains(&(c.to_owned(), k.clone())))
            });
        }
        for (object, _) in &refused {
            fv.owe_reset(object.clone());
        }
        self.dirty_views.insert(file_ident);
        self.needs_flush = true;
        if let Ok(session) = self.session_mut(connection, ident) {
            session.view.refused.extend(refused);
        }
        fresh
    }

    /// The objects of a TRANSACT (based on `base`) the file may not write, with why.
    fn refused_objects(
        &self,
        file_ident: u64,
        user_id: &str,
        base: u64,
        instructions: &[Instruction],
    ) -> Vec<(ObjectKey, &'static str)> {
        let schema = self.store.schema();
        let user = view::user_context(user_id);
        let mut per_object: BTreeMap<ObjectKey, Vec<Instruction>> = BTreeMap::new();
        for instruction in instructions {
            if let Some((c, k)) = instruction.object() {
                if view::viewable(schema, c) {
                    per_object
                        .entry((c.to_owned(), k.clone()))
                        .or_default()
                        .push(instruction.clone());
                }
            }
        }
        per_object
            .into_iter()
            .filter_map(|(object, instructions)| {
                let (c, k) = (object.0.as_str(), &object.1);
                let outside = self
                    .views
                    .get(&file_ident)
                    .is_some_and(|fv| !fv.accepts(&self.store, &self.touches, base, c, k));
                if outside {
                    Some((object, REFUSED_OUTSIDE_VIEW))
                } else if !self
                    .config
                    .roles
                    .may_write(&self.store, &user, (c, k), &instructions)
                {
                    Some((object, REFUSED_BY_ROLE))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Records that a file holds objects it created.
    fn hold(&mut self, file_ident: u64, objects: BTreeSet<ObjectKey>) {
        let schema = self.store.schema();
        let Some(fv) = self.views.get_mut(&file_ident) else {
            return;
        };
        let viewable = objects
            .into_iter()
            .filter(|(c, _)| view::viewable(schema, c));
        if fv.hold(viewable) {
            self.dirty_views.insert(file_ident);
            self.needs_flush = true;
        }
    }

    /// The file confirmed server `version` (an IDENT's download cursor, an upload's base): its
    /// view forgets what no later write of the file can need (see [`FileView::confirm`]).
    fn confirm(&mut self, file_ident: u64, version: u64) {
        let Some(fv) = self.views.get_mut(&file_ident) else {
            return;
        };
        if fv.confirm(version, &self.store, &self.touches) {
            self.dirty_views.insert(file_ident);
            self.needs_flush = true;
        }
    }

    /// A reset goes out in the DOWNLOAD that reaches its version; a client whose download cursor
    /// is not past that version may have lost it with its connection, so it is owed again.
    fn resend_lost_resets(&mut self, file_ident: u64, cursor: u64) -> Result<(), SessionFailure> {
        let Some(fv) = self.views.get_mut(&file_ident) else {
            return Ok(());
        };
        let narrowed_at = fv.narrowed_at();
        if cursor < narrowed_at {
            // The DOWNLOAD that narrowed the view was lost: the client may still hold objects
            // erased since its cursor, which must keep receiving instructions.
            let schema = self.store.schema();
            let mut touched = Vec::new();
            self.history
                .walk(&mut self.storage, cursor + 1, narrowed_at, |_, c| {
                    touched.push(view::touched(schema, &c.instructions));
                    ControlFlow::Continue(())
                })
                .map_err(|e| fail(ErrorCode::OtherSessionError, e.to_string()))?;
            for objects in touched {
                fv.hold(objects);
            }
            fv.set_narrowed_at(cursor);
            self.dirty_views.insert(file_ident);
            self.needs_flush = true;
        }
        let lost = fv.reset_since(cursor);
        if !lost.is_empty() {
            for object in lost {
                fv.owe_reset(object);
            }
            self.dirty_views.insert(file_ident);
            self.needs_flush = true;
        }
        Ok(())
    }

    /// Stores a new file's view.
    fn save_view(&mut self, file_ident: u64, view: FileView) {
        self.views.insert(file_ident, view);
        self.dirty_views.insert(file_ident);
        self.needs_flush = true;
    }

    /// RELEASE: the client gives up objects that left its view; a reset confirms each.
    fn on_release(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        objects: &[u8],
    ) -> Result<(), SessionFailure> {
        let instructions = decode_changeset(objects, &self.config.changeset_limits)
            .map_err(|e| fail(ErrorCode::BadChangeset, format!("RELEASE: {e}")))?;
        let session = self.session_mut(connection, ident)?;
        let Phase::Identified { file, .. } = session.phase else {
            return Err(fail(ErrorCode::BadMessageOrder, "RELEASE before IDENT"));
        };
        let keys = view::object_keys(&instructions);
        for key in &keys {
            session.view.hinted.remove(key);
        }
        session.needs_download = true;
        self.dirty.insert((connection, ident));
        let Some(fv) = self.views.get_mut(&file) else {
            return Ok(());
        };
        for key in keys {
            fv.release(key);
        }
        self.dirty_views.insert(file);
        self.needs_flush = true;
        Ok(())
    }

    /// Records a client's report of its Data Ingest queue after checking it against the schema.
    fn on_ingest_status(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        now_ms: u64,
        collections: Vec<IngestStatusEntry>,
    ) -> Result<(), SessionFailure> {
        let session = self.session_mut(connection, ident)?;
        let Phase::Identified { file, .. } = session.phase else {
            return Err(fail(
                ErrorCode::BadMessageOrder,
                "INGEST_STATUS before IDENT",
            ));
        };
        let user = session.user.id.clone();
        check_ingest_status(
            self.store.schema(),
            &collections,
            self.config.development_mode,
        )
        .map_err(|why| fail(ErrorCode::BadChangeset, format!("bad ingest status: {why}")))?;
        // Most devices report an empty queue after each IDENT; keeping (and storing) only queues
        // that hold something keeps idle sessions small and writes nothing for them.
        if collections.iter().all(|entry| entry.objects == 0) {
            if self.ingest_status.remove(&file).is_some() {
                self.store_ingest_status(file, None)?;
            }
        } else {
            let status = StoredIngestStatus {
                reported_ms: now_ms,
                collections: collections.clone(),
            };
            self.store_ingest_status(file, Some(&status))?;
            self.ingest_status.insert(file, status);
        }
        self.events.push_back(ServerEvent::IngestStatus {
            connection,
            session: ident,
            client_file_ident: file,
            user,
            collections,
        });
        Ok(())
    }

    fn store_ingest_status(
        &mut self,
        file: u64,
        status: Option<&StoredIngestStatus>,
    ) -> Result<(), SessionFailure> {
        self.storage
            .save_ingest_status(file, status)
            .map_err(|e| fail(ErrorCode::OtherSessionError, e.to_string()))?;
        self.needs_flush = true;
        Ok(())
    }

    /// Forgets a reset file's Data Ingest queue report (its device's queue moves to the new file).
    fn drop_ingest_status(&mut self, file: u64) -> Result<(), SessionFailure> {
        self.forget_ingest_status(file)
            .map(drop)
            .map_err(|e| fail(ErrorCode::OtherSessionError, e.to_string()))
    }

    /// Forgets the Data Ingest queue report of `client_file_ident`, for a device that will not
    /// come back (an uninstalled app keeps its last report otherwise, as the server cannot tell
    /// it from one that is offline); returns whether there was one. The removal is stored with
    /// the next flush, and a device that does come back reports its queue again.
    pub fn forget_ingest_status(&mut self, client_file_ident: u64) -> Result<bool, EngineError> {
        if self.ingest_status.remove(&client_file_ident).is_none() {
            return Ok(false);
        }
        self.storage.save_ingest_status(client_file_ident, None)?;
        self.needs_flush = true;
        self.events
            .push_back(ServerEvent::IngestStatusDropped { client_file_ident });
        Ok(true)
    }

    /// The latest Data Ingest queue `client_file_ident` reported, if it reported one that held
    /// anything (restored from storage at start).
    pub fn ingest_status(&self, client_file_ident: u64) -> Option<&[IngestStatusEntry]> {
        self.ingest_status
            .get(&client_file_ident)
            .map(|status| status.collections.as_slice())
    }

    /// When the engine received the stored report of `client_file_ident` (its clock, as passed
    /// in), if it keeps one.
    pub fn ingest_status_reported_ms(&self, client_file_ident: u64) -> Option<u64> {
        self.ingest_status
            .get(&client_file_ident)
            .map(|status| status.reported_ms)
    }

    /// Every client file's latest Data Ingest queue report that held anything, with when it
    /// arrived: what a driver shows for devices that have not reconnected since a restart.
    pub fn ingest_statuses(&self) -> impl Iterator<Item = (u64, &StoredIngestStatus)> {
        self.ingest_status
            .iter()
            .map(|(file, status)| (*file, status))
    }

    /// Tells a client which of its writes were refused; the resets that undo them went out in the
    /// DOWNLOAD that reached `server_version`.
    fn send_compensating_write(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        server_version: u64,
        refused: Vec<(ObjectKey, String)>,
    ) {
        let rejected: Vec<RejectedWrite> = refused
            .into_iter()
            .map(|((collection, key), reason)| RejectedWrite {
                key: Value::from(key).to_ejson(EjsonMode::Canonical).to_string(),
                collection,
                reason,
            })
            .collect();
        let message = format!(
            "{} write(s) were refused and undone locally by server version {server_version}",
            rejected.len()
        );
        self.events.push_back(ServerEvent::ErrorSent {
            connection,
            session: ident,
            code: ErrorCode::CompensatingWrite,
            message: message.clone(),
        });
        self.outbox.push_back((
            connection,
            ServerMessage::Error {
                session: ident,
                code: ErrorCode::CompensatingWrite,
                message,
                compensating: Some(CompensatingWrite {
                    server_version,
                    rejected,
                }),
            },
        ));
    }

    /// The salt of a server version: derived from the history's salt and the entry itself, so a
    /// history rewritten after a restore from backup gives different salts for the same versions,
    /// and a client that saw the old ones is told to reset.
    fn version_salt(&self, version: u64) -> u64 {
        let Some(entry) = self.history.meta(version) else {
            return self.history_salt;
        };
        let mut h = SplitMix64(self.history_salt ^ version.rotate_left(17));
        let mut salt = h.next_u64();
        for word in [
            entry.origin_file_ident,
            entry.client_version,
            entry.origin_timestamp,
            self.history.body_len(version),
        ] {
            h.0 ^= word;
            salt ^= h.next_u64();
        }
        (salt >> 1).max(1)
    }

    fn session_mut(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
    ) -> Result<&mut Session, SessionFailure> {
        self.connections
            .get_mut(&connection)
            .and_then(|c| c.sessions.get_mut(&ident))
            .ok_or_else(|| {
                fail(
                    ErrorCode::BadSessionIdent,
                    format!("session {ident} is not bound"),
                )
            })
    }

    fn remove_session(&mut self, connection: ConnectionId, ident: SessionIdent) -> Option<Session> {
        self.connections
            .get_mut(&connection)
            .and_then(|c| c.sessions.remove(&ident))
    }

    fn release_file(&mut self, connection: ConnectionId, ident: SessionIdent, session: &Session) {
        let file = match session.phase {
            Phase::Identified { file, .. } | Phase::Bound { file: Some(file) } => file,
            Phase::Bound { file: None } => return,
        };
        if let Some(f) = self.files.get_mut(&file) {
            if f.bound == Some((connection, ident)) {
                f.bound = None;
            }
        }
    }

    fn send_error(
        &mut self,
        connection: ConnectionId,
        session: SessionIdent,
        code: ErrorCode,
        message: String,
    ) {
        self.events.push_back(ServerEvent::ErrorSent {
            connection,
            session,
            code,
            message: message.clone(),
        });
        self.outbox.push_back((
            connection,
            ServerMessage::Error {
                session,
                code,
                message,
                compensating: None,
            },
        ));
    }

    /// Ends a session after an error: the ERROR goes out, and the session stays as a failed
    /// placeholder that ignores everything until the client's UNBIND (answered with UNBOUND).
    fn session_error(
        &mut self,
        connection: ConnectionId,
        ident: SessionIdent,
        failure: SessionFailure,
    ) {
        if failure.code.is_connection_level() {
            return self.connection_error(connection, failure.code, failure.message);
        }
        if failure.code.action() != crate::protocol::ErrorAction::Warning {
            let placeholder = Session {
                failed: true,
                user: AuthenticatedUser {
                    id: String::new(),
                    expires_at_ms: u64::MAX,
                },
                phase: Phase::Bound { file: None },
                subscriptions: SubscriptionSet::default(),
                marks: Vec::new(),
                needs_download: false,
                view: SessionView::default(),
            };
            let Some(conn) = self.connections.get_mut(&connection) else {
                return;
            };
            if let Some(old) = conn.sessions.insert(ident, placeholder) {
                self.release_file(connection, ident, &old);
                if !old.failed {
                    self.events.push_back(ServerEvent::SessionEnded {
                        connection,
                        session: ident,
                    });
                }
            }
        }
        self.send_error(connection, ident, failure.code, failure.message);
    }

    fn connection_error(
        &mut self,
        connection: ConnectionId,
        code: ErrorCode,
        message: impl Into<String>,
    ) {
        if let Some(conn) = self.connections.remove(&connection) {
            for (ident, session) in conn.sessions {
                self.release_file(connection, ident, &session);
                self.events.push_back(ServerEvent::SessionEnded {
                    connection,
                    session: ident,
                });
            }
            self.outbox.retain(|(c, _)| *c != connection);
            self.send_error(connection, 0, code, message.into());
            self.events
                .push_back(ServerEvent::CloseConnection { connection });
        }
    }
}

/// Sorts the merge decisions of one integration by the uploaded changeset they belong to (one
/// list per entry) and names each concurrent changeset by its `(server version, origin)` from
/// `concurrent`, the transform's `theirs` in order.
fn decisions_per_entry(
    decisions: Vec<MergeDecision>,
    concurrent: &[(u64, u64)],
    entries: usize,
) -> Vec<Vec<IntegrationDecision>> {
    let mut per_entry: Vec<Vec<IntegrationDecision>> = (0..entries).map(|_| Vec::new()).collect();
    for decision in decisions {
        let (theirs_version, theirs_origin) = concurrent
            .get(decision.theirs.changeset)
            .copied()
            .unwrap_or_default();
        if let Some(list) = per_entry.get_mut(decision.ours.changeset) {
            list.push(IntegrationDecision {
                decision,
                theirs_version,
                theirs_origin,
            });
        }
    }
    per_entry
}

/// The top-level objects `changesets` touch (sorted, once each), and whether any of their
/// instructions changes the schema.
fn touched_objects(changesets: &[Changeset]) -> (Vec<(&str, &PrimaryKey)>, bool) {
    let mut objects = Vec::new();
    let mut schema = false;
    for instruction in changesets.iter().flat_map(|c| &c.instructions) {
        match instruction.object() {
            Some(object) => objects.push(object),
            None => schema = true,
        }
    }
    crate::sort::sort(&mut objects);
    objects.dedup();
    (objects, schema)
}

/// Drops from `changesets` the schema instructions that `schema` already holds exactly (every
/// client's first changeset declares its app's schema, nearly always one the server has), unless
/// the same upload also redefines that collection or property differently, where the order of
/// its instructions decides. Applied at the server's latest state such an instruction changes
/// nothing; kept, it would be transformed against every concurrent schema change, made
/// concurrent with every later client's own declaration, stored, and downloaded by every
/// client: each new client would cost the server work in proportion to the clients before it.
fn strip_known_schema(changesets: &mut [Changeset], schema: &Schema) {
    let known = |instruction: &Instruction| match instruction {
        Instruction::AddCollection {
            name,
            kind,
            primary_key,
        } => schema
            .collection(name)
            .is_some_and(|c| c.kind == *kind && c.primary_key == *primary_key),
        Instruction::AddProperty {
            collection,
            property,
        } => schema
            .collection(collection)
            .and_then(|c| c.properties.get(&property.name))
            .is_some_and(|p| p == property),
        _ => false,
    };
    /// What an instruction defines: a collection, or one of its properties.
    fn defines(instruction: &Instruction) -> Option<(&str, Option<&str>)> {
        match instruction {
            Instruction::AddCollection { name, .. } => Some((name.as_str(), None)),
            Instruction::AddProperty {
                collection,
                property,
            } => Some((collection.as_str(), Some(property.name.as_str()))),
            _ => None,
        }
    }
    if !changesets.iter().flat_map(|c| &c.instructions).any(known) {
        return;
    }
    let mut redefined: Vec<(String, Option<String>)> = changesets
        .iter()
        .flat_map(|c| &c.instructions)
        .filter(|i| !known(i))
        .filter_map(defines)
        .map(|(c, p)| (c.to_owned(), p.map(str::to_owned)))
        .collect();
    crate::sort::sort(&mut redefined);
    let keep = |instruction: &Instruction| {
        !known(instruction)
            || defines(instruction).is_some_and(|(c, p)| {
                redefined
                    .binary_search_by(|(rc, rp)| (rc.as_str(), rp.as_deref()).cmp(&(c, p)))
                    .is_ok()
            })
    };
    for changeset in changesets {
        changeset.instructions.retain(keep);
    }
}

/// Whether transforming changesets that touch `objects` (sorted), and change the schema if
/// `schema`, against `changeset` can change them. An instruction never interacts with one on
/// another object (the transformation's own rule), so a concurrent changeset that touches none
/// of those objects and has no schema instruction leaves them as they are, and so do the
/// decisions they are transformed by.
fn interacts(changeset: &Changeset, objects: &[(&str, &PrimaryKey)], schema: bool) -> bool {
    schema
        || changeset.instructions.iter().any(|i| {
            i.object()
                .is_none_or(|object| objects.binary_search(&object).is_ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changeset::Path;
    use crate::schema::CollectionKind;
    use crate::transform::{DecisionSide, Outcome, Rule};

    fn side(changeset: usize, outcome: Outcome) -> DecisionSide {
        DecisionSide {
            changeset,
            instruction: 0,
            original: Instruction::Set {
                path: Path::field("Item", PrimaryKey::Int(1), "n"),
                value: Value::Int(1),
            },
            outcome,
        }
    }

    #[test]
    fn decisions_go_to_their_own_entry_and_name_the_concurrent_version() {
        let decision = |ours, theirs| MergeDecision {
            ours: side(ours, Outcome::Kept),
            theirs: side(theirs, Outcome::Discarded),
            rule: Rule::LastWriterWins,
        };
        // Two uploaded changesets against concurrent versions 4 (client 7) and 6 (client 9).
        let concurrent = [(4, 7), (6, 9)];
        let per_entry = decisions_per_entry(
            vec![decision(0, 1), decision(1, 0), decision(1, 1)],
            &concurrent,
            2,
        );
        let named: Vec<Vec<(u64, u64)>> = per_entry
            .iter()
            .map(|list| {
                list.iter()
                    .map(|d| (d.theirs_version, d.theirs_origin))
                    .collect()
            })
            .collect();
        assert_eq!(named, vec![vec![(6, 9)], vec![(4, 7), (6, 9)]]);
        assert_eq!(per_entry[1][0].decision.ours.changeset, 1);
    }

    fn set_n(version: u64, origin: u64, timestamp: u64, key: i64, n: i64) -> Changeset {
        Changeset {
            meta: ChangesetMeta {
                version,
                last_integrated_remote_version: 0,
                origin_timestamp: timestamp,
                origin_file_ident: origin,
            },
            instructions: vec![Instruction::Set {
                path: Path::field("Item", PrimaryKey::Int(key), "n"),
                value: Value::Int(n),
            }],
        }
    }

    #[test]
    fn only_concurrent_changesets_on_the_same_objects_are_transformed_against() {
        let ours = vec![set_n(1, 1, 10, 1, 1), set_n(2, 1, 10, 2, 2)];
        let (objects, schema) = touched_objects(&ours);
        assert_eq!(objects.len(), 2);
        assert!(!schema);
        let other = set_n(3, 2, 20, 3, 3);
        let same = set_n(4, 2, 20, 2, 4);
        assert!(!interacts(&other, &objects, schema));
        assert!(interacts(&same, &objects, schema));
        let mut new_collection = set_n(5, 2, 20, 3, 5);
        new_collection
            .instructions
            .push(Instruction::AddCollection {
                name: "Other".into(),
                kind: CollectionKind::TopLevel,
                primary_key: Some(crate::schema::PrimaryKeyType::Int),
            });
        assert!(interacts(&new_collection, &objects, schema));
        assert!(interacts(&other, &objects, true));
        // Transforming against the interacting ones alone gives the same result as against all.
        let mut against_all = ours.clone();
        let mut all = vec![other.clone(), same.clone(), other];
        transform(&mut against_all, &mut all, None).unwrap();
        let mut against_some = ours.clone();
        transform(&mut against_some, &mut [same], None).unwrap();
        assert_eq!(against_all, against_some);
        assert_ne!(
            against_all, ours,
            "the later concurrent write wins over ours"
        );
    }

    fn declared(instructions: Vec<Instruction>) -> Changeset {
        Changeset {
            meta: ChangesetMeta::default(),
            instructions,
        }
    }

    #[test]
    fn a_declared_schema_the_server_holds_is_not_kept() {
        let schema = crate::sim::sim_schema();
        let mut instructions = Vec::new();
        crate::changeset::schema_instructions(&schema, &mut instructions);
        let write = Instruction::Set {
            path: Path::field("Item", PrimaryKey::Int(1), "n"),
            value: Value::Int(1),
        };
        instructions.push(write.clone());
        let mut ours = vec![declared(instructions)];
        strip_known_schema(&mut ours, &schema);
        assert_eq!(ours[0].instructions, vec![write]);

        // A collection or property the server lacks stays.
        let mut smaller = schema.clone();
        smaller
            .collections
            .get_mut("Item")
            .unwrap()
            .properties
            .remove("s");
        let mut all = Vec::new();
        crate::changeset::schema_instructions(&schema, &mut all);
        let mut ours = vec![declared(all)];
        strip_known_schema(&mut ours, &smaller);
        assert!(
            matches!(ours[0].instructions.as_slice(), [Instruction::AddProperty { collection, property }] if collection == "Item" && property.name == "s"),
            "{:?}",
            ours[0].instructions
        );
    }

    #[test]
    fn a_definition_an_upload_changes_twice_keeps_both_instructions() {
        let schema = crate::sim::sim_schema();
        let item = schema.collection("Item").unwrap();
        let n = item.properties.get("n").unwrap().clone();
        let s = item.properties.get("s").unwrap().clone();
        let mut changed = n.clone();
        changed.ty = crate::schema::ScalarType::String;
        let add = |property: &crate::schema::Property| Instruction::AddProperty {
            collection: "Item".into(),
            property: property.clone(),
        };
        // The second changeset puts back what the server holds: without the first, both would
        // be no-ops, but dropping only the second would leave `n` a string.
        let mut ours = vec![
            declared(vec![add(&changed), add(&s)]),
            declared(vec![add(&n)]),
        ];
        strip_known_schema(&mut ours, &schema);
        assert_eq!(ours[0].instructions, vec![add(&changed)]);
        assert_eq!(ours[1].instructions, vec![add(&n)]);
    }
}
