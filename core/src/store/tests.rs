//! Store tests: applying every instruction, atomicity and rollback, change collapsing, schema
//! validation errors, size mismatches and the digest.

use proptest::prelude::*;

use super::testkit::{field, index, ints, item, key, store, sub};
use super::*;
use crate::schema::ScalarType;
use crate::value::ValueKind;

fn pk(i: i64) -> PrimaryKey {
    PrimaryKey::Int(i)
}

fn create(i: i64) -> Instruction {
    Instruction::CreateObject {
        collection: "Item".into(),
        key: pk(i),
    }
}

fn set(path: Path, value: Value) -> Instruction {
    Instruction::Set { path, value }
}

fn with_item() -> Store {
    let mut s = store();
    s.apply(&[create(1)], &mut Changes::new()).unwrap();
    s
}

#[test]
fn create_set_read_and_erase() {
    let mut s = store();
    let mut changes = Changes::new();
    s.apply(
        &[
            create(1),
            create(1),
            set(item(1, "n"), Value::Int(5)),
            set(item(1, "s"), Value::from("hi")),
        ],
        &mut changes,
    )
    .unwrap();
    let doc = s.get("Item", &pk(1)).unwrap();
    assert_eq!(doc.get("_id"), Some(&Value::Int(1)));
    assert_eq!(doc.get("n"), Some(&Value::Int(5)));
    assert_eq!(s.len("Item"), 1);
    assert_eq!(s.objects("Nope").count(), 0);
    assert!(s.collections().any(|c| c == "Sub"));
    let inserted = changes.collection("Item").unwrap();
    assert!(inserted.insertions().contains(&pk(1)));
    assert!(inserted.modifications().is_empty());

    let mut changes = Changes::new();
    s.apply(
        &[Instruction::EraseObject {
            collection: "Item".into(),
            key: pk(1),
        }],
        &mut changes,
    )
    .unwrap();
    assert_eq!(s.len("Item"), 0);
    assert!(s.is_empty());
    assert!(changes
        .collection("Item")
        .unwrap()
        .deletions()
        .contains(&pk(1)));
    // Erasing again is a no-op, not an error (concurrent erasures are idempotent).
    s.apply(
        &[Instruction::EraseObject {
            collection: "Item".into(),
            key: pk(1),
        }],
        &mut Changes::new(),
    )
    .unwrap();
}

#[test]
fn containers_are_created_on_first_touch() {
    let mut s = with_item();
    let mut txn = s.write();
    txn.list_push(item(1, "list"), Value::Int(1)).unwrap();
    txn.list_push(item(1, "list"), Value::Int(2)).unwrap();
    txn.list_insert(item(1, "list"), 0, Value::Int(0)).unwrap();
    txn.list_move(item(1, "list"), 0, 2).unwrap();
    txn.list_set(item(1, "list"), 0, Value::Int(9)).unwrap();
    txn.list_erase(item(1, "list"), 1).unwrap();
    txn.set_insert(item(1, "tags"), Value::from("b")).unwrap();
    txn.set_insert(item(1, "tags"), Value::from("a")).unwrap();
    txn.set_insert(item(1, "tags"), Value::from("b")).unwrap();
    txn.set_erase(item(1, "tags"), Value::from("z")).unwrap();
    txn.dict_set(item(1, "dict"), "k", Value::Int(3)).unwrap();
    txn.dict_set(item(1, "dict"), "j", Value::Null).unwrap();
    txn.dict_erase(item(1, "dict"), "j").unwrap();
    txn.set(item(1, "e"), sub(1)).unwrap();
    txn.list_push(field(item(1, "e"), "l"), Value::Int(7))
        .unwrap();
    txn.add_integer(field(item(1, "e"), "x"), 4).unwrap();
    txn.add_integer(item(1, "c"), 4).unwrap();
    let (instructions, _) = txn.commit();
    assert_eq!(instructions.len(), 17);
    assert_eq!(s.value_at(&item(1, "list")), Some(&ints(&[9, 0])));
    assert_eq!(
        s.value_at(&item(1, "tags")),
        Some(&Value::Set(vec![Value::from("a"), Value::from("b")].into()))
    );
    assert_eq!(s.value_at(&key(item(1, "dict"), "k")), Some(&Value::Int(3)));
    assert_eq!(s.value_at(&key(item(1, "dict"), "j")), None);
    assert_eq!(s.value_at(&field(item(1, "e"), "x")), Some(&Value::Int(5)));
    assert_eq!(s.value_at(&field(item(1, "e"), "l")), Some(&ints(&[7])));
    // AddInteger on an absent value is a no-op.
    assert_eq!(s.value_at(&item(1, "c")), None);

    let mut txn = s.write();
    txn.clear(item(1, "list")).unwrap();
    txn.clear(item(1, "tags")).unwrap();
    txn.commit();
    assert_eq!(s.value_at(&item(1, "list")), Some(&ints(&[])));
    assert_eq!(
        s.value_at(&item(1, "tags")),
        Some(&Value::Set(vec![].into()))
    );
}

