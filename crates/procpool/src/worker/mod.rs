//! The worker side: `procpool::worker::run(registry)`.
//!
//! A worker has two threads. The **reader** (`reader`) takes frames off
//! the socket and keeps a local queue of prefetched tasks; it answers
//! `Cancel` by removing a task from that queue, so cancelling never waits
//! for a running task. The **executor** (`executor`, the main thread)
//! pops tasks in order and, in one write, reports the previous task's
//! result and the next task's start: exact `Running` states cost no extra
//! syscall, and a task is never begun before the parent could know it was.
//! A worker the pool spawned writes these notes into its reply ring (shared
//! memory, see `link::ring`) rather than the socket, and writes to the
//! socket only to wake a parked parent or for a note too large for the
//! ring. The pool puts a spawned worker's tasks into a second ring in the
//! same memory (`inbound`), which the executor reads between tasks; the
//! socket then carries what cannot go there, cancels and wake-ups. Over
//! TCP a third thread sends heartbeats (`heartbeat`), and a
//! second process, the worker's keeper (`keeper`), owns the sending side
//! of the connection: the executor writes its notes into a reply ring the
//! keeper forwards, so a worker that dies loses nothing it reported.
//!
//! * `boot` — is this a worker, reaching the pool, the handshake, starting
//!   the threads.
//! * `shared` — what the threads share, and its locks.
//! * `inbound` — the work ring: `Run` frames from shared memory, in order
//!   with the socket's.
//! * `panic` — the panic hook that tells the parent where a task panicked.
//!
//! The worker exits when the parent asks (`Shutdown`), when the socket
//! closes (the parent is gone), or when its parent process dies
//! (`PR_SET_PDEATHSIG`). It depends on `link` (the contract with the pool)
//! and on the registry, never on `process_pool`.

mod boot;
mod executor;
#[cfg(feature = "remote")]
mod heartbeat;
mod inbound;
#[cfg(feature = "remote")]
mod keeper;
mod panic;
mod reader;
mod shared;

pub use crate::link::env::{ENV_FD, ENV_PARENT, ENV_SPIN};
pub use crate::link::role::is_worker;
pub use boot::{run, run_if_worker};
pub(crate) use panic::{clear_panic_location, take_panic_location};
