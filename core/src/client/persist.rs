//! The stored form of a client file, shared by every driver (IndexedDB in the browser, SQLite
//! natively), so that both keep one format with one set of tests.
//!
//! A client file is four kinds of records, each a byte string that starts with the format
//! version ([`FORMAT_VERSION`]) and a kind byte:
//!
//! - **file meta** (one): identity, cursors, the subscription set and the outstanding
//!   transaction ([`FileMeta`]), and for drivers that write through [`WriteAhead`] the checkpoint
//!   marker: the last client version the object records hold;
//! - **schema** (at most one; absent means the schema the application declares);
//! - **objects** (one per object, keyed by [`object_record_key`]): the object as a changeset body
//!   that creates it and sets each field;
//! - **pending changesets** (one per local changeset the server has not integrated yet, keyed by
//!   its client version): these are also the upload queue of Data Ingest.
//!
//! A driver applies the session's [`StorageWrite`]s through [`PersistBatch`], which merges every
//! write that accumulated during the previous commit into one set of record puts and deletes
//! (group commit), or through [`WriteAhead`], which also leaves the object records of plain local
//! writes to a later checkpoint, and reads a file back with [`restore`]. Decoding never panics and is bounded by
//! [`DecodeLimits`]; damaged or foreign records give a [`PersistError`].

use std::fmt;

use crate::changeset::{
    decode_changeset, encode_changeset, object_instructions, schema_instructions, Changeset,
    ChangesetMeta, CodecError, DecodeLimits, Instruction, Path,
};
use crate::client::{
    FileMeta, OutstandingTransaction, PendingUpdate, PersistedState, StorageWrite,
};
use crate::protocol::{DownloadCursor, Subscription, SubscriptionSet};
use crate::quote::Quoted;
use crate::schema::{CollectionKind, CollectionSchema, Schema, PRIMARY_KEY};
use crate::sorted_map::SortedMap;
use crate::store::{Changes, Store};
use crate::value::{canonical_key_text, Document, PrimaryKey};
use crate::wire::{write_bytes, write_str, write_u64, Reader, WireError};

/// The version of the record format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// The kind byte of each record, after the version byte.
mod kind {
    pub const META: u8 = 1;
    pub const SCHEMA: u8 = 2;
    pub const OBJECT: u8 = 3;
    pub const PENDING: u8 = 4;
}

/// The most subscriptions a stored subscription set may hold.
const MAX_SUBSCRIPTIONS: usize = 100_000;

/// Why stored records could not be read back.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum PersistError {
    /// The record was written in a format version this build does not read.
    UnsupportedVersion {
        /// Which record.
        record: &'static str,
        /// The version found.
        version: u8,
    },
    /// The record is not of the kind expected where it was found.
    WrongKind {
        /// Which record was expected.
        record: &'static str,
        /// The kind byte found.
        found: u8,
    },
    /// The record's bytes are truncated, overlong or not UTF-8 where text is expected.
    Wire {
        /// Which record.
        record: &'static str,
        /// What was wrong.
        error: WireError,
    },
    /// The changeset body inside the record could not be decoded.
    Changeset {
        /// Which record.
        record: &'static str,
        /// What was wrong.
        error: CodecError,
    },
    /// The record decodes but does not make sense (e.g. an object without its creation, two
    /// pending changesets with one version, an object that does not fit the schema).
    Invalid {
        /// Which record.
        record: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let advice = "restore the client file from a backup, or delete it to download the data \
                      again (local writes not yet uploaded are then lost)";
        match self {
            PersistError::UnsupportedVersion { record, version } => write!(
                f,
                "the stored {record} has format version {version}, but this version of eddy reads \
                 version {FORMAT_VERSION}; open it with the version of eddy that wrote it, or {advice}"
            ),
            PersistError::WrongKind { record, found } => write!(
                f,
                "the stored {record} is damaged: it holds a record of kind {found}; {advice}"
            ),
            PersistError::Wire { record, error } => {
                write!(f, "the stored {record} is damaged: {error}; {advice}")
            }
            PersistError::Changeset { record, error } => {
                write!(f, "the stored {record} is damaged: {error}; {advice}")
            }
            PersistError::Invalid { record, reason } => {
                write!(f, "the stored {record} is damaged: {reason}; {advice}")
            }
        }
    }
}

