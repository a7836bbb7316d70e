//! Test helpers shared by the store and transform tests: a schema with every container kind and
//! shorthand for paths and values.

use crate::changeset::{Path, PathElement};
use crate::schema::{
    CollectionKind, CollectionSchema, Container, PrimaryKeyType, Property, ScalarType, Schema,
};
use crate::value::{PrimaryKey, Value};

use super::Store;

/// The test schema: `Item` (int keys) with scalars, a counter, a list, a set, a dictionary, an
/// embedded `Sub` and a list of `Sub`; `Sub` has an int and a list; `Log` is asymmetric.
pub(crate) fn schema() -> Schema {
    let optional = |name: &str, ty: ScalarType| Property {
        optional: true,
        ..Property::new(name, ty)
    };
    let container = |name: &str, ty: ScalarType, container: Container| Property {
        container,
        ..Property::new(name, ty)
    };
    let mut schema = Schema::default();
    schema.insert(
        CollectionSchema::top_level("Item", PrimaryKeyType::Int)
            .with(optional("n", ScalarType::Int))
            .with(optional("s", ScalarType::String))
            .with(Property::new("c", ScalarType::Counter))
            .with(optional("m", ScalarType::Mixed))
            .with(container("list", ScalarType::Int, Container::List))
            .with(container("tags", ScalarType::String, Container::Set))
            .with(Property {
                optional: true,
                ..container("dict", ScalarType::Int, Container::Dictionary)
            })
            .with(Property::new("e", ScalarType::Embedded("Sub".into())))
            .with(container(
                "subs",
                ScalarType::Embedded("Sub".into()),
                Container::List,
            ))
            .with(optional("link", ScalarType::Link("Item".into()))),
    );
    schema.insert(CollectionSchema {
        name: "Sub".into(),
        kind: CollectionKind::Embedded,
        primary_key: None,
        properties: Default::default(),
    });
    if let Some(sub) = schema.collections.get_mut("Sub") {
        sub.properties
            .insert("x".into(), optional("x", ScalarType::Int));
        sub.properties
            .insert("l".into(), container("l", ScalarType::Int, Container::List));
    }
    schema.insert(CollectionSchema {
        kind: CollectionKind::Asymmetric,
        ..CollectionSchema::top_level("Log", PrimaryKeyType::Int)
            .with(Property::new("msg", ScalarType::String))
    });
    schema
}

/// An empty store with the test schema.
pub(crate) fn store() -> Store {
    Store::new(schema())
}

/// The path `Item[key].field`.
pub(crate) fn item(key: i64, field: &str) -> Path {
    Path::field("Item", PrimaryKey::Int(key), field)
}

/// `path.field`: a field step into an embedded object.
pub(crate) fn field(path: Path, name: &str) -> Path {
    path.child(PathElement::Field(name.into()))
}

/// `path[index]`.
pub(crate) fn index(path: Path, index: u32) -> Path {
    path.child(PathElement::Index(index))
}

/// `path[key]` for dictionaries.
pub(crate) fn key(path: Path, key: &str) -> Path {
    path.child(PathElement::Key(key.into()))
}

/// An embedded `Sub` object with `x` set.
pub(crate) fn sub(x: i64) -> Value {
    Value::Object([("x".to_owned(), Value::Int(x))].into())
}

/// A list of ints.
pub(crate) fn ints(items: &[i64]) -> Value {
    Value::List(items.iter().map(|i| Value::Int(*i)).collect())
}
