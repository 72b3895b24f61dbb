//! Hardening (issue #13): what a hostile or careless user does to a pool —
//! shutdown racing a respawn or another shutdown, shutdown and cancel
//! inside done callbacks, many threads cancelling one future, a cancel in
//! a 50,000-task queue, chunks over the frame cap, `Duration::MAX` as "no
//! limit" — each against real worker processes.
//!
//! Every test runs in a child process of its own
//! ([`procpool_e2e::in_own_process`]) under a watchdog: a hang (a deadlock
//! in `shutdown` or `Drop`) cannot take this whole binary down, and the
//! children it counts are its own. The tests take one lock, so they run
//! one at a time (they count processes and time things). Figures for the README are printed as
//! `FIGURE <test>: ...` lines (run with `--nocapture`).

use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use procpool::{
    Executor, ProcessPool, ProcessPoolBuilder, ReturnWhen, Shutdown, State, TaskError, TaskFuture,
    ThreadPool, WaitError, as_completed, wait,
};
use procpool_e2e::no_children_left;
use procpool_tasks::{Echo, Sleep, Square, drill};

const LIMIT: Duration = Duration::from_secs(60);

/// One test at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs a test body alone in its own process, under a watchdog, and
/// prints its wall time.
fn run(name: &str, limit: Duration, f: impl FnOnce() + Send + 'static) {
    procpool_e2e::run_alone(&SERIAL, name, limit, f)
}

fn builder(n: usize) -> ProcessPoolBuilder {
    procpool_e2e::builder()
        .worker(procpool_e2e::test_worker!())
        .workers(n)
}

fn pool(n: usize) -> ProcessPool {
    builder(n).build().expect("pool starts")
}

fn still_works(pool: &impl Executor) {
    assert_eq!(pool.submit(Square(12)).unwrap().result().unwrap(), 144);
}

fn sleep(millis: u64) -> Sleep {
    Sleep { millis }
}

/// `f` on a thread; its value, or a failure naming `what` if it takes
/// longer than `limit` (the thread is left behind: call this only in a
/// child process, or where the hang cannot outlive the test).
fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => panic!("{what} did not return within {limit:?}"),
    }
}

// ------------------------------------------- row 1: shutdown vs. a respawn

/// A worker dies; a few ms later, while its replacement is being spawned,
/// `shutdown(Kill)`. It must return promptly and leave no process: a spawn
/// in flight is part of the pool. The delay sweeps across the respawn
/// back-off (10 ms ± 25 %) so that some shutdowns land during the fork.
#[test]
fn shutdown_kill_while_a_replacement_is_being_spawned_returns_and_leaves_nothing() {
    run(
        "shutdown_kill_while_a_replacement_is_being_spawned_returns_and_leaves_nothing",
        Duration::from_secs(120),
        || {
            let mut slowest = Duration::ZERO;
            for step in 0..48u32 {
                let pool = Arc::new(pool(1));
                let died = pool.submit(drill::Exit(3)).unwrap().result();
                assert!(
                    matches!(died, Err(TaskError::WorkerDied { .. })),
                    "{died:?}"
                );
                std::thread::sleep(Duration::from_micros(5_000 + 250 * u64::from(step)));
                let t = Instant::now();
                let p = pool.clone();
                within(
                    &format!("shutdown(Kill) at step {step}"),
                    Duration::from_secs(10),
                    move || p.shutdown(Shutdown::Kill),
                );
                slowest = slowest.max(t.elapsed());
                assert!(no_children_left(), "a worker was left at step {step}");
            }
            println!(
                "FIGURE shutdown_kill_during_respawn: slowest shutdown {slowest:.2?} over 48 runs"
            );
            assert!(
                slowest < Duration::from_secs(5),
                "slowest shutdown {slowest:?}"
            );
        },
    );
}

// ------------------------------------ row 2: build failing part-way (fds)

