//! Shared arrays: the counterpart of handing a NumPy array to a process
//! pool. A 256 MiB `SharedSlice<f64>` goes to every worker as a sealed
//! memory file (no byte copied between the processes); each task sums one
//! stripe of it; the same array then runs on a `ThreadPool`, where it is a
//! plain shared buffer. This program is its own worker binary.
//!
//! `cargo run --release -p procpool --example shared_array`

use std::time::Instant;

use procpool::{
    Executor, ProcessPool, Registry, SharedSlice, Shutdown, Task, ThreadPool, WorkerCommand,
    WorkerContext,
};
use serde::{Deserialize, Serialize};

/// Sums `xs[start..end]`. Every task of a run carries the same array: a
/// clone shares it, and to a local worker it travels as a reference.
#[derive(Serialize, Deserialize)]
struct StripeSum {
    xs: SharedSlice<f64>,
    start: usize,
    end: usize,
}

impl Task for StripeSum {
    const NAME: &'static str = "stripe_sum";
    type Output = f64;
    fn run(self, _: &mut WorkerContext) -> f64 {
        self.xs[self.start..self.end].iter().sum()
    }
}

fn stripes(xs: &SharedSlice<f64>, n: usize) -> impl Iterator<Item = StripeSum> + '_ {
    let per = xs.len().div_ceil(n);
    (0..n).map(move |i| StripeSum {
        xs: xs.clone(),
        start: (i * per).min(xs.len()),
        end: ((i + 1) * per).min(xs.len()),
    })
}

fn total(pool: &impl Executor, xs: &SharedSlice<f64>) -> f64 {
    pool.map(stripes(xs, 16))
        .map(|r| r.expect("a stripe sums"))
        .sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In a worker process this serves tasks and never returns.
    procpool::worker::run_if_worker(Registry::new().task::<StripeSum>());

    let n = 32 << 20; // 32 Mi f64 = 256 MiB
    let xs = SharedSlice::from((0..n).map(|i| (i % 1000) as f64).collect::<Vec<f64>>());
    let expected: f64 = xs.iter().sum();

    let pool = ProcessPool::builder()
        .worker(WorkerCommand::current_exe())
        .workers(2)
        .build()?;
    for round in 1..=2 {
        // Round 1 also seals the array into its memory file (one copy);
        // round 2 only passes that file again.
        let t = Instant::now();
        let sum = total(&pool, &xs);
        assert_eq!(sum, expected);
        println!(
            "process pool, round {round}: sum of {} MiB in 16 stripes = {sum} in {:.1?}",
            (n * 8) >> 20,
            t.elapsed()
        );
    }
    pool.shutdown(Shutdown::Wait);

    let threads = ThreadPool::builder().workers(2).build()?;
    let t = Instant::now();
    let sum = total(&threads, &xs);
    assert_eq!(sum, expected);
    println!("thread pool: the same sum in {:.1?}", t.elapsed());
    threads.shutdown(Shutdown::Wait);

    // Outside a pool it is an ordinary serde type: numbers in JSON.
    let small = SharedSlice::copy_from_slice(&[1.5f64, 2.5]);
    println!("as JSON: {}", serde_json::to_string(&small)?);
    Ok(())
}
