//! Helpers the benches share: the raw Unix-socket baseline (an echo peer
//! process, no serde, no pool), the interleaved loop each printed ratio
//! comes from, and the recorder of criterion's own samples (the
//! cross-check printed beside it).
//!
//! The echo peer is `procpool-bench-worker` started with
//! [`ENV_ECHO_PEER`] set to a socket path: it connects, then echoes
//! length-prefixed frames (a u32 little-endian length, the bytes) until EOF.
//! The socket lives in a fresh 0700 directory that is removed as soon as the
//! peers have connected.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::DirBuilder;
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use procpool::{ProcessPool, WorkerCommand};

/// Set (to a socket path) in the environment of `procpool-bench-worker` to
/// make it an echo peer instead of a procpool worker.
pub const ENV_ECHO_PEER: &str = "PROCPOOL_BENCH_ECHO_PEER";

/// Largest frame the echo peer accepts.
const PEER_MAX_FRAME: usize = 1 << 30;
/// How long peers may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one socket read or write may block before the baseline fails.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a closed peer may take to exit before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The first line of a bench binary's worker `main`: if [`ENV_ECHO_PEER`] is
/// set, echo frames on that socket and exit; otherwise return.
pub fn run_echo_peer_if_requested() {
    let Some(path) = std::env::var_os(ENV_ECHO_PEER) else {
        return;
    };
    let code = match echo_peer(Path::new(&path)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("procpool-bench-worker (echo peer): {e}");
            2
        }
    };
    std::process::exit(code)
}

/// The echo peer: says its pid, then loops: one read of the length, one of
/// the body, one write of both back.
fn echo_peer(path: &Path) -> io::Result<()> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(&std::process::id().to_le_bytes())?;
    let mut buf = vec![0u8; 4];
    loop {
        let mut len = [0u8; 4];
        match stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
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
        stream.read_exact(&mut buf[4..])?;
        stream.write_all(&buf)?;
    }
}

/// `payload` with its u32 little-endian length in front: what
/// [`EchoPeer::round_trip`] sends.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("payload under 4 GiB");
    let mut f = Vec::with_capacity(4 + payload.len());
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// `len` bytes of a repeating, non-constant pattern (every byte value
/// occurs, so encodings that treat bytes ≥ 128 differently pay for it).
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) % 251) as u8).collect()
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
            let dir = base.join(format!(
                "procpool-bench-{}-{nanos:x}-{n}",
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

/// A child process echoing frames over a connected Unix socket.
pub struct EchoPeer {
    child: Child,
    stream: UnixStream,
    back: Vec<u8>,
}

impl EchoPeer {
    /// Starts one echo peer (`program` is `procpool-bench-worker`).
    pub fn start(program: impl AsRef<OsStr>) -> io::Result<EchoPeer> {
        let mut peers = EchoPeer::start_many(program, 1)?;
        Ok(peers.pop().expect("one peer"))
    }

    /// Starts `n` echo peers at once (all spawned, then all accepted).
    pub fn start_many(program: impl AsRef<OsStr>, n: usize) -> io::Result<Vec<EchoPeer>> {
        let dir = TempDir::new()?;
        let path = dir.0.join("echo.sock");
        let listener = UnixListener::bind(&path)?;
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            let spawned = Command::new(program.as_ref())
                .env(ENV_ECHO_PEER, &path)
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
                back: Vec::new(),
            });
        }
        Ok(peers)
    }

    /// Sends `frame` (see [`frame`]) and reads the echo back, checking its
    /// length. The bytes are compared only in debug builds: the baseline is
    /// the socket, not `memcmp`.
    pub fn round_trip(&mut self, frame: &[u8]) -> io::Result<()> {
        self.stream.write_all(frame)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
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
        self.stream.read_exact(&mut self.back[..len])?;
        debug_assert_eq!(&self.back[..len], &frame[4..]);
        Ok(())
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
        // `close` already reaped the child; otherwise do not leave it behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
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

/// A process pool of `workers` running `procpool-bench-worker` at `program`.
pub fn process_pool(program: &str, workers: usize) -> ProcessPool {
    ProcessPool::builder()
        .worker(WorkerCommand::program(program))
        .workers(workers)
        .build()
        .unwrap_or_else(|e| panic!("cannot start a pool of {program}: {e}"))
}

/// Runs `f` `iters` times and returns how long that took: the body of an
/// `iter_custom` routine.
pub fn timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed()
}

