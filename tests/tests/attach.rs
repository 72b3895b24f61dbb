//! Attach mode: workers the pool did not start join over a local socket in
//! a 0700 directory, after a uid check and a secret-token handshake.

use std::process::{Command, Stdio};
use std::time::Duration;

use procpool::{Launcher, ProcessPool};
use procpool_e2e::watchdog;
use procpool_tasks::{Square, WhoAmI};

const LIMIT: Duration = Duration::from_secs(30);
const WORKER: &str = env!("CARGO_BIN_EXE_procpool-test-worker");

fn attach_pool(n: usize) -> ProcessPool {
    ProcessPool::builder()
        .launcher(Launcher::Attach)
        .workers(n)
        .handshake_timeout(Duration::from_millis(500))
        .build()
        .expect("attach pool starts")
}

#[test]
fn workers_started_elsewhere_attach_and_run_tasks() {
    watchdog(LIMIT, || {
        let pool = attach_pool(2);
        let info = pool.attach_info().expect("attach mode has an address");
        // The directory is private to this user.
        let dir = info.socket().expect("a local socket").parent().unwrap();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o700, "socket directory mode {mode:o}");
        // Queued before any worker exists: runs once one attaches.
        let early = pool.submit(Square(3)).unwrap();
        let mut kids: Vec<_> = (0..2)
            .map(|_| info.command(WORKER).stdin(Stdio::null()).spawn().unwrap())
            .collect();
        assert!(
            pool.wait_for_workers(2, Duration::from_secs(10)),
            "workers did not attach"
        );
        assert_eq!(early.result().unwrap(), 9);
        let pids: std::collections::BTreeSet<u32> = (0..40)
            .map(|_| pool.submit(WhoAmI).unwrap())
            .collect::<Vec<_>>()
            .into_iter()
            .map(|f| f.result().unwrap().1)
            .collect();
        let kid_pids: std::collections::BTreeSet<u32> = kids.iter().map(|k| k.id()).collect();
        assert!(
            pids.is_subset(&kid_pids),
            "tasks ran on {pids:?}, attached {kid_pids:?}"
        );
        drop(pool);
        for k in &mut kids {
            let status = k.wait().unwrap();
            assert!(status.success(), "attached worker exited with {status}");
        }
        assert!(!dir.exists(), "the socket directory is removed at shutdown");
    });
}

#[test]
fn wrong_token_and_silent_peers_are_refused_and_the_pool_goes_on() {
    watchdog(LIMIT, || {
        let pool = attach_pool(1);
        let info = pool.attach_info().unwrap();
        // Wrong token: the worker is told no and exits with an error.
        let out = Command::new(WORKER)
            .arg("--connect")
            .arg(info.address())
            .env("PROCPOOL_TOKEN", "00".repeat(32))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("wrong secret token"), "stderr: {err}");
        // No token at all: refused before connecting.
        let out = Command::new(WORKER)
            .arg("--connect")
            .arg(info.address())
            .output()
            .unwrap();
        assert!(!out.status.success());
        // A peer that connects and says nothing is dropped after the
        // handshake timeout and does not hold the slot.
        let silent = std::os::unix::net::UnixStream::connect(info.socket().unwrap()).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1];
        let n = std::io::Read::read(&mut &silent, &mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the pool closed the silent connection");
        // A good worker still gets the one slot.
        let mut kid = info.command(WORKER).spawn().unwrap();
        assert!(pool.wait_for_workers(1, Duration::from_secs(10)));
        assert_eq!(pool.submit(Square(12)).unwrap().result().unwrap(), 144);
        drop(pool);
        assert!(kid.wait().unwrap().success());
    });
}

#[test]
fn another_user_cannot_reach_the_socket() {
    watchdog(LIMIT, || {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test runs a worker as another user and needs root (CI runs as root)"
        );
        let pool = attach_pool(1);
        let info = pool.attach_info().unwrap();
        // Run the worker as `nobody` (uid 65534): the 0700 directory keeps it
        // out before the uid check is even needed.
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                WORKER,
                "--connect",
            ])
            .arg(info.address())
            .env("PROCPOOL_TOKEN", info.secret_hex())
            .output()
            .expect("setpriv (util-linux) runs");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot connect") || err.contains("denied"),
            "stderr: {err}"
        );
        assert!(!pool.wait_for_workers(1, Duration::from_millis(200)));
    });
}
