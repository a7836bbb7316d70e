//! Deterministic simulation: one server engine and N client connections in memory, a virtual
//! clock, and a seeded network that delays, disconnects (dropping messages in flight) and keeps
//! clients offline while they write. Servers crash (losing unflushed storage) and restart;
//! clients restart from what they persisted, or from an older copy of it. At quiescence every replica must be identical and
//! every acknowledged changeset must be in the server's durable history.
//!
//! Everything is driven by one seed, so a failing seed replays exactly.

mod trace;
mod workload;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use crate::changeset::Changeset;
use crate::client::{
    ClientConnection, ClientSession, ConnectionAction, ConnectionConfig, PendingUpdate,
    PersistedState, ResetMode, SessionConfig, SessionEvent, SplitMix64,
};
use crate::protocol::{
    decode_server_message, encode_client_message, encode_server_message, BatchState,
    DownloadCursor, MessageLimits, ServerMessage, Subscription, SubscriptionSet,
};
use crate::schema::Schema;
use crate::server::view::{all_objects, Matcher};
use crate::server::{
    snapshot_instructions, AuthError, AuthenticatedUser, Authenticator, ConnectionId,
    MemoryStorage, ServerConfig, ServerEngine, ServerEvent,
};
use crate::store::{Changes, Store};
use crate::value::{Document, PrimaryKey};

pub use workload::{sim_roles, sim_schema};

/// The session ident every simulated client uses on its connection.
const SESSION: u64 = 1;

/// How a simulation run is shaped.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed everything derives from.
    pub seed: u64,
    /// Number of clients.
    pub clients: usize,
    /// Number of random steps before the network heals.
    pub steps: usize,
    /// Longest one-way network latency in milliseconds.
    pub max_latency_ms: u64,
    /// Per-step probability (in 1/1000) that a connected client's connection drops.
    pub disconnect_per_mille: u64,
    /// Per-step probability (in 1/1000) that a client goes offline for a while.
    pub offline_per_mille: u64,
    /// Per-step probability (in 1/1000) that the server crashes and restarts.
    pub server_crash_per_mille: u64,
    /// Per-step probability (in 1/1000) that a client process restarts from its storage.
    pub client_restart_per_mille: u64,
    /// Per-step probability (in 1/1000) of a client storage fault: the first for a client takes a
    /// copy of its storage, the next restarts the client from that copy (a file restored from a
    /// copy, or commits undone by a power loss after the server integrated them).
    pub client_rollback_per_mille: u64,
    /// Per-step probability (in 1/1000) that the server is restored from an older backup,
    /// losing recent history (clients that saw it must reset).
    pub backup_restore_per_mille: u64,
    /// Virtual milliseconds allowed to reach quiescence after the network heals.
    pub settle_budget_ms: u64,
    /// Record every delivered message (decoded) and print the trace in a failure.
    pub trace: bool,
    /// Whether the server enforces [`workload::sim_roles`] (objects with a high `n` are
    /// unreadable, and writes that leave one at `n >= 80` are refused and compensated).
    pub roles: bool,
    /// The server's limit on object resets per DOWNLOAD, when not its default: small limits
    /// split bootstraps over several DOWNLOADs (`MoreToCome` ... `LastInBatch`).
    pub max_reset_bytes: Option<usize>,
    /// The server's limit on changeset bytes per DOWNLOAD, when not its default: small limits
    /// split ordinary history downloads over many DOWNLOADs.
    pub max_download_bytes: Option<usize>,
    /// The server's memory for the latest history entries, when not its default: with small
    /// budgets uploads, downloads and view rechecks read older entries back from storage.
    pub history_cache_bytes: Option<usize>,
}

impl SimConfig {
    /// A configuration with the defaults CI uses.
    pub fn new(seed: u64, clients: usize) -> Self {
        SimConfig {
            seed,
            clients,
            steps: 300,
            max_latency_ms: 80,
            disconnect_per_mille: 15,
            offline_per_mille: 10,
            server_crash_per_mille: 4,
            client_restart_per_mille: 4,
            client_rollback_per_mille: 10,
            backup_restore_per_mille: 1,
            settle_budget_ms: 10 * 60 * 1000,
            trace: false,
            roles: seed % 3 == 0,
            // Half the seeds split bootstraps into DOWNLOADs of a few objects each.
            max_reset_bytes: (seed % 2 == 1).then_some(128 + 128 * (seed / 2 % 6) as usize),
            max_download_bytes: (seed % 2 == 1).then_some(256 + 128 * (seed / 2 % 8) as usize),
            // Two seeds in five hold nothing or a few entries of the history in memory.
            history_cache_bytes: match seed % 5 {
                1 => Some(0),
                3 => Some(4096),
                _ => None,
            },
        }
    }
}

