//! `procpool run TASK [ARGS]`: runs built-in tasks (procpool-tasks) on a
//! process pool and prints each result or typed error, with its cost.

use std::fmt::Debug;
use std::time::Duration;

use procpool::{ProcessPool, Shutdown, Task, TaskFuture, WorkerCommand};
use procpool_tasks::{Checked, Echo, Sleep, Spin, Square, WhoAmI, drill};

use crate::stats::{fmt_bytes, fmt_duration};

/// The tasks `run` knows, with their arguments, for `--help` and errors.
pub const TASKS: &str = "  square N...           N * N for each N
  checked N...          a fallible task: N / 2, or the task's own Err for odd N
  sleep MS...           sleeps MS milliseconds
  spin ITERATIONS...    burns CPU
  echo TEXT...          sends each TEXT and back (serde_bytes)
  whoami [COUNT]        which worker and pid ran it (COUNT tasks, default 4)
  panic [MESSAGE]       panics: TaskError::Panicked, the worker lives
  abort                 aborts its worker: TaskError::WorkerDied, the pool replaces it
  exit [CODE]           exits its worker with CODE (default 3)
  kill-self             SIGKILLs its own worker
  hang                  never returns: TaskError::TimedOut (--timeout, default 1000 ms)
  alloc BYTES           allocates BYTES in the worker
  bad-input             input will not serialize: SubmitError, nothing sent
  undecodable-input     worker cannot decode the input: TaskError::Decode
  bad-output            worker cannot encode the output: TaskError::Encode
  panicky-output        output's Serialize panics: TaskError::Encode
  undecodable-output    parent cannot decode the output: TaskError::Decode";

/// Options of `run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The task's name as typed.
    pub task: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Workers in the pool.
    pub workers: usize,
    /// Per-task timeout.
    pub timeout: Option<Duration>,
}

fn numbers(task: &str, args: &[String]) -> Result<Vec<u64>, String> {
    if args.is_empty() {
        return Err(format!("`{task}` needs at least one number"));
    }
    args.iter()
        .map(|a| {
            a.replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("`{task}`: `{a}` is not a whole number"))
        })
        .collect()
}

fn at_most_one(task: &str, args: &[String]) -> Result<Option<String>, String> {
    match args {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err(format!("`{task}` takes at most one argument")),
    }
}

fn none(task: &str, args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(format!("`{task}` takes no arguments"))
    }
}

/// One line per task, in submission order.
struct Printer<'a> {
    pool: &'a ProcessPool,
    failures: usize,
}

impl Printer<'_> {
    fn go<T: Task>(&mut self, tasks: Vec<(String, T)>, show: impl Fn(&T::Output) -> String) {
        let mut futures: Vec<(String, Option<TaskFuture<T::Output>>)> = Vec::new();
        for (label, task) in tasks {
            match self.pool.submit(task) {
                Ok(f) => futures.push((label, Some(f))),
                Err(e) => {
                    println!("{label}: not submitted: {e}");
                    self.failures += 1;
                    futures.push((label, None));
                }
            }
        }
        for (label, f) in futures {
            let Some(f) = f else { continue };
            f.wait();
            let cost = f.cost();
            match f.result() {
                Ok(v) => {
                    let cost = cost.map_or(String::new(), |c| {
                        format!(
                            "   [{} total: encode {}, decode {}, run {}, ipc {}; {} out, {} back]",
                            fmt_duration(c.total),
                            fmt_duration(c.encode_input + c.encode_output),
                            fmt_duration(c.decode_input + c.decode_output),
                            fmt_duration(c.run),
                            fmt_duration(c.ipc),
                            fmt_bytes(c.bytes_out),
                            fmt_bytes(c.bytes_back),
                        )
                    });
                    println!("{label} = {}{cost}", show(&v));
                }
                Err(e) => {
                    println!("{label} failed: {e}");
                    self.failures += 1;
                }
            }
        }
    }
}

fn debug<T: Debug>(v: &T) -> String {
    format!("{v:?}")
}

