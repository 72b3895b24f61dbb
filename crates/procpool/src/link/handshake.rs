//! Both halves of the handshake that opens every connection (the messages
//! are `procpool_wire::handshake`):
//!
//! ```text
//! worker                                   pool
//!   Hello {protocol, build, pid, host,  ─▶   check it (read_hello, check_hello)
//!          ticket, nonce}
//!                                       ◀─   Challenge {nonce, proof}   (dialed-in
//!   check the pool's proof; Proof {mac} ─▶   check the worker's proof    workers only)
//!                                       ◀─   Accept {worker_id, generation, max_frame,
//!                                                   heartbeat_ms} | Reject {reason}
//! ```
//!
//! A worker that dialed in brings the pool's secret: each side proves it
//! knows it (HMAC over both nonces), and it never crosses the wire. A
//! spawned worker on an inherited `socketpair` end brings no nonce and gets
//! no challenge. Handshake frames are capped at `HANDSHAKE_MAX_FRAME` until
//! the worker is accepted. What happens after `Accept` (the initializer,
//! tasks) is not the handshake's business. Takes no lock.

use std::io;
use std::time::Duration;

use procpool_wire::Generation;
use procpool_wire::handshake::{
    self, HANDSHAKE_MAX_FRAME, HandshakeError, Hello, Proof, SECRET_LEN, TaskInfo, Welcome,
};

use super::frames::{self, SocketReader};
use super::secret::{host_name, random_bytes};
use super::stream::Stream;

/// Writes one handshake message (hello, welcome, challenge, proof) as a
/// frame of its own.
pub(crate) fn send_handshake<T: serde::Serialize>(stream: &Stream, msg: &T) -> io::Result<()> {
    let body = procpool_wire::codec::encode(msg).map_err(io::Error::other)?;
    let frame = procpool_wire::frame::Outgoing::new(body, Vec::<procpool_wire::Payload>::new())?;
    procpool_wire::frame::write_all_frames(&mut &*stream, &[frame])
}

// ---- the pool's half ----

/// Sends a `Reject` with `reason` (best effort).
pub(crate) fn reject(stream: &Stream, reason: &str) {
    let reject = Welcome::Reject {
        reason: reason.to_owned(),
    };
    let _ = send_handshake(stream, &reject);
}

/// Reads a worker's hello (within `timeout`, under the small handshake
/// frame cap); see [`check_hello`].
pub(crate) fn read_hello(
    stream: &Stream,
    timeout: Duration,
) -> Result<(SocketReader, Hello), String> {
    let read_half = stream.try_clone().map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut reader = frames::reader(read_half, HANDSHAKE_MAX_FRAME);
    let hello = match reader.next_frame() {
        Ok(Some(body)) => Hello::decode(body).map_err(|e| e.to_string())?,
        Ok(None) => return Err("the worker exited before saying hello".into()),
        Err(e) if is_timeout(&e) => {
            return Err(format!(
                "no hello within {timeout:?} (is the program a procpool worker?)"
            ));
        }
        Err(e) => return Err(e.to_string()),
    };
    Ok((reader, hello))
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

/// The pool's side of the secret handshake with a worker that dialed in:
/// prove the secret, then check the worker's proof (both within
/// `timeout`). A wrong proof is answered with a `Reject`.
pub(crate) fn challenge(
    stream: &Stream,
    mut reader: SocketReader,
    hello: &Hello,
    secret: &[u8],
    timeout: Duration,
) -> Result<SocketReader, String> {
    if hello.nonce.len() != SECRET_LEN {
        reject(stream, "no secret: set PROCPOOL_TOKEN");
        return Err(format!(
            "the worker brought no {SECRET_LEN}-byte challenge (it has no secret)"
        ));
    }
    let nonce = random_bytes(SECRET_LEN).map_err(|e| e.to_string())?;
    let challenge = Welcome::Challenge {
        proof: handshake::pool_proof(secret, &hello.nonce, &nonce),
        nonce: nonce.clone(),
    };
    send_handshake(stream, &challenge).map_err(|e| format!("cannot send the challenge: {e}"))?;
    let proof = match reader.next_frame() {
        Ok(Some(body)) => Proof::decode(body).map_err(|e| e.to_string())?,
        Ok(None) => return Err("the worker hung up during the handshake".into()),
        Err(e) if is_timeout(&e) => {
            return Err(format!("no proof within {timeout:?}"));
        }
        Err(e) => return Err(e.to_string()),
    };
    if !handshake::check_worker_proof(secret, &nonce, &hello.nonce, &proof.mac) {
        let refused = HandshakeError::BadToken.to_string();
        reject(stream, &refused);
        return Err(refused);
    }
    Ok(reader)
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

/// Accepts a worker whose hello passed: sends the `Accept` and lifts the
/// reader's frame cap to `accepted.max_frame`.
pub(crate) fn accept(
    stream: &Stream,
    reader: &mut SocketReader,
    accepted: Accepted,
) -> Result<(), String> {
    let welcome = Welcome::Accept {
        worker_id: accepted.worker_id,
        generation: accepted.generation,
        max_frame: accepted.max_frame,
        heartbeat_ms: accepted.heartbeat_ms,
    };
    send_handshake(stream, &welcome).map_err(|e| format!("cannot send welcome: {e}"))?;
    reader.set_max(accepted.max_frame);
    Ok(())
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
/// has the secret refuses a pool that does not prove it. Returns the
/// reader for the pool's messages (its cap lifted to the pool's
/// `max_frame`) and what the pool said.
pub(crate) fn greet_pool(
    stream: &Stream,
    secret: Option<&[u8]>,
    ticket: u64,
    tasks: Vec<TaskInfo>,
) -> Result<(SocketReader, Accepted), String> {
    let read_half = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = frames::reader(read_half, HANDSHAKE_MAX_FRAME);
    let nonce = match &secret {
        Some(_) => random_bytes(SECRET_LEN).map_err(|e| format!("no randomness: {e}"))?,
        None => Vec::new(),
    };
    let hello = Hello::ours(std::process::id(), host_name(), ticket, nonce.clone())
        .with_tasks(this_program(), tasks);
    send_handshake(stream, &hello).map_err(|e| format!("cannot greet the pool: {e}"))?;
    let mut proven = false;
    let accepted = loop {
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
                send_handshake(stream, &Proof { mac })
                    .map_err(|e| format!("cannot answer the challenge: {e}"))?;
            }
            Welcome::Accept {
                worker_id,
                generation,
                max_frame,
                heartbeat_ms,
            } => {
                break Accepted {
                    worker_id,
                    generation,
                    max_frame,
                    heartbeat_ms,
                };
            }
            Welcome::Reject { reason } => {
                return Err(HandshakeError::Rejected(reason).to_string());
            }
        }
    };
    if secret.is_some() && !proven {
        return Err(
            "the pool accepted this worker without proving the secret; not serving it".into(),
        );
    }
    reader.set_max(accepted.max_frame);
    Ok((reader, accepted))
}
