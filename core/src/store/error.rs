//! Why an instruction could not be applied to a [`Store`](super::Store), and a readable form of
//! paths for error messages.

use std::fmt;

use crate::changeset::{Path, PathElement};
use crate::quote::Quoted;
use crate::schema::{PrimaryKeyType, SchemaError};
use crate::value::{PrimaryKey, ValueKind};

/// An instruction that does not fit the store's current state or schema.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ApplyError {
    /// The instruction acts on a top-level object that does not exist.
    MissingObject {
        /// The collection name.
        collection: String,
        /// The missing object's primary key.
        key: PrimaryKey,
    },
    /// A step of the path leads nowhere: a field, element or key below the top-level field is
    /// missing, or the value there cannot be stepped into.
    PathNotFound {
        /// The path that was followed.
        path: Path,
    },
    /// The path does not fit the schema's shape (for example an index into a dictionary, or a
    /// `Set` aimed at a list element).
    InvalidPath {
        /// The offending path.
        path: Path,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The value at the path is not the container the instruction needs.
    WrongKind {
        /// The container's path.
        path: Path,
        /// The kind the instruction needs.
        expected: ValueKind,
        /// The kind found.
        found: ValueKind,
    },
    /// A list index past the end of the list.
    IndexOutOfRange {
        /// The list's path.
        path: Path,
        /// The offending index.
        index: u32,
        /// The list's length.
        len: usize,
    },
    /// A list instruction's `prior_size` differs from the list's actual size: the instruction
    /// was made against a different history.
    SizeMismatch {
        /// The collection of the top-level object.
        collection: String,
        /// The primary key of the top-level object.
        key: PrimaryKey,
        /// The list's path (boxed to keep the error small).
        path: Box<Path>,
        /// The size the instruction expected (its `prior_size`).
        expected: u32,
        /// The list's actual size.
        actual: usize,
    },
    /// `AddInteger` on a value that is neither an integer nor null.
    NotAnInteger {
        /// The value's path.
        path: Path,
        /// What was found there.
        found: ValueKind,
    },
    /// The instruction breaks the schema (unknown collection or property, wrong value type,
    /// inconsistent schema change).
    Schema(SchemaError),
    /// A write to the `_id` field, which never changes.
    PrimaryKeyWrite {
        /// The collection name.
        collection: String,
        /// The object's primary key.
        key: PrimaryKey,
    },
    /// A primary key whose type differs from the collection's primary-key type.
    PrimaryKeyType {
        /// The collection name.
        collection: String,
        /// The offending key.
        key: PrimaryKey,
        /// The collection's primary-key type (`None` for an embedded collection).
        expected: Option<PrimaryKeyType>,
    },
    /// An object instruction on an asymmetric (insert-only) collection, whose objects are never
    /// stored on a replica: they go through [`WriteTransaction::ingest`](crate::store::WriteTransaction::ingest).
    Asymmetric {
        /// The collection name.
        collection: String,
        /// The unsupported instruction.
        instruction: &'static str,
    },
    /// An ingest into a collection that is not asymmetric.
    NotAsymmetric {
        /// The collection name.
        collection: String,
    },
    /// An object-level instruction on an embedded collection, whose objects only live inside
    /// other objects.
    NotTopLevel {
        /// The collection name.
        collection: String,
    },
    /// A list that would grow past `u32::MAX` elements, which instructions cannot address.
    ListTooLong {
        /// The list's path.
        path: Path,
    },
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::MissingObject { collection, key } => write!(
                f,
                "object {collection}[{key:?}] does not exist: create it before writing to it"
            ),
            ApplyError::PathNotFound { path } => {
                write!(f, "path {} does not lead to a value", ShowPath(path))
            }
            ApplyError::InvalidPath { path, reason } => {
                write!(f, "path {} is invalid: {reason}", ShowPath(path))
            }
            ApplyError::WrongKind {
                path,
                expected,
                found,
            } => write!(
                f,
                "{} holds a {found}, but the instruction needs a {expected}",
                ShowPath(path)
            ),
            ApplyError::IndexOutOfRange { path, index, len } => write!(
                f,
                "index {index} is out of range for list {} of length {len}",
                ShowPath(path)
            ),
            ApplyError::SizeMismatch {
                collection,
                key,
                path,
                expected,
                actual,
            } => write!(
                f,
                "list {} of object {collection}[{key:?}] has {actual} elements but the \
                 instruction expected {expected}: the histories diverged, reset the client",
                ShowPath(path)
            ),
            ApplyError::NotAnInteger { path, found } => write!(
                f,
                "cannot add to {}: it holds a {found}, not an int",
                ShowPath(path)
            ),
            ApplyError::Schema(error) => error.fmt(f),
            ApplyError::PrimaryKeyWrite { collection, key } => write!(
                f,
                "cannot write the primary key of {collection}[{key:?}]: erase and recreate the object instead"
            ),
            ApplyError::PrimaryKeyType {
                collection,
                key,
                expected,
            } => match expected {
                Some(ty) => write!(
                    f,
                    "primary key {key:?} does not fit collection {collection}, whose keys are {ty:?}", collection = Quoted(collection)
                ),
                None => write!(
                    f,
                    "collection {collection} is embedded and has no primary keys, but {key:?} was given", collection = Quoted(collection)
                ),
            },
            ApplyError::Asymmetric {
                collection,
                instruction,
            } => write!(
                f,
                "{instruction} refused: objects of asymmetric collection {collection} are never \
                 stored on a replica; insert them with ingest", collection = Quoted(collection)
            ),
            ApplyError::NotAsymmetric { collection } => write!(
                f,
                "collection {collection} is not asymmetric; only asymmetric collections take \
                 ingested objects (create the object instead)", collection = Quoted(collection)
            ),
            ApplyError::NotTopLevel { collection } => write!(
                f,
                "collection {collection} is embedded: its objects live inside other objects' properties", collection = Quoted(collection)
            ),
            ApplyError::ListTooLong { path } => {
                write!(f, "list {} cannot grow past 2^32-1 elements", ShowPath(path))
            }
        }
    }
}

impl std::error::Error for ApplyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApplyError::Schema(error) => Some(error),
            _ => None,
        }
    }
}

impl From<SchemaError> for ApplyError {
    fn from(error: SchemaError) -> Self {
        ApplyError::Schema(error)
    }
}

/// Shows a path as `Collection[key].field.sub[3]["k"]` in messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShowPath<'a>(pub(crate) &'a Path);

impl fmt::Display for ShowPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.0;
        write!(f, "{}[{:?}].{}", path.collection, path.key, path.field)?;
        for step in &path.nested {
            match step {
                PathElement::Field(name) => write!(f, ".{name}")?,
                PathElement::Index(index) => write!(f, "[{index}]")?,
                PathElement::Key(key) => write!(f, "[{}]", Quoted(key))?,
            }
        }
        Ok(())
    }
}
