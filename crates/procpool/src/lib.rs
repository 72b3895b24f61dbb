//! Pools of worker processes and threads with Python's `concurrent.futures`
//! semantics, minus its traps.
//!
//! * [`ProcessPool`] runs [`Task`] values in worker processes: a crash in one
//!   task costs that task's future only, a payload that will not serialize is
//!   a typed error, and every task's serialization cost is measured
//!   ([`Cost`]).
//! * [`ThreadPool`] runs the same tasks in-process, without serialization:
//!   the baseline that makes the process pool's overhead visible.
//! * [`TaskFuture`], [`as_completed`], [`wait`] and [`Map`] work the same on
//!   both, and through the [`Executor`] trait code can target either.
//!
//! Linux only (see the crate's README for why).
//!
//! A task is a plain function marked [`#[procpool::task]`](macro@task); the
//! program is its own worker ([`worker::run_if_worker`] first in `main`),
//! which is also the pool's default worker. This example runs as it is:
//!
//! ```rust,standalone_crate
//! use procpool::{ProcessPool, Registry};
//!
//! #[procpool::task]
//! fn mix(seed: u64) -> u64 {
//!     seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 24 // small enough to sum
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // In a worker process this serves every #[procpool::task] and never returns.
//!     procpool::worker::run_if_worker(Registry::collected());
//!
//!     let pool = ProcessPool::builder().workers(4).build()?; // workers: this program
//!     assert_eq!(pool.submit(Mix { seed: 7 })?.result()?, mix(7));
//!     let results = pool.map((0..1000).map(|seed| Mix { seed }));
//!     # #[cfg(feature = "progress")]
//!     let results = results.progress(); // a bar on stderr
//!     let sum: u64 = results.map(|r| r.unwrap()).sum();
//!     assert_eq!(sum, (0..1000).map(mix).sum());
//!     Ok(())
//! }
//! ```
//!
//! Without `run_if_worker` the default worker is the bundled
//! `procpool-worker` (built-in tasks only); [`WorkerCommand::program`] runs
//! a separate worker binary.
//!
//! # Cargo features
//!
//! All on by default. Without any, a pool spawns its workers on this host
//! over socketpairs, and every std `Future` ([`TaskFuture`],
//! [`wait_async`], [`OffThread`], ...) is still there.
//!
//! * `remote`: workers that dial in — TCP (`Transport::Tcp`), attach
//!   (`Launcher::Attach`, `External`, `ProcessPool::attach_info`),
//!   launchers (`Srun`, `Mpirun`, your own `Launch`), heartbeats, a
//!   worker's `--connect` — and the secret handshake and sealed frames
//!   they need (HMAC-SHA256). Attach over a local socket is part of it: its
//!   workers prove the secret the same way.
//! * `stream`: the `futures_core::Stream` forms (`map_stream`,
//!   `MapStream`, `AsCompleted` as a stream, the `Stream` re-export).
//! * `progress`: `Map::progress()`, a terminal bar.
// `deny`, not `forbid`: the one `sys` module below may opt out. Every other
// module (and every other crate of the workspace) has no unsafe code.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod callbacks;
mod collected;
/// `impl Executor for $pool`: every method is the pool's inherent one of
/// the same name (both pools have them all, so no caller needs the trait).
macro_rules! executor_by_inherent_methods {
    ($pool:ty) => {
        impl $crate::Executor for $pool {
            fn submit<T: $crate::Task>(
                &self,
                task: T,
            ) -> Result<$crate::TaskFuture<T::Output>, $crate::SubmitError<T>> {
                <$pool>::submit(self, task)
            }

            fn shutdown(&self, how: $crate::Shutdown) {
                <$pool>::shutdown(self, how);
            }

            fn shutdown_async(&self, how: $crate::Shutdown) -> $crate::OffThread<()> {
                <$pool>::shutdown_async(self, how)
            }

            fn workers(&self) -> usize {
                <$pool>::workers(self)
            }

            fn stats(&self) -> $crate::PoolStats {
                <$pool>::stats(self)
            }
        }
    };
}

