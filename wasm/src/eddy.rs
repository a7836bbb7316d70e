//! `Eddy`: an open synced database. `Eddy.open({ schema, sync })` loads it from IndexedDB and
//! starts syncing; `write`, `create`, `delete`, `objects` and `objectForPrimaryKey` read and change
//! it; `subscriptions` and `syncSession` control sync; `close` ends it.
//!
//! Objects are plain snapshot objects wrapped in a `Proxy`: reading a field reads the snapshot
//! taken when the object was fetched; assigning a field inside `write()` records the write (and
//! updates the snapshot). Fetch again (`objectForPrimaryKey`, iterate a `Results`) for fresh
//! values. Inside a `write()` callback, reads show the state from before the callback: its
//! creates, assignments and deletes apply together when it returns.

use std::rc::Rc;

use eddy_core::changeset::Path;
use eddy_core::client::{
    ClientConnection, ClientSession, ConnectionConfig, FileMeta, PersistedState, ResetMode,
    SessionConfig,
};
use eddy_core::quote::Quoted;
use eddy_core::schema::{CollectionKind, Container, Schema, PRIMARY_KEY};
use eddy_core::schema_json::{schema_from_node, SchemaNode};
use eddy_core::store::Store;
use eddy_core::value::{Document, PrimaryKey, Value};
use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::convert;
use crate::driver::{self, now_ms, pump, wait, Inner, ObjectListener, State, Until, SESSION};
use crate::errors;
use crate::lock::{self, Lock};
use crate::results::Results;
use crate::storage::Storage;
use crate::subscriptions::{MutableSubscriptionSet, SubscriptionSet};
use crate::sync_session::SyncSession;
use crate::user::User;

#[wasm_bindgen(module = "/js/glue.js")]
extern "C" {
    #[wasm_bindgen(js_name = managedObject)]
    fn glue_managed_object(
        db: &JsValue,
        collection: &str,
        key: &JsValue,
        fields: &Object,
    ) -> JsValue;
    #[wasm_bindgen(js_name = objectRef)]
    fn glue_object_ref(object: &JsValue) -> JsValue;
}

#[wasm_bindgen(typescript_custom_section)]
const OPEN_CONFIG: &'static str = r#"
/** A property type: "string", "int?", "Task[]", or { type, objectType, optional, default }. */
export type PropertyType = string | { type: string; objectType?: string; optional?: boolean; indexed?: boolean; default?: unknown };
/** One collection of the schema, in Realm JS style. */
export interface ObjectSchema {
  name: string;
  primaryKey?: "_id";
  embedded?: boolean;
  asymmetric?: boolean;
  properties: Record<string, PropertyType>;
}
/** How `Eddy.open` opens a database. */
export interface Configuration {
  schema: ObjectSchema[];
  /** Names the local database (default "default"). */
  path?: string;
  sync: {
    user: User;
    flexible: true;
    initialSubscriptions?: { update: (subs: MutableSubscriptionSet, db: Eddy) => void; rerunOnOpen?: boolean };
    /** Called with sync and storage errors (instances of SyncError, CompensatingWriteError, StorageError). */
    onError?: (session: null, error: Error) => void;
    /** What a client reset does: when the server no longer knows this database's client file
     * (restored from a backup, data wiped, file expired), the local data is replaced by the
     * server's. */
    clientReset?: ClientResetConfiguration;
  };
}
/** Realm JS's names for what a client reset does with local changes the server never saw. */
export type ClientResetMode = "recoverUnsyncedChanges" | "discardUnsyncedChanges";
/** `sync.clientReset`. */
export interface ClientResetConfiguration {
  /** "recoverUnsyncedChanges" (the default) re-applies them on top of the server's data and
   * uploads them again; "discardUnsyncedChanges" drops them. */
  mode?: ClientResetMode;
  /** Called once a reset has replaced the local data with the server's (and, in recover mode,
   * re-applied the unsynced changes, which then upload again). */
  onAfter?: (summary: ClientResetSummary) => void;
}
/** What a client reset did with the local changes the server had not integrated. */
export interface ClientResetSummary {
  /** Changesets re-applied on top of the server's data. */
  recovered: number;
  /** Changesets dropped: all of them in discard mode, those that no longer apply otherwise. */
  discarded: number;
}
"#;

