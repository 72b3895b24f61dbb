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
    let now = Instant::now();
    while !st.queue.is_empty() {
        let next = st.queue.map_front();
        let Some((idx, limit)) = st
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.status == SlotStatus::Ready && s.conn.is_some())
            .map(|(i, s)| (i, s.held, s.limit(cfg, next, now)))
            .filter(|&(_, held, limit)| held < limit)
            .min_by_key(|&(_, held, _)| held)
            .map(|(i, _, limit)| (i, limit))
        else {
            break;
        };
        let Some(first) = st.queue.pop_front() else {
            break;
        };
        let (batch, items) = gather(st, idx, cfg, limit, first);
        let slot = &mut st.slots[idx];
        if slot.inflight.is_empty() {
            // Idle until now: its start clock begins here.
            slot.heard = now;
        }
        slot.held += if items.len() > 1 && items[0].0 != batch {
            items.len()
        } else {
            1
        };
        st.most_held = st.most_held.max(slot.held);
        let mut headers = Vec::with_capacity(items.len());
        let mut payloads = Vec::with_capacity(items.len());
        let mut fds = Vec::new();
        let mut bulk = Vec::new();
        // Tasks, counting each input of a packed chunk.
        let mut tasks = 0u64;
        for (queued_as, item) in items {
            tasks += u64::from(item.meta.items.max(1));
            fds.extend(item.meta.files.iter().cloned());
            bulk.extend(item.meta.bulk.iter().cloned());
            headers.push(TaskHeader {
                id: item.meta.id,
                name: std::borrow::Cow::Borrowed(item.meta.name),
                fingerprint: item.meta.fingerprint,
                len: item.payload.len() as u32,
                fds: item.meta.files.len() as u32,
                bulk: item
                    .meta
                    .bulk
                    .as_ref()
                    .map_or_else(Vec::new, |b| b.spots().to_vec()),
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
                    batch,
                    queued_as,
                    assigned_at: now,
                    started: false,
                    seq: st.seq,
                },
            );
        }
        let ids: VecDeque<TaskId> = headers.iter().map(|h| h.id).collect();
        slot.batches.insert(batch, ids);
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
            .with_fds(fds)
            .with_bulk(bulk);
        let conn = slot.conn.clone().expect("a ready slot has a connection");
        conn.post_work(frame);
        if !touched.iter().any(|c| Arc::ptr_eq(c, &conn)) {
            touched.push(conn);
        }
    }
    touched
}

/// The tasks of one `Run` frame for worker `idx`, each with the id of the
/// batch it was queued in, and the frame's batch id: `first` as it was
/// queued, or, if it is one plain task, `first` and the single plain tasks
/// queued right after it, up to the worker's room (`limit` batches, each
/// task counted as if it were sent alone: `prefetch`, or deeper for a
/// `map`'s inputs of the task `first` is, and only those), its
/// `max_tasks_per_worker` and the frame cap. One frame for several tasks
/// wakes the worker's reader once, and the worker runs them back to back;
/// each keeps its own future and goes back to the queue alone if the
/// worker dies (a map with chunksize 1 queues its inputs so: issue 14).
fn gather(
    st: &mut PoolState,
    idx: usize,
    cfg: &super::builder::Config,
    limit: usize,
    first: Batch,
) -> (u64, Vec<(u64, Item)>) {
    let slot = &st.slots[idx];
    // Beyond `prefetch`: only inputs of the same map's task.
    let plain_room = cfg.prefetch.saturating_sub(slot.held);
    let mut room = limit.saturating_sub(slot.held);
    if let Some(max) = cfg.max_tasks_per_worker {
        room = room.min(usize::try_from(max.saturating_sub(slot.taken)).unwrap_or(usize::MAX));
    }
    let single = |b: &Batch| matches!(b.items.as_slice(), [one] if super::queue::mergeable(one));
    if room < 2 || !single(&first) {
        let id = first.id;
        return (id, first.items.into_iter().map(|i| (id, i)).collect());
    }
    let budget = (cfg.max_frame as usize).saturating_sub(super::HEADER_ROOM);
    let cost = Item::frame_bytes;
    let mut used = first.items.iter().map(cost).sum::<usize>();
    // Past `prefetch`, only inputs of `first`'s map task, and only while
    // every task of the frame is one.
    let mut task = first
        .items
        .first()
        .filter(|i| i.meta.from_map)
        .map(|i| i.meta.fingerprint);
    let mut items: Vec<(u64, Item)> = first.items.into_iter().map(|i| (first.id, i)).collect();
    while items.len() < room {
        let plain = items.len() < plain_room;
        let fits = |i: &Item| {
            used + cost(i) <= budget
                && (plain || (i.meta.from_map && Some(i.meta.fingerprint) == task))
        };
        let Some(next) = st.queue.pop_front_single(fits) else {
            break;
        };
        if next.items.iter().any(|i| !i.meta.from_map) {
            task = None;
        }
        used += next.items.iter().map(cost).sum::<usize>();
        let id = next.id;
        items.extend(next.items.into_iter().map(|i| (id, i)));
    }
    if items.len() == 1 {
        return (first.id, items);
    }
    let id = st.next_batch;
    st.next_batch += 1;
    (id, items)
}
