//! The raw baseline procpool's overhead is measured against: a plain
//! Unix-socket ping-pong between this process and a child process, with no
//! serde and no pool. A frame is a u32 little-endian length and the bytes;
//! the child echoes each one back. What the process pool costs beyond this
//! is the pool's own overhead. Used by the `procpool overhead` command and
//! by the benches (one implementation, so both measure the same thing).
//!
//! The child is any program that calls [`serve_peer`] with the socket path
//! it is given (the CLI runs itself as `procpool __echo-peer SOCKET`; the
//! bench worker reads the path from its environment). The socket lives in a
//! fresh 0700 directory that is removed as soon as the peers have
//! connected. Each peer first says its pid, which pairs the connection with
//! the child that made it.
//!
//! How both sides wait for the next frame is the parent's choice
//! ([`Wait`], sent to the peer once after its pid): blocking reads at once
//! (the textbook ping-pong, and the baseline the benches hold the pool
//! against), or a look first, as the pool's threads do: non-blocking reads,
//! yielding between them, for up to [`LOOK`] before blocking. The blocking
//! ping-pong pays on every round trip the wake-up of a parked thread (on
//! this kind of virtual machine's idle vCPU, tens of microseconds) that
//! the pool's looking threads avoid, so a pool can beat it; the looking one
//! is the floor for a pool that looks.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fs::DirBuilder;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};

/// Largest frame the echo peer accepts.
const PEER_MAX_FRAME: usize = 1 << 30;
/// How long peers may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one socket read or write may block before the baseline fails.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a closed peer may take to exit before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read looks for bytes before it blocks (the pool's threads
/// look 50–200 µs before they park).
pub const LOOK: Duration = Duration::from_micros(100);

/// How the ends of a ping-pong wait for the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Blocking reads at once.
    Block,
    /// Non-blocking reads, yielding between them, for up to [`LOOK`]; then
    /// blocking reads.
    Look,
}

impl Wait {
    fn byte(self) -> u8 {
        match self {
            Wait::Block => b'B',
            Wait::Look => b'L',
        }
    }

    fn of(byte: u8) -> io::Result<Wait> {
        match byte {
            b'B' => Ok(Wait::Block),
            b'L' => Ok(Wait::Look),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{other:#04x} is not a way to wait"),
            )),
        }
    }

    /// Fills `buf` from `stream`, waiting this way.
    fn read_exact(self, stream: &mut UnixStream, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Wait::Block => stream.read_exact(buf),
            Wait::Look => read_exact_looking(stream, buf),
        }
    }
}

/// Fills `buf` from `stream`: non-blocking reads, yielding the CPU between
/// them, for up to [`LOOK`]; then blocking reads (under the stream's read
/// timeout) for the rest. EOF before `buf` is full is `UnexpectedEof`.
fn read_exact_looking(stream: &mut UnixStream, buf: &mut [u8]) -> io::Result<()> {
    let end = Instant::now() + LOOK;
    let mut got = 0;
    let mut looks = 0u32;
    while got < buf.len() {
        match recv(stream.as_raw_fd(), &mut buf[got..], MsgFlags::MSG_DONTWAIT) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the socket ended inside a frame",
                ));
            }
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                looks = looks.wrapping_add(1);
                // The clock every few looks: reading it costs more than a look.
                if looks.is_multiple_of(8) && Instant::now() >= end {
                    return stream.read_exact(&mut buf[got..]);
                }
                std::thread::yield_now();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `payload` with its u32 little-endian length in front: what
