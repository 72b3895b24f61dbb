//! The worker the end-to-end tests start: the bundled worker's registry.
#![forbid(unsafe_code)]

fn main() {
    procpool::worker::run(procpool_tasks::registry())
}
