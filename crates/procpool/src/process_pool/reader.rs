//! The pool's reader of one worker: frames off its socket and notes out of
//! its reply ring, in the order the worker made them, each handed to the
//! handlers of `handle`. Takes no lock itself (the handlers take
//! `Shared::state`).

use std::io;
use std::time::{Duration, Instant};

use procpool_wire::Generation;
use procpool_wire::message::{
    MessageError, Outcome, PayloadFds, ToParent, WorkerTiming, bulk_lens, decode_message_fds,
};

use super::handle::{
    Note, Noted, lost, on_notes, on_withdrawn, protocol_error, tampered, task_error,
    task_error_named,
};
use super::item::Meta;
use super::state::{Assigned, Shared};
use crate::cost::{Cost, CostBatch, ItemCost};
use crate::link::frames::{FrameFdError, SocketReader, next_frame_fds, read_bulk};
use crate::link::ring;
use crate::lock::lock;
use crate::stamp::nanos;
use crate::task::Input;

mod items;

use items::{Held, Sent};

/// What to do after a message.
enum Flow {
    Go,
    Stop,
}

/// Reads one worker's messages until its socket ends. A frame that breaks
/// the protocol kills the worker; its supervisor does the rest.
///
/// With a reply ring (see `link::ring`) the executor's notes come from
/// shared memory: the ring is drained before each socket read, the reader
/// parks (and the worker wakes it) only when the ring is empty, and a
/// socket note that a marker stands for is handled in the marker's place.
/// When the socket ends the ring is drained once more, so every note the
/// worker made before dying counts.
pub(super) fn read_loop(
    shared: &Shared,
    idx: usize,
    generation: Generation,
    mut reader: SocketReader,
    pid: u32,
    mut ring: Option<ring::Reader>,
) {
    let me = Reading {
        shared,
        idx,
        generation,
        pid,
        run: Default::default(),
        bulk: Default::default(),
        chunk: Default::default(),
        now: std::cell::Cell::new(Instant::now()),
        costs: Default::default(),
    };
    // Stopped at a marker: the note it stands for is on the socket.
    let mut at_marker = false;
    let mut spin = crate::waiting::Look::new(shared.cfg.ring_spin, true);
    loop {
        if let Some(r) = ring.as_mut() {
            if !at_marker {
                match me.drain(r) {
                    Ok(true) => at_marker = true,
                    Ok(false) => {}
                    Err(()) => return,
                }
            }
            let nothing_buffered = reader.get_ref().buffer().is_empty();
            if !at_marker && nothing_buffered {
                if spin.look(None, || r.has_data()) || !r.park() {
                    continue;
                }
                spin.parked();
            }
        }
        let max = reader.max();
        let read = next_frame_fds(&mut reader);
        if let Some(r) = &ring {
            r.unpark();
            spin.woken();
        }
        let (body, fds) = match read {
            Ok(Some(b)) => b,
            Ok(None) => {
                me.last_drain(ring.as_mut(), at_marker);
                return;
            }
            Err(e) => {
                if e.is_forged() {
                    tampered(shared, idx, generation, pid, &e.to_string());
                    return;
                }
                if let FrameFdError::Frame(procpool_wire::FrameError::Io(io)) = &e {
                    match io.kind() {
                        io::ErrorKind::ConnectionReset
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionAborted => {
                            me.last_drain(ring.as_mut(), at_marker);
                            return;
                        }
                        // Over TCP the socket has a read timeout: the
                        // worker missed its heartbeats.
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                            lost(shared, idx, generation, pid);
                            return;
                        }
                        _ => {}
                    }
                }
                protocol_error(shared, idx, generation, pid, e.to_string());
                // Killed, but what it published before still counts.
                me.last_drain(ring.as_mut(), at_marker);
                return;
            }
        };
        let (msg, payloads) = match decode_message_fds::<ToParent>(body, fds) {
            Ok(pair) => pair,
            Err(e) => {
                protocol_error(shared, idx, generation, pid, e.to_string());
                me.last_drain(ring.as_mut(), at_marker);
                return;
            }
        };
        let lens = match bulk_lens(&msg, body.len(), max) {
            Ok(lens) if !lens.is_empty() && !matches!(msg, ToParent::Finished { .. }) => Err(
                MessageError::Bulk("bulk byte strings after a message other than a result".into()),
            ),
            other => other,
        };
        let lens = match lens {
            Ok(lens) => lens,
            Err(e) => {
                protocol_error(shared, idx, generation, pid, e.to_string());
                me.last_drain(ring.as_mut(), at_marker);
                return;
            }
        };
        // A result with bulk byte strings: they follow its frame. The frame
        // itself is small (its large strings are not in it): kept, while
        // the reader reads on.
        let kept: Vec<Vec<u8>>;
        let payloads = if lens.is_empty() {
            payloads
        } else {
            let (bytes, fds): (Vec<Vec<u8>>, Vec<_>) =
                payloads.into_iter().map(|(p, f)| (p.to_vec(), f)).unzip();
            kept = bytes;
            match read_bulk(&mut reader, &lens) {
                Ok(b) => *me.bulk.borrow_mut() = b,
                Err(e) => {
                    protocol_error(shared, idx, generation, pid, e.to_string());
                    me.last_drain(ring.as_mut(), at_marker);
                    return;
                }
            }
            kept.iter().map(|p| &p[..]).zip(fds).collect()
        };
        // What the executor sends through its ring (a frame that must
        // cross the socket leaves a marker there): its notes, and a packed
        // chunk input's `Item` whose output is too large for a ring record
        // or has shared payloads in memory files.
        let from_executor = matches!(
            msg,
            ToParent::Started { .. } | ToParent::Finished { .. } | ToParent::Item { .. }
        );
        if let Some(r) = ring.as_mut()
            && from_executor
        {
            // Those it published before this one come first, up to the
            // marker that stands for this one. (A worker that does not use
            // the ring leaves no marker.)
            if !at_marker {
                match me.drain(r) {
                    Ok(marker) => at_marker = marker,
                    Err(()) => return,
                }
            }
            if at_marker {
                r.skip_marker();
                at_marker = false;
            }
        }
        let flow = me.act(msg, payloads);
        // The bulk strings were this frame's alone (a result dropped for
        // its generation leaves them untaken).
        me.bulk.borrow_mut().clear();
        if let Flow::Stop = flow {
            // A socket frame broke the protocol: the worker is being
            // killed, but what it published before still counts.
            me.last_drain(ring.as_mut(), at_marker);
            return;
        }
    }
}

