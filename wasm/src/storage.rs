//! IndexedDB persistence through rexie: one database per app, user and path, holding the records
//! of `eddy_core::client::persist` as `Uint8Array`s in three object stores: `objects` (one record
//! per object, keyed by `object_record_key`), `pending` (local changesets not yet integrated by
//! the server, keyed by client version) and `meta` (`file`: identity, cursors, subscriptions and
//! the outstanding transaction; `schema`).
//!
//! The session's `StorageWrite`s are applied in order; an acknowledgement deletes the pending
//! records it covers by key range and puts only the changesets a download rewrote. Every batch that accumulated while the
//! previous one was being written goes into one IndexedDB transaction (group commit). Writes go
//! through the core's `WriteAhead`: a batch of local writes commits only its pending changeset
//! records and the file meta, which is all a restore needs to redo it, and the object records it
//! changed follow in a checkpoint transaction after the write has resolved.

use eddy_core::changeset::DecodeLimits;
use std::cell::RefCell;

use eddy_core::client::persist::{restore, PersistBatch, WriteAhead, FORMAT_VERSION};
use eddy_core::client::{PersistedState, StorageWrite};
use eddy_core::quote::Quoted;
use eddy_core::schema::Schema;
use js_sys::Uint8Array;
use rexie::{KeyRange, ObjectStore, Rexie, TransactionMode};
use wasm_bindgen::{JsCast, JsValue};

const OBJECTS: &str = "objects";
const PENDING: &str = "pending";
const META: &str = "meta";
const FILE: &str = "file";
const SCHEMA: &str = "schema";

/// An open IndexedDB database of one synced file.
pub(crate) struct Storage {
    db: Rexie,
    write_ahead: RefCell<WriteAhead>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("name", &self.db.name())
            .finish()
    }
}

/// The text of a rexie error, including the browser's error name (e.g. `QuotaExceededError`).
fn idb_text(e: rexie::Error) -> String {
    match e {
        rexie::Error::IdbError(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

fn record(bytes: &[u8]) -> JsValue {
    Uint8Array::from(bytes).into()
}

/// The bytes of a stored record; anything but a `Uint8Array` is not a record of this format.
fn bytes(value: &JsValue, store: &str) -> Result<Vec<u8>, String> {
    value
        .dyn_ref::<Uint8Array>()
        .map(Uint8Array::to_vec)
        .ok_or_else(|| {
            format!("the IndexedDB store {} holds a value that is not an eddy record; delete the database to download the data again", Quoted(store))
        })
}

impl Storage {
    /// Opens (creating if needed) the database of the file `name`. The database's name carries
    /// the record format version, so databases of another format are never misread.
    pub(crate) async fn open(name: &str) -> Result<Storage, String> {
        let db = Rexie::builder(&format!("{name}:records{FORMAT_VERSION}"))
            .version(1)
            .add_object_store(ObjectStore::new(OBJECTS))
            .add_object_store(ObjectStore::new(PENDING))
            .add_object_store(ObjectStore::new(META))
            .build()
            .await
            .map_err(idb_text)?;
        Ok(Storage {
            db,
            write_ahead: RefCell::new(WriteAhead::new()),
        })
    }

    /// Closes the database.
    pub(crate) fn close(self) {
        self.db.close();
    }

    /// What was stored: `None` for a new file. `schema` is used when none was stored.
    pub(crate) async fn load(&self, schema: &Schema) -> Result<Option<PersistedState>, String> {
        let tx = self
            .db
            .transaction(&[OBJECTS, PENDING, META], TransactionMode::ReadOnly)
            .map_err(idb_text)?;
        let metas = tx.store(META).map_err(idb_text)?;
        let Some(meta) = metas.get(FILE.into()).await.map_err(idb_text)? else {
            return Ok(None);
        };
        let meta = bytes(&meta, META)?;
        let stored_schema = match metas.get(SCHEMA.into()).await.map_err(idb_text)? {
            Some(s) => Some(bytes(&s, META)?),
            None => None,
        };
        let objects = tx
            .store(OBJECTS)
            .map_err(idb_text)?
            .get_all(None, None)
            .await
            .map_err(idb_text)?
            .iter()
            .map(|v| bytes(v, OBJECTS))
            .collect::<Result<Vec<_>, _>>()?;
        let pending = tx
            .store(PENDING)
            .map_err(idb_text)?
            .get_all(None, None)
            .await
            .map_err(idb_text)?
            .iter()
            .map(|v| bytes(v, PENDING))
            .collect::<Result<Vec<_>, _>>()?;
        tx.done().await.map_err(idb_text)?;
        let restored = restore(
            &meta,
            stored_schema.as_deref(),
            objects,
            pending,
            schema,
            &DecodeLimits::default(),
        )
        .map_err(|e| e.to_string())?;
        *self.write_ahead.borrow_mut() = restored.write_ahead;
        Ok(Some(restored.state))
    }

    /// Commits `writes` in one transaction; resolves once they survive a reload.
    pub(crate) async fn write(&self, writes: Vec<StorageWrite>) -> Result<(), String> {
        let batch = self.write_ahead.borrow_mut().commit(writes);
        self.put(&batch).await
    }

    /// Writes the object records that the commits since the last checkpoint left out, if any.
    pub(crate) async fn checkpoint(&self) -> Result<(), String> {
        let batch = self.write_ahead.borrow_mut().checkpoint();
        match batch {
            Some(batch) => self.put(&batch).await,
            None => Ok(()),
        }
    }

    /// Whether object records wait for a checkpoint.
    pub(crate) fn needs_checkpoint(&self) -> bool {
        !self.write_ahead.borrow().is_checkpointed()
    }

    /// Writes `batch` in one transaction; resolves once it is committed.
    async fn put(&self, batch: &PersistBatch) -> Result<(), String> {
        let tx = self
            .db
            .transaction(&[OBJECTS, PENDING, META], TransactionMode::ReadWrite)
            .map_err(idb_text)?;
        let objects = tx.store(OBJECTS).map_err(idb_text)?;
        let mut puts = Vec::new();
        for (key, object) in &batch.objects {
            let key = JsValue::from_str(key);
            match object {
                Some(object) => puts.push((record(object), Some(key))),
                None => objects.delete(key).await.map_err(idb_text)?,
            }
        }
        objects.put_all(puts.into_iter()).await.map_err(idb_text)?;
        let pending = tx.store(PENDING).map_err(idb_text)?;
        // Keys sort numerically as long as versions stay below 2^53.
        if batch.clear_pending {
            pending.clear().await.map_err(idb_text)?;
        } else if batch.acknowledged > 0 {
            let through = JsValue::from_f64(batch.acknowledged as f64);
            let acknowledged =
                KeyRange::upper_bound(&through, Some(false)).map_err(|e| idb_text(e.into()))?;
            pending
                .delete(acknowledged.into())
                .await
                .map_err(idb_text)?;
        }
        let entries = batch
            .pending
            .iter()
            .map(|(version, c)| (record(c), Some(JsValue::from_f64(*version as f64))));
        pending.put_all(entries).await.map_err(idb_text)?;
        let metas = tx.store(META).map_err(idb_text)?;
        if let Some(meta) = &batch.meta {
            metas
                .put(&record(meta), Some(&FILE.into()))
                .await
                .map_err(idb_text)?;
        }
        if let Some(schema) = &batch.schema {
            metas
                .put(&record(schema), Some(&SCHEMA.into()))
                .await
                .map_err(idb_text)?;
        }
        tx.done().await.map_err(idb_text)?;
        Ok(())
    }
}
