//! Process control behind a trait: starting a worker process, signalling a
//! process group, waiting for a child. The pool's threads call these
//! through `Shared::procs`, so the supervisor's logic (settling a death,
//! the restart policy, breaking the pool) can run in a unit test against a
//! fake that starts nothing and records what it was asked to do. [`Os`] is
//! the real thing. No lock.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::Child;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::builder::Config;
use super::spawn::{self, DialBack, Spawned};
use crate::error::Exit;

/// What the supervisor asks of the operating system.
pub(crate) trait Processes: Send + Sync {
    /// Starts worker `index` (see `spawn::spawn_process`).
    fn spawn(&self, cfg: &Config, index: usize, dial: Option<DialBack>) -> io::Result<Spawned>;
    /// Sends `sig` to the process group `pid` leads (or to `pid` alone if it
    /// leads none).
    fn signal(&self, pid: u32, sig: Signal);
    /// Waits until `child` exits; how it ended.
    fn wait(&self, child: &mut Child) -> Exit;
}

/// The real processes.
pub(crate) struct Os;

impl Processes for Os {
    fn spawn(&self, cfg: &Config, index: usize, dial: Option<DialBack>) -> io::Result<Spawned> {
        spawn::spawn_process(cfg, index, dial)
    }

    fn signal(&self, pid: u32, sig: Signal) {
        kill_group(pid, sig);
    }

    fn wait(&self, child: &mut Child) -> Exit {
        exit_of(child.wait())
    }
}

/// Sends `sig` to a worker's process group (the worker and what it forked);
/// an attached worker that leads no group gets it alone.
pub(crate) fn kill_group(pid: u32, sig: Signal) {
    let pid = Pid::from_raw(pid as i32);
    if nix::sys::signal::killpg(pid, sig) == Err(nix::errno::Errno::ESRCH) {
        let _ = nix::sys::signal::kill(pid, sig);
    }
}

fn exit_of(status: std::io::Result<std::process::ExitStatus>) -> Exit {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            _ => Exit::Unknown,
        },
        Err(_) => Exit::Unknown,
    }
}
