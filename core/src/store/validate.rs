//! Checking instructions against the schema: which property a path designates, and whether a
//! value fits it.

use crate::changeset::{Path, PathElement};
use crate::schema::{
    CollectionKind, CollectionSchema, Container, PrimaryKeyType, Property, ScalarType, Schema,
    SchemaError, PRIMARY_KEY,
};
use crate::value::{Document, PrimaryKey, Value};

use super::ApplyError;

/// What a path designates in the schema: a whole property value, or one element of a list or
/// dictionary property.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot<'s> {
    /// The collection (top-level or embedded) the property belongs to.
    pub(crate) owner: &'s str,
    /// The property.
    pub(crate) prop: &'s Property,
    /// Whether the path designates one element of the property rather than all of it.
    pub(crate) element: bool,
}

impl Slot<'_> {
    /// The container the slot holds, if it is a whole list, set or dictionary property.
    pub(crate) fn container(&self) -> Option<Container> {
        match self.prop.container {
            Container::Single => None,
            _ if self.element => None,
            other => Some(other),
        }
    }
}

/// The schema of a collection, or an unknown-collection error.
pub(crate) fn collection<'s>(
    schema: &'s Schema,
    name: &str,
) -> Result<&'s CollectionSchema, ApplyError> {
    schema.collection(name).ok_or_else(|| {
        ApplyError::Schema(SchemaError::UnknownCollection {
            collection: name.to_owned(),
        })
    })
}

/// The schema of a collection whose objects are top-level (not embedded).
pub(crate) fn object_collection<'s>(
    schema: &'s Schema,
    name: &str,
) -> Result<&'s CollectionSchema, ApplyError> {
    let coll = collection(schema, name)?;
    if coll.kind == CollectionKind::Embedded {
        return Err(ApplyError::NotTopLevel {
            collection: name.to_owned(),
        });
    }
    Ok(coll)
}

fn property<'s>(coll: &'s CollectionSchema, name: &str) -> Result<&'s Property, ApplyError> {
    coll.properties.get(name).ok_or_else(|| {
        ApplyError::Schema(SchemaError::UnknownProperty {
            collection: coll.name.clone(),
            property: name.to_owned(),
        })
    })
}

/// Resolves `path` against the schema (asymmetric collections never get here: the store refuses
/// their instructions first).
pub(crate) fn resolve<'s>(schema: &'s Schema, path: &Path) -> Result<Slot<'s>, ApplyError> {
    let mut slot = top_level_slot(schema, &path.collection, &path.key, &path.field)?;
    for step in &path.nested {
        let container = slot.container();
        slot = match (step, container) {
            (PathElement::Index(_), Some(Container::List))
            | (PathElement::Key(_), Some(Container::Dictionary)) => Slot {
                element: true,
                ..slot
            },
            (PathElement::Field(name), None) => {
                let ScalarType::Embedded(target) = &slot.prop.ty else {
                    return Err(invalid(path, "a field step into a non-embedded value"));
                };
                let embedded = collection(schema, target)?;
                Slot {
                    owner: &embedded.name,
                    prop: property(embedded, name)?,
                    element: false,
                }
            }
            (PathElement::Index(_), _) => {
                return Err(invalid(
                    path,
                    "an index step into a value that is not a list",
                ))
            }
            (PathElement::Key(_), _) => {
                return Err(invalid(
                    path,
                    "a key step into a value that is not a dictionary",
                ))
            }
            (PathElement::Field(_), Some(_)) => {
                return Err(invalid(path, "a field step into a container"))
            }
        };
    }
    Ok(slot)
}

/// The top-level `field` of the object `key` of `collection`: what [`resolve`] starts from.
pub(crate) fn top_level_slot<'s>(
    schema: &'s Schema,
    collection: &str,
    key: &PrimaryKey,
    field: &str,
) -> Result<Slot<'s>, ApplyError> {
    let coll = object_collection(schema, collection)?;
    if field == PRIMARY_KEY {
        return Err(ApplyError::PrimaryKeyWrite {
            collection: collection.to_owned(),
            key: key.clone(),
        });
    }
    Ok(Slot {
        owner: &coll.name,
        prop: property(coll, field)?,
        element: false,
    })
}

/// Whether `key` has the type of the collection's primary key.
pub(crate) fn key_fits(coll: &CollectionSchema, key: &PrimaryKey) -> Result<(), ApplyError> {
    let fits = matches!(
        (coll.primary_key, key),
        (Some(PrimaryKeyType::Int), PrimaryKey::Int(_))
            | (Some(PrimaryKeyType::String), PrimaryKey::String(_))
            | (Some(PrimaryKeyType::ObjectId), PrimaryKey::ObjectId(_))
            | (Some(PrimaryKeyType::Uuid), PrimaryKey::Uuid(_))
    );
    if fits {
        Ok(())
    } else {
        Err(ApplyError::PrimaryKeyType {
            collection: coll.name.clone(),
            key: key.clone(),
            expected: coll.primary_key,
        })
    }
}

