//! Auto chunking: the chunk size of a `map` that was given none
//! (SEMANTICS 25). A pure policy: the map tells it how many inputs it pulls
//! and what some finished items cost; it answers how many inputs the next
//! chunk takes.
//!
//! # The measure
//!
//! Each sampled item's work: `Cost::run` plus its serialization both ways
//! (`Cost::serialization`), as the pool measured it for that item alone, so
//! neither the wait in the window nor the other items of its chunk count.
//! About 8 items of each chunk are sampled. The estimate of an item's work
//! is the upper quartile of the last 16 samples: on a busy machine a few
//! samples in a hundred come back milliseconds long (the measuring thread
//! was preempted, or waited on a lock), and a mean would let one of them
//! cut a chunk of 1024 down to 1; a quartile passes over three of 16 yet
//! follows a change that a quarter of the items show. With the running mean
//! of the items' bytes both ways, it gives the ideal chunk: [`TARGET`] of
//! work and at most [`CHUNK_BYTES`], between 1 and [`MAX_CHUNK`] inputs.
//!
//! # The steps (joblib's `batch_size="auto"`, on a per-item measure)
//!
//! * Start at 1: the first items tell what an item costs.
//! * Grow, at most [`GROWTH`]× a step, toward the ideal; a step only once an
//!   item of a chunk of the current size has been measured (a burst of
//!   cheap first items cannot blow the size up before any evidence from
//!   the size just picked is back). joblib doubles; the measure here is
//!   per item, so it does not depend on the chunk size, and a bigger step
//!   costs less: a step waits for the window of chunks ahead of it, and
//!   with 16× trivial tasks reach 1024 after ~350 items where 4× took ~1800
//!   (with 4×, 7–15 ms into a 20 ms map of 10,000 Squares).
//! * Shrink at once to the ideal when it falls under half the current size
//!   (items got slower). The factor-2 band keeps noise from flipping the
//!   size to and fro.
//!
//! # Why these numbers
//!
//! [`TARGET`] = 2 ms. A chunk on a process pool costs about 10 µs of
//! bookkeeping and messages beyond its items (the chunksize-1 rate of
//! `procpool overhead`), which a 2 ms chunk pays back 200 times over; the
//! tail of a map, where some workers idle while the last chunks run, is at
//! most a couple of chunks (≈ 4 ms); and every task of 2 ms or more goes
//! alone, which puts the ≥ 10 ms tasks of issue 14 one per chunk with room
//! to spare. [`MAX_CHUNK`] = 1024 keeps the inputs pulled ahead bounded
//! (the window is `window` chunks) and is where the chunksize sweep of
//! `procpool overhead` flattens for trivial tasks. [`CHUNK_BYTES`] = 1 MiB
//! keeps big payloads from filling the window with gigabytes.

use std::time::Duration;

/// Work per chunk the policy aims at.
pub(crate) const TARGET: Duration = Duration::from_millis(2);
/// The largest chunk it picks.
pub(crate) const MAX_CHUNK: usize = 1024;
/// Payload bytes (both ways) per chunk it aims to stay under.
pub(crate) const CHUNK_BYTES: f64 = (1 << 20) as f64;
/// The most a chunk grows in one step (1, 16, 256, 1024 for trivial tasks).
pub(crate) const GROWTH: usize = 16;
/// Items sampled per chunk, about (each sample reads the item's cost
/// under its lock; sampling every item of a 1024-chunk would be waste).
const SAMPLES_PER_CHUNK: usize = 8;
/// Samples the estimate looks at (the most recent ones).
const RECENT: usize = 16;
/// Weight of a new sample in the running mean of bytes.
const ALPHA: f64 = 0.25;

/// The running state of one map's auto chunking.
#[derive(Debug, Clone)]
pub(crate) struct AutoChunks {
    size: usize,
    /// Inputs pulled so far: their indices are `0..pulled`.
    pulled: usize,
    /// Index of the first input pulled at `size` (`None`: none yet).
    since: Option<usize>,
    /// The last [`RECENT`] samples' work, in nanoseconds (a ring).
    work_ns: [u64; RECENT],
    /// Samples taken (the ring holds the last `min(taken, RECENT)`).
    taken: usize,
    /// Running mean of payload bytes per item.
    bytes: f64,
}

impl Default for AutoChunks {
    fn default() -> Self {
        AutoChunks {
            size: 1,
            pulled: 0,
            since: None,
            work_ns: [0; RECENT],
            taken: 0,
            bytes: 0.0,
        }
    }
}

