//! `ProcessPool`: tasks run in worker processes.
//!
//! The pool's side of the contract in `link` (it never imports `worker`).
//! Each file owns one concern:
//!
//! | file | owns |
//! |---|---|
//! | [`builder`] | settings, defaults, `WorkerCommand` |
//! | `launch`, `transport` | how workers are started (`Launcher`) and reach the pool (`Transport`) |
//! | `state` | the shared state, worker slots and their state diagram |
//! | `start` | building: threads, first workers, waiting until ready |
//! | `spawner` | the spawner thread: forking workers, running launchers |
//! | `spawn` | starting one process |
//! | `output` | forwarding a worker's or launcher's output in bounded, escaped pieces |
//! | `procs` | process control (spawn, signal, wait) behind a trait, for fakes |
//! | `greet` | the pool's handshake with this pool's settings, the initializer |
//! | `stale` | removing the directories of pools that were killed |
//! | `attach`, `admission`, `adopt`, `stale` | dial-in workers (the `remote` feature): listening, the secret handshake, taking a slot |
//! | `life` | one process's life and waiter threads |
//! | `settle` | a dead worker: its tasks; carries out the restart policy |
//! | `policy` | the restart policy: crash counting, back-off, `Broken` (a pure function) |
//! | `guard` | a panicking supervisor thread breaks the pool, never hangs it |
//! | `clock` | task timeouts |
//! | `shutdown` | stopping |
//! | `item`, `dispatch`, `outbox` | the queue, assigning batches, writing frames |
//! | `reader`, `handle` | reading a worker's socket and ring; acting on its messages |
//! | `cancel` | `cancel()` / `kill()` of a future |
//!
//! # Threads
//!
//! | thread | how many | runs | locks it takes |
//! |---|---|---|---|
//! | caller (`submit`, `map`, `cancel`, `shutdown`) | any | `dispatch`, `cancel`, `shutdown` | `state`, then (released) `Conn` write |
//! | **spawner** `procpool-spawner` | one, as long as the pool (`PR_SET_PDEATHSIG` follows the thread that forked) | `spawner` | `state`, `spawn_tx`, `launched`, `threads` (one at a time) |
//! | **life** `procpool-worker-N` | one per process | `life` (greeting, initializer), then `reader` | `state` per message, `Conn` write |
//! | **slow writer** `procpool-slow-writer` | per connection, while a worker's socket buffer is full | `outbox` (sends bounded by `write_timeout`; a stall ends the worker) | `Conn::out`, then `state` (to end a stalled worker) |
//! | **waiter** `procpool-waiter-N` | one per spawned process | `life` (`waitpid`), then `settle` | `state`, then `spawn_tx` |
//! | **clock** `procpool-clock` | one | `clock` | `state` (sleeps on `Shared::clock`) |
//! | accept `procpool-attach-accept` (+ one per handshake) | dial-in pools | `attach`, then `adopt` + `life` | `AttachPoint::awaited`, `state` |
//! | launcher watcher `procpool-<name>` | per launcher run | `spawner` | `launched`, `state` |
//!
//! Death is detected by `waitpid`, not by EOF, so a grandchild holding the
//! socket cannot hide it.
//!
//! # Locks
//!
//! * `Shared::state` — all of `PoolState` (slots, queue, phase, cancels);
//!   condvars `changed` (slot status, phase, work finished while stopping)
//!   and `clock` (a timed task began; shutdown).
//! * `Conn::out` — one worker's outbox and writer role; frames are posted
//!   under `state` and sent after it is released (except a retiring
//!   worker's tiny `Shutdown`, sent under it), never blocking: what the
//!   socket cannot take goes to that connection's slow writer thread
//!   (`outbox`). Never held across a send.
//! * leaves (nothing is taken while one is held): `Shared::{spawn_tx,
//!   threads, launched, spare_input}`, `AttachPoint::{listening, awaited}`,
//!   `CancelWait::answer`.
//!
//! A future's own lock is taken only after `state` is released: futures are
//! resolved outside the pool lock, since their callbacks may call back into
//! the pool.

#[cfg(feature = "remote")]
mod admission;
#[cfg(feature = "remote")]
mod adopt;
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
pub mod attach;
pub mod builder;
mod cancel;
mod clock;
mod dispatch;
mod greet;
mod guard;
mod handle;
mod item;
mod known;
mod launch;
mod life;
mod outbox;
mod output;
mod pace;
mod policy;
mod procs;
mod queue;
mod reader;
mod settle;
mod shutdown;
mod spawn;
mod spawner;
#[cfg(feature = "remote")]
mod stale;
mod start;
mod state;
mod transport;

