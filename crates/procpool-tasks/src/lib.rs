//! Built-in procpool tasks, used by the bundled worker, the tests, the
//! benches and the CLI.
//!
//! * Work: [`Echo`] (bytes through `serde_bytes`), [`EchoVec`] (bytes through
//!   plain serde), [`EchoShared`], [`SumShared`] and [`MakeShared`] (shared
//!   payloads), [`EchoRecords`] (a struct of numbers and strings),
//!   [`Square`], [`Sleep`], [`Spin`] (CPU), [`WhoAmI`], [`CountCalls`],
//!   [`Checked`] (a fallible task).
//! * Fault drills ([`drill`]): tasks that panic, abort, exit, hang,
//!   allocate, or whose input or output will not (de)serialize.
//! * Initializers: [`SetGreeting`], [`Greet`] reads it back, and drills
//!   that fail or panic.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use procpool::{InitError, Initializer, Registry, SharedBytes, SharedSlice, Task, WorkerContext};

pub mod drill;
pub mod probe;

/// Returns its bytes (`serde_bytes`: one length prefix and a copy).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Echo(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl Task for Echo {
    const NAME: &'static str = "echo";
    type Output = ByteBuf;
    fn run(self, _: &mut WorkerContext) -> ByteBuf {
        ByteBuf::from(self.0)
    }
}

/// Returns its shared bytes: to a local worker and back, the same sealed
/// memory file crosses the socket twice and no byte is copied.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EchoShared(pub SharedBytes);

impl Task for EchoShared {
    const NAME: &'static str = "echo_shared";
    type Output = SharedBytes;
    fn run(self, _: &mut WorkerContext) -> SharedBytes {
        self.0
    }
}

/// Sums a shared array of `f64` in the worker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SumShared(pub SharedSlice<f64>);

impl Task for SumShared {
    const NAME: &'static str = "sum_shared";
    type Output = f64;
    fn run(self, _: &mut WorkerContext) -> f64 {
        self.0.iter().sum()
    }
}

/// Makes a shared array of `n` values `0.0, 1.0, …` in the worker and
/// sends it back (an output that is a shared payload).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MakeShared(pub u64);

impl Task for MakeShared {
    const NAME: &'static str = "make_shared";
    type Output = SharedSlice<f64>;
    fn run(self, _: &mut WorkerContext) -> SharedSlice<f64> {
        SharedSlice::from((0..self.0).map(|i| i as f64).collect::<Vec<_>>())
    }
}

/// Returns its bytes, serialized as a plain `Vec<u8>` (one varint per byte):
/// the slow path `serde_bytes` avoids.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EchoVec(pub Vec<u8>);

impl Task for EchoVec {
    const NAME: &'static str = "echo_vec";
    type Output = Vec<u8>;
    fn run(self, _: &mut WorkerContext) -> Vec<u8> {
        self.0
    }
}

/// A record of numbers and strings, for the "structured payload" case.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Record {
    /// An id.
    pub id: u64,
    /// A name.
    pub name: String,
    /// A measurement.
    pub value: f64,
    /// Some tags.
    pub tags: Vec<String>,
}

impl Record {
    /// `n` records of about 64 bytes each when encoded.
    pub fn sample(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                id: i as u64,
                name: format!("record-{i:08}"),
                value: i as f64 * 0.5,
                tags: vec!["alpha".into(), format!("t{}", i % 7)],
            })
            .collect()
    }
}

/// Returns its records.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EchoRecords(pub Vec<Record>);

impl Task for EchoRecords {
    const NAME: &'static str = "echo_records";
    type Output = Vec<Record>;
    fn run(self, _: &mut WorkerContext) -> Vec<Record> {
        self.0
    }
}

/// `x * x` (wrapping).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Square(pub u64);

impl Task for Square {
    const NAME: &'static str = "square";
    type Output = u64;
    fn run(self, _: &mut WorkerContext) -> u64 {
        self.0.wrapping_mul(self.0)
    }
}

/// Sleeps, then returns its argument.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sleep {
    /// How long.
    pub millis: u64,
}

impl Task for Sleep {
    const NAME: &'static str = "sleep";
    type Output = u64;
    fn run(self, _: &mut WorkerContext) -> u64 {
        std::thread::sleep(std::time::Duration::from_millis(self.millis));
        self.millis
    }
}

/// Sleeps, then returns the pid of the process that ran it: which worker
/// ran which of several long tasks (load balance).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepWho {
    /// How long.
    pub millis: u64,
}

impl Task for SleepWho {
    const NAME: &'static str = "sleep_who";
    type Output = u32;
    fn run(self, _: &mut WorkerContext) -> u32 {
        std::thread::sleep(std::time::Duration::from_millis(self.millis));
        std::process::id()
    }
}

/// Burns CPU for `iterations` rounds of a xorshift; returns the state.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spin {
    /// Rounds.
    pub iterations: u64,
}

impl Task for Spin {
    const NAME: &'static str = "spin";
    type Output = u64;
    fn run(self, _: &mut WorkerContext) -> u64 {
        spin(self.iterations)
    }
}

