//! The adaptive look at a reply ring before its reader parks: the pool's
//! reader of each local worker and a TCP worker's keeper use it.

use std::time::{Duration, Instant};

use super::Reader;

/// The adaptive look at a reply ring before parking (see
/// `ProcessPoolBuilder::ring_spin`).
pub(crate) struct Spin {
    limit: Duration,
    /// The last look found something, or a wake-up came soon after the
    /// last park: looking pays.
    pays: bool,
    parked_at: Option<Instant>,
}

impl Spin {
    pub(crate) fn new(limit: Duration) -> Spin {
        Spin {
            limit,
            pays: !limit.is_zero(),
            parked_at: None,
        }
    }

    /// Looks at the ring until it has data (`true`) or the time is up.
    pub(crate) fn look(&mut self, r: &Reader) -> bool {
        if !self.pays {
            return false;
        }
        let until = crate::deadline::after(self.limit);
        let mut look = 0u32;
        loop {
            look = look.wrapping_add(1);
            if r.has_data() {
                return true;
            }
            // The clock every few looks: a read of it costs more than a look.
            if look.is_multiple_of(8) && crate::deadline::passed(until) {
                self.pays = false;
                return false;
            }
            std::thread::yield_now();
        }
    }

    pub(crate) fn parked(&mut self) {
        if !self.limit.is_zero() {
            self.parked_at = Some(Instant::now());
        }
    }

    /// Back from the socket: had the wait been short, looking would have
    /// caught it.
    pub(crate) fn woken(&mut self) {
        if let Some(t) = self.parked_at.take() {
            self.pays = t.elapsed() < self.limit;
        }
    }
}
