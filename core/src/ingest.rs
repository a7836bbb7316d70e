//! Data Ingest: asymmetric (insert-only) objects. They travel in changesets like any other write,
//! but no replica ever stores them: the client keeps them only in its upload queue, and the server
//! splits them out of each uploaded changeset ([`Splitter`]), checks that they are pure inserts,
//! and hands them to storage as whole documents instead of integrating them into the history.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::changeset::{
    encode_changeset, object_instructions, Changeset, DecodeLimits, Insert, Instruction, PlainBody,
};
use crate::protocol::IngestStatusEntry;
use crate::schema::{CollectionKind, Schema, PRIMARY_KEY};
use crate::store::{check_new_object, checked_top_level_value, ApplyError, Changes, Store};
use crate::value::{
    document_to_ejson, parse_ejson, Document, EjsonError, EjsonMode, PrimaryKey, Value,
};

/// An asymmetric object taken out of a changeset, built into its document's text.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestedObject {
    /// Its (asymmetric) collection.
    pub collection: String,
    /// Its primary key.
    pub key: PrimaryKey,
    /// Its fields, `_id` included, as relaxed EJSON: what [`document_text`] writes for its
    /// document, and what storage keeps.
    pub text: String,
}

impl IngestedObject {
    /// The object of `collection` with key `key` and fields `document` (`_id` included).
    pub fn new(collection: String, key: PrimaryKey, document: &Document) -> Self {
        IngestedObject {
            collection,
            key,
            text: document_text(document),
        }
    }

    /// Its document, read back from its text.
    pub fn document(&self) -> Result<Document, EjsonError> {
        match parse_ejson(&self.text)? {
            Value::Object(document) => Ok(document),
            _ => Err(EjsonError::Invalid {
                path: "$".into(),
                expected: "a JSON object (a document)",
                json: self.text.clone(),
            }),
        }
    }
}

/// A document as relaxed EJSON text, exactly as `document_to_ejson(doc, Relaxed).to_string()`
/// writes it, but without building a JSON tree for a document whose field names do not start
/// with `$` (a typical one).
pub fn document_text(doc: &Document) -> String {
    let plain = || {
        if doc.keys().any(|k| k.starts_with('$')) {
            return None;
        }
        let mut out = Vec::with_capacity(24 * doc.len() + 2);
        out.push(b'{');
        for (i, (field, value)) in doc.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_field(&mut out, field, value).ok()?;
        }
        out.push(b'}');
        String::from_utf8(out).ok()
    };
    plain().unwrap_or_else(|| document_to_ejson(doc, EjsonMode::Relaxed).to_string())
}

/// Writes `"field":value` as a relaxed EJSON document holds it. Values that stay plain JSON (null,
/// booleans, integers, strings, finite doubles other than `-0.0`) are written directly.
fn write_field(out: &mut Vec<u8>, field: &str, value: &Value) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *out, field)?;
    out.push(b':');
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => serde_json::to_writer(&mut *out, b)?,
        Value::Int(i) => serde_json::to_writer(&mut *out, i)?,
        Value::String(s) => serde_json::to_writer(&mut *out, s)?,
        Value::Double(d) if d.is_finite() && (*d != 0.0 || d.is_sign_positive()) => {
            serde_json::to_writer(&mut *out, d)?;
        }
        other => serde_json::to_writer(&mut *out, &other.to_ejson(EjsonMode::Relaxed))?,
    }
    Ok(())
}

/// The text of the object [`Splitter::split_inserts`] is writing: its fields must come in
/// order, as a client writes a document's, so that they land where the document's sorted
/// fields would be.
#[derive(Debug)]
struct Draft {
    collection: String,
    key: PrimaryKey,
    text: Vec<u8>,
    /// Whether `_id` is written (it goes where it sorts among the fields).
    id_written: bool,
}

impl Draft {
    fn write_id(&mut self) -> serde_json::Result<()> {
        self.id_written = true;
        if self.text.len() > 1 {
            self.text.push(b',');
        }
        match &self.key {
            PrimaryKey::Int(i) => write_field(&mut self.text, PRIMARY_KEY, &Value::Int(*i)),
            key => write_field(&mut self.text, PRIMARY_KEY, &key.clone().into()),
        }
    }

    /// Writes a field that sorts after every field written so far.
    fn write(&mut self, field: &str, value: &Value) -> serde_json::Result<()> {
        if !self.id_written && field > PRIMARY_KEY {
            self.write_id()?;
        }
        if self.text.len() > 1 {
            self.text.push(b',');
        }
        write_field(&mut self.text, field, value)
    }

    fn finish(mut self) -> Option<IngestedObject> {
        if !self.id_written {
            self.write_id().ok()?;
        }
        self.text.push(b'}');
        Some(IngestedObject {
            collection: self.collection,
            key: self.key,
            text: String::from_utf8(self.text).ok()?,
        })
    }
}

/// Why a changeset's asymmetric part was refused.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum IngestError {
    /// A change to an asymmetric object other than its insertion: an erase, or a write to an
    /// object that the same changeset did not create.
    NotInsertOnly {
        /// The collection.
        collection: String,
        /// The object's primary key.
        key: PrimaryKey,
        /// What the changeset tried (`"erase"` or `"update"`).
        attempted: &'static str,
    },
    /// The inserted object does not fit its collection's schema.
    Invalid(ApplyError),
}

