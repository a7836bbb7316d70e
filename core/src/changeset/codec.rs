//! The binary changeset codec: a compact, interned, optionally zlib-compressed encoding of a
//! list of [`Instruction`]s, with a decoder that enforces a size limit on everything it reads.
//!
//! The byte layout is specified in `docs/changeset-format.md`; the unit tests check that
//! document's hex vectors. Metadata (versions, timestamp, origin) is not part of the body: it
//! travels in the protocol message that carries the body.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use miniz_oxide::deflate::core::{
    compress as deflate, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush,
    TDEFLStatus,
};
use miniz_oxide::inflate::stream::{inflate as inflate_stream, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

use super::{Instruction, Path, PathElement};
use crate::quote::Quoted;
use crate::schema::{CollectionKind, Container, PrimaryKeyType, Property, ScalarType};
use crate::value::{Decimal, Document, Link, ObjectId, PrimaryKey, Uuid, Value};
use crate::wire::{write_bytes, write_i64, write_str, write_u64, Reader, WireError};

/// Plain bodies longer than this many bytes are zlib-compressed, if that makes them smaller.
pub const COMPRESSION_THRESHOLD: usize = 1024;

/// The format version written in the low seven bits of the header byte.
const FORMAT_VERSION: u8 = 1;
/// The header bit that marks a compressed body.
const COMPRESSED_FLAG: u8 = 0x80;

/// Instruction tags.
mod tag {
    pub const ADD_COLLECTION: u8 = 0x01;
    pub const ADD_PROPERTY: u8 = 0x02;
    pub const CREATE_OBJECT: u8 = 0x03;
    pub const ERASE_OBJECT: u8 = 0x04;
    pub const SET: u8 = 0x05;
    pub const ADD_INTEGER: u8 = 0x06;
    pub const LIST_INSERT: u8 = 0x07;
    pub const LIST_SET: u8 = 0x08;
    pub const LIST_MOVE: u8 = 0x09;
    pub const LIST_ERASE: u8 = 0x0a;
    pub const CLEAR: u8 = 0x0b;
    pub const SET_INSERT: u8 = 0x0c;
    pub const SET_ERASE: u8 = 0x0d;
    pub const DICT_ERASE: u8 = 0x0e;
}

/// Value tags.
mod vtag {
    pub const NULL: u8 = 0x00;
    pub const FALSE: u8 = 0x01;
    pub const TRUE: u8 = 0x02;
    pub const INT: u8 = 0x03;
    pub const DOUBLE: u8 = 0x04;
    pub const STRING: u8 = 0x05;
    pub const BINARY: u8 = 0x06;
    pub const DATE: u8 = 0x07;
    pub const OBJECT_ID: u8 = 0x08;
    pub const UUID: u8 = 0x09;
    pub const DECIMAL: u8 = 0x0a;
    pub const LINK: u8 = 0x0b;
    pub const LIST: u8 = 0x0c;
    pub const SET: u8 = 0x0d;
    pub const DICT: u8 = 0x0e;
    pub const OBJECT: u8 = 0x0f;
}

/// Bounds the decoder enforces, so that hostile input cannot make it allocate or recurse
/// without limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The largest encoded body accepted (header included).
    pub max_body_bytes: usize,
    /// The largest plain body a compressed body may inflate to.
    pub max_inflated_bytes: usize,
    /// The most instructions in one changeset.
    pub max_instructions: usize,
    /// The most entries in the string table.
    pub max_strings: usize,
    /// The longest single string, binary value or decimal text, in bytes.
    pub max_string_bytes: usize,
    /// The deepest nesting of containers inside a value, and the most nested elements of a
    /// path. The decoder recurses once per level, so keep this modest.
    pub max_depth: usize,
    /// The most container elements (list, set, dictionary and embedded-object entries) in the
    /// whole changeset.
    pub max_elements: usize,
}

impl Default for DecodeLimits {
    /// 16 MiB bodies inflating to at most 64 MiB, a million instructions and strings, 16 MiB
    /// strings, depth 64 and four million container elements.
    fn default() -> Self {
        DecodeLimits {
            max_body_bytes: 16 << 20,
            max_inflated_bytes: 64 << 20,
            max_instructions: 1_000_000,
            max_strings: 1_000_000,
            max_string_bytes: 16 << 20,
            max_depth: 64,
            max_elements: 4_000_000,
        }
    }
}

/// Which of the [`DecodeLimits`] a body exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`DecodeLimits::max_body_bytes`].
    BodyBytes,
    /// [`DecodeLimits::max_inflated_bytes`].
    InflatedBytes,
    /// [`DecodeLimits::max_instructions`].
    Instructions,
    /// [`DecodeLimits::max_strings`].
    Strings,
    /// [`DecodeLimits::max_string_bytes`].
    StringBytes,
    /// [`DecodeLimits::max_depth`].
    Depth,
    /// [`DecodeLimits::max_elements`].
    Elements,
}

impl Limit {
    /// The name of the [`DecodeLimits`] field.
    pub fn field_name(self) -> &'static str {
        match self {
            Limit::BodyBytes => "max_body_bytes",
            Limit::InflatedBytes => "max_inflated_bytes",
            Limit::Instructions => "max_instructions",
            Limit::Strings => "max_strings",
            Limit::StringBytes => "max_string_bytes",
            Limit::Depth => "max_depth",
            Limit::Elements => "max_elements",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field_name())
    }
}

/// Why a changeset body could not be decoded.
///
/// Offsets count bytes from the start of the body, or, inside a compressed body, from the start
/// of the inflated plain body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes could not be read: the input is truncated, a varint overflows or a string is
    /// not UTF-8.
    Wire(WireError),
    /// The header byte names a format version this decoder does not read.
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// A tag byte with no meaning in its position.
    BadTag {
        /// What the tag introduces (`"instruction"`, `"value"`, ...).
        what: &'static str,
        /// The tag found.
        tag: u8,
        /// Where the tag is.
        offset: usize,
    },
    /// A size or count over one of the [`DecodeLimits`].
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// Where the size or count was read (0 for the body size).
        offset: usize,
        /// The size or count found.
        found: u64,
        /// The limit.
        max: u64,
    },
    /// A string-table index past the end of the table.
    BadStringIndex {
        /// The index found.
        index: u64,
        /// How many strings the table holds.
        count: usize,
        /// Where the index is.
        offset: usize,
    },
    /// The zlib stream is corrupt, truncated or inflates to more than the stated size.
    Decompression {
        /// Where the zlib stream starts in the body.
        offset: usize,
        /// What went wrong.
        detail: String,
    },
    /// The zlib stream inflates to fewer bytes than the header states.
    InflatedSizeMismatch {
        /// The size the header states.
        stated: u64,
        /// The size the stream inflated to.
        actual: usize,
    },
    /// Bytes left over after the last instruction or after the zlib stream.
    TrailingBytes {
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
    /// A well-formed scalar whose value is not allowed (decimal text that is not a number, an
    /// index over `u32::MAX`).
    BadScalar {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// The offending input, as text.
        input: String,
    },
    /// A set whose elements are not in strictly increasing order.
    UnsortedSet {
        /// Where the set's element count is.
        offset: usize,
    },
    /// A dictionary or embedded object with the same key twice.
    DuplicateKey {
        /// Where the second occurrence is.
        offset: usize,
        /// The repeated key.
        key: String,
    },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Wire(e) => write!(f, "malformed changeset: {e}"),
            CodecError::UnsupportedVersion { version } => write!(
                f,
                "changeset format version {version} is not supported (this decoder reads \
                 version {FORMAT_VERSION}): upgrade the decoding side"
            ),
            CodecError::BadTag { what, tag, offset } => {
                write!(f, "unknown {what} tag 0x{tag:02x} at offset {offset}")
            }
            CodecError::LimitExceeded {
                limit,
                offset,
                found,
                max,
            } => write!(
                f,
                "{found} at offset {offset} is over the {limit} limit of {max}: raise \
                 DecodeLimits::{limit} if the sender is trusted"
            ),
            CodecError::BadStringIndex {
                index,
                count,
                offset,
            } => write!(
                f,
                "string index {index} at offset {offset} is past the end of the \
                 {count}-entry string table"
            ),
            CodecError::Decompression { offset, detail } => {
                write!(
                    f,
                    "zlib stream at offset {offset} cannot be inflated: {detail}"
                )
            }
            CodecError::InflatedSizeMismatch { stated, actual } => write!(
                f,
                "zlib stream inflates to {actual} bytes, not the {stated} its header states"
            ),
            CodecError::TrailingBytes { offset, count } => {
                write!(
                    f,
                    "{count} unexpected bytes after the changeset at offset {offset}"
                )
            }
            CodecError::BadScalar {
                what,
                offset,
                input,
            } => write!(f, "{what} {} at offset {offset} is invalid", Quoted(input)),
            CodecError::UnsortedSet { offset } => write!(
                f,
                "set at offset {offset} is not in strictly increasing order (unsorted or with \
                 duplicates)"
            ),
            CodecError::DuplicateKey { offset, key } => {
                write!(
                    f,
                    "key {} at offset {offset} appears twice in its map",
                    Quoted(key)
                )
            }
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CodecError::Wire(e) => Some(e),
            _ => None,
        }
    }
}