/// The inherent `map` and `map_unordered` of both pools: the same code on
/// each, so that a caller needs no trait import.
macro_rules! map_methods {
    () => {
        /// Runs `tasks` lazily, one `Result` per input, in input order.
        pub fn map<I>(&self, tasks: I) -> $crate::Map<'_, I::IntoIter>
        where
            I: IntoIterator,
            I::Item: $crate::Task,
        {
            $crate::map_on(self, tasks, true)
        }

        /// Like [`map`](Self::map), yielding results as they complete.
        pub fn map_unordered<I>(&self, tasks: I) -> $crate::Map<'_, I::IntoIter>
        where
            I: IntoIterator,
            I::Item: $crate::Task,
        {
            $crate::map_on(self, tasks, false)
        }

        #[cfg(feature = "stream")]
        #[cfg_attr(docsrs, doc(cfg(feature = "stream")))]
        /// Like [`map`](Self::map), with inputs from an async
        /// [`Stream`](crate::Stream) and the results as a
        /// [`MapStream`](crate::MapStream); see
        /// [`Executor::map_stream`](crate::Executor::map_stream).
        pub fn map_stream<S>(&self, tasks: S) -> $crate::MapStream<'_, $crate::StreamInput<S>>
        where
            S: $crate::Stream + Unpin,
            S::Item: $crate::Task,
        {
            $crate::map_stream_on(self, tasks, true)
        }

        #[cfg(feature = "stream")]
        #[cfg_attr(docsrs, doc(cfg(feature = "stream")))]
        /// Like [`map_stream`](Self::map_stream), yielding results as they
        /// complete.
        pub fn map_stream_unordered<S>(
            &self,
            tasks: S,
        ) -> $crate::MapStream<'_, $crate::StreamInput<S>>
        where
            S: $crate::Stream + Unpin,
            S::Item: $crate::Task,
        {
            $crate::map_stream_on(self, tasks, false)
        }
    };
}

pub mod cost;
mod deadline;
pub mod error;
mod expiry;
pub mod future;
mod guard;
mod idmap;
mod indexed;
mod kept;
mod link;
mod lock;
pub mod map;
mod offload;
pub mod overhead;
pub mod process_pool;
mod progress;
pub mod shared;
mod stamp;
mod sync;
pub mod task;
pub mod thread_pool;
mod timer;
pub mod waiting;
pub mod worker;

#[allow(unsafe_code)]
mod sys;

#[cfg(all(test, procpool_loom))]
mod models;

pub use cost::{Cost, PoolStats};
pub use error::{BuildError, Exit, Side, SubmitError, TaskError, WaitError};
pub use expiry::{AsCompletedDeadline, Expired};
pub use future::{State, TaskFuture};
pub use guard::PoolGuard;
pub use indexed::IndexedMap;
pub use map::Map;
#[cfg(feature = "stream")]
pub use map::{MapStream, StreamInput};
pub use offload::OffThread;
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
pub use process_pool::{AttachInfo, Launch, LaunchRequest, MpiFlavor, Mpirun, Srun};
pub use process_pool::{
    Launcher, ProcessPool, ProcessPoolBuilder, Transport, WorkerCommand, WorkerOutput,
};
pub use shared::{SharedBytes, SharedSlice};
pub use task::{InitError, Initializer, Registry, Task, WorkerContext};
pub use thread_pool::{ThreadPool, ThreadPoolBuilder};
pub use waiting::{AsCompleted, ReturnWhen, WaitFuture, as_completed, wait, wait_async};

