//! Booting a worker process: is this process a worker, how does it reach
//! its pool (an inherited `socketpair` end and reply ring, or dialing in
//! with the secret from its environment), the handshake, and starting its
//! threads. Takes no lock of its own. Dialing in is the `remote` feature.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[cfg(feature = "remote")]
use procpool_wire::handshake::SECRET_LEN;

use super::executor::execute;
#[cfg(feature = "remote")]
use super::heartbeat;
use super::inbound::Inbound;
use super::panic::install_panic_hook;
use super::reader;
use super::shared::{Local, Notes, WorkerShared, Writer};
use crate::link::env::{
    ENV_CONNECT, ENV_DUMPABLE, ENV_FD, ENV_PARENT, ENV_RING_FD, ENV_SPIN, ENV_TOKEN_C,
    ENV_WORK_RING,
};
#[cfg(feature = "remote")]
use crate::link::env::{ENV_TICKET, ENV_TOKEN};
use crate::link::handshake::greet_pool;
use crate::link::ring;
use crate::link::role::{self, is_worker, spawned_by_parent};
#[cfg(feature = "remote")]
use crate::link::secret::unhex;
use crate::link::stream::Stream;
#[cfg(feature = "remote")]
use crate::link::stream::{dial, tune_tcp};
use crate::task::Registry;

/// A worker the pool spawned dies with it. Set first, then check, so a
/// parent that died in between is not missed.
fn die_with_parent() -> Result<(), String> {
    if std::env::var_os(ENV_PARENT).is_none() {
        return Ok(());
    }
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if !spawned_by_parent() {
        return Err("the pool that started this worker is gone".into());
    }
    Ok(())
}

/// Makes this program its own worker: call it first thing in `main`. In a
/// worker process it serves `registry` (plus every `#[procpool::task]` of
/// the program) and exits; otherwise it returns at once, and the pools
/// this program builds run this program as their workers by default.
///
/// ```no_run
/// #[procpool::task]
/// fn double(x: u64) -> u64 {
///     2 * x
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     procpool::worker::run_if_worker(procpool::Registry::collected());
///     let pool = procpool::ProcessPool::builder().build()?; // workers: this program
///     assert_eq!(pool.submit(Double { x: 21 })?.result()?, 42);
///     Ok(())
/// }
/// ```
///
/// A program that forgets it and builds a pool of itself fails at once:
/// each worker refuses in `build()` and the parent's `build()` says so.
pub fn run_if_worker(registry: Registry) {
    role::mark_serves_itself();
    if is_worker() {
        run(registry)
    }
}

/// Serves tasks from `registry` for the pool that started this process, then
/// exits. This is the whole `main` of a worker binary.
///
/// ```no_run
/// procpool::worker::run(procpool_tasks::registry())
/// ```
///
/// Started by hand or by a launcher (`srun`, `mpirun`) as
/// `PROGRAM --connect ADDRESS` (`tcp://HOST:PORT` or a local socket's
/// path) with the pool's secret in `PROCPOOL_TOKEN`, it dials in instead;
/// see [`Launcher`](crate::Launcher). (That is the `remote` feature:
/// without it such a worker exits at once, saying why.) A worker on TCP
/// starts this program once more as its *keeper*, a second process that
/// owns the connection's sending side so that nothing the worker reported
/// is lost if it dies; the keeper also comes through this function (it
/// recognises itself and never runs a task), and exits after its worker.
///
/// Before anything else it takes the secret out of its environment (tasks
/// and the programs they start never see `PROCPOOL_TOKEN`, not even in
/// `/proc/self/environ`) and makes itself non-dumpable (other processes of
/// the same user cannot read its memory or attach a debugger; see
/// `ProcessPoolBuilder::dumpable`). Call it first thing in `main`, before
/// the program starts threads of its own.
pub fn run(registry: Registry) -> ! {
    role::mark_serving();
    let registry = Registry::collected_into(registry);
    if std::env::var_os(ENV_DUMPABLE).is_none_or(|v| v != "1") {
        let _ = nix::sys::prctl::set_dumpable(false);
    }
    // A TCP worker's keeper (see `keeper`): this program again, started by
    // the worker it keeps.
    #[cfg(feature = "remote")]
    if let Ok(max_frame) = std::env::var(crate::link::env::ENV_KEEPER)
        && role::spawned_by_parent()
    {
        let code = match super::keeper::serve(&max_frame) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("procpool-keeper: {e}");
                2
            }
        };
        std::process::exit(code)
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let connect = args
        .iter()
        .position(|a| a == "--connect")
        .map(|i| args.get(i + 1).and_then(|a| a.to_str()).map(str::to_owned))
        .or_else(|| std::env::var(ENV_CONNECT).ok().map(Some));
    let served = match connect {
        #[cfg(feature = "remote")]
        Some(Some(address)) => serve_dialed(&address, registry),
        #[cfg(not(feature = "remote"))]
        Some(Some(address)) => Err(format!(
            "cannot dial {address}: this worker was built without procpool's `remote` feature"
        )),
        Some(None) => {
            Err("--connect needs the pool's address (tcp://HOST:PORT or a socket path)".to_owned())
        }
        None => serve_inherited(registry),
    };
    let code = match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("procpool-worker: {e}");
            2
        }
    };
    std::process::exit(code)
}

