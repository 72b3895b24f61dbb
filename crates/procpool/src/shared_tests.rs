//! Unit tests of `shared.rs`: the plain (outside a pool), inline (TCP) and
//! descriptor (local worker) encodings, and the checks on received files.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use procpool_wire::codec;
use serde::{Deserialize, Serialize};

use super::*;

const BIG: usize = INLINE_MAX + 1000;

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Job {
    name: String,
    blob: SharedBytes,
    xs: SharedSlice<f64>,
}

fn job(n: usize) -> Job {
    Job {
        name: "j".into(),
        blob: SharedBytes::from((0..n).map(|i| i as u8).collect::<Vec<_>>()),
        xs: SharedSlice::from((0..n).map(|i| i as f64 * 0.5).collect::<Vec<_>>()),
    }
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn types_are_send_sync_clone_shares() {
    assert_send_sync::<SharedBytes>();
    assert_send_sync::<SharedSlice<f64>>();
    let a = SharedBytes::from(vec![1, 2, 3]);
    let b = a.clone();
    assert_eq!(a.as_ptr(), b.as_ptr(), "a clone shares the buffer");
    let c = SharedBytes::copy_from_slice(&a);
    assert_ne!(a.as_ptr(), c.as_ptr());
    assert_eq!(a, c, "equal by content");
    assert_ne!(a, SharedBytes::from(vec![1, 2, 4]));
    assert_eq!(format!("{a:?}"), "SharedBytes { len: 3 }");
    assert_eq!(
        format!("{:?}", SharedSlice::<u32>::from(vec![9; 5])),
        "SharedSlice<u32> { len: 5 }"
    );
}

#[test]
fn outside_a_pool_plain_bytes_and_numbers() {
    let j = job(4);
    let json = serde_json::to_string(&j).unwrap();
    assert_eq!(
        json,
        r#"{"name":"j","blob":[0,1,2,3],"xs":[0.0,0.5,1.0,1.5]}"#
    );
    assert_eq!(serde_json::from_str::<Job>(&json).unwrap(), j);
    // Plain bincode: the same bytes as a serde_bytes field / a Vec<f64>.
    let big = job(BIG);
    let bytes = codec::encode(&big).unwrap();
    #[derive(Serialize)]
    struct Plain<'a> {
        name: &'a str,
        #[serde(with = "serde_bytes")]
        blob: &'a [u8],
        xs: &'a [f64],
    }
    let plain = codec::encode(&Plain {
        name: "j",
        blob: &big.blob,
        xs: &big.xs,
    })
    .unwrap();
    assert_eq!(bytes, plain);
    assert_eq!(codec::decode::<Job>(&bytes).unwrap(), big);
}

#[test]
fn inline_mode_writes_the_bytes() {
    let j = job(BIG);
    let (bytes, enc) = encode_with(Mode::Inline, u64::MAX, || codec::encode(&j));
    let bytes = bytes.unwrap();
    assert!(enc.files.is_empty() && enc.error.is_none());
    // Bytes, not numbers: the f64s take 8 bytes each.
    assert!(bytes.len() > BIG * 9, "{}", bytes.len());
    let (back, err) = decode_with(Mode::Inline, Vec::new(), u64::MAX, || {
        codec::decode::<Job>(&bytes)
    });
    assert!(err.is_none());
    assert_eq!(back.unwrap(), j);
}

/// What a peer process gets: copies of the frame's descriptors.
fn pass(enc: &Encoded) -> Vec<OwnedFd> {
    enc.files
        .iter()
        .map(|f| f.fd().try_clone_to_owned().unwrap())
        .collect()
}

fn inode(fd: &impl AsRawFd) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap()
}

#[test]
fn descriptor_mode_writes_a_reference_and_an_echo_passes_the_same_file() {
    let j = job(BIG);
    let (bytes, enc) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&j));
    let bytes = bytes.unwrap();
    assert!(bytes.len() < 64, "a reference, not {} bytes", bytes.len());
    assert_eq!(enc.files.len(), 2);
    let sent = inode(&enc.files[0].fd());
    let (back, err) = decode_with(Mode::Descriptors, pass(&enc), u64::MAX, || {
        codec::decode::<Job>(&bytes)
    });
    assert!(err.is_none(), "{err:?}");
    let back = back.unwrap();
    assert_eq!(back, j);
    assert_ne!(back.blob.as_ptr(), j.blob.as_ptr(), "mapped, not the heap");
    // The echo: the received value goes back as the same memory file.
    let (_, echo) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&back));
    assert_eq!(echo.files.len(), 2);
    assert_eq!(inode(&echo.files[0].fd()), sent);
    // Sending the original again reuses its sealed copy.
    let (_, again) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&j));
    assert!(Arc::ptr_eq(&again.files[0], &enc.files[0]));
}

