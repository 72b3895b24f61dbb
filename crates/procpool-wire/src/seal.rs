//! Frame authentication on a network link: after the handshake every frame
//! on a TCP connection carries a tag, and a frame whose tag does not check
//! ends the connection.
//!
//! The protocol's promises:
//!
//! * **Keys.** Each direction has its own 32-byte key, derived from the
//!   pool's secret and both handshake nonces ([`LinkKeys::derive`]): a key
//!   is fresh for every connection (the nonces are), and a frame sealed for
//!   one direction never opens in the other.
//! * **Tag.** `HMAC-SHA256(key, label ‖ seq ‖ len ‖ body)`, where `label`
//!   names the direction, `seq` is the 64-bit number of the frame in its
//!   direction (0 for the first sealed frame, +1 per frame) and `len` the
//!   body's length. The [`TAG_LEN`]-byte tag follows the body on the wire,
//!   inside the frame's length prefix.
//! * **What fails.** A frame altered (any bit of body or tag), truncated,
//!   dropped (the next one carries an unexpected `seq`), replayed, reordered,
//!   sent back the other way, or injected by someone without the secret does
//!   not open: [`Opener::open`] returns [`SealError`], and the caller ends
//!   the connection. Nothing from a frame that did not open is used.
//! * **What it is not.** Authentication only: the bytes travel in clear.
//!   Socketpairs and local sockets (reachable only by the pool's own user)
//!   are not sealed; there it would only cost.
//!
//! Pure: no I/O. The frame reader opens ([`crate::FrameReader::set_opener`]),
//! and [`crate::frame::write_sealed_frames`] seals.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the tag after each sealed body.
pub const TAG_LEN: usize = 32;

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Pool → worker.
    ToWorker,
    /// Worker → pool.
    ToParent,
}

impl Direction {
    fn label(self) -> &'static [u8] {
        match self {
            Direction::ToWorker => b"procpool frame pool->worker",
            Direction::ToParent => b"procpool frame worker->pool",
        }
    }
}

/// The two keys of one connection. Not `Debug`: keys stay out of logs.
pub struct LinkKeys {
    to_worker: [u8; 32],
    to_parent: [u8; 32],
}

fn prefixed(m: &mut Hmac<Sha256>, part: &[u8]) {
    // Length-prefixed, so the parts cannot be shifted into each other.
    m.update(&(part.len() as u32).to_le_bytes());
    m.update(part);
}

fn keyed(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

impl LinkKeys {
    /// Both directions' keys for a connection whose handshake exchanged
    /// `worker_nonce` and `pool_nonce` under `secret`.
    pub fn derive(secret: &[u8], worker_nonce: &[u8], pool_nonce: &[u8]) -> LinkKeys {
        let key = |d: Direction| -> [u8; 32] {
            let mut m = keyed(secret);
            for part in [
                &b"procpool link key v1"[..],
                d.label(),
                worker_nonce,
                pool_nonce,
            ] {
                prefixed(&mut m, part);
            }
            m.finalize().into_bytes().into()
        };
        LinkKeys {
            to_worker: key(Direction::ToWorker),
            to_parent: key(Direction::ToParent),
        }
    }

    /// The pool's side: it seals what goes to the worker and opens what
    /// comes back.
    pub fn pool_side(&self) -> (Sealer, Opener) {
        (
            Sealer::new(&self.to_worker, Direction::ToWorker),
            Opener::new(&self.to_parent, Direction::ToParent),
        )
    }

    /// The worker's side: the mirror of [`pool_side`](Self::pool_side).
    pub fn worker_side(&self) -> (Sealer, Opener) {
        (
            Sealer::new(&self.to_parent, Direction::ToParent),
            Opener::new(&self.to_worker, Direction::ToWorker),
        )
    }
}

/// Keyed MAC state shared by both ends of one direction.
struct Chain {
    /// The key (for [`Sealer::hand_over`]).
    key: [u8; 32],
    /// The HMAC keyed once; cloned per frame (saves two block compressions).
    mac: Hmac<Sha256>,
    direction: Direction,
    /// Number of the next frame in this direction.
    seq: u64,
}

impl Chain {
    fn new(key: &[u8; 32], direction: Direction) -> Chain {
        Chain {
            key: *key,
            mac: keyed(key),
            direction,
            seq: 0,
        }
    }

    fn mac<'a>(&self, body_len: usize, parts: impl IntoIterator<Item = &'a [u8]>) -> Hmac<Sha256> {
        let mut m = self.mac.clone();
        prefixed(&mut m, self.direction.label());
        m.update(&self.seq.to_le_bytes());
        m.update(&(body_len as u64).to_le_bytes());
        for p in parts {
            m.update(p);
        }
        m
    }
}

/// Seals one direction's frames, in the order they go on the wire.
pub struct Sealer(Chain);

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("direction", &self.0.direction)
            .field("seq", &self.0.seq)
            .finish_non_exhaustive()
    }
}

/// Bytes of [`Sealer::hand_over`]'s state.
pub const HANDOVER_LEN: usize = 32 + 1 + 8;

