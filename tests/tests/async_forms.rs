//! The async forms never block a runtime: `MapStream` (`async for` over a
//! lazy chunked map), `wait_async`, `shutdown_async`, `build_async` and
//! `PoolGuard` ("async with"). A ticker task on the same thread of a tokio
//! current-thread runtime (one thread: the strictest case) records its
//! worst gap between ticks while each of them works; the same with
//! `futures_executor::block_on` (no tokio at all). Each test also runs the
//! blocking form in the same harness and checks that the ticker sees it:
//! the measurement can fail.
//!
//! Then the contract of the stream forms on both pools (SEMANTICS 8–15,
//! 25): one `Result` per input in order or as completed, lazy and bounded,
//! a dropped stream cancels what has not started, `timeout`, after
//! shutdown, inputs from an async `Stream`; `wait_async` in every mode;
//! `as_completed`'s `Stream` honouring its timeout.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use procpool::{
    Executor, MapStream, OffThread, PoolGuard, ProcessPool, ReturnWhen, Shutdown, Stream,
    TaskError, TaskFuture, ThreadPool, WaitFuture, as_completed, wait, wait_async,
};
use procpool_e2e::{both_pools, still_works, thread_pool, wait_gone, watchdog};
use procpool_tasks::{Checked, Sleep, Spin, Square, drill, spin};

const LIMIT: Duration = Duration::from_secs(90);

/// The ticker's period.
const PERIOD: Duration = Duration::from_millis(5);
/// The worst gap between ticks (net of CPU wait, see [`Gaps`]) an async
/// form may cause: a tenth of what each blocking form causes in the same
/// harness. Measured in a release build the gaps stay within a few
/// periods; this bound leaves room for the debug build the suite runs in
/// (where sending one chunk of 256 inputs takes ~15 ms, and tokio looks at
/// its timers once per 61 task polls) on a machine shared with other
/// builds.
const MAX_GAP: Duration = Duration::from_millis(100);
/// What the blocking form of each test must cause (each blocks ≥ 1.2 s).
const BLOCKED: Duration = Duration::from_secs(1);

fn process_pool(n: usize) -> ProcessPool {
    procpool_e2e::process_pool_of(procpool_e2e::test_worker!(), n)
}

/// The ticker tests measure time: one at a time in this binary.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------
// The ticker
// ---------------------------------------------------------------------------

/// What the ticker saw while a body ran.
///
/// `worst` is the longest time between two ticks (or from the last tick to
/// the body's end). `worst_net` is the longest such gap minus the time the
/// runtime's thread spent waiting for a CPU in it: on a loaded machine
/// (this one has two cores shared by several builds and test runs) the
/// kernel can keep a runnable thread off the CPU for a hundred
/// milliseconds, which no library can cause or prevent. What remains is
/// the time the thread was busy or blocked, which is what blocking the
/// runtime means: a blocking call shows in full (a thread asleep in a
/// syscall waits for no CPU), and the blocking forms below show it.
#[derive(Debug, Clone, Copy)]
struct Gaps {
    worst: Duration,
    worst_net: Duration,
    ticks: u64,
    elapsed: Duration,
}

struct ProbeState {
    started: Instant,
    last: Instant,
    /// This thread's total wait for a CPU at the last tick.
    last_wait: Duration,
    worst: Duration,
    worst_net: Duration,
    ticks: u64,
    stopped: bool,
}

/// How long this thread has waited, runnable, for a CPU (the kernel's
/// `run_delay`, `/proc/thread-self/schedstat`); zero where unknown, which
/// only makes the net gaps stricter.
fn cpu_wait() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Shared by the ticker and the body on one thread.
#[derive(Clone)]
struct Probe(Rc<RefCell<ProbeState>>);

impl Probe {
    fn new() -> Probe {
        let now = Instant::now();
        Probe(Rc::new(RefCell::new(ProbeState {
            started: now,
            last: now,
            last_wait: cpu_wait(),
            worst: Duration::ZERO,
            worst_net: Duration::ZERO,
            ticks: 0,
            stopped: false,
        })))
    }

    /// Starts measuring now.
    fn start(&self) {
        let mut s = self.0.borrow_mut();
        let now = Instant::now();
        (s.started, s.last, s.last_wait) = (now, now, cpu_wait());
        (s.worst, s.worst_net, s.ticks) = (Duration::ZERO, Duration::ZERO, 0);
    }

    /// Ends a gap now; `excused` is a part of it this thread had no part
    /// in (a timer thread's own lateness).
    fn gap(s: &mut ProbeState, excused: Duration) {
        let (now, wait) = (Instant::now(), cpu_wait());
        let gap = now - s.last;
        s.worst = s.worst.max(gap);
        let not_ours = wait.saturating_sub(s.last_wait) + excused;
        s.worst_net = s.worst_net.max(gap.saturating_sub(not_ours));
        (s.last, s.last_wait) = (now, wait);
    }

