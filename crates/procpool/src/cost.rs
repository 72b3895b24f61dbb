//! What a task cost, part by part: the "pickling cost" made visible.
//!
//! Each side measures its own parts with a monotonic clock; only durations
//! cross the wire. `ipc` is what the round trip took beyond the measured
//! parts: socket writes and reads, wake-ups, and the parent's bookkeeping.

use std::sync::Mutex;
use std::time::Duration;

/// Where one task's time and bytes went.
///
/// ```
/// use procpool::{Executor, ThreadPool};
/// use procpool_tasks::Square;
///
/// let pool = ThreadPool::builder().workers(1).build().unwrap();
/// let f = pool.submit(Square(3)).unwrap();
/// f.wait();
/// let cost = f.cost().unwrap();
/// // A thread pool serializes nothing; a process pool fills every field.
/// assert_eq!(cost.serialization(), std::time::Duration::ZERO);
/// assert!(cost.total >= cost.run);
/// assert_eq!(pool.stats().completed, 1);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Parent: serializing the input.
    pub encode_input: Duration,
    /// Input bytes sent (payload only: the encoded input, with its bulk
    /// byte strings, which follow its frame to a local worker).
    pub bytes_out: u64,
    /// Waiting for a worker: in the parent's queue and the worker's.
    pub queue_wait: Duration,
    /// Worker: deserializing the input.
    pub decode_input: Duration,
    /// Worker (or thread): running the task.
    pub run: Duration,
    /// Worker: serializing the output.
    pub encode_output: Duration,
    /// Output bytes sent back (payload only, bulk byte strings included).
    pub bytes_back: u64,
    /// Parent: deserializing the output.
    pub decode_output: Duration,
    /// The rest of the round trip: sockets, wake-ups, bookkeeping.
    pub ipc: Duration,
    /// From `submit` to the result being available.
    pub total: Duration,
}

impl Cost {
    /// Time spent serializing and deserializing, both ways.
    pub fn serialization(&self) -> Duration {
        self.encode_input + self.decode_input + self.encode_output + self.decode_output
    }

    /// Everything but running the task and waiting for a worker.
    pub fn overhead(&self) -> Duration {
        self.serialization() + self.ipc
    }

    /// Sets `ipc` to what `total` leaves after the measured parts.
    pub(crate) fn with_remainder(mut self) -> Cost {
        let parts = self.serialization() + self.queue_wait + self.run;
        self.ipc = self.total.saturating_sub(parts);
        self
    }

    fn add(&mut self, other: &Cost) {
        self.encode_input += other.encode_input;
        self.bytes_out += other.bytes_out;
        self.queue_wait += other.queue_wait;
        self.decode_input += other.decode_input;
        self.run += other.run;
        self.encode_output += other.encode_output;
        self.bytes_back += other.bytes_back;
        self.decode_output += other.decode_output;
        self.ipc += other.ipc;
        self.total += other.total;
    }
}

/// One input of a packed chunk's cost, in whole nanoseconds: what its
/// reader builds per input. [`Cost`]'s `Duration`s normalize on every add;
/// integers do not, and a packed chunk's inputs are too cheap to pay for
/// that (nanoseconds are all a `Duration` from the worker carries anyway).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ItemCost {
    pub(crate) encode_input: u64,
    pub(crate) bytes_out: u64,
    pub(crate) queue_wait: u64,
    pub(crate) decode_input: u64,
    pub(crate) run: u64,
    pub(crate) encode_output: u64,
    pub(crate) bytes_back: u64,
    pub(crate) decode_output: u64,
    pub(crate) total: u64,
}

impl ItemCost {
    /// [`Cost::serialization`].
    fn serialization(&self) -> u64 {
        self.encode_input
            .saturating_add(self.decode_input)
            .saturating_add(self.encode_output)
            .saturating_add(self.decode_output)
    }

    /// [`Cost::with_remainder`]'s `ipc`.
    fn ipc(&self) -> u64 {
        let parts = self
            .serialization()
            .saturating_add(self.queue_wait)
            .saturating_add(self.run);
        self.total.saturating_sub(parts)
    }

    /// Its work (run plus serialization both ways) and its payload bytes
    /// both ways: what auto chunking samples.
    pub(crate) fn sample(&self) -> (u64, u64) {
        (
            self.run.saturating_add(self.serialization()),
            self.bytes_out.saturating_add(self.bytes_back),
        )
    }