impl Sealer {
    fn new(key: &[u8; 32], direction: Direction) -> Sealer {
        Sealer(Chain::new(key, direction))
    }

    /// The state another process needs to go on sealing this direction
    /// where this sealer stopped: its key, its direction and the next
    /// sequence number ([`take_over`](Self::take_over) reads it). It holds
    /// the key: pass it only over a private channel (procpool hands a TCP
    /// worker's sending side to its keeper process over a socketpair).
    pub fn hand_over(self) -> [u8; HANDOVER_LEN] {
        let mut out = [0u8; HANDOVER_LEN];
        out[..32].copy_from_slice(&self.0.key);
        out[32] = match self.0.direction {
            Direction::ToWorker => 0,
            Direction::ToParent => 1,
        };
        out[33..].copy_from_slice(&self.0.seq.to_le_bytes());
        out
    }

    /// The sealer [`hand_over`](Self::hand_over) described.
    pub fn take_over(state: &[u8; HANDOVER_LEN]) -> Sealer {
        let mut key = [0u8; 32];
        key.copy_from_slice(&state[..32]);
        let direction = if state[32] == 0 {
            Direction::ToWorker
        } else {
            Direction::ToParent
        };
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&state[33..]);
        let mut chain = Chain::new(&key, direction);
        chain.seq = u64::from_le_bytes(seq);
        Sealer(chain)
    }

    /// The tag of the next frame, whose body is `parts` in order
    /// (`body_len` bytes in all). Every tag made must go on the wire, in
    /// the order made: the peer expects the next sequence number.
    pub fn seal<'a>(
        &mut self,
        body_len: usize,
        parts: impl IntoIterator<Item = &'a [u8]>,
    ) -> [u8; TAG_LEN] {
        let tag = self.0.mac(body_len, parts).finalize().into_bytes().into();
        // 2^64 frames at ten million a second take 58 000 years.
        self.0.seq = self.0.seq.wrapping_add(1);
        tag
    }

    /// Seals a whole body: `body ‖ tag` (for tests and small frames).
    pub fn seal_vec(&mut self, body: &[u8]) -> Vec<u8> {
        let tag = self.seal(body.len(), [body]);
        let mut out = Vec::with_capacity(body.len() + TAG_LEN);
        out.extend_from_slice(body);
        out.extend_from_slice(&tag);
        out
    }
}

/// Opens one direction's frames, in the order they arrive.
pub struct Opener(Chain);

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("direction", &self.0.direction)
            .field("seq", &self.0.seq)
            .finish_non_exhaustive()
    }
}

impl Opener {
    fn new(key: &[u8; 32], direction: Direction) -> Opener {
        Opener(Chain::new(key, direction))
    }

    /// Checks the next frame (`body ‖ tag`) in constant time and returns
    /// the length of its body. On an error nothing advances: the caller
    /// must end the connection.
    pub fn open(&mut self, sealed: &[u8]) -> Result<usize, SealError> {
        let Some(body_len) = sealed.len().checked_sub(TAG_LEN) else {
            return Err(SealError::Short {
                seq: self.0.seq,
                len: sealed.len(),
            });
        };
        let (body, tag) = sealed.split_at(body_len);
        if self.0.mac(body_len, [body]).verify_slice(tag).is_err() {
            return Err(SealError::BadTag { seq: self.0.seq });
        }
        self.0.seq = self.0.seq.wrapping_add(1);
        Ok(body_len)
    }

    /// The sequence number the next frame must carry.
    pub fn next_seq(&self) -> u64 {
        self.0.seq
    }
}

/// Why a frame on an authenticated link did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The frame is shorter than a tag.
    Short {
        /// The sequence number it should have had.
        seq: u64,
        /// Its length.
        len: usize,
    },
    /// The tag does not match: the frame was altered, replayed, reordered,
    /// a frame before it was dropped, or it was never sent by the peer.
    BadTag {
        /// The sequence number it should have had.
        seq: u64,
    },
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::Short { seq, len } => write!(
                f,
                "frame {seq} on an authenticated link is {len} bytes, shorter than its \
                 {TAG_LEN}-byte tag: the connection was tampered with or the peer is not \
                 this procpool build; the connection is closed"
            ),
            SealError::BadTag { seq } => write!(
                f,
                "frame {seq} failed authentication (altered, replayed, reordered, dropped \
                 before it or injected on the network); the connection is closed — check \
                 the network path between pool and worker"
            ),
        }
    }
}

