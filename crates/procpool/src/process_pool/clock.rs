//! The timeout clock thread: a task past its timeout gets its worker's
//! process group SIGTERM, then SIGKILL after `kill_grace`. Sleeps on
//! `Shared::clock` under `Shared::state` until the next deadline; signals
//! outside the lock.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::state::{KillReason, Phase, Shared};
use crate::lock::lock;

pub(super) fn clock_main(shared: &std::sync::Weak<Shared>) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut term = Vec::new();
        let mut force = Vec::new();
        {
            let mut st = lock(&shared.state);
            if st.phase == Phase::Stopped {
                return;
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
                    continue;
                };
                let Some(limit) = slot.inflight.get(&id).and_then(|a| a.meta.timeout) else {
                    continue;
                };
                let deadline = since + limit;
                if now >= deadline && slot.kill.is_none() {
                    slot.kill = Some(KillReason::TimedOut { id, after: limit });
                    slot.kill_at = Some(now + grace);
                    next = Some(next.map_or(now + grace, |n| n.min(now + grace)));
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
}
