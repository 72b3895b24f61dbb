//! Awaiting process-pool futures in tokio: a `TaskFuture` is a
//! `std::future::Future`, so `pool.submit(t)?.await` works in any runtime
//! and never blocks it. Here one current-thread runtime awaits a hundred
//! tasks while a timer keeps ticking on the same thread.
//!
//! This program is its own worker binary (`WorkerCommand::current_exe()` +
//! `run_if_worker`).
//!
//! `cargo run -p procpool --example async_tokio`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use procpool::{ProcessPool, Shutdown, TaskError, WorkerCommand};
use procpool_tasks::{Sleep, Square, drill};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First thing: in a worker process this serves tasks and never returns.
    // (Before any runtime starts, which is why `main` is not `#[tokio::main]`.)
    procpool::worker::run_if_worker(procpool_tasks::registry());

    let pool = ProcessPool::builder()
        .worker(WorkerCommand::current_exe())
        .workers(2)
        .build()?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;

    rt.block_on(async {
        // One task.
        let v = pool.submit(Square(7))?.await?;
        println!("7² = {v}");

        // A hundred at once, while a ticker runs on the same thread.
        let ticks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (ticks, stop) = (ticks.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let t = Instant::now();
        let mut handles = Vec::new();
        for i in 0..100u64 {
            // A TaskFuture is Send + 'static: spawn it like any future.
            handles.push(tokio::spawn(pool.submit(Sleep { millis: 5 + i % 5 })?));
        }
        let mut total = 0;
        for h in handles {
            total += h.await??;
        }
        stop.store(true, Ordering::Relaxed);
        ticker.await?;
        println!(
            "100 sleeps ({total} ms of work on 2 workers) awaited in {:?}; the ticker ticked {} times meanwhile",
            t.elapsed(),
            ticks.load(Ordering::Relaxed)
        );

        // A tokio timeout: the future is dropped (detached), the task runs on.
        match tokio::time::timeout(Duration::from_millis(50), pool.submit(Sleep { millis: 300 })?)
            .await
        {
            Ok(v) => println!("finished in time: {v:?}"),
            Err(_) => println!("gave up after 50 ms; the task runs on, its output discarded"),
        }

        // Failures arrive as typed errors.
        match pool.submit(drill::Panic("panicked in a worker".into()))?.await {
            Err(e @ TaskError::Panicked { .. }) => println!("as expected: {e}"),
            other => println!("unexpected: {other:?}"),
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;

    pool.shutdown(Shutdown::Wait);
    Ok(())
}
