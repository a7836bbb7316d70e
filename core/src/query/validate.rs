//! Checks a parsed query against a schema: every key path must exist, `@` operations must fit
//! the property they end on, and literals must fit the type they are compared with.

use crate::quote::Quoted;
use crate::schema::{
    CollectionKind, CollectionSchema, Container, PrimaryKeyType, Property, ScalarType, Schema,
    PRIMARY_KEY,
};
use crate::value::Value;

use super::ast::{Clause, CompareOp, Comparison, KeyPath, Operand, Predicate, Step, Tail};
use super::{Query, QueryError};

/// Validates every predicate and clause of `query` for `collection`.
/// The error for a query on an asymmetric collection, whose objects no replica can read.
pub(crate) fn asymmetric(collection: &str) -> QueryError {
    QueryError {
        position: 0,
        expected: "a collection that is not asymmetric (ingested objects are never readable on a device; query them on the server)".to_owned(),
        found: format!("asymmetric collection {collection}", collection = Quoted(collection)),
    }
}

pub(crate) fn validate(query: &Query, schema: &Schema, collection: &str) -> Result<(), QueryError> {
    let root = schema.collection(collection).ok_or_else(|| QueryError {
        position: 0,
        expected: "a collection that is in the schema".to_owned(),
        found: format!("{collection}", collection = Quoted(collection)),
    })?;
    if root.kind == CollectionKind::Asymmetric {
        return Err(asymmetric(collection));
    }
    let checker = Checker { schema, root };
    checker.predicate(&query.predicate)?;
    for clause in &query.clauses {
        let (paths, name): (Vec<&KeyPath>, &str) = match clause {
            Clause::Sort(keys) => (keys.iter().map(|(path, _)| path).collect(), "SORT"),
            Clause::Distinct(paths) => (paths.iter().collect(), "DISTINCT"),
            Clause::Limit(_) => continue,
        };
        for path in paths {
            let resolved = checker.resolve(path)?;
            if resolved.multi {
                return Err(path_error(
                    path,
                    format!("a key path to a single value in {name}(...)"),
                    &resolved.property,
                ));
            }
        }
    }
    Ok(())
}

/// What a key path yields, as far as the schema tells.
struct Resolved {
    /// The property the path ends on (with the element type after `@` operations).
    property: Property,
    /// Whether the path can yield several values (it crosses or ends on a collection).
    multi: bool,
}

struct Checker<'s> {
    schema: &'s Schema,
    root: &'s CollectionSchema,
}

/// The path as written, without its quantifier, for messages.
fn path_text(path: &KeyPath) -> String {
    let bare = KeyPath {
        quantifier: None,
        ..path.clone()
    };
    Quoted(&bare.to_string()).to_string()
}

fn path_error(path: &KeyPath, expected: impl Into<String>, property: &Property) -> QueryError {
    QueryError {
        position: path.offset.0,
        expected: expected.into(),
        found: format!("{} of type {}", path_text(path), property.type_name()),
    }
}

fn is_numeric(ty: &ScalarType) -> bool {
    matches!(
        ty,
        ScalarType::Int | ScalarType::Double | ScalarType::Decimal | ScalarType::Counter
    )
}

/// How to describe a value that fits `ty`, for "expected ..." messages.
fn describe(ty: &ScalarType) -> String {
    match ty {
        ty if is_numeric(ty) => "a number".to_owned(),
        ScalarType::Bool => "a bool".to_owned(),
        ScalarType::String => "a string".to_owned(),
        ScalarType::Binary => "binary data".to_owned(),
        ScalarType::Date => "a date".to_owned(),
        ScalarType::ObjectId => "an objectId".to_owned(),
        ScalarType::Uuid => "a uuid".to_owned(),
        ScalarType::Link(target) => format!("a link to {target}", target = Quoted(target)),
        ScalarType::Embedded(_) => "null (embedded objects only compare with null)".to_owned(),
        _ => "any value".to_owned(),
    }
}

/// Whether a literal may be compared with a property of element type `ty`.
fn literal_fits(ty: &ScalarType, value: &Value) -> bool {
    match (ty, value) {
        (_, Value::Null) | (ScalarType::Mixed, _) => true,
        (ty, value) if is_numeric(ty) => value.as_f64().is_some(),
        (ScalarType::Link(target), Value::Link(link)) => &link.collection == target,
        (ScalarType::Embedded(_), _) => false,
        (ty, value) => ty.accepts(value),
    }
}

