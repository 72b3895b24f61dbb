//! Length-prefixed frames: a u32 little-endian body length, then the body.
//!
//! The reader checks the length against its cap *before* reserving memory,
//! and tells a clean end of stream (at a frame boundary) from a truncated
//! frame. The writer sends many frames with one vectored write so a header
//! and a large payload need no copy into a single buffer.
//!
//! On an authenticated link (see [`crate::seal`]) each body is followed by
//! its tag, inside the length prefix: the reader opens every frame before
//! handing it out ([`FrameReader::set_opener`]) and the writer seals every
//! frame as it goes on the wire ([`write_sealed_frames`]). Sealing is the
//! `seal` feature (on by default).

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use crate::bulk::BulkSource;
#[cfg(feature = "seal")]
use crate::seal::{Opener, SealError, Sealer, TAG_LEN};

use crate::fds::{MAX_FDS, SendFd, SendFds};

/// Bytes in the length prefix.
pub const LEN_BYTES: usize = 4;

/// The default cap on one frame's body: 1 GiB.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 30;

/// Why a frame could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer announced a body longer than the cap; nothing was allocated.
    TooLarge {
        /// The announced length.
        len: u64,
        /// The cap in force.
        max: u32,
    },
    /// The stream ended inside a frame.
    Truncated {
        /// Bytes the frame should have had (prefix included).
        expected: u64,
        /// Bytes that arrived.
        got: u64,
    },
    /// The socket failed.
    Io(io::Error),
    /// On an authenticated link, the frame did not open: it was altered,
    /// replayed, reordered, dropped before or injected. Nothing of it was
    /// used; the connection must end.
    #[cfg(feature = "seal")]
    #[cfg_attr(docsrs, doc(cfg(feature = "seal")))]
    Forged(SealError),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => write!(
                f,
                "frame of {len} bytes exceeds the {max}-byte cap (raise max_frame_bytes if this is a real payload)"
            ),
            FrameError::Truncated { expected, got } => {
                write!(
                    f,
                    "stream ended inside a frame: got {got} of {expected} bytes"
                )
            }
            FrameError::Io(e) => write!(f, "socket error: {e}"),
            #[cfg(feature = "seal")]
            FrameError::Forged(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            #[cfg(feature = "seal")]
            FrameError::Forged(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads frames from a byte stream into one reused buffer.
///
/// The buffer keeps its length between frames (its bytes stay
/// initialized), so a body is read straight into it: only bytes it never
/// held are zeroed, once, instead of the whole body per frame.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// The last frame's body is `buf[..len]`.
    len: usize,
    max: u32,
    /// Set once the link is authenticated: every later frame must open.
    #[cfg(feature = "seal")]
    opener: Option<Opener>,
}

impl<R: Read> FrameReader<R> {
    /// A reader that refuses bodies longer than `max` bytes.
    pub fn new(inner: R, max: u32) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
            len: 0,
            max,
            #[cfg(feature = "seal")]
            opener: None,
        }
    }

    /// From the next frame on, every frame must carry a tag that `opener`
    /// accepts (the cap then counts the body without its tag).
    #[cfg(feature = "seal")]
    #[cfg_attr(docsrs, doc(cfg(feature = "seal")))]
    pub fn set_opener(&mut self, opener: Opener) {
        self.opener = Some(opener);
    }

    /// Whether frames are authenticated (never without the `seal`
    /// feature).
    pub fn is_sealed(&self) -> bool {
        #[cfg(feature = "seal")]
        return self.opener.is_some();
        #[cfg(not(feature = "seal"))]
        false
    }

    /// Changes the cap (e.g. from the small handshake cap to the pool's).
    pub fn set_max(&mut self, max: u32) {
        self.max = max;
    }

    /// The cap: the most bytes a frame's body may hold (and, with
    /// [`crate::message::bulk_lens`], a frame and its bulk bytes).
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying stream, mutably (to take a frame's descriptors from
    /// an [`FdReader`](crate::fds::FdReader)).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Reads the next frame's body. `Ok(None)` is a clean end of stream at a
    /// frame boundary.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        self.next_frame_reusing(|| None)
    }

    /// [`next_frame`](Self::next_frame), reading the body into the buffer
    /// `spare` hands over (asked once the length is known, so a buffer
    /// freed while the reader was waiting still counts) if it is larger
    /// than the reader's own: reusing a large buffer spares the page faults
    /// of a fresh one.
    pub fn next_frame_reusing(
        &mut self,
        spare: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Result<Option<&[u8]>, FrameError> {
        let mut len_buf = [0u8; LEN_BYTES];
        let mut got = 0;
        while got < LEN_BYTES {
            match self.inner.read(&mut len_buf[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(FrameError::Truncated {
                        expected: LEN_BYTES as u64,
                        got: got as u64,
                    });
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
        let len = u32::from_le_bytes(len_buf);
        #[cfg(feature = "seal")]
        let tag = if self.is_sealed() { TAG_LEN } else { 0 };
        #[cfg(not(feature = "seal"))]
        let tag = 0;
        if u64::from(len) > u64::from(self.max) + tag as u64 {
            return Err(FrameError::TooLarge {
                len: len.into(),
                max: self.max,
            });
        }
        let len = len as usize;
        if let Some(buf) = spare() {
            self.give_buffer(buf);
        }
        self.len = 0;
        if self.buf.capacity() < len {
            self.buf.reserve_exact(len - self.buf.len());
        }
        let mut read = 0;
        while read < len {
            // Zero only bytes the buffer never held, and no more than
            // twice what has arrived: a peer that announces a large frame
            // and sends little makes us touch little.
            let end = len.min(self.buf.len().max(read + read.max(64 << 10)));
            if self.buf.len() < end {
                self.buf.resize(end, 0);
            }
            match self.inner.read(&mut self.buf[read..end]) {
                Ok(0) => {
                    return Err(FrameError::Truncated {
                        expected: (LEN_BYTES + len) as u64,
                        got: (LEN_BYTES + read) as u64,
                    });
                }
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
        #[cfg(feature = "seal")]
        let body = match self.opener.as_mut() {
            Some(opener) => opener.open(&self.buf[..len]).map_err(FrameError::Forged)?,
            None => len,
        };
        #[cfg(not(feature = "seal"))]
        let body = len;
        self.len = body;
        Ok(Some(&self.buf[..body]))
    }

    /// The body of the frame the last `next_frame*` call read (empty after
    /// an owned read).
    pub fn last_frame(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Keeps `buf` for the next frame if it is larger than the current
    /// buffer (with its length: its bytes are initialized and need no
    /// zeroing).
    fn give_buffer(&mut self, buf: Vec<u8>) {
        if buf.capacity() > self.buf.capacity() {
            self.buf = buf;
        }
    }

    /// Reads the next frame's body into a buffer the caller keeps (the
    /// reader starts a new one for the next frame). `Ok(None)` is a clean
    /// end of stream.
    pub fn next_frame_owned(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        self.next_frame_owned_reusing(|| None)
    }

    /// [`next_frame_owned`](Self::next_frame_owned) with a buffer to reuse,
    /// as in [`next_frame_reusing`](Self::next_frame_reusing).
    pub fn next_frame_owned_reusing(
        &mut self,
        spare: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, FrameError> {
        match self.next_frame_reusing(spare)? {
            None => Ok(None),
            Some(_) => {
                let mut frame = std::mem::take(&mut self.buf);
                frame.truncate(std::mem::take(&mut self.len));
                Ok(Some(frame))
            }
        }
    }
}

/// A payload buffer. Shared, so the sender can keep it (e.g. to send a task
/// again to another worker) without copying it.
pub type Payload = Arc<Vec<u8>>;

/// One frame ready for the socket: a head (length prefix and header bytes)
/// and payloads that follow it on the wire without being copied, and the
/// descriptors that go with it (Unix sockets only, see [`crate::fds`]).
#[derive(Default, Clone)]
pub struct Outgoing {
    head: Vec<u8>,
    payloads: Vec<Payload>,
    fds: Vec<SendFd>,
    /// Bytes written right after the frame, outside its length: its
    /// payloads' bulk byte strings ([`crate::bulk`]), written from the
    /// values that hold them.
    after: Vec<Arc<dyn BulkSource>>,
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("head", &self.head.len())
            .field("payloads", &self.payloads.len())
            .field("fds", &self.fds.len())
            .field("after", &self.after.len())
            .finish()
    }
}

impl Outgoing {
    /// Builds a frame from a head (without its prefix) and payloads.
    ///
    /// Fails if the body would not fit a u32 length.
    pub fn new<P: Into<Payload>>(header: Vec<u8>, payloads: Vec<P>) -> io::Result<Outgoing> {
        let payloads: Vec<Payload> = payloads.into_iter().map(Into::into).collect();
        let mut head = Vec::with_capacity(LEN_BYTES + header.len());
        head.extend_from_slice(&[0; LEN_BYTES]);
        head.extend_from_slice(&header);
        Outgoing::from_prefixed(head, payloads)
    }

    /// This frame sealed by `sealer` (the next tag in its order): the tag
    /// follows the body as one more piece, and the length prefix counts it.
    /// Frames with descriptors cannot be sealed (they cross only Unix
    /// sockets, which are not sealed).
    #[cfg(feature = "seal")]
    #[cfg_attr(docsrs, doc(cfg(feature = "seal")))]
    pub fn sealed(self, sealer: &mut Sealer) -> io::Result<Outgoing> {
        if !self.fds.is_empty() || !self.after.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "descriptors and bulk bytes can only be sent over a Unix socket",
            ));
        }
        let body = self.wire_len() - LEN_BYTES;
        let tag = sealer.seal(body, self.parts_after_prefix());
        let mut payloads = self.payloads;
        payloads.push(Arc::new(tag.to_vec()));
        Outgoing::from_prefixed(self.head, payloads)
    }

    /// Builds a frame from a head whose first [`LEN_BYTES`] bytes are room
    /// for the length prefix (filled in here) and payloads: the header is
    /// encoded straight into the buffer that goes on the wire.
    ///
    /// Fails if the body would not fit a u32 length.
    pub fn from_prefixed(mut head: Vec<u8>, payloads: Vec<Payload>) -> io::Result<Outgoing> {
        assert!(head.len() >= LEN_BYTES, "no room for the length prefix");
        let body_len = head.len() - LEN_BYTES + payloads.iter().map(|p| p.len()).sum::<usize>();
        let len = u32::try_from(body_len).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame body of {body_len} bytes does not fit the u32 length prefix"),
            )
        })?;
        head[..LEN_BYTES].copy_from_slice(&len.to_le_bytes());
        Ok(Outgoing {
            head,
            payloads,
            fds: Vec::new(),
            after: Vec::new(),
        })
    }

    /// Attaches bulk byte strings ([`crate::bulk`]) to write right after
    /// the frame, from the values that hold them, in the order its header
    /// lists them.
    pub fn with_bulk(mut self, bulk: Vec<Arc<dyn BulkSource>>) -> Outgoing {
        self.after = bulk;
        self
    }

    /// The values whose bulk byte strings are written after the frame.
    pub fn bulk(&self) -> &[Arc<dyn BulkSource>] {
        &self.after
    }

    /// The frame's own bytes on the wire (prefix, header, payloads):
    /// [`wire_len`](Outgoing::wire_len) without the bulk bytes after it.
    pub fn frame_len(&self) -> usize {
        self.head.len() + self.payloads.iter().map(|p| p.len()).sum::<usize>()
    }

    /// Writes the bulk byte strings that follow the frame, from byte
    /// `skip` of them on, with `write` (each value encoded a second time:
    /// see [`BulkSource::write_bulk`]).
    pub fn write_bulk(
        &self,
        skip: usize,
        write: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut seen = 0usize;
        for source in &self.after {
            source.write_bulk(&mut |bytes: &[u8]| {
                let from = skip.saturating_sub(seen).min(bytes.len());
                seen += bytes.len();
                if from < bytes.len() {
                    write(&bytes[from..])
                } else {
                    Ok(())
                }
            })?;
        }
        Ok(())
    }

    /// Attaches descriptors to send with the frame (at most
    /// [`MAX_FDS`]; checked when it is written).
    pub fn with_fds(mut self, fds: Vec<SendFd>) -> Outgoing {
        self.fds = fds;
        self
    }

    /// The descriptors sent with the frame.
    pub fn fds(&self) -> &[SendFd] {
        &self.fds
    }

    /// The payloads, once the frame is written (to reuse their buffers).
    pub fn into_payloads(self) -> Vec<Payload> {
        self.payloads
    }

    /// The frame's size on the wire, prefix and bulk bytes after it
    /// included.
    pub fn wire_len(&self) -> usize {
        self.frame_len() + self.after.iter().map(|s| s.bulk_len()).sum::<usize>()
    }

    /// The frame's bytes as they go on the wire (prefix first), in pieces;
    /// not its bulk bytes (see [`write_bulk`](Outgoing::write_bulk)).
    pub fn parts(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&self.head[..]).chain(self.payloads.iter().map(|p| &p[..]))
    }

    /// The body's bytes (after the length prefix), in pieces.
    #[cfg(feature = "seal")]
    fn parts_after_prefix(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&self.head[LEN_BYTES..]).chain(self.payloads.iter().map(|p| &p[..]))
    }

    /// The frame's pieces, without the bulk bytes after it.
    fn frame_slices<'a>(&'a self, out: &mut Vec<IoSlice<'a>>) {
        out.push(IoSlice::new(&self.head));
        for p in &self.payloads {
            if !p.is_empty() {
                out.push(IoSlice::new(p));
            }
        }
    }
}

