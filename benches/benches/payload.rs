//! Question: what does a round trip of a byte payload cost through a process
//! pool of 1 worker (`Echo`, `serde_bytes`; `EchoVec`, plain `Vec<u8>`),
//! compared with a raw Unix-socket round trip of the same bytes — and what
//! does `serde_bytes` save over a plain `Vec<u8>`?
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
use procpool::{ProcessPool, Shutdown, Task};
use procpool_benches::{
    Recorder, echo_peer, frame, human, interleave, measuring, payload, process_pool, ratio,
    report_heading, timed,
};
use procpool_tasks::{Echo, EchoVec};

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

/// Interleaved medians of one size: raw, `Echo`, and `EchoVec` if it ran.
struct Measured {
    label: &'static str,
    raw: Duration,
    echo: Duration,
    vec: Option<Duration>,
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
        let (raw_id, echo_id, vec_id) = (
            format!("raw_socket_{}", size.label),
            format!("echo_serde_bytes_{}", size.label),
            format!("echo_vec_{}", size.label),
        );
        group.bench_function(&raw_id, |b| {
            b.iter_custom(|iters| rec.record(&raw_id, raw(iters), iters))
        });
        group.bench_function(&echo_id, |b| {
            b.iter_custom(|iters| rec.record(&echo_id, echo(iters), iters))
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
                    &mut [&mut echo, &mut raw, &mut vec],
                )
            } else {
                interleave(size.rounds, size.calls, &mut [&mut echo, &mut raw])
            };
            measured.push(Measured {
                label: size.label,
                echo: t[0],
                raw: t[1],
                vec: t.get(2).copied(),
            });
        }
    }
    group.finish();
    c.final_summary();

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
    pool.shutdown(Shutdown::Wait);
    peer.close().expect("close the echo peer");
}
