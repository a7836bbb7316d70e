//! Queries: the RQL (Realm Query Language) subset used by local queries and flexible-sync
//! subscriptions, and the MongoDB-style document filters of permission rules ([`filter`]).
//!
//! # RQL
//!
//! ```text
//! status == "open" AND (priority >= 3 || owner.name BEGINSWITH[c] $0)
//!     SORT(priority DESC, title ASC) DISTINCT(title) LIMIT(10)
//! ```
//!
//! - Comparisons `== = != < <= > >=` between key paths, literals and `$N` arguments, either
//!   side; `AND`/`&&`, `OR`/`||`, `NOT`/`!`, parentheses, `TRUEPREDICATE`, `FALSEPREDICATE`.
//! - String operators `BEGINSWITH`, `ENDSWITH`, `CONTAINS`, `LIKE` (`*`, `?`), and `==`/`!=`,
//!   each optionally followed by `[c]` for case-insensitive matching (simple case folding).
//! - `IN {a, b}`, `IN $N` (a list argument), `IN list.path`, `BETWEEN {low, high}`.
//! - Literals: integers, floats (`1.5`, `1e3`, `inf`, `nan`), strings in `'...'` or `"..."`
//!   with `\` escapes, `true`, `false`, `null`/`nil`, `oid(hex)`, `uuid(...)`,
//!   `decimal128(1.50)`, dates `T<seconds>:<nanos>` or `YYYY-MM-DD@HH:MM:SS[:nanos]`, binary
//!   `B64"..."`. Fractional literals are doubles; they compare numerically with decimals.
//! - Key paths through embedded objects and links (`owner.name`), dictionaries
//!   (`prices['eur']`, `prices.eur`), ending in `@count`/`@size`, `@keys`/`@values`, or the
//!   aggregates `@min`, `@max`, `@sum`, `@avg`; prefixes `ANY`/`SOME`, `ALL`, `NONE`. A bare path
//!   that reaches a list means `ANY`.
//! - Trailing `SORT(path ASC|DESC, ...)`, `DISTINCT(path, ...)`, `LIMIT(n)`, applied in the order
//!   written.
//!
//! Keywords are case-insensitive. [`Query`]'s `Display` writes canonical text that parses back
//! to an equal query.
//!
//! ```
//! use eddy_core::query::parse;
//!
//! let query = parse("age >= 18 and name beginswith[c] 'a' SORT(age DESC) LIMIT(3)").unwrap();
//! assert_eq!(
//!     query.to_string(),
//!     "age >= 18 AND name BEGINSWITH[c] \"a\" SORT(age DESC) LIMIT(3)"
//! );
//! let err = parse("age > 3 && x ==").unwrap_err();
//! assert_eq!(err.to_string(), "at offset 15: expected a value after \"==\", found end of query");
//! ```

mod ast;
mod compare;
mod eval;
pub mod filter;
mod lexer;
mod links;
mod literal;
mod parser;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::quote::Quoted;
use crate::schema::Schema;
use crate::value::{Document, PrimaryKey, Value};

pub use filter::{DocumentFilter, FilterError, UserContext};

/// Any problem with a query: a parse error, a mismatch with the schema found by
/// [`Query::validate`], or an argument problem found while evaluating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryError {
    /// Byte offset into the query text where the problem is.
    pub position: usize,
    /// What would have been accepted there.
    pub expected: String,
    /// What was there instead (quoted), or `end of query`.
    pub found: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at offset {}: expected {}, found {}",
            self.position, self.expected, self.found
        )
    }
}

impl std::error::Error for QueryError {}

/// Read access to the objects a query runs over; implemented by the object store.
pub trait ObjectSource {
    /// The schema of the objects.
    fn schema(&self) -> &Schema;
    /// The object of `collection` with primary key `key`, if it exists (used to follow links).
    fn get(&self, collection: &str, key: &PrimaryKey) -> Option<&Document>;
    /// Every object of `collection`, in a deterministic order (ties in `SORT` keep it).
    fn objects<'a>(
        &'a self,
        collection: &str,
    ) -> Box<dyn Iterator<Item = (&'a PrimaryKey, &'a Document)> + 'a>;
}

