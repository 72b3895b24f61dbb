//! Process pools in tokio, with nothing that blocks the runtime: a
//! `TaskFuture` is a `std::future::Future` (`pool.submit(t)?.await`),
//! `map(..).into_stream()` is `async for` over a lazy chunked map,
//! `wait_async` is `asyncio.wait`, `build_async` / `shutdown_async` start
//! and stop the pool off the runtime's thread, and `PoolGuard` is
//! `async with`. One current-thread runtime does it all while a timer keeps
//! ticking on the same thread.
//!
//! This program is its own worker binary (`WorkerCommand::current_exe()` +
//! `run_if_worker`).
//!
//! `cargo run -p procpool --example async_tokio`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use procpool::{
    PoolGuard, ProcessPool, ReturnWhen, Shutdown, TaskError, WorkerCommand, wait_async,
};
use procpool_tasks::{Checked, Sleep, Square, drill};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First thing: in a worker process this serves tasks and never returns.
    // (Before any runtime starts, which is why `main` is not `#[tokio::main]`.)
    procpool::worker::run_if_worker(procpool_tasks::registry());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;

    rt.block_on(async {
        // `async with ProcessPoolExecutor() as pool:` — started off the
        // runtime's thread; the guard shuts it down when the block ends,
        // never blocking the runtime (even on `?` or a panic).
        let pool = PoolGuard::new(
            ProcessPool::builder()
                .worker(WorkerCommand::current_exe())
                .workers(2)
                .build_async()
                .await?,
        );

        // One task.
        let v = pool.submit(Square(7))?.await?;
        println!("7² = {v}");

        // A ticker on the same thread, from here to the end: it would stop
        // ticking if anything below blocked the runtime.
        let ticks = Arc::new(AtomicU64::new(0));
        let worst_gap_us = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (ticks, worst, stop) = (ticks.clone(), worst_gap_us.clone(), stop.clone());
            tokio::spawn(async move {
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                    let gap = last.elapsed().as_micros() as u64;
                    worst.fetch_max(gap, Ordering::Relaxed);
                    last = Instant::now();
                }
            })
        };
        let ticking = Instant::now();

        // A hundred at once.
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
        println!(
            "100 sleeps ({total} ms of work on 2 workers) awaited in {:?}",
            t.elapsed()
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

        // `async for r in pool.map(..)`: lazy, chunked, bounded, in order;
        // a task's own Err is its value, a failed item never ends the map.
        let t = Instant::now();
        let (mut even, mut odd) = (0u64, 0u64);
        let mut results = pool
            .map((0..100_000u64).map(Checked))
            .chunksize(256)
            .into_stream();
        while let Some(r) = results.next().await {
            match r? {
                Ok(_) => even += 1,
                Err(_) => odd += 1,
            }
        }
        drop(results); // it borrows the pool, which `close` below consumes
        println!(
            "streamed 100,000 results ({even} values, {odd} of the task's own errors) in {:?}",
            t.elapsed()
        );

        // `asyncio.wait(fs, timeout=.., return_when=FIRST_COMPLETED)`.
        let futures = vec![
            pool.submit(Sleep { millis: 300 })?,
            pool.submit(Sleep { millis: 20 })?,
        ];
        let (done, not_done) = wait_async(
            futures,
            ReturnWhen::FirstCompleted,
            Some(Duration::from_secs(5)),
        )
        .await;
        println!(
            "wait_async(FirstCompleted): {} done, {} not yet",
            done.len(),
            not_done.len()
        );

        // The end of the `async with` block: shut down (here after the
        // queued work ran) without blocking the runtime.
        let queued = pool.submit(Sleep { millis: 100 })?;
        let t = Instant::now();
        pool.close(Shutdown::Wait).await;
        println!(
            "shut down in {:?} (the queued sleep gave {:?})",
            t.elapsed(),
            queued.await
        );

        stop.store(true, Ordering::Relaxed);
        ticker.await?;
        println!(
            "meanwhile a 2 ms ticker on the same thread ticked {} times in {:?}; its worst gap: {:.1} ms",
            ticks.load(Ordering::Relaxed),
            ticking.elapsed(),
            worst_gap_us.load(Ordering::Relaxed) as f64 / 1e3
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
