//! What the pool does with each message a worker sends: a task started,
//! finished or withdrawn; a protocol error or a lost worker ends it. Each
//! handler takes `Shared::state` once and resolves futures after releasing
//! it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use procpool_wire::message::Outcome;
use procpool_wire::{Generation, TaskId};

use super::dispatch::pump;
use super::item::{Batch, Item, Meta};
use super::outbox::flush_all;
use super::state::{Assigned, KillReason, Phase, PoolState, Shared, SlotStatus, WorkerSlot};
use crate::error::{Side, TaskError};
use crate::future::ResolveBytes;
use crate::lock::lock;

/// The error of a task that worker `worker` reports as failed.
pub(super) fn task_error(outcome: Outcome, meta: &Meta, worker: usize) -> TaskError {
    task_error_named(
        outcome,
        meta.name,
        meta.input_type,
        meta.output_type,
        worker,
    )
}

/// [`task_error`] for a task known by its name and types.
pub(super) fn task_error_named(
    outcome: Outcome,
    name: &str,
    input_type: &str,
    output_type: &str,
    worker: usize,
) -> TaskError {
    match outcome {
        Outcome::Panicked { message, location } => TaskError::Panicked { message, location },
        Outcome::Decode {
            message,
            worker_type,
        } => TaskError::Decode {
            side: Side::Worker,
            type_name: worker_type,
            message,
        },
        Outcome::Encode {
            message,
            worker_type,
        } => TaskError::Encode {
            side: Side::Worker,
            type_name: worker_type,
            message,
        },
        Outcome::UnknownTask { name } => TaskError::UnknownTask { name },
        Outcome::Mismatch {
            worker_input,
            worker_output,
        } => TaskError::Decode {
            side: Side::Worker,
            type_name: worker_input.clone(),
            message: format!(
                "task `{name}` is `{input_type} -> {output_type}` in the parent but `{worker_input} -> {worker_output}` in the \
                 worker: rebuild both from the same definition",
            ),
        },
        other => TaskError::Protocol {
            worker,
            message: format!("unknown outcome {other:?}"),
        },
    }
}

pub(super) fn protocol_error(
    shared: &Shared,
    idx: usize,
    generation: Generation,
    pid: u32,
    message: String,
) {
    tracing::warn!(target: "procpool::pool", { worker.id = idx, worker.pid = pid },
"protocol error: {message}");
    end_worker(shared, idx, generation, KillReason::Protocol(message));
}

/// A TCP worker went silent past `lost_after`.
pub(super) fn lost(shared: &Shared, idx: usize, generation: Generation, pid: u32) {
    let after = shared.cfg.lost_after;
    tracing::warn!(target: "procpool::pool", { worker.id = idx, worker.pid = pid },
"worker lost: no heartbeat for {after:?}");
    end_worker(shared, idx, generation, KillReason::Lost);
}

/// A worker took none of its input for `after` (`write_timeout`).
pub(super) fn stalled(
    shared: &Shared,
    idx: usize,
    generation: Generation,
    pid: u32,
    after: Duration,
) {
    tracing::warn!(target: "procpool::pool", { worker.id = idx, worker.pid = pid },
"the worker stopped reading its input: nothing taken for {after:?} (write_timeout); replacing it");
    end_worker(
        shared,
        idx,
        generation,
        KillReason::Protocol(format!(
            "the worker stopped reading its input (nothing taken for {after:?}, write_timeout)"
        )),
    );
}

/// A frame on a TCP link did not open (altered, replayed, reordered,
/// dropped before, or injected on the network): the connection ends, and
/// its running task fails as a lost worker (run again if it has retries
/// left). Nothing of the frame was used.
pub(super) fn tampered(shared: &Shared, idx: usize, generation: Generation, pid: u32, why: &str) {
    tracing::warn!(target: "procpool::pool", { worker.id = idx, worker.pid = pid },
"connection closed: {why}");
    end_worker(shared, idx, generation, KillReason::Lost);
}

/// Records why worker `idx` ends and kills it.
fn end_worker(shared: &Shared, idx: usize, generation: Generation, why: KillReason) {
    let target = {
        let mut st = lock(&shared.state);
        let slot = &mut st.slots[idx];
        if slot.generation != generation {
            return;
        }
        if slot.kill.is_none() {
            slot.kill = Some(why);
        }
        slot.target()
    };
    if let Some(t) = target {
        shared.signal(&t, nix::sys::signal::Signal::SIGKILL);
    }
}

/// An executor's note about one task, as the reader collects them from a
/// run of ring records (or one socket frame).
#[derive(Clone, Copy)]
pub(super) enum Note {
    Started(TaskId),
    Finished { id: TaskId, peak_rss: u64 },
}

/// What the pool lock handed back for one [`Note`], to act on once the
/// lock is released, in the notes' order. (Unboxed on purpose: a run's
/// `Vec<Noted>` is made once per run, and a box per finished task is the
/// allocation this path avoids.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Noted {
    /// A task began: its future, to mark `Running`.
    Started(Arc<dyn ResolveBytes>),
    /// A task ended: it, and the next task of its chunk, now `Running`.
    Finished(Assigned, Option<Arc<dyn ResolveBytes>>),
    /// Late, duplicate or unknown: dropped (and logged).
    Dropped,
}

