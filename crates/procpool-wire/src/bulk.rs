//! Bulk byte strings: large byte strings and strings of a payload that
//! travel after their frame instead of inside it, so that neither side
//! copies them between the socket and the value.
//!
//! A payload is encoded with [`codec::encode_into_bulk`](crate::codec::encode_into_bulk):
//! every byte string or string of at least [`BULK_MIN`] bytes (a
//! `serde_bytes` field, a `ByteBuf`, a `String`) is written into the
//! payload as an *empty* one, and its bytes are kept aside, with the
//! [`Bulk`] that says where it belongs (the offset of the empty string's
//! content in the payload) and how long it is. The message header lists
//! the payload's `Bulk`s; the sender writes their bytes right after the
//! frame, in order; the receiver reads each straight from the socket into a
//! buffer of its own and
//! [`codec::decode_bulk`](crate::codec::decode_bulk) hands that buffer to
//! the value being decoded when the decoder meets the empty string at that
//! offset: a `Vec<u8>` or a `String` that owns the very buffer the socket
//! filled.
//!
//! Compared with the bytes inside the frame this saves the receiver's copy
//! out of the frame into the value (the sender's copy out of the value
//! stays: the value is only borrowed while it is encoded). Only Unix-socket
//! links use it (a sealed TCP frame must hold all its bytes).
//!
//! A receiver checks every list against the frame cap before it reads a
//! byte ([`check`]); a bulk string that the decoder never meets where its
//! `Bulk` says (a lying sender, or a type that encodes bytes but decodes
//! something else there) fails the decode instead of going unnoticed.

use std::cell::RefCell;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Byte strings and strings of at least this many bytes go as bulk.
pub const BULK_MIN: usize = 64 << 10;

/// Most bulk strings one payload may have (the rest stay inline).
pub const MAX_BULK: usize = 64;

/// Where one bulk string belongs in its payload, and its length.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bulk {
    /// Offset in the payload of the empty string's content (just after its
    /// length, a single zero byte).
    pub at: u32,
    /// The string's length in bytes.
    pub len: u32,
}

/// What [`codec::encode_into_bulk`](crate::codec::encode_into_bulk) kept
/// aside: each bulk string's place and its bytes, in order.
#[derive(Debug, Default)]
pub struct BulkOut {
    /// Where each belongs (goes in the message header).
    pub spots: Vec<Bulk>,
    /// Their bytes (go after the frame).
    pub bytes: Vec<Vec<u8>>,
}

impl BulkOut {
    /// Whether nothing was kept aside.
    pub fn is_empty(&self) -> bool {
        self.spots.is_empty()
    }

    /// Bytes kept aside.
    pub fn total(&self) -> usize {
        self.bytes.iter().map(Vec::len).sum()
    }
}

/// Checks a received payload's bulk list before anything is read: at most
/// [`MAX_BULK`] strings, in increasing order of offset, each inside the
/// `payload_len`-byte payload. Returns the bytes they announce.
pub fn check(bulk: &[Bulk], payload_len: usize) -> Result<u64, String> {
    if bulk.len() > MAX_BULK {
        return Err(format!(
            "{} bulk byte strings in one payload (at most {MAX_BULK})",
            bulk.len()
        ));
    }
    let mut after = 0u64;
    let mut total = 0u64;
    for b in bulk {
        let at = u64::from(b.at);
        if at == 0 || at < after || at > payload_len as u64 {
            return Err(format!(
                "a bulk byte string placed at offset {} of a {payload_len}-byte payload \
                 (out of order or outside it)",
                b.at
            ));
        }
        after = at + 1;
        total += u64::from(b.len);
    }
    Ok(total)
}

/// The bulk strings of the payload being decoded on this thread.
struct Pending {
    /// Address of the payload's first byte.
    base: usize,
    spots: Vec<u32>,
    bytes: Vec<Vec<u8>>,
    /// How many were handed out (they are met in order).
    taken: usize,
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Runs `f` (a decode of `payload`) with its bulk strings ready to be
/// handed out; returns `f`'s result and how many of them it took.
pub(crate) fn with_pending<R>(
    payload: &[u8],
    spots: &[Bulk],
    bytes: Vec<Vec<u8>>,
    f: impl FnOnce() -> R,
) -> (R, usize) {
    /// Puts the outer decode's strings back, also on unwind.
    struct Restore(Option<Option<Pending>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                PENDING.with(|p| p.replace(outer));
            }
        }
    }
    let pending = Pending {
        base: payload.as_ptr() as usize,
        spots: spots.iter().map(|b| b.at).collect(),
        bytes,
        taken: 0,
    };
    let mut restore = Restore(Some(PENDING.with(|p| p.replace(Some(pending)))));
    let r = f();
    let outer = restore.0.take().flatten();
    let mine = PENDING.with(|p| p.replace(outer));
    (r, mine.map_or(0, |m| m.taken))
}

