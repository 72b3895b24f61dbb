//! The Rust side of `benches/compare`: the workloads `compare.py` runs on
//! CPython, run on procpool, printed as one line of JSON.
//!
//! Usage: `procpool-compare N_C1 N_C256 LATENCY_ROUNDS ECHO_ROUNDS REPEATS`.
//! Each map workload runs `REPEATS` times (median kept), the workloads taking
//! turns so that a noisy spell on a shared machine hits them alike; latency
//! and echo are medians of single round trips. The `auto` maps set no
//! chunksize (the map picks its chunk sizes) and run `N_C256` inputs. The
//! binary is its own worker (`WorkerCommand::current_exe()`).
//!
//! `PROCPOOL_COMPARE_ONLY=map_auto,map_c256` runs only those map workloads
//! (for `valgrind --tool=callgrind`, one workload per run);
//! `PROCPOOL_COMPARE_TRANSPORT=tcp` runs them over TCP loopback (workers
//! that dial in, sealed frames) instead of a socketpair.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use procpool::{ProcessPool, Shutdown, WorkerCommand};
use procpool_tasks::{Echo, Square};

const WORKERS: usize = 2;
const MIB: usize = 1024 * 1024;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// A map's chunksize meaning "none set: auto chunking".
const AUTO: usize = 0;

/// Seconds for one map of `n` squares (ordered or not), checked, and the
/// chunk size it used last.
fn time_map(pool: &ProcessPool, n: u64, chunksize: usize, ordered: bool) -> (f64, usize) {
    let start = Instant::now();
    let tasks = (0..n).map(Square);
    let results = if ordered {
        pool.map(tasks)
    } else {
        pool.map_unordered(tasks)
    };
    let mut results = if chunksize == AUTO {
        results
    } else {
        results.chunksize(chunksize)
    };
    let sum = results
        .by_ref()
        .map(|r| r.expect("square"))
        .fold(0u64, u64::wrapping_add);
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(sum, (0..n).map(|i| i * i).sum::<u64>());
    (secs, results.current_chunksize())
}

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).map_or(default, |a| {
        a.parse()
            .unwrap_or_else(|_| panic!("argument {i} is not a number: {a}"))
    })
}

fn main() {
    procpool::worker::run_if_worker(procpool_tasks::registry());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n_c1 = arg(&args, 0, 20_000);
    let n_c256 = arg(&args, 1, 200_000);
    let latency_rounds = arg(&args, 2, 2_000) as usize;
    let echo_rounds = arg(&args, 3, 200) as usize;
    let repeats = arg(&args, 4, 3).max(1) as usize;

    let transport = match std::env::var("PROCPOOL_COMPARE_TRANSPORT").as_deref() {
        Ok("tcp") => procpool::Transport::Tcp,
        _ => procpool::Transport::Local,
    };
    let pool = ProcessPool::builder()
        .worker(WorkerCommand::current_exe())
        .workers(WORKERS)
        .transport(transport)
        .build()
        .unwrap_or_else(|e| panic!("cannot start the pool: {e}"));
    // Warm up: both workers started and have served a map.
    let _ = time_map(&pool, 1_000, 1, true);

    let mut fields = Vec::new();
    let workloads = [
        ("map_c1", n_c1, 1, true),
        ("map_c256", n_c256, 256, true),
        ("map_c1024", n_c256, 1024, true),
        ("map_auto", n_c256, AUTO, true),
        ("map_unordered_c1", n_c1, 1, false),
        ("map_unordered_c256", n_c256, 256, false),
        ("map_unordered_c1024", n_c256, 1024, false),
        ("map_unordered_auto", n_c256, AUTO, false),
    ];
    let only = std::env::var("PROCPOOL_COMPARE_ONLY").ok();
    let workloads: Vec<_> = workloads
        .into_iter()
        .filter(|w| only.as_ref().is_none_or(|o| o.split(',').any(|k| k == w.0)))
        .collect();
    let mut times = vec![Vec::with_capacity(repeats); workloads.len()];
    let mut last_chunk = vec![0; workloads.len()];
    for _ in 0..repeats {
        for (w, &(_, n, chunksize, ordered)) in workloads.iter().enumerate() {
            let (secs, chunk) = time_map(&pool, n, chunksize, ordered);
            times[w].push(secs);
            last_chunk[w] = chunk;
        }
    }
    for (((key, n, _, _), t), chunk) in workloads.into_iter().zip(times).zip(last_chunk) {
        let secs = median(t);
        fields.push(format!(
            "\"{key}\": {{\"n\": {n}, \"seconds\": {secs:.6}, \"tasks_per_s\": {:.1}, \
             \"last_chunksize\": {chunk}}}",
            n as f64 / secs
        ));
    }

    let mut lat = Vec::with_capacity(latency_rounds);
    for i in 0..latency_rounds {
        let start = Instant::now();
        let f = pool.submit(Square(i as u64)).expect("submit");
        let r = f.result().expect("square");
        lat.push(start.elapsed().as_secs_f64());
        assert_eq!(r, (i as u64).wrapping_mul(i as u64));
    }
    fields.push(format!(
        "\"latency\": {{\"rounds\": {latency_rounds}, \"median_s\": {:.9}}}",
        median(lat)
    ));

    let data = procpool_benches::payload(MIB);
    let mut echo = Vec::with_capacity(echo_rounds);
    for _ in 0..echo_rounds {
        let task = Echo(data.clone());
        let start = Instant::now();
        let out = pool.submit(task).expect("submit").result().expect("echo");
        echo.push(start.elapsed().as_secs_f64());
        assert_eq!(out.len(), MIB);
    }
    fields.push(format!(
        "\"echo_1mib\": {{\"rounds\": {echo_rounds}, \"median_s\": {:.9}}}",
        median(echo)
    ));

    let shutdown = Instant::now();
    pool.shutdown(Shutdown::Wait);
    let shutdown: Duration = shutdown.elapsed();
    fields.push(format!(
        "\"workers\": {WORKERS}, \"shutdown_s\": {:.6}",
        shutdown.as_secs_f64()
    ));
    println!("{{{}}}", fields.join(", "));
}
