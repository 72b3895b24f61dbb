//! The core loop end to end: real worker processes over real sockets.
//! Every test runs under a watchdog and ends by checking that the pool
//! still computes a normal task correctly.

use std::time::Duration;

use procpool::{ProcessPool, Shutdown, Side, SubmitError, TaskError, WorkerCommand};
use procpool_e2e::{no_children_left, wait_gone, watchdog};
use procpool_tasks::drill::{self, BadInput, Unserializable};
use procpool_tasks::{Checked, Echo, Greet, SetGreeting, Square};

const LIMIT: Duration = Duration::from_secs(30);

fn worker() -> WorkerCommand {
    WorkerCommand::program(env!("CARGO_BIN_EXE_procpool-test-worker"))
}

fn pool(n: usize) -> ProcessPool {
    procpool_e2e::builder()
        .worker(worker())
        .workers(n)
        .build()
        .expect("pool starts")
}

/// A pool of one worker that holds up to four tasks, to build on.
fn one_worker() -> procpool::ProcessPoolBuilder {
    procpool_e2e::builder()
        .worker(worker())
        .workers(1)
        .prefetch(4)
}

/// The pool still works: a normal task gives the right answer.
fn still_works(pool: &ProcessPool) {
    assert_eq!(pool.submit(Square(12)).unwrap().result().unwrap(), 144);
}

#[test]
fn submit_and_result() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        let futs: Vec<_> = (0..50u64)
            .map(|i| pool.submit(Square(i)).unwrap())
            .collect();
        for (i, f) in futs.into_iter().enumerate() {
            assert_eq!(f.result().unwrap(), (i * i) as u64);
        }
        let echoed = pool
            .submit(Echo(vec![7; 100_000]))
            .unwrap()
            .result()
            .unwrap();
        assert_eq!(echoed.into_vec(), vec![7; 100_000]);
    });
}

/// A packed chunk's output too large for the worker's ring (over 64 KiB)
/// crosses the socket as an `Item` frame and leaves a marker in the ring.
/// The parent once stopped reading the ring at such a marker, so the
/// chunk's later inputs and its end never arrived: the map hung.
#[test]
fn a_chunk_with_outputs_too_large_for_the_ring_delivers_all_and_ends() {
    watchdog(Duration::from_secs(20), || {
        let pool = pool(1);
        let sizes = [5usize, 100_000, 7, 200_000, 300_000, 0];
        let outs: Vec<_> = pool
            .map(sizes.iter().map(|&n| Echo(vec![n as u8; n])))
            .chunksize(sizes.len())
            .collect();
        for (n, out) in sizes.iter().zip(outs) {
            assert_eq!(out.unwrap().into_vec(), vec![*n as u8; *n]);
        }
        still_works(&pool);
        drop(pool);
    });
}

#[test]
fn unserializable_input_is_a_submit_error_handing_the_task_back() {
    watchdog(LIMIT, || {
        let pool = pool(1);
        match pool.submit(BadInput(Unserializable)) {
            Err(SubmitError::Encode {
                task,
                type_name,
                message,
            }) => {
                assert_eq!(task, BadInput(Unserializable));
                assert!(type_name.contains("BadInput"), "{type_name}");
                assert!(message.contains("refuses to be serialized"), "{message}");
            }
            other => panic!("expected SubmitError::Encode, got {other:?}"),
        }
        // A panicking Serialize is a typed error too.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Explodes(drill::PanicsOnSerialize);
        impl procpool::Task for Explodes {
            const NAME: &'static str = "explodes";
            type Output = ();
            fn run(self, _: &mut procpool::WorkerContext) {}
        }
        let err = pool.submit(Explodes(drill::PanicsOnSerialize)).unwrap_err();
        assert!(err.is_encode(), "{err}");
        assert!(err.to_string().contains("panicked"), "{err}");
        still_works(&pool);
    });
}

