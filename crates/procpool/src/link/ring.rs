//! The reply ring: a spawned worker's `Started` and `Finished` notes in
//! shared memory instead of one socket write each.
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

use procpool_wire::frame::Outgoing;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use crate::sync::fence;
use crate::sys::SharedMap;

mod records;

#[cfg(feature = "remote")]
pub(crate) use records::put_record;
pub(crate) use records::{ItemHead, records};

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
const DATA: usize = 4096;
const SIZE: usize = DATA + CAPACITY;
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
    /// The reading end of a ring another process made (a worker's keeper
    /// reads its worker's ring).
    #[cfg(feature = "remote")]
    pub(crate) fn open(fd: OwnedFd) -> io::Result<Reader> {
        let map = SharedMap::open(fd, SIZE)?;
        let head = map.atomic(HEAD).load(Acquire);
        Ok(Reader {
            map,
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
    /// way, a run of them copied end to end into one buffer). A marker
    /// stays in place until [`Reader::skip_marker`].
    #[cfg(any(test, feature = "remote"))]
    pub(crate) fn next_into(
        &mut self,
        max_frame: u32,
        out: &mut Vec<u8>,
    ) -> Result<Option<Record>, String> {
        if self.tail == self.head {
            self.tail = self.map.atomic(TAIL).load(Acquire);
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
        self.tail = self.map.atomic(TAIL).load(Acquire);
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
        self.map.atomic(HEAD).store(self.head, Release);
    }

    fn copy_out(&self, pos: u64, out: &mut [u8]) {
        let at = wrap(pos);
        let first = out.len().min(CAPACITY - at);
        if first == out.len() {
            // Not across the end (nearly always): one copy.
            self.map.read(DATA + at, out);
            return;
        }
        let (a, b) = out.split_at_mut(first);
        self.map.read(DATA + at, a);
        self.map.read(DATA, b);
    }

    /// Whether the worker has published records not read yet.
    pub(crate) fn has_data(&self) -> bool {
        self.map.atomic(TAIL).load(Acquire) != self.head
    }

    /// Call before blocking on the socket: `true` if the ring is still
    /// empty, and the worker will wake us when it publishes.
    pub(crate) fn park(&self) -> bool {
        self.map.atomic(PARKED).store(1, Relaxed);
        fence(SeqCst);
        if self.map.atomic(TAIL).load(Acquire) != self.head {
            self.unpark();
            return false;
        }
        true
    }

    /// Awake again: publishing needs no wake-up.
    pub(crate) fn unpark(&self) {
        self.map.atomic(PARKED).store(0, SeqCst);
    }
}

/// The worker's end (used by its executor thread only).
pub(crate) struct Writer {
    map: SharedMap,
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

impl Writer {
    /// Maps the ring the pool passed.
    pub(crate) fn open(fd: OwnedFd) -> io::Result<Writer> {
        let map = SharedMap::open(fd, SIZE)?;
        let tail = map.atomic(TAIL).load(Acquire);
        let head = map.atomic(HEAD).load(Acquire);
        Ok(Writer { map, tail, head })
    }

    /// Appends `frame` (or a marker standing for it), waiting while the
    /// ring is full; `wake` is called if the parent must be woken to make
    /// room.
    pub(crate) fn push(&mut self, frame: &Outgoing, wake: &dyn Fn()) -> Pushed {
        let n = frame.wire_len();
        // A frame with descriptors (shared payloads) or bulk bytes must
        // cross the socket: the ring carries one frame's bytes only.
        if n > LARGEST || !frame.fds().is_empty() || !frame.bulk().is_empty() {
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

    /// Waits until `n` bytes are free. The parent frees space as it reads;
    /// if it is parked it is woken first.
    fn room(&mut self, n: usize, wake: &dyn Fn()) {
        let fits = |head: u64, tail: u64| {
            let used = tail.wrapping_sub(head);
            used <= CAPACITY as u64 && CAPACITY as u64 - used >= n as u64
        };
        if fits(self.head, self.tail) {
            return;
        }
        loop {
            self.head = self.map.atomic(HEAD).load(Acquire);
            if fits(self.head, self.tail) {
                return;
            }
            if self.map.atomic(PARKED).swap(0, SeqCst) == 1 {
                wake();
            }
            crate::sync::backoff();
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        let at = wrap(self.tail);
        let first = bytes.len().min(CAPACITY - at);
        self.map.write(DATA + at, &bytes[..first]);
        if first < bytes.len() {
            // Across the end: the rest at the start.
            self.map.write(DATA, &bytes[first..]);
        }
        self.tail += bytes.len() as u64;
    }

    /// Makes what was put visible; `true` if the parent was parked.
    fn publish(&mut self) -> bool {
        self.map.atomic(TAIL).store(self.tail, Release);
        fence(SeqCst);
        self.map.atomic(PARKED).load(Relaxed) == 1 && self.map.atomic(PARKED).swap(0, SeqCst) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(body: &[u8]) -> Outgoing {
        Outgoing::new(body.to_vec(), Vec::<Vec<u8>>::new()).unwrap()
    }

    fn pair() -> (Reader, Writer) {
        let (reader, fd) = Reader::create().unwrap();
        (reader, Writer::open(fd).unwrap())
    }

    #[test]
    fn records_come_out_in_order_across_the_wrap() {
        let (mut r, mut w) = pair();
        let no_wake = || panic!("the reader keeps up");
        let mut sent = 0u32;
        for round in 0..200u32 {
            for _ in 0..10 {
                let body = vec![(sent % 251) as u8; 1000 + (sent as usize * 7) % 3000];
                assert_eq!(w.push(&frame(&body), &no_wake), Pushed::Quiet);
                sent += 1;
            }
            let mut got = 0;
            while let Some(rec) = r.next(1 << 20).unwrap() {
                assert_eq!(rec, Record::Frame);
                let n = round * 10 + got;
                assert_eq!(r.body().len(), 1000 + (n as usize * 7) % 3000);
                assert!(r.body().iter().all(|&b| b == (n % 251) as u8));
                got += 1;
            }
            assert_eq!(got, 10);
        }
    }

    #[test]
    fn a_parked_reader_is_woken_once() {
        let (r, mut w) = pair();
        assert!(r.park());
        let never = || panic!("room is there");
        assert_eq!(w.push(&frame(b"a"), &never), Pushed::Wake);
        assert_eq!(w.push(&frame(b"b"), &never), Pushed::Quiet);
        assert!(!r.park(), "data is waiting: do not block");
    }

    #[test]
    fn large_notes_leave_a_marker() {
        let (mut r, mut w) = pair();
        let never = || panic!("room is there");
        assert_eq!(
            w.push(&frame(&vec![1; LARGEST + 1]), &never),
            Pushed::Socket
        );
        assert_eq!(w.push(&frame(b"after"), &never), Pushed::Quiet);
        assert_eq!(r.next(1 << 30).unwrap(), Some(Record::Marker));
        assert_eq!(r.next(1 << 30).unwrap(), Some(Record::Marker), "stays");
        r.skip_marker();
        assert_eq!(r.next(1 << 30).unwrap(), Some(Record::Frame));
        assert_eq!(r.body(), b"after");
        assert_eq!(r.next(1 << 30).unwrap(), None);
    }

    #[test]
    fn a_full_ring_waits_for_the_reader() {
        let (mut r, mut w) = pair();
        let body = vec![7u8; 10_000];
        let writer = std::thread::spawn(move || {
            for _ in 0..100 {
                w.push(&frame(&body), &|| {});
            }
        });
        let mut got = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got < 100 {
            assert!(std::time::Instant::now() < deadline, "writer stuck");
            match r.next(1 << 20).unwrap() {
                Some(Record::Frame) => {
                    assert_eq!(r.body().len(), 10_000);
                    got += 1;
                }
                Some(other) => panic!("no {other:?} expected"),
                None => std::thread::sleep(Duration::from_micros(50)),
            }
        }
        writer.join().unwrap();
    }

    #[test]
    fn item_records_keep_their_place_among_frames() {
        let (mut r, mut w) = pair();
        let never = || panic!("room is there");
        let head = [9u8; ITEM_HEAD];
        assert_eq!(w.push(&frame(b"started"), &never), Pushed::Quiet);
        assert_eq!(w.push_item(&head, b"out", &never), Some(Pushed::Quiet));
        assert_eq!(w.push(&frame(b"finished"), &never), Pushed::Quiet);
        assert_eq!(w.push_item(&head, &vec![0; LARGEST], &never), None);
        let mut run = Vec::new();
        assert_eq!(r.next_into(1 << 20, &mut run).unwrap(), Some(Record::Frame));
        assert_eq!(r.next_into(1 << 20, &mut run).unwrap(), Some(Record::Item));
        assert_eq!(r.next_into(1 << 20, &mut run).unwrap(), Some(Record::Frame));
        assert_eq!(r.next_into(1 << 20, &mut run).unwrap(), None);
        let mut want = b"started".to_vec();
        want.extend_from_slice(&head);
        want.extend_from_slice(b"out");
        want.extend_from_slice(b"finished");
        assert_eq!(run, want, "bodies end to end, in order");
    }

    #[test]
    fn an_item_record_shorter_than_its_head_is_a_protocol_error() {
        let (mut r, mut w) = pair();
        w.put(&(ITEM | 3).to_le_bytes());
        w.put(b"abc");
        w.publish();
        assert!(
            r.next(1 << 20)
                .unwrap_err()
                .contains("item record of 3 bytes")
        );
    }

    #[test]
    fn a_lying_length_is_a_protocol_error() {
        let (mut r, mut w) = pair();
        w.put(&(100u32).to_le_bytes());
        w.put(b"short");
        w.publish();
        assert!(r.next(1 << 20).unwrap_err().contains("broken"));
        let (mut r, w) = pair();
        w.map.atomic(TAIL).store(CAPACITY as u64 * 3, SeqCst);
        assert!(r.next(1 << 20).unwrap_err().contains("broken"));
    }
}