#[test]
fn paths_through_lists_and_dangling_links() {
    let mut s = with_item();
    let mut txn = s.write();
    txn.list_push(item(1, "subs"), sub(1)).unwrap();
    txn.list_push(item(1, "subs"), sub(2)).unwrap();
    txn.set(field(index(item(1, "subs"), 1), "x"), Value::Int(20))
        .unwrap();
    txn.list_push(field(index(item(1, "subs"), 0), "l"), Value::Int(5))
        .unwrap();
    let link = Value::Link(crate::value::Link {
        collection: "Item".into(),
        key: pk(99),
    });
    txn.set(item(1, "link"), link.clone()).unwrap();
    txn.commit();
    assert_eq!(
        s.value_at(&field(index(item(1, "subs"), 1), "x")),
        Some(&Value::Int(20))
    );
    assert_eq!(
        s.value_at(&field(index(item(1, "subs"), 0), "l")),
        Some(&ints(&[5]))
    );
    assert_eq!(s.value_at(&item(1, "link")), Some(&link));
}

#[test]
fn apply_is_atomic() {
    let mut s = with_item();
    s.apply(
        &[
            set(item(1, "list"), ints(&[1, 2, 3])),
            set(item(1, "n"), Value::Int(1)),
        ],
        &mut Changes::new(),
    )
    .unwrap();
    let before = s.clone();
    let digest = s.digest();
    let mut changes = Changes::new();
    let err = s
        .apply(
            &[
                set(item(1, "n"), Value::Int(2)),
                Instruction::ListErase {
                    list: item(1, "list"),
                    index: 0,
                    prior_size: 3,
                },
                create(2),
                Instruction::SetInsert {
                    set: item(1, "tags"),
                    value: Value::from("x"),
                },
                Instruction::EraseObject {
                    collection: "Item".into(),
                    key: pk(1),
                },
                Instruction::ListInsert {
                    list: item(2, "list"),
                    index: 0,
                    value: Value::Int(1),
                    prior_size: 5,
                },
            ],
            &mut changes,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ApplyError::SizeMismatch {
            expected: 5,
            actual: 0,
            ..
        }
    ));
    assert_eq!(s, before);
    assert_eq!(s.digest(), digest);
    assert!(changes.is_empty());
}

