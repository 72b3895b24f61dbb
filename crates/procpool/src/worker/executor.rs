//! The worker's executor (its main thread): pops work in order, runs it,
//! and reports each result and the next task's start in one write, into
//! the reply ring or onto the socket. Takes `WorkerShared::local` (to pop,
//! and to park on its condvar) and `spare_frame`; writes through
//! [`Notes`].

use std::sync::Arc;

use procpool_wire::bulk::BulkSource;
use procpool_wire::fds::SendFd;
use procpool_wire::frame::Outgoing;
use procpool_wire::message::{Outcome, ToParent, WorkerTiming, encode_message};

use super::shared::{Notes, Work, WorkerShared};
use crate::link::frames::reusable;
use crate::link::ring::ItemHead;
use crate::lock::lock;
use crate::stamp::Stamp;
use crate::task::{Input, Registry, WorkerContext};

/// Peak resident memory of this process, read with `getrusage` at most
/// every few milliseconds (a syscall per task would cost more than a
/// trivial task; so would a clock read, so the clock (the worker's cheap
/// `Stamp`) is looked at every few tasks).
struct PeakRss {
    value: u64,
    read_at: Option<Stamp>,
    calls: u32,
}

impl PeakRss {
    /// Nanoseconds between reads.
    const EVERY: u64 = 5_000_000;
    const LOOK_EVERY: u32 = 16;

    /// `fresh`: read now regardless (after a long task, whose cost dwarfs
    /// the syscall and which may have grown the process).
    fn peak(&mut self, fresh: bool) -> u64 {
        self.calls = self.calls.wrapping_add(1);
        let look = fresh || self.calls.is_multiple_of(Self::LOOK_EVERY);
        if look
            && (fresh
                || self
                    .read_at
                    .is_none_or(|t| Stamp::now().nanos_since(t) >= Self::EVERY))
        {
            self.value = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
                .map(|u| u64::try_from(u.max_rss()).unwrap_or(0) * 1024)
                .unwrap_or(0);
            self.read_at = Some(Stamp::now());
        }
        self.value
    }

    /// What a note reports of where a task's time went in this worker.
    fn timing(&mut self, queue_ns: u64, ran: &crate::task::Ran) -> WorkerTiming {
        WorkerTiming {
            queue_ns,
            decode_ns: ran.decode_ns,
            run_ns: ran.run_ns,
            encode_ns: ran.encode_ns,
            peak_rss_bytes: self.peak(ran.run_ns > 1_000_000),
        }
    }
}

/// Yields the CPU in a loop (so a peer on the same CPU runs) until work is
/// queued or the spin time passes.
fn spin_for_work(shared: &WorkerShared) {
    let until = crate::deadline::after(shared.spin);
    while !crate::deadline::passed(until) {
        std::thread::yield_now();
        if let Ok(local) = shared.local.try_lock()
            && (!local.queue.is_empty()
                || local.closing
                || local.inbound.as_ref().is_some_and(|i| i.has_work()))
        {
            return;
        }
    }
}

/// The last task of a large frame is done: its buffer goes back to the
/// reader for the next frame.
fn recycle_frame(shared: &WorkerShared, frame: Arc<Vec<u8>>) {
    if let Some(buf) = reusable(frame) {
        *lock(&shared.spare_frame) = Some(buf);
    }
}

/// Sends the held result (and `then`, in the same write), then keeps the
/// result's buffer as `spare` for the next output if it is large.
///
/// Inlined, so that the nearly always empty case (a chunk's loop asks
/// twice per input) costs a test, not a call into [`send_now`]'s frame.
#[inline(always)]
fn send_pending(
    shared: &WorkerShared,
    notes: &mut Notes,
    pending: &mut Option<Outgoing>,
    then: Option<Outgoing>,
    spare: &mut Vec<u8>,
) {
    if pending.is_some() || then.is_some() {
        send_now(shared, notes, pending, then, spare);
    }
}

#[inline(never)]
fn send_now(
    shared: &WorkerShared,
    notes: &mut Notes,
    pending: &mut Option<Outgoing>,
    then: Option<Outgoing>,
    spare: &mut Vec<u8>,
) {
    match (pending.take(), then) {
        (Some(result), Some(then)) => {
            let frames = [result, then];
            notes.send(shared, &frames);
            reclaim(frames, spare);
        }
        (Some(one), None) | (None, Some(one)) => {
            let frames = [one];
            notes.send(shared, &frames);
            reclaim(frames, spare);
        }
        (None, None) => {}
    }
}

