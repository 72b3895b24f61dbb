//! `map` over ten million inputs with flat parent memory: the iterator is
//! pulled lazily, a bounded window at a time. Prints the parent's peak RSS
//! (`VmHWM`) before and after.
//!
//! `cargo run --release -p procpool --example map_10m [N]`

use procpool::{ProcessPool, WorkerCommand};
use procpool_tasks::Square;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    procpool::worker::run_if_worker(procpool_tasks::registry());
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let pool = ProcessPool::builder()
        .worker(WorkerCommand::current_exe())
        .workers(2)
        .build()?;
    let before = peak_rss_kib();
    let t = std::time::Instant::now();
    let mut sum = 0u64;
    for r in pool.map((0..n).map(Square)).chunksize(1024) {
        sum = sum.wrapping_add(r?);
    }
    let expected = (0..n).fold(0u64, |s, i| s.wrapping_add(i.wrapping_mul(i)));
    assert_eq!(sum, expected);
    println!(
        "{n} inputs in {:.1?}: parent peak RSS {} MiB before, {} MiB after",
        t.elapsed(),
        before / 1024,
        peak_rss_kib() / 1024
    );
    Ok(())
}
