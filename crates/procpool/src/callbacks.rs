//! Where done callbacks run.
//!
//! A future's callbacks run on the thread that completes it — except on a
//! pool's own threads (a process pool's socket readers, waiters, spawner):
//! those must never block on user code, because shutting down and
//! cancelling wait for them. A callback there could call
//! `pool.shutdown(..)` (which waits for that very reader), drop the last
//! handle on the pool (the same), or `cancel()` a task prefetched by that
//! worker (whose answer only that reader can read). So such a thread
//! marks itself with [`defer_here`], and a future it completes hands its
//! callbacks to the pool's [`CompletionThread`] instead: a thread of its
//! own, started on first use, that user code may block.
//!
//! # Shared state
//!
//! `CompletionThread::inner` (one mutex): `jobs` is pushed by pool threads
//! and popped by the completion thread; `closed` is set once, by the
//! pool's shutdown, after which jobs run on the thread that completes the
//! future (nothing pool-internal is left to block then); `handle` is set
//! when the thread starts and taken by `close`.
//!
//! The thread-local `IN_CALLBACK` counts the callbacks running on this
//! thread: a callback that waits on a future which is done but whose own
//! callbacks are queued behind it would otherwise wait for itself (see
//! `future.rs`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Work handed to a completion thread: run a future's callbacks, then
/// release its waiters.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

#[cfg(not(procpool_loom))]
thread_local! {
    static DEFER: RefCell<Option<Arc<CompletionThread>>> = const { RefCell::new(None) };
    static IN_CALLBACK: Cell<u32> = const { Cell::new(0) };
}

// Under the model checker every model thread shares one OS thread, so a
// std thread-local would be shared by all of them: loom's is per model
// thread.
#[cfg(procpool_loom)]
loom::thread_local! {
    static DEFER: RefCell<Option<Arc<CompletionThread>>> = RefCell::new(None);
    static IN_CALLBACK: Cell<u32> = Cell::new(0);
}

/// Marks this thread as a pool thread: callbacks of futures it completes
/// run on `to` from now on (for the rest of the thread's life).
pub(crate) fn defer_here(to: &Arc<CompletionThread>) {
    DEFER.with(|d| *d.borrow_mut() = Some(to.clone()));
}

/// Runs `job` on this thread's completion thread if it has one (and it
/// takes work); otherwise hands it back to be run here.
pub(crate) fn defer(job: Job) -> Option<Job> {
    let to = DEFER.with(|d| d.borrow().clone());
    match to {
        Some(t) => t.push(job),
        None => Some(job),
    }
}

/// Whether a done callback is running on this thread.
pub(crate) fn in_callback() -> bool {
    IN_CALLBACK.with(Cell::get) > 0
}

/// Runs `f` as a callback: counted in `IN_CALLBACK`, panics caught and
/// handed back.
pub(crate) fn as_callback<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    IN_CALLBACK.with(|c| c.set(c.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(f));
    IN_CALLBACK.with(|c| c.set(c.get() - 1));
    r
}

#[derive(Default)]
struct Inner {
    jobs: VecDeque<Job>,
    closed: bool,
    handle: Option<JoinHandle<()>>,
}

/// A pool's thread for done callbacks; see the module docs.
#[derive(Default)]
pub(crate) struct CompletionThread {
    inner: Mutex<Inner>,
    cond: Condvar,
}

impl CompletionThread {
    pub(crate) fn new() -> Arc<CompletionThread> {
        Arc::new(CompletionThread::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::lock::lock(&self.inner)
    }

    /// Queues `job`, starting the thread on first use. Hands the job back
    /// if the pool is shut down or no thread can be started.
    fn push(self: &Arc<Self>, job: Job) -> Option<Job> {
        let mut g = self.lock();
        if g.closed {
            return Some(job);
        }
        if g.handle.is_none() {
            let me = self.clone();
            match std::thread::Builder::new()
                .name("procpool-callbacks".into())
                .spawn(move || me.main())
            {
                Ok(h) => g.handle = Some(h),
                Err(e) => {
                    tracing::warn!(target: "procpool::pool", "cannot start the callback thread ({e}); running the callback here");
                    return Some(job);
                }
            }
        }
        g.jobs.push_back(job);
        drop(g);
        self.cond.notify_one();
        None
    }

    fn main(&self) {
        loop {
            let job = {
                let mut g = self.lock();
                loop {
                    if let Some(j) = g.jobs.pop_front() {
                        break j;
                    }
                    if g.closed {
                        return;
                    }
                    g = self.cond.wait(g).unwrap_or_else(|p| p.into_inner());
                }
            };
            // A job catches its callbacks' panics itself; this is for a
            // bug in procpool, which must not stop the callbacks after it.
            let _ = catch_unwind(AssertUnwindSafe(job));
        }
    }

    /// Shutdown: no more jobs are taken; those queued run, and this waits
    /// for them unless it is called from a callback on this very thread.
    pub(crate) fn close(&self) {
        let handle = {
            let mut g = self.lock();
            g.closed = true;
            g.handle.take()
        };
        self.cond.notify_all();
        if let Some(h) = handle
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
    }
}
