//! The pairwise rules: how one instruction is rewritten against one concurrent instruction, and
//! the other against it, so that applying them in either order gives the same state.
//!
//! Every rule is symmetric: swapping the two sides swaps the results. Ties are broken by the
//! changesets' last-writer-wins keys and then by the instructions' contents.

use std::cmp::Ordering;

use crate::changeset::{ChangesetMeta, Instruction, Path, PathElement};
use crate::value::Value;

use super::list::{self, ListOp, ListRule};
use super::{order, Rule};

/// One side's instruction in the grid; `None` once it has been discarded.
pub(crate) type Cell = Option<Instruction>;

/// Two concurrent list instructions expected different list sizes.
#[derive(Debug)]
pub(crate) struct Diverged {
    pub(crate) list: Path,
    pub(crate) ours: u32,
    pub(crate) theirs: u32,
}

/// Transforms `x` (ours) and `y` (theirs) against each other in place. Returns the rule that
/// decided when the pair interacted, `None` when the two simply commute.
pub(crate) fn transform_pair(
    x: &mut Cell,
    y: &mut Cell,
    x_meta: &ChangesetMeta,
    y_meta: &ChangesetMeta,
) -> Result<Option<Rule>, Diverged> {
    let (Some(xi), Some(yi)) = (x.as_ref(), y.as_ref()) else {
        return Ok(None);
    };
    // Fast path: two list instructions on the same list (concurrent edits of one busy list are
    // the common case). This is where the general rules below end up, after one path
    // comparison instead of several.
    if let (Some((_, xl)), Some((_, yl))) = (list_op_on(xi), list_op_on(yi)) {
        if same_path(xl, yl) {
            return same_list_pair(x, y, x_meta, y_meta);
        }
    }
    if is_schema(xi) || is_schema(yi) {
        return Ok(schema_pair(x, y, x_meta, y_meta));
    }
    if xi.object() != yi.object() {
        return Ok(None);
    }
    match (xi, yi) {
        (Instruction::EraseObject { .. }, Instruction::EraseObject { .. }) => {
            Ok(Some(Rule::Idempotent))
        }
        (Instruction::EraseObject { .. }, _) => {
            *y = None;
            Ok(Some(Rule::EraseWins))
        }
        (_, Instruction::EraseObject { .. }) => {
            *x = None;
            Ok(Some(Rule::EraseWins))
        }
        (Instruction::CreateObject { .. }, Instruction::CreateObject { .. }) => {
            Ok(Some(Rule::CreateIdempotent))
        }
        (Instruction::CreateObject { .. }, _) | (_, Instruction::CreateObject { .. }) => Ok(None),
        _ => path_pair(x, y, x_meta, y_meta),
    }
}

/// [`transform_pair`] for two cells the caller knows act on the same list (when both are list
/// instructions): it skips comparing their paths.
pub(crate) fn same_list_pair(
    x: &mut Cell,
    y: &mut Cell,
    x_meta: &ChangesetMeta,
    y_meta: &ChangesetMeta,
) -> Result<Option<Rule>, Diverged> {
    let (Some(xi), Some(yi)) = (x.as_ref(), y.as_ref()) else {
        return Ok(None);
    };
    let (Some((xo, xl)), Some((yo, _))) = (list_op_on(xi), list_op_on(yi)) else {
        return transform_pair(x, y, x_meta, y_meta);
    };
    if xo.1 != yo.1 {
        return Err(Diverged {
            list: xl.clone(),
            ours: xo.1,
            theirs: yo.1,
        });
    }
    let x_rank = rank(xi, x_meta, yi, y_meta);
    Ok(list_pair(x, y, xo, yo, x_rank))
}

/// The list a list instruction acts on, when it is a top-level field: such a path never
/// changes during a transform (rules only shift indices inside nested paths).
pub(crate) fn top_level_list(instruction: &Instruction) -> Option<&Path> {
    list_op_on(instruction)
        .map(|(_, list)| list)
        .filter(|list| list.nested.is_empty())
}

/// How `x` ranks against `y`: later last-writer-wins key, then the greater instruction.
/// `Greater`: `x` wins; `Less`: `y` wins; `Equal`: the two are the same instruction from
/// changesets with the same key, and rules must treat them alike to stay symmetric.
fn rank(
    x: &Instruction,
    x_meta: &ChangesetMeta,
    y: &Instruction,
    y_meta: &ChangesetMeta,
) -> Ordering {
    x_meta
        .lww_key()
        .cmp(&y_meta.lww_key())
        .then_with(|| order::compare(x, y))
}

