//! A procpool worker that misbehaves on purpose, for `tests/faults.rs`.
//!
//! It speaks the wire protocol by hand (procpool-wire), so it can break it
//! in ways the real worker never would. Configured through environment
//! variables (the tests set them with `WorkerCommand::env`):
//!
//! * `BAD_MODE` — what to do wrong (see [`Mode`]).
//! * `BAD_GOOD_WORKER` — the real test worker: a spawn that is not to
//!   misbehave `exec`s it (same pid, same descriptor 3, same environment),
//!   so it behaves exactly like a good worker.
//! * `BAD_DIR` — a directory where every spawn claims an ordinal by
//!   creating the file `0`, `1`, ... (`create_new`, so concurrent spawns
//!   never share one) holding its pid. The tests count spawns there.
//! * `BAD_FIRST_BAD=n` — only spawns `0..n` misbehave (later ones are good).
//! * `BAD_FIRST_GOOD=n` — spawns `0..n` are good, later ones misbehave.
//! * `BAD_SLOT=i` — only a worker in slot `i` (`PROCPOOL_WORKER_ID`)
//!   misbehaves.
//! * `BAD_PIDFILE` — where `hang_grandchild` writes its grandchild's pid,
//!   and `slow_hello` its ticket and address.
//! * `BAD_OUT` — where `truncate_ring` and `redial` write what they saw.
//!
//! With `PROCPOOL_CONNECT` set (a pool over TCP) it dials the pool and
//! answers the secret challenge like the real worker, seals its frames like
//! it (garbage included: it is a buggy worker with the keys, not a relay),
//! then misbehaves the same way.
//!
//! A misbehaving spawn that gets tasks it is not asked to break answers
//! `square` correctly and anything else with `UnknownTask`.
#![deny(unsafe_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use procpool_tasks::Square;
use procpool_wire::Generation;
use procpool_wire::codec;
use procpool_wire::frame::{FrameReader, Outgoing, Payload, write_all_frames, write_sealed_frames};
use procpool_wire::handshake::{HANDSHAKE_MAX_FRAME, Hello, Proof, Welcome, worker_proof};
use procpool_wire::message::{
    Bulk, Outcome, TaskHeader, ToParent, ToWorker, WorkerTiming, decode_message, encode_message,
};
use procpool_wire::seal::{LinkKeys, Sealer, TAG_LEN};

/// A value no correct answer in the tests ever has.
const WRONG: u64 = 999_999_999;
/// Added to the square the `ring_then_garbage` mode publishes.
const RING_MARK: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Behave (exec the real worker).
    Good,
    /// Hello with the next protocol version.
    BadVersion,
    /// Handshake, then exit with code 7 before taking a task.
    ExitAfterHandshake,
    /// Answer the initializer with an error, then exit with code 4.
    InitFail,
    /// Read the first 1 MiB of the first task frame, then exit with code 5.
    ExitWhileReading,
    /// First task: `Started`, then a frame whose body is garbage; hang.
    Garbage,
    /// First task: `Started`, then 10 bytes of a 100-byte frame; exit 0.
    Truncated,
    /// First task: `Started`, then 10 bytes of a 100-byte frame, then
    /// shuts its sending side (a clean EOF mid-frame); hang.
    TruncatedEof,
    /// First task: `Started`, then a length prefix of 0xFFFF_FFFF; hang.
    Huge,
    /// First task: replies with an old generation, an unknown task id and
    /// a duplicate around the right answer; then behave.
    Stale,
    /// After the handshake start a grandchild (`sleep 1000`, immune to
    /// SIGTERM, holding the socket) in the same process group and write
    /// its pid to `BAD_PIDFILE`; first task: `Started`, then hang.
    HangGrandchild,
    /// First task: `Started` through the reply ring, then a ring record
    /// whose length claims more bytes than were published, and a `Wake` on
    /// the socket; hang.
    RingGarbage,
    /// First task: `Started` and a result through the reply ring (no
    /// `Wake`): the square plus `RING_MARK`, so the test can tell it from a
    /// second run; then garbage on the socket; hang.
    RingThenGarbage,
    /// First task: `Started`, then its right result with a descriptor
    /// attached that the result does not declare; then behave.
    SharedExtraFd,
    /// First task: `Started`, then a result whose bytes are a shared
    /// payload reference to a descriptor the frame does not carry.
    SharedBogusRef,
    /// First task: `Started`, then a result declaring a bulk byte string
    /// of nearly 4 GiB after its frame (sends none); hang.
    BulkOverCap,
    /// First task: `Started`, then its right result (a `u64`) declaring a
    /// bulk byte string of 100 KiB where the value has none, and those
    /// bytes after the frame; then behave.
    BulkMisplaced,
    /// First task: `Started`, a result stamped with another generation
    /// declaring a bulk byte string of 100 KiB (its bytes after the
    /// frame), then the right result; then behave.
    BulkStale,
    /// First task: `Started`, then a result referencing the one descriptor
    /// it carries, which is `/dev/null` (not a memory file).
    SharedNotMemfd,
    /// First task: `Started`, then a result referencing the one descriptor
    /// it carries: a tmpfs file of the right size but without seals (its
    /// path in `BAD_PIDFILE`, so the test can look for its mapping).
    SharedUnsealed,
    /// After the handshake never read the socket again (the pool's writes
    /// to it fill the socket buffer and then block); hang.
    StopReading,
    /// By slot (`PROCPOOL_WORKER_ID`): slot 0 holds its tasks unstarted,
    /// answers a `Cancel` with "not withdrawn" after 300 ms and then runs
    /// them; every other slot claims, every 2 ms, to have withdrawn tasks
    /// 0..=64 (tasks it never had).
    ForgeWithdrawn,
    /// After the handshake try to shrink and to grow its reply ring
    /// (`ftruncate`), write what happened to `BAD_OUT`, then use the ring
    /// for its first task's notes.
    TruncateRing,
    /// Takes tasks and never starts or answers them (answers an
    /// initializer, so the pool accepts it).
    Silent,
    /// A compromised worker: dials the pool again over TCP with its own
    /// `PROCPOOL_TOKEN`, once with no ticket and once with its own, and
    /// writes to `BAD_OUT` whether the pool proved knowing that key and how
    /// the handshake ended; then behaves.
    Redial,
    /// Before the handshake: write `TICKET ADDRESS` (from
    /// `PROCPOOL_TICKET`, `PROCPOOL_CONNECT`) to `BAD_PIDFILE`, wait
    /// `BAD_DELAY_MS`, then behave (exec the real worker).
    SlowHello,
    /// First task: `Started`, then a `Finished` whose 64 MiB + 1 output
    /// payload opens with a byte-string length claiming 3.5 GiB; hang.
    HugeClaim,
    /// First task, through the reply ring as item records (the compact
    /// form of a packed chunk's input results), then a `Wake`; hang. A
    /// packed chunk of n inputs: `Started`, input 0's square plus
    /// `RING_MARK`, then a record for input n (there is none). A single
    /// task: `Started`, then an item record for it (it is no chunk).
    RingBadItems,
    /// Before its hello, says it reads its work ring (the pool's `Run`
    /// frames in shared memory) and claims to have read a terabyte of it;
    /// then reads only its socket.
    WorkRingLies,
}

