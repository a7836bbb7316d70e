//! Evaluates a parsed query against objects: walks key paths through embedded objects, links
//! and dictionaries, fans out over lists with `ANY`/`ALL`/`NONE`, applies `@` operations, and
//! then sorts, de-duplicates and limits the matches.
//!
//! Simple comparisons allocate nothing: key paths yield references into the document (or into
//! objects reached through [`ObjectSource::get`]) and literals are compared in place.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::ControlFlow;

use crate::value::{Document, PrimaryKey, Value};

use super::ast::{
    Arg, Clause, CompareOp, Comparison, KeyPath, Operand, Predicate, Quantifier, Step, Tail,
};
use super::compare::{compare, equals, order, ordered};
use super::{literal, ObjectSource, Query, QueryError};

type Flow = ControlFlow<()>;

/// What a value visitor receives and returns: stop early with `Break`.
type Sink<'s> = dyn FnMut(&Value) -> Result<Flow, QueryError> + 's;

/// The value of a missing property, a dangling link, or a step through a non-object.
static NULL: Value = Value::Null;

/// Everything evaluation reads besides the object itself.
#[derive(Clone, Copy)]
pub(crate) struct Context<'a> {
    /// Where links are followed.
    pub(crate) source: &'a dyn ObjectSource,
    /// The values of `$0`, `$1`, ...
    pub(crate) args: &'a [Value],
}

/// Whether `doc` satisfies `predicate`.
pub(crate) fn matches(
    predicate: &Predicate,
    doc: &Document,
    ctx: Context<'_>,
) -> Result<bool, QueryError> {
    match predicate {
        Predicate::True => Ok(true),
        Predicate::False => Ok(false),
        Predicate::And(items) => {
            for item in items {
                if !matches(item, doc, ctx)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Predicate::Or(items) => {
            for item in items {
                if matches(item, doc, ctx)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Predicate::Not(inner) => Ok(!matches(inner, doc, ctx)?),
        Predicate::Compare(comparison) => compare_operands(comparison, doc, ctx),
    }
}

fn compare_operands(c: &Comparison, doc: &Document, ctx: Context<'_>) -> Result<bool, QueryError> {
    match c.op {
        CompareOp::Between => {
            let (low, high) = match &c.rhs {
                Operand::List(items) => match items.as_slice() {
                    [low, high] => (scalar(low, ctx)?, scalar(high, ctx)?),
                    _ => return Ok(false),
                },
                _ => return Ok(false),
            };
            quantified(&c.lhs, doc, ctx, false, &mut |x| {
                Ok(ordered(x, low).is_some_and(Ordering::is_ge)
                    && ordered(x, high).is_some_and(Ordering::is_le))
            })
        }
        CompareOp::In => quantified(&c.lhs, doc, ctx, false, &mut |x| {
            quantified(&c.rhs, doc, ctx, true, &mut |y| {
                Ok(equals(x, y, c.case_insensitive))
            })
        }),
        op => quantified(&c.lhs, doc, ctx, false, &mut |x| {
            quantified(&c.rhs, doc, ctx, false, &mut |y| {
                Ok(compare(op, c.case_insensitive, x, y))
            })
        }),
    }
}

/// The single value of a literal or argument operand (a `BETWEEN` bound).
fn scalar<'a>(operand: &'a Operand, ctx: Context<'a>) -> Result<&'a Value, QueryError> {
    match operand {
        Operand::Literal(value) => Ok(value),
        Operand::Arg(arg) => single_argument(arg, ctx.args),
        _ => Ok(&NULL),
    }
}

/// Applies the operand's quantifier to `test` over the values it yields.
fn quantified(
    operand: &Operand,
    doc: &Document,
    ctx: Context<'_>,
    expand_lists: bool,
    test: &mut dyn FnMut(&Value) -> Result<bool, QueryError>,
) -> Result<bool, QueryError> {
    let quantifier = match operand {
        Operand::Path(path) => path.effective_quantifier(),
        _ => Quantifier::Any,
    };
    // ANY and NONE look for a value that passes; ALL looks for one that fails.
    let stop_on = quantifier != Quantifier::All;
    let mut stopped = false;
    // Whether the walk stopped early is already recorded in `stopped`.
    let _ = visit(operand, doc, ctx, expand_lists, &mut |v| {
        if test(v)? == stop_on {
            stopped = true;
            return Ok(Flow::Break(()));
        }
        Ok(Flow::Continue(()))
    })?;
    Ok(match quantifier {
        Quantifier::Any => stopped,
        Quantifier::All | Quantifier::None => !stopped,
    })
}

/// Feeds every value of an operand to `sink`. With `expand_lists`, an argument must hold a list
/// or set and yields its elements (the right side of `IN`).
fn visit(
    operand: &Operand,
    doc: &Document,
    ctx: Context<'_>,
    expand_lists: bool,
    sink: &mut Sink<'_>,
) -> Result<Flow, QueryError> {
    match operand {
        Operand::Literal(value) => sink(value),
        Operand::Arg(arg) if expand_lists => match argument(arg, ctx.args)? {
            Value::List(items) | Value::Set(items) => {
                for item in items {
                    if sink(item)?.is_break() {
                        return Ok(Flow::Break(()));
                    }
                }
                Ok(Flow::Continue(()))
            }
            other => Err(argument_error(
                arg,
                "a list or set argument after IN",
                other,
            )),
        },
        Operand::Arg(arg) => sink(single_argument(arg, ctx.args)?),
        Operand::List(items) => {
            for item in items {
                if visit(item, doc, ctx, false, sink)?.is_break() {
                    return Ok(Flow::Break(()));
                }
            }
            Ok(Flow::Continue(()))
        }
        Operand::Path(path) => visit_path(path, doc, ctx.source, sink),
    }
}

/// The value of `$N`.
pub(crate) fn argument<'a>(arg: &Arg, args: &'a [Value]) -> Result<&'a Value, QueryError> {
    args.get(arg.index).ok_or_else(|| {
        let expected = match args.len() {
            0 => "an argument, but none were given".to_owned(),
            1 => "the only argument given ($0)".to_owned(),
            n => format!("one of the {n} arguments given ($0 to ${})", n - 1),
        };
        QueryError {
            position: arg.offset.0,
            expected,
            found: format!("\"${}\"", arg.index),
        }
    })
}

/// The value of `$N` where a single value is expected (anywhere but after `IN`).
pub(crate) fn single_argument<'a>(arg: &Arg, args: &'a [Value]) -> Result<&'a Value, QueryError> {
    let value = argument(arg, args)?;
    match value {
        Value::List(_) | Value::Set(_) | Value::Dict(_) | Value::Object(_) => Err(argument_error(
            arg,
            "a single value (a list argument can only follow IN)",
            value,
        )),
        _ => Ok(value),
    }
}

