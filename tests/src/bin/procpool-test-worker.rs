//! The worker the end-to-end tests start: the bundled worker's main (its
//! registry, and its log to stderr under `RUST_LOG`).
#![forbid(unsafe_code)]

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    procpool::worker::run(procpool_tasks::registry())
}
