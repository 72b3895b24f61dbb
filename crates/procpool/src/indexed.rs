//! `Map::indexed`: each result with the index of its input, as Python's
//! `imap_unordered` users pair results with `enumerate`d inputs.

use crate::error::TaskError;
use crate::map::Map;
use crate::task::Task;

/// A [`Map`] that yields `(index, result)`: the position of the item's
/// input in the input iterator, and its result. Made by
/// [`Map::indexed`].
pub struct IndexedMap<'a, I>
where
    I: Iterator,
    I::Item: Task,
{
    map: Map<'a, I>,
}

impl<I> std::fmt::Debug for IndexedMap<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("IndexedMap").field(&self.map).finish()
    }
}

impl<'a, I> Map<'a, I>
where
    I: Iterator,
    I::Item: Task,
{
    /// Yields each result with the index of its input: `(usize,
    /// Result<T, TaskError>)`. Most useful on `map_unordered`, whose
    /// results come as they finish. A `WaitTimedOut` (from `timeout` or
    /// `deadline`) carries the index of an input that had not finished; a
    /// pool's refusal (shut down, broken), the first input it refused.
    ///
    /// ```
    /// use procpool::ThreadPool;
    /// use procpool_tasks::Square;
    ///
    /// let pool = ThreadPool::builder().workers(2).build().unwrap();
    /// let inputs = [3u64, 1, 2];
    /// let mut out = vec![0; inputs.len()];
    /// for (i, r) in pool.map_unordered(inputs.iter().map(|&x| Square(x))).indexed() {
    ///     out[i] = r.unwrap();
    /// }
    /// assert_eq!(out, [9, 1, 4]);
    /// ```
    pub fn indexed(self) -> IndexedMap<'a, I> {
        IndexedMap { map: self }
    }
}

impl<I> Iterator for IndexedMap<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
    type Item = (usize, Result<<I::Item as Task>::Output, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.map.next_indexed();
        self.map.tick(item.is_some());
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.map.size_hint()
    }
}
