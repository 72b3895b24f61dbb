//! Quickstart: a process pool running built-in tasks, with typed errors and
//! the cost of each task. This program is its own worker binary
//! (`WorkerCommand::current_exe()` + `run_if_worker`).
//!
//! `cargo run -p procpool --example quickstart`

use procpool::{ProcessPool, Shutdown, TaskError, WorkerCommand};
use procpool_tasks::{Square, drill};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In a worker process this serves tasks and never returns.
    procpool::worker::run_if_worker(procpool_tasks::registry());

    let pool = ProcessPool::builder()
        .worker(WorkerCommand::current_exe())
        .workers(2)
        .build()?;

    // One task: a future, its value, and what it cost.
    let f = pool.submit(Square(7))?;
    f.wait();
    let cost = f.cost().expect("finished with a value");
    println!(
        "7² = {} (round trip {:?}, serialization {:?})",
        f.result()?,
        cost.total,
        cost.serialization()
    );

    // A crash costs only its own future; the pool replaces the worker.
    match pool.submit(drill::Abort)?.result() {
        Err(e @ TaskError::WorkerDied { .. }) => println!("as expected: {e}"),
        other => println!("unexpected: {other:?}"),
    }

    // map: lazy, ordered, chunked, one Result per input.
    let sum: u64 = pool
        .map((0..10_000u64).map(Square))
        .chunksize(256)
        .map(|r| r.expect("square never fails"))
        .sum();
    println!("sum of squares below 10000 = {sum}");

    pool.shutdown(Shutdown::Wait);
    Ok(())
}
