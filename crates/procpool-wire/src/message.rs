//! The messages each side sends after the handshake.
//!
//! A frame's body is a bincode header (one [`ToWorker`] or [`ToParent`])
//! followed by the raw payload bytes it declares, in order. Payloads are the
//! already-encoded task inputs and outputs: they are written with a vectored
//! write and read back as slices of the frame, never copied into the header.

use std::fmt;
use std::os::fd::OwnedFd;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::bulk::Bulk;
use crate::codec::{self, CodecError};
use crate::frame::{Outgoing, Payload};
use crate::{Generation, TaskId};

/// One task inside a [`ToWorker::Run`]: its payload follows the header.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TaskHeader {
    /// The pool-wide task id.
    pub id: TaskId,
    /// The task's `NAME`, looked up in the worker's registry (borrowed
    /// from the task type when sending: no allocation per task).
    pub name: std::borrow::Cow<'static, str>,
    /// Hash of the name and the input and output type names, so a parent and
    /// a worker built from different definitions fail instead of misreading.
    pub fingerprint: u64,
    /// Input payload bytes.
    pub len: u32,
    /// Descriptors (sealed memory files of shared payloads) the frame
    /// carries for this task, in order after the previous tasks' ones.
    pub fds: u32,
    /// The payload's bulk byte strings (see [`crate::bulk`]): their bytes
    /// follow the frame, after the previous tasks' ones. Always empty for
    /// a packed chunk.
    pub bulk: Vec<Bulk>,
    /// `0`: the payload is one task's input. `n > 0`: a packed chunk of a
    /// `map`, `n` inputs of this task, each a little-endian `u32` length
    /// and its bytes ([`pack_input`] / [`unpack_inputs`]); the worker
    /// reports each with [`ToParent::Item`] (in order, each before the next
    /// begins), then the chunk with `Finished`.
    pub items: u32,
}

/// Appends one input to a packed chunk's payload (see
/// [`TaskHeader::items`]).
pub fn pack_input(payload: &mut Vec<u8>, input: &[u8]) {
    payload.extend_from_slice(&(input.len() as u32).to_le_bytes());
    payload.extend_from_slice(input);
}

/// The ranges of a packed chunk's `n` inputs within `payload`, or why it
/// is not one (a length past the end, or other than `n` inputs).
pub fn unpack_inputs(payload: &[u8], n: u32) -> Result<Vec<std::ops::Range<usize>>, String> {
    let mut out = Vec::with_capacity(n as usize);
    let mut at = 0usize;
    while at < payload.len() {
        let Some(len) = payload.get(at..at + 4) else {
            return Err(format!("packed chunk: a cut length at byte {at}"));
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let start = at + 4;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= payload.len())
            .ok_or_else(|| format!("packed chunk: an input of {len} bytes past the end"))?;
        out.push(start..end);
        at = end;
    }
    if out.len() != n as usize {
        return Err(format!(
            "packed chunk: {} inputs where the header says {n}",
            out.len()
        ));
    }
    Ok(out)
}

/// Parent → worker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToWorker {
    /// Run the initializer `name`; its payload (`len` bytes) follows.
    Init {
        /// The initializer's `NAME`.
        name: String,
        /// Same scheme as [`TaskHeader::fingerprint`].
        fingerprint: u64,
        /// Payload bytes.
        len: u32,
    },
    /// Queue these tasks (a chunk travels as one frame), in order.
    Run {
        /// One header per task; payloads follow in the same order.
        items: Vec<TaskHeader>,
    },
    /// Withdraw task `id` if it has not started; the worker answers
    /// [`ToParent::Withdrawn`].
    Cancel {
        /// The task to withdraw.
        id: TaskId,
    },
    /// Finish (or, with `drop_pending`, withdraw) the queued tasks, then exit.
    Shutdown {
        /// Withdraw every queued task that has not started.
        drop_pending: bool,
    },
    /// The worker's executor parked with its work ring empty, and the pool
    /// has since put work there (a spawned worker's `Run` frames go through
    /// that ring, beside the socket): look again.
    Wake,
}