impl AutoChunks {
    /// How many inputs the next chunk takes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The map pulled a chunk of `n` inputs (the next `n` indices).
    pub(crate) fn pulled(&mut self, n: usize) {
        if self.since.is_none() {
            self.since = Some(self.pulled);
        }
        self.pulled += n;
    }

    /// Whether the finished item at input `index` should be measured.
    pub(crate) fn wants(&self, index: usize) -> bool {
        index.is_multiple_of((self.size / SAMPLES_PER_CHUNK).max(1))
    }

    /// [`observe`](Self::observe) from the item's cost as the pool measured
    /// it.
    pub(crate) fn observe_cost(&mut self, index: usize, c: &crate::cost::Cost) {
        self.observe(index, c.run + c.serialization(), c.bytes_out + c.bytes_back);
    }

    /// The item at input `index` finished: its work (run plus
    /// serialization) and its payload bytes both ways.
    pub(crate) fn observe(&mut self, index: usize, work: Duration, bytes: u64) {
        self.work_ns[self.taken % RECENT] = crate::stamp::nanos(work);
        let bytes = bytes as f64;
        if self.taken == 0 {
            self.bytes = bytes;
        } else {
            self.bytes += ALPHA * (bytes - self.bytes);
        }
        self.taken += 1;
        let ideal = self.ideal();
        if ideal.saturating_mul(2) <= self.size {
            self.set(ideal);
        } else if ideal > self.size && self.since.is_some_and(|s| index >= s) {
            self.set(ideal.min(self.size.saturating_mul(GROWTH)));
        }
    }

    /// An item's work as the recent samples tell it: their upper quartile.
    /// Robust to a few samples a preemption or a lock wait stretched (of
    /// 16, the 3 largest are passed over); with 4 samples or fewer, the
    /// largest (careful at the start).
    fn work(&self) -> Option<u64> {
        let n = self.taken.min(RECENT);
        if n == 0 {
            return None;
        }
        let mut recent = self.work_ns;
        let recent = &mut recent[..n];
        recent.sort_unstable();
        Some(recent[(3 * n / 4).min(n - 1)])
    }

    /// The chunk size the recent samples ask for.
    fn ideal(&self) -> usize {
        let Some(work) = self.work() else {
            return self.size;
        };
        let by_time = TARGET.as_nanos() as f64 / work.max(1) as f64;
        let by_bytes = CHUNK_BYTES / self.bytes.max(1.0);
        // `as` saturates; both are positive.
        (by_time.min(by_bytes) as usize).clamp(1, MAX_CHUNK)
    }

