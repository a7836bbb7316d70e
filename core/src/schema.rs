//! Object schemas: collections, their primary keys, properties and property types, and the
//! check that a value fits a property.

use std::fmt;

use crate::quote::Quoted;
use crate::value::{Value, ValueKind};

/// The schema's maps: collections and properties by name.
pub type NameMap<V> = crate::sorted_map::SortedMap<String, V>;

/// The name of the primary-key property every top-level object has.
pub const PRIMARY_KEY: &str = "_id";

/// The scalar type of a property (or of the elements of a collection property).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ScalarType {
    /// `bool`.
    Bool,
    /// `int`.
    Int,
    /// `double` (`float` is accepted as an alias when parsing schemas).
    Double,
    /// `string`.
    String,
    /// `data` / binary.
    Binary,
    /// `date`.
    Date,
    /// `objectId`.
    ObjectId,
    /// `uuid`.
    Uuid,
    /// `decimal128`.
    Decimal,
    /// `mixed`: any scalar value.
    Mixed,
    /// `counter`: an int whose concurrent increments all count.
    Counter,
    /// A link to an object of the named top-level collection.
    Link(String),
    /// An embedded object of the named embedded collection.
    Embedded(String),
}

/// How a property holds its scalar type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Container {
    /// A single value.
    Single,
    /// An ordered list of values.
    List,
    /// A set of distinct values.
    Set,
    /// A dictionary from string keys to values.
    Dictionary,
}

/// One property of a collection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Property {
    /// The property name.
    pub name: String,
    /// The element type.
    pub ty: ScalarType,
    /// How the values are held.
    pub container: Container,
    /// Whether `null` is allowed (for a single value, or as an element of a container).
    pub optional: bool,
    /// Whether the server keeps an index on this property.
    pub indexed: bool,
}

/// The type a primary key has in a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PrimaryKeyType {
    /// `int` keys.
    Int,
    /// `string` keys.
    String,
    /// `objectId` keys.
    ObjectId,
    /// `uuid` keys.
    Uuid,
}

/// What kind of collection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CollectionKind {
    /// Top-level objects, synced in both directions.
    TopLevel,
    /// Objects that only exist inside a property of another object.
    Embedded,
    /// Insert-only objects streamed from devices to the server (Data Ingest); never readable on
    /// devices.
    Asymmetric,
}

/// The schema of one collection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CollectionSchema {
    /// The collection name.
    pub name: String,
    /// What kind of collection it is.
    pub kind: CollectionKind,
    /// The primary-key type; `None` for embedded collections.
    pub primary_key: Option<PrimaryKeyType>,
    /// The properties, by name, not counting `_id`.
    pub properties: NameMap<Property>,
}

/// A whole schema: every collection, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schema {
    /// The collections, by name.
    pub collections: NameMap<CollectionSchema>,
}

/// A value that does not fit the property it is written to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaError {
    /// The collection is not in the schema.
    UnknownCollection {
        /// The collection name.
        collection: String,
    },
    /// The property is not in the collection.
    UnknownProperty {
        /// The collection name.
        collection: String,
        /// The property name.
        property: String,
    },
    /// The value's kind does not fit the property's type.
    TypeMismatch {
        /// The collection name.
        collection: String,
        /// The property name.
        property: String,
        /// What the property holds.
        expected: String,
        /// What was written.
        found: ValueKind,
    },
    /// A schema change that is not additive (it changes or removes something that exists).
    IncompatibleChange {
        /// What would change.
        detail: String,
    },
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::UnknownCollection { collection } => {
                write!(
                    f,
                    "unknown collection {collection}: add it to the schema first",
                    collection = Quoted(collection)
                )
            }
            SchemaError::UnknownProperty {
                collection,
                property,
            } => {
                write!(
                    f,
                    "collection {collection} has no property {property}",
                    collection = Quoted(collection),
                    property = Quoted(property)
                )
            }
            SchemaError::TypeMismatch {
                collection,
                property,
                expected,
                found,
            } => write!(
                f,
                "property {collection}.{property} holds {expected}, but a {found} was written"
            ),
            SchemaError::IncompatibleChange { detail } => {
                write!(f, "schema change is not additive: {detail}")
            }
        }
    }
}

impl std::error::Error for SchemaError {}

