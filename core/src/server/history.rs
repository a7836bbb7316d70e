//! The history as the engine keeps it in memory: every entry's metadata (what cursors, version
//! salts, upload timestamps and download sizes need: 32 bytes an entry), and the bodies and
//! decoded instructions of the latest entries only, within a memory budget
//! ([`crate::server::ServerConfig::history_cache_bytes`]). Older entries are read back from
//! storage, a chunk at a time, when something reaches that far back: a DOWNLOAD to a file
//! catching up, an UPLOAD or TRANSACT based on an old version, a view recheck or a lost reset
//! from an old cursor. Clients that keep up never cause a read.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use crate::changeset::{decode_changeset, Changeset, ChangesetMeta, DecodeLimits, Instruction};
use crate::server::storage::{HistoryEntry, ServerStorage, StorageError};

/// How many entries one storage read brings back when walking entries older than those held.
pub(crate) const READ_CHUNK: u64 = 1024;

/// What a held entry is taken to cost in memory besides its body: the entry, its decoded
/// changeset and their allocations, and per instruction the instruction with its path and value
/// and their allocations. Calibrated on the load benchmark's one-field writes, where a 64 MiB
/// budget measured about 160 MB of resident memory with 160 bytes per instruction.
const ENTRY_COST: usize =
    std::mem::size_of::<HistoryEntry>() + std::mem::size_of::<Changeset>() + 320;
const INSTRUCTION_COST: usize = 384;

/// What the engine keeps of every entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryMeta {
    pub origin_file_ident: u64,
    pub client_version: u64,
    pub origin_timestamp: u64,
    /// The body sizes of the history up to and including this entry.
    pub bytes_through: u64,
}

/// The engine's view of the history (see the module documentation).
#[derive(Debug)]
pub(crate) struct History {
    /// `metas[v - 1]` describes server version `v`.
    metas: Vec<EntryMeta>,
    /// The latest entries, oldest first, each with its decoded changeset.
    held: VecDeque<(HistoryEntry, Changeset)>,
    /// The estimated memory of `held`.
    held_cost: usize,
    budget: usize,
    limits: DecodeLimits,
}

impl History {
    /// An empty history holding at most about `budget` bytes of entries, decoding those read
    /// back from storage within `limits`.
    pub fn new(budget: usize, limits: DecodeLimits) -> Self {
        History {
            metas: Vec::new(),
            held: VecDeque::new(),
            held_cost: 0,
            budget,
            limits,
        }
    }

    /// The latest server version.
    pub fn len(&self) -> u64 {
        self.metas.len() as u64
    }

    /// What is kept of server version `version`.
    pub fn meta(&self, version: u64) -> Option<&EntryMeta> {
        self.metas
            .get(usize::try_from(version.checked_sub(1)?).ok()?)
    }

    /// When the changeset at `version` was made (its origin's timestamp; 0 for none).
    pub fn made_at(&self, version: u64) -> u64 {
        self.meta(version).map_or(0, |m| m.origin_timestamp)
    }

    /// The body sizes of versions `1..=version` (all of them past the latest).
    pub fn bytes_through(&self, version: u64) -> u64 {
        let last = version.min(self.len());
        self.meta(last).map_or(0, |m| m.bytes_through)
    }

    /// The body size of `version`.
    pub fn body_len(&self, version: u64) -> u64 {
        self.bytes_through(version)
            .saturating_sub(self.bytes_through(version.saturating_sub(1)))
    }

    /// How many of the latest entries are held in memory.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Appends the next entry (already stored) with its instructions, and lets the oldest held
    /// entries go while the held ones cost more than the budget.
    pub fn push(&mut self, entry: HistoryEntry, instructions: Vec<Instruction>) {
        let bytes_through = self.bytes_through(self.len()) + entry.body.len() as u64;
        self.metas.push(EntryMeta {
            origin_file_ident: entry.origin_file_ident,
            client_version: entry.client_version,
            origin_timestamp: entry.origin_timestamp,
            bytes_through,
        });
        self.held_cost += cost(&entry, &instructions);
        let changeset = Changeset {
            meta: entry_meta(&entry),
            instructions,
        };
        self.held.push_back((entry, changeset));
        while self.held_cost > self.budget {
            let Some((entry, changeset)) = self.held.pop_front() else {
                break;
            };
            self.held_cost = self
                .held_cost
                .saturating_sub(cost(&entry, &changeset.instructions));
        }
    }

    /// The first server version held in memory (one past the latest when none is).
    fn first_held(&self) -> u64 {
        self.held
            .front()
            .map_or(self.len() + 1, |(e, _)| e.server_version)
    }

