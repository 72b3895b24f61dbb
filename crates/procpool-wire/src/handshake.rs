//! The first frames each way.
//!
//! A worker always speaks first with a [`Hello`] (magic, protocol version,
//! build id, pid, host and a fresh nonce). A worker the pool started on an
//! inherited socket is answered at once with a [`Welcome::Accept`] (its id
//! and generation) or a [`Welcome::Reject`] (with a reason; the parent then
//! closes).
//!
//! A worker that *dialed in* (attach mode, TCP) must prove it knows the
//! pool's 32-byte secret, and the pool proves it too, so neither side talks
//! to a stranger. The secret never crosses the wire. The dialer proves
//! first: the pool proves nothing to a peer that has not proved the
//! secret, so it is no oracle for a relay.
//!
//! ```text
//! worker ── Hello { nonce: wn } ───────────────────────────▶ pool
//! worker ◀── Welcome::Challenge { nonce: pn } ─────────────── pool
//! worker ── Proof { mac: HMAC(secret, "worker" ‖ pn ‖ wn) } ▶ pool
//! worker ◀── Welcome::Accept { …, proof: HMAC(secret, "pool"
//!                 ‖ wn ‖ pn ‖ the Accept's fields) } / Reject ── pool
//! ```
//!
//! On TCP every later frame is authenticated with keys derived from the
//! secret and both nonces (see [`crate::seal`]).
//!
//! Every handshake frame is capped at [`HANDSHAKE_MAX_FRAME`].
//!
//! The messages are always here; the proofs (HMAC-SHA256) are the `seal`
//! feature (on by default). Without it only the first exchange above, a
//! worker on an inherited socket, can be carried out.

use std::fmt;

#[cfg(feature = "seal")]
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
#[cfg(feature = "seal")]
use sha2::Sha256;

use crate::Generation;
use crate::codec::{self, CodecError};

/// Bumped on every incompatible change to the messages (3: the hello
/// announces the worker's program and tasks, and may refuse; 4: task
/// headers and results declare the descriptors of their shared payloads;
/// 5: the dialer proves the secret first, the pool's proof comes in the
/// `Accept`, and every later frame on TCP is sealed; 6: packed chunks and
/// `Item`; 7: `Records`, a worker keeper's forwarded reply ring; 8: task
/// headers and results declare bulk byte strings, sent after the frame; 9:
/// `ToWorker::Wake`, a spawned worker's work ring; 10: a keeper packs the
/// item records it forwards in `Records`).
pub const PROTOCOL_VERSION: u32 = 10;

/// Length of the pool's secret and of each nonce.
pub const SECRET_LEN: usize = 32;

/// The build of the wire crate both sides must share.
pub const BUILD_ID: &str = concat!("procpool-wire ", env!("CARGO_PKG_VERSION"));

/// The first bytes of every hello.
pub const MAGIC: [u8; 8] = *b"procpool";

/// Cap on a handshake frame: a stranger cannot make the pool allocate more.
pub const HANDSHAKE_MAX_FRAME: u32 = 64 * 1024;

/// Most characters of a peer's host name shown in a log line.
pub const HOST_LOG_CHARS: usize = 64;

/// Text a peer sent, made safe for one log line: control characters
/// (newlines, escape sequences, NUL), backslashes and quotes are escaped,
/// and it is cut after `max_chars` characters, marked with `…(N bytes)`.
///
/// ```
/// use procpool_wire::handshake::printable;
/// assert_eq!(printable("node1", 64), "node1");
/// assert_eq!(printable("a\nb\u{1b}[31m", 64), "a\\nb\\u{1b}[31m");
/// assert_eq!(printable("abcdef", 3), "abc…(6 bytes)");
/// ```
pub fn printable(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars * 2) + 16);
    let mut chars = s.chars();
    for c in chars.by_ref().take(max_chars) {
        if c.is_control() || c == '\\' || c == '"' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if chars.next().is_some() {
        out.push_str(&format!("…({} bytes)", s.len()));
    }
    out
}

