//! MongoDB Extended JSON (v2) for [`Value`]s and [`Document`]s, in canonical and relaxed mode,
//! with a few Eddy extensions for what plain EJSON cannot say.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Number, Value as Json};

use super::nearest_double::nearest_double;
use super::{Decimal, Document, Link, ObjectId, PrimaryKey, Uuid, Value};
use crate::quote::Quoted;

/// How much type information EJSON output keeps.
///
/// [`Value::to_ejson`] writes, and [`Value::from_ejson`] reads:
///
/// | value            | canonical                                   | relaxed                         |
/// |------------------|---------------------------------------------|---------------------------------|
/// | `Int` (32-bit)   | `{"$numberInt": "5"}`                       | `5`                             |
/// | `Int` (64-bit)   | `{"$numberLong": "5000000000"}`             | `5000000000`                    |
/// | `Double`         | `{"$numberDouble": "1.5"}`                  | `1.5` (`$numberDouble` for `NaN`, `Infinity`, `-Infinity`, `-0.0`) |
/// | `Decimal`        | `{"$numberDecimal": "1.50"}`                | same                            |
/// | `Binary`         | `{"$binary": {"base64": "AQI=", "subType": "00"}}` | same                     |
/// | `Uuid`           | `{"$binary": {"base64": …, "subType": "04"}}` | `{"$uuid": "123e4567-…"}`     |
/// | `Date`           | `{"$date": {"$numberLong": "0"}}`           | `{"$date": "1970-01-01T00:00:00.000Z"}` for years 1970 to 9999 |
/// | `ObjectId`       | `{"$oid": "5f1b…"}`                         | same                            |
/// | `List`           | `[…]`                                       | same                            |
/// | `Object`         | `{…}`                                       | same                            |
///
/// Eddy extensions, accepted and emitted in both modes:
///
/// - **Links**: `{"$link": {"collection": "User", "key": <primary key as EJSON>}}`.
/// - **Sets**: `{"$set": [...]}`; the elements are sorted and deduplicated on input.
/// - **Dictionaries**: `{"$dict": {...}}`, since a plain JSON object is an embedded object.
/// - **Embedded objects with `$` field names**: `{"$object": {...}}`, so that such a field is
///   never mistaken for an operator. Objects without `$` fields are written plainly.
///
/// On input, a JSON object with a key starting with `$` must be exactly one of the operator
/// forms above (one key); anything else is an error. Both `{"$uuid": …}` and binary subtype 04
/// read as a UUID; other binary subtypes read as plain binary (the subtype is not kept). Plain
/// JSON integers read as `Int` (as `Double` when they do not fit 64 bits), other numbers as
/// `Double`. Dates accept an ISO-8601 string with `Z` or a `±HH:MM` offset, `{"$numberLong": …}`
/// or a plain integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EjsonMode {
    /// Every number and date is wrapped in its type, so any EJSON reader restores it exactly.
    Canonical,
    /// Numbers are plain JSON where that is exact, dates are ISO-8601 strings where possible:
    /// easier for people to read and write, and still restored exactly by [`Value::from_ejson`].
    Relaxed,
}

/// How deep EJSON input may nest (arrays and objects, operators included).
pub const MAX_EJSON_DEPTH: usize = 128;

/// Why JSON could not be read as EJSON.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EjsonError {
    /// The text is not JSON.
    Syntax {
        /// The line of the error, from 1.
        line: usize,
        /// The column of the error, from 1.
        column: usize,
        /// What the JSON parser reported.
        message: String,
    },
    /// A value that does not have the shape its position or operator requires.
    Invalid {
        /// Where it is, as `$.field[index]`.
        path: String,
        /// What was expected there.
        expected: &'static str,
        /// The offending JSON (shortened when long).
        json: String,
    },
    /// An object with a `$` key that is not a known operator form.
    UnknownOperator {
        /// Where it is.
        path: String,
        /// The offending JSON (shortened when long).
        json: String,
    },
    /// Input nested deeper than [`MAX_EJSON_DEPTH`].
    TooDeep {
        /// Where the limit was reached.
        path: String,
    },
}

impl fmt::Display for EjsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EjsonError::Syntax {
                line,
                column,
                message,
            } => write!(f, "invalid JSON at line {line}, column {column}: {message}"),
            EjsonError::Invalid {
                path,
                expected,
                json,
            } => write!(f, "invalid EJSON at {path}: expected {expected}, found {json}"),
            EjsonError::UnknownOperator { path, json } => write!(
                f,
                "unknown EJSON operator at {path}: {json} (a `$` key must be a single known \
                 operator such as $oid or $date; wrap objects with `$` fields in {{\"$object\": …}})"
            ),
            EjsonError::TooDeep { path } => write!(
                f,
                "EJSON at {path} nests deeper than {MAX_EJSON_DEPTH} levels: flatten the value"
            ),
        }
    }
}

