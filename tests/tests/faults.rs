//! The fault matrix (issue #5): real worker processes that die, hang, break
//! the protocol or crash in loops, and a pool that must contain every one
//! of those failures to the futures it touches.
//!
//! Every test runs under a watchdog, ends by checking that the pool still
//! computes `Square(12)` and that no child process is left behind. The
//! tests take one lock, so they run one at a time: they count processes,
//! time recoveries and measure the parent's peak memory, none of which
//! survive a neighbour test doing the same.
//!
//! Figures for the README's "Failure behaviour" table are printed as
//! `FIGURE <test>: ...` lines (run with `--nocapture` to see them).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use procpool::{
    BuildError, Exit, ProcessPool, ProcessPoolBuilder, Shutdown, SubmitError, TaskError,
    WorkerCommand,
};
use procpool_e2e::{alive, no_children_left, wait_gone};
use procpool_tasks::drill::{self, SquareOrDie};
use procpool_tasks::{CountCalls, Echo, SetGreeting, Sleep, Square};

const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- helpers

/// One fault test at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs a test body alone in its own process, under a watchdog, and
/// prints its wall time.
fn run(name: &str, limit: Duration, f: impl FnOnce() + Send + 'static) {
    procpool_e2e::run_alone(&SERIAL, name, limit, f)
}

fn worker() -> WorkerCommand {
    WorkerCommand::program(env!("CARGO_BIN_EXE_procpool-test-worker"))
}

fn builder(n: usize) -> ProcessPoolBuilder {
    procpool_e2e::builder().worker(worker()).workers(n)
}

fn pool(n: usize) -> ProcessPool {
    builder(n).build().expect("pool starts")
}

/// The misbehaving worker in `mode`; every spawn claims an ordinal in
/// `scratch` (so the test can count spawns), and a spawn that is not to
/// misbehave becomes the real test worker.
fn bad_worker(mode: &str, scratch: &Scratch) -> WorkerCommand {
    WorkerCommand::program(env!("CARGO_BIN_EXE_procpool-bad-worker"))
        .env("BAD_MODE", mode)
        .env(
            "BAD_GOOD_WORKER",
            env!("CARGO_BIN_EXE_procpool-test-worker"),
        )
        .env("BAD_DIR", scratch.path())
}

