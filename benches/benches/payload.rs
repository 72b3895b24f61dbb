//! Question: what does a round trip of a byte payload cost through a process
//! pool of 1 worker (`Echo`, `serde_bytes`; `EchoVec`, plain `Vec<u8>`;
//! `EchoShared`, a `SharedBytes` passed as a sealed memory file),
//! compared with a raw Unix-socket round trip of the same bytes — and what
//! does `serde_bytes` save over a plain `Vec<u8>`? Last, a task that sums a
//! 1 GiB `SharedSlice<f64>`: how far is its round trip above the worker's
//! own summing time?
//!
//! The `EchoShared` rows send the same value every time (made once per
//! size, as a program that hands one array to many tasks does): its first
//! send copies it into a sealed memory file, every echo passes that file.
//!
//! Only the round trip is timed: cloning the input (a task owns its bytes)
//! and freeing the output happen off the clock. The printed ratios come
//! from an interleaved loop (pool and raw alternating) run after criterion's
//! benches of each size.
//!
//! On a small VM a ping-pong's cost depends on whether the two processes
//! share a CPU (measured here: ~15 µs on one CPU, ~90 µs when every wake-up
//! crosses to an idle vCPU), so unpinned ratios swing from run to run. For a
//! stable ratio: `taskset -c 0 cargo bench -p procpool-benches --bench payload`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use procpool::{ProcessPool, SharedBytes, SharedSlice, Shutdown, Task};
use procpool_benches::{
    Recorder, echo_peer, frame, human, interleave, measuring, payload, process_pool, ratio,
    report_heading, timed,
};
use procpool_tasks::{Echo, EchoShared, EchoVec, SumShared};

const WORKER: &str = env!("CARGO_BIN_EXE_procpool-bench-worker");
const SAMPLES: usize = 10;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// One payload size: label, bytes, whether `EchoVec` runs it, and the
/// interleaved loop's rounds × calls per round.
struct Size {
    label: &'static str,
    len: usize,
    vec: bool,
    rounds: usize,
    calls: u64,
}

const SIZES: [Size; 3] = [
    Size {
        label: "1KiB",
        len: KIB,
        vec: true,
        rounds: 100,
        calls: 5,
    },
    Size {
        label: "1MiB",
        len: MIB,
        vec: true,
        rounds: 20,
        calls: 1,
    },
    Size {
        label: "16MiB",
        len: 16 * MIB,
        vec: false,
        rounds: 6,
        calls: 1,
    },
];

/// `iters` round trips of `make(data)`, timing only submit→result.
fn echo_round_trips<T: Task>(
    pool: &ProcessPool,
    data: &[u8],
    iters: u64,
    make: impl Fn(Vec<u8>) -> T,
    len: impl Fn(&T::Output) -> usize,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let task = make(data.to_vec());
        let start = Instant::now();
        let out = pool.submit(task).expect("submit").result().expect("echo");
        total += start.elapsed();
        assert_eq!(len(&out), data.len());
    }
    total
}

/// `iters` round trips of the same shared bytes (a clone shares them).
fn shared_round_trips(pool: &ProcessPool, data: &SharedBytes, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let task = EchoShared(data.clone());
        let start = Instant::now();
        let out = pool.submit(task).expect("submit").result().expect("echo");
        total += start.elapsed();
        assert_eq!(out.len(), data.len());
    }
    total
}

/// Interleaved medians of one size: raw, `Echo`, `EchoShared`, and
/// `EchoVec` if it ran.
struct Measured {
    label: &'static str,
    raw: Duration,
    echo: Duration,
    shared: Duration,
    vec: Option<Duration>,
}

