//! `ThreadPool`: the same [`Task`] values (and plain closures) run on
//! threads in this process, with no serialization at all — the baseline
//! against which the process pool's cost is measured.
//!
//! # Shared state
//!
//! `queue` (under its mutex) holds jobs not yet taken; `closed` is set once
//! by `shutdown` and never cleared; worker threads take jobs and exit when
//! the queue is closed and empty. A job's future is moved to `Running` by
//! the thread that takes it, so `cancel()` racing with a thread is decided
//! by the future's own lock: exactly one wins.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use procpool_wire::codec::panic_message;

use crate::cost::{Cost, PoolStats, StatsCollector};
use crate::error::{BuildError, SubmitError, TaskError};
use crate::future::{Core, Resolve, TaskFuture};
use crate::lock::lock;
use crate::map::{ChunkResult, Submitter};
use crate::offload::OffThread;
use crate::task::{InitError, Initializer, Task, WorkerContext};
use crate::{Shutdown, sealed};

type InitFn = Arc<dyn Fn(&mut WorkerContext) -> Result<(), InitError> + Send + Sync>;

struct Job {
    run: Box<dyn FnOnce(&mut WorkerContext) + Send>,
    /// Every future the job would resolve, for cancellation at shutdown.
    futures: Vec<Arc<dyn Resolve>>,
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// Who is stopping the pool: `(started, finished)`. The first `shutdown`
/// joins the threads; concurrent ones wait for it to finish.
type StopState = (bool, bool);

struct Shared {
    stop: Mutex<StopState>,
    stopped: Condvar,
    queue: Mutex<Queue>,
    cond: Condvar,
    next_id: AtomicU64,
    stats: StatsCollector,
    threads: Mutex<Vec<JoinHandle<()>>>,
    workers: usize,
}

/// Configures a [`ThreadPool`].
#[must_use]
pub struct ThreadPoolBuilder {
    workers: Option<usize>,
    name_prefix: String,
    init: Option<(String, InitFn)>,
}

impl std::fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("workers", &self.workers)
            .field("name_prefix", &self.name_prefix)
            .field("initializer", &self.init.as_ref().map(|i| &i.0))
            .finish()
    }
}

impl ThreadPoolBuilder {
    /// Number of threads. Default, as Python's: `min(32, cpus + 4)`.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Thread names are `{prefix}-{i}` (default `procpool-thread`).
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// Runs a clone of `init` in every thread before it takes a job.
    pub fn initializer<I: Initializer + Clone + Sync>(mut self, init: I) -> Self {
        let f: InitFn = Arc::new(move |ctx| init.clone().init(ctx));
        self.init = Some((I::NAME.to_owned(), f));
        self
    }

    /// Runs `f` in every thread before it takes a job.
    pub fn init_fn<F>(mut self, f: F) -> Self
    where
        F: Fn(&mut WorkerContext) -> Result<(), InitError> + Send + Sync + 'static,
    {
        self.init = Some(("init_fn".to_owned(), Arc::new(f)));
        self
    }

    /// Starts the threads; fails if `workers(0)` or an initializer fails.
    pub fn build(self) -> Result<ThreadPool, BuildError> {
        let workers = match self.workers {
            Some(0) => {
                return Err(BuildError::Config(
                    "workers must be at least 1 (got 0)".into(),
                ));
            }
            Some(n) => n,
            None => default_threads(),
        };
        let shared = Arc::new(Shared {
            stop: Mutex::new((false, false)),
            stopped: Condvar::new(),
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            cond: Condvar::new(),
            next_id: AtomicU64::new(1),
            stats: StatsCollector::new(),
            threads: Mutex::new(Vec::new()),
            workers,
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<(usize, Result<(), String>)>();
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let shared2 = shared.clone();
            let init = self.init.as_ref().map(|(_, f)| f.clone());
            let tx = ready_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{i}", self.name_prefix))
                .spawn(move || thread_main(i, shared2, init, tx));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    let pool = ThreadPool { shared, owns: true };
                    *lock(&pool.shared.threads) = handles;
                    pool.shutdown(Shutdown::Wait);
                    return Err(BuildError::Spawn {
                        worker: i,
                        program: "<thread>".into(),
                        source: e,
                    });
                }
            }
        }
        drop(ready_tx);
        *lock(&shared.threads) = handles;
        let pool = ThreadPool { shared, owns: true };
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((worker, Err(message))) => {
                    pool.shutdown(Shutdown::CancelPending);
                    return Err(BuildError::Initializer {
                        worker,
                        name: self.init.map(|i| i.0).unwrap_or_default(),
                        message,
                    });
                }
                Err(_) => break,
            }
        }
        Ok(pool)
    }
}

fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus + 4).min(32)
}

