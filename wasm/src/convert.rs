//! JavaScript values to and from the core's `Value`, guided by the schema: numbers become ints or
//! doubles by the property's type, `Date`s become dates, hex strings become object ids, arrays
//! become lists or sets, plain objects become dictionaries or embedded objects.

use std::collections::BTreeMap;

use eddy_core::quote::Quoted;
use eddy_core::schema::{
    CollectionSchema, Container, PrimaryKeyType, Property, ScalarType, Schema, PRIMARY_KEY,
};
use eddy_core::value::{Decimal, Document, Link, ObjectId, PrimaryKey, Uuid, Value};
use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

/// The largest integer a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A JavaScript value read as `property` of `collection`.
pub(crate) fn to_property(
    schema: &Schema,
    collection: &str,
    property: &Property,
    js: &JsValue,
) -> Result<Value, String> {
    let at = || format!("{collection}.{}", property.name);
    match property.container {
        Container::Single => to_element(schema, &property.ty, property.optional, js, &at),
        Container::List | Container::Set => {
            if js.is_null() || js.is_undefined() {
                return Ok(empty_container(property.container));
            }
            let items = iterate(js).ok_or_else(|| format!("{}: expected an array", at()))?;
            let values = items
                .iter()
                .map(|item| to_element(schema, &property.ty, property.optional, &item, &at))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(match property.container {
                Container::Set => Value::set_from(values),
                _ => Value::List(values.into()),
            })
        }
        Container::Dictionary => {
            if js.is_null() || js.is_undefined() {
                return Ok(Value::Dict(BTreeMap::new()));
            }
            let object = js
                .dyn_ref::<Object>()
                .ok_or_else(|| format!("{}: expected an object", at()))?;
            let mut map = BTreeMap::new();
            for entry in Object::entries(object).iter() {
                let pair = Array::from(&entry);
                let key = pair.get(0).as_string().unwrap_or_default();
                let value = to_element(schema, &property.ty, property.optional, &pair.get(1), &at)?;
                map.insert(key, value);
            }
            Ok(Value::Dict(map))
        }
        _ => Err(format!("{}: unsupported container", at())),
    }
}

fn empty_container(container: Container) -> Value {
    match container {
        Container::Set => Value::Set(Default::default()),
        _ => Value::List(Default::default()),
    }
}

/// The elements of an array, a `Set` or any other iterable.
fn iterate(js: &JsValue) -> Option<Array> {
    if Array::is_array(js) {
        return Some(Array::from(js));
    }
    let iterator = js_sys::try_iter(js).ok()??;
    let array = Array::new();
    for item in iterator {
        array.push(&item.ok()?);
    }
    Some(array)
}

fn to_element(
    schema: &Schema,
    ty: &ScalarType,
    optional: bool,
    js: &JsValue,
    at: &dyn Fn() -> String,
) -> Result<Value, String> {
    if js.is_null() || js.is_undefined() {
        return if optional || *ty == ScalarType::Mixed {
            Ok(Value::Null)
        } else {
            Err(format!(
                "{}: a value is required (the property is not optional)",
                at()
            ))
        };
    }
    let wrong = |expected: &str| format!("{}: expected {expected}, found {}", at(), describe(js));
    Ok(match ty {
        ScalarType::Bool => Value::Bool(js.as_bool().ok_or_else(|| wrong("a boolean"))?),
        ScalarType::Int | ScalarType::Counter => {
            Value::Int(integer(js).ok_or_else(|| wrong("an integer"))?)
        }
        ScalarType::Double => Value::Double(js.as_f64().ok_or_else(|| wrong("a number"))?),
        ScalarType::String => Value::String(js.as_string().ok_or_else(|| wrong("a string"))?),
        ScalarType::Binary => Value::Binary(bytes(js).ok_or_else(|| wrong("a Uint8Array"))?),
        ScalarType::Date => Value::Date(date(js).ok_or_else(|| wrong("a Date"))?),
        ScalarType::ObjectId => {
            let text = text_of(js).ok_or_else(|| wrong("an object id (24 hex digits)"))?;
            Value::ObjectId(ObjectId::parse(&text).map_err(|e| format!("{}: {e}", at()))?)
        }
        ScalarType::Uuid => {
            let text = text_of(js).ok_or_else(|| wrong("a UUID string"))?;
            Value::Uuid(Uuid::parse(&text).map_err(|e| format!("{}: {e}", at()))?)
        }
        ScalarType::Decimal => {
            let text = text_of(js).ok_or_else(|| wrong("a decimal number or string"))?;
            Value::Decimal(Decimal::parse(&text).map_err(|e| format!("{}: {e}", at()))?)
        }
        ScalarType::Mixed => {
            mixed(js).ok_or_else(|| wrong("a boolean, number, string, Date or Uint8Array"))?
        }
        ScalarType::Link(target) => {
            let pk_type = schema
                .collection(target)
                .and_then(|c| c.primary_key)
                .ok_or_else(|| {
                    format!(
                        "{}: {target} is not a top-level collection",
                        at(),
                        target = Quoted(target)
                    )
                })?;
            let key_js = match js.dyn_ref::<Object>() {
                Some(object) if !js.is_string() => Reflect::get(object, &PRIMARY_KEY.into())
                    .map_err(|_| wrong("an object with an _id"))?,
                _ => js.clone(),
            };
            Value::Link(Link {
                collection: target.clone(),
                key: to_primary_key(pk_type, &key_js).map_err(|e| format!("{}: {e}", at()))?,
            })
        }
        ScalarType::Embedded(name) => {
            let collection = schema.collection(name).ok_or_else(|| {
                format!(
                    "{}: unknown embedded collection {name}",
                    at(),
                    name = Quoted(name)
                )
            })?;
            Value::Object(to_document(schema, collection, js, false)?)
        }
        _ => return Err(format!("{}: unsupported type", at())),
    })
}

