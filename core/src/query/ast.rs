//! The parsed form of an RQL query: predicates, operands, key paths and the trailing
//! `SORT`/`DISTINCT`/`LIMIT` clauses, with the canonical text each of them prints as.

use std::fmt;

use crate::value::Value;

use super::literal;

/// A byte offset into the query text, kept for error messages.
///
/// Offsets never take part in equality: a query equals the query parsed back from its canonical
/// text even though the whitespace, and so every offset, differs.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Offset(pub(crate) usize);

impl PartialEq for Offset {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

/// A boolean expression over one object.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Predicate {
    /// `TRUEPREDICATE`: every object.
    True,
    /// `FALSEPREDICATE`: no object.
    False,
    /// All of at least two predicates.
    And(Vec<Predicate>),
    /// Any of at least two predicates.
    Or(Vec<Predicate>),
    /// The negation of a predicate.
    Not(Box<Predicate>),
    /// A comparison between two operands.
    Compare(Box<Comparison>),
}

/// `lhs op rhs`, for example `age >= 18` or `name BEGINSWITH[c] $0`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Comparison {
    /// The left operand.
    pub(crate) lhs: Operand,
    /// The operator.
    pub(crate) op: CompareOp,
    /// Whether `[c]` followed the operator.
    pub(crate) case_insensitive: bool,
    /// The right operand: a [`Operand::List`] after `BETWEEN` (two items) and possibly after `IN`.
    pub(crate) rhs: Operand,
    /// Where the comparison starts.
    pub(crate) offset: Offset,
}

/// A comparison operator, with every spelling already resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CompareOp {
    /// `==` or `=`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `BEGINSWITH`.
    BeginsWith,
    /// `ENDSWITH`.
    EndsWith,
    /// `CONTAINS`.
    Contains,
    /// `LIKE`, with `*` and `?` wildcards.
    Like,
    /// `IN`: equal to any value on the right.
    In,
    /// `BETWEEN {low, high}`: inclusive on both ends.
    Between,
}

impl CompareOp {
    /// Whether the operator works on strings only and so may take `[c]`.
    pub(crate) fn is_string_op(self) -> bool {
        matches!(
            self,
            CompareOp::BeginsWith | CompareOp::EndsWith | CompareOp::Contains | CompareOp::Like
        )
    }

    /// Whether `[c]` may follow the operator.
    pub(crate) fn takes_case_flag(self) -> bool {
        self.is_string_op() || matches!(self, CompareOp::Eq | CompareOp::Ne)
    }

    /// Whether the operator orders its operands.
    pub(crate) fn is_ordering(self) -> bool {
        matches!(
            self,
            CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge | CompareOp::Between
        )
    }

    /// The canonical spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::BeginsWith => "BEGINSWITH",
            CompareOp::EndsWith => "ENDSWITH",
            CompareOp::Contains => "CONTAINS",
            CompareOp::Like => "LIKE",
            CompareOp::In => "IN",
            CompareOp::Between => "BETWEEN",
        }
    }
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Operand {
    /// A key path into the object.
    Path(KeyPath),
    /// A literal value (a scalar: never a list, dictionary or object).
    Literal(Value),
    /// `$N`, the N-th argument.
    Arg(Arg),
    /// `{a, b, ...}` after `IN` or `BETWEEN`; items are literals or arguments.
    List(Vec<Operand>),
}

/// `$N` with where it was written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Arg {
    /// The argument index.
    pub(crate) index: usize,
    /// Where `$N` starts.
    pub(crate) offset: Offset,
}

/// `ANY`/`SOME`, `ALL` or `NONE` before a key path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quantifier {
    /// At least one value matches (`ANY` or `SOME`; also the meaning of a bare list path).
    Any,
    /// Every value matches (true for an empty list).
    All,
    /// No value matches.
    None,
}

/// A dotted path such as `owner.name`, `tags.@count` or `prices['eur']`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct KeyPath {
    /// An explicit quantifier; `None` when the path was written bare.
    pub(crate) quantifier: Option<Quantifier>,
    /// At least one step.
    pub(crate) steps: Vec<Step>,
    /// A trailing `@` operation.
    pub(crate) tail: Option<Tail>,
    /// Where the path (or its quantifier) starts.
    pub(crate) offset: Offset,
}

impl KeyPath {
    /// The quantifier that applies: a bare path means `ANY`.
    pub(crate) fn effective_quantifier(&self) -> Quantifier {
        self.quantifier.unwrap_or(Quantifier::Any)
    }
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// `.name` (or the first name): a property, or a dictionary key written with a dot.
    Property(String),
    /// `['key']`: a dictionary key.
    Key(String),
}

