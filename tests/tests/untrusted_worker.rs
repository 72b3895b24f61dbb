//! Every worker is untrusted (issue 18, the worker-side rows; issue 13's
//! stale secret directory): a worker that floods its output, stops
//! reading, forges answers, truncates its reply ring, never starts its
//! tasks or dials in again as someone else must cost at most itself, and
//! what a task can see of the pool's secrets is nothing.
//!
//! Each test runs under a watchdog. Tests whose failure could take the
//! whole test binary down (the parent's memory, a SIGBUS in the parent, a
//! parent that is SIGKILLed) run their pool in a child process: this test
//! binary re-executed with `--exact NAME` and `UNTRUSTED_CHILD` set.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use procpool::{Launcher, ProcessPool, ProcessPoolBuilder, Transport, WorkerCommand};
use procpool_e2e::{alive, wait_gone, watchdog};
use procpool_tasks::probe::{self, Dumpable, Environment, Print, PrintStyle};
use procpool_tasks::{Echo, Square};

const WORKER: &str = env!("CARGO_BIN_EXE_procpool-test-worker");
const BAD: &str = env!("CARGO_BIN_EXE_procpool-bad-worker");
/// Set in a re-executed copy of this binary: which part it plays.
const CHILD: &str = "UNTRUSTED_CHILD";

