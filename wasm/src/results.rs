//! `Results`: a live query over one collection (`db.objects(name)`), narrowed by `filtered` and
//! ordered by `sorted`. It is evaluated on every access, so it always shows the current state.

use std::cmp::Ordering;
use std::rc::Rc;

use eddy_core::query::{self, ObjectSource};
use eddy_core::quote::Quoted;
use eddy_core::schema::Schema;
use eddy_core::store::Store;
use eddy_core::value::{PrimaryKey, Value};
use js_sys::{Array, Function};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::driver::{Inner, ResultsListener};
use crate::eddy::plain_object;
use crate::errors;
use crate::object::live_object;

/// The store as the query engine's object source.
struct Source<'a>(&'a Store);

impl ObjectSource for Source<'_> {
    fn schema(&self) -> &Schema {
        self.0.schema()
    }

    fn get(&self, collection: &str, key: &PrimaryKey) -> Option<&eddy_core::value::Document> {
        self.0.get(collection, key)
    }

    fn objects<'a>(
        &'a self,
        collection: &str,
    ) -> Box<dyn Iterator<Item = (&'a PrimaryKey, &'a eddy_core::value::Document)> + 'a> {
        Box::new(self.0.objects(collection))
    }
}

/// What a `Results` selects: a collection, filters (each a parsed query and its arguments),
/// and sort keys.
#[derive(Clone, Debug)]
pub(crate) struct Query {
    pub(crate) collection: String,
    filters: Vec<(String, query::Query, Vec<Value>)>,
    sorts: Vec<(String, bool)>,
}

impl Query {
    /// The primary keys selected, in order.
    pub(crate) fn keys(&self, store: &Store) -> Result<Vec<PrimaryKey>, String> {
        let mut keys: Vec<PrimaryKey> = match self.filters.first() {
            Some((_, q, args)) => q
                .run(&Source(store), &self.collection, args)
                .map_err(|e| e.to_string())?,
            None => store
                .objects(&self.collection)
                .map(|(k, _)| k.clone())
                .collect(),
        };
        for (_, q, args) in self.filters.iter().skip(1) {
            let mut kept = Vec::with_capacity(keys.len());
            for key in keys {
                if let Some(doc) = store.get(&self.collection, &key) {
                    if q.matches(doc, &Source(store), args)
                        .map_err(|e| e.to_string())?
                    {
                        kept.push(key);
                    }
                }
            }
            keys = kept;
        }
        if !self.sorts.is_empty() {
            let null = Value::Null;
            eddy_core::sort::sort_by(&mut keys, |a, b| {
                let (da, db) = (
                    store.get(&self.collection, a),
                    store.get(&self.collection, b),
                );
                for (field, ascending) in &self.sorts {
                    let va = da.and_then(|d| d.get(field)).unwrap_or(&null);
                    let vb = db.and_then(|d| d.get(field)).unwrap_or(&null);
                    let order = if *ascending { va.cmp(vb) } else { vb.cmp(va) };
                    if order != Ordering::Equal {
                        return order;
                    }
                }
                Ordering::Equal
            });
        }
        Ok(keys)
    }