impl std::error::Error for EjsonError {}

impl Value {
    /// This value as EJSON in the given mode (the mapping is described at [`EjsonMode`]).
    pub fn to_ejson(&self, mode: EjsonMode) -> Json {
        let canonical = mode == EjsonMode::Canonical;
        match self {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => {
                if !canonical {
                    Json::Number(Number::from(*i))
                } else if i32::try_from(*i).is_ok() {
                    wrap("$numberInt", Json::String(i.to_string()))
                } else {
                    wrap("$numberLong", Json::String(i.to_string()))
                }
            }
            Value::Double(d) => {
                // `-0.0` keeps its sign only in the wrapped form.
                let plain = (!canonical && (*d != 0.0 || d.is_sign_positive()))
                    .then(|| Number::from_f64(*d))
                    .flatten();
                match plain {
                    Some(n) => Json::Number(n),
                    None => wrap("$numberDouble", Json::String(double_text(*d))),
                }
            }
            Value::String(s) => Json::String(s.clone()),
            Value::Binary(bytes) => binary(bytes, "00"),
            Value::Uuid(u) if canonical => binary(&u.0, "04"),
            Value::Uuid(u) => wrap("$uuid", Json::String(u.to_string())),
            Value::Date(ms) => {
                let iso = (!canonical).then(|| format_iso_date(*ms)).flatten();
                match iso {
                    Some(text) => wrap("$date", Json::String(text)),
                    None => wrap("$date", wrap("$numberLong", Json::String(ms.to_string()))),
                }
            }
            Value::ObjectId(o) => wrap("$oid", Json::String(o.to_string())),
            Value::Decimal(d) => wrap("$numberDecimal", Json::String(d.as_str().to_owned())),
            Value::Link(link) => {
                let mut body = Map::new();
                body.insert("collection".into(), Json::String(link.collection.clone()));
                body.insert("key".into(), Value::from(link.key.clone()).to_ejson(mode));
                wrap("$link", Json::Object(body))
            }
            Value::List(items) => Json::Array(items.iter().map(|v| v.to_ejson(mode)).collect()),
            Value::Set(items) => wrap(
                "$set",
                Json::Array(items.iter().map(|v| v.to_ejson(mode)).collect()),
            ),
            Value::Dict(map) => wrap("$dict", map_to_json(&mut map.iter(), mode)),
            Value::Object(doc) => document_to_ejson(doc, mode),
        }
    }

    /// Reads a value from EJSON (either mode, and the Eddy extensions).
    pub fn from_ejson(json: &Json) -> Result<Value, EjsonError> {
        Parser { path: Vec::new() }.value(json)
    }
}

/// A document as EJSON: a JSON object, or `{"$object": {...}}` if a field name starts with `$`.
pub fn document_to_ejson(doc: &Document, mode: EjsonMode) -> Json {
    let fields = map_to_json(&mut doc.iter(), mode);
    if doc.keys().any(|k| k.starts_with('$')) {
        wrap("$object", fields)
    } else {
        fields
    }
}

/// Reads a document (an embedded-object value) from EJSON.
pub fn document_from_ejson(json: &Json) -> Result<Document, EjsonError> {
    match Value::from_ejson(json)? {
        Value::Object(doc) => Ok(doc),
        _ => Err(EjsonError::Invalid {
            path: "$".into(),
            expected: "a JSON object (a document)",
            json: quote(json),
        }),
    }
}

/// Parses EJSON text into a value.
pub fn parse_ejson(text: &str) -> Result<Value, EjsonError> {
    let json: Json = serde_json::from_str(text).map_err(|e| EjsonError::Syntax {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    Value::from_ejson(&json)
}

fn wrap(key: &str, value: Json) -> Json {
    let mut map = Map::with_capacity(1);
    map.insert(key.to_owned(), value);
    Json::Object(map)
}

/// The entries of a document or dictionary as a JSON object (one instance for both).
fn map_to_json<'a>(
    entries: &mut dyn Iterator<Item = (&'a String, &'a Value)>,
    mode: EjsonMode,
) -> Json {
    Json::Object(
        entries
            .map(|(k, v)| (k.clone(), v.to_ejson(mode)))
            .collect(),
    )
}

fn binary(bytes: &[u8], sub_type: &str) -> Json {
    let mut body = Map::with_capacity(2);
    body.insert("base64".into(), Json::String(base64_encode(bytes)));
    body.insert("subType".into(), Json::String(sub_type.into()));
    wrap("$binary", Json::Object(body))
}

/// The `$numberDouble` text of a double: the shortest text that reads back to the same bits.
pub(super) fn double_text(d: f64) -> String {
    if d.is_nan() {
        "NaN".into()
    } else if d == f64::INFINITY {
        "Infinity".into()
    } else if d == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        finite_double_text(d)
    }
}