/// [`EchoPeer::round_trip`] sends.
///
/// ```
/// assert_eq!(procpool_baseline::frame(b"abc"), [3, 0, 0, 0, b'a', b'b', b'c']);
/// ```
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("payload under 4 GiB");
    let mut f = Vec::with_capacity(4 + payload.len());
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// The child's side: connects to `socket`, says its pid, reads how to
/// wait ([`Wait`]'s byte), then echoes frames (one read of the length, one
/// of the body, one write of both) until EOF.
pub fn serve_peer(socket: &Path) -> io::Result<()> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(&std::process::id().to_le_bytes())?;
    let mut wait = [0u8];
    stream.read_exact(&mut wait)?;
    let wait = Wait::of(wait[0])?;
    // One buffer holds the length and the bytes, so the echo is one write.
    let mut buf = vec![0u8; 4];
    loop {
        let mut len = [0u8; 4];
        match wait.read_exact(&mut stream, &mut len) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > PEER_MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {n} bytes is over the peer's limit"),
            ));
        }
        buf.resize(4 + n, 0);
        buf[..4].copy_from_slice(&len);
        wait.read_exact(&mut stream, &mut buf[4..])?;
        stream.write_all(&buf)?;
    }
}

/// A private directory (mode 0700) removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> io::Result<TempDir> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!("procpool-raw-{}-{nanos:x}-{n}", std::process::id()));
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(TempDir(dir)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "cannot create a private temporary directory",
        ))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The parent's side: a child process echoing frames over a connected Unix
/// socket.
pub struct EchoPeer {
    child: Child,
    stream: UnixStream,
    wait: Wait,
    back: Vec<u8>,
    echoed: usize,
}

impl EchoPeer {
    /// Starts one echo peer; `command(socket)` is the command that runs
    /// [`serve_peer`] on `socket`. Both ends block at once ([`Wait::Block`]).
    pub fn start(command: impl Fn(&Path) -> Command) -> io::Result<EchoPeer> {
        EchoPeer::start_waiting(Wait::Block, command)
    }

    /// Starts one echo peer whose round trips wait `wait`'s way, at both
    /// ends.
    pub fn start_waiting(wait: Wait, command: impl Fn(&Path) -> Command) -> io::Result<EchoPeer> {
        let mut peers = EchoPeer::start_many_waiting(1, wait, command)?;
        Ok(peers.pop().expect("one peer"))
    }

    /// Starts `n` echo peers at once (all spawned, then all accepted); both
    /// ends block at once ([`Wait::Block`]).
    pub fn start_many(n: usize, command: impl Fn(&Path) -> Command) -> io::Result<Vec<EchoPeer>> {
        EchoPeer::start_many_waiting(n, Wait::Block, command)
    }

    /// Starts `n` echo peers at once whose round trips wait `wait`'s way.
    pub fn start_many_waiting(
        n: usize,
        wait: Wait,
        command: impl Fn(&Path) -> Command,
    ) -> io::Result<Vec<EchoPeer>> {
        let dir = TempDir::new()?;
        let path = dir.0.join("echo.sock");
        let listener = UnixListener::bind(&path)?;
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            let spawned = command(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn();
            match spawned {
                Ok(c) => children.push(c),
                Err(e) => {
                    kill_all(&mut children);
                    return Err(e);
                }
            }
        }
        let streams = match accept_n(listener, &path, n, &mut children) {
            Ok(s) => s,
            Err(e) => {
                kill_all(&mut children);
                return Err(e);
            }
        };
        // Everyone is connected: the name on the filesystem can go.
        drop(dir);
        // Connections arrive in any order: each peer says its pid first
        // (as a pool worker's hello does), which pairs it with its child.
        let mut by_pid = Vec::with_capacity(n);
        for mut stream in streams {
            let paired = stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
                .and_then(|()| {
                    let mut pid = [0u8; 4];
                    stream.read_exact(&mut pid)?;
                    stream.write_all(&[wait.byte()])?;
                    Ok(u32::from_le_bytes(pid))
                });
            match paired {
                Ok(pid) => by_pid.push((pid, stream)),
                Err(e) => {
                    kill_all(&mut children);
                    return Err(e);
                }
            }
        }
        let mut peers = Vec::with_capacity(n);
        while !children.is_empty() {
            let Some(i) = by_pid.iter().position(|(pid, _)| *pid == children[0].id()) else {
                // `peers` kill their own children on drop.
                kill_all(&mut children);
                return Err(io::Error::other("a connection came from an unknown pid"));
            };
            let child = children.remove(0);
            let (_, stream) = by_pid.swap_remove(i);
            peers.push(EchoPeer {
                child,
                stream,
                wait,
                back: Vec::new(),
                echoed: 0,
            });
        }
        Ok(peers)
    }

