//! `cancel()`, `cancel_many()` and `kill()` of a process-pool future: a
//! task still in the parent's queue is taken out at once; one a worker
//! prefetched is asked back (`Cancel` → `Withdrawn`) under a deadline; a
//! running one is killed with its worker. Takes `Shared::state`, then
//! (released) each [`CancelWait`]'s own lock.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use procpool_wire::TaskId;
use procpool_wire::message::ToWorker;

use super::outbox::{Conn, flush_all, post_message};
use super::state::{KillReason, Shared};
use crate::future::{Control, ResolveBytes};
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

    fn wait(&self, timeout: Duration) -> Option<bool> {
        let g = lock(&self.answer);
        let (g, _) = self
            .cond
            .wait_timeout_while(g, timeout, |a| a.is_none())
            .unwrap_or_else(|p| p.into_inner());
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
    /// in the parent's queue are taken out at once; prefetched ones are
    /// asked back from their workers all together, and the answers are
    /// awaited under one deadline.
    fn cancel_many(&self, ids: &[TaskId]) -> Vec<bool> {
        enum Plan {
            Answer(bool),
            Local(Arc<dyn ResolveBytes>),
            Ask(Arc<CancelWait>),
        }
        let Some(shared) = self.0.upgrade() else {
            return vec![false; ids.len()];
        };
        let mut plans = Vec::with_capacity(ids.len());
        let mut conns: Vec<Arc<Conn>> = Vec::new();
        {
            let mut st = lock(&shared.state);
            // Still in the parent's queue: take them out, so nothing can
            // send them.
            let wanted: HashSet<TaskId> = ids.iter().copied().collect();
            let mut queued: HashMap<TaskId, Arc<dyn ResolveBytes>> = HashMap::new();
            for batch in st.queue.iter_mut() {
                batch.items.retain(|i| {
                    if wanted.contains(&i.meta.id) {
                        queued.insert(i.meta.id, i.meta.future.clone());
                        false
                    } else {
                        true
                    }
                });
            }
            st.queue.retain(|b| !b.items.is_empty());
            for &id in ids {
                if let Some(f) = queued.remove(&id) {
                    plans.push(Plan::Local(f));
                    continue;
                }
                // Prefetched by a worker and not begun: ask for it back.
                let conn = st
                    .slots
                    .iter()
                    .find_map(|s| s.inflight.get(&id).map(|a| (a.started, s.conn.clone())));
                let conn = match conn {
                    Some((false, Some(conn))) if !st.cancels.contains_key(&id) => conn,
                    _ => {
                        plans.push(Plan::Answer(false)); // running, finished, or not ours
                        continue;
                    }
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
        flush_all(conns);
        let deadline = Instant::now() + shared.cfg.cancel_timeout;
        plans
            .into_iter()
            .zip(ids)
            .map(|(plan, &id)| match plan {
                Plan::Answer(a) => a,
                Plan::Local(f) => f.cancel_local(),
                Plan::Ask(wait) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if let Some(answer) = wait.wait(left) {
                        return answer;
                    }
                    if lock(&shared.state).cancels.remove(&id).is_some() {
                        // No answer in time: the task stays with the worker.
                        // A late "withdrawn" re-queues it, so `false` holds.
                        return false;
                    }
                    // The answer is being delivered right now.
                    wait.wait(Duration::from_secs(5)).unwrap_or(false)
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