/// The shortest text that reads back to the same bits, for a finite double, always with a `.` or
/// an exponent so that it reads back as a double rather than an integer.
///
/// serde_json's shortest formatter (a small one, without the `Value` tree) rather than `{:?}`
/// keeps the standard library's float formatter out of the browser build.
pub(crate) fn finite_double_text(d: f64) -> String {
    let mut text = Number::from_f64(d).map_or_else(String::new, |n| n.to_string());
    // The only `+` is an exponent's sign (`1e+300`), which the text leaves out.
    text.retain(|c| c != '+');
    if !text.contains(['.', 'e', 'E']) {
        text.push_str(".0");
    }
    text
}

/// Reads decimal text (`[+-]digits[.digits][(e|E)[+-]digits]`, where either digit run around the
/// `.` may be empty but not both) as the nearest double, as `str::parse::<f64>` does for that text;
/// out-of-range magnitudes become infinities and zeros, as there.
///
/// The digits go through [`nearest_double`], so neither the standard library's float parser nor
/// serde_json's (with their power tables) is in the browser build.
pub(crate) fn read_double(text: &str) -> Option<f64> {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let negative = text.starts_with('-');
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, Some(exponent)),
        None => (body, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return None;
    }
    let mut exponent_value: i64 = 0;
    if let Some(exponent) = exponent {
        let unsigned = exponent.strip_prefix(['-', '+']).unwrap_or(exponent);
        let sign = if exponent.starts_with('-') { -1 } else { 1 };
        if unsigned.is_empty() || !digits(unsigned) {
            return None;
        }
        // A million past the number of digits, the value is an infinity or a zero whatever the
        // digits are.
        let limit = 1_000_000 + (int.len() + frac.len()) as i64;
        let magnitude = unsigned
            .bytes()
            .fold(0i64, |n, d| (n * 10 + i64::from(d - b'0')).min(limit));
        exponent_value = sign * magnitude;
    }
    let mut all = Vec::with_capacity(int.len() + frac.len());
    all.extend_from_slice(int.as_bytes());
    all.extend_from_slice(frac.as_bytes());
    Some(nearest_double(
        negative,
        &all,
        exponent_value - frac.len() as i64,
    ))
}

fn parse_double_text(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => read_double(s),
    }
}

/// One step of the path to the value being read, for error messages.
enum Step<'j> {
    Key(&'j str),
    Index(usize),
}

/// Reads EJSON, keeping the path for error messages.
struct Parser<'j> {
    path: Vec<Step<'j>>,
}

