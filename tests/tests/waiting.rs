//! Waiting on many futures, end to end: `as_completed`, `wait` in every
//! mode, and `map` / `map_unordered` past failures, with timeouts, dropped
//! midway and after shutdown — on both pools, and with futures of a
//! `ThreadPool` and a `ProcessPool` mixed in one call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use procpool::{
    Executor, ProcessPool, ReturnWhen, Shutdown, State, Task, TaskError, TaskFuture, WorkerContext,
    as_completed, wait,
};
use procpool_e2e::{both_pools, still_works, thread_pool, watchdog};
use procpool_tasks::{Checked, Sleep, Square, drill};
use serde::{Deserialize, Serialize};

fn process_pool(n: usize) -> ProcessPool {
    procpool_e2e::process_pool_of(procpool_e2e::test_worker!(), n)
}

const LIMIT: Duration = Duration::from_secs(60);

fn sleep(pool: &impl Executor, millis: u64) -> TaskFuture<u64> {
    pool.submit(Sleep { millis }).unwrap()
}

fn wait_for_state<T: Send + 'static>(f: &TaskFuture<T>, want: State) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.state() != want {
        assert!(
            Instant::now() < deadline,
            "stuck waiting for {want:?}: {f:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// A cancelled `TaskFuture<u64>`: one worker busy with a Sleep, a second
/// Sleep queued behind it and cancelled. Returns (blocker, cancelled).
fn busy_and_cancelled(pool: &impl Executor, busy_ms: u64) -> (TaskFuture<u64>, TaskFuture<u64>) {
    let blocker = sleep(pool, busy_ms);
    wait_for_state(&blocker, State::Running);
    let queued = sleep(pool, 5);
    assert!(queued.cancel(), "a queued task can be cancelled");
    assert!(queued.is_cancelled());
    (blocker, queued)
}

/// Runs only on a ThreadPool (the test worker does not register it):
/// squares, or panics when told to.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
struct SquareOrPanic {
    x: u64,
    panic: bool,
}

impl Task for SquareOrPanic {
    const NAME: &'static str = "e2e_square_or_panic";
    type Output = u64;
    fn run(self, _: &mut WorkerContext) -> u64 {
        if self.panic {
            panic!("item {} fails on purpose", self.x)
        }
        self.x * self.x
    }
}

/// Like `procpool_tasks::Checked` but slow; ThreadPool only.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
struct SlowChecked {
    x: u64,
    millis: u64,
}

impl Task for SlowChecked {
    const NAME: &'static str = "e2e_slow_checked";
    type Output = Result<u64, String>;
    fn run(self, ctx: &mut WorkerContext) -> Result<u64, String> {
        thread::sleep(Duration::from_millis(self.millis));
        Checked(self.x).run(ctx)
    }
}

// ------------------------------------------------------------ as_completed

/// Futures come out in the order they finish.
fn as_completed_order<P: Executor>(pool: &P) {
    let futs = vec![sleep(pool, 500), sleep(pool, 20), sleep(pool, 250)];
    let order: Vec<u64> = as_completed(futs)
        .map(|f| {
            assert!(f.done(), "as_completed yields finished futures");
            f.result().unwrap()
        })
        .collect();
    assert_eq!(order, vec![20, 250, 500]);
}
both_pools!(
    as_completed_yields_in_completion_order,
    3,
    as_completed_order
);

/// Already-finished futures come first, and a cancelled one counts as
/// finished.
fn as_completed_finished_first<P: Executor>(pool: &P) {
    let fast = pool.submit(Square(4)).unwrap();
    fast.wait();
    let (blocker, cancelled) = busy_and_cancelled(pool, 300);
    let t = Instant::now();
    let mut it = as_completed(vec![blocker, cancelled, fast]);
    let first = it.next().unwrap();
    let second = it.next().unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "finished futures came after {:?}",
        t.elapsed()
    );
    let (c, f) = if first.is_cancelled() {
        (first, second)
    } else {
        (second, first)
    };
    assert!(c.is_cancelled(), "the cancelled future counts as finished");
    assert_eq!(c.result().unwrap_err(), TaskError::Cancelled);
    assert_eq!(f.result().unwrap(), 16);
    let last = it.next().unwrap();
    assert_eq!(last.result().unwrap(), 300);
    assert!(it.next().is_none());
    assert!(!it.timed_out());
}
both_pools!(
    as_completed_already_finished_first,
    1,
    as_completed_finished_first
);

