//! What a batch of writes did to each collection, collapsed per object: the change notifications
//! that queries and the client API report after a transaction or a download.

use std::collections::{BTreeMap, BTreeSet};

use crate::value::PrimaryKey;

/// The changes to the objects of every collection touched, collapsed per object.
///
/// For each object, the net effect over the whole batch is reported once: an object created and
/// then modified is an insertion; created and then erased is nothing; erased and then created again
/// is a modification of every field the erased object had.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// By collection name, in name order. A sorted list rather than a map: a batch touches few
    /// collections, and the browser build stays free of a B-tree of this type.
    collections: Vec<(String, CollectionChanges)>,
}

/// The collapsed changes to the objects of one collection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectionChanges {
    insertions: BTreeSet<PrimaryKey>,
    modifications: BTreeMap<PrimaryKey, BTreeSet<String>>,
    deletions: BTreeSet<PrimaryKey>,
    /// For each deleted object, the top-level fields it had (reported as modified if the object
    /// is created again).
    deleted_fields: BTreeMap<PrimaryKey, BTreeSet<String>>,
}

impl Changes {
    /// No changes.
    pub fn new() -> Self {
        Changes::default()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.collections.is_empty()
    }

    /// The changes to one collection, if it changed.
    pub fn collection(&self, name: &str) -> Option<&CollectionChanges> {
        let at = self.position(name).ok()?;
        self.collections.get(at).map(|(_, changes)| changes)
    }

    /// Where `name` is in the list, or where it would go.
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.collections
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    /// Every changed collection with its changes, by name.
    pub fn collections(&self) -> impl Iterator<Item = (&str, &CollectionChanges)> {
        self.collections
            .iter()
            .map(|(name, changes)| (name.as_str(), changes))
    }

    /// Adds the changes of a later batch, collapsing them with these.
    pub fn merge(&mut self, other: Changes) {
        for (name, later) in other.collections {
            let CollectionChanges {
                insertions,
                modifications,
                deletions,
                mut deleted_fields,
            } = later;
            for key in deletions {
                let fields = deleted_fields.remove(&key).unwrap_or_default();
                self.deleted(&name, key, fields);
            }
            for key in insertions {
                self.inserted(&name, key);
            }
            for (key, fields) in modifications {
                self.modified_fields(&name, &key, fields);
            }
        }
    }

    /// Records that an object now exists that did not before.
    pub(crate) fn inserted(&mut self, collection: &str, key: PrimaryKey) {
        self.with(collection, |changes| {
            if changes.deletions.remove(&key) {
                let fields = changes.deleted_fields.remove(&key).unwrap_or_default();
                changes.modifications.insert(key, fields);
            } else {
                changes.insertions.insert(key);
            }
        });
    }

    /// Records that a top-level field of an existing object changed.
    pub(crate) fn modified(&mut self, collection: &str, key: &PrimaryKey, field: &str) {
        self.with(collection, |changes| {
            if changes.insertions.contains(key) {
                return;
            }
            match changes.modifications.get_mut(key) {
                Some(fields) => {
                    if !fields.contains(field) {
                        fields.insert(field.to_owned());
                    }
                }
                None => {
                    changes
                        .modifications
                        .insert(key.clone(), BTreeSet::from([field.to_owned()]));
                }
            }
        });
    }

    /// Records that several top-level fields of an existing object changed.
    fn modified_fields(&mut self, collection: &str, key: &PrimaryKey, fields: BTreeSet<String>) {
        self.with(collection, |changes| {
            if !changes.insertions.contains(key) {
                changes
                    .modifications
                    .entry(key.clone())
                    .or_default()
                    .extend(fields);
            }
        });
    }

    /// Records that an object that existed is gone; `fields` are the top-level fields it had.
    pub(crate) fn deleted(&mut self, collection: &str, key: PrimaryKey, fields: BTreeSet<String>) {
        self.with(collection, |changes| {
            if changes.insertions.remove(&key) {
                return;
            }
            let mut all = changes.modifications.remove(&key).unwrap_or_default();
            all.extend(fields);
            changes.deleted_fields.insert(key.clone(), all);
            changes.deletions.insert(key);
        });
    }

    /// Runs `change` on one collection's changes, keeping only collections that changed.
    fn with(&mut self, collection: &str, change: impl FnOnce(&mut CollectionChanges)) {
        match self.position(collection) {
            Ok(at) => {
                let Some((_, changes)) = self.collections.get_mut(at) else {
                    return;
                };
                change(changes);
                if changes.is_empty() {
                    self.collections.remove(at);
                }
            }
            Err(at) => {
                let mut changes = CollectionChanges::default();
                change(&mut changes);
                if !changes.is_empty() {
                    self.collections
                        .insert(at, (collection.to_owned(), changes));
                }
            }
        }
    }
}

impl CollectionChanges {
    /// Objects that exist now and did not before.
    pub fn insertions(&self) -> &BTreeSet<PrimaryKey> {
        &self.insertions
    }

    /// Objects that existed before and still do, with the top-level fields that changed (an
    /// object erased and created again lists every field it had).
    pub fn modifications(&self) -> &BTreeMap<PrimaryKey, BTreeSet<String>> {
        &self.modifications
    }

    /// Objects that existed before and are gone.
    pub fn deletions(&self) -> &BTreeSet<PrimaryKey> {
        &self.deletions
    }

    /// Whether nothing changed in this collection.
    pub fn is_empty(&self) -> bool {
        self.insertions.is_empty() && self.modifications.is_empty() && self.deletions.is_empty()
    }
}