    fn tick(&self) {
        self.tick_excusing(Duration::ZERO);
    }

    fn tick_excusing(&self, excused: Duration) {
        let mut s = self.0.borrow_mut();
        if s.stopped {
            return;
        }
        Probe::gap(&mut s, excused);
        s.ticks += 1;
    }

    /// Stops measuring; the time since the last tick counts as a gap too
    /// (a body that blocks at its very end is seen).
    fn stop(&self) -> Gaps {
        let mut s = self.0.borrow_mut();
        Probe::gap(&mut s, Duration::ZERO);
        s.stopped = true;
        Gaps {
            worst: s.worst,
            worst_net: s.worst_net,
            ticks: s.ticks,
            elapsed: Instant::now() - s.started,
        }
    }

    fn stopped(&self) -> bool {
        self.0.borrow().stopped
    }
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// Runs `body` on a one-thread tokio runtime while a ticker task ticks
/// every `PERIOD` on that same thread; returns the body's output and what
/// the ticker saw while the body ran.
fn on_tokio<F, Fut>(body: F) -> (Fut::Output, Gaps)
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let rt = current_thread_runtime();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let probe = Probe::new();
        let ticker = {
            let probe = probe.clone();
            tokio::task::spawn_local(async move {
                while !probe.stopped() {
                    tokio::time::sleep(PERIOD).await;
                    probe.tick();
                }
            })
        };
        // Let the ticker start its first sleep, then measure.
        tokio::task::yield_now().await;
        probe.start();
        let out = body().await;
        let gaps = probe.stop();
        ticker.await.expect("the ticker did not panic");
        (out, gaps)
    })
}

/// A delay for executors without a timer: a thread sleeps, then wakes the
/// task. Its output is how late that thread woke it (on a loaded machine
/// the sleeping thread itself may wait for a CPU: not the polling
/// thread's doing).
struct ThreadDelay {
    at: Instant,
    shared: Option<Arc<Mutex<DelayState>>>,
}

/// The waker to call, and when the sleeping thread called it.
type DelayState = (Option<Waker>, Option<Instant>);

impl Future for ThreadDelay {
    type Output = Duration;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Duration> {
        let at = self.at;
        match &self.shared {
            Some(shared) => {
                let mut s = shared.lock().unwrap();
                if let Some(woke) = s.1 {
                    return Poll::Ready(woke.saturating_duration_since(at));
                }
                s.0 = Some(cx.waker().clone());
            }
            None => {
                let shared = Arc::new(Mutex::new((Some(cx.waker().clone()), None)));
                let shared2 = shared.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    let waker = {
                        let mut s: MutexGuard<'_, DelayState> = shared2.lock().unwrap();
                        s.1 = Some(Instant::now());
                        s.0.take()
                    };
                    if let Some(w) = waker {
                        w.wake();
                    }
                });
                self.shared = Some(shared);
            }
        }
        Poll::Pending
    }
}

fn delay(d: Duration) -> ThreadDelay {
    ThreadDelay {
        at: Instant::now() + d,
        shared: None,
    }
}

/// Polls `a` and `b` together until both are done; `a`'s output.
async fn join<A: Future, B: Future<Output = ()>>(a: A, b: B) -> A::Output {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut out, mut b_done) = (None, false);
    poll_fn(|cx| {
        if out.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            out = Some(v);
        }
        if !b_done {
            b_done = b.as_mut().poll(cx).is_ready();
        }
        match (out.is_some(), b_done) {
            (true, true) => Poll::Ready(out.take().expect("checked")),
            _ => Poll::Pending,
        }
    })
    .await
}