/// How long the worker spent on each part of a task, in nanoseconds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerTiming {
    /// From the frame's arrival to the task's start.
    pub queue_ns: u64,
    /// Decoding the input.
    pub decode_ns: u64,
    /// Running the task.
    pub run_ns: u64,
    /// Encoding the output.
    pub encode_ns: u64,
    /// The worker's peak resident memory so far (0 if unknown).
    pub peak_rss_bytes: u64,
}

/// How one task ended in the worker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The output's encoding (`len` bytes) follows the header.
    Ok {
        /// Output payload bytes.
        len: u32,
        /// Descriptors (sealed memory files of shared payloads) the frame
        /// carries for the output.
        fds: u32,
        /// The output's bulk byte strings (see [`crate::bulk`]), whose
        /// bytes follow the frame (a `Finished` on a Unix socket only).
        bulk: Vec<Bulk>,
    },
    /// The task panicked.
    Panicked {
        /// The panic message.
        message: String,
        /// `file:line:col` from the worker's panic hook.
        location: Option<String>,
    },
    /// The worker could not decode the input.
    Decode {
        /// Why.
        message: String,
        /// The input type the worker expected.
        worker_type: String,
    },
    /// The worker could not encode the output.
    Encode {
        /// Why.
        message: String,
        /// The output type.
        worker_type: String,
    },
    /// The worker's registry has no task of that name.
    UnknownTask {
        /// The name asked for.
        name: String,
    },
    /// Same name, different types: the fingerprints differ.
    Mismatch {
        /// The worker's input type.
        worker_input: String,
        /// The worker's output type.
        worker_output: String,
    },
}

/// Worker → parent. Every message carries the worker's generation.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToParent {
    /// The initializer finished; `error` says why it failed.
    InitDone {
        /// Generation of the sender.
        generation: Generation,
        /// `None` on success.
        error: Option<String>,
    },
    /// The worker has begun task `id`.
    Started {
        /// Generation of the sender.
        generation: Generation,
        /// The task.
        id: TaskId,
    },
    /// Task `id` ended; an `Ok` outcome's payload follows.
    Finished {
        /// Generation of the sender.
        generation: Generation,
        /// The task.
        id: TaskId,
        /// How it ended.
        outcome: Outcome,
        /// Where its time went in the worker.
        timing: WorkerTiming,
    },
    /// Answer to [`ToWorker::Cancel`], or (unasked) a task dropped by
    /// `Shutdown { drop_pending: true }`.
    Withdrawn {
        /// Generation of the sender.
        generation: Generation,
        /// The task.
        id: TaskId,
        /// `true`: the task was removed and will never run.
        withdrawn: bool,
    },
    /// "Still here", every `heartbeat` of the welcome (workers that dialed
    /// in over a network; a silent connection is then a lost worker).
    Heartbeat {
        /// Generation of the sender.
        generation: Generation,
    },
    /// "Notes are waiting in the reply ring": sent on the socket when the
    /// parent's reader had parked (locally spawned workers with a ring).
    Wake {
        /// Generation of the sender.
        generation: Generation,
    },
    /// Input `index` of the packed chunk `id` (see [`TaskHeader::items`])
    /// ended; an `Ok` outcome's payload follows. Sent before the next input
    /// begins, so a crash costs only the input that was running.
    Item {
        /// Generation of the sender.
        generation: Generation,
        /// The chunk.
        id: TaskId,
        /// Which of its inputs, from 0.
        index: u32,
        /// How it ended.
        outcome: Outcome,
        /// Where its time went in the worker.
        timing: WorkerTiming,
    },
    /// Notes of the worker's executor as its reply ring holds them (each a
    /// u32 length, its top bit marking a packed chunk's compact input
    /// result, then the body; such results packed tighter still: the
    /// `procpool` crate's `link::ring::Packer` says how), end to end in the
    /// payload that follows: a worker's keeper process forwards its ring
    /// over a network link this way, many notes in one sealed frame.
    Records {
        /// Generation of the sender.
        generation: Generation,
        /// Bytes of the records.
        len: u32,
    },
}

