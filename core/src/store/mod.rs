//! The in-memory object store: a schema plus every object by collection and primary key. It
//! applies instructions atomically, validates them against the schema, reports what changed, and
//! offers the [`WriteTransaction`] builder local writes go through.
//!
//! Costs: applying an instruction is O(path depth + the container operation); atomicity comes from
//! an undo log of inverse steps (old values are moved into it, not cloned), never from copies of
//! the store.

mod changes;
mod digest;
mod error;
mod txn;
mod validate;
mod walk;

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::mem;

use crate::changeset::{Instruction, Path, PathElement};
use crate::quote::Quoted;
use crate::schema::{
    CollectionKind, CollectionSchema, Container, PrimaryKeyType, Property, Schema, SchemaError,
    PRIMARY_KEY,
};
use crate::value::{Document, PrimaryKey, Value};

pub use changes::{Changes, CollectionChanges};
pub use error::ApplyError;
pub(crate) use error::ShowPath;
pub use txn::{SuspendedWrite, WriteTransaction};

use validate::Slot;
use walk::Leaf;

/// Checks, as applying a `CreateObject` to a store of `schema` would, that `collection` holds
/// objects and `key` fits its primary key (see [`Store::check_new_object`]).
pub(crate) fn check_new_object(
    schema: &Schema,
    collection: &str,
    key: &PrimaryKey,
) -> Result<(), ApplyError> {
    let coll = validate::object_collection(schema, collection)?;
    validate::key_fits(coll, key)
}

/// Checks, as applying a `Set` of the top-level `field` of the object `key` of `collection` to
/// a store of `schema` would, that `value` may be written there, and returns it as the store
/// would keep it (see [`Store::checked_field_value`]).
pub(crate) fn checked_top_level_value(
    schema: &Schema,
    collection: &str,
    key: &PrimaryKey,
    field: &str,
    mut value: Value,
) -> Result<Value, ApplyError> {
    let slot = validate::top_level_slot(schema, collection, key, field)?;
    validate::check_value(schema, &slot, &value)?;
    validate::normalize(&mut value);
    Ok(value)
}

/// A schema and the objects of every collection.
///
/// Two stores are equal when their schemas and objects are; [`Store::digest`] summarises both in
/// 64 bits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Store {
    schema: Schema,
    /// Objects by collection and key; a collection without objects has no entry.
    objects: BTreeMap<String, BTreeMap<PrimaryKey, Document>>,
}

/// One inverse step of the undo log that makes applying atomic.
#[derive(Debug)]
pub(crate) enum Undo {
    /// Put back a collection's schema (or remove it).
    Collection {
        name: String,
        old: Option<CollectionSchema>,
    },
    /// Put back a property definition (or remove it).
    Property {
        collection: String,
        name: String,
        old: Option<Property>,
    },
    /// Put back an object (or remove it).
    Object {
        collection: String,
        key: PrimaryKey,
        old: Option<Document>,
    },
    /// Put back the value at a path (or remove the map entry there).
    Leaf { path: Path, old: Option<Value> },
    /// Remove the list element at `index`.
    ListRemove { path: Path, index: usize },
    /// Insert `value` into the list at `index`.
    ListInsert {
        path: Path,
        index: usize,
        value: Value,
    },
    /// Move a list element back.
    ListMove { path: Path, from: usize, to: usize },
    /// Remove `value` from a set.
    SetRemove { path: Path, value: Value },
    /// Add `value` to a set.
    SetAdd { path: Path, value: Value },
}

