//! Measuring the cost of *your* task: [`report`] runs it on a process pool
//! one at a time and in-process (no serialization), and says where the
//! round trip goes — what `procpool overhead` does for built-in tasks.

use std::fmt;
use std::time::{Duration, Instant};

use crate::cost::Cost;
use crate::error::TaskError;
use crate::process_pool::ProcessPool;
use crate::task::{Task, WorkerContext};

/// Medians over the runs of one task type; see [`report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverheadReport {
    /// The task's `NAME`.
    pub name: &'static str,
    /// Runs measured on the pool (and in-process).
    pub runs: usize,
    /// Median cost of one task on the pool, one in flight (each part the
    /// median of its own).
    pub process: Cost,
    /// Median time of `Task::run` called in this process (no
    /// serialization, no worker): the floor.
    pub in_process: Duration,
}

impl OverheadReport {
    /// The pool's round trip over the in-process run (1.0: free).
    pub fn ratio(&self) -> f64 {
        self.process.total.as_secs_f64() / self.in_process.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for OverheadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.process;
        let share = |d: Duration| 100.0 * d.as_secs_f64() / p.total.as_secs_f64().max(1e-12);
        writeln!(
            f,
            "task `{}`: {} runs, one in flight (medians)",
            self.name, self.runs
        )?;
        writeln!(f, "  in-process run     {:>10.1?}", self.in_process)?;
        writeln!(
            f,
            "  process round trip {:>10.1?}  ({:.1} × in-process)",
            p.total,
            self.ratio()
        )?;
        for (what, d) in [
            ("encode input", p.encode_input),
            ("decode input", p.decode_input),
            ("run", p.run),
            ("encode output", p.encode_output),
            ("decode output", p.decode_output),
            ("queue", p.queue_wait),
            ("IPC and the rest", p.ipc),
        ] {
            writeln!(f, "    {what:<16} {d:>10.1?}  {:>5.1} %", share(d))?;
        }
        write!(
            f,
            "  bytes: {} out, {} back; serialization {:.1} % of the round trip",
            p.bytes_out,
            p.bytes_back,
            share(p.serialization())
        )
    }
}

/// Runs `runs` tasks made by `make(i)` on `pool`, one at a time (so no
/// task waits behind another), and the same tasks in this process, then
/// reports where the pool's round trip goes. The first few runs on the
/// pool warm it up and are not counted.
///
/// ```no_run
/// #[procpool::task]
/// fn parse(text: String) -> usize {
///     text.split_whitespace().count()
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     procpool::worker::run_if_worker(procpool::Registry::collected());
///     let pool = procpool::ProcessPool::builder().workers(1).build()?;
///     let r = procpool::overhead::report(&pool, |i| Parse { text: "word ".repeat(i % 100) }, 200)?;
///     println!("{r}");
///     Ok(())
/// }
/// ```
///
/// # Errors
/// The first task that fails (or is refused) ends the measurement.
pub fn report<T: Task>(
    pool: &ProcessPool,
    mut make: impl FnMut(usize) -> T,
    runs: usize,
) -> Result<OverheadReport, TaskError> {
    let runs = runs.max(1);
    let warmup = (runs / 10).clamp(1, 20);
    let mut costs = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let f = pool.submit(make(i)).map_err(|e| e.to_task_error())?;
        f.wait();
        let cost = f.cost();
        f.result()?;
        if i >= warmup
            && let Some(c) = cost
        {
            costs.push(c);
        }
    }
    let mut ctx = WorkerContext::new(0);
    let mut local = Vec::with_capacity(runs);
    for i in 0..runs {
        let task = make(i);
        let t0 = Instant::now();
        let out = task.run(&mut ctx);
        local.push(t0.elapsed());
        drop(out);
    }
    Ok(OverheadReport {
        name: T::NAME,
        runs: costs.len(),
        process: median_cost(&costs),
        in_process: median(local),
    })
}

fn median<D: Ord + Copy + Default>(mut v: Vec<D>) -> D {
    if v.is_empty() {
        return D::default();
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable(mid).1
}

/// Each part's own median.
fn median_cost(costs: &[Cost]) -> Cost {
    let part = |f: fn(&Cost) -> Duration| median(costs.iter().map(f).collect());
    let bytes = |f: fn(&Cost) -> u64| median(costs.iter().map(f).collect());
    Cost {
        encode_input: part(|c| c.encode_input),
        bytes_out: bytes(|c| c.bytes_out),
        queue_wait: part(|c| c.queue_wait),
        decode_input: part(|c| c.decode_input),
        run: part(|c| c.run),
        encode_output: part(|c| c.encode_output),
        bytes_back: bytes(|c| c.bytes_back),
        decode_output: part(|c| c.decode_output),
        ipc: part(|c| c.ipc),
        total: part(|c| c.total),
    }
}
