//! The one place where serde meets bincode: every payload and header goes
//! through these functions, so the codec can be swapped in one file.
//!
//! Decoding must consume the whole input (trailing bytes are an error:
//! without that check bincode happily reads a `String` as a `u64`), and a
//! panic inside user serde code is caught and returned as an error.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The bincode configuration used on both sides of the socket.
fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Most bytes the handshake decoders may claim: handshake frames arrive
/// before the peer is authenticated.
pub const HANDSHAKE_DECODE_LIMIT: usize = crate::handshake::HANDSHAKE_MAX_FRAME as usize;

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The value's `Serialize` implementation returned an error.
    Encode(String),
    /// The bytes did not decode as the expected type.
    Decode(String),
    /// The value decoded but left bytes unread: the bytes were made from a
    /// different type.
    TrailingBytes {
        /// Bytes the decoder used.
        consumed: usize,
        /// Bytes it was given.
        total: usize,
    },
    /// The payload's bulk byte strings ([`crate::bulk`]) did not fit the
    /// value: one was not met where its place said, or their count was
    /// not the declared one. The sender lied about its payload (or the
    /// type writes a byte string where it reads something else).
    Bulk(String),
    /// User serde code panicked while encoding (`encoding == true`) or
    /// decoding.
    Panicked {
        /// Which direction panicked.
        encoding: bool,
        /// The panic message.
        message: String,
    },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Encode(m) => write!(f, "serialization failed: {m}"),
            CodecError::Decode(m) => write!(f, "deserialization failed: {m}"),
            CodecError::Bulk(m) => write!(f, "bulk byte strings: {m}"),
            CodecError::TrailingBytes { consumed, total } => write!(
                f,
                "deserialization left {} of {total} bytes unread (consumed {consumed}): \
                 the bytes were written for a different type",
                total - consumed
            ),
            CodecError::Panicked { encoding, message } => write!(
                f,
                "{} code panicked: {message}",
                if *encoding {
                    "Serialize"
                } else {
                    "Deserialize"
                }
            ),
        }
    }
}

impl std::error::Error for CodecError {}

/// Renders a panic payload as text (a `&str` or `String` payload verbatim,
/// anything else as a placeholder).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

/// Appends the encoding of `value` to `buf`. On error `buf` is left as it
/// was.
#[inline]
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = buf.len();
    let result =
        caught(|| bincode::serde::encode_into_writer(value, VecWriter(&mut *buf), config()));
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// bincode's writer for a `Vec`: appends, cannot fail. (bincode's own
/// `encode_into_std_write` goes through `io::Write::write_all` and counts
/// the bytes written, for every few bytes a value writes.)
struct VecWriter<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for VecWriter<'_> {
    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Runs a bincode encode, its error or its panic (user serde code)
/// turned into a [`CodecError`].
#[inline]
fn caught<R>(
    encode: impl FnOnce() -> Result<R, bincode::error::EncodeError>,
) -> Result<(), CodecError> {
    // Both arms move out of the encode's result (`Ok(_)` would not, and
    // the compiler then called the result's drop glue, out of line, after
    // every successful encode), and the error becomes text inside.
    match catch_unwind(AssertUnwindSafe(|| match encode() {
        Ok(done) => {
            drop(done);
            Ok(())
        }
        Err(e) => Err(encode_error_text(e)),
    })) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(text)) => Err(CodecError::Encode(text)),
        Err(p) => Err(CodecError::Panicked {
            encoding: true,
            message: panic_message(&*p),
        }),
    }
}

/// [`encode_into`], keeping the value's large byte strings and strings
/// out of `buf`: each one's place is pushed on `spots`, and its bytes are
/// written later from the value by [`write_bulk`] (see [`crate::bulk`]).
/// On error `buf` and `spots` are left as they were.
pub fn encode_into_bulk<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut Vec<u8>,
    spots: &mut Vec<crate::bulk::Bulk>,
) -> Result<(), CodecError> {
    let start = buf.len();
    let kept = spots.len();
    let mut aside = crate::bulk::Aside::Record(&mut *spots);
    let result = caught(|| {
        let writer = crate::bulk::BulkWriter {
            buf: &mut *buf,
            start,
            aside: &mut aside,
        };
        bincode::serde::encode_into_writer(value, writer, config())
    });
    if result.is_err() {
        buf.truncate(start);
        spots.truncate(kept);
    }
    result
}

