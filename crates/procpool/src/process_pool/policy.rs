//! The restart policy: after a worker dies (or a launcher run fails), what
//! to do — replace it now, replace it after a back-off, leave it, or
//! declare the pool broken. A plain function of the death and the restart
//! counters; it starts, kills and waits for nothing, so it is unit-tested
//! without a process (below). `settle` and the spawner gather the facts
//! under the pool lock, ask here, and carry out the answer.
//!
//! # The rules
//!
//! * A death is a **crash** unless the pool caused it on purpose (a timeout,
//!   `kill()`, retirement, shutdown, a broken pool). Start-up failures, a
//!   protocol error and a lost TCP worker are crashes.
//! * **Restart intensity, per pool**: a crash adds one to the pool's streak;
//!   any task finishing anywhere resets it. Past `max_restarts` the pool is
//!   broken ("N workers died in a row with no task finished in between").
//! * **Per slot**: a crash of a process that finished no task adds one to its
//!   slot's streak; a task finished *in that slot* resets it (other slots'
//!   progress does not, so one slot that can never start breaks the pool).
//! * **Back-off**: a crashed worker is replaced after 10 ms × 2^(streak−1)
//!   (the larger of the two streaks; the doubling stops at the 8th crash, so
//!   at most 1.28 s, under a 2 s cap), ±25 % jitter; a worker the pool ended
//!   on purpose is replaced at once.
//! * While `build()` waits, nothing is replaced and nothing breaks the pool:
//!   the build itself fails. A pool that is stopping (or draining an empty
//!   queue) replaces no one; one that is broken neither.
//!
//! No lock: the caller holds `Shared::state` while it calls in.

use std::time::Duration;

use super::state::KillReason;

/// The settings the policy reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Crashes in a row (pool-wide, or in one slot) that are tolerated.
    pub max_restarts: u32,
}

/// The restart counters, kept in the pool's state under `Shared::state`.
#[derive(Debug)]
pub(crate) struct Streaks<'a> {
    /// Crashes since the last task finished anywhere
    /// (`PoolState::crash_streak`).
    pub pool: &'a mut u32,
    /// Consecutive processes of this slot that died before finishing a task
    /// (`WorkerSlot::failures`).
    pub slot: &'a mut u32,
}

/// One worker's death, as the policy sees it.
#[derive(Debug, Clone)]
pub(crate) struct Death {
    /// Its slot.
    pub slot: usize,
    /// Not caused by the pool on purpose; see the module docs.
    pub crash: bool,
    /// Tasks the process finished before it died.
    pub finished: u64,
    /// What happened, for logs and the `Broken` reason: "worker 2 (pid 7)
    /// was killed by signal 9 while running a task".
    pub cause: String,
}

/// Where the pool is, as far as replacing a worker goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolNow {
    /// `build()` is still waiting for its workers.
    pub building: bool,
    /// The pool is already broken.
    pub broken: bool,
    /// The pool still wants workers (running, or draining a non-empty
    /// queue).
    pub wants_workers: bool,
    /// The pool can replace this worker (it spawns or launches its
    /// workers; attached workers are not replaced by the pool).
    pub replaceable: bool,
}

/// What to do after a death.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Start a replacement after `after` (zero: now).
    Restart { after: Duration },
    /// Start no replacement.
    Leave,
    /// Too many crashes: the pool is broken, for `reason`.
    Broken { reason: String },
}

impl Policy {
    /// Counts `death` in `streaks` and decides. `jitter` scales the back-off
    /// (0.75..=1.25; see [`jitter`]).
    pub(crate) fn after_death(
        &self,
        death: &Death,
        streaks: Streaks<'_>,
        now: PoolNow,
        jitter: f64,
    ) -> Decision {
        if death.crash {
            *streaks.pool += 1;
            if death.finished == 0 {
                *streaks.slot += 1;
            }
        }
        let (pool, slot) = (*streaks.pool, *streaks.slot);
        let max = self.max_restarts;
        let cause = &death.cause;
        if !now.building && !now.broken && (pool > max || slot > max) {
            let reason = if pool > max {
                format!(
                    "{pool} workers died in a row with no task finished in between (last: \
                     {cause}); max_restarts is {max}"
                )
            } else {
                format!(
                    "worker slot {} died {slot} times in a row before finishing a task (last: \
                     {cause}); max_restarts is {max}",
                    death.slot
                )
            };
            return Decision::Broken { reason };
        }
        if !now.replaceable || now.building || now.broken || !now.wants_workers {
            return Decision::Leave;
        }
        let after = if death.crash {
            backoff(pool.max(slot), jitter)
        } else {
            Duration::ZERO
        };
        Decision::Restart { after }
    }