use std::any::type_name;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use procpool_wire::bulk::BulkSource;
use procpool_wire::codec;
use procpool_wire::fds::{MAX_FDS, SendFd};

#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
pub use attach::{AttachInfo, ENV_TOKEN};
pub use builder::{ENV_WORKER_PATH, ProcessPoolBuilder, WorkerCommand};
pub use launch::Launcher;
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
pub use launch::{Launch, LaunchRequest, MpiFlavor, Mpirun, Srun};
pub use output::WorkerOutput;
pub use transport::Transport;

use crate::cost::PoolStats;
use crate::error::{BuildError, SubmitError, TaskError};
use crate::future::{Core, TaskFuture};
use crate::kept::Kept;
use crate::map::chunk::{Part, Sent, Sink};
use crate::map::{ChunkResult, Packer, Submitter};
use crate::offload::OffThread;
use crate::task::{Task, task_fingerprint};
use crate::{Shutdown, sealed};
use item::{Item, Meta, Refusal};
use state::Shared;

/// A task ready for the queue, the core of its future, when its encoding
/// ended, and the task itself ([`Held`]).
type Prepared<T> = (Item, Arc<Core<<T as Task>::Output>>, Instant, Held<T>);

/// A task after `prepare`: still the caller's, or kept by its queue item
/// until it ends, for its bulk byte strings (`crate::kept`).
enum Held<T> {
    Here(T),
    Kept(Arc<Kept<T>>),
}

impl<T> Held<T> {
    /// The task back, for a submit refused after `prepare`: its queue item
    /// must be gone (it holds the kept task too).
    fn back(self) -> T {
        match self {
            Held::Here(task) => task,
            Held::Kept(kept) => match Arc::try_unwrap(kept) {
                Ok(kept) => kept.into_inner(),
                Err(_) => unreachable!("a refused task's queue item is dropped before it"),
            },
        }
    }
}

/// The refusal of a task whose input did not encode (`message`: why).
fn encode_refused<T: Task>(task: T, message: String) -> SubmitError<T> {
    SubmitError::Encode {
        task,
        type_name: type_name::<T>(),
        message,
    }
}

/// Room for a task header in a frame, beyond the payload.
const HEADER_ROOM: usize = 4096;

/// Bytes a packed input is guessed to take (its 4-byte length and a small
/// value) when a chunk's buffer is made.
const PACKED_GUESS: usize = 16;

/// Why an encoded input of `len` bytes cannot be sent under a frame cap
/// of `max_frame` bytes, if it cannot.
#[inline]
fn over_cap(len: usize, max_frame: usize) -> Option<String> {
    (len + HEADER_ROOM > max_frame).then(|| over_cap_message(len, max_frame))
}

#[cold]
fn over_cap_message(len: usize, max_frame: usize) -> String {
    format!(
        "input of {len} bytes does not fit the pool's {max_frame}-byte frame cap (raise max_frame_bytes)"
    )
}

/// A pool of worker processes.
///
/// ```no_run
/// use procpool::{ProcessPool, WorkerCommand};
/// use procpool_tasks::Square;
///
/// let pool = ProcessPool::builder().worker(WorkerCommand::bundled()).workers(2).build()?;
/// assert_eq!(pool.submit(Square(9))?.result()?, 81);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Dropping the pool runs [`Shutdown::Wait`]: work already submitted
/// completes and every future resolves. That blocks the dropping thread
/// until the queue is done: inside an async runtime, await
/// [`shutdown_async`](Self::shutdown_async) first (the drop is then
/// instant), or hold the pool in a [`PoolGuard`](crate::PoolGuard).
pub struct ProcessPool {
    shared: Arc<Shared>,
    /// `false` for the crate's internal handles on the same pool (a
    /// `Map`'s submitter): their drop does not shut the pool down.
    owns: bool,
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool")
            .field("workers", &self.shared.cfg.workers)
            .field("program", &self.shared.cfg.program)
            .finish_non_exhaustive()
    }
}

