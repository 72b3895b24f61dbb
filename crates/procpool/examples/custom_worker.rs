//! Your own tasks and your own worker: define `Task`s and an `Initializer`,
//! list them in a `Registry`, and let this very program be the worker
//! binary (`run_if_worker` first thing in `main`, `WorkerCommand::current_exe()`
//! in the builder). No separate binary to build or ship.
//!
//! In a real project the task types live in a library crate that both the
//! parent and the worker binary link; here both are this one file.
//!
//! `cargo run -p procpool --example custom_worker`

use std::collections::HashSet;

use procpool::{
    InitError, Initializer, ProcessPool, Registry, Shutdown, SubmitError, Task, WorkerCommand,
    WorkerContext,
};
use serde::{Deserialize, Serialize};

/// Counts the words of a text that are not stop words.
#[derive(Serialize, Deserialize, Debug)]
struct CountWords {
    text: String,
}

impl Task for CountWords {
    const NAME: &'static str = "example_count_words";
    /// (words counted, pid of the worker that counted them)
    type Output = (usize, u32);

    fn run(self, ctx: &mut WorkerContext) -> (usize, u32) {
        let stop = ctx.get::<StopWords>();
        let n = self
            .text
            .split_whitespace()
            .filter(|w| stop.is_none_or(|s| !s.0.contains(&w.to_lowercase())))
            .count();
        (n, std::process::id())
    }
}

/// A fallible task: its `Err` is the task's own value (`Ok(Err(..))` at the
/// caller), not a pool error.
#[derive(Serialize, Deserialize, Debug)]
struct ParseNumber(String);

impl Task for ParseNumber {
    const NAME: &'static str = "example_parse_number";
    type Output = Result<i64, String>;

    fn run(self, _: &mut WorkerContext) -> Result<i64, String> {
        self.0
            .trim()
            .parse()
            .map_err(|e| format!("{:?} is not a number: {e}", self.0))
    }
}

/// Runs once in every worker: loads the stop words into its context.
#[derive(Serialize, Deserialize, Debug)]
struct LoadStopWords {
    words: Vec<String>,
}

/// What [`LoadStopWords`] leaves for the tasks.
struct StopWords(HashSet<String>);

impl Initializer for LoadStopWords {
    const NAME: &'static str = "example_load_stop_words";

    fn init(self, ctx: &mut WorkerContext) -> Result<(), InitError> {
        if self.words.is_empty() {
            return Err("no stop words given".into());
        }
        ctx.insert(StopWords(self.words.into_iter().collect()));
        Ok(())
    }
}

/// A task this worker does NOT register: asking for it is a typed error
/// at submit.
#[derive(Serialize, Deserialize, Debug)]
struct NotRegistered;

impl Task for NotRegistered {
    const NAME: &'static str = "example_not_registered";
    type Output = ();
    fn run(self, _: &mut WorkerContext) {}
}

/// Everything the worker side knows.
fn registry() -> Registry {
    Registry::new()
        .task::<CountWords>()
        .task::<ParseNumber>()
        .initializer::<LoadStopWords>()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In a worker process this serves tasks and never returns.
    procpool::worker::run_if_worker(registry());

    let pool = ProcessPool::builder()
        .worker(WorkerCommand::current_exe())
        .workers(2)
        .initializer(LoadStopWords {
            words: ["the", "a", "of", "and"].map(String::from).to_vec(),
        })
        .build()?;
    println!(
        "parent pid {}, worker pids {:?}",
        std::process::id(),
        pool.worker_pids()
    );

    let texts = [
        "The quick brown fox jumps over the lazy dog",
        "A tale of two cities",
        "Pride and prejudice",
    ];
    for r in pool.map(texts.iter().map(|t| CountWords {
        text: (*t).to_owned(),
    })) {
        let (n, pid) = r?;
        println!("{n} words counted by worker pid {pid}");
    }

    for input in ["42", "forty-two"] {
        match pool.submit(ParseNumber(input.into()))?.result()? {
            Ok(n) => println!("parsed {n}"),
            Err(e) => println!("the task's own error, as a value: {e}"),
        }
    }

    // The workers said in their hello which tasks they know, so a task none
    // of them can run is refused at submit, handed back (SEMANTICS 28).
    match pool.submit(NotRegistered) {
        Err(e @ SubmitError::NoWorkerCanRun { .. }) => println!("as expected: {e}"),
        other => println!("unexpected: {other:?}"),
    }

    // An initializer that fails makes build() fail, naming the worker.
    let err = ProcessPool::builder()
        .worker(WorkerCommand::current_exe())
        .workers(1)
        .initializer(LoadStopWords { words: Vec::new() })
        .build()
        .expect_err("an empty stop-word list is refused");
    println!("as expected: {err}");

    pool.shutdown(Shutdown::Wait);
    Ok(())
}