#[test]
fn worker_cannot_decode_input() {
    watchdog(LIMIT, || {
        let pool = pool(1);
        let err = pool
            .submit(drill::UndecodableInput(drill::Undeserializable))
            .unwrap()
            .result()
            .unwrap_err();
        match &err {
            TaskError::Decode {
                side: Side::Worker,
                type_name,
                message,
            } => {
                assert!(type_name.contains("UndecodableInput"), "{type_name}");
                assert!(message.contains("refuses to be deserialized"), "{message}");
            }
            other => panic!("expected Decode on the worker, got {other:?}"),
        }
        still_works(&pool);
    });
}

#[test]
fn mismatched_type_shapes_are_a_decode_error_naming_both_types() {
    watchdog(LIMIT, || {
        // Same NAME as the worker's `square`, but a String input.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct FakeSquare(String);
        impl procpool::Task for FakeSquare {
            const NAME: &'static str = "square";
            type Output = u64;
            fn run(self, _: &mut procpool::WorkerContext) -> u64 {
                0
            }
        }
        let pool = pool(1);
        // The worker announced its tasks: refused at submit (SEMANTICS 28).
        let err = pool.submit(FakeSquare("hello".into())).unwrap_err();
        match &err {
            SubmitError::NoWorkerCanRun { name, reason, .. } => {
                assert_eq!(*name, "square");
                assert!(reason.contains("FakeSquare"), "{reason}");
                assert!(reason.contains("procpool_tasks::Square"), "{reason}");
                assert!(reason.contains("two task types share the name"), "{reason}");
            }
            other => panic!("expected NoWorkerCanRun, got {other:?}"),
        }
        still_works(&pool);
    });
}

#[test]
fn output_fails_to_serialize_in_the_worker() {
    watchdog(LIMIT, || {
        let pool = pool(1);
        let pid_before = pool.worker_pids();
        let err = pool.submit(drill::BadOutput).unwrap().result().unwrap_err();
        assert!(
            matches!(&err, TaskError::Encode { side: Side::Worker, message, .. } if message.contains("refuses to be serialized")),
            "{err:?}"
        );
        let err = pool
            .submit(drill::PanickyOutput)
            .unwrap()
            .result()
            .unwrap_err();
        assert!(
            matches!(&err, TaskError::Encode { side: Side::Worker, message, .. } if message.contains("panicked")),
            "{err:?}"
        );
        still_works(&pool);
        assert_eq!(
            pool.worker_pids(),
            pid_before,
            "the worker lived through both"
        );
    });
}

#[test]
fn parent_cannot_decode_output() {
    watchdog(LIMIT, || {
        let pool = pool(1);
        let err = pool
            .submit(drill::UndecodableOutput)
            .unwrap()
            .result()
            .unwrap_err();
        match &err {
            TaskError::Decode {
                side: Side::Parent,
                type_name,
                message,
            } => {
                assert!(type_name.contains("Undeserializable"), "{type_name}");
                assert!(message.contains("refuses to be deserialized"), "{message}");
            }
            other => panic!("expected Decode on the parent, got {other:?}"),
        }
        still_works(&pool);
    });
}

