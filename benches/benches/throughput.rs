//! Question: how many tasks per second does `pool.map(..).chunksize(c)` of
//! `Square` reach on a process pool of 2 workers, compared with a thread pool
//! of 2 threads running the same map (no serialization, no IPC)?
//!
//! c ∈ {1, 256}: one frame per task versus 256 tasks per frame. The printed
//! ratio comes from an interleaved loop (process, thread, thread, process,
//! ...) run after criterion.

use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use procpool::{Executor, Shutdown, ThreadPool};
use procpool_benches::{Recorder, human, interleave, process_pool, ratio, report_heading, timed};
use procpool_tasks::Square;

const WORKER: &str = env!("CARGO_BIN_EXE_procpool-bench-worker");
const SAMPLES: usize = 10;
/// Tasks per map.
const N: u64 = 10_000;
const CHUNKS: [usize; 2] = [1, 256];
/// Interleaved loop: maps per side and chunk size.
const ROUNDS: usize = 6;

/// Runs one map of `N` squares and checks the sum.
fn run_map(pool: &impl Executor, chunksize: usize) {
    let sum = pool
        .map((0..N).map(Square))
        .chunksize(chunksize)
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
        let id = format!("thread_pool_c{chunksize}");
        group.bench_function(&id, |b| {
            b.iter_custom(|iters| {
                rec.record(&id, timed(iters, || run_map(&threads, chunksize)), iters)
            })
        });
        let id = format!("process_pool_c{chunksize}");
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
        for chunksize in CHUNKS {
            let t = interleave(
                ROUNDS,
                1,
                &mut [
                    &mut |iters| timed(iters, || run_map(&processes, chunksize)),
                    &mut |iters| timed(iters, || run_map(&threads, chunksize)),
                ],
            );
            let sequential = rec.ratio(
                &format!("process_pool_c{chunksize}"),
                &format!("thread_pool_c{chunksize}"),
            );
            println!(
                "chunksize {chunksize:>3}: process pool {:>8.0} tasks/s, thread pool {:>8.0} \
                 tasks/s → process pool = {:.2} × thread pool's time per task \
                 ({} vs {}; criterion's sequential runs: {:.2} ×)",
                rate(t[0]),
                rate(t[1]),
                ratio(t[0], t[1]),
                human(t[0] / N as u32),
                human(t[1] / N as u32),
                sequential.unwrap_or(f64::NAN),
            );
        }
    }
    processes.shutdown(Shutdown::Wait);
    threads.shutdown(Shutdown::Wait);
}
