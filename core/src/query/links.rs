//! Which collections a query reads through links: a change to an object of one of them can
//! change which objects of the query's own collection match, although none of those objects
//! changed (`owner.name == "Ann"` stops matching a task when its owner is renamed).

use crate::schema::{Container, ScalarType, Schema, PRIMARY_KEY};

use super::ast::{Clause, Operand, Predicate, Step};
use super::Query;

/// The collections `query`, run on `collection`, reaches by following a link (sorted, without
/// repeats). Embedded objects are part of their parent, so they are stepped through, not named.
/// Paths the schema does not resolve reach nothing (validation reports them).
pub(crate) fn linked_collections(query: &Query, schema: &Schema, collection: &str) -> Vec<String> {
    let mut paths = Vec::new();
    operands_of(&query.predicate, &mut paths);
    for clause in &query.clauses {
        match clause {
            Clause::Sort(items) => paths.extend(items.iter().map(|(path, _)| &path.steps)),
            Clause::Distinct(items) => paths.extend(items.iter().map(|path| &path.steps)),
            Clause::Limit(_) => {}
        }
    }
    let mut out: Vec<String> = Vec::new();
    for steps in paths {
        let mut current = collection;
        let mut previous: Option<(&ScalarType, Container)> = None;
        for step in steps {
            let (Step::Property(name) | Step::Key(name)) = step;
            if let Some((ty, container)) = previous.take() {
                if container == Container::Dictionary {
                    // A dictionary's key step stays on its values' type.
                    previous = Some((ty, Container::Single));
                    continue;
                }
                match ty {
                    ScalarType::Link(target) => {
                        if !out.iter().any(|c| c == target) {
                            out.push(target.clone());
                        }
                        current = target;
                    }
                    ScalarType::Embedded(target) => current = target,
                    _ => break,
                }
            }
            if name == PRIMARY_KEY {
                break;
            }
            let Some(property) = schema
                .collection(current)
                .and_then(|c| c.properties.get(name.as_str()))
            else {
                break;
            };
            previous = Some((&property.ty, property.container));
        }
    }
    out.sort();
    out
}

fn operands_of<'q>(predicate: &'q Predicate, out: &mut Vec<&'q Vec<Step>>) {
    match predicate {
        Predicate::True | Predicate::False => {}
        Predicate::And(items) | Predicate::Or(items) => {
            items.iter().for_each(|item| operands_of(item, out));
        }
        Predicate::Not(inner) => operands_of(inner, out),
        Predicate::Compare(c) => {
            operand_paths(&c.lhs, out);
            operand_paths(&c.rhs, out);
        }
    }
}

fn operand_paths<'q>(operand: &'q Operand, out: &mut Vec<&'q Vec<Step>>) {
    match operand {
        Operand::Path(path) => out.push(&path.steps),
        Operand::List(items) => items.iter().for_each(|item| operand_paths(item, out)),
        Operand::Literal(_) | Operand::Arg(_) => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::query::parse;
    use crate::sim::sim_schema;

    fn linked(query: &str) -> Vec<String> {
        parse(query)
            .unwrap()
            .linked_collections(&sim_schema(), "Item")
    }

    #[test]
    fn only_links_that_are_followed_count() {
        assert_eq!(linked("link.n == 5"), ["Item"]);
        assert_eq!(
            linked("n == 1 OR NOT (link.link.s BEGINSWITH 'a')"),
            ["Item"]
        );
        assert_eq!(linked("n == 1 SORT(link.n ASC)"), ["Item"]);
        assert!(
            linked("link == null").is_empty(),
            "the link itself is in the object"
        );
        assert!(linked("sub.x == 1 AND attrs.k == 2 AND ANY tags == 3").is_empty());
        assert!(
            linked("nope.n == 1").is_empty(),
            "unknown paths reach nothing"
        );
    }
}