impl fmt::Display for ScalarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScalarType::Bool => f.write_str("bool"),
            ScalarType::Int => f.write_str("int"),
            ScalarType::Double => f.write_str("double"),
            ScalarType::String => f.write_str("string"),
            ScalarType::Binary => f.write_str("data"),
            ScalarType::Date => f.write_str("date"),
            ScalarType::ObjectId => f.write_str("objectId"),
            ScalarType::Uuid => f.write_str("uuid"),
            ScalarType::Decimal => f.write_str("decimal128"),
            ScalarType::Mixed => f.write_str("mixed"),
            ScalarType::Counter => f.write_str("counter"),
            ScalarType::Link(target) | ScalarType::Embedded(target) => f.write_str(target),
        }
    }
}

impl ScalarType {
    /// The type's number in Eddy's binary encodings (the changeset codec and the store digest),
    /// and, for links and embedded objects, the target collection.
    pub(crate) fn code(&self) -> (u8, Option<&str>) {
        match self {
            ScalarType::Bool => (0, None),
            ScalarType::Int => (1, None),
            ScalarType::Double => (2, None),
            ScalarType::String => (3, None),
            ScalarType::Binary => (4, None),
            ScalarType::Date => (5, None),
            ScalarType::ObjectId => (6, None),
            ScalarType::Uuid => (7, None),
            ScalarType::Decimal => (8, None),
            ScalarType::Mixed => (9, None),
            ScalarType::Counter => (10, None),
            ScalarType::Link(target) => (11, Some(target)),
            ScalarType::Embedded(target) => (12, Some(target)),
        }
    }

    /// Whether a non-null scalar value of `kind` fits this type.
    pub fn accepts(&self, value: &Value) -> bool {
        match (self, value) {
            (ScalarType::Mixed, v) => !matches!(
                v,
                Value::List(_) | Value::Set(_) | Value::Dict(_) | Value::Object(_)
            ),
            (ScalarType::Bool, Value::Bool(_)) => true,
            (ScalarType::Int | ScalarType::Counter, Value::Int(_)) => true,
            (ScalarType::Double, Value::Double(_) | Value::Int(_)) => true,
            (ScalarType::String, Value::String(_)) => true,
            (ScalarType::Binary, Value::Binary(_)) => true,
            (ScalarType::Date, Value::Date(_)) => true,
            (ScalarType::ObjectId, Value::ObjectId(_)) => true,
            (ScalarType::Uuid, Value::Uuid(_)) => true,
            (ScalarType::Decimal, Value::Decimal(_)) => true,
            (ScalarType::Link(target), Value::Link(link)) => &link.collection == target,
            (ScalarType::Embedded(_), Value::Object(_)) => true,
            _ => false,
        }
    }
}

impl Property {
    /// A required single-value property.
    pub fn new(name: impl Into<String>, ty: ScalarType) -> Self {
        Property {
            name: name.into(),
            ty,
            container: Container::Single,
            optional: false,
            indexed: false,
        }
    }

    /// A human-readable type description (`"list<string?>"`).
    pub fn type_name(&self) -> String {
        let q = if self.optional { "?" } else { "" };
        match self.container {
            Container::Single => format!("{}{q}", self.ty),
            Container::List => format!("list<{}{q}>", self.ty),
            Container::Set => format!("set<{}{q}>", self.ty),
            Container::Dictionary => format!("dictionary<{}{q}>", self.ty),
        }
    }
}

impl Schema {
    /// The schema of a collection.
    pub fn collection(&self, name: &str) -> Option<&CollectionSchema> {
        self.collections.get(name)
    }

    /// Adds or replaces a collection.
    pub fn insert(&mut self, collection: CollectionSchema) {
        self.collections.insert(collection.name.clone(), collection);
    }
}

impl CollectionSchema {
    /// A top-level collection with the given primary-key type and no properties yet.
    pub fn top_level(name: impl Into<String>, primary_key: PrimaryKeyType) -> Self {
        CollectionSchema {
            name: name.into(),
            kind: CollectionKind::TopLevel,
            primary_key: Some(primary_key),
            properties: NameMap::new(),
        }
    }

    /// Adds a property (builder style).
    pub fn with(mut self, property: Property) -> Self {
        self.properties.insert(property.name.clone(), property);
        self
    }
}