impl std::error::Error for PersistError {}

fn header(kind: u8) -> Vec<u8> {
    vec![FORMAT_VERSION, kind]
}

/// Checks the version and kind bytes; returns a reader after them.
fn open<'a>(
    bytes: &'a [u8],
    expected: u8,
    record: &'static str,
    limits: &DecodeLimits,
) -> Result<Reader<'a>, PersistError> {
    let wire = |error| PersistError::Wire { record, error };
    if bytes.len() > limits.max_body_bytes.saturating_add(64) {
        return Err(wire(WireError::TooLong {
            offset: 0,
            what: "record",
            len: bytes.len() as u64,
            max: limits.max_body_bytes as u64,
        }));
    }
    let mut reader = Reader::new(bytes);
    let version = reader.u8("format version").map_err(wire)?;
    if version != FORMAT_VERSION {
        return Err(PersistError::UnsupportedVersion { record, version });
    }
    let found = reader.u8("record kind").map_err(wire)?;
    if found != expected {
        return Err(PersistError::WrongKind { record, found });
    }
    Ok(reader)
}

fn finish(reader: &Reader<'_>, record: &'static str) -> Result<(), PersistError> {
    if reader.is_empty() {
        Ok(())
    } else {
        Err(PersistError::Invalid {
            record,
            reason: format!("{} unexpected bytes at its end", reader.remaining()),
        })
    }
}

fn body(
    bytes: &[u8],
    record: &'static str,
    limits: &DecodeLimits,
) -> Result<Vec<Instruction>, PersistError> {
    decode_changeset(bytes, limits).map_err(|error| PersistError::Changeset { record, error })
}

/// Encodes the file meta record of a file whose object records are all written (no checkpoint
/// marker: nothing is replayed when it is restored).
pub fn encode_file_meta(meta: &FileMeta) -> Vec<u8> {
    encode_meta(meta, None)
}

/// Encodes the file meta record with a checkpoint marker: the object records hold the effect of
/// every local changeset up to client version `checkpointed`, and [`restore`] replays the stored
/// pending changesets after it (see [`WriteAhead`]).
pub fn encode_file_meta_checkpointed(meta: &FileMeta, checkpointed: u64) -> Vec<u8> {
    encode_meta(meta, Some(checkpointed))
}

fn encode_meta(meta: &FileMeta, checkpointed: Option<u64>) -> Vec<u8> {
    let mut out = header(kind::META);
    for n in [
        meta.client_file_ident,
        meta.client_file_ident_salt,
        meta.download.server_version,
        meta.download.last_integrated_client_version,
        meta.latest_server_version,
        meta.latest_server_version_salt,
        meta.last_client_version,
        meta.subscriptions.version,
    ] {
        write_u64(&mut out, n);
    }
    write_u64(&mut out, meta.subscriptions.subscriptions.len() as u64);
    for s in &meta.subscriptions.subscriptions {
        write_str(&mut out, &s.name);
        write_str(&mut out, &s.collection);
        write_str(&mut out, &s.query);
    }
    match &meta.transaction {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            write_u64(&mut out, t.client_version);
            write_u64(&mut out, t.origin_timestamp);
            write_bytes(&mut out, &encode_changeset(&t.instructions));
        }
    }
    if let Some(checkpointed) = checkpointed {
        out.push(1);
        write_u64(&mut out, checkpointed);
    }
    out
}

/// Decodes the file meta record.
pub fn decode_file_meta(bytes: &[u8], limits: &DecodeLimits) -> Result<FileMeta, PersistError> {
    decode_file_meta_checkpointed(bytes, limits).map(|(meta, _)| meta)
}

