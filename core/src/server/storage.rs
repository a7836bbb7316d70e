//! What the server engine needs from durable storage, and an in-memory implementation for tests
//! and simulations. The server crate implements the same trait on SQLite.

use std::collections::BTreeSet;
use std::fmt;

use crate::ingest::IngestedObject;
use crate::protocol::IngestStatusEntry;
use crate::server::view::{StoredView, ViewDelta};
use crate::value::PrimaryKey;

/// One integrated changeset in the server's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its server version (the history is 1-based and gap-free).
    pub server_version: u64,
    /// The client file it came from (0 for the server itself).
    pub origin_file_ident: u64,
    /// Its client version in the origin's history (0 for the server itself).
    pub client_version: u64,
    /// The origin's timestamp, in milliseconds since the Unix epoch.
    pub origin_timestamp: u64,
    /// The size of the body as uploaded, before transformation.
    pub original_size: u64,
    /// The encoded, transformed instructions.
    pub body: Vec<u8>,
}

/// An asymmetric object stored by Data Ingest, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestRecord {
    /// The server version of the changeset that carried it.
    pub server_version: u64,
    /// The client file it came from.
    pub origin_file_ident: u64,
    /// The device's timestamp of that changeset, in milliseconds since the Unix epoch.
    pub origin_timestamp: u64,
    /// The object.
    pub object: IngestedObject,
}

/// A device's latest report of its Data Ingest upload queue (INGEST_STATUS), as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredIngestStatus {
    /// When the server received it (milliseconds since the Unix epoch, server clock).
    pub reported_ms: u64,
    /// One entry per asymmetric collection, as the device sent them.
    pub collections: Vec<IngestStatusEntry>,
}

/// A client file the server allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFileRecord {
    /// The ident (non-zero, below 2^63).
    pub ident: u64,
    /// Its salt.
    pub salt: u64,
    /// The user it was allocated to.
    pub user_id: String,
}

/// Everything the engine reads back at startup.
#[derive(Clone, Debug, Default)]
pub struct StoredState {
    /// The salt of this server file's history (chosen at creation, never changes).
    pub history_salt: u64,
    /// Every allocated client file.
    pub client_files: Vec<ClientFileRecord>,
    /// The flexible-sync view of each client file that has one.
    pub views: std::collections::BTreeMap<u64, StoredView>,
    /// Each client file's latest Data Ingest queue report that held anything.
    pub ingest_status: std::collections::BTreeMap<u64, StoredIngestStatus>,
}

/// A storage failure; the engine stops acknowledging anything until storage works again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageError(pub String);

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage failed: {}", self.0)
    }
}

impl std::error::Error for StorageError {}

/// Durable storage for one server file.
///
/// Appends are buffered; [`ServerStorage::flush`] makes every earlier append durable at once (the
/// engine calls it before sending anything that depends on them, so one flush covers every
/// message handled since the last one: group commit).
pub trait ServerStorage {
    /// Reads the stored state but the history (empty for a new file; `history_salt` 0 means
    /// "choose one").
    fn load(&mut self) -> Result<StoredState, StorageError>;
    /// Records the history salt of a new file.
    fn set_history_salt(&mut self, salt: u64) -> Result<(), StorageError>;
    /// Appends integrated changesets.
    fn append_history(&mut self, entries: &[HistoryEntry]) -> Result<(), StorageError>;
    /// The history entries of server versions `from..to`, in order: those appended and not yet
    /// flushed as well. Fewer than asked for only at the end of the history.
    fn read_history(&mut self, from: u64, to: u64) -> Result<Vec<HistoryEntry>, StorageError>;
    /// Stores ingested (asymmetric) objects as documents of their collections, in the same commit
    /// as the history entries appended with them. An object whose collection already holds its
    /// primary key is skipped: the first insert wins.
    fn insert_ingested(&mut self, records: &[IngestRecord]) -> Result<(), StorageError>;
    /// Records a newly allocated client file.
    fn add_client_file(&mut self, record: &ClientFileRecord) -> Result<(), StorageError>;
    /// Stores the changes to a client file's view (its header, and its object rows: written,
    /// deleted, or all replaced when the delta is whole).
    fn save_view(&mut self, file_ident: u64, delta: &ViewDelta) -> Result<(), StorageError>;
    /// Replaces a client file's stored Data Ingest queue report; `None` removes it (the queue
    /// emptied, or the file was reset).
    fn save_ingest_status(
        &mut self,
        file_ident: u64,
        status: Option<&StoredIngestStatus>,
    ) -> Result<(), StorageError>;
    /// Makes every earlier call durable.
    fn flush(&mut self) -> Result<(), StorageError>;
}

