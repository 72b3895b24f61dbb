//! `map` and `map_unordered`: lazy, bounded, one `Result` per input.
//!
//! Nothing is submitted before the first `next()`. At most a window of
//! inputs (a few chunks per worker) is pulled ahead, so a ten-million-item
//! iterator never sits in memory. A failed item never stops the rest:
//! Python's `map`, which ends at the first exception, has no twin here.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::TaskError;
use crate::future::TaskFuture;
use crate::idmap::IdMap;
use crate::progress::Progress;
use crate::task::Task;
use crate::waiting::DoneQueue;
use chunk::{Outcome, Sample, Sent, Sink};

mod auto;
pub(crate) mod chunk;
#[cfg(feature = "stream")]
mod stream;
#[cfg(feature = "stream")]
mod submit;
#[cfg(feature = "stream")]
pub use stream::{MapStream, StreamInput};

/// What a map yields for one input.
pub(crate) type Item<I> = Result<<<I as Iterator>::Item as Task>::Output, TaskError>;

/// An item with the index of its input.
pub(crate) type Indexed<I> = (usize, Item<I>);

/// Per item: a future, or the error that kept it from being submitted.
pub(crate) type ChunkResult<O> = Result<Vec<Result<TaskFuture<O>, TaskError>>, TaskError>;

/// Submits one chunk to a pool, from any thread: a `Map` sends its chunks
/// through it (a `MapStream` from the submit thread), on a handle of its own
/// whose drop leaves the pool alone.
pub(crate) type Submitter<T> =
    Arc<dyn Fn(Vec<T>) -> ChunkResult<<T as Task>::Output> + Send + Sync>;

/// How a map cuts its inputs into chunks.
#[derive(Clone)]
enum Chunking {
    /// `.chunksize(n)`: exactly `n`.
    Fixed(usize),
    /// No `.chunksize`: picked as the map goes (`map/auto.rs`).
    Auto(auto::AutoChunks),
}

impl fmt::Debug for Chunking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chunking::Fixed(n) => write!(f, "{n}"),
            Chunking::Auto(a) => write!(f, "auto (now {})", a.size()),
        }
    }
}

enum Entry<O> {
    Future(TaskFuture<O>),
    Ready(Result<O, TaskError>),
    /// Inputs `next..end` of a packed chunk (`map::chunk`): one entry for
    /// the chunk, not one per input (each held the sink, and cloning and
    /// dropping that `Arc` per input touched the line of the sink's lock,
    /// which the pool's reader takes).
    Chunk {
        sink: Arc<Sink<O>>,
        next: usize,
        end: usize,
    },
}

/// Unordered mode: a packed chunk whose inputs are keys `base..end`,
/// `left` of them not yet taken from its sink.
struct InFlight<O> {
    base: usize,
    end: usize,
    left: usize,
    sink: Arc<Sink<O>>,
}

/// Outcomes taken from a sink, not yielded yet, with their samples.
type Taken<O> = VecDeque<(Outcome<O>, Option<Sample>)>;

/// Unordered mode: outcomes taken from sinks, not yielded yet, with their
/// keys and samples.
type TakenKeyed<O> = VecDeque<(usize, Outcome<O>, Option<Sample>)>;

/// Submits one chunk as a packed task (`map::chunk`), for the pools and
/// settings where that holds the same meaning as a future per input.
pub(crate) type Packer<T> =
    Arc<dyn Fn(Vec<T>) -> Result<Sent<<T as Task>::Output>, TaskError> + Send + Sync>;