/// A worker's first frame.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The worker's [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The worker's [`BUILD_ID`].
    pub build_id: String,
    /// The worker's process id (on its own host).
    pub pid: u32,
    /// The worker's host name.
    pub host: String,
    /// What the pool gave this process to match it to the slot it started
    /// it for (`PROCPOOL_TICKET`); 0 for workers the pool did not start.
    pub ticket: u64,
    /// The worker's challenge to the pool ([`SECRET_LEN`] random bytes), or
    /// empty for a worker on an inherited socket.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// The worker's program (its executable's path), for messages.
    pub program: String,
    /// The tasks the worker can run, sorted by name.
    pub tasks: Vec<TaskInfo>,
    /// Whether `tasks` is every task the worker knows (a registry too large
    /// for a handshake frame is announced in part, and the pool then does
    /// not refuse unknown names at submit).
    pub tasks_complete: bool,
    /// `Some(why)`: this process was started as a worker but will not serve
    /// (e.g. its `main()` reached `ProcessPool::build()` instead of
    /// `run_if_worker`); the pool fails the start with this message.
    pub refusal: Option<String>,
}

/// One task a worker can run, as its hello announces it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// The task's `NAME`.
    pub name: String,
    /// [`fingerprint`](crate::message::fingerprint) of its name and types.
    pub fingerprint: u64,
    /// Its input type (`std::any::type_name`).
    pub input_type: String,
}

/// Room kept for a hello's fixed fields when its task list is cut to fit
/// [`HANDSHAKE_MAX_FRAME`].
const HELLO_ROOM: usize = 4096;

/// The first fields of every hello, whatever its version: read first, so
/// a peer of another protocol version gets a version error, not "garbled".
#[derive(Deserialize)]
struct HelloHead {
    magic: [u8; 8],
    protocol: u32,
}

impl Hello {
    /// The hello this build sends.
    pub fn ours(pid: u32, host: String, ticket: u64, nonce: Vec<u8>) -> Hello {
        Hello {
            magic: MAGIC,
            protocol: PROTOCOL_VERSION,
            build_id: BUILD_ID.to_owned(),
            pid,
            host,
            ticket,
            nonce,
            program: String::new(),
            tasks: Vec::new(),
            tasks_complete: false,
            refusal: None,
        }
    }

    /// Announces `tasks` (sorted here), as many as fit a handshake frame;
    /// `tasks_complete` says whether all did.
    pub fn with_tasks(mut self, program: String, mut tasks: Vec<TaskInfo>) -> Hello {
        tasks.sort_by(|a, b| a.name.cmp(&b.name));
        let budget = HANDSHAKE_MAX_FRAME as usize - HELLO_ROOM - program.len().min(HELLO_ROOM);
        let mut used = 0;
        let mut kept = Vec::with_capacity(tasks.len());
        let total = tasks.len();
        for t in tasks {
            // Two length prefixes, the fingerprint, and the text.
            let size = 8 + 8 + 8 + t.name.len() + t.input_type.len();
            if used + size > budget {
                break;
            }
            used += size;
            kept.push(t);
        }
        self.tasks_complete = kept.len() == total;
        self.tasks = kept;
        self.program = program.chars().take(HELLO_ROOM / 4).collect();
        self
    }

    /// Decodes a hello frame; anything else is a typed error. A hello that
    /// does not decode but starts like one of another protocol version is
    /// a [`HandshakeError::Protocol`] (a stranger's bytes: `NotProcpool`).
    pub fn decode(body: &[u8]) -> Result<Hello, HandshakeError> {
        codec::decode_limited::<Hello, { codec::HANDSHAKE_DECODE_LIMIT }>(body).map_err(|e| {
            match codec::decode_prefix_limited::<HelloHead, { codec::HANDSHAKE_DECODE_LIMIT }>(body)
            {
                Ok((head, _)) if head.magic != MAGIC => HandshakeError::NotProcpool,
                Ok((head, _)) if head.protocol != PROTOCOL_VERSION => HandshakeError::Protocol {
                    ours: PROTOCOL_VERSION,
                    theirs: head.protocol,
                },
                _ => HandshakeError::Garbled(e),
            }
        })
    }

    /// The host name as a log line may show it (see [`printable`]): it
    /// comes from the peer, before or without authentication.
    pub fn host_for_log(&self) -> String {
        printable(&self.host, HOST_LOG_CHARS)
    }

    /// Checks the hello against this build.
    pub fn check(&self) -> Result<(), HandshakeError> {
        if self.magic != MAGIC {
            return Err(HandshakeError::NotProcpool);
        }
        if self.protocol != PROTOCOL_VERSION {
            return Err(HandshakeError::Protocol {
                ours: PROTOCOL_VERSION,
                theirs: self.protocol,
            });
        }
        if self.build_id != BUILD_ID {
            return Err(HandshakeError::Build {
                ours: BUILD_ID.to_owned(),
                theirs: self.build_id.clone(),
            });
        }
        Ok(())
    }
}

