//! Bulk byte strings: large byte strings and strings of a payload that
//! travel after their frame instead of inside it, so that neither side
//! copies them between the socket and the value.
//!
//! A payload is encoded with [`codec::encode_into_bulk`](crate::codec::encode_into_bulk):
//! every byte string or string of at least [`BULK_MIN`] bytes (a
//! `serde_bytes` field, a `ByteBuf`, a `String`) is written into the
//! payload as an *empty* one, and its place is recorded as a [`Bulk`] (the
//! offset of the empty string's content in the payload, and its length).
//! The message header lists the payload's `Bulk`s. The bytes themselves are
//! not copied anywhere: the value is kept (a [`BulkSource`]) and, when its
//! frame is written, encoded a second time
//! ([`codec::write_bulk`](crate::codec::write_bulk)) with each bulk string's
//! bytes going straight from the value to the socket, right after the
//! frame, in order. The receiver reads each straight from the socket into a
//! buffer of its own and
//! [`codec::decode_bulk`](crate::codec::decode_bulk) hands that buffer to
//! the value being decoded when the decoder meets the empty string at that
//! offset: a `Vec<u8>` or a `String` that owns the very buffer the socket
//! filled.
//!
//! Compared with the bytes inside the frame this saves both copies of the
//! bytes in user space: the sender's out of the value and the receiver's
//! into it. The second encoding must meet the same bulk strings at the
//! same places with the same lengths as the first (a `Serialize` that
//! encodes differently each time breaks that); when it does not, the
//! writer stops with an error before it writes a byte of a string that
//! differs, and the connection is beyond repair (the frame announcing
//! them is out). Only Unix-socket links use bulk strings (a sealed TCP
//! frame must hold all its bytes).
//!
//! A receiver checks every list against the frame cap before it reads a
//! byte ([`check`]); a bulk string that the decoder never meets where its
//! `Bulk` says (a lying sender, or a type that encodes bytes but decodes
//! something else there) fails the decode instead of going unnoticed.

use std::cell::RefCell;
use std::io;

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

/// A value whose payload was encoded with its bulk strings kept out
/// ([`codec::encode_into_bulk`](crate::codec::encode_into_bulk)), kept to
/// write those strings from when its frame goes out (see the
/// [module docs](self)). Attached to a frame with
/// [`Outgoing::with_bulk`](crate::frame::Outgoing::with_bulk).
pub trait BulkSource: Send + Sync {
    /// The places and lengths the first encoding recorded.
    fn spots(&self) -> &[Bulk];

    /// Encodes the value again and hands each bulk string's bytes to
    /// `write`, in order ([`codec::write_bulk`](crate::codec::write_bulk)).
    /// An error of `write` stops it and is returned; a second encoding
    /// that does not meet exactly [`spots`](BulkSource::spots) is an
    /// [`io::ErrorKind::InvalidData`] error, returned before the first
    /// string that differs is handed to `write`.
    fn write_bulk(&self, write: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>;

    /// Why its last [`write_bulk`](BulkSource::write_bulk) failed with
    /// `InvalidData`, if it did: the value no longer encodes as its frame
    /// said, and must not be sent again.
    fn refused(&self) -> Option<String> {
        None
    }

    /// The bytes of all its bulk strings.
    fn bulk_len(&self) -> usize {
        self.spots().iter().map(|b| b.len as usize).sum()
    }
}

/// Checks a received payload's bulk list before anything is read: at most
/// [`MAX_BULK`] strings, in increasing order of offset, each inside the
/// `payload_len`-byte payload.
pub fn check(bulk: &[Bulk], payload_len: usize) -> Result<(), String> {
    if bulk.len() > MAX_BULK {
        return Err(format!(
            "{} bulk byte strings in one payload (at most {MAX_BULK})",
            bulk.len()
        ));
    }
    let mut after = 0u64;
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
    }
    Ok(())
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

/// The length bincode (standard configuration: a varint) writes before a
/// byte string of `len` bytes, `len` at least [`BULK_MIN`] and at most
/// `u32::MAX`: a marker byte and four little-endian bytes.
fn length_prefix(len: u32) -> [u8; 5] {
    let mut out = [252u8; 5];
    out[1..].copy_from_slice(&len.to_le_bytes());
    out
}

/// What a [`BulkWriter`] does with the bulk strings it meets.
pub(crate) enum Aside<'a> {
    /// The first encoding: records each one's place.
    Record(&'a mut Vec<Bulk>),
    /// The second: hands each one's bytes to `write`, if it is the one
    /// `expected` says comes next.
    Forward {
        expected: &'a [Bulk],
        /// How many were written.
        next: usize,
        write: &'a mut dyn FnMut(&[u8]) -> io::Result<()>,
        /// Why it stopped (`write`'s error, or a string not expected).
        failed: Option<io::Error>,
    },
}

impl Aside<'_> {
    /// How many bulk strings it met so far.
    fn met(&self) -> usize {
        match self {
            Aside::Record(spots) => spots.len(),
            Aside::Forward { next, .. } => *next,
        }
    }

