//! The worker side: `procpool::worker::run(registry)`.
//!
//! A worker has two threads. The **reader** takes frames off the socket and
//! keeps a local queue of prefetched tasks; it answers `Cancel` by removing
//! a task from that queue, so cancelling never waits for a running task.
//! The **executor** (the main thread) pops tasks in order and, in one write,
//! reports the previous task's result and the next task's start: exact
//! `Running` states cost no extra syscall, and a task is never begun before
//! the parent could know it was. A worker the pool spawned writes these
//! notes into its reply ring (shared memory, see `process_pool::ring`)
//! rather than the socket, and writes to the socket only to wake a parked
//! parent or for a note too large for the ring.
//!
//! The worker exits when the parent asks (`Shutdown`), when the socket
//! closes (the parent is gone), or when its parent process dies
//! (`PR_SET_PDEATHSIG`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use std::time::Instant;

use procpool_wire::frame::{FrameReader, Outgoing, write_all_frames};
use procpool_wire::handshake::{self, HANDSHAKE_MAX_FRAME, Hello, Proof, SECRET_LEN, Welcome};
use procpool_wire::message::{
    MessageError, Outcome, TaskHeader, ToParent, ToWorker, WorkerTiming, decode_message,
    encode_message,
};
use procpool_wire::{Generation, TaskId};

use crate::process_pool::attach::{
    ENV_CONNECT, ENV_TICKET, ENV_TOKEN, host_name, random_bytes, unhex,
};
use crate::process_pool::ring;
use crate::process_pool::transport::{Stream, dial, send_handshake};
use crate::task::{Registry, WorkerContext};

/// Environment variable carrying the inherited socket's descriptor number.
pub const ENV_FD: &str = "PROCPOOL_WORKER_FD";
/// Environment variable with the microseconds an idle worker looks for its
/// next task before parking (`ProcessPoolBuilder::worker_spin`; 0: never).
pub const ENV_SPIN: &str = "PROCPOOL_WORKER_SPIN_US";

/// Environment variable carrying the pool's pid: a worker checks it is still
/// its parent, so programs the worker starts do not mistake themselves for
/// workers.
pub const ENV_PARENT: &str = "PROCPOOL_PARENT_PID";

thread_local! {
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) fn clear_panic_location() {
    PANIC_LOCATION.with(|l| l.borrow_mut().take());
}

pub(crate) fn take_panic_location() -> Option<String> {
    PANIC_LOCATION.with(|l| l.borrow_mut().take())
}

/// Records where a panic happened (the parent gets it in
/// `TaskError::Panicked`) and prints one line to stderr, which the pool
/// forwards with the worker's id.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|loc| loc.to_string());
        let message = procpool_wire::codec::panic_message(info.payload());
        eprintln!(
            "panicked at {}: {message}",
            location.as_deref().unwrap_or("<unknown location>")
        );
        PANIC_LOCATION.with(|l| *l.borrow_mut() = location);
    }));
}

/// Whether this process was started by a `ProcessPool` as a worker.
pub fn is_worker() -> bool {
    let connected = std::env::var_os(ENV_FD).is_some() || std::env::var_os(ENV_CONNECT).is_some();
    // Started by a launcher (`srun`, `mpirun`) or by hand to dial in.
    let dialing = std::env::args_os().nth(1).is_some_and(|a| a == "--connect");
    dialing || (connected && spawned_by_parent())
}

/// Whether `PROCPOOL_PARENT_PID` names this process's parent.
fn spawned_by_parent() -> bool {
    std::env::var(ENV_PARENT)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::os::unix::process::parent_id())
}

/// A worker the pool spawned dies with it. Set first, then check, so a
/// parent that died in between is not missed.
fn die_with_parent() -> Result<(), String> {
    if std::env::var_os(ENV_PARENT).is_none() {
        return Ok(());
    }
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if !spawned_by_parent() {
        return Err("the pool that started this worker is gone".into());
    }
    Ok(())
}