    /// The filters as one self-contained RQL predicate (arguments substituted), for a
    /// subscription.
    pub(crate) fn subscription_text(&self) -> Result<String, String> {
        if self.filters.is_empty() {
            return Ok("TRUEPREDICATE".into());
        }
        let parts = self
            .filters
            .iter()
            .map(|(_, q, args)| {
                q.bind(args)
                    .map(|b| format!("({b})"))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(parts.join(" AND "))
    }
}

/// A live, ordered collection of objects from `db.objects(name)`.
#[wasm_bindgen]
pub struct Results {
    pub(crate) inner: Rc<Inner>,
    pub(crate) query: Query,
}

impl std::fmt::Debug for Results {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Results")
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl Results {
    /// Every object of `collection`.
    pub(crate) fn all(inner: Rc<Inner>, collection: String) -> Results {
        Results {
            inner,
            query: Query {
                collection,
                filters: Vec::new(),
                sorts: Vec::new(),
            },
        }
    }

    fn keys(&self) -> Result<Vec<PrimaryKey>, JsValue> {
        let st = self.inner.state.borrow();
        let store = st
            .store()
            .ok_or_else(|| errors::usage("the database is closed"))?;
        self.query
            .keys(store)
            .map_err(|e| errors::usage(format!("query on {}: {e}", self.query.collection)))
    }

    fn objects(&self, managed: bool) -> Result<Array, JsValue> {
        let keys = self.keys()?;
        let st = self.inner.state.borrow();
        let store = st
            .store()
            .ok_or_else(|| errors::usage("the database is closed"))?;
        let out = Array::new();
        for key in &keys {
            if let Some(doc) = store.get(&self.query.collection, key) {
                let object = if managed {
                    live_object(&self.inner, &self.query.collection, key)
                } else {
                    plain_object(key, doc).into()
                };
                out.push(&object);
            }
        }
        Ok(out)
    }
}

#[wasm_bindgen]
impl Results {
    /// The collection's name.
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.query.collection.clone()
    }

    /// How many objects match now.
    #[wasm_bindgen(getter)]
    pub fn length(&self) -> Result<u32, JsValue> {
        Ok(self.keys()?.len() as u32)
    }

    /// The objects matching an RQL predicate as well (`"status == $0 AND done == false"`, with
    /// `$0` … `$7` taken from the arguments after it). A predicate may end with `SORT(...)`,
    /// `DISTINCT(...)` or `LIMIT(n)` when it is the first filter.
    #[allow(clippy::too_many_arguments)]
    pub fn filtered(
        &self,
        predicate: String,
        arg0: JsValue,
        arg1: JsValue,
        arg2: JsValue,
        arg3: JsValue,
        arg4: JsValue,
        arg5: JsValue,
        arg6: JsValue,
        arg7: JsValue,
    ) -> Result<Results, JsValue> {
        let args = [arg0, arg1, arg2, arg3, arg4, arg5, arg6, arg7];
        let parsed = query::parse(&predicate).map_err(|e| {
            errors::usage(format!(
                "query {predicate}: {e}",
                predicate = Quoted(&predicate)
            ))
        })?;
        parsed
            .validate(&self.inner.schema, &self.query.collection)
            .map_err(|e| {
                errors::usage(format!(
                    "query {predicate} on {}: {e}",
                    self.query.collection,
                    predicate = Quoted(&predicate)
                ))
            })?;
        let schema = &self.inner.schema;
        let values = args
            .iter()
            .map(|a| arg_value(schema, a))
            .collect::<Result<Vec<_>, _>>()?;
        let mut query = self.query.clone();
        query.filters.push((predicate, parsed, values));
        Ok(Results {
            inner: Rc::clone(&self.inner),
            query,
        })
    }

    /// The same objects sorted by a property (`reverse` for descending); later calls break ties
    /// of earlier ones.
    pub fn sorted(&self, property: String, reverse: Option<bool>) -> Result<Results, JsValue> {
        let known = self
            .inner
            .schema
            .collection(&self.query.collection)
            .is_some_and(|c| {
                property == eddy_core::schema::PRIMARY_KEY || c.properties.contains_key(&property)
            });
        if !known {
            return Err(errors::usage(format!(
                "sorted({property}): {} has no such property",
                self.query.collection,
                property = Quoted(&property)
            )));
        }
        let mut query = self.query.clone();
        query.sorts.push((property, !reverse.unwrap_or(false)));
        Ok(Results {
            inner: Rc::clone(&self.inner),
            query,
        })
    }

    /// The object at `index` (negative counts from the end), or `undefined`.
    pub fn at(&self, index: i32) -> Result<JsValue, JsValue> {
        let keys = self.keys()?;
        let len = keys.len() as i64;
        let i = if index < 0 {
            len + i64::from(index)
        } else {
            i64::from(index)
        };
        let Some(key) = usize::try_from(i).ok().and_then(|i| keys.get(i)) else {
            return Ok(JsValue::UNDEFINED);
        };
        Ok(live_object(&self.inner, &self.query.collection, key))
    }

    /// The objects as an array of live objects.
    #[wasm_bindgen(js_name = toArray)]
    pub fn to_array(&self) -> Result<Array, JsValue> {
        self.objects(true)
    }

    /// The objects as plain data (for `JSON.stringify`).
    #[wasm_bindgen(js_name = toJSON)]
    pub fn to_json(&self) -> Result<Array, JsValue> {
        self.objects(false)
    }

    /// Iterates over the objects as they are now: `for (const task of results)`.
    #[wasm_bindgen(js_name = "[Symbol.iterator]")]
    pub fn iterator(&self) -> Result<js_sys::Iterator, JsValue> {
        Ok(self.objects(true)?.values())
    }

    /// Calls `callback(results, changes)` now and after every change to these results, with
    /// `changes.insertions`, `deletions` (indices before the change) and `modifications`
    /// (indices after it).
    #[wasm_bindgen(js_name = addListener)]
    pub fn add_listener(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "(results: Results, changes: CollectionChangeSet) => void"
        )]
        callback: Function,
    ) -> Result<(), JsValue> {
        let keys = self.keys()?;
        let results = JsValue::from(Results {
            inner: Rc::clone(&self.inner),
            query: self.query.clone(),
        });
        let empty = js_sys::Object::new();
        for name in [
            "insertions",
            "deletions",
            "modifications",
            "newModifications",
        ] {
            let _ = js_sys::Reflect::set(&empty, &name.into(), &Array::new());
        }
        self.inner
            .state
            .borrow_mut()
            .results_listeners
            .push(ResultsListener {
                query: self.query.clone(),
                keys,
                callback: callback.clone(),
                results: results.clone(),
            });
        let _ = callback.call2(&JsValue::UNDEFINED, &results, &empty);
        Ok(())
    }

