//! The client side of one sync session (one synced file): binding, identification, uploads,
//! integration of downloads, subscriptions, marks, transactions, async open and client reset.
//!
//! The session is sans-IO. The connection that carries it calls [`ClientSession::handle_connected`],
//! [`ClientSession::handle_message`] and [`ClientSession::handle_disconnected`]; the application
//! calls [`ClientSession::write`] and friends; everything the session wants done comes out of
//! [`ClientSession::poll_transmit`] (messages) and [`ClientSession::poll_event`] (storage writes,
//! changes, state changes, errors).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::changeset::{
    decode_changeset, encode_changeset, Changeset, ChangesetMeta, DecodeLimits, Instruction,
};
use crate::client::ingest_status::IngestReporter;
use crate::ingest::{ingest_status, IngestQueue};
use crate::protocol::{
    BatchState, ClientMessage, CompensatingWrite, DownloadChangeset, DownloadCursor, ErrorAction,
    ErrorCode, IntegratedChangeset, ServerMessage, SessionIdent, SubscriptionSet, SyncProgress,
    TransactResult, UploadChangeset, UploadCursor,
};
use crate::schema::{CollectionKind, Schema};
use crate::server::view::{encode_object_keys, object_keys, ObjectKey};
use crate::store::{Changes, Store, Undo, WriteTransaction};
use crate::transform::{transform, transform_each, EachError, TransformError};

/// Most changesets one UPLOAD carries; the rest follow once it is acknowledged.
const MAX_UPLOAD_CHANGESETS: usize = 1_000;
/// Most body bytes one UPLOAD carries (a single larger changeset still goes alone).
const MAX_UPLOAD_BYTES: usize = 4 * 1024 * 1024;

/// How often at most a client with nothing to upload reports its download cursor.
pub const PROGRESS_REPORT_INTERVAL_MS: u64 = 1_000;
/// Most bytes of bootstrap DOWNLOADs a session holds back by default until the batch's
/// `LastInBatch` (see [`ClientSession::set_max_bootstrap_bytes`]).
pub const DEFAULT_MAX_BOOTSTRAP_BYTES: usize = 256 * 1024 * 1024;
/// What a buffered DOWNLOAD is counted as besides its bodies (cursors and changeset metadata).
const DOWNLOAD_OVERHEAD_BYTES: usize = 64;

/// What to do with local changes the server never integrated when the file must be reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetMode {
    /// Re-apply unacknowledged local changes on top of the server's state.
    Recover,
    /// Drop them (they are reported in [`SessionEvent::ClientReset`]).
    Discard,
}

/// How a session is set up.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The server file to sync (`"flx"` for flexible sync).
    pub path: String,
    /// The access token sent in BIND.
    pub access_token: String,
    /// The schema the application declares.
    pub schema: Schema,
    /// What a client reset does with unacknowledged local changes.
    pub reset_mode: ResetMode,
    /// Whether a brand-new file starts from a STATE snapshot instead of the whole history.
    pub async_open: bool,
}

/// A transaction sent with TRANSACT whose outcome is not known yet. It is persisted, so that a
/// client restarted in the meantime still applies it if the server integrated it.
#[derive(Clone, Debug, PartialEq)]
pub struct OutstandingTransaction {
    /// Its client version.
    pub client_version: u64,
    /// When it was made.
    pub origin_timestamp: u64,
    /// Its instructions (not applied locally until the server accepts them).
    pub instructions: Vec<Instruction>,
}

/// The identity and cursors of a client file: what must be persisted besides objects and history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileMeta {
    /// The server-allocated client file ident (0 until allocated).
    pub client_file_ident: u64,
    /// Its salt.
    pub client_file_ident_salt: u64,
    /// Where this file stands in the server's history.
    pub download: DownloadCursor,
    /// The latest server version heard of, and its salt.
    pub latest_server_version: u64,
    /// The salt of `latest_server_version`.
    pub latest_server_version_salt: u64,
    /// The last client version produced locally.
    pub last_client_version: u64,
    /// The current subscription set.
    pub subscriptions: SubscriptionSet,
    /// The outstanding transaction, if any.
    pub transaction: Option<OutstandingTransaction>,
}

/// Everything a session needs to resume after a restart.
#[derive(Clone, Debug)]
pub struct PersistedState {
    /// Identity and cursors.
    pub meta: FileMeta,
    /// The object state.
    pub store: Store,
    /// Local changesets not yet integrated by the server, rebased on `meta.download`.
    pub pending: Vec<Changeset>,
}

/// A change to persist, emitted after every state change. Drivers apply these in order, each as
/// one storage transaction; a local write is durable once its `Persist` is.
#[derive(Clone, Debug)]
pub struct StorageWrite {
    /// The new file metadata.
    pub meta: FileMeta,
    /// Objects whose stored form changed: the new document, or `None` when it is gone.
    pub objects: Vec<(
        String,
        crate::value::PrimaryKey,
        Option<crate::value::Document>,
    )>,
    /// How the list of pending changesets changed.
    pub pending: PendingUpdate,
    /// The schema, when it changed.
    pub schema: Option<Schema>,
}

/// How a [`StorageWrite`] changes the stored list of pending (unacknowledged) changesets.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum PendingUpdate {
    /// The list is unchanged.
    Unchanged,
    /// One local commit was appended.
    Appended {
        /// The changeset.
        changeset: Changeset,
        /// Its instructions encoded (`encode_changeset`), which its UPLOAD carries as well: the
        /// storage record reuses them instead of encoding the changeset a second time.
        body: Arc<[u8]>,
    },
    /// The list changed in place: every changeset up to client version `acknowledged` left it
    /// (the server integrated them), and each of `rewritten` replaces the stored changeset of its
    /// version (a download or an accepted transaction was transformed against it). Storage
    /// deletes the acknowledged records by key range and puts the rewritten ones.
    Delta {
        /// Stored changesets up to this client version are deleted (0: none).
        acknowledged: u64,
        /// Changesets whose instructions may have changed, each still in the list.
        rewritten: Vec<Changeset>,
    },
    /// The whole list was rewritten (a new client file ident, a client reset).
    Replaced(Vec<Changeset>),
}

/// Which kind of [`PendingUpdate`] a state change makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PendingChange {
    Unchanged,
    Appended,
    /// What `pending_acknowledged` and `pending_rewritten` recorded.
    Delta,
    Replaced,
}

/// The lifecycle of a subscription set.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionState {
    /// Not yet sent to (or acknowledged by) the server.
    Pending,
    /// The server is sending the objects it selects.
    Bootstrapping,
    /// Everything it selects has been downloaded.
    Complete,
    /// The server refused it.
    Error(String),
    /// A newer set replaced it before it completed.
    Superseded,
}

/// An error reported to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncError {
    /// The protocol error code.
    pub code: ErrorCode,
    /// What the application should do.
    pub action: ErrorAction,
    /// A human-readable explanation.
    pub message: String,
    /// Refused writes that the server reverted, for compensating-write errors.
    pub compensating: Option<CompensatingWrite>,
}

/// Something the application or the driver must know about.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SessionEvent {
    /// Persist this, in order.
    Persist(StorageWrite),
    /// Objects changed because of downloaded changesets.
    Changes(Changes),
    /// The server integrated local changes up to this client version.
    UploadAcknowledged {
        /// The client version.
        client_version: u64,
    },
    /// Everything in the server's history at the time of the MARK request has been integrated.
    DownloadComplete {
        /// The request number returned by [`ClientSession::request_download_completion`].
        request: u64,
    },
    /// A subscription set changed state.
    Subscription {
        /// The set's version.
        version: u64,
        /// Its new state.
        state: SubscriptionState,
    },
    /// The outcome of a [`ClientSession::transact`].
    Transact {
        /// The transaction's client version.
        client_version: u64,
        /// Accepted (with its server version) or rejected.
        result: TransactResult,
    },
    /// The file was reset from the server's state.
    ClientReset {
        /// Local changesets re-applied on top of the server's state.
        recovered: usize,
        /// Local changesets dropped (discard mode, or no longer applicable).
        discarded: usize,
    },
    /// The server reported an error.
    Error(SyncError),
}

/// Where the session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No connection.
    Disconnected,
    /// BIND sent; waiting for IDENT (new file) or for the first DOWNLOAD.
    Binding,
    /// Fetching the server state with STATE_REQUEST (async open or client reset).
    FetchingState,
    /// IDENT sent, waiting for the first DOWNLOAD.
    Identified,
    /// Uploads and downloads flow.
    Active,
    /// UNBIND sent or the server ended the session.
    Unbound,
    /// A fatal error; the application must act.
    Failed,
}

/// A state transfer in progress (async open or client reset).
#[derive(Debug, Default)]
struct StateTransfer {
    server_version: u64,
    salt: u64,
    total: u64,
    bytes: Vec<u8>,
    /// Set for a client reset; `None` for an async open.
    reset: Option<Reset>,
}

