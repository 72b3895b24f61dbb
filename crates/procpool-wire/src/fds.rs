//! Frames that carry descriptors over a Unix socket (`SCM_RIGHTS`), and
//! which frame each received descriptor belongs to.
//!
//! # The promise
//!
//! * **Sender**: a frame with descriptors is written by one `sendmsg` whose
//!   data starts at the frame's length prefix and holds only that frame's
//!   bytes (the rest of a partial write follows without descriptors). A
//!   frame carries at most [`MAX_FDS`] descriptors.
//! * **Kernel** (Linux `unix_stream_read_generic`): descriptors ride on the
//!   first segment of their `sendmsg`; a read that meets them takes them
//!   and stops at the end of that segment (it may have read earlier bytes
//!   of other writes before it).
//! * **Receiver**: so the descriptors one read returns belong to the *last
//!   frame that starts inside that read's bytes*, and that frame ends at or
//!   after the read's end. [`FdReader`] records, for each read that brought
//!   descriptors, its byte range in the stream; [`FdReader::take_fds`] hands
//!   a finished frame exactly the descriptors whose read started at or
//!   before the frame's first byte and ended inside the frame.
//!
//! The peer is untrusted: descriptors that arrive anywhere else (a read
//! whose range fits no frame, two batches for one frame, a batch the kernel
//! truncated) are a protocol error for the frame they arrived in
//! ([`FdError`]); every descriptor is an `OwnedFd` and closed when dropped,
//! whatever happens. Whether a frame's descriptors match what its header
//! declares is checked where the header is decoded
//! ([`crate::message::decode_message_fds`]).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// The most descriptors one frame may carry (Linux's `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

/// A socket that can receive descriptors with its bytes (`recvmsg`).
pub trait RecvFds {
    /// Reads bytes into `buf` and appends the descriptors that came with
    /// them to `fds`. Returns the bytes read (0: end of stream) and whether
    /// the kernel dropped descriptors for lack of room (`MSG_CTRUNC`).
    fn recv_fds(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<(usize, bool)>;
}

/// A socket that can send descriptors with its bytes (`sendmsg`).
pub trait SendFds {
    /// Writes some of `bufs` with `fds` attached to the first byte; returns
    /// the bytes written.
    fn send_fds(&mut self, bufs: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> io::Result<usize>;
}

/// Descriptors that did not arrive where the protocol puts them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FdError {
    /// Descriptors came with bytes that do not start the frame they belong
    /// to, or a frame got two batches.
    Misplaced {
        /// Where the frame starts in the stream.
        frame_start: u64,
        /// The read that brought them: its first byte's offset.
        from: u64,
        /// The read's end.
        to: u64,
    },
    /// The peer sent more descriptors than fit [`MAX_FDS`]; the kernel
    /// closed the rest.
    Truncated,
}

impl fmt::Display for FdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdError::Misplaced {
                frame_start,
                from,
                to,
            } => write!(
                f,
                "descriptors arrived with bytes {from}..{to} of the stream, which do not start \
                 the frame at {frame_start}: the peer does not follow the protocol"
            ),
            FdError::Truncated => write!(
                f,
                "the peer sent more than {MAX_FDS} descriptors with one frame"
            ),
        }
    }
}

impl std::error::Error for FdError {}

/// Descriptors one read brought, with the read's byte range in the stream.
#[derive(Debug)]
struct Batch {
    from: u64,
    to: u64,
    fds: Vec<OwnedFd>,
    truncated: bool,
}

/// A buffered reader over a socket that keeps the descriptors arriving
/// with the bytes and tells which frame they belong to. Use it under a
/// [`FrameReader`](crate::FrameReader): note [`position`](Self::position)
/// before a frame, then [`take_fds`](Self::take_fds) after it.
#[derive(Debug)]
pub struct FdReader<S> {
    inner: S,
    buf: Box<[u8]>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Bytes handed to the caller so far (the stream offset of the next
    /// byte `read` returns).
    pos: u64,
    /// Bytes received from the socket so far.
    received: u64,
    batches: VecDeque<Batch>,
}

impl<S: RecvFds> FdReader<S> {
    /// A reader with a `capacity`-byte buffer; reads at least that large go
    /// straight into the caller's buffer.
    pub fn with_capacity(capacity: usize, inner: S) -> Self {
        FdReader {
            inner,
            buf: vec![0; capacity.max(64)].into_boxed_slice(),
            start: 0,
            end: 0,
            pos: 0,
            received: 0,
            batches: VecDeque::new(),
        }
    }