fn is_schema(instruction: &Instruction) -> bool {
    matches!(
        instruction,
        Instruction::AddCollection { .. } | Instruction::AddProperty { .. }
    )
}

/// Keeps the winner and discards the loser; two identical writes are both kept (each is a
/// no-op after the other).
fn last_writer_wins(x: &mut Cell, y: &mut Cell, x_rank: Ordering) -> Option<Rule> {
    match x_rank {
        Ordering::Greater => *y = None,
        Ordering::Less => *x = None,
        Ordering::Equal => return Some(Rule::Idempotent),
    }
    Some(Rule::LastWriterWins)
}

fn schema_pair(
    x: &mut Cell,
    y: &mut Cell,
    x_meta: &ChangesetMeta,
    y_meta: &ChangesetMeta,
) -> Option<Rule> {
    let (xi, yi) = (x.as_ref()?, y.as_ref()?);
    let same_target = match (xi, yi) {
        (
            Instruction::AddCollection { name: a, .. },
            Instruction::AddCollection { name: b, .. },
        ) => a == b,
        (
            Instruction::AddProperty {
                collection: c1,
                property: p1,
            },
            Instruction::AddProperty {
                collection: c2,
                property: p2,
            },
        ) => c1 == c2 && p1.name == p2.name,
        _ => false,
    };
    if !same_target {
        return None;
    }
    if xi == yi {
        return Some(Rule::Idempotent);
    }
    let x_rank = rank(xi, x_meta, yi, y_meta);
    last_writer_wins(x, y, x_rank)
}

/// The path a path-based instruction acts on (for container instructions, the container's).
fn target(instruction: &Instruction) -> Option<&Path> {
    match instruction {
        Instruction::Set { path, .. }
        | Instruction::AddInteger { path, .. }
        | Instruction::Clear { path } => Some(path),
        Instruction::ListInsert { list, .. }
        | Instruction::ListSet { list, .. }
        | Instruction::ListMove { list, .. }
        | Instruction::ListErase { list, .. } => Some(list),
        Instruction::SetInsert { set, .. } | Instruction::SetErase { set, .. } => Some(set),
        Instruction::DictErase { dict, .. } => Some(dict),
        _ => None,
    }
}

fn target_mut(instruction: &mut Instruction) -> Option<&mut Path> {
    match instruction {
        Instruction::Set { path, .. }
        | Instruction::AddInteger { path, .. }
        | Instruction::Clear { path } => Some(path),
        Instruction::ListInsert { list, .. }
        | Instruction::ListSet { list, .. }
        | Instruction::ListMove { list, .. }
        | Instruction::ListErase { list, .. } => Some(list),
        Instruction::SetInsert { set, .. } | Instruction::SetErase { set, .. } => Some(set),
        Instruction::DictErase { dict, .. } => Some(dict),
        _ => None,
    }
}

/// An instruction that acts on the elements of the container at its target.
fn is_container_op(instruction: &Instruction) -> bool {
    matches!(
        instruction,
        Instruction::ListInsert { .. }
            | Instruction::ListSet { .. }
            | Instruction::ListMove { .. }
            | Instruction::ListErase { .. }
            | Instruction::SetInsert { .. }
            | Instruction::SetErase { .. }
            | Instruction::DictErase { .. }
    )
}

/// Whether two paths are the same, comparing first what most often differs.
fn same_path(a: &Path, b: &Path) -> bool {
    a.field == b.field && a.key == b.key && a.nested == b.nested && a.collection == b.collection
}

/// A list instruction's op and prior size, with the list it acts on.
fn list_op_on(instruction: &Instruction) -> Option<((ListOp, u32), &Path)> {
    match instruction {
        Instruction::ListInsert {
            list,
            index,
            prior_size,
            ..
        } => Some(((ListOp::Insert(*index), *prior_size), list)),
        Instruction::ListSet {
            list,
            index,
            prior_size,
            ..
        } => Some(((ListOp::Set(*index), *prior_size), list)),
        Instruction::ListMove {
            list,
            from,
            to,
            prior_size,
        } => Some(((ListOp::Move(*from, *to), *prior_size), list)),
        Instruction::ListErase {
            list,
            index,
            prior_size,
        } => Some(((ListOp::Erase(*index), *prior_size), list)),
        _ => None,
    }
}

fn list_op(instruction: &Instruction) -> Option<(ListOp, u32)> {
    list_op_on(instruction).map(|(op, _)| op)
}