/// Decodes the file meta record and its checkpoint marker (`None` when the record has none: every
/// object record is written).
pub fn decode_file_meta_checkpointed(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<(FileMeta, Option<u64>), PersistError> {
    const RECORD: &str = "file metadata";
    let wire = |error| PersistError::Wire {
        record: RECORD,
        error,
    };
    let mut r = open(bytes, kind::META, RECORD, limits)?;
    let mut n = |what| r.u64(what).map_err(wire);
    let client_file_ident = n("client file ident")?;
    let client_file_ident_salt = n("client file ident salt")?;
    let download = DownloadCursor {
        server_version: n("download server version")?,
        last_integrated_client_version: n("download client version")?,
    };
    let latest_server_version = n("latest server version")?;
    let latest_server_version_salt = n("latest server version salt")?;
    let last_client_version = n("last client version")?;
    let subscriptions_version = n("subscription set version")?;
    let count = r
        .len("subscription count", MAX_SUBSCRIPTIONS)
        .map_err(wire)?;
    let mut subscriptions = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let mut text = |what| {
            r.str(what, limits.max_string_bytes)
                .map(str::to_owned)
                .map_err(wire)
        };
        subscriptions.push(Subscription {
            name: text("subscription name")?,
            collection: text("subscription collection")?,
            query: text("subscription query")?,
        });
    }
    let transaction = match r.u8("transaction flag").map_err(wire)? {
        0 => None,
        1 => {
            let client_version = r.u64("transaction client version").map_err(wire)?;
            let origin_timestamp = r.u64("transaction timestamp").map_err(wire)?;
            let encoded = r
                .bytes("transaction body", limits.max_body_bytes)
                .map_err(wire)?;
            Some(OutstandingTransaction {
                client_version,
                origin_timestamp,
                instructions: body(encoded, RECORD, limits)?,
            })
        }
        other => {
            return Err(PersistError::Invalid {
                record: RECORD,
                reason: format!("transaction flag {other} is neither 0 nor 1"),
            })
        }
    };
    let checkpointed = if r.is_empty() {
        None
    } else {
        match r.u8("checkpoint flag").map_err(wire)? {
            1 => Some(r.u64("checkpointed client version").map_err(wire)?),
            other => {
                return Err(PersistError::Invalid {
                    record: RECORD,
                    reason: format!("checkpoint flag {other} is not 1"),
                })
            }
        }
    };
    finish(&r, RECORD)?;
    if checkpointed.is_some_and(|c| c > last_client_version) {
        return Err(PersistError::Invalid {
            record: RECORD,
            reason: format!("its checkpoint is past the last client version {last_client_version}"),
        });
    }
    let meta = FileMeta {
        client_file_ident,
        client_file_ident_salt,
        download,
        latest_server_version,
        latest_server_version_salt,
        last_client_version,
        subscriptions: SubscriptionSet {
            version: subscriptions_version,
            subscriptions,
        },
        transaction,
    };
    Ok((meta, checkpointed))
}

/// Encodes a pending changeset record (keyed by `changeset.meta.version`).
pub fn encode_pending(changeset: &Changeset) -> Vec<u8> {
    encode_pending_record(&changeset.meta, &encode_changeset(&changeset.instructions))
}

/// Encodes a pending changeset record from its metadata and its instructions as
/// `encode_changeset` encoded them.
fn encode_pending_record(m: &ChangesetMeta, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2 + 4 * 10);
    out.extend_from_slice(&header(kind::PENDING));
    for n in [
        m.version,
        m.last_integrated_remote_version,
        m.origin_timestamp,
        m.origin_file_ident,
    ] {
        write_u64(&mut out, n);
    }
    out.extend_from_slice(body);
    out
}

/// Decodes a pending changeset record.
pub fn decode_pending(bytes: &[u8], limits: &DecodeLimits) -> Result<Changeset, PersistError> {
    const RECORD: &str = "pending changeset";
    let wire = |error| PersistError::Wire {
        record: RECORD,
        error,
    };
    let mut r = open(bytes, kind::PENDING, RECORD, limits)?;
    let mut n = |what| r.u64(what).map_err(wire);
    let meta = ChangesetMeta {
        version: n("client version")?,
        last_integrated_remote_version: n("last integrated server version")?,
        origin_timestamp: n("timestamp")?,
        origin_file_ident: n("origin file ident")?,
    };
    Ok(Changeset {
        meta,
        instructions: body(r.rest(), RECORD, limits)?,
    })
}

