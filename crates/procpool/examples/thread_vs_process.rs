//! The same code on threads and on processes: one generic function over
//! `procpool::Executor` runs a few workloads on a `ThreadPool` and on a
//! `ProcessPool`, and the timings side by side show what serialization and
//! IPC cost — and where processes win (CPU-bound work that a GIL, or shared
//! state, would otherwise serialize).
//!
//! This program is its own worker binary (`WorkerCommand::current_exe()` +
//! `run_if_worker`).
//!
//! `cargo run -p procpool --example thread_vs_process`

use std::time::{Duration, Instant};

use procpool::{
    Executor, ProcessPool, ReturnWhen, Shutdown, ThreadPool, WorkerCommand, as_completed, wait,
};
use procpool_tasks::{Echo, Sleep, Spin, Square};

/// One workload's name and wall time.
type Timing = (&'static str, Duration);

fn timed(name: &'static str, out: &mut Vec<Timing>, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    out.push((name, t.elapsed()));
}

/// Everything below only knows it has an `Executor`.
fn run_all(pool: &impl Executor) -> Vec<Timing> {
    let mut out = Vec::new();

    timed("2 000 tiny tasks, one submit each", &mut out, || {
        let futs: Vec<_> = (0..2_000u64)
            .map(|i| pool.submit(Square(i)).expect("submit"))
            .collect();
        let sum: u64 = futs.into_iter().map(|f| f.result().expect("square")).sum();
        assert_eq!(sum, (0..2_000u64).map(|i| i * i).sum());
    });

    timed("20 000 tiny tasks, map chunksize 1000", &mut out, || {
        let sum: u64 = pool
            .map((0..20_000u64).map(Square))
            .chunksize(1_000)
            .map(|r| r.expect("square"))
            .sum();
        assert_eq!(sum, (0..20_000u64).map(|i| i * i).sum());
    });

    timed("16 × 1 MiB payloads there and back", &mut out, || {
        let futs: Vec<_> = (0..16u8)
            .map(|i| pool.submit(Echo(vec![i; 1 << 20])).expect("submit"))
            .collect();
        for (i, f) in futs.into_iter().enumerate() {
            let bytes = f.result().expect("echo");
            assert_eq!(bytes.len(), 1 << 20);
            assert_eq!(bytes[0], i as u8);
        }
    });

    timed("8 CPU-bound spins", &mut out, || {
        let futs: Vec<_> = (0..8)
            .map(|_| {
                pool.submit(Spin {
                    iterations: 2_000_000,
                })
                .expect("submit")
            })
            .collect();
        let (done, not_done) = wait(futs, ReturnWhen::AllCompleted, None);
        assert!(not_done.is_empty());
        let first = done[0].error();
        assert!(first.is_none(), "{first:?}");
    });

    timed("as_completed over 8 sleeps of 10–80 ms", &mut out, || {
        let futs: Vec<_> = (1..=8u64)
            .rev()
            .map(|i| pool.submit(Sleep { millis: i * 10 }).expect("submit"))
            .collect();
        let order: Vec<u64> = as_completed(futs)
            .map(|f| f.result().expect("sleep"))
            .collect();
        assert_eq!(order.len(), 8);
    });

    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In a worker process this serves tasks and never returns.
    procpool::worker::run_if_worker(procpool_tasks::registry());

    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = ThreadPool::builder().workers(workers).build()?;
    let processes = ProcessPool::builder()
        .worker(WorkerCommand::current_exe())
        .workers(workers)
        .build()?;

    let on_threads = run_all(&threads);
    let on_processes = run_all(&processes);

    println!("{workers} workers each\n");
    println!(
        "{:<42} {:>12} {:>12} {:>8}",
        "workload", "threads", "processes", "ratio"
    );
    for ((name, t), (_, p)) in on_threads.iter().zip(&on_processes) {
        println!(
            "{name:<42} {:>12} {:>12} {:>7.1}×",
            format!("{:.1?}", t),
            format!("{:.1?}", p),
            p.as_secs_f64() / t.as_secs_f64().max(1e-9)
        );
    }

    let stats = processes.stats();
    let mean = stats.mean();
    println!(
        "\nprocess pool: {} tasks; mean serialization {:?} and run {:?} per task; median round trip {:?}",
        stats.completed,
        mean.serialization(),
        mean.run,
        stats.p50_total
    );

    threads.shutdown(Shutdown::Wait);
    processes.shutdown(Shutdown::Wait);
    Ok(())
}
