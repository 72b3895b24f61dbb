//! The only `unsafe` code in procpool: descriptor plumbing between fork and
//! exec, adopting the inherited descriptors in the worker, the shared
//! memory mapping under the reply ring, and reading the CPU's time-stamp
//! counter.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::ptr::NonNull;
#[cfg(not(procpool_loom))]
use std::sync::atomic::AtomicU64;

use crate::link::env::{RING_FD, WORKER_FD};

/// The CPU's time-stamp counter, where it is read without a system call
/// (x86_64; see `stamp`, which uses it only where the kernel keeps time
/// with it).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn tsc() -> Option<u64> {
    // SAFETY: `rdtsc` only reads the counter into registers: it touches no
    // memory, and every x86_64 CPU has it.
    Some(unsafe { core::arch::x86_64::_rdtsc() })
}

/// No counter to read without a system call on this architecture.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(crate) fn tsc() -> Option<u64> {
    None
}

/// Descriptors at or above this number are never the target of
/// [`pass_fds`], so a source there cannot be overwritten by an earlier
/// `dup2`.
const HIGH_FD: RawFd = 10;

/// Makes `socket` appear as [`WORKER_FD`] and `ring` (if any) as
/// [`RING_FD`], inheritable, in the child that `cmd` spawns. Every other
/// descriptor keeps its close-on-exec flag. `ring` must come from
/// [`SharedMap::create`], which places it at or above `HIGH_FD`.
pub(crate) fn pass_fds(cmd: &mut Command, socket: &OwnedFd, ring: Option<&OwnedFd>) {
    let sock = socket.as_raw_fd();
    let ring = ring.map_or(-1, AsRawFd::as_raw_fd);
    debug_assert!(ring == -1 || ring >= HIGH_FD);
    // SAFETY: the closure runs in the forked child before exec. It calls only
    // `dup2` and `fcntl`, which are async-signal-safe, allocates nothing and
    // touches no lock or memory that another parent thread could hold. Both
    // descriptors stay open in the parent until `spawn` returns, so they are
    // valid in the child. The socket is placed first; the ring's source is
    // at or above HIGH_FD, so that first `dup2` cannot clobber it.
    unsafe {
        cmd.pre_exec(move || {
            place_fd(sock, WORKER_FD)?;
            if ring >= 0 {
                place_fd(ring, RING_FD)?;
            }
            Ok(())
        });
    }
}

/// In the child between fork and exec: `raw` becomes `target`, without
/// close-on-exec. Async-signal-safe.
fn place_fd(raw: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: plain descriptor syscalls on numbers we own in this process;
    // no memory is touched.
    unsafe {
        if raw == target {
            // dup2 onto itself would keep FD_CLOEXEC: clear it instead.
            let flags = libc::fcntl(raw, libc::F_GETFD);
            if flags < 0 || libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
        } else if libc::dup2(raw, target) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Adopts the socket the pool passed as descriptor `fd`, after checking
/// that it is an open socket.
pub(crate) fn adopt_socket(fd: RawFd) -> io::Result<OwnedFd> {
    adopt(fd, libc::S_IFSOCK, "a socket")
}

/// Adopts the reply ring's memory file the pool passed as descriptor `fd`,
/// after checking that it is an open regular (memory) file.
pub(crate) fn adopt_memfd(fd: RawFd) -> io::Result<OwnedFd> {
    adopt(fd, libc::S_IFREG, "a memory file")
}

fn adopt(fd: RawFd, kind: libc::mode_t, what: &str) -> io::Result<OwnedFd> {
    // SAFETY: `fstat` writes only into the zeroed `stat` we pass; the call
    // does not take ownership of `fd`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; an invalid `fd` yields -1/EBADF, nothing else.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != kind {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not {what}"),
        ));
    }
    // SAFETY: the pool passed exactly one descriptor under this number and
    // nothing else in the worker refers to it, so the `OwnedFd` is its sole
    // owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Bytes written to a TCP socket that the kernel has not sent yet
