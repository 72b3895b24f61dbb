//! The error types: what went wrong, said so a person can act on it.
//!
//! * [`SubmitError`] — a task was not accepted; it is handed back.
//! * [`BuildError`] — a pool could not start; no worker is left running.
//! * [`TaskError`] — one future failed; the pool goes on.
//! * [`WaitError`] — a caller-set wait ran out (the future is handed back) or
//!   the task failed.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::future::TaskFuture;

/// Which side of the socket a serialization step ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The process that owns the pool.
    Parent,
    /// A worker process.
    Worker,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Parent => "parent",
            Side::Worker => "worker",
        })
    }
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// Its status could not be read.
    Unknown,
    /// A worker across a network stopped answering (no heartbeat within
    /// the pool's `lost_after`, or its connection broke): the node may be
    /// gone or cut off.
    Lost,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "was killed by signal {s} ({})", sig.as_str()),
                Err(_) => write!(f, "was killed by signal {s}"),
            },
            Exit::Unknown => f.write_str("ended with an unknown status"),
            Exit::Lost => f.write_str("was lost (stopped answering over the network)"),
        }
    }
}

/// Why one task's future failed. Cloneable, so [`TaskFuture::error`] can
/// report it without consuming the future.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TaskError {
    /// The task was cancelled before it ran (or killed on request).
    Cancelled,
    /// The task panicked.
    Panicked {
        /// The panic message (`<non-string panic payload>` if not text).
        message: String,
        /// `file:line:col`, where the worker's panic hook saw it.
        location: Option<String>,
    },
    /// The worker process died while the task was running.
    WorkerDied {
        /// The worker slot.
        worker: usize,
        /// Its process id.
        pid: u32,
        /// How it ended.
        exit: Exit,
        /// The task's `NAME`, where known.
        task: Option<String>,
    },
    /// The task ran past its `task_timeout` and its worker was killed.
    TimedOut {
        /// The limit that was exceeded.
        after: Duration,
    },
    /// Bytes could not be decoded into the expected type.
    Decode {
        /// Where decoding failed: the worker (input) or the parent (output).
        side: Side,
        /// The type that was being decoded.
        type_name: String,
        /// Why.
        message: String,
    },
    /// A value could not be encoded.
    Encode {
        /// Where: the parent (input, in `map`) or the worker (output).
        side: Side,
        /// The type that was being encoded.
        type_name: String,
        /// Why.
        message: String,
    },
    /// The worker's registry has no task of this name.
    UnknownTask {
        /// The name asked for.
        name: String,
    },
    /// A caller-set wait (e.g. `Map::timeout`) ran out; the task itself may
    /// still be running.
    WaitTimedOut {
        /// The caller's limit.
        after: Duration,
    },
    /// The worker sent bytes that break the protocol; it was replaced.
    Protocol {
        /// The worker slot.
        worker: usize,
        /// What was wrong.
        message: String,
    },
    /// The pool gave up restarting workers.
    Broken {
        /// Why, with the last failure.
        reason: String,
    },
    /// The pool was shut down before the task could run.
    Shutdown,
    /// No worker can run this task (its workers announced their tasks,
    /// and this one is not among them or is another type): refused before
    /// it was sent. See [`SubmitError::NoWorkerCanRun`].
    NoWorkerCanRun {
        /// The task's `NAME`.
        name: String,
        /// Why, and what to do.
        reason: String,
    },
}