    /// A bulk string met at `spot`.
    fn meet(&mut self, spot: Bulk, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        match self {
            Aside::Record(spots) => {
                spots.push(spot);
                Ok(())
            }
            Aside::Forward {
                expected,
                next,
                write,
                failed,
            } => {
                let result = if expected.get(*next) == Some(&spot) {
                    write(bytes)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the value's second encoding met bulk byte string {} as {spot:?}, \
                             not as {:?} like its first (a Serialize that encodes differently \
                             each time)",
                            *next,
                            expected.get(*next)
                        ),
                    ))
                };
                match result {
                    Ok(()) => {
                        *next += 1;
                        Ok(())
                    }
                    Err(e) => {
                        let message = e.to_string();
                        *failed = Some(e);
                        Err(bincode::error::EncodeError::OtherString(message))
                    }
                }
            }
        }
    }
}

/// A bincode writer that appends to a buffer and keeps bulk strings out
/// of it (see the [module docs](self)).
pub(crate) struct BulkWriter<'a, 'b> {
    pub(crate) buf: &'a mut Vec<u8>,
    /// Where this payload began in `buf`.
    pub(crate) start: usize,
    pub(crate) aside: &'a mut Aside<'b>,
}

impl bincode::enc::write::Writer for BulkWriter<'_, '_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        if bytes.len() >= BULK_MIN && self.aside.met() < MAX_BULK {
            self.bulk(bytes)
        } else {
            self.buf.extend_from_slice(bytes);
            Ok(())
        }
    }
}

