//! The sans-IO sync server: the [`ServerEngine`] state machine and the [`ServerStorage`] trait it
//! persists through (an in-memory implementation here; SQLite in the server crate).

mod engine;
mod history;
mod state;
mod storage;
pub mod view;

pub use engine::{
    AuthError, AuthenticatedUser, Authenticator, ConnectionId, EngineError, IntegrationDecision,
    ServerConfig, ServerEngine, ServerEvent,
};
pub use state::snapshot_instructions;
pub use storage::{
    ClientFileRecord, HistoryEntry, IngestRecord, MemoryStorage, ServerStorage, StorageError,
    StoredIngestStatus, StoredState,
};
