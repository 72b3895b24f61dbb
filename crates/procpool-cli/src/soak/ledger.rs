//! The soak's ledger: every input it made, the outcomes seen for it, and
//! the verdict on them.
//!
//! An input is registered before it is handed to a pool and gets, by the
//! end, exactly one outcome of a kind its task and its history allow:
//!
//! * a submitted task: its done-callback runs exactly once (also when the
//!   future was dropped), and whoever consumed the future (`result()`,
//!   `wait`, `as_completed`) saw the same kind as the callback
//!   (SEMANTICS.md 7: a callback sees the outcome);
//! * a `map` input: the map yields exactly one result for it, in input
//!   order, or the map was dropped or ended (time-out, shutdown) before
//!   reaching it (`Discarded`);
//! * `cancel()` or `kill()` that returned `true`: the outcome is
//!   `Cancelled` (SEMANTICS.md 2, 30);
//! * a pool's shutdown allows `Refused` (at submit), `Shutdown` and, for
//!   `CancelPending` and `Kill`, `Cancelled` on its inputs.
//!
//! An input is judged as soon as it is complete (resolved and consumed or
//! detached) and then forgotten, so the ledger's memory follows the inputs
//! in flight, not the length of the run. All state is behind one mutex.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use procpool::TaskError;

/// The kinds of outcome an input can get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The right value (its id and payload echoed intact).
    Value,
    /// `TaskError::Panicked`.
    Panicked,
    /// `TaskError::WorkerDied`.
    WorkerDied,
    /// `TaskError::TimedOut` (the task's own timeout).
    TimedOut,
    /// `TaskError::Cancelled`.
    Cancelled,
    /// `TaskError::Shutdown`.
    Shutdown,
    /// `TaskError::Broken`.
    Broken,
    /// `TaskError::WaitTimedOut` (a `map`'s own limit).
    WaitTimedOut,
    /// `submit` refused it (`SubmitError`).
    Refused,
    /// A `map` was dropped or ended before yielding it.
    Discarded,
    /// Anything else: a wrong value, or an error no soak task can cause.
    Unexpected,
}

impl Kind {
    const ALL: [Kind; 11] = [
        Kind::Value,
        Kind::Panicked,
        Kind::WorkerDied,
        Kind::TimedOut,
        Kind::Cancelled,
        Kind::Shutdown,
        Kind::Broken,
        Kind::WaitTimedOut,
        Kind::Refused,
        Kind::Discarded,
        Kind::Unexpected,
    ];

    /// The kind of a task's error.
    pub fn of(err: &TaskError) -> Kind {
        match err {
            TaskError::Cancelled => Kind::Cancelled,
            TaskError::Panicked { .. } => Kind::Panicked,
            TaskError::WorkerDied { .. } => Kind::WorkerDied,
            TaskError::TimedOut { .. } => Kind::TimedOut,
            TaskError::Shutdown => Kind::Shutdown,
            TaskError::Broken { .. } => Kind::Broken,
            TaskError::WaitTimedOut { .. } => Kind::WaitTimedOut,
            _ => Kind::Unexpected,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Value => "value",
            Kind::Panicked => "panicked",
            Kind::WorkerDied => "worker died",
            Kind::TimedOut => "timed out",
            Kind::Cancelled => "cancelled",
            Kind::Shutdown => "shutdown",
            Kind::Broken => "broken",
            Kind::WaitTimedOut => "wait timed out",
            Kind::Refused => "refused at submit",
            Kind::Discarded => "discarded (map dropped or ended)",
            Kind::Unexpected => "unexpected",
        })
    }
}

/// A set of kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds(u16);

impl Kinds {
    /// Just `k`.
    pub fn only(k: Kind) -> Kinds {
        Kinds(k.bit())
    }
    /// With `k` added.
    pub fn with(self, k: Kind) -> Kinds {
        Kinds(self.0 | k.bit())
    }
    /// Whether `k` is in the set.
    pub fn has(self, k: Kind) -> bool {
        self.0 & k.bit() != 0
    }
}

impl fmt::Display for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = Kind::ALL
            .iter()
            .filter(|k| self.has(**k))
            .map(|k| k.to_string())
            .collect();
        write!(f, "{{{}}}", names.join(", "))
    }
}