impl BulkWriter<'_, '_> {
    /// A large write: bincode writes a byte string's (or a string's) bytes
    /// in one piece right after its length, so a large write preceded by
    /// its own length is one. That length becomes 0 and the bytes go
    /// aside; any other large write is kept inline.
    #[cold]
    fn bulk(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        let Ok(len) = u32::try_from(bytes.len()) else {
            self.buf.extend_from_slice(bytes);
            return Ok(());
        };
        let prefix = length_prefix(len);
        if !self.buf[self.start..].ends_with(&prefix) {
            self.buf.extend_from_slice(bytes);
            return Ok(());
        }
        let at_len = self.buf.len() - prefix.len();
        self.buf.truncate(at_len);
        self.buf.push(0);
        match u32::try_from(self.buf.len() - self.start) {
            Ok(at) => self.aside.meet(Bulk { at, len }, bytes),
            Err(_) => {
                // A payload past 4 GiB: no frame carries it anyway.
                self.buf.truncate(at_len);
                self.buf.extend_from_slice(&prefix);
                self.buf.extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecError, decode, decode_bulk, encode, encode_into_bulk, write_bulk};
    use serde_bytes::ByteBuf;

    /// A payload's bulk strings: their places (first encoding) and their
    /// bytes (second encoding, as a writer gets them).
    #[derive(Default)]
    struct BulkOut {
        spots: Vec<Bulk>,
        bytes: Vec<Vec<u8>>,
    }

    impl BulkOut {
        fn is_empty(&self) -> bool {
            self.spots.is_empty() && self.bytes.is_empty()
        }
    }

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
        encode_into_bulk(v, &mut buf, &mut out.spots).unwrap();
        write_bulk(v, &out.spots, &mut |b| {
            out.bytes.push(b.to_vec());
            Ok(())
        })
        .unwrap();
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
        check(&out.spots, payload.len()).unwrap();
        let written: Vec<&[u8]> = out.bytes.iter().map(|b| &b[..]).collect();
        assert_eq!(written, [&m.big[..], m.text.as_bytes(), &m.tail[0][..]]);
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
        let mut spots = Vec::new();
        assert!(encode_into_bulk(&Fails, &mut buf, &mut spots).is_err());
        assert_eq!(buf, vec![1, 2]);
        assert!(spots.is_empty());
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
        assert_eq!(check(&[b(1, 5), b(3, 7)], 10), Ok(()));
        assert!(check(&[b(0, 5)], 10).is_err(), "offset 0");
        assert!(check(&[b(11, 5)], 10).is_err(), "past the end");
        assert!(check(&[b(4, 5), b(4, 5)], 10).is_err(), "same place twice");
        assert!(check(&[b(5, 5), b(3, 5)], 10).is_err(), "out of order");
        let many = vec![b(1, 1); MAX_BULK + 1];
        assert!(check(&many, 10).is_err(), "too many");
    }

    #[test]
    fn the_second_encoding_writes_from_the_value_and_can_start_anywhere() {
        let m = mixed();
        let (_, out) = bulk_encode(&m);
        let all: Vec<u8> = out.bytes.concat();
        // A writer that resumes from any byte gets the rest, as a frame's
        // writer does after a partial send.
        for skip in [
            0,
            1,
            BULK_MIN + 2,
            BULK_MIN + 3,
            BULK_MIN + 4,
            all.len() - 1,
            all.len(),
        ] {
            let f = crate::frame::Outgoing::new(vec![1], vec![vec![2u8]])
                .unwrap()
                .with_bulk(vec![std::sync::Arc::new(Kept(mixed(), out.spots.clone()))]);
            let mut got = Vec::new();
            f.write_bulk(skip, &mut |b| {
                got.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, all[skip..], "from byte {skip}");
            assert_eq!(f.wire_len(), f.frame_len() + all.len());
        }
        // A writer's error stops it and comes back as it was.
        let mut calls = 0;
        let err = write_bulk(&m, &out.spots, &mut |_| {
            calls += 1;
            Err(std::io::Error::new(std::io::ErrorKind::WouldBlock, "full"))
        })
        .unwrap_err();
        assert_eq!((err.kind(), calls), (std::io::ErrorKind::WouldBlock, 1));
    }

    #[test]
    fn a_value_that_encodes_differently_the_second_time_is_refused_before_its_bytes() {
        let v = (
            ByteBuf::from(vec![1; BULK_MIN]),
            ByteBuf::from(vec![2; BULK_MIN]),
        );
        let (_, out) = bulk_encode(&v);
        // Same first string, a longer second one.
        let longer = (
            ByteBuf::from(vec![1; BULK_MIN]),
            ByteBuf::from(vec![2; BULK_MIN + 1]),
        );
        let mut written = Vec::new();
        let err = write_bulk(&longer, &out.spots, &mut |b| {
            written.push(b.len());
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        assert_eq!(
            written,
            vec![BULK_MIN],
            "the differing string was not written"
        );
        // One string fewer: found once the encoding ends.
        let fewer = (ByteBuf::from(vec![1; BULK_MIN]), ByteBuf::from(vec![2; 3]));
        let err = write_bulk(&fewer, &out.spots, &mut |_| Ok(())).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("met 1 bulk"), "{err}");
        // A Serialize that fails or panics the second time.
        struct Panics;
        impl Serialize for Panics {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                panic!("not today")
            }
        }
        let err = write_bulk(&Panics, &out.spots, &mut |_| Ok(())).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    }

    /// A value kept with the places of its first encoding.
    struct Kept<T>(T, Vec<Bulk>);

    impl<T: Serialize + Send + Sync> BulkSource for Kept<T> {
        fn spots(&self) -> &[Bulk] {
            &self.1
        }
        fn write_bulk(
            &self,
            write: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
        ) -> std::io::Result<()> {
            write_bulk(&self.0, &self.1, write)
        }
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