    fn set(&mut self, size: usize) {
        if size != self.size {
            self.size = size;
            self.since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pulls chunks at the policy's size and reports every item of each
    /// chunk as costing `work` (and `bytes`) once the chunk is "done",
    /// `lag` chunks later (the window): what a map does. Returns the
    /// sizes of the chunks pulled.
    fn drive(
        p: &mut AutoChunks,
        chunks: usize,
        lag: usize,
        item: impl Fn(usize) -> (Duration, u64),
    ) -> Vec<usize> {
        let mut out: Vec<(usize, usize)> = Vec::new(); // (first index, len)
        let mut sizes = Vec::new();
        for _ in 0..chunks {
            let n = p.size();
            out.push((p.pulled, n));
            p.pulled(n);
            sizes.push(n);
            if out.len() > lag {
                let (first, len) = out.remove(0);
                for i in first..first + len {
                    if p.wants(i) {
                        let (w, b) = item(i);
                        p.observe(i, w, b);
                    }
                }
            }
        }
        sizes
    }

    #[test]
    fn tiny_items_grow_by_steps_to_the_cap() {
        let mut p = AutoChunks::default();
        let sizes = drive(&mut p, 200, 4, |_| (Duration::from_nanos(500), 16));
        assert_eq!(sizes[0], 1);
        // Never more than GROWTH× from one chunk to the next.
        for w in sizes.windows(2) {
            assert!(w[1] <= w[0] * GROWTH, "{sizes:?}");
        }
        assert_eq!(p.size(), MAX_CHUNK, "{sizes:?}");
        // 1, 16, 256, 1024: three steps.
        let mut steps = sizes.clone();
        steps.dedup();
        assert_eq!(steps, vec![1, 16, 256, 1024]);
    }

    #[test]
    fn growth_waits_for_a_measure_of_the_current_size() {
        let mut p = AutoChunks::default();
        p.pulled(1); // index 0 at size 1
        p.observe(0, Duration::from_nanos(100), 8);
        assert_eq!(p.size(), GROWTH);
        // More items from before the step (pulled at size 1): no growth.
        p.pulled(GROWTH); // indices 1..=16 at size 16
        p.observe(0, Duration::from_nanos(100), 8);
        assert_eq!(p.size(), GROWTH);
        // An item pulled at size 16 finished: the next step.
        p.observe(1, Duration::from_nanos(100), 8);
        assert_eq!(p.size(), GROWTH * GROWTH);
    }

    #[test]
    fn long_items_stay_one_per_chunk() {
        for ms in [2, 10, 20, 1000] {
            let mut p = AutoChunks::default();
            let sizes = drive(&mut p, 50, 4, |_| (Duration::from_millis(ms), 16));
            assert!(sizes.iter().all(|&s| s == 1), "{ms} ms: {sizes:?}");
        }
    }

    #[test]
    fn medium_items_settle_near_the_target() {
        let mut p = AutoChunks::default();
        drive(&mut p, 100, 4, |_| (Duration::from_micros(150), 16));
        // 2 ms / 150 µs = 13.
        assert_eq!(p.size(), 13);
    }

    #[test]
    fn slower_items_shrink_once_a_quarter_of_the_samples_show_it() {
        let mut p = AutoChunks::default();
        drive(&mut p, 100, 4, |_| (Duration::from_nanos(500), 16));
        assert_eq!(p.size(), MAX_CHUNK);
        // Items now take 20 ms: three samples are passed over, the fourth
        // brings the upper quartile to 20 ms.
        let i = p.pulled;
        p.pulled(MAX_CHUNK);
        for k in 0..3 {
            p.observe(i + k, Duration::from_millis(20), 16);
            assert_eq!(p.size(), MAX_CHUNK);
        }
        p.observe(i + 3, Duration::from_millis(20), 16);
        assert_eq!(p.size(), 1);
    }

    #[test]
    fn a_few_stretched_samples_do_not_shrink_the_chunks() {
        let mut p = AutoChunks::default();
        // One sample in eight is 30 ms long (a preempted measure).
        let calls = std::cell::Cell::new(0u32);
        let sizes = drive(&mut p, 300, 4, |_| {
            calls.set(calls.get() + 1);
            let ns = if calls.get() % 8 == 3 {
                30_000_000
            } else {
                500
            };
            (Duration::from_nanos(ns), 16)
        });
        assert_eq!(p.size(), MAX_CHUNK, "{sizes:?}");
        let after = sizes.iter().position(|&s| s == MAX_CHUNK).unwrap();
        assert!(sizes[after..].iter().all(|&s| s == MAX_CHUNK), "{sizes:?}");
    }

    #[test]
    fn noise_within_the_band_keeps_the_size() {
        let mut p = AutoChunks::default();
        let sizes = drive(&mut p, 400, 4, |i| {
            // 100 µs or 180 µs, alternating: ideal 11..20.
            (
                Duration::from_micros(if i % 2 == 0 { 100 } else { 180 }),
                16,
            )
        });
        let tail = &sizes[200..];
        let (lo, hi) = (tail.iter().min().unwrap(), tail.iter().max().unwrap());
        assert!(*hi <= lo * 2, "{tail:?}");
        assert!((10..=20).contains(lo), "{tail:?}");
    }

    #[test]
    fn big_payloads_cap_the_chunk_by_bytes() {
        let mut p = AutoChunks::default();
        drive(&mut p, 100, 4, |_| (Duration::from_nanos(500), 64 << 10));
        // 1 MiB / 64 KiB = 16.
        assert_eq!(p.size(), 16);
    }

    #[test]
    fn no_samples_keep_the_size() {
        let mut p = AutoChunks::default();
        p.pulled(1);
        p.pulled(1);
        assert_eq!(p.size(), 1);
        assert_eq!(p.ideal(), 1);
    }

    #[test]
    fn samples_about_eight_per_chunk() {
        let mut p = AutoChunks::default();
        assert!((0..10).all(|i| p.wants(i)));
        p.set(1024);
        let n = (0..1024).filter(|&i| p.wants(i)).count();
        assert_eq!(n, 8);
    }
}
