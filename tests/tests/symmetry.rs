//! `ProcessPool` and `ThreadPool` answer the same inherent methods, so a
//! caller needs no trait import (this file imports no `Executor` but in the
//! generic test), and `Executor` reaches `workers()` and `stats()` for
//! generic code.

use std::time::Duration;

use procpool::Shutdown;
use procpool_e2e::{process_pool_of, test_worker, thread_pool, watchdog};
use procpool_tasks::Square;

const LIMIT: Duration = Duration::from_secs(60);

/// The same calls on either pool type, through inherent methods only.
macro_rules! exercise {
    ($pool:expr) => {{
        let pool = $pool;
        assert_eq!(pool.workers(), 2);
        assert_eq!(pool.submit(Square(7)).unwrap().result().unwrap(), 49);
        let ordered: Vec<u64> = pool.map((0..10).map(Square)).map(|r| r.unwrap()).collect();
        assert_eq!(ordered, (0..10u64).map(|i| i * i).collect::<Vec<_>>());
        let mut unordered: Vec<u64> = pool
            .map_unordered((0..10).map(Square))
            .map(|r| r.unwrap())
            .collect();
        unordered.sort_unstable();
        assert_eq!(unordered, ordered);
        assert_eq!(pool.stats().completed, 21);
        pool.shutdown(Shutdown::Wait);
        assert!(pool.submit(Square(1)).is_err(), "a shut pool refuses work");
    }};
}

#[test]
fn thread_pool_inherent_methods() {
    watchdog(LIMIT, || exercise!(thread_pool(2)));
}

#[test]
fn process_pool_inherent_methods() {
    watchdog(LIMIT, || exercise!(process_pool_of(test_worker!(), 2)));
}

#[test]
fn executor_reaches_workers_and_stats() {
    fn run_one(pool: &impl procpool::Executor) -> (usize, u64) {
        pool.submit(Square(3)).unwrap().result().unwrap();
        (pool.workers(), pool.stats().completed)
    }
    watchdog(LIMIT, || {
        assert_eq!(run_one(&thread_pool(3)), (3, 1));
        assert_eq!(run_one(&process_pool_of(test_worker!(), 2)), (2, 1));
    });
}
