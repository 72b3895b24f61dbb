//! The first hour of a user: tasks defined with `#[procpool::task]`, no
//! hand-kept registry, this program its own worker. A whole program (no
//! libtest harness, `harness = false`): `main` calls `run_if_worker` first,
//! exactly as the README says, then runs each check under a watchdog.
#![forbid(unsafe_code)]

use std::time::Duration;

use procpool::{ProcessPool, Registry, Task, WorkerCommand, WorkerContext};
use procpool_e2e::watchdog;
use serde::{Deserialize, Serialize};

/// A CPU task of the README's kind.
#[procpool::task]
fn mix(seed: u64) -> u64 {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..64 {
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9).rotate_left(31);
    }
    x
}

/// Sleeps `micros` microseconds: a task whose run time is known.
#[procpool::task]
fn nap(micros: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_micros(micros));
    micros
}

/// No arguments: a unit struct; proves the task ran in another process.
#[procpool::task]
fn worker_pid() -> u32 {
    std::process::id()
}

/// Several arguments, owned types, and the worker's context.
#[procpool::task]
pub fn greet(name: String, times: usize, ctx: &mut WorkerContext) -> String {
    let calls = ctx.get_mut::<u32>().map(|c| {
        *c += 1;
        *c
    });
    if calls.is_none() {
        ctx.insert(1u32);
    }
    format!("{} (slot {})", name.repeat(times), ctx.worker_id())
}

/// A fallible task with its own name: a task's `Err` is its value.
#[procpool::task(name = "first_hour_parse", type_name = ParseTask)]
fn parse(text: String) -> Result<u32, String> {
    text.trim().parse().map_err(|e| format!("`{text}`: {e}"))
}

/// A raw identifier as an argument.
#[procpool::task]
fn shout(r#type: String) -> String {
    r#type.to_uppercase()
}

/// The explicit route still works beside the attribute.
#[derive(Serialize, Deserialize)]
struct Cube(u64);

impl Task for Cube {
    const NAME: &'static str = "first_hour_cube";
    type Output = u64;
    fn run(self, _: &mut WorkerContext) -> u64 {
        self.0 * self.0 * self.0
    }
}

fn registry() -> Registry {
    Registry::collected().task::<Cube>()
}

fn pool(workers: usize) -> ProcessPool {
    ProcessPool::builder()
        .worker(WorkerCommand::current_exe())
        .workers(workers)
        .build()
        .expect("a pool of this program starts")
}

fn collected_registry_holds_every_attributed_task() {
    let r = registry();
    for name in [
        Mix::NAME,
        WorkerPid::NAME,
        Greet::NAME,
        ParseTask::NAME,
        Shout::NAME,
        Cube::NAME,
        Nap::NAME,
    ] {
        assert!(r.contains(name), "{name} missing from {r:?}");
    }
    assert_eq!(Mix::NAME, "first_hour::mix");
    assert_eq!(ParseTask::NAME, "first_hour_parse");
    assert_eq!(r.task_names().len(), 7, "{r:?}");
}

fn attributed_tasks_run_in_worker_processes() {
    let pool = pool(2);
    assert_eq!(
        pool.submit(Mix { seed: 7 }).unwrap().result().unwrap(),
        mix(7)
    );
    let pid = pool.submit(WorkerPid).unwrap().result().unwrap();
    assert_ne!(pid, std::process::id(), "ran in the parent, not a worker");
    let greeting = pool
        .submit(Greet {
            name: "ab".into(),
            times: 3,
        })
        .unwrap()
        .result()
        .unwrap();
    assert!(greeting.starts_with("ababab (slot "), "{greeting}");
    assert_eq!(
        pool.submit(ParseTask { text: "42".into() })
            .unwrap()
            .result()
            .unwrap(),
        Ok(42)
    );
    let bad = pool
        .submit(ParseTask { text: "x".into() })
        .unwrap()
        .result()
        .unwrap();
    assert!(bad.unwrap_err().contains("`x`"));
    assert_eq!(
        pool.submit(Shout {
            r#type: "loud".into()
        })
        .unwrap()
        .result()
        .unwrap(),
        "LOUD"
    );
    assert_eq!(pool.submit(Cube(3)).unwrap().result().unwrap(), 27);

    let got: Vec<u64> = pool
        .map((0..2_000u64).map(|seed| Mix { seed }))
        .map(|r| r.unwrap())
        .collect();
    let want: Vec<u64> = (0..2_000u64).map(mix).collect();
    assert_eq!(got, want);
}

