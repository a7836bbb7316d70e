//! The protocol messages, as typed values. Changeset bodies travel encoded (see
//! [`crate::changeset::encode_changeset`]) so that the server can store and forward them
//! without re-encoding.

use crate::protocol::ErrorCode;

/// Identifies one session (one synced database file) on a connection; chosen by the client.
pub type SessionIdent = u64;

/// A changeset carried in an UPLOAD or TRANSACT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadChangeset {
    /// The client version this changeset produced.
    pub client_version: u64,
    /// The last server version the client had integrated when it sent this changeset.
    pub last_integrated_server_version: u64,
    /// Milliseconds since the Unix epoch on the client's clock.
    pub origin_timestamp: u64,
    /// The client file ident of the origin.
    pub origin_file_ident: u64,
    /// The encoded changeset body.
    pub body: Vec<u8>,
}

/// A changeset carried in a DOWNLOAD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadChangeset {
    /// The server version this changeset produced.
    pub server_version: u64,
    /// The last client version of the receiving client integrated before this changeset.
    pub last_integrated_client_version: u64,
    /// Milliseconds since the Unix epoch on the origin's clock.
    pub origin_timestamp: u64,
    /// The client file ident of the origin (0 for the server itself).
    pub origin_file_ident: u64,
    /// The size of the body as the origin uploaded it, before transformation.
    pub original_size: u64,
    /// The encoded (transformed) changeset body.
    pub body: Vec<u8>,
}

/// Where a client stands in the server's history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DownloadCursor {
    /// The last server version integrated by the client.
    pub server_version: u64,
    /// The last client version the server had integrated at `server_version`.
    pub last_integrated_client_version: u64,
}

/// How far the server has integrated a client's uploads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UploadCursor {
    /// The last client version integrated by the server.
    pub client_version: u64,
    /// The server version that integration produced.
    pub last_integrated_server_version: u64,
    /// When the changeset with `client_version` was made (its `origin_timestamp`; 0 when
    /// `client_version` is 0). A client that holds a different changeset under that version lost
    /// changes the server integrated (a file restored from a copy, or storage that did not keep
    /// a commit) and must reset.
    pub origin_timestamp: u64,
}

/// One changeset of a client file that the server integrated, named by what identifies it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IntegratedChangeset {
    /// Its client version.
    pub client_version: u64,
    /// When it was made, in milliseconds since the Unix epoch on the client's clock.
    pub origin_timestamp: u64,
}

/// Progress reported in every DOWNLOAD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyncProgress {
    /// The download cursor after this message's changesets.
    pub download: DownloadCursor,
    /// The upload acknowledgement: how far the server has integrated this client's changesets.
    pub upload: UploadCursor,
    /// The server's latest version when it sent this message.
    pub latest_server_version: u64,
    /// The salt of `latest_server_version`; a mismatch later means the server lost history.
    pub latest_server_version_salt: u64,
}

/// Whether more DOWNLOAD messages of one bootstrap follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BatchState {
    /// A steady-state download, not part of a bootstrap.
    SteadyState,
    /// More messages of this bootstrap follow; do not expose the partial state.
    MoreToCome,
    /// The last message of a bootstrap.
    LastInBatch,
}

/// One named flexible-sync subscription.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subscription {
    /// The subscription's name (unique in its set).
    pub name: String,
    /// The collection it selects from.
    pub collection: String,
    /// The RQL predicate, with arguments already substituted.
    pub query: String,
}

/// A versioned set of subscriptions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubscriptionSet {
    /// The set's version; each change makes a higher one.
    pub version: u64,
    /// The subscriptions in the set.
    pub subscriptions: Vec<Subscription>,
}

