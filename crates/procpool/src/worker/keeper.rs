//! A TCP worker's keeper: a second process that owns the sending side of
//! the worker's connection, so that a worker that dies (a crash, a
//! `SIGKILL`) loses nothing it reported, while its notes travel many to a
//! frame.
//!
//! **Why.** A TCP connection closed with unread input is reset, and the
//! reset throws away what the dying side wrote but the kernel had not sent
//! yet. A worker that owned its connection therefore had to wait after
//! every note until the kernel had sent it (one write and one wait per
//! input of a chunk: ~5 % of the local rate on loopback), or a result
//! finished just before a crash came back as `WorkerDied`.
//!
//! **How.** After the handshake a worker on TCP starts its keeper (this
//! program again, with `PROCPOOL_KEEPER` set; it calls `run_if_worker` or
//! `run` as the worker did) and hands it a socketpair (descriptor 3), a
//! reply ring (descriptor 4, as a locally spawned worker's: `link::ring`)
//! and, over the socketpair with `SCM_RIGHTS`, the connection itself and
//! its sealer's state (key and next sequence number; never through the
//! environment). From then on the worker's executor writes its notes into
//! the ring (no syscall per note), its other frames (withdrawals,
//! heartbeats, wake-ups) go to the socketpair, and it still reads its tasks
//! from the connection. The keeper does what the pool's reader does with a
//! local worker's ring (drains it, parks when it is empty, is woken through
//! the socketpair) but forwards instead of acting: each run of records
//! becomes one sealed `ToParent::Records` frame, every other frame is
//! sealed and sent as it came, in the order the worker made them (a marker
//! in the ring waits for its note from the socketpair).
//!
//! **When the worker dies** its end of the socketpair closes: the keeper
//! takes what is left in the ring, sends it, waits (at most
//! [`FLUSH_WITHIN`]) until the pool has acknowledged every byte
//! (`SIOCOUTQ`), and exits; the connection closes only then, so whatever
//! the worker published before it died is in the pool's kernel before any
//! reset.
//!
//! A keeper that cannot start, or does not say it is ready within
//! [`READY_WITHIN`], is killed, and the worker sends on the connection
//! itself as before (`WorkerShared::send`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use procpool_wire::Generation;
use procpool_wire::fds::SendFd;
use procpool_wire::frame::{Outgoing, write_sealed_frames};
use procpool_wire::message::{ToParent, decode_message, encode_message};
use procpool_wire::seal::{HANDOVER_LEN, Sealer};

use crate::link::env::{
    ENV_CONNECT, ENV_FD, ENV_KEEPER, ENV_PARENT, ENV_RING_FD, ENV_TICKET, ENV_WORK_RING, RING_FD,
    WORKER_FD,
};
use crate::link::frames::{self, next_frame_fds, write_frames};
use crate::link::ring;
use crate::link::stream::Stream;

/// The byte a keeper writes once it is ready for the hand-over.
const READY: u8 = b'K';
/// How long a worker waits for its keeper to be ready.
pub(super) const READY_WITHIN: Duration = Duration::from_secs(10);
/// How long a keeper whose worker is gone waits for the pool to
/// acknowledge what it sent.
pub(super) const FLUSH_WITHIN: Duration = Duration::from_secs(2);
/// Pools with a smaller frame cap get no keeper (a run of records must fit
/// in one frame with room to spare).
pub(super) const MIN_FRAME: u32 = 1 << 20;
/// Bytes of records in one `Records` frame, at most.
const BATCH: usize = 256 * 1024;

/// What a worker sends on once its keeper runs: the socketpair to the
/// keeper, and the reply ring the keeper reads.
pub(super) struct Kept {
    pub stream: Stream,
    pub ring: ring::Writer,
}

/// Starts the keeper of the worker whose connection is `tcp` and hands it
/// the connection's sending side (`sealer`, taken). `Err`: no keeper runs,
/// and `sealer` is as it was.
pub(super) fn start(
    tcp: &TcpStream,
    sealer: &mut Option<Sealer>,
    generation: Generation,
    max_frame: u32,
) -> Result<Kept, String> {
    let state = sealer
        .take()
        .ok_or("the connection is not sealed")?
        .hand_over();
    hand_over(tcp, &state, generation, max_frame).inspect_err(|_| {
        *sealer = Some(Sealer::take_over(&state));
    })
}

