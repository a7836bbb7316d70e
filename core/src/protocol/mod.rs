//! The wire protocol between sync clients and the server: every message in both directions,
//! the numbered error table, and the binary codec (one message per WebSocket binary frame).
//!
//! The byte-level specification, with test vectors, is `docs/protocol.md`.

mod codec;
mod error;
mod message;

pub use codec::{
    decode_client_message, decode_server_message, encode_client_message, encode_server_message,
    DecodeError, MessageLimits,
};
pub use error::{ErrorAction, ErrorCode};
pub use message::*;

/// The protocol version this build speaks, as negotiated in the WebSocket subprotocol
/// (`eddy-sync/<version>`).
pub const PROTOCOL_VERSION: u32 = 5;

/// The WebSocket subprotocol name for [`PROTOCOL_VERSION`].
pub const SUBPROTOCOL: &str = "eddy-sync/5";

/// The same subprotocol under the name browsers can offer: their WebSocket API accepts only RFC
/// 6455 tokens, and `/` is not a token character.
pub const BROWSER_SUBPROTOCOL: &str = "eddy-sync.5";

/// The prefix every Eddy subprotocol name starts with.
pub const SUBPROTOCOL_PREFIX: &str = "eddy-sync/";

/// The largest DOWNLOAD the server builds, in bytes of changeset bodies.
pub const MAX_DOWNLOAD_BYTES: usize = 16 * 1024 * 1024;

/// The most integrated changesets one CLIENT_VERSION lists; a client holding more local
/// changesets than that counts those past the last listed one as integrated up to the message's
/// `client_version`.
pub const MAX_LISTED_INTEGRATIONS: usize = 1 << 16;
