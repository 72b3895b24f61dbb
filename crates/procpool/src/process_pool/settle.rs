//! A worker process is gone: settle its tasks (fail, retry or re-queue),
//! count the crash, break the pool past `max_restarts`, and ask for a
//! replacement after a back-off. Takes `Shared::state`, then (after
//! releasing it) `spawn_tx`.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use procpool_wire::Generation;

use super::cancel::CancelWait;
use super::dispatch;
use super::item::{Batch, Item, Meta};
use super::launch::Launcher;
use super::outbox::flush_all;
use super::policy::{Death, Decision, Policy, PoolNow, Streaks, is_crash, jitter};
use super::state::{Assigned, KillReason, Phase, PoolState, Shared, SlotStatus, SpawnJob, Target};
use crate::error::{Exit, Side, TaskError};
use crate::future::{Release, ResolveBytes};
use crate::lock::lock;
use crate::map::chunk::Chunk;

/// The pool's restart policy.
pub(super) fn policy(shared: &Shared) -> Policy {
    Policy {
        max_restarts: shared.cfg.max_restarts,
    }
}

/// A worker process is gone: settle its tasks, count the crash, respawn.
pub(super) fn settle(
    shared: &Arc<Shared>,
    idx: usize,
    generation: Generation,
    pid: Option<u32>,
    exit: Exit,
) {
    let mut out = Resolved::default();
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
        let slot = &mut st.slots[idx];
        let kill = slot.kill.take();
        slot.status = SlotStatus::Dead;
        slot.conn = None;
        slot.pid = None;
        slot.link = None;
        slot.remote = false;
        slot.running = None;
        slot.batches.clear();
        slot.held = 0;
        slot.kill_at = None;
        slot.last_exit = Some(exit);
        let mut held: Vec<Assigned> = slot.inflight.drain().map(|(_, a)| a).collect();
        held.sort_by_key(|a| a.seq);
        let pid_shown = pid.unwrap_or(0);
        let exit = match kill {
            Some(KillReason::Lost) => Exit::Lost,
            _ => exit,
        };
        let gone = Gone {
            idx,
            kill: kill.as_ref(),
            exit,
            pid: pid_shown,
        };
        let had_running = settle_tasks(&mut st, gone, held, &mut out, &shared.next_id);
        let crash = is_crash(kill.as_ref());
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
            tracing::warn!(target: "procpool::pool", { worker.id = idx, worker.pid = pid_shown },
"{cause}");
        } else {
            tracing::debug!(target: "procpool::pool", { worker.id = idx, worker.pid = pid_shown },
"worker exited: {cause}");
        }
        // Spawned workers are replaced in their slot; launched ones by a
        // new launch, whose worker takes any vacant slot.
        let job = match &shared.cfg.launcher {
            Launcher::Spawn => Some(SpawnJob::Worker(idx)),
            #[cfg(feature = "remote")]
            Launcher::Command(_) => Some(SpawnJob::Launch {
                workers: 1,
                first: false,
            }),
            #[cfg(feature = "remote")]
            _ => None,
        };
        let death = Death {
            slot: idx,
            crash,
            finished: st.slots[idx].finished,
            cause,
        };
        let now = PoolNow {
            building: st.building,
            broken: st.broken.is_some(),
            wants_workers: match st.phase {
                Phase::Running => true,
                Phase::Draining => !st.queue.is_empty(),
                Phase::Stopping | Phase::Stopped => false,
            },
            replaceable: job.is_some(),
        };
        let st = &mut *st;
        let streaks = Streaks {
            pool: &mut st.crash_streak,
            slot: &mut st.slots[idx].failures,
        };
        match policy(shared).after_death(&death, streaks, now, jitter()) {
            Decision::Broken { reason } => {
                break_pool(st, reason, &mut out.failures, &mut kill_others);
            }
            Decision::Restart { after } => {
                if let Some(job) = job {
                    if matches!(job, SpawnJob::Worker(_)) {
                        st.slots[idx].status = SlotStatus::Starting;
                    }
                    tracing::info!(target: "procpool::pool", { worker.id = idx }, "replacing worker {idx} in {after:?}");
                    respawn_after = Some((job, after));
                }
            }
            Decision::Leave => {}
        }
        conns = dispatch::pump(st, shared);
    }
    shared.changed.notify_all();
    flush_all(conns);
    finish_breaking(shared, out.failures, kill_others);
    for r in out.cancelled {
        r.run();
    }
    for w in out.answers {
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
    for future in st.queue.drain_futures() {
        failures.push((
            future,
            TaskError::Broken {
                reason: reason.clone(),
            },
        ));
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
        shared.signal(&t, Signal::SIGKILL);
    }
    for (f, e) in failures {
        shared.stats.record(None);
        f.fail(e);
    }
}