/// The parent's answer to a [`Hello`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Welcome {
    /// Accepted.
    Accept {
        /// The slot this worker fills.
        worker_id: u32,
        /// Stamp on every message the worker sends.
        generation: Generation,
        /// Cap on frames the worker may send and will receive.
        max_frame: u32,
        /// Milliseconds between the worker's [`ToParent::Heartbeat`]s
        /// (0: none).
        ///
        /// [`ToParent::Heartbeat`]: crate::message::ToParent::Heartbeat
        heartbeat_ms: u32,
        /// For a worker that proved the secret: [`pool_proof`] of both
        /// nonces and the fields above. Empty for a worker on an inherited
        /// socket.
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
    },
    /// Refused; the parent closes the connection.
    Reject {
        /// Why, for the worker's log.
        reason: String,
    },
    /// The pool's challenge to a worker that dialed in (and nothing that
    /// depends on the secret); the worker answers with a [`Proof`].
    Challenge {
        /// The pool's nonce ([`SECRET_LEN`] random bytes).
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
    },
}

/// A dialed-in worker's answer to [`Welcome::Challenge`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// [`worker_proof`] of the two nonces.
    #[serde(with = "serde_bytes")]
    pub mac: Vec<u8>,
}

impl Proof {
    /// Decodes a proof frame.
    pub fn decode(body: &[u8]) -> Result<Proof, HandshakeError> {
        codec::decode_limited::<Proof, { codec::HANDSHAKE_DECODE_LIMIT }>(body)
            .map_err(HandshakeError::Garbled)
    }
}

#[cfg(feature = "seal")]
fn mac(secret: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    for part in parts {
        // Length-prefixed, so the parts cannot be shifted into each other.
        m.update(&(part.len() as u32).to_le_bytes());
        m.update(part);
    }
    m
}

/// The key of one launch (a spawned worker, or one `srun`/`mpirun` run):
/// derived from the pool's secret and the launch's ticket, and the only
/// key that launch's workers are given (as `PROCPOOL_TOKEN`). The pool
/// derives it again from the ticket a hello names, so a worker (or a
/// program its task starts) that leaks its key cannot dial in under any
/// other ticket, and never learns the pool's secret. Ticket 0 (a worker
/// attached by hand) uses the secret itself.
#[cfg(feature = "seal")]
#[cfg_attr(docsrs, doc(cfg(feature = "seal")))]
pub fn launch_key(secret: &[u8], ticket: u64) -> Vec<u8> {
    if ticket == 0 {
        return secret.to_vec();
    }
    mac(
        secret,
        &[b"procpool launch key", &ticket.to_le_bytes(), &[]],
    )
    .finalize()
    .into_bytes()
    .to_vec()
}