impl<'j> Parser<'j> {
    fn path_text(&self) -> String {
        let mut out = String::from("$");
        for step in &self.path {
            match step {
                Step::Index(i) => out.push_str(&format!("[{i}]")),
                Step::Key(k)
                    if !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == '$') =>
                {
                    out.push('.');
                    out.push_str(k);
                }
                Step::Key(k) => out.push_str(&format!("[{}]", Quoted(k))),
            }
        }
        out
    }

    fn invalid(&self, expected: &'static str, json: &Json) -> EjsonError {
        EjsonError::Invalid {
            path: self.path_text(),
            expected,
            json: quote(json),
        }
    }

    /// Runs `f` one step deeper, checking the depth limit.
    fn nested<T>(
        &mut self,
        step: Step<'j>,
        f: impl FnOnce(&mut Self) -> Result<T, EjsonError>,
    ) -> Result<T, EjsonError> {
        self.path.push(step);
        let result = if self.path.len() > MAX_EJSON_DEPTH {
            Err(EjsonError::TooDeep {
                path: self.path_text(),
            })
        } else {
            f(self)
        };
        self.path.pop();
        result
    }

    fn value(&mut self, json: &'j Json) -> Result<Value, EjsonError> {
        match json {
            Json::Null => Ok(Value::Null),
            Json::Bool(b) => Ok(Value::Bool(*b)),
            Json::Number(n) => Ok(match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
            }),
            Json::String(s) => Ok(Value::String(s.clone())),
            Json::Array(items) => self.list(items).map(|items| Value::List(items.into())),
            Json::Object(map) => {
                if map.keys().any(|k| k.starts_with('$')) {
                    self.operator(json, map)
                } else {
                    self.document(map).map(Value::Object)
                }
            }
        }
    }

    fn list(&mut self, items: &'j [Json]) -> Result<Vec<Value>, EjsonError> {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.nested(Step::Index(i), |p| p.value(item)))
            .collect()
    }

    /// The entries of `map`, in its (insertion) order.
    fn entries(&mut self, map: &'j Map<String, Json>) -> Result<Vec<(String, Value)>, EjsonError> {
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map {
            let value = self.nested(Step::Key(k), |p| p.value(v))?;
            entries.push((k.clone(), value));
        }
        Ok(entries)
    }

    fn document(&mut self, map: &'j Map<String, Json>) -> Result<Document, EjsonError> {
        self.entries(map).map(Document::from_entries)
    }

    fn dictionary(&mut self, map: &'j Map<String, Json>) -> Result<Value, EjsonError> {
        // Inserted one by one: `collect` into a map would add a sort to the browser build.
        let mut dict = BTreeMap::new();
        for (k, v) in map {
            let value = self.nested(Step::Key(k), |p| p.value(v))?;
            dict.insert(k.clone(), value);
        }
        Ok(Value::Dict(dict))
    }

    fn string<'s>(&self, json: &'s Json, expected: &'static str) -> Result<&'s str, EjsonError> {
        json.as_str().ok_or_else(|| self.invalid(expected, json))
    }

    fn operator(
        &mut self,
        whole: &'j Json,
        map: &'j Map<String, Json>,
    ) -> Result<Value, EjsonError> {
        let mut entries = map.iter();
        let (key, body) = match (entries.next(), entries.next()) {
            (Some(entry), None) => entry,
            _ => return Err(self.unknown(whole)),
        };
        match self.nested(Step::Key(key), |p| p.operator_body(key, body)) {
            Err(EjsonError::UnknownOperator { .. }) => Err(self.unknown(whole)),
            other => other,
        }
    }

    fn unknown(&self, whole: &Json) -> EjsonError {
        EjsonError::UnknownOperator {
            path: self.path_text(),
            json: quote(whole),
        }
    }

    fn operator_body(&mut self, key: &str, body: &'j Json) -> Result<Value, EjsonError> {
        match key {
            "$numberInt" => {
                const EXPECTED: &str = "a string holding a 32-bit integer";
                let text = self.string(body, EXPECTED)?;
                let i: i32 = text.parse().map_err(|_| self.invalid(EXPECTED, body))?;
                Ok(Value::Int(i64::from(i)))
            }
            "$numberLong" => self.number_long(body).map(Value::Int),
            "$numberDouble" => {
                const EXPECTED: &str = "a string holding a double, \"NaN\" or \"Infinity\"";
                let text = self.string(body, EXPECTED)?;
                parse_double_text(text)
                    .map(Value::Double)
                    .ok_or_else(|| self.invalid(EXPECTED, body))
            }
            "$numberDecimal" => {
                const EXPECTED: &str = "a string holding a decimal number";
                let text = self.string(body, EXPECTED)?;
                Decimal::parse(text)
                    .map(Value::Decimal)
                    .map_err(|_| self.invalid(EXPECTED, body))
            }
            "$binary" => self.binary(body),
            "$uuid" => {
                const EXPECTED: &str = "a string holding a hyphenated UUID";
                let text = self.string(body, EXPECTED)?;
                Uuid::parse(text)
                    .map(Value::Uuid)
                    .map_err(|_| self.invalid(EXPECTED, body))
            }
            "$oid" => {
                const EXPECTED: &str = "a string of 24 hex digits";
                let text = self.string(body, EXPECTED)?;
                ObjectId::parse(text)
                    .map(Value::ObjectId)
                    .map_err(|_| self.invalid(EXPECTED, body))
            }
            "$date" => self.date(body).map(Value::Date),
            "$link" => self.link(body).map(Value::Link),
            "$set" => match body {
                Json::Array(items) => self.list(items).map(Value::set_from),
                _ => Err(self.invalid("an array of set elements", body)),
            },
            "$dict" => match body {
                Json::Object(map) => self.dictionary(map),
                _ => Err(self.invalid("an object of dictionary entries", body)),
            },
            "$object" => match body {
                Json::Object(map) => self.document(map).map(Value::Object),
                _ => Err(self.invalid("an object of embedded-object fields", body)),
            },
            _ => Err(EjsonError::UnknownOperator {
                path: self.path_text(),
                json: quote(body),
            }),
        }
    }

    fn number_long(&self, body: &Json) -> Result<i64, EjsonError> {
        const EXPECTED: &str = "a string holding a 64-bit integer";
        let text = self.string(body, EXPECTED)?;
        text.parse().map_err(|_| self.invalid(EXPECTED, body))
    }

    fn binary(&mut self, body: &'j Json) -> Result<Value, EjsonError> {
        const EXPECTED: &str = "{\"base64\": <string>, \"subType\": <hex string>}";
        let fields = body
            .as_object()
            .filter(|m| m.len() == 2)
            .ok_or_else(|| self.invalid(EXPECTED, body))?;
        let (Some(Json::String(data)), Some(Json::String(sub_type))) =
            (fields.get("base64"), fields.get("subType"))
        else {
            return Err(self.invalid(EXPECTED, body));
        };
        let sub_type = (1..=2)
            .contains(&sub_type.len())
            .then(|| u8::from_str_radix(sub_type, 16).ok())
            .flatten()
            .ok_or_else(|| self.invalid("a subType of one or two hex digits", body))?;
        let bytes = base64_decode(data).ok_or_else(|| self.invalid("valid base64", body))?;
        if sub_type == 4 {
            let uuid: [u8; 16] = bytes
                .try_into()
                .map_err(|_| self.invalid("16 bytes for a subType 04 UUID", body))?;
            return Ok(Value::Uuid(Uuid(uuid)));
        }
        Ok(Value::Binary(bytes))
    }

    fn date(&mut self, body: &'j Json) -> Result<i64, EjsonError> {
        const EXPECTED: &str =
            "an ISO-8601 date string, {\"$numberLong\": <milliseconds>} or an integer";
        match body {
            Json::String(text) => parse_iso_date(text).ok_or_else(|| self.invalid(EXPECTED, body)),
            Json::Number(n) => n.as_i64().ok_or_else(|| self.invalid(EXPECTED, body)),
            Json::Object(map) => match map.get("$numberLong") {
                Some(inner) if map.len() == 1 => {
                    self.nested(Step::Key("$numberLong"), |p| p.number_long(inner))
                }
                _ => Err(self.invalid(EXPECTED, body)),
            },
            _ => Err(self.invalid(EXPECTED, body)),
        }
    }

    fn link(&mut self, body: &'j Json) -> Result<Link, EjsonError> {
        const EXPECTED: &str = "{\"collection\": <string>, \"key\": <primary key>}";
        let fields = body
            .as_object()
            .filter(|m| m.len() == 2)
            .ok_or_else(|| self.invalid(EXPECTED, body))?;
        let (Some(Json::String(collection)), Some(key)) =
            (fields.get("collection"), fields.get("key"))
        else {
            return Err(self.invalid(EXPECTED, body));
        };
        let value = self.nested(Step::Key("key"), |p| p.value(key))?;
        let key = PrimaryKey::try_from(value)
            .map_err(|_| self.invalid("a primary key (an int, string, objectId or uuid)", key))?;
        Ok(Link {
            collection: collection.clone(),
            key,
        })
    }
}

