//! Stopping the pool (`Shutdown::{Wait, CancelPending, Kill}`): drain or
//! cancel the queue, tell or kill the workers, wait until every slot is
//! dead, stop launcher programs, join the threads. Idempotent. Takes
//! `Shared::state` (waiting on `changed`), then `spawn_tx`, `launched` and
//! `threads`.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use procpool_wire::message::ToWorker;

use super::outbox::{Conn, flush_all, post_message};
use super::state::{KillReason, Phase, PoolState, Shared, Target, WorkerSlot};
use crate::Shutdown;
use crate::future::ResolveBytes;
use crate::lock::lock;

/// How strong a mode is: a stronger `shutdown` takes over a weaker one
/// in progress.
fn strength(how: Shutdown) -> u8 {
    match how {
        Shutdown::Wait => 0,
        Shutdown::CancelPending => 1,
        Shutdown::Kill => 2,
    }
}

/// Stops the pool; see [`Shutdown`]. Idempotent; concurrent callers all
/// return once the pool is stopped, and a stronger mode than the one in
/// progress takes over at once (`Kill` during a `Wait` kills now).
pub(crate) fn shutdown(shared: &Arc<Shared>, how: Shutdown) {
    let mut cancelled: Vec<Arc<dyn ResolveBytes>> = Vec::new();
    let mut to_kill = Vec::new();
    let conns = {
        let mut st = lock(&shared.state);
        if st.phase == Phase::Stopped {
            return;
        }
        if let Some(current) = st.stop_mode {
            if strength(how) > strength(current) {
                st.stop_mode = Some(how);
                // Past draining, the first caller has already acted on
                // its mode: do what the stronger one adds here.
                let conns = if st.phase == Phase::Stopping {
                    stop_workers(&mut st, how, &mut cancelled, &mut to_kill)
                } else {
                    Vec::new() // draining: the first caller wakes and takes over
                };
                drop(st);
                shared.changed.notify_all();
                finish_stopping_calls(shared, cancelled, conns, to_kill);
                st = lock(&shared.state);
            }
            while st.phase != Phase::Stopped {
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            return;
        }
        st.stop_mode = Some(how);
        if how == Shutdown::Wait {
            st.phase = Phase::Draining;
            while !(st.idle()
                || st.broken.is_some()
                || st.slots.iter().all(|s| !s.alive())
                || st.stop_mode != Some(Shutdown::Wait))
            {
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        let how = st.stop_mode.unwrap_or(how);
        st.phase = Phase::Stopping;
        stop_workers(&mut st, how, &mut cancelled, &mut to_kill)
    };
    shared.changed.notify_all();
    shared.clock.notify_all();
    finish_stopping_calls(shared, cancelled, conns, to_kill);
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
    #[cfg(feature = "remote")]
    {
        stop_launchers(shared);
        if let Some(a) = &shared.attach {
            a.close();
        }
    }
    let me = std::thread::current().id();
    let handles: Vec<_> = lock(&shared.threads).drain(..).collect();
    for h in handles {
        if h.thread().id() != me {
            let _ = h.join();
        }
    }
    // Callbacks still queued run now; wait for them (unless this is a
    // callback on that thread).
    shared.callbacks.close();
    tracing::debug!(target: "procpool::pool", "pool stopped");
}

/// Under the lock, with the phase `Stopping`: takes the queue out (its
/// futures to cancel) and tells every live worker to stop (`Kill`: its
/// target to SIGKILL; otherwise a `Shutdown` message, whose connections
/// are returned to flush).
fn stop_workers(
    st: &mut PoolState,
    how: Shutdown,
    cancelled: &mut Vec<Arc<dyn ResolveBytes>>,
    to_kill: &mut Vec<Target>,
) -> Vec<Arc<Conn>> {
    cancelled.extend(st.queue.drain_futures());
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
}

/// Outside the lock: what [`stop_workers`] decided.
fn finish_stopping_calls(
    shared: &Shared,
    cancelled: Vec<Arc<dyn ResolveBytes>>,
    conns: Vec<Arc<Conn>>,
    to_kill: Vec<Target>,
) {
    for f in cancelled {
        f.cancel_local();
    }
    flush_all(conns);
    for t in to_kill {
        shared.signal(&t, Signal::SIGKILL);
    }
}

/// Waits (briefly) for launcher programs to end now that their workers
/// are gone, then stops those that do not: SIGTERM (which `srun` and
/// `mpirun` pass to their tasks), then SIGKILL.
#[cfg(feature = "remote")]
fn stop_launchers(shared: &Shared) {
    let settle_for = |d: Duration| {
        let until = crate::deadline::after(d);
        while !lock(&shared.launched).is_empty() && !crate::deadline::passed(until) {
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
