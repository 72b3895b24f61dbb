//! Both halves of the handshake that opens every connection (the messages
//! are `procpool_wire::handshake`):
//!
//! ```text
//! worker                                   pool
//!   Hello {protocol, build, pid, host,  ─▶   read it (read_hello)
//!          ticket, nonce wn}
//!                                       ◀─   Challenge {nonce pn}      (dialed-in
//!   Proof {mac over pn, wn}             ─▶   check it (challenge)       workers only)
//!                                            check the build (check_hello)
//!                                       ◀─   Accept {worker_id, generation, max_frame,
//!   check the pool's proof                          heartbeat_ms, proof} | Reject {reason}
//! ```
//!
//! A worker that dialed in brings the pool's secret: it proves it first,
//! then the pool proves it in its `Accept` (so the pool proves nothing to
//! a peer that proved nothing); the secret never crosses the wire. A
//! spawned worker on an inherited `socketpair` end brings no nonce and gets
//! no challenge.
//!
//! The pool reads a handshake under **one deadline for the whole of it**
//! (not one per read: a peer dribbling a byte at a time cannot stretch it),
//! and under the small `HANDSHAKE_MAX_FRAME` cap, without buffering past a
//! frame. On **TCP**, every frame after the `Accept`, both ways, is
//! authenticated (`procpool_wire::seal`) with keys derived from the secret
//! and both nonces: [`accept`] and [`greet_pool`] hand back the reader (set
//! to open tags) and the [`Sealer`] for the writing side. What happens
//! after `Accept` (the initializer, tasks) is not the handshake's business.
//! Takes no lock.
//!
//! The secret's part (the challenge, both proofs, keying the link) is the
//! `remote` feature: without it only spawned workers exist, which bring no
//! secret, and a pool's challenge is refused.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use procpool_wire::frame::FrameReader;
#[cfg(feature = "remote")]
use procpool_wire::handshake;
use procpool_wire::handshake::{HANDSHAKE_MAX_FRAME, HandshakeError, Hello, TaskInfo, Welcome};
#[cfg(feature = "remote")]
use procpool_wire::handshake::{Proof, SECRET_LEN};
#[cfg(feature = "remote")]
use procpool_wire::seal::LinkKeys;
use procpool_wire::{FrameError, Generation};

use super::frames::{self, Sealer, SocketReader};
use super::secret::host_name;
#[cfg(feature = "remote")]
use super::secret::random_bytes;
use super::stream::Stream;

/// Writes one handshake message (hello, welcome, challenge, proof) as a
/// frame of its own.
pub(crate) fn send_handshake<T: serde::Serialize>(stream: &Stream, msg: &T) -> io::Result<()> {
    let body = procpool_wire::codec::encode(msg).map_err(io::Error::other)?;
    let frame = procpool_wire::frame::Outgoing::new(body, Vec::<procpool_wire::Payload>::new())?;
    procpool_wire::frame::write_all_frames(&mut &*stream, &[frame])
}

/// A connection read against a deadline: every read gets what is left of
/// it as its timeout, and none starts after it.
struct Deadlined<'a> {
    stream: &'a Stream,
    deadline: Option<Instant>,
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        let mut s = self.stream;
        s.read(buf)
    }
}

/// Reads one handshake frame (unbuffered: nothing past it is taken off
/// the connection) before `deadline` (`None`: no limit).
fn read_handshake_frame(
    stream: &Stream,
    deadline: Option<Instant>,
) -> Result<Option<Vec<u8>>, FrameError> {
    FrameReader::new(Deadlined { stream, deadline }, HANDSHAKE_MAX_FRAME).next_frame_owned()
}

/// The deadline of a handshake that starts now and may take `timeout`.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

// ---- the pool's half ----

/// Sends a `Reject` with `reason` (best effort).
pub(crate) fn reject(stream: &Stream, reason: &str) {
    let reject = Welcome::Reject {
        reason: reason.to_owned(),
    };
    let _ = send_handshake(stream, &reject);
}