    /// As a [`Cost`] (with its remainder).
    #[cfg(test)]
    pub(crate) fn to_cost(self) -> Cost {
        let d = Duration::from_nanos;
        Cost {
            encode_input: d(self.encode_input),
            bytes_out: self.bytes_out,
            queue_wait: d(self.queue_wait),
            decode_input: d(self.decode_input),
            run: d(self.run),
            encode_output: d(self.encode_output),
            bytes_back: self.bytes_back,
            decode_output: d(self.decode_output),
            ipc: d(self.ipc()),
            total: d(self.total),
        }
    }
}

/// Outcomes of packed chunks' inputs summed on the reader's thread, for
/// the pool's stats under one lock ([`StatsCollector::record_batch`]): the
/// same totals and histograms as [`StatsCollector::record`] of each.
#[derive(Debug, Default)]
pub(crate) struct CostBatch {
    failed: u64,
    /// Sums of the completed inputs' costs, field by field in
    /// [`ItemCost`]'s order, then their `ipc`: each capped at `u64::MAX`
    /// (adding saturating, which is the same as summing exactly and then
    /// capping, as [`StatsCollector::record`] of each would).
    sum: [u64; 10],
    /// Per completed input: the histogram buckets of its round trip and of
    /// its overhead.
    buckets: Vec<(u16, u16)>,
}

impl CostBatch {
    /// An input that finished with a value, at `cost`.
    #[inline]
    pub(crate) fn completed(&mut self, c: &ItemCost) {
        let ipc = c.ipc();
        let parts = [
            c.encode_input,
            c.bytes_out,
            c.queue_wait,
            c.decode_input,
            c.run,
            c.encode_output,
            c.bytes_back,
            c.decode_output,
            c.total,
            ipc,
        ];
        for (s, p) in self.sum.iter_mut().zip(parts) {
            *s = s.saturating_add(p);
        }
        let overhead = c.serialization().saturating_add(ipc);
        let b = |ns| bucket_of(ns).min(BUCKETS - 1) as u16;
        self.buckets.push((b(c.total), b(overhead)));
    }

    /// An input that ended in an error.
    pub(crate) fn failed(&mut self) {
        self.failed += 1;
    }

    fn is_empty(&self) -> bool {
        self.failed == 0 && self.buckets.is_empty()
    }

    fn clear(&mut self) {
        self.failed = 0;
        self.sum = [0; 10];
        self.buckets.clear();
    }
}

/// Totals over every task a pool finished, from [`crate::ProcessPool::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Tasks that finished with a value.
    pub completed: u64,
    /// Tasks that ended in an error (cancelled ones included).
    pub failed: u64,
    /// Sum of the costs of completed tasks.
    pub sum: Cost,
    /// Median round trip (submit to result) of completed tasks.
    pub p50_total: Duration,
    /// 99th percentile round trip.
    pub p99_total: Duration,
    /// Median of the pool's own overhead per completed task
    /// ([`Cost::overhead`]: serialization and IPC, not running and not
    /// waiting for a worker).
    pub p50_overhead: Duration,
    /// 99th percentile of the pool's own overhead per task.
    pub p99_overhead: Duration,
    /// Workers started after the first ones (replacements and recycling).
    pub respawns: u64,
}

/// What the pool did and what it cost, with waiting and overhead apart:
///
/// ```text
/// 20000 tasks done, 0 failed, 0 workers replaced
/// per task (mean): run 151.2µs · pool overhead 23.1µs (serialization 2.0µs, IPC 21.1µs) · waiting for a worker 96.4ms
/// pool overhead per task: p50 18.0µs, p99 64.0µs
/// submit to result: p50 100.7ms, p99 180.2ms (includes the waiting)
/// waiting for a worker = queued behind other tasks (in a map: behind the items of its window and chunk); it is not the pool's overhead
/// ```
impl std::fmt::Display for PoolStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.mean();
        writeln!(
            f,
            "{} tasks done, {} failed, {} workers replaced",
            self.completed, self.failed, self.respawns
        )?;
        if self.completed == 0 {
            return Ok(());
        }
        writeln!(
            f,
            "per task (mean): run {:.1?} · pool overhead {:.1?} (serialization {:.1?}, IPC {:.1?}) · \
             waiting for a worker {:.1?}",
            m.run,
            m.overhead(),
            m.serialization(),
            m.ipc,
            m.queue_wait
        )?;
        writeln!(
            f,
            "pool overhead per task: p50 {:.1?}, p99 {:.1?}",
            self.p50_overhead, self.p99_overhead
        )?;
        writeln!(
            f,
            "submit to result: p50 {:.1?}, p99 {:.1?} (includes the waiting)",
            self.p50_total, self.p99_total
        )?;
        write!(
            f,
            "waiting for a worker = queued behind other tasks (in a map: behind the items of its \
             window and chunk); it is not the pool's overhead"
        )
    }
}

