//! One record per chunk of a process pool's `map` (issue 14), instead of a
//! `TaskFuture` per input.
//!
//! A chunk travels as one packed task (`TaskHeader::items`): the pool
//! books one task, the worker reports each input with an `Item` note before
//! it begins the next (so a crash still costs only the running input), and
//! the pool's reader puts each outcome straight into the chunk's [`Sink`],
//! without the pool lock. The `Map` that submitted the chunk waits on the
//! sink and takes the outcomes out in order (`map`) or as they come
//! (`map_unordered`, through its `DoneQueue`: told one key per wake, the
//! map takes every input woken so far when it hears of one).
//!
//! What the pool sees of a chunk is a [`Part`]: the inputs of the sink it
//! carries, in the order the worker numbers them. A worker that dies in the
//! middle of a part fails the running input; the inputs after it go back
//! to the queue as a new part (a new task id, registered with the sink so
//! that a dropped `Map` can still cancel it).
//!
//! # Locks
//!
//! `Sink::inner` is a leaf: nothing else is taken while it is held, and
//! nobody waiting on it holds another lock. Watchers (`DoneQueue`) are told
//! after it is released. `Part::staged` (taken only by the reader of the
//! part's worker) is held while a run is decoded, then `Sink::inner` with
//! it; no user code runs under `Sink::inner`.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use serde::de::DeserializeOwned;

use procpool_wire::TaskId;
use procpool_wire::codec;

use crate::cost::{Cost, CostBatch, ItemCost, StatsCollector};
use crate::error::{Side, TaskError};
use crate::future::{Control, Release, Resolve, ResolveBytes, TaskFuture, Watch};
use crate::lock::lock;
use crate::task::Input;

/// What a packed submit made of a chunk: one record for all its inputs,
/// or (for inputs a packed chunk cannot carry) a future per input.
pub enum Sent<O> {
    Futures(Vec<Result<TaskFuture<O>, TaskError>>),
    Chunk(Arc<Sink<O>>),
}

/// An input's work in nanoseconds and its payload bytes both ways, when
/// it ran ([`ItemCost::sample`]): what auto chunking samples.
pub(crate) type Sample = (u64, u64);

/// An input's outcome as a sink keeps it: the error boxed, so that the
/// common `Ok` moves as a few words (slot, map's queue, `next()`), not
/// as a whole `TaskError`.
pub(crate) type Outcome<O> = Result<O, Box<TaskError>>;

enum Slot<O> {
    Waiting,
    /// Its outcome, and when it ran its work and bytes (auto chunking
    /// samples them: [`ItemCost::sample`]; a whole `Cost` per input made
    /// the slot five times larger, and each move of it a copy); and the
    /// sink's wakes before it ended (`Inner::woken`): an unordered map
    /// takes it once a wake came after it (the reader records its cost
    /// before it wakes the map).
    Done(Outcome<O>, Option<Sample>, u32),
    Taken,
}

struct Inner<O> {
    slots: Vec<Slot<O>>,
    /// The task ids of the parts sent for this sink (a dropped `Map`
    /// cancels them).
    parts: Vec<TaskId>,
    /// Threads blocked on `cond`.
    waiters: u32,
    /// Told `base + index` of one input at each wake (`map_unordered`),
    /// which then takes every input woken so far ([`Sink::take_woken`]).
    watch: Option<(Arc<dyn Watch>, usize)>,
    /// Wakes so far (see `Slot::Done`).
    woken: u32,
    /// Inputs ended quietly since the last wake (by the pool's reader,
    /// which wakes the map once per run of notes: a wake-up per input cost
    /// more than the input), and the first of them, whose key the wake
    /// tells.
    quiet: usize,
    first_quiet: usize,
    /// Inputs woken and not taken yet; none of those below `taken_below`
    /// is left (where [`Sink::take_woken`] starts looking, and stops once
    /// it found `woken_left`).
    woken_left: usize,
    taken_below: usize,
}

