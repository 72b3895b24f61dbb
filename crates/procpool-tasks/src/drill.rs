//! Fault drills: tasks that misbehave on purpose, so tests, benches and
//! demos can prove that one bad task costs only its own future.

use serde::de::{self, Deserializer};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};

use procpool::{InitError, Initializer, Registry, Task, WorkerContext};

/// Panics with `message`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Panic(pub String);

impl Task for Panic {
    const NAME: &'static str = "drill_panic";
    type Output = ();
    fn run(self, _: &mut WorkerContext) {
        panic!("{}", self.0)
    }
}

/// Calls `std::process::abort()` (SIGABRT).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort;

impl Task for Abort {
    const NAME: &'static str = "drill_abort";
    type Output = ();
    fn run(self, _: &mut WorkerContext) {
        std::process::abort()
    }
}

/// Calls `std::process::exit(code)`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub i32);

impl Task for Exit {
    const NAME: &'static str = "drill_exit";
    type Output = ();
    fn run(self, _: &mut WorkerContext) {
        std::process::exit(self.0)
    }
}

/// Sends SIGKILL to its own worker process.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillSelf;

impl Task for KillSelf {
    const NAME: &'static str = "drill_kill_self";
    type Output = ();
    fn run(self, _: &mut WorkerContext) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// Kills its worker the first time it runs (it creates `marker` first),
/// and returns `x * x` when run again: for retries.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DieOnce {
    /// Created by the first run.
    pub marker: std::path::PathBuf,
    /// The input.
    pub x: u64,
}

impl Task for DieOnce {
    const NAME: &'static str = "drill_die_once";
    type Output = u64;
    fn run(self, ctx: &mut WorkerContext) -> u64 {
        let first = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.marker)
            .is_ok();
        if first {
            KillSelf.run(ctx);
        }
        self.x.wrapping_mul(self.x)
    }
}

/// Kills its worker with SIGKILL if `x % modulus == 0`, else returns
/// `x * x`: for "1 % random crashes" runs.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquareOrDie {
    /// The input.
    pub x: u64,
    /// Die when `x % modulus == 0` (0: never).
    pub modulus: u64,
}

impl Task for SquareOrDie {
    const NAME: &'static str = "drill_square_or_die";
    type Output = u64;
    fn run(self, ctx: &mut WorkerContext) -> u64 {
        if self.modulus != 0 && self.x.is_multiple_of(self.modulus) {
            KillSelf.run(ctx);
        }
        self.x.wrapping_mul(self.x)
    }
}

/// Sleeps forever (until killed).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hang;

impl Task for Hang {
    const NAME: &'static str = "drill_hang";
    type Output = ();
    fn run(self, _: &mut WorkerContext) {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// Allocates and touches `bytes` bytes, keeps them in the worker's context,
/// returns the worker's pid.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alloc(pub usize);

/// Memory kept alive by [`Alloc`].
#[derive(Debug, Default)]
pub struct Hoard(pub Vec<Vec<u8>>);

impl Task for Alloc {
    const NAME: &'static str = "drill_alloc";
    type Output = u32;
    fn run(self, ctx: &mut WorkerContext) -> u32 {
        if ctx.get::<Hoard>().is_none() {
            ctx.insert(Hoard::default());
        }
        ctx.get_mut::<Hoard>()
            .expect("inserted")
            .0
            .push(vec![1u8; self.0]);
        std::process::id()
    }
}

/// A value whose `Serialize` always fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(ser::Error::custom(
            "Unserializable refuses to be serialized",
        ))
    }
}

impl<'de> Deserialize<'de> for Unserializable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Unserializable)
    }
}

/// A value whose `Deserialize` always fails (its `Serialize` works).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Undeserializable;

impl Serialize for Undeserializable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for Undeserializable {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(de::Error::custom(
            "Undeserializable refuses to be deserialized",
        ))
    }
}

/// A value whose `Serialize` panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PanicsOnSerialize;

impl Serialize for PanicsOnSerialize {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("PanicsOnSerialize panicked in serialize")
    }
}

impl<'de> Deserialize<'de> for PanicsOnSerialize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| PanicsOnSerialize)
    }
}