/// Keeps the largest payload buffer of frames already sent as `spare`.
fn reclaim<const N: usize>(frames: [Outgoing; N], spare: &mut Vec<u8>) {
    for payload in frames.into_iter().flat_map(Outgoing::into_payloads) {
        if let Some(buf) = reusable(payload)
            && buf.capacity() > spare.capacity()
        {
            *spare = buf;
        }
    }
}

/// Runs queued work in order. Each task's result is written before the
/// next task begins, so the parent always knows what ran: within a chunk
/// the result of one task says the next has begun; the first task of a
/// chunk (or a single task) is announced with `Started`, in the same write
/// as the result before it.
pub(super) fn execute(
    shared: &WorkerShared,
    registry: &Registry,
    worker_id: usize,
    max_frame: u32,
    notes: &mut Notes,
) {
    let mut ctx = WorkerContext::new(worker_id);
    let mut pending: Option<Outgoing> = None;
    let mut current_batch: Option<u64> = None;
    let mut spare: Vec<u8> = Vec::new();
    let mut rss = PeakRss {
        value: 0,
        read_at: None,
        calls: 0,
    };
    loop {
        let work = {
            let mut local = lock(&shared.local);
            let mut spun = shared.spin.is_zero();
            loop {
                if let Some(w) = local.queue.pop_front() {
                    break Some(w);
                }
                // The next chunks the pool put in the work ring, if any.
                if local.pull() {
                    continue;
                }
                if pending.is_some() || local.closing {
                    break None;
                }
                if !spun {
                    // Opt-in: look for the next task briefly before parking,
                    // so it needs no wake-up.
                    drop(local);
                    spin_for_work(shared);
                    spun = true;
                    local = lock(&shared.local);
                    continue;
                }
                local.parked = true;
                if let Some(inbound) = local.inbound.as_ref()
                    && !inbound.park()
                {
                    // Work came into the ring meanwhile.
                    local.parked = false;
                    continue;
                }
                local = shared.cond.wait(local).unwrap_or_else(|p| p.into_inner());
                local.parked = false;
                if let Some(inbound) = local.inbound.as_ref() {
                    inbound.unpark();
                }
            }
        };
        match work {
            None => {
                if pending.is_none() {
                    return;
                }
                send_pending(shared, notes, &mut pending, None, &mut spare);
            }
            Some(Work::Init {
                name,
                fingerprint,
                frame,
                range,
            }) => {
                send_pending(shared, notes, &mut pending, None, &mut spare);
                let error = registry
                    .init(&name, fingerprint, &frame[range], &mut ctx)
                    .err();
                let failed = error.is_some();
                let msg = ToParent::InitDone {
                    generation: shared.generation,
                    error,
                };
                shared.send(&[shared.message(&msg)]);
                if failed {
                    std::process::exit(4);
                }
            }
            Some(Work::Task {
                header,
                batch,
                frame,
                range,
                arrived,
                fds,
                bulk,
            }) => {
                if current_batch != Some(batch) {
                    current_batch = Some(batch);
                    let started = shared.message(&ToParent::Started {
                        generation: shared.generation,
                        id: header.id,
                    });
                    send_pending(shared, notes, &mut pending, Some(started), &mut spare);
                } else {
                    send_pending(shared, notes, &mut pending, None, &mut spare);
                }
                if header.items > 0 {
                    pending = Some(run_chunk(
                        shared,
                        registry,
                        &mut ctx,
                        Chunk {
                            header: &header,
                            frame: &frame[range],
                            arrived,
                            max_frame,
                        },
                        notes,
                        &mut spare,
                        &mut rss,
                    ));
                    recycle_frame(shared, frame);
                    continue;
                }
                let span = tracing::debug_span!(
                    target: "procpool::worker",
                    "task",
                    task.id = header.id,
                    task.name = &*header.name,
                    worker.id = worker_id,
                    worker.pid = std::process::id(),
                );
                let _in_span = span.enter();
                let start = Stamp::now();
                let queue_ns = start.nanos_since(arrived);
                let mut out = std::mem::take(&mut spare);
                out.clear();
                let input = Input {
                    bytes: &frame[range],
                    fds,
                    bulk: &header.bulk,
                    bulk_bytes: bulk,
                    mode: shared.shared_mode,
                    limit: u64::from(max_frame),
                };
                let ran = registry.run(
                    &header.name,
                    header.fingerprint,
                    input,
                    &mut ctx,
                    &mut out,
                    start,
                );
                recycle_frame(shared, frame);
                let timing = rss.timing(queue_ns, &ran);
                let bulk_len = ran.bulk.as_ref().map_or(0, |b| b.bulk_len());
                let outcome =
                    within_cap(ran.outcome, out.len() + bulk_len, max_frame, &header.name);
                tracing::debug!(
                    target: "procpool::worker",
                    { cost.decode_us = ran.decode_ns / 1000,
                      cost.run_us = ran.run_ns / 1000,
                      cost.encode_us = ran.encode_ns / 1000,
                      ok = matches!(outcome, Outcome::Ok { .. }) },
                    "task done"
                );
                let payloads = match outcome {
                    Outcome::Ok { .. } => vec![out],
                    _ => {
                        spare = out;
                        Vec::new()
                    }
                };
                let msg = ToParent::Finished {
                    generation: shared.generation,
                    id: header.id,
                    outcome,
                    timing,
                };
                // Only a result carries its output's memory files and bulk
                // byte strings.
                let (files, bulk): (Vec<SendFd>, Vec<Arc<dyn BulkSource>>) = match msg {
                    ToParent::Finished {
                        outcome: Outcome::Ok { .. },
                        ..
                    } => (
                        ran.files.into_iter().map(|f| f as SendFd).collect(),
                        ran.bulk.into_iter().collect(),
                    ),
                    _ => (Vec::new(), Vec::new()),
                };
                pending = Some(
                    encode_message(&msg, payloads)
                        .expect("procpool's own messages always encode")
                        .with_fds(files)
                        .with_bulk(bulk),
                );
            }
        }
    }
}