/// A parsed RQL query: a predicate plus optional `SORT`, `DISTINCT` and `LIMIT` clauses.
///
/// Two queries are equal when they have the same structure, whatever their spacing or keyword
/// case was.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    predicate: ast::Predicate,
    clauses: Vec<ast::Clause>,
}

/// Parses RQL text.
///
/// Nesting of parentheses and `NOT` is limited to 100 levels and key paths to 64 steps, so
/// hostile input cannot exhaust the stack.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    parser::parse_query(text)
}

impl Query {
    /// Checks property names and types against the schema of `collection`: unknown
    /// collections and properties, a string property compared with a number, `@count` on a
    /// scalar, `ALL` on a path without a list, and so on. Errors point at the key path.
    pub fn validate(&self, schema: &Schema, collection: &str) -> Result<(), QueryError> {
        validate::validate(self, schema, collection)
    }

    /// The collections this query, run on `collection`, reads through links (sorted): a change
    /// to one of their objects can change which objects of `collection` match.
    ///
    /// ```
    /// use eddy_core::query::parse;
    /// use eddy_core::schema_json::schema_from_json;
    ///
    /// let schema = schema_from_json(r#"{
    ///     "Task": { "primaryKey": "_id",
    ///               "properties": { "_id": "int", "owner": "Person?", "title": "string" } },
    ///     "Person": { "primaryKey": "_id", "properties": { "_id": "int", "name": "string" } }
    /// }"#).unwrap();
    /// let query = parse("owner.name == 'Ann' OR title == 'x'").unwrap();
    /// assert_eq!(query.linked_collections(&schema, "Task"), ["Person"]);
    /// assert!(parse("title == 'x'").unwrap().linked_collections(&schema, "Task").is_empty());
    /// ```
    pub fn linked_collections(&self, schema: &Schema, collection: &str) -> Vec<String> {
        links::linked_collections(self, schema, collection)
    }

    /// Whether `doc` matches the predicate. Links are followed through `source`; `args` are the
    /// values of `$0`, `$1`, .... Fails when the query names an argument that is missing or of
    /// the wrong shape (a list outside `IN`, a scalar after `IN`).
    pub fn matches(
        &self,
        doc: &Document,
        source: &dyn ObjectSource,
        args: &[Value],
    ) -> Result<bool, QueryError> {
        eval::matches(&self.predicate, doc, eval::Context { source, args })
    }

    /// Evaluates over a collection: filter, then the `SORT`, `DISTINCT` and `LIMIT` clauses in
    /// the order written. Returns primary keys in order.
    ///
    /// Without `SORT`, objects keep the order of [`ObjectSource::objects`]; sorting is stable and
    /// uses [`Value`]'s total order on the first value each sort path reaches (null if none).
    pub fn run(
        &self,
        source: &dyn ObjectSource,
        collection: &str,
        args: &[Value],
    ) -> Result<Vec<PrimaryKey>, QueryError> {
        match source.schema().collection(collection) {
            None => {
                return Err(QueryError {
                    position: 0,
                    expected: "a collection that is in the schema".to_owned(),
                    found: format!("{collection}", collection = Quoted(collection)),
                })
            }
            Some(c) if c.kind == crate::schema::CollectionKind::Asymmetric => {
                return Err(validate::asymmetric(collection))
            }
            Some(_) => {}
        }
        eval::run(self, source, collection, args)
    }

    /// Substitutes `$N` arguments, producing a self-contained query (for subscriptions sent to
    /// the server). Fails on a missing argument, and on values with no query-text form: links,
    /// dictionaries, embedded objects, and lists anywhere but after `IN`.
    pub fn bind(&self, args: &[Value]) -> Result<Query, QueryError> {
        Ok(Query {
            predicate: eval::bind_predicate(&self.predicate, args)?,
            clauses: self.clauses.clone(),
        })
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.predicate)?;
        for clause in &self.clauses {
            write!(f, " {clause}")?;
        }
        Ok(())
    }
}
