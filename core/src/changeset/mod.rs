//! Changesets: the instructions one transaction made, with the metadata that orders them, and
//! their compact binary encoding.

#[cfg(test)]
pub(crate) mod arbitrary;
mod codec;
pub use codec::{
    body_sizes, decode_changeset, encode_changeset, BodySizes, CodecError, DecodeLimits, Insert,
    Limit, PlainBody, COMPRESSION_THRESHOLD,
};

use crate::schema::{CollectionKind, PrimaryKeyType, Property, Schema, PRIMARY_KEY};
use crate::value::{Document, PrimaryKey, Value};

/// One step below an object's top-level field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of an embedded object.
    Field(String),
    /// An element of a list.
    Index(u32),
    /// A key of a dictionary.
    Key(String),
}

/// Where an instruction acts: a field of an object, possibly reaching into embedded objects,
/// list elements and dictionary keys below it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path {
    /// The collection of the top-level object.
    pub collection: String,
    /// The primary key of the top-level object.
    pub key: PrimaryKey,
    /// The top-level field.
    pub field: String,
    /// Steps below the field, outermost first.
    pub nested: Vec<PathElement>,
}

impl Path {
    /// A path to a top-level field.
    pub fn field(collection: impl Into<String>, key: PrimaryKey, field: impl Into<String>) -> Self {
        Path {
            collection: collection.into(),
            key,
            field: field.into(),
            nested: Vec::new(),
        }
    }

    /// This path extended by one element (builder style).
    pub fn child(mut self, element: PathElement) -> Self {
        self.nested.push(element);
        self
    }

    /// Whether `self` is a strict prefix of `other` (so `other` lies inside the value at `self`).
    pub fn is_strict_prefix_of(&self, other: &Path) -> bool {
        self.collection == other.collection
            && self.key == other.key
            && self.field == other.field
            && self.nested.len() < other.nested.len()
            && other.nested.starts_with(&self.nested)
    }
}

/// One change to the object graph or to the schema.
///
/// List instructions carry the list's size before the instruction (`prior_size`) so that a
/// replica whose list has diverged is detected instead of silently corrupted.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Instruction {
    /// Adds a collection to the schema (additive; identical re-adds are no-ops).
    AddCollection {
        /// The collection name.
        name: String,
        /// Top-level, embedded or asymmetric.
        kind: CollectionKind,
        /// The primary-key type (`None` for embedded collections).
        primary_key: Option<PrimaryKeyType>,
    },
    /// Adds a property to a collection's schema.
    AddProperty {
        /// The collection name.
        collection: String,
        /// The new property.
        property: Property,
    },
    /// Creates a top-level object; creating one that exists is a no-op.
    CreateObject {
        /// The collection name.
        collection: String,
        /// The new object's primary key.
        key: PrimaryKey,
    },
    /// Erases a top-level object and everything inside it.
    EraseObject {
        /// The collection name.
        collection: String,
        /// The erased object's primary key.
        key: PrimaryKey,
    },
    /// Sets the value at a path (a field, an embedded object's field, or a dictionary key).
    Set {
        /// Where to write.
        path: Path,
        /// The new value; a container value replaces everything below the path.
        value: Value,
    },
    /// Adds to an integer (or counter) at a path.
    AddInteger {
        /// The integer's path.
        path: Path,
        /// The amount to add (wrapping).
        delta: i64,
    },
    /// Inserts an element into a list.
    ListInsert {
        /// The list's path.
        list: Path,
        /// The index of the new element.
        index: u32,
        /// The new element.
        value: Value,
        /// The list's size before the insert.
        prior_size: u32,
    },
    /// Replaces an element of a list.
    ListSet {
        /// The list's path.
        list: Path,
        /// The replaced element's index.
        index: u32,
        /// The new element.
        value: Value,
        /// The list's size before the instruction.
        prior_size: u32,
    },
    /// Moves an element of a list from `from` to `to` (the element's index after the move).
    ListMove {
        /// The list's path.
        list: Path,
        /// The element's index before the move.
        from: u32,
        /// The element's index after the move.
        to: u32,
        /// The list's size before the move.
        prior_size: u32,
    },
    /// Removes an element of a list.
    ListErase {
        /// The list's path.
        list: Path,
        /// The removed element's index.
        index: u32,
        /// The list's size before the erase.
        prior_size: u32,
    },
    /// Removes every element of the list, set or dictionary at a path.
    Clear {
        /// The container's path.
        path: Path,
    },
    /// Adds a value to a set (a no-op if present).
    SetInsert {
        /// The set's path.
        set: Path,
        /// The value.
        value: Value,
    },
    /// Removes a value from a set (a no-op if absent).
    SetErase {
        /// The set's path.
        set: Path,
        /// The value.
        value: Value,
    },
    /// Removes a key from a dictionary (a no-op if absent).
    DictErase {
        /// The dictionary's path.
        dict: Path,
        /// The removed key.
        key: String,
    },
}