/// How an input reached its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `submit`: the soak holds (or dropped) its future, with a callback.
    Submit,
    /// An item of a `map`.
    Map,
}

/// Which pool type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// A `ProcessPool`.
    Process,
    /// A `ThreadPool`.
    Thread,
}

/// How a pool was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// `shutdown(Wait)`.
    Wait,
    /// `shutdown(CancelPending)`.
    CancelPending,
    /// `shutdown(Kill)`.
    Kill,
    /// Its last `Arc` dropped (`Drop` is `shutdown(Wait)`).
    Dropped,
    /// `shutdown(Wait)` on one thread, `shutdown(Kill)` on another.
    WaitRacingKill,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stop::Wait => "shutdown(Wait)",
            Stop::CancelPending => "shutdown(CancelPending)",
            Stop::Kill => "shutdown(Kill)",
            Stop::Dropped => "dropped",
            Stop::WaitRacingKill => "shutdown(Wait) racing shutdown(Kill)",
        })
    }
}

struct PoolRec {
    kind: PoolKind,
    stop: Option<Stop>,
    broken: Option<String>,
}

struct Entry {
    pool: usize,
    via: Via,
    what: &'static str,
    allowed: Kinds,
    /// `cancel()`/`kill()` returned `true`: the outcome must be `Cancelled`.
    must_cancel: bool,
    callbacks: u32,
    callback_kind: Option<Kind>,
    consumed: u32,
    consumed_kind: Option<Kind>,
    /// The future was dropped: no consumer will come.
    detached: bool,
    note: Option<String>,
}

impl Entry {
    fn complete(&self) -> bool {
        // A refused submit has no future, hence no callback.
        let resolved =
            self.via == Via::Map || self.callbacks > 0 || self.consumed_kind == Some(Kind::Refused);
        resolved && (self.consumed > 0 || self.detached)
    }
}

#[derive(Default)]
struct Book {
    next_id: u64,
    live: HashMap<u64, Entry>,
    pools: Vec<PoolRec>,
    counts: BTreeMap<Kind, u64>,
    violations: Violations,
}

/// Violations by category, each with a few examples and a count.
#[derive(Default, Debug, Clone)]
pub struct Violations {
    by: BTreeMap<String, (u64, Vec<String>)>,
}

const EXAMPLES: usize = 5;

impl Violations {
    /// Records one violation of `category`.
    pub fn add(&mut self, category: &str, example: String) {
        let e = self.by.entry(category.to_owned()).or_default();
        e.0 += 1;
        if e.1.len() < EXAMPLES {
            e.1.push(example);
        }
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by.is_empty()
    }
    /// How many in all.
    pub fn total(&self) -> u64 {
        self.by.values().map(|(n, _)| n).sum()
    }
    /// The categories seen.
    pub fn categories(&self) -> impl Iterator<Item = &str> {
        self.by.keys().map(String::as_str)
    }
    /// Merges `other` in.
    pub fn extend(&mut self, other: Violations) {
        for (cat, (n, ex)) in other.by {
            let e = self.by.entry(cat).or_default();
            e.0 += n;
            for x in ex {
                if e.1.len() < EXAMPLES {
                    e.1.push(x);
                }
            }
        }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (cat, (n, examples)) in &self.by {
            writeln!(f, "  {cat}: {n}")?;
            for e in examples {
                writeln!(f, "    e.g. {e}")?;
            }
        }
        Ok(())
    }
}

/// The outcome counts and what broke the rules.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Inputs made.
    pub inputs: u64,
    /// Outcomes by kind (one per input).
    pub counts: BTreeMap<Kind, u64>,
    /// Pools made, and how each was stopped.
    pub pools: BTreeMap<String, u64>,
    /// Every rule broken.
    pub violations: Violations,
}

/// The ledger. Shared by every soak thread (and the callbacks).
#[derive(Default)]
pub struct Ledger {
    book: Mutex<Book>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new pool; its index for [`register`](Self::register).
    pub fn new_pool(&self, kind: PoolKind) -> usize {
        let mut b = self.book();
        b.pools.push(PoolRec {
            kind,
            stop: None,
            broken: None,
        });
        b.pools.len() - 1
    }

