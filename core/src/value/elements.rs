//! The elements of a list or set value, stored in bounded chunks.
//!
//! A list kept in one vector moves every element after the edit point on each insert or erase:
//! for a list of 10,000 elements that is hundreds of kilobytes per edit, and integrating a
//! download of list edits becomes a memory-copy benchmark. [`Elements`] keeps the elements in
//! chunks of at most [`MAX_CHUNK`], so an edit moves at most one chunk's elements and finding
//! the chunk walks the chunk headers. Small lists (the common case) are one chunk.

use std::cmp::Ordering;
use std::fmt;
use std::iter::FusedIterator;

use super::Value;

/// The most elements one chunk holds; a chunk that grows past it splits in two.
pub const MAX_CHUNK: usize = 256;

/// The elements of a list (in order) or of a set (sorted, without duplicates).
///
/// Invariants: no chunk is empty, no chunk holds more than [`MAX_CHUNK`] elements, and `len` is
/// the sum of the chunks' lengths.
#[derive(Clone, Default)]
pub struct Elements {
    chunks: Vec<Vec<Value>>,
    len: usize,
}

impl Elements {
    /// No elements.
    pub fn new() -> Self {
        Elements::default()
    }

    /// How many elements there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk holding element `index` and the element's offset in it; for `index == len`,
    /// the end of the last chunk.
    fn locate(&self, mut index: usize) -> Option<(usize, usize)> {
        for (chunk, items) in self.chunks.iter().enumerate() {
            if index < items.len() {
                return Some((chunk, index));
            }
            index -= items.len();
        }
        None
    }

    /// The element at `index`.
    pub fn get(&self, index: usize) -> Option<&Value> {
        let (chunk, offset) = self.locate(index)?;
        self.chunks.get(chunk)?.get(offset)
    }

    /// The element at `index`, to change in place.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut Value> {
        let (chunk, offset) = self.locate(index)?;
        self.chunks.get_mut(chunk)?.get_mut(offset)
    }

    /// The first element.
    pub fn first(&self) -> Option<&Value> {
        self.chunks.first()?.first()
    }

    /// The last element.
    pub fn last(&self) -> Option<&Value> {
        self.chunks.last()?.last()
    }

    /// The elements in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            inner: self.chunks.iter().flatten(),
            remaining: self.len,
        }
    }

    /// The elements in order, to change in place.
    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut Value> + '_ {
        self.chunks.iter_mut().flatten()
    }

    /// Appends an element.
    pub fn push(&mut self, value: Value) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < MAX_CHUNK => last.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(MAX_CHUNK.min(16));
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// Inserts an element before the one at `index`; an `index` past the end appends.
    pub fn insert(&mut self, index: usize, value: Value) {
        if index >= self.len {
            return self.push(value);
        }
        let Some((chunk, offset)) = self.locate(index) else {
            return self.push(value);
        };
        let Some(items) = self.chunks.get_mut(chunk) else {
            return self.push(value);
        };
        if items.len() == items.capacity() && items.len() >= MAX_CHUNK / 2 {
            // A chunk this long grows once, straight to the most it holds before splitting,
            // instead of doubling past it (a copy, and fresh pages to fault in, per doubling).
            items.reserve_exact((MAX_CHUNK + 1).saturating_sub(items.len()));
        }
        items.insert(offset, value);
        self.len += 1;
        if items.len() > MAX_CHUNK {
            // Both halves keep room to grow back to a full chunk without reallocating.
            let mut upper = Vec::with_capacity(MAX_CHUNK + 1);
            upper.extend(items.drain(items.len() / 2..));
            self.chunks.insert(chunk + 1, upper);
        }
    }

    /// Removes and returns the element at `index`, if there is one.
    pub fn remove(&mut self, index: usize) -> Option<Value> {
        let (chunk, offset) = self.locate(index)?;
        let items = self.chunks.get_mut(chunk)?;
        if offset >= items.len() {
            return None;
        }
        let value = items.remove(offset);
        if items.is_empty() {
            self.chunks.remove(chunk);
        }
        self.len -= 1;
        Some(value)
    }

    /// Removes every element.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// Searches sorted elements (a set's) for `value`: `Ok` with its index when present, `Err`
    /// with the index where it would be inserted otherwise.
    pub fn binary_search(&self, value: &Value) -> Result<usize, usize> {
        let chunk = self
            .chunks
            .partition_point(|items| items.last().is_some_and(|last| last < value));
        let before: usize = self.chunks.iter().take(chunk).map(Vec::len).sum();
        match self.chunks.get(chunk) {
            Some(items) => items
                .binary_search(value)
                .map(|at| before + at)
                .map_err(|at| before + at),
            None => Err(before),
        }
    }

    /// Sorts the elements and removes duplicates, as a set's must be.
    pub fn sort_dedup(&mut self) {
        let mut items = std::mem::take(self).into_vec();
        crate::sort::sort(&mut items);
        items.dedup();
        *self = Elements::from(items);
    }

    /// The elements as one vector.
    pub fn into_vec(self) -> Vec<Value> {
        let mut items = Vec::with_capacity(self.len);
        for chunk in self.chunks {
            items.extend(chunk);
        }
        items
    }
}

impl From<Vec<Value>> for Elements {
    fn from(items: Vec<Value>) -> Self {
        let len = items.len();
        if len <= MAX_CHUNK {
            let chunks = if items.is_empty() {
                Vec::new()
            } else {
                vec![items]
            };
            return Elements { chunks, len };
        }
        // Half-full chunks leave room to insert without splitting at once.
        let mut chunks = Vec::with_capacity(len.div_ceil(MAX_CHUNK / 2));
        let mut rest = items.into_iter();
        loop {
            let chunk: Vec<Value> = rest.by_ref().take(MAX_CHUNK / 2).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(chunk);
        }
        Elements { chunks, len }
    }
}