/// The bulk string that belongs where the decoder just read an empty one
/// (`empty` is that empty slice of the payload), if any.
#[inline]
pub(crate) fn take(empty: &[u8]) -> Option<Vec<u8>> {
    debug_assert!(empty.is_empty());
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let p = p.as_mut()?;
        let at = (empty.as_ptr() as usize).checked_sub(p.base)?;
        if p.spots.get(p.taken).is_some_and(|&s| s as usize == at) {
            let bytes = std::mem::take(&mut p.bytes[p.taken]);
            p.taken += 1;
            Some(bytes)
        } else {
            None
        }
    })
}

/// Buffers of bulk strings already sent, kept for the next ones: a
/// buffer the process wrote before is mapped already, a new one of
/// several MiB costs a page fault per 4 KiB (as much as the copy). At
/// most [`SPARE_BUFFERS`], each of [`SPARE_MIN`] to [`SPARE_MAX`] bytes:
/// a process keeps at most 64 MiB for them.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// How many sent buffers [`recycle_sent`] keeps.
pub const SPARE_BUFFERS: usize = 2;
/// The smallest buffer [`recycle_sent`] keeps.
pub const SPARE_MIN: usize = BULK_MIN;
/// The largest buffer [`recycle_sent`] keeps.
pub const SPARE_MAX: usize = 32 << 20;

/// An empty buffer for `len` bytes: a kept one if one is large enough.
fn spare(len: usize) -> Vec<u8> {
    let mut kept = SPARE.lock().unwrap_or_else(|p| p.into_inner());
    match kept.iter().position(|b| b.capacity() >= len) {
        Some(i) => {
            let mut b = kept.swap_remove(i);
            b.clear();
            b
        }
        None => Vec::with_capacity(len),
    }
}

/// Keeps the buffers of bulk strings whose frame was written (those no
/// one else holds), for the next ones.
pub fn recycle_sent(sent: impl IntoIterator<Item = crate::frame::Payload>) {
    sent.into_iter()
        .filter_map(|b| std::sync::Arc::try_unwrap(b).ok())
        .for_each(recycle);
}

/// Keeps the buffer of a bulk string that was sent, for the next one (see
/// [`SPARE_BUFFERS`]); a smaller kept one makes room for it.
fn recycle(buf: Vec<u8>) {
    if !(SPARE_MIN..=SPARE_MAX).contains(&buf.capacity()) {
        return;
    }
    let mut kept = SPARE.lock().unwrap_or_else(|p| p.into_inner());
    if kept.len() < SPARE_BUFFERS {
        kept.push(buf);
    } else if let Some(smallest) = kept.iter_mut().min_by_key(|b| b.capacity())
        && smallest.capacity() < buf.capacity()
    {
        *smallest = buf;
    }
}

/// The length bincode (standard configuration: a varint) writes before a
/// byte string of `len` bytes, `len` at least [`BULK_MIN`] and at most
/// `u32::MAX`: a marker byte and four little-endian bytes.
fn length_prefix(len: u32) -> [u8; 5] {
    let mut out = [252u8; 5];
    out[1..].copy_from_slice(&len.to_le_bytes());
    out
}

/// A bincode writer that appends to a buffer and keeps bulk strings aside
/// (see the [module docs](self)).
pub(crate) struct BulkWriter<'a> {
    pub(crate) buf: &'a mut Vec<u8>,
    /// Where this payload began in `buf`.
    pub(crate) start: usize,
    pub(crate) out: &'a mut BulkOut,
}

impl bincode::enc::write::Writer for BulkWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        if bytes.len() >= BULK_MIN && self.out.spots.len() < MAX_BULK {
            self.bulk(bytes);
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(())
    }
}

