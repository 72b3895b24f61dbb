//! `procpool-worker`: the bundled worker binary. A `ProcessPool` started
//! with `WorkerCommand::bundled()` runs it; it serves the tasks of
//! `procpool-tasks`. Logs go to stderr (`RUST_LOG`), which the pool
//! forwards with the worker's id.
#![forbid(unsafe_code)]

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    procpool::worker::run(procpool_tasks::registry())
}