#[test]
fn task_panic_is_panicked_with_message_and_location() {
    watchdog(LIMIT, || {
        let pool = pool(1);
        let err = pool
            .submit(drill::Panic("kaboom 42".into()))
            .unwrap()
            .result()
            .unwrap_err();
        match &err {
            TaskError::Panicked { message, location } => {
                assert_eq!(message, "kaboom 42");
                let loc = location.as_deref().unwrap_or("");
                assert!(loc.contains("drill.rs"), "location: {loc:?}");
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
        still_works(&pool);
    });
}

#[test]
fn unknown_task_name() {
    watchdog(LIMIT, || {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Nobody;
        impl procpool::Task for Nobody {
            const NAME: &'static str = "nobody_registered_this";
            type Output = ();
            fn run(self, _: &mut procpool::WorkerContext) {}
        }
        let pool = pool(1);
        // The worker announced its tasks: refused at submit (SEMANTICS 28).
        let err = pool.submit(Nobody).unwrap_err();
        assert!(
            matches!(
                &err,
                SubmitError::NoWorkerCanRun {
                    name: "nobody_registered_this",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("register it"), "{err}");
        still_works(&pool);
    });
}

#[test]
fn fallible_task_error_is_the_tasks_own_value() {
    watchdog(LIMIT, || {
        let pool = pool(1);
        assert_eq!(pool.submit(Checked(4)).unwrap().result().unwrap(), Ok(2));
        assert_eq!(
            pool.submit(Checked(3)).unwrap().result().unwrap(),
            Err("3 is odd".to_string())
        );
    });
}

#[test]
fn initializer_runs_in_every_worker() {
    watchdog(LIMIT, || {
        let pool = procpool_e2e::builder()
            .worker(worker())
            .workers(2)
            .initializer(SetGreeting("hello from init".into()))
            .build()
            .unwrap();
        let futs: Vec<_> = (0..20).map(|_| pool.submit(Greet).unwrap()).collect();
        for f in futs {
            assert_eq!(f.result().unwrap().as_deref(), Some("hello from init"));
        }
    });
}

#[test]
fn failing_initializer_fails_build_and_leaves_nothing_running() {
    // It counts this process's children: other tests' workers must not be
    // among them (over TCP, 130 other tests run beside it).
    procpool_e2e::in_own_process(LIMIT, || {
        let err = procpool_e2e::builder()
            .worker(worker())
            .workers(2)
            .initializer(drill::FailingInit("no database here".into()))
            .build()
            .unwrap_err();
        match &err {
            procpool::BuildError::Initializer { name, message, .. } => {
                assert_eq!(name, "drill_failing_init");
                assert!(message.contains("no database here"), "{message}");
            }
            other => panic!("expected Initializer, got {other:?}"),
        }
        let err = procpool_e2e::builder()
            .worker(worker())
            .workers(1)
            .initializer(drill::PanickingInit("init exploded".into()))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("init exploded"), "{err}");
        assert!(no_children_left(), "a worker survived a failed build");
    });
}

#[test]
fn workers_zero_is_an_error() {
    let err = procpool_e2e::builder()
        .worker(worker())
        .workers(0)
        .build()
        .unwrap_err();
    assert!(matches!(err, procpool::BuildError::Config(_)), "{err:?}");
}

#[test]
fn missing_worker_binary_says_where_it_looked() {
    let err = procpool_e2e::builder()
        .worker(WorkerCommand::program("/nonexistent/procpool-worker"))
        .workers(1)
        .build()
        .unwrap_err();
    assert!(matches!(err, procpool::BuildError::Spawn { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/procpool-worker"),
        "{err}"
    );
}

#[test]
fn map_is_ordered_lazy_and_goes_past_failures() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        // Item 3 fails (odd -> our own Err is a value; use a panic drill in
        // between via map over Checked is not a failure). Use square-or-die?
        let results: Vec<_> = pool.map((0..100u64).map(Square)).chunksize(7).collect();
        assert_eq!(results.len(), 100);
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.unwrap(), (i * i) as u64);
        }
        // A failing item in the middle does not stop the rest.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct MaybePanic(u64);
        let _ = MaybePanic(0).0;
        let inputs = (0..10u64).map(|i| if i == 3 { Err(i) } else { Ok(i) });
        let results: Vec<_> = pool
            .map(inputs.map(|r| match r {
                Ok(i) => procpool_tasks::drill::SquareOrDie { x: i, modulus: 0 },
                Err(_) => procpool_tasks::drill::SquareOrDie { x: 0, modulus: 1 },
            }))
            .collect();
        assert_eq!(results.len(), 10);
        for (i, r) in results.iter().enumerate() {
            if i == 3 {
                assert!(
                    matches!(r, Err(TaskError::WorkerDied { .. })),
                    "item 3: {r:?}"
                );
            } else {
                assert_eq!(*r.as_ref().unwrap(), (i * i) as u64, "item {i}");
            }
        }
        still_works(&pool);
    });
}

#[test]
fn inputs_of_a_chunk_that_do_not_encode_fail_one_by_one() {
    // A packed chunk with no input that encodes: each is its own `Encode`
    // error, in its place, and nothing is sent.
    watchdog(LIMIT, || {
        let pool = pool(2);
        let got: Vec<_> = pool
            .map((0..10).map(|_| BadInput(Unserializable)))
            .chunksize(4)
            .collect();
        assert_eq!(got.len(), 10);
        for r in &got {
            assert!(matches!(r, Err(TaskError::Encode { .. })), "{r:?}");
        }
        // (One input too large among good ones: `hardening.rs`,
        // `map_chunks_are_cut_to_fit_the_frame_cap`.)
        still_works(&pool);
    });
}