/// A list instruction's edit, without the list path and prior size.
#[derive(Debug, Clone, Copy)]
enum ListEdit<'v> {
    Insert(u32, &'v Value),
    Set(u32, &'v Value),
    Move(u32, u32),
    Erase(u32),
}

impl Store {
    /// An empty store with the given schema.
    pub fn new(schema: Schema) -> Self {
        Store {
            schema,
            objects: BTreeMap::new(),
        }
    }

    /// The current schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// An object by collection and primary key.
    pub fn get(&self, collection: &str, key: &PrimaryKey) -> Option<&Document> {
        self.objects.get(collection)?.get(key)
    }

    /// The objects of a collection in key order (none if the collection is unknown).
    pub fn objects(&self, collection: &str) -> impl Iterator<Item = (&PrimaryKey, &Document)> {
        self.objects.get(collection).into_iter().flatten()
    }

    /// The names of the schema's collections.
    pub fn collections(&self) -> impl Iterator<Item = &str> {
        self.schema.collections.keys().map(String::as_str)
    }

    /// How many objects a collection holds.
    pub fn len(&self, collection: &str) -> usize {
        self.objects.get(collection).map_or(0, BTreeMap::len)
    }

    /// Whether the store holds no objects at all.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The value at a path, if the object and every step exist.
    pub fn value_at(&self, path: &Path) -> Option<&Value> {
        walk::value_at(self.get(&path.collection, &path.key)?, path)
    }

    /// Applies instructions atomically: on error nothing changed and `changes` is untouched; on
    /// success the changes are merged into `changes`.
    pub fn apply(
        &mut self,
        instructions: &[Instruction],
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        // Nothing undoes a successful batch, so its last instruction logs no final step.
        self.apply_batch(instructions, changes, &mut Vec::new(), false)
    }

    /// [`Store::apply`] that leaves the inverse steps of a successful apply in `undo`, so that a
    /// caller applying several batches as one unit can undo all of them with
    /// [`Store::rollback`]. On error this batch's own steps are already undone.
    pub(crate) fn apply_logged(
        &mut self,
        instructions: &[Instruction],
        changes: &mut Changes,
        undo: &mut Vec<Undo>,
    ) -> Result<(), ApplyError> {
        self.apply_batch(instructions, changes, undo, true)
    }

    /// [`Store::apply_logged`]; without `keep_last`, the last instruction's final step (one
    /// that only undoing the batch after its success would need) is not logged.
    fn apply_batch(
        &mut self,
        instructions: &[Instruction],
        changes: &mut Changes,
        undo: &mut Vec<Undo>,
        keep_last: bool,
    ) -> Result<(), ApplyError> {
        let mark = undo.len();
        // Changes are recorded straight into the caller's when the batch's own collapsed changes
        // merged into them would come out the same: a single instruction (it records its
        // changes only once nothing can fail, and recording one change is what merging it does)
        // or an empty `changes` (merging into nothing gives the batch's own). Otherwise the
        // batch collapses on its own first: an object erased before this batch and created
        // again by it is one modification of its old fields, not those plus the batch's writes.
        let was_empty = changes.is_empty();
        let direct = was_empty || instructions.len() == 1;
        let mut local = Changes::new();
        let record = if direct { &mut *changes } else { &mut local };
        let last = instructions.len().saturating_sub(1);
        for (at, instruction) in instructions.iter().enumerate() {
            let keep_final = keep_last || at != last;
            if let Err(error) = self.apply_step(instruction, undo, record, keep_final) {
                self.rollback(undo, mark);
                if was_empty {
                    *changes = Changes::new();
                }
                return Err(error);
            }
        }
        if !direct {
            changes.merge(local);
        }
        Ok(())
    }

    /// A deterministic 64-bit digest of the schema and every object, equal on every platform for
    /// equal stores.
    pub fn digest(&self) -> u64 {
        digest::digest(&self.schema, &self.objects)
    }

    /// Removes an object without an instruction (it left a client's flexible-sync view) and
    /// records its deletion; returns whether it existed.
    pub fn evict(&mut self, collection: &str, key: &PrimaryKey, changes: &mut Changes) -> bool {
        self.evict_logged(collection, key, changes, &mut Vec::new())
    }

    /// [`Store::evict`] that records how to put the object back in `undo`.
    pub(crate) fn evict_logged(
        &mut self,
        collection: &str,
        key: &PrimaryKey,
        changes: &mut Changes,
        undo: &mut Vec<Undo>,
    ) -> bool {
        match self.remove_object(collection, key) {
            Some(doc) => {
                changes.deleted(collection, key.clone(), field_names(&doc));
                undo.push(Undo::Object {
                    collection: collection.to_owned(),
                    key: key.clone(),
                    old: Some(doc),
                });
                true
            }
            None => false,
        }
    }

    /// Checks, as applying a `CreateObject` would, that `collection` holds objects and `key`
    /// fits its primary key.
    pub(crate) fn check_new_object(
        &self,
        collection: &str,
        key: &PrimaryKey,
    ) -> Result<(), ApplyError> {
        check_new_object(&self.schema, collection, key)
    }

    /// Checks, as applying a `Set` would, that `value` may be written at the top-level field
    /// `path`, and returns it as the store would keep it.
    pub(crate) fn checked_field_value(
        &self,
        path: &Path,
        mut value: Value,
    ) -> Result<Value, ApplyError> {
        let slot = validate::resolve(&self.schema, path)?;
        validate::check_value(&self.schema, &slot, &value)?;
        validate::normalize(&mut value);
        Ok(value)
    }

    /// Removes an object without an instruction and without recording a change, and returns it:
    /// for a scratch store whose objects are handed on (Data Ingest's splitter).
    pub fn take(&mut self, collection: &str, key: &PrimaryKey) -> Option<Document> {
        self.remove_object(collection, key)
    }

    /// Starts a local write transaction; see [`WriteTransaction`].
    pub fn write(&mut self) -> WriteTransaction<'_> {
        WriteTransaction::new(self)
    }

    /// Undoes the log's steps after `mark`, newest first.
    pub(crate) fn rollback(&mut self, undo: &mut Vec<Undo>, mark: usize) {
        while undo.len() > mark {
            if let Some(step) = undo.pop() {
                self.undo(step);
            }
        }
    }

    fn remove_object(&mut self, collection: &str, key: &PrimaryKey) -> Option<Document> {
        let docs = self.objects.get_mut(collection)?;
        let doc = docs.remove(key)?;
        if docs.is_empty() {
            self.objects.remove(collection);
        }
        Some(doc)
    }

    fn doc_mut<'a>(
        objects: &'a mut BTreeMap<String, BTreeMap<PrimaryKey, Document>>,
        path: &Path,
    ) -> Result<&'a mut Document, ApplyError> {
        objects
            .get_mut(&path.collection)
            .and_then(|docs| docs.get_mut(&path.key))
            .ok_or_else(|| ApplyError::MissingObject {
                collection: path.collection.clone(),
                key: path.key.clone(),
            })
    }

    /// Undoes one step; steps come from this store's own log, so they always fit.
    fn undo(&mut self, step: Undo) {
        match step {
            Undo::Collection { name, old } => match old {
                Some(coll) => self.schema.insert(coll),
                None => {
                    self.schema.collections.remove(&name);
                }
            },
            Undo::Property {
                collection,
                name,
                old,
            } => {
                if let Some(coll) = self.schema.collections.get_mut(&collection) {
                    match old {
                        Some(prop) => {
                            coll.properties.insert(name, prop);
                        }
                        None => {
                            coll.properties.remove(&name);
                        }
                    }
                }
            }
            Undo::Object {
                collection,
                key,
                old,
            } => match old {
                Some(doc) => {
                    self.objects.entry(collection).or_default().insert(key, doc);
                }
                None => {
                    self.remove_object(&collection, &key);
                }
            },
            Undo::Leaf { path, old } => {
                if let Ok(doc) = Self::doc_mut(&mut self.objects, &path) {
                    match (walk::leaf_mut(doc, &path), old) {
                        (Ok(Leaf::Map(mut map, name)), Some(value)) => {
                            map.set(name, value);
                        }
                        (Ok(Leaf::Map(mut map, name)), None) => {
                            map.remove(name);
                        }
                        (Ok(Leaf::List(list, index)), Some(value)) => {
                            if let Some(slot) = list.get_mut(index) {
                                *slot = value;
                            }
                        }
                        _ => {}
                    }
                }
            }
            Undo::ListRemove { path, index } => {
                if let Some(Value::List(list)) = self.value_mut(&path) {
                    if index < list.len() {
                        list.remove(index);
                    }
                }
            }
            Undo::ListInsert { path, index, value } => {
                if let Some(Value::List(list)) = self.value_mut(&path) {
                    if index <= list.len() {
                        list.insert(index, value);
                    }
                }
            }
            Undo::ListMove { path, from, to } => {
                if let Some(Value::List(list)) = self.value_mut(&path) {
                    if to < list.len() {
                        if let Some(value) = list.remove(from) {
                            list.insert(to, value);
                        }
                    }
                }
            }
            Undo::SetRemove { path, value } => {
                if let Some(Value::Set(items)) = self.value_mut(&path) {
                    if let Ok(at) = items.binary_search(&value) {
                        items.remove(at);
                    }
                }
            }
            Undo::SetAdd { path, value } => {
                if let Some(Value::Set(items)) = self.value_mut(&path) {
                    if let Err(at) = items.binary_search(&value) {
                        items.insert(at, value);
                    }
                }
            }
        }
    }

    fn value_mut<'a>(&'a mut self, path: &'a Path) -> Option<&'a mut Value> {
        let doc = Self::doc_mut(&mut self.objects, path).ok()?;
        walk::leaf_mut(doc, path).ok()?.into_value()
    }

    /// Applies one instruction, logging inverse steps into `undo` and changes into `changes`.
    /// On error, steps already logged for this instruction must be rolled back by the caller;
    /// `changes` is recorded into last, once nothing can fail, so an error leaves it untouched.
    pub(crate) fn apply_one(
        &mut self,
        instruction: &Instruction,
        undo: &mut Vec<Undo>,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        self.apply_step(instruction, undo, changes, true)
    }

    /// [`Store::apply_one`]; without `keep_final`, a list edit does not log the step that
    /// undoes the edit itself (the last step, logged once nothing can fail), which saves
    /// cloning its path when nothing will undo the instruction after it succeeded.
    fn apply_step(
        &mut self,
        instruction: &Instruction,
        undo: &mut Vec<Undo>,
        changes: &mut Changes,
        keep_final: bool,
    ) -> Result<(), ApplyError> {
        if let Some((collection, _)) = instruction.object() {
            if self.schema.collection(collection).map(|c| c.kind)
                == Some(CollectionKind::Asymmetric)
            {
                return Err(ApplyError::Asymmetric {
                    collection: collection.to_owned(),
                    instruction: instruction_name(instruction),
                });
            }
        }
        match instruction {
            Instruction::AddCollection {
                name,
                kind,
                primary_key,
            } => self.add_collection(name, *kind, *primary_key, undo),
            Instruction::AddProperty {
                collection,
                property,
            } => self.add_property(collection, property, undo),
            Instruction::CreateObject { collection, key } => {
                self.create_object(collection, key, undo, changes)
            }
            Instruction::EraseObject { collection, key } => {
                self.erase_object(collection, key, undo, changes)
            }
            Instruction::Set { path, value } => self.set(path, value, undo, changes),
            Instruction::AddInteger { path, delta } => {
                self.add_integer(path, *delta, undo, changes)
            }
            Instruction::ListInsert {
                list,
                index,
                value,
                prior_size,
            } => self.list_edit(
                list,
                ListEdit::Insert(*index, value),
                *prior_size,
                (undo, keep_final),
                changes,
            ),
            Instruction::ListSet {
                list,
                index,
                value,
                prior_size,
            } => self.list_edit(
                list,
                ListEdit::Set(*index, value),
                *prior_size,
                (undo, keep_final),
                changes,
            ),
            Instruction::ListMove {
                list,
                from,
                to,
                prior_size,
            } => self.list_edit(
                list,
                ListEdit::Move(*from, *to),
                *prior_size,
                (undo, keep_final),
                changes,
            ),
            Instruction::ListErase {
                list,
                index,
                prior_size,
            } => self.list_edit(
                list,
                ListEdit::Erase(*index),
                *prior_size,
                (undo, keep_final),
                changes,
            ),
            Instruction::Clear { path } => self.clear(path, undo, changes),
            Instruction::SetInsert { set, value } => {
                self.set_member(set, value, true, undo, changes)
            }
            Instruction::SetErase { set, value } => {
                self.set_member(set, value, false, undo, changes)
            }
            Instruction::DictErase { dict, key } => self.dict_erase(dict, key, undo, changes),
        }
    }

    fn add_collection(
        &mut self,
        name: &str,
        kind: CollectionKind,
        primary_key: Option<PrimaryKeyType>,
        undo: &mut Vec<Undo>,
    ) -> Result<(), ApplyError> {
        if (kind == CollectionKind::Embedded) != primary_key.is_none() {
            return Err(ApplyError::Schema(SchemaError::IncompatibleChange {
                detail: format!(
                    "collection {name} must have a primary key exactly when it is not embedded",
                    name = Quoted(name)
                ),
            }));
        }
        match self.schema.collections.get_mut(name) {
            Some(coll) if coll.kind == kind && coll.primary_key == primary_key => {}
            Some(coll) => {
                undo.push(Undo::Collection {
                    name: name.to_owned(),
                    old: Some(coll.clone()),
                });
                coll.kind = kind;
                coll.primary_key = primary_key;
            }
            None => {
                undo.push(Undo::Collection {
                    name: name.to_owned(),
                    old: None,
                });
                self.schema.insert(CollectionSchema {
                    name: name.to_owned(),
                    kind,
                    primary_key,
                    properties: crate::schema::NameMap::new(),
                });
            }
        }
        Ok(())
    }

    fn add_property(
        &mut self,
        collection: &str,
        property: &Property,
        undo: &mut Vec<Undo>,
    ) -> Result<(), ApplyError> {
        if property.name == PRIMARY_KEY {
            return Err(ApplyError::Schema(SchemaError::IncompatibleChange {
                detail: format!(
                    "{key} of {collection} is implicit and cannot be redefined",
                    key = Quoted(PRIMARY_KEY),
                    collection = Quoted(collection)
                ),
            }));
        }
        let coll = self.schema.collections.get_mut(collection).ok_or_else(|| {
            SchemaError::UnknownCollection {
                collection: collection.to_owned(),
            }
        })?;
        let old = coll.properties.get(&property.name);
        if old == Some(property) {
            return Ok(());
        }
        let old = coll
            .properties
            .insert(property.name.clone(), property.clone());
        undo.push(Undo::Property {
            collection: collection.to_owned(),
            name: property.name.clone(),
            old,
        });
        Ok(())
    }

    fn create_object(
        &mut self,
        collection: &str,
        key: &PrimaryKey,
        undo: &mut Vec<Undo>,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        let coll = validate::object_collection(&self.schema, collection)?;
        validate::key_fits(coll, key)?;
        if self.get(collection, key).is_some() {
            return Ok(());
        }
        let doc = Document::from([(PRIMARY_KEY.to_owned(), Value::from(key.clone()))]);
        self.objects
            .entry(collection.to_owned())
            .or_default()
            .insert(key.clone(), doc);
        undo.push(Undo::Object {
            collection: collection.to_owned(),
            key: key.clone(),
            old: None,
        });
        changes.inserted(collection, key.clone());
        Ok(())
    }

    fn erase_object(
        &mut self,
        collection: &str,
        key: &PrimaryKey,
        undo: &mut Vec<Undo>,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        validate::object_collection(&self.schema, collection)?;
        if let Some(doc) = self.remove_object(collection, key) {
            changes.deleted(collection, key.clone(), field_names(&doc));
            undo.push(Undo::Object {
                collection: collection.to_owned(),
                key: key.clone(),
                old: Some(doc),
            });
        }
        Ok(())
    }

    fn set(
        &mut self,
        path: &Path,
        value: &Value,
        undo: &mut Vec<Undo>,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        let slot = validate::resolve(&self.schema, path)?;
        let last = path.nested.split_last();
        if let Some((PathElement::Index(_), _)) = last {
            return Err(ApplyError::InvalidPath {
                path: path.clone(),
                reason: "a set cannot target a list element, use a list set",
            });
        }
        validate::check_value(&self.schema, &slot, value)?;
        let mut value = value.clone();
        validate::normalize(&mut value);
        let doc = Self::doc_mut(&mut self.objects, path)?;
        if let Some((PathElement::Key(_), parent)) = last {
            let dict = Path {
                nested: parent.to_vec(),
                ..path.clone()
            };
            let mut created = false;
            walk::container_mut(doc, &dict, Container::Dictionary, &mut created)?;
            if created {
                undo.push(Undo::Leaf {
                    path: dict,
                    old: None,
                });
            }
        }
        let old = match walk::leaf_mut(doc, path)? {
            Leaf::Map(mut map, name) => map.set(name, value),
            Leaf::List(..) => {
                return Err(ApplyError::PathNotFound { path: path.clone() });
            }
        };
        undo.push(Undo::Leaf {
            path: path.clone(),
            old,
        });
        changes.modified(&path.collection, &path.key, &path.field);
        Ok(())
    }

    fn add_integer(
        &mut self,
        path: &Path,
        delta: i64,
        undo: &mut Vec<Undo>,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        let slot = validate::resolve(&self.schema, path)?;
        validate::check_integer(&slot)?;
        let doc = Self::doc_mut(&mut self.objects, path)?;
        match walk::leaf_mut(doc, path)?.into_value() {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Int(current)) => {
                let old = *current;
                *current = old.wrapping_add(delta);
                undo.push(Undo::Leaf {
                    path: path.clone(),
                    old: Some(Value::Int(old)),
                });
                changes.modified(&path.collection, &path.key, &path.field);
                Ok(())
            }
            Some(other) => Err(ApplyError::NotAnInteger {
                path: path.clone(),
                found: other.kind(),
            }),
        }
    }

    /// Resolves a container instruction's path and fetches the container, creating it if absent.
    fn container<'a>(
        &'a mut self,
        path: &'a Path,
        container: Container,
        element: Option<&Value>,
        undo: &mut Vec<Undo>,
    ) -> Result<&'a mut Value, ApplyError> {
        let slot = validate::resolve(&self.schema, path)?;
        validate::check_container(&slot, path, container)?;
        if let Some(value) = element {
            let element_slot = Slot {
                element: true,
                ..slot
            };
            validate::check_value(&self.schema, &element_slot, value)?;
        }
        let doc = Self::doc_mut(&mut self.objects, path)?;
        let mut created = false;
        let value = walk::container_mut(doc, path, container, &mut created)?;
        if created {
            undo.push(Undo::Leaf {
                path: path.clone(),
                old: None,
            });
        }
        Ok(value)
    }

    fn list_edit(
        &mut self,
        path: &Path,
        edit: ListEdit<'_>,
        prior_size: u32,
        (undo, keep_final): (&mut Vec<Undo>, bool),
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        let element = match edit {
            ListEdit::Insert(_, value) | ListEdit::Set(_, value) => Some(value),
            ListEdit::Move(..) | ListEdit::Erase(_) => None,
        };
        let Value::List(list) = self.container(path, Container::List, element, undo)? else {
            return Err(ApplyError::PathNotFound { path: path.clone() });
        };
        let len = list.len();
        if usize::try_from(prior_size).ok() != Some(len) {
            return Err(ApplyError::SizeMismatch {
                collection: path.collection.clone(),
                key: path.key.clone(),
                path: Box::new(path.clone()),
                expected: prior_size,
                actual: len,
            });
        }
        let in_range = |index: u32, limit: usize| {
            usize::try_from(index)
                .ok()
                .filter(|i| *i < limit)
                .ok_or_else(|| ApplyError::IndexOutOfRange {
                    path: path.clone(),
                    index,
                    len,
                })
        };
        let step = match edit {
            ListEdit::Insert(index, value) => {
                if prior_size == u32::MAX {
                    return Err(ApplyError::ListTooLong { path: path.clone() });
                }
                let at = in_range(index, len.saturating_add(1))?;
                let mut value = value.clone();
                validate::normalize(&mut value);
                list.insert(at, value);
                keep_final.then(|| Undo::ListRemove {
                    path: path.clone(),
                    index: at,
                })
            }
            ListEdit::Set(index, value) => {
                let at = in_range(index, len)?;
                let mut value = value.clone();
                validate::normalize(&mut value);
                let old = list.get_mut(at).map(|slot| mem::replace(slot, value));
                keep_final.then(|| Undo::Leaf {
                    path: path.clone().child(PathElement::Index(index)),
                    old,
                })
            }
            ListEdit::Move(from, to) => {
                let (from_at, to_at) = (in_range(from, len)?, in_range(to, len)?);
                let value = list
                    .remove(from_at)
                    .ok_or_else(|| ApplyError::IndexOutOfRange {
                        path: path.clone(),
                        index: from,
                        len,
                    })?;
                list.insert(to_at, value);
                keep_final.then(|| Undo::ListMove {
                    path: path.clone(),
                    from: to_at,
                    to: from_at,
                })
            }
            ListEdit::Erase(index) => {
                let at = in_range(index, len)?;
                let value = list.remove(at).ok_or_else(|| ApplyError::IndexOutOfRange {
                    path: path.clone(),
                    index,
                    len,
                })?;
                keep_final.then(|| Undo::ListInsert {
                    path: path.clone(),
                    index: at,
                    value,
                })
            }
        };
        undo.extend(step);
        changes.modified(&path.collection, &path.key, &path.field);
        Ok(())
    }

    fn clear(
        &mut self,
        path: &Path,
        undo: &mut Vec<Undo>,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        let slot = validate::resolve(&self.schema, path)?;
        let container = slot.container().ok_or_else(|| ApplyError::InvalidPath {
            path: path.clone(),
            reason: "only list, set and dictionary properties can be cleared",
        })?;
        let value = self.container(path, container, None, undo)?;
        let old = mem::replace(value, walk::empty(container));
        undo.push(Undo::Leaf {
            path: path.clone(),
            old: Some(old),
        });
        changes.modified(&path.collection, &path.key, &path.field);
        Ok(())
    }

    fn set_member(
        &mut self,
        path: &Path,
        value: &Value,
        insert: bool,
        undo: &mut Vec<Undo>,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        let Value::Set(items) = self.container(path, Container::Set, Some(value), undo)? else {
            return Err(ApplyError::PathNotFound { path: path.clone() });
        };
        let mut value = value.clone();
        validate::normalize(&mut value);
        match (items.binary_search(&value), insert) {
            (Err(at), true) => {
                items.insert(at, value.clone());
                undo.push(Undo::SetRemove {
                    path: path.clone(),
                    value,
                });
            }
            (Ok(at), false) => {
                items.remove(at);
                undo.push(Undo::SetAdd {
                    path: path.clone(),
                    value,
                });
            }
            _ => {}
        }
        changes.modified(&path.collection, &path.key, &path.field);
        Ok(())
    }

    fn dict_erase(
        &mut self,
        path: &Path,
        key: &str,
        undo: &mut Vec<Undo>,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        let Value::Dict(entries) = self.container(path, Container::Dictionary, None, undo)? else {
            return Err(ApplyError::PathNotFound { path: path.clone() });
        };
        if let Some(old) = entries.remove(key) {
            undo.push(Undo::Leaf {
                path: path.clone().child(PathElement::Key(key.to_owned())),
                old: Some(old),
            });
        }
        changes.modified(&path.collection, &path.key, &path.field);
        Ok(())
    }
}

/// The top-level field names of an object, without `_id`.
/// What an instruction does, for error messages.
fn instruction_name(instruction: &Instruction) -> &'static str {
    match instruction {
        Instruction::AddCollection { .. } => "collection addition",
        Instruction::AddProperty { .. } => "property addition",
        Instruction::CreateObject { .. } => "object creation",
        Instruction::EraseObject { .. } => "object erasure",
        Instruction::Set { .. } => "field write",
        Instruction::AddInteger { .. } => "integer addition",
        Instruction::ListInsert { .. }
        | Instruction::ListSet { .. }
        | Instruction::ListMove { .. }
        | Instruction::ListErase { .. } => "list edit",
        Instruction::Clear { .. } => "clear",
        Instruction::SetInsert { .. } | Instruction::SetErase { .. } => "set edit",
        Instruction::DictErase { .. } => "dictionary erase",
    }
}

fn field_names(doc: &Document) -> BTreeSet<String> {
    // Inserted one by one: `collect` into a set would add a sort to the browser build.
    let mut names = BTreeSet::new();
    for name in doc.keys().filter(|name| name.as_str() != PRIMARY_KEY) {
        names.insert(name.clone());
    }
    names
}
