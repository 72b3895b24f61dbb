//! The one way procpool takes a `Mutex`: a poisoned lock (a thread panicked
//! holding it) is taken anyway. Every lock in procpool guards state that
//! stays consistent across a panic (each critical section either finishes
//! its update or leaves the old value), and the pool's panic guard fails
//! every future when one of its threads panics; refusing the lock would
//! only turn one bug into a hang.

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::task::Context;

/// Locks `m`, ignoring poison.
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// For `poll` functions, which must never wait for another thread: the
/// lock if it is free now (poison ignored); if another thread holds it,
/// `None`, after waking the task so that it is polled again soon. The
/// holders keep these locks for a few instructions, but on a busy machine
/// a holder can be preempted for a whole scheduling period, and a
/// runtime's thread must not sleep that long.
pub(crate) fn try_lock_or_wake<'a, T>(
    m: &'a Mutex<T>,
    cx: &Context<'_>,
) -> Option<MutexGuard<'a, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => {
            cx.waker().wake_by_ref();
            None
        }
    }
}
