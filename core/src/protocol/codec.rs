//! The binary codec of protocol messages: one message per WebSocket binary frame, a type byte
//! followed by the message's fields in declaration order. The byte layout is specified, with test
//! vectors, in `docs/protocol.md`; this file and that document must agree (a test checks it).
//!
//! Decoding is strict so that every accepted frame re-encodes to exactly the same bytes: varints
//! must be minimal, booleans and options are a `0`/`1` byte, enum tags and error codes must be
//! known, and nothing may follow the message. Every length and count is checked against
//! [`MessageLimits`] before anything is allocated, and no input can make the decoder panic.

use std::fmt;

use crate::protocol::{
    BatchState, ClientMessage, CompensatingWrite, DownloadChangeset, DownloadCursor, ErrorCode,
    IngestStatusEntry, IntegratedChangeset, RejectedWrite, ServerMessage, Subscription,
    SubscriptionSet, SyncProgress, TransactResult, UploadChangeset, UploadCursor,
    MAX_DOWNLOAD_BYTES, MAX_LISTED_INTEGRATIONS,
};
use crate::wire::{write_bytes, write_str, write_u64, Reader, WireError};

/// Type bytes of client → server messages (`0x01`–`0x0d`).
mod client_type {
    pub const BIND: u8 = 0x01;
    pub const IDENT: u8 = 0x02;
    pub const UPLOAD: u8 = 0x03;
    pub const TRANSACT: u8 = 0x04;
    pub const UNBIND: u8 = 0x05;
    pub const MARK: u8 = 0x06;
    pub const REFRESH: u8 = 0x07;
    pub const STATE_REQUEST: u8 = 0x08;
    pub const CLIENT_VERSION_REQUEST: u8 = 0x09;
    pub const PING: u8 = 0x0a;
    pub const QUERY: u8 = 0x0b;
    pub const RELEASE: u8 = 0x0c;
    pub const INGEST_STATUS: u8 = 0x0d;
}

/// Type bytes of server → client messages (`0x81`–`0x8a`), disjoint from the client's so that a
/// frame decoded for the wrong direction fails at its first byte.
mod server_type {
    pub const IDENT: u8 = 0x81;
    pub const DOWNLOAD: u8 = 0x82;
    pub const UNBOUND: u8 = 0x83;
    pub const TRANSACT: u8 = 0x84;
    pub const MARK: u8 = 0x85;
    pub const STATE: u8 = 0x86;
    pub const CLIENT_VERSION: u8 = 0x87;
    pub const ERROR: u8 = 0x88;
    pub const PONG: u8 = 0x89;
    pub const QUERY_ERROR: u8 = 0x8a;
}

/// Tag bytes of [`BatchState`].
const BATCH_STEADY_STATE: u8 = 0;
const BATCH_MORE_TO_COME: u8 = 1;
const BATCH_LAST_IN_BATCH: u8 = 2;

/// Tag bytes of [`TransactResult`].
const TRANSACT_ACCEPTED: u8 = 0;
const TRANSACT_REJECTED: u8 = 1;

/// The smallest encodings of repeated items, used to cap pre-allocation by the bytes left.
const MIN_UPLOAD_CHANGESET_BYTES: usize = 5;
const MIN_DOWNLOAD_CHANGESET_BYTES: usize = 6;
const MIN_SUBSCRIPTION_BYTES: usize = 3;
const MIN_REJECTED_WRITE_BYTES: usize = 3;
const MIN_INGEST_STATUS_ENTRY_BYTES: usize = 4;

/// Bounds the decoder enforces; anything larger is refused before it is allocated.
///
/// Senders must stay within the receiver's limits; the defaults are what `eddy-sync/1` peers
/// accept and are listed in `docs/protocol.md`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageLimits {
    /// The largest frame, in bytes (default: 16 MiB of changesets plus 1 MiB of headroom).
    pub max_message_bytes: usize,
    /// The most changesets in one UPLOAD or DOWNLOAD.
    pub max_changesets: usize,
    /// The largest changeset body, in bytes.
    pub max_changeset_bytes: usize,
    /// The largest access token, in bytes.
    pub max_token_bytes: usize,
    /// The largest other string (paths, names, queries, messages), in bytes.
    pub max_string_bytes: usize,
    /// The most subscriptions in one subscription set.
    pub max_subscriptions: usize,
    /// The largest STATE segment, in bytes.
    pub max_segment_bytes: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        MessageLimits {
            max_message_bytes: MAX_DOWNLOAD_BYTES + 1024 * 1024,
            max_changesets: 1 << 20,
            max_changeset_bytes: MAX_DOWNLOAD_BYTES,
            max_token_bytes: 16 * 1024,
            max_string_bytes: 64 * 1024,
            max_subscriptions: 4096,
            max_segment_bytes: MAX_DOWNLOAD_BYTES,
        }
    }
}