impl Mode {
    fn parse(s: &str) -> Mode {
        match s {
            "" | "good" => Mode::Good,
            "bad_version" => Mode::BadVersion,
            "exit_after_handshake" => Mode::ExitAfterHandshake,
            "init_fail" => Mode::InitFail,
            "exit_while_reading" => Mode::ExitWhileReading,
            "garbage" => Mode::Garbage,
            "truncated" => Mode::Truncated,
            "truncated_eof" => Mode::TruncatedEof,
            "huge" => Mode::Huge,
            "stale" => Mode::Stale,
            "hang_grandchild" => Mode::HangGrandchild,
            "ring_garbage" => Mode::RingGarbage,
            "ring_then_garbage" => Mode::RingThenGarbage,
            "shared_extra_fd" => Mode::SharedExtraFd,
            "shared_bogus_ref" => Mode::SharedBogusRef,
            "bulk_over_cap" => Mode::BulkOverCap,
            "bulk_misplaced" => Mode::BulkMisplaced,
            "bulk_stale" => Mode::BulkStale,
            "shared_not_memfd" => Mode::SharedNotMemfd,
            "shared_unsealed" => Mode::SharedUnsealed,
            "stop_reading" => Mode::StopReading,
            "forge_withdrawn" => Mode::ForgeWithdrawn,
            "truncate_ring" => Mode::TruncateRing,
            "silent" => Mode::Silent,
            "redial" => Mode::Redial,
            "slow_hello" => Mode::SlowHello,
            "huge_claim" => Mode::HugeClaim,
            "ring_bad_items" => Mode::RingBadItems,
            "work_ring_lies" => Mode::WorkRingLies,
            other => die(&format!("unknown BAD_MODE `{other}`")),
        }
    }
}

fn die(msg: &str) -> ! {
    eprintln!("procpool-bad-worker: {msg}");
    std::process::exit(2)
}

fn var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn num(key: &str) -> Option<u64> {
    var(key).map(|v| {
        v.parse()
            .unwrap_or_else(|_| die(&format!("{key} is not a number")))
    })
}

/// Claims the lowest free ordinal in `dir`; the file holds our pid.
fn claim_ordinal(dir: &Path) -> u64 {
    for k in 0.. {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(k.to_string()))
        {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
                return k;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => die(&format!(
                "cannot claim a spawn ordinal in {}: {e}",
                dir.display()
            )),
        }
    }
    unreachable!()
}

fn misbehaves(mode: Mode, ordinal: u64) -> bool {
    if mode == Mode::Good {
        return false;
    }
    if num("BAD_FIRST_BAD").is_some_and(|n| ordinal >= n) {
        return false;
    }
    if num("BAD_FIRST_GOOD").is_some_and(|n| ordinal < n) {
        return false;
    }
    if let Some(slot) = num("BAD_SLOT")
        && num("PROCPOOL_WORKER_ID") != Some(slot)
    {
        return false;
    }
    true
}

