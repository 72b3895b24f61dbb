//! `ProcessPoolBuilder` and `WorkerCommand`: every default in one place,
//! validated once in `build()`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use procpool_wire::codec;
use procpool_wire::frame::DEFAULT_MAX_FRAME;

use crate::error::BuildError;
use crate::task::{Initializer, init_fingerprint};

use super::ProcessPool;
use super::launch::Launcher;
use super::output::WorkerOutput;
use super::transport::Transport;

pub use crate::link::env::ENV_WORKER_PATH;

/// The program a pool starts for each worker.
///
/// ```no_run
/// use procpool::WorkerCommand;
///
/// let bundled = WorkerCommand::bundled(); // finds `procpool-worker`
/// let mine = WorkerCommand::program("/opt/app/bin/my-worker").arg("--quiet").env("RUST_LOG", "info");
/// let me = WorkerCommand::current_exe(); // this program, via worker::run_if_worker
/// ```
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    program: Option<PathBuf>,
    looked: Vec<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// Made by [`WorkerCommand::bundled`] (messages then say how to run
    /// one's own tasks).
    bundled: bool,
}

impl WorkerCommand {
    /// A worker binary at `path` (it calls `procpool::worker::run`).
    pub fn program(path: impl Into<PathBuf>) -> WorkerCommand {
        WorkerCommand {
            program: Some(path.into()),
            looked: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            bundled: false,
        }
    }

    /// The bundled `procpool-worker` binary, looked up in order: the
    /// `PROCPOOL_WORKER` environment variable, the directory of the current
    /// executable (and its parent, for test binaries in `target/*/deps`),
    /// then `PATH`. `build()` says where it looked if none is found.
    pub fn bundled() -> WorkerCommand {
        let mut looked = Vec::new();
        let found = find_bundled(&mut looked);
        WorkerCommand {
            program: found,
            looked,
            args: Vec::new(),
            env: Vec::new(),
            bundled: true,
        }
    }

    /// The default worker: this program itself if its `main` called
    /// [`procpool::worker::run_if_worker`](crate::worker::run_if_worker)
    /// (the usual case: [`current_exe`](Self::current_exe)), else the
    /// [`bundled`](Self::bundled) `procpool-worker`.
    pub fn default_worker() -> WorkerCommand {
        if crate::link::role::serves_itself() {
            WorkerCommand::current_exe()
        } else {
            WorkerCommand::bundled()
        }
    }