/// The `@` operation that ends a key path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// `@count`: the number of elements (or characters, or bytes).
    Count,
    /// `@size`: the same as `@count`.
    Size,
    /// `@keys`: the keys of a dictionary.
    Keys,
    /// `@values`: the values of a dictionary.
    Values,
    /// `@min`: the smallest non-null value reached.
    Min,
    /// `@max`: the largest non-null value reached.
    Max,
    /// `@sum`: the sum of the numbers reached (0 when there are none).
    Sum,
    /// `@avg`: the mean of the numbers reached (null when there are none).
    Avg,
}

impl Tail {
    /// Resolves `@name` (case-insensitively), without the `@`.
    pub(crate) fn from_name(name: &str) -> Option<Tail> {
        const ALL: [Tail; 8] = [
            Tail::Count,
            Tail::Size,
            Tail::Keys,
            Tail::Values,
            Tail::Min,
            Tail::Max,
            Tail::Sum,
            Tail::Avg,
        ];
        ALL.into_iter().find(|tail| {
            tail.as_str()
                .strip_prefix('@')
                .is_some_and(|bare| bare.eq_ignore_ascii_case(name))
        })
    }

    /// The canonical spelling, with the `@`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Tail::Count => "@count",
            Tail::Size => "@size",
            Tail::Keys => "@keys",
            Tail::Values => "@values",
            Tail::Min => "@min",
            Tail::Max => "@max",
            Tail::Sum => "@sum",
            Tail::Avg => "@avg",
        }
    }
}

/// A clause after the predicate; clauses apply in the order written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Clause {
    /// `SORT(path ASC, path DESC, ...)`: `true` means ascending.
    Sort(Vec<(KeyPath, bool)>),
    /// `DISTINCT(path, ...)`: keeps the first object of each combination of values.
    Distinct(Vec<KeyPath>),
    /// `LIMIT(n)`: keeps the first `n` objects.
    Limit(u64),
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Predicate::True => f.write_str("TRUEPREDICATE"),
            Predicate::False => f.write_str("FALSEPREDICATE"),
            Predicate::And(items) => write_joined(f, items, " AND "),
            Predicate::Or(items) => write_joined(f, items, " OR "),
            Predicate::Not(inner) => match **inner {
                Predicate::And(_) | Predicate::Or(_) => write!(f, "NOT ({inner})"),
                _ => write!(f, "NOT {inner}"),
            },
            Predicate::Compare(comparison) => write!(f, "{comparison}"),
        }
    }
}

/// Writes the items of an `AND` or `OR`, parenthesizing the items that would otherwise re-parse
/// differently: nested `OR`s always, nested `AND`s inside an `AND` (so that nesting survives a
/// re-parse exactly). An `AND` inside an `OR` needs none: it binds tighter.
fn write_joined(f: &mut fmt::Formatter<'_>, items: &[Predicate], separator: &str) -> fmt::Result {
    let is_and = separator == " AND ";
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        match item {
            Predicate::Or(_) => write!(f, "({item})")?,
            Predicate::And(_) if is_and => write!(f, "({item})")?,
            _ => write!(f, "{item}")?,
        }
    }
    Ok(())
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = if self.case_insensitive { "[c]" } else { "" };
        write!(f, "{} {}{flag} {}", self.lhs, self.op.as_str(), self.rhs)
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Path(path) => write!(f, "{path}"),
            Operand::Literal(value) => literal::write_value(f, value),
            Operand::Arg(arg) => write!(f, "${}", arg.index),
            Operand::List(items) => {
                f.write_str("{")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("}")
            }
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.quantifier {
            Some(Quantifier::Any) => f.write_str("ANY ")?,
            Some(Quantifier::All) => f.write_str("ALL ")?,
            Some(Quantifier::None) => f.write_str("NONE ")?,
            None => {}
        }
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::Property(name) if i == 0 => f.write_str(name)?,
                Step::Property(name) => write!(f, ".{name}")?,
                Step::Key(key) => {
                    f.write_str("[")?;
                    literal::write_string(f, key)?;
                    f.write_str("]")?;
                }
            }
        }
        if let Some(tail) = self.tail {
            write!(f, ".{}", tail.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Display for Clause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clause::Sort(keys) => {
                f.write_str("SORT(")?;
                for (i, (path, ascending)) in keys.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    let direction = if *ascending { "ASC" } else { "DESC" };
                    write!(f, "{path} {direction}")?;
                }
                f.write_str(")")
            }
            Clause::Distinct(paths) => {
                f.write_str("DISTINCT(")?;
                for (i, path) in paths.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{path}")?;
                }
                f.write_str(")")
            }
            Clause::Limit(n) => write!(f, "LIMIT({n})"),
        }
    }
}