/// Whether properties of element types `a` and `b` may be compared with each other.
fn types_fit(a: &ScalarType, b: &ScalarType) -> bool {
    a == b
        || matches!(a, ScalarType::Mixed)
        || matches!(b, ScalarType::Mixed)
        || (is_numeric(a) && is_numeric(b))
}

impl Checker<'_> {
    fn predicate(&self, predicate: &Predicate) -> Result<(), QueryError> {
        match predicate {
            Predicate::True | Predicate::False => Ok(()),
            Predicate::And(items) | Predicate::Or(items) => {
                items.iter().try_for_each(|item| self.predicate(item))
            }
            Predicate::Not(inner) => self.predicate(inner),
            Predicate::Compare(comparison) => self.comparison(comparison),
        }
    }

    fn comparison(&self, c: &Comparison) -> Result<(), QueryError> {
        let lhs = self.operand(&c.lhs, c.op)?;
        let rhs = self.operand(&c.rhs, c.op)?;
        match (&lhs, &rhs) {
            (Some((path, resolved)), None) => literals_fit(path, resolved, &c.rhs),
            (None, Some((path, resolved))) => literals_fit(path, resolved, &c.lhs),
            (Some((path, left)), Some((other, right))) => {
                if types_fit(&left.property.ty, &right.property.ty) {
                    Ok(())
                } else {
                    Err(path_error(
                        path,
                        format!(
                            "a property comparable with {} of type {}",
                            path_text(other),
                            right.property.type_name()
                        ),
                        &left.property,
                    ))
                }
            }
            (None, None) => Ok(()),
        }
    }

    /// Resolves a path operand and checks it suits `op`; `None` for literals and arguments.
    fn operand<'p>(
        &self,
        operand: &'p Operand,
        op: CompareOp,
    ) -> Result<Option<(&'p KeyPath, Resolved)>, QueryError> {
        let Operand::Path(path) = operand else {
            return Ok(None);
        };
        let resolved = self.resolve(path)?;
        if let Some(quantifier) = path.quantifier {
            if !resolved.multi {
                let word = match quantifier {
                    super::ast::Quantifier::Any => "ANY",
                    super::ast::Quantifier::All => "ALL",
                    super::ast::Quantifier::None => "NONE",
                };
                return Err(path_error(
                    path,
                    format!("a list, set or dictionary in the key path after {word}"),
                    &resolved.property,
                ));
            }
        }
        let ty = &resolved.property.ty;
        if op.is_string_op()
            && !matches!(ty, ScalarType::String | ScalarType::Mixed)
            && !(matches!(ty, ScalarType::Binary) && op != CompareOp::Like)
        {
            return Err(path_error(
                path,
                format!("a string property before {}", Quoted(op.as_str())),
                &resolved.property,
            ));
        }
        if op.is_ordering()
            && matches!(
                ty,
                ScalarType::Bool | ScalarType::Link(_) | ScalarType::Embedded(_)
            )
        {
            return Err(path_error(
                path,
                format!(
                    "a property that can be ordered with {}",
                    Quoted(op.as_str())
                ),
                &resolved.property,
            ));
        }
        Ok(Some((path, resolved)))
    }

    fn lookup(
        &self,
        collection: &CollectionSchema,
        name: &str,
        path: &KeyPath,
    ) -> Result<Property, QueryError> {
        if let Some(property) = collection.properties.get(name) {
            return Ok(property.clone());
        }
        if name == PRIMARY_KEY {
            if let Some(key) = collection.primary_key {
                let ty = match key {
                    PrimaryKeyType::Int => ScalarType::Int,
                    PrimaryKeyType::String => ScalarType::String,
                    PrimaryKeyType::ObjectId => ScalarType::ObjectId,
                    _ => ScalarType::Uuid,
                };
                return Ok(Property::new(PRIMARY_KEY, ty));
            }
        }
        Err(QueryError {
            position: path.offset.0,
            expected: format!("a property of {}", Quoted(&collection.name)),
            found: format!("{name}", name = Quoted(name)),
        })
    }

    /// Follows a key path through the schema.
    fn resolve(&self, path: &KeyPath) -> Result<Resolved, QueryError> {
        let mut multi = false;
        let mut current: Option<Property> = None;
        for (index, step) in path.steps.iter().enumerate() {
            let name = match step {
                Step::Property(name) | Step::Key(name) => name,
            };
            let next = match current.take() {
                None => self.lookup(self.root, name, path)?,
                Some(dict) if dict.container == Container::Dictionary => Property {
                    container: Container::Single,
                    ..dict
                },
                Some(property) => {
                    let (ScalarType::Link(target) | ScalarType::Embedded(target)) = &property.ty
                    else {
                        // Name the path up to the property that cannot be stepped into.
                        let prefix = KeyPath {
                            quantifier: None,
                            steps: path.steps.get(..index).unwrap_or_default().to_vec(),
                            tail: None,
                            offset: path.offset,
                        };
                        return Err(path_error(
                            &prefix,
                            format!("a link or embedded object before \".{name}\""),
                            &property,
                        ));
                    };
                    multi |= property.container != Container::Single;
                    let collection = self.schema.collection(target).ok_or_else(|| QueryError {
                        position: path.offset.0,
                        expected: "a link target that is in the schema".to_owned(),
                        found: format!("{target}", target = Quoted(target)),
                    })?;
                    self.lookup(collection, name, path)?
                }
            };
            current = Some(next);
        }
        let Some(property) = current else {
            return Err(QueryError {
                position: path.offset.0,
                expected: "a key path".to_owned(),
                found: "nothing".to_owned(),
            });
        };
        let is_collection = property.container != Container::Single;
        let single = |ty: ScalarType| Property {
            ty,
            container: Container::Single,
            ..property.clone()
        };
        let Some(tail) = path.tail else {
            return Ok(Resolved {
                property: single(property.ty.clone()),
                multi: multi || is_collection,
            });
        };
        // The property is the one before the `@` operation, so name the path without it.
        let before_tail = KeyPath {
            tail: None,
            ..path.clone()
        };
        let wrong = |expected: &str| {
            Err(path_error(
                &before_tail,
                format!("{expected} before {}", Quoted(tail.as_str())),
                &property,
            ))
        };
        match tail {
            Tail::Count | Tail::Size => {
                let sized = is_collection
                    || matches!(
                        property.ty,
                        ScalarType::String | ScalarType::Binary | ScalarType::Mixed
                    );
                if !sized {
                    return wrong("a list, set, dictionary, string or binary property");
                }
                Ok(Resolved {
                    property: single(ScalarType::Int),
                    multi,
                })
            }
            Tail::Keys | Tail::Values => {
                if property.container != Container::Dictionary {
                    return wrong("a dictionary property");
                }
                let ty = if tail == Tail::Keys {
                    ScalarType::String
                } else {
                    property.ty.clone()
                };
                Ok(Resolved {
                    property: single(ty),
                    multi: true,
                })
            }
            _ => {
                if !(is_collection || multi) {
                    return wrong("a list, set or dictionary");
                }
                let ty = &property.ty;
                let fits = is_numeric(ty)
                    || matches!(ty, ScalarType::Mixed)
                    || (matches!(tail, Tail::Min | Tail::Max) && matches!(ty, ScalarType::Date));
                if !fits {
                    return wrong("numbers (or dates, for @min and @max)");
                }
                let ty = if tail == Tail::Avg {
                    ScalarType::Double
                } else {
                    ty.clone()
                };
                Ok(Resolved {
                    property: single(ty),
                    multi: false,
                })
            }
        }
    }
}

/// Checks the literals on the other side of a comparison against the path's element type.
fn literals_fit(path: &KeyPath, resolved: &Resolved, other: &Operand) -> Result<(), QueryError> {
    let ty = &resolved.property.ty;
    let check = |value: &Value| {
        if literal_fits(ty, value) {
            Ok(())
        } else {
            Err(QueryError {
                position: path.offset.0,
                expected: format!("{} to compare with {}", describe(ty), path_text(path)),
                found: format!("{} ({})", Operand::Literal(value.clone()), value.kind()),
            })
        }
    };
    match other {
        Operand::Literal(value) => check(value),
        Operand::List(items) => items.iter().try_for_each(|item| match item {
            Operand::Literal(value) => check(value),
            _ => Ok(()),
        }),
        _ => Ok(()),
    }
}
