//! Every name the pool and its workers agree on outside the socket: the
//! `PROCPOOL_*` environment variables a worker is started with, and the
//! descriptor numbers a spawned worker inherits. Defined here once; the
//! public ones are re-exported where users found them before
//! (`procpool::worker::ENV_FD`, `procpool::process_pool::attach::ENV_TOKEN`,
//! …).

use std::os::fd::RawFd;

/// Environment variable carrying the inherited socket's descriptor number.
pub const ENV_FD: &str = "PROCPOOL_WORKER_FD";

/// Environment variable carrying the reply ring's descriptor number (see
/// [`ring`](super::ring)).
pub(crate) const ENV_RING_FD: &str = "PROCPOOL_WORKER_RING_FD";

/// Environment variable that, set to `1` beside [`ENV_RING_FD`], tells a
/// spawned worker that the pool writes its `Run` frames into the work ring
/// of that map (markers there for the frames on the socket), so its
/// executor reads them there (see [`ring`](super::ring)).
pub(crate) const ENV_WORK_RING: &str = "PROCPOOL_WORKER_WORK_RING";

/// Environment variable with the microseconds an idle worker looks for its
/// next task before parking (`ProcessPoolBuilder::worker_spin`, 50 for a
/// spawned worker with a work ring unless set; 0: never).
pub const ENV_SPIN: &str = "PROCPOOL_WORKER_SPIN_US";

/// Environment variable carrying the pool's pid: a worker checks it is still
/// its parent, so programs the worker starts do not mistake themselves for
/// workers.
pub const ENV_PARENT: &str = "PROCPOOL_PARENT_PID";

/// Environment variable telling a worker its slot number.
pub(crate) const ENV_WORKER_ID: &str = "PROCPOOL_WORKER_ID";

/// Environment variable that carries the pool's secret (hex) to a worker
/// that dials in. (The variable's name predates the word "secret"; it holds
/// the secret, never anything else.)
#[cfg(feature = "remote")]
pub const ENV_TOKEN: &str = "PROCPOOL_TOKEN";

/// `PROCPOOL_TOKEN` as a C string, for removing it from the environment
/// (a spawned worker scrubs one set by hand, `remote` or not).
pub(crate) const ENV_TOKEN_C: &std::ffi::CStr = c"PROCPOOL_TOKEN";

/// Environment variable that, set to `1`, leaves a worker dumpable
/// (`ProcessPoolBuilder::dumpable(true)`); by default a worker makes itself
/// non-dumpable while it boots.
pub(crate) const ENV_DUMPABLE: &str = "PROCPOOL_DUMPABLE";

/// Environment variable with the address a spawned worker dials
/// (`tcp://HOST:PORT` or a socket path); `--connect` does the same.
pub const ENV_CONNECT: &str = "PROCPOOL_CONNECT";

/// Environment variable with the ticket that matches a dialing worker to
/// the process (or launch) the pool started it as.
#[cfg(feature = "remote")]
pub const ENV_TICKET: &str = "PROCPOOL_TICKET";

/// Environment variable that overrides where `WorkerCommand::bundled`
/// finds `procpool-worker`.
pub const ENV_WORKER_PATH: &str = "PROCPOOL_WORKER";

/// Environment variable that makes a process a TCP worker's keeper (its
/// value: the pool's frame cap); see `worker::keeper`. Honoured only in a
/// child of the worker that set it (`PROCPOOL_PARENT_PID`).
#[cfg(feature = "remote")]
pub(crate) const ENV_KEEPER: &str = "PROCPOOL_KEEPER";

/// The descriptor number a spawned worker finds its socket on.
pub(crate) const WORKER_FD: RawFd = 3;

/// The descriptor number a spawned worker finds its reply ring on.
pub(crate) const RING_FD: RawFd = 4;

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(feature = "remote")]
    fn the_c_name_of_the_token_is_the_name() {
        assert_eq!(super::ENV_TOKEN_C.to_str(), Ok(super::ENV_TOKEN));
    }
}