/// Storage in memory, with a "disk" that holds only what was flushed: dropping the unflushed part
/// ([`MemoryStorage::crash`]) models a process killed between an append and its flush.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    durable: StoredState,
    history: Vec<HistoryEntry>,
    buffered_history: Vec<HistoryEntry>,
    buffered_files: Vec<ClientFileRecord>,
    buffered_salt: Option<u64>,
    ingested: Vec<IngestRecord>,
    ingested_keys: BTreeSet<(String, PrimaryKey)>,
    buffered_ingested: Vec<IngestRecord>,
    buffered_views: Vec<(u64, ViewDelta)>,
    buffered_ingest_status: Vec<(u64, Option<StoredIngestStatus>)>,
    /// How many flushes happened (for tests of group commit).
    pub flushes: u64,
}

impl MemoryStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loses everything appended since the last flush, as a killed process would.
    pub fn crash(&mut self) {
        self.buffered_history.clear();
        self.buffered_files.clear();
        self.buffered_salt = None;
        self.buffered_ingested.clear();
        self.buffered_views.clear();
        self.buffered_ingest_status.clear();
    }

    /// The durable ingested objects, in the order they were stored.
    pub fn ingested(&self) -> &[IngestRecord] {
        &self.ingested
    }

    /// The durable history.
    pub fn durable_history(&self) -> &[HistoryEntry] {
        &self.history
    }

    /// Keeps only the first `version` history entries, as restoring an older backup would.
    /// Returns the entries that were dropped.
    pub fn restore_backup(&mut self, version: u64) -> Vec<HistoryEntry> {
        self.crash();
        let keep = usize::try_from(version)
            .unwrap_or(usize::MAX)
            .min(self.history.len());
        self.ingested.retain(|r| r.server_version <= version);
        self.ingested_keys = self
            .ingested
            .iter()
            .map(|r| (r.object.collection.clone(), r.object.key.clone()))
            .collect();
        self.history.split_off(keep)
    }
}

impl ServerStorage for MemoryStorage {
    fn load(&mut self) -> Result<StoredState, StorageError> {
        Ok(self.durable.clone())
    }

    fn set_history_salt(&mut self, salt: u64) -> Result<(), StorageError> {
        self.buffered_salt = Some(salt);
        Ok(())
    }

    fn append_history(&mut self, entries: &[HistoryEntry]) -> Result<(), StorageError> {
        self.buffered_history.extend_from_slice(entries);
        Ok(())
    }

    fn read_history(&mut self, from: u64, to: u64) -> Result<Vec<HistoryEntry>, StorageError> {
        // Versions are 1-based and gap-free: version v is at index v - 1 of the durable entries
        // followed by the buffered ones.
        let index = |version: u64| usize::try_from(version.saturating_sub(1)).unwrap_or(usize::MAX);
        let (from, to) = (index(from.max(1)), index(to.max(1)));
        let durable = self.history.len();
        let mut entries: Vec<HistoryEntry> = self
            .history
            .get(from.min(durable)..to.min(durable))
            .unwrap_or_default()
            .to_vec();
        let buffered = self.buffered_history.len();
        let (from, to) = (from.saturating_sub(durable), to.saturating_sub(durable));
        entries.extend_from_slice(
            self.buffered_history
                .get(from.min(buffered)..to.min(buffered))
                .unwrap_or_default(),
        );
        Ok(entries)
    }

    fn insert_ingested(&mut self, records: &[IngestRecord]) -> Result<(), StorageError> {
        self.buffered_ingested.extend_from_slice(records);
        Ok(())
    }

    fn add_client_file(&mut self, record: &ClientFileRecord) -> Result<(), StorageError> {
        self.buffered_files.push(record.clone());
        Ok(())
    }

    fn save_view(&mut self, file_ident: u64, delta: &ViewDelta) -> Result<(), StorageError> {
        self.buffered_views.push((file_ident, delta.clone()));
        Ok(())
    }

    fn save_ingest_status(
        &mut self,
        file_ident: u64,
        status: Option<&StoredIngestStatus>,
    ) -> Result<(), StorageError> {
        self.buffered_ingest_status
            .push((file_ident, status.cloned()));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        if let Some(salt) = self.buffered_salt.take() {
            self.durable.history_salt = salt;
        }
        self.history.append(&mut self.buffered_history);
        self.durable.client_files.append(&mut self.buffered_files);
        for record in self.buffered_ingested.drain(..) {
            let key = (record.object.collection.clone(), record.object.key.clone());
            if self.ingested_keys.insert(key) {
                self.ingested.push(record);
            }
        }
        for (file, delta) in self.buffered_views.drain(..) {
            self.durable.views.entry(file).or_default().apply(&delta);
        }
        for (file, status) in self.buffered_ingest_status.drain(..) {
            match status {
                Some(status) => self.durable.ingest_status.insert(file, status),
                None => self.durable.ingest_status.remove(&file),
            };
        }
        self.flushes += 1;
        Ok(())
    }
}