/// Writes every frame like [`write_all_frames`], each sealed by `sealer`
/// in order: its length prefix counts the tag, which follows its body.
/// Frames with descriptors are refused (they cross only Unix sockets,
/// which are not sealed).
///
/// Hold the lock that orders writes on this connection while calling it:
/// tags are numbered in the order they are made.
#[cfg(feature = "seal")]
#[cfg_attr(docsrs, doc(cfg(feature = "seal")))]
pub fn write_sealed_frames<W: Write + ?Sized>(
    w: &mut W,
    frames: &[Outgoing],
    sealer: &mut Sealer,
) -> io::Result<()> {
    if frames
        .iter()
        .any(|f| !f.fds.is_empty() || !f.after.is_empty())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors and bulk bytes can only be sent over a Unix socket",
        ));
    }
    let mut trailers: Vec<([u8; LEN_BYTES], [u8; TAG_LEN])> = Vec::with_capacity(frames.len());
    for f in frames {
        let body = f.wire_len() - LEN_BYTES;
        let len = u32::try_from(body + TAG_LEN).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame body of {body} bytes and its tag do not fit the u32 length prefix"),
            )
        })?;
        let tag = sealer.seal(body, f.parts_after_prefix());
        trailers.push((len.to_le_bytes(), tag));
    }
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(frames.len() * 4);
    for (f, (len, tag)) in frames.iter().zip(&trailers) {
        slices.push(IoSlice::new(len));
        slices.push(IoSlice::new(&f.head[LEN_BYTES..]));
        for p in &f.payloads {
            if !p.is_empty() {
                slices.push(IoSlice::new(p));
            }
        }
        slices.push(IoSlice::new(tag));
    }
    for chunk in slices.chunks_mut(MAX_SLICES) {
        write_vectored_all(w, chunk)?;
    }
    w.flush()
}

