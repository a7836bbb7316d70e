//! Operational transformation: the one merge algorithm clients and server share.
//!
//! [`transform`] takes two concurrent sequences of changesets that both apply to the same state
//! and rewrites each to apply after the other, so that both replicas converge. The sequence
//! transform is a grid of pairwise instruction transforms: each instruction is transformed
//! against each concurrent one, in order, and each pairwise transform yields at most one
//! instruction per side. Because every cell of the grid depends only on its two inputs, splitting
//! either sequence into consecutive parts and transforming part by part gives identical results.
//!
//! The pairwise rules are Realm's: last writer wins per path (by [`ChangesetMeta::lww_key`], then
//! by instruction contents); a write to an outer path (a `Set`, `Clear`, object erasure, list
//! element erasure or replacement, dictionary key erasure) discards concurrent instructions
//! beneath it; creations are idempotent; integer additions commute and fold into earlier integer
//! sets; list instructions shift each other's indices (ties broken by the same order on both
//! sides); and two list instructions that disagree about the list's size mean the histories
//! diverged, which is reported, never ignored.
//!
//! **Fast path:** instructions on different top-level objects commute (schema instructions only
//! interact with schema instructions), so `ours` (usually few: the pending uploads) is indexed
//! by object and each of their changesets (usually many: a download) is only transformed
//! against the changesets of ours that touch its objects, in one pass over theirs.

mod list;
mod order;
mod rules;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use crate::changeset::{Changeset, Instruction, Path};
use crate::store::ShowPath;
use crate::value::PrimaryKey;

use rules::Cell;

/// The rule that decided a pairwise transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// Both wrote the same target: the later writer (by `lww_key`, then contents) is kept, the
    /// other discarded.
    LastWriterWins,
    /// A write to an outer path (a `Set`, a list element's erasure or replacement, a dictionary
    /// key's erasure) discarded an instruction beneath it.
    OuterPathWins,
    /// An object erasure discarded a concurrent change inside the object or creation of it; or a
    /// list element's erasure discarded a concurrent write or move of that element.
    EraseWins,
    /// Both created the same object: both kept, the second is a no-op.
    CreateIdempotent,
    /// Both did the same thing (erased the same object, element or key, cleared the same
    /// container, added the same schema item or set member): both kept, or both dropped when
    /// keeping them would do it twice.
    Idempotent,
    /// Integer additions to the same path commute: both kept.
    AddsCommute,
    /// An earlier integer `Set` absorbed a later concurrent addition, so both orders agree.
    AddFoldedIntoSet,
    /// A list instruction shifted the other's indices (or an index in its path).
    ListIndexShifted,
    /// Two inserts at the same list index: the winner's element goes first.
    ListInsertTie,
    /// A `Clear` discarded an instruction inside the container it emptied.
    ClearWins,
}

/// What a pairwise transform did to one side's instruction.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// Left as it was.
    Kept,
    /// Rewritten into this instruction.
    Rewritten(Instruction),
    /// Removed.
    Discarded,
}

/// One side of a [`MergeDecision`].
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionSide {
    /// The changeset's index in the slice passed to [`transform`].
    pub changeset: usize,
    /// The instruction's index in that changeset as passed in.
    pub instruction: usize,
    /// The instruction as passed in.
    pub original: Instruction,
    /// What this pairwise transform did to it.
    pub outcome: Outcome,
}

/// A pairwise transform in which something non-trivial happened, for the dev console.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeDecision {
    /// Our instruction.
    pub ours: DecisionSide,
    /// Their instruction.
    pub theirs: DecisionSide,
    /// The rule that decided.
    pub rule: Rule,
}

/// Why two sequences of changesets cannot be transformed against each other.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransformError {
    /// Two concurrent list instructions expected different sizes of the same list, so the two
    /// histories do not start from the same state.
    SizeMismatch {
        /// The list's path.
        list: Path,
        /// The size our instruction expected.
        ours: u32,
        /// The size their instruction expected.
        theirs: u32,
        /// Our changeset's index.
        ours_changeset: usize,
        /// Their changeset's index.
        theirs_changeset: usize,
    },
}

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransformError::SizeMismatch {
                list,
                ours,
                theirs,
                ours_changeset,
                theirs_changeset,
            } => write!(
                f,
                "list {} had {ours} elements for our changeset {ours_changeset} but {theirs} for \
                 their changeset {theirs_changeset}: the histories diverged, reset the client",
                ShowPath(list)
            ),
        }
    }
}

impl std::error::Error for TransformError {}

