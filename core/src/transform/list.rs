//! Index arithmetic for concurrent operations on one list: how an insert, set, move or erase is
//! rewritten to apply after another one, so that both orders give the same list.
//!
//! Arithmetic saturates: indices from a corrupt changeset may produce nonsense, which applying
//! then rejects, but never a panic.

use std::cmp::Ordering;

/// A list instruction reduced to its indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListOp {
    /// Insert a new element at the index.
    Insert(u32),
    /// Replace the element at the index.
    Set(u32),
    /// Move the element at `.0` so that it ends up at `.1`.
    Move(u32, u32),
    /// Remove the element at the index.
    Erase(u32),
}

/// What decided the outcome of a pair of list operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListRule {
    /// Indices were shifted to make room or close gaps.
    Shifted,
    /// Two inserts at the same index: the winner's element goes first.
    InsertTie,
    /// Both wrote the same element (or moved the same element): the winner's write stands.
    LastWriterWins,
    /// One erased the element the other wrote or moved.
    EraseWins,
    /// Both erased the same element.
    BothErased,
    /// Both did exactly the same thing (same instruction, same last-writer-wins key).
    Identical,
}

impl ListOp {
    /// How the list's size changes.
    pub(crate) fn size_delta(self) -> i64 {
        match self {
            ListOp::Insert(_) => 1,
            ListOp::Erase(_) => -1,
            ListOp::Set(_) | ListOp::Move(..) => 0,
        }
    }
}

/// Where the element at `index` is after moving the element at `from` to `to`.
pub(crate) fn move_map(index: u32, from: u32, to: u32) -> u32 {
    if index == from {
        return to;
    }
    let rest = if index > from {
        index.saturating_sub(1)
    } else {
        index
    };
    if rest >= to {
        rest.saturating_add(1)
    } else {
        rest
    }
}

fn inc(i: u32) -> u32 {
    i.saturating_add(1)
}

fn dec(i: u32) -> u32 {
    i.saturating_sub(1)
}

/// The outcome of transforming a pair: each side's rewritten op (`None`: discarded) and the rule
/// that decided, if anything changed.
pub(crate) type ListOutcome = (Option<ListOp>, Option<ListOp>, Option<ListRule>);

/// Transforms two concurrent operations on the same list against each other: `a'` applies after
/// `b`, `b'` after `a`, and both orders give the same list. `a_rank` breaks ties: `Greater`
/// when `a` wins, `Less` when `b` wins, `Equal` when both are the same instruction (then both
/// are treated alike, so swapping the sides swaps the results).
pub(crate) fn transform(a: ListOp, b: ListOp, a_rank: Ordering) -> ListOutcome {
    use ListOp::{Erase, Insert, Move, Set};
    let a_wins = a_rank == Ordering::Greater;
    let (a2, b2, rule) = match (a, b) {
        (Insert(i), Insert(j)) => {
            let rule = if i == j {
                ListRule::InsertTie
            } else {
                ListRule::Shifted
            };
            if i == j && a_rank == Ordering::Equal {
                // The same element inserted twice: both copies, side by side.
                (Some(Insert(inc(i))), Some(Insert(inc(j))), rule)
            } else if i < j || (i == j && a_wins) {
                (Some(Insert(i)), Some(Insert(inc(j))), rule)
            } else {
                (Some(Insert(inc(i))), Some(Insert(j)), rule)
            }
        }
        (Insert(i), Set(j)) => (
            Some(Insert(i)),
            Some(Set(if j >= i { inc(j) } else { j })),
            ListRule::Shifted,
        ),
        (Insert(i), Move(f, t)) => {
            // The insert's position in the list without the moved element, then in the moved list
            // (an insert and a move aimed at the same gap: the inserted element goes first).
            let rest = if i <= f { i } else { dec(i) };
            let i2 = if t < rest { inc(rest) } else { rest };
            let f2 = if f < i { f } else { inc(f) };
            let t2 = if t < i2 { t } else { inc(t) };
            (Some(Insert(i2)), Some(Move(f2, t2)), ListRule::Shifted)
        }
        (Insert(i), Erase(j)) => {
            if j >= i {
                (Some(Insert(i)), Some(Erase(inc(j))), ListRule::Shifted)
            } else {
                (Some(Insert(dec(i))), Some(Erase(j)), ListRule::Shifted)
            }
        }
        (Set(i), Set(j)) => {
            if i != j {
                return (Some(a), Some(b), None);
            }
            match a_rank {
                Ordering::Greater => (Some(a), None, ListRule::LastWriterWins),
                Ordering::Less => (None, Some(b), ListRule::LastWriterWins),
                Ordering::Equal => return (Some(a), Some(b), Some(ListRule::Identical)),
            }
        }
        (Set(i), Move(f, t)) => (Some(Set(move_map(i, f, t))), Some(b), ListRule::Shifted),
        (Set(i), Erase(j)) => {
            if i == j {
                (None, Some(b), ListRule::EraseWins)
            } else if i > j {
                (Some(Set(dec(i))), Some(b), ListRule::Shifted)
            } else {
                (Some(a), Some(b), ListRule::Shifted)
            }
        }
        (Move(f1, t1), Move(f2, t2)) => {
            if f1 == f2 {
                // The winner moves the element from where the loser put it.
                match a_rank {
                    Ordering::Greater => (Some(Move(t2, t1)), None, ListRule::LastWriterWins),
                    Ordering::Less => (None, Some(Move(t1, t2)), ListRule::LastWriterWins),
                    Ordering::Equal => {
                        (Some(Move(t2, t1)), Some(Move(t1, t2)), ListRule::Identical)
                    }
                }
            } else {
                // Each moved element keeps the place its own move gave it among the elements
                // neither move touched; if both land in the same gap, the winner goes first.
                let a_after_b = move_map(f1, f2, t2);
                let b_after_a = move_map(f2, f1, t1);
                let a_gap = if b_after_a < t1 { dec(t1) } else { t1 };
                let b_gap = if a_after_b < t2 { dec(t2) } else { t2 };
                let (a_to, b_to) = if a_gap < b_gap || (a_gap == b_gap && a_wins) {
                    (a_gap, inc(b_gap))
                } else {
                    (inc(a_gap), b_gap)
                };
                (
                    Some(Move(a_after_b, a_to)),
                    Some(Move(b_after_a, b_to)),
                    ListRule::Shifted,
                )
            }
        }
        (Move(f, t), Erase(j)) => {
            if j == f {
                (None, Some(Erase(t)), ListRule::EraseWins)
            } else {
                let j2 = move_map(j, f, t);
                let f2 = if f > j { dec(f) } else { f };
                let t2 = if j2 < t { dec(t) } else { t };
                (Some(Move(f2, t2)), Some(Erase(j2)), ListRule::Shifted)
            }
        }
        (Erase(i), Erase(j)) => {
            if i == j {
                (None, None, ListRule::BothErased)
            } else if i < j {
                (Some(a), Some(Erase(dec(j))), ListRule::Shifted)
            } else {
                (Some(Erase(dec(i))), Some(b), ListRule::Shifted)
            }
        }
        // Every other pair is one of the above with the sides swapped.
        _ => {
            let (b2, a2, rule) = transform(b, a, a_rank.reverse());
            return (a2, b2, rule);
        }
    };
    let changed = a2 != Some(a) || b2 != Some(b);
    (a2, b2, changed.then_some(rule))
}
