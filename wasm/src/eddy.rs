//! `Eddy`: an open synced database. `Eddy.open({ schema, sync })` loads it from IndexedDB and
//! starts syncing; `write`, `create`, `delete`, `objects` and `objectForPrimaryKey` read and change
//! it; `subscriptions` and `syncSession` control sync; `close` ends it.
//!
//! Objects are live (`object.rs`): a field read returns the current value. Inside a `write()`
//! callback each `create`, assignment and `delete` is applied to the store at once, so reads (of
//! objects and `Results`) see the transaction's own changes; the store's undo log keeps them
//! revertible (`SuspendedWrite` between calls), and they commit as one changeset when the
//! callback returns, or are undone if it throws or one of them failed.

use std::convert::Infallible;
use std::rc::Rc;

use eddy_core::changeset::Path;
use eddy_core::client::{
    ClientConnection, ClientSession, ConnectionConfig, FileMeta, PersistedState, ResetMode,
    SessionConfig,
};
use eddy_core::quote::Quoted;
use eddy_core::schema::{CollectionKind, Container, Schema, PRIMARY_KEY};
use eddy_core::schema_json::{schema_from_node, SchemaNode};
use eddy_core::store::{Store, SuspendedWrite};
use eddy_core::value::{Document, PrimaryKey, Value};
use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::convert;
use crate::driver::{self, now_ms, pump, wait, Inner, State, Until, SESSION};
use crate::errors;
use crate::lock::{self, Lock};
use crate::object::live_object;
use crate::results::Results;
use crate::storage::Storage;
use crate::subscriptions::{MutableSubscriptionSet, SubscriptionSet};
use crate::sync_session::SyncSession;
use crate::user::User;

