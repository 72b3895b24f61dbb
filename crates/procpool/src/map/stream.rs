//! [`MapStream`]: a [`Map`] read as an async `Stream` (`async for`), and
//! `map_stream`, whose inputs come from an async `Stream` too.
//!
//! It is the same `Map`: the same window, chunks, refusal handling and
//! futures. What differs is where the waiting and the sending happen:
//!
//! * Waiting: where `Map::next` blocks on a future or on the done queue,
//!   `poll_next` registers the task's waker there and returns `Pending`.
//!   The time limit is a [`Sleep`] on the shared timer thread.
//! * Sending: the polling task only pulls inputs and posts each chunk to
//!   the submit thread ([`super::submit`]), which submits it and hands the
//!   futures back through the stream's inbox (then wakes the task). Items
//!   posted and not yet back count in the window. Cancelling (on drop, on
//!   a time-out) is posted there too. So nothing here waits for a pool's
//!   lock, a worker's socket or a worker's answer.
//!
//! # Inputs from a `Stream`
//!
//! `map_stream(s)` pulls what `s` has ready, up to the window. A chunk is
//! sent when it holds `chunksize` inputs, when `s` ends, or when `s` has
//! nothing ready (`Pending`): an input never waits for later ones to fill
//! its chunk, so with an async input `chunksize(n)` is a maximum.
//!
//! # Shared state
//!
//! `Inbox` (one mutex, shared with the submit thread): `chunks` is pushed
//! by the submit thread and drained by the polling task; `waker` is set by
//! the polling task whenever items are out, taken by the submit thread;
//! `closed` is set once by the stream's drop or time-out, after which the
//! submit thread cancels what it submits instead of handing it back.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_core::Stream;

use super::{ChunkResult, Chunking, Entry, Indexed, Map, submit};
use crate::error::TaskError;
use crate::future::{TaskFuture, cancel_all};
use crate::lock::{lock, try_lock_or_wake};
use crate::task::Task;
use crate::timer::Sleep;

/// How long a `MapStream`'s task may run without returning `Pending`
/// (its items were all done already): then it yields once (waking itself
/// at once), so a map whose results are all ready cannot starve the other
/// tasks of a one-thread runtime. Tokio looks at its timers once every 61
/// task polls (`event_interval`), so this bounds a busy stream's delay of
/// a tokio timer to about 61 × 100 µs ≈ 6 ms.
const BUDGET: Duration = Duration::from_micros(100);

type Output<I> = <<I as Iterator>::Item as Task>::Output;
type Item<I> = Result<Output<I>, TaskError>;

/// Takes the next chunk of inputs (up to `chunksize`); `true` if more may
/// be taken at once (a full chunk of an input not yet done).
type Pull<'a, I> = fn(&mut Map<'a, I>, &mut Context<'_>) -> (Vec<<I as Iterator>::Item>, bool);

/// Chunks handed back by the submit thread. See the module docs.
struct Inbox<O> {
    /// Per chunk, in the order posted: its length and what `submit` gave.
    chunks: VecDeque<(usize, ChunkResult<O>)>,
    waker: Option<Waker>,
    closed: bool,
}

/// A `map` or `map_unordered` as an async [`Stream`]: lazy, bounded, one
/// `Result` per input, in input order (`map`) or as completed
/// (`map_unordered`), with the guarantees of [`Map`]. From
/// [`Map::into_stream`] (inputs from an iterator) or `map_stream` (inputs
/// from a `Stream`).
///
/// Polling never blocks: chunks are submitted (encoded, queued, written to
/// workers) by procpool's submit thread, and the task is woken when the
/// item it waits for is done (or its [`timeout`](Self::timeout) passes). A
/// task that has run for 100 µs without this stream returning `Pending`
/// (its items were all done already) yields to the runtime once, so a fast
/// map cannot starve the other tasks of its thread.
///
/// Dropping it midway stops pulling inputs and cancels the items that have
/// not started, as dropping a `Map` does (the cancelling, which on a
/// process pool waits for workers to hand back prefetched items, runs on
/// the submit thread: the drop itself returns at once).
///
/// ```
/// use procpool::{Executor, ThreadPool};
/// use procpool_tasks::Square;
///
/// let pool = ThreadPool::builder().workers(2).build().unwrap();
/// futures_executor::block_on(async {
///     let mut squares = pool.map((0..100u64).map(Square)).chunksize(8).into_stream();
///     let mut sum = 0;
///     while let Some(r) = squares.next().await {
///         sum += r.unwrap();
///     }
///     assert_eq!(sum, (0..100u64).map(|i| i * i).sum());
/// });
/// ```
#[must_use = "a MapStream does nothing until it is polled"]
pub struct MapStream<'a, I>
where
    I: Iterator,
    I::Item: Task,
{
    map: Map<'a, I>,
    pull: Pull<'a, I>,
    inbox: Arc<Mutex<Inbox<Output<I>>>>,
    /// Inputs posted to the submit thread whose futures are not back.
    sending: usize,
    /// A refusal (shut down, broken) has been taken in; later ones are
    /// dropped, so the stream yields one.
    refused: bool,
    /// The time limit of the item being waited for (per item, or the
    /// whole map's if sooner) and the limit to report, armed at its first
    /// `Pending` and cleared when an item is yielded.
    sleep: Option<(Sleep, Duration)>,
    armed: bool,
    /// When the task began running without a `Pending` from this stream
    /// (`None`: it just returned one).
    since: Option<Instant>,
}

