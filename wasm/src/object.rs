//! `LiveObject`: the handle behind every object the database hands out, which `js/glue.js` wraps
//! in a `Proxy`. Objects are live: each field read asks the store for the current value (one
//! wasm call, converting only that field), so it shows local writes (inside `write()` too, where
//! the transaction's own changes are already applied) and sync downloads as soon as they happen.
//! An object deleted locally or by sync is no longer valid: `isValid()` is false and reading one
//! of its properties throws. The proxy keeps the primitive values it read until
//! [`store_changed`] says a store may have changed; the bindings call it wherever one can: in
//! every `pump` (which follows every network, timer and storage event and every write outside
//! `write()`), in each write inside `write()`, and at close.

use std::rc::Rc;

use eddy_core::quote::Quoted;
use eddy_core::schema::PRIMARY_KEY;
use eddy_core::value::{Document, PrimaryKey};
use js_sys::{Array, Function, Object};
use wasm_bindgen::prelude::*;

use crate::convert;
use crate::driver::{Inner, ObjectListener};
use crate::eddy::{plain_object, Op};
use crate::errors;

#[wasm_bindgen(module = "/js/glue.js")]
extern "C" {
    #[wasm_bindgen(js_name = liveObject)]
    fn glue_live_object(handle: LiveObject, collection: &str, key: &JsValue) -> JsValue;
    /// Drops the primitive values the object proxies keep (see `js/glue.js`).
    #[wasm_bindgen(js_name = storeChanged)]
    pub(crate) fn store_changed();
}

/// One object of a top-level collection, by collection and primary key (used by the object
/// proxy; not part of the typed API).
#[wasm_bindgen(skip_typescript)]
pub struct LiveObject {
    inner: Rc<Inner>,
    collection: String,
    key: PrimaryKey,
}

impl std::fmt::Debug for LiveObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveObject")
            .field("collection", &self.collection)
            .finish_non_exhaustive()
    }
}

/// The object proxy for `key` of `collection`.
pub(crate) fn live_object(inner: &Rc<Inner>, collection: &str, key: &PrimaryKey) -> JsValue {
    let handle = LiveObject {
        inner: Rc::clone(inner),
        collection: collection.to_owned(),
        key: key.clone(),
    };
    glue_live_object(handle, collection, &convert::from_key(key))
}

impl LiveObject {
    /// Runs `f` on the object's current document, if it still exists.
    fn with_doc<R>(&self, f: impl FnOnce(&Document) -> R) -> Option<R> {
        let st = self.inner.state.borrow();
        st.store()
            .and_then(|s| s.get(&self.collection, &self.key))
            .map(f)
    }

    /// Whether `field` is `_id` or a property of the collection.
    fn is_property(&self, field: &str) -> bool {
        field == PRIMARY_KEY
            || self
                .inner
                .schema
                .collection(&self.collection)
                .is_some_and(|c| c.properties.contains_key(field))
    }

    /// The error for using `what` of the object after it was deleted.
    fn invalidated(&self, what: &str) -> JsValue {
        errors::eddy_error(
            "invalidated",
            "applicationBug",
            &format!(
                "accessing {what} of a {collection} object which has been invalidated or deleted (check isValid() first)",
                collection = self.collection,
            ),
        )
    }
}

#[wasm_bindgen]
impl LiveObject {
    /// The current value of `field`: `undefined` for a name that is not a property (nor a
    /// property the object has no value for); throws when the object was deleted.
    pub fn get(&self, field: &str) -> Result<JsValue, JsValue> {
        let value = self.with_doc(|doc| {
            if field == PRIMARY_KEY {
                convert::from_key(&self.key)
            } else {
                doc.get(field)
                    .map_or(JsValue::UNDEFINED, convert::from_value)
            }
        });
        match value {
            Some(value) => Ok(value),
            None if self.is_property(field) => Err(self.invalidated(&Quoted(field).to_string())),
            None => Ok(JsValue::UNDEFINED),
        }
    }

    /// Whether the object still exists (false once deleted, locally or by sync, and once the
    /// database is closed).
    #[wasm_bindgen(js_name = isValid)]
    pub fn is_valid(&self) -> bool {
        self.with_doc(|_| ()).is_some()
    }

    /// Whether `field` is `_id` or a property of the collection (the proxy's `in`).
    pub fn has(&self, field: &str) -> bool {
        self.is_property(field)
    }

    /// `_id` and the fields the object has now (none once it was deleted).
    pub fn keys(&self) -> Array {
        self.with_doc(|doc| {
            let keys = Array::new();
            keys.push(&PRIMARY_KEY.into());
            for field in doc.keys().filter(|f| *f != PRIMARY_KEY) {
                keys.push(&JsValue::from_str(field));
            }
            keys
        })
        .unwrap_or_default()
    }

    /// The current values as a plain object (for `JSON.stringify`).
    #[wasm_bindgen(js_name = toJSON)]
    pub fn to_json(&self) -> Result<Object, JsValue> {
        self.with_doc(|doc| plain_object(&self.key, doc))
            .ok_or_else(|| self.invalidated("toJSON()"))
    }

    /// Assigns `value` to `field` inside `write()`.
    pub fn set(&self, field: String, value: JsValue) -> Result<(), JsValue> {
        let db = crate::eddy::Eddy {
            inner: Rc::clone(&self.inner),
        };
        let what = format!("setting {}.{field}", self.collection);
        db.require_write(&what)?;
        if field == PRIMARY_KEY {
            return Err(errors::usage(
                "the primary key (_id) of an object cannot change",
            ));
        }
        let schema = &self.inner.schema;
        let property = schema
            .collection(&self.collection)
            .and_then(|c| c.properties.get(&field))
            .ok_or_else(|| errors::usage(format!("{what}: not in the schema")))?;
        let value = convert::to_property(schema, &self.collection, property, &value)
            .map_err(errors::usage)?;
        db.stage(Op::Set {
            collection: self.collection.clone(),
            key: self.key.clone(),
            field,
            value,
        })
    }

    /// Calls `callback(object, { deleted, changedProperties })` after every change to the
    /// object.
    #[wasm_bindgen(js_name = addListener)]
    pub fn add_listener(&self, object: JsValue, callback: Function) {
        self.inner
            .state
            .borrow_mut()
            .object_listeners
            .push(ObjectListener {
                collection: self.collection.clone(),
                key: self.key.clone(),
                callback,
                object,
            });
    }

    /// Stops calling `callback`.
    #[wasm_bindgen(js_name = removeListener)]
    pub fn remove_listener(&self, callback: &Function) {
        self.inner
            .state
            .borrow_mut()
            .object_listeners
            .retain(|l| !Object::is(&l.callback, callback));
    }
}