/// The metadata that orders a changeset in the history and breaks ties between concurrent ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangesetMeta {
    /// The changeset's version in the history it is stored in: a client version in a client's
    /// history and in uploads, a server version in the server's history and in downloads.
    pub version: u64,
    /// The last version of the other side's history integrated before this changeset was made:
    /// for an upload, the last server version the client had integrated; for a download, the
    /// last client version of the receiving client the server had integrated.
    pub last_integrated_remote_version: u64,
    /// When the changeset was made, in milliseconds since the Unix epoch, on its origin's clock.
    pub origin_timestamp: u64,
    /// The client file ident of the changeset's origin (0 for changes made by the server).
    pub origin_file_ident: u64,
}

impl ChangesetMeta {
    /// The last-writer-wins order between concurrent changesets: later timestamp wins, ties go to
    /// the higher file ident.
    pub fn lww_key(&self) -> (u64, u64) {
        (self.origin_timestamp, self.origin_file_ident)
    }
}

/// A list of instructions with its metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changeset {
    /// Version, origin and timestamp.
    pub meta: ChangesetMeta,
    /// The instructions, in the order they were made.
    pub instructions: Vec<Instruction>,
}

impl Instruction {
    /// The collection and primary key of the top-level object this instruction acts on, if any.
    pub fn object(&self) -> Option<(&str, &PrimaryKey)> {
        match self {
            Instruction::AddCollection { .. } | Instruction::AddProperty { .. } => None,
            Instruction::CreateObject { collection, key }
            | Instruction::EraseObject { collection, key } => Some((collection, key)),
            Instruction::Set { path, .. }
            | Instruction::AddInteger { path, .. }
            | Instruction::Clear { path } => Some((&path.collection, &path.key)),
            Instruction::ListInsert { list, .. }
            | Instruction::ListSet { list, .. }
            | Instruction::ListMove { list, .. }
            | Instruction::ListErase { list, .. } => Some((&list.collection, &list.key)),
            Instruction::SetInsert { set, .. } | Instruction::SetErase { set, .. } => {
                Some((&set.collection, &set.key))
            }
            Instruction::DictErase { dict, .. } => Some((&dict.collection, &dict.key)),
        }
    }
}

/// Appends the instructions that build `schema` from nothing: each collection, then its
/// properties, in name order.
pub fn schema_instructions(schema: &Schema, out: &mut Vec<Instruction>) {
    for collection in schema.collections.values() {
        out.push(Instruction::AddCollection {
            name: collection.name.clone(),
            kind: collection.kind,
            primary_key: collection.primary_key,
        });
        for property in collection.properties.values() {
            out.push(Instruction::AddProperty {
                collection: collection.name.clone(),
                property: property.clone(),
            });
        }
    }
}

/// Appends the instructions that create the object `key` of `collection` with the fields of
/// `document` (its primary key field, if present, is the key and not set again).
pub fn object_instructions(
    collection: &str,
    key: &PrimaryKey,
    document: &Document,
    out: &mut Vec<Instruction>,
) {
    out.push(Instruction::CreateObject {
        collection: collection.to_owned(),
        key: key.clone(),
    });
    for (field, value) in document.iter().filter(|(f, _)| f.as_str() != PRIMARY_KEY) {
        out.push(Instruction::Set {
            path: Path::field(collection, key.clone(), field.clone()),
            value: value.clone(),
        });
    }
}