/// An error about the value an argument holds.
pub(crate) fn argument_error(arg: &Arg, expected: &str, value: &Value) -> QueryError {
    QueryError {
        position: arg.offset.0,
        expected: expected.to_owned(),
        found: format!("\"${}\" holding a {}", arg.index, value.kind()),
    }
}

/// Feeds every value a key path reaches in `doc` to `sink`.
pub(crate) fn visit_path(
    path: &KeyPath,
    doc: &Document,
    source: &dyn ObjectSource,
    sink: &mut Sink<'_>,
) -> Result<Flow, QueryError> {
    let steps = path.steps.as_slice();
    match path.tail {
        None => walk_document(doc, steps, source, &mut |v| elements(v, &mut |e| sink(e))),
        Some(Tail::Count | Tail::Size) => {
            walk_document(doc, steps, source, &mut |v| sink(&size(v)))
        }
        Some(Tail::Keys) => walk_document(doc, steps, source, &mut |v| {
            if let Value::Dict(dict) = v {
                for key in dict.keys() {
                    if sink(&Value::String(key.clone()))?.is_break() {
                        return Ok(Flow::Break(()));
                    }
                }
            }
            Ok(Flow::Continue(()))
        }),
        Some(Tail::Values) => walk_document(doc, steps, source, &mut |v| {
            if let Value::Dict(dict) = v {
                for value in dict.values() {
                    if sink(value)?.is_break() {
                        return Ok(Flow::Break(()));
                    }
                }
            }
            Ok(Flow::Continue(()))
        }),
        Some(tail) => {
            let mut aggregate = Aggregate::new(tail);
            let _ = walk_document(doc, steps, source, &mut |v| {
                elements(v, &mut |e| {
                    aggregate.add(e);
                    Ok(Flow::Continue(()))
                })
            })?;
            sink(&aggregate.finish())
        }
    }
}

/// The elements of a list or set, the values of a dictionary, or the value itself.
fn elements<'a>(
    value: &'a Value,
    sink: &mut dyn FnMut(&'a Value) -> Result<Flow, QueryError>,
) -> Result<Flow, QueryError> {
    match value {
        Value::List(items) | Value::Set(items) => each(items.iter(), sink),
        Value::Dict(dict) => each(dict.values(), sink),
        other => sink(other),
    }
}