/// `.timeout(d)`: the iteration ends, `timed_out()` says so, and
/// `into_pending()` hands back the unfinished futures untouched.
fn as_completed_timeout<P: Executor>(pool: &P) {
    let futs = vec![sleep(pool, 700), sleep(pool, 20)];
    let mut it = as_completed(futs).timeout(Duration::from_millis(250));
    let t = Instant::now();
    assert_eq!(it.next().unwrap().result().unwrap(), 20);
    assert!(!it.timed_out());
    assert!(it.next().is_none(), "the 700 ms task is not done in 250 ms");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(240) && waited < Duration::from_millis(600),
        "timed out after {waited:?}"
    );
    assert!(it.timed_out());
    assert!(it.next().is_none(), "it stays ended");
    let pending = it.into_pending();
    assert_eq!(pending.len(), 1);
    let slow = pending.into_iter().next().unwrap();
    assert!(
        !slow.done() && !slow.is_cancelled(),
        "handed back untouched"
    );
    assert_eq!(slow.result().unwrap(), 700);

    // Nothing left over when everything finished in time.
    let mut it = as_completed(vec![sleep(pool, 10)]).timeout(Duration::from_secs(10));
    assert_eq!(it.next().unwrap().result().unwrap(), 10);
    assert!(it.next().is_none());
    assert!(!it.timed_out());
    assert!(it.into_pending().is_empty());
}
both_pools!(
    as_completed_timeout_then_into_pending,
    2,
    as_completed_timeout
);

/// The timeout's clock starts at the first `next()`, not at creation.
fn as_completed_clock_starts_at_next<P: Executor>(pool: &P) {
    let f = sleep(pool, 600);
    let mut it = as_completed(vec![f]).timeout(Duration::from_millis(500));
    thread::sleep(Duration::from_millis(300));
    let got = it.next();
    assert!(
        got.is_some(),
        "the clock started at as_completed(), not at the first next()"
    );
    assert_eq!(got.unwrap().result().unwrap(), 600);
    assert!(!it.timed_out());
}
both_pools!(
    as_completed_timeout_clock_starts_at_first_next,
    1,
    as_completed_clock_starts_at_next
);

#[test]
fn as_completed_of_nothing_ends_at_once() {
    watchdog(LIMIT, || {
        let none: Vec<TaskFuture<u64>> = Vec::new();
        assert!(as_completed(none).next().is_none());
        let mut it = as_completed(Vec::<TaskFuture<u64>>::new()).timeout(Duration::from_secs(5));
        let t = Instant::now();
        assert!(it.next().is_none());
        assert!(t.elapsed() < Duration::from_millis(1000));
        assert!(!it.timed_out(), "nothing was left unfinished");
        assert!(it.into_pending().is_empty());
    });
}

#[test]
fn as_completed_mixes_thread_and_process_futures() {
    watchdog(LIMIT, || {
        let tp = thread_pool(2);
        let pp = process_pool(2);
        let futs: Vec<TaskFuture<u64>> = vec![
            tp.submit(Sleep { millis: 400 }).unwrap(),
            pp.submit(Sleep { millis: 200 }).unwrap(),
            tp.submit(Square(3)).unwrap(),
            pp.submit(Square(4)).unwrap(),
        ];
        let got: Vec<u64> = as_completed(futs).map(|f| f.result().unwrap()).collect();
        assert_eq!(got.len(), 4);
        let mut first_two = got[..2].to_vec();
        first_two.sort_unstable();
        assert_eq!(first_two, vec![9, 16], "{got:?}");
        assert_eq!(&got[2..], &[200, 400], "{got:?}");
    });
}

// -------------------------------------------------------------------- wait

fn values(fs: Vec<TaskFuture<u64>>) -> Vec<u64> {
    fs.into_iter().map(|f| f.result().unwrap()).collect()
}