fn hand_over(
    tcp: &TcpStream,
    state: &[u8; HANDOVER_LEN],
    generation: Generation,
    max_frame: u32,
) -> Result<Kept, String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let (made, ring_fd) = ring::Reader::create().map_err(|e| format!("reply ring: {e}"))?;
    drop(made);
    let ring = ring_fd
        .try_clone()
        .and_then(ring::Writer::open)
        .map_err(|e| format!("reply ring: {e}"))?;
    let theirs = OwnedFd::from(theirs);
    let program = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let mut cmd = Command::new(program);
    cmd.env_remove(ENV_CONNECT)
        .env_remove(ENV_FD)
        .env_remove(ENV_RING_FD)
        .env_remove(ENV_WORK_RING)
        .env_remove(ENV_TICKET)
        .env(ENV_PARENT, std::process::id().to_string())
        .env(ENV_KEEPER, max_frame.to_string())
        .stdin(Stdio::null())
        // It prints nothing but its own failure (stderr).
        .stdout(Stdio::null())
        // Its own group: the pool ends a worker by signalling the worker's
        // group (its task's children too), and the keeper must outlive
        // the worker long enough to send what it published.
        .process_group(0);
    crate::sys::pass_fds(&mut cmd, &theirs, Some(&ring_fd));
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    drop((theirs, ring_fd));
    if let Err(e) = ready(&ours) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    // It ends after this worker (see the module docs); reaped here if not.
    let _ = std::thread::Builder::new()
        .name("procpool-keeper-reaper".into())
        .spawn(move || child.wait());
    let mut body = state.to_vec();
    body.extend_from_slice(&generation.to_le_bytes());
    let connection: OwnedFd = tcp
        .try_clone()
        .map_err(|e| format!("cannot hand over the connection: {e}"))?
        .into();
    let stream = Stream::Unix(ours);
    let frame = Outgoing::new(body, Vec::<Vec<u8>>::new())
        .map_err(|e| e.to_string())?
        .with_fds(vec![Arc::new(connection) as SendFd]);
    write_frames(&stream, &[frame], None).map_err(|e| format!("hand-over: {e}"))?;
    Ok(Kept { stream, ring })
}

/// Waits for the keeper's ready byte.
fn ready(ours: &UnixStream) -> Result<(), String> {
    ours.set_read_timeout(Some(READY_WITHIN))
        .map_err(|e| e.to_string())?;
    let mut byte = [0u8];
    match (&*ours).read_exact(&mut byte) {
        Ok(()) if byte[0] == READY => {}
        Ok(()) => return Err(format!("said {:?} instead of ready", byte[0])),
        Err(e) => return Err(format!("not ready within {READY_WITHIN:?}: {e}")),
    }
    ours.set_read_timeout(None).map_err(|e| e.to_string())
}

/// The keeper's `main` (`PROCPOOL_KEEPER` holds the pool's frame cap):
/// relays its worker's notes until the worker is gone.
pub(super) fn serve(max_frame: &str) -> Result<(), String> {
    let max_frame: u32 = max_frame
        .parse()
        .map_err(|_| format!("{ENV_KEEPER} is not a frame cap"))?;
    let sock = crate::sys::adopt_socket(WORKER_FD).map_err(|e| format!("socketpair: {e}"))?;
    let ring_fd = crate::sys::adopt_memfd(RING_FD).map_err(|e| format!("reply ring: {e}"))?;
    let mut ring = ring::Reader::open(ring_fd).map_err(|e| format!("reply ring: {e}"))?;
    let unix = UnixStream::from(sock);
    (&unix)
        .write_all(&[READY])
        .map_err(|e| format!("cannot say ready: {e}"))?;
    let stream = Stream::Unix(unix);
    let mut reader = frames::reader(stream.try_clone().map_err(|e| e.to_string())?, max_frame);
    let (state, generation, tcp) = match next_frame_fds(&mut reader) {
        Ok(Some((body, fds))) => take_over(body, fds)?,
        Ok(None) => return Ok(()), // the worker went on without us
        Err(e) => return Err(format!("hand-over: {e}")),
    };
    let mut keeper = Keeper {
        tcp,
        sealer: Sealer::take_over(&state),
        generation,
        max_frame,
        batch: Vec::new(),
        packer: ring::Packer::default(),
        body: Vec::new(),
        cap: BATCH.min(max_frame as usize / 2),
    };
    let relayed = keeper.relay(&mut reader, &mut ring);
    keeper.finish();
    relayed.map_err(|e| format!("relaying: {e}"))
}