/// Why a frame is not a valid message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame has no bytes at all.
    EmptyFrame,
    /// The frame is larger than [`MessageLimits::max_message_bytes`].
    FrameTooLarge {
        /// The frame's size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The first byte is not a message type of the expected direction.
    UnknownMessageType {
        /// The type byte found.
        byte: u8,
    },
    /// The bytes end early, a varint overflows, or a string is not UTF-8.
    Wire(WireError),
    /// A varint that uses more bytes than needed (encodings must be minimal).
    NonCanonicalVarint {
        /// Where the varint starts.
        offset: usize,
        /// The field being read.
        what: &'static str,
    },
    /// A length or count over one of the [`MessageLimits`].
    LimitExceeded {
        /// The name of the [`MessageLimits`] field that was exceeded.
        limit: &'static str,
        /// The length or count found.
        found: u64,
        /// The limit's value.
        max: u64,
    },
    /// An error code that is not in the error table.
    UnknownErrorCode {
        /// The number found.
        number: u64,
    },
    /// A tag byte (boolean, option or enum) that is not one of the allowed values.
    BadTag {
        /// The field being read.
        what: &'static str,
        /// The byte found.
        tag: u8,
    },
    /// Bytes left over after a complete message.
    TrailingBytes {
        /// Where the message ended.
        offset: usize,
        /// How many bytes follow it.
        count: usize,
    },
}

impl DecodeError {
    /// The error code a server answers this error with: [`ErrorCode::UnknownMessage`] for an
    /// unknown type byte, [`ErrorCode::LimitsExceeded`] for a limit, and
    /// [`ErrorCode::BadSyntax`] for everything else.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::UnknownMessageType { .. } => ErrorCode::UnknownMessage,
            DecodeError::FrameTooLarge { .. } | DecodeError::LimitExceeded { .. } => {
                ErrorCode::LimitsExceeded
            }
            DecodeError::EmptyFrame
            | DecodeError::Wire(_)
            | DecodeError::NonCanonicalVarint { .. }
            | DecodeError::UnknownErrorCode { .. }
            | DecodeError::BadTag { .. }
            | DecodeError::TrailingBytes { .. } => ErrorCode::BadSyntax,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::EmptyFrame => write!(f, "empty frame: every message starts with a type byte"),
            DecodeError::FrameTooLarge { size, max } => write!(
                f,
                "frame of {size} bytes is over the limit of {max} bytes; split the data over several messages"
            ),
            DecodeError::UnknownMessageType { byte } => write!(
                f,
                "unknown message type byte 0x{byte:02x}; check the frame's direction and the protocol version"
            ),
            DecodeError::Wire(err) => write!(f, "malformed message: {err}"),
            DecodeError::NonCanonicalVarint { offset, what } => write!(
                f,
                "varint for \"{what}\" at offset {offset} is not minimally encoded"
            ),
            DecodeError::LimitExceeded { limit, found, max } => {
                write!(f, "{found} is over the limit \"{limit}\" of {max}")
            }
            DecodeError::UnknownErrorCode { number } => {
                write!(f, "unknown error code {number}")
            }
            DecodeError::BadTag { what, tag } => {
                write!(f, "tag byte 0x{tag:02x} is not valid for \"{what}\"")
            }
            DecodeError::TrailingBytes { offset, count } => write!(
                f,
                "{count} unexpected bytes after the message, which ended at offset {offset}"
            ),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Wire(err) => Some(err),
            _ => None,
        }
    }
}

impl From<WireError> for DecodeError {
    fn from(err: WireError) -> Self {
        DecodeError::Wire(err)
    }
}