impl fmt::Display for IngestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IngestError::NotInsertOnly {
                collection,
                key,
                attempted,
            } => write!(
                f,
                "{attempted} of asymmetric object {collection}[{key:?}] refused: asymmetric collections are insert-only; ingest a new object instead"
            ),
            IngestError::Invalid(e) => write!(f, "ingested object does not fit the schema: {e}"),
        }
    }
}

impl std::error::Error for IngestError {}

/// What [`Splitter::split`] makes of one changeset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    /// The instructions for the synced state (schema changes and symmetric objects), in order.
    pub synced: Vec<Instruction>,
    /// The asymmetric objects the changeset inserted, in the order it created them.
    pub ingested: Vec<IngestedObject>,
    /// How many of the changeset's instructions built them.
    pub ingested_instructions: usize,
}

/// Splits the changesets of one upload into their synced part and their ingested objects. One
/// splitter serves consecutive changesets, so that a collection added by one of them is known to
/// the next. Uploads without asymmetric objects cost no more than a scan of their instructions.
#[derive(Debug)]
pub struct Splitter<'a> {
    schema: &'a Schema,
    /// Builds the ingested documents, made at the first asymmetric instruction: the same schema,
    /// with asymmetric collections stored as ordinary ones (the documents are taken out after
    /// each changeset).
    scratch: Option<Store>,
    /// Schema instructions seen before the scratch store was made, applied when it is.
    schema_changes: Vec<Instruction>,
    /// Whether a changeset split so far changed the schema, which [`Splitter::split_inserts`]
    /// does not follow.
    schema_changed: bool,
    asymmetric: BTreeSet<String>,
}

/// Asymmetric collections are stored as ordinary ones in the scratch store.
fn scratch_instruction(instruction: &Instruction) -> Instruction {
    match instruction {
        Instruction::AddCollection {
            name,
            kind: CollectionKind::Asymmetric,
            primary_key,
        } => Instruction::AddCollection {
            name: name.clone(),
            kind: CollectionKind::TopLevel,
            primary_key: *primary_key,
        },
        other => other.clone(),
    }
}

impl<'a> Splitter<'a> {
    /// A splitter for changesets made against `schema`.
    pub fn new(schema: &'a Schema) -> Self {
        let asymmetric = schema
            .collections
            .values()
            .filter(|c| c.kind == CollectionKind::Asymmetric)
            .map(|c| c.name.clone())
            .collect();
        Splitter {
            schema,
            scratch: None,
            schema_changes: Vec::new(),
            schema_changed: false,
            asymmetric,
        }
    }

    /// The scratch store, made on first use.
    fn scratch(&mut self) -> Result<&mut Store, IngestError> {
        let store = match self.scratch.take() {
            Some(store) => store,
            None => {
                let mut schema = self.schema.clone();
                for collection in schema.collections.values_mut() {
                    if collection.kind == CollectionKind::Asymmetric {
                        collection.kind = CollectionKind::TopLevel;
                    }
                }
                let mut store = Store::new(schema);
                store
                    .apply(&self.schema_changes, &mut Changes::new())
                    .map_err(IngestError::Invalid)?;
                store
            }
        };
        Ok(self.scratch.insert(store))
    }

    /// Applies a schema instruction to the scratch store, or keeps it for when one is made.
    fn schema_change(&mut self, instruction: &Instruction) -> Result<(), IngestError> {
        self.schema_changed = true;
        let instruction = scratch_instruction(instruction);
        match self.scratch.as_mut() {
            Some(store) => store
                .apply(std::slice::from_ref(&instruction), &mut Changes::new())
                .map_err(IngestError::Invalid),
            None => {
                self.schema_changes.push(instruction);
                Ok(())
            }
        }
    }

    /// Applies the waiting asymmetric instructions to the scratch store.
    fn apply_batch(
        &mut self,
        batch: &mut Vec<Instruction>,
        changes: &mut Changes,
    ) -> Result<(), IngestError> {
        if !batch.is_empty() {
            self.scratch()?
                .apply(batch, changes)
                .map_err(IngestError::Invalid)?;
            batch.clear();
        }
        Ok(())
    }

