//! What a task is, and how a worker finds its code.
//!
//! A [`Task`] is a serializable value that names code both sides compiled
//! (`NAME`). The worker's [`Registry`] maps names to that code. An
//! [`Initializer`] runs once per worker and leaves typed state in the
//! [`WorkerContext`] for the tasks that follow.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::error::Error;
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use procpool_wire::bulk::BulkSource;
use procpool_wire::codec;
use procpool_wire::message::{Bulk, Outcome, fingerprint};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::shared::{self, Mode, Scope};
use crate::stamp::Stamp;
use crate::sys::SealedFile;

/// A unit of work: a value that is sent to a worker and run there.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct Square(pub u64);
///
/// impl procpool::Task for Square {
///     const NAME: &'static str = "doc_square";
///     type Output = u64;
///     fn run(self, _ctx: &mut procpool::WorkerContext) -> u64 {
///         self.0 * self.0
///     }
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + 'static {
    /// The name the worker's [`Registry`] knows this task by.
    const NAME: &'static str;
    /// What the task returns. Use `Result<T, E>` for fallible tasks: an
    /// `Err` arrives as the task's own value, not as a [`crate::TaskError`].
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Runs the task in a worker (or a pool thread).
    fn run(self, ctx: &mut WorkerContext) -> Self::Output;
}

/// The error an initializer may return.
pub type InitError = Box<dyn Error + Send + Sync>;

/// Runs once in every worker before it takes a task.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct Greeting(pub String);
///
/// impl procpool::Initializer for Greeting {
///     const NAME: &'static str = "doc_greeting";
///     fn init(self, ctx: &mut procpool::WorkerContext) -> Result<(), procpool::InitError> {
///         ctx.insert(self.0);
///         Ok(())
///     }
/// }
/// ```
pub trait Initializer: Serialize + DeserializeOwned + Send + 'static {
    /// The name the worker's [`Registry`] knows this initializer by.
    const NAME: &'static str;
    /// Prepares the worker; an `Err` (or a panic) fails the pool's `build()`.
    fn init(self, ctx: &mut WorkerContext) -> Result<(), InitError>;
}

/// Typed state a worker keeps between tasks: one value per type.
///
/// ```
/// let mut ctx = procpool::WorkerContext::new(0);
/// ctx.insert(41u32);
/// *ctx.get_mut::<u32>().unwrap() += 1;
/// assert_eq!(ctx.get::<u32>(), Some(&42));
/// ```
#[derive(Debug)]
pub struct WorkerContext {
    worker_id: usize,
    state: HashMap<TypeId, Box<dyn Any + Send>>,
}

impl WorkerContext {
    /// An empty context for worker `worker_id`.
    pub fn new(worker_id: usize) -> WorkerContext {
        WorkerContext {
            worker_id,
            state: HashMap::new(),
        }
    }

    /// The worker slot this context belongs to.
    pub fn worker_id(&self) -> usize {
        self.worker_id
    }

    /// Stores `value`, returning the previous value of the same type.
    pub fn insert<T: Any + Send>(&mut self, value: T) -> Option<T> {
        self.state
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast().ok().map(|b| *b))
    }

    /// The stored value of type `T`.
    pub fn get<T: Any + Send>(&self) -> Option<&T> {
        self.state
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref())
    }

    /// The stored value of type `T`, mutably.
    pub fn get_mut<T: Any + Send>(&mut self) -> Option<&mut T> {
        self.state
            .get_mut(&TypeId::of::<T>())
            .and_then(|b| b.downcast_mut())
    }

    /// Removes and returns the stored value of type `T`.
    pub fn remove<T: Any + Send>(&mut self) -> Option<T> {
        self.state
            .remove(&TypeId::of::<T>())
            .and_then(|b| b.downcast().ok().map(|b| *b))
    }
}

/// The fingerprint of task `T` (name, input and output types).
pub(crate) fn task_fingerprint<T: Task>() -> u64 {
    fingerprint(T::NAME, type_name::<T>(), type_name::<T::Output>())
}