/// The key under which an object's record is stored: its collection and canonical EJSON
/// primary key, unambiguous for any collection name.
pub fn object_record_key(collection: &str, key: &PrimaryKey) -> String {
    let key = canonical_key_text(key);
    format!("{}:{collection}{key}", collection.len())
}

/// Encodes an object record: instructions creating the object and setting each field.
pub fn encode_object(collection: &str, key: &PrimaryKey, document: &Document) -> Vec<u8> {
    let mut instructions = Vec::with_capacity(document.len() + 1);
    object_instructions(collection, key, document, &mut instructions);
    let mut out = header(kind::OBJECT);
    out.extend_from_slice(&encode_changeset(&instructions));
    out
}

/// An object read back from its record.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredObject {
    /// Its collection.
    pub collection: String,
    /// Its primary key.
    pub key: PrimaryKey,
    /// Its fields (without the primary key).
    pub document: Document,
}

/// Decodes an object record.
pub fn decode_object(bytes: &[u8], limits: &DecodeLimits) -> Result<StoredObject, PersistError> {
    const RECORD: &str = "object";
    let invalid = |reason: &str| PersistError::Invalid {
        record: RECORD,
        reason: reason.to_owned(),
    };
    let mut r = open(bytes, kind::OBJECT, RECORD, limits)?;
    let mut instructions = body(r.rest(), RECORD, limits)?.into_iter();
    let Some(Instruction::CreateObject { collection, key }) = instructions.next() else {
        return Err(invalid("it does not start by creating its object"));
    };
    // Collected and sorted once (written in name order, so usually already sorted), not
    // inserted one by one, which would move O(N) fields each for fields out of order.
    let mut fields = Vec::with_capacity(instructions.len());
    for instruction in instructions {
        match instruction {
            Instruction::Set { path, value }
                if path.collection == collection
                    && path.key == key
                    && path.nested.is_empty()
                    && path.field != PRIMARY_KEY =>
            {
                fields.push((path.field, value));
            }
            _ => return Err(invalid("it holds more than one object's fields")),
        }
    }
    let count = fields.len();
    let document = Document::from_entries(fields);
    if document.len() != count {
        return Err(invalid("it sets one field twice"));
    }
    Ok(StoredObject {
        collection,
        key,
        document,
    })
}

/// Encodes the schema record: instructions adding each collection and property.
pub fn encode_schema(schema: &Schema) -> Vec<u8> {
    let mut instructions = Vec::new();
    schema_instructions(schema, &mut instructions);
    let mut out = header(kind::SCHEMA);
    out.extend_from_slice(&encode_changeset(&instructions));
    out
}

/// Decodes the schema record.
pub fn decode_schema(bytes: &[u8], limits: &DecodeLimits) -> Result<Schema, PersistError> {
    const RECORD: &str = "schema";
    let invalid = |reason: String| PersistError::Invalid {
        record: RECORD,
        reason,
    };
    let mut r = open(bytes, kind::SCHEMA, RECORD, limits)?;
    let mut schema = Schema::default();
    for instruction in body(r.rest(), RECORD, limits)? {
        match instruction {
            Instruction::AddCollection {
                name,
                kind,
                primary_key,
            } => {
                if schema.collections.contains_key(&name) {
                    return Err(invalid(format!(
                        "it adds collection {name} twice",
                        name = Quoted(&name)
                    )));
                }
                schema.insert(CollectionSchema {
                    name,
                    kind,
                    primary_key,
                    properties: crate::schema::NameMap::new(),
                });
            }
            Instruction::AddProperty {
                collection,
                property,
            } => {
                let Some(c) = schema.collections.get_mut(&collection) else {
                    return Err(invalid(format!(
                        "it adds a property to {collection} before the collection",
                        collection = Quoted(&collection)
                    )));
                };
                c.properties.insert(property.name.clone(), property);
            }
            _ => {
                return Err(invalid(
                    "it holds an instruction that is not a schema change".into(),
                ))
            }
        }
    }
    Ok(schema)
}