/// The second encoding of a value [`encode_into_bulk`] encoded into a
/// payload with bulk strings at `spots`: hands each bulk string's bytes
/// to `write`, in order, straight from the value. An encoding that does
/// not meet exactly `spots` (a `Serialize` that encodes differently each
/// time, or one that fails or panics now) is an
/// [`io::ErrorKind::InvalidData`](std::io::ErrorKind::InvalidData) error,
/// returned before the first string that differs is written; an error of
/// `write` stops it and is returned as it is.
pub fn write_bulk<T: Serialize + ?Sized>(
    value: &T,
    spots: &[crate::bulk::Bulk],
    write: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    // The inline bytes are encoded again only to find the bulk strings.
    let mut scratch = Vec::new();
    let mut aside = crate::bulk::Aside::Forward {
        expected: spots,
        next: 0,
        write,
        failed: None,
    };
    let result = caught(|| {
        let writer = crate::bulk::BulkWriter {
            buf: &mut scratch,
            start: 0,
            aside: &mut aside,
        };
        bincode::serde::encode_into_writer(value, writer, config())
    });
    let crate::bulk::Aside::Forward { next, failed, .. } = aside else {
        unreachable!("made Forward above")
    };
    if let Some(e) = failed {
        return Err(e);
    }
    if let Err(e) = result {
        return Err(invalid(format!("the value's second encoding failed: {e}")));
    }
    if next != spots.len() {
        return Err(invalid(format!(
            "the value's second encoding met {next} bulk byte strings, its first {}",
            spots.len()
        )));
    }
    Ok(())
}

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::new();
    encode_into(value, &mut buf)?;
    Ok(buf)
}

fn encode_error_text(e: bincode::error::EncodeError) -> String {
    match e {
        bincode::error::EncodeError::OtherString(s) => s,
        other => other.to_string(),
    }
}

fn decode_error_text(e: bincode::error::DecodeError) -> String {
    match e {
        bincode::error::DecodeError::OtherString(s) => s,
        other => other.to_string(),
    }
}

/// How much memory, per input byte, a valid value may claim while it is
/// decoded. bincode counts the in-memory width of every number it decodes
/// (8 bytes for a `u64` that took 1 byte on the wire, 16 for a `u128`) and
/// one byte per byte of a string or byte string.
pub const CLAIM_FACTOR: usize = 16;

/// Most bytes a message header may claim while it is decoded, whatever the
/// size of the frame it opens: a header is small (names, ids, lengths, an
/// error message), and the payloads after it are never decoded with it.
pub const HEADER_DECODE_LIMIT: usize = 64 << 20;

/// The smallest claim limit [`decode_prefix`] uses (small inputs).
pub const MIN_CLAIM_LIMIT: usize = 1 << 16;

/// The largest claim limit [`decode_prefix`] uses: [`CLAIM_FACTOR`] times
/// the largest frame a u32 length prefix can announce. Larger inputs are
/// refused with [`CodecError::Decode`].
pub const MAX_CLAIM_LIMIT: usize = 1 << 36;

/// The claim limit [`decode_prefix`] sets for an input of `len` bytes: the
/// smallest power of two (at least [`MIN_CLAIM_LIMIT`]) not below
/// `CLAIM_FACTOR * len`, so never more than `2 * CLAIM_FACTOR * len` for an
/// input above 2 KiB, and never unlimited. `None` above
/// [`MAX_CLAIM_LIMIT`].
#[inline]
pub fn claim_limit(len: usize) -> Option<usize> {
    let claim = len.checked_mul(CLAIM_FACTOR)?.max(MIN_CLAIM_LIMIT);
    let limit = claim.checked_next_power_of_two()?;
    (limit <= MAX_CLAIM_LIMIT).then_some(limit)
}

/// Decodes a `T` from the start of `bytes` and returns it with the number of
/// bytes it used.
///
/// bincode allocates a string's or byte string's length before it reads the
/// bytes, so a few garbage bytes claiming a 4 GiB string would allocate
/// 4 GiB. No valid value claims more than [`CLAIM_FACTOR`] times its
/// encoded size (a value decoded from `len` bytes may need that much
/// memory), so the decode runs with the [`claim_limit`] of its input: a
/// string length that the input could never back is refused before
/// anything is allocated, and what hostile bytes can make the decoder
/// reserve is at most twice what a valid value of the same size could
/// hold.
#[inline]
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    decode_scaled(bytes, MAX_CLAIM_LIMIT)
}