/// (`SIOCOUTQNSD`, Linux ≥ 2.6.38).
#[cfg(feature = "remote")]
pub(crate) fn tcp_unsent(sock: &impl AsRawFd) -> io::Result<usize> {
    const SIOCOUTQNSD: libc::Ioctl = 0x894B;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer, into `n`,
    // which outlives the call; a descriptor that is not a TCP socket only
    // makes the call fail.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCOUTQNSD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Bytes written to a TCP socket that the peer has not acknowledged yet
/// (`SIOCOUTQ`): once 0, everything written is in the peer's kernel.
#[cfg(feature = "remote")]
pub(crate) fn tcp_unacked(sock: &impl AsRawFd) -> io::Result<usize> {
    const SIOCOUTQ: libc::Ioctl = 0x5411;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer, into `n`, which
    // outlives the call; a descriptor that is not a socket only makes the
    // call fail.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCOUTQ, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// A `MAP_SHARED` mapping of a memory file, seen by the parent and one
/// worker (under `cfg(procpool_loom)`, the heap stand-in below). Its bytes are plain data the other side may change at any time:
/// every read is a copy into our own memory, checked by the caller, and the
/// only shared words the two sides synchronise on are [`AtomicU64`]s.
#[cfg(not(procpool_loom))]
pub(crate) struct SharedMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory with no thread affinity; all access
// goes through `atomic` (atomics) or `read`/`write` (byte copies of
// untrusted data), which are sound from any thread.
#[cfg(not(procpool_loom))]
unsafe impl Send for SharedMap {}
// SAFETY: as above; `&SharedMap` hands out only atomics and copies.
#[cfg(not(procpool_loom))]
unsafe impl Sync for SharedMap {}

#[cfg(not(procpool_loom))]
impl SharedMap {
    /// A new zeroed memory file of `len` bytes (close-on-exec, at a
    /// descriptor number >= `HIGH_FD`), mapped here. Its size is sealed
    /// (`F_SEAL_SHRINK`, `F_SEAL_GROW`, `F_SEAL_SEAL`): whoever holds the
    /// descriptor can write the bytes but never change the length, so the
    /// mapping can never lose its pages under us.
    pub(crate) fn create(len: usize) -> io::Result<(SharedMap, OwnedFd)> {
        // SAFETY: `memfd_create` takes a NUL-terminated name and flags; the
        // returned descriptor, if valid, is ours alone.
        let raw = unsafe {
            libc::memfd_create(
                c"procpool-ring".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just returned to us and nothing else owns it.
        let first = unsafe { OwnedFd::from_raw_fd(raw) };
        let fd = nix::fcntl::fcntl(&first, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(HIGH_FD))
            .map_err(io::Error::from)?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that only we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        drop(first);
        nix::unistd::ftruncate(&fd, len as libc::off_t).map_err(io::Error::from)?;
        // The size is final before any worker sees the file: a worker that
        // shrank it would make our next look at the ring a SIGBUS.
        use nix::fcntl::SealFlag;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_ADD_SEALS(seals))
            .map_err(io::Error::from)?;
        let map = SharedMap::map(&fd, len)?;
        Ok((map, fd))
    }

    /// Maps the whole memory file `fd` (inherited from the pool) and closes
    /// the descriptor, so programs a task starts do not inherit it.
    pub(crate) fn open(fd: OwnedFd, expected_len: usize) -> io::Result<SharedMap> {
        let len = nix::sys::stat::fstat(&fd).map_err(io::Error::from)?.st_size;
        if usize::try_from(len).ok() != Some(expected_len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the reply ring is {len} bytes, expected {expected_len}"),
            ));
        }
        SharedMap::map(&fd, expected_len)
    }

    fn map(fd: &OwnedFd, len: usize) -> io::Result<SharedMap> {
        // SAFETY: a fresh shared mapping of `len` bytes of a file we hold
        // open; the kernel picks the address. Failure is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(SharedMap { ptr, len })
    }

    /// The shared word at `offset` (8-aligned, in bounds: checked).
    pub(crate) fn atomic(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= self.len,
            "atomic at {offset}"
        );
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned), and
        // the mapping lives as long as `&self`. Both processes touch this
        // word only through atomics.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(offset).cast::<u64>()) }
    }

    /// Copies `data` into the mapping at `offset` (in bounds: checked).
    pub(crate) fn write(&self, offset: usize, data: &[u8]) {
        assert!(
            offset
                .checked_add(data.len())
                .is_some_and(|e| e <= self.len)
        );
        // SAFETY: the destination range is inside the mapping (checked) and
        // cannot overlap `data`, which is our own memory. The other process
        // does not read this range until we publish it with a release store.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len());
        }
    }

    /// Copies bytes of the mapping at `offset` into `out` (in bounds:
    /// checked). The bytes are untrusted: the caller validates them.
    pub(crate) fn read(&self, offset: usize, out: &mut [u8]) {
        assert!(offset.checked_add(out.len()).is_some_and(|e| e <= self.len));
        // SAFETY: the source range is inside the mapping (checked) and
        // `out` is our own memory. u8 has no invalid values, so whatever a
        // misbehaving worker wrote there is a valid (if wrong) byte string.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            );
        }
    }
}

