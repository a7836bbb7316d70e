//! SQLite storage for the server: [`SqliteStorage`] implements the core's `ServerStorage` on one
//! file `<data-dir>/eddy.sqlite` (WAL, `synchronous=FULL`), with numbered schema migrations.
//! Appends go into one open transaction that `flush` commits, so one fsync covers every message
//! the engine handled since the last flush (group commit).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use eddy_core::protocol::IngestStatusEntry;
use eddy_core::server::view::{ObjectState, StoredView, ViewDelta};
use eddy_core::server::{
    ClientFileRecord, HistoryEntry, IngestRecord, ServerStorage, StorageError, StoredIngestStatus,
    StoredState,
};
use eddy_core::value::{parse_ejson, EjsonMode, PrimaryKey, Value};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::ServerError;

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "eddy.sqlite";

/// Schema migrations, in order; migration `i` brings the database to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
     CREATE TABLE history (
         server_version INTEGER PRIMARY KEY,
         origin_file_ident INTEGER NOT NULL,
         client_version INTEGER NOT NULL,
         origin_timestamp INTEGER NOT NULL,
         original_size INTEGER NOT NULL,
         body BLOB NOT NULL
     );
     CREATE TABLE client_files (
         ident INTEGER PRIMARY KEY,
         salt INTEGER NOT NULL,
         user_id TEXT NOT NULL
     );
     CREATE TABLE users (
         id TEXT PRIMARY KEY,
         email TEXT UNIQUE,
         password_hash TEXT
     );
     CREATE TABLE refresh_tokens (
         token TEXT PRIMARY KEY,
         user_id TEXT NOT NULL,
         revoked INTEGER NOT NULL DEFAULT 0
     );",
    // Data Ingest: asymmetric objects are stored as documents, never in the history.
    "CREATE TABLE ingested (
         collection TEXT NOT NULL,
         pk TEXT NOT NULL,
         server_version INTEGER NOT NULL,
         origin_file_ident INTEGER NOT NULL,
         origin_timestamp INTEGER NOT NULL,
         document TEXT NOT NULL,
         PRIMARY KEY (collection, pk)
     );
     CREATE INDEX ingested_by_origin ON ingested (origin_file_ident);",
    // Flexible-sync views: which objects each client file holds (eddy-core's `FileView`).
    "CREATE TABLE client_views (
         ident INTEGER PRIMARY KEY,
         view BLOB NOT NULL
     );",
    // Data Ingest: each device's latest queue report (INGEST_STATUS) that held anything, one row
    // per asymmetric collection, so the figures survive a restart.
    "CREATE TABLE ingest_status (
         ident INTEGER NOT NULL,
         collection TEXT NOT NULL,
         objects INTEGER NOT NULL,
         bytes INTEGER NOT NULL,
         oldest_age_ms INTEGER NOT NULL,
         reported_ms INTEGER NOT NULL,
         PRIMARY KEY (ident, collection)
     );",
    // Nothing reads ingested objects by origin; the index cost every ingested object a third
    // b-tree insert.
    "DROP INDEX IF EXISTS ingested_by_origin;",
    // Flexible-sync views stored per object, so that an object entering a view writes one row
    // instead of the whole view; `client_views.view` keeps the header. A view stored whole
    // before this migration reads as before and is stored per object with its next change.
    "CREATE TABLE client_view_objects (
         ident INTEGER NOT NULL,
         object BLOB NOT NULL,
         held INTEGER NOT NULL,
         pending INTEGER NOT NULL,
         last_reset INTEGER,
         PRIMARY KEY (ident, object)
     ) WITHOUT ROWID;",
    // Data Ingest in one b-tree: the rows keyed by (collection, pk) themselves, instead of a
    // rowid table plus a second b-tree for that key (two b-tree inserts per object). Integer
    // keys become SQLite integers, so keys written in increasing order append to the tree
    // (their canonical EJSON text sorted "10" before "9" and scattered them); other keys keep
    // their canonical EJSON text. Admin pages go by this key.
    "CREATE TABLE ingested_by_key (
         collection TEXT NOT NULL,
         pk NOT NULL,
         server_version INTEGER NOT NULL,
         origin_file_ident INTEGER NOT NULL,
         origin_timestamp INTEGER NOT NULL,
         document TEXT NOT NULL,
         PRIMARY KEY (collection, pk)
     ) WITHOUT ROWID;
     INSERT INTO ingested_by_key
         SELECT collection,
                CASE
                    WHEN json_valid(pk) AND json_type(pk, '$.\"$numberInt\"') = 'text'
                        THEN CAST(json_extract(pk, '$.\"$numberInt\"') AS INTEGER)
                    WHEN json_valid(pk) AND json_type(pk, '$.\"$numberLong\"') = 'text'
                        THEN CAST(json_extract(pk, '$.\"$numberLong\"') AS INTEGER)
                    ELSE pk
                END,
                server_version, origin_file_ident, origin_timestamp, document
         FROM ingested ORDER BY rowid;
     DROP TABLE ingested;
     ALTER TABLE ingested_by_key RENAME TO ingested;",
];

