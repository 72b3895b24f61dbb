//! The bytes procpool puts on a socket, and nothing about pools.
//!
//! * [`fds`]: descriptors sent with a frame over a Unix socket, and which
//!   frame each received descriptor belongs to.
//! * [`frame`]: a u32 little-endian length prefix and a body; the length is
//!   checked against a cap before anything is allocated.
//! * [`bulk`]: large byte strings that travel after their frame and are
//!   read straight into the buffer the value keeps.
//! * [`codec`]: the one place where serde meets bincode 2.0.1.
//! * [`message`]: what the parent says to a worker ([`message::ToWorker`]) and
//!   what a worker answers ([`message::ToParent`]); payloads travel after the
//!   header as raw bytes so a large input is never copied into the header.
//! * [`handshake`]: the first frame each way (magic, protocol version, build
//!   id, pid, optional secret token).
//! * [`seal`]: after the handshake on a network link, every frame's tag
//!   (HMAC-SHA256 over direction, sequence number and bytes).
//!
//! # Cargo features
//!
//! * `seal` (default): [`seal`], sealed frames and the handshake's proofs
//!   of the secret (HMAC-SHA256: the `hmac` and `sha2` crates). Without it
//!   frames travel unsealed and no secret can be proven: enough for a
//!   worker on an inherited socket, not for one that dials in.
//!
//! Every decoder in this crate returns a typed error on bad input; none
//! panics and none allocates past the frame cap.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod bulk;
pub mod codec;
pub mod fds;
pub mod frame;
pub mod handshake;
pub mod message;
mod owned_bytes;
#[cfg(feature = "seal")]
#[cfg_attr(docsrs, doc(cfg(feature = "seal")))]
pub mod seal;

pub use codec::CodecError;
#[cfg(feature = "seal")]
pub use frame::write_sealed_frames;
pub use frame::{FrameError, FrameReader, Outgoing, Payload, write_all_frames};
pub use handshake::{HandshakeError, Hello, PROTOCOL_VERSION, Welcome};
pub use message::{Outcome, TaskHeader, ToParent, ToWorker, WorkerTiming};

/// Identifies one task within one pool.
pub type TaskId = u64;
/// Incremented every time a worker slot gets a new process, so replies from a
/// replaced worker can be recognised and dropped.
pub type Generation = u32;
