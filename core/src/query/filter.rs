//! Permission document filters: the MongoDB-style query documents of role rules
//! (`{"owner_id": "%%user.id"}`, `{"$or": [{"public": true}, {"score": {"$gte": 5}}]}`), with
//! `%%user...` placeholders filled from the user the rule is checked for.
//!
//! Operators: `$eq $ne $gt $gte $lt $lte $in $nin $exists` on fields, `$not` on a field's
//! operators or on a whole filter, and `$and $or $nor` over filters. Field names may be dotted
//! (`"addr.city"`) and go through embedded objects, dictionaries and arrays of them. A field
//! holding an array matches a scalar when any element equals it (MongoDB semantics); `null`
//! matches a missing field too. Comparisons follow the query rules: numbers compare across int,
//! double and decimal, values of unrelated kinds are never equal or ordered.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use crate::quote::Quoted;
use crate::value::{Decimal, Document, ObjectId, Uuid, Value};

use super::compare::{equals, ordered};
use super::literal;

/// How deeply `$and`/`$or`/`$nor`/`$not` and JSON values may nest.
const MAX_DEPTH: usize = 32;

/// The user a filter is evaluated for; the source of `%%user...` placeholders.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserContext {
    /// `%%user.id`.
    pub id: String,
    /// `%%user.name` (null when absent).
    pub name: Option<String>,
    /// `%%user.custom_data.<field>` (null when the field is absent).
    pub custom_data: Document,
}

/// A compiled permission filter.
#[derive(Clone, Debug, PartialEq)]
pub struct DocumentFilter {
    root: Node,
    /// The JSON it was compiled from, for display.
    source: serde_json::Value,
}

/// A filter over a whole document.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    /// Matches everything or nothing.
    Const(bool),
    /// All of the filters.
    And(Vec<Node>),
    /// Any of the filters.
    Or(Vec<Node>),
    /// The negation of a filter.
    Not(Box<Node>),
    /// Conditions on one (dotted) field, all of which must hold.
    Field {
        /// The field path, split at dots.
        path: Vec<String>,
        /// The conditions.
        ops: Vec<FieldOp>,
    },
}

/// A condition on a field's values.
#[derive(Clone, Debug, PartialEq)]
enum FieldOp {
    /// `$eq` (or a plain value).
    Eq(Operand),
    /// `$ne`.
    Ne(Operand),
    /// `$gt`, `$gte`, `$lt`, `$lte`: the accepted orderings of field value against operand.
    Order(Operand, [Ordering; 2]),
    /// `$in`.
    In(Vec<Operand>),
    /// `$nin`.
    Nin(Vec<Operand>),
    /// `$exists`.
    Exists(bool),
    /// `$not`: not all of the conditions hold.
    Not(Vec<FieldOp>),
}

/// A value in a filter, possibly a placeholder filled per user.
#[derive(Clone, Debug, PartialEq)]
enum Operand {
    /// A fixed value.
    Value(Value),
    /// `%%user.id`.
    UserId,
    /// `%%user.name`.
    UserName,
    /// `%%user.custom_data` followed by a (possibly empty) dotted path.
    CustomData(Vec<String>),
}