/// The page cache of the engine's connection: 32 MiB (a negative `cache_size` counts KiB). One
/// group commit can hold hundreds of uploads of ingested objects (megabytes of table and index
/// pages); with SQLite's default of 2 MiB it spilled dirty pages into the WAL before its commit,
/// about 5% of the engine thread's time in an ingest run.
const ENGINE_CACHE_SIZE: i64 = -32 * 1024;

/// How long a connection waits for another one's write lock before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Stores an unsigned 64-bit number in SQLite's signed integer, keeping every bit.
fn to_sql(n: u64) -> i64 {
    i64::from_ne_bytes(n.to_ne_bytes())
}

/// Reads back a number stored by [`to_sql`].
fn from_sql(n: i64) -> u64 {
    u64::from_ne_bytes(n.to_ne_bytes())
}

/// The path of the database file in `data_dir`.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DATABASE_FILE)
}

/// Opens (creating when missing) the database in `data_dir`, sets WAL and full sync, and brings
/// its schema up to date.
pub fn open_database(data_dir: &Path) -> Result<Connection, ServerError> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        ServerError::Internal(format!(
            "cannot create the data directory \"{}\": {e}",
            data_dir.display()
        ))
    })?;
    let conn = Connection::open(database_path(data_dir))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&conn)?;
    Ok(conn)
}

/// Applies the migrations the database has not seen yet, each in its own transaction.
fn migrate(conn: &Connection) -> Result<(), ServerError> {
    migrate_with(conn, MIGRATIONS)
}

/// [`migrate`] with `migrations` as the list of all migrations (tests bring a database to an
/// older version with a prefix of [`MIGRATIONS`]).
fn migrate_with(conn: &Connection, migrations: &[&str]) -> Result<(), ServerError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let current: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .optional()?
        .flatten();
    let current = usize::try_from(current.unwrap_or(0)).unwrap_or(usize::MAX);
    if current > migrations.len() {
        return Err(ServerError::Storage(format!(
            "the database is at schema version {current}, newer than this server's {}; run a newer eddy",
            migrations.len()
        )));
    }
    for (index, sql) in migrations.iter().enumerate().skip(current) {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; INSERT INTO schema_version (version) VALUES ({version}); COMMIT;"
        ))?;
    }
    Ok(())
}

/// A primary key as stored in the `ingested` table: canonical EJSON text. Integer and string
/// keys (the usual ones) are written directly, without building a `serde_json::Value` first.
pub fn primary_key_text(key: &PrimaryKey) -> String {
    match key {
        PrimaryKey::Int(i) if i32::try_from(*i).is_ok() => format!("{{\"$numberInt\":\"{i}\"}}"),
        PrimaryKey::Int(i) => format!("{{\"$numberLong\":\"{i}\"}}"),
        PrimaryKey::String(s) => serde_json::to_string(s).unwrap_or_else(|_| {
            Value::from(key.clone())
                .to_ejson(EjsonMode::Canonical)
                .to_string()
        }),
        PrimaryKey::ObjectId(_) | PrimaryKey::Uuid(_) => Value::from(key.clone())
            .to_ejson(EjsonMode::Canonical)
            .to_string(),
    }
}

