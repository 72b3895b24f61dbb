//! The chaos soak over TCP: the process pools' workers dial in over
//! loopback, each with its keeper process (`procpool::worker` keeps a TCP
//! worker's sending side in a second process, so a worker that dies loses
//! nothing it reported). Every promise must hold as on a socketpair. Alone
//! in its test binary: it counts this process's descriptors, threads and
//! children.

use std::time::Duration;

use procpool::{Transport, WorkerCommand};
use procpool_cli::soak::{self, ledger::Kind};
use procpool_e2e::watchdog;

const BIN: &str = env!("CARGO_BIN_EXE_procpool");

/// 15 s of chaos on a pool over TCP (and a thread pool beside it).
#[test]
fn a_short_soak_over_tcp_keeps_every_promise() {
    let mut opts = soak::Options::new(Duration::from_secs(15), WorkerCommand::program(BIN));
    opts.transport = Transport::Tcp;
    opts.hang_grace = Duration::from_secs(30);
    println!("soak over TCP, seed {:#x}", opts.seed);
    let report = watchdog(Duration::from_secs(90), move || soak::run(&opts));
    println!("{report}");
    assert!(report.passed(), "{report}");
    for kind in [Kind::Value, Kind::WorkerDied, Kind::Cancelled] {
        assert!(
            soak::count(&report, kind) > 0,
            "no `{kind}` outcome:\n{report}"
        );
    }
    assert!(report.tally.inputs > 1000, "{report}");
}