/// `ours` and `theirs` are concurrent sequences of changesets that both apply to the same state
/// S. On return, `ours` is rewritten to apply after `theirs` and `theirs` to apply after `ours`:
/// S·theirs·ours' == S·ours·theirs'. Metadata is unchanged; instructions are rewritten or
/// removed. With `log`, every pairwise transform in which something non-trivial happened is
/// appended to it.
///
/// On error `ours` is unchanged (the log may hold the decisions made before the error). Without a
/// log, `theirs` is transformed in place (their instructions are moved, not copied, into the
/// grid), so after an error it may hold instructions already transformed against some of ours:
/// callers discard it. With a log, `theirs` is unchanged on error too.
pub fn transform(
    ours: &mut [Changeset],
    theirs: &mut [Changeset],
    log: Option<&mut Vec<MergeDecision>>,
) -> Result<(), TransformError> {
    match run(ours, theirs, log, &mut |_| true) {
        Err(Stop::Transform(e)) => Err(e),
        // Nothing here stops the walk.
        Ok(()) | Err(Stop::Each) => Ok(()),
    }
}

/// Why [`transform_each`] stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum EachError<E> {
    /// The two sequences cannot be transformed against each other.
    Transform(TransformError),
    /// The caller's step failed on one of their changesets.
    Each(E),
}

impl<E: fmt::Display> fmt::Display for EachError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EachError::Transform(e) => e.fmt(f),
            EachError::Each(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for EachError<E> {}

/// [`transform`] without a log that hands each of their changesets to `each`, in order, as soon
/// as it is transformed against all of ours (while it is still in cache), instead of after the
/// whole transform: a client integrating a download applies each changeset there, reading it
/// once instead of once to transform and again to apply.
///
/// On error (the transform's or `each`'s) `ours` is unchanged, and the changesets of theirs
/// already handed to `each` stay handed: callers undo what `each` did with them.
pub fn transform_each<E>(
    ours: &mut [Changeset],
    theirs: &mut [Changeset],
    mut each: impl FnMut(&mut Changeset) -> Result<(), E>,
) -> Result<(), EachError<E>> {
    let mut failure = None;
    let mut step = |changeset: &mut Changeset| match each(changeset) {
        Ok(()) => true,
        Err(e) => {
            failure = Some(e);
            false
        }
    };
    match run(ours, theirs, None, &mut step) {
        Ok(()) => Ok(()),
        Err(Stop::Transform(e)) => Err(EachError::Transform(e)),
        Err(Stop::Each) => failure.map_or(Ok(()), |e| Err(EachError::Each(e))),
    }
}

/// Why [`run`] stopped early.
enum Stop {
    Transform(TransformError),
    /// `each` returned `false`.
    Each,
}

/// [`transform`] and [`transform_each`]: `each` is only called without a log, and the walk
/// stops when it returns `false`. One instance serves both (the browser build links both).
fn run(
    ours: &mut [Changeset],
    theirs: &mut [Changeset],
    mut log: Option<&mut Vec<MergeDecision>>,
    each: &mut dyn FnMut(&mut Changeset) -> bool,
) -> Result<(), Stop> {
    let mut our_cells: Vec<Option<Vec<Cell>>> = vec![None; ours.len()];
    // A download brings many of their changesets, each transformed once: without a log their
    // instructions are moved into the grid instead of copied, and moved back as soon as their
    // column is done, while still in cache. With a log their transformed cells are kept aside
    // until every pair succeeded.
    let move_theirs = log.is_none();
    let mut their_cells: Vec<Option<Vec<Cell>>> = if move_theirs {
        Vec::new()
    } else {
        vec![None; theirs.len()]
    };
    // Ours stay as passed in until the end (their cells are transformed instead), so the index
    // can borrow them while theirs are rewritten.
    let index = Index::new(ours);
    let lists = Lists::new(ours);
    let mut their_ids = Vec::new();
    let mut merged = Vec::new();
    let mut result: Result<(), Stop> = Ok(());
    // The grid is walked column by column: one of their changesets against each relevant one of
    // ours, in order. Any order that reaches cell (i, j) after (i-1, j) and (i, j-1) gives the
    // same result; this one reads each of their changesets once, in one pass, while ours stay
    // in cache.
    for (b_index, b) in theirs.iter_mut().enumerate() {
        let a_indices = index.relevant(&b.instructions, &mut merged);
        if a_indices.is_empty() {
            if move_theirs && !each(b) {
                result = Err(Stop::Each);
                break;
            }
            continue;
        }
        let mut b_cells: Vec<Cell> = if move_theirs {
            std::mem::take(&mut b.instructions)
                .into_iter()
                .map(Some)
                .collect()
        } else {
            cells(b)
        };
        their_ids.clear();
        their_ids.extend(b_cells.iter().map(|cell| lists.id(cell.as_ref())));
        for &a_index in a_indices {
            let (Some(a), Some(a_cells), Some(a_ids)) = (
                ours.get(a_index),
                our_cells.get_mut(a_index),
                lists.ours.get(a_index),
            ) else {
                continue;
            };
            let a_cells = a_cells.get_or_insert_with(|| cells(a));
            let grid = Grid {
                ours: (a_index, a, a_ids),
                theirs: (b_index, b, &their_ids),
            };
            result = grid
                .run(a_cells, &mut b_cells, log.as_deref_mut())
                .map_err(Stop::Transform);
            if result.is_err() {
                break;
            }
        }
        if move_theirs {
            b.instructions = kept(b_cells);
            if result.is_ok() && !each(b) {
                result = Err(Stop::Each);
            }
        } else if let Some(slot) = their_cells.get_mut(b_index) {
            *slot = Some(b_cells);
        }
        if result.is_err() {
            break;
        }
    }
    // Only now, with every pair transformed, are the changesets rewritten: on error ours are
    // untouched, and so are theirs unless their instructions were moved into the grid.
    if result.is_ok() {
        for (changeset, cells) in theirs.iter_mut().zip(their_cells) {
            if let Some(cells) = cells {
                changeset.instructions = kept(cells);
            }
        }
    }
    result?;
    for (changeset, cells) in ours.iter_mut().zip(our_cells) {
        if let Some(cells) = cells {
            changeset.instructions = kept(cells);
        }
    }
    Ok(())
}

/// The instructions left in a changeset's cells, in the cells' own allocation: `filter_map`
/// collects in place where `flatten` allocates a new vector (one per downloaded changeset).
#[allow(clippy::filter_map_identity)]
fn kept(cells: Vec<Cell>) -> Vec<Instruction> {
    cells.into_iter().filter_map(|cell| cell).collect()
}

fn cells(changeset: &Changeset) -> Vec<Cell> {
    changeset.instructions.iter().cloned().map(Some).collect()
}

/// One of our changesets against one of theirs, with their cells' list ids (see [`Lists`]).
/// Their instructions as passed in are only read for the log, so they may have been moved out
/// of `theirs` when there is none.
struct Grid<'c> {
    ours: (usize, &'c Changeset, &'c [Option<u32>]),
    theirs: (usize, &'c Changeset, &'c [Option<u32>]),
}