impl From<WireError> for CodecError {
    fn from(e: WireError) -> Self {
        CodecError::Wire(e)
    }
}

/// Encodes instructions as a changeset body (see `docs/changeset-format.md`).
///
/// The body is compressed when its plain form is longer than [`COMPRESSION_THRESHOLD`] and
/// compression makes it smaller. Encoding never fails; values nested deeper than the
/// decoder's [`DecodeLimits::max_depth`] encode but will not decode with those limits.
pub fn encode_changeset(instructions: &[Instruction]) -> Vec<u8> {
    let mut enc = Encoder {
        index: HashMap::new(),
        table: Vec::new(),
        out: Vec::with_capacity(instructions.len().saturating_mul(24)),
    };
    write_u64(&mut enc.out, instructions.len() as u64);
    for instruction in instructions {
        enc.instruction(instruction);
    }
    let table_bytes: usize = enc.table.iter().map(|s| s.len() + 2).sum();
    let mut body = Vec::with_capacity(1 + 5 + table_bytes + enc.out.len());
    body.push(FORMAT_VERSION);
    write_u64(&mut body, enc.table.len() as u64);
    for s in &enc.table {
        write_str(&mut body, s);
    }
    body.extend_from_slice(&enc.out);
    let plain = body.get(1..).unwrap_or_default();
    if plain.len() > COMPRESSION_THRESHOLD {
        if let Some(compressed) = compress(plain).filter(|c| c.len() < body.len()) {
            return compressed;
        }
    }
    body
}

thread_local! {
    /// The thread's deflate state, reset for each body: making one allocates and zeroes about
    /// 300 KB of tables (often fresh pages from the kernel), which cost more than compressing a
    /// typical body of a few KB.
    static COMPRESSOR: RefCell<Option<CompressorOxide>> = const { RefCell::new(None) };
}

/// The compressed form of a plain body: header, inflated size, zlib stream (at the fastest
/// level); `None` if deflate failed, which leaves the body plain.
fn compress(plain: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(plain.len() / 2 + 16);
    out.push(FORMAT_VERSION | COMPRESSED_FLAG);
    write_u64(&mut out, plain.len() as u64);
    let new = || CompressorOxide::new(create_comp_flags_from_zip_params(1, 1, 0));
    COMPRESSOR
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut slot) => {
                let z = slot.get_or_insert_with(new);
                z.reset();
                deflate_into(z, plain, &mut out)
            }
            Err(_) => deflate_into(&mut new(), plain, &mut out),
        })
        .ok()??;
    Some(out)
}

/// Appends the zlib stream of `plain` to `out` with a fresh (or just reset) `z`.
fn deflate_into(z: &mut CompressorOxide, mut plain: &[u8], out: &mut Vec<u8>) -> Option<()> {
    loop {
        let start = out.len();
        out.resize(start + (plain.len() / 2).max(64), 0);
        let (status, read, written) = deflate(z, plain, &mut out[start..], TDEFLFlush::Finish);
        out.truncate(start + written);
        match status {
            TDEFLStatus::Done => return Some(()),
            TDEFLStatus::Okay if read > 0 || written > 0 => plain = plain.get(read..)?,
            _ => return None,
        }
    }
}

/// Up to this many strings the encoder finds a name by scanning its table: most changesets
/// name one collection and a few fields, and a scan of those is cheaper than hashing each name.
const SCANNED_NAMES: usize = 16;

/// Encoder state: the string table being built and the encoded instructions.
struct Encoder<'a> {
    /// The table's strings with their indices, filled once it holds more than
    /// [`SCANNED_NAMES`].
    index: HashMap<&'a str, u64>,
    table: Vec<&'a str>,
    out: Vec<u8>,
}

impl<'a> Encoder<'a> {
    /// Writes the string-table index of `s`, adding it to the table first if needed.
    fn name(&mut self, s: &'a str) {
        let next = self.table.len() as u64;
        let i = if self.table.len() <= SCANNED_NAMES {
            match self.table.iter().position(|t| *t == s) {
                Some(i) => i as u64,
                None => {
                    self.table.push(s);
                    if self.table.len() > SCANNED_NAMES {
                        self.index = (0..).zip(&self.table).map(|(i, t)| (*t, i)).collect();
                    }
                    next
                }
            }
        } else {
            let table = &mut self.table;
            *self.index.entry(s).or_insert_with(|| {
                table.push(s);
                next
            })
        };
        write_u64(&mut self.out, i);
    }

    fn u32(&mut self, v: u32) {
        write_u64(&mut self.out, u64::from(v));
    }

    fn instruction(&mut self, instruction: &'a Instruction) {
        match instruction {
            Instruction::AddCollection {
                name,
                kind,
                primary_key,
            } => {
                self.out.push(tag::ADD_COLLECTION);
                self.name(name);
                self.out.push(collection_kind_code(*kind));
                self.out.push(primary_key.map_or(0, pk_type_code));
            }
            Instruction::AddProperty {
                collection,
                property,
            } => {
                self.out.push(tag::ADD_PROPERTY);
                self.name(collection);
                self.property(property);
            }
            Instruction::CreateObject { collection, key } => {
                self.out.push(tag::CREATE_OBJECT);
                self.name(collection);
                self.key(key);
            }
            Instruction::EraseObject { collection, key } => {
                self.out.push(tag::ERASE_OBJECT);
                self.name(collection);
                self.key(key);
            }
            Instruction::Set { path, value } => {
                self.out.push(tag::SET);
                self.path(path);
                self.value(value);
            }
            Instruction::AddInteger { path, delta } => {
                self.out.push(tag::ADD_INTEGER);
                self.path(path);
                write_i64(&mut self.out, *delta);
            }
            Instruction::ListInsert {
                list,
                index,
                value,
                prior_size,
            } => {
                self.out.push(tag::LIST_INSERT);
                self.path(list);
                self.u32(*index);
                self.u32(*prior_size);
                self.value(value);
            }
            Instruction::ListSet {
                list,
                index,
                value,
                prior_size,
            } => {
                self.out.push(tag::LIST_SET);
                self.path(list);
                self.u32(*index);
                self.u32(*prior_size);
                self.value(value);
            }
            Instruction::ListMove {
                list,
                from,
                to,
                prior_size,
            } => {
                self.out.push(tag::LIST_MOVE);
                self.path(list);
                self.u32(*from);
                self.u32(*to);
                self.u32(*prior_size);
            }
            Instruction::ListErase {
                list,
                index,
                prior_size,
            } => {
                self.out.push(tag::LIST_ERASE);
                self.path(list);
                self.u32(*index);
                self.u32(*prior_size);
            }
            Instruction::Clear { path } => {
                self.out.push(tag::CLEAR);
                self.path(path);
            }
            Instruction::SetInsert { set, value } => {
                self.out.push(tag::SET_INSERT);
                self.path(set);
                self.value(value);
            }
            Instruction::SetErase { set, value } => {
                self.out.push(tag::SET_ERASE);
                self.path(set);
                self.value(value);
            }
            Instruction::DictErase { dict, key } => {
                self.out.push(tag::DICT_ERASE);
                self.path(dict);
                self.name(key);
            }
        }
    }

    fn property(&mut self, property: &'a Property) {
        self.name(&property.name);
        let (code, target) = property.ty.code();
        self.out.push(code);
        if let Some(target) = target {
            self.name(target);
        }
        self.out.push(container_code(property.container));
        self.out
            .push(u8::from(property.optional) | (u8::from(property.indexed) << 1));
    }

