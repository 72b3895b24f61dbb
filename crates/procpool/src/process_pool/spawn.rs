//! Starting one worker process and greeting it.
//!
//! The worker gets its end of a `socketpair` as descriptor 3 (no name on the
//! filesystem, nothing to hijack); every other descriptor stays
//! close-on-exec. It runs in its own process group so a kill reaches the
//! processes it forked. Its stdout and stderr go through one pipe whose
//! lines are forwarded to the parent's stderr, prefixed with the worker id.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use procpool_wire::Generation;
use procpool_wire::frame::{FrameReader, write_all_frames};
use procpool_wire::handshake::{self, HANDSHAKE_MAX_FRAME, Hello, Proof, SECRET_LEN, Welcome};
use procpool_wire::message::{ToParent, ToWorker, decode_message, encode_message};

use super::attach::Dialed;
use super::attach::{ENV_CONNECT, ENV_TICKET, ENV_TOKEN};
use super::builder::Config;
use super::ring;
use super::transport::{Stream, send_handshake};
use crate::sys;
use crate::worker::{ENV_FD, ENV_PARENT, ENV_SPIN};

/// Environment variable telling a worker its slot number.
pub(crate) const ENV_WORKER_ID: &str = "PROCPOOL_WORKER_ID";

/// A started worker process and how its connection arrives.
pub(crate) struct Spawned {
    pub child: Child,
    pub arrival: Arrival,
    pub pid: u32,
}

/// How a spawned worker's connection reaches the pool.
pub(crate) enum Arrival {
    /// The parent's end of the `socketpair` it inherited, and the reply
    /// ring it shares with the pool (unless turned off).
    Inherited(Stream, Option<ring::Reader>),
    /// It dials back (TCP); the accept loop hands its connection over,
    /// once it passed the handshake, on `rx`.
    DialBack {
        ticket: u64,
        rx: mpsc::Receiver<Result<Dialed, StartError>>,
    },
}

/// Where a spawned worker dials back, with what secret and ticket, and
/// where its connection will be handed over (`None`: it inherits a
/// `socketpair` end instead).
pub(crate) struct DialBack {
    pub address: String,
    pub token_hex: String,
    pub ticket: u64,
    pub rx: mpsc::Receiver<Result<Dialed, StartError>>,
}

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
        .env(ENV_SPIN, cfg.worker_spin.as_micros().to_string());
    let mut child_end = None;
    let mut ring_end = None;
    let arrival = match dial {
        Some(d) => {
            cmd.env(ENV_CONNECT, d.address)
                .env(ENV_TOKEN, d.token_hex)
                .env(ENV_TICKET, d.ticket.to_string());
            Arrival::DialBack {
                ticket: d.ticket,
                rx: d.rx,
            }
        }
        None => {
            let (parent_end, theirs) = socketpair(
                AddressFamily::Unix,
                SockType::Stream,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            cmd.env(ENV_FD, sys::WORKER_FD.to_string());
            let ring = if cfg.reply_ring {
                match ring::Reader::create() {
                    Ok((reader, fd)) => {
                        cmd.env(ring::ENV_RING_FD, sys::RING_FD.to_string());
                        Some((reader, fd))
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
            child_end = Some(theirs);
            let (reader, ring_fd) = ring.unzip();
            ring_end = ring_fd;
            Arrival::Inherited(Stream::Unix(parent_end.into()), reader)
        }
    };
    let (child, out_r) = start_forwarded(&mut cmd)?;
    // Close our copies of the child's ends: the pipe then ends when the
    // worker (and everything it started) is gone.
    drop(cmd);
    drop(child_end);
    drop(ring_end);
    let pid = child.id();
    forward_output(out_r, format!("worker {index}"));
    Ok(Spawned {
        child,
        arrival,
        pid,
    })
}

/// Starts `cmd` in its own process group, stdin closed, its stdout and
/// stderr on one pipe (returned, for [`forward_output`]).
pub(crate) fn start_forwarded(cmd: &mut Command) -> io::Result<(Child, io::PipeReader)> {
    let (out_r, out_w) = io::pipe()?;
    cmd.stdin(Stdio::null())
        .stdout(out_w.try_clone()?)
        .stderr(out_w)
        .process_group(0);
    let child = cmd.spawn()?;
    Ok((child, out_r))
}

/// Forwards a pipe's lines to our stderr as `[procpool WHO] line`, on a
/// thread of its own.
pub(crate) fn forward_output(r: io::PipeReader, who: String) {
    let name = format!("procpool-out-{who}");
    let spawned = std::thread::Builder::new()
        .name(name)
        .spawn(move || forward_lines(r, &who));
    if let Err(e) = spawned {
        tracing::warn!(target: "procpool::pool", "cannot forward worker output: {e}");
    }
}

fn forward_lines(r: io::PipeReader, who: &str) {
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                let mut err = io::stderr().lock();
                let _ = write!(err, "[procpool {who}] ");
                let _ = err.write_all(&line);
            }
        }
    }
}