impl Grid<'_> {
    fn run(
        &self,
        a_cells: &mut [Cell],
        b_cells: &mut [Cell],
        mut log: Option<&mut Vec<MergeDecision>>,
    ) -> Result<(), TransformError> {
        let (a_index, a, a_ids) = self.ours;
        let (b_index, b, b_ids) = self.theirs;
        for ((x_index, x), &x_id) in a_cells.iter_mut().enumerate().zip(a_ids) {
            for ((y_index, y), &y_id) in b_cells.iter_mut().enumerate().zip(b_ids) {
                if x.is_none() {
                    break;
                }
                let same_list = match (x_id, y_id) {
                    // Two instructions on different top-level lists commute.
                    (Some(x_list), Some(y_list)) if x_list != y_list => continue,
                    (Some(_), Some(_)) => true,
                    _ => false,
                };
                let before = log.is_some().then(|| (x.clone(), y.clone()));
                let pair = if same_list {
                    rules::same_list_pair
                } else {
                    rules::transform_pair
                };
                let rule = pair(x, y, &a.meta, &b.meta).map_err(|diverged| {
                    TransformError::SizeMismatch {
                        list: diverged.list,
                        ours: diverged.ours,
                        theirs: diverged.theirs,
                        ours_changeset: a_index,
                        theirs_changeset: b_index,
                    }
                })?;
                if let (Some(rule), Some(log), Some((x_before, y_before))) =
                    (rule, log.as_deref_mut(), before)
                {
                    let (Some(our_original), Some(their_original)) =
                        (a.instructions.get(x_index), b.instructions.get(y_index))
                    else {
                        continue;
                    };
                    log.push(MergeDecision {
                        ours: DecisionSide {
                            changeset: a_index,
                            instruction: x_index,
                            original: our_original.clone(),
                            outcome: outcome(&x_before, x),
                        },
                        theirs: DecisionSide {
                            changeset: b_index,
                            instruction: y_index,
                            original: their_original.clone(),
                            outcome: outcome(&y_before, y),
                        },
                        rule,
                    });
                }
            }
        }
        Ok(())
    }
}

fn outcome(before: &Cell, after: &Cell) -> Outcome {
    match after {
        None => Outcome::Discarded,
        Some(instruction) if before.as_ref() == Some(instruction) => Outcome::Kept,
        Some(instruction) => Outcome::Rewritten(instruction.clone()),
    }
}

