//! A worker's frame cannot make the parent reserve more memory than a
//! small multiple of the frame (issue 18 row 3): under `ulimit -v` (common
//! on clusters), a hostile 64 MiB result whose first bytes claim a 3.5 GiB
//! byte string must end in a typed error, not an allocation failure that
//! aborts the parent.
//!
//! The pool runs in a child process (this test binary, re-run with
//! `DECODE_LIMITS_CHILD` set) whose address space is capped with
//! `setrlimit(RLIMIT_AS)`: the claim limit used to be 4 GiB for this frame
//! (16 × its size, rounded up to a power of four), so bincode reserved the
//! 3.5 GiB and the child aborted.

use std::process::Command;
use std::time::Duration;

use procpool::{ProcessPool, TaskError, WorkerCommand};
use procpool_e2e::watchdog;
use procpool_tasks::Echo;

const CHILD: &str = "DECODE_LIMITS_CHILD";
const NAME: &str = "a_hostile_claim_under_ulimit_v_is_a_typed_error_not_an_abort";

/// This process's virtual size (`VmSize`), in bytes.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    kib * 1024
}

fn child() {
    use nix::sys::resource::{Resource, setrlimit};
    // Room for the pool, its threads and the 64 MiB frame, not for 3.5 GiB.
    let limit = vm_size() + (2560 << 20);
    setrlimit(Resource::RLIMIT_AS, limit, limit).unwrap();
    let pool = ProcessPool::builder()
        .worker(
            WorkerCommand::program(env!("CARGO_BIN_EXE_procpool-bad-worker"))
                .env("BAD_MODE", "huge_claim")
                .env(
                    "BAD_GOOD_WORKER",
                    env!("CARGO_BIN_EXE_procpool-test-worker"),
                ),
        )
        .workers(1)
        .build()
        .unwrap();
    match pool.submit(Echo(vec![1, 2, 3])).unwrap().result() {
        Err(TaskError::Decode { message, .. }) if message.contains("claims more memory") => {
            println!("SURVIVED with a typed error: {message}");
        }
        other => panic!("expected a decode error from the claim limit, got {other:?}"),
    }
    pool.shutdown(procpool::Shutdown::Kill);
}

#[test]
fn a_hostile_claim_under_ulimit_v_is_a_typed_error_not_an_abort() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let out = watchdog(Duration::from_secs(60), || {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("SURVIVED"),
        "the parent under ulimit -v did not survive ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
}