fn attributed_tasks_run_on_a_thread_pool_too() {
    let pool = procpool::ThreadPool::builder().workers(2).build().unwrap();
    assert_eq!(
        pool.submit(Mix { seed: 9 }).unwrap().result().unwrap(),
        mix(9)
    );
    let pid = pool.submit(WorkerPid).unwrap().result().unwrap();
    assert_eq!(pid, std::process::id());
}

#[derive(Serialize, Deserialize)]
struct ClashA(u8);
impl Task for ClashA {
    const NAME: &'static str = "first_hour_clash";
    type Output = u8;
    fn run(self, _: &mut WorkerContext) -> u8 {
        self.0
    }
}
#[derive(Serialize, Deserialize)]
struct ClashB(String);
impl Task for ClashB {
    const NAME: &'static str = "first_hour_clash";
    type Output = String;
    fn run(self, _: &mut WorkerContext) -> String {
        self.0
    }
}

fn two_types_with_one_name_are_refused_with_the_right_advice() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // the panic is expected: keep the log clean
    let caught = std::panic::catch_unwind(|| Registry::new().task::<ClashA>().task::<ClashB>());
    std::panic::set_hook(hook);
    let payload = caught.expect_err("a second type under one name must be refused");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("two task types share the name `first_hour_clash`"),
        "{message}"
    );
    assert!(
        message.contains("ClashA") && message.contains("ClashB"),
        "{message}"
    );
    assert!(message.contains("another NAME"), "{message}");
}

fn a_map_reports_progress_and_passes_on_its_size_hint() {
    let pool = pool(2);
    let map = pool.map((0..500u64).map(|seed| Mix { seed })).chunksize(16);
    assert_eq!(map.size_hint(), (500, Some(500)));
    let mut seen = Vec::new();
    let mut map = map.on_progress(|done, total| seen.push((done, total)));
    let first = map.next().unwrap().unwrap();
    assert_eq!(first, mix(0));
    assert_eq!(map.size_hint(), (499, Some(499)));
    let rest: Vec<u64> = map.by_ref().map(|r| r.unwrap()).collect();
    assert_eq!(rest.len(), 499);
    assert_eq!(map.size_hint(), (0, Some(0)));
    drop(map);
    assert_eq!(seen.len(), 500);
    assert!(
        seen.iter()
            .enumerate()
            .all(|(i, &(d, t))| d == i as u64 + 1 && t == Some(500))
    );

    // An input of unknown length: no total, the count still right.
    let mut last = (0, Some(0));
    let n = pool
        .map_unordered((0..100u64).filter(|x| x % 2 == 0).map(|seed| Mix { seed }))
        .on_progress(|done, total| last = (done, total))
        .count();
    assert_eq!(n, 50);
    assert_eq!(last, (50, None));

    // The terminal bar (drawn only on a terminal) changes no result.
    let sum: u64 = pool
        .map((0..300u64).map(|seed| Mix { seed }))
        .progress()
        .map(|r| r.unwrap())
        .fold(0, u64::wrapping_add);
    assert_eq!(sum, (0..300).map(mix).fold(0, u64::wrapping_add));
}

