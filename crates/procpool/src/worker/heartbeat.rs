//! The worker's heartbeat thread (TCP only): a `Heartbeat` every period
//! the pool asked for, so a worker that vanishes is noticed (the pool's
//! read times out), and a pool that vanishes is noticed too (the worker's
//! unacknowledged writes time out). Takes `WorkerShared::writer` per beat.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use procpool_wire::message::ToParent;

use super::shared::WorkerShared;

/// Starts the thread; it beats until the process exits.
pub(super) fn start(shared: Arc<WorkerShared>, every: Duration) -> io::Result<()> {
    let generation = shared.generation;
    std::thread::Builder::new()
        .name("procpool-worker-heartbeat".into())
        .spawn(move || {
            let msg = shared.message(&ToParent::Heartbeat { generation });
            loop {
                std::thread::sleep(every);
                shared.send(std::slice::from_ref(&msg));
            }
        })
        .map(drop)
}