impl ProcessPool {
    /// A builder with the defaults.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::default()
    }

    pub(crate) fn start(cfg: builder::Config) -> Result<ProcessPool, BuildError> {
        let shared = start::start(cfg)?;
        Ok(ProcessPool { shared, owns: true })
    }

    /// Queues `task`. Fails (handing the task back) if its input does not
    /// serialize, or the pool is shut down or broken.
    pub fn submit<T: Task>(&self, task: T) -> Result<TaskFuture<T::Output>, SubmitError<T>> {
        self.submit_with_timeout(task, self.shared.cfg.task_timeout)
    }

    /// Like [`submit`](Self::submit) with this task's own timeout (`None`:
    /// no limit), overriding the builder's `task_timeout`.
    pub fn submit_with_timeout<T: Task>(
        &self,
        task: T,
        timeout: Option<Duration>,
    ) -> Result<TaskFuture<T::Output>, SubmitError<T>> {
        self.submit_with(task, timeout, self.shared.cfg.retries)
    }

    /// Like [`submit`](Self::submit), run again up to `retries` times if
    /// its worker dies under it (a lost remote node, a crash), overriding
    /// the builder's [`retries`](ProcessPoolBuilder::retries).
    pub fn submit_with_retries<T: Task>(
        &self,
        task: T,
        retries: u32,
    ) -> Result<TaskFuture<T::Output>, SubmitError<T>> {
        self.submit_with(task, self.shared.cfg.task_timeout, retries)
    }

    fn submit_with<T: Task>(
        &self,
        task: T,
        timeout: Option<Duration>,
        retries: u32,
    ) -> Result<TaskFuture<T::Output>, SubmitError<T>> {
        let submitted = Instant::now();
        let fingerprint = task_fingerprint::<T>();
        let (item, core, held) = match self.prepare(task, timeout, retries, fingerprint, submitted)
        {
            Ok((item, core, _, held)) => (item, core, held),
            Err((task, message)) => return Err(encode_refused(task, message)),
        };
        // After encoding: an input that does not serialize says so first.
        if let Err(no) = self.runnable::<T>(fingerprint) {
            drop(item);
            return Err(SubmitError::NoWorkerCanRun {
                task: held.back(),
                name: T::NAME,
                program: no.program,
                known: no.known,
                reason: no.reason,
            });
        }
        match dispatch::enqueue(&self.shared, vec![item]) {
            Ok(()) => Ok(TaskFuture::from_core(core)),
            Err(Refusal::Shutdown) => Err(SubmitError::Shutdown { task: held.back() }),
            Err(Refusal::Broken(reason)) => Err(SubmitError::Broken {
                task: held.back(),
                reason,
            }),
        }
    }

    /// `Err` if the workers announced their tasks and none can run `T`
    /// (SEMANTICS 28).
    fn runnable<T: Task>(&self, fingerprint: u64) -> Result<(), known::Unrunnable> {
        let bundled = self.shared.cfg.command.is_bundled();
        self.shared
            .known
            .check(T::NAME, fingerprint, type_name::<T>(), bundled)
    }

    /// Encodes `task` into a queue item and creates its future; also hands
    /// back when the encoding ended (the next item of a chunk starts its
    /// clock there: one clock read per item).
    fn prepare<T: Task>(
        &self,
        task: T,
        timeout: Option<Duration>,
        retries: u32,
        fingerprint: u64,
        submitted: Instant,
    ) -> Result<Prepared<T>, (T, String)> {
        let mut payload = self.shared.input_buffer();
        let mode = self.shared.cfg.shared_mode();
        let limit = u64::from(self.shared.cfg.max_frame);
        // To a local worker large byte strings go after the frame, from the
        // task itself, read there straight into the task's own buffers
        // (`bulk`).
        let mut spots = Vec::new();
        let (encoded, shared) = crate::shared::encode_with(mode, limit, || {
            if mode == crate::shared::Mode::Descriptors {
                codec::encode_into_bulk(&task, &mut payload, &mut spots)
            } else {
                codec::encode_into(&task, &mut payload)
            }
        });
        if let Some(e) = shared.error {
            return Err((task, e.to_string()));
        }
        if let Err(e) = encoded {
            return Err((task, e.to_string()));
        }
        let encoded_at = Instant::now();
        let encode = encoded_at.saturating_duration_since(submitted);
        let bulk_len: usize = spots.iter().map(|b| b.len as usize).sum();
        let bytes_out = payload.len() + bulk_len;
        if let Some(message) = over_cap(bytes_out, self.shared.cfg.max_frame as usize) {
            return Err((task, message));
        }
        let held = if spots.is_empty() {
            Held::Here(task)
        } else {
            Held::Kept(Arc::new(Kept::new(task, spots, mode, limit)))
        };
        let bulk = match &held {
            Held::Kept(kept) => Some(kept.clone() as Arc<dyn BulkSource>),
            Held::Here(_) => None,
        };
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let core = Core::<T::Output>::new(id, T::NAME, Some(self.shared.control()));
        let item = Item {
            meta: Meta {
                id,
                name: T::NAME,
                fingerprint,
                input_type: type_name::<T>(),
                output_type: type_name::<T::Output>(),
                future: core.clone(),
                submitted,
                encode,
                bytes_out: bytes_out as u64,
                timeout,
                retries,
                items: 0,
                from_map: false,
                files: shared.files.into_iter().map(|f| f as SendFd).collect(),
                bulk,
                span: tracing::debug_span!(
                    target: "procpool::task",
                    "task",
                    task.id = id,
                    task.name = T::NAME,
                    worker.id = tracing::field::Empty,
                    worker.pid = tracing::field::Empty,
                    cost.total_us = tracing::field::Empty,
                    cost.run_us = tracing::field::Empty,
                    cost.serde_us = tracing::field::Empty,
                    bytes.out = bytes_out as u64,
                    bytes.back = tracing::field::Empty,
                ),
            },
            payload: Arc::new(payload),
        };
        Ok((item, core, encoded_at, held))
    }

    map_methods!();

    /// Stops the pool; see [`Shutdown`]. Blocks until every worker is gone;
    /// idempotent.
    pub fn shutdown(&self, how: Shutdown) {
        shutdown::shutdown(&self.shared, how);
    }

    /// [`shutdown`](Self::shutdown) without blocking, for async code: the
    /// shutdown starts at once on a thread of its own and the returned
    /// future resolves when every worker is gone. After it, dropping the
    /// pool returns at once (the pool's `Drop` blocks otherwise; see
    /// [`PoolGuard`](crate::PoolGuard)).
    ///
    /// ```no_run
    /// # async fn f(pool: procpool::ProcessPool) {
    /// pool.shutdown_async(procpool::Shutdown::Wait).await;
    /// drop(pool); // at once
    /// # }
    /// ```
    pub fn shutdown_async(&self, how: Shutdown) -> OffThread<()> {
        let shared = self.shared.clone();
        OffThread::spawn("procpool-shutdown", move || {
            shutdown::shutdown(&shared, how);
        })
    }

    /// Totals over every finished task.
    pub fn stats(&self) -> PoolStats {
        self.shared.stats.snapshot()
    }

    /// Number of worker slots.
    pub fn workers(&self) -> usize {
        self.shared.cfg.workers
    }

    /// Process ids of the workers alive now.
    pub fn worker_pids(&self) -> Vec<u32> {
        state::worker_pids(&self.shared)
    }

    /// Test hook: the most batches (tasks or `map` chunks) one worker has
    /// held at once since the last call (or since the pool started).
    #[doc(hidden)]
    pub fn debug_take_most_held(&self) -> usize {
        std::mem::take(&mut crate::lock::lock(&self.shared.state).most_held)
    }

    /// Test hook: makes the supervisor panic the next time it settles a
    /// dead worker, to prove that an internal panic resolves every future.
    #[doc(hidden)]
    pub fn debug_inject_supervisor_panic(&self) {
        state::inject_panic(&self.shared);
    }

    /// Where and how workers dial in (every launcher but a `Spawn` over
    /// local sockets): `info.command("procpool-worker").spawn()` starts one.
    #[cfg(feature = "remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
    pub fn attach_info(&self) -> Option<AttachInfo> {
        self.shared.attach.as_ref().map(|a| a.info.clone())
    }

    /// Waits up to `timeout` until at least `n` workers are ready; returns
    /// whether they are (useful in attach mode).
    pub fn wait_for_workers(&self, n: usize, timeout: Duration) -> bool {
        state::wait_ready(&self.shared, n, timeout)
    }

    /// Why the pool is broken, if it is.
    pub fn broken(&self) -> Option<String> {
        state::broken(&self.shared)
    }
}

