//! Reading frames off a connection, and the one rule for reusing a frame's
//! buffer. Both sides read with a [`SocketReader`]; the wire format itself
//! (length prefix, cap checked before allocating) is `procpool_wire::frame`.
//! Takes no lock.

use std::sync::Arc;

use procpool_wire::FrameReader;

use super::stream::Stream;

/// The reading end of a connection: buffered, so the small frames a peer
/// writes back to back ("result k-1", "started k") cost one read.
pub(crate) type SocketReader = FrameReader<std::io::BufReader<Stream>>;

/// Read buffer of a connection; larger frames bypass it.
pub(crate) const READ_BUFFER: usize = 64 * 1024;

/// A reader on `read_half` that takes frames up to `max` bytes (the
/// handshake's small cap until the peer is accepted).
pub(crate) fn reader(read_half: Stream, max: u32) -> SocketReader {
    FrameReader::new(
        std::io::BufReader::with_capacity(READ_BUFFER, read_half),
        max,
    )
}

/// A finished buffer back for reuse, if it is worth keeping and no one
/// else holds it: a fresh large buffer costs a page fault per 4 KiB on
/// first touch. Above 64 MiB the memory held would cost more than the
/// faults (and at most one buffer of each kind is kept anyway).
pub(crate) fn reusable(buf: Arc<Vec<u8>>) -> Option<Vec<u8>> {
    if (256 * 1024..=64 * 1024 * 1024).contains(&buf.capacity()) {
        Arc::try_unwrap(buf).ok()
    } else {
        None
    }
}