    fn key(&mut self, key: &PrimaryKey) {
        match key {
            PrimaryKey::Int(i) => {
                self.out.push(0);
                write_i64(&mut self.out, *i);
            }
            PrimaryKey::String(s) => {
                self.out.push(1);
                write_str(&mut self.out, s);
            }
            PrimaryKey::ObjectId(o) => {
                self.out.push(2);
                self.out.extend_from_slice(&o.0);
            }
            PrimaryKey::Uuid(u) => {
                self.out.push(3);
                self.out.extend_from_slice(&u.0);
            }
        }
    }

    fn path(&mut self, path: &'a Path) {
        self.name(&path.collection);
        self.key(&path.key);
        self.name(&path.field);
        write_u64(&mut self.out, path.nested.len() as u64);
        for element in &path.nested {
            match element {
                PathElement::Field(name) => {
                    self.out.push(0);
                    self.name(name);
                }
                PathElement::Index(i) => {
                    self.out.push(1);
                    self.u32(*i);
                }
                PathElement::Key(key) => {
                    self.out.push(2);
                    self.name(key);
                }
            }
        }
    }

    fn value(&mut self, value: &'a Value) {
        match value {
            Value::Null => self.out.push(vtag::NULL),
            Value::Bool(false) => self.out.push(vtag::FALSE),
            Value::Bool(true) => self.out.push(vtag::TRUE),
            Value::Int(i) => {
                self.out.push(vtag::INT);
                write_i64(&mut self.out, *i);
            }
            Value::Double(d) => {
                self.out.push(vtag::DOUBLE);
                self.out.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            Value::String(s) => {
                self.out.push(vtag::STRING);
                write_str(&mut self.out, s);
            }
            Value::Binary(b) => {
                self.out.push(vtag::BINARY);
                write_bytes(&mut self.out, b);
            }
            Value::Date(ms) => {
                self.out.push(vtag::DATE);
                write_i64(&mut self.out, *ms);
            }
            Value::ObjectId(o) => {
                self.out.push(vtag::OBJECT_ID);
                self.out.extend_from_slice(&o.0);
            }
            Value::Uuid(u) => {
                self.out.push(vtag::UUID);
                self.out.extend_from_slice(&u.0);
            }
            Value::Decimal(d) => {
                self.out.push(vtag::DECIMAL);
                write_str(&mut self.out, d.as_str());
            }
            Value::Link(link) => {
                self.out.push(vtag::LINK);
                self.name(&link.collection);
                self.key(&link.key);
            }
            Value::List(items) | Value::Set(items) => {
                let tag = if matches!(value, Value::List(_)) {
                    vtag::LIST
                } else {
                    vtag::SET
                };
                self.out.push(tag);
                write_u64(&mut self.out, items.len() as u64);
                for item in items {
                    self.value(item);
                }
            }
            Value::Dict(map) => self.map(vtag::DICT, &mut map.iter()),
            Value::Object(map) => self.map(vtag::OBJECT, &mut map.iter()),
        }
    }

    /// A dictionary's entries or an embedded object's fields, in key order.
    fn map(
        &mut self,
        tag: u8,
        entries: &mut dyn ExactSizeIterator<Item = (&'a String, &'a Value)>,
    ) {
        self.out.push(tag);
        write_u64(&mut self.out, entries.len() as u64);
        for (key, item) in entries {
            self.name(key);
            self.value(item);
        }
    }
}

fn collection_kind_code(kind: CollectionKind) -> u8 {
    match kind {
        CollectionKind::TopLevel => 0,
        CollectionKind::Embedded => 1,
        CollectionKind::Asymmetric => 2,
    }
}

fn pk_type_code(ty: PrimaryKeyType) -> u8 {
    match ty {
        PrimaryKeyType::Int => 1,
        PrimaryKeyType::String => 2,
        PrimaryKeyType::ObjectId => 3,
        PrimaryKeyType::Uuid => 4,
    }
}

fn container_code(container: Container) -> u8 {
    match container {
        Container::Single => 0,
        Container::List => 1,
        Container::Set => 2,
        Container::Dictionary => 3,
    }
}

/// A changeset body's size as encoded and as it is before compression, from its header alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BodySizes {
    /// The encoded body's bytes (compressed or not).
    pub encoded: u64,
    /// The body's bytes uncompressed: the one-byte header plus the plain body the header states
    /// for a compressed body, the encoded size for a plain one.
    pub uncompressed: u64,
    /// Whether the body is compressed.
    pub compressed: bool,
}

/// Reads a changeset body's sizes from its header without inflating or decoding it (for the
/// dev console's figures). A body whose header cannot be read counts as plain.
pub fn body_sizes(body: &[u8]) -> BodySizes {
    let encoded = body.len() as u64;
    let plain = BodySizes {
        encoded,
        uncompressed: encoded,
        compressed: false,
    };
    let mut r = Reader::new(body);
    match r.u8("header") {
        Ok(header) if header & COMPRESSED_FLAG != 0 => match r.u64("inflated size") {
            Ok(stated) => BodySizes {
                encoded,
                uncompressed: stated.saturating_add(1),
                compressed: true,
            },
            Err(_) => plain,
        },
        _ => plain,
    }
}

/// Decodes a changeset body made by [`encode_changeset`], enforcing `limits`.
///
/// Never panics and never allocates more than the limits allow, whatever the input.
pub fn decode_changeset(
    body: &[u8],
    limits: &DecodeLimits,
) -> Result<Vec<Instruction>, CodecError> {
    PlainBody::new(body, limits)?.decode(limits)
}

/// A changeset body with its header read and, when compressed, inflated: what both
/// [`PlainBody::decode`] and [`PlainBody::inserts`] read, so that a caller trying the second
/// first and falling back to the first inflates the body once.
#[derive(Debug)]
pub struct PlainBody<'b> {
    plain: std::borrow::Cow<'b, [u8]>,
}

impl<'b> PlainBody<'b> {
    /// Reads `body`'s header and inflates it, enforcing `limits` (the errors are those
    /// [`decode_changeset`] gives for the same bytes).
    pub fn new(body: &'b [u8], limits: &DecodeLimits) -> Result<Self, CodecError> {
        plain_body(body, limits).map(|plain| PlainBody { plain })
    }

    /// Decodes the instructions, as [`decode_changeset`] does.
    pub fn decode(&self, limits: &DecodeLimits) -> Result<Vec<Instruction>, CodecError> {
        Decoder::new(&self.plain, limits).changeset()
    }

    /// Hands the instructions to `each` in order, as long as they are object creations and
    /// writes of a scalar (neither a link, a collection nor an embedded object) to a top-level
    /// field, with names borrowed from the body instead of built into [`Instruction`]s: the
    /// shape of a changeset of ingested objects. `Ok(true)` when every instruction was such a
    /// one and `each` accepted it (returned `true`); `Ok(false)` at the first one that is not,
    /// or that `each` refuses, and the caller decodes the body with [`PlainBody::decode`]
    /// instead. An error is the one [`PlainBody::decode`] gives, as both read the same bytes
    /// the same way up to it.
    pub fn inserts(
        &self,
        limits: &DecodeLimits,
        each: impl FnMut(Insert<'_>) -> bool,
    ) -> Result<bool, CodecError> {
        Decoder::new(&self.plain, limits).inserts(each)
    }
}

/// An instruction of a changeset that [`PlainBody::inserts`] hands on.
#[derive(Clone, Debug, PartialEq)]
pub enum Insert<'a> {
    /// `CreateObject`.
    Create {
        /// The object's collection.
        collection: &'a str,
        /// Its primary key.
        key: PrimaryKey,
    },
    /// A `Set` of a top-level field to a scalar.
    Set {
        /// The object's collection.
        collection: &'a str,
        /// Its primary key.
        key: PrimaryKey,
        /// The field.
        field: &'a str,
        /// The value: never a link, a list, a set, a dictionary or an embedded object.
        value: Value,
    },
}