#[test]
fn the_same_value_twice_is_one_file() {
    let b = SharedBytes::from(vec![3; BIG]);
    let pair = (b.clone(), b);
    let (bytes, enc) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&pair));
    assert_eq!(enc.files.len(), 1);
    let (back, err) = decode_with(Mode::Descriptors, pass(&enc), u64::MAX, || {
        codec::decode::<(SharedBytes, SharedBytes)>(&bytes.unwrap())
    });
    assert!(err.is_none());
    let back = back.unwrap();
    assert_eq!(back.0.as_ptr(), back.1.as_ptr());
}

#[test]
fn small_and_empty_values_travel_inline() {
    let v = (
        SharedBytes::from(vec![]),
        SharedSlice::<u32>::from(vec![1, 2]),
    );
    let (bytes, enc) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&v));
    assert!(enc.files.is_empty());
    let (back, _) = decode_with(Mode::Descriptors, Vec::new(), u64::MAX, || {
        codec::decode::<(SharedBytes, SharedSlice<u32>)>(&bytes.unwrap())
    });
    assert_eq!(back.unwrap(), v);
}

#[test]
fn a_sent_file_cannot_be_changed() {
    let b = SharedBytes::from(vec![5; BIG]);
    let (_, enc) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&b));
    let fd = pass(&enc).pop().unwrap();
    let mut f = std::fs::File::from(fd.try_clone().unwrap());
    assert!(f.write_all(b"x").is_err(), "write refused");
    assert!(f.set_len(1).is_err(), "shrink refused");
    assert!(f.set_len(BIG as u64 * 2).is_err(), "grow refused");
    // Reopened for writing through /proc: still sealed.
    let mut again = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap();
    assert!(again.write_all(b"x").is_err());
    assert_eq!(&b[..], &vec![5; BIG][..]);
    // Seals cannot be removed or added (F_SEAL_SEAL).
    assert!(
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::F_SEAL_FUTURE_WRITE)
        )
        .is_err()
    );
}

fn decode_bad(bytes: &[u8], fds: Vec<OwnedFd>) -> Option<SharedError> {
    let (r, err) = decode_with(Mode::Descriptors, fds, u64::MAX, || {
        codec::decode::<SharedBytes>(bytes)
    });
    assert!(r.is_err());
    err
}

fn reference(index: u32, len: u64) -> Vec<u8> {
    codec::encode(&RefOut::File { index, len }).unwrap()
}

#[test]
fn bad_references_are_refused() {
    let b = SharedBytes::from(vec![1; BIG]);
    let (_, enc) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&b));
    // No such descriptor.
    assert!(matches!(
        decode_bad(&reference(1, BIG as u64), pass(&enc)),
        Some(SharedError::BadReference(_))
    ));
    // The wrong length.
    assert!(matches!(
        decode_bad(&reference(0, BIG as u64 + 1), pass(&enc)),
        Some(SharedError::BadReference(_))
    ));
    // Not a memory file: a pipe.
    let (r, _w) = nix::unistd::pipe().unwrap();
    assert!(matches!(
        decode_bad(&reference(0, 0), vec![r]),
        Some(SharedError::BadReference(_))
    ));
    // A memory file without the seals (a tmpfs file).
    let path = format!("/dev/shm/procpool-test-{}", std::process::id());
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&vec![1; BIG]).unwrap();
    std::fs::remove_file(&path).unwrap();
    let err = decode_bad(&reference(0, BIG as u64), vec![OwnedFd::from(f)]);
    assert!(
        matches!(&err, Some(SharedError::BadReference(m)) if m.contains("sealed")),
        "{err:?}"
    );
    // Over the limit: refused before the descriptor is looked at.
    let (r, err) = decode_with(Mode::Descriptors, pass(&enc), 100, || {
        codec::decode::<SharedBytes>(&reference(0, BIG as u64))
    });
    assert!(r.is_err());
    assert!(matches!(err, Some(SharedError::TooLarge { .. })), "{err:?}");
}