/// The progress of a client reset. The file's identity, cursors and pending changesets stay as
/// they are (and are what gets persisted) until the new state is complete, so a crash in the
/// middle of a reset leaves a consistent file that simply resets again.
#[derive(Debug, Default)]
struct Reset {
    /// The new client file ident and salt, once the server allocated them.
    new_ident: Option<(u64, u64)>,
    /// The old file's ident and salt, to ask which of its client versions the server integrated.
    old_ident: Option<(u64, u64)>,
    /// The answer: which changesets of the old file the server integrated.
    integrated: Option<Integrated>,
}

/// Which changesets of a client file the server integrated, as CLIENT_VERSION reports them.
#[derive(Debug, Default)]
struct Integrated {
    /// The last client version integrated.
    last: u64,
    /// The integrated changesets from the first local one on, by client version.
    listed: Vec<IntegratedChangeset>,
}

impl Integrated {
    /// Whether the server holds the local changeset `meta`: the same client version made at the
    /// same time. A file that lost changes the server integrated reuses their versions for new
    /// changesets, which the server does not hold. Past the listed ones (the list is bounded),
    /// every version up to `last` counts as integrated.
    fn holds(&self, meta: &ChangesetMeta) -> bool {
        match self.listed.last() {
            Some(listed) if meta.version <= listed.client_version => self
                .listed
                .binary_search(&IntegratedChangeset {
                    client_version: meta.version,
                    origin_timestamp: meta.origin_timestamp,
                })
                .is_ok(),
            _ => meta.version <= self.last,
        }
    }
}

/// One DOWNLOAD's content, as received.
#[derive(Debug)]
struct Download {
    progress: SyncProgress,
    batch_state: BatchState,
    query_version: u64,
    changesets: Vec<DownloadChangeset>,
    resets: Vec<u8>,
    leaving: Vec<u8>,
}

impl Download {
    /// What holding it back costs, in bytes.
    fn buffered_bytes(&self) -> usize {
        self.changesets
            .iter()
            .map(|c| c.body.len() + DOWNLOAD_OVERHEAD_BYTES)
            .sum::<usize>()
            + self.resets.len()
            + self.leaving.len()
            + DOWNLOAD_OVERHEAD_BYTES
    }
}

/// A bootstrap split over several DOWNLOADs, held back until its `LastInBatch` so that it is
/// applied (and persisted) all at once. It lives in memory only: a disconnect or restart drops
/// it, the file stays at the cursor before it, and the server sends the bootstrap again.
#[derive(Debug, Default)]
struct Bootstrap {
    /// The `MoreToCome` DOWNLOADs received so far, in order.
    downloads: Vec<Download>,
    /// Their size as counted by [`Download::buffered_bytes`].
    bytes: usize,
    /// TRANSACT and MARK answers that arrived meanwhile: they describe the state after the
    /// bootstrap, so they are handled once it is applied.
    deferred: Vec<ServerMessage>,
}

/// A set of objects, kept as a `Vec` sorted by collection and key: few objects wait to leave the
/// view at a time, and the server lists them in order, so inserting them is appending; a
/// `BTreeSet` of this type would cost the browser build its own B-tree code.
#[derive(Clone, Debug, Default)]
struct ObjectSet(Vec<ObjectKey>);

impl ObjectSet {
    /// Adds `object` unless it is there already.
    fn insert(&mut self, object: ObjectKey) {
        if let Err(at) = self.0.binary_search(&object) {
            self.0.insert(at, object);
        }
    }

    /// Removes `object` if it is there.
    fn remove(&mut self, object: &ObjectKey) {
        if let Ok(at) = self.0.binary_search(object) {
            self.0.remove(at);
        }
    }

    /// Keeps only the objects for which `keep` is true.
    fn retain(&mut self, keep: impl FnMut(&ObjectKey) -> bool) {
        self.0.retain(keep);
    }

    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes every object.
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// What integrating downloads changes besides the store, to put back if one of them fails.
struct Saved {
    /// The parts of the file's meta an integration changes (its subscriptions it never does).
    download: DownloadCursor,
    latest_server_version: u64,
    latest_server_version_salt: u64,
    transaction: Option<OutstandingTransaction>,
    pending_acknowledged: u64,
    pending_rewritten: Vec<u64>,
    leaving: ObjectSet,
    released: ObjectSet,
    in_flight: u64,
    events: usize,
}

/// The client side of one sync session.
#[derive(Debug)]
pub struct ClientSession {
    ident: SessionIdent,
    config: SessionConfig,
    phase: Phase,
    meta: FileMeta,
    store: Store,
    pending: Vec<Changeset>,
    /// Pending changesets up to this client version left `pending` since the last storage write.
    pending_acknowledged: u64,
    /// The versions of pending changesets that a transformation or an object reset may have
    /// rewritten since the last storage write (unsorted, maybe repeated).
    pending_rewritten: Vec<u64>,
    /// Beside each pending changeset (same order, with its client version), its encoded
    /// instructions, made once at commit for both the storage record and the UPLOAD; forgotten
    /// when the changeset is rewritten (its next UPLOAD encodes it again). Vectors rather than
    /// maps keep the browser's wasm small.
    bodies: Vec<(u64, Option<Arc<[u8]>>)>,
    /// The highest client version sent in an UPLOAD that is not yet acknowledged.
    in_flight: u64,
    /// The highest client version the server reported integrated.
    acknowledged: u64,
    subscription_state: SubscriptionState,
    subscriptions_sent: u64,
    next_mark: u64,
    state_transfer: Option<StateTransfer>,
    /// The schema as last persisted (schema changes are persisted only when they happen).
    persisted_schema: Schema,
    connected: bool,
    waiting_for_token: bool,
    /// Set when this side ended a live binding (UNBIND) to bind again at once: the server's
    /// messages until its UNBOUND belong to the old binding and are dropped.
    unbinding: bool,
    wants_reconnect: bool,
    outbox: VecDeque<ClientMessage>,
    events: VecDeque<SessionEvent>,
    limits: DecodeLimits,
    /// Objects the server said left the view, not yet released (a pending change touches them).
    leaving: ObjectSet,
    /// Objects released with RELEASE, kept until the server's reset removes them.
    released: ObjectSet,
    /// When to report the Data Ingest queue (INGEST_STATUS).
    ingest_reporter: IngestReporter,
    /// The download cursor the server last heard of, in IDENT or an UPLOAD.
    reported_progress: u64,
    /// When the last UPLOAD without changesets reported the download cursor (ms).
    progress_reported_at: u64,
    /// The bootstrap being received, if one is split over several DOWNLOADs.
    bootstrap: Bootstrap,
    /// Most bytes `bootstrap` may hold.
    max_bootstrap_bytes: usize,
    /// Whether storage writes are built ([`ClientSession::discard_storage_writes`] clears it).
    storage_writes: bool,
    /// While downloads are integrated: what to put back into the pending changesets if the
    /// integration fails.
    journal: Option<Journal>,
}

/// The pending changesets an integration of downloads changed or dropped, as they were before.
/// Copying only those keeps Data Ingest's queue (never rewritten by a download) out of the copy.
#[derive(Debug, Default)]
struct Journal {
    /// Dropped as acknowledged, in version order (each drop takes a prefix of the pending list).
    dropped: Vec<Changeset>,
    /// Copies of changesets as they were before the integration first rewrote them.
    originals: Vec<Changeset>,
}

impl ClientSession {
    /// A session for a new file (when `state` is `None`) or a file restored from storage.
    pub fn new(ident: SessionIdent, config: SessionConfig, state: Option<PersistedState>) -> Self {
        let (meta, store, pending) = match state {
            Some(s) => (s.meta, s.store, s.pending),
            None => (
                FileMeta::default(),
                Store::new(config.schema.clone()),
                Vec::new(),
            ),
        };
        let subscription_state = if meta.subscriptions.version == 0 {
            SubscriptionState::Complete
        } else {
            SubscriptionState::Pending
        };
        let persisted_schema = store.schema().clone();
        let bodies = unencoded(&pending);
        ClientSession {
            ident,
            config,
            phase: Phase::Disconnected,
            meta,
            store,
            pending,
            pending_acknowledged: 0,
            pending_rewritten: Vec::new(),
            bodies,
            in_flight: 0,
            acknowledged: 0,
            subscription_state,
            subscriptions_sent: 0,
            next_mark: 1,
            state_transfer: None,
            persisted_schema,
            connected: false,
            waiting_for_token: false,
            unbinding: false,
            wants_reconnect: false,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            limits: DecodeLimits::default(),
            leaving: ObjectSet::default(),
            released: ObjectSet::default(),
            ingest_reporter: IngestReporter::default(),
            reported_progress: 0,
            progress_reported_at: 0,
            bootstrap: Bootstrap::default(),
            max_bootstrap_bytes: DEFAULT_MAX_BOOTSTRAP_BYTES,
            storage_writes: true,
            journal: None,
        }
    }

    /// Stops building [`SessionEvent::Persist`] events, for a driver that keeps the file in
    /// memory only and would drop them (each one clones the objects a change touched and the
    /// file's metadata). A driver that stores the file must never call it.
    pub fn discard_storage_writes(&mut self) {
        self.storage_writes = false;
    }