impl<I> std::fmt::Debug for MapStream<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapStream")
            .field("map", &self.map)
            .field("sending", &self.sending)
            .finish()
    }
}

/// The input of a `map_stream`: an async [`Stream`] of tasks.
///
/// The [`MapStream`] reads the stream itself. `StreamInput` is an
/// `Iterator` only so that it can stand where a [`Map`] keeps its input;
/// as one it yields the tasks the stream has ready now (polled with a no-op
/// waker), and `None` when none is.
pub struct StreamInput<S> {
    stream: S,
}

impl<S> std::fmt::Debug for StreamInput<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamInput").finish_non_exhaustive()
    }
}

impl<S> StreamInput<S> {
    pub(crate) fn new(stream: S) -> Self {
        StreamInput { stream }
    }
}

impl<S: Stream + Unpin> Iterator for StreamInput<S> {
    type Item = S::Item;

    fn next(&mut self) -> Option<S::Item> {
        match Pin::new(&mut self.stream).poll_next(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(item) => item,
            Poll::Pending => None,
        }
    }
}

fn pull_from_iter<'a, I>(map: &mut Map<'a, I>, _: &mut Context<'_>) -> (Vec<I::Item>, bool)
where
    I: Iterator,
    I::Item: Task,
{
    let chunk = map.pull_chunk();
    (chunk, !map.input_done)
}

/// A chunk ends when full, when the stream ends, or when it has nothing
/// ready (its waker is then registered).
fn pull_from_stream<'a, S>(
    map: &mut Map<'a, StreamInput<S>>,
    cx: &mut Context<'_>,
) -> (Vec<S::Item>, bool)
where
    S: Stream + Unpin,
    S::Item: Task,
{
    let n = map.current_chunksize();
    let mut chunk = Vec::with_capacity(n.min(1024));
    while chunk.len() < n {
        match Pin::new(&mut map.input.stream).poll_next(cx) {
            Poll::Ready(Some(task)) => chunk.push(task),
            Poll::Ready(None) => {
                map.input_done = true;
                break;
            }
            Poll::Pending => break,
        }
    }
    map.pulled(chunk.len());
    let more = chunk.len() == n && !map.input_done;
    (chunk, more)
}