/// Why a JSON document is not a valid filter.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterError {
    /// The filter is not an object, `true`, `false`, `"%%true"` or `"%%false"`.
    NotAFilter {
        /// The JSON found.
        found: String,
    },
    /// An operator that is not supported.
    UnknownOperator {
        /// The operator, with its `$`.
        operator: String,
    },
    /// An operator that takes an array got something else.
    ExpectedArray {
        /// The operator.
        operator: String,
        /// The JSON found.
        found: String,
    },
    /// `$and`, `$or` or `$nor` with an empty array.
    EmptyArray {
        /// The operator.
        operator: String,
    },
    /// `$exists` with something other than a boolean.
    ExpectedBool {
        /// The operator.
        operator: String,
        /// The JSON found.
        found: String,
    },
    /// An operator that takes an object of operators got something else.
    ExpectedObject {
        /// The operator.
        operator: String,
        /// The JSON found.
        found: String,
    },
    /// A `%%` placeholder that does not exist.
    UnknownPlaceholder {
        /// The placeholder as written.
        placeholder: String,
    },
    /// A malformed extended-JSON value such as `{"$oid": "xyz"}`.
    InvalidValue {
        /// The extended-JSON key (`$oid`, `$date`, ...).
        key: String,
        /// The JSON found.
        found: String,
    },
    /// A field condition that mixes `$` operators and plain field names.
    MixedOperators {
        /// The field.
        field: String,
    },
    /// A field name with an empty segment (`"a..b"`, `""`).
    InvalidField {
        /// The field name.
        field: String,
    },
    /// Nesting deeper than the limit.
    TooDeep {
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterError::NotAFilter { found } => write!(
                f,
                "a permission filter must be a JSON object, true or false, found {found}"
            ),
            FilterError::UnknownOperator { operator } => write!(
                f,
                "unknown filter operator {operator}: use $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists, $not, $and, $or or $nor", operator = Quoted(operator)
            ),
            FilterError::ExpectedArray { operator, found } => {
                write!(f, "{operator} takes an array, found {found}", operator = Quoted(operator))
            }
            FilterError::EmptyArray { operator } => {
                write!(f, "{operator} needs at least one filter in its array", operator = Quoted(operator))
            }
            FilterError::ExpectedBool { operator, found } => {
                write!(f, "{operator} takes true or false, found {found}", operator = Quoted(operator))
            }
            FilterError::ExpectedObject { operator, found } => {
                write!(f, "{operator} takes an object of conditions, found {found}", operator = Quoted(operator))
            }
            FilterError::UnknownPlaceholder { placeholder } => write!(
                f,
                "unknown placeholder {placeholder}: use %%user.id, %%user.name, %%user.custom_data.<field>, %%true or %%false", placeholder = Quoted(placeholder)
            ),
            FilterError::InvalidValue { key, found } => {
                write!(f, "invalid {key} value {found}", key = Quoted(key))
            }
            FilterError::MixedOperators { field } => write!(
                f,
                "the condition on {field} mixes $ operators and field names: use either operators or a plain value", field = Quoted(field)
            ),
            FilterError::InvalidField { field } => write!(
                f,
                "invalid field path {field}: segments between dots must not be empty", field = Quoted(field)
            ),
            FilterError::TooDeep { limit } => {
                write!(f, "the filter nests deeper than {limit} levels")
            }
        }
    }
}

impl std::error::Error for FilterError {}

/// Short JSON text for error messages.
fn show(json: &serde_json::Value) -> String {
    const LIMIT: usize = 60;
    let text = json.to_string();
    if text.len() <= LIMIT {
        return text;
    }
    let cut = (0..=LIMIT)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}...", text.get(..cut).unwrap_or(""))
}

/// Extended-JSON keys that make an object a single value rather than a condition.
const VALUE_KEYS: [&str; 8] = [
    "$oid",
    "$uuid",
    "$date",
    "$numberDecimal",
    "$numberLong",
    "$numberInt",
    "$numberDouble",
    "$binary",
];

impl DocumentFilter {
    /// Compiles a filter from JSON: an object of conditions, `true`, `false`, `"%%true"` or
    /// `"%%false"`.
    ///
    /// Plain JSON values become [`Value`]s: strings, numbers (`Int` when integral, else
    /// `Double`), booleans, null, arrays (`List`) and objects (`Object`), plus the extended-JSON
    /// forms `{"$oid": hex}`, `{"$uuid": text}`, `{"$date": ms}` (or `{"$date":
    /// {"$numberLong": "ms"}}`), `{"$numberDecimal": text}`, `{"$numberLong": text}`,
    /// `{"$numberInt": text}`, `{"$numberDouble": text}` and `{"$binary": {"base64": text}}`.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, FilterError> {
        Ok(DocumentFilter {
            root: filter(json, 0)?,
            source: json.clone(),
        })
    }

    /// The JSON the filter was compiled from.
    pub fn to_json(&self) -> &serde_json::Value {
        &self.source
    }

    /// Whether `doc` passes the filter for `user`.
    pub fn matches(&self, doc: &Document, user: &UserContext) -> bool {
        node_matches(&self.root, doc, user)
    }

    /// Whether the filter lets every document through (`{}`, `true`, `"%%true"`, or a
    /// combination that always holds).
    pub fn is_true(&self) -> bool {
        self.root == Node::Const(true)
    }

    /// Whether the filter lets no document through (`false`, `"%%false"`, or a combination
    /// that never holds).
    pub fn is_false(&self) -> bool {
        self.root == Node::Const(false)
    }
}