/// A write recorded inside `write()`.
#[derive(Debug)]
pub(crate) enum Op {
    Create {
        collection: String,
        key: PrimaryKey,
        doc: Document,
        update: bool,
    },
    Set {
        collection: String,
        key: PrimaryKey,
        field: String,
        value: Value,
    },
    Delete {
        collection: String,
        key: PrimaryKey,
    },
    Ingest {
        collection: String,
        key: PrimaryKey,
        doc: Document,
    },
}

/// An open, synced database.
#[wasm_bindgen]
#[derive(Clone)]
pub struct Eddy {
    pub(crate) inner: Rc<Inner>,
}

impl std::fmt::Debug for Eddy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eddy").finish_non_exhaustive()
    }
}

/// A plain object with the document's fields and `_id`.
pub(crate) fn plain_object(key: &PrimaryKey, doc: &Document) -> Object {
    let object = convert::object_of(doc.iter());
    let _ = Reflect::set(&object, &PRIMARY_KEY.into(), &convert::from_key(key));
    object
}

/// A live object: a snapshot proxy whose assignments become writes.
pub(crate) fn managed_object(
    inner: &Rc<Inner>,
    collection: &str,
    key: &PrimaryKey,
    doc: &Document,
) -> JsValue {
    let db = inner
        .handle
        .borrow_mut()
        .get_or_insert_with(|| {
            JsValue::from(Eddy {
                inner: Rc::clone(inner),
            })
        })
        .clone();
    glue_managed_object(
        &db,
        collection,
        &convert::from_key(key),
        &plain_object(key, doc),
    )
}

/// The collection and key of a live object, if `js` is one.
fn object_ref(schema: &Schema, js: &JsValue) -> Option<(String, PrimaryKey)> {
    let r = glue_object_ref(js);
    if r.is_undefined() {
        return None;
    }
    let collection = Reflect::get(&r, &"collection".into()).ok()?.as_string()?;
    let pk = schema.collection(&collection)?.primary_key?;
    let key = convert::to_primary_key(pk, &Reflect::get(&r, &"key".into()).ok()?).ok()?;
    Some((collection, key))
}

/// The primary key of a live object (for query arguments).
pub(crate) fn object_key_of(schema: &Schema, js: &JsValue) -> Option<PrimaryKey> {
    object_ref(schema, js).map(|(_, key)| key)
}

fn get(object: &JsValue, name: &str) -> JsValue {
    Reflect::get(object, &name.into()).unwrap_or(JsValue::UNDEFINED)
}

/// The Realm-style schema (an array of `{ name, properties, ... }`, or the core's object form)
/// as the core's schema, with the `default`s it declares.
fn read_schema(js: &JsValue) -> Result<(Schema, Vec<driver::Default>), JsValue> {
    if !Array::is_array(js) {
        return Err(errors::usage(
            "schema must be an array of { name, primaryKey, properties }",
        ));
    }
    let mut defaults = Vec::new();
    let mut root: Vec<(String, SchemaNode)> = Vec::new();
    for def in Array::from(js).iter() {
        let name = get(&def, "name")
            .as_string()
            .ok_or_else(|| errors::usage("every schema entry needs a name"))?;
        let mut node = schema_node(&def, 1)
            .ok_or_else(|| errors::usage(format!("schema {name} is not plain data")))?;
        if let SchemaNode::Object(fields) = &mut node {
            fields.retain(|(key, _)| key != "name");
            let properties = fields.iter_mut().find(|(key, _)| key == "properties");
            if let Some((_, SchemaNode::Object(properties))) = properties {
                for (prop, spec) in properties.iter_mut() {
                    let SchemaNode::Object(spec) = spec else {
                        continue;
                    };
                    let before = spec.len();
                    spec.retain(|(key, _)| key != "default");
                    if spec.len() < before {
                        let original = get(&get(&get(&def, "properties"), prop), "default");
                        defaults.push((name.clone(), prop.clone(), original));
                    }
                }
            }
        }
        match root.iter_mut().find(|(n, _)| *n == name) {
            Some((_, earlier)) => *earlier = node,
            None => root.push((name, node)),
        }
    }
    let schema =
        schema_from_node(&SchemaNode::Object(root)).map_err(|e| errors::usage(e.to_string()))?;
    Ok((schema, defaults))
}

