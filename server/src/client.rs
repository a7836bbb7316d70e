//! A native Rust sync client: one `ClientConnection` carrying one `ClientSession` (flexible sync
//! subscribed to every top-level collection), driven on a tokio task over tokio-tungstenite, with
//! reconnects paced by the core's backoff. Besides plain writes it runs serialized transactions
//! (TRANSACT), opens new files from a state snapshot (async open) and hands fresh access tokens to
//! the session (REFRESH).
//!
//! State lives in a durable SQLite client file ([`Client::open`], see `store`) or in memory only
//! ([`Client::connect`], for tests and benchmarks). With a file, a write returns once it is
//! durable, and a frame goes out only once every storage write emitted before it is durable, so
//! the server never sees a change (or acknowledges a download) the client could still lose.

mod store;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use eddy_core::client::{
    ClientConnection, ClientSession, ConnectionAction, ConnectionConfig, ConnectionState, FileMeta,
    PersistedState, ResetMode, SchemaWriteError, SessionConfig, SessionEvent, SyncError,
};
use eddy_core::ingest::IngestQueue;
use eddy_core::protocol::{
    decode_server_message, encode_client_message, MessageLimits, SessionIdent, Subscription,
    SubscriptionSet, TransactResult,
};
use eddy_core::schema::{CollectionKind, Schema};
use eddy_core::store::{Store, WriteTransaction};
use eddy_core::value::{Document, PrimaryKey};
use futures_util::{SinkExt, StreamExt};
use store::{Durability, FileStore, Writer, WriterThread};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::now_ms;
use crate::sync::PROTOCOL;

/// The session ident the client uses on its connection.
const SESSION: SessionIdent = 1;
/// The longest a WebSocket handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The socket read chunk. tungstenite zeroes the free part of its read buffer, up to this much,
/// before every read (including the one after each frame that finds nothing to read); its
/// default of 128 KiB made that zeroing the costliest step of receiving a small DOWNLOAD, and
/// at 16 KiB it was still 4% of the load benchmark's client CPU. Larger frames arrive in more
/// reads (the server reads in 4 KiB chunks too).
const READ_CHUNK: usize = 4 * 1024;
/// The most transaction outcomes kept for callers that have not collected them yet (a caller
/// that timed out never collects its own).
const MAX_UNCOLLECTED_OUTCOMES: usize = 16;
/// A pause between two frames read, in ms, after which the driver asks the kernel again to
/// delay TCP acknowledgements: well under the 40 ms after which Linux's delayed acknowledgement
/// fires and ends that mode.
const ACK_HINT_MS: u64 = 5;
/// How often, at most, the driver asks again during a stream of frames without such pauses, in
/// ms (see [`Driver::delay_acks`]).
const ACK_HINT_RENEW_MS: u64 = 25;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a client call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not a `ws://` or `wss://` URL.
    BadUrl(String),
    /// The write function refused (its error, as text).
    Write(String),
    /// The client's task stopped.
    Stopped,
    /// The client file could not be opened, read or written (the message says which and why).
    Storage(String),
    /// The declared schema conflicts with the one the client file holds.
    Schema(SchemaWriteError),
    /// A transaction could not start before its timeout: the session was not bound, or local
    /// writes (or an earlier transaction) were still waiting for the server.
    NotSettled {
        /// The session's reason, as text.
        reason: String,
        /// The progress when time ran out (including the last sync error, if any).
        progress: Box<Progress>,
    },
    /// What was awaited did not happen in time.
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The progress when time ran out (including the last sync error, if any).
        progress: Box<Progress>,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::BadUrl(url) => {
                write!(
                    f,
                    "\"{url}\" is not a sync URL; use ws://host:port/api/sync"
                )
            }
            ClientError::Write(e) => write!(f, "the write failed: {e}"),
            ClientError::Stopped => f.write_str("the client stopped"),
            ClientError::Storage(e) => f.write_str(e),
            ClientError::Schema(e) => write!(f, "{e}; open another file or keep the stored definitions"),
            ClientError::NotSettled { reason, progress } => write!(
                f,
                "the transaction could not start: \"{reason}\"; make sure the server is reachable and allow more time (progress: {progress:?})"
            ),
            ClientError::Timeout { what, progress } => {
                write!(f, "timed out waiting for {what} (progress: {progress:?})")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// Where the client stands; watched by the `wait_for_*` calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Whether the socket is up.
    pub connected: bool,
    /// How many times the socket came up.
    pub connects: u64,
    /// Whether the session is bound and exchanging changesets.
    pub active: bool,
    /// Whether the subscription set is fully downloaded.
    pub subscriptions_complete: bool,
    /// The highest client version the server acknowledged, or that a client reset settled (it
    /// re-makes recovered changes at new versions and drops discarded ones).
    pub uploaded: u64,
    /// The highest download-completion request answered.
    pub marks_completed: u64,
    /// How many times downloaded changesets changed the local objects (watch this to react to
    /// remote writes without polling).
    pub remote_changes: u64,
    /// How many server messages the client handled (every one may unblock a transaction).
    pub messages: u64,
    /// How many transaction outcomes arrived.
    pub transactions: u64,
    /// The last error the server reported.
    pub last_error: Option<SyncError>,
    /// Why the client file stopped accepting writes, if it did (nothing is sent after that).
    pub storage_error: Option<String>,
    /// How many times the file was reset from the server's state (client reset).
    pub client_resets: u64,
    /// What the last client reset did with the local changes the server never integrated.
    pub last_client_reset: Option<ClientReset>,
}