/// The fingerprint of initializer `I`.
pub(crate) fn init_fingerprint<I: Initializer>() -> u64 {
    fingerprint(I::NAME, type_name::<I>(), "()")
}

/// What running one task produced in the worker.
pub(crate) struct Ran {
    pub outcome: Outcome,
    pub decode_ns: u64,
    pub run_ns: u64,
    pub encode_ns: u64,
    /// The sealed memory files of the output's shared payloads, sent with
    /// the result (see `shared`).
    pub files: Vec<Arc<SealedFile>>,
    /// The output, if it has bulk byte strings (their places are in the
    /// `Ok` outcome): kept until the result's frame is written, the strings
    /// going after it straight from the value (`crate::kept`).
    pub bulk: Option<Arc<dyn BulkSource>>,
    /// When it ended (the clock read that ended its last phase: the next
    /// input of a chunk begins there). Its phases follow each other from
    /// `Start::at` to here, so `decode_ns + run_ns + encode_ns` is exactly
    /// the time from `Start::at` to `ended` (a chunk adds it up instead of
    /// computing it again).
    pub ended: Stamp,
}

impl Ran {
    /// A task the worker could not run (`outcome` says why).
    pub(crate) fn not_run(outcome: Outcome, at: Stamp) -> Ran {
        Ran {
            outcome,
            decode_ns: 0,
            run_ns: 0,
            encode_ns: 0,
            files: Vec::new(),
            bulk: None,
            ended: at,
        }
    }
}

/// Encoded values from this size up have their decoding timed apart: for
/// smaller ones a clock read costs more than the decoding (a worker counts
/// it in the run, the parent leaves `decode_output` at zero).
pub(crate) const TIMED_BYTES: usize = 256;

/// The input of one task in the worker: its bytes, the descriptors that
/// came with them, and how shared payloads travel on this connection.
pub(crate) struct Input<'a> {
    pub bytes: &'a [u8],
    pub fds: Vec<OwnedFd>,
    /// The payload's bulk byte strings (`procpool_wire::bulk`): where each
    /// belongs, and the buffers read for them (as many).
    pub bulk: &'a [Bulk],
    pub bulk_bytes: Vec<Vec<u8>>,
    pub mode: Mode,
    /// Most shared bytes one payload may hold (the pool's frame cap).
    pub limit: u64,
}

/// Runs a task from its encoded input; `start` is when the worker took it
/// (the decode is timed from there: one clock read fewer per task).
pub(crate) type RunFn = fn(Input<'_>, &mut WorkerContext, &mut Vec<u8>, Start) -> Ran;

/// Runs one input of a packed chunk (`run_packed`).
/// Its input is the first `len` bytes of the slice; the chunk's later
/// inputs follow it there (see `codec::decode_followed_boxed`).
pub(crate) type PackedFn =
    fn(&[u8], usize, &mut WorkerContext, &mut Vec<u8>, Start, &mut shared::TaskRun) -> Ran;

/// When a task began in the worker, and whether its output's encoding is
/// timed apart from its run (a clock read costs more than encoding a small
/// output: a chunk's input is timed so when the input before it had an
/// output of [`TIMED_BYTES`] or more; a single task always is).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start {
    pub at: Stamp,
    pub time_encode: bool,
    /// The output may keep its large byte strings out of `out`
    /// (`procpool_wire::bulk`: a single task's result to a local parent;
    /// never a chunk's input, whose result goes in the ring).
    pub bulk: bool,
}
type InitFn = fn(&[u8], &mut WorkerContext) -> Result<(), String>;

struct TaskEntry {
    fingerprint: u64,
    input_type: &'static str,
    output_type: &'static str,
    run: RunFn,
    packed: PackedFn,
}

struct InitEntry {
    fingerprint: u64,
    type_name: &'static str,
    init: InitFn,
}