/// `build()` of 30 workers under descriptor limits that make it fail
/// part-way: always a clean `Err` within the build's limits, nothing left
/// running.
#[test]
fn build_running_out_of_descriptors_part_way_is_a_clean_err() {
    run(
        "build_running_out_of_descriptors_part_way_is_a_clean_err",
        Duration::from_secs(240),
        || {
            use nix::sys::resource::{Resource, getrlimit, setrlimit};
            let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
            let mut failed = 0;
            let mut slowest = Duration::ZERO;
            for limit in (40..=260u64).step_by(10) {
                // Threads and a few descriptors this test itself needs
                // come first.
                let b = builder(30).handshake_timeout(Duration::from_secs(5));
                setrlimit(Resource::RLIMIT_NOFILE, limit, hard).unwrap();
                let t = Instant::now();
                let built = within(
                    &format!("build() under RLIMIT_NOFILE {limit}"),
                    Duration::from_secs(30),
                    move || b.build(),
                );
                let took = t.elapsed();
                setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
                match built {
                    Err(e) => {
                        failed += 1;
                        slowest = slowest.max(took);
                        assert!(!e.to_string().is_empty());
                    }
                    Ok(pool) => pool.shutdown(Shutdown::Kill),
                }
                assert!(
                    no_children_left(),
                    "a worker was left (RLIMIT_NOFILE {limit})"
                );
            }
            println!(
                "FIGURE build_out_of_fds: {failed} of 23 builds failed cleanly, slowest failure {slowest:.2?}"
            );
            assert!(
                failed > 0,
                "no limit made the build fail: the test proves nothing"
            );
            assert!(
                slowest < Duration::from_secs(12),
                "a failing build took {slowest:?}"
            );
        },
    );
}

// ------------------------------------- row 3: Kill during a Wait shutdown

/// One thread is inside `shutdown(Wait)` with 14 queued tasks; another
/// calls `shutdown(Kill)`: the stronger mode takes over at once.
#[test]
fn shutdown_kill_takes_over_a_shutdown_wait_in_progress() {
    run("kill_over_wait", LIMIT, || {
        let pool = Arc::new(pool(1));
        let futs: Vec<_> = (0..15).map(|_| pool.submit(sleep(500)).unwrap()).collect();
        while futs[0].state() != State::Running {
            std::thread::sleep(Duration::from_millis(5));
        }
        let p = pool.clone();
        let waiting = std::thread::spawn(move || {
            let t = Instant::now();
            p.shutdown(Shutdown::Wait);
            t.elapsed()
        });
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        pool.shutdown(Shutdown::Kill);
        let kill = t.elapsed();
        let wait = waiting.join().unwrap();
        println!(
            "FIGURE kill_over_wait: Kill returned in {kill:.2?}; the Wait caller in {wait:.2?}"
        );
        assert!(
            kill < Duration::from_secs(2),
            "Kill waited for the Wait: {kill:?}"
        );
        assert!(
            wait < Duration::from_secs(3),
            "the Wait caller returned after {wait:?}"
        );
        for f in futs {
            let r = f.result_timeout(Duration::from_secs(5));
            assert!(
                matches!(r, Err(WaitError::Failed(TaskError::Cancelled))),
                "{r:?}"
            );
        }
        assert!(no_children_left());
    });
}

// ------------------------------------------ row 4: shutdown in a callback