/// The outcome of a client reset: the file was rebuilt from the server's state and its local
/// changes that the server never integrated were re-applied or dropped, per
/// [`ClientOptions::reset_mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientReset {
    /// Local changesets re-applied on top of the server's state (uploaded again).
    pub recovered: usize,
    /// Local changesets dropped: in discard mode all of them, in recover mode those that no
    /// longer apply to the server's state.
    pub discarded: usize,
}

/// Where a [`Client`] keeps its objects, pending uploads, ingest queue and subscriptions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientStorage {
    /// In memory only: everything not uploaded is lost with the client (tests, benchmarks).
    #[default]
    Memory,
    /// A durable SQLite client file (created if missing; one client at a time): a write returns
    /// once it is on disk, and a client reopened after a crash resumes and uploads what is left.
    File(PathBuf),
}

/// How a [`Client`] connects and opens its file.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Connection timing (backoff, timeouts) and the backoff seed.
    pub connection: ConnectionConfig,
    /// Whether a new file downloads a snapshot of the server's state (STATE) instead of the
    /// whole history.
    pub async_open: bool,
    /// Where the state lives ([`Client::open`] sets a file).
    pub storage: ClientStorage,
    /// What a client reset does with local changes the server never integrated: re-apply them
    /// on the server's state (the default) or drop them. Either way [`Progress::last_client_reset`]
    /// counts them.
    pub reset_mode: ResetMode,
}

impl Default for ClientOptions {
    /// Backoff from 100 ms to 5 s, a 10 s connect timeout, a random seed, async open off, state in
    /// memory, client resets recovering local changes.
    fn default() -> Self {
        ClientOptions {
            connection: ConnectionConfig {
                backoff_base_ms: 100,
                backoff_max_ms: 5_000,
                connect_timeout_ms: 10_000,
                seed: rand::random(),
                ..ConnectionConfig::default()
            },
            async_open: false,
            storage: ClientStorage::Memory,
            reset_mode: ResetMode::Recover,
        }
    }
}

/// The sans-IO connection and what was taken out of it but not handled yet.
#[derive(Debug)]
struct Local {
    conn: ClientConnection,
    /// How many storage writes went to the writer (their sequence numbers are 1..=this).
    persist_seq: u64,
    /// Session events for the driver (storage writes already taken out).
    events: VecDeque<SessionEvent>,
    /// Encoded frames, each with the storage write that must be durable before it is sent.
    outbox: VecDeque<(u64, Vec<u8>)>,
    /// The client file's writer; `None` keeps state in memory.
    writer: Option<Writer>,
}

impl Local {
    fn session(&self) -> Result<&ClientSession, ClientError> {
        self.conn.session(SESSION).ok_or(ClientError::Stopped)
    }

    fn session_mut(&mut self) -> Result<&mut ClientSession, ClientError> {
        self.conn.session_mut(SESSION).ok_or(ClientError::Stopped)
    }

    /// Takes the session's events and the connection's frames: storage writes go to the writer
    /// in order, frames are tagged with the last storage write emitted before them.
    fn collect(&mut self) {
        if let Some(session) = self.conn.session_mut(SESSION) {
            while let Some(event) = session.poll_event() {
                match event {
                    SessionEvent::Persist(write) => {
                        if let Some(writer) = &self.writer {
                            self.persist_seq += 1;
                            writer.submit(self.persist_seq, write);
                        }
                    }
                    other => self.events.push_back(other),
                }
            }
        }
        while let Some(message) = self.conn.poll_transmit() {
            self.outbox
                .push_back((self.persist_seq, encode_client_message(&message)));
        }
    }
}