    /// Calls `visit` with each entry of server versions `from..=to` (within the history), in
    /// order, with its decoded changeset, until it breaks. Entries older than the held ones are
    /// read from `storage` a chunk at a time and decoded.
    pub fn walk<S: ServerStorage>(
        &self,
        storage: &mut S,
        from: u64,
        to: u64,
        mut visit: impl FnMut(&HistoryEntry, &Changeset) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        let to = to.min(self.len());
        let first_held = self.first_held();
        let mut version = from.max(1);
        while version <= to && version < first_held {
            let end = version
                .saturating_add(READ_CHUNK)
                .min(first_held)
                .min(to + 1);
            let entries = storage.read_history(version, end)?;
            if entries.len() as u64 != end - version {
                return Err(StorageError(format!(
                    "reading server versions {version} to {} gave {} entries",
                    end - 1,
                    entries.len()
                )));
            }
            for entry in entries {
                if entry.server_version != version {
                    return Err(StorageError(format!(
                        "the stored history has server version {} where {version} belongs",
                        entry.server_version
                    )));
                }
                let changeset = decode_stored(&entry, &self.limits)?;
                if visit(&entry, &changeset).is_break() {
                    return Ok(());
                }
                version += 1;
            }
        }
        let skip = usize::try_from(version.saturating_sub(first_held)).unwrap_or(usize::MAX);
        for (entry, changeset) in self.held.iter().skip(skip) {
            if entry.server_version > to || visit(entry, changeset).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// A stored entry's changeset, decoded within `limits`.
pub(crate) fn decode_stored(
    entry: &HistoryEntry,
    limits: &DecodeLimits,
) -> Result<Changeset, StorageError> {
    let instructions = decode_changeset(&entry.body, limits).map_err(|e| {
        StorageError(format!(
            "stored changeset {} does not decode: {e}",
            entry.server_version
        ))
    })?;
    Ok(Changeset {
        meta: entry_meta(entry),
        instructions,
    })
}

/// The metadata of the changeset an entry holds.
pub(crate) fn entry_meta(entry: &HistoryEntry) -> ChangesetMeta {
    ChangesetMeta {
        version: entry.server_version,
        last_integrated_remote_version: entry.client_version,
        origin_timestamp: entry.origin_timestamp,
        origin_file_ident: entry.origin_file_ident,
    }
}

/// The estimated memory of a held entry.
fn cost(entry: &HistoryEntry, instructions: &[Instruction]) -> usize {
    ENTRY_COST + entry.body.len() + instructions.len() * INSTRUCTION_COST
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changeset::encode_changeset;
    use crate::server::storage::MemoryStorage;

    fn entry(version: u64) -> HistoryEntry {
        HistoryEntry {
            server_version: version,
            origin_file_ident: version % 3,
            client_version: version,
            origin_timestamp: 1000 + version,
            original_size: 0,
            body: encode_changeset(&[]),
        }
    }

    /// A history of `count` entries, stored and flushed, holding about `budget` bytes.
    fn history(count: u64, budget: usize) -> (History, MemoryStorage) {
        let mut storage = MemoryStorage::new();
        let mut history = History::new(budget, DecodeLimits::default());
        for version in 1..=count {
            storage.append_history(&[entry(version)]).unwrap();
            history.push(entry(version), Vec::new());
        }
        storage.flush().unwrap();
        (history, storage)
    }

    fn walked(history: &History, storage: &mut MemoryStorage, from: u64, to: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        history
            .walk(storage, from, to, |e, c| {
                assert_eq!(e.server_version, c.meta.version);
                seen.push(e.server_version);
                ControlFlow::Continue(())
            })
            .unwrap();
        seen
    }

    #[test]
    fn holds_the_latest_entries_within_the_budget() {
        let one = cost(&entry(1), &[]);
        let (history, _) = history(10, one * 3);
        assert_eq!(history.held(), 3);
        assert_eq!(history.first_held(), 8);
        assert_eq!(history.len(), 10);
        let (none, _) = self::history(10, 0);
        assert_eq!(none.held(), 0);
        assert_eq!(none.first_held(), 11);
    }

    #[test]
    fn walks_stored_and_held_entries_in_order() {
        let total = READ_CHUNK * 2 + 10;
        let one = cost(&entry(1), &[]);
        for budget in [0, one * 5, usize::MAX] {
            let (history, mut storage) = history(total, budget);
            assert_eq!(
                walked(&history, &mut storage, 1, total),
                (1..=total).collect::<Vec<_>>()
            );
            assert_eq!(
                walked(&history, &mut storage, total - 7, total + 50),
                (total - 7..=total).collect::<Vec<_>>()
            );
            assert_eq!(walked(&history, &mut storage, 0, 3), vec![1, 2, 3]);
            assert!(walked(&history, &mut storage, total + 1, u64::MAX).is_empty());
        }
    }

    #[test]
    fn a_walk_stops_where_the_visitor_breaks() {
        let (history, mut storage) = history(50, 0);
        let mut seen = Vec::new();
        history
            .walk(&mut storage, 10, 50, |e, _| {
                seen.push(e.server_version);
                if e.server_version == 12 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!(seen, vec![10, 11, 12]);
    }

    #[test]
    fn metadata_covers_every_entry() {
        let (history, _) = history(20, 0);
        let body = encode_changeset(&[]).len() as u64;
        assert_eq!(history.made_at(7), 1007);
        assert_eq!(history.made_at(0), 0);
        assert_eq!(history.made_at(21), 0);
        assert_eq!(history.bytes_through(5), 5 * body);
        assert_eq!(history.bytes_through(99), 20 * body);
        assert_eq!(history.body_len(3), body);
        assert_eq!(history.meta(4).map(|m| m.origin_file_ident), Some(1));
    }

    #[test]
    fn a_storage_that_lost_entries_is_an_error() {
        let (history, _) = history(20, 0);
        let mut short = MemoryStorage::new();
        let error = history
            .walk(&mut short, 1, 20, |_, _| ControlFlow::Continue(()))
            .unwrap_err();
        assert!(error.0.contains("gave 0 entries"), "{error}");
    }
}