/// The most slices handed to one `writev` (Linux's IOV_MAX is 1024).
const MAX_SLICES: usize = 512;

/// Writes every frame with as few vectored writes as possible. Frames
/// with descriptors are refused: use [`write_all_frames_fds`].
pub fn write_all_frames<W: Write + ?Sized>(w: &mut W, frames: &[Outgoing]) -> io::Result<()> {
    if frames.iter().any(|f| !f.fds.is_empty()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors can only be sent over a Unix socket",
        ));
    }
    write_slices(w, frames)?;
    w.flush()
}

/// Writes every frame; a frame with descriptors goes with one `sendmsg`
/// that starts at its length prefix and holds only its bytes (the promise
/// of [`crate::fds`]); runs of frames without descriptors go with as few
/// vectored writes as possible.
pub fn write_all_frames_fds<W: Write + SendFds + ?Sized>(
    w: &mut W,
    frames: &[Outgoing],
) -> io::Result<()> {
    let mut rest = frames;
    while !rest.is_empty() {
        let plain = rest.iter().take_while(|f| f.fds.is_empty()).count();
        write_slices(w, &rest[..plain])?;
        rest = &rest[plain..];
        let Some((f, after)) = rest.split_first() else {
            break;
        };
        if f.fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a frame can carry at most {MAX_FDS} descriptors, not {}",
                    f.fds.len()
                ),
            ));
        }
        let fds: Vec<BorrowedFd<'_>> = f.fds.iter().map(|d| d.as_fd()).collect();
        let mut slices = Vec::with_capacity(1 + f.payloads.len());
        f.frame_slices(&mut slices);
        let mut parts: &mut [IoSlice<'_>] = &mut slices;
        let sent = loop {
            match w.send_fds(parts, &fds) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "socket accepted no bytes",
                    ));
                }
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        IoSlice::advance_slices(&mut parts, sent);
        write_vectored_all(w, parts)?;
        // Bulk bytes go with writes of their own: the `sendmsg` above
        // holds only the frame, so the reader's descriptors stay the
        // frame's (see `crate::fds`).
        f.write_bulk(0, &mut |b| w.write_all(b))?;
        rest = after;
    }
    w.flush()
}

