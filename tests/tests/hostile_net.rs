//! A hostile network (issue 18 rows 2, 8, 10, 11; SEMANTICS 31): a relay
//! between a real worker and the pool that flips a bit, forges, replays,
//! drops, reorders or injects a frame; strangers on the TCP port that
//! dribble bytes, impersonate a pending spawn's ticket, or send a 60 KiB
//! host name full of control characters.
//!
//! What must hold: a frame touched on the network ends that connection
//! (the running task fails as a lost worker, or runs again elsewhere if it
//! had not started); a forged value never becomes a result; strangers hold
//! no handshake slot past one deadline and learn nothing; what they send
//! reaches the logs escaped and cut.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use procpool::{
    AttachInfo, Exit, Launcher, ProcessPool, ProcessPoolBuilder, TaskError, Transport,
    WorkerCommand,
};
use procpool_e2e::{still_works, watchdog};
use procpool_tasks::{Square, WhoAmI};
use procpool_wire::codec;
use procpool_wire::handshake::{self, Hello, Proof, Welcome};
use procpool_wire::message::{
    Outcome, ToParent, ToWorker, WorkerTiming, decode_message, encode_message,
};
use procpool_wire::seal::TAG_LEN;

const LIMIT: Duration = Duration::from_secs(60);
const WORKER: &str = env!("CARGO_BIN_EXE_procpool-test-worker");
const BAD_WORKER: &str = env!("CARGO_BIN_EXE_procpool-bad-worker");
/// A value no honest answer in these tests has.
const WRONG: u64 = 999_999_999;

fn tcp(launcher: Launcher, n: usize) -> ProcessPoolBuilder {
    ProcessPool::builder()
        .launcher(launcher)
        .transport(Transport::Tcp)
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .workers(n)
}

fn hostport(info: &AttachInfo) -> String {
    info.address().trim_start_matches("tcp://").to_owned()
}

// ------------------------------------------------------------ the relay

/// What the relay does, once, to the traffic of the worker behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// Worker → pool: flip the lowest bit of the result (49 → 48).
    FlipResultBit,
    /// Worker → pool: the `Finished` re-encoded with `WRONG` (tag kept).
    ForgeResult,
    /// Worker → pool: after `Started`, a made-up `Finished` with `WRONG`.
    InjectResult,
    /// Worker → pool: `Started` sent twice.
    ReplayStarted,
    /// Worker → pool: the `Finished` never arrives.
    DropFinished,
    /// Worker → pool: the `Finished` before the `Started`.
    ReorderNotes,
    /// Pool → worker: flip the lowest bit of the task's input (7 → 6).
    FlipInputBit,
    /// Pool → worker: after the `Run`, a made-up `Run` of the same tasks
    /// under other ids.
    InjectRun,
}

impl Attack {
    fn to_pool(self) -> bool {
        !matches!(self, Attack::FlipInputBit | Attack::InjectRun)
    }
}

/// Frames each way that belong to the handshake (hello and proof; challenge
/// and welcome).
const HANDSHAKE_FRAMES: usize = 2;

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn write_frame(s: &mut TcpStream, body: &[u8]) -> bool {
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    s.write_all(&out).is_ok()
}

/// The message part of a frame body, and whether a tag follows it (the
/// relay cannot check tags, but knows where they are).
fn message_part<H: procpool_wire::message::Header>(body: &[u8]) -> Option<(H, usize, bool)> {
    if let Ok((h, _)) = decode_message::<H>(body) {
        return Some((h, body.len(), false));
    }
    let short = body.len().checked_sub(TAG_LEN)?;
    let (h, _) = decode_message::<H>(&body[..short]).ok()?;
    Some((h, short, true))
}

fn frame_body(msg: &impl procpool_wire::message::Header, payloads: Vec<Vec<u8>>) -> Vec<u8> {
    let f = encode_message(msg, payloads).unwrap();
    f.parts().flatten().copied().skip(4).collect()
}