/// Futures to resolve once the pool lock is released.
#[derive(Default)]
struct Resolved {
    failures: Vec<(Arc<dyn ResolveBytes>, TaskError)>,
    /// Cancelled under the lock (so a racing `cancel()` sees it),
    /// released after it.
    cancelled: Vec<Release>,
    /// `cancel()` calls to answer "withdrawn".
    answers: Vec<Arc<CancelWait>>,
}

/// Decides the fate of each task a dead worker held (`held`, in the order
/// they were assigned): the running one fails (or is retried), prefetched
/// ones go back to the front of the queue in their batches (or are
/// cancelled or failed if the pool is stopping or broken). Returns whether
/// it was running a task.
fn settle_tasks(
    st: &mut PoolState,
    gone: Gone<'_>,
    held: Vec<Assigned>,
    out: &mut Resolved,
    next_id: &std::sync::atomic::AtomicU64,
) -> bool {
    let Gone {
        idx,
        kill,
        exit,
        pid: pid_shown,
    } = gone;
    let stopping = matches!(st.phase, Phase::Stopping | Phase::Stopped);
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
            let err = match kill {
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
            if let Some(chunk) = a.meta.future.as_chunk() {
                // A packed chunk: the inputs it reported stand, the one
                // running fails (below); those after it never began.
                let ran = chunk.ended();
                let rest = (ran + 1).min(chunk.len());
                if rest < chunk.len() {
                    if let Some(r) = &broken_now {
                        chunk.fail_from(rest, TaskError::Broken { reason: r.clone() });
                    } else if stopping {
                        chunk.fail_from(rest, TaskError::Cancelled);
                    } else {
                        let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        requeue.push(Batch {
                            id: u64::MAX / 2 - id,
                            items: vec![rest_of_chunk(&a, chunk, rest, id)],
                        });
                    }
                }
            }
            out.failures.push((a.meta.future, err));
        } else if let Some(w) = st.cancels.remove(&a.meta.id) {
            // A withdrawn-but-unconfirmed task never ran: the cancel stands.
            out.cancelled.extend(a.meta.future.cancel_begin().1);
            out.answers.push(w);
        } else if let Some(r) = &broken_now {
            out.failures
                .push((a.meta.future, TaskError::Broken { reason: r.clone() }));
        } else if stopping {
            out.cancelled.extend(a.meta.future.cancel_begin().1);
        } else if let Some(message) = a.meta.bulk.as_ref().and_then(|b| b.refused()) {
            // Its input encoded differently while its frame was written
            // (which broke the connection): it is not sent again.
            out.failures.push((
                a.meta.future,
                TaskError::Encode {
                    side: Side::Parent,
                    type_name: a.meta.input_type.to_owned(),
                    message,
                },
            ));
        } else {
            let item = Item {
                meta: a.meta,
                payload: a.payload,
            };
            // Keep the batches as they were queued: a single task must
            // not become part of a chunk (a chunk fails as a unit), even
            // if dispatch sent it in one frame with others.
            match requeue.last_mut() {
                Some(Batch { id, items }) if *id == a.queued_as => items.push(item),
                _ => requeue.push(Batch {
                    id: a.queued_as,
                    items: vec![item],
                }),
            }
        }
    }
    for batch in requeue.into_iter().rev() {
        st.queue.push_front(batch);
    }
    had_running
}

/// Which worker died, why, and how.
struct Gone<'a> {
    idx: usize,
    kill: Option<&'a KillReason>,
    exit: Exit,
    /// Its pid, as the errors show it (0: unknown).
    pid: u32,
}

/// The inputs of a packed chunk from `from` on, as a new chunk (task
/// `id`) for the queue; the old part is cut before them.
fn rest_of_chunk(a: &Assigned, chunk: &dyn Chunk, from: usize, id: u64) -> Item {
    let ranges = procpool_wire::message::unpack_inputs(&a.payload, a.meta.items)
        .expect("the pool packed this chunk itself");
    let mut payload = Vec::new();
    for r in &ranges[from..] {
        procpool_wire::message::pack_input(&mut payload, &a.payload[r.clone()]);
    }
    let n = (ranges.len() - from) as u32;
    let m = &a.meta;
    Item {
        meta: Meta {
            id,
            name: m.name,
            fingerprint: m.fingerprint,
            input_type: m.input_type,
            output_type: m.output_type,
            future: chunk.split(from, id),
            submitted: m.submitted,
            encode: m.encode,
            bytes_out: payload.len() as u64,
            timeout: m.timeout,
            retries: m.retries,
            items: n,
            from_map: true,
            files: Vec::new(),
            bulk: None,
            span: m.span.clone(),
        },
        payload: Arc::new(payload),
    }
}

#[cfg(test)]
mod tests {
    //! Settling deaths against a fake [`Processes`]: no process is started,
    //! killed or reaped; the fake records the signals, and the spawner's
    //! channel shows the replacements asked for.

    use std::io;
    use std::process::Child;
    use std::sync::{Mutex, mpsc};