    /// Splits one changeset straight from its body when it is the usual changeset of ingested
    /// objects: each asymmetric object's creation followed by scalar writes to its top-level
    /// fields in the order of their names (as a client writes a document), nothing else. No
    /// [`Instruction`] and no [`Document`] is built: each object's text is written as its fields
    /// are checked. `None` for any other changeset, one that does not decode, one that breaks a
    /// rule or does not fit the schema, and after a changeset that changed the schema: then
    /// [`Splitter::split`] of the decoded body gives the result or the error, exactly as
    /// without this path, which only ever returns what that would.
    pub fn split_inserts(&mut self, body: &PlainBody<'_>, limits: &DecodeLimits) -> Option<Split> {
        if self.schema_changed || self.asymmetric.is_empty() {
            return None;
        }
        let (schema, asymmetric) = (self.schema, &self.asymmetric);
        let mut ingested: Vec<IngestedObject> = Vec::new();
        let mut draft: Option<Draft> = None;
        // The field the draft wrote last, if any: the next one must sort after it.
        let mut last_field = String::new();
        let mut wrote_field = false;
        let mut instructions = 0;
        let fits = body.inserts(limits, |insert| {
            instructions += 1;
            match insert {
                Insert::Create { collection, key } => {
                    if !asymmetric.contains(collection)
                        || check_new_object(schema, collection, &key).is_err()
                    {
                        return false;
                    }
                    if let Some(done) = draft.take() {
                        match done.finish() {
                            Some(object) => ingested.push(object),
                            None => return false,
                        }
                    }
                    let mut text = Vec::with_capacity(128);
                    text.push(b'{');
                    draft = Some(Draft {
                        collection: collection.to_owned(),
                        key,
                        text,
                        id_written: false,
                    });
                    wrote_field = false;
                    true
                }
                Insert::Set {
                    collection,
                    key,
                    field,
                    value,
                } => {
                    // Only the object created last, as the splitter builds it directly, and
                    // only fields in order, none twice, not `_id`, none that makes the
                    // document's text wrapped.
                    let Some(object) = draft
                        .as_mut()
                        .filter(|o| o.collection == collection && o.key == key)
                    else {
                        return false;
                    };
                    if (wrote_field && field <= last_field.as_str())
                        || field == PRIMARY_KEY
                        || field.starts_with('$')
                    {
                        return false;
                    }
                    match checked_top_level_value(schema, collection, &key, field, value) {
                        Ok(value) => {
                            last_field.clear();
                            last_field.push_str(field);
                            wrote_field = true;
                            object.write(field, &value).is_ok()
                        }
                        Err(_) => false,
                    }
                }
            }
        });
        if !matches!(fits, Ok(true)) {
            return None;
        }
        if let Some(done) = draft {
            ingested.push(done.finish()?);
        }
        // An object created twice in one changeset is merged by `split`: rare, left to it.
        let mut order: Vec<&IngestedObject> = ingested.iter().collect();
        order.sort_unstable_by(|a, b| (&a.collection, &a.key).cmp(&(&b.collection, &b.key)));
        let twice = order
            .windows(2)
            .any(|w| w[0].collection == w[1].collection && w[0].key == w[1].key);
        (!twice).then_some(Split {
            synced: Vec::new(),
            ingested,
            ingested_instructions: instructions,
        })
    }

    /// Splits one changeset. Asymmetric objects must be created by the changeset before any of
    /// their fields are written, and never erased.
    pub fn split(&mut self, instructions: Vec<Instruction>) -> Result<Split, IngestError> {
        let mut split = Split::default();
        let mut created: Vec<(String, PrimaryKey)> = Vec::new();
        // Where each object of `created` is: `Some` while it is built here directly (a creation
        // followed by scalar writes to its top-level fields, checked as the store would check
        // them), `None` once it went to the scratch store for anything else.
        let mut documents: Vec<Option<Document>> = Vec::new();
        // Made at the first instruction that names an object other than the one created last,
        // which a typical changeset (each object's fields right after its creation) never has.
        let mut known_objects: Option<BTreeMap<(String, PrimaryKey), usize>> = None;
        let mut changes = Changes::new();
        // Asymmetric instructions wait here and go to the scratch store together (before the
        // next schema change and at the end): one apply, not one per instruction.
        let mut batch: Vec<Instruction> = Vec::new();
        for instruction in instructions {
            match &instruction {
                Instruction::AddCollection { name, kind, .. } => {
                    if *kind == CollectionKind::Asymmetric {
                        self.asymmetric.insert(name.clone());
                    } else {
                        self.asymmetric.remove(name);
                    }
                    self.apply_batch(&mut batch, &mut changes)?;
                    self.schema_change(&instruction)?;
                    split.synced.push(instruction);
                }
                Instruction::AddProperty { .. } => {
                    self.apply_batch(&mut batch, &mut changes)?;
                    self.schema_change(&instruction)?;
                    split.synced.push(instruction);
                }
                _ => {
                    let Some((collection, key)) = instruction.object() else {
                        split.synced.push(instruction);
                        continue;
                    };
                    if !self.asymmetric.contains(collection) {
                        split.synced.push(instruction);
                        continue;
                    }
                    // The fields of an object follow its creation: most instructions name the
                    // object created last, which needs no lookup.
                    let latest = created
                        .last()
                        .filter(|(c, k)| c.as_str() == collection && k == key)
                        .map(|_| created.len() - 1);
                    let object = || (collection.to_owned(), key.clone());
                    let index = latest.or_else(|| {
                        known_objects
                            .get_or_insert_with(|| {
                                (0..).zip(&created).map(|(i, o)| (o.clone(), i)).collect()
                            })
                            .get(&object())
                            .copied()
                    });
                    split.ingested_instructions += 1;
                    let index = match (&instruction, index) {
                        (Instruction::CreateObject { .. }, None) => {
                            self.scratch()?
                                .check_new_object(collection, key)
                                .map_err(IngestError::Invalid)?;
                            if let Some(known) = known_objects.as_mut() {
                                known.insert(object(), created.len());
                            }
                            created.push(object());
                            documents.push(Some(Document::from([(
                                PRIMARY_KEY.to_owned(),
                                key.clone().into(),
                            )])));
                            continue;
                        }
                        (Instruction::EraseObject { .. }, _) => {
                            return Err(not_insert_only(object(), "erase"));
                        }
                        (_, None) => return Err(not_insert_only(object(), "update")),
                        (_, Some(index)) => index,
                    };
                    let Some(slot) = documents.get_mut(index) else {
                        continue;
                    };
                    match (instruction, slot.as_mut()) {
                        // Created again: nothing to do, as in the store.
                        (Instruction::CreateObject { .. }, Some(_)) => {}
                        (Instruction::Set { path, value }, Some(document))
                            if path.nested.is_empty() && is_scalar(&value) =>
                        {
                            let value = self
                                .scratch()?
                                .checked_field_value(&path, value)
                                .map_err(IngestError::Invalid)?;
                            document.insert(path.field, value);
                        }
                        (instruction, _) => {
                            // Anything else builds the object in the scratch store, from what
                            // was built here so far.
                            if let (Some(document), Some((collection, key))) =
                                (slot.take(), created.get(index))
                            {
                                batch.extend(insert_instructions(collection, key, &document));
                            }
                            batch.push(instruction);
                        }
                    }
                }
            }
        }
        self.apply_batch(&mut batch, &mut changes)?;
        for ((collection, key), built) in created.into_iter().zip(documents) {
            let document = match built {
                Some(document) => document,
                None => self.scratch()?.take(&collection, &key).unwrap_or_default(),
            };
            split
                .ingested
                .push(IngestedObject::new(collection, key, &document));
        }
        Ok(split)
    }
}