fn wait_all_completed<P: Executor>(pool: &P) {
    // No timeout: everything, in the original order.
    let futs = vec![
        sleep(pool, 150),
        pool.submit(Square(3)).unwrap(),
        sleep(pool, 50),
    ];
    let (done, not_done) = wait(futs, ReturnWhen::AllCompleted, None);
    assert!(not_done.is_empty());
    assert!(done.iter().all(|f| f.done()));
    assert_eq!(values(done), vec![150, 9, 50], "original order kept");

    // A timeout that passes: what finished, and the rest untouched.
    let futs = vec![sleep(pool, 800), sleep(pool, 20)];
    let t = Instant::now();
    let (done, not_done) = wait(
        futs,
        ReturnWhen::AllCompleted,
        Some(Duration::from_millis(200)),
    );
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_millis(600),
        "waited {waited:?} for a 200 ms limit"
    );
    assert_eq!(values(done), vec![20]);
    assert_eq!(not_done.len(), 1);
    assert!(!not_done[0].done() && !not_done[0].is_cancelled());
    // A timeout that does not pass: returns as soon as all are done.
    let t = Instant::now();
    let (done, not_done) = wait(
        not_done,
        ReturnWhen::AllCompleted,
        Some(Duration::from_secs(20)),
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(not_done.is_empty());
    assert_eq!(values(done), vec![800]);
}
both_pools!(
    wait_all_completed_with_and_without_timeout,
    2,
    wait_all_completed
);

fn wait_first_completed<P: Executor>(pool: &P) {
    let futs = vec![sleep(pool, 800), sleep(pool, 50)];
    let t = Instant::now();
    let (done, not_done) = wait(futs, ReturnWhen::FirstCompleted, None);
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(values(done), vec![50]);
    assert_eq!(not_done.len(), 1);
    assert!(!not_done[0].done() && !not_done[0].is_cancelled());

    // Timeout passes before any finishes.
    let t = Instant::now();
    let (done, not_done) = wait(
        not_done,
        ReturnWhen::FirstCompleted,
        Some(Duration::from_millis(100)),
    );
    let waited = t.elapsed();
    assert!(done.is_empty() && not_done.len() == 1);
    assert!(
        waited >= Duration::from_millis(95) && waited < Duration::from_millis(500),
        "{waited:?}"
    );
    // One already done: at once.
    let quick = pool.submit(Square(2)).unwrap();
    quick.wait();
    let t = Instant::now();
    let (done, not_done) = wait(
        vec![not_done.into_iter().next().unwrap(), quick],
        ReturnWhen::FirstCompleted,
        Some(Duration::from_secs(20)),
    );
    assert!(t.elapsed() < Duration::from_millis(300));
    assert_eq!(values(done), vec![4]);
    assert_eq!(values(not_done), vec![800]);
}
both_pools!(
    wait_first_completed_with_and_without_timeout,
    2,
    wait_first_completed
);

