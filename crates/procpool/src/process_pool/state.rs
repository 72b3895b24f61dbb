//! The pool's shared state: [`Shared`] (settings, the one lock over
//! [`PoolState`], its condvars, the counters) and the worker slots.
//!
//! # Worker slots
//!
//! Each of the pool's `workers` slots holds one process at a time, moving
//! through
//!
//! ```text
//! Starting ──ready──▶ Ready ──max tasks──▶ Retiring
//!    ▲                  │                     │
//!    └──respawn── Dead ◀┴──────exit───────────┘
//! ```
//!
//! * `Starting`: a spawn request is queued to the spawner thread, or the
//!   process is greeting and running the initializer. Gets no work.
//! * `Ready`: gets work while it holds fewer than `prefetch` batches (as
//!   queued: `WorkerSlot::held`).
//! * `Retiring`: has taken `max_tasks_per_worker`; gets no more work and is
//!   asked to exit once its last task is done.
//! * `Dead`: the process is reaped. The waiter thread that saw it exit
//!   settles its tasks (the one running fails, the prefetched ones go back
//!   to the front of the queue) and asks for a replacement unless the pool
//!   is stopping or broken (see `settle`).
//!
//! Every process has a `generation`, unique within the pool. Messages carry
//! it, and anything stamped with an old generation is dropped.
//!
//! # Locking
//!
//! All of [`PoolState`] is under `Shared::state`. Futures are resolved only
//! after that lock is released (their callbacks may call back into the
//! pool). `changed` is signalled when work finishes while the pool stops,
//! when a slot changes status, and when the phase changes. The other locks
//! of [`Shared`] are leaves: nothing else is taken while one is held.

#[cfg(feature = "remote")]
use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use procpool_wire::message::ToWorker;
use procpool_wire::{Generation, Payload, TaskId};

#[cfg(feature = "remote")]
use super::attach::AttachPoint;
use super::builder::Config;
use super::cancel::CancelWait;
use super::cancel::PoolControl;
use super::item::Meta;
use super::known::KnownTasks;
use super::outbox::{Conn, post_message};
use super::pace::{Pace, depth};
use super::procs::Processes;
use super::queue::TaskQueue;
use super::spawn::StartError;
use crate::Shutdown;
use crate::callbacks::CompletionThread;
use crate::cost::StatsCollector;
use crate::error::Exit;
use crate::future::Control;
use crate::idmap::IdMap;
use crate::link::frames::reusable;
use crate::link::stream::Stream;
use crate::lock::lock;

/// Where the pool is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepting work.
    Running,
    /// `shutdown(Wait)`: refusing new work, finishing the queue.
    Draining,
    /// Workers are being told to exit (or killed); nothing is dispatched.
    Stopping,
    /// Every worker is gone.
    Stopped,
}

/// Where a slot's process is in its life; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotStatus {
    /// Being spawned, greeted, initialized. Gets no work.
    Starting,
    /// Gets work while it holds fewer than `prefetch` batches (as queued:
    /// `WorkerSlot::held`).
    Ready,
    /// Took its share (`max_tasks_per_worker`, `max_worker_memory`): no
    /// more work; asked to exit once idle.
    Retiring,
    /// No process (reaped, or a vacant slot waiting for a worker to join).
    Dead,
}

/// Why the pool killed (or asked to exit) a worker: decides how its
/// running task's future ends and whether the death counts as a crash.
#[derive(Debug, Clone)]
pub(crate) enum KillReason {
    /// Task `id` ran past its timeout `after` (the clock).
    TimedOut { id: TaskId, after: Duration },
    /// `TaskFuture::kill` of the running task.
    Killed { id: TaskId },
    /// The worker broke the protocol (the reader).
    Protocol(String),
    /// A TCP worker went silent.
    Lost,
    /// Asked to exit after its last task (recycling).
    Retire,
    /// The pool is shutting down.
    Shutdown,
    /// The pool broke, for this reason.
    Broken(String),
    /// It never became ready (spawn, handshake or initializer failed).
    StartFailed,
}

