//! A program that makes the first hour's setup mistakes on purpose, for
//! `tests/tests/first_hour_mistakes.rs`. Prints one line starting `OK`,
//! `BUILD ERROR` or `SUBMIT ERROR`, with the milliseconds it took.
//!
//! * `forgot` — `main()` builds a pool of itself without calling
//!   `run_if_worker`. A safety net keeps the old behaviour (each worker
//!   building its own pool, without end) from running away: a process two
//!   levels down writes a mark file into `$MISTAKES_MARKS` and exits.
//! * `default` — the same in the Quickstart's shape: the default worker,
//!   which is then the bundled one (the test makes sure it is not found).
//! * `bundled` — own tasks on the bundled worker (`PROCPOOL_WORKER` says
//!   where it is).
//! * `inherit`, `discard` — not mistakes: a worker's output passed as is,
//!   or thrown away (`WorkerOutput`).
#![forbid(unsafe_code)]

use std::time::Instant;

use procpool::{ProcessPool, WorkerCommand};

/// A task of this program's own.
#[procpool::task]
fn checksum(bytes: Vec<u8>) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

/// Prints a line on stderr (in the worker).
#[procpool::task]
fn say(words: String) {
    eprintln!("{words}");
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    // Every mode but `forgot` and `default` is its own worker (a worker
    // gets no mode).
    if mode != "forgot" && mode != "default" {
        procpool::worker::run_if_worker(procpool::Registry::collected());
    }
    let depth: u32 = std::env::var("MISTAKES_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    if depth >= 2 {
        if let Ok(dir) = std::env::var("MISTAKES_MARKS") {
            let _ = std::fs::write(format!("{dir}/{}", std::process::id()), b"");
        }
        std::process::exit(99);
    }
    let started = Instant::now();
    match mode.as_str() {
        "forgot" => {
            // The mistake: no `procpool::worker::run_if_worker(..)` here.
            let built = ProcessPool::builder()
                .worker(
                    WorkerCommand::current_exe()
                        .arg("forgot")
                        .env("MISTAKES_DEPTH", (depth + 1).to_string()),
                )
                .workers(2)
                .build();
            match built {
                Ok(_) => println!("OK built after {} ms", started.elapsed().as_millis()),
                Err(e) => {
                    println!(
                        "BUILD ERROR after {} ms: {e}",
                        started.elapsed().as_millis()
                    );
                    std::process::exit(3);
                }
            }
        }
        "bundled" => {
            let pool = ProcessPool::builder()
                .worker(WorkerCommand::bundled())
                .workers(1)
                .build()
                .expect("the bundled worker starts");
            let t0 = Instant::now();
            match pool.submit(Checksum { bytes: vec![1, 2] }) {
                Ok(_) => println!("OK submitted"),
                Err(e) => println!("SUBMIT ERROR after {} ms: {e}", t0.elapsed().as_millis()),
            }
        }
        "default" => {
            // The mistake in the Quickstart's shape: no `run_if_worker`,
            // the default worker (then the bundled one, not installed).
            match ProcessPool::builder().workers(1).build() {
                Ok(_) => println!("OK built after {} ms", started.elapsed().as_millis()),
                Err(e) => {
                    println!(
                        "BUILD ERROR after {} ms: {e}\nDEBUG {e:?}",
                        started.elapsed().as_millis()
                    );
                    std::process::exit(3);
                }
            }
        }
        "inherit" | "discard" => {
            // Not a mistake: where the workers' output goes.
            let output = if mode == "inherit" {
                procpool::WorkerOutput::Inherit
            } else {
                procpool::WorkerOutput::Discard
            };
            let pool = ProcessPool::builder()
                .worker_output(output)
                .workers(1)
                .build()
                .expect("a pool of this program starts");
            pool.submit(Say {
                words: format!("output-check-{mode}"),
            })
            .expect("submitted")
            .result()
            .expect("said");
            drop(pool);
            println!("OK {mode}");
        }
        other => {
            eprintln!("unknown mode `{other}`: forgot | default | bundled | inherit | discard");
            std::process::exit(2);
        }
    }
}