    /// This very executable, which must call
    /// `procpool::worker::run_if_worker` first thing in `main`.
    pub fn current_exe() -> WorkerCommand {
        match std::env::current_exe() {
            Ok(p) => WorkerCommand::program(p),
            Err(_) => WorkerCommand {
                program: None,
                looked: vec![PathBuf::from("/proc/self/exe")],
                args: Vec::new(),
                env: Vec::new(),
                bundled: false,
            },
        }
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> WorkerCommand {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the worker.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> WorkerCommand {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The program, if it was found.
    pub fn path(&self) -> Option<&Path> {
        self.program.as_deref()
    }

    /// Whether this is [`WorkerCommand::bundled`].
    pub(crate) fn is_bundled(&self) -> bool {
        self.bundled
    }

    pub(crate) fn args(&self) -> &[OsString] {
        &self.args
    }

    pub(crate) fn envs(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    fn resolve(&self) -> Result<PathBuf, BuildError> {
        self.program.clone().ok_or_else(|| {
            let bundled = "set PROCPOOL_WORKER to the bundled `procpool-worker` or put it on PATH \
                           (`cargo build --release -p procpool-worker` in procpool's repository \
                           builds it; it runs only procpool-tasks' built-in tasks)";
            let fix = if !self.bundled {
                "this program's own path is unknown (no /proc/self/exe?): give the worker with \
                 `WorkerCommand::program(path)`"
                    .to_owned()
            } else if crate::link::role::serves_itself() {
                bundled.to_owned()
            } else {
                format!(
                    "`main()` did not call `procpool::worker::run_if_worker` before `build()`, so \
                     the default worker is the bundled `procpool-worker`, which was not found. \
                     To run this program's own tasks (#[procpool::task]) in workers, make it its \
                     own worker: add `procpool::worker::run_if_worker(procpool::Registry::collected());` \
                     as the first line of `main`. Or {bundled}"
                )
            };
            BuildError::WorkerNotFound {
                looked: self.looked.clone(),
                fix,
            }
        })
    }
}

const WORKER_NAME: &str = "procpool-worker";

fn find_bundled(looked: &mut Vec<PathBuf>) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os(ENV_WORKER_PATH) {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join(WORKER_NAME));
        if let Some(up) = dir.parent() {
            candidates.push(up.join(WORKER_NAME));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(WORKER_NAME)));
    }
    for c in candidates {
        if is_executable(&c) {
            return Some(c);
        }
        looked.push(c);
    }
    None
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The initializer as it travels: name, fingerprint, encoded value.
#[derive(Debug, Clone)]
pub(crate) struct InitSpec {
    pub name: &'static str,
    pub fingerprint: u64,
    pub payload: Vec<u8>,
}

/// Settings of a running pool (validated).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub launcher: Launcher,
    pub transport: Transport,
    #[cfg(feature = "remote")]
    pub listen: std::net::SocketAddr,
    #[cfg(feature = "remote")]
    pub advertise: Option<String>,
    #[cfg(feature = "remote")]
    pub heartbeat: Duration,
    pub lost_after: Duration,
    pub retries: u32,
    #[cfg(feature = "remote")]
    pub launch_timeout: Duration,
    pub program: PathBuf,
    pub command: WorkerCommand,
    pub workers: usize,
    pub init: Option<InitSpec>,
    pub task_timeout: Option<Duration>,
    pub max_tasks_per_worker: Option<u64>,
    pub max_worker_memory: Option<u64>,
    pub worker_spin: Option<Duration>,
    pub reply_ring: bool,
    pub work_ring: bool,
    pub worker_output: WorkerOutput,
    pub ring_spin: Duration,
    pub prefetch: usize,
    pub prefetch_time: Duration,
    pub max_frame: u32,
    pub handshake_timeout: Duration,
    pub init_timeout: Duration,
    pub cancel_timeout: Duration,
    pub kill_grace: Duration,
    pub max_restarts: u32,
    pub write_timeout: Duration,
    pub start_timeout: Duration,
    pub dumpable: bool,
}

impl Config {
    /// How shared payloads travel to this pool's workers: descriptors over
    /// Unix sockets, inline bytes over TCP.
    pub(crate) fn shared_mode(&self) -> crate::shared::Mode {
        match self.transport {
            Transport::Local => crate::shared::Mode::Descriptors,
            #[cfg(feature = "remote")]
            Transport::Tcp => crate::shared::Mode::Inline,
        }
    }
}

/// Configures a [`ProcessPool`]; see [`ProcessPool::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use procpool::{ProcessPool, WorkerCommand};
/// use procpool_tasks::SetGreeting;
///
/// let pool = ProcessPool::builder()
///     .worker(WorkerCommand::bundled())
///     .workers(4)
///     .initializer(SetGreeting("hello".into()))
///     .task_timeout(Duration::from_secs(60))
///     .max_tasks_per_worker(10_000)
///     .max_worker_memory(2 << 30)
///     .build()?;
/// # Ok::<(), procpool::BuildError>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct ProcessPoolBuilder {
    launcher: Launcher,
    transport: Transport,
    #[cfg(feature = "remote")]
    listen: std::net::SocketAddr,
    #[cfg(feature = "remote")]
    advertise: Option<String>,
    #[cfg(feature = "remote")]
    heartbeat: Duration,
    lost_after: Duration,
    retries: u32,
    #[cfg(feature = "remote")]
    launch_timeout: Duration,
    command: WorkerCommand,
    workers: Option<usize>,
    init: Option<Result<InitSpec, BuildError>>,
    task_timeout: Option<Duration>,
    max_tasks_per_worker: Option<u64>,
    max_worker_memory: Option<u64>,
    worker_spin: Option<Duration>,
    reply_ring: bool,
    work_ring: bool,
    worker_output: WorkerOutput,
    ring_spin: Duration,
    prefetch: usize,
    prefetch_time: Duration,
    max_frame: u32,
    handshake_timeout: Duration,
    init_timeout: Duration,
    cancel_timeout: Duration,
    kill_grace: Duration,
    max_restarts: u32,
    write_timeout: Duration,
    start_timeout: Duration,
    dumpable: bool,
}