/// Ids for the top-level lists our list instructions act on, so that a pair of list
/// instructions compares two integers instead of two paths (such a path never changes during a
/// transform). Their instruction on a top-level list none of ours touch gets an id none of ours
/// has.
struct Lists<'o> {
    /// Our top-level lists, sorted; a list's id is its position. (A sorted `Vec` rather than a
    /// map: a `BTreeMap` of this type would cost the browser build its own B-tree code.)
    ids: Vec<&'o Path>,
    /// Each of our changesets' list ids, by instruction.
    ours: Vec<Vec<Option<u32>>>,
}

impl<'o> Lists<'o> {
    fn new(ours: &'o [Changeset]) -> Self {
        let mut ids: Vec<&Path> = Vec::new();
        for instruction in ours.iter().flat_map(|changeset| &changeset.instructions) {
            if let Some(list) = rules::top_level_list(instruction) {
                ids.push(list);
            }
        }
        crate::sort::sort(&mut ids);
        ids.dedup();
        let mut lists = Lists {
            ids,
            ours: Vec::with_capacity(ours.len()),
        };
        for changeset in ours {
            let mut row = Vec::with_capacity(changeset.instructions.len());
            for instruction in &changeset.instructions {
                row.push(lists.id(Some(instruction)));
            }
            lists.ours.push(row);
        }
        lists
    }

    /// A cell's list id: `None` unless it is a list instruction on a top-level list; one past
    /// ours for a list that none of ours touches.
    fn id(&self, cell: Option<&Instruction>) -> Option<u32> {
        let list = rules::top_level_list(cell?)?;
        let position = self.ids.binary_search(&list).unwrap_or(self.ids.len());
        u32::try_from(position).ok()
    }
}

/// Our changesets by the objects they touch, plus those with schema instructions.
struct Index<'o> {
    /// Each object's entry in `lists` (so that a lookup with a key borrowed for less long still
    /// returns a list borrowed from the index).
    by_object: BTreeMap<(&'o str, &'o PrimaryKey), usize>,
    /// The positions touching each object, increasing.
    lists: Vec<Vec<usize>>,
    schema: Vec<usize>,
}

impl<'o> Index<'o> {
    fn new(ours: &'o [Changeset]) -> Self {
        let mut index = Index {
            by_object: BTreeMap::new(),
            lists: Vec::new(),
            schema: Vec::new(),
        };
        // Consecutive changesets touching the same object (many edits of one busy object) are
        // gathered in a run and added to the map with one lookup.
        let mut run: Option<((&'o str, &'o PrimaryKey), Vec<usize>)> = None;
        for (position, changeset) in ours.iter().enumerate() {
            for instruction in &changeset.instructions {
                let entry = match instruction.object() {
                    Some(object) => match &mut run {
                        Some((current, positions)) if *current == object => positions,
                        _ => {
                            if let Some((current, positions)) = run.take() {
                                index.add(current, positions);
                            }
                            &mut run.insert((object, Vec::new())).1
                        }
                    },
                    None => &mut index.schema,
                };
                if entry.last() != Some(&position) {
                    entry.push(position);
                }
            }
        }
        if let Some((current, positions)) = run {
            index.add(current, positions);
        }
        index
    }

    /// Records that the changesets at `positions` (increasing, and after any recorded for it
    /// already) touch `object`.
    fn add(&mut self, object: (&'o str, &'o PrimaryKey), positions: Vec<usize>) {
        let next = self.lists.len();
        let at = *self.by_object.entry(object).or_insert(next);
        if at == next {
            self.lists.push(Vec::new());
        }
        let Some(entry) = self.lists.get_mut(at) else {
            return;
        };
        for position in positions {
            if entry.last() != Some(&position) {
                entry.push(position);
            }
        }
    }

    /// The positions, in order, of our changesets that may interact with `instructions`. When
    /// they touch one object (the common case) that is the index's own list; otherwise the
    /// lists are merged in `merged`.
    fn relevant<'a>(
        &'a self,
        instructions: &[Instruction],
        merged: &'a mut Vec<usize>,
    ) -> &'a [usize] {
        let mut found: &'a [usize] = &[];
        let mut several = false;
        let mut last = None;
        for instruction in instructions {
            let object = instruction.object();
            if object.is_some() && object == last {
                continue;
            }
            let list = match object {
                Some(object) => self
                    .by_object
                    .get(&object)
                    .and_then(|&at| self.lists.get(at))
                    .map_or(&[][..], Vec::as_slice),
                None => &self.schema,
            };
            last = object;
            if list.is_empty() || std::ptr::eq(list, found) {
                continue;
            }
            if found.is_empty() {
                found = list;
            } else {
                if !several {
                    merged.clear();
                    merged.extend_from_slice(found);
                    several = true;
                }
                merged.extend_from_slice(list);
            }
        }
        if !several {
            return found;
        }
        crate::sort::sort(merged);
        merged.dedup();
        merged
    }
}
