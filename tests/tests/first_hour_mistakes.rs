//! The first hour's setup mistakes, each caught at once with the fix in
//! the message: real worker processes, each within a second.
#![forbid(unsafe_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use procpool::{SubmitError, Task, TaskError, WorkerContext};
use procpool_e2e::{process_pool_of, test_worker, watchdog};
use serde::{Deserialize, Serialize};

const MISTAKES: &str = env!("CARGO_BIN_EXE_procpool-first-hour-mistakes");

/// Runs the mistakes program in `mode` (under a watchdog); its stdout,
/// stderr, exit code, and how long it took.
fn mistakes(
    mode: &'static str,
    envs: Vec<(&'static str, String)>,
) -> (String, String, i32, Duration) {
    watchdog(Duration::from_secs(30), move || {
        let t0 = Instant::now();
        let out = Command::new(MISTAKES)
            .arg(mode)
            .envs(envs)
            .output()
            .expect("the mistakes program runs");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.code().unwrap_or(-1),
            t0.elapsed(),
        )
    })
}

#[test]
fn a_worker_whose_main_forgot_run_if_worker_refuses_and_the_build_fails_within_a_second() {
    let marks = std::env::temp_dir().join(format!("procpool-marks-{}", std::process::id()));
    std::fs::create_dir_all(&marks).unwrap();
    let (stdout, stderr, code, took) = mistakes(
        "forgot",
        vec![("MISTAKES_MARKS", marks.display().to_string())],
    );
    let grandchildren = std::fs::read_dir(&marks).unwrap().count();
    let _ = std::fs::remove_dir_all(&marks);
    eprintln!("took {took:?}\nstdout: {stdout}\nstderr: {stderr}");
    assert_eq!(code, 3, "the parent's build() must fail");
    assert!(stdout.starts_with("BUILD ERROR"), "{stdout}");
    let ms: u64 = stdout
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .expect("milliseconds in the line");
    assert!(ms < 1000, "build() failed only after {ms} ms: {stdout}");
    // The message names the program and the call to add.
    assert!(stdout.contains("procpool-first-hour-mistakes"), "{stdout}");
    assert!(
        stdout.contains("did not call `procpool::worker::run_if_worker` first"),
        "{stdout}"
    );
    assert!(stdout.contains("first line of `main`"), "{stdout}");
    // No worker built a pool of its own: nothing two levels down started.
    assert_eq!(grandchildren, 0, "workers started workers of their own");
}