/// The computation behind [`Spin`], for callers that want it in-process.
pub fn spin(iterations: u64) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..iterations {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x)
}

/// Which worker ran it: `(worker slot, pid)`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhoAmI;

impl Task for WhoAmI {
    const NAME: &'static str = "whoami";
    type Output = (usize, u32);
    fn run(self, ctx: &mut WorkerContext) -> (usize, u32) {
        (ctx.worker_id(), std::process::id())
    }
}

/// Where a task ran: host, process, and the launcher's placement (Slurm or
/// MPI), for pools whose workers are spread over machines.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhereAmI;

/// [`WhereAmI`]'s answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Placement {
    /// The host's name (`/proc/sys/kernel/hostname`).
    pub host: String,
    /// The worker's process id on that host.
    pub pid: u32,
    /// The worker's slot in the pool.
    pub worker_id: usize,
    /// `SLURM_JOB_ID.SLURM_STEP_ID`, under Slurm.
    pub slurm_step: Option<String>,
    /// The launcher's rank for this process (`SLURM_PROCID` or
    /// `OMPI_COMM_WORLD_RANK` / `PMI_RANK`).
    pub rank: Option<u32>,
}

impl Task for WhereAmI {
    const NAME: &'static str = "where_am_i";
    type Output = Placement;
    fn run(self, ctx: &mut WorkerContext) -> Placement {
        let var = |k: &str| std::env::var(k).ok();
        Placement {
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            pid: std::process::id(),
            worker_id: ctx.worker_id(),
            slurm_step: var("SLURM_JOB_ID")
                .zip(var("SLURM_STEP_ID"))
                .map(|(j, s)| format!("{j}.{s}")),
            rank: ["SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"]
                .iter()
                .find_map(|k| var(k)?.parse().ok()),
        }
    }
}

/// Counts the tasks this worker process has run (state in the context).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountCalls;

/// The counter [`CountCalls`] keeps in the worker's context.
#[derive(Debug, Default)]
pub struct CallCount(pub u64);

impl Task for CountCalls {
    const NAME: &'static str = "count_calls";
    type Output = (u32, u64);
    fn run(self, ctx: &mut WorkerContext) -> (u32, u64) {
        if ctx.get::<CallCount>().is_none() {
            ctx.insert(CallCount::default());
        }
        let c = ctx.get_mut::<CallCount>().expect("just inserted");
        c.0 += 1;
        (std::process::id(), c.0)
    }
}

/// [`CountCalls`] with a byte string along (large ones cross the socket
/// apart from their frame: the work-ring order test mixes both); returns
/// the process id, its count (the same counter as `CountCalls`) and the
/// bytes' length.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CountCallsWith(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl Task for CountCallsWith {
    const NAME: &'static str = "count_calls_with";
    type Output = (u32, u64, usize);
    fn run(self, ctx: &mut WorkerContext) -> (u32, u64, usize) {
        let (pid, count) = CountCalls.run(ctx);
        (pid, count, self.0.len())
    }
}

/// A fallible task: `Err` for odd numbers. The `Err` is the task's own
/// value (`Ok(Err(..))` at the caller), not a pool error.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked(pub u64);

impl Task for Checked {
    const NAME: &'static str = "checked";
    type Output = Result<u64, String>;
    fn run(self, _: &mut WorkerContext) -> Result<u64, String> {
        if self.0 % 2 == 1 {
            Err(format!("{} is odd", self.0))
        } else {
            Ok(self.0 / 2)
        }
    }
}

/// Initializer: stores a greeting in every worker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SetGreeting(pub String);

/// The greeting [`SetGreeting`] stores.
#[derive(Debug, Clone)]
pub struct Greeting(pub String);

impl Initializer for SetGreeting {
    const NAME: &'static str = "set_greeting";
    fn init(self, ctx: &mut WorkerContext) -> Result<(), InitError> {
        ctx.insert(Greeting(self.0));
        Ok(())
    }
}

/// Reads the greeting an initializer left (`None` without one).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greet;

impl Task for Greet {
    const NAME: &'static str = "greet";
    type Output = Option<String>;
    fn run(self, ctx: &mut WorkerContext) -> Option<String> {
        ctx.get::<Greeting>().map(|g| g.0.clone())
    }
}

/// Every built-in task and initializer.
pub fn registry() -> Registry {
    Registry::new()
        .task::<Echo>()
        .task::<EchoVec>()
        .task::<EchoShared>()
        .task::<SumShared>()
        .task::<MakeShared>()
        .task::<EchoRecords>()
        .task::<Square>()
        .task::<Sleep>()
        .task::<SleepWho>()
        .task::<Spin>()
        .task::<WhoAmI>()
        .task::<WhereAmI>()
        .task::<CountCalls>()
        .task::<CountCallsWith>()
        .task::<Checked>()
        .task::<Greet>()
        .initializer::<SetGreeting>()
        .merge(drill::registry())
        .merge(probe::registry())
}
