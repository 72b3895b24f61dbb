//! `procpool`: the overhead report (`procpool overhead`), demos of the
//! built-in tasks (`procpool run TASK ...`) and the chaos soak (`procpool
//! soak`). The binary is its own worker: pools start it again with
//! `WorkerCommand::current_exe()`.
#![forbid(unsafe_code)]

mod html;
mod overhead;
mod raw;
mod report;
mod run;
mod stats;
mod sweep;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Pools of worker processes with Python's concurrent.futures semantics.
#[derive(Debug, Parser)]
#[command(name = "procpool", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Where a task's time goes: thread pool vs process pool vs a raw socket,
    /// over payload sizes and chunk sizes.
    Overhead {
        /// Print one JSON object on stdout instead of the tables.
        #[arg(long)]
        json: bool,
        /// Also write the report as one self-contained HTML page with
        /// charts (inline SVG, no script) to FILE.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// A shorter run with fewer repetitions.
        #[arg(long)]
        quick: bool,
        /// Workers in each pool.
        #[arg(long, default_value_t = 2, value_name = "N", value_parser = at_least_one)]
        workers: usize,
        /// How the process pool's workers reach it: `local` (a socketpair)
        /// or `tcp` (loopback, or across nodes with --srun).
        #[arg(long, default_value = "local", value_parser = ["local", "tcp"])]
        transport: String,
        /// Launch the process pool's workers with Slurm's `srun` over this
        /// many nodes (implies --transport tcp; run inside an allocation or
        /// where `srun` can make one).
        #[arg(long, value_name = "NODES")]
        srun: Option<u32>,
        /// The address srun-launched workers dial (default: this host's
        /// name).
        #[arg(long, value_name = "HOST")]
        advertise: Option<String>,
    },
    /// Run built-in tasks on a process pool and print each result or error.
    #[command(after_help = format!("Tasks:\n{}", run::TASKS))]
    Run {
        /// Workers in the pool.
        #[arg(long, default_value_t = 2, value_name = "N", value_parser = at_least_one)]
        workers: usize,
        /// Kill and replace a worker whose task runs longer than this.
        #[arg(long, value_name = "MS")]
        timeout: Option<u64>,
        /// The task (see the list below).
        task: String,
        /// Its arguments.
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Chaos soak: random tasks, crashes, cancels, maps and pool shutdowns
    /// from several threads; then checks that every input got exactly one
    /// allowed outcome and nothing leaked. Exit status 1 on any violation.
    Soak {
        /// How long, in minutes.
        #[arg(long, value_name = "N", conflicts_with = "seconds")]
        minutes: Option<u64>,
        /// How long, in seconds (default: 60 s).
        #[arg(long, value_name = "N")]
        seconds: Option<u64>,
        /// Replay the choices of an earlier run (printed at the start).
        #[arg(long, value_parser = parse_seed)]
        seed: Option<u64>,
        /// Submitting threads (one drives a thread pool).
        #[arg(long, default_value_t = 4, value_name = "N", value_parser = at_least_one)]
        threads: usize,
        /// Workers per pool.
        #[arg(long, default_value_t = 2, value_name = "N", value_parser = at_least_one)]
        workers: usize,
        /// Largest allowed growth of resident memory after the warm-up.
        #[arg(long, default_value_t = 64, value_name = "MIB")]
        max_rss_growth: u64,
        /// How the process pools reach their workers.
        #[arg(long, default_value = "local", value_parser = ["local", "tcp"])]
        transport: String,
        /// Plant a fault (leak-fd, lose-outcome) to see the verdict fail.
        #[arg(long, hide = true)]
        inject: Option<procpool_cli::soak::Fault>,
    },
    /// The child side of the raw socket baseline.
    #[command(name = "__echo-peer", hide = true)]
    EchoPeer { socket: PathBuf },
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("`{s}` is not a seed (a number, or hex with 0x)"))
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// The command line as typed, quoted where a word needs it.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn init_logging() {
    init_logging_at("warn");
}

