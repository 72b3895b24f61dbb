//! The soak's threads: drivers that submit, wait, cancel, drop and map at
//! random, and the monkey that stops and rebuilds the pools under them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use procpool::{
    ProcessPool, ReturnWhen, Shutdown, SubmitError, TaskError, TaskFuture, ThreadPool,
    WorkerCommand, as_completed, wait,
};

use super::chaos::{Act, Chaos, Echoed, Rng, payload};
use super::ledger::{Kind, Ledger, PoolKind, Stop, Via};

/// One pool in use, with its ledger index.
#[derive(Clone)]
pub(crate) enum PoolRef {
    Process(Arc<ProcessPool>, usize),
    Thread(Arc<ThreadPool>, usize),
}

impl PoolRef {
    fn index(&self) -> usize {
        match self {
            PoolRef::Process(_, i) | PoolRef::Thread(_, i) => *i,
        }
    }
    fn is_process(&self) -> bool {
        matches!(self, PoolRef::Process(..))
    }
}

/// What every soak thread shares.
pub(crate) struct Shared {
    pub ledger: Arc<Ledger>,
    pub deadline: Instant,
    pub workers: usize,
    pub worker: WorkerCommand,
    pub transport: procpool::Transport,
    pub process: Mutex<Option<PoolRef>>,
    pub thread: Mutex<Option<PoolRef>>,
    /// Each thread's current operation and since when (for hang reports).
    pub status: Vec<Mutex<(String, Instant)>>,
    /// Set when a thread must stop early (a hang elsewhere).
    pub abort: AtomicBool,
    pub rebuilds: AtomicU64,
    pub ops: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn set_status(&self, me: usize, op: impl Into<String>) {
        *lock(&self.status[me]) = (op.into(), Instant::now());
    }

    fn running(&self) -> bool {
        Instant::now() < self.deadline && !self.abort.load(Ordering::Relaxed)
    }

    /// A new process pool, registered in the ledger.
    pub fn build_process(&self) -> Result<PoolRef, String> {
        let pool = ProcessPool::builder()
            .worker(self.worker.clone())
            .transport(self.transport)
            .workers(self.workers)
            .max_restarts(50)
            .build()
            .map_err(|e| e.to_string())?;
        let idx = self.ledger.new_pool(PoolKind::Process);
        Ok(PoolRef::Process(Arc::new(pool), idx))
    }

    /// A new thread pool, registered in the ledger.
    pub fn build_thread(&self) -> Result<PoolRef, String> {
        let pool = ThreadPool::builder()
            .workers(self.workers)
            .build()
            .map_err(|e| e.to_string())?;
        let idx = self.ledger.new_pool(PoolKind::Thread);
        Ok(PoolRef::Thread(Arc::new(pool), idx))
    }

    /// Stops `pool` as `how` says, after telling the ledger.
    pub fn stop(&self, pool: PoolRef, how: Stop) {
        self.ledger.stopping(pool.index(), how);
        let idx = pool.index();
        let broken = match &pool {
            PoolRef::Process(p, _) => p.broken(),
            PoolRef::Thread(..) => None,
        };
        if let Some(r) = broken {
            self.ledger.broken(idx, r);
        }
        let run = |mode: Shutdown| match &pool {
            PoolRef::Process(p, _) => p.shutdown(mode),
            PoolRef::Thread(p, _) => p.shutdown(mode),
        };
        match how {
            Stop::Wait => run(Shutdown::Wait),
            Stop::CancelPending => run(Shutdown::CancelPending),
            Stop::Kill => run(Shutdown::Kill),
            Stop::Dropped => {}
            Stop::WaitRacingKill => {
                let other = pool.clone();
                let waiter = std::thread::spawn(move || match &other {
                    PoolRef::Process(p, _) => p.shutdown(Shutdown::Wait),
                    PoolRef::Thread(p, _) => p.shutdown(Shutdown::Wait),
                });
                std::thread::sleep(Duration::from_millis(2));
                run(Shutdown::Kill);
                let _ = waiter.join();
            }
        }
        if let PoolRef::Process(p, _) = &pool
            && let Some(r) = p.broken()
        {
            self.ledger.broken(idx, r);
        }
        drop(pool);
    }
}

