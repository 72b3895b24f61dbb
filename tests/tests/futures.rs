//! `TaskFuture` end to end, on both pools: states, cancel (queued,
//! prefetched, running, racing the worker), waiting with a limit, `error()`,
//! fallible tasks, done-callbacks, many waiters, detaching.
//!
//! Every behaviour is checked on a `ProcessPool` (real worker processes)
//! and a `ThreadPool` through one generic function: `both_pools!` makes a
//! `process` and a `thread` test of it, each under a watchdog.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use procpool::{Executor, State, TaskError, TaskFuture, WaitError};
use procpool_e2e::{both_pools, watchdog};
use procpool_tasks::{Checked, CountCalls, Sleep, Square, drill};

const LIMIT: Duration = Duration::from_secs(60);

/// Polls `f.state()` (sleeping 1 ms between looks) until it is `want`.
fn wait_for_state<T: Send + 'static>(f: &TaskFuture<T>, want: State) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = f.state();
        if s == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "future stuck in {s:?}, waiting for {want:?}: {f:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Asserts `f` ended cancelled, by every accessor.
fn assert_cancelled<T: Send + 'static + std::fmt::Debug>(f: TaskFuture<T>) {
    assert_eq!(f.state(), State::Done, "a cancelled future is Done");
    assert!(f.done() && !f.running());
    assert!(f.is_cancelled());
    assert_eq!(f.error(), Some(TaskError::Cancelled));
    assert!(f.cancel(), "cancel() of a cancelled future stays true");
    assert!(f.cost().is_none(), "a cancelled task has no cost");
    assert_eq!(f.result().unwrap_err(), TaskError::Cancelled);
}

// ---------------------------------------------------------------- states

/// Pending → Running → Done, and a task behind a running one (queued, or
/// prefetched by the worker) stays Pending until a worker begins it.
fn states_move_forward<P: Executor>(pool: &P) {
    let a = pool.submit(Sleep { millis: 300 }).unwrap();
    let b = pool.submit(Sleep { millis: 200 }).unwrap();
    assert_ne!(a.state(), State::Done, "a 300 ms task is not done at once");
    assert_eq!(b.state(), State::Pending);
    assert!(!b.done() && !b.running() && !b.is_cancelled());
    assert_eq!(b.error(), None);
    assert!(b.cost().is_none());

    wait_for_state(&a, State::Running);
    assert!(a.running() && !a.done());
    assert_eq!(a.error(), None, "error() of a running task is None");

    // While `a` runs, `b` is Pending: with one worker it cannot have begun
    // (on the process pool it is prefetched, which is still Pending).
    let mut looks = 0;
    loop {
        let sb = b.state();
        if a.done() {
            break;
        }
        assert_eq!(sb, State::Pending, "b began while a was not done");
        looks += 1;
        thread::sleep(Duration::from_millis(2));
    }
    assert!(looks > 10, "only {looks} looks during a 300 ms task");

    assert_eq!(a.state(), State::Done);
    assert!(a.done() && !a.running() && !a.is_cancelled());
    assert_eq!(a.error(), None);
    assert!(a.cost().is_some(), "a finished task has a cost");
    assert!(!a.cancel(), "cancel() of a finished task is false");
    assert!(!a.is_cancelled());
    assert_eq!(a.result().unwrap(), 300);

    wait_for_state(&b, State::Running);
    assert!(b.running());
    b.wait();
    assert_eq!(b.state(), State::Done);
    assert_eq!(b.result().unwrap(), 200);
}
both_pools!(states_pending_running_done, 1, states_move_forward);

// ---------------------------------------------------------------- cancel

