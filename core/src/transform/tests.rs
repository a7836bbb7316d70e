//! Transform tests: exhaustive list-index arithmetic, one test per rule, the fast path, and the
//! convergence property (S·A·B' == S·B·A') over random concurrent changesets made by write
//! transactions, including chunking consistency and three-replica merges.

use std::cmp::Ordering;
use std::convert::Infallible;

use proptest::prelude::*;

use super::list::{self, ListOp};
use super::*;
use crate::changeset::{ChangesetMeta, PathElement};
use crate::schema::{Property, ScalarType};
use crate::store::testkit::{field, index, ints, item, key, store, sub};
use crate::store::{Changes, Store, WriteTransaction};
use crate::value::Value;

fn pk(i: i64) -> PrimaryKey {
    PrimaryKey::Int(i)
}

fn meta(timestamp: u64, ident: u64) -> ChangesetMeta {
    ChangesetMeta {
        origin_timestamp: timestamp,
        origin_file_ident: ident,
        ..ChangesetMeta::default()
    }
}

fn cs(meta: ChangesetMeta, instructions: Vec<Instruction>) -> Changeset {
    Changeset { meta, instructions }
}

fn apply_all(store: &mut Store, changesets: &[Changeset]) {
    for changeset in changesets {
        if let Err(error) = store.apply(&changeset.instructions, &mut Changes::new()) {
            panic!("apply failed: {error}\n{changeset:#?}\nstore: {store:#?}");
        }
    }
}

/// Transforms, checks that both orders converge, and returns the transformed sides, the merged
/// state and the log.
fn converge(
    base: &Store,
    ours: &[Changeset],
    theirs: &[Changeset],
) -> (Vec<Changeset>, Vec<Changeset>, Store, Vec<MergeDecision>) {
    let (mut ours2, mut theirs2) = (ours.to_vec(), theirs.to_vec());
    let mut log = Vec::new();
    transform(&mut ours2, &mut theirs2, Some(&mut log)).unwrap();
    let mut left = base.clone();
    apply_all(&mut left, ours);
    apply_all(&mut left, &theirs2);
    let mut right = base.clone();
    apply_all(&mut right, theirs);
    apply_all(&mut right, &ours2);
    assert_eq!(left, right, "ours' = {ours2:#?}\ntheirs' = {theirs2:#?}");
    assert_eq!(left.digest(), right.digest());
    (ours2, theirs2, left, log)
}

fn base() -> Store {
    let mut s = store();
    let mut txn = s.write();
    for k in 0..3 {
        txn.create("Item", pk(k)).unwrap();
    }
    txn.set(item(1, "n"), Value::Int(0)).unwrap();
    txn.set(item(1, "list"), ints(&[10, 11, 12])).unwrap();
    txn.set(item(1, "e"), sub(1)).unwrap();
    txn.list_push(item(1, "subs"), sub(100)).unwrap();
    txn.list_push(item(1, "subs"), sub(101)).unwrap();
    txn.set_insert(item(1, "tags"), Value::from("a")).unwrap();
    txn.dict_set(item(1, "dict"), "k", Value::Int(1)).unwrap();
    txn.commit();
    s
}

fn set(path: Path, value: Value) -> Instruction {
    Instruction::Set { path, value }
}

fn insert(list: Path, index: u32, value: i64, prior_size: u32) -> Instruction {
    Instruction::ListInsert {
        list,
        index,
        value: Value::Int(value),
        prior_size,
    }
}

fn erase_object(k: i64) -> Instruction {
    Instruction::EraseObject {
        collection: "Item".into(),
        key: pk(k),
    }
}

// ---------------------------------------------------------------------------------------------
// List index arithmetic, exhaustively on small lists.

fn all_ops(n: u32) -> Vec<ListOp> {
    let mut ops: Vec<ListOp> = (0..=n).map(ListOp::Insert).collect();
    for i in 0..n {
        ops.push(ListOp::Set(i));
        ops.push(ListOp::Erase(i));
        for t in 0..n {
            ops.push(ListOp::Move(i, t));
        }
    }
    ops
}

fn apply_op(list: &mut Vec<u32>, op: ListOp, value: u32) {
    let index = |i: u32| i as usize;
    match op {
        ListOp::Insert(i) => list.insert(index(i), value),
        ListOp::Set(i) => list[index(i)] = value,
        ListOp::Move(f, t) => {
            let v = list.remove(index(f));
            list.insert(index(t), v);
        }
        ListOp::Erase(i) => {
            list.remove(index(i));
        }
    }
}