/// Encodes a client → server message as one frame.
pub fn encode_client_message(msg: &ClientMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(client_size_hint(msg));
    match msg {
        ClientMessage::Bind {
            session,
            path,
            access_token,
            need_client_file_ident,
        } => {
            out.push(client_type::BIND);
            write_u64(&mut out, *session);
            write_str(&mut out, path);
            write_str(&mut out, access_token);
            out.push(u8::from(*need_client_file_ident));
        }
        ClientMessage::Ident {
            session,
            client_file_ident,
            client_file_ident_salt,
            download,
            latest_server_version,
            latest_server_version_salt,
            subscriptions,
        } => {
            out.push(client_type::IDENT);
            write_u64(&mut out, *session);
            write_u64(&mut out, *client_file_ident);
            write_u64(&mut out, *client_file_ident_salt);
            write_download_cursor(&mut out, download);
            write_u64(&mut out, *latest_server_version);
            write_u64(&mut out, *latest_server_version_salt);
            write_subscription_set(&mut out, subscriptions);
        }
        ClientMessage::Upload {
            session,
            download_server_version,
            changesets,
        } => {
            out.push(client_type::UPLOAD);
            write_u64(&mut out, *session);
            write_u64(&mut out, *download_server_version);
            write_u64(&mut out, changesets.len() as u64);
            for changeset in changesets {
                write_upload_changeset(&mut out, changeset);
            }
        }
        ClientMessage::Transact { session, changeset } => {
            out.push(client_type::TRANSACT);
            write_u64(&mut out, *session);
            write_upload_changeset(&mut out, changeset);
        }
        ClientMessage::Unbind { session } => {
            out.push(client_type::UNBIND);
            write_u64(&mut out, *session);
        }
        ClientMessage::Mark { session, request } => {
            out.push(client_type::MARK);
            write_u64(&mut out, *session);
            write_u64(&mut out, *request);
        }
        ClientMessage::Refresh {
            session,
            access_token,
        } => {
            out.push(client_type::REFRESH);
            write_u64(&mut out, *session);
            write_str(&mut out, access_token);
        }
        ClientMessage::StateRequest {
            session,
            server_version,
            server_version_salt,
            offset,
        } => {
            out.push(client_type::STATE_REQUEST);
            write_u64(&mut out, *session);
            write_u64(&mut out, *server_version);
            write_u64(&mut out, *server_version_salt);
            write_u64(&mut out, *offset);
        }
        ClientMessage::ClientVersionRequest {
            session,
            client_file_ident,
            client_file_ident_salt,
            from_client_version,
        } => {
            out.push(client_type::CLIENT_VERSION_REQUEST);
            write_u64(&mut out, *session);
            write_u64(&mut out, *client_file_ident);
            write_u64(&mut out, *client_file_ident_salt);
            write_u64(&mut out, *from_client_version);
        }
        ClientMessage::Ping { timestamp, rtt } => {
            out.push(client_type::PING);
            write_u64(&mut out, *timestamp);
            write_u64(&mut out, *rtt);
        }
        ClientMessage::Query {
            session,
            subscriptions,
        } => {
            out.push(client_type::QUERY);
            write_u64(&mut out, *session);
            write_subscription_set(&mut out, subscriptions);
        }
        ClientMessage::Release { session, objects } => {
            out.push(client_type::RELEASE);
            write_u64(&mut out, *session);
            write_bytes(&mut out, objects);
        }
        ClientMessage::IngestStatus {
            session,
            collections,
        } => {
            out.push(client_type::INGEST_STATUS);
            write_u64(&mut out, *session);
            write_u64(&mut out, collections.len() as u64);
            for entry in collections {
                write_str(&mut out, &entry.collection);
                write_u64(&mut out, entry.objects);
                write_u64(&mut out, entry.bytes);
                write_u64(&mut out, entry.oldest_age_ms);
            }
        }
    }
    out
}

