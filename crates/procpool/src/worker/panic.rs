//! The panic hook of a worker process: where a task panicked reaches the
//! parent in `TaskError::Panicked`. Takes no lock (a thread-local).

use std::cell::{Cell, RefCell};

thread_local! {
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
    /// A location may be in `PANIC_LOCATION`. A plain `Copy` cell: reading
    /// it costs no destructor-registration check, so clearing before each
    /// input of a chunk is one load when nothing panicked (issue 14's
    /// profile: the `RefCell<Option<String>>` access was ~1 % of samples).
    static SET: Cell<bool> = const { Cell::new(false) };
}

#[inline]
pub(crate) fn clear_panic_location() {
    if SET.get() {
        SET.set(false);
        PANIC_LOCATION.with(|l| l.borrow_mut().take());
    }
}

pub(crate) fn take_panic_location() -> Option<String> {
    SET.set(false);
    PANIC_LOCATION.with(|l| l.borrow_mut().take())
}

/// Records where a panic happened (the parent gets it in
/// `TaskError::Panicked`) and prints one line to stderr, which the pool
/// forwards with the worker's id.
pub(super) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|loc| loc.to_string());
        let message = procpool_wire::codec::panic_message(info.payload());
        eprintln!(
            "panicked at {}: {message}",
            location.as_deref().unwrap_or("<unknown location>")
        );
        PANIC_LOCATION.with(|l| *l.borrow_mut() = location);
        SET.set(true);
    }));
}