/// Feeds every item to `sink` until it asks to stop.
fn each<'a>(
    items: impl Iterator<Item = &'a Value>,
    sink: &mut dyn FnMut(&'a Value) -> Result<Flow, QueryError>,
) -> Result<Flow, QueryError> {
    for item in items {
        if sink(item)?.is_break() {
            return Ok(Flow::Break(()));
        }
    }
    Ok(Flow::Continue(()))
}

/// `@count`/`@size`: elements, characters or bytes; a missing container counts as empty.
fn size(value: &Value) -> Value {
    let len = match value {
        Value::List(items) | Value::Set(items) => items.len(),
        Value::Dict(dict) => dict.len(),
        Value::String(s) => s.chars().count(),
        Value::Binary(bytes) => bytes.len(),
        Value::Null => 0,
        _ => return Value::Null,
    };
    Value::Int(i64::try_from(len).unwrap_or(i64::MAX))
}

fn step_name(step: &Step) -> &str {
    match step {
        Step::Property(name) | Step::Key(name) => name,
    }
}

fn walk_document<'a>(
    doc: &'a Document,
    steps: &[Step],
    source: &'a dyn ObjectSource,
    sink: &mut dyn FnMut(&'a Value) -> Result<Flow, QueryError>,
) -> Result<Flow, QueryError> {
    match steps.split_first() {
        Some((first, rest)) => walk(
            doc.get(step_name(first)).unwrap_or(&NULL),
            rest,
            source,
            sink,
        ),
        None => Ok(Flow::Continue(())),
    }
}

/// Applies the remaining steps to `value`, fanning out over lists and sets.
fn walk<'a>(
    value: &'a Value,
    steps: &[Step],
    source: &'a dyn ObjectSource,
    sink: &mut dyn FnMut(&'a Value) -> Result<Flow, QueryError>,
) -> Result<Flow, QueryError> {
    let Some((step, rest)) = steps.split_first() else {
        return sink(value);
    };
    let name = step_name(step);
    match value {
        Value::List(items) | Value::Set(items) => {
            for item in items {
                if walk(item, steps, source, sink)?.is_break() {
                    return Ok(Flow::Break(()));
                }
            }
            Ok(Flow::Continue(()))
        }
        Value::Object(fields) => walk(fields.get(name).unwrap_or(&NULL), rest, source, sink),
        Value::Dict(entries) => walk(entries.get(name).unwrap_or(&NULL), rest, source, sink),
        Value::Link(link) => {
            let target = source
                .get(&link.collection, &link.key)
                .and_then(|object| object.get(name));
            walk(target.unwrap_or(&NULL), rest, source, sink)
        }
        _ => walk(&NULL, rest, source, sink),
    }
}

/// Running state of `@min`, `@max`, `@sum` or `@avg`; nulls are skipped.
struct Aggregate<'a> {
    tail: Tail,
    best: Option<&'a Value>,
    /// The exact sum while every number is an int and nothing overflowed.
    int_sum: Option<i64>,
    float_sum: f64,
    count: u64,
}

impl<'a> Aggregate<'a> {
    fn new(tail: Tail) -> Self {
        Aggregate {
            tail,
            best: None,
            int_sum: Some(0),
            float_sum: 0.0,
            count: 0,
        }
    }

    fn add(&mut self, value: &'a Value) {
        if value.is_null() {
            return;
        }
        match self.tail {
            Tail::Min | Tail::Max => {
                let better = self.best.is_none_or(|best| {
                    let ord = order(value, best).unwrap_or_else(|| value.cmp(best));
                    if self.tail == Tail::Min {
                        ord.is_lt()
                    } else {
                        ord.is_gt()
                    }
                });
                if better {
                    self.best = Some(value);
                }
            }
            _ => {
                let Some(number) = value.as_f64() else {
                    return;
                };
                self.int_sum = match (self.int_sum, value) {
                    (Some(sum), Value::Int(i)) => sum.checked_add(*i),
                    _ => None,
                };
                self.float_sum += number;
                self.count += 1;
            }
        }
    }

    fn finish(self) -> Value {
        match self.tail {
            Tail::Min | Tail::Max => self.best.cloned().unwrap_or(Value::Null),
            Tail::Sum => match self.int_sum {
                Some(sum) => Value::Int(sum),
                None => Value::Double(self.float_sum),
            },
            _ if self.count == 0 => Value::Null,
            _ => Value::Double(self.float_sum / self.count as f64),
        }
    }
}

