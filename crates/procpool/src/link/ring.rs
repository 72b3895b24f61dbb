//! The reply ring: a spawned worker's `Started` and `Finished` notes in
//! shared memory instead of one socket write each; and beside it the work
//! ring, the pool's `Run` frames to that worker (below).
//!
//! A locally spawned worker gets, beside its socket, a memory file mapped
//! by both processes (`memfd`, `MAP_SHARED`). Its executor appends each note
//! as a record (the same bytes a frame has on the socket: a u32 length,
//! then the body) and publishes it by moving `tail`; the parent's reader
//! copies records out and moves `head`. No syscall per task on either side
//! while the parent keeps up.
//!
//! **Nothing is lost when the worker dies.** A note is in the parent's
//! memory the moment it is published, so a crash costs exactly what it costs
//! over the socket: the parent drains the ring before it settles the dead
//! worker, and knows every result and every start. (Batching replies on the
//! socket would lose finished results still in the worker's buffer; that is
//! why procpool did not batch.)
//!
//! **Waking the parent.** Before blocking on its socket, the reader sets
//! `parked` and looks at `tail` once more; after publishing, the worker
//! looks at `parked` and, if it was set, clears it and writes a tiny `Wake`
//! frame on the socket. Each side puts a sequentially consistent fence
//! between its store and its load (Dekker's handshake), so at least one
//! sees the other: the reader does not block while a note is published,
//! or the worker wakes it (a spare wake-up is harmless). Fences rather
//! than `SeqCst` loads and stores: they promise the same here, and the
//! model checker (loom, `models.rs`) can check fences but treats `SeqCst`
//! accesses as acquire/release, under which this handshake looks broken.
//!
//! **Order.** Notes too large for the ring (over a quarter of it) go on the
//! socket; a *marker* record takes their place in the ring, and the reader
//! stops at a marker until the socket frame it stands for has arrived. So
//! the parent sees the executor's notes in the order they were made.
//! Frames from the worker's other threads (`Withdrawn`, heartbeats) never
//! depended on that order.
//!
//! The ring is untrusted input: lengths are checked against the pool's frame
//! cap and against what was published; a worker that breaks the format is a
//! protocol error, like a garbage frame.
//!
//! # The work ring (pool to worker)
//!
//! The same map holds a second ring the other way round: the pool's
//! [`Writer::offer`] puts a spawned worker's `Run` frames there, and the
//! worker's executor takes them between tasks (`worker::inbound`), so a
//! busy worker is fed with no socket write on the pool's side and no
//! wake-up of the worker's reader. The roles swap, the handshake does not:
//! the executor parks (sets `parked`, looks at `tail` once more) before it
//! sleeps, and the pool, having published, sees `parked` and posts a
//! `ToWorker::Wake` on the socket. A frame that must cross the socket
//! (descriptors, bulk strings, over a quarter of the ring, or no room
//! left) leaves a marker in the ring, as above, so the worker queues tasks
//! in the order they were sent; `Cancel` and `Shutdown` take the socket:
//! the worker's reader reads the ring before it withdraws tasks, and the
//! executor reads it to the end before it obeys a `Shutdown`.
//!
//! Here the *pool* reads what the worker writes (`head`, `parked`): it
//! never waits for room (a full ring sends on the socket), keeps room for a
//! marker for every frame a worker may hold ([`MOST_HELD`]), and ends a
//! worker whose `head` is not a place it could have read to. A worker says
//! it reads the work ring by setting a word before its hello; one that does
//! not (its own protocol code) gets every frame on its socket.

use procpool_wire::frame::Outgoing;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use crate::sync::{AtomicU64, fence};
use crate::sys::SharedMap;

mod records;

#[cfg(feature = "remote")]
pub(crate) use records::Packer;
pub(crate) use records::{Forwarded, ItemHead, records};

