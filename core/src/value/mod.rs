//! Values stored in Eddy objects: scalars, links, and the containers (lists, sets, dictionaries,
//! embedded objects) that nest them, with the one total order every part of Eddy agrees on.

mod ejson;
mod elements;
mod nearest_double;

pub(crate) use ejson::{canonical_key_text, finite_double_text, push_json_string, read_double};
pub use ejson::{
    document_from_ejson, document_to_ejson, parse_ejson, EjsonError, EjsonMode, MAX_EJSON_DEPTH,
};
pub use elements::{Elements, Iter as ElementsIter, MAX_CHUNK};

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use crate::quote::Quoted;
use crate::sorted_map::SortedMap;

/// The fields of an object or embedded object, by property name.
///
/// Kept sorted by name so that iteration (and therefore encoding, hashing and comparison) is
/// deterministic on every platform, in a `Vec`: an object has the few fields its schema names,
/// and a `BTreeMap` would reserve a node of eleven entries for each (see `sorted_map.rs`).
pub type Document = SortedMap<String, Value>;

/// A 12-byte MongoDB-compatible object identifier.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectId(pub [u8; 12]);

/// A 16-byte RFC 4122 UUID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Uuid(pub [u8; 16]);

/// A decimal number kept in its canonical textual form (for example `"-12.50"`).
///
/// Eddy never does arithmetic on decimals; it stores, compares and transports them. The text
/// is validated on construction, so every `Decimal` parses as a number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Decimal(String);

/// The primary key (`_id`) of a top-level object.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PrimaryKey {
    /// A 64-bit signed integer key.
    Int(i64),
    /// A string key.
    String(String),
    /// An object-id key, the default for new collections.
    ObjectId(ObjectId),
    /// A UUID key.
    Uuid(Uuid),
}

/// A reference to a top-level object of a collection.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Link {
    /// The collection the target lives in.
    pub collection: String,
    /// The target's primary key.
    pub key: PrimaryKey,
}

/// Any value a property can hold.
///
/// `Value` has a total order (see [`Value::cmp`]): values of different kinds order by kind, and
/// doubles use IEEE total ordering, so `NaN == NaN`. Sets are kept sorted in that order.
#[derive(Clone)]
pub enum Value {
    /// The absence of a value (an optional property that is not set).
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A 64-bit signed integer (also the representation of counters).
    Int(i64),
    /// A 64-bit IEEE float.
    Double(f64),
    /// A UTF-8 string.
    String(String),
    /// Arbitrary bytes.
    Binary(Vec<u8>),
    /// A point in time, in milliseconds since the Unix epoch.
    Date(i64),
    /// An object id.
    ObjectId(ObjectId),
    /// A UUID.
    Uuid(Uuid),
    /// A decimal number.
    Decimal(Decimal),
    /// A link to a top-level object.
    Link(Link),
    /// An ordered list.
    List(Elements),
    /// A set, kept sorted in the total order of `Value` and free of duplicates.
    Set(Elements),
    /// A dictionary from string keys to values.
    Dict(BTreeMap<String, Value>),
    /// An embedded object.
    Object(Document),
}

/// The kind of a [`Value`], used in error messages and for ordering values of different kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ValueKind {
    /// [`Value::Null`].
    Null,
    /// [`Value::Bool`].
    Bool,
    /// Both [`Value::Int`] and [`Value::Double`] compare as numbers; `Int` sorts by this kind.
    Int,
    /// [`Value::Double`].
    Double,
    /// [`Value::Decimal`].
    Decimal,
    /// [`Value::String`].
    String,
    /// [`Value::Binary`].
    Binary,
    /// [`Value::Date`].
    Date,
    /// [`Value::ObjectId`].
    ObjectId,
    /// [`Value::Uuid`].
    Uuid,
    /// [`Value::Link`].
    Link,
    /// [`Value::List`].
    List,
    /// [`Value::Set`].
    Set,
    /// [`Value::Dict`].
    Dict,
    /// [`Value::Object`].
    Object,
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ValueKind::Null => "null",
            ValueKind::Bool => "bool",
            ValueKind::Int => "int",
            ValueKind::Double => "double",
            ValueKind::Decimal => "decimal",
            ValueKind::String => "string",
            ValueKind::Binary => "binary",
            ValueKind::Date => "date",
            ValueKind::ObjectId => "objectId",
            ValueKind::Uuid => "uuid",
            ValueKind::Link => "link",
            ValueKind::List => "list",
            ValueKind::Set => "set",
            ValueKind::Dict => "dictionary",
            ValueKind::Object => "embedded object",
        };
        f.write_str(name)
    }
}

