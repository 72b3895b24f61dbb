//! Moving tasks: the parent's queue, assigning batches to workers, writing
//! frames, reading the workers' answers, and cancelling.
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

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError, Weak};
use std::time::{Duration, Instant};

use procpool_wire::frame::{Outgoing, Payload, write_all_frames};
use procpool_wire::message::{
    Outcome, TaskHeader, ToParent, ToWorker, decode_message, encode_message,
};
use procpool_wire::{Generation, TaskId};

use super::supervisor::{Assigned, KillReason, Phase, PoolState, Shared, Slot, SlotStatus};
use super::transport::Stream;
use crate::cost::Cost;
use crate::error::{Side, TaskError};
use crate::future::{Control, ResolveBytes};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the parent knows of a task besides its payload.
pub(crate) struct Meta {
    pub id: TaskId,
    pub name: &'static str,
    pub fingerprint: u64,
    pub input_type: &'static str,
    pub output_type: &'static str,
    pub future: Arc<dyn ResolveBytes>,
    /// When `submit` was called (before encoding).
    pub submitted: Instant,
    pub encode: Duration,
    pub bytes_out: u64,
    pub timeout: Option<Duration>,
    /// Runs left if its worker dies under it.
    pub retries: u32,
}

/// A task waiting in the parent's queue.
pub(crate) struct Item {
    pub meta: Meta,
    pub payload: Payload,
}

/// Tasks that travel together (a `submit` is a batch of one, a `map` chunk
/// a batch of `chunksize`).
pub(crate) struct Batch {
    pub id: u64,
    pub items: Vec<Item>,
}

/// Why the pool refused new work.
pub(crate) enum Refusal {
    Shutdown,
    Broken(String),
}

/// The parent's end of one worker's socket, for writing.
pub(crate) struct Conn {
    pub stream: Stream,
    outbox: Mutex<Vec<Outgoing>>,
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
                if let Err(e) = write_all_frames(&mut &self.stream, &frames) {
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

/// Adds a batch to the queue and dispatches what it can.
pub(crate) fn enqueue(shared: &Shared, items: Vec<Item>) -> Result<(), Refusal> {
    let conns = {
        let mut st = lock(&shared.state);
        if let Some(reason) = &st.broken {
            return Err(Refusal::Broken(reason.clone()));
        }
        if st.phase != Phase::Running {
            return Err(Refusal::Shutdown);
        }
        let id = st.next_batch;
        st.next_batch += 1;
        st.queue.push_back(Batch { id, items });
        pump(&mut st, shared)
    };
    flush_all(conns);
    Ok(())
}

/// Assigns queued batches to workers with room, posting their frames.
/// Returns the connections to flush once the lock is released.
pub(crate) fn pump(st: &mut PoolState, shared: &Shared) -> Vec<Arc<Conn>> {
    let mut touched: Vec<Arc<Conn>> = Vec::new();
    if !matches!(st.phase, Phase::Running | Phase::Draining) {
        return touched;
    }
    let cfg = &shared.cfg;
    while !st.queue.is_empty() {
        let Some(idx) = st
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.status == SlotStatus::Ready && s.batches.len() < cfg.prefetch && s.conn.is_some()
            })
            .min_by_key(|(_, s)| s.batches.len())
            .map(|(i, _)| i)
        else {
            break;
        };
        let Some(batch) = st.queue.pop_front() else {
            break;
        };
        let now = Instant::now();
        let slot = &mut st.slots[idx];
        let mut headers = Vec::with_capacity(batch.items.len());
        let mut payloads = Vec::with_capacity(batch.items.len());
        for item in batch.items {
            headers.push(TaskHeader {
                id: item.meta.id,
                name: std::borrow::Cow::Borrowed(item.meta.name),
                fingerprint: item.meta.fingerprint,
                len: item.payload.len() as u32,
            });
            payloads.push(item.payload.clone());
            st.seq += 1;
            slot.inflight.insert(
                item.meta.id,
                Assigned {
                    meta: item.meta,
                    payload: item.payload,
                    batch: batch.id,
                    assigned_at: now,
                    started: false,
                    seq: st.seq,
                },
            );
        }
        let n = headers.len();
        let ids: VecDeque<TaskId> = headers.iter().map(|h| h.id).collect();
        slot.batches.insert(batch.id, ids);
        slot.taken += n as u64;
        if let Some(max) = cfg.max_tasks_per_worker
            && slot.taken >= max
        {
            slot.status = SlotStatus::Retiring;
            tracing::debug!(target: "procpool::pool", { worker.id = idx, worker.pid = slot.pid.unwrap_or(0) },
                "worker took {} tasks (max_tasks_per_worker {max}); recycling", slot.taken);
        }
        let frame = encode_message(&ToWorker::Run { items: headers }, payloads)
            .expect("procpool's own messages always encode");
        let conn = slot.conn.clone().expect("a ready slot has a connection");
        conn.post(frame);
        if !touched.iter().any(|c| Arc::ptr_eq(c, &conn)) {
            touched.push(conn);
        }
    }
    touched
}

