//! Supervisor features beyond the core loop: stopping a running task,
//! memory-based recycling, and an internal panic that must not hang any
//! future. Real worker processes, each test under a watchdog.

use std::time::Duration;

use procpool::{State, TaskError, WorkerCommand};
use procpool_e2e::{still_works, test_worker, wait_gone, watchdog};
use procpool_tasks::drill::{Alloc, DieOnce, KillSelf};
use procpool_tasks::{Sleep, Square};

const LIMIT: Duration = Duration::from_secs(30);

fn worker() -> WorkerCommand {
    WorkerCommand::program(env!("CARGO_BIN_EXE_procpool-test-worker"))
}

fn wait_running<T: Send + 'static>(f: &procpool::TaskFuture<T>) {
    while f.state() != State::Running {
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn kill_stops_a_running_task_and_replaces_its_worker() {
    watchdog(LIMIT, || {
        let pool = procpool_e2e::builder()
            .worker(worker())
            .workers(1)
            .build()
            .unwrap();
        let before = pool.worker_pids();
        let long = pool.submit(Sleep { millis: 60_000 }).unwrap();
        let queued = pool.submit(Square(5)).unwrap();
        wait_running(&long);
        assert!(!long.cancel(), "cancel never stops a running task");
        assert!(long.kill(), "kill stops it");
        assert!(long.done() && long.is_cancelled());
        assert_eq!(long.error(), Some(TaskError::Cancelled));
        assert_eq!(
            wait_gone(&before, Duration::from_secs(5)),
            Vec::<u32>::new()
        );
        // The prefetched task was not lost: it runs on the replacement.
        assert_eq!(queued.result().unwrap(), 25);
        assert_ne!(pool.worker_pids(), before);
        assert_eq!(pool.submit(Square(12)).unwrap().result().unwrap(), 144);
        assert_eq!(pool.stats().respawns, 1);
    });
}

#[test]
fn worker_over_its_memory_limit_is_recycled_between_tasks() {
    watchdog(LIMIT, || {
        let pool = procpool_e2e::builder()
            .worker(worker())
            .workers(1)
            .prefetch(1)
            .max_worker_memory(64 << 20)
            .build()
            .unwrap();
        // Each Alloc keeps 16 MiB alive in the worker: the fourth or fifth
        // passes 64 MiB of peak RSS, and the next task lands on a new process.
        let pids: Vec<u32> = (0..10)
            .map(|_| pool.submit(Alloc(16 << 20)).unwrap().result().unwrap())
            .collect();
        let distinct: std::collections::BTreeSet<_> = pids.iter().collect();
        assert!(distinct.len() >= 2, "never recycled: {pids:?}");
        // No process served more tasks than fit under the limit (+1: the task
        // that crossed it).
        for p in &distinct {
            let n = pids.iter().filter(|q| q == p).count();
            assert!(n <= 5, "pid {p} ran {n} allocations: {pids:?}");
        }
        assert_eq!(pool.submit(Square(12)).unwrap().result().unwrap(), 144);
    });
}

#[test]
fn supervisor_panic_resolves_every_future_with_an_error() {
    watchdog(LIMIT, || {
        let pool = procpool_e2e::builder()
            .worker(worker())
            .workers(2)
            .build()
            .unwrap();
        let pids = pool.worker_pids();
        let running: Vec<_> = (0..2)
            .map(|_| pool.submit(Sleep { millis: 60_000 }).unwrap())
            .collect();
        let queued: Vec<_> = (0..20).map(|i| pool.submit(Square(i)).unwrap()).collect();
        for f in &running {
            wait_running(f);
        }
        pool.debug_inject_supervisor_panic();
        // A worker death makes the supervisor settle it, and panic there.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pids[0] as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        for f in running.into_iter().chain(queued) {
            match f.result() {
                Err(TaskError::Broken { reason }) => {
                    assert!(reason.contains("internal error"), "{reason}")
                }
                Ok(v) => {
                    // A queued Square may have finished before the panic.
                    let _ = v;
                }
                Err(other) => panic!("expected Broken, got {other:?}"),
            }
        }
        assert!(pool.broken().is_some());
        assert!(
            pool.submit(Square(1)).is_err(),
            "a broken pool refuses work"
        );
        drop(pool);
        assert_eq!(wait_gone(&pids, Duration::from_secs(5)), Vec::<u32>::new());
    });
}

