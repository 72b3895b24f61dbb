//! What a worker's threads share: the local queue of work (prefetched
//! tasks, the initializer), the socket's writing end, and where the
//! executor's notes go (the reply ring, else the socket).
//!
//! # Locks
//!
//! * `WorkerShared::local` (with `cond`): the queue; the reader pushes and
//!   withdraws, the executor pops and parks on `cond`.
//! * `WorkerShared::writer`: the socket's writing end; every thread that
//!   writes (executor, reader, heartbeat) takes it for one vectored write.
//! * `WorkerShared::spare_frame`: one recycled frame buffer, executor to
//!   reader.
//!
//! No thread holds two of them at once.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
#[cfg(feature = "remote")]
use std::time::{Duration, Instant};

use procpool_wire::Generation;
use procpool_wire::frame::Outgoing;
use procpool_wire::message::{TaskHeader, ToParent, encode_message};

use super::inbound::Inbound;
use crate::link::frames::{Sealer, write_frames};
use crate::link::ring;
use crate::link::stream::Stream;
use crate::lock::lock;
use crate::stamp::Stamp;

/// A unit of work in the local queue.
pub(super) enum Work {
    /// The pool's initializer (the first thing after the welcome).
    Init {
        name: String,
        fingerprint: u64,
        /// The `Init` frame; the input is `frame[range]`.
        frame: Arc<Vec<u8>>,
        range: std::ops::Range<usize>,
    },
    /// A task.
    Task {
        header: TaskHeader,
        /// The `Run` frame it came in (a chunk is one frame).
        batch: u64,
        /// That frame; the input is `frame[range]`.
        frame: Arc<Vec<u8>>,
        range: std::ops::Range<usize>,
        /// When the reader queued it (its queue time starts here).
        arrived: Stamp,
        /// The descriptors the frame carried for it (shared payloads).
        fds: Vec<std::os::fd::OwnedFd>,
        /// Its input's bulk byte strings, read after the frame (their
        /// places are in `header.bulk`).
        bulk: Vec<Vec<u8>>,
    },
}

/// The local queue, under `WorkerShared::local`.
pub(super) struct Local {
    /// Work in arrival order. Written by the reader (push, withdraw);
    /// popped by the executor.
    pub queue: VecDeque<Work>,
    /// The pool said `Shutdown`: the executor exits once the queue is
    /// empty. Written by the reader; read by the executor.
    pub closing: bool,
    /// Numbers the `Run` frames as they arrive. Reader only.
    pub batches: u64,
    /// The executor sleeps on `WorkerShared::cond` and no one has signalled
    /// it yet: the reader signals only then, since a signal is a system call
    /// even when nobody waits. Set by the executor before its wait; cleared
    /// by the reader that signals (a woken executor may take a while to run
    /// on a busy machine, and the frames that came meanwhile each signalled
    /// it again: 4–6 signals per wait in a chunksize-256 `map`).
    pub parked: bool,
    /// A spawned worker's work ring (see `inbound`): the pool's `Run`
    /// frames, pulled into `queue` under this lock.
    pub inbound: Option<Inbound>,
}

impl Local {
    /// Pulls what the pool put in the work ring into the queue; `true` if
    /// anything came.
    pub fn pull(&mut self) -> bool {
        match self.inbound.as_mut() {
            Some(i) => i.pull(&mut self.queue, &mut self.batches),
            None => false,
        }
    }
}

/// What the worker's reader, executor and heartbeat threads share; see
/// the module docs for its locks.
pub(super) struct WorkerShared {
    /// How long an idle executor looks for work before parking. Set once.
    pub spin: std::time::Duration,
    /// The local queue; `cond` is signalled when work arrives or
    /// `closing` is set (reader → executor).
    pub local: Mutex<Local>,
    /// See `local`.
    pub cond: Condvar,
    /// The socket's writing end. Every thread that writes takes it for one
    /// whole write, so frames never interleave (and, on TCP, are sealed in
    /// the order they go on the wire).
    pub writer: Mutex<Writer>,
    /// This process's generation, stamped on every message. Set once.
    pub generation: Generation,
    /// A large frame buffer the executor is done with, for the reader's
    /// next frame. Written by the executor, taken by the reader.
    pub spare_frame: Mutex<Option<Vec<u8>>>,
    /// How shared payloads travel on this connection (descriptors over a
    /// Unix socket, inline over TCP). Set once.
    pub shared_mode: crate::shared::Mode,
}