/// A value the splitter writes into a document itself: anything but a link, a collection or an
/// embedded object.
fn is_scalar(value: &Value) -> bool {
    !matches!(
        value,
        Value::Link(_) | Value::List(_) | Value::Set(_) | Value::Dict(_) | Value::Object(_)
    )
}

fn not_insert_only(
    (collection, key): (String, PrimaryKey),
    attempted: &'static str,
) -> IngestError {
    IngestError::NotInsertOnly {
        collection,
        key,
        attempted,
    }
}

/// The instructions that insert `document` (its `_id` is `key`) into `collection`: what a
/// client's `ingest` records.
pub fn insert_instructions(
    collection: &str,
    key: &PrimaryKey,
    document: &Document,
) -> Vec<Instruction> {
    let mut out = Vec::with_capacity(document.len() + 1);
    object_instructions(collection, key, document, &mut out);
    out
}

/// The asymmetric objects in a client's upload queue: what a device reports about its ingest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestQueue {
    /// Objects not yet acknowledged by the server.
    pub objects: u64,
    /// Their size as encoded instructions.
    pub bytes: u64,
    /// The timestamp of the oldest changeset holding one (milliseconds since the Unix epoch).
    pub oldest_timestamp: Option<u64>,
}

impl IngestQueue {
    /// Counts the asymmetric objects that `changesets` (a client's pending uploads) insert.
    pub fn of<'a>(schema: &Schema, changesets: impl IntoIterator<Item = &'a Changeset>) -> Self {
        let mut queue = IngestQueue::default();
        for changeset in changesets {
            let asymmetric: Vec<Instruction> = changeset
                .instructions
                .iter()
                .filter(|i| {
                    i.object().is_some_and(|(c, _)| {
                        schema.collection(c).map(|c| c.kind) == Some(CollectionKind::Asymmetric)
                    })
                })
                .cloned()
                .collect();
            let objects = asymmetric
                .iter()
                .filter(|i| matches!(i, Instruction::CreateObject { .. }))
                .count() as u64;
            if objects == 0 {
                continue;
            }
            queue.objects += objects;
            queue.bytes += encode_changeset(&asymmetric).len() as u64;
            queue.oldest_timestamp = Some(
                queue
                    .oldest_timestamp
                    .map_or(changeset.meta.origin_timestamp, |t| {
                        t.min(changeset.meta.origin_timestamp)
                    }),
            );
        }
        queue
    }
}

/// The most objects an INGEST_STATUS entry may report (2^40).
pub const MAX_REPORTED_OBJECTS: u64 = 1 << 40;
/// The most bytes an INGEST_STATUS entry may report (2^50).
pub const MAX_REPORTED_BYTES: u64 = 1 << 50;
/// The oldest pending age an INGEST_STATUS entry may report: ten years, in milliseconds.
pub const MAX_REPORTED_AGE_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// What an INGEST_STATUS reports for each asymmetric collection of `schema`: the objects, bytes
/// and oldest pending age (at `now_ms`) that `changesets` (a client's pending uploads) hold,
/// with zeros for a collection nothing is pending for. Empty when `schema` has no asymmetric
/// collection.
///
/// Each changeset may come with its encoded body (`encode_changeset` of all its instructions):
/// when every instruction of the changeset is on objects of one asymmetric collection, as with
/// a typical batch of ingested readings, that body is what the collection's bytes count, and
/// nothing is encoded again.
pub fn ingest_status<'a>(
    schema: &Schema,
    changesets: impl IntoIterator<Item = (&'a Changeset, Option<&'a [u8]>)>,
    now_ms: u64,
) -> Vec<IngestStatusEntry> {
    // In the schema's (name) order; a Vec rather than a map, as there are few asymmetric
    // collections and a map of this type would add its own B-tree code to the browser build.
    let mut per: Vec<(&str, IngestQueue, Vec<Instruction>)> = schema
        .collections
        .values()
        .filter(|c| c.kind == CollectionKind::Asymmetric)
        .map(|c| (c.name.as_str(), IngestQueue::default(), Vec::new()))
        .collect();
    if per.is_empty() {
        return Vec::new();
    }
    for (changeset, body) in changesets {
        let t = changeset.meta.origin_timestamp;
        if let Some((index, objects, bytes)) = body.and_then(|body| only_one(&per, changeset, body))
        {
            if let Some((_, queue, _)) = per.get_mut(index) {
                queue.objects += objects;
                queue.bytes += bytes;
                queue.oldest_timestamp = Some(queue.oldest_timestamp.map_or(t, |o| o.min(t)));
            }
            continue;
        }
        for (_, _, instructions) in per.iter_mut() {
            instructions.clear();
        }
        for instruction in &changeset.instructions {
            let Some((collection, _)) = instruction.object() else {
                continue;
            };
            if let Some((_, queue, instructions)) = per.iter_mut().find(|(c, ..)| *c == collection)
            {
                if matches!(instruction, Instruction::CreateObject { .. }) {
                    queue.objects += 1;
                }
                instructions.push(instruction.clone());
            }
        }
        for (_, queue, instructions) in per.iter_mut() {
            if instructions.is_empty() {
                continue;
            }
            queue.bytes += encode_changeset(instructions).len() as u64;
            queue.oldest_timestamp = Some(queue.oldest_timestamp.map_or(t, |o| o.min(t)));
        }
    }
    per.into_iter()
        .map(|(collection, queue, _)| IngestStatusEntry {
            collection: collection.to_owned(),
            objects: queue.objects,
            bytes: if queue.objects == 0 { 0 } else { queue.bytes },
            oldest_age_ms: match queue.oldest_timestamp {
                Some(t) if queue.objects > 0 => now_ms.saturating_sub(t).min(MAX_REPORTED_AGE_MS),
                _ => 0,
            },
        })
        .collect()
}