#[cfg(not(procpool_loom))]
impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range `map` created; no reference into
        // it outlives `self` (`atomic` borrows `self`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The seals a shared payload's memory file carries before it leaves this
/// process, and that a received one must carry before it is mapped: its
/// size and bytes are frozen and no seal can be added or removed.
const PAYLOAD_SEALS: libc::c_int =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;

/// An immutable shared payload (`SharedBytes`, `SharedSlice`): a memory
/// file sealed against every change (`PAYLOAD_SEALS`), mapped read-only
/// here. Because of the seals, no process — the sender, the receiver, or
/// anyone they pass the descriptor to — can change its size or its bytes
/// once it exists, so handing out `&[u8]` into the mapping is sound.
pub(crate) struct SealedFile {
    fd: OwnedFd,
    /// `None` for an empty file (nothing to map).
    ptr: Option<NonNull<u8>>,
    len: usize,
}

// SAFETY: the mapping is read-only memory whose bytes no process can change
// (sealed); reading it from any thread is sound.
unsafe impl Send for SealedFile {}
// SAFETY: as above; `&SealedFile` hands out only `&[u8]` and the descriptor.
unsafe impl Sync for SealedFile {}

impl std::fmt::Debug for SealedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedFile")
            .field("fd", &self.fd.as_raw_fd())
            .field("len", &self.len)
            .finish()
    }
}

impl SealedFile {
    /// A new memory file holding a copy of `bytes`, sealed
    /// (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL`) and
    /// mapped read-only. Close-on-exec: programs a task starts do not
    /// inherit it.
    pub(crate) fn create(bytes: &[u8]) -> io::Result<SealedFile> {
        // SAFETY: `memfd_create` takes a NUL-terminated name and flags; the
        // returned descriptor, if valid, is ours alone.
        let raw = unsafe {
            libc::memfd_create(
                c"procpool-shared".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just returned to us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Written with `write`, never through a writable mapping: a
        // writable shared mapping would make F_SEAL_WRITE fail.
        let mut file = std::fs::File::from(fd);
        file.set_len(bytes.len() as u64)?;
        std::io::Write::write_all(&mut file, bytes)?;
        let fd = OwnedFd::from(file);
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::from_bits_retain(
                PAYLOAD_SEALS,
            )),
        )
        .map_err(io::Error::from)?;
        SealedFile::map(fd, bytes.len())
    }