#[wasm_bindgen(module = "/js/glue.js")]
extern "C" {
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
export type ClientResetMode = "recoverUnsyncedChanges" | "recoverOrDiscardUnsyncedChanges" | "discardUnsyncedChanges" | "manual";
/** `sync.clientReset`. */
export interface ClientResetConfiguration {
  /** "recoverUnsyncedChanges" (the default) and "recoverOrDiscardUnsyncedChanges" re-apply them
   * on top of the server's data and upload them again, dropping those that no longer apply;
   * "discardUnsyncedChanges" drops them; "manual" resets nothing: the session stops and
   * `onManual` is called. */
  mode?: ClientResetMode;
  /** Called when the reset starts, with the database still holding the local data, read-only
   * while the callback runs (read what you need synchronously: afterwards the database changes). */
  onBefore?: (before: Eddy) => void;
  /** Called once a reset has replaced the local data with the server's (and, in recover mode,
   * re-applied the unsynced changes, which then upload again). */
  onAfter?: (summary: ClientResetSummary) => void;
  /** Mode "manual": called when the server asks for a reset. Close the database, delete it with
   * `Eddy.deleteDatabase` and open it again. */
  onManual?: (session: SyncSession, path: string) => void;
}
/** What a client reset did with the local changes the server had not integrated. */
export interface ClientResetSummary {
  /** Changesets re-applied on top of the server's data. */
  recovered: number;
  /** Changesets dropped: all of them in discard mode, those that no longer apply otherwise. */
  discarded: number;
}
"#;

/// One write inside `write()`, applied as it is made.
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

    /// Refuses writes while `sync.clientReset.onBefore` looks at the local state.
    fn writable(&self) -> Result<(), JsValue> {
        if self.inner.read_only.get() {
            return Err(errors::usage(
                "the database is read-only in sync.clientReset.onBefore; write in onAfter",
            ));
        }
        Ok(())
    }

    pub(crate) fn require_write(&self, what: &str) -> Result<(), JsValue> {
        self.state_check()?;
        if !self.inner.in_write.get() {
            return Err(errors::usage(format!(
                "{what} outside a write transaction: wrap it in db.write(() => {{ ... }})"
            )));
        }
        Ok(())
    }

    /// Applies `op` to the running `write()`'s transaction at once, so later reads see it. The
    /// transaction's writes stay applied and revertible between calls (the core's
    /// `SuspendedWrite`); a failed write undoes the whole transaction, and `write()` then fails.
    pub(crate) fn stage(&self, op: Op) -> Result<(), JsValue> {
        crate::object::store_changed();
        let mut staged = self.inner.staged.borrow_mut();
        let earlier = match staged.as_mut() {
            Some(Ok(earlier)) => std::mem::take(earlier),
            Some(Err(failed)) => {
                return Err(errors::usage(format!(
                    "this write transaction already failed and changed nothing: {failed}"
                )))
            }
            None => return Err(errors::usage("not in a write transaction")),
        };
        let mut st = self.inner.state.borrow_mut();
        let session = st
            .conn
            .session_mut(SESSION)
            .ok_or_else(|| errors::usage("the database is closed"))?;
        // The closure never returns `Ok`, so the session commits nothing here: the suspended
        // transaction leaves the store as it is, a failed one is undone when it is dropped.
        let outcome = session.write(now_ms(), |tx| {
            tx.resume(earlier);
            let applied = apply(tx, op);
            Err::<Infallible, _>(applied.map(|()| tx.suspend()))
        });
        match outcome {
            Ok((never, _)) => match never {},
            Err(Ok(suspended)) => {
                *staged = Some(Ok(suspended));
                Ok(())
            }
            Err(Err(message)) => {
                let error =
                    errors::usage(format!("the write failed and changed nothing: {message}"));
                *staged = Some(Err(message));
                Err(error)
            }
        }
    }

    /// Ends the running `write()`'s transaction: commits it as one local changeset when `keep`,
    /// else undoes it. The message of a failed transaction is returned as the error.
    fn finish_write(&self, keep: bool) -> Result<(), JsValue> {
        crate::object::store_changed();
        let staged = self.inner.staged.borrow_mut().take();
        let earlier = match staged {
            Some(Ok(earlier)) => earlier,
            Some(Err(message)) => {
                return Err(errors::usage(format!(
                    "the write failed and changed nothing: {message}"
                )))
            }
            None => return Ok(()),
        };
        let mut st = self.inner.state.borrow_mut();
        let session = st
            .conn
            .session_mut(SESSION)
            .ok_or_else(|| errors::usage("the database is closed"))?;
        let outcome = session.write(now_ms(), |tx| {
            tx.resume(earlier);
            if keep {
                Ok(())
            } else {
                Err(())
            }
        });
        if let Ok(((), changes)) = outcome {
            st.changed(changes);
        }
        Ok(())
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
        let lock = match lock::acquire(&opening.name).await? {
            Lock::Held(lock) => Some(lock),
            Lock::Taken => return Err(in_use(&opening.name)),
            Lock::Unsupported => None,
        };
        let loaded = load(&opening.name, &opening.schema).await;
        match loaded {
            Ok((storage, persisted)) => opening.start(lock, storage, persisted),
            Err(e) => {
                if let Some(lock) = lock {
                    let _ = lock.release();
                }
                Err(errors::storage(&e))
            }
        }
    }

    /// Deletes the local database that `Eddy.open(config)` opens (only `config.sync.user` and
    /// `config.path` are read), unsynced changes included; the next open downloads the server's
    /// data into a new one. This is how an app finishes a client reset in `"manual"` mode: close
    /// the database, delete it, open it again. Fails with `database-in-use` while the database is
    /// open, in this tab or another.
    #[wasm_bindgen(js_name = deleteDatabase)]
    pub async fn delete_database(
        #[wasm_bindgen(unchecked_param_type = "Configuration")] config: JsValue,
    ) -> Result<(), JsValue> {
        let user = user_from(&get(&get(&config, "sync"), "user"))?;
        let (_, name) = database_name(&user, &config);
        let lock = match lock::acquire(&name).await? {
            Lock::Held(lock) => Some(lock),
            Lock::Taken => return Err(in_use(&name)),
            Lock::Unsupported => None,
        };
        let deleted = Storage::delete(&name).await;
        if let Some(lock) = lock {
            wasm_bindgen_futures::JsFuture::from(lock.release()).await?;
        }
        deleted.map_err(|e| errors::storage(&e))
    }

    /// Runs `callback` as one write transaction: its `create`s, assignments and `delete`s apply
    /// at once, so reads inside the callback see them, and commit together when it returns
    /// (none of them if it throws, or if one of them failed). The returned promise resolves to
    /// the callback's result when they are durable in IndexedDB (writes made close together
    /// share one IndexedDB transaction).
    pub fn write(&self, callback: &Function) -> Result<Promise, JsValue> {
        self.state_check()?;
        self.writable()?;
        if self.inner.in_write.get() {
            return Err(errors::usage(
                "already in a write transaction: do not nest db.write calls",
            ));
        }
        *self.inner.staged.borrow_mut() = Some(Ok(SuspendedWrite::default()));
        self.inner.in_write.set(true);
        let result = callback.call0(&JsValue::UNDEFINED);
        self.inner.in_write.set(false);
        let finished = self.finish_write(result.is_ok());
        let value = result?;
        finished?;
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
        let object = live_object(&self.inner, &name, &key);
        self.stage(Op::Create {
            collection: name,
            key,
            doc,
            update,
        })?;
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
            self.stage(op)?;
            return Ok(JsValue::UNDEFINED);
        }
        self.writable()?;
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
            self.stage(Op::Delete { collection, key })?;
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
        let exists = {
            let st = self.inner.state.borrow();
            st.store().and_then(|s| s.get(&name, &key)).is_some()
        };
        Ok(if exists {
            live_object(&self.inner, &name, &key)
        } else {
            JsValue::UNDEFINED
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
        let released = self.inner.shut_down();
        let storage = {
            let mut st = self.inner.state.borrow_mut();
            st.results_listeners.clear();
            st.object_listeners.clear();
            st.storage.take()
        };
        if let Some(storage) = storage.and_then(|s| Rc::try_unwrap(s).ok()) {
            storage.close();
        }
        // Resolved once the lock is free, so that an open or deleteDatabase right after
        // succeeds.
        if let Some(released) = released {
            wasm_bindgen_futures::JsFuture::from(released).await?;
        }
        Ok(())
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
    on_reset_before: Option<Function>,
    manual_reset: Option<(Option<Function>, String)>,
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
        let (path, name) = database_name(&user, config);
        let reset = get(&sync, "clientReset");
        let callback = |name: &str| get(&reset, name).dyn_into::<Function>().ok();
        let (reset_mode, manual) = match get(&reset, "mode").as_string().as_deref() {
            // The core's recovery drops each changeset that no longer applies and keeps the
            // rest, so it never fails as a whole: the fallback to discarding is never needed.
            None | Some("recoverUnsyncedChanges" | "recoverOrDiscardUnsyncedChanges") => {
                (ResetMode::Recover, false)
            }
            Some("discardUnsyncedChanges") => (ResetMode::Discard, false),
            Some("manual") => (ResetMode::Recover, true),
            Some(other) => {
                return Err(errors::usage(format!(
                    "sync.clientReset.mode {} is not supported: use \"recoverUnsyncedChanges\", \"recoverOrDiscardUnsyncedChanges\", \"discardUnsyncedChanges\" or \"manual\"",
                    Quoted(other)
                )))
            }
        };
        if manual && (callback("onBefore").is_some() || callback("onAfter").is_some()) {
            return Err(errors::usage(
                "sync.clientReset.onBefore and onAfter are never called in mode \"manual\", which resets nothing: use onManual",
            ));
        }
        Ok(Opening {
            sync,
            schema,
            defaults,
            user,
            name,
            reset_mode,
            on_reset: callback("onAfter"),
            on_reset_before: callback("onBefore"),
            manual_reset: manual.then(|| (callback("onManual"), path)),
        })
    }

    /// Starts the session over the loaded state and hands out the database.
    #[inline(never)]
    fn start(
        self,
        lock: Option<lock::HeldLock>,
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
            on_reset_before,
            manual_reset,
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
        state.on_reset_before = on_reset_before;
        state.manual_reset = manual_reset;
        let inner = Inner::new(state, schema, defaults);
        *inner.lock.borrow_mut() = lock;
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

/// The `path` option (default `"default"`) and the name of the database `config` opens for
/// `user`: app, user and path.
fn database_name(user: &User, config: &JsValue) -> (String, String) {
    let path = get(config, "path")
        .as_string()
        .unwrap_or_else(|| "default".into());
    let name = {
        let s = user.session.borrow();
        format!("eddy:{}:{}:{path}", s.app_id, s.id)
    };
    (path, name)
}

#[inline(never)]
fn in_use(name: &str) -> JsValue {
    errors::eddy_error(
        "database-in-use",
        "applicationBug",
        &format!(
            "the database \"{name}\" is open (in this tab or another); close it (db.close()) or use another path"
        ),
    )
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