/// The fields of a [`Welcome::Accept`] its proof covers, as bytes.
pub fn accept_fields(
    worker_id: u32,
    generation: Generation,
    max_frame: u32,
    heartbeat_ms: u32,
) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, v) in [worker_id, generation, max_frame, heartbeat_ms]
        .into_iter()
        .enumerate()
    {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// What the pool sends, in its `Accept` and only once the worker proved
/// the secret, to prove it knows `secret` too; it covers the `Accept`'s
/// fields ([`accept_fields`]).
#[cfg(feature = "seal")]
#[cfg_attr(docsrs, doc(cfg(feature = "seal")))]
pub fn pool_proof(
    secret: &[u8],
    worker_nonce: &[u8],
    pool_nonce: &[u8],
    accepted: &[u8],
) -> Vec<u8> {
    mac(
        secret,
        &[b"procpool pool", worker_nonce, pool_nonce, accepted],
    )
    .finalize()
    .into_bytes()
    .to_vec()
}

/// What a worker sends to prove it knows `secret`.
#[cfg(feature = "seal")]
#[cfg_attr(docsrs, doc(cfg(feature = "seal")))]
pub fn worker_proof(secret: &[u8], pool_nonce: &[u8], worker_nonce: &[u8]) -> Vec<u8> {
    mac(secret, &[b"procpool worker", pool_nonce, worker_nonce])
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Checks the pool's proof in constant time.
#[cfg(feature = "seal")]
#[cfg_attr(docsrs, doc(cfg(feature = "seal")))]
pub fn check_pool_proof(
    secret: &[u8],
    worker_nonce: &[u8],
    pool_nonce: &[u8],
    accepted: &[u8],
    proof: &[u8],
) -> bool {
    mac(
        secret,
        &[b"procpool pool", worker_nonce, pool_nonce, accepted],
    )
    .verify_slice(proof)
    .is_ok()
}

/// Checks a worker's proof in constant time.
#[cfg(feature = "seal")]
#[cfg_attr(docsrs, doc(cfg(feature = "seal")))]
pub fn check_worker_proof(
    secret: &[u8],
    pool_nonce: &[u8],
    worker_nonce: &[u8],
    proof: &[u8],
) -> bool {
    mac(secret, &[b"procpool worker", pool_nonce, worker_nonce])
        .verify_slice(proof)
        .is_ok()
}

impl Welcome {
    /// Decodes a welcome frame.
    pub fn decode(body: &[u8]) -> Result<Welcome, HandshakeError> {
        codec::decode_limited::<Welcome, { codec::HANDSHAKE_DECODE_LIMIT }>(body)
            .map_err(HandshakeError::Garbled)
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The frame did not decode as a handshake.
    Garbled(CodecError),
    /// The magic bytes are wrong: the peer is not a procpool worker.
    NotProcpool,
    /// Different protocol versions.
    Protocol {
        /// This side's version.
        ours: u32,
        /// The peer's version.
        theirs: u32,
    },
    /// Different builds of the wire crate.
    Build {
        /// This side's build id.
        ours: String,
        /// The peer's build id.
        theirs: String,
    },
    /// The secret token did not match.
    BadToken,
    /// The parent refused this worker.
    Rejected(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Garbled(e) => write!(f, "handshake frame is not a procpool hello: {e}"),
            HandshakeError::NotProcpool => f.write_str("peer is not a procpool worker (bad magic)"),
            HandshakeError::Protocol { ours, theirs } => write!(
                f,
                "protocol version mismatch: pool speaks {ours}, worker speaks {theirs}; \
                 rebuild the worker binary against the same procpool version"
            ),
            HandshakeError::Build { ours, theirs } => write!(
                f,
                "build mismatch: pool is `{ours}`, worker is `{theirs}`; \
                 rebuild the worker binary against the same procpool version"
            ),
            HandshakeError::BadToken => f.write_str("worker presented a wrong secret token"),
            HandshakeError::Rejected(r) => write!(f, "pool rejected the worker: {r}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_hello_round_trips_and_checks() {
        let h = Hello::ours(42, "node1".into(), 7, vec![1, 2, 3]);
        let back = Hello::decode(&codec::encode(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        back.check().unwrap();
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut h = Hello::ours(1, String::new(), 0, vec![]);
        h.protocol = PROTOCOL_VERSION + 1;
        let err = h.check().unwrap_err();
        assert_eq!(
            err,
            HandshakeError::Protocol {
                ours: PROTOCOL_VERSION,
                theirs: PROTOCOL_VERSION + 1
            }
        );
        assert!(err.to_string().contains("rebuild the worker"));
    }

    #[test]
    fn a_hello_of_another_version_is_a_version_error_not_garbage() {
        // What a version-2 worker sent: the fields before `program`.
        let mut h = Hello::ours(1, "n".into(), 0, vec![]);
        h.protocol = 2;
        let mut old = codec::encode(&h).unwrap();
        let new_tail =
            codec::encode(&(String::new(), Vec::<TaskInfo>::new(), false, None::<String>))
                .unwrap()
                .len();
        old.truncate(old.len() - new_tail);
        assert_eq!(
            Hello::decode(&old),
            Err(HandshakeError::Protocol {
                ours: PROTOCOL_VERSION,
                theirs: 2
            })
        );
    }

    #[test]
    fn a_hello_announces_its_tasks_within_the_frame_cap() {
        let task = |i: usize| TaskInfo {
            name: format!("task_{i:05}"),
            fingerprint: i as u64,
            input_type: format!("my_crate::jobs::Task{i}"),
        };
        let small = Hello::ours(1, String::new(), 0, vec![])
            .with_tasks("/bin/me".into(), vec![task(2), task(1)]);
        assert!(small.tasks_complete);
        assert_eq!(small.tasks, vec![task(1), task(2)]);
        let back = Hello::decode(&codec::encode(&small).unwrap()).unwrap();
        assert_eq!(back, small);

        let huge = Hello::ours(1, String::new(), 0, vec![])
            .with_tasks("/bin/me".into(), (0..10_000).map(task).collect());
        assert!(!huge.tasks_complete);
        assert!(!huge.tasks.is_empty());
        let body = codec::encode(&huge).unwrap();
        assert!(body.len() <= HANDSHAKE_MAX_FRAME as usize, "{}", body.len());
        assert_eq!(Hello::decode(&body).unwrap(), huge);
    }

    #[test]
    fn wrong_build_is_refused() {
        let mut h = Hello::ours(1, String::new(), 0, vec![]);
        h.build_id = "procpool-wire 0.0.0-other".into();
        assert!(matches!(h.check(), Err(HandshakeError::Build { .. })));
    }

    #[test]
    fn bad_magic_and_garbage() {
        let mut h = Hello::ours(1, String::new(), 0, vec![]);
        h.magic = *b"notmine!";
        assert_eq!(h.check(), Err(HandshakeError::NotProcpool));
        assert_eq!(
            Hello::decode(b"GET / HTTP/1.1\r\n"),
            Err(HandshakeError::NotProcpool)
        );
        assert!(matches!(
            Hello::decode(b"GET"),
            Err(HandshakeError::Garbled(_))
        ));
    }

    #[test]
    fn welcome_round_trip() {
        for w in [
            Welcome::Accept {
                worker_id: 3,
                generation: 9,
                max_frame: 1024,
                heartbeat_ms: 500,
                proof: vec![4; 32],
            },
            Welcome::Reject {
                reason: "no".into(),
            },
            Welcome::Challenge {
                nonce: vec![1; SECRET_LEN],
            },
        ] {
            assert_eq!(Welcome::decode(&codec::encode(&w).unwrap()).unwrap(), w);
        }
    }

    #[test]
    #[cfg(feature = "seal")]
    fn proofs_bind_secret_role_both_nonces_and_the_accept() {
        let (secret, wn, pn) = ([7u8; 32], [1u8; 32], [2u8; 32]);
        let fields = accept_fields(1, 2, 3, 4);
        let p = pool_proof(&secret, &wn, &pn, &fields);
        assert_eq!(p.len(), 32);
        assert!(check_pool_proof(&secret, &wn, &pn, &fields, &p));
        assert!(
            !check_pool_proof(&[8u8; 32], &wn, &pn, &fields, &p),
            "other secret"
        );
        assert!(
            !check_pool_proof(&secret, &pn, &wn, &fields, &p),
            "nonces swapped"
        );
        assert!(
            !check_pool_proof(&secret, &wn, &pn, &fields, &p[..31]),
            "truncated"
        );
        let other = accept_fields(1, 3, 3, 4);
        assert!(
            !check_pool_proof(&secret, &wn, &pn, &other, &p),
            "another generation"
        );
        let (k1, k2) = (launch_key(&secret, 1), launch_key(&secret, 2));
        assert_eq!(k1.len(), SECRET_LEN);
        assert!(k1 != k2 && k1 != secret && k1 == launch_key(&secret, 1));
        assert_eq!(launch_key(&secret, 0), secret);
        let w = worker_proof(&secret, &pn, &wn);
        assert_ne!(w, p, "a pool proof cannot be replayed as a worker's");
        assert!(check_worker_proof(&secret, &pn, &wn, &w));
        assert!(!check_worker_proof(&secret, &pn, &wn, &p));
        let back = Proof::decode(&codec::encode(&Proof { mac: w.clone() }).unwrap()).unwrap();
        assert_eq!(back.mac, w);
    }

    #[test]
    fn a_challenge_carries_only_the_nonce() {
        let c = codec::encode(&Welcome::Challenge {
            nonce: vec![9; SECRET_LEN],
        })
        .unwrap();
        assert!(c.len() <= SECRET_LEN + 2, "{} bytes", c.len());
    }

    #[test]
    fn hostile_host_names_are_escaped_and_cut_for_logs() {
        let evil = format!("a\nFAKE LOG LINE\r\u{1b}[2J\0{}", "x".repeat(64 * 1024));
        let h = Hello::ours(1, evil.clone(), 0, vec![]);
        let shown = h.host_for_log();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(
            shown.starts_with("a\\nFAKE LOG LINE\\r\\u{1b}[2J\\u{0}"),
            "{shown}"
        );
        assert!(shown.len() < 200, "{} bytes", shown.len());
        assert!(
            shown.ends_with(&format!("…({} bytes)", evil.len())),
            "{shown}"
        );
        assert_eq!(
            printable("node-1.cluster", HOST_LOG_CHARS),
            "node-1.cluster"
        );
        assert_eq!(printable("q\"b\\", 10), "q\\\"b\\\\");
        // Multibyte characters are never split.
        assert_eq!(printable("ééé", 2), "éé…(6 bytes)");
    }
}
