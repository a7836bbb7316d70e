//! The native client's durable store: one SQLite file per client file (WAL, `synchronous=FULL`,
//! exclusive lock) holding eddy-core's client records (`eddy_core::client::persist`), written by
//! a thread of its own. Every storage write that queued up while the previous commit ran goes
//! into the next SQLite transaction (group commit), and callers wait for the sequence number of
//! their own write to become durable.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use eddy_core::changeset::DecodeLimits;
use eddy_core::client::persist::{restore, PersistBatch, FORMAT_VERSION};
use eddy_core::client::{PersistedState, StorageWrite};
use eddy_core::schema::Schema;
use rusqlite::{params, Connection, OptionalExtension};

/// `PRAGMA application_id` of an eddy client file ("EDYC").
const APPLICATION_ID: i32 = 0x4544_5943;
/// The SQLite layout version (`PRAGMA user_version`); the records inside carry their own.
const LAYOUT_VERSION: i32 = 1;

const CREATE: &str = "
    CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS pending (version INTEGER PRIMARY KEY, record BLOB NOT NULL);
";

/// An open client file.
#[derive(Debug)]
pub(crate) struct FileStore {
    db: Connection,
    path: PathBuf,
}

fn sql_error(path: &Path, e: &rusqlite::Error) -> String {
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    if busy {
        format!(
            "the client file {} is open in another client; close that one first (one client per file)",
            path.display()
        )
    } else {
        format!(
            "cannot use the client file {}: {e}; check that it is an eddy client file on a writable disk",
            path.display()
        )
    }
}

impl FileStore {
    /// Opens (creating if needed) the client file at `path` and reads what it holds: `None` for a
    /// new file. `declared` is the schema when the file stores none.
    pub(crate) fn open(
        path: &Path,
        declared: &Schema,
    ) -> Result<(FileStore, Option<PersistedState>), String> {
        let fail = |e: rusqlite::Error| sql_error(path, &e);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create the directory {}: {e}", parent.display()))?;
        }
        let db = Connection::open(path).map_err(fail)?;
        db.busy_timeout(std::time::Duration::ZERO).map_err(fail)?;
        // Held until the connection closes, so a second client on the same file is refused.
        db.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(fail)?;
        let mode: String = db
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(fail)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!(
                "cannot use the client file {}: SQLite refused write-ahead logging (journal mode {mode})",
                path.display()
            ));
        }
        db.pragma_update(None, "synchronous", "FULL")
            .map_err(fail)?;
        let application_id: i32 = db
            .pragma_query_value(None, "application_id", |row| row.get(0))
            .map_err(fail)?;
        let layout: i32 = db
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(fail)?;
        let tables: i64 = db
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(fail)?;
        if application_id == 0 && layout == 0 && tables == 0 {
            db.execute_batch(&format!(
                "BEGIN; {CREATE} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {LAYOUT_VERSION}; COMMIT;"
            ))
            .map_err(fail)?;
        } else if application_id != APPLICATION_ID {
            return Err(format!(
                "{} is an SQLite database but not an eddy client file; choose another path",
                path.display()
            ));
        } else if layout != LAYOUT_VERSION {
            return Err(format!(
                "the client file {} has layout version {layout}, but this version of eddy reads version {LAYOUT_VERSION} (records format {FORMAT_VERSION}); open it with the version of eddy that wrote it",
                path.display()
            ));
        }
        // Take the exclusive lock now, not at the first write, so that a second client on the
        // same file is refused at open even while this one only reads.
        db.execute_batch("BEGIN EXCLUSIVE; COMMIT;").map_err(fail)?;
        let store = FileStore {
            db,
            path: path.to_path_buf(),
        };
        let state = store.load(declared)?;
        Ok((store, state))
    }

    fn load(&self, declared: &Schema) -> Result<Option<PersistedState>, String> {
        let fail = |e: rusqlite::Error| sql_error(&self.path, &e);
        let damaged = |e: eddy_core::client::persist::PersistError| {
            format!("cannot open the client file {}: {e}", self.path.display())
        };
        let meta_record = |name: &str| {
            self.db
                .query_row("SELECT record FROM meta WHERE name = ?1", [name], |row| {
                    row.get::<_, Vec<u8>>(0)
                })
                .optional()
        };
        let Some(meta) = meta_record("file").map_err(fail)? else {
            return Ok(None);
        };
        let schema = meta_record("schema").map_err(fail)?;
        let records = |sql: &str| -> Result<Vec<Vec<u8>>, rusqlite::Error> {
            let mut statement = self.db.prepare(sql)?;
            let rows = statement.query_map([], |row| row.get::<_, Vec<u8>>(0))?;
            rows.collect()
        };
        let objects = records("SELECT record FROM objects").map_err(fail)?;
        let pending = records("SELECT record FROM pending ORDER BY version").map_err(fail)?;
        restore(
            &meta,
            schema.as_deref(),
            objects,
            pending,
            declared,
            &DecodeLimits::default(),
        )
        // This driver writes every object record in the commit of its write and never a
        // checkpoint marker, so restoring replays nothing and leaves nothing to checkpoint.
        .map(|restored| Some(restored.state))
        .map_err(damaged)
    }

    /// Writes one merged batch in one SQLite transaction; returns once it is durable.
    fn commit(&mut self, batch: &PersistBatch) -> Result<(), String> {
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| sql_error(&path, &e);
        let tx = self.db.transaction().map_err(fail)?;
        {
            let mut put = tx
                .prepare_cached("INSERT OR REPLACE INTO objects (key, record) VALUES (?1, ?2)")
                .map_err(fail)?;
            let mut delete = tx
                .prepare_cached("DELETE FROM objects WHERE key = ?1")
                .map_err(fail)?;
            for (key, record) in &batch.objects {
                match record {
                    Some(record) => put.execute(params![key, record]),
                    None => delete.execute([key]),
                }
                .map_err(fail)?;
            }
            if batch.clear_pending {
                tx.execute("DELETE FROM pending", []).map_err(fail)?;
            } else if batch.acknowledged > 0 {
                // Versions past i64::MAX are refused below, so clamping deletes the same rows.
                let through = i64::try_from(batch.acknowledged).unwrap_or(i64::MAX);
                tx.prepare_cached("DELETE FROM pending WHERE version <= ?1")
                    .and_then(|mut delete| delete.execute([through]))
                    .map_err(fail)?;
            }
            let mut put = tx
                .prepare_cached("INSERT OR REPLACE INTO pending (version, record) VALUES (?1, ?2)")
                .map_err(fail)?;
            for (version, record) in &batch.pending {
                let version = i64::try_from(*version).map_err(|_| {
                    format!(
                        "client version {version} is too large to store in {}",
                        path.display()
                    )
                })?;
                put.execute(params![version, record]).map_err(fail)?;
            }
            let mut put = tx
                .prepare_cached("INSERT OR REPLACE INTO meta (name, record) VALUES (?1, ?2)")
                .map_err(fail)?;
            if let Some(meta) = &batch.meta {
                put.execute(params!["file", meta]).map_err(fail)?;
            }
            if let Some(schema) = &batch.schema {
                put.execute(params!["schema", schema]).map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)
    }
}

