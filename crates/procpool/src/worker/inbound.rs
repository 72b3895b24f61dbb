//! The worker's end of the work ring (see `link::ring`): a spawned
//! worker's `Run` frames, put into shared memory by the pool, read by
//! whichever thread holds `WorkerShared::local` — the executor between
//! tasks (so a busy worker is fed without a system call or a wake-up), the
//! reader before it withdraws tasks for a `Cancel` or a `Shutdown` that
//! drops pending work (so it sees every task sent before them). A `Run` frame that had to take the socket
//! (descriptors, bulk strings, a frame too large or a ring too full) has a
//! marker in the ring where it belongs; the reader parks it in
//! [`Inbound::socket_runs`] until the ring reaches that marker, so tasks
//! are queued in exactly the order the pool sent them.
//!
//! Everything here runs under `WorkerShared::local`.

use std::collections::VecDeque;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use procpool_wire::message::{PayloadFds, TaskHeader, ToWorker, decode_message_fds};

use super::shared::Work;
use crate::link::ring;
use crate::stamp::Stamp;

/// A `Run` frame taken apart: its tasks and where their inputs are.
pub(super) struct Run {
    pub items: Vec<TaskHeader>,
    /// The frame; task `i`'s input is `frame[ranges[i]]`.
    pub frame: Arc<Vec<u8>>,
    pub ranges: Vec<Range<usize>>,
    /// Each task's descriptors (shared payloads).
    pub fds: Vec<Vec<OwnedFd>>,
    /// The bulk byte strings read after the frame, every task's in turn.
    pub bulk: Vec<Vec<u8>>,
    /// When this worker got it.
    pub arrived: Stamp,
}

/// Where each payload the decoder found lies in `frame` (it returns
/// slices of it), with the payload's descriptors: a `Run` frame's tasks
/// keep the frame and their ranges.
pub(super) fn payload_ranges(
    frame: &[u8],
    payloads: Vec<PayloadFds<'_>>,
) -> (Vec<Range<usize>>, Vec<Vec<OwnedFd>>) {
    let base = frame.as_ptr() as usize;
    payloads
        .into_iter()
        .map(|(p, fds)| {
            let start = p.as_ptr() as usize - base;
            (start..start + p.len(), fds)
        })
        .unzip()
}

/// Queues a `Run` frame's tasks, numbered as one batch.
pub(super) fn queue_run(queue: &mut VecDeque<Work>, batches: &mut u64, run: Run) {
    *batches += 1;
    let batch = *batches;
    let Run {
        items,
        frame,
        ranges,
        fds,
        bulk,
        arrived,
    } = run;
    let mut bulk = bulk.into_iter();
    for ((header, range), fds) in items.into_iter().zip(ranges).zip(fds) {
        let bulk = bulk.by_ref().take(header.bulk.len()).collect();
        queue.push_back(Work::Task {
            header,
            batch,
            frame: frame.clone(),
            range,
            arrived,
            fds,
            bulk,
        });
    }
}

/// The work ring's reading end, and the socket's `Run` frames waiting for
/// their markers.
pub(super) struct Inbound {
    ring: ring::Reader,
    /// `Run` frames from the socket whose markers the ring has not reached.
    socket_runs: VecDeque<Run>,
    /// The ring stopped at a marker whose frame has not come yet: it has
    /// nothing to give until the reader brings it (so the executor sleeps
    /// on the reader's signal, not on the ring).
    at_marker: bool,
    max_frame: u32,
}

impl Inbound {
    pub(super) fn new(ring: ring::Reader, max_frame: u32) -> Inbound {
        Inbound {
            ring,
            socket_runs: VecDeque::new(),
            at_marker: false,
            max_frame,
        }
    }

    /// A `Run` frame came on the socket: its marker is (or will be) in the
    /// ring.
    pub(super) fn socket_run(&mut self, run: Run) {
        self.socket_runs.push_back(run);
        self.at_marker = false;
    }

    /// Moves every `Run` frame the pool has published into `queue`, in
    /// order, up to a marker whose socket frame has not come; `true` if any
    /// came. A broken ring or frame ends the worker (the pool broke the
    /// protocol, as with a garbage frame).
    pub(super) fn pull(&mut self, queue: &mut VecDeque<Work>, batches: &mut u64) -> bool {
        let mut got = false;
        loop {
            let mut body = Vec::new();
            match self.ring.next_into(self.max_frame, &mut body) {
                Ok(None) => return got,
                Ok(Some(ring::Record::Frame)) => {
                    queue_run(queue, batches, parse_ring_frame(body));
                    got = true;
                }
                Ok(Some(ring::Record::Marker)) => {
                    let Some(run) = self.socket_runs.pop_front() else {
                        self.at_marker = true;
                        return got;
                    };
                    self.ring.skip_marker();
                    queue_run(queue, batches, run);
                    got = true;
                }
                Ok(Some(ring::Record::Item)) => broken("an item record"),
                Err(e) => broken(&e),
            }
        }
    }

    /// Whether the ring has work to pull now (the executor's look before
    /// it parks).
    pub(super) fn has_work(&self) -> bool {
        !self.at_marker && self.ring.has_data()
    }

    /// Before the executor sleeps: `true` if it may (the pool will post a
    /// `Wake` when it puts work in the ring; at a marker, the reader's
    /// signal wakes it), `false` if work came meanwhile.
    pub(super) fn park(&self) -> bool {
        self.at_marker || self.ring.park()
    }

    /// The executor is awake: the pool need not wake it.
    pub(super) fn unpark(&self) {
        self.ring.unpark();
    }
}

/// A `Run` frame from the ring (never with descriptors or bulk strings).
fn parse_ring_frame(body: Vec<u8>) -> Run {
    let arrived = Stamp::now();
    let frame = Arc::new(body);
    let (items, ranges, fds) = {
        let (msg, payloads) = match decode_message_fds::<ToWorker>(&frame, Vec::new()) {
            Ok(pair) => pair,
            Err(e) => broken(&e.to_string()),
        };
        let ToWorker::Run { items } = msg else {
            broken(&format!("{msg:?} in the work ring"))
        };
        if items.iter().any(|h| !h.bulk.is_empty()) {
            broken("bulk strings in the work ring");
        }
        let (ranges, fds) = payload_ranges(&frame, payloads);
        (items, ranges, fds)
    };
    Run {
        items,
        frame,
        ranges,
        fds,
        bulk: Vec::new(),
        arrived,
    }
}

fn broken(what: &str) -> ! {
    eprintln!("procpool-worker: bad work ring from the pool: {what}");
    std::process::exit(3)
}