/// `pool.shutdown(how)` inside a done callback returns, and every future
/// resolves, in every mode.
#[test]
fn shutdown_inside_a_done_callback_returns_and_every_future_resolves() {
    run(
        "shutdown_inside_a_done_callback_returns_and_every_future_resolves",
        Duration::from_secs(90),
        || {
            for how in [Shutdown::Wait, Shutdown::CancelPending, Shutdown::Kill] {
                let pool = Arc::new(pool(2));
                let futs: Vec<_> = (0..8).map(|_| pool.submit(sleep(30)).unwrap()).collect();
                let (tx, rx) = mpsc::channel();
                let p = pool.clone();
                let t = Instant::now();
                futs[0].add_done_callback(move |f| {
                    p.shutdown(how);
                    let _ = tx.send(f.done());
                });
                let got = rx.recv_timeout(Duration::from_secs(20));
                println!(
                    "FIGURE shutdown_in_callback {how:?}: returned after {:.2?}",
                    t.elapsed()
                );
                assert_eq!(
                    got,
                    Ok(true),
                    "shutdown({how:?}) inside a callback did not return"
                );
                for (i, f) in futs.into_iter().enumerate() {
                    assert!(
                        f.wait_timeout(Duration::from_secs(20)),
                        "{how:?}: future {i} still pending"
                    );
                    match f.result() {
                        Ok(30) | Err(TaskError::Cancelled) => {}
                        other => panic!("{how:?}: future {i}: {other:?}"),
                    }
                }
                assert!(pool.submit(Square(2)).is_err(), "the pool is shut down");
                drop(pool);
                assert!(no_children_left());
            }
        },
    );
}

/// Dropping the last `Arc<ProcessPool>` inside a done callback (which runs
/// `shutdown(Wait)`) returns; every future resolves with its value.
#[test]
fn dropping_the_last_pool_handle_inside_a_done_callback_returns() {
    run(
        "dropping_the_last_pool_handle_inside_a_done_callback_returns",
        Duration::from_secs(60),
        || {
            let pool = Arc::new(pool(2));
            let futs: Vec<_> = (0..8).map(|i| pool.submit(Square(i)).unwrap()).collect();
            let first = pool.submit(sleep(50)).unwrap();
            let (tx, rx) = mpsc::channel();
            let p = Mutex::new(Some(pool));
            first.add_done_callback(move |_| {
                drop(p.lock().unwrap().take());
                let _ = tx.send(());
            });
            // (`pool` moved into the callback: its drop there is the last.)
            assert!(
                rx.recv_timeout(Duration::from_secs(20)).is_ok(),
                "the drop inside the callback did not return"
            );
            for (i, f) in futs.into_iter().enumerate() {
                assert_eq!(
                    f.result_timeout(Duration::from_secs(20)).ok(),
                    Some((i * i) as u64)
                );
            }
            assert_eq!(first.result_timeout(Duration::from_secs(5)).ok(), Some(50));
            assert!(no_children_left());
        },
    );
}

// -------------------------------------------- row 5: cancel in a callback

/// Inside a done callback, `cancel()` of a task a worker has prefetched
/// but not begun is `true`, and the task never runs.
#[test]
fn cancel_of_a_prefetched_task_inside_a_done_callback_is_true() {
    run("cancel_in_callback", LIMIT, || {
        let pool = builder(1).prefetch(4).build().unwrap();
        let a = pool.submit(sleep(300)).unwrap();
        let b = pool.submit(sleep(300)).unwrap();
        let c = Arc::new(pool.submit(Square(5)).unwrap());
        let (tx, rx) = mpsc::channel();
        let c2 = c.clone();
        a.add_done_callback(move |_| {
            let t = Instant::now();
            let got = c2.cancel();
            let _ = tx.send((got, t.elapsed()));
        });
        let (cancelled, took) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        println!("FIGURE cancel_in_callback: cancel() returned {cancelled} in {took:.2?}");
        assert!(
            cancelled,
            "cancel of a not-started task inside a callback was false"
        );
        assert_eq!(c.error(), Some(TaskError::Cancelled));
        assert_eq!(a.result().unwrap(), 300);
        assert_eq!(b.result().unwrap(), 300);
        still_works(&pool);
    });
}

// ------------------------------------------- row 6: concurrent cancels

