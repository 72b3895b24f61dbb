//! Helpers for the end-to-end tests: the test worker, pools, a watchdog,
//! process checks.
#![forbid(unsafe_code)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use procpool::{Executor, ProcessPool, ProcessPoolBuilder, ThreadPool, Transport, WorkerCommand};
use procpool_tasks::Square;

/// The worker binary built with the tests (`procpool-test-worker`), found
/// through `CARGO_BIN_EXE_*` (expanded in the calling test crate).
#[macro_export]
macro_rules! test_worker {
    () => {
        ::procpool::WorkerCommand::program(env!("CARGO_BIN_EXE_procpool-test-worker"))
    };
}

/// Makes `mod $name { fn process(); fn thread(); }`: two tests, each
/// running `$body(&pool)` on a fresh process or thread pool of `$workers`
/// under a one-minute watchdog, then checking the pool still works.
#[macro_export]
macro_rules! both_pools {
    ($name:ident, $workers:expr, $body:ident) => {
        mod $name {
            use super::*;

            #[test]
            fn process() {
                $crate::watchdog(::std::time::Duration::from_secs(60), || {
                    let pool = $crate::process_pool_of($crate::test_worker!(), $workers);
                    $body(&pool);
                    $crate::still_works(&pool);
                });
            }

            #[test]
            fn thread() {
                $crate::watchdog(::std::time::Duration::from_secs(60), || {
                    let pool = $crate::thread_pool($workers);
                    $body(&pool);
                    $crate::still_works(&pool);
                });
            }
        }
    };
}

/// The transport the suite runs over: TCP loopback in the `over_tcp` test
/// binary (which includes the other suites' files as modules), local
/// sockets everywhere else. One suite, parameterised over transports.
pub fn transport() -> Transport {
    let exe = std::env::current_exe().unwrap_or_default();
    let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.starts_with("over_tcp") {
        Transport::Tcp
    } else {
        Transport::Local
    }
}

/// `ProcessPool::builder()` on the suite's [`transport`] (TCP pools listen
/// on loopback only).
pub fn builder() -> ProcessPoolBuilder {
    let b = ProcessPool::builder().transport(transport());
    if transport() == Transport::Tcp {
        b.listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
    } else {
        b
    }
}

/// A process pool of `n` workers running `worker`.
pub fn process_pool_of(worker: WorkerCommand, n: usize) -> ProcessPool {
    builder()
        .worker(worker)
        .workers(n)
        .build()
        .expect("process pool starts")
}

/// A thread pool of `n` threads.
pub fn thread_pool(n: usize) -> ThreadPool {
    ThreadPool::builder()
        .workers(n)
        .build()
        .expect("thread pool starts")
}

/// The pool still computes a normal task correctly.
pub fn still_works(pool: &impl Executor) {
    assert_eq!(pool.submit(Square(12)).unwrap().result().unwrap(), 144);
}

/// No live child process of this test binary remains (within 5 s).
pub fn no_children_left() -> bool {
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let kids: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        let rest = s.rsplit(')').next()?.to_owned();
                        let mut it = rest.split_whitespace();
                        let state = it.next()?.to_owned();
                        let ppid: u32 = it.next()?.parse().ok()?;
                        Some(ppid == me && state != "Z")
                    })
                    .unwrap_or(false)
            })
            .collect();
        if kids.is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!("children left: {kids:?}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit`
/// (a hang becomes a failure with a message, not a CI time-out).
pub fn watchdog<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(limit) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(Ok(v)) => v,
            Ok(Err(p)) | Err(p) => std::panic::resume_unwind(p),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: the test did not finish within {limit:?} (a hang)")
        }
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state is the field after the parenthesised command name.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Waits up to `limit` for every pid to be gone; returns the survivors.
pub fn wait_gone(pids: &[u32], limit: Duration) -> Vec<u32> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Open descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The environment variable that tells a re-run test binary which test to
/// run for real (see [`in_child`]).
pub const CHILD_ENV: &str = "PROCPOOL_E2E_CHILD";

/// Runs `body` in a child process, for a test whose hang (a deadlock in
/// `shutdown` or `Drop`) would otherwise take the whole test binary down.
///
/// In the test process this re-runs the test binary with `--exact name`
/// and [`CHILD_ENV`] set, kills it if it has not finished within `limit`,
/// and fails (with the child's output) unless it exited successfully. In
/// that child, it runs `body`. `name` is the test's path as libtest names
/// it (`module::test` for a test in a module).
pub fn in_child(name: &str, limit: Duration, body: impl FnOnce()) {
    use std::os::unix::process::CommandExt;
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let log_path = std::env::temp_dir().join(format!(
        "procpool-e2e-child-{}-{}.log",
        std::process::id(),
        name.replace("::", "-")
    ));
    let log = std::fs::File::create(&log_path).expect("a log file for the child test");
    let err = log.try_clone().expect("a second handle on the log file");
    let t = Instant::now();
    let mut child = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .expect("the test binary re-runs itself");
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for the child test") {
            break Some(s);
        }
        if t.elapsed() > limit {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    // Show what the child printed (FIGURE lines, panics) in our output.
    println!("{output}");
    match status {
        None => panic!(
            "watchdog: the child test `{name}` did not finish within {limit:?} (a hang); its output is above"
        ),
        Some(s) if !s.success() => {
            panic!("the child test `{name}` failed ({s}); its output is above")
        }
        Some(_) => {
            assert!(
                output.contains("1 passed"),
                "the child test `{name}` did not run (wrong name?); its output is above"
            );
        }
    }
}

/// The running test's name as libtest gives it (`module::test` for a test
/// in a module): libtest runs each test on a thread of that name.
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .expect("libtest names the thread of each test")
        .to_owned()
}

/// Runs the current test's `body` alone in a child process (this test
/// binary again, `--exact`), under a watchdog of `limit` there and a kill
/// a little later from here: for a test that counts its process's
/// children or descriptors (other tests' workers and sockets must not be
/// counted; over TCP, 130 other tests run beside it) or whose hang would
/// take the whole binary down.
pub fn in_own_process(limit: Duration, body: impl FnOnce() + Send + 'static) {
    in_child(&test_name(), limit + Duration::from_secs(5), move || {
        watchdog(limit, body)
    });
}

/// Runs a test body in its own process (see [`in_own_process`]) with
/// `serial` held (one such test at a time in its binary: they count
/// processes and time recoveries), and prints its wall time as a
/// `FIGURE` line.
pub fn run_alone(
    serial: &std::sync::Mutex<()>,
    name: &str,
    limit: Duration,
    f: impl FnOnce() + Send + 'static,
) {
    let _alone = serial.lock().unwrap_or_else(|p| p.into_inner());
    let name = name.to_owned();
    in_own_process(limit, move || {
        let t = Instant::now();
        f();
        println!("FIGURE {name}: wall {:.2?}", t.elapsed());
    });
}
