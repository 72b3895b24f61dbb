//! The only `unsafe` code in procpool: descriptor plumbing between fork and
//! exec, and adopting the inherited descriptor in the worker.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The descriptor number a spawned worker finds its socket on.
pub(crate) const WORKER_FD: RawFd = 3;

/// Makes `fd` (a close-on-exec descriptor of the parent) appear as
/// [`WORKER_FD`], inheritable, in the child that `cmd` spawns. Every other
/// descriptor keeps its close-on-exec flag.
pub(crate) fn pass_fd(cmd: &mut Command, fd: &OwnedFd) {
    let raw = fd.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec. It calls only
    // `dup2` and `fcntl`, which are async-signal-safe, allocates nothing and
    // touches no lock or memory that another parent thread could hold. `raw`
    // stays open in the parent until `spawn` returns, so it is valid in the
    // child.
    unsafe {
        cmd.pre_exec(move || {
            if raw == WORKER_FD {
                // dup2 onto itself would keep FD_CLOEXEC: clear it instead.
                let flags = libc::fcntl(raw, libc::F_GETFD);
                if flags < 0 || libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(raw, WORKER_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Adopts the socket the pool passed as descriptor `fd`, after checking
/// that it is an open socket.
pub(crate) fn adopt_socket(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: `fstat` writes only into the zeroed `stat` we pass; the call
    // does not take ownership of `fd`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; an invalid `fd` yields -1/EBADF, nothing else.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a socket"),
        ));
    }
    // SAFETY: the pool passed exactly one descriptor under this number and
    // nothing else in the worker refers to it, so the `OwnedFd` is its sole
    // owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