/// Maps task and initializer names to code, in the worker.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] pub struct Square(pub u64);
/// # impl procpool::Task for Square {
/// #     const NAME: &'static str = "doc_square";
/// #     type Output = u64;
/// #     fn run(self, _: &mut procpool::WorkerContext) -> u64 { self.0 * self.0 }
/// # }
/// let registry = procpool::Registry::new().task::<Square>();
/// assert!(registry.contains("doc_square"));
/// ```
#[derive(Default)]
pub struct Registry {
    tasks: HashMap<&'static str, TaskEntry>,
    inits: HashMap<&'static str, InitEntry>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut tasks: Vec<_> = self.tasks.keys().collect();
        tasks.sort();
        let mut inits: Vec<_> = self.inits.keys().collect();
        inits.sort();
        f.debug_struct("Registry")
            .field("tasks", &tasks)
            .field("initializers", &inits)
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers task `T` under `T::NAME`.
    ///
    /// # Panics
    /// If another type is already registered under the same name.
    pub fn task<T: Task>(mut self) -> Registry {
        let entry = TaskEntry {
            fingerprint: task_fingerprint::<T>(),
            input_type: type_name::<T>(),
            output_type: type_name::<T::Output>(),
            run: run_task::<T>,
            packed: run_packed::<T>,
        };
        if let Some(old) = self.tasks.get(T::NAME) {
            assert!(
                old.fingerprint == entry.fingerprint,
                "two task types share the name `{}`: `{}` and `{}`; give one of them another \
                 NAME (for a #[procpool::task] fn: #[procpool::task(name = \"...\")])",
                T::NAME,
                old.input_type,
                entry.input_type
            );
        }
        self.tasks.insert(T::NAME, entry);
        self
    }

    /// Registers initializer `I` under `I::NAME`.
    ///
    /// # Panics
    /// If another type is already registered under the same name.
    pub fn initializer<I: Initializer>(mut self) -> Registry {
        let entry = InitEntry {
            fingerprint: init_fingerprint::<I>(),
            type_name: type_name::<I>(),
            init: run_init::<I>,
        };
        if let Some(old) = self.inits.get(I::NAME) {
            assert!(
                old.fingerprint == entry.fingerprint,
                "two initializer types share the name `{}`: `{}` and `{}`; give one of them \
                 another NAME",
                I::NAME,
                old.type_name,
                entry.type_name
            );
        }
        self.inits.insert(I::NAME, entry);
        self
    }

    /// Adds every entry of `other` (e.g. the built-in tasks).
    pub fn merge(mut self, other: Registry) -> Registry {
        self.tasks.extend(other.tasks);
        self.inits.extend(other.inits);
        self
    }

    /// Whether a task of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.tasks.contains_key(name)
    }

    /// Task names, sorted.
    pub fn task_names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.tasks.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// What a worker's hello announces: every task's name, fingerprint and
    /// input type.
    pub(crate) fn announce(&self) -> Vec<procpool_wire::handshake::TaskInfo> {
        self.tasks
            .iter()
            .map(|(name, e)| procpool_wire::handshake::TaskInfo {
                name: (*name).to_owned(),
                fingerprint: e.fingerprint,
                input_type: e.input_type.to_owned(),
            })
            .collect()
    }

    /// Runs task `name` on `input`, appending the encoded output to `out`.
    pub(crate) fn run(
        &self,
        name: &str,
        fp: u64,
        input: Input<'_>,
        ctx: &mut WorkerContext,
        out: &mut Vec<u8>,
        start: Stamp,
    ) -> Ran {
        let start = Start {
            at: start,
            time_encode: true,
            bulk: input.mode == Mode::Descriptors,
        };
        match self.runner(name, fp) {
            Ok(run) => run(input, ctx, out, start),
            Err(outcome) => Ran::not_run(outcome, start.at),
        }
    }

    /// What runs task `name` (looked up once for a whole chunk), or the
    /// outcome of every input if the worker cannot run it.
    pub(crate) fn runner(&self, name: &str, fp: u64) -> Result<RunFn, Outcome> {
        self.entry(name, fp).map(|e| e.run)
    }

    /// [`runner`](Self::runner) for a packed chunk's inputs.
    pub(crate) fn packed_runner(&self, name: &str, fp: u64) -> Result<PackedFn, Outcome> {
        self.entry(name, fp).map(|e| e.packed)
    }

    fn entry(&self, name: &str, fp: u64) -> Result<&TaskEntry, Outcome> {
        match self.tasks.get(name) {
            None => Err(Outcome::UnknownTask {
                name: name.to_owned(),
            }),
            Some(e) if e.fingerprint != fp => Err(Outcome::Mismatch {
                worker_input: e.input_type.to_owned(),
                worker_output: e.output_type.to_owned(),
            }),
            Some(e) => Ok(e),
        }
    }

    /// Runs initializer `name`.
    pub(crate) fn init(
        &self,
        name: &str,
        fp: u64,
        input: &[u8],
        ctx: &mut WorkerContext,
    ) -> Result<(), String> {
        match self.inits.get(name) {
            None => Err(format!(
                "the worker has no initializer named `{name}`: register it in the worker's Registry"
            )),
            Some(e) if e.fingerprint != fp => Err(format!(
                "initializer `{name}` is a different type in the worker (`{}`)",
                e.type_name
            )),
            Some(e) => (e.init)(input, ctx),
        }
    }
}