/// The notes in a `ToParent::Records` payload (a worker's keeper forwards
/// its ring this way, many notes to a frame): where each record's body
/// starts in `payload`, its length, and the note (`None` for a packed
/// chunk's compact input result, whose length word has its top bit set).
fn records_in(payload: &[u8]) -> Vec<(usize, usize, Option<ToParent>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(word) = payload.get(at..at + 4) {
        let word = u32::from_le_bytes(word.try_into().unwrap());
        let len = (word & !(1 << 31)) as usize;
        let body = &payload[at + 4..at + 4 + len];
        let note = (word >> 31 == 0)
            .then(|| decode_message::<ToParent>(body).ok().map(|(m, _)| m))
            .flatten();
        out.push((at + 4, len, note));
        at += 4 + len;
    }
    out
}

/// A `Records` frame body holding `notes` (frame bodies), tagged with `tag`.
fn records_frame(generation: u32, notes: &[Vec<u8>], tag: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    for n in notes {
        payload.extend_from_slice(&(n.len() as u32).to_le_bytes());
        payload.extend_from_slice(n);
    }
    let msg = ToParent::Records {
        generation,
        len: payload.len() as u32,
    };
    let mut f = frame_body(&msg, vec![payload]);
    f.extend_from_slice(tag);
    f
}

/// A `Finished` for task `id` with `WRONG` as its output, as a frame body.
fn forged_finished(generation: u32, id: u64) -> Vec<u8> {
    let value = codec::encode(&WRONG).unwrap();
    let forged = ToParent::Finished {
        generation,
        id,
        outcome: Outcome::Ok {
            len: value.len() as u32,
            fds: 0,
            bulk: Vec::new(),
        },
        timing: WorkerTiming::default(),
    };
    frame_body(&forged, vec![value])
}

/// The attack on a `Records` frame (`payload_at..end` is its payload):
/// the same attacks as on single notes, aimed at the frame that holds the
/// `Started` or the `Finished`. `None`: not this frame.
fn attack_records(
    attack: Attack,
    body: &mut Vec<u8>,
    payload_at: usize,
    end: usize,
    generation: u32,
    held: &mut Option<Vec<u8>>,
) -> Option<Vec<Vec<u8>>> {
    let notes = records_in(&body[payload_at..end]);
    let started = notes.iter().find_map(|(_, _, n)| match n {
        Some(ToParent::Started { id, .. }) => Some(*id),
        _ => None,
    });
    let finished = notes.iter().find(|(_, _, n)| {
        matches!(
            n,
            Some(ToParent::Finished {
                outcome: Outcome::Ok { .. },
                ..
            })
        )
    });
    let tag = body[end..].to_vec();
    match (attack, started, finished) {
        (Attack::ReorderNotes, Some(_), _) => {
            *held = Some(std::mem::take(body));
            Some(Vec::new())
        }
        (Attack::ReplayStarted, Some(_), _) => Some(vec![body.clone(), std::mem::take(body)]),
        (Attack::InjectResult, Some(id), _) => {
            let forged = records_frame(
                generation,
                &[forged_finished(generation, id)],
                &[0x5a; TAG_LEN],
            );
            Some(vec![std::mem::take(body), forged])
        }
        (Attack::FlipResultBit, _, Some(&(at, len, _))) => {
            // The output (one varint byte, 49) ends the `Finished` record.
            body[payload_at + at + len - 1] ^= 1;
            Some(vec![std::mem::take(body)])
        }
        (Attack::ForgeResult, _, Some((_, _, Some(ToParent::Finished { id, .. })))) => {
            let rebuilt: Vec<Vec<u8>> = notes
                .iter()
                .map(|(at, len, n)| match n {
                    Some(ToParent::Finished { .. }) => forged_finished(generation, *id),
                    _ => body[payload_at + at..payload_at + at + len].to_vec(),
                })
                .collect();
            Some(vec![records_frame(generation, &rebuilt, &tag)])
        }
        (Attack::DropFinished, _, Some(_)) => Some(Vec::new()),
        _ => None,
    }
}

