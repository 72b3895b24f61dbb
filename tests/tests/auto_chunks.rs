//! Auto chunking (SEMANTICS 25): a `map` given no `.chunksize(n)` picks
//! its chunk sizes as it goes, and points 10–15 hold for whatever it picks.
//! Real worker processes; every test under a watchdog.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use procpool::{ProcessPool, TaskError};
use procpool_e2e::{still_works, thread_pool, watchdog};
use procpool_tasks::drill::SquareOrDie;
use procpool_tasks::{Sleep, SleepWho, Spin, Square};

const LIMIT: Duration = Duration::from_secs(60);

/// The largest chunk auto chunking picks (documented on `Map::chunksize`).
const MAX_CHUNK: usize = 1024;

fn pool(n: usize) -> ProcessPool {
    procpool_e2e::process_pool_of(procpool_e2e::test_worker!(), n)
}

/// Inputs `0..` as `Square`s, counting how many were pulled.
fn counted(pulled: &Arc<AtomicUsize>) -> impl Iterator<Item = Square> + use<> {
    let pulled = pulled.clone();
    (0u64..).map(move |i| {
        pulled.fetch_add(1, Ordering::Relaxed);
        Square(i)
    })
}

#[test]
fn tiny_tasks_grow_the_chunks_on_a_process_pool() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        for ordered in [true, false] {
            let inputs = (0..60_000u64).map(Square);
            let mut m = if ordered {
                pool.map(inputs)
            } else {
                pool.map_unordered(inputs)
            };
            assert_eq!(m.current_chunksize(), 1);
            let mut sizes = vec![1];
            let mut sum = 0u64;
            let mut seen = 0u64;
            let mut i = 0usize;
            while let Some(r) = m.next() {
                let v = r.unwrap();
                if ordered {
                    assert_eq!(v, (i as u64) * (i as u64));
                }
                sum = sum.wrapping_add(v);
                seen += 1;
                i += 1;
                sizes.push(m.current_chunksize());
            }
            assert_eq!(seen, 60_000);
            assert_eq!(sum, (0..60_000u64).map(|i| i * i).sum::<u64>());
            sizes.dedup();
            println!("FIGURE auto_chunks ordered={ordered}: chunk sizes {sizes:?}");
            // Grown by steps of at most 16×, to well past 1.
            assert!(sizes.windows(2).all(|w| w[1] <= 16 * w[0]), "{sizes:?}");
            let top = *sizes.iter().max().unwrap();
            assert!(
                // A debug build measures ~3 µs per item (256+ when idle);
                // a busy machine stretches the measures, so ask for 64.
                (64..=MAX_CHUNK).contains(&top),
                "trivial tasks reached chunks of only {top}: {sizes:?}"
            );
        }
        still_works(&pool);
    });
}

#[test]
fn tiny_tasks_grow_the_chunks_on_a_thread_pool_and_in_a_stream() {
    watchdog(LIMIT, || {
        let threads = thread_pool(2);
        let mut m = threads.map((0..60_000u64).map(Square));
        let (mut ok, mut top) = (0, 0);
        while let Some(r) = m.next() {
            ok += usize::from(r.is_ok());
            top = top.max(m.current_chunksize());
        }
        assert_eq!(ok, 60_000);
        assert!(top >= 256, "chunks of only {top}: {m:?}");

        let procs = pool(2);
        futures_executor::block_on(async {
            let mut s = procs.map((0..60_000u64).map(Square)).into_stream();
            assert_eq!(s.current_chunksize(), 1);
            let (n, top) = squares_in_order(&mut s, |s| s.current_chunksize()).await;
            assert_eq!(n, 60_000);
            // Grown (a loaded machine may shrink it again near the end:
            // stretched samples read as slower items, by design).
            assert!(top >= 64, "chunks of only {top}: {s:?}");
        });
    });
}

/// Takes every result of an ordered stream of `Square(0), Square(1), …`,
/// checking each is its index squared; how many there were, and the
/// largest `size(s)` seen after a result.
async fn squares_in_order<S>(s: &mut S, size: impl Fn(&S) -> usize) -> (u64, usize)
where
    S: procpool::Stream<Item = Result<u64, TaskError>> + Unpin,
{
    let (mut n, mut top) = (0u64, 0usize);
    while let Some(r) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx)).await {
        assert_eq!(r.unwrap(), n * n);
        n += 1;
        top = top.max(size(s));
    }
    (n, top)
}

/// `0..n` as `Square`s from an async `Stream` (always ready).
struct Squares(u64, u64);

impl procpool::Stream for Squares {
    type Item = Square;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Square>> {
        let i = self.0;
        self.0 += 1;
        std::task::Poll::Ready((i < self.1).then_some(Square(i)))
    }
}

#[test]
fn inputs_from_a_stream_grow_the_chunks_too() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        futures_executor::block_on(async {
            let mut s = pool.map_stream(Squares(0, 60_000));
            let (n, top) = squares_in_order(&mut s, |s| s.current_chunksize()).await;
            assert_eq!(n, 60_000);
            assert!(top >= 64, "chunks of only {top}: {s:?}");
        });
    });
}

#[test]
fn an_explicit_chunksize_is_exactly_n_and_debug_shows_the_mode() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        let mut m = pool.map((0..20_000u64).map(Square)).chunksize(7);
        assert_eq!(m.by_ref().count(), 20_000);
        assert_eq!(m.current_chunksize(), 7);
        assert!(format!("{m:?}").contains("chunksize: 7,"), "{m:?}");
        let auto = pool.map((0..3u64).map(Square));
        assert!(
            format!("{auto:?}").contains("chunksize: auto (now 1)"),
            "{auto:?}"
        );
    });
}