/// Acts on a run of notes from worker `idx` under one acquisition of the
/// pool lock (a chunk's results arrive many at a time: per note, the lock,
/// the clock read and the dispatch would cost more than the note), then
/// flushes the connections `pump` touched and wakes whoever must know.
/// Returns, per note, what to do outside the lock; the caller does it in
/// order (a task's `Running` always before its result).
pub(super) fn on_notes(shared: &Shared, idx: usize, notes: &[Note], out: &mut Vec<Noted>) {
    let mut timed = false;
    let (conns, notify) = {
        let mut st = lock(&shared.state);
        let now = Instant::now();
        for &note in notes {
            out.push(match note {
                Note::Started(id) => started(&mut st.slots[idx], idx, id, now, &mut timed),
                Note::Finished { id, peak_rss } => {
                    finished(shared, &mut st, idx, id, peak_rss, now, &mut timed)
                }
            });
        }
        st.retire_if_idle(idx);
        let conns = pump(&mut st, shared);
        (conns, st.phase != Phase::Running)
    };
    if timed {
        shared.clock.notify_all();
    }
    if notify {
        shared.changed.notify_all();
    }
    flush_all(conns);
}

fn started(slot: &mut WorkerSlot, idx: usize, id: TaskId, now: Instant, timed: &mut bool) -> Noted {
    let Some(a) = slot.inflight.get_mut(&id) else {
        tracing::warn!(target: "procpool::pool", { worker.id = idx, task.id = id },
"start of an unknown task dropped");
        return Noted::Dropped;
    };
    a.started = true;
    *timed |= a.meta.timeout.is_some();
    let future = a.meta.future.clone();
    slot.running = Some((id, now));
    slot.heard = now;
    Noted::Started(future)
}

/// Removes a finished task from its worker and begins the next of its
/// chunk, which is now `Running` (a chunk's later tasks have no note of
/// their own: each begins when the one before it ends).
fn finished(
    shared: &Shared,
    st: &mut PoolState,
    idx: usize,
    id: TaskId,
    peak_rss: u64,
    now: Instant,
    timed: &mut bool,
) -> Noted {
    let Some(a) = st.slots[idx].take_task_at(id, now) else {
        tracing::warn!(
            target: "procpool::pool",
            { worker.id = idx,
            task.id = id },
        "late or duplicate result dropped"
        );
        return Noted::Dropped;
    };
    st.crash_streak = 0;
    let slot = &mut st.slots[idx];
    slot.finished += 1;
    slot.failures = 0;
    let next = slot.begin_next_at(a.batch, now).map(|n| {
        *timed |= n.meta.timeout.is_some();
        n.meta.future.clone()
    });
    if let Some(max) = shared.cfg.max_worker_memory
        && peak_rss > max
        && slot.status == SlotStatus::Ready
    {
        tracing::debug!(target: "procpool::pool", { worker.id = idx }, "worker peak memory {peak_rss} B passed {max} B; recycling");
        slot.status = SlotStatus::Retiring;
    }
    Noted::Finished(a, next)
}

/// The worker has begun the next task of `batch`: mark it, and hand back
/// its future to mark `Running` once the pool lock is released.
fn begin_next(shared: &Shared, slot: &mut WorkerSlot, batch: u64) -> Option<Arc<dyn ResolveBytes>> {
    let next = slot.begin_next(batch)?;
    if next.meta.timeout.is_some() {
        shared.clock.notify_all();
    }
    Some(next.meta.future.clone())
}

/// A worker's answer to a `Cancel`. It counts only from the worker that
/// holds the task: any other worker's answer (a bug, or a hostile worker
/// guessing the sequential ids) is dropped, so it can neither make
/// `cancel()` return `true` for a task running elsewhere nor take a task
/// away from its worker.
pub(super) fn on_withdrawn(shared: &Shared, idx: usize, id: TaskId, withdrawn: bool) {
    let mut st = lock(&shared.state);
    if !st.slots[idx].inflight.contains_key(&id) {
        drop(st);
        tracing::warn!(target: "procpool::pool", { worker.id = idx, task.id = id },
            "an answer to a cancel of a task this worker does not hold; dropped");
        return;
    }
    let wait = st.cancels.remove(&id);
    let mut cancel = None;
    let mut conns = Vec::new();
    let mut next = None;
    if withdrawn && let Some(a) = st.slots[idx].take_task(id) {
        if a.started {
            // Taken for running because the task before it in its chunk
            // ended, but withdrawn first: the worker went on to the one
            // after it.
            next = begin_next(shared, &mut st.slots[idx], a.batch);
        }
        let requeue = wait.is_none()
            && matches!(st.phase, Phase::Running | Phase::Draining)
            && st.broken.is_none();
        if requeue {
            // The caller gave up waiting and was told `false`: keep the
            // promise that it runs.
            let batch = st.next_batch;
            st.next_batch += 1;
            st.queue.push_front(Batch {
                id: batch,
                items: vec![Item {
                    meta: a.meta,
                    payload: a.payload,
                }],
            });
        } else {
            // Ended now, under the lock, so that a cancel() racing this
            // answer already sees it cancelled; released below. It never
            // ran, even if it was marked running (`a.started`: the task
            // before it in its batch ended after the worker handed it back).
            cancel = a.meta.future.withdrawn_begin();
        }
        st.retire_if_idle(idx);
        conns = pump(&mut st, shared);
    }
    drop(st);
    shared.changed.notify_all();
    flush_all(conns);
    if let Some(n) = next {
        n.mark_running();
    }
    if let Some(r) = cancel {
        r.run();
    }
    if let Some(w) = wait {
        w.answer(withdrawn);
    }
}