/// A future the driver holds, with what it needs to check the value.
struct Held {
    id: u64,
    len: usize,
    pool: usize,
    fut: TaskFuture<Echoed>,
}

/// The kind a done future's callback sees.
fn kind_of(f: &TaskFuture<Echoed>) -> Kind {
    match f.error() {
        Some(e) => Kind::of(&e),
        None if f.is_cancelled() => Kind::Cancelled,
        None => Kind::Value,
    }
}

/// Records a consumed outcome, checking a value against its input.
fn consume(ledger: &Ledger, id: u64, len: usize, r: Result<Echoed, TaskError>) -> Kind {
    match r {
        Ok(v) if v.id == id && v.payload.len() == len && *v.payload == payload(id, len)[..] => {
            ledger.consumed(id, Kind::Value, None);
            Kind::Value
        }
        Ok(v) => {
            let note = format!("wrong value: id {} with {} bytes", v.id, v.payload.len());
            ledger.consumed(id, Kind::Unexpected, Some(note));
            Kind::Unexpected
        }
        Err(e) => {
            let k = Kind::of(&e);
            ledger.consumed(id, k, (k == Kind::Unexpected).then(|| e.to_string()));
            k
        }
    }
}

/// A task for a submit: what it does, its own timeout, what it should end
/// as, and a name for messages.
fn pick_submit(rng: &mut Rng, process: bool) -> (Act, Option<Duration>, Kind, &'static str) {
    let timeout = Some(Duration::from_millis(rng.range(50, 300)));
    let w: &[u64] = if process {
        &[40, 15, 10, 4, 3, 3, 3, 2]
    } else {
        &[40, 15, 10, 0, 0, 0, 0, 0]
    };
    match rng.weighted(w) {
        0 => (Act::Value, None, Kind::Value, "value"),
        1 => (
            Act::Sleep(rng.range(1, 20) as u32),
            None,
            Kind::Value,
            "sleep",
        ),
        2 => (
            Act::Panic {
                loud: rng.chance(10),
            },
            None,
            Kind::Panicked,
            "panic",
        ),
        3 => (Act::KillSelf, None, Kind::WorkerDied, "SIGKILL"),
        4 => (Act::Abort, None, Kind::WorkerDied, "abort"),
        5 => (Act::Exit(3), None, Kind::WorkerDied, "exit(3)"),
        6 => (Act::Hang, timeout, Kind::TimedOut, "hang with a timeout"),
        _ => (
            Act::Sleep(2000),
            timeout,
            Kind::TimedOut,
            "2 s sleep with a timeout",
        ),
    }
}

/// A map item: mostly values, some panics and (process pools) crashes.
fn pick_map(rng: &mut Rng, process: bool) -> (Act, Kind, &'static str) {
    let w: &[u64] = if process {
        &[75, 8, 10, 3, 2]
    } else {
        &[75, 8, 10, 0, 0]
    };
    match rng.weighted(w) {
        0 => (Act::Value, Kind::Value, "map value"),
        1 => (
            Act::Sleep(rng.range(1, 10) as u32),
            Kind::Value,
            "map sleep",
        ),
        2 => (Act::Panic { loud: false }, Kind::Panicked, "map panic"),
        3 => (Act::KillSelf, Kind::WorkerDied, "map SIGKILL"),
        _ => (Act::Abort, Kind::WorkerDied, "map abort"),
    }
}

fn pick_len(rng: &mut Rng, process: bool) -> usize {
    match rng.weighted(&[70, 25, if process { 5 } else { 1 }]) {
        0 => rng.below(257) as usize,
        1 => rng.range(1024, 64 * 1024) as usize,
        _ => rng.range(256 * 1024, 2 * 1024 * 1024) as usize,
    }
}

