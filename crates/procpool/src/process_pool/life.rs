//! The life of one worker process: its **life** thread (greeting, the
//! initializer, then reading its socket: see `reader`) and its **waiter**
//! thread (`waitpid`, then `settle`). Death is detected by `waitpid`, not by
//! EOF, so a grandchild holding the socket cannot hide it. Takes
//! `Shared::state` briefly (never across I/O).

use std::process::Child;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::Signal;
use procpool_wire::Generation;
use procpool_wire::handshake::Hello;
use procpool_wire::message::ToWorker;

#[cfg(feature = "remote")]
use super::attach::Dialed;
use super::dispatch;
use super::greet;
use super::guard::guarded;
use super::outbox::{Conn, flush_all, post_message};
use super::reader;
use super::settle::settle;
use super::spawn::{self, StartError};
use super::state::{KillReason, Phase, Shared, SlotStatus};
use crate::link::handshake::Proven;
use crate::link::ring;
use crate::link::stream::Stream;
use crate::lock::lock;

/// Starts the life and waiter threads of a freshly spawned process. Over
/// TCP its connection arrives later, from the accept loop.
pub(super) fn start_threads(
    shared: &Arc<Shared>,
    idx: usize,
    generation: Generation,
    spawned: spawn::Spawned,
) {
    let spawn::Spawned {
        child,
        arrival,
        pid,
    } = spawned;
    tracing::debug!(target: "procpool::pool", { worker.id = idx, worker.pid = pid },
"worker spawned");
    let doomed = {
        let mut st = lock(&shared.state);
        let broken = st.broken.is_some();
        let slot = &mut st.slots[idx];
        slot.pid = Some(pid);
        slot.remote = false;
        slot.link = match &arrival {
            spawn::Arrival::Inherited(s, _) => s.try_clone().ok(),
            #[cfg(feature = "remote")]
            spawn::Arrival::DialBack { .. } => None, // set when it arrives
        };
        // A spawn in flight is part of the pool: told to stop (shutdown
        // with `Kill`, a broken pool) while it was being forked, when it
        // had no pid to signal yet, it is stopped now. Its waiter settles
        // the slot as for any death.
        slot.generation == generation && (slot.kill.is_some() || broken)
    };
    if doomed {
        tracing::debug!(target: "procpool::pool", { worker.id = idx, worker.pid = pid },
"worker spawned while the pool stops: killed");
        shared.procs.signal(pid, Signal::SIGKILL);
    }
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let s = shared.clone();
    let life = std::thread::Builder::new()
        .name(format!("procpool-worker-{idx}"))
        .spawn(move || {
            let s2 = s.clone();
            guarded(&s, "worker reader", None, move || match arrival {
                spawn::Arrival::Inherited(stream, ring) => {
                    life_main(&s2, idx, generation, stream, pid, None, ring);
                }
                #[cfg(feature = "remote")]
                spawn::Arrival::DialBack { ticket, rx } => {
                    await_dial(&s2, idx, generation, pid, ticket, &rx);
                }
            });
            drop(done_tx);
        });
    let s = shared.clone();
    let life = life.ok();
    let waiter = std::thread::Builder::new()
        .name(format!("procpool-waiter-{idx}"))
        .spawn(move || {
            let s2 = s.clone();
            guarded(&s, "worker waiter", Some(idx), move || {
                waiter_main(&s2, idx, generation, child, pid, done_rx, life);
            });
        });
    if let Err(e) = waiter {
        tracing::error!(target: "procpool::pool", { worker.id = idx },
"cannot start a waiter thread: {e}");
        shared.procs.signal(pid, Signal::SIGKILL);
    }
}

/// A spawned worker dialing back over TCP: wait for its connection (by
/// ticket), then serve it.
#[cfg(feature = "remote")]
fn await_dial(
    shared: &Shared,
    idx: usize,
    generation: Generation,
    pid: u32,
    ticket: u64,
    rx: &mpsc::Receiver<Result<Dialed, StartError>>,
) {
    // The handshake itself has its own timeout once connected; this bounds
    // the time to start and connect.
    let limit = shared.cfg.handshake_timeout.saturating_mul(2);
    let got = rx.recv_timeout(limit);
    if let Some(a) = &shared.attach {
        a.forget(ticket);
    }
    match got {
        Ok(Err(e)) => start_failed(shared, idx, generation, pid, e),
        Ok(Ok(d)) => {
            if let Ok(link) = d.stream.try_clone() {
                let mut st = lock(&shared.state);
                if st.slots[idx].generation == generation {
                    st.slots[idx].link = Some(link);
                }
            }
            life_main(
                shared,
                idx,
                generation,
                d.stream,
                pid,
                Some((d.proven, d.hello)),
                None,
            );
        }
        Err(_) => {
            let e = StartError::Handshake(format!("the worker did not dial back within {limit:?}"));
            start_failed(shared, idx, generation, pid, e);
        }
    }
}

