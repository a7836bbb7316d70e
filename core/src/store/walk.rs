//! Walking a path through an object's values: reading, finding the slot a write lands in, and
//! fetching (or creating) the container a container instruction acts on.

use std::collections::BTreeMap;

use crate::changeset::{Path, PathElement};
use crate::schema::Container;
use crate::value::{Document, Elements, Value, ValueKind};

use super::ApplyError;

/// The place a leaf write lands: an entry of a map (a document, embedded object or dictionary)
/// or an element of a list.
#[derive(Debug)]
pub(crate) enum Leaf<'a> {
    /// The entry `.1` of a map (present or not).
    Map(MapMut<'a>, &'a str),
    /// The element `.1` of a list (in range or not).
    List(&'a mut Elements, usize),
}

/// The fields of a document or embedded object, or the entries of a dictionary.
#[derive(Debug)]
pub(crate) enum MapMut<'a> {
    /// A document's or embedded object's fields.
    Fields(&'a mut Document),
    /// A dictionary's entries.
    Dict(&'a mut BTreeMap<String, Value>),
}

impl<'a> MapMut<'a> {
    /// Whether a value is under `name`.
    pub(crate) fn contains_key(&self, name: &str) -> bool {
        match self {
            MapMut::Fields(map) => map.contains_key(name),
            MapMut::Dict(map) => map.contains_key(name),
        }
    }

    /// The value under `name`, to change it.
    pub(crate) fn into_mut(self, name: &str) -> Option<&'a mut Value> {
        match self {
            MapMut::Fields(map) => map.get_mut(name),
            MapMut::Dict(map) => map.get_mut(name),
        }
    }

    /// Sets the value under `name` (copying the name only if it is new); returns the one it
    /// replaced.
    pub(crate) fn set(&mut self, name: &str, value: Value) -> Option<Value> {
        let slot = match self {
            MapMut::Fields(map) => map.get_mut(name),
            MapMut::Dict(map) => map.get_mut(name),
        };
        if let Some(slot) = slot {
            return Some(std::mem::replace(slot, value));
        }
        match self {
            MapMut::Fields(map) => map.insert(name.to_owned(), value),
            MapMut::Dict(map) => map.insert(name.to_owned(), value),
        }
    }

    /// Removes the value under `name` and returns it.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Value> {
        match self {
            MapMut::Fields(map) => map.remove(name),
            MapMut::Dict(map) => map.remove(name),
        }
    }
}

impl<'a> Leaf<'a> {
    /// The value at the leaf, if there is one.
    pub(crate) fn into_value(self) -> Option<&'a mut Value> {
        match self {
            Leaf::Map(map, name) => map.into_mut(name),
            Leaf::List(list, index) => list.get_mut(index),
        }
    }
}

fn step<'a>(value: &'a Value, element: &PathElement) -> Option<&'a Value> {
    match (value, element) {
        (Value::Object(map), PathElement::Field(name)) => map.get(name),
        (Value::Dict(map), PathElement::Key(name)) => map.get(name),
        (Value::List(list), PathElement::Index(index)) => list.get(usize::try_from(*index).ok()?),
        _ => None,
    }
}

fn step_mut<'a>(value: &'a mut Value, element: &PathElement) -> Option<&'a mut Value> {
    match (value, element) {
        (Value::Object(map), PathElement::Field(name)) => map.get_mut(name),
        (Value::Dict(map), PathElement::Key(name)) => map.get_mut(name),
        (Value::List(list), PathElement::Index(index)) => {
            list.get_mut(usize::try_from(*index).ok()?)
        }
        _ => None,
    }
}

/// The value at `path` inside `doc`, if there is one.
pub(crate) fn value_at<'a>(doc: &'a Document, path: &Path) -> Option<&'a Value> {
    let mut current = doc.get(&path.field)?;
    for element in &path.nested {
        current = step(current, element)?;
    }
    Some(current)
}

/// The slot the last step of `path` designates; every step before it must exist.
pub(crate) fn leaf_mut<'a>(doc: &'a mut Document, path: &'a Path) -> Result<Leaf<'a>, ApplyError> {
    let Some((last, inner)) = path.nested.split_last() else {
        return Ok(Leaf::Map(MapMut::Fields(doc), &path.field));
    };
    let not_found = || ApplyError::PathNotFound { path: path.clone() };
    let mut current = doc.get_mut(&path.field).ok_or_else(not_found)?;
    for element in inner {
        current = step_mut(current, element).ok_or_else(not_found)?;
    }
    match (current, last) {
        (Value::Object(map), PathElement::Field(name)) => Ok(Leaf::Map(MapMut::Fields(map), name)),
        (Value::Dict(map), PathElement::Key(name)) => Ok(Leaf::Map(MapMut::Dict(map), name)),
        (Value::List(list), PathElement::Index(index)) => Ok(Leaf::List(
            list,
            usize::try_from(*index).unwrap_or(usize::MAX),
        )),
        _ => Err(not_found()),
    }
}

/// An empty container of the given kind.
pub(crate) fn empty(container: Container) -> Value {
    match container {
        Container::List => Value::List(Elements::new()),
        Container::Set => Value::Set(Elements::new()),
        _ => Value::Dict(BTreeMap::new()),
    }
}

/// The kind of value a container property holds.
pub(crate) fn container_kind(container: Container) -> ValueKind {
    match container {
        Container::List => ValueKind::List,
        Container::Set => ValueKind::Set,
        _ => ValueKind::Dict,
    }
}

/// The container at `path`, created empty if absent (`created` tells whether it was).
pub(crate) fn container_mut<'a>(
    doc: &'a mut Document,
    path: &'a Path,
    container: Container,
    created: &mut bool,
) -> Result<&'a mut Value, ApplyError> {
    let value = match leaf_mut(doc, path)? {
        Leaf::Map(mut map, name) => {
            if !map.contains_key(name) {
                *created = true;
                map.set(name, empty(container));
            }
            map.into_mut(name)
        }
        Leaf::List(list, index) => list.get_mut(index),
    };
    let value = value.ok_or_else(|| ApplyError::PathNotFound { path: path.clone() })?;
    let expected = container_kind(container);
    if value.kind() == expected {
        Ok(value)
    } else {
        Err(ApplyError::WrongKind {
            path: path.clone(),
            expected,
            found: value.kind(),
        })
    }
}