/// Bytes of record space (a few records' worth under the model checker,
/// so that its models reach the wrap-around and a full ring).
#[cfg(not(procpool_loom))]
pub(crate) const CAPACITY: usize = 256 * 1024;
#[cfg(procpool_loom)]
pub(crate) const CAPACITY: usize = 32;
/// Notes larger than this go on the socket behind a marker.
const LARGEST: usize = CAPACITY / 4;
/// Byte offsets of the shared words (each on its own cache line) and of
/// the data.
const TAIL: usize = 0;
const HEAD: usize = 64;
const PARKED: usize = 128;
/// Set to 1 by a worker that reads its work ring (see [`Writer::reader_ready`]).
const READY: usize = 192;
const DATA: usize = 4096;
/// One ring's bytes: its words, then its data.
const HALF: usize = DATA + CAPACITY;
/// Where each ring starts in the map: the reply ring first, the work ring
/// (parent to worker, see [`Writer::offer`]) after it.
const REPLY: usize = 0;
const WORK: usize = HALF;
/// The map holds both rings.
const SIZE: usize = 2 * HALF;
/// Ring bytes the pool keeps free for markers: a `Run` frame goes into the
/// work ring only if this much is left after it, so a marker always fits
/// for every frame a worker may hold ([`MOST_HELD`]).
const MARKER_RESERVE: u64 = 4096;
/// The most `Run` frames a worker may hold (sent, not finished) for the
/// pool to use its work ring: half the markers the reserve holds. The
/// pool's prefetch bounds what a worker holds (4 × `prefetch` at most).
pub(crate) const MOST_HELD: usize = MARKER_RESERVE as usize / LEN / 2;
/// The length word of a marker (never a valid frame length: frames are
/// capped at 1 GiB).
const MARKER: u32 = u32::MAX;
/// The flag of an item record's length word (see [`Record::Item`]): never
/// set in a frame's length (frames are capped at 1 GiB).
const ITEM: u32 = 1 << 31;
const LEN: usize = 4;
/// Bytes of an item record's head: task id (u64), input index (u32), then
/// the worker's queue, decode, run and encode nanoseconds (u64 each), all
/// little-endian; the output's bytes follow.
pub(crate) const ITEM_HEAD: usize = 8 + 4 + 4 * 8;

/// A frame with descriptors (shared payloads) or bulk bytes, or over a
/// quarter of the ring, crosses the socket, a marker in its place: the
/// ring carries one frame's bytes only.
fn must_cross_socket(frame: &Outgoing) -> bool {
    frame.wire_len() > LARGEST || !frame.fds().is_empty() || !frame.bulk().is_empty()
}

fn wrap(pos: u64) -> usize {
    (pos % CAPACITY as u64) as usize
}

/// The record at the start of `bytes` (records as the ring holds them,
/// copied out by [`Reader::copy_published`]): its kind and where its body
/// lies in `bytes` (a marker's is empty: it is only a length word). `Err`
/// if the bytes there are no whole record, as [`Reader::next_into`] finds
/// them.
pub(crate) fn record_at(
    bytes: &[u8],
    max_frame: u32,
) -> Result<(Record, std::ops::Range<usize>), String> {
    let Some((len, rest)) = bytes.split_first_chunk::<LEN>() else {
        return Err(format!(
            "reply ring broken: {} bytes published past the last record",
            bytes.len()
        ));
    };
    match records::length_word(u32::from_le_bytes(*len), max_frame, rest.len() as u64) {
        Ok(Some((record, len))) => Ok((record, LEN..LEN + len as usize)),
        Ok(None) => Ok((Record::Marker, LEN..LEN)),
        Err(e) => Err(format!("reply ring broken: {e}")),
    }
}

/// The parent's end.
pub(crate) struct Reader {
    map: SharedMap,
    /// Where this ring starts in `map` ([`REPLY`] or [`WORK`]).
    base: usize,
    head: u64,
    /// The worker's `tail` as last loaded: the records before it are
    /// published. `tail` is loaded again only when they are all read (a
    /// load per record pulled its cache line from the worker's core each
    /// time).
    tail: u64,
    /// The last record's body, for [`Reader::next`] (tests and models).
    #[cfg(test)]
    body: Vec<u8>,
}

/// What [`Reader::next_into`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// A note (a frame's body).
    Frame,
    /// One input of a packed chunk ended `Ok`, in the compact form a
    /// worker's executor writes without serde (a `ToParent::Item` frame
    /// costs a message encode and decode per input): [`ITEM_HEAD`] bytes of
    /// head, then the output.
    Item,
    /// The next note is on the socket.
    Marker,
}

impl Reader {
    fn word(&self, offset: usize) -> &AtomicU64 {
        self.map.atomic(self.base + offset)
    }

    /// The reading end of a ring another process made (a worker's keeper
    /// reads its worker's ring).
    #[cfg(feature = "remote")]
    pub(crate) fn open(fd: OwnedFd) -> io::Result<Reader> {
        Reader::open_at(fd, REPLY)
    }