#[test]
fn list_pairs_converge_exhaustively() {
    for n in 0..=5u32 {
        let start: Vec<u32> = (0..n).collect();
        for a in all_ops(n) {
            for b in all_ops(n) {
                let ranks: &[Ordering] = if a == b {
                    &[Ordering::Greater, Ordering::Less, Ordering::Equal]
                } else {
                    &[Ordering::Greater, Ordering::Less]
                };
                for &a_rank in ranks {
                    let (a2, b2, _) = list::transform(a, b, a_rank);
                    // Identical instructions carry identical values.
                    let b_value = if a_rank == Ordering::Equal { 100 } else { 200 };
                    let mut left = start.clone();
                    apply_op(&mut left, a, 100);
                    if let Some(b2) = b2 {
                        apply_op(&mut left, b2, b_value);
                    }
                    let mut right = start.clone();
                    apply_op(&mut right, b, b_value);
                    if let Some(a2) = a2 {
                        apply_op(&mut right, a2, 100);
                    }
                    assert_eq!(left, right, "n={n} a={a:?} b={b:?} a_rank={a_rank:?}");
                    let (b3, a3, _) = list::transform(b, a, a_rank.reverse());
                    assert_eq!((a3, b3), (a2, b2), "asymmetric: a={a:?} b={b:?}");
                }
            }
        }
    }
}

#[test]
fn list_intentions_are_kept() {
    // Inserts at the same index: the winner's element goes first.
    let (a, b, _) = list::transform(ListOp::Insert(1), ListOp::Insert(1), Ordering::Greater);
    assert_eq!((a, b), (Some(ListOp::Insert(1)), Some(ListOp::Insert(2))));
    // Concurrent moves of one element: the winner moves it from where the loser put it.
    let (a, b, _) = list::transform(ListOp::Move(0, 3), ListOp::Move(0, 1), Ordering::Greater);
    assert_eq!((a, b), (Some(ListOp::Move(1, 3)), None));
    // Erasing a moved element erases it where it went.
    let (a, b, _) = list::transform(ListOp::Move(0, 3), ListOp::Erase(0), Ordering::Less);
    assert_eq!((a, b), (None, Some(ListOp::Erase(3))));
    assert_eq!(list::move_map(2, 0, 3), 1);
}

// ---------------------------------------------------------------------------------------------
// One test per rule.

fn only_rule(log: &[MergeDecision]) -> Rule {
    assert_eq!(log.len(), 1, "{log:#?}");
    log[0].rule
}

#[test]
fn set_vs_set_last_writer_wins() {
    let s = base();
    let ours = [cs(meta(2, 1), vec![set(item(1, "n"), Value::Int(1))])];
    let theirs = [cs(meta(1, 2), vec![set(item(1, "n"), Value::Int(2))])];
    let (o, t, merged, log) = converge(&s, &ours, &theirs);
    assert_eq!(merged.value_at(&item(1, "n")), Some(&Value::Int(1)));
    assert_eq!(o[0].instructions.len(), 1);
    assert!(t[0].instructions.is_empty());
    assert_eq!(only_rule(&log), Rule::LastWriterWins);
    assert_eq!(log[0].theirs.outcome, Outcome::Discarded);
    assert_eq!(log[0].ours.outcome, Outcome::Kept);
    // Equal timestamps: the higher file ident wins.
    let ours = [cs(meta(5, 1), vec![set(item(1, "n"), Value::Int(1))])];
    let theirs = [cs(meta(5, 2), vec![set(item(1, "n"), Value::Int(2))])];
    let (_, _, merged, _) = converge(&s, &ours, &theirs);
    assert_eq!(merged.value_at(&item(1, "n")), Some(&Value::Int(2)));
    // Fully equal keys: instruction contents decide, identically on both sides.
    let ours = [cs(meta(5, 1), vec![set(item(1, "n"), Value::Int(1))])];
    let theirs = [cs(meta(5, 1), vec![set(item(1, "n"), Value::Int(2))])];
    let (_, _, merged, _) = converge(&s, &ours, &theirs);
    let (_, _, mirrored, _) = converge(&s, &theirs, &ours);
    assert_eq!(merged, mirrored);
}

#[test]
fn outer_path_wins_whatever_the_timestamps() {
    let s = base();
    let ours = [cs(meta(1, 1), vec![set(item(1, "e"), sub(5))])];
    let theirs = [cs(
        meta(9, 2),
        vec![
            set(field(item(1, "e"), "x"), Value::Int(9)),
            insert(field(item(1, "e"), "l"), 0, 3, 0),
        ],
    )];
    let (_, t, merged, log) = converge(&s, &ours, &theirs);
    assert_eq!(merged.value_at(&item(1, "e")), Some(&sub(5)));
    assert!(t[0].instructions.is_empty());
    assert!(log.iter().all(|d| d.rule == Rule::OuterPathWins));
    // A list element's erasure discards writes beneath the element.
    let ours = [cs(
        meta(1, 1),
        vec![Instruction::ListErase {
            list: item(1, "subs"),
            index: 1,
            prior_size: 2,
        }],
    )];
    let theirs = [cs(
        meta(9, 2),
        vec![set(field(index(item(1, "subs"), 1), "x"), Value::Int(7))],
    )];
    let (_, t, _, log) = converge(&s, &ours, &theirs);
    assert!(t[0].instructions.is_empty());
    assert_eq!(only_rule(&log), Rule::OuterPathWins);
    // A dictionary key's erasure discards writes inside the value (here: Set vs DictErase of the
    // key itself is last-writer-wins instead).
    let ours = [cs(
        meta(1, 1),
        vec![Instruction::DictErase {
            dict: item(1, "dict"),
            key: "k".into(),
        }],
    )];
    let theirs = [cs(
        meta(9, 2),
        vec![set(key(item(1, "dict"), "k"), Value::Int(4))],
    )];
    let (_, _, merged, log) = converge(&s, &ours, &theirs);
    assert_eq!(
        merged.value_at(&key(item(1, "dict"), "k")),
        Some(&Value::Int(4))
    );
    assert_eq!(only_rule(&log), Rule::LastWriterWins);
    let theirs = [cs(
        meta(0, 2),
        vec![set(key(item(1, "dict"), "k"), Value::Int(4))],
    )];
    let (_, _, merged, _) = converge(&s, &ours, &theirs);
    assert_eq!(merged.value_at(&key(item(1, "dict"), "k")), None);
}

