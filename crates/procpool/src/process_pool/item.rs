//! What travels through the pool's queue: a task's [`Meta`] and payload
//! ([`Item`]), batches of them, and why the queue refused one. No lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use procpool_wire::TaskId;
use procpool_wire::bulk::BulkSource;
use procpool_wire::fds::SendFd;
use procpool_wire::frame::Payload;

use crate::future::ResolveBytes;

/// What the parent knows of a task besides its payload. Written once by
/// `submit` (`ProcessPool::prepare`); only `retries` changes after (by
/// `settle`, under `Shared::state`, when the task is retried).
pub(crate) struct Meta {
    /// The task's id, unique in the pool.
    pub id: TaskId,
    /// `Task::NAME`: what the worker's registry runs.
    pub name: &'static str,
    /// The task type's fingerprint (input and output types), checked by
    /// the worker.
    pub fingerprint: u64,
    /// The input's Rust type, for error messages.
    pub input_type: &'static str,
    /// The output's Rust type, for error messages.
    pub output_type: &'static str,
    /// Its future, resolved (outside the pool lock) with the result.
    pub future: Arc<dyn ResolveBytes>,
    /// When `submit` was called (before encoding).
    pub submitted: Instant,
    /// How long encoding the input took.
    pub encode: Duration,
    /// The encoded input's size.
    pub bytes_out: u64,
    /// Its timeout, if any (read by the clock).
    pub timeout: Option<Duration>,
    /// Runs left if its worker dies under it.
    pub retries: u32,
    /// `0` for one task; `n`: a packed chunk of `n` inputs of a `map`
    /// (its future is a `map::chunk::Part`).
    pub items: u32,
    /// A `map`'s packed chunk, or an input of a chunksize-1 `map`: a
    /// worker may hold more of them than `prefetch`
    /// (`ProcessPoolBuilder::prefetch_time`).
    pub from_map: bool,
    /// The sealed memory files of the input's shared payloads, sent with
    /// its frame (each time it is sent: a retry sends them again).
    pub files: Vec<SendFd>,
    /// The task, if its input has bulk byte strings
    /// (`procpool_wire::bulk`; their places are its `spots`): kept until it
    /// ends, its strings written after its frame straight from it each
    /// time it is sent (`crate::kept`).
    pub bulk: Option<Arc<dyn BulkSource>>,
    /// The task's `tracing` span in the parent (target `procpool::task`,
    /// DEBUG): from submit until its future resolves; `worker.*` recorded
    /// when it is sent, `cost.*` when it finishes. A disabled span costs
    /// nothing.
    pub span: tracing::Span,
}

/// A task waiting in the parent's queue.
pub(crate) struct Item {
    /// See [`Meta`].
    pub meta: Meta,
    /// The encoded input.
    pub payload: Payload,
}

/// Room for one more task's header in a chunk's frame, beyond its payload
/// and name (id, fingerprint, length: at most 9 + 9 + 5 bytes, and the
/// name's length prefix).
const ITEM_ROOM: usize = 32;

/// Room a bulk byte string's place (`Bulk`: two varints) takes in a
/// frame's header, at most.
const BULK_ROOM: usize = 10;

impl Item {
    /// What this task adds to the `Run` frame it goes in, counted against
    /// the frame cap: its payload, name and header, and its bulk byte
    /// strings (they follow the frame and count with it) with their
    /// places.
    pub(crate) fn frame_bytes(&self) -> usize {
        let bulk = self
            .meta
            .bulk
            .as_ref()
            .map_or(0, |b| b.bulk_len() + b.spots().len() * BULK_ROOM);
        self.payload.len() + self.meta.name.len() + ITEM_ROOM + bulk
    }
}

/// Tasks that travel together (a `submit` is a batch of one, a `map` chunk
/// a batch of `chunksize`).
pub(crate) struct Batch {
    /// Unique per batch sent; a worker's `batches` are keyed by it.
    pub id: u64,
    /// In order; sent as one `Run` frame.
    pub items: Vec<Item>,
}

/// Why the pool refused new work.
pub(crate) enum Refusal {
    Shutdown,
    Broken(String),
}
