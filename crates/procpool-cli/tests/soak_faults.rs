//! The soak's verdict can fail: `procpool soak` with a planted fault (a
//! leaked descriptor, a lost outcome) exits 1 and names it.

use std::process::Command;
use std::time::Duration;

use procpool_e2e::watchdog;

const BIN: &str = env!("CARGO_BIN_EXE_procpool");

/// Runs `procpool soak` for a few seconds with a planted fault.
fn soak_with(fault: &'static str) -> (Option<i32>, String) {
    let run = move || {
        let out = Command::new(BIN)
            .args([
                "soak",
                "--seconds",
                "3",
                "--threads",
                "2",
                "--inject",
                fault,
            ])
            .output()
            .expect("procpool runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    watchdog(Duration::from_secs(120), run)
}

#[test]
fn a_leaked_descriptor_fails_the_verdict() {
    let (code, out) = soak_with("leak-fd");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("LEAK: file descriptors"), "{out}");
    assert!(
        out.contains("/proc/") && out.contains("verdict: FAIL"),
        "{out}"
    );
}

#[test]
fn a_lost_outcome_fails_the_verdict() {
    let (code, out) = soak_with("lose-outcome");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("never resolved: its done-callback never ran") && out.contains("injected"),
        "{out}"
    );
}