#[test]
fn a_hung_task_in_a_chunk_costs_only_itself() {
    watchdog(LIMIT, || {
        let pool = procpool_e2e::builder()
            .worker(worker())
            .workers(1)
            .task_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let inputs = [1, 1, 60_000, 2].map(|millis| Sleep { millis });
        let t = std::time::Instant::now();
        let results: Vec<_> = pool.map(inputs).chunksize(4).collect();
        // Each result is written before the next task of the chunk begins,
        // so the time-out costs only the hung task: the one after it never
        // began and is sent again to the replacement worker.
        assert_eq!(results[0], Ok(1));
        assert_eq!(results[1], Ok(1));
        assert!(
            matches!(results[2], Err(TaskError::TimedOut { .. })),
            "{:?}",
            results[2]
        );
        assert_eq!(results[3], Ok(2));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(pool.submit(Square(12)).unwrap().result().unwrap(), 144);
    });
}

#[test]
fn spinning_workers_give_the_same_results_and_still_stop() {
    watchdog(LIMIT, || {
        let pool = procpool_e2e::builder()
            .worker(worker())
            .workers(2)
            .worker_spin(Duration::from_micros(200))
            .build()
            .unwrap();
        let pids = pool.worker_pids();
        for i in 0..50u64 {
            assert_eq!(pool.submit(Square(i)).unwrap().result().unwrap(), i * i);
        }
        squares_add_up(&pool, 1000, 8);
        // A spinning worker still answers a cancel and a shutdown.
        let long = pool.submit(Sleep { millis: 60_000 }).unwrap();
        wait_running(&long);
        assert!(long.kill());
        drop(pool);
        assert_eq!(wait_gone(&pids, Duration::from_secs(5)), Vec::<u32>::new());
        assert!(
            procpool_e2e::no_children_left(),
            "the replacement outlived the pool"
        );
    });
}