    /// Adopts a memory file received from another process, which is
    /// untrusted: it must be a regular memory file (`F_GET_SEALS` answers
    /// only for those) carrying every seal of `PAYLOAD_SEALS`, and exactly
    /// `len` bytes long, and `len` must not exceed `max`; otherwise it is
    /// closed and nothing is mapped.
    pub(crate) fn open(fd: OwnedFd, len: u64, max: u64) -> io::Result<SealedFile> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        if len > max {
            return Err(bad(format!(
                "a shared payload of {len} bytes exceeds the {max}-byte limit"
            )));
        }
        let st = nix::sys::stat::fstat(&fd).map_err(io::Error::from)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(bad("the descriptor is not a memory file".into()));
        }
        let seals = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GET_SEALS)
            .map_err(|_| bad("the descriptor is not a sealable memory file (memfd)".into()))?;
        if seals & PAYLOAD_SEALS != PAYLOAD_SEALS {
            return Err(bad(format!(
                "the memory file is not sealed against changes (seals {seals:#x})"
            )));
        }
        if u64::try_from(st.st_size).ok() != Some(len) {
            return Err(bad(format!(
                "the memory file holds {} bytes, the reference says {len}",
                st.st_size
            )));
        }
        let len = usize::try_from(len).map_err(|_| bad("shared payload too large".into()))?;
        SealedFile::map(fd, len)
    }

    /// Maps `len` bytes of the sealed file `fd` read-only.
    fn map(fd: OwnedFd, len: usize) -> io::Result<SealedFile> {
        if len == 0 {
            return Ok(SealedFile { fd, ptr: None, len });
        }
        // SAFETY: a fresh read-only shared mapping of a file we hold open;
        // the kernel picks the address. The file is sealed (checked by the
        // caller or set by us) against writes, growth and shrinking, so the
        // bytes cannot change and no access can fault with SIGBUS. The
        // kernel refuses a later `mprotect(PROT_WRITE)` on a read-only shared
        // mapping of a write-sealed file. Failure is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(SealedFile {
            fd,
            ptr: Some(ptr),
            len,
        })
    }

    /// The bytes (page-aligned).
    pub(crate) fn bytes(&self) -> &[u8] {
        match self.ptr {
            None => &[],
            // SAFETY: `ptr..ptr+len` is our read-only mapping, alive as long
            // as `self`; its bytes are sealed, so no process can change them
            // while the slice lives.
            Some(p) => unsafe { std::slice::from_raw_parts(p.as_ptr(), self.len) },
        }
    }

    /// The memory file (to pass to another process).
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

impl std::os::fd::AsFd for SealedFile {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd()
    }
}

impl Drop for SealedFile {
    fn drop(&mut self) {
        if let Some(p) = self.ptr {
            // SAFETY: unmaps exactly the range `map` created; every `&[u8]`
            // into it borrows `self`, so none outlives this.
            unsafe {
                libc::munmap(p.as_ptr().cast(), self.len);
            }
        }
    }
}

/// Room for the most descriptors one frame may carry
/// (`procpool_wire::fds::MAX_FDS`).
const FD_SPACE: usize = procpool_wire::fds::MAX_FDS;