/// The plain body of `body` (see [`decode_changeset`] for the checks).
fn plain_body<'b>(
    body: &'b [u8],
    limits: &DecodeLimits,
) -> Result<std::borrow::Cow<'b, [u8]>, CodecError> {
    if body.len() > limits.max_body_bytes {
        return Err(CodecError::LimitExceeded {
            limit: Limit::BodyBytes,
            offset: 0,
            found: body.len() as u64,
            max: limits.max_body_bytes as u64,
        });
    }
    let mut r = Reader::new(body);
    let header = r.u8("header")?;
    let version = header & !COMPRESSED_FLAG;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion { version });
    }
    if header & COMPRESSED_FLAG == 0 {
        return Ok(std::borrow::Cow::Borrowed(r.rest()));
    }
    let size_offset = r.position();
    let stated = r.u64("inflated size")?;
    if stated > limits.max_inflated_bytes as u64 {
        return Err(CodecError::LimitExceeded {
            limit: Limit::InflatedBytes,
            offset: size_offset,
            found: stated,
            max: limits.max_inflated_bytes as u64,
        });
    }
    let stream_offset = r.position();
    inflate(r.rest(), stated, stream_offset).map(std::borrow::Cow::Owned)
}

thread_local! {
    /// The thread's inflate state, reset for each body: a new one allocates and zeroes about
    /// 43 KB (its tables and window), more than inflating a typical body of a few KB costs.
    /// The reset zeroes the window too, so no stream can reach back into an earlier body (the
    /// server inflates every user's uploads on one thread).
    static INFLATER: RefCell<Option<Box<InflateState>>> = const { RefCell::new(None) };
}

/// Inflates a zlib stream that must produce exactly `stated` bytes (already checked against
/// the limit) and end exactly at the end of `input`. The output buffer grows with what the
/// stream actually produces, never past `stated + 1` bytes.
fn inflate(input: &[u8], stated: u64, offset: usize) -> Result<Vec<u8>, CodecError> {
    let new = || InflateState::new_boxed(DataFormat::Zlib);
    let shared = INFLATER.try_with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        let z = slot.get_or_insert_with(new);
        z.reset(DataFormat::Zlib);
        Some(inflate_with(z, input, stated, offset))
    });
    // Only while the thread is being torn down, or inflating re-entered, is it unavailable.
    match shared {
        Ok(Some(result)) => result,
        _ => inflate_with(&mut new(), input, stated, offset),
    }
}

/// [`inflate`] with a fresh (or just reset) `z`.
fn inflate_with(
    z: &mut InflateState,
    input: &[u8],
    stated: u64,
    offset: usize,
) -> Result<Vec<u8>, CodecError> {
    const CHUNK: usize = 32 * 1024;
    let stated_len = usize::try_from(stated).unwrap_or(usize::MAX);
    let cap = stated_len.saturating_add(1);
    let fail = |detail: &str| CodecError::Decompression {
        offset,
        detail: detail.to_owned(),
    };
    // `out` is the buffer, `written` how much of it the stream has filled.
    let mut out: Vec<u8> = Vec::new();
    let mut written = 0;
    let mut consumed = 0;
    loop {
        if written == out.len() {
            let room = cap.saturating_sub(written).min(written.max(CHUNK));
            out.resize(written.saturating_add(room), 0);
        }
        let rest = input.get(consumed..).unwrap_or_default();
        let free = out.get_mut(written..).unwrap_or_default();
        let step = inflate_stream(z, rest, free, MZFlush::None);
        consumed += step.bytes_consumed;
        written += step.bytes_written;
        if written > stated_len {
            return Err(fail(&format!(
                "it inflates to more than the {stated} bytes its header states"
            )));
        }
        match step.status {
            Ok(MZStatus::StreamEnd) => break,
            Ok(_) | Err(MZError::Buf) => {
                let stalled = step.bytes_consumed == 0 && step.bytes_written == 0;
                if stalled && written < out.len() {
                    return Err(fail("the stream is truncated"));
                }
            }
            Err(_) => return Err(fail("the stream is not valid zlib")),
        }
    }
    if written != stated_len {
        return Err(CodecError::InflatedSizeMismatch {
            stated,
            actual: written,
        });
    }
    out.truncate(written);
    if consumed < input.len() {
        return Err(CodecError::TrailingBytes {
            offset: offset.saturating_add(consumed),
            count: input.len() - consumed,
        });
    }
    Ok(out)
}

/// Decoder state over a plain body.
struct Decoder<'a, 'l> {
    r: Reader<'a>,
    strings: Vec<&'a str>,
    limits: &'l DecodeLimits,
    elements: usize,
}

/// Turns the reader's generic "too long" error into the limit that was exceeded.
fn limit_error(limit: Limit) -> impl Fn(WireError) -> CodecError {
    move |e| match e {
        WireError::TooLong {
            offset, len, max, ..
        } => CodecError::LimitExceeded {
            limit,
            offset,
            found: len,
            max,
        },
        other => CodecError::Wire(other),
    }
}

impl<'a, 'l> Decoder<'a, 'l> {
    fn new(plain: &'a [u8], limits: &'l DecodeLimits) -> Self {
        Decoder {
            r: Reader::new(plain),
            strings: Vec::new(),
            limits,
            elements: 0,
        }
    }

    /// Reads the string table and returns the instruction count.
    fn header(&mut self) -> Result<usize, CodecError> {
        let count = self
            .r
            .len("string count", self.limits.max_strings)
            .map_err(limit_error(Limit::Strings))?;
        self.strings.reserve_exact(self.prealloc(count));
        for _ in 0..count {
            let s = self
                .r
                .str("string", self.limits.max_string_bytes)
                .map_err(limit_error(Limit::StringBytes))?;
            self.strings.push(s);
        }
        self.r
            .len("instruction count", self.limits.max_instructions)
            .map_err(limit_error(Limit::Instructions))
    }

    /// Checks that nothing follows the last instruction.
    fn end(&self) -> Result<(), CodecError> {
        if self.r.is_empty() {
            Ok(())
        } else {
            Err(CodecError::TrailingBytes {
                offset: self.r.position(),
                count: self.r.remaining(),
            })
        }
    }

    fn changeset(mut self) -> Result<Vec<Instruction>, CodecError> {
        let count = self.header()?;
        let mut instructions = Vec::with_capacity(self.prealloc(count));
        for _ in 0..count {
            instructions.push(self.instruction()?);
        }
        self.end()?;
        Ok(instructions)
    }

