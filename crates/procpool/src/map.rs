//! `map` and `map_unordered`: lazy, bounded, one `Result` per input.
//!
//! Nothing is submitted before the first `next()`. At most a window of
//! inputs (a few chunks per worker) is pulled ahead, so a ten-million-item
//! iterator never sits in memory. A failed item never stops the rest:
//! Python's `map`, which ends at the first exception, has no twin here.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::TaskError;
use crate::future::TaskFuture;
use crate::idmap::IdMap;
use crate::progress::Progress;
use crate::task::Task;
use crate::waiting::DoneQueue;

/// Per item: a future, or the error that kept it from being submitted.
pub(crate) type ChunkResult<O> = Result<Vec<Result<TaskFuture<O>, TaskError>>, TaskError>;

type SubmitFn<'a, T> = Box<dyn Fn(Vec<T>) -> ChunkResult<<T as Task>::Output> + 'a>;

enum Entry<O> {
    Future(TaskFuture<O>),
    Ready(Result<O, TaskError>),
}

/// The iterator returned by `map` and `map_unordered`.
///
/// Dropping it midway stops pulling inputs and cancels the items that have
/// not started; started ones finish and their outputs are discarded.
///
/// ```
/// use procpool::{Executor, ThreadPool};
/// use procpool_tasks::Checked;
///
/// let pool = ThreadPool::builder().workers(2).build().unwrap();
/// // Lazy: a billion inputs are fine, only a window is pulled at a time.
/// let first: Vec<_> = pool.map((0..1_000_000_000u64).map(Checked)).chunksize(16).take(4).collect();
/// // One Result per input; a task's own Err is its value.
/// assert_eq!(first[0].as_ref().unwrap(), &Ok(0));
/// assert_eq!(first[1].as_ref().unwrap(), &Err("1 is odd".to_string()));
/// ```
pub struct Map<'a, I>
where
    I: Iterator,
    I::Item: Task,
{
    submit: SubmitFn<'a, I::Item>,
    pub(crate) input: I,
    input_done: bool,
    chunksize: usize,
    window_chunks: usize,
    ordered: bool,
    timeout: Option<Duration>,
    ended: bool,
    /// Ordered mode: items in input order.
    pending: VecDeque<Entry<<I::Item as Task>::Output>>,
    /// Unordered mode: futures by key, and the keys as they finish.
    by_key: IdMap<usize, TaskFuture<<I::Item as Task>::Output>>,
    ready: VecDeque<Result<<I::Item as Task>::Output, TaskError>>,
    /// Unordered mode: the pool's refusal, yielded once nothing else is
    /// left in flight.
    refused: Option<TaskError>,
    done: Arc<DoneQueue>,
    next_key: usize,
    /// Who hears of each item yielded (`progress.rs`).
    pub(crate) progress: Progress<'a>,
}

impl<I> fmt::Debug for Map<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("chunksize", &self.chunksize)
            .field("ordered", &self.ordered)
            .field("in_flight", &self.in_flight())
            .field("ended", &self.ended)
            .finish()
    }
}