/// Why a new worker did not become ready.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The process could not be started.
    Spawn(io::Error),
    /// Spawn, handshake or socket failure.
    Handshake(String),
    /// The initializer failed, panicked or timed out.
    Init(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Spawn(e) => write!(f, "could not start: {e}"),
            StartError::Handshake(m) => write!(f, "handshake failed: {m}"),
            StartError::Init(m) => write!(f, "initializer failed: {m}"),
        }
    }
}

/// The parent's side of the handshake, then the initializer. Returns the
/// reader for the worker's messages.
pub(crate) fn greet(
    stream: &Stream,
    cfg: &Config,
    index: usize,
    generation: Generation,
) -> Result<crate::process_pool::SocketReader, StartError> {
    let (reader, hello) = read_hello(stream, cfg)?;
    check_hello(stream, &hello)?;
    accept(stream, reader, cfg, index, generation)
}

/// Sends a `Reject` with `reason` (best effort).
pub(crate) fn reject(stream: &Stream, reason: &str) {
    let reject = Welcome::Reject {
        reason: reason.to_owned(),
    };
    let _ = send_handshake(stream, &reject);
}

/// Reads a worker's hello (within the handshake timeout, under the small
/// handshake frame cap); see [`check_hello`].
pub(crate) fn read_hello(
    stream: &Stream,
    cfg: &Config,
) -> Result<(crate::process_pool::SocketReader, Hello), StartError> {
    let hs = |m: String| StartError::Handshake(m);
    let read_half = stream.try_clone().map_err(|e| hs(e.to_string()))?;
    stream
        .set_read_timeout(Some(cfg.handshake_timeout))
        .map_err(|e| hs(e.to_string()))?;
    let mut reader = FrameReader::new(
        std::io::BufReader::with_capacity(crate::process_pool::READ_BUFFER, read_half),
        HANDSHAKE_MAX_FRAME,
    );
    let hello = match reader.next_frame() {
        Ok(Some(body)) => Hello::decode(body).map_err(|e| hs(e.to_string()))?,
        Ok(None) => return Err(hs("the worker exited before saying hello".into())),
        Err(e) if is_timeout(&e) => {
            return Err(hs(format!(
                "no hello within {:?} (is the program a procpool worker?)",
                cfg.handshake_timeout
            )));
        }
        Err(e) => return Err(hs(e.to_string())),
    };
    Ok((reader, hello))
}

/// Checks a hello against this build; a wrong one is answered with a
/// `Reject`.
pub(crate) fn check_hello(stream: &Stream, hello: &Hello) -> Result<(), StartError> {
    hello.check().map_err(|e| {
        reject(stream, &e.to_string());
        StartError::Handshake(e.to_string())
    })
}