/// For programs that are their own worker binary
/// (`WorkerCommand::current_exe()`): call it first thing in `main`. In a
/// worker it serves tasks and exits; otherwise it returns at once.
///
/// ```no_run
/// procpool::worker::run_if_worker(procpool_tasks::registry());
/// // ... the parent's own work: build a pool with WorkerCommand::current_exe()
/// ```
pub fn run_if_worker(registry: Registry) {
    if is_worker() {
        run(registry)
    }
}

/// Serves tasks from `registry` for the pool that started this process, then
/// exits. This is the whole `main` of a worker binary.
///
/// ```no_run
/// procpool::worker::run(procpool_tasks::registry())
/// ```
///
/// Started by hand or by a launcher (`srun`, `mpirun`) as
/// `PROGRAM --connect ADDRESS` (`tcp://HOST:PORT` or a local socket's
/// path) with the pool's secret in `PROCPOOL_TOKEN`, it dials in instead;
/// see [`Launcher`](crate::Launcher).
pub fn run(registry: Registry) -> ! {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let connect = args
        .iter()
        .position(|a| a == "--connect")
        .map(|i| args.get(i + 1).and_then(|a| a.to_str()).map(str::to_owned))
        .or_else(|| std::env::var(ENV_CONNECT).ok().map(Some));
    let served = match connect {
        Some(Some(address)) => serve_dialed(&address, registry),
        Some(None) => {
            Err("--connect needs the pool's address (tcp://HOST:PORT or a socket path)".to_owned())
        }
        None => serve_inherited(registry),
    };
    let code = match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("procpool-worker: {e}");
            2
        }
    };
    std::process::exit(code)
}

fn serve_inherited(registry: Registry) -> Result<(), String> {
    let fd: i32 = std::env::var(ENV_FD)
        .map_err(|_| {
            format!(
                "{ENV_FD} is not set: this program is a procpool worker and is started by a \
                 ProcessPool, not by hand"
            )
        })?
        .parse()
        .map_err(|_| format!("{ENV_FD} is not a descriptor number"))?;
    die_with_parent()?;
    let sock = crate::sys::adopt_socket(fd).map_err(|e| format!("descriptor {fd}: {e}"))?;
    // Programs a task starts must not inherit the pool's socket.
    nix::fcntl::fcntl(
        &sock,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| format!("cannot set close-on-exec on the socket: {e}"))?;
    // The reply ring, if the pool made one (see `process_pool::ring`).
    let ring = match std::env::var(ring::ENV_RING_FD) {
        Err(_) => None,
        Ok(n) => {
            let n: i32 = n
                .parse()
                .map_err(|_| format!("{} is not a descriptor number", ring::ENV_RING_FD))?;
            let fd = crate::sys::adopt_memfd(n).map_err(|e| format!("reply ring {n}: {e}"))?;
            Some(ring::Writer::open(fd).map_err(|e| format!("reply ring: {e}"))?)
        }
    };
    serve(
        Stream::Unix(UnixStream::from(sock)),
        registry,
        None,
        0,
        ring,
    )
}

/// Dial the pool (TCP or a local socket) and prove the secret from the
/// environment (never from the command line).
fn serve_dialed(address: &str, registry: Registry) -> Result<(), String> {
    let token = std::env::var(ENV_TOKEN)
        .ok()
        .and_then(|t| unhex(t.trim()))
        .filter(|t| t.len() == SECRET_LEN)
        .ok_or_else(|| {
            format!("{ENV_TOKEN} must hold the pool's secret ({SECRET_LEN} bytes, hex)")
        })?;
    let ticket = std::env::var(ENV_TICKET)
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0);
    die_with_parent()?;
    let stream = dial(address).map_err(|e| format!("cannot connect to {address}: {e}"))?;
    serve(stream, registry, Some(token), ticket, None)
}

enum Work {
    Init {
        name: String,
        fingerprint: u64,
        frame: Arc<Vec<u8>>,
        range: std::ops::Range<usize>,
    },
    Task {
        header: TaskHeader,
        /// The `Run` frame it came in (a chunk is one frame).
        batch: u64,
        frame: Arc<Vec<u8>>,
        range: std::ops::Range<usize>,
        arrived: Instant,
    },
}