/// FirstException returns at the first real failure.
#[test]
fn wait_first_exception_returns_at_the_first_failure_process() {
    watchdog(LIMIT, || {
        let pool = process_pool(3);
        // Done before the crash is submitted: otherwise, on a busy machine,
        // the crash can be seen before this result arrives.
        let square = pool.submit(Square(2)).unwrap();
        square.wait();
        let futs = vec![
            sleep(&pool, 1000),
            square,
            pool.submit(drill::SquareOrDie { x: 0, modulus: 1 })
                .unwrap(),
        ];
        let t = Instant::now();
        let (done, not_done) = wait(futs, ReturnWhen::FirstException, None);
        assert!(
            t.elapsed() < Duration::from_millis(800),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(not_done.len(), 1, "the sleep is still running");
        assert_eq!(done.len(), 2);
        let mut done = done.into_iter();
        assert_eq!(done.next().unwrap().result().unwrap(), 4);
        let failed = done.next().unwrap();
        assert!(
            failed.error().unwrap().is_worker_died(),
            "{:?}",
            failed.error()
        );
        assert_eq!(values(not_done), vec![1000]);
        still_works(&pool);
    });
}

#[test]
fn wait_first_exception_returns_at_the_first_failure_thread() {
    watchdog(LIMIT, || {
        let pool = thread_pool(3);
        let futs = vec![
            sleep(&pool, 1000),
            pool.submit(Square(2)).unwrap(),
            pool.spawn(|| -> u64 { panic!("first exception") }).unwrap(),
        ];
        let t = Instant::now();
        let (done, not_done) = wait(futs, ReturnWhen::FirstException, None);
        assert!(
            t.elapsed() < Duration::from_millis(800),
            "{:?}",
            t.elapsed()
        );
        assert_eq!((done.len(), not_done.len()), (2, 1));
        assert!(done[1].error().unwrap().is_panic());
        assert_eq!(values(not_done), vec![1000]);
    });
}

/// FirstException: a cancelled future is not an exception.
fn first_exception_ignores_cancelled<P: Executor>(pool: &P) {
    let (blocker, cancelled) = busy_and_cancelled(pool, 300);
    let t = Instant::now();
    let (done, not_done) = wait(vec![cancelled, blocker], ReturnWhen::FirstException, None);
    assert!(
        not_done.is_empty(),
        "FirstException stopped at a cancelled future"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert!(done[0].is_cancelled());
    assert_eq!(done[1].state(), State::Done);
}
both_pools!(
    wait_first_exception_ignores_cancelled,
    1,
    first_exception_ignores_cancelled
);

/// FirstException with no failure behaves as AllCompleted (and with a
/// limit, as AllCompleted with a limit).
fn first_exception_without_failure<P: Executor>(pool: &P) {
    let futs = vec![sleep(pool, 50), sleep(pool, 250)];
    let (done, not_done) = wait(futs, ReturnWhen::FirstException, None);
    assert!(not_done.is_empty());
    assert_eq!(values(done), vec![50, 250]);

    let futs = vec![sleep(pool, 700), sleep(pool, 10)];
    let t = Instant::now();
    let (done, not_done) = wait(
        futs,
        ReturnWhen::FirstException,
        Some(Duration::from_millis(150)),
    );
    assert!(
        t.elapsed() >= Duration::from_millis(140),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(values(done), vec![10]);
    assert_eq!(values(not_done), vec![700]);
}
both_pools!(
    wait_first_exception_without_failure_is_all_completed,
    2,
    first_exception_without_failure
);

/// FirstException: a task's own `Ok(Err(e))` is a value, not an exception.
/// (A process-pool `Checked` and a slow thread-pool one in one call.)
#[test]
fn wait_first_exception_ignores_ok_err_values() {
    watchdog(LIMIT, || {
        let pp = process_pool(1);
        let tp = thread_pool(1);
        let odd = pp.submit(Checked(3)).unwrap();
        odd.wait();
        let futs = vec![odd, tp.submit(SlowChecked { x: 5, millis: 300 }).unwrap()];
        let t = Instant::now();
        let (done, not_done) = wait(futs, ReturnWhen::FirstException, None);
        assert!(
            not_done.is_empty(),
            "FirstException stopped at an Ok(Err) value"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        let got: Vec<_> = done.into_iter().map(|f| f.result().unwrap()).collect();
        assert_eq!(got, vec![Err("3 is odd".into()), Err("5 is odd".into())]);
    });
}

/// `Some(Duration::ZERO)` is a snapshot in every mode.
fn zero_timeout_snapshot<P: Executor>(pool: &P) {
    let finished = pool.submit(Square(6)).unwrap();
    finished.wait();
    let mut futs = vec![finished, sleep(pool, 500)];
    for mode in [
        ReturnWhen::AllCompleted,
        ReturnWhen::FirstCompleted,
        ReturnWhen::FirstException,
    ] {
        let t = Instant::now();
        let (done, not_done) = wait(futs, mode, Some(Duration::ZERO));
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "{mode:?}: a snapshot took {:?}",
            t.elapsed()
        );
        assert_eq!((done.len(), not_done.len()), (1, 1), "{mode:?}");
        assert!(done[0].done() && !not_done[0].done());
        futs = done.into_iter().chain(not_done).collect();
    }
    assert_eq!(values(futs), vec![36, 500]);
    // Nothing to wait for: at once, in any mode.
    for mode in [
        ReturnWhen::AllCompleted,
        ReturnWhen::FirstCompleted,
        ReturnWhen::FirstException,
    ] {
        let (d, n) = wait(Vec::<TaskFuture<u64>>::new(), mode, None);
        assert!(d.is_empty() && n.is_empty());
    }
}
both_pools!(wait_zero_timeout_is_a_snapshot, 2, zero_timeout_snapshot);

#[test]
fn wait_mixes_thread_and_process_futures() {
    watchdog(LIMIT, || {
        let tp = thread_pool(2);
        let pp = process_pool(2);
        let make = || -> Vec<TaskFuture<u64>> {
            vec![
                tp.submit(Sleep { millis: 300 }).unwrap(),
                pp.submit(Sleep { millis: 100 }).unwrap(),
                pp.submit(Square(5)).unwrap(),
                tp.submit(Square(6)).unwrap(),
            ]
        };
        let (done, not_done) = wait(make(), ReturnWhen::AllCompleted, None);
        assert!(not_done.is_empty());
        assert_eq!(values(done), vec![300, 100, 25, 36]);

        let (done, not_done) = wait(make(), ReturnWhen::FirstCompleted, None);
        assert!(
            !done.is_empty() && not_done.len() >= 2,
            "{done:?} {not_done:?}"
        );
        let (done2, not_done2) = wait(
            done.into_iter().chain(not_done),
            ReturnWhen::FirstException,
            Some(Duration::from_secs(20)),
        );
        assert!(not_done2.is_empty());
        let mut got = values(done2);
        got.sort_unstable();
        assert_eq!(got, vec![25, 36, 100, 300]);

        // A failure from the thread pool ends a FirstException wait over
        // process futures too.
        let futs = vec![
            pp.submit(Sleep { millis: 1000 }).unwrap(),
            tp.spawn(|| -> u64 { panic!("thread side fails") }).unwrap(),
        ];
        let t = Instant::now();
        let (done, not_done) = wait(futs, ReturnWhen::FirstException, None);
        assert!(t.elapsed() < Duration::from_millis(800));
        assert_eq!((done.len(), not_done.len()), (1, 1));
        assert!(done[0].error().unwrap().is_panic());
        assert_eq!(values(not_done), vec![1000]);
    });
}

// --------------------------------------------------------------------- map

/// Item 3 fails; every other item still arrives (ordered: in place;
/// unordered: all of them), with chunks of 1 and of 5 (item 4 shares item
/// 3's chunk).
fn map_past_failures<P, T>(pool: &P, make: impl Fn(u64) -> T, expected: impl Fn(&TaskError) -> bool)
where
    P: Executor,
    T: Task<Output = u64>,
{
    const N: u64 = 12;
    for chunksize in [1, 5] {
        let results: Vec<_> = pool.map((0..N).map(&make)).chunksize(chunksize).collect();
        assert_eq!(results.len(), N as usize, "chunksize {chunksize}");
        for (i, r) in results.iter().enumerate() {
            if i == 3 {
                assert!(
                    matches!(r, Err(e) if expected(e)),
                    "chunksize {chunksize}: item 3: {r:?}"
                );
            } else {
                assert_eq!(r, &Ok((i * i) as u64), "chunksize {chunksize}: item {i}");
            }
        }

        let results: Vec<_> = pool
            .map_unordered((0..N).map(&make))
            .chunksize(chunksize)
            .collect();
        assert_eq!(
            results.len(),
            N as usize,
            "unordered, chunksize {chunksize}"
        );
        let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(errors.len(), 1, "unordered: {errors:?}");
        assert!(expected(errors[0]), "{:?}", errors[0]);
        let mut got: Vec<u64> = results.into_iter().filter_map(Result::ok).collect();
        got.sort_unstable();
        let want: Vec<u64> = (0..N).filter(|&i| i != 3).map(|i| i * i).collect();
        assert_eq!(got, want, "unordered, chunksize {chunksize}");
    }
}

#[test]
fn map_goes_past_failures_process() {
    watchdog(LIMIT, || {
        let pool = process_pool(2);
        map_past_failures(
            &pool,
            |i| drill::SquareOrDie {
                x: i,
                modulus: if i == 3 { 3 } else { 0 },
            },
            TaskError::is_worker_died,
        );
        still_works(&pool);
    });
}

#[test]
fn map_goes_past_failures_thread() {
    watchdog(LIMIT, || {
        let pool = thread_pool(2);
        map_past_failures(
            &pool,
            |i| SquareOrPanic {
                x: i,
                panic: i == 3,
            },
            |e| matches!(e, TaskError::Panicked { message, .. } if message == "item 3 fails on purpose"),
        );
        still_works(&pool);
    });
}

/// `Map::timeout`: one `Err(WaitTimedOut)`, then the end; the items not yet
/// started are cancelled (the pool is free soon after the running one).
fn map_timeout<P: Executor>(pool: &P) {
    let limit = Duration::from_millis(200);
    let mut m = pool
        .map([10, 700, 500, 500, 500].map(|millis| Sleep { millis }))
        .timeout(limit);
    assert_eq!(m.next(), Some(Ok(10)));
    let t = Instant::now();
    match m.next() {
        Some(Err(TaskError::WaitTimedOut { after })) => assert_eq!(after, limit),
        other => panic!("expected WaitTimedOut, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(m.next(), None, "the map ends after the time-out");
    assert_eq!(m.next(), None);
    drop(m);
    // The 700 ms item runs on; the three 500 ms items were cancelled, so a
    // new task finishes well before 700 + 1500 ms.
    let t = Instant::now();
    assert_eq!(pool.submit(Square(3)).unwrap().result().unwrap(), 9);
    assert!(
        t.elapsed() < Duration::from_millis(1100),
        "the rest of the map was not cancelled: {:?}",
        t.elapsed()
    );

    // Unordered: the same.
    let mut m = pool
        .map_unordered([600, 600, 600].map(|millis| Sleep { millis }))
        .timeout(limit);
    let t = Instant::now();
    assert!(matches!(
        m.next(),
        Some(Err(TaskError::WaitTimedOut { .. }))
    ));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(m.next(), None);
    drop(m);
    let t = Instant::now();
    assert_eq!(pool.submit(Square(4)).unwrap().result().unwrap(), 16);
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "the rest of the unordered map was not cancelled: {:?}",
        t.elapsed()
    );
}
both_pools!(map_timeout_yields_wait_timed_out_and_ends, 1, map_timeout);

/// Dropping a `Map` midway stops pulling inputs and cancels what has not
/// started: the pool is free right after the one running item.
fn map_drop_midway<P: Executor>(pool: &P) {
    let pulled = Arc::new(AtomicU64::new(0));
    let p = pulled.clone();
    let inputs = (0..1_000_000u64).map(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
        Sleep { millis: 100 }
    });
    let mut m = pool.map(inputs).window(8);
    assert_eq!(m.next(), Some(Ok(100)));
    assert_eq!(m.next(), Some(Ok(100)));
    let at_drop = pulled.load(Ordering::SeqCst);
    assert!(at_drop <= 16, "pulled {at_drop} inputs with a window of 8");
    let t = Instant::now();
    drop(m);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "dropping a Map took {:?}",
        t.elapsed()
    );
    assert_eq!(pulled.load(Ordering::SeqCst), at_drop, "pulled after drop");
    // Without cancellation ~8 × 100 ms of queued items would run first.
    let t = Instant::now();
    assert_eq!(pool.submit(Square(7)).unwrap().result().unwrap(), 49);
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "unstarted items of the dropped Map ran: {:?}",
        t.elapsed()
    );
}
both_pools!(
    map_dropped_midway_cancels_unstarted_items,
    1,
    map_drop_midway
);

/// After shutdown a Map yields the values in flight, then one
/// `Err(Shutdown)`, and ends, without draining its input (SEMANTICS 13).
fn map_after_shutdown<P: Executor>(pool: &P, ordered: bool) {
    let pulled = Arc::new(AtomicU64::new(0));
    let p = pulled.clone();
    let inputs = (0..10_000_000u64).map(move |i| {
        p.fetch_add(1, Ordering::SeqCst);
        Square(i)
    });
    let mut m = if ordered {
        pool.map(inputs)
    } else {
        pool.map_unordered(inputs)
    }
    .chunksize(3);
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(m.next().unwrap().unwrap());
    }
    pool.shutdown(Shutdown::Wait);
    let rest: Vec<_> = m.by_ref().take(100_000).collect();
    assert_eq!(m.next(), None, "the map ended");
    assert!(
        pulled.load(Ordering::SeqCst) < 10_000,
        "pulled {} inputs after shutdown",
        pulled.load(Ordering::SeqCst)
    );
    let (last, in_flight) = rest.split_last().expect("at least the Shutdown error");
    assert_eq!(
        last,
        &Err(TaskError::Shutdown),
        "ordered={ordered}: the last item is the one Err(Shutdown); got {rest:?}"
    );
    assert!(
        !in_flight.is_empty(),
        "ordered={ordered}: the values in flight were lost"
    );
    for r in in_flight {
        seen.push(r.clone().unwrap_or_else(|e| {
            panic!("ordered={ordered}: in-flight item failed with {e:?} before the Shutdown error; got {rest:?}")
        }));
    }
    let n = seen.len() as u64;
    if !ordered {
        seen.sort_unstable();
    }
    assert_eq!(
        seen,
        (0..n).map(|i| i * i).collect::<Vec<_>>(),
        "ordered={ordered}: the values in flight, each once"
    );
}