/// One driver thread: random operations on the current process pool (or
/// thread pool, for `thread_pool`) until the deadline, then it resolves or
/// drops what it holds.
pub(crate) fn drive(sh: &Shared, me: usize, mut rng: Rng, thread_pool: bool) {
    let mut held: Vec<Held> = Vec::new();
    while sh.running() {
        let slot = if thread_pool { &sh.thread } else { &sh.process };
        let Some(pool) = lock(slot).clone() else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        sh.ops.fetch_add(1, Ordering::Relaxed);
        match rng.weighted(&[55, 15, 15, 15]) {
            0 => submit(sh, me, &mut rng, &pool, &mut held),
            1 => settle_some(sh, me, &mut rng, &mut held),
            2 => map(sh, me, &mut rng, &pool),
            _ => {
                if held.len() > 64 {
                    let rest = held.split_off(held.len() / 2);
                    sh.set_status(me, format!("result() of {} held futures", held.len()));
                    for h in held.drain(..) {
                        consume(&sh.ledger, h.id, h.len, h.fut.result());
                    }
                    held = rest;
                }
            }
        }
        drop(pool);
    }
    sh.set_status(
        me,
        format!("the end: resolving or dropping {} futures", held.len()),
    );
    for h in held {
        if rng.chance(50) {
            consume(&sh.ledger, h.id, h.len, h.fut.result());
        } else {
            sh.ledger.detached(h.id);
        }
    }
    sh.set_status(me, "done");
}

fn submit(sh: &Shared, me: usize, rng: &mut Rng, pool: &PoolRef, held: &mut Vec<Held>) {
    let process = pool.is_process();
    let (act, timeout, expected, what) = pick_submit(rng, process);
    let len = pick_len(rng, process);
    let pidx = pool.index();
    let id = sh.ledger.register(pidx, Via::Submit, what, expected);
    let task = Chaos {
        id,
        act,
        payload: payload(id, len),
    };
    sh.set_status(me, format!("submit {what} (input {id})"));
    let r = match pool {
        PoolRef::Process(p, _) => match timeout {
            Some(t) => p.submit_with_timeout(task, Some(t)),
            None => p.submit(task),
        },
        PoolRef::Thread(p, _) => p.submit(task),
    };
    let fut = match r {
        Ok(f) => f,
        Err(e) => {
            let kind = match &e {
                SubmitError::Shutdown { .. } | SubmitError::Broken { .. } => Kind::Refused,
                _ => Kind::Unexpected,
            };
            sh.ledger.consumed(id, kind, Some(e.to_string()));
            return;
        }
    };
    let ledger = sh.ledger.clone();
    fut.add_done_callback(move |f| ledger.callback(id, kind_of(f)));
    let h = Held {
        id,
        len,
        pool: pidx,
        fut,
    };
    match rng.weighted(&[30, 20, 10, if process { 5 } else { 0 }, 15, 20]) {
        0 => held.push(h),
        1 => {
            sh.set_status(me, format!("result() of {what} (input {id})"));
            consume(&sh.ledger, id, len, h.fut.result());
        }
        2 => {
            sh.set_status(me, format!("cancel() of {what} (input {id})"));
            cancel(sh, &h, false);
            held.push(h);
        }
        3 => {
            sh.set_status(me, format!("kill() of {what} (input {id})"));
            cancel(sh, &h, true);
            held.push(h);
        }
        4 => sh.ledger.detached(id),
        _ => {
            let limit = Duration::from_millis(rng.below(50));
            sh.set_status(me, format!("result_timeout() of {what} (input {id})"));
            match h.fut.result_timeout(limit) {
                Ok(v) => {
                    consume(&sh.ledger, id, len, Ok(v));
                }
                Err(procpool::WaitError::Failed(e)) => {
                    consume(&sh.ledger, id, len, Err(e));
                }
                Err(procpool::WaitError::TimedOut(fut)) => held.push(Held { fut, ..h }),
            }
        }
    }
}