/// A JavaScript object read as a document of `collection`: only properties of the schema, and
/// `_id` when `with_key` (for top-level objects).
pub(crate) fn to_document(
    schema: &Schema,
    collection: &CollectionSchema,
    js: &JsValue,
    with_key: bool,
) -> Result<Document, String> {
    let object = js.dyn_ref::<Object>().ok_or_else(|| {
        format!(
            "{}: expected an object, found {}",
            collection.name,
            describe(js)
        )
    })?;
    let mut doc = Document::new();
    for entry in Object::entries(object).iter() {
        let pair = Array::from(&entry);
        let field = pair.get(0).as_string().unwrap_or_default();
        let value = pair.get(1);
        if field == PRIMARY_KEY {
            if let (true, Some(pk)) = (with_key, collection.primary_key) {
                let key = to_primary_key(pk, &value)
                    .map_err(|e| format!("{}._id: {e}", collection.name))?;
                doc.insert(field, Value::from(key));
            }
            continue;
        }
        if value.is_undefined() {
            continue;
        }
        let property = collection.properties.get(&field).ok_or_else(|| {
            format!(
                "{}.{field} is not in the schema; add it to the schema or remove the field",
                collection.name
            )
        })?;
        doc.insert(
            field,
            to_property(schema, &collection.name, property, &value)?,
        );
    }
    Ok(doc)
}

/// A JavaScript value read as a primary key of the given type.
pub(crate) fn to_primary_key(ty: PrimaryKeyType, js: &JsValue) -> Result<PrimaryKey, String> {
    let bad = |expected: &str| {
        format!(
            "expected {expected} as the primary key, found {}",
            describe(js)
        )
    };
    match ty {
        PrimaryKeyType::Int => integer(js)
            .map(PrimaryKey::Int)
            .ok_or_else(|| bad("an integer")),
        PrimaryKeyType::String => js
            .as_string()
            .map(PrimaryKey::String)
            .ok_or_else(|| bad("a string")),
        PrimaryKeyType::ObjectId => {
            let text = text_of(js).ok_or_else(|| bad("an object id"))?;
            ObjectId::parse(&text)
                .map(PrimaryKey::ObjectId)
                .map_err(|e| e.to_string())
        }
        PrimaryKeyType::Uuid => {
            let text = text_of(js).ok_or_else(|| bad("a UUID"))?;
            Uuid::parse(&text)
                .map(PrimaryKey::Uuid)
                .map_err(|e| e.to_string())
        }
        _ => Err("unsupported primary key type".into()),
    }
}

fn integer(js: &JsValue) -> Option<i64> {
    if js.is_bigint() {
        return js_sys::BigInt::from(js.clone())
            .to_string(10)
            .ok()?
            .as_string()?
            .parse()
            .ok();
    }
    let n = js.as_f64()?;
    (n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER).then_some(n as i64)
}

fn bytes(js: &JsValue) -> Option<Vec<u8>> {
    if let Some(array) = js.dyn_ref::<Uint8Array>() {
        return Some(array.to_vec());
    }
    js.dyn_ref::<js_sys::ArrayBuffer>()
        .map(|buffer| Uint8Array::new(buffer).to_vec())
}