/// Runs the demo; returns how many tasks failed.
pub fn run(opts: &RunOptions) -> Result<usize, String> {
    let name = opts.task.as_str();
    let args = opts.args.as_slice();
    let mut timeout = opts.timeout;
    if name == "hang" && timeout.is_none() {
        timeout = Some(Duration::from_millis(1000));
        eprintln!("procpool: `hang` never returns; using --timeout 1000");
    }
    // Check the task name and arguments before starting workers.
    enum Plan {
        Square(Vec<u64>),
        Checked(Vec<u64>),
        Sleep(Vec<u64>),
        Spin(Vec<u64>),
        Echo(Vec<String>),
        WhoAmI(u64),
        Panic(String),
        Abort,
        Exit(i32),
        KillSelf,
        Hang,
        Alloc(u64),
        BadInput,
        UndecodableInput,
        BadOutput,
        PanickyOutput,
        UndecodableOutput,
    }
    let plan = match name {
        "square" => Plan::Square(numbers(name, args)?),
        "checked" => Plan::Checked(numbers(name, args)?),
        "sleep" => Plan::Sleep(numbers(name, args)?),
        "spin" => Plan::Spin(numbers(name, args)?),
        "echo" if args.is_empty() => return Err("`echo` needs at least one TEXT".into()),
        "echo" => Plan::Echo(args.to_vec()),
        "whoami" => Plan::WhoAmI(match at_most_one(name, args)? {
            None => 4,
            Some(n) => numbers(name, &[n])?[0],
        }),
        "panic" => Plan::Panic(at_most_one(name, args)?.unwrap_or_else(|| "boom".into())),
        "abort" => none(name, args).map(|()| Plan::Abort)?,
        "exit" => Plan::Exit(match at_most_one(name, args)? {
            None => 3,
            Some(c) => c
                .parse()
                .map_err(|_| format!("`exit`: `{c}` is not an exit code"))?,
        }),
        "kill-self" => none(name, args).map(|()| Plan::KillSelf)?,
        "hang" => none(name, args).map(|()| Plan::Hang)?,
        "alloc" => match numbers(name, args)?.as_slice() {
            [n] => Plan::Alloc(*n),
            _ => return Err("`alloc` takes one BYTES argument".into()),
        },
        "bad-input" => none(name, args).map(|()| Plan::BadInput)?,
        "undecodable-input" => none(name, args).map(|()| Plan::UndecodableInput)?,
        "bad-output" => none(name, args).map(|()| Plan::BadOutput)?,
        "panicky-output" => none(name, args).map(|()| Plan::PanickyOutput)?,
        "undecodable-output" => none(name, args).map(|()| Plan::UndecodableOutput)?,
        other => {
            return Err(format!(
                "unknown task `{other}`; the built-in tasks are:\n{TASKS}"
            ));
        }
    };

    let mut builder = ProcessPool::builder()
        .worker(WorkerCommand::current_exe())
        .workers(opts.workers);
    if let Some(t) = timeout {
        builder = builder.task_timeout(t);
    }
    let pool = builder
        .build()
        .map_err(|e| format!("cannot start the process pool: {e}"))?;
    let mut p = Printer {
        pool: &pool,
        failures: 0,
    };
    let each = |xs: Vec<u64>, label: &str| -> Vec<(String, u64)> {
        xs.into_iter()
            .map(|x| (format!("{label}({x})"), x))
            .collect()
    };
    match plan {
        Plan::Square(xs) => p.go(
            each(xs, "square")
                .into_iter()
                .map(|(l, x)| (l, Square(x)))
                .collect(),
            debug,
        ),
        Plan::Checked(xs) => p.go(
            each(xs, "checked")
                .into_iter()
                .map(|(l, x)| (l, Checked(x)))
                .collect(),
            debug,
        ),
        Plan::Sleep(xs) => p.go(
            each(xs, "sleep")
                .into_iter()
                .map(|(l, x)| (l, Sleep { millis: x }))
                .collect(),
            debug,
        ),
        Plan::Spin(xs) => p.go(
            each(xs, "spin")
                .into_iter()
                .map(|(l, x)| (l, Spin { iterations: x }))
                .collect(),
            debug,
        ),
        Plan::Echo(texts) => p.go(
            texts
                .into_iter()
                .map(|t| (format!("echo({t:?})"), Echo(t.into_bytes())))
                .collect(),
            |b| format!("{:?}", String::from_utf8_lossy(b)),
        ),
        Plan::WhoAmI(n) => p.go(
            (0..n).map(|i| (format!("whoami#{i}"), WhoAmI)).collect(),
            |(slot, pid)| format!("worker {slot}, pid {pid}"),
        ),
        Plan::Panic(m) => p.go(vec![(format!("panic({m:?})"), drill::Panic(m))], debug),
        Plan::Abort => p.go(vec![("abort".into(), drill::Abort)], debug),
        Plan::Exit(c) => p.go(vec![(format!("exit({c})"), drill::Exit(c))], debug),
        Plan::KillSelf => p.go(vec![("kill-self".into(), drill::KillSelf)], debug),
        Plan::Hang => p.go(vec![("hang".into(), drill::Hang)], debug),
        Plan::Alloc(n) => p.go(
            vec![(format!("alloc({})", fmt_bytes(n)), drill::Alloc(n as usize))],
            |pid| format!("allocated in pid {pid}"),
        ),
        Plan::BadInput => p.go(
            vec![("bad-input".into(), drill::BadInput(drill::Unserializable))],
            debug,
        ),
        Plan::UndecodableInput => p.go(
            vec![(
                "undecodable-input".into(),
                drill::UndecodableInput(drill::Undeserializable),
            )],
            debug,
        ),
        Plan::BadOutput => p.go(vec![("bad-output".into(), drill::BadOutput)], debug),
        Plan::PanickyOutput => p.go(vec![("panicky-output".into(), drill::PanickyOutput)], debug),
        Plan::UndecodableOutput => p.go(
            vec![("undecodable-output".into(), drill::UndecodableOutput)],
            debug,
        ),
    }
    let failures = p.failures;
    let stats = pool.stats();
    if stats.respawns > 0 {
        println!(
            "(the pool replaced {} worker(s) and went on)",
            stats.respawns
        );
    }
    pool.shutdown(Shutdown::Wait);
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_with_underscores() {
        let args = vec!["1_000".to_owned(), "2".to_owned()];
        assert_eq!(numbers("spin", &args).unwrap(), vec![1000, 2]);
        assert!(numbers("spin", &[]).is_err());
        assert!(
            numbers("spin", &["x".to_owned()])
                .unwrap_err()
                .contains("`x`")
        );
    }

    #[test]
    fn unknown_task_lists_the_known_ones() {
        let e = run(&RunOptions {
            task: "nope".into(),
            args: vec![],
            workers: 1,
            timeout: None,
        })
        .unwrap_err();
        assert!(
            e.contains("unknown task `nope`") && e.contains("square N..."),
            "{e}"
        );
    }
}
