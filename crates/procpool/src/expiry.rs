//! `as_completed(..).deadline(d)`: the time limit's expiry as an item the
//! caller cannot miss (an `Err` holding the unfinished futures), beside
//! `timeout(d)`, whose iteration just ends (SEMANTICS 8).

use std::fmt;
use std::time::Duration;

use crate::future::TaskFuture;
use crate::waiting::AsCompleted;

/// [`as_completed`](crate::as_completed) with a limit whose expiry is an
/// item: `Ok(future)` in completion order, then — only if the limit
/// passed first — one `Err(Expired)` that hands back the futures not yet
/// finished. Made by [`AsCompleted::deadline`].
pub struct AsCompletedDeadline<T> {
    inner: Option<AsCompleted<T>>,
    after: Duration,
}

/// The limit of an [`AsCompletedDeadline`] passed: the futures that had
/// not finished, untouched (nothing was cancelled), in their original
/// order.
pub struct Expired<T> {
    /// The limit.
    pub after: Duration,
    /// The unfinished futures.
    pub pending: Vec<TaskFuture<T>>,
}

impl<T> fmt::Debug for Expired<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expired")
            .field("after", &self.after)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl<T> fmt::Display for Expired<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} future(s) not finished within {:?} (handed back in `pending`, not cancelled)",
            self.pending.len(),
            self.after
        )
    }
}

impl<T> std::error::Error for Expired<T> {}

impl<T: Send + 'static> AsCompleted<T> {
    /// Like [`timeout`](Self::timeout), but the expiry is an item you
    /// cannot miss (Python's `as_completed(fs, timeout=)` raises): yields
    /// `Ok(future)` as they complete, then, if `d` passed first, one
    /// `Err(Expired { pending, .. })` with the unfinished futures.
    ///
    /// ```
    /// use std::time::Duration;
    /// use procpool::{ThreadPool, as_completed};
    ///
    /// let pool = ThreadPool::builder().workers(2).build().unwrap();
    /// let quick = pool.spawn(|| 1).unwrap();
    /// let slow = pool.spawn(|| { std::thread::sleep(Duration::from_millis(500)); 2 }).unwrap();
    /// let mut done = Vec::new();
    /// for f in as_completed([quick, slow]).deadline(Duration::from_millis(100)) {
    ///     match f {
    ///         Ok(f) => done.push(f.result().unwrap()),
    ///         Err(expired) => {
    ///             assert_eq!(expired.pending.len(), 1); // still running, not cancelled
    ///             assert_eq!(expired.pending.into_iter().next().unwrap().result().unwrap(), 2);
    ///         }
    ///     }
    /// }
    /// assert_eq!(done, [1]);
    /// ```
    pub fn deadline(self, d: Duration) -> AsCompletedDeadline<T> {
        AsCompletedDeadline {
            inner: Some(self.timeout(d)),
            after: d,
        }
    }
}

impl<T: Send + 'static> Iterator for AsCompletedDeadline<T> {
    type Item = Result<TaskFuture<T>, Expired<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        let inner = self.inner.as_mut()?;
        if let Some(f) = inner.next() {
            return Some(Ok(f));
        }
        let inner = self.inner.take()?;
        inner.timed_out().then(|| {
            Err(Expired {
                after: self.after,
                pending: inner.into_pending(),
            })
        })
    }
}