/// The iterator returned by `map` and `map_unordered`.
///
/// Dropping it midway stops pulling inputs and cancels the items that have
/// not started; started ones finish and their outputs are discarded.
///
/// ```
/// use procpool::{Executor, ThreadPool};
/// use procpool_tasks::Checked;
///
/// let pool = ThreadPool::builder().workers(2).build().unwrap();
/// // Lazy: a billion inputs are fine, only a window is pulled at a time.
/// let first: Vec<_> = pool.map((0..1_000_000_000u64).map(Checked)).chunksize(16).take(4).collect();
/// // One Result per input; a task's own Err is its value.
/// assert_eq!(first[0].as_ref().unwrap(), &Ok(0));
/// assert_eq!(first[1].as_ref().unwrap(), &Err("1 is odd".to_string()));
/// ```
pub struct Map<'a, I>
where
    I: Iterator,
    I::Item: Task,
{
    submit: Submitter<I::Item>,
    /// Packs chunks of more than one input (a process pool without per-task
    /// timeouts or retries); `None`: a future per input.
    pub(crate) packer: Option<Packer<I::Item>>,
    /// Submits several one-input chunks at once, each its own batch (a
    /// process pool); `None`: `submit` per input.
    pub(crate) singles: Option<Submitter<I::Item>>,
    /// The pool this map borrows (its submitter holds a handle of its own).
    pool: PhantomData<&'a ()>,
    pub(crate) input: I,
    input_done: bool,
    chunking: Chunking,
    window_chunks: usize,
    /// An ordered map's waits for its next outcome look before they park
    /// (`Sink::wait`): kept from one wait to the next.
    look: crate::waiting::Look,
    ordered: bool,
    timeout: Option<Duration>,
    /// The whole map's limit (`deadline`), and when it passes (set at the
    /// first `next()`; `None` there: too far to count, no limit).
    deadline: Option<Duration>,
    deadline_at: Option<Instant>,
    ended: bool,
    /// Ordered mode: items in input order.
    pending: VecDeque<Entry<<I::Item as Task>::Output>>,
    /// Ordered mode: inputs in `pending` (a chunk's entry holds many).
    pending_len: usize,
    /// Ordered mode: outcomes of the first entry's chunk from its `next`
    /// on, taken from its sink together (one lock for all that had ended).
    taken: Taken<<I::Item as Task>::Output>,
    /// Unordered mode: futures by key, and the keys as they finish.
    /// Keyed by input index.
    by_key: IdMap<usize, TaskFuture<<I::Item as Task>::Output>>,
    /// Unordered mode: the packed chunks with inputs not yet taken, in key
    /// order, and how many inputs those are.
    sinks: VecDeque<InFlight<<I::Item as Task>::Output>>,
    chunk_left: usize,
    ready: VecDeque<Indexed<I>>,
    /// Unordered mode: outcomes of packed chunks taken from their sinks
    /// (all those woken, when the `DoneQueue` told one key of the sink),
    /// not yet yielded (out of `chunk_left`).
    woken: TakenKeyed<<I::Item as Task>::Output>,
    /// Unordered mode: the pool's refusal (at the index of the first input
    /// it refused), yielded once nothing else is left in flight.
    refused: Option<(usize, TaskError)>,
    done: Arc<DoneQueue>,
    /// Unordered mode: done keys taken from `done`, not yet looked at.
    done_keys: VecDeque<usize>,
    /// Index of the next input pulled.
    next_key: usize,
    /// Ordered mode: index of the next item yielded.
    yielded: usize,
    /// The input index of the item `next_item` returned last.
    last_index: usize,
    /// Who hears of each item yielded (`progress.rs`).
    pub(crate) progress: Progress<'a>,
}

impl<I> fmt::Debug for Map<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("chunksize", &self.chunking)
            .field("ordered", &self.ordered)
            .field("in_flight", &self.in_flight())
            .field("ended", &self.ended)
            .finish()
    }
}