    /// A launcher run ended with `missing` of its workers never joined
    /// (`cause` says how): counts as one crash of the pool. Only asked once
    /// the pool is built and neither stopping nor broken.
    #[cfg(feature = "remote")]
    pub(crate) fn after_failed_launch(
        &self,
        cause: &str,
        pool_streak: &mut u32,
        jitter: f64,
    ) -> Decision {
        *pool_streak += 1;
        let max = self.max_restarts;
        if *pool_streak > max {
            return Decision::Broken {
                reason: format!(
                    "{} launches or workers failed in a row with no task finished in between \
                     (last: {cause}); max_restarts is {max}",
                    *pool_streak
                ),
            };
        }
        Decision::Restart {
            after: backoff(*pool_streak, jitter),
        }
    }
}

/// Whether a death ended this way counts as a crash: anything but the
/// pool ending the worker on purpose (`kill`: why the pool ended it, if it
/// did).
pub(crate) fn is_crash(kill: Option<&KillReason>) -> bool {
    match kill {
        None
        | Some(KillReason::StartFailed)
        | Some(KillReason::Protocol(_))
        | Some(KillReason::Lost) => true,
        Some(KillReason::TimedOut { .. })
        | Some(KillReason::Killed { .. })
        | Some(KillReason::Retire)
        | Some(KillReason::Shutdown)
        | Some(KillReason::Broken(_)) => false,
    }
}

/// The delay before replacing a worker after `streak` crashes in a row:
/// 10 ms doubling per crash up to the 8th (1.28 s; never more than 2 s),
/// times `jitter`.
pub(crate) fn backoff(streak: u32, jitter: f64) -> Duration {
    if streak == 0 {
        return Duration::ZERO;
    }
    let base = Duration::from_millis(10).saturating_mul(1 << streak.min(8).saturating_sub(1));
    let base = base.min(Duration::from_secs(2));
    base.mul_f64(jitter)
}

