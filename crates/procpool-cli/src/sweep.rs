//! The `map(Square)` chunksize sweep of `procpool overhead`: throughput by
//! chunk size (and with none set: auto chunking) on the thread pool, the
//! process pool and, for a pool that is not local, a local one in the same
//! rounds.

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use procpool::{Executor, ProcessPool, ThreadPool};
use procpool_tasks::Square;
use serde::Serialize;

use crate::stats::median;

/// Chunk sizes of the `map` sweep; [`AUTO`] last.
pub const CHUNKSIZES: [usize; 5] = [1, 16, 256, 1024, AUTO];
/// The sweep's row for a `map` given no chunksize (auto chunking).
pub const AUTO: usize = 0;

/// Throughput of `map(Square).chunksize(c)`, or of `map(Square)` with no
/// chunksize (auto chunking).
#[derive(Debug, Clone, Serialize)]
pub struct ChunkRow {
    /// The chunk size; [`AUTO`] (0): none set, the map picks.
    pub chunksize: usize,
    /// On the thread pool.
    pub thread: Throughput,
    /// On the process pool.
    pub process: Throughput,
    /// Process tasks/s over thread tasks/s: the median of the rounds'
    /// own ratios (each round's rows ran back to back).
    pub process_vs_thread: f64,
    /// When the process pool is not local (`--transport tcp`, `--srun`):
    /// a local process pool of as many spawned workers, its rows taking
    /// turns with the others in the same run.
    pub local: Option<Throughput>,
    /// The process pool's tasks/s over the local pool's (with `local`):
    /// the median of the rounds' own ratios.
    pub process_vs_local: Option<f64>,
}

/// Tasks finished in a time.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Tasks finished.
    pub tasks: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// Tasks per second.
    pub tasks_per_sec: f64,
}

/// Rounds of the chunksize sweep (the rows take turns; each keeps its
/// median round, each ratio the median of the rounds' own). Five short
/// rounds rather than three long ones: the two rows of a pair run closer
/// together, and a median of five outvotes two rounds a spell of the
/// host's slowed (at 3 × 600 ms, a full report's TCP share at chunksize
/// 256 ranged 0.51–0.59 over six runs; see the CHANGELOG).
pub const CHUNK_ROUNDS: usize = 5;

/// The round with the median rate.
fn median_round(mut rounds: Vec<Throughput>) -> Throughput {
    rounds.sort_by(|a, b| a.tasks_per_sec.total_cmp(&b.tasks_per_sec));
    rounds.swap_remove(rounds.len() / 2)
}

fn chunk_budget(quick: bool) -> Duration {
    if quick {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(400)
    }
}

/// `c` as the sweep's label: the number, or `auto`.
pub fn chunk_label(c: usize) -> String {
    if c == AUTO {
        "auto".to_owned()
    } else {
        c.to_string()
    }
}

/// Runs `map(Square)` until `budget` has passed (with `.chunksize(c)`, or
/// none for [`AUTO`]); counts what came back.
pub fn throughput<E: Executor>(
    pool: &E,
    chunksize: usize,
    budget: Duration,
) -> Result<Throughput, String> {
    let start = Instant::now();
    let deadline = start + budget;
    // Reading the clock every 64 inputs keeps it out of the way.
    let inputs = (0u64..)
        .take_while(move |i| i % 64 != 0 || Instant::now() < deadline)
        .map(Square);
    let mut tasks = 0u64;
    let map = pool.map(inputs);
    let map = if chunksize == AUTO {
        map
    } else {
        map.chunksize(chunksize)
    };
    for r in map {
        let v = r.map_err(|e| e.to_string())?;
        if v != tasks.wrapping_mul(tasks) {
            return Err(format!("square({tasks}) came back as {v}"));
        }
        tasks += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Throughput {
        tasks,
        seconds,
        tasks_per_sec: tasks as f64 / seconds.max(1e-9),
    })
}

/// The sweep: every chunk size on `threads`, `procs` and (if given) `local`,
/// the rows taking turns; one step of `bar` per row and round.
pub fn run(
    threads: &ThreadPool,
    procs: &ProcessPool,
    local: Option<&ProcessPool>,
    quick: bool,
    bar: &ProgressBar,
) -> Result<Vec<ChunkRow>, String> {
    // The sweep's rows take turns, CHUNK_ROUNDS times, and each keeps its
    // median round: on a shared machine a busy spell then hits every row
    // alike instead of one row's only run.
    let mut rounds: Vec<[Vec<Throughput>; 3]> = vec![Default::default(); CHUNKSIZES.len()];
    for round in 0..CHUNK_ROUNDS {
        for (i, &c) in CHUNKSIZES.iter().enumerate() {
            let c_label = chunk_label(c);
            bar.set_message(format!(
                "map(Square) chunksize {c_label} on the thread pool (round {})",
                round + 1
            ));
            rounds[i][0].push(throughput(threads, c, chunk_budget(quick))?);
            bar.inc(1);
            bar.set_message(format!(
                "map(Square) chunksize {c_label} on the process pool (round {})",
                round + 1
            ));
            rounds[i][1].push(throughput(procs, c, chunk_budget(quick))?);
            bar.inc(1);
            if let Some(local) = local {
                bar.set_message(format!(
                    "map(Square) chunksize {c_label} on the local process pool (round {})",
                    round + 1
                ));
                rounds[i][2].push(throughput(local, c, chunk_budget(quick))?);
                bar.inc(1);
            }
        }
    }
    let mut rows = Vec::new();
    for (&c, [thread, process, on_local]) in CHUNKSIZES.iter().zip(rounds) {
        let process_vs_thread = median_ratio(&process, &thread);
        // Only a pool that is not local has a local one beside it.
        let (local, process_vs_local) = if on_local.is_empty() {
            (None, None)
        } else {
            let share = median_ratio(&process, &on_local);
            (Some(median_round(on_local)), Some(share))
        };
        rows.push(ChunkRow {
            chunksize: c,
            process_vs_thread,
            process_vs_local,
            local,
            thread: median_round(thread),
            process: median_round(process),
        });
    }
    Ok(rows)
}

/// The median over the rounds of `a`'s rate over `b`'s in the same round.
/// A pair's rows ran back to back, seconds apart, so a spell of the host's
/// that slows one round falls on both sides of its ratio; the ratio of the
/// two medians would pair a slow round of one side with an ordinary one
/// of the other.
fn median_ratio(a: &[Throughput], b: &[Throughput]) -> f64 {
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(a, b)| a.tasks_per_sec / b.tasks_per_sec.max(1e-9))
        .collect();
    median(&ratios).unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_is_timed_and_checked_and_the_median_round_kept() {
        let pool = ThreadPool::builder().workers(1).build().unwrap();
        for c in [16, AUTO] {
            let t = throughput(&pool, c, Duration::from_millis(20)).unwrap();
            assert!(t.tasks > 0 && t.tasks_per_sec > 0.0, "{t:?}");
        }
        let at = |r: f64| Throughput {
            tasks: 1,
            seconds: 1.0,
            tasks_per_sec: r,
        };
        let kept = median_round(vec![at(5.0), at(1.0), at(9.0)]);
        assert_eq!(kept.tasks_per_sec, 5.0);
        // Round by round: 6/10, 3/4 (a slow spell on both), 5/10. The
        // ratio of the medians would say 5/10.
        let a = [at(6.0), at(3.0), at(5.0)];
        let b = [at(10.0), at(4.0), at(10.0)];
        assert_eq!(median_ratio(&a, &b), 0.6);
        assert_eq!(chunk_label(AUTO), "auto");
        assert_eq!(chunk_label(256), "256");
    }
}