/// One connection through the relay: forwards frames both ways and
/// carries out `attack` once.
fn relay_one(worker: TcpStream, pool: TcpStream, attack: Attack) {
    let generation = Arc::new(Mutex::new(None::<u32>));
    let pipe = |mut from: TcpStream, mut to: TcpStream, to_pool: bool| {
        let generation = generation.clone();
        move || {
            let mut n = 0usize;
            let mut done = false;
            let mut held: Option<Vec<u8>> = None;
            while let Some(mut body) = read_frame(&mut from) {
                n += 1;
                if !to_pool
                    && n == HANDSHAKE_FRAMES
                    && let Ok(Welcome::Accept { generation: g, .. }) = Welcome::decode(&body)
                {
                    *generation.lock().unwrap() = Some(g);
                }
                if n <= HANDSHAKE_FRAMES || done || attack.to_pool() != to_pool {
                    if !write_frame(&mut to, &body) {
                        break;
                    }
                    continue;
                }
                let mut out: Vec<Vec<u8>> = Vec::new();
                if to_pool {
                    let Some((msg, end, sealed)) = message_part::<ToParent>(&body) else {
                        write_frame(&mut to, &body);
                        continue;
                    };
                    let tag = body[end..].to_vec();
                    if let ToParent::Records { generation: g, len } = &msg
                        && !(attack == Attack::ReorderNotes && held.is_some())
                    {
                        let payload_at = end - *len as usize;
                        match attack_records(attack, &mut body, payload_at, end, *g, &mut held) {
                            Some(frames) => {
                                out = frames;
                                done = attack != Attack::ReorderNotes;
                            }
                            None => out.push(body),
                        }
                        if !out.iter().all(|b| write_frame(&mut to, b)) {
                            break;
                        }
                        continue;
                    }
                    match (attack, &msg) {
                        (Attack::ReorderNotes, _) if held.is_some() => {
                            out.push(body);
                            out.extend(held.take());
                            done = true;
                        }
                        (Attack::ReorderNotes, ToParent::Started { .. }) => held = Some(body),
                        (Attack::ReplayStarted, ToParent::Started { .. }) => {
                            out.push(body.clone());
                            out.push(body);
                            done = true;
                        }
                        (Attack::InjectResult, ToParent::Started { generation: g, id }) => {
                            out.push(body);
                            let mut f = forged_finished(*g, *id);
                            if sealed {
                                f.extend_from_slice(&[0x5a; TAG_LEN]);
                            }
                            out.push(f);
                            done = true;
                        }
                        (
                            Attack::FlipResultBit,
                            ToParent::Finished {
                                outcome: Outcome::Ok { len, .. },
                                ..
                            },
                        ) => {
                            body[end - *len as usize] ^= 1;
                            out.push(body);
                            done = true;
                        }
                        (
                            Attack::ForgeResult,
                            ToParent::Finished {
                                generation: g,
                                id,
                                outcome: Outcome::Ok { .. },
                                ..
                            },
                        ) => {
                            let mut f = forged_finished(*g, *id);
                            f.extend_from_slice(&tag);
                            out.push(f);
                            done = true;
                        }
                        (Attack::DropFinished, ToParent::Finished { .. }) => done = true,
                        _ => out.push(body),
                    }
                } else {
                    let Some((msg, end, sealed)) = message_part::<ToWorker>(&body) else {
                        write_frame(&mut to, &body);
                        continue;
                    };
                    match (attack, msg) {
                        (Attack::FlipInputBit, ToWorker::Run { .. }) => {
                            body[end - 1] ^= 1;
                            out.push(body);
                            done = true;
                        }
                        (Attack::InjectRun, ToWorker::Run { items }) => {
                            let payloads: Vec<Vec<u8>> = {
                                let (_, p) = decode_message::<ToWorker>(&body[..end]).unwrap();
                                p.into_iter().map(<[u8]>::to_vec).collect()
                            };
                            let items = items
                                .into_iter()
                                .map(|mut h| {
                                    h.id += 1_000_000;
                                    h
                                })
                                .collect();
                            let mut f = frame_body(&ToWorker::Run { items }, payloads);
                            if sealed {
                                f.extend_from_slice(&[0x5a; TAG_LEN]);
                            }
                            out.push(body);
                            out.push(f);
                            done = true;
                        }
                        _ => out.push(body),
                    }
                }
                if !out.iter().all(|b| write_frame(&mut to, b)) {
                    break;
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        }
    };
    let up = std::thread::spawn(pipe(
        worker.try_clone().unwrap(),
        pool.try_clone().unwrap(),
        true,
    ));
    let down = std::thread::spawn(pipe(pool, worker, false));
    let _ = up.join();
    let _ = down.join();
}

/// A relay on a fresh loopback port in front of the pool at `pool`; every
/// connection it takes is attacked.
fn relay(pool: String, attack: Attack) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("tcp://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(worker) = conn else { return };
            let pool = TcpStream::connect(&pool).unwrap();
            std::thread::spawn(move || relay_one(worker, pool, attack));
        }
    });
    address
}

