//! The first hour: your own task in a few lines, this program its own
//! worker, a `map` with a progress bar. Needs only `procpool` and `serde`.
//! This is the README's Quickstart.
//!
//! `cargo run --release -p procpool --example first_hour`

use procpool::{ProcessPool, Registry, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
pub struct Digest {
    pub seed: u64,
    pub value: u64,
}

/// A task is a plain function: `#[procpool::task]` makes the type
/// `Mix { seed }` from it (one field per argument) and registers it.
#[procpool::task]
fn mix(seed: u64) -> Digest {
    let mut x = seed;
    for _ in 0..20_000 {
        x = (x ^ seed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(17);
    }
    Digest { seed, value: x }
}

/// A task that brings its worker down: it costs only its own future.
#[procpool::task]
fn crash() {
    std::process::abort()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // This program is its own worker: in a worker process this call serves
    // every #[procpool::task] and never returns. Keep it first in `main`.
    procpool::worker::run_if_worker(Registry::collected());

    // One worker per CPU, each running this program.
    let pool = ProcessPool::builder().build()?;

    let d = pool.submit(Mix { seed: 7 })?.result()?;
    println!(
        "mix(7) = {:#x} (same as here: {})",
        d.value,
        d.value == mix(7).value
    );

    // One crash costs one future; the worker is replaced.
    match pool.submit(Crash)?.result() {
        Err(e @ TaskError::WorkerDied { .. }) => println!("as expected: {e}"),
        other => println!("unexpected: {other:?}"),
    }

    // Lazy, ordered, one Result per input, a progress bar on stderr.
    let mut best = Digest { seed: 0, value: 0 };
    for r in pool.map((0..20_000).map(|seed| Mix { seed })).progress() {
        let d = r?;
        if d.value > best.value {
            best = d;
        }
    }
    println!("largest digest: seed {} -> {:#x}", best.seed, best.value);
    // Where the time went: running, the pool's own overhead, and waiting.
    println!("{}", pool.stats());
    Ok(())
}