#[test]
fn erase_wins_over_changes_and_creation() {
    let s = base();
    let ours = [cs(meta(1, 1), vec![erase_object(1)])];
    let theirs = [cs(
        meta(9, 2),
        vec![
            Instruction::CreateObject {
                collection: "Item".into(),
                key: pk(1),
            },
            set(item(1, "n"), Value::Int(5)),
            insert(item(1, "list"), 0, 1, 3),
        ],
    )];
    let (o, t, merged, log) = converge(&s, &ours, &theirs);
    assert!(merged.get("Item", &pk(1)).is_none());
    assert_eq!(o[0].instructions.len(), 1);
    assert!(t[0].instructions.is_empty());
    assert!(log.iter().all(|d| d.rule == Rule::EraseWins));
    // Erase vs erase: both kept.
    let theirs = [cs(meta(9, 2), vec![erase_object(1)])];
    let (o, t, _, log) = converge(&s, &ours, &theirs);
    assert_eq!((o[0].instructions.len(), t[0].instructions.len()), (1, 1));
    assert_eq!(only_rule(&log), Rule::Idempotent);
}

#[test]
fn creates_are_idempotent() {
    let s = base();
    let create = |k| Instruction::CreateObject {
        collection: "Item".into(),
        key: pk(k),
    };
    let ours = [cs(
        meta(1, 1),
        vec![create(7), set(item(7, "n"), Value::Int(1))],
    )];
    let theirs = [cs(
        meta(2, 2),
        vec![create(7), set(item(7, "s"), Value::from("x"))],
    )];
    let (o, t, merged, log) = converge(&s, &ours, &theirs);
    assert_eq!((o[0].instructions.len(), t[0].instructions.len()), (2, 2));
    assert_eq!(merged.get("Item", &pk(7)).map(|d| d.len()), Some(3));
    assert_eq!(only_rule(&log), Rule::CreateIdempotent);
}

#[test]
fn integer_additions_commute_and_fold_into_earlier_sets() {
    let s = base();
    let add = |delta| Instruction::AddInteger {
        path: item(1, "n"),
        delta,
    };
    let (_, _, merged, log) = converge(
        &s,
        &[cs(meta(1, 1), vec![add(2)])],
        &[cs(meta(2, 2), vec![add(3)])],
    );
    assert_eq!(merged.value_at(&item(1, "n")), Some(&Value::Int(5)));
    assert_eq!(only_rule(&log), Rule::AddsCommute);
    // Earlier set: the addition survives and is folded into the set.
    let (o, _, merged, log) = converge(
        &s,
        &[cs(meta(1, 1), vec![set(item(1, "n"), Value::Int(10))])],
        &[cs(meta(2, 2), vec![add(5), add(1)])],
    );
    assert_eq!(merged.value_at(&item(1, "n")), Some(&Value::Int(16)));
    assert_eq!(o[0].instructions, vec![set(item(1, "n"), Value::Int(16))]);
    assert!(log.iter().all(|d| d.rule == Rule::AddFoldedIntoSet));
    // Later set: the addition is discarded.
    let (_, t, merged, _) = converge(
        &s,
        &[cs(meta(3, 1), vec![set(item(1, "n"), Value::Int(10))])],
        &[cs(meta(2, 2), vec![add(5)])],
    );
    assert_eq!(merged.value_at(&item(1, "n")), Some(&Value::Int(10)));
    assert!(t[0].instructions.is_empty());
    // Earlier null set: stays null.
    let (o, _, merged, _) = converge(
        &s,
        &[cs(meta(1, 1), vec![set(item(1, "n"), Value::Null)])],
        &[cs(meta(2, 2), vec![add(5)])],
    );
    assert_eq!(merged.value_at(&item(1, "n")), Some(&Value::Null));
    assert_eq!(o[0].instructions, vec![set(item(1, "n"), Value::Null)]);
}

