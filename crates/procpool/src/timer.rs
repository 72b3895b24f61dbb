//! The one timer thread behind the async forms' time limits
//! ([`MapStream::timeout`](crate::MapStream::timeout),
//! [`wait_async`](crate::wait_async), [`AsCompleted`](crate::AsCompleted)
//! as a `Stream`): a deadline that wakes a [`Waker`], with no async runtime.
//!
//! # How it works
//!
//! A [`Sleep`] is a deadline. Polled before it passes, it registers its
//! waker with the process-wide timer: one daemon thread, `procpool-timer`,
//! started at the first registration and never stopped (it sleeps on a
//! condvar while there is nothing to do). The thread keeps a heap of
//! `(deadline, entry)` ordered by deadline, sleeps until the earliest, and
//! wakes every entry whose deadline has passed. The woken task polls its
//! `Sleep` again, which then sees the deadline passed by itself: the thread
//! only wakes, it decides nothing.
//!
//! # Shared state
//!
//! * `Timer::heap` (under `Timer::heap`'s mutex): pushed by `Sleep::poll`
//!   (any thread), popped and swept by the timer thread. The heap holds a
//!   `Weak` of each entry: a dropped `Sleep` costs nothing more than a dead
//!   heap slot, skipped when its deadline comes, and swept when dead slots
//!   could outnumber live ones (`sweep_at` doubles after each sweep, so the
//!   sweeping is amortised O(1) per registration).
//! * `Entry::waker` (its own mutex): written by the `Sleep`'s owner when it
//!   polls, taken by the timer thread when the deadline passes. A waker is
//!   always called outside every lock.
//! * `Timer::wake` (condvar on the heap's mutex): notified when a
//!   registration becomes the earliest deadline.
//!
//! If the thread cannot be started (no threads left), a `Sleep` that has
//! not passed wakes its task at once: a busy wait, never a hang.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};

use crate::lock::{lock, try_lock_or_wake};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// What the timer thread wakes: the waker of the latest poll.
struct Entry {
    waker: Mutex<Option<Waker>>,
}

/// One slot of the heap: the earliest deadline is the greatest.
struct Slot {
    at: Instant,
    entry: Weak<Entry>,
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Slot {}
impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Slot {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at) // reversed: BinaryHeap is a max-heap
    }
}

struct Heap {
    slots: BinaryHeap<Slot>,
    /// Sweep dead slots when the heap reaches this length.
    sweep_at: usize,
}

struct Timer {
    heap: Mutex<Heap>,
    wake: Condvar,
}

const FIRST_SWEEP: usize = 1024;

/// The process-wide timer, started on first use; `None` if its thread
/// could not be started.
fn timer() -> Option<&'static Timer> {
    static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();
    *TIMER.get_or_init(|| {
        let t: &'static Timer = Box::leak(Box::new(Timer {
            heap: Mutex::new(Heap {
                slots: BinaryHeap::new(),
                sweep_at: FIRST_SWEEP,
            }),
            wake: Condvar::new(),
        }));
        match std::thread::Builder::new()
            .name("procpool-timer".into())
            .spawn(move || t.run())
        {
            Ok(_) => Some(t),
            Err(e) => {
                tracing::warn!(
                    target: "procpool::pool",
                    "could not start the timer thread ({e}): async time limits will busy-poll"
                );
                None
            }
        }
    })
}