/// One worker busy with a Sleep; six `CountCalls` behind it. On the
/// process pool (prefetch 4) calls 0..=2 are prefetched by the worker and
/// 3..=5 wait in the parent's queue. Cancelling 1 and 5 returns true
/// without waiting for the running task, and the per-worker call counter
/// proves neither ever ran.
fn cancel_of_queued_tasks<P: Executor>(pool: &P) {
    let blocker = pool.submit(Sleep { millis: 500 }).unwrap();
    wait_for_state(&blocker, State::Running);
    let mut calls: Vec<Option<TaskFuture<(u32, u64)>>> = (0..6)
        .map(|_| Some(pool.submit(CountCalls).unwrap()))
        .collect();
    for c in calls.iter().flatten() {
        assert_eq!(c.state(), State::Pending);
    }
    let t = Instant::now();
    assert!(calls[5].as_ref().unwrap().cancel(), "queued in the parent");
    assert!(calls[1].as_ref().unwrap().cancel(), "prefetched / queued");
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(200),
        "cancel took {took:?}: it must not wait for the running task"
    );
    assert_eq!(
        blocker.state(),
        State::Running,
        "cancel returned while the blocker still ran"
    );
    assert!(!blocker.cancel(), "cancel() of a running task is false");
    assert!(!blocker.is_cancelled());

    assert_cancelled(calls[5].take().unwrap());
    assert_cancelled(calls[1].take().unwrap());

    assert_eq!(blocker.result().unwrap(), 500, "the running task finished");
    let mut pids = HashSet::new();
    let counts: Vec<u64> = calls
        .into_iter()
        .flatten()
        .map(|f| {
            let (pid, n) = f.result().expect("not cancelled, so it ran");
            pids.insert(pid);
            n
        })
        .collect();
    assert_eq!(counts, vec![1, 2, 3, 4], "the survivors ran once each");
    let (pid, n) = pool.submit(CountCalls).unwrap().result().unwrap();
    pids.insert(pid);
    assert_eq!(n, 5, "the two cancelled tasks never ran");
    assert_eq!(pids.len(), 1, "one worker ran everything: {pids:?}");
}
both_pools!(cancel_queued_task_never_runs, 1, cancel_of_queued_tasks);

#[test]
fn cancel_of_a_prefetched_task_withdraws_it_from_the_worker() {
    watchdog(LIMIT, || {
        // One worker, prefetch 4 (the default, set explicitly): the Sleep
        // runs, the second task is sent to the worker but not begun.
        let pool = procpool_e2e::builder()
            .worker(procpool_e2e::test_worker!())
            .workers(1)
            .prefetch(4)
            .build()
            .unwrap();
        let blocker = pool.submit(Sleep { millis: 400 }).unwrap();
        let second = pool.submit(CountCalls).unwrap();
        let third = pool.submit(CountCalls).unwrap();
        wait_for_state(&blocker, State::Running);
        assert_eq!(second.state(), State::Pending, "prefetched is Pending");
        let t = Instant::now();
        assert!(second.cancel(), "a prefetched task can be withdrawn");
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(200),
            "withdrawing took {took:?}: bounded by a round trip, not the running task"
        );
        assert_eq!(blocker.state(), State::Running);
        assert_cancelled(second);
        assert_eq!(blocker.result().unwrap(), 400);
        assert_eq!(third.result().unwrap().1, 1, "the third ran first");
        assert_eq!(
            pool.submit(CountCalls).unwrap().result().unwrap().1,
            2,
            "the withdrawn task never ran"
        );
    });
}

/// cancel() of a running task is false, does not block, and the value
/// still arrives.
fn cancel_of_running_task<P: Executor>(pool: &P) {
    let f = pool.submit(Sleep { millis: 300 }).unwrap();
    wait_for_state(&f, State::Running);
    let t = Instant::now();
    assert!(!f.cancel());
    assert!(!f.cancel(), "still false the second time");
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "cancel() of a running task blocked for {:?}",
        t.elapsed()
    );
    assert_eq!(f.state(), State::Running);
    assert!(!f.is_cancelled());
    assert_eq!(f.result().unwrap(), 300);
}
both_pools!(cancel_running_task_returns_false, 1, cancel_of_running_task);

