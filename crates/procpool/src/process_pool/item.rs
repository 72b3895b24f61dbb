//! What travels through the pool's queue: a task's [`Meta`] and payload
//! ([`Item`]), batches of them, and why the queue refused one. No lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use procpool_wire::TaskId;
use procpool_wire::frame::Payload;

use crate::future::ResolveBytes;

/// What the parent knows of a task besides its payload.
pub(crate) struct Meta {
    pub id: TaskId,
    pub name: &'static str,
    pub fingerprint: u64,
    pub input_type: &'static str,
    pub output_type: &'static str,
    pub future: Arc<dyn ResolveBytes>,
    /// When `submit` was called (before encoding).
    pub submitted: Instant,
    pub encode: Duration,
    pub bytes_out: u64,
    pub timeout: Option<Duration>,
    /// Runs left if its worker dies under it.
    pub retries: u32,
}

/// A task waiting in the parent's queue.
pub(crate) struct Item {
    pub meta: Meta,
    pub payload: Payload,
}

/// Tasks that travel together (a `submit` is a batch of one, a `map` chunk
/// a batch of `chunksize`).
pub(crate) struct Batch {
    pub id: u64,
    pub items: Vec<Item>,
}

/// Why the pool refused new work.
pub(crate) enum Refusal {
    Shutdown,
    Broken(String),
}
