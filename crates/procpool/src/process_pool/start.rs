//! Building a pool: the shared state, the spawner, clock and accept
//! threads, the first workers (or launch), and waiting until every slot is
//! ready or one failed. Takes `Shared::state` (waiting on `changed`) and
//! `Shared::threads`.

use std::sync::{Arc, mpsc};
use std::time::Duration;

#[cfg(feature = "remote")]
use super::attach::AttachPoint;
use super::builder::Config;
use super::clock::clock_main;
use super::guard::guarded;
use super::launch::Launcher;
use super::procs::Os;
use super::shutdown::shutdown;
use super::spawn::StartError;
use super::spawner::spawner_main;
use super::state::{Shared, SlotStatus, SpawnJob};
#[cfg(feature = "remote")]
use super::transport::Transport;
use crate::Shutdown;
use crate::error::BuildError;
use crate::lock::lock;

/// Starts the pool's threads and workers; returns once all are ready.
pub(crate) fn start(cfg: Config) -> Result<Arc<Shared>, BuildError> {
    if !cfg.dumpable {
        // Workers run as our user: without this, a compromised one could
        // read our memory (the secret, every task) through /proc or ptrace.
        if let Err(e) = nix::sys::prctl::set_dumpable(false) {
            tracing::warn!(target: "procpool::pool", "cannot make this process non-dumpable: {e}");
        }
    }
    let workers = cfg.workers;
    #[cfg(feature = "remote")]
    let dials_in = cfg.launcher.dials_in() || cfg.transport == Transport::Tcp;
    #[cfg(feature = "remote")]
    let attach = if dials_in {
        Some(AttachPoint::open(&cfg).map_err(|source| BuildError::Spawn {
            worker: 0,
            program: "<listening socket>".into(),
            source,
        })?)
    } else {
        None
    };
    // Spawned workers are started here; all others join by dialing in,
    // into vacant slots.
    #[cfg(feature = "remote")]
    let (spawned, waits) = (
        matches!(cfg.launcher, Launcher::Spawn),
        !matches!(cfg.launcher, Launcher::Attach | Launcher::External),
    );
    #[cfg(feature = "remote")]
    let shared = Shared::new(cfg, attach, spawned, waits, Arc::new(Os));
    // Without `remote` every worker is spawned, and waited for.
    #[cfg(not(feature = "remote"))]
    let (spawned, shared) = (true, Shared::new(cfg, true, true, Arc::new(Os)));
    let (tx, rx) = mpsc::channel::<SpawnJob>();
    *lock(&shared.spawn_tx) = Some(tx.clone());
    let s1 = shared.clone();
    let spawner = std::thread::Builder::new()
        .name("procpool-spawner".into())
        .spawn(move || {
            let s = s1.clone();
            guarded(&s1, "spawner", None, move || spawner_main(&s, rx));
        });
    let s2 = Arc::downgrade(&shared);
    let clock = std::thread::Builder::new()
        .name("procpool-clock".into())
        .spawn(move || clock_main(&s2));
    #[cfg(feature = "remote")]
    let s3 = shared.clone();
    #[cfg(feature = "remote")]
    let accept = dials_in.then(|| {
        std::thread::Builder::new()
            .name("procpool-attach-accept".into())
            .spawn(move || {
                let s = s3.clone();
                guarded(&s3, "attach accept", None, move || {
                    super::attach::accept_loop(&s);
                });
            })
    });
    #[cfg(feature = "remote")]
    let started = [spawner, clock].into_iter().chain(accept);
    #[cfg(not(feature = "remote"))]
    let started = [spawner, clock];
    let mut failed = None;
    for t in started {
        match t {
            Ok(h) => lock(&shared.threads).push(h),
            Err(e) => failed = Some(e),
        }
    }
    if let Some(source) = failed {
        shutdown(&shared, Shutdown::Kill);
        return Err(BuildError::Spawn {
            worker: 0,
            program: "<thread>".into(),
            source,
        });
    }
    match &shared.cfg.launcher {
        #[cfg(feature = "remote")]
        Launcher::Attach => return Ok(shared),
        #[cfg(feature = "remote")]
        Launcher::External => {
            if let Some(a) = &shared.attach {
                eprintln!(
                    "procpool: waiting for {workers} worker(s); start each with:\n  {}",
                    a.info.command_line(&shared.cfg.program)
                );
            }
            return Ok(shared);
        }
        #[cfg(feature = "remote")]
        Launcher::Command(_) => {
            let _ = tx.send(SpawnJob::Launch {
                workers,
                first: true,
            });
        }
        Launcher::Spawn => {
            for i in 0..workers {
                let _ = tx.send(SpawnJob::Worker(i));
            }
        }
    }
    drop(tx);
    // `launch_timeout(Duration::MAX)`: no deadline.
    #[cfg(feature = "remote")]
    let deadline = crate::deadline::after(shared.cfg.launch_timeout);
    // Wait until every slot is ready, or one failed.
    let failure = {
        let mut st = lock(&shared.state);
        loop {
            if spawned && let Some(i) = st.slots.iter().position(|s| s.status == SlotStatus::Dead) {
                let slot = &mut st.slots[i];
                break Some((i, slot.start_error.take(), slot.last_exit));
            }
            #[cfg(feature = "remote")]
            if !spawned {
                // Launched workers: any start failure, the launcher giving
                // up, or the launch timeout ends the build.
                if let Some(i) = st.slots.iter().position(|s| s.start_error.is_some()) {
                    let slot = &mut st.slots[i];
                    break Some((i, slot.start_error.take(), slot.last_exit));
                }
                if let Some(m) = st.launch_failure.take() {
                    break Some((0, Some(StartError::Launch(m)), None));
                }
                if crate::deadline::passed(deadline) {
                    let ready = st
                        .slots
                        .iter()
                        .filter(|s| s.status == SlotStatus::Ready)
                        .count();
                    break Some((
                        0,
                        Some(StartError::Launch(format!(
                            "only {ready} of {workers} launched workers joined within {:?} \
                             (launch_timeout); can the nodes reach {}?",
                            shared.cfg.launch_timeout,
                            shared.attach.as_ref().map_or("", |a| a.info.address())
                        ))),
                        None,
                    ));
                }
            }
            if st.slots.iter().all(|s| s.status == SlotStatus::Ready) {
                st.building = false;
                break None;
            }
            st = shared
                .changed
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    };
    let Some((worker, error, exit)) = failure else {
        tracing::debug!(target: "procpool::pool", workers, "pool ready");
        return Ok(shared);
    };
    shutdown(&shared, Shutdown::Kill);
    Err(match error {
        Some(StartError::Spawn(source)) => BuildError::Spawn {
            worker,
            program: shared.cfg.program.clone(),
            source,
        },
        Some(StartError::Init(message)) => BuildError::Initializer {
            worker,
            name: shared
                .cfg
                .init
                .as_ref()
                .map(|i| i.name.to_owned())
                .unwrap_or_default(),
            message,
        },
        // A launch that failed is reported as the handshake that never
        // happened (`BuildError` has no variant of its own for it).
        Some(StartError::Handshake(message)) => BuildError::Handshake { worker, message },
        #[cfg(feature = "remote")]
        Some(StartError::Launch(message)) => BuildError::Handshake { worker, message },
        None => BuildError::Handshake {
            worker,
            message: match exit {
                Some(e) => format!("the worker {e} during start-up"),
                None => "the worker ended during start-up".into(),
            },
        },
    })
}