fn map_after_shutdown_ordered<P: Executor>(pool: &P) {
    map_after_shutdown(pool, true)
}

fn map_after_shutdown_unordered<P: Executor>(pool: &P) {
    map_after_shutdown(pool, false)
}

macro_rules! after_shutdown {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;

            #[test]
            fn process() {
                watchdog(LIMIT, || $body(&process_pool(2)));
            }

            #[test]
            fn thread() {
                watchdog(LIMIT, || $body(&thread_pool(2)));
            }
        }
    };
}
after_shutdown!(
    map_after_shutdown_yields_in_flight_then_one_shutdown_error,
    map_after_shutdown_ordered
);
after_shutdown!(
    map_unordered_after_shutdown_yields_in_flight_then_one_shutdown_error,
    map_after_shutdown_unordered
);

/// An empty input yields nothing, on a live pool and after shutdown.
fn map_empty<P: Executor>(pool: &P) {
    assert!(pool.map(Vec::<Square>::new()).next().is_none());
    assert!(pool.map_unordered(Vec::<Square>::new()).next().is_none());
    pool.shutdown(Shutdown::Wait);
    assert!(pool.map(Vec::<Square>::new()).next().is_none());
    assert!(pool.map_unordered(Vec::<Square>::new()).next().is_none());
}
after_shutdown!(map_of_empty_input_yields_nothing, map_empty);

