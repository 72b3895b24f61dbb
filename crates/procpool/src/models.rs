//! Model checks, with [loom](https://docs.rs/loom), of the real code of
//! the two concurrency protocols: the future's state machine
//! (`future.rs`: finish, cancel, callbacks, waiters) and the reply ring's
//! park-and-wake handshake (`link/ring.rs`). loom runs each model under
//! every interleaving of its threads (up to a preemption bound) and fails
//! on a broken assertion, a deadlock (a waiter never released) or a data
//! race. The code under test takes its `Mutex`, `Condvar` and atomics from
//! `sync.rs`, which hands out loom's types in this build.
//!
//! ```text
//! RUSTFLAGS="--cfg procpool_loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p procpool --lib --release models
//! ```

mod future {
    use std::sync::Arc;

    use loom::sync::Mutex;
    use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use loom::thread;

    use crate::error::TaskError;
    use crate::future::{Core, Resolve, TaskFuture};

    fn panicked() -> TaskError {
        TaskError::Panicked {
            message: "boom".into(),
            location: None,
        }
    }
    fn pending() -> (Arc<Core<u32>>, TaskFuture<u32>) {
        let core = Core::<u32>::new(1, "model", None);
        (core.clone(), TaskFuture::from_core(core))
    }

    /// The task finishes while another thread cancels it and a third waits:
    /// exactly one of finish and cancel wins, the waiter is released (loom
    /// fails a model whose thread blocks forever), the callback runs once,
    /// and the outcome is the winner's.
    #[test]
    fn finish_racing_cancel_has_one_winner() {
        loom::model(|| {
            let (core, f) = pending();
            let calls = Arc::new(AtomicUsize::new(0));
            let c = calls.clone();
            f.add_done_callback(move |_| {
                c.fetch_add(1, SeqCst);
            });
            let f = Arc::new(f);
            let finisher = {
                let core = core.clone();
                thread::spawn(move || core.finish(Ok(7), None))
            };
            let canceller = {
                let f = f.clone();
                thread::spawn(move || f.cancel())
            };
            let waiter = {
                let f = f.clone();
                thread::spawn(move || {
                    f.wait();
                    f.is_cancelled()
                })
            };
            let finished = finisher.join().unwrap();
            let cancelled = canceller.join().unwrap();
            let waiter_saw_cancelled = waiter.join().unwrap();
            assert!(
                finished != cancelled,
                "finish {finished}, cancel {cancelled}"
            );
            assert_eq!(waiter_saw_cancelled, cancelled);
            assert_eq!(calls.load(SeqCst), 1, "the callback runs exactly once");
            let Ok(f) = Arc::try_unwrap(f) else {
                panic!("every thread was joined")
            };
            match f.result() {
                Ok(v) => assert!(finished && v == 7),
                Err(e) => assert!(cancelled && e.is_cancelled(), "{e:?}"),
            }
        });
    }

    /// SEMANTICS.md 7: a callback registered before completion has run
    /// before any waiter is released, and it sees the outcome (`error()`
    /// of a failed task is `Some` inside it), however the waiter races.
    #[test]
    fn callbacks_run_before_waiters_are_released() {
        loom::model(|| {
            let (core, f) = pending();
            let seen: Arc<Mutex<Option<Option<TaskError>>>> = Arc::default();
            let s = seen.clone();
            f.add_done_callback(move |f| {
                *s.lock().unwrap() = Some(f.error());
            });
            let s = seen.clone();
            let waiter = thread::spawn(move || {
                let r = f.result();
                let callback_ran = s.lock().unwrap().is_some();
                (r, callback_ran)
            });
            assert!(core.finish(Err(panicked()), None));
            let (r, callback_ran_first) = waiter.join().unwrap();
            assert_eq!(r, Err(panicked()));
            assert!(
                callback_ran_first,
                "result() returned before the done-callback ran"
            );
            assert_eq!(
                *seen.lock().unwrap(),
                Some(Some(panicked())),
                "the callback must see the task's error"
            );
        });
    }

    /// A callback added while another thread finishes the future runs
    /// exactly once: on the adder's thread if it came late, else on the
    /// finisher's.
    #[test]
    fn a_callback_added_during_finish_runs_once() {
        loom::model(|| {
            let (core, f) = pending();
            let calls = Arc::new(AtomicUsize::new(0));
            let finisher = thread::spawn(move || core.finish(Ok(1), None));
            let c = calls.clone();
            f.add_done_callback(move |f| {
                assert!(f.done(), "a callback sees its future done");
                c.fetch_add(1, SeqCst);
            });
            assert!(finisher.join().unwrap());
            assert_eq!(calls.load(SeqCst), 1);
        });
    }

    /// SEMANTICS.md 30: concurrent `cancel()` of a not-started future all
    /// return `true` once it is cancelled, and a later one too.
    #[test]
    fn concurrent_cancels_all_return_true() {
        loom::model(|| {
            let (_core, f) = pending();
            let f = Arc::new(f);
            let others: Vec<_> = (0..2)
                .map(|_| {
                    let f = f.clone();
                    thread::spawn(move || f.cancel())
                })
                .collect();
            let mine = f.cancel();
            let all: Vec<bool> = std::iter::once(mine)
                .chain(others.into_iter().map(|t| t.join().unwrap()))
                .collect();
            assert_eq!(all, [true, true, true]);
            assert!(f.cancel() && f.is_cancelled());
        });
    }

