//! A worker process is gone: settle its tasks (fail, retry or re-queue),
//! count the crash, break the pool past `max_restarts`, and ask for a
//! replacement after a back-off. Takes `Shared::state`, then (after
//! releasing it) `spawn_tx`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use procpool_wire::Generation;

use super::cancel::CancelWait;
use super::dispatch;
use super::item::{Batch, Item};
use super::launch::Launcher;
use super::outbox::flush_all;
use super::state::{Assigned, KillReason, Phase, PoolState, Shared, SlotStatus, SpawnJob, Target};
use crate::error::{Exit, TaskError};
use crate::future::ResolveBytes;
use crate::lock::lock;

pub(super) fn backoff(streak: u32) -> Duration {
    if streak == 0 {
        return Duration::ZERO;
    }
    let base = Duration::from_millis(10).saturating_mul(1 << streak.min(8).saturating_sub(1));
    let base = base.min(Duration::from_secs(2));
    // ±25 % jitter from the clock's low bits.
    let nanos = Instant::now().elapsed().subsec_nanos() ^ std::process::id();
    let jitter = f64::from(nanos % 1000) / 1000.0 * 0.5 + 0.75;
    base.mul_f64(jitter)
}

/// A worker process is gone: settle its tasks, count the crash, respawn.
pub(super) fn settle(
    shared: &Arc<Shared>,
    idx: usize,
    generation: Generation,
    pid: Option<u32>,
    exit: Exit,
) {
    let mut failures: Vec<(Arc<dyn ResolveBytes>, TaskError)> = Vec::new();
    let mut cancelled: Vec<Arc<dyn ResolveBytes>> = Vec::new();
    let mut answers: Vec<Arc<CancelWait>> = Vec::new();
    let mut respawn_after: Option<(SpawnJob, Duration)> = None;
    let mut kill_others: Vec<Target> = Vec::new();
    let conns;
    {
        let mut st = lock(&shared.state);
        if st.slots[idx].generation != generation {
            return;
        }
        if std::mem::take(&mut st.inject_panic) {
            panic!("injected supervisor panic (test hook)");
        }
        let stopping = matches!(st.phase, Phase::Stopping | Phase::Stopped);
        let slot = &mut st.slots[idx];
        let kill = slot.kill.take();
        slot.status = SlotStatus::Dead;
        slot.conn = None;
        slot.pid = None;
        slot.link = None;
        slot.remote = false;
        slot.running = None;
        slot.batches.clear();
        slot.kill_at = None;
        slot.last_exit = Some(exit);
        let mut held: Vec<Assigned> = slot.inflight.drain().map(|(_, a)| a).collect();
        held.sort_by_key(|a| a.seq);
        let pid_shown = pid.unwrap_or(0);
        let exit = match kill {
            Some(KillReason::Lost) => Exit::Lost,
            _ => exit,
        };
        let broken_now = st.broken.clone();
        let mut requeue = Vec::new();
        let mut had_running = false;
        for mut a in held {
            let retry = a.started
                && a.meta.retries > 0
                && broken_now.is_none()
                && !stopping
                && matches!(
                    kill,
                    None | Some(KillReason::Lost) | Some(KillReason::Protocol(_))
                );
            if retry {
                // Its worker died under it: run it again, alone.
                had_running = true;
                a.meta.retries -= 1;
                tracing::info!(target: "procpool::pool", { worker.id = idx, task.id = a.meta.id },
"retrying a task whose worker died ({} retries left)", a.meta.retries);
                requeue.push(Batch {
                    id: u64::MAX - a.meta.id,
                    items: vec![Item {
                        meta: a.meta,
                        payload: a.payload,
                    }],
                });
            } else if a.started {
                had_running = true;
                let err = match &kill {
                    Some(KillReason::TimedOut { id, after }) if *id == a.meta.id => {
                        TaskError::TimedOut { after: *after }
                    }
                    Some(KillReason::Killed { id }) if *id == a.meta.id => TaskError::Cancelled,
                    Some(KillReason::Protocol(m)) => TaskError::Protocol {
                        worker: idx,
                        message: m.clone(),
                    },
                    Some(KillReason::Shutdown) => TaskError::Cancelled,
                    Some(KillReason::Broken(r)) => TaskError::Broken { reason: r.clone() },
                    _ => TaskError::WorkerDied {
                        worker: idx,
                        pid: pid_shown,
                        exit,
                        task: Some(a.meta.name.to_owned()),
                    },
                };
                failures.push((a.meta.future, err));
            } else if let Some(w) = st.cancels.remove(&a.meta.id) {
                // A withdrawn-but-unconfirmed task never ran: the cancel stands.
                cancelled.push(a.meta.future);
                answers.push(w);
            } else if let Some(r) = &broken_now {
                failures.push((a.meta.future, TaskError::Broken { reason: r.clone() }));
            } else if stopping {
                cancelled.push(a.meta.future);
            } else {
                let item = Item {
                    meta: a.meta,
                    payload: a.payload,
                };
                // Keep the batches as they were sent: a single task must
                // not become part of a chunk (a chunk fails as a unit).
                match requeue.last_mut() {
                    Some(Batch { id, items }) if *id == a.batch => items.push(item),
                    _ => requeue.push(Batch {
                        id: a.batch,
                        items: vec![item],
                    }),
                }
            }
        }
        for batch in requeue.into_iter().rev() {
            st.queue.push_front(batch);
        }
        let crash = match &kill {
            None
            | Some(KillReason::StartFailed)
            | Some(KillReason::Protocol(_))
            | Some(KillReason::Lost) => true,
            Some(KillReason::TimedOut { .. })
            | Some(KillReason::Killed { .. })
            | Some(KillReason::Retire)
            | Some(KillReason::Shutdown) => false,
            Some(KillReason::Broken(_)) => false,
        };
        let start_error = st.slots[idx]
            .start_error
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        let cause = format!(
            "worker {idx} (pid {pid_shown}) {exit}{}{start_error}",
            if had_running {
                " while running a task"
            } else {
                ""
            }
        );
        if crash {
            st.crash_streak += 1;
            if st.slots[idx].finished == 0 {
                st.slots[idx].failures += 1;
            }
            tracing::warn!(target: "procpool::pool", { worker.id = idx, worker.pid = pid_shown },
"{cause}");
        } else {
            tracing::debug!(target: "procpool::pool", { worker.id = idx, worker.pid = pid_shown },
"worker exited: {cause}");
        }
        let slot_failures = st.slots[idx].failures;
        let max = shared.cfg.max_restarts;
        if !st.building && st.broken.is_none() && (st.crash_streak > max || slot_failures > max) {
            let reason = if st.crash_streak > max {
                format!(
                    "{} workers died in a row with no task finished in between (last: {cause}); \
                     max_restarts is {max}",
                    st.crash_streak
                )
            } else {
                format!(
                    "worker slot {idx} died {slot_failures} times in a row before finishing a \
                     task (last: {cause}); max_restarts is {max}"
                )
            };
            break_pool(&mut st, reason, &mut failures, &mut kill_others);
        }
        let wanted = match st.phase {
            Phase::Running => true,
            Phase::Draining => !st.queue.is_empty(),
            Phase::Stopping | Phase::Stopped => false,
        };
        // Spawned workers are replaced in their slot; launched ones by a
        // new launch, whose worker takes any vacant slot.
        let job = match &shared.cfg.launcher {
            Launcher::Spawn => Some(SpawnJob::Worker(idx)),
            Launcher::Command(_) => Some(SpawnJob::Launch {
                workers: 1,
                first: false,
            }),
            _ => None,
        };
        if let Some(job) = job
            && !st.building
            && st.broken.is_none()
            && wanted
        {
            if matches!(job, SpawnJob::Worker(_)) {
                st.slots[idx].status = SlotStatus::Starting;
            }
            let delay = if crash {
                backoff(st.crash_streak.max(slot_failures))
            } else {
                Duration::ZERO
            };
            tracing::info!(target: "procpool::pool", { worker.id = idx }, "replacing worker {idx} in {delay:?}");
            respawn_after = Some((job, delay));
        }
        conns = dispatch::pump(&mut st, shared);
    }
    shared.changed.notify_all();
    flush_all(conns);
    finish_breaking(shared, failures, kill_others);
    for f in cancelled {
        f.cancel_local();
    }
    for w in answers {
        w.answer(true);
    }
    if let Some((job, delay)) = respawn_after {
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        shared.stats.respawned();
        let sent = lock(&shared.spawn_tx)
            .as_ref()
            .map(|tx| tx.send(job).is_ok());
        if sent != Some(true) {
            lock(&shared.state).slots[idx].status = SlotStatus::Dead;
            shared.changed.notify_all();
        }
    }
}

/// Declares the pool broken: queued futures fail with `reason` and every
/// worker is to be killed (by [`finish_breaking`], outside the lock).
pub(super) fn break_pool(
    st: &mut PoolState,
    reason: String,
    failures: &mut Vec<(Arc<dyn ResolveBytes>, TaskError)>,
    kill: &mut Vec<Target>,
) {
    tracing::error!(target: "procpool::pool", "pool broken: {reason}");
    st.broken = Some(reason.clone());
    for batch in st.queue.drain(..) {
        for item in batch.items {
            failures.push((
                item.meta.future,
                TaskError::Broken {
                    reason: reason.clone(),
                },
            ));
        }
    }
    for s in st.slots.iter_mut().filter(|s| s.alive()) {
        if let Some(t) = s.target() {
            s.kill.get_or_insert(KillReason::Broken(reason.clone()));
            kill.push(t);
        }
    }
}

pub(super) fn finish_breaking(
    shared: &Shared,
    failures: Vec<(Arc<dyn ResolveBytes>, TaskError)>,
    kill: Vec<Target>,
) {
    for t in kill {
        t.signal(Signal::SIGKILL);
    }
    for (f, e) in failures {
        shared.stats.record(None);
        f.fail(e);
    }
}