/// Logging to stderr at `level` unless `RUST_LOG` says otherwise.
fn init_logging_at(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn main() -> ExitCode {
    procpool::worker::run_if_worker(
        procpool_tasks::registry().merge(procpool_cli::soak::registry()),
    );
    let cli = Cli::parse();
    match cli.command {
        Command::EchoPeer { socket } => match raw::serve_peer(&socket) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("procpool __echo-peer: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Overhead {
            json,
            html,
            quick,
            workers,
            transport,
            srun,
            advertise,
        } => {
            init_logging();
            let opts = overhead::Options {
                workers,
                quick,
                tcp: transport == "tcp" || srun.is_some(),
                srun_nodes: srun,
                advertise,
            };
            let result = overhead::run(&opts, command_line());
            if let (Ok(r), Some(path)) = (&result, &html) {
                if let Err(e) = std::fs::write(path, html::render(r)) {
                    eprintln!("procpool overhead: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("procpool overhead: wrote {}", path.display());
            }
            match result {
                Ok(r) if json => match serde_json::to_string_pretty(&r) {
                    Ok(s) => {
                        print_out(&s);
                        print_out("\n");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("procpool: cannot write JSON: {e}");
                        ExitCode::FAILURE
                    }
                },
                Ok(r) => {
                    print_out(&report::render(&r));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("procpool overhead: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Soak {
            minutes,
            seconds,
            seed,
            threads,
            workers,
            max_rss_growth,
            transport,
            inject,
        } => {
            init_logging_at("error");
            let secs = minutes.map_or(seconds.unwrap_or(60), |m| m * 60);
            let mut opts = procpool_cli::soak::Options::new(
                Duration::from_secs(secs),
                procpool::WorkerCommand::current_exe(),
            );
            if let Some(s) = seed {
                opts.seed = s;
            }
            opts.threads = threads;
            opts.workers = workers;
            opts.rss_growth_limit = max_rss_growth << 20;
            if transport == "tcp" {
                opts.transport = procpool::Transport::Tcp;
            }
            opts.inject = inject;
            opts.progress = Some(Duration::from_secs(10));
            eprintln!(
                "soak: {secs} s, {threads} threads, pools of {workers} ({transport}), seed {:#x} (replay: --seed {:#x})",
                opts.seed, opts.seed
            );
            let report = procpool_cli::soak::run(&opts);
            print_out(&format!("{report}\n"));
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                // A hung thread must not keep the process alive.
                std::process::exit(1)
            }
        }
        Command::Run {
            workers,
            timeout,
            task,
            args,
        } => {
            init_logging();
            let opts = run::RunOptions {
                task,
                args,
                workers,
                timeout: timeout.map(Duration::from_millis),
            };
            match run::run(&opts) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("procpool run: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn overhead_needs_no_arguments() {
        let cli = Cli::try_parse_from(["procpool", "overhead"]).unwrap();
        match cli.command {
            Command::Overhead {
                json,
                quick,
                workers,
                transport,
                srun,
                ..
            } => assert!(!json && !quick && workers == 2 && transport == "local" && srun.is_none()),
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["procpool", "overhead", "--workers", "0"]).is_err());
    }

    #[test]
    fn soak_takes_minutes_or_seconds_and_a_seed() {
        let cli =
            Cli::try_parse_from(["procpool", "soak", "--minutes", "2", "--seed", "0x2a"]).unwrap();
        match cli.command {
            Command::Soak {
                minutes,
                seconds,
                seed,
                ..
            } => {
                assert_eq!((minutes, seconds, seed), (Some(2), None, Some(42)));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(
            Cli::try_parse_from(["procpool", "soak", "--minutes", "1", "--seconds", "5"]).is_err()
        );
        assert!(Cli::try_parse_from(["procpool", "soak", "--seed", "x"]).is_err());
    }

    #[test]
    fn run_takes_task_and_args() {
        let cli = Cli::try_parse_from(["procpool", "run", "square", "1", "2", "3"]).unwrap();
        match cli.command {
            Command::Run { task, args, .. } => {
                assert_eq!(task, "square");
                assert_eq!(args, ["1", "2", "3"]);
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