impl Default for ProcessPoolBuilder {
    fn default() -> Self {
        ProcessPoolBuilder {
            launcher: Launcher::Spawn,
            transport: Transport::Local,
            #[cfg(feature = "remote")]
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            #[cfg(feature = "remote")]
            advertise: None,
            #[cfg(feature = "remote")]
            heartbeat: Duration::from_secs(1),
            lost_after: Duration::from_secs(10),
            retries: 0,
            #[cfg(feature = "remote")]
            launch_timeout: Duration::from_secs(120),
            command: WorkerCommand::default_worker(),
            workers: None,
            init: None,
            task_timeout: None,
            max_tasks_per_worker: None,
            max_worker_memory: None,
            worker_spin: None,
            reply_ring: true,
            work_ring: true,
            worker_output: WorkerOutput::default(),
            ring_spin: Duration::from_micros(50),
            prefetch: 4,
            prefetch_time: Duration::from_micros(500),
            max_frame: DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(10),
            init_timeout: Duration::from_secs(60),
            cancel_timeout: Duration::from_millis(250),
            kill_grace: Duration::from_millis(500),
            max_restarts: 10,
            write_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(30),
            dumpable: false,
        }
    }
}

impl ProcessPoolBuilder {
    /// The worker program. Default: [`WorkerCommand::default_worker`] —
    /// this program itself when its `main` called
    /// [`run_if_worker`](crate::worker::run_if_worker) first, else the
    /// bundled `procpool-worker`.
    pub fn worker(mut self, command: WorkerCommand) -> Self {
        self.command = command;
        self
    }

    /// How workers are started (default: [`Launcher::Spawn`]), e.g.
    /// `.launcher(Launcher::srun().nodes(2).tasks_per_node(2))`.
    pub fn launcher(mut self, launcher: impl Into<Launcher>) -> Self {
        self.launcher = launcher.into();
        self
    }

