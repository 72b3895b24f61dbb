//! The one way procpool takes a `Mutex`: a poisoned lock (a thread panicked
//! holding it) is taken anyway. Every lock in procpool guards state that
//! stays consistent across a panic (each critical section either finishes
//! its update or leaves the old value), and the pool's panic guard fails
//! every future when one of its threads panics; refusing the lock would
//! only turn one bug into a hang.

//!
//! Both helpers take std's `Mutex` and, in the model-checking build
//! (`cfg(procpool_loom)`, see `sync.rs`), loom's: the [`Lock`] trait.

use std::sync::TryLockError;
use std::task::Context;

/// A mutex these helpers can take: std's (and loom's under
/// `cfg(procpool_loom)`).
pub(crate) trait Lock {
    /// What holding it gives.
    type Guard<'a>
    where
        Self: 'a;
    /// Locks, ignoring poison.
    fn lock_anyway(&self) -> Self::Guard<'_>;
    /// The lock if it is free now (poison ignored); `None` if it is held.
    fn try_lock_anyway(&self) -> Option<Self::Guard<'_>>;
}

impl<T> Lock for std::sync::Mutex<T> {
    type Guard<'a>
        = std::sync::MutexGuard<'a, T>
    where
        T: 'a;
    #[inline]
    fn lock_anyway(&self) -> Self::Guard<'_> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn try_lock_anyway(&self) -> Option<Self::Guard<'_>> {
        match self.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

#[cfg(procpool_loom)]
impl<T> Lock for loom::sync::Mutex<T> {
    type Guard<'a>
        = loom::sync::MutexGuard<'a, T>
    where
        T: 'a;
    fn lock_anyway(&self) -> Self::Guard<'_> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn try_lock_anyway(&self) -> Option<Self::Guard<'_>> {
        match self.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

/// A shared mutex locks like the mutex (generic bounds do not see
/// through `Arc` as a method call would).
impl<M: Lock> Lock for std::sync::Arc<M> {
    type Guard<'a>
        = M::Guard<'a>
    where
        M: 'a;
    fn lock_anyway(&self) -> Self::Guard<'_> {
        (**self).lock_anyway()
    }
    fn try_lock_anyway(&self) -> Option<Self::Guard<'_>> {
        (**self).try_lock_anyway()
    }
}

/// Locks `m`, ignoring poison.
#[inline]
pub(crate) fn lock<M: Lock>(m: &M) -> M::Guard<'_> {
    m.lock_anyway()
}

/// For `poll` functions, which must never wait for another thread: the
/// lock if it is free now (poison ignored); if another thread holds it,
/// `None`, after waking the task so that it is polled again soon. The
/// holders keep these locks for a few instructions, but on a busy machine
/// a holder can be preempted for a whole scheduling period, and a
/// runtime's thread must not sleep that long.
pub(crate) fn try_lock_or_wake<'a, M: Lock>(m: &'a M, cx: &Context<'_>) -> Option<M::Guard<'a>> {
    let g = m.try_lock_anyway();
    if g.is_none() {
        cx.waker().wake_by_ref();
    }
    g
}