/// cancel() racing the worker taking the task: many rounds, cancelling at
/// varied moments (queued, prefetched, just starting, running, done).
/// Exactly one side wins each time: the tasks that ran are exactly those
/// for which cancel() returned false, which the worker's call counter
/// proves.
fn cancel_races_the_worker<P: Executor>(pool: &P) {
    const ROUNDS: usize = 300;
    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut sleeps = Vec::new();
    for i in 0..ROUNDS {
        if i % 2 == 0 {
            // Something for the worker to be busy with, so the next task
            // is sometimes queued or prefetched when cancel() comes.
            sleeps.push(pool.submit(Sleep { millis: 1 }).unwrap());
        }
        let f = pool.submit(CountCalls).unwrap();
        match (i * 7) % 17 {
            0 => {}
            1 => thread::yield_now(),
            k => thread::sleep(Duration::from_micros(k as u64 * 120)),
        }
        let won = f.cancel();
        rounds.push((f, won));
    }
    let mut ran_counts = Vec::new();
    let mut cancelled = 0;
    let mut pids = HashSet::new();
    for (i, (f, won)) in rounds.into_iter().enumerate() {
        if won {
            cancelled += 1;
            assert!(
                f.is_cancelled(),
                "round {i}: cancel() true but not cancelled"
            );
            assert_eq!(
                f.result().unwrap_err(),
                TaskError::Cancelled,
                "round {i}: cancel() returned true but the task ran"
            );
        } else {
            let r = f.result();
            let (pid, n) = r.unwrap_or_else(|e| {
                panic!("round {i}: cancel() returned false but the task did not run: {e:?}")
            });
            pids.insert(pid);
            ran_counts.push(n);
        }
    }
    for s in sleeps {
        assert_eq!(s.result().unwrap(), 1);
    }
    let ran = ran_counts.len();
    ran_counts.sort_unstable();
    assert_eq!(
        ran_counts,
        (1..=ran as u64).collect::<Vec<_>>(),
        "each task that cancel() did not stop ran exactly once"
    );
    let (pid, n) = pool.submit(CountCalls).unwrap().result().unwrap();
    pids.insert(pid);
    assert_eq!(
        n,
        ran as u64 + 1,
        "the worker ran {} tasks, but cancel() returned false only {ran} times",
        n - 1
    );
    assert_eq!(pids.len(), 1, "one worker, never replaced: {pids:?}");
    eprintln!("cancel race: {cancelled} cancelled, {ran} ran");
    assert!(
        cancelled > 0,
        "no cancel won in {ROUNDS} rounds: the race was never run"
    );
    assert!(
        ran > 0,
        "no task ran in {ROUNDS} rounds: the race was never run"
    );
}
both_pools!(cancel_race_exactly_one_wins, 1, cancel_races_the_worker);

// --------------------------------------------------------- waiting with a limit

/// result_timeout hands the future back untouched; the value still comes.
fn result_timeout_hands_back<P: Executor>(pool: &P) {
    let f = pool.submit(Sleep { millis: 300 }).unwrap();
    assert!(!f.wait_timeout(Duration::from_millis(10)));
    let t = Instant::now();
    let f = match f.result_timeout(Duration::from_millis(50)) {
        Err(WaitError::TimedOut(f)) => f,
        other => panic!("expected WaitError::TimedOut, got {other:?}"),
    };
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(45) && waited < Duration::from_millis(250),
        "result_timeout(50ms) waited {waited:?}"
    );
    assert_ne!(f.state(), State::Done, "nothing was cancelled");
    assert!(!f.is_cancelled());
    assert_eq!(f.error(), None);
    // And again: the handed-back future is a full future.
    let f = match f.result_timeout(Duration::ZERO) {
        Err(WaitError::TimedOut(f)) => f,
        other => panic!("zero limit on an unfinished task: {other:?}"),
    };
    assert!(f.wait_timeout(Duration::from_secs(10)));
    match f.result_timeout(Duration::from_secs(10)) {
        Ok(v) => assert_eq!(v, 300),
        Err(e) => panic!("the value should have arrived: {e:?}"),
    }

    // A failure within the limit is WaitError::Failed, not TimedOut.
    let p = pool.submit(drill::Panic("limit test".into())).unwrap();
    match p.result_timeout(Duration::from_secs(10)) {
        Err(WaitError::Failed(TaskError::Panicked { message, .. })) => {
            assert_eq!(message, "limit test")
        }
        other => panic!("expected Failed(Panicked), got {other:?}"),
    }
    // A finished task with a zero limit: the value, at once.
    let q = pool.submit(Square(5)).unwrap();
    q.wait();
    assert_eq!(q.result_timeout(Duration::ZERO).unwrap(), 25);
}
both_pools!(result_timeout_does_not_cancel, 1, result_timeout_hands_back);

