//! `TaskFuture<T>`: the handle to one submitted task.
//!
//! # Shared state
//!
//! A future's state lives in a `Core` behind an `Arc`, shared between the
//! user's [`TaskFuture`] and the pool that will resolve it. The `slot` mutex
//! guards everything that changes:
//!
//! * `state` moves only forward: `Pending → Running → Done` or
//!   `Pending → Done`. The pool writes it; anyone reads it.
//! * `outcome` is `Some` from the moment the state is `Done` until the value
//!   is taken by `result()` or `.await`.
//! * `released` is set once the state is `Done` *and* every callback
//!   registered before that has run: only then are waiters (`result()`,
//!   `wait_timeout`, `.await`, watchers for `as_completed`/`wait`/`Map`)
//!   let go, so a callback sees the outcome before anyone can take it
//!   (SEMANTICS point 7). A callback itself does not wait for `released`
//!   (see `callbacks::in_callback`): it may wait on a future whose own
//!   callbacks are queued behind it.
//! * `callbacks`, `waker` and `watchers` are taken out, under the lock, by
//!   the one `Release` of the future, and run after the lock is
//!   released: a callback may read its own future. Callbacks registered
//!   while the release runs are run by it too, before `released` is set.
//!
//! Completing is two steps: `Core::complete` moves the state to `Done`
//! (cheap, under the slot lock only, so a pool may do it under its own
//! lock and every later `cancel()` sees the result at once), and the
//! `Release` it returns runs the callbacks and lets waiters go, outside
//! every lock — on this thread, or on the pool's callback thread when this
//! is one of the pool's own threads (see `callbacks.rs`).
//!
//! Lock order: a pool's own lock may be held while taking a slot lock, never
//! the other way round, and no callback runs under either.
//!
//! A future's own waits never spin: blocking waits use the condvar, async
//! waits the waker. `as_completed`/`wait`/`map_unordered` wait on a
//! `Watch` (`waiting::DoneQueue`), whose waiter looks briefly before it
//! parks while results come quickly (`waiting::LOOK`).

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use procpool_wire::codec;
use serde::de::DeserializeOwned;

use crate::callbacks;
use crate::cost::{Cost, StatsCollector};
use crate::error::{Side, TaskError, WaitError};
// A panic never happens while a slot is locked (callbacks run outside),
// but a poisoned lock must not turn into a second panic.
use crate::lock::lock;
use crate::sync::{Condvar, Mutex, MutexGuard};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started: queued in the pool, or prefetched by a worker that has
    /// not begun it.
    Pending,
    /// A worker has begun it.
    Running,
    /// Finished, failed or cancelled.
    Done,
}

type Callback<T> = Box<dyn FnOnce(&TaskFuture<T>) + Send>;

/// Told when a future is done, with the key it was registered with.
pub(crate) trait Watch: Send + Sync {
    fn done(&self, key: usize);

    /// [`done`](Self::done) for many keys at once.
    fn done_many(&self, keys: &mut dyn Iterator<Item = usize>) {
        for key in keys {
            self.done(key);
        }
    }
}

/// Watchers told of futures done on this thread inside [`tell_after`],
/// held until it returns.
type Held = std::cell::RefCell<Option<Vec<Heard>>>;

/// Who hears of a future done inside [`tell_after`].
enum Heard {
    /// A watcher, with the future's key.
    Watch(Arc<dyn Watch>, usize),
    /// The future's own waiters (`wait`, `result`).
    Waiters(Arc<dyn Wake>),
}

/// Wakes a future's blocked waiters.
trait Wake: Send + Sync {
    fn wake_waiters(&self);
}

#[cfg(not(procpool_loom))]
thread_local! {
    static HELD: Held = const { std::cell::RefCell::new(None) };
}

// Per model thread under the model checker (see `callbacks.rs`).
#[cfg(procpool_loom)]
loom::thread_local! {
    static HELD: Held = std::cell::RefCell::new(None);
}