impl ToParent {
    /// The generation stamped on the message.
    pub fn generation(&self) -> Generation {
        match self {
            ToParent::InitDone { generation, .. }
            | ToParent::Started { generation, .. }
            | ToParent::Finished { generation, .. }
            | ToParent::Item { generation, .. }
            | ToParent::Records { generation, .. }
            | ToParent::Withdrawn { generation, .. }
            | ToParent::Heartbeat { generation }
            | ToParent::Wake { generation } => *generation,
        }
    }
}

/// A header that declares the payloads following it.
pub trait Header: Serialize + DeserializeOwned {
    /// Calls `f` with each payload's length and the descriptors the frame
    /// carries for it, in order (without allocating: decoding a frame asks
    /// for them).
    fn each_payload(&self, f: &mut dyn FnMut(u32, u32));

    /// Lengths of the payloads that follow, in order.
    fn payload_lens(&self) -> Vec<u32> {
        let mut lens = Vec::new();
        self.each_payload(&mut |len, _| lens.push(len));
        lens
    }

    /// Descriptors the frame carries for each payload, in order.
    fn fd_counts(&self) -> Vec<u32> {
        let mut counts = Vec::new();
        self.each_payload(&mut |_, fds| counts.push(fds));
        counts
    }

    /// The bulk byte strings of each payload, in order (their bytes
    /// follow the frame in the same order; see [`crate::bulk`]); empty
    /// (no allocation) when no payload has any.
    fn bulk(&self) -> Vec<&[Bulk]> {
        Vec::new()
    }
}

impl Header for ToWorker {
    fn bulk(&self) -> Vec<&[Bulk]> {
        match self {
            ToWorker::Run { items } if items.iter().any(|i| !i.bulk.is_empty()) => {
                items.iter().map(|i| &i.bulk[..]).collect()
            }
            _ => Vec::new(),
        }
    }

    fn each_payload(&self, f: &mut dyn FnMut(u32, u32)) {
        match self {
            ToWorker::Init { len, .. } => f(*len, 0),
            ToWorker::Run { items } => items.iter().for_each(|i| f(i.len, i.fds)),
            ToWorker::Cancel { .. } | ToWorker::Shutdown { .. } | ToWorker::Wake => {}
        }
    }
}

impl Header for ToParent {
    fn bulk(&self) -> Vec<&[Bulk]> {
        match self {
            ToParent::Finished {
                outcome: Outcome::Ok { bulk, .. },
                ..
            }
            | ToParent::Item {
                outcome: Outcome::Ok { bulk, .. },
                ..
            } if !bulk.is_empty() => vec![&bulk[..]],
            _ => Vec::new(),
        }
    }

    fn each_payload(&self, f: &mut dyn FnMut(u32, u32)) {
        match self {
            ToParent::Finished {
                outcome: Outcome::Ok { len, fds, .. },
                ..
            }
            | ToParent::Item {
                outcome: Outcome::Ok { len, fds, .. },
                ..
            } => f(*len, *fds),
            ToParent::Records { len, .. } => f(*len, 0),
            _ => {}
        }
    }
}

