//! Dial-in workers: every launcher but a local `Spawn` has workers connect
//! to the pool rather than inherit a socket.
//!
//! The pool listens on a local socket (a filesystem socket, never the
//! abstract namespace, in a fresh directory of mode 0700, so only its own
//! user can reach it; the peer's uid is checked with `SO_PEERCRED` too) or
//! on TCP. Before anything else every connection must pass the handshake of
//! `procpool_wire::handshake`: protocol version, build id, and an
//! HMAC-SHA256 challenge–response over the pool's 32-byte secret, which
//! reaches workers in their environment (`PROCPOOL_TOKEN`), never on a
//! command line, and never crosses the wire. A stranger, a wrong secret or
//! a slow handshake (one deadline for all of it) is refused and logged,
//! with what it said escaped and cut; nothing it said is acted on.
//! Handshake frames are capped at `HANDSHAKE_MAX_FRAME`, and the handshakes
//! in progress are capped in all and per address (`admission`).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, mpsc};

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::{GenericFilePath, Listener, ListenerOptions};
use nix::sys::socket::{getsockopt, sockopt};
use procpool_wire::handshake::{Hello, SECRET_LEN, launch_key};

use super::admission::Admission;
use super::adopt::adopt;
use super::builder::Config;
use super::launch::Launcher;
use super::spawn::StartError;
use super::stale::{DIR_PREFIX, SECRET_FILE, SOCKET_FILE, clean_stale_dirs};
use super::state::{Shared, stopped};
use super::transport::Transport;
pub use crate::link::env::{ENV_CONNECT, ENV_TICKET, ENV_TOKEN};
use crate::link::handshake::{self, Proven};
use crate::link::secret::{hex, host_name, random_bytes};
use crate::link::stream::{Stream, tune_tcp};
use crate::lock::lock;

/// Where and how a worker dials in; see
/// [`ProcessPool::attach_info`](super::ProcessPool::attach_info).
#[derive(Clone)]
pub struct AttachInfo {
    address: String,
    socket: Option<PathBuf>,
    /// Only where a person or a script reads it (`Attach`, `External`).
    secret_file: Option<PathBuf>,
    /// Zeroed when dropped.
    secret: Vec<u8>,
}

impl Drop for AttachInfo {
    fn drop(&mut self) {
        crate::sys::zeroize(&mut self.secret);
    }
}

impl std::fmt::Debug for AttachInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachInfo")
            .field("address", &self.address)
            .field("secret", &"<secret>")
            .finish()
    }
}

impl AttachInfo {
    /// What a worker passes to `--connect`: `tcp://HOST:PORT`, or the
    /// local socket's path.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The local socket's path (`None` over TCP).
    pub fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    /// The secret, hex-encoded, for the worker's `PROCPOOL_TOKEN`.
    pub fn secret_hex(&self) -> String {
        hex(&self.secret)
    }

    /// The old name of [`secret_hex`](Self::secret_hex).
    #[deprecated(since = "0.1.0", note = "renamed to `secret_hex`")]
    pub fn token_hex(&self) -> String {
        self.secret_hex()
    }

    pub(crate) fn secret_bytes(&self) -> &[u8] {
        &self.secret
    }

    /// The key of the launch with `ticket`, hex-encoded, for that launch's
    /// `PROCPOOL_TOKEN` (see `procpool_wire::handshake::launch_key`).
    pub(crate) fn launch_key_hex(&self, ticket: u64) -> String {
        let mut key = launch_key(&self.secret, ticket);
        let text = hex(&key);
        crate::sys::zeroize(&mut key);
        text
    }