/// The socket's writing end, under `WorkerShared::writer`.
pub(super) struct Writer {
    pub stream: Stream,
    /// On a TCP link, seals every frame.
    pub sealer: Option<Sealer>,
}

impl WorkerShared {
    /// Writes frames in one vectored write; a dead parent ends the worker.
    ///
    /// A TCP worker normally writes to its keeper (see `keeper`), which
    /// owns the connection's sending side. One without a keeper writes on
    /// the connection and waits (briefly) until the kernel has sent what it
    /// wrote: a worker killed with unread input on its connection is reset,
    /// and the reset throws away output not yet sent, so a result written
    /// just before a crash could otherwise never reach the pool (the price:
    /// one write and one wait per note, ~5 % of the local rate for a
    /// chunksize-256 `map` on loopback).
    pub(super) fn send(&self, frames: &[Outgoing]) {
        let mut w = lock(&self.writer);
        let Writer { stream, sealer } = &mut *w;
        if let Err(e) = write_frames(stream, frames, sealer.as_mut()) {
            drop(w);
            if e.kind() == io::ErrorKind::InvalidData {
                // An output's bulk strings could not be written as its
                // frame announced (`crate::kept`): the stream is broken.
                eprintln!("procpool-worker: cannot write a task's output: {e}");
                std::process::exit(3);
            }
            exit_parent_gone(&e);
        }
        #[cfg(feature = "remote")]
        if let Stream::Tcp(t) = &w.stream {
            wait_sent(t);
        }
    }

    pub(super) fn message(&self, msg: &ToParent) -> Outgoing {
        encode_message(msg, Vec::<procpool_wire::Payload>::new())
            .expect("procpool's own messages always encode")
    }
}

/// Where the executor's notes (`Started`, `Finished`) go: the reply ring if
/// the pool gave one, else the socket. A note with descriptors (a result
/// with shared payloads) always goes on the socket, the ring holding a
/// marker in its place.
pub(super) struct Notes {
    /// The reply ring's writing end (the executor's alone; no lock).
    pub ring: Option<ring::Writer>,
}

/// Writes a `Wake` frame: the parent's reader parked on the socket.
fn wake_parent(shared: &WorkerShared) {
    shared.send(&[shared.message(&ToParent::Wake {
        generation: shared.generation,
    })])
}

impl Notes {
    /// Publishes an input of a packed chunk that ended `Ok` as an item
    /// record in the ring (see `ring::Record::Item`). `false` (nothing
    /// sent) without a ring or if the output is too large for it: the
    /// caller sends a `ToParent::Item` frame.
    pub(super) fn send_item(
        &mut self,
        shared: &WorkerShared,
        head: ring::ItemHead,
        output: &[u8],
    ) -> bool {
        let Some(ring) = self.ring.as_mut() else {
            return false;
        };
        let wake = || wake_parent(shared);
        match ring.push_item(&head.to_bytes(), output, &wake) {
            None => false,
            Some(pushed) => {
                if pushed == ring::Pushed::Wake {
                    wake();
                }
                true
            }
        }
    }

    pub(super) fn send(&mut self, shared: &WorkerShared, frames: &[Outgoing]) {
        let Some(ring) = self.ring.as_mut() else {
            return shared.send(frames);
        };
        let wake = || wake_parent(shared);
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
#[cfg(feature = "remote")]
fn wait_sent(t: &std::net::TcpStream) {
    let until = Instant::now() + Duration::from_millis(5);
    while crate::sys::tcp_unsent(t).is_ok_and(|n| n > 0) && Instant::now() < until {
        std::thread::yield_now();
    }
}

pub(super) fn exit_parent_gone(e: &io::Error) -> ! {
    tracing::debug!(target: "procpool::worker", "socket closed ({e}); exiting");
    std::process::exit(0)
}
