//! Shared payloads (`SharedBytes`, `SharedSlice`) end to end, on real
//! workers: results, sealing, size limits, a worker dying with payloads
//! open. Included by `over_tcp.rs`, so every test also runs with the
//! workers dialing over TCP (where the same types travel inline).

use std::time::Duration;

use procpool::{Executor, SharedBytes, SharedSlice, SubmitError, TaskError, Transport};
use procpool_e2e::{
    both_pools, builder, fd_count, in_own_process, still_works, test_worker, transport, watchdog,
};
use procpool_tasks::drill::{AbortHoldingShared, TamperShared};
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
        // Back where we were: descriptors exactly, shared memory within a
        // quarter of the payload (other processes on the machine use some).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (now_fds, now_shm) = (fd_count(), shmem_kib());
            if now_fds == fds && now_shm < shm + 16 * 1024 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "fds {fds} -> {now_fds}, Shmem {shm} KiB -> {now_shm} KiB"
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