    /// SEMANTICS.md 2: `cancel()` returning `true` means the task never
    /// runs: the worker's `mark_running` then fails, and the other way
    /// round a started task cannot be cancelled.
    #[test]
    fn cancel_true_means_the_task_never_starts() {
        loom::model(|| {
            let (core, f) = pending();
            let starter = thread::spawn(move || {
                let started = core.mark_running();
                if started {
                    core.finish(Ok(3), None);
                }
                started
            });
            let cancelled = f.cancel();
            let started = starter.join().unwrap();
            assert!(
                cancelled != started,
                "cancel {cancelled}, started {started}"
            );
            assert_eq!(f.result().is_ok(), started);
        });
    }
}

mod ring {
    use loom::sync::mpsc;
    use loom::thread;
    use procpool_wire::frame::Outgoing;

    use crate::link::ring::{Pushed, Reader, Record, Writer};

    /// What the worker sends on its socket in these models.
    enum Socket {
        /// A `Wake` frame.
        Wake,
    }

    fn frame(body: &[u8]) -> Outgoing {
        Outgoing::new(body.to_vec(), Vec::<Vec<u8>>::new()).expect("a small frame")
    }

    /// The worker's side: pushes each body, writing a `Wake` frame when
    /// the ring says the parent parked (as `worker/shared.rs` does);
    /// `spare` writes one more wake-up first, for nothing.
    fn worker(mut w: Writer, bodies: Vec<Vec<u8>>, socket: mpsc::Sender<Socket>, spare: bool) {
        // A send fails only once the parent has read everything and gone.
        let wake = || {
            let _ = socket.send(Socket::Wake);
        };
        if spare {
            wake();
        }
        for b in &bodies {
            match w.push(&frame(b), &wake) {
                Pushed::Quiet => {}
                Pushed::Wake => wake(),
                Pushed::Socket => panic!("no note in these models is large"),
            }
        }
    }

    /// The parent's side, as `process_pool/reader.rs` runs it: drain the
    /// ring; when it is empty, park and, if parking stuck, block on the
    /// socket until a frame comes, then unpark. Returns the bodies read.
    fn parent(mut r: Reader, n: usize, socket: mpsc::Receiver<Socket>) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        loop {
            while let Some(rec) = r.next(1 << 20).expect("a well-formed ring") {
                assert_eq!(rec, Record::Frame);
                got.push(r.body().to_vec());
            }
            if got.len() == n {
                return got;
            }
            if !r.park() {
                continue;
            }
            match socket.recv() {
                Ok(Socket::Wake) => r.unpark(),
                Err(_) => panic!(
                    "lost wake-up: the parent parked after {} of {n} notes and the worker, \
                     done, never woke it",
                    got.len()
                ),
            }
        }
    }

    /// The parent's side without parking: it drains and yields until it
    /// has every note (the data path alone: order, wrap-around, room).
    fn polling_parent(mut r: Reader, n: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        loop {
            while let Some(rec) = r.next(1 << 20).expect("a well-formed ring") {
                assert_eq!(rec, Record::Frame);
                got.push(r.body().to_vec());
            }
            if got.len() == n {
                return got;
            }
            thread::yield_now();
        }
    }

    fn run_polling(bodies: Vec<Vec<u8>>) {
        let (r, fd) = Reader::create().expect("a ring");
        let w = Writer::open(fd).expect("the worker's end");
        let (tx, _rx) = mpsc::channel();
        let n = bodies.len();
        let sent = bodies.clone();
        let writer = thread::spawn(move || worker(w, bodies, tx, false));
        let got = polling_parent(r, n);
        writer.join().unwrap();
        assert_eq!(got, sent, "every note, in order, intact");
    }

    fn run(bodies: Vec<Vec<u8>>, spare: bool) {
        let (r, fd) = Reader::create().expect("a ring");
        let w = Writer::open(fd).expect("the worker's end");
        let (tx, rx) = mpsc::channel();
        let n = bodies.len();
        let sent = bodies.clone();
        let writer = thread::spawn(move || worker(w, bodies, tx, spare));
        let got = parent(r, n, rx);
        writer.join().unwrap();
        assert_eq!(got, sent, "every note, in order, intact");
    }

    /// One note: the parent never parks for good while the worker has
    /// published (no lost wake-up), however park and publish interleave.
    #[test]
    fn a_published_note_is_always_seen() {
        loom::model(|| run(vec![b"a".to_vec()], false));
    }

    /// A spare wake-up (one with nothing new in the ring) is harmless: the
    /// parent looks, finds nothing, parks again, and still gets the note.
    #[test]
    fn a_spare_wake_is_harmless() {
        loom::model(|| run(vec![b"x".to_vec()], true));
    }

    /// Three notes arrive in order and intact: the bytes a note is made of
    /// are published by the release store of `tail` and read after the
    /// acquire load (loom reports a read of unpublished bytes as a race).
    #[test]
    fn notes_arrive_in_order_and_intact() {
        loom::model(|| run_polling(vec![b"1".to_vec(), b"22".to_vec(), b"333".to_vec()]));
    }

    /// More notes than the ring holds (32 bytes under loom; 8 per note): the
    /// worker waits for room, the ring wraps, nothing is lost or torn, and
    /// the worker never overwrites bytes the parent has not read.
    #[test]
    fn a_full_ring_waits_and_wraps() {
        loom::model(|| run_polling((0..5u8).map(|i| vec![i; 4]).collect()));
    }
}