struct Local {
    queue: VecDeque<Work>,
    closing: bool,
    /// Numbers the `Run` frames as they arrive.
    batches: u64,
}

struct WorkerShared {
    /// How long an idle executor looks for work before parking.
    spin: std::time::Duration,
    local: Mutex<Local>,
    cond: Condvar,
    writer: Mutex<Stream>,
    generation: Generation,
    /// A large frame buffer the executor is done with, for the reader's
    /// next frame.
    spare_frame: Mutex<Option<Vec<u8>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WorkerShared {
    /// Writes frames in one vectored write; a dead parent ends the worker.
    ///
    /// Over TCP it also waits (briefly) until the kernel has sent them: a
    /// worker killed with unread input on its connection is reset, and the
    /// reset throws away output not yet sent, so a result written just
    /// before a crash could otherwise never reach the pool. The price shows
    /// only at high rates of tiny tasks, where sending is paced by the
    /// pool's acknowledgements (chunksize-256 `map` over TCP loopback:
    /// ~100 k/s instead of ~250–350 k/s; chunksize 1 and latency unchanged).
    fn send(&self, frames: &[Outgoing]) {
        let mut w = lock(&self.writer);
        if let Err(e) = write_all_frames(&mut *w, frames) {
            drop(w);
            exit_parent_gone(&e);
        }
        if let Stream::Tcp(t) = &*w {
            wait_sent(t);
        }
    }

    fn message(&self, msg: &ToParent) -> Outgoing {
        encode_message(msg, Vec::<procpool_wire::Payload>::new())
            .expect("procpool's own messages always encode")
    }
}

/// Where the executor's notes (`Started`, `Finished`) go: the reply ring if
/// the pool gave one, else the socket.
struct Notes {
    ring: Option<ring::Writer>,
}

impl Notes {
    fn send(&mut self, shared: &WorkerShared, frames: &[Outgoing]) {
        let Some(ring) = self.ring.as_mut() else {
            return shared.send(frames);
        };
        let wake = || {
            shared.send(&[shared.message(&ToParent::Wake {
                generation: shared.generation,
            })])
        };
        let mut must_wake = false;
        for f in frames {
            match ring.push(f, &wake) {
                ring::Pushed::Quiet => {}
                ring::Pushed::Wake => must_wake = true,
                ring::Pushed::Socket => {
                    // The frame itself wakes the parent.
                    must_wake = false;
                    shared.send(std::slice::from_ref(f));
                }
            }
        }
        if must_wake {
            wake();
        }
    }
}

/// Waits until the kernel has sent everything written to `t`, at most a
/// few milliseconds (a congested network is not waited out).
fn wait_sent(t: &std::net::TcpStream) {
    let until = Instant::now() + Duration::from_millis(5);
    while crate::sys::tcp_unsent(t).is_ok_and(|n| n > 0) && Instant::now() < until {
        std::thread::yield_now();
    }
}

fn exit_parent_gone(e: &io::Error) -> ! {
    tracing::debug!(target: "procpool::worker", "socket closed ({e}); exiting");
    std::process::exit(0)
}

/// Serves one connection to a pool: handshake, then tasks until told to
/// stop. A worker that dialed in brings the pool's `secret` and proves it
/// (and checks the pool's proof); `ticket` names what the pool started it
/// as.
pub(crate) fn serve(
    stream: Stream,
    registry: Registry,
    secret: Option<Vec<u8>>,
    ticket: u64,
    ring: Option<ring::Writer>,
) -> Result<(), String> {
    install_panic_hook();
    let read_half = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = FrameReader::new(
        std::io::BufReader::with_capacity(crate::process_pool::READ_BUFFER, read_half),
        HANDSHAKE_MAX_FRAME,
    );
    let nonce = match &secret {
        Some(_) => random_bytes(SECRET_LEN).map_err(|e| format!("no randomness: {e}"))?,
        None => Vec::new(),
    };
    let hello = Hello::ours(std::process::id(), host_name(), ticket, nonce.clone());
    send_handshake(&stream, &hello).map_err(|e| format!("cannot greet the pool: {e}"))?;
    let mut proven = false;
    let (worker_id, generation, max_frame, heartbeat_ms) = loop {
        let body = match reader.next_frame() {
            Ok(Some(b)) => b,
            Ok(None) => return Err("the pool closed the connection during the handshake".into()),
            Err(e) => return Err(format!("handshake: {e}")),
        };
        match Welcome::decode(body).map_err(|e| e.to_string())? {
            Welcome::Challenge {
                nonce: theirs,
                proof,
            } => {
                let Some(secret) = &secret else {
                    return Err("the pool asked for a secret this worker does not have".into());
                };
                if !handshake::check_pool_proof(secret, &nonce, &theirs, &proof) {
                    return Err("wrong secret token: the pool's proof does not match PROCPOOL_TOKEN (or it is not our pool)".into());
                }
                proven = true;
                let mac = handshake::worker_proof(secret, &theirs, &nonce);
                send_handshake(&stream, &Proof { mac })
                    .map_err(|e| format!("cannot answer the challenge: {e}"))?;
            }
            Welcome::Accept {
                worker_id,
                generation,
                max_frame,
                heartbeat_ms,
            } => break (worker_id, generation, max_frame, heartbeat_ms),
            Welcome::Reject { reason } => {
                return Err(format!("the pool refused this worker: {reason}"));
            }
        }
    };
    if secret.is_some() && !proven {
        return Err(
            "the pool accepted this worker without proving the secret; not serving it".into(),
        );
    }
    reader.set_max(max_frame);
    let spin = std::env::var(ENV_SPIN)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_micros);
    let heartbeat = Duration::from_millis(u64::from(heartbeat_ms));
    if let Stream::Tcp(t) = &stream
        && !heartbeat.is_zero()
    {
        // A pool that vanishes without closing is noticed when our
        // heartbeats go unacknowledged this long.
        let _ = crate::process_pool::transport::tune_tcp(t, heartbeat.saturating_mul(10));
    }
    let shared = Arc::new(WorkerShared {
        spin,
        local: Mutex::new(Local {
            queue: VecDeque::new(),
            closing: false,
            batches: 0,
        }),
        cond: Condvar::new(),
        writer: Mutex::new(stream),
        generation,
        spare_frame: Mutex::new(None),
    });
    let reader_shared = shared.clone();
    std::thread::Builder::new()
        .name("procpool-worker-reader".into())
        .spawn(move || read_loop(reader, &reader_shared))
        .map_err(|e| format!("cannot start the reader thread: {e}"))?;
    if !heartbeat.is_zero() {
        let beat = shared.clone();
        std::thread::Builder::new()
            .name("procpool-worker-heartbeat".into())
            .spawn(move || {
                let msg = beat.message(&ToParent::Heartbeat { generation });
                loop {
                    std::thread::sleep(heartbeat);
                    beat.send(std::slice::from_ref(&msg));
                }
            })
            .map_err(|e| format!("cannot start the heartbeat thread: {e}"))?;
    }
    let mut notes = Notes { ring };
    execute(
        &shared,
        &registry,
        worker_id as usize,
        max_frame,
        &mut notes,
    );
    Ok(())
}

