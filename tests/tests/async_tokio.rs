//! `TaskFuture` as a `std::future::Future`: awaited in a tokio
//! current-thread runtime without blocking it, in `futures-executor`, across
//! tasks (the waker moves), under a tokio timeout; and `as_completed` as a
//! `Stream`.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use procpool::{Executor, ProcessPool, State, TaskError, TaskFuture, as_completed};
use procpool_e2e::{thread_pool, watchdog};
use procpool_tasks::{Sleep, Square, drill};

fn process_pool(n: usize) -> ProcessPool {
    procpool_e2e::process_pool_of(procpool_e2e::test_worker!(), n)
}

const LIMIT: Duration = Duration::from_secs(60);

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// Task `i` of the 200: a short sleep or a square, with its expected value.
fn task(i: u64) -> (Result<Sleep, Square>, u64) {
    if i.is_multiple_of(2) {
        let millis = 4 + i % 5;
        (Ok(Sleep { millis }), millis)
    } else {
        (Err(Square(i)), i * i)
    }
}

fn submit(pool: &impl Executor, t: Result<Sleep, Square>) -> TaskFuture<u64> {
    match t {
        Ok(s) => pool.submit(s).unwrap(),
        Err(q) => pool.submit(q).unwrap(),
    }
}

/// 200 process-pool futures awaited concurrently on one thread while a
/// timer ticks on the same thread: the ticks prove that awaiting never
/// blocks the runtime, and every result is right.
#[test]
fn current_thread_runtime_awaits_200_process_futures_while_a_timer_ticks() {
    watchdog(LIMIT, || {
        let pool = process_pool(2);
        let rt = current_thread_runtime();
        let local = tokio::task::LocalSet::new();
        let (ticks_while_waiting, waited, results) = local.block_on(&rt, async {
            // Rc: everything below runs on this one thread.
            let ticks = Rc::new(Cell::new(0u64));
            let stop = Rc::new(Cell::new(false));
            let ticker = {
                let (ticks, stop) = (ticks.clone(), stop.clone());
                tokio::task::spawn_local(async move {
                    while !stop.get() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        ticks.set(ticks.get() + 1);
                    }
                })
            };
            let handles: Vec<_> = (0..200u64)
                .map(|i| {
                    let (t, want) = task(i);
                    let fut = submit(&pool, t);
                    tokio::task::spawn_local(async move { (fut.await, want) })
                })
                .collect();
            let t = Instant::now();
            let ticks_before = ticks.get();
            let mut results = Vec::with_capacity(handles.len());
            for h in handles {
                results.push(h.await.expect("the awaiting task did not panic"));
            }
            let ticked = ticks.get() - ticks_before;
            let waited = t.elapsed();
            stop.set(true);
            ticker.await.unwrap();
            (ticked, waited, results)
        });
        assert_eq!(results.len(), 200);
        for (i, (got, want)) in results.into_iter().enumerate() {
            assert_eq!(got, Ok(want), "future {i}");
        }
        eprintln!("ticked {ticks_while_waiting} times in {waited:?} of waiting");
        // ~100 sleeps of 4–8 ms on 2 workers: about 300 ms of waiting, so a
        // 2 ms ticker ticks well over 30 times unless awaiting blocks.
        assert!(
            ticks_while_waiting >= 30,
            "the ticker ticked only {ticks_while_waiting} times in {waited:?}: awaiting blocked the runtime"
        );
    });
}