    /// How workers reach the pool (default: [`Transport::Local`]; launchers
    /// of remote workers always use TCP).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Where the pool listens for TCP workers (default `0.0.0.0:0`: every
    /// interface, an ephemeral port).
    #[cfg(feature = "remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
    pub fn listen(mut self, addr: std::net::SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The host name or address workers dial (default: the listening
    /// address if it is a specific one, else this host's name).
    #[cfg(feature = "remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
    pub fn advertise(mut self, host: impl Into<String>) -> Self {
        self.advertise = Some(host.into());
        self
    }

    /// TCP workers send a heartbeat every `every`; one silent for
    /// `lost_after` (or whose connection's unacknowledged data sits that
    /// long) is lost: its running task fails with `WorkerDied` (defaults
    /// 1 s and 10 s).
    #[cfg(feature = "remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
    pub fn heartbeat(mut self, every: Duration, lost_after: Duration) -> Self {
        self.heartbeat = every;
        self.lost_after = lost_after;
        self
    }

    /// A task whose worker dies under it is run again, up to `n` times,
    /// before its future fails with `WorkerDied` (default 0). Only worker
    /// deaths are retried: not errors, panics or timeouts. Per task:
    /// [`ProcessPool::submit_with_retries`].
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// How long `build()` waits for launched workers to join
    /// ([`Launcher::Command`]; default 120 s). `Duration::MAX` means no
    /// limit.
    #[cfg(feature = "remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
    pub fn launch_timeout(mut self, d: Duration) -> Self {
        self.launch_timeout = d;
        self
    }

    /// Number of worker processes (default: logical CPUs).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Runs `init` once in every worker (and every replacement) before it
    /// takes a task. If it fails or panics in any worker, `build()` fails.
    pub fn initializer<I: Initializer>(mut self, init: I) -> Self {
        self.init = Some(match codec::encode(&init) {
            Ok(payload) => Ok(InitSpec {
                name: I::NAME,
                fingerprint: init_fingerprint::<I>(),
                payload,
            }),
            Err(e) => Err(BuildError::InitializerEncode {
                type_name: std::any::type_name::<I>(),
                message: e.to_string(),
            }),
        });
        self
    }

    /// Kills a worker whose task runs longer than `d` (the future ends
    /// [`crate::TaskError::TimedOut`]) and replaces it. `Duration::MAX`
    /// means no limit (other tasks' own timeouts are still enforced).
    pub fn task_timeout(mut self, d: Duration) -> Self {
        self.task_timeout = Some(d);
        self
    }

    /// Replaces a worker after it has taken `n` tasks (a chunk is not split,
    /// so a worker may take up to a chunk more).
    pub fn max_tasks_per_worker(mut self, n: u64) -> Self {
        self.max_tasks_per_worker = Some(n);
        self
    }

    /// Replaces a worker, between tasks, once its peak resident memory
    /// passes `bytes` (a leaky native library cannot grow without bound).
    pub fn max_worker_memory(mut self, bytes: u64) -> Self {
        self.max_worker_memory = Some(bytes);
        self
    }

    /// How long an idle worker looks for its next task (yielding the CPU)
    /// before it parks. Default: 50 µs for a worker fed through its work
    /// ring ([`work_ring`](Self::work_ring): a look there is a load of
    /// shared memory, and the pool need not wake a worker that is still
    /// looking: chunksize-1 `map` × 1.57, chunksize-256 `map_unordered`
    /// × 1.11 on the 2-vCPU development VM, same-run); not at all for a
    /// worker that reads its socket (TCP, dial-in, `work_ring(false)`),
    /// where the look contended with the reader thread and cost throughput
    /// when the workers shared the CPUs with the parent (chunksize-1 `map`
    /// fell from ~100k to ~40k tasks/s). `Duration::ZERO` turns it off.
    /// With cores to spare it also cuts one wake-up from each round trip:
    /// `100 µs` roughly halved submit→result when the processes ran on
    /// different vCPUs (`cargo bench -p procpool-benches --bench latency`).
    pub fn worker_spin(mut self, d: Duration) -> Self {
        self.worker_spin = Some(d);
        self
    }

    /// Whether locally spawned workers report starts and results through a
    /// shared-memory ring instead of one socket write per task (default:
    /// on). Nothing is lost when a worker dies either way; the ring saves a
    /// syscall per task on both sides, which is most of the cost of a
    /// trivial task (see the README's Performance section). Workers that
    /// dial in (TCP, attach, launchers) always use the socket.
    pub fn reply_ring(mut self, on: bool) -> Self {
        self.reply_ring = on;
        self
    }

    /// Whether the pool hands a locally spawned worker its tasks through a
    /// second ring in the same shared memory (default: on, with the reply
    /// ring; off when [`reply_ring`](Self::reply_ring) is off). The
    /// worker's executor takes the next chunk from there between tasks, so
    /// a busy worker is fed without a socket write on the pool's side or a
    /// wake-up on its own; frames with descriptors or bulk byte strings,
    /// and cancels, still take the socket, in order with the ring. Workers
    /// that dial in always read the socket, as do all workers of a pool
    /// whose [`prefetch`](Self::prefetch) is over 128 (the ring keeps room
    /// for a marker per frame a worker may hold).
    pub fn work_ring(mut self, on: bool) -> Self {
        self.work_ring = on;
        self
    }

    /// Where the stdout and stderr of the workers the pool spawns go
    /// (default: [`WorkerOutput::Prefixed`], each line on the parent's
    /// stderr after `[procpool worker N]`). Workers that dial in keep
    /// their own.
    pub fn worker_output(mut self, output: WorkerOutput) -> Self {
        self.worker_output = output;
        self
    }

    /// How long the parent's reader of a worker with a reply ring looks at
    /// the ring (yielding the CPU between looks) before it parks and needs
    /// a wake-up (default 50 µs; zero: park at once). Adaptive: after a
    /// look that found nothing it parks at once, until a wake-up comes
    /// within this time of parking again. A short task's result is then
    /// picked up without a wake-up syscall on either side.
    pub fn ring_spin(mut self, d: Duration) -> Self {
        self.ring_spin = d;
        self
    }

    /// How long `cancel()` waits for a worker to confirm it withdrew a
    /// prefetched task (default 250 ms); no answer in time means `false`.
    /// `Duration::MAX` means no limit.
    pub fn cancel_timeout(mut self, d: Duration) -> Self {
        self.cancel_timeout = d;
        self
    }

    /// Between SIGTERM and SIGKILL when a task times out (default 500 ms).
    /// `Duration::MAX`: SIGTERM only, never SIGKILL.
    pub fn kill_grace(mut self, d: Duration) -> Self {
        self.kill_grace = d;
        self
    }

    /// Batches (single tasks or chunks) a worker may hold, the one it runs
    /// included, so it never waits a round trip between tasks (default 4;
    /// at least 1).
    /// Single tasks queued together may reach a worker in one frame; each
    /// still counts as a batch. A `map`'s short chunks may go deeper: see
    /// [`prefetch_time`](Self::prefetch_time).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n;
        self
    }

    /// How much work of a `map`'s chunks (or a chunksize-1 `map`'s inputs)
    /// a worker may hold beyond [`prefetch`](Self::prefetch) batches
    /// (default 500 µs; zero: `prefetch` bounds them too). A worker whose
    /// last chunks of a task ran short is given more of that task's: about
    /// this much work in all, at least `prefetch` and at most 4 ×
    /// `prefetch` chunks, so that it does not run dry while the parent's
    /// threads wait for a CPU (on 2 vCPUs: a chunksize-256 `map` of trivial
    /// tasks ran 10–20 % faster, a chunksize-1 one about twice as fast:
    /// issue 14). Never while it holds anything else (a `submit()`ed task
    /// is held to `prefetch`), nor once the one it runs has run this long.
    /// The measure is per task type (a slower chunk counts at once): a
    /// `map` whose inputs are much slower than the last `map`'s of the
    /// same task may see up to 4 × `prefetch` of its first chunks go to
    /// one worker.
    /// `Duration::MAX` means no limit on the time (the 4 × bound stays).
    pub fn prefetch_time(mut self, d: Duration) -> Self {
        self.prefetch_time = d;
        self
    }

    /// Largest frame either side accepts (default 1 GiB).
    pub fn max_frame_bytes(mut self, n: u32) -> Self {
        self.max_frame = n;
        self
    }

    /// How long a new worker may take to say hello (default 10 s).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// How long the initializer may run in one worker (default 60 s).
    pub fn init_timeout(mut self, d: Duration) -> Self {
        self.init_timeout = d;
        self
    }

    /// Consecutive worker crashes, with no task finished in between, after
    /// which the pool is declared broken (default 10).
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = n;
        self
    }