impl PoolStats {
    /// Mean cost per completed task.
    pub fn mean(&self) -> Cost {
        let n = self.completed.max(1) as u32;
        let s = &self.sum;
        Cost {
            encode_input: s.encode_input / n,
            bytes_out: s.bytes_out / u64::from(n),
            queue_wait: s.queue_wait / n,
            decode_input: s.decode_input / n,
            run: s.run / n,
            encode_output: s.encode_output / n,
            bytes_back: s.bytes_back / u64::from(n),
            decode_output: s.decode_output / n,
            ipc: s.ipc / n,
            total: s.total / n,
        }
    }
}

/// Log-scale histogram buckets: 8 per power of two of nanoseconds.
const SUB: u32 = 8;
const BUCKETS: usize = 64 * SUB as usize;

fn bucket_of(ns: u64) -> usize {
    if ns < u64::from(SUB) {
        return ns as usize;
    }
    let log = 63 - ns.leading_zeros();
    let frac = ((ns >> (log - 3)) & u64::from(SUB - 1)) as u32;
    ((log - 2) * SUB + frac) as usize
}

fn bucket_floor(b: usize) -> u64 {
    let b = b as u32;
    if b < SUB {
        return u64::from(b);
    }
    let log = b / SUB + 2;
    let frac = u64::from(b % SUB);
    (1u64 << log) | (frac << (log - 3))
}

/// Accumulates costs; shared by a pool's completion paths.
#[derive(Debug)]
pub(crate) struct StatsCollector {
    inner: Mutex<Acc>,
}

#[derive(Debug)]
struct Acc {
    completed: u64,
    failed: u64,
    sum: Cost,
    /// Round trips (`Cost::total`).
    hist: Vec<u64>,
    /// The pool's own overhead per task (`Cost::overhead`).
    hist_overhead: Vec<u64>,
    respawns: u64,
}

impl StatsCollector {
    pub(crate) fn new() -> StatsCollector {
        StatsCollector {
            inner: Mutex::new(Acc {
                completed: 0,
                failed: 0,
                sum: Cost::default(),
                hist: vec![0; BUCKETS],
                hist_overhead: vec![0; BUCKETS],
                respawns: 0,
            }),
        }
    }

    pub(crate) fn record(&self, cost: Option<&Cost>) {
        let mut acc = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Self::add(&mut acc, cost);
    }

    /// Records a batch of outcomes (one lock), emptying it.
    pub(crate) fn record_batch(&self, batch: &mut CostBatch) {
        if batch.is_empty() {
            return;
        }
        let mut acc = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        acc.failed += batch.failed;
        acc.completed += batch.buckets.len() as u64;
        let [
            encode_input,
            bytes_out,
            queue_wait,
            decode_input,
            run,
            encode_output,
            bytes_back,
            decode_output,
            total,
            ipc,
        ] = batch.sum;
        let d = Duration::from_nanos;
        acc.sum.add(&Cost {
            encode_input: d(encode_input),
            bytes_out,
            queue_wait: d(queue_wait),
            decode_input: d(decode_input),
            run: d(run),
            encode_output: d(encode_output),
            bytes_back,
            decode_output: d(decode_output),
            ipc: d(ipc),
            total: d(total),
        });
        for &(total, overhead) in &batch.buckets {
            acc.hist[usize::from(total)] += 1;
            acc.hist_overhead[usize::from(overhead)] += 1;
        }
        drop(acc);
        batch.clear();
    }

    fn add(acc: &mut Acc, cost: Option<&Cost>) {
        match cost {
            Some(c) => {
                acc.completed += 1;
                acc.sum.add(c);
                let b = bucket_of(c.total.as_nanos().min(u128::from(u64::MAX)) as u64);
                acc.hist[b.min(BUCKETS - 1)] += 1;
                let o = c.overhead().as_nanos().min(u128::from(u64::MAX)) as u64;
                acc.hist_overhead[bucket_of(o).min(BUCKETS - 1)] += 1;
            }
            None => acc.failed += 1,
        }
    }

    pub(crate) fn respawned(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .respawns += 1;
    }