/// Posts a bare message (no payload) to a connection.
pub(crate) fn post_message(conn: &Conn, msg: &ToWorker) {
    conn.post(
        encode_message(msg, Vec::<Payload>::new()).expect("procpool's own messages always encode"),
    );
}

/// A pending `cancel()` waiting for the worker's answer.
#[derive(Default)]
pub(crate) struct CancelWait {
    answer: Mutex<Option<bool>>,
    cond: Condvar,
}

impl CancelWait {
    pub(crate) fn answer(&self, withdrawn: bool) {
        *lock(&self.answer) = Some(withdrawn);
        self.cond.notify_all();
    }

    fn wait(&self, timeout: Duration) -> Option<bool> {
        let g = lock(&self.answer);
        let (g, _) = self
            .cond
            .wait_timeout_while(g, timeout, |a| a.is_none())
            .unwrap_or_else(|p| p.into_inner());
        *g
    }
}

/// `cancel()` for process-pool futures.
pub(crate) struct PoolControl(pub Weak<Shared>);

impl Control for PoolControl {
    fn cancel(&self, id: TaskId) -> bool {
        self.cancel_many(&[id]).first().copied().unwrap_or(false)
    }

    /// Withdraws many tasks with one message round per worker: tasks still
    /// in the parent's queue are taken out at once; prefetched ones are
    /// asked back from their workers all together, and the answers are
    /// awaited under one deadline.
    fn cancel_many(&self, ids: &[TaskId]) -> Vec<bool> {
        enum Plan {
            Answer(bool),
            Local(Arc<dyn ResolveBytes>),
            Ask(Arc<CancelWait>),
        }
        let Some(shared) = self.0.upgrade() else {
            return vec![false; ids.len()];
        };
        let mut plans = Vec::with_capacity(ids.len());
        let mut conns: Vec<Arc<Conn>> = Vec::new();
        {
            let mut st = lock(&shared.state);
            // Still in the parent's queue: take them out, so nothing can
            // send them.
            let wanted: HashSet<TaskId> = ids.iter().copied().collect();
            let mut queued: HashMap<TaskId, Arc<dyn ResolveBytes>> = HashMap::new();
            for batch in st.queue.iter_mut() {
                batch.items.retain(|i| {
                    if wanted.contains(&i.meta.id) {
                        queued.insert(i.meta.id, i.meta.future.clone());
                        false
                    } else {
                        true
                    }
                });
            }
            st.queue.retain(|b| !b.items.is_empty());
            for &id in ids {
                if let Some(f) = queued.remove(&id) {
                    plans.push(Plan::Local(f));
                    continue;
                }
                // Prefetched by a worker and not begun: ask for it back.
                let conn = st
                    .slots
                    .iter()
                    .find_map(|s| s.inflight.get(&id).map(|a| (a.started, s.conn.clone())));
                let conn = match conn {
                    Some((false, Some(conn))) if !st.cancels.contains_key(&id) => conn,
                    _ => {
                        plans.push(Plan::Answer(false)); // running, finished, or not ours
                        continue;
                    }
                };
                let wait = Arc::new(CancelWait::default());
                st.cancels.insert(id, wait.clone());
                post_message(&conn, &ToWorker::Cancel { id });
                if !conns.iter().any(|c| Arc::ptr_eq(c, &conn)) {
                    conns.push(conn);
                }
                plans.push(Plan::Ask(wait));
            }
        }
        shared.changed.notify_all();
        flush_all(conns);
        let deadline = Instant::now() + shared.cfg.cancel_timeout;
        plans
            .into_iter()
            .zip(ids)
            .map(|(plan, &id)| match plan {
                Plan::Answer(a) => a,
                Plan::Local(f) => f.cancel_local(),
                Plan::Ask(wait) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if let Some(answer) = wait.wait(left) {
                        return answer;
                    }
                    if lock(&shared.state).cancels.remove(&id).is_some() {
                        // No answer in time: the task stays with the worker.
                        // A late "withdrawn" re-queues it, so `false` holds.
                        return false;
                    }
                    // The answer is being delivered right now.
                    wait.wait(Duration::from_secs(5)).unwrap_or(false)
                }
            })
            .collect()
    }

    fn kill(&self, id: TaskId) -> bool {
        let Some(shared) = self.0.upgrade() else {
            return false;
        };
        let mut st = lock(&shared.state);
        let Some(slot) = st.slots.iter_mut().find(|s| s.inflight.contains_key(&id)) else {
            drop(st);
            return self.cancel(id);
        };
        if !slot.inflight[&id].started {
            drop(st);
            return self.cancel(id);
        }
        if slot.kill.is_some() {
            return false; // already being killed (timeout, shutdown)
        }
        let Some(target) = slot.target() else {
            return false;
        };
        slot.kill = Some(KillReason::Killed { id });
        drop(st);
        tracing::debug!(target: "procpool::pool", { task.id = id }, "killing a running task's worker on request");
        target.signal(nix::sys::signal::Signal::SIGKILL);
        true
    }
}