/// Writes a transformed list op and prior size back into its instruction.
fn set_list_op(instruction: &mut Instruction, op: ListOp, size: u32) {
    match (instruction, op) {
        (
            Instruction::ListInsert {
                index, prior_size, ..
            },
            ListOp::Insert(i),
        )
        | (
            Instruction::ListSet {
                index, prior_size, ..
            },
            ListOp::Set(i),
        )
        | (
            Instruction::ListErase {
                index, prior_size, ..
            },
            ListOp::Erase(i),
        ) => {
            *index = i;
            *prior_size = size;
        }
        (
            Instruction::ListMove {
                from,
                to,
                prior_size,
                ..
            },
            ListOp::Move(f, t),
        ) => {
            *from = f;
            *to = t;
            *prior_size = size;
        }
        _ => {}
    }
}

enum Relation {
    Same,
    XOuter,
    YOuter,
    Unrelated,
}

fn path_pair(
    x: &mut Cell,
    y: &mut Cell,
    x_meta: &ChangesetMeta,
    y_meta: &ChangesetMeta,
) -> Result<Option<Rule>, Diverged> {
    let (Some(xi), Some(yi)) = (x.as_ref(), y.as_ref()) else {
        return Ok(None);
    };
    let (Some(tx), Some(ty)) = (target(xi), target(yi)) else {
        return Ok(None);
    };
    let relation = if tx == ty {
        Relation::Same
    } else if tx.is_strict_prefix_of(ty) {
        Relation::XOuter
    } else if ty.is_strict_prefix_of(tx) {
        Relation::YOuter
    } else {
        Relation::Unrelated
    };
    let x_rank = rank(xi, x_meta, yi, y_meta);
    match relation {
        Relation::Same => same_target(x, y, x_rank),
        Relation::XOuter => Ok(outer(x, y, x_rank)),
        Relation::YOuter => Ok(outer(y, x, x_rank.reverse())),
        Relation::Unrelated => Ok(None),
    }
}

/// Two instructions on the same path.
fn same_target(x: &mut Cell, y: &mut Cell, x_rank: Ordering) -> Result<Option<Rule>, Diverged> {
    use Instruction as I;
    let (Some(xi), Some(yi)) = (x.as_ref(), y.as_ref()) else {
        return Ok(None);
    };
    let rule = match (xi, yi) {
        (I::Set { .. }, I::Set { .. })
        | (I::Set { .. }, I::Clear { .. })
        | (I::Clear { .. }, I::Set { .. }) => last_writer_wins(x, y, x_rank),
        (I::Set { .. }, I::AddInteger { .. }) => fold(x, y, x_rank),
        (I::AddInteger { .. }, I::Set { .. }) => fold(y, x, x_rank.reverse()),
        (I::AddInteger { .. }, I::AddInteger { .. }) => Some(Rule::AddsCommute),
        (I::Clear { .. }, I::Clear { .. }) => Some(Rule::Idempotent),
        (I::Set { .. }, other) if is_container_op(other) => {
            *y = None;
            Some(Rule::OuterPathWins)
        }
        (other, I::Set { .. }) if is_container_op(other) => {
            *x = None;
            Some(Rule::OuterPathWins)
        }
        (I::Clear { .. }, other) if is_container_op(other) => {
            *y = None;
            Some(Rule::ClearWins)
        }
        (other, I::Clear { .. }) if is_container_op(other) => {
            *x = None;
            Some(Rule::ClearWins)
        }
        (I::SetInsert { value: a, .. }, I::SetErase { value: b, .. })
        | (I::SetErase { value: a, .. }, I::SetInsert { value: b, .. })
            if a == b =>
        {
            last_writer_wins(x, y, x_rank)
        }
        (I::SetInsert { value: a, .. }, I::SetInsert { value: b, .. })
        | (I::SetErase { value: a, .. }, I::SetErase { value: b, .. })
            if a == b =>
        {
            Some(Rule::Idempotent)
        }
        (I::DictErase { key: a, .. }, I::DictErase { key: b, .. }) if a == b => {
            Some(Rule::Idempotent)
        }
        _ => match (list_op(xi), list_op(yi), target(xi)) {
            (Some((_, x_size)), Some((_, y_size)), Some(list)) if x_size != y_size => {
                return Err(Diverged {
                    list: list.clone(),
                    ours: x_size,
                    theirs: y_size,
                });
            }
            (Some(xo), Some(yo), _) => return Ok(list_pair(x, y, xo, yo, x_rank)),
            _ => None,
        },
    };
    Ok(rule)
}