impl BulkWriter<'_> {
    /// A large write: bincode writes a byte string's (or a string's) bytes
    /// in one piece right after its length, so a large write preceded by
    /// its own length is one. That length becomes 0 and the bytes go
    /// aside; any other large write is kept inline.
    #[cold]
    fn bulk(&mut self, bytes: &[u8]) {
        let Ok(len) = u32::try_from(bytes.len()) else {
            return self.buf.extend_from_slice(bytes);
        };
        let prefix = length_prefix(len);
        if !self.buf[self.start..].ends_with(&prefix) {
            return self.buf.extend_from_slice(bytes);
        }
        let at_len = self.buf.len() - prefix.len();
        self.buf.truncate(at_len);
        self.buf.push(0);
        match u32::try_from(self.buf.len() - self.start) {
            Ok(at) => {
                let mut copy = spare(bytes.len());
                copy.extend_from_slice(bytes);
                self.out.spots.push(Bulk { at, len });
                self.out.bytes.push(copy);
            }
            Err(_) => {
                // A payload past 4 GiB: no frame carries it anyway.
                self.buf.truncate(at_len);
                self.buf.extend_from_slice(&prefix);
                self.buf.extend_from_slice(bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecError, decode, decode_bulk, encode, encode_into_bulk};
    use serde_bytes::ByteBuf;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Mixed {
        id: u64,
        #[serde(with = "serde_bytes")]
        small: Vec<u8>,
        #[serde(with = "serde_bytes")]
        big: Vec<u8>,
        text: String,
        empty: String,
        #[serde(with = "serde_bytes")]
        none: Vec<u8>,
        tail: Vec<ByteBuf>,
    }

    fn mixed() -> Mixed {
        Mixed {
            id: 7,
            small: vec![1; 100],
            big: (0..BULK_MIN + 3).map(|i| i as u8).collect(),
            text: "é".repeat(BULK_MIN),
            empty: String::new(),
            none: Vec::new(),
            tail: vec![
                ByteBuf::from(vec![9; 2 * BULK_MIN]),
                ByteBuf::from(vec![3; 5]),
            ],
        }
    }

    fn bulk_encode<T: Serialize>(v: &T) -> (Vec<u8>, BulkOut) {
        let mut buf = vec![0xAA; 3]; // a header before the payload
        let mut out = BulkOut::default();
        encode_into_bulk(v, &mut buf, &mut out).unwrap();
        (buf.split_off(3), out)
    }

    #[test]
    fn large_strings_go_aside_and_come_back_in_place() {
        let m = mixed();
        let (payload, out) = bulk_encode(&m);
        assert_eq!(out.spots.len(), 3, "{:?}", out.spots);
        let lens: Vec<u32> = out.spots.iter().map(|b| b.len).collect();
        assert_eq!(
            lens,
            vec![
                (BULK_MIN + 3) as u32,
                m.text.len() as u32,
                (2 * BULK_MIN) as u32
            ]
        );
        assert!(payload.len() < 300, "{} bytes inline", payload.len());
        // The places are where the empty strings' contents are.
        for b in &out.spots {
            assert_eq!(payload[b.at as usize - 1], 0);
        }
        assert_eq!(
            check(&out.spots, payload.len()).unwrap(),
            out.total() as u64
        );
        let addrs: Vec<usize> = out.bytes.iter().map(|b| b.as_ptr() as usize).collect();
        let back: Mixed = decode_bulk(&payload, &out.spots, out.bytes).unwrap();
        assert_eq!(back, m);
        // The decoded value owns the very buffers that were handed in.
        assert_eq!(back.big.as_ptr() as usize, addrs[0]);
        assert_eq!(back.text.as_ptr() as usize, addrs[1]);
        assert_eq!(back.tail[0].as_ptr() as usize, addrs[2]);
    }

    #[test]
    fn without_bulk_the_encoding_is_the_plain_one() {
        let small = (7u64, ByteBuf::from(vec![1; 1000]), "x".repeat(BULK_MIN - 1));
        let (payload, out) = bulk_encode(&small);
        assert!(out.is_empty());
        assert_eq!(payload, encode(&small).unwrap());
        // A plain `Vec<u8>` is a sequence of numbers, not a byte string.
        let seq = vec![5u8; 3 * BULK_MIN];
        let (payload, out) = bulk_encode(&seq);
        assert!(out.is_empty());
        assert_eq!(decode::<Vec<u8>>(&payload).unwrap(), seq);
    }

    #[test]
    fn at_most_max_bulk_go_aside() {
        let many: Vec<ByteBuf> = (0..MAX_BULK + 2)
            .map(|i| ByteBuf::from(vec![i as u8; BULK_MIN]))
            .collect();
        let (payload, out) = bulk_encode(&many);
        assert_eq!(out.spots.len(), MAX_BULK);
        assert!(payload.len() > 2 * BULK_MIN);
        let back: Vec<ByteBuf> = decode_bulk(&payload, &out.spots, out.bytes).unwrap();
        assert_eq!(back, many);
    }

    #[test]
    fn a_failed_encode_leaves_buffer_and_list_as_they_were() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeTuple;
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(&ByteBuf::from(vec![1; BULK_MIN]))?;
                t.serialize_element(&Refuse)?;
                t.end()
            }
        }
        struct Refuse;
        impl Serialize for Refuse {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let mut buf = vec![1, 2];
        let mut out = BulkOut::default();
        assert!(encode_into_bulk(&Fails, &mut buf, &mut out).is_err());
        assert_eq!(buf, vec![1, 2]);
        assert!(out.is_empty() && out.bytes.is_empty());
    }

    #[test]
    fn a_bulk_string_not_met_where_it_says_is_an_error() {
        let v = (ByteBuf::from(vec![1; BULK_MIN]), 5u32);
        let (payload, mut out) = bulk_encode(&v);
        // Moved to a place that is not the empty string's.
        out.spots[0].at += 1;
        let err = decode_bulk::<(ByteBuf, u32)>(&payload, &out.spots, out.bytes).unwrap_err();
        assert!(
            matches!(&err, CodecError::Bulk(m) if m.contains("was not read there")),
            "{err:?}"
        );
        // A type that reads a sequence where bytes were written never
        // meets it either.
        let (payload, out) = bulk_encode(&ByteBuf::from(vec![2; BULK_MIN]));
        let err = decode_bulk::<Vec<u8>>(&payload, &out.spots, out.bytes).unwrap_err();
        assert!(matches!(&err, CodecError::Bulk(_)), "{err:?}");
        // Fewer buffers than places.
        let (payload, out) = bulk_encode(&ByteBuf::from(vec![2; BULK_MIN]));
        let err = decode_bulk::<ByteBuf>(&payload, &out.spots, Vec::new()).unwrap_err();
        assert!(
            matches!(&err, CodecError::Bulk(m) if m.contains("declared")),
            "{err:?}"
        );
    }

    #[test]
    fn a_bulk_string_that_is_not_utf8_fails_as_a_string() {
        let (payload, out) = bulk_encode(&"s".repeat(BULK_MIN));
        let bytes = vec![0xff; out.bytes[0].len()];
        let err = decode_bulk::<String>(&payload, &out.spots, vec![bytes]).unwrap_err();
        assert!(
            matches!(&err, CodecError::Decode(m) if m.contains("UTF-8")),
            "{err:?}"
        );
    }

    #[test]
    fn check_refuses_lists_a_payload_cannot_hold() {
        let b = |at, len| Bulk { at, len };
        assert_eq!(check(&[b(1, 5), b(3, 7)], 10), Ok(12));
        assert!(check(&[b(0, 5)], 10).is_err(), "offset 0");
        assert!(check(&[b(11, 5)], 10).is_err(), "past the end");
        assert!(check(&[b(4, 5), b(4, 5)], 10).is_err(), "same place twice");
        assert!(check(&[b(5, 5), b(3, 5)], 10).is_err(), "out of order");
        let many = vec![b(1, 1); MAX_BULK + 1];
        assert!(check(&many, 10).is_err(), "too many");
    }

    #[test]
    fn nested_decodes_keep_their_own_strings() {
        // A Deserialize impl that decodes another payload inside: the
        // outer payload's bulk strings are still there afterwards.
        let inner = ByteBuf::from(vec![4; BULK_MIN]);
        let (inner_payload, inner_out) = bulk_encode(&inner);
        let outer = (ByteBuf::from(vec![6; BULK_MIN]), 1u8);
        let (outer_payload, outer_out) = bulk_encode(&outer);
        let (got, taken) = with_pending(&outer_payload, &outer_out.spots, outer_out.bytes, || {
            let i: ByteBuf =
                decode_bulk(&inner_payload, &inner_out.spots, inner_out.bytes).unwrap();
            let o: (ByteBuf, u8) = decode(&outer_payload).unwrap();
            (i, o)
        });
        assert_eq!(got, (inner, outer));
        assert_eq!(taken, 1);
    }
}