/// Sums a 1 GiB `SharedSlice<f64>` in the worker `rounds` times; returns
/// the medians of the round trip and of the worker's `run` time.
fn sum_1gib(pool: &ProcessPool, rounds: usize) -> (Duration, Duration) {
    let n = (1usize << 30) / std::mem::size_of::<f64>();
    let xs = SharedSlice::from((0..n).map(|i| (i % 1000) as f64).collect::<Vec<_>>());
    let expected: f64 = xs.iter().sum();
    // The first send makes the sealed copy; it is not what is measured.
    assert_eq!(
        pool.submit(SumShared(xs.clone()))
            .unwrap()
            .result()
            .unwrap(),
        expected
    );
    let mut trips = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let fut = pool.submit(SumShared(xs.clone())).expect("submit");
        fut.wait();
        trips.push(start.elapsed());
        runs.push(fut.cost().expect("a process pool's cost").run);
        assert_eq!(fut.result().expect("sum"), expected);
    }
    trips.sort();
    runs.sort();
    (trips[rounds / 2], runs[rounds / 2])
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let rec = Recorder::new(SAMPLES);

    let mut peer = echo_peer(WORKER).expect("start the echo peer");
    let pool = process_pool(WORKER, 1);

    let mut group = c.benchmark_group("payload");
    group.sampling_mode(SamplingMode::Flat);
    let mut measured = Vec::new();
    for size in SIZES {
        let data = payload(size.len);
        let framed = frame(&data);
        let mut raw = |iters| {
            timed(iters, || {
                peer.round_trip(black_box(&framed)).expect("raw round trip");
            })
        };
        let mut echo = |iters| echo_round_trips(&pool, &data, iters, Echo, |o| o.len());
        let mut vec = |iters| echo_round_trips(&pool, &data, iters, EchoVec, Vec::len);
        let shared_data = SharedBytes::from(data.clone());
        let mut shared = |iters| shared_round_trips(&pool, &shared_data, iters);
        let (raw_id, echo_id, vec_id, shared_id) = (
            format!("raw_socket_{}", size.label),
            format!("echo_serde_bytes_{}", size.label),
            format!("echo_vec_{}", size.label),
            format!("echo_shared_{}", size.label),
        );
        group.bench_function(&raw_id, |b| {
            b.iter_custom(|iters| rec.record(&raw_id, raw(iters), iters))
        });
        group.bench_function(&echo_id, |b| {
            b.iter_custom(|iters| rec.record(&echo_id, echo(iters), iters))
        });
        group.bench_function(&shared_id, |b| {
            b.iter_custom(|iters| rec.record(&shared_id, shared(iters), iters))
        });
        if size.vec {
            group.bench_function(&vec_id, |b| {
                b.iter_custom(|iters| rec.record(&vec_id, vec(iters), iters))
            });
        }
        if measuring() && rec.median(&echo_id).is_some() {
            let t = if size.vec {
                interleave(
                    size.rounds,
                    size.calls,
                    &mut [&mut echo, &mut raw, &mut shared, &mut vec],
                )
            } else {
                interleave(
                    size.rounds,
                    size.calls,
                    &mut [&mut echo, &mut raw, &mut shared],
                )
            };
            measured.push(Measured {
                label: size.label,
                echo: t[0],
                raw: t[1],
                shared: t[2],
                vec: t.get(3).copied(),
            });
        }
    }
    group.finish();
    c.final_summary();
    // Only when the filter selected this group's shared rows.
    let sum =
        (measuring() && rec.median("echo_shared_16MiB").is_some()).then(|| sum_1gib(&pool, 5));

    if report_heading("payload: byte round trip through 1 worker vs raw socket") {
        for m in &measured {
            let sequential = rec.ratio(
                &format!("echo_serde_bytes_{}", m.label),
                &format!("raw_socket_{}", m.label),
            );
            println!(
                "{:>5}: Echo (serde_bytes) = {:>5.2} × raw socket   ({} vs {}; criterion's \
                 sequential runs: {:.2} ×)",
                m.label,
                ratio(m.echo, m.raw),
                human(m.echo),
                human(m.raw),
                sequential.unwrap_or(f64::NAN),
            );
            println!(
                "{:>5}: EchoShared          = {:>5.2} × raw socket   ({}); \
                 EchoShared / serde_bytes = {:.2} ×",
                m.label,
                ratio(m.shared, m.raw),
                human(m.shared),
                ratio(m.shared, m.echo),
            );
            if let Some(vec) = m.vec {
                println!(
                    "{:>5}: EchoVec (Vec<u8>)  = {:>5.2} × raw socket   ({}); \
                     Vec<u8> / serde_bytes = {:.1} ×",
                    m.label,
                    ratio(vec, m.raw),
                    human(vec),
                    ratio(vec, m.echo),
                );
            }
        }
    }
    if let Some((trip, run)) = sum {
        println!(
            "1 GiB SharedSlice<f64> sum: round trip {} = the worker's summing {} + {}",
            human(trip),
            human(run),
            human(trip.saturating_sub(run)),
        );
    }
    pool.shutdown(Shutdown::Wait);
    peer.close().expect("close the echo peer");
}
