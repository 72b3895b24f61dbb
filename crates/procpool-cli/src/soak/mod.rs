//! The chaos soak (`procpool soak`): several threads submit a seeded random
//! mix of tasks — values of many sizes, sleeps, panics, aborts, exits,
//! SIGKILLs, hangs with timeouts — to one shared `ProcessPool` (and one
//! `ThreadPool`), cancel, kill, drop, wait on and `map` them, while a
//! monkey thread stops the pools in every way (`Wait`, `CancelPending`,
//! `Kill`, dropping the last handle, `Wait` racing `Kill`) and builds new
//! ones. At the end it gives a verdict: every input got exactly one
//! outcome of a kind it allows ([`ledger`]), and nothing leaked
//! ([`probe`]): descriptors, threads, child processes, `procpool-*` temp
//! entries, memory. A hang (a thread stuck past the run plus a grace
//! period) is a failure too, reported with what each thread was doing.
//!
//! The seed replays the same choices on each thread, not the same timing.

pub mod chaos;
mod driver;
pub mod ledger;
pub mod probe;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use procpool::WorkerCommand;

pub use chaos::registry;
use chaos::{PLANNED_PANIC, Rng};
use driver::{PoolRef, Shared};
use ledger::{Kind, Ledger, Tally};

/// How to soak.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the threads keep going.
    pub duration: Duration,
    /// The seed of every random choice.
    pub seed: u64,
    /// Driver threads (one of them drives the thread pool when
    /// `thread_pool` is set and there are at least two).
    pub threads: usize,
    /// Workers (processes or threads) per pool.
    pub workers: usize,
    /// The worker program; its registry must include [`registry`].
    pub worker: WorkerCommand,
    /// How the process pools reach their workers (over TCP each worker
    /// also has its keeper process).
    pub transport: procpool::Transport,
    /// Also soak a `ThreadPool`.
    pub thread_pool: bool,
    /// Largest allowed RSS growth (bytes) from the end of the warm-up to the
    /// end of the run.
    pub rss_growth_limit: u64,
    /// How long after the run ends a thread may still be busy before it
    /// counts as hung.
    pub hang_grace: Duration,
    /// How long resources may take to return to where they started.
    pub settle: Duration,
    /// Print a progress line this often (to stderr).
    pub progress: Option<Duration>,
    /// Keep the panic hook quiet about the soak's planned panics.
    pub quiet_panics: bool,
    /// Break an invariant on purpose, to prove the verdict catches it.
    pub inject: Option<Fault>,
}

/// A fault the soak can plant in itself (`procpool soak --inject ...`), so
/// a test can see the verdict fail for the right reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Opens a file and never closes it.
    LeakFd,
    /// Registers an input whose future is dropped without ever resolving.
    LoseOutcome,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Fault, String> {
        match s {
            "leak-fd" => Ok(Fault::LeakFd),
            "lose-outcome" => Ok(Fault::LoseOutcome),
            _ => Err(format!("`{s}`: expected leak-fd or lose-outcome")),
        }
    }
}

impl Options {
    /// Defaults for a run of `duration` with `worker`.
    pub fn new(duration: Duration, worker: WorkerCommand) -> Options {
        Options {
            duration,
            seed: fresh_seed(),
            threads: 4,
            workers: 2,
            worker,
            transport: procpool::Transport::Local,
            thread_pool: true,
            rss_growth_limit: 64 << 20,
            hang_grace: Duration::from_secs(60),
            settle: Duration::from_secs(10),
            progress: None,
            quiet_panics: true,
            inject: None,
        }
    }
}

/// A seed from the clock and the pid.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut r = Rng::new(nanos, u64::from(std::process::id()));
    r.next_u64()
}

/// What a soak found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed (to replay the same choices).
    pub seed: u64,
    /// How long the threads ran.
    pub ran: Duration,
    /// Pool replacements by the monkey.
    pub rebuilds: u64,
    /// The outcomes and every rule they broke.
    pub tally: Tally,
    /// Threads still busy past the grace period, with what they were doing.
    pub hangs: Vec<String>,
    /// What did not return to where it started.
    pub leaks: Vec<String>,
    /// RSS at the end of the warm-up, and at the end.
    pub rss_warm: u64,
    /// RSS at the end (all pools stopped).
    pub rss_end: u64,
    /// The largest RSS seen.
    pub rss_peak: u64,
    /// The allowed growth.
    pub rss_limit: u64,
    /// Descriptors, threads before and after.
    pub fds: (usize, usize),
    /// Threads before and after.
    pub threads: (usize, usize),
}

impl Report {
    /// Every input got one allowed outcome, nothing leaked, nothing hung.
    pub fn passed(&self) -> bool {
        self.tally.violations.is_empty()
            && self.hangs.is_empty()
            && self.leaks.is_empty()
            && !self.rss_exceeded()
    }