#[test]
fn map_unordered_yields_every_result() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        let mut got: Vec<u64> = pool
            .map_unordered((0..500u64).map(Square))
            .chunksize(16)
            .map(|r| r.unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..500u64).map(|i| i * i).collect::<Vec<_>>());
    });
}

#[test]
fn map_is_lazy_and_bounded() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        let pulled = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let p = pulled.clone();
        let inputs = (0..10_000_000u64).map(move |i| {
            p.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Square(i)
        });
        let mut m = pool.map(inputs).chunksize(4);
        assert_eq!(
            pulled.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing before next()"
        );
        for i in 0..1000u64 {
            assert_eq!(m.next().unwrap().unwrap(), i * i);
        }
        let n = pulled.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            n < 1000 + 1000,
            "pulled {n} inputs for 1000 results: not bounded"
        );
        drop(m);
        still_works(&pool);
    });
}

#[test]
#[should_panic(expected = "chunksize must be at least 1")]
fn chunksize_zero_panics() {
    let pool = pool(1);
    let _ = pool.map((0..3u64).map(Square)).chunksize(0);
}

#[test]
fn shutdown_wait_and_cancel_pending_resolve_every_future_and_leave_no_process() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        let pids = pool.worker_pids();
        assert_eq!(pids.len(), 2);
        let futs: Vec<_> = (0..200u64)
            .map(|i| pool.submit(Square(i)).unwrap())
            .collect();
        pool.shutdown(Shutdown::Wait);
        pool.shutdown(Shutdown::Wait); // idempotent
        for (i, f) in futs.into_iter().enumerate() {
            assert_eq!(f.result().unwrap(), (i * i) as u64);
        }
        assert!(matches!(
            pool.submit(Square(1)),
            Err(SubmitError::Shutdown { .. })
        ));
        assert_eq!(wait_gone(&pids, Duration::from_secs(5)), Vec::<u32>::new());

        let pool = self::pool(1);
        let pids = pool.worker_pids();
        let slow: Vec<_> = (0..50)
            .map(|_| pool.submit(procpool_tasks::Sleep { millis: 20 }).unwrap())
            .collect();
        pool.shutdown(Shutdown::CancelPending);
        let mut cancelled = 0;
        for f in slow {
            match f.result() {
                Ok(20) => {}
                Err(TaskError::Cancelled) => cancelled += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(cancelled >= 40, "only {cancelled} of 50 were cancelled");
        assert_eq!(wait_gone(&pids, Duration::from_secs(5)), Vec::<u32>::new());
    });
}

#[test]
fn drop_runs_shutdown_wait_and_futures_resolve() {
    watchdog(LIMIT, || {
        let pool = pool(2);
        let pids = pool.worker_pids();
        let futs: Vec<_> = (0..100u64)
            .map(|i| pool.submit(Square(i)).unwrap())
            .collect();
        drop(pool);
        for (i, f) in futs.into_iter().enumerate() {
            assert_eq!(f.result().unwrap(), (i * i) as u64);
        }
        assert_eq!(wait_gone(&pids, Duration::from_secs(5)), Vec::<u32>::new());
    });
}

#[test]
fn cost_is_recorded_and_adds_up() {
    watchdog(LIMIT, || {
        let pool = pool(1);
        still_works(&pool);
        let t = std::time::Instant::now();
        let f = pool.submit(Echo(vec![1; 1 << 20])).unwrap();
        assert!(f.wait_timeout(Duration::from_secs(10)));
        let outside = t.elapsed();
        let cost = f.cost().expect("a finished task has a cost");
        // To a local worker the MiB goes after the frame as a bulk byte
        // string (`procpool_wire::bulk`): the payload holds an empty one
        // (1 byte) in its place; over TCP the frame holds a 5-byte length
        // and the bytes.
        let framing = framing_of_a_large_string();
        assert_eq!(
            cost.bytes_out,
            (1 << 20) + framing,
            "payload bytes out (the string's length + its bytes)"
        );
        assert_eq!(cost.bytes_back, (1 << 20) + framing);
        assert!(cost.encode_input > Duration::ZERO && cost.decode_output > Duration::ZERO);
        assert!(cost.decode_input > Duration::ZERO && cost.encode_output > Duration::ZERO);
        let parts = cost.serialization() + cost.queue_wait + cost.run + cost.ipc;
        assert_eq!(parts, cost.total, "the parts add up to the total");
        assert!(cost.total <= outside, "{:?} > {:?}", cost.total, outside);
        let stats = pool.stats();
        assert_eq!(stats.completed, 2);
        assert!(stats.sum.total >= cost.total);
    });
}