/// [`decode_prefix`] for a message header at the start of a frame body:
/// the limit scales with the body but never exceeds
/// [`HEADER_DECODE_LIMIT`], however large the payloads after it.
pub fn decode_header_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    decode_scaled(bytes, HEADER_DECODE_LIMIT)
}

fn decode_scaled<T: DeserializeOwned>(bytes: &[u8], cap: usize) -> Result<(T, usize), CodecError> {
    let Some(limit) = claim_limit(bytes.len()) else {
        return Err(too_large_to_decode(bytes.len()));
    };
    let limit = limit.min(cap);
    // Small inputs (up to 4 KiB: the common case) inline, the larger
    // limits out of line: this stays small where it is inlined.
    if limit <= MIN_CLAIM_LIMIT {
        return decode_prefix_limited::<T, MIN_CLAIM_LIMIT>(bytes);
    }
    decode_scaled_large(bytes, limit)
}

/// [`decode_scaled`] with a claim limit over [`MIN_CLAIM_LIMIT`].
#[inline(never)]
fn decode_scaled_large<T: DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<(T, usize), CodecError> {
    macro_rules! by_size {
        ($($limit:expr),*) => {
            $(if limit <= $limit {
                return decode_prefix_limited::<T, { $limit }>(bytes);
            })*
        };
    }
    by_size!(
        1 << 17,
        1 << 18,
        1 << 19,
        1 << 20,
        1 << 21,
        1 << 22,
        1 << 23,
        1 << 24,
        1 << 25,
        1 << 26,
        1 << 27,
        1 << 28,
        1 << 29,
        1 << 30,
        1 << 31,
        1 << 32,
        1 << 33,
        1 << 34,
        1 << 35,
        1 << 36
    );
    unreachable!("claim_limit never exceeds MAX_CLAIM_LIMIT")
}

/// The error for an input of `len` bytes, more than procpool decodes.
#[cold]
#[inline(never)]
fn too_large_to_decode(len: usize) -> CodecError {
    CodecError::Decode(format!(
        "an input of {len} bytes is larger than procpool decodes (at most {} bytes)",
        MAX_CLAIM_LIMIT / CLAIM_FACTOR
    ))
}

/// Like [`decode_prefix`] with a fixed limit of `LIMIT` claimed bytes.
pub fn decode_prefix_limited<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<(T, usize), CodecError> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // Byte buffers and strings decoded borrowed, then copied once
        // (`owned_bytes`): bincode's own path zero-fills them first.
        bincode::serde::seed_decode_from_slice(
            crate::owned_bytes::Seed(std::marker::PhantomData::<T>),
            bytes,
            config().with_limit::<LIMIT>(),
        )
    }));
    match result {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(decode_failure(Ok(e), LIMIT, bytes.len())),
        Err(p) => Err(decode_failure(Err(p), LIMIT, bytes.len())),
    }
}

/// The error of a decode of `len` bytes with a claim limit of `limit`
/// that failed (`Ok`) or panicked (`Err`). Out of line and not generic:
/// the decodes of small values stay small.
#[cold]
#[inline(never)]
fn decode_failure(
    failed: Result<bincode::error::DecodeError, Box<dyn Any + Send>>,
    limit: usize,
    len: usize,
) -> CodecError {
    match failed {
        Ok(bincode::error::DecodeError::LimitExceeded) => CodecError::Decode(format!(
            "the input claims more memory than its {len} bytes can encode (limit {limit} bytes)"
        )),
        Ok(e) => CodecError::Decode(decode_error_text(e)),
        Err(p) => CodecError::Panicked {
            encoding: false,
            message: panic_message(&*p),
        },
    }
}

/// Decodes a `T` that must use every byte of `bytes`.
#[inline]
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    check_whole(decode_prefix(bytes)?, bytes.len())
}

/// Like [`decode`] with a fixed limit of `LIMIT` claimed bytes.
pub fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<T, CodecError> {
    check_whole(decode_prefix_limited::<T, LIMIT>(bytes)?, bytes.len())
}

