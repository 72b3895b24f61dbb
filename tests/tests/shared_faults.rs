//! Workers that misuse shared payloads (the scriptable bad worker): a
//! result with a descriptor it does not declare, a reference to a
//! descriptor the frame does not carry, a descriptor that is not a memory
//! file, a memory file without seals. Each fails only its task with
//! `TaskError::Protocol`, closes every descriptor, maps nothing, gets the
//! worker killed and replaced (as `Protocol` says), and the pool goes on. Local sockets only (descriptors cannot cross TCP), so
//! `over_tcp.rs` does not include this file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use procpool::{ProcessPool, SharedBytes, TaskError, WorkerCommand};
use procpool_e2e::{fd_count, in_own_process};
use procpool_tasks::{EchoShared, Square};

/// A fresh directory for the bad worker's spawn ordinals, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "procpool-shared-faults-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The bad worker's tmpfs file, removed on drop (also when the test fails).
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The pool's only worker misbehaves on its first task in `mode`; later
/// spawns are the real test worker.
fn bad_pool(mode: &str, scratch: &Scratch, file: &str) -> ProcessPool {
    let worker = WorkerCommand::program(env!("CARGO_BIN_EXE_procpool-bad-worker"))
        .env("BAD_MODE", mode)
        .env(
            "BAD_GOOD_WORKER",
            env!("CARGO_BIN_EXE_procpool-test-worker"),
        )
        .env("BAD_DIR", &scratch.0)
        .env("BAD_FIRST_BAD", "1")
        .env("BAD_PIDFILE", file);
    procpool_e2e::builder()
        .worker(worker)
        .workers(1)
        .build()
        .unwrap()
}

/// Runs the first task (`square` or a small `echo_shared`) on a bad worker
/// in `mode`, expects `Protocol` mentioning `expect`, then checks that the
/// bad worker is gone, that the pool still works, that this process's descriptors are back where they
/// were and that nothing of the worker's is mapped here.
fn misuse(mode: &str, square: bool, expect: &str) {
    let scratch = Scratch::new(mode);
    let file = format!("/dev/shm/procpool-bad-{}-{mode}", std::process::id());
    let _removed = Removed(file.clone());
    let pool = bad_pool(mode, &scratch, &file);
    let bad = pool.worker_pids();
    let fds = fd_count();
    let err = if square {
        pool.submit(Square(7)).unwrap().result().unwrap_err()
    } else {
        let small = SharedBytes::from(vec![5; 100]);
        pool.submit(EchoShared(small))
            .unwrap()
            .result()
            .unwrap_err()
    };
    match &err {
        TaskError::Protocol { message, .. } => {
            assert!(message.contains(expect), "`{message}` lacks `{expect}`")
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    // A worker that broke the protocol is killed and replaced (as
    // `TaskError::Protocol` says), by a real one here.
    assert_eq!(
        procpool_e2e::wait_gone(&bad, Duration::from_secs(10)),
        Vec::<u32>::new(),
        "the bad worker still runs"
    );
    for i in 0..4u64 {
        assert_eq!(pool.submit(Square(i)).unwrap().result().unwrap(), i * i);
    }
    let blob = SharedBytes::from(vec![9; 1 << 20]);
    assert_eq!(
        pool.submit(EchoShared(blob.clone()))
            .unwrap()
            .result()
            .unwrap(),
        blob
    );
    // Its sealed copy is ours until it is dropped.
    drop(blob);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fd_count() != fds {
        assert!(
            Instant::now() < deadline,
            "descriptors: {fds} before, {} after: {:?}",
            fd_count(),
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .map(|e| std::fs::read_link(e.unwrap().path()).unwrap_or_default())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        !maps.contains(&file) && !maps.contains("/dev/null"),
        "the worker's descriptor was mapped"
    );
    procpool_e2e::still_works(&pool);
}

#[test]
fn a_result_with_an_undeclared_descriptor_is_a_protocol_error() {
    in_own_process(Duration::from_secs(60), || {
        misuse("shared_extra_fd", true, "descriptors")
    });
}

#[test]
fn a_reference_to_a_missing_descriptor_is_a_protocol_error() {
    in_own_process(Duration::from_secs(60), || {
        misuse("shared_bogus_ref", false, "bad shared-payload reference")
    });
}

#[test]
fn a_descriptor_that_is_not_a_memory_file_is_a_protocol_error() {
    in_own_process(Duration::from_secs(60), || {
        misuse("shared_not_memfd", false, "not a memory file")
    });
}

#[test]
fn a_memory_file_without_seals_is_a_protocol_error() {
    in_own_process(Duration::from_secs(60), || {
        misuse("shared_unsealed", false, "not sealed")
    });
}

#[test]
fn bulk_bytes_past_the_frame_cap_are_refused_before_reading() {
    in_own_process(Duration::from_secs(60), || {
        misuse("bulk_over_cap", true, "frame cap")
    });
}

#[test]
fn a_bulk_string_the_result_has_no_place_for_is_a_protocol_error() {
    in_own_process(Duration::from_secs(60), || {
        misuse("bulk_misplaced", true, "was not read there")
    });
}

#[test]
fn bulk_bytes_of_a_result_dropped_for_its_generation_are_not_the_next_ones() {
    in_own_process(Duration::from_secs(60), || {
        let scratch = Scratch::new("bulk_stale");
        let file = format!("/dev/shm/procpool-bad-{}-bulk_stale", std::process::id());
        let _removed = Removed(file.clone());
        let pool = bad_pool("bulk_stale", &scratch, &file);
        // The stale result (and its 100 KiB) is dropped; the right one
        // that follows is the task's.
        assert_eq!(pool.submit(Square(7)).unwrap().result().unwrap(), 49);
        procpool_e2e::still_works(&pool);
    });
}