/// A schema entry as the core's tree of JSON shapes, read as `JSON.stringify` would see it:
/// members that are `undefined`, functions or symbols are left out. Objects are walked down to
/// the property specs' members (`depth` 4); anything deeper, and arrays, numbers and `null`, are
/// kept as their JSON text for error messages. `None` for what `JSON.stringify` refuses (a cycle).
fn schema_node(js: &JsValue, depth: usize) -> Option<SchemaNode> {
    if let Some(text) = js.as_string() {
        return Some(SchemaNode::String(text));
    }
    if let Some(b) = js.as_bool() {
        return Some(SchemaNode::Bool(b));
    }
    if depth > 4 || !js.is_object() || Array::is_array(js) {
        let text = js_sys::JSON::stringify(js).ok()?;
        return Some(SchemaNode::Other(
            text.as_string().unwrap_or_else(|| "null".into()),
        ));
    }
    let object: &Object = js.unchecked_ref();
    let mut fields = Vec::new();
    for key in Object::keys(object).iter() {
        let value = Reflect::get(object, &key).ok()?;
        if value.is_undefined() || value.is_function() || value.is_symbol() {
            continue;
        }
        let key = key.as_string().unwrap_or_default();
        fields.push((key, schema_node(&value, depth + 1)?));
    }
    Some(SchemaNode::Object(fields))
}

impl Eddy {
    fn state_check(&self) -> Result<(), JsValue> {
        if self.inner.state.borrow().closed {
            return Err(errors::usage(
                "the database is closed; open it again with Eddy.open",
            ));
        }
        Ok(())
    }

    fn require_write(&self, what: &str) -> Result<(), JsValue> {
        self.state_check()?;
        if !self.inner.in_write.get() {
            return Err(errors::usage(format!(
                "{what} outside a write transaction: wrap it in db.write(() => {{ ... }})"
            )));
        }
        Ok(())
    }

    fn record(&self, op: Op) {
        if let Some(ops) = self.inner.ops.borrow_mut().as_mut() {
            ops.push(op);
        }
    }
}

