//! Workers that dial in over TCP: the secret handshake refuses strangers,
//! a worker that goes silent is lost (heartbeats) and its task fails while
//! the rest go on, and `External` prints a command that works.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procpool::{Exit, Launcher, ProcessPool, ProcessPoolBuilder, TaskError, Transport};
use procpool_e2e::{still_works, watchdog};
use procpool_tasks::{Sleep, Square};

const LIMIT: Duration = Duration::from_secs(30);
const WORKER: &str = env!("CARGO_BIN_EXE_procpool-test-worker");

fn tcp(launcher: Launcher, n: usize) -> ProcessPoolBuilder {
    ProcessPool::builder()
        .launcher(launcher)
        .transport(Transport::Tcp)
        .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .workers(n)
        .handshake_timeout(Duration::from_millis(500))
}

#[test]
fn strangers_and_wrong_secrets_are_refused_over_tcp() {
    watchdog(LIMIT, || {
        let pool = tcp(Launcher::Attach, 1).build().unwrap();
        let info = pool.attach_info().unwrap();
        let address = info.address().to_owned();
        assert!(address.starts_with("tcp://127.0.0.1:"), "{address}");
        let hostport = address.trim_start_matches("tcp://").to_owned();
        // A worker with the wrong secret: refused, and it says why.
        let out = Command::new(WORKER)
            .args(["--connect", &address])
            .env("PROCPOOL_TOKEN", "00".repeat(32))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("wrong secret token"), "stderr: {err}");
        // No secret at all: it does not even try.
        let out = Command::new(WORKER)
            .args(["--connect", &address])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("PROCPOOL_TOKEN"));
        // A stranger announcing a 4 GiB frame is cut off at the handshake
        // cap without the pool allocating it; one sending HTTP is too.
        for probe in [&u32::MAX.to_le_bytes()[..], b"GET / HTTP/1.1\r\n\r\n"] {
            let mut s = TcpStream::connect(&hostport).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(probe).unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            assert!(buf.len() < 1024, "a stranger got {} bytes back", buf.len());
        }
        // A silent one is dropped after the handshake timeout.
        let mut silent = TcpStream::connect(&hostport).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let started = Instant::now();
        assert_eq!(silent.read(&mut [0u8; 1]).unwrap_or(0), 0);
        assert!(started.elapsed() < Duration::from_secs(4));
        // The one slot is still free for a worker with the secret.
        let mut kid = info.command(WORKER).spawn().unwrap();
        assert!(pool.wait_for_workers(1, Duration::from_secs(10)));
        assert_eq!(pool.submit(Square(12)).unwrap().result().unwrap(), 144);
        drop(pool);
        assert!(kid.wait().unwrap().success());
    });
}

#[test]
fn a_silent_remote_worker_is_lost_and_the_rest_go_on() {
    watchdog(LIMIT, || {
        let pool = tcp(Launcher::Attach, 1)
            .heartbeat(Duration::from_millis(100), Duration::from_millis(800))
            .build()
            .unwrap();
        let info = pool.attach_info().unwrap();
        let mut first = info.command(WORKER).stdin(Stdio::null()).spawn().unwrap();
        assert!(pool.wait_for_workers(1, Duration::from_secs(10)));
        // An idle worker keeps sending heartbeats: it is not lost.
        std::thread::sleep(Duration::from_millis(1500));
        still_works(&pool);
        // Freeze it mid-task, as a cut network or a dead node would.
        let long = pool.submit(Sleep { millis: 20_000 }).unwrap();
        let queued = pool.submit(Square(7)).unwrap();
        while long.state() != procpool::State::Running {
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = nix::unistd::Pid::from_raw(first.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        let stopped_at = Instant::now();
        match long.result().unwrap_err() {
            TaskError::WorkerDied { exit, .. } => assert_eq!(exit, Exit::Lost, "{exit}"),
            other => panic!("expected WorkerDied (lost), got {other:?}"),
        }
        let took = stopped_at.elapsed();
        assert!(took < Duration::from_secs(5), "lost after {took:?}");
        // The slot is free again; a new worker takes the queued task.
        let mut second = info.command(WORKER).stdin(Stdio::null()).spawn().unwrap();
        assert_eq!(queued.result().unwrap(), 49);
        still_works(&pool);
        drop(pool);
        assert!(second.wait().unwrap().success());
        let _ = first.kill();
        let _ = first.wait();
    });
}

#[test]
fn external_prints_a_command_that_works_and_keeps_the_secret_out_of_it() {
    watchdog(LIMIT, || {
        let pool = tcp(Launcher::External, 1)
            .worker(procpool::WorkerCommand::program(WORKER))
            .build()
            .unwrap();
        let info = pool.attach_info().unwrap();
        let line = info.command_line(std::path::Path::new(WORKER));
        assert!(
            !line.contains(&info.secret_hex()),
            "the secret is printed: {line}"
        );
        assert!(line.contains("--connect tcp://127.0.0.1:"), "{line}");
        // Run it exactly as printed, through a shell.
        let mut kid = Command::new("sh").args(["-c", &line]).spawn().unwrap();
        assert!(pool.wait_for_workers(1, Duration::from_secs(10)));
        assert_eq!(pool.submit(Square(9)).unwrap().result().unwrap(), 81);
        drop(pool);
        assert!(kid.wait().unwrap().success());
    });
}