#[test]
fn size_mismatch_reports_the_list() {
    let mut s = with_item();
    s.apply(&[set(item(1, "list"), ints(&[1, 2]))], &mut Changes::new())
        .unwrap();
    let err = s
        .apply(
            &[Instruction::ListInsert {
                list: item(1, "list"),
                index: 0,
                value: Value::Int(0),
                prior_size: 3,
            }],
            &mut Changes::new(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        ApplyError::SizeMismatch {
            collection: "Item".into(),
            key: pk(1),
            path: Box::new(item(1, "list")),
            expected: 3,
            actual: 2,
        }
    );
    let message = err.to_string();
    assert!(message.contains("Item[1].list"), "{message}");
    assert!(message.contains("expected 3"), "{message}");
}

#[test]
fn transaction_rollback_restores_exactly() {
    let mut s = with_item();
    s.apply(
        &[
            set(item(1, "list"), ints(&[1, 2, 3])),
            set(item(1, "e"), sub(1)),
            Instruction::SetInsert {
                set: item(1, "tags"),
                value: Value::from("a"),
            },
        ],
        &mut Changes::new(),
    )
    .unwrap();
    let before = s.clone();
    {
        let mut txn = s.write();
        txn.create("Item", pk(2)).unwrap();
        txn.erase("Item", pk(1)).unwrap();
        txn.create("Item", pk(1)).unwrap();
        txn.list_push(item(1, "list"), Value::Int(4)).unwrap();
        txn.set(item(2, "n"), Value::Int(3)).unwrap();
        txn.add_collection(
            "Extra",
            CollectionKind::TopLevel,
            Some(PrimaryKeyType::String),
        )
        .unwrap();
        txn.add_property("Item", Property::new("new", ScalarType::Bool))
            .unwrap();
        txn.set(item(1, "new"), Value::Bool(true)).unwrap();
        assert_eq!(txn.get("Item", &pk(2)).map(|d| d.len()), Some(2));
    }
    assert_eq!(s, before);
    let mut txn = s.write();
    txn.list_erase(item(1, "list"), 0).unwrap();
    txn.list_move(item(1, "list"), 0, 1).unwrap();
    txn.set_erase(item(1, "tags"), Value::from("a")).unwrap();
    txn.clear(item(1, "list")).unwrap();
    txn.set(field(item(1, "e"), "x"), Value::Null).unwrap();
    txn.dict_set(item(1, "dict"), "k", Value::Int(1)).unwrap();
    txn.rollback();
    assert_eq!(s, before);
}

#[test]
fn a_suspended_transaction_stays_applied_and_resumes_to_commit_or_undo() {
    let mut s = with_item();
    let before = s.clone();
    let suspended = {
        let mut txn = s.write();
        txn.create("Item", pk(2)).unwrap();
        txn.suspend()
    };
    // Dropping the emptied transaction kept the write.
    assert!(s.get("Item", &pk(2)).is_some());
    let suspended = {
        let mut txn = s.write();
        txn.resume(suspended);
        txn.set(item(2, "n"), Value::Int(7)).unwrap();
        txn.suspend()
    };
    assert_eq!(s.value_at(&item(2, "n")), Some(&Value::Int(7)));
    let mut txn = s.write();
    txn.set(item(1, "n"), Value::Int(1)).unwrap();
    // Resumed writes count as made before the transaction's own.
    txn.resume(suspended);
    let (instructions, changes) = txn.commit();
    assert_eq!(instructions.len(), 3);
    assert_eq!(instructions[0], create(2));
    assert!(changes
        .collection("Item")
        .unwrap()
        .insertions()
        .contains(&pk(2)));
    assert_eq!(s.value_at(&item(2, "n")), Some(&Value::Int(7)));

    let mut s = before.clone();
    let suspended = {
        let mut txn = s.write();
        txn.erase("Item", pk(1)).unwrap();
        txn.create("Item", pk(3)).unwrap();
        txn.suspend()
    };
    assert!(s.get("Item", &pk(1)).is_none());
    {
        let mut txn = s.write();
        txn.set(item(3, "n"), Value::Int(2)).unwrap();
        txn.resume(suspended);
    }
    assert_eq!(s, before);
}

#[test]
fn failed_transaction_call_leaves_it_usable() {
    let mut s = with_item();
    let mut txn = s.write();
    txn.list_push(item(1, "list"), Value::Int(1)).unwrap();
    let err = txn
        .list_push(item(1, "list"), Value::from("not an int"))
        .unwrap_err();
    assert!(matches!(
        err,
        ApplyError::Schema(SchemaError::TypeMismatch { .. })
    ));
    assert!(txn.list_set(item(1, "list"), 5, Value::Int(1)).is_err());
    assert!(txn.set(item(2, "n"), Value::Int(1)).is_err());
    // A failed container instruction on an absent container does not leave the container.
    assert!(txn.set_insert(item(1, "tags"), Value::Int(3)).is_err());
    assert_eq!(txn.value_at(&item(1, "tags")), None);
    txn.list_push(item(1, "list"), Value::Int(2)).unwrap();
    let (instructions, changes) = txn.commit();
    assert_eq!(instructions.len(), 2);
    assert_eq!(s.value_at(&item(1, "list")), Some(&ints(&[1, 2])));
    let modified = changes.collection("Item").unwrap().modifications();
    assert_eq!(modified.get(&pk(1)).map(|f| f.len()), Some(1));
}

#[test]
fn schema_validation_errors() {
    let mut s = with_item();
    let mut check = |instruction: Instruction| {
        let err = s.apply(&[instruction], &mut Changes::new()).unwrap_err();
        assert!(!err.to_string().is_empty());
        assert!(!err.to_string().ends_with('.'));
        err
    };
    assert!(matches!(
        check(Instruction::CreateObject {
            collection: "Nope".into(),
            key: pk(1)
        }),
        ApplyError::Schema(SchemaError::UnknownCollection { .. })
    ));
    assert!(matches!(
        check(set(item(1, "nope"), Value::Int(1))),
        ApplyError::Schema(SchemaError::UnknownProperty { .. })
    ));
    assert!(matches!(
        check(set(item(1, "n"), Value::from("x"))),
        ApplyError::Schema(SchemaError::TypeMismatch { .. })
    ));
    assert!(matches!(
        check(set(item(1, "s"), Value::Int(1))),
        ApplyError::Schema(SchemaError::TypeMismatch { .. })
    ));
    assert!(matches!(
        check(set(item(1, "_id"), Value::Int(2))),
        ApplyError::PrimaryKeyWrite { .. }
    ));
    assert!(matches!(
        check(set(item(1, "list"), Value::Null)),
        ApplyError::Schema(SchemaError::TypeMismatch { .. })
    ));
    assert!(matches!(
        check(set(item(1, "c"), Value::Null)),
        ApplyError::Schema(SchemaError::TypeMismatch { .. })
    ));
    assert!(matches!(
        check(set(
            item(1, "e"),
            Value::Object([("zz".to_owned(), Value::Int(1))].into())
        )),
        ApplyError::Schema(SchemaError::UnknownProperty { .. })
    ));
    assert!(matches!(
        check(set(index(item(1, "list"), 0), Value::Int(1))),
        ApplyError::InvalidPath { .. }
    ));
    assert!(matches!(
        check(set(key(item(1, "list"), "k"), Value::Int(1))),
        ApplyError::InvalidPath { .. }
    ));
    assert!(matches!(
        check(Instruction::CreateObject {
            collection: "Item".into(),
            key: PrimaryKey::String("a".into())
        }),
        ApplyError::PrimaryKeyType { .. }
    ));
    assert!(matches!(
        check(Instruction::CreateObject {
            collection: "Sub".into(),
            key: pk(1)
        }),
        ApplyError::NotTopLevel { .. }
    ));
    assert!(matches!(
        check(Instruction::AddInteger {
            path: item(1, "s"),
            delta: 1
        }),
        ApplyError::Schema(SchemaError::TypeMismatch { .. })
    ));
    assert!(matches!(
        check(Instruction::Clear { path: item(1, "n") }),
        ApplyError::InvalidPath { .. }
    ));
    assert!(matches!(
        check(set(field(item(1, "e"), "x"), Value::Int(1))),
        ApplyError::PathNotFound { .. }
    ));
    assert!(matches!(
        check(Instruction::ListErase {
            list: item(1, "list"),
            index: 0,
            prior_size: 0
        }),
        ApplyError::IndexOutOfRange { .. }
    ));
    assert!(matches!(
        check(Instruction::AddProperty {
            collection: "Nope".into(),
            property: Property::new("x", ScalarType::Int)
        }),
        ApplyError::Schema(SchemaError::UnknownCollection { .. })
    ));
    assert!(matches!(
        check(Instruction::AddCollection {
            name: "Bad".into(),
            kind: CollectionKind::TopLevel,
            primary_key: None
        }),
        ApplyError::Schema(SchemaError::IncompatibleChange { .. })
    ));
    // Missing object.
    assert!(matches!(
        check(set(item(7, "n"), Value::Int(1))),
        ApplyError::MissingObject { .. }
    ));
}

#[test]
fn mixed_add_integer_on_a_string_is_an_error() {
    let mut s = with_item();
    s.apply(&[set(item(1, "m"), Value::from("x"))], &mut Changes::new())
        .unwrap();
    let err = s
        .apply(
            &[Instruction::AddInteger {
                path: item(1, "m"),
                delta: 1,
            }],
            &mut Changes::new(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        ApplyError::NotAnInteger {
            path: item(1, "m"),
            found: ValueKind::String
        }
    );
}

#[test]
fn asymmetric_objects_are_never_stored() {
    let mut s = store();
    let log = |field: &str| Path::field("Log", pk(1), field);
    for instruction in [
        Instruction::CreateObject {
            collection: "Log".into(),
            key: pk(1),
        },
        set(log("msg"), Value::from("hello")),
        Instruction::EraseObject {
            collection: "Log".into(),
            key: pk(1),
        },
    ] {
        let err = s.apply(&[instruction], &mut Changes::new()).unwrap_err();
        assert!(matches!(err, ApplyError::Asymmetric { .. }), "{err}");
        assert!(err.to_string().contains("ingest"), "{err}");
    }
    assert_eq!(s.len("Log"), 0);
}

#[test]
fn ingest_records_an_insert_without_storing_it() {
    let mut s = store();
    let mut doc = Document::new();
    doc.insert("msg".into(), Value::from("hello"));
    let mut tx = s.write();
    tx.ingest("Log", pk(1), doc.clone()).unwrap();
    let (instructions, changes) = tx.commit();
    assert_eq!(instructions.len(), 2);
    assert!(changes.is_empty());
    assert_eq!(s.len("Log"), 0);

    let mut tx = s.write();
    doc.insert("msg".into(), Value::Int(3));
    let err = tx.ingest("Log", pk(2), doc.clone()).unwrap_err();
    assert!(matches!(err, ApplyError::Schema(_)), "{err}");
    let err = tx.ingest("Item", pk(2), Document::new()).unwrap_err();
    assert!(err.to_string().contains("not asymmetric"), "{err}");
    assert!(tx.instructions().is_empty());
}

#[test]
fn schema_instructions_add_and_overwrite() {
    let mut s = store();
    let prop = Property::new("flag", ScalarType::Bool);
    let add = Instruction::AddProperty {
        collection: "Item".into(),
        property: prop.clone(),
    };
    let digest = s.digest();
    s.apply(&[add.clone(), add.clone()], &mut Changes::new())
        .unwrap();
    assert_ne!(s.digest(), digest);
    assert_eq!(
        s.schema()
            .collection("Item")
            .unwrap()
            .properties
            .get("flag"),
        Some(&prop)
    );
    let changed = Property {
        optional: true,
        ..prop
    };
    s.apply(
        &[Instruction::AddProperty {
            collection: "Item".into(),
            property: changed.clone(),
        }],
        &mut Changes::new(),
    )
    .unwrap();
    assert_eq!(
        s.schema()
            .collection("Item")
            .unwrap()
            .properties
            .get("flag"),
        Some(&changed)
    );
    s.apply(
        &[Instruction::AddCollection {
            name: "New".into(),
            kind: CollectionKind::TopLevel,
            primary_key: Some(PrimaryKeyType::Uuid),
        }],
        &mut Changes::new(),
    )
    .unwrap();
    assert!(s.collections().any(|c| c == "New"));
}

#[test]
fn changes_collapse() {
    let mut s = with_item();
    s.apply(
        &[
            set(item(1, "n"), Value::Int(1)),
            set(item(1, "s"), Value::from("a")),
        ],
        &mut Changes::new(),
    )
    .unwrap();
    let mut changes = Changes::new();
    let erase = |i| Instruction::EraseObject {
        collection: "Item".into(),
        key: pk(i),
    };
    s.apply(
        &[
            // insert + modify = insertion
            create(2),
            set(item(2, "n"), Value::Int(1)),
            // insert + erase = nothing
            create(3),
            erase(3),
            // erase + create = modification of every field the object had
            erase(1),
            create(1),
        ],
        &mut changes,
    )
    .unwrap();
    let item_changes = changes.collection("Item").unwrap();
    assert_eq!(item_changes.insertions(), &BTreeSet::from([pk(2)]));
    assert!(item_changes.deletions().is_empty());
    assert_eq!(
        item_changes.modifications().get(&pk(1)),
        Some(&BTreeSet::from(["n".to_owned(), "s".to_owned()]))
    );
    assert!(!item_changes.modifications().contains_key(&pk(3)));

    // Merging later batches collapses the same way.
    let mut later = Changes::new();
    s.apply(&[erase(2), set(item(1, "n"), Value::Int(2))], &mut later)
        .unwrap();
    changes.merge(later);
    let item_changes = changes.collection("Item").unwrap();
    assert!(item_changes.insertions().is_empty());
    assert!(item_changes.deletions().is_empty());

    let mut evicted = Changes::new();
    assert!(s.evict("Item", &pk(1), &mut evicted));
    assert!(!s.evict("Item", &pk(1), &mut evicted));
    assert_eq!(
        evicted.collection("Item").unwrap().deletions(),
        &BTreeSet::from([pk(1)])
    );
    assert!(Changes::new().is_empty());
    assert_eq!(changes.collections().count(), 1);
}

#[test]
fn digest_distinguishes_and_matches() {
    let mut a = with_item();
    let mut b = with_item();
    assert_eq!(a.digest(), b.digest());
    a.apply(&[set(item(1, "n"), Value::Int(1))], &mut Changes::new())
        .unwrap();
    assert_ne!(a.digest(), b.digest());
    b.apply(&[set(item(1, "n"), Value::Int(1))], &mut Changes::new())
        .unwrap();
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a, b);
    // Lists and sets with the same items differ.
    a.apply(&[set(item(1, "list"), ints(&[1]))], &mut Changes::new())
        .unwrap();
    b.apply(
        &[Instruction::SetInsert {
            set: item(1, "tags"),
            value: Value::from("1"),
        }],
        &mut Changes::new(),
    )
    .unwrap();
    assert_ne!(a.digest(), b.digest());
}

proptest! {
    /// Applying a batch that fails at any point leaves the store exactly as it was.
    #[test]
    fn failing_batches_change_nothing(values in proptest::collection::vec(-3i64..3, 1..12)) {
        let mut s = with_item();
        s.apply(&[set(item(1, "list"), ints(&[1, 2]))], &mut Changes::new()).unwrap();
        let before = s.clone();
        let mut batch: Vec<Instruction> = values
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                -3 => create(i as i64 + 2),
                -2 => Instruction::ListErase { list: item(1, "list"), index: 0, prior_size: 2 },
                -1 => Instruction::Clear { path: item(1, "list") },
                0 => Instruction::SetInsert { set: item(1, "tags"), value: Value::from("t") },
                1 => Instruction::DictErase { dict: item(1, "dict"), key: "k".into() },
                _ => set(item(1, "n"), Value::Int(*v)),
            })
            .collect();
        batch.push(set(item(1, "n"), Value::from("bad")));
        let mut changes = Changes::new();
        prop_assert!(s.apply(&batch, &mut changes).is_err());
        prop_assert_eq!(&s, &before);
        prop_assert!(changes.is_empty());
    }

    /// Applying batches one after another into one `Changes` reports exactly what collapsing
    /// each batch on its own and merging it in does (the store records straight into the
    /// caller's changes where that comes out the same), and a failing batch leaves it as it was.
    #[test]
    fn successive_batches_report_their_merged_changes(
        ops in proptest::collection::vec((0u8..5, 1i64..4), 1..24),
        sizes in proptest::collection::vec(1usize..5, 1..12),
    ) {
        let mut s = with_item();
        let mut reference = s.clone();
        let mut changes = Changes::new();
        let mut expected = Changes::new();
        let mut instructions = ops.iter().map(|&(op, k)| match op {
            0 => create(k),
            1 => Instruction::EraseObject { collection: "Item".into(), key: pk(k) },
            2 => set(item(k, "n"), Value::Int(k)),
            3 => set(item(k, "s"), Value::from("x")),
            // Like the sets, an error when the object is missing.
            _ => Instruction::AddInteger { path: item(k, "n"), delta: 1 },
        });
        for size in sizes.iter().cycle().take(ops.len()) {
            let batch: Vec<Instruction> = instructions.by_ref().take(*size).collect();
            if batch.is_empty() {
                break;
            }
            let mut own = Changes::new();
            let reference_result = reference.apply(&batch, &mut own);
            if reference_result.is_ok() {
                expected.merge(own);
            }
            prop_assert_eq!(s.apply(&batch, &mut changes), reference_result);
            prop_assert_eq!(&s, &reference);
            prop_assert_eq!(&changes, &expected);
        }
    }
}