fn filter(json: &serde_json::Value, depth: usize) -> Result<Node, FilterError> {
    if depth > MAX_DEPTH {
        return Err(FilterError::TooDeep { limit: MAX_DEPTH });
    }
    match json {
        serde_json::Value::Bool(b) => Ok(Node::Const(*b)),
        serde_json::Value::String(s) if s == "%%true" => Ok(Node::Const(true)),
        serde_json::Value::String(s) if s == "%%false" => Ok(Node::Const(false)),
        serde_json::Value::Object(map) => {
            let mut items = Vec::with_capacity(map.len());
            for (key, value) in map {
                items.push(match key.as_str() {
                    "$and" | "$or" | "$nor" => {
                        let children = filter_list(key, value, depth)?;
                        match key.as_str() {
                            "$and" => all_of(children),
                            "$or" => any_of(children),
                            _ => negate(any_of(children)),
                        }
                    }
                    "$not" => negate(filter(value, depth + 1)?),
                    key if key.starts_with('$') => {
                        return Err(FilterError::UnknownOperator {
                            operator: key.to_owned(),
                        })
                    }
                    field => condition(field, value, depth)?,
                });
            }
            Ok(all_of(items))
        }
        other => Err(FilterError::NotAFilter { found: show(other) }),
    }
}

fn filter_list(
    operator: &str,
    json: &serde_json::Value,
    depth: usize,
) -> Result<Vec<Node>, FilterError> {
    let serde_json::Value::Array(items) = json else {
        return Err(FilterError::ExpectedArray {
            operator: operator.to_owned(),
            found: show(json),
        });
    };
    if items.is_empty() {
        return Err(FilterError::EmptyArray {
            operator: operator.to_owned(),
        });
    }
    items.iter().map(|item| filter(item, depth + 1)).collect()
}

/// `AND` of nodes, folding constants.
fn all_of(items: Vec<Node>) -> Node {
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Node::Const(true) => {}
            Node::Const(false) => return Node::Const(false),
            other => kept.push(other),
        }
    }
    match kept.len() {
        0 => Node::Const(true),
        1 => kept.pop().unwrap_or(Node::Const(true)),
        _ => Node::And(kept),
    }
}

/// `OR` of nodes, folding constants.
fn any_of(items: Vec<Node>) -> Node {
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Node::Const(false) => {}
            Node::Const(true) => return Node::Const(true),
            other => kept.push(other),
        }
    }
    match kept.len() {
        0 => Node::Const(false),
        1 => kept.pop().unwrap_or(Node::Const(false)),
        _ => Node::Or(kept),
    }
}

fn negate(node: Node) -> Node {
    match node {
        Node::Const(b) => Node::Const(!b),
        other => Node::Not(Box::new(other)),
    }
}

fn condition(field: &str, json: &serde_json::Value, depth: usize) -> Result<Node, FilterError> {
    let path: Vec<String> = field.split('.').map(str::to_owned).collect();
    if path.iter().any(String::is_empty) {
        return Err(FilterError::InvalidField {
            field: field.to_owned(),
        });
    }
    let ops = match json {
        serde_json::Value::Object(map) if is_operator_object(map) => {
            if !map.keys().all(|key| key.starts_with('$')) {
                return Err(FilterError::MixedOperators {
                    field: field.to_owned(),
                });
            }
            operators(map, depth)?
        }
        value => vec![FieldOp::Eq(operand(value, depth)?)],
    };
    Ok(Node::Field { path, ops })
}

/// Whether an object holds conditions (`{"$gt": 5}`) rather than being a value.
fn is_operator_object(map: &serde_json::Map<String, serde_json::Value>) -> bool {
    map.keys()
        .any(|key| key.starts_with('$') && !VALUE_KEYS.contains(&key.as_str()))
}