/// Becomes the real worker: same pid, descriptor 3 and environment.
fn become_good() -> ! {
    let Some(good) = var("BAD_GOOD_WORKER") else {
        die("BAD_GOOD_WORKER is not set")
    };
    let err = Command::new(&good).exec();
    die(&format!("cannot exec {good}: {err}"))
}

/// The connection to the pool: inherited, or dialed over TCP.
enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Sock {
    fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
        })
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Sock::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Sock::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }
}

impl Read for &Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            Sock::Unix(s) => (&*s).read(buf),
            Sock::Tcp(s) => (&*s).read(buf),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for &Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match *self {
            Sock::Unix(s) => (&*s).write(buf),
            Sock::Tcp(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The secret from `PROCPOOL_TOKEN` (hex).
fn secret() -> Vec<u8> {
    let hex = var("PROCPOOL_TOKEN").unwrap_or_else(|| die("PROCPOOL_TOKEN is not set"));
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_else(|_| die("bad PROCPOOL_TOKEN"))
        })
        .collect()
}

fn connect() -> Sock {
    match var("PROCPOOL_CONNECT") {
        Some(address) => {
            let hostport = address
                .strip_prefix("tcp://")
                .unwrap_or_else(|| die("PROCPOOL_CONNECT is not tcp://"));
            let s = TcpStream::connect(hostport).unwrap_or_else(|e| die(&e.to_string()));
            let _ = s.set_nodelay(true);
            Sock::Tcp(s)
        }
        None => Sock::Unix(adopt_socket()),
    }
}

fn adopt_socket() -> UnixStream {
    let fd: i32 = var("PROCPOOL_WORKER_FD")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| die("PROCPOOL_WORKER_FD is not set"));
    #[allow(unsafe_code)]
    // SAFETY: the pool passed its socket as exactly this descriptor
    // (PROCPOOL_WORKER_FD) and nothing else in this process refers to it, so
    // the `OwnedFd` is its only owner and closes it at most once. A wrong
    // descriptor would only make the socket calls below fail.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    UnixStream::from(owned)
}

fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

struct Worker {
    stream: Sock,
    generation: Generation,
    /// Over TCP: seals every frame sent.
    sealer: std::cell::RefCell<Option<Sealer>>,
}

impl Worker {
    fn send(&self, msg: &ToParent, payloads: Vec<Vec<u8>>) {
        let frame = encode_message(msg, payloads).unwrap_or_else(|e| die(&e.to_string()));
        let sent = match self.sealer.borrow_mut().as_mut() {
            Some(s) => write_sealed_frames(&mut &self.stream, &[frame], s),
            None => write_all_frames(&mut &self.stream, &[frame]),
        };
        if sent.is_err() {
            std::process::exit(0); // the pool is gone
        }
    }

