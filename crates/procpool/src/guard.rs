//! [`PoolGuard`]: Python's `async with pool:` — a pool owned by async code
//! that is shut down when the scope ends, without blocking the runtime.
//!
//! A pool's own `Drop` is `shutdown(Shutdown::Wait)`: it blocks the thread
//! that drops it until the queued work is done, which inside a runtime
//! stalls every task of that thread. The guard's `Drop` hands the pool to a
//! thread of its own (`procpool-shutdown`) and returns at once; the normal
//! end of the scope is [`PoolGuard::close`], which awaits the shutdown.

use std::ops::Deref;

use crate::offload::OffThread;
use crate::{Executor, Shutdown};

/// Owns a pool inside async code and shuts it down when dropped, on a
/// thread of its own, so that leaving the scope by any road (`?`, a panic,
/// a `select!` or a timeout that drops the task) never blocks the runtime.
/// It dereferences to the pool.
///
/// The end of the scope you write is [`close`](Self::close): it shuts the
/// pool down (in the mode you choose) and resolves when the pool is down.
/// A guard dropped without `close` shuts down with [`Shutdown::Wait`] (what
/// the pool's `Drop` does) in the background: queued work still completes
/// and futures held elsewhere still get their values, but nobody awaits it.
///
/// ```
/// use procpool::{Executor, PoolGuard, Shutdown, ThreadPool};
/// use procpool_tasks::Square;
///
/// # futures_executor::block_on(async {
/// // async with ThreadPoolExecutor() as pool:
/// let pool = PoolGuard::new(ThreadPool::builder().workers(2).build_async().await?);
/// let nine = pool.submit(Square(3))?.await?;
/// assert_eq!(nine, 9);
/// pool.close(Shutdown::Wait).await; // the end of the `async with` block
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct PoolGuard<P: Executor + Send + 'static> {
    /// `None` once closed or taken back.
    pool: Option<P>,
}

impl<P: Executor + Send + 'static + std::fmt::Debug> std::fmt::Debug for PoolGuard<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PoolGuard").field(&self.pool).finish()
    }
}

impl<P: Executor + Send + 'static> PoolGuard<P> {
    /// Guards `pool`.
    pub fn new(pool: P) -> Self {
        PoolGuard { pool: Some(pool) }
    }

    /// Shuts the pool down in mode `how` on a thread of its own; the future
    /// resolves when the pool is down (then the pool is dropped there).
    pub fn close(mut self, how: Shutdown) -> OffThread<()> {
        let pool = self.pool.take();
        OffThread::spawn("procpool-shutdown", move || {
            if let Some(pool) = pool {
                pool.shutdown(how);
            }
        })
    }

    /// The pool back, unguarded (its `Drop` blocks again).
    pub fn into_inner(mut self) -> P {
        self.pool
            .take()
            .expect("a PoolGuard holds its pool until closed or dropped")
    }
}

impl<P: Executor + Send + 'static> Deref for PoolGuard<P> {
    type Target = P;

    fn deref(&self) -> &P {
        self.pool
            .as_ref()
            .expect("a PoolGuard holds its pool until closed or dropped")
    }
}

impl<P: Executor + Send + 'static> Drop for PoolGuard<P> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            // Detached: the pool's own Drop (shutdown Wait) runs there.
            drop(OffThread::spawn("procpool-shutdown", move || drop(pool)));
        }
    }
}