    use super::*;
    use crate::process_pool::builder::Config;
    use crate::process_pool::procs::Processes;
    use crate::process_pool::spawn::{DialBack, Spawned};
    use crate::{ProcessPool, WorkerCommand};

    #[derive(Default)]
    struct Fake {
        signals: Mutex<Vec<(u32, Signal)>>,
    }

    impl Processes for Fake {
        fn spawn(&self, _: &Config, _: usize, _: Option<DialBack>) -> io::Result<Spawned> {
            Err(io::Error::other("the fake starts nothing"))
        }
        fn signal(&self, pid: u32, sig: Signal) {
            lock(&self.signals).push((pid, sig));
        }
        fn wait(&self, _: &mut Child) -> Exit {
            Exit::Unknown
        }
    }

    struct Pool {
        shared: Arc<Shared>,
        fake: Arc<Fake>,
        spawns: mpsc::Receiver<SpawnJob>,
    }

    const PID: u32 = 4000;

    impl Pool {
        /// A built pool of `workers` ready slots (pids 4000, 4001, …).
        fn new(workers: usize, max_restarts: u32) -> Pool {
            let cfg = ProcessPool::builder()
                .worker(WorkerCommand::program("/bin/sh"))
                .workers(workers)
                .max_restarts(max_restarts)
                .config()
                .expect("valid settings");
            let fake = Arc::new(Fake::default());
            #[cfg(feature = "remote")]
            let shared = Shared::new(cfg, None, true, false, fake.clone());
            #[cfg(not(feature = "remote"))]
            let shared = Shared::new(cfg, true, false, fake.clone());
            let (tx, spawns) = mpsc::channel();
            *lock(&shared.spawn_tx) = Some(tx);
            let pool = Pool {
                shared,
                fake,
                spawns,
            };
            for i in 0..workers {
                pool.ready(i);
            }
            pool
        }

        /// What the spawner and life thread do for a new process in slot `i`.
        fn ready(&self, i: usize) {
            let mut st = lock(&self.shared.state);
            st.claim_slot(i);
            st.slots[i].status = SlotStatus::Ready;
            st.slots[i].pid = Some(PID + i as u32);
        }

        /// Slot `i`'s process dies (killed by signal 9); the waiter settles.
        fn dies(&self, i: usize, kill: Option<KillReason>) {
            let generation = {
                let mut st = lock(&self.shared.state);
                st.slots[i].kill = kill;
                st.slots[i].generation
            };
            settle(
                &self.shared,
                i,
                generation,
                Some(PID + i as u32),
                Exit::Signal(9),
            );
        }

        fn respawned(&self) -> Option<usize> {
            match self.spawns.try_recv() {
                Ok(SpawnJob::Worker(i)) => Some(i),
                _ => None,
            }
        }
    }

    #[test]
    fn a_crashed_worker_is_replaced_in_its_slot() {
        let p = Pool::new(2, 5);
        p.dies(1, None);
        assert_eq!(p.respawned(), Some(1));
        let st = lock(&p.shared.state);
        assert_eq!(st.slots[1].status, SlotStatus::Starting);
        assert_eq!(st.slots[1].last_exit, Some(Exit::Signal(9)));
        assert_eq!((st.crash_streak, st.slots[1].failures), (1, 1));
        assert!(st.broken.is_none());
    }

    #[test]
    fn crashes_past_max_restarts_break_the_pool_and_kill_the_others() {
        let p = Pool::new(2, 2);
        for _ in 0..2 {
            p.dies(0, None);
            assert_eq!(p.respawned(), Some(0));
            p.ready(0);
        }
        p.dies(0, None);
        assert_eq!(p.respawned(), None, "a broken pool replaces no one");
        let reason = lock(&p.shared.state).broken.clone().expect("broken");
        assert!(reason.contains("max_restarts is 2"), "{reason}");
        assert!(reason.contains("worker 0 (pid 4000)"), "{reason}");
        assert_eq!(*lock(&p.fake.signals), vec![(PID + 1, Signal::SIGKILL)]);
    }

    #[test]
    fn deaths_the_pool_caused_do_not_count_as_crashes() {
        let p = Pool::new(1, 0);
        for kill in [KillReason::Retire, KillReason::Killed { id: 7 }] {
            p.dies(0, Some(kill));
            assert_eq!(p.respawned(), Some(0));
            p.ready(0);
        }
        let st = lock(&p.shared.state);
        assert!(st.broken.is_none(), "{:?}", st.broken);
        assert_eq!(st.crash_streak, 0);
        assert!(lock(&p.fake.signals).is_empty());
    }

    #[test]
    fn a_stopping_pool_replaces_no_one() {
        let p = Pool::new(1, 5);
        lock(&p.shared.state).phase = Phase::Stopping;
        p.dies(0, Some(KillReason::Shutdown));
        assert_eq!(p.respawned(), None);
        assert_eq!(lock(&p.shared.state).slots[0].status, SlotStatus::Dead);
    }
}