    /// How long a worker may leave the pool's input to it unread (default
    /// 30 s). A worker that takes none of a pending write for this long is
    /// killed and replaced; the tasks it had not begun go to other workers.
    /// Writes to workers never block `submit`, `cancel` or another
    /// worker's results, whatever this is.
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.write_timeout = d;
        self
    }

    /// How long a worker that holds tasks and runs none may take to begin
    /// one (default 30 s). A worker that neither starts nor answers within
    /// it is treated as hung: killed and replaced, and the tasks it had not
    /// begun go to other workers. (`task_timeout` starts when a task
    /// begins; this covers a worker that never begins.)
    pub fn start_timeout(mut self, d: Duration) -> Self {
        self.start_timeout = d;
        self
    }

    /// Whether the pool's processes stay *dumpable* (default `false`). By
    /// default the parent (at `build()`) and every worker make themselves
    /// non-dumpable (`PR_SET_DUMPABLE` 0): other processes of the same user
    /// (a compromised worker among them) cannot read their memory,
    /// `/proc/PID/environ` or `/proc/PID/mem`, nor attach a debugger, and
    /// they leave no core dump. `true` leaves both as they were, for
    /// debugging with `gdb -p` or collecting core dumps.
    pub fn dumpable(mut self, on: bool) -> Self {
        self.dumpable = on;
        self
    }

    /// Starts the workers, runs the initializer in each, and returns the
    /// pool once every worker is ready. On error no worker is left running.
    pub fn build(self) -> Result<ProcessPool, BuildError> {
        if let Some(message) = crate::link::role::refuse_to_build() {
            return Err(BuildError::StartedAsWorker { message });
        }
        ProcessPool::start(self.config()?)
    }

    /// The settings, validated; no process or thread is started.
    pub(crate) fn config(self) -> Result<Config, BuildError> {
        #[cfg(feature = "remote")]
        let implied = self.launcher.command().and_then(|l| l.default_workers());
        #[cfg(not(feature = "remote"))]
        let implied = None;
        let workers = match self.workers.or(implied) {
            Some(0) => {
                return Err(BuildError::Config(
                    "workers must be at least 1 (got 0)".into(),
                ));
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        #[cfg(feature = "remote")]
        if self.heartbeat.is_zero() || self.lost_after <= self.heartbeat {
            return Err(BuildError::Config(format!(
                "heartbeat: lost_after ({:?}) must be longer than the interval ({:?}), which must not be 0",
                self.lost_after, self.heartbeat
            )));
        }
        // Workers launched elsewhere can only dial back over TCP.
        #[cfg(feature = "remote")]
        let transport = if self.launcher.command().is_some() {
            Transport::Tcp
        } else {
            self.transport
        };
        #[cfg(not(feature = "remote"))]
        let transport = self.transport;
        if self.prefetch == 0 {
            return Err(BuildError::Config(
                "prefetch must be at least 1 (got 0)".into(),
            ));
        }
        if self.max_frame < 64 * 1024 {
            return Err(BuildError::Config(format!(
                "max_frame_bytes must be at least 65536 (got {})",
                self.max_frame
            )));
        }
        if self.max_tasks_per_worker == Some(0) {
            return Err(BuildError::Config(
                "max_tasks_per_worker must be at least 1 (got 0)".into(),
            ));
        }
        let init = self.init.transpose()?;
        let program = match self.launcher {
            #[cfg(feature = "remote")]
            Launcher::Attach => PathBuf::new(),
            // Only printed: a person may have the program elsewhere.
            #[cfg(feature = "remote")]
            Launcher::External => self
                .command
                .resolve()
                .unwrap_or_else(|_| PathBuf::from("procpool-worker")),
            _ => self.command.resolve()?,
        };
        let config = Config {
            launcher: self.launcher,
            transport,
            #[cfg(feature = "remote")]
            listen: self.listen,
            #[cfg(feature = "remote")]
            advertise: self.advertise,
            #[cfg(feature = "remote")]
            heartbeat: self.heartbeat,
            lost_after: self.lost_after,
            retries: self.retries,
            #[cfg(feature = "remote")]
            launch_timeout: self.launch_timeout,
            program,
            command: self.command,
            workers,
            init,
            task_timeout: self.task_timeout,
            max_tasks_per_worker: self.max_tasks_per_worker,
            max_worker_memory: self.max_worker_memory,
            worker_spin: self.worker_spin,
            reply_ring: self.reply_ring,
            work_ring: self.work_ring,
            worker_output: self.worker_output,
            ring_spin: self.ring_spin,
            prefetch: self.prefetch,
            prefetch_time: self.prefetch_time,
            max_frame: self.max_frame,
            handshake_timeout: self.handshake_timeout,
            init_timeout: self.init_timeout,
            cancel_timeout: self.cancel_timeout,
            kill_grace: self.kill_grace,
            max_restarts: self.max_restarts,
            write_timeout: self.write_timeout,
            start_timeout: self.start_timeout,
            dumpable: self.dumpable,
        };
        Ok(config)
    }
}