    /// The worker's end of the work ring in the map the pool passed (see
    /// [`Writer::offer`]).
    pub(crate) fn open_work(fd: OwnedFd) -> io::Result<Reader> {
        let r = Reader::open_at(fd, WORK)?;
        r.word(READY).store(1, Release);
        Ok(r)
    }

    fn open_at(fd: OwnedFd, base: usize) -> io::Result<Reader> {
        let map = SharedMap::open(fd, SIZE)?;
        let head = map.atomic(base + HEAD).load(Acquire);
        Ok(Reader {
            map,
            base,
            head,
            tail: head,
            #[cfg(test)]
            body: Vec::new(),
        })
    }

    /// A new ring, and the descriptor to hand the worker.
    pub(crate) fn create() -> io::Result<(Reader, OwnedFd)> {
        let (map, fd) = SharedMap::create(SIZE)?;
        Ok((
            Reader {
                map,
                base: REPLY,
                head: 0,
                tail: 0,
                #[cfg(test)]
                body: Vec::new(),
            },
            fd,
        ))
    }

    /// The next record, or `None` if the worker has published nothing
    /// more, read as the pool's reader reads them
    /// ([`Reader::copy_published`], [`record_at`]). A marker stays in place
    /// until [`Reader::skip_marker`].
    #[cfg(test)]
    pub(crate) fn next(&mut self, max_frame: u32) -> Result<Option<Record>, String> {
        let mut bytes = std::mem::take(&mut self.body);
        let n = self.copy_published(&mut bytes)?;
        if n == 0 {
            self.body = Vec::new();
            return Ok(None);
        }
        let (record, body) = record_at(&bytes[..n], max_frame)?;
        if record != Record::Marker {
            self.consume(body.end);
        }
        bytes.truncate(body.end);
        bytes.drain(..body.start);
        self.body = bytes;
        Ok(Some(record))
    }

    /// The next record, or `None` if the worker has published nothing
    /// more, its body appended to `out` (a keeper forwards records this
    /// way, a run of them copied end to end into one buffer; a worker
    /// takes its `Run` frames out of its work ring this way). A marker
    /// stays in place until [`Reader::skip_marker`].
    pub(crate) fn next_into(
        &mut self,
        max_frame: u32,
        out: &mut Vec<u8>,
    ) -> Result<Option<Record>, String> {
        if self.tail == self.head {
            self.tail = self.word(TAIL).load(Acquire);
        }
        let avail = self.tail.wrapping_sub(self.head);
        if avail == 0 {
            return Ok(None);
        }
        if avail > CAPACITY as u64 || avail < LEN as u64 {
            return Err(format!(
                "reply ring broken: {avail} bytes published past the last record"
            ));
        }
        let mut len = [0u8; LEN];
        self.copy_out(self.head, &mut len);
        let after = avail - LEN as u64;
        let (record, len) = match records::length_word(u32::from_le_bytes(len), max_frame, after) {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(Some(Record::Marker)),
            Err(e) => return Err(format!("reply ring broken: {e}")),
        };
        let start = out.len();
        out.resize(start + len as usize, 0);
        self.copy_out(self.head + LEN as u64, &mut out[start..]);
        self.advance(LEN as u64 + u64::from(len));
        Ok(Some(record))
    }

    /// Copies what the worker has published and the parent not read
    /// (from the last record read on) to the start of `out` (grown if too
    /// short, never shrunk: no bytes are zeroed on the way), in one or two
    /// copies; returns how many bytes. The caller reads the records there
    /// ([`record_at`]: in our own memory, which the worker cannot change
    /// after the checks) and frees those it acted on with
    /// [`Reader::consume`]; the rest (from a marker on) is copied again
    /// next time.
    pub(crate) fn copy_published(&mut self, out: &mut Vec<u8>) -> Result<usize, String> {
        self.tail = self.word(TAIL).load(Acquire);
        let avail = self.tail.wrapping_sub(self.head);
        if avail > CAPACITY as u64 {
            return Err(format!(
                "reply ring broken: {avail} bytes published past the last record"
            ));
        }
        let n = avail as usize;
        if out.len() < n {
            out.resize(n, 0);
        }
        self.copy_out(self.head, &mut out[..n]);
        Ok(n)
    }

    /// Frees the first `n` bytes [`Reader::copy_published`] copied (whole
    /// records the caller acted on).
    pub(crate) fn consume(&mut self, n: usize) {
        if n > 0 {
            self.advance(n as u64);
        }
    }