fn run_task<T: Task>(
    input: Input<'_>,
    ctx: &mut WorkerContext,
    out: &mut Vec<u8>,
    start: Start,
) -> Ran {
    let mut own = Own {
        mode: input.mode,
        limit: input.limit,
        fds: input.fds,
    };
    let payload = (input.bytes, input.bytes.len(), input.bulk, input.bulk_bytes);
    run_in::<T, _>(payload, ctx, out, start, &mut own)
}

/// [`run_task`] for an input of a packed chunk (no descriptors, no bulk
/// strings), in the chunk's shared-value state `run`.
fn run_packed<T: Task>(
    bytes: &[u8],
    len: usize,
    ctx: &mut WorkerContext,
    out: &mut Vec<u8>,
    start: Start,
    run: &mut shared::TaskRun,
) -> Ran {
    run_in::<T, _>((bytes, len, &[], Vec::new()), ctx, out, start, run)
}

/// A single task's shared-value scope: the descriptors that came with it.
struct Own {
    mode: Mode,
    limit: u64,
    fds: Vec<OwnedFd>,
}

impl Scope for Own {
    #[inline]
    fn decode<R>(&mut self, f: impl FnOnce() -> R) -> (R, Option<shared::SharedError>) {
        shared::decode_with(self.mode, std::mem::take(&mut self.fds), self.limit, f)
    }
    #[inline]
    fn encode<R>(&mut self, f: impl FnOnce() -> R) -> (R, shared::Encoded) {
        shared::encode_with(self.mode, self.limit, f)
    }
    fn mode_limit(&self) -> (Mode, u64) {
        (self.mode, self.limit)
    }
}

/// An encoded input: its bytes (the first `len` of the slice, which may
/// go on), `len`, its bulk strings' places and buffers.
type Payload<'a> = (&'a [u8], usize, &'a [Bulk], Vec<Vec<u8>>);