#[derive(Debug)]
struct Shared {
    local: Mutex<Local>,
    wake: Arc<Notify>,
    /// The writer's progress; `None` in memory.
    durability: Option<Arc<Durability>>,
    /// Transaction outcomes by client version, until their caller collects them.
    outcomes: Mutex<BTreeMap<u64, TransactResult>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Local> {
        // A panic while holding the lock cannot leave the sans-IO state half-updated in a way
        // that matters more than losing the client, so keep using it.
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Storage writes up to this sequence number are durable (all of them in memory).
    fn durable(&self) -> Result<u64, String> {
        match &self.durability {
            Some(d) => d.durable(),
            None => Ok(u64::MAX),
        }
    }

    fn outcomes(&self) -> MutexGuard<'_, BTreeMap<u64, TransactResult>> {
        self.outcomes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an outcome, forgetting the oldest uncollected ones beyond the bound.
    fn record_outcome(&self, client_version: u64, result: TransactResult) {
        let mut outcomes = self.outcomes();
        outcomes.insert(client_version, result);
        while outcomes.len() > MAX_UNCOLLECTED_OUTCOMES {
            outcomes.pop_first();
        }
    }
}

/// A native sync client for one flexible-sync file.
#[derive(Debug)]
pub struct Client {
    shared: Arc<Shared>,
    progress: watch::Receiver<Progress>,
    task: JoinHandle<()>,
    /// Ends the client file's writer (after its last write) when the client is dropped.
    _writer: Option<WriterThread>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A subscription set selecting every object of every top-level collection of `schema`.
pub fn subscribe_to_everything(schema: &Schema) -> SubscriptionSet {
    SubscriptionSet {
        version: 0,
        subscriptions: schema
            .collections
            .values()
            .filter(|c| c.kind == CollectionKind::TopLevel)
            .map(|c| Subscription {
                name: format!("all {}", c.name),
                collection: c.name.clone(),
                query: "TRUEPREDICATE".into(),
            })
            .collect(),
    }
}

impl Client {
    /// Opens (creating if needed) the durable client file at `path` and starts syncing it with
    /// the server at `url` (`ws://host:port/api/sync`) as the user of `token`: what the file
    /// holds (objects, pending uploads, the ingest queue, subscriptions) is restored and what
    /// was not uploaded yet is uploaded. Writes return once durable. One client per file; the
    /// file belongs to one user. What `schema` declares and the file lacks is added by a local
    /// write, synced like any change (a development-mode server learns the schema from it); a
    /// collection or property the file defines differently is [`ClientError::Schema`].
    pub fn open(
        path: impl AsRef<Path>,
        url: &str,
        token: &str,
        schema: Schema,
    ) -> Result<Client, ClientError> {
        let options = ClientOptions {
            storage: ClientStorage::File(path.as_ref().to_path_buf()),
            ..ClientOptions::default()
        };
        Self::connect_with_options(url, token, schema, options)
    }

    /// Starts a client syncing `schema` with the server at `url` (`ws://host:port/api/sync`) as
    /// the user of `token`, keeping its state in memory only (see [`Client::open`] for a durable
    /// one). It connects in the background and reconnects with backoff.
    pub fn connect(url: &str, token: &str, schema: Schema) -> Result<Client, ClientError> {
        Self::connect_with_options(url, token, schema, ClientOptions::default())
    }

    /// Like [`Client::connect`], with explicit connection timing.
    pub fn connect_with(
        url: &str,
        token: &str,
        schema: Schema,
        config: ConnectionConfig,
    ) -> Result<Client, ClientError> {
        let options = ClientOptions {
            connection: config,
            ..ClientOptions::default()
        };
        Self::connect_with_options(url, token, schema, options)
    }

