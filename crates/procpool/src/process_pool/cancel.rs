//! `cancel()`, `cancel_many()` and `kill()` of a process-pool future: a
//! task still in the parent's queue is taken out at once (by id); one a worker
//! prefetched is asked back (`Cancel` → `Withdrawn`) under a deadline; a
//! running one is killed with its worker. Takes `Shared::state`, then
//! (released) each [`CancelWait`]'s own lock.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use procpool_wire::TaskId;
use procpool_wire::message::ToWorker;

use super::outbox::{Conn, flush_all, post_message};
use super::state::{KillReason, Shared};
use crate::future::Control;
use crate::lock::lock;

/// A pending `cancel()` waiting for the worker's answer.
#[derive(Default)]
pub(crate) struct CancelWait {
    /// The worker's answer (withdrawn or not): written once by the reader's
    /// `Withdrawn` handler or by `settle`, read by the waiting `cancel()`.
    answer: Mutex<Option<bool>>,
    /// Signalled when `answer` is set.
    cond: Condvar,
}

impl CancelWait {
    pub(crate) fn answer(&self, withdrawn: bool) {
        *lock(&self.answer) = Some(withdrawn);
        self.cond.notify_all();
    }

    /// The answer, waiting at most `timeout` (`None`: no limit).
    fn wait(&self, timeout: Option<Duration>) -> Option<bool> {
        let g = lock(&self.answer);
        let g = match timeout {
            Some(t) => {
                self.cond
                    .wait_timeout_while(g, t, |a| a.is_none())
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => self
                .cond
                .wait_while(g, |a| a.is_none())
                .unwrap_or_else(|p| p.into_inner()),
        };
        *g
    }
}

/// `cancel()` for process-pool futures.
pub(crate) struct PoolControl(pub Weak<Shared>);

impl Control for PoolControl {
    fn cancel(&self, id: TaskId) -> bool {
        self.cancel_many(&[id]).first().copied().unwrap_or(false)
    }

    /// Withdraws many tasks with one message round per worker: tasks still
    /// in the parent's queue are taken out at once (found by id, whatever
    /// the queue's length); prefetched ones are asked back from their
    /// workers all together, and the answers are awaited under one
    /// deadline. A task another `cancel()` is already asking back shares
    /// that answer, so concurrent cancels agree (SEMANTICS 30).
    fn cancel_many(&self, ids: &[TaskId]) -> Vec<bool> {
        enum Plan {
            Answer(bool),
            Ask(Arc<CancelWait>),
        }
        let Some(shared) = self.0.upgrade() else {
            return vec![false; ids.len()];
        };
        let mut plans = Vec::with_capacity(ids.len());
        let mut conns: Vec<Arc<Conn>> = Vec::new();
        let mut releases = Vec::new();
        {
            let mut st = lock(&shared.state);
            for &id in ids {
                // Still in the parent's queue: take it out, so nothing can
                // send it, and end its future now (the release runs below,
                // outside the lock), so any later cancel() sees it cancelled.
                if let Some(f) = st.queue.withdraw(id) {
                    let (cancelled, release) = f.cancel_begin();
                    releases.extend(release);
                    plans.push(Plan::Answer(cancelled));
                    continue;
                }
                // Another cancel() is asking for it back: share its answer.
                if let Some(w) = st.cancels.get(&id) {
                    plans.push(Plan::Ask(w.clone()));
                    continue;
                }
                // Prefetched by a worker and not begun: ask for it back.
                let held = st
                    .slots
                    .iter()
                    .find_map(|s| s.inflight.get(&id).map(|a| (a.started, s.conn.clone())));
                let Some((false, Some(conn))) = held else {
                    plans.push(Plan::Answer(false)); // running, finished, or not ours
                    continue;
                };
                let wait = Arc::new(CancelWait::default());
                st.cancels.insert(id, wait.clone());
                post_message(&conn, &ToWorker::Cancel { id });
                if !conns.iter().any(|c| Arc::ptr_eq(c, &conn)) {
                    conns.push(conn);
                }
                plans.push(Plan::Ask(wait));
            }
        }
        shared.changed.notify_all();
        for r in releases {
            r.run();
        }
        flush_all(conns);
        // `cancel_timeout(Duration::MAX)`: no deadline.
        let deadline = crate::deadline::after(shared.cfg.cancel_timeout);
        plans
            .into_iter()
            .zip(ids)
            .map(|(plan, &id)| match plan {
                Plan::Answer(a) => a,
                Plan::Ask(wait) => {
                    if let Some(answer) = wait.wait(crate::deadline::left(deadline)) {
                        return answer;
                    }
                    let gave_up = {
                        let mut st = lock(&shared.state);
                        let ours = st.cancels.get(&id).is_some_and(|w| Arc::ptr_eq(w, &wait));
                        if ours {
                            st.cancels.remove(&id);
                        }
                        ours
                    };
                    if gave_up {
                        // No answer in time: the task stays with the worker
                        // (a late "withdrawn" re-queues it, so `false`
                        // holds); cancels sharing this wait learn it too.
                        wait.answer(false);
                        return false;
                    }
                    // The answer is being delivered right now.
                    wait.wait(Some(Duration::from_secs(5))).unwrap_or(false)
                }
            })
            .collect()
    }

    fn kill(&self, id: TaskId) -> bool {
        let Some(shared) = self.0.upgrade() else {
            return false;
        };
        let mut st = lock(&shared.state);
        let Some(slot) = st.slots.iter_mut().find(|s| s.inflight.contains_key(&id)) else {
            drop(st);
            return self.cancel(id);
        };
        if !slot.inflight[&id].started {
            drop(st);
            return self.cancel(id);
        }
        if slot.kill.is_some() {
            return false; // already being killed (timeout, shutdown)
        }
        let Some(target) = slot.target() else {
            return false;
        };
        slot.kill = Some(KillReason::Killed { id });
        drop(st);
        tracing::debug!(target: "procpool::pool", { task.id = id }, "killing a running task's worker on request");
        shared.signal(&target, nix::sys::signal::Signal::SIGKILL);
        true
    }
}
