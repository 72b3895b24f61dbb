//! The chaos soak, end to end: a short run against real worker processes
//! must give a passing verdict. Alone in its test binary: it counts this
//! process's descriptors, threads and children. (`soak_faults.rs` shows
//! the verdict failing for a planted fault.)

use std::time::Duration;

use procpool::WorkerCommand;
use procpool_cli::soak::{self, ledger::Kind};
use procpool_e2e::watchdog;

const BIN: &str = env!("CARGO_BIN_EXE_procpool");

/// 20 s of chaos on a process pool and a thread pool; every promise kept.
/// `PROCPOOL_SOAK_SEED` replays an earlier run's choices.
#[test]
fn a_short_soak_keeps_every_promise() {
    let mut opts = soak::Options::new(Duration::from_secs(20), WorkerCommand::program(BIN));
    if let Some(seed) = std::env::var("PROCPOOL_SOAK_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
    {
        opts.seed = seed;
    }
    opts.hang_grace = Duration::from_secs(30);
    println!(
        "soak seed {:#x} (PROCPOOL_SOAK_SEED={:x} replays it)",
        opts.seed, opts.seed
    );
    let report = watchdog(Duration::from_secs(90), move || soak::run(&opts));
    println!("{report}");
    assert!(report.passed(), "{report}");
    // It really did what it says: the chaos happened.
    for kind in [
        Kind::Value,
        Kind::Panicked,
        Kind::WorkerDied,
        Kind::Cancelled,
    ] {
        assert!(
            soak::count(&report, kind) > 0,
            "no `{kind}` outcome:\n{report}"
        );
    }
    assert!(report.tally.inputs > 1000, "{report}");
    assert!(report.rebuilds >= 3, "{report}");
}