/// What the writer thread has made durable.
#[derive(Debug, Default)]
struct Progress {
    /// Storage writes up to this sequence number are durable.
    durable: u64,
    /// Why writing stopped, if it did; nothing is written after an error.
    error: Option<String>,
    /// Whether the thread ended.
    stopped: bool,
}

/// The shared view of the writer's progress.
#[derive(Debug, Default)]
pub(crate) struct Durability {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Durability {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The highest sequence number durable so far, or why writing stopped.
    pub(crate) fn durable(&self) -> Result<u64, String> {
        let progress = self.lock();
        match &progress.error {
            Some(e) => Err(e.clone()),
            None => Ok(progress.durable),
        }
    }

    /// Blocks until storage writes up to `seq` are durable.
    pub(crate) fn wait_for(&self, seq: u64) -> Result<(), String> {
        let mut progress = self.lock();
        loop {
            if let Some(e) = &progress.error {
                return Err(e.clone());
            }
            if progress.durable >= seq {
                return Ok(());
            }
            if progress.stopped {
                return Err("the client's storage closed before the write was durable".into());
            }
            progress = self
                .changed
                .wait(progress)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }
}

enum Job {
    Write(u64, Box<StorageWrite>),
    Stop,
}

/// The handle of the writer thread: storage writes go in with increasing sequence numbers.
#[derive(Debug)]
pub(crate) struct Writer {
    jobs: Sender<Job>,
    durability: Arc<Durability>,
}

impl Writer {
    /// Hands a storage write to the writer thread.
    pub(crate) fn submit(&self, seq: u64, write: StorageWrite) {
        if self.jobs.send(Job::Write(seq, Box::new(write))).is_err() {
            self.durability.update(|p| {
                p.error
                    .get_or_insert_with(|| "the client's storage closed".to_string());
            });
        }
    }

