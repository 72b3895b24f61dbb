//! Question: what does encoding and decoding a byte payload cost in
//! `procpool_wire::codec` (`Echo`: `serde_bytes`; `EchoVec`: plain
//! `Vec<u8>`), compared with just copying the bytes (`to_vec`)?
//!
//! At 1 MiB the codec's two fresh buffers (encoded, decoded) usually land on
//! pages the allocator has just returned to the kernel (glibc trims the heap
//! top on free), so page faults, not bincode, dominate; the single buffer
//! of `to_vec` is reused warm. A task pays the same faults, so they stay in.
//! The printed ratios come from an interleaved loop run after criterion's
//! benches of each size.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use procpool_benches::{
    Recorder, human, interleave, measuring, payload, ratio, report_heading, timed,
};
use procpool_tasks::{Echo, EchoVec};
use procpool_wire::codec::{decode, encode};

const SAMPLES: usize = 20;
/// (label, bytes, interleaved rounds, calls per round).
const SIZES: [(&str, usize, usize, u64); 2] =
    [("1KiB", 1024, 50, 1000), ("1MiB", 1024 * 1024, 10, 3)];

fn main() {
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let rec = Recorder::new(SAMPLES);

    let mut group = c.benchmark_group("codec");
    let mut measured = Vec::new();
    for (label, len, rounds, calls) in SIZES {
        group.throughput(Throughput::Bytes(len as u64));
        let data = payload(len);
        let echo = Echo(data.clone());
        let echo_vec = EchoVec(data.clone());
        let mut copy = |iters| {
            timed(iters, || {
                black_box(black_box(&data[..]).to_vec());
            })
        };
        let mut serde_bytes = |iters| {
            timed(iters, || {
                let bytes = encode(black_box(&echo)).expect("encode");
                let back: Echo = decode(&bytes).expect("decode");
                black_box(back);
            })
        };
        let mut plain_vec = |iters| {
            timed(iters, || {
                let bytes = encode(black_box(&echo_vec)).expect("encode");
                let back: EchoVec = decode(&bytes).expect("decode");
                black_box(back);
            })
        };
        let ids = [
            format!("copy_{label}"),
            format!("echo_serde_bytes_{label}"),
            format!("echo_vec_{label}"),
        ];
        group.bench_function(&ids[0], |b| {
            b.iter_custom(|iters| rec.record(&ids[0], copy(iters), iters))
        });
        group.bench_function(&ids[1], |b| {
            b.iter_custom(|iters| rec.record(&ids[1], serde_bytes(iters), iters))
        });
        group.bench_function(&ids[2], |b| {
            b.iter_custom(|iters| rec.record(&ids[2], plain_vec(iters), iters))
        });
        if measuring() && ids.iter().all(|id| rec.median(id).is_some()) {
            let t = interleave(
                rounds,
                calls,
                &mut [&mut serde_bytes, &mut copy, &mut plain_vec],
            );
            measured.push((label, t, rec.ratio(&ids[1], &ids[0])));
        }
    }
    group.finish();
    c.final_summary();

    if report_heading("codec: encode+decode vs a plain copy of the bytes") {
        for (label, t, sequential) in measured {
            let (echo, copy, vec) = (t[0], t[1], t[2]);
            println!(
                "{label:>4}: Echo (serde_bytes) = {:>6.1} × to_vec, EchoVec (Vec<u8>) = {:>6.1} × \
                 to_vec; Vec<u8> / serde_bytes = {:.1} ×   ({} / {} / copy {}; criterion's \
                 sequential runs, Echo: {:.1} ×)",
                ratio(echo, copy),
                ratio(vec, copy),
                ratio(vec, echo),
                human(echo),
                human(vec),
                human(copy),
                sequential.unwrap_or(f64::NAN),
            );
        }
    }
}
