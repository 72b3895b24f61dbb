//! `ThreadPool` end to end: its defaults, thread names, per-thread
//! initializers, shutdown modes and Drop, panics, closures, and that it runs
//! the same `Task` values as the process pool, in-process and without
//! serialization.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use procpool::{
    BuildError, Executor, Shutdown, State, SubmitError, Task, TaskError, TaskFuture, ThreadPool,
    WorkerContext,
};
use procpool_e2e::watchdog;
use procpool_tasks::{CountCalls, Greet, SetGreeting, Sleep, Square, WhoAmI, drill};
use serde::{Deserialize, Serialize};

const LIMIT: Duration = Duration::from_secs(60);

fn pool(n: usize) -> ThreadPool {
    ThreadPool::builder()
        .workers(n)
        .build()
        .expect("pool starts")
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

/// Names of the pool threads, seen by closures that wait at a barrier
/// until `n` of them run at once (so `n` distinct threads answer).
fn names_of_n_concurrent_threads(pool: &ThreadPool, n: usize) -> Vec<String> {
    let barrier = Arc::new(Barrier::new(n));
    let futs: Vec<_> = (0..n)
        .map(|_| {
            let b = barrier.clone();
            pool.spawn(move || {
                b.wait();
                thread::current().name().map(str::to_owned)
            })
            .unwrap()
        })
        .collect();
    futs.into_iter()
        .map(|f| f.result().unwrap().expect("pool threads are named"))
        .collect()
}

/// The thread a Task ran on, with what the initializer left there.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
struct WhereAmI;

/// What the test initializer stores in each thread's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(usize);

impl Task for WhereAmI {
    const NAME: &'static str = "e2e_where_am_i";
    type Output = (Option<String>, Option<usize>, usize);
    fn run(self, ctx: &mut WorkerContext) -> Self::Output {
        (
            thread::current().name().map(str::to_owned),
            ctx.get::<Stamp>().map(|s| s.0),
            ctx.worker_id(),
        )
    }
}

#[test]
fn default_workers_is_min_32_cpus_plus_4_and_they_all_run() {
    watchdog(LIMIT, || {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let want = (cpus + 4).min(32);
        let pool = ThreadPool::builder().build().unwrap();
        assert_eq!(pool.workers(), want);
        // All of them really exist: `want` closures meet at a barrier.
        let names = names_of_n_concurrent_threads(&pool, want);
        let distinct: HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), want, "{names:?}");
        assert!(
            names.iter().all(|n| n.starts_with("procpool-thread-")),
            "default prefix: {names:?}"
        );

        let pool = self::pool(3);
        assert_eq!(pool.workers(), 3);
    });
}

#[test]
fn workers_zero_is_a_config_error() {
    let err = ThreadPool::builder().workers(0).build().unwrap_err();
    assert!(matches!(err, BuildError::Config(_)), "{err:?}");
    assert!(err.to_string().contains('0'), "{err}");
}

#[test]
fn thread_name_prefix_is_visible_inside_spawn_and_tasks() {
    watchdog(LIMIT, || {
        let pool = ThreadPool::builder()
            .workers(2)
            .thread_name_prefix("crunch")
            .build()
            .unwrap();
        let mut names = names_of_n_concurrent_threads(&pool, 2);
        names.sort();
        assert_eq!(names, vec!["crunch-0", "crunch-1"]);
        for _ in 0..10 {
            let (name, _, _) = pool.submit(WhereAmI).unwrap().result().unwrap();
            let name = name.unwrap();
            assert!(name == "crunch-0" || name == "crunch-1", "{name}");
        }
    });
}