impl<O> Inner<O> {
    /// Ends input `index` (if it has not ended yet), quietly.
    #[inline]
    fn put(&mut self, index: usize, outcome: Outcome<O>, sample: Option<Sample>) {
        if let Some(slot @ Slot::Waiting) = self.slots.get_mut(index) {
            *slot = Slot::Done(outcome, sample, self.woken);
            if self.quiet == 0 {
                self.first_quiet = index;
            }
            self.quiet += 1;
        }
    }

    /// Takes the outcome in `slot`, if it has ended; one woken before
    /// counts out of `woken_left`.
    #[inline]
    fn take(&mut self, index: usize) -> Option<(Outcome<O>, Option<Sample>)> {
        let slot = self.slots.get_mut(index)?;
        if !matches!(slot, Slot::Done(..)) {
            return None;
        }
        let Slot::Done(r, c, epoch) = std::mem::replace(slot, Slot::Taken) else {
            unreachable!("matched above")
        };
        if epoch < self.woken {
            self.woken_left -= 1;
        }
        Some((r, c))
    }
}

/// The outcomes of one chunk of a `map`, by input index.
pub struct Sink<O> {
    inner: Mutex<Inner<O>>,
    cond: Condvar,
    control: Arc<dyn Control>,
}

impl<O: Send + 'static> Sink<O> {
    pub(crate) fn new(n: usize, control: Arc<dyn Control>) -> Arc<Sink<O>> {
        Arc::new(Sink {
            inner: Mutex::new(Inner {
                slots: (0..n).map(|_| Slot::Waiting).collect(),
                parts: Vec::new(),
                waiters: 0,
                watch: None,
                woken: 0,
                quiet: 0,
                first_quiet: 0,
                woken_left: 0,
                taken_below: 0,
            }),
            cond: Condvar::new(),
            control,
        })
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).slots.len()
    }

    /// Ends input `index` (if it has not ended yet).
    pub(crate) fn put(&self, index: usize, outcome: Result<O, TaskError>) {
        self.put_many(std::iter::once((index, outcome)));
    }

    fn put_many(&self, outcomes: impl Iterator<Item = (usize, Result<O, TaskError>)>) {
        self.put_quietly(outcomes);
        self.wake();
    }

    /// Ends inputs without waking the map yet (see [`Sink::wake`]).
    fn put_quietly(&self, outcomes: impl Iterator<Item = (usize, Result<O, TaskError>)>) {
        let mut g = lock(&self.inner);
        for (index, outcome) in outcomes {
            g.put(index, outcome.map_err(Box::new), None);
        }
    }

    /// Wakes the map for the inputs ended quietly: once, however many (a
    /// watcher is told the key of the first of them).
    fn wake(&self) {
        let (first, waiters, watch) = {
            let mut g = lock(&self.inner);
            if g.quiet == 0 {
                return;
            }
            g.woken += 1;
            g.woken_left += std::mem::take(&mut g.quiet);
            (g.first_quiet, g.waiters, g.watch.clone())
        };
        if waiters > 0 {
            self.cond.notify_all();
        }
        if let Some((w, base)) = watch {
            w.done(base + first);
        }
    }

    /// Tells `w` (with `base + index`) of an input at each wake, and at
    /// once of one if some were woken already. Told of one, the map takes
    /// all those woken ([`take_woken`](Self::take_woken)): each input is
    /// taken after a key of its sink told since it was woken.
    pub(crate) fn watch(&self, w: Arc<dyn Watch>, base: usize) {
        let first = {
            let mut g = lock(&self.inner);
            g.watch = Some((w.clone(), base));
            // Those ended quietly are told at the next wake.
            let woken = g.woken;
            g.slots
                .iter()
                .position(|s| matches!(s, Slot::Done(_, _, e) if *e < woken))
        };
        if let Some(index) = first {
            w.done(base + index);
        }
    }

    /// Takes the outcome of every input woken and not taken yet, in index
    /// order, as `(base + index, outcome, sample)` (one lock for all).
    /// How many it took.
    pub(crate) fn take_woken(
        &self,
        base: usize,
        out: &mut VecDeque<(usize, Outcome<O>, Option<Sample>)>,
    ) -> usize {
        let mut g = lock(&self.inner);
        let g = &mut *g;
        let want = g.woken_left;
        let mut found = 0;
        let mut below = g.taken_below;
        let mut prefix = true;
        for (i, slot) in g.slots.iter_mut().enumerate().skip(g.taken_below) {
            if found == want {
                break;
            }
            match slot {
                Slot::Done(_, _, e) if *e < g.woken => {
                    let Slot::Done(r, c, _) = std::mem::replace(slot, Slot::Taken) else {
                        unreachable!("matched above")
                    };
                    out.push_back((base + i, r, c));
                    found += 1;
                }
                Slot::Taken => {}
                _ => prefix = false,
            }
            if prefix {
                below = i + 1;
            }
        }
        g.woken_left -= found;
        g.taken_below = below;
        found
    }

    /// Waits until input `index` has ended; `false` if `until` passed
    /// first (`None`: no limit). It first takes the map's `look` (kept from
    /// one wait to the next), as a `DoneQueue` waiter does, then parks.
    pub(crate) fn wait(
        &self,
        index: usize,
        until: Option<Instant>,
        look: &mut crate::waiting::Look,
    ) -> bool {
        let ended = |g: &Inner<O>| !matches!(g.slots.get(index), Some(Slot::Waiting));
        let mut g = lock(&self.inner);
        let mut looked = false;
        loop {
            if ended(&g) {
                return true;
            }
            if !looked {
                looked = true;
                drop(g);
                look.look(until, || ended(&lock(&self.inner)));
                // Looked again under the lock before parking.
                g = lock(&self.inner);
                continue;
            }
            g.waiters += 1;
            look.parked();
            let woken = match until {
                None => self.cond.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(t) => {
                    let left = t.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        g.waiters -= 1;
                        return false;
                    }
                    self.cond
                        .wait_timeout(g, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            g = woken;
            g.waiters -= 1;
            look.woken();
        }
    }

    /// The smallest index whose outcome has not been taken (by
    /// [`take_woken`](Self::take_woken)), if any.
    pub(crate) fn first_untaken(&self) -> Option<usize> {
        let g = lock(&self.inner);
        let below = g.taken_below;
        g.slots
            .iter()
            .skip(below)
            .position(|s| !matches!(s, Slot::Taken))
            .map(|i| below + i)
    }

    /// Takes input `index`'s outcome, if it has ended (once).
    #[cfg(test)]
    pub(crate) fn take(&self, index: usize) -> Option<Result<O, TaskError>> {
        lock(&self.inner)
            .take(index)
            .map(|(r, _)| r.map_err(|e| *e))
    }

    /// Takes the outcomes of inputs `from..end` that have ended, in order,
    /// up to the first that has not (one lock for all of them).
    pub(crate) fn take_ended(
        &self,
        from: usize,
        end: usize,
        out: &mut VecDeque<(Outcome<O>, Option<Sample>)>,
    ) {
        let mut g = lock(&self.inner);
        let end = end.min(g.slots.len());
        for index in from..end {
            match g.take(index) {
                Some(taken) => out.push_back(taken),
                None => break,
            }
        }
    }

    /// Withdraws every part not begun (a dropped or timed-out `Map`): their
    /// inputs end `Cancelled`; parts already running finish, their outputs
    /// discarded. Blocks until the workers holding prefetched parts have
    /// answered (as cancelling their futures would).
    pub(crate) fn cancel(&self) {
        cancel_all(std::slice::from_ref(&self));
    }

    fn add_part(&self, id: TaskId) {
        lock(&self.inner).parts.push(id);
    }
}

/// [`Sink::cancel`] for many sinks (of one pool) at once: one call to the
/// pool, whose workers are asked about all their prefetched parts together
/// (one by one, each wait for a worker's answer came after the last).
pub(crate) fn cancel_all<O: Send + 'static>(sinks: &[&Sink<O>]) {
    let Some(first) = sinks.first() else {
        return;
    };
    let parts: Vec<TaskId> = sinks
        .iter()
        .flat_map(|s| lock(&s.inner).parts.clone())
        .collect();
    if !parts.is_empty() {
        first.control.cancel_many(&parts);
    }
}