impl sealed::Sealed for ProcessPool {
    fn submit_chunk<T: Task>(&self, items: Vec<T>) -> ChunkResult<T::Output> {
        self.submit_items(items, false)
    }

    fn map_window(&self) -> usize {
        let cfg = &self.shared.cfg;
        // Room for what the workers may hold (short chunks: up to 4 ×
        // `prefetch`, see `prefetch_time` and `pace::depth`), and as much
        // again ready behind it: a parent thread waiting for a CPU for a
        // millisecond must not leave the workers without work.
        let held = if cfg.prefetch_time.is_zero() {
            cfg.prefetch
        } else {
            cfg.prefetch.saturating_mul(4)
        };
        cfg.workers.saturating_mul(held + 1).saturating_mul(2)
    }

    fn chunk_submitter<T: Task>(&self) -> Submitter<T> {
        let pool = self.handle();
        Arc::new(move |items| pool.submit_chunk(items))
    }

    fn singles_submitter<T: Task>(&self) -> Option<Submitter<T>> {
        let pool = self.handle();
        Some(Arc::new(move |items| pool.submit_items(items, true)))
    }

    fn chunk_packer<T: Task>(&self) -> Option<Packer<T>> {
        // A packed chunk is one task to the pool: a per-task timeout or
        // retry would apply to the whole chunk, not to each input.
        let cfg = &self.shared.cfg;
        if cfg.task_timeout.is_some() || cfg.retries > 0 {
            return None;
        }
        let pool = self.handle();
        Some(Arc::new(move |items| pool.submit_packed(items)))
    }
}

