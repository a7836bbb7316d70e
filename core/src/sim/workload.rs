//! The simulation's schema and random writes covering every instruction type.

use crate::changeset::{Path, PathElement};
use crate::client::SplitMix64;
use crate::protocol::{Subscription, SubscriptionSet};
use crate::query::{DocumentFilter, FilterError};
use crate::schema::{
    CollectionKind, CollectionSchema, Container, PrimaryKeyType, Property, ScalarType, Schema,
};
use crate::server::view::{CollectionRules, Roles};
use crate::store::{ApplyError, WriteTransaction};
use crate::value::{Document, Link, PrimaryKey, Value};

const ITEM: &str = "Item";
/// The simulation's asymmetric (Data Ingest) collection.
pub const READING: &str = "Reading";
const KEYS: u64 = 6;

fn property(name: &str, ty: ScalarType, container: Container, optional: bool) -> Property {
    Property {
        name: name.into(),
        ty,
        container,
        optional,
        indexed: false,
    }
}

/// `Item` (int keys) with a field of every kind the instructions touch, and embedded `Sub`.
pub fn sim_schema() -> Schema {
    let mut schema = Schema::default();
    schema.insert(
        CollectionSchema::top_level(ITEM, PrimaryKeyType::Int)
            .with(property("n", ScalarType::Int, Container::Single, true))
            .with(property("c", ScalarType::Counter, Container::Single, true))
            .with(property("s", ScalarType::String, Container::Single, true))
            .with(property("tags", ScalarType::Int, Container::List, false))
            .with(property(
                "labels",
                ScalarType::String,
                Container::Set,
                false,
            ))
            .with(property(
                "attrs",
                ScalarType::Int,
                Container::Dictionary,
                false,
            ))
            .with(property(
                "sub",
                ScalarType::Embedded("Sub".into()),
                Container::Single,
                true,
            ))
            .with(property(
                "link",
                ScalarType::Link(ITEM.into()),
                Container::Single,
                true,
            )),
    );
    schema.insert(CollectionSchema {
        name: "Sub".into(),
        kind: CollectionKind::Embedded,
        primary_key: None,
        properties: [
            (
                "x".to_owned(),
                property("x", ScalarType::Int, Container::Single, true),
            ),
            (
                "ys".to_owned(),
                property("ys", ScalarType::Int, Container::List, false),
            ),
        ]
        .into_iter()
        .collect(),
    });
    schema.insert(CollectionSchema {
        kind: CollectionKind::Asymmetric,
        ..CollectionSchema::top_level(READING, PrimaryKeyType::Int)
            .with(property("value", ScalarType::Int, Container::Single, false))
            .with(property("samples", ScalarType::Int, Container::List, false))
    });
    schema
}

/// Ingests one asymmetric reading with a random 62-bit key; returns the key.
pub fn random_ingest(
    tx: &mut WriteTransaction<'_>,
    rng: &mut SplitMix64,
) -> Result<PrimaryKey, ApplyError> {
    let key = PrimaryKey::Int((rng.next_u64() >> 2) as i64);
    let mut doc = Document::new();
    doc.insert("value".into(), Value::Int(small(rng)));
    let samples = (0..rng.below(4)).map(|_| Value::Int(small(rng))).collect();
    doc.insert("samples".into(), Value::List(samples));
    tx.ingest(READING, key.clone(), doc)?;
    Ok(key)
}

fn list_len(doc: &Document, field: &str) -> u64 {
    match doc.get(field) {
        Some(Value::List(items)) => items.len() as u64,
        _ => 0,
    }
}

fn small(rng: &mut SplitMix64) -> i64 {
    rng.below(100) as i64
}