#[test]
fn dropping_a_map_midway_cancels_what_has_not_started_in_one_round() {
    watchdog(LIMIT, || {
        let pool = procpool_e2e::builder()
            .worker(worker())
            .workers(2)
            .prefetch(8)
            .build()
            .unwrap();
        let mut m = pool
            .map((0..100_000u64).map(|_| procpool_tasks::Sleep { millis: 20 }))
            .chunksize(16);
        assert_eq!(m.next().unwrap().unwrap(), 20);
        let t = std::time::Instant::now();
        drop(m);
        let took = t.elapsed();
        // Hundreds of prefetched items, withdrawn with one message round per
        // worker: far below one bounded round trip (250 ms) per item.
        assert!(took < Duration::from_secs(2), "drop took {took:?}");
        std::thread::sleep(Duration::from_millis(300));
        let ran = pool.stats().completed;
        // Only the chunks that had begun finish (16 items of 20 ms each per
        // worker at most, plus the one already yielded).
        assert!(
            ran <= 2 * 16 + 1,
            "{ran} tasks ran after the drop of a 100k-item map"
        );
        still_works(&pool);
    });
}

/// A map with chunksize 1 whose first input is long: the worker running it
/// holds at most `prefetch` inputs, the long one among them, even though
/// dispatch sends one-input chunks queued together in one frame (issue 14);
/// every other input runs on the other worker meanwhile.
#[test]
fn chunksize_1_map_leaves_at_most_prefetch_inputs_behind_a_long_one() {
    watchdog(LIMIT, || {
        const PREFETCH: usize = 4;
        let pool = procpool_e2e::builder()
            .worker(worker())
            .workers(2)
            .prefetch(PREFETCH)
            .build()
            .unwrap();
        let (long, short) = (1500, 5);
        let inputs = (0..41).map(|i| procpool_tasks::Sleep {
            millis: if i == 0 { long } else { short },
        });
        let order: Vec<u64> = pool
            .map_unordered(inputs)
            .chunksize(1)
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(order.len(), 41);
        let at = order.iter().position(|&m| m == long).unwrap();
        let behind = order.len() - 1 - at;
        assert!(
            behind < PREFETCH,
            "{behind} short inputs waited behind the long one (prefetch {PREFETCH}): {order:?}"
        );
        still_works(&pool);
    });
}

/// Tasks queued alone that dispatch sends to a fresh worker in one frame
/// (the unstarted tasks of a worker that died go back to the queue; its
/// replacement has room for all of them) each turn `Running` when they
/// begin, one at a time, and never before: `Running` stays exact.
#[test]
fn tasks_sent_in_one_frame_turn_running_one_at_a_time() {
    watchdog(LIMIT, || {
        let (pool, sleeps) =
            after_a_crash(|p| p.submit(procpool_tasks::Sleep { millis: 100 }).unwrap());
        let seen_running = watch_one_running_at_a_time(&sleeps, Duration::from_millis(2));
        assert_eq!(seen_running, [true; 4], "each was seen running");
        for f in sleeps {
            assert_eq!(f.result().unwrap(), 100);
        }
        still_works(&pool);
    });
}