/// Runs `f`; the waiters and watchers of futures it completes on this
/// thread are woken when it returns, each watcher once for all its keys
/// (in the order they ended), instead of one wake-up per future. The pool's reader delivers a run of results
/// so: a `map_unordered` woken by the first result of a run took that one
/// and slept again before the next was in (issue 14); an ordered `map`
/// waiting on one future of the run took it and waited on the next. The
/// futures themselves are done at once (`done()`, `state()`); only the
/// wake-ups come at the end of the run (microseconds).
pub(crate) fn tell_after<R>(f: impl FnOnce() -> R) -> R {
    struct Tell(bool);
    impl Drop for Tell {
        fn drop(&mut self) {
            if !self.0 {
                return;
            }
            let held = HELD.with(|h| h.borrow_mut().take()).unwrap_or_default();
            let mut rest = held.as_slice();
            while let Some(first) = rest.first() {
                match first {
                    Heard::Waiters(f) => {
                        f.wake_waiters();
                        rest = &rest[1..];
                    }
                    Heard::Watch(w, _) => {
                        let n = rest
                            .iter()
                            .take_while(|h| matches!(h, Heard::Watch(x, _) if Arc::ptr_eq(x, w)))
                            .count();
                        w.done_many(&mut rest[..n].iter().filter_map(|h| match h {
                            Heard::Watch(_, k) => Some(*k),
                            Heard::Waiters(_) => None,
                        }));
                        rest = &rest[n..];
                    }
                }
            }
        }
    }
    let outermost = HELD.with(|h| {
        let mut h = h.borrow_mut();
        h.is_none().then(|| *h = Some(Vec::new())).is_some()
    });
    let _tell = Tell(outermost);
    f()
}

/// Tells `w` that the future it watches with `key` is done: now, or when
/// the [`tell_after`] this thread is in returns.
fn tell(w: Arc<dyn Watch>, key: usize) {
    if let Some(Heard::Watch(w, key)) = hold(Heard::Watch(w, key)) {
        w.done(key);
    }
}

/// Keeps `h` for the end of the [`tell_after`] this thread is in; hands it
/// back if it is in none.
fn hold(h: Heard) -> Option<Heard> {
    HELD.with(|held| match held.borrow_mut().as_mut() {
        Some(held) => {
            held.push(h);
            None
        }
        None => Some(h),
    })
}

/// The pool side of `cancel()`, for pools that cannot decide it from the
/// future's state alone (a process pool whose worker may have prefetched
/// the task).
pub(crate) trait Control: Send + Sync {
    /// Tries to withdraw task `id`; `true` only if it will never run (the
    /// future is then already `Done` and cancelled).
    fn cancel(&self, id: u64) -> bool;

    /// [`cancel`](Self::cancel) for many tasks at once.
    fn cancel_many(&self, ids: &[u64]) -> Vec<bool> {
        ids.iter().map(|&id| self.cancel(id)).collect()
    }

    /// Stops task `id` even if it runs, by killing its worker; `true` if
    /// the kill was issued (the future then ends cancelled).
    fn kill(&self, _id: u64) -> bool {
        false
    }
}

struct Slot<T> {
    state: State,
    /// Threads blocked on `cond`: `finish` skips the wake-up syscall when
    /// nobody waits.
    waiters: u32,
    cancelled: bool,
    /// `Done` and its callbacks have run: waiters may go.
    released: bool,
    outcome: Option<Result<T, TaskError>>,
    cost: Option<Cost>,
    callbacks: Vec<Callback<T>>,
    waker: Option<Waker>,
    watchers: Watchers,
}

/// The shared state of one future. See the module docs for its invariants.
pub(crate) struct Core<T> {
    id: u64,
    name: &'static str,
    me: Weak<Core<T>>,
    slot: Mutex<Slot<T>>,
    cond: Condvar,
    control: Option<Arc<dyn Control>>,
}