/// Why a run failed.
#[derive(Clone, Debug)]
pub struct SimFailure {
    /// The seed that failed.
    pub seed: u64,
    /// What went wrong.
    pub reason: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {} failed: {}", self.seed, self.reason)
    }
}

/// What a successful run did.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Local changesets committed by clients.
    pub writes: u64,
    /// Asymmetric readings ingested by clients.
    pub ingested: u64,
    /// Readings in the server's storage at the end (fewer than ingested when a backup restore or
    /// a discarding client reset dropped some).
    pub ingested_stored: u64,
    /// Changesets in the server's history at the end.
    pub server_versions: u64,
    /// Server crashes.
    pub server_crashes: u64,
    /// Client restarts.
    pub client_restarts: u64,
    /// Client restarts from an older copy of their storage.
    pub client_rollbacks: u64,
    /// Server restores from an older backup.
    pub backup_restores: u64,
    /// Client resets completed.
    pub client_resets: u64,
    /// Transactions sent.
    pub transacts_sent: u64,
    /// Transactions accepted and rejected by the server.
    pub transacts: (u64, u64),
    /// Download-completion marks reached.
    pub marks: u64,
    /// DOWNLOADs delivered that were parts of a bootstrap with more to come.
    pub bootstrap_parts: u64,
    /// Subscription sets completed, and refused by the server.
    pub subscriptions: (u64, u64),
    /// Writes the server refused and undid: outside the writer's view, and refused by a role.
    pub compensated: (u64, u64),
    /// Connection drops.
    pub disconnects: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Objects in the converged state.
    pub objects: usize,
    /// Properties of `Item` in the converged schema (clients add some in development mode).
    pub item_properties: usize,
    /// Virtual time the run took, in milliseconds.
    pub virtual_ms: u64,
}

/// Accepts tokens of the form `user:<id>`; they never expire.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimAuth;

impl Authenticator for SimAuth {
    fn authenticate(&self, token: &str, _now_ms: u64) -> Result<AuthenticatedUser, AuthError> {
        match token.strip_prefix("user:") {
            Some(id) if !id.is_empty() => Ok(AuthenticatedUser {
                id: id.to_owned(),
                expires_at_ms: u64::MAX,
            }),
            _ => Err(AuthError::Invalid(format!(
                "{token:?} is not a simulation token"
            ))),
        }
    }
}

/// A FIFO link with per-message delivery times (latency varies, order is kept, as on TCP).
#[derive(Debug, Default)]
struct Link {
    to_server: VecDeque<(u64, Vec<u8>)>,
    to_client: VecDeque<(u64, Vec<u8>)>,
}

/// What a client has on disk.
#[derive(Debug, Clone)]
struct Disk {
    meta: crate::client::FileMeta,
    schema: Schema,
    objects: BTreeMap<(String, PrimaryKey), Document>,
    pending: Vec<Changeset>,
}

#[derive(Debug)]
struct SimClient {
    conn: ClientConnection,
    /// The connection id while a socket is open.
    socket: Option<ConnectionId>,
    link: Link,
    offline_until: u64,
    disk: Option<Disk>,
    /// An older copy of `disk`, taken by a storage fault for the next one to restart from.
    copy: Option<Disk>,
    /// Client versions of local commits, per client file ident they were made under.
    written: Vec<u64>,
    /// Keys of the readings ingested by each local commit not yet acknowledged.
    ingests: BTreeMap<u64, Vec<PrimaryKey>>,
    acknowledged: u64,
    file_ident: u64,
    /// The last error the client's session reported, for failure reports.
    last_error: Option<String>,
    /// The download cursor from before the bootstrap the session is holding back, if any.
    bootstrap_from: Option<DownloadCursor>,
}

/// One simulation run.
#[derive(Debug)]
pub struct Simulation {
    config: SimConfig,
    rng: SplitMix64,
    now: u64,
    server: Option<ServerEngine<MemoryStorage, SimAuth>>,
    server_config: ServerConfig,
    clients: Vec<SimClient>,
    next_connection: ConnectionId,
    limits: MessageLimits,
    report: SimReport,
    /// (file ident, client version) of every changeset the server acknowledged.
    acknowledged: BTreeSet<(u64, u64)>,
    /// Keys of every ingested reading the server acknowledged.
    acknowledged_ingests: BTreeSet<PrimaryKey>,
    trace: Vec<String>,
}