/// A `Set` and an `AddInteger` on the same path. A later set discards the addition; an earlier
/// integer set absorbs it (so both orders end at `value + delta`); an earlier non-integer set
/// makes the addition moot.
fn fold(set: &mut Cell, add: &mut Cell, set_rank: Ordering) -> Option<Rule> {
    if set_rank == Ordering::Greater {
        *add = None;
        return Some(Rule::LastWriterWins);
    }
    let Some(Instruction::AddInteger { delta, .. }) = add.as_ref() else {
        return None;
    };
    let delta = *delta;
    match set.as_mut() {
        Some(Instruction::Set {
            value: Value::Int(value),
            ..
        }) => {
            *value = value.wrapping_add(delta);
            Some(Rule::AddFoldedIntoSet)
        }
        _ => {
            *add = None;
            Some(Rule::LastWriterWins)
        }
    }
}

fn list_pair(
    x: &mut Cell,
    y: &mut Cell,
    (xo, x_size): (ListOp, u32),
    (yo, _): (ListOp, u32),
    x_rank: Ordering,
) -> Option<Rule> {
    let size_after = |op: ListOp| {
        let size = i64::from(x_size).saturating_add(op.size_delta());
        u32::try_from(size.max(0)).unwrap_or(u32::MAX)
    };
    let (x2, y2, rule) = list::transform(xo, yo, x_rank);
    let x_prior = size_after(yo);
    let y_prior = size_after(xo);
    // Prior sizes always follow the other side's insert or erase, even when no index moves.
    let rule =
        rule.or_else(|| (x_prior != x_size || y_prior != x_size).then_some(ListRule::Shifted))?;
    match (x2, x.as_mut()) {
        (Some(op), Some(instruction)) => set_list_op(instruction, op, x_prior),
        _ => *x = None,
    }
    match (y2, y.as_mut()) {
        (Some(op), Some(instruction)) => set_list_op(instruction, op, y_prior),
        _ => *y = None,
    }
    Some(match rule {
        ListRule::Shifted => Rule::ListIndexShifted,
        ListRule::InsertTie => Rule::ListInsertTie,
        ListRule::LastWriterWins => Rule::LastWriterWins,
        ListRule::EraseWins => Rule::EraseWins,
        ListRule::BothErased | ListRule::Identical => Rule::Idempotent,
    })
}

/// `o`'s target is a strict prefix of `inner`'s: `inner` acts somewhere inside what `o` writes.
fn outer(o: &mut Cell, inner: &mut Cell, o_rank: Ordering) -> Option<Rule> {
    let (oi, ii) = (o.as_ref()?, inner.as_ref()?);
    let depth = target(oi)?.nested.len();
    let inner_path = target(ii)?;
    let step = inner_path.nested.get(depth)?;
    let exact = inner_path.nested.len() == depth + 1;
    match oi {
        Instruction::Set { .. } => {
            *inner = None;
            Some(Rule::OuterPathWins)
        }
        Instruction::Clear { .. } => {
            *inner = None;
            Some(Rule::ClearWins)
        }
        Instruction::DictErase { key, .. } => {
            if !matches!(step, PathElement::Key(k) if k == key) {
                return None;
            }
            match ii {
                Instruction::Set { .. } if exact => last_writer_wins(o, inner, o_rank),
                // Adding to an erased entry is a no-op, so the two commute.
                Instruction::AddInteger { .. } if exact => None,
                _ => {
                    *inner = None;
                    Some(Rule::OuterPathWins)
                }
            }
        }
        _ => {
            let (op, _) = list_op(oi)?;
            let PathElement::Index(j) = *step else {
                return None;
            };
            let shifted = match op {
                ListOp::Insert(i) => (j >= i).then(|| j.saturating_add(1)),
                ListOp::Erase(i) if i == j => {
                    *inner = None;
                    return Some(Rule::OuterPathWins);
                }
                ListOp::Erase(i) => (j > i).then(|| j.saturating_sub(1)),
                ListOp::Set(i) if i == j => {
                    *inner = None;
                    return Some(Rule::OuterPathWins);
                }
                ListOp::Set(_) => None,
                ListOp::Move(f, t) => Some(list::move_map(j, f, t)).filter(|k| *k != j),
            }?;
            let element = inner
                .as_mut()
                .and_then(target_mut)
                .and_then(|path| path.nested.get_mut(depth))?;
            *element = PathElement::Index(shifted);
            Some(Rule::ListIndexShifted)
        }
    }
}
