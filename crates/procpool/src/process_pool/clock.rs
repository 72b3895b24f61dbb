//! The timeout clock thread: a task past its timeout gets its worker's
//! process group SIGTERM, then SIGKILL after `kill_grace`; a worker that
//! holds tasks, runs none and has said nothing for `start_timeout` is hung
//! (a task's own timeout starts only when it begins, so without this a
//! silent worker would keep its prefetched futures pending for ever): it
//! is killed at once and the tasks it had not begun go to other workers.
//! Sleeps on `Shared::clock` under `Shared::state` until the next
//! deadline; signals outside the lock.
//! A limit too large for the clock (`Duration::MAX`) is no limit; the
//! thread runs under the panic guard like the others.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::guard::guarded;
use super::state::{KillReason, Phase, Shared};
use crate::lock::lock;

pub(super) fn clock_main(weak: &Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        // A panic here (a bug) breaks the pool rather than silently ending
        // every task timeout.
        let mut go_on = false;
        guarded(&shared, "clock", None, || go_on = tick(&shared));
        if !go_on {
            return;
        }
    }
}

/// One round: signals what is due, or sleeps until the next deadline.
/// `false` once the pool has stopped.
fn tick(shared: &Arc<Shared>) -> bool {
    {
        let mut term = Vec::new();
        let mut force = Vec::new();
        {
            let mut st = lock(&shared.state);
            if st.phase == Phase::Stopped {
                return false;
            }
            let now = Instant::now();
            let grace = shared.cfg.kill_grace;
            let mut next: Option<Instant> = None;
            for slot in st.slots.iter_mut() {
                if slot.pid.is_none() {
                    continue;
                }
                if let Some(at) = slot.kill_at {
                    if now >= at {
                        force.extend(slot.target());
                        slot.kill_at = None;
                    } else {
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                    continue;
                }
                let Some((id, since)) = slot.running else {
                    // Holding tasks and running none: it must begin one.
                    let limit = shared.cfg.start_timeout;
                    let Some(deadline) = crate::deadline::from(slot.heard, limit) else {
                        continue; // no limit (Duration::MAX)
                    };
                    let holds = !slot.inflight.is_empty() && slot.kill.is_none();
                    if holds && now >= deadline {
                        tracing::warn!(target: "procpool::pool", { worker.pid = slot.pid.unwrap_or(0) },
                            "a worker holding {} tasks began none within {limit:?} (start_timeout); killing it",
                            slot.inflight.len());
                        slot.kill = Some(KillReason::Protocol(format!(
                            "the worker took tasks and began none within {limit:?} (start_timeout)"
                        )));
                        force.extend(slot.target());
                    } else if holds {
                        next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    }
                    continue;
                };
                let Some(limit) = slot.inflight.get(&id).and_then(|a| a.meta.timeout) else {
                    continue;
                };
                // `Duration::MAX` (or any limit past the clock's end): none.
                let Some(deadline) = crate::deadline::from(since, limit) else {
                    continue;
                };
                if now >= deadline && still_timed(slot.kill.as_ref()) {
                    slot.kill = Some(KillReason::TimedOut { id, after: limit });
                    // `kill_grace(Duration::MAX)`: SIGTERM only, no SIGKILL.
                    slot.kill_at = crate::deadline::from(now, grace);
                    if let Some(at) = slot.kill_at {
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                    term.extend(slot.target());
                } else if now < deadline {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                }
            }
            if term.is_empty() && force.is_empty() {
                let dur = next
                    .map(|n| n.saturating_duration_since(now))
                    .unwrap_or(Duration::from_secs(1));
                // Woken early (a timed task began, shutdown) or not: the
                // loop looks again either way.
                drop(
                    shared
                        .clock
                        .wait_timeout(st, dur.max(Duration::from_millis(1)))
                        .unwrap_or_else(|p| p.into_inner()),
                );
            }
        }
        for t in term {
            tracing::warn!(target: "procpool::pool", "task timed out; terminating its worker");
            shared.signal(&t, Signal::SIGTERM);
        }
        for t in force {
            shared.signal(&t, Signal::SIGKILL);
        }
    }
    true
}

/// Whether a slot's running task is still held to its timeout, given why
/// the slot is being stopped: yes if it is not, or only asked to stop
/// after its task (a graceful shutdown, retiring); a task that hangs then
/// would otherwise hold the shutdown forever. No if it is already being
/// killed for another reason.
fn still_timed(kill: Option<&KillReason>) -> bool {
    matches!(kill, None | Some(KillReason::Shutdown | KillReason::Retire))
}
