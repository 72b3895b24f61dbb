//! The submit thread: where a [`MapStream`](super::MapStream) sends its
//! chunks and cancels what it drops, so that the task polling it never
//! waits for a pool.
//!
//! Sending a chunk to a process pool encodes its inputs, takes the pool's
//! lock and writes to a worker's socket; cancelling prefetched items waits
//! a round trip for the workers' answers. Each is short, but each can wait
//! on another thread (a lock holder, a worker that reads slowly), which a
//! runtime's thread must never do. So a `MapStream` posts them here: one
//! process-wide thread, `procpool-submit`, started at the first post and
//! never stopped (it sleeps in `recv` when idle), runs the jobs one at a
//! time in the order they were posted. One thread for every stream keeps
//! each stream's chunks in order without any bookkeeping; the price is
//! that one slow job delays the others (a cancel waits for workers'
//! answers, at most the pool's `cancel_timeout`, 250 ms by default, when
//! a worker does not answer).
//!
//! The queue is an `mpsc` channel, whose `send` takes no lock. A panicking
//! job is caught and logged (a pool turns its own panics into errors; this
//! is a last guard). If the thread cannot be started, jobs run inline in
//! `post`: blocking, but never lost.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

type Job = Box<dyn FnOnce() + Send>;

fn queue() -> Option<&'static Sender<Job>> {
    static QUEUE: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            let spawned = std::thread::Builder::new()
                .name("procpool-submit".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        if catch_unwind(AssertUnwindSafe(job)).is_err() {
                            tracing::error!(
                                target: "procpool::pool",
                                "a map stream's submit job panicked"
                            );
                        }
                    }
                });
            match spawned {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::warn!(
                        target: "procpool::pool",
                        "could not start the submit thread ({e}): map streams submit inline"
                    );
                    None
                }
            }
        })
        .as_ref()
}

/// Runs `job` on the submit thread, after every job posted before it.
pub(super) fn post(job: impl FnOnce() + Send + 'static) {
    match queue() {
        // The receiver lives as long as the process: `send` cannot fail.
        Some(tx) => {
            if let Err(back) = tx.send(Box::new(job)) {
                (back.0)();
            }
        }
        None => job(),
    }
}