/// Checks a whole top-level document (an ingested object) against its collection.
pub(crate) fn check_document(
    schema: &Schema,
    coll: &CollectionSchema,
    key: &PrimaryKey,
    doc: &Document,
) -> Result<(), ApplyError> {
    key_fits(coll, key)?;
    for (name, value) in doc {
        if name == PRIMARY_KEY {
            if *value != Value::from(key.clone()) {
                return Err(ApplyError::PrimaryKeyWrite {
                    collection: coll.name.clone(),
                    key: key.clone(),
                });
            }
            continue;
        }
        let slot = Slot {
            owner: &coll.name,
            prop: property(coll, name)?,
            element: false,
        };
        check_value(schema, &slot, value)?;
    }
    Ok(())
}

fn invalid(path: &Path, reason: &'static str) -> ApplyError {
    ApplyError::InvalidPath {
        path: path.clone(),
        reason,
    }
}

/// Checks that `value` may be stored in `slot`.
pub(crate) fn check_value(
    schema: &Schema,
    slot: &Slot<'_>,
    value: &Value,
) -> Result<(), ApplyError> {
    let prop = slot.prop;
    match slot.container() {
        None => check_element(schema, slot, value),
        Some(container) => {
            let element = Slot {
                element: true,
                ..*slot
            };
            match (container, value) {
                (Container::List, Value::List(items)) | (Container::Set, Value::Set(items)) => {
                    items
                        .iter()
                        .try_for_each(|item| check_element(schema, &element, item))
                }
                (Container::Dictionary, Value::Dict(entries)) => entries
                    .values()
                    .try_for_each(|item| check_element(schema, &element, item)),
                _ => Err(mismatch(slot.owner, prop, value)),
            }
        }
    }
}

/// Checks one scalar or embedded object against the property's element type.
fn check_element(schema: &Schema, slot: &Slot<'_>, value: &Value) -> Result<(), ApplyError> {
    let prop = slot.prop;
    if value.is_null() {
        let embedded_single =
            matches!(prop.ty, ScalarType::Embedded(_)) && prop.container == Container::Single;
        return if prop.optional || embedded_single {
            Ok(())
        } else {
            Err(mismatch(slot.owner, prop, value))
        };
    }
    if !prop.ty.accepts(value) {
        return Err(mismatch(slot.owner, prop, value));
    }
    if let (ScalarType::Embedded(target), Value::Object(fields)) = (&prop.ty, value) {
        let embedded = collection(schema, target)?;
        for (name, field) in fields {
            let inner = Slot {
                owner: &embedded.name,
                prop: property(embedded, name)?,
                element: false,
            };
            check_value(schema, &inner, field)?;
        }
    }
    Ok(())
}

fn mismatch(owner: &str, prop: &Property, value: &Value) -> ApplyError {
    ApplyError::Schema(SchemaError::TypeMismatch {
        collection: owner.to_owned(),
        property: prop.name.clone(),
        expected: prop.type_name(),
        found: value.kind(),
    })
}

/// Whether `AddInteger` may target the slot.
pub(crate) fn check_integer(slot: &Slot<'_>) -> Result<(), ApplyError> {
    let integer = matches!(
        slot.prop.ty,
        ScalarType::Int | ScalarType::Counter | ScalarType::Mixed
    );
    if integer && slot.container().is_none() {
        Ok(())
    } else {
        Err(mismatch(slot.owner, slot.prop, &Value::Int(0)))
    }
}

/// Checks that the slot is a whole container property of the given kind.
pub(crate) fn check_container(
    slot: &Slot<'_>,
    path: &Path,
    wanted: Container,
) -> Result<(), ApplyError> {
    if slot.container() == Some(wanted) {
        Ok(())
    } else {
        Err(invalid(
            path,
            match wanted {
                Container::List => "it is not a list property",
                Container::Set => "it is not a set property",
                _ => "it is not a dictionary property",
            },
        ))
    }
}

/// Sorts and deduplicates every set inside `value`, so that stored sets are canonical.
pub(crate) fn normalize(value: &mut Value) {
    match value {
        Value::Set(items) => {
            items.iter_mut().for_each(normalize);
            items.sort_dedup();
        }
        Value::List(items) => items.iter_mut().for_each(normalize),
        Value::Dict(entries) => entries.values_mut().for_each(normalize),
        Value::Object(fields) => fields.values_mut().for_each(normalize),
        _ => {}
    }
}