#[test]
fn list_inserts_tie_break_identically() {
    let s = base();
    let ours = [cs(meta(5, 1), vec![insert(item(1, "list"), 1, 1, 3)])];
    let theirs = [cs(meta(5, 2), vec![insert(item(1, "list"), 1, 2, 3)])];
    let (o, t, merged, log) = converge(&s, &ours, &theirs);
    // Theirs has the higher ident, so their element goes first.
    assert_eq!(
        merged.value_at(&item(1, "list")),
        Some(&ints(&[10, 2, 1, 11, 12]))
    );
    assert_eq!(o[0].instructions, vec![insert(item(1, "list"), 2, 1, 4)]);
    assert_eq!(t[0].instructions, vec![insert(item(1, "list"), 1, 2, 4)]);
    assert_eq!(only_rule(&log), Rule::ListInsertTie);
    let (_, _, mirrored, _) = converge(&s, &theirs, &ours);
    assert_eq!(mirrored, merged);
}

#[test]
fn list_erase_and_set_and_move_rules() {
    let s = base();
    let list = || item(1, "list");
    let erase = |i| Instruction::ListErase {
        list: list(),
        index: i,
        prior_size: 3,
    };
    let list_set = |i, v| Instruction::ListSet {
        list: list(),
        index: i,
        value: Value::Int(v),
        prior_size: 3,
    };
    let mv = |f, t| Instruction::ListMove {
        list: list(),
        from: f,
        to: t,
        prior_size: 3,
    };
    // Erase beats a concurrent set of the same element.
    let (_, t, merged, _) = converge(
        &s,
        &[cs(meta(1, 1), vec![erase(1)])],
        &[cs(meta(2, 2), vec![list_set(1, 5)])],
    );
    assert_eq!(merged.value_at(&list()), Some(&ints(&[10, 12])));
    assert!(t[0].instructions.is_empty());
    // Both erase the same element: both dropped.
    let (o, t, merged, _) = converge(
        &s,
        &[cs(meta(1, 1), vec![erase(0)])],
        &[cs(meta(2, 2), vec![erase(0)])],
    );
    assert_eq!(merged.value_at(&list()), Some(&ints(&[11, 12])));
    assert!(o[0].instructions.is_empty() && t[0].instructions.is_empty());
    // Sets of the same element: last writer wins.
    let (_, _, merged, _) = converge(
        &s,
        &[cs(meta(3, 1), vec![list_set(2, 7)])],
        &[cs(meta(2, 2), vec![list_set(2, 8)])],
    );
    assert_eq!(merged.value_at(&list()), Some(&ints(&[10, 11, 7])));
    // Moves of the same element: the winner's destination.
    let (_, _, merged, _) = converge(
        &s,
        &[cs(meta(1, 1), vec![mv(0, 2)])],
        &[cs(meta(2, 2), vec![mv(0, 1)])],
    );
    assert_eq!(merged.value_at(&list()), Some(&ints(&[11, 10, 12])));
    // Clear discards concurrent list instructions.
    let (_, t, merged, log) = converge(
        &s,
        &[cs(meta(1, 1), vec![Instruction::Clear { path: list() }])],
        &[cs(
            meta(2, 2),
            vec![
                insert(list(), 0, 1, 3),
                Instruction::ListMove {
                    list: list(),
                    from: 0,
                    to: 1,
                    prior_size: 4,
                },
            ],
        )],
    );
    assert_eq!(merged.value_at(&list()), Some(&ints(&[])));
    assert!(t[0].instructions.is_empty());
    assert!(log.iter().all(|d| d.rule == Rule::ClearWins));
}

#[test]
fn paths_through_list_indices_are_shifted() {
    let s = base();
    let ours = [cs(
        meta(1, 1),
        vec![Instruction::ListInsert {
            list: item(1, "subs"),
            index: 0,
            value: sub(50),
            prior_size: 2,
        }],
    )];
    let theirs = [cs(
        meta(2, 2),
        vec![set(field(index(item(1, "subs"), 1), "x"), Value::Int(7))],
    )];
    let (_, t, merged, log) = converge(&s, &ours, &theirs);
    assert_eq!(
        t[0].instructions,
        vec![set(field(index(item(1, "subs"), 2), "x"), Value::Int(7))]
    );
    assert_eq!(
        merged.value_at(&field(index(item(1, "subs"), 2), "x")),
        Some(&Value::Int(7))
    );
    assert_eq!(only_rule(&log), Rule::ListIndexShifted);
    let Outcome::Rewritten(rewritten) = &log[0].theirs.outcome else {
        panic!("expected a rewrite: {log:#?}");
    };
    assert_eq!(rewritten, &t[0].instructions[0]);
    assert!(matches!(
        &log[0].theirs.original,
        Instruction::Set { path, .. } if path.nested.first() == Some(&PathElement::Index(1))
    ));
}