/// A part of a chunk as the pool books it: input `i` of the packed task is
/// input `slots[i]` of the sink. Its inputs from `live` on have gone to
/// another part (after a crash).
pub(crate) struct Part<O> {
    sink: Arc<Sink<O>>,
    slots: Vec<u32>,
    live: AtomicUsize,
    /// The task's `NAME` and types, for error messages.
    name: &'static str,
    input_type: &'static str,
    output_type: &'static str,
    /// [`Chunk::items_ok`]'s outcomes of a run, decoded before they go
    /// into the sink under one lock (kept: a buffer a run cost more than
    /// the lock; only the reader of the part's worker takes it).
    staged: Mutex<Vec<Staged<O>>>,
    out: PhantomData<fn() -> O>,
}

/// An output decoded for the sink: its slot, value and sample (a whole
/// `Result` was five times larger, and moved three times).
type Staged<O> = (u32, O, Sample);

/// An input [`Part::decode_item`] could not end with a value: its slot and
/// error (none for a bad index), and the protocol violation it was, if any.
type NotDecoded = (Option<(u32, TaskError)>, Option<String>);

/// What the pool's reader hands [`Chunk::items_ok`] of each input: its
/// index in the part, its output's bytes (no descriptors: an item record)
/// as the first `len` bytes of a slice that may go on (the records after
/// it: see `codec::decode_followed_boxed`), `len`, and its cost.
pub(crate) type ItemOk<'a> = (u32, &'a [u8], usize, ItemCost);