fn thread_main(
    index: usize,
    shared: Arc<Shared>,
    init: Option<InitFn>,
    ready: std::sync::mpsc::Sender<(usize, Result<(), String>)>,
) {
    let mut ctx = WorkerContext::new(index);
    if let Some(init) = init {
        let r = match catch_unwind(AssertUnwindSafe(|| init(&mut ctx))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(p) => Err(format!("panicked: {}", panic_message(&*p))),
        };
        let failed = r.is_err();
        let _ = ready.send((index, r));
        if failed {
            return;
        }
    } else {
        let _ = ready.send((index, Ok(())));
    }
    drop(ready);
    loop {
        let job = {
            let mut q = lock(&shared.queue);
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                if q.closed {
                    return;
                }
                q = shared.cond.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        (job.run)(&mut ctx);
    }
}

/// A pool of threads running [`Task`] values and closures in-process.
///
/// ```
/// use procpool::ThreadPool;
/// let pool = ThreadPool::builder().workers(2).build().unwrap();
/// let f = pool.spawn(|| 6 * 7).unwrap();
/// assert_eq!(f.result().unwrap(), 42);
/// ```
///
/// Dropping the pool runs [`Shutdown::Wait`] and blocks until the queue is
/// done: inside an async runtime, await
/// [`shutdown_async`](Self::shutdown_async) first, or hold the pool in a
/// [`PoolGuard`](crate::PoolGuard).
pub struct ThreadPool {
    shared: Arc<Shared>,
    /// `false` for the crate's internal handles on the same pool (a
    /// `Map`'s submitter, `shutdown_async`'s thread): their drop does not
    /// shut the pool down.
    owns: bool,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("workers", &self.shared.workers)
            .finish_non_exhaustive()
    }
}

/// Runs `work` on a pool thread (unless its future was cancelled while
/// queued) and resolves the future with its value, or `Panicked`.
fn run_job<R: Send + 'static>(
    core: &Core<R>,
    work: impl FnOnce() -> R,
    queued: Instant,
    stats: &StatsCollector,
) {
    if !core.mark_running() {
        return; // cancelled while queued
    }
    let queue_wait = queued.elapsed();
    let t = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(work));
    let run = t.elapsed();
    match result {
        Ok(v) => {
            let cost = Cost {
                queue_wait,
                run,
                total: queued.elapsed(),
                ..Cost::default()
            }
            .with_remainder();
            stats.record(Some(&cost));
            core.finish(Ok(v), Some(cost));
        }
        Err(p) => {
            stats.record(None);
            core.finish(
                Err(TaskError::Panicked {
                    message: panic_message(&*p),
                    location: None,
                }),
                None,
            );
        }
    }
}