/// [`decode`] of a payload encoded by [`encode_into_bulk`]: `spots` are
/// its bulk strings (from the message header, already [checked](crate::bulk::check)
/// against `bytes`) and `bulk` their bytes, each handed to the value where
/// its spot says, without a copy. A bulk string the decode does not meet
/// there is an error.
#[inline]
pub fn decode_bulk<T: DeserializeOwned>(
    bytes: &[u8],
    spots: &[crate::bulk::Bulk],
    bulk: Vec<Vec<u8>>,
) -> Result<T, CodecError> {
    if spots.is_empty() && bulk.is_empty() {
        return decode(bytes);
    }
    if spots.len() != bulk.len() {
        return Err(CodecError::Bulk(format!(
            "{} declared, {} came",
            spots.len(),
            bulk.len()
        )));
    }
    let (value, taken) = crate::bulk::with_pending(bytes, spots, bulk, || decode::<T>(bytes));
    let value = value?;
    match spots.get(taken) {
        None => Ok(value),
        Some(missed) => Err(CodecError::Bulk(format!(
            "the one of {} bytes placed at offset {} was not read there \
             (the value decoded something other than a byte string or string at that place)",
            missed.len, missed.at
        ))),
    }
}

/// [`decode_bulk`] with its error boxed, for a hot caller: a small
/// value's result then comes back in registers, not through memory that
/// the caller copies right after it was written (a store-forwarding stall
/// per input in a worker's chunk loop).
#[inline(never)]
pub fn decode_bulk_boxed<T: DeserializeOwned>(
    bytes: &[u8],
    spots: &[crate::bulk::Bulk],
    bulk: Vec<Vec<u8>>,
) -> Result<T, Box<CodecError>> {
    decode_bulk(bytes, spots, bulk).map_err(Box::new)
}

/// [`decode`] with its error boxed (see [`decode_bulk_boxed`]).
#[inline(never)]
pub fn decode_boxed<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Box<CodecError>> {
    decode(bytes).map_err(Box::new)
}

/// [`decode_boxed`] of the value in `bytes[..len]` when more bytes follow
/// it (the next input of a packed chunk): bincode reads a number in one
/// step only with 9 bytes ahead of it and byte by byte otherwise (most of
/// a small input's decoding), so a small value is decoded with what
/// follows it in view, and taken if it used exactly its `len` bytes. Any
/// other outcome is decided by the decode of `bytes[..len]` alone: the same
/// value or the same error as [`decode_boxed`] of it (bincode reads the
/// same bytes either way; what follows is only looked at, never used).
/// `len` past the end of `bytes` is a [`CodecError::Decode`].
#[inline(never)]
pub fn decode_followed_boxed<T: DeserializeOwned>(
    bytes: &[u8],
    len: usize,
) -> Result<T, Box<CodecError>> {
    let Some(value) = bytes.get(..len) else {
        return Err(Box::new(CodecError::Decode(format!(
            "a value of {len} bytes in {} bytes",
            bytes.len()
        ))));
    };
    // Only where `value` alone gets the smallest claim limit, the one used
    // here.
    if len < bytes.len() && claim_limit(len) == Some(MIN_CLAIM_LIMIT) {
        match decode_prefix_limited::<T, MIN_CLAIM_LIMIT>(bytes) {
            Ok((v, used)) if used == len => return Ok(v),
            // Not run twice: user code that panicked would again.
            Err(e @ CodecError::Panicked { .. }) => return Err(Box::new(e)),
            _ => {}
        }
    }
    decode(value).map_err(Box::new)
}

/// [`encode_into`] with its error boxed (see [`decode_bulk_boxed`]).
#[inline(never)]
pub fn encode_into_boxed<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut Vec<u8>,
) -> Result<(), Box<CodecError>> {
    encode_into(value, buf).map_err(Box::new)
}

