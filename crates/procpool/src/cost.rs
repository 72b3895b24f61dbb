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
    /// Input bytes sent (payload only).
    pub bytes_out: u64,
    /// Waiting for a worker: in the parent's queue and the worker's.
    pub queue_wait: Duration,
    /// Worker: deserializing the input.
    pub decode_input: Duration,
    /// Worker (or thread): running the task.
    pub run: Duration,
    /// Worker: serializing the output.
    pub encode_output: Duration,
    /// Output bytes sent back (payload only).
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

    /// [`record`](Self::record) for many at once (one lock), emptying
    /// `costs`.
    pub(crate) fn record_many(&self, costs: &mut Vec<Option<Cost>>) {
        if costs.is_empty() {
            return;
        }
        let mut acc = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for c in costs.drain(..) {
            Self::add(&mut acc, c.as_ref());
        }
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
