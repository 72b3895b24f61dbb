//! Stopping the pool (`Shutdown::{Wait, CancelPending, Kill}`): drain or
//! cancel the queue, tell or kill the workers, wait until every slot is
//! dead, stop launcher programs, join the threads. Idempotent. Takes
//! `Shared::state` (waiting on `changed`), then `spawn_tx`, `launched` and
//! `threads`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use procpool_wire::message::ToWorker;

use super::outbox::{flush_all, post_message};
use super::state::{KillReason, Phase, Shared, WorkerSlot};
use crate::Shutdown;
use crate::future::ResolveBytes;
use crate::lock::lock;

/// Stops the pool; see [`Shutdown`]. Idempotent; concurrent callers all
/// return once the pool is stopped.
pub(crate) fn shutdown(shared: &Arc<Shared>, how: Shutdown) {
    let mut cancelled: Vec<Arc<dyn ResolveBytes>> = Vec::new();
    let mut to_kill = Vec::new();
    let conns = {
        let mut st = lock(&shared.state);
        if st.phase == Phase::Stopped {
            return;
        }
        if st.shutting_down {
            while st.phase != Phase::Stopped {
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            return;
        }
        st.shutting_down = true;
        if how == Shutdown::Wait {
            st.phase = Phase::Draining;
            while !(st.idle() || st.broken.is_some() || st.slots.iter().all(|s| !s.alive())) {
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        st.phase = Phase::Stopping;
        for batch in st.queue.drain(..) {
            cancelled.extend(batch.items.into_iter().map(|i| i.meta.future));
        }
        let mut conns = Vec::new();
        for slot in st.slots.iter_mut().filter(|s| s.alive()) {
            match how {
                Shutdown::Kill => {
                    slot.kill.get_or_insert(KillReason::Shutdown);
                    to_kill.extend(slot.target());
                }
                Shutdown::Wait | Shutdown::CancelPending => {
                    if let Some(conn) = &slot.conn {
                        slot.kill.get_or_insert(KillReason::Shutdown);
                        post_message(
                            conn,
                            &ToWorker::Shutdown {
                                drop_pending: how == Shutdown::CancelPending,
                            },
                        );
                        conns.push(conn.clone());
                    }
                }
            }
        }
        conns
    };
    shared.changed.notify_all();
    shared.clock.notify_all();
    for f in cancelled {
        f.cancel_local();
    }
    flush_all(conns);
    for t in to_kill {
        shared.signal(&t, Signal::SIGKILL);
    }
    {
        let mut st = lock(&shared.state);
        while st.slots.iter().any(WorkerSlot::alive) {
            let (g, _) = shared
                .changed
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner());
            st = g;
        }
        st.phase = Phase::Stopped;
    }
    shared.changed.notify_all();
    shared.clock.notify_all();
    lock(&shared.spawn_tx).take();
    stop_launchers(shared);
    if let Some(a) = &shared.attach {
        a.close();
    }
    let me = std::thread::current().id();
    let handles: Vec<_> = lock(&shared.threads).drain(..).collect();
    for h in handles {
        if h.thread().id() != me {
            let _ = h.join();
        }
    }
    tracing::debug!(target: "procpool::pool", "pool stopped");
}

/// Waits (briefly) for launcher programs to end now that their workers
/// are gone, then stops those that do not: SIGTERM (which `srun` and
/// `mpirun` pass to their tasks), then SIGKILL.
fn stop_launchers(shared: &Shared) {
    let settle_for = |d: Duration| {
        let until = Instant::now() + d;
        while !lock(&shared.launched).is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    settle_for(Duration::from_secs(2));
    for sig in [Signal::SIGTERM, Signal::SIGKILL] {
        let pids: Vec<u32> = lock(&shared.launched).iter().map(|&(_, p)| p).collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            tracing::debug!(target: "procpool::pool", "stopping launcher pid {pid} with {sig}");
            shared.procs.signal(pid, sig);
        }
        settle_for(shared.cfg.kill_grace.max(Duration::from_secs(1)));
    }
}