impl ProcessPool {
    /// Another handle to this pool for a map's submitters: dropping it
    /// does not shut the pool down.
    fn handle(&self) -> ProcessPool {
        ProcessPool {
            shared: self.shared.clone(),
            owns: false,
        }
    }

    /// A `map` chunk as one unit (one frame, one worker), cut only at the
    /// frame cap; or (`alone`) each input as a batch of its own, queued
    /// together (a map with chunksize 1: issue 14).
    fn submit_items<T: Task>(&self, items: Vec<T>, alone: bool) -> ChunkResult<T::Output> {
        let mut out = Vec::with_capacity(items.len());
        // A chunk is one frame: cut it where the next input would take the
        // frame past the cap (SEMANTICS 26) or its descriptors past what one
        // `sendmsg` carries. An input too large (or holding too many
        // descriptors) on its own has already failed in `prepare`.
        let budget = (self.shared.cfg.max_frame as usize).saturating_sub(HEADER_ROOM);
        // `alone`: each input its own batch, made at its size.
        let mut batches: Vec<Vec<Item>> = Vec::with_capacity(if alone { items.len() } else { 1 });
        let mut batch = Vec::with_capacity(if alone { 0 } else { items.len() });
        let mut used = 0usize;
        let mut fds = 0usize;
        let fingerprint = task_fingerprint::<T>();
        if let Err(no) = self.runnable::<T>(fingerprint) {
            let e = TaskError::NoWorkerCanRun {
                name: T::NAME.to_owned(),
                reason: no.reason,
            };
            return Ok(items.iter().map(|_| Err(e.clone())).collect());
        }
        let (timeout, retries) = (self.shared.cfg.task_timeout, self.shared.cfg.retries);
        let mut submitted = Instant::now();
        for task in items {
            match self.prepare(task, timeout, retries, fingerprint, submitted) {
                Ok((mut item, core, encoded_at, _)) => {
                    submitted = encoded_at;
                    out.push(Ok(TaskFuture::from_core(core)));
                    if alone {
                        item.meta.from_map = true;
                        batches.push(vec![item]);
                        continue;
                    }
                    let cost = item.frame_bytes();
                    let files = item.meta.files.len();
                    if !batch.is_empty() && (used + cost > budget || fds + files > MAX_FDS) {
                        batches.push(std::mem::take(&mut batch));
                        used = 0;
                        fds = 0;
                    }
                    used += cost;
                    fds += files;
                    batch.push(item);
                }
                Err((task, message)) => {
                    submitted = Instant::now();
                    out.push(Err(encode_refused(task, message).to_task_error()));
                }
            }
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        if batches.is_empty() {
            return Ok(out);
        }
        match dispatch::enqueue_all(&self.shared, batches) {
            Ok(()) => Ok(out),
            Err(Refusal::Shutdown) => Err(TaskError::Shutdown),
            Err(Refusal::Broken(reason)) => Err(TaskError::Broken { reason }),
        }
    }

    /// A `map` chunk as packed tasks (`map::chunk`): its inputs encoded end
    /// to end, cut where the next would pass the frame cap (SEMANTICS 26),
    /// one record (`Sink`) for their outcomes. An input that does not
    /// encode fails on its own; a chunk whose inputs carry shared payloads
    /// goes as a task per input instead (a packed chunk carries no
    /// descriptors).
    fn submit_packed<T: Task>(&self, items: Vec<T>) -> Result<Sent<T::Output>, TaskError> {
        let fingerprint = task_fingerprint::<T>();
        if let Err(no) = self.runnable::<T>(fingerprint) {
            let e = TaskError::NoWorkerCanRun {
                name: T::NAME.to_owned(),
                reason: no.reason,
            };
            return Ok(Sent::Futures(
                items.iter().map(|_| Err(e.clone())).collect(),
            ));
        }
        let cfg = &self.shared.cfg;
        let max_frame = cfg.max_frame as usize;
        let budget = max_frame.saturating_sub(HEADER_ROOM);
        let n = items.len();
        let sink = Sink::<T::Output>::new(n, self.shared.control());
        let submitted = Instant::now();
        let mut parts: Vec<(Vec<u8>, Vec<u32>)> = Vec::new();
        // Room for small inputs (a length and a few bytes each) at once:
        // grown from empty, the buffer was reallocated about ten times a
        // chunk (issue 14's profile).
        let mut payload = self
            .shared
            .chunk_buffer(n.saturating_mul(PACKED_GUESS).min(budget));
        let mut slots = Vec::with_capacity(n);
        let mut failed: Vec<(usize, String)> = Vec::new();
        // One shared-payload context for the whole chunk (a chunk whose
        // inputs hold shared payloads goes as a task per input).
        let ((), shared) =
            crate::shared::encode_with(cfg.shared_mode(), cfg.max_frame.into(), || {
                for (i, task) in items.iter().enumerate() {
                    // Encoded in place, after room for its length.
                    let at = payload.len();
                    payload.extend_from_slice(&[0; 4]);
                    if let Err(e) = codec::encode_into_boxed(task, &mut payload) {
                        payload.truncate(at);
                        failed.push((i, e.to_string()));
                        continue;
                    }
                    let len = payload.len() - at - 4;
                    if let Some(message) = over_cap(len, max_frame) {
                        payload.truncate(at);
                        failed.push((i, message));
                        continue;
                    }
                    payload[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
                    if !slots.is_empty() && payload.len() > budget {
                        // Past the frame cap: this input begins the next part.
                        let tail = payload.split_off(at);
                        parts.push((
                            std::mem::replace(&mut payload, tail),
                            std::mem::take(&mut slots),
                        ));
                    }
                    slots.push(i as u32);
                }
            });
        if !shared.files.is_empty() || shared.error.is_some() {
            return sealed::Sealed::submit_chunk(self, items).map(Sent::Futures);
        }
        for (i, message) in failed {
            sink.put(
                i,
                Err(TaskError::Encode {
                    side: crate::error::Side::Parent,
                    type_name: type_name::<T>().to_owned(),
                    message,
                }),
            );
        }
        if !slots.is_empty() {
            parts.push((payload, slots));
        }
        if parts.is_empty() {
            return Ok(Sent::Chunk(sink));
        }
        let encode = submitted.elapsed();
        let batches = parts
            .into_iter()
            .map(|(payload, slots)| {
                let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
                let k = slots.len();
                let part = Part::new(
                    sink.clone(),
                    slots,
                    id,
                    T::NAME,
                    type_name::<T>(),
                    type_name::<T::Output>(),
                );
                vec![Item {
                    meta: Meta {
                        id,
                        name: T::NAME,
                        fingerprint,
                        input_type: type_name::<T>(),
                        output_type: type_name::<T::Output>(),
                        future: part,
                        submitted,
                        encode: encode.mul_f64(k as f64 / n as f64),
                        bytes_out: payload.len() as u64,
                        timeout: None,
                        retries: 0,
                        items: k as u32,
                        from_map: true,
                        files: Vec::new(),
                        bulk: None,
                        span: tracing::debug_span!(
                            target: "procpool::task",
                            "chunk",
                            task.id = id,
                            task.name = T::NAME,
                            items = k,
                            worker.id = tracing::field::Empty,
                            worker.pid = tracing::field::Empty,
                            bytes.out = payload.len() as u64,
                        ),
                    },
                    payload: Arc::new(payload),
                }]
            })
            .collect();
        match dispatch::enqueue_all(&self.shared, batches) {
            Ok(()) => Ok(Sent::Chunk(sink)),
            Err(Refusal::Shutdown) => Err(TaskError::Shutdown),
            Err(Refusal::Broken(reason)) => Err(TaskError::Broken { reason }),
        }
    }
}

executor_by_inherent_methods!(ProcessPool);

impl Drop for ProcessPool {
    fn drop(&mut self) {
        if self.owns {
            shutdown::shutdown(&self.shared, Shutdown::Wait);
        }
    }
}