#[test]
fn long_tasks_go_one_per_chunk_across_both_workers() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        // Warm both workers, so that start-up does not skew the split.
        still_works(&pool);
        let t = Instant::now();
        let mut m = pool.map((0..8).map(|_| SleepWho { millis: 20 }));
        let mut pids = Vec::new();
        while let Some(r) = m.next() {
            pids.push(r.unwrap());
            assert_eq!(m.current_chunksize(), 1, "20 ms tasks were chunked: {m:?}");
        }
        let took = t.elapsed();
        let mut per_worker = std::collections::BTreeMap::<u32, usize>::new();
        for p in &pids {
            *per_worker.entry(*p).or_default() += 1;
        }
        println!(
            "FIGURE auto_chunks 8 x 20 ms on 2 workers: {took:.2?}, per worker {per_worker:?}"
        );
        // One chunk of 8 would put all eight on one worker (160 ms); one
        // per chunk spreads them (80 ms).
        assert_eq!(per_worker.len(), 2, "one worker ran all: {per_worker:?}");
        assert!(per_worker.values().all(|&n| n <= 5), "{per_worker:?}");
    });
}

#[test]
fn a_crash_in_an_auto_chunk_costs_only_the_running_input() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        // Items 500, 1000, .. 5000 kill their worker; by then chunks hold
        // many items.
        let mut m = pool.map((1..=5_000u64).map(|x| SquareOrDie { x, modulus: 500 }));
        let mut chunk_at_crash = Vec::new();
        let mut x = 0u64;
        while let Some(r) = m.next() {
            x += 1;
            match r {
                Ok(v) => {
                    assert_ne!(x % 500, 0, "item {x} should have died");
                    assert_eq!(v, x * x);
                }
                Err(TaskError::WorkerDied { .. }) => {
                    assert_eq!(x % 500, 0, "item {x} died with another's crash");
                    chunk_at_crash.push(m.current_chunksize());
                }
                Err(e) => panic!("item {x}: {e}"),
            }
        }
        assert_eq!(x, 5_000);
        assert_eq!(chunk_at_crash.len(), 10);
        println!("FIGURE auto_chunks crashes: chunk size at each crash {chunk_at_crash:?}");
        assert!(
            chunk_at_crash.iter().any(|&c| c > 1),
            "the crashes all hit chunks of 1: {chunk_at_crash:?}"
        );
        still_works(&pool);
    });
}

#[test]
fn a_dropped_auto_map_cancels_what_has_not_started() {
    watchdog(LIMIT, || {
        // Long tasks: chunks of one; only the running ones finish.
        let pool = pool(2);
        let mut m = pool.map((0..100_000u64).map(|_| Sleep { millis: 20 }));
        assert_eq!(m.next().unwrap().unwrap(), 20);
        drop(m);
        std::thread::sleep(Duration::from_millis(300));
        let ran = pool.stats().completed;
        println!("FIGURE auto_chunks drop of 20 ms tasks: {ran} ran");
        // The one yielded, and per worker the one running at the drop and
        // at most one begun before the withdrawal reached it.
        assert!(
            ran <= 5,
            "{ran} tasks ran after the drop of a 100k-item map"
        );

        // Short tasks, chunks grown (to about 2 ms of work each): a wide
        // window holds ~64 chunks, far more than the workers run before
        // the drop's withdrawal reaches them.
        let pulled = Arc::new(AtomicUsize::new(0));
        let before = pool.stats().completed;
        let counter = pulled.clone();
        let inputs = (0u64..).map(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
            Spin { iterations: 5_000 }
        });
        let mut m = pool.map_unordered(inputs).window(64);
        for r in m.by_ref().take(5_000) {
            r.unwrap();
        }
        // Whatever size it picked (on a busy machine the measures run
        // long and the chunks stay small), the queued chunks are cancelled.
        let size = m.current_chunksize();
        drop(m);
        std::thread::sleep(Duration::from_millis(300));
        let ran = (pool.stats().completed - before) as usize;
        let pulled = pulled.load(Ordering::Relaxed);
        println!("FIGURE auto_chunks drop: chunks of {size}, pulled {pulled}, ran {ran}");
        assert!(ran >= 5_000);
        assert!(
            ran + size <= pulled,
            "a dropped map ran {ran} of {pulled} pulled inputs (chunks of {size})"
        );
        still_works(&pool);
    });
}

#[test]
fn laziness_stays_bounded_with_auto_chunks() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        for window in [None, Some(4)] {
            let pulled = Arc::new(AtomicUsize::new(0));
            let m = pool.map_unordered(counted(&pulled));
            let m = match window {
                Some(w) => m.window(w),
                None => m,
            };
            let got = m.take(30_000).filter(|r| r.is_ok()).count();
            assert_eq!(got, 30_000);
            let pulled = pulled.load(Ordering::Relaxed);
            // The default window of a process pool: workers × (4 ×
            // prefetch + 1) × 2 chunks = 68 here (what the workers may
            // hold with `prefetch_time`, and as much again).
            let chunks = window.unwrap_or(2 * (4 * 4 + 1) * 2);
            println!("FIGURE auto_chunks laziness window {chunks}: pulled {pulled} for 30000");
            assert!(
                // A chunk is pulled while fewer than window × size are
                // out: one chunk over the window at most.
                pulled <= 30_000 + (chunks + 1) * MAX_CHUNK,
                "pulled {pulled} inputs for 30000 results with a window of {chunks} chunks"
            );
        }
        still_works(&pool);
    });
}
