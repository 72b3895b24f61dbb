//! `procpool overhead`: runs the same tasks on a `ThreadPool` and a
//! `ProcessPool` over a sweep of payload sizes and chunk sizes, next to a raw
//! socket ping-pong measured in the same run, and collects the numbers into
//! a [`Report`] (printed by `report`).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use procpool::{
    Cost, Executor, Launcher, ProcessPool, SharedBytes, Shutdown, Task, ThreadPool, Transport,
    WorkerCommand,
};
use procpool_tasks::{Echo, EchoRecords, EchoShared, EchoVec, Record};
use serde::Serialize;

use crate::raw;
use crate::stats::{median, median_duration};
use crate::sweep::{self, CHUNK_ROUNDS, CHUNKSIZES, ChunkRow};

/// Payload sizes of the sweep.
pub const SIZES: [u64; 5] = [16, 1 << 10, 64 << 10, 1 << 20, 16 << 20];

/// What the payload is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `procpool_tasks::Echo`: bytes through `serde_bytes`.
    Echo,
    /// `procpool_tasks::EchoVec`: bytes as a plain serde `Vec<u8>`.
    EchoVec,
    /// `procpool_tasks::EchoRecords`: structs of numbers and strings.
    EchoRecords,
    /// `procpool_tasks::EchoShared`: a `SharedBytes` (a sealed memory file
    /// passed with the frame to a local worker; inline over TCP).
    EchoShared,
}

impl Kind {
    /// Every kind, in table order.
    pub const ALL: [Kind; 4] = [
        Kind::Echo,
        Kind::EchoVec,
        Kind::EchoRecords,
        Kind::EchoShared,
    ];

    /// The task's type name.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Echo => "Echo",
            Kind::EchoVec => "EchoVec",
            Kind::EchoRecords => "EchoRecords",
            Kind::EchoShared => "EchoShared",
        }
    }
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers in each pool.
    pub workers: usize,
    /// A shorter run (smaller time budgets and repetition counts).
    pub quick: bool,
    /// The process pool's workers dial back over TCP.
    pub tcp: bool,
    /// Launch them with `srun` over this many nodes.
    pub srun_nodes: Option<u32>,
    /// The address they dial (with `srun_nodes`).
    pub advertise: Option<String>,
}

impl Options {
    /// How the process pool reaches its workers, for the report.
    pub fn transport(&self) -> String {
        match (self.tcp, self.srun_nodes) {
            (_, Some(n)) => format!("TCP, workers launched by srun over {n} node(s)"),
            (true, None) => "TCP loopback".into(),
            (false, None) => "local socketpair".into(),
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line as typed.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub settings: Settings,
    /// Raw socket round trips, by size.
    pub raw: Vec<RawRow>,
    /// One task in flight, by size and kind.
    pub payloads: Vec<PayloadRow>,
    /// `map(Square)` throughput, by chunk size.
    pub chunksize: Vec<ChunkRow>,
    /// Conclusions drawn from the numbers.
    pub advice: Vec<String>,
    /// Problems of the library this run ran into.
    pub known_issues: Vec<String>,
    /// Wall time of the whole measurement, in seconds.
    pub wall_time_s: f64,
}

/// The machine.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `std::thread::available_parallelism()`.
    pub logical_cpus: usize,
    /// `model name` from /proc/cpuinfo, where present.
    pub cpu_model: Option<String>,
}

/// The settings of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Workers in each pool.
    pub workers: usize,
    /// `--quick`.
    pub quick: bool,
    /// How the process pool reaches its workers.
    pub transport: String,
    /// Whether this binary was built with optimizations.
    pub release_build: bool,
}

/// The raw baseline at one size.
#[derive(Debug, Clone, Serialize)]
pub struct RawRow {
    /// Payload bytes (the frame adds a 4-byte length).
    pub size: u64,
    /// Round trips timed (of each kind).
    pub reps: usize,
    /// Median round trip, both ends blocking at once: the baseline the
    /// `proc/raw` column divides by.
    pub median_ns: u64,
    /// Median round trip, both ends looking for up to
    /// [`procpool_baseline::LOOK`] before they block, as the pool's threads
    /// do (timed in turns with `median_ns`'s).
    pub looking_median_ns: u64,
}