    pub(crate) fn snapshot(&self) -> PoolStats {
        let acc = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let quantile = |hist: &[u64], q: f64| -> Duration {
            if acc.completed == 0 {
                return Duration::ZERO;
            }
            let rank = ((acc.completed as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (b, &n) in hist.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Duration::from_nanos(bucket_floor(b));
                }
            }
            Duration::ZERO
        };
        PoolStats {
            completed: acc.completed,
            failed: acc.failed,
            sum: acc.sum,
            p50_total: quantile(&acc.hist, 0.5),
            p99_total: quantile(&acc.hist, 0.99),
            p50_overhead: quantile(&acc.hist_overhead, 0.5),
            p99_overhead: quantile(&acc.hist_overhead, 0.99),
            respawns: acc.respawns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for ns in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1_000,
            46_000,
            1_000_000,
            10u64.pow(12),
        ] {
            let b = bucket_of(ns);
            assert!(b >= last, "bucket of {ns}");
            last = b;
            let floor = bucket_floor(b);
            assert!(floor <= ns, "{floor} > {ns}");
            assert!(ns - floor <= ns / 8 + 1, "{ns} vs floor {floor}");
        }
    }

    #[test]
    fn remainder_and_quantiles() {
        let c = Cost {
            encode_input: Duration::from_micros(1),
            run: Duration::from_micros(10),
            total: Duration::from_micros(20),
            ..Cost::default()
        }
        .with_remainder();
        assert_eq!(c.ipc, Duration::from_micros(9));
        let s = StatsCollector::new();
        for i in 1..=100u64 {
            s.record(Some(&Cost {
                total: Duration::from_micros(i),
                ..Cost::default()
            }));
        }
        s.record(None);
        let snap = s.snapshot();
        assert_eq!((snap.completed, snap.failed), (100, 1));
        assert!(
            snap.p50_total >= Duration::from_micros(44)
                && snap.p50_total <= Duration::from_micros(50)
        );
        assert!(
            snap.p99_total >= Duration::from_micros(88)
                && snap.p99_total <= Duration::from_micros(99)
        );
    }

    #[test]
    fn a_batch_records_what_each_cost_recorded_alone_would() {
        let items: Vec<ItemCost> = (0..50u64)
            .map(|i| ItemCost {
                encode_input: 3 + i,
                bytes_out: 8,
                queue_wait: 1_000 * i,
                decode_input: 40,
                run: 500 + 7 * i,
                encode_output: 30,
                bytes_back: 9 + i,
                decode_output: i % 3,
                // Some below the sum of their parts: `ipc` saturates at 0.
                total: 1_000 * i + 900 + 13 * (i % 5) * i,
            })
            .collect();
        let alone = StatsCollector::new();
        let batched = StatsCollector::new();
        let mut batch = CostBatch::default();
        for (i, c) in items.iter().enumerate() {
            alone.record(Some(&c.to_cost()));
            batch.completed(c);
            if i % 7 == 0 {
                alone.record(None);
                batch.failed();
            }
            if i == 20 {
                batched.record_batch(&mut batch);
                assert!(batch.is_empty());
            }
        }
        batched.record_batch(&mut batch);
        assert_eq!(batched.snapshot(), alone.snapshot());
        let a = alone.inner.lock().unwrap();
        let b = batched.inner.lock().unwrap();
        assert_eq!((&a.hist, &a.hist_overhead), (&b.hist, &b.hist_overhead));
        // Auto chunking's sample: what `observe_cost` takes of a `Cost`.
        let c = items[3];
        let (work, bytes) = c.sample();
        let full = c.to_cost();
        assert_eq!(Duration::from_nanos(work), full.run + full.serialization());
        assert_eq!(bytes, full.bytes_out + full.bytes_back);
    }

    #[test]
    fn stats_keep_waiting_apart_from_the_pools_overhead() {
        let s = StatsCollector::new();
        for _ in 0..10 {
            s.record(Some(
                &Cost {
                    encode_input: Duration::from_micros(2),
                    queue_wait: Duration::from_millis(90),
                    run: Duration::from_micros(150),
                    total: Duration::from_micros(90_000 + 150 + 2 + 20),
                    ..Cost::default()
                }
                .with_remainder(),
            ));
        }
        let snap = s.snapshot();
        // Overhead is serialization + IPC (~22 µs), not the 90 ms of waiting.
        assert!(snap.p50_overhead >= Duration::from_micros(19), "{snap:?}");
        assert!(snap.p50_overhead <= Duration::from_micros(22), "{snap:?}");
        assert!(snap.p50_total >= Duration::from_millis(80), "{snap:?}");
        let text = snap.to_string();
        assert!(text.contains("10 tasks done"), "{text}");
        assert!(text.contains("waiting for a worker 90.0ms"), "{text}");
        assert!(text.contains("pool overhead 22.0µs"), "{text}");
        assert!(text.contains("it is not the pool's overhead"), "{text}");
    }
}