/// Makes a task from a plain function, registered for this program's
/// workers: `#[procpool::task] fn mix(seed: u64) -> u64` generates
/// `struct Mix { pub seed: u64 }` (the name in `UpperCamelCase`, one public
/// field per argument) that implements [`Task`] by calling `mix`, and adds
/// it to [`Registry::collected`].
///
/// ```no_run
/// use procpool::{ProcessPool, Registry};
///
/// #[procpool::task]
/// fn mix(seed: u64) -> u64 {
///     seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17)
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     // In a worker process this serves every #[procpool::task] and never returns.
///     procpool::worker::run_if_worker(Registry::collected());
///
///     let pool = ProcessPool::builder().build()?; // workers: this program
///     assert_eq!(pool.submit(Mix { seed: 7 })?.result()?, mix(7));
///     for digest in pool.map((0..1000).map(|seed| Mix { seed })) {
///         println!("{}", digest?);
///     }
///     Ok(())
/// }
/// ```
///
/// * The function stays as written (call it directly, test it directly).
/// * Arguments must be owned, serializable values (`String`, not `&str`);
///   the return type must be serializable. A `Result<T, E>` return arrives
///   as the task's own value (`Ok(Err(e))`), not a pool error.
/// * An argument `ctx: &mut WorkerContext` (anywhere in the list) is the
///   worker's [`WorkerContext`], not a field: read what an
///   [`Initializer`] left there.
/// * The task's `NAME` is the function's path (`my_crate::jobs::mix`);
///   `#[procpool::task(name = "mix")]` sets another, and
///   `#[procpool::task(type_name = MixTask)]` names the generated type.
/// * The generated type derives `Serialize` and `Deserialize` through
///   procpool's own `serde`, so it needs nothing more from your crate.
///
/// Hand-written `impl Task` types still work; register them with
/// `Registry::collected().task::<MyTask>()`.
#[doc(inline)]
pub use procpool_macros::task;

#[doc(hidden)]
pub mod __private {
    //! What `#[procpool::task]`'s generated code names; not an API.
    pub use crate::collected::Collected;
    pub use inventory;
    pub use serde;
}

/// The `Stream` trait that [`AsCompleted`] implements for async users
/// (re-exported from `futures-core`).
#[cfg(feature = "stream")]
#[cfg_attr(docsrs, doc(cfg(feature = "stream")))]
pub use futures_core::Stream;

/// How [`Executor::shutdown`] treats work that has not finished. Every mode
/// blocks until the pool's workers are gone, and is idempotent; in async
/// code, [`Executor::shutdown_async`] waits for the same without blocking
/// the runtime. A stronger mode (`Wait` < `CancelPending` < `Kill`) called
/// while a weaker one is in progress on another thread takes over at once.
/// Called inside a done callback, or by dropping the last handle on the
/// pool there, it returns too: a process pool runs such callbacks on a
/// thread of its own that it does not wait for, a thread pool does not
/// wait for the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shutdown {
    /// Run everything already submitted (what `Drop` does).
    #[default]
    Wait,
    /// Cancel what has not started; let running tasks finish.
    CancelPending,
    /// Cancel what has not started and kill running tasks (their futures end
    /// `Cancelled`). Threads cannot be killed: on a [`ThreadPool`] this acts
    /// as `CancelPending`.
    Kill,
}

mod sealed {
    use crate::map::{ChunkResult, Packer, Submitter};
    use crate::task::Task;

    pub trait Sealed {
        /// Submits a chunk as one unit (one frame, one worker).
        fn submit_chunk<T: Task>(&self, items: Vec<T>) -> ChunkResult<T::Output>;
        /// Default number of chunks a `Map` keeps in flight.
        fn map_window(&self) -> usize;
        /// `submit_chunk` on a handle of its own (callable from any
        /// thread; dropping it does not shut the pool down).
        fn chunk_submitter<T: Task>(&self) -> Submitter<T>;
        /// Submits chunks as packed tasks (one record per chunk), where
        /// the pool can (`None`: a future per input).
        fn chunk_packer<T: Task>(&self) -> Option<Packer<T>> {
            None
        }
        /// Submits several one-input chunks at once, each queued as a
        /// batch of its own (dispatch may send several in one frame), where
        /// the pool gains by it (`None`: one `submit_chunk` per input).
        fn singles_submitter<T: Task>(&self) -> Option<Submitter<T>> {
            None
        }
    }
}

/// What both pools do, so code can run on threads or processes unchanged.
///
/// ```
/// use procpool::{Executor, ThreadPool};
/// use procpool_tasks::Square;
///
/// fn sum_of_squares(pool: &impl Executor, n: u64) -> u64 {
///     pool.map((0..n).map(Square)).map(|r| r.unwrap()).sum()
/// }
/// let pool = ThreadPool::builder().workers(2).build().unwrap();
/// assert_eq!(sum_of_squares(&pool, 4), 0 + 1 + 4 + 9);
/// ```
pub trait Executor: sealed::Sealed {
    /// Queues `task`; the task is handed back if the pool refuses it.
    fn submit<T: Task>(&self, task: T) -> Result<TaskFuture<T::Output>, SubmitError<T>>;