/// The pool still works: a normal task gives the right answer.
fn still_works(pool: &ProcessPool) {
    assert_eq!(pool.submit(Square(12)).unwrap().result().unwrap(), 144);
}

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "procpool-faults-{}-{name}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Pids of every worker process started so far, by spawn ordinal.
    fn spawns(&self) -> Vec<u32> {
        let mut by_ordinal = BTreeMap::new();
        for e in std::fs::read_dir(&self.0).unwrap() {
            let e = e.unwrap();
            let Some(k) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            // A spawn creates its file and then writes its pid: wait for it.
            let deadline = Instant::now() + Duration::from_secs(2);
            let pid = loop {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                if let Ok(p) = text.trim().parse::<u32>() {
                    break p;
                }
                if Instant::now() > deadline {
                    break 0;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            by_ordinal.insert(k, pid);
        }
        by_ordinal.into_values().collect()
    }
}

impl Scratch {
    /// The number of spawns once at least `n` have shown up (a pid in
    /// `worker_pids()` can precede the new process claiming its ordinal),
    /// after a short pause for any extra one.
    fn spawns_settled(&self, n: usize) -> usize {
        wait_for(Duration::from_secs(5), || self.spawns().len() >= n);
        std::thread::sleep(Duration::from_millis(100));
        self.spawns().len()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kill9(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9 a worker");
}

/// Polls `cond` every few milliseconds for up to `limit`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until the pool has all its workers again, `dead` not among them;
/// returns how long that took.
fn wait_replaced(pool: &ProcessPool, dead: u32, limit: Duration) -> Duration {
    let t = Instant::now();
    let ok = wait_for(limit, || {
        let pids = pool.worker_pids();
        pids.len() == pool.workers() && !pids.contains(&dead)
    });
    assert!(
        ok,
        "worker {dead} was not replaced within {limit:?}: pids now {:?}",
        pool.worker_pids()
    );
    t.elapsed()
}

/// The bad worker `bad` was killed and its slot took a new worker.
fn killed_and_replaced(pool: &ProcessPool, bad: u32) {
    assert!(
        wait_gone(&[bad], Duration::from_secs(5)).is_empty(),
        "the bad worker was not killed"
    );
    wait_replaced(pool, bad, Duration::from_secs(10));
}

/// Drops the pool and checks that nothing it started is left.
fn finish(pool: ProcessPool) {
    drop(pool);
    assert!(no_children_left(), "a worker outlived its pool");
}

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Peak-memory probe: resets the high-water mark (VmHWM) to the current
/// resident size, then reports how far the peak rose above it.
struct PeakMemory {
    rss_kib: u64,
}

impl PeakMemory {
    fn start() -> PeakMemory {
        // "5" resets the peak RSS to the current RSS (Linux >= 4.0).
        std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM via clear_refs");
        PeakMemory {
            rss_kib: status_kib("VmRSS"),
        }
    }

    fn growth_mib(&self) -> f64 {
        status_kib("VmHWM").saturating_sub(self.rss_kib) as f64 / 1024.0
    }
}

/// A process's resident memory in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

// ------------------------------------------------- a task kills its worker

/// A task that ends its worker: that future fails with `WorkerDied` and the
/// exit, the worker is replaced, everything else completes.
fn task_kills_its_worker<T>(test: &'static str, task: T, expected: Exit, task_name: &'static str)
where
    T: procpool::Task<Output = ()>,
{
    run(test, LIMIT, move || {
        let pool = pool(2);
        let before = pool.worker_pids();
        // In flight on the other worker while this one dies.
        let sleeper = pool.submit(Sleep { millis: 300 }).unwrap();
        let fatal = pool.submit(task).unwrap();
        // Queued and prefetched behind both.
        let squares: Vec<_> = (0..40u64)
            .map(|i| pool.submit(Square(i)).unwrap())
            .collect();
        let err = fatal.result().unwrap_err();
        let (worker, pid) = match &err {
            TaskError::WorkerDied {
                worker,
                pid,
                exit,
                task,
            } => {
                assert_eq!(*exit, expected, "{err}");
                assert_eq!(task.as_deref(), Some(task_name), "{err}");
                assert!(before.contains(pid), "pid {pid} is not one of {before:?}");
                (*worker, *pid)
            }
            other => panic!("expected WorkerDied, got {other:?}"),
        };
        let replaced = wait_replaced(&pool, pid, Duration::from_secs(10));
        let shown = err.to_string();
        for part in [
            format!("worker {worker}"),
            format!("pid {pid}"),
            format!("`{task_name}`"),
        ] {
            assert!(shown.contains(&part), "`{shown}` does not name {part}");
        }
        if let Exit::Signal(sig) = expected {
            let name = Signal::try_from(sig).unwrap().as_str();
            assert!(shown.contains(name), "`{shown}` does not name {name}");
        }
        assert_eq!(sleeper.result().unwrap(), 300);
        for (i, f) in squares.into_iter().enumerate() {
            assert_eq!(f.result().unwrap(), (i * i) as u64, "square {i}");
        }
        let after = pool.worker_pids();
        assert!(
            after.iter().any(|p| !before.contains(p)),
            "no new worker pid: before {before:?}, after {after:?}"
        );
        assert!(pool.broken().is_none());
        still_works(&pool);
        println!(
            "FIGURE {test}: `{shown}`; replaced within {replaced:.2?} of the error (respawns {})",
            pool.stats().respawns
        );
        finish(pool);
    });
}

#[test]
fn task_calling_exit_3_is_worker_died_with_code_3() {
    task_kills_its_worker(
        "task_calling_exit_3",
        drill::Exit(3),
        Exit::Code(3),
        "drill_exit",
    );
}

#[test]
fn task_calling_abort_is_worker_died_with_sigabrt() {
    task_kills_its_worker(
        "task_calling_abort",
        drill::Abort,
        Exit::Signal(6),
        "drill_abort",
    );
}

#[test]
fn task_sigkilling_itself_is_worker_died_with_sigkill() {
    task_kills_its_worker(
        "task_sigkilling_itself",
        drill::KillSelf,
        Exit::Signal(9),
        "drill_kill_self",
    );
}

#[test]
fn worker_sigkilled_from_outside_mid_task() {
    run("worker_sigkilled_from_outside_mid_task", LIMIT, || {
        let pool = pool(2);
        let before = pool.worker_pids();
        // One sleep per worker, then work queued behind them.
        let a = pool.submit(Sleep { millis: 1500 }).unwrap();
        let b = pool.submit(Sleep { millis: 1501 }).unwrap();
        let squares: Vec<_> = (0..20u64)
            .map(|i| pool.submit(Square(i)).unwrap())
            .collect();
        assert!(
            wait_for(Duration::from_secs(10), || a.running() && b.running()),
            "both sleeps should be running"
        );
        let victim = before[0];
        kill9(victim);
        let replaced = wait_replaced(&pool, victim, Duration::from_secs(10));
        let mut died = 0;
        for (f, millis) in [(a, 1500), (b, 1501)] {
            match f.result() {
                Ok(v) => assert_eq!(v, millis),
                Err(TaskError::WorkerDied {
                    pid, exit, task, ..
                }) => {
                    assert_eq!(pid, victim);
                    assert_eq!(exit, Exit::Signal(9));
                    assert_eq!(task.as_deref(), Some("sleep"));
                    died += 1;
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(died, 1, "exactly the sleep on the killed worker fails");
        for (i, f) in squares.into_iter().enumerate() {
            assert_eq!(f.result().unwrap(), (i * i) as u64, "square {i}");
        }
        assert!(pool.broken().is_none());
        still_works(&pool);
        println!(
            "FIGURE worker_sigkilled_from_outside_mid_task: replaced within {replaced:.2?} of the kill"
        );
        finish(pool);
    });
}

#[test]
fn idle_worker_killed_from_outside_is_replaced_transparently() {
    run("idle_worker_killed_from_outside", LIMIT, || {
        let pool = pool(2);
        still_works(&pool);
        let victim = pool.worker_pids()[0];
        let t = Instant::now();
        kill9(victim);
        // Submitted at once: some may be sent to the dying worker.
        let futs: Vec<_> = (0..50u64)
            .map(|i| pool.submit(Square(i)).unwrap())
            .collect();
        for (i, f) in futs.into_iter().enumerate() {
            assert_eq!(f.result().unwrap(), (i * i) as u64, "square {i}");
        }
        wait_replaced(&pool, victim, Duration::from_secs(10));
        let recovered = t.elapsed();
        assert!(!alive(victim));
        assert!(pool.broken().is_none());
        still_works(&pool);
        println!(
            "FIGURE idle_worker_killed_from_outside: full strength again {recovered:.2?} after the kill"
        );
        finish(pool);
    });
}

// ------------------------------------------ death during a 100 MiB write

const BIG: usize = 100 << 20;

/// The 100 MiB echo either ran on the replacement (the task had not
/// started, so it was re-queued) or failed with `WorkerDied`; never a stall.
fn check_big_echo(test: &str, r: Result<<Echo as procpool::Task>::Output, TaskError>) {
    match r {
        Ok(bytes) => {
            assert_eq!(bytes.len(), BIG);
            assert!(bytes.iter().all(|&b| b == 0xAB), "echo came back wrong");
            println!("FIGURE {test}: the unstarted task was re-queued and ran on the replacement");
        }
        Err(e @ TaskError::WorkerDied { .. }) => {
            println!("FIGURE {test}: the future failed: {e}");
        }
        Err(other) => panic!("expected the echo or WorkerDied, got {other:?}"),
    }
}

#[test]
fn worker_killed_while_the_parent_writes_100_mib_to_it() {
    run("worker_killed_during_100mib_write", LIMIT, || {
        let pool = pool(1);
        let victim = pool.worker_pids()[0];
        let base = rss_kib(victim).expect("/proc/<worker>/status is readable");
        // Kill it once it has read 8 MiB of the frame into its buffer (its
        // resident memory shows the progress): the parent is then still
        // inside its write of the other 92 MiB.
        let killer = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match rss_kib(victim) {
                    Some(n) if n.saturating_sub(base) >= 8 << 10 => {
                        kill9(victim);
                        return Some(n - base);
                    }
                    None => return None,
                    _ if Instant::now() > deadline => return None,
                    _ => std::thread::sleep(Duration::from_micros(50)),
                }
            }
        });
        let t = Instant::now();
        let f = pool.submit(Echo(vec![0xAB; BIG])).unwrap();
        let submit_took = t.elapsed();
        let read_kib = killer
            .join()
            .unwrap()
            .expect("the worker's memory never showed the input arriving");
        assert!(
            (read_kib as usize) < (BIG >> 10) * 9 / 10,
            "the worker had nearly the whole input before the kill ({read_kib} KiB)"
        );
        let r = f.result();
        let total = t.elapsed();
        check_big_echo("worker_killed_during_100mib_write", r);
        wait_replaced(&pool, victim, Duration::from_secs(10));
        assert!(pool.broken().is_none());
        still_works(&pool);
        println!(
            "FIGURE worker_killed_during_100mib_write: killed once it held {:.1} MiB of the input; submit returned in {submit_took:.2?}, future done in {total:.2?}",
            read_kib as f64 / 1024.0
        );
        finish(pool);
    });
}

#[test]
fn worker_exiting_while_the_parent_writes_100_mib_to_it() {
    run("worker_exits_during_100mib_write", LIMIT, || {
        let scratch = Scratch::new("exit-while-reading");
        let pool = procpool_e2e::builder()
            .worker(bad_worker("exit_while_reading", &scratch).env("BAD_FIRST_BAD", "1"))
            .workers(1)
            .build()
            .unwrap();
        let victim = pool.worker_pids()[0];
        let t = Instant::now();
        let f = pool.submit(Echo(vec![0xAB; BIG])).unwrap();
        let submit_took = t.elapsed();
        let r = f.result();
        let total = t.elapsed();
        check_big_echo("worker_exits_during_100mib_write", r);
        assert!(wait_gone(&[victim], Duration::from_secs(5)).is_empty());
        wait_replaced(&pool, victim, Duration::from_secs(10));
        assert!(pool.broken().is_none());
        still_works(&pool);
        assert_eq!(scratch.spawns_settled(2), 2, "one replacement");
        println!(
            "FIGURE worker_exits_during_100mib_write: submit returned in {submit_took:.2?}, future done in {total:.2?}"
        );
        finish(pool);
    });
}

// ------------------------------------------------------ bad frames

/// The first worker breaks the protocol on its first task (after reporting
/// it started); only that task's future fails, the worker is killed and
/// replaced, and the parent's memory does not jump.
fn bad_frame(test: &'static str, mode: &'static str, expect: &'static str, may_die: bool) {
    bad_frame_with(test, mode, expect, may_die, |b| b);
}

fn bad_frame_with(
    test: &'static str,
    mode: &'static str,
    expect: &'static str,
    may_die: bool,
    tune: fn(procpool::ProcessPoolBuilder) -> procpool::ProcessPoolBuilder,
) {
    run(test, LIMIT, move || {
        let scratch = Scratch::new(mode);
        let peak = PeakMemory::start();
        let pool = tune(procpool_e2e::builder())
            .worker(bad_worker(mode, &scratch).env("BAD_FIRST_BAD", "1"))
            .workers(2)
            .build()
            .unwrap();
        let bad_pid = scratch.spawns()[0];
        assert!(pool.worker_pids().contains(&bad_pid));
        let t = Instant::now();
        let futs: Vec<_> = (0..20u64)
            .map(|i| pool.submit(Square(i)).unwrap())
            .collect();
        let mut failed = Vec::new();
        for (i, f) in futs.into_iter().enumerate() {
            match f.result() {
                Ok(v) => assert_eq!(v, (i * i) as u64, "square {i}"),
                Err(e) => failed.push(e),
            }
        }
        let settled = t.elapsed();
        assert_eq!(
            failed.len(),
            1,
            "only the task the bad worker began fails: {failed:?}"
        );
        let err = &failed[0];
        match err {
            TaskError::Protocol { message, .. } => {
                assert!(message.contains(expect), "`{message}` lacks `{expect}`");
                assert!(err.to_string().contains("broke the protocol"), "{err}");
            }
            TaskError::WorkerDied { pid, .. } if may_die => assert_eq!(*pid, bad_pid),
            other => panic!("expected Protocol, got {other:?}"),
        }
        killed_and_replaced(&pool, bad_pid);
        assert!(pool.broken().is_none());
        still_works(&pool);
        assert_eq!(scratch.spawns_settled(3), 3, "exactly one replacement");
        let grew = peak.growth_mib();
        println!(
            "FIGURE {test}: `{err}`; 20 futures settled in {settled:.2?}; parent peak memory +{grew:.1} MiB"
        );
        assert!(
            grew < 64.0,
            "the parent's peak memory rose by {grew:.1} MiB"
        );
        finish(pool);
    });
}

#[test]
fn garbage_frame_is_a_protocol_error_on_that_future_only() {
    bad_frame("garbage_frame", "garbage", "bad message header", false);
}

#[test]
fn truncated_frame_then_exit_is_a_protocol_error_on_that_future_only() {
    bad_frame(
        "truncated_frame",
        "truncated",
        "stream ended inside a frame",
        true,
    );
}

#[test]
fn truncated_frame_then_eof_is_a_protocol_error_on_that_future_only() {
    bad_frame(
        "truncated_frame_eof",
        "truncated_eof",
        "stream ended inside a frame",
        false,
    );
}

#[test]
fn four_gib_length_is_refused_before_allocating() {
    bad_frame(
        "four_gib_length",
        "huge",
        "frame of 4294967295 bytes exceeds",
        false,
    );
}

#[test]
fn garbage_in_the_reply_ring_is_a_protocol_error_on_that_future_only() {
    // The ring exists only for locally spawned workers: this test is local
    // in the over-TCP run too.
    bad_frame_with(
        "reply_ring_garbage",
        "ring_garbage",
        "reply ring broken: a record of 1000 bytes",
        false,
        |b| b.transport(procpool::Transport::Local),
    );
}

/// An item record (the ring's compact result of one input of a packed
/// chunk) for a task that is not a chunk breaks the protocol.
#[test]
fn a_ring_item_record_for_a_single_task_is_a_protocol_error_on_that_future_only() {
    bad_frame_with(
        "ring_item_for_a_single_task",
        "ring_bad_items",
        "which is not a chunk",
        false,
        |b| b.transport(procpool::Transport::Local),
    );
}

/// A worker reports input 0 of a packed chunk through an item record in
/// its ring, then an item record for an input the chunk does not have: the
/// first counts (its marked value is delivered, the input not run again),
/// the second is a protocol error on the input that was running; the worker
/// is killed and the rest of the chunk runs on its replacement.
#[test]
fn a_ring_item_record_for_an_input_the_chunk_lacks_is_a_protocol_error() {
    run("ring_item_out_of_range", LIMIT, || {
        let scratch = Scratch::new("ring_bad_items");
        let pool = builder(1)
            .transport(procpool::Transport::Local)
            .worker(bad_worker("ring_bad_items", &scratch).env("BAD_FIRST_BAD", "1"))
            .build()
            .unwrap();
        let bad_pid = scratch.spawns()[0];
        let results: Vec<_> = pool.map((0..64u64).map(Square)).chunksize(16).collect();
        assert_eq!(results.len(), 64, "one result per input");
        assert_eq!(
            results[0].as_ref().ok(),
            Some(&1_000_000_000),
            "input 0's published result is delivered, not run again"
        );
        match &results[1] {
            Err(e @ TaskError::Protocol { message, .. }) => {
                assert!(
                    message.contains("a result for input 16 of a chunk of 16"),
                    "{e}"
                );
            }
            other => panic!("input 1 (running when the worker lied): {other:?}"),
        }
        for (i, r) in results.iter().enumerate().skip(2) {
            assert_eq!(r.as_ref().ok(), Some(&(i as u64 * i as u64)), "square {i}");
        }
        killed_and_replaced(&pool, bad_pid);
        assert!(pool.broken().is_none());
        still_works(&pool);
        finish(pool);
    });
}

/// A worker says it reads its work ring (where the pool puts a spawned
/// worker's `Run` frames), then claims to have read a terabyte of it. The
/// pool believes nothing it cannot check: once the ring's room runs short,
/// that claim is impossible, and the worker is ended like one whose socket
/// broke. It had started none of its tasks, so each runs once on its
/// replacement; the pool stays usable.
#[test]
fn a_worker_that_lies_about_its_work_ring_is_ended_and_loses_nothing() {
    run("work_ring_lies", LIMIT, || {
        let scratch = Scratch::new("work_ring_lies");
        let pool = builder(1)
            .transport(procpool::Transport::Local)
            .worker(bad_worker("work_ring_lies", &scratch).env("BAD_FIRST_BAD", "1"))
            // Eight frames of 60 kB: more than the 256 KiB ring holds.
            .prefetch(8)
            .build()
            .unwrap();
        let bad_pid = scratch.spawns()[0];
        let futs: Vec<_> = (0..16u8)
            .map(|i| pool.submit(Echo(vec![i; 60_000])).unwrap())
            .collect();
        for (i, f) in futs.into_iter().enumerate() {
            let out = f.result().unwrap();
            assert_eq!(out.len(), 60_000);
            assert!(out.iter().all(|&b| b == i as u8), "echo {i}");
        }
        killed_and_replaced(&pool, bad_pid);
        assert_eq!(scratch.spawns().len(), 2, "one replacement");
        assert_eq!(pool.stats().completed, 16, "each task counted once");
        assert!(pool.broken().is_none());
        still_works(&pool);
        finish(pool);
    });
}

/// A worker publishes a task's start and result in its ring, then breaks
/// the protocol on its socket (maybe before the parent looked): it is
/// killed, but the result it published still counts. The bad worker marks
/// that result (square + 1e9), so a second run of the task would show.
#[test]
fn results_in_the_ring_count_when_the_socket_then_breaks_the_protocol() {
    run("ring_then_garbage", LIMIT, || {
        let scratch = Scratch::new("ring_then_garbage");
        let pool = builder(2)
            .transport(procpool::Transport::Local)
            .worker(bad_worker("ring_then_garbage", &scratch).env("BAD_FIRST_BAD", "1"))
            // Parked on the socket, not looking at the ring, when the
            // garbage comes.
            .ring_spin(Duration::ZERO)
            .build()
            .unwrap();
        let bad_pid = scratch.spawns()[0];
        let futs: Vec<_> = (0..20u64)
            .map(|i| pool.submit(Square(i)).unwrap())
            .collect();
        let mut marked = 0;
        for (i, f) in futs.into_iter().enumerate() {
            let v = f.result().unwrap();
            let square = (i * i) as u64;
            assert!(
                v == square || v == square + 1_000_000_000,
                "square {i}: {v}"
            );
            marked += usize::from(v != square);
        }
        assert_eq!(
            marked, 1,
            "the published result is delivered, not run again"
        );
        killed_and_replaced(&pool, bad_pid);
        assert_eq!(pool.stats().completed, 20, "each task counted once");
        still_works(&pool);
        finish(pool);
    });
}

#[test]
fn late_and_duplicate_replies_never_reach_the_wrong_future() {
    run("late_and_duplicate_replies", LIMIT, || {
        let scratch = Scratch::new("stale");
        let pool = procpool_e2e::builder()
            .worker(bad_worker("stale", &scratch))
            .workers(1)
            .build()
            .unwrap();
        let pid = pool.worker_pids()[0];
        let futs: Vec<_> = (0..50u64)
            .map(|i| pool.submit(Square(i + 7)).unwrap())
            .collect();
        for (i, f) in futs.into_iter().enumerate() {
            let x = i as u64 + 7;
            assert_eq!(f.result().unwrap(), x * x, "square {x}");
        }
        still_works(&pool);
        assert_eq!(
            pool.worker_pids(),
            vec![pid],
            "dropping a reply kills nobody"
        );
        let stats = pool.stats();
        assert_eq!(
            (stats.completed, stats.failed),
            (51, 0),
            "each task counted once"
        );
        assert_eq!(scratch.spawns().len(), 1);
        finish(pool);
    });
}

#[test]
fn wrong_protocol_version_fails_the_build() {
    run("wrong_protocol_version", LIMIT, || {
        let scratch = Scratch::new("bad-version");
        let t = Instant::now();
        let err = procpool_e2e::builder()
            .worker(bad_worker("bad_version", &scratch))
            .workers(2)
            .build()
            .unwrap_err();
        let took = t.elapsed();
        match &err {
            BuildError::Handshake { worker, message } => {
                assert!(*worker < 2);
                assert!(message.contains("protocol version mismatch"), "{message}");
            }
            other => panic!("expected Handshake, got {other:?}"),
        }
        assert!(err.to_string().contains("rebuild the worker"), "{err}");
        assert!(no_children_left(), "a worker survived a failed build");
        println!("FIGURE wrong_protocol_version: `{err}` after {took:.2?}");
    });
}

// ---------------------------------------------------------- timeouts

#[test]
fn task_timeout_kills_the_workers_whole_process_group() {
    run("task_timeout_kills_process_group", LIMIT, || {
        let scratch = Scratch::new("grandchild");
        let pidfile = scratch.path().join("grandchild.pid");
        let limit = Duration::from_millis(500);
        let pool = procpool_e2e::builder()
            .worker(
                bad_worker("hang_grandchild", &scratch)
                    .env("BAD_FIRST_BAD", "1")
                    .env("BAD_PIDFILE", &pidfile),
            )
            .workers(1)
            .task_timeout(limit)
            .build()
            .unwrap();
        let worker_pid = pool.worker_pids()[0];
        assert!(
            wait_for(Duration::from_secs(5), || pidfile.exists()),
            "the bad worker did not start its grandchild"
        );
        let grandchild: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(alive(grandchild));
        let t = Instant::now();
        let hung = pool.submit(Square(5)).unwrap();
        let behind = pool.submit(Square(6)).unwrap();
        assert_eq!(
            hung.result().unwrap_err(),
            TaskError::TimedOut { after: limit }
        );
        let took = t.elapsed();
        assert!(
            took >= limit && took < limit + Duration::from_secs(3),
            "timed out after {took:?}"
        );
        assert_eq!(
            behind.result().unwrap(),
            36,
            "the task queued behind it runs"
        );
        let gone = Instant::now();
        assert!(
            wait_gone(&[worker_pid, grandchild], Duration::from_secs(2)).is_empty(),
            "the worker or its grandchild (immune to SIGTERM) survived"
        );
        let gone = gone.elapsed();
        wait_replaced(&pool, worker_pid, Duration::from_secs(10));
        // The replacement is a real worker: a hung drill times out too.
        let t2 = Instant::now();
        assert_eq!(
            pool.submit(drill::Hang).unwrap().result().unwrap_err(),
            TaskError::TimedOut { after: limit }
        );
        let took2 = t2.elapsed();
        assert!(pool.broken().is_none());
        still_works(&pool);
        println!(
            "FIGURE task_timeout_kills_process_group: TimedOut {took:.2?} after submit (limit {limit:?}; grandchild ignores SIGTERM), group gone {gone:.2?} later; drill::Hang TimedOut after {took2:.2?}"
        );
        finish(pool);
    });
}

#[test]
fn per_submit_timeout_overrides_the_builders() {
    run("per_submit_timeout", LIMIT, || {
        // No builder limit: only the per-submit one applies.
        let pool = pool(2);
        let t = Instant::now();
        let hung = pool
            .submit_with_timeout(drill::Hang, Some(Duration::from_millis(300)))
            .unwrap();
        let slow = pool.submit(Sleep { millis: 800 }).unwrap();
        let fast = pool
            .submit_with_timeout(Sleep { millis: 50 }, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(
            hung.result().unwrap_err(),
            TaskError::TimedOut {
                after: Duration::from_millis(300)
            }
        );
        let took = t.elapsed();
        assert_eq!(slow.result().unwrap(), 800);
        assert_eq!(fast.result().unwrap(), 50);
        still_works(&pool);
        finish(pool);

        // A builder limit, lifted (None) or kept per task.
        let pool = builder(2)
            .task_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let unlimited = pool
            .submit_with_timeout(Sleep { millis: 600 }, None)
            .unwrap();
        let limited = pool.submit(Sleep { millis: 3000 }).unwrap();
        assert_eq!(unlimited.result().unwrap(), 600);
        assert_eq!(
            limited.result().unwrap_err(),
            TaskError::TimedOut {
                after: Duration::from_millis(200)
            }
        );
        assert!(pool.broken().is_none());
        still_works(&pool);
        println!("FIGURE per_submit_timeout: 300 ms limit hit after {took:.2?}");
        finish(pool);
    });
}

// ------------------------------------------------------ crash loops

#[test]
fn crash_loop_breaks_the_pool_without_a_respawn_storm() {
    run("crash_loop_every_task_kills", LIMIT, || {
        let scratch = Scratch::new("crash-loop");
        let max_restarts = 3u32;
        let workers = 2usize;
        // The bad worker in "good" mode only counts spawns, then execs the
        // real worker.
        let pool = procpool_e2e::builder()
            .worker(bad_worker("good", &scratch))
            .workers(workers)
            .max_restarts(max_restarts)
            .build()
            .unwrap();
        let t = Instant::now();
        let results: Vec<_> = pool.map((0..100).map(|_| drill::KillSelf)).collect();
        let took = t.elapsed();
        let reason = pool.broken().expect("the pool is broken");
        assert!(reason.contains("max_restarts is 3"), "{reason}");
        let mut died = 0;
        let mut broken = 0;
        for r in &results {
            match r {
                Err(TaskError::WorkerDied { exit, .. }) => {
                    assert_eq!(*exit, Exit::Signal(9));
                    died += 1;
                }
                Err(TaskError::Broken { reason: r }) => {
                    assert_eq!(r, &reason);
                    broken += 1;
                }
                other => panic!("expected WorkerDied or Broken, got {other:?}"),
            }
        }
        let spawns = scratch.spawns().len();
        std::thread::sleep(Duration::from_secs(1));
        let spawns_later = scratch.spawns().len();
        let live = pool.worker_pids();
        // Submits fail fast.
        let t2 = Instant::now();
        let refused = pool.submit(Square(1));
        let refused_in = t2.elapsed();
        println!(
            "FIGURE crash_loop_every_task_kills: broken after {took:.2?}; {spawns} processes started ({workers} + {} restarts), {spawns_later} one second later; {died} WorkerDied + {broken} Broken of {} map results; submit refused in {refused_in:.2?}; live workers 1 s after the break: {live:?}; reason: {reason}",
            spawns - workers,
            results.len()
        );
        assert!(broken >= 1, "pending items end Broken");
        assert!(
            died <= max_restarts as usize + workers,
            "{died} tasks died: the pool kept going past max_restarts"
        );
        assert!(
            spawns_later <= workers + max_restarts as usize + 1 + 2,
            "{spawns_later} spawns for max_restarts {max_restarts}: a respawn storm"
        );
        match refused {
            Err(SubmitError::Broken { task, reason: r }) => {
                assert_eq!(task, Square(1));
                assert_eq!(r, reason);
            }
            other => panic!("expected SubmitError::Broken, got {other:?}"),
        }
        assert!(refused_in < Duration::from_millis(100), "{refused_in:?}");
        finish(pool);
    });
}

#[test]
fn workers_that_die_before_taking_a_task_break_the_pool() {
    run("crash_loop_dies_before_a_task", LIMIT, || {
        let scratch = Scratch::new("die-at-start");
        let max_restarts = 3u32;
        let workers = 2usize;
        // The first two spawns are good (build succeeds); every replacement
        // exits right after its handshake.
        let pool = procpool_e2e::builder()
            .worker(bad_worker("exit_after_handshake", &scratch).env("BAD_FIRST_GOOD", "2"))
            .workers(workers)
            .max_restarts(max_restarts)
            .build()
            .unwrap();
        still_works(&pool);
        let t = Instant::now();
        for pid in pool.worker_pids() {
            kill9(pid);
        }
        let futs: Vec<_> = (0..10u64)
            .map(|i| pool.submit(Square(i)).unwrap())
            .collect();
        assert!(
            wait_for(Duration::from_secs(20), || pool.broken().is_some()),
            "the pool never broke"
        );
        let took = t.elapsed();
        let reason = pool.broken().unwrap();
        for f in futs {
            assert!(f.wait_timeout(Duration::from_secs(5)), "a future hangs");
            match f.result() {
                Err(TaskError::Broken { reason: r }) => assert_eq!(r, reason),
                other => panic!("expected Broken, got {other:?}"),
            }
        }
        assert!(matches!(
            pool.submit(Square(1)),
            Err(SubmitError::Broken { .. })
        ));
        std::thread::sleep(Duration::from_millis(500));
        let spawns = scratch.spawns().len();
        assert!(
            spawns <= workers + max_restarts as usize + 1 + 2,
            "{spawns} spawns for max_restarts {max_restarts}: a respawn storm"
        );
        println!(
            "FIGURE crash_loop_dies_before_a_task: broken {took:.2?} after both workers were killed; {spawns} processes started in all; reason: {reason}"
        );
        finish(pool);
    });
}

/// SEMANTICS 18: respawn failures (here an initializer that fails on every
/// respawn of slot 0) count toward restart intensity, even while slot 1
/// keeps finishing tasks; past it the pool is broken, not respawning
/// forever.
#[test]
fn failing_respawns_of_one_slot_count_toward_restart_intensity() {
    run("respawn_failures_while_others_progress", LIMIT, || {
        let scratch = Scratch::new("slot-init-fail");
        let max_restarts = 3u32;
        let workers = 2usize;
        let pool = procpool_e2e::builder()
            .worker(
                bad_worker("init_fail", &scratch)
                    .env("BAD_FIRST_GOOD", "2")
                    .env("BAD_SLOT", "0"),
            )
            .workers(workers)
            .initializer(SetGreeting("hi".into()))
            .max_restarts(max_restarts)
            .build()
            .unwrap();
        let slot0 = pool.worker_pids()[0];
        kill9(slot0);
        // Slot 1 keeps making progress for three seconds.
        let t = Instant::now();
        let mut done = 0u64;
        while t.elapsed() < Duration::from_secs(3) && pool.broken().is_none() {
            match pool.submit(Square(3)) {
                Ok(f) => match f.result() {
                    Ok(9) => done += 1,
                    Err(TaskError::Broken { .. }) => break,
                    other => panic!("unexpected {other:?}"),
                },
                Err(SubmitError::Broken { .. }) => break,
                Err(other) => panic!("unexpected {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let spawns = scratch.spawns().len();
        let broken = pool.broken();
        println!(
            "FIGURE respawn_failures_while_others_progress: {spawns} processes started in {:.2?} while slot 1 finished {done} tasks; broken: {broken:?}",
            t.elapsed()
        );
        assert!(
            spawns <= workers + max_restarts as usize + 1 + 2,
            "{spawns} processes started for max_restarts {max_restarts}: slot 0 is respawned forever"
        );
        let reason = broken.expect("SEMANTICS 18: past max_restarts the pool is broken");
        assert!(
            reason.contains("refuses to initialize"),
            "the cause is named: {reason}"
        );
        finish(pool);
    });
}

#[test]
fn scattered_crashes_do_not_break_a_pool_making_progress() {
    run("scattered_crashes_2000", LIMIT, || {
        let pool = pool(2);
        let t = Instant::now();
        let results: Vec<_> = pool
            .map((0..2000u64).map(|x| SquareOrDie { x, modulus: 100 }))
            .collect();
        let took = t.elapsed();
        check_square_or_die(&results, 100);
        assert!(pool.broken().is_none());
        still_works(&pool);
        println!(
            "FIGURE scattered_crashes_2000: 2000 tasks, 20 crashes in {took:.2?}; respawns {}",
            pool.stats().respawns
        );
        finish(pool);
    });
}

/// Exactly the inputs with `x % modulus == 0` died; the others are `x*x`.
fn check_square_or_die(results: &[Result<u64, TaskError>], modulus: u64) {
    let mut died = 0;
    for (x, r) in results.iter().enumerate() {
        died += u64::from(check_one(x as u64, r, modulus));
    }
    assert_eq!(died, (results.len() as u64).div_ceil(modulus));
}

/// One `SquareOrDie` result; returns whether it died.
fn check_one(x: u64, r: &Result<u64, TaskError>, modulus: u64) -> bool {
    if x.is_multiple_of(modulus) {
        match r {
            Err(TaskError::WorkerDied { exit, task, .. }) => {
                assert_eq!(*exit, Exit::Signal(9), "input {x}");
                assert_eq!(task.as_deref(), Some("drill_square_or_die"));
                true
            }
            other => panic!("input {x} should have died: {other:?}"),
        }
    } else {
        assert_eq!(r.as_ref().ok(), Some(&(x * x)), "input {x}: {r:?}");
        false
    }
}

// ---------------------------------------------------------- initializers

#[test]
fn initializer_failing_in_one_worker_fails_the_build_naming_it() {
    run("initializer_fails_in_one_worker", LIMIT, || {
        let scratch = Scratch::new("init-fail-slot1");
        let err = procpool_e2e::builder()
            .worker(bad_worker("init_fail", &scratch).env("BAD_SLOT", "1"))
            .workers(2)
            .initializer(SetGreeting("hi".into()))
            .build()
            .unwrap_err();
        match &err {
            BuildError::Initializer {
                worker,
                name,
                message,
            } => {
                assert_eq!(*worker, 1);
                assert_eq!(name, "set_greeting");
                assert!(
                    message.contains("refuses to initialize slot 1"),
                    "{message}"
                );
            }
            other => panic!("expected Initializer, got {other:?}"),
        }
        assert!(err.to_string().contains("worker 1"), "{err}");
        assert!(no_children_left(), "a worker survived a failed build");

        // The real worker, an initializer that fails everywhere.
        let err = builder(2)
            .initializer(drill::FailingInit("no database here".into()))
            .build()
            .unwrap_err();
        match &err {
            BuildError::Initializer { worker, .. } => {
                assert!(*worker < 2);
                assert!(
                    err.to_string().contains(&format!("worker {worker}")),
                    "{err}"
                );
                assert!(err.to_string().contains("no database here"), "{err}");
            }
            other => panic!("expected Initializer, got {other:?}"),
        }
        assert!(no_children_left(), "a worker survived a failed build");
        println!("FIGURE initializer_fails_in_one_worker: `{err}`");
    });
}

#[test]
fn hanging_initializer_fails_the_build_within_init_timeout() {
    run("initializer_hangs", LIMIT, || {
        let t = Instant::now();
        let err = builder(2)
            .initializer(drill::SlowInit { millis: 60_000 })
            .init_timeout(Duration::from_millis(500))
            .build()
            .unwrap_err();
        let took = t.elapsed();
        match &err {
            BuildError::Initializer { name, message, .. } => {
                assert_eq!(name, "drill_slow_init");
                assert!(message.contains("init timeout"), "{message}");
            }
            other => panic!("expected Initializer, got {other:?}"),
        }
        assert!(took < Duration::from_secs(5), "build took {took:?}");
        assert!(no_children_left(), "a hung initializer was left running");
        println!("FIGURE initializer_hangs: build failed after {took:.2?}: `{err}`");
    });
}

// -------------------------------------------------------------- recycling

/// `(pid, call number)` results: no process ran more than `max`, none ran a
/// task twice, none was lost. Returns the number of processes.
fn check_recycling(calls: &[(u32, u64)], max: u64) -> usize {
    let mut per_pid: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for &(pid, n) in calls {
        per_pid.entry(pid).or_default().push(n);
    }
    let mut executions = 0;
    for (pid, ns) in &mut per_pid {
        ns.sort_unstable();
        let m = ns.len() as u64;
        assert_eq!(
            *ns,
            (1..=m).collect::<Vec<_>>(),
            "pid {pid}: call numbers have a gap or a repeat (a task lost or run twice)"
        );
        assert!(m <= max, "pid {pid} ran {m} tasks (max {max})");
        executions += m;
    }
    assert_eq!(executions, calls.len() as u64);
    per_pid.len()
}

#[test]
fn max_tasks_per_worker_recycles_workers_without_losing_or_repeating_tasks() {
    run("max_tasks_per_worker", LIMIT, || {
        let pool = builder(2).max_tasks_per_worker(25).build().unwrap();
        let t = Instant::now();
        let futs: Vec<_> = (0..500).map(|_| pool.submit(CountCalls).unwrap()).collect();
        let calls: Vec<(u32, u64)> = futs.into_iter().map(|f| f.result().unwrap()).collect();
        let took = t.elapsed();
        let processes = check_recycling(&calls, 25);
        assert!(processes >= 20, "only {processes} processes for 500 tasks");

        still_works(&pool);
        finish(pool);

        // A chunk is not split: a worker may take up to a chunk more.
        let pool = builder(2).max_tasks_per_worker(25).build().unwrap();
        let calls: Vec<(u32, u64)> = pool
            .map((0..400).map(|_| CountCalls))
            .chunksize(4)
            .map(|r| r.unwrap())
            .collect();
        let chunked = check_recycling(&calls, 25 + 3);
        assert!(pool.broken().is_none());
        still_works(&pool);
        println!(
            "FIGURE max_tasks_per_worker: 500 tasks on {processes} processes (max 25 each) in {took:.2?}; 400 in chunks of 4 on {chunked}; respawns {}",
            pool.stats().respawns
        );
        finish(pool);
    });
}

// -------------------------------------------------- the parent is killed

const DOOMED_PARENT: &str = "PROCPOOL_FAULTS_DOOMED_PARENT";

/// The child "parent" process, killed and reaped however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn workers_exit_when_the_parent_is_sigkilled() {
    if std::env::var_os(DOOMED_PARENT).is_some() {
        // The child "parent": start a pool, report its workers, wait to die.
        let pool = pool(2);
        println!("WORKER_PIDS {:?}", pool.worker_pids());
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    run("parent_sigkilled", LIMIT, || {
        let mut child = KillOnDrop(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    // Its full name: this file also runs as a module of
                    // `over_tcp`.
                    &match module_path!().split_once("::") {
                        Some((_, m)) => format!("{m}::workers_exit_when_the_parent_is_sigkilled"),
                        None => "workers_exit_when_the_parent_is_sigkilled".to_owned(),
                    },
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(DOOMED_PARENT, "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        let pids: Vec<u32> = loop {
            let line = lines
                .next()
                .expect("the child parent printed its worker pids")
                .unwrap();
            // libtest prints `test <name> ... ` before the test's output.
            if let Some(at) = line.find("WORKER_PIDS ") {
                break line[at + "WORKER_PIDS ".len()..]
                    .trim_matches(|c| c == '[' || c == ']')
                    .split(", ")
                    .map(|p| p.parse().unwrap())
                    .collect();
            }
        };
        assert_eq!(pids.len(), 2);
        assert!(pids.iter().all(|&p| alive(p)));
        let t = Instant::now();
        kill9(child.0.id());
        child.0.wait().unwrap();
        let left = wait_gone(&pids, Duration::from_secs(2));
        let took = t.elapsed();
        assert!(
            left.is_empty(),
            "workers {left:?} outlived their SIGKILLed parent by 2 s"
        );
        assert!(no_children_left());
        println!(
            "FIGURE parent_sigkilled: both workers gone {took:.2?} after the parent's SIGKILL"
        );
    });
}

// --------------------------------------------------------------- shutdown

#[test]
fn shutdown_wait_runs_10k_queued_tasks() {
    run("shutdown_wait_10k", LIMIT, || {
        let pool = pool(2);
        let futs: Vec<_> = (0..10_000u64)
            .map(|i| pool.submit(Square(i)).unwrap())
            .collect();
        let t = Instant::now();
        pool.shutdown(Shutdown::Wait);
        let took = t.elapsed();
        for (i, f) in futs.into_iter().enumerate() {
            assert!(
                f.done(),
                "future {i} not done after shutdown(Wait) returned"
            );
            assert_eq!(f.result().unwrap(), (i * i) as u64);
        }
        assert!(matches!(
            pool.submit(Square(1)),
            Err(SubmitError::Shutdown { .. })
        ));
        println!("FIGURE shutdown_wait_10k: shutdown(Wait) ran the 10k queue in {took:.2?}");
        finish(pool);
    });
}

#[test]
fn shutdown_cancel_pending_resolves_10k_queued_futures_at_once() {
    run("shutdown_cancel_pending_10k", LIMIT, || {
        let pool = pool(2);
        let futs: Vec<_> = (0..10_000u64)
            .map(|_| pool.submit(Sleep { millis: 1 }).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        pool.shutdown(Shutdown::CancelPending);
        let returned = t.elapsed();
        let after = Instant::now();
        assert!(
            wait_for(Duration::from_secs(1), || futs.iter().all(|f| f.done())),
            "futures still pending 1 s after shutdown(CancelPending) returned"
        );
        let all_done = after.elapsed();
        let (mut ran, mut cancelled) = (0, 0);
        for f in futs {
            match f.result() {
                Ok(1) => ran += 1,
                Err(TaskError::Cancelled) => cancelled += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(cancelled >= 9000, "only {cancelled} cancelled");
        assert!(
            returned < Duration::from_secs(5),
            "shutdown took {returned:?}"
        );
        println!(
            "FIGURE shutdown_cancel_pending_10k: shutdown returned in {returned:.2?}; all 10k futures done {all_done:.2?} after that ({ran} ran, {cancelled} cancelled)"
        );
        finish(pool);
    });
}

#[test]
fn dropping_the_pool_resolves_futures_other_threads_wait_on() {
    run("drop_with_futures_elsewhere", LIMIT, || {
        let pool = pool(2);
        let sleeps: Vec<_> = (0..100)
            .map(|_| pool.submit(Sleep { millis: 5 }).unwrap())
            .collect();
        let awaited = pool.submit(Square(9)).unwrap();
        let waiter = std::thread::spawn(move || {
            let values: Vec<u64> = sleeps.into_iter().map(|f| f.result().unwrap()).collect();
            let awaited = futures_executor::block_on(awaited).unwrap();
            (values, awaited)
        });
        let t = Instant::now();
        drop(pool);
        let dropped = t.elapsed();
        let (values, awaited) = waiter.join().unwrap();
        assert_eq!(values, vec![5; 100]);
        assert_eq!(awaited, 81);
        assert!(no_children_left());
        println!("FIGURE drop_with_futures_elsewhere: drop took {dropped:.2?} (ran the queue)");
    });
}

// -------------------------------------------------------------- the long one

/// Maps `n` inputs of which every hundredth kills its worker, checking each
/// result as it arrives (nothing of the run is kept): one per input, and
/// exactly the killed inputs fail. Returns the time taken.
fn map_with_one_percent_crashes(pool: &ProcessPool, n: u64, chunksize: usize) -> Duration {
    let t = Instant::now();
    let (mut count, mut died) = (0u64, 0u64);
    for (x, r) in pool
        .map((0..n).map(|x| SquareOrDie { x, modulus: 100 }))
        .chunksize(chunksize)
        .enumerate()
    {
        died += u64::from(check_one(x as u64, &r, 100));
        count += 1;
    }
    assert_eq!(count, n, "one result per input");
    assert_eq!(died, n / 100, "exactly the killed inputs died");
    t.elapsed()
}

/// Chunks of 64 with 1 % crashes: a crash costs exactly the task that was
/// running, never the chunk's finished results (which the worker reported
/// through its reply ring, or over TCP on a socket it waits to see sent)
/// nor its tasks not yet begun (sent again to the replacement).
#[test]
fn chunked_map_with_one_percent_crashes_loses_only_the_killed_inputs() {
    const N: u64 = 20_000;
    run(
        "chunked_map_one_percent_crashes",
        Duration::from_secs(300),
        || {
            let pool = pool(2);
            let took = map_with_one_percent_crashes(&pool, N, 64);
            assert!(pool.broken().is_none());
            still_works(&pool);
            println!(
                "FIGURE chunked_map_one_percent_crashes: {N} tasks in chunks of 64, {} crashes in {took:.2?}; respawns {}",
                N / 100,
                pool.stats().respawns
            );
            finish(pool);
        },
    );
}

/// The same over TCP by a worker without a keeper process (a pool whose
/// frame cap is under 1 MiB gives its TCP workers none; a keeper that
/// cannot start leaves the same path): the worker writes each note on the
/// connection itself and waits until the kernel has sent it, and a crash
/// still costs exactly the running input.
#[test]
fn chunked_map_with_one_percent_crashes_over_tcp_without_a_keeper() {
    const N: u64 = 5_000;
    run(
        "chunked_map_one_percent_crashes_no_keeper",
        Duration::from_secs(300),
        || {
            let pool = builder(2)
                .transport(procpool::Transport::Tcp)
                .max_frame_bytes(512 << 10)
                .build()
                .expect("pool starts");
            for pid in pool.worker_pids() {
                let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .unwrap_or_default();
                assert_eq!(kids.trim(), "", "worker {pid} started a keeper");
            }
            let took = map_with_one_percent_crashes(&pool, N, 64);
            assert!(pool.broken().is_none());
            still_works(&pool);
            println!(
                "FIGURE chunked_map_one_percent_crashes_no_keeper: {N} tasks in chunks of 64, {} crashes in {took:.2?}",
                N / 100
            );
            finish(pool);
        },
    );
}

#[test]
fn many_tasks_with_one_percent_crashes() {
    const N: u64 = 200_000;
    run(
        "many_tasks_one_percent_crashes",
        Duration::from_secs(600),
        || {
            let pool = pool(2);
            let peak = PeakMemory::start();
            let took = map_with_one_percent_crashes(&pool, N, 1);
            assert!(pool.broken().is_none());
            still_works(&pool);
            let grew = peak.growth_mib();
            println!(
                "FIGURE many_tasks_one_percent_crashes: {N} tasks, {} crashes in {took:.2?} ({:.0} tasks/s); respawns {}; parent peak memory +{grew:.1} MiB",
                N / 100,
                N as f64 / took.as_secs_f64(),
                pool.stats().respawns
            );
            assert!(
                grew < 64.0,
                "the parent's peak memory rose by {grew:.1} MiB"
            );
            finish(pool);
        },
    );
}