impl Simulation {
    /// Sets up a server and `config.clients` clients.
    pub fn new(config: SimConfig) -> Result<Self, SimFailure> {
        let mut rng = SplitMix64(config.seed);
        let schema = sim_schema();
        let mut server_config = ServerConfig::new(schema.clone(), rng.next_u64());
        server_config.state_segment_bytes = 512;
        server_config.development_mode = true;
        if let Some(bytes) = config.max_reset_bytes {
            server_config.max_reset_bytes = bytes;
        }
        if let Some(bytes) = config.max_download_bytes {
            server_config.max_download_bytes = bytes;
        }
        if let Some(bytes) = config.history_cache_bytes {
            server_config.history_cache_bytes = bytes;
        }
        if config.roles {
            server_config.roles = sim_roles().map_err(|e| SimFailure {
                seed: config.seed,
                reason: format!("the simulation's roles do not compile: {e}"),
            })?;
        }
        let server = ServerEngine::new(server_config.clone(), MemoryStorage::new(), SimAuth)
            .map_err(|e| SimFailure {
                seed: config.seed,
                reason: e.to_string(),
            })?;
        let clients = (0..config.clients)
            .map(|i| {
                let mut conn = ClientConnection::new(
                    ConnectionConfig {
                        ping_interval_ms: 20_000,
                        pong_timeout_ms: 10_000,
                        connect_timeout_ms: 5_000,
                        backoff_base_ms: 50,
                        backoff_max_ms: 2_000,
                        seed: rng.next_u64(),
                    },
                    0,
                );
                conn.add_session(ClientSession::new(
                    SESSION,
                    session_config(&schema, i, rng.next_u64()),
                    None,
                ));
                SimClient {
                    conn,
                    socket: None,
                    link: Link::default(),
                    offline_until: 0,
                    disk: None,
                    copy: None,
                    written: Vec::new(),
                    ingests: BTreeMap::new(),
                    acknowledged: 0,
                    file_ident: 0,
                    last_error: None,
                    bootstrap_from: None,
                }
            })
            .collect();
        Ok(Simulation {
            config,
            rng,
            now: 0,
            server: Some(server),
            server_config,
            clients,
            next_connection: 1,
            limits: MessageLimits::default(),
            report: SimReport::default(),
            acknowledged: BTreeSet::new(),
            acknowledged_ingests: BTreeSet::new(),
            trace: Vec::new(),
        })
    }