impl<O: DeserializeOwned + Send + 'static> Part<O> {
    /// A part carrying `slots` of `sink`, booked as task `id`.
    pub(crate) fn new(
        sink: Arc<Sink<O>>,
        slots: Vec<u32>,
        id: TaskId,
        name: &'static str,
        input_type: &'static str,
        output_type: &'static str,
    ) -> Arc<Part<O>> {
        sink.add_part(id);
        let live = AtomicUsize::new(slots.len());
        Arc::new(Part {
            sink,
            slots,
            live,
            name,
            input_type,
            output_type,
            staged: Mutex::new(Vec::new()),
            out: PhantomData,
        })
    }

    fn live(&self) -> &[u32] {
        &self.slots[..self.live.load(Ordering::Acquire).min(self.slots.len())]
    }

    /// Decodes the output the worker reported for input `index` of this
    /// part (`len` bytes, decoded by `decode`: a codec decode with its
    /// shared-value context): what goes into the sink, or why not.
    fn decode_item(
        &self,
        index: u32,
        len: usize,
        decode: impl FnOnce() -> (
            Result<O, Box<codec::CodecError>>,
            Option<crate::shared::SharedError>,
        ),
        worker: usize,
        mut cost: ItemCost,
        costs: &mut CostBatch,
    ) -> Result<Staged<O>, NotDecoded> {
        let Some(&slot) = self.live().get(index as usize) else {
            return Err((
                None,
                Some(format!(
                    "a result for input {index} of a chunk of {}",
                    self.live().len()
                )),
            ));
        };
        // A clock read costs more than decoding a small output: those are
        // not timed (their `decode_output` is zero).
        let t = (len >= crate::task::TIMED_BYTES).then(Instant::now);
        let (decoded, shared_error) = decode();
        if let Some(t) = t {
            cost.decode_output = crate::stamp::nanos(t.elapsed());
        }
        let e = match decoded {
            Ok(v) => {
                costs.completed(&cost);
                return Ok((slot, v, cost.sample()));
            }
            Err(e) => e,
        };
        costs.failed();
        Err(match shared_error {
            Some(crate::shared::SharedError::BadReference(message)) => {
                let message = format!("bad shared-payload reference: {message}");
                let err = TaskError::Protocol {
                    worker,
                    message: message.clone(),
                };
                (Some((slot, err)), Some(message))
            }
            other => {
                let err = TaskError::Decode {
                    side: Side::Parent,
                    type_name: std::any::type_name::<O>().to_owned(),
                    message: other.map_or_else(|| e.to_string(), |o| o.to_string()),
                };
                (Some((slot, err)), None)
            }
        })
    }

    /// Ends the input [`decode_item`](Self::decode_item) could not decode
    /// (quietly); `Err`: the violation it was.
    fn not_decoded(&self, (failed, violation): NotDecoded) -> Result<(), String> {
        if let Some((slot, err)) = failed {
            lock(&self.sink.inner).put(slot as usize, Err(Box::new(err)), None);
        }
        violation.map_or(Ok(()), Err)
    }

    fn fail_all(&self, err: &TaskError) {
        self.sink.put_many(
            self.live()
                .iter()
                .map(|&s| (s as usize, Err(err.clone())))
                .collect::<Vec<_>>()
                .into_iter(),
        );
    }
}

