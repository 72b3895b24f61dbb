//! How many batches a worker holds: `prefetch`, and for a `map`'s short
//! chunks `prefetch_time` (issue 14: a worker fed only `prefetch` chunks of
//! trivial tasks ran dry whenever the parent's threads waited for a CPU).
//! Real worker processes; every test under a watchdog.

use std::time::Duration;

use procpool::ProcessPool;
use procpool_e2e::{still_works, watchdog};
use procpool_tasks::{Sleep, Square};

const LIMIT: Duration = Duration::from_secs(60);
const PREFETCH: usize = 2;

fn pool(time: Option<Duration>) -> ProcessPool {
    let b = procpool_e2e::builder()
        .worker(procpool_e2e::test_worker!())
        .workers(2)
        .prefetch(PREFETCH);
    match time {
        Some(t) => b.prefetch_time(t),
        None => b,
    }
    .build()
    .expect("process pool starts")
}

/// A map of `n` trivial tasks in chunks of 16; checks every result.
fn squares(pool: &ProcessPool, n: u64) {
    squares_in(pool, n, 16);
}

fn squares_in(pool: &ProcessPool, n: u64, chunksize: usize) {
    let sum: u64 = pool
        .map_unordered((0..n).map(Square))
        .chunksize(chunksize)
        .map(Result::unwrap)
        .sum();
    assert_eq!(sum, (0..n).map(|i| i * i).sum::<u64>());
}

/// A fresh pool's workers, given `n` trivial inputs in chunks of
/// `chunksize`, held more than `prefetch` of them at once, and at most 4 ×.
fn goes_deeper(n: u64, chunksize: usize) {
    watchdog(LIMIT, move || {
        let pool = pool(None);
        squares_in(&pool, n, chunksize);
        let most = pool.debug_take_most_held();
        assert!(
            most > PREFETCH && most <= 4 * PREFETCH,
            "a worker held at most {most} chunks of {chunksize} (prefetch {PREFETCH})"
        );
        still_works(&pool);
    });
}

#[test]
fn short_chunks_go_deeper_than_prefetch_and_at_most_four_times_it() {
    goes_deeper(100_000, 16);
}

/// A chunksize-1 map's inputs are tasks of their own (each its future and
/// `Running`), and go deeper too.
#[test]
fn short_inputs_of_a_chunksize_1_map_go_deeper_too() {
    goes_deeper(20_000, 1);
}

#[test]
fn long_chunks_and_other_tasks_stay_at_prefetch() {
    watchdog(LIMIT, || {
        let pool = pool(None);
        // Fresh: 8 ms chunks are measured as such from the first one.
        let slow = || (0..24).map(|_| Sleep { millis: 4 });
        let done = pool.map(slow()).chunksize(2).filter(Result::is_ok).count();
        assert_eq!(done, 24);
        let most = pool.debug_take_most_held();
        assert!(most <= PREFETCH, "{most} chunks of 8 ms held at once");
        // After short chunks of another task: its measure does not count.
        squares(&pool, 20_000);
        assert!(pool.debug_take_most_held() > PREFETCH);
        let done = pool.map(slow()).chunksize(2).filter(Result::is_ok).count();
        assert_eq!(done, 24);
        let most = pool.debug_take_most_held();
        assert!(
            most <= PREFETCH,
            "{most} chunks of 8 ms held after short ones"
        );
        // Nor 4 ms inputs of a chunksize-1 map.
        let done = pool.map(slow()).chunksize(1).filter(Result::is_ok).count();
        assert_eq!(done, 24);
        let most = pool.debug_take_most_held();
        assert!(most <= PREFETCH, "{most} inputs of 4 ms held at once");
        // Plain tasks never go deeper than prefetch.
        let futures: Vec<_> = (0..200).map(|i| pool.submit(Square(i)).unwrap()).collect();
        for (i, f) in (0u64..).zip(futures) {
            assert_eq!(f.result().unwrap(), i * i);
        }
        let most = pool.debug_take_most_held();
        assert!(most <= PREFETCH, "{most} plain tasks held at once");
    });
}

#[test]
fn zero_prefetch_time_keeps_chunks_at_prefetch() {
    watchdog(LIMIT, || {
        let pool = pool(Some(Duration::ZERO));
        squares(&pool, 50_000);
        let most = pool.debug_take_most_held();
        assert!(most <= PREFETCH, "{most} chunks held with prefetch_time 0");
        assert!(most >= 1);
    });
}