    /// See [`PlainBody::inserts`]: reads exactly what [`Decoder::instruction`] reads for the
    /// instructions it hands on.
    fn inserts(mut self, mut each: impl FnMut(Insert<'a>) -> bool) -> Result<bool, CodecError> {
        let count = self.header()?;
        for _ in 0..count {
            let (_, t) = self.tag("instruction tag")?;
            let insert = match t {
                tag::CREATE_OBJECT => Insert::Create {
                    collection: self.name()?,
                    key: self.key()?,
                },
                tag::SET => {
                    let collection = self.name()?;
                    let key = self.key()?;
                    let field = self.name()?;
                    let nested = self
                        .r
                        .len("path length", self.limits.max_depth)
                        .map_err(limit_error(Limit::Depth))?;
                    if nested != 0 {
                        return Ok(false);
                    }
                    let value = self.value(0)?;
                    if matches!(
                        value,
                        Value::Link(_)
                            | Value::List(_)
                            | Value::Set(_)
                            | Value::Dict(_)
                            | Value::Object(_)
                    ) {
                        return Ok(false);
                    }
                    Insert::Set {
                        collection,
                        key,
                        field,
                        value,
                    }
                }
                _ => return Ok(false),
            };
            if !each(insert) {
                return Ok(false);
            }
        }
        self.end()?;
        Ok(true)
    }

    /// How many items to reserve room for ahead of reading `count` of them: never more than
    /// the bytes left (each item takes at least one) nor a fixed cap, so that a large stated
    /// count costs nothing until the items are actually there.
    fn prealloc(&self, count: usize) -> usize {
        const MAX_PREALLOC: usize = 4096;
        count.min(self.r.remaining()).min(MAX_PREALLOC)
    }

    fn tag(&mut self, what: &'static str) -> Result<(usize, u8), CodecError> {
        let offset = self.r.position();
        Ok((offset, self.r.u8(what)?))
    }

    fn bad_tag(what: &'static str, tag: u8, offset: usize) -> CodecError {
        CodecError::BadTag { what, tag, offset }
    }

    /// Reads a string-table index and returns the string.
    fn name(&mut self) -> Result<&'a str, CodecError> {
        let offset = self.r.position();
        let index = self.r.u64("string index")?;
        usize::try_from(index)
            .ok()
            .and_then(|i| self.strings.get(i))
            .copied()
            .ok_or(CodecError::BadStringIndex {
                index,
                count: self.strings.len(),
                offset,
            })
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        let offset = self.r.position();
        let v = self.r.u64(what)?;
        u32::try_from(v).map_err(|_| CodecError::BadScalar {
            what,
            offset,
            input: v.to_string(),
        })
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let bytes = self.r.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn string(&mut self, what: &'static str) -> Result<String, CodecError> {
        let s = self
            .r
            .str(what, self.limits.max_string_bytes)
            .map_err(limit_error(Limit::StringBytes))?;
        Ok(s.to_owned())
    }

    fn instruction(&mut self) -> Result<Instruction, CodecError> {
        let (offset, t) = self.tag("instruction tag")?;
        let instruction = match t {
            tag::ADD_COLLECTION => {
                let name = self.name()?.to_owned();
                let (offset, k) = self.tag("collection kind")?;
                let kind = match k {
                    0 => CollectionKind::TopLevel,
                    1 => CollectionKind::Embedded,
                    2 => CollectionKind::Asymmetric,
                    other => return Err(Self::bad_tag("collection kind", other, offset)),
                };
                let (offset, p) = self.tag("primary key type")?;
                let primary_key = match p {
                    0 => None,
                    1 => Some(PrimaryKeyType::Int),
                    2 => Some(PrimaryKeyType::String),
                    3 => Some(PrimaryKeyType::ObjectId),
                    4 => Some(PrimaryKeyType::Uuid),
                    other => return Err(Self::bad_tag("primary key type", other, offset)),
                };
                Instruction::AddCollection {
                    name,
                    kind,
                    primary_key,
                }
            }
            tag::ADD_PROPERTY => Instruction::AddProperty {
                collection: self.name()?.to_owned(),
                property: self.property()?,
            },
            tag::CREATE_OBJECT => Instruction::CreateObject {
                collection: self.name()?.to_owned(),
                key: self.key()?,
            },
            tag::ERASE_OBJECT => Instruction::EraseObject {
                collection: self.name()?.to_owned(),
                key: self.key()?,
            },
            tag::SET => Instruction::Set {
                path: self.path()?,
                value: self.value(0)?,
            },
            tag::ADD_INTEGER => Instruction::AddInteger {
                path: self.path()?,
                delta: self.r.i64("delta")?,
            },
            tag::LIST_INSERT => Instruction::ListInsert {
                list: self.path()?,
                index: self.u32("index")?,
                prior_size: self.u32("prior size")?,
                value: self.value(0)?,
            },
            tag::LIST_SET => Instruction::ListSet {
                list: self.path()?,
                index: self.u32("index")?,
                prior_size: self.u32("prior size")?,
                value: self.value(0)?,
            },
            tag::LIST_MOVE => Instruction::ListMove {
                list: self.path()?,
                from: self.u32("from index")?,
                to: self.u32("to index")?,
                prior_size: self.u32("prior size")?,
            },
            tag::LIST_ERASE => Instruction::ListErase {
                list: self.path()?,
                index: self.u32("index")?,
                prior_size: self.u32("prior size")?,
            },
            tag::CLEAR => Instruction::Clear { path: self.path()? },
            tag::SET_INSERT => Instruction::SetInsert {
                set: self.path()?,
                value: self.value(0)?,
            },
            tag::SET_ERASE => Instruction::SetErase {
                set: self.path()?,
                value: self.value(0)?,
            },
            tag::DICT_ERASE => Instruction::DictErase {
                dict: self.path()?,
                key: self.name()?.to_owned(),
            },
            other => return Err(Self::bad_tag("instruction", other, offset)),
        };
        Ok(instruction)
    }

    fn property(&mut self) -> Result<Property, CodecError> {
        let name = self.name()?.to_owned();
        let (offset, t) = self.tag("property type")?;
        let ty = match t {
            0 => ScalarType::Bool,
            1 => ScalarType::Int,
            2 => ScalarType::Double,
            3 => ScalarType::String,
            4 => ScalarType::Binary,
            5 => ScalarType::Date,
            6 => ScalarType::ObjectId,
            7 => ScalarType::Uuid,
            8 => ScalarType::Decimal,
            9 => ScalarType::Mixed,
            10 => ScalarType::Counter,
            11 => ScalarType::Link(self.name()?.to_owned()),
            12 => ScalarType::Embedded(self.name()?.to_owned()),
            other => return Err(Self::bad_tag("property type", other, offset)),
        };
        let (offset, c) = self.tag("container")?;
        let container = match c {
            0 => Container::Single,
            1 => Container::List,
            2 => Container::Set,
            3 => Container::Dictionary,
            other => return Err(Self::bad_tag("container", other, offset)),
        };
        let (offset, flags) = self.tag("property flags")?;
        if flags & !0b11 != 0 {
            return Err(Self::bad_tag("property flags", flags, offset));
        }
        Ok(Property {
            name,
            ty,
            container,
            optional: flags & 1 != 0,
            indexed: flags & 2 != 0,
        })
    }

    fn key(&mut self) -> Result<PrimaryKey, CodecError> {
        let (offset, t) = self.tag("primary key tag")?;
        Ok(match t {
            0 => PrimaryKey::Int(self.r.i64("int key")?),
            1 => PrimaryKey::String(self.string("string key")?),
            2 => PrimaryKey::ObjectId(ObjectId(self.array("objectId key")?)),
            3 => PrimaryKey::Uuid(Uuid(self.array("uuid key")?)),
            other => return Err(Self::bad_tag("primary key", other, offset)),
        })
    }

    fn path(&mut self) -> Result<Path, CodecError> {
        let collection = self.name()?.to_owned();
        let key = self.key()?;
        let field = self.name()?.to_owned();
        let count = self
            .r
            .len("path length", self.limits.max_depth)
            .map_err(limit_error(Limit::Depth))?;
        let mut nested = Vec::with_capacity(self.prealloc(count));
        for _ in 0..count {
            let (offset, t) = self.tag("path element tag")?;
            nested.push(match t {
                0 => PathElement::Field(self.name()?.to_owned()),
                1 => PathElement::Index(self.u32("path index")?),
                2 => PathElement::Key(self.name()?.to_owned()),
                other => return Err(Self::bad_tag("path element", other, offset)),
            });
        }
        Ok(Path {
            collection,
            key,
            field,
            nested,
        })
    }

    /// Reads a container's element count, charging it to the element budget, and checks the
    /// nesting depth of the container (`depth` counts the containers around it).
    fn container_len(&mut self, depth: usize) -> Result<usize, CodecError> {
        let offset = self.r.position();
        if depth >= self.limits.max_depth {
            return Err(CodecError::LimitExceeded {
                limit: Limit::Depth,
                offset,
                found: depth as u64 + 1,
                max: self.limits.max_depth as u64,
            });
        }
        let left = self.limits.max_elements.saturating_sub(self.elements);
        let count = self.r.len("element count", left).map_err(|e| match e {
            WireError::TooLong { len, .. } => CodecError::LimitExceeded {
                limit: Limit::Elements,
                offset,
                found: (self.elements as u64).saturating_add(len),
                max: self.limits.max_elements as u64,
            },
            other => CodecError::Wire(other),
        })?;
        self.elements += count;
        Ok(count)
    }

    /// An embedded object's fields. The encoder writes them in name order, so they are taken as
    /// they come; fields in another order are sorted once (inserting each would move O(N)
    /// fields every time), and a name given twice is an error at its second occurrence.
    fn fields(&mut self, depth: usize) -> Result<Document, CodecError> {
        let count = self.container_len(depth)?;
        let mut fields: Vec<(String, Value)> = Vec::with_capacity(self.prealloc(count));
        let mut offsets = Vec::with_capacity(self.prealloc(count));
        let mut ascending = true;
        for _ in 0..count {
            offsets.push(self.r.position());
            let name = self.name()?;
            ascending = ascending && fields.last().is_none_or(|(last, _)| last.as_str() < name);
            let item = self.value(depth + 1)?;
            fields.push((name.to_owned(), item));
        }
        if !ascending {
            let mut order: Vec<usize> = (0..fields.len()).collect();
            crate::sort::sort_by(&mut order, |a, b| fields[*a].0.cmp(&fields[*b].0));
            let repeated = order
                .windows(2)
                .filter(|pair| fields[pair[0]].0 == fields[pair[1]].0)
                .map(|pair| pair[1])
                .min();
            if let Some(i) = repeated {
                return Err(CodecError::DuplicateKey {
                    offset: offsets[i],
                    key: std::mem::take(&mut fields[i].0),
                });
            }
        }
        Ok(Document::from_entries(fields))
    }

    fn value(&mut self, depth: usize) -> Result<Value, CodecError> {
        let (offset, t) = self.tag("value tag")?;
        Ok(match t {
            vtag::NULL => Value::Null,
            vtag::FALSE => Value::Bool(false),
            vtag::TRUE => Value::Bool(true),
            vtag::INT => Value::Int(self.r.i64("int")?),
            vtag::DOUBLE => {
                Value::Double(f64::from_bits(u64::from_le_bytes(self.array("double")?)))
            }
            vtag::STRING => Value::String(self.string("string")?),
            vtag::BINARY => Value::Binary(
                self.r
                    .bytes("binary", self.limits.max_string_bytes)
                    .map_err(limit_error(Limit::StringBytes))?
                    .to_vec(),
            ),
            vtag::DATE => Value::Date(self.r.i64("date")?),
            vtag::OBJECT_ID => Value::ObjectId(ObjectId(self.array("objectId")?)),
            vtag::UUID => Value::Uuid(Uuid(self.array("uuid")?)),
            vtag::DECIMAL => {
                let offset = self.r.position();
                let text = self
                    .r
                    .str("decimal", self.limits.max_string_bytes)
                    .map_err(limit_error(Limit::StringBytes))?;
                Value::Decimal(Decimal::parse(text).map_err(|_| CodecError::BadScalar {
                    what: "decimal",
                    offset,
                    input: text.to_owned(),
                })?)
            }
            vtag::LINK => Value::Link(Link {
                collection: self.name()?.to_owned(),
                key: self.key()?,
            }),
            vtag::LIST | vtag::SET => {
                let count_offset = self.r.position();
                let count = self.container_len(depth)?;
                let mut items = Vec::with_capacity(self.prealloc(count));
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                if t == vtag::LIST {
                    Value::List(items.into())
                } else if items.windows(2).all(|w| w[0] < w[1]) {
                    Value::Set(items.into())
                } else {
                    return Err(CodecError::UnsortedSet {
                        offset: count_offset,
                    });
                }
            }
            vtag::DICT => {
                let count = self.container_len(depth)?;
                let mut map = BTreeMap::new();
                for _ in 0..count {
                    let key_offset = self.r.position();
                    let key = self.name()?;
                    let item = self.value(depth + 1)?;
                    if map.insert(key.to_owned(), item).is_some() {
                        return Err(CodecError::DuplicateKey {
                            offset: key_offset,
                            key: key.to_owned(),
                        });
                    }
                }
                Value::Dict(map)
            }
            vtag::OBJECT => Value::Object(self.fields(depth)?),
            other => return Err(Self::bad_tag("value", other, offset)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FORMAT_DOC: &str = include_str!("../../../docs/changeset-format.md");

    fn key_path(field: &str) -> Path {
        Path::field("Task", PrimaryKey::Int(5), field)
    }

    fn decode(body: &[u8]) -> Result<Vec<Instruction>, CodecError> {
        decode_changeset(body, &DecodeLimits::default())
    }

    #[test]
    fn names_past_the_scanned_table_keep_their_indices() {
        // More names than the encoder scans: the table switches to its hash index midway and
        // every name, old or new, keeps one index.
        let names: Vec<String> = (0..3 * SCANNED_NAMES).map(|i| format!("f{i}")).collect();
        let instructions: Vec<Instruction> = names
            .iter()
            .chain(names.iter().rev())
            .chain(&names)
            .map(|field| Instruction::Set {
                path: key_path(field),
                value: Value::Int(1),
            })
            .collect();
        let body = encode_changeset(&instructions);
        assert_eq!(decode(&body).unwrap(), instructions);
    }

    /// The hex blocks of the format document, in order.
    fn doc_vectors() -> Vec<Vec<u8>> {
        let mut vectors = Vec::new();
        let mut current: Option<Vec<u8>> = None;
        for line in FORMAT_DOC.lines() {
            match (&mut current, line.trim()) {
                (None, "```hex") => current = Some(Vec::new()),
                (Some(_), "```") => vectors.extend(current.take()),
                (Some(bytes), text) => {
                    let hex = text.split('#').next().unwrap_or_default();
                    for pair in hex.split_whitespace() {
                        bytes.push(u8::from_str_radix(pair, 16).expect("hex byte in the doc"));
                    }
                }
                (None, _) => {}
            }
        }
        vectors
    }

    /// The instructions each of the document's vectors encodes, in the document's order.
    fn expected_vectors() -> Vec<Vec<Instruction>> {
        let create_and_set = vec![
            Instruction::CreateObject {
                collection: "Task".into(),
                key: PrimaryKey::Int(5),
            },
            Instruction::Set {
                path: key_path("name"),
                value: Value::from("hi"),
            },
        ];
        let schema_and_list = vec![
            Instruction::AddCollection {
                name: "Task".into(),
                kind: CollectionKind::TopLevel,
                primary_key: Some(PrimaryKeyType::String),
            },
            Instruction::AddProperty {
                collection: "Task".into(),
                property: Property {
                    name: "tags".into(),
                    ty: ScalarType::String,
                    container: Container::List,
                    optional: true,
                    indexed: false,
                },
            },
            Instruction::ListInsert {
                list: Path::field("Task", PrimaryKey::String("k".into()), "tags"),
                index: 0,
                value: Value::Null,
                prior_size: 0,
            },
        ];
        let nested = vec![Instruction::Set {
            path: key_path("sub")
                .child(PathElement::Field("tags".into()))
                .child(PathElement::Index(1)),
            value: Value::Object(Document::from([
                ("n".to_owned(), Value::Double(1.5)),
                (
                    "s".to_owned(),
                    Value::set_from(vec![Value::Int(-1), Value::Bool(true)]),
                ),
            ])),
        }];
        vec![
            Vec::new(),
            create_and_set.clone(),
            schema_and_list,
            nested,
            create_and_set,
        ]
    }

    #[test]
    fn format_doc_vectors_decode_and_encode() {
        let vectors = doc_vectors();
        let expected = expected_vectors();
        assert!(vectors.len() >= 3);
        assert_eq!(vectors.len(), expected.len());
        for (bytes, instructions) in vectors.iter().zip(&expected) {
            assert_eq!(&decode(bytes).unwrap(), instructions, "vector {bytes:02x?}");
            if bytes.first() == Some(&FORMAT_VERSION) {
                assert_eq!(&encode_changeset(instructions), bytes);
            }
        }
        assert!(vectors
            .iter()
            .any(|v| v.first() == Some(&(FORMAT_VERSION | COMPRESSED_FLAG))));
    }

    /// A changeset whose plain body is well over the compression threshold and repetitive.
    fn big_changeset() -> Vec<Instruction> {
        (0..200)
            .map(|i| Instruction::Set {
                path: key_path("name"),
                value: Value::String(format!("value number {i}")),
            })
            .collect()
    }

    #[test]
    fn large_repetitive_bodies_are_compressed() {
        let instructions = big_changeset();
        let body = encode_changeset(&instructions);
        assert_eq!(body[0], FORMAT_VERSION | COMPRESSED_FLAG);
        assert!(body.len() < 1024);
        assert_eq!(decode(&body).unwrap(), instructions);
        let sizes = body_sizes(&body);
        assert!(sizes.compressed);
        assert_eq!(sizes.encoded, body.len() as u64);
        // Only plain bodies over the threshold are compressed.
        assert!(
            sizes.uncompressed > COMPRESSION_THRESHOLD as u64 + 1,
            "{sizes:?}"
        );
    }

    #[test]
    fn plain_and_damaged_bodies_report_their_own_size() {
        let body = encode_changeset(&[]);
        let plain = BodySizes {
            encoded: body.len() as u64,
            uncompressed: body.len() as u64,
            compressed: false,
        };
        assert_eq!(body_sizes(&body), plain);
        for damaged in [
            &[][..],
            &[FORMAT_VERSION | COMPRESSED_FLAG][..],
            &[0x81, 0xff][..],
        ] {
            let sizes = body_sizes(damaged);
            assert!(!sizes.compressed && sizes.uncompressed == damaged.len() as u64);
        }
    }

    #[test]
    fn incompressible_bodies_stay_plain() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let instructions = vec![Instruction::Set {
            path: key_path("blob"),
            value: Value::Binary(noise),
        }];
        let body = encode_changeset(&instructions);
        assert_eq!(body[0], FORMAT_VERSION);
        assert_eq!(decode(&body).unwrap(), instructions);
    }

    #[test]
    fn small_bodies_are_not_compressed() {
        let instructions = vec![Instruction::Set {
            path: key_path("name"),
            value: Value::String("a".repeat(900)),
        }];
        assert_eq!(encode_changeset(&instructions)[0], FORMAT_VERSION);
    }

    fn limit_of(result: Result<Vec<Instruction>, CodecError>) -> Limit {
        match result {
            Err(CodecError::LimitExceeded { limit, .. }) => limit,
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn limit_body_bytes() {
        let body = encode_changeset(&expected_vectors()[1]);
        let limits = DecodeLimits {
            max_body_bytes: body.len() - 1,
            ..DecodeLimits::default()
        };
        assert_eq!(limit_of(decode_changeset(&body, &limits)), Limit::BodyBytes);
        let limits = DecodeLimits {
            max_body_bytes: body.len(),
            ..DecodeLimits::default()
        };
        assert!(decode_changeset(&body, &limits).is_ok());
    }

    #[test]
    fn limit_inflated_bytes() {
        let body = encode_changeset(&big_changeset());
        let mut r = Reader::new(&body[1..]);
        let stated = r.u64("size").unwrap() as usize;
        let limits = DecodeLimits {
            max_inflated_bytes: stated - 1,
            ..DecodeLimits::default()
        };
        assert_eq!(
            limit_of(decode_changeset(&body, &limits)),
            Limit::InflatedBytes
        );
        let limits = DecodeLimits {
            max_inflated_bytes: stated,
            ..DecodeLimits::default()
        };
        assert!(decode_changeset(&body, &limits).is_ok());
    }

    #[test]
    fn limit_instructions() {
        let body = encode_changeset(&expected_vectors()[1]);
        let limits = DecodeLimits {
            max_instructions: 1,
            ..DecodeLimits::default()
        };
        assert_eq!(
            limit_of(decode_changeset(&body, &limits)),
            Limit::Instructions
        );
    }

    #[test]
    fn limit_strings() {
        let body = encode_changeset(&expected_vectors()[1]);
        let limits = DecodeLimits {
            max_strings: 1,
            ..DecodeLimits::default()
        };
        assert_eq!(limit_of(decode_changeset(&body, &limits)), Limit::Strings);
    }

    #[test]
    fn limit_string_bytes() {
        let limits = DecodeLimits {
            max_string_bytes: 4,
            ..DecodeLimits::default()
        };
        let long_name = encode_changeset(&[Instruction::Clear {
            path: key_path("names"),
        }]);
        assert_eq!(
            limit_of(decode_changeset(&long_name, &limits)),
            Limit::StringBytes
        );
        for value in [
            Value::from("hello"),
            Value::Binary(vec![0; 5]),
            Value::Decimal(Decimal::parse("12345").unwrap()),
        ] {
            let body = encode_changeset(&[Instruction::Set {
                path: key_path("n"),
                value,
            }]);
            assert_eq!(
                limit_of(decode_changeset(&body, &limits)),
                Limit::StringBytes
            );
        }
        let string_key = encode_changeset(&[Instruction::CreateObject {
            collection: "T".into(),
            key: PrimaryKey::String("hello".into()),
        }]);
        assert_eq!(
            limit_of(decode_changeset(&string_key, &limits)),
            Limit::StringBytes
        );
    }

    #[test]
    fn limit_depth() {
        let limits = DecodeLimits {
            max_depth: 2,
            ..DecodeLimits::default()
        };
        let nested = |levels: usize| {
            let mut v = Value::Int(1);
            for _ in 0..levels {
                v = Value::List(vec![v].into());
            }
            encode_changeset(&[Instruction::Set {
                path: key_path("n"),
                value: v,
            }])
        };
        assert!(decode_changeset(&nested(2), &limits).is_ok());
        assert_eq!(
            limit_of(decode_changeset(&nested(3), &limits)),
            Limit::Depth
        );
        let deep_path = encode_changeset(&[Instruction::Clear {
            path: key_path("n")
                .child(PathElement::Index(0))
                .child(PathElement::Index(0))
                .child(PathElement::Index(0)),
        }]);
        assert_eq!(
            limit_of(decode_changeset(&deep_path, &limits)),
            Limit::Depth
        );
    }

    #[test]
    fn limit_elements_counts_the_whole_changeset() {
        let limits = DecodeLimits {
            max_elements: 5,
            ..DecodeLimits::default()
        };
        let set = |n: i64| Instruction::Set {
            path: key_path("n"),
            value: Value::List((0..n).map(Value::Int).collect()),
        };
        assert!(decode_changeset(&encode_changeset(&[set(5)]), &limits).is_ok());
        assert_eq!(
            limit_of(decode_changeset(&encode_changeset(&[set(6)]), &limits)),
            Limit::Elements
        );
        assert_eq!(
            limit_of(decode_changeset(
                &encode_changeset(&[set(3), set(3)]),
                &limits
            )),
            Limit::Elements
        );
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        // One string, then an instruction count of u64::MAX >> 1, then nothing.
        let mut body = vec![FORMAT_VERSION, 0];
        write_u64(&mut body, u64::MAX >> 1);
        let limits = DecodeLimits {
            max_instructions: usize::MAX,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode_changeset(&body, &limits),
            Err(CodecError::Wire(WireError::Truncated { .. }))
        ));
    }

    #[test]
    fn malformed_bodies_are_reported() {
        let good = encode_changeset(&expected_vectors()[1]);
        assert!(matches!(decode(&[]), Err(CodecError::Wire(_))));
        assert_eq!(
            decode(&[0x02, 0, 0]),
            Err(CodecError::UnsupportedVersion { version: 2 })
        );
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(CodecError::Wire(WireError::Truncated { .. }))
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            decode(&trailing),
            Err(CodecError::TrailingBytes {
                offset: good.len() - 1,
                count: 1
            })
        );
        assert_eq!(
            decode(&[0x01, 0x00, 0x01, 0x7f]),
            Err(CodecError::BadTag {
                what: "instruction",
                tag: 0x7f,
                offset: 2
            })
        );
        // CreateObject naming string 3 of an empty table.
        assert_eq!(
            decode(&[0x01, 0x00, 0x01, 0x03, 0x03]),
            Err(CodecError::BadStringIndex {
                index: 3,
                count: 0,
                offset: 3
            })
        );
        // A one-string table holding invalid UTF-8.
        assert!(matches!(
            decode(&[0x01, 0x01, 0x01, 0xff, 0x00]),
            Err(CodecError::Wire(WireError::InvalidUtf8 { offset: 1 }))
        ));
    }

    /// Table ["T", "f"], then one Set of T/0.f to the value bytes given.
    fn set_with_value(value: &[u8]) -> Vec<u8> {
        let mut body = vec![
            0x01, 0x02, 0x01, b'T', 0x01, b'f', 0x01, 0x05, 0x00, 0x00, 0x00,
        ];
        body.extend_from_slice(&[0x01, 0x00]);
        body.extend_from_slice(value);
        body
    }

    #[test]
    fn embedded_object_fields_in_any_order_are_read_in_name_order() {
        let Ok(instructions) = decode(&set_with_value(&[0x0f, 0x02, 0x01, 0x00, 0x00, 0x01]))
        else {
            panic!("an object with unsorted fields is valid");
        };
        let Some(Instruction::Set {
            value: Value::Object(fields),
            ..
        }) = instructions.first()
        else {
            panic!("expected a set of an embedded object, got {instructions:?}");
        };
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(names, ["T", "f"]);
        assert_eq!(fields.get("T"), Some(&Value::Bool(false)));
    }

    #[test]
    fn bad_values_are_reported() {
        assert!(decode(&set_with_value(&[0x03, 0x02])).is_ok());
        assert!(matches!(
            decode(&set_with_value(&[0x42])),
            Err(CodecError::BadTag {
                what: "value",
                tag: 0x42,
                ..
            })
        ));
        assert!(matches!(
            decode(&set_with_value(&[0x0a, 0x03, b'1', b'.', b'x'])),
            Err(CodecError::BadScalar {
                what: "decimal",
                ..
            })
        ));
        assert!(matches!(
            decode(&set_with_value(&[0x0d, 0x02, 0x03, 0x04, 0x03, 0x02])),
            Err(CodecError::UnsortedSet { .. })
        ));
        assert!(matches!(
            decode(&set_with_value(&[0x0d, 0x02, 0x03, 0x02, 0x03, 0x02])),
            Err(CodecError::UnsortedSet { .. })
        ));
        assert!(matches!(
            decode(&set_with_value(&[0x0e, 0x02, 0x01, 0x00, 0x01, 0x00])),
            Err(CodecError::DuplicateKey { .. })
        ));
        let repeated_at = |value: &[u8]| match decode(&set_with_value(value)) {
            Err(CodecError::DuplicateKey { offset, key }) => Some((offset, key)),
            _ => None,
        };
        let (adjacent, key) = repeated_at(&[0x0f, 0x02, 0x01, 0x00, 0x01, 0x00]).unwrap();
        assert_eq!(key, "f");
        assert_eq!(
            repeated_at(&[0x0f, 0x03, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00]),
            Some((adjacent + 2, "f".to_owned()))
        );
        let mut big_index = vec![
            0x01, 0x01, 0x01, b'T', 0x01, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        write_u64(&mut big_index, 1 << 32);
        big_index.push(0x00);
        assert!(matches!(
            decode(&big_index),
            Err(CodecError::BadScalar { what: "index", .. })
        ));
    }

    /// A compressed body with the given stated size around the given zlib stream.
    fn compressed(stated: u64, stream: &[u8]) -> Vec<u8> {
        let mut body = vec![FORMAT_VERSION | COMPRESSED_FLAG];
        write_u64(&mut body, stated);
        body.extend_from_slice(stream);
        body
    }

    fn zlib(plain: &[u8]) -> Vec<u8> {
        miniz_oxide::deflate::compress_to_vec_zlib(plain, 6)
    }

    #[test]
    fn the_reused_compressor_writes_what_a_fresh_one_writes() {
        // Bodies of several sizes, one after another on this thread's compressor, the largest
        // over the output's first allocation: each is what a new compressor makes of it, and
        // inflates back.
        for n in [2_000usize, 50, 300_000, 5_000] {
            let plain: Vec<u8> = (0..n).map(|i| (i * 7 % 251 / 3) as u8).collect();
            let body = compress(&plain).unwrap();
            let mut fresh = body.get(..1 + encoded_len(n)).unwrap().to_vec();
            fresh.extend(miniz_oxide::deflate::compress_to_vec_zlib(&plain, 1));
            assert_eq!(body, fresh, "{n}");
            let stream = body.get(1 + encoded_len(n)..).unwrap();
            assert_eq!(inflate(stream, n as u64, 0).unwrap(), plain, "{n}");
        }
    }

    fn encoded_len(n: usize) -> usize {
        let mut v = Vec::new();
        write_u64(&mut v, n as u64);
        v.len()
    }

    #[test]
    fn bad_compressed_bodies_are_reported() {
        let plain = [0x00, 0x00];
        assert_eq!(decode(&compressed(2, &zlib(&plain))), Ok(Vec::new()));
        assert_eq!(
            decode(&compressed(3, &zlib(&plain))),
            Err(CodecError::InflatedSizeMismatch {
                stated: 3,
                actual: 2
            })
        );
        assert!(matches!(
            decode(&compressed(1, &zlib(&plain))),
            Err(CodecError::Decompression { .. })
        ));
        let stream = zlib(&plain);
        assert!(matches!(
            decode(&compressed(2, &stream[..stream.len() - 1])),
            Err(CodecError::Decompression { .. })
        ));
        assert!(matches!(
            decode(&compressed(2, b"not zlib at all")),
            Err(CodecError::Decompression { .. })
        ));
        let mut extra = stream.clone();
        extra.push(7);
        assert_eq!(
            decode(&compressed(2, &extra)),
            Err(CodecError::TrailingBytes {
                offset: 2 + stream.len(),
                count: 1
            })
        );
    }

    #[test]
    fn compressed_bomb_stops_at_the_limit() {
        let plain = vec![0u8; 1 << 20];
        let limits = DecodeLimits {
            max_inflated_bytes: 4096,
            ..DecodeLimits::default()
        };
        // Lying about the size: the stream is much larger than stated.
        let result = decode_changeset(&compressed(4096, &zlib(&plain)), &limits);
        assert!(matches!(result, Err(CodecError::Decompression { .. })));
    }

    #[test]
    fn error_messages_are_lowercase_and_carry_offsets() {
        let errors = [
            decode(&[0x01, 0x00, 0x01, 0x7f]).unwrap_err(),
            decode(&[0x09]).unwrap_err(),
            decode(&[0x01, 0x00, 0x01, 0x03, 0x03]).unwrap_err(),
            decode(&set_with_value(&[0x0a, 0x01, b'x'])).unwrap_err(),
        ];
        for e in errors {
            let text = e.to_string();
            assert!(text.starts_with(|c: char| !c.is_uppercase()), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
        assert_eq!(
            decode(&[0x01, 0x00, 0x01, 0x7f]).unwrap_err().to_string(),
            "unknown instruction tag 0x7f at offset 2"
        );
    }

    proptest! {
        #[test]
        fn instructions_round_trip(instructions in proptest::collection::vec(crate::changeset::arbitrary::instruction(), 0..12)) {
            let body = encode_changeset(&instructions);
            prop_assert_eq!(decode(&body)?, instructions);
        }

        #[test]
        fn compressed_instructions_round_trip(
            instructions in proptest::collection::vec(crate::changeset::arbitrary::instruction(), 1..4),
        ) {
            let repeated: Vec<Instruction> =
                instructions.iter().cycle().take(instructions.len() * 400).cloned().collect();
            let body = encode_changeset(&repeated);
            prop_assert_eq!(body[0], FORMAT_VERSION | COMPRESSED_FLAG);
            prop_assert_eq!(decode(&body)?, repeated);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let mut plain = vec![FORMAT_VERSION];
            plain.extend_from_slice(&bytes);
            let _ = decode(&plain);
            let _ = decode(&compressed(bytes.len() as u64, &zlib(&bytes)));
        }

        #[test]
        fn corrupted_bodies_never_panic(
            instructions in proptest::collection::vec(crate::changeset::arbitrary::instruction(), 1..6),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut body = encode_changeset(&instructions);
            for (at, byte) in flips {
                let i = at.index(body.len());
                body[i] = byte;
            }
            if let Ok(decoded) = decode(&body) {
                prop_assert_eq!(decode(&encode_changeset(&decoded))?, decoded);
            }
            inserts_agree_with_decode(&body);
        }

        #[test]
        fn inserts_of_arbitrary_bytes_agree_with_decode(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut plain = vec![FORMAT_VERSION];
            plain.extend_from_slice(&bytes);
            inserts_agree_with_decode(&plain);
        }

        #[test]
        fn inserts_of_arbitrary_instructions_agree_with_decode(
            instructions in proptest::collection::vec(crate::changeset::arbitrary::instruction(), 0..12),
        ) {
            inserts_agree_with_decode(&encode_changeset(&instructions));
        }
    }

    /// What [`PlainBody::inserts`] hands on, turned back into instructions, is what
    /// [`decode_changeset`] decodes when it reads the whole body, and its errors are the same.
    fn inserts_agree_with_decode(body: &[u8]) {
        let limits = DecodeLimits::default();
        let Ok(plain) = PlainBody::new(body, &limits) else {
            return;
        };
        let mut seen = Vec::new();
        let inserts = plain.inserts(&limits, |insert| {
            seen.push(match insert {
                Insert::Create { collection, key } => Instruction::CreateObject {
                    collection: collection.into(),
                    key,
                },
                Insert::Set {
                    collection,
                    key,
                    field,
                    value,
                } => Instruction::Set {
                    path: Path::field(collection, key, field),
                    value,
                },
            });
            true
        });
        match (inserts, decode(body)) {
            (Ok(true), decoded) => assert_eq!(decoded, Ok(seen)),
            (Ok(false), Ok(decoded)) => assert!(decoded.starts_with(&seen)),
            (Ok(false), Err(_)) => {}
            (Err(e), decoded) => assert_eq!(decoded, Err(e)),
        }
    }
}