/// Makes one random change through `tx`, choosing only operations valid on the current state.
pub fn random_op(tx: &mut WriteTransaction<'_>, rng: &mut SplitMix64) -> Result<(), ApplyError> {
    let key = PrimaryKey::Int(rng.below(KEYS) as i64);
    let Some(doc) = tx.get(ITEM, &key).cloned() else {
        tx.create(ITEM, key.clone())?;
        return tx.set(Path::field(ITEM, key, "n"), Value::Int(small(rng)));
    };
    let field = |name: &str| Path::field(ITEM, key.clone(), name);
    if rng.below(25) == 0 {
        // Additive schema changes (the simulated server runs in development mode). Each extra
        // property always gets the same definition, so concurrent adds are identical.
        let name = format!("extra{}", rng.below(3));
        if tx
            .store()
            .schema()
            .collection(ITEM)
            .is_some_and(|c| c.properties.contains_key(&name))
        {
            return tx.set(field(&name), Value::Int(small(rng)));
        }
        return tx.add_property(
            ITEM,
            property(&name, ScalarType::Int, Container::Single, true),
        );
    }
    match rng.below(20) {
        0 => tx.erase(ITEM, key.clone()),
        1 | 2 => tx.set(field("n"), Value::Int(small(rng))),
        3 | 4 => tx.add_integer(field("c"), 1 + small(rng) % 5),
        5 => tx.set(
            field("s"),
            if rng.below(4) == 0 {
                Value::Null
            } else {
                Value::String(format!("s{}", small(rng)))
            },
        ),
        6 | 7 => {
            let len = list_len(&doc, "tags");
            tx.list_insert(
                field("tags"),
                rng.below(len + 1) as u32,
                Value::Int(small(rng)),
            )
        }
        8 => match list_len(&doc, "tags") {
            0 => tx.list_insert(field("tags"), 0, Value::Int(small(rng))),
            len => tx.list_set(field("tags"), rng.below(len) as u32, Value::Int(small(rng))),
        },
        9 => match list_len(&doc, "tags") {
            0 => Ok(()),
            len => tx.list_move(field("tags"), rng.below(len) as u32, rng.below(len) as u32),
        },
        10 => match list_len(&doc, "tags") {
            0 => Ok(()),
            len => tx.list_erase(field("tags"), rng.below(len) as u32),
        },
        11 => {
            if rng.below(3) == 0 {
                tx.clear(field("tags"))
            } else {
                tx.clear(field("labels"))
            }
        }
        12 => tx.set_insert(field("labels"), Value::String(format!("l{}", rng.below(5)))),
        13 => tx.set_erase(field("labels"), Value::String(format!("l{}", rng.below(5)))),
        14 => tx.dict_set(
            field("attrs"),
            &format!("k{}", rng.below(4)),
            Value::Int(small(rng)),
        ),
        15 => tx.dict_erase(field("attrs"), &format!("k{}", rng.below(4))),
        16 => {
            let mut sub = Document::new();
            sub.insert("x".into(), Value::Int(small(rng)));
            sub.insert("ys".into(), Value::List(Vec::new().into()));
            tx.set(field("sub"), Value::Object(sub))
        }
        17 => match doc.get("sub") {
            Some(Value::Object(_)) => tx.set(
                field("sub").child(PathElement::Field("x".into())),
                Value::Int(small(rng)),
            ),
            _ => tx.set(field("s"), Value::String("no sub".into())),
        },
        18 => match doc.get("sub") {
            Some(Value::Object(sub)) => {
                let len = list_len(sub, "ys");
                tx.list_insert(
                    field("sub").child(PathElement::Field("ys".into())),
                    rng.below(len + 1) as u32,
                    Value::Int(small(rng)),
                )
            }
            _ => tx.add_integer(field("c"), 1),
        },
        _ => {
            let target = if rng.below(4) == 0 {
                Value::Null
            } else {
                Value::Link(Link {
                    collection: ITEM.into(),
                    key: PrimaryKey::Int(rng.below(KEYS) as i64),
                })
            };
            tx.set(field("link"), target)
        }
    }
}

/// The permissions of simulations that enforce roles: every user may read `Item`s with `n`
/// below 90 (or none) and write those with `n` below 80, before and after the write.
pub fn sim_roles() -> Result<Roles, FilterError> {
    let below = |limit: i64| {
        DocumentFilter::from_json(&serde_json::json!({"n": {"$not": {"$gte": limit}}}))
    };
    let mut roles = Roles::default();
    roles.collections.insert(
        ITEM.into(),
        CollectionRules {
            read: below(90)?,
            write: below(80)?,
        },
    );
    Ok(roles)
}

/// A random subscription set over `Item` (valid queries; versions are assigned by the session).
pub fn random_subscriptions(rng: &mut SplitMix64) -> SubscriptionSet {
    let queries = [
        "TRUEPREDICATE",
        "n >= 10",
        "n < 50 OR s == nil",
        "labels.@count > 0",
        "c BETWEEN {0, 1000}",
        "link.n >= 10",
    ];
    let count = 1 + rng.below(2) as usize;
    let subscriptions = (0..count)
        .map(|i| {
            let q = queries
                .get(rng.below(queries.len() as u64) as usize)
                .copied()
                .unwrap_or("TRUEPREDICATE");
            Subscription {
                name: format!("sub{i}"),
                collection: ITEM.into(),
                query: q.into(),
            }
        })
        .collect();
    SubscriptionSet {
        version: 0,
        subscriptions,
    }
}
