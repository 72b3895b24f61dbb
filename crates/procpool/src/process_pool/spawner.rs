//! The spawner thread (one, as long-lived as the pool: `PR_SET_PDEATHSIG`
//! fires when the *thread* that forked exits): starts each worker process,
//! and runs launcher programs (`srun`, `mpirun`) and watches them. Takes
//! `Shared::state`, `spawn_tx`, `launched` and `threads`, one at a time.

use std::sync::{Arc, mpsc};

#[cfg(feature = "remote")]
use nix::sys::signal::Signal;

#[cfg(feature = "remote")]
use super::guard::guarded;
#[cfg(feature = "remote")]
use super::launch::LaunchRequest;
use super::life::start_threads;
#[cfg(feature = "remote")]
use super::policy::{Decision, jitter};
use super::settle::settle;
#[cfg(feature = "remote")]
use super::settle::{break_pool, finish_breaking, policy};
#[cfg(feature = "remote")]
use super::spawn;
use super::spawn::StartError;
#[cfg(feature = "remote")]
use super::state::LaunchRecord;
use super::state::{KillReason, Phase, Shared, SlotStatus, SpawnJob};
use crate::error::Exit;
#[cfg(feature = "remote")]
use crate::link::env::{ENV_TICKET, ENV_TOKEN};
#[cfg(feature = "remote")]
use crate::link::secret::random_ticket;
use crate::lock::lock;

pub(super) fn spawner_main(shared: &Arc<Shared>, rx: mpsc::Receiver<SpawnJob>) {
    while let Ok(job) = rx.recv() {
        match job {
            SpawnJob::Worker(idx) => spawn_worker(shared, idx),
            #[cfg(feature = "remote")]
            SpawnJob::Launch { workers, first } => run_launcher(shared, workers, first),
        }
    }
}

fn spawn_worker(shared: &Arc<Shared>, idx: usize) {
    let generation = {
        let mut st = lock(&shared.state);
        if matches!(st.phase, Phase::Stopping | Phase::Stopped) || st.broken.is_some() {
            st.slots[idx].status = SlotStatus::Dead;
            drop(st);
            shared.changed.notify_all();
            return;
        }
        st.claim_slot(idx)
    };
    // Over TCP the worker dials back with a ticket that names this slot.
    // No randomness for it: the spawn fails (loudly), nothing guessable.
    #[cfg(feature = "remote")]
    let (spawned, ticket) = match random_ticket() {
        Ok(ticket) => {
            let dial = shared.attach.as_ref().map(|a| spawn::DialBack {
                address: a.local_address(),
                secret_hex: a.info.launch_key_hex(ticket),
                ticket,
                rx: a.expect(ticket),
            });
            (shared.procs.spawn(&shared.cfg, idx, dial), Some(ticket))
        }
        Err(e) => (Err(e), None),
    };
    #[cfg(not(feature = "remote"))]
    let spawned = shared.procs.spawn(&shared.cfg, idx, None);
    match spawned {
        Ok(spawned) => start_threads(shared, idx, generation, spawned),
        Err(e) => {
            #[cfg(feature = "remote")]
            if let (Some(a), Some(ticket)) = (&shared.attach, ticket) {
                a.forget(ticket);
            }
            tracing::warn!(
                target: "procpool::pool",
                { worker.id = idx },
            "cannot start `{}`: {e}",
                shared.cfg.program.display()
            );
            {
                let mut st = lock(&shared.state);
                let slot = &mut st.slots[idx];
                slot.start_error = Some(StartError::Spawn(e));
                slot.kill = Some(KillReason::StartFailed);
            }
            settle(shared, idx, generation, None, Exit::Unknown);
        }
    }
}