/// One worker's reader.
struct Reading<'a> {
    shared: &'a Shared,
    idx: usize,
    generation: Generation,
    pid: u32,
    /// The run of ring records being acted on (kept for its buffers).
    run: std::cell::RefCell<Bodies>,
    /// The bulk byte strings read after the result being acted on (its
    /// frame's), taken by `deliver`.
    bulk: std::cell::RefCell<Vec<Vec<u8>>>,
    /// The packed chunk the last `Item` note was for (its notes come one
    /// after another: the pool lock is taken once per chunk to find it).
    chunk: std::cell::RefCell<Option<Held>>,
    /// When the run being handled was taken out of the ring (one clock
    /// read per run: a packed chunk's inputs' `total` is counted to it).
    now: std::cell::Cell<Instant>,
    /// Costs of packed chunks' inputs not yet in the pool's stats (recorded
    /// once per run, before the map is woken).
    costs: std::cell::RefCell<CostBatch>,
}

impl Reading<'_> {
    /// Handles the ring's records up to a marker (`Ok(true)`, the marker
    /// left in place) or up to the end of what the worker had published
    /// when it looked (`Ok(false)`: the caller looks again before it
    /// parks). `Err`: the worker broke the protocol and is being ended.
    /// What is published is copied out of the ring at once; its records
    /// are acted on in runs (up to [`RUN`]: one pool lock for a run's
    /// notes); a run ends early at a broken record, after the records
    /// before it are acted on.
    fn drain(&self, r: &mut ring::Reader) -> Result<bool, ()> {
        let max_frame = self.shared.cfg.max_frame;
        let mut run = self.run.borrow_mut();
        run.clear();
        // What is published, in one copy; its records read a run at a time.
        let copied = r.copy_published(&mut run.bytes);
        run.filled = *copied.as_ref().unwrap_or(&0);
        loop {
            run.records.clear();
            let (used, stopped) = match &copied {
                Ok(_) => run.read_records(max_frame),
                Err(message) => (0, Err(message.clone())),
            };
            r.consume(used);
            if let Flow::Stop = self.handle_run(&run) {
                return Err(());
            }
            match stopped {
                Ok(Stopped::Full) => continue,
                Ok(Stopped::End) => return Ok(false),
                Ok(Stopped::Marker) => return Ok(true),
                Err(message) => {
                    protocol_error(self.shared, self.idx, self.generation, self.pid, message);
                    return Err(());
                }
            }
        }
    }

    /// Acts on ring records a worker's keeper forwarded over a network
    /// link (`ToParent::Records`), as on a run taken out of a ring.
    fn forwarded(&self, bytes: &[u8]) -> Flow {
        let mut run = self.run.borrow_mut();
        run.clear();
        for found in ring::records(bytes, self.shared.cfg.max_frame) {
            let found = match found {
                Ok(r) => r,
                Err(message) => {
                    // What came before the broken record counts.
                    if let Flow::Stop = self.handle_run(&run) {
                        return Flow::Stop;
                    }
                    run.clear();
                    protocol_error(self.shared, self.idx, self.generation, self.pid, message);
                    return Flow::Stop;
                }
            };
            match found {
                ring::Forwarded::Note(body) => run.push(ring::Record::Frame, &[body]),
                ring::Forwarded::Item(head, output) => {
                    run.push(ring::Record::Item, &[&head.to_bytes(), output]);
                }
            }
            if run.len() == RUN {
                if let Flow::Stop = self.handle_run(&run) {
                    return Flow::Stop;
                }
                run.clear();
            }
        }
        let flow = self.handle_run(&run);
        run.clear();
        flow
    }

    /// The socket ended: what the worker published before counts.
    fn last_drain(&self, ring: Option<&mut ring::Reader>, at_marker: bool) {
        if let Some(r) = ring
            && !at_marker
        {
            let _ = self.drain(r);
        }
    }

    /// Decodes and acts on a run of messages from the ring (which carries
    /// no descriptors: a note that declares some is a protocol error).
    /// Consecutive notes are acted on together (see [`Reading::notes`]).
    fn handle_run(&self, run: &Bodies) -> Flow {
        self.now.set(Instant::now());
        let flow = self.handle_run_quietly(run);
        self.wake_chunk();
        flow
    }

    /// [`handle_run`](Self::handle_run) before the map is woken.
    fn handle_run_quietly(&self, run: &Bodies) -> Flow {
        let mut held = Vec::new();
        let mut records = run.iter().peekable();
        while let Some(&(record, body, _)) = records.peek() {
            if record == ring::Record::Item {
                // After the notes before it (its chunk's `Started`); the
                // test here, not in `notes`: nearly every item has none
                // before it, and the call alone cost more than the test.
                if !held.is_empty()
                    && let Flow::Stop = self.notes(std::mem::take(&mut held))
                {
                    return Flow::Stop;
                }
                // It and the item records after it, a chunk at a time.
                if let Flow::Stop = self.item_records(&mut records) {
                    return Flow::Stop;
                }
                continue;
            }
            records.next();
            match decode_message_fds::<ToParent>(body, Vec::new()) {
                Ok((msg, payloads)) => {
                    let note = matches!(msg, ToParent::Started { .. } | ToParent::Finished { .. });
                    if note && msg.generation() == self.generation {
                        held.push((msg, payloads));
                        continue;
                    }
                    if let ToParent::Item { .. } = msg
                        && msg.generation() == self.generation
                    {
                        // After the notes before it (its chunk's `Started`).
                        if let Flow::Stop = self.notes(std::mem::take(&mut held)) {
                            return Flow::Stop;
                        }
                        if let Flow::Stop = self.item(msg, payloads) {
                            return Flow::Stop;
                        }
                        continue;
                    }
                    if let Flow::Stop = self.notes(std::mem::take(&mut held)) {
                        return Flow::Stop;
                    }
                    if let ToParent::Records { .. } = msg {
                        // Records come only on a connection, never inside
                        // records (a ring's, or forwarded ones).
                        protocol_error(
                            self.shared,
                            self.idx,
                            self.generation,
                            self.pid,
                            "forwarded records inside a ring record".to_owned(),
                        );
                        return Flow::Stop;
                    }
                    if let Flow::Stop = self.act(msg, payloads) {
                        return Flow::Stop;
                    }
                }
                Err(e) => {
                    if let Flow::Stop = self.notes(held) {
                        return Flow::Stop;
                    }
                    protocol_error(
                        self.shared,
                        self.idx,
                        self.generation,
                        self.pid,
                        e.to_string(),
                    );
                    return Flow::Stop;
                }
            }
        }
        self.notes(held)
    }

    /// Wakes the map whose chunk the last `Item` notes were for.
    fn wake_chunk(&self) {
        self.shared.stats.record_batch(&mut self.costs.borrow_mut());
        if let Some(h) = self.chunk.borrow().as_ref()
            && let Some(c) = h.part.as_chunk()
        {
            c.wake();
        }
    }

    /// Acts on a run of `Started` / `Finished` notes of this generation:
    /// the pool's bookkeeping for all of them under one lock, then, in
    /// order, each future marked running or resolved.
    ///
    /// `Flow::Stop` if a result broke the protocol (every note of the run
    /// is still acted on: the pool's books already count them done).
    fn notes(&self, held: Vec<(ToParent, Vec<PayloadFds<'_>>)>) -> Flow {
        if held.is_empty() {
            return Flow::Go;
        }
        // A chunk's `Finished` wakes its map: its inputs' costs first.
        self.shared.stats.record_batch(&mut self.costs.borrow_mut());
        let notes: Vec<Note> = held
            .iter()
            .map(|(msg, _)| match msg {
                ToParent::Finished { id, timing, .. } => Note::Finished {
                    id: *id,
                    peak_rss: timing.peak_rss_bytes,
                },
                ToParent::Started { id, .. } => Note::Started(*id),
                _ => unreachable!("only notes are held"),
            })
            .collect();
        let mut noted = Vec::with_capacity(notes.len());
        on_notes(self.shared, self.idx, &notes, &mut noted);
        let mut broke = None;
        // The map (or `as_completed`) hears of the whole run at once.
        crate::future::tell_after(|| {
            for ((msg, payloads), done) in held.into_iter().zip(noted) {
                match (msg, done) {
                    (_, Noted::Started(future)) => {
                        future.mark_running();
                    }
                    (
                        ToParent::Finished {
                            outcome, timing, ..
                        },
                        Noted::Finished(a, next),
                    ) => {
                        if let Err(message) = self.deliver(a, outcome, timing, payloads) {
                            broke.get_or_insert(message);
                        }
                        // Only now: the task after it in its batch began
                        // when it ended, and `Running` must not be seen
                        // while the one before still reads `Running`.
                        if let Some(n) = next {
                            n.mark_running();
                        }
                    }
                    _ => {}
                }
            }
        });
        match broke {
            None => Flow::Go,
            Some(message) => {
                protocol_error(self.shared, self.idx, self.generation, self.pid, message);
                Flow::Stop
            }
        }
    }

    /// Acts on one decoded message.
    fn act(&self, msg: ToParent, payloads: Vec<PayloadFds<'_>>) -> Flow {
        let Reading {
            shared,
            idx,
            generation,
            pid,
            ..
        } = *self;
        if msg.generation() != generation {
            tracing::warn!(
                target: "procpool::pool",
                { worker.id = idx },
            "dropped a message stamped with generation {} (current {generation})",
                msg.generation()
            );
            return Flow::Go;
        }
        match msg {
            ToParent::Started { .. } | ToParent::Finished { .. } => {
                return self.notes(vec![(msg, payloads)]);
            }
            ToParent::Item { .. } => {
                self.now.set(Instant::now());
                let flow = self.item(msg, payloads);
                self.wake_chunk();
                return flow;
            }
            ToParent::Records { .. } => {
                let bytes = payloads.into_iter().next().map_or(&[][..], |(b, _)| b);
                return self.forwarded(bytes);
            }
            ToParent::Withdrawn { id, withdrawn, .. } => on_withdrawn(shared, idx, id, withdrawn),
            ToParent::Heartbeat { .. } | ToParent::Wake { .. } => {}
            other => {
                protocol_error(
                    shared,
                    idx,
                    generation,
                    pid,
                    format!("unexpected message {other:?}"),
                );
                return Flow::Stop;
            }
        }
        Flow::Go
    }
}

