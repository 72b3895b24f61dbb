//! `procpool`: placeholder, being written.
#![forbid(unsafe_code)]

fn main() {
    procpool::worker::run_if_worker(procpool_tasks::registry());
}