impl FromIterator<Value> for Elements {
    fn from_iter<I: IntoIterator<Item = Value>>(iter: I) -> Self {
        let mut elements = Elements::new();
        for value in iter {
            elements.push(value);
        }
        elements
    }
}

impl Extend<Value> for Elements {
    fn extend<I: IntoIterator<Item = Value>>(&mut self, iter: I) {
        for value in iter {
            self.push(value);
        }
    }
}

impl IntoIterator for Elements {
    type Item = Value;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<Value>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter().flatten()
    }
}

impl<'a> IntoIterator for &'a Elements {
    type Item = &'a Value;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl Ord for Elements {
    /// Lexicographic, like slices.
    fn cmp(&self, other: &Self) -> Ordering {
        self.iter().cmp(other.iter())
    }
}

impl PartialOrd for Elements {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Elements {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Elements {}

impl fmt::Debug for Elements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The elements of an [`Elements`] in order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    inner: std::iter::Flatten<std::slice::Iter<'a, Vec<Value>>>,
    remaining: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Value;

    fn next(&mut self) -> Option<&'a Value> {
        let next = self.inner.next()?;
        self.remaining = self.remaining.saturating_sub(1);
        Some(next)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let next = self.inner.next_back()?;
        self.remaining = self.remaining.saturating_sub(1);
        Some(next)
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl FusedIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// An edit applied both to a `Vec` and to `Elements`.
    #[derive(Clone, Debug)]
    enum Edit {
        Insert(usize, i64),
        Remove(usize),
        Set(usize, i64),
        Push(i64),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (any::<usize>(), any::<i64>()).prop_map(|(i, v)| Edit::Insert(i, v)),
            any::<usize>().prop_map(Edit::Remove),
            (any::<usize>(), any::<i64>()).prop_map(|(i, v)| Edit::Set(i, v)),
            any::<i64>().prop_map(Edit::Push),
        ]
    }

    fn check_invariants(elements: &Elements) {
        assert!(elements
            .chunks
            .iter()
            .all(|c| !c.is_empty() && c.len() <= MAX_CHUNK));
        assert_eq!(
            elements.len,
            elements.chunks.iter().map(Vec::len).sum::<usize>()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any sequence of edits leaves `Elements` equal to a `Vec` given the same edits, with
        /// its chunk invariants intact.
        #[test]
        fn behaves_like_a_vec(initial in 0usize..700, edits in prop::collection::vec(edit(), 0..600)) {
            let mut model: Vec<Value> = (0..initial as i64).map(Value::Int).collect();
            let mut elements = Elements::from(model.clone());
            check_invariants(&elements);
            for edit in edits {
                match edit {
                    Edit::Insert(i, v) => {
                        let at = i % (model.len() + 1);
                        model.insert(at, Value::Int(v));
                        elements.insert(at, Value::Int(v));
                    }
                    Edit::Remove(i) if !model.is_empty() => {
                        let at = i % model.len();
                        prop_assert_eq!(elements.remove(at), Some(model.remove(at)));
                    }
                    Edit::Remove(i) => prop_assert_eq!(elements.remove(i), None),
                    Edit::Set(i, v) if !model.is_empty() => {
                        let at = i % model.len();
                        model[at] = Value::Int(v);
                        *elements.get_mut(at).expect("in range") = Value::Int(v);
                    }
                    Edit::Set(..) => {}
                    Edit::Push(v) => {
                        model.push(Value::Int(v));
                        elements.push(Value::Int(v));
                    }
                }
                check_invariants(&elements);
            }
            prop_assert_eq!(elements.len(), model.len());
            prop_assert!(elements.iter().eq(model.iter()));
            prop_assert!(elements.iter().rev().eq(model.iter().rev()));
            prop_assert_eq!(elements.iter().len(), model.len());
            for (i, value) in model.iter().enumerate() {
                prop_assert_eq!(elements.get(i), Some(value));
            }
            prop_assert_eq!(elements.get(model.len()), None);
            prop_assert_eq!(&elements.clone().into_vec(), &model);
            prop_assert_eq!(elements, Elements::from(model));
        }

        /// Binary search over chunks agrees with a slice's.
        #[test]
        fn binary_search_like_a_slice(mut items in prop::collection::vec(0i64..2_000, 0..1_500), probe in 0i64..2_100) {
            items.sort_unstable();
            items.dedup();
            let model: Vec<Value> = items.into_iter().map(Value::Int).collect();
            let mut elements = Elements::new();
            for value in &model {
                elements.insert(elements.binary_search(value).unwrap_or_else(|at| at), value.clone());
            }
            check_invariants(&elements);
            prop_assert_eq!(elements.binary_search(&Value::Int(probe)), model.binary_search(&Value::Int(probe)));
        }
    }

    #[test]
    fn orders_like_slices() {
        let a = Elements::from(vec![Value::Int(1), Value::Int(2)]);
        let b = Elements::from(vec![Value::Int(1), Value::Int(3)]);
        let prefix = Elements::from(vec![Value::Int(1)]);
        assert!(a < b);
        assert!(prefix < a);
        assert_eq!(a.cmp(&a.clone()), Ordering::Equal);
        assert_eq!(format!("{a:?}"), "[1, 2]");
    }
}