/// Encodes a server → client message as one frame.
pub fn encode_server_message(msg: &ServerMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(server_size_hint(msg));
    match msg {
        ServerMessage::Ident {
            session,
            client_file_ident,
            client_file_ident_salt,
        } => {
            out.push(server_type::IDENT);
            write_u64(&mut out, *session);
            write_u64(&mut out, *client_file_ident);
            write_u64(&mut out, *client_file_ident_salt);
        }
        ServerMessage::Download {
            session,
            progress,
            downloadable_bytes,
            batch_state,
            query_version,
            changesets,
            resets,
            leaving,
        } => {
            out.push(server_type::DOWNLOAD);
            write_u64(&mut out, *session);
            write_download_cursor(&mut out, &progress.download);
            write_u64(&mut out, progress.upload.client_version);
            write_u64(&mut out, progress.upload.last_integrated_server_version);
            write_u64(&mut out, progress.upload.origin_timestamp);
            write_u64(&mut out, progress.latest_server_version);
            write_u64(&mut out, progress.latest_server_version_salt);
            write_u64(&mut out, *downloadable_bytes);
            out.push(match batch_state {
                BatchState::SteadyState => BATCH_STEADY_STATE,
                BatchState::MoreToCome => BATCH_MORE_TO_COME,
                BatchState::LastInBatch => BATCH_LAST_IN_BATCH,
            });
            write_u64(&mut out, *query_version);
            write_u64(&mut out, changesets.len() as u64);
            for changeset in changesets {
                write_u64(&mut out, changeset.server_version);
                write_u64(&mut out, changeset.last_integrated_client_version);
                write_u64(&mut out, changeset.origin_timestamp);
                write_u64(&mut out, changeset.origin_file_ident);
                write_u64(&mut out, changeset.original_size);
                write_bytes(&mut out, &changeset.body);
            }
            write_bytes(&mut out, resets);
            write_bytes(&mut out, leaving);
        }
        ServerMessage::Unbound { session } => {
            out.push(server_type::UNBOUND);
            write_u64(&mut out, *session);
        }
        ServerMessage::Transact {
            session,
            client_version,
            result,
        } => {
            out.push(server_type::TRANSACT);
            write_u64(&mut out, *session);
            write_u64(&mut out, *client_version);
            match result {
                TransactResult::Accepted { server_version } => {
                    out.push(TRANSACT_ACCEPTED);
                    write_u64(&mut out, *server_version);
                }
                TransactResult::Rejected { code, reason } => {
                    out.push(TRANSACT_REJECTED);
                    write_u64(&mut out, u64::from(code.number()));
                    write_str(&mut out, reason);
                }
            }
        }
        ServerMessage::Mark { session, request } => {
            out.push(server_type::MARK);
            write_u64(&mut out, *session);
            write_u64(&mut out, *request);
        }
        ServerMessage::State {
            session,
            server_version,
            server_version_salt,
            begin_offset,
            total_size,
            segment,
        } => {
            out.push(server_type::STATE);
            write_u64(&mut out, *session);
            write_u64(&mut out, *server_version);
            write_u64(&mut out, *server_version_salt);
            write_u64(&mut out, *begin_offset);
            write_u64(&mut out, *total_size);
            write_bytes(&mut out, segment);
        }
        ServerMessage::ClientVersion {
            session,
            client_file_ident,
            client_version,
            integrated,
        } => {
            out.push(server_type::CLIENT_VERSION);
            write_u64(&mut out, *session);
            write_u64(&mut out, *client_file_ident);
            write_u64(&mut out, *client_version);
            write_u64(&mut out, integrated.len() as u64);
            for changeset in integrated {
                write_u64(&mut out, changeset.client_version);
                write_u64(&mut out, changeset.origin_timestamp);
            }
        }
        ServerMessage::Error {
            session,
            code,
            message,
            compensating,
        } => {
            out.push(server_type::ERROR);
            write_u64(&mut out, *session);
            write_u64(&mut out, u64::from(code.number()));
            write_str(&mut out, message);
            match compensating {
                None => out.push(0),
                Some(compensating) => {
                    out.push(1);
                    write_u64(&mut out, compensating.server_version);
                    write_u64(&mut out, compensating.rejected.len() as u64);
                    for rejected in &compensating.rejected {
                        write_str(&mut out, &rejected.collection);
                        write_str(&mut out, &rejected.key);
                        write_str(&mut out, &rejected.reason);
                    }
                }
            }
        }
        ServerMessage::Pong { timestamp } => {
            out.push(server_type::PONG);
            write_u64(&mut out, *timestamp);
        }
        ServerMessage::QueryError {
            session,
            query_version,
            code,
            message,
        } => {
            out.push(server_type::QUERY_ERROR);
            write_u64(&mut out, *session);
            write_u64(&mut out, *query_version);
            write_u64(&mut out, u64::from(code.number()));
            write_str(&mut out, message);
        }
    }
    out
}

