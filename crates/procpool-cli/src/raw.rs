//! The raw baseline: a plain Unix-socket ping-pong between this process and
//! a child process (this same binary, `procpool __echo-peer SOCKET`), with
//! no serde and no pool: a u32 little-endian length, the bytes, echoed back.
//! What the process pool costs beyond this is the pool's own overhead.

use std::fs::DirBuilder;
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The hidden subcommand the child runs.
pub const PEER_COMMAND: &str = "__echo-peer";

/// How long the child may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read may block before the baseline gives up.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The parent's side: a connected child that echoes frames.
pub struct EchoPeer {
    child: Child,
    stream: UnixStream,
    back: Vec<u8>,
}

/// A private directory (mode 0700) removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> io::Result<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let base = std::env::temp_dir();
        for attempt in 0..16u32 {
            let dir = base.join(format!(
                "procpool-raw-{}-{nanos:x}-{attempt}",
                std::process::id()
            ));
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

impl EchoPeer {
    /// Starts the child and waits for it to connect.
    pub fn start() -> io::Result<EchoPeer> {
        let dir = TempDir::new()?;
        let path = dir.0.join("echo.sock");
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg(PEER_COMMAND)
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(status) = child.try_wait()? {
                        return Err(io::Error::other(format!(
                            "the echo peer exited before connecting ({status})"
                        )));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the echo peer did not connect within 10 s",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            }
        };
        // The connection is made: the name on the filesystem is no longer needed.
        drop(listener);
        drop(dir);
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(EchoPeer {
            child,
            stream,
            back: Vec::new(),
        })
    }

    /// Sends `frame` (from [`frame`]) and reads the echo back; returns the
    /// round-trip time.
    pub fn round_trip(&mut self, frame: &[u8]) -> io::Result<Duration> {
        let start = Instant::now();
        self.stream.write_all(frame)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if self.back.len() < len {
            self.back.resize(len, 0);
        }
        self.stream.read_exact(&mut self.back[..len])?;
        let elapsed = start.elapsed();
        if len + 4 != frame.len() || self.back[..len] != frame[4..] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the echo peer sent back different bytes",
            ));
        }
        Ok(elapsed)
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        // EOF ends the peer's loop.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() > deadline => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `payload` framed for the wire: u32 little-endian length, then the bytes.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("payload under 4 GiB");
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The child's side: connect to `socket` and echo frames until EOF.
pub fn serve_peer(socket: &Path) -> io::Result<()> {
    let mut stream = UnixStream::connect(socket)?;
    // One buffer holds the length and the bytes, so the echo is one write.
    let mut buf = vec![0u8; 4];
    loop {
        let mut len = [0u8; 4];
        match stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e),
        }
        let n = u32::from_le_bytes(len) as usize;
        buf.resize(n + 4, 0);
        buf[..4].copy_from_slice(&len);
        stream.read_exact(&mut buf[4..])?;
        stream.write_all(&buf)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length() {
        let f = frame(b"abc");
        assert_eq!(f, [3, 0, 0, 0, b'a', b'b', b'c']);
        assert_eq!(frame(&[]), [0, 0, 0, 0]);
    }

    #[test]
    fn peer_echoes_until_eof() {
        let dir = TempDir::new().unwrap();
        let path = dir.0.join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || serve_peer(&path));
        let (mut conn, _) = listener.accept().unwrap();
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
}