/// The merged writes of one group commit, as encoded records: what a driver puts and deletes in
/// one storage transaction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PersistBatch {
    /// Object records by [`object_record_key`]: the new record, or `None` to delete it.
    pub objects: SortedMap<String, Option<Vec<u8>>>,
    /// Whether every stored pending changeset is deleted before `pending` is put.
    pub clear_pending: bool,
    /// Stored pending changesets up to this client version are deleted before `pending` is put
    /// (0: none): the server acknowledged them.
    pub acknowledged: u64,
    /// Pending changeset records to put, by client version.
    pub pending: SortedMap<u64, Vec<u8>>,
    /// The new file meta record, if any write was merged.
    pub meta: Option<Vec<u8>>,
    /// The new schema record, when the schema changed.
    pub schema: Option<Vec<u8>>,
}

impl PersistBatch {
    /// An empty batch.
    pub fn new() -> Self {
        PersistBatch::default()
    }

    /// Merges `writes` (in the order the session emitted them) into one batch.
    pub fn from_writes(writes: impl IntoIterator<Item = StorageWrite>) -> Self {
        let mut batch = PersistBatch::new();
        for write in writes {
            batch.add(write);
        }
        batch
    }

    /// Whether nothing is to be written.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
            && !self.clear_pending
            && self.acknowledged == 0
            && self.pending.is_empty()
            && self.meta.is_none()
            && self.schema.is_none()
    }

    /// Merges one write, later writes winning.
    pub fn add(&mut self, write: StorageWrite) {
        for (collection, key, doc) in write.objects {
            let record = doc.map(|doc| encode_object(&collection, &key, &doc));
            self.objects
                .insert(object_record_key(&collection, &key), record);
        }
        self.add_pending(write.pending);
        self.meta = Some(encode_file_meta(&write.meta));
        if let Some(schema) = &write.schema {
            self.schema = Some(encode_schema(schema));
        }
    }
}

impl PersistBatch {
    /// Merges a change to the pending list into the records to put and delete.
    fn add_pending(&mut self, update: PendingUpdate) {
        match update {
            PendingUpdate::Appended { changeset, body } => {
                self.pending.insert(
                    changeset.meta.version,
                    encode_pending_record(&changeset.meta, &body),
                );
            }
            PendingUpdate::Delta {
                acknowledged,
                rewritten,
            } => {
                if acknowledged > 0 {
                    // Records put earlier in this batch leave with the stored ones.
                    self.pending = std::mem::take(&mut self.pending)
                        .into_iter()
                        .filter(|(version, _)| *version > acknowledged)
                        .collect();
                    if !self.clear_pending {
                        self.acknowledged = self.acknowledged.max(acknowledged);
                    }
                }
                for changeset in &rewritten {
                    self.pending
                        .insert(changeset.meta.version, encode_pending(changeset));
                }
            }
            PendingUpdate::Replaced(list) => {
                self.clear_pending = true;
                self.acknowledged = 0;
                self.pending = list
                    .iter()
                    .map(|c| (c.meta.version, encode_pending(c)))
                    .collect();
            }
            PendingUpdate::Unchanged => {}
        }
    }
}

/// A client file rebuilt by [`restore`].
#[derive(Debug)]
pub struct Restored {
    /// What the session resumes from.
    pub state: PersistedState,
    /// What the driver persists through from now on: it holds the objects that replay changed,
    /// whose records the next checkpoint writes.
    pub write_ahead: WriteAhead,
}