    /// The command that attaches a worker: `program --connect ADDRESS`,
    /// with the secret in its environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("--connect")
            .arg(&self.address)
            .env(ENV_TOKEN, self.secret_hex());
        cmd
    }

    /// The command as a person would type it. The secret is read from a
    /// file only this user can read (written for `Launcher::Attach` and
    /// `Launcher::External` pools only, and removed when the pool stops),
    /// so it is in no log and on no command line. Other pools keep their
    /// secret in memory: the line then says to set it from
    /// [`secret_hex`](Self::secret_hex).
    pub fn command_line(&self, program: &Path) -> String {
        let secret = match &self.secret_file {
            Some(f) => format!("\"$(cat {})\"", f.display()),
            None => "<attach_info().secret_hex()>".to_owned(),
        };
        format!(
            "{ENV_TOKEN}={secret} {} --connect {}",
            program.display(),
            self.address
        )
    }

    /// The file holding the secret (hex), for `Launcher::Attach` and
    /// `Launcher::External` pools; `None` for the others.
    pub fn secret_file(&self) -> Option<&Path> {
        self.secret_file.as_deref()
    }
}

/// A worker that passed the handshake (up to the `Accept`, which its
/// slot sends).
pub(crate) struct Dialed {
    /// The connection.
    pub stream: Stream,
    /// What it proved: the nonces that key the pool's proof and the link.
    pub proven: Proven,
    /// What the worker said of itself.
    pub hello: Hello,
    /// Proven to be this user's process on this host (`SO_PEERCRED`), so
    /// its pid may be signalled.
    pub local_pid: Option<u32>,
}

enum Listening {
    Local(Listener),
    Tcp(TcpListener),
}

/// The listening side. Its 0700 directory (socket, secret file), if it
/// needs one, is removed when the pool stops, or by the next pool that
/// starts if this process was killed (see `stale.rs`).
pub(crate) struct AttachPoint {
    /// Where and how workers dial in (public via `attach_info`). Set once.
    pub info: AttachInfo,
    /// The 0700 directory, if anything goes in it: set at open, taken
    /// (and so removed with whatever is in it) by `close`, or removed when
    /// the point is dropped, on a panic's unwinding too (leaf lock).
    dir: Mutex<Option<tempfile::TempDir>>,
    /// The TCP address bound, if listening on TCP. Set once.
    tcp: Option<SocketAddr>,
    /// The listener, until the accept loop takes it (leaf lock).
    listening: Mutex<Option<Listening>>,
    /// Spawned workers dialing back over TCP, by ticket (leaf lock):
    /// registered by the spawner, answered by an attach thread once the
    /// worker passed the handshake.
    awaited: Mutex<HashMap<u64, mpsc::Sender<Result<Dialed, StartError>>>>,
}