    /// Runs the random phase, heals the network, drives to quiescence and checks the invariants.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        for _ in 0..self.config.steps {
            self.random_step()?;
            let dt = 1 + self.rng.below(40);
            self.advance(dt)?;
        }
        self.heal_and_settle()?;
        self.check()?;
        self.report.virtual_ms = self.now;
        Ok(self.report)
    }

    fn failure(&self, reason: impl Into<String>) -> SimFailure {
        let mut reason = format!("at t={}ms: {}", self.now, reason.into());
        for line in &self.trace {
            reason.push('\n');
            reason.push_str(line);
        }
        SimFailure {
            seed: self.config.seed,
            reason,
        }
    }

    fn random_step(&mut self) -> Result<(), SimFailure> {
        let c = self.rng.below(self.clients.len() as u64) as usize;
        let roll = self.rng.below(1000);
        let cfg = self.config.clone();
        let mut threshold = cfg.disconnect_per_mille;
        if roll < threshold {
            self.drop_connection(c);
            return Ok(());
        }
        threshold += cfg.offline_per_mille;
        if roll < threshold {
            self.drop_connection(c);
            self.clients[c].offline_until = self.now + 1_000 + self.rng.below(20_000);
            return Ok(());
        }
        threshold += cfg.server_crash_per_mille;
        if roll < threshold {
            return self.crash_server();
        }
        threshold += cfg.client_restart_per_mille;
        if roll < threshold {
            return self.restart_client(c);
        }
        threshold += cfg.client_rollback_per_mille;
        if roll < threshold {
            return self.roll_back_client(c);
        }
        threshold += cfg.backup_restore_per_mille;
        if roll < threshold {
            return self.restore_backup();
        }
        threshold += 10;
        if roll < threshold {
            return self.random_transact(c);
        }
        threshold += 10;
        if roll < threshold {
            if let Some(session) = self.clients[c].conn.session_mut(SESSION) {
                session.request_download_completion();
            }
            return Ok(());
        }
        threshold += 20;
        if roll < threshold {
            let subs = workload::random_subscriptions(&mut self.rng);
            if let Some(session) = self.clients[c].conn.session_mut(SESSION) {
                session.update_subscriptions(subs);
            }
            return Ok(());
        }
        self.random_write(c)
    }

    fn random_write(&mut self, c: usize) -> Result<(), SimFailure> {
        let now = self.now;
        let seed = self.rng.next_u64();
        let client = &mut self.clients[c];
        let Some(session) = client.conn.session_mut(SESSION) else {
            return Ok(());
        };
        let before = session.meta().last_client_version;
        let ops = 1 + seed % 4;
        let mut rng = SplitMix64(seed);
        let result = session.write(now, |tx| {
            let mut ingested = Vec::new();
            for _ in 0..ops {
                if rng.below(5) == 0 {
                    ingested.push(workload::random_ingest(tx, &mut rng)?);
                } else {
                    workload::random_op(tx, &mut rng)?;
                }
            }
            Ok::<_, crate::store::ApplyError>(ingested)
        });
        match result {
            Ok((ingested, _)) => {
                self.report.writes += 1;
                self.report.ingested += ingested.len() as u64;
                let version = self.clients[c]
                    .conn
                    .session(SESSION)
                    .map_or(0, |s| s.meta().last_client_version);
                if version > before {
                    self.clients[c].written.push(version);
                    if !ingested.is_empty() {
                        self.clients[c].ingests.insert(version, ingested);
                    }
                }
                self.pump_client(c)
            }
            Err(e) => Err(self.failure(format!("client {c}: a generated write failed: {e}"))),
        }
    }

    fn random_transact(&mut self, c: usize) -> Result<(), SimFailure> {
        let now = self.now;
        let seed = self.rng.next_u64();
        let Some(session) = self.clients[c].conn.session_mut(SESSION) else {
            return Ok(());
        };
        let mut rng = SplitMix64(seed);
        // A transaction is refused while uploads are outstanding: that is the application's
        // rule, not a failure, so an error here just means no transaction this step.
        if session
            .transact(now, |tx| {
                workload::random_op(tx, &mut rng).map_err(|e| e.to_string())
            })
            .is_ok()
        {
            self.report.transacts_sent += 1;
        }
        self.pump_client(c)
    }

    fn restore_backup(&mut self) -> Result<(), SimFailure> {
        self.report.backup_restores += 1;
        for c in 0..self.clients.len() {
            self.drop_connection(c);
        }
        let Some(server) = self.server.take() else {
            return Ok(());
        };
        let mut storage = server.into_storage();
        let latest = storage.durable_history().len() as u64;
        let keep = latest - self.rng.below(latest.min(20) + 1);
        // What the backup lacks was acknowledged legitimately and is lost with the server's data.
        for entry in storage.restore_backup(keep) {
            self.acknowledged
                .remove(&(entry.origin_file_ident, entry.client_version));
        }
        let kept: BTreeSet<&PrimaryKey> =
            storage.ingested().iter().map(|r| &r.object.key).collect();
        self.acknowledged_ingests.retain(|k| kept.contains(k));
        let server = ServerEngine::new(self.server_config.clone(), storage, SimAuth)
            .map_err(|e| self.failure(format!("server restore: {e}")))?;
        self.server = Some(server);
        Ok(())
    }

    fn drop_connection(&mut self, c: usize) {
        let client = &mut self.clients[c];
        if let Some(socket) = client.socket.take() {
            self.report.disconnects += 1;
            client.link = Link::default();
            client.conn.handle_disconnected(self.now);
            if let Some(server) = self.server.as_mut() {
                server.handle_disconnect(socket);
            }
        }
    }

    fn crash_server(&mut self) -> Result<(), SimFailure> {
        self.report.server_crashes += 1;
        for c in 0..self.clients.len() {
            self.drop_connection(c);
        }
        let Some(server) = self.server.take() else {
            return Ok(());
        };
        let mut storage = server.into_storage();
        storage.crash();
        let server = ServerEngine::new(self.server_config.clone(), storage, SimAuth)
            .map_err(|e| self.failure(format!("server restart: {e}")))?;
        self.server = Some(server);
        Ok(())
    }

    /// A storage fault: takes a copy of the client's storage, or, when it has one, restarts the
    /// client from it. The file then lacks what it wrote since, some of which the server may have
    /// integrated; it must find that out and reset rather than reuse those client versions.
    fn roll_back_client(&mut self, c: usize) -> Result<(), SimFailure> {
        let client = &mut self.clients[c];
        let Some(copy) = client.copy.take() else {
            client.copy = client.disk.clone();
            return Ok(());
        };
        self.report.client_rollbacks += 1;
        if copy.meta.client_file_ident == client.file_ident {
            // Local commits past the copy are gone; those the server acknowledged stay so.
            let last = copy.meta.last_client_version;
            client.written.retain(|v| *v <= last);
            client.ingests.retain(|v, _| *v <= last);
            client.acknowledged = client.acknowledged.min(last);
        } else {
            // The copy is of a file that was reset since: what is tracked is the newer file's.
            client.written.clear();
            client.ingests.clear();
            client.acknowledged = 0;
            client.file_ident = copy.meta.client_file_ident;
        }
        client.disk = Some(copy);
        self.restart_client(c)
    }

    fn restart_client(&mut self, c: usize) -> Result<(), SimFailure> {
        self.report.client_restarts += 1;
        self.drop_connection(c);
        let schema = sim_schema();
        let seed = self.rng.next_u64();
        let state = match self.clients[c].disk.clone() {
            None => None,
            Some(disk) => {
                let mut store = Store::new(schema.clone());
                let mut image = Store::new(disk.schema.clone());
                // Rebuild the object state from the persisted documents.
                for ((collection, key), doc) in &disk.objects {
                    let mut tx = image.write();
                    tx.create(collection, key.clone())
                        .map_err(|e| self.failure(format!("restore: {e}")))?;
                    for (field, value) in doc
                        .iter()
                        .filter(|(f, _)| f.as_str() != crate::schema::PRIMARY_KEY)
                    {
                        let path = crate::changeset::Path::field(
                            collection.clone(),
                            key.clone(),
                            field.clone(),
                        );
                        tx.set(path, value.clone())
                            .map_err(|e| self.failure(format!("restore: {e}")))?;
                    }
                    tx.commit();
                }
                store
                    .apply(&snapshot_instructions(&image), &mut Changes::default())
                    .map_err(|e| self.failure(format!("restore: {e}")))?;
                Some(PersistedState {
                    meta: disk.meta,
                    store,
                    pending: disk.pending,
                })
            }
        };
        let session = ClientSession::new(SESSION, session_config(&schema, c, seed), state);
        let mut conn = ClientConnection::new(
            ConnectionConfig {
                ping_interval_ms: 20_000,
                pong_timeout_ms: 10_000,
                connect_timeout_ms: 5_000,
                backoff_base_ms: 50,
                backoff_max_ms: 2_000,
                seed,
            },
            self.now,
        );
        conn.add_session(session);
        self.clients[c].conn = conn;
        Ok(())
    }

    /// Advances virtual time by `dt` ms in 1 ms ticks of message delivery and timers.
    fn advance(&mut self, dt: u64) -> Result<(), SimFailure> {
        let end = self.now + dt;
        while self.now < end {
            self.now += 1;
            self.tick()?;
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), SimFailure> {
        let now = self.now;
        for c in 0..self.clients.len() {
            self.clients[c].conn.handle_timeout(now);
            self.pump_client(c)?;
            // Deliver messages due to the server.
            while let Some((at, _)) = self.clients[c].link.to_server.front() {
                if *at > now {
                    break;
                }
                let Some((_, frame)) = self.clients[c].link.to_server.pop_front() else {
                    break;
                };
                let Some(socket) = self.clients[c].socket else {
                    break;
                };
                self.report.messages += 1;
                if self.config.trace {
                    let line = match crate::protocol::decode_client_message(&frame, &self.limits) {
                        Ok(msg) => trace::client_message(&msg),
                        Err(e) => format!("undecodable: {e}"),
                    };
                    self.trace.push(format!("{now:>7} c{c} -> server: {line}"));
                }
                if let Some(server) = self.server.as_mut() {
                    server.handle_frame(socket, now, &frame);
                }
            }
            // Deliver messages due to the client.
            while let Some((at, _)) = self.clients[c].link.to_client.front() {
                if *at > now {
                    break;
                }
                let Some((_, frame)) = self.clients[c].link.to_client.pop_front() else {
                    break;
                };
                self.report.messages += 1;
                let msg = decode_server_message(&frame, &self.limits).map_err(|e| {
                    self.failure(format!("client {c} cannot decode a server frame: {e}"))
                })?;
                if self.config.trace {
                    self.trace.push(format!(
                        "{now:>7} server -> c{c}: {}",
                        trace::server_message(&msg)
                    ));
                }
                if matches!(
                    msg,
                    ServerMessage::Download {
                        batch_state: BatchState::MoreToCome,
                        ..
                    }
                ) {
                    self.report.bootstrap_parts += 1;
                }
                let before = self.clients[c]
                    .conn
                    .session_mut(SESSION)
                    .filter(|s| !s.bootstrap_in_progress())
                    .map(|s| s.meta().download);
                self.clients[c].conn.handle_message(now, msg);
                if let Some(cursor) = before {
                    self.clients[c].bootstrap_from = Some(cursor);
                }
                self.pump_client(c)?;
            }
        }
        if let Some(server) = self.server.as_mut() {
            if server.poll_timeout().is_some_and(|t| t <= now) {
                server.handle_timeout(now);
            }
        }
        self.pump_server()
    }

    fn latency(&mut self) -> u64 {
        1 + self.rng.below(self.config.max_latency_ms)
    }

    fn pump_client(&mut self, c: usize) -> Result<(), SimFailure> {
        let now = self.now;
        while let Some(action) = self.clients[c].conn.poll_action() {
            match action {
                ConnectionAction::Connect => {
                    if self.clients[c].offline_until > now || self.server.is_none() {
                        self.clients[c].conn.handle_disconnected(now);
                    } else {
                        let id = self.next_connection;
                        self.next_connection += 1;
                        self.clients[c].socket = Some(id);
                        if let Some(server) = self.server.as_mut() {
                            server.handle_connect(id, now);
                        }
                        self.clients[c].conn.handle_connected(now);
                    }
                }
                ConnectionAction::Close => self.drop_connection(c),
            }
        }
        if let Some(session) = self.clients[c].conn.session_mut(SESSION) {
            if session.take_reconnect_request() {
                self.drop_connection(c);
            }
        }
        while let Some(msg) = self.clients[c].conn.poll_transmit() {
            if self.clients[c].socket.is_none() {
                break;
            }
            let frame = encode_client_message(&msg);
            let at = self.delivery_time(c, true);
            self.clients[c].link.to_server.push_back((at, frame));
        }
        let (events, holding) = match self.clients[c].conn.session_mut(SESSION) {
            Some(session) => (
                std::iter::from_fn(|| session.poll_event()).collect(),
                session
                    .bootstrap_in_progress()
                    .then(|| session.meta().download),
            ),
            None => (Vec::new(), None),
        };
        match (holding, self.clients[c].bootstrap_from) {
            (Some(now), Some(from)) => self.check_held_bootstrap(c, from, now, &events)?,
            _ => self.clients[c].bootstrap_from = None,
        }
        for event in events {
            self.on_client_event(c, event);
        }
        Ok(())
    }

    /// While a client holds back part of a bootstrap, neither the application nor storage may
    /// see any of it: its cursor stays where it was, no download changes are reported, and what
    /// it persists (its own writes) keeps the old cursor.
    fn check_held_bootstrap(
        &self,
        c: usize,
        from: DownloadCursor,
        now: DownloadCursor,
        events: &[SessionEvent],
    ) -> Result<(), SimFailure> {
        let half_applied = now != from
            || events.iter().any(|event| match event {
                SessionEvent::Changes(_) => true,
                SessionEvent::Persist(write) => write.meta.download != from,
                _ => false,
            });
        if half_applied {
            return Err(self.failure(format!(
                "client {c} exposed part of a bootstrap before its last DOWNLOAD"
            )));
        }
        Ok(())
    }

    fn delivery_time(&mut self, c: usize, to_server: bool) -> u64 {
        let latency = self.latency();
        let queue = if to_server {
            &self.clients[c].link.to_server
        } else {
            &self.clients[c].link.to_client
        };
        let last = queue.back().map_or(0, |(at, _)| *at);
        (self.now + latency).max(last)
    }

    fn on_client_event(&mut self, c: usize, event: SessionEvent) {
        let client = &mut self.clients[c];
        match event {
            SessionEvent::Persist(write) => {
                let disk = client.disk.get_or_insert_with(|| Disk {
                    meta: write.meta.clone(),
                    schema: sim_schema(),
                    objects: BTreeMap::new(),
                    pending: Vec::new(),
                });
                if write.meta.client_file_ident != client.file_ident {
                    // A client reset starts a new client file whose versions restart; writes made
                    // before the first ident was allocated keep their versions.
                    if client.file_ident != 0 && write.meta.client_file_ident != 0 {
                        client.written.clear();
                        client.acknowledged = 0;
                    }
                    if write.meta.client_file_ident != 0 {
                        client.file_ident = write.meta.client_file_ident;
                    }
                }
                disk.meta = write.meta;
                match write.pending {
                    PendingUpdate::Unchanged => {}
                    PendingUpdate::Appended { changeset, .. } => disk.pending.push(changeset),
                    PendingUpdate::Delta {
                        acknowledged,
                        rewritten,
                    } => {
                        disk.pending.retain(|c| c.meta.version > acknowledged);
                        for changeset in rewritten {
                            // A put by client version, as every storage keys them.
                            let version = changeset.meta.version;
                            match disk
                                .pending
                                .binary_search_by_key(&version, |c| c.meta.version)
                            {
                                Ok(at) => disk.pending[at] = changeset,
                                Err(at) => disk.pending.insert(at, changeset),
                            }
                        }
                    }
                    PendingUpdate::Replaced(pending) => disk.pending = pending,
                }
                if let Some(schema) = write.schema {
                    disk.schema = schema;
                }
                for (collection, key, doc) in write.objects {
                    match doc {
                        Some(doc) => disk.objects.insert((collection, key), doc),
                        None => disk.objects.remove(&(collection, key)),
                    };
                }
            }
            SessionEvent::UploadAcknowledged { client_version } => {
                client.acknowledged = client.acknowledged.max(client_version);
                let ident = client.file_ident;
                for v in client.written.iter().filter(|v| **v <= client_version) {
                    self.acknowledged.insert((ident, *v));
                }
                client.written.retain(|v| *v > client_version);
                let later = client.ingests.split_off(&(client_version + 1));
                for keys in std::mem::replace(&mut client.ingests, later).into_values() {
                    self.acknowledged_ingests.extend(keys);
                }
            }
            SessionEvent::ClientReset { .. } => {
                // Recovered changes are committed again under new client versions.
                self.report.client_resets += 1;
                client.written.clear();
                client.ingests.clear();
            }
            SessionEvent::DownloadComplete { .. } => self.report.marks += 1,
            SessionEvent::Transact {
                result,
                client_version,
            } => match result {
                crate::protocol::TransactResult::Accepted { .. } => {
                    self.report.transacts.0 += 1;
                    self.acknowledged
                        .insert((client.file_ident, client_version));
                }
                _ => self.report.transacts.1 += 1,
            },
            SessionEvent::Subscription { state, .. } => match state {
                crate::client::SubscriptionState::Complete => self.report.subscriptions.0 += 1,
                crate::client::SubscriptionState::Error(_) => self.report.subscriptions.1 += 1,
                _ => {}
            },
            SessionEvent::Error(error) => {
                for rejected in error.compensating.iter().flat_map(|c| &c.rejected) {
                    if rejected.reason.contains("role") {
                        self.report.compensated.1 += 1;
                    } else {
                        self.report.compensated.0 += 1;
                    }
                }
                client.last_error = Some(format!(
                    "{} at t={}: {}",
                    error.code, self.now, error.message
                ));
            }
            _ => {}
        }
    }

    fn pump_server(&mut self) -> Result<(), SimFailure> {
        loop {
            let next = match self.server.as_mut() {
                Some(server) => server.poll_transmit().map_err(|e| SimFailure {
                    seed: self.config.seed,
                    reason: e.to_string(),
                })?,
                None => None,
            };
            let Some((connection, msg)) = next else { break };
            let Some(c) = self
                .clients
                .iter()
                .position(|cl| cl.socket == Some(connection))
            else {
                continue;
            };
            let frame = encode_server_message(&msg);
            let at = self.delivery_time(c, false);
            self.clients[c].link.to_client.push_back((at, frame));
        }
        let events: Vec<ServerEvent> = match self.server.as_mut() {
            Some(server) => std::iter::from_fn(|| server.poll_event()).collect(),
            None => Vec::new(),
        };
        for event in events {
            if let ServerEvent::CloseConnection { connection } = event {
                if let Some(c) = self
                    .clients
                    .iter()
                    .position(|cl| cl.socket == Some(connection))
                {
                    // The connection-level ERROR still in flight is lost with the socket, as on a
                    // real network; the client reconnects either way.
                    self.drop_connection(c);
                }
            }
        }
        Ok(())
    }

    fn heal_and_settle(&mut self) -> Result<(), SimFailure> {
        for client in &mut self.clients {
            client.offline_until = 0;
            client.conn.resume(self.now);
        }
        let deadline = self.now + self.config.settle_budget_ms;
        while self.now < deadline {
            self.advance(50)?;
            if self.quiescent() {
                return Ok(());
            }
        }
        let status: Vec<String> = self
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let s = c.conn.session(SESSION)?;
                Some(format!(
                    "client {i}: active={} pending={} cursor={} closed={} subscriptions={:?} view settled={} last error: {}",
                    s.is_active(),
                    s.pending().len(),
                    s.meta().download.server_version,
                    s.is_closed(),
                    s.subscription_state(),
                    s.view_settled(),
                    c.last_error.as_deref().unwrap_or("none")
                ))
            })
            .collect();
        Err(self.failure(format!(
            "no quiescence after {} ms (server at version {}): {}",
            self.config.settle_budget_ms,
            self.server.as_ref().map_or(0, |s| s.latest_version()),
            status.join("; ")
        )))
    }

    fn quiescent(&self) -> bool {
        let Some(server) = self.server.as_ref() else {
            return false;
        };
        let latest = server.latest_version();
        self.clients.iter().all(|c| {
            c.link.to_server.is_empty()
                && c.link.to_client.is_empty()
                && c.conn.session(SESSION).is_some_and(|s| {
                    s.is_active()
                        && s.pending().is_empty()
                        && s.meta().download.server_version == latest
                        && s.view_settled()
                        && matches!(
                            s.subscription_state(),
                            crate::client::SubscriptionState::Complete
                                | crate::client::SubscriptionState::Error(_)
                        )
                })
        })
    }

    fn check(&mut self) -> Result<(), SimFailure> {
        let Some(server) = self.server.as_ref() else {
            return Err(self.failure("no server"));
        };
        for (i, client) in self.clients.iter().enumerate() {
            let Some(session) = client.conn.session(SESSION) else {
                continue;
            };
            let matcher = Matcher::new(&session.meta().subscriptions)
                .with_reads(&self.server_config.roles, &format!("u{i}"));
            let expected = &restricted(server.store(), &matcher);
            if session.store() != expected {
                return Err(self.failure(format!(
                    "client {i} diverged from the server's store restricted to its view: client digest {:x}, server digest {:x}\n{}",
                    session.store().digest(),
                    expected.digest(),
                    store_differences(session.store(), expected)
                )));
            }
        }
        for (i, client) in self.clients.iter().enumerate() {
            let Some(session) = client.conn.session(SESSION) else {
                continue;
            };
            let queue = session.ingest_queue();
            if queue.objects != 0 {
                return Err(self.failure(format!(
                    "client {i} still queues {} ingested objects after the network healed",
                    queue.objects
                )));
            }
        }
        let stored: BTreeMap<&PrimaryKey, usize> =
            server
                .storage()
                .ingested()
                .iter()
                .fold(BTreeMap::new(), |mut counts, r| {
                    *counts.entry(&r.object.key).or_default() += 1;
                    counts
                });
        if let Some((key, n)) = stored.iter().find(|(_, n)| **n > 1) {
            return Err(self.failure(format!("reading {key:?} was stored {n} times")));
        }
        if let Some(lost) = self
            .acknowledged_ingests
            .iter()
            .find(|k| !stored.contains_key(k))
        {
            return Err(self.failure(format!(
                "acknowledged reading {lost:?} is not in the server's storage"
            )));
        }
        self.report.ingested_stored = stored.len() as u64;
        let durable: BTreeSet<(u64, u64)> = server
            .storage()
            .durable_history()
            .iter()
            .map(|e| (e.origin_file_ident, e.client_version))
            .collect();
        if let Some(lost) = self.acknowledged.iter().find(|a| !durable.contains(a)) {
            return Err(self.failure(format!(
                "acknowledged changeset {} of client file {} is not in the durable history",
                lost.1, lost.0
            )));
        }
        let expected = server.store();
        self.report.server_versions = server.latest_version();
        self.report.objects = expected.collections().map(|c| expected.len(c)).sum();
        self.report.item_properties = expected
            .schema()
            .collection("Item")
            .map_or(0, |c| c.properties.len());
        Ok(())
    }
}

