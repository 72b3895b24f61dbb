//! The parent's writing end of one worker connection ([`Conn`]).
//!
//! # Writing without a dispatcher thread
//!
//! Work is assigned under the pool lock (so assignment order is frame
//! order), and each assignment's frame is *posted* to the worker's
//! [`Conn`] outbox. After the lock is released, whoever posted calls
//! [`Conn::flush`]: the first thread to get the write lock writes every
//! posted frame in one vectored write; others return at once. No thread hop
//! between `submit` and the socket, and frames queued together leave
//! together.
//!
//! Locks: `Conn::outbox` (taken under `Shared::state` to post, and alone
//! to take the frames), `Conn::writing` (held across the write; the outbox
//! is taken briefly inside it). Order: state → writing → outbox.

use std::sync::{Arc, Mutex, TryLockError};

use procpool_wire::frame::{Outgoing, Payload, write_all_frames_fds};
use procpool_wire::message::{ToWorker, encode_message};

use crate::link::stream::Stream;
use crate::lock::lock;

/// The parent's end of one worker's socket, for writing.
pub(crate) struct Conn {
    /// The socket (a clone of the reader's). Written only under `writing`.
    pub stream: Stream,
    /// Frames posted and not yet written. Pushed under `Shared::state` (so
    /// order is assignment order), taken by whoever holds `writing`.
    outbox: Mutex<Vec<Outgoing>>,
    /// Held by the one thread writing to `stream`.
    writing: Mutex<()>,
}

impl Conn {
    pub(crate) fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            outbox: Mutex::new(Vec::new()),
            writing: Mutex::new(()),
        }
    }

    /// Queues a frame; call under the pool lock to keep assignment order.
    pub(crate) fn post(&self, frame: Outgoing) {
        lock(&self.outbox).push(frame);
    }

    /// Writes everything posted, unless another thread is already writing
    /// (it then writes ours too: it re-checks the outbox after releasing
    /// the write lock). A failed write shuts the socket; the worker's
    /// supervisor notices.
    pub(crate) fn flush(&self) {
        loop {
            let guard = match self.writing.try_lock() {
                Ok(g) => g,
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
            };
            loop {
                let frames = std::mem::take(&mut *lock(&self.outbox));
                if frames.is_empty() {
                    break;
                }
                if let Err(e) = write_all_frames_fds(&mut &self.stream, &frames) {
                    tracing::debug!(target: "procpool::wire", "write to worker failed: {e}");
                    self.stream.shutdown();
                    lock(&self.outbox).clear();
                    return;
                }
            }
            drop(guard);
            if lock(&self.outbox).is_empty() {
                return;
            }
        }
    }
}

pub(crate) fn flush_all(conns: Vec<Arc<Conn>>) {
    for c in conns {
        c.flush();
    }
}

/// Posts a bare message (no payload) to a connection.
pub(crate) fn post_message(conn: &Conn, msg: &ToWorker) {
    conn.post(
        encode_message(msg, Vec::<Payload>::new()).expect("procpool's own messages always encode"),
    );
}