/// What the pool's reader and `settle` need of a part without knowing its
/// output type.
pub(crate) trait Chunk: Send + Sync {
    /// Inputs in this part.
    fn len(&self) -> usize;
    /// Inputs of this part, from the first, that have ended.
    fn ended(&self) -> usize;
    /// The worker reported input `index` (of this part) as `Ok`: decodes
    /// its output and ends it. `Err` if the worker broke the protocol (a
    /// bad index or a bad shared-payload reference; the input then fails
    /// with `Protocol`). Its cost goes to `costs`, for the pool's stats
    /// (recorded by the reader before it wakes the map).
    fn item_ok(
        &self,
        index: u32,
        output: Input<'_>,
        worker: usize,
        cost: ItemCost,
        costs: &mut CostBatch,
    ) -> Result<(), String>;
    /// [`item_ok`](Self::item_ok) for a run of inputs (item records of
    /// the ring, decoded for shared-value `mode` with at most `limit`
    /// shared bytes): each decoded, then all put into the sink under one
    /// lock. At a protocol violation the run stops after that input (the
    /// rest stays in `items`).
    fn items_ok(
        &self,
        items: &mut dyn Iterator<Item = ItemOk<'_>>,
        mode: crate::shared::Mode,
        limit: u64,
        worker: usize,
        costs: &mut CostBatch,
    ) -> Result<(), String>;
    /// The worker reported input `index` as failed.
    fn item_failed(&self, index: u32, err: TaskError) -> Result<(), String>;
    /// Wakes the map for the inputs `item_ok` / `item_failed` ended (they
    /// do not: the reader calls this once per run of notes).
    fn wake(&self);
    /// `(name, input type, output type)` of the task, for error messages.
    fn types(&self) -> (&'static str, &'static str, &'static str);
    /// Cuts this part after its first `keep` inputs; the rest become a new
    /// part booked as task `id`.
    fn split(&self, keep: usize, id: TaskId) -> Arc<dyn ResolveBytes>;
    /// Ends this part's inputs from `from` on with `err` (the rest of a
    /// part whose worker died, when it cannot go back to the queue).
    fn fail_from(&self, from: usize, err: TaskError);
}

impl<O: DeserializeOwned + Send + 'static> Chunk for Part<O> {
    fn len(&self) -> usize {
        self.live().len()
    }

    fn ended(&self) -> usize {
        let g = lock(&self.sink.inner);
        self.live()
            .iter()
            .take_while(|&&s| !matches!(g.slots.get(s as usize), Some(Slot::Waiting)))
            .count()
    }

    fn item_ok(
        &self,
        index: u32,
        output: Input<'_>,
        worker: usize,
        cost: ItemCost,
        costs: &mut CostBatch,
    ) -> Result<(), String> {
        let bytes = output.bytes;
        let (fds, mode, limit) = (output.fds, output.mode, output.limit);
        let decode =
            || crate::shared::decode_with(mode, fds, limit, || codec::decode_boxed::<O>(bytes));
        match self.decode_item(index, bytes.len(), decode, worker, cost, costs) {
            Ok((slot, value, sample)) => {
                lock(&self.sink.inner).put(slot as usize, Ok(value), Some(sample));
                Ok(())
            }
            Err(not) => self.not_decoded(not),
        }
    }