/// The pool's side of the secret handshake with a worker that dialed in:
/// prove the secret, then check the worker's proof (both within the
/// handshake timeout). A wrong proof is answered with a `Reject`.
pub(crate) fn challenge(
    stream: &Stream,
    mut reader: crate::process_pool::SocketReader,
    hello: &Hello,
    secret: &[u8],
    cfg: &Config,
) -> Result<crate::process_pool::SocketReader, StartError> {
    let hs = |m: String| StartError::Handshake(m);
    if hello.nonce.len() != SECRET_LEN {
        reject(stream, "no secret: set PROCPOOL_TOKEN");
        return Err(hs(format!(
            "the worker brought no {SECRET_LEN}-byte challenge (it has no secret)"
        )));
    }
    let nonce = super::attach::random_bytes(SECRET_LEN).map_err(|e| hs(e.to_string()))?;
    let challenge = Welcome::Challenge {
        proof: handshake::pool_proof(secret, &hello.nonce, &nonce),
        nonce: nonce.clone(),
    };
    send_handshake(stream, &challenge)
        .map_err(|e| hs(format!("cannot send the challenge: {e}")))?;
    let proof = match reader.next_frame() {
        Ok(Some(body)) => Proof::decode(body).map_err(|e| hs(e.to_string()))?,
        Ok(None) => return Err(hs("the worker hung up during the handshake".into())),
        Err(e) if is_timeout(&e) => {
            return Err(hs(format!("no proof within {:?}", cfg.handshake_timeout)));
        }
        Err(e) => return Err(hs(e.to_string())),
    };
    if !handshake::check_worker_proof(secret, &nonce, &hello.nonce, &proof.mac) {
        reject(stream, "wrong secret token");
        return Err(hs("wrong secret token".into()));
    }
    Ok(reader)
}

/// Welcomes a worker whose hello was accepted into slot `index`, then runs
/// the initializer. Returns the reader for its messages.
pub(crate) fn accept(
    stream: &Stream,
    mut reader: crate::process_pool::SocketReader,
    cfg: &Config,
    index: usize,
    generation: Generation,
) -> Result<crate::process_pool::SocketReader, StartError> {
    let hs = |m: String| StartError::Handshake(m);
    let welcome = Welcome::Accept {
        worker_id: index as u32,
        generation,
        max_frame: cfg.max_frame,
        heartbeat_ms: if stream.is_tcp() {
            u32::try_from(cfg.heartbeat.as_millis()).unwrap_or(u32::MAX)
        } else {
            0
        },
    };
    send_handshake(stream, &welcome).map_err(|e| hs(format!("cannot send welcome: {e}")))?;
    reader.set_max(cfg.max_frame);
    if let Some(init) = &cfg.init {
        let msg = ToWorker::Init {
            name: init.name.to_owned(),
            fingerprint: init.fingerprint,
            len: init.payload.len() as u32,
        };
        let frame =
            encode_message(&msg, vec![init.payload.clone()]).map_err(|e| hs(e.to_string()))?;
        write_all_frames(&mut &*stream, &[frame])
            .map_err(|e| hs(format!("cannot send initializer: {e}")))?;
        stream
            .set_read_timeout(Some(cfg.init_timeout.max(Duration::from_millis(1))))
            .map_err(|e| hs(e.to_string()))?;
        // The worker's first message after the welcome is its InitDone.
        let body = match reader.next_frame() {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err(StartError::Init(
                    "the worker died while running the initializer".into(),
                ));
            }
            Err(e) if is_timeout(&e) => {
                return Err(StartError::Init(format!(
                    "did not finish within the {:?} init timeout",
                    cfg.init_timeout
                )));
            }
            Err(e) => return Err(hs(e.to_string())),
        };
        match decode_message::<ToParent>(body) {
            Ok((ToParent::InitDone { error: None, .. }, _)) => {}
            Ok((ToParent::InitDone { error: Some(m), .. }, _)) => return Err(StartError::Init(m)),
            Ok((other, _)) => {
                return Err(hs(format!("unexpected message during init: {other:?}")));
            }
            Err(e) => return Err(hs(e.to_string())),
        }
    }
    // Over TCP a worker that stays silent past `lost_after` is lost (it
    // sends heartbeats); a local socket closes when its process dies.
    stream
        .set_read_timeout(stream.is_tcp().then_some(cfg.lost_after))
        .map_err(|e| hs(e.to_string()))?;
    Ok(reader)
}

fn is_timeout(e: &procpool_wire::FrameError) -> bool {
    matches!(e, procpool_wire::FrameError::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}