/// A task a worker holds (prefetched or running). Lives in its slot's
/// `inflight`, under `Shared::state`: created by `dispatch::pump`, removed
/// by the reader's handlers (finished, withdrawn) or by `settle`.
pub(crate) struct Assigned {
    /// What the parent knows of the task (its future among it).
    pub meta: Meta,
    /// Its encoded input, kept to re-queue it if the worker dies first.
    pub payload: Payload,
    /// The batch (one `Run` frame) it was sent in.
    pub batch: u64,
    /// The batch it was queued in: `batch`, unless dispatch sent it in
    /// one frame with other tasks queued alone (`dispatch::pump`), which
    /// still count one each toward the prefetch and go back to the queue
    /// alone if the worker dies.
    pub queued_as: u64,
    /// When it was sent (its parent-side queue time ends here).
    pub assigned_at: Instant,
    /// The worker has begun it (set by the reader).
    pub started: bool,
    /// Assignment order, to re-queue prefetched tasks in order.
    pub seq: u64,
}

/// One worker slot; see the module docs for the status machine. Every
/// field is under `Shared::state`. The spawner, life and waiter threads of
/// the slot's current process write its life fields (`status`, `pid`,
/// `conn`, `link`, `remote`, `start_error`); dispatch and the reader's
/// handlers write its task fields; `settle` resets it when the process is
/// gone. A thread that finds `generation` changed leaves the slot alone.
pub(crate) struct WorkerSlot {
    /// See [`SlotStatus`].
    pub status: SlotStatus,
    /// The current process's generation (see `PoolState::claim_slot`).
    pub generation: Generation,
    /// Its pid, once spawned (or the pid an attached worker reported).
    pub pid: Option<u32>,
    /// Its connection's writing end, once it is ready.
    pub conn: Option<Arc<Conn>>,
    /// Tasks sent to this process and not finished.
    pub inflight: IdMap<TaskId, Assigned>,
    /// Unfinished tasks per batch sent, in order; its size is the prefetch
    /// count. Within a chunk the worker announces only the first task: the
    /// result of one task means the next in its batch has begun.
    pub batches: IdMap<u64, VecDeque<TaskId>>,
    /// Batches as queued that it holds (a frame of tasks queued alone
    /// counts one per task): what `prefetch` bounds.
    pub held: usize,
    /// Tasks this process has been given (for `max_tasks_per_worker`).
    pub taken: u64,
    /// How long an input of this slot's last `map` chunks (or chunksize-1
    /// inputs) took: how deep its worker may be fed more of that task
    /// ([`depth`]).
    pub pace: Option<Pace>,
    /// The task it runs now, and since when (for the timeout clock).
    pub running: Option<(TaskId, Instant)>,
    /// When the worker last began or ended a task (or answered a cancel),
    /// or was given work while it held none. A worker that holds tasks and
    /// runs none must begin one within `start_timeout` of this (the clock
    /// checks), or it is treated as hung.
    pub heard: Instant,
    /// Why the pool is ending this process, if it is (the first reason
    /// wins; `settle` reads it to decide its tasks' fate).
    pub kill: Option<KillReason>,
    /// Why the process did not become ready (read by `build()` and by
    /// `settle`'s log line).
    pub start_error: Option<StartError>,
    /// How the last process of this slot ended (read by `build()`).
    pub last_exit: Option<Exit>,
    /// The SIGKILL deadline after a SIGTERM.
    pub kill_at: Option<Instant>,
    /// Tasks the current process has finished.
    pub finished: u64,
    /// Consecutive processes of this slot that died before finishing a
    /// task (start-up failures included). Other slots' progress does not
    /// reset it, so one slot that can never start breaks the pool.
    pub failures: u32,
    /// A second handle on the worker's connection.
    pub link: Option<Stream>,
    /// The worker is not a process the pool may signal (it dialed in over
    /// TCP): it is stopped by closing `link`.
    pub remote: bool,
}

/// How to stop one worker.
pub(crate) enum Target {
    /// A process (group) the pool started, or a local attached process.
    Group(u32),
    /// A remote worker: closing its connection makes it exit, and ends the
    /// pool's reader at once.
    Link(Stream),
}

impl WorkerSlot {
    pub(crate) fn new() -> WorkerSlot {
        WorkerSlot {
            status: SlotStatus::Starting,
            generation: 0,
            pid: None,
            conn: None,
            inflight: IdMap::default(),
            batches: IdMap::default(),
            held: 0,
            taken: 0,
            pace: None,
            running: None,
            heard: Instant::now(),
            kill: None,
            start_error: None,
            last_exit: None,
            kill_at: None,
            finished: 0,
            failures: 0,
            link: None,
            remote: false,
        }
    }

    /// How to stop this slot's worker, if it has one.
    pub(crate) fn target(&self) -> Option<Target> {
        if self.remote {
            let link = self.link.as_ref()?.try_clone().ok()?;
            Some(Target::Link(link))
        } else {
            self.pid.map(Target::Group)
        }
    }