    /// The writer's progress.
    pub(crate) fn durability(&self) -> &Arc<Durability> {
        &self.durability
    }
}

/// Ends the writer thread once it has written everything submitted before; joins it on drop.
#[derive(Debug)]
pub(crate) struct WriterThread {
    jobs: Sender<Job>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        // The thread may already have ended after an error; then there is nothing to stop.
        let _ = self.jobs.send(Job::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the writer thread of `store`; `on_durable` runs after every commit.
pub(crate) fn spawn_writer(
    store: FileStore,
    on_durable: impl Fn() + Send + 'static,
) -> Result<(Writer, WriterThread), String> {
    let (jobs, rx) = mpsc::channel();
    let durability = Arc::new(Durability::default());
    let progress = Arc::clone(&durability);
    let thread = std::thread::Builder::new()
        .name("eddy-client-store".into())
        .spawn(move || write_loop(store, &rx, &progress, &on_durable))
        .map_err(|e| format!("cannot start the client's storage thread: {e}"))?;
    Ok((
        Writer {
            jobs: jobs.clone(),
            durability,
        },
        WriterThread {
            jobs,
            thread: Some(thread),
        },
    ))
}

fn write_loop(
    mut store: FileStore,
    rx: &Receiver<Job>,
    durability: &Durability,
    on_durable: &dyn Fn(),
) {
    let mut stop = false;
    while !stop {
        let Ok(first) = rx.recv() else {
            break;
        };
        let mut batch = PersistBatch::new();
        let mut last = None;
        for job in std::iter::once(first).chain(rx.try_iter()) {
            match job {
                Job::Write(seq, write) => {
                    batch.add(*write);
                    last = Some(seq);
                }
                Job::Stop => {
                    stop = true;
                    break;
                }
            }
        }
        let Some(seq) = last else {
            continue;
        };
        match store.commit(&batch) {
            Ok(()) => durability.update(|p| p.durable = p.durable.max(seq)),
            Err(e) => {
                tracing::error!(error = %e, "the client's storage failed; nothing more is written or sent");
                durability.update(|p| p.error = Some(e));
                stop = true;
            }
        }
        on_durable();
    }
    durability.update(|p| p.stopped = true);
    on_durable();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use eddy_core::client::{FileMeta, PendingUpdate};

    fn write(version: u64) -> StorageWrite {
        StorageWrite {
            meta: FileMeta {
                last_client_version: version,
                ..FileMeta::default()
            },
            objects: Vec::new(),
            pending: PendingUpdate::Unchanged,
            schema: None,
        }
    }

    #[test]
    fn writes_become_durable_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.eddy");
        let (store, state) = FileStore::open(&path, &Schema::default()).unwrap();
        assert!(state.is_none());
        let (writer, thread) = spawn_writer(store, || {}).unwrap();
        for seq in 1..=20 {
            writer.submit(seq, write(seq));
        }
        writer.durability().wait_for(20).unwrap();
        assert_eq!(writer.durability().durable().unwrap(), 20);
        drop(thread);
        let (_, state) = FileStore::open(&path, &Schema::default()).unwrap();
        assert_eq!(state.unwrap().meta.last_client_version, 20);
    }

    #[test]
    fn an_acknowledgement_deletes_the_acknowledged_records_and_puts_the_rewritten() {
        use eddy_core::changeset::{Changeset, ChangesetMeta};
        let changeset = |version, origin_timestamp| Changeset {
            meta: ChangesetMeta {
                version,
                origin_timestamp,
                ..ChangesetMeta::default()
            },
            instructions: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.eddy");
        let (store, _) = FileStore::open(&path, &Schema::default()).unwrap();
        let (writer, thread) = spawn_writer(store, || {}).unwrap();
        for version in 1..=5 {
            let mut w = write(version);
            w.pending = PendingUpdate::Appended {
                changeset: changeset(version, 0),
                body: eddy_core::changeset::encode_changeset(&[]).into(),
            };
            writer.submit(version, w);
        }
        let mut w = write(5);
        w.pending = PendingUpdate::Delta {
            acknowledged: 3,
            rewritten: vec![changeset(5, 7)],
        };
        writer.submit(6, w);
        writer.durability().wait_for(6).unwrap();
        drop(thread);
        let (_, state) = FileStore::open(&path, &Schema::default()).unwrap();
        let pending = state.unwrap().pending;
        assert_eq!(pending, [changeset(4, 0), changeset(5, 7)]);
    }

    #[test]
    fn a_second_client_on_one_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.eddy");
        let (store, _) = FileStore::open(&path, &Schema::default()).unwrap();
        let err = FileStore::open(&path, &Schema::default()).unwrap_err();
        assert!(err.contains("open in another client"), "{err}");
        drop(store);
        let (reopened, _) = FileStore::open(&path, &Schema::default()).unwrap();
        let err = FileStore::open(&path, &Schema::default()).unwrap_err();
        assert!(err.contains("open in another client"), "{err}");
        drop(reopened);
    }

    #[test]
    fn foreign_and_damaged_files_are_refused_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.eddy");
        std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
        let err = FileStore::open(&garbage, &Schema::default()).unwrap_err();
        assert!(err.contains("not a database"), "{err}");

        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let err = FileStore::open(&foreign, &Schema::default()).unwrap_err();
        assert!(err.contains("not an eddy client file"), "{err}");

        let damaged = dir.path().join("damaged.eddy");
        let (store, _) = FileStore::open(&damaged, &Schema::default()).unwrap();
        store
            .db
            .execute(
                "INSERT INTO meta (name, record) VALUES ('file', x'01ff')",
                [],
            )
            .unwrap();
        drop(store);
        let err = FileStore::open(&damaged, &Schema::default()).unwrap_err();
        assert!(err.contains("is damaged"), "{err}");
        assert!(err.contains("damaged.eddy"), "{err}");
    }
}
