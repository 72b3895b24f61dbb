//! The panic guard around every supervisor thread's body: a panic there (a
//! bug in procpool) breaks the pool and fails every future instead of
//! leaving one pending. Takes `Shared::state`.

use std::sync::Arc;

use nix::sys::signal::Signal;

use super::cancel::CancelWait;
use super::state::{KillReason, Shared, SlotStatus};
use crate::error::TaskError;
use crate::future::ResolveBytes;
use crate::lock::lock;

/// Runs a supervisor thread's body. A panic there (a bug in procpool) must
/// not leave a future pending: the pool is declared broken, every queued
/// and in-flight future fails, and the workers are killed. `dead_slot` is
/// the slot whose settling the panic interrupted. The thread is marked as
/// the pool's own: callbacks of futures it completes run on the pool's
/// callback thread.
pub(super) fn guarded(
    shared: &Arc<Shared>,
    what: &str,
    dead_slot: Option<usize>,
    body: impl FnOnce(),
) {
    // A pool thread never runs user callbacks itself (see `callbacks.rs`).
    crate::callbacks::defer_here(&shared.callbacks);
    let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) else {
        return;
    };
    let reason = format!(
        "internal error: the {what} thread panicked ({}); please report this",
        procpool_wire::codec::panic_message(&*p)
    );
    tracing::error!(target: "procpool::pool", "{reason}");
    let mut futures: Vec<Arc<dyn ResolveBytes>> = Vec::new();
    let mut pids = Vec::new();
    let answers: Vec<Arc<CancelWait>>;
    {
        let mut st = lock(&shared.state);
        st.broken.get_or_insert_with(|| reason.clone());
        futures.extend(st.queue.drain_futures());
        for (i, s) in st.slots.iter_mut().enumerate() {
            futures.extend(s.inflight.drain().map(|(_, a)| a.meta.future));
            s.batches.clear();
            s.held = 0;
            s.running = None;
            if let Some(t) = s.target() {
                s.kill.get_or_insert(KillReason::Broken(reason.clone()));
                pids.push(t);
            }
            if Some(i) == dead_slot || (s.pid.is_none() && s.status == SlotStatus::Starting) {
                s.status = SlotStatus::Dead;
                s.pid = None;
                s.conn = None;
            }
        }
        answers = st.cancels.drain().map(|(_, w)| w).collect();
    }
    shared.changed.notify_all();
    for t in pids {
        shared.signal(&t, Signal::SIGKILL);
    }
    for f in futures {
        f.fail(TaskError::Broken {
            reason: reason.clone(),
        });
    }
    for w in answers {
        w.answer(false);
    }
}