impl AttachPoint {
    /// Creates the secret, the 0700 directory if anything goes in it (a
    /// local socket; the secret file for `Attach` and `External`), and the
    /// listener. First removes the directories of pools whose process is
    /// gone.
    pub(crate) fn open(cfg: &Config) -> io::Result<AttachPoint> {
        clean_stale_dirs(&std::env::temp_dir());
        let secret = random_bytes(SECRET_LEN)?;
        let wants_file = matches!(cfg.launcher, Launcher::Attach | Launcher::External);
        let dir = if wants_file || cfg.transport == Transport::Local {
            // `procpool-PID-RANDOM`: the PID lets a later pool tell a dead
            // pool's directory (see `clean_stale_dirs`).
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::Builder::new()
                .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()?;
            Some(dir)
        } else {
            None
        };
        let secret_file = match dir.as_ref().map(tempfile::TempDir::path) {
            Some(dir) if wants_file => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let file = dir.join(SECRET_FILE);
                let mut hex_secret = hex(&secret).into_bytes();
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&file)
                    .and_then(|mut f| f.write_all(&hex_secret));
                crate::sys::zeroize(&mut hex_secret);
                written?;
                Some(file)
            }
            _ => None,
        };
        let dir_or_err = || {
            dir.as_ref()
                .map(|d| d.path().to_path_buf())
                .ok_or_else(|| io::Error::other("a local socket needs a directory"))
        };
        let (address, socket, tcp, listening) = match cfg.transport {
            Transport::Local => {
                let socket = dir_or_err()?.join(SOCKET_FILE);
                let name = socket.as_path().to_fs_name::<GenericFilePath>()?;
                let listener = ListenerOptions::new().name(name).create_sync()?;
                let address = socket.display().to_string();
                (address, Some(socket), None, Listening::Local(listener))
            }
            Transport::Tcp => {
                let listener = TcpListener::bind(cfg.listen)?;
                let bound = listener.local_addr()?;
                let host = match &cfg.advertise {
                    Some(h) => h.clone(),
                    None if !bound.ip().is_unspecified() => bound.ip().to_string(),
                    None => host_name(),
                };
                let address = if host.contains(':') && !host.starts_with('[') {
                    format!("tcp://[{host}]:{}", bound.port())
                } else {
                    format!("tcp://{host}:{}", bound.port())
                };
                (address, None, Some(bound), Listening::Tcp(listener))
            }
        };
        Ok(AttachPoint {
            info: AttachInfo {
                address,
                socket,
                secret_file,
                secret,
            },
            dir: Mutex::new(dir),
            tcp,
            listening: Mutex::new(Some(listening)),
            awaited: Mutex::new(HashMap::new()),
        })
    }

    /// The address a worker on this host dials (loopback for TCP, which
    /// works whatever is advertised).
    pub(crate) fn local_address(&self) -> String {
        match self.tcp {
            Some(a) if a.ip().is_unspecified() => format!("tcp://127.0.0.1:{}", a.port()),
            Some(a) => format!("tcp://{a}"),
            None => self.info.address.clone(),
        }
    }

    /// Registers a spawned worker's ticket; its connection arrives on the
    /// returned channel once it passed the handshake.
    pub(crate) fn expect(&self, ticket: u64) -> mpsc::Receiver<Result<Dialed, StartError>> {
        let (tx, rx) = mpsc::channel();
        lock(&self.awaited).insert(ticket, tx);
        rx
    }

    pub(crate) fn forget(&self, ticket: u64) {
        lock(&self.awaited).remove(&ticket);
    }

    /// Wakes the accept loop (which then sees the pool stopped) and removes
    /// the directory.
    pub(crate) fn close(&self) {
        match self.tcp {
            Some(a) => {
                let port = a.port();
                let _ = std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port))
                    .or_else(|_| std::net::TcpStream::connect(a));
            }
            None => {
                if let Some(s) = &self.info.socket {
                    let _ = std::os::unix::net::UnixStream::connect(s);
                    let _ = std::fs::remove_file(s);
                }
            }
        }
        if let Some(f) = &self.info.secret_file {
            let _ = std::fs::remove_file(f);
        }
        if let Some(d) = lock(&self.dir).take()
            && let Err(e) = d.close()
        {
            tracing::debug!(target: "procpool::pool", "cannot remove the pool's directory: {e}");
        }
    }
}

/// A connection taken off the listener.
struct Conn {
    stream: Stream,
    /// Who it is, for logs.
    peer: String,
    /// The peer's pid, if it is proven local.
    local_pid: Option<u32>,
    /// The peer's network address (`None`: a local socket).
    ip: Option<std::net::IpAddr>,
}

/// Takes the next connection.
fn next_conn(l: &Listening) -> io::Result<Conn> {
    match l {
        Listening::Tcp(t) => t.accept().map(|(s, a)| Conn {
            stream: Stream::Tcp(s),
            peer: a.to_string(),
            local_pid: None,
            ip: Some(a.ip()),
        }),
        Listening::Local(l) => {
            let conn = l.accept()?;
            #[allow(unreachable_patterns)]
            let stream = match &conn {
                interprocess::local_socket::Stream::UdSocket(s) => s.inner().try_clone(),
                _ => Err(io::Error::other("not a Unix-domain socket")),
            };
            stream.and_then(|u| {
                let creds = getsockopt(&u, sockopt::PeerCredentials).map_err(io::Error::from)?;
                let me = nix::unistd::geteuid().as_raw();
                if creds.uid() != me {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "pid {} of uid {} (the pool runs as uid {me})",
                            creds.pid(),
                            creds.uid()
                        ),
                    ));
                }
                Ok(Conn {
                    stream: Stream::Unix(u),
                    peer: format!("pid {}", creds.pid()),
                    local_pid: Some(creds.pid() as u32),
                    ip: None,
                })
            })
        }
    }
}

