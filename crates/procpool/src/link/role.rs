//! What this process is to procpool, read by both sides: was it started
//! as a worker (its environment says so), did its program make itself its
//! own worker (`run_if_worker`), is it serving. The worker sets the flags;
//! the pool's `build()` reads them (a program that forgot `run_if_worker`
//! must not build a pool of itself). No lock: two atomics.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

use super::env::{ENV_CONNECT, ENV_FD, ENV_PARENT};
use super::handshake::{refuse, this_program};
use super::stream::Stream;

/// Whether this process was started by a `ProcessPool` as a worker.
pub fn is_worker() -> bool {
    let connected = std::env::var_os(ENV_FD).is_some() || std::env::var_os(ENV_CONNECT).is_some();
    // Started by a launcher (`srun`, `mpirun`) or by hand to dial in.
    let dialing = std::env::args_os().nth(1).is_some_and(|a| a == "--connect");
    #[cfg(feature = "remote")]
    let connected = connected || std::env::var_os(super::env::ENV_KEEPER).is_some();
    dialing || (connected && spawned_by_parent())
}

/// Whether `PROCPOOL_PARENT_PID` names this process's parent.
pub(crate) fn spawned_by_parent() -> bool {
    std::env::var(ENV_PARENT)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::os::unix::process::parent_id())
}

/// Set once `run_if_worker` was called: this program is its own worker, so
/// a pool's default worker is this program (`WorkerCommand::current_exe`).
static SERVES_ITSELF: AtomicBool = AtomicBool::new(false);

/// Set when this process starts serving (`run`): from then on a pool built
/// here (by a task) is a pool of its own, not a forgotten `run_if_worker`.
static SERVING: AtomicBool = AtomicBool::new(false);

/// `run_if_worker` was called: this program is its own worker.
pub(crate) fn mark_serves_itself() {
    SERVES_ITSELF.store(true, Ordering::Relaxed);
}

/// This process starts serving a pool (`worker::run`).
pub(crate) fn mark_serving() {
    SERVING.store(true, Ordering::Relaxed);
}

/// Whether `run_if_worker` was called in this process.
pub(crate) fn serves_itself() -> bool {
    SERVES_ITSELF.load(Ordering::Relaxed)
}

/// What `ProcessPool::build()` says in a process that was started as a
/// worker but did not call `run_if_worker` first; `None` anywhere else.
/// The pool that started it is told at once (its hello refuses), so its
/// `build()` fails within a moment instead of waiting for a hello, and no
/// process builds a pool of its own: the process tree never multiplies.
pub(crate) fn refuse_to_build() -> Option<String> {
    if SERVING.load(Ordering::Relaxed) || !is_worker() {
        return None;
    }
    let why = "its `main()` did not call `procpool::worker::run_if_worker` first and reached \
               `ProcessPool::build()` (a worker building a pool of itself would start workers \
               without end); add `procpool::worker::run_if_worker(procpool::Registry::collected());` \
               as the first line of `main`"
        .to_owned();
    if let Some(fd) = std::env::var(ENV_FD)
        .ok()
        .and_then(|f| f.parse::<i32>().ok())
        && let Ok(sock) = crate::sys::adopt_socket(fd)
    {
        let _ = refuse(&Stream::Unix(UnixStream::from(sock)), &why);
    }
    Some(format!(
        "this process (`{}`) was started as a procpool worker, but {why}",
        this_program()
    ))
}
