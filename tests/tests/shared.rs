//! Shared payloads (`SharedBytes`, `SharedSlice`) end to end, on real
//! workers: results, sealing, size limits, a worker dying with payloads
//! open. Included by `over_tcp.rs`, so every test also runs with the
//! workers dialing over TCP (where the same types travel inline).

use std::time::Duration;

use procpool::{Executor, SharedBytes, SharedSlice, SubmitError, TaskError, Transport};
use procpool_e2e::{
    both_pools, builder, fd_count, in_own_process, still_works, test_worker, transport, watchdog,
};
use procpool_tasks::drill::{AbortHoldingShared, EchoSharedMany, MakeSharedMany, TamperShared};
use procpool_tasks::{Echo, EchoShared, MakeShared, SumShared};

fn results(pool: &impl Executor) {
    let blob = SharedBytes::from(
        (0..(16u32 << 20))
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let back = pool
        .submit(EchoShared(blob.clone()))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(back, blob);
    // Small ones (inline even to a local worker) and empty ones.
    for n in [0usize, 1, 100, 20_000] {
        let b = SharedBytes::from(vec![9; n]);
        assert_eq!(
            pool.submit(EchoShared(b.clone()))
                .unwrap()
                .result()
                .unwrap(),
            b
        );
    }
    let xs = SharedSlice::from((0..1_000_000).map(f64::from).collect::<Vec<_>>());
    let sum = pool
        .submit(SumShared(xs.clone()))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(sum, xs.iter().sum::<f64>());
    // An output made in the worker.
    let made = pool.submit(MakeShared(300_000)).unwrap().result().unwrap();
    assert_eq!(made.len(), 300_000);
    assert_eq!(made[299_999], 299_999.0);
    // Outputs made in the worker from a packed chunk's small inputs, large
    // ones (memory files to a local parent) between small ones: each
    // input's output has its own.
    let sizes = [0u64, 10, 300_000, 5, 200_000, 100_000, 3];
    let outs: Vec<_> = pool
        .map(sizes.iter().map(|&n| MakeShared(n)))
        .chunksize(sizes.len())
        .map(|r| r.unwrap())
        .collect();
    for (n, out) in sizes.iter().zip(&outs) {
        assert_eq!(out.len() as u64, *n);
        assert!(out.iter().enumerate().all(|(i, &x)| x == i as f64), "{n}");
    }
    // Many at once, through a chunked map.
    let tasks: Vec<_> = (0..40)
        .map(|i| EchoShared(SharedBytes::from(vec![i as u8; 100_000])))
        .collect();
    let expected: Vec<_> = tasks.iter().map(|t| t.0.clone()).collect();
    let got: Vec<_> = pool.map(tasks).chunksize(8).map(|r| r.unwrap()).collect();
    assert_eq!(got, expected);
    // The echo can be sent again (its memory file is reused).
    assert_eq!(
        pool.submit(EchoShared(back.clone()))
            .unwrap()
            .result()
            .unwrap(),
        blob
    );
}
both_pools!(same_results_on_both_pools, 2, results);

/// The system's shared memory (`Shmem` of /proc/meminfo), in KiB.
fn shmem_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Shmem:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_worker_cannot_change_what_it_was_sent() {
    watchdog(Duration::from_secs(60), || {
        let pool = builder().worker(test_worker!()).workers(1).build().unwrap();
        let blob = SharedBytes::from(vec![42; 1 << 20]);
        let attempts = pool
            .submit(TamperShared(blob.clone()))
            .unwrap()
            .result()
            .unwrap();
        assert!(
            attempts.iter().all(|a| a.starts_with("refused")),
            "{attempts:#?}"
        );
        if transport() == Transport::Local {
            // The worker found the memory file and every change was refused.
            assert!(attempts.len() >= 3, "{attempts:#?}");
        } else {
            // Over TCP the bytes came inline: there is no file to change.
            assert!(attempts.is_empty(), "{attempts:#?}");
        }
        assert!(blob.iter().all(|&b| b == 42));
        // The worker's echo is still the parent's bytes.
        assert_eq!(
            pool.submit(EchoShared(blob.clone()))
                .unwrap()
                .result()
                .unwrap(),
            blob
        );
    });
}

/// A packed chunk whose inputs' outputs are shared payloads in memory
/// files: each such output crosses the socket as an `Item` frame (with its
/// descriptors) and leaves a marker in the worker's ring. The parent once
/// stopped reading the ring at that marker (it skipped only a note's), so
/// the chunk's later inputs and its end were never heard of: the map, or
/// the pool's shutdown, hung.
#[test]
fn a_chunk_with_outputs_in_memory_files_delivers_all_and_ends() {
    for sizes in [
        vec![300_000u64, 5],
        vec![5, 300_000],
        vec![300_000, 200_000],
        vec![300_000, 5, 200_000, 7, 8],
    ] {
        watchdog(Duration::from_secs(20), move || {
            let pool = builder().worker(test_worker!()).workers(1).build().unwrap();
            let outs: Vec<_> = pool
                .map(sizes.iter().map(|&n| MakeShared(n)))
                .chunksize(sizes.len())
                .collect();
            for (n, out) in sizes.iter().zip(&outs) {
                assert_eq!(out.as_ref().unwrap().len() as u64, *n, "{sizes:?}");
            }
            still_works(&pool);
            // The chunk ended: the pool shuts down (within the watchdog).
            drop(pool);
        });
    }
}

#[test]
fn payloads_over_the_limit_are_refused_before_anything_is_made() {
    // It counts this process's descriptors: other tests must not run.
    in_own_process(Duration::from_secs(60), || {
        let pool = builder()
            .worker(test_worker!())
            .workers(1)
            .max_frame_bytes(1 << 20)
            .build()
            .unwrap();
        still_works(&pool);
        let fds = fd_count();
        let big = SharedBytes::from(vec![1; 2 << 20]);
        match pool.submit(EchoShared(big)) {
            Err(e @ SubmitError::Encode { .. }) => {
                assert!(e.to_string().contains("max_frame_bytes"), "{e}")
            }
            other => panic!("expected an encode error at submit, got {other:?}"),
        }
        assert_eq!(fd_count(), fds, "no memory file was made");
        // An output over the limit: a typed error on the future.
        match pool.submit(MakeShared(1 << 18)).unwrap().result() {
            Err(TaskError::Encode { message, .. }) => {
                assert!(message.contains("max_frame_bytes"), "{message}")
            }
            other => panic!("expected an encode error, got {other:?}"),
        }
        // Under the limit still works.
        let ok = SharedBytes::from(vec![3; 512 << 10]);
        assert_eq!(
            pool.submit(EchoShared(ok.clone()))
                .unwrap()
                .result()
                .unwrap(),
            ok
        );
        still_works(&pool);
    });
}

#[test]
fn a_worker_dying_with_shared_payloads_leaks_nothing() {
    in_own_process(Duration::from_secs(60), || {
        let pool = builder().worker(test_worker!()).workers(1).build().unwrap();
        // Warm up: the worker and its ring exist before the baseline.
        let warm = SharedBytes::from(vec![1; 1 << 20]);
        assert_eq!(
            pool.submit(EchoShared(warm.clone()))
                .unwrap()
                .result()
                .unwrap(),
            warm
        );
        drop(warm);
        let fds = fd_count();
        let before = fd_links();
        let shm = shmem_kib();
        {
            let held = SharedBytes::from(vec![7; 64 << 20]);
            let err = pool
                .submit(AbortHoldingShared(held.clone()))
                .unwrap()
                .result()
                .unwrap_err();
            assert!(matches!(err, TaskError::WorkerDied { .. }), "{err:?}");
            // The echo path still works with the same value.
            assert_eq!(
                pool.submit(EchoShared(held.clone()))
                    .unwrap()
                    .result()
                    .unwrap(),
                held
            );
        }
        still_works(&pool);
        // Back where we were: no descriptor more, shared memory within a
        // quarter of the payload (other processes on the machine use some).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (now_fds, now_shm) = (fd_count(), shmem_kib());
            // (At most as many: a descriptor the warm-up left open, such
            // as a cached buffer's, may close meanwhile; fds 12 -> 11 seen.)
            if now_fds <= fds && now_shm < shm + 16 * 1024 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "fds {fds} -> {now_fds}, Shmem {shm} KiB -> {now_shm} KiB; descriptors before: \
                 {before:?}, now: {:?}",
                fd_links()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

#[test]
fn a_plain_serde_bytes_echo_is_unchanged() {
    watchdog(Duration::from_secs(60), || {
        let pool = builder().worker(test_worker!()).workers(1).build().unwrap();
        let v: Vec<u8> = (0..(1u32 << 20)).map(|i| i as u8).collect();
        assert_eq!(
            pool.submit(Echo(v.clone()))
                .unwrap()
                .result()
                .unwrap()
                .into_vec(),
            v
        );
    });
}

/// `n` shared payloads of 20 KiB (over `INLINE_MAX`: each is a memory
/// file with a descriptor of its own), payload `k` filled with `k + seed`.
fn many(n: usize, seed: u8) -> Vec<SharedBytes> {
    (0..n)
        .map(|k| SharedBytes::from(vec![(k as u8).wrapping_add(seed); 20 << 10]))
        .collect()
}

/// One `sendmsg` carries at most 253 descriptors (Linux's `SCM_MAX_FD`):
/// a chunk whose inputs hold more is cut into frames that fit, a single
/// input that holds more is refused at submit, a result that holds more
/// fails only its future, and the worker goes on. Over TCP the bytes
/// travel inline and every one of these just works.
#[test]
fn more_shared_payloads_than_one_frame_can_carry() {
    watchdog(Duration::from_secs(120), || {
        let local = transport() == Transport::Local;
        let pool = builder().worker(test_worker!()).workers(1).build().unwrap();
        still_works(&pool);
        let pids = pool.worker_pids();
        // A chunk of 300 inputs with one payload each.
        let tasks: Vec<_> = many(300, 0).into_iter().map(EchoShared).collect();
        let expected: Vec<_> = tasks.iter().map(|t| t.0.clone()).collect();
        let got: Vec<_> = pool.map(tasks).chunksize(300).map(|r| r.unwrap()).collect();
        assert!(got == expected, "the 300-input chunk came back different");
        // Two inputs of 200 payloads each in one chunk.
        let pair = vec![EchoSharedMany(many(200, 1)), EchoSharedMany(many(200, 2))];
        let expected: Vec<_> = pair.iter().map(|t| t.0.clone()).collect();
        let got: Vec<_> = pool.map(pair).chunksize(2).map(|r| r.unwrap()).collect();
        assert!(
            got == expected,
            "the two 200-payload inputs came back different"
        );
        // Exactly the limit in one input.
        let at_limit = many(253, 3);
        let back = pool
            .submit(EchoSharedMany(at_limit.clone()))
            .unwrap()
            .result()
            .unwrap();
        assert!(back == at_limit, "253 payloads came back different");
        // One input over the limit.
        let over = many(254, 4);
        match pool.submit(EchoSharedMany(over.clone())) {
            Err(e @ SubmitError::Encode { .. }) if local => {
                assert!(e.to_string().contains("253"), "{e}")
            }
            Ok(f) if !local => assert!(f.result().unwrap() == over),
            other => panic!("254 payloads in one input: got {other:?}"),
        }
        // ... and inside a map: that item fails, the others run.
        let mixed = vec![
            EchoSharedMany(many(2, 5)),
            EchoSharedMany(over.clone()),
            EchoSharedMany(many(2, 6)),
        ];
        let got: Vec<_> = pool.map(mixed).chunksize(3).collect();
        assert!(got[0].as_ref().unwrap() == &many(2, 5));
        assert!(got[2].as_ref().unwrap() == &many(2, 6));
        match &got[1] {
            Err(TaskError::Encode { message, .. }) if local => {
                assert!(message.contains("253"), "{message}")
            }
            Ok(v) if !local => assert!(v == &over),
            other => panic!("254 payloads in a map item: got {other:?}"),
        }
        // A result over the limit: a typed error on that future only.
        let made = pool
            .submit(MakeSharedMany {
                count: 300,
                len: 20 << 10,
            })
            .unwrap()
            .result();
        match made {
            Err(TaskError::Encode { message, .. }) if local => {
                assert!(message.contains("253"), "{message}")
            }
            Ok(v) if !local => assert_eq!(v.len(), 300),
            other => panic!("a result of 300 payloads: got {other:?}"),
        }
        let made = pool
            .submit(MakeSharedMany {
                count: 253,
                len: 20 << 10,
            })
            .unwrap()
            .result()
            .unwrap();
        assert_eq!(made.len(), 253);
        assert!(made[252].iter().all(|&b| b == 252));
        // The same worker throughout.
        assert_eq!(pool.worker_pids(), pids);
        still_works(&pool);
    });
}

/// This process's descriptors and what they point at, for a failure
/// message.
fn fd_links() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let to = std::fs::read_link(e.path()).unwrap_or_default();
                    format!("{}={}", e.file_name().to_string_lossy(), to.display())
                })
                .collect()
        })
        .unwrap_or_default()
}