/// [`on_tokio`] with `futures_executor::block_on` and a ticker timed by
/// threads (a sleeping thread wakes it): no tokio anywhere.
fn on_block_on<Fut: Future>(body: Fut) -> (Fut::Output, Gaps) {
    futures_executor::block_on(async {
        let probe = Probe::new();
        let ticker = {
            let probe = probe.clone();
            async move {
                while !probe.stopped() {
                    let late = delay(PERIOD).await;
                    probe.tick_excusing(late);
                }
            }
        };
        probe.start();
        let measured = async {
            let out = body.await;
            (out, probe.stop())
        };
        join(measured, ticker).await
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn never_blocked(what: &str, g: Gaps) {
    eprintln!(
        "ticker, {what}: worst gap {:.1} ms, net of CPU wait {:.1} ms ({} ticks of {PERIOD:?} in {:.0} ms)",
        ms(g.worst),
        ms(g.worst_net),
        g.ticks,
        ms(g.elapsed)
    );
    assert!(
        g.worst_net <= MAX_GAP,
        "{what}: the ticker's worst gap was {:?}, {:?} of it not waiting for a CPU \
         (limit {MAX_GAP:?}): the runtime's thread was blocked",
        g.worst,
        g.worst_net
    );
}

/// Prints a control's gaps (a blocking form's) and checks that its `gap`
/// (`name`: the net or the gross one) shows the blocking.
fn control(what: &str, g: Gaps, name: &str, gap: Duration) {
    eprintln!(
        "ticker, {what} (blocking form, the control): worst gap {:.1} ms, net {:.1} ms, in {:.0} ms",
        ms(g.worst),
        ms(g.worst_net),
        ms(g.elapsed)
    );
    assert!(
        gap >= BLOCKED,
        "{what}: the blocking form left a {name} of only {gap:?}: the harness cannot see blocking"
    );
}

fn blocked(what: &str, g: Gaps) {
    control(what, g, "net gap", g.worst_net);
}

/// A control for a blocking form that may wait by looking rather than by
/// sleeping: the blocking `Map` looks for its next outcome before it
/// parks while outcomes come quickly (`waiting::LOOK`, yielding the CPU),
/// and a thread that yields is runnable, so that part of its wait counts
/// as waiting for a CPU and not in the net gap. The gross gap shows it:
/// the ticker did not run for at least `BLOCKED`. (That the net gap sees
/// a thread blocked asleep is what the other controls show.)
fn stalled(what: &str, g: Gaps) {
    control(what, g, "gap", g.worst);
}

// ---------------------------------------------------------------------------
// Nothing blocks: the ticker tests
// ---------------------------------------------------------------------------

const N: u64 = 100_000;
/// Work per input, so that the blocking form takes well over a second in
/// either build, also on an idle machine (with 100 rounds a debug build's
/// blocking map took only 1.2 s there, 0.8 s of it not waiting for a CPU,
/// under the control's 1 s: 8,000 rounds make it ~5 s; a release build:
/// 4,000 rounds, ~25 µs).
const SPIN: u64 = if cfg!(debug_assertions) { 8_000 } else { 4_000 };

fn spin_input(i: u64) -> Spin {
    Spin {
        iterations: SPIN + i % 7,
    }
}

/// Counts the results of a 100k map stream and the ones that are wrong
/// (values per input index, so out-of-order results are wrong too).
async fn consume_100k(pool: &impl Executor) -> (u64, u64) {
    let want: Vec<u64> = (0..7).map(|k| spin(SPIN + k)).collect();
    let mut results = pool
        .map((0..N).map(spin_input))
        .chunksize(256)
        .into_stream();
    let (mut n, mut wrong) = (0u64, 0u64);
    while let Some(r) = results.next().await {
        if r != Ok(want[(n % 7) as usize]) {
            wrong += 1;
        }
        n += 1;
    }
    (n, wrong)
}

/// (a) `async for` over a 100,000-input chunked map on one runtime thread:
/// the ticker keeps its period; the blocking `Map` iterator stalls it for
/// the whole map.
#[test]
fn map_stream_of_100k_inputs_never_blocks_a_current_thread_runtime() {
    watchdog(LIMIT, || {
        let _serial = serial();
        let pool = process_pool(2);
        let (got, gaps) = on_tokio(|| consume_100k(&pool));
        assert_eq!(got, (N, 0), "one right result per input, in order");
        never_blocked("100k-input map_stream, tokio current-thread", gaps);

        let (n, gaps) = on_tokio(|| async {
            pool.map((0..N).map(spin_input))
                .chunksize(256)
                .filter(|r| r.is_ok())
                .count()
        });
        assert_eq!(n as u64, N);
        stalled("100k-input map", gaps);
    });
}

/// (b) `wait_async` waits a second without blocking; blocking `wait` does.
#[test]
fn wait_async_never_blocks_a_current_thread_runtime() {
    watchdog(LIMIT, || {
        let _serial = serial();
        let pool = process_pool(2);
        let futs: Vec<_> = (0..2)
            .map(|_| pool.submit(Sleep { millis: 1200 }).unwrap())
            .collect();
        let ((done, not_done), gaps) = on_tokio(|| {
            wait_async(
                futs,
                ReturnWhen::AllCompleted,
                Some(Duration::from_secs(30)),
            )
        });
        assert_eq!((done.len(), not_done.len()), (2, 0));
        assert!(gaps.elapsed >= Duration::from_millis(1100), "{gaps:?}");
        never_blocked("wait_async on two 1.2 s tasks, tokio current-thread", gaps);

        let futs: Vec<_> = (0..2)
            .map(|_| pool.submit(Sleep { millis: 1200 }).unwrap())
            .collect();
        let ((done, _), gaps) = on_tokio(|| async {
            wait(
                futs,
                ReturnWhen::AllCompleted,
                Some(Duration::from_secs(30)),
            )
        });
        assert_eq!(done.len(), 2);
        blocked("wait on two 1.2 s tasks", gaps);
    });
}

/// 48 tasks of 50 ms queued on two workers: about 1.2 s of work left.
fn queue_work(pool: &impl Executor) -> Vec<TaskFuture<u64>> {
    (0..48)
        .map(|_| pool.submit(Sleep { millis: 50 }).unwrap())
        .collect()
}

/// (c) Shutting a pool down with work queued: `shutdown_async(Wait)` keeps
/// the ticker going, the pool's drop afterwards is instant, every queued
/// task completes and the workers are gone; the blocking `shutdown` stalls
/// the ticker.
#[test]
fn shutdown_async_with_work_queued_never_blocks_a_current_thread_runtime() {
    watchdog(LIMIT, || {
        let _serial = serial();
        let pool = process_pool(2);
        let pids = pool.worker_pids();
        let futs = queue_work(&pool);
        let (values, gaps) = on_tokio(move || async move {
            pool.shutdown_async(Shutdown::Wait).await;
            drop(pool); // already down: returns at once
            let mut values = Vec::new();
            for f in futs {
                values.push(f.await.unwrap());
            }
            values
        });
        assert_eq!(values, vec![50; 48], "Wait ran the whole queue");
        assert_eq!(wait_gone(&pids, Duration::from_secs(5)), Vec::<u32>::new());
        never_blocked(
            "shutdown_async(Wait) with 1.2 s queued, tokio current-thread",
            gaps,
        );

        let pool = process_pool(2);
        let futs = queue_work(&pool);
        let ((), gaps) = on_tokio(|| async { pool.shutdown(Shutdown::Wait) });
        assert!(futs.iter().all(|f| f.done()));
        blocked("shutdown(Wait) with 1.2 s queued", gaps);
    });
}

/// `PoolGuard` ("async with"): dropping it with work queued hands the
/// shutdown to a thread of its own; the work still completes and the
/// futures held elsewhere get their values. The pool's own `Drop` blocks.
#[test]
fn dropping_a_pool_guard_never_blocks_and_the_queued_work_completes() {
    watchdog(LIMIT, || {
        let _serial = serial();
        let guard = PoolGuard::new(process_pool(2));
        let pids = guard.worker_pids();
        let futs = queue_work(&*guard);
        let (values, gaps) = on_tokio(move || async move {
            drop(guard); // e.g. a `?` or a cancelled task leaving the scope
            let mut values = Vec::new();
            for f in futs {
                values.push(f.await.unwrap());
            }
            values
        });
        assert_eq!(values, vec![50; 48]);
        assert_eq!(wait_gone(&pids, Duration::from_secs(5)), Vec::<u32>::new());
        never_blocked("dropping a PoolGuard with 1.2 s queued", gaps);

        // `close` is the end of the scope you write: it resolves when down.
        let guard = PoolGuard::new(process_pool(1));
        let pids = guard.worker_pids();
        let f = guard.submit(Sleep { millis: 300 }).unwrap();
        let ((), gaps) = on_tokio(move || guard.close(Shutdown::Wait));
        assert!(f.done(), "close(Wait) resolved after the queued task");
        assert_eq!(wait_gone(&pids, Duration::from_secs(1)), Vec::<u32>::new());
        never_blocked("PoolGuard::close(Wait) with 0.3 s queued", gaps);

        let pool = process_pool(2);
        let futs = queue_work(&pool);
        let ((), gaps) = on_tokio(move || async move { drop(pool) });
        assert!(futs.iter().all(|f| f.done()));
        blocked("dropping a ProcessPool with 1.2 s queued", gaps);
    });
}

/// `build_async` while initializers take 1.2 s: the runtime goes on; the
/// blocking `build` stalls it.
#[test]
fn build_async_never_blocks_a_current_thread_runtime() {
    watchdog(LIMIT, || {
        let _serial = serial();
        let slow = || {
            procpool_e2e::builder()
                .worker(procpool_e2e::test_worker!())
                .workers(2)
                .initializer(drill::SlowInit { millis: 1200 })
        };
        let (pool, gaps) = on_tokio(|| slow().build_async());
        let pool = pool.expect("the pool starts");
        assert!(gaps.elapsed >= Duration::from_millis(1200), "{gaps:?}");
        never_blocked("ProcessPoolBuilder::build_async, 1.2 s initializers", gaps);
        still_works(&pool);

        let (tp, gaps) = on_tokio(|| {
            ThreadPool::builder()
                .workers(2)
                .init_fn(|_| {
                    std::thread::sleep(Duration::from_millis(1200));
                    Ok(())
                })
                .build_async()
        });
        still_works(&tp.expect("the thread pool starts"));
        never_blocked("ThreadPoolBuilder::build_async, 1.2 s initializers", gaps);

        let (pool, gaps) = on_tokio(|| async { slow().build() });
        still_works(&pool.expect("the pool starts"));
        blocked("ProcessPoolBuilder::build, 1.2 s initializers", gaps);
    });
}

/// The same three (a 100k map stream, a wait, a shutdown with work
/// queued) with `futures_executor::block_on` and a ticker timed by
/// threads: the async forms need no tokio.
#[test]
fn the_async_forms_need_no_tokio() {
    watchdog(LIMIT, || {
        let _serial = serial();
        let pool = process_pool(2);
        let (got, gaps) = on_block_on(consume_100k(&pool));
        assert_eq!(got, (N, 0));
        never_blocked("100k-input map_stream, futures-executor", gaps);

        let futs: Vec<_> = (0..2)
            .map(|_| pool.submit(Sleep { millis: 1200 }).unwrap())
            .collect();
        let ((done, _), gaps) = on_block_on(wait_async(futs, ReturnWhen::AllCompleted, None));
        assert_eq!(done.len(), 2);
        never_blocked("wait_async on two 1.2 s tasks, futures-executor", gaps);

        let futs = queue_work(&pool);
        let (values, gaps) = on_block_on(async move {
            pool.shutdown_async(Shutdown::Wait).await;
            drop(pool);
            let mut values = Vec::new();
            for f in futs {
                values.push(f.await.unwrap());
            }
            values
        });
        assert_eq!(values, vec![50; 48]);
        never_blocked("shutdown_async(Wait), futures-executor", gaps);

        let tp = thread_pool(2);
        let futs = queue_work(&tp);
        let (values, gaps) = on_block_on(async move {
            tp.shutdown_async(Shutdown::Wait).await;
            drop(tp);
            let mut values = Vec::new();
            for f in futs {
                values.push(f.await.unwrap());
            }
            values
        });
        assert_eq!(values, vec![50; 48]);
        never_blocked("ThreadPool::shutdown_async(Wait), futures-executor", gaps);
    });
}

// ---------------------------------------------------------------------------
// The contract of the stream forms, on both pools
// ---------------------------------------------------------------------------

fn block_on<F: Future>(f: F) -> F::Output {
    futures_executor::block_on(f)
}

async fn collect<I>(mut s: MapStream<'_, I>) -> Vec<<MapStream<'_, I> as Stream>::Item>
where
    I: Iterator,
    I::Item: procpool::Task,
{
    let mut out = Vec::new();
    while let Some(r) = s.next().await {
        out.push(r);
    }
    out
}

/// One `Result` per input, in input order (`map`) or as completed
/// (`map_unordered`); a task's own `Err` is its value, and failed items
/// never stop the rest.
fn one_result_per_input(pool: &impl Executor) {
    let _serial = serial();
    let want: Vec<Result<Result<u64, String>, TaskError>> =
        (0..500u64).map(|i| Ok(Checked(i).run_here())).collect();
    let got = block_on(collect(
        pool.map((0..500u64).map(Checked))
            .chunksize(7)
            .into_stream(),
    ));
    assert_eq!(got, want);

    let mut got: Vec<_> = block_on(collect(
        pool.map_unordered((0..500u64).map(Checked))
            .chunksize(7)
            .into_stream(),
    ))
    .into_iter()
    .map(|r| r.unwrap())
    .collect();
    got.sort();
    let mut want: Vec<_> = want.into_iter().map(|r| r.unwrap()).collect();
    want.sort();
    assert_eq!(got, want);

    let panics = block_on(collect(
        pool.map((0..6).map(|i| drill::Panic(format!("item {i}"))))
            .into_stream(),
    ));
    assert_eq!(panics.len(), 6);
    assert!(
        panics
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.is_panic())),
        "{panics:?}"
    );
    // An empty input yields nothing.
    assert!(block_on(collect(pool.map(Vec::<Square>::new()).into_stream())).is_empty());
}
both_pools!(stream_one_result_per_input, 2, one_result_per_input);

trait RunHere {
    fn run_here(self) -> Result<u64, String>;
}
impl RunHere for Checked {
    fn run_here(self) -> Result<u64, String> {
        if self.0 % 2 == 1 {
            Err(format!("{} is odd", self.0))
        } else {
            Ok(self.0 / 2)
        }
    }
}

/// Lazy (nothing pulled before the first poll) and bounded (an endless
/// input is pulled one window ahead at most).
fn lazy_and_bounded(pool: &impl Executor) {
    let _serial = serial();
    let pulled = Arc::new(AtomicU64::new(0));
    let counted = {
        let pulled = pulled.clone();
        (0u64..).map(move |i| {
            pulled.fetch_add(1, Ordering::SeqCst);
            Square(i)
        })
    };
    let mut s = pool.map(counted).chunksize(4).window(3).into_stream();
    assert_eq!(
        pulled.load(Ordering::SeqCst),
        0,
        "nothing before the first poll"
    );
    for i in 0..20u64 {
        assert_eq!(block_on(s.next()), Some(Ok(i * i)));
    }
    let n = pulled.load(Ordering::SeqCst);
    assert!(
        n <= 20 + 3 * 4,
        "{n} inputs pulled for 20 results with a window of 3 chunks of 4"
    );
}
both_pools!(stream_lazy_and_bounded, 2, lazy_and_bounded);

/// After shutdown: the values in flight, then one `Err(Shutdown)`, then
/// the end, without draining a million-item input.
fn after_shutdown(pool: &impl Executor) {
    let _serial = serial();
    let mut s = pool
        .map((0..1_000_000u64).map(Square))
        .chunksize(2)
        .into_stream();
    for i in 0..10u64 {
        assert_eq!(block_on(s.next()), Some(Ok(i * i)));
    }
    block_on(pool.shutdown_async(Shutdown::Wait));
    let rest = block_on(collect(s));
    let (last, values) = rest.split_last().expect("at least the refusal");
    assert_eq!(last, &Err(TaskError::Shutdown), "{rest:?}");
    for (k, v) in values.iter().enumerate() {
        let i = 10 + k as u64;
        assert_eq!(v, &Ok(i * i), "in flight before the shutdown");
    }
    assert!(
        values.len() < 1000,
        "{} values after shutdown",
        values.len()
    );
}

#[test]
fn stream_after_shutdown_process() {
    watchdog(LIMIT, || after_shutdown(&process_pool(2)));
}

#[test]
fn stream_after_shutdown_thread() {
    watchdog(LIMIT, || after_shutdown(&thread_pool(2)));
}

/// Dropping a stream midway cancels what has not started: of 100,000
/// 20 ms items, only the chunks already begun run.
#[test]
fn dropping_a_map_stream_midway_cancels_what_has_not_started() {
    watchdog(LIMIT, || {
        let _serial = serial();
        let pool = procpool_e2e::builder()
            .worker(procpool_e2e::test_worker!())
            .workers(2)
            .prefetch(8)
            .build()
            .unwrap();
        let mut s = pool
            .map((0..100_000u64).map(|_| Sleep { millis: 20 }))
            .chunksize(16)
            .into_stream();
        assert_eq!(block_on(s.next()), Some(Ok(20)));
        let t = Instant::now();
        drop(s);
        let took = t.elapsed();
        eprintln!("dropping the stream took {took:?}");
        assert!(took < Duration::from_secs(2), "drop took {took:?}");
        std::thread::sleep(Duration::from_millis(400));
        let ran = pool.stats().completed;
        assert!(
            ran <= 2 * 16 + 1,
            "{ran} tasks ran after the drop of a 100k-item stream"
        );
        // And on a thread pool, where nothing is prefetched.
        let tp = thread_pool(1);
        let mut s = tp
            .map_unordered((0..1000u64).map(|_| Sleep { millis: 5 }))
            .into_stream();
        assert_eq!(block_on(s.next()), Some(Ok(5)));
        drop(s);
        std::thread::sleep(Duration::from_millis(100));
        let ran = tp.stats().completed;
        assert!(ran <= 3, "{ran} of 1000 ran after the drop");
        still_works(&pool);
    });
}

/// `.timeout(d)`: a stream waits at most `d` for an item, then yields
/// `WaitTimedOut` once, cancels the rest and ends; the clock restarts for
/// each item; `Duration::MAX` is no limit.
fn stream_timeout(pool: &impl Executor) {
    let _serial = serial();
    for ordered in [true, false] {
        let inputs = [Sleep { millis: 10 }]
            .into_iter()
            .chain(std::iter::repeat_n(Sleep { millis: 800 }, 10));
        let m = if ordered {
            pool.map(inputs)
        } else {
            pool.map_unordered(inputs)
        };
        let mut s = m.timeout(Duration::from_millis(300)).into_stream();
        assert_eq!(block_on(s.next()), Some(Ok(10)), "ordered: {ordered}");
        let t = Instant::now();
        let r = block_on(s.next());
        let took = t.elapsed();
        assert_eq!(
            r,
            Some(Err(TaskError::WaitTimedOut {
                after: Duration::from_millis(300)
            }))
        );
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        assert_eq!(block_on(s.next()), None, "ends after the time-out");
        drop(s);
        // The slow items that had begun still run (threads cannot be
        // stopped): let them end before the next round.
        std::thread::sleep(Duration::from_millis(900));
    }
    let s = pool
        .map((0..5u64).map(Square))
        .into_stream()
        .timeout(Duration::MAX);
    assert_eq!(block_on(collect(s)).len(), 5, "Duration::MAX: no limit");
}
both_pools!(stream_timeout_yields_wait_timed_out_once, 2, stream_timeout);

/// `.deadline(d)`: the whole stream's limit (Python's `map(timeout=)`):
/// the items done in time, then `WaitTimedOut { after: d }`, then the end.
fn stream_deadline(pool: &impl Executor) {
    let _serial = serial();
    let t = Instant::now();
    let got = block_on(collect(
        pool.map([0, 0, 2_000].into_iter().map(|millis| Sleep { millis }))
            .into_stream()
            .deadline(Duration::from_millis(300)),
    ));
    let took = t.elapsed();
    assert_eq!(
        got,
        vec![
            Ok(0),
            Ok(0),
            Err(TaskError::WaitTimedOut {
                after: Duration::from_millis(300)
            })
        ]
    );
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}
both_pools!(
    stream_deadline_is_the_whole_streams_limit,
    2,
    stream_deadline
);

/// An async `Stream` that yields `Square(0..n)`, pausing (`Pending`, then
/// woken by a thread) every `every` items.
struct Trickle {
    next: u64,
    n: u64,
    every: u64,
    pause: Option<ThreadDelay>,
}

impl Stream for Trickle {
    type Item = Square;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Square>> {
        if self.next >= self.n {
            return Poll::Ready(None);
        }
        if self.next.is_multiple_of(self.every) && self.next > 0 {
            let pause = self
                .pause
                .get_or_insert_with(|| delay(Duration::from_millis(3)));
            if Pin::new(pause).poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        let i = self.next;
        self.next += 1;
        Poll::Ready(Some(Square(i)))
    }
}

fn trickle(n: u64, every: u64) -> Trickle {
    Trickle {
        next: 0,
        n,
        every,
        pause: None,
    }
}

/// `map_stream`: inputs from an async `Stream` that pauses, in chunks of
/// at most `chunksize`; every result, in order or as completed.
fn stream_input(pool: &impl Executor) {
    let _serial = serial();
    let got = block_on(collect(pool.map_stream(trickle(300, 7)).chunksize(16)));
    let want: Vec<_> = (0..300u64).map(|i| Ok(i * i)).collect();
    assert_eq!(got, want);
    let mut got: Vec<u64> = block_on(collect(pool.map_stream_unordered(trickle(300, 5))))
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..300u64).map(|i| i * i).collect::<Vec<_>>());
    assert!(block_on(collect(pool.map_stream(trickle(0, 1)))).is_empty());
}
both_pools!(map_stream_from_an_async_input, 2, stream_input);

/// With an async input, an item never waits for later inputs to fill its
/// chunk: a stream that yields one item and then nothing for a long time
/// still gets that item's result at once.
#[test]
fn an_async_input_item_does_not_wait_for_its_chunk_to_fill() {
    watchdog(LIMIT, || {
        let _serial = serial();
        let pool = process_pool(1);
        struct OneThenSilence(bool);
        impl Stream for OneThenSilence {
            type Item = Square;
            fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Square>> {
                if self.0 {
                    Poll::Pending // never wakes: silence
                } else {
                    self.0 = true;
                    Poll::Ready(Some(Square(9)))
                }
            }
        }
        let mut s = pool.map_stream(OneThenSilence(false)).chunksize(64);
        let t = Instant::now();
        assert_eq!(block_on(s.next()), Some(Ok(81)));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    });
}

#[test]
fn chunksize_zero_panics_on_a_stream_too() {
    let pool = thread_pool(1);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(pool.map((0..3u64).map(Square)).into_stream().chunksize(0))
    }));
    let msg = r.expect_err("chunksize(0) panics");
    let msg = msg.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(msg.contains("chunksize must be at least 1"), "{msg}");
}