/// What a pool needs from a future without knowing its output type.
pub(crate) trait Resolve: Send + Sync {
    /// `Pending → Running`; `false` if it is already `Done` (cancelled).
    fn mark_running(&self) -> bool;
    /// Ends the future with an error; `false` if it was already done.
    fn fail(&self, err: TaskError) -> bool;
    /// `Pending → Done(Cancelled)`: `true` if it is cancelled now or was
    /// already.
    fn cancel_local(&self) -> bool {
        let (cancelled, release) = self.cancel_begin();
        if let Some(r) = release {
            r.run();
        }
        cancelled
    }
    /// The first step of [`cancel_local`](Self::cancel_local): the state
    /// moves to `Done(Cancelled)` now (a pool may call this under its own
    /// lock); the `Release` must be run once every lock is released.
    fn cancel_begin(&self) -> (bool, Option<Release>);
    /// `Done(Cancelled)` for a task its worker handed back unrun, even if
    /// it is `Running`: the pool marks a task of a batch running when the
    /// one before it ends, and the worker may have handed it back to a
    /// `cancel()` just before. The `Release` as for `cancel_begin`.
    fn withdrawn_begin(&self) -> Option<Release> {
        self.cancel_begin().1
    }
}

/// The second step of completing a future: runs its callbacks, then lets
/// its waiters go. Run it outside every lock (see the module docs);
/// dropping it runs it too, so that no future can stay unreleased.
#[must_use = "a future's waiters are released only when its Release runs"]
pub(crate) struct Release(Option<Arc<dyn Settle>>);

/// A future that is `Done` but not yet released.
pub(crate) trait Settle: Send + Sync {
    /// Runs the callbacks and releases the waiters. With `may_defer`, on a
    /// pool's own thread, callbacks go to the pool's callback thread (which
    /// then finishes the release).
    fn release(&self, may_defer: bool);
}

impl Release {
    /// Releases the future (see [`Settle::release`]).
    pub(crate) fn run(mut self) {
        if let Some(core) = self.0.take() {
            core.release(true);
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.0.is_some() {
            Release(self.0.take()).run();
        }
    }
}

/// A future whose output arrives as bytes (the process pool's).
pub(crate) trait ResolveBytes: Resolve {
    /// Decodes the output (its bytes and the descriptors of its shared
    /// payloads, from worker slot `worker`) and ends the future with it (or
    /// with a `Decode` error, or `Protocol` if the worker sent a bad
    /// shared-payload reference). Fills in `decode_output`, `total` and
    /// `ipc`, and records the outcome in `stats` before anyone waiting can
    /// see it. Returns the protocol violation, if it was one: the caller
    /// ends the worker.
    fn complete_bytes(
        &self,
        input: crate::task::Input<'_>,
        worker: usize,
        cost: Cost,
        submitted: Instant,
        stats: &StatsCollector,
    ) -> Option<String>;

    /// A packed chunk of a `map` (see `map::chunk`), not one task.
    fn as_chunk(&self) -> Option<&dyn crate::map::chunk::Chunk> {
        None
    }
}

/// Who to tell when a future is done. Nearly always one (`map_unordered`,
/// `as_completed`, `wait`) or none: the first needs no allocation, which
/// at a few hundred thousand futures a second shows.
#[derive(Default)]
struct Watchers {
    first: Option<(Arc<dyn Watch>, usize)>,
    more: Vec<(Arc<dyn Watch>, usize)>,
}

impl Watchers {
    fn push(&mut self, w: Arc<dyn Watch>, key: usize) {
        if self.first.is_none() {
            self.first = Some((w, key));
        } else {
            self.more.push((w, key));
        }
    }
}

impl<T: Send + 'static> Core<T> {
    pub(crate) fn new(
        id: u64,
        name: &'static str,
        control: Option<Arc<dyn Control>>,
    ) -> Arc<Core<T>> {
        Arc::new_cyclic(|me| Core {
            id,
            name,
            me: me.clone(),
            slot: Mutex::new(Slot {
                state: State::Pending,
                waiters: 0,
                cancelled: false,
                released: false,
                outcome: None,
                cost: None,
                callbacks: Vec::new(),
                waker: None,
                watchers: Watchers::default(),
            }),
            cond: Condvar::new(),
            control,
        })
    }

