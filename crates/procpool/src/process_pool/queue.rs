//! The parent's queue of batches not yet sent to a worker, indexed by task
//! id so that `cancel()` of one task costs the same with 50 or 50,000
//! queued (issue 13: it was a scan of the whole queue under the pool lock).
//! Lives in `PoolState`, under `Shared::state`.
//!
//! A withdrawn task leaves its index at once; its item stays in its batch
//! as a tombstone until the batch leaves the queue (then it is dropped) or
//! until tombstones outnumber live tasks (then they are swept, so the
//! memory they hold stays bounded).

use std::collections::VecDeque;
use std::sync::Arc;

use procpool_wire::TaskId;

use super::item::{Batch, Item};
use crate::future::ResolveBytes;
use crate::idmap::IdMap;

/// Whether a task queued alone may share a frame with others
/// (`dispatch::gather`): one plain task, not a packed chunk, with no
/// memory files (a `sendmsg` carries only so many) and no bulk byte strings
/// (they count toward the frame cap, and a frame of one is as good).
pub(crate) fn mergeable(item: &Item) -> bool {
    item.meta.items == 0 && item.meta.files.is_empty() && item.meta.bulk.is_none()
}

/// Batches in send order, and the tasks in them not withdrawn.
#[derive(Default)]
pub(crate) struct TaskQueue {
    batches: VecDeque<Batch>,
    /// The queued tasks that will be sent (not withdrawn), with their
    /// futures. An item of `batches` whose id is not here is a tombstone.
    live: IdMap<TaskId, Arc<dyn ResolveBytes>>,
    /// Tombstones still in `batches`.
    dead: usize,
}

impl TaskQueue {
    /// No task waits to be sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn index(&mut self, batch: &Batch) {
        for item in &batch.items {
            self.live.insert(item.meta.id, item.meta.future.clone());
        }
    }

    /// Queues a batch last.
    pub(crate) fn push_back(&mut self, batch: Batch) {
        self.index(&batch);
        self.batches.push_back(batch);
    }

    /// Queues a batch first (a dead worker's tasks, a retry).
    pub(crate) fn push_front(&mut self, batch: Batch) {
        self.index(&batch);
        self.batches.push_front(batch);
    }

    /// If the next batch to send is a `map`'s packed chunk or
    /// chunksize-1 input: its task's fingerprint and its inputs (0: one).
    pub(crate) fn map_front(&self) -> Option<(u64, u32)> {
        self.batches
            .iter()
            .flat_map(|b| &b.items)
            .find(|i| self.live.contains_key(&i.meta.id))
            .filter(|i| i.meta.from_map)
            .map(|i| (i.meta.fingerprint, i.meta.items))
    }

    /// The next batch to send, without its withdrawn tasks.
    pub(crate) fn pop_front(&mut self) -> Option<Batch> {
        while let Some(mut batch) = self.batches.pop_front() {
            let before = batch.items.len();
            batch
                .items
                .retain(|i| self.live.remove(&i.meta.id).is_some());
            self.dead -= before - batch.items.len();
            if !batch.items.is_empty() {
                return Some(batch);
            }
        }
        None
    }

    /// The next batch to send if it is one task that may share a frame
    /// ([`mergeable`]) and `fits`, without tombstones; `None`
    /// (and the queue as it was, less its tombstones at the front)
    /// otherwise.
    pub(crate) fn pop_front_single(&mut self, fits: impl Fn(&Item) -> bool) -> Option<Batch> {
        loop {
            let batch = self.batches.front_mut()?;
            let before = batch.items.len();
            let live = &self.live;
            batch.items.retain(|i| live.contains_key(&i.meta.id));
            self.dead -= before - batch.items.len();
            match batch.items.as_slice() {
                [] => {
                    self.batches.pop_front();
                }
                [one] if mergeable(one) && fits(one) => {
                    self.live.remove(&one.meta.id);
                    return self.batches.pop_front();
                }
                _ => return None,
            }
        }
    }

    /// Takes task `id` out of the queue, if it is there: it will never be
    /// sent. Hands back its future.
    pub(crate) fn withdraw(&mut self, id: TaskId) -> Option<Arc<dyn ResolveBytes>> {
        let f = self.live.remove(&id)?;
        self.dead += 1;
        if self.dead > 1024 && self.dead > self.live.len() {
            self.sweep();
        }
        Some(f)
    }

    /// Drops every tombstone (linear, amortised over the withdrawals that
    /// made them).
    fn sweep(&mut self) {
        let live = &self.live;
        for b in self.batches.iter_mut() {
            b.items.retain(|i| live.contains_key(&i.meta.id));
        }
        self.batches.retain(|b| !b.items.is_empty());
        self.dead = 0;
    }

    /// Empties the queue; hands back the futures of the tasks that were to
    /// be sent, in queue order.
    pub(crate) fn drain_futures(&mut self) -> Vec<Arc<dyn ResolveBytes>> {
        let mut out = Vec::with_capacity(self.live.len());
        for batch in self.batches.drain(..) {
            for item in batch.items {
                if let Some(f) = self.live.remove(&item.meta.id) {
                    out.push(f);
                }
            }
        }
        self.dead = 0;
        out
    }
}
