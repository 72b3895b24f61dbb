//! Adopting a worker that dialed in and passed the handshake: a vacant
//! slot, then the same life as a spawned worker until its connection
//! closes. Takes `Shared::state`.

use std::sync::Arc;

use super::attach::Dialed;
use super::guard::guarded;
use super::life::life_main;
use super::settle::settle;
use super::state::{Phase, Shared, SlotStatus};
use crate::error::Exit;
use crate::link::handshake::reject;
use crate::lock::lock;

/// Gives a worker that dialed in (and passed the handshake) a vacant slot,
/// then serves it like a spawned one until its connection closes.
pub(crate) fn adopt(shared: &Arc<Shared>, dialed: Dialed) {
    let Dialed {
        stream,
        proven,
        hello,
        local_pid,
    } = dialed;
    let pid = local_pid.unwrap_or(hello.pid);
    let who = format!("pid {} on {}", hello.pid, hello.host_for_log());
    let link = stream.try_clone().ok();
    let claimed = {
        let mut st = lock(&shared.state);
        if st.phase != Phase::Running || st.broken.is_some() {
            Err("the pool is not accepting workers (shut down or broken)")
        } else if let Some(idx) = st.slots.iter().position(|s| s.status == SlotStatus::Dead) {
            if let Some(rec) = st.launches.get_mut(&hello.ticket) {
                rec.joined += 1;
            }
            let g = st.claim_slot(idx);
            let slot = &mut st.slots[idx];
            slot.pid = Some(pid);
            slot.remote = local_pid.is_none();
            slot.link = link;
            Ok((idx, g))
        } else {
            Err("the pool is full (every worker slot is taken)")
        }
    };
    let (idx, generation) = match claimed {
        Ok(pair) => pair,
        Err(reason) => {
            tracing::warn!(target: "procpool::pool", "attach: refused {who}: {reason}");
            reject(&stream, reason);
            return;
        }
    };
    tracing::info!(target: "procpool::pool", { worker.id = idx, worker.pid = pid }, "worker joined: {who}");
    let s = shared.clone();
    guarded(shared, "attached worker", Some(idx), move || {
        life_main(
            &s,
            idx,
            generation,
            stream,
            pid,
            Some((proven, hello)),
            None,
        );
    });
    // No waiter for a process we did not start: its connection closing is
    // its death.
    settle(shared, idx, generation, Some(pid), Exit::Unknown);
}