    /// Marks the first unfinished task of `batch` as begun (the worker runs
    /// a chunk's tasks back to back) and returns it.
    pub(crate) fn begin_next(&mut self, batch: u64) -> Option<&Assigned> {
        self.begin_next_at(batch, Instant::now())
    }

    /// [`begin_next`](Self::begin_next), at `now` (read once for a run of
    /// notes).
    pub(crate) fn begin_next_at(&mut self, batch: u64, now: Instant) -> Option<&Assigned> {
        let next = *self.batches.get(&batch)?.front()?;
        let a = self.inflight.get_mut(&next)?;
        if a.started {
            return None;
        }
        a.started = true;
        self.running = Some((next, now));
        self.heard = now;
        Some(a)
    }

    /// Removes a task that ended (or was withdrawn) from this slot.
    pub(crate) fn take_task(&mut self, id: TaskId) -> Option<Assigned> {
        self.take_task_at(id, Instant::now())
    }

    /// [`take_task`](Self::take_task), at `now` (read once for a run of
    /// notes).
    pub(crate) fn take_task_at(&mut self, id: TaskId, now: Instant) -> Option<Assigned> {
        let a = self.inflight.remove(&id)?;
        if a.meta.from_map
            && let Some((running, since)) = self.running
            && running == id
        {
            // A map's chunk (or input) it ran from start to end.
            let took = crate::stamp::nanos(now.saturating_duration_since(since));
            Pace::observe(&mut self.pace, a.meta.fingerprint, took, a.meta.items);
        }
        if a.queued_as != a.batch {
            // Queued alone, sent with others: it was one batch of its own.
            self.held = self.held.saturating_sub(1);
        }
        if let Some(ids) = self.batches.get_mut(&a.batch) {
            if let Some(pos) = ids.iter().position(|&x| x == id) {
                ids.remove(pos);
            }
            if ids.is_empty() {
                self.batches.remove(&a.batch);
                if a.queued_as == a.batch {
                    self.held = self.held.saturating_sub(1);
                }
            }
        }
        if self.running.is_some_and(|(r, _)| r == id) {
            self.running = None;
        }
        self.heard = now;
        Some(a)
    }

    pub(crate) fn alive(&self) -> bool {
        self.status != SlotStatus::Dead
    }

    /// How many batches this worker may hold once given `next`:
    /// `prefetch`, or, if `next` is a `map`'s chunk or input (its task's
    /// fingerprint and inputs: [`TaskQueue::map_front`]) of the task this
    /// worker measured last and it holds nothing but such work, its
    /// [`depth`].
    pub(crate) fn limit(&self, cfg: &Config, next: Option<(u64, u32)>, now: Instant) -> usize {
        let Some((fingerprint, items)) = next else {
            return cfg.prefetch;
        };
        let Some(pace) = self.pace.filter(|p| p.fingerprint == fingerprint) else {
            return cfg.prefetch;
        };
        let deep = depth(
            cfg.prefetch,
            cfg.prefetch_time,
            pace.input_ns.saturating_mul(u64::from(items.max(1))),
            self.running
                .map(|(_, since)| now.saturating_duration_since(since)),
        );
        if deep > cfg.prefetch && self.inflight.values().all(|a| a.meta.from_map) {
            deep
        } else {
            cfg.prefetch
        }
    }
}