    /// Like [`Client::connect`], with explicit options (connection timing, async open, storage).
    pub fn connect_with_options(
        url: &str,
        token: &str,
        schema: Schema,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(ClientError::BadUrl(url.to_string()));
        }
        let subscriptions = subscribe_to_everything(&schema);
        let (file, state) = match &options.storage {
            ClientStorage::Memory => (None, None),
            ClientStorage::File(path) => {
                let (file, state) = FileStore::open(path, &schema).map_err(ClientError::Storage)?;
                (Some(file), state)
            }
        };
        // A new file starts with an empty schema and the declared one is added by a local write,
        // so a server in development mode learns it from this client (and a reopened file gains
        // what the declared schema added since). A file opened from a server snapshot starts
        // from the snapshot's schema, and the session adds what the app declares beyond it once
        // the snapshot is in (async open needs an empty upload queue until then).
        let state = match state {
            None if !options.async_open => Some(PersistedState {
                meta: FileMeta::default(),
                store: Store::new(Schema::default()),
                pending: Vec::new(),
            }),
            state => state,
        };
        let mut session = ClientSession::new(
            SESSION,
            SessionConfig {
                path: "flx".into(),
                access_token: token.to_string(),
                schema: schema.clone(),
                reset_mode: options.reset_mode,
                async_open: options.async_open,
            },
            state,
        );
        if options.storage == ClientStorage::Memory {
            session.discard_storage_writes();
        }
        session
            .add_declared_schema(now_ms(), &schema)
            .map_err(ClientError::Schema)?;
        // A reopened file keeps the subscriptions it had (changed ones included).
        if session.meta().subscriptions.version == 0 {
            session.update_subscriptions(subscriptions);
        }
        // What a reopened file holds was acknowledged up to its first pending changeset.
        let uploaded = session.pending().first().map_or_else(
            || session.meta().last_client_version,
            |c| c.meta.version.saturating_sub(1),
        );
        let wake = Arc::new(Notify::new());
        let (writer, writer_thread) = match file {
            Some(file) => {
                let wake = Arc::clone(&wake);
                let (writer, thread) = store::spawn_writer(file, move || wake.notify_one())
                    .map_err(ClientError::Storage)?;
                (Some(writer), Some(thread))
            }
            None => (None, None),
        };
        let durability = writer.as_ref().map(|w| Arc::clone(w.durability()));
        let mut conn = ClientConnection::new(options.connection, now_ms());
        conn.add_session(session);
        let shared = Arc::new(Shared {
            local: Mutex::new(Local {
                conn,
                persist_seq: 0,
                events: VecDeque::new(),
                outbox: VecDeque::new(),
                writer,
            }),
            wake,
            durability,
            outcomes: Mutex::new(BTreeMap::new()),
        });
        let initial = Progress {
            uploaded,
            ..Progress::default()
        };
        let (tx, progress) = watch::channel(initial.clone());
        let task =
            tokio::spawn(Driver::new(Arc::clone(&shared), url.to_string(), tx, initial).run());
        Ok(Client {
            shared,
            progress,
            task,
            _writer: writer_thread,
        })
    }

    /// Blocks until storage writes up to `seq` are durable (at once in memory).
    fn wait_durable(&self, seq: u64) -> Result<(), ClientError> {
        match &self.shared.durability {
            Some(d) => d.wait_for(seq).map_err(ClientError::Storage),
            None => Ok(()),
        }
    }