/// Writes frames with as few vectored writes as possible; a frame's bulk
/// bytes (written from their values) end a run.
fn write_slices<W: Write + ?Sized>(w: &mut W, frames: &[Outgoing]) -> io::Result<()> {
    let mut rest = frames;
    while !rest.is_empty() {
        let run = rest
            .iter()
            .position(|f| !f.after.is_empty())
            .map_or(rest.len(), |i| i + 1);
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(run * 2);
        for f in &rest[..run] {
            f.frame_slices(&mut slices);
        }
        for chunk in slices.chunks_mut(MAX_SLICES) {
            write_vectored_all(w, chunk)?;
        }
        rest[run - 1].write_bulk(0, &mut |b| w.write_all(b))?;
        rest = &rest[run..];
    }
    Ok(())
}

fn write_vectored_all<W: Write + ?Sized>(
    w: &mut W,
    mut rest: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !rest.is_empty() {
        match w.write_vectored(rest) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "socket accepted no bytes",
                ));
            }
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn wire(frames: &[Outgoing]) -> Vec<u8> {
        let mut out = Vec::new();
        write_all_frames(&mut out, frames).unwrap();
        out
    }

    /// Bulk bytes held as they are (a value that is its one bulk string).
    struct Bytes(Vec<u8>, [crate::bulk::Bulk; 1]);

    impl BulkSource for Bytes {
        fn spots(&self) -> &[crate::bulk::Bulk] {
            &self.1
        }
        fn write_bulk(&self, write: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
            write(&self.0)
        }
    }

    #[test]
    fn bulk_bytes_follow_their_frame_and_end_a_run_of_frames() {
        let bytes = |b: &[u8]| {
            Arc::new(Bytes(
                b.to_vec(),
                [crate::bulk::Bulk {
                    at: 1,
                    len: b.len() as u32,
                }],
            )) as Arc<dyn BulkSource>
        };
        let a = Outgoing::new(vec![1], vec![vec![2u8]]).unwrap();
        let b = Outgoing::new(vec![3], vec![vec![4u8, 5]])
            .unwrap()
            .with_bulk(vec![bytes(b"bulk"), bytes(b"more")]);
        let c = Outgoing::new(vec![6], Vec::<Vec<u8>>::new()).unwrap();
        assert_eq!(b.wire_len(), b.frame_len() + 8);
        let one = |f: &Outgoing| wire(std::slice::from_ref(f));
        let expected: Vec<u8> = [one(&a), one(&b), one(&c)].concat();
        assert_eq!(one(&b)[b.frame_len()..], *b"bulkmore");
        assert_eq!(wire(&[a, b, c]), expected);
    }

    #[test]
    fn round_trip_many_frames() {
        let frames = vec![
            Outgoing::new(b"ab".to_vec(), vec![b"cd".to_vec(), vec![], b"e".to_vec()]).unwrap(),
            Outgoing::new::<Vec<u8>>(vec![], vec![]).unwrap(),
            Outgoing::new::<Vec<u8>>(vec![7; 100_000], vec![]).unwrap(),
        ];
        let bytes = wire(&frames);
        assert_eq!(bytes.len(), frames.iter().map(Outgoing::wire_len).sum());
        let mut r = FrameReader::new(Cursor::new(bytes), 1 << 20);
        assert_eq!(r.next_frame().unwrap().unwrap(), b"abcde");
        assert_eq!(r.next_frame().unwrap().unwrap(), b"");
        assert_eq!(r.next_frame().unwrap().unwrap(), &vec![7; 100_000][..]);
        assert!(r.next_frame().unwrap().is_none());
    }

    #[test]
    fn a_reused_buffer_holds_exactly_each_frame() {
        let sizes = [300_000usize, 5, 0, 70_000, 300_001, 1];
        let frames: Vec<Outgoing> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Outgoing::new::<Vec<u8>>(vec![i as u8 + 1; n], vec![]).unwrap())
            .collect();
        let mut r = FrameReader::new(Cursor::new(wire(&frames)), 1 << 20);
        for (i, &n) in sizes.iter().enumerate() {
            if i == 3 {
                // An owned read, its buffer handed back for the next one.
                let owned = r.next_frame_owned().unwrap().unwrap();
                assert_eq!(owned, vec![i as u8 + 1; n]);
                assert!(r.last_frame().is_empty());
                let next = r.next_frame_reusing(|| Some(owned)).unwrap().unwrap();
                assert_eq!(next, &vec![i as u8 + 2; sizes[i + 1]][..]);
                continue;
            }
            if i == 4 {
                assert_eq!(r.last_frame(), &vec![5u8; n][..]);
                continue;
            }
            assert_eq!(r.next_frame().unwrap().unwrap(), &vec![i as u8 + 1; n][..]);
            assert_eq!(r.last_frame(), &vec![i as u8 + 1; n][..]);
        }
        assert!(r.next_frame().unwrap().is_none());
    }

    #[test]
    fn truncated_body() {
        let mut bytes = wire(&[Outgoing::new::<Vec<u8>>(b"hello".to_vec(), vec![]).unwrap()]);
        bytes.truncate(6);
        let mut r = FrameReader::new(Cursor::new(bytes), 1 << 20);
        match r.next_frame() {
            Err(FrameError::Truncated {
                expected: 9,
                got: 6,
            }) => {}
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn truncated_prefix() {
        let mut r = FrameReader::new(Cursor::new(vec![1u8, 0]), 1 << 20);
        assert!(matches!(
            r.next_frame(),
            Err(FrameError::Truncated {
                expected: 4,
                got: 2
            })
        ));
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        // A 4 GiB - 1 length with no body behind it.
        let mut r = FrameReader::new(Cursor::new(u32::MAX.to_le_bytes().to_vec()), 1 << 20);
        match r.next_frame() {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(len, u64::from(u32::MAX));
                assert_eq!(max, 1 << 20);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(r.buf.capacity() < 1 << 20);
    }

    #[test]
    fn frame_at_the_cap_is_accepted() {
        let bytes = wire(&[Outgoing::new::<Vec<u8>>(vec![1; 16], vec![]).unwrap()]);
        assert!(
            FrameReader::new(Cursor::new(bytes.clone()), 16)
                .next_frame()
                .is_ok()
        );
        assert!(matches!(
            FrameReader::new(Cursor::new(bytes), 15).next_frame(),
            Err(FrameError::TooLarge { len: 16, max: 15 })
        ));
    }

    #[test]
    fn empty_stream_is_clean_eof() {
        let mut r = FrameReader::new(Cursor::new(Vec::new()), 16);
        assert!(r.next_frame().unwrap().is_none());
    }

    /// Sealed links (the `seal` feature).
    #[cfg(feature = "seal")]
    mod sealed {
        use super::*;

        fn sealed_pair() -> (Sealer, Opener) {
            let keys = crate::seal::LinkKeys::derive(&[9; 32], &[1; 32], &[2; 32]);
            let (sealer, _) = keys.pool_side();
            let (_, opener) = keys.worker_side();
            (sealer, opener)
        }

        fn sealed_wire(frames: &[Outgoing]) -> Vec<u8> {
            let (mut sealer, _) = sealed_pair();
            let mut out = Vec::new();
            write_sealed_frames(&mut out, frames, &mut sealer).unwrap();
            out
        }

        #[test]
        fn sealed_frames_round_trip_at_the_cap() {
            let frames = vec![
                Outgoing::new(b"ab".to_vec(), vec![b"cd".to_vec(), vec![], b"e".to_vec()]).unwrap(),
                Outgoing::new::<Vec<u8>>(vec![], vec![]).unwrap(),
                Outgoing::new::<Vec<u8>>(vec![7; 16], vec![]).unwrap(),
            ];
            let bytes = sealed_wire(&frames);
            assert_eq!(bytes.len(), 3 * (LEN_BYTES + TAG_LEN) + 5 + 16);
            let mut r = FrameReader::new(Cursor::new(bytes), 16);
            r.set_opener(sealed_pair().1);
            assert!(r.is_sealed());
            assert_eq!(r.next_frame().unwrap().unwrap(), b"abcde");
            assert_eq!(r.next_frame_owned().unwrap().unwrap(), b"");
            assert_eq!(r.next_frame().unwrap().unwrap(), &[7; 16][..]);
            assert!(r.next_frame().unwrap().is_none());
        }

        #[test]
        fn a_tampered_sealed_stream_is_forged() {
            let frames = vec![
                Outgoing::new(b"first".to_vec(), Vec::<Vec<u8>>::new()).unwrap(),
                Outgoing::new(b"second".to_vec(), Vec::<Vec<u8>>::new()).unwrap(),
            ];
            let bytes = sealed_wire(&frames);
            // A flipped bit in the second frame's body.
            let mut bad = bytes.clone();
            let second = LEN_BYTES + 5 + TAG_LEN + LEN_BYTES;
            bad[second] ^= 0x20;
            let mut r = FrameReader::new(Cursor::new(bad), 1024);
            r.set_opener(sealed_pair().1);
            assert_eq!(r.next_frame().unwrap().unwrap(), b"first");
            assert!(matches!(
                r.next_frame(),
                Err(FrameError::Forged(SealError::BadTag { seq: 1 }))
            ));
            // The plain reader of a sealed stream sees the tags (and so would a
            // decoder: trailing bytes), never a clean message.
            let mut plain = FrameReader::new(Cursor::new(bytes.clone()), 1024);
            assert_eq!(plain.next_frame().unwrap().unwrap().len(), 5 + TAG_LEN);
            // A plain frame where a sealed one is due does not open.
            let plain_bytes = wire(&frames);
            let mut r = FrameReader::new(Cursor::new(plain_bytes), 1024);
            r.set_opener(sealed_pair().1);
            assert!(matches!(r.next_frame(), Err(FrameError::Forged(_))));
        }

        #[test]
        fn a_sealed_outgoing_reads_like_write_sealed_frames() {
            let frame = || {
                Outgoing::new(b"head".to_vec(), vec![b"pay".to_vec(), b"load".to_vec()]).unwrap()
            };
            let (mut a, _) = sealed_pair();
            let sealed = frame().sealed(&mut a).unwrap();
            let mut one = Vec::new();
            write_all_frames(&mut one, &[sealed]).unwrap();
            assert_eq!(one, sealed_wire(&[frame()]));
            let mut r = FrameReader::new(Cursor::new(one), 64);
            r.set_opener(sealed_pair().1);
            assert_eq!(r.next_frame().unwrap().unwrap(), b"headpayload");
        }
    }
}