impl Timer {
    fn register(&self, at: Instant, entry: &Arc<Entry>) {
        let mut h = lock(&self.heap);
        let earliest = h.slots.peek().is_none_or(|s| at < s.at);
        h.slots.push(Slot {
            at,
            entry: Arc::downgrade(entry),
        });
        if h.slots.len() >= h.sweep_at {
            h.slots.retain(|s| s.entry.strong_count() > 0);
            h.sweep_at = (h.slots.len() * 2).max(FIRST_SWEEP);
        }
        drop(h);
        if earliest {
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        let mut due: Vec<Waker> = Vec::new();
        let mut h = lock(&self.heap);
        loop {
            let now = Instant::now();
            while h.slots.peek().is_some_and(|s| s.at <= now) {
                if let Some(slot) = h.slots.pop()
                    && let Some(entry) = slot.entry.upgrade()
                    && let Some(w) = lock(&entry.waker).take()
                {
                    due.push(w);
                }
            }
            if !due.is_empty() {
                drop(h);
                for w in due.drain(..) {
                    w.wake();
                }
                h = lock(&self.heap);
                continue;
            }
            h = match h.slots.peek().map(|s| s.at) {
                None => self.wake.wait(h).unwrap_or_else(|p| p.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(now);
                    self.wake
                        .wait_timeout(h, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

/// A deadline a task can wait for without a runtime: `poll` is `Ready`
/// once `at` has passed, and until then the timer thread wakes the last
/// polling task when it does.
pub(crate) struct Sleep {
    at: Instant,
    entry: Option<Arc<Entry>>,
}

impl Sleep {
    pub(crate) fn until(at: Instant) -> Sleep {
        Sleep { at, entry: None }
    }

    /// `Ready` once the deadline has passed; otherwise the timer will wake
    /// `cx`'s task when it does.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        match &self.entry {
            Some(entry) => {
                let Some(mut w) = try_lock_or_wake(&entry.waker, cx) else {
                    return Poll::Pending;
                };
                match &*w {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
            }
            None => {
                let Some(timer) = timer() else {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                };
                let entry = Arc::new(Entry {
                    waker: Mutex::new(Some(cx.waker().clone())),
                });
                timer.register(self.at, &entry);
                self.entry = Some(entry);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
    use std::task::Wake;
    use std::time::Duration;

    /// Counts its wake-ups and unparks the test thread.
    struct Count {
        woken: AtomicUsize,
        thread: std::thread::Thread,
    }

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.woken.fetch_add(1, AtomicOrdering::SeqCst);
            self.thread.unpark();
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count {
            woken: AtomicUsize::new(0),
            thread: std::thread::current(),
        });
        (c.clone(), Waker::from(c))
    }

    /// Polls `s` (parking between wake-ups) until it is ready.
    fn block_on(s: &mut Sleep, waker: &Waker) {
        let mut cx = Context::from_waker(waker);
        while s.poll(&mut cx).is_pending() {
            std::thread::park_timeout(Duration::from_secs(5));
        }
    }

    #[test]
    fn wakes_at_its_deadline_not_before() {
        let (count, waker) = counter();
        let t = Instant::now();
        let mut s = Sleep::until(t + Duration::from_millis(40));
        block_on(&mut s, &waker);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(40), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(
            count.woken.load(AtomicOrdering::SeqCst) >= 1,
            "the timer woke the task"
        );
    }

    #[test]
    fn earlier_deadline_registered_later_still_wakes_first() {
        let (_, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut late = Sleep::until(Instant::now() + Duration::from_secs(3600));
        assert!(late.poll(&mut cx).is_pending());
        let t = Instant::now();
        let mut soon = Sleep::until(t + Duration::from_millis(20));
        block_on(&mut soon, &waker);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn a_dropped_sleep_is_never_woken_and_is_swept() {
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..(3 * FIRST_SWEEP) {
            let mut s = Sleep::until(Instant::now() + Duration::from_millis(30));
            assert!(s.poll(&mut cx).is_pending());
        }
        let len = lock(&timer().expect("timer thread").heap).slots.len();
        assert!(len < 2 * FIRST_SWEEP + 64, "dead slots were swept: {len}");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            count.woken.load(AtomicOrdering::SeqCst),
            0,
            "no waker of a dropped Sleep is called"
        );
    }

    #[test]
    fn a_passed_deadline_is_ready_at_once() {
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut s = Sleep::until(Instant::now());
        assert!(s.poll(&mut cx).is_ready());
        assert_eq!(count.woken.load(AtomicOrdering::SeqCst), 0);
        assert!(
            crate::deadline::after(Duration::MAX).is_none(),
            "no limit, no panic"
        );
    }
}