impl<'a, I> Map<'a, I>
where
    I: Iterator,
    I::Item: Task,
{
    pub(crate) fn new(
        submit: Submitter<I::Item>,
        window_chunks: usize,
        input: I,
        ordered: bool,
    ) -> Self {
        Map {
            submit,
            packer: None,
            singles: None,
            pool: PhantomData,
            input,
            input_done: false,
            chunking: Chunking::Auto(auto::AutoChunks::default()),
            window_chunks: window_chunks.max(1),
            look: crate::waiting::Look::new(crate::waiting::LOOK, false),
            ordered,
            timeout: None,
            deadline: None,
            deadline_at: None,
            ended: false,
            pending: VecDeque::new(),
            pending_len: 0,
            taken: VecDeque::new(),
            by_key: IdMap::default(),
            sinks: VecDeque::new(),
            chunk_left: 0,
            ready: VecDeque::new(),
            woken: VecDeque::new(),
            refused: None,
            done: DoneQueue::new(),
            done_keys: VecDeque::new(),
            next_key: 0,
            yielded: 0,
            last_index: 0,
            progress: Progress::default(),
        }
    }

    /// Sends inputs in chunks of exactly `n`: one frame and one worker per
    /// chunk. A process pool cuts a chunk whose inputs together would
    /// exceed its `max_frame_bytes` into several frames, so every input
    /// that fits on its own is delivered; only an input over the cap alone
    /// fails (`TaskError::Encode`).
    ///
    /// Without it, the map picks its chunk sizes as it goes (SEMANTICS 25,
    /// joblib's `batch_size="auto"`): it starts at 1, measures what items
    /// cost (the pool's [`Cost`](crate::Cost): run plus serialization, for
    /// a few items of each chunk) and grows the chunks, at most 16× a step,
    /// toward 2 ms of work each, up to 1024 inputs and about 1 MiB of
    /// payload; it shrinks them at once when items get slower. Tasks of 2 ms
    /// or more go one per chunk, so long tasks stay balanced across the
    /// workers; trivial tasks reach 1024 in three steps. Laziness,
    /// cancel-on-drop and crash isolation are the same in both modes.
    /// [`current_chunksize`](Self::current_chunksize) tells the size picked.
    ///
    /// ```
    /// use procpool::{Executor, ThreadPool};
    /// use procpool_tasks::Square;
    ///
    /// let pool = ThreadPool::builder().workers(2).build().unwrap();
    /// // Exactly 16 inputs per chunk.
    /// let fixed = pool.map((0..1_000u64).map(Square)).chunksize(16);
    /// assert_eq!(fixed.current_chunksize(), 16);
    /// // No chunksize: picked as it goes, starting at 1.
    /// let mut auto = pool.map((0..100_000u64).map(Square));
    /// assert_eq!(auto.current_chunksize(), 1);
    /// assert_eq!(auto.by_ref().map(Result::unwrap).sum::<u64>(), (0..100_000u64).map(|i| i * i).sum());
    /// assert!(auto.current_chunksize() > 1); // trivial tasks: big chunks
    /// ```
    ///
    /// # Panics
    /// If `n` is 0 (as `slice::chunks(0)` does).
    pub fn chunksize(mut self, n: usize) -> Self {
        assert!(n != 0, "chunksize must be at least 1 (got 0)");
        self.chunking = Chunking::Fixed(n);
        self
    }

    /// The size of the next chunk: the `n` of [`chunksize`](Self::chunksize),
    /// or, without one, what the map has picked so far (1 at the start).
    pub fn current_chunksize(&self) -> usize {
        match &self.chunking {
            Chunking::Fixed(n) => *n,
            Chunking::Auto(a) => a.size(),
        }
    }

    /// Takes the next chunk of inputs (up to [`current_chunksize`]); sets
    /// `input_done` when the input ended.
    ///
    /// [`current_chunksize`]: Self::current_chunksize
    fn pull_chunk(&mut self) -> Vec<I::Item> {
        let n = self.current_chunksize();
        let chunk: Vec<I::Item> = self.input.by_ref().take(n).collect();
        if chunk.len() < n {
            self.input_done = true;
        }
        self.pulled(chunk.len());
        chunk
    }

    /// `n` inputs were pulled as one chunk (auto chunking counts them).
    fn pulled(&mut self, n: usize) {
        if let Chunking::Auto(a) = &mut self.chunking
            && n > 0
        {
            a.pulled(n);
        }
    }

    /// Auto chunking: if the item at input `index` is one of the sampled
    /// ones, waits for it and measures it. Call before its result is taken.
    fn measure(&mut self, index: usize, f: &TaskFuture<<I::Item as Task>::Output>) {
        if let Chunking::Auto(a) = &mut self.chunking
            && a.wants(index)
        {
            f.wait();
            if let Some(c) = f.cost() {
                a.observe_cost(index, &c);
            }
        }
    }

    /// Takes the first entry in flight (ordered mode), its inputs counted
    /// out of `pending_len`.
    fn pop_pending(&mut self) -> Option<Entry<<I::Item as Task>::Output>> {
        let e = self.pending.pop_front()?;
        self.pending_len -= match &e {
            Entry::Chunk { next, end, .. } => end - next,
            Entry::Future(_) | Entry::Ready(_) => 1,
        };
        Some(e)
    }

    /// Auto chunking: measures the input of a packed chunk at input `index`
    /// of the map from its sample, if it samples that one.
    fn observe(&mut self, index: usize, sample: Option<Sample>) {
        if let Chunking::Auto(a) = &mut self.chunking
            && a.wants(index)
            && let Some((work, bytes)) = sample
        {
            a.observe(index, Duration::from_nanos(work), bytes);
        }
    }

    /// Inputs that may be in flight at once.
    fn window_inputs(&self) -> usize {
        self.window_chunks.saturating_mul(self.current_chunksize())
    }

    /// How many chunks may be in flight at once (default: a few per worker).
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn window(mut self, n: usize) -> Self {
        assert!(n != 0, "window must be at least 1 chunk (got 0)");
        self.window_chunks = n;
        self
    }

    /// Each `next()` waits at most `d` (Python's `map(timeout=)` is the
    /// whole map's limit: that is [`deadline`](Self::deadline)); then it
    /// yields `Err(TaskError::WaitTimedOut)`, cancels the rest and ends.
    /// `Duration::MAX` means no limit.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// The whole map may take at most `d` from its first `next()` (what
    /// Python's `Executor.map(timeout=)` means): once it has passed, the
    /// next item not already finished is `Err(TaskError::WaitTimedOut {
    /// after: d })`, the rest is cancelled and the map ends. Items that
    /// finished in time are still yielded first, in their order.
    /// Combines with [`timeout`](Self::timeout) (whichever comes first).
    ///
    /// ```
    /// use std::time::Duration;
    /// use procpool::{TaskError, ThreadPool};
    /// use procpool_tasks::Sleep;
    ///
    /// let pool = ThreadPool::builder().workers(1).build().unwrap();
    /// let got: Vec<_> = pool
    ///     .map([0, 0, 1_000].into_iter().map(|millis| Sleep { millis }))
    ///     .deadline(Duration::from_millis(300))
    ///     .collect();
    /// assert_eq!(got.len(), 3);
    /// assert!(got[0].is_ok() && got[1].is_ok());
    /// assert!(matches!(got[2], Err(TaskError::WaitTimedOut { .. })));
    /// ```
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    /// Items left, for [`Iterator::size_hint`]: one per input (in flight
    /// or not pulled yet). Only a pool shut down midway, or a `timeout`
    /// that expires, ends a map early, with one error in place of the
    /// rest; with a `timeout` the lower bound is therefore at most 1.
    fn remaining(&self) -> (usize, Option<usize>) {
        let in_flight = self.in_flight() + usize::from(self.refused.is_some());
        let (input_lo, input_hi) = if self.input_done {
            (0, Some(0))
        } else {
            self.input.size_hint()
        };
        let lo = in_flight.saturating_add(input_lo);
        let lo = if self.timeout.is_some() {
            lo.min(1)
        } else {
            lo
        };
        (lo, input_hi.and_then(|hi| hi.checked_add(in_flight)))
    }

    fn in_flight(&self) -> usize {
        self.pending_len + self.by_key.len() + self.chunk_left + self.ready.len() + self.woken.len()
    }

    fn refill(&mut self) {
        if matches!(self.chunking, Chunking::Fixed(1))
            && let Some(singles) = self.singles.clone()
        {
            return self.refill_singles(&singles);
        }
        while !self.input_done && self.in_flight() < self.window_inputs() {
            let chunk = self.pull_chunk();
            if chunk.is_empty() {
                break;
            }
            match &self.packer {
                Some(pack) if chunk.len() > 1 => {
                    let sent = pack(chunk);
                    self.accept_packed(sent);
                }
                _ => {
                    let sent = (self.submit)(chunk);
                    self.accept(sent);
                }
            }
        }
    }

    /// `refill` for one-input chunks on a pool that takes several at once:
    /// waits until a group of them fits the window, then submits the group
    /// in one call (one pool lock, one dispatch), each input still a task
    /// of its own with its own future. The pool's dispatch sends the ones
    /// queued for one worker in one frame (`process_pool::dispatch`), so a
    /// worker wakes once for several tasks and runs them back to back, and
    /// their results reach this map in runs (issue 14: one frame, one
    /// wake-up and one lock per input held chunksize 1 to 2-3 context
    /// switches per input).
    fn refill_singles(&mut self, singles: &Submitter<I::Item>) {
        let window = self.window_inputs();
        // A quarter of the window: the pool's workers hold about half of
        // it, so the queue never runs dry between groups.
        let group = (window / 4).clamp(1, window);
        while !self.input_done && self.in_flight() + group <= window {
            let inputs: Vec<I::Item> = self.input.by_ref().take(group).collect();
            if inputs.len() < group {
                self.input_done = true;
            }
            if inputs.is_empty() {
                break;
            }
            let sent = singles(inputs);
            self.accept(sent);
        }
    }

    /// Keeps a submitted chunk's futures in flight.
    fn accept(&mut self, sent: ChunkResult<<I::Item as Task>::Output>) {
        match sent {
            Ok(items) => {
                for item in items {
                    self.push(item);
                }
            }
            Err(refused) => {
                // Shut down or broken: yield what is in flight, then this
                // one error, and stop pulling inputs.
                if self.ordered {
                    self.push(Err(refused));
                } else {
                    self.refused = Some((self.next_key, refused));
                }
                self.input_done = true;
            }
        }
    }

    /// Keeps a packed chunk's inputs in flight.
    fn accept_packed(&mut self, sent: Result<Sent<<I::Item as Task>::Output>, TaskError>) {
        match sent {
            Ok(Sent::Futures(items)) => self.accept(Ok(items)),
            Err(refused) => self.accept(Err(refused)),
            Ok(Sent::Chunk(sink)) => {
                let n = sink.len();
                let base = self.next_key;
                self.next_key += n;
                if self.ordered {
                    self.pending.push_back(Entry::Chunk {
                        sink,
                        next: 0,
                        end: n,
                    });
                    self.pending_len += n;
                } else {
                    sink.watch(self.done.clone(), base);
                    self.chunk_left += n;
                    self.sinks.push_back(InFlight {
                        base,
                        end: base + n,
                        left: n,
                        sink,
                    });
                }
            }
        }
    }

    fn push(&mut self, item: Result<TaskFuture<<I::Item as Task>::Output>, TaskError>) {
        let key = self.next_key;
        self.next_key += 1;
        if self.ordered {
            self.pending_len += 1;
            self.pending.push_back(match item {
                Ok(f) => Entry::Future(f),
                Err(e) => Entry::Ready(Err(e)),
            });
        } else {
            match item {
                Ok(f) => {
                    f.core().watch(self.done.clone(), key);
                    self.by_key.insert(key, f);
                }
                Err(e) => self.ready.push_back((key, Err(e))),
            }
        }
    }

    /// Unordered mode: the next outcome taken from a sink, measured.
    fn pop_woken(&mut self) -> Option<Item<I>> {
        let (key, r, sample) = self.woken.pop_front()?;
        self.observe(key, sample);
        self.last_index = key;
        Some(r.map_err(|e| *e))
    }

    /// Unordered mode: takes every woken input of the packed chunk holding
    /// input `key` (told by the `DoneQueue`) into `woken`. A key of a chunk
    /// all taken, or taken with an earlier key, takes nothing.
    fn take_woken(&mut self, key: usize) {
        let at = self.sinks.partition_point(|c| c.end <= key);
        let Some(c) = self.sinks.get_mut(at).filter(|c| c.base <= key) else {
            return;
        };
        let n = c.sink.take_woken(c.base, &mut self.woken);
        c.left -= n;
        self.chunk_left -= n;
        if c.left == 0 {
            self.sinks.remove(at);
        }
    }

    /// Unordered mode: the smallest key in flight (a future's, or an input
    /// of a packed chunk not taken yet).
    fn first_in_flight(&self) -> Option<usize> {
        let futures = self.by_key.keys().copied().min();
        let chunks = self
            .sinks
            .iter()
            .find_map(|c| c.sink.first_untaken().map(|i| c.base + i));
        futures.into_iter().chain(chunks).min()
    }

    /// The caller's limit passed while waiting for item `index`.
    fn give_up(&mut self, index: usize, after: Duration) -> Option<Item<I>> {
        self.cancel_rest();
        self.ended = true;
        self.last_index = index;
        Some(Err(TaskError::WaitTimedOut { after }))
    }

    /// How long this `next()` may wait, and the limit to report if it
    /// runs out (`None`: no limit).
    fn wait_limit(&mut self) -> Option<(Duration, Duration)> {
        if self.timeout.is_none() && self.deadline.is_none() {
            return None;
        }
        let now = Instant::now();
        if let Some(d) = self.deadline
            && self.deadline_at.is_none()
        {
            self.deadline_at = crate::deadline::from(now, d);
        }
        let overall = self
            .deadline_at
            .zip(self.deadline)
            .map(|(at, d)| (at.saturating_duration_since(now), d));
        let per_next = self.timeout.map(|d| (d, d));
        match (per_next, overall) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    fn cancel_rest(&mut self) {
        self.input_done = true;
        let mut sinks: Vec<Arc<Sink<_>>> = Vec::new();
        let mut keep = |sink: Arc<Sink<_>>| {
            if !sinks.last().is_some_and(|s| Arc::ptr_eq(s, &sink)) {
                sinks.push(sink);
            }
        };
        let mut futures = Vec::new();
        for e in self.pending.drain(..) {
            match e {
                Entry::Future(f) => futures.push(f),
                Entry::Ready(_) => {}
                Entry::Chunk { sink, .. } => keep(sink),
            }
        }
        self.pending_len = 0;
        self.taken.clear();
        self.chunk_left = 0;
        for c in self.sinks.drain(..) {
            if c.left > 0 {
                keep(c.sink);
            }
        }
        futures.extend(self.by_key.drain().map(|(_, f)| f));
        crate::future::cancel_all(&futures);
        let sinks: Vec<&Sink<_>> = sinks.iter().map(|s| &**s).collect();
        chunk::cancel_all(&sinks);
        self.ready.clear();
        self.woken.clear();
        self.refused = None;
    }
}

impl<I> Iterator for Map<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
    type Item = Result<<I::Item as Task>::Output, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.progress.active() {
            // Nothing listens (nearly always): the item goes straight to
            // the caller. (Kept in a local over the tick, it was copied
            // out right after it was written: a store-forwarding stall
            // per input, issue 14's profile.)
            return self.next_item();
        }
        let item = self.next_item();
        self.tick(item.is_some());
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.ended {
            return (0, Some(0));
        }
        self.remaining()
    }
}