fn apply(tx: &mut eddy_core::store::WriteTransaction<'_>, op: Op) -> Result<(), String> {
    match op {
        Op::Create {
            collection,
            key,
            doc,
            update,
        } => {
            if tx.get(&collection, &key).is_some() {
                if !update {
                    return Err(format!(
                        "{collection} already has an object with primary key {}; pass \"modified\" as create's third argument to update it",
                        convert::from_key(&key).as_string().unwrap_or_else(|| format!("{key:?}"))
                    ));
                }
            } else {
                tx.create(&collection, key.clone())
                    .map_err(|e| e.to_string())?;
            }
            for (field, value) in doc.into_iter().filter(|(f, _)| f != PRIMARY_KEY) {
                tx.set(Path::field(collection.clone(), key.clone(), field), value)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Op::Set {
            collection,
            key,
            field,
            value,
        } => {
            if tx.get(&collection, &key).is_none() {
                return Err(format!(
                    "cannot set {collection}.{field}: the object was deleted"
                ));
            }
            tx.set(Path::field(collection, key, field), value)
                .map_err(|e| e.to_string())
        }
        Op::Delete { collection, key } => {
            if tx.get(&collection, &key).is_none() {
                return Ok(());
            }
            tx.erase(&collection, key).map_err(|e| e.to_string())
        }
        Op::Ingest {
            collection,
            key,
            doc,
        } => tx.ingest(&collection, key, doc).map_err(|e| e.to_string()),
    }
}

#[wasm_bindgen]
impl Eddy {
    /// Opens (or creates) the local database of `config.sync.user` and starts syncing it.
    /// Fails when another tab has the same database open (see the package README).
    pub async fn open(
        #[wasm_bindgen(unchecked_param_type = "Configuration")] config: JsValue,
    ) -> Result<Eddy, JsValue> {
        let opening = Opening::read(&config)?;
        let release = match lock::acquire(&opening.name).await? {
            Lock::Held { release } => Some(release),
            Lock::Taken => return Err(opening.in_use()),
            Lock::Unsupported => None,
        };
        let loaded = load(&opening.name, &opening.schema).await;
        match loaded {
            Ok((storage, persisted)) => opening.start(release, storage, persisted),
            Err(e) => {
                if let Some(release) = release {
                    let _ = release.call0(&JsValue::UNDEFINED);
                }
                Err(errors::storage(&e))
            }
        }
    }

    /// Runs `callback` as one write transaction: its `create`s, assignments and `delete`s apply
    /// together when it returns (none of them if it throws). The changes are visible at once;
    /// the returned promise resolves to the callback's result when they are durable in
    /// IndexedDB (writes made close together share one IndexedDB transaction).
    pub fn write(&self, callback: &Function) -> Result<Promise, JsValue> {
        self.state_check()?;
        if self.inner.in_write.get() {
            return Err(errors::usage(
                "already in a write transaction: do not nest db.write calls",
            ));
        }
        *self.inner.ops.borrow_mut() = Some(Vec::new());
        self.inner.in_write.set(true);
        let result = callback.call0(&JsValue::UNDEFINED);
        self.inner.in_write.set(false);
        let ops = self.inner.ops.borrow_mut().take().unwrap_or_default();
        let value = result?;
        {
            let mut st = self.inner.state.borrow_mut();
            let session = st
                .conn
                .session_mut(SESSION)
                .ok_or_else(|| errors::usage("the database is closed"))?;
            let (_, changes) = session
                .write(now_ms(), |tx| {
                    for op in ops {
                        apply(tx, op)?;
                    }
                    Ok::<(), String>(())
                })
                .map_err(|e| errors::usage(format!("the write failed and changed nothing: {e}")))?;
            st.changed(changes);
        }
        Ok(wait(&self.inner, Until::Durable(None), value))
    }

    /// Whether a `write` callback is running.
    #[wasm_bindgen(getter, js_name = isInTransaction)]
    pub fn is_in_transaction(&self) -> bool {
        self.inner.in_write.get()
    }

    /// Whether `close` was called.
    #[wasm_bindgen(getter, js_name = isClosed)]
    pub fn is_closed(&self) -> bool {
        self.inner.state.borrow().closed
    }

    /// Creates an object (inside `write`). A missing `_id` of type objectId or uuid is generated.
    /// `mode` `"modified"` (or `"all"`) updates an existing object with the same `_id` instead of
    /// failing.
    pub fn create(
        &self,
        name: String,
        values: JsValue,
        mode: Option<String>,
    ) -> Result<JsValue, JsValue> {
        self.require_write("create")?;
        let collection = self
            .inner
            .schema
            .collection(&name)
            .filter(|c| c.kind != CollectionKind::Embedded)
            .ok_or_else(|| {
                errors::usage(format!(
                    "{name} is not a top-level collection of the schema",
                    name = Quoted(&name)
                ))
            })?;
        if collection.kind == CollectionKind::Asymmetric {
            return Err(errors::usage(format!(
                "{name} is asymmetric: insert its objects with db.ingest",
                name = Quoted(&name)
            )));
        }
        let mut doc = convert::to_document(&self.inner.schema, collection, &values, true)
            .map_err(errors::usage)?;
        let update = matches!(mode.as_deref(), Some("modified" | "all"));
        if !update {
            for (_, prop, default) in self.inner.defaults.iter().filter(|(c, _, _)| *c == name) {
                if doc.contains_key(prop) {
                    continue;
                }
                if let Some(property) = collection.properties.get(prop) {
                    let value = convert::to_property(&self.inner.schema, &name, property, default)
                        .map_err(errors::usage)?;
                    doc.insert(prop.clone(), value);
                }
            }
            for property in collection.properties.values() {
                let required = property.container == Container::Single && !property.optional;
                if required
                    && !doc.contains_key(&property.name)
                    && !matches!(property.ty, eddy_core::schema::ScalarType::Mixed)
                {
                    return Err(errors::usage(format!(
                        "create {name}: missing value for {} (give it a value or a default in the schema)",
                        property.name
                    )));
                }
            }
        }
        let pk = collection
            .primary_key
            .ok_or_else(|| errors::usage(format!("{name} has no primary key")))?;
        let key = match doc.get(PRIMARY_KEY).cloned() {
            Some(v) => PrimaryKey::try_from(v).map_err(|_| errors::usage("bad _id"))?,
            None => convert::generated_key(pk).ok_or_else(|| {
                errors::usage(format!(
                    "create {name}: give an _id (int and string keys are not generated)"
                ))
            })?,
        };
        doc.remove(PRIMARY_KEY);
        let object = managed_object(&self.inner, &name, &key, &doc);
        self.record(Op::Create {
            collection: name,
            key,
            doc,
            update,
        });
        Ok(object)
    }

    /// Queues an object of an asymmetric collection for Data Ingest, inside or outside `write`.
    /// It is never readable on this device: it waits in the IndexedDB upload queue until the
    /// server acknowledges it (see `syncSession.ingestQueue`). Outside `write` it returns a promise
    /// that resolves once the object is durable in the queue; inside, it joins the transaction.
    pub fn ingest(&self, name: String, values: JsValue) -> Result<JsValue, JsValue> {
        self.state_check()?;
        let collection = self
            .inner
            .schema
            .collection(&name)
            .filter(|c| c.kind == CollectionKind::Asymmetric)
            .ok_or_else(|| {
                errors::usage(format!(
                    "{name} is not an asymmetric collection of the schema; declare it with asymmetric: true, or use create", name = Quoted(&name)
                ))
            })?;
        let mut doc = convert::to_document(&self.inner.schema, collection, &values, true)
            .map_err(errors::usage)?;
        let pk = collection
            .primary_key
            .ok_or_else(|| errors::usage(format!("{name} has no primary key")))?;
        let key = match doc.remove(PRIMARY_KEY) {
            Some(v) => PrimaryKey::try_from(v).map_err(|_| errors::usage("bad _id"))?,
            None => convert::generated_key(pk).ok_or_else(|| {
                errors::usage(format!(
                    "ingest {name}: give an _id (int and string keys are not generated)"
                ))
            })?,
        };
        let op = Op::Ingest {
            collection: name,
            key,
            doc,
        };
        if self.inner.in_write.get() {
            self.record(op);
            return Ok(JsValue::UNDEFINED);
        }
        {
            let mut st = self.inner.state.borrow_mut();
            let session = st
                .conn
                .session_mut(SESSION)
                .ok_or_else(|| errors::usage("the database is closed"))?;
            session
                .write(now_ms(), |tx| apply(tx, op))
                .map_err(|e| errors::usage(format!("the ingest failed: {e}")))?;
        }
        Ok(wait(&self.inner, Until::Durable(None), JsValue::UNDEFINED).into())
    }

    /// Deletes an object, an array of objects or a `Results` (inside `write`).
    pub fn delete(&self, target: JsValue) -> Result<(), JsValue> {
        self.require_write("delete")?;
        let items: Vec<JsValue> = if Array::is_array(&target) {
            Array::from(&target).iter().collect()
        } else if let Ok(to_array) = get(&target, "toArray").dyn_into::<Function>() {
            Array::from(&to_array.call0(&target)?).iter().collect()
        } else {
            vec![target]
        };
        for item in items {
            let (collection, key) = object_ref(&self.inner.schema, &item).ok_or_else(|| {
                errors::usage(
                    "delete takes objects from this database (or arrays or Results of them)",
                )
            })?;
            self.record(Op::Delete { collection, key });
        }
        Ok(())
    }

    /// Every object of a collection, as live `Results`.
    pub fn objects(&self, name: String) -> Result<Results, JsValue> {
        self.state_check()?;
        match self.inner.schema.collection(&name) {
            Some(c) if c.kind == CollectionKind::TopLevel => {
                Ok(Results::all(Rc::clone(&self.inner), name))
            }
            Some(c) if c.kind == CollectionKind::Asymmetric => Err(errors::usage(format!(
                "{name} is asymmetric: its objects go to the server with db.ingest and are never readable on a device", name = Quoted(&name)
            ))),
            _ => Err(errors::usage(format!(
                "{name} is not a top-level collection of the schema", name = Quoted(&name)
            ))),
        }
    }

    /// The object with this primary key, or `undefined`.
    #[wasm_bindgen(js_name = objectForPrimaryKey)]
    pub fn object_for_primary_key(&self, name: String, key: JsValue) -> Result<JsValue, JsValue> {
        self.state_check()?;
        let pk = self
            .inner
            .schema
            .collection(&name)
            .and_then(|c| c.primary_key)
            .ok_or_else(|| {
                errors::usage(format!(
                    "{name} is not a top-level collection of the schema",
                    name = Quoted(&name)
                ))
            })?;
        let key = convert::to_primary_key(pk, &key).map_err(errors::usage)?;
        let st = self.inner.state.borrow();
        let doc = st.store().and_then(|s| s.get(&name, &key)).cloned();
        drop(st);
        Ok(match doc {
            Some(doc) => managed_object(&self.inner, &name, &key, &doc),
            None => JsValue::UNDEFINED,
        })
    }

    /// The flexible-sync subscriptions.
    #[wasm_bindgen(getter)]
    pub fn subscriptions(&self) -> SubscriptionSet {
        SubscriptionSet::new(Rc::clone(&self.inner))
    }

    /// The sync session: connection state, pause/resume, waiting for uploads and downloads.
    #[wasm_bindgen(getter, js_name = syncSession)]
    pub fn sync_session(&self) -> SyncSession {
        SyncSession::new(Rc::clone(&self.inner))
    }

    /// Waits until every write is durable, then closes the connection, the IndexedDB database
    /// and releases the tab lock. Unsynced changes stay stored and upload after the next open.
    pub async fn close(&self) -> Result<(), JsValue> {
        if self.inner.state.borrow().closed {
            return Ok(());
        }
        let flushed = wait(&self.inner, Until::Flushed, JsValue::UNDEFINED);
        wasm_bindgen_futures::JsFuture::from(flushed).await?;
        self.inner.shut_down();
        let storage = {
            let mut st = self.inner.state.borrow_mut();
            st.results_listeners.clear();
            st.object_listeners.clear();
            st.storage.take()
        };
        if let Some(storage) = storage.and_then(|s| Rc::try_unwrap(s).ok()) {
            storage.close();
        }
        Ok(())
    }

    /// Records an assignment to a live object (called by the object proxy).
    #[wasm_bindgen(js_name = _setProperty, skip_typescript)]
    pub fn set_property(
        &self,
        collection: String,
        key: JsValue,
        field: String,
        value: JsValue,
    ) -> Result<(), JsValue> {
        self.require_write(&format!("setting {collection}.{field}"))?;
        if field == PRIMARY_KEY {
            return Err(errors::usage(
                "the primary key (_id) of an object cannot change",
            ));
        }
        let schema = &self.inner.schema;
        let coll = schema.collection(&collection).ok_or_else(|| {
            errors::usage(format!(
                "unknown collection {collection}",
                collection = Quoted(&collection)
            ))
        })?;
        let property = coll
            .properties
            .get(&field)
            .ok_or_else(|| errors::usage(format!("{collection}.{field} is not in the schema")))?;
        let pk = coll
            .primary_key
            .ok_or_else(|| errors::usage("not a top-level object"))?;
        let key = convert::to_primary_key(pk, &key).map_err(errors::usage)?;
        let value =
            convert::to_property(schema, &collection, property, &value).map_err(errors::usage)?;
        self.record(Op::Set {
            collection,
            key,
            field,
            value,
        });
        Ok(())
    }

    /// Registers an object listener (called by `object.addListener`).
    #[wasm_bindgen(js_name = _addObjectListener, skip_typescript)]
    pub fn add_object_listener(
        &self,
        collection: String,
        key: JsValue,
        callback: Function,
    ) -> Result<(), JsValue> {
        let pk = self
            .inner
            .schema
            .collection(&collection)
            .and_then(|c| c.primary_key)
            .ok_or_else(|| errors::usage("not a top-level object"))?;
        let key = convert::to_primary_key(pk, &key).map_err(errors::usage)?;
        let object = self.object_for_primary_key(collection.clone(), convert::from_key(&key))?;
        self.inner
            .state
            .borrow_mut()
            .object_listeners
            .push(ObjectListener {
                collection,
                key,
                callback,
                object,
            });
        Ok(())
    }

    /// Removes an object listener (called by `object.removeListener`).
    #[wasm_bindgen(js_name = _removeObjectListener, skip_typescript)]
    pub fn remove_object_listener(&self, callback: &Function) {
        self.inner
            .state
            .borrow_mut()
            .object_listeners
            .retain(|l| !Object::is(&l.callback, callback));
    }
}

/// What `Eddy.open` reads from its configuration before it waits for the lock and storage.
/// Kept out of the `async` body so its state machine stays small.
struct Opening {
    sync: JsValue,
    schema: Schema,
    defaults: Vec<driver::Default>,
    user: User,
    /// The database's name: app, user and path.
    name: String,
    reset_mode: ResetMode,
    on_reset: Option<Function>,
}

impl Opening {
    #[inline(never)]
    fn read(config: &JsValue) -> Result<Opening, JsValue> {
        let (schema, defaults) = read_schema(&get(config, "schema"))?;
        let sync = get(config, "sync");
        if sync.is_undefined() {
            return Err(errors::usage(
                "Eddy.open needs sync: { user, flexible: true }",
            ));
        }
        let user = user_from(&get(&sync, "user"))?;
        if get(&sync, "flexible").as_bool() != Some(true) {
            return Err(errors::usage(
                "only flexible sync is supported: pass sync: { user, flexible: true }",
            ));
        }
        let path = get(config, "path")
            .as_string()
            .unwrap_or_else(|| "default".into());
        let name = {
            let s = user.session.borrow();
            format!("eddy:{}:{}:{path}", s.app_id, s.id)
        };
        let reset = get(&sync, "clientReset");
        let reset_mode = match get(&reset, "mode").as_string().as_deref() {
            None | Some("recoverUnsyncedChanges") => ResetMode::Recover,
            Some("discardUnsyncedChanges") => ResetMode::Discard,
            Some(other) => {
                return Err(errors::usage(format!(
                    "sync.clientReset.mode {} is not supported: use \"recoverUnsyncedChanges\" or \"discardUnsyncedChanges\"",
                    Quoted(other)
                )))
            }
        };
        if !get(&reset, "onBefore").is_undefined() {
            return Err(errors::usage(
                "sync.clientReset.onBefore is not supported: a reset happens inside the sync session; onAfter reports it",
            ));
        }
        Ok(Opening {
            sync,
            schema,
            defaults,
            user,
            name,
            reset_mode,
            on_reset: get(&reset, "onAfter").dyn_into().ok(),
        })
    }

    #[inline(never)]
    fn in_use(&self) -> JsValue {
        errors::eddy_error(
            "database-in-use",
            "applicationBug",
            &format!(
                "the database \"{}\" is open in another tab; close it there (db.close()) or use another path",
                self.name
            ),
        )
    }

    /// Starts the session over the loaded state and hands out the database.
    #[inline(never)]
    fn start(
        self,
        release: Option<Function>,
        storage: Rc<Storage>,
        persisted: Option<PersistedState>,
    ) -> Result<Eddy, JsValue> {
        let Opening {
            sync,
            schema,
            defaults,
            user,
            name: _,
            reset_mode,
            on_reset,
        } = self;
        let (base_url, token) = {
            let s = user.session.borrow();
            (s.base_url.clone(), s.access_token.clone())
        };
        let fresh = persisted
            .as_ref()
            .is_none_or(|p| p.meta.subscriptions.version == 0);
        // A new file starts with an empty schema; the declared one is added by a write below, so
        // a server in development mode learns it from this client.
        let persisted = persisted.unwrap_or_else(|| PersistedState {
            meta: FileMeta::default(),
            store: Store::new(Schema::default()),
            pending: Vec::new(),
        });
        let mut session = ClientSession::new(
            SESSION,
            SessionConfig {
                path: "flx".into(),
                access_token: token,
                schema: schema.clone(),
                reset_mode,
                async_open: false,
            },
            Some(persisted),
        );
        let schema_write = session
            .add_declared_schema(now_ms(), &schema)
            .map_err(|e| errors::usage(e.to_string()))?;
        let seed = (js_sys::Math::random() * 9.0e15) as u64;
        let mut conn = ClientConnection::new(
            ConnectionConfig {
                backoff_base_ms: 200,
                backoff_max_ms: 30_000,
                connect_timeout_ms: 15_000,
                seed,
                ..ConnectionConfig::default()
            },
            now_ms(),
        );
        conn.add_session(session);
        let url = format!(
            "ws{}/api/sync",
            base_url.strip_prefix("http").unwrap_or(&base_url)
        );
        let mut state = State::new(conn, url, user, storage);
        let on_error = get(&sync, "onError");
        state.on_error = on_error.dyn_into::<Function>().ok();
        state.on_reset = on_reset;
        let inner = Inner::new(state, schema, defaults);
        *inner.lock_release.borrow_mut() = release;
        let db = Eddy {
            inner: Rc::clone(&inner),
        };
        let initial = get(&sync, "initialSubscriptions");
        let rerun = get(&initial, "rerunOnOpen").as_bool().unwrap_or(false);
        if let Ok(update) = get(&initial, "update").dyn_into::<Function>() {
            if fresh || rerun {
                let set = MutableSubscriptionSet::new(Rc::clone(&inner));
                let set_js = JsValue::from(set.clone());
                update.call2(
                    &JsValue::UNDEFINED,
                    &set_js,
                    &JsValue::from(Eddy {
                        inner: Rc::clone(&inner),
                    }),
                )?;
                match schema_write {
                    None => {
                        set.commit()?;
                    }
                    Some(version) => {
                        // The server checks subscriptions against its schema: send them once it
                        // has integrated the collections this client added.
                        let added = wait(&inner, Until::Uploaded(version), JsValue::UNDEFINED);
                        wasm_bindgen_futures::spawn_local(async move {
                            if wasm_bindgen_futures::JsFuture::from(added).await.is_ok() {
                                if let Err(e) = set.commit() {
                                    web_sys::console::warn_2(&"eddy-sync:".into(), &e);
                                }
                            }
                        });
                    }
                }
            }
        }
        inner.listen_to_network();
        driver::schedule_refresh(&inner);
        request_persistent_storage();
        pump(&inner);
        Ok(db)
    }
}

/// Opens the file's IndexedDB database and loads what it holds.
async fn load(
    name: &str,
    schema: &Schema,
) -> Result<(Rc<Storage>, Option<PersistedState>), String> {
    let storage = Rc::new(Storage::open(name).await?);
    let persisted = storage.load(schema).await?;
    Ok((storage, persisted))
}

fn user_from(js: &JsValue) -> Result<User, JsValue> {
    crate::user::user_from_js(js)
        .ok_or_else(|| errors::usage("sync.user must be a User from app.logIn"))
}

/// Asks the browser not to evict the databases under storage pressure (best effort).
fn request_persistent_storage() {
    let Some(window) = web_sys::window() else {
        return;
    };
    if let Ok(promise) = window.navigator().storage().persist() {
        wasm_bindgen_futures::spawn_local(async move {
            let granted = wasm_bindgen_futures::JsFuture::from(promise).await;
            if !matches!(granted.as_ref().map(JsValue::as_bool), Ok(Some(true))) {
                web_sys::console::info_1(&"eddy-sync: persistent storage was not granted; the browser may evict local data under storage pressure".into());
            }
        });
    }
}