    /// Moves to `Done` with `outcome` and releases it (callbacks, then
    /// waiters, outside the lock). `false` if already done.
    pub(crate) fn finish(&self, outcome: Result<T, TaskError>, cost: Option<Cost>) -> bool {
        match self.complete(outcome, cost) {
            Some(release) => {
                release.run();
                true
            }
            None => false,
        }
    }

    /// The first step of [`finish`](Self::finish): moves to `Done` under the
    /// slot lock only; `None` if already done. Run the `Release` outside
    /// every lock.
    pub(crate) fn complete(
        &self,
        outcome: Result<T, TaskError>,
        cost: Option<Cost>,
    ) -> Option<Release> {
        self.complete_from(outcome, cost, false)
    }

    /// [`complete`](Self::complete); with `pending_only`, only a future
    /// that has not started (checked under the same lock that ends it, so
    /// a worker's `mark_running` cannot slip in between).
    fn complete_from(
        &self,
        outcome: Result<T, TaskError>,
        cost: Option<Cost>,
        pending_only: bool,
    ) -> Option<Release> {
        let cancelled = matches!(outcome, Err(TaskError::Cancelled));
        {
            let mut s = lock(&self.slot);
            if s.state == State::Done || (pending_only && s.state == State::Running) {
                return None;
            }
            s.state = State::Done;
            s.cancelled = cancelled;
            s.outcome = Some(outcome);
            s.cost = cost;
        }
        // The caller holds a strong reference, so this upgrade succeeds.
        let me: Option<Arc<dyn Settle>> = self.me.upgrade().map(|c| c as Arc<dyn Settle>);
        if me.is_none() {
            self.release(true);
        }
        Some(Release(me))
    }

    /// Whether this thread may see the future as finished: it is released,
    /// or it is `Done` and this thread is running a callback (which must
    /// not wait for callbacks queued behind it).
    fn ready(s: &Slot<T>) -> bool {
        s.released || (s.state == State::Done && callbacks::in_callback())
    }

    /// Registers `w` to be told (with `key`) when this future is done;
    /// tells it at once if it already is.
    pub(crate) fn watch(&self, w: Arc<dyn Watch>, key: usize) {
        {
            let mut s = lock(&self.slot);
            if !s.released {
                s.watchers.push(w, key);
                return;
            }
        }
        w.done(key);
    }

    /// Done with a failure other than cancellation (for `wait`'s
    /// `FirstException`).
    pub(crate) fn is_exception(&self) -> bool {
        let s = lock(&self.slot);
        matches!(&s.outcome, Some(Err(e)) if !e.is_cancelled())
    }
}

/// Cancels every future that has not started, with one round of messages
/// per pool rather than a round trip per future (for `Map`'s drop and
/// time-out).
pub(crate) fn cancel_all<'a, T: Send + 'static>(
    futures: impl IntoIterator<Item = &'a TaskFuture<T>>,
) {
    let mut groups: Vec<(Arc<dyn Control>, Vec<u64>)> = Vec::new();
    for f in futures {
        if f.state() != State::Pending {
            continue;
        }
        match &f.core.control {
            None => {
                f.core.cancel_local();
            }
            Some(c) => match groups.iter_mut().find(|(g, _)| Arc::ptr_eq(g, c)) {
                Some((_, ids)) => ids.push(f.core.id),
                None => groups.push((c.clone(), vec![f.core.id])),
            },
        }
    }
    for (control, ids) in groups {
        control.cancel_many(&ids);
    }
}

impl<T: Send + 'static> Wake for Core<T> {
    fn wake_waiters(&self) {
        self.cond.notify_all();
    }
}

