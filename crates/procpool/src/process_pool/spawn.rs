//! Starting one worker process and greeting it.
//!
//! The worker gets its end of a `socketpair` as descriptor 3 (no name on the
//! filesystem, nothing to hijack); every other descriptor stays
//! close-on-exec. It runs in its own process group so a kill reaches the
//! processes it forked. Its stdout and stderr go where the pool's
//! `WorkerOutput` says (`output`).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
#[cfg(feature = "remote")]
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

#[cfg(feature = "remote")]
use super::attach::Dialed;
use super::builder::Config;
#[cfg(feature = "remote")]
use crate::link::env::{ENV_CONNECT, ENV_TICKET, ENV_TOKEN};
use crate::link::env::{
    ENV_DUMPABLE, ENV_FD, ENV_PARENT, ENV_RING_FD, ENV_SPIN, ENV_WORK_RING, ENV_WORKER_ID, RING_FD,
    WORKER_FD,
};
use crate::link::ring;
use crate::link::stream::Stream;
use crate::sys;

/// A started worker process and how its connection arrives.
pub(crate) struct Spawned {
    pub child: Child,
    pub arrival: Arrival,
    pub pid: u32,
}

/// How long a worker fed through its work ring looks for its next task
/// before it parks, unless `worker_spin` says otherwise: the look costs a
/// load of the ring's `tail` and a yield of the CPU, while a parked worker
/// costs the pool a `Wake` frame and the worker two wake-ups (on 2 vCPUs,
/// same-run against no look: chunksize-1 `map` × 1.57, chunksize-256
/// `map_unordered` × 1.11, auto × 1.11; 20 µs did less, see the CHANGELOG).
pub(crate) const WORK_RING_SPIN: Duration = Duration::from_micros(50);

/// The pool's ends of the rings it shares with a spawned worker.
pub(crate) struct Rings {
    /// The reply ring (worker to pool), read by the worker's reader thread.
    pub reply: ring::Reader,
    /// The work ring (pool to worker), written by the worker's `Conn`;
    /// `None` with `work_ring(false)`.
    pub work: Option<ring::Writer>,
}

/// How a spawned worker's connection reaches the pool.
pub(crate) enum Arrival {
    /// The parent's end of the `socketpair` it inherited, and the rings it
    /// shares with the pool (unless turned off).
    Inherited(Stream, Option<Rings>),
    /// It dials back (TCP); the accept loop hands its connection over,
    /// once it passed the handshake, on `rx`.
    #[cfg(feature = "remote")]
    DialBack {
        ticket: u64,
        rx: mpsc::Receiver<Result<Dialed, StartError>>,
    },
}

/// Where a spawned worker dials back, with what secret and ticket, and
/// where its connection will be handed over (`None`: it inherits a
/// `socketpair` end instead).
#[cfg(feature = "remote")]
pub(crate) struct DialBack {
    pub address: String,
    pub secret_hex: String,
    pub ticket: u64,
    pub rx: mpsc::Receiver<Result<Dialed, StartError>>,
}

/// Without the `remote` feature every spawned worker inherits its socket:
/// this stands for a dial-back, and has no values.
#[cfg(not(feature = "remote"))]
pub(crate) enum DialBack {}