/// Everything that changes, under one lock (`Shared::state`). See the
/// module docs.
pub(crate) struct PoolState {
    /// Written by `shutdown` (and read everywhere).
    pub phase: Phase,
    /// Set once; the pool then refuses work and fails what is queued.
    pub broken: Option<String>,
    /// Batches not yet sent to a worker, in order, indexed by task id (see
    /// `queue.rs`). Pushed by `enqueue`,
    /// re-queued at the front by `settle` and the withdrawn handler, popped
    /// by `pump`, drained by `shutdown` and `break_pool`.
    pub queue: TaskQueue,
    /// One per worker; fixed in number.
    pub slots: Vec<WorkerSlot>,
    /// Unexpected deaths since the last task finished anywhere (the
    /// policy's pool streak): raised by `settle` and failed launches, reset
    /// by a finished task.
    pub crash_streak: u32,
    /// `cancel()` calls waiting for a worker's answer.
    pub cancels: IdMap<TaskId, Arc<CancelWait>>,
    /// The next process's generation (`claim_slot`).
    pub next_generation: Generation,
    /// The next batch's id (`enqueue`, re-queueing).
    pub next_batch: u64,
    /// Assignment counter (`pump`), for `Assigned::seq`.
    pub seq: u64,
    /// `build()` is still waiting: failures end the build, not respawn.
    pub building: bool,
    /// The strongest mode a `shutdown` call asked for, once one has
    /// started (written by `shutdown` only). A stronger later call raises
    /// it, and the thread stopping the pool follows it at once.
    pub stop_mode: Option<Shutdown>,
    /// Test hook: the next `settle` panics (see
    /// `ProcessPool::debug_inject_supervisor_panic`).
    pub inject_panic: bool,
    /// The most batches one worker has held at once (see
    /// `ProcessPool::debug_most_held`).
    pub most_held: usize,
    /// Launcher runs (`srun`, `mpirun`) by ticket: workers asked for and
    /// workers that joined.
    #[cfg(feature = "remote")]
    pub launches: HashMap<u64, LaunchRecord>,
    /// Why `build()` must fail (a launcher exited before its workers
    /// joined).
    #[cfg(feature = "remote")]
    pub launch_failure: Option<String>,
}

/// One run of a launcher program (in `PoolState::launches`).
#[cfg(feature = "remote")]
pub(crate) struct LaunchRecord {
    /// Workers it was asked to start.
    pub expected: usize,
    /// Workers with its ticket that joined (`adopt`).
    pub joined: usize,
}

/// Work for the spawner thread.
pub(crate) enum SpawnJob {
    /// Start a process for this slot.
    Worker(usize),
    /// Run the launcher for this many workers.
    #[cfg(feature = "remote")]
    Launch { workers: usize, first: bool },
}

impl PoolState {
    /// Gives slot `idx` to a new process: a fresh generation, status
    /// `Starting`, its counters reset. Returns the generation.
    pub(crate) fn claim_slot(&mut self, idx: usize) -> Generation {
        let g = self.next_generation;
        self.next_generation += 1;
        let slot = &mut self.slots[idx];
        slot.generation = g;
        slot.status = SlotStatus::Starting;
        slot.kill = None;
        slot.start_error = None;
        slot.taken = 0;
        slot.finished = 0;
        g
    }

    /// Asks a retiring worker with nothing left to exit.
    pub(crate) fn retire_if_idle(&mut self, idx: usize) {
        let slot = &mut self.slots[idx];
        if slot.status == SlotStatus::Retiring && slot.inflight.is_empty() && slot.kill.is_none() {
            slot.kill = Some(KillReason::Retire);
            if let Some(conn) = &slot.conn {
                post_message(
                    conn,
                    &ToWorker::Shutdown {
                        drop_pending: false,
                    },
                );
                let conn = conn.clone();
                // The frame is tiny; writing it under the lock is fine and
                // keeps it ordered after any earlier frame.
                conn.flush();
            }
        }
    }

    pub(crate) fn idle(&self) -> bool {
        self.queue.is_empty() && self.slots.iter().all(|s| s.inflight.is_empty())
    }
}

/// The pool's shared core: one per pool, held by the `ProcessPool` and by
/// every pool thread.
pub(crate) struct Shared {
    /// The settings. Set once.
    pub cfg: Config,
    /// All that changes; see [`PoolState`].
    pub state: Mutex<PoolState>,
    /// Signalled (with `state`) when a slot changes status, the phase
    /// changes, or work finishes while the pool stops. Waited on by
    /// `build()`, `shutdown` and `wait_for_workers`.
    pub changed: Condvar,
    /// Wakes the timeout clock (with `state`): a timed task began, or the
    /// pool stops.
    pub clock: Condvar,
    /// The next task id (`submit`; atomic, no lock).
    pub next_id: AtomicU64,
    /// Totals over finished tasks (its own lock).
    pub stats: StatsCollector,
    /// The spawner's queue (leaf lock). Taken out (`None`) at shutdown,
    /// which ends the spawner.
    pub spawn_tx: Mutex<Option<mpsc::Sender<SpawnJob>>>,
    /// The pool's long-lived threads (leaf lock), joined by `shutdown`.
    pub threads: Mutex<Vec<JoinHandle<()>>>,
    /// `cancel()`/`kill()` for this pool's futures. Set once.
    pub control: Arc<dyn Control>,
    /// A weak handle on this `Shared`, for hooks that must not keep the
    /// pool alive (a connection's stall hook). Written once.
    pub me: Weak<Shared>,
    /// Starting, signalling and reaping processes (the OS, or a test's
    /// fake). Set once.
    pub procs: Arc<dyn Processes>,
    /// Where workers dial in (every launcher but a `Spawn` over local
    /// sockets).
    #[cfg(feature = "remote")]
    pub attach: Option<AttachPoint>,
    /// Launcher processes still running (ticket, pid), stopped at
    /// shutdown (leaf lock; written by the spawner and launcher watchers).
    #[cfg(feature = "remote")]
    pub launched: Mutex<Vec<(u64, u32)>>,
    /// Input buffers whose tasks are done, for the next `submit` or map
    /// chunk to encode into. Leaf lock: written by the reader, taken by
    /// the submitting thread.
    pub spare_input: Mutex<SpareInputs>,
    /// The tasks the workers announced in their hellos.
    pub known: KnownTasks,
    /// Where done callbacks of futures completed on the pool's own threads
    /// run (see `callbacks.rs`); closed by shutdown.
    pub callbacks: Arc<CompletionThread>,
}

