//! The soak's one task type, [`Chaos`], whose input says how to misbehave,
//! and the seeded random numbers that choose it.

use std::time::Duration;

use procpool::{Registry, Task, WorkerContext};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// What a [`Chaos`] task does when it runs.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Returns its input at once.
    Value,
    /// Sleeps this many milliseconds, then returns its input.
    Sleep(u32),
    /// Panics (`loud`: through the panic hook, which prints a line; else
    /// `resume_unwind`, silent).
    Panic {
        /// Whether the panic hook sees it.
        loud: bool,
    },
    /// `std::process::abort()`.
    Abort,
    /// SIGKILL to its own process.
    KillSelf,
    /// `std::process::exit(code)`.
    Exit(i32),
    /// Sleeps until killed (only ever sent with a task timeout).
    Hang,
}

impl Act {
    /// Whether running it ends the process it runs in (never sent to a
    /// `ThreadPool`).
    pub fn ends_process(self) -> bool {
        matches!(self, Act::Abort | Act::KillSelf | Act::Exit(_) | Act::Hang)
    }
}

/// The soak's task: echoes `payload` back with its `id`, after doing `act`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Chaos {
    /// The soak's input id (the ledger's index).
    pub id: u64,
    /// What to do.
    pub act: Act,
    /// Bytes to echo back; [`payload`] of `id` and a length.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// [`Chaos`]'s output.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Echoed {
    /// The input's id.
    pub id: u64,
    /// The input's payload.
    pub payload: ByteBuf,
}

/// The message of every panic the soak plans (a panic hook may hide them).
pub const PLANNED_PANIC: &str = "soak: planned panic";

impl Task for Chaos {
    const NAME: &'static str = "soak_chaos";
    type Output = Echoed;
    fn run(self, ctx: &mut WorkerContext) -> Echoed {
        match self.act {
            Act::Value => {}
            Act::Sleep(ms) => std::thread::sleep(Duration::from_millis(ms.into())),
            Act::Panic { loud: true } => panic!("{PLANNED_PANIC} {}", self.id),
            Act::Panic { loud: false } => {
                std::panic::resume_unwind(Box::new(format!("{PLANNED_PANIC} {}", self.id)))
            }
            Act::Abort => std::process::abort(),
            Act::KillSelf => procpool_tasks::drill::KillSelf.run(ctx),
            Act::Exit(code) => std::process::exit(code),
            Act::Hang => procpool_tasks::drill::Hang.run(ctx),
        }
        Echoed {
            id: self.id,
            payload: ByteBuf::from(self.payload),
        }
    }
}

/// The soak's tasks, for the worker's registry (the `procpool` binary
/// merges it into the built-in one).
pub fn registry() -> Registry {
    Registry::new().task::<Chaos>()
}

/// The bytes input `id` carries: `len` bytes that depend on `id`, so an
/// echo that swapped, cut or mixed payloads is seen without keeping a copy.
pub fn payload(id: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    out
}

/// SplitMix64: small, seedable, good enough to choose operations. One per
/// thread, seeded from the run's seed and the thread's index, so a seed
/// replays the same choices (not the same timing).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for stream `stream` of run `seed`.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// `true` with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Picks an index by weight.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_depends_on_id_and_len() {
        assert_eq!(payload(7, 13).len(), 13);
        assert_eq!(payload(7, 13), payload(7, 13));
        assert_ne!(payload(7, 13), payload(8, 13));
        assert_eq!(&payload(7, 20)[..13], &payload(7, 13)[..]);
    }

    #[test]
    fn rng_replays_from_a_seed() {
        let a: Vec<u64> = {
            let mut r = Rng::new(42, 3);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let mut r = Rng::new(42, 3);
        assert_eq!(a, (0..5).map(|_| r.next_u64()).collect::<Vec<_>>());
        let mut other = Rng::new(42, 4);
        assert_ne!(a[0], other.next_u64());
        assert_eq!(Rng::new(1, 0).weighted(&[0, 5, 0]), 1);
    }
}