    /// Pool `pool` is being stopped (call before stopping it).
    pub fn stopping(&self, pool: usize, how: Stop) {
        self.book().pools[pool].stop.get_or_insert(how);
    }

    /// Pool `pool` reported itself broken.
    pub fn broken(&self, pool: usize, reason: String) {
        self.book().pools[pool].broken.get_or_insert(reason);
    }

    /// A new input for `pool` whose task, left alone, ends as `expected`.
    pub fn register(&self, pool: usize, via: Via, what: &'static str, expected: Kind) -> u64 {
        let mut b = self.book();
        let id = b.next_id;
        b.next_id += 1;
        b.live.insert(
            id,
            Entry {
                pool,
                via,
                what,
                allowed: Kinds::only(expected),
                must_cancel: false,
                callbacks: 0,
                callback_kind: None,
                consumed: 0,
                consumed_kind: None,
                detached: false,
                note: None,
            },
        );
        id
    }

    /// Input `id` may also end as `k` (e.g. `Cancelled` after a cancel
    /// attempt, `WaitTimedOut` in a map with a limit).
    pub fn allow(&self, id: u64, k: Kind) {
        if let Some(e) = self.book().live.get_mut(&id) {
            e.allowed = e.allowed.with(k);
        }
    }

    /// `cancel()` or `kill()` of input `id` returned `true`.
    pub fn cancel_succeeded(&self, id: u64) {
        if let Some(e) = self.book().live.get_mut(&id) {
            e.must_cancel = true;
            e.allowed = e.allowed.with(Kind::Cancelled);
        }
    }

    /// Input `id`'s done-callback ran and saw `k`.
    pub fn callback(&self, id: u64, k: Kind) {
        self.event(id, "done-callback", |e| {
            e.callbacks += 1;
            e.callback_kind.get_or_insert(k);
        });
    }

    /// Input `id`'s outcome, as its consumer saw it (`note`: details of an
    /// unexpected one).
    pub fn consumed(&self, id: u64, k: Kind, note: Option<String>) {
        self.event(id, "result", |e| {
            e.consumed += 1;
            e.consumed_kind.get_or_insert(k);
            if note.is_some() {
                e.note = note;
            }
        });
    }

    /// Input `id`'s future was dropped: only its callback will report.
    pub fn detached(&self, id: u64) {
        self.event(id, "detach", |e| e.detached = true);
    }

    /// Map input `id` will never be yielded (its map was dropped or ended).
    pub fn discarded(&self, id: u64) {
        self.event(id, "discard", |e| {
            e.allowed = e.allowed.with(Kind::Discarded);
            e.consumed += 1;
            e.consumed_kind.get_or_insert(Kind::Discarded);
        });
    }

    fn event(&self, id: u64, what: &str, f: impl FnOnce(&mut Entry)) {
        let mut b = self.book();
        let b = &mut *b;
        match b.live.get_mut(&id) {
            Some(e) => {
                f(e);
                if e.complete() {
                    let e = b.live.remove(&id).expect("present");
                    judge(id, &e, &b.pools, &mut b.counts, &mut b.violations);
                }
            }
            None if id < b.next_id => b.violations.add(
                "an outcome reported after the input was complete (twice?)",
                format!("input {id}: a late {what}"),
            ),
            None => b
                .violations
                .add("an outcome for an unknown input", format!("input {id}")),
        }
    }

    /// Records a violation the soak saw outside any one input (a pool that
    /// failed to build, a map that yielded more than it was given).
    pub fn violation(&self, category: &str, example: String) {
        self.book().violations.add(category, example);
    }

    /// Inputs registered so far.
    pub fn inputs(&self) -> u64 {
        self.book().next_id
    }

    /// Inputs registered and not yet judged.
    pub fn open(&self) -> usize {
        self.book().live.len()
    }

    /// The verdict: judges what is still open (it never completed) and
    /// returns the counts and violations.
    pub fn tally(&self) -> Tally {
        self.tally_after(true)
    }