/// error() never blocks and is Some only when done with a failure; a
/// fallible task's Err is its own value.
fn error_is_non_blocking<P: Executor>(pool: &P) {
    let slow = pool.submit(Sleep { millis: 300 }).unwrap();
    let t = Instant::now();
    assert_eq!(slow.error(), None);
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "error() blocked for {:?}",
        t.elapsed()
    );
    wait_for_state(&slow, State::Running);
    assert_eq!(slow.error(), None, "running: None");
    slow.wait();
    assert_eq!(slow.error(), None, "done with a value: None");
    assert_eq!(slow.result().unwrap(), 300);

    let bad = pool.submit(drill::Panic("error() test".into())).unwrap();
    bad.wait();
    let e1 = bad.error().expect("done with a failure: Some");
    let e2 = bad.error().expect("error() does not consume");
    assert_eq!(e1, e2);
    assert!(e1.is_panic(), "{e1:?}");
    assert!(e1.to_string().contains("error() test"), "{e1}");
    assert_eq!(bad.result().unwrap_err(), e1);

    // Ok(Err(e)) from a fallible task is the task's value.
    let odd = pool.submit(Checked(3)).unwrap();
    let even = pool.submit(Checked(8)).unwrap();
    odd.wait();
    even.wait();
    assert_eq!(odd.error(), None, "the task's own Err is not a TaskError");
    assert!(odd.cost().is_some(), "it finished with a value");
    assert_eq!(odd.result().unwrap(), Err("3 is odd".to_string()));
    assert_eq!(even.error(), None);
    assert_eq!(even.result().unwrap(), Ok(4));
}
both_pools!(error_and_fallible_tasks, 1, error_is_non_blocking);

// ---------------------------------------------------------------- callbacks

/// Already done: the callback runs now, on this thread, once.
fn callback_on_done_future<P: Executor>(pool: &P) {
    let f = pool.submit(Square(9)).unwrap();
    f.wait();
    let me = thread::current().id();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    f.add_done_callback(move |fut| {
        // Reading its own future from inside the callback must not deadlock.
        s.lock().unwrap().push((
            thread::current().id(),
            fut.state(),
            fut.done(),
            fut.error(),
            fut.cost().is_some(),
        ));
    });
    // No waiting: it already ran.
    let got = seen.lock().unwrap().clone();
    assert_eq!(got, vec![(me, State::Done, true, None, true)]);
    // A panicking callback on a done future is caught: add_done_callback
    // returns normally, and later callbacks still run.
    f.add_done_callback(|_| panic!("callback panics on the caller's thread"));
    let s = seen.clone();
    f.add_done_callback(move |fut| {
        s.lock().unwrap().push((
            thread::current().id(),
            fut.state(),
            fut.done(),
            fut.error(),
            fut.cost().is_some(),
        ))
    });
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(f.result().unwrap(), 81, "the value is kept");
}
both_pools!(
    callback_already_done_runs_now_on_caller,
    1,
    callback_on_done_future
);

