//! Question: how long does one task take from `submit` to its result (one in
//! flight, `Square` on a process pool of 1 worker), compared with a raw
//! Unix-socket round trip of 16 bytes between two processes?
//!
//! Baseline, same run: `procpool-bench-worker` as an echo peer, blocking
//! reads and writes, no serde, no pool. The printed ratio comes from an
//! interleaved loop (pool, raw, raw, pool, ...) run after criterion.
//!
//! On a small VM a ping-pong's cost depends on whether the two processes
//! share a CPU (measured here: ~15 µs on one CPU, ~90 µs when every wake-up
//! crosses to an idle vCPU), so unpinned ratios swing from run to run. For a
//! stable ratio: `taskset -c 0 cargo bench -p procpool-benches --bench latency`.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use procpool::Shutdown;
use procpool_benches::{
    Recorder, echo_peer, frame, human, interleave, process_pool, ratio, report_heading, timed,
};
use procpool_tasks::Square;

const WORKER: &str = env!("CARGO_BIN_EXE_procpool-bench-worker");
const SAMPLES: usize = 20;
/// Interleaved loop: rounds × calls per round, for each side.
const ROUNDS: usize = 200;
const CALLS: u64 = 10;

fn main() {
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let rec = Recorder::new(SAMPLES);

    let mut peer = echo_peer(WORKER).expect("start the echo peer");
    let pool = process_pool(WORKER, 1);
    // The same with `worker_spin`: the idle worker looks for its next task
    // for 100 µs before parking.
    let spinning = procpool::ProcessPool::builder()
        .worker(procpool::WorkerCommand::program(WORKER))
        .workers(1)
        .worker_spin(Duration::from_micros(100))
        .build()
        .expect("spinning pool");
    let ping = frame(&[0x5a; 16]);
    let mut raw = |iters| {
        timed(iters, || {
            peer.round_trip(black_box(&ping)).expect("raw round trip");
        })
    };
    let mut task = |iters| {
        timed(iters, || {
            let f = pool.submit(Square(black_box(7))).expect("submit");
            assert_eq!(f.result().expect("result"), 49);
        })
    };
    let mut spin_task = |iters| {
        timed(iters, || {
            let f = spinning.submit(Square(black_box(7))).expect("submit");
            assert_eq!(f.result().expect("result"), 49);
        })
    };

    let mut group = c.benchmark_group("latency");
    group.bench_function("raw_socket_16B", |b| {
        b.iter_custom(|iters| rec.record("raw", raw(iters), iters))
    });
    group.bench_function("process_pool_square", |b| {
        b.iter_custom(|iters| rec.record("pool", task(iters), iters))
    });
    group.finish();
    c.final_summary();

    if report_heading("latency: submit→result, one in flight, vs raw socket round trip") {
        let t = interleave(ROUNDS, CALLS, &mut [&mut task, &mut raw, &mut spin_task]);
        println!(
            "latency = {:.1} × raw socket round trip   (pool {} vs raw 16 B {}; criterion's \
             sequential runs: {:.1} ×)",
            ratio(t[0], t[1]),
            human(t[0]),
            human(t[1]),
            rec.ratio("pool", "raw").unwrap_or(f64::NAN),
        );
        println!(
            "latency with worker_spin(100 µs) = {:.1} × raw socket round trip   (pool {})",
            ratio(t[2], t[1]),
            human(t[2]),
        );
        let stats = pool.stats();
        let m = stats.mean();
        println!(
            "   pool's own account (mean of {} tasks): encode {} + decode {} + run {} + \
             queue {} + ipc {} = {}",
            stats.completed,
            human(m.encode_input + m.encode_output),
            human(m.decode_input + m.decode_output),
            human(m.run),
            human(m.queue_wait),
            human(m.ipc),
            human(m.total)
        );
    }
    pool.shutdown(Shutdown::Wait);
    spinning.shutdown(Shutdown::Wait);
    peer.close().expect("close the echo peer");
}
