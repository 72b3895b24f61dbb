//! The pool's state and the life of its workers.
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
//! * `Ready`: gets work while it holds fewer than `prefetch` batches.
//! * `Retiring`: has taken `max_tasks_per_worker`; gets no more work and is
//!   asked to exit once its last task is done.
//! * `Dead`: the process is reaped. The waiter thread that saw it exit
//!   settles its tasks (the one running fails, the prefetched ones go back
//!   to the front of the queue) and asks for a replacement unless the pool
//!   is stopping or broken.
//!
//! Every process has a `generation`, unique within the pool. Messages carry
//! it, and anything stamped with an old generation is dropped.
//!
//! # Threads
//!
//! * the **spawner** (one, lives as long as the pool) forks every worker:
//!   `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, so it
//!   must be long-lived;
//! * per process, a **life** thread (handshake, initializer, then reading
//!   the socket: see `dispatch::read_loop`) and a **waiter** thread
//!   (`waitpid`, then the settling above). Death is detected by `waitpid`,
//!   not by EOF, so a grandchild holding the socket cannot hide it;
//! * the **clock** enforces task timeouts: SIGTERM to the worker's process
//!   group, then SIGKILL after a grace period.
//!
//! # Locking
//!
//! All of [`PoolState`] is under `Shared::state`. Futures are resolved only
//! after that lock is released (their callbacks may call back into the
//! pool). `changed` is signalled when work finishes while the pool stops,
//! when a slot changes status, and when the phase changes.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use procpool_wire::message::ToWorker;
use procpool_wire::{Generation, Payload, TaskId};

use super::attach::{AttachPoint, Dialed};
use super::builder::Config;
use super::dispatch::{
    self, Batch, CancelWait, Conn, Item, Meta, PoolControl, flush_all, lock, post_message,
};
use super::launch::{LaunchRequest, Launcher, Transport};
use super::spawn::{self, StartError};
use super::transport::Stream;
use crate::Shutdown;
use crate::cost::StatsCollector;
use crate::error::{BuildError, Exit, TaskError};
use crate::future::{Control, ResolveBytes};
use crate::idmap::IdMap;

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

/// See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotStatus {
    Starting,
    Ready,
    Retiring,
    Dead,
}

/// Why the pool killed (or asked to exit) a worker: decides how its
/// running task's future ends and whether the death counts as a crash.
#[derive(Debug, Clone)]
pub(crate) enum KillReason {
    TimedOut {
        id: TaskId,
        after: Duration,
    },
    /// `TaskFuture::kill` of the running task.
    Killed {
        id: TaskId,
    },
    Protocol(String),
    /// A TCP worker went silent.
    Lost,
    Retire,
    Shutdown,
    Broken(String),
    StartFailed,
}

/// A task a worker holds (prefetched or running).
pub(crate) struct Assigned {
    pub meta: Meta,
    pub payload: Payload,
    pub batch: u64,
    pub assigned_at: Instant,
    pub started: bool,
    /// Assignment order, to re-queue prefetched tasks in order.
    pub seq: u64,
}

/// One worker slot; see the module docs for the status machine.
pub(crate) struct Slot {
    pub status: SlotStatus,
    pub generation: Generation,
    pub pid: Option<u32>,
    pub conn: Option<Arc<Conn>>,
    /// Tasks sent to this process and not finished.
    pub inflight: IdMap<TaskId, Assigned>,
    /// Unfinished tasks per batch sent, in order; its size is the prefetch
    /// count. Within a chunk the worker announces only the first task: the
    /// result of one task means the next in its batch has begun.
    pub batches: IdMap<u64, VecDeque<TaskId>>,
    /// Tasks this process has been given (for `max_tasks_per_worker`).
    pub taken: u64,
    /// The task it runs now, and since when (for the timeout clock).
    pub running: Option<(TaskId, Instant)>,
    pub kill: Option<KillReason>,
    pub start_error: Option<StartError>,
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

impl Target {
    pub(crate) fn signal(&self, sig: Signal) {
        match self {
            Target::Group(pid) => kill_group(*pid, sig),
            Target::Link(s) => s.shutdown(),
        }
    }
}

impl Slot {
    fn new() -> Slot {
        Slot {
            status: SlotStatus::Starting,
            generation: 0,
            pid: None,
            conn: None,
            inflight: IdMap::default(),
            batches: IdMap::default(),
            taken: 0,
            running: None,
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
        let next = *self.batches.get(&batch)?.front()?;
        let a = self.inflight.get_mut(&next)?;
        if a.started {
            return None;
        }
        a.started = true;
        self.running = Some((next, Instant::now()));
        Some(a)
    }

    /// Removes a task that ended (or was withdrawn) from this slot.
    pub(crate) fn take_task(&mut self, id: TaskId) -> Option<Assigned> {
        let a = self.inflight.remove(&id)?;
        if let Some(ids) = self.batches.get_mut(&a.batch) {
            if let Some(pos) = ids.iter().position(|&x| x == id) {
                ids.remove(pos);
            }
            if ids.is_empty() {
                self.batches.remove(&a.batch);
            }
        }
        if self.running.is_some_and(|(r, _)| r == id) {
            self.running = None;
        }
        Some(a)
    }

    fn alive(&self) -> bool {
        self.status != SlotStatus::Dead
    }
}

/// Everything that changes, under one lock. See the module docs.
pub(crate) struct PoolState {
    pub phase: Phase,
    /// Set once; the pool then refuses work and fails what is queued.
    pub broken: Option<String>,
    pub queue: VecDeque<Batch>,
    pub slots: Vec<Slot>,
    /// Unexpected deaths since the last task finished.
    pub crash_streak: u32,
    /// `cancel()` calls waiting for a worker's answer.
    pub cancels: IdMap<TaskId, Arc<CancelWait>>,
    pub next_generation: Generation,
    pub next_batch: u64,
    pub seq: u64,
    /// `build()` is still waiting: failures end the build, not respawn.
    pub building: bool,
    /// Some thread is running `shutdown`.
    pub shutting_down: bool,
    /// Test hook: the next `settle` panics (see
    /// `ProcessPool::debug_inject_supervisor_panic`).
    pub inject_panic: bool,
    /// Launcher runs (`srun`, `mpirun`) by ticket: workers asked for and
    /// workers that joined.
    pub launches: HashMap<u64, LaunchRecord>,
    /// Why `build()` must fail (a launcher exited before its workers
    /// joined).
    pub launch_failure: Option<String>,
}

/// One run of a launcher program.
pub(crate) struct LaunchRecord {
    pub expected: usize,
    pub joined: usize,
}

/// Work for the spawner thread.
pub(crate) enum SpawnJob {
    /// Start a process for this slot.
    Worker(usize),
    /// Run the launcher for this many workers.
    Launch { workers: usize, first: bool },
}

impl PoolState {
    /// Gives slot `idx` to a new process: a fresh generation, status
    /// `Starting`, its counters reset. Returns the generation.
    fn claim_slot(&mut self, idx: usize) -> Generation {
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

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.slots.iter().all(|s| s.inflight.is_empty())
    }
}

/// The pool's shared core.
pub(crate) struct Shared {
    pub cfg: Config,
    pub state: Mutex<PoolState>,
    pub changed: Condvar,
    /// Wakes the timeout clock.
    pub clock: Condvar,
    pub next_id: AtomicU64,
    pub stats: StatsCollector,
    spawn_tx: Mutex<Option<mpsc::Sender<SpawnJob>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    control: Arc<dyn Control>,
    /// Where workers dial in (every launcher but a `Spawn` over local
    /// sockets).
    pub attach: Option<AttachPoint>,
    /// Launcher processes still running (ticket, pid), stopped at
    /// shutdown.
    launched: Mutex<Vec<(u64, u32)>>,
    /// A large input buffer whose task is done, for the next `submit` to
    /// encode into (a fresh one costs a page fault per 4 KiB).
    spare_input: Mutex<Option<Vec<u8>>>,
}

impl Shared {
    pub(crate) fn control(&self) -> Arc<dyn Control> {
        self.control.clone()
    }