// ---------------------------------------------------------------- helpers

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "procpool-untrusted-{}-{name}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Pids of the spawns claimed so far (the bad worker's `BAD_DIR`).
    fn spawns(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for e in std::fs::read_dir(&self.0).unwrap().flatten() {
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u64>().is_ok())
            {
                let deadline = Instant::now() + Duration::from_secs(2);
                loop {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    if let Ok(p) = text.trim().parse::<u32>() {
                        pids.push(p);
                        break;
                    }
                    assert!(Instant::now() < deadline, "a spawn wrote no pid");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        pids
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The misbehaving worker in `mode`; spawns claim ordinals in `scratch`.
fn bad_worker(mode: &str, scratch: &Scratch) -> WorkerCommand {
    WorkerCommand::program(BAD)
        .env("BAD_MODE", mode)
        .env("BAD_GOOD_WORKER", WORKER)
        .env("BAD_DIR", scratch.path())
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A pool whose spawned workers dial back over TCP loopback.
fn tcp_builder() -> ProcessPoolBuilder {
    ProcessPool::builder()
        .transport(Transport::Tcp)
        .listen(loopback())
}

/// Re-executes this test binary to run test `name` alone with
/// `UNTRUSTED_CHILD=role` and `env`; stdin and stdout piped, stderr piped
/// for the role `print` (which measures it) and inherited otherwise.
fn child(name: &str, role: &str, env: &[(&str, &Path)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if role == "print" {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("re-run the test binary")
}

/// Waits for `child` to exit, killing it (and failing) after `limit`.
fn wait_child(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child process did not finish within {limit:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads lines of `child`'s stdout until one equals `READY`; returns the
/// lines before it.
fn until_ready(child: &mut Child) -> Vec<String> {
    let out = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(out).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        // libtest prints `test NAME ... ` without a newline before it.
        if line.ends_with("READY") {
            // Keep draining in the background so the child never blocks.
            std::thread::spawn(move || for _ in lines {});
            return seen;
        }
        seen.push(line);
    }
    panic!("the child ended before it was ready; it printed {seen:?}");
}

/// This process's `VmHWM` (peak resident memory), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Waits up to `limit` for `path` to exist; returns its text.
fn wait_file(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- row 1

/// What the forwarded output looked like, measured as it streamed by
/// (never held whole).
#[derive(Debug, Default)]
struct Forwarded {
    bytes: u64,
    x_bytes: u64,
    longest_line: usize,
    raw_control: u64,
    cut_marks: u64,
    escaped_esc: bool,
}

fn measure_forwarded(r: impl Read) -> Forwarded {
    let mut r = BufReader::with_capacity(1 << 20, r);
    let mut f = Forwarded::default();
    let mut line = 0usize;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let buf = r.fill_buf().unwrap();
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        f.bytes += n as u64;
        for &b in buf {
            match b {
                b'x' => f.x_bytes += 1,
                b'\n' => {
                    f.longest_line = f.longest_line.max(line);
                    line = 0;
                    continue;
                }
                b'\t' => {}
                0..=0x1f | 0x7f => f.raw_control += 1,
                _ => {}
            }
            line += 1;
        }
        // Marks and escapes may straddle reads: look at a window.
        tail.extend_from_slice(&buf[..n.min(1 << 16)]);
        tail.extend_from_slice(&buf[n.saturating_sub(1 << 16)..]);
        let text = String::from_utf8_lossy(&tail);
        f.cut_marks += text.matches("[cut]").count() as u64;
        f.escaped_esc |= text.contains("\\x1b") || text.contains("\\u{1b}");
        tail.clear();
        tail.extend_from_slice(&buf[n.saturating_sub(64)..]);
        r.consume(n);
    }
    f.longest_line = f.longest_line.max(line);
    f
}

/// Row 1: a task that prints 1 GiB without a newline, a `\r` progress bar
/// and terminal escapes: the parent forwards it in bounded, escaped pieces
/// and its memory stays flat; the task completes and the pool goes on.
#[test]
fn a_task_printing_1_gib_without_a_newline_leaves_the_parent_flat() {
    const NAME: &str = "a_task_printing_1_gib_without_a_newline_leaves_the_parent_flat";
    if std::env::var(CHILD).is_ok() {
        let pool = ProcessPool::builder()
            .worker(WorkerCommand::program(WORKER))
            .workers(1)
            .build()
            .unwrap();
        let small = Print {
            bytes: 1 << 20,
            style: PrintStyle::Blob,
            to_stderr: false,
        };
        assert_eq!(pool.submit(small).unwrap().result().unwrap(), 1 << 20);
        let before = peak_rss_kib();
        let blob = Print {
            bytes: 1 << 30,
            style: PrintStyle::Blob,
            to_stderr: false,
        };
        assert_eq!(pool.submit(blob).unwrap().result().unwrap(), 1 << 30);
        let progress = Print {
            bytes: 64 << 20,
            style: PrintStyle::Progress,
            to_stderr: true,
        };
        assert_eq!(pool.submit(progress).unwrap().result().unwrap(), 64 << 20);
        let control = Print {
            bytes: probe::CONTROL_SAMPLE.len() as u64,
            style: PrintStyle::Control,
            to_stderr: false,
        };
        pool.submit(control).unwrap().result().unwrap();
        assert_eq!(pool.submit(Square(12)).unwrap().result().unwrap(), 144);
        drop(pool);
        // The forwarding thread may still be writing the pipe's last bytes.
        std::thread::sleep(Duration::from_secs(1));
        let after = peak_rss_kib();
        println!("PEAK {before} {after}");
        return;
    }
    watchdog(Duration::from_secs(300), || {
        let t = Instant::now();
        let mut c = child(NAME, "print", &[]);
        let err = c.stderr.take().unwrap();
        let measured = std::thread::spawn(move || measure_forwarded(err));
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = wait_child(&mut c, Duration::from_secs(280));
        let f = measured.join().unwrap();
        println!(
            "FIGURE print_1_gib: {f:?}, {:.1?}; child said {out:?}",
            t.elapsed()
        );
        assert!(status.success(), "the child failed ({status}): {out}");
        let peak: Vec<u64> = out
            .lines()
            .find_map(|l| l.split_once("PEAK ").map(|(_, p)| p))
            .expect("the child reports its peak memory")
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect();
        let grew_mib = (peak[1].saturating_sub(peak[0])) / 1024;
        println!(
            "FIGURE print_1_gib: parent peak RSS {} → {} KiB",
            peak[0], peak[1]
        );
        assert!(
            grew_mib < 64,
            "the parent's peak memory grew by {grew_mib} MiB while a worker printed 1 GiB"
        );
        assert!(
            f.x_bytes >= 1 << 30,
            "not all the output was forwarded: {f:?}"
        );
        assert!(
            f.longest_line <= 16 << 10,
            "a forwarded line of {} bytes",
            f.longest_line
        );
        assert!(f.cut_marks > 0, "cut lines are not marked: {f:?}");
        assert_eq!(
            f.raw_control, 0,
            "control characters reached the terminal: {f:?}"
        );
        assert!(
            f.escaped_esc,
            "the escape character is not shown escaped: {f:?}"
        );
    });
}

// ---------------------------------------------------------------- row 4

/// Row 4: a worker that stops reading its socket while large inputs are
/// queued for it blocks no `submit`, no `cancel` and no other worker's
/// results; it is killed after the write limit and its tasks run on its
/// replacement.
#[test]
fn a_worker_that_stops_reading_blocks_no_caller_and_is_replaced() {
    watchdog(Duration::from_secs(60), || {
        let scratch = Scratch::new("stop-reading");
        let pool = ProcessPool::builder()
            .worker(
                bad_worker("stop_reading", &scratch)
                    .env("BAD_SLOT", "1")
                    .env("BAD_FIRST_BAD", "2"),
            )
            .workers(2)
            .write_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let mut slowest = Duration::ZERO;
        let mut timed = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            slowest = slowest.max(t.elapsed());
        };
        let mut echoes = Vec::new();
        for i in 0..8u8 {
            timed(&mut || echoes.push(pool.submit(Echo(vec![i; 4 << 20])).unwrap()));
        }
        let mut squares = Vec::new();
        for i in 0..20u64 {
            timed(&mut || squares.push(pool.submit(Square(i)).unwrap()));
        }
        let mut cancelled = false;
        let last = echoes.last().unwrap();
        timed(&mut || cancelled = last.cancel());
        println!("FIGURE stop_reading: slowest submit/cancel {slowest:?}");
        assert!(
            slowest < Duration::from_millis(1000),
            "a submit or cancel blocked for {slowest:?} on a worker that stopped reading"
        );
        let t = Instant::now();
        for (i, f) in squares.into_iter().enumerate() {
            assert_eq!(f.result().unwrap(), (i * i) as u64);
        }
        let n = echoes.len();
        for (i, f) in echoes.into_iter().enumerate() {
            if i == n - 1 && cancelled {
                assert!(f.is_cancelled());
                continue;
            }
            let bytes = f.result().unwrap();
            assert!(bytes.len() == 4 << 20 && bytes.iter().all(|&b| b == i as u8));
        }
        println!(
            "FIGURE stop_reading: all done {:.1?} after the last call",
            t.elapsed()
        );
        let spawns = scratch.spawns();
        assert!(
            spawns.len() >= 3,
            "the stalled worker was not replaced: {spawns:?}"
        );
        assert_eq!(pool.submit(Square(12)).unwrap().result().unwrap(), 144);
        drop(pool);
        assert!(wait_gone(&spawns, Duration::from_secs(5)).is_empty());
    });
}

// ---------------------------------------------------------------- row 5

/// Row 5: worker B claiming to have withdrawn worker A's task does not make
/// `cancel()` return `true` while A still runs it.
#[test]
fn another_workers_withdrawn_answer_does_not_cancel_a_task() {
    watchdog(Duration::from_secs(30), || {
        let scratch = Scratch::new("forge");
        let pool = ProcessPool::builder()
            .worker(bad_worker("forge_withdrawn", &scratch))
            .workers(2)
            .build()
            .unwrap();
        // Slot 0 (the first ready slot) takes it and holds it unstarted.
        let f = pool.submit(Square(9)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let said = f.cancel();
        assert!(
            !said,
            "cancel() returned true on the strength of another worker's answer"
        );
        assert_eq!(f.result().unwrap(), 81, "the task ran on its own worker");
    });
}

// ---------------------------------------------------------------- row 6

fn assert_no_secret(report: &probe::EnvReport, secret_hex: &str) {
    let environ = String::from_utf8_lossy(&report.proc_environ);
    for (what, text) in [
        ("std::env::vars", report.vars.join("\n")),
        ("/proc/self/environ", environ.into_owned()),
        ("the env program", report.env_program.clone()),
    ] {
        assert!(
            !text.contains("PROCPOOL_TOKEN"),
            "{what} of a task shows PROCPOOL_TOKEN:\n{text}"
        );
        assert!(
            !text.contains(secret_hex),
            "{what} of a task shows the pool's secret"
        );
    }
}

/// Row 6: a task (and any program it starts) sees no secret in its
/// environment, whether its worker was spawned over TCP or attached.
#[test]
fn a_task_sees_no_secret_in_its_environment() {
    watchdog(Duration::from_secs(60), || {
        let pool = tcp_builder()
            .worker(WorkerCommand::program(WORKER))
            .workers(1)
            .build()
            .unwrap();
        let secret = pool.attach_info().expect("a TCP pool").secret_hex();
        let report = pool.submit(Environment).unwrap().result().unwrap();
        assert!(
            report
                .vars
                .iter()
                .any(|v| v.starts_with("PROCPOOL_WORKER_ID=")),
            "the probe does not see the worker's environment at all"
        );
        assert_no_secret(&report, &secret);
        // Nor does the worker's keeper (its second process on TCP) hold it.
        let pid = pool.worker_pids()[0];
        let keepers: Vec<u32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect();
        assert_eq!(keepers.len(), 1, "one keeper: {keepers:?}");
        let environ = std::fs::read(format!("/proc/{}/environ", keepers[0])).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        assert!(
            environ.contains("PROCPOOL_KEEPER="),
            "not the keeper's environment"
        );
        assert!(
            !environ.contains("PROCPOOL_TOKEN") && !environ.contains(&secret),
            "the keeper's environment holds the secret"
        );
        drop(pool);

        let pool = ProcessPool::builder()
            .launcher(Launcher::Attach)
            .workers(1)
            .build()
            .unwrap();
        let info = pool.attach_info().unwrap();
        let mut kid = info.command(WORKER).stdin(Stdio::null()).spawn().unwrap();
        assert!(pool.wait_for_workers(1, Duration::from_secs(10)));
        let report = pool.submit(Environment).unwrap().result().unwrap();
        assert_no_secret(&report, &info.secret_hex());
        drop(pool);
        assert!(kid.wait().unwrap().success());
    });
}

/// Row 6: a compromised worker that dials in again with its own key, with
/// no ticket or with its own (already used) ticket, is refused; the pool
/// does not even prove that it knows that key unless the ticket is the
/// worker's own.
#[test]
fn a_worker_cannot_dial_in_again_as_another() {
    watchdog(Duration::from_secs(60), || {
        let scratch = Scratch::new("redial");
        let report_path = scratch.path().join("report");
        let pool = tcp_builder()
            .worker(
                bad_worker("redial", &scratch)
                    .env("BAD_FIRST_BAD", "1")
                    .env("BAD_OUT", &report_path),
            )
            .workers(1)
            .handshake_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let report = wait_file(&report_path, Duration::from_secs(20));
        println!("FIGURE redial: {report}");
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), 2, "{report}");
        assert!(
            !report.contains("ACCEPTED"),
            "a second dial-in was accepted: {report}"
        );
        assert!(
            !lines[0].contains("pool proved key: true"),
            "with no ticket the pool used the worker's key: it is the pool's own secret: {report}"
        );
        assert!(lines[1].contains("refused"), "{report}");
        assert_eq!(pool.submit(Square(12)).unwrap().result().unwrap(), 144);
    });
}

/// Row 6: a pool that spawns its own workers over TCP refuses a stranger
/// that dials in with the right secret but no ticket of a worker it
/// started.
#[test]
fn a_spawn_pool_refuses_a_stranger_with_the_secret() {
    watchdog(Duration::from_secs(60), || {
        let pool = tcp_builder()
            .worker(WorkerCommand::program(WORKER))
            .workers(1)
            .build()
            .unwrap();
        let info = pool.attach_info().unwrap();
        let out = info.command(WORKER).stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        println!("FIGURE stranger: {err}");
        assert!(!out.status.success(), "the stranger was served: {err}");
        assert!(
            err.contains("did not start"),
            "the stranger was not refused as one the pool did not start: {err}"
        );
        assert_eq!(pool.submit(Square(12)).unwrap().result().unwrap(), 144);
    });
}

// ---------------------------------------------------------------- row 7

/// Row 7: a worker cannot shrink or grow its reply ring (it is sealed),
/// so the parent never takes a SIGBUS from it; the pool goes on.
#[test]
fn a_worker_cannot_truncate_its_reply_ring() {
    const NAME: &str = "a_worker_cannot_truncate_its_reply_ring";
    if let Ok(out) = std::env::var("UNTRUSTED_OUT") {
        let scratch = Scratch::new("truncate");
        let pool = ProcessPool::builder()
            .worker(
                bad_worker("truncate_ring", &scratch)
                    .env("BAD_FIRST_BAD", "1")
                    .env("BAD_OUT", &out),
            )
            .workers(1)
            .build()
            .unwrap();
        wait_file(Path::new(&out), Duration::from_secs(20));
        for i in 0..50u64 {
            assert_eq!(pool.submit(Square(i)).unwrap().result().unwrap(), i * i);
        }
        println!("POOL OK");
        return;
    }
    watchdog(Duration::from_secs(60), || {
        let scratch = Scratch::new("truncate-parent");
        let report = scratch.path().join("report");
        let mut c = child(NAME, "truncate", &[("UNTRUSTED_OUT", &report)]);
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = wait_child(&mut c, Duration::from_secs(50));
        let seen = std::fs::read_to_string(&report).unwrap_or_default();
        println!("FIGURE truncate_ring: {seen:?}, parent {status}");
        assert!(
            status.code() == Some(0),
            "the parent process died ({status}); the worker saw {seen:?}"
        );
        assert!(out.contains("POOL OK"), "{out}");
        for what in ["shrink", "grow"] {
            let line = seen.lines().find(|l| l.starts_with(what)).unwrap_or("");
            assert!(
                line.contains("Err"),
                "the worker could {what} its ring: {seen}"
            );
        }
    });
}

// ---------------------------------------------------------------- row 9

/// Row 9: a worker that takes tasks and never starts or answers them is
/// treated as hung after the start limit: killed, and its tasks run on its
/// replacement.
#[test]
fn a_worker_that_never_starts_its_tasks_is_replaced() {
    watchdog(Duration::from_secs(30), || {
        let scratch = Scratch::new("silent");
        let pool = ProcessPool::builder()
            .worker(bad_worker("silent", &scratch).env("BAD_FIRST_BAD", "1"))
            .workers(1)
            .start_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let t = Instant::now();
        let fs: Vec<_> = (0..4u64).map(|i| pool.submit(Square(i)).unwrap()).collect();
        for (i, f) in fs.into_iter().enumerate() {
            assert_eq!(f.result().unwrap(), (i * i) as u64);
        }
        println!("FIGURE silent: done after {:.1?}", t.elapsed());
        let spawns = scratch.spawns();
        assert!(spawns.len() >= 2, "{spawns:?}");
        assert!(!alive(spawns[0]) || wait_gone(&spawns[..1], Duration::from_secs(2)).is_empty());
    });
}

// ---------------------------------------------------------------- row 12

/// The `procpool-PID-*` entries in `dir`.
fn pool_dirs(dir: &Path, pid: u32) -> Vec<PathBuf> {
    let prefix = format!("procpool-{pid}-");
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Row 12 and issue 13: a SIGKILLed parent with an attach pool and a TCP
/// pool leaves no secret for its TCP pool, and the directory of its attach
/// pool is removed by the next pool that starts; a live pool's directory is
/// never touched.
#[test]
fn secret_directories_of_dead_pools_are_cleaned_and_live_ones_kept() {
    const NAME: &str = "secret_directories_of_dead_pools_are_cleaned_and_live_ones_kept";
    if let Ok(role) = std::env::var(CHILD) {
        let attach = ProcessPool::builder()
            .launcher(Launcher::Attach)
            .workers(1)
            .build()
            .unwrap();
        let tcp = (role == "killed").then(|| {
            tcp_builder()
                .worker(WorkerCommand::program(WORKER))
                .workers(1)
                .build()
                .unwrap()
        });
        if let Some(p) = &tcp {
            assert_eq!(p.submit(Square(3)).unwrap().result().unwrap(), 9);
        }
        println!("READY");
        std::io::stdout().flush().unwrap();
        if role == "starter" {
            return;
        }
        // Until the test closes our stdin (or kills us).
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        drop(attach);
        return;
    }
    watchdog(Duration::from_secs(60), || {
        let tmp = Scratch::new("tmpdir");
        let env = [("TMPDIR", tmp.path())];
        let mut killed = child(NAME, "killed", &env);
        until_ready(&mut killed);
        let dead_pid = killed.id();
        let dirs = pool_dirs(tmp.path(), dead_pid);
        let secrets: Vec<_> = dirs.iter().filter(|d| d.join("secret").exists()).collect();
        println!("FIGURE stale: the killed parent had {dirs:?}");
        assert_eq!(
            secrets.len(),
            1,
            "only the attach pool writes a secret file (the TCP pool's workers get it from \
             their environment): {dirs:?}"
        );
        kill(Pid::from_raw(dead_pid as i32), Signal::SIGKILL).unwrap();
        killed.wait().unwrap();
        assert_eq!(
            pool_dirs(tmp.path(), dead_pid).len(),
            1,
            "SIGKILL leaves it"
        );

        let mut live = child(NAME, "alive", &env);
        until_ready(&mut live);
        let live_dirs = pool_dirs(tmp.path(), live.id());
        assert_eq!(live_dirs.len(), 1, "{live_dirs:?}");

        let mut starter = child(NAME, "starter", &env);
        until_ready(&mut starter);
        assert!(wait_child(&mut starter, Duration::from_secs(20)).success());

        let left = pool_dirs(tmp.path(), dead_pid);
        assert!(
            left.is_empty(),
            "the dead pool's directory is still there: {left:?}"
        );
        assert!(
            live_dirs[0].join("secret").exists(),
            "a live pool's directory was touched"
        );
        drop(live.stdin.take());
        assert!(wait_child(&mut live, Duration::from_secs(20)).success());
        assert!(
            pool_dirs(tmp.path(), live.id()).is_empty(),
            "removed at exit"
        );
    });
}

// ---------------------------------------------------------------- row 13

/// Row 13: workers and the parent are not dumpable: another process of
/// the same user cannot read their memory or `/proc/PID/environ`, nor
/// attach a debugger.
#[test]
fn workers_and_the_parent_are_not_dumpable() {
    watchdog(Duration::from_secs(30), || {
        let pool = ProcessPool::builder()
            .worker(WorkerCommand::program(WORKER))
            .workers(2)
            .build()
            .unwrap();
        for _ in 0..4 {
            let dumpable = pool.submit(Dumpable).unwrap().result().unwrap();
            assert_eq!(dumpable, Ok(false), "a worker is dumpable");
        }
        assert!(
            !nix::sys::prctl::get_dumpable().unwrap(),
            "the parent is dumpable"
        );
    });
}
