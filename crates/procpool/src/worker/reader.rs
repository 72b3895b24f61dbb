//! The worker's reader thread: takes frames off the socket and keeps the
//! local queue of prefetched tasks; answers `Cancel` by removing a task
//! from that queue, so cancelling never waits for a running task. Takes
//! `WorkerShared::local` (briefly, per frame), `spare_frame` and `writer`
//! (for its answers), never two at once.

use std::io;
use std::sync::{Arc, MutexGuard};

use procpool_wire::TaskId;
use procpool_wire::frame::Outgoing;
use procpool_wire::message::{MessageError, ToParent, ToWorker, bulk_lens, decode_message_fds};

use super::inbound::{Run, payload_ranges, queue_run};
use super::shared::{Local, Work, WorkerShared, exit_parent_gone};
use crate::link::frames::{SocketReader, next_owned_frame_fds, read_bulk};
use crate::lock::lock;
use crate::stamp::Stamp;

pub(super) fn read_loop(mut reader: SocketReader, shared: &WorkerShared) {
    loop {
        let (frame, fds) =
            match next_owned_frame_fds(&mut reader, || lock(&shared.spare_frame).take()) {
                Ok(Some((f, fds))) => (Arc::new(f), fds),
                Ok(None) => exit_parent_gone(&io::Error::from(io::ErrorKind::UnexpectedEof)),
                Err(e) => {
                    eprintln!("procpool-worker: bad frame from the pool: {e}");
                    std::process::exit(3);
                }
            };
        let arrived = Stamp::now();
        let (msg, payloads) = match decode_message_fds::<ToWorker>(&frame, fds) {
            Ok(pair) => pair,
            Err(e) => bad_message(&e),
        };
        // Bulk byte strings follow the frame, each task's in turn.
        let bulk = match bulk_lens(&msg, frame.len(), reader.max()) {
            Ok(lens) if lens.is_empty() => Vec::new(),
            Ok(lens) => match read_bulk(&mut reader, &lens) {
                Ok(b) => b,
                Err(e) => exit_parent_gone(&e),
            },
            Err(e) => bad_message(&e),
        };
        let (ranges, fds) = payload_ranges(&frame, payloads);
        match msg {
            ToWorker::Run { items } => {
                let run = Run {
                    items,
                    frame: frame.clone(),
                    ranges,
                    fds,
                    bulk,
                    arrived,
                };
                let mut guard = lock(&shared.local);
                let local = &mut *guard;
                match local.inbound.as_mut() {
                    // Its marker in the work ring says when it runs.
                    Some(inbound) => inbound.socket_run(run),
                    None => queue_run(&mut local.queue, &mut local.batches, run),
                }
                wake_executor(shared, guard);
            }
            ToWorker::Wake => wake_executor(shared, lock(&shared.local)),
            ToWorker::Init {
                name, fingerprint, ..
            } => {
                let range = ranges.into_iter().next().unwrap_or(0..0);
                lock(&shared.local).queue.push_back(Work::Init {
                    name,
                    fingerprint,
                    frame: frame.clone(),
                    range,
                });
                shared.cond.notify_one();
            }
            ToWorker::Cancel { id } => {
                let withdrawn = withdraw(
                    shared,
                    |w| matches!(w, Work::Task { header, .. } if header.id == id),
                );
                let withdrawn = !withdrawn.is_empty();
                let msg = ToParent::Withdrawn {
                    generation: shared.generation,
                    id,
                    withdrawn,
                };
                shared.send(&[shared.message(&msg)]);
            }
            ToWorker::Shutdown { drop_pending } => {
                let dropped = if drop_pending {
                    withdraw(shared, |w| matches!(w, Work::Task { .. }))
                } else {
                    Vec::new()
                };
                // (The executor pulls what is left in the work ring before
                // it looks at `closing`.)
                lock(&shared.local).closing = true;
                shared.cond.notify_one();
                let frames: Vec<Outgoing> = dropped
                    .into_iter()
                    .map(|id| {
                        shared.message(&ToParent::Withdrawn {
                            generation: shared.generation,
                            id,
                            withdrawn: true,
                        })
                    })
                    .collect();
                if !frames.is_empty() {
                    shared.send(&frames);
                }
            }
            other => {
                eprintln!("procpool-worker: unexpected message from the pool: {other:?}");
                std::process::exit(3);
            }
        }
    }
}

/// Signals the executor if it sleeps (a signal is a system call even when
/// nobody waits), after letting go of `local` (so that it does not wake
/// only to wait for the lock).
fn wake_executor(shared: &WorkerShared, mut local: MutexGuard<'_, Local>) {
    let parked = std::mem::take(&mut local.parked);
    drop(local);
    if parked {
        shared.cond.notify_one();
    }
}

fn bad_message(e: &MessageError) -> ! {
    eprintln!("procpool-worker: bad message from the pool: {e}");
    std::process::exit(3)
}

/// Removes queued tasks matching `pred`; returns their ids.
fn withdraw(shared: &WorkerShared, pred: impl Fn(&Work) -> bool) -> Vec<TaskId> {
    let mut local = lock(&shared.local);
    // The tasks the pool put in the work ring before this message.
    local.pull();
    let mut ids = Vec::new();
    local.queue.retain(|w| {
        if pred(w) {
            if let Work::Task { header, .. } = w {
                ids.push(header.id);
            }
            false
        } else {
            true
        }
    });
    ids
}