#[test]
fn initializer_runs_once_per_thread_and_tasks_see_its_state() {
    watchdog(LIMIT, || {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let pool = ThreadPool::builder()
            .workers(3)
            .init_fn(move |ctx| {
                let n = r.fetch_add(1, Ordering::SeqCst);
                ctx.insert(Stamp(n));
                Ok(())
            })
            .build()
            .unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "build() returns once every thread ran its initializer"
        );
        // Make all three threads take work at once, then many more tasks.
        let barrier = Arc::new(Barrier::new(3));
        let meet: Vec<_> = (0..3)
            .map(|_| {
                let b = barrier.clone();
                pool.spawn(move || {
                    b.wait();
                })
                .unwrap()
            })
            .collect();
        for f in meet {
            f.result().unwrap();
        }
        let futs: Vec<_> = (0..90).map(|_| pool.submit(WhereAmI).unwrap()).collect();
        let mut stamp_of: HashMap<String, usize> = HashMap::new();
        for f in futs {
            let (name, stamp, _) = f.result().unwrap();
            let stamp = stamp.expect("every task sees the initializer's state");
            assert!(stamp < 3);
            let prev = stamp_of.insert(name.clone().unwrap(), stamp);
            assert!(
                prev.is_none() || prev == Some(stamp),
                "thread {name:?} saw two stamps: the initializer ran twice there"
            );
        }
        let stamps: HashSet<_> = stamp_of.values().collect();
        assert_eq!(stamps.len(), stamp_of.len(), "one stamp per thread");
        assert_eq!(runs.load(Ordering::SeqCst), 3, "once per thread, no more");

        // A serializable Initializer works the same way on threads.
        let pool = ThreadPool::builder()
            .workers(2)
            .initializer(SetGreeting("hi from each thread".into()))
            .build()
            .unwrap();
        for _ in 0..10 {
            assert_eq!(
                pool.submit(Greet).unwrap().result().unwrap().as_deref(),
                Some("hi from each thread")
            );
        }
    });
}

#[test]
fn failing_or_panicking_initializer_fails_build() {
    watchdog(LIMIT, || {
        let err = ThreadPool::builder()
            .workers(3)
            .init_fn(|_| Err("no GPU on this thread".into()))
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, BuildError::Initializer { message, .. } if message.contains("no GPU on this thread")),
            "{err:?}"
        );
        let err = ThreadPool::builder()
            .workers(2)
            .init_fn(|_| panic!("init blew up"))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("init blew up"), "{err}");
        let err = ThreadPool::builder()
            .workers(2)
            .initializer(drill::FailingInit("failing drill".into()))
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, BuildError::Initializer { name, message, .. }
                if name == "drill_failing_init" && message.contains("failing drill")),
            "{err:?}"
        );
    });
}

#[test]
fn shutdown_wait_runs_the_queue_and_is_idempotent() {
    watchdog(LIMIT, || {
        let pool = pool(1);
        let futs: Vec<_> = (0..10)
            .map(|_| pool.submit(Sleep { millis: 20 }).unwrap())
            .collect();
        pool.shutdown(Shutdown::Wait);
        assert!(
            futs.iter().all(|f| f.done()),
            "shutdown(Wait) returned before the queue ran"
        );
        for f in futs {
            assert_eq!(f.result().unwrap(), 20);
        }
        let t = Instant::now();
        pool.shutdown(Shutdown::Wait);
        pool.shutdown(Shutdown::CancelPending);
        pool.shutdown(Shutdown::Kill);
        assert!(t.elapsed() < Duration::from_millis(500));

        // After shutdown: SubmitError::Shutdown hands the task back.
        match pool.submit(Square(11)) {
            Err(SubmitError::Shutdown { task }) => assert_eq!(task, Square(11)),
            other => panic!("expected SubmitError::Shutdown, got {other:?}"),
        }
        let err = pool.spawn(|| 5u32).unwrap_err();
        assert!(err.to_string().contains("shut down"), "{err}");
        let f = err.into_task();
        assert_eq!(f(), 5, "the closure is handed back intact");
        let mut m = pool.map((0..3u64).map(Square));
        assert_eq!(m.next(), Some(Err(TaskError::Shutdown)));
        assert_eq!(m.next(), None);
    });
}