/// Decodes one frame received by the server (a client → server message).
pub fn decode_client_message(
    frame: &[u8],
    limits: &MessageLimits,
) -> Result<ClientMessage, DecodeError> {
    let mut d = Decoder::new(frame, limits)?;
    let msg = match d.type_byte()? {
        client_type::BIND => ClientMessage::Bind {
            session: d.u64("session")?,
            path: d.string("path")?,
            access_token: d.token("access_token")?,
            need_client_file_ident: d.bool("need_client_file_ident")?,
        },
        client_type::IDENT => ClientMessage::Ident {
            session: d.u64("session")?,
            client_file_ident: d.u64("client_file_ident")?,
            client_file_ident_salt: d.u64("client_file_ident_salt")?,
            download: d.download_cursor()?,
            latest_server_version: d.u64("latest_server_version")?,
            latest_server_version_salt: d.u64("latest_server_version_salt")?,
            subscriptions: d.subscription_set()?,
        },
        client_type::UPLOAD => {
            let session = d.u64("session")?;
            let download_server_version = d.u64("download_server_version")?;
            let count = d.count(
                "changesets",
                "max_changesets",
                limits.max_changesets,
                MIN_UPLOAD_CHANGESET_BYTES,
            )?;
            let mut changesets = Vec::with_capacity(count.capacity);
            for _ in 0..count.len {
                changesets.push(d.upload_changeset()?);
            }
            ClientMessage::Upload {
                session,
                download_server_version,
                changesets,
            }
        }
        client_type::TRANSACT => ClientMessage::Transact {
            session: d.u64("session")?,
            changeset: d.upload_changeset()?,
        },
        client_type::UNBIND => ClientMessage::Unbind {
            session: d.u64("session")?,
        },
        client_type::MARK => ClientMessage::Mark {
            session: d.u64("session")?,
            request: d.u64("request")?,
        },
        client_type::REFRESH => ClientMessage::Refresh {
            session: d.u64("session")?,
            access_token: d.token("access_token")?,
        },
        client_type::STATE_REQUEST => ClientMessage::StateRequest {
            session: d.u64("session")?,
            server_version: d.u64("server_version")?,
            server_version_salt: d.u64("server_version_salt")?,
            offset: d.u64("offset")?,
        },
        client_type::CLIENT_VERSION_REQUEST => ClientMessage::ClientVersionRequest {
            session: d.u64("session")?,
            client_file_ident: d.u64("client_file_ident")?,
            client_file_ident_salt: d.u64("client_file_ident_salt")?,
            from_client_version: d.u64("from_client_version")?,
        },
        client_type::PING => ClientMessage::Ping {
            timestamp: d.u64("timestamp")?,
            rtt: d.u64("rtt")?,
        },
        client_type::QUERY => ClientMessage::Query {
            session: d.u64("session")?,
            subscriptions: d.subscription_set()?,
        },
        client_type::RELEASE => ClientMessage::Release {
            session: d.u64("session")?,
            objects: d.body()?,
        },
        client_type::INGEST_STATUS => ClientMessage::IngestStatus {
            session: d.u64("session")?,
            collections: d.ingest_status_entries()?,
        },
        byte => return Err(DecodeError::UnknownMessageType { byte }),
    };
    d.finish()?;
    Ok(msg)
}

/// Decodes one frame received by a client (a server → client message).
pub fn decode_server_message(
    frame: &[u8],
    limits: &MessageLimits,
) -> Result<ServerMessage, DecodeError> {
    let mut d = Decoder::new(frame, limits)?;
    let msg = match d.type_byte()? {
        server_type::IDENT => ServerMessage::Ident {
            session: d.u64("session")?,
            client_file_ident: d.u64("client_file_ident")?,
            client_file_ident_salt: d.u64("client_file_ident_salt")?,
        },
        server_type::DOWNLOAD => {
            let session = d.u64("session")?;
            let progress = SyncProgress {
                download: d.download_cursor()?,
                upload: UploadCursor {
                    client_version: d.u64("upload.client_version")?,
                    last_integrated_server_version: d
                        .u64("upload.last_integrated_server_version")?,
                    origin_timestamp: d.u64("upload.origin_timestamp")?,
                },
                latest_server_version: d.u64("latest_server_version")?,
                latest_server_version_salt: d.u64("latest_server_version_salt")?,
            };
            let downloadable_bytes = d.u64("downloadable_bytes")?;
            let batch_state = match d.tag("batch_state")? {
                BATCH_STEADY_STATE => BatchState::SteadyState,
                BATCH_MORE_TO_COME => BatchState::MoreToCome,
                BATCH_LAST_IN_BATCH => BatchState::LastInBatch,
                tag => return Err(bad_tag("batch_state", tag)),
            };
            let query_version = d.u64("query_version")?;
            let count = d.count(
                "changesets",
                "max_changesets",
                limits.max_changesets,
                MIN_DOWNLOAD_CHANGESET_BYTES,
            )?;
            let mut changesets = Vec::with_capacity(count.capacity);
            for _ in 0..count.len {
                changesets.push(DownloadChangeset {
                    server_version: d.u64("server_version")?,
                    last_integrated_client_version: d.u64("last_integrated_client_version")?,
                    origin_timestamp: d.u64("origin_timestamp")?,
                    origin_file_ident: d.u64("origin_file_ident")?,
                    original_size: d.u64("original_size")?,
                    body: d.body()?,
                });
            }
            let resets = d.body()?;
            let leaving = d.body()?;
            ServerMessage::Download {
                session,
                progress,
                downloadable_bytes,
                batch_state,
                query_version,
                changesets,
                resets,
                leaving,
            }
        }
        server_type::UNBOUND => ServerMessage::Unbound {
            session: d.u64("session")?,
        },
        server_type::TRANSACT => {
            let session = d.u64("session")?;
            let client_version = d.u64("client_version")?;
            let result = match d.tag("transact_result")? {
                TRANSACT_ACCEPTED => TransactResult::Accepted {
                    server_version: d.u64("server_version")?,
                },
                TRANSACT_REJECTED => TransactResult::Rejected {
                    code: d.error_code()?,
                    reason: d.string("reason")?,
                },
                tag => return Err(bad_tag("transact_result", tag)),
            };
            ServerMessage::Transact {
                session,
                client_version,
                result,
            }
        }
        server_type::MARK => ServerMessage::Mark {
            session: d.u64("session")?,
            request: d.u64("request")?,
        },
        server_type::STATE => ServerMessage::State {
            session: d.u64("session")?,
            server_version: d.u64("server_version")?,
            server_version_salt: d.u64("server_version_salt")?,
            begin_offset: d.u64("begin_offset")?,
            total_size: d.u64("total_size")?,
            segment: d
                .bytes("segment", "max_segment_bytes", limits.max_segment_bytes)?
                .to_vec(),
        },
        server_type::CLIENT_VERSION => {
            let session = d.u64("session")?;
            let client_file_ident = d.u64("client_file_ident")?;
            let client_version = d.u64("client_version")?;
            let count = d.count(
                "integrated",
                "max_changesets",
                limits.max_changesets.min(MAX_LISTED_INTEGRATIONS),
                2,
            )?;
            let mut integrated = Vec::with_capacity(count.capacity);
            for _ in 0..count.len {
                integrated.push(IntegratedChangeset {
                    client_version: d.u64("integrated.client_version")?,
                    origin_timestamp: d.u64("integrated.origin_timestamp")?,
                });
            }
            ServerMessage::ClientVersion {
                session,
                client_file_ident,
                client_version,
                integrated,
            }
        }
        server_type::ERROR => ServerMessage::Error {
            session: d.u64("session")?,
            code: d.error_code()?,
            message: d.string("message")?,
            compensating: match d.tag("compensating")? {
                0 => None,
                1 => Some(d.compensating_write()?),
                tag => return Err(bad_tag("compensating", tag)),
            },
        },
        server_type::PONG => ServerMessage::Pong {
            timestamp: d.u64("timestamp")?,
        },
        server_type::QUERY_ERROR => ServerMessage::QueryError {
            session: d.u64("session")?,
            query_version: d.u64("query_version")?,
            code: d.error_code()?,
            message: d.string("message")?,
        },
        byte => return Err(DecodeError::UnknownMessageType { byte }),
    };
    d.finish()?;
    Ok(msg)
}