/// Big chunks are one frame each; any chunk size works (a chunk of 500
/// tasks' headers is ~11.5 KB of frame).
#[test]
fn map_with_big_chunks_process() {
    watchdog(LIMIT, || {
        let pool = process_pool(2);
        let pids = pool.worker_pids();
        let mut failures = Vec::new();
        for chunksize in [100, 300, 500, 700, 1000, 2000, 5000] {
            let n = 2 * chunksize as u64;
            let mut bad = Vec::new();
            let mut sum = 0u64;
            for (i, r) in pool
                .map((0..n).map(Square))
                .chunksize(chunksize)
                .enumerate()
            {
                match r {
                    Ok(v) => sum += v,
                    Err(e) => bad.push((i, e)),
                }
            }
            if !bad.is_empty() {
                failures.push(format!(
                    "chunksize {chunksize}: {} of {n} items failed, first: {:?}",
                    bad.len(),
                    bad[0]
                ));
            } else {
                assert_eq!(
                    sum,
                    (0..n).map(|i| i * i).sum::<u64>(),
                    "chunksize {chunksize}"
                );
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(
            (pool.worker_pids(), pool.stats().respawns),
            (pids, 0),
            "a valid chunk frame killed a worker (see its stderr)"
        );
        still_works(&pool);
    });
}