/// A routine as `iter_custom` takes it: runs `iters` calls, returns the time
/// they took (setup inside it may stay off the clock).
pub type Routine<'a> = &'a mut dyn FnMut(u64) -> Duration;

/// Runs the routines in turn, `iters` calls each, for `rounds` rounds (the
/// order reversed every other round), and returns each one's median time
/// per call. Alternating keeps a contender and its baseline under the same
/// machine load, which criterion's one-after-the-other runs cannot on a
/// shared machine.
pub fn interleave(rounds: usize, iters: u64, routines: &mut [Routine<'_>]) -> Vec<Duration> {
    let n = routines.len();
    let mut per: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds.max(1) {
        for k in 0..n {
            let i = if round % 2 == 0 { k } else { n - 1 - k };
            let d = (routines[i])(iters.max(1));
            per[i].push(d.as_secs_f64() / iters.max(1) as f64);
        }
    }
    per.into_iter()
        .map(|v| Duration::from_secs_f64(median_of(v)))
        .collect()
}

fn median_of(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// `a / b` as a plain ratio.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// Per-iteration times of each bench's measured samples, taken inside
/// criterion's `iter_custom`: the ratio of criterion's own (sequential)
/// runs, printed beside the interleaved one as a cross-check, without
/// parsing criterion's output files.
///
/// Criterion calls the routine during warm-up too; only the last
/// `keep` calls of each bench (its measurement samples) are kept.
pub struct Recorder {
    keep: usize,
    samples: Mutex<BTreeMap<String, Vec<f64>>>,
}

impl Recorder {
    /// Keeps the last `keep` samples per bench: criterion's `sample_size`.
    pub fn new(keep: usize) -> Recorder {
        Recorder {
            keep: keep.max(1),
            samples: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one sample, `total` over `iters` calls, and returns `total`
    /// (so an `iter_custom` routine can end with it).
    pub fn record(&self, id: &str, total: Duration, iters: u64) -> Duration {
        let per = total.as_secs_f64() / iters.max(1) as f64;
        let mut map = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let v = map.entry(id.to_owned()).or_default();
        v.push(per);
        if v.len() > self.keep {
            v.remove(0);
        }
        total
    }

    /// Median time per call of `id`'s kept samples; `None` if it did not run
    /// (filtered out on the command line).
    pub fn median(&self, id: &str) -> Option<Duration> {
        let map = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let v = map.get(id)?.clone();
        if v.is_empty() {
            return None;
        }
        Some(Duration::from_secs_f64(median_of(v)))
    }

    /// `median(a) / median(b)`, when both ran.
    pub fn ratio(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.median(a)?, self.median(b)?);
        Some(a.as_secs_f64() / b.as_secs_f64())
    }
}

/// Whether criterion is measuring (`cargo bench`), as opposed to running
/// each bench once as a smoke test (`cargo test --benches`, `-- --test`) or
/// listing them (`--list`), where ratios would mean nothing.
pub fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench")
        && !args
            .iter()
            .any(|a| a == "--test" || a == "--list" || a.starts_with("--profile-time"))
}

/// A duration in the unit that suits it (`812 ns`, `41.3 µs`, `2.07 ms`).
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1e-6 {
        format!("{:.0} ns", s * 1e9)
    } else if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// Prints the heading of a bench file's ratio report; returns whether the
/// ratios should follow (only when criterion measured).
pub fn report_heading(question: &str) -> bool {
    if std::env::args().any(|a| a == "--list") {
        return false;
    }
    println!();
    println!("== {question}");
    if !measuring() {
        println!("   (not a measuring run: each bench ran once; no ratios)");
        return false;
    }
    true
}