fn bad_tag(what: &'static str, tag: u8) -> DecodeError {
    DecodeError::BadTag { what, tag }
}

fn write_download_cursor(out: &mut Vec<u8>, cursor: &DownloadCursor) {
    write_u64(out, cursor.server_version);
    write_u64(out, cursor.last_integrated_client_version);
}

fn write_upload_changeset(out: &mut Vec<u8>, changeset: &UploadChangeset) {
    write_u64(out, changeset.client_version);
    write_u64(out, changeset.last_integrated_server_version);
    write_u64(out, changeset.origin_timestamp);
    write_u64(out, changeset.origin_file_ident);
    write_bytes(out, &changeset.body);
}

fn write_subscription_set(out: &mut Vec<u8>, set: &SubscriptionSet) {
    write_u64(out, set.version);
    write_u64(out, set.subscriptions.len() as u64);
    for subscription in &set.subscriptions {
        write_str(out, &subscription.name);
        write_str(out, &subscription.collection);
        write_str(out, &subscription.query);
    }
}

/// A generous estimate of a client message's encoded size, to allocate once.
fn client_size_hint(msg: &ClientMessage) -> usize {
    const FIXED: usize = 96;
    let subscriptions = |set: &SubscriptionSet| {
        set.subscriptions
            .iter()
            .map(|s| s.name.len() + s.collection.len() + s.query.len() + 15)
            .sum::<usize>()
    };
    FIXED
        + match msg {
            ClientMessage::Bind {
                path, access_token, ..
            } => path.len() + access_token.len(),
            ClientMessage::Ident {
                subscriptions: s, ..
            }
            | ClientMessage::Query {
                subscriptions: s, ..
            } => subscriptions(s),
            ClientMessage::Upload { changesets, .. } => {
                changesets.iter().map(|c| c.body.len() + 50).sum::<usize>()
            }
            ClientMessage::Transact { changeset, .. } => changeset.body.len(),
            ClientMessage::Release { objects, .. } => objects.len(),
            ClientMessage::IngestStatus { collections, .. } => collections
                .iter()
                .map(|e| e.collection.len() + 30)
                .sum::<usize>(),
            ClientMessage::Refresh { access_token, .. } => access_token.len(),
            ClientMessage::Unbind { .. }
            | ClientMessage::Mark { .. }
            | ClientMessage::StateRequest { .. }
            | ClientMessage::ClientVersionRequest { .. }
            | ClientMessage::Ping { .. } => 0,
        }
}