fn read_loop(mut reader: crate::process_pool::SocketReader, shared: &WorkerShared) {
    loop {
        let frame = match reader.next_frame_owned_reusing(|| lock(&shared.spare_frame).take()) {
            Ok(Some(f)) => Arc::new(f),
            Ok(None) => exit_parent_gone(&io::Error::from(io::ErrorKind::UnexpectedEof)),
            Err(e) => {
                eprintln!("procpool-worker: bad frame from the pool: {e}");
                std::process::exit(3);
            }
        };
        let arrived = Instant::now();
        let (msg, payloads) = match decode_message::<ToWorker>(&frame) {
            Ok(pair) => pair,
            Err(e) => bad_message(&e),
        };
        let base = frame.as_ptr() as usize;
        let ranges: Vec<_> = payloads
            .iter()
            .map(|p| {
                let start = p.as_ptr() as usize - base;
                start..start + p.len()
            })
            .collect();
        match msg {
            ToWorker::Run { items } => {
                let mut local = lock(&shared.local);
                local.batches += 1;
                let batch = local.batches;
                for (header, range) in items.into_iter().zip(ranges) {
                    local.queue.push_back(Work::Task {
                        header,
                        batch,
                        frame: frame.clone(),
                        range,
                        arrived,
                    });
                }
                drop(local);
                shared.cond.notify_one();
            }
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

fn bad_message(e: &MessageError) -> ! {
    eprintln!("procpool-worker: bad message from the pool: {e}");
    std::process::exit(3)
}

/// Removes queued tasks matching `pred`; returns their ids.
fn withdraw(shared: &WorkerShared, pred: impl Fn(&Work) -> bool) -> Vec<TaskId> {
    let mut local = lock(&shared.local);
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

/// Peak resident memory of this process, read with `getrusage` at most
/// every few milliseconds (a syscall per task would cost more than a
/// trivial task; so would a clock read, so the clock is looked at every
/// few tasks).
struct PeakRss {
    value: u64,
    read_at: Option<Instant>,
    calls: u32,
}

impl PeakRss {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(5);
    const LOOK_EVERY: u32 = 16;

    /// `fresh`: read now regardless (after a long task, whose cost dwarfs
    /// the syscall and which may have grown the process).
    fn peak(&mut self, fresh: bool) -> u64 {
        self.calls = self.calls.wrapping_add(1);
        let look = fresh || self.calls.is_multiple_of(Self::LOOK_EVERY);
        if look && (fresh || self.read_at.is_none_or(|t| t.elapsed() >= Self::EVERY)) {
            self.value = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
                .map(|u| u64::try_from(u.max_rss()).unwrap_or(0) * 1024)
                .unwrap_or(0);
            self.read_at = Some(Instant::now());
        }
        self.value
    }
}

/// Yields the CPU in a loop (so a peer on the same CPU runs) until work is
/// queued or the spin time passes.
fn spin_for_work(shared: &WorkerShared) {
    let until = Instant::now() + shared.spin;
    while Instant::now() < until {
        std::thread::yield_now();
        if let Ok(local) = shared.local.try_lock()
            && (!local.queue.is_empty() || local.closing)
        {
            return;
        }
    }
}

/// The last task of a large frame is done: its buffer goes back to the
/// reader for the next frame.
fn recycle_frame(shared: &WorkerShared, frame: Arc<Vec<u8>>) {
    if let Some(buf) = crate::process_pool::reusable(frame) {
        *lock(&shared.spare_frame) = Some(buf);
    }
}

/// Sends the held result (and `then`, in the same write), then keeps the
/// result's buffer as `spare` for the next output if it is large.
fn send_pending(
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
        if let Some(buf) = crate::process_pool::reusable(payload)
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
fn execute(
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
                local = shared.cond.wait(local).unwrap_or_else(|p| p.into_inner());
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
                let start = Instant::now();
                let queue_ns = crate::task::nanos_between(arrived, start);
                let mut out = std::mem::take(&mut spare);
                out.clear();
                let ran = registry.run(
                    &header.name,
                    header.fingerprint,
                    &frame[range],
                    &mut ctx,
                    &mut out,
                    start,
                );
                recycle_frame(shared, frame);
                let mut outcome = ran.outcome;
                if let Outcome::Ok { .. } = outcome
                    && out.len() > max_frame as usize - 1024
                {
                    outcome = Outcome::Encode {
                        message: format!(
                            "output of {} bytes exceeds the pool's {max_frame}-byte frame cap",
                            out.len()
                        ),
                        worker_type: header.name.to_string(),
                    };
                }
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
                    timing: WorkerTiming {
                        queue_ns,
                        decode_ns: ran.decode_ns,
                        run_ns: ran.run_ns,
                        encode_ns: ran.encode_ns,
                        peak_rss_bytes: rss.peak(ran.run_ns > 1_000_000),
                    },
                };
                pending = Some(
                    encode_message(&msg, payloads).expect("procpool's own messages always encode"),
                );
            }
        }
    }
}