/// An output of `len` bytes is too large for a frame under the pool's cap.
#[inline]
fn too_large(len: usize, max_frame: u32) -> bool {
    len > max_frame as usize - 1024
}

/// `outcome`, unless it is an output of `len` bytes too large for a frame
/// under the pool's cap: then an `Encode` error saying so.
fn within_cap(outcome: Outcome, len: usize, max_frame: u32, name: &str) -> Outcome {
    match outcome {
        Outcome::Ok { .. } if too_large(len, max_frame) => Outcome::Encode {
            message: format!(
                "output of {len} bytes exceeds the pool's {max_frame}-byte frame cap (raise max_frame_bytes)"
            ),
            worker_type: name.to_string(),
        },
        other => other,
    }
}

/// Outputs up to this size go in their note's buffer (see `run_chunk`).
const INLINE_OUTPUT: usize = 4096;

/// A packed chunk of a `map` (see `TaskHeader::items`).
struct Chunk<'a> {
    header: &'a procpool_wire::message::TaskHeader,
    /// The packed inputs.
    frame: &'a [u8],
    arrived: Stamp,
    max_frame: u32,
}

/// The next input's wait in this worker (from the chunk's arrival to where
/// the input before it ended): that input's wait plus its phases, which
/// follow each other from its start to its end (`task::Ran::ended`). The
/// same nanoseconds as reading the two instants again, without the
/// `Duration` arithmetic per input.
fn waited_until(queue_ns: u64, ran: &WorkerTiming) -> u64 {
    queue_ns
        .saturating_add(ran.decode_ns)
        .saturating_add(ran.run_ns)
        .saturating_add(ran.encode_ns)
}