impl Reading<'_> {
    /// A task's output as it arrived from this worker, to decode.
    fn output<'b>(
        &self,
        bytes: &'b [u8],
        fds: Vec<std::os::fd::OwnedFd>,
        bulk: &'b [procpool_wire::message::Bulk],
        bulk_bytes: Vec<Vec<u8>>,
    ) -> Input<'b> {
        Input {
            bytes,
            fds,
            bulk,
            bulk_bytes,
            mode: self.shared.cfg.shared_mode(),
            limit: u64::from(self.shared.cfg.max_frame),
        }
    }

    /// Resolves a finished task's future with its outcome (the output is
    /// decoded here, on the reader) and records its cost.
    /// `Err`: the output held a bad shared-payload reference (its future
    /// failed with `Protocol`); the worker that sent it must be ended.
    fn deliver(
        &self,
        a: Assigned,
        outcome: Outcome,
        timing: WorkerTiming,
        payloads: Vec<PayloadFds<'_>>,
    ) -> Result<(), String> {
        let shared = self.shared;
        shared.recycle_input(a.payload);
        let mut meta = a.meta;
        // The task kept for its bulk strings is not sent again.
        meta.bulk = None;
        // The input's memory files go before the future resolves: a waiter
        // woken by it finds none of them still held by the pool.
        meta.files.clear();
        match outcome {
            Outcome::Ok { bulk, .. } => {
                let (bytes, fds) = payloads.into_iter().next().unwrap_or((&[], Vec::new()));
                // Read after its frame (none after a note from the ring).
                let bulk_bytes = self.bulk.take();
                if bulk_bytes.len() != bulk.len() {
                    let message = format!(
                        "a result declared {} bulk byte strings and {} followed it",
                        bulk.len(),
                        bulk_bytes.len()
                    );
                    meta.future.fail(crate::TaskError::Protocol {
                        worker: self.idx,
                        message: message.clone(),
                    });
                    return Err(message);
                }
                let bulk_len: usize = bulk_bytes.iter().map(Vec::len).sum();
                let sent = Sent::of(&meta, a.assigned_at, 1);
                let cost = sent.cost(&timing, bytes.len() + bulk_len);
                if !meta.span.is_disabled() {
                    let s = &meta.span;
                    s.record("cost.total_us", micros(meta.submitted.elapsed()));
                    s.record("cost.run_us", micros(cost.run));
                    let serde = cost.encode_input + cost.decode_input + cost.encode_output;
                    s.record("cost.serde_us", micros(serde));
                    s.record("bytes.back", cost.bytes_back);
                    tracing::debug!(target: "procpool::task", parent: s, "task done");
                }
                let output = self.output(bytes, fds, &bulk, bulk_bytes);
                // A bad shared-payload reference fails that future with
                // `Protocol`, and the worker that sent it is ended like any
                // other that broke the protocol.
                if let Some(message) = meta.future.complete_bytes(
                    output,
                    self.idx,
                    cost,
                    meta.submitted,
                    &shared.stats,
                ) {
                    return Err(message);
                }
            }
            other => {
                let err = task_error(other, &meta, self.idx);
                tracing::debug!(target: "procpool::task", parent: &meta.span, error = %err, "task failed");
                shared.stats.record(None);
                meta.future.fail(err);
            }
        }
        Ok(())
    }
}