fn four_cancels(f: TaskFuture<u64>) -> Vec<bool> {
    let f = Arc::new(f);
    let gate = Arc::new(Barrier::new(4));
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (f, gate) = (f.clone(), gate.clone());
            std::thread::spawn(move || {
                gate.wait();
                f.cancel()
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Four threads cancel one not-started future at once (prefetched by a
/// worker, or still in the parent's queue): every one gets `true`.
#[test]
fn four_threads_cancelling_one_not_started_future_all_get_true() {
    run("four_cancels", LIMIT, || {
        let pool = builder(1).prefetch(2).build().unwrap();
        // The running task lasts long enough that, even on a busy machine,
        // the cancels are answered before the worker could begin the next.
        for round in 0..8 {
            let running = pool.submit(sleep(500)).unwrap();
            let prefetched = pool.submit(Square(3)).unwrap();
            let queued = pool.submit(Square(4)).unwrap();
            while running.state() != State::Running {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(
                four_cancels(prefetched),
                vec![true; 4],
                "prefetched, round {round}"
            );
            assert_eq!(four_cancels(queued), vec![true; 4], "queued, round {round}");
            assert_eq!(running.result().unwrap(), 500);
        }
        let threads = ThreadPool::builder().workers(1).build().unwrap();
        for round in 0..8 {
            let running = threads
                .spawn(|| std::thread::sleep(Duration::from_millis(300)))
                .unwrap();
            let queued = threads.submit(Square(4)).unwrap();
            assert_eq!(
                four_cancels(queued),
                vec![true; 4],
                "thread pool, round {round}"
            );
            running.result().unwrap();
        }
        still_works(&pool);
    });
}

// ------------------------------ row 7: callbacks before waiters (SEM. 7)

/// A callback registered before completion reads its own (failed) future
/// while another thread is blocked in `result()`: it sees the error.
#[test]
fn a_done_callback_sees_the_outcome_before_a_blocked_waiter_takes_it() {
    fn check(pool: &impl Executor, round: usize) {
        let first = pool.submit(sleep(100)).unwrap();
        let failing = Arc::new(Mutex::new(Some(
            pool.submit(drill::Panic("boom".into())).unwrap(),
        )));
        let (tx, rx) = mpsc::channel();
        failing
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .add_done_callback(move |f| {
                // Give a released waiter every chance to take the outcome first.
                std::thread::sleep(Duration::from_millis(30));
                let _ = tx.send((f.done(), f.error()));
            });
        let f = failing.lock().unwrap().take().unwrap();
        let waiter = std::thread::spawn(move || f.result());
        let (done, error) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(done);
        assert!(
            matches!(error, Some(TaskError::Panicked { .. })),
            "round {round}: the callback saw error() = {error:?}"
        );
        assert!(matches!(
            waiter.join().unwrap(),
            Err(TaskError::Panicked { .. })
        ));
        first.result().unwrap();
    }
    run("callback_before_waiter", LIMIT, || {
        let pool = pool(1);
        for round in 0..5 {
            check(&pool, round);
        }
        let threads = ThreadPool::builder().workers(1).build().unwrap();
        for round in 0..5 {
            check(&threads, round);
        }
    });
}

// ------------------------------------- row 8: cancel in a 50,000-task queue

/// Median time of cancelling `n` tasks spread over a queue of `queued`
/// (one worker kept busy), checking each cancel hit the right task.
fn cancel_cost(pool: &ProcessPool, queued: usize, n: usize) -> Duration {
    let busy = pool.submit(sleep(60_000)).unwrap();
    while busy.state() != State::Running {
        std::thread::sleep(Duration::from_millis(1));
    }
    let futs: Vec<_> = (0..queued as u64)
        .map(|i| pool.submit(Square(i)).unwrap())
        .collect();
    let mut times = Vec::with_capacity(n);
    let step = queued / n;
    for k in 0..n {
        let f = &futs[k * step + step / 2];
        let t = Instant::now();
        assert!(
            f.cancel(),
            "cancel of queued task {} failed",
            k * step + step / 2
        );
        times.push(t.elapsed());
        assert!(f.cancel(), "a second cancel is true too");
    }
    // Exactly the cancelled ones are cancelled.
    for (i, f) in futs.iter().enumerate() {
        let hit = i % step == step / 2 && i / step < n;
        assert_eq!(f.is_cancelled(), hit, "task {i}");
    }
    assert!(busy.kill());
    drop(futs);
    times.sort();
    times[n / 2]
}

/// Cancelling one task with 50,000 queued hits exactly that task, and
/// costs what it costs with 500 queued (no scan of the queue).
#[test]
fn cancel_of_one_task_among_50k_queued_is_exact_and_does_not_scan_the_queue() {
    run("cancel_in_50k", Duration::from_secs(120), || {
        let pool = builder(1).prefetch(1).build().unwrap();
        let small = cancel_cost(&pool, 500, 50);
        let large = cancel_cost(&pool, 50_000, 50);
        let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-9);
        println!(
            "FIGURE cancel_in_50k: median cancel {small:.2?} with 500 queued, {large:.2?} with 50,000 ({ratio:.1}x)"
        );
        // A scan of the queue makes this ~100x; an index ~1x. The bound is
        // loose on purpose (medians of 50, on a shared machine).
        assert!(
            ratio < 30.0,
            "cancel cost grows with the queue: {small:?} vs {large:?}"
        );
        pool.shutdown(Shutdown::CancelPending);
    });
}

// ---------------------------------------- row 9: chunks over the frame cap

/// A `map` whose items each fit `max_frame_bytes` but whose chunks do not:
/// every item gets its value; only an item over the cap on its own fails,
/// with a typed error.
#[test]
fn map_chunks_are_cut_to_fit_the_frame_cap() {
    run("chunks_fit_the_cap", LIMIT, || {
        let pool = builder(2).max_frame_bytes(64 * 1024).build().unwrap();
        let inputs: Vec<Vec<u8>> = (0..64u8)
            .map(|i| {
                if i == 33 {
                    vec![i; 70_000]
                } else {
                    vec![i; 20_000]
                }
            })
            .collect();
        let t = Instant::now();
        let out: Vec<_> = pool
            .map(inputs.clone().into_iter().map(Echo))
            .chunksize(16)
            .collect();
        println!(
            "FIGURE chunks_fit_the_cap: 64 items of 20 kB in chunks of 16 under a 64 KiB cap in {:.2?}",
            t.elapsed()
        );
        assert_eq!(out.len(), 64);
        for (i, (got, want)) in out.into_iter().zip(inputs).enumerate() {
            if i == 33 {
                assert!(
                    matches!(got, Err(TaskError::Encode { .. })),
                    "the item over the cap: {got:?}"
                );
            } else {
                match got {
                    Ok(b) => assert!(b.into_vec() == want, "item {i}: wrong bytes"),
                    Err(e) => panic!("item {i}: {e}"),
                }
            }
        }
        assert!(pool.broken().is_none());
        let unordered = pool
            .map_unordered((0..40u8).map(|i| Echo(vec![i; 30_000])))
            .chunksize(8)
            .filter(|r| r.is_ok())
            .count();
        assert_eq!(unordered, 40);
        still_works(&pool);
    });
}

// ------------------------------------------ row 10: Duration::MAX waits

fn no_limit_everywhere(pool: &impl Executor) {
    let max = Duration::MAX;
    let got: Vec<u64> = pool
        .map((0..20).map(Square))
        .timeout(max)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(got, (0..20).map(|i| i * i).collect::<Vec<_>>());
    let got = pool
        .map_unordered((0..20).map(Square))
        .timeout(max)
        .filter(|r| r.is_ok())
        .count();
    assert_eq!(got, 20);
    let futs: Vec<_> = (0..5)
        .map(|i| pool.submit(sleep(10 * i)).unwrap())
        .collect();
    let mut it = as_completed(futs).timeout(max);
    assert_eq!(it.by_ref().count(), 5);
    assert!(!it.timed_out());
    let futs: Vec<_> = (0..5)
        .map(|i| pool.submit(sleep(10 * i)).unwrap())
        .collect();
    let (done, not_done) = wait(futs, ReturnWhen::AllCompleted, Some(max));
    assert_eq!((done.len(), not_done.len()), (5, 0));
    let f = pool.submit(sleep(20)).unwrap();
    assert!(f.wait_timeout(max));
    assert_eq!(f.result_timeout(max).map_err(|e| e.to_string()), Ok(20));
    let f = pool.submit(sleep(20)).unwrap();
    assert!(matches!(f.result_timeout(max), Ok(20)));
    let f = pool.submit(drill::Panic("x".into())).unwrap();
    assert!(matches!(
        f.result_timeout(max),
        Err(WaitError::Failed(TaskError::Panicked { .. }))
    ));
}

/// `Duration::MAX` means "no limit" in `map(..).timeout`,
/// `as_completed(..).timeout`, `wait`, `result_timeout` and `wait_timeout`,
/// on both pools: it waits, it never panics.
#[test]
fn duration_max_means_no_limit_in_every_wait() {
    run("duration_max_waits", LIMIT, || {
        no_limit_everywhere(&pool(2));
        no_limit_everywhere(&ThreadPool::builder().workers(2).build().unwrap());
    });
}

// --------------------------- rows 11–12: Duration::MAX in the pool's settings

/// `task_timeout(Duration::MAX)`: no panic, and another task's own
/// timeout is still enforced.
#[test]
fn task_timeout_max_does_not_stop_other_timeouts() {
    run("task_timeout_max", LIMIT, || {
        let pool = builder(1).task_timeout(Duration::MAX).build().unwrap();
        assert_eq!(pool.submit(sleep(50)).unwrap().result().unwrap(), 50);
        let t = Instant::now();
        let hung = pool
            .submit_with_timeout(drill::Hang, Some(Duration::from_millis(300)))
            .unwrap();
        match hung.result_timeout(Duration::from_secs(10)) {
            Err(WaitError::Failed(TaskError::TimedOut { .. })) => {}
            Err(WaitError::TimedOut(f)) => {
                f.kill();
                pool.shutdown(Shutdown::Kill);
                panic!("the 300 ms timeout was not enforced within 10 s")
            }
            other => panic!("{other:?}"),
        }
        println!(
            "FIGURE task_timeout_max: the other task timed out after {:.2?}",
            t.elapsed()
        );
        still_works(&pool);
    });
}

/// `kill_grace`, `cancel_timeout` and `launch_timeout` set to
/// `Duration::MAX`: no panic anywhere; timed-out tasks are still stopped,
/// cancels still answered, builds still succeed.
#[test]
fn kill_grace_cancel_timeout_and_launch_timeout_max_never_panic() {
    run("settings_max", LIMIT, || {
        // launch_timeout: read by every build.
        let pool = builder(1).launch_timeout(Duration::MAX).build().unwrap();
        still_works(&pool);
        drop(pool);

        // kill_grace: a timed-out task is still stopped.
        let pool = builder(1).kill_grace(Duration::MAX).build().unwrap();
        let hung = pool
            .submit_with_timeout(drill::Hang, Some(Duration::from_millis(200)))
            .unwrap();
        match hung.result_timeout(Duration::from_secs(10)) {
            Err(WaitError::Failed(TaskError::TimedOut { .. })) => {}
            Err(WaitError::TimedOut(f)) => {
                f.kill();
                pool.shutdown(Shutdown::Kill);
                panic!("kill_grace(MAX): the timed-out task was never stopped")
            }
            other => panic!("{other:?}"),
        }
        still_works(&pool);
        drop(pool);

        // cancel_timeout: cancel of a prefetched task is answered.
        let pool = builder(1)
            .prefetch(2)
            .cancel_timeout(Duration::MAX)
            .build()
            .unwrap();
        let running = pool.submit(sleep(200)).unwrap();
        let prefetched = pool.submit(Square(3)).unwrap();
        let cancelled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prefetched.cancel()));
        assert_eq!(
            cancelled.ok(),
            Some(true),
            "cancel with cancel_timeout(MAX)"
        );
        assert_eq!(running.result().unwrap(), 200);
        still_works(&pool);
        drop(pool);
        assert!(no_children_left());
    });
}