impl<'a, I> Map<'a, I>
where
    I: Iterator,
    I::Item: Task,
{
    pub(crate) fn new(
        submit: SubmitFn<'a, I::Item>,
        window_chunks: usize,
        input: I,
        ordered: bool,
    ) -> Self {
        Map {
            submit,
            input,
            input_done: false,
            chunksize: 1,
            window_chunks: window_chunks.max(1),
            ordered,
            timeout: None,
            ended: false,
            pending: VecDeque::new(),
            by_key: IdMap::default(),
            ready: VecDeque::new(),
            refused: None,
            done: DoneQueue::new(),
            next_key: 0,
            progress: Progress::default(),
        }
    }

    /// Sends inputs in chunks of `n`: one frame and one worker per chunk.
    ///
    /// # Panics
    /// If `n` is 0 (as `slice::chunks(0)` does).
    pub fn chunksize(mut self, n: usize) -> Self {
        assert!(n != 0, "chunksize must be at least 1 (got 0)");
        self.chunksize = n;
        self
    }

    /// How many chunks may be in flight at once (default: a few per worker).
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn window(mut self, n: usize) -> Self {
        assert!(n != 0, "window must be at least 1 chunk (got 0)");
        self.window_chunks = n;
        self
    }

    /// Each `next()` waits at most `d`; then it yields
    /// `Err(TaskError::WaitTimedOut)`, cancels the rest and ends.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Items left, for [`Iterator::size_hint`]: one per input (in flight
    /// or not pulled yet). Only a pool shut down midway, or a `timeout`
    /// that expires, ends a map early, with one error in place of the
    /// rest; with a `timeout` the lower bound is therefore at most 1.
    fn remaining(&self) -> (usize, Option<usize>) {
        let in_flight = self.in_flight() + usize::from(self.refused.is_some());
        let (input_lo, input_hi) = if self.input_done {
            (0, Some(0))
        } else {
            self.input.size_hint()
        };
        let lo = in_flight.saturating_add(input_lo);
        let lo = if self.timeout.is_some() {
            lo.min(1)
        } else {
            lo
        };
        (lo, input_hi.and_then(|hi| hi.checked_add(in_flight)))
    }

    fn in_flight(&self) -> usize {
        self.pending.len() + self.by_key.len() + self.ready.len()
    }

    fn refill(&mut self) {
        let window = self.window_chunks.saturating_mul(self.chunksize);
        while !self.input_done && self.in_flight() < window {
            let chunk: Vec<I::Item> = self.input.by_ref().take(self.chunksize).collect();
            if chunk.len() < self.chunksize {
                self.input_done = true;
            }
            if chunk.is_empty() {
                break;
            }
            match (self.submit)(chunk) {
                Ok(items) => {
                    for item in items {
                        self.push(item);
                    }
                }
                Err(refused) => {
                    // Shut down or broken: yield what is in flight, then this
                    // one error, and stop pulling inputs.
                    if self.ordered {
                        self.push(Err(refused));
                    } else {
                        self.refused = Some(refused);
                    }
                    self.input_done = true;
                }
            }
        }
    }

    fn push(&mut self, item: Result<TaskFuture<<I::Item as Task>::Output>, TaskError>) {
        if self.ordered {
            self.pending.push_back(match item {
                Ok(f) => Entry::Future(f),
                Err(e) => Entry::Ready(Err(e)),
            });
        } else {
            match item {
                Ok(f) => {
                    let key = self.next_key;
                    self.next_key += 1;
                    f.core().watch(self.done.clone(), key);
                    self.by_key.insert(key, f);
                }
                Err(e) => self.ready.push_back(Err(e)),
            }
        }
    }

    fn give_up(&mut self, after: Duration) -> Option<Result<<I::Item as Task>::Output, TaskError>> {
        self.cancel_rest();
        self.ended = true;
        Some(Err(TaskError::WaitTimedOut { after }))
    }

    fn cancel_rest(&mut self) {
        self.input_done = true;
        let futures: Vec<_> = self
            .pending
            .drain(..)
            .filter_map(|e| match e {
                Entry::Future(f) => Some(f),
                Entry::Ready(_) => None,
            })
            .chain(self.by_key.drain().map(|(_, f)| f))
            .collect();
        crate::future::cancel_all(&futures);
        self.ready.clear();
        self.refused = None;
    }
}

impl<I> Iterator for Map<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
    type Item = Result<<I::Item as Task>::Output, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.next_item();
        match item {
            Some(_) => self.progress.tick(),
            None => self.progress.finish(),
        }
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.ended {
            return (0, Some(0));
        }
        self.remaining()
    }
}

impl<I> Map<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
    fn next_item(&mut self) -> Option<<Self as Iterator>::Item> {
        if self.ended {
            return None;
        }
        self.refill();
        let deadline = self.timeout.map(|d| Instant::now() + d);
        if self.ordered {
            match self.pending.pop_front() {
                None => {
                    self.ended = true;
                    None
                }
                Some(Entry::Ready(r)) => Some(r),
                Some(Entry::Future(f)) => {
                    if let Some(d) = self.timeout
                        && !f.wait_timeout(d)
                    {
                        f.cancel();
                        return self.give_up(d);
                    }
                    Some(f.result())
                }
            }
        } else {
            if let Some(r) = self.ready.pop_front() {
                return Some(r);
            }
            while !self.by_key.is_empty() {
                let Some(key) = self.done.pop(deadline) else {
                    let d = self.timeout.unwrap_or_default();
                    return self.give_up(d);
                };
                if let Some(f) = self.by_key.remove(&key) {
                    return Some(f.result());
                }
            }
            if let Some(e) = self.refused.take() {
                return Some(Err(e));
            }
            self.ended = true;
            None
        }
    }
}

impl<I> Drop for Map<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
    fn drop(&mut self) {
        self.progress.finish();
        self.cancel_rest();
        // Keys of futures already dropped are harmless in the queue.
        while self.done.try_pop().is_some() {}
    }
}