/// A message from a client to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientMessage {
    /// Starts a session for one synced file.
    Bind {
        /// The session's ident, unique on the connection.
        session: SessionIdent,
        /// The server file (app partition) to sync, `"flx"` for flexible sync.
        path: String,
        /// The user's access token (browsers cannot set WebSocket headers).
        access_token: String,
        /// Whether the client needs a new client file ident.
        need_client_file_ident: bool,
    },
    /// Identifies the client file and where it stands.
    Ident {
        /// The session.
        session: SessionIdent,
        /// The client file ident allocated by the server.
        client_file_ident: u64,
        /// Its salt.
        client_file_ident_salt: u64,
        /// The client's download cursor.
        download: DownloadCursor,
        /// The latest server version the client has heard of, and its salt.
        latest_server_version: u64,
        /// The salt of `latest_server_version`.
        latest_server_version_salt: u64,
        /// The client's current subscription set.
        subscriptions: SubscriptionSet,
    },
    /// Changesets made on the client, in increasing client version; with none, a report of the
    /// client's download progress.
    Upload {
        /// The session.
        session: SessionIdent,
        /// The client's download cursor (`server_version`): it integrated every change up to
        /// there, and every changeset here is based on it.
        download_server_version: u64,
        /// The changesets.
        changesets: Vec<UploadChangeset>,
    },
    /// A serialized transaction the server accepts only if nothing concurrent touched the same
    /// objects.
    Transact {
        /// The session.
        session: SessionIdent,
        /// The changeset.
        changeset: UploadChangeset,
    },
    /// Ends a session.
    Unbind {
        /// The session.
        session: SessionIdent,
    },
    /// Asks to be told when everything in the server's history now has been downloaded.
    Mark {
        /// The session.
        session: SessionIdent,
        /// Echoed back in the server's MARK.
        request: u64,
    },
    /// Re-authorizes the session with a new access token.
    Refresh {
        /// The session.
        session: SessionIdent,
        /// The new token.
        access_token: String,
    },
    /// Asks for the server's current state (async open).
    StateRequest {
        /// The session.
        session: SessionIdent,
        /// The state's server version (0 for the latest) once the first segment named it.
        server_version: u64,
        /// The salt of `server_version`.
        server_version_salt: u64,
        /// The byte offset of the segment wanted.
        offset: u64,
    },
    /// Asks which client version the server last integrated for a client file (client reset).
    ClientVersionRequest {
        /// The session.
        session: SessionIdent,
        /// The client file.
        client_file_ident: u64,
        /// Its salt.
        client_file_ident_salt: u64,
        /// The first client version the client still holds as a local changeset: CLIENT_VERSION
        /// lists the integrated changesets from this version on.
        from_client_version: u64,
    },
    /// Keepalive; connection-level.
    Ping {
        /// The client's clock when sent, in milliseconds.
        timestamp: u64,
        /// The round-trip time the client measured last, in milliseconds.
        rtt: u64,
    },
    /// Replaces the session's flexible-sync subscriptions.
    Query {
        /// The session.
        session: SessionIdent,
        /// The new subscription set.
        subscriptions: SubscriptionSet,
    },
    /// Gives up objects the server said left the view and that no pending changeset touches.
    Release {
        /// The session.
        session: SessionIdent,
        /// A changeset body of `EraseObject` instructions naming the objects.
        objects: Vec<u8>,
    },
    /// Reports what the client's Data Ingest upload queue still holds (since `eddy-sync/3`).
    IngestStatus {
        /// The session.
        session: SessionIdent,
        /// One entry per asymmetric collection of the client's schema.
        collections: Vec<IngestStatusEntry>,
    },
}

/// What a client's upload queue holds of one asymmetric collection (INGEST_STATUS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestStatusEntry {
    /// The asymmetric collection.
    pub collection: String,
    /// Objects not yet acknowledged by the server.
    pub objects: u64,
    /// Their size as encoded instructions.
    pub bytes: u64,
    /// How long the oldest of them has waited, in milliseconds (0 when none waits).
    pub oldest_age_ms: u64,
}

/// The server's answer to a TRANSACT.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactResult {
    /// Integrated at this server version.
    Accepted {
        /// The server version the transaction produced.
        server_version: u64,
    },
    /// Refused; nothing was integrated.
    Rejected {
        /// The error code.
        code: ErrorCode,
        /// Why.
        reason: String,
    },
}

/// One object whose write the server refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedWrite {
    /// The collection.
    pub collection: String,
    /// The object's primary key, as EJSON.
    pub key: String,
    /// Why the write was refused.
    pub reason: String,
}

/// The server's undo of writes it refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompensatingWrite {
    /// The server version whose changeset restores the refused objects.
    pub server_version: u64,
    /// The refused writes.
    pub rejected: Vec<RejectedWrite>,
}