/// The objects (and schema) two stores disagree on, one line each.
fn store_differences(client: &Store, server: &Store) -> String {
    let mut lines = Vec::new();
    if client.schema() != server.schema() {
        lines.push(format!(
            "schema: client {:?}\n        server {:?}",
            client.schema(),
            server.schema()
        ));
    }
    let mut objects = all_objects(client);
    objects.extend(all_objects(server));
    for (collection, key) in objects {
        let (c, s) = (client.get(&collection, &key), server.get(&collection, &key));
        if c != s {
            lines.push(format!(
                "{collection}[{key:?}]: client {c:?}\n        server {s:?}"
            ));
        }
    }
    lines.join("\n")
}

/// The server's store restricted to a view: what a settled client holds.
fn restricted(store: &Store, matcher: &Matcher) -> Store {
    if matcher.selects_everything(store.schema()) {
        return store.clone();
    }
    let mut out = store.clone();
    let mut changes = crate::store::Changes::default();
    for (collection, key) in all_objects(store) {
        if !matcher.selects(store, &collection, &key) {
            out.evict(&collection, &key, &mut changes);
        }
    }
    out
}

fn session_config(schema: &Schema, index: usize, seed: u64) -> SessionConfig {
    SessionConfig {
        path: "flx".into(),
        access_token: format!("user:u{index}"),
        schema: schema.clone(),
        reset_mode: ResetMode::Recover,
        async_open: seed % 2 == 0,
    }
}

/// A subscription set selecting everything of the simulation's collection.
pub fn everything() -> SubscriptionSet {
    SubscriptionSet {
        version: 0,
        subscriptions: vec![Subscription {
            name: "all".into(),
            collection: "Item".into(),
            query: "TRUEPREDICATE".into(),
        }],
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64, clients: usize) -> Result<SimReport, SimFailure> {
    Simulation::new(SimConfig::new(seed, clients))?.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_seeds_converge() {
        for seed in 0..20 {
            if let Err(failure) = run_seed(seed, 3) {
                panic!("{failure}");
            }
        }
    }

    #[test]
    fn a_calm_network_converges_without_faults() {
        let mut config = SimConfig::new(99, 4);
        config.disconnect_per_mille = 0;
        config.offline_per_mille = 0;
        config.server_crash_per_mille = 0;
        config.client_restart_per_mille = 0;
        config.client_rollback_per_mille = 0;
        let report = Simulation::new(config).and_then(Simulation::run).unwrap();
        assert!(report.writes > 100);
        assert!(report.server_versions > 100);
        assert!(
            report.item_properties
                > sim_schema()
                    .collection("Item")
                    .map_or(0, |c| c.properties.len())
        );
    }
}