impl Value {
    /// The kind of this value.
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Null => ValueKind::Null,
            Value::Bool(_) => ValueKind::Bool,
            Value::Int(_) => ValueKind::Int,
            Value::Double(_) => ValueKind::Double,
            Value::String(_) => ValueKind::String,
            Value::Binary(_) => ValueKind::Binary,
            Value::Date(_) => ValueKind::Date,
            Value::ObjectId(_) => ValueKind::ObjectId,
            Value::Uuid(_) => ValueKind::Uuid,
            Value::Decimal(_) => ValueKind::Decimal,
            Value::Link(_) => ValueKind::Link,
            Value::List(_) => ValueKind::List,
            Value::Set(_) => ValueKind::Set,
            Value::Dict(_) => ValueKind::Dict,
            Value::Object(_) => ValueKind::Object,
        }
    }

    /// Whether this value is [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Builds a set value from arbitrary items: sorts them and removes duplicates.
    pub fn set_from(mut items: Vec<Value>) -> Value {
        crate::sort::sort(&mut items);
        items.dedup();
        Value::Set(items.into())
    }

    /// The value as a number, if it is an int, a double or a decimal.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Double(d) => Some(*d),
            Value::Decimal(d) => Some(d.to_f64()),
            _ => None,
        }
    }

    /// Rank used to order values of different kinds; numbers share one rank.
    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Double(_) | Value::Decimal(_) => 2,
            Value::String(_) => 3,
            Value::Binary(_) => 4,
            Value::Date(_) => 5,
            Value::ObjectId(_) => 6,
            Value::Uuid(_) => 7,
            Value::Link(_) => 8,
            Value::List(_) => 9,
            Value::Set(_) => 10,
            Value::Dict(_) => 11,
            Value::Object(_) => 12,
        }
    }
}

fn cmp_numbers(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Double(x), Value::Double(y)) => x.total_cmp(y),
        (Value::Decimal(x), Value::Decimal(y)) => x.cmp(y),
        _ => {
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            // Numerically equal values of different kinds still need a deterministic order so
            // that the order stays total: fall back to the kind.
            x.total_cmp(&y).then_with(|| a.kind().cmp(&b.kind()))
        }
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_rank = self.rank().cmp(&other.rank());
        if by_rank != Ordering::Equal {
            return by_rank;
        }
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::String(a), Value::String(b)) => a.cmp(b),
            (Value::Binary(a), Value::Binary(b)) => a.cmp(b),
            (Value::Date(a), Value::Date(b)) => a.cmp(b),
            (Value::ObjectId(a), Value::ObjectId(b)) => a.cmp(b),
            (Value::Uuid(a), Value::Uuid(b)) => a.cmp(b),
            (Value::Link(a), Value::Link(b)) => a.cmp(b),
            (Value::List(a), Value::List(b)) | (Value::Set(a), Value::Set(b)) => a.cmp(b),
            (Value::Dict(a), Value::Dict(b)) => a.cmp(b),
            (Value::Object(a), Value::Object(b)) => a.cmp(b),
            _ => cmp_numbers(self, other),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Double(d) => f.write_str(&ejson::double_text(*d)),
            Value::String(s) => write!(f, "{}", Quoted(s)),
            Value::Binary(b) => write!(f, "bin{b:02x?}"),
            Value::Date(ms) => write!(f, "date({ms})"),
            Value::ObjectId(o) => write!(f, "{o:?}"),
            Value::Uuid(u) => write!(f, "{u:?}"),
            Value::Decimal(d) => write!(f, "{d:?}"),
            Value::Link(l) => write!(f, "link({}:{:?})", l.collection, l.key),
            Value::List(l) => f.debug_list().entries(l).finish(),
            Value::Set(s) => f.debug_set().entries(s).finish(),
            Value::Dict(d) => f
                .debug_map()
                .entries(d.iter().map(|(k, v)| (Quoted(k), v)))
                .finish(),
            Value::Object(d) => f
                .debug_map()
                .entries(d.iter().map(|(k, v)| (Quoted(k), v)))
                .finish(),
        }
    }
}

impl From<PrimaryKey> for Value {
    fn from(key: PrimaryKey) -> Self {
        match key {
            PrimaryKey::Int(i) => Value::Int(i),
            PrimaryKey::String(s) => Value::String(s),
            PrimaryKey::ObjectId(o) => Value::ObjectId(o),
            PrimaryKey::Uuid(u) => Value::Uuid(u),
        }
    }
}

impl TryFrom<Value> for PrimaryKey {
    type Error = ValueKind;

    /// Converts a value into a primary key; fails with the value's kind if that kind cannot be
    /// a primary key.
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        match value {
            Value::Int(i) => Ok(PrimaryKey::Int(i)),
            Value::String(s) => Ok(PrimaryKey::String(s)),
            Value::ObjectId(o) => Ok(PrimaryKey::ObjectId(o)),
            Value::Uuid(u) => Ok(PrimaryKey::Uuid(u)),
            other => Err(other.kind()),
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Double(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

impl fmt::Debug for PrimaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrimaryKey::Int(i) => write!(f, "{i}"),
            PrimaryKey::String(s) => write!(f, "{}", Quoted(s)),
            PrimaryKey::ObjectId(o) => write!(f, "{o:?}"),
            PrimaryKey::Uuid(u) => write!(f, "{u:?}"),
        }
    }
}

impl fmt::Display for PrimaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrimaryKey::Int(i) => write!(f, "{i}"),
            PrimaryKey::String(s) => f.write_str(s),
            PrimaryKey::ObjectId(o) => write!(f, "{o}"),
            PrimaryKey::Uuid(u) => write!(f, "{u}"),
        }
    }
}