#[test]
fn retries_run_a_task_again_when_its_worker_dies() {
    watchdog(LIMIT, || {
        let dir = std::env::temp_dir().join(format!("procpool-retries-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let marker = |n: &str| dir.join(n);
        let pool = procpool_e2e::builder()
            .worker(test_worker!())
            .workers(1)
            .retries(1)
            .build()
            .unwrap();
        // The builder's retries: its first worker dies, the retry answers.
        let f = pool
            .submit(DieOnce {
                marker: marker("a"),
                x: 6,
            })
            .unwrap();
        assert_eq!(f.result().unwrap(), 36);
        // Out of retries: a task that always kills its worker fails.
        let err = pool.submit(KillSelf).unwrap().result().unwrap_err();
        assert!(err.is_worker_died(), "{err:?}");
        // Per task: 0 retries fails at the first death.
        let err = pool
            .submit_with_retries(
                DieOnce {
                    marker: marker("b"),
                    x: 2,
                },
                0,
            )
            .unwrap()
            .result()
            .unwrap_err();
        assert!(err.is_worker_died(), "{err:?}");
        let f = pool
            .submit_with_retries(
                DieOnce {
                    marker: marker("c"),
                    x: 3,
                },
                2,
            )
            .unwrap();
        assert_eq!(f.result().unwrap(), 9);
        still_works(&pool);
        drop(pool);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Whether process `pid` has the reply ring mapped (`/proc/PID/maps` names
/// a memfd by the name it was created with).
fn maps_the_ring(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .contains("memfd:procpool-ring")
}

/// The live children of `pid` that map a reply ring (a TCP worker's
/// keeper).
fn keepers_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .filter(|&c| maps_the_ring(c))
        .collect()
}

/// Spawned local workers report through the shared-memory ring, and the
/// results are right with it on or off (`.reply_ring(false)`). Local in the
/// over-TCP run too; a TCP worker shares a ring with its keeper instead.
#[test]
fn spawned_workers_share_a_reply_ring_unless_it_is_off() {
    watchdog(LIMIT, || {
        for ring in [true, false] {
            let pool = procpool_e2e::builder()
                .transport(procpool::Transport::Local)
                .worker(worker())
                .workers(2)
                .reply_ring(ring)
                .build()
                .unwrap();
            let pids = pool.worker_pids();
            squares_add_up(&pool, 5000, 64);
            for pid in &pids {
                assert_eq!(maps_the_ring(*pid), ring, "worker {pid}, ring {ring}");
            }
            if ring {
                // (Not asserted when off: other tests in this process may
                // have rings of their own.)
                assert!(
                    maps_the_ring(std::process::id()),
                    "the parent maps the rings it made"
                );
            }
            drop(pool);
            assert_eq!(wait_gone(&pids, Duration::from_secs(5)), Vec::<u32>::new());
        }
        // Over TCP (workers that dial in) the pool makes no ring: the
        // worker shares one with its keeper process (`worker::keeper`).
        let pool = procpool_e2e::builder()
            .transport(procpool::Transport::Tcp)
            .worker(worker())
            .workers(1)
            .build()
            .unwrap();
        assert_eq!(pool.submit(Square(9)).unwrap().result().unwrap(), 81);
        let pid = pool.worker_pids()[0];
        assert!(maps_the_ring(pid), "the TCP worker maps its keeper's ring");
        assert_eq!(keepers_of(pid).len(), 1, "one keeper per TCP worker");
    });
}

/// A chunked `map` of `Square` over `0..n` gives every square.
fn squares_add_up(pool: &procpool::ProcessPool, n: u64, chunksize: usize) {
    let sum: u64 = pool
        .map((0..n).map(Square))
        .chunksize(chunksize)
        .map(|r| r.unwrap())
        .sum();
    assert_eq!(sum, (0..n).map(|i| i * i).sum());
}

/// Whether `pid` was started with the pool's "I write your work ring"
/// variable.
fn fed_through_the_work_ring(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .any(|v| v == b"PROCPOOL_WORKER_WORK_RING=1")
}

/// Spawned local workers take their tasks from the work ring (shared
/// memory), with frames that must cross the socket (inputs of 100 KB:
/// bulk strings) in their place among them: one worker runs every task in
/// the order sent, ring or socket, and the results are right with the ring
/// on or off (`.work_ring(false)`).
#[test]
fn spawned_workers_take_tasks_from_the_work_ring_in_order_unless_it_is_off() {
    watchdog(LIMIT, || {
        for ring in [true, false] {
            let pool = procpool_e2e::builder()
                .transport(procpool::Transport::Local)
                .worker(worker())
                .workers(1)
                .work_ring(ring)
                .build()
                .unwrap();
            let pid = pool.worker_pids()[0];
            assert_eq!(fed_through_the_work_ring(pid), ring, "ring {ring}");
            // Each task's count is its place in the worker's run order;
            // every third carries 100 KB (a frame with bulk bytes: the
            // socket, a marker in the ring).
            let futs: Vec<_> = (0..90usize)
                .map(|i| {
                    let bytes = if i % 3 == 0 { 100_000 } else { 8 };
                    pool.submit(procpool_tasks::CountCallsWith(vec![7; bytes]))
                        .unwrap()
                })
                .collect();
            for (n, f) in futs.into_iter().enumerate() {
                let (worker, count, len) = f.result().unwrap();
                assert_eq!(worker, pid);
                assert_eq!(len, if n % 3 == 0 { 100_000 } else { 8 });
                assert_eq!(
                    count,
                    n as u64 + 1,
                    "task {n} ran in its place (ring {ring})"
                );
            }
            squares_add_up(&pool, 5000, 64);
            drop(pool);
            assert_eq!(wait_gone(&[pid], Duration::from_secs(5)), Vec::<u32>::new());
        }
        // A prefetch deeper than the ring keeps markers for: the socket.
        let pool = procpool_e2e::builder()
            .transport(procpool::Transport::Local)
            .worker(worker())
            .workers(1)
            .prefetch(129)
            .build()
            .unwrap();
        let pid = pool.worker_pids()[0];
        assert!(
            !fed_through_the_work_ring(pid),
            "prefetch 129: no work ring"
        );
        squares_add_up(&pool, 5000, 64);
    });
}

/// A task with its own timeout that hangs while the pool shuts down
/// gracefully (`CancelPending`, `Wait`) or retires its worker: its timeout
/// still holds, so the task ends `TimedOut` and shutdown returns (it used
/// to wait forever: a slot asked to stop was skipped by the timeout
/// clock). Found by `procpool soak`. In its own process: a hang here would
/// leave a stuck shutdown and a worker behind.
#[test]
fn a_graceful_shutdown_still_enforces_a_running_tasks_timeout() {
    procpool_e2e::in_own_process(Duration::from_secs(20), || {
        for how in [procpool::Shutdown::CancelPending, procpool::Shutdown::Wait] {
            let pool = procpool_e2e::builder()
                .worker(worker())
                .workers(1)
                .build()
                .unwrap();
            let limit = Duration::from_millis(300);
            let f = pool
                .submit_with_timeout(procpool_tasks::drill::Hang, Some(limit))
                .unwrap();
            wait_running(&f);
            let pids = pool.worker_pids();
            let t = std::time::Instant::now();
            pool.shutdown(how);
            let took = t.elapsed();
            assert!(
                matches!(f.result(), Err(TaskError::TimedOut { after }) if after == limit),
                "{how:?}"
            );
            assert!(took < Duration::from_secs(5), "{how:?} took {took:?}");
            assert!(wait_gone(&pids, Duration::from_secs(5)).is_empty());
            println!(
                "FIGURE graceful_shutdown_timeout: {how:?} returned {took:.2?} after it began (limit {limit:?})"
            );
        }
    });
}