impl TaskError {
    /// `true` for [`TaskError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TaskError::Cancelled)
    }
    /// `true` for [`TaskError::Panicked`].
    pub fn is_panic(&self) -> bool {
        matches!(self, TaskError::Panicked { .. })
    }
    /// `true` for [`TaskError::WorkerDied`].
    pub fn is_worker_died(&self) -> bool {
        matches!(self, TaskError::WorkerDied { .. })
    }
    /// `true` for [`TaskError::TimedOut`] (the pool's task timeout).
    pub fn is_timed_out(&self) -> bool {
        matches!(self, TaskError::TimedOut { .. })
    }
    /// `true` for decode or encode failures on either side.
    pub fn is_serialization(&self) -> bool {
        matches!(self, TaskError::Decode { .. } | TaskError::Encode { .. })
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Cancelled => f.write_str("task was cancelled"),
            TaskError::Panicked { message, location } => {
                write!(f, "task panicked: {message}")?;
                if let Some(loc) = location {
                    write!(f, " (at {loc})")?;
                }
                Ok(())
            }
            TaskError::WorkerDied {
                worker,
                pid,
                exit,
                task,
            } => {
                write!(f, "worker {worker} (pid {pid}) {exit}")?;
                if let Some(t) = task {
                    write!(f, " while running task `{t}`")?;
                }
                Ok(())
            }
            TaskError::TimedOut { after } => write!(
                f,
                "task ran longer than its {after:?} timeout; its worker was killed and replaced"
            ),
            TaskError::Decode {
                side,
                type_name,
                message,
            } => write!(f, "the {side} could not decode `{type_name}`: {message}"),
            TaskError::Encode {
                side,
                type_name,
                message,
            } => write!(f, "the {side} could not encode `{type_name}`: {message}"),
            TaskError::UnknownTask { name } => write!(
                f,
                "the worker has no task named `{name}`: define it with #[procpool::task] (or \
                 register it) in the program the workers run; the bundled `procpool-worker` \
                 runs only built-in tasks (use WorkerCommand::current_exe() and call \
                 procpool::worker::run_if_worker first thing in main)"
            ),
            TaskError::WaitTimedOut { after } => {
                write!(f, "no result within the caller's {after:?} limit")
            }
            TaskError::Protocol { worker, message } => write!(
                f,
                "worker {worker} broke the protocol ({message}); it was killed and replaced"
            ),
            TaskError::Broken { reason } => write!(f, "the pool is broken: {reason}"),
            TaskError::Shutdown => f.write_str("the pool was shut down"),
            TaskError::NoWorkerCanRun { name, reason } => {
                write!(f, "no worker can run task `{name}`: {reason}")
            }
        }
    }
}

impl std::error::Error for TaskError {}

/// A task the pool did not accept; the task is handed back.
///
/// ```
/// use procpool::{Executor, Shutdown, SubmitError, ThreadPool};
/// use procpool_tasks::Square;
///
/// let pool = ThreadPool::builder().workers(1).build().unwrap();
/// pool.shutdown(Shutdown::Wait);
/// match pool.submit(Square(2)) {
///     Err(e @ SubmitError::Shutdown { .. }) => assert_eq!(e.into_task(), Square(2)),
///     other => panic!("{other:?}"),
/// }
/// ```
#[non_exhaustive]
pub enum SubmitError<T> {
    /// The task's `Serialize` failed (or panicked).
    Encode {
        /// The task, untouched.
        task: T,
        /// Its type.
        type_name: &'static str,
        /// Serde's message.
        message: String,
    },
    /// The pool was shut down.
    Shutdown {
        /// The task, untouched.
        task: T,
    },
    /// The pool is broken.
    Broken {
        /// The task, untouched.
        task: T,
        /// Why the pool broke.
        reason: String,
    },
    /// No worker of the pool can run this task: the workers announced
    /// their tasks when they started, and this `NAME` is not among them
    /// (or names another type).
    NoWorkerCanRun {
        /// The task, untouched.
        task: T,
        /// Its `NAME`.
        name: &'static str,
        /// The program the workers run.
        program: String,
        /// The task names the workers know, sorted.
        known: Vec<String>,
        /// Why, and what to do.
        reason: String,
    },
}

impl<T> SubmitError<T> {
    /// Gives the task back.
    pub fn into_task(self) -> T {
        match self {
            SubmitError::Encode { task, .. }
            | SubmitError::Shutdown { task }
            | SubmitError::Broken { task, .. }
            | SubmitError::NoWorkerCanRun { task, .. } => task,
        }
    }

    /// The same error without the task (for a `map` item).
    pub fn to_task_error(&self) -> TaskError {
        match self {
            SubmitError::Encode {
                type_name, message, ..
            } => TaskError::Encode {
                side: Side::Parent,
                type_name: (*type_name).to_owned(),
                message: message.clone(),
            },
            SubmitError::Shutdown { .. } => TaskError::Shutdown,
            SubmitError::Broken { reason, .. } => TaskError::Broken {
                reason: reason.clone(),
            },
            SubmitError::NoWorkerCanRun { name, reason, .. } => TaskError::NoWorkerCanRun {
                name: (*name).to_owned(),
                reason: reason.clone(),
            },
        }
    }

    /// `true` if the input could not be serialized.
    pub fn is_encode(&self) -> bool {
        matches!(self, SubmitError::Encode { .. })
    }
}

