//! IndexedDB persistence through rexie: one database per app, user and path, with three object
//! stores: `objects` (one entry per object: `[collection, canonical EJSON]`), `pending` (local
//! changesets not yet integrated by the server, by client version) and `meta` (the file's
//! identity, cursors and subscriptions, and the schema).
//!
//! The session's `StorageWrite`s are applied in order; every batch that accumulated while the
//! previous one was being written goes into one IndexedDB transaction (group commit).

use std::collections::BTreeMap;

use eddy_core::changeset::{
    decode_changeset, encode_changeset, Changeset, ChangesetMeta, DecodeLimits,
};
use eddy_core::client::{
    FileMeta, OutstandingTransaction, PendingUpdate, PersistedState, StorageWrite,
};
use eddy_core::protocol::{DownloadCursor, Subscription, SubscriptionSet};
use eddy_core::schema::{Schema, PRIMARY_KEY};
use eddy_core::schema_json::{schema_from_json, schema_to_json};
use eddy_core::store::Store;
use eddy_core::value::{
    document_from_ejson, document_to_ejson, Document, EjsonMode, PrimaryKey, Value,
};
use js_sys::{Array, Uint8Array};
use rexie::{ObjectStore, Rexie, TransactionMode};
use serde_json::{json, Value as Json};
use wasm_bindgen::JsValue;

const OBJECTS: &str = "objects";
const PENDING: &str = "pending";
const META: &str = "meta";

