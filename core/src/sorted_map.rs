//! `SortedMap`: a map kept as a `Vec` sorted by key, for small maps: an object's fields
//! ([`crate::value::Document`]), the schema's collections and properties, a persist batch's
//! records, and the server's sessions of one connection (a `BTreeMap` reserves a whole node,
//! eleven entries, for the first).
//!
//! Such maps hold tens of entries, read or walked far more often than changed. A sorted `Vec`
//! searches them as fast as a `BTreeMap`, holds an object of two fields in one allocation of two
//! entries instead of a node of eleven, and costs a fraction of its code in the browser's wasm
//! (each distinct `BTreeMap` instance links its own insert, search, remove and drop code,
//! several KB). Building one from many unsorted entries (`collect`, `extend`) sorts once instead
//! of inserting each, so it stays O(N log N).

use std::borrow::Borrow;
use std::fmt;

/// Entries kept sorted by key, each key once: iteration is in key order, like a `BTreeMap`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SortedMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K: Ord, V> SortedMap<K, V> {
    /// Where `key` is, or where it would go.
    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// The entry under `name`.
    pub fn get<Q: Ord + ?Sized>(&self, name: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(name).ok().map(|i| &self.entries[i].1)
    }

    /// The entry under `name`, to change it.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, name: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        match self.find(name) {
            Ok(i) => Some(&mut self.entries[i].1),
            Err(_) => None,
        }
    }

    /// Whether an entry is under `name`.
    pub fn contains_key<Q: Ord + ?Sized>(&self, name: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(name).is_ok()
    }

    /// Sets the entry under `name`; returns the one it replaced.
    pub fn insert(&mut self, name: K, value: V) -> Option<V> {
        match self.find(name.borrow()) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (name, value));
                None
            }
        }
    }

    /// Removes the entry under `name` and returns it.
    pub fn remove<Q: Ord + ?Sized>(&mut self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        match self.find(name) {
            Ok(i) => Some(self.entries.remove(i).1),
            Err(_) => None,
        }
    }
}

impl<K, V> SortedMap<K, V> {
    /// An empty map.
    pub const fn new() -> Self {
        SortedMap {
            entries: Vec::new(),
        }
    }

    /// An empty map with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        SortedMap {
            entries: Vec::with_capacity(capacity),
        }
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in name order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            inner: self.entries.iter(),
        }
    }

    /// The names in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The entries' values in name order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The entries in name order, their values to change.
    pub fn iter_mut(
        &mut self,
    ) -> impl DoubleEndedIterator<Item = (&K, &mut V)> + ExactSizeIterator {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// The entries' values in name order, to change them.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.entries.iter_mut().map(|(_, v)| v)
    }
}

/// The entry under `name`; panics if there is none, like indexing a `BTreeMap` (for tests and
/// for keys already checked).
impl<K: Ord + Borrow<Q>, Q: Ord + ?Sized, V> std::ops::Index<&Q> for SortedMap<K, V> {
    type Output = V;

    fn index(&self, name: &Q) -> &V {
        let i = self.find(name).unwrap_or(usize::MAX);
        &self.entries[i].1
    }
}

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        SortedMap::new()
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for SortedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The entries of a `SortedMap` in key order, by reference.
#[derive(Clone, Debug)]
pub struct Iter<'a, K, V> {
    inner: std::slice::Iter<'a, (K, V)>,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|(k, v)| (k, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<K, V> DoubleEndedIterator for Iter<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner.next_back().map(|(k, v)| (k, v))
    }
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}

impl<'a, K, V> IntoIterator for &'a SortedMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Iter<'a, K, V> {
        self.iter()
    }
}

impl<K, V> IntoIterator for SortedMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<K: Ord, V> SortedMap<K, V> {
    /// A map of `entries` in any order; of equal keys the last one's value is kept, as if each
    /// entry were inserted in turn. One stable sort (none when the keys already ascend), so
    /// O(N log N) where inserting each would move O(N) entries every time.
    pub fn from_entries(mut entries: Vec<(K, V)>) -> Self {
        if !entries.windows(2).all(|pair| pair[0].0 < pair[1].0) {
            crate::sort::sort_by(&mut entries, |a, b| a.0.cmp(&b.0));
            entries.dedup_by(|later, kept| {
                let equal = later.0 == kept.0;
                if equal {
                    std::mem::swap(&mut later.1, &mut kept.1);
                }
                equal
            });
        }
        SortedMap { entries }
    }
}

/// Appends the entries and sorts once (see [`SortedMap::from_entries`]); an entry replaces the
/// value under an equal key, like `BTreeMap::extend`.
impl<K: Ord, V> Extend<(K, V)> for SortedMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.extend(iter);
        *self = SortedMap::from_entries(entries);
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for SortedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        SortedMap::from_entries(iter.into_iter().collect())
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for SortedMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::SortedMap;

    #[test]
    fn keeps_keys_sorted_and_unique() {
        let mut map = SortedMap::new();
        assert_eq!(map.insert("b".to_string(), 2), None);
        assert_eq!(map.insert("a".to_string(), 1), None);
        assert_eq!(map.insert("c".to_string(), 3), None);
        assert_eq!(map.insert("b".to_string(), 20), Some(2));
        assert_eq!(
            map.keys().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(map.get("b"), Some(&20));
        assert_eq!(map.remove("a"), Some(1));
        assert_eq!(map.remove("a"), None);
        assert!(!map.contains_key("a"));
        assert_eq!(map.len(), 2);
        assert_eq!(format!("{map:?}"), r#"{"b": 20, "c": 3}"#);
    }

    proptest! {
        #[test]
        fn building_equals_inserting_one_by_one(
            first in prop::collection::vec((0u8..16, any::<u32>()), 0..40),
            more in prop::collection::vec((0u8..16, any::<u32>()), 0..40),
        ) {
            let mut expected = BTreeMap::new();
            let mut built: SortedMap<u8, u32> = first.iter().copied().collect();
            expected.extend(first.iter().copied());
            prop_assert!(built.iter().eq(expected.iter()));
            built.extend(more.iter().copied());
            expected.extend(more.iter().copied());
            prop_assert!(built.iter().eq(expected.iter()));
            prop_assert_eq!(built.len(), expected.len());
        }
    }
}