/// Not done yet: the callbacks run later, on another thread, once each; a
/// panicking one does not stop the others or lose the value; each may read
/// its own future.
fn callback_on_pending_future<P: Executor>(pool: &P) {
    let f = pool.submit(Sleep { millis: 200 }).unwrap();
    let me = thread::current().id();
    let (tx, rx) = mpsc::channel();
    let runs = Arc::new(AtomicUsize::new(0));

    let (tx1, r1) = (tx.clone(), runs.clone());
    f.add_done_callback(move |fut| {
        r1.fetch_add(1, Ordering::SeqCst);
        let _ = tx1.send((
            "first",
            thread::current().id(),
            fut.state(),
            fut.is_cancelled(),
            fut.error(),
            fut.cost().is_some(),
        ));
    });
    f.add_done_callback(|_| panic!("a done-callback panics (on purpose)"));
    let (tx3, r3) = (tx, runs.clone());
    f.add_done_callback(move |fut| {
        r3.fetch_add(1, Ordering::SeqCst);
        let _ = tx3.send((
            "third",
            thread::current().id(),
            fut.state(),
            fut.is_cancelled(),
            fut.error(),
            fut.cost().is_some(),
        ));
    });
    assert_eq!(runs.load(Ordering::SeqCst), 0, "not done: nothing ran yet");
    assert!(rx.try_recv().is_err());

    for want in ["first", "third"] {
        let (name, tid, state, cancelled, error, has_cost) = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("callback {want} never ran (a deadlock or a lost panic?)"));
        assert_eq!(name, want, "callbacks run in the order they were added");
        assert_ne!(
            tid, me,
            "a pending future's callback runs on the pool's thread"
        );
        assert_eq!(state, State::Done, "the callback sees its future done");
        assert!(!cancelled);
        assert_eq!(error, None);
        assert!(
            has_cost,
            "the value (and its cost) are set before callbacks"
        );
    }
    assert_eq!(
        f.result().unwrap(),
        200,
        "the value survives a panicking callback"
    );
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "each callback ran exactly once"
    );
    assert!(rx.try_recv().is_err(), "no callback ran twice");
}
both_pools!(
    callback_pending_runs_later_and_survives_panics,
    1,
    callback_on_pending_future
);

/// A cancelled future runs its callbacks too (with the future cancelled),
/// on the thread that cancelled it.
fn callback_on_cancel<P: Executor>(pool: &P) {
    let blocker = pool.submit(Sleep { millis: 300 }).unwrap();
    wait_for_state(&blocker, State::Running);
    let queued = pool.submit(Sleep { millis: 1 }).unwrap();
    let (tx, rx) = mpsc::channel();
    queued.add_done_callback(move |fut| {
        let _ = tx.send((fut.is_cancelled(), fut.error()));
    });
    assert!(queued.cancel());
    let (cancelled, error) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("callback of a cancelled future ran");
    assert!(cancelled);
    assert_eq!(error, Some(TaskError::Cancelled));
    assert_eq!(blocker.result().unwrap(), 300);
}
both_pools!(callback_runs_for_cancelled_future, 1, callback_on_cancel);

// ---------------------------------------------------------------- sharing

fn assert_send_sync<T: Send + Sync>() {}

/// Many threads wait on one future at once (it is Send + Sync).
fn many_waiters<P: Executor>(pool: &P) {
    assert_send_sync::<TaskFuture<u64>>();
    let f = Arc::new(pool.submit(Sleep { millis: 200 }).unwrap());
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let f = f.clone();
            thread::spawn(move || {
                if i % 2 == 0 {
                    f.wait();
                } else {
                    assert!(f.wait_timeout(Duration::from_secs(10)));
                }
                (f.state(), f.error())
            })
        })
        .collect();
    // Scoped threads borrowing the same future.
    let shared: &TaskFuture<u64> = &f;
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                assert!(shared.wait_timeout(Duration::from_secs(10)));
                assert!(shared.done());
            });
        }
    });
    for h in handles {
        assert_eq!(h.join().unwrap(), (State::Done, None));
    }
    let f = Arc::try_unwrap(f).expect("every waiter let go");
    assert_eq!(f.result().unwrap(), 200);
}
both_pools!(many_threads_wait_on_one_future, 2, many_waiters);

/// Dropping a future detaches it: the task still runs (SEMANTICS 3).
fn drop_detaches<P: Executor>(pool: &P) {
    let blocker = pool.submit(Sleep { millis: 100 }).unwrap();
    drop(pool.submit(CountCalls).unwrap());
    drop(pool.submit(CountCalls).unwrap());
    let (_, n) = pool.submit(CountCalls).unwrap().result().unwrap();
    assert_eq!(n, 3, "both dropped futures' tasks still ran");
    assert_eq!(blocker.result().unwrap(), 100);
}
both_pools!(dropping_a_future_detaches_it, 1, drop_detaches);