/// The same with results that take the pool a while to decode: the task
/// after one in its batch turns `Running` only once that one is `Done`,
/// not while its result is still being decoded (the pool once marked the
/// next task running first, then resolved the one that ended).
#[test]
fn next_task_turns_running_only_after_the_one_before_it_is_done() {
    watchdog(LIMIT, || {
        // A `Vec<u8>` without `serde_bytes`: one varint per byte to decode
        // (16 KiB: small enough for dispatch to send the four as one batch).
        let data: Vec<u8> = (0..(16 << 10)).map(|i| (i % 251) as u8).collect();
        let (pool, echoes) =
            after_a_crash(|p| p.submit(procpool_tasks::EchoVec(data.clone())).unwrap());
        watch_one_running_at_a_time(&echoes, Duration::ZERO);
        for f in echoes {
            assert_eq!(f.result().unwrap(), data);
        }
        still_works(&pool);
    });
}

/// A pool of one worker whose first task kills it, and the futures of
/// the tasks `submit` adds meanwhile: they queue behind the crash, go back
/// to the queue, and reach the worker's replacement in one frame.
fn after_a_crash<T: Send + 'static>(
    submit: impl Fn(&ProcessPool) -> procpool::TaskFuture<T>,
) -> (ProcessPool, Vec<procpool::TaskFuture<T>>) {
    let pool = one_worker().build().unwrap();
    let crash = pool.submit(drill::KillSelf).unwrap();
    let futures = (0..4).map(|_| submit(&pool)).collect();
    assert!(matches!(crash.result(), Err(TaskError::WorkerDied { .. })));
    (pool, futures)
}

/// Polls `futures` (run by one worker, in order) every `every` until all
/// are done, failing if two read `Running` at once or one reads `Running`
/// before those ahead of it are done. Returns which were seen running.
fn watch_one_running_at_a_time<T: Send + 'static>(
    futures: &[procpool::TaskFuture<T>],
    every: Duration,
) -> Vec<bool> {
    let mut seen_running = vec![false; futures.len()];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !futures.iter().all(|f| f.done()) {
        // Read last to first: a task seen running began after the ones
        // ahead of it ended, so they read as done (read first to last,
        // task 0 could end and task 1 begin between the two reads, and
        // both would read as running).
        let mut states: Vec<_> = futures.iter().rev().map(|f| f.state()).collect();
        states.reverse();
        let running = states
            .iter()
            .filter(|&&s| s == procpool::State::Running)
            .count();
        assert!(
            running <= 1,
            "one worker, {running} tasks running: {states:?}"
        );
        for (i, s) in states.iter().enumerate() {
            seen_running[i] |= *s == procpool::State::Running;
            if *s == procpool::State::Running {
                assert!(
                    futures[..i].iter().all(|f| f.done()),
                    "task {i} running before the ones ahead of it ended: {states:?}"
                );
            }
        }
        assert!(std::time::Instant::now() < deadline, "stuck: {states:?}");
        if every.is_zero() {
            std::thread::yield_now();
        } else {
            std::thread::sleep(every);
        }
    }
    seen_running
}

/// Payload bytes a byte string of at least `procpool_wire::bulk::BULK_MIN`
/// bytes adds beyond its own: its length (5 bytes) in the frame over TCP,
/// an empty string's length (1 byte) in its place to a local worker (its
/// bytes follow the frame).
fn framing_of_a_large_string() -> u64 {
    match procpool_e2e::transport() {
        procpool::Transport::Tcp => 5,
        _ => 1,
    }
}

#[test]
fn large_byte_strings_and_strings_come_back_whole_on_every_transport() {
    use procpool_tasks::{EchoRecords, Record};
    watchdog(LIMIT, || {
        let pool = pool(2);
        // Bytes around the bulk threshold, strings with multi-byte UTF-8,
        // several large ones in one value among small ones.
        for len in [(64 << 10) - 1, 64 << 10, (3 << 20) + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let f = pool.submit(Echo(data.clone())).unwrap();
            assert_eq!(f.result().unwrap().into_vec(), data, "{len} bytes");
        }
        let mut records = Record::sample(50);
        records[3].name = "ä€x".repeat(40_000);
        records[17].name = "y".repeat(1 << 20);
        records[17].tags = vec!["z".repeat(70_000), "small".into()];
        let f = pool.submit(EchoRecords(records.clone())).unwrap();
        assert_eq!(f.result().unwrap(), records);
        let big = vec![3u8; 2 << 20];
        let f = pool.submit(Echo(big.clone())).unwrap();
        assert!(f.wait_timeout(Duration::from_secs(20)));
        let cost = f.cost().unwrap();
        assert_eq!(f.result().unwrap().into_vec(), big);
        assert_eq!(cost.bytes_out, (2 << 20) + framing_of_a_large_string());
        procpool_e2e::still_works(&pool);
    });
}

