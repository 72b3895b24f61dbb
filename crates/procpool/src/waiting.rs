//! Waiting on many futures at once: [`as_completed`] and [`wait`].
//!
//! Both accept futures from any pools, thread and process mixed: each
//! future tells a shared `DoneQueue` when it is done. A waiter parks; only
//! while results come quickly does it first look for one briefly, yielding
//! the CPU (`LOOK`, 100 µs).

use std::collections::VecDeque;
#[cfg(feature = "stream")]
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::future::{TaskFuture, Watch};
#[cfg(feature = "stream")]
use crate::timer::Sleep;

mod wait_async;
pub use wait_async::{WaitFuture, wait_async};

/// How long a waiter on a `DoneQueue` looks for a key (yielding the CPU
/// between looks) before it parks, while looking pays: the last look found
/// one, or the last wake-up came within this long of parking. A parked
/// waiter costs the waking thread a wake-up system call and itself a
/// context switch: a `map_unordered` of short chunks parked its thread
/// ~2 000 times per 3 M inputs. Adaptive ([`Look`]), and off at first: a waiter for long tasks
/// parks at once (it looks only after a wake-up came quickly, and stops
/// after a look that found nothing).
pub(crate) const LOOK: Duration = Duration::from_micros(100);

/// The adaptive look a waiter takes before it parks: up to `limit`,
/// yielding the CPU between looks (a thread on the same CPU runs
/// meanwhile), while looking pays — the last look found what it looked
/// for, or the last wake-up came within `limit` of parking. Used by a
/// `DoneQueue` waiter and an ordered map's wait ([`LOOK`], off at first),
/// and by the pool's reader of a worker's reply ring and a keeper
/// (`ProcessPoolBuilder::ring_spin`, on at first).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Look {
    limit: Duration,
    pays: bool,
    parked_at: Option<Instant>,
}

impl Look {
    /// A look of up to `limit` (zero: never), taken at first if `pays`.
    pub(crate) fn new(limit: Duration, pays: bool) -> Look {
        Look {
            limit,
            pays: pays && !limit.is_zero(),
            parked_at: None,
        }
    }

    /// If looking pays: calls `found` until it says yes (`true`) or the
    /// look's time (or `until`, if sooner) passes (`false`, and looking
    /// stops paying). `false` at once if looking does not pay.
    pub(crate) fn look(&mut self, until: Option<Instant>, mut found: impl FnMut() -> bool) -> bool {
        if !self.pays {
            return false;
        }
        let end = Instant::now() + self.limit;
        let end = until.map_or(end, |u| u.min(end));
        let mut n = 0u32;
        loop {
            std::thread::yield_now();
            n = n.wrapping_add(1);
            if found() {
                return true;
            }
            // The clock every few looks: a read of it costs more than a look.
            if n.is_multiple_of(8) && Instant::now() >= end {
                self.pays = false;
                return false;
            }
        }
    }

    /// Whether the next look is taken.
    #[cfg(test)]
    pub(crate) fn pays(&self) -> bool {
        self.pays
    }

    /// The waiter parks now.
    pub(crate) fn parked(&mut self) {
        if !self.limit.is_zero() {
            self.parked_at = Some(Instant::now());
        }
    }

    /// Back from parking: had the wait been short, looking would have
    /// caught it.
    pub(crate) fn woken(&mut self) {
        if let Some(t) = self.parked_at.take() {
            self.pays = t.elapsed() < self.limit;
        }
    }
}

/// Keys of futures that are done, in the order they finished.
#[derive(Default)]
pub(crate) struct DoneQueue {
    inner: Mutex<Done>,
    cond: Condvar,
}

struct Done {
    keys: VecDeque<usize>,
    waker: Option<Waker>,
    /// Threads blocked in `pop`: `done` skips the wake-up syscall without.
    waiters: u32,
    /// The look before parking ([`LOOK`], off at first).
    look: Look,
}