/// Decodes task `T` from its payload, runs it and encodes its output into
/// `out`, with its shared values read and written in `scope`; each phase
/// timed from `start` (see [`Ran`]). Inlined into both of its callers:
/// each gets the one loop body its scope needs.
#[inline(always)]
fn run_in<T: Task, S: Scope>(
    (bytes, len, bulk, bulk_bytes): Payload<'_>,
    ctx: &mut WorkerContext,
    out: &mut Vec<u8>,
    start: Start,
    scope: &mut S,
) -> Ran {
    let t0 = start.at;
    let timed_decode = len >= TIMED_BYTES || !bulk.is_empty();
    // Without bulk strings (every input of a packed chunk) the empty
    // buffer list is not moved into the call (a copy of it, right after it
    // was made, stalled).
    let (decoded, shared_error) = scope.decode(|| {
        if bulk.is_empty() && bulk_bytes.is_empty() {
            codec::decode_followed_boxed::<T>(bytes, len)
        } else {
            codec::decode_bulk_boxed::<T>(&bytes[..len], bulk, bulk_bytes)
        }
    });
    let task = match decoded {
        Ok(t) => t,
        Err(e) => {
            let ended = Stamp::now();
            return Ran {
                outcome: Outcome::Decode {
                    message: shared_error.map_or_else(|| e.to_string(), |s| s.to_string()),
                    worker_type: type_name::<T>().to_owned(),
                },
                decode_ns: ended.nanos_since(t0),
                run_ns: 0,
                encode_ns: 0,
                files: Vec::new(),
                bulk: None,
                ended,
            };
        }
    };
    // One clock read between phases: each ends when the next begins. A
    // small input's decoding is counted in its run (see `TIMED_BYTES`).
    let (t1, decode_ns) = if timed_decode {
        let t1 = Stamp::now();
        (t1, t1.nanos_since(t0))
    } else {
        (t0, 0)
    };
    crate::worker::clear_panic_location();
    let result = catch_unwind(AssertUnwindSafe(|| task.run(ctx)));
    // Without a read here the output's encoding counts in the run.
    let t2 = start.time_encode.then(Stamp::now);
    let output = match result {
        Ok(o) => o,
        Err(p) => {
            let ended = t2.unwrap_or_else(Stamp::now);
            return Ran {
                outcome: Outcome::Panicked {
                    message: codec::panic_message(&*p),
                    location: crate::worker::take_panic_location(),
                },
                decode_ns,
                run_ns: ended.nanos_since(t1),
                encode_ns: 0,
                files: Vec::new(),
                bulk: None,
                ended,
            };
        }
    };
    let at = out.len();
    let mut spots = Vec::new();
    let (encoded, shared) = scope.encode(|| {
        if start.bulk {
            codec::encode_into_bulk(&output, out, &mut spots).map_err(Box::new)
        } else {
            codec::encode_into_boxed(&output, out)
        }
    });
    // With bulk strings the output stays whole until its result is
    // written: they go from it to the socket.
    let kept = (encoded.is_ok() && shared.error.is_none() && !spots.is_empty()).then(|| {
        let (mode, limit) = scope.mode_limit();
        Arc::new(crate::kept::Kept::new(output, spots.clone(), mode, limit)) as Arc<dyn BulkSource>
    });
    let ended = Stamp::now();
    let (run_ns, encode_ns) = match t2 {
        Some(t2) => (t2.nanos_since(t1), ended.nanos_since(t2)),
        None => (ended.nanos_since(t1), 0),
    };
    let (outcome, files, bulk) = match (encoded, shared.error) {
        (Ok(()), None) => (
            Outcome::Ok {
                len: (out.len() - at) as u32,
                fds: shared.files.len() as u32,
                bulk: spots,
            },
            shared.files,
            kept,
        ),
        (result, error) => {
            out.truncate(at);
            let message = match (error, result) {
                (Some(e), _) => e.to_string(),
                (None, Err(e)) => e.to_string(),
                (None, Ok(())) => "shared payloads failed to encode".to_owned(),
            };
            (
                Outcome::Encode {
                    message,
                    worker_type: type_name::<T::Output>().to_owned(),
                },
                Vec::new(),
                None,
            )
        }
    };
    Ran {
        outcome,
        decode_ns,
        run_ns,
        encode_ns,
        files,
        bulk,
        ended,
    }
}

fn run_init<I: Initializer>(input: &[u8], ctx: &mut WorkerContext) -> Result<(), String> {
    let init = codec::decode::<I>(input)
        .map_err(|e| format!("could not decode `{}`: {e}", type_name::<I>()))?;
    crate::worker::clear_panic_location();
    match catch_unwind(AssertUnwindSafe(|| init.init(ctx))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => {
            let mut msg = format!("panicked: {}", codec::panic_message(&*p));
            if let Some(loc) = crate::worker::take_panic_location() {
                msg.push_str(&format!(" (at {loc})"));
            }
            Err(msg)
        }
    }
}