pub(super) fn life_main(
    shared: &Shared,
    idx: usize,
    generation: Generation,
    stream: Stream,
    pid: u32,
    dialed: Option<(Proven, Hello)>,
    rings: Option<spawn::Rings>,
) {
    // No write to this worker waits longer than the write timeout for it
    // to take a byte (the handshake's, the initializer's, every task's).
    let limit = Some(shared.cfg.write_timeout.max(Duration::from_millis(1)))
        .filter(|d| *d < Duration::from_secs(u32::MAX as u64));
    if let Err(e) = stream.set_write_timeout(limit) {
        tracing::warn!(target: "procpool::pool", { worker.id = idx }, "cannot bound writes to the worker: {e}");
    }
    let greeted = match dialed {
        None => greet::greet(&stream, &shared.cfg, idx, generation),
        Some((p, hello)) => greet::accept(&stream, &shared.cfg, idx, generation, Some(&p))
            .map(|opened| (opened, hello)),
    };
    let (reader, sealer) = match greeted {
        Ok((opened, hello)) => {
            shared.known.learn(&hello);
            opened
        }
        Err(e) => return start_failed(shared, idx, generation, pid, e),
    };
    let (ring, work) = match rings {
        // The work ring only for a worker that said it reads it.
        Some(r) => (Some(r.reply), r.work.filter(ring::Writer::reader_ready)),
        None => (None, None),
    };
    let conn = match stream.try_clone() {
        Ok(w) => {
            let weak = shared.me.clone();
            let after = shared.cfg.write_timeout;
            let stalled = Box::new(move || {
                if let Some(s) = weak.upgrade() {
                    super::handle::stalled(&s, idx, generation, pid, after);
                }
            });
            Arc::new(Conn::new(w, stalled, sealer, work))
        }
        Err(e) => {
            let e = StartError::Handshake(format!("cannot clone the socket: {e}"));
            return start_failed(shared, idx, generation, pid, e);
        }
    };
    let conns = {
        let mut st = lock(&shared.state);
        let phase = st.phase;
        let slot = &mut st.slots[idx];
        if slot.generation != generation {
            return;
        }
        if slot.kill.is_some() {
            // Told to stop while it greeted: make sure it does (the
            // socket stays open through `link`, so it would not notice).
            let target = slot.target();
            drop(st);
            if let Some(t) = target {
                shared.signal(&t, Signal::SIGKILL);
            }
            return;
        }
        slot.conn = Some(conn.clone());
        slot.status = SlotStatus::Ready;
        if phase == Phase::Stopping {
            slot.kill = Some(KillReason::Shutdown);
            post_message(&conn, &ToWorker::Shutdown { drop_pending: true });
            vec![conn.clone()]
        } else {
            dispatch::pump(&mut st, shared)
        }
    };
    shared.changed.notify_all();
    tracing::debug!(target: "procpool::pool", { worker.id = idx, worker.pid = pid },
"worker ready");
    flush_all(conns);
    reader::read_loop(shared, idx, generation, reader, pid, ring);
}

/// A worker did not become ready: record why and stop it.
fn start_failed(shared: &Shared, idx: usize, generation: Generation, pid: u32, e: StartError) {
    tracing::warn!(target: "procpool::pool", { worker.id = idx, worker.pid = pid },
"worker did not start: {e}");
    let target = {
        let mut st = lock(&shared.state);
        let slot = &mut st.slots[idx];
        if slot.generation != generation {
            return;
        }
        slot.start_error = Some(e);
        slot.kill.get_or_insert(KillReason::StartFailed);
        slot.target()
    };
    if let Some(t) = target {
        shared.signal(&t, Signal::SIGKILL);
    }
}

fn waiter_main(
    shared: &Arc<Shared>,
    idx: usize,
    generation: Generation,
    mut child: Child,
    pid: u32,
    life_done: mpsc::Receiver<()>,
    life: Option<JoinHandle<()>>,
) {
    let exit = shared.procs.wait(&mut child);
    // Whatever the worker forked goes with it.
    shared.procs.signal(pid, Signal::SIGKILL);
    // Let the reader drain what the worker wrote before dying (results,
    // "started" notes); then force the socket shut.
    if life_done.recv_timeout(Duration::from_millis(500)).is_err() {
        let link = {
            let st = lock(&shared.state);
            let slot = &st.slots[idx];
            (slot.generation == generation)
                .then(|| slot.link.as_ref().and_then(|l| l.try_clone().ok()))
                .flatten()
        };
        if let Some(l) = link {
            l.shutdown();
        }
    }
    if let Some(h) = life {
        let _ = h.join();
    }
    settle(shared, idx, generation, Some(pid), exit);
}
