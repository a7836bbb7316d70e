//! One sort for every caller: the standard library's sort is generic, and each element type (and
//! each `collect` into a `BTreeMap`/`BTreeSet`, which sorts) adds a copy of it, several kilobytes
//! each in the browser build. [`sort_by`] orders the positions of the items with one shared,
//! non-generic instance, then moves the items into that order.

use std::cmp::Ordering;

/// Sorts `items` by `compare`, stably (equal items keep their order).
pub fn sort_by<T>(items: &mut Vec<T>, mut compare: impl FnMut(&T, &T) -> Ordering) {
    if items.len() < 2 {
        return;
    }
    let order = sorted_positions(items.len(), &mut |a, b| compare(&items[a], &items[b]));
    let mut slots: Vec<Option<T>> = std::mem::take(items).into_iter().map(Some).collect();
    items.extend(
        order
            .into_iter()
            .filter_map(|i| slots.get_mut(i).and_then(Option::take)),
    );
}

/// Sorts `items` by their order, stably.
pub fn sort<T: Ord>(items: &mut Vec<T>) {
    sort_by(items, T::cmp);
}

/// The positions `0..len` ordered by `compare`, stably.
fn sorted_positions(len: usize, compare: &mut dyn FnMut(usize, usize) -> Ordering) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by(|a, b| compare(*a, *b));
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sorts_stably_like_the_standard_library(items in prop::collection::vec((0u8..8, any::<u32>()), 0..64)) {
            let mut expected = items.clone();
            expected.sort_by_key(|(key, _)| *key);
            let mut got = items;
            sort_by(&mut got, |a, b| a.0.cmp(&b.0));
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn sorts_owned_values() {
        let mut words: Vec<String> = ["pear", "apple", "fig"].map(String::from).to_vec();
        sort(&mut words);
        assert_eq!(words, ["apple", "fig", "pear"]);
    }
}
