//! The first frame each way.
//!
//! A worker always speaks first with a [`Hello`] (magic, protocol version,
//! build id, pid and, in attach mode, the pool's secret token); the parent
//! answers [`Welcome`] with the worker's id and generation, or
//! [`Welcome::Reject`] with a reason, and closes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Generation;
use crate::codec::{self, CodecError};

/// Bumped on every incompatible change to the messages.
pub const PROTOCOL_VERSION: u32 = 1;

/// The build of the wire crate both sides must share.
pub const BUILD_ID: &str = concat!("procpool-wire ", env!("CARGO_PKG_VERSION"));

/// The first bytes of every hello.
pub const MAGIC: [u8; 8] = *b"procpool";

/// Cap on a handshake frame: a stranger cannot make the pool allocate more.
pub const HANDSHAKE_MAX_FRAME: u32 = 64 * 1024;

/// A worker's first frame.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The worker's [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The worker's [`BUILD_ID`].
    pub build_id: String,
    /// The worker's process id.
    pub pid: u32,
    /// The pool's secret, for workers that attach over a named socket.
    #[serde(with = "serde_bytes")]
    pub token: Vec<u8>,
}

impl Hello {
    /// The hello this build sends.
    pub fn ours(pid: u32, token: Vec<u8>) -> Hello {
        Hello {
            magic: MAGIC,
            protocol: PROTOCOL_VERSION,
            build_id: BUILD_ID.to_owned(),
            pid,
            token,
        }
    }

    /// Decodes a hello frame; anything else is a typed error.
    pub fn decode(body: &[u8]) -> Result<Hello, HandshakeError> {
        codec::decode_limited::<Hello, { codec::HANDSHAKE_DECODE_LIMIT }>(body)
            .map_err(HandshakeError::Garbled)
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
    },
    /// Refused; the parent closes the connection.
    Reject {
        /// Why, for the worker's log.
        reason: String,
    },
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
        let h = Hello::ours(42, vec![1, 2, 3]);
        let back = Hello::decode(&codec::encode(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        back.check().unwrap();
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut h = Hello::ours(1, vec![]);
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
    fn wrong_build_is_refused() {
        let mut h = Hello::ours(1, vec![]);
        h.build_id = "procpool-wire 0.0.0-other".into();
        assert!(matches!(h.check(), Err(HandshakeError::Build { .. })));
    }

    #[test]
    fn bad_magic_and_garbage() {
        let mut h = Hello::ours(1, vec![]);
        h.magic = *b"notmine!";
        assert_eq!(h.check(), Err(HandshakeError::NotProcpool));
        assert!(matches!(
            Hello::decode(b"GET / HTTP/1.1\r\n"),
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
            },
            Welcome::Reject {
                reason: "no".into(),
            },
        ] {
            assert_eq!(Welcome::decode(&codec::encode(&w).unwrap()).unwrap(), w);
        }
    }
}