/// When every instruction of `changeset` is on objects of one collection of `per`: that
/// collection's index, the objects the changeset creates and its body's length.
fn only_one(
    per: &[(&str, IngestQueue, Vec<Instruction>)],
    changeset: &Changeset,
    body: &[u8],
) -> Option<(usize, u64, u64)> {
    let (first, _) = changeset.instructions.first()?.object()?;
    let index = per.iter().position(|(c, ..)| *c == first)?;
    let mut objects = 0;
    for instruction in &changeset.instructions {
        if instruction.object()?.0 != first {
            return None;
        }
        if matches!(instruction, Instruction::CreateObject { .. }) {
            objects += 1;
        }
    }
    Some((index, objects, body.len() as u64))
}

/// Checks an INGEST_STATUS report against `schema`: every collection asymmetric and named once,
/// and figures that can be true. With `allow_unknown` (development mode, where a client's upload
/// may still be about to add the collection) a collection the schema lacks passes. The error is
/// the message for the client.
pub fn check_ingest_status(
    schema: &Schema,
    entries: &[IngestStatusEntry],
    allow_unknown: bool,
) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for e in entries {
        let name = &e.collection;
        match schema.collection(name).map(|c| c.kind) {
            None if allow_unknown => {}
            None => {
                return Err(format!(
                    "no collection named \"{name}\" in the server's schema"
                ))
            }
            Some(CollectionKind::Asymmetric) => {}
            Some(_) => {
                return Err(format!(
                    "\"{name}\" is not an asymmetric collection; report only Data Ingest queues"
                ))
            }
        }
        if !seen.insert(name.as_str()) {
            return Err(format!("\"{name}\" is reported twice"));
        }
        let why = if e.objects > MAX_REPORTED_OBJECTS {
            Some("more than 2^40 objects")
        } else if e.bytes > MAX_REPORTED_BYTES {
            Some("more than 2^50 bytes")
        } else if e.oldest_age_ms > MAX_REPORTED_AGE_MS {
            Some("an oldest pending age over ten years")
        } else if e.objects == 0 && (e.bytes != 0 || e.oldest_age_ms != 0) {
            Some("bytes or an age with no objects")
        } else if e.bytes < e.objects {
            Some("fewer bytes than objects")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(format!("\"{name}\" reports {why}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changeset::Path;
    use crate::schema::{CollectionSchema, PrimaryKeyType, Property, ScalarType};
    use crate::value::Value;

    fn schema() -> Schema {
        let mut schema = Schema::default();
        schema.insert(
            CollectionSchema::top_level("Task", PrimaryKeyType::Int)
                .with(Property::new("title", ScalarType::String)),
        );
        schema.insert(CollectionSchema {
            kind: CollectionKind::Asymmetric,
            ..CollectionSchema::top_level("Reading", PrimaryKeyType::Int)
                .with(Property::new("celsius", ScalarType::Double))
        });
        schema
    }

    fn reading(key: i64, celsius: f64) -> Vec<Instruction> {
        let mut doc = Document::new();
        doc.insert("celsius".into(), Value::Double(celsius));
        insert_instructions("Reading", &PrimaryKey::Int(key), &doc)
    }

    #[test]
    fn inserts_are_split_out_and_built_into_documents() {
        let schema = schema();
        let mut splitter = Splitter::new(&schema);
        let task = Instruction::CreateObject {
            collection: "Task".into(),
            key: PrimaryKey::Int(1),
        };
        let mut instructions = reading(7, 21.5);
        instructions.push(task.clone());
        instructions.extend(reading(8, -3.0));
        let split = splitter.split(instructions).unwrap();
        assert_eq!(split.synced, vec![task]);
        assert_eq!(split.ingested.len(), 2);
        assert_eq!(split.ingested[0].key, PrimaryKey::Int(7));
        assert_eq!(
            split.ingested[0].document().unwrap().get("celsius"),
            Some(&Value::Double(21.5))
        );
        assert_eq!(
            split.ingested[1].document().unwrap().get("_id"),
            Some(&Value::Int(8))
        );
        assert_eq!(split.ingested[1].text, r#"{"_id":8,"celsius":-3.0}"#);
        // The scratch store keeps nothing between changesets: the same key inserts again.
        assert_eq!(splitter.split(reading(7, 1.0)).unwrap().ingested.len(), 1);
    }

    #[test]
    fn a_client_records_what_insert_instructions_builds() {
        let mut store = crate::store::Store::new(schema());
        let doc = Document::from([
            ("_id".to_owned(), Value::Int(4)),
            ("celsius".to_owned(), Value::Double(19.5)),
        ]);
        let mut tx = store.write();
        tx.ingest("Reading", PrimaryKey::Int(4), doc.clone())
            .unwrap();
        let (recorded, _) = tx.commit();
        assert_eq!(
            recorded,
            insert_instructions("Reading", &PrimaryKey::Int(4), &doc)
        );
        assert_eq!(recorded.len(), 2, "the key is not set again as a field");
    }

    #[test]
    fn updates_and_erases_are_refused() {
        let schema = schema();
        let mut splitter = Splitter::new(&schema);
        let update = vec![Instruction::Set {
            path: Path::field("Reading", PrimaryKey::Int(7), "celsius"),
            value: Value::Double(0.0),
        }];
        let err = splitter.split(update).unwrap_err();
        assert!(matches!(
            err,
            IngestError::NotInsertOnly {
                attempted: "update",
                ..
            }
        ));
        let erase = vec![Instruction::EraseObject {
            collection: "Reading".into(),
            key: PrimaryKey::Int(7),
        }];
        let err = splitter.split(erase).unwrap_err();
        assert!(matches!(
            err,
            IngestError::NotInsertOnly {
                attempted: "erase",
                ..
            }
        ));
        assert!(err.to_string().contains("insert-only"), "{err}");
    }

    #[test]
    fn objects_that_break_the_schema_are_refused() {
        let schema = schema();
        let mut splitter = Splitter::new(&schema);
        let mut doc = Document::new();
        doc.insert("celsius".into(), Value::String("warm".into()));
        let err = splitter
            .split(insert_instructions("Reading", &PrimaryKey::Int(1), &doc))
            .unwrap_err();
        assert!(matches!(err, IngestError::Invalid(_)), "{err}");
    }

    #[test]
    fn documents_built_directly_or_in_the_scratch_store_equal_what_a_store_builds() {
        let mut schema = schema();
        let reading = CollectionSchema {
            kind: CollectionKind::Asymmetric,
            ..CollectionSchema::top_level("Reading", PrimaryKeyType::Int)
                .with(Property::new("celsius", ScalarType::Double))
                .with(Property {
                    container: crate::schema::Container::List,
                    ..Property::new("samples", ScalarType::Int)
                })
        };
        schema.insert(reading.clone());
        let field = |key, name: &str| Path::field("Reading", PrimaryKey::Int(key), name);
        let create = |key| Instruction::CreateObject {
            collection: "Reading".into(),
            key: PrimaryKey::Int(key),
        };
        let set = |key, value| Instruction::Set {
            path: field(key, "celsius"),
            value: Value::Double(value),
        };
        let instructions = vec![
            create(1),
            set(1, 20.0),
            create(2),
            set(2, 4.5),
            // A list edit moves object 1 to the scratch store; later writes follow it there.
            Instruction::ListInsert {
                list: field(1, "samples"),
                index: 0,
                value: Value::Int(7),
                prior_size: 0,
            },
            set(1, 21.0),
            create(1),
            // Object 2 is still built directly; writing it again keeps the last value.
            set(2, 5.5),
            create(3),
        ];
        let split = Splitter::new(&schema).split(instructions.clone()).unwrap();
        assert_eq!(split.ingested_instructions, instructions.len());
        let mut reference_schema = schema.clone();
        reference_schema.insert(CollectionSchema {
            kind: CollectionKind::TopLevel,
            ..reading
        });
        let mut reference = Store::new(reference_schema);
        reference.apply(&instructions, &mut Changes::new()).unwrap();
        let keys: Vec<PrimaryKey> = split.ingested.iter().map(|o| o.key.clone()).collect();
        assert_eq!(keys, [1, 2, 3].map(PrimaryKey::Int));
        for object in &split.ingested {
            assert_eq!(
                Some(object.text.clone()),
                reference.get("Reading", &object.key).map(document_text),
                "{object:?}"
            );
        }

        // A bad key or a value of the wrong type is refused on either path.
        let bad_key = vec![Instruction::CreateObject {
            collection: "Reading".into(),
            key: PrimaryKey::String("one".into()),
        }];
        let err = Splitter::new(&schema).split(bad_key).unwrap_err();
        assert!(matches!(err, IngestError::Invalid(_)), "{err}");
        let wrong_after_list = vec![
            create(1),
            Instruction::ListInsert {
                list: field(1, "samples"),
                index: 0,
                value: Value::Int(7),
                prior_size: 0,
            },
            Instruction::Set {
                path: field(1, "celsius"),
                value: Value::String("warm".into()),
            },
        ];
        let err = Splitter::new(&schema).split(wrong_after_list).unwrap_err();
        assert!(matches!(err, IngestError::Invalid(_)), "{err}");
        let unknown_field = vec![
            create(1),
            Instruction::Set {
                path: field(1, "nope"),
                value: Value::Int(1),
            },
        ];
        let err = Splitter::new(&schema).split(unknown_field).unwrap_err();
        assert!(matches!(err, IngestError::Invalid(_)), "{err}");
    }

    #[test]
    fn a_collection_added_by_an_earlier_changeset_is_known() {
        let empty = Schema::default();
        let mut splitter = Splitter::new(&empty);
        let add = vec![
            Instruction::AddCollection {
                name: "Reading".into(),
                kind: CollectionKind::Asymmetric,
                primary_key: Some(PrimaryKeyType::Int),
            },
            Instruction::AddProperty {
                collection: "Reading".into(),
                property: Property::new("celsius", ScalarType::Double),
            },
        ];
        let split = splitter.split(add.clone()).unwrap();
        assert_eq!(split.synced, add);
        let split = splitter.split(reading(1, 2.0)).unwrap();
        assert!(split.synced.is_empty());
        assert_eq!(split.ingested.len(), 1);
    }

    /// What `split_inserts` makes of `instructions` encoded, checked against `split`: the same
    /// split whenever it gives one.
    fn split_fast(schema: &Schema, instructions: Vec<Instruction>) -> Option<Split> {
        let limits = DecodeLimits::default();
        let body = encode_changeset(&instructions);
        let plain = PlainBody::new(&body, &limits).unwrap();
        let fast = Splitter::new(schema).split_inserts(&plain, &limits)?;
        let slow = Splitter::new(schema).split(instructions.clone());
        assert_eq!(Ok(&fast), slow.as_ref(), "{instructions:?}");
        Some(fast)
    }

    #[test]
    fn a_changeset_of_inserts_is_split_from_its_body_as_split_would() {
        let schema = schema();
        let mut instructions: Vec<Instruction> = (0..200).flat_map(|k| reading(k, 1.5)).collect();
        let split = split_fast(&schema, instructions.clone()).expect("inserts only");
        assert_eq!(split.ingested.len(), 200);
        assert_eq!(split.ingested_instructions, 400);
        assert!(split.synced.is_empty());

        // Anything else is left to `split`, which gives the result or the error.
        let set = |key, field: &str, value| Instruction::Set {
            path: Path::field("Reading", PrimaryKey::Int(key), field),
            value,
        };
        let others = [
            Instruction::CreateObject {
                collection: "Task".into(),
                key: PrimaryKey::Int(1),
            },
            Instruction::CreateObject {
                collection: "Reading".into(),
                key: PrimaryKey::String("one".into()),
            },
            Instruction::CreateObject {
                collection: "Reading".into(),
                key: PrimaryKey::Int(5),
            },
            Instruction::EraseObject {
                collection: "Reading".into(),
                key: PrimaryKey::Int(199),
            },
            set(199, "celsius", Value::String("warm".into())),
            set(199, "nope", Value::Double(1.0)),
            set(199, "_id", Value::Int(199)),
            set(5, "celsius", Value::Double(1.0)),
            set(199, "celsius", Value::List(vec![Value::Double(1.0)].into())),
        ];
        for other in others {
            instructions.push(other);
            assert_eq!(
                split_fast(&schema, instructions.clone()),
                None,
                "{instructions:?}"
            );
            instructions.pop();
        }
        // Nor after a changeset that changed the schema.
        let mut splitter = Splitter::new(&schema);
        let add = Instruction::AddProperty {
            collection: "Reading".into(),
            property: Property {
                optional: true,
                ..Property::new("note", ScalarType::String)
            },
        };
        splitter.split(vec![add]).unwrap();
        let body = encode_changeset(&reading(1, 2.0));
        let limits = DecodeLimits::default();
        let plain = PlainBody::new(&body, &limits).unwrap();
        assert_eq!(splitter.split_inserts(&plain, &limits), None);
    }

    #[test]
    fn documents_are_written_as_the_ejson_module_writes_them() {
        let doc = |fields: Vec<(&str, Value)>| -> Document {
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
        };
        let cases = [
            doc(vec![
                ("_id", Value::Int(7)),
                (
                    "sensor",
                    Value::String("greenhouse-\"7\"\n\u{e9}\u{1F600}".into()),
                ),
                ("celsius", Value::Double(18.0)),
                ("humidity", Value::Double(0.43)),
                ("tiny", Value::Double(1e-300)),
                ("big", Value::Int(i64::MIN)),
                ("ok", Value::Bool(true)),
                ("none", Value::Null),
            ]),
            doc(vec![]),
            // Wrapped doubles, keys with `$`, other values.
            doc(vec![("negative_zero", Value::Double(-0.0))]),
            doc(vec![("nan", Value::Double(f64::NAN))]),
            doc(vec![("$weird", Value::Int(1))]),
            doc(vec![("at", Value::Date(1_800_000_000_000))]),
            doc(vec![(
                "samples",
                Value::List([1, 2].map(Value::Int).into_iter().collect()),
            )]),
        ];
        for (i, case) in cases.iter().enumerate() {
            assert_eq!(
                document_text(case),
                document_to_ejson(case, EjsonMode::Relaxed).to_string(),
                "case {i}"
            );
        }
    }

    #[test]
    fn fields_are_written_where_the_document_sorts_them() {
        let mut schema = Schema::default();
        schema.insert(CollectionSchema {
            kind: CollectionKind::Asymmetric,
            ..CollectionSchema::top_level("Note", PrimaryKeyType::String)
                .with(Property::new("Upper", ScalarType::String))
                .with(Property::new("at", ScalarType::Date))
                .with(Property::new("n", ScalarType::Int))
                .with(Property {
                    optional: true,
                    ..Property::new("zero", ScalarType::Double)
                })
        });
        let key = PrimaryKey::String("a \"quoted\" key".into());
        let mut doc = Document::new();
        doc.insert("Upper".into(), Value::String("é\n".into()));
        doc.insert("at".into(), Value::Date(1_800_000_000_000));
        doc.insert("n".into(), Value::Int(-4));
        doc.insert("zero".into(), Value::Double(-0.0));
        let instructions = insert_instructions("Note", &key, &doc);
        let split = split_fast(&schema, instructions.clone()).expect("fields in order");
        doc.insert(PRIMARY_KEY.into(), key.clone().into());
        assert_eq!(split.ingested[0].text, document_text(&doc));
        assert_eq!(split.ingested[0].document(), Ok(doc));
        // Fields out of order, or one written twice, are left to `split`.
        let mut reversed = instructions.clone();
        reversed[1..].reverse();
        assert_eq!(split_fast(&schema, reversed), None);
        let mut twice = instructions;
        twice.push(twice[1].clone());
        assert_eq!(split_fast(&schema, twice), None);
    }

    proptest::proptest! {
        #[test]
        fn document_text_is_the_relaxed_ejson_of_the_document(
            doc in proptest::collection::btree_map(
                crate::changeset::arbitrary::name(),
                crate::changeset::arbitrary::value(),
                0..6,
            )
        ) {
            let doc: Document = doc.into_iter().collect();
            proptest::prop_assert_eq!(
                document_text(&doc),
                document_to_ejson(&doc, EjsonMode::Relaxed).to_string()
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn splitting_from_the_body_agrees_with_split(
            steps in proptest::collection::vec((0u8..36, 0i64..4), 0..16)
        ) {
            // Mostly well-formed inserts (new objects, doubles written to `celsius` of the
            // object created last), with every kind of departure from them now and then.
            let schema = schema();
            let mut next = 10;
            let mut last = 0;
            let mut instructions = Vec::new();
            for (step, key) in steps {
                let set = |key, field: &str, value| Instruction::Set {
                    path: Path::field("Reading", PrimaryKey::Int(key), field),
                    value,
                };
                let create = |collection: &str, key| Instruction::CreateObject {
                    collection: collection.into(),
                    key: PrimaryKey::Int(key),
                };
                instructions.push(match step {
                    0..=11 => {
                        next += 1;
                        last = next;
                        create("Reading", next)
                    }
                    12..=27 => set(last, "celsius", Value::Double(1.5)),
                    28 => {
                        last = 10 + key;
                        create("Reading", last)
                    }
                    29 => create("Task", key),
                    30 => Instruction::EraseObject {
                        collection: "Reading".into(),
                        key: PrimaryKey::Int(last),
                    },
                    31 => set(10 + key, "celsius", Value::Double(2.5)),
                    32 => set(last, "celsius", Value::Null),
                    33 => set(last, "nope", Value::Double(1.5)),
                    34 => set(last, "_id", Value::Int(last)),
                    _ => set(last, "celsius", Value::Int(key)),
                });
            }
            split_fast(&schema, instructions.clone());
        }
    }

    fn changeset(version: u64, at: u64, instructions: Vec<Instruction>) -> Changeset {
        Changeset {
            meta: crate::changeset::ChangesetMeta {
                version,
                last_integrated_remote_version: 0,
                origin_timestamp: at,
                origin_file_ident: 1,
            },
            instructions,
        }
    }

    #[test]
    fn ingest_status_has_one_entry_per_asymmetric_collection() {
        let schema = schema();
        let mut task = Document::new();
        task.insert("title".into(), Value::String("t".into()));
        let changesets = [
            changeset(1, 1_000, reading(1, 20.5)),
            changeset(
                2,
                1_500,
                insert_instructions("Task", &PrimaryKey::Int(1), &task),
            ),
            changeset(3, 2_000, [reading(2, 21.0), reading(3, 22.0)].concat()),
        ];
        let status = ingest_status(&schema, changesets.iter().map(|c| (c, None)), 4_000);
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].collection, "Reading");
        assert_eq!(status[0].objects, 3);
        assert_eq!(status[0].oldest_age_ms, 3_000);
        let queue = IngestQueue::of(&schema, &changesets);
        assert_eq!(status[0].bytes, queue.bytes);
        assert_eq!(check_ingest_status(&schema, &status, false), Ok(()));
        let mut unknown = status.clone();
        unknown[0].collection = "Later".into();
        assert!(check_ingest_status(&schema, &unknown, false).is_err());
        assert_eq!(check_ingest_status(&schema, &unknown, true), Ok(()));

        let empty = ingest_status(&schema, [], 4_000);
        assert_eq!(
            (empty[0].objects, empty[0].bytes, empty[0].oldest_age_ms),
            (0, 0, 0)
        );
        let mut plain = Schema::default();
        plain.insert(CollectionSchema::top_level("Task", PrimaryKeyType::Int));
        assert!(ingest_status(&plain, changesets.iter().map(|c| (c, None)), 4_000).is_empty());

        // With their bodies, changesets of one asymmetric collection count the body and the
        // others are encoded as before: the same figures.
        let bodies: Vec<Vec<u8>> = changesets
            .iter()
            .map(|c| encode_changeset(&c.instructions))
            .collect();
        let with_bodies = ingest_status(
            &schema,
            changesets
                .iter()
                .zip(&bodies)
                .map(|(c, b)| (c, Some(b.as_slice()))),
            4_000,
        );
        assert_eq!(with_bodies, status);
    }
}