fn operators(
    map: &serde_json::Map<String, serde_json::Value>,
    depth: usize,
) -> Result<Vec<FieldOp>, FilterError> {
    if depth > MAX_DEPTH {
        return Err(FilterError::TooDeep { limit: MAX_DEPTH });
    }
    let mut ops = Vec::with_capacity(map.len());
    for (key, value) in map {
        let order = |accepted: [Ordering; 2]| -> Result<FieldOp, FilterError> {
            Ok(FieldOp::Order(operand(value, depth)?, accepted))
        };
        ops.push(match key.as_str() {
            "$eq" => FieldOp::Eq(operand(value, depth)?),
            "$ne" => FieldOp::Ne(operand(value, depth)?),
            "$gt" => order([Ordering::Greater; 2])?,
            "$gte" => order([Ordering::Greater, Ordering::Equal])?,
            "$lt" => order([Ordering::Less; 2])?,
            "$lte" => order([Ordering::Less, Ordering::Equal])?,
            "$in" | "$nin" => {
                let serde_json::Value::Array(items) = value else {
                    return Err(FilterError::ExpectedArray {
                        operator: key.clone(),
                        found: show(value),
                    });
                };
                let items = items
                    .iter()
                    .map(|item| operand(item, depth))
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "$in" {
                    FieldOp::In(items)
                } else {
                    FieldOp::Nin(items)
                }
            }
            "$exists" => match value {
                serde_json::Value::Bool(b) => FieldOp::Exists(*b),
                serde_json::Value::Number(n) => FieldOp::Exists(n.as_f64() != Some(0.0)),
                other => {
                    return Err(FilterError::ExpectedBool {
                        operator: key.clone(),
                        found: show(other),
                    })
                }
            },
            "$not" => match value {
                serde_json::Value::Object(inner) if is_operator_object(inner) => {
                    FieldOp::Not(operators(inner, depth + 1)?)
                }
                other => {
                    return Err(FilterError::ExpectedObject {
                        operator: key.clone(),
                        found: show(other),
                    })
                }
            },
            other => {
                return Err(FilterError::UnknownOperator {
                    operator: other.to_owned(),
                })
            }
        });
    }
    Ok(ops)
}

fn operand(json: &serde_json::Value, depth: usize) -> Result<Operand, FilterError> {
    let serde_json::Value::String(text) = json else {
        return json_to_value(json, depth).map(Operand::Value);
    };
    let Some(name) = text.strip_prefix("%%") else {
        return Ok(Operand::Value(Value::String(text.clone())));
    };
    let unknown = || FilterError::UnknownPlaceholder {
        placeholder: text.clone(),
    };
    match name {
        "true" => Ok(Operand::Value(Value::Bool(true))),
        "false" => Ok(Operand::Value(Value::Bool(false))),
        "user.id" => Ok(Operand::UserId),
        "user.name" => Ok(Operand::UserName),
        "user.custom_data" => Ok(Operand::CustomData(Vec::new())),
        _ => {
            let field = name.strip_prefix("user.custom_data.").ok_or_else(unknown)?;
            let path: Vec<String> = field.split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                return Err(unknown());
            }
            Ok(Operand::CustomData(path))
        }
    }
}