#[test]
fn set_membership_last_writer_wins() {
    let s = base();
    let tags = || item(1, "tags");
    let ins = || Instruction::SetInsert {
        set: tags(),
        value: Value::from("b"),
    };
    let era = || Instruction::SetErase {
        set: tags(),
        value: Value::from("b"),
    };
    let (_, _, merged, _) = converge(
        &s,
        &[cs(meta(2, 1), vec![ins()])],
        &[cs(meta(1, 2), vec![era()])],
    );
    assert_eq!(
        merged.value_at(&tags()),
        Some(&Value::set_from(vec!["a".into(), "b".into()]))
    );
    let (_, _, merged, _) = converge(
        &s,
        &[cs(meta(1, 1), vec![ins()])],
        &[cs(meta(2, 2), vec![era()])],
    );
    assert_eq!(
        merged.value_at(&tags()),
        Some(&Value::set_from(vec!["a".into()]))
    );
    let (o, t, _, log) = converge(
        &s,
        &[cs(meta(1, 1), vec![ins()])],
        &[cs(meta(2, 2), vec![ins()])],
    );
    assert_eq!((o[0].instructions.len(), t[0].instructions.len()), (1, 1));
    assert_eq!(only_rule(&log), Rule::Idempotent);
}

#[test]
fn clear_vs_set_of_the_container_is_last_writer_wins() {
    let s = base();
    let (_, _, merged, _) = converge(
        &s,
        &[cs(
            meta(1, 1),
            vec![Instruction::Clear {
                path: item(1, "list"),
            }],
        )],
        &[cs(meta(2, 2), vec![set(item(1, "list"), ints(&[4]))])],
    );
    assert_eq!(merged.value_at(&item(1, "list")), Some(&ints(&[4])));
}

#[test]
fn schema_instructions() {
    let s = base();
    let add = |optional| Instruction::AddProperty {
        collection: "Item".into(),
        property: Property {
            optional,
            ..Property::new("flag", ScalarType::Bool)
        },
    };
    let (o, t, _, log) = converge(
        &s,
        &[cs(meta(1, 1), vec![add(true)])],
        &[cs(meta(2, 2), vec![add(true)])],
    );
    assert_eq!((o[0].instructions.len(), t[0].instructions.len()), (1, 1));
    assert_eq!(only_rule(&log), Rule::Idempotent);
    let (_, t, merged, _) = converge(
        &s,
        &[cs(meta(3, 1), vec![add(true)])],
        &[cs(meta(2, 2), vec![add(false)])],
    );
    assert!(t[0].instructions.is_empty());
    let flag = &merged.schema().collection("Item").unwrap().properties["flag"];
    assert!(flag.optional);
    // Schema instructions commute with object instructions.
    let (_, _, _, log) = converge(
        &s,
        &[cs(meta(3, 1), vec![add(true)])],
        &[cs(meta(2, 2), vec![set(item(1, "n"), Value::Int(3))])],
    );
    assert!(log.is_empty());
}

#[test]
fn size_mismatch_is_an_error_and_changes_nothing() {
    let mut ours = vec![cs(meta(1, 1), vec![insert(item(1, "list"), 0, 1, 2)])];
    let mut theirs = vec![cs(meta(2, 2), vec![insert(item(1, "list"), 0, 2, 3)])];
    let (ours_before, theirs_before) = (ours.clone(), theirs.clone());
    let err = transform(&mut ours, &mut theirs, None).unwrap_err();
    assert_eq!(
        err,
        TransformError::SizeMismatch {
            list: item(1, "list"),
            ours: 2,
            theirs: 3,
            ours_changeset: 0,
            theirs_changeset: 0,
        }
    );
    assert!(err.to_string().contains("Item[1].list"));
    assert_eq!((ours, theirs), (ours_before, theirs_before));
}

#[test]
fn a_late_size_mismatch_leaves_ours_unchanged_and_theirs_whole() {
    let list = item(1, "list");
    let mut ours = vec![cs(meta(1, 1), vec![insert(list.clone(), 0, 1, 2)])];
    let mut theirs = vec![
        cs(meta(2, 2), vec![insert(list.clone(), 1, 2, 2)]),
        cs(meta(3, 2), vec![insert(list.clone(), 0, 3, 7)]),
    ];
    let before = ours.clone();
    let err = transform(&mut ours, &mut theirs, None).unwrap_err();
    assert!(matches!(
        err,
        TransformError::SizeMismatch {
            theirs_changeset: 1,
            ..
        }
    ));
    assert_eq!(ours, before, "ours is untouched");
    assert_eq!(
        theirs
            .iter()
            .map(|c| c.instructions.len())
            .collect::<Vec<_>>(),
        vec![1, 1],
        "their instructions are back in their changesets"
    );
}