    /// Stops the pool; see [`Shutdown`].
    fn shutdown(&self, how: Shutdown);

    /// [`shutdown`](Self::shutdown) for async code: starts at once on a
    /// thread of its own; the future resolves when the pool is down,
    /// without blocking the runtime.
    fn shutdown_async(&self, how: Shutdown) -> OffThread<()>;

    /// How many workers (processes or threads) the pool runs.
    fn workers(&self) -> usize;

    /// Totals over every finished task.
    fn stats(&self) -> PoolStats;

    /// Runs `tasks` lazily and yields one `Result` per input, in input order.
    fn map<I>(&self, tasks: I) -> Map<'_, I::IntoIter>
    where
        I: IntoIterator,
        I::Item: Task,
        Self: Sized,
    {
        map_on(self, tasks, true)
    }

    /// Like [`map`](Self::map) but yields results as they complete.
    fn map_unordered<I>(&self, tasks: I) -> Map<'_, I::IntoIter>
    where
        I: IntoIterator,
        I::Item: Task,
        Self: Sized,
    {
        map_on(self, tasks, false)
    }

    /// Like [`map`](Self::map), with inputs from an async [`Stream`] and
    /// the results as a [`MapStream`] (`while let Some(r) =
    /// results.next().await`). A chunk is sent when it is full, when the
    /// input ends, or when the input has nothing ready: with an async input
    /// `chunksize(n)` is a maximum. (Box-pin a stream that is not `Unpin`.)
    ///
    /// ```
    /// use procpool::{Executor, ThreadPool};
    /// use procpool_tasks::Square;
    ///
    /// let pool = ThreadPool::builder().workers(2).build().unwrap();
    /// # struct Numbers(u64);
    /// # impl procpool::Stream for Numbers {
    /// #     type Item = Square;
    /// #     fn poll_next(mut self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>)
    /// #         -> std::task::Poll<Option<Square>> {
    /// #         self.0 += 1;
    /// #         std::task::Poll::Ready((self.0 <= 3).then(|| Square(self.0)))
    /// #     }
    /// # }
    /// let inputs = Numbers(0); // any `Stream<Item = Square> + Unpin`: 1, 2, 3
    /// futures_executor::block_on(async {
    ///     let mut squares = pool.map_stream(inputs);
    ///     while let Some(r) = squares.next().await {
    ///         println!("{}", r.unwrap());
    ///     }
    /// });
    /// ```
    #[cfg(feature = "stream")]
    #[cfg_attr(docsrs, doc(cfg(feature = "stream")))]
    fn map_stream<S>(&self, tasks: S) -> MapStream<'_, StreamInput<S>>
    where
        S: Stream + Unpin,
        S::Item: Task,
        Self: Sized,
    {
        map_stream_on(self, tasks, true)
    }

    /// Like [`map_stream`](Self::map_stream), yielding results as they
    /// complete.
    #[cfg(feature = "stream")]
    #[cfg_attr(docsrs, doc(cfg(feature = "stream")))]
    fn map_stream_unordered<S>(&self, tasks: S) -> MapStream<'_, StreamInput<S>>
    where
        S: Stream + Unpin,
        S::Item: Task,
        Self: Sized,
    {
        map_stream_on(self, tasks, false)
    }
}

/// A `MapStream` whose inputs come from `tasks`, submitting to `pool`.
#[cfg(feature = "stream")]
fn map_stream_on<P, S>(pool: &P, tasks: S, ordered: bool) -> MapStream<'_, StreamInput<S>>
where
    P: sealed::Sealed,
    S: Stream + Unpin,
    S::Item: Task,
{
    MapStream::from_stream(map_on(pool, StreamInput::new(tasks), ordered))
}

/// A `Map` that submits its chunks to `pool`.
fn map_on<P, I>(pool: &P, tasks: I, ordered: bool) -> Map<'_, I::IntoIter>
where
    P: sealed::Sealed,
    I: IntoIterator,
    I::Item: Task,
{
    let mut map = Map::new(
        pool.chunk_submitter(),
        pool.map_window(),
        tasks.into_iter(),
        ordered,
    );
    map.packer = pool.chunk_packer();
    map.singles = pool.singles_submitter();
    map
}