fn dial_in(info: &AttachInfo, address: &str) -> Child {
    Command::new(WORKER)
        .args(["--connect", address])
        .env("PROCPOOL_TOKEN", info.secret_hex())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_exit(kid: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        if let Some(st) = kid.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Outcome2 {
    result: Result<u64, TaskError>,
    relayed_exit: ExitStatus,
    relayed_stderr: String,
}

/// A worker behind an attacking relay takes `Square(7)`; once the relayed
/// worker is gone, an honest one joins directly (to run the task again if
/// it had not started, and to show the pool goes on).
fn under_attack(attack: Attack) -> Outcome2 {
    watchdog(LIMIT, move || {
        let pool = tcp(Launcher::Attach, 2)
            .heartbeat(Duration::from_millis(200), Duration::from_secs(5))
            .build()
            .unwrap();
        let info = pool.attach_info().unwrap();
        let through = relay(hostport(&info), attack);
        let mut relayed = dial_in(&info, &through);
        assert!(
            pool.wait_for_workers(1, Duration::from_secs(10)),
            "the relayed worker never joined ({attack:?})"
        );
        let fut = pool.submit(Square(7)).unwrap();
        // The touched connection ends: the pool closes it, or the worker
        // refuses the frame and exits.
        let Some(relayed_exit) = wait_exit(&mut relayed, Duration::from_secs(10)) else {
            let _ = relayed.kill();
            let _ = relayed.wait();
            let r = fut.result_timeout(Duration::from_millis(10));
            panic!(
                "{attack:?}: the connection survived a tampered frame; the task: {:?}",
                r.map_err(|e| format!("{e:?}"))
            );
        };
        let mut relayed_stderr = String::new();
        relayed
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut relayed_stderr)
            .unwrap();
        let mut honest = info.command(WORKER).stdin(Stdio::null()).spawn().unwrap();
        let result = match fut.result_timeout(Duration::from_secs(20)) {
            Ok(v) => Ok(v),
            Err(procpool::WaitError::Failed(e)) => Err(e),
            Err(other) => panic!("{attack:?}: no outcome: {other:?}"),
        };
        still_works(&pool);
        drop(pool);
        assert!(honest.wait().unwrap().success());
        Outcome2 {
            result,
            relayed_exit,
            relayed_stderr,
        }
    })
}

/// The task failed as a lost worker (the pool knew it had started), or ran
/// again on the honest worker (the frame that said it started is the one
/// that did not open): a worker's keeper sends the `Started` and the
/// `Finished` of a quick task in one `Records` frame or in two, as the
/// timing falls. Never the tampered value.
fn assert_lost(attack: Attack, o: &Outcome2) {
    match &o.result {
        Err(TaskError::WorkerDied { exit, .. }) => assert_eq!(*exit, Exit::Lost, "{attack:?}"),
        Ok(49) => {}
        other => panic!(
            "{attack:?}: expected the task to fail as a lost worker or to run again, got {other:?}"
        ),
    }
}

#[test]
fn a_flipped_bit_in_a_result_ends_the_connection_and_never_becomes_a_result() {
    let o = under_attack(Attack::FlipResultBit);
    assert_ne!(o.result, Ok(48), "the flipped result was accepted");
    assert_lost(Attack::FlipResultBit, &o);
}

#[test]
fn a_forged_result_ends_the_connection_and_never_becomes_a_result() {
    let o = under_attack(Attack::ForgeResult);
    assert_ne!(o.result, Ok(WRONG), "the forged result was accepted");
    assert_lost(Attack::ForgeResult, &o);
}

#[test]
fn an_injected_result_ends_the_connection_and_never_becomes_a_result() {
    let o = under_attack(Attack::InjectResult);
    assert_ne!(o.result, Ok(WRONG), "the injected result was accepted");
    assert_lost(Attack::InjectResult, &o);
}

#[test]
fn a_replayed_frame_ends_the_connection() {
    let o = under_attack(Attack::ReplayStarted);
    assert_lost(Attack::ReplayStarted, &o);
}

#[test]
fn a_dropped_frame_ends_the_connection() {
    let o = under_attack(Attack::DropFinished);
    assert_lost(Attack::DropFinished, &o);
}

#[test]
fn reordered_frames_end_the_connection_and_the_task_runs_again() {
    // The `Finished` came first and did not open: the task never started
    // as far as the pool knows, so it ran again on the honest worker.
    let o = under_attack(Attack::ReorderNotes);
    assert_eq!(o.result, Ok(49));
}

#[test]
fn a_flipped_bit_in_a_task_is_refused_by_the_worker_and_never_runs() {
    let o = under_attack(Attack::FlipInputBit);
    assert_ne!(o.result, Ok(36), "the worker ran the altered input");
    assert_eq!(o.result, Ok(49));
    assert!(!o.relayed_exit.success(), "{:?}", o.relayed_exit);
    assert!(
        o.relayed_stderr.contains("failed authentication"),
        "stderr: {}",
        o.relayed_stderr
    );
}

#[test]
fn an_injected_task_is_refused_by_the_worker() {
    let o = under_attack(Attack::InjectRun);
    // The real task may have finished before the worker read the
    // injected one; it may also have been cut off with its worker.
    match &o.result {
        Ok(49) | Err(TaskError::WorkerDied { .. }) => {}
        other => panic!("unexpected outcome {other:?}"),
    }
    assert!(!o.relayed_exit.success(), "{:?}", o.relayed_exit);
    assert!(
        o.relayed_stderr.contains("failed authentication"),
        "stderr: {}",
        o.relayed_stderr
    );
}

#[test]
fn retries_run_a_task_again_after_its_connection_was_tampered_with() {
    watchdog(LIMIT, || {
        let pool = tcp(Launcher::Attach, 2).retries(1).build().unwrap();
        let info = pool.attach_info().unwrap();
        let through = relay(hostport(&info), Attack::ForgeResult);
        let mut relayed = dial_in(&info, &through);
        assert!(pool.wait_for_workers(1, Duration::from_secs(10)));
        let fut = pool.submit(Square(9)).unwrap();
        assert!(
            wait_exit(&mut relayed, Duration::from_secs(10)).is_some(),
            "the tampered connection survived"
        );
        let mut honest = info.command(WORKER).stdin(Stdio::null()).spawn().unwrap();
        assert_eq!(fut.result().unwrap(), 81);
        drop(pool);
        assert!(honest.wait().unwrap().success());
    });
}

// ------------------------------------------------------------ strangers

fn stranger_hello(host: String, ticket: u64, nonce: Vec<u8>) -> Vec<u8> {
    codec::encode(&Hello::ours(4242, host, ticket, nonce)).unwrap()
}

fn read_welcome(s: &mut TcpStream) -> Option<(Welcome, Vec<u8>)> {
    let body = read_frame(s)?;
    Some((Welcome::decode(&body).ok()?, body))
}

#[test]
fn the_pool_proves_nothing_to_a_stranger() {
    watchdog(LIMIT, || {
        let pool = tcp(Launcher::Attach, 1).build().unwrap();
        let info = pool.attach_info().unwrap();
        let mut s = TcpStream::connect(hostport(&info)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let nonce = vec![0x11; handshake::SECRET_LEN];
        assert!(write_frame(
            &mut s,
            &stranger_hello("stranger".into(), 0, nonce.clone())
        ));
        let (welcome, bytes) = read_welcome(&mut s).expect("a challenge");
        assert!(
            matches!(welcome, Welcome::Challenge { .. }),
            "expected a challenge, got {welcome:?}"
        );
        // The challenge is the pool's nonce and nothing else: nothing in it
        // depends on the secret (a proof for a nonce the stranger chose
        // would let a relay pass the pool off to a worker).
        assert!(
            bytes.len() <= handshake::SECRET_LEN + 2,
            "a {}-byte challenge: the pool proved something to a peer that proved nothing",
            bytes.len()
        );
        // A wrong proof: refused, and nothing of the pool's follows.
        let wrong = codec::encode(&Proof { mac: vec![0; 32] }).unwrap();
        assert!(write_frame(&mut s, &wrong));
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.len() < 1024, "{} bytes", rest.len());
        // The slot is still there for a worker with the secret.
        let mut kid = info.command(WORKER).stdin(Stdio::null()).spawn().unwrap();
        assert!(pool.wait_for_workers(1, Duration::from_secs(10)));
        still_works(&pool);
        drop(pool);
        assert!(kid.wait().unwrap().success());
    });
}

/// A TCP connection to `to` from the loopback address `from` (another
/// host, as far as the pool can tell).
fn dial_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    use std::os::fd::AsRawFd;
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let [a, b, c, d] = from;
    bind(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, d, 0))?;
    let SocketAddr::V4(to) = to else {
        unreachable!("the pool listens on IPv4 loopback")
    };
    connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    Ok(TcpStream::from(fd))
}