/// CancelPending (and Kill, which on threads is the same): the running task
/// finishes with its value, the queued ones end cancelled, and shutdown
/// returns once the thread is done — without running the queue.
#[test]
fn shutdown_cancel_pending_and_kill() {
    watchdog(LIMIT, || {
        for how in [Shutdown::CancelPending, Shutdown::Kill] {
            let pool = pool(1);
            let running = pool.submit(Sleep { millis: 250 }).unwrap();
            wait_for_state(&running, State::Running);
            let queued: Vec<_> = (0..10)
                .map(|_| pool.submit(Sleep { millis: 100 }).unwrap())
                .collect();
            let t = Instant::now();
            pool.shutdown(how);
            let took = t.elapsed();
            assert!(
                running.done(),
                "{how:?}: shutdown returned while a task still ran"
            );
            assert!(
                took < Duration::from_millis(800),
                "{how:?}: shutdown ran the queue ({took:?})"
            );
            assert_eq!(
                running.result().unwrap(),
                250,
                "{how:?}: a running thread cannot be killed; its value arrives"
            );
            for f in queued {
                assert!(f.is_cancelled(), "{how:?}: {f:?}");
                assert_eq!(f.result().unwrap_err(), TaskError::Cancelled);
            }
            pool.shutdown(how);
            pool.shutdown(Shutdown::Wait);
        }
    });
}

/// Concurrent shutdowns all block until every thread is gone (SEMANTICS
/// 17), not just the first caller.
#[test]
fn concurrent_shutdowns_all_wait_for_the_threads() {
    watchdog(LIMIT, || {
        let pool = Arc::new(pool(1));
        let running = pool.submit(Sleep { millis: 400 }).unwrap();
        wait_for_state(&running, State::Running);
        let first = {
            let p = pool.clone();
            thread::spawn(move || p.shutdown(Shutdown::Wait))
        };
        thread::sleep(Duration::from_millis(50));
        pool.shutdown(Shutdown::Wait);
        assert!(
            running.done(),
            "a second, concurrent shutdown(Wait) returned while a task still ran"
        );
        first.join().unwrap();
        assert_eq!(running.result().unwrap(), 400);
    });
}

#[test]
fn drop_runs_shutdown_wait_and_every_future_gets_its_value() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        let sleeps: Vec<_> = (0..10)
            .map(|_| pool.submit(Sleep { millis: 10 }).unwrap())
            .collect();
        let closures: Vec<_> = (0..10u64)
            .map(|i| pool.spawn(move || i * 3).unwrap())
            .collect();
        drop(pool);
        assert!(
            sleeps
                .iter()
                .chain(closures.iter())
                .all(|f| !f.is_cancelled())
        );
        for f in sleeps {
            assert_eq!(f.result().unwrap(), 10);
        }
        for (i, f) in closures.into_iter().enumerate() {
            assert_eq!(f.result().unwrap(), i as u64 * 3);
        }
    });
}

#[test]
fn shutdown_from_inside_a_task_does_not_deadlock() {
    watchdog(LIMIT, || {
        let pool = Arc::new(pool(2));
        let p = pool.clone();
        let f = pool
            .spawn(move || {
                p.shutdown(Shutdown::Wait);
                7
            })
            .unwrap();
        assert_eq!(f.result().unwrap(), 7);
        assert!(matches!(
            pool.submit(Square(2)),
            Err(SubmitError::Shutdown { .. })
        ));
    });
}