/// One size and kind: thread pool vs process pool.
#[derive(Debug, Clone, Serialize)]
pub struct PayloadRow {
    /// Nominal payload size.
    pub size: u64,
    /// What the payload is.
    pub kind: Kind,
    /// Encoded input bytes the process pool sent (median).
    pub wire_bytes: Option<u64>,
    /// The thread pool, submit → result.
    pub thread: Option<Latency>,
    /// The process pool, submit → result, and where the time went.
    pub process: Option<ProcessLatency>,
    /// Process pool median / raw socket median at the same size.
    pub process_vs_raw: Option<f64>,
    /// Process pool median / thread pool median.
    pub process_vs_thread: Option<f64>,
    /// Why the process pool was not measured, when it was not.
    pub skipped: Option<String>,
}

/// Round trips on a thread pool.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Tasks timed.
    pub reps: usize,
    /// Median submit → result.
    pub median_ns: u64,
}

/// Round trips on a process pool, with the medians of their [`Cost`] parts.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessLatency {
    /// Tasks timed.
    pub reps: usize,
    /// Median submit → result in the caller's hands.
    pub median_ns: u64,
    /// Median `Cost::total` (submit → decoded, in the pool's reader thread).
    pub cost_total_ns: u64,
    /// Median `encode_input + encode_output`.
    pub encode_ns: u64,
    /// Median `decode_input + decode_output`.
    pub decode_ns: u64,
    /// Median `Cost::ipc`.
    pub ipc_ns: u64,
    /// Median `Cost::run`.
    pub run_ns: u64,
    /// Median `Cost::queue_wait`.
    pub queue_wait_ns: u64,
    /// Median `Cost::serialization()`.
    pub serialization_ns: u64,
    /// Median over tasks of `serialization() / round trip`.
    pub serialization_share: f64,
}

/// How many round trips to time at one size.
#[derive(Debug, Clone, Copy)]
struct Plan {
    warmup: usize,
    min_reps: usize,
    max_reps: usize,
    budget: Duration,
}

impl Plan {
    fn for_size(size: u64, quick: bool) -> Plan {
        let (warmup, min_reps, max_reps, budget_ms): (usize, usize, usize, u64) = match size {
            s if s <= 1 << 10 => (50, 200, 20_000, 400),
            s if s <= 64 << 10 => (10, 50, 5_000, 400),
            s if s <= 1 << 20 => (3, 15, 1_000, 500),
            _ => (1, 5, 100, 800),
        };
        if quick {
            Plan {
                warmup: warmup.div_ceil(5),
                min_reps: (min_reps / 4).max(3),
                max_reps,
                budget: Duration::from_millis(budget_ms / 4),
            }
        } else {
            Plan {
                warmup,
                min_reps,
                max_reps,
                budget: Duration::from_millis(budget_ms),
            }
        }
    }

    /// Thread-pool round trips are cheap and steady: half the budget.
    fn for_threads(self) -> Plan {
        Plan {
            budget: self.budget / 2,
            ..self
        }
    }
}

/// A process-pool round trip slower than this is not repeated.
fn skip_limit(quick: bool) -> Duration {
    if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_millis(1500)
    }
}

/// Timed round trips and, where the pool measured them, their costs.
#[derive(Debug, Default)]
struct Samples {
    wall: Vec<Duration>,
    costs: Vec<Cost>,
}

/// A payload of `size` bytes in the given kind, ready to be cloned into tasks.
enum Payload {
    Bytes(Vec<u8>),
    Records(Vec<Record>),
}