/// A message from the server to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerMessage {
    /// A newly allocated client file ident.
    Ident {
        /// The session.
        session: SessionIdent,
        /// The new ident.
        client_file_ident: u64,
        /// Its salt.
        client_file_ident_salt: u64,
    },
    /// Changesets from other clients, progress, and upload acknowledgement.
    Download {
        /// The session.
        session: SessionIdent,
        /// Cursors after this message.
        progress: SyncProgress,
        /// Bytes still to download after this message (an estimate).
        downloadable_bytes: u64,
        /// Bootstrap batching.
        batch_state: BatchState,
        /// The subscription set version these changesets are for.
        query_version: u64,
        /// The changesets, in increasing server version.
        changesets: Vec<DownloadChangeset>,
        /// Objects whose local copy the client replaces, after the changesets and outside
        /// transformation: a changeset body (empty for none) holding, per object, `EraseObject`
        /// (drop the local copy and every pending local write to it), then `CreateObject` and
        /// one `Set` per field when the object is in the client's view. See
        /// [`crate::server::view`].
        resets: Vec<u8>,
        /// Objects that left the client's view: a changeset body (empty for none) of `EraseObject`
        /// instructions naming them. The client removes nothing yet; it sends RELEASE for each
        /// once none of its pending changesets touches it.
        leaving: Vec<u8>,
    },
    /// The session ended after an UNBIND (or an error).
    Unbound {
        /// The session.
        session: SessionIdent,
    },
    /// The result of a TRANSACT.
    Transact {
        /// The session.
        session: SessionIdent,
        /// The client version of the transaction.
        client_version: u64,
        /// Accepted or rejected.
        result: TransactResult,
    },
    /// Everything in the history at the time of the client's MARK has been sent.
    Mark {
        /// The session.
        session: SessionIdent,
        /// The client's request number.
        request: u64,
    },
    /// One segment of the server's state.
    State {
        /// The session.
        session: SessionIdent,
        /// The state's server version.
        server_version: u64,
        /// Its salt.
        server_version_salt: u64,
        /// The segment's offset in the whole state.
        begin_offset: u64,
        /// The whole state's size in bytes.
        total_size: u64,
        /// The segment's bytes.
        segment: Vec<u8>,
    },
    /// The last client version integrated for a client file.
    ClientVersion {
        /// The session.
        session: SessionIdent,
        /// The client file.
        client_file_ident: u64,
        /// The last client version integrated.
        client_version: u64,
        /// The integrated changesets from the request's `from_client_version` on, in version
        /// order: at most [`MAX_LISTED_INTEGRATIONS`], the oldest first.
        integrated: Vec<IntegratedChangeset>,
    },
    /// Something the client did or that happened to its session; see [`ErrorCode`].
    Error {
        /// The session, or 0 for a connection-level error.
        session: SessionIdent,
        /// The error code.
        code: ErrorCode,
        /// A human-readable explanation.
        message: String,
        /// For [`ErrorCode::CompensatingWrite`], what was refused.
        compensating: Option<CompensatingWrite>,
    },
    /// Answers a PING.
    Pong {
        /// The PING's timestamp, echoed.
        timestamp: u64,
    },
    /// A subscription set could not be applied.
    QueryError {
        /// The session.
        session: SessionIdent,
        /// The refused set's version.
        query_version: u64,
        /// The error code.
        code: ErrorCode,
        /// What was wrong with which query.
        message: String,
    },
}

impl ClientMessage {
    /// The message's name as in the protocol specification (`"UPLOAD"`).
    pub fn name(&self) -> &'static str {
        match self {
            ClientMessage::Bind { .. } => "BIND",
            ClientMessage::Ident { .. } => "IDENT",
            ClientMessage::Upload { .. } => "UPLOAD",
            ClientMessage::Transact { .. } => "TRANSACT",
            ClientMessage::Unbind { .. } => "UNBIND",
            ClientMessage::Mark { .. } => "MARK",
            ClientMessage::Refresh { .. } => "REFRESH",
            ClientMessage::StateRequest { .. } => "STATE_REQUEST",
            ClientMessage::ClientVersionRequest { .. } => "CLIENT_VERSION_REQUEST",
            ClientMessage::Ping { .. } => "PING",
            ClientMessage::Query { .. } => "QUERY",
            ClientMessage::Release { .. } => "RELEASE",
            ClientMessage::IngestStatus { .. } => "INGEST_STATUS",
        }
    }

    /// The session the message belongs to, or `None` for connection-level messages.
    pub fn session(&self) -> Option<SessionIdent> {
        match self {
            ClientMessage::Ping { .. } => None,
            ClientMessage::Bind { session, .. }
            | ClientMessage::Ident { session, .. }
            | ClientMessage::Upload { session, .. }
            | ClientMessage::Transact { session, .. }
            | ClientMessage::Unbind { session }
            | ClientMessage::Mark { session, .. }
            | ClientMessage::Refresh { session, .. }
            | ClientMessage::StateRequest { session, .. }
            | ClientMessage::ClientVersionRequest { session, .. }
            | ClientMessage::Query { session, .. }
            | ClientMessage::Release { session, .. }
            | ClientMessage::IngestStatus { session, .. } => Some(*session),
        }
    }
}

impl ServerMessage {
    /// The message's name as in the protocol specification (`"DOWNLOAD"`).
    pub fn name(&self) -> &'static str {
        match self {
            ServerMessage::Ident { .. } => "IDENT",
            ServerMessage::Download { .. } => "DOWNLOAD",
            ServerMessage::Unbound { .. } => "UNBOUND",
            ServerMessage::Transact { .. } => "TRANSACT",
            ServerMessage::Mark { .. } => "MARK",
            ServerMessage::State { .. } => "STATE",
            ServerMessage::ClientVersion { .. } => "CLIENT_VERSION",
            ServerMessage::Error { .. } => "ERROR",
            ServerMessage::Pong { .. } => "PONG",
            ServerMessage::QueryError { .. } => "QUERY_ERROR",
        }
    }

    /// The session the message belongs to, or `None` for connection-level messages.
    pub fn session(&self) -> Option<SessionIdent> {
        match self {
            ServerMessage::Pong { .. } => None,
            ServerMessage::Error { session: 0, .. } => None,
            ServerMessage::Ident { session, .. }
            | ServerMessage::Download { session, .. }
            | ServerMessage::Unbound { session }
            | ServerMessage::Transact { session, .. }
            | ServerMessage::Mark { session, .. }
            | ServerMessage::State { session, .. }
            | ServerMessage::ClientVersion { session, .. }
            | ServerMessage::Error { session, .. }
            | ServerMessage::QueryError { session, .. } => Some(*session),
        }
    }
}
