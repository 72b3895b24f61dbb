//! Assigning work: the parent's queue ([`enqueue`]) and handing queued
//! batches to workers with room ([`pump`]), whose frames are posted to
//! their outboxes (see `outbox`). Both run under `Shared::state`; the
//! caller flushes the returned connections after releasing it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use procpool_wire::TaskId;
use procpool_wire::message::{TaskHeader, ToWorker, encode_message};

use super::item::{Batch, Item, Refusal};
use super::outbox::{Conn, flush_all};
use super::state::{Assigned, Phase, PoolState, Shared, SlotStatus};
use crate::lock::lock;

/// Adds a batch to the queue and dispatches what it can.
pub(crate) fn enqueue(shared: &Shared, items: Vec<Item>) -> Result<(), Refusal> {
    enqueue_all(shared, vec![items])
}

/// Adds batches to the queue, all or none, and dispatches what it can.
pub(crate) fn enqueue_all(shared: &Shared, batches: Vec<Vec<Item>>) -> Result<(), Refusal> {
    let conns = {
        let mut st = lock(&shared.state);
        if let Some(reason) = &st.broken {
            return Err(Refusal::Broken(reason.clone()));
        }
        if st.phase != Phase::Running {
            return Err(Refusal::Shutdown);
        }
        for items in batches {
            let id = st.next_batch;
            st.next_batch += 1;
            st.queue.push_back(Batch { id, items });
        }
        pump(&mut st, shared)
    };
    flush_all(conns);
    Ok(())
}

/// Assigns queued batches to workers with room, posting their frames.
/// Returns the connections to flush once the lock is released.
pub(crate) fn pump(st: &mut PoolState, shared: &Shared) -> Vec<Arc<Conn>> {
    let mut touched: Vec<Arc<Conn>> = Vec::new();
    if !matches!(st.phase, Phase::Running | Phase::Draining) {
        return touched;
    }
    let cfg = &shared.cfg;
    while !st.queue.is_empty() {
        let Some(idx) = st
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.status == SlotStatus::Ready && s.batches.len() < cfg.prefetch && s.conn.is_some()
            })
            .min_by_key(|(_, s)| s.batches.len())
            .map(|(i, _)| i)
        else {
            break;
        };
        let Some(batch) = st.queue.pop_front() else {
            break;
        };
        let now = Instant::now();
        let slot = &mut st.slots[idx];
        if slot.inflight.is_empty() {
            // Idle until now: its start clock begins here.
            slot.heard = now;
        }
        let mut headers = Vec::with_capacity(batch.items.len());
        let mut payloads = Vec::with_capacity(batch.items.len());
        let mut fds = Vec::new();
        // Tasks, counting each input of a packed chunk.
        let mut tasks = 0u64;
        for item in batch.items {
            tasks += u64::from(item.meta.items.max(1));
            fds.extend(item.meta.files.iter().cloned());
            headers.push(TaskHeader {
                id: item.meta.id,
                name: std::borrow::Cow::Borrowed(item.meta.name),
                fingerprint: item.meta.fingerprint,
                len: item.payload.len() as u32,
                fds: item.meta.files.len() as u32,
                items: item.meta.items,
            });
            payloads.push(item.payload.clone());
            if !item.meta.span.is_disabled() {
                item.meta.span.record("worker.id", idx);
                item.meta.span.record("worker.pid", slot.pid.unwrap_or(0));
            }
            st.seq += 1;
            slot.inflight.insert(
                item.meta.id,
                Assigned {
                    meta: item.meta,
                    payload: item.payload,
                    batch: batch.id,
                    assigned_at: now,
                    started: false,
                    seq: st.seq,
                },
            );
        }
        let ids: VecDeque<TaskId> = headers.iter().map(|h| h.id).collect();
        slot.batches.insert(batch.id, ids);
        slot.taken += tasks;
        if let Some(max) = cfg.max_tasks_per_worker
            && slot.taken >= max
        {
            slot.status = SlotStatus::Retiring;
            tracing::debug!(target: "procpool::pool", { worker.id = idx, worker.pid = slot.pid.unwrap_or(0) },
                "worker took {} tasks (max_tasks_per_worker {max}); recycling", slot.taken);
        }
        let frame = encode_message(&ToWorker::Run { items: headers }, payloads)
            .expect("procpool's own messages always encode")
            .with_fds(fds);
        let conn = slot.conn.clone().expect("a ready slot has a connection");
        conn.post(frame);
        if !touched.iter().any(|c| Arc::ptr_eq(c, &conn)) {
            touched.push(conn);
        }
    }
    touched
}