    /// A buffer to encode an input into: a recycled large one if there is.
    pub(crate) fn input_buffer(&self) -> Vec<u8> {
        let mut buf = lock(&self.spare_input).take().unwrap_or_default();
        buf.clear();
        buf
    }

    /// A finished task's input buffer, kept if it is large and no longer
    /// shared (its frame has been written).
    pub(crate) fn recycle_input(&self, payload: Payload) {
        if let Some(buf) = super::reusable(payload) {
            let mut spare = lock(&self.spare_input);
            if spare.as_ref().is_none_or(|s| s.capacity() < buf.capacity()) {
                *spare = Some(buf);
            }
        }
    }
}

/// Sends `sig` to a worker's process group (the worker and what it forked);
/// an attached worker that leads no group gets it alone.
pub(crate) fn kill_group(pid: u32, sig: Signal) {
    let pid = Pid::from_raw(pid as i32);
    if nix::sys::signal::killpg(pid, sig) == Err(nix::errno::Errno::ESRCH) {
        let _ = nix::sys::signal::kill(pid, sig);
    }
}

fn exit_of(status: std::io::Result<std::process::ExitStatus>) -> Exit {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            _ => Exit::Unknown,
        },
        Err(_) => Exit::Unknown,
    }
}

/// Starts the pool's threads and workers; returns once all are ready.
pub(crate) fn start(cfg: Config) -> Result<Arc<Shared>, BuildError> {
    let workers = cfg.workers;
    let dials_in = cfg.launcher.dials_in() || cfg.transport == Transport::Tcp;
    let attach = if dials_in {
        Some(AttachPoint::open(&cfg).map_err(|source| BuildError::Spawn {
            worker: 0,
            program: "<listening socket>".into(),
            source,
        })?)
    } else {
        None
    };
    // Spawned workers are started here; all others join by dialing in,
    // into vacant slots.
    let spawned = matches!(cfg.launcher, Launcher::Spawn);
    let waits = !matches!(cfg.launcher, Launcher::Attach | Launcher::External);
    let shared = Arc::new_cyclic(|me| Shared {
        cfg,
        state: Mutex::new(PoolState {
            phase: Phase::Running,
            broken: None,
            queue: VecDeque::new(),
            slots: (0..workers)
                .map(|_| {
                    let mut s = Slot::new();
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
            shutting_down: false,
            inject_panic: false,
            launches: HashMap::new(),
            launch_failure: None,
        }),
        spare_input: Mutex::new(None),
        changed: Condvar::new(),
        clock: Condvar::new(),
        next_id: AtomicU64::new(1),
        stats: StatsCollector::new(),
        spawn_tx: Mutex::new(None),
        threads: Mutex::new(Vec::new()),
        control: Arc::new(PoolControl(me.clone())),
        attach,
        launched: Mutex::new(Vec::new()),
    });
    let (tx, rx) = mpsc::channel::<SpawnJob>();
    *lock(&shared.spawn_tx) = Some(tx.clone());
    let s1 = shared.clone();
    let spawner = std::thread::Builder::new()
        .name("procpool-spawner".into())
        .spawn(move || {
            let s = s1.clone();
            guarded(&s1, "spawner", None, move || spawner_main(&s, rx));
        });
    let s2 = Arc::downgrade(&shared);
    let clock = std::thread::Builder::new()
        .name("procpool-clock".into())
        .spawn(move || clock_main(&s2));
    let s3 = shared.clone();
    let accept = dials_in.then(|| {
        std::thread::Builder::new()
            .name("procpool-attach-accept".into())
            .spawn(move || super::attach::accept_loop(&s3))
    });
    let mut started = vec![spawner, clock];
    started.extend(accept);
    let mut failed = None;
    for t in started {
        match t {
            Ok(h) => lock(&shared.threads).push(h),
            Err(e) => failed = Some(e),
        }
    }
    if let Some(source) = failed {
        shutdown(&shared, Shutdown::Kill);
        return Err(BuildError::Spawn {
            worker: 0,
            program: "<thread>".into(),
            source,
        });
    }
    match &shared.cfg.launcher {
        Launcher::Attach => return Ok(shared),
        Launcher::External => {
            if let Some(a) = &shared.attach {
                eprintln!(
                    "procpool: waiting for {workers} worker(s); start each with:\n  {}",
                    a.info.command_line(&shared.cfg.program)
                );
            }
            return Ok(shared);
        }
        Launcher::Command(_) => {
            let _ = tx.send(SpawnJob::Launch {
                workers,
                first: true,
            });
        }
        Launcher::Spawn => {
            for i in 0..workers {
                let _ = tx.send(SpawnJob::Worker(i));
            }
        }
    }
    drop(tx);
    let deadline = Instant::now() + shared.cfg.launch_timeout;
    // Wait until every slot is ready, or one failed.
    let failure = {
        let mut st = lock(&shared.state);
        loop {
            if spawned && let Some(i) = st.slots.iter().position(|s| s.status == SlotStatus::Dead) {
                let slot = &mut st.slots[i];
                break Some((i, slot.start_error.take(), slot.last_exit));
            }
            if !spawned {
                // Launched workers: any start failure, the launcher giving
                // up, or the launch timeout ends the build.
                if let Some(i) = st.slots.iter().position(|s| s.start_error.is_some()) {
                    let slot = &mut st.slots[i];
                    break Some((i, slot.start_error.take(), slot.last_exit));
                }
                if let Some(m) = st.launch_failure.take() {
                    break Some((0, Some(StartError::Handshake(m)), None));
                }
                if Instant::now() >= deadline {
                    let ready = st
                        .slots
                        .iter()
                        .filter(|s| s.status == SlotStatus::Ready)
                        .count();
                    break Some((
                        0,
                        Some(StartError::Handshake(format!(
                            "only {ready} of {workers} launched workers joined within {:?} \
                             (launch_timeout); can the nodes reach {}?",
                            shared.cfg.launch_timeout,
                            shared.attach.as_ref().map_or("", |a| a.info.address())
                        ))),
                        None,
                    ));
                }
            }
            if st.slots.iter().all(|s| s.status == SlotStatus::Ready) {
                st.building = false;
                break None;
            }
            st = shared
                .changed
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    };
    let Some((worker, error, exit)) = failure else {
        tracing::debug!(target: "procpool::pool", workers, "pool ready");
        return Ok(shared);
    };
    shutdown(&shared, Shutdown::Kill);
    Err(match error {
        Some(StartError::Spawn(source)) => BuildError::Spawn {
            worker,
            program: shared.cfg.program.clone(),
            source,
        },
        Some(StartError::Init(message)) => BuildError::Initializer {
            worker,
            name: shared
                .cfg
                .init
                .as_ref()
                .map(|i| i.name.to_owned())
                .unwrap_or_default(),
            message,
        },
        Some(StartError::Handshake(message)) => BuildError::Handshake { worker, message },
        None => BuildError::Handshake {
            worker,
            message: match exit {
                Some(e) => format!("the worker {e} during start-up"),
                None => "the worker ended during start-up".into(),
            },
        },
    })
}

fn spawner_main(shared: &Arc<Shared>, rx: mpsc::Receiver<SpawnJob>) {
    while let Ok(job) = rx.recv() {
        match job {
            SpawnJob::Worker(idx) => spawn_worker(shared, idx),
            SpawnJob::Launch { workers, first } => run_launcher(shared, workers, first),
        }
    }
}

fn spawn_worker(shared: &Arc<Shared>, idx: usize) {
    let generation = {
        let mut st = lock(&shared.state);
        if matches!(st.phase, Phase::Stopping | Phase::Stopped) || st.broken.is_some() {
            st.slots[idx].status = SlotStatus::Dead;
            drop(st);
            shared.changed.notify_all();
            return;
        }
        st.claim_slot(idx)
    };
    // Over TCP the worker dials back with a ticket that names this slot.
    let ticket = super::attach::random_ticket();
    let dial = shared.attach.as_ref().map(|a| spawn::DialBack {
        address: a.local_address(),
        token_hex: a.info.token_hex(),
        ticket,
        rx: a.expect(ticket),
    });
    match spawn::spawn_process(&shared.cfg, idx, dial) {
        Ok(spawned) => launch(shared, idx, generation, spawned),
        Err(e) => {
            if let Some(a) = &shared.attach {
                a.forget(ticket);
            }
            tracing::warn!(
                target: "procpool::pool",
                { worker.id = idx },
            "cannot start `{}`: {e}",
                shared.cfg.program.display()
            );
            {
                let mut st = lock(&shared.state);
                let slot = &mut st.slots[idx];
                slot.start_error = Some(StartError::Spawn(e));
                slot.kill = Some(KillReason::StartFailed);
            }
            settle(shared, idx, generation, None, Exit::Unknown);
        }
    }
}

/// Runs the launcher program for `workers` more workers; they join by
/// dialing in. A watcher thread notices a launcher that exits before all
/// its workers joined.
fn run_launcher(shared: &Arc<Shared>, workers: usize, first: bool) {
    let (Some(launcher), Some(point)) = (shared.cfg.launcher.command(), shared.attach.as_ref())
    else {
        return;
    };
    if matches!(lock(&shared.state).phase, Phase::Stopping | Phase::Stopped) {
        return;
    }
    let ticket = super::attach::random_ticket();
    let mut argv: Vec<std::ffi::OsString> = vec![shared.cfg.program.clone().into()];
    argv.extend(shared.cfg.command.args().iter().cloned());
    argv.extend(["--connect".into(), point.info.address().into()]);
    let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = shared.cfg.command.envs().to_vec();
    env.push((
        super::attach::ENV_TOKEN.into(),
        point.info.token_hex().into(),
    ));
    env.push((super::attach::ENV_TICKET.into(), ticket.to_string().into()));
    let mut cmd = launcher.command(&LaunchRequest {
        workers,
        first,
        argv: &argv,
        env: &env,
    });
    let name = launcher.name().to_owned();
    lock(&shared.state).launches.insert(
        ticket,
        LaunchRecord {
            expected: workers,
            joined: 0,
        },
    );
    let started = spawn::start_forwarded(&mut cmd);
    drop(cmd);
    let (mut child, out) = match started {
        Ok(pair) => pair,
        Err(e) => {
            let message = format!("cannot run the launcher `{name}`: {e}");
            launcher_gone(shared, ticket, message);
            return;
        }
    };
    let pid = child.id();
    tracing::info!(target: "procpool::pool", "{name} (pid {pid}) launching {workers} worker(s)");
    spawn::forward_output(out, name.clone());
    lock(&shared.launched).push((ticket, pid));
    let s = shared.clone();
    let watcher = std::thread::Builder::new()
        .name(format!("procpool-{name}"))
        .spawn(move || {
            let exit = exit_of(child.wait());
            lock(&s.launched).retain(|(t, _)| *t != ticket);
            launcher_gone(&s, ticket, format!("{name} (pid {pid}) {exit}"));
        });
    match watcher {
        Ok(h) => lock(&shared.threads).push(h),
        Err(e) => {
            kill_group(pid, Signal::SIGKILL);
            launcher_gone(
                shared,
                ticket,
                format!("cannot watch {}: {e}", launcher.name()),
            );
        }
    }
}

/// A launcher run ended. Workers it started that never joined are a
/// failure: the build fails, or (later) they count as crashes and are
/// launched again, until the pool breaks.
fn launcher_gone(shared: &Arc<Shared>, ticket: u64, how: String) {
    let mut failures = Vec::new();
    let mut kill_others = Vec::new();
    let mut relaunch = None;
    {
        let mut st = lock(&shared.state);
        let Some(rec) = st.launches.remove(&ticket) else {
            return;
        };
        let missing = rec.expected.saturating_sub(rec.joined);
        if missing == 0
            || matches!(st.phase, Phase::Stopping | Phase::Stopped)
            || st.broken.is_some()
        {
            tracing::debug!(target: "procpool::pool", "{how}");
            return;
        }
        let cause = format!(
            "{how} before {missing} of its {} worker(s) joined",
            rec.expected
        );
        tracing::warn!(target: "procpool::pool", "{cause}");
        if st.building {
            st.launch_failure = Some(cause);
        } else {
            st.crash_streak += 1;
            let max = shared.cfg.max_restarts;
            if st.crash_streak > max {
                let reason = format!(
                    "{} launches or workers failed in a row with no task finished in between \
                     (last: {cause}); max_restarts is {max}",
                    st.crash_streak
                );
                break_pool(&mut st, reason, &mut failures, &mut kill_others);
            } else {
                relaunch = Some((missing, backoff(st.crash_streak)));
            }
        }
    }
    shared.changed.notify_all();
    finish_breaking(shared, failures, kill_others);
    if let Some((workers, delay)) = relaunch {
        std::thread::sleep(delay);
        if let Some(tx) = lock(&shared.spawn_tx).as_ref() {
            let _ = tx.send(SpawnJob::Launch {
                workers,
                first: false,
            });
        }
    }
}

/// Starts the life and waiter threads of a freshly spawned process. Over
/// TCP its connection arrives later, from the accept loop.
fn launch(shared: &Arc<Shared>, idx: usize, generation: Generation, spawned: spawn::Spawned) {
    let spawn::Spawned {
        child,
        arrival,
        pid,
    } = spawned;
    tracing::debug!(target: "procpool::pool", { worker.id = idx, worker.pid = pid },
"worker spawned");
    {
        let mut st = lock(&shared.state);
        let slot = &mut st.slots[idx];
        slot.pid = Some(pid);
        slot.remote = false;
        slot.link = match &arrival {
            spawn::Arrival::Inherited(s, _) => s.try_clone().ok(),
            spawn::Arrival::DialBack { .. } => None, // set when it arrives
        };
    }
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let s = shared.clone();
    let life = std::thread::Builder::new()
        .name(format!("procpool-worker-{idx}"))
        .spawn(move || {
            let s2 = s.clone();
            guarded(&s, "worker reader", None, move || match arrival {
                spawn::Arrival::Inherited(stream, ring) => {
                    life_main(&s2, idx, generation, stream, pid, None, ring);
                }
                spawn::Arrival::DialBack { ticket, rx } => {
                    await_dial(&s2, idx, generation, pid, ticket, &rx);
                }
            });
            drop(done_tx);
        });
    let s = shared.clone();
    let life = life.ok();
    let waiter = std::thread::Builder::new()
        .name(format!("procpool-waiter-{idx}"))
        .spawn(move || {
            let s2 = s.clone();
            guarded(&s, "worker waiter", Some(idx), move || {
                waiter_main(&s2, idx, generation, child, pid, done_rx, life);
            });
        });
    if let Err(e) = waiter {
        tracing::error!(target: "procpool::pool", { worker.id = idx },
"cannot start a waiter thread: {e}");
        kill_group(pid, Signal::SIGKILL);
    }
}

/// A spawned worker dialing back over TCP: wait for its connection (by
/// ticket), then serve it.
fn await_dial(
    shared: &Shared,
    idx: usize,
    generation: Generation,
    pid: u32,
    ticket: u64,
    rx: &mpsc::Receiver<Result<Dialed, StartError>>,
) {
    // The handshake itself has its own timeout once connected; this bounds
    // the time to start and connect.
    let limit = shared.cfg.handshake_timeout.saturating_mul(2);
    let got = rx.recv_timeout(limit);
    if let Some(a) = &shared.attach {
        a.forget(ticket);
    }
    match got {
        Ok(Err(e)) => start_failed(shared, idx, generation, pid, e),
        Ok(Ok(d)) => {
            if let Ok(link) = d.stream.try_clone() {
                let mut st = lock(&shared.state);
                if st.slots[idx].generation == generation {
                    st.slots[idx].link = Some(link);
                }
            }
            life_main(shared, idx, generation, d.stream, pid, Some(d.reader), None);
        }
        Err(_) => {
            let e = StartError::Handshake(format!("the worker did not dial back within {limit:?}"));
            start_failed(shared, idx, generation, pid, e);
        }
    }
}

fn life_main(
    shared: &Shared,
    idx: usize,
    generation: Generation,
    stream: Stream,
    pid: u32,
    hello_read: Option<crate::process_pool::SocketReader>,
    ring: Option<super::ring::Reader>,
) {
    let greeted = match hello_read {
        None => spawn::greet(&stream, &shared.cfg, idx, generation),
        Some(reader) => spawn::accept(&stream, reader, &shared.cfg, idx, generation),
    };
    let reader = match greeted {
        Ok(r) => r,
        Err(e) => return start_failed(shared, idx, generation, pid, e),
    };
    let conn = match stream.try_clone() {
        Ok(w) => Arc::new(Conn::new(w)),
        Err(e) => {
            let e = StartError::Handshake(format!("cannot clone the socket: {e}"));
            return start_failed(shared, idx, generation, pid, e);
        }
    };
    let conns = {
        let mut st = lock(&shared.state);
        let phase = st.phase;
        let slot = &mut st.slots[idx];
        if slot.generation != generation || slot.kill.is_some() {
            return;
        }
        slot.conn = Some(conn.clone());
        slot.status = SlotStatus::Ready;
        if phase == Phase::Stopping {
            slot.kill = Some(KillReason::Shutdown);
            post_message(&conn, &ToWorker::Shutdown { drop_pending: true });
            vec![conn.clone()]
        } else {
            dispatch::pump(&mut st, shared)
        }
    };
    shared.changed.notify_all();
    tracing::debug!(target: "procpool::pool", { worker.id = idx, worker.pid = pid },
"worker ready");
    flush_all(conns);
    dispatch::read_loop(shared, idx, generation, reader, pid, ring);
}

/// A worker did not become ready: record why and stop it.
fn start_failed(shared: &Shared, idx: usize, generation: Generation, pid: u32, e: StartError) {
    tracing::warn!(target: "procpool::pool", { worker.id = idx, worker.pid = pid },
"worker did not start: {e}");
    let target = {
        let mut st = lock(&shared.state);
        let slot = &mut st.slots[idx];
        if slot.generation != generation {
            return;
        }
        slot.start_error = Some(e);
        slot.kill.get_or_insert(KillReason::StartFailed);
        slot.target()
    };
    if let Some(t) = target {
        t.signal(Signal::SIGKILL);
    }
}

fn waiter_main(
    shared: &Arc<Shared>,
    idx: usize,
    generation: Generation,
    mut child: Child,
    pid: u32,
    life_done: mpsc::Receiver<()>,
    life: Option<JoinHandle<()>>,
) {
    let exit = exit_of(child.wait());
    // Whatever the worker forked goes with it.
    kill_group(pid, Signal::SIGKILL);
    // Let the reader drain what the worker wrote before dying (results,
    // "started" notes); then force the socket shut.
    if life_done.recv_timeout(Duration::from_millis(500)).is_err() {
        let link = {
            let st = lock(&shared.state);
            let slot = &st.slots[idx];
            (slot.generation == generation)
                .then(|| slot.link.as_ref().and_then(|l| l.try_clone().ok()))
                .flatten()
        };
        if let Some(l) = link {
            l.shutdown();
        }
    }
    if let Some(h) = life {
        let _ = h.join();
    }
    settle(shared, idx, generation, Some(pid), exit);
}

fn backoff(streak: u32) -> Duration {
    if streak == 0 {
        return Duration::ZERO;
    }
    let base = Duration::from_millis(10).saturating_mul(1 << streak.min(8).saturating_sub(1));
    let base = base.min(Duration::from_secs(2));
    // ±25 % jitter from the clock's low bits.
    let nanos = Instant::now().elapsed().subsec_nanos() ^ std::process::id();
    let jitter = f64::from(nanos % 1000) / 1000.0 * 0.5 + 0.75;
    base.mul_f64(jitter)
}

/// A worker process is gone: settle its tasks, count the crash, respawn.
fn settle(shared: &Arc<Shared>, idx: usize, generation: Generation, pid: Option<u32>, exit: Exit) {
    let mut failures: Vec<(Arc<dyn ResolveBytes>, TaskError)> = Vec::new();
    let mut cancelled: Vec<Arc<dyn ResolveBytes>> = Vec::new();
    let mut answers: Vec<Arc<CancelWait>> = Vec::new();
    let mut respawn_after: Option<(SpawnJob, Duration)> = None;
    let mut kill_others: Vec<Target> = Vec::new();
    let conns;
    {
        let mut st = lock(&shared.state);
        if st.slots[idx].generation != generation {
            return;
        }
        if std::mem::take(&mut st.inject_panic) {
            panic!("injected supervisor panic (test hook)");
        }
        let stopping = matches!(st.phase, Phase::Stopping | Phase::Stopped);
        let slot = &mut st.slots[idx];
        let kill = slot.kill.take();
        slot.status = SlotStatus::Dead;
        slot.conn = None;
        slot.pid = None;
        slot.link = None;
        slot.remote = false;
        slot.running = None;
        slot.batches.clear();
        slot.kill_at = None;
        slot.last_exit = Some(exit);
        let mut held: Vec<Assigned> = slot.inflight.drain().map(|(_, a)| a).collect();
        held.sort_by_key(|a| a.seq);
        let pid_shown = pid.unwrap_or(0);
        let exit = match kill {
            Some(KillReason::Lost) => Exit::Lost,
            _ => exit,
        };
        let broken_now = st.broken.clone();
        let mut requeue = Vec::new();
        let mut had_running = false;
        for mut a in held {
            let retry = a.started
                && a.meta.retries > 0
                && broken_now.is_none()
                && !stopping
                && matches!(
                    kill,
                    None | Some(KillReason::Lost) | Some(KillReason::Protocol(_))
                );
            if retry {
                // Its worker died under it: run it again, alone.
                had_running = true;
                a.meta.retries -= 1;
                tracing::info!(target: "procpool::pool", { worker.id = idx, task.id = a.meta.id },
"retrying a task whose worker died ({} retries left)", a.meta.retries);
                requeue.push(Batch {
                    id: u64::MAX - a.meta.id,
                    items: vec![Item {
                        meta: a.meta,
                        payload: a.payload,
                    }],
                });
            } else if a.started {
                had_running = true;
                let err = match &kill {
                    Some(KillReason::TimedOut { id, after }) if *id == a.meta.id => {
                        TaskError::TimedOut { after: *after }
                    }
                    Some(KillReason::Killed { id }) if *id == a.meta.id => TaskError::Cancelled,
                    Some(KillReason::Protocol(m)) => TaskError::Protocol {
                        worker: idx,
                        message: m.clone(),
                    },
                    Some(KillReason::Shutdown) => TaskError::Cancelled,
                    Some(KillReason::Broken(r)) => TaskError::Broken { reason: r.clone() },
                    _ => TaskError::WorkerDied {
                        worker: idx,
                        pid: pid_shown,
                        exit,
                        task: Some(a.meta.name.to_owned()),
                    },
                };
                failures.push((a.meta.future, err));
            } else if let Some(w) = st.cancels.remove(&a.meta.id) {
                // A withdrawn-but-unconfirmed task never ran: the cancel stands.
                cancelled.push(a.meta.future);
                answers.push(w);
            } else if let Some(r) = &broken_now {
                failures.push((a.meta.future, TaskError::Broken { reason: r.clone() }));
            } else if stopping {
                cancelled.push(a.meta.future);
            } else {
                let item = Item {
                    meta: a.meta,
                    payload: a.payload,
                };
                // Keep the batches as they were sent: a single task must
                // not become part of a chunk (a chunk fails as a unit).
                match requeue.last_mut() {
                    Some(Batch { id, items }) if *id == a.batch => items.push(item),
                    _ => requeue.push(Batch {
                        id: a.batch,
                        items: vec![item],
                    }),
                }
            }
        }
        for batch in requeue.into_iter().rev() {
            st.queue.push_front(batch);
        }
        let crash = match &kill {
            None
            | Some(KillReason::StartFailed)
            | Some(KillReason::Protocol(_))
            | Some(KillReason::Lost) => true,
            Some(KillReason::TimedOut { .. })
            | Some(KillReason::Killed { .. })
            | Some(KillReason::Retire)
            | Some(KillReason::Shutdown) => false,
            Some(KillReason::Broken(_)) => false,
        };
        let start_error = st.slots[idx]
            .start_error
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        let cause = format!(
            "worker {idx} (pid {pid_shown}) {exit}{}{start_error}",
            if had_running {
                " while running a task"
            } else {
                ""
            }
        );
        if crash {
            st.crash_streak += 1;
            if st.slots[idx].finished == 0 {
                st.slots[idx].failures += 1;
            }
            tracing::warn!(target: "procpool::pool", { worker.id = idx, worker.pid = pid_shown },
"{cause}");
        } else {
            tracing::debug!(target: "procpool::pool", { worker.id = idx, worker.pid = pid_shown },
"worker exited: {cause}");
        }
        let slot_failures = st.slots[idx].failures;
        let max = shared.cfg.max_restarts;
        if !st.building && st.broken.is_none() && (st.crash_streak > max || slot_failures > max) {
            let reason = if st.crash_streak > max {
                format!(
                    "{} workers died in a row with no task finished in between (last: {cause}); \
                     max_restarts is {max}",
                    st.crash_streak
                )
            } else {
                format!(
                    "worker slot {idx} died {slot_failures} times in a row before finishing a \
                     task (last: {cause}); max_restarts is {max}"
                )
            };
            break_pool(&mut st, reason, &mut failures, &mut kill_others);
        }
        let wanted = match st.phase {
            Phase::Running => true,
            Phase::Draining => !st.queue.is_empty(),
            Phase::Stopping | Phase::Stopped => false,
        };
        // Spawned workers are replaced in their slot; launched ones by a
        // new launch, whose worker takes any vacant slot.
        let job = match &shared.cfg.launcher {
            Launcher::Spawn => Some(SpawnJob::Worker(idx)),
            Launcher::Command(_) => Some(SpawnJob::Launch {
                workers: 1,
                first: false,
            }),
            _ => None,
        };
        if let Some(job) = job
            && !st.building
            && st.broken.is_none()
            && wanted
        {
            if matches!(job, SpawnJob::Worker(_)) {
                st.slots[idx].status = SlotStatus::Starting;
            }
            let delay = if crash {
                backoff(st.crash_streak.max(slot_failures))
            } else {
                Duration::ZERO
            };
            tracing::info!(target: "procpool::pool", { worker.id = idx }, "replacing worker {idx} in {delay:?}");
            respawn_after = Some((job, delay));
        }
        conns = dispatch::pump(&mut st, shared);
    }
    shared.changed.notify_all();
    flush_all(conns);
    finish_breaking(shared, failures, kill_others);
    for f in cancelled {
        f.cancel_local();
    }
    for w in answers {
        w.answer(true);
    }
    if let Some((job, delay)) = respawn_after {
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        shared.stats.respawned();
        let sent = lock(&shared.spawn_tx)
            .as_ref()
            .map(|tx| tx.send(job).is_ok());
        if sent != Some(true) {
            lock(&shared.state).slots[idx].status = SlotStatus::Dead;
            shared.changed.notify_all();
        }
    }
}

/// Declares the pool broken: queued futures fail with `reason` and every
/// worker is to be killed (by [`finish_breaking`], outside the lock).
fn break_pool(
    st: &mut PoolState,
    reason: String,
    failures: &mut Vec<(Arc<dyn ResolveBytes>, TaskError)>,
    kill: &mut Vec<Target>,
) {
    tracing::error!(target: "procpool::pool", "pool broken: {reason}");
    st.broken = Some(reason.clone());
    for batch in st.queue.drain(..) {
        for item in batch.items {
            failures.push((
                item.meta.future,
                TaskError::Broken {
                    reason: reason.clone(),
                },
            ));
        }
    }
    for s in st.slots.iter_mut().filter(|s| s.alive()) {
        if let Some(t) = s.target() {
            s.kill.get_or_insert(KillReason::Broken(reason.clone()));
            kill.push(t);
        }
    }
}

fn finish_breaking(
    shared: &Shared,
    failures: Vec<(Arc<dyn ResolveBytes>, TaskError)>,
    kill: Vec<Target>,
) {
    for t in kill {
        t.signal(Signal::SIGKILL);
    }
    for (f, e) in failures {
        shared.stats.record(None);
        f.fail(e);
    }
}

/// Runs a supervisor thread's body. A panic there (a bug in procpool) must
/// not leave a future pending: the pool is declared broken, every queued
/// and in-flight future fails, and the workers are killed. `dead_slot` is
/// the slot whose settling the panic interrupted.
fn guarded(shared: &Arc<Shared>, what: &str, dead_slot: Option<usize>, body: impl FnOnce()) {
    let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) else {
        return;
    };
    let reason = format!(
        "internal error: the {what} thread panicked ({}); please report this",
        procpool_wire::codec::panic_message(&*p)
    );
    tracing::error!(target: "procpool::pool", "{reason}");
    let mut futures: Vec<Arc<dyn ResolveBytes>> = Vec::new();
    let mut pids = Vec::new();
    let answers: Vec<Arc<CancelWait>>;
    {
        let mut st = lock(&shared.state);
        st.broken.get_or_insert_with(|| reason.clone());
        for batch in st.queue.drain(..) {
            futures.extend(batch.items.into_iter().map(|i| i.meta.future));
        }
        for (i, s) in st.slots.iter_mut().enumerate() {
            futures.extend(s.inflight.drain().map(|(_, a)| a.meta.future));
            s.batches.clear();
            s.running = None;
            if let Some(t) = s.target() {
                s.kill.get_or_insert(KillReason::Broken(reason.clone()));
                pids.push(t);
            }
            if Some(i) == dead_slot || (s.pid.is_none() && s.status == SlotStatus::Starting) {
                s.status = SlotStatus::Dead;
                s.pid = None;
                s.conn = None;
            }
        }
        answers = st.cancels.drain().map(|(_, w)| w).collect();
    }
    shared.changed.notify_all();
    for t in pids {
        t.signal(Signal::SIGKILL);
    }
    for f in futures {
        f.fail(TaskError::Broken {
            reason: reason.clone(),
        });
    }
    for w in answers {
        w.answer(false);
    }
}

fn clock_main(shared: &std::sync::Weak<Shared>) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut term = Vec::new();
        let mut force = Vec::new();
        let wait = {
            let mut st = lock(&shared.state);
            if st.phase == Phase::Stopped {
                return;
            }
            let now = Instant::now();
            let grace = shared.cfg.kill_grace;
            let mut next: Option<Instant> = None;
            for slot in st.slots.iter_mut() {
                if slot.pid.is_none() {
                    continue;
                }
                if let Some(at) = slot.kill_at {
                    if now >= at {
                        force.extend(slot.target());
                        slot.kill_at = None;
                    } else {
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                    continue;
                }
                let Some((id, since)) = slot.running else {
                    continue;
                };
                let Some(limit) = slot.inflight.get(&id).and_then(|a| a.meta.timeout) else {
                    continue;
                };
                let deadline = since + limit;
                if now >= deadline && slot.kill.is_none() {
                    slot.kill = Some(KillReason::TimedOut { id, after: limit });
                    slot.kill_at = Some(now + grace);
                    next = Some(next.map_or(now + grace, |n| n.min(now + grace)));
                    term.extend(slot.target());
                } else if now < deadline {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                }
            }
            if term.is_empty() && force.is_empty() {
                let dur = next
                    .map(|n| n.saturating_duration_since(now))
                    .unwrap_or(Duration::from_secs(1));
                let _unused = shared
                    .clock
                    .wait_timeout(st, dur.max(Duration::from_millis(1)))
                    .unwrap_or_else(|p| p.into_inner());
            }
            true
        };
        let _ = wait;
        for t in term {
            tracing::warn!(target: "procpool::pool", "task timed out; terminating its worker");
            t.signal(Signal::SIGTERM);
        }
        for t in force {
            t.signal(Signal::SIGKILL);
        }
    }
}

/// Stops the pool; see [`Shutdown`]. Idempotent; concurrent callers all
/// return once the pool is stopped.
pub(crate) fn shutdown(shared: &Arc<Shared>, how: Shutdown) {
    let mut cancelled: Vec<Arc<dyn ResolveBytes>> = Vec::new();
    let mut to_kill = Vec::new();
    let conns = {
        let mut st = lock(&shared.state);
        if st.phase == Phase::Stopped {
            return;
        }
        if st.shutting_down {
            while st.phase != Phase::Stopped {
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            return;
        }
        st.shutting_down = true;
        if how == Shutdown::Wait {
            st.phase = Phase::Draining;
            while !(st.idle() || st.broken.is_some() || st.slots.iter().all(|s| !s.alive())) {
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        st.phase = Phase::Stopping;
        for batch in st.queue.drain(..) {
            cancelled.extend(batch.items.into_iter().map(|i| i.meta.future));
        }
        let mut conns = Vec::new();
        for slot in st.slots.iter_mut().filter(|s| s.alive()) {
            match how {
                Shutdown::Kill => {
                    slot.kill.get_or_insert(KillReason::Shutdown);
                    to_kill.extend(slot.target());
                }
                Shutdown::Wait | Shutdown::CancelPending => {
                    if let Some(conn) = &slot.conn {
                        slot.kill.get_or_insert(KillReason::Shutdown);
                        post_message(
                            conn,
                            &ToWorker::Shutdown {
                                drop_pending: how == Shutdown::CancelPending,
                            },
                        );
                        conns.push(conn.clone());
                    }
                }
            }
        }
        conns
    };
    shared.changed.notify_all();
    shared.clock.notify_all();
    for f in cancelled {
        f.cancel_local();
    }
    flush_all(conns);
    for t in to_kill {
        t.signal(Signal::SIGKILL);
    }
    {
        let mut st = lock(&shared.state);
        while st.slots.iter().any(Slot::alive) {
            let (g, _) = shared
                .changed
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner());
            st = g;
        }
        st.phase = Phase::Stopped;
    }
    shared.changed.notify_all();
    shared.clock.notify_all();
    lock(&shared.spawn_tx).take();
    stop_launchers(shared);
    if let Some(a) = &shared.attach {
        a.close();
    }
    let me = std::thread::current().id();
    let handles: Vec<_> = lock(&shared.threads).drain(..).collect();
    for h in handles {
        if h.thread().id() != me {
            let _ = h.join();
        }
    }
    tracing::debug!(target: "procpool::pool", "pool stopped");
}

pub(crate) fn worker_pids(shared: &Shared) -> Vec<u32> {
    lock(&shared.state)
        .slots
        .iter()
        .filter_map(|s| s.pid)
        .collect()
}

/// Whether the pool has stopped.
pub(crate) fn stopped(shared: &Shared) -> bool {
    lock(&shared.state).phase == Phase::Stopped
}

/// Waits (briefly) for launcher programs to end now that their workers
/// are gone, then stops those that do not: SIGTERM (which `srun` and
/// `mpirun` pass to their tasks), then SIGKILL.
fn stop_launchers(shared: &Shared) {
    let settle_for = |d: Duration| {
        let until = Instant::now() + d;
        while !lock(&shared.launched).is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    settle_for(Duration::from_secs(2));
    for sig in [Signal::SIGTERM, Signal::SIGKILL] {
        let pids: Vec<u32> = lock(&shared.launched).iter().map(|&(_, p)| p).collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            tracing::debug!(target: "procpool::pool", "stopping launcher pid {pid} with {sig}");
            kill_group(pid, sig);
        }
        settle_for(shared.cfg.kill_grace.max(Duration::from_secs(1)));
    }
}

/// Gives a worker that dialed in (and passed the handshake) a vacant slot,
/// then serves it like a spawned one until its connection closes.
pub(crate) fn adopt(shared: &Arc<Shared>, dialed: Dialed) {
    let Dialed {
        stream,
        reader,
        hello,
        local_pid,
    } = dialed;
    let pid = local_pid.unwrap_or(hello.pid);
    let who = format!("pid {} on {}", hello.pid, hello.host);
    let link = stream.try_clone().ok();
    let claimed = {
        let mut st = lock(&shared.state);
        if st.phase != Phase::Running || st.broken.is_some() {
            Err("the pool is not accepting workers (shut down or broken)")
        } else if let Some(idx) = st.slots.iter().position(|s| s.status == SlotStatus::Dead) {
            if let Some(rec) = st.launches.get_mut(&hello.ticket) {
                rec.joined += 1;
            }
            let g = st.claim_slot(idx);
            let slot = &mut st.slots[idx];
            slot.pid = Some(pid);
            slot.remote = local_pid.is_none();
            slot.link = link;
            Ok((idx, g))
        } else {
            Err("the pool is full (every worker slot is taken)")
        }
    };
    let (idx, generation) = match claimed {
        Ok(pair) => pair,
        Err(reason) => {
            tracing::warn!(target: "procpool::pool", "attach: refused {who}: {reason}");
            spawn::reject(&stream, reason);
            return;
        }
    };
    tracing::info!(target: "procpool::pool", { worker.id = idx, worker.pid = pid }, "worker joined: {who}");
    let s = shared.clone();
    guarded(shared, "attached worker", Some(idx), move || {
        life_main(&s, idx, generation, stream, pid, Some(reader), None);
    });
    // No waiter for a process we did not start: its connection closing is
    // its death.
    settle(shared, idx, generation, Some(pid), Exit::Unknown);
}

/// Waits until at least `n` slots are ready.
pub(crate) fn wait_ready(shared: &Shared, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
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
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        st = shared
            .changed
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

pub(crate) fn inject_panic(shared: &Shared) {
    lock(&shared.state).inject_panic = true;
}

pub(crate) fn broken(shared: &Shared) -> Option<String> {
    lock(&shared.state).broken.clone()
}
