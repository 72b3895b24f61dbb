//! Question: what does a pool's whole life cost — build with 2 workers, the
//! first result, shutdown — compared with spawning 2 bare processes,
//! connecting to each, exchanging one byte and waiting for them to exit?
//!
//! The printed ratio comes from an interleaved loop (pool, bare, bare, pool,
//! ...) run after criterion.

use std::time::Duration;

use criterion::{Criterion, SamplingMode};
use procpool::Shutdown;
use procpool_benches::{
    EchoPeer, Recorder, echo_peers, frame, human, interleave, process_pool, ratio, report_heading,
    timed,
};
use procpool_tasks::Square;

const WORKER: &str = env!("CARGO_BIN_EXE_procpool-bench-worker");
const SAMPLES: usize = 10;
const WORKERS: usize = 2;
/// Interleaved loop: lives per side.
const ROUNDS: usize = 20;

fn main() {
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let rec = Recorder::new(SAMPLES);
    let one_byte = frame(&[1]);
    let mut bare = |iters| {
        timed(iters, || {
            let mut peers = echo_peers(WORKER, WORKERS).expect("start peers");
            for p in &mut peers {
                p.round_trip(&one_byte).expect("one byte");
            }
            EchoPeer::close_all(peers).expect("peers exit");
        })
    };
    let mut pool = |iters| {
        timed(iters, || {
            let pool = process_pool(WORKER, WORKERS);
            let f = pool.submit(Square(3)).expect("submit");
            assert_eq!(f.result().expect("result"), 9);
            pool.shutdown(Shutdown::Wait);
        })
    };

    let mut group = c.benchmark_group("startup");
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("bare_processes_2", |b| {
        b.iter_custom(|iters| rec.record("bare", bare(iters), iters))
    });
    group.bench_function("process_pool_2", |b| {
        b.iter_custom(|iters| rec.record("pool", pool(iters), iters))
    });
    group.finish();
    c.final_summary();

    if report_heading("startup: build(2) + first result + shutdown vs 2 bare processes") {
        let t = interleave(ROUNDS, 1, &mut [&mut pool, &mut bare]);
        println!(
            "startup = {:.2} × bare spawn+connect+exit   (pool {} vs bare {}; criterion's \
             sequential runs: {:.2} ×)",
            ratio(t[0], t[1]),
            human(t[0]),
            human(t[1]),
            rec.ratio("pool", "bare").unwrap_or(f64::NAN),
        );
    }
}