/// A primary key as the `ingested` table keys it: an integer key as an SQLite integer (keys
/// written in increasing order then append to the table's b-tree), any other as its canonical
/// EJSON text ([`primary_key_text`]).
pub fn ingested_key(key: &PrimaryKey) -> SqlValue {
    match key {
        PrimaryKey::Int(i) => SqlValue::Integer(*i),
        _ => SqlValue::Text(primary_key_text(key)),
    }
}

/// Reads back an `ingested` key written by [`ingested_key`].
pub fn ingested_key_from_sql(value: ValueRef<'_>) -> Result<PrimaryKey, String> {
    match value {
        ValueRef::Integer(i) => Ok(PrimaryKey::Int(i)),
        ValueRef::Text(text) => {
            let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
            parse_ejson(text)
                .map_err(|e| format!("stored primary key {text}: {e}"))
                .and_then(|v| {
                    PrimaryKey::try_from(v)
                        .map_err(|e| format!("stored primary key {text} is a {e}"))
                })
        }
        other => Err(format!("stored primary key of type {}", other.data_type())),
    }
}

/// The rows per `INSERT` statement `insert_ingested` uses, largest first: an upload's objects
/// go in chunks of the largest that fits what is left.
const INSERT_ROWS: [usize; 4] = [64, 16, 4, 1];

/// The statement inserting `rows` ingested objects (six parameters each); the first insert of a
/// key wins, also within one statement.
fn insert_ingested_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR IGNORE INTO ingested (collection, pk, server_version, origin_file_ident,
             origin_timestamp, document) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?)");
    }
    sql
}

/// How much of the history is durable: what the admin endpoint reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HistorySummary {
    /// The number of committed history entries.
    pub count: u64,
    /// For each client file ident (as a decimal string), its highest committed client version.
    pub latest_client_versions: BTreeMap<String, u64>,
}