/// `cancel()` (or `kill()`) and what it promises.
fn cancel(sh: &Shared, h: &Held, kill: bool) {
    sh.ledger.allow(h.id, Kind::Cancelled);
    let yes = if kill { h.fut.kill() } else { h.fut.cancel() };
    if yes {
        sh.ledger.cancel_succeeded(h.id);
    }
}

/// Resolves, cancels or drops some held futures, through `as_completed`,
/// `wait`, `cancel` or dropping; futures of one pool at a time (ids are
/// unique within a pool).
fn settle_some(sh: &Shared, me: usize, rng: &mut Rng, held: &mut Vec<Held>) {
    if held.is_empty() {
        return;
    }
    let pool = held[rng.below(held.len() as u64) as usize].pool;
    let (group, rest): (Vec<Held>, Vec<Held>) = held.drain(..).partition(|h| h.pool == pool);
    *held = rest;
    let mut by_id: HashMap<u64, (u64, usize)> =
        group.iter().map(|h| (h.fut.id(), (h.id, h.len))).collect();
    let futs: Vec<TaskFuture<Echoed>> = group.into_iter().map(|h| h.fut).collect();
    let limit = Duration::from_millis(rng.below(100));
    let back = |f: TaskFuture<Echoed>, by_id: &mut HashMap<u64, (u64, usize)>| {
        let (id, len) = by_id.remove(&f.id()).expect("a future of this group");
        Held {
            id,
            len,
            pool,
            fut: f,
        }
    };
    match rng.weighted(&[30, 30, 20, 20]) {
        0 => {
            sh.set_status(me, format!("as_completed over {} futures", futs.len()));
            let mut it = as_completed(futs).timeout(limit);
            for f in it.by_ref() {
                let h = back(f, &mut by_id);
                consume(&sh.ledger, h.id, h.len, h.fut.result());
            }
            for f in it.into_pending() {
                held.push(back(f, &mut by_id));
            }
        }
        1 => {
            let mode = [
                ReturnWhen::AllCompleted,
                ReturnWhen::FirstCompleted,
                ReturnWhen::FirstException,
            ][rng.below(3) as usize];
            sh.set_status(me, format!("wait({mode:?}) over {} futures", futs.len()));
            let (done, not_done) = wait(futs, mode, Some(limit));
            for f in done {
                let h = back(f, &mut by_id);
                consume(&sh.ledger, h.id, h.len, h.fut.result());
            }
            for f in not_done {
                held.push(back(f, &mut by_id));
            }
        }
        2 => {
            sh.set_status(me, format!("cancel() of some of {} futures", futs.len()));
            for f in futs {
                let h = back(f, &mut by_id);
                if rng.chance(30) {
                    cancel(sh, &h, false);
                }
                held.push(h);
            }
        }
        _ => {
            for f in futs {
                let h = back(f, &mut by_id);
                if rng.chance(30) {
                    sh.ledger.detached(h.id);
                } else {
                    held.push(h);
                }
            }
        }
    }
}