/// The async forms can be held across an `.await` in a task that moves
/// between threads.
#[test]
fn the_async_forms_are_send() {
    fn send<T: Send>(_: &T) {}
    let pool = thread_pool(1);
    let s = pool.map((0..3u64).map(Square)).into_stream();
    send(&s);
    send(&s.timeout(Duration::from_secs(1)));
    let f: WaitFuture<u64> = wait_async(Vec::new(), ReturnWhen::AllCompleted, None);
    send(&f);
    let o: OffThread<()> = pool.shutdown_async(Shutdown::Wait);
    send(&o);
    send(&PoolGuard::new(thread_pool(1)));
    block_on(o);
}

// ---------------------------------------------------------------------------
// wait_async and as_completed's Stream
// ---------------------------------------------------------------------------

fn wait_async_modes(pool: &impl Executor) {
    let _serial = serial();
    let sleep = |ms| pool.submit(Sleep { millis: ms }).unwrap();
    // FirstCompleted: at the quick one.
    let t = Instant::now();
    let (done, not_done) = block_on(wait_async(
        vec![sleep(1500), sleep(10)],
        ReturnWhen::FirstCompleted,
        None,
    ));
    assert_eq!((done.len(), not_done.len()), (1, 1));
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
    block_on(wait_async(not_done, ReturnWhen::AllCompleted, None));

    let slow = sleep(1500);
    // A timeout: returns after it with the unfinished ones.
    let t = Instant::now();
    let (done, not_done) = block_on(wait_async(
        vec![slow],
        ReturnWhen::AllCompleted,
        Some(Duration::from_millis(100)),
    ));
    let took = t.elapsed();
    assert_eq!((done.len(), not_done.len()), (0, 1));
    assert!(
        took >= Duration::from_millis(95) && took < Duration::from_millis(1000),
        "{took:?}"
    );
    // Zero: a snapshot.
    let quick = sleep(0);
    quick.wait();
    let (done, not_done) = block_on(wait_async(
        vec![quick, not_done.into_iter().next().unwrap()],
        ReturnWhen::AllCompleted,
        Some(Duration::ZERO),
    ));
    assert_eq!((done.len(), not_done.len()), (1, 1));
    // Empty: at once.
    let (done, not_done) = block_on(wait_async(
        Vec::<TaskFuture<u64>>::new(),
        ReturnWhen::FirstCompleted,
        None,
    ));
    assert!(done.is_empty() && not_done.is_empty());
}
both_pools!(wait_async_in_every_mode, 2, wait_async_modes);

