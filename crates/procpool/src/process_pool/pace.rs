//! How deep a worker may be fed a `map`'s short work
//! (`ProcessPoolBuilder::prefetch_time`, issue 14): what an input of its
//! last chunks of a task took ([`Pace`], kept per worker slot in `state`),
//! and how many chunks fit in the time ([`depth`]). Pure functions, used by
//! `WorkerSlot::limit` under the pool lock.

use std::time::Duration;

/// What an input of a worker's last `map` chunks (or chunksize-1 inputs)
/// of one task took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pace {
    /// The task's fingerprint (its name and types).
    pub fingerprint: u64,
    /// Nanoseconds per input: a slower chunk raises it at once, a faster
    /// one lowers it by a quarter of the difference.
    pub input_ns: u64,
}

impl Pace {
    /// A chunk of `items` inputs of task `fingerprint` ran `took_ns`.
    pub(crate) fn observe(pace: &mut Option<Pace>, fingerprint: u64, took_ns: u64, items: u32) {
        // Notes read in one run share one clock read: at least 1 ns.
        let per = (took_ns / u64::from(items.max(1))).max(1);
        let input_ns = match *pace {
            Some(p) if p.fingerprint == fingerprint && per < p.input_ns => {
                p.input_ns - (p.input_ns - per) / 4
            }
            _ => per,
        };
        *pace = Some(Pace {
            fingerprint,
            input_ns,
        });
    }
}

/// How many of a `map`'s chunks (or chunksize-1 inputs) a worker may hold
/// (`ProcessPoolBuilder::prefetch_time`): as many as fit in `time` at
/// `chunk_ns` each, at least `prefetch` and at most 4 × `prefetch`;
/// `prefetch` once the one it runs has run `time`.
pub(crate) fn depth(
    prefetch: usize,
    time: Duration,
    chunk_ns: u64,
    running_for: Option<Duration>,
) -> usize {
    if time.is_zero() || running_for.is_some_and(|r| r >= time) {
        return prefetch;
    }
    let fit = time.as_nanos() / u128::from(chunk_ns.max(1));
    let most = prefetch.saturating_mul(4);
    usize::try_from(fit).unwrap_or(most).clamp(prefetch, most)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn short_chunks_fill_the_time_between_prefetch_and_four_times_it() {
        // 500 µs at 50 µs a chunk: 10, within 4..=16.
        assert_eq!(depth(4, MS / 2, 50_000, None), 10);
        assert_eq!(depth(4, MS / 2, 1, None), 16);
        assert_eq!(depth(4, MS / 2, 0, None), 16);
        // Long chunks: prefetch.
        assert_eq!(depth(4, MS / 2, 2_000_000, None), 4);
        // Off, or the running chunk has run the whole time already.
        assert_eq!(depth(4, Duration::ZERO, 1, None), 4);
        assert_eq!(depth(4, MS / 2, 1, Some(MS / 2)), 4);
        assert_eq!(depth(4, MS / 2, 1, Some(MS / 4)), 16);
        assert_eq!(depth(1, Duration::MAX, 1, None), 4);
    }

    #[test]
    fn a_slower_chunk_counts_at_once_and_a_faster_one_by_a_quarter() {
        let mut pace = None;
        Pace::observe(&mut pace, 7, 8_000, 8);
        assert_eq!(pace.map(|p| p.input_ns), Some(1_000));
        Pace::observe(&mut pace, 7, 800_000, 8);
        assert_eq!(pace.map(|p| p.input_ns), Some(100_000));
        Pace::observe(&mut pace, 7, 0, 8);
        assert_eq!(pace.map(|p| p.input_ns), Some(75_001));
        // Another task starts afresh.
        Pace::observe(&mut pace, 9, 80, 8);
        assert_eq!(
            pace,
            Some(Pace {
                fingerprint: 9,
                input_ns: 10
            })
        );
    }
}