#[test]
fn panics_become_panicked_and_the_thread_lives_on() {
    watchdog(LIMIT, || {
        let pool = pool(1);
        let (before, _, _) = pool.submit(WhereAmI).unwrap().result().unwrap();

        let err = pool
            .spawn(|| -> u32 { panic!("boom {}", 7) })
            .unwrap()
            .result()
            .unwrap_err();
        assert_eq!(
            err,
            TaskError::Panicked {
                message: "boom 7".into(),
                location: None
            },
            "{err:?}"
        );
        assert!(err.to_string().contains("boom 7"), "{err}");

        let err = pool
            .submit(drill::Panic("drill panic on a thread".into()))
            .unwrap()
            .result()
            .unwrap_err();
        assert!(
            matches!(&err, TaskError::Panicked { message, .. } if message == "drill panic on a thread"),
            "{err:?}"
        );

        // Non-string payloads and empty messages are still Panicked.
        let err = pool
            .spawn(|| std::panic::panic_any(42u8))
            .unwrap()
            .result()
            .unwrap_err();
        assert!(err.is_panic(), "{err:?}");
        let err = pool
            .spawn(|| panic!("{}", ""))
            .unwrap()
            .result()
            .unwrap_err();
        assert!(err.is_panic(), "{err:?}");

        // Same single thread, still serving.
        let (after, _, _) = pool.submit(WhereAmI).unwrap().result().unwrap();
        assert_eq!(before, after, "the panicking tasks did not kill the thread");
        assert_eq!(pool.spawn(|| 6 * 7).unwrap().result().unwrap(), 42);
        let stats = pool.stats();
        assert_eq!(stats.failed, 4, "{stats:?}");
        assert_eq!(stats.completed, 3, "{stats:?}");
    });
}

#[test]
fn spawn_runs_closures_with_any_send_output() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        // Captured state, shared state, and outputs that could never be
        // serialized: a closure and a mutex.
        let shared = Arc::new(Mutex::new(Vec::new()));
        let futs: Vec<_> = (0..100u64)
            .map(|i| {
                let s = shared.clone();
                pool.spawn(move || {
                    s.lock().unwrap().push(i);
                    i * i
                })
                .unwrap()
            })
            .collect();
        assert_eq!(futs[0].task_name(), "closure");
        let sum: u64 = futs.into_iter().map(|f| f.result().unwrap()).sum();
        assert_eq!(sum, (0..100u64).map(|i| i * i).sum());
        let mut seen = shared.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());

        let adder = pool
            .spawn(|| Box::new(|x: u32| x + 1) as Box<dyn Fn(u32) -> u32 + Send>)
            .unwrap()
            .result()
            .unwrap();
        assert_eq!(adder(41), 42);
        let m = pool.spawn(|| Mutex::new(3)).unwrap().result().unwrap();
        assert_eq!(*m.lock().unwrap(), 3);
    });
}

#[test]
fn tasks_run_in_process_without_serialization() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        let (slot, pid) = pool.submit(WhoAmI).unwrap().result().unwrap();
        assert_eq!(
            pid,
            std::process::id(),
            "a thread pool task runs in this process"
        );
        assert!(slot < 2);
        let f = pool.submit(Square(9)).unwrap();
        assert_eq!(f.task_name(), "square");
        f.wait();
        let cost = f.cost().expect("a finished task has a cost");
        assert_eq!(cost.serialization(), Duration::ZERO, "{cost:?}");
        assert_eq!((cost.bytes_out, cost.bytes_back), (0, 0));
        assert!(cost.total >= cost.run);
        assert_eq!(f.result().unwrap(), 81);
        // Per-thread context, as in a worker process.
        let one = pool1_counts();
        assert_eq!(one, vec![1, 2, 3]);
        // Generic code over Executor runs here too.
        let sum: u64 = Executor::map(&pool, (0..50u64).map(Square))
            .chunksize(7)
            .map(|r| r.unwrap())
            .sum();
        assert_eq!(sum, (0..50u64).map(|i| i * i).sum());
        assert!(pool.stats().completed >= 52);
    });
}

fn pool1_counts() -> Vec<u64> {
    let pool = pool(1);
    (0..3)
        .map(|_| pool.submit(CountCalls).unwrap().result().unwrap().1)
        .collect()
}
