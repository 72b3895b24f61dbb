//! [`wait_async`]: [`wait`](super::wait) as a future (Python's
//! `asyncio.wait`), for async code that must not block its runtime.
//!
//! The same `DoneQueue` as the blocking `wait`, read with its waker instead
//! of its condvar; the time limit is a [`Sleep`] on the shared timer thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::{DoneQueue, ReturnWhen};
use crate::future::TaskFuture;
use crate::timer::Sleep;

/// The future returned by [`wait_async`]: resolves to `(done, not_done)`.
#[must_use = "a WaitFuture does nothing until it is awaited"]
pub struct WaitFuture<T> {
    /// `None` once it has resolved.
    futures: Option<Vec<TaskFuture<T>>>,
    queue: Arc<DoneQueue>,
    mode: ReturnWhen,
    timeout: Option<Duration>,
    /// Armed at the first poll (`None` inside: no limit).
    sleep: Option<Option<Sleep>>,
    finished: usize,
}

impl<T> std::fmt::Debug for WaitFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitFuture")
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// [`wait`](super::wait) without blocking: a future that resolves to
/// `(done, not_done)` per `mode` (all three as in `wait`), or when `timeout`
/// has passed since its first poll (`Some(ZERO)`: a snapshot; `None` or
/// `Duration::MAX`: no limit). Futures may come from different pools.
/// Dropping it detaches the futures, as dropping them would.
///
/// ```
/// use std::time::Duration;
/// use procpool::{ReturnWhen, ThreadPool, wait_async};
///
/// let pool = ThreadPool::builder().workers(2).build().unwrap();
/// let quick = pool.spawn(|| 1).unwrap();
/// let slow = pool.spawn(|| { std::thread::sleep(Duration::from_millis(300)); 2 }).unwrap();
/// let (done, not_done) = futures_executor::block_on(wait_async(
///     vec![quick, slow],
///     ReturnWhen::FirstCompleted,
///     Some(Duration::from_secs(10)),
/// ));
/// assert_eq!((done.len(), not_done.len()), (1, 1));
/// ```
pub fn wait_async<T, I>(futures: I, mode: ReturnWhen, timeout: Option<Duration>) -> WaitFuture<T>
where
    T: Send + 'static,
    I: IntoIterator<Item = TaskFuture<T>>,
{
    let futures: Vec<TaskFuture<T>> = futures.into_iter().collect();
    let queue = DoneQueue::new();
    for (i, f) in futures.iter().enumerate() {
        f.core().watch(queue.clone(), i);
    }
    WaitFuture {
        futures: Some(futures),
        queue,
        mode,
        timeout,
        sleep: None,
        finished: 0,
    }
}

impl<T: Send + 'static> Future for WaitFuture<T> {
    type Output = (Vec<TaskFuture<T>>, Vec<TaskFuture<T>>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(futures) = &this.futures else {
            panic!("WaitFuture polled after it resolved");
        };
        let mut stop = this.finished >= futures.len();
        while !stop {
            let Poll::Ready(k) = this.queue.poll_pop(cx) else {
                break;
            };
            this.finished += 1;
            stop = this.finished >= futures.len()
                || match this.mode {
                    ReturnWhen::AllCompleted => false,
                    ReturnWhen::FirstCompleted => true,
                    ReturnWhen::FirstException => futures[k].core().is_exception(),
                };
        }
        if !stop {
            let timeout = this.timeout;
            let sleep = this
                .sleep
                .get_or_insert_with(|| timeout.and_then(crate::deadline::after).map(Sleep::until));
            stop = sleep.as_mut().is_some_and(|s| s.poll(cx).is_ready());
        }
        if !stop {
            return Poll::Pending;
        }
        let futures = this.futures.take().unwrap_or_default();
        Poll::Ready(futures.into_iter().partition(|f| f.done()))
    }
}