impl ThreadPool {
    /// A builder with the defaults.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder {
            workers: None,
            name_prefix: "procpool-thread".into(),
            init: None,
        }
    }

    /// Another handle on this pool, whose drop leaves the pool alone.
    fn handle(&self) -> ThreadPool {
        ThreadPool {
            shared: self.shared.clone(),
            owns: false,
        }
    }

    fn enqueue(&self, job: Job) -> Result<(), Job> {
        let mut q = lock(&self.shared.queue);
        if q.closed {
            return Err(job);
        }
        q.jobs.push_back(job);
        drop(q);
        self.shared.cond.notify_one();
        Ok(())
    }

    fn new_core<T: Send + 'static>(&self, name: &'static str) -> Arc<Core<T>> {
        Core::new(
            self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            name,
            None,
        )
    }

    /// Queues one job that runs `input` through `run` on a pool thread and
    /// resolves a new future (named `name`) with the result; a refused job
    /// hands `input` back. `spawn` and `submit` are this with a closure and
    /// with a task.
    fn submit_one<I, R>(
        &self,
        name: &'static str,
        input: I,
        run: impl FnOnce(I, &mut WorkerContext) -> R + Send + 'static,
    ) -> Result<TaskFuture<R>, I>
    where
        I: Send + 'static,
        R: Send + 'static,
    {
        let core = self.new_core::<R>(name);
        let queued = Instant::now();
        // The input travels in a slot so a refused job can hand it back.
        let slot = Arc::new(Mutex::new(Some(input)));
        let slot2 = slot.clone();
        let c = core.clone();
        let shared = self.shared.clone();
        let job = Job {
            run: Box::new(move |ctx| {
                if let Some(input) = lock(&slot2).take() {
                    run_job(&c, || run(input, ctx), queued, &shared.stats);
                }
            }),
            futures: vec![core.clone()],
        };
        match self.enqueue(job) {
            Ok(()) => Ok(TaskFuture::from_core(core)),
            Err(_) => Err(lock(&slot).take().expect("a refused job never ran")),
        }
    }

    /// Runs a closure on a pool thread. A panic becomes
    /// [`TaskError::Panicked`].
    pub fn spawn<F, R>(&self, f: F) -> Result<TaskFuture<R>, SubmitError<F>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.submit_one("closure", f, |f, _ctx| f())
            .map_err(|f| SubmitError::Shutdown { task: f })
    }

    /// Queues `task`; it is handed back if the pool is shut down. A panic
    /// becomes [`TaskError::Panicked`].
    ///
    /// ```
    /// use procpool::ThreadPool;
    /// use procpool_tasks::Square;
    ///
    /// let pool = ThreadPool::builder().workers(2).build().unwrap();
    /// assert_eq!(pool.submit(Square(7)).unwrap().result().unwrap(), 49);
    /// ```
    pub fn submit<T: Task>(&self, task: T) -> Result<TaskFuture<T::Output>, SubmitError<T>> {
        self.submit_one(T::NAME, task, |task, ctx| task.run(ctx))
            .map_err(|task| SubmitError::Shutdown { task })
    }

    map_methods!();

    /// Stops the pool; see [`Shutdown`]. Blocks until every thread is gone
    /// (unless called from one of them); idempotent.
    pub fn shutdown(&self, how: Shutdown) {
        self.stop(how);
    }

    /// Number of threads.
    pub fn workers(&self) -> usize {
        self.shared.workers
    }

    /// Totals over every finished task.
    pub fn stats(&self) -> PoolStats {
        self.shared.stats.snapshot()
    }

    /// [`shutdown`](Self::shutdown) without blocking: the shutdown starts
    /// at once on a thread of its own, and the returned future resolves when
    /// every pool thread is gone. After it, dropping the pool returns at
    /// once. For async code (see [`OffThread`] and
    /// [`PoolGuard`](crate::PoolGuard)).
    pub fn shutdown_async(&self, how: Shutdown) -> OffThread<()> {
        let handle = self.handle();
        OffThread::spawn("procpool-shutdown", move || handle.stop(how))
    }

    fn stop(&self, how: Shutdown) {
        let cancelled: Vec<Job> = {
            let mut q = lock(&self.shared.queue);
            q.closed = true;
            match how {
                Shutdown::Wait => Vec::new(),
                Shutdown::CancelPending | Shutdown::Kill => q.jobs.drain(..).collect(),
            }
        };
        self.shared.cond.notify_all();
        for job in cancelled {
            for f in job.futures {
                f.cancel_local();
            }
        }
        let me = std::thread::current().id();
        let on_pool_thread = lock(&self.shared.threads)
            .iter()
            .any(|h| h.thread().id() == me);
        {
            let mut stop = lock(&self.shared.stop);
            if stop.0 {
                // Another call is joining the threads: wait for it (unless
                // this is a pool thread, which it would be waiting for).
                while !stop.1 && !on_pool_thread {
                    stop = self
                        .shared
                        .stopped
                        .wait(stop)
                        .unwrap_or_else(|p| p.into_inner());
                }
                return;
            }
            stop.0 = true;
        }
        let handles: Vec<_> = lock(&self.shared.threads).drain(..).collect();
        for h in handles {
            if h.thread().id() == me {
                continue; // shutdown from inside a task or callback
            }
            let _ = h.join();
        }
        lock(&self.shared.stop).1 = true;
        self.shared.stopped.notify_all();
    }
}

impl sealed::Sealed for ThreadPool {
    fn submit_chunk<T: Task>(&self, items: Vec<T>) -> ChunkResult<T::Output> {
        let queued = Instant::now();
        let cores: Vec<Arc<Core<T::Output>>> =
            items.iter().map(|_| self.new_core(T::NAME)).collect();
        let run_cores = cores.clone();
        let shared = self.shared.clone();
        let job = Job {
            run: Box::new(move |ctx| {
                for (core, task) in run_cores.iter().zip(items) {
                    run_job(core, || task.run(ctx), queued, &shared.stats);
                }
            }),
            futures: cores
                .iter()
                .map(|c| c.clone() as Arc<dyn Resolve>)
                .collect(),
        };
        match self.enqueue(job) {
            Ok(()) => Ok(cores
                .into_iter()
                .map(|c| Ok(TaskFuture::from_core(c)))
                .collect()),
            Err(_) => Err(TaskError::Shutdown),
        }
    }

    fn map_window(&self) -> usize {
        self.shared.workers * 4
    }

    fn chunk_submitter<T: Task>(&self) -> Submitter<T> {
        let pool = self.handle();
        Arc::new(move |items| pool.submit_chunk(items))
    }
}

executor_by_inherent_methods!(ThreadPool);

impl Drop for ThreadPool {
    fn drop(&mut self) {
        if self.owns {
            self.stop(Shutdown::Wait);
        }
    }
}