#[inline]
fn check_whole<T>((value, consumed): (T, usize), total: usize) -> Result<T, CodecError> {
    if consumed != total {
        return Err(CodecError::TrailingBytes { consumed, total });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serializer};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Point {
        x: i64,
        name: String,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
    }

    #[test]
    fn round_trip() {
        let p = Point {
            x: -7,
            name: "é".into(),
            blob: vec![1, 2, 3],
        };
        let bytes = encode(&p).unwrap();
        assert_eq!(decode::<Point>(&bytes).unwrap(), p);
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        // A String's length prefix would otherwise decode as a u64.
        let bytes = encode(&"hello".to_string()).unwrap();
        match decode::<u64>(&bytes) {
            Err(CodecError::TrailingBytes {
                consumed: 1,
                total: 6,
            }) => {}
            other => panic!("expected TrailingBytes, got {other:?}"),
        }
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        // varint marker 0xfd + u64 length 2^40, then nothing.
        let mut bytes = vec![0xfd];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            decode::<String>(&bytes),
            Err(CodecError::Decode(_))
        ));
        bytes[1..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode::<String>(&bytes),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn large_values_still_decode() {
        let big = vec![7u8; (1 << 20) + 5];
        let s = "x".repeat(70_000);
        let bytes = encode(&(serde_bytes::ByteBuf::from(big.clone()), s.clone())).unwrap();
        let (b, t): (serde_bytes::ByteBuf, String) = decode(&bytes).unwrap();
        assert_eq!((b.into_vec(), t), (big, s));
    }

    #[test]
    fn numbers_claim_their_width_and_still_decode() {
        // Small numbers take 1 byte on the wire and claim 8 (u64) or 16
        // (u128) while decoding: valid data must not hit the claim limit.
        for n in [500usize, 1000, 4000, 70_000, 300_000] {
            let v: Vec<u64> = (0..n as u64).map(|i| i % 100).collect();
            assert_eq!(
                decode::<Vec<u64>>(&encode(&v).unwrap()).unwrap(),
                v,
                "{n} u64s"
            );
            let w: Vec<u128> = (0..n as u128).map(|i| i % 100).collect();
            assert_eq!(
                decode::<Vec<u128>>(&encode(&w).unwrap()).unwrap(),
                w,
                "{n} u128s"
            );
        }
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Rec {
            id: u64,
            name: String,
            value: f64,
            tags: Vec<String>,
        }
        for n in [1, 100, 1100, 1800, 30_000] {
            let recs: Vec<Rec> = (0..n)
                .map(|i| Rec {
                    id: i,
                    name: format!("r{i}"),
                    value: 0.5,
                    tags: vec!["a".into()],
                })
                .collect();
            assert_eq!(
                decode::<Vec<Rec>>(&encode(&recs).unwrap()).unwrap(),
                recs,
                "{n} records"
            );
        }
    }

    #[test]
    fn truncated_input_is_a_decode_error() {
        let bytes = encode(&"hello".to_string()).unwrap();
        assert!(matches!(
            decode::<String>(&bytes[..3]),
            Err(CodecError::Decode(_))
        ));
    }

    struct Refuses;
    impl Serialize for Refuses {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refuses to serialize"))
        }
    }

    struct Explodes;
    impl Serialize for Explodes {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            panic!("boom in serialize")
        }
    }

    #[test]
    fn serialize_error_keeps_the_message_and_the_buffer() {
        let mut buf = vec![9, 9];
        let err = encode_into(&Refuses, &mut buf).unwrap_err();
        assert_eq!(err, CodecError::Encode("refuses to serialize".into()));
        assert_eq!(buf, vec![9, 9]);
    }

    #[test]
    fn serialize_panic_is_caught() {
        let err = encode(&Explodes).unwrap_err();
        assert!(
            matches!(&err, CodecError::Panicked { encoding: true, message } if message == "boom in serialize"),
            "{err:?}"
        );
    }

    #[test]
    fn claim_limit_is_a_small_multiple_and_never_unlimited() {
        assert_eq!(claim_limit(0), Some(MIN_CLAIM_LIMIT));
        for len in (0..40).map(|k| 1usize << k).flat_map(|l| [l - 1, l, l + 1]) {
            match claim_limit(len) {
                Some(limit) => {
                    assert!(limit >= len * CLAIM_FACTOR, "{len}: {limit}");
                    assert!(
                        limit <= (2 * CLAIM_FACTOR * len).max(MIN_CLAIM_LIMIT),
                        "{len}: {limit} is more than twice the claim"
                    );
                    assert!(limit <= MAX_CLAIM_LIMIT);
                }
                None => assert!(len * CLAIM_FACTOR > MAX_CLAIM_LIMIT, "{len}"),
            }
        }
        // Every frame a u32 prefix can announce has a limit.
        assert_eq!(claim_limit(u32::MAX as usize), Some(MAX_CLAIM_LIMIT));
        assert_eq!(claim_limit(usize::MAX), None);
    }

    /// A byte string whose length prefix claims `claim` bytes, padded with
    /// zeros to `len` bytes of input.
    fn claiming(claim: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0xfd];
        bytes.extend_from_slice(&claim.to_le_bytes());
        bytes.resize(len, 0);
        bytes
    }

    #[test]
    fn a_claim_over_twice_the_scaled_input_is_refused_before_allocating() {
        // 1 MiB + 1 of input: the limit is 32 MiB (it was 64 MiB, a power
        // of four), so a 48 MiB claim is refused by the limit, not by the
        // reader after a 48 MiB allocation.
        let bytes = claiming(48 << 20, (1 << 20) + 1);
        match decode::<serde_bytes::ByteBuf>(&bytes) {
            Err(CodecError::Decode(m)) => assert!(m.contains("claims more memory"), "{m}"),
            other => panic!("expected the claim limit, got {other:?}"),
        }
    }

    #[test]
    fn headers_claim_at_most_the_header_limit_whatever_follows() {
        // A header claiming 100 MiB at the start of a 16 MiB body (the
        // body's own limit would be 256 MiB).
        let body = claiming(100 << 20, 16 << 20);
        match decode_header_prefix::<String>(&body) {
            Err(CodecError::Decode(m)) => assert!(m.contains("claims more memory"), "{m}"),
            other => panic!("expected the header limit, got {other:?}"),
        }
        assert!(decode_prefix::<String>(&body).is_err());
        // A real header still decodes.
        let mut body = encode(&"a header".to_string()).unwrap();
        body.extend_from_slice(&[0; 1000]);
        let (h, used) = decode_header_prefix::<String>(&body).unwrap();
        assert_eq!((h.as_str(), used), ("a header", 9));
    }

    /// `value` followed by `after`, as inputs lie in a packed chunk.
    fn followed(value: &[u8], after: &[u8]) -> Vec<u8> {
        [value, after].concat()
    }

    #[test]
    fn a_value_followed_by_more_bytes_decodes_as_it_does_alone() {
        let values: [(u64, u32, String); 3] = [
            (0, 0, String::new()),
            (3_000_000, 7, "a".into()),
            (u64::MAX, u32::MAX, "ä€".repeat(10)),
        ];
        for v in &values {
            let bytes = encode(v).unwrap();
            // Nothing, a little and a lot after it.
            for after in [&[][..], &[0xfb, 1, 2][..], &[0xff; 64][..]] {
                let back: (u64, u32, String) =
                    decode_followed_boxed(&followed(&bytes, after), bytes.len()).unwrap();
                assert_eq!(&back, v, "followed by {after:?}");
            }
        }
    }

    #[test]
    fn a_followed_value_that_is_cut_or_long_fails_as_it_does_alone() {
        let bytes = encode(&(3_000_000u64, "name".to_owned())).unwrap();
        // Cut one byte short: the byte after it would complete the value.
        let cut = bytes.len() - 1;
        let alone = decode_boxed::<(u64, String)>(&bytes[..cut]).unwrap_err();
        let seen =
            decode_followed_boxed::<(u64, String)>(&followed(&bytes, &[0; 16]), cut).unwrap_err();
        assert_eq!(seen, alone);
        // Bytes of its own left over.
        let long = followed(&bytes, &[1]);
        let alone = decode_boxed::<(u64, String)>(&long).unwrap_err();
        assert!(
            matches!(*alone, CodecError::TrailingBytes { .. }),
            "{alone:?}"
        );
        let seen = decode_followed_boxed::<(u64, String)>(&followed(&long, &[0; 16]), long.len())
            .unwrap_err();
        assert_eq!(seen, alone);
        // A length past the end.
        let past = decode_followed_boxed::<u64>(&bytes, bytes.len() + 1).unwrap_err();
        assert!(matches!(*past, CodecError::Decode(_)), "{past:?}");
    }

    #[test]
    fn a_followed_value_whose_decoding_panics_is_decoded_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        #[derive(Debug)]
        struct Panics;
        impl<'de> Deserialize<'de> for Panics {
            fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
                CALLS.fetch_add(1, Ordering::SeqCst);
                panic!("boom in deserialize")
            }
        }
        let bytes = followed(&[1, 2], &[0; 16]);
        let err = decode_followed_boxed::<Panics>(&bytes, 2).unwrap_err();
        assert!(
            matches!(&*err, CodecError::Panicked { encoding: false, message } if message == "boom in deserialize"),
            "{err:?}"
        );
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    }
}