/// A generous estimate of a server message's encoded size, to allocate once.
fn server_size_hint(msg: &ServerMessage) -> usize {
    const FIXED: usize = 128;
    FIXED
        + match msg {
            ServerMessage::Download {
                changesets,
                resets,
                leaving,
                ..
            } => {
                changesets.iter().map(|c| c.body.len() + 60).sum::<usize>()
                    + resets.len()
                    + leaving.len()
            }
            ServerMessage::Transact {
                result: TransactResult::Rejected { reason, .. },
                ..
            } => reason.len(),
            ServerMessage::State { segment, .. } => segment.len(),
            ServerMessage::Error {
                message,
                compensating,
                ..
            } => {
                message.len()
                    + compensating.as_ref().map_or(0, |c| {
                        c.rejected
                            .iter()
                            .map(|r| r.collection.len() + r.key.len() + r.reason.len() + 15)
                            .sum::<usize>()
                    })
            }
            ServerMessage::QueryError { message, .. } => message.len(),
            ServerMessage::Ident { .. }
            | ServerMessage::Transact { .. }
            | ServerMessage::Unbound { .. }
            | ServerMessage::Mark { .. }
            | ServerMessage::ClientVersion { .. }
            | ServerMessage::Pong { .. } => 0,
        }
}

/// How many bytes the minimal varint encoding of `v` takes.
fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// A count read from the frame, with how much to pre-allocate for it.
struct Count {
    /// The number of items the frame announces (within its limit).
    len: usize,
    /// The capacity to reserve: never more items than the bytes left could hold.
    capacity: usize,
}

/// A strict reader over one frame: minimal varints, limits from [`MessageLimits`].
struct Decoder<'a, 'l> {
    r: Reader<'a>,
    limits: &'l MessageLimits,
}

impl<'a, 'l> Decoder<'a, 'l> {
    fn new(frame: &'a [u8], limits: &'l MessageLimits) -> Result<Self, DecodeError> {
        if frame.is_empty() {
            return Err(DecodeError::EmptyFrame);
        }
        if frame.len() > limits.max_message_bytes {
            return Err(DecodeError::FrameTooLarge {
                size: frame.len(),
                max: limits.max_message_bytes,
            });
        }
        Ok(Decoder {
            r: Reader::new(frame),
            limits,
        })
    }