impl Shared {
    /// The shared core of a new pool, before any thread or worker starts.
    /// `spawned`: the pool starts its workers (else slots are vacant until
    /// workers join); `waits`: `build()` waits for them.
    pub(crate) fn new(
        cfg: Config,
        #[cfg(feature = "remote")] attach: Option<AttachPoint>,
        spawned: bool,
        waits: bool,
        procs: Arc<dyn Processes>,
    ) -> Arc<Shared> {
        let workers = cfg.workers;
        Arc::new_cyclic(|me| Shared {
            cfg,
            state: Mutex::new(PoolState {
                phase: Phase::Running,
                broken: None,
                queue: TaskQueue::default(),
                slots: (0..workers)
                    .map(|_| {
                        let mut s = WorkerSlot::new();
                        if !spawned {
                            s.status = SlotStatus::Dead; // vacant until a worker joins
                        }
                        s
                    })
                    .collect(),
                crash_streak: 0,
                cancels: IdMap::default(),
                next_generation: 1,
                next_batch: 1,
                seq: 0,
                building: waits,
                stop_mode: None,
                inject_panic: false,
                most_held: 0,
                #[cfg(feature = "remote")]
                launches: HashMap::new(),
                #[cfg(feature = "remote")]
                launch_failure: None,
            }),
            spare_input: Mutex::new(SpareInputs::default()),
            known: Default::default(),
            changed: Condvar::new(),
            clock: Condvar::new(),
            next_id: AtomicU64::new(1),
            stats: StatsCollector::new(),
            spawn_tx: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
            control: Arc::new(PoolControl(me.clone())),
            me: me.clone(),
            #[cfg(feature = "remote")]
            attach,
            procs,
            #[cfg(feature = "remote")]
            launched: Mutex::new(Vec::new()),
            callbacks: CompletionThread::new(),
        })
    }

    /// Stops one worker: `sig` to a process group the pool may signal,
    /// or closing a remote worker's connection.
    pub(crate) fn signal(&self, target: &Target, sig: Signal) {
        match target {
            Target::Group(pid) => self.procs.signal(*pid, sig),
            Target::Link(s) => s.shutdown(),
        }
    }

    pub(crate) fn control(&self) -> Arc<dyn Control> {
        self.control.clone()
    }

    /// A buffer to encode an input into: a recycled large one if there is.
    pub(crate) fn input_buffer(&self) -> Vec<u8> {
        let mut buf = lock(&self.spare_input).large.take().unwrap_or_default();
        buf.clear();
        buf
    }

    /// A buffer to pack a map chunk's inputs into, with room for `room`
    /// bytes: a recycled small one if there is.
    pub(crate) fn chunk_buffer(&self, room: usize) -> Vec<u8> {
        let mut buf = lock(&self.spare_input).small.pop().unwrap_or_default();
        buf.clear();
        buf.reserve(room);
        buf
    }

    /// A finished task's input buffer, kept if no one else holds it (its
    /// frame has been written) and [`SpareInputs::keep`] wants it.
    pub(crate) fn recycle_input(&self, payload: Payload) {
        if let Some(buf) = SpareInputs::unshared(payload) {
            lock(&self.spare_input).keep(buf);
        }
    }
}