/// Why a frame did not hold a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// The header did not decode.
    Header(CodecError),
    /// The header declared payloads that do not match the bytes after it.
    PayloadLength {
        /// Bytes the header declared.
        declared: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The header declared a different number of descriptors than came
    /// with the frame (or descriptors came where none can go).
    Descriptors {
        /// Descriptors the header declared.
        declared: u64,
        /// Descriptors that came with the frame.
        actual: u64,
    },
    /// Descriptors arrived outside the frame they belong to
    /// (see [`crate::fds`]).
    Fds(crate::fds::FdError),
    /// A payload's bulk byte strings were declared wrong: out of order,
    /// outside the payload, too many, or more bytes than the frame cap
    /// (see [`crate::bulk`]).
    Bulk(String),
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::Header(e) => write!(f, "bad message header: {e}"),
            MessageError::PayloadLength { declared, actual } => write!(
                f,
                "message declares {declared} payload bytes but carries {actual}"
            ),
            MessageError::Descriptors { declared, actual } => write!(
                f,
                "message declares {declared} descriptors but carries {actual}"
            ),
            MessageError::Fds(e) => write!(f, "{e}"),
            MessageError::Bulk(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for MessageError {}

/// Builds the frame for `header` and its one small payload, copied into the
/// same buffer as the header (one allocation, one piece to write; for
/// large payloads [`encode_message`] writes them from where they are).
///
/// The payload's length must be the one the header declares.
pub fn encode_message_inline<H: Header>(
    header: &H,
    payload: &[u8],
) -> Result<Outgoing, CodecError> {
    debug_assert_eq!(header.payload_lens(), vec![payload.len() as u32]);
    let mut head = Vec::with_capacity(64 + payload.len());
    head.extend_from_slice(&[0; crate::frame::LEN_BYTES]);
    codec::encode_into(header, &mut head)?;
    head.extend_from_slice(payload);
    Outgoing::from_prefixed(head, Vec::new()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Builds the frame for `header` and its payloads.
///
/// The payload lengths must be the ones the header declares.
pub fn encode_message<H: Header, P: Into<Payload>>(
    header: &H,
    payloads: Vec<P>,
) -> Result<Outgoing, CodecError> {
    let payloads: Vec<Payload> = payloads.into_iter().map(Into::into).collect();
    debug_assert_eq!(
        header.payload_lens(),
        payloads.iter().map(|p| p.len() as u32).collect::<Vec<_>>()
    );
    let mut head = Vec::with_capacity(96);
    head.extend_from_slice(&[0; crate::frame::LEN_BYTES]);
    codec::encode_into(header, &mut head)?;
    Outgoing::from_prefixed(head, payloads).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Splits a frame body into its header and the payload slices it declares.
pub fn decode_message<H: Header>(body: &[u8]) -> Result<(H, Vec<&[u8]>), MessageError> {
    let (header, used) = codec::decode_header_prefix::<H>(body).map_err(MessageError::Header)?;
    let rest = &body[used..];
    let shape = Shape::of(&header);
    shape.check_bytes(rest)?;
    let payloads = split(&header, rest, &shape, |p, _| p)?;
    Ok((header, payloads))
}

/// How many payloads a header declares, their bytes and their
/// descriptors.
struct Shape {
    count: usize,
    bytes: u64,
    fds: u64,
}

impl Shape {
    fn of<H: Header>(header: &H) -> Shape {
        let mut shape = Shape {
            count: 0,
            bytes: 0,
            fds: 0,
        };
        header.each_payload(&mut |len, fds| {
            shape.count += 1;
            shape.bytes += u64::from(len);
            shape.fds += u64::from(fds);
        });
        shape
    }

    fn check_bytes(&self, rest: &[u8]) -> Result<(), MessageError> {
        if self.bytes != rest.len() as u64 {
            return Err(MessageError::PayloadLength {
                declared: self.bytes,
                actual: rest.len() as u64,
            });
        }
        Ok(())
    }
}

/// The payloads of `rest` (whose length `shape` has been checked
/// against), each with its descriptor count made into a `T` by `each`;
/// then the header's bulk lists checked against them.
fn split<'a, H: Header, T>(
    header: &H,
    mut rest: &'a [u8],
    shape: &Shape,
    mut each: impl FnMut(&'a [u8], u32) -> T,
) -> Result<Vec<T>, MessageError> {
    let mut payloads = Vec::with_capacity(shape.count);
    let mut lens = Vec::new();
    let bulk = header.bulk();
    header.each_payload(&mut |len, fds| {
        let (p, r) = rest.split_at(len as usize);
        rest = r;
        if !bulk.is_empty() {
            lens.push(p.len());
        }
        payloads.push(each(p, fds));
    });
    if !bulk.is_empty() {
        if bulk.len() != lens.len() {
            return Err(MessageError::Bulk(
                "bulk byte strings declared for a message without payloads".to_owned(),
            ));
        }
        for (spots, &len) in bulk.iter().zip(&lens) {
            crate::bulk::check(spots, len).map_err(MessageError::Bulk)?;
        }
    }
    Ok(payloads)
}

/// The lengths of the bulk byte strings that follow a frame carrying
/// `header`, in order, once they are known to fit: `body` (the frame's
/// own bytes) and all of them at most `max` bytes together.
pub fn bulk_lens<H: Header>(header: &H, body: usize, max: u32) -> Result<Vec<u32>, MessageError> {
    let lens: Vec<u32> = header
        .bulk()
        .iter()
        .flat_map(|spots| spots.iter().map(|b| b.len))
        .collect();
    let total = body as u64 + lens.iter().map(|&l| u64::from(l)).sum::<u64>();
    if total > u64::from(max) {
        return Err(MessageError::Bulk(format!(
            "a frame and its bulk byte strings of {total} bytes exceed the {max}-byte frame cap"
        )));
    }
    Ok(lens)
}

/// One payload of a frame and the descriptors the frame carried for it.
pub type PayloadFds<'a> = (&'a [u8], Vec<OwnedFd>);

/// [`decode_message`] for a frame that came with descriptors: each payload
/// gets the descriptors its header declares, in order. A count that does
/// not match is an error and every descriptor is closed.
pub fn decode_message_fds<H: Header>(
    body: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<(H, Vec<PayloadFds<'_>>), MessageError> {
    let (header, used) = codec::decode_header_prefix::<H>(body).map_err(MessageError::Header)?;
    let rest = &body[used..];
    let shape = Shape::of(&header);
    shape.check_bytes(rest)?;
    if shape.fds != fds.len() as u64 {
        return Err(MessageError::Descriptors {
            declared: shape.fds,
            actual: fds.len() as u64,
        });
    }
    let mut fds = fds.into_iter();
    let paired = split(&header, rest, &shape, |p, c| {
        (p, fds.by_ref().take(c as usize).collect())
    })?;
    Ok((header, paired))
}

/// Fingerprint of a task or initializer: FNV-1a over its name and the names
/// of its input and output types.
pub fn fingerprint(name: &str, input_type: &str, output_type: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [name, input_type, output_type] {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameReader, write_all_frames};
    use std::io::Cursor;

    fn through_wire<H: Header>(h: &H, payloads: Vec<Vec<u8>>) -> Vec<u8> {
        let out = encode_message(h, payloads).unwrap();
        let mut bytes = Vec::new();
        write_all_frames(&mut bytes, &[out]).unwrap();
        let mut r = FrameReader::new(Cursor::new(bytes), 1 << 20);
        r.next_frame().unwrap().unwrap().to_vec()
    }

    #[test]
    fn run_round_trip_with_payloads() {
        let msg = ToWorker::Run {
            items: vec![
                TaskHeader {
                    id: 1,
                    name: "a".into(),
                    fingerprint: 9,
                    len: 3,
                    fds: 0,
                    bulk: Vec::new(),
                    items: 0,
                },
                TaskHeader {
                    id: 2,
                    name: "b".into(),
                    fingerprint: 8,
                    len: 0,
                    fds: 0,
                    bulk: Vec::new(),
                    items: 0,
                },
                TaskHeader {
                    id: 3,
                    name: "c".into(),
                    fingerprint: 7,
                    len: 2,
                    fds: 0,
                    bulk: Vec::new(),
                    items: 0,
                },
            ],
        };
        let body = through_wire(&msg, vec![b"xyz".to_vec(), vec![], b"pq".to_vec()]);
        let (back, payloads) = decode_message::<ToWorker>(&body).unwrap();
        assert_eq!(back, msg);
        assert_eq!(payloads, vec![&b"xyz"[..], &b""[..], &b"pq"[..]]);
    }

    #[test]
    fn finished_round_trip() {
        let msg = ToParent::Finished {
            generation: 4,
            id: 77,
            outcome: Outcome::Ok {
                len: 5,
                fds: 0,
                bulk: Vec::new(),
            },
            timing: WorkerTiming {
                queue_ns: 1,
                decode_ns: 2,
                run_ns: 3,
                encode_ns: 4,
                peak_rss_bytes: 5,
            },
        };
        let body = through_wire(&msg, vec![b"hello".to_vec()]);
        let (back, payloads) = decode_message::<ToParent>(&body).unwrap();
        assert_eq!(back, msg);
        assert_eq!(back.generation(), 4);
        assert_eq!(payloads, vec![&b"hello"[..]]);
    }

    #[test]
    fn payload_shorter_than_declared() {
        let msg = ToWorker::Init {
            name: "i".into(),
            fingerprint: 1,
            len: 10,
        };
        let mut body = codec::encode(&msg).unwrap();
        body.extend_from_slice(b"short");
        assert_eq!(
            decode_message::<ToWorker>(&body),
            Err(MessageError::PayloadLength {
                declared: 10,
                actual: 5
            })
        );
    }

    #[test]
    fn garbage_is_a_header_error() {
        let garbage = [0xffu8, 0xfe, 0x13, 0x37, 0x00, 0x42];
        assert!(matches!(
            decode_message::<ToParent>(&garbage),
            Err(MessageError::Header(_))
        ));
        assert!(matches!(
            decode_message::<ToWorker>(&[]),
            Err(MessageError::Header(_))
        ));
    }

    fn null_fds(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| OwnedFd::from(std::fs::File::open("/dev/null").unwrap()))
            .collect()
    }

    #[test]
    fn descriptors_are_split_by_the_declared_counts() {
        let item = |id, len, fds| TaskHeader {
            id,
            name: "t".into(),
            fingerprint: 1,
            len,
            fds,
            bulk: Vec::new(),
            items: 0,
        };
        let msg = ToWorker::Run {
            items: vec![item(1, 1, 2), item(2, 1, 0), item(3, 1, 1)],
        };
        let body = through_wire(&msg, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        let (_, parts) = decode_message_fds::<ToWorker>(&body, null_fds(3)).unwrap();
        let counts: Vec<_> = parts.iter().map(|(p, f)| (p.to_vec(), f.len())).collect();
        assert_eq!(
            counts,
            vec![(b"a".to_vec(), 2), (b"b".to_vec(), 0), (b"c".to_vec(), 1)]
        );
        for wrong in [2, 4] {
            assert_eq!(
                decode_message_fds::<ToWorker>(&body, null_fds(wrong)).unwrap_err(),
                MessageError::Descriptors {
                    declared: 3,
                    actual: wrong as u64
                }
            );
        }
        // A message that can carry none.
        let cancel = through_wire(&ToWorker::Cancel { id: 1 }, vec![]);
        assert!(matches!(
            decode_message_fds::<ToWorker>(&cancel, null_fds(1)),
            Err(MessageError::Descriptors {
                declared: 0,
                actual: 1
            })
        ));
    }

    #[test]
    fn fingerprints_differ_by_type() {
        assert_ne!(
            fingerprint("sq", "u64", "u64"),
            fingerprint("sq", "String", "u64")
        );
        assert_ne!(fingerprint("ab", "c", "d"), fingerprint("a", "bc", "d"));
        assert_eq!(
            fingerprint("sq", "u64", "u64"),
            fingerprint("sq", "u64", "u64")
        );
    }
}