    fn type_byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.r.u8("message type")?)
    }

    fn tag(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.r.u8(what)?)
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.tag(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(bad_tag(what, tag)),
        }
    }

    /// Fails unless the varint read from `start` up to `prefix_end` is the minimal encoding of
    /// `value`.
    fn check_minimal(
        start: usize,
        prefix_end: usize,
        value: u64,
        what: &'static str,
    ) -> Result<(), DecodeError> {
        if prefix_end.saturating_sub(start) == varint_len(value) {
            Ok(())
        } else {
            Err(DecodeError::NonCanonicalVarint {
                offset: start,
                what,
            })
        }
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let start = self.r.position();
        let value = self.r.u64(what)?;
        Self::check_minimal(start, self.r.position(), value, what)?;
        Ok(value)
    }

    /// Reads a count of items, each taking at least `min_item_bytes` bytes.
    fn count(
        &mut self,
        what: &'static str,
        limit: &'static str,
        max: usize,
        min_item_bytes: usize,
    ) -> Result<Count, DecodeError> {
        let start = self.r.position();
        let len = self
            .r
            .len(what, max)
            .map_err(|err| limit_error(err, limit))?;
        Self::check_minimal(start, self.r.position(), len as u64, what)?;
        let capacity = len.min(self.r.remaining() / min_item_bytes.max(1));
        Ok(Count { len, capacity })
    }

    /// Reads length-prefixed bytes of at most `max` bytes (the limit named `limit`).
    fn bytes(
        &mut self,
        what: &'static str,
        limit: &'static str,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let start = self.r.position();
        let bytes = self
            .r
            .bytes(what, max)
            .map_err(|err| limit_error(err, limit))?;
        let prefix_end = self.r.position().saturating_sub(bytes.len());
        Self::check_minimal(start, prefix_end, bytes.len() as u64, what)?;
        Ok(bytes)
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes (the limit named `limit`).
    fn str(
        &mut self,
        what: &'static str,
        limit: &'static str,
        max: usize,
    ) -> Result<String, DecodeError> {
        let start = self.r.position();
        let s = self
            .r
            .str(what, max)
            .map_err(|err| limit_error(err, limit))?;
        let prefix_end = self.r.position().saturating_sub(s.len());
        Self::check_minimal(start, prefix_end, s.len() as u64, what)?;
        Ok(s.to_owned())
    }

    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        self.str(what, "max_string_bytes", self.limits.max_string_bytes)
    }

    fn token(&mut self, what: &'static str) -> Result<String, DecodeError> {
        self.str(what, "max_token_bytes", self.limits.max_token_bytes)
    }

    fn body(&mut self) -> Result<Vec<u8>, DecodeError> {
        Ok(self
            .bytes(
                "body",
                "max_changeset_bytes",
                self.limits.max_changeset_bytes,
            )?
            .to_vec())
    }

    fn error_code(&mut self) -> Result<ErrorCode, DecodeError> {
        let number = self.u64("error code")?;
        u16::try_from(number)
            .ok()
            .and_then(ErrorCode::from_number)
            .ok_or(DecodeError::UnknownErrorCode { number })
    }

    fn download_cursor(&mut self) -> Result<DownloadCursor, DecodeError> {
        Ok(DownloadCursor {
            server_version: self.u64("download.server_version")?,
            last_integrated_client_version: self.u64("download.last_integrated_client_version")?,
        })
    }

    fn upload_changeset(&mut self) -> Result<UploadChangeset, DecodeError> {
        Ok(UploadChangeset {
            client_version: self.u64("client_version")?,
            last_integrated_server_version: self.u64("last_integrated_server_version")?,
            origin_timestamp: self.u64("origin_timestamp")?,
            origin_file_ident: self.u64("origin_file_ident")?,
            body: self.body()?,
        })
    }

    fn subscription_set(&mut self) -> Result<SubscriptionSet, DecodeError> {
        let version = self.u64("subscriptions.version")?;
        let count = self.count(
            "subscriptions",
            "max_subscriptions",
            self.limits.max_subscriptions,
            MIN_SUBSCRIPTION_BYTES,
        )?;
        let mut subscriptions = Vec::with_capacity(count.capacity);
        for _ in 0..count.len {
            subscriptions.push(Subscription {
                name: self.string("subscription.name")?,
                collection: self.string("subscription.collection")?,
                query: self.string("subscription.query")?,
            });
        }
        Ok(SubscriptionSet {
            version,
            subscriptions,
        })
    }

    fn compensating_write(&mut self) -> Result<CompensatingWrite, DecodeError> {
        let server_version = self.u64("compensating.server_version")?;
        // Rejected writes have no limit of their own: the frame size bounds them, and the
        // capacity reserved up front never exceeds what the remaining bytes can hold.
        let count = self.count(
            "compensating.rejected",
            "max_message_bytes",
            self.limits.max_message_bytes,
            MIN_REJECTED_WRITE_BYTES,
        )?;
        let mut rejected = Vec::with_capacity(count.capacity);
        for _ in 0..count.len {
            rejected.push(RejectedWrite {
                collection: self.string("rejected.collection")?,
                key: self.string("rejected.key")?,
                reason: self.string("rejected.reason")?,
            });
        }
        Ok(CompensatingWrite {
            server_version,
            rejected,
        })
    }

    fn ingest_status_entries(&mut self) -> Result<Vec<IngestStatusEntry>, DecodeError> {
        // Like rejected writes, entries have no limit of their own: the frame size bounds them.
        let count = self.count(
            "ingest_status.collections",
            "max_message_bytes",
            self.limits.max_message_bytes,
            MIN_INGEST_STATUS_ENTRY_BYTES,
        )?;
        let mut entries = Vec::with_capacity(count.capacity);
        for _ in 0..count.len {
            entries.push(IngestStatusEntry {
                collection: self.string("ingest_status.collection")?,
                objects: self.u64("ingest_status.objects")?,
                bytes: self.u64("ingest_status.bytes")?,
                oldest_age_ms: self.u64("ingest_status.oldest_age_ms")?,
            });
        }
        Ok(entries)
    }

    fn finish(self) -> Result<(), DecodeError> {
        let count = self.r.remaining();
        if count == 0 {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                offset: self.r.position(),
                count,
            })
        }
    }
}

/// Turns the reader's "too long" into the named limit; other wire errors pass through.
fn limit_error(err: WireError, limit: &'static str) -> DecodeError {
    match err {
        WireError::TooLong { len, max, .. } => DecodeError::LimitExceeded {
            limit,
            found: len,
            max,
        },
        other => DecodeError::Wire(other),
    }
}

#[cfg(test)]
mod tests;
