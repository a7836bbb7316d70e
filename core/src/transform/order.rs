//! A total order on instructions, used only to break ties between concurrent changesets whose
//! last-writer-wins keys are equal, so every replica picks the same winner.

use std::cmp::Ordering;

use crate::changeset::Instruction;

fn tag(instruction: &Instruction) -> u8 {
    match instruction {
        Instruction::AddCollection { .. } => 0,
        Instruction::AddProperty { .. } => 1,
        Instruction::CreateObject { .. } => 2,
        Instruction::EraseObject { .. } => 3,
        Instruction::Set { .. } => 4,
        Instruction::AddInteger { .. } => 5,
        Instruction::ListInsert { .. } => 6,
        Instruction::ListSet { .. } => 7,
        Instruction::ListMove { .. } => 8,
        Instruction::ListErase { .. } => 9,
        Instruction::Clear { .. } => 10,
        Instruction::SetInsert { .. } => 11,
        Instruction::SetErase { .. } => 12,
        Instruction::DictErase { .. } => 13,
    }
}

/// Compares two instructions: by kind, then field by field.
pub(crate) fn compare(a: &Instruction, b: &Instruction) -> Ordering {
    use Instruction as I;
    tag(a).cmp(&tag(b)).then_with(|| match (a, b) {
        (
            I::AddCollection {
                name: n1,
                kind: k1,
                primary_key: p1,
            },
            I::AddCollection {
                name: n2,
                kind: k2,
                primary_key: p2,
            },
        ) => (n1, k1, p1).cmp(&(n2, k2, p2)),
        (
            I::AddProperty {
                collection: c1,
                property: p1,
            },
            I::AddProperty {
                collection: c2,
                property: p2,
            },
        ) => (c1, p1).cmp(&(c2, p2)),
        (
            I::CreateObject {
                collection: c1,
                key: k1,
            },
            I::CreateObject {
                collection: c2,
                key: k2,
            },
        )
        | (
            I::EraseObject {
                collection: c1,
                key: k1,
            },
            I::EraseObject {
                collection: c2,
                key: k2,
            },
        ) => (c1, k1).cmp(&(c2, k2)),
        (
            I::Set {
                path: p1,
                value: v1,
            },
            I::Set {
                path: p2,
                value: v2,
            },
        )
        | (I::SetInsert { set: p1, value: v1 }, I::SetInsert { set: p2, value: v2 })
        | (I::SetErase { set: p1, value: v1 }, I::SetErase { set: p2, value: v2 }) => {
            (p1, v1).cmp(&(p2, v2))
        }
        (
            I::AddInteger {
                path: p1,
                delta: d1,
            },
            I::AddInteger {
                path: p2,
                delta: d2,
            },
        ) => (p1, d1).cmp(&(p2, d2)),
        (
            I::ListInsert {
                list: l1,
                index: i1,
                value: v1,
                prior_size: s1,
            },
            I::ListInsert {
                list: l2,
                index: i2,
                value: v2,
                prior_size: s2,
            },
        )
        | (
            I::ListSet {
                list: l1,
                index: i1,
                value: v1,
                prior_size: s1,
            },
            I::ListSet {
                list: l2,
                index: i2,
                value: v2,
                prior_size: s2,
            },
        ) => (l1, i1, v1, s1).cmp(&(l2, i2, v2, s2)),
        (
            I::ListMove {
                list: l1,
                from: f1,
                to: t1,
                prior_size: s1,
            },
            I::ListMove {
                list: l2,
                from: f2,
                to: t2,
                prior_size: s2,
            },
        ) => (l1, f1, t1, s1).cmp(&(l2, f2, t2, s2)),
        (
            I::ListErase {
                list: l1,
                index: i1,
                prior_size: s1,
            },
            I::ListErase {
                list: l2,
                index: i2,
                prior_size: s2,
            },
        ) => (l1, i1, s1).cmp(&(l2, i2, s2)),
        (I::Clear { path: p1 }, I::Clear { path: p2 }) => p1.cmp(p2),
        (I::DictErase { dict: d1, key: k1 }, I::DictErase { dict: d2, key: k2 }) => {
            (d1, k1).cmp(&(d2, k2))
        }
        _ => Ordering::Equal,
    })
}