#[test]
fn a_slice_of_partial_elements_is_refused() {
    let b = SharedBytes::from(vec![1; BIG + 3]);
    let (bytes, enc) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&b));
    let (r, err) = decode_with(Mode::Descriptors, pass(&enc), u64::MAX, || {
        codec::decode::<SharedSlice<f64>>(&bytes.unwrap())
    });
    assert!(r.is_err());
    assert!(matches!(err, Some(SharedError::BadReference(_))), "{err:?}");
}

#[test]
fn over_the_limit_fails_to_encode() {
    let j = job(BIG);
    let (r, enc) = encode_with(Mode::Descriptors, BIG as u64, || codec::encode(&j));
    assert!(r.is_err());
    assert!(
        matches!(enc.error, Some(SharedError::TooLarge { limit, .. }) if limit == BIG as u64),
        "{:?}",
        enc.error
    );
}

#[test]
fn the_context_ends_with_the_call() {
    let b = SharedBytes::from(vec![2; BIG]);
    let _ = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&b));
    // Plain again afterwards.
    assert_eq!(codec::encode(&b).unwrap().len(), BIG + 3);
    // Also after a panic inside the call.
    let r = std::panic::catch_unwind(|| encode_with(Mode::Inline, 0, || panic!("boom")));
    assert!(r.is_err());
    assert!(encode_mode().is_none());
}

#[test]
fn one_frame_holds_at_most_max_fds_files() {
    let blobs: Vec<SharedBytes> = (0..=MAX_FDS)
        .map(|k| SharedBytes::from(vec![k as u8; BIG]))
        .collect();
    // The limit exactly, and the same value many times over (one file).
    let at_limit = &blobs[..MAX_FDS];
    let (r, enc) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&at_limit));
    assert!(r.is_ok() && enc.error.is_none());
    assert_eq!(enc.files.len(), MAX_FDS);
    let same = vec![blobs[0].clone(); 2 * MAX_FDS];
    let (r, enc) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&same));
    assert!(r.is_ok() && enc.files.len() == 1);
    // One more: refused before its file is made.
    let (r, enc) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&blobs));
    assert!(r.is_err());
    assert_eq!(enc.error, Some(SharedError::TooMany { limit: MAX_FDS }));
    assert!(enc.error.unwrap().to_string().contains("253"));
    assert!(
        blobs[MAX_FDS].0.inner.sealed.get().is_none(),
        "the 254th file was not made"
    );
    // A value already in the frame still fits when the frame is full.
    let mut again = at_limit.to_vec();
    again.push(blobs[7].clone());
    let (r, enc) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&again));
    assert!(r.is_ok() && enc.files.len() == MAX_FDS);
}

#[test]
fn nested_calls_keep_their_own_state() {
    let b = SharedBytes::from(vec![3; BIG]);
    let c = SharedBytes::from(vec![4; BIG]);
    // An outer call with state: inner calls with none and with their own
    // leave it as it was.
    let (r, outer) = encode_with(Mode::Descriptors, u64::MAX, || {
        let first = codec::encode(&b);
        let (_, light) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&1u64));
        assert!(light.files.is_empty() && light.error.is_none());
        let (_, heavy) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&c));
        assert_eq!(heavy.files.len(), 1);
        assert!(Arc::ptr_eq(
            &heavy.files[0],
            c.0.inner.sealed.get().unwrap()
        ));
        first
    });
    assert!(r.is_ok());
    assert_eq!(outer.files.len(), 1);
    assert!(Arc::ptr_eq(
        &outer.files[0],
        b.0.inner.sealed.get().unwrap()
    ));
    // An outer call that makes its state only after an inner one with
    // state has returned.
    let (_, outer) = encode_with(Mode::Descriptors, u64::MAX, || {
        let (_, inner) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&c));
        assert_eq!(inner.files.len(), 1);
        codec::encode(&b)
    });
    assert_eq!(outer.files.len(), 1);
    assert!(Arc::ptr_eq(
        &outer.files[0],
        b.0.inner.sealed.get().unwrap()
    ));
    // Nothing left behind.
    assert!(encode_mode().is_none());
    assert!(CONTEXT.with(|c| c.borrow().is_none()));
}