impl<T: Send + 'static> Settle for Core<T> {
    fn release(&self, may_defer: bool) {
        let handle = self.me.upgrade().map(|core| TaskFuture { core });
        let (waker, watchers, waiters) = loop {
            let callbacks = {
                let mut s = lock(&self.slot);
                if s.callbacks.is_empty() || handle.is_none() {
                    s.released = true;
                    s.callbacks.clear();
                    break (s.waker.take(), std::mem::take(&mut s.watchers), s.waiters);
                }
                if may_defer && let Some(h) = &handle {
                    drop(s);
                    let core = h.core.clone();
                    if let Some(job) = callbacks::defer(Box::new(move || core.release(false))) {
                        job(); // not a pool thread, or no callback thread: here
                    }
                    return;
                }
                std::mem::take(&mut s.callbacks)
            };
            if let Some(h) = &handle {
                for cb in callbacks {
                    run_callback(cb, h);
                }
            }
        };
        if waiters > 0 {
            match self.me.upgrade() {
                Some(me) => {
                    if hold(Heard::Waiters(me)).is_some() {
                        self.cond.notify_all();
                    }
                }
                None => self.cond.notify_all(),
            }
        }
        if let Some(w) = waker {
            w.wake();
        }
        for (w, key) in watchers.first.into_iter().chain(watchers.more) {
            tell(w, key);
        }
    }
}

fn run_callback<T>(cb: Callback<T>, handle: &TaskFuture<T>) {
    if let Err(p) = callbacks::as_callback(|| cb(handle)) {
        tracing::error!(
            target: "procpool::pool",
            { task.id = handle.core.id,
            task.name = handle.core.name },
        "a done-callback panicked: {}",
            codec::panic_message(&*p)
        );
    }
}

impl<T: Send + 'static> Resolve for Core<T> {
    fn mark_running(&self) -> bool {
        let mut s = lock(&self.slot);
        match s.state {
            State::Pending => {
                s.state = State::Running;
                true
            }
            State::Running => true,
            State::Done => false,
        }
    }
    fn fail(&self, err: TaskError) -> bool {
        self.finish(Err(err), None)
    }
    fn withdrawn_begin(&self) -> Option<Release> {
        self.complete_from(Err(TaskError::Cancelled), None, false)
    }
    fn cancel_begin(&self) -> (bool, Option<Release>) {
        {
            let s = lock(&self.slot);
            match s.state {
                State::Done => return (s.cancelled, None),
                State::Running => return (false, None),
                State::Pending => {}
            }
        }
        // Another thread may finish or start it between the check and
        // here; `complete_from` then does nothing and the state tells which
        // won (a task that started is not cancelled: SEMANTICS.md 2).
        match self.complete_from(Err(TaskError::Cancelled), None, true) {
            Some(r) => (true, Some(r)),
            None => (lock(&self.slot).cancelled, None),
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> ResolveBytes for Core<T> {
    fn complete_bytes(
        &self,
        input: crate::task::Input<'_>,
        worker: usize,
        mut cost: Cost,
        submitted: Instant,
        stats: &StatsCollector,
    ) -> Option<String> {
        let t = Instant::now();
        let (bytes, bulk) = (input.bytes, input.bulk);
        let (decoded, shared_error) =
            crate::shared::decode_with(input.mode, input.fds, input.limit, || {
                codec::decode_bulk::<T>(bytes, bulk, input.bulk_bytes)
            });
        let decoded_at = Instant::now();
        cost.decode_output = decoded_at.saturating_duration_since(t);
        cost.total = decoded_at.saturating_duration_since(submitted);
        let cost = cost.with_remainder();
        match decoded {
            Ok(v) => {
                stats.record(Some(&cost));
                self.finish(Ok(v), Some(cost));
                None
            }
            Err(e) => {
                stats.record(None);
                let mut violation = None;
                let err = match shared_error {
                    // The worker's result declared bulk byte strings its
                    // payload has no place for: it broke the protocol.
                    None if matches!(e, codec::CodecError::Bulk(_)) => {
                        let message = e.to_string();
                        violation = Some(message.clone());
                        TaskError::Protocol { worker, message }
                    }
                    Some(crate::shared::SharedError::BadReference(message)) => {
                        let message = format!("bad shared-payload reference: {message}");
                        violation = Some(message.clone());
                        TaskError::Protocol { worker, message }
                    }
                    Some(other) => TaskError::Decode {
                        side: Side::Parent,
                        type_name: std::any::type_name::<T>().to_owned(),
                        message: other.to_string(),
                    },
                    None => TaskError::Decode {
                        side: Side::Parent,
                        type_name: std::any::type_name::<T>().to_owned(),
                        message: e.to_string(),
                    },
                };
                self.finish(Err(err), None);
                violation
            }
        }
    }
}

/// The handle to one submitted task, from a thread or a process pool.
///
/// Dropping it detaches the task: it still runs, its output is discarded.
/// It is `Send + Sync`: many threads may wait on one future at once.
/// It is also a [`std::future::Future`], so `pool.submit(t)?.await` works
/// in any async runtime without blocking it.
///
/// ```
/// use std::time::Duration;
/// use procpool::{State, TaskError, ThreadPool};
///
/// let pool = ThreadPool::builder().workers(1).build().unwrap();
/// let slow = pool.spawn(|| { std::thread::sleep(Duration::from_millis(50)); 1 }).unwrap();
/// let queued = pool.spawn(|| 2).unwrap();
/// assert_eq!(queued.state(), State::Pending);
/// assert!(queued.cancel(), "not started: it will never run");
/// assert_eq!(queued.error(), Some(TaskError::Cancelled));
/// slow.add_done_callback(|f| assert!(f.done()));
/// assert_eq!(slow.result().unwrap(), 1);
/// ```
pub struct TaskFuture<T> {
    core: Arc<Core<T>>,
}

impl<T> fmt::Debug for TaskFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = lock(&self.core.slot);
        f.debug_struct("TaskFuture")
            .field("id", &self.core.id)
            .field("task", &self.core.name)
            .field("state", &s.state)
            .field("cancelled", &s.cancelled)
            .finish()
    }
}