/// The hand-over frame: the sealer's state and the generation, with the
/// connection as its one descriptor.
fn take_over(
    body: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<([u8; HANDOVER_LEN], Generation, TcpStream), String> {
    let (state, generation) = body
        .split_first_chunk::<HANDOVER_LEN>()
        .ok_or("a short hand-over")?;
    let generation = Generation::from_le_bytes(
        generation
            .try_into()
            .map_err(|_| "a hand-over of the wrong length")?,
    );
    let [connection] = <[OwnedFd; 1]>::try_from(fds).map_err(|_| "no connection handed over")?;
    Ok((*state, generation, TcpStream::from(connection)))
}

struct Keeper {
    tcp: TcpStream,
    sealer: Sealer,
    generation: Generation,
    max_frame: u32,
    /// Records not sent yet.
    batch: Vec<u8>,
    /// Packs `batch`'s item records.
    packer: ring::Packer,
    /// The record being moved.
    body: Vec<u8>,
    /// Bytes of records in one frame, at most.
    cap: usize,
}

impl Keeper {
    /// Forwards the worker's ring and socketpair frames in order until the
    /// socketpair ends (`Ok`) or the connection fails.
    fn relay(
        &mut self,
        reader: &mut frames::SocketReader,
        ring: &mut ring::Reader,
    ) -> io::Result<()> {
        // Stopped at a marker: the note it stands for is on the socketpair.
        let mut at_marker = false;
        // Longer than the pool's 50 µs: a task's round trip over TCP is
        // ~50–100 µs here, and a keeper that parked between two would add
        // a wake-up to each (one task in flight, median round trip: 70–98
        // µs with 50 µs, 34–63 µs with 200 µs, 42–91 µs with no keeper).
        let mut spin = crate::waiting::Look::new(Duration::from_micros(200), true);
        loop {
            if !at_marker {
                at_marker = self.drain(ring)?;
            }
            if !at_marker && reader.get_ref().buffer().is_empty() {
                if spin.look(None, || ring.has_data()) || !ring.park() {
                    continue;
                }
                spin.parked();
            }
            let read = next_frame_fds(reader);
            ring.unpark();
            spin.woken();
            let body = match read {
                Ok(Some((body, fds))) if fds.is_empty() => body,
                // Gone (or breaking the format): what it published counts.
                _ => {
                    if !at_marker {
                        self.drain(ring)?;
                    }
                    return Ok(());
                }
            };
            match decode_message::<ToParent>(body).map(|(m, _)| m) {
                Ok(ToParent::Wake { .. }) => continue,
                Ok(
                    ToParent::Started { .. } | ToParent::Finished { .. } | ToParent::Item { .. },
                ) => {
                    // The executor's note: those it published before it go
                    // first, up to the marker that stands for this one.
                    if !at_marker {
                        at_marker = self.drain(ring)?;
                    }
                    if at_marker {
                        ring.skip_marker();
                        at_marker = false;
                    }
                }
                // Anything else (broken ones too: the pool judges them).
                _ => {}
            }
            let frame = Outgoing::new(body.to_vec(), Vec::<Vec<u8>>::new())?;
            write_sealed_frames(&mut &self.tcp, &[frame], &mut self.sealer)?;
        }
    }

    /// Sends the ring's records up to a marker (`Ok(true)`, the marker left
    /// in place) or until it is empty.
    fn drain(&mut self, ring: &mut ring::Reader) -> io::Result<bool> {
        loop {
            self.body.clear();
            match ring.next_into(self.max_frame, &mut self.body) {
                Ok(None) => {
                    self.flush()?;
                    return Ok(false);
                }
                Ok(Some(ring::Record::Marker)) => {
                    self.flush()?;
                    return Ok(true);
                }
                Ok(Some(record)) => {
                    // Packed, a record takes at most its length word, a
                    // flags byte and its body.
                    if self.batch.len() + 5 + self.body.len() > self.cap {
                        self.flush()?;
                    }
                    self.packer.put(&mut self.batch, record, &self.body);
                }
                Err(message) => {
                    // A broken ring: what came before it still goes; then
                    // the keeper stops and the pool sees the worker end.
                    self.flush()?;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, message));
                }
            }
        }
    }

    /// Sends the records gathered, as one sealed frame.
    fn flush(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.packer.restart();
        let msg = ToParent::Records {
            generation: self.generation,
            len: batch.len() as u32,
        };
        let frame = encode_message(&msg, vec![batch])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        write_sealed_frames(
            &mut &self.tcp,
            std::slice::from_ref(&frame),
            &mut self.sealer,
        )?;
        if let Some(buf) = frame
            .into_payloads()
            .into_iter()
            .next()
            .and_then(|b| Arc::try_unwrap(b).ok())
        {
            self.batch = buf;
            self.batch.clear();
        }
        Ok(())
    }

    /// Waits (at most [`FLUSH_WITHIN`]) until the pool has acknowledged
    /// everything sent: closing before that could reset the connection
    /// and lose it.
    fn finish(&self) {
        let until = Instant::now() + FLUSH_WITHIN;
        while crate::sys::tcp_unacked(&self.tcp).is_ok_and(|n| n > 0) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
