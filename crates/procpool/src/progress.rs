//! Progress of a `map`: a bar on the terminal (`Map::progress`, behind the
//! default-on `progress` feature, drawn by `indicatif`) and a plain hook
//! for other UIs (`Map::on_progress`). Both count the items the `Map` has
//! yielded, failed ones included; the total is the input's length when its
//! iterator knows it exactly (`size_hint`), else unknown.

use crate::map::Map;
use crate::task::Task;

// `Send`: a `Map` (and a `MapStream` held across an `.await` in a task
// that may move threads) is `Send`.
type Hook<'a> = Box<dyn FnMut(u64, Option<u64>) + Send + 'a>;

/// What a `Map` reports its progress to. Owned by the `Map` (no lock: only
/// the thread iterating it touches it).
#[derive(Default)]
pub(crate) struct Progress<'a> {
    /// Items yielded so far.
    done: u64,
    /// The input's exact length, if known; read once, when the first
    /// reporter is added (before any input is pulled).
    total: Option<Option<u64>>,
    hooks: Vec<Hook<'a>>,
    #[cfg(feature = "progress")]
    bar: Option<indicatif::ProgressBar>,
}

impl Progress<'_> {
    /// Whether anything listens.
    #[inline]
    pub(crate) fn active(&self) -> bool {
        #[cfg(feature = "progress")]
        if self.bar.is_some() {
            return true;
        }
        !self.hooks.is_empty()
    }

    /// One more item was yielded. Inlined: without hooks or a bar (nearly
    /// always) it is a test, not a call per input.
    #[inline]
    pub(crate) fn tick(&mut self) {
        if self.active() {
            self.tell();
        }
    }

    /// [`tick`](Self::tick) with someone listening.
    fn tell(&mut self) {
        self.done += 1;
        let total = self.total.flatten();
        for hook in &mut self.hooks {
            hook(self.done, total);
        }
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// The map ended (or was dropped): leave the bar's last state on
    /// screen.
    pub(crate) fn finish(&mut self) {
        #[cfg(feature = "progress")]
        if let Some(bar) = self.bar.take() {
            bar.finish();
            // Keep the bar's last line; what is printed next starts below.
            if !bar.is_hidden() {
                eprintln!();
            }
        }
    }
}

impl<'a, I> Map<'a, I>
where
    I: Iterator,
    I::Item: Task,
{
    /// Reports one item yielded (`true`) or the map's end (`false`).
    pub(crate) fn tick(&mut self, yielded: bool) {
        if yielded {
            self.progress.tick();
        } else {
            self.progress.finish();
        }
    }

    fn input_total(&mut self) -> Option<u64> {
        if self.progress.total.is_none() {
            let total = match self.input.size_hint() {
                (lo, Some(hi)) if lo == hi => Some(lo as u64),
                _ => None,
            };
            self.progress.total = Some(total);
        }
        self.progress.total.flatten()
    }

    /// Draws a progress bar on stderr while the map runs (nothing when
    /// stderr is not a terminal). An input of known length (a range, a
    /// `Vec`, anything whose `size_hint` is exact) shows a bar with the
    /// count, the rate and an ETA; any other shows the count and the rate.
    /// Needs the `progress` feature (on by default).
    ///
    /// ```no_run
    /// # use procpool::{Executor, ThreadPool};
    /// # use procpool_tasks::Square;
    /// # let pool = ThreadPool::builder().build().unwrap();
    /// let total: u64 = pool.map((0..20_000u64).map(Square)).progress().map(|r| r.unwrap()).sum();
    /// ```
    #[cfg(feature = "progress")]
    pub fn progress(mut self) -> Self {
        use indicatif::{ProgressBar, ProgressStyle};
        let bar = match self.input_total() {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} ({per_sec:0}, ETA {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::no_length().with_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} {spinner} {human_pos} done ({per_sec:0})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        self.progress.bar = Some(bar);
        self
    }

    /// Calls `f(done, total)` each time the map yields an item (failed
    /// ones included): `done` counts the items so far, `total` is the
    /// input's length if its iterator knows it exactly (see
    /// [`Iterator::size_hint`]), else `None`. For UIs other than a
    /// terminal bar; keep it short, it runs on the iterating thread.
    ///
    /// ```
    /// use procpool::{Executor, ThreadPool};
    /// use procpool_tasks::Square;
    ///
    /// let pool = ThreadPool::builder().workers(2).build().unwrap();
    /// let mut seen = Vec::new();
    /// let n = pool
    ///     .map((0..4u64).map(Square))
    ///     .on_progress(|done, total| seen.push((done, total)))
    ///     .count();
    /// assert_eq!(n, 4);
    /// assert_eq!(seen, [(1, Some(4)), (2, Some(4)), (3, Some(4)), (4, Some(4))]);
    /// ```
    pub fn on_progress(mut self, f: impl FnMut(u64, Option<u64>) + Send + 'a) -> Self {
        self.input_total();
        self.progress.hooks.push(Box::new(f));
        self
    }
}