/// Its input will not serialize in the parent: `submit` returns a
/// `SubmitError`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadInput(pub Unserializable);

impl Task for BadInput {
    const NAME: &'static str = "drill_bad_input";
    type Output = ();
    fn run(self, _: &mut WorkerContext) {}
}

/// Its input serializes in the parent but will not deserialize in the
/// worker: `TaskError::Decode { side: Worker }`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct UndecodableInput(pub Undeserializable);

impl Task for UndecodableInput {
    const NAME: &'static str = "drill_undecodable_input";
    type Output = ();
    fn run(self, _: &mut WorkerContext) {}
}

/// Its output will not serialize in the worker:
/// `TaskError::Encode { side: Worker }`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadOutput;

impl Task for BadOutput {
    const NAME: &'static str = "drill_bad_output";
    type Output = Unserializable;
    fn run(self, _: &mut WorkerContext) -> Unserializable {
        Unserializable
    }
}

/// Its output's `Serialize` panics in the worker: `TaskError::Encode`, and
/// the worker lives.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PanickyOutput;

impl Task for PanickyOutput {
    const NAME: &'static str = "drill_panicky_output";
    type Output = PanicsOnSerialize;
    fn run(self, _: &mut WorkerContext) -> PanicsOnSerialize {
        PanicsOnSerialize
    }
}

/// Its output serializes in the worker but will not deserialize in the
/// parent: `TaskError::Decode { side: Parent }`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct UndecodableOutput;

impl Task for UndecodableOutput {
    const NAME: &'static str = "drill_undecodable_output";
    type Output = Undeserializable;
    fn run(self, _: &mut WorkerContext) -> Undeserializable {
        Undeserializable
    }
}

/// Bytes whose `Serialize` writes one byte more each time it runs: a value
/// that encodes differently each time (from 64 KiB on, its bytes are a
/// bulk byte string, written from the value by a second encoding).
#[derive(Debug, Default)]
pub struct Shifty(pub std::sync::atomic::AtomicUsize);

impl Shifty {
    /// Bytes that first encode as `len` bytes.
    pub fn new(len: usize) -> Shifty {
        Shifty(std::sync::atomic::AtomicUsize::new(len))
    }
}

impl Serialize for Shifty {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        s.serialize_bytes(&vec![7; len])
    }
}

impl<'de> Deserialize<'de> for Shifty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|b| Shifty::new(b.len()))
    }
}

/// Its input encodes differently each time ([`Shifty`]): to a local
/// worker its bulk bytes do not match its frame, `TaskError::Encode {
/// side: Parent }` and the pool goes on. Returns the length it got.
#[derive(Serialize, Deserialize, Debug)]
pub struct ShiftyInput(pub Shifty);

impl Task for ShiftyInput {
    const NAME: &'static str = "drill_shifty_input";
    type Output = u64;
    fn run(self, _: &mut WorkerContext) -> u64 {
        self.0.0.into_inner() as u64
    }
}

/// Its output encodes differently each time ([`Shifty`] of `.0` bytes):
/// to a local parent the worker cannot write its result as its frame
/// says, and exits; the task fails with `TaskError::Protocol` (its result
/// ended early).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShiftyOutput(pub u64);

impl Task for ShiftyOutput {
    const NAME: &'static str = "drill_shifty_output";
    type Output = Shifty;
    fn run(self, _: &mut WorkerContext) -> Shifty {
        Shifty::new(self.0 as usize)
    }
}

/// Initializer that fails with `message`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FailingInit(pub String);

impl Initializer for FailingInit {
    const NAME: &'static str = "drill_failing_init";
    fn init(self, _: &mut WorkerContext) -> Result<(), InitError> {
        Err(self.0.into())
    }
}

/// Initializer that panics with `message`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PanickingInit(pub String);

impl Initializer for PanickingInit {
    const NAME: &'static str = "drill_panicking_init";
    fn init(self, _: &mut WorkerContext) -> Result<(), InitError> {
        panic!("{}", self.0)
    }
}

/// Initializer that sleeps (for init timeouts).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SlowInit {
    /// How long.
    pub millis: u64,
}