    /// Stops calling `callback`.
    #[wasm_bindgen(js_name = removeListener)]
    pub fn remove_listener(&self, callback: &Function) {
        self.inner
            .state
            .borrow_mut()
            .results_listeners
            .retain(|l| !js_sys::Object::is(&l.callback, callback));
    }

    /// Stops every listener of every results of this database.
    #[wasm_bindgen(js_name = removeAllListeners)]
    pub fn remove_all_listeners(&self) {
        self.inner.state.borrow_mut().results_listeners.clear();
    }
}

#[wasm_bindgen(typescript_custom_section)]
const CHANGES: &'static str = r#"
/** What changed in a `Results` (indices). */
export interface CollectionChangeSet {
  insertions: number[];
  deletions: number[];
  modifications: number[];
  newModifications: number[];
}
"#;

/// A query argument: booleans, numbers (integers as ints), strings, `Date`s, arrays (for `IN`).
fn arg_value(schema: &Schema, js: &JsValue) -> Result<Value, JsValue> {
    if js.is_null() || js.is_undefined() {
        return Ok(Value::Null);
    }
    if let Some(b) = js.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Some(n) = js.as_f64() {
        return Ok(if n.fract() == 0.0 && n.abs() < 9.0e15 {
            Value::Int(n as i64)
        } else {
            Value::Double(n)
        });
    }
    if let Some(s) = js.as_string() {
        return Ok(Value::String(s));
    }
    if let Some(d) = js.dyn_ref::<js_sys::Date>() {
        return Ok(Value::Date(d.get_time() as i64));
    }
    if Array::is_array(js) {
        let items = Array::from(js)
            .iter()
            .map(|v| arg_value(schema, &v))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Value::List(items.into()));
    }
    if let Some(key) = crate::eddy::object_key_of(schema, js) {
        return Ok(Value::from(key));
    }
    Err(errors::usage(
        "a query argument must be a boolean, number, string, Date, array or object",
    ))
}