/// The first value a key path reaches (null if none): the sort and distinct key of an object.
fn first_value(
    path: &KeyPath,
    doc: &Document,
    source: &dyn ObjectSource,
) -> Result<Value, QueryError> {
    let mut first = Value::Null;
    let _ = visit_path(path, doc, source, &mut |v| {
        first = v.clone();
        Ok(Flow::Break(()))
    })?;
    Ok(first)
}

/// Filters, then applies the clauses in the order written.
pub(crate) fn run(
    query: &Query,
    source: &dyn ObjectSource,
    collection: &str,
    args: &[Value],
) -> Result<Vec<PrimaryKey>, QueryError> {
    let ctx = Context { source, args };
    let mut rows: Vec<(&PrimaryKey, &Document)> = Vec::new();
    for (key, doc) in source.objects(collection) {
        if matches(&query.predicate, doc, ctx)? {
            rows.push((key, doc));
        }
    }
    for clause in &query.clauses {
        match clause {
            Clause::Sort(keys) => {
                let mut keyed = Vec::with_capacity(rows.len());
                for row in rows {
                    let mut values = Vec::with_capacity(keys.len());
                    for (path, _) in keys {
                        values.push(first_value(path, row.1, source)?);
                    }
                    keyed.push((values, row));
                }
                crate::sort::sort_by(&mut keyed, |(a, _), (b, _)| {
                    keys.iter()
                        .zip(a.iter().zip(b))
                        .map(
                            |((_, ascending), (x, y))| {
                                if *ascending {
                                    x.cmp(y)
                                } else {
                                    y.cmp(x)
                                }
                            },
                        )
                        .find(|ord| ord.is_ne())
                        .unwrap_or(Ordering::Equal)
                });
                rows = keyed.into_iter().map(|(_, row)| row).collect();
            }
            Clause::Distinct(paths) => {
                let mut seen = BTreeSet::new();
                let mut kept = Vec::with_capacity(rows.len());
                for row in rows {
                    let mut values = Vec::with_capacity(paths.len());
                    for path in paths {
                        values.push(first_value(path, row.1, source)?);
                    }
                    if seen.insert(values) {
                        kept.push(row);
                    }
                }
                rows = kept;
            }
            Clause::Limit(limit) => rows.truncate(usize::try_from(*limit).unwrap_or(usize::MAX)),
        }
    }
    Ok(rows.into_iter().map(|(key, _)| key.clone()).collect())
}

/// Replaces every `$N` with its value, checking that each value can be written as query text.
pub(crate) fn bind_predicate(
    predicate: &Predicate,
    args: &[Value],
) -> Result<Predicate, QueryError> {
    Ok(match predicate {
        Predicate::True => Predicate::True,
        Predicate::False => Predicate::False,
        Predicate::And(items) => Predicate::And(
            items
                .iter()
                .map(|item| bind_predicate(item, args))
                .collect::<Result<_, _>>()?,
        ),
        Predicate::Or(items) => Predicate::Or(
            items
                .iter()
                .map(|item| bind_predicate(item, args))
                .collect::<Result<_, _>>()?,
        ),
        Predicate::Not(inner) => Predicate::Not(Box::new(bind_predicate(inner, args)?)),
        Predicate::Compare(c) => Predicate::Compare(Box::new(Comparison {
            lhs: bind_operand(&c.lhs, args, false)?,
            rhs: bind_operand(&c.rhs, args, c.op == CompareOp::In)?,
            ..(**c).clone()
        })),
    })
}

fn bind_operand(
    operand: &Operand,
    args: &[Value],
    expand_lists: bool,
) -> Result<Operand, QueryError> {
    let literal = |arg: &Arg, value: &Value| {
        if literal::is_writable(value) {
            Ok(Operand::Literal(value.clone()))
        } else {
            Err(argument_error(
                arg,
                "a value with a query-text form (compare a link through its primary key, such as owner._id == $0)",
                value,
            ))
        }
    };
    match operand {
        Operand::Arg(arg) if expand_lists => match argument(arg, args)? {
            Value::List(items) | Value::Set(items) => Ok(Operand::List(
                items
                    .iter()
                    .map(|item| literal(arg, item))
                    .collect::<Result<_, _>>()?,
            )),
            other => Err(argument_error(
                arg,
                "a list or set argument after IN",
                other,
            )),
        },
        Operand::Arg(arg) => literal(arg, single_argument(arg, args)?),
        Operand::List(items) => Ok(Operand::List(
            items
                .iter()
                .map(|item| bind_operand(item, args, false))
                .collect::<Result<_, _>>()?,
        )),
        other => Ok(other.clone()),
    }
}