fn stats_keep_waiting_in_a_map_apart_from_the_pools_overhead() {
    // Items of a known 0.5 ms, two chunks of 256 (one per worker): an item
    // waits behind ~128 others on average, ~64 ms, far above what the
    // machine's scheduling can add to the round trip (with µs-long items
    // the two were of a size, and a loaded machine decided the test).
    let pool = pool(2);
    let n = pool
        .map((0..512u64).map(|_| Nap { micros: 500 }))
        .chunksize(256)
        .collect::<Result<Vec<u64>, _>>()
        .unwrap()
        .len();
    assert_eq!(n, 512);
    let stats = pool.stats();
    let mean = stats.mean();
    // An item of a chunk of 256 waits behind the items before it: on
    // average far longer than it runs. That is waiting, not overhead, and
    // the parts add up to the round trip.
    assert!(
        mean.queue_wait > mean.run * 10,
        "waiting {:?} vs run {:?}",
        mean.queue_wait,
        mean.run
    );
    let parts = mean.run + mean.queue_wait + mean.overhead();
    let slack = Duration::from_micros(5);
    assert!(
        parts <= mean.total + slack && mean.total <= parts + slack,
        "{parts:?} vs {:?}",
        mean.total
    );
    assert!(stats.p50_overhead <= stats.p50_total, "{stats:?}");
    // The waiting behind the other items of a chunk (sent as one packed
    // task) is waiting too, not the pool's overhead.
    assert!(
        mean.overhead() < mean.queue_wait,
        "overhead {:?} vs waiting {:?}",
        mean.overhead(),
        mean.queue_wait
    );
    let text = stats.to_string();
    assert!(text.contains("512 tasks done"), "{text}");
    assert!(text.contains("waiting for a worker"), "{text}");
    assert!(text.contains("pool overhead per task: p50"), "{text}");
    assert!(text.contains("it is not the pool's overhead"), "{text}");
}

fn overhead_report_measures_a_task_of_this_program() {
    let pool = pool(1);
    let r = procpool::overhead::report(&pool, |i| Mix { seed: i as u64 }, 40).unwrap();
    assert_eq!(r.name, "first_hour::mix");
    assert_eq!(r.runs, 40);
    assert!(r.process.total > r.in_process, "{r:?}");
    assert!(r.process.run > Duration::ZERO, "{r:?}");
    assert!(r.process.bytes_out > 0 && r.process.bytes_back > 0, "{r:?}");
    let text = r.to_string();
    assert!(text.contains("task `first_hour::mix`: 40 runs"), "{text}");
    assert!(text.contains("serialization"), "{text}");
    // A task no worker has is an error, not a hang.
    let err = procpool::overhead::report(&pool, |_| NotServed, 5).unwrap_err();
    assert!(
        matches!(err, procpool::TaskError::NoWorkerCanRun { .. }),
        "{err:?}"
    );
}

/// Not registered anywhere: no worker can run it.
#[derive(Serialize, Deserialize)]
struct NotServed;

impl Task for NotServed {
    const NAME: &'static str = "first_hour_not_served";
    type Output = ();
    fn run(self, _: &mut WorkerContext) {}
}

fn main() {
    // In a worker process this serves the tasks and never returns.
    procpool::worker::run_if_worker(registry());

    let checks: &[(&str, fn())] = &[
        (
            "collected_registry_holds_every_attributed_task",
            collected_registry_holds_every_attributed_task,
        ),
        (
            "attributed_tasks_run_in_worker_processes",
            attributed_tasks_run_in_worker_processes,
        ),
        (
            "attributed_tasks_run_on_a_thread_pool_too",
            attributed_tasks_run_on_a_thread_pool_too,
        ),
        (
            "a_map_reports_progress_and_passes_on_its_size_hint",
            a_map_reports_progress_and_passes_on_its_size_hint,
        ),
        (
            "stats_keep_waiting_in_a_map_apart_from_the_pools_overhead",
            stats_keep_waiting_in_a_map_apart_from_the_pools_overhead,
        ),
        (
            "overhead_report_measures_a_task_of_this_program",
            overhead_report_measures_a_task_of_this_program,
        ),
        (
            "two_types_with_one_name_are_refused_with_the_right_advice",
            two_types_with_one_name_are_refused_with_the_right_advice,
        ),
    ];
    // Like libtest: an optional filter on the command line.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let mut failed = 0;
    for (name, check) in checks.iter().filter(|(n, _)| n.contains(&filter)) {
        let check = *check;
        let outcome = std::panic::catch_unwind(|| watchdog(Duration::from_secs(60), check));
        match outcome {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    assert!(
        procpool_e2e::no_children_left(),
        "worker processes left behind"
    );
    if failed > 0 {
        eprintln!("{failed} check(s) failed");
        std::process::exit(1);
    }
}