/// Runs the launcher program for `workers` more workers; they join by
/// dialing in. A watcher thread notices a launcher that exits before all
/// its workers joined.
#[cfg(feature = "remote")]
fn run_launcher(shared: &Arc<Shared>, workers: usize, first: bool) {
    let (Some(launcher), Some(point)) = (shared.cfg.launcher.command(), shared.attach.as_ref())
    else {
        return;
    };
    if matches!(lock(&shared.state).phase, Phase::Stopping | Phase::Stopped) {
        return;
    }
    let ticket = match random_ticket() {
        Ok(t) => t,
        Err(e) => {
            // Fail like a launcher that could not run: recorded under ticket
            // 0, which no worker can name (real tickets are odd), and
            // settled at once.
            lock(&shared.state).launches.insert(
                0,
                LaunchRecord {
                    expected: workers,
                    joined: 0,
                },
            );
            launcher_gone(shared, 0, format!("cannot launch workers: {e}"));
            return;
        }
    };
    let mut argv: Vec<std::ffi::OsString> = vec![shared.cfg.program.clone().into()];
    argv.extend(shared.cfg.command.args().iter().cloned());
    argv.extend(["--connect".into(), point.info.address().into()]);
    let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = shared.cfg.command.envs().to_vec();
    env.push((ENV_TOKEN.into(), point.info.launch_key_hex(ticket).into()));
    env.push((ENV_TICKET.into(), ticket.to_string().into()));
    let mut cmd = launcher.command(&LaunchRequest {
        workers,
        first,
        argv: &argv,
        env: &env,
    });
    let name = launcher.name().to_owned();
    lock(&shared.state).launches.insert(
        ticket,
        LaunchRecord {
            expected: workers,
            joined: 0,
        },
    );
    let started = spawn::start_forwarded(&mut cmd);
    drop(cmd);
    let (mut child, out) = match started {
        Ok(pair) => pair,
        Err(e) => {
            let message = format!("cannot run the launcher `{name}`: {e}");
            launcher_gone(shared, ticket, message);
            return;
        }
    };
    let pid = child.id();
    tracing::info!(target: "procpool::pool", "{name} (pid {pid}) launching {workers} worker(s)");
    super::output::forward_output(out, name.clone());
    lock(&shared.launched).push((ticket, pid));
    let s = shared.clone();
    let watcher = std::thread::Builder::new()
        .name(format!("procpool-{name}"))
        .spawn(move || {
            let s2 = s.clone();
            guarded(&s, "launcher watcher", None, move || {
                let exit = s2.procs.wait(&mut child);
                lock(&s2.launched).retain(|(t, _)| *t != ticket);
                launcher_gone(&s2, ticket, format!("{name} (pid {pid}) {exit}"));
            });
        });
    match watcher {
        Ok(h) => lock(&shared.threads).push(h),
        Err(e) => {
            shared.procs.signal(pid, Signal::SIGKILL);
            launcher_gone(
                shared,
                ticket,
                format!("cannot watch {}: {e}", launcher.name()),
            );
        }
    }
}

/// A launcher run ended. Workers it started that never joined are a
/// failure: the build fails, or (later) they count as crashes and are
/// launched again, until the pool breaks.
#[cfg(feature = "remote")]
fn launcher_gone(shared: &Arc<Shared>, ticket: u64, how: String) {
    let mut failures = Vec::new();
    let mut kill_others = Vec::new();
    let mut relaunch = None;
    {
        let mut st = lock(&shared.state);
        let Some(rec) = st.launches.remove(&ticket) else {
            return;
        };
        let missing = rec.expected.saturating_sub(rec.joined);
        if missing == 0
            || matches!(st.phase, Phase::Stopping | Phase::Stopped)
            || st.broken.is_some()
        {
            tracing::debug!(target: "procpool::pool", "{how}");
            return;
        }
        let cause = format!(
            "{how} before {missing} of its {} worker(s) joined",
            rec.expected
        );
        tracing::warn!(target: "procpool::pool", "{cause}");
        if st.building {
            st.launch_failure = Some(cause);
        } else {
            let decision =
                policy(shared).after_failed_launch(&cause, &mut st.crash_streak, jitter());
            match decision {
                Decision::Broken { reason } => {
                    break_pool(&mut st, reason, &mut failures, &mut kill_others);
                }
                Decision::Restart { after } => relaunch = Some((missing, after)),
                Decision::Leave => {}
            }
        }
    }
    shared.changed.notify_all();
    finish_breaking(shared, failures, kill_others);
    if let Some((workers, delay)) = relaunch {
        std::thread::sleep(delay);
        if let Some(tx) = lock(&shared.spawn_tx).as_ref() {
            let _ = tx.send(SpawnJob::Launch {
                workers,
                first: false,
            });
        }
    }
}