/// A task's input with bulk byte strings is kept whole until the task
/// ends: sent again after its worker died before starting it (written
/// once more from the kept value), it arrives whole, as it does on its
/// first send.
#[test]
fn a_large_input_sent_again_after_its_worker_died_arrives_whole() {
    watchdog(LIMIT, || {
        let pool = one_worker().build().unwrap();
        for round in 0..3usize {
            let crash = pool.submit(drill::KillSelf).unwrap();
            let inputs: Vec<Vec<u8>> = (0..3)
                .map(|k| {
                    (0..(1 << 20) + k * 7 + round)
                        .map(|i| (i * 13 % 251) as u8)
                        .collect()
                })
                .collect();
            let echoes: Vec<_> = inputs
                .iter()
                .map(|d| pool.submit(Echo(d.clone())).unwrap())
                .collect();
            assert!(
                matches!(crash.result(), Err(TaskError::WorkerDied { .. })),
                "round {round}"
            );
            for (f, d) in echoes.into_iter().zip(&inputs) {
                assert_eq!(&f.result().unwrap().into_vec(), d, "round {round}");
            }
        }
        procpool_e2e::still_works(&pool);
    });
}

/// Bulk byte strings go after their frame straight from the value, by a
/// second encoding of it: a value that encodes differently the second
/// time cannot be written as its frame said. An input like that fails its
/// own task with `Encode { side: Parent }` (the connection it broke is
/// replaced, the task is not sent again); an output like that ends its
/// worker (it cannot finish the frame it began), and the task fails with
/// `Protocol` (its result ended early). Other tasks and the pool go on.
/// Over TCP large byte strings stay in their frame: both tasks work.
#[test]
fn a_value_that_encodes_differently_the_second_time_fails_only_its_task() {
    use drill::{Shifty, ShiftyInput, ShiftyOutput};
    watchdog(LIMIT, || {
        let pool = procpool_e2e::builder()
            .worker(worker())
            .workers(2)
            .retries(0)
            .build()
            .unwrap();
        let tcp = procpool_e2e::transport() == procpool::Transport::Tcp;
        let before = pool.submit(Square(3)).unwrap();
        let shifty = pool.submit(ShiftyInput(Shifty::new(100 << 10))).unwrap();
        let after: Vec<_> = (0..8u64).map(|i| pool.submit(Square(i)).unwrap()).collect();
        match shifty.result() {
            // Over TCP the bytes go inside the frame: encoded once.
            Ok(len) if tcp => assert_eq!(len, 100 << 10),
            Err(TaskError::Encode {
                side: Side::Parent,
                message,
                ..
            }) if !tcp => assert!(message.contains("second encoding"), "{message}"),
            other => panic!("a shifty input: {other:?}"),
        }
        assert_eq!(before.result().unwrap(), 9);
        for (i, f) in after.into_iter().enumerate() {
            assert_eq!(f.result().unwrap(), (i * i) as u64);
        }
        let out = pool.submit(ShiftyOutput(100 << 10)).unwrap();
        match out.result() {
            Ok(back) if tcp => assert_eq!(back.0.into_inner(), 100 << 10),
            Err(TaskError::Protocol { message, .. }) if !tcp => {
                assert!(message.contains("bulk"), "{message}");
            }
            other => panic!("a shifty output: {other:?}"),
        }
        // Below the bulk threshold there is no second encoding.
        let small = pool.submit(ShiftyInput(Shifty::new(1000))).unwrap();
        assert_eq!(small.result().unwrap(), 1000);
        procpool_e2e::still_works(&pool);
    });
}

