//! The parent's writing end of one worker connection ([`Conn`]).
//!
//! # Writing without a dispatcher thread, and without ever blocking
//!
//! Work is assigned under the pool lock (so assignment order is frame
//! order), and each assignment's frame is *posted* to the worker's
//! [`Conn`] outbox. After the lock is released, whoever posted calls
//! [`Conn::flush`]: the first thread to find the connection idle becomes
//! its writer and sends every posted frame in one vectored, non-blocking
//! send; others return at once (the writer sends their frames too: it
//! looks at the outbox again before it lets go). No thread hop between
//! `submit` and the socket, and frames queued together leave together.
//!
//! A worker is untrusted: it may stop reading. So no caller ever blocks on
//! a socket (not `submit`, not `cancel`, not another worker's reader that
//! dispatched more work): when the socket buffer is full, the rest is
//! handed to a *slow writer* thread of this connection, which waits for the
//! worker with blocking sends bounded by `write_timeout` (`SO_SNDTIMEO`).
//! A worker that takes no byte for that long is stalled: the connection
//! calls its `stalled` hook (which kills the worker; its unstarted tasks go
//! to other workers) and drops everything still posted.
//!
//! Locks: `Conn::out` only, taken under `Shared::state` to post and alone
//! to take frames or hand over the writer role; never held across a send.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, Weak, mpsc};

use procpool_wire::fds::MAX_FDS;
use procpool_wire::frame::{Outgoing, Payload};
use procpool_wire::message::{ToWorker, encode_message};

use crate::link::frames::Sealer;
use crate::link::ring::{self, Offered};
use crate::link::stream::Stream;
use crate::lock::lock;

/// Most slices handed to one send (Linux's IOV_MAX is 1024).
const MAX_SLICES: usize = 512;

/// The parent's end of one worker's socket, for writing.
pub(crate) struct Conn {
    /// The socket (a clone of the reader's). Sent on only by the thread
    /// that holds the writer role (`Out::busy`).
    pub stream: Stream,
    /// The outbox and the writer role.
    out: Mutex<Out>,
    /// Called (once, from the slow writer) when the worker took no byte of
    /// a pending write for the write timeout.
    stalled: Box<dyn Fn() + Send + Sync>,
    /// Hands frames (and how many of their bytes are sent) to this
    /// connection's slow writer thread, started at the first hand-over. It
    /// holds only a `Weak` of the connection between jobs and ends when
    /// the connection is dropped (this sender with it).
    slow: Mutex<Option<mpsc::Sender<SlowJob>>>,
}

/// Frames for the slow writer, and how many of their bytes are sent.
type SlowJob = (Vec<Outgoing>, usize);

/// Under `Conn::out`.
#[derive(Default)]
struct Out {
    /// Frames posted and not yet taken by a writer.
    posted: Vec<Outgoing>,
    /// Some thread is the writer (it owns the frames it took).
    busy: bool,
    /// The connection failed or stalled: posts are dropped.
    dead: bool,
    /// On a TCP link, seals each frame as a writer takes it: under this
    /// lock, in the order frames go on the wire.
    sealer: Option<Sealer>,
    /// A spawned worker's work ring: `Run` frames go there (or a marker
    /// there and the frame here), in posting order with the socket's.
    work: Option<ring::Writer>,
}

impl Out {
    /// Takes every posted frame for the writer, sealed on a TCP link.
    fn take(&mut self) -> io::Result<Vec<Outgoing>> {
        let frames = std::mem::take(&mut self.posted);
        match self.sealer.as_mut() {
            None => Ok(frames),
            #[cfg(feature = "remote")]
            Some(s) => frames.into_iter().map(|f| f.sealed(s)).collect(),
            #[cfg(not(feature = "remote"))]
            Some(s) => match *s {},
        }
    }
}

/// How far a writer got with the frames it holds.
enum Sent {
    /// All of them.
    All,
    /// The socket buffer is full; `usize` bytes of them are sent.
    Partly(usize),
}

impl Conn {
    /// `stalled` is called if the worker stops taking its input; see the
    /// module docs. `sealer`: on an authenticated (TCP) link, what seals
    /// every frame.
    /// `work`: a spawned worker's work ring ([`Conn::post_work`]).
    pub(crate) fn new(
        stream: Stream,
        stalled: Box<dyn Fn() + Send + Sync>,
        sealer: Option<Sealer>,
        work: Option<ring::Writer>,
    ) -> Conn {
        Conn {
            stream,
            out: Mutex::new(Out {
                sealer,
                work,
                ..Out::default()
            }),
            stalled,
            slow: Mutex::new(None),
        }
    }

