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
//! At 1 MiB and 16 MiB the same echo also goes through procspawn 1.0.2's
//! `Pool` of 1 worker process (started once, reused by every call):
//! `procspawn_bytes` sends a `serde_bytes::ByteBuf`, `procspawn_shmem` its
//! shared-memory `procspawn::serde::Shmem` (made once per size; each echo's
//! reply is the next input, so the same memory goes out and comes back).
//!
//! Only the round trip is timed: cloning the input (a task owns its bytes)
//! and freeing the output happen off the clock. The printed ratios come
//! from two interleaved loops (contenders and raw alternating) run after
//! criterion's benches of each size: the bytes loop (raw, `Echo`,
//! `EchoVec`, procspawn `ByteBuf`, and `EchoShared` right after a bytes echo
//! on the same worker) and the shared loop (raw, `EchoShared`, procspawn
//! `Shmem`: each shared echo follows a shared echo on its own worker, so
//! neither pays for what a 16 MiB bytes echo left behind in its worker).
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
    Recorder, Routine, echo_peer, frame, human, interleave, measuring, payload, process_pool,
    ratio, report_heading, timed,
};
use procpool_tasks::{Echo, EchoShared, EchoVec, SumShared};
use procspawn::serde::Shmem;
use serde_bytes::ByteBuf;

const WORKER: &str = env!("CARGO_BIN_EXE_procpool-bench-worker");
const SAMPLES: usize = 10;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// One payload size: label, bytes, whether `EchoVec` and procspawn run it,
/// and the interleaved loop's rounds × calls per round.
struct Size {
    label: &'static str,
    len: usize,
    vec: bool,
    procspawn: bool,
    rounds: usize,
    calls: u64,
}

const SIZES: [Size; 3] = [
    Size {
        label: "1KiB",
        len: KIB,
        vec: true,
        procspawn: false,
        rounds: 100,
        calls: 5,
    },
    Size {
        label: "1MiB",
        len: MIB,
        vec: true,
        procspawn: true,
        rounds: 20,
        calls: 1,
    },
    Size {
        label: "16MiB",
        len: 16 * MIB,
        vec: false,
        procspawn: true,
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

/// procspawn's echo of `serde_bytes` (run in its worker process).
fn procspawn_echo_bytes(bytes: ByteBuf) -> ByteBuf {
    bytes
}

/// procspawn's echo of its shared-memory type (run in its worker process).
fn procspawn_echo_shmem(shmem: Shmem) -> Shmem {
    shmem
}

/// `iters` round trips of `data` as a `ByteBuf` through procspawn's `Pool`,
/// timing only spawn→join (as [`echo_round_trips`]). Every reply's bytes are
/// checked off the clock.
fn procspawn_bytes_round_trips(pool: &procspawn::Pool, data: &[u8], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let bytes = ByteBuf::from(data.to_vec());
        let start = Instant::now();
        let out = pool
            .spawn(bytes, procspawn_echo_bytes)
            .join()
            .expect("procspawn echo");
        total += start.elapsed();
        assert!(out.as_slice() == data, "procspawn echoed other bytes");
    }
    total
}

/// `iters` round trips of one `Shmem` through procspawn's `Pool`: each
/// reply is the next input (a `Shmem` is not `Clone`; the same memory goes
/// out and comes back, as `EchoShared`'s value does). `shmem` holds it
/// between calls. Every reply's bytes are checked off the clock.
///
/// procspawn 1.0.2's `Pool::spawn` sends the arguments outside its "IPC
/// mode" (`procspawn::spawn` and every reply use it), so a `Shmem` argument
/// would go as inline bytes that the worker then cannot read as a shared
/// region (its worker panics: "Cannot consume shared memory region"); the
/// call is made inside `procspawn::serde::with_ipc_mode`, which makes the
/// argument travel as shared memory, as procspawn intends.
fn procspawn_shmem_round_trips(
    pool: &procspawn::Pool,
    shmem: &mut Option<Shmem>,
    data: &[u8],
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let input = shmem.take().expect("the shared memory of the last echo");
        let start = Instant::now();
        let out = procspawn::serde::with_ipc_mode(|| pool.spawn(input, procspawn_echo_shmem))
            .join()
            .expect("procspawn echo");
        total += start.elapsed();
        assert!(out.as_bytes() == data, "procspawn echoed other bytes");
        *shmem = Some(out);
    }
    total
}

/// Interleaved medians of one size.
struct Measured {
    label: &'static str,
    /// The bytes loop: raw, `Echo`, `EchoShared` after an `Echo` on the
    /// same worker, `EchoVec` and procspawn's `ByteBuf` if they ran.
    raw: Duration,
    echo: Duration,
    shared_after_echo: Duration,
    vec: Option<Duration>,
    procspawn_bytes: Option<Duration>,
    /// The shared loop: raw, `EchoShared`, procspawn's `Shmem` if it ran.
    shared_raw: Duration,
    shared: Duration,
    procspawn_shmem: Option<Duration>,
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
    // First: a procspawn worker is this program started again, and it
    // serves procspawn's calls from here on instead of running the benches.
    procspawn::init();
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let rec = Recorder::new(SAMPLES);

