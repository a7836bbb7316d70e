//! The sans-IO sync client: a [`ClientConnection`] (connect, reconnect, keepalive) carrying
//! [`ClientSession`]s (one per synced file), and the stored form of a client file
//! ([`persist`]) that every driver shares.

mod backoff;
mod connection;
mod ingest_status;
pub mod persist;
mod schema_write;
mod session;

pub use backoff::{Backoff, SplitMix64};
pub use connection::{ClientConnection, ConnectionAction, ConnectionConfig, ConnectionState};
pub use ingest_status::MIN_INTERVAL_MS as INGEST_STATUS_INTERVAL_MS;
pub use schema_write::SchemaWriteError;
pub use session::{
    ClientSession, FileMeta, OutstandingTransaction, PendingUpdate, PersistedState, ResetMode,
    SessionConfig, SessionEvent, StorageWrite, SubscriptionState, SyncError,
    DEFAULT_MAX_BOOTSTRAP_BYTES,
};