    /// Sets the most bytes of a bootstrap the session holds back until it is complete
    /// ([`DEFAULT_MAX_BOOTSTRAP_BYTES`] unless set). A bootstrap split over several DOWNLOADs is
    /// applied only once all of it has arrived; one larger than this fails the session with
    /// [`ErrorCode::LimitsExceeded`] instead of growing memory without bound.
    pub fn set_max_bootstrap_bytes(&mut self, bytes: usize) {
        self.max_bootstrap_bytes = bytes;
    }

    /// Whether part of a bootstrap has arrived and is held back until the rest does: the store,
    /// cursors and persisted state are still those from before it.
    pub fn bootstrap_in_progress(&self) -> bool {
        !self.bootstrap.downloads.is_empty()
    }

    /// Whether no object is waiting to leave the view (the server re-sends its leaving list on
    /// every new session, so this starts true after a reconnect).
    pub fn view_settled(&self) -> bool {
        self.leaving.is_empty() && self.released.is_empty()
    }

    /// The session ident on its connection.
    pub fn ident(&self) -> SessionIdent {
        self.ident
    }

    /// The local object state.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Identity and cursors.
    pub fn meta(&self) -> &FileMeta {
        &self.meta
    }

    /// Local changesets the server has not integrated yet.
    pub fn pending(&self) -> &[Changeset] {
        &self.pending
    }

    /// Whether the session is bound and exchanging changesets.
    pub fn is_active(&self) -> bool {
        self.phase == Phase::Active
    }

    /// Whether the session stopped for good (unbound or failed).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Unbound | Phase::Failed)
    }

    /// The state of the current subscription set.
    pub fn subscription_state(&self) -> &SubscriptionState {
        &self.subscription_state
    }

    /// The asymmetric objects waiting in the upload queue (Data Ingest): they leave it once the
    /// server acknowledges the changeset that carries them.
    pub fn ingest_queue(&self) -> IngestQueue {
        IngestQueue::of(self.store.schema(), &self.pending)
    }