#[test]
fn forgetting_run_if_worker_with_the_default_worker_says_to_call_it_within_a_second() {
    // A copy of the program where no bundled `procpool-worker` is found: not
    // next to it, not on PATH, no PROCPOOL_WORKER.
    let dir = std::env::temp_dir().join(format!("procpool-default-{}", std::process::id()));
    let empty = dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let program = dir.join("procpool-first-hour-mistakes");
    std::fs::copy(MISTAKES, &program).unwrap();
    let (stdout, code, took) = watchdog(Duration::from_secs(30), move || {
        // A test forking meanwhile may still hold the copy's write handle
        // (inherited until its exec): exec then fails with ETXTBSY for a
        // moment. Only the run that starts is timed.
        let mut tries = 0;
        let (out, t0) = loop {
            let t0 = Instant::now();
            match Command::new(&program)
                .arg("default")
                .env("PATH", &empty)
                .env_remove("PROCPOOL_WORKER")
                .output()
            {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break (other.expect("the copy runs"), t0),
            }
        };
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code().unwrap_or(-1),
            t0.elapsed(),
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("took {took:?}\nstdout: {stdout}");
    assert_eq!(code, 3, "build() must fail: {stdout}");
    assert!(stdout.starts_with("BUILD ERROR"), "{stdout}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Display and Debug (what `main` returning `Err` prints) both say
    // what to add, and where the bundled worker comes from.
    for form in stdout.lines() {
        assert!(
            form.contains("did not call `procpool::worker::run_if_worker`"),
            "{form}"
        );
        assert!(
            form.contains("procpool::worker::run_if_worker(procpool::Registry::collected());"),
            "{form}"
        );
        assert!(form.contains("first line of `main`"), "{form}");
        assert!(form.contains("PROCPOOL_WORKER"), "{form}");
        assert!(!form.contains("cargo install"), "not published: {form}");
    }
    assert!(
        stdout
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("DEBUG WorkerNotFound"),
        "{stdout}"
    );
}

#[test]
fn own_tasks_on_the_bundled_worker_are_refused_at_submit_saying_use_current_exe() {
    let (stdout, stderr, code, _) = mistakes(
        "bundled",
        vec![(
            "PROCPOOL_WORKER",
            env!("CARGO_BIN_EXE_procpool-test-worker").to_owned(),
        )],
    );
    eprintln!("stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(code, 0);
    assert!(stdout.starts_with("SUBMIT ERROR"), "{stdout}");
    assert!(
        stdout.contains("`procpool_first_hour_mistakes::checksum`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("procpool-test-worker"),
        "names the worker program: {stdout}"
    );
    assert!(
        stdout.contains(" tasks: `checked`, "),
        "lists what it knows: {stdout}"
    );
    assert!(stdout.contains("WorkerCommand::current_exe()"), "{stdout}");
    assert!(stdout.contains("run_if_worker"), "{stdout}");
}

/// A task of this test binary's own: the test worker does not have it.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct NotInTheWorker(u32);

impl Task for NotInTheWorker {
    const NAME: &'static str = "not_in_the_worker";
    type Output = u32;
    fn run(self, _: &mut WorkerContext) -> u32 {
        self.0
    }
}

/// Another type under the name of a built-in task.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct MySquare(String);

impl Task for MySquare {
    const NAME: &'static str = procpool_tasks::Square::NAME;
    type Output = String;
    fn run(self, _: &mut WorkerContext) -> String {
        self.0
    }
}

#[test]
fn a_task_no_worker_can_run_is_refused_at_submit_naming_the_program_and_its_tasks() {
    watchdog(Duration::from_secs(60), || {
        let pool = process_pool_of(test_worker!(), 1);
        let t0 = Instant::now();
        let err = pool
            .submit(NotInTheWorker(5))
            .expect_err("refused at submit");
        assert!(
            t0.elapsed() < Duration::from_millis(100),
            "{:?}",
            t0.elapsed()
        );
        let text = err.to_string();
        match &err {
            SubmitError::NoWorkerCanRun {
                name,
                program,
                known,
                ..
            } => {
                assert_eq!(*name, "not_in_the_worker");
                assert!(program.ends_with("procpool-test-worker"), "{program}");
                assert!(known.iter().any(|k| k == "square"), "{known:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(text.contains("`not_in_the_worker`"), "{text}");
        assert!(text.contains("procpool-test-worker"), "{text}");
        assert!(text.contains("#[procpool::task]"), "{text}");
        assert_eq!(
            err.into_task(),
            NotInTheWorker(5),
            "the task is handed back"
        );

        // In a map, every input says so, at once.
        let results: Vec<_> = pool.map((0..10).map(NotInTheWorker)).collect();
        assert_eq!(results.len(), 10);
        for r in results {
            match r {
                Err(TaskError::NoWorkerCanRun { name, .. }) => {
                    assert_eq!(name, "not_in_the_worker")
                }
                other => panic!("{other:?}"),
            }
        }
        procpool_e2e::still_works(&pool);
    });
}

#[test]
fn two_task_types_sharing_a_name_say_so_at_submit() {
    watchdog(Duration::from_secs(60), || {
        let pool = process_pool_of(test_worker!(), 1);
        let err = pool
            .submit(MySquare("x".into()))
            .expect_err("another type under `square` is refused");
        let text = err.to_string();
        assert!(
            text.contains("two task types share the name `square`"),
            "{text}"
        );
        assert!(text.contains("procpool_tasks::Square"), "{text}");
        assert!(text.contains("MySquare"), "{text}");
        assert!(text.contains("another NAME"), "{text}");
        procpool_e2e::still_works(&pool);
    });
}

#[test]
fn worker_output_inherited_or_discarded() {
    let (stdout, stderr, code, _) = mistakes("inherit", vec![]);
    assert_eq!((code, stdout.trim()), (0, "OK inherit"), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("output-check-inherit"))
        .unwrap_or_else(|| panic!("the worker's line is missing: {stderr}"));
    assert_eq!(line, "output-check-inherit", "passed as is, no prefix");

    let (stdout, stderr, code, _) = mistakes("discard", vec![]);
    assert_eq!((code, stdout.trim()), (0, "OK discard"), "{stderr}");
    assert!(!stderr.contains("output-check-discard"), "{stderr}");
}