#[test]
fn transform_each_hands_on_every_changeset_in_order_and_stops_at_an_error() {
    let list = item(1, "list");
    let ours = vec![cs(meta(1, 1), vec![insert(list.clone(), 0, 1, 2)])];
    let theirs = vec![
        // Touches none of ours, so it has no column; it is handed on all the same.
        cs(meta(2, 2), vec![set(item(2, "n"), Value::Int(1))]),
        cs(meta(3, 2), vec![insert(list.clone(), 0, 2, 2)]),
        cs(meta(4, 2), vec![insert(list.clone(), 0, 3, 3)]),
    ];
    let (mut ours_expected, mut theirs_expected) = (ours.clone(), theirs.clone());
    transform(&mut ours_expected, &mut theirs_expected, None).unwrap();

    let (mut o, mut t) = (ours.clone(), theirs.clone());
    let mut handed = Vec::new();
    transform_each(&mut o, &mut t, |c| {
        handed.push(c.clone());
        Ok::<(), Infallible>(())
    })
    .unwrap();
    assert_eq!(handed, theirs_expected);
    assert_eq!(o, ours_expected);

    let (mut o, mut t) = (ours.clone(), theirs.clone());
    let mut calls = 0;
    let err = transform_each(&mut o, &mut t, |_| {
        calls += 1;
        if calls == 2 {
            Err("stop")
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert!(matches!(err, EachError::Each("stop")));
    assert_eq!(calls, 2, "nothing is handed on after the error");
    assert_eq!(o, ours, "ours is untouched");
}

#[test]
fn different_top_level_lists_commute() {
    // Two top-level lists of one object (one of ours, one none of ours touch): their ids
    // differ, so the pair commutes (equal ids would report their different sizes).
    let mut ours = vec![cs(meta(1, 1), vec![insert(item(1, "list"), 0, 1, 2)])];
    let mut theirs = vec![cs(meta(2, 2), vec![insert(item(1, "subs"), 0, 2, 0)])];
    let (ours_before, theirs_before) = (ours.clone(), theirs.clone());
    let mut log = Vec::new();
    transform(&mut ours, &mut theirs, Some(&mut log)).unwrap();
    assert!(log.is_empty());
    transform(&mut ours, &mut theirs, None).unwrap();
    assert_eq!((ours, theirs), (ours_before, theirs_before));
}

#[test]
fn fast_path_skips_unrelated_objects() {
    let mut theirs: Vec<Changeset> = (0..10_000)
        .map(|i| {
            cs(
                meta(i, 2),
                vec![set(item(1000 + i as i64, "n"), Value::Int(1))],
            )
        })
        .collect();
    theirs.push(cs(meta(20_000, 2), vec![set(item(1, "n"), Value::Int(2))]));
    let mut ours = vec![cs(meta(1, 1), vec![set(item(1, "n"), Value::Int(1))]); 3];
    let before = theirs.clone();
    let mut log = Vec::new();
    transform(&mut ours, &mut theirs, Some(&mut log)).unwrap();
    assert_eq!(&theirs[..10_000], &before[..10_000]);
    assert!(ours.iter().all(|c| c.instructions.is_empty()));
    assert_eq!(log.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Convergence over random concurrent changesets.

/// A random write, interpreted against the transaction's current state.
#[derive(Debug, Clone)]
struct Op {
    kind: u8,
    a: u32,
    b: u32,
    v: i64,
}

fn op() -> impl Strategy<Value = Op> {
    (0u8..21, any::<u32>(), any::<u32>(), -4i64..5).prop_map(|(kind, a, b, v)| Op { kind, a, b, v })
}

fn lists(store: &Store, k: i64) -> Vec<Path> {
    let mut paths = vec![item(k, "list"), item(k, "subs")];
    if let Some(Value::Object(_)) = store.value_at(&item(k, "e")) {
        paths.push(field(item(k, "e"), "l"));
    }
    if let Some(Value::List(subs)) = store.value_at(&item(k, "subs")) {
        for i in 0..subs.len() as u32 {
            paths.push(field(index(item(k, "subs"), i), "l"));
        }
    }
    paths
}

fn list_len(store: &Store, path: &Path) -> u32 {
    match store.value_at(path) {
        Some(Value::List(items)) => items.len() as u32,
        _ => 0,
    }
}

fn subs_len(store: &Store, k: i64) -> u32 {
    list_len(store, &item(k, "subs"))
}

fn run(txn: &mut WriteTransaction<'_>, op: &Op) {
    let k = i64::from(op.a % 3);
    let b = op.b;
    let v = op.v;
    let pick = |n: u32, salt: u32| if n == 0 { 0 } else { (b / salt) % n };
    let store = txn.store();
    let list_paths = lists(store, k);
    let list = list_paths[(b % list_paths.len() as u32) as usize].clone();
    let len = list_len(store, &list);
    let subs = subs_len(store, k);
    let element = if list.field == "subs" && list.nested.is_empty() {
        sub(v)
    } else {
        Value::Int(v)
    };
    let sub_x = || {
        if subs > 0 && b % 2 == 0 {
            field(index(item(k, "subs"), pick(subs, 3)), "x")
        } else {
            field(item(k, "e"), "x")
        }
    };
    let tag = Value::from(["a", "b", "c"][(b % 3) as usize]);
    let dict_key = ["p", "q", "k"][(b % 3) as usize];
    // Errors (missing objects, empty lists, ...) leave the transaction as it was.
    let _ = match op.kind {
        0 => txn.create("Item", pk(k)),
        1 if v % 3 == 0 => txn.erase("Item", pk(k)),
        1 | 2 => txn.set(
            item(k, "n"),
            if v == 0 { Value::Null } else { Value::Int(v) },
        ),
        3 => txn.set(item(k, "s"), Value::from(["x", "y", "z"][(b % 3) as usize])),
        4 => txn.add_integer(item(k, if b % 2 == 0 { "c" } else { "n" }), v),
        5 => txn.list_insert(list, pick(len + 1, 7), element),
        6 if len > 0 => txn.list_set(list, pick(len, 7), element),
        7 if len > 0 => txn.list_move(list, pick(len, 7), pick(len, 11)),
        8 if len > 0 => txn.list_erase(list, pick(len, 7)),
        6..=8 => txn.list_push(list, element),
        9 => txn.clear(
            [item(k, "list"), item(k, "tags"), item(k, "dict"), list][(b % 4) as usize].clone(),
        ),
        10 => txn.set_insert(item(k, "tags"), tag),
        11 => txn.set_erase(item(k, "tags"), tag),
        12 => txn.dict_set(
            item(k, "dict"),
            dict_key,
            if v == 0 { Value::Null } else { Value::Int(v) },
        ),
        13 => txn.dict_erase(item(k, "dict"), dict_key),
        14 => txn.set(item(k, "e"), if v % 3 == 0 { Value::Null } else { sub(v) }),
        15 => txn.set(sub_x(), Value::Int(v)),
        16 => txn.add_integer(sub_x(), v),
        17 if b % 2 == 0 => txn.set(item(k, "list"), ints(&[v, v + 1])),
        17 => txn.set(item(k, "subs"), Value::List(vec![sub(v)].into())),
        18 => txn.set(
            item(k, "m"),
            if v % 2 == 0 {
                Value::Int(v)
            } else {
                Value::from("m")
            },
        ),
        19 => txn.add_integer(item(k, "m"), v),
        _ => txn.set(
            item(k, "link"),
            Value::Link(crate::value::Link {
                collection: "Item".into(),
                key: pk(i64::from(b % 4)),
            }),
        ),
    };
}

/// Runs `ops` in one transaction on a copy of `store`; returns the changeset and the new state.
fn make(store: &Store, ops: &[Op], meta: ChangesetMeta) -> (Changeset, Store) {
    let mut next = store.clone();
    let mut txn = next.write();
    for op in ops {
        run(&mut txn, op);
    }
    let (instructions, _) = txn.commit();
    (cs(meta, instructions), next)
}

fn initial(ops: &[Op]) -> Store {
    let mut s = store();
    let mut txn = s.write();
    for k in 0..3 {
        txn.create("Item", pk(k)).unwrap();
    }
    for op in ops {
        run(&mut txn, op);
    }
    txn.commit();
    s
}

fn transformed(
    ours: &[Changeset],
    theirs: &[Changeset],
) -> Result<(Vec<Changeset>, Vec<Changeset>), TransformError> {
    let (mut ours, mut theirs) = (ours.to_vec(), theirs.to_vec());
    transform(&mut ours, &mut theirs, None)?;
    Ok((ours, theirs))
}

fn state(base: &Store, parts: &[&[Changeset]]) -> Store {
    let mut s = base.clone();
    for part in parts {
        apply_all(&mut s, part);
    }
    s
}

/// Writes aimed at `Item[0]`'s lists: inserts, sets, moves, erasures, clears, whole-list sets and
/// writes through list indices.
fn list_op() -> impl Strategy<Value = Op> {
    (
        prop::sample::select(vec![5u8, 5, 6, 7, 7, 8, 8, 9, 15, 16, 17]),
        any::<u32>(),
        -4i64..5,
    )
        .prop_map(|(kind, b, v)| Op { kind, a: 0, b, v })
}

/// Two replicas with two changesets each: S·A·B' == S·B·A', and splitting either sequence
/// gives the same transformed instructions; transforming the other way round converges too.
fn check_sequences(
    s: &Store,
    a_ops: &[Vec<Op>],
    b_ops: &[Vec<Op>],
    (a_time, a_ident, b_time, b_ident): (u64, u64, u64, u64),
) -> Result<(), TestCaseError> {
    let (a1, sa) = make(s, &a_ops[0], meta(a_time, a_ident));
    let (a2, _) = make(&sa, &a_ops[1], meta(a_time + 1, a_ident));
    let (b1, sb) = make(s, &b_ops[0], meta(b_time, b_ident));
    let (b2, _) = make(&sb, &b_ops[1], meta(b_time + 1, b_ident));
    let ours = vec![a1, a2];
    let theirs = vec![b1, b2];

    // Pairs.
    let (o, t) = transformed(&ours[..1], &theirs[..1]).unwrap();
    let left = state(s, &[&ours[..1], &t]);
    let right = state(s, &[&theirs[..1], &o]);
    prop_assert_eq!(left.digest(), right.digest());
    prop_assert_eq!(&left, &right);

    // Sequences.
    let (o, t) = transformed(&ours, &theirs).unwrap();
    let left = state(s, &[&ours, &t]);
    let right = state(s, &[&theirs, &o]);
    prop_assert_eq!(left.digest(), right.digest());
    prop_assert_eq!(&left, &right);

    // With a log their instructions are copied into the grid instead of moved: same result.
    let (mut o_logged, mut t_logged) = (ours.clone(), theirs.clone());
    transform(&mut o_logged, &mut t_logged, Some(&mut Vec::new())).unwrap();
    prop_assert_eq!(&o_logged, &o);
    prop_assert_eq!(&t_logged, &t);

    // Handing each of theirs on as soon as it is transformed: the same changesets, in order.
    let (mut o_each, mut t_each) = (ours.clone(), theirs.clone());
    let mut handed = Vec::new();
    transform_each(&mut o_each, &mut t_each, |c| {
        handed.push(c.clone());
        Ok::<(), Infallible>(())
    })
    .unwrap();
    prop_assert_eq!(&o_each, &o);
    prop_assert_eq!(&handed, &t);

    // Splitting theirs.
    let (o1, t1) = transformed(&ours, &theirs[..1]).unwrap();
    let (o2, t2) = transformed(&o1, &theirs[1..]).unwrap();
    prop_assert_eq!(&o2, &o);
    prop_assert_eq!(&[t1, t2].concat(), &t);

    // Splitting ours.
    let (o1, t1) = transformed(&ours[..1], &theirs).unwrap();
    let (o2, t2) = transformed(&ours[1..], &t1).unwrap();
    prop_assert_eq!(&[o1, o2].concat(), &o);
    prop_assert_eq!(&t2, &t);

    // The other way round (the server's view of the same merge) reaches the same state.
    let (t_mirror, o_mirror) = transformed(&theirs, &ours).unwrap();
    prop_assert_eq!(&state(s, &[&ours, &t_mirror]), &left);
    prop_assert_eq!(&state(s, &[&theirs, &o_mirror]), &left);
    Ok(())
}

fn cases() -> u32 {
    std::env::var("EDDY_OT_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Random writes of every kind from two replicas converge (see [`check_sequences`]).
    #[test]
    fn concurrent_sequences_converge(
        init in proptest::collection::vec(op(), 0..30),
        a_ops in proptest::collection::vec(proptest::collection::vec(op(), 0..6), 2),
        b_ops in proptest::collection::vec(proptest::collection::vec(op(), 0..6), 2),
        keys in (0u64..3, 1u64..3, 0u64..3, 1u64..3),
    ) {
        check_sequences(&initial(&init), &a_ops, &b_ops, keys)?;
    }

    /// The same property with every write aimed at one object's lists and at paths through
    /// them, starting from populated lists.
    #[test]
    fn concurrent_list_edits_converge(
        init in proptest::collection::vec(list_op(), 4..30),
        a_ops in proptest::collection::vec(proptest::collection::vec(list_op(), 0..6), 2),
        b_ops in proptest::collection::vec(proptest::collection::vec(list_op(), 0..6), 2),
        keys in (0u64..3, 1u64..3, 0u64..3, 1u64..3),
    ) {
        check_sequences(&initial(&init), &a_ops, &b_ops, keys)?;
    }

    /// Three replicas merged through a server in arrival order all end in the same state.
    #[test]
    fn three_replicas_converge_through_a_server(
        init in proptest::collection::vec(op(), 0..30),
        ops in proptest::collection::vec(proptest::collection::vec(op(), 0..6), 3),
        times in proptest::collection::vec(0u64..3, 3),
    ) {
        let s = initial(&init);
        let a = make(&s, &ops[0], meta(times[0], 1)).0;
        let b = make(&s, &ops[1], meta(times[1], 2)).0;
        let c = make(&s, &ops[2], meta(times[2], 3)).0;
        // The server integrates A, then B (transformed past A), then C (past A and B').
        let (b_server, _) = transformed(std::slice::from_ref(&b), std::slice::from_ref(&a)).unwrap();
        let history = [a.clone(), b_server[0].clone()];
        let (c_server, _) = transformed(std::slice::from_ref(&c), &history).unwrap();
        let server = state(&s, &[&history, &c_server]);
        // Client B: had B, downloads A (transformed past B), then C'.
        let (_, a_for_b) = transformed(std::slice::from_ref(&b), std::slice::from_ref(&a)).unwrap();
        let client_b = state(&s, &[&[b], &a_for_b, &c_server]);
        // Client C: had C, downloads A and B' (transformed past C).
        let (_, history_for_c) = transformed(std::slice::from_ref(&c), &history).unwrap();
        let client_c = state(&s, &[&[c], &history_for_c]);
        prop_assert_eq!(server.digest(), client_b.digest());
        prop_assert_eq!(&server, &client_b);
        prop_assert_eq!(&server, &client_c);
    }
}