    /// Sends `frame` (see [`frame`]) and reads the echo back; returns the
    /// round-trip time. The echo's length is checked before its bytes are
    /// read (a wrong size is an error, never a hang or an overread); the
    /// bytes themselves are compared only in debug builds — the baseline is
    /// the socket, not `memcmp` (see [`echoed`](Self::echoed) to compare
    /// them outside the timing).
    pub fn round_trip(&mut self, frame: &[u8]) -> io::Result<Duration> {
        let start = Instant::now();
        self.stream.write_all(frame)?;
        let mut len = [0u8; 4];
        self.wait.read_exact(&mut self.stream, &mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len + 4 != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the echo peer sent back {len} bytes, not {}",
                    frame.len() - 4
                ),
            ));
        }
        if self.back.len() < len {
            self.back.resize(len, 0);
        }
        self.wait
            .read_exact(&mut self.stream, &mut self.back[..len])?;
        let elapsed = start.elapsed();
        self.echoed = len;
        debug_assert_eq!(&self.back[..len], &frame[4..]);
        Ok(elapsed)
    }

    /// The bytes the last round trip got back.
    pub fn echoed(&self) -> &[u8] {
        &self.back[..self.echoed]
    }

    /// Closes the socket and waits for the peer to exit (killing it if it
    /// does not within a few seconds).
    pub fn close(self) -> io::Result<()> {
        EchoPeer::close_all(vec![self])
    }

    /// Closes every peer's socket, then waits for them all to exit.
    pub fn close_all(peers: Vec<EchoPeer>) -> io::Result<()> {
        for p in &peers {
            let _ = p.stream.shutdown(std::net::Shutdown::Both);
        }
        let mut first_error = None;
        for mut p in peers {
            if let Err(e) = p.wait_exit() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn wait_exit(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        // A short spin first: an echo peer exits within microseconds of EOF.
        let mut nap = Duration::from_micros(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(io::Error::other(format!("echo peer ended with {status}")))
                };
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "echo peer did not exit after EOF",
                ));
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(2));
        }
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        // `close` already reaped the child; otherwise end it the same way
        // (EOF, a few seconds' grace, then a kill) and leave nothing behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
            if self.wait_exit().is_err() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