/// Reads a worker's hello before `deadline`, under the small handshake
/// frame cap; see [`check_hello`].
pub(crate) fn read_hello(stream: &Stream, deadline: Instant) -> Result<Hello, String> {
    match read_handshake_frame(stream, Some(deadline)) {
        Ok(Some(body)) => Hello::decode(&body).map_err(|e| e.to_string()),
        Ok(None) => Err("the worker exited before saying hello".into()),
        Err(e) if is_timeout(&e) => {
            Err("no hello in time (is the program a procpool worker?)".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Checks a hello against this build; a wrong one is answered with a
/// `Reject`. A worker that refused to serve is an error with its reason.
pub(crate) fn check_hello(stream: &Stream, hello: &Hello) -> Result<(), String> {
    hello.check().map_err(|e| {
        reject(stream, &e.to_string());
        e.to_string()
    })?;
    match &hello.refusal {
        Some(why) => Err(format!(
            "`{}` (pid {}) was started as a worker but will not serve: {why}",
            hello.program, hello.pid
        )),
        None => Ok(()),
    }
}

/// What a worker that dialed in proved: the key it knows (its launch's)
/// and the two nonces of its handshake, which key the pool's proof and
/// the link. The key is zeroed on drop.
#[cfg(feature = "remote")]
pub(crate) struct Proven {
    key: Vec<u8>,
    worker_nonce: Vec<u8>,
    pool_nonce: Vec<u8>,
}

#[cfg(feature = "remote")]
impl Drop for Proven {
    fn drop(&mut self) {
        crate::sys::zeroize(&mut self.key);
    }
}

/// The pool's side of the secret handshake with a worker that dialed in:
/// challenge it, and check its proof before `deadline`. The pool proves
/// nothing here: its proof goes in the `Accept`, to a worker that proved
/// the secret. A wrong proof is answered with a `Reject`.
#[cfg(feature = "remote")]
pub(crate) fn challenge(
    stream: &Stream,
    hello: &Hello,
    key: Vec<u8>,
    deadline: Instant,
) -> Result<Proven, String> {
    let mut proven = Proven {
        key,
        worker_nonce: hello.nonce.clone(),
        pool_nonce: Vec::new(),
    };
    let secret = &proven.key[..];
    if hello.nonce.len() != SECRET_LEN {
        reject(stream, "no secret: set PROCPOOL_TOKEN");
        return Err(format!(
            "the worker brought no {SECRET_LEN}-byte challenge (it has no secret)"
        ));
    }
    let nonce = random_bytes(SECRET_LEN).map_err(|e| e.to_string())?;
    let challenge = Welcome::Challenge {
        nonce: nonce.clone(),
    };
    send_handshake(stream, &challenge).map_err(|e| format!("cannot send the challenge: {e}"))?;
    let proof = match read_handshake_frame(stream, Some(deadline)) {
        Ok(Some(body)) => Proof::decode(&body).map_err(|e| e.to_string())?,
        Ok(None) => return Err("the worker hung up during the handshake".into()),
        Err(e) if is_timeout(&e) => return Err("no proof in time".into()),
        Err(e) => return Err(e.to_string()),
    };
    if !handshake::check_worker_proof(secret, &nonce, &hello.nonce, &proof.mac) {
        let refused = HandshakeError::BadToken.to_string();
        reject(stream, &refused);
        return Err(refused);
    }
    proven.pool_nonce = nonce;
    Ok(proven)
}

/// What the pool tells a worker it accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accepted {
    pub worker_id: u32,
    pub generation: Generation,
    /// The largest frame either side may send from now on.
    pub max_frame: u32,
    /// How often the worker sends a heartbeat (0: never).
    pub heartbeat_ms: u32,
}

impl Accepted {
    #[cfg(feature = "remote")]
    fn fields(&self) -> [u8; 16] {
        handshake::accept_fields(
            self.worker_id,
            self.generation,
            self.max_frame,
            self.heartbeat_ms,
        )
    }
}

/// What opens a connection after the handshake: the reader for the peer's
/// frames (its cap lifted to the pool's `max_frame`, and on TCP checking
/// every tag) and, on TCP, the sealer for ours.
pub(crate) type Opened = (SocketReader, Option<Sealer>);

/// Without the `remote` feature no worker dials in, so none proves the
/// secret: this stands for what one proved, and has no values.
#[cfg(not(feature = "remote"))]
pub(crate) enum Proven {}

/// Accepts a worker whose hello passed: sends the `Accept` (with the
/// pool's proof, for a worker that `proven` the secret) and opens the
/// connection. On TCP the worker must have proven the secret: the link is
/// keyed from it.
pub(crate) fn accept(
    stream: &Stream,
    accepted: Accepted,
    proven: Option<&Proven>,
) -> Result<Opened, String> {
    if stream.is_tcp() && proven.is_none() {
        reject(stream, "a worker over TCP must prove the secret");
        return Err("a worker over TCP did not prove the secret".into());
    }
    let proof = match proven {
        #[cfg(feature = "remote")]
        Some(p) => {
            handshake::pool_proof(&p.key, &p.worker_nonce, &p.pool_nonce, &accepted.fields())
        }
        #[cfg(not(feature = "remote"))]
        Some(p) => match *p {},
        None => Vec::new(),
    };
    let welcome = Welcome::Accept {
        worker_id: accepted.worker_id,
        generation: accepted.generation,
        max_frame: accepted.max_frame,
        heartbeat_ms: accepted.heartbeat_ms,
        proof,
    };
    send_handshake(stream, &welcome).map_err(|e| format!("cannot send welcome: {e}"))?;
    let read_half = stream.try_clone().map_err(|e| e.to_string())?;
    let reader = frames::reader(read_half, accepted.max_frame);
    Ok(match proven {
        #[cfg(feature = "remote")]
        Some(p) if stream.is_tcp() => {
            let mut reader = reader;
            let (sealer, opener) =
                LinkKeys::derive(&p.key, &p.worker_nonce, &p.pool_nonce).pool_side();
            reader.set_opener(opener);
            (reader, Some(sealer))
        }
        _ => (reader, None),
    })
}

/// Whether a read failed because its timeout passed.
pub(crate) fn is_timeout(e: &procpool_wire::FrameError) -> bool {
    matches!(e, procpool_wire::FrameError::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

// ---- the worker's half ----

/// This process's program, as a hello names it.
pub(crate) fn this_program() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .or_else(|_| std::env::args().next().ok_or(()))
        .unwrap_or_else(|()| "<unknown program>".to_owned())
}

/// Tells the pool at once that this process, started as its worker, will
/// not serve (its hello carries `why`), then closes the connection.
pub(crate) fn refuse(stream: &Stream, why: &str) -> io::Result<()> {
    let mut hello = Hello::ours(std::process::id(), host_name(), 0, Vec::new())
        .with_tasks(this_program(), Vec::new());
    hello.refusal = Some(why.to_owned());
    send_handshake(stream, &hello)?;
    stream.shutdown();
    Ok(())
}

/// The worker's side: says hello (with a nonce if it has a `secret`),
/// answers the pool's challenge, and waits to be accepted. A worker that
/// has the secret refuses a pool that does not prove it; a worker on TCP
/// must have it. Returns the opened connection (the reader, its cap lifted
/// to the pool's `max_frame`; on TCP the sealer) and what the pool said.
/// Without the `remote` feature a worker has no secret (it is always
/// `None`) and refuses a challenge.
pub(crate) fn greet_pool(
    stream: &Stream,
    secret: Option<&[u8]>,
    ticket: u64,
    tasks: Vec<TaskInfo>,
) -> Result<(Opened, Accepted), String> {
    if stream.is_tcp() && secret.is_none() {
        return Err("a worker over TCP needs the pool's secret: set PROCPOOL_TOKEN".into());
    }
    let nonce = match &secret {
        #[cfg(feature = "remote")]
        Some(_) => random_bytes(SECRET_LEN).map_err(|e| format!("no randomness: {e}"))?,
        #[cfg(not(feature = "remote"))]
        Some(_) => return Err(NO_REMOTE.into()),
        None => Vec::new(),
    };
    let hello = Hello::ours(std::process::id(), host_name(), ticket, nonce.clone())
        .with_tasks(this_program(), tasks);
    send_handshake(stream, &hello).map_err(|e| format!("cannot greet the pool: {e}"))?;
    let mut challenged: Option<Vec<u8>> = None;
    let (accepted, proof) = loop {
        let body = match read_handshake_frame(stream, None) {
            Ok(Some(b)) => b,
            Ok(None) => return Err("the pool closed the connection during the handshake".into()),
            Err(e) => return Err(format!("handshake: {e}")),
        };
        match Welcome::decode(&body).map_err(|e| e.to_string())? {
            Welcome::Challenge { nonce: theirs } => {
                answer_challenge(stream, secret, &nonce, theirs, &mut challenged)?;
            }
            Welcome::Accept {
                worker_id,
                generation,
                max_frame,
                heartbeat_ms,
                proof,
            } => {
                let accepted = Accepted {
                    worker_id,
                    generation,
                    max_frame,
                    heartbeat_ms,
                };
                break (accepted, proof);
            }
            Welcome::Reject { reason } => {
                return Err(HandshakeError::Rejected(reason).to_string());
            }
        }
    };
    let read_half = stream.try_clone().map_err(|e| e.to_string())?;
    let reader = frames::reader(read_half, accepted.max_frame);
    let opened = open_worker_link(
        stream, reader, secret, &nonce, challenged, &accepted, &proof,
    )?;
    Ok((opened, accepted))
}

/// Why a worker built without the `remote` feature cannot prove a secret.
#[cfg(not(feature = "remote"))]
const NO_REMOTE: &str =
    "this worker was built without procpool's `remote` feature: it cannot prove the pool's secret";

/// The worker's answer to the pool's challenge `theirs` (once): its proof
/// of the secret, over both nonces.
#[cfg(feature = "remote")]
fn answer_challenge(
    stream: &Stream,
    secret: Option<&[u8]>,
    nonce: &[u8],
    theirs: Vec<u8>,
    challenged: &mut Option<Vec<u8>>,
) -> Result<(), String> {
    let Some(secret) = secret else {
        return Err("the pool asked for a secret this worker does not have".into());
    };
    if challenged.is_some() {
        return Err("the pool challenged this worker twice".into());
    }
    let mac = handshake::worker_proof(secret, &theirs, nonce);
    send_handshake(stream, &Proof { mac })
        .map_err(|e| format!("cannot answer the challenge: {e}"))?;
    *challenged = Some(theirs);
    Ok(())
}

/// Without the `remote` feature a worker has no secret to prove.
#[cfg(not(feature = "remote"))]
fn answer_challenge(
    _: &Stream,
    _: Option<&[u8]>,
    _: &[u8],
    _: Vec<u8>,
    _: &mut Option<Vec<u8>>,
) -> Result<(), String> {
    Err(NO_REMOTE.into())
}

/// After the `Accept`: a worker that has the secret checks the pool's
/// proof, and on TCP keys the link (the reader opens, the sealer seals).
#[cfg(feature = "remote")]
fn open_worker_link(
    stream: &Stream,
    mut reader: SocketReader,
    secret: Option<&[u8]>,
    nonce: &[u8],
    challenged: Option<Vec<u8>>,
    accepted: &Accepted,
    proof: &[u8],
) -> Result<Opened, String> {
    let keys = match (secret, &challenged) {
        (Some(secret), Some(theirs)) => {
            if !handshake::check_pool_proof(secret, nonce, theirs, &accepted.fields(), proof) {
                return Err("wrong secret token: the pool's proof does not match PROCPOOL_TOKEN (or it is not our pool)".into());
            }
            Some(LinkKeys::derive(secret, nonce, theirs))
        }
        (Some(_), None) => {
            return Err(
                "the pool accepted this worker without proving the secret; not serving it".into(),
            );
        }
        (None, _) => None,
    };
    let sealer = match keys {
        Some(k) if stream.is_tcp() => {
            let (sealer, opener) = k.worker_side();
            reader.set_opener(opener);
            Some(sealer)
        }
        _ => None,
    };
    Ok((reader, sealer))
}

/// Without the `remote` feature nothing was proven (no secret, no
/// challenge answered), and nothing is sealed.
#[cfg(not(feature = "remote"))]
fn open_worker_link(
    _: &Stream,
    reader: SocketReader,
    _: Option<&[u8]>,
    _: &[u8],
    _: Option<Vec<u8>>,
    _: &Accepted,
    _: &[u8],
) -> Result<Opened, String> {
    Ok((reader, None))
}