/// Input buffers kept for reuse ([`Shared::recycle_input`]).
///
/// The small ones are a map's chunk buffers going round: made on the
/// thread that submits, done on a reader thread. Freed there, each one
/// (a few KiB: past the allocator's per-thread cache) took the lock of
/// the submitting thread's heap arena, which that thread was taking for
/// the next chunk's buffer: ~1 500 lock waits and wakes (system calls) per
/// million inputs of a chunksize-256 `map`.
#[derive(Default)]
pub(crate) struct SpareInputs {
    /// The largest recent one of 256 KiB to 64 MiB (a fresh one costs a
    /// page fault per 4 KiB).
    pub large: Option<Vec<u8>>,
    /// Up to [`SMALL`](Self::SMALL) of at most
    /// [`SMALL_MAX`](Self::SMALL_MAX) bytes.
    pub small: Vec<Vec<u8>>,
}

impl SpareInputs {
    /// How many small buffers are kept: a map's window of chunks in flight
    /// returns them about as fast as it takes them.
    pub const SMALL: usize = 16;
    /// The largest small buffer kept (so at most 1 MiB is held).
    pub const SMALL_MAX: usize = 64 * 1024;

    /// `payload`'s buffer if no one else holds it and it is one to keep
    /// by its size (checked before the `Arc` is taken apart).
    fn unshared(payload: Payload) -> Option<Vec<u8>> {
        if payload.capacity() <= Self::SMALL_MAX {
            Arc::try_unwrap(payload).ok()
        } else {
            reusable(payload)
        }
    }

    /// Keeps `buf`: a small one while fewer than [`SMALL`](Self::SMALL)
    /// are kept, a large one if it is larger than the one kept.
    fn keep(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= Self::SMALL_MAX {
            if self.small.len() < Self::SMALL {
                self.small.push(buf);
            }
        } else if self
            .large
            .as_ref()
            .is_none_or(|s| s.capacity() < buf.capacity())
        {
            self.large = Some(buf);
        }
    }
}

pub(crate) fn worker_pids(shared: &Shared) -> Vec<u32> {
    lock(&shared.state)
        .slots
        .iter()
        .filter_map(|s| s.pid)
        .collect()
}

/// Whether the pool has stopped.
#[cfg(feature = "remote")]
pub(crate) fn stopped(shared: &Shared) -> bool {
    lock(&shared.state).phase == Phase::Stopped
}

/// Waits until at least `n` slots are ready (`Duration::MAX`: no limit).
pub(crate) fn wait_ready(shared: &Shared, n: usize, timeout: Duration) -> bool {
    let deadline = crate::deadline::after(timeout);
    let mut st = lock(&shared.state);
    loop {
        let ready = st
            .slots
            .iter()
            .filter(|s| s.status == SlotStatus::Ready)
            .count();
        if ready >= n {
            return true;
        }
        st = match crate::deadline::left(deadline) {
            Some(left) if left.is_zero() => return false,
            Some(left) => {
                shared
                    .changed
                    .wait_timeout(st, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => shared.changed.wait(st).unwrap_or_else(|p| p.into_inner()),
        };
    }
}

pub(crate) fn inject_panic(shared: &Shared) {
    lock(&shared.state).inject_panic = true;
}

pub(crate) fn broken(shared: &Shared) -> Option<String> {
    lock(&shared.state).broken.clone()
}

#[cfg(test)]
mod spare_tests {
    use super::*;

    fn payload(capacity: usize) -> Payload {
        Arc::new(Vec::with_capacity(capacity))
    }

    #[test]
    fn small_buffers_are_kept_up_to_a_bound_and_large_ones_by_size() {
        let mut spare = SpareInputs::default();
        for _ in 0..SpareInputs::SMALL + 4 {
            spare.keep(SpareInputs::unshared(payload(4096)).unwrap());
        }
        assert_eq!(spare.small.len(), SpareInputs::SMALL);
        assert!(spare.small.iter().all(|b| b.capacity() >= 4096));
        // Between the small and the large sizes: neither.
        assert!(SpareInputs::unshared(payload(100 * 1024)).is_none());
        spare.keep(SpareInputs::unshared(payload(1 << 20)).unwrap());
        spare.keep(SpareInputs::unshared(payload(512 * 1024)).unwrap());
        assert_eq!(spare.large.as_ref().map(Vec::capacity), Some(1 << 20));
        assert_eq!(spare.small.len(), SpareInputs::SMALL);
    }

    #[test]
    fn a_buffer_someone_else_holds_is_not_kept() {
        let p = payload(4096);
        let also = p.clone();
        assert!(SpareInputs::unshared(p).is_none());
        assert_eq!(also.capacity(), 4096, "the other holder still has it");
    }
}
