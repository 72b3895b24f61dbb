//! The one way procpool takes a `Mutex`: a poisoned lock (a thread panicked
//! holding it) is taken anyway. Every lock in procpool guards state that
//! stays consistent across a panic (each critical section either finishes
//! its update or leaves the old value), and the pool's panic guard fails
//! every future when one of its threads panics; refusing the lock would
//! only turn one bug into a hang.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poison.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