/// Starts worker `index` (fork + exec; call from the long-lived spawner
/// thread, since `PR_SET_PDEATHSIG` follows the thread that forked).
pub(crate) fn spawn_process(
    cfg: &Config,
    index: usize,
    dial: Option<DialBack>,
) -> io::Result<Spawned> {
    let mut cmd = Command::new(&cfg.program);
    cmd.args(cfg.command.args())
        .envs(cfg.command.envs().iter().map(|(k, v)| (k, v)))
        .env(ENV_PARENT, std::process::id().to_string())
        .env(ENV_WORKER_ID, index.to_string())
        .env(
            ENV_SPIN,
            cfg.worker_spin.unwrap_or_default().as_micros().to_string(),
        );
    if cfg.dumpable {
        cmd.env(ENV_DUMPABLE, "1");
    }
    // The child's ends of its socket and ring, closed here once it runs.
    let (arrival, child_end, ring_end) = match dial {
        #[cfg(not(feature = "remote"))]
        Some(d) => match d {},
        #[cfg(feature = "remote")]
        Some(d) => {
            cmd.env(ENV_CONNECT, d.address)
                .env(ENV_TOKEN, d.secret_hex)
                .env(ENV_TICKET, d.ticket.to_string());
            let arrival = Arrival::DialBack {
                ticket: d.ticket,
                rx: d.rx,
            };
            (arrival, None, None)
        }
        None => {
            let (parent_end, theirs) = socketpair(
                AddressFamily::Unix,
                SockType::Stream,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            cmd.env(ENV_FD, WORKER_FD.to_string());
            let ring = if cfg.reply_ring {
                // One map, two rings: the worker's replies, and (with
                // `work_ring`) its `Run` frames.
                let made = ring::Reader::create().and_then(|(reader, fd)| {
                    // A worker may hold up to 4 × `prefetch` frames; a
                    // marker must fit for each.
                    let work = if cfg.work_ring && cfg.prefetch.saturating_mul(4) <= ring::MOST_HELD
                    {
                        Some(ring::Writer::open_work(fd.try_clone()?)?)
                    } else {
                        None
                    };
                    Ok((reader, work, fd))
                });
                match made {
                    Ok((reader, work, fd)) => {
                        cmd.env(ENV_RING_FD, RING_FD.to_string());
                        if work.is_some() {
                            cmd.env(ENV_WORK_RING, "1");
                            if cfg.worker_spin.is_none() {
                                cmd.env(ENV_SPIN, WORK_RING_SPIN.as_micros().to_string());
                            }
                        }
                        Some((
                            Rings {
                                reply: reader,
                                work,
                            },
                            fd,
                        ))
                    }
                    Err(e) => {
                        // Slower, not broken: this worker reports on its
                        // socket.
                        tracing::warn!(target: "procpool::pool", { worker.id = index },
                            "no reply ring for this worker ({e}); it reports on its socket");
                        None
                    }
                }
            } else {
                None
            };
            sys::pass_fds(&mut cmd, &theirs, ring.as_ref().map(|(_, fd)| fd));
            let (reader, ring_fd) = ring.unzip();
            let arrival = Arrival::Inherited(Stream::Unix(parent_end.into()), reader);
            (arrival, Some(theirs), ring_fd)
        }
    };
    let out_r = super::output::wire(&mut cmd, cfg.worker_output)?;
    cmd.process_group(0);
    let child = cmd.spawn()?;
    // Close our copies of the child's ends: the pipe then ends when the
    // worker (and everything it started) is gone.
    drop(cmd);
    drop(child_end);
    drop(ring_end);
    let pid = child.id();
    if let Some(out_r) = out_r {
        super::output::forward_worker(out_r, index, cfg.worker_output);
    }
    Ok(Spawned {
        child,
        arrival,
        pid,
    })
}

/// Starts `cmd` in its own process group, stdin closed, its stdout and
/// stderr on one pipe (returned, for [`forward_output`](super::output::forward_output)).
#[cfg(feature = "remote")]
pub(crate) fn start_forwarded(cmd: &mut Command) -> io::Result<(Child, io::PipeReader)> {
    let (out_r, out_w) = io::pipe()?;
    cmd.stdin(std::process::Stdio::null())
        .stdout(out_w.try_clone()?)
        .stderr(out_w)
        .process_group(0);
    let child = cmd.spawn()?;
    Ok((child, out_r))
}

/// Why a new worker did not become ready.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The process could not be started.
    Spawn(io::Error),
    /// The handshake (or the socket under it) failed, or a spawned worker
    /// did not dial back.
    Handshake(String),
    /// Launched workers did not join: the launcher program gave up, or the
    /// launch timeout passed.
    #[cfg(feature = "remote")]
    Launch(String),
    /// The initializer failed, panicked or timed out.
    Init(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Spawn(e) => write!(f, "could not start: {e}"),
            StartError::Handshake(m) => write!(f, "handshake failed: {m}"),
            #[cfg(feature = "remote")]
            StartError::Launch(m) => write!(f, "launch failed: {m}"),
            StartError::Init(m) => write!(f, "initializer failed: {m}"),
        }
    }
}