/// Error from parsing an [`ObjectId`], [`Uuid`] or [`Decimal`] from text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseScalarError {
    /// What was being parsed (`"objectId"`, `"uuid"`, `"decimal"`).
    pub expected: &'static str,
    /// The offending input.
    pub input: String,
}

impl fmt::Display for ParseScalarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not a valid {}",
            Quoted(&self.input),
            self.expected
        )
    }
}

impl std::error::Error for ParseScalarError {}

fn parse_hex<const N: usize>(s: &str, expected: &'static str) -> Result<[u8; N], ParseScalarError> {
    let err = || ParseScalarError {
        expected,
        input: s.to_owned(),
    };
    let bytes = s.as_bytes();
    if bytes.len() != N * 2 {
        return Err(err());
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).ok_or_else(err)?;
        let lo = (pair[1] as char).to_digit(16).ok_or_else(err)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Ok(out)
}

impl ObjectId {
    /// Parses 24 hex digits.
    pub fn parse(s: &str) -> Result<Self, ParseScalarError> {
        parse_hex::<12>(s, "objectId").map(ObjectId)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

impl Uuid {
    /// Parses the hyphenated form (`8-4-4-4-12` hex digits) or 32 bare hex digits.
    pub fn parse(s: &str) -> Result<Self, ParseScalarError> {
        let compact: String = s.chars().filter(|c| *c != '-').collect();
        let hyphens_ok = s.len() == 32
            || (s.len() == 36 && [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-'));
        if !hyphens_ok {
            return Err(ParseScalarError {
                expected: "uuid",
                input: s.to_owned(),
            });
        }
        parse_hex::<16>(&compact, "uuid")
            .map(Uuid)
            .map_err(|_| ParseScalarError {
                expected: "uuid",
                input: s.to_owned(),
            })
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

impl Decimal {
    /// Validates decimal text: an optional sign, digits with an optional fraction, and an
    /// optional exponent (`"1.5"`, `"-0.25"`, `"3E+10"`), or `"NaN"`, `"Infinity"`,
    /// `"-Infinity"`.
    pub fn parse(s: &str) -> Result<Self, ParseScalarError> {
        let err = || ParseScalarError {
            expected: "decimal",
            input: s.to_owned(),
        };
        if matches!(s, "NaN" | "Infinity" | "-Infinity") {
            return Ok(Decimal(s.to_owned()));
        }
        let body = s.strip_prefix(['-', '+']).unwrap_or(s);
        let (mantissa, exponent) = match body.split_once(['e', 'E']) {
            Some((mantissa, exponent)) => (mantissa, Some(exponent)),
            None => (body, None),
        };
        let mut parts = mantissa.splitn(2, '.');
        let int_part = parts.next().unwrap_or("");
        let frac_part = parts.next().unwrap_or("");
        let digits_ok = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (int_part.is_empty() && frac_part.is_empty())
            || !digits_ok(int_part)
            || !digits_ok(frac_part)
        {
            return Err(err());
        }
        if let Some(exp) = exponent {
            let exp_digits = exp.strip_prefix(['-', '+']).unwrap_or(exp);
            if exp_digits.is_empty() || exp_digits.len() > 5 || !digits_ok(exp_digits) {
                return Err(err());
            }
        }
        if s.len() > 64 {
            return Err(err());
        }
        Ok(Decimal(s.to_owned()))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The nearest double (used for comparisons with other numbers).
    pub fn to_f64(&self) -> f64 {
        match self.0.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            s => read_double(s).unwrap_or(f64::NAN),
        }
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        self.to_f64()
            .total_cmp(&other.to_f64())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decimal({})", self.0)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_are_totally_ordered() {
        assert_eq!(Value::Double(f64::NAN), Value::Double(f64::NAN));
        assert!(Value::Int(1) < Value::Double(1.5));
        assert!(Value::Double(0.5) < Value::Int(1));
        assert_ne!(Value::Int(1), Value::Double(1.0));
    }

    #[test]
    fn sets_are_sorted_and_deduplicated() {
        let set = Value::set_from(vec![Value::Int(3), Value::Int(1), Value::Int(3)]);
        assert_eq!(set, Value::Set(vec![Value::Int(1), Value::Int(3)].into()));
    }

    #[test]
    fn scalar_text_round_trips() {
        let oid = ObjectId::parse("5f1b2c3d4e5f6a7b8c9d0e1f").unwrap();
        assert_eq!(oid.to_string(), "5f1b2c3d4e5f6a7b8c9d0e1f");
        let uuid = Uuid::parse("123e4567-e89b-12d3-a456-426614174000").unwrap();
        assert_eq!(uuid.to_string(), "123e4567-e89b-12d3-a456-426614174000");
        assert!(ObjectId::parse("xyz").is_err());
        assert!(Uuid::parse("123e4567e89b12d3a456426614174000").is_ok());
        assert!(Decimal::parse("-12.50").is_ok());
        assert!(Decimal::parse("1e+5").is_ok());
        assert!(Decimal::parse("1.2.3").is_err());
        assert!(Decimal::parse("").is_err());
    }
}