impl<T: Send + 'static> TaskFuture<T> {
    pub(crate) fn from_core(core: Arc<Core<T>>) -> TaskFuture<T> {
        TaskFuture { core }
    }

    pub(crate) fn core(&self) -> &Arc<Core<T>> {
        &self.core
    }

    /// The pool's id for this task (unique within its pool).
    pub fn id(&self) -> u64 {
        self.core.id
    }

    /// The task's `NAME` (`"closure"` for `ThreadPool::spawn`).
    pub fn task_name(&self) -> &'static str {
        self.core.name
    }

    /// `Pending`, `Running` or `Done`.
    pub fn state(&self) -> State {
        lock(&self.core.slot).state
    }

    /// Finished, failed or cancelled.
    pub fn done(&self) -> bool {
        self.state() == State::Done
    }

    /// A worker has begun it and it has not finished.
    pub fn running(&self) -> bool {
        self.state() == State::Running
    }

    /// Ended by `cancel()` (or a shutdown that cancelled it).
    pub fn is_cancelled(&self) -> bool {
        lock(&self.core.slot).cancelled
    }

    /// Cancels the task if it has not started. `true` means it will never
    /// run (also when it was already cancelled); `false` means it is running
    /// or done. A task a worker has prefetched is withdrawn from that worker
    /// (the wait for its answer is bounded by about a round trip). Never
    /// blocks on a running task.
    pub fn cancel(&self) -> bool {
        {
            let s = lock(&self.core.slot);
            match s.state {
                State::Done => return s.cancelled,
                State::Running => return false,
                State::Pending => {}
            }
        }
        match &self.core.control {
            // Another thread's cancel may have won the race: once the
            // future is cancelled, every cancel() is `true` (SEMANTICS 30).
            Some(c) => c.cancel(self.core.id) || self.is_cancelled(),
            None => self.core.cancel_local(),
        }
    }

    /// Stops the task even if it is running: a queued task is cancelled as
    /// by [`cancel`](Self::cancel); a running task's worker process is
    /// killed (and replaced) and the future ends `Done` and cancelled.
    /// Returns whether the task was stopped. Threads cannot be killed: on a
    /// `ThreadPool` a running task returns `false`.
    pub fn kill(&self) -> bool {
        {
            let s = lock(&self.core.slot);
            match s.state {
                State::Done => return s.cancelled,
                State::Pending => {
                    drop(s);
                    return self.cancel();
                }
                State::Running => {}
            }
        }
        match &self.core.control {
            Some(c) if c.kill(self.core.id) => {
                self.wait_timeout(Duration::from_secs(10));
                self.is_cancelled()
            }
            _ => false,
        }
    }

    /// Blocks until released (see the module docs) or `timeout` passes
    /// (`None`, or a timeout too large for the clock: no limit); returns
    /// the locked slot.
    fn wait_done(&self, timeout: Option<Duration>) -> MutexGuard<'_, Slot<T>> {
        let mut s = lock(&self.core.slot);
        if Core::ready(&s) {
            return s;
        }
        let deadline = timeout.and_then(crate::deadline::after);
        s.waiters += 1;
        loop {
            if Core::ready(&s) {
                break;
            }
            match crate::deadline::left(deadline) {
                // No timeout, or one too large for the clock: no limit.
                None => s = self.core.cond.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(left) if left.is_zero() => break,
                Some(left) => {
                    s = self
                        .core
                        .cond
                        .wait_timeout(s, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        s.waiters -= 1;
        s
    }

    /// Waits up to `timeout` for the task to be done; returns whether it is.
    /// `Duration::MAX` (or any duration too large for the clock) waits
    /// without limit.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        Core::ready(&self.wait_done(Some(timeout)))
    }

    /// Blocks until the task is done.
    pub fn wait(&self) {
        drop(self.wait_done(None));
    }

    /// Blocks until done and returns the task's output or its error.
    ///
    /// # Panics
    /// If the value was already taken by awaiting this future.
    pub fn result(self) -> Result<T, TaskError> {
        let mut s = self.wait_done(None);
        s.outcome
            .take()
            .expect("TaskFuture::result called after the value was taken by .await")
    }

    /// Like [`result`](Self::result) but waits at most `timeout`; on time-out
    /// the future is handed back untouched (nothing is cancelled).
    /// `Duration::MAX` waits without limit.
    pub fn result_timeout(self, timeout: Duration) -> Result<T, WaitError<T>> {
        if self.wait_timeout(timeout) {
            self.result().map_err(WaitError::Failed)
        } else {
            Err(WaitError::TimedOut(self))
        }
    }

    /// The task's error, without blocking or consuming the future: `Some`
    /// only when it is done with a failure.
    pub fn error(&self) -> Option<TaskError> {
        match &lock(&self.core.slot).outcome {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        }
    }

    /// What the task cost, once it finished with a value.
    pub fn cost(&self) -> Option<Cost> {
        lock(&self.core.slot).cost
    }

    /// Runs `f` once the task is done: now, on this thread, if it already
    /// is; otherwise on the thread that completes it, or — for a process
    /// pool — on the pool's callback thread (keep it short). Callbacks
    /// registered before completion have run before any waiter
    /// (`result()`, `wait`, `as_completed`, `.await`) is released, so a
    /// callback sees the outcome (`error()` of a failed task is `Some`).
    /// Inside a callback the pool may be used freely: `cancel()`,
    /// `shutdown()`, dropping the pool. A panicking callback is logged;
    /// other callbacks still run.
    pub fn add_done_callback<F>(&self, f: F)
    where
        F: FnOnce(&TaskFuture<T>) + Send + 'static,
    {
        {
            let mut s = lock(&self.core.slot);
            if !s.released {
                s.callbacks.push(Box::new(f));
                return;
            }
        }
        run_callback(Box::new(f), self);
    }
}

impl<T: Send + 'static> std::future::Future for TaskFuture<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(mut s) = crate::lock::try_lock_or_wake(&self.core.slot, cx) else {
            return Poll::Pending; // never wait for a lock in `poll`
        };
        if Core::ready(&s) {
            return Poll::Ready(
                s.outcome
                    .take()
                    .expect("TaskFuture polled after it returned Ready"),
            );
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
#[path = "future_tests.rs"]
mod tests;