    let mut peer = echo_peer(WORKER).expect("start the echo peer");
    let pool = process_pool(WORKER, 1);
    // procspawn's counterpart of the pool above: one worker process,
    // started once and reused by every call.
    let spawn_pool = procspawn::Pool::new(1).expect("start procspawn's pool");

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
        let mut ps_bytes = |iters| procspawn_bytes_round_trips(&spawn_pool, &data, iters);
        // Made once per size, as `shared_data`: the first copy into shared
        // memory is not what is measured.
        let mut ps_shmem_data = Some(Shmem::from_bytes(&data));
        let mut ps_shmem =
            |iters| procspawn_shmem_round_trips(&spawn_pool, &mut ps_shmem_data, &data, iters);
        let (raw_id, echo_id, vec_id, shared_id) = (
            format!("raw_socket_{}", size.label),
            format!("echo_serde_bytes_{}", size.label),
            format!("echo_vec_{}", size.label),
            format!("echo_shared_{}", size.label),
        );
        let (ps_bytes_id, ps_shmem_id) = (
            format!("procspawn_bytes_{}", size.label),
            format!("procspawn_shmem_{}", size.label),
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
        if size.procspawn {
            group.bench_function(&ps_bytes_id, |b| {
                b.iter_custom(|iters| rec.record(&ps_bytes_id, ps_bytes(iters), iters))
            });
            group.bench_function(&ps_shmem_id, |b| {
                b.iter_custom(|iters| rec.record(&ps_shmem_id, ps_shmem(iters), iters))
            });
        }
        if measuring() && rec.median(&echo_id).is_some() {
            let mut bytes: Vec<Routine<'_>> = vec![&mut echo, &mut raw, &mut shared];
            if size.procspawn {
                bytes.push(&mut ps_bytes);
            }
            if size.vec {
                bytes.push(&mut vec);
            }
            let b = interleave(size.rounds, size.calls, &mut bytes);
            let mut shared_only: Vec<Routine<'_>> = vec![&mut shared, &mut raw];
            if size.procspawn {
                shared_only.push(&mut ps_shmem);
            }
            let s = interleave(size.rounds, size.calls, &mut shared_only);
            measured.push(Measured {
                label: size.label,
                echo: b[0],
                raw: b[1],
                shared_after_echo: b[2],
                procspawn_bytes: size.procspawn.then(|| b[3]),
                vec: size.vec.then(|| b[b.len() - 1]),
                shared: s[0],
                shared_raw: s[1],
                procspawn_shmem: size.procspawn.then(|| s[2]),
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
            if let Some(bytes) = m.procspawn_bytes {
                println!(
                    "{:>5}: procspawn ByteBuf   = {:>5.2} × raw socket   ({}); \
                     serde_bytes / procspawn ByteBuf = {:.2} × (criterion's sequential \
                     runs: {:.2} ×)",
                    m.label,
                    ratio(bytes, m.raw),
                    human(bytes),
                    ratio(m.echo, bytes),
                    rec.ratio(
                        &format!("echo_serde_bytes_{}", m.label),
                        &format!("procspawn_bytes_{}", m.label),
                    )
                    .unwrap_or(f64::NAN),
                );
            }
            println!(
                "{:>5}: EchoShared          = {:>5.2} × raw socket   ({} vs {}, shared loop); \
                 EchoShared / serde_bytes = {:.2} ×; right after an Echo on the same \
                 worker: {} ({:.2} × raw)",
                m.label,
                ratio(m.shared, m.shared_raw),
                human(m.shared),
                human(m.shared_raw),
                ratio(m.shared, m.echo),
                human(m.shared_after_echo),
                ratio(m.shared_after_echo, m.raw),
            );
            if let Some(shmem) = m.procspawn_shmem {
                println!(
                    "{:>5}: procspawn Shmem     = {:>5.2} × raw socket   ({}, shared loop); \
                     EchoShared / procspawn Shmem = {:.3} × (criterion's sequential runs: \
                     {:.3} ×)",
                    m.label,
                    ratio(shmem, m.shared_raw),
                    human(shmem),
                    ratio(m.shared, shmem),
                    rec.ratio(
                        &format!("echo_shared_{}", m.label),
                        &format!("procspawn_shmem_{}", m.label),
                    )
                    .unwrap_or(f64::NAN),
                );
            }
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
    spawn_pool.shutdown();
    peer.close().expect("close the echo peer");
}