    fn items_ok(
        &self,
        items: &mut dyn Iterator<Item = ItemOk<'_>>,
        mode: crate::shared::Mode,
        limit: u64,
        worker: usize,
        costs: &mut CostBatch,
    ) -> Result<(), String> {
        let mut staged = lock(&self.staged);
        if staged.capacity() == 0 {
            // Once per part: room for all of its inputs.
            staged.reserve_exact(self.live().len());
        }
        let mut done = Ok(());
        // One shared-value context for the run (item records carry no
        // descriptors).
        let mut run = crate::shared::DecodeRun::new(mode, limit);
        for (index, bytes, len, cost) in items {
            // Boxed error: a small output's result comes back in
            // registers (see `codec::decode_boxed`).
            let decode = || run.decode(|| codec::decode_followed_boxed::<O>(bytes, len));
            match self.decode_item(index, len, decode, worker, cost, costs) {
                Ok(value) => staged.push(value),
                Err(not) => {
                    done = self.not_decoded(not);
                    if done.is_err() {
                        break;
                    }
                }
            }
        }
        drop(run);
        let mut g = lock(&self.sink.inner);
        for (slot, value, sample) in staged.drain(..) {
            g.put(slot as usize, Ok(value), Some(sample));
        }
        drop(g);
        done
    }

    fn item_failed(&self, index: u32, err: TaskError) -> Result<(), String> {
        let Some(&slot) = self.live().get(index as usize) else {
            return Err(format!(
                "a result for input {index} of a chunk of {}",
                self.len()
            ));
        };
        self.sink
            .put_quietly(std::iter::once((slot as usize, Err(err))));
        Ok(())
    }

    fn wake(&self) {
        self.sink.wake();
    }

    fn types(&self) -> (&'static str, &'static str, &'static str) {
        (self.name, self.input_type, self.output_type)
    }

    fn split(&self, keep: usize, id: TaskId) -> Arc<dyn ResolveBytes> {
        let live = self.live().len();
        let keep = keep.min(live);
        let rest = self.slots[keep..live].to_vec();
        self.live.store(keep, Ordering::Release);
        Part::new(
            self.sink.clone(),
            rest,
            id,
            self.name,
            self.input_type,
            self.output_type,
        )
    }

    fn fail_from(&self, from: usize, err: TaskError) {
        let rest: Vec<_> = self
            .live()
            .iter()
            .skip(from)
            .map(|&s| (s as usize, Err(err.clone())))
            .collect();
        self.sink.put_many(rest.into_iter());
    }
}

impl<O: DeserializeOwned + Send + 'static> Resolve for Part<O> {
    fn mark_running(&self) -> bool {
        true
    }

    fn fail(&self, err: TaskError) -> bool {
        self.fail_all(&err);
        true
    }

    fn cancel_begin(&self) -> (bool, Option<Release>) {
        // The pool asks only for a part that has not begun.
        self.fail_all(&TaskError::Cancelled);
        (true, None)
    }
}

impl<O: DeserializeOwned + Send + 'static> ResolveBytes for Part<O> {
    /// The whole part ended: every input was reported with its own note.
    /// One that was not (a worker that skipped it) fails with `Protocol`.
    fn complete_bytes(
        &self,
        _output: Input<'_>,
        worker: usize,
        _cost: Cost,
        _submitted: Instant,
        _stats: &StatsCollector,
    ) -> Option<String> {
        let missing = {
            let g = lock(&self.sink.inner);
            self.live()
                .iter()
                .filter(|&&s| matches!(g.slots.get(s as usize), Some(Slot::Waiting)))
                .count()
        };
        if missing == 0 {
            self.sink.wake();
            return None;
        }
        let message = format!("the worker ended a chunk without reporting {missing} of its inputs");
        self.fail_all(&TaskError::Protocol {
            worker,
            message: message.clone(),
        });
        Some(message)
    }

    fn as_chunk(&self) -> Option<&dyn Chunk> {
        Some(self)
    }
}

#[cfg(test)]
#[path = "chunk_tests.rs"]
mod tests;