#[test]
fn a_decode_run_gives_each_payload_what_decode_with_would() {
    let j = job(BIG);
    let (by_ref, enc) = encode_with(Mode::Descriptors, u64::MAX, || codec::encode(&j));
    let by_ref = by_ref.unwrap();
    assert_eq!(
        enc.files.len(),
        2,
        "references to files the run does not have"
    );
    let plain = codec::encode(&7u64).unwrap();
    let alone = |bytes: &[u8]| {
        let (r, e) = decode_with(Mode::Descriptors, Vec::new(), u64::MAX, || {
            codec::decode::<Job>(bytes).map(|_| ())
        });
        (r.map_err(|e| e.to_string()), e.map(|e| e.to_string()))
    };
    let expected = alone(&by_ref);
    assert!(expected.1.is_some(), "a bad reference: {expected:?}");
    let mut run = DecodeRun::new(Mode::Descriptors, u64::MAX);
    let (v, e) = run.decode(|| codec::decode::<u64>(&plain));
    assert_eq!((v.unwrap(), e.is_none()), (7, true));
    for _ in 0..2 {
        // Each bad payload has its own error; the one after it none.
        let (r, e) = run.decode(|| codec::decode::<Job>(&by_ref).map(|_| ()));
        let got = (r.map_err(|e| e.to_string()), e.map(|e| e.to_string()));
        assert_eq!(got, expected);
        let (v, e) = run.decode(|| codec::decode::<u64>(&plain));
        assert_eq!((v.unwrap(), e.is_none()), (7, true));
    }
    drop(run);
    assert!(LIGHT.get().is_none(), "the run's state is gone with it");
}

#[test]
fn a_task_run_gives_each_phase_what_decode_with_and_encode_with_would() {
    let big = SharedBytes::from(vec![7u8; INLINE_MAX + 1]);
    let small = SharedBytes::from(vec![1u8; 10]);
    let alone = |v: &SharedBytes| {
        let mut out = Vec::new();
        let (r, e) = encode_with(Mode::Descriptors, u64::MAX, || {
            codec::encode_into(v, &mut out)
        });
        (r.is_ok(), e.files.len(), e.error, out)
    };
    let mut run = TaskRun::new(Mode::Descriptors, u64::MAX);
    for v in [&big, &small, &big, &big, &small] {
        let mut out = Vec::new();
        let (r, e) = run.encode(|| codec::encode_into(v, &mut out));
        assert_eq!((r.is_ok(), e.files.len(), e.error, out), alone(v));
        // Between phases (while the task runs) no state is set.
        assert!(LIGHT.get().is_none());
        assert!(CONTEXT.with(|c| c.borrow().is_none()));
        let (d, e) = run.decode(|| codec::decode::<u64>(&codec::encode(&7u64).unwrap()));
        assert_eq!((d.unwrap(), e.is_none()), (7, true));
        assert!(LIGHT.get().is_none());
    }
    // Over its limit: the phase's own error, the next phase none.
    let mut tight = TaskRun::new(Mode::Descriptors, 100);
    let (_, e) = tight.encode(|| codec::encode_into(&big, &mut Vec::new()));
    assert!(
        matches!(e.error, Some(SharedError::TooLarge { .. })),
        "{e:?}"
    );
    let (_, e) = tight.encode(|| codec::encode_into(&small, &mut Vec::new()));
    assert!(e.error.is_none() && e.files.is_empty());
    // Inside another encode: each phase has its own state and the outer
    // one's is back after it.
    let ((), outer) = encode_with(Mode::Descriptors, u64::MAX, || {
        let _ = codec::encode(&big).unwrap();
        let mut inner = TaskRun::new(Mode::Descriptors, u64::MAX);
        let (_, e) = inner.encode(|| codec::encode_into(&big, &mut Vec::new()));
        assert_eq!(e.files.len(), 1);
    });
    assert_eq!(outer.files.len(), 1, "the outer encode kept its own file");
    assert!(LIGHT.get().is_none());
}