    /// Runs `f` in a write transaction at time `now_ms`. On success the transaction's changes
    /// become a local changeset queued for upload; on error nothing changes.
    pub fn write<R, E>(
        &mut self,
        now_ms: u64,
        f: impl FnOnce(&mut WriteTransaction<'_>) -> Result<R, E>,
    ) -> Result<(R, Changes), E> {
        let mut tx = self.store.write();
        let result = f(&mut tx)?;
        let (instructions, changes) = tx.commit();
        if !instructions.is_empty() {
            self.commit_local(now_ms, instructions);
            self.ingest_reporter.touch();
            self.report_ingest(now_ms);
        }
        Ok((result, changes))
    }

    /// Records already-applied `instructions` as the next local changeset and queues it for upload.
    fn commit_local(&mut self, now_ms: u64, instructions: Vec<Instruction>) -> u64 {
        self.meta.last_client_version += 1;
        let version = self.meta.last_client_version;
        let meta = ChangesetMeta {
            version,
            last_integrated_remote_version: self.meta.download.server_version,
            origin_timestamp: now_ms,
            origin_file_ident: self.meta.client_file_ident,
        };
        let touched = stored_objects(self.store.schema(), &instructions);
        self.bodies
            .push((version, Some(encode_changeset(&instructions).into())));
        self.pending.push(Changeset { meta, instructions });
        self.persist(touched, PendingChange::Appended);
        self.maybe_upload();
        version
    }

    /// Sends `instructions` as a serialized transaction: the server integrates it only if nothing
    /// concurrent touched the same objects. Allowed only when every upload is acknowledged.
    pub fn transact(
        &mut self,
        now_ms: u64,
        f: impl FnOnce(&mut WriteTransaction<'_>) -> Result<(), String>,
    ) -> Result<u64, SyncError> {
        let bug = |message: String| SyncError {
            code: ErrorCode::TransactBeforeUpload,
            action: ErrorAction::ApplicationBug,
            message,
            compensating: None,
        };
        if self.phase != Phase::Active
            || !self.pending.is_empty()
            || self.in_flight != 0
            || self.meta.transaction.is_some()
        {
            return Err(bug(
                "a transaction needs an active session with every local change uploaded; wait for upload completion first"
                    .into(),
            ));
        }
        let mut tx = self.store.write();
        f(&mut tx).map_err(bug)?;
        // The transaction is not applied locally until the server accepts it.
        let instructions = tx.instructions().to_vec();
        tx.rollback();
        let version = self.meta.last_client_version + 1;
        self.meta.last_client_version = version;
        let changeset = UploadChangeset {
            client_version: version,
            last_integrated_server_version: self.meta.download.server_version,
            origin_timestamp: now_ms,
            origin_file_ident: self.meta.client_file_ident,
            body: encode_changeset(&instructions),
        };
        self.meta.transaction = Some(OutstandingTransaction {
            client_version: version,
            origin_timestamp: now_ms,
            instructions,
        });
        self.persist(Vec::new(), PendingChange::Unchanged);
        self.outbox.push_back(ClientMessage::Transact {
            session: self.ident,
            changeset,
        });
        Ok(version)
    }

    /// Replaces the subscription set; the server is told at once when connected.
    pub fn update_subscriptions(&mut self, mut set: SubscriptionSet) -> u64 {
        if self.subscription_state != SubscriptionState::Complete
            && self.meta.subscriptions.version > 0
        {
            self.events.push_back(SessionEvent::Subscription {
                version: self.meta.subscriptions.version,
                state: SubscriptionState::Superseded,
            });
        }
        set.version = self.meta.subscriptions.version + 1;
        self.meta.subscriptions = set;
        self.subscription_state = SubscriptionState::Pending;
        self.persist(Vec::new(), PendingChange::Unchanged);
        self.send_query_if_needed();
        self.meta.subscriptions.version
    }

    /// Asks to be told (with [`SessionEvent::DownloadComplete`]) once everything the server has now
    /// is integrated locally. Returns the request number.
    pub fn request_download_completion(&mut self) -> u64 {
        let request = self.next_mark;
        self.next_mark += 1;
        if self.phase == Phase::Active {
            self.outbox.push_back(ClientMessage::Mark {
                session: self.ident,
                request,
            });
        }
        request
    }

    /// Sends a new access token (REFRESH) after the old one expired.
    pub fn refresh(&mut self, access_token: String) {
        self.config.access_token = access_token.clone();
        if matches!(
            self.phase,
            Phase::Active | Phase::Identified | Phase::Binding
        ) {
            self.outbox.push_back(ClientMessage::Refresh {
                session: self.ident,
                access_token,
            });
        } else if self.phase == Phase::Failed && self.waiting_for_token {
            // The server ended the session when the token expired: bind again with the new one.
            self.waiting_for_token = false;
            self.phase = Phase::Disconnected;
            if self.connected {
                self.handle_connected();
            }
        }
    }

    /// Ends the session (UNBIND).
    pub fn unbind(&mut self) {
        if !matches!(
            self.phase,
            Phase::Disconnected | Phase::Unbound | Phase::Failed
        ) {
            self.outbox.push_back(ClientMessage::Unbind {
                session: self.ident,
            });
        }
        self.phase = Phase::Unbound;
    }

    /// The connection is up: bind.
    pub fn handle_connected(&mut self) {
        self.connected = true;
        self.unbinding = false;
        if self.is_closed() {
            return;
        }
        self.in_flight = 0;
        self.outbox.clear();
        self.leaving.clear();
        self.released.clear();
        self.bootstrap = Bootstrap::default();
        if self
            .state_transfer
            .as_ref()
            .is_some_and(|t| t.reset.is_some())
        {
            self.send_reset_requests();
            return;
        }
        let need_ident = self.meta.client_file_ident == 0;
        self.outbox.push_back(ClientMessage::Bind {
            session: self.ident,
            path: self.config.path.clone(),
            access_token: self.config.access_token.clone(),
            need_client_file_ident: need_ident,
        });
        if need_ident {
            self.phase = Phase::Binding;
        } else {
            self.send_ident();
        }
    }

    /// The connection dropped; everything unacknowledged will be re-sent after reconnecting.
    pub fn handle_disconnected(&mut self) {
        self.connected = false;
        // A bootstrap cut short was never applied: the server sends it again after IDENT.
        self.bootstrap = Bootstrap::default();
        if !self.is_closed() {
            self.phase = Phase::Disconnected;
        }
        self.in_flight = 0;
        // An outstanding transaction stays outstanding: whether the server integrated it shows in
        // the first DOWNLOAD of the next session (see `settle_transaction`).
        if self.state_transfer.is_some() && self.phase == Phase::Disconnected {
            if let Some(t) = self.state_transfer.as_mut() {
                t.bytes.clear();
                t.server_version = 0;
            }
        }
        self.outbox.clear();
    }

    fn send_ident(&mut self) {
        if self.state_transfer.is_some() {
            self.phase = Phase::FetchingState;
            self.request_state_segment(0);
            return;
        }
        self.outbox.push_back(ClientMessage::Ident {
            session: self.ident,
            client_file_ident: self.meta.client_file_ident,
            client_file_ident_salt: self.meta.client_file_ident_salt,
            download: self.meta.download,
            latest_server_version: self.meta.latest_server_version,
            latest_server_version_salt: self.meta.latest_server_version_salt,
            subscriptions: self.meta.subscriptions.clone(),
        });
        self.subscriptions_sent = self.meta.subscriptions.version;
        self.ingest_reporter.identified();
        self.reported_progress = self.meta.download.server_version;
        if self.meta.subscriptions.version > 0
            && self.subscription_state == SubscriptionState::Pending
        {
            self.set_subscription_state(SubscriptionState::Bootstrapping);
        }
        self.phase = Phase::Identified;
    }

    fn request_state_segment(&mut self, offset: u64) {
        let (server_version, salt) = self
            .state_transfer
            .as_ref()
            .map(|t| (t.server_version, t.salt))
            .unwrap_or((0, 0));
        self.outbox.push_back(ClientMessage::StateRequest {
            session: self.ident,
            server_version,
            server_version_salt: salt,
            offset,
        });
    }

    /// Handles a message from the server for this session.
    pub fn handle_message(&mut self, now_ms: u64, msg: ServerMessage) {
        if self.unbinding {
            self.unbinding = !matches!(msg, ServerMessage::Unbound { .. });
            return;
        }
        if matches!(
            self.phase,
            Phase::Disconnected | Phase::Unbound | Phase::Failed
        ) {
            // Left over from a session that already ended (the server ends a session after an
            // error; this side waits for a reconnect, a refresh or the application).
            return;
        }
        if self.bootstrap_in_progress()
            && matches!(
                msg,
                ServerMessage::Transact { .. } | ServerMessage::Mark { .. }
            )
        {
            self.bootstrap.deferred.push(msg);
            return;
        }
        if let Err(error) = self.dispatch(now_ms, msg) {
            self.fail(error);
        }
        self.ingest_reporter.touch();
        self.report_ingest(now_ms);
    }

    /// Handles one message from the server.
    fn dispatch(&mut self, now_ms: u64, msg: ServerMessage) -> Result<(), SyncError> {
        match msg {
            ServerMessage::Ident {
                client_file_ident,
                client_file_ident_salt,
                ..
            } => self.on_ident(client_file_ident, client_file_ident_salt),
            ServerMessage::Download {
                progress,
                batch_state,
                query_version,
                changesets,
                resets,
                leaving,
                ..
            } => self.on_download(
                now_ms,
                Download {
                    progress,
                    batch_state,
                    query_version,
                    changesets,
                    resets,
                    leaving,
                },
            ),
            // Answers an UNBIND this side sent after an error or on `unbind`; nothing to do.
            ServerMessage::Unbound { .. } => Ok(()),
            ServerMessage::Transact {
                client_version,
                result,
                ..
            } => self.on_transact(client_version, result),
            ServerMessage::Mark { request, .. } => {
                self.events
                    .push_back(SessionEvent::DownloadComplete { request });
                Ok(())
            }
            ServerMessage::State {
                server_version,
                server_version_salt,
                begin_offset,
                total_size,
                segment,
                ..
            } => self.on_state(
                now_ms,
                server_version,
                server_version_salt,
                begin_offset,
                total_size,
                segment,
            ),
            ServerMessage::ClientVersion {
                client_version,
                integrated,
                ..
            } => self.on_client_version(Integrated {
                last: client_version,
                listed: integrated,
            }),
            ServerMessage::Error {
                code,
                message,
                compensating,
                ..
            } => {
                self.on_error(code, message, compensating);
                Ok(())
            }
            ServerMessage::QueryError {
                query_version,
                message,
                ..
            } => {
                if query_version == self.meta.subscriptions.version {
                    self.set_subscription_state(SubscriptionState::Error(message));
                }
                Ok(())
            }
            ServerMessage::Pong { .. } => Ok(()),
        }
    }

    /// Time passed: sends the Data Ingest queue report or the download progress report if one
    /// is due.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.report_ingest(now_ms);
        self.report_progress(now_ms);
    }

    /// When [`ClientSession::handle_timeout`] next needs calling, if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        let ingest = matches!(self.phase, Phase::Identified | Phase::Active)
            .then(|| self.ingest_reporter.deadline())
            .flatten();
        [ingest, self.progress_report_due()]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the download cursor is to be reported in an UPLOAD without changesets: the client
    /// integrated downloads the server has not heard of, and no UPLOAD is in flight or waiting
    /// to carry the cursor. The server's views forget what the cursor shows the client can no
    /// longer need (`FileView::confirm`), so a client that only reads must report it too.
    fn progress_report_due(&self) -> Option<u64> {
        (self.phase == Phase::Active
            && self.meta.download.server_version > self.reported_progress
            && self.in_flight == 0
            && self.pending.is_empty()
            && self.meta.transaction.is_none())
        .then(|| {
            self.progress_reported_at
                .saturating_add(PROGRESS_REPORT_INTERVAL_MS)
        })
    }

    /// Reports the download cursor in an UPLOAD without changesets when one is due.
    fn report_progress(&mut self, now_ms: u64) {
        if self.progress_report_due().is_some_and(|due| now_ms >= due) {
            self.reported_progress = self.meta.download.server_version;
            self.progress_reported_at = now_ms;
            self.outbox.push_back(ClientMessage::Upload {
                session: self.ident,
                download_server_version: self.reported_progress,
                changesets: Vec::new(),
            });
        }
    }

    /// Reports the Data Ingest queue (INGEST_STATUS) when the throttle says one is due.
    fn report_ingest(&mut self, now_ms: u64) {
        if !matches!(self.phase, Phase::Identified | Phase::Active) {
            return;
        }
        let (schema, pending, bodies) = (self.store.schema(), &self.pending, &self.bodies);
        // The bodies kept beside the pending changesets spare encoding them again.
        let with_bodies = pending.iter().enumerate().map(|(index, changeset)| {
            let body = bodies
                .get(index)
                .filter(|(version, _)| *version == changeset.meta.version)
                .and_then(|(_, body)| body.as_deref());
            (changeset, body)
        });
        if let Some(collections) = self
            .ingest_reporter
            .poll(now_ms, || ingest_status(schema, with_bodies, now_ms))
        {
            self.outbox.push_back(ClientMessage::IngestStatus {
                session: self.ident,
                collections,
            });
        }
    }

    fn on_ident(&mut self, ident: u64, salt: u64) -> Result<(), SyncError> {
        if self.phase != Phase::Binding || ident == 0 {
            return Err(protocol_error(
                ErrorCode::BadMessageOrder,
                "unexpected IDENT from the server",
            ));
        }
        if let Some(reset) = self.state_transfer.as_mut().and_then(|t| t.reset.as_mut()) {
            reset.new_ident = Some((ident, salt));
            self.maybe_fetch_reset_state();
            return Ok(());
        }
        self.meta.client_file_ident = ident;
        self.meta.client_file_ident_salt = salt;
        self.acknowledged = 0;
        for changeset in &mut self.pending {
            changeset.meta.origin_file_ident = ident;
        }
        if self.config.async_open
            && self.meta.download.server_version == 0
            && self.pending.is_empty()
            && self.state_transfer.is_none()
        {
            self.state_transfer = Some(StateTransfer::default());
        }
        self.persist(Vec::new(), PendingChange::Replaced);
        self.send_ident();
        Ok(())
    }

    /// A DOWNLOAD arrived. The parts of a bootstrap (`MoreToCome`) are held back; the rest is
    /// integrated together with them, as one unit, once the batch ends.
    fn on_download(&mut self, now_ms: u64, download: Download) -> Result<(), SyncError> {
        if !matches!(self.phase, Phase::Identified | Phase::Active) {
            return Err(protocol_error(
                ErrorCode::BadMessageOrder,
                "DOWNLOAD before the session was identified",
            ));
        }
        if let Some(lost) = self.lost_changes(&download.progress.upload) {
            // The server holds changes this file no longer has: start over from its state,
            // recovering the local changesets it does not hold (see `Integrated::holds`). The
            // server's session is live, so DOWNLOADs it sent before the UNBIND may follow.
            self.on_error(ErrorCode::DivergingHistories, lost, None);
            self.unbinding = true;
            return Ok(());
        }
        let previous = self
            .bootstrap
            .downloads
            .last()
            .map_or(self.meta.download, |d| d.progress.download);
        if download.progress.download < previous {
            return Err(protocol_error(
                ErrorCode::BadProgress,
                "the download cursor moved backwards",
            ));
        }
        if download.batch_state == BatchState::MoreToCome {
            let bytes = self
                .bootstrap
                .bytes
                .saturating_add(download.buffered_bytes());
            if bytes > self.max_bootstrap_bytes {
                return Err(protocol_error(
                    ErrorCode::LimitsExceeded,
                    &format!(
                        "the bootstrap is larger than the {} bytes this client holds back until \
                         it is complete; subscribe to fewer objects or raise the limit",
                        self.max_bootstrap_bytes
                    ),
                ));
            }
            self.bootstrap.bytes = bytes;
            self.bootstrap.downloads.push(download);
            return Ok(());
        }
        let Bootstrap {
            mut downloads,
            deferred,
            ..
        } = std::mem::take(&mut self.bootstrap);
        downloads.push(download);
        self.integrate_downloads(downloads)?;
        for msg in deferred {
            self.dispatch(now_ms, msg)?;
        }
        Ok(())
    }

    /// Integrates downloads (one, or every part of a bootstrap) as one unit: one storage write
    /// and one change notification. If any part fails, nothing of it stays applied: the store
    /// through its undo log, the pending changesets through the journal, the rest from a copy.
    fn integrate_downloads(&mut self, downloads: Vec<Download>) -> Result<(), SyncError> {
        let saved = Saved {
            download: self.meta.download,
            latest_server_version: self.meta.latest_server_version,
            latest_server_version_salt: self.meta.latest_server_version_salt,
            transaction: self.meta.transaction.clone(),
            pending_acknowledged: self.pending_acknowledged,
            pending_rewritten: self.pending_rewritten.clone(),
            leaving: self.leaving.clone(),
            released: self.released.clone(),
            in_flight: self.in_flight,
            events: self.events.len(),
        };
        self.journal = Some(Journal::default());
        let mut undo = Vec::new();
        let mut changes = Changes::default();
        let mut touched = Vec::new();
        let mut first = self.phase == Phase::Identified;
        let mut last = None;
        for download in downloads {
            let result = self.integrate_download(&download, first, &mut undo, &mut changes);
            match result {
                Ok(objects) => touched.extend(objects),
                Err(error) => {
                    self.store.rollback(&mut undo, 0);
                    self.restore_journaled();
                    self.meta.download = saved.download;
                    self.meta.latest_server_version = saved.latest_server_version;
                    self.meta.latest_server_version_salt = saved.latest_server_version_salt;
                    self.meta.transaction = saved.transaction;
                    self.pending_acknowledged = saved.pending_acknowledged;
                    self.pending_rewritten = saved.pending_rewritten;
                    self.bodies = unencoded(&self.pending);
                    self.leaving = saved.leaving;
                    self.released = saved.released;
                    self.in_flight = saved.in_flight;
                    self.events.truncate(saved.events);
                    return Err(error);
                }
            }
            first = false;
            last = Some((download.progress, download.query_version));
        }
        self.journal = None;
        let Some((progress, query_version)) = last else {
            return Ok(());
        };
        let acked = progress.upload.client_version;
        if acked > self.acknowledged {
            self.acknowledged = acked;
            self.events.push_back(SessionEvent::UploadAcknowledged {
                client_version: acked,
            });
        }
        self.persist(touched, PendingChange::Delta);
        if !changes.is_empty() {
            self.events.push_back(SessionEvent::Changes(changes));
        }
        if query_version == self.meta.subscriptions.version
            && self.subscription_state == SubscriptionState::Bootstrapping
        {
            self.set_subscription_state(SubscriptionState::Complete);
        }
        if self.phase == Phase::Identified {
            self.phase = Phase::Active;
            self.send_query_if_needed();
        }
        self.maybe_release();
        self.maybe_upload();
        Ok(())
    }

    /// Integrates one DOWNLOAD into the store, cursors and pending changesets, logging how to
    /// undo the store's changes in `undo`; returns the objects it touched. `first` is set for
    /// the first DOWNLOAD of a session.
    fn integrate_download(
        &mut self,
        download: &Download,
        first: bool,
        undo: &mut Vec<Undo>,
        changes: &mut Changes,
    ) -> Result<Vec<ObjectKey>, SyncError> {
        let progress = download.progress;
        let mut touched = Vec::new();
        // Consecutive changesets that name the same last integrated client version are
        // transformed against the pending changesets in one go (same result as one by one,
        // since transformation is consistent under splitting, but the work is shared).
        let mut last_version = self.meta.download.server_version;
        let mut rest = download.changesets.iter().peekable();
        while let Some(first) = rest.next() {
            let lirv = first.last_integrated_client_version;
            let mut run = vec![first];
            while let Some(next) = rest.next_if(|dc| dc.last_integrated_client_version == lirv) {
                run.push(next);
            }
            for dc in &run {
                if dc.server_version <= last_version
                    || dc.server_version > progress.download.server_version
                {
                    return Err(protocol_error(
                        ErrorCode::BadProgress,
                        "downloaded changesets are out of order",
                    ));
                }
                last_version = dc.server_version;
            }
            if lirv > self.meta.last_client_version {
                return Err(protocol_error(
                    ErrorCode::BadProgress,
                    "the server claims to have integrated a client version this file never made",
                ));
            }
            self.drop_acknowledged(lirv);
            if self
                .meta
                .transaction
                .as_ref()
                .is_some_and(|t| t.client_version <= lirv)
            {
                touched.extend(self.settle_transaction(changes, true, progress.upload, undo)?);
            }
            let mut remote = run
                .iter()
                .map(|dc| {
                    let instructions = decode_changeset(&dc.body, &self.limits).map_err(|e| {
                        protocol_error(
                            ErrorCode::BadChangeset,
                            &format!("downloaded changeset {}: {e}", dc.server_version),
                        )
                    })?;
                    Ok(Changeset {
                        meta: ChangesetMeta {
                            version: dc.server_version,
                            last_integrated_remote_version: lirv,
                            origin_timestamp: dc.origin_timestamp,
                            origin_file_ident: dc.origin_file_ident,
                        },
                        instructions,
                    })
                })
                .collect::<Result<Vec<_>, SyncError>>()?;
            // Each downloaded changeset is applied (and freed) as soon as it is transformed,
            // while it is still in cache.
            self.note_rewritten(&remote);
            let (store, meta, storage_writes) =
                (&mut self.store, &mut self.meta, self.storage_writes);
            let apply = |changeset: &mut Changeset| {
                let instructions = std::mem::take(&mut changeset.instructions);
                if storage_writes {
                    touched.extend(touched_objects(&instructions));
                }
                store
                    .apply_logged(&instructions, changes, undo)
                    .map_err(|e| {
                        protocol_error(
                            ErrorCode::BadChangeset,
                            &format!("cannot apply downloaded changeset: {e}"),
                        )
                    })?;
                meta.download = DownloadCursor {
                    server_version: changeset.meta.version,
                    last_integrated_client_version: lirv,
                };
                Ok(())
            };
            if self.pending.is_empty() {
                // Nothing to transform them against (the usual case for a reader).
                remote.iter_mut().try_for_each(apply)?;
            } else {
                transform_each(&mut self.pending, &mut remote, apply).map_err(|e| match e {
                    EachError::Transform(e) => diverged(&e),
                    EachError::Each(e) => e,
                })?;
            }
        }
        if progress.download.last_integrated_client_version > self.meta.last_client_version {
            return Err(protocol_error(
                ErrorCode::BadProgress,
                "upload progress names a client version never made",
            ));
        }
        self.apply_resets(&download.resets, changes, &mut touched, undo)?;
        if !download.leaving.is_empty() {
            let instructions = decode_changeset(&download.leaving, &self.limits).map_err(|e| {
                protocol_error(ErrorCode::BadChangeset, &format!("leaving list: {e}"))
            })?;
            for object in object_keys(&instructions) {
                self.leaving.insert(object);
            }
        }
        self.meta.download = progress.download;
        self.meta.latest_server_version = progress.latest_server_version;
        self.meta.latest_server_version_salt = progress.latest_server_version_salt;
        self.drop_acknowledged(progress.download.last_integrated_client_version);
        if let Some(version) = self.meta.transaction.as_ref().map(|t| t.client_version) {
            if version <= progress.download.last_integrated_client_version {
                touched.extend(self.settle_transaction(changes, true, progress.upload, undo)?);
            } else if first && progress.upload.client_version < version {
                // First DOWNLOAD after a reconnect, and the server never integrated it.
                touched.extend(self.settle_transaction(changes, false, progress.upload, undo)?);
            }
        }
        // The next UPLOAD waits until this file has downloaded past the integration of the
        // previous one, so every UPLOAD's base includes all of this file's integrated changes.
        if self.in_flight != 0 && progress.download.last_integrated_client_version >= self.in_flight
        {
            self.in_flight = 0;
        }
        Ok(touched)
    }

    /// Applies the server's object resets (see [`crate::server::view`]): each replaces the local
    /// copy of an object outside transformation and drops every pending local write to it (the
    /// server refuses those writes, as their base is older than the reset).
    fn apply_resets(
        &mut self,
        resets: &[u8],
        changes: &mut Changes,
        touched: &mut Vec<ObjectKey>,
        undo: &mut Vec<Undo>,
    ) -> Result<(), SyncError> {
        if resets.is_empty() {
            return Ok(());
        }
        let instructions = decode_changeset(resets, &self.limits)
            .map_err(|e| protocol_error(ErrorCode::BadChangeset, &format!("resets: {e}")))?;
        for instruction in instructions {
            if let Instruction::EraseObject { collection, key } = &instruction {
                let object = Some((collection.as_str(), key));
                for index in 0..self.pending.len() {
                    if !self.pending[index]
                        .instructions
                        .iter()
                        .any(|i| i.object() == object)
                    {
                        continue;
                    }
                    self.journal_pending(index);
                    let changeset = &mut self.pending[index];
                    changeset.instructions.retain(|i| i.object() != object);
                    self.pending_rewritten.push(changeset.meta.version);
                    forget_body(&mut self.bodies, changeset.meta.version);
                }
                self.store.evict_logged(collection, key, changes, undo);
                let object = (collection.clone(), key.clone());
                self.leaving.remove(&object);
                self.released.remove(&object);
                touched.push(object);
                continue;
            }
            self.store
                .apply_logged(std::slice::from_ref(&instruction), changes, undo)
                .map_err(|e| {
                    protocol_error(
                        ErrorCode::BadChangeset,
                        &format!("cannot apply an object reset: {e}"),
                    )
                })?;
        }
        Ok(())
    }

    /// Releases the objects that left the view and that no pending change touches.
    fn maybe_release(&mut self) {
        // A leaving object stays leaving while it is absent: the server hints it once per
        // session and forgets the hint only when it sees the object erased at a view check, so
        // an object erased and re-created between two checks (locally or by others) is never
        // hinted again. Releasing an erased object costs one reset that erases nothing.
        let store = &self.store;
        self.released.retain(|(c, k)| store.get(c, k).is_some());
        if self.phase != Phase::Active || self.leaving.is_empty() {
            return;
        }
        let pending = &self.pending;
        let transaction = self.meta.transaction.as_ref();
        let mut free: Vec<ObjectKey> = Vec::new();
        self.leaving.retain(|object| {
            let (collection, key) = object;
            let touches = |i: &Instruction| i.object() == Some((collection.as_str(), key));
            let touched = pending.iter().any(|c| c.instructions.iter().any(touches))
                || transaction.is_some_and(|t| t.instructions.iter().any(touches));
            if !touched {
                free.push(object.clone());
            }
            touched
        });
        if free.is_empty() {
            return;
        }
        for object in &free {
            self.released.insert(object.clone());
        }
        self.outbox.push_back(ClientMessage::Release {
            session: self.ident,
            objects: encode_object_keys(&free),
        });
    }

    fn on_transact(
        &mut self,
        client_version: u64,
        result: TransactResult,
    ) -> Result<(), SyncError> {
        if self
            .meta
            .transaction
            .as_ref()
            .is_none_or(|t| t.client_version != client_version)
        {
            return Err(protocol_error(
                ErrorCode::BadMessageOrder,
                "TRANSACT answer for no outstanding transaction",
            ));
        }
        let made = self
            .meta
            .transaction
            .as_ref()
            .map_or(0, |t| t.origin_timestamp);
        let mut changes = Changes::default();
        let (accepted, reported) = match result {
            TransactResult::Accepted { server_version } => (
                true,
                UploadCursor {
                    client_version,
                    last_integrated_server_version: server_version,
                    origin_timestamp: made,
                },
            ),
            rejected => {
                self.meta.transaction = None;
                self.persist(Vec::new(), PendingChange::Unchanged);
                self.events.push_back(SessionEvent::Transact {
                    client_version,
                    result: rejected,
                });
                self.maybe_upload();
                return Ok(());
            }
        };
        let touched = self.settle_transaction(&mut changes, accepted, reported, &mut Vec::new())?;
        self.persist(touched, PendingChange::Delta);
        if !changes.is_empty() {
            self.events.push_back(SessionEvent::Changes(changes));
        }
        self.maybe_upload();
        Ok(())
    }

    /// Ends the outstanding transaction: applies it locally if the server integrated it (it was
    /// never applied before, and being accepted means nothing concurrent touched its objects, so
    /// applying it now commutes with every download not yet integrated), and reports the outcome.
    fn settle_transaction(
        &mut self,
        changes: &mut Changes,
        integrated: bool,
        upload: UploadCursor,
        undo: &mut Vec<Undo>,
    ) -> Result<Vec<(String, crate::value::PrimaryKey)>, SyncError> {
        let Some(OutstandingTransaction {
            client_version,
            origin_timestamp,
            instructions,
        }) = self.meta.transaction.take()
        else {
            return Ok(Vec::new());
        };
        if integrated {
            let server_version = if upload.client_version == client_version {
                upload.last_integrated_server_version
            } else {
                0
            };
            // Local writes made while the transaction was outstanding come after it in the
            // server's order: integrate it like a downloaded changeset.
            let mut integrated = [Changeset {
                meta: ChangesetMeta {
                    version: server_version,
                    last_integrated_remote_version: client_version,
                    origin_timestamp,
                    origin_file_ident: self.meta.client_file_ident,
                },
                instructions,
            }];
            self.transform_pending(&mut integrated)?;
            let [tx] = integrated;
            self.store
                .apply_logged(&tx.instructions, changes, undo)
                .map_err(|e| {
                    protocol_error(
                        ErrorCode::BadChangeset,
                        &format!("cannot apply accepted transaction: {e}"),
                    )
                })?;
            // The next UPLOAD waits until the download cursor covers the transaction.
            self.in_flight = self.in_flight.max(client_version);
            self.events.push_back(SessionEvent::Transact {
                client_version,
                result: TransactResult::Accepted { server_version },
            });
            return Ok(touched_objects(&tx.instructions));
        }
        let result = TransactResult::Rejected {
            code: ErrorCode::ConnectionClosed,
            reason: "the connection closed before the server integrated the transaction; retry it"
                .into(),
        };
        self.events.push_back(SessionEvent::Transact {
            client_version,
            result,
        });
        Ok(Vec::new())
    }

    fn on_state(
        &mut self,
        now_ms: u64,
        server_version: u64,
        salt: u64,
        begin: u64,
        total: u64,
        segment: Vec<u8>,
    ) -> Result<(), SyncError> {
        let limit = self.limits.max_inflated_bytes as u64;
        let transfer = match (self.phase, self.state_transfer.as_mut()) {
            (Phase::FetchingState, Some(t)) => t,
            _ => {
                return Err(protocol_error(
                    ErrorCode::BadMessageOrder,
                    "STATE without a STATE_REQUEST",
                ))
            }
        };
        if total > limit {
            return Err(protocol_error(
                ErrorCode::LimitsExceeded,
                "the server state is larger than this client accepts",
            ));
        }
        if begin != transfer.bytes.len() as u64
            || (transfer.server_version != 0 && transfer.server_version != server_version)
        {
            return Err(protocol_error(
                ErrorCode::BadProgress,
                "STATE segment does not continue the transfer",
            ));
        }
        transfer.server_version = server_version;
        transfer.salt = salt;
        transfer.total = total;
        transfer.bytes.extend_from_slice(&segment);
        if (transfer.bytes.len() as u64) < total {
            let offset = transfer.bytes.len() as u64;
            if segment.is_empty() {
                return Err(protocol_error(
                    ErrorCode::BadProgress,
                    "empty STATE segment before the end",
                ));
            }
            self.request_state_segment(offset);
            return Ok(());
        }
        let transfer = self.state_transfer.take().unwrap_or_default();
        if transfer.reset.is_none() && !self.pending.is_empty() {
            // Local writes were made on the empty file while the state was in transit. Replaying
            // them on the state could fail; downloading the history instead integrates them by
            // transformation, losing nothing.
            self.send_ident();
            return Ok(());
        }
        let instructions = decode_changeset(&transfer.bytes, &self.limits)
            .map_err(|e| protocol_error(ErrorCode::BadChangeset, &format!("server state: {e}")))?;
        // The state carries the server's schema; what the app declares beyond it is added below
        // as a local write, so that a development-mode server learns it from this file too.
        let mut store = Store::new(Schema::default());
        let mut changes = Changes::default();
        store.apply(&instructions, &mut changes).map_err(|e| {
            protocol_error(
                ErrorCode::BadChangeset,
                &format!("cannot apply server state: {e}"),
            )
        })?;
        let mut touched = all_objects(&self.store);
        self.store = store;
        touched.extend(all_objects(&self.store));
        self.meta.download = DownloadCursor {
            server_version: transfer.server_version,
            last_integrated_client_version: 0,
        };
        self.meta.latest_server_version = transfer.server_version;
        self.meta.latest_server_version_salt = transfer.salt;
        let Some(reset) = transfer.reset else {
            self.persist(touched, PendingChange::Replaced);
            self.events.push_back(SessionEvent::Changes(changes));
            self.add_schema_after_state(now_ms)?;
            self.send_ident();
            return Ok(());
        };
        // The reset completes: adopt the new file identity, then re-apply what the server never
        // integrated from the old file (client versions keep counting up, so none is reused).
        let (ident, salt) = reset.new_ident.unwrap_or_default();
        self.meta.client_file_ident = ident;
        self.meta.client_file_ident_salt = salt;
        self.acknowledged = 0;
        let integrated = reset.integrated.unwrap_or_default();
        self.bodies.clear();
        let candidates: Vec<Changeset> = std::mem::take(&mut self.pending)
            .into_iter()
            .filter(|c| !integrated.holds(&c.meta))
            .collect();
        let (recover, mut discarded) = match self.config.reset_mode {
            ResetMode::Recover => (candidates, 0),
            ResetMode::Discard => (Vec::new(), candidates.len()),
        };
        self.persist(touched, PendingChange::Replaced);
        // Before the recovered changesets, which may use what only the app declares.
        self.add_schema_after_state(now_ms)?;
        let mut recovered = 0;
        for changeset in recover {
            let mut tx = self.store.write();
            match changeset
                .instructions
                .iter()
                .try_for_each(|i| tx.replay(i.clone()))
            {
                Ok(()) => {
                    let (instructions, c) = tx.commit();
                    changes.merge(c);
                    if !instructions.is_empty() {
                        self.commit_local(now_ms, instructions);
                    }
                    recovered += 1;
                }
                Err(_) => {
                    drop(tx);
                    discarded += 1;
                }
            }
        }
        self.events.push_back(SessionEvent::ClientReset {
            recovered,
            discarded,
        });
        self.events.push_back(SessionEvent::Changes(changes));
        self.send_ident();
        Ok(())
    }

    /// Adds the declared schema to a store just rebuilt from the server's state.
    fn add_schema_after_state(&mut self, now_ms: u64) -> Result<(), SyncError> {
        let declared = self.config.schema.clone();
        self.add_declared_schema(now_ms, &declared)
            .map(drop)
            .map_err(|e| {
                protocol_error(
                    ErrorCode::InvalidSchemaChange,
                    &format!("the server's schema conflicts with the app's: {e}"),
                )
            })
    }

    fn on_client_version(&mut self, integrated: Integrated) -> Result<(), SyncError> {
        let Some(reset) = self.state_transfer.as_mut().and_then(|t| t.reset.as_mut()) else {
            return Err(protocol_error(
                ErrorCode::BadMessageOrder,
                "CLIENT_VERSION without a request",
            ));
        };
        reset.integrated = Some(integrated);
        self.maybe_fetch_reset_state();
        Ok(())
    }

    fn on_error(
        &mut self,
        code: ErrorCode,
        message: String,
        compensating: Option<CompensatingWrite>,
    ) {
        let error = SyncError {
            code,
            action: code.action(),
            message,
            compensating,
        };
        match error.action {
            ErrorAction::Warning => self.events.push_back(SessionEvent::Error(error)),
            ErrorAction::Transient => {
                self.bootstrap = Bootstrap::default();
                self.events.push_back(SessionEvent::Error(error));
                self.phase = Phase::Disconnected;
                self.wants_reconnect = true;
            }
            ErrorAction::ClientReset => {
                self.events.push_back(SessionEvent::Error(error));
                self.outbox.push_back(ClientMessage::Unbind {
                    session: self.ident,
                });
                self.begin_reset();
            }
            _ => self.fail(error),
        }
    }

    /// Starts a client reset: bind again for a new client file ident, ask which client version
    /// the server integrated from the old file (so recovery re-applies only the rest), then fetch
    /// the server's state. Nothing of the old file changes until the state is complete.
    fn begin_reset(&mut self) {
        let old = (
            self.meta.client_file_ident,
            self.meta.client_file_ident_salt,
        );
        let reset = Reset {
            old_ident: (old.0 != 0).then_some(old),
            ..Reset::default()
        };
        self.bootstrap = Bootstrap::default();
        self.state_transfer = Some(StateTransfer {
            reset: Some(reset),
            ..StateTransfer::default()
        });
        self.in_flight = 0;
        self.send_reset_requests();
    }

    /// (Re)starts the requests of a reset: a new ident, and the old file's client version.
    fn send_reset_requests(&mut self) {
        let Some(transfer) = self.state_transfer.as_mut() else {
            return;
        };
        transfer.bytes.clear();
        transfer.server_version = 0;
        let Some(reset) = transfer.reset.as_mut() else {
            return;
        };
        reset.new_ident = None;
        let ask = reset.old_ident.filter(|_| reset.integrated.is_none());
        let from_client_version = self
            .pending
            .first()
            .map_or(self.meta.last_client_version.saturating_add(1), |c| {
                c.meta.version
            });
        self.outbox.push_back(ClientMessage::Bind {
            session: self.ident,
            path: self.config.path.clone(),
            access_token: self.config.access_token.clone(),
            need_client_file_ident: true,
        });
        if let Some((client_file_ident, client_file_ident_salt)) = ask {
            self.outbox.push_back(ClientMessage::ClientVersionRequest {
                session: self.ident,
                client_file_ident,
                client_file_ident_salt,
                from_client_version,
            });
        }
        self.phase = Phase::Binding;
    }

    /// Once a reset has its new ident and knows what the server integrated, fetch the state.
    fn maybe_fetch_reset_state(&mut self) {
        let ready = self
            .state_transfer
            .as_ref()
            .and_then(|t| t.reset.as_ref())
            .is_some_and(|r| {
                r.new_ident.is_some() && (r.old_ident.is_none() || r.integrated.is_some())
            });
        if ready {
            self.phase = Phase::FetchingState;
            self.request_state_segment(0);
        }
    }

    fn fail(&mut self, error: SyncError) {
        // The server ends a session after any error that is not a warning and waits for UNBIND.
        // An expired token waits for `refresh`, which binds again; local writes keep working and
        // stay pending meanwhile, so nothing is lost.
        self.waiting_for_token = error.code.action() == ErrorAction::RefreshToken;
        self.bootstrap = Bootstrap::default();
        self.events.push_back(SessionEvent::Error(error));
        if self.connected && !matches!(self.phase, Phase::Unbound | Phase::Failed) {
            self.outbox.push_back(ClientMessage::Unbind {
                session: self.ident,
            });
        }
        self.phase = Phase::Failed;
    }

    /// Whether the session asks its connection to reconnect (after a transient session error).
    pub fn take_reconnect_request(&mut self) -> bool {
        std::mem::take(&mut self.wants_reconnect)
    }

    fn set_subscription_state(&mut self, state: SubscriptionState) {
        if self.subscription_state != state {
            self.subscription_state = state.clone();
            self.events.push_back(SessionEvent::Subscription {
                version: self.meta.subscriptions.version,
                state,
            });
        }
    }

    fn send_query_if_needed(&mut self) {
        if self.phase == Phase::Active && self.subscriptions_sent < self.meta.subscriptions.version
        {
            self.subscriptions_sent = self.meta.subscriptions.version;
            self.outbox.push_back(ClientMessage::Query {
                session: self.ident,
                subscriptions: self.meta.subscriptions.clone(),
            });
            self.set_subscription_state(SubscriptionState::Bootstrapping);
        }
    }

    fn maybe_upload(&mut self) {
        if self.phase != Phase::Active || self.in_flight != 0 || self.meta.transaction.is_some() {
            return;
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        for (index, changeset) in self.pending.iter().enumerate() {
            if batch.len() >= MAX_UPLOAD_CHANGESETS
                || (bytes >= MAX_UPLOAD_BYTES && !batch.is_empty())
            {
                break;
            }
            // A changeset restored from storage or rewritten is encoded here, once.
            let version = changeset.meta.version;
            let cached = self.bodies.get_mut(index).filter(|(v, _)| *v == version);
            let body = match cached {
                Some((_, Some(body))) => body.to_vec(),
                Some((_, missing)) => {
                    let body = encode_changeset(&changeset.instructions);
                    *missing = Some(body.as_slice().into());
                    body
                }
                None => encode_changeset(&changeset.instructions),
            };
            bytes += body.len();
            batch.push(UploadChangeset {
                client_version: changeset.meta.version,
                last_integrated_server_version: self.meta.download.server_version,
                origin_timestamp: changeset.meta.origin_timestamp,
                origin_file_ident: self.meta.client_file_ident,
                body,
            });
        }
        if let Some(last) = batch.last() {
            self.in_flight = last.client_version;
            self.reported_progress = self.meta.download.server_version;
            self.outbox.push_back(ClientMessage::Upload {
                session: self.ident,
                download_server_version: self.reported_progress,
                changesets: batch,
            });
        }
    }

    /// Why the server's upload cursor shows that this file lost changesets the server integrated
    /// from it (storage that did not keep a commit, or a file restored from a copy), if it does:
    /// the cursor names a client version this file never made, or one this file holds a
    /// different changeset under. Dropping local changesets by that cursor would lose them.
    fn lost_changes(&self, upload: &UploadCursor) -> Option<String> {
        if upload.client_version > self.meta.last_client_version {
            return Some(format!(
                "the server integrated client version {} from this file, which holds changes only \
                 up to version {}: the file lost changes (storage that did not keep a commit, or a \
                 file restored from a copy), so it resets",
                upload.client_version, self.meta.last_client_version
            ));
        }
        let ours = match self
            .pending
            .binary_search_by_key(&upload.client_version, |c| c.meta.version)
        {
            Ok(index) => self.pending.get(index).map(|c| c.meta.origin_timestamp),
            Err(_) => self
                .meta
                .transaction
                .as_ref()
                .filter(|t| t.client_version == upload.client_version)
                .map(|t| t.origin_timestamp),
        };
        let made = ours.filter(|made| *made != upload.origin_timestamp)?;
        Some(format!(
            "the server integrated client version {} from a changeset made at {} ms, and this file \
             holds one made at {made} ms under that version: the file lost changes (storage that \
             did not keep a commit, or a file restored from a copy), so it resets",
            upload.client_version, upload.origin_timestamp
        ))
    }

    /// Drops the pending changesets up to client version `through`: the server integrated them.
    fn drop_acknowledged(&mut self, through: u64) {
        // Pending changesets are in version order.
        let dropped = self.pending.partition_point(|p| p.meta.version <= through);
        if dropped == 0 {
            return;
        }
        let rest = self.pending.split_off(dropped);
        let mut gone = std::mem::replace(&mut self.pending, rest);
        if let Some(journal) = &mut self.journal {
            journal.dropped.append(&mut gone);
        }
        self.pending_acknowledged = self.pending_acknowledged.max(through);
        self.bodies.retain(|(version, _)| *version > through);
    }

    /// Keeps a copy of the pending changeset at `index` in the journal, if an integration is
    /// under way and it has none yet, before the integration changes it.
    fn journal_pending(&mut self, index: usize) {
        let (Some(journal), Some(changeset)) = (&mut self.journal, self.pending.get(index)) else {
            return;
        };
        let version = changeset.meta.version;
        if !journal.originals.iter().any(|c| c.meta.version == version) {
            journal.originals.push(changeset.clone());
        }
    }

    /// Puts the journaled pending changesets back as they were before a failed integration.
    fn restore_journaled(&mut self) {
        let Some(journal) = self.journal.take() else {
            return;
        };
        // Every dropped changeset comes before every one still pending.
        let mut pending = journal.dropped;
        pending.append(&mut self.pending);
        self.pending = pending;
        for changeset in journal.originals {
            let version = changeset.meta.version;
            match self
                .pending
                .binary_search_by_key(&version, |c| c.meta.version)
            {
                Ok(index) => self.pending[index] = changeset,
                Err(index) => self.pending.insert(index, changeset),
            }
        }
    }

    /// Transforms the pending changesets against `theirs` (changesets the server integrated
    /// before them), recording which of them the transformation may rewrite.
    fn transform_pending(&mut self, theirs: &mut [Changeset]) -> Result<(), SyncError> {
        self.note_rewritten(theirs);
        transform(&mut self.pending, theirs, None).map_err(|e| diverged(&e))
    }

    /// Records which pending changesets transforming them against `theirs` may rewrite.
    fn note_rewritten(&mut self, theirs: &[Changeset]) {
        for index in possibly_rewritten(&self.pending, theirs) {
            let Some(version) = self.pending.get(index).map(|c| c.meta.version) else {
                continue;
            };
            self.journal_pending(index);
            self.pending_rewritten.push(version);
            forget_body(&mut self.bodies, version);
        }
    }

    fn persist(
        &mut self,
        mut touched: Vec<(String, crate::value::PrimaryKey)>,
        change: PendingChange,
    ) {
        if !self.storage_writes {
            // Nothing keeps the write: only forget what it would have carried.
            self.pending_acknowledged = 0;
            self.pending_rewritten.clear();
            return;
        }
        // Consecutive instructions mostly touch one object: drop those repeats before sorting,
        // and clone each document once.
        touched.dedup();
        crate::sort::sort_by(&mut touched, |a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        touched.dedup();
        let objects: Vec<_> = touched
            .into_iter()
            .map(|(collection, key)| {
                let doc = self.store.get(&collection, &key).cloned();
                (collection, key, doc)
            })
            .collect();
        let schema =
            (self.store.schema() != &self.persisted_schema).then(|| self.store.schema().clone());
        if let Some(schema) = &schema {
            self.persisted_schema = schema.clone();
        }
        let pending = match change {
            PendingChange::Unchanged => PendingUpdate::Unchanged,
            PendingChange::Appended => match self.pending.last() {
                Some(last) => PendingUpdate::Appended {
                    changeset: last.clone(),
                    body: match self.bodies.last() {
                        Some((version, Some(body))) if *version == last.meta.version => {
                            Arc::clone(body)
                        }
                        _ => encode_changeset(&last.instructions).into(),
                    },
                },
                None => PendingUpdate::Replaced(Vec::new()),
            },
            PendingChange::Delta => self.pending_delta(),
            PendingChange::Replaced => {
                self.pending_acknowledged = 0;
                self.pending_rewritten.clear();
                PendingUpdate::Replaced(self.pending.clone())
            }
        };
        self.events.push_back(SessionEvent::Persist(StorageWrite {
            meta: self.meta.clone(),
            objects,
            pending,
            schema,
        }));
    }

    /// The recorded changes to the pending list since the last storage write, which it resets.
    fn pending_delta(&mut self) -> PendingUpdate {
        let acknowledged = std::mem::take(&mut self.pending_acknowledged);
        let mut versions = std::mem::take(&mut self.pending_rewritten);
        let rewritten: Vec<Changeset> = if versions.is_empty() {
            Vec::new()
        } else {
            crate::sort::sort(&mut versions);
            versions.dedup();
            self.pending
                .iter()
                .filter(|c| versions.binary_search(&c.meta.version).is_ok())
                .cloned()
                .collect()
        };
        if acknowledged == 0 && rewritten.is_empty() {
            PendingUpdate::Unchanged
        } else {
            PendingUpdate::Delta {
                acknowledged,
                rewritten,
            }
        }
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<ClientMessage> {
        self.outbox.pop_front()
    }

    /// The next event for the application or driver, if any.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }
}

fn protocol_error(code: ErrorCode, message: &str) -> SyncError {
    SyncError {
        code,
        action: code.action(),
        message: message.to_owned(),
        compensating: None,
    }
}

/// The error for pending changesets that cannot be transformed against downloaded ones.
fn diverged(error: &TransformError) -> SyncError {
    protocol_error(ErrorCode::DivergingHistories, &error.to_string())
}

/// The positions of the changesets of `ours` that transforming them against `theirs` may rewrite:
/// those with an instruction on an object that `theirs` touch, or a schema instruction when
/// `theirs` hold one. This is the transformation's own test of which pairs interact (an
/// instruction never interacts with one on another object), so every other changeset of `ours`
/// comes out of it unchanged.
fn possibly_rewritten(ours: &[Changeset], theirs: &[Changeset]) -> Vec<usize> {
    if ours.is_empty() {
        return Vec::new();
    }
    let mut objects = Vec::new();
    let mut schema = false;
    for instruction in theirs.iter().flat_map(|c| &c.instructions) {
        match instruction.object() {
            Some(object) => objects.push(object),
            None => schema = true,
        }
    }
    if objects.is_empty() && !schema {
        return Vec::new();
    }
    crate::sort::sort(&mut objects);
    objects.dedup();
    let mut rewritten = Vec::new();
    for (index, changeset) in ours.iter().enumerate() {
        if changeset.instructions.iter().any(|i| {
            i.object()
                .map_or(schema, |o| objects.binary_search(&o).is_ok())
        }) {
            rewritten.push(index);
        }
    }
    rewritten
}

/// Cache entries for `pending`, none encoded yet.
fn unencoded(pending: &[Changeset]) -> Vec<(u64, Option<Arc<[u8]>>)> {
    pending.iter().map(|c| (c.meta.version, None)).collect()
}

/// Forgets the encoded body of client version `version` (its changeset was rewritten).
fn forget_body(bodies: &mut [(u64, Option<Arc<[u8]>>)], version: u64) {
    if let Ok(at) = bodies.binary_search_by_key(&version, |(v, _)| *v) {
        if let Some((_, body)) = bodies.get_mut(at) {
            *body = None;
        }
    }
}

/// The top-level objects a list of instructions touches.
fn touched_objects(instructions: &[Instruction]) -> Vec<(String, crate::value::PrimaryKey)> {
    instructions
        .iter()
        .filter_map(|i| i.object())
        .map(|(c, k)| (c.to_owned(), k.clone()))
        .collect()
}

/// The objects of stored (not asymmetric) collections that `instructions` touch. Asymmetric
/// ones are left out before anything is cloned: a batch of ingested objects touches none.
fn stored_objects(
    schema: &Schema,
    instructions: &[Instruction],
) -> Vec<(String, crate::value::PrimaryKey)> {
    // Consecutive instructions mostly name one collection: look each name up once per run.
    let mut last: Option<(&str, bool)> = None;
    let mut out = Vec::new();
    for (collection, key) in instructions.iter().filter_map(Instruction::object) {
        let stored = match last {
            Some((name, stored)) if name == collection => stored,
            _ => {
                let stored = schema.collection(collection).map(|c| c.kind)
                    != Some(CollectionKind::Asymmetric);
                last = Some((collection, stored));
                stored
            }
        };
        if stored {
            out.push((collection.to_owned(), key.clone()));
        }
    }
    out
}

fn all_objects(store: &Store) -> Vec<(String, crate::value::PrimaryKey)> {
    let names: Vec<String> = store.collections().map(str::to_owned).collect();
    names
        .into_iter()
        .flat_map(|c| {
            store
                .objects(&c)
                .map(|(k, _)| (c.clone(), k.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}