    /// The socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes received and not yet read.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The stream offset of the next byte [`read`](Read::read) returns.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The descriptors of the frame that occupied stream bytes
    /// `frame_start..frame_end` (read completely). Descriptors whose read
    /// ended inside the frame but did not start it are closed and
    /// reported.
    pub fn take_fds(&mut self, frame_start: u64, frame_end: u64) -> Result<Vec<OwnedFd>, FdError> {
        let mut mine: Option<Vec<OwnedFd>> = None;
        let mut error = None;
        // A batch whose read ends past this frame belongs to a later one.
        while self.batches.front().is_some_and(|b| b.to <= frame_end) {
            let Some(b) = self.batches.pop_front() else {
                break;
            };
            let fits = b.from <= frame_start && frame_start < b.to;
            if b.truncated {
                error.get_or_insert(FdError::Truncated);
            } else if !fits || mine.is_some() {
                error.get_or_insert(FdError::Misplaced {
                    frame_start,
                    from: b.from,
                    to: b.to,
                });
            } else {
                mine = Some(b.fds);
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(mine.unwrap_or_default()),
        }
    }

    /// Reads the next `n` bytes (a bulk byte string after a frame, see
    /// [`crate::bulk`]) into a buffer of their own: what is buffered
    /// first, then the rest with `raw`, which must append exactly that many
    /// bytes from the socket to the buffer (no descriptors travel with
    /// them, so it may read without `recvmsg`, straight into the spare
    /// capacity).
    pub fn read_bulk(
        &mut self,
        n: usize,
        raw: impl FnOnce(&mut S, usize, &mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        let have = n.min(self.end - self.start);
        out.extend_from_slice(&self.buf[self.start..self.start + have]);
        self.start += have;
        self.pos += have as u64;
        let rest = n - have;
        if rest > 0 {
            raw(&mut self.inner, rest, &mut out)?;
            if out.len() != n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the stream ended {} bytes into a bulk byte string of {n}",
                        out.len()
                    ),
                ));
            }
            self.received += rest as u64;
            self.pos += rest as u64;
        }
        Ok(out)
    }

    fn recv(&mut self, into_buf: bool, out: &mut [u8]) -> io::Result<usize> {
        let mut fds = Vec::new();
        let target: &mut [u8] = if into_buf { &mut self.buf } else { out };
        let (n, truncated) = self.inner.recv_fds(target, &mut fds)?;
        let from = self.received;
        self.received += n as u64;
        if !fds.is_empty() || truncated {
            self.batches.push_back(Batch {
                from,
                to: self.received,
                fds,
                truncated,
            });
        }
        Ok(n)
    }
}

impl<S: RecvFds> Read for FdReader<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.start == self.end {
            if out.len() >= self.buf.len() {
                let n = self.recv(false, out)?;
                self.pos += n as u64;
                return Ok(n);
            }
            let n = self.recv(true, &mut [])?;
            self.start = 0;
            self.end = n;
            if n == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A descriptor to send with a frame, kept open until it is sent.
pub type SendFd = Arc<dyn AsFd + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A fake socket: scripted reads, each with some descriptors.
    struct Script(VecDeque<(Vec<u8>, usize)>);

    fn fd() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/dev/null").unwrap())
    }

    impl RecvFds for Script {
        fn recv_fds(
            &mut self,
            buf: &mut [u8],
            fds: &mut Vec<OwnedFd>,
        ) -> io::Result<(usize, bool)> {
            let Some((bytes, n)) = self.0.pop_front() else {
                return Ok((0, false));
            };
            assert!(bytes.len() <= buf.len());
            buf[..bytes.len()].copy_from_slice(&bytes);
            fds.extend((0..n).map(|_| fd()));
            Ok((bytes.len(), false))
        }
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    fn frames(reads: Vec<(Vec<u8>, usize)>) -> Vec<(Vec<u8>, Result<usize, FdError>)> {
        let mut r =
            crate::FrameReader::new(FdReader::with_capacity(64, Script(reads.into())), 1 << 20);
        let mut out = Vec::new();
        loop {
            let start = r.get_ref().position();
            let body = match r.next_frame_owned() {
                Ok(Some(b)) => b,
                _ => break,
            };
            let end = r.get_ref().position();
            out.push((body, r.get_mut().take_fds(start, end).map(|f| f.len())));
        }
        out
    }

    #[test]
    fn descriptors_go_to_the_frame_they_start() {
        // Frame a (no fds) glued before frame b (2 fds) in one read, as the
        // kernel does; then frame c (1 fd) split over two reads; then d.
        let a = frame(b"aaaa");
        let b = frame(b"bb");
        let c = frame(&[7; 100]);
        let d = frame(b"d");
        let mut first = a.clone();
        first.extend_from_slice(&b);
        let got = frames(vec![
            (first, 2),
            (c[..30].to_vec(), 1),
            (c[30..].to_vec(), 0),
            (d.clone(), 0),
        ]);
        let counts: Vec<_> = got.iter().map(|(_, n)| n.clone()).collect();
        assert_eq!(counts, vec![Ok(0), Ok(2), Ok(1), Ok(0)]);
        assert_eq!(got[2].0, vec![7; 100]);
    }

    #[test]
    fn descriptors_in_the_middle_of_a_frame_are_refused() {
        let c = frame(&[7; 100]);
        let got = frames(vec![(c[..30].to_vec(), 0), (c[30..].to_vec(), 1)]);
        assert!(matches!(got[0].1, Err(FdError::Misplaced { .. })));
    }

    #[test]
    fn a_second_batch_for_one_frame_is_refused() {
        let c = frame(&[7; 100]);
        let got = frames(vec![
            (c[..10].to_vec(), 1),
            (c[10..50].to_vec(), 1),
            (c[50..].to_vec(), 0),
            (frame(b"next"), 0),
        ]);
        assert!(matches!(got[0].1, Err(FdError::Misplaced { from: 10, .. })));
        assert_eq!(got[1].1, Ok(0), "the next frame is not blamed");
    }
}
