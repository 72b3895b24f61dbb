//! Tasks made by `#[procpool::task]`, collected when the program starts
//! (with `inventory`), so a program needs no hand-kept [`Registry`]:
//! [`Registry::collected`] holds every one linked into it.

use crate::task::{Registry, Task};

/// One task registered by `#[procpool::task]` (generated code builds it;
/// not for use by hand).
#[doc(hidden)]
pub struct Collected {
    add: fn(Registry) -> Registry,
}

impl Collected {
    /// The registration of task `T`.
    pub const fn task<T: Task>() -> Collected {
        Collected {
            add: Registry::task::<T>,
        }
    }
}

inventory::collect!(Collected);

impl Registry {
    /// Every task made with [`#[procpool::task]`](macro@crate::task) in this
    /// program (and the crates it links), ready for
    /// [`worker::run_if_worker`](crate::worker::run_if_worker).
    ///
    /// ```
    /// #[procpool::task]
    /// fn double(x: u64) -> u64 {
    ///     2 * x
    /// }
    ///
    /// fn main() {
    ///     let registry = procpool::Registry::collected();
    ///     assert!(registry.contains(<Double as procpool::Task>::NAME));
    /// }
    /// ```
    ///
    /// Add hand-written tasks with [`task`](Registry::task):
    /// `Registry::collected().task::<MyTask>()`.
    ///
    /// # Panics
    /// If two task types share one `NAME` (the message names both).
    pub fn collected() -> Registry {
        Registry::collected_into(Registry::new())
    }

    /// `registry` plus every collected task (what a worker serves).
    pub(crate) fn collected_into(registry: Registry) -> Registry {
        inventory::iter::<Collected>
            .into_iter()
            .fold(registry, |registry, c| (c.add)(registry))
    }
}