/// A `map` of 1–120 inputs, chunked, sometimes with a time limit, consumed
/// to the end or dropped midway.
fn map(sh: &Shared, me: usize, rng: &mut Rng, pool: &PoolRef) {
    let n = rng.range(1, 120);
    let chunk = [1, 2, 3, 8, 16, 32][rng.below(6) as usize];
    let stop_after = rng.chance(35).then(|| rng.below(n));
    let limit = rng
        .chance(10)
        .then(|| Duration::from_millis(rng.range(5, 200)));
    let pulled: Arc<Mutex<VecDeque<(u64, usize)>>> = Arc::default();
    let process = pool.is_process();
    let mut item_rng = Rng::new(rng.next_u64(), 0);
    let (ledger, q, pidx) = (sh.ledger.clone(), pulled.clone(), pool.index());
    let inputs = (0..n).map(move |_| {
        let (act, expected, what) = pick_map(&mut item_rng, process);
        let len = item_rng.below(129) as usize;
        let id = ledger.register(pidx, Via::Map, what, expected);
        if limit.is_some() {
            ledger.allow(id, Kind::WaitTimedOut);
        }
        lock(&q).push_back((id, len));
        Chaos {
            id,
            act,
            payload: payload(id, len),
        }
    });
    sh.set_status(
        me,
        format!("map of {n} inputs, chunksize {chunk}, limit {limit:?}, stop after {stop_after:?}"),
    );
    let ended_early = match pool {
        PoolRef::Process(p, _) => consume_map(sh, p.map(inputs), chunk, limit, stop_after, &pulled),
        PoolRef::Thread(p, _) => consume_map(sh, p.map(inputs), chunk, limit, stop_after, &pulled),
    };
    let left: Vec<(u64, usize)> = lock(&pulled).drain(..).collect();
    for (id, _) in left {
        if ended_early {
            sh.ledger.discarded(id);
        }
        // Otherwise the map ended without yielding it: left open, the
        // verdict reports it.
    }
}

/// Consumes `m`; `true` if it was dropped midway or ended on an error that
/// ends a map (time limit, shutdown, broken pool).
fn consume_map<I>(
    sh: &Shared,
    m: procpool::Map<'_, I>,
    chunk: usize,
    limit: Option<Duration>,
    stop_after: Option<u64>,
    pulled: &Mutex<VecDeque<(u64, usize)>>,
) -> bool
where
    I: Iterator<Item = Chaos>,
{
    let mut m = m.chunksize(chunk);
    if let Some(d) = limit {
        m = m.timeout(d);
    }
    let mut yielded = 0;
    loop {
        if stop_after == Some(yielded) {
            return true;
        }
        let Some(r) = m.next() else { return false };
        yielded += 1;
        let Some((id, len)) = lock(pulled).pop_front() else {
            sh.ledger.violation(
                "a map yielded more results than it pulled inputs",
                format!("after {yielded} results"),
            );
            return true;
        };
        let k = consume(&sh.ledger, id, len, r);
        if matches!(k, Kind::WaitTimedOut | Kind::Shutdown | Kind::Broken) {
            return true;
        }
    }
}

/// The monkey: every 0.2–2 s replaces a pool (the process pool mostly)
/// with a new one and stops the old one in a random way.
pub(crate) fn monkey(sh: &Shared, me: usize, mut rng: Rng, thread_pool: bool) {
    loop {
        let pause = Duration::from_millis(rng.range(200, 2000));
        let until = Instant::now() + pause;
        sh.set_status(me, "sleeping");
        while Instant::now() < until && sh.running() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !sh.running() {
            break;
        }
        let thread = thread_pool && rng.chance(25);
        sh.set_status(
            me,
            if thread {
                "building a thread pool"
            } else {
                "building a process pool"
            },
        );
        let new = if thread {
            sh.build_thread()
        } else {
            sh.build_process()
        };
        let new = match new {
            Ok(p) => p,
            Err(e) => {
                sh.ledger.violation("a pool failed to build", e);
                continue;
            }
        };
        let slot = if thread { &sh.thread } else { &sh.process };
        let old = lock(slot).replace(new);
        let how = pick_stop(&mut rng);
        if let Some(old) = old {
            sh.set_status(me, format!("stopping a pool: {how}"));
            sh.stop(old, how);
        }
        sh.rebuilds.fetch_add(1, Ordering::Relaxed);
    }
    sh.set_status(me, "done");
}

/// A random way to stop a pool.
pub(crate) fn pick_stop(rng: &mut Rng) -> Stop {
    [
        Stop::Wait,
        Stop::CancelPending,
        Stop::Kill,
        Stop::Dropped,
        Stop::WaitRacingKill,
    ][rng.weighted(&[25, 25, 30, 15, 5])]
}