/// ±25 % jitter (0.75..1.25) from the clock's low bits, so that pools (and
/// slots) that crashed together do not restart in lockstep.
pub(crate) fn jitter() -> f64 {
    let nanos = std::time::Instant::now().elapsed().subsec_nanos() ^ std::process::id();
    f64::from(nanos % 1000) / 1000.0 * 0.5 + 0.75
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: PoolNow = PoolNow {
        building: false,
        broken: false,
        wants_workers: true,
        replaceable: true,
    };

    fn crash(slot: usize, finished: u64) -> Death {
        Death {
            slot,
            crash: true,
            finished,
            cause: format!("worker {slot} (pid 7) was killed by signal 9"),
        }
    }

    /// The pool's counters and one counter per slot, as `PoolState` keeps
    /// them.
    struct Counters {
        pool: u32,
        slots: Vec<u32>,
    }

    impl Counters {
        fn new(slots: usize) -> Counters {
            Counters {
                pool: 0,
                slots: vec![0; slots],
            }
        }

        fn died(&mut self, p: &Policy, d: &Death, now: PoolNow) -> Decision {
            let streaks = Streaks {
                pool: &mut self.pool,
                slot: &mut self.slots[d.slot],
            };
            p.after_death(d, streaks, now, 1.0)
        }

        /// What `handle::on_finished` does when slot `i` finishes a task.
        fn finished(&mut self, i: usize) {
            self.pool = 0;
            self.slots[i] = 0;
        }
    }

    #[test]
    fn only_deaths_the_pool_did_not_cause_are_crashes() {
        assert!(is_crash(None));
        assert!(is_crash(Some(&KillReason::StartFailed)));
        assert!(is_crash(Some(&KillReason::Lost)));
        assert!(is_crash(Some(&KillReason::Protocol("garbage".into()))));
        assert!(!is_crash(Some(&KillReason::Retire)));
        assert!(!is_crash(Some(&KillReason::Shutdown)));
        assert!(!is_crash(Some(&KillReason::Killed { id: 1 })));
        assert!(!is_crash(Some(&KillReason::Broken("x".into()))));
        assert!(!is_crash(Some(&KillReason::TimedOut {
            id: 1,
            after: Duration::from_secs(1)
        })));
    }

    #[test]
    fn crashes_across_slots_break_the_pool_past_max_restarts() {
        let p = Policy { max_restarts: 3 };
        let mut c = Counters::new(4);
        for i in 0..3 {
            let d = c.died(&p, &crash(i, 5), RUNNING);
            assert!(matches!(d, Decision::Restart { .. }), "crash {i}: {d:?}");
        }
        match c.died(&p, &crash(3, 5), RUNNING) {
            Decision::Broken { reason } => {
                assert!(reason.contains("4 workers died in a row"), "{reason}");
                assert!(reason.contains("max_restarts is 3"), "{reason}");
                assert!(reason.contains("worker 3 (pid 7)"), "{reason}");
            }
            other => panic!("not broken: {other:?}"),
        }
    }

    #[test]
    fn a_finished_task_resets_the_pool_streak() {
        let p = Policy { max_restarts: 2 };
        let mut c = Counters::new(2);
        for round in 0..10 {
            for _ in 0..2 {
                let d = c.died(&p, &crash(0, 1), RUNNING);
                assert!(
                    matches!(d, Decision::Restart { .. }),
                    "round {round}: {d:?}"
                );
            }
            c.finished(1);
        }
        assert_eq!(c.pool, 0);
    }

    #[test]
    fn one_slot_that_never_starts_breaks_the_pool_despite_progress_elsewhere() {
        let p = Policy { max_restarts: 2 };
        let mut c = Counters::new(2);
        let mut last = Decision::Leave;
        for _ in 0..3 {
            last = c.died(&p, &crash(0, 0), RUNNING);
            // Slot 1 keeps finishing tasks: the pool streak resets, but
            // not slot 0's.
            c.pool = 0;
        }
        match last {
            Decision::Broken { reason } => {
                assert!(reason.contains("worker slot 0 died 3 times"), "{reason}")
            }
            other => panic!("not broken: {other:?}"),
        }
    }

    #[test]
    fn a_slot_streak_counts_only_processes_that_finished_nothing() {
        let p = Policy { max_restarts: 1 };
        let mut c = Counters::new(1);
        c.died(&p, &crash(0, 3), RUNNING);
        assert_eq!((c.pool, c.slots[0]), (1, 0));
        c.died(&p, &crash(0, 0), RUNNING);
        assert_eq!((c.pool, c.slots[0]), (2, 1));
    }

    #[test]
    fn deaths_the_pool_caused_are_not_crashes_and_restart_at_once() {
        let p = Policy { max_restarts: 0 };
        let mut c = Counters::new(1);
        for _ in 0..5 {
            let d = Death {
                crash: false,
                ..crash(0, 0)
            };
            assert_eq!(
                c.died(&p, &d, RUNNING),
                Decision::Restart {
                    after: Duration::ZERO
                }
            );
        }
        assert_eq!((c.pool, c.slots[0]), (0, 0));
    }

    #[test]
    fn back_off_doubles_from_10ms_up_to_2s_and_takes_the_larger_streak() {
        assert_eq!(backoff(0, 1.0), Duration::ZERO);
        assert_eq!(backoff(1, 1.0), Duration::from_millis(10));
        assert_eq!(backoff(2, 1.0), Duration::from_millis(20));
        assert_eq!(backoff(5, 1.0), Duration::from_millis(160));
        // The doubling stops at the 8th crash: 1.28 s, under the 2 s cap.
        assert_eq!(backoff(8, 1.0), Duration::from_millis(1280));
        assert_eq!(backoff(40, 1.0), Duration::from_millis(1280));
        assert_eq!(backoff(40, 1.25), Duration::from_millis(1600));
        assert_eq!(backoff(1, 0.75), Duration::from_micros(7500));
        let p = Policy { max_restarts: 10 };
        let mut c = Counters::new(2);
        c.slots[1] = 3; // slot 1 failed to start three times before
        let d = c.died(&p, &crash(1, 0), RUNNING);
        assert_eq!(
            d,
            Decision::Restart {
                after: Duration::from_millis(80)
            }
        );
        let j = jitter();
        assert!((0.75..1.25).contains(&j), "{j}");
    }

    #[test]
    fn nothing_is_replaced_while_building_stopping_or_broken() {
        let p = Policy { max_restarts: 0 };
        for now in [
            PoolNow {
                building: true,
                ..RUNNING
            },
            PoolNow {
                wants_workers: false,
                ..RUNNING
            },
            PoolNow {
                replaceable: false,
                ..RUNNING
            },
            PoolNow {
                broken: true,
                ..RUNNING
            },
        ] {
            let mut c = Counters::new(1);
            // max_restarts 0: a crash would break a running pool, but a
            // build fails on its own and a broken pool stays as it was.
            let d = c.died(&p, &crash(0, 0), now);
            if now.building || now.broken {
                assert_eq!(d, Decision::Leave, "{now:?}");
            } else {
                assert!(matches!(d, Decision::Broken { .. }), "{now:?}: {d:?}");
            }
            let d = c.died(
                &Policy { max_restarts: 9 },
                &Death {
                    crash: false,
                    ..crash(0, 0)
                },
                now,
            );
            assert_eq!(d, Decision::Leave, "{now:?}");
        }
    }

    #[test]
    #[cfg(feature = "remote")]
    fn failed_launches_count_against_the_pool_and_back_off() {
        let p = Policy { max_restarts: 2 };
        let mut streak = 0;
        assert_eq!(
            p.after_failed_launch("srun exited", &mut streak, 1.0),
            Decision::Restart {
                after: Duration::from_millis(10)
            }
        );
        assert_eq!(
            p.after_failed_launch("srun exited", &mut streak, 1.0),
            Decision::Restart {
                after: Duration::from_millis(20)
            }
        );
        match p.after_failed_launch("srun exited", &mut streak, 1.0) {
            Decision::Broken { reason } => {
                assert!(reason.contains("3 launches or workers failed"), "{reason}");
                assert!(reason.contains("srun exited"), "{reason}");
            }
            other => panic!("not broken: {other:?}"),
        }
    }
}