fn date(js: &JsValue) -> Option<i64> {
    let ms = if let Some(d) = js.dyn_ref::<js_sys::Date>() {
        d.get_time()
    } else if let Some(text) = js.as_string() {
        js_sys::Date::parse(&text)
    } else {
        js.as_f64()?
    };
    (ms.is_finite() && ms.abs() <= MAX_SAFE_INTEGER).then_some(ms as i64)
}

/// A string, or the `toString()` of an object (BSON `ObjectId`s and `UUID`s have one) or number.
fn text_of(js: &JsValue) -> Option<String> {
    if let Some(s) = js.as_string() {
        return Some(s);
    }
    if js.as_f64().is_some() || js.is_object() {
        return Some(String::from(js.unchecked_ref::<Object>().to_string()));
    }
    None
}

fn mixed(js: &JsValue) -> Option<Value> {
    if let Some(b) = js.as_bool() {
        return Some(Value::Bool(b));
    }
    if let Some(n) = js.as_f64() {
        return Some(match integer(js) {
            Some(i) => Value::Int(i),
            None => Value::Double(n),
        });
    }
    if let Some(s) = js.as_string() {
        return Some(Value::String(s));
    }
    if js.is_instance_of::<js_sys::Date>() {
        return date(js).map(Value::Date);
    }
    bytes(js).map(Value::Binary)
}

fn describe(js: &JsValue) -> String {
    if js.is_null() {
        return "null".into();
    }
    if let Some(s) = js.as_string() {
        let short: String = s.chars().take(40).collect();
        return format!("the string {short}", short = Quoted(&short));
    }
    if Array::is_array(js) {
        return "an array".into();
    }
    js.js_typeof()
        .as_string()
        .unwrap_or_else(|| "a value".into())
}

/// A value as JavaScript: numbers, strings, booleans, `Date`s, `Uint8Array`s; object ids, UUIDs
/// and decimals as strings; links as the target's primary key; lists and sets as arrays;
/// dictionaries and embedded objects as plain objects.
pub(crate) fn from_value(value: &Value) -> JsValue {
    match value {
        Value::Null => JsValue::NULL,
        Value::Bool(b) => JsValue::from_bool(*b),
        Value::Int(i) => JsValue::from_f64(*i as f64),
        Value::Double(d) => JsValue::from_f64(*d),
        Value::String(s) => JsValue::from_str(s),
        Value::Binary(b) => Uint8Array::from(b.as_slice()).into(),
        Value::Date(ms) => js_sys::Date::new(&JsValue::from_f64(*ms as f64)).into(),
        Value::ObjectId(o) => JsValue::from_str(&o.to_string()),
        Value::Uuid(u) => JsValue::from_str(&u.to_string()),
        Value::Decimal(d) => JsValue::from_str(d.as_str()),
        Value::Link(link) => from_value(&Value::from(link.key.clone())),
        Value::List(items) | Value::Set(items) => {
            items.iter().map(from_value).collect::<Array>().into()
        }
        Value::Dict(map) => object_of(map.iter()).into(),
        Value::Object(doc) => object_of(doc.iter()).into(),
    }
}

/// A plain object with the given fields.
pub(crate) fn object_of<'a>(fields: impl Iterator<Item = (&'a String, &'a Value)>) -> Object {
    let object = Object::new();
    for (name, value) in fields {
        // Setting a property on a fresh plain object cannot fail.
        let _ = Reflect::set(&object, &JsValue::from_str(name), &from_value(value));
    }
    object
}

/// A primary key as JavaScript.
pub(crate) fn from_key(key: &PrimaryKey) -> JsValue {
    from_value(&Value::from(key.clone()))
}

/// A fresh object id: seconds since the epoch, then random bytes.
pub(crate) fn new_object_id() -> ObjectId {
    let mut bytes = [0u8; 12];
    let seconds = (js_sys::Date::now() / 1000.0) as u32;
    bytes[..4].copy_from_slice(&seconds.to_be_bytes());
    fill_random(&mut bytes[4..]);
    ObjectId(bytes)
}

/// A fresh random (version 4) UUID.
pub(crate) fn new_uuid() -> Uuid {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid(bytes)
}

fn fill_random(bytes: &mut [u8]) {
    for b in bytes {
        *b = (js_sys::Math::random() * 256.0) as u8;
    }
}

/// The JavaScript form of a new object's primary key, generated when the caller gave none.
pub(crate) fn generated_key(ty: PrimaryKeyType) -> Option<PrimaryKey> {
    match ty {
        PrimaryKeyType::ObjectId => Some(PrimaryKey::ObjectId(new_object_id())),
        PrimaryKeyType::Uuid => Some(PrimaryKey::Uuid(new_uuid())),
        _ => None,
    }
}