fn serve_inherited(registry: Registry) -> Result<(), String> {
    // A spawned worker has no secret, but one set by hand goes too.
    crate::sys::scrub_env(ENV_TOKEN_C);
    let fd: i32 = std::env::var(ENV_FD)
        .map_err(|_| {
            format!(
                "{ENV_FD} is not set: this program is a procpool worker and is started by a \
                 ProcessPool, not by hand"
            )
        })?
        .parse()
        .map_err(|_| format!("{ENV_FD} is not a descriptor number"))?;
    die_with_parent()?;
    let sock = crate::sys::adopt_socket(fd).map_err(|e| format!("descriptor {fd}: {e}"))?;
    // Programs a task starts must not inherit the pool's socket.
    nix::fcntl::fcntl(
        &sock,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| format!("cannot set close-on-exec on the socket: {e}"))?;
    // The reply ring, if the pool made one (see `link::ring`).
    let ring = match std::env::var(ENV_RING_FD) {
        Err(_) => None,
        Ok(n) => {
            let n: i32 = n
                .parse()
                .map_err(|_| format!("{} is not a descriptor number", ENV_RING_FD))?;
            let fd = crate::sys::adopt_memfd(n).map_err(|e| format!("reply ring {n}: {e}"))?;
            // The work ring, in the same map, if the pool writes it.
            let work = if std::env::var(ENV_WORK_RING).is_ok_and(|v| v == "1") {
                let fd = fd.try_clone().map_err(|e| format!("work ring: {e}"))?;
                Some(ring::Reader::open_work(fd).map_err(|e| format!("work ring: {e}"))?)
            } else {
                None
            };
            Some((
                ring::Writer::open(fd).map_err(|e| format!("reply ring: {e}"))?,
                work,
            ))
        }
    };
    let (ring, work) = ring.unzip();
    serve(
        Stream::Unix(UnixStream::from(sock)),
        registry,
        None,
        0,
        ring,
        work.flatten(),
    )
}

/// Dial the pool (TCP or a local socket) and prove the secret from the
/// environment (never from the command line).
#[cfg(feature = "remote")]
fn serve_dialed(address: &str, registry: Registry) -> Result<(), String> {
    let token = std::env::var(ENV_TOKEN)
        .ok()
        .and_then(|t| unhex(t.trim()))
        .filter(|t| t.len() == SECRET_LEN)
        .ok_or_else(|| {
            format!("{ENV_TOKEN} must hold the pool's secret ({SECRET_LEN} bytes, hex)")
        });
    // Read once, then gone: nothing this process runs inherits it.
    crate::sys::scrub_env(ENV_TOKEN_C);
    let token = token?;
    let ticket = std::env::var(ENV_TICKET)
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0);
    die_with_parent()?;
    let stream = dial(address).map_err(|e| format!("cannot connect to {address}: {e}"))?;
    serve(stream, registry, Some(token), ticket, None, None)
}

/// Serves one connection to a pool: handshake, then tasks until told to
/// stop. A worker that dialed in brings the pool's `secret` and proves it
/// (and checks the pool's proof); `ticket` names what the pool started it
/// as.
pub(crate) fn serve(
    stream: Stream,
    registry: Registry,
    secret: Option<Vec<u8>>,
    ticket: u64,
    ring: Option<ring::Writer>,
    work: Option<ring::Reader>,
) -> Result<(), String> {
    install_panic_hook();
    let ((reader, sealer), accepted) =
        greet_pool(&stream, secret.as_deref(), ticket, registry.announce())?;
    let (worker_id, generation, max_frame) =
        (accepted.worker_id, accepted.generation, accepted.max_frame);
    let spin = std::env::var(ENV_SPIN)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_micros);
    #[cfg(feature = "remote")]
    let heartbeat = Duration::from_millis(u64::from(accepted.heartbeat_ms));
    #[cfg(feature = "remote")]
    if let Stream::Tcp(t) = &stream
        && !heartbeat.is_zero()
    {
        // A pool that vanishes without closing is noticed when our
        // heartbeats go unacknowledged this long.
        let _ = tune_tcp(t, heartbeat.saturating_mul(10));
    }
    let shared_mode = if stream.is_tcp() {
        crate::shared::Mode::Inline
    } else {
        crate::shared::Mode::Descriptors
    };
    // Over TCP a keeper process takes the sending side (see `keeper`); if
    // it cannot, this worker sends on the connection itself.
    #[cfg(feature = "remote")]
    let mut sealer = sealer;
    #[cfg(feature = "remote")]
    let (stream, ring) = match stream {
        Stream::Tcp(t) if sealer.is_some() && max_frame >= super::keeper::MIN_FRAME => {
            match super::keeper::start(&t, &mut sealer, generation, max_frame) {
                Ok(kept) => (kept.stream, Some(kept.ring)),
                Err(why) => {
                    tracing::warn!(target: "procpool::worker", "no keeper ({why}): sending on the connection");
                    (Stream::Tcp(t), ring)
                }
            }
        }
        other => (other, ring),
    };
    let shared = Arc::new(WorkerShared {
        shared_mode,
        spin,
        local: Mutex::new(Local {
            queue: VecDeque::new(),
            closing: false,
            batches: 0,
            parked: false,
            inbound: work.map(|w| Inbound::new(w, max_frame)),
        }),
        cond: Condvar::new(),
        writer: Mutex::new(Writer { stream, sealer }),
        generation,
        spare_frame: Mutex::new(None),
    });
    let reader_shared = shared.clone();
    std::thread::Builder::new()
        .name("procpool-worker-reader".into())
        .spawn(move || reader::read_loop(reader, &reader_shared))
        .map_err(|e| format!("cannot start the reader thread: {e}"))?;
    // Only a TCP worker is asked to beat.
    #[cfg(feature = "remote")]
    if !heartbeat.is_zero() {
        heartbeat::start(shared.clone(), heartbeat)
            .map_err(|e| format!("cannot start the heartbeat thread: {e}"))?;
    }
    let mut notes = Notes { ring };
    execute(
        &shared,
        &registry,
        worker_id as usize,
        max_frame,
        &mut notes,
    );
    Ok(())
}