/// The most ring records acted on as one run.
const RUN: usize = 256;

/// Ring records taken out but not acted on yet: their bodies end to end.
#[derive(Default)]
struct Bodies {
    bytes: Vec<u8>,
    /// Where each record's body lies in `bytes`, and its kind.
    records: Vec<(std::ops::Range<usize>, ring::Record)>,
    /// The bytes of `bytes` in use (those after it are spare room, kept
    /// to save zeroing them again).
    filled: usize,
    /// How far [`Bodies::read_records`] has read `bytes`.
    read: usize,
}

/// Where [`Bodies::read_records`] stopped.
enum Stopped {
    /// At the end of the bytes: all read.
    End,
    /// After [`RUN`] records: the run is full.
    Full,
    /// At a marker (left in the ring).
    Marker,
}

impl Bodies {
    /// Reads the records of `bytes` (as the ring holds them) from where
    /// the last call stopped, up to the end, a marker, a broken record or
    /// [`RUN`] of them. Returns how many bytes those read took (to free in
    /// the ring) and why it stopped: `Err` at a broken record (those
    /// before it count).
    fn read_records(&mut self, max_frame: u32) -> (usize, Result<Stopped, String>) {
        let from = self.read;
        let stopped = loop {
            let at = self.read;
            if at == self.filled {
                break Ok(Stopped::End);
            }
            if self.records.len() == RUN {
                break Ok(Stopped::Full);
            }
            match ring::record_at(&self.bytes[at..self.filled], max_frame) {
                Ok((ring::Record::Marker, _)) => break Ok(Stopped::Marker),
                Ok((record, body)) => {
                    self.records.push((at + body.start..at + body.end, record));
                    self.read = at + body.end;
                }
                Err(message) => break Err(message),
            }
        };
        (self.read - from, stopped)
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    /// Appends a record of this kind whose body is `parts` end to end
    /// (forwarded records; an item's head is unpacked again).
    fn push(&mut self, record: ring::Record, parts: &[&[u8]]) {
        self.bytes.truncate(self.filled);
        for part in parts {
            self.bytes.extend_from_slice(part);
        }
        self.records.push((self.filled..self.bytes.len(), record));
        self.filled = self.bytes.len();
    }

    fn clear(&mut self) {
        self.records.clear();
        self.filled = 0;
        self.read = 0;
    }

    /// Each record with its body, and the body followed by the rest of
    /// the run's bytes (what a small output's decode may look ahead at:
    /// see `codec::decode_followed_boxed`).
    fn iter(&self) -> impl Iterator<Item = (ring::Record, &[u8], &[u8])> {
        self.records.iter().map(|(body, record)| {
            (
                *record,
                &self.bytes[body.clone()],
                &self.bytes[body.start..self.filled],
            )
        })
    }
}

/// Whole microseconds, as span fields carry them.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