/// `.await` in a different executor, on both pools, for values, failures
/// and cancelled futures.
#[test]
fn await_in_futures_executor_on_both_pools() {
    watchdog(LIMIT, || {
        let pp = process_pool(1);
        let tp = thread_pool(1);
        futures_executor::block_on(async {
            assert_eq!(pp.submit(Square(7)).unwrap().await, Ok(49));
            assert_eq!(tp.submit(Square(8)).unwrap().await, Ok(64));
            assert_eq!(tp.spawn(|| "closure").unwrap().await, Ok("closure"));
            let err = pp
                .submit(drill::Panic("awaited panic".into()))
                .unwrap()
                .await
                .unwrap_err();
            assert!(err.is_panic(), "{err:?}");
            let err = tp
                .submit(drill::Panic("awaited panic".into()))
                .unwrap()
                .await
                .unwrap_err();
            assert!(err.is_panic(), "{err:?}");
            // A cancelled future resolves at once with Cancelled.
            for pool in [&pp as &dyn SubmitSleep, &tp] {
                let busy = pool.sleep(200);
                while busy.state() != State::Running {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let queued = pool.sleep(1);
                assert!(queued.cancel());
                assert_eq!(queued.await, Err(TaskError::Cancelled));
                assert_eq!(busy.await, Ok(200));
            }
        });
    });
}

/// Object-safe shim so one loop can use both pools.
trait SubmitSleep {
    fn sleep(&self, millis: u64) -> TaskFuture<u64>;
}

impl<P: Executor> SubmitSleep for P {
    fn sleep(&self, millis: u64) -> TaskFuture<u64> {
        self.submit(Sleep { millis }).unwrap()
    }
}

/// A future polled in one task and then awaited in another wakes the
/// second task (the stored waker is replaced, not kept).
#[test]
fn waker_follows_the_future_between_tasks() {
    watchdog(LIMIT, || {
        let pool = process_pool(1);
        let rt = current_thread_runtime();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let mut fut = pool.submit(Sleep { millis: 150 }).unwrap();
            // Poll once from this task: Pending, with this task's waker.
            let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut fut).poll(cx))).await;
            assert!(first.is_pending());
            // Then hand it to another task and await it there.
            let h = tokio::task::spawn_local(fut);
            assert_eq!(h.await.unwrap(), Ok(150));
        });
    });
}

/// A tokio timeout around an awaited future ends without blocking; the
/// dropped future detaches, and the pool goes on.
#[test]
fn tokio_timeout_around_a_task_future() {
    watchdog(LIMIT, || {
        let pool = process_pool(1);
        let rt = current_thread_runtime();
        rt.block_on(async {
            let t = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_millis(50),
                pool.submit(Sleep { millis: 400 }).unwrap(),
            )
            .await;
            assert!(r.is_err(), "a 400 ms task finished within 50 ms: {r:?}");
            assert!(
                t.elapsed() < Duration::from_millis(300),
                "{:?}",
                t.elapsed()
            );
            let r = tokio::time::timeout(Duration::from_secs(10), pool.submit(Square(5)).unwrap())
                .await;
            assert_eq!(r.unwrap(), Ok(25));
        });
    });
}

/// `as_completed` as a `Stream`: every future, in completion order, futures
/// of both pools mixed; an empty one ends at once.
#[test]
fn as_completed_stream_yields_every_future_in_completion_order() {
    watchdog(LIMIT, || {
        let pp = process_pool(3);
        let tp = thread_pool(2);
        let futs: Vec<TaskFuture<u64>> = vec![
            pp.submit(Sleep { millis: 450 }).unwrap(),
            tp.submit(Sleep { millis: 300 }).unwrap(),
            pp.submit(Sleep { millis: 150 }).unwrap(),
            tp.submit(Sleep { millis: 10 }).unwrap(),
        ];
        // No Stream trait in this crate's dependencies: drive the Stream
        // impl through futures-executor's adapter (which polls it with a
        // real waker and parks until woken).
        let got: Vec<u64> = futures_executor::block_on_stream(as_completed(futs))
            .map(|f| {
                assert!(f.done());
                f.result().unwrap()
            })
            .collect();
        assert_eq!(got, vec![10, 150, 300, 450]);

        let many: Vec<_> = (0..100u64).map(|i| pp.submit(Square(i)).unwrap()).collect();
        let mut got: Vec<u64> = futures_executor::block_on_stream(as_completed(many))
            .map(|f| f.result().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..100u64).map(|i| i * i).collect::<Vec<_>>());

        let none: Vec<TaskFuture<u64>> = Vec::new();
        assert_eq!(
            futures_executor::block_on_stream(as_completed(none)).count(),
            0
        );
    });
}
