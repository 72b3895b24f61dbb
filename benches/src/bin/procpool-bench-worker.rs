//! The worker the benches start: the bundled worker's registry, or, with
//! `PROCPOOL_BENCH_ECHO_PEER` set, the raw-socket echo peer (the baseline).
#![forbid(unsafe_code)]

fn main() {
    procpool_benches::run_echo_peer_if_requested();
    procpool::worker::run(procpool_tasks::registry())
}