/// Rebuilds a client file from its records: the meta record, the schema record (`declared` when
/// there is none), every object record and every pending changeset record (in any order).
///
/// When the meta record carries a checkpoint marker (see [`WriteAhead`]), the pending changesets
/// after it, which the object records do not hold yet, are applied to the objects in client
/// version order (their Data Ingest objects are not stored, as when they were written). Replaying
/// from the marker is exact, and restoring again from the same records gives the same state.
pub fn restore<O, P>(
    meta: &[u8],
    schema: Option<&[u8]>,
    objects: O,
    pending: P,
    declared: &Schema,
    limits: &DecodeLimits,
) -> Result<Restored, PersistError>
where
    O: IntoIterator,
    O::Item: AsRef<[u8]>,
    P: IntoIterator,
    P::Item: AsRef<[u8]>,
{
    let (meta, checkpointed) = decode_file_meta_checkpointed(meta, limits)?;
    let schema = match schema {
        Some(bytes) => decode_schema(bytes, limits)?,
        None => declared.clone(),
    };
    let mut store = Store::new(schema);
    {
        let mut write = store.write();
        for record in objects {
            let object = decode_object(record.as_ref(), limits)?;
            let invalid = |e: crate::store::ApplyError| PersistError::Invalid {
                record: "object",
                reason: format!(
                    "{} {:?} does not fit the schema: {e}",
                    object.collection, object.key
                ),
            };
            if write.get(&object.collection, &object.key).is_some() {
                return Err(PersistError::Invalid {
                    record: "object",
                    reason: format!("{} {:?} is stored twice", object.collection, object.key),
                });
            }
            write
                .create(&object.collection, object.key.clone())
                .map_err(invalid)?;
            for (field, value) in &object.document {
                let path = Path::field(object.collection.clone(), object.key.clone(), field);
                write.set(path, value.clone()).map_err(invalid)?;
            }
        }
        write.commit();
    }
    // In client version order. IndexedDB hands the records over in key order, so this appends;
    // a sorted `Vec` spares the browser build a B-tree of changesets.
    let mut list: Vec<Changeset> = Vec::new();
    for record in pending {
        let changeset = decode_pending(record.as_ref(), limits)?;
        let version = changeset.meta.version;
        match list.binary_search_by_key(&version, |c| c.meta.version) {
            Ok(_) => {
                return Err(PersistError::Invalid {
                    record: "pending changeset",
                    reason: format!("client version {version} is stored twice"),
                })
            }
            Err(at) => list.insert(at, changeset),
        }
    }
    let checkpointed = checkpointed.unwrap_or(meta.last_client_version);
    let after = list.partition_point(|c| c.meta.version <= checkpointed);
    let replayed = replay(&mut store, list.get(after..).unwrap_or_default().iter())?;
    let write_ahead = WriteAhead::restored(&meta, checkpointed, &store, replayed);
    Ok(Restored {
        state: PersistedState {
            meta,
            store,
            pending: list,
        },
        write_ahead,
    })
}

/// Applies local changesets the object records do not hold yet; returns the objects they touched.
fn replay<'a>(
    store: &mut Store,
    changesets: impl Iterator<Item = &'a Changeset>,
) -> Result<Vec<(String, PrimaryKey)>, PersistError> {
    let mut touched = Vec::new();
    for changeset in changesets {
        let schema = store.schema();
        let stored = |i: &&Instruction| {
            i.object().is_none_or(|(collection, _)| {
                schema.collection(collection).map(|c| c.kind) != Some(CollectionKind::Asymmetric)
            })
        };
        let instructions: Vec<Instruction> = changeset
            .instructions
            .iter()
            .filter(stored)
            .cloned()
            .collect();
        store
            .apply(&instructions, &mut Changes::default())
            .map_err(|e| PersistError::Invalid {
                record: "pending changeset",
                reason: format!(
                    "client version {} does not apply to the checkpointed objects: {e}",
                    changeset.meta.version
                ),
            })?;
        touched.extend(
            instructions
                .iter()
                .filter_map(Instruction::object)
                .map(|(c, k)| (c.to_owned(), k.clone())),
        );
    }
    Ok(touched)
}

mod write_ahead;

pub use write_ahead::WriteAhead;

#[cfg(test)]
mod tests;
