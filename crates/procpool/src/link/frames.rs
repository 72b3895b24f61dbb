//! Reading and writing frames on a connection, and the one rule for
//! reusing a frame's buffer. Both sides read with a [`SocketReader`] and
//! write with [`write_frames`]; the wire format itself (length prefix, cap
//! checked before allocating, tags on a TCP link) is `procpool_wire`.
//! Takes no lock.

use std::io;
use std::sync::Arc;

use std::os::fd::OwnedFd;

use procpool_wire::FrameReader;
use procpool_wire::fds::FdReader;
#[cfg(feature = "remote")]
use procpool_wire::frame::write_sealed_frames;
use procpool_wire::frame::{Outgoing, write_all_frames_fds};

/// What seals a TCP link's frames (`procpool_wire::seal`).
#[cfg(feature = "remote")]
pub(crate) use procpool_wire::seal::Sealer;

/// Without the `remote` feature no link is sealed (no TCP, no secret):
/// this stands for the sealer, and has no values.
#[cfg(not(feature = "remote"))]
#[derive(Debug)]
pub(crate) enum Sealer {}

use super::stream::Stream;

/// The reading end of a connection: buffered, so the small frames a peer
/// writes back to back ("result k-1", "started k") cost one read, and
/// keeping the descriptors that arrive with a frame (shared payloads,
/// `procpool_wire::fds`) until the frame is read.
pub(crate) type SocketReader = FrameReader<FdReader<Stream>>;

/// Read buffer of a connection; larger frames bypass it.
pub(crate) const READ_BUFFER: usize = 64 * 1024;

/// A reader on `read_half` that takes frames up to `max` bytes (the
/// handshake's small cap until the peer is accepted).
pub(crate) fn reader(read_half: Stream, max: u32) -> SocketReader {
    FrameReader::new(FdReader::with_capacity(READ_BUFFER, read_half), max)
}

/// A frame read with its descriptors, or the end of the stream (`None`).
pub(crate) type FrameWithFds<B> = Result<Option<(B, Vec<OwnedFd>)>, FrameFdError>;

/// Reads the next frame (into a buffer from `spare`, see
/// `FrameReader::next_frame_owned_reusing`) with the descriptors that came
/// with it. Descriptors that came where the protocol puts none are an
/// error (they are closed).
pub(crate) fn next_owned_frame_fds(
    reader: &mut SocketReader,
    spare: impl FnOnce() -> Option<Vec<u8>>,
) -> FrameWithFds<Vec<u8>> {
    let start = reader.get_ref().position();
    let Some(body) = reader
        .next_frame_owned_reusing(spare)
        .map_err(FrameFdError::Frame)?
    else {
        return Ok(None);
    };
    let fds = frame_fds(reader, start)?;
    Ok(Some((body, fds)))
}

/// [`next_owned_frame_fds`] into the reader's own buffer.
pub(crate) fn next_frame_fds(reader: &mut SocketReader) -> FrameWithFds<&[u8]> {
    let start = reader.get_ref().position();
    if reader.next_frame().map_err(FrameFdError::Frame)?.is_none() {
        return Ok(None);
    }
    let fds = frame_fds(reader, start)?;
    Ok(Some((reader.last_frame(), fds)))
}

/// Reads the bulk byte strings (`procpool_wire::bulk`) of `lens` bytes
/// that follow the frame just read, each into a buffer of its own, straight
/// from the socket (a Unix socket only: a TCP link never carries them).
pub(crate) fn read_bulk(reader: &mut SocketReader, lens: &[u32]) -> io::Result<Vec<Vec<u8>>> {
    lens.iter()
        .map(|&n| reader.get_mut().read_bulk(n as usize, raw_read))
        .collect()
}

/// Appends exactly `n` bytes from `s` to `out`, read into its spare
/// capacity (std reads a Unix socket into uninitialized memory: the
/// buffer is not zeroed first).
fn raw_read(s: &mut Stream, n: usize, out: &mut Vec<u8>) -> io::Result<()> {
    use std::io::Read;
    match s {
        Stream::Unix(u) => (&*u).take(n as u64).read_to_end(out).map(drop),
        #[cfg(feature = "remote")]
        Stream::Tcp(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bulk byte strings over a TCP link",
        )),
    }
}

/// The descriptors of the frame just read, which began at `start`.
fn frame_fds(reader: &mut SocketReader, start: u64) -> Result<Vec<OwnedFd>, FrameFdError> {
    let end = reader.get_ref().position();
    reader
        .get_mut()
        .take_fds(start, end)
        .map_err(FrameFdError::Fds)
}

/// Why [`next_frame_fds`] failed.
#[derive(Debug)]
pub(crate) enum FrameFdError {
    Frame(procpool_wire::FrameError),
    Fds(procpool_wire::fds::FdError),
}

impl FrameFdError {
    /// Whether a frame on a sealed (TCP) link did not open: altered,
    /// replayed, reordered or injected (never without `remote`).
    pub(crate) fn is_forged(&self) -> bool {
        #[cfg(feature = "remote")]
        return matches!(
            self,
            FrameFdError::Frame(procpool_wire::FrameError::Forged(_))
        );
        #[cfg(not(feature = "remote"))]
        false
    }
}

impl std::fmt::Display for FrameFdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameFdError::Frame(e) => e.fmt(f),
            FrameFdError::Fds(e) => e.fmt(f),
        }
    }
}

/// Writes `frames` in one vectored write; on an authenticated (TCP) link
/// each is sealed by `sealer`. The caller holds the lock that orders this
/// connection's writes (the sealer lives under it).
pub(crate) fn write_frames(
    stream: &Stream,
    frames: &[Outgoing],
    sealer: Option<&mut Sealer>,
) -> io::Result<()> {
    match sealer {
        #[cfg(feature = "remote")]
        Some(s) => write_sealed_frames(&mut &*stream, frames, s),
        #[cfg(not(feature = "remote"))]
        Some(s) => match *s {},
        None => write_all_frames_fds(&mut &*stream, frames),
    }
}

/// A finished buffer back for reuse, if it is worth keeping and no one
/// else holds it: a fresh large buffer costs a page fault per 4 KiB on
/// first touch. Above 64 MiB the memory held would cost more than the
/// faults (and at most one buffer of each kind is kept anyway).
#[inline]
pub(crate) fn reusable(buf: Arc<Vec<u8>>) -> Option<Vec<u8>> {
    if (256 * 1024..=64 * 1024 * 1024).contains(&buf.capacity()) {
        Arc::try_unwrap(buf).ok()
    } else {
        None
    }
}