impl Default for Done {
    fn default() -> Done {
        Done {
            keys: VecDeque::new(),
            waker: None,
            waiters: 0,
            look: Look::new(LOOK, false),
        }
    }
}

impl Watch for DoneQueue {
    fn done(&self, key: usize) {
        self.done_many(&mut std::iter::once(key));
    }

    fn done_many(&self, keys: &mut dyn Iterator<Item = usize>) {
        let (waker, wake) = {
            let mut g = self.lock();
            // A waiter sleeps only while no key is queued: keys already
            // queued mean it was woken when the first came (by a run of
            // results, one wake-up, not one each).
            let was_empty = g.keys.is_empty();
            g.keys.extend(keys);
            (g.waker.take(), was_empty && g.waiters > 0)
        };
        if wake {
            self.cond.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl DoneQueue {
    pub(crate) fn new() -> Arc<DoneQueue> {
        Arc::new(DoneQueue::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Done> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next done key, waiting until `deadline` (forever if `None`).
    pub(crate) fn pop(&self, deadline: Option<Instant>) -> Option<usize> {
        self.take(deadline, |keys| keys.pop_front())
    }

    /// Waits until `deadline` (forever if `None`) for done keys and moves
    /// all of them to the end of `out` (one lock for many keys); `false` if
    /// none came in time.
    pub(crate) fn pop_all(&self, deadline: Option<Instant>, out: &mut VecDeque<usize>) -> bool {
        self.take(deadline, |keys| {
            let had = !keys.is_empty();
            out.append(keys);
            had.then_some(())
        })
        .is_some()
    }

    /// Waits until `deadline` (forever if `None`) for `f` to take something
    /// from the done keys.
    fn take<R>(
        &self,
        deadline: Option<Instant>,
        mut f: impl FnMut(&mut VecDeque<usize>) -> Option<R>,
    ) -> Option<R> {
        let mut g = self.lock();
        let mut looked = false;
        loop {
            if let Some(r) = f(&mut g.keys) {
                return Some(r);
            }
            if !looked {
                looked = true;
                // Taken out for the look: the lock is not held meanwhile.
                let mut look = g.look;
                drop(g);
                look.look(deadline, || !self.lock().keys.is_empty());
                g = self.lock();
                g.look = look;
                // Looked again under the lock before parking: a key done
                // since the look's last try woke nobody.
                continue;
            }
            let timeout = match deadline {
                None => None,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    Some(d - now)
                }
            };
            g.waiters += 1;
            g.look.parked();
            g = match timeout {
                None => self.cond.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(t) => {
                    self.cond
                        .wait_timeout(g, t)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            g.waiters -= 1;
            g.look.woken();
        }
    }

    pub(crate) fn try_pop(&self) -> Option<usize> {
        self.lock().keys.pop_front()
    }

    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<usize> {
        let Some(mut g) = crate::lock::try_lock_or_wake(&self.inner, cx) else {
            return Poll::Pending; // never wait for a lock in `poll`
        };
        if let Some(k) = g.keys.pop_front() {
            return Poll::Ready(k);
        }
        g.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Iterator over futures in the order they complete; see [`as_completed`].
pub struct AsCompleted<T> {
    slots: Vec<Option<TaskFuture<T>>>,
    queue: Arc<DoneQueue>,
    remaining: usize,
    timeout: Option<Duration>,
    /// Set at the first `next()`: `Some(None)` is a timeout too large for
    /// the clock (no limit).
    deadline: Option<Option<Instant>>,
    timed_out: bool,
    /// The `Stream` form's wake-up at `deadline`.
    #[cfg(feature = "stream")]
    sleep: Option<Sleep>,
}

/// Yields `futures` in completion order: already-finished ones first,
/// cancelled ones count as finished. Futures may come from different pools.
///
/// ```
/// # use procpool::{ThreadPool, as_completed};
/// let pool = ThreadPool::builder().workers(2).build().unwrap();
/// let futs: Vec<_> = (0..4u64).map(|i| pool.spawn(move || i * 10).unwrap()).collect();
/// let mut got: Vec<u64> = as_completed(futs).map(|f| f.result().unwrap()).collect();
/// got.sort();
/// assert_eq!(got, vec![0, 10, 20, 30]);
/// ```
pub fn as_completed<T, I>(futures: I) -> AsCompleted<T>
where
    T: Send + 'static,
    I: IntoIterator<Item = TaskFuture<T>>,
{
    let slots: Vec<Option<TaskFuture<T>>> = futures.into_iter().map(Some).collect();
    let queue = DoneQueue::new();
    for (i, f) in slots.iter().enumerate() {
        if let Some(f) = f {
            f.core().watch(queue.clone(), i);
        }
    }
    AsCompleted {
        remaining: slots.len(),
        slots,
        queue,
        timeout: None,
        deadline: None,
        timed_out: false,
        #[cfg(feature = "stream")]
        sleep: None,
    }
}

impl<T: Send + 'static> AsCompleted<T> {
    /// Ends the iteration `d` after the first `next()` if futures are still
    /// unfinished; then [`timed_out`](Self::timed_out) is true and
    /// [`into_pending`](Self::into_pending) hands them back.
    /// `Duration::MAX` means no limit.
    ///
    /// **The loop just ends**: nothing in it says whether everything
    /// finished or time ran out — ask `timed_out()` after it. To get the
    /// expiry as an item you cannot miss (an `Err` holding the unfinished
    /// futures), use [`deadline`](Self::deadline) instead.
    ///
    /// ```
    /// use std::time::Duration;
    /// use procpool::{ThreadPool, as_completed};
    ///
    /// let pool = ThreadPool::builder().workers(1).build().unwrap();
    /// let slow = pool.spawn(|| std::thread::sleep(Duration::from_millis(300))).unwrap();
    /// let mut it = as_completed([slow]).timeout(Duration::from_millis(50));
    /// assert!(it.next().is_none());
    /// assert!(it.timed_out()); // the only sign the limit passed
    /// assert_eq!(it.into_pending().len(), 1);
    /// ```
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Whether the iteration ended because the timeout passed.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Futures not yet yielded, in their original order.
    pub fn into_pending(self) -> Vec<TaskFuture<T>> {
        self.slots.into_iter().flatten().collect()
    }

    fn take_key(&mut self, key: usize) -> Option<TaskFuture<T>> {
        let f = self.slots.get_mut(key)?.take()?;
        self.remaining -= 1;
        Some(f)
    }
}

impl<T: Send + 'static> Iterator for AsCompleted<T> {
    type Item = TaskFuture<T>;

    fn next(&mut self) -> Option<TaskFuture<T>> {
        if self.timed_out || self.remaining == 0 {
            return None;
        }
        let deadline = *self
            .deadline
            .get_or_insert_with(|| self.timeout.and_then(crate::deadline::after));
        loop {
            match self.queue.pop(deadline) {
                Some(k) => {
                    if let Some(f) = self.take_key(k) {
                        return Some(f);
                    }
                }
                None => {
                    self.timed_out = true;
                    return None;
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

#[cfg(feature = "stream")]
#[cfg_attr(docsrs, doc(cfg(feature = "stream")))]
impl<T: Send + 'static> futures_core::Stream for AsCompleted<T> {
    type Item = TaskFuture<T>;

    /// The async form: yields futures as they complete without blocking the
    /// runtime. The [`timeout`](AsCompleted::timeout) holds here too (its
    /// clock starts at the first poll; the shared timer thread wakes the
    /// task): the stream then ends and `timed_out()` is true.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TaskFuture<T>>> {
        if self.timed_out {
            return Poll::Ready(None);
        }
        let timeout = self.timeout;
        let deadline = *self
            .deadline
            .get_or_insert_with(|| timeout.and_then(crate::deadline::after));
        loop {
            if self.remaining == 0 {
                return Poll::Ready(None);
            }
            match self.queue.poll_pop(cx) {
                Poll::Ready(k) => {
                    if let Some(f) = self.take_key(k) {
                        return Poll::Ready(Some(f));
                    }
                }
                Poll::Pending => break,
            }
        }
        let Some(at) = deadline else {
            return Poll::Pending; // no timeout, or one too large for the clock
        };
        if self
            .sleep
            .get_or_insert_with(|| Sleep::until(at))
            .poll(cx)
            .is_ready()
        {
            self.timed_out = true;
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// When [`wait`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnWhen {
    /// When every future is done (the default).
    #[default]
    AllCompleted,
    /// When any future is done.
    FirstCompleted,
    /// When any future fails with a [`crate::TaskError`] other than
    /// `Cancelled` (a task's own `Ok(Err(e))` is a value, not an exception);
    /// like `AllCompleted` if none does.
    FirstException,
}

/// Waits for `futures` per `mode`, at most `timeout` (`Some(ZERO)` is a
/// snapshot; `None` or `Some(Duration::MAX)` is no limit), and returns
/// `(done, not_done)` in the original order.
///
/// ```
/// # use procpool::{ThreadPool, ReturnWhen, wait};
/// let pool = ThreadPool::builder().workers(2).build().unwrap();
/// let futs: Vec<_> = (0..3).map(|i| pool.spawn(move || i).unwrap()).collect();
/// let (done, not_done) = wait(futs, ReturnWhen::AllCompleted, None);
/// assert_eq!((done.len(), not_done.len()), (3, 0));
/// ```
pub fn wait<T, I>(
    futures: I,
    mode: ReturnWhen,
    timeout: Option<Duration>,
) -> (Vec<TaskFuture<T>>, Vec<TaskFuture<T>>)
where
    T: Send + 'static,
    I: IntoIterator<Item = TaskFuture<T>>,
{
    let futures: Vec<TaskFuture<T>> = futures.into_iter().collect();
    let deadline = timeout.and_then(crate::deadline::after);
    let queue = DoneQueue::new();
    for (i, f) in futures.iter().enumerate() {
        f.core().watch(queue.clone(), i);
    }
    let mut finished = 0;
    while finished < futures.len() {
        let Some(k) = queue.pop(deadline) else { break };
        finished += 1;
        let stop = match mode {
            ReturnWhen::AllCompleted => false,
            ReturnWhen::FirstCompleted => true,
            ReturnWhen::FirstException => futures[k].core().is_exception(),
        };
        if stop {
            break;
        }
    }
    futures.into_iter().partition(|f| f.done())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watchdog for `pop`: a lost wake-up fails here instead of hanging.
    const LIMIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_look_that_finds_nothing_stops_looking_and_keeps_the_deadline() {
        let q = DoneQueue::new();
        q.lock().look = Look::new(LOOK, true);
        let t0 = Instant::now();
        let wait = Duration::from_millis(20);
        assert_eq!(q.pop(Some(t0 + wait)), None);
        let took = t0.elapsed();
        assert!(took >= wait && took < LIMIT, "{took:?}");
        // The look found nothing and the park lasted past `LOOK`.
        assert!(!q.lock().look.pays);
    }

    #[test]
    fn a_key_done_while_the_waiter_looks_or_parks_is_taken() {
        for pays in [true, false] {
            let q = DoneQueue::new();
            q.lock().look = Look::new(LOOK, pays);
            let q2 = q.clone();
            let t = std::thread::spawn(move || {
                std::thread::sleep(LOOK / 2);
                q2.done(7);
            });
            assert_eq!(q.pop(Some(Instant::now() + LIMIT)), Some(7), "pays {pays}");
            t.join().unwrap();
            assert_eq!(q.lock().waiters, 0);
        }
    }

    #[test]
    fn a_wake_long_after_parking_stops_the_looking() {
        let q = DoneQueue::new();
        let q2 = q.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            q2.done(1);
        });
        assert_eq!(q.pop(Some(Instant::now() + LIMIT)), Some(1));
        t.join().unwrap();
        // Parked for ~50 ms: far longer than a look.
        assert!(!q.lock().look.pays);
    }
}