/// Cancels racing the end of the task ahead in the same frame: the pool
/// takes a task's end to mean the next task of its frame began (and marks
/// it `Running`), but the worker may have handed that next task back to a
/// `cancel()` first. Every future still ends, and a `cancel()` that returned
/// `true` leaves it cancelled, never stuck `Running`. (The four sleeps reach
/// the worker's replacement in one frame: they were queued when their
/// worker died.)
#[test]
fn cancels_racing_the_task_ahead_in_a_frame_leave_no_future_unresolved() {
    watchdog(Duration::from_secs(90), || {
        // The pool's reader looks at the reply ring for the whole of a task
        // (it reads the socket, where the worker's answer to the cancel
        // waits, only after): the first task's end is read before the
        // answer, which is the race at its widest.
        let pool = one_worker()
            .ring_spin(Duration::from_millis(30))
            .build()
            .unwrap();
        for round in 0..10u64 {
            let crash = pool.submit(drill::KillSelf).unwrap();
            let sleeps: Vec<_> = (0..4)
                .map(|_| pool.submit(procpool_tasks::Sleep { millis: 20 }).unwrap())
                .collect();
            assert!(crash.result().is_err());
            let t = std::time::Instant::now();
            while sleeps[0].state() == procpool::State::Pending {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "round {round}: never began"
                );
                std::thread::sleep(Duration::from_micros(100));
            }
            // While the first runs.
            std::thread::sleep(Duration::from_millis(5 + round % 5));
            let cancelled = sleeps[1].cancel();
            for (i, f) in sleeps.into_iter().enumerate() {
                let c = i == 1 && cancelled;
                match f.result_timeout(Duration::from_secs(10)) {
                    Ok(_) => assert!(!c, "round {round}, task {i}: cancel() was true, yet it ran"),
                    Err(procpool::WaitError::Failed(e)) => {
                        assert!(c && e.is_cancelled(), "round {round}, task {i}: {e:?}");
                    }
                    Err(procpool::WaitError::TimedOut(f)) => panic!(
                        "round {round}, task {i} (cancel() {c}) never ended: {:?}",
                        f.state()
                    ),
                }
            }
        }
        still_works(&pool);
    });
}

/// Tasks whose inputs carry bulk byte strings (sent after their frame, and
/// counted toward the frame cap with it) never share a frame: four of
/// 100 KiB queued together (their worker died) reach a worker whose frame
/// cap is 300 KiB, each whole.
#[test]
fn tasks_with_bulk_bytes_queued_together_each_fit_the_frame_cap() {
    watchdog(LIMIT, || {
        let pool = one_worker().max_frame_bytes(300 << 10).build().unwrap();
        let crash = pool.submit(drill::KillSelf).unwrap();
        let data: Vec<u8> = (0..100 << 10).map(|i| (i % 251) as u8).collect();
        let echoes: Vec<_> = (0..4)
            .map(|_| pool.submit(Echo(data.clone())).unwrap())
            .collect();
        assert!(crash.result().is_err());
        for (i, f) in echoes.into_iter().enumerate() {
            assert_eq!(f.result().unwrap().into_vec(), data, "echo {i}");
        }
        still_works(&pool);
    });
}

/// A map that cannot pack its chunks (here: retries set) sends a chunk's
/// tasks in one frame, cut at the frame cap: their bulk byte strings,
/// which follow the frame, count toward it. Four 100 KiB inputs in one
/// chunk for a 300 KiB cap go in more than one frame, each whole.
#[test]
fn a_chunk_of_tasks_with_bulk_bytes_is_cut_at_the_frame_cap() {
    watchdog(LIMIT, || {
        let pool = procpool_e2e::builder()
            .worker(worker())
            .workers(1)
            .retries(1)
            .max_frame_bytes(300 << 10)
            .build()
            .unwrap();
        let data: Vec<u8> = (0..100 << 10).map(|i| (i % 249) as u8).collect();
        let out: Vec<_> = pool
            .map((0..4).map(|_| Echo(data.clone())))
            .chunksize(4)
            .collect();
        for (i, r) in out.into_iter().enumerate() {
            assert_eq!(r.unwrap().into_vec(), data, "echo {i}");
        }
        assert_eq!(pool.stats().failed, 0);
        still_works(&pool);
    });
}