    /// RSS grew past the limit.
    pub fn rss_exceeded(&self) -> bool {
        self.rss_end.saturating_sub(self.rss_warm) > self.rss_limit
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcomes: u64 = self.tally.counts.values().sum();
        writeln!(
            f,
            "soak: {:.1} s, seed {:#x}, {} inputs, {} outcomes, {} pool replacements",
            self.ran.as_secs_f64(),
            self.seed,
            self.tally.inputs,
            outcomes,
            self.rebuilds
        )?;
        writeln!(f, "outcomes:")?;
        for (k, n) in &self.tally.counts {
            writeln!(f, "  {:<34} {n}", k.to_string())?;
        }
        writeln!(f, "pools:")?;
        for (what, n) in &self.tally.pools {
            writeln!(f, "  {what:<50} {n}")?;
        }
        writeln!(
            f,
            "resources: fds {} → {}, threads {} → {}, rss {:.1} MiB after warm-up → {:.1} MiB at the end (peak {:.1} MiB; growth limit {:.0} MiB)",
            self.fds.0,
            self.fds.1,
            self.threads.0,
            self.threads.1,
            mib(self.rss_warm),
            mib(self.rss_end),
            mib(self.rss_peak),
            mib(self.rss_limit)
        )?;
        if !self.tally.violations.is_empty() {
            writeln!(
                f,
                "VIOLATIONS ({}):\n{}",
                self.tally.violations.total(),
                self.tally.violations
            )?;
        }
        for h in &self.hangs {
            writeln!(f, "HANG: {h}")?;
        }
        for l in &self.leaks {
            writeln!(f, "LEAK: {l}")?;
        }
        if self.rss_exceeded() {
            writeln!(
                f,
                "LEAK: memory: rss grew {:.1} MiB after the warm-up (limit {:.0} MiB)",
                mib(self.rss_end.saturating_sub(self.rss_warm)),
                mib(self.rss_limit)
            )?;
        }
        write!(
            f,
            "verdict: {}",
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

/// Runs a soak as `opts` say and returns what it found. Never hangs: a
/// thread stuck past the run and `hang_grace` is reported and left behind.
pub fn run(opts: &Options) -> Report {
    let quiet = opts.quiet_panics.then(QuietPanics::install);
    let before = probe::snapshot();
    let start = Instant::now();
    let ledger = Arc::new(Ledger::new());
    let n_threads = opts.threads.max(1);
    let thread_pool = opts.thread_pool && n_threads >= 2;
    let names: Vec<String> = (0..n_threads)
        .map(|i| {
            if thread_pool && i == 0 {
                "driver 0 (thread pool)".to_owned()
            } else {
                format!("driver {i} (process pool)")
            }
        })
        .chain(["monkey".to_owned(), "final shutdown".to_owned()])
        .collect();
    let sh = Arc::new(Shared {
        ledger: ledger.clone(),
        deadline: start + opts.duration,
        workers: opts.workers.max(1),
        worker: opts.worker.clone(),
        transport: opts.transport,
        process: Mutex::new(None),
        thread: Mutex::new(None),
        status: names
            .iter()
            .map(|_| Mutex::new(("starting".to_owned(), start)))
            .collect(),
        abort: AtomicBool::new(false),
        rebuilds: AtomicU64::new(0),
        ops: AtomicU64::new(0),
    });
    match sh.build_process() {
        Ok(p) => *sh.process.lock().unwrap_or_else(|p| p.into_inner()) = Some(p),
        Err(e) => ledger.violation("a pool failed to build", e),
    }
    if thread_pool {
        match sh.build_thread() {
            Ok(p) => *sh.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(p),
            Err(e) => ledger.violation("a pool failed to build", e),
        }
    }

    match opts.inject {
        Some(Fault::LeakFd) => {
            if let Ok(f) = std::fs::File::open("/proc/self/stat") {
                std::mem::forget(f);
            }
        }
        Some(Fault::LoseOutcome) => {
            let id = ledger.register(0, ledger::Via::Submit, "injected", Kind::Value);
            ledger.detached(id);
        }
        None => {}
    }

    let (done_tx, done_rx) = mpsc::channel::<usize>();
    for i in 0..=n_threads {
        let (sh, tx) = (sh.clone(), done_tx.clone());
        let rng = Rng::new(opts.seed, i as u64);
        std::thread::Builder::new()
            .name(format!("soak-{i}"))
            .spawn(move || {
                if i == n_threads {
                    driver::monkey(&sh, i, rng, thread_pool);
                } else {
                    driver::drive(&sh, i, rng, thread_pool && i == 0);
                }
                let _ = tx.send(i);
            })
            .expect("a soak thread starts");
    }
    drop(done_tx);

    // Wait for the threads, sampling memory; warm-up is the first quarter
    // (at most 30 s).
    let warm_at = start + (opts.duration / 4).min(Duration::from_secs(30));
    let give_up = start + opts.duration + opts.hang_grace;
    let (mut rss_warm, mut rss_peak) = (None, 0);
    let mut finished = vec![false; n_threads + 1];
    let mut last_progress = start;
    while finished.iter().any(|d| !d) {
        match done_rx.recv_timeout(Duration::from_millis(250)) {
            Ok(i) => finished[i] = true,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        let rss = probe::rss();
        rss_peak = rss_peak.max(rss);
        if rss_warm.is_none() && now >= warm_at {
            rss_warm = Some(rss);
        }
        if let Some(every) = opts.progress
            && now.duration_since(last_progress) >= every
        {
            last_progress = now;
            eprintln!(
                "soak: {:>4.0} s of {:.0} s, {} inputs, {} operations, {} pool replacements, rss {:.1} MiB",
                now.duration_since(start).as_secs_f64(),
                opts.duration.as_secs_f64(),
                ledger.inputs(),
                sh.ops.load(Ordering::Relaxed),
                sh.rebuilds.load(Ordering::Relaxed),
                mib(rss)
            );
        }
        if now >= give_up {
            break;
        }
    }
    let ran = start.elapsed();
    let mut hangs = stuck(&sh, &names, &finished);

    // Stop what is left, on a thread of its own so a hang is reported.
    let final_idx = n_threads + 1;
    if hangs.is_empty() {
        let (tx, rx) = mpsc::channel();
        let sh2 = sh.clone();
        let mut rng = Rng::new(opts.seed, final_idx as u64);
        std::thread::spawn(move || {
            let pools: Vec<PoolRef> = [&sh2.process, &sh2.thread]
                .iter()
                .filter_map(|slot| slot.lock().unwrap_or_else(|p| p.into_inner()).take())
                .collect();
            for p in pools {
                let how = driver::pick_stop(&mut rng);
                *sh2.status[final_idx]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = (format!("{how}"), Instant::now());
                sh2.stop(p, how);
            }
            let _ = tx.send(());
        });
        if rx.recv_timeout(opts.hang_grace).is_err() {
            let mut done = vec![true; names.len()];
            done[final_idx] = false;
            hangs = stuck(&sh, &names, &done);
        }
    }
    if !hangs.is_empty() {
        sh.abort.store(true, Ordering::Relaxed);
        drop(quiet);
        return Report {
            seed: opts.seed,
            ran,
            rebuilds: sh.rebuilds.load(Ordering::Relaxed),
            tally: ledger.tally_after(false),
            hangs,
            leaks: Vec::new(),
            rss_warm: rss_warm.unwrap_or(0),
            rss_end: rss_warm.unwrap_or(0),
            rss_peak,
            rss_limit: opts.rss_growth_limit,
            fds: (before.fds.len(), before.fds.len()),
            threads: (before.threads.len(), before.threads.len()),
        };
    }
    let rebuilds = sh.rebuilds.load(Ordering::Relaxed);
    drop(sh);

    // Every future has resolved once its pool stopped; callbacks may still
    // be finishing on the pools' last threads. Then resources settle.
    let settle_until = Instant::now() + opts.settle;
    while ledger.open() > 0 && Instant::now() < settle_until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut after = probe::snapshot();
    let mut leaks = probe::leaks(&before, &after);
    while !leaks.is_empty() && Instant::now() < settle_until {
        std::thread::sleep(Duration::from_millis(100));
        after = probe::snapshot();
        leaks = probe::leaks(&before, &after);
    }
    drop(quiet);
    let rss_end = after.rss;
    Report {
        seed: opts.seed,
        ran,
        rebuilds,
        tally: ledger.tally(),
        hangs,
        leaks,
        rss_warm: rss_warm.unwrap_or(rss_end),
        rss_end,
        rss_peak: rss_peak.max(rss_end),
        rss_limit: opts.rss_growth_limit,
        fds: (before.fds.len(), after.fds.len()),
        threads: (before.threads.len(), after.threads.len()),
    }
}

/// The threads not `finished`, with what each was doing and for how long.
fn stuck(sh: &Shared, names: &[String], finished: &[bool]) -> Vec<String> {
    finished
        .iter()
        .enumerate()
        .filter(|(_, d)| !**d)
        .map(|(i, _)| {
            let (op, since) = sh.status[i]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            format!(
                "{} stuck in `{op}` for {:.1} s",
                names[i],
                since.elapsed().as_secs_f64()
            )
        })
        .collect()
}

/// A panic hook that stays quiet about the soak's planned panics (in a
/// `ThreadPool`) and passes every other panic to the hook it replaced,
/// which it puts back when dropped.
struct QuietPanics;

type Hook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

static PREVIOUS: Mutex<Option<Arc<Hook>>> = Mutex::new(None);

impl QuietPanics {
    fn install() -> QuietPanics {
        let prev: Arc<Hook> = Arc::new(std::panic::take_hook());
        *PREVIOUS.lock().unwrap_or_else(|p| p.into_inner()) = Some(prev.clone());
        std::panic::set_hook(Box::new(move |info| {
            let planned = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|s| s.starts_with(PLANNED_PANIC));
            if !planned {
                prev(info);
            }
        }));
        QuietPanics
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        let _ = std::panic::take_hook();
        if let Some(prev) = PREVIOUS.lock().unwrap_or_else(|p| p.into_inner()).take() {
            std::panic::set_hook(Box::new(move |info| prev(info)));
        }
    }
}

/// The counts of a report by kind, for tests.
pub fn count(report: &Report, kind: Kind) -> u64 {
    report.tally.counts.get(&kind).copied().unwrap_or(0)
}