    /// [`tally`](Self::tally); `stopped`: every pool should have been
    /// stopped by now (not so after a hang, which is reported instead).
    pub fn tally_after(&self, stopped: bool) -> Tally {
        let mut b = self.book();
        let b = &mut *b;
        let mut open: Vec<(u64, Entry)> = b.live.drain().collect();
        open.sort_by_key(|(id, _)| *id);
        for (id, e) in &open {
            judge(*id, e, &b.pools, &mut b.counts, &mut b.violations);
        }
        let mut pools = BTreeMap::new();
        for (i, p) in b.pools.iter().enumerate() {
            let kind = match p.kind {
                PoolKind::Process => "process",
                PoolKind::Thread => "thread",
            };
            let how = p.stop.map_or("not stopped".to_owned(), |s| s.to_string());
            *pools.entry(format!("{kind} pool, {how}")).or_default() += 1;
            if stopped && p.stop.is_none() {
                b.violations.add(
                    "a pool the soak never stopped (soak bug)",
                    format!("{kind} pool #{i}"),
                );
            }
            if let Some(r) = &p.broken {
                b.violations.add(
                    "a pool broke (restart intensity)",
                    format!("{kind} pool #{i}: {r}"),
                );
            }
        }
        Tally {
            inputs: b.next_id,
            counts: b.counts.clone(),
            pools,
            violations: b.violations.clone(),
        }
    }
}

