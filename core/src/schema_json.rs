//! The JSON schema format users write (in the style of Realm JS), read into a [`Schema`] and
//! written back, plus the check that a document fits its collection.
//!
//! ```json
//! { "Task": { "primaryKey": "_id",
//!             "properties": { "_id": "objectId", "done": "bool?", "tags": "string[]",
//!                             "owner": "User?", "sub": "Address",
//!                             "extra": { "type": "list", "objectType": "int", "optional": true } } },
//!   "Address": { "embedded": true, "properties": { "city": "string" } } }
//! ```
//!
//! A collection is an object with `properties` and optionally `primaryKey` (always `"_id"`,
//! required unless the collection is `embedded`), `embedded: true` or `asymmetric: true`.
//!
//! A property type is either shorthand text, `<type>[?][suffix]`, with `?` for optional (for a
//! container: optional elements) and the suffix `[]` for a list, `<>` for a set or `{}` for a
//! dictionary; or an object `{"type", "objectType", "optional", "indexed"}` where `type` is
//! `list`, `set`, `dictionary` or `object` (then `objectType` names the element type) or itself
//! a shorthand type. Types are `bool`, `int`, `double` (or `float`), `string`, `data`, `date`,
//! `objectId`, `uuid`, `decimal128` (or `decimal`), `mixed`, `counter`, or the name of another
//! collection: a link when that collection is top-level, an embedded object when it is
//! embedded. Links to asymmetric collections are refused.

use std::fmt;

use serde_json::{Map, Value as Json};

use crate::quote::Quoted;
use crate::schema::{
    CollectionKind, CollectionSchema, Container, NameMap, PrimaryKeyType, Property, ScalarType,
    Schema, SchemaError, PRIMARY_KEY,
};
use crate::value::{push_json_string, Document, PrimaryKey, Value};

/// Why a schema could not be read from JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaJsonError {
    /// The text is not JSON.
    Syntax {
        /// The line of the error, from 1.
        line: usize,
        /// The column of the error, from 1.
        column: usize,
        /// What the JSON parser reported.
        message: String,
    },
    /// A JSON value of the wrong shape.
    Invalid {
        /// Where it is (`Task.properties.done`).
        path: String,
        /// What was expected.
        expected: &'static str,
        /// The offending JSON.
        json: String,
    },
    /// A key that the schema format does not know.
    UnknownKey {
        /// The object holding it.
        path: String,
        /// The key.
        key: String,
    },
    /// A type name that is neither a built-in type nor a collection of the schema.
    UnknownType {
        /// The property.
        path: String,
        /// The type name.
        name: String,
    },
    /// An empty collection or property name, or a collection named like a built-in type.
    BadName {
        /// Where the name is.
        path: String,
        /// The name.
        name: String,
    },
    /// A top-level or asymmetric collection without `"primaryKey": "_id"` and an `_id`
    /// property.
    MissingPrimaryKey {
        /// The collection.
        collection: String,
    },
    /// A primary key that is not `_id` or whose type cannot be a primary key.
    BadPrimaryKey {
        /// The collection.
        collection: String,
        /// What is wrong.
        detail: String,
    },
    /// A collection whose kind flags contradict each other or its primary key.
    BadCollectionKind {
        /// The collection.
        collection: String,
        /// What is wrong.
        detail: &'static str,
    },
    /// A property whose type refers to an asymmetric collection.
    LinkToAsymmetric {
        /// The property.
        path: String,
        /// The asymmetric collection.
        target: String,
    },
    /// A type that cannot be held in the requested container (a counter in a container, an
    /// embedded object in a set).
    BadContainer {
        /// The property.
        path: String,
        /// What is wrong.
        detail: &'static str,
    },
}

impl fmt::Display for SchemaJsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaJsonError::Syntax {
                line,
                column,
                message,
            } => write!(
                f,
                "schema is not JSON (line {line}, column {column}): {message}"
            ),
            SchemaJsonError::Invalid {
                path,
                expected,
                json,
            } => write!(f, "schema {path}: expected {expected}, found {json}"),
            SchemaJsonError::UnknownKey { path, key } => write!(
                f,
                "schema {path}: unknown key {key} (allowed: primaryKey, embedded, asymmetric, \
                 properties; type, objectType, optional, indexed in property objects)",
                key = Quoted(key)
            ),
            SchemaJsonError::UnknownType { path, name } => write!(
                f,
                "schema {path}: unknown type {name}: use a built-in type or the name of a \
                 collection in the schema",
                name = Quoted(name)
            ),
            SchemaJsonError::BadName { path, name } => write!(
                f,
                "schema {path}: {name} cannot be used as a name (empty, or a built-in type name)",
                name = Quoted(name)
            ),
            SchemaJsonError::MissingPrimaryKey { collection } => write!(
                f,
                "collection {collection} needs \"primaryKey\": \"_id\" and an \"_id\" property \
                 (or \"embedded\": true)",
                collection = Quoted(collection)
            ),
            SchemaJsonError::BadPrimaryKey { collection, detail } => {
                write!(
                    f,
                    "collection {collection} has a bad primary key: {detail}",
                    collection = Quoted(collection)
                )
            }
            SchemaJsonError::BadCollectionKind { collection, detail } => {
                write!(
                    f,
                    "collection {collection}: {detail}",
                    collection = Quoted(collection)
                )
            }
            SchemaJsonError::LinkToAsymmetric { path, target } => write!(
                f,
                "schema {path}: {target} is asymmetric and cannot be linked to or embedded",
                target = Quoted(target)
            ),
            SchemaJsonError::BadContainer { path, detail } => write!(f, "schema {path}: {detail}"),
        }
    }
}

