//! Question: how many tasks per second does `pool.map(..).chunksize(c)` of
//! `Square` reach on a process pool of 2 workers, compared with a thread pool
//! of 2 threads running the same map (no serialization, no IPC)?
//!
//! c ∈ {1, 16, 256, auto}: one frame per task, 16 or 256 tasks per frame,
//! and no chunksize at all (`auto`: the map picks its chunk sizes as it
//! goes, starting at 1). The printed ratios come from an interleaved loop
//! (process, thread, thread, process, ...) run after criterion; the auto
//! line also gives auto's rate over the best fixed chunksize's, per pool.

use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use procpool::{Executor, Shutdown, ThreadPool};
use procpool_benches::{Recorder, human, interleave, process_pool, ratio, report_heading, timed};
use procpool_tasks::Square;

const WORKER: &str = env!("CARGO_BIN_EXE_procpool-bench-worker");
const SAMPLES: usize = 10;
/// Tasks per map.
const N: u64 = 10_000;
/// Chunk sizes; [`AUTO`] sets none.
const CHUNKS: [usize; 4] = [1, 16, 256, AUTO];
const AUTO: usize = 0;
/// Interleaved loop: maps per side and chunk size.
const ROUNDS: usize = 6;

fn label(chunksize: usize) -> String {
    if chunksize == AUTO {
        "auto".to_owned()
    } else {
        chunksize.to_string()
    }
}

/// Runs one map of `N` squares and checks the sum.
fn run_map(pool: &impl Executor, chunksize: usize) {
    let map = pool.map((0..N).map(Square));
    let map = if chunksize == AUTO {
        map
    } else {
        map.chunksize(chunksize)
    };
    let sum = map
        .map(|r| r.expect("square"))
        .fold(0u64, u64::wrapping_add);
    assert_eq!(sum, (0..N).map(|i| i * i).sum::<u64>());
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let rec = Recorder::new(SAMPLES);

    let threads = ThreadPool::builder()
        .workers(2)
        .build()
        .expect("thread pool");
    let processes = process_pool(WORKER, 2);

    let mut group = c.benchmark_group("throughput");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(N));
    for chunksize in CHUNKS {
        let id = format!("thread_pool_c{}", label(chunksize));
        group.bench_function(&id, |b| {
            b.iter_custom(|iters| {
                rec.record(&id, timed(iters, || run_map(&threads, chunksize)), iters)
            })
        });
        let id = format!("process_pool_c{}", label(chunksize));
        group.bench_function(&id, |b| {
            b.iter_custom(|iters| {
                rec.record(&id, timed(iters, || run_map(&processes, chunksize)), iters)
            })
        });
    }
    group.finish();
    c.final_summary();

    if report_heading("throughput: map of Square, 2 workers, process pool vs thread pool") {
        let rate = |d: Duration| N as f64 / d.as_secs_f64();
        // Per chunksize: (process, thread) time per map.
        let mut best: Option<(Duration, Duration)> = None;
        for chunksize in CHUNKS {
            let t = interleave(
                ROUNDS,
                1,
                &mut [
                    &mut |iters| timed(iters, || run_map(&processes, chunksize)),
                    &mut |iters| timed(iters, || run_map(&threads, chunksize)),
                ],
            );
            let c = label(chunksize);
            let sequential = rec.ratio(&format!("process_pool_c{c}"), &format!("thread_pool_c{c}"));
            println!(
                "chunksize {c:>4}: process pool {:>8.0} tasks/s, thread pool {:>8.0} \
                 tasks/s → process pool = {:.2} × thread pool's time per task \
                 ({} vs {}; criterion's sequential runs: {:.2} ×)",
                rate(t[0]),
                rate(t[1]),
                ratio(t[0], t[1]),
                human(t[0] / N as u32),
                human(t[1] / N as u32),
                sequential.unwrap_or(f64::NAN),
            );
            if chunksize == AUTO {
                if let Some((p, th)) = best {
                    println!(
                        "auto vs the best fixed chunksize above (interleaved loops, one after \
                         the other): process pool {:.2} ×, thread pool {:.2} × its rate",
                        rate(t[0]) / rate(p),
                        rate(t[1]) / rate(th),
                    );
                }
            } else {
                let (p, th) = best.get_or_insert((t[0], t[1]));
                *p = (*p).min(t[0]);
                *th = (*th).min(t[1]);
            }
        }
    }
    processes.shutdown(Shutdown::Wait);
    threads.shutdown(Shutdown::Wait);
}