/// Reads what is committed in the history (readers never see an open transaction's appends).
pub fn history_summary(conn: &Connection) -> Result<HistorySummary, ServerError> {
    let count: i64 = conn.query_row("SELECT COUNT(*) FROM history", [], |r| r.get(0))?;
    let mut stmt = conn.prepare(
        "SELECT origin_file_ident, MAX(client_version) FROM history GROUP BY origin_file_ident",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
    let mut latest_client_versions = BTreeMap::new();
    for row in rows {
        let (ident, version) = row?;
        latest_client_versions.insert(from_sql(ident).to_string(), from_sql(version));
    }
    Ok(HistorySummary {
        count: from_sql(count),
        latest_client_versions,
    })
}

/// The server file's durable storage in SQLite.
#[derive(Debug)]
pub struct SqliteStorage {
    conn: Connection,
    in_transaction: bool,
}

fn storage_error(e: rusqlite::Error) -> StorageError {
    StorageError(e.to_string())
}

impl SqliteStorage {
    /// Opens the storage in `data_dir`, creating the database when missing.
    pub fn open(data_dir: &Path) -> Result<Self, ServerError> {
        let conn = open_database(data_dir)?;
        conn.pragma_update(None, "cache_size", ENGINE_CACHE_SIZE)?;
        Ok(SqliteStorage {
            conn,
            in_transaction: false,
        })
    }

    fn begin(&mut self) -> Result<(), StorageError> {
        if !self.in_transaction {
            self.conn.execute_batch("BEGIN").map_err(storage_error)?;
            self.in_transaction = true;
        }
        Ok(())
    }
}

impl ServerStorage for SqliteStorage {
    fn load(&mut self) -> Result<StoredState, StorageError> {
        let salt: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'history_salt'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(storage_error)?;
        let mut stmt = self
            .conn
            .prepare("SELECT ident, salt, user_id FROM client_files ORDER BY ident")
            .map_err(storage_error)?;
        let client_files = stmt
            .query_map([], |r| {
                Ok(ClientFileRecord {
                    ident: from_sql(r.get(0)?),
                    salt: from_sql(r.get(1)?),
                    user_id: r.get(2)?,
                })
            })
            .map_err(storage_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage_error)?;
        let mut stmt = self
            .conn
            .prepare("SELECT ident, view FROM client_views")
            .map_err(storage_error)?;
        let mut views: BTreeMap<u64, StoredView> = stmt
            .query_map([], |r| {
                Ok((
                    from_sql(r.get(0)?),
                    StoredView {
                        header: r.get(1)?,
                        objects: BTreeMap::new(),
                    },
                ))
            })
            .map_err(storage_error)?
            .collect::<Result<_, _>>()
            .map_err(storage_error)?;
        let mut stmt = self
            .conn
            .prepare("SELECT ident, object, held, pending, last_reset FROM client_view_objects")
            .map_err(storage_error)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    from_sql(r.get(0)?),
                    r.get::<_, Vec<u8>>(1)?,
                    ObjectState {
                        held: r.get(2)?,
                        pending: r.get(3)?,
                        last_reset: r.get::<_, Option<i64>>(4)?.map(from_sql),
                    },
                ))
            })
            .map_err(storage_error)?;
        for row in rows {
            let (ident, object, state) = row.map_err(storage_error)?;
            views
                .entry(ident)
                .or_default()
                .objects
                .insert(object, state);
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT ident, collection, objects, bytes, oldest_age_ms, reported_ms
                 FROM ingest_status ORDER BY ident, collection",
            )
            .map_err(storage_error)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    from_sql(r.get(0)?),
                    from_sql(r.get(5)?),
                    IngestStatusEntry {
                        collection: r.get(1)?,
                        objects: from_sql(r.get(2)?),
                        bytes: from_sql(r.get(3)?),
                        oldest_age_ms: from_sql(r.get(4)?),
                    },
                ))
            })
            .map_err(storage_error)?;
        let mut ingest_status = BTreeMap::<u64, StoredIngestStatus>::new();
        for row in rows {
            let (ident, reported_ms, entry) = row.map_err(storage_error)?;
            let status = ingest_status.entry(ident).or_default();
            status.reported_ms = reported_ms;
            status.collections.push(entry);
        }
        Ok(StoredState {
            history_salt: salt.map_or(0, from_sql),
            client_files,
            views,
            ingest_status,
        })
    }

    fn set_history_salt(&mut self, salt: u64) -> Result<(), StorageError> {
        self.begin()?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('history_salt', ?1)",
                params![to_sql(salt)],
            )
            .map_err(storage_error)?;
        Ok(())
    }

    fn read_history(&mut self, from: u64, to: u64) -> Result<Vec<HistoryEntry>, StorageError> {
        // Versions are stored as SQLite integers; none is above `i64::MAX`.
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT server_version, origin_file_ident, client_version, origin_timestamp,
                        original_size, body FROM history
                 WHERE server_version >= ?1 AND server_version < ?2 ORDER BY server_version",
            )
            .map_err(storage_error)?;
        let entries = stmt
            .query_map(params![clamp(from), clamp(to)], |r| {
                Ok(HistoryEntry {
                    server_version: from_sql(r.get(0)?),
                    origin_file_ident: from_sql(r.get(1)?),
                    client_version: from_sql(r.get(2)?),
                    origin_timestamp: from_sql(r.get(3)?),
                    original_size: from_sql(r.get(4)?),
                    body: r.get(5)?,
                })
            })
            .map_err(storage_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage_error)?;
        Ok(entries)
    }

    fn append_history(&mut self, entries: &[HistoryEntry]) -> Result<(), StorageError> {
        self.begin()?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO history (server_version, origin_file_ident, client_version,
                     origin_timestamp, original_size, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(storage_error)?;
        for e in entries {
            stmt.execute(params![
                to_sql(e.server_version),
                to_sql(e.origin_file_ident),
                to_sql(e.client_version),
                to_sql(e.origin_timestamp),
                to_sql(e.original_size),
                e.body,
            ])
            .map_err(storage_error)?;
        }
        Ok(())
    }

    fn insert_ingested(&mut self, records: &[IngestRecord]) -> Result<(), StorageError> {
        self.begin()?;
        // Several rows per statement: most of SQLite's cost per row beyond the b-tree inserts is
        // running and resetting a statement. Chunks of the largest size that fits keep the
        // number of distinct (cached) statements to a few.
        let mut rest = records;
        while !rest.is_empty() {
            let rows = INSERT_ROWS
                .iter()
                .copied()
                .find(|&rows| rows <= rest.len())
                .unwrap_or(1);
            let (chunk, tail) = rest.split_at(rows.min(rest.len()));
            rest = tail;
            let mut stmt = self
                .conn
                .prepare_cached(&insert_ingested_sql(chunk.len()))
                .map_err(storage_error)?;
            for (i, r) in chunk.iter().enumerate() {
                let at = i * 6;
                stmt.raw_bind_parameter(at + 1, &r.object.collection)
                    .and_then(|()| stmt.raw_bind_parameter(at + 2, ingested_key(&r.object.key)))
                    .and_then(|()| stmt.raw_bind_parameter(at + 3, to_sql(r.server_version)))
                    .and_then(|()| stmt.raw_bind_parameter(at + 4, to_sql(r.origin_file_ident)))
                    .and_then(|()| stmt.raw_bind_parameter(at + 5, to_sql(r.origin_timestamp)))
                    .and_then(|()| stmt.raw_bind_parameter(at + 6, r.object.text.as_str()))
                    .map_err(storage_error)?;
            }
            stmt.raw_execute().map_err(storage_error)?;
        }
        Ok(())
    }

    fn add_client_file(&mut self, record: &ClientFileRecord) -> Result<(), StorageError> {
        self.begin()?;
        self.conn
            .execute(
                "INSERT INTO client_files (ident, salt, user_id) VALUES (?1, ?2, ?3)",
                params![to_sql(record.ident), to_sql(record.salt), record.user_id],
            )
            .map_err(storage_error)?;
        Ok(())
    }

    fn save_view(&mut self, file_ident: u64, delta: &ViewDelta) -> Result<(), StorageError> {
        self.begin()?;
        let ident = to_sql(file_ident);
        if let Some(header) = &delta.header {
            self.conn
                .prepare_cached("INSERT OR REPLACE INTO client_views (ident, view) VALUES (?1, ?2)")
                .and_then(|mut stmt| stmt.execute(params![ident, header]))
                .map_err(storage_error)?;
        }
        if delta.whole {
            self.conn
                .prepare_cached("DELETE FROM client_view_objects WHERE ident = ?1")
                .and_then(|mut stmt| stmt.execute(params![ident]))
                .map_err(storage_error)?;
        }
        let mut write = self
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO client_view_objects (ident, object, held, pending, last_reset)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(storage_error)?;
        let mut delete = self
            .conn
            .prepare_cached("DELETE FROM client_view_objects WHERE ident = ?1 AND object = ?2")
            .map_err(storage_error)?;
        for (object, state) in &delta.objects {
            match state {
                Some(state) => write.execute(params![
                    ident,
                    object,
                    state.held,
                    state.pending,
                    state.last_reset.map(to_sql)
                ]),
                // A whole delta started from no rows.
                None if delta.whole => continue,
                None => delete.execute(params![ident, object]),
            }
            .map_err(storage_error)?;
        }
        Ok(())
    }

    fn save_ingest_status(
        &mut self,
        file_ident: u64,
        status: Option<&StoredIngestStatus>,
    ) -> Result<(), StorageError> {
        self.begin()?;
        self.conn
            .prepare_cached("DELETE FROM ingest_status WHERE ident = ?1")
            .and_then(|mut stmt| stmt.execute(params![to_sql(file_ident)]))
            .map_err(storage_error)?;
        let Some(status) = status else {
            return Ok(());
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO ingest_status
                     (ident, collection, objects, bytes, oldest_age_ms, reported_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(storage_error)?;
        for entry in &status.collections {
            stmt.execute(params![
                to_sql(file_ident),
                entry.collection,
                to_sql(entry.objects),
                to_sql(entry.bytes),
                to_sql(entry.oldest_age_ms),
                to_sql(status.reported_ms),
            ])
            .map_err(storage_error)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        if self.in_transaction {
            self.conn.execute_batch("COMMIT").map_err(storage_error)?;
            self.in_transaction = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_core::value::Document;
    use proptest::prelude::*;

    fn entry(server_version: u64, body: Vec<u8>) -> HistoryEntry {
        HistoryEntry {
            server_version,
            origin_file_ident: u64::MAX - server_version,
            client_version: server_version * 3,
            origin_timestamp: 1_700_000_000_000 + server_version,
            original_size: body.len() as u64,
            body,
        }
    }

    #[test]
    fn round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let file = ClientFileRecord {
            ident: 42,
            salt: u64::MAX,
            user_id: "u1".into(),
        };
        {
            let mut s = SqliteStorage::open(dir.path()).unwrap();
            assert_eq!(s.load().unwrap().history_salt, 0);
            s.set_history_salt(7).unwrap();
            s.add_client_file(&file).unwrap();
            s.append_history(&[entry(1, vec![1, 2]), entry(2, vec![])])
                .unwrap();
            s.flush().unwrap();
            s.append_history(&[entry(3, vec![9; 100])]).unwrap();
            s.flush().unwrap();
        }
        let mut s = SqliteStorage::open(dir.path()).unwrap();
        let state = s.load().unwrap();
        assert_eq!(state.history_salt, 7);
        assert_eq!(state.client_files, vec![file]);
        assert_eq!(s.read_history(2, 3).unwrap(), vec![entry(2, vec![])]);
        assert!(s.read_history(4, u64::MAX).unwrap().is_empty());
        assert_eq!(
            s.read_history(0, u64::MAX).unwrap(),
            vec![
                entry(1, vec![1, 2]),
                entry(2, vec![]),
                entry(3, vec![9; 100])
            ]
        );
        let summary = history_summary(&s.conn).unwrap();
        assert_eq!(summary.count, 3);
        assert_eq!(
            summary
                .latest_client_versions
                .get(&(u64::MAX - 1).to_string()),
            Some(&3)
        );
    }

    #[test]
    fn views_are_stored_change_by_change_and_read_back_whole() {
        use eddy_core::server::view::FileView;
        let dir = tempfile::tempdir().unwrap();
        let object = |k: i64| ("Item".to_owned(), PrimaryKey::Int(k));
        let store = |view: &mut FileView| {
            let mut s = SqliteStorage::open(dir.path()).unwrap();
            if let Some(delta) = view.delta() {
                s.save_view(3, &delta).unwrap();
            }
            s.flush().unwrap();
            view.saved();
            FileView::from_stored(&s.load().unwrap().views[&3]).unwrap()
        };
        let mut view = FileView::empty();
        view.hold((0..100).map(object));
        assert_eq!(store(&mut view), view);
        view.owe_reset(object(200));
        view.release(object(5));
        view.record_reset(object(7), 9, false);
        let delta = view.delta().unwrap();
        assert_eq!(delta.objects.len(), 3, "one row per changed object");
        assert_eq!(store(&mut view), view);
        let read = store(&mut view);
        assert!(!read.holds("Item", &PrimaryKey::Int(5)));
        assert!(!read.holds("Item", &PrimaryKey::Int(7)));
        assert!(read.holds("Item", &PrimaryKey::Int(99)));
        assert_eq!(read.reset_since(9), vec![object(7)]);
        view.store_failed();
        assert_eq!(store(&mut view), view);
        let rows: i64 = open_database(dir.path())
            .unwrap()
            .query_row("SELECT COUNT(*) FROM client_view_objects", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 101, "98 held, 5 and 200 owed a reset, 7 reset once");
    }

    #[test]
    fn unflushed_appends_are_lost_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SqliteStorage::open(dir.path()).unwrap();
            s.append_history(&[entry(1, vec![1])]).unwrap();
            s.flush().unwrap();
            s.append_history(&[entry(2, vec![2])]).unwrap();
            s.add_client_file(&ClientFileRecord {
                ident: 5,
                salt: 1,
                user_id: "u".into(),
            })
            .unwrap();
        }
        let mut s = SqliteStorage::open(dir.path()).unwrap();
        assert_eq!(
            s.read_history(1, u64::MAX).unwrap(),
            vec![entry(1, vec![1])]
        );
        assert!(s.load().unwrap().client_files.is_empty());
    }

    #[test]
    fn readers_see_only_committed_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStorage::open(dir.path()).unwrap();
        let reader = open_database(dir.path()).unwrap();
        s.append_history(&[entry(1, vec![1])]).unwrap();
        assert_eq!(history_summary(&reader).unwrap().count, 0);
        s.flush().unwrap();
        assert_eq!(history_summary(&reader).unwrap().count, 1);
    }

    #[test]
    fn ingest_queue_reports_survive_a_reopen_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |collection: &str, objects| IngestStatusEntry {
            collection: collection.into(),
            objects,
            bytes: objects * 90,
            oldest_age_ms: 1_500,
        };
        let status = StoredIngestStatus {
            reported_ms: 1_800_000_000_000,
            collections: vec![entry("Reading", 12), entry("Sample", 0)],
        };
        {
            let mut s = SqliteStorage::open(dir.path()).unwrap();
            s.save_ingest_status(7, Some(&StoredIngestStatus::default()))
                .unwrap();
            s.save_ingest_status(7, Some(&status)).unwrap();
            s.save_ingest_status(u64::MAX, Some(&status)).unwrap();
            s.flush().unwrap();
            s.save_ingest_status(u64::MAX, None).unwrap();
            // Not flushed: lost, as a killed server would lose it.
            s.save_ingest_status(9, Some(&status)).unwrap();
        }
        let state = SqliteStorage::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(
            state.ingest_status,
            BTreeMap::from([(7, status.clone()), (u64::MAX, status.clone())])
        );
        let mut s = SqliteStorage::open(dir.path()).unwrap();
        s.save_ingest_status(u64::MAX, None).unwrap();
        s.flush().unwrap();
        assert_eq!(
            s.load().unwrap().ingest_status,
            BTreeMap::from([(7, status)])
        );
    }

    #[test]
    fn primary_keys_are_written_as_canonical_ejson() {
        let keys = [
            PrimaryKey::Int(0),
            PrimaryKey::Int(-7),
            PrimaryKey::Int(i64::from(i32::MAX)),
            PrimaryKey::Int(i64::from(i32::MIN) - 1),
            PrimaryKey::Int(i64::MIN),
            PrimaryKey::Int(i64::MAX),
            PrimaryKey::String("greenhouse-\"7\"\n\u{e9}\u{1F600}".into()),
            PrimaryKey::String(String::new()),
            PrimaryKey::ObjectId(eddy_core::value::ObjectId([7; 12])),
        ];
        for key in keys {
            assert_eq!(
                primary_key_text(&key),
                Value::from(key.clone())
                    .to_ejson(EjsonMode::Canonical)
                    .to_string(),
                "{key:?}"
            );
        }
    }

    #[test]
    fn ingested_objects_are_stored_once_whatever_the_statement_size() {
        use eddy_core::ingest::IngestedObject;
        let record = |key: i64, version: u64| IngestRecord {
            server_version: version,
            origin_file_ident: 3,
            origin_timestamp: 1_800_000_000_000,
            object: IngestedObject::new(
                "Reading".into(),
                PrimaryKey::Int(key),
                &Document::from([
                    ("_id".to_owned(), Value::Int(key)),
                    ("celsius".to_owned(), Value::Double(version as f64)),
                ]),
            ),
        };
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStorage::open(dir.path()).unwrap();
        // 101 rows (64 + 16 + 16 + 4 + 1), then keys that are already stored, or repeated
        // within one statement: the first insert of each key wins.
        let first: Vec<IngestRecord> = (0..101).map(|k| record(k, 1)).collect();
        s.insert_ingested(&first).unwrap();
        let again: Vec<IngestRecord> = (95..110).chain(105..120).map(|k| record(k, 2)).collect();
        s.insert_ingested(&again).unwrap();
        s.flush().unwrap();
        let rows: Vec<(i64, i64, String)> = s
            .conn
            .prepare("SELECT pk, server_version, document FROM ingested ORDER BY pk")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 120);
        for (key, (pk, version, document)) in (0..120).zip(&rows) {
            let expected = if key < 101 { 1 } else { 2 };
            assert_eq!(*pk, key);
            assert_eq!(*version, expected, "{key}");
            assert_eq!(document, &record(key, expected as u64).object.text);
        }
    }

    #[test]
    fn ingested_objects_stored_before_the_keyed_table_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(database_path(dir.path())).unwrap();
        // A data directory of the version before: a rowid table with text keys.
        migrate_with(&conn, &MIGRATIONS[..6]).unwrap();
        let keys = [
            PrimaryKey::Int(12),
            PrimaryKey::Int(9),
            PrimaryKey::Int(i64::MIN),
            PrimaryKey::Int(i64::MAX),
            PrimaryKey::String("greenhouse-\"7\"".into()),
            PrimaryKey::ObjectId(eddy_core::value::ObjectId([7; 12])),
        ];
        for (n, key) in keys.iter().enumerate() {
            conn.execute(
                "INSERT INTO ingested VALUES ('Reading', ?1, ?2, 3, 4, ?3)",
                params![primary_key_text(key), n as i64, format!("{{\"n\":{n}}}")],
            )
            .unwrap();
        }
        drop(conn);
        let s = SqliteStorage::open(dir.path()).unwrap();
        for (n, key) in keys.iter().enumerate() {
            let (version, document): (i64, String) = s
                .conn
                .query_row(
                    "SELECT server_version, document FROM ingested
                     WHERE collection = 'Reading' AND pk = ?1",
                    [ingested_key(key)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!((version, document), (n as i64, format!("{{\"n\":{n}}}")));
        }
        let order: Vec<PrimaryKey> = s
            .conn
            .prepare("SELECT pk FROM ingested ORDER BY pk")
            .unwrap()
            .query_map([], |r| Ok(ingested_key_from_sql(r.get_ref(0)?).unwrap()))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // Integer keys by value, before the text keys.
        let ints = [i64::MIN, 9, 12, i64::MAX].map(PrimaryKey::Int);
        assert_eq!((order.len(), &order[..4]), (6, &ints[..]));
    }

    #[test]
    fn newer_schema_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_database(dir.path()).unwrap();
        conn.execute("INSERT INTO schema_version (version) VALUES (99)", [])
            .unwrap();
        drop(conn);
        let err = SqliteStorage::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("run a newer eddy"), "{err}");
    }

    #[test]
    fn a_gap_in_the_history_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStorage::open(dir.path()).unwrap();
        let empty = eddy_core::changeset::encode_changeset(&[]);
        s.append_history(&[entry(1, empty.clone()), entry(3, empty)])
            .unwrap();
        s.flush().unwrap();
        #[derive(Debug)]
        struct NoAuth;
        impl eddy_core::server::Authenticator for NoAuth {
            fn authenticate(
                &self,
                _: &str,
                _: u64,
            ) -> Result<eddy_core::server::AuthenticatedUser, eddy_core::server::AuthError>
            {
                Err(eddy_core::server::AuthError::Invalid(
                    "no tokens here".into(),
                ))
            }
        }
        let config = eddy_core::server::ServerConfig::new(eddy_core::sim::sim_schema(), 1);
        let error = eddy_core::server::ServerEngine::new(config, s, NoAuth).unwrap_err();
        assert!(error.to_string().contains("gap-free"), "{error}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn any_history_round_trips(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20),
            fields in any::<(u64, u64, u64, u64)>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let history: Vec<HistoryEntry> = (1u64..)
                .zip(bodies)
                .map(|(v, body)| HistoryEntry {
                    server_version: v,
                    origin_file_ident: fields.0,
                    client_version: fields.1.wrapping_add(v),
                    origin_timestamp: fields.2,
                    original_size: fields.3,
                    body,
                })
                .collect();
            {
                let mut s = SqliteStorage::open(dir.path()).unwrap();
                s.set_history_salt(fields.0).unwrap();
                s.append_history(&history).unwrap();
                s.flush().unwrap();
            }
            let mut s = SqliteStorage::open(dir.path()).unwrap();
            prop_assert_eq!(s.load().unwrap().history_salt, fields.0);
            prop_assert_eq!(s.read_history(1, u64::MAX).unwrap(), history);
        }
    }
}
