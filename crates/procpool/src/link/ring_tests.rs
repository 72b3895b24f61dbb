//! The rings' unit tests: both ends in one process.

use super::*;
use std::time::Duration;

fn frame(body: &[u8]) -> Outgoing {
    Outgoing::new(body.to_vec(), Vec::<Vec<u8>>::new()).unwrap()
}

fn pair() -> (Reader, Writer) {
    let (reader, fd) = Reader::create().unwrap();
    (reader, Writer::open(fd).unwrap())
}

/// The pool's end and the worker's end of a work ring.
fn work_pair() -> (Writer, Reader) {
    let (_reply, fd) = Reader::create().unwrap();
    let w = Writer::open_work(fd.try_clone().unwrap()).unwrap();
    assert!(!w.reader_ready(), "no worker has opened it yet");
    let r = Reader::open_work(fd).unwrap();
    assert!(w.reader_ready(), "the worker said it reads it");
    (w, r)
}

#[test]
fn work_frames_keep_their_order_with_markers_for_the_socket() {
    let (mut w, mut r) = work_pair();
    assert_eq!(w.offer(&frame(b"one")), Offered::Ring { wake: false });
    assert_eq!(w.offer(&frame(&vec![2; LARGEST + 1])), Offered::Socket);
    assert_eq!(w.offer(&frame(b"three")), Offered::Ring { wake: false });
    assert_eq!(r.next(1 << 30).unwrap(), Some(Record::Frame));
    assert_eq!(r.body(), b"one");
    assert_eq!(r.next(1 << 30).unwrap(), Some(Record::Marker));
    r.skip_marker();
    assert_eq!(r.next(1 << 30).unwrap(), Some(Record::Frame));
    assert_eq!(r.body(), b"three");
    assert_eq!(r.next(1 << 30).unwrap(), None);
}

#[test]
fn the_two_rings_of_a_map_are_apart() {
    let (mut reply, fd) = Reader::create().unwrap();
    let mut work = Writer::open_work(fd.try_clone().unwrap()).unwrap();
    let mut worker_reply = Writer::open(fd.try_clone().unwrap()).unwrap();
    let mut worker_work = Reader::open_work(fd).unwrap();
    assert_eq!(work.offer(&frame(b"run")), Offered::Ring { wake: false });
    let never = || panic!("room is there");
    assert_eq!(worker_reply.push(&frame(b"note"), &never), Pushed::Quiet);
    assert_eq!(worker_work.next(1 << 20).unwrap(), Some(Record::Frame));
    assert_eq!(worker_work.body(), b"run");
    assert_eq!(reply.next(1 << 20).unwrap(), Some(Record::Frame));
    assert_eq!(reply.body(), b"note");
    assert_eq!(worker_work.next(1 << 20).unwrap(), None);
    assert_eq!(reply.next(1 << 20).unwrap(), None);
}

#[test]
fn a_parked_executor_is_woken_once_by_the_pool() {
    let (mut w, r) = work_pair();
    assert!(r.park());
    assert_eq!(w.offer(&frame(b"a")), Offered::Ring { wake: true });
    assert_eq!(w.offer(&frame(b"b")), Offered::Ring { wake: false });
    assert!(!r.park(), "work is waiting: do not sleep");
}

/// The pool never waits for the worker: a full ring sends on the
/// socket (a marker in the ring), and only a worker that left over a
/// thousand frames unread breaks it.
#[test]
fn a_full_work_ring_sends_on_the_socket_until_even_markers_run_out() {
    let (mut w, _r) = work_pair();
    let body = vec![5u8; 10_000];
    let mut ringed = 0;
    while w.offer(&frame(&body)) != Offered::Socket {
        ringed += 1;
        assert!(ringed < 100, "a 256 KiB ring holds no 100 of these");
    }
    assert!(ringed >= 20, "{ringed} frames of 10 kB in the ring");
    let mut markers = 1;
    let end = loop {
        match w.offer(&frame(&body)) {
            Offered::Socket => markers += 1,
            other => break other,
        }
        assert!(markers < 5_000, "markers never run out");
    };
    assert_eq!(end, Offered::Broken);
    assert!(markers >= 1000, "{markers} markers");
    // A worker that reads frees room again.
    let (mut w, mut r) = work_pair();
    while w.offer(&frame(&body)) != Offered::Socket {}
    for _ in 0..3 {
        assert_eq!(r.next(1 << 20).unwrap(), Some(Record::Frame));
    }
    assert_eq!(w.offer(&frame(&body)), Offered::Ring { wake: false });
}

#[test]
fn a_work_ring_read_past_its_end_is_broken() {
    let (mut w, r) = work_pair();
    let body = vec![5u8; 10_000];
    assert_eq!(w.offer(&frame(&body)), Offered::Ring { wake: false });
    // The worker claims to have read more than was written.
    r.word(HEAD).store(1 << 40, SeqCst);
    while w.offer(&frame(&body)) == (Offered::Ring { wake: false }) {}
    assert_eq!(w.offer(&frame(&body)), Offered::Broken);
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
    w.word(TAIL).store(CAPACITY as u64 * 3, SeqCst);
    assert!(r.next(1 << 20).unwrap_err().contains("broken"));
}
