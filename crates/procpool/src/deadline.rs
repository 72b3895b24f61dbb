//! Durations the user gives, turned into deadlines: `Duration::MAX` (or any
//! duration too large to add to `Instant::now()`) means "no limit" and
//! never panics (SEMANTICS point 29). Every `now + d` in the crate goes
//! through here.

use std::time::{Duration, Instant};

/// `now + d`, or `None` ("no deadline") when that does not fit an
/// `Instant`.
pub(crate) fn after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// `start + d`, or `None` ("no deadline") when that does not fit.
pub(crate) fn from(start: Instant, d: Duration) -> Option<Instant> {
    start.checked_add(d)
}

/// The time left until `deadline` (`None`: no limit), zero once it passed.
pub(crate) fn left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Whether `deadline` has passed (never, for no deadline).
pub(crate) fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_mean_no_deadline() {
        assert_eq!(after(Duration::MAX), None);
        assert_eq!(from(Instant::now(), Duration::MAX), None);
        assert!(!passed(None));
        assert_eq!(left(None), None);
        let soon = after(Duration::from_millis(1));
        assert!(soon.is_some());
        std::thread::sleep(Duration::from_millis(2));
        assert!(passed(soon));
        assert_eq!(left(soon), Some(Duration::ZERO));
    }
}