    /// Sends `msg` and its payloads with `fds` attached (`SCM_RIGHTS`),
    /// whatever the message declares.
    fn send_with_fds(&self, msg: &ToParent, payloads: Vec<Vec<u8>>, fds: &[OwnedFd]) {
        use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
        use std::os::fd::AsRawFd;
        let Sock::Unix(sock) = &self.stream else {
            die("descriptors need a Unix socket")
        };
        let frame = encode_message(msg, payloads).unwrap_or_else(|e| die(&e.to_string()));
        let bytes: Vec<u8> = frame.parts().flatten().copied().collect();
        let raws: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let sent = sendmsg::<UnixAddr>(
            sock.as_raw_fd(),
            &[io::IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&raws)],
            MsgFlags::empty(),
            None,
        )
        .unwrap_or_else(|e| die(&format!("sendmsg: {e}")));
        self.raw(&bytes[sent..]);
    }

    /// A result whose bytes are a reference to shared payload descriptor
    /// `index` of `len` bytes (the encoding `procpool::shared` writes to a
    /// local worker), declaring `fds` descriptors, sent with `attached`.
    fn shared_reference(&self, id: u64, index: u32, len: u64, fds: u32, attached: &[OwnedFd]) {
        #[derive(serde::Serialize)]
        enum Ref {
            File { index: u32, len: u64 },
        }
        let bytes =
            codec::encode(&Ref::File { index, len }).unwrap_or_else(|e| die(&e.to_string()));
        let msg = ok_result(self.generation, id, bytes.len(), fds, Vec::new());
        self.send_with_fds(&msg, vec![bytes], attached);
    }

    /// Writes `bytes` as they are; over TCP a whole frame among them
    /// (prefix and all its body) is sealed first.
    fn raw(&self, bytes: &[u8]) {
        let mut out = bytes.to_vec();
        if let Some(s) = self.sealer.borrow_mut().as_mut()
            && bytes.len() >= 4
            && u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize
                == bytes.len() - 4
        {
            let body = &bytes[4..];
            let tag = s.seal(body.len(), [body]);
            out = ((body.len() + TAG_LEN) as u32).to_le_bytes().to_vec();
            out.extend_from_slice(body);
            out.extend_from_slice(&tag);
        }
        if (&self.stream).write_all(&out).is_err() {
            std::process::exit(0);
        }
    }

    fn started(&self, generation: Generation, id: u64) {
        self.send(&ToParent::Started { generation, id }, Vec::new());
    }

    fn finished(&self, generation: Generation, id: u64, value: u64) {
        let bytes = codec::encode(&value).unwrap_or_else(|e| die(&e.to_string()));
        let msg = ok_result(generation, id, bytes.len(), 0, Vec::new());
        self.send(&msg, vec![bytes]);
    }

    /// Runs a task correctly (only `square` is known here).
    fn answer(&self, header: &TaskHeader, input: &[u8]) {
        let g = self.generation;
        self.started(g, header.id);
        match codec::decode::<Square>(input) {
            Ok(Square(x)) if header.name == "square" => {
                self.finished(g, header.id, x.wrapping_mul(x));
            }
            _ => {
                let msg = ToParent::Finished {
                    generation: g,
                    id: header.id,
                    outcome: Outcome::UnknownTask {
                        name: header.name.to_string(),
                    },
                    timing: WorkerTiming::default(),
                };
                self.send(&msg, Vec::new());
            }
        }
    }

    /// The first task of a misbehaving spawn.
    fn first_task(&self, mode: Mode, header: &TaskHeader, input: &[u8]) {
        let g = self.generation;
        match mode {
            Mode::Garbage => {
                self.started(g, header.id);
                // A well-formed length prefix and a body that is no message.
                let mut bytes = 16u32.to_le_bytes().to_vec();
                bytes.extend_from_slice(&[0xff; 16]);
                self.raw(&bytes);
                hang()
            }
            Mode::Truncated => {
                self.started(g, header.id);
                let mut bytes = 100u32.to_le_bytes().to_vec();
                bytes.extend_from_slice(&[0u8; 10]);
                self.raw(&bytes);
                std::process::exit(0)
            }
            Mode::TruncatedEof => {
                self.started(g, header.id);
                let mut bytes = 100u32.to_le_bytes().to_vec();
                bytes.extend_from_slice(&[0u8; 10]);
                self.raw(&bytes);
                self.stream.shutdown_write();
                hang()
            }
            Mode::Huge => {
                self.started(g, header.id);
                let mut bytes = u32::MAX.to_le_bytes().to_vec();
                bytes.extend_from_slice(&[0u8; 64]);
                self.raw(&bytes);
                hang()
            }
            Mode::HangGrandchild => {
                self.started(g, header.id);
                hang()
            }
            Mode::HugeClaim => {
                self.started(g, header.id);
                // bincode's wide-varint marker and a u64 length, then
                // zeros: no valid value of this size claims that much.
                let mut payload = vec![0xfd];
                payload.extend_from_slice(&(7u64 << 29).to_le_bytes());
                payload.resize((64 << 20) + 1, 0);
                let msg = ok_result(g, header.id, payload.len(), 0, Vec::new());
                self.send(&msg, vec![payload]);
                hang()
            }
            Mode::RingGarbage => {
                let mut records = started_record(g, header.id);
                // A record announcing 1000 bytes of which 6 are published.
                records.extend_from_slice(&1000u32.to_le_bytes());
                records.extend_from_slice(&[0xAB; 6]);
                write_ring(&records);
                self.send(&ToParent::Wake { generation: g }, Vec::new());
                hang()
            }
            Mode::RingBadItems => {
                let mut records = started_record(g, header.id);
                if header.items >= 2 {
                    let ranges = procpool_wire::message::unpack_inputs(input, header.items)
                        .unwrap_or_else(|e| die(&e));
                    let x = codec::decode::<Square>(&input[ranges[0].clone()]).map_or(0, |s| s.0);
                    let value = x.wrapping_mul(x).wrapping_add(RING_MARK);
                    item_record(&mut records, header.id, 0, value);
                    item_record(&mut records, header.id, header.items, 1);
                } else {
                    item_record(&mut records, header.id, 0, 1);
                }
                write_ring(&records);
                self.send(&ToParent::Wake { generation: g }, Vec::new());
                hang()
            }
            Mode::RingThenGarbage => {
                let x = codec::decode::<Square>(input).map_or(0, |s| s.0);
                let value = codec::encode(&x.wrapping_mul(x).wrapping_add(RING_MARK))
                    .unwrap_or_else(|e| die(&e.to_string()));
                let started = encode_message(
                    &ToParent::Started {
                        generation: g,
                        id: header.id,
                    },
                    Vec::<Payload>::new(),
                );
                let finished = encode_message(
                    &ok_result(g, header.id, value.len(), 0, Vec::new()),
                    vec![value],
                );
                let records: Vec<u8> = [started, finished]
                    .into_iter()
                    .map(|f| f.unwrap_or_else(|e| die(&e.to_string())))
                    .flat_map(|f| f.parts().flatten().copied().collect::<Vec<u8>>())
                    .collect();
                write_ring(&records);
                let mut bytes = 16u32.to_le_bytes().to_vec();
                bytes.extend_from_slice(&[0xff; 16]);
                self.raw(&bytes);
                hang()
            }
            Mode::Stale => {
                let x = codec::decode::<Square>(input).map_or(0, |s| s.0);
                self.started(g, header.id);
                // A late reply from this slot's previous process.
                self.finished(g.wrapping_sub(1), header.id, WRONG);
                // A reply for a task this worker never had.
                self.finished(g, 1_000_000_007, WRONG);
                // A start stamped with a generation that does not exist yet.
                self.started(g.wrapping_add(1), header.id);
                // The right answer.
                self.finished(g, header.id, x.wrapping_mul(x));
                // A duplicate of it, with a wrong value.
                self.finished(g, header.id, WRONG);
                self.started(g, header.id);
            }
            Mode::SharedExtraFd => {
                let x = codec::decode::<Square>(input).map_or(0, |s| s.0);
                self.started(g, header.id);
                let value =
                    codec::encode(&x.wrapping_mul(x)).unwrap_or_else(|e| die(&e.to_string()));
                let msg = ok_result(g, header.id, value.len(), 0, Vec::new());
                let null = OwnedFd::from(
                    fs::File::open("/dev/null").unwrap_or_else(|e| die(&e.to_string())),
                );
                self.send_with_fds(&msg, vec![value], &[null]);
            }
            Mode::SharedBogusRef => {
                self.started(g, header.id);
                self.shared_reference(header.id, 0, 1 << 20, 0, &[]);
            }
            Mode::BulkOverCap | Mode::BulkMisplaced => {
                self.started(g, header.id);
                let x = codec::decode::<Square>(input).map_or(0, |Square(x)| x);
                let value =
                    codec::encode(&x.wrapping_mul(x)).unwrap_or_else(|e| die(&e.to_string()));
                let len = if mode == Mode::BulkOverCap {
                    u32::MAX - 16
                } else {
                    100 << 10
                };
                let msg = ok_result(
                    g,
                    header.id,
                    value.len(),
                    0,
                    vec![Bulk {
                        at: value.len() as u32,
                        len,
                    }],
                );
                self.send(&msg, vec![value]);
                if mode == Mode::BulkOverCap {
                    hang()
                }
                self.raw(&vec![7u8; len as usize]);
            }
            Mode::BulkStale => {
                self.started(g, header.id);
                let stale = ok_result(
                    g.wrapping_add(1),
                    header.id,
                    1,
                    0,
                    vec![Bulk {
                        at: 1,
                        len: 100 << 10,
                    }],
                );
                self.send(&stale, vec![vec![0]]);
                self.raw(&vec![7u8; 100 << 10]);
                let x = codec::decode::<Square>(input).map_or(0, |Square(x)| x);
                self.finished(g, header.id, x.wrapping_mul(x));
            }
            Mode::SharedNotMemfd => {
                self.started(g, header.id);
                let null = OwnedFd::from(
                    fs::File::open("/dev/null").unwrap_or_else(|e| die(&e.to_string())),
                );
                self.shared_reference(header.id, 0, 1 << 20, 1, &[null]);
            }
            Mode::SharedUnsealed => {
                self.started(g, header.id);
                let path = var("BAD_PIDFILE").unwrap_or_else(|| die("BAD_PIDFILE is not set"));
                let file = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .unwrap_or_else(|e| die(&e.to_string()));
                file.set_len(1 << 20)
                    .unwrap_or_else(|e| die(&e.to_string()));
                self.shared_reference(header.id, 0, 1 << 20, 1, &[OwnedFd::from(file)]);
            }
            _ => self.answer(header, input),
        }
    }
}