/// `recvmsg` on the Unix socket `sock` into `buf`, adopting every
/// descriptor that came with the bytes (close-on-exec) into `fds`. Returns
/// the bytes read and whether the kernel dropped descriptors for lack of
/// room (`MSG_CTRUNC`; those it dropped, it closed).
pub(crate) fn recv_with_fds(
    sock: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<(usize, bool)> {
    // `u64` words keep the control buffer aligned for `cmsghdr`.
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE((FD_SPACE * std::mem::size_of::<RawFd>()) as u32) };
    let mut control = vec![0u64; (space as usize).div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid "no name, no control" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() * 8;
    let n = loop {
        // SAFETY: `msg` points at `iov` (our `buf`, writable for its length)
        // and at `control` (writable for `msg_controllen` bytes), all alive
        // across the call. The kernel writes at most those lengths,
        // whatever the peer sent.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // Adopt every descriptor the kernel installed, even when the control
    // data was truncated: each is ours now and must be closed.
    // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR walk the control buffer the kernel
    // filled, bounded by `msg_controllen` (which the kernel set to what it
    // wrote, at most our buffer's size); they return null past the end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and inside the control buffer (above);
        // the header fields are plain integers the kernel wrote.
        let (level, kind, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: CMSG_DATA points just past the header, inside the
            // buffer; CMSG_LEN(0) is the header's size.
            let (data, head) = unsafe { (libc::CMSG_DATA(cmsg), libc::CMSG_LEN(0) as usize) };
            // `cmsg_len` is a `size_t` on glibc, a `socklen_t` on musl.
            #[allow(clippy::unnecessary_cast)]
            let len = len as usize;
            let count = len.saturating_sub(head) / std::mem::size_of::<RawFd>();
            for i in 0..count {
                // SAFETY: `count` ints fit between CMSG_DATA and the end of
                // this message (cmsg_len, set by the kernel within our
                // buffer); read unaligned, as the data need not be aligned.
                let raw = unsafe { data.cast::<RawFd>().add(i).read_unaligned() };
                // SAFETY: SCM_RIGHTS installed `raw` in this process for us
                // alone; nothing else knows the number yet.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR above.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok((n, msg.msg_flags & libc::MSG_CTRUNC != 0))
}

/// `sendmsg` of `bufs` on the Unix socket `sock` with `fds` attached
/// (`SCM_RIGHTS`); returns the bytes written.
pub(crate) fn send_with_fds(
    sock: std::os::fd::BorrowedFd<'_>,
    bufs: &[std::io::IoSlice<'_>],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
    let raws: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs = [ControlMessage::ScmRights(&raws)];
    let cmsgs: &[ControlMessage<'_>] = if raws.is_empty() { &[] } else { &cmsgs };
    sendmsg::<UnixAddr>(sock.as_raw_fd(), bufs, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io::Error::from)
}

/// Removes the variable `name` from this process's environment and
/// overwrites its `NAME=value` bytes in the block the kernel shows as
/// `/proc/self/environ` (the environment the process was started with,
/// which removing the variable alone leaves in place). Call it before the
/// process starts threads of its own: see the SAFETY notes.
pub(crate) fn scrub_env(name: &std::ffi::CStr) {
    let key = name.to_bytes();
    // Where the kernel put the initial environment (`env_start`, `env_end`:
    // fields 50 and 51 of /proc/self/stat, after the parenthesised name).
    let block = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // `rest` starts at field 3 (state).
            let start: usize = fields.get(50 - 3)?.parse().ok()?;
            let end: usize = fields.get(51 - 3)?.parse().ok()?;
            (start < end).then_some((start, end))
        });
    // SAFETY: `getenv` returns NULL or a pointer to the NUL-terminated value
    // of `name` inside its `NAME=value` entry; `name` is a valid C string.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    // The entry's bytes, if they lie inside the kernel's environment block,
    // which is ordinary writable memory of this process (the top of its
    // initial stack); a variable set later lives elsewhere and is only
    // removed.
    let in_block = (!value.is_null()).then(|| {
        // SAFETY: `value` points at a NUL-terminated string (above).
        let len = unsafe { libc::strlen(value) };
        let entry = (value as usize).wrapping_sub(key.len() + 1);
        (entry, key.len() + 1 + len)
    });
    let in_block = in_block.filter(|&(entry, n)| {
        block.is_some_and(|(start, end)| entry >= start && entry.saturating_add(n) <= end)
    });
    if let Ok(name) = name.to_str() {
        // SAFETY: `remove_var` is unsafe because another thread could read
        // the environment through libc at the same moment. A worker calls
        // this while booting, before it starts its reader, heartbeat and
        // executor threads and before any task runs; the program's `main`
        // calls `worker::run` (or `run_if_worker`) first thing, as
        // documented there, so no other thread of its own is running.
        unsafe { std::env::remove_var(name) };
    }
    if let Some((entry, n)) = in_block {
        // SAFETY: `entry..entry + n` lies inside the initial environment
        // block of this process (checked against the kernel's own bounds),
        // which stays mapped and writable for the life of the process, and
        // held the `NAME=value` string `getenv` found. The environment no
        // longer points at it (removed above), so nothing reads it; it is
        // overwritten with zero bytes in place.
        unsafe { std::ptr::write_bytes(entry as *mut u8, 0, n) };
    }
}

/// Overwrites `bytes` with zeros in a way the compiler may not remove (a
/// secret about to be freed).
#[cfg(feature = "remote")]
pub(crate) fn zeroize(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, exclusive reference to one byte; a volatile
        // write through it is a plain store the optimiser must keep.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}
#[cfg(procpool_loom)]
pub(crate) use loom_map::SharedMap;

/// The model checker's [`SharedMap`] (`cfg(procpool_loom)`; see `sync.rs`):
/// the same interface over heap memory loom can see. The first
/// [`loom_map::HEADER`] bytes are shared words, one loom `AtomicU64` at the
/// start of each 64-byte line (where the ring keeps its words); the rest
/// are data bytes, one loom cell each, so loom reports a read of bytes the
/// other side has not published (no happens-before) as a data race.
/// `create` hands out a real descriptor (of `/dev/null`) as the key by
/// which `open` finds the same memory, as a memfd would be.
#[cfg(procpool_loom)]
mod loom_map {
    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd, RawFd};
    use std::sync::{Arc, Mutex};

    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicU64;

    /// Bytes of shared words before the data.
    pub(crate) const HEADER: usize = 4096;
    const LINE: usize = 64;

    struct Memory {
        words: Vec<AtomicU64>,
        data: Vec<UnsafeCell<u8>>,
        len: usize,
    }

    // SAFETY: `words` are atomics; each data byte is reached only through
    // loom's cell accessors, which check (and report) unsynchronised
    // access instead of allowing it.
    unsafe impl Send for Memory {}
    // SAFETY: as above.
    unsafe impl Sync for Memory {}

    /// Maps made by `create` and not yet `open`ed, by descriptor.
    static MADE: Mutex<Vec<(RawFd, Arc<Memory>)>> = Mutex::new(Vec::new());

    pub(crate) struct SharedMap(Arc<Memory>);

    impl SharedMap {
        pub(crate) fn create(len: usize) -> io::Result<(SharedMap, OwnedFd)> {
            assert!(len > HEADER, "a shared map has a header and data");
            let mem = Arc::new(Memory {
                words: (0..HEADER / LINE).map(|_| AtomicU64::new(0)).collect(),
                data: (HEADER..len).map(|_| UnsafeCell::new(0)).collect(),
                len,
            });
            let fd = OwnedFd::from(std::fs::File::open("/dev/null")?);
            let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
            made.push((fd.as_raw_fd(), mem.clone()));
            Ok((SharedMap(mem), fd))
        }

        pub(crate) fn open(fd: OwnedFd, expected_len: usize) -> io::Result<SharedMap> {
            let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
            let at = made
                .iter()
                .position(|(raw, _)| *raw == fd.as_raw_fd())
                .ok_or_else(|| io::Error::other("not a map made by create"))?;
            let (_, mem) = made.swap_remove(at);
            if mem.len != expected_len {
                return Err(io::Error::other("wrong length"));
            }
            Ok(SharedMap(mem))
        }

        pub(crate) fn atomic(&self, offset: usize) -> &AtomicU64 {
            assert!(
                offset.is_multiple_of(LINE) && offset < HEADER,
                "atomic at {offset}"
            );
            &self.0.words[offset / LINE]
        }

        pub(crate) fn write(&self, offset: usize, data: &[u8]) {
            for (i, b) in data.iter().enumerate() {
                // SAFETY: loom checks that no other access to this byte is
                // concurrent with this one (and fails the model if it is).
                self.0.data[offset + i - HEADER].with_mut(|p| unsafe { *p = *b });
            }
        }

        pub(crate) fn read(&self, offset: usize, out: &mut [u8]) {
            for (i, b) in out.iter_mut().enumerate() {
                // SAFETY: as in `write`.
                *b = self.0.data[offset + i - HEADER].with(|p| unsafe { *p });
            }
        }
    }
}
