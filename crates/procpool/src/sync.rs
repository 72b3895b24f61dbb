//! The synchronisation types of the two protocols procpool model-checks —
//! the future's state machine (`future.rs`) and the reply ring's
//! park-and-wake handshake (`link/ring.rs`): std's in every normal build,
//! [loom](https://docs.rs/loom)'s under `RUSTFLAGS="--cfg procpool_loom"`, so the
//! model checks (`models.rs`) run the real code, not a copy.
//!
//! The cfg is `procpool_loom`, not plain `loom`: tokio, a dev-dependency,
//! switches its own internals on `cfg(loom)` and does not build that way.
//!
//! Only what those two files use is here. Two differences from std, both
//! under `cfg(procpool_loom)` only:
//!
//! * loom's `Condvar` has no `wait_while` / `wait_timeout_while`; the
//!   wrapper below adds them as loops over `wait`. loom does not model
//!   time: a timed wait there is an untimed one, so a model must not rely
//!   on a timeout firing (it would report a deadlock).
//! * The ring's shared memory (`sys::SharedMap`) becomes a heap buffer of
//!   loom cells and atomics (in `sys.rs`), so loom sees every access.
//!
//! Run the models with
//! `RUSTFLAGS="--cfg procpool_loom" CARGO_TARGET_DIR=target/loom cargo test -p procpool --lib --release models`.

#[cfg(not(procpool_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, fence};
#[cfg(not(procpool_loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

/// A short pause in a wait loop (the ring's writer waiting for room): a
/// 20 µs sleep; under loom a yield, which loom needs to see a spin loop.
#[cfg(not(procpool_loom))]
pub(crate) fn backoff() {
    std::thread::sleep(std::time::Duration::from_micros(20));
}

#[cfg(procpool_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, fence};

#[cfg(procpool_loom)]
pub(crate) fn backoff() {
    loom::thread::yield_now();
}

#[cfg(procpool_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(procpool_loom)]
pub(crate) use self::loom_condvar::Condvar;

#[cfg(procpool_loom)]
mod loom_condvar {
    use std::sync::{LockResult, PoisonError};
    use std::time::Duration;

    use loom::sync::MutexGuard;

    /// loom's `Condvar` with std's `wait_while` and `wait_timeout_while`.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    fn unpoison<G>(r: LockResult<G>) -> G {
        r.unwrap_or_else(PoisonError::into_inner)
    }

    // std's `Condvar` surface; which methods a caller uses varies.
    #[allow(dead_code)]
    impl Condvar {
        pub(crate) fn new() -> Condvar {
            Condvar(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<'a, T>(&self, g: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
            self.0.wait(g)
        }

        /// Never times out under loom (see the module docs); the flag is
        /// std's `WaitTimeoutResult::timed_out`.
        pub(crate) fn wait_timeout<'a, T>(
            &self,
            g: MutexGuard<'a, T>,
            _dur: Duration,
        ) -> LockResult<(MutexGuard<'a, T>, bool)> {
            Ok((unpoison(self.0.wait(g)), false))
        }

        pub(crate) fn wait_while<'a, T>(
            &self,
            mut g: MutexGuard<'a, T>,
            mut condition: impl FnMut(&mut T) -> bool,
        ) -> LockResult<MutexGuard<'a, T>> {
            while condition(&mut *g) {
                g = unpoison(self.0.wait(g));
            }
            Ok(g)
        }

        /// As [`wait_while`](Self::wait_while): loom has no clock.
        pub(crate) fn wait_timeout_while<'a, T>(
            &self,
            g: MutexGuard<'a, T>,
            _dur: Duration,
            condition: impl FnMut(&mut T) -> bool,
        ) -> LockResult<(MutexGuard<'a, T>, bool)> {
            Ok((unpoison(self.wait_while(g, condition)), false))
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}
