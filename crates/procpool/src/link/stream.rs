//! The byte streams between the pool and its workers (the transport seam of
//! DESIGN.md): a Unix socket (an inherited `socketpair` end, or a named
//! local socket in attach mode) or a TCP connection. Everything above this
//! module reads and writes a [`Stream`] and does not care which. Takes no
//! lock.
//!
//! `interprocess` does what it is for: naming, binding and listening on
//! the attach mode's local socket (`ListenerOptions`, `to_fs_name`) and
//! dialing it. Once connected, the standard `UnixStream` inside is what
//! this module keeps, because the pool needs what `interprocess`' stream
//! does not expose: descriptors with `SCM_RIGHTS` (`sendmsg`/`recvmsg`),
//! the peer's credentials (`SO_PEERCRED`), vectored non-blocking writes and
//! read timeouts — and the same type as a spawned worker's `socketpair`
//! end, so both paths share one reader and writer.
//!
//! TCP and dialing are the `remote` feature; without it every connection
//! is a spawned worker's `socketpair` end.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
#[cfg(feature = "remote")]
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// One connection between the pool and a worker.
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    #[cfg(feature = "remote")]
    Tcp(TcpStream),
}

impl Stream {
    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            #[cfg(feature = "remote")]
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    /// Ends the connection both ways: a reader on either side sees EOF.
    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            #[cfg(feature = "remote")]
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            #[cfg(feature = "remote")]
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    /// Bounds how long a blocking write may go without the peer taking a
    /// byte (`SO_SNDTIMEO`; `None`: no bound). Such a write then fails
    /// with `WouldBlock`.
    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            #[cfg(feature = "remote")]
            Stream::Tcp(s) => s.set_write_timeout(t),
        }
    }

    /// One vectored send of `slices` (with `fds` attached to its first
    /// byte, Unix sockets only), never raising SIGPIPE; an interrupted
    /// send is tried again, and one that takes no byte is a `WriteZero`
    /// error. `wait: false` returns `WouldBlock` at once when the socket
    /// buffer is full (whatever the write timeout); `wait: true` blocks up
    /// to the write timeout.
    pub(crate) fn send(
        &self,
        slices: &[IoSlice<'_>],
        fds: &[std::os::fd::BorrowedFd<'_>],
        wait: bool,
    ) -> io::Result<usize> {
        use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
        use std::os::fd::AsRawFd;
        let sock = match self {
            Stream::Unix(s) => s.as_raw_fd(),
            #[cfg(feature = "remote")]
            Stream::Tcp(_) if !fds.is_empty() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "descriptors cannot cross a TCP connection",
                ));
            }
            #[cfg(feature = "remote")]
            Stream::Tcp(s) => s.as_raw_fd(),
        };
        let raws: Vec<std::os::fd::RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsgs = [ControlMessage::ScmRights(&raws)];
        let cmsgs: &[ControlMessage<'_>] = if raws.is_empty() { &[] } else { &cmsgs };
        let mut flags = MsgFlags::MSG_NOSIGNAL;
        if !wait {
            flags |= MsgFlags::MSG_DONTWAIT;
        }
        loop {
            match sendmsg::<UnixAddr>(sock, slices, cmsgs, flags, None) {
                Ok(0) if slices.iter().any(|s| !s.is_empty()) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "socket took no bytes",
                    ));
                }
                Ok(n) => return Ok(n),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether the peer is across a network (TCP), where it can vanish
    /// without closing the connection (never without `remote`).
    pub(crate) fn is_tcp(&self) -> bool {
        #[cfg(feature = "remote")]
        return matches!(self, Stream::Tcp(_));
        #[cfg(not(feature = "remote"))]
        false
    }
}

/// Sets what every procpool TCP connection needs: no Nagle delay (frames
/// are written whole), and a bound on how long unacknowledged data may sit
/// before the kernel gives up on a vanished peer.
#[cfg(feature = "remote")]
pub(crate) fn tune_tcp(s: &TcpStream, lost_after: Duration) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    s.set_nodelay(true)?;
    let ms = u32::try_from(lost_after.as_millis())
        .unwrap_or(u32::MAX)
        .max(1);
    setsockopt(s, sockopt::TcpUserTimeout, &ms).map_err(io::Error::from)?;
    setsockopt(s, sockopt::KeepAlive, &true).map_err(io::Error::from)?;
    let secs = (lost_after.as_secs() as u32 / 3).max(1);
    setsockopt(s, sockopt::TcpKeepIdle, &secs).map_err(io::Error::from)?;
    setsockopt(s, sockopt::TcpKeepInterval, &secs).map_err(io::Error::from)?;
    setsockopt(s, sockopt::TcpKeepCount, &3).map_err(io::Error::from)?;
    Ok(())
}

/// Where a worker dials: `tcp://HOST:PORT`, or a local socket's path.
#[cfg(feature = "remote")]
pub(crate) fn dial(address: &str) -> io::Result<Stream> {
    if let Some(hostport) = address.strip_prefix("tcp://") {
        let s = TcpStream::connect(hostport)?;
        s.set_nodelay(true)?;
        return Ok(Stream::Tcp(s));
    }
    use interprocess::local_socket::prelude::*;
    let name = std::path::Path::new(address)
        .to_fs_name::<interprocess::local_socket::GenericFilePath>()?;
    let conn = interprocess::local_socket::Stream::connect(name)?;
    #[allow(unreachable_patterns)]
    let stream = match &conn {
        interprocess::local_socket::Stream::UdSocket(s) => s.inner().try_clone()?,
        _ => return Err(io::Error::other("not a Unix-domain socket")),
    };
    Ok(Stream::Unix(stream))
}

/// Descriptors come only over a Unix socket; over TCP this is a plain read.
impl procpool_wire::fds::RecvFds for Stream {
    fn recv_fds(
        &mut self,
        buf: &mut [u8],
        fds: &mut Vec<std::os::fd::OwnedFd>,
    ) -> io::Result<(usize, bool)> {
        match self {
            Stream::Unix(s) => crate::sys::recv_with_fds(s.as_fd(), buf, fds),
            #[cfg(feature = "remote")]
            Stream::Tcp(s) => Ok((s.read(buf)?, false)),
        }
    }
}

/// Descriptors go only over a Unix socket; over TCP sending one is refused.
impl procpool_wire::fds::SendFds for &Stream {
    fn send_fds(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> io::Result<usize> {
        match *self {
            Stream::Unix(s) => crate::sys::send_with_fds(s.as_fd(), bufs, fds),
            #[cfg(feature = "remote")]
            Stream::Tcp(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "descriptors cannot cross a TCP connection",
            )),
        }
    }
}

impl procpool_wire::fds::SendFds for Stream {
    fn send_fds(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> io::Result<usize> {
        (&*self).send_fds(bufs, fds)
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            Stream::Unix(s) => (&*s).read(buf),
            #[cfg(feature = "remote")]
            Stream::Tcp(s) => (&*s).read(buf),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match *self {
            Stream::Unix(s) => (&*s).write(buf),
            #[cfg(feature = "remote")]
            Stream::Tcp(s) => (&*s).write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match *self {
            Stream::Unix(s) => (&*s).write_vectored(bufs),
            #[cfg(feature = "remote")]
            Stream::Tcp(s) => (&*s).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