impl std::error::Error for SchemaJsonError {}

/// A schema (or any part of one) as the JSON shapes the format uses, for readers that do not
/// start from serde_json: the browser walks the JavaScript objects it is given into one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaNode {
    /// `true` or `false`.
    Bool(bool),
    /// A string.
    String(String),
    /// An object's members, in order.
    Object(Vec<(String, SchemaNode)>),
    /// Any other JSON value (a number, `null`, an array), as its JSON text, for error messages.
    Other(String),
}

impl SchemaNode {
    fn as_str(&self) -> Option<&str> {
        match self {
            SchemaNode::String(s) => Some(s),
            _ => None,
        }
    }

    fn as_bool(&self) -> Option<bool> {
        match self {
            SchemaNode::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn as_object(&self) -> Option<&[(String, SchemaNode)]> {
        match self {
            SchemaNode::Object(fields) => Some(fields),
            _ => None,
        }
    }

    /// Appends this node as compact JSON text, as serde_json writes it.
    fn write_json(&self, out: &mut String) {
        match self {
            SchemaNode::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            SchemaNode::String(s) => push_json_string(out, s),
            SchemaNode::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_json_string(out, key);
                    out.push(':');
                    value.write_json(out);
                }
                out.push('}');
            }
            SchemaNode::Other(text) => out.push_str(text),
        }
    }
}

impl From<&Json> for SchemaNode {
    fn from(json: &Json) -> Self {
        match json {
            Json::Bool(b) => SchemaNode::Bool(*b),
            Json::String(s) => SchemaNode::String(s.clone()),
            Json::Object(map) => SchemaNode::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), SchemaNode::from(v)))
                    .collect(),
            ),
            other => SchemaNode::Other(other.to_string()),
        }
    }
}

/// The member `key` of an object's members.
fn member<'n>(fields: &'n [(String, SchemaNode)], key: &str) -> Option<&'n SchemaNode> {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// A property as written, before type names are resolved against the other collections.
struct RawProperty {
    base: String,
    container: Container,
    optional: bool,
    indexed: bool,
}