impl<T> fmt::Debug for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Encode {
                type_name, message, ..
            } => f
                .debug_struct("Encode")
                .field("type_name", type_name)
                .field("message", message)
                .finish_non_exhaustive(),
            SubmitError::Shutdown { .. } => f.debug_struct("Shutdown").finish_non_exhaustive(),
            SubmitError::Broken { reason, .. } => f
                .debug_struct("Broken")
                .field("reason", reason)
                .finish_non_exhaustive(),
            SubmitError::NoWorkerCanRun {
                name,
                program,
                known,
                reason,
                ..
            } => f
                .debug_struct("NoWorkerCanRun")
                .field("name", name)
                .field("program", program)
                .field("known", known)
                .field("reason", reason)
                .finish_non_exhaustive(),
        }
    }
}

impl<T> fmt::Display for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Encode {
                type_name, message, ..
            } => write!(
                f,
                "could not serialize task input `{type_name}`: {message} (the task is handed back)"
            ),
            SubmitError::Shutdown { .. } => {
                f.write_str("the pool is shut down; submit to a new pool")
            }
            SubmitError::Broken { reason, .. } => write!(f, "the pool is broken: {reason}"),
            SubmitError::NoWorkerCanRun { name, reason, .. } => write!(
                f,
                "no worker can run task `{name}` (the task is handed back): {reason}"
            ),
        }
    }
}

impl<T> std::error::Error for SubmitError<T> {}

/// A pool that could not start. No worker is left running.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// This process was started as a worker of another pool, but its
    /// `main()` reached `build()` instead of calling
    /// `procpool::worker::run_if_worker` first. The pool that started it
    /// has been told.
    StartedAsWorker {
        /// What to do.
        message: String,
    },
    /// A builder setting is invalid (e.g. `workers(0)`).
    Config(String),
    /// The worker binary could not be found.
    WorkerNotFound {
        /// Every place that was tried.
        looked: Vec<PathBuf>,
        /// What to do (also in `Debug`, which is what `main` returning
        /// `Err` prints): for the default worker of a program that did not
        /// call `procpool::worker::run_if_worker`, to call it.
        fix: String,
    },
    /// The worker process could not be started.
    Spawn {
        /// The worker slot.
        worker: usize,
        /// The program.
        program: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The worker did not complete the handshake.
    Handshake {
        /// The worker slot.
        worker: usize,
        /// What went wrong.
        message: String,
    },
    /// The initializer's value could not be serialized.
    InitializerEncode {
        /// The initializer type.
        type_name: &'static str,
        /// Serde's message.
        message: String,
    },
    /// The initializer failed, panicked, or timed out in a worker.
    Initializer {
        /// The worker slot.
        worker: usize,
        /// The initializer's `NAME`.
        name: String,
        /// Its error message.
        message: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Config(m) => write!(f, "invalid pool configuration: {m}"),
            BuildError::StartedAsWorker { message } => f.write_str(message),
            BuildError::WorkerNotFound { looked, fix } => {
                write!(f, "could not find the worker program; {fix}; looked in:")?;
                for p in looked {
                    write!(f, " {}", p.display())?;
                }
                Ok(())
            }
            BuildError::Spawn {
                worker,
                program,
                source,
            } => write!(
                f,
                "could not start worker {worker} from `{}`: {source}",
                program.display()
            ),
            BuildError::Handshake { worker, message } => {
                write!(f, "worker {worker} failed the handshake: {message}")
            }
            BuildError::InitializerEncode { type_name, message } => write!(
                f,
                "could not serialize initializer `{type_name}`: {message}"
            ),
            BuildError::Initializer {
                worker,
                name,
                message,
            } => {
                write!(
                    f,
                    "initializer `{name}` failed in worker {worker}: {message}"
                )
            }
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A wait with a caller-set limit that did not end in a value.
pub enum WaitError<T> {
    /// The limit passed; the future is handed back untouched (nothing was
    /// cancelled).
    TimedOut(TaskFuture<T>),
    /// The task failed.
    Failed(TaskError),
}

impl<T> WaitError<T> {
    /// The future, if the wait timed out.
    pub fn into_future(self) -> Option<TaskFuture<T>> {
        match self {
            WaitError::TimedOut(f) => Some(f),
            WaitError::Failed(_) => None,
        }
    }
}

impl<T> fmt::Debug for WaitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::TimedOut(_) => f.write_str("TimedOut(..)"),
            WaitError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for WaitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::TimedOut(_) => {
                f.write_str("the task did not finish in time (it was not cancelled)")
            }
            WaitError::Failed(e) => e.fmt(f),
        }
    }
}

impl<T> std::error::Error for WaitError<T> {}
