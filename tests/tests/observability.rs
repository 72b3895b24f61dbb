//! What a program sees through `tracing`: a span per task in the parent
//! (target `procpool::task`) and in the worker (`procpool::worker`), and
//! worker output as events (`WorkerOutput::Tracing`). One global
//! subscriber for the whole binary captures everything into a buffer.
#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use procpool::{ProcessPool, WorkerOutput};
use procpool_e2e::{test_worker, watchdog};
use procpool_tasks::{Square, drill};

/// Everything the subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured() -> Captured {
    static CAPTURE: OnceLock<Captured> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let c = Captured::default();
            let writer = c.clone();
            tracing_subscriber::fmt()
                .with_env_filter("procpool::task=debug,procpool::worker::output=info")
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .init();
            c
        })
        .clone()
}

fn text(c: &Captured) -> String {
    String::from_utf8_lossy(&c.0.lock().unwrap()).into_owned()
}

#[test]
fn each_task_has_a_span_in_the_parent_with_its_worker_and_cost() {
    let c = captured();
    watchdog(Duration::from_secs(60), move || {
        let pool = ProcessPool::builder()
            .worker(test_worker!())
            .workers(1)
            .build()
            .unwrap();
        let pid = pool.worker_pids()[0];
        assert_eq!(
            pool.submit(Square(1234)).unwrap().result().unwrap(),
            1234 * 1234
        );
        drop(pool);
        let log = text(&c);
        let mine = format!("worker.pid={pid}");
        let line = log
            .lines()
            .find(|l| l.contains("procpool::task: task done") && l.contains(&mine))
            .unwrap_or_else(|| panic!("no span of the task in:\n{log}"));
        for field in [
            "task{task.id=",
            "task.name=\"square\"",
            "worker.id=0",
            "cost.total_us=",
            "cost.run_us=",
            "cost.serde_us=",
            "bytes.out=3",
            "bytes.back=5", // 1234² as a varint
        ] {
            assert!(line.contains(field), "`{field}` missing from: {line}");
        }
    });
}

#[test]
fn worker_output_can_be_tracing_events_and_the_worker_has_task_spans() {
    let c = captured();
    watchdog(Duration::from_secs(60), move || {
        let pool = ProcessPool::builder()
            .worker(
                test_worker!()
                    .env("RUST_LOG", "procpool::worker=debug")
                    .env("NO_COLOR", "1"),
            )
            .worker_output(WorkerOutput::Tracing)
            .workers(1)
            .build()
            .unwrap();
        let pid = pool.worker_pids()[0];
        let err = pool
            .submit(drill::Panic("observable-kaboom".into()))
            .unwrap()
            .result()
            .unwrap_err();
        assert!(err.is_panic());
        assert_eq!(pool.submit(Square(3)).unwrap().result().unwrap(), 9);
        drop(pool); // the output pipe ends with the worker
        let log = text(&c);
        // The worker's panic line, as an event of the parent's.
        let panic_line = log
            .lines()
            .find(|l| l.contains("observable-kaboom") && l.contains("procpool::worker::output"))
            .unwrap_or_else(|| panic!("no output event in:\n{log}"));
        assert!(panic_line.contains("worker.id=0"), "{panic_line}");
        assert!(
            !panic_line.contains("[procpool worker"),
            "still prefixed: {panic_line}"
        );
        // The worker's own span of the task (its log line, forwarded).
        let span_line = log
            .lines()
            .find(|l| {
                l.contains("task done")
                    && l.contains("task.name=\"square\"")
                    && l.contains("procpool::worker:")
            })
            .unwrap_or_else(|| panic!("no worker span in:\n{log}"));
        assert!(
            span_line.contains(&format!("worker.pid={pid}")),
            "{span_line}"
        );
        assert!(span_line.contains("cost.run_us="), "{span_line}");
    });
}