/// A `Finished` result with an `Ok` outcome: `len` payload bytes, `fds`
/// descriptors and `bulk` byte strings declared (whatever is sent).
fn ok_result(generation: Generation, id: u64, len: usize, fds: u32, bulk: Vec<Bulk>) -> ToParent {
    ToParent::Finished {
        generation,
        id,
        outcome: Outcome::Ok {
            len: len as u32,
            fds,
            bulk,
        },
        timing: WorkerTiming::default(),
    }
}

fn main() {
    let mode = Mode::parse(&var("BAD_MODE").unwrap_or_default());
    let ordinal = var("BAD_DIR").map_or(0, |d| claim_ordinal(Path::new(&d)));
    if !misbehaves(mode, ordinal) {
        become_good();
    }
    if mode == Mode::SlowHello {
        let Some(pidfile) = var("BAD_PIDFILE") else {
            die("BAD_PIDFILE is not set")
        };
        let line = format!(
            "{} {}",
            var("PROCPOOL_TICKET").unwrap_or_default(),
            var("PROCPOOL_CONNECT").unwrap_or_default()
        );
        let tmp = format!("{pidfile}.tmp");
        fs::write(&tmp, line).unwrap_or_else(|e| die(&e.to_string()));
        fs::rename(&tmp, &pidfile).unwrap_or_else(|e| die(&e.to_string()));
        std::thread::sleep(Duration::from_millis(num("BAD_DELAY_MS").unwrap_or(1000)));
        become_good();
    }
    if mode == Mode::WorkRingLies {
        lie_about_the_work_ring();
    }
    let stream = connect();
    let dialed = matches!(stream, Sock::Tcp(_));

    // Handshake.
    let read_half = stream.try_clone().unwrap_or_else(|e| die(&e.to_string()));
    let mut reader = FrameReader::new(read_half, HANDSHAKE_MAX_FRAME);
    let ticket = var("PROCPOOL_TICKET")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let nonce: Vec<u8> = if dialed {
        std::process::id().to_le_bytes().repeat(8)
    } else {
        Vec::new()
    };
    let mut hello = Hello::ours(std::process::id(), String::new(), ticket, nonce.clone());
    if mode == Mode::BadVersion {
        hello.protocol += 1;
    }
    let body = codec::encode(&hello).unwrap_or_else(|e| die(&e.to_string()));
    let frame = Outgoing::new(body, Vec::<Payload>::new()).unwrap_or_else(|e| die(&e.to_string()));
    write_all_frames(&mut &stream, &[frame]).unwrap_or_else(|e| die(&e.to_string()));
    let mut welcome = next_welcome(&mut reader);
    let mut pool_nonce = None;
    if let Welcome::Challenge { nonce: theirs } = &welcome {
        // A test double: it trusts the pool and only proves itself.
        pool_nonce = Some(theirs.clone());
        let mac = worker_proof(&secret(), theirs, &nonce);
        let body = codec::encode(&Proof { mac }).unwrap_or_else(|e| die(&e.to_string()));
        let frame =
            Outgoing::new(body, Vec::<Payload>::new()).unwrap_or_else(|e| die(&e.to_string()));
        write_all_frames(&mut &stream, &[frame]).unwrap_or_else(|e| die(&e.to_string()));
        welcome = next_welcome(&mut reader);
    }
    let (generation, max_frame) = match welcome {
        Welcome::Accept {
            generation,
            max_frame,
            ..
        } => (generation, max_frame),
        Welcome::Reject { reason } => die(&format!("rejected: {reason}")),
        other => die(&format!("unexpected {other:?}")),
    };
    reader.set_max(max_frame);
    let mut sealer = None;
    if dialed {
        let Some(theirs) = pool_nonce else {
            die("a pool over TCP did not challenge this worker")
        };
        let (s, opener) = LinkKeys::derive(&secret(), &nonce, &theirs).worker_side();
        reader.set_opener(opener);
        sealer = Some(s);
    }

    match mode {
        Mode::ExitAfterHandshake => std::process::exit(7),
        Mode::StopReading => hang(),
        Mode::TruncateRing => out(&truncate_ring()),
        Mode::Redial => {
            let report = [0, ticket]
                .iter()
                .map(|&t| format!("ticket {t}: {}\n", redial(t, &nonce)))
                .collect::<String>();
            out(&report);
        }
        Mode::ExitWhileReading => {
            let mut s = &stream;
            let mut prefix = [0u8; 4];
            if s.read_exact(&mut prefix).is_err() {
                std::process::exit(0);
            }
            let mut left = (1usize << 20).min(u32::from_le_bytes(prefix) as usize);
            let mut buf = vec![0u8; 64 * 1024];
            while left > 0 {
                match s.read(&mut buf[..left.min(64 * 1024)]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left -= n,
                }
            }
            std::process::exit(5)
        }
        _ => {}
    }

    // Kept alive (never waited for): it must die with the process group.
    let _grandchild = if mode == Mode::HangGrandchild {
        let child = Command::new("sh")
            .args(["-c", "trap '' TERM; exec sleep 1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| die(&format!("cannot start the grandchild: {e}")));
        let Some(pidfile) = var("BAD_PIDFILE") else {
            die("BAD_PIDFILE is not set")
        };
        let tmp = format!("{pidfile}.tmp");
        fs::write(&tmp, child.id().to_string()).unwrap_or_else(|e| die(&e.to_string()));
        fs::rename(&tmp, &pidfile).unwrap_or_else(|e| die(&e.to_string()));
        Some(child)
    } else {
        None
    };

    let worker = Worker {
        stream,
        generation,
        sealer: std::cell::RefCell::new(sealer),
    };
    let forger = mode == Mode::ForgeWithdrawn && num("PROCPOOL_WORKER_ID") != Some(0);
    if forger {
        let s = worker
            .stream
            .try_clone()
            .unwrap_or_else(|e| die(&e.to_string()));
        std::thread::spawn(move || {
            // Unsealed: this mode runs on a local socket.
            forge_withdrawn(&Worker {
                stream: s,
                generation,
                sealer: std::cell::RefCell::new(None),
            })
        });
    }
    // Slot 0 of `forge_withdrawn`: tasks held unstarted.
    let mut held: Vec<(TaskHeader, Vec<u8>)> = Vec::new();
    let mut first = true;
    loop {
        let frame = match reader.next_frame_owned() {
            Ok(Some(f)) => f,
            Ok(None) => std::process::exit(0),
            Err(e) => die(&format!("bad frame from the pool: {e}")),
        };
        let (msg, payloads) = decode_message::<ToWorker>(&frame)
            .unwrap_or_else(|e| die(&format!("bad message from the pool: {e}")));
        match msg {
            ToWorker::Init { .. } if mode == Mode::InitFail => {
                let slot = var("PROCPOOL_WORKER_ID").unwrap_or_default();
                let msg = ToParent::InitDone {
                    generation,
                    error: Some(format!("the bad worker refuses to initialize slot {slot}")),
                };
                worker.send(&msg, Vec::new());
                std::process::exit(4)
            }
            ToWorker::Init { .. } => {
                let msg = ToParent::InitDone {
                    generation,
                    error: None,
                };
                worker.send(&msg, Vec::new());
            }
            ToWorker::Run { .. } if mode == Mode::Silent => {}
            ToWorker::Run { items } if mode == Mode::ForgeWithdrawn && !forger => {
                for (header, input) in items.into_iter().zip(payloads) {
                    held.push((header, input.to_vec()));
                }
            }
            ToWorker::Cancel { id } if mode == Mode::ForgeWithdrawn && !forger => {
                std::thread::sleep(Duration::from_millis(300));
                let msg = ToParent::Withdrawn {
                    generation,
                    id,
                    withdrawn: false,
                };
                worker.send(&msg, Vec::new());
                for (header, input) in held.drain(..) {
                    worker.answer(&header, &input);
                }
            }
            ToWorker::Run { items } => {
                for (header, input) in items.iter().zip(payloads) {
                    if std::mem::take(&mut first) {
                        worker.first_task(mode, header, input);
                    } else {
                        worker.answer(header, input);
                    }
                }
            }
            ToWorker::Cancel { id } => {
                let msg = ToParent::Withdrawn {
                    generation,
                    id,
                    withdrawn: false,
                };
                worker.send(&msg, Vec::new());
            }
            ToWorker::Shutdown { .. } => std::process::exit(0),
            ToWorker::Wake => {}
            other => die(&format!("unexpected message {other:?}")),
        }
    }
}

/// Writes `text` to the file `BAD_OUT` (atomically: a temporary, then a
/// rename).
fn out(text: &str) {
    let Some(path) = var("BAD_OUT") else {
        die("BAD_OUT is not set")
    };
    let tmp = format!("{path}.tmp");
    fs::write(&tmp, text).unwrap_or_else(|e| die(&e.to_string()));
    fs::rename(&tmp, &path).unwrap_or_else(|e| die(&e.to_string()));
}

/// Tries to shrink and to grow the reply ring; says what happened.
fn truncate_ring() -> String {
    let ring = open_ring();
    let len = ring.metadata().map(|m| m.len()).unwrap_or(0);
    let shrink = ring.set_len(0);
    let grow = ring.set_len(len.max(4096) * 4);
    let _ = ring.set_len(len); // undo, if either worked
    format!("shrink: {shrink:?}\ngrow: {grow:?}\n")
}

/// `forge_withdrawn` (slots other than 0): claim, every 2 ms, to have
/// withdrawn tasks 0..=64, which this worker never had.
fn forge_withdrawn(w: &Worker) -> ! {
    loop {
        for id in 0..=64 {
            let msg = ToParent::Withdrawn {
                generation: w.generation,
                id,
                withdrawn: true,
            };
            w.send(&msg, Vec::new());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Dials the pool again with our own token and `ticket`: whether the pool
/// proved it knows that key, and how the handshake ended.
fn redial(ticket: u64, _first_nonce: &[u8]) -> String {
    let Some(address) = var("PROCPOOL_CONNECT") else {
        return "not a dial-in worker".into();
    };
    let hostport = address.strip_prefix("tcp://").unwrap_or(&address);
    let stream = match TcpStream::connect(hostport) {
        Ok(s) => s,
        Err(e) => return format!("cannot connect: {e}"),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = FrameReader::new(
        stream.try_clone().unwrap_or_else(|e| die(&e.to_string())),
        HANDSHAKE_MAX_FRAME,
    );
    let nonce: Vec<u8> = (0..32u8).map(|i| i ^ 0x5a).collect();
    let hello = Hello::ours(std::process::id(), String::new(), ticket, nonce.clone());
    let send = |body: Vec<u8>| {
        let frame =
            Outgoing::new(body, Vec::<Payload>::new()).unwrap_or_else(|e| die(&e.to_string()));
        write_all_frames(&mut &stream, &[frame])
    };
    if let Err(e) = send(codec::encode(&hello).unwrap_or_else(|e| die(&e.to_string()))) {
        return format!("cannot send hello: {e}");
    }
    let first = match reader.next_frame() {
        Ok(Some(b)) => Welcome::decode(b),
        Ok(None) => return "closed before a challenge".into(),
        Err(e) => return format!("no challenge: {e}"),
    };
    let theirs = match first {
        Ok(Welcome::Challenge { nonce }) => nonce,
        Ok(Welcome::Reject { reason }) => return format!("refused before a challenge: {reason}"),
        Ok(other) => return format!("unexpected {other:?}"),
        Err(e) => return format!("bad welcome: {e}"),
    };
    // The dialer proves first; the pool's proof comes in its `Accept`.
    let mac = worker_proof(&secret(), &theirs, &nonce);
    if let Err(e) = send(codec::encode(&Proof { mac }).unwrap_or_else(|e| die(&e.to_string()))) {
        return format!("pool proved key: false; cannot send proof: {e}");
    }
    let (pool_knows_key, end) = match reader.next_frame() {
        Ok(Some(b)) => match Welcome::decode(b) {
            Ok(Welcome::Accept {
                worker_id,
                generation,
                max_frame,
                heartbeat_ms,
                proof,
            }) => {
                let fields = procpool_wire::handshake::accept_fields(
                    worker_id,
                    generation,
                    max_frame,
                    heartbeat_ms,
                );
                let proved = procpool_wire::handshake::check_pool_proof(
                    &secret(),
                    &nonce,
                    &theirs,
                    &fields,
                    &proof,
                );
                (proved, "ACCEPTED".to_owned())
            }
            Ok(Welcome::Reject { reason }) => (false, format!("refused: {reason}")),
            Ok(other) => (false, format!("unexpected {other:?}")),
            Err(e) => (false, format!("bad welcome: {e}")),
        },
        Ok(None) => (false, "closed".into()),
        Err(e) => (false, format!("no answer: {e}")),
    };
    format!("pool proved key: {pool_knows_key}; {end}")
}

/// A `Started` note for task `id`, as a ring record (a frame's bytes).
fn started_record(generation: Generation, id: u64) -> Vec<u8> {
    let started = encode_message(&ToParent::Started { generation, id }, Vec::<Payload>::new())
        .unwrap_or_else(|e| die(&e.to_string()));
    started.parts().flatten().copied().collect()
}

/// Appends an item record, as procpool's executor writes one for an input
/// of a packed chunk that ended `Ok` (`link::ring::Record::Item`): the
/// length word with its top bit set; the task id, the input's index and
/// four timings (zero here); the output.
fn item_record(records: &mut Vec<u8>, id: u64, index: u32, value: u64) {
    let output = codec::encode(&value).unwrap_or_else(|e| die(&e.to_string()));
    let head_len = 8 + 4 + 4 * 8;
    let len = (head_len + output.len()) as u32;
    records.extend_from_slice(&(len | 1 << 31).to_le_bytes());
    records.extend_from_slice(&id.to_le_bytes());
    records.extend_from_slice(&index.to_le_bytes());
    records.extend_from_slice(&[0; 4 * 8]);
    records.extend_from_slice(&output);
}

/// The map of rings the pool passed (descriptor `PROCPOOL_WORKER_RING_FD`),
/// reopened through `/proc/self/fd`.
fn open_ring() -> fs::File {
    let fd = var("PROCPOOL_WORKER_RING_FD").unwrap_or_else(|| die("no reply ring was passed"));
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
        .unwrap_or_else(|e| die(&format!("cannot open the reply ring: {e}")))
}

/// The work ring's place in the map (after the reply ring: 4 KiB of
/// words and 256 KiB of data), its `head` and its "I read it" word.
const WORK_RING: u64 = 4096 + 256 * 1024;
const WORK_HEAD: u64 = WORK_RING + 64;
const WORK_READY: u64 = WORK_RING + 192;

/// Says this worker reads its work ring, and claims to have read a
/// terabyte of it.
fn lie_about_the_work_ring() {
    use std::os::unix::fs::FileExt;
    let ring = open_ring();
    ring.write_all_at(&(1u64 << 40).to_le_bytes(), WORK_HEAD)
        .and_then(|()| ring.write_all_at(&1u64.to_le_bytes(), WORK_READY))
        .unwrap_or_else(|e| die(&format!("cannot write the work ring: {e}")));
}

/// Writes `records` at the start of the reply ring ([`open_ring`]) and
/// publishes them. Layout (`procpool`'s `link/ring.rs`): the u64 `tail`
/// at byte 0, records (u32 length, body) from byte 4096.
fn write_ring(records: &[u8]) {
    use std::os::unix::fs::FileExt;
    let ring = open_ring();
    ring.write_all_at(records, 4096)
        .and_then(|()| ring.write_all_at(&(records.len() as u64).to_le_bytes(), 0))
        .unwrap_or_else(|e| die(&format!("cannot write the reply ring: {e}")));
}

fn next_welcome(reader: &mut FrameReader<Sock>) -> Welcome {
    match reader.next_frame() {
        Ok(Some(b)) => Welcome::decode(b).unwrap_or_else(|e| die(&e.to_string())),
        Ok(None) => die("the pool closed the socket during the handshake"),
        Err(e) => die(&e.to_string()),
    }
}