/// Checks one input's history; counts its outcome, records violations.
fn judge(
    id: u64,
    e: &Entry,
    pools: &[PoolRec],
    counts: &mut BTreeMap<Kind, u64>,
    v: &mut Violations,
) {
    let pool = &pools[e.pool];
    let pool_name = match pool.kind {
        PoolKind::Process => "process",
        PoolKind::Thread => "thread",
    };
    let who = format!("input {id} ({} to {pool_name} pool #{})", e.what, e.pool);
    let mut allowed = e.allowed;
    if let Some(stop) = pool.stop {
        allowed = allowed.with(Kind::Refused).with(Kind::Shutdown);
        if matches!(
            stop,
            Stop::CancelPending | Stop::Kill | Stop::WaitRacingKill
        ) {
            allowed = allowed.with(Kind::Cancelled);
        }
    }
    if pool.broken.is_some() {
        allowed = allowed.with(Kind::Broken).with(Kind::Refused);
    }
    if e.via == Via::Submit {
        match e.callbacks {
            0 if e.consumed_kind != Some(Kind::Refused) => v.add(
                "never resolved: its done-callback never ran",
                format!("{who}, consumer saw {:?}", e.consumed_kind),
            ),
            0 | 1 => {}
            n => v.add(
                "done-callback ran more than once",
                format!("{who}: {n} times"),
            ),
        }
    }
    if e.consumed > 1 {
        v.add(
            "more than one result for one input",
            format!("{who}: {} results", e.consumed),
        );
    }
    if e.via == Via::Map && e.consumed == 0 {
        v.add("a map input without a result", who.clone());
    }
    if let (Some(c), Some(r)) = (e.callback_kind, e.consumed_kind)
        && c != r
    {
        v.add(
            "the done-callback and the consumer saw different outcomes (SEMANTICS 7)",
            format!("{who}: callback saw {c}, consumer got {r}"),
        );
    }
    let Some(kind) = e.consumed_kind.or(e.callback_kind) else {
        return;
    };
    *counts.entry(kind).or_default() += 1;
    if !allowed.has(kind) {
        let note = e
            .note
            .as_deref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default();
        v.add(
            &format!("outcome `{kind}` not allowed"),
            format!("{who}: allowed {allowed}{note}"),
        );
    }
    if e.must_cancel && kind != Kind::Cancelled && kind != Kind::Refused {
        v.add(
            "cancel()/kill() returned true but the task did not end cancelled",
            format!("{who}: ended {kind}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn categories(t: &Tally) -> Vec<String> {
        t.violations.categories().map(str::to_owned).collect()
    }

    #[test]
    fn a_clean_history_passes_and_counts_each_outcome_once() {
        let l = Ledger::new();
        let p = l.new_pool(PoolKind::Process);
        let a = l.register(p, Via::Submit, "value", Kind::Value);
        l.callback(a, Kind::Value);
        l.consumed(a, Kind::Value, None);
        let b = l.register(p, Via::Submit, "panic", Kind::Panicked);
        l.detached(b);
        l.callback(b, Kind::Panicked);
        let c = l.register(p, Via::Map, "value", Kind::Value);
        l.discarded(c);
        let d = l.register(p, Via::Submit, "value", Kind::Value);
        l.stopping(p, Stop::Kill);
        l.cancel_succeeded(d);
        l.callback(d, Kind::Cancelled);
        l.consumed(d, Kind::Cancelled, None);
        let t = l.tally();
        assert!(t.violations.is_empty(), "{}", t.violations);
        assert_eq!(t.inputs, 4);
        assert_eq!(t.counts.values().sum::<u64>(), 4);
        assert_eq!(t.counts[&Kind::Value], 1);
        assert_eq!(t.counts[&Kind::Discarded], 1);
    }

    #[test]
    fn a_missing_outcome_fails() {
        let l = Ledger::new();
        let p = l.new_pool(PoolKind::Process);
        let a = l.register(p, Via::Submit, "value", Kind::Value);
        l.detached(a); // dropped, and its callback never runs
        l.register(p, Via::Map, "value", Kind::Value); // never yielded
        l.stopping(p, Stop::Wait);
        let t = l.tally();
        assert_eq!(
            categories(&t),
            [
                "a map input without a result",
                "never resolved: its done-callback never ran"
            ]
        );
    }

    #[test]
    fn a_second_outcome_fails() {
        let l = Ledger::new();
        let p = l.new_pool(PoolKind::Thread);
        let a = l.register(p, Via::Submit, "value", Kind::Value);
        l.callback(a, Kind::Value);
        l.consumed(a, Kind::Value, None);
        l.callback(a, Kind::Value);
        l.stopping(p, Stop::Wait);
        assert_eq!(
            categories(&l.tally()),
            ["an outcome reported after the input was complete (twice?)"]
        );
    }

    #[test]
    fn a_wrong_kind_fails() {
        let l = Ledger::new();
        let p = l.new_pool(PoolKind::Process);
        // Cancelled without a cancel attempt or a cancelling shutdown.
        let a = l.register(p, Via::Submit, "value", Kind::Value);
        l.callback(a, Kind::Cancelled);
        l.consumed(a, Kind::Cancelled, None);
        // Refused by a pool that was not stopped.
        let b = l.register(p, Via::Submit, "value", Kind::Value);
        l.consumed(b, Kind::Refused, None);
        // cancel() said true, yet it ran.
        let c = l.register(p, Via::Submit, "value", Kind::Value);
        l.cancel_succeeded(c);
        l.callback(c, Kind::Value);
        l.consumed(c, Kind::Value, None);
        l.stopping(p, Stop::Wait);
        let t = l.tally();
        assert_eq!(
            categories(&t),
            [
                "cancel()/kill() returned true but the task did not end cancelled",
                "outcome `cancelled` not allowed",
                "outcome `refused at submit` not allowed",
            ],
            "{}",
            t.violations
        );
    }

    #[test]
    fn a_callback_that_saw_another_outcome_fails() {
        let l = Ledger::new();
        let p = l.new_pool(PoolKind::Process);
        let a = l.register(p, Via::Submit, "panic", Kind::Panicked);
        l.callback(a, Kind::Value); // error() was None: a waiter took it first
        l.consumed(a, Kind::Panicked, None);
        l.stopping(p, Stop::Wait);
        assert_eq!(
            categories(&l.tally()),
            ["the done-callback and the consumer saw different outcomes (SEMANTICS 7)"]
        );
    }

    #[test]
    fn a_broken_or_unstopped_pool_fails() {
        let l = Ledger::new();
        let p = l.new_pool(PoolKind::Process);
        l.broken(p, "crash loop".into());
        l.new_pool(PoolKind::Thread);
        assert_eq!(
            categories(&l.tally()),
            [
                "a pool broke (restart intensity)",
                "a pool the soak never stopped (soak bug)"
            ]
        );
    }
}