    /// Runs `f` in a local write transaction and queues what it changed for storage; returns
    /// its result and the storage sequence number to wait for.
    fn write_local<R, E: fmt::Display>(
        &self,
        f: impl FnOnce(&mut WriteTransaction<'_>) -> Result<R, E>,
    ) -> Result<(R, u64), ClientError> {
        let written = {
            let mut local = self.shared.lock();
            let result = local
                .session_mut()?
                .write(now_ms(), f)
                .map_err(|e| ClientError::Write(e.to_string()))?
                .0;
            local.collect();
            (result, local.persist_seq)
        };
        self.shared.wake.notify_one();
        Ok(written)
    }

    /// Runs `f` in a local write transaction; its changes are uploaded in the background. With
    /// a client file it returns once the write is durable, blocking the calling thread meanwhile
    /// (concurrent writes share one disk commit). From async code, use [`Client::write_async`].
    pub fn write<R, E: fmt::Display>(
        &self,
        f: impl FnOnce(&mut WriteTransaction<'_>) -> Result<R, E>,
    ) -> Result<R, ClientError> {
        let (result, seq) = self.write_local(f)?;
        self.wait_durable(seq)?;
        Ok(result)
    }

    /// [`Client::write`] for async code: `f` runs at once, and the returned future resolves once
    /// the write is durable, without blocking the runtime's thread meanwhile (the wait for the
    /// disk commit runs on tokio's blocking pool).
    pub async fn write_async<R, E: fmt::Display>(
        &self,
        f: impl FnOnce(&mut WriteTransaction<'_>) -> Result<R, E>,
    ) -> Result<R, ClientError> {
        let (result, seq) = self.write_local(f)?;
        if let Some(durability) = &self.shared.durability {
            let durability = Arc::clone(durability);
            tokio::task::spawn_blocking(move || durability.wait_for(seq))
                .await
                .map_err(|e| {
                    ClientError::Storage(format!("the wait for the disk commit failed: {e}"))
                })?
                .map_err(ClientError::Storage)?;
        }
        Ok(result)
    }

    /// Queues an asymmetric object for Data Ingest: it is never readable here, and it leaves the
    /// queue once the server acknowledged it (see [`Client::ingest_queue`]). Inside a
    /// [`Client::write`], use [`WriteTransaction::ingest`] instead.
    pub fn ingest(
        &self,
        collection: &str,
        key: PrimaryKey,
        document: Document,
    ) -> Result<(), ClientError> {
        self.write(|tx| tx.ingest(collection, key, document))
    }

    /// The asymmetric objects not yet acknowledged by the server.
    pub fn ingest_queue(&self) -> Result<IngestQueue, ClientError> {
        Ok(self.shared.lock().session()?.ingest_queue())
    }

    /// Replaces the subscription set (its version is assigned here); the server sends the objects
    /// that enter the view and the client releases those that leave it, without reconnecting.
    /// Returns the new set's version, once the set is durable (with a client file).
    pub fn update_subscriptions(&self, set: SubscriptionSet) -> Result<u64, ClientError> {
        let (version, seq) = {
            let mut local = self.shared.lock();
            let version = local.session_mut()?.update_subscriptions(set);
            local.collect();
            (version, local.persist_seq)
        };
        self.shared.wake.notify_one();
        self.wait_durable(seq)?;
        Ok(version)
    }

    /// Runs `f` as a serialized transaction: the server integrates it only if nothing concurrent
    /// touched the same objects, and it changes the local state only once accepted. It first
    /// waits (within `timeout`) until the session is bound and every local write is uploaded,
    /// then for the outcome. A refusal by the server is `Ok(TransactResult::Rejected { .. })`;
    /// a connection lost meanwhile is a rejection with [`eddy_core::protocol::ErrorCode::ConnectionClosed`].
    pub async fn transact<E: fmt::Display>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut WriteTransaction<'_>) -> Result<(), E>,
    ) -> Result<TransactResult, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.progress.clone();
        let mut f = Some(f);
        let version = loop {
            rx.borrow_and_update();
            let attempt = {
                let mut local = self.shared.lock();
                let session = local.session_mut()?;
                let mut failed = None;
                let started = session.transact(now_ms(), |tx| {
                    let f = f
                        .take()
                        .ok_or_else(|| "the transaction ran twice".to_string())?;
                    f(tx).map_err(|e| {
                        let message = e.to_string();
                        failed = Some(message.clone());
                        message
                    })
                });
                match (started, failed) {
                    (Ok(version), _) => Ok(version),
                    (Err(_), Some(message)) => return Err(ClientError::Write(message)),
                    (Err(e), None) if f.is_none() => return Err(ClientError::Write(e.message)),
                    (Err(e), None) => Err(e.message),
                }
            };
            match attempt {
                Ok(version) => break version,
                Err(reason) => {
                    let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
                    match changed {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(ClientError::Stopped),
                        Err(_) => {
                            return Err(ClientError::NotSettled {
                                reason,
                                progress: Box::new(self.progress()),
                            })
                        }
                    }
                }
            }
        };
        self.shared.wake.notify_one();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let waited = self
            .wait_until(left, "the transaction outcome", |_| {
                self.shared.outcomes().contains_key(&version)
            })
            .await;
        let outcome = self.shared.outcomes().remove(&version);
        match (waited, outcome) {
            (_, Some(result)) => Ok(result),
            (Err(e), None) => Err(e),
            (Ok(_), None) => Err(ClientError::Stopped),
        }
    }

    /// Hands the session a fresh access token (REFRESH): sent at once while bound, or used to
    /// bind again after the server ended the session because the old token expired.
    pub fn refresh_token(&self, token: &str) -> Result<(), ClientError> {
        {
            let mut local = self.shared.lock();
            let session = local.session_mut()?;
            session.refresh(token.to_string());
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Reads the local state.
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> Result<R, ClientError> {
        Ok(f(self.shared.lock().session()?.store()))
    }

    /// A snapshot of the local state.
    pub fn store(&self) -> Result<Store, ClientError> {
        self.read(Store::clone)
    }

    /// The client file ident the server allocated (0 until then).
    pub fn client_file_ident(&self) -> Result<u64, ClientError> {
        Ok(self.shared.lock().session()?.meta().client_file_ident)
    }

    /// The current progress.
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// A receiver of every progress change, e.g. to wake when downloads change local objects
    /// ([`Progress::remote_changes`]).
    pub fn watch_progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    async fn wait_until(
        &self,
        timeout: Duration,
        what: &'static str,
        done: impl Fn(&Progress) -> bool,
    ) -> Result<Progress, ClientError> {
        let mut rx = self.progress.clone();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(|p| done(p)).await.map(|p| p.clone())
        })
        .await;
        match waited {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(ClientError::Stopped),
            Err(_) => Err(ClientError::Timeout {
                what,
                progress: Box::new(self.progress()),
            }),
        }
    }

    /// Waits until the server acknowledged every local write made so far; returns the client
    /// version acknowledged.
    pub async fn wait_for_upload(&self, timeout: Duration) -> Result<u64, ClientError> {
        self.wait_for_upload_window(0, timeout).await
    }

    /// Waits until at most `window` of the local changesets made so far are unacknowledged, so a
    /// writer can keep that many in flight instead of waiting for each; returns the client
    /// version acknowledged.
    pub async fn wait_for_upload_window(
        &self,
        window: u64,
        timeout: Duration,
    ) -> Result<u64, ClientError> {
        let last = self.shared.lock().session()?.meta().last_client_version;
        let target = last.saturating_sub(window);
        self.wait_until(timeout, "upload acknowledgement", |p| p.uploaded >= target)
            .await
            .map(|p| p.uploaded)
    }

    /// Waits until everything the server has now is integrated locally (a MARK round trip after
    /// the subscriptions are complete), retrying across reconnects.
    pub async fn wait_for_download(&self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ready = self
                .wait_until(left, "an active session", |p| {
                    p.active && p.subscriptions_complete
                })
                .await?;
            let request = {
                let mut local = self.shared.lock();
                let session = local.session_mut()?;
                session
                    .is_active()
                    .then(|| session.request_download_completion())
            };
            let Some(request) = request else {
                continue;
            };
            self.shared.wake.notify_one();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let p = self
                .wait_until(left, "download completion", |p| {
                    p.marks_completed >= request || p.connects != ready.connects
                })
                .await?;
            if p.marks_completed >= request {
                return Ok(());
            }
        }
    }
}

/// The task that moves bytes between the socket and the sans-IO connection.
struct Driver {
    shared: Arc<Shared>,
    url: String,
    progress: watch::Sender<Progress>,
    socket: Option<Socket>,
    limits: MessageLimits,
    state: Progress,
    /// When the kernel was last asked to delay acknowledgements (see [`Driver::delay_acks`]).
    ack_hint_at: u64,
    /// When the last frame was read.
    read_at: u64,
}

/// What a driver step leaves to do.
enum Stepped {
    /// Step again: a socket action ran or the connection dropped.
    Again,
    /// Wait for input, or until the connection's next deadline (ms), if any.
    Idle(Option<u64>),
}

/// What woke the driver.
enum Wake {
    Read(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Notified,
    Timeout,
}

impl Driver {
    fn new(
        shared: Arc<Shared>,
        url: String,
        progress: watch::Sender<Progress>,
        state: Progress,
    ) -> Self {
        Driver {
            shared,
            url,
            progress,
            socket: None,
            limits: MessageLimits::default(),
            state,
            ack_hint_at: 0,
            read_at: 0,
        }
    }