fn task_error(outcome: Outcome, meta: &Meta) -> TaskError {
    match outcome {
        Outcome::Panicked { message, location } => TaskError::Panicked { message, location },
        Outcome::Decode {
            message,
            worker_type,
        } => TaskError::Decode {
            side: Side::Worker,
            type_name: worker_type,
            message,
        },
        Outcome::Encode {
            message,
            worker_type,
        } => TaskError::Encode {
            side: Side::Worker,
            type_name: worker_type,
            message,
        },
        Outcome::UnknownTask { name } => TaskError::UnknownTask { name },
        Outcome::Mismatch {
            worker_input,
            worker_output,
        } => TaskError::Decode {
            side: Side::Worker,
            type_name: worker_input.clone(),
            message: format!(
                "task `{}` is `{} -> {}` in the parent but `{worker_input} -> {worker_output}` in the \
                 worker: rebuild both from the same definition",
                meta.name, meta.input_type, meta.output_type
            ),
        },
        other => TaskError::Protocol {
            worker: usize::MAX,
            message: format!("unknown outcome {other:?}"),
        },
    }
}

/// What to do after a message.
enum Flow {
    Go,
    Stop,
}

/// Reads one worker's messages until its socket ends. A frame that breaks
/// the protocol kills the worker; its supervisor does the rest.
///
/// With a reply ring (see [`super::ring`]) the executor's notes come from
/// shared memory: the ring is drained before each socket read, the reader
/// parks (and the worker wakes it) only when the ring is empty, and a
/// socket note that a marker stands for is handled in the marker's place.
/// When the socket ends the ring is drained once more, so every note the
/// worker made before dying counts.
pub(crate) fn read_loop(
    shared: &Shared,
    idx: usize,
    generation: Generation,
    mut reader: crate::process_pool::SocketReader,
    pid: u32,
    mut ring: Option<super::ring::Reader>,
) {
    let me = Reading {
        shared,
        idx,
        generation,
        pid,
    };
    // Stopped at a marker: the note it stands for is on the socket.
    let mut at_marker = false;
    let mut spin = Spin::new(shared.cfg.ring_spin);
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
                if spin.look(r) || !r.park() {
                    continue;
                }
                spin.parked();
            }
        }
        let read = reader.next_frame();
        if let Some(r) = &ring {
            r.unpark();
            spin.woken();
        }
        let body = match read {
            Ok(Some(b)) => b,
            Ok(None) => {
                me.last_drain(ring.as_mut(), at_marker);
                return;
            }
            Err(e) => {
                if let procpool_wire::FrameError::Io(io) = &e {
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
        let (msg, payloads) = match decode_message::<ToParent>(body) {
            Ok(pair) => pair,
            Err(e) => {
                protocol_error(shared, idx, generation, pid, e.to_string());
                me.last_drain(ring.as_mut(), at_marker);
                return;
            }
        };
        let is_note = matches!(msg, ToParent::Started { .. } | ToParent::Finished { .. });
        if let Some(r) = ring.as_mut()
            && is_note
        {
            // The executor's note: those it published before it come
            // first, up to the marker that stands for this one. (A worker
            // that does not use the ring leaves no marker.)
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
        if let Flow::Stop = me.act(msg, &payloads) {
            // A socket frame broke the protocol: the worker is being
            // killed, but what it published before still counts.
            me.last_drain(ring.as_mut(), at_marker);
            return;
        }
    }
}

/// The adaptive look at a reply ring before parking (see
/// `ProcessPoolBuilder::ring_spin`).
struct Spin {
    limit: Duration,
    /// The last look found something, or a wake-up came soon after the
    /// last park: looking pays.
    pays: bool,
    parked_at: Option<Instant>,
}

impl Spin {
    fn new(limit: Duration) -> Spin {
        Spin {
            limit,
            pays: !limit.is_zero(),
            parked_at: None,
        }
    }

    /// Looks at the ring until it has data (`true`) or the time is up.
    fn look(&mut self, r: &super::ring::Reader) -> bool {
        if !self.pays {
            return false;
        }
        let until = Instant::now() + self.limit;
        loop {
            if r.has_data() {
                return true;
            }
            if Instant::now() >= until {
                self.pays = false;
                return false;
            }
            std::thread::yield_now();
        }
    }

    fn parked(&mut self) {
        if !self.limit.is_zero() {
            self.parked_at = Some(Instant::now());
        }
    }

    /// Back from the socket: had the wait been short, looking would have
    /// caught it.
    fn woken(&mut self) {
        if let Some(t) = self.parked_at.take() {
            self.pays = t.elapsed() < self.limit;
        }
    }
}

/// One worker's reader.
struct Reading<'a> {
    shared: &'a Shared,
    idx: usize,
    generation: Generation,
    pid: u32,
}

impl Reading<'_> {
    /// Handles the ring's records up to a marker (`Ok(true)`, the marker
    /// left in place) or until it is empty (`Ok(false)`). `Err`: the worker
    /// broke the protocol and is being ended.
    fn drain(&self, r: &mut super::ring::Reader) -> Result<bool, ()> {
        loop {
            match r.next(self.shared.cfg.max_frame) {
                Ok(None) => return Ok(false),
                Ok(Some(super::ring::Record::Marker)) => return Ok(true),
                Ok(Some(super::ring::Record::Frame)) => {
                    if let Flow::Stop = self.handle(r.body()) {
                        return Err(());
                    }
                }
                Err(message) => {
                    protocol_error(self.shared, self.idx, self.generation, self.pid, message);
                    return Err(());
                }
            }
        }
    }

    /// The socket ended: what the worker published before counts.
    fn last_drain(&self, ring: Option<&mut super::ring::Reader>, at_marker: bool) {
        if let Some(r) = ring
            && !at_marker
        {
            let _ = self.drain(r);
        }
    }

    /// Decodes and acts on one message from the ring.
    fn handle(&self, body: &[u8]) -> Flow {
        match decode_message::<ToParent>(body) {
            Ok((msg, payloads)) => self.act(msg, &payloads),
            Err(e) => {
                protocol_error(
                    self.shared,
                    self.idx,
                    self.generation,
                    self.pid,
                    e.to_string(),
                );
                Flow::Stop
            }
        }
    }

    /// Acts on one decoded message.
    fn act(&self, msg: ToParent, payloads: &[&[u8]]) -> Flow {
        let Reading {
            shared,
            idx,
            generation,
            pid,
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
            ToParent::Started { id, .. } => on_started(shared, idx, id),
            ToParent::Finished {
                id,
                outcome,
                timing,
                ..
            } => {
                let Some((a, conns, next)) = on_finished(shared, idx, id, timing.peak_rss_bytes)
                else {
                    return Flow::Go;
                };
                flush_all(conns);
                if let Some(n) = next {
                    n.mark_running();
                }
                shared.recycle_input(a.payload);
                let meta = a.meta;
                match outcome {
                    Outcome::Ok { .. } => {
                        let bytes = payloads.first().copied().unwrap_or(&[]);
                        let parent_queue = a
                            .assigned_at
                            .saturating_duration_since(meta.submitted + meta.encode);
                        let cost = Cost {
                            encode_input: meta.encode,
                            bytes_out: meta.bytes_out,
                            queue_wait: parent_queue + Duration::from_nanos(timing.queue_ns),
                            decode_input: Duration::from_nanos(timing.decode_ns),
                            run: Duration::from_nanos(timing.run_ns),
                            encode_output: Duration::from_nanos(timing.encode_ns),
                            bytes_back: bytes.len() as u64,
                            ..Cost::default()
                        };
                        meta.future
                            .complete_bytes(bytes, cost, meta.submitted, &shared.stats);
                    }
                    other => {
                        let mut err = task_error(other, &meta);
                        if let TaskError::Protocol { worker, .. } = &mut err {
                            *worker = idx;
                        }
                        shared.stats.record(None);
                        meta.future.fail(err);
                    }
                }
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

fn protocol_error(shared: &Shared, idx: usize, generation: Generation, pid: u32, message: String) {
    tracing::warn!(target: "procpool::pool", { worker.id = idx, worker.pid = pid },
"protocol error: {message}");
    end_worker(shared, idx, generation, KillReason::Protocol(message));
}

/// A TCP worker went silent past `lost_after`.
fn lost(shared: &Shared, idx: usize, generation: Generation, pid: u32) {
    let after = shared.cfg.lost_after;
    tracing::warn!(target: "procpool::pool", { worker.id = idx, worker.pid = pid },
"worker lost: no heartbeat for {after:?}");
    end_worker(shared, idx, generation, KillReason::Lost);
}

/// Records why worker `idx` ends and kills it.
fn end_worker(shared: &Shared, idx: usize, generation: Generation, why: KillReason) {
    let target = {
        let mut st = lock(&shared.state);
        let slot = &mut st.slots[idx];
        if slot.generation != generation {
            return;
        }
        if slot.kill.is_none() {
            slot.kill = Some(why);
        }
        slot.target()
    };
    if let Some(t) = target {
        t.signal(nix::sys::signal::Signal::SIGKILL);
    }
}

fn on_started(shared: &Shared, idx: usize, id: TaskId) {
    let (future, timed) = {
        let mut st = lock(&shared.state);
        let slot = &mut st.slots[idx];
        let Some(a) = slot.inflight.get_mut(&id) else {
            tracing::warn!(target: "procpool::pool", { worker.id = idx, task.id = id },
"start of an unknown task dropped");
            return;
        };
        a.started = true;
        let future = a.meta.future.clone();
        let timed = a.meta.timeout.is_some();
        slot.running = Some((id, Instant::now()));
        (future, timed)
    };
    if timed {
        shared.clock.notify_all();
    }
    future.mark_running();
}

/// What finishing a task hands back: the task, the connections to flush,
/// and the next task of its chunk (which the worker begins now).
type Finished = (Assigned, Vec<Arc<Conn>>, Option<Arc<dyn ResolveBytes>>);

/// Removes a finished task from its worker, dispatches more work, and
/// hands back the task, the connections to flush, and the chunk's next
/// task, which is now `Running` (a chunk's later tasks have no note of
/// their own: each begins when the one before it ends).
fn on_finished(shared: &Shared, idx: usize, id: TaskId, peak_rss: u64) -> Option<Finished> {
    let mut st = lock(&shared.state);
    let Some(a) = st.slots[idx].take_task(id) else {
        tracing::warn!(
            target: "procpool::pool",
            { worker.id = idx,
            task.id = id },
        "late or duplicate result dropped"
        );
        return None;
    };
    st.crash_streak = 0;
    let slot = &mut st.slots[idx];
    slot.finished += 1;
    slot.failures = 0;
    let next = begin_next(shared, slot, a.batch);
    if let Some(max) = shared.cfg.max_worker_memory
        && peak_rss > max
        && st.slots[idx].status == SlotStatus::Ready
    {
        tracing::debug!(target: "procpool::pool", { worker.id = idx }, "worker peak memory {peak_rss} B passed {max} B; recycling");
        st.slots[idx].status = SlotStatus::Retiring;
    }
    st.retire_if_idle(idx);
    let conns = pump(&mut st, shared);
    let notify = st.phase != Phase::Running;
    drop(st);
    if notify {
        shared.changed.notify_all();
    }
    Some((a, conns, next))
}

/// The worker has begun the next task of `batch`: mark it, and hand back
/// its future to mark `Running` once the pool lock is released.
fn begin_next(shared: &Shared, slot: &mut Slot, batch: u64) -> Option<Arc<dyn ResolveBytes>> {
    let next = slot.begin_next(batch)?;
    if next.meta.timeout.is_some() {
        shared.clock.notify_all();
    }
    Some(next.meta.future.clone())
}

fn on_withdrawn(shared: &Shared, idx: usize, id: TaskId, withdrawn: bool) {
    let mut st = lock(&shared.state);
    let wait = st.cancels.remove(&id);
    let mut cancel: Option<Arc<dyn ResolveBytes>> = None;
    let mut conns = Vec::new();
    let mut next = None;
    if withdrawn {
        if let Some(a) = st.slots[idx].take_task(id) {
            if a.started {
                // Taken for running because the task before it in its chunk
                // ended, but withdrawn first: the worker went on to the one
                // after it.
                next = begin_next(shared, &mut st.slots[idx], a.batch);
            }
            let requeue = wait.is_none()
                && matches!(st.phase, Phase::Running | Phase::Draining)
                && st.broken.is_none();
            if requeue {
                // The caller gave up waiting and was told `false`: keep the
                // promise that it runs.
                let batch = st.next_batch;
                st.next_batch += 1;
                st.queue.push_front(Batch {
                    id: batch,
                    items: vec![Item {
                        meta: a.meta,
                        payload: a.payload,
                    }],
                });
            } else {
                cancel = Some(a.meta.future);
            }
            st.retire_if_idle(idx);
            conns = pump(&mut st, shared);
        }
    }
    drop(st);
    shared.changed.notify_all();
    flush_all(conns);
    if let Some(n) = next {
        n.mark_running();
    }
    if let Some(f) = cancel {
        f.cancel_local();
    }
    if let Some(w) = wait {
        w.answer(withdrawn);
    }
}