impl<'a, I> Map<'a, I>
where
    I: Iterator,
    I::Item: Task,
{
    /// This map as an async [`Stream`] (see [`MapStream`]): the same
    /// window, chunks, time limit and cancel-on-drop, without blocking the
    /// runtime.
    pub fn into_stream(self) -> MapStream<'a, I> {
        MapStream::new(self, pull_from_iter::<I>)
    }

    /// Ordered: the next item in input order, once it is done.
    fn poll_ordered(&mut self, cx: &mut Context<'_>, more: bool) -> Poll<Option<Indexed<I>>> {
        let r = match self.pending.front_mut() {
            // Nothing in flight: the end, or more to come.
            None if !more => return Poll::Ready(None),
            None => return Poll::Pending,
            Some(Entry::Ready(_)) => match self.pop_pending() {
                Some(Entry::Ready(r)) => r,
                _ => unreachable!("the front entry was Ready"),
            },
            Some(Entry::Chunk { .. }) => unreachable!("a stream's chunks are not packed"),
            Some(Entry::Future(f)) => match Pin::new(f).poll(cx) {
                Poll::Ready(r) => {
                    if let Some(Entry::Future(f)) = self.pop_pending() {
                        self.measure(self.yielded, &f);
                    }
                    r
                }
                Poll::Pending => return Poll::Pending,
            },
        };
        let index = self.yielded;
        self.yielded += 1;
        Poll::Ready(Some((index, r)))
    }

    /// Unordered: whichever item is done first; the refusal last.
    fn poll_unordered(&mut self, cx: &mut Context<'_>, more: bool) -> Poll<Option<Indexed<I>>> {
        if let Some(r) = self.ready.pop_front() {
            return Poll::Ready(Some(r));
        }
        while !self.by_key.is_empty() {
            match self.done.poll_pop(cx) {
                Poll::Ready(key) => {
                    if let Some(f) = self.by_key.remove(&key) {
                        // Done: `measure` and `result` do not wait.
                        self.measure(key, &f);
                        return Poll::Ready(Some((key, f.result())));
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if more {
            return Poll::Pending;
        }
        if let Some((index, e)) = self.refused.take() {
            return Poll::Ready(Some((index, Err(e))));
        }
        Poll::Ready(None)
    }

    /// Every future in flight, taken out (to be cancelled elsewhere).
    fn take_futures(&mut self) -> Vec<TaskFuture<Output<I>>> {
        let mut futures: Vec<_> = self
            .pending
            .drain(..)
            .filter_map(|e| match e {
                Entry::Future(f) => Some(f),
                Entry::Ready(_) | Entry::Chunk { .. } => None,
            })
            .collect();
        self.pending_len = 0;
        futures.extend(self.by_key.drain().map(|(_, f)| f));
        futures
    }
}

impl<'a, S> MapStream<'a, StreamInput<S>>
where
    S: Stream + Unpin,
    S::Item: Task,
{
    pub(crate) fn from_stream(map: Map<'a, StreamInput<S>>) -> Self {
        MapStream::new(map, pull_from_stream::<S>)
    }
}

impl<'a, I> MapStream<'a, I>
where
    I: Iterator,
    I::Item: Task,
{
    fn new(mut map: Map<'a, I>, pull: Pull<'a, I>) -> Self {
        // A stream takes its chunks back as futures (`poll` them).
        map.packer = None;
        MapStream {
            map,
            pull,
            inbox: Arc::new(Mutex::new(Inbox {
                chunks: VecDeque::new(),
                waker: None,
                closed: false,
            })),
            sending: 0,
            refused: false,
            sleep: None,
            armed: false,
            since: None,
        }
    }

    /// Sends inputs in chunks of `n` (see [`Map::chunksize`]). With inputs
    /// from a `Stream`, `n` is a maximum: a chunk is also sent when the
    /// stream has nothing ready.
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn chunksize(mut self, n: usize) -> Self {
        assert!(n != 0, "chunksize must be at least 1 (got 0)");
        self.map.chunking = Chunking::Fixed(n);
        self
    }

    /// The size of the next chunk (see [`Map::current_chunksize`]).
    pub fn current_chunksize(&self) -> usize {
        self.map.current_chunksize()
    }

    /// How many chunks may be in flight at once (see [`Map::window`]).
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn window(mut self, n: usize) -> Self {
        assert!(n != 0, "window must be at least 1 chunk (got 0)");
        self.map.window_chunks = n;
        self
    }

    /// Each item is waited for at most `d`, counted from the first poll
    /// after the previous one was yielded; then the stream yields
    /// `Err(TaskError::WaitTimedOut)`, cancels the rest and ends (as
    /// [`Map::timeout`]). `Duration::MAX` means no limit.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.map.timeout = Some(d);
        self
    }

    /// The whole stream may take at most `d` from its first poll (as
    /// [`Map::deadline`]; Python's `map(timeout=)`).
    pub fn deadline(mut self, d: Duration) -> Self {
        self.map.deadline = Some(d);
        self
    }

    /// The next result: `stream.next().await`, without importing a
    /// `StreamExt` trait. `None` once every input has its result (or after
    /// a time-out or a refusal has been yielded).
    // The async `next` of `StreamExt`: a `MapStream` is no `Iterator`.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> impl Future<Output = Option<Item<I>>> + '_ {
        std::future::poll_fn(move |cx| self.poll_item(cx))
    }

    /// Posts `chunk` to the submit thread; its futures come back through
    /// the inbox (or are cancelled there if the stream is gone by then).
    fn send(&mut self, chunk: Vec<I::Item>) {
        let n = chunk.len();
        self.sending += n;
        let submit = self.map.submit.clone();
        let inbox = self.inbox.clone();
        submit::post(move || {
            let sent = submit(chunk);
            let mut ib = lock(&inbox);
            if ib.closed {
                drop(ib);
                if let Ok(items) = &sent {
                    cancel_all(items.iter().filter_map(|r| r.as_ref().ok()));
                }
                return;
            }
            ib.chunks.push_back((n, sent));
            let waker = ib.waker.take();
            drop(ib);
            if let Some(w) = waker {
                w.wake();
            }
        });
    }

    /// Takes in the chunks the submit thread handed back; registers the
    /// task's waker if items are still out.
    fn take_in(&mut self, cx: &mut Context<'_>) {
        let chunks = {
            let Some(mut ib) = try_lock_or_wake(&self.inbox, cx) else {
                return; // polled again at once
            };
            let chunks = std::mem::take(&mut ib.chunks);
            let back: usize = chunks.iter().map(|(n, _)| n).sum();
            if self.sending > back {
                match &ib.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => ib.waker = Some(cx.waker().clone()),
                }
            }
            chunks
        };
        for (n, sent) in chunks {
            self.sending -= n;
            if sent.is_err() {
                if self.refused {
                    continue;
                }
                self.refused = true;
            }
            self.map.accept(sent);
        }
    }

    /// Stops the submit thread from handing anything back and cancels
    /// every future in flight there.
    fn cancel_off_thread(&mut self) {
        lock(&self.inbox).closed = true;
        let futures = self.map.take_futures();
        if !futures.is_empty() {
            submit::post(move || cancel_all(&futures));
        }
    }

    /// Yields to the runtime once (`Pending`, woken at once).
    fn yield_now(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item<I>>> {
        self.since = None;
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item<I>>> {
        if self.map.ended {
            return Poll::Ready(None);
        }
        if self.map.deadline.is_some() && self.map.deadline_at.is_none() {
            self.map.wait_limit(); // the whole map's clock starts now
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= BUDGET {
            return self.yield_now(cx);
        }
        // Fill the window (what is out counts), then take in what is back.
        let mut unfilled = false;
        while !self.map.input_done && self.map.in_flight() + self.sending < self.map.window_inputs()
        {
            let (chunk, more) = (self.pull)(&mut self.map, cx);
            if !chunk.is_empty() {
                self.send(chunk);
            }
            if !more {
                break;
            }
            if since.elapsed() >= BUDGET {
                unfilled = true;
                break;
            }
        }
        self.take_in(cx);
        let more = !self.map.input_done || self.sending > 0;
        let got = if self.map.ordered {
            self.map.poll_ordered(cx, more)
        } else {
            self.map.poll_unordered(cx, more)
        };
        match got {
            Poll::Ready(item) => {
                self.sleep = None;
                self.armed = false;
                if item.is_none() {
                    self.map.ended = true;
                }
                self.map.tick(item.is_some());
                Poll::Ready(item.map(|(_, r)| r))
            }
            // Out of budget with room left in the window: come back.
            Poll::Pending if unfilled => self.yield_now(cx),
            Poll::Pending => {
                self.since = None;
                if !self.armed {
                    self.armed = true;
                    self.sleep = self.map.wait_limit().and_then(|(wait, after)| {
                        crate::deadline::after(wait).map(|at| (Sleep::until(at), after))
                    });
                }
                let Some((sleep, after)) = &mut self.sleep else {
                    return Poll::Pending;
                };
                if sleep.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let after = *after;
                let index = if self.map.ordered {
                    self.map.yielded
                } else {
                    let first = self.map.by_key.keys().min().copied();
                    first.unwrap_or(self.map.next_key)
                };
                self.cancel_off_thread();
                let item = self.map.give_up(index, after);
                self.map.tick(item.is_some());
                Poll::Ready(item)
            }
        }
    }
}

impl<I> Drop for MapStream<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
    fn drop(&mut self) {
        // The map's own drop then finds nothing left to cancel.
        self.cancel_off_thread();
    }
}

// Nothing in a `MapStream` is pinned: the input is only used through
// `&mut` (a stream input is `Unpin`), the futures it holds are `Unpin`.
impl<I> Unpin for MapStream<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
}

impl<I> Stream for MapStream<'_, I>
where
    I: Iterator,
    I::Item: Task,
{
    type Item = Item<I>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}
