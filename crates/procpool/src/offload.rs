//! [`OffThread`]: a blocking call (a pool's shutdown, a pool's build) run on
//! a thread of its own, seen by async code as a future — so an async task
//! awaits it without blocking its runtime, in any runtime.
//!
//! The thread starts at once (as Python's `run_in_executor` does); the
//! future only tells when the call is done and hands over its value.
//! Dropping the future detaches the call: it still runs to its end, and its
//! value is dropped on that thread (a pool built by a dropped
//! `build_async` is shut down there, not on the runtime's thread).
//!
//! # Shared state
//!
//! `Done::slot` (one mutex): `outcome` is written once by the call's thread
//! (the value, or the panic it raised); `waker` is written by each poll.
//! The thread takes the waker out under the lock and wakes it after.
//!
//! If no thread can be started (the process is out of threads), the call
//! runs inline at the first poll: it blocks that once rather than never
//! happening.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::BuildError;
use crate::lock::{lock, try_lock_or_wake};
use crate::process_pool::{ProcessPool, ProcessPoolBuilder};
use crate::thread_pool::{ThreadPool, ThreadPoolBuilder};

type Call<T> = Box<dyn FnOnce() -> T + Send>;

struct Slot<T> {
    outcome: Option<std::thread::Result<T>>,
    waker: Option<Waker>,
}

struct Done<T> {
    slot: Mutex<Slot<T>>,
}

/// A blocking call running on its own thread, as a [`Future`] of its value:
/// what [`ProcessPool::shutdown_async`], [`ThreadPool::shutdown_async`] and
/// the builders' `build_async` return.
///
/// The call has already started when you get this; awaiting it waits for
/// its end without blocking the runtime. Dropping it detaches the call
/// (it still completes). A panic in the call is resumed in the task that
/// awaits it.
///
/// ```
/// use procpool::{Shutdown, ThreadPool};
///
/// let pool = ThreadPool::builder().workers(2).build().unwrap();
/// futures_executor::block_on(async {
///     let f = pool.spawn(|| 6 * 7).unwrap();
///     pool.shutdown_async(Shutdown::Wait).await; // the runtime's thread never blocks
///     assert_eq!(f.await.unwrap(), 42);
/// });
/// ```
#[must_use = "the call runs anyway; await this to know when it is done"]
pub struct OffThread<T> {
    done: Arc<Done<T>>,
    /// The call itself, kept only when no thread could be started: it then
    /// runs inline at the first poll.
    inline: Option<Call<T>>,
}

impl<T> std::fmt::Debug for OffThread<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffThread")
            .field("done", &lock(&self.done.slot).outcome.is_some())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> OffThread<T> {
    /// Starts `call` on a new thread named `name`.
    pub(crate) fn spawn(name: &str, call: impl FnOnce() -> T + Send + 'static) -> OffThread<T> {
        let done = Arc::new(Done {
            slot: Mutex::new(Slot {
                outcome: None,
                waker: None,
            }),
        });
        // The call travels in a shared cell so a failed spawn can take it
        // back (`Builder::spawn` drops its closure on error).
        let cell: Arc<Mutex<Option<Call<T>>>> = Arc::new(Mutex::new(Some(Box::new(call))));
        let (done2, cell2) = (done.clone(), cell.clone());
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let Some(call) = lock(&cell2).take() else {
                    return;
                };
                let outcome = catch_unwind(AssertUnwindSafe(call));
                let waker = {
                    let mut s = lock(&done2.slot);
                    s.outcome = Some(outcome);
                    s.waker.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            });
        let inline = match spawned {
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(
                    target: "procpool::pool",
                    "could not start thread {name} ({e}): the call runs when first polled, blocking"
                );
                lock(&cell).take()
            }
        };
        OffThread { done, inline }
    }
}

impl<T: Send + 'static> Future for OffThread<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        if let Some(call) = this.inline.take() {
            return Poll::Ready(call());
        }
        let Some(mut s) = try_lock_or_wake(&this.done.slot, cx) else {
            return Poll::Pending;
        };
        match s.outcome.take() {
            Some(Ok(v)) => Poll::Ready(v),
            Some(Err(panic)) => {
                drop(s);
                resume_unwind(panic)
            }
            None => {
                match &s.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => s.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl ProcessPoolBuilder {
    /// [`build`](Self::build) without blocking: the workers start on a
    /// thread of their own while the runtime goes on (locally a few
    /// milliseconds; under `srun` or `mpirun` up to the `launch_timeout`).
    /// Dropping the future before it resolves shuts the new pool down on
    /// that thread.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), procpool::BuildError> {
    /// use procpool::{ProcessPool, WorkerCommand};
    /// let pool = ProcessPool::builder().worker(WorkerCommand::bundled()).build_async().await?;
    /// # Ok(()) }
    /// ```
    pub fn build_async(self) -> OffThread<Result<ProcessPool, BuildError>> {
        OffThread::spawn("procpool-build", move || self.build())
    }
}

impl ThreadPoolBuilder {
    /// [`build`](Self::build) without blocking (the threads' initializers
    /// may take long); see [`ProcessPoolBuilder::build_async`].
    ///
    /// ```
    /// use procpool::ThreadPool;
    /// let pool = futures_executor::block_on(ThreadPool::builder().workers(2).build_async()).unwrap();
    /// assert_eq!(pool.spawn(|| 1).unwrap().result().unwrap(), 1);
    /// ```
    pub fn build_async(self) -> OffThread<Result<ThreadPool, BuildError>> {
        OffThread::spawn("procpool-build", move || self.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn value_arrives_and_a_panic_is_resumed_in_the_awaiting_task() {
        let t = Instant::now();
        let v = futures_executor::block_on(OffThread::spawn("t", || {
            std::thread::sleep(Duration::from_millis(30));
            7
        }));
        assert_eq!(v, 7);
        assert!(t.elapsed() >= Duration::from_millis(30));
        let r = std::panic::catch_unwind(|| {
            futures_executor::block_on(OffThread::spawn("t", || -> u8 { panic!("boom") }))
        });
        assert!(r.is_err(), "the call's panic reaches the awaiting task");
    }

    #[test]
    fn a_dropped_future_still_runs_its_call() {
        let (tx, rx) = std::sync::mpsc::channel();
        drop(OffThread::spawn("t", move || tx.send(1).unwrap()));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1));
    }
}