/// Accepts connections until the pool stops.
pub(crate) fn accept_loop(shared: &Arc<Shared>) {
    let Some(point) = shared.attach.as_ref() else {
        return;
    };
    let Some(listening) = lock(&point.listening).take() else {
        return;
    };
    let admission = Admission::default();
    loop {
        let conn = next_conn(&listening);
        if stopped(shared) {
            return;
        }
        let Conn {
            stream,
            peer,
            local_pid,
            ip,
        } = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "procpool::pool", "attach: refused a connection: {e}");
                // Out of descriptors, say: do not spin.
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        // The whole handshake, from now, has one deadline.
        let deadline = handshake::deadline_after(shared.cfg.handshake_timeout);
        if let Stream::Tcp(t) = &stream
            && let Err(e) = tune_tcp(t, shared.cfg.lost_after)
        {
            tracing::warn!(target: "procpool::pool", "attach: {peer}: cannot set TCP options: {e}");
        }
        let admitted = match admission.admit(ip) {
            Ok(a) => a,
            Err(why) => {
                tracing::warn!(target: "procpool::pool", "attach: dropped {peer}: {why}");
                continue;
            }
        };
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("procpool-attach".into())
            .spawn(move || {
                attach_one(&s, stream, &peer, local_pid, deadline);
                drop(admitted);
            });
        if let Err(e) = spawned {
            tracing::warn!(target: "procpool::pool", "attach: cannot start a handshake thread: {e}");
        }
    }
}

fn attach_one(
    shared: &Arc<Shared>,
    stream: Stream,
    peer: &str,
    local_pid: Option<u32>,
    deadline: std::time::Instant,
) {
    let Some(point) = shared.attach.as_ref() else {
        return;
    };
    let limit = shared.cfg.handshake_timeout;
    let hello = match handshake::read_hello(&stream, deadline) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(target: "procpool::pool", "attach: refused {peer}: {e} (handshake limit {limit:?})");
            return;
        }
    };
    // A pool that starts its own workers takes only those: a dial-in whose
    // ticket names no worker it is waiting for is refused before anything
    // else (it may hold a key a worker or one of its tasks leaked). This
    // refuses; it changes nothing.
    let spawn_only = matches!(shared.cfg.launcher, Launcher::Spawn);
    if spawn_only && !lock(&point.awaited).contains_key(&hello.ticket) {
        tracing::warn!(target: "procpool::pool",
            "attach: refused {peer}: not a worker this pool started (Launcher::Spawn)");
        handshake::reject(
            &stream,
            "this pool did not start this worker: a pool with Launcher::Spawn takes only the \
             workers it started",
        );
        return;
    }
    // The secret first: a stranger learns nothing, not even our build, and
    // nothing it said (its ticket, its host) is acted on. Each launch
    // proves its own key (derived from the secret and its ticket).
    let key = launch_key(point.info.secret_bytes(), hello.ticket);
    let proven = match handshake::challenge(&stream, &hello, key, deadline) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(
                target: "procpool::pool",
                "attach: refused {peer} (says pid {} on {}): {e} (handshake limit {limit:?})",
                hello.pid,
                hello.host_for_log()
            );
            return;
        }
    };
    if let Err(e) = handshake::check_hello(&stream, &hello) {
        tracing::warn!(
            target: "procpool::pool",
            "attach: refused {peer} (pid {} on {}): {e}",
            hello.pid,
            hello.host_for_log()
        );
        // It proved the secret: a worker the pool spawned, whose slot
        // learns why at once.
        if let Some(tx) = lock(&point.awaited).remove(&hello.ticket) {
            let _ = tx.send(Err(StartError::Handshake(e)));
        }
        return;
    }
    let dialed = Dialed {
        stream,
        proven,
        hello,
        local_pid,
    };
    let waiting = lock(&point.awaited).remove(&dialed.hello.ticket);
    match waiting {
        Some(tx) => {
            if let Err(mpsc::SendError(Ok(d))) = tx.send(Ok(dialed)) {
                handshake::reject(&d.stream, "the pool gave up waiting for this worker");
            }
        }
        None => adopt(shared, dialed),
    }
}