    /// The body of the record [`Reader::next`] just returned.
    #[cfg(test)]
    pub(crate) fn body(&self) -> &[u8] {
        &self.body
    }

    /// Consumes the marker [`Reader::next_into`] stopped at.
    pub(crate) fn skip_marker(&mut self) {
        self.advance(LEN as u64);
    }

    fn advance(&mut self, n: u64) {
        self.head += n;
        self.word(HEAD).store(self.head, Release);
    }

    fn copy_out(&self, pos: u64, out: &mut [u8]) {
        let at = wrap(pos);
        let first = out.len().min(CAPACITY - at);
        if first == out.len() {
            // Not across the end (nearly always): one copy.
            self.map.read(self.base + DATA + at, out);
            return;
        }
        let (a, b) = out.split_at_mut(first);
        self.map.read(self.base + DATA + at, a);
        self.map.read(self.base + DATA, b);
    }

    /// Whether the worker has published records not read yet.
    pub(crate) fn has_data(&self) -> bool {
        self.word(TAIL).load(Acquire) != self.head
    }

    /// Call before blocking on the socket: `true` if the ring is still
    /// empty, and the worker will wake us when it publishes.
    pub(crate) fn park(&self) -> bool {
        self.word(PARKED).store(1, Relaxed);
        fence(SeqCst);
        if self.word(TAIL).load(Acquire) != self.head {
            self.unpark();
            return false;
        }
        true
    }

    /// Awake again: publishing needs no wake-up.
    pub(crate) fn unpark(&self) {
        self.word(PARKED).store(0, SeqCst);
    }
}

/// The worker's end (used by its executor thread only).
pub(crate) struct Writer {
    map: SharedMap,
    /// Where this ring starts in `map` ([`REPLY`] or [`WORK`]).
    base: usize,
    tail: u64,
    /// The parent's `head` as last loaded: the space before it is free.
    /// `head` is loaded again only when this says the ring is too full (a
    /// load per record pulled its cache line from the reader's core each
    /// time).
    head: u64,
}

/// What the worker must do after [`Writer::push`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Published; the parent is awake (or will look before sleeping).
    Quiet,
    /// Published; the parent was parked: write a `Wake` frame.
    Wake,
    /// Too large: a marker was published; write this frame on the socket.
    Socket,
}

/// What [`Writer::offer`] did with a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offered {
    /// In the ring; `wake`: the executor was parked, post a `Wake` frame.
    Ring { wake: bool },
    /// A marker is in the ring: send the frame on the socket.
    Socket,
    /// The worker broke the ring (see [`Writer::offer`]): end it.
    Broken,
}

impl Writer {
    fn word(&self, offset: usize) -> &AtomicU64 {
        self.map.atomic(self.base + offset)
    }

    /// Maps the ring the pool passed.
    pub(crate) fn open(fd: OwnedFd) -> io::Result<Writer> {
        Writer::open_at(fd, REPLY)
    }

    /// The pool's end of a spawned worker's work ring, in the map made
    /// for that worker (a second mapping of it).
    pub(crate) fn open_work(fd: OwnedFd) -> io::Result<Writer> {
        Writer::open_at(fd, WORK)
    }

    /// Whether the worker said it reads this (work) ring: it sets the word
    /// before its hello, so after the handshake the pool knows. A worker
    /// that does not (its own protocol code, as the test doubles have) gets
    /// every frame on its socket.
    pub(crate) fn reader_ready(&self) -> bool {
        self.word(READY).load(Acquire) == 1
    }

    fn open_at(fd: OwnedFd, base: usize) -> io::Result<Writer> {
        let map = SharedMap::open(fd, SIZE)?;
        let tail = map.atomic(base + TAIL).load(Acquire);
        let head = map.atomic(base + HEAD).load(Acquire);
        Ok(Writer {
            map,
            base,
            tail,
            head,
        })
    }

    /// Appends `frame` (or a marker standing for it), waiting while the
    /// ring is full; `wake` is called if the parent must be woken to make
    /// room.
    pub(crate) fn push(&mut self, frame: &Outgoing, wake: &dyn Fn()) -> Pushed {
        let n = frame.wire_len();
        if must_cross_socket(frame) {
            self.room(LEN, wake);
            self.put(&MARKER.to_le_bytes());
            self.publish();
            return Pushed::Socket;
        }
        self.room(n, wake);
        for part in frame.parts() {
            self.put(part);
        }
        if self.publish() {
            Pushed::Wake
        } else {
            Pushed::Quiet
        }
    }

