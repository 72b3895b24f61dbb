//! Helpers the benches share: the raw Unix-socket baseline (an echo peer
//! process, no serde, no pool: `procpool-baseline`, the same one
//! `procpool overhead` uses), the interleaved loop each printed ratio comes
//! from, and the recorder of criterion's own samples (the cross-check
//! printed beside it).
//!
//! The echo peer is `procpool-bench-worker` started with
//! [`ENV_ECHO_PEER`] set to a socket path: it connects, then echoes
//! length-prefixed frames (a u32 little-endian length, the bytes) until EOF.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use procpool::{ProcessPool, WorkerCommand};
pub use procpool_baseline::{EchoPeer, frame};

/// Set (to a socket path) in the environment of `procpool-bench-worker` to
/// make it an echo peer instead of a procpool worker.
pub const ENV_ECHO_PEER: &str = "PROCPOOL_BENCH_ECHO_PEER";

/// The first line of a bench binary's worker `main`: if [`ENV_ECHO_PEER`] is
/// set, echo frames on that socket and exit; otherwise return.
pub fn run_echo_peer_if_requested() {
    let Some(path) = std::env::var_os(ENV_ECHO_PEER) else {
        return;
    };
    let code = match procpool_baseline::serve_peer(Path::new(&path)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("procpool-bench-worker (echo peer): {e}");
            2
        }
    };
    std::process::exit(code)
}

/// Starts one echo peer: `program` (`procpool-bench-worker`) in echo-peer
/// mode.
pub fn echo_peer(program: &str) -> io::Result<EchoPeer> {
    EchoPeer::start(|socket| peer_command(program, socket))
}

/// Starts `n` echo peers at once.
pub fn echo_peers(program: &str, n: usize) -> io::Result<Vec<EchoPeer>> {
    EchoPeer::start_many(n, |socket| peer_command(program, socket))
}

fn peer_command(program: &str, socket: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env(ENV_ECHO_PEER, socket);
    cmd
}

/// `len` bytes of a repeating, non-constant pattern (every byte value
/// occurs, so encodings that treat bytes ≥ 128 differently pay for it).
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) % 251) as u8).collect()
}

/// A process pool of `workers` running `procpool-bench-worker` at `program`.
pub fn process_pool(program: &str, workers: usize) -> ProcessPool {
    ProcessPool::builder()
        .worker(WorkerCommand::program(program))
        .workers(workers)
        .build()
        .unwrap_or_else(|e| panic!("cannot start a pool of {program}: {e}"))
}

/// Runs `f` `iters` times and returns how long that took: the body of an
/// `iter_custom` routine.
pub fn timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed()
}

/// A routine as `iter_custom` takes it: runs `iters` calls, returns the time
/// they took (setup inside it may stay off the clock).
pub type Routine<'a> = &'a mut dyn FnMut(u64) -> Duration;

/// Runs the routines in turn, `iters` calls each, for `rounds` rounds (the
/// order reversed every other round), and returns each one's median time
/// per call. Alternating keeps a contender and its baseline under the same
/// machine load, which criterion's one-after-the-other runs cannot on a
/// shared machine.
pub fn interleave(rounds: usize, iters: u64, routines: &mut [Routine<'_>]) -> Vec<Duration> {
    let n = routines.len();
    let mut per: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds.max(1) {
        for k in 0..n {
            let i = if round % 2 == 0 { k } else { n - 1 - k };
            let d = (routines[i])(iters.max(1));
            per[i].push(d.as_secs_f64() / iters.max(1) as f64);
        }
    }
    per.into_iter()
        .map(|v| Duration::from_secs_f64(median_of(v)))
        .collect()
}

fn median_of(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// `a / b` as a plain ratio.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// Per-iteration times of each bench's measured samples, taken inside
/// criterion's `iter_custom`: the ratio of criterion's own (sequential)
/// runs, printed beside the interleaved one as a cross-check, without
/// parsing criterion's output files.
///
/// Criterion calls the routine during warm-up too; only the last
/// `keep` calls of each bench (its measurement samples) are kept.
pub struct Recorder {
    keep: usize,
    samples: Mutex<BTreeMap<String, Vec<f64>>>,
}

impl Recorder {
    /// Keeps the last `keep` samples per bench: criterion's `sample_size`.
    pub fn new(keep: usize) -> Recorder {
        Recorder {
            keep: keep.max(1),
            samples: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one sample, `total` over `iters` calls, and returns `total`
    /// (so an `iter_custom` routine can end with it).
    pub fn record(&self, id: &str, total: Duration, iters: u64) -> Duration {
        let per = total.as_secs_f64() / iters.max(1) as f64;
        let mut map = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let v = map.entry(id.to_owned()).or_default();
        v.push(per);
        if v.len() > self.keep {
            v.remove(0);
        }
        total
    }

    /// Median time per call of `id`'s kept samples; `None` if it did not run
    /// (filtered out on the command line).
    pub fn median(&self, id: &str) -> Option<Duration> {
        let map = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let v = map.get(id)?.clone();
        if v.is_empty() {
            return None;
        }
        Some(Duration::from_secs_f64(median_of(v)))
    }

    /// `median(a) / median(b)`, when both ran.
    pub fn ratio(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.median(a)?, self.median(b)?);
        Some(a.as_secs_f64() / b.as_secs_f64())
    }
}

/// Whether criterion is measuring (`cargo bench`), as opposed to running
/// each bench once as a smoke test (`cargo test --benches`, `-- --test`) or
/// listing them (`--list`), where ratios would mean nothing.
pub fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench")
        && !args
            .iter()
            .any(|a| a == "--test" || a == "--list" || a.starts_with("--profile-time"))
}

/// A duration in the unit that suits it (`812 ns`, `41.3 µs`, `2.07 ms`).
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1e-6 {
        format!("{:.0} ns", s * 1e9)
    } else if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// Prints the heading of a bench file's ratio report; returns whether the
/// ratios should follow (only when criterion measured).
pub fn report_heading(question: &str) -> bool {
    if std::env::args().any(|a| a == "--list") {
        return false;
    }
    println!();
    println!("== {question}");
    if !measuring() {
        println!("   (not a measuring run: each bench ran once; no ratios)");
        return false;
    }
    true
}