/// Runs a packed chunk's inputs in order. Each input's outcome is sent as
/// an `Item` note before the next begins (so a crash costs only the input
/// that was running); the chunk's own `Finished` is handed back, to be
/// sent with whatever comes next.
fn run_chunk(
    shared: &WorkerShared,
    registry: &Registry,
    ctx: &mut WorkerContext,
    chunk: Chunk<'_>,
    notes: &mut Notes,
    spare: &mut Vec<u8>,
    rss: &mut PeakRss,
) -> Outgoing {
    let Chunk {
        header,
        frame,
        arrived,
        max_frame,
    } = chunk;
    let ranges = match procpool_wire::message::unpack_inputs(frame, header.items) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("procpool-worker: bad chunk from the pool: {e}");
            std::process::exit(3);
        }
    };
    let span = tracing::debug_span!(
        target: "procpool::worker",
        "chunk",
        task.id = header.id,
        task.name = &*header.name,
        items = header.items,
    );
    let _in_span = span.enter();
    let mut pending: Option<Outgoing> = None;
    // Looked up once for the chunk.
    let runner = registry.packed_runner(&header.name, header.fingerprint);
    // One shared-value state for the chunk's inputs (they carry no
    // descriptors).
    let mut scope = crate::shared::TaskRun::new(shared.shared_mode, u64::from(max_frame));
    let mut start = Stamp::now();
    let mut queue_ns = start.nanos_since(arrived);
    // The first input's output is timed apart; a later one's if the output
    // before it was not small (see `task::Start`).
    let mut time_encode = true;
    for (index, range) in ranges.into_iter().enumerate() {
        send_pending(shared, notes, &mut pending, None, spare);
        // The output is encoded into `spare` in place: moved out and back
        // for each input, the buffer's three words were read back right
        // after the runner wrote them (a store-forwarding stall, issue
        // 14's profile).
        spare.clear();
        let began = crate::task::Start {
            at: start,
            time_encode,
            bulk: false,
        };
        let ran = match &runner {
            Ok(run) => run(
                &frame[range.start..],
                range.len(),
                ctx,
                spare,
                began,
                &mut scope,
            ),
            Err(outcome) => crate::task::Ran::not_run(outcome.clone(), start),
        };
        // The next input starts where this one ended; it waited in this
        // worker since the chunk arrived (behind the inputs before it:
        // waiting, not the pool's overhead).
        let ended = ran.ended;
        let timing = rss.timing(queue_ns, &ran);
        let out_len = spare.len();
        time_encode = out_len >= crate::task::TIMED_BYTES;
        // The common case, tested in place (moving the whole `Ran` out of
        // the runner's return slot stalled on store forwarding too):
        // published as an item record in the ring, no message to encode
        // (the note before it went at the top of this turn of the loop).
        if matches!(ran.outcome, Outcome::Ok { .. })
            && ran.files.is_empty()
            && !too_large(out_len, max_frame)
        {
            let head = ItemHead {
                id: header.id,
                index: index as u32,
                queue_ns: timing.queue_ns,
                decode_ns: timing.decode_ns,
                run_ns: timing.run_ns,
                encode_ns: timing.encode_ns,
            };
            if notes.send_item(shared, head, spare) {
                queue_ns = waited_until(queue_ns, &timing);
                start = ended;
                continue;
            }
        }
        let outcome = within_cap(ran.outcome, out_len, max_frame, &header.name);
        let ok = matches!(outcome, Outcome::Ok { .. });
        let files: Vec<SendFd> = if ok {
            ran.files.into_iter().map(|f| f as SendFd).collect()
        } else {
            Vec::new()
        };
        // A small output goes in the note's own buffer (and `spare` is
        // kept for the next input); a large one is written from where it
        // is.
        let inline = !ok || out_len <= INLINE_OUTPUT;
        let msg = ToParent::Item {
            generation: shared.generation,
            id: header.id,
            index: index as u32,
            outcome,
            timing,
        };
        let note = if !ok {
            encode_message(&msg, Vec::<Vec<u8>>::new())
        } else if inline {
            procpool_wire::message::encode_message_inline(&msg, spare)
        } else {
            encode_message(&msg, vec![std::mem::take(spare)])
        };
        pending = Some(
            note.expect("procpool's own messages always encode")
                .with_fds(files),
        );
        queue_ns = waited_until(queue_ns, &timing);
        start = ended;
    }
    send_pending(shared, notes, &mut pending, None, spare);
    let done = ToParent::Finished {
        generation: shared.generation,
        id: header.id,
        outcome: Outcome::Ok {
            len: 0,
            fds: 0,
            bulk: Vec::new(),
        },
        timing: WorkerTiming {
            queue_ns: 0,
            decode_ns: 0,
            run_ns: 0,
            encode_ns: 0,
            peak_rss_bytes: rss.peak(false),
        },
    };
    // `Ok` with an empty output: the outputs went with the `Item` notes.
    encode_message(&done, vec![Vec::<u8>::new()]).expect("procpool's own messages always encode")
}