    /// Appends an item record (see [`Record::Item`]): `head` and the
    /// output's bytes. `None` (nothing written) if it is too large for the
    /// ring: the caller sends a `ToParent::Item` frame instead.
    pub(crate) fn push_item(
        &mut self,
        head: &[u8; ITEM_HEAD],
        output: &[u8],
        wake: &dyn Fn(),
    ) -> Option<Pushed> {
        let body = ITEM_HEAD + output.len();
        if LEN + body > LARGEST {
            return None;
        }
        self.room(LEN + body, wake);
        // The length word and the head in one copy (a put per part cost
        // its wrap and bounds checks three times per input).
        let mut first = [0u8; LEN + ITEM_HEAD];
        first[..LEN].copy_from_slice(&(ITEM | body as u32).to_le_bytes());
        first[LEN..].copy_from_slice(head);
        self.put(&first);
        self.put(output);
        Some(if self.publish() {
            Pushed::Wake
        } else {
            Pushed::Quiet
        })
    }

    /// The pool's side of the work ring: puts a `Run` frame into the ring,
    /// or a marker standing for it if the frame must cross the socket
    /// (descriptors, bulk strings, over a quarter of the ring) or the ring
    /// has no room for it. Never waits: the worker is untrusted and may
    /// stop reading. [`Offered::Broken`] if the worker's `head` is not a
    /// place it could have read to, or if not even a marker fits (the
    /// worker has left more frames unread than it could hold).
    pub(crate) fn offer(&mut self, frame: &Outgoing) -> Offered {
        // What the frame needs: itself and the marker reserve, or a marker.
        let ringable = !must_cross_socket(frame);
        let need = if ringable {
            frame.wire_len() as u64 + MARKER_RESERVE
        } else {
            LEN as u64
        };
        let mut free = self.free();
        if free.is_some_and(|f| f < need) {
            free = self.reload_free();
        }
        let Some(free) = free else {
            return Offered::Broken;
        };
        if ringable && free >= need {
            for part in frame.parts() {
                self.put(part);
            }
            return Offered::Ring {
                wake: self.publish(),
            };
        }
        if free < LEN as u64 {
            return Offered::Broken;
        }
        self.put(&MARKER.to_le_bytes());
        // The socket frame wakes the worker's reader, which wakes the
        // executor if it sleeps.
        self.publish();
        Offered::Socket
    }

    /// Free bytes by the worker's `head` as last loaded; `None` if that
    /// `head` is impossible.
    fn free(&self) -> Option<u64> {
        let used = self.tail.wrapping_sub(self.head);
        (used <= CAPACITY as u64).then(|| CAPACITY as u64 - used)
    }

    /// Loads the worker's `head` again (untrusted: it must lie between the
    /// last one and `tail`) and returns the free bytes.
    fn reload_free(&mut self) -> Option<u64> {
        let head = self.word(HEAD).load(Acquire);
        if head.wrapping_sub(self.head) > self.tail.wrapping_sub(self.head) {
            return None;
        }
        self.head = head;
        self.free()
    }

    /// Waits until `n` bytes are free. The parent frees space as it reads;
    /// if it is parked it is woken first.
    fn room(&mut self, n: usize, wake: &dyn Fn()) {
        if self.free().is_some_and(|f| f >= n as u64) {
            return;
        }
        loop {
            self.head = self.word(HEAD).load(Acquire);
            if self.free().is_some_and(|f| f >= n as u64) {
                return;
            }
            if self.word(PARKED).swap(0, SeqCst) == 1 {
                wake();
            }
            crate::sync::backoff();
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        let at = wrap(self.tail);
        let first = bytes.len().min(CAPACITY - at);
        self.map.write(self.base + DATA + at, &bytes[..first]);
        if first < bytes.len() {
            // Across the end: the rest at the start.
            self.map.write(self.base + DATA, &bytes[first..]);
        }
        self.tail += bytes.len() as u64;
    }

    /// Makes what was put visible; `true` if the parent was parked.
    fn publish(&mut self) -> bool {
        self.word(TAIL).store(self.tail, Release);
        fence(SeqCst);
        self.word(PARKED).load(Relaxed) == 1 && self.word(PARKED).swap(0, SeqCst) == 1
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