/// Converts plain or extended JSON into a [`Value`].
fn json_to_value(json: &serde_json::Value, depth: usize) -> Result<Value, FilterError> {
    if depth > MAX_DEPTH {
        return Err(FilterError::TooDeep { limit: MAX_DEPTH });
    }
    Ok(match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => number(n),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => Value::List(
            items
                .iter()
                .map(|item| json_to_value(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => {
            if let Some((key, inner)) = map.iter().next().filter(|_| map.len() == 1) {
                if VALUE_KEYS.contains(&key.as_str()) {
                    return extended(key, inner);
                }
            }
            let mut doc = Document::new();
            for (key, value) in map {
                if key.starts_with('$') {
                    return Err(FilterError::UnknownOperator {
                        operator: key.clone(),
                    });
                }
                doc.insert(key.clone(), json_to_value(value, depth + 1)?);
            }
            Value::Object(doc)
        }
    })
}

fn number(n: &serde_json::Number) -> Value {
    if let Some(i) = n.as_i64() {
        return Value::Int(i);
    }
    let d = n.as_f64().unwrap_or(f64::NAN);
    // Below 2^63 in magnitude, an integral double converts to i64 exactly.
    if d.fract() == 0.0 && d.abs() < 9_223_372_036_854_775_808.0 {
        Value::Int(d as i64)
    } else {
        Value::Double(d)
    }
}

/// Decodes `{"$oid": ...}` and its relatives.
fn extended(key: &str, inner: &serde_json::Value) -> Result<Value, FilterError> {
    let invalid = || FilterError::InvalidValue {
        key: key.to_owned(),
        found: show(inner),
    };
    let text = inner.as_str();
    let value = match key {
        "$oid" => text
            .and_then(|t| ObjectId::parse(t).ok())
            .map(Value::ObjectId),
        "$uuid" => text.and_then(|t| Uuid::parse(t).ok()).map(Value::Uuid),
        "$numberDecimal" => text
            .and_then(|t| Decimal::parse(t).ok())
            .map(Value::Decimal),
        "$numberLong" | "$numberInt" => text.and_then(|t| t.parse().ok()).map(Value::Int),
        "$numberDouble" => text
            .and_then(|t| match t {
                "Infinity" => Some(f64::INFINITY),
                "-Infinity" => Some(f64::NEG_INFINITY),
                "NaN" => Some(f64::NAN),
                t => crate::value::read_double(t),
            })
            .map(Value::Double),
        "$date" => match inner {
            serde_json::Value::Number(n) => n.as_i64().map(Value::Date),
            serde_json::Value::Object(map) => map
                .get("$numberLong")
                .and_then(serde_json::Value::as_str)
                .and_then(|t| t.parse().ok())
                .map(Value::Date),
            _ => None,
        },
        _ => inner
            .get("base64")
            .and_then(serde_json::Value::as_str)
            .and_then(literal::base64_decode)
            .map(Value::Binary),
    };
    value.ok_or_else(invalid)
}

fn node_matches(node: &Node, doc: &Document, user: &UserContext) -> bool {
    match node {
        Node::Const(b) => *b,
        Node::And(items) => items.iter().all(|item| node_matches(item, doc, user)),
        Node::Or(items) => items.iter().any(|item| node_matches(item, doc, user)),
        Node::Not(inner) => !node_matches(inner, doc, user),
        Node::Field { path, ops } => ops.iter().all(|op| op_matches(op, doc, path, user)),
    }
}

fn op_matches(op: &FieldOp, doc: &Document, path: &[String], user: &UserContext) -> bool {
    match op {
        FieldOp::Eq(operand) => equal_match(doc, path, &resolve(operand, user)),
        FieldOp::Ne(operand) => !equal_match(doc, path, &resolve(operand, user)),
        FieldOp::Order(operand, accepted) => {
            let target = resolve(operand, user);
            any_value(doc, path, &mut |value| {
                each_element(value, &mut |e| {
                    ordered(e, &target).is_some_and(|ord| accepted.contains(&ord))
                })
            })
        }
        FieldOp::In(items) => items
            .iter()
            .any(|item| equal_match(doc, path, &resolve(item, user))),
        FieldOp::Nin(items) => !items
            .iter()
            .any(|item| equal_match(doc, path, &resolve(item, user))),
        FieldOp::Exists(wanted) => any_value(doc, path, &mut |_| true) == *wanted,
        FieldOp::Not(ops) => !ops.iter().all(|op| op_matches(op, doc, path, user)),
    }
}

/// MongoDB equality: the field (or any element of an array field) equals `target`; `null`
/// also matches a missing field.
fn equal_match(doc: &Document, path: &[String], target: &Value) -> bool {
    if target.is_null() && !any_value(doc, path, &mut |_| true) {
        return true;
    }
    any_value(doc, path, &mut |value| {
        equals(value, target, false) || each_element(value, &mut |e| equals(e, target, false))
    })
}

/// Runs `test` on a value, or on each element if it is an array or set; true if any passes.
fn each_element(value: &Value, test: &mut dyn FnMut(&Value) -> bool) -> bool {
    match value {
        Value::List(items) | Value::Set(items) => items.iter().any(test),
        other => test(other),
    }
}

/// Whether `test` holds for any value found at `path` (going into arrays of embedded objects).
fn any_value(doc: &Document, path: &[String], test: &mut dyn FnMut(&Value) -> bool) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    doc.get(first)
        .is_some_and(|value| descend(value, rest, test))
}

fn descend(value: &Value, path: &[String], test: &mut dyn FnMut(&Value) -> bool) -> bool {
    let Some((name, rest)) = path.split_first() else {
        return test(value);
    };
    match value {
        Value::Object(fields) => fields
            .get(name)
            .is_some_and(|next| descend(next, rest, test)),
        Value::Dict(entries) => entries
            .get(name)
            .is_some_and(|next| descend(next, rest, test)),
        Value::List(items) | Value::Set(items) => items.iter().any(|item| {
            matches!(item, Value::Object(_) | Value::Dict(_)) && descend(item, path, test)
        }),
        _ => false,
    }
}

/// The value of an operand for `user`.
fn resolve<'a>(operand: &'a Operand, user: &'a UserContext) -> Cow<'a, Value> {
    match operand {
        Operand::Value(value) => Cow::Borrowed(value),
        Operand::UserId => Cow::Owned(Value::String(user.id.clone())),
        Operand::UserName => Cow::Owned(
            user.name
                .as_ref()
                .map_or(Value::Null, |name| Value::String(name.clone())),
        ),
        Operand::CustomData(path) => {
            let Some((first, rest)) = path.split_first() else {
                return Cow::Owned(Value::Object(user.custom_data.clone()));
            };
            let mut current = user.custom_data.get(first);
            for name in rest {
                current = match current {
                    Some(Value::Object(fields)) => fields.get(name),
                    Some(Value::Dict(entries)) => entries.get(name),
                    _ => None,
                };
            }
            current.map_or(Cow::Owned(Value::Null), Cow::Borrowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn user() -> UserContext {
        let mut custom_data = Document::new();
        custom_data.insert("team".into(), Value::from("red"));
        let mut org = Document::new();
        org.insert("id".into(), Value::Int(7));
        custom_data.insert("org".into(), Value::Object(org));
        UserContext {
            id: "u1".into(),
            name: Some("Ada".into()),
            custom_data,
        }
    }

    fn doc(json: serde_json::Value) -> Document {
        match json_to_value(&json, 0).unwrap() {
            Value::Object(doc) => doc,
            other => panic!("not an object: {other:?}"),
        }
    }

    fn check(filter: serde_json::Value, document: serde_json::Value) -> bool {
        DocumentFilter::from_json(&filter)
            .unwrap()
            .matches(&doc(document), &user())
    }

    #[test]
    fn constants() {
        for (json, truth) in [
            (json!({}), true),
            (json!(true), true),
            (json!("%%true"), true),
            (json!(false), false),
            (json!("%%false"), false),
            (json!({"$or": [{"a": 1}, true]}), true),
            (json!({"$and": [{"a": 1}, false]}), false),
            (json!({"$nor": [false]}), true),
            (json!({"$not": {}}), false),
        ] {
            let filter = DocumentFilter::from_json(&json).unwrap();
            assert_eq!(filter.is_true(), truth, "{json}");
            assert_eq!(filter.is_false(), !truth, "{json}");
            assert_eq!(filter.matches(&Document::new(), &user()), truth);
        }
        let filter = DocumentFilter::from_json(&json!({"a": 1})).unwrap();
        assert!(!filter.is_true() && !filter.is_false());
    }

    #[test]
    fn placeholders() {
        assert!(check(
            json!({"owner_id": "%%user.id"}),
            json!({"owner_id": "u1"})
        ));
        assert!(!check(
            json!({"owner_id": "%%user.id"}),
            json!({"owner_id": "u2"})
        ));
        assert!(check(
            json!({"owner": "%%user.name"}),
            json!({"owner": "Ada"})
        ));
        assert!(check(
            json!({"team": "%%user.custom_data.team"}),
            json!({"team": "red"})
        ));
        assert!(check(
            json!({"org": "%%user.custom_data.org.id"}),
            json!({"org": 7})
        ));
        assert!(check(json!({"x": "%%user.custom_data.missing"}), json!({})));
        assert!(check(json!({"public": "%%true"}), json!({"public": true})));
        assert!(check(
            json!({"owner_id": {"$in": ["x", "%%user.id"]}}),
            json!({"owner_id": "u1"})
        ));
        assert!(check(
            json!({"readers": "%%user.id"}),
            json!({"readers": ["u0", "u1"]})
        ));
        assert!(!check(
            json!({"public": "%%false"}),
            json!({"public": true})
        ));
        let nameless = UserContext {
            name: None,
            ..user()
        };
        let filter = DocumentFilter::from_json(&json!({"owner": "%%user.name"})).unwrap();
        assert!(filter.matches(&Document::new(), &nameless));
        assert_eq!(
            DocumentFilter::from_json(&json!({"a": "%%user.email"})),
            Err(FilterError::UnknownPlaceholder {
                placeholder: "%%user.email".into()
            })
        );
        assert!(DocumentFilter::from_json(&json!({"a": "%%user.custom_data."})).is_err());
    }

    #[test]
    fn comparison_operators() {
        let d = json!({"score": 7, "name": "bo", "price": 2.5});
        assert!(check(json!({"score": {"$gte": 5, "$lt": 10}}), d.clone()));
        assert!(!check(json!({"score": {"$gt": 7}}), d.clone()));
        assert!(check(json!({"score": {"$gte": 7.0}}), d.clone()));
        assert!(check(json!({"score": {"$lte": 7}}), d.clone()));
        assert!(check(json!({"score": {"$eq": 7}}), d.clone()));
        assert!(check(json!({"score": {"$ne": 8}}), d.clone()));
        assert!(check(json!({"price": {"$gt": 2, "$lt": 3}}), d.clone()));
        assert!(!check(json!({"name": {"$gt": 1}}), d.clone()));
        assert!(check(json!({"name": {"$gt": "a"}}), d.clone()));
        assert!(!check(json!({"missing": {"$lt": 1}}), d.clone()));
        assert!(check(json!({"score": {"$in": [1, 7]}}), d.clone()));
        assert!(!check(json!({"score": {"$nin": [1, 7]}}), d.clone()));
        assert!(check(json!({"score": {"$nin": [1, 2]}}), d.clone()));
        assert!(check(json!({"score": {"$not": {"$gt": 10}}}), d.clone()));
        assert!(!check(json!({"score": {"$not": {"$gt": 1}}}), d));
    }

    #[test]
    fn exists_and_null() {
        let d = json!({"a": null, "b": 1});
        assert!(check(json!({"a": {"$exists": true}}), d.clone()));
        assert!(check(json!({"c": {"$exists": false}}), d.clone()));
        assert!(!check(json!({"b": {"$exists": false}}), d.clone()));
        assert!(check(json!({"a": null}), d.clone()));
        assert!(check(json!({"c": null}), d.clone()));
        assert!(!check(json!({"b": null}), d.clone()));
        assert!(check(json!({"b": {"$ne": null}}), d.clone()));
        assert!(!check(json!({"c": {"$ne": null}}), d));
    }

    #[test]
    fn arrays_and_dotted_paths() {
        let d = json!({
            "tags": ["a", "b"],
            "addr": {"city": "Oslo"},
            "items": [{"sku": 1}, {"sku": 2}],
            "scores": [3, 9]
        });
        assert!(check(json!({"tags": "a"}), d.clone()));
        assert!(!check(json!({"tags": "c"}), d.clone()));
        assert!(check(json!({"tags": ["a", "b"]}), d.clone()));
        assert!(check(json!({"tags": {"$in": ["a", "z"]}}), d.clone()));
        assert!(!check(json!({"tags": {"$nin": ["a", "z"]}}), d.clone()));
        assert!(check(json!({"addr.city": "Oslo"}), d.clone()));
        assert!(!check(json!({"addr.city": "Bergen"}), d.clone()));
        assert!(check(json!({"items.sku": 2}), d.clone()));
        assert!(check(json!({"scores": {"$gt": 8}}), d.clone()));
        assert!(!check(json!({"scores": {"$gt": 9}}), d.clone()));
        assert!(check(json!({"addr": {"city": "Oslo"}}), d));
    }

    #[test]
    fn logical_operators() {
        let d = json!({"public": false, "owner_id": "u1", "n": 3});
        let rule = json!({"$or": [{"public": true}, {"owner_id": "%%user.id"}]});
        assert!(check(rule, d.clone()));
        assert!(check(
            json!({"$and": [{"n": 3}, {"owner_id": "u1"}]}),
            d.clone()
        ));
        assert!(!check(
            json!({"$and": [{"n": 3}, {"owner_id": "u2"}]}),
            d.clone()
        ));
        assert!(check(
            json!({"$nor": [{"n": 4}, {"public": true}]}),
            d.clone()
        ));
        assert!(!check(json!({"$nor": [{"n": 3}]}), d.clone()));
        assert!(check(json!({"$not": {"n": 4}}), d.clone()));
        assert!(check(json!({"n": 3, "public": false}), d.clone()));
        assert!(!check(json!({"n": 3, "public": true}), d));
    }

    #[test]
    fn extended_json_values() {
        let oid = "5f1b2c3d4e5f6a7b8c9d0e1f";
        let mut document = Document::new();
        document.insert("_id".into(), Value::ObjectId(ObjectId::parse(oid).unwrap()));
        document.insert("at".into(), Value::Date(1_000));
        document.insert(
            "price".into(),
            Value::Decimal(Decimal::parse("9.50").unwrap()),
        );
        document.insert("blob".into(), Value::Binary(b"hi".to_vec()));
        let pass = |filter: serde_json::Value| {
            DocumentFilter::from_json(&filter)
                .unwrap()
                .matches(&document, &user())
        };
        assert!(pass(json!({"_id": {"$oid": oid}})));
        assert!(pass(json!({"at": {"$date": 1000}})));
        assert!(pass(json!({"at": {"$date": {"$numberLong": "1000"}}})));
        assert!(pass(json!({"at": {"$gt": {"$date": 999}}})));
        assert!(pass(json!({"price": {"$numberDecimal": "9.5"}})));
        assert!(pass(json!({"price": 9.5})));
        assert!(pass(
            json!({"blob": {"$binary": {"base64": "aGk=", "subType": "00"}}})
        ));
        assert_eq!(
            number(&serde_json::Number::from_f64(5.0).unwrap()),
            Value::Int(5)
        );
        assert!(DocumentFilter::from_json(&json!({"_id": {"$oid": "xyz"}})).is_err());
    }

    #[test]
    fn errors_are_descriptive() {
        let err =
            |json: serde_json::Value| DocumentFilter::from_json(&json).unwrap_err().to_string();
        assert_eq!(
            err(json!(5)),
            "a permission filter must be a JSON object, true or false, found 5"
        );
        assert!(
            err(json!({"a": {"$regex": "x"}})).starts_with("unknown filter operator \"$regex\"")
        );
        assert!(err(json!({"$where": "x"})).starts_with("unknown filter operator \"$where\""));
        assert_eq!(
            err(json!({"a": {"$in": 5}})),
            "\"$in\" takes an array, found 5"
        );
        assert_eq!(
            err(json!({"$or": []})),
            "\"$or\" needs at least one filter in its array"
        );
        assert_eq!(
            err(json!({"a": {"$exists": "yes"}})),
            "\"$exists\" takes true or false, found \"yes\""
        );
        assert!(err(json!({"a": {"$gt": 1, "b": 2}})).contains("mixes $ operators"));
        assert!(err(json!({"a..b": 1})).starts_with("invalid field path \"a..b\""));
        assert!(err(json!({"a": {"$not": 5}})).starts_with("\"$not\" takes an object"));
        let mut deep = json!({"a": 1});
        for _ in 0..40 {
            deep = json!({ "$and": [deep] });
        }
        assert_eq!(err(deep), "the filter nests deeper than 32 levels");
    }

    proptest! {
        /// `$eq` on a scalar field agrees with numeric/string equality, and `$ne` is its negation.
        #[test]
        fn eq_and_ne_are_complements(a in -5i64..5, b in -5i64..5, as_double in any::<bool>()) {
            let target = if as_double { json!(b as f64 + 0.0) } else { json!(b) };
            let document = json!({"x": a});
            let eq = check(json!({"x": {"$eq": target.clone()}}), document.clone());
            let ne = check(json!({"x": {"$ne": target}}), document);
            prop_assert_eq!(eq, a == b);
            prop_assert_eq!(ne, a != b);
        }

        /// Range operators agree with integer comparison, also through arrays (any element).
        #[test]
        fn ranges_agree_with_integers(values in proptest::collection::vec(-20i64..20, 0..5), bound in -20i64..20) {
            let document = json!({"v": values.clone()});
            prop_assert_eq!(check(json!({"v": {"$gt": bound}}), document.clone()), values.iter().any(|v| *v > bound));
            prop_assert_eq!(check(json!({"v": {"$lte": bound}}), document.clone()), values.iter().any(|v| *v <= bound));
            prop_assert_eq!(check(json!({"v": bound}), document.clone()), values.contains(&bound));
            prop_assert_eq!(check(json!({"v": {"$nin": [bound]}}), document), !values.contains(&bound));
        }
    }
}