/// An open IndexedDB database of one synced file.
pub(crate) struct Storage {
    db: Rexie,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("name", &self.db.name())
            .finish()
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The text of a rexie error, including the browser's error name (e.g. `QuotaExceededError`).
fn idb_text(e: rexie::Error) -> String {
    match e {
        rexie::Error::IdbError(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

fn object_key(collection: &str, key: &PrimaryKey) -> JsValue {
    let key = Value::from(key.clone())
        .to_ejson(EjsonMode::Canonical)
        .to_string();
    JsValue::from_str(&format!("{collection}\u{0}{key}"))
}

fn u64_text(n: u64) -> Json {
    Json::String(n.to_string())
}

fn read_u64(json: &Json, name: &str) -> Result<u64, String> {
    json.get(name)
        .and_then(Json::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("stored file metadata lacks {name}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "stored transaction is not hex".to_string())
        })
        .collect()
}

fn meta_to_json(meta: &FileMeta) -> Json {
    json!({
        "ident": u64_text(meta.client_file_ident),
        "salt": u64_text(meta.client_file_ident_salt),
        "downloadServerVersion": u64_text(meta.download.server_version),
        "downloadClientVersion": u64_text(meta.download.last_integrated_client_version),
        "latestServerVersion": u64_text(meta.latest_server_version),
        "latestServerVersionSalt": u64_text(meta.latest_server_version_salt),
        "lastClientVersion": u64_text(meta.last_client_version),
        "subscriptionsVersion": u64_text(meta.subscriptions.version),
        "subscriptions": meta.subscriptions.subscriptions.iter()
            .map(|s| json!([s.name, s.collection, s.query])).collect::<Vec<_>>(),
        "transaction": meta.transaction.as_ref().map(|t| json!({
            "clientVersion": u64_text(t.client_version),
            "timestamp": u64_text(t.origin_timestamp),
            "body": hex(&encode_changeset(&t.instructions)),
        })),
    })
}

fn meta_from_json(json: &Json) -> Result<FileMeta, String> {
    let subscriptions = json
        .get("subscriptions")
        .and_then(Json::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|s| {
                    let field = |i: usize| s.get(i).and_then(Json::as_str).map(str::to_owned);
                    Some(Subscription {
                        name: field(0)?,
                        collection: field(1)?,
                        query: field(2)?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let transaction = match json.get("transaction") {
        Some(t) if !t.is_null() => {
            let body = unhex(t.get("body").and_then(Json::as_str).unwrap_or_default())?;
            Some(OutstandingTransaction {
                client_version: read_u64(t, "clientVersion")?,
                origin_timestamp: read_u64(t, "timestamp")?,
                instructions: decode_changeset(&body, &DecodeLimits::default()).map_err(text)?,
            })
        }
        _ => None,
    };
    Ok(FileMeta {
        client_file_ident: read_u64(json, "ident")?,
        client_file_ident_salt: read_u64(json, "salt")?,
        download: DownloadCursor {
            server_version: read_u64(json, "downloadServerVersion")?,
            last_integrated_client_version: read_u64(json, "downloadClientVersion")?,
        },
        latest_server_version: read_u64(json, "latestServerVersion")?,
        latest_server_version_salt: read_u64(json, "latestServerVersionSalt")?,
        last_client_version: read_u64(json, "lastClientVersion")?,
        subscriptions: SubscriptionSet {
            version: read_u64(json, "subscriptionsVersion")?,
            subscriptions,
        },
        transaction,
    })
}

/// A pending changeset as `[version, lastIntegratedRemoteVersion, timestamp, origin, body]`
/// (the numbers as decimal strings, the body in the binary changeset format).
fn changeset_to_js(changeset: &Changeset) -> JsValue {
    let m = &changeset.meta;
    let array = Array::new();
    for n in [
        m.version,
        m.last_integrated_remote_version,
        m.origin_timestamp,
        m.origin_file_ident,
    ] {
        array.push(&JsValue::from_str(&n.to_string()));
    }
    array.push(&Uint8Array::from(
        encode_changeset(&changeset.instructions).as_slice(),
    ));
    array.into()
}

fn changeset_from_js(js: &JsValue) -> Result<Changeset, String> {
    let array = Array::from(js);
    let n = |i: u32| {
        array
            .get(i)
            .as_string()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| "a stored pending changeset is damaged".to_string())
    };
    let body = Uint8Array::from(array.get(4)).to_vec();
    Ok(Changeset {
        meta: ChangesetMeta {
            version: n(0)?,
            last_integrated_remote_version: n(1)?,
            origin_timestamp: n(2)?,
            origin_file_ident: n(3)?,
        },
        instructions: decode_changeset(&body, &DecodeLimits::default()).map_err(text)?,
    })
}

/// The writes of one group commit, merged: the last state of every touched object, the pending
/// list's edits, the last metadata and schema.
#[derive(Default)]
struct Batch {
    objects: BTreeMap<(String, PrimaryKey), Option<Document>>,
    clear_pending: bool,
    put_pending: Vec<Changeset>,
    meta: Option<FileMeta>,
    schema: Option<Schema>,
}

impl Batch {
    fn add(&mut self, write: StorageWrite) {
        for (collection, key, doc) in write.objects {
            self.objects.insert((collection, key), doc);
        }
        match write.pending {
            PendingUpdate::Appended(changeset) => self.put_pending.push(changeset),
            PendingUpdate::Replaced(list) => {
                self.clear_pending = true;
                self.put_pending = list;
            }
            _ => {}
        }
        self.meta = Some(write.meta);
        if write.schema.is_some() {
            self.schema = write.schema;
        }
    }
}

impl Storage {
    /// Opens (creating if needed) the database `name`.
    pub(crate) async fn open(name: &str) -> Result<Storage, String> {
        let db = Rexie::builder(name)
            .version(1)
            .add_object_store(ObjectStore::new(OBJECTS))
            .add_object_store(ObjectStore::new(PENDING))
            .add_object_store(ObjectStore::new(META))
            .build()
            .await
            .map_err(idb_text)?;
        Ok(Storage { db })
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
        let Some(meta_text) = metas.get("file".into()).await.map_err(idb_text)? else {
            return Ok(None);
        };
        let meta_json: Json =
            serde_json::from_str(&meta_text.as_string().unwrap_or_default()).map_err(text)?;
        let meta = meta_from_json(&meta_json)?;
        let stored_schema = match metas.get("schema".into()).await.map_err(idb_text)? {
            Some(s) => schema_from_json(&s.as_string().unwrap_or_default()).map_err(text)?,
            None => schema.clone(),
        };
        let mut store = Store::new(stored_schema);
        let objects = tx
            .store(OBJECTS)
            .map_err(idb_text)?
            .get_all(None, None)
            .await
            .map_err(idb_text)?;
        {
            let mut write = store.write();
            for entry in objects {
                let entry = Array::from(&entry);
                let collection = entry.get(0).as_string().unwrap_or_default();
                let json: Json =
                    serde_json::from_str(&entry.get(1).as_string().unwrap_or_default())
                        .map_err(text)?;
                let doc = document_from_ejson(&json).map_err(text)?;
                let key = doc
                    .get(PRIMARY_KEY)
                    .cloned()
                    .and_then(|k| PrimaryKey::try_from(k).ok())
                    .ok_or_else(|| format!("a stored {collection} object has no primary key"))?;
                write.create(&collection, key.clone()).map_err(text)?;
                for (field, value) in doc.into_iter().filter(|(f, _)| f != PRIMARY_KEY) {
                    let path =
                        eddy_core::changeset::Path::field(collection.clone(), key.clone(), field);
                    write.set(path, value).map_err(text)?;
                }
            }
            write.commit();
        }
        let pending = tx
            .store(PENDING)
            .map_err(idb_text)?
            .get_all(None, None)
            .await
            .map_err(idb_text)?
            .iter()
            .map(changeset_from_js)
            .collect::<Result<Vec<_>, _>>()?;
        tx.done().await.map_err(idb_text)?;
        Ok(Some(PersistedState {
            meta,
            store,
            pending,
        }))
    }

    /// Applies `writes` in one transaction; resolves once it is committed.
    pub(crate) async fn write(&self, writes: Vec<StorageWrite>) -> Result<(), String> {
        let mut batch = Batch::default();
        for write in writes {
            batch.add(write);
        }
        let tx = self
            .db
            .transaction(&[OBJECTS, PENDING, META], TransactionMode::ReadWrite)
            .map_err(idb_text)?;
        let objects = tx.store(OBJECTS).map_err(idb_text)?;
        let mut puts = Vec::new();
        for ((collection, key), doc) in &batch.objects {
            let id = object_key(collection, key);
            match doc {
                Some(doc) => {
                    let mut full = doc.clone();
                    full.insert(PRIMARY_KEY.into(), Value::from(key.clone()));
                    let entry = Array::of2(
                        &JsValue::from_str(collection),
                        &JsValue::from_str(
                            &document_to_ejson(&full, EjsonMode::Canonical).to_string(),
                        ),
                    );
                    puts.push((entry.into(), Some(id)));
                }
                None => objects.delete(id).await.map_err(idb_text)?,
            }
        }
        objects.put_all(puts.into_iter()).await.map_err(idb_text)?;
        let pending = tx.store(PENDING).map_err(idb_text)?;
        if batch.clear_pending {
            pending.clear().await.map_err(idb_text)?;
        }
        let entries = batch.put_pending.iter().map(|c| {
            // Keys sort numerically as long as versions stay below 2^53.
            (
                changeset_to_js(c),
                Some(JsValue::from_f64(c.meta.version as f64)),
            )
        });
        pending.put_all(entries).await.map_err(idb_text)?;
        let metas = tx.store(META).map_err(idb_text)?;
        if let Some(meta) = &batch.meta {
            let text = meta_to_json(meta).to_string();
            metas
                .put(&JsValue::from_str(&text), Some(&"file".into()))
                .await
                .map_err(idb_text)?;
        }
        if let Some(schema) = &batch.schema {
            let text = schema_to_json(schema).to_string();
            metas
                .put(&JsValue::from_str(&text), Some(&"schema".into()))
                .await
                .map_err(idb_text)?;
        }
        tx.done().await.map_err(idb_text)?;
        Ok(())
    }
}