impl Initializer for SlowInit {
    const NAME: &'static str = "drill_slow_init";
    fn init(self, _: &mut WorkerContext) -> Result<(), InitError> {
        std::thread::sleep(std::time::Duration::from_millis(self.millis));
        Ok(())
    }
}

/// Tries to change the shared bytes it was given, through every memory
/// file of this process that holds them (`/proc/self/fd`): writing,
/// reopening for writing, shrinking, growing. Returns one line per
/// attempt, `"refused: …"` or `"ALLOWED: …"`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TamperShared(pub procpool::SharedBytes);

impl Task for TamperShared {
    const NAME: &'static str = "drill_tamper_shared";
    type Output = Vec<String>;
    fn run(self, _: &mut WorkerContext) -> Vec<String> {
        use std::io::Write;
        let mut out = Vec::new();
        let mut note = |what: &str, r: std::io::Result<()>| {
            out.push(match r {
                Ok(()) => format!("ALLOWED: {what}"),
                Err(e) => format!("refused: {what} ({e})"),
            })
        };
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return vec!["ALLOWED: no /proc/self/fd to look in".into()];
        };
        for entry in dir.flatten() {
            let link = std::fs::read_link(entry.path()).unwrap_or_default();
            if !link.to_string_lossy().contains("procpool-shared") {
                continue;
            }
            let path = entry.path();
            match std::fs::OpenOptions::new().write(true).open(&path) {
                Err(e) => note("open for writing", Err(e)),
                Ok(mut f) => {
                    note("write", f.write_all(b"tampered"));
                    note("shrink", f.set_len(1));
                    note("grow", f.set_len(1 << 40));
                }
            }
        }
        out
    }
}

/// Aborts while it holds shared payloads (their memory files are open in
/// the worker when it dies).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct AbortHoldingShared(pub procpool::SharedBytes);

impl Task for AbortHoldingShared {
    const NAME: &'static str = "drill_abort_holding_shared";
    type Output = ();
    fn run(self, _: &mut WorkerContext) {
        let _held = self.0;
        std::process::abort()
    }
}

/// Returns its shared payloads: one frame carries a descriptor for each
/// (over 16 KiB), so more than 253 of them exceed what one `sendmsg` can
/// carry (Linux's `SCM_MAX_FD`).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct EchoSharedMany(pub Vec<procpool::SharedBytes>);

impl Task for EchoSharedMany {
    const NAME: &'static str = "drill_echo_shared_many";
    type Output = Vec<procpool::SharedBytes>;
    fn run(self, _: &mut WorkerContext) -> Vec<procpool::SharedBytes> {
        self.0
    }
}

/// Makes `count` shared payloads of `len` bytes each (byte `i` of payload
/// `k` is `k as u8`) in the worker and returns them: a result with `count`
/// descriptors.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MakeSharedMany {
    /// How many payloads.
    pub count: u32,
    /// Bytes in each.
    pub len: u32,
}

impl Task for MakeSharedMany {
    const NAME: &'static str = "drill_make_shared_many";
    type Output = Vec<procpool::SharedBytes>;
    fn run(self, _: &mut WorkerContext) -> Vec<procpool::SharedBytes> {
        (0..self.count)
            .map(|k| procpool::SharedBytes::from(vec![k as u8; self.len as usize]))
            .collect()
    }
}

/// Every drill.
pub fn registry() -> Registry {
    Registry::new()
        .task::<TamperShared>()
        .task::<AbortHoldingShared>()
        .task::<EchoSharedMany>()
        .task::<MakeSharedMany>()
        .task::<Panic>()
        .task::<Abort>()
        .task::<Exit>()
        .task::<KillSelf>()
        .task::<SquareOrDie>()
        .task::<DieOnce>()
        .task::<Hang>()
        .task::<Alloc>()
        .task::<BadInput>()
        .task::<UndecodableInput>()
        .task::<BadOutput>()
        .task::<PanickyOutput>()
        .task::<UndecodableOutput>()
        .task::<ShiftyInput>()
        .task::<ShiftyOutput>()
        .initializer::<FailingInit>()
        .initializer::<PanickingInit>()
        .initializer::<SlowInit>()
}