impl<I> Map<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
    /// The next item with its input's index.
    pub(crate) fn next_indexed(&mut self) -> Option<Indexed<I>> {
        let item = self.next_item()?;
        Some((self.last_index, item))
    }

    /// The next item; its input's index in `last_index`. (Returned with
    /// it, the pair was built in memory and copied again into `next`'s
    /// item right after: a store-forwarding stall per input, issue 14's
    /// profile.)
    fn next_item(&mut self) -> Option<Item<I>> {
        if self.ended {
            return None;
        }
        self.refill();
        let limit = self.wait_limit();
        if self.ordered {
            let index = self.yielded;
            if let Some(Entry::Chunk { sink, next, end }) = self.pending.front_mut() {
                let i = *next;
                if self.taken.is_empty() {
                    // `None`: no limit, or one too far to count.
                    let until = limit.and_then(|(wait, _)| crate::deadline::after(wait));
                    if !sink.wait(i, until, &mut self.look) {
                        let sink = sink.clone();
                        sink.cancel();
                        return self.give_up(index, limit.map_or(Duration::ZERO, |l| l.1));
                    }
                    sink.take_ended(i, *end, &mut self.taken);
                }
                *next += 1;
                if *next == *end {
                    self.pending.pop_front();
                }
                self.pending_len -= 1;
                let (r, sample) = self
                    .taken
                    .pop_front()
                    .unwrap_or_else(|| (Err(Box::new(TaskError::Cancelled)), None));
                self.observe(index, sample);
                self.yielded += 1;
                self.last_index = index;
                return Some(r.map_err(|e| *e));
            }
            let item = match self.pop_pending() {
                None => {
                    self.ended = true;
                    return None;
                }
                Some(Entry::Ready(r)) => r,
                Some(Entry::Chunk { .. }) => unreachable!("handled above"),
                Some(Entry::Future(f)) => {
                    if let Some((wait, after)) = limit
                        && !f.wait_timeout(wait)
                    {
                        f.cancel();
                        return self.give_up(index, after);
                    }
                    self.measure(index, &f);
                    f.result()
                }
            };
            self.yielded += 1;
            self.last_index = index;
            Some(item)
        } else {
            if let Some((index, r)) = self.ready.pop_front() {
                self.last_index = index;
                return Some(r);
            }
            if let Some(r) = self.pop_woken() {
                return Some(r);
            }
            let until = limit.map(|(wait, _)| crate::deadline::after(wait));
            while !self.by_key.is_empty() || self.chunk_left > 0 {
                if self.done_keys.is_empty() {
                    self.done.pop_all(until.flatten(), &mut self.done_keys);
                }
                let Some(key) = self.done_keys.pop_front() else {
                    let after = limit.map_or(Duration::ZERO, |(_, after)| after);
                    let first = self.first_in_flight().unwrap_or(self.next_key);
                    return self.give_up(first, after);
                };
                if !self.by_key.is_empty()
                    && let Some(f) = self.by_key.remove(&key)
                {
                    self.measure(key, &f);
                    self.last_index = key;
                    return Some(f.result());
                }
                // A key of a packed chunk: every input of it woken so far.
                self.take_woken(key);
                if let Some(r) = self.pop_woken() {
                    return Some(r);
                }
            }
            if let Some((index, e)) = self.refused.take() {
                self.last_index = index;
                return Some(Err(e));
            }
            self.ended = true;
            None
        }
    }
}

impl<I> Drop for Map<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
    fn drop(&mut self) {
        self.progress.finish();
        self.cancel_rest();
        // Keys of futures already dropped are harmless in the queue.
        while self.done.try_pop().is_some() {}
    }
}
