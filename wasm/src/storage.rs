//! IndexedDB persistence through idb: one database per app, user and path, holding the records
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
use idb::event::DatabaseEvent;
use idb::{Database, Factory, KeyRange, ObjectStoreParams, TransactionMode};
use js_sys::Uint8Array;
use wasm_bindgen::{JsCast, JsValue};

const OBJECTS: &str = "objects";
const PENDING: &str = "pending";
const META: &str = "meta";
const FILE: &str = "file";
const SCHEMA: &str = "schema";

/// An open IndexedDB database of one synced file.
pub(crate) struct Storage {
    db: Database,
    write_ahead: RefCell<WriteAhead>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("name", &self.db.name())
            .finish()
    }
}

/// The text of an idb error, including the browser's error name (e.g. `QuotaExceededError`).
/// Only `Display`: idb's `Debug` would link the standard library's Unicode printable tables.
fn idb_text(e: idb::Error) -> String {
    e.to_string()
}

/// The record stored under `key` in `store`, if any.
async fn get(store: &idb::ObjectStore, key: &str) -> Result<Option<JsValue>, String> {
    store
        .get(JsValue::from_str(key))
        .map_err(idb_text)?
        .await
        .map_err(idb_text)
}

/// Every record of `store`, as bytes.
async fn all_records(tx: &idb::Transaction, store: &str) -> Result<Vec<Vec<u8>>, String> {
    tx.object_store(store)
        .map_err(idb_text)?
        .get_all(None, None)
        .map_err(idb_text)?
        .await
        .map_err(idb_text)?
        .iter()
        .map(|v| bytes(v, store))
        .collect()
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
            format!("the IndexedDB store {store} holds a value that is not an eddy record; delete the database to download the data again", store = Quoted(store))
        })
}

impl Storage {
    /// Opens (creating if needed) the database of the file `name`. The database's name carries
    /// the record format version, so databases of another format are never misread.
    pub(crate) async fn open(name: &str) -> Result<Storage, String> {
        let mut request = Factory::new()
            .and_then(|f| f.open(&format!("{name}:records{FORMAT_VERSION}"), Some(1)))
            .map_err(idb_text)?;
        // Version 1 is the only one, so an upgrade always starts from no stores. A store that
        // cannot be created fails the first transaction that names it, as a storage error.
        request.on_upgrade_needed(|event| {
            if let Ok(db) = event.database() {
                for store in [OBJECTS, PENDING, META] {
                    let _ = db.create_object_store(store, ObjectStoreParams::new());
                }
            }
        });
        let mut db = request.await.map_err(idb_text)?;
        // Another tab deleting or upgrading the database must not wait for this one.
        db.on_version_change(|event| {
            if let Ok(db) = event.database() {
                db.close();
            }
        });
        Ok(Storage {
            db,
            write_ahead: RefCell::new(WriteAhead::new()),
        })
    }

    /// Deletes the database of the file `name` (nothing happens when there is none).
    pub(crate) async fn delete(name: &str) -> Result<(), String> {
        let request = Factory::new()
            .and_then(|f| f.delete(&format!("{name}:records{FORMAT_VERSION}")))
            .map_err(idb_text)?;
        request.await.map_err(idb_text)
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
        let metas = tx.object_store(META).map_err(idb_text)?;
        let Some(meta) = get(&metas, FILE).await? else {
            return Ok(None);
        };
        let meta = bytes(&meta, META)?;
        let stored_schema = match get(&metas, SCHEMA).await? {
            Some(s) => Some(bytes(&s, META)?),
            None => None,
        };
        let objects = all_records(&tx, OBJECTS).await?;
        let pending = all_records(&tx, PENDING).await?;
        tx.await.map_err(idb_text)?;
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
        let objects = tx.object_store(OBJECTS).map_err(idb_text)?;
        for (key, object) in &batch.objects {
            if object.is_none() {
                objects
                    .delete(JsValue::from_str(key))
                    .map_err(idb_text)?
                    .await
                    .map_err(idb_text)?;
            }
        }
        // Requests of one transaction complete in order: awaiting the last put awaits them all.
        // Nothing may be awaited between the puts: a request's future only hears of its result
        // if it exists before the request completes.
        let mut last_put = None;
        for (key, object) in &batch.objects {
            if let Some(object) = object {
                let key = JsValue::from_str(key);
                last_put = Some(objects.put(&record(object), Some(&key)).map_err(idb_text)?);
            }
        }
        if let Some(put) = last_put {
            put.await.map_err(idb_text)?;
        }
        let pending = tx.object_store(PENDING).map_err(idb_text)?;
        // Keys sort numerically as long as versions stay below 2^53.
        if batch.clear_pending {
            pending.clear().map_err(idb_text)?.await.map_err(idb_text)?;
        } else if batch.acknowledged > 0 {
            let through = JsValue::from_f64(batch.acknowledged as f64);
            let acknowledged = KeyRange::upper_bound(&through, Some(false)).map_err(idb_text)?;
            pending
                .delete(acknowledged)
                .map_err(idb_text)?
                .await
                .map_err(idb_text)?;
        }
        let mut last_put = None;
        for (version, changeset) in &batch.pending {
            let key = JsValue::from_f64(*version as f64);
            last_put = Some(
                pending
                    .put(&record(changeset), Some(&key))
                    .map_err(idb_text)?,
            );
        }
        if let Some(put) = last_put {
            put.await.map_err(idb_text)?;
        }
        let metas = tx.object_store(META).map_err(idb_text)?;
        for (value, key) in [(&batch.meta, FILE), (&batch.schema, SCHEMA)] {
            if let Some(value) = value {
                metas
                    .put(&record(value), Some(&key.into()))
                    .map_err(idb_text)?
                    .await
                    .map_err(idb_text)?;
            }
        }
        tx.await.map_err(idb_text)?;
        Ok(())
    }
}