fn quote(json: &SchemaNode) -> String {
    const MAX: usize = 80;
    let mut text = String::new();
    json.write_json(&mut text);
    if let Some((cut, _)) = text.char_indices().nth(MAX) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn invalid(path: impl Into<String>, expected: &'static str, json: &SchemaNode) -> SchemaJsonError {
    SchemaJsonError::Invalid {
        path: path.into(),
        expected,
        json: quote(json),
    }
}

/// The built-in type a name stands for, if any.
fn builtin(name: &str) -> Option<ScalarType> {
    Some(match name {
        "bool" => ScalarType::Bool,
        "int" => ScalarType::Int,
        "double" | "float" => ScalarType::Double,
        "string" => ScalarType::String,
        "data" => ScalarType::Binary,
        "date" => ScalarType::Date,
        "objectId" => ScalarType::ObjectId,
        "uuid" => ScalarType::Uuid,
        "decimal128" | "decimal" => ScalarType::Decimal,
        "mixed" => ScalarType::Mixed,
        "counter" => ScalarType::Counter,
        _ => return None,
    })
}

/// Splits shorthand type text into its base name, optional flag and container.
fn shorthand(text: &str) -> (&str, bool, Container) {
    let (rest, container) = if let Some(base) = text.strip_suffix("[]") {
        (base, Container::List)
    } else if let Some(base) = text.strip_suffix("<>") {
        (base, Container::Set)
    } else if let Some(base) = text.strip_suffix("{}") {
        (base, Container::Dictionary)
    } else {
        (text, Container::Single)
    };
    match rest.strip_suffix('?') {
        Some(base) => (base, true, container),
        None => (rest, false, container),
    }
}

/// Reads a schema from its JSON text.
pub fn schema_from_json(text: &str) -> Result<Schema, SchemaJsonError> {
    let json: Json = serde_json::from_str(text).map_err(|e| SchemaJsonError::Syntax {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    schema_from_json_value(&json)
}

/// Reads a schema from parsed JSON.
pub fn schema_from_json_value(json: &Json) -> Result<Schema, SchemaJsonError> {
    schema_from_node(&SchemaNode::from(json))
}

/// Reads a schema from its tree of JSON shapes.
pub fn schema_from_node(json: &SchemaNode) -> Result<Schema, SchemaJsonError> {
    let collections = json
        .as_object()
        .ok_or_else(|| invalid("root", "an object of collections by name", json))?;
    let mut raw = Vec::with_capacity(collections.len());
    for (name, def) in collections {
        if name.is_empty() || builtin(name).is_some() {
            return Err(SchemaJsonError::BadName {
                path: "root".into(),
                name: name.clone(),
            });
        }
        raw.push(read_collection(name, def)?);
    }
    // A list, not a map: schemas have few collections, and a map of this type would add its
    // own B-tree code to the browser build.
    let kinds: Vec<(String, CollectionKind)> =
        raw.iter().map(|(c, _)| (c.name.clone(), c.kind)).collect();
    let mut schema = Schema::default();
    for (mut collection, properties) in raw {
        for (name, p) in properties {
            let path = format!("{}.properties.{name}", collection.name);
            let ty = match builtin(&p.base) {
                Some(ty) => ty,
                None => match kinds.iter().find(|(n, _)| *n == p.base).map(|(_, k)| k) {
                    Some(CollectionKind::TopLevel) => ScalarType::Link(p.base),
                    Some(CollectionKind::Embedded) => ScalarType::Embedded(p.base),
                    Some(CollectionKind::Asymmetric) => {
                        return Err(SchemaJsonError::LinkToAsymmetric {
                            path,
                            target: p.base,
                        })
                    }
                    None => return Err(SchemaJsonError::UnknownType { path, name: p.base }),
                },
            };
            if ty == ScalarType::Counter && p.container != Container::Single {
                return Err(SchemaJsonError::BadContainer {
                    path,
                    detail: "a counter cannot be held in a list, set or dictionary",
                });
            }
            if matches!(ty, ScalarType::Embedded(_)) && p.container == Container::Set {
                return Err(SchemaJsonError::BadContainer {
                    path,
                    detail: "embedded objects cannot be held in a set: use a list",
                });
            }
            collection.properties.insert(
                name.clone(),
                Property {
                    name,
                    ty,
                    container: p.container,
                    optional: p.optional,
                    indexed: p.indexed,
                },
            );
        }
        schema.insert(collection);
    }
    Ok(schema)
}

type RawCollection = (CollectionSchema, Vec<(String, RawProperty)>);

fn read_collection(name: &str, def: &SchemaNode) -> Result<RawCollection, SchemaJsonError> {
    let fields = def
        .as_object()
        .ok_or_else(|| invalid(name, "an object with \"properties\"", def))?;
    let mut primary_key_name = None;
    let (mut embedded, mut asymmetric) = (false, false);
    let mut properties = None;
    for (key, value) in fields {
        let path = || format!("{name}.{key}");
        match key.as_str() {
            "primaryKey" => {
                primary_key_name = Some(
                    value
                        .as_str()
                        .ok_or_else(|| invalid(path(), "a property name", value))?,
                );
            }
            "embedded" => {
                embedded = value
                    .as_bool()
                    .ok_or_else(|| invalid(path(), "true or false", value))?;
            }
            "asymmetric" => {
                asymmetric = value
                    .as_bool()
                    .ok_or_else(|| invalid(path(), "true or false", value))?;
            }
            "properties" => {
                properties = Some(
                    value
                        .as_object()
                        .ok_or_else(|| invalid(path(), "an object of properties", value))?,
                );
            }
            _ => {
                return Err(SchemaJsonError::UnknownKey {
                    path: name.into(),
                    key: key.clone(),
                })
            }
        }
    }
    let properties = properties.ok_or_else(|| invalid(name, "a \"properties\" object", def))?;
    let kind = match (embedded, asymmetric) {
        (true, true) => {
            return Err(SchemaJsonError::BadCollectionKind {
                collection: name.into(),
                detail: "a collection cannot be both embedded and asymmetric",
            })
        }
        (true, false) => CollectionKind::Embedded,
        (false, true) => CollectionKind::Asymmetric,
        (false, false) => CollectionKind::TopLevel,
    };
    let mut raw = Vec::with_capacity(properties.len());
    for (prop_name, spec) in properties {
        let path = format!("{name}.properties.{prop_name}");
        if prop_name.is_empty() {
            return Err(SchemaJsonError::BadName {
                path,
                name: prop_name.clone(),
            });
        }
        raw.push((prop_name.clone(), read_property(&path, spec)?));
    }
    let primary_key = match (kind, primary_key_name) {
        (CollectionKind::Embedded, Some(_)) => {
            return Err(SchemaJsonError::BadCollectionKind {
                collection: name.into(),
                detail: "an embedded collection cannot have a primary key",
            })
        }
        (CollectionKind::Embedded, None) => None,
        (_, None) => {
            return Err(SchemaJsonError::MissingPrimaryKey {
                collection: name.into(),
            })
        }
        (_, Some(pk)) if pk != PRIMARY_KEY => {
            return Err(SchemaJsonError::BadPrimaryKey {
                collection: name.into(),
                detail: format!(
                    "the primary key must be named \"_id\", not {pk}",
                    pk = Quoted(pk)
                ),
            })
        }
        (_, Some(_)) => {
            let index = raw
                .iter()
                .position(|(n, _)| n == PRIMARY_KEY)
                .ok_or_else(|| SchemaJsonError::MissingPrimaryKey {
                    collection: name.into(),
                })?;
            let (_, p) = raw.remove(index);
            Some(primary_key_type(name, &p)?)
        }
    };
    let collection = CollectionSchema {
        name: name.into(),
        kind,
        primary_key,
        properties: NameMap::new(),
    };
    Ok((collection, raw))
}

fn primary_key_type(collection: &str, p: &RawProperty) -> Result<PrimaryKeyType, SchemaJsonError> {
    let ty = match p.base.as_str() {
        "int" => PrimaryKeyType::Int,
        "string" => PrimaryKeyType::String,
        "objectId" => PrimaryKeyType::ObjectId,
        "uuid" => PrimaryKeyType::Uuid,
        other => {
            return Err(SchemaJsonError::BadPrimaryKey {
                collection: collection.into(),
                detail: format!(
                    "\"_id\" is {}; use int, string, objectId or uuid",
                    Quoted(other)
                ),
            })
        }
    };
    if p.optional || p.container != Container::Single {
        return Err(SchemaJsonError::BadPrimaryKey {
            collection: collection.into(),
            detail: "\"_id\" must be a single, required value".into(),
        });
    }
    Ok(ty)
}

fn read_property(path: &str, spec: &SchemaNode) -> Result<RawProperty, SchemaJsonError> {
    const EXPECTED: &str = "a type such as \"string?\" or {\"type\": ..., \"objectType\": ...}";
    let from_text = |text: &str| -> Result<RawProperty, SchemaJsonError> {
        let (base, optional, container) = shorthand(text);
        if base.is_empty() || base.contains(['?', '[', ']', '<', '>', '{', '}']) {
            return Err(invalid(path, EXPECTED, spec));
        }
        Ok(RawProperty {
            base: base.to_owned(),
            container,
            optional,
            indexed: false,
        })
    };
    let fields = match spec {
        SchemaNode::String(text) => return from_text(text),
        SchemaNode::Object(fields) => fields,
        _ => return Err(invalid(path, EXPECTED, spec)),
    };
    let flag = |key: &str| -> Result<bool, SchemaJsonError> {
        match member(fields, key) {
            None => Ok(false),
            Some(SchemaNode::Bool(b)) => Ok(*b),
            Some(other) => Err(invalid(format!("{path}.{key}"), "true or false", other)),
        }
    };
    if let Some((key, _)) = fields
        .iter()
        .find(|(k, _)| !matches!(k.as_str(), "type" | "objectType" | "optional" | "indexed"))
    {
        return Err(SchemaJsonError::UnknownKey {
            path: path.into(),
            key: key.clone(),
        });
    }
    let (optional, indexed) = (flag("optional")?, flag("indexed")?);
    let ty = member(fields, "type")
        .and_then(SchemaNode::as_str)
        .ok_or_else(|| invalid(path, "a \"type\" string", spec))?;
    let object_type = member(fields, "objectType");
    let container = match ty {
        "list" => Some(Container::List),
        "set" => Some(Container::Set),
        "dictionary" => Some(Container::Dictionary),
        "object" => Some(Container::Single),
        _ => None,
    };
    let mut property = match (container, object_type) {
        (Some(container), Some(SchemaNode::String(element))) => {
            let element = from_text(element)?;
            if element.container != Container::Single {
                return Err(invalid(
                    path,
                    "an objectType without a container suffix",
                    spec,
                ));
            }
            RawProperty {
                container,
                ..element
            }
        }
        (Some(_), _) => return Err(invalid(path, "an \"objectType\" string", spec)),
        (None, None) => from_text(ty)?,
        (None, Some(_)) => {
            return Err(invalid(
                path,
                "\"objectType\" only with type list, set, dictionary or object",
                spec,
            ))
        }
    };
    property.optional |= optional;
    property.indexed = indexed;
    Ok(property)
}

fn pk_type_name(pk: PrimaryKeyType) -> &'static str {
    match pk {
        PrimaryKeyType::Int => "int",
        PrimaryKeyType::String => "string",
        PrimaryKeyType::ObjectId => "objectId",
        PrimaryKeyType::Uuid => "uuid",
    }
}

/// The JSON form of a schema; [`schema_from_json`] reads it back to an equal schema.
pub fn schema_to_json(schema: &Schema) -> Json {
    let mut root = Map::new();
    for (name, collection) in &schema.collections {
        let mut def = Map::new();
        let mut properties = Map::new();
        if let Some(pk) = collection.primary_key {
            def.insert("primaryKey".into(), Json::String(PRIMARY_KEY.into()));
            properties.insert(PRIMARY_KEY.into(), Json::String(pk_type_name(pk).into()));
        }
        match collection.kind {
            CollectionKind::TopLevel => {}
            CollectionKind::Embedded => {
                def.insert("embedded".into(), Json::Bool(true));
            }
            CollectionKind::Asymmetric => {
                def.insert("asymmetric".into(), Json::Bool(true));
            }
        }
        for (prop_name, property) in &collection.properties {
            let suffix = match property.container {
                Container::Single => "",
                Container::List => "[]",
                Container::Set => "<>",
                Container::Dictionary => "{}",
            };
            let spec = if property.indexed {
                let mut spec = Map::new();
                spec.insert(
                    "type".into(),
                    Json::String(format!("{}{suffix}", property.ty)),
                );
                spec.insert("optional".into(), Json::Bool(property.optional));
                spec.insert("indexed".into(), Json::Bool(true));
                Json::Object(spec)
            } else {
                let q = if property.optional { "?" } else { "" };
                Json::String(format!("{}{q}{suffix}", property.ty))
            };
            properties.insert(prop_name.clone(), spec);
        }
        def.insert("properties".into(), Json::Object(properties));
        root.insert(name.clone(), Json::Object(def));
    }
    Json::Object(root)
}

/// Checks that a document fits a collection of the schema.
///
/// Every field must be a property of the collection (or `_id`, which must match the primary
/// key type), and every value must fit its property, embedded objects checked recursively
/// against their own collection. Required single-valued properties must be present; absent
/// containers count as empty. A missing required value is reported as a `null` written to it.
/// Whether links point at existing objects is not checked here.
pub fn validate_document(
    schema: &Schema,
    collection: &str,
    doc: &Document,
) -> Result<(), SchemaError> {
    let coll = schema
        .collection(collection)
        .ok_or_else(|| SchemaError::UnknownCollection {
            collection: collection.into(),
        })?;
    if let Some(pk) = coll.primary_key {
        let key = doc.get(PRIMARY_KEY).unwrap_or(&Value::Null);
        let fits = matches!(
            (pk, PrimaryKey::try_from(key.clone())),
            (PrimaryKeyType::Int, Ok(PrimaryKey::Int(_)))
                | (PrimaryKeyType::String, Ok(PrimaryKey::String(_)))
                | (PrimaryKeyType::ObjectId, Ok(PrimaryKey::ObjectId(_)))
                | (PrimaryKeyType::Uuid, Ok(PrimaryKey::Uuid(_)))
        );
        if !fits {
            return Err(SchemaError::TypeMismatch {
                collection: collection.into(),
                property: PRIMARY_KEY.into(),
                expected: format!("{} primary key", pk_type_name(pk)),
                found: key.kind(),
            });
        }
    }
    for (field, value) in doc {
        if field == PRIMARY_KEY && coll.primary_key.is_some() {
            continue;
        }
        let property = coll
            .properties
            .get(field)
            .ok_or_else(|| SchemaError::UnknownProperty {
                collection: collection.into(),
                property: field.clone(),
            })?;
        check_property(schema, collection, property, value)?;
    }
    for property in coll.properties.values() {
        let required = property.container == Container::Single && !property.optional;
        if required && !doc.contains_key(&property.name) {
            return Err(mismatch(collection, property, &Value::Null));
        }
    }
    Ok(())
}

fn mismatch(collection: &str, property: &Property, value: &Value) -> SchemaError {
    SchemaError::TypeMismatch {
        collection: collection.into(),
        property: property.name.clone(),
        expected: property.type_name(),
        found: value.kind(),
    }
}

fn check_property(
    schema: &Schema,
    collection: &str,
    property: &Property,
    value: &Value,
) -> Result<(), SchemaError> {
    match (property.container, value) {
        (Container::Single, v) => check_element(schema, collection, property, v),
        (Container::List, Value::List(items)) | (Container::Set, Value::Set(items)) => items
            .iter()
            .try_for_each(|v| check_element(schema, collection, property, v)),
        (Container::Dictionary, Value::Dict(map)) => map
            .values()
            .try_for_each(|v| check_element(schema, collection, property, v)),
        (_, other) => Err(mismatch(collection, property, other)),
    }
}

fn check_element(
    schema: &Schema,
    collection: &str,
    property: &Property,
    value: &Value,
) -> Result<(), SchemaError> {
    match (&property.ty, value) {
        (_, Value::Null) if property.optional => Ok(()),
        (ScalarType::Embedded(target), Value::Object(doc)) => {
            validate_document(schema, target, doc)
        }
        (ty, v) if !v.is_null() && ty.accepts(v) => Ok(()),
        (_, other) => Err(mismatch(collection, property, other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Link, ObjectId};
    use proptest::prelude::*;

    const EXAMPLE: &str = r#"{
      "Task": { "primaryKey": "_id", "properties": { "_id": "objectId", "name": "string",
                "done": "bool?", "tags": "string[]", "labels": "string<>", "scores": "int{}",
                "owner": "User?", "sub": "Address", "votes": "counter",
                "extra": {"type": "list", "objectType": "int", "optional": true, "indexed": false} } },
      "User": { "primaryKey": "_id", "properties": { "_id": "string",
                "age": {"type": "int", "indexed": true} } },
      "Address": { "embedded": true, "properties": { "city": "string" } },
      "Reading": { "asymmetric": true, "primaryKey": "_id",
                   "properties": { "_id": "objectId", "t": "double" } } }"#;

    fn example() -> Schema {
        schema_from_json(EXAMPLE).unwrap()
    }

    #[test]
    fn reads_the_example() {
        let schema = example();
        let task = schema.collection("Task").unwrap();
        assert_eq!(task.kind, CollectionKind::TopLevel);
        assert_eq!(task.primary_key, Some(PrimaryKeyType::ObjectId));
        assert!(!task.properties.contains_key("_id"));
        let p = |name: &str| task.properties.get(name).unwrap().clone();
        assert_eq!(p("done").type_name(), "bool?");
        assert_eq!(p("tags").container, Container::List);
        assert_eq!(p("labels").container, Container::Set);
        assert_eq!(p("scores").container, Container::Dictionary);
        assert_eq!(p("owner").ty, ScalarType::Link("User".into()));
        assert!(p("owner").optional);
        assert_eq!(p("sub").ty, ScalarType::Embedded("Address".into()));
        assert_eq!(p("votes").ty, ScalarType::Counter);
        assert_eq!(p("extra").type_name(), "list<int?>");
        assert!(schema.collection("User").unwrap().properties["age"].indexed);
        assert_eq!(
            schema.collection("Address").unwrap().kind,
            CollectionKind::Embedded
        );
        let reading = schema.collection("Reading").unwrap();
        assert_eq!(reading.kind, CollectionKind::Asymmetric);
        assert_eq!(reading.properties["t"].ty, ScalarType::Double);
    }

    #[test]
    fn a_node_tree_reads_as_its_json_and_errors_quote_it_as_json() {
        let node = |text: &str| SchemaNode::from(&serde_json::from_str::<Json>(text).unwrap());
        assert_eq!(schema_from_node(&node(EXAMPLE)), Ok(example()));
        let spec = SchemaNode::Object(vec![
            ("type".into(), SchemaNode::Other("[1,2]".into())),
            ("optional".into(), SchemaNode::Bool(true)),
            ("objectType".into(), SchemaNode::String("a\"b\n".into())),
        ]);
        let schema = SchemaNode::Object(vec![(
            "T".into(),
            SchemaNode::Object(vec![(
                "properties".into(),
                SchemaNode::Object(vec![("x".into(), spec)]),
            )]),
        )]);
        let bad = r#"{"T": {"properties": {"x": {"type": [1,2], "optional": true, "objectType": "a\"b\n"}}}}"#;
        let expected = schema_from_json(bad).unwrap_err();
        assert_eq!(schema_from_node(&schema), Err(expected.clone()));
        assert_eq!(
            expected.to_string(),
            r#"schema T.properties.x: expected a "type" string, found {"type":[1,2],"optional":true,"objectType":"a\"b\n"}"#
        );
    }

    #[test]
    fn example_round_trips() {
        let schema = example();
        let json = schema_to_json(&schema);
        assert_eq!(schema_from_json(&json.to_string()).unwrap(), schema);
    }

    fn error(text: &str) -> SchemaJsonError {
        schema_from_json(text).unwrap_err()
    }

    #[test]
    fn refuses_bad_schemas() {
        type Check = fn(&SchemaJsonError) -> bool;
        let cases: [(&str, Check); 16] = [
            (
                r#"{"A": {"primaryKey": "_id", "properties": {"_id": "int", "x": "strin"}}}"#,
                |e| matches!(e, SchemaJsonError::UnknownType { name, .. } if name == "strin"),
            ),
            (r#"{"A": {"properties": {"x": "int"}}}"#, |e| {
                matches!(e, SchemaJsonError::MissingPrimaryKey { .. })
            }),
            (
                r#"{"A": {"primaryKey": "_id", "properties": {"x": "int"}}}"#,
                |e| matches!(e, SchemaJsonError::MissingPrimaryKey { .. }),
            ),
            (
                r#"{"A": {"primaryKey": "_id", "properties": {"_id": "double"}}}"#,
                |e| matches!(e, SchemaJsonError::BadPrimaryKey { .. }),
            ),
            (
                r#"{"A": {"primaryKey": "_id", "properties": {"_id": "int?"}}}"#,
                |e| matches!(e, SchemaJsonError::BadPrimaryKey { .. }),
            ),
            (
                r#"{"A": {"primaryKey": "id", "properties": {"id": "int"}}}"#,
                |e| matches!(e, SchemaJsonError::BadPrimaryKey { .. }),
            ),
            (
                r#"{"A": {"embedded": true, "primaryKey": "_id", "properties": {"_id": "int"}}}"#,
                |e| matches!(e, SchemaJsonError::BadCollectionKind { .. }),
            ),
            (
                r#"{"A": {"embedded": true, "asymmetric": true, "properties": {}}}"#,
                |e| matches!(e, SchemaJsonError::BadCollectionKind { .. }),
            ),
            (
                r#"{"A": {"primaryKey": "_id", "properties": {"_id": "int", "r": "R?"}},
                 "R": {"asymmetric": true, "primaryKey": "_id", "properties": {"_id": "int"}}}"#,
                |e| matches!(e, SchemaJsonError::LinkToAsymmetric { target, .. } if target == "R"),
            ),
            (
                r#"{"A": {"primaryKey": "_id", "properties": {"_id": "int", "c": "counter[]"}}}"#,
                |e| matches!(e, SchemaJsonError::BadContainer { .. }),
            ),
            (
                r#"{"A": {"primaryKey": "_id", "properties": {"_id": "int", "e": "E<>"}},
                 "E": {"embedded": true, "properties": {}}}"#,
                |e| matches!(e, SchemaJsonError::BadContainer { .. }),
            ),
            (
                r#"{"A": {"primaryKey": "_id", "properties": {"_id": "int"}, "extra": 1}}"#,
                |e| matches!(e, SchemaJsonError::UnknownKey { key, .. } if key == "extra"),
            ),
            (
                r#"{"A": {"primaryKey": "_id", "properties": {"_id": "int", "x": {"type": "list"}}}}"#,
                |e| matches!(e, SchemaJsonError::Invalid { .. }),
            ),
            (
                r#"{"A": {"primaryKey": "_id", "properties": {"_id": "int", "x": "int[]?"}}}"#,
                |e| {
                    matches!(
                        e,
                        SchemaJsonError::UnknownType { .. } | SchemaJsonError::Invalid { .. }
                    )
                },
            ),
            (r#"{"int": {"embedded": true, "properties": {}}}"#, |e| {
                matches!(e, SchemaJsonError::BadName { .. })
            }),
            (r#"{"A": "#, |e| matches!(e, SchemaJsonError::Syntax { .. })),
        ];
        for (text, expected) in cases {
            let err = error(text);
            assert!(expected(&err), "{text}: {err:?}");
            let message = err.to_string();
            assert!(message.starts_with(|c: char| c.is_lowercase()), "{message}");
            assert!(!message.ends_with('.'), "{message}");
        }
    }

    fn oid() -> Value {
        Value::ObjectId(ObjectId([1; 12]))
    }

    fn task() -> Document {
        [
            ("_id".to_owned(), oid()),
            ("name".to_owned(), Value::from("write tests")),
            ("done".to_owned(), Value::Null),
            (
                "labels".to_owned(),
                Value::set_from(vec![Value::from("b"), Value::from("a")]),
            ),
            (
                "owner".to_owned(),
                Value::Link(Link {
                    collection: "User".into(),
                    key: PrimaryKey::String("u1".into()),
                }),
            ),
            (
                "sub".to_owned(),
                Value::Object([("city".to_owned(), Value::from("Oslo"))].into()),
            ),
            ("votes".to_owned(), Value::Int(3)),
            (
                "extra".to_owned(),
                Value::List(vec![Value::Int(1), Value::Null].into()),
            ),
        ]
        .into()
    }

    #[test]
    fn validates_documents() {
        let schema = example();
        assert_eq!(validate_document(&schema, "Task", &task()), Ok(()));
        let with = |field: &str, value: Value| {
            let mut doc = task();
            doc.insert(field.into(), value);
            validate_document(&schema, "Task", &doc)
        };
        assert!(matches!(
            with("name", Value::Int(1)),
            Err(SchemaError::TypeMismatch { property, .. }) if property == "name"
        ));
        assert!(matches!(
            with("nope", Value::Int(1)),
            Err(SchemaError::UnknownProperty { .. })
        ));
        assert!(matches!(
            with("_id", Value::Int(1)),
            Err(SchemaError::TypeMismatch { property, .. }) if property == "_id"
        ));
        assert!(matches!(
            with("tags", Value::List(vec![Value::Null].into())),
            Err(SchemaError::TypeMismatch { .. })
        ));
        assert!(matches!(
            with("scores", Value::List(vec![].into())),
            Err(SchemaError::TypeMismatch { .. })
        ));
        assert!(with(
            "scores",
            Value::Dict([("a".to_owned(), Value::Int(1))].into())
        )
        .is_ok());
        assert!(matches!(
            with("sub", Value::Object([("city".to_owned(), Value::Int(1))].into())),
            Err(SchemaError::TypeMismatch { collection, .. }) if collection == "Address"
        ));
        assert!(matches!(
            with(
                "owner",
                Value::Link(Link {
                    collection: "Task".into(),
                    key: PrimaryKey::Int(1)
                })
            ),
            Err(SchemaError::TypeMismatch { .. })
        ));
        let mut missing = task();
        missing.remove("name");
        assert!(matches!(
            validate_document(&schema, "Task", &missing),
            Err(SchemaError::TypeMismatch { property, found: crate::value::ValueKind::Null, .. })
                if property == "name"
        ));
        assert!(matches!(
            validate_document(&schema, "Nope", &task()),
            Err(SchemaError::UnknownCollection { .. })
        ));
    }

    /// A valid schema: collections C0.. with random kinds and properties whose types are
    /// built-ins or references to collections that may be referenced.
    fn schema_strategy() -> impl Strategy<Value = Schema> {
        let kind = prop::sample::select(vec![
            CollectionKind::TopLevel,
            CollectionKind::Embedded,
            CollectionKind::Asymmetric,
        ]);
        let pk = prop::sample::select(vec![
            PrimaryKeyType::Int,
            PrimaryKeyType::String,
            PrimaryKeyType::ObjectId,
            PrimaryKeyType::Uuid,
        ]);
        let container = prop::sample::select(vec![
            Container::Single,
            Container::List,
            Container::Set,
            Container::Dictionary,
        ]);
        let property = (
            "[a-z][a-zA-Z0-9]{0,6}",
            0usize..16,
            container,
            any::<bool>(),
            any::<bool>(),
        );
        let collection = (kind, pk, prop::collection::vec(property, 0..6));
        prop::collection::vec(collection, 1..5).prop_map(|defs| {
            let kinds: Vec<CollectionKind> = defs.iter().map(|(k, _, _)| *k).collect();
            let mut schema = Schema::default();
            for (i, (kind, pk, props)) in defs.into_iter().enumerate() {
                let mut c = CollectionSchema {
                    name: format!("C{i}"),
                    kind,
                    primary_key: (kind != CollectionKind::Embedded).then_some(pk),
                    properties: NameMap::new(),
                };
                for (name, t, mut container, optional, indexed) in props {
                    let builtins = [
                        ScalarType::Bool,
                        ScalarType::Int,
                        ScalarType::Double,
                        ScalarType::String,
                        ScalarType::Binary,
                        ScalarType::Date,
                        ScalarType::ObjectId,
                        ScalarType::Uuid,
                        ScalarType::Decimal,
                        ScalarType::Mixed,
                        ScalarType::Counter,
                    ];
                    let ty = match builtins.get(t) {
                        Some(ty) => ty.clone(),
                        None => {
                            let target = (t - builtins.len()) % kinds.len();
                            match kinds[target] {
                                CollectionKind::TopLevel => ScalarType::Link(format!("C{target}")),
                                CollectionKind::Embedded => {
                                    ScalarType::Embedded(format!("C{target}"))
                                }
                                CollectionKind::Asymmetric => ScalarType::Int,
                            }
                        }
                    };
                    if ty == ScalarType::Counter {
                        container = Container::Single;
                    }
                    if matches!(ty, ScalarType::Embedded(_)) && container == Container::Set {
                        container = Container::List;
                    }
                    c.properties.insert(
                        name.clone(),
                        Property {
                            name,
                            ty,
                            container,
                            optional,
                            indexed,
                        },
                    );
                }
                schema.insert(c);
            }
            schema
        })
    }

    proptest! {
        #[test]
        fn schemas_round_trip(schema in schema_strategy()) {
            let text = schema_to_json(&schema).to_string();
            prop_assert_eq!(schema_from_json(&text)?, schema);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,64}") {
            let _ = schema_from_json(&text);
        }

        #[test]
        fn arbitrary_property_specs_never_panic(spec in "[a-zA-Z?<>{}\\[\\]]{0,12}") {
            let text = format!(
                r#"{{"A": {{"primaryKey": "_id", "properties": {{"_id": "int", "x": {spec:?}}}}}}}"#
            );
            let _ = schema_from_json(&text);
        }
    }
}
