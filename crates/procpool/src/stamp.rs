//! The worker's clock for the times it reports per task and per input of a
//! chunk (issue 14): the CPU's time-stamp counter where the kernel keeps
//! time with it (a read is ~10 ns on the 2-vCPU development VM), else
//! [`Instant`] (`clock_gettime`, ~25 ns there). One read per input of a
//! chunk was 6 % of all the CPU of a chunksize-256 `map` of trivial tasks.
//!
//! A [`Stamp`] is nanoseconds since the process first read this clock.
//! Until [`CALIBRATE_AFTER`] has passed since then, a read is `Instant`'s;
//! the first read after that measures the counter's ticks per nanosecond
//! over that whole time, and every later read is the counter's, scaled.
//! Stamps are only ever subtracted from each other (durations), never
//! compared with an `Instant`. The counter is used only if the kernel's
//! clocksource is `tsc`: the kernel found it invariant and in step across
//! CPUs (it switches away from it otherwise).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the counter is timed against `Instant` before it is used.
const CALIBRATE_AFTER: Duration = Duration::from_millis(10);

/// A point on the worker's clock (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(u64);

impl Stamp {
    /// Now.
    #[inline]
    pub(crate) fn now() -> Stamp {
        CLOCK.get_or_init(Clock::start).now()
    }

    /// Nanoseconds from `earlier` to `self` (0 if `earlier` is later).
    pub(crate) fn nanos_since(self, earlier: Stamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

static CLOCK: OnceLock<Clock> = OnceLock::new();

struct Clock {
    epoch: Instant,
    /// The counter at `epoch`, if it may be used.
    ticks0: Option<u64>,
    /// Nanoseconds per tick × 2³² once calibrated; 0 before.
    scale: AtomicU64,
}

impl Clock {
    fn start() -> Clock {
        let ticks0 = if kernel_keeps_time_with_tsc() {
            crate::sys::tsc()
        } else {
            None
        };
        Clock {
            epoch: Instant::now(),
            ticks0,
            scale: AtomicU64::new(0),
        }
    }

    #[inline]
    fn now(&self) -> Stamp {
        let Some(t0) = self.ticks0 else {
            // No counter to use here: `Instant` it is, always.
            return Stamp(self.elapsed());
        };
        let scale = self.scale.load(Ordering::Relaxed);
        if scale != 0
            && let Some(t) = crate::sys::tsc()
        {
            return Stamp(scaled(t.wrapping_sub(t0), scale));
        }
        self.calibrating(t0)
    }

    /// Nanoseconds since `epoch`, by `Instant`.
    fn elapsed(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }

    /// `Instant`'s reading for the first [`CALIBRATE_AFTER`], then the
    /// counter calibrated against it (the counter started at `t0`).
    #[cold]
    fn calibrating(&self, t0: u64) -> Stamp {
        let ns = self.elapsed();
        if let Some(t) = crate::sys::tsc()
            && ns >= CALIBRATE_AFTER.as_nanos() as u64
        {
            let scale = calibrate(ns, t.wrapping_sub(t0));
            if scale != 0 {
                self.scale.store(scale, Ordering::Relaxed);
            }
        }
        Stamp(ns)
    }
}

/// Nanoseconds per tick × 2³², from `ticks` counted over `ns` (0: no
/// usable measure).
fn calibrate(ns: u64, ticks: u64) -> u64 {
    if ticks == 0 {
        return 0;
    }
    u64::try_from((u128::from(ns) << 32) / u128::from(ticks)).unwrap_or(0)
}

/// `ticks` in nanoseconds at `scale` (see [`calibrate`]).
#[inline]
fn scaled(ticks: u64, scale: u64) -> u64 {
    u64::try_from((u128::from(ticks) * u128::from(scale)) >> 32).unwrap_or(u64::MAX)
}

/// Whether the kernel's current clocksource is the time-stamp counter.
fn kernel_keeps_time_with_tsc() -> bool {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .is_ok_and(|s| s.trim() == "tsc")
}

/// Whole nanoseconds of `d`, saturating (at 584 years).
pub(crate) fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_turns_ticks_into_nanoseconds() {
        // A 2.5 GHz counter: 25,000,000 ticks in 10 ms.
        let scale = calibrate(10_000_000, 25_000_000);
        assert_eq!(scaled(25_000_000, scale), 9_999_999);
        assert_eq!(scaled(2_500, scale), 999);
        // A 1 GHz counter, and a slow one.
        assert_eq!(scaled(1_000, calibrate(10_000_000, 10_000_000)), 1_000);
        assert_eq!(scaled(3, calibrate(10_000_000, 1_000)), 30_000);
        assert_eq!(calibrate(10_000_000, 0), 0);
    }

    #[test]
    fn stamps_follow_the_wall_clock_before_and_after_calibration() {
        // The process's clock: whatever it is, durations it reports follow
        // `Instant`'s within a small error, across the calibration.
        for _ in 0..3 {
            let (a, ia) = (Stamp::now(), Instant::now());
            std::thread::sleep(Duration::from_millis(12));
            let (b, ib) = (Stamp::now(), Instant::now());
            let wall = ib.duration_since(ia).as_nanos() as i128;
            let ours = i128::from(b.nanos_since(a));
            assert!(
                (ours - wall).abs() < 200_000,
                "stamp said {ours} ns, Instant {wall} ns"
            );
            assert_eq!(a.nanos_since(b), 0);
        }
    }
}
