//! Probes: tasks that print what a careless task prints, or look at what a
//! task can see of its own process (environment, process flags). The
//! security tests use them to check what a worker leaks and what reaches
//! the parent.

use std::io::Write;

use serde::{Deserialize, Serialize};

use procpool::{Registry, Task, WorkerContext};

/// What [`Print`] writes.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrintStyle {
    /// `x` bytes and no newline: a binary blob, a log without line ends.
    Blob,
    /// A progress bar redrawn with `\r`, no newline.
    Progress,
    /// Terminal escape sequences and other control characters, then a
    /// newline.
    Control,
}

/// Writes `bytes` bytes to its stdout (`to_stderr`: stderr) in the given
/// style, flushes, and returns how many it wrote.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Print {
    /// How many bytes to write.
    pub bytes: u64,
    /// What they look like.
    pub style: PrintStyle,
    /// Write to stderr instead of stdout.
    pub to_stderr: bool,
}

/// The bytes [`PrintStyle::Control`] writes (before its newline).
pub const CONTROL_SAMPLE: &[u8] =
    b"\x1b[2J\x1b[31mred\x1b[0m\x07bell\x08\x00nul\x7fdel\x1b]0;title\x07";

impl Task for Print {
    const NAME: &'static str = "probe_print";
    type Output = u64;
    fn run(self, _: &mut WorkerContext) -> u64 {
        let piece: Vec<u8> = match self.style {
            PrintStyle::Blob => vec![b'x'; 64 * 1024],
            PrintStyle::Progress => (0..1024)
                .flat_map(|i| format!("\r{:3}% [{:<50}]", i % 101, "#".repeat(i % 51)).into_bytes())
                .collect(),
            PrintStyle::Control => CONTROL_SAMPLE.to_vec(),
        };
        let mut out: Box<dyn Write> = if self.to_stderr {
            Box::new(std::io::stderr().lock())
        } else {
            Box::new(std::io::stdout().lock())
        };
        let mut left = self.bytes;
        while left > 0 {
            let n = left.min(piece.len() as u64) as usize;
            if out.write_all(&piece[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        if self.style == PrintStyle::Control {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
        self.bytes - left
    }
}

/// What a task can see of its process's environment.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EnvReport {
    /// `std::env::vars_os()`, as `KEY=VALUE` (lossy UTF-8).
    pub vars: Vec<String>,
    /// The bytes of `/proc/self/environ` (the environment the process was
    /// started with, as the kernel shows it to anyone allowed to look).
    pub proc_environ: Vec<u8>,
    /// What the `env` program prints when the task starts it.
    pub env_program: String,
}

/// Reports its environment three ways; see [`EnvReport`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Environment;

impl Task for Environment {
    const NAME: &'static str = "probe_environment";
    type Output = EnvReport;
    fn run(self, _: &mut WorkerContext) -> EnvReport {
        EnvReport {
            vars: std::env::vars_os()
                .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
                .collect(),
            proc_environ: std::fs::read("/proc/self/environ").unwrap_or_default(),
            env_program: std::process::Command::new("env")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_else(|e| format!("cannot run env: {e}")),
        }
    }
}

/// `prctl(PR_GET_DUMPABLE)` of the worker process: whether other
/// processes of the same user may read its memory and `/proc` files or
/// attach a debugger.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dumpable;

impl Task for Dumpable {
    const NAME: &'static str = "probe_dumpable";
    type Output = Result<bool, String>;
    fn run(self, _: &mut WorkerContext) -> Result<bool, String> {
        nix::sys::prctl::get_dumpable().map_err(|e| e.to_string())
    }
}

/// Every probe.
pub fn registry() -> Registry {
    Registry::new()
        .task::<Print>()
        .task::<Environment>()
        .task::<Dumpable>()
}