/// JSON text for an error message, shortened to about 80 characters.
fn quote(json: &Json) -> String {
    const MAX: usize = 80;
    let text = json.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Appends `text` as a JSON string, escaped exactly as serde_json writes it.
pub(crate) fn push_json_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c < ' ' => {
                out.push_str("\\u00");
                out.push(char::from(HEX[c as usize >> 4]));
                out.push(char::from(HEX[c as usize & 15]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The canonical EJSON text of a primary key (what `Value::to_ejson` in canonical mode prints),
/// written without building a JSON tree.
pub(crate) fn canonical_key_text(key: &PrimaryKey) -> String {
    let mut out = String::new();
    match key {
        PrimaryKey::Int(i) => {
            let wrapper = if i32::try_from(*i).is_ok() {
                "{\"$numberInt\":\""
            } else {
                "{\"$numberLong\":\""
            };
            out.push_str(wrapper);
            out.push_str(&i.to_string());
            out.push_str("\"}");
        }
        PrimaryKey::String(s) => push_json_string(&mut out, s),
        PrimaryKey::ObjectId(o) => {
            out.push_str("{\"$oid\":\"");
            out.push_str(&o.to_string());
            out.push_str("\"}");
        }
        PrimaryKey::Uuid(u) => {
            out.push_str("{\"$binary\":{\"base64\":\"");
            out.push_str(&base64_encode(&u.0));
            out.push_str("\",\"subType\":\"04\"}}");
        }
    }
    out
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 with padding; `None` unless the text is exactly that.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.len() / 4;
    for (q, quad) in bytes.chunks_exact(4).enumerate() {
        let padding = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && q + 1 != quads) {
            return None;
        }
        let mut n = 0u32;
        for &c in quad.get(..4 - padding)? {
            n = (n << 6) | u32::from(sextet(c)?);
        }
        n <<= 6 * padding as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(decoded.get(..3 - padding)?);
    }
    Some(out)
}

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (month 1-12).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count years from March so that the leap day ends the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for instants in the years 1970 to 9999, else `None`.
fn format_iso_date(ms: i64) -> Option<String> {
    const YEAR_10000: i64 = 253_402_300_800_000;
    if !(0..YEAR_10000).contains(&ms) {
        return None;
    }
    let (year, month, day) = civil_from_days(ms / MS_PER_DAY);
    let in_day = ms % MS_PER_DAY;
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    ))
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM|±HHMM)` as milliseconds since the epoch
/// (fractions beyond milliseconds are truncated).
fn parse_iso_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from.checked_add(len)?)?;
        part.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let expect = |at: usize, c: u8| b.get(at) == Some(&c);
    if !(expect(4, b'-') && expect(7, b'-') && (expect(10, b'T') || expect(10, b't')))
        || !(expect(13, b':') && expect(16, b':'))
    {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0;
    if expect(at, b'.') {
        let count = b
            .get(at + 1..)?
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if !(1..=9).contains(&count) {
            return None;
        }
        let kept = count.min(3);
        millis = digits(at + 1, kept)? * 10i64.pow(3 - kept as u32);
        at += 1 + count;
    }
    let offset_minutes = match b.get(at..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [_, _, b':', _, _] => (digits(at + 1, 2)?, digits(at + 4, 2)?),
                [_, _, _, _] => (digits(at + 1, 2)?, digits(at + 3, 2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'-' {
                -minutes
            } else {
                minutes
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        #[test]
        fn finite_double_text_reads_back_as_the_same_double(bits in any::<u64>()) {
            let d = f64::from_bits(bits);
            prop_assume!(d.is_finite());
            let text = finite_double_text(d);
            prop_assert!(text.contains(['.', 'e', 'E']), "{text} has no . or exponent");
            let back: f64 = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(back.to_bits(), bits, "{}", text);
        }
    }

    proptest! {
        #[test]
        fn json_strings_are_escaped_as_serde_json_escapes_them(text in "\\PC*|[\\x00-\\x7f]*") {
            let mut out = String::new();
            push_json_string(&mut out, &text);
            prop_assert_eq!(out, Json::String(text).to_string());
        }

        #[test]
        fn canonical_key_text_is_the_canonical_ejson_of_the_key(
            int in any::<i64>(),
            small in any::<i32>(),
            text in "\\PC*|[\\x00-\\x7f]*",
            bytes in any::<[u8; 16]>(),
        ) {
            for key in [
                PrimaryKey::Int(int),
                PrimaryKey::Int(i64::from(small)),
                PrimaryKey::String(text.clone()),
                PrimaryKey::ObjectId(ObjectId(bytes[..12].try_into().unwrap())),
                PrimaryKey::Uuid(Uuid(bytes)),
            ] {
                let expected = Value::from(key.clone()).to_ejson(EjsonMode::Canonical).to_string();
                prop_assert_eq!(canonical_key_text(&key), expected);
            }
        }

        #[test]
        fn read_double_agrees_with_the_standard_parser(
            text in "[+-]?[0-9]{0,3}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{1,4})?",
        ) {
            let expected = text.parse::<f64>().ok();
            let got = read_double(&text);
            prop_assert_eq!(got.map(f64::to_bits), expected.map(f64::to_bits), "{}", text);
        }

        #[test]
        fn read_double_reads_every_written_double(bits in any::<u64>()) {
            let d = f64::from_bits(bits);
            prop_assume!(d.is_finite());
            prop_assert_eq!(read_double(&finite_double_text(d)).map(f64::to_bits), Some(bits));
            prop_assert_eq!(read_double(&format!("{d:e}")).map(f64::to_bits), Some(bits));
        }
    }

    #[test]
    fn read_double_takes_what_the_standard_parser_takes() {
        for text in [
            "1e400", "-1e400", "1e-400", "007.50", ".5", "5.", "+2", "-0", "1E+2",
        ] {
            assert_eq!(
                read_double(text).map(f64::to_bits),
                text.parse::<f64>().ok().map(f64::to_bits),
                "{text}"
            );
        }
        for text in [
            "", ".", "-", "e5", "1e", "1e+", "1.2.3", "0x10", "inf", "NaN", "1 ",
        ] {
            assert_eq!(read_double(text), None, "{text}");
        }
        // Exponents past a million against as many digits: the digits still count. (The
        // standard parser stops reading an exponent at 65,536, so it is not the reference here.)
        let many = format!("1{}", "0".repeat(2_000_000));
        for (text, expected) in [
            (format!("{many}e-2000010"), 1e-10),
            (format!("{many}e-1999990"), 1e10),
            (format!("0.{many}e1000000"), f64::INFINITY),
            (format!("1e{}", "9".repeat(30)), f64::INFINITY),
            (format!("1e-{}", "9".repeat(30)), 0.0),
        ] {
            assert_eq!(
                read_double(&text),
                Some(expected),
                "{}…",
                &text[..40.min(text.len())]
            );
        }
    }

    #[test]
    fn finite_double_text_keeps_integers_and_signed_zero_doubles() {
        assert_eq!(finite_double_text(1.0), "1.0");
        assert_eq!(finite_double_text(-0.0), "-0.0");
        assert_eq!(finite_double_text(0.1), "0.1");
        assert_eq!(parse_double_text(&finite_double_text(1e300)), Some(1e300));
    }

    /// Replaces every NaN by the one NaN EJSON can express.
    fn canonical_nans(value: Value) -> Value {
        match value {
            Value::Double(d) if d.is_nan() => Value::Double(f64::NAN),
            Value::List(items) => Value::List(items.into_iter().map(canonical_nans).collect()),
            Value::Set(items) => Value::set_from(items.into_iter().map(canonical_nans).collect()),
            Value::Dict(map) => Value::Dict(
                map.into_iter()
                    .map(|(k, v)| (k, canonical_nans(v)))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, canonical_nans(v)))
                    .collect(),
            ),
            other => other,
        }
    }

    #[test]
    fn canonical_output() {
        let c = EjsonMode::Canonical;
        assert_eq!(Value::Int(5).to_ejson(c), json!({"$numberInt": "5"}));
        assert_eq!(
            Value::Int(5_000_000_000).to_ejson(c),
            json!({"$numberLong": "5000000000"})
        );
        assert_eq!(
            Value::Double(1.5).to_ejson(c),
            json!({"$numberDouble": "1.5"})
        );
        assert_eq!(
            Value::Double(-0.0).to_ejson(c),
            json!({"$numberDouble": "-0.0"})
        );
        assert_eq!(
            Value::Double(f64::NEG_INFINITY).to_ejson(c),
            json!({"$numberDouble": "-Infinity"})
        );
        assert_eq!(
            Value::Date(0).to_ejson(c),
            json!({"$date": {"$numberLong": "0"}})
        );
        assert_eq!(
            Value::Binary(vec![1, 2, 3, 4]).to_ejson(c),
            json!({"$binary": {"base64": "AQIDBA==", "subType": "00"}})
        );
        assert_eq!(
            Value::Uuid(Uuid([0xab; 16])).to_ejson(c),
            json!({"$binary": {"base64": "q6urq6urq6urq6urq6urqw==", "subType": "04"}})
        );
    }

    #[test]
    fn relaxed_output() {
        let r = EjsonMode::Relaxed;
        assert_eq!(
            Value::Int(5_000_000_000).to_ejson(r),
            json!(5_000_000_000i64)
        );
        assert_eq!(Value::Double(1.5).to_ejson(r), json!(1.5));
        assert_eq!(
            Value::Double(f64::NAN).to_ejson(r),
            json!({"$numberDouble": "NaN"})
        );
        assert_eq!(
            Value::Double(-0.0).to_ejson(r),
            json!({"$numberDouble": "-0.0"})
        );
        assert_eq!(
            Value::Date(1_700_000_000_123).to_ejson(r),
            json!({"$date": "2023-11-14T22:13:20.123Z"})
        );
        assert_eq!(
            Value::Date(-1).to_ejson(r),
            json!({"$date": {"$numberLong": "-1"}})
        );
        assert_eq!(
            Value::Date(253_402_300_799_999).to_ejson(r),
            json!({"$date": "9999-12-31T23:59:59.999Z"})
        );
        let uuid = "123e4567-e89b-12d3-a456-426614174000";
        assert_eq!(
            Value::Uuid(Uuid::parse(uuid).unwrap()).to_ejson(r),
            json!({"$uuid": uuid})
        );
    }

    #[test]
    fn extensions() {
        let r = EjsonMode::Relaxed;
        let link = Value::Link(Link {
            collection: "User".into(),
            key: PrimaryKey::Int(7),
        });
        assert_eq!(
            link.to_ejson(r),
            json!({"$link": {"collection": "User", "key": 7}})
        );
        assert_eq!(
            Value::set_from(vec![Value::Int(2), Value::Int(1)]).to_ejson(r),
            json!({"$set": [1, 2]})
        );
        let dict = Value::Dict([("a".to_owned(), Value::Null)].into());
        assert_eq!(dict.to_ejson(r), json!({"$dict": {"a": null}}));
        let odd = Value::Object([("$oid".to_owned(), Value::Int(1))].into());
        assert_eq!(odd.to_ejson(r), json!({"$object": {"$oid": 1}}));
        assert_eq!(Value::from_ejson(&odd.to_ejson(r)).unwrap(), odd);
        assert_eq!(
            parse_ejson(r#"{"$set": [3, 1, 3]}"#).unwrap(),
            Value::Set(vec![Value::Int(1), Value::Int(3)].into())
        );
    }

    #[test]
    fn mongo_inputs() {
        assert_eq!(
            parse_ejson(r#"{"$date": "1970-01-02T01:00:00+01:00"}"#).unwrap(),
            Value::Date(MS_PER_DAY)
        );
        assert_eq!(
            parse_ejson(r#"{"$date": "2000-02-29T12:00:00.5Z"}"#).unwrap(),
            Value::Date(951_825_600_500)
        );
        assert_eq!(parse_ejson(r#"{"$date": 12}"#).unwrap(), Value::Date(12));
        assert_eq!(
            parse_ejson(r#"{"$uuid": "123e4567-e89b-12d3-a456-426614174000"}"#).unwrap(),
            parse_ejson(r#"{"$binary": {"base64": "Ej5FZ+ibEtOkVkJmFBdAAA==", "subType": "04"}}"#)
                .unwrap()
        );
        assert_eq!(
            parse_ejson(r#"{"$binary": {"base64": "", "subType": "80"}}"#).unwrap(),
            Value::Binary(Vec::new())
        );
        assert_eq!(parse_ejson("12").unwrap(), Value::Int(12));
        assert_eq!(parse_ejson("12.0").unwrap(), Value::Double(12.0));
        assert_eq!(
            parse_ejson("18446744073709551615").unwrap(),
            Value::Double(18_446_744_073_709_551_615.0)
        );
        assert_eq!(
            parse_ejson(r#"{"a": [true, null, {"$oid": "5f1b2c3d4e5f6a7b8c9d0e1f"}]}"#).unwrap(),
            Value::Object(
                [(
                    "a".to_owned(),
                    Value::List(
                        vec![
                            Value::Bool(true),
                            Value::Null,
                            Value::ObjectId(ObjectId::parse("5f1b2c3d4e5f6a7b8c9d0e1f").unwrap()),
                        ]
                        .into()
                    )
                )]
                .into()
            )
        );
    }

    #[test]
    fn errors_quote_the_input_and_the_path() {
        let err = parse_ejson(r#"{"a": [1, {"$numberInt": "99999999999"}]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid EJSON at $.a[1].$numberInt: expected a string holding a 32-bit integer, \
             found \"99999999999\""
        );
        let err = parse_ejson(r#"{"x y": {"$foo": 1}}"#).unwrap_err();
        assert!(matches!(&err, EjsonError::UnknownOperator { path, json }
            if path == "$[\"x y\"]" && json == r#"{"$foo":1}"#));
        for bad in [
            r#"{"$oid": "zz"}"#,
            r#"{"$oid": "5f1b2c3d4e5f6a7b8c9d0e1f", "b": 1}"#,
            r#"{"$numberDouble": "inf"}"#,
            r#"{"$numberDecimal": "1.2.3"}"#,
            r#"{"$binary": {"base64": "AQI", "subType": "00"}}"#,
            r#"{"$binary": {"base64": "AQI=", "subType": "04"}}"#,
            r#"{"$binary": {"base64": "AQI=", "subType": "xyz"}}"#,
            r#"{"$date": "2001-02-29T00:00:00Z"}"#,
            r#"{"$date": "2001-01-01T00:00:00"}"#,
            r#"{"$link": {"collection": "U", "key": 1.5}}"#,
            r#"{"$set": 1}"#,
            r#"{"$dict": []}"#,
            "[1,",
        ] {
            let err = parse_ejson(bad).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
        let deep = format!(
            "{}1{}",
            "{\"$dict\": {\"a\": ".repeat(100),
            "}}".repeat(100)
        );
        assert!(parse_ejson(&deep).is_err());
    }

    #[test]
    fn programmatic_depth_is_bounded() {
        let mut json = json!(1);
        for _ in 0..(MAX_EJSON_DEPTH + 5) {
            json = Json::Array(vec![json]);
        }
        assert!(matches!(
            Value::from_ejson(&json),
            Err(EjsonError::TooDeep { .. })
        ));
    }

    #[test]
    fn documents() {
        let doc: Document = [("n".to_owned(), Value::Int(1))].into();
        let json = document_to_ejson(&doc, EjsonMode::Canonical);
        assert_eq!(json, json!({"n": {"$numberInt": "1"}}));
        assert_eq!(document_from_ejson(&json).unwrap(), doc);
        assert!(document_from_ejson(&json!([1])).is_err());
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9v!A==", "===="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn values_round_trip_in_both_modes(value in crate::changeset::arbitrary::value()) {
            let value = canonical_nans(value);
            for mode in [EjsonMode::Canonical, EjsonMode::Relaxed] {
                let json = value.to_ejson(mode);
                prop_assert_eq!(&Value::from_ejson(&json)?, &value);
                prop_assert_eq!(&parse_ejson(&json.to_string())?, &value);
            }
        }

        #[test]
        fn dates_round_trip_through_iso(ms in 0i64..253_402_300_800_000) {
            let text = format_iso_date(ms).unwrap();
            prop_assert_eq!(parse_iso_date(&text), Some(ms));
        }

        #[test]
        fn civil_conversion_round_trips(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(base64_decode(&base64_encode(&bytes)), Some(bytes));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,64}") {
            let _ = parse_ejson(&text);
        }

        #[test]
        fn json_like_text_never_panics(text in r#"[\[\]{}":,0-9a-zA-Z$+\-. ]{0,80}"#) {
            let _ = parse_ejson(&text);
        }
    }
}