fn bytes_of(size: u64) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// Bytes of a bincode varint (standard config) for `x`.
fn varint_len(x: u64) -> u64 {
    match x {
        0..=250 => 1,
        251..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Estimated encoded size of one record (bincode standard config: varint
/// integers and lengths, f64 as 8 bytes). The measured `bytes_out` is
/// reported next to it, so a wrong estimate shows.
fn record_wire_len(r: &Record) -> u64 {
    let string = |s: &str| varint_len(s.len() as u64) + s.len() as u64;
    varint_len(r.id)
        + string(&r.name)
        + 8
        + varint_len(r.tags.len() as u64)
        + r.tags.iter().map(|t| string(t)).sum::<u64>()
}

/// The records whose encoding first reaches `size` (at least one).
fn records_for(size: u64) -> Vec<Record> {
    let target = size;
    // Every record encodes to more than 16 bytes: this many is enough.
    let mut records = Record::sample((target / 16 + 2) as usize);
    let mut total = varint_len(records.len() as u64);
    let mut keep = records.len();
    for (i, r) in records.iter().enumerate() {
        total += record_wire_len(r);
        if total >= target {
            keep = i + 1;
            break;
        }
    }
    records.truncate(keep.max(1));
    records
}

/// Checks that a valid records payload of about 40 KB round-trips (a
/// regression check: procpool-wire once refused structured payloads whose
/// decoded numbers claimed more memory than their encoded length).
/// `Some(error)` when it does not: the report says so.
fn records_decode_bug(pool: &ProcessPool) -> Option<String> {
    let records = Record::sample(1100);
    let n = records.len();
    match pool
        .submit(EchoRecords(records))
        .map_err(|e| e.to_string())
        .and_then(|f| f.result().map_err(|e| e.to_string()))
    {
        Ok(out) if out.len() == n => None,
        Ok(_) => Some("EchoRecords of 1100 records came back with a different length".into()),
        Err(e) => Some(format!(
            "a valid EchoRecords payload of 1100 records (~40 KB) fails on the process pool: {e}"
        )),
    }
}

/// Times one submit → result.
fn one<E: Executor, T: Task>(
    pool: &E,
    task: T,
    check: impl Fn(&T::Output) -> bool,
) -> Result<(Duration, Option<Cost>), String> {
    let start = Instant::now();
    let f = pool.submit(task).map_err(|e| e.to_string())?;
    f.wait();
    let cost = f.cost();
    let out = f.result().map_err(|e| e.to_string())?;
    let wall = start.elapsed();
    if !check(&out) {
        return Err(format!("{} returned the wrong value", T::NAME));
    }
    drop(out);
    Ok((wall, cost))
}

fn time_tasks<E: Executor, T: Task>(
    pool: &E,
    plan: Plan,
    make: impl Fn() -> T,
    check: impl Fn(&T::Output) -> bool,
) -> Result<Samples, String> {
    for _ in 0..plan.warmup {
        one(pool, make(), &check)?;
    }
    let mut s = Samples::default();
    let start = Instant::now();
    while s.wall.len() < plan.max_reps
        && (s.wall.len() < plan.min_reps || start.elapsed() < plan.budget)
    {
        let (wall, cost) = one(pool, make(), &check)?;
        s.wall.push(wall);
        s.costs.extend(cost);
    }
    Ok(s)
}

fn time_kind<E: Executor>(
    pool: &E,
    plan: Plan,
    payload: &Payload,
    kind: Kind,
) -> Result<Samples, String> {
    match (kind, payload) {
        (Kind::Echo, Payload::Bytes(b)) => {
            time_tasks(pool, plan, || Echo(b.clone()), |o| o.len() == b.len())
        }
        (Kind::EchoVec, Payload::Bytes(b)) => {
            time_tasks(pool, plan, || EchoVec(b.clone()), |o| o.len() == b.len())
        }
        (Kind::EchoShared, Payload::Bytes(b)) => {
            // Made once: every round trip sends the same value (the first
            // send seals it into a memory file, the echo brings that back).
            let shared = SharedBytes::from(b.clone());
            time_tasks(
                pool,
                plan,
                || EchoShared(shared.clone()),
                |o| o.len() == b.len(),
            )
        }
        (Kind::EchoRecords, Payload::Records(r)) => time_tasks(
            pool,
            plan,
            || EchoRecords(r.clone()),
            |o| o.len() == r.len(),
        ),
        _ => Err(format!("no {} payload prepared", kind.label())),
    }
}

fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

fn median_of(costs: &[Cost], part: impl Fn(&Cost) -> Duration) -> u64 {
    ns(median_duration(&costs.iter().map(part).collect::<Vec<_>>()))
}

fn process_latency(s: &Samples) -> ProcessLatency {
    let shares: Vec<f64> = s
        .costs
        .iter()
        .zip(&s.wall)
        .map(|(c, w)| c.serialization().as_secs_f64() / w.as_secs_f64().max(1e-12))
        .collect();
    ProcessLatency {
        reps: s.wall.len(),
        median_ns: ns(median_duration(&s.wall)),
        cost_total_ns: median_of(&s.costs, |c| c.total),
        encode_ns: median_of(&s.costs, |c| c.encode_input + c.encode_output),
        decode_ns: median_of(&s.costs, |c| c.decode_input + c.decode_output),
        ipc_ns: median_of(&s.costs, |c| c.ipc),
        run_ns: median_of(&s.costs, |c| c.run),
        queue_wait_ns: median_of(&s.costs, |c| c.queue_wait),
        serialization_ns: median_of(&s.costs, Cost::serialization),
        serialization_share: median(&shares).unwrap_or(0.0),
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// The CPU model from /proc/cpuinfo, where present.
fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| {
            let k = k.trim();
            k == "model name" || k == "Model" || k == "cpu model"
        })
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn progress(steps: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {wide_msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Measures everything and returns the report (advice included).
pub fn run(opts: &Options, command: String) -> Result<Report, String> {
    let started = Instant::now();
    let machine = Machine {
        logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpu_model(),
    };
    let remote = opts.tcp || opts.srun_nodes.is_some();
    let pools_in_sweep = if remote { 3 } else { 2 };
    let steps =
        SIZES.len() * (1 + 2 * Kind::ALL.len()) + pools_in_sweep * CHUNKSIZES.len() * CHUNK_ROUNDS;
    let bar = progress(steps as u64);
    bar.set_message("starting pools and the raw echo peer");

    let threads = ThreadPool::builder()
        .workers(opts.workers)
        .build()
        .map_err(|e| format!("cannot start the thread pool: {e}"))?;
    let mut builder = ProcessPool::builder()
        .worker(WorkerCommand::current_exe())
        .workers(opts.workers);
    if opts.tcp {
        builder = builder.transport(Transport::Tcp);
    }
    if let Some(nodes) = opts.srun_nodes {
        let per_node = opts.workers.div_ceil(nodes as usize) as u32;
        builder = builder.launcher(
            Launcher::srun()
                .nodes(nodes)
                .tasks_per_node(per_node)
                .overcommit(true),
        );
    }
    if let Some(a) = &opts.advertise {
        builder = builder.advertise(a.clone());
    } else if opts.srun_nodes.is_none() {
        builder = builder.listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    let procs = builder
        .build()
        .map_err(|e| format!("cannot start the process pool: {e}"))?;
    let mut peer = raw::start_peer(raw::Wait::Block)
        .map_err(|e| format!("cannot start the raw echo peer: {e}"))?;
    let mut looking_peer = raw::start_peer(raw::Wait::Look)
        .map_err(|e| format!("cannot start the looking raw echo peer: {e}"))?;
    let known_issues: Vec<String> = records_decode_bug(&procs).into_iter().collect();

    let mut raw_rows = Vec::new();
    let mut rows: Vec<PayloadRow> = Vec::new();
    for &size in &SIZES {
        let plan = Plan::for_size(size, opts.quick);

        // The raw baseline at this size, right before the pools at this size.
        bar.set_message(format!(
            "{}: raw socket ping-pong",
            crate::stats::fmt_bytes(size)
        ));
        let frame = raw::frame(&bytes_of(size));
        let once = |peer: &mut raw::EchoPeer| {
            raw::round_trip(peer, &frame).map_err(|e| format!("raw baseline: {e}"))
        };
        for _ in 0..plan.warmup {
            once(&mut peer)?;
            once(&mut looking_peer)?;
        }
        // The two ways of waiting take turns, so a spell of the host's
        // falls on both.
        let (mut walls, mut looking) = (Vec::new(), Vec::new());
        let t = Instant::now();
        while walls.len() < plan.max_reps
            && (walls.len() < plan.min_reps || t.elapsed() < plan.budget * 2)
        {
            walls.push(once(&mut peer)?);
            looking.push(once(&mut looking_peer)?);
        }
        drop(frame);
        let raw_median = ns(median_duration(&walls));
        raw_rows.push(RawRow {
            size,
            reps: walls.len(),
            median_ns: raw_median,
            looking_median_ns: ns(median_duration(&looking)),
        });
        bar.inc(1);

        let bytes = Payload::Bytes(bytes_of(size));
        let records = Payload::Records(records_for(size));
        for kind in Kind::ALL {
            let payload = if kind == Kind::EchoRecords {
                &records
            } else {
                &bytes
            };
            let what = format!("{} {}", crate::stats::fmt_bytes(size), kind.label());

            bar.set_message(format!("{what} on the thread pool"));
            let mut failed = Vec::new();
            let thread = match time_kind(&threads, plan.for_threads(), payload, kind) {
                Ok(t) => Some(Latency {
                    reps: t.wall.len(),
                    median_ns: ns(median_duration(&t.wall)),
                }),
                Err(e) => {
                    failed.push(format!("thread pool failed: {e}"));
                    None
                }
            };
            bar.inc(1);

            bar.set_message(format!("{what} on the process pool"));
            // Predict from the previous size (16× the bytes); probe otherwise.
            let limit = skip_limit(opts.quick);
            let predicted = rows
                .iter()
                .rev()
                .find(|r| r.kind == kind && r.size < size)
                .and_then(|r| Some((r.size, r.process.as_ref()?.median_ns)))
                .map(|(prev, m)| Duration::from_nanos(m.saturating_mul(size / prev.max(1))));
            let mut skipped = None;
            let mut process = None;
            let mut wire_bytes = None;
            if let Some(p) = predicted.filter(|p| *p > limit) {
                skipped = Some(format!(
                    "skipped: ~{} per task predicted from the smaller size (limit {})",
                    crate::stats::fmt_duration(p),
                    crate::stats::fmt_duration(limit)
                ));
            } else {
                let probe = time_kind(
                    &procs,
                    Plan {
                        warmup: 0,
                        min_reps: 1,
                        max_reps: 1,
                        budget: Duration::ZERO,
                    },
                    payload,
                    kind,
                );
                let first = probe.as_ref().ok().and_then(|p| p.wall.first().copied());
                if let Err(e) = probe {
                    failed.push(format!("process pool failed: {e}"));
                } else if let Some(first) = first.filter(|f| *f > limit) {
                    skipped = Some(format!(
                        "skipped: one task took {} (limit {})",
                        crate::stats::fmt_duration(first),
                        crate::stats::fmt_duration(limit)
                    ));
                } else {
                    let plan = Plan {
                        warmup: plan.warmup.saturating_sub(1),
                        ..plan
                    };
                    match time_kind(&procs, plan, payload, kind) {
                        Ok(s) => {
                            let bytes_out: Vec<f64> =
                                s.costs.iter().map(|c| c.bytes_out as f64).collect();
                            wire_bytes = median(&bytes_out).map(|b| b as u64);
                            process = Some(process_latency(&s));
                        }
                        Err(e) => failed.push(format!("process pool failed: {e}")),
                    }
                }
            }
            if !failed.is_empty() {
                skipped = Some(failed.join("; "));
            }
            bar.inc(1);
            let process_vs_raw = process
                .as_ref()
                .and_then(|p| ratio(p.median_ns, raw_median));
            let process_vs_thread = process
                .as_ref()
                .zip(thread.as_ref())
                .and_then(|(p, t)| ratio(p.median_ns, t.median_ns));
            rows.push(PayloadRow {
                size,
                kind,
                wire_bytes,
                thread,
                process,
                process_vs_raw,
                process_vs_thread,
                skipped,
            });
        }
    }
    drop((peer, looking_peer));

    // A pool that is not local is held against a local one in the same
    // sweep (issue 14: TCP's rate as a share of the local one).
    let local = if remote {
        bar.set_message("starting a local process pool to compare with");
        Some(
            ProcessPool::builder()
                .worker(WorkerCommand::current_exe())
                .workers(opts.workers)
                .build()
                .map_err(|e| format!("cannot start the local process pool: {e}"))?,
        )
    } else {
        None
    };

    let chunk_rows = sweep::run(&threads, &procs, local.as_ref(), opts.quick, &bar)?;
    bar.set_message("shutting down");
    threads.shutdown(Shutdown::Wait);
    procs.shutdown(Shutdown::Wait);
    if let Some(local) = local {
        local.shutdown(Shutdown::Wait);
    }
    bar.finish_and_clear();

    let mut report = Report {
        command,
        machine,
        settings: Settings {
            workers: opts.workers,
            quick: opts.quick,
            transport: opts.transport(),
            release_build: !cfg!(debug_assertions),
        },
        raw: raw_rows,
        payloads: rows,
        chunksize: chunk_rows,
        advice: Vec::new(),
        known_issues,
        wall_time_s: started.elapsed().as_secs_f64(),
    };
    report.advice = crate::report::advice(&report);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_shrink_with_size_and_quick() {
        let small = Plan::for_size(16, false);
        let big = Plan::for_size(16 << 20, false);
        assert!(small.min_reps > big.min_reps);
        let quick = Plan::for_size(16, true);
        assert!(quick.budget < small.budget && quick.min_reps < small.min_reps);
        assert!(Plan::for_size(16 << 20, true).min_reps >= 3);
    }

    #[test]
    fn records_roughly_fill_the_size() {
        assert_eq!(records_for(16).len(), 1);
        let r = records_for(1 << 20);
        let wire: u64 = varint_len(r.len() as u64) + r.iter().map(record_wire_len).sum::<u64>();
        assert!(
            ((1 << 20)..(1 << 20) + (1 << 20) / 50).contains(&wire),
            "{wire}"
        );
        assert_eq!(varint_len(250), 1);
        assert_eq!(varint_len(251), 3);
        assert_eq!(varint_len(70_000), 5);
        assert_eq!(bytes_of(300).len(), 300);
    }

    #[test]
    fn thread_pool_measurements_work_in_process() {
        let pool = ThreadPool::builder().workers(1).build().unwrap();
        let plan = Plan {
            warmup: 1,
            min_reps: 3,
            max_reps: 3,
            budget: Duration::ZERO,
        };
        let s = time_kind(&pool, plan, &Payload::Bytes(bytes_of(100)), Kind::Echo).unwrap();
        assert_eq!(s.wall.len(), 3);
    }
}