fn kill_all(children: &mut [Child]) {
    for c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Accepts `n` connections within [`CONNECT_TIMEOUT`], failing early if a
/// child exits first. The blocking accepts run on a helper thread, so no
/// poll loop delays a connection.
fn accept_n(
    listener: UnixListener,
    path: &Path,
    n: usize,
    children: &mut [Child],
) -> io::Result<Vec<UnixStream>> {
    let (tx, rx) = mpsc::channel();
    let acceptor = std::thread::spawn(move || {
        for _ in 0..n {
            let r = listener.accept().map(|(s, _)| s);
            let failed = r.is_err();
            if tx.send(r).is_err() || failed {
                return;
            }
        }
    });
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut streams = Vec::with_capacity(n);
    let mut failure = None;
    while streams.len() < n {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(s)) => streams.push(s),
            Ok(Err(e)) => {
                failure = Some(e);
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                failure = Some(io::Error::other("the accepting thread ended"));
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                for c in children.iter_mut() {
                    if let Some(status) = c.try_wait()? {
                        failure = Some(io::Error::other(format!(
                            "an echo peer exited before connecting ({status})"
                        )));
                    }
                }
                if failure.is_none() && Instant::now() > deadline {
                    failure = Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "echo peers did not connect within 10 s",
                    ));
                }
                if failure.is_some() {
                    break;
                }
            }
        }
    }
    if let Some(e) = failure {
        // Unblock the acceptor with connections of our own, then reap it.
        for _ in streams.len()..n {
            let _ = UnixStream::connect(path);
        }
        let _ = acceptor.join();
        return Err(e);
    }
    let _ = acceptor.join();
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length() {
        assert_eq!(frame(b"abc"), [3, 0, 0, 0, b'a', b'b', b'c']);
        assert_eq!(frame(&[]), [0, 0, 0, 0]);
    }

    /// A peer on a thread of this process, connected, its pid read and
    /// checked (the directory goes with the returned guard).
    fn peer_on_a_thread() -> (UnixStream, std::thread::JoinHandle<io::Result<()>>, TempDir) {
        let dir = TempDir::new().unwrap();
        let path = dir.0.join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || serve_peer(&path));
        let (mut conn, _) = listener.accept().unwrap();
        let mut pid = [0u8; 4];
        conn.read_exact(&mut pid).unwrap();
        assert_eq!(u32::from_le_bytes(pid), std::process::id());
        (conn, server, dir)
    }

    /// A peer says its pid, learns how to wait, echoes until EOF.
    #[test]
    fn peer_says_its_pid_and_echoes_until_eof() {
        let (mut conn, server, _dir) = peer_on_a_thread();
        conn.write_all(&[Wait::Look.byte()]).unwrap();
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        conn.write_all(&frame(&payload)).unwrap();
        let mut len = [0u8; 4];
        conn.read_exact(&mut len).unwrap();
        let mut back = vec![0u8; u32::from_le_bytes(len) as usize];
        conn.read_exact(&mut back).unwrap();
        assert_eq!(back, payload);
        drop(conn);
        server.join().unwrap().unwrap();
    }

    /// A read that finds nothing while it looks blocks for the rest, gets
    /// bytes that come in pieces, and ends with `UnexpectedEof` when the
    /// socket ends inside the buffer.
    #[test]
    fn a_looking_read_blocks_after_its_look_and_sees_the_end() {
        let (mut mine, mut theirs) = UnixStream::pair().unwrap();
        mine.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let late = LOOK * 50;
        let t = std::thread::spawn(move || {
            std::thread::sleep(late);
            theirs.write_all(b"ab").unwrap();
            std::thread::sleep(late);
            theirs.write_all(b"cd").unwrap();
            theirs.write_all(b"e").unwrap();
        });
        let started = Instant::now();
        let mut buf = [0u8; 4];
        read_exact_looking(&mut mine, &mut buf).unwrap();
        assert_eq!(&buf, b"abcd");
        assert!(started.elapsed() >= late * 2, "{:?}", started.elapsed());
        t.join().unwrap();
        let err = read_exact_looking(&mut mine, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }

    /// A peer told a way to wait it does not know ends with an error,
    /// echoing nothing.
    #[test]
    fn a_peer_refuses_an_unknown_way_to_wait() {
        let (mut conn, server, _dir) = peer_on_a_thread();
        conn.write_all(b"X").unwrap();
        let err = server.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("0x58 is not a way to wait"),
            "{err}"
        );
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    /// A wrong-sized echo is an error before any of its bytes are read.
    #[test]
    fn a_wrong_sized_echo_is_refused() {
        let (mine, theirs) = UnixStream::pair().unwrap();
        let mut liar = theirs.try_clone().unwrap();
        let child = Command::new("true").spawn().unwrap();
        let mut peer = EchoPeer {
            child,
            stream: mine,
            wait: Wait::Block,
            back: Vec::new(),
            echoed: 0,
        };
        let t = std::thread::spawn(move || {
            let mut f = [0u8; 7];
            liar.read_exact(&mut f).unwrap();
            liar.write_all(&frame(b"abcd")).unwrap();
        });
        let err = peer.round_trip(&frame(b"abc")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("sent back 4 bytes, not 3"),
            "{err}"
        );
        t.join().unwrap();
        drop(theirs);
    }
}
