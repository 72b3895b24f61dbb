//! Attach mode: workers the pool did not start join it over a local socket.
//!
//! The pool listens on a filesystem socket (never the abstract namespace,
//! which has no permissions) inside a fresh directory of mode 0700, so only
//! its own user can reach it. Each connection is then checked twice before
//! the pool sends anything: the peer's uid (`SO_PEERCRED`) must be the
//! pool's, and its hello must carry the pool's 32-byte secret token (which
//! travels in the worker's environment, never on its command line). A
//! stranger, a wrong token or a slow hello is refused and logged.

use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::{GenericFilePath, Listener, ListenerOptions};
use nix::sys::socket::{getsockopt, sockopt};

use super::spawn;
use super::supervisor::{self, Shared};

/// Environment variable that carries the token (hex) to an attaching worker.
pub const ENV_TOKEN: &str = "PROCPOOL_TOKEN";

/// Most handshakes in progress at once; more connections are dropped.
const MAX_PENDING: usize = 16;

/// Where and how a worker attaches to a pool; see
/// [`ProcessPool::attach_info`](super::ProcessPool::attach_info).
#[derive(Clone)]
pub struct AttachInfo {
    socket: PathBuf,
    token: Vec<u8>,
}

impl std::fmt::Debug for AttachInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachInfo")
            .field("socket", &self.socket)
            .field("token", &"<secret>")
            .finish()
    }
}

impl AttachInfo {
    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The secret token, hex-encoded, for the worker's `PROCPOOL_TOKEN`.
    pub fn token_hex(&self) -> String {
        hex(&self.token)
    }

    pub(crate) fn token_bytes(&self) -> Vec<u8> {
        self.token.clone()
    }

    /// The command that attaches a worker: `program --connect SOCKET`, with
    /// the token in its environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("--connect")
            .arg(&self.socket)
            .env(ENV_TOKEN, self.token_hex());
        cmd
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lowercase or uppercase hex.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn random_bytes(n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// Compares without an early exit, so timing tells nothing about the token.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The listening side: its directory is removed when the pool stops.
pub(crate) struct AttachPoint {
    pub info: AttachInfo,
    dir: PathBuf,
}

impl AttachPoint {
    /// Creates the 0700 directory, the socket and the token.
    pub(crate) fn open() -> io::Result<(AttachPoint, Listener)> {
        let tag = hex(&random_bytes(6)?);
        let dir = std::env::temp_dir().join(format!("procpool-{}-{tag}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let socket = dir.join("pool.sock");
        let name = socket.as_path().to_fs_name::<GenericFilePath>()?;
        let listener = ListenerOptions::new().name(name).create_sync()?;
        let point = AttachPoint {
            info: AttachInfo {
                socket,
                token: random_bytes(32)?,
            },
            dir,
        };
        Ok((point, listener))
    }

    /// Wakes the accept loop (which then sees the pool stopped) and removes
    /// the directory.
    pub(crate) fn close(&self) {
        let _ = UnixStream::connect(&self.info.socket);
        let _ = std::fs::remove_file(&self.info.socket);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Accepts connections until the pool stops.
pub(crate) fn accept_loop(shared: &Arc<Shared>, listener: Listener, token: Vec<u8>) {
    let token = Arc::new(token);
    let pending = Arc::new(AtomicUsize::new(0));
    let me = nix::unistd::geteuid();
    for conn in listener.incoming() {
        if supervisor::stopped(shared) {
            return;
        }
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "procpool::pool", "attach: accept failed: {e}");
                continue;
            }
        };
        #[allow(unreachable_patterns)]
        let stream = match &conn {
            interprocess::local_socket::Stream::UdSocket(s) => match s.inner().try_clone() {
                Ok(u) => u,
                Err(_) => continue,
            },
            _ => continue,
        };
        drop(conn);
        let creds = match getsockopt(&stream, sockopt::PeerCredentials) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "procpool::pool", "attach: refused a connection: no peer credentials ({e})");
                continue;
            }
        };
        if creds.uid() != me.as_raw() {
            tracing::warn!(
                target: "procpool::pool",
                "attach: refused pid {} of uid {} (the pool runs as uid {})",
                creds.pid(),
                creds.uid(),
                me
            );
            continue;
        }
        if pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
            pending.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(target: "procpool::pool", "attach: too many handshakes in progress; dropped pid {}", creds.pid());
            continue;
        }
        let (s, t, p) = (shared.clone(), token.clone(), pending.clone());
        let pid = creds.pid() as u32;
        let spawned = std::thread::Builder::new()
            .name("procpool-attach".into())
            .spawn(move || {
                attach_one(&s, stream, pid, &t);
                p.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn attach_one(shared: &Arc<Shared>, stream: UnixStream, pid: u32, token: &[u8]) {
    let (reader, hello) = match spawn::read_hello(&stream, &shared.cfg) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(target: "procpool::pool", "attach: refused pid {pid}: {e}");
            return;
        }
    };
    if !same_secret(&hello.token, token) {
        tracing::warn!(target: "procpool::pool", "attach: refused pid {pid}: wrong secret token");
        spawn::reject(&stream, "wrong secret token");
        return;
    }
    supervisor::adopt(shared, stream, reader, pid);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let b = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex("0001abff").unwrap(), b);
        assert_eq!(unhex("0001ABFF").unwrap(), b);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