/// `FirstException` returns at the first failure while others still run.
#[test]
fn wait_async_first_exception_returns_at_the_failure() {
    watchdog(LIMIT, || {
        let _serial = serial();
        let pool = process_pool(2);
        let slow = pool.submit(Sleep { millis: 1500 }).unwrap();
        let own_err = pool.submit(Checked(3)).unwrap();
        own_err.wait();
        // Kills its worker: a `WorkerDied` failure, with a `u64` output.
        let boom = pool
            .submit(drill::SquareOrDie { x: 0, modulus: 1 })
            .unwrap();
        let t = Instant::now();
        let futs: Vec<TaskFuture<u64>> = vec![slow, boom];
        let (done, not_done) = block_on(wait_async(futs, ReturnWhen::FirstException, None));
        assert_eq!((done.len(), not_done.len()), (1, 1));
        let err = done[0].error();
        assert!(err.as_ref().is_some_and(|e| !e.is_cancelled()), "{err:?}");
        assert!(
            t.elapsed() < Duration::from_millis(1200),
            "{:?}",
            t.elapsed()
        );
        // A task's own Err(..) alone is no exception: AllCompleted behaviour.
        let (done, not_done) = block_on(wait_async(
            vec![own_err, pool.submit(Checked(5)).unwrap()],
            ReturnWhen::FirstException,
            None,
        ));
        assert_eq!((done.len(), not_done.len()), (2, 0));
    });
}

/// `as_completed(..).timeout(d)` as a `Stream`: ends after `d` with
/// `timed_out()` and the unfinished futures handed back.
#[test]
fn as_completed_stream_honours_its_timeout() {
    watchdog(LIMIT, || {
        let _serial = serial();
        let pool = process_pool(2);
        let futs = vec![
            pool.submit(Sleep { millis: 10 }).unwrap(),
            pool.submit(Sleep { millis: 2000 }).unwrap(),
        ];
        let mut s = as_completed(futs).timeout(Duration::from_millis(200));
        let t = Instant::now();
        let first = block_on(poll_fn(|cx| Pin::new(&mut s).poll_next(cx)));
        assert_eq!(first.map(|f| f.result()), Some(Ok(10)));
        let end = block_on(poll_fn(|cx| Pin::new(&mut s).poll_next(cx)));
        let took = t.elapsed();
        assert!(end.is_none());
        assert!(s.timed_out());
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        assert_eq!(s.into_pending().len(), 1);
    });
}