    async fn open(&self) -> Result<Socket, String> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| e.to_string())?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(PROTOCOL));
        let (socket, _) = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(
                request,
                Some(WebSocketConfig::default().read_buffer_size(READ_CHUNK)),
                true,
            ),
        )
        .await
        .map_err(|_| "the handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
        Ok(socket)
    }

    /// Drops the socket; frames meant for it are dropped too (a new connection binds afresh).
    fn disconnected(&mut self) {
        self.socket = None;
        let mut local = self.shared.lock();
        local.outbox.clear();
        local.conn.handle_disconnected(now_ms());
    }

    /// Runs the socket actions the connection asked for.
    async fn run_actions(&mut self, actions: Vec<ConnectionAction>) {
        for action in actions {
            match action {
                ConnectionAction::Connect => {
                    self.socket = None;
                    self.shared.lock().outbox.clear();
                    match self.open().await {
                        Ok(socket) => {
                            self.socket = Some(socket);
                            self.ack_hint_at = 0;
                            self.read_at = 0;
                            self.state.connects += 1;
                            self.shared.lock().conn.handle_connected(now_ms());
                        }
                        Err(e) => {
                            tracing::debug!(url = %self.url, error = %e, "cannot connect");
                            self.disconnected();
                        }
                    }
                }
                ConnectionAction::Close => {
                    self.socket = None;
                    self.shared.lock().outbox.clear();
                }
                _ => {}
            }
        }
    }

    /// Runs the socket actions, or else turns the session's events into progress and sends the
    /// frames whose storage writes are durable, all under one lock.
    ///
    /// Only socket actions and dropped connections leave new work behind (a new connection's
    /// BIND, a reconnect's timer), so only they make the caller step again; what a caller of
    /// [`Client`] changes meanwhile wakes the driver through [`Shared::wake`], whose permit
    /// outlives a driver that is not waiting yet.
    async fn step(&mut self) -> Stepped {
        let taken = {
            let mut guard = self.shared.lock();
            if let Some(first) = guard.conn.poll_action() {
                let mut actions = vec![first];
                actions.extend(std::iter::from_fn(|| guard.conn.poll_action()));
                Err(actions)
            } else {
                Ok(settle(&mut self.state, &self.shared, &mut guard))
            }
        };
        let (frames, reconnect, deadline) = match taken {
            Ok(settled) => settled,
            Err(actions) => {
                self.run_actions(actions).await;
                return Stepped::Again;
            }
        };
        let mut stepped = Stepped::Idle(deadline);
        if let Some(socket) = self.socket.as_mut() {
            for frame in frames {
                if socket.send(Message::Binary(frame.into())).await.is_err() {
                    self.disconnected();
                    stepped = Stepped::Again;
                    break;
                }
            }
        }
        if reconnect {
            self.disconnected();
            stepped = Stepped::Again;
        }
        let state = &self.state;
        self.progress.send_if_modified(|p| {
            let changed = p != state;
            if changed {
                p.clone_from(state);
            }
            changed
        });
        stepped
    }

    /// Lets the kernel delay the TCP acknowledgement of the next frames read instead of sending
    /// one as each read drains the socket: the server's frames mostly come unanswered, and that
    /// acknowledgement (its trip through the server's TCP stack included) cost about an eighth
    /// of the clients' CPU in the load benchmark. Linux leaves this mode only when a delayed
    /// acknowledgement's timer fires, 40 ms at the least after an acknowledgement was due and
    /// none went out; on a busy stream one goes out anyway every other small frame, so the timer
    /// fires in a pause of the stream. The mode is therefore asked for again on the first frame
    /// read after a pause of `ACK_HINT_MS`, and otherwise every `ACK_HINT_RENEW_MS` (it may have
    /// lapsed while the driver fell behind a busy stream), not after every frame: the request
    /// cost 2% of the load benchmark's client CPU when renewed every 5 ms. When it lapses,
    /// acknowledgements go out at once as before.
    fn delay_acks(&mut self, now: u64) {
        let paused = now.saturating_sub(self.read_at) >= ACK_HINT_MS;
        self.read_at = now;
        if !paused && now.saturating_sub(self.ack_hint_at) < ACK_HINT_RENEW_MS {
            return;
        }
        self.ack_hint_at = now;
        #[cfg(target_os = "linux")]
        if let Some(MaybeTlsStream::Plain(tcp)) = self.socket.as_ref().map(|s| s.get_ref()) {
            // Only a hint; the connection works the same without it.
            let _ = socket2::SockRef::from(tcp).set_tcp_quickack(false);
        }
    }

    async fn run(mut self) {
        // One timer, moved only when the connection's next deadline changes: registering a new
        // one for every frame received cost the timer wheel an insertion and a removal each.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut deadline = None;
        // One wake-up registration, kept across frames until it fires: a fresh one per frame
        // joined and left the waiter list each time.
        let wake = Arc::clone(&self.shared.wake);
        let notified = wake.notified();
        tokio::pin!(notified);
        loop {
            let next = match self.step().await {
                Stepped::Again => continue,
                Stepped::Idle(next) => next,
            };
            if next != deadline {
                deadline = next;
                if let Some(at) = next {
                    let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                    timer.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
            let woken = {
                let read = async {
                    match self.socket.as_mut() {
                        Some(socket) => socket.next().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    read = read => Wake::Read(read),
                    () = notified.as_mut() => Wake::Notified,
                    () = &mut timer, if deadline.is_some() => {
                        deadline = None;
                        Wake::Timeout
                    }
                }
            };
            match woken {
                Wake::Read(Some(Ok(Message::Binary(bytes)))) => {
                    let now = now_ms();
                    self.delay_acks(now);
                    self.state.messages = self.state.messages.wrapping_add(1);
                    match decode_server_message(&bytes, &self.limits) {
                        Ok(msg) => self.shared.lock().conn.handle_message(now, msg),
                        Err(e) => {
                            tracing::warn!(error = %e, "undecodable frame from the server");
                            self.disconnected();
                        }
                    }
                }
                Wake::Read(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => {
                    self.disconnected();
                }
                Wake::Read(Some(Ok(_))) => {}
                Wake::Notified => notified.set(wake.notified()),
                Wake::Timeout => self.shared.lock().conn.handle_timeout(now_ms()),
            }
        }
    }
}

/// Under the lock: takes the session's events into the progress and the frames whose
/// storage writes are durable; returns those frames, whether the session asked for a
/// reconnect, and the connection's next deadline.
fn settle(
    state: &mut Progress,
    shared: &Shared,
    local: &mut Local,
) -> (Vec<Vec<u8>>, bool, Option<u64>) {
    local.collect();
    let Local {
        conn,
        events,
        outbox,
        ..
    } = local;
    let mut frames = Vec::new();
    match shared.durable() {
        Ok(durable) => {
            while outbox.front().is_some_and(|(seq, _)| *seq <= durable) {
                frames.extend(outbox.pop_front().map(|(_, frame)| frame));
            }
        }
        Err(e) => state.storage_error = Some(e),
    }
    state.connected = conn.state() == ConnectionState::Connected;
    let mut reconnect = false;
    match conn.session_mut(SESSION) {
        Some(session) => {
            while let Some(event) = events.pop_front() {
                note_event(state, shared, session, event);
            }
            reconnect = session.take_reconnect_request();
            state.active = session.is_active();
            state.subscriptions_complete =
                *session.subscription_state() == eddy_core::client::SubscriptionState::Complete;
        }
        None => events.clear(),
    }
    (frames, reconnect, conn.poll_timeout())
}

/// Records one session event in the progress.
fn note_event(state: &mut Progress, shared: &Shared, session: &ClientSession, event: SessionEvent) {
    match event {
        SessionEvent::UploadAcknowledged { client_version } => {
            state.uploaded = state.uploaded.max(client_version);
        }
        SessionEvent::Changes(_) => {
            state.remote_changes = state.remote_changes.wrapping_add(1);
        }
        SessionEvent::Transact {
            client_version,
            result,
        } => {
            shared.record_outcome(client_version, result);
            state.transactions = state.transactions.wrapping_add(1);
        }
        SessionEvent::DownloadComplete { request } => {
            state.marks_completed = state.marks_completed.max(request);
        }
        SessionEvent::Error(e) => {
            tracing::warn!(code = ?e.code, message = %e.message, "sync error");
            state.last_error = Some(e);
        }
        SessionEvent::ClientReset {
            recovered,
            discarded,
        } => {
            tracing::warn!(
                recovered,
                discarded,
                "client reset: the file was rebuilt from the server's state"
            );
            state.client_resets = state.client_resets.wrapping_add(1);
            let settled = session.pending().first().map_or_else(
                || session.meta().last_client_version,
                |c| c.meta.version.saturating_sub(1),
            );
            state.uploaded = state.uploaded.max(settled);
            state.last_client_reset = Some(ClientReset {
                recovered,
                discarded,
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_core::schema::{CollectionSchema, PrimaryKeyType};

    #[test]
    fn subscribes_to_top_level_collections_only() {
        let mut schema = Schema::default();
        schema.insert(CollectionSchema::top_level("Item", PrimaryKeyType::Int));
        let mut embedded = CollectionSchema::top_level("Part", PrimaryKeyType::Int);
        embedded.kind = CollectionKind::Embedded;
        schema.insert(embedded);
        let set = subscribe_to_everything(&schema);
        assert_eq!(set.subscriptions.len(), 1);
        assert_eq!(set.subscriptions[0].collection, "Item");
    }

    #[tokio::test]
    async fn refuses_non_websocket_urls() {
        let err = Client::connect("http://x/api/sync", "t", Schema::default()).unwrap_err();
        assert!(err.to_string().contains("ws://"), "{err}");
    }
}