impl std::error::Error for SealError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Sealer, Opener, Sealer, Opener) {
        let keys = LinkKeys::derive(&[7; 32], &[1; 32], &[2; 32]);
        let (ps, po) = keys.pool_side();
        let (ws, wo) = keys.worker_side();
        (ps, po, ws, wo)
    }

    #[test]
    fn frames_open_in_order_both_ways() {
        let (mut ps, mut po, mut ws, mut wo) = pair();
        for i in 0..5u8 {
            let body = vec![i; usize::from(i) * 100];
            let sealed = ps.seal_vec(&body);
            assert_eq!(wo.open(&sealed), Ok(body.len()));
            let back = ws.seal_vec(&body);
            assert_eq!(po.open(&back), Ok(body.len()));
        }
        assert_eq!(wo.next_seq(), 5);
    }

    #[test]
    fn a_sealer_handed_over_goes_on_where_it_stopped() {
        let (_, mut po, mut ws, _) = pair();
        assert!(po.open(&ws.seal_vec(b"before")).is_ok());
        let mut taken = Sealer::take_over(&ws.hand_over());
        assert_eq!(po.open(&taken.seal_vec(b"after")), Ok(5));
        assert_eq!(po.open(&taken.seal_vec(b"and on")), Ok(6));
        // Handed over in the other direction it seals nothing that opens.
        let (ps, _, _, _) = pair();
        let mut wrong = Sealer::take_over(&ps.hand_over());
        wrong.0.seq = 3;
        assert!(po.open(&wrong.seal_vec(b"x")).is_err());
    }

    #[test]
    fn sealing_in_parts_equals_sealing_whole() {
        let (mut a, _, _, _) = pair();
        let (mut b, _, _, _) = pair();
        let tag = a.seal(6, [&b"ab"[..], b"", b"cdef"]);
        assert_eq!(b.seal_vec(b"abcdef")[6..], tag);
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let (mut ps, _, _, _) = pair();
        let sealed = ps.seal_vec(b"Finished 49");
        for bit in 0..sealed.len() * 8 {
            let (_, _, _, mut wo) = pair();
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                wo.open(&bad),
                Err(SealError::BadTag { seq: 0 }),
                "bit {bit}"
            );
            // Nothing advanced: the genuine frame still opens.
            assert_eq!(wo.open(&sealed), Ok(11));
        }
    }

    #[test]
    fn replay_reorder_and_drop_are_refused() {
        let (mut ps, _, _, _) = pair();
        let f: Vec<Vec<u8>> = (0..3u8).map(|i| ps.seal_vec(&[i; 8])).collect();
        // Replay.
        let (_, _, _, mut wo) = pair();
        assert!(wo.open(&f[0]).is_ok());
        assert_eq!(wo.open(&f[0]), Err(SealError::BadTag { seq: 1 }));
        // Reorder.
        let (_, _, _, mut wo) = pair();
        assert_eq!(wo.open(&f[1]), Err(SealError::BadTag { seq: 0 }));
        // Drop: the frame after a dropped one does not open.
        let (_, _, _, mut wo) = pair();
        assert!(wo.open(&f[0]).is_ok());
        assert_eq!(wo.open(&f[2]), Err(SealError::BadTag { seq: 1 }));
    }

    #[test]
    fn truncation_and_extension_are_refused() {
        let (mut ps, _, _, _) = pair();
        let sealed = ps.seal_vec(b"some body");
        for cut in 0..sealed.len() {
            let (_, _, _, mut wo) = pair();
            assert!(wo.open(&sealed[..cut]).is_err(), "cut at {cut}");
        }
        let (_, _, _, mut wo) = pair();
        assert_eq!(
            wo.open(&sealed[..TAG_LEN - 1]),
            Err(SealError::Short {
                seq: 0,
                len: TAG_LEN - 1
            })
        );
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(wo.open(&longer).is_err());
        // The body moved into the tag's place: lengths are authenticated.
        let (mut ps, _, _, _) = pair();
        let empty = ps.seal_vec(b"");
        let (_, _, _, mut wo) = pair();
        assert!(wo.open(&[&b"x"[..], &empty].concat()).is_err());
    }

    #[test]
    fn wrong_direction_and_other_connections_are_refused() {
        let (mut ps, mut po, _, _) = pair();
        // A frame the pool sealed, reflected back at the pool.
        let sealed = ps.seal_vec(b"Run");
        assert_eq!(po.open(&sealed), Err(SealError::BadTag { seq: 0 }));
        // Same secret, other nonces (another connection): other keys.
        let other = LinkKeys::derive(&[7; 32], &[1; 32], &[3; 32]);
        let (_, mut wo) = other.worker_side();
        let (mut ps, _, _, _) = pair();
        assert!(wo.open(&ps.seal_vec(b"Run")).is_err());
        // Other secret.
        let other = LinkKeys::derive(&[8; 32], &[1; 32], &[2; 32]);
        let (_, mut wo) = other.worker_side();
        let (mut ps, _, _, _) = pair();
        assert!(wo.open(&ps.seal_vec(b"Run")).is_err());
        // Nonces swapped.
        let other = LinkKeys::derive(&[7; 32], &[2; 32], &[1; 32]);
        let (_, mut wo) = other.worker_side();
        let (mut ps, _, _, _) = pair();
        assert!(wo.open(&ps.seal_vec(b"Run")).is_err());
    }

    #[test]
    fn injected_frames_are_refused() {
        let (_, _, _, mut wo) = pair();
        let mut forged = b"Finished 999999999".to_vec();
        forged.extend_from_slice(&[0u8; TAG_LEN]);
        assert!(wo.open(&forged).is_err());
        assert!(wo.open(&[0u8; TAG_LEN]).is_err());
    }
}
