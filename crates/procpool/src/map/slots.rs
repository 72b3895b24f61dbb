//! An unordered map's inputs of packed chunks in flight, by input index:
//! a window over consecutive indices instead of a hash map (an insert and
//! a removal per input were a visible part of a chunked map's cost).

use std::collections::VecDeque;

/// Values by key, keys inserted in increasing order and removed in any.
pub(crate) struct SlotWindow<T> {
    /// Key of `entries[0]`.
    first: usize,
    entries: VecDeque<Option<T>>,
    len: usize,
}

impl<T> Default for SlotWindow<T> {
    fn default() -> Self {
        SlotWindow {
            first: 0,
            entries: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> SlotWindow<T> {
    /// Adds `value` at `key`, which is above every key in the window.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, key: usize, value: T) {
        if self.entries.is_empty() {
            self.first = key;
        }
        let end = self.first + self.entries.len();
        assert!(key >= end, "keys go up: {key} after {end}");
        self.entries.extend((end..key).map(|_| None));
        self.entries.push_back(Some(value));
        self.len += 1;
    }

    /// Adds `n` values at keys `first..first + n` (made by `value`), which
    /// are above every key in the window.
    pub(crate) fn insert_range(&mut self, first: usize, n: usize, value: impl Fn() -> T) {
        if n == 0 {
            return;
        }
        if self.entries.is_empty() {
            self.first = first;
        }
        let end = self.first + self.entries.len();
        assert!(first >= end, "keys go up: {first} after {end}");
        self.entries.reserve(first - end + n);
        self.entries.extend((end..first).map(|_| None));
        self.entries.extend((0..n).map(|_| Some(value())));
        self.len += n;
    }

    /// Takes the value at `key`, if there is one.
    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let at = key.checked_sub(self.first)?;
        let value = self.entries.get_mut(at)?.take()?;
        self.len -= 1;
        while let Some(None) = self.entries.front() {
            self.entries.pop_front();
            self.first += 1;
        }
        Some(value)
    }

    /// The value at `key`, if there is one.
    pub(crate) fn get(&self, key: usize) -> Option<&T> {
        self.entries.get(key.checked_sub(self.first)?)?.as_ref()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The smallest key with a value.
    pub(crate) fn min_key(&self) -> Option<usize> {
        // The front is never empty while a value is left (see `remove`).
        (self.len > 0).then_some(self.first)
    }

    /// Takes every value, in key order.
    #[cfg(test)]
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.len = 0;
        self.entries.drain(..).flatten()
    }

    /// Drops every value.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_by_key_in_any_order() {
        let mut w = SlotWindow::default();
        for k in 10..20 {
            w.insert(k, k * 100);
        }
        w.insert(25, 2500); // a gap: keys 20..25 are elsewhere
        assert_eq!(w.len(), 11);
        assert_eq!(w.min_key(), Some(10));
        assert_eq!(w.get(15), Some(&1500));
        assert_eq!(w.remove(15), Some(1500));
        assert_eq!(w.get(15), None);
        assert_eq!(w.get(9), None);
        assert_eq!(w.remove(15), None, "taken once");
        assert_eq!(w.remove(22), None, "never there");
        assert_eq!(w.remove(9), None, "below the window");
        assert_eq!(w.remove(99), None, "above it");
        assert_eq!(w.remove(10), Some(1000));
        assert_eq!(w.min_key(), Some(11));
        for k in [11, 12, 13, 14, 16, 17, 18, 19] {
            assert_eq!(w.remove(k), Some(k * 100));
        }
        assert_eq!(w.min_key(), Some(25), "the gap is skipped");
        assert_eq!(w.remove(25), Some(2500));
        assert!(w.is_empty());
        assert_eq!(w.min_key(), None);
        w.insert(30, 3000);
        w.insert(31, 3100);
        assert_eq!(w.min_key(), Some(30));
        assert_eq!(w.drain().collect::<Vec<_>>(), vec![3000, 3100]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_range_is_its_keys_one_by_one() {
        let mut w = SlotWindow::default();
        w.insert_range(10, 3, || 7);
        w.insert_range(20, 0, || 7);
        w.insert_range(15, 2, || 8);
        assert_eq!(w.len(), 5);
        assert_eq!(w.min_key(), Some(10));
        assert_eq!(w.remove(13), None, "a gap");
        assert_eq!(w.remove(16), Some(8));
        for k in [10, 11, 12, 15] {
            assert!(w.remove(k).is_some());
        }
        assert!(w.is_empty());
        w.insert_range(40, 2, || 1);
        w.clear();
        assert!(w.is_empty() && w.min_key().is_none());
    }

    #[test]
    #[should_panic(expected = "keys go up")]
    fn a_key_below_the_end_is_a_bug() {
        let mut w = SlotWindow::default();
        w.insert(5, ());
        w.insert(5, ());
    }
}