    /// Queues a frame; call under the pool lock to keep assignment order.
    pub(crate) fn post(&self, frame: Outgoing) {
        let mut out = lock(&self.out);
        if !out.dead {
            out.posted.push(frame);
        }
    }

    /// Queues a `Run` frame: into the worker's work ring if it has one
    /// (no write, and no wake-up of a worker that is busy: its executor
    /// looks there between tasks), else on the socket like [`Conn::post`];
    /// a frame the ring cannot take goes on the socket behind a marker in
    /// the ring that keeps its place. Call under the pool lock.
    ///
    /// A worker that broke its ring (an impossible read position, or none
    /// of a ring full of markers read) is ended like one whose socket
    /// failed ([`Conn::fail`]): the socket is shut, its tasks settle as
    /// after a crash.
    pub(crate) fn post_work(&self, frame: Outgoing) {
        let mut out = lock(&self.out);
        if out.dead {
            return;
        }
        let Some(work) = out.work.as_mut() else {
            out.posted.push(frame);
            return;
        };
        match work.offer(&frame) {
            Offered::Ring { wake: false } => {}
            Offered::Ring { wake: true } => out.posted.push(bare(&ToWorker::Wake)),
            Offered::Socket => out.posted.push(frame),
            Offered::Broken => {
                drop(out);
                tracing::warn!(target: "procpool::wire",
                    "a worker broke its work ring; ending it");
                self.fail(&io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the worker broke its work ring",
                ));
            }
        }
    }

    /// Sends everything posted without blocking, unless another thread is
    /// the writer (it sends ours too). What the socket cannot take now goes
    /// to this connection's slow writer thread.
    pub(crate) fn flush(self: &Arc<Self>) {
        let taken = {
            let mut out = lock(&self.out);
            if out.busy || out.posted.is_empty() {
                return;
            }
            out.busy = true;
            out.take()
        };
        let mut frames = match taken {
            Ok(f) => f,
            Err(e) => return self.fail(&e),
        };
        loop {
            match self.send(&frames, 0, false) {
                Ok(Sent::All) => {}
                Ok(Sent::Partly(done)) => return self.hand_over(frames, done),
                Err(e) => return self.fail(&e),
            }
            // Sent: the list's room serves the next posts.
            frames.clear();
            let mut out = lock(&self.out);
            if out.posted.is_empty() {
                out.busy = false;
                out.posted = frames;
                return;
            }
            let taken = out.take();
            out.posted = frames;
            frames = match taken {
                Ok(f) => f,
                Err(e) => {
                    drop(out);
                    return self.fail(&e);
                }
            };
        }
    }

    /// Sends `frames` from byte `skip` on: all of it, or (`wait: false`)
    /// until the socket buffer is full. `wait: true` blocks up to the write
    /// timeout for each send and fails with `WouldBlock` past it. A frame
    /// with descriptors starts a send of its own that carries them and
    /// holds only its bytes (the promise of `procpool_wire::fds`); runs of
    /// frames without go together, up to a frame with bulk byte strings,
    /// whose strings then go from the task that holds them
    /// ([`Conn::send_bulk`]).
    fn send(&self, frames: &[Outgoing], skip: usize, wait: bool) -> io::Result<Sent> {
        let lens: Vec<usize> = frames.iter().map(Outgoing::wire_len).collect();
        // Where `skip` is: frame `i`, byte `o` of it.
        let (mut i, mut o) = (0, skip);
        while i < frames.len() && o >= lens[i] {
            o -= lens[i];
            i += 1;
        }
        let mut done = skip;
        while i < frames.len() {
            let frame_len = frames[i].frame_len();
            if o >= frame_len {
                // The frame is out; its bulk strings from byte `o - frame_len`.
                let (k, all) = self.send_bulk(&frames[i], o - frame_len, wait)?;
                done += k;
                if !all {
                    return Ok(Sent::Partly(done));
                }
                (i, o) = (i + 1, 0);
                continue;
            }
            let with_fds = o == 0 && !frames[i].fds().is_empty();
            let mut end = i + 1;
            if frames[i].fds().is_empty() && frames[i].bulk().is_empty() {
                while end < frames.len() && frames[end].fds().is_empty() {
                    end += 1;
                    if !frames[end - 1].bulk().is_empty() {
                        break;
                    }
                }
            }
            let mut slices: Vec<IoSlice<'_>> = frames[i..end]
                .iter()
                .flat_map(Outgoing::parts)
                .filter(|p| !p.is_empty())
                .map(IoSlice::new)
                .collect();
            let mut rest: &mut [IoSlice<'_>] = &mut slices;
            IoSlice::advance_slices(&mut rest, o);
            let fds: Vec<BorrowedFd<'_>> = if with_fds {
                if frames[i].fds().len() > MAX_FDS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("a frame can carry at most {MAX_FDS} descriptors"),
                    ));
                }
                frames[i].fds().iter().map(AsFd::as_fd).collect()
            } else {
                Vec::new()
            };
            let n = rest.len().min(MAX_SLICES);
            match self.stream.send(&rest[..n], &fds, wait) {
                Ok(k) => {
                    done += k;
                    o += k;
                    // (A frame with bulk strings stops here at its end:
                    // they are sent above.)
                    while i < frames.len() && o >= lens[i] {
                        o -= lens[i];
                        i += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !wait => {
                    return Ok(Sent::Partly(done));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Sent::All)
    }

    /// Sends `frame`'s bulk byte strings from byte `skip` of them on,
    /// straight from the task that holds them (encoded once more:
    /// `crate::kept`). Returns how many bytes it sent and whether that was
    /// all (`false`: the socket is full and `wait` is off). A task that
    /// encodes differently than the first time fails it with `InvalidData`
    /// (the connection cannot go on: the frame announcing the strings is
    /// out).
    fn send_bulk(&self, frame: &Outgoing, skip: usize, wait: bool) -> io::Result<(usize, bool)> {
        let mut sent = 0usize;
        let mut full = false;
        let written = frame.write_bulk(skip, &mut |mut bytes: &[u8]| {
            while !bytes.is_empty() {
                match self.stream.send(&[IoSlice::new(bytes)], &[], wait) {
                    Ok(k) => {
                        sent += k;
                        bytes = &bytes[k..];
                    }
                    Err(e) => {
                        full = e.kind() == io::ErrorKind::WouldBlock && !wait;
                        return Err(e);
                    }
                }
            }
            Ok(())
        });
        match written {
            Ok(()) => Ok((sent, true)),
            Err(_) if full => Ok((sent, false)),
            Err(e) => Err(e),
        }
    }

    /// The socket is full: this connection's slow writer goes on with
    /// `frames` (from byte `done`) and whatever is posted meanwhile, waiting
    /// for the worker at most the write timeout per send.
    fn hand_over(self: &Arc<Self>, frames: Vec<Outgoing>, done: usize) {
        let mut slow = lock(&self.slow);
        let job = match slow.as_ref() {
            Some(tx) => tx.send((frames, done)).err().map(|e| e.0),
            None => Some((frames, done)),
        };
        let Some(job) = job else {
            return;
        };
        // Not started yet (or gone): start it with this job.
        let (tx, rx) = mpsc::channel();
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("procpool-slow-writer".into())
            .spawn(move || slow_writer(&weak, &rx));
        match spawned {
            Ok(_) => {
                let _ = tx.send(job);
                *slow = Some(tx);
            }
            Err(e) => {
                drop(slow);
                self.fail(&e);
            }
        }
    }

    fn write_slowly(&self, mut frames: Vec<Outgoing>, mut skip: usize) {
        loop {
            match self.send(&frames, skip, true) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tracing::warn!(target: "procpool::wire",
                        "a worker took none of its input within the write timeout; ending it");
                    (self.stalled)();
                    return self.fail(&e);
                }
                Err(e) => return self.fail(&e),
            }
            skip = 0;
            let mut out = lock(&self.out);
            if out.posted.is_empty() {
                out.busy = false;
                return;
            }
            frames = match out.take() {
                Ok(f) => f,
                Err(e) => {
                    drop(out);
                    return self.fail(&e);
                }
            };
        }
    }

    /// A failed write shuts the socket (the worker's reader and supervisor
    /// notice) and drops what is posted; the writer role stays taken.
    fn fail(&self, e: &io::Error) {
        tracing::debug!(target: "procpool::wire", "write to worker failed: {e}");
        self.stream.shutdown();
        let mut out = lock(&self.out);
        out.dead = true;
        out.posted.clear();
    }
}

/// The slow writer thread of one connection: runs the jobs handed over
/// until the connection is dropped.
fn slow_writer(conn: &Weak<Conn>, jobs: &mpsc::Receiver<SlowJob>) {
    while let Ok((frames, done)) = jobs.recv() {
        let Some(conn) = conn.upgrade() else {
            return;
        };
        conn.write_slowly(frames, done);
    }
}

pub(crate) fn flush_all(conns: Vec<Arc<Conn>>) {
    for c in conns {
        c.flush();
    }
}

/// Posts a bare message (no payload) to a connection.
pub(crate) fn post_message(conn: &Conn, msg: &ToWorker) {
    conn.post(bare(msg));
}

/// A message without payload, as a frame.
fn bare(msg: &ToWorker) -> Outgoing {
    encode_message(msg, Vec::<Payload>::new()).expect("procpool's own messages always encode")
}