/// Strangers from another address, each dribbling a hello one byte every
/// 300 ms (never slow enough for a per-read timeout), reconnecting when
/// cut off, until `stop`. Returns how long each connection lasted.
fn slow_loris(
    to: SocketAddr,
    n: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Duration>>> {
    use std::sync::atomic::Ordering;
    (0..n)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut lasted = Vec::new();
                let hello = stranger_hello("loris".into(), 0, vec![1; 32]);
                let mut frame = (hello.len() as u32).to_le_bytes().to_vec();
                frame.extend_from_slice(&hello);
                while !stop.load(Ordering::SeqCst) {
                    let Ok(mut s) = dial_from([127, 0, 0, 2], to) else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let t = Instant::now();
                    for &b in frame.iter().cycle() {
                        if stop.load(Ordering::SeqCst) || s.write_all(&[b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    lasted.push(t.elapsed());
                }
                lasted
            })
        })
        .collect()
}

#[test]
fn slow_strangers_hold_no_slot_and_a_real_worker_joins_and_replaces() {
    use std::sync::atomic::{AtomicBool, Ordering};
    watchdog(LIMIT, || {
        let hs = Duration::from_secs(1);
        let pool = tcp(Launcher::Attach, 1)
            .handshake_timeout(hs)
            .build()
            .unwrap();
        let info = pool.attach_info().unwrap();
        let to: SocketAddr = hostport(&info).parse().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let lorises = slow_loris(to, 24, stop.clone());
        // Let them take every slot they can.
        std::thread::sleep(Duration::from_millis(1500));
        // A real worker whose own start the (loaded) machine made miss the
        // 1 s handshake deadline is refused by design: another one is
        // started, at most three in all, and the tries are shown.
        let attach = |joined: &dyn Fn() -> bool| {
            for tries in 1..=3 {
                let mut kid = info.command(WORKER).stdin(Stdio::null()).spawn().unwrap();
                if joined() {
                    return (kid, tries);
                }
                let _ = kid.kill();
                let _ = kid.wait();
            }
            panic!("a real worker could not join past slow strangers (3 tries)");
        };
        let asked = Instant::now();
        let (mut first, first_tries) = attach(&|| pool.wait_for_workers(1, Duration::from_secs(5)));
        let joined = asked.elapsed();
        still_works(&pool);
        // Its replacement joins too.
        let (_, pid) = pool.submit(WhoAmI).unwrap().result().unwrap();
        assert_eq!(pid, first.id());
        first.kill().unwrap();
        first.wait().unwrap();
        let asked = Instant::now();
        let who = pool.submit(WhoAmI).unwrap();
        let (mut second, second_tries) = attach(&|| who.wait_timeout(Duration::from_secs(5)));
        let (_, pid) = who.result().unwrap();
        assert_eq!(pid, second.id());
        let replaced = asked.elapsed();
        stop.store(true, Ordering::SeqCst);
        let mut longest = Duration::ZERO;
        for l in lorises {
            longest = longest.max(l.join().unwrap().into_iter().max().unwrap_or_default());
        }
        println!(
            "FIGURE slow strangers: joined in {joined:?} ({first_tries} tries), replaced in {replaced:?} \
             ({second_tries} tries), longest stranger {longest:?}"
        );
        // One deadline for the whole handshake (plus a write's delay to
        // notice the close), not one per byte.
        assert!(
            longest < hs + Duration::from_secs(2),
            "a stranger held a handshake for {longest:?}"
        );
        drop(pool);
        assert!(second.wait().unwrap().success());
    });
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "procpool-hostile-{}-{name}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_stranger_with_a_pending_spawns_ticket_changes_nothing() {
    watchdog(LIMIT, || {
        let scratch = Scratch::new("ticket");
        let said = scratch.0.join("said");
        let spawns = scratch.0.join("spawns");
        std::fs::create_dir_all(&spawns).unwrap();
        // The stranger learns the pending spawn's ticket (here from the
        // test worker; on a cluster, from a log or a shared file) and dials
        // first with a wrong proof.
        let stranger = {
            let said = said.clone();
            std::thread::spawn(move || {
                let line = loop {
                    if let Ok(l) = std::fs::read_to_string(&said) {
                        break l;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                };
                let (ticket, address) = line.split_once(' ').unwrap();
                let ticket: u64 = ticket.parse().unwrap();
                let mut s = TcpStream::connect(address.trim_start_matches("tcp://")).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                write_frame(&mut s, &stranger_hello("x".into(), ticket, vec![3; 32]));
                let _ = read_frame(&mut s);
                write_frame(&mut s, &codec::encode(&Proof { mac: vec![0; 32] }).unwrap());
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            })
        };
        let pool = tcp(Launcher::Spawn, 1)
            .handshake_timeout(Duration::from_secs(10))
            .worker(
                WorkerCommand::program(BAD_WORKER)
                    .env("BAD_MODE", "slow_hello")
                    .env("BAD_GOOD_WORKER", WORKER)
                    .env("BAD_DIR", &spawns)
                    .env("BAD_PIDFILE", &said)
                    .env("BAD_DELAY_MS", "1500"),
            )
            .build()
            .unwrap();
        stranger.join().unwrap();
        still_works(&pool);
        let first: u32 = std::fs::read_to_string(spawns.join("0"))
            .unwrap()
            .parse()
            .unwrap();
        let (_, pid) = pool.submit(WhoAmI).unwrap().result().unwrap();
        let n = std::fs::read_dir(&spawns).unwrap().count();
        assert_eq!(
            (n, pid),
            (1, first),
            "the stranger's failed handshake cost the pending spawn its slot"
        );
    });
}

/// Everything the pool logs in this test binary.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
            .with_writer(move || Sink(sink.clone()))
            .try_init()
            .unwrap();
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_hostile_host_name_reaches_the_logs_escaped_and_cut() {
    let logs = captured_logs();
    watchdog(LIMIT, move || {
        let pool = tcp(Launcher::Attach, 1).build().unwrap();
        let info = pool.attach_info().unwrap();
        let evil = format!(
            "evil\nFAKE: worker 0 joined\r\u{1b}[2J{}",
            "A".repeat(60 * 1024)
        );
        let mut s = TcpStream::connect(hostport(&info)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(write_frame(&mut s, &stranger_hello(evil, 0, vec![5; 32])));
        let _ = read_frame(&mut s);
        write_frame(&mut s, &codec::encode(&Proof { mac: vec![0; 32] }).unwrap());
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        // The refusal is logged once the connection is closed.
        let until = Instant::now() + Duration::from_secs(5);
        let text = loop {
            let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
            if text.contains("evil") || Instant::now() > until {
                break text;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let line = text
            .lines()
            .find(|l| l.contains("evil"))
            .unwrap_or_else(|| panic!("the refusal was not logged: {text}"));
        assert!(line.contains("refused"), "{line}");
        assert!(line.contains("evil\\nFAKE"), "not escaped: {line}");
        assert!(
            !text.contains('\u{1b}'),
            "a raw escape sequence reached the logs"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("FAKE")),
            "the stranger forged a log line"
        );
        assert!(line.len() < 1024, "a {}-byte log line", line.len());
        still_works_after_attach(&pool, &info);
    });
}

fn still_works_after_attach(pool: &ProcessPool, info: &AttachInfo) {
    let mut kid = info.command(WORKER).stdin(Stdio::null()).spawn().unwrap();
    assert!(pool.wait_for_workers(1, Duration::from_secs(10)));
    still_works(pool);
    let _ = kid.kill();
    let _ = kid.wait();
}
