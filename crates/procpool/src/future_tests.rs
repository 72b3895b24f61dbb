//! Unit tests of `future.rs`: the state machine, cancel, callbacks and
//! their order against waiters, with no pool.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

fn pending(id: u64) -> (Arc<Core<u32>>, TaskFuture<u32>) {
    let core = Core::<u32>::new(id, "t", None);
    (core.clone(), TaskFuture::from_core(core))
}

#[test]
fn pending_running_done() {
    let (core, f) = pending(1);
    assert_eq!(f.state(), State::Pending);
    assert!(core.mark_running());
    assert_eq!(f.state(), State::Running);
    assert!(!f.cancel(), "a running task cannot be cancelled");
    assert!(core.finish(Ok(7), None));
    assert!(!core.finish(Ok(8), None), "second finish is ignored");
    assert!(f.done() && !f.is_cancelled());
    assert_eq!(f.error(), None);
    assert_eq!(f.result().unwrap(), 7);
}

#[test]
fn cancel_pending_then_mark_running_fails() {
    let (core, f) = pending(2);
    assert!(f.cancel());
    assert!(f.cancel(), "cancel of a cancelled future is true");
    assert!(!core.mark_running());
    assert!(f.is_cancelled() && f.done());
    assert_eq!(f.error(), Some(TaskError::Cancelled));
}

#[test]
fn callbacks_run_once_and_survive_panics() {
    let (core, f) = pending(3);
    let count = Arc::new(AtomicUsize::new(0));
    let c1 = count.clone();
    f.add_done_callback(move |_| panic!("callback boom"));
    f.add_done_callback(move |fut| {
        assert!(fut.done(), "callback sees its own future done");
        c1.fetch_add(1, Ordering::SeqCst);
    });
    core.finish(Ok(1), None);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let c2 = count.clone();
    f.add_done_callback(move |_| {
        c2.fetch_add(10, Ordering::SeqCst);
    });
    assert_eq!(count.load(Ordering::SeqCst), 11, "runs at once when done");
    assert_eq!(
        f.result().unwrap(),
        1,
        "value kept despite a panicking callback"
    );
}

#[test]
fn result_timeout_hands_back_the_future() {
    let (core, f) = pending(4);
    let f = match f.result_timeout(Duration::from_millis(20)) {
        Err(WaitError::TimedOut(f)) => f,
        other => panic!("expected TimedOut, got {other:?}"),
    };
    assert_eq!(f.state(), State::Pending, "nothing was cancelled");
    core.finish(Err(TaskError::Shutdown), None);
    assert!(matches!(
        f.result_timeout(Duration::from_secs(5)),
        Err(WaitError::Failed(TaskError::Shutdown))
    ));
}

#[test]
fn many_waiters_on_one_future() {
    let (core, f) = pending(5);
    let f = Arc::new(f);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let f = f.clone();
            std::thread::spawn(move || f.wait_timeout(Duration::from_secs(10)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    core.finish(Ok(3), None);
    for h in handles {
        assert!(h.join().unwrap());
    }
}

#[test]
fn callbacks_run_before_a_blocked_waiter_is_released() {
    let (core, f) = pending(6);
    let (tx, rx) = std::sync::mpsc::channel();
    f.add_done_callback(move |fut| {
        std::thread::sleep(Duration::from_millis(30));
        let _ = tx.send(fut.error());
    });
    let waiter = std::thread::spawn(move || f.result());
    std::thread::sleep(Duration::from_millis(20));
    core.finish(Err(TaskError::Shutdown), None);
    assert_eq!(rx.recv().unwrap(), Some(TaskError::Shutdown));
    assert_eq!(waiter.join().unwrap(), Err(TaskError::Shutdown));
}

#[test]
fn a_begun_cancel_is_visible_at_once_and_releases_later() {
    let (core, f) = pending(7);
    let (cancelled, release) = core.cancel_begin();
    assert!(cancelled && f.is_cancelled() && f.done());
    assert!(f.cancel(), "a second cancel agrees");
    assert!(
        !f.wait_timeout(Duration::from_millis(10)),
        "not released yet"
    );
    release.expect("the first cancel releases").run();
    assert!(f.wait_timeout(Duration::ZERO));
    assert_eq!(f.result(), Err(TaskError::Cancelled));
}
