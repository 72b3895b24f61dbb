//! Shared-value state set once for a run of payloads on one thread, not
//! once per payload: the parent's reader decoding a packed chunk's outputs
//! ([`DecodeRun`]), a worker running a packed chunk's inputs
//! ([`TaskRun`]). Each payload still gets what `decode_with` /
//! `encode_with` would give it alone.

use super::{
    CONTEXT, Context, Encoded, Kind, LIGHT, Light, Mode, Restore, SharedError, enter, leave,
};

/// [`decode_with`](super::decode_with) for a run of payloads without descriptors, decoded one
/// after another on this thread (a packed chunk's outputs from the reply
/// ring): the light state is set once for the run, not per payload. A
/// payload that meets a shared value makes its own state, as under
/// `decode_with`, which [`DecodeRun::decode`] takes back (with its error)
/// before the next payload, so each still has its own.
pub(crate) struct DecodeRun {
    light: Light,
    restore: Restore,
}

impl DecodeRun {
    /// Begins a run for shared-value `mode`, counting at most `limit`
    /// shared bytes per payload.
    pub(crate) fn new(mode: Mode, limit: u64) -> DecodeRun {
        let light = Light {
            kind: Kind::Decode,
            mode,
            limit,
            heavy: false,
        };
        DecodeRun {
            light,
            restore: enter(light, None),
        }
    }

    /// Runs `f` (one payload's codec decode) in the run: what
    /// `decode_with(mode, Vec::new(), limit, f)` would return.
    #[inline]
    pub(crate) fn decode<R>(&mut self, f: impl FnOnce() -> R) -> (R, Option<SharedError>) {
        let r = f();
        if !LIGHT.get().is_some_and(|l| l.heavy) {
            // No shared value made state: nothing to take back.
            return (r, None);
        }
        let error = match leave(&mut self.restore) {
            Some(Context::Decode(s)) => s.error,
            _ => None,
        };
        self.restore = enter(self.light, None);
        (r, error)
    }
}

/// Where a task's shared values are read and written while a worker runs
/// it: its own state (a single task, with the descriptors that came with
/// it: `task::Own`) or its chunk's ([`TaskRun`]).
pub(crate) trait Scope {
    /// Runs `f` (the input's codec decode) in this scope: the value and the
    /// shared values' error, if any.
    fn decode<R>(&mut self, f: impl FnOnce() -> R) -> (R, Option<SharedError>);
    /// Runs `f` (the output's codec encode) in this scope: the value, and
    /// the memory files to send with it or the shared values' error.
    fn encode<R>(&mut self, f: impl FnOnce() -> R) -> (R, Encoded);
    /// The scope's mode and limit.
    fn mode_limit(&self) -> (Mode, u64);
}

impl Scope for TaskRun {
    /// The run's mode and limit.
    fn mode_limit(&self) -> (Mode, u64) {
        (self.decode.mode, self.decode.limit)
    }

    /// Runs `f` (an input's codec decode): what
    /// `decode_with(mode, Vec::new(), limit, f)` would return.
    #[inline]
    fn decode<R>(&mut self, f: impl FnOnce() -> R) -> (R, Option<SharedError>) {
        let (r, heavy) = self.phase(self.decode, f);
        if !heavy {
            return (r, None);
        }
        match self.state() {
            Some(Context::Decode(s)) => (r, s.error),
            _ => (r, None),
        }
    }

    /// Runs `f` (an output's codec encode): what
    /// `encode_with(mode, limit, f)` would return.
    #[inline]
    fn encode<R>(&mut self, f: impl FnOnce() -> R) -> (R, Encoded) {
        let (r, heavy) = self.phase(self.encode, f);
        if !heavy {
            return (r, Encoded::default());
        }
        match self.state() {
            Some(Context::Encode(s)) => (
                r,
                Encoded {
                    files: s.files,
                    error: s.error,
                },
            ),
            _ => (r, Encoded::default()),
        }
    }
}

/// A worker's shared-value state for the inputs of a packed chunk (no
/// descriptors come with them), run one after another on this thread.
/// Each input's decode and its output's encode set the light state and
/// clear it after, three accesses of a `Copy` cell, instead of entering
/// and leaving a call's state with its restore guard (issue 14's profile:
/// about a tenth of a worker's instructions per input). Between the phases
/// (while the task runs) no state is set, as between `decode_with` and
/// `encode_with`. A payload that meets a shared value makes its own state,
/// taken back at the end of its phase.
pub(crate) struct TaskRun {
    decode: Light,
    encode: Light,
    /// Inside another call's encode or decode (never in a worker's
    /// executor): each phase enters and leaves as `decode_with` does.
    nested: bool,
    /// A nested phase's state, once it has left.
    taken: Option<Context>,
}

impl TaskRun {
    /// Begins a run for shared-value `mode`, counting at most `limit`
    /// shared bytes per payload.
    pub(crate) fn new(mode: Mode, limit: u64) -> TaskRun {
        let decode = Light {
            kind: Kind::Decode,
            mode,
            limit,
            heavy: false,
        };
        TaskRun {
            decode,
            encode: Light {
                kind: Kind::Encode,
                ..decode
            },
            nested: LIGHT.get().is_some(),
            taken: None,
        }
    }

    /// Runs `f` with `light` set; whether a shared value made the full
    /// state (then taken with [`state`](Self::state)). Only a flag comes
    /// back on the common path: the state itself is a large value, and
    /// moving it stalled the worker (issue 14's profile).
    #[inline]
    fn phase<R>(&mut self, light: Light, f: impl FnOnce() -> R) -> (R, bool) {
        if self.nested {
            let mut restore = enter(light, None);
            let r = f();
            let heavy = LIGHT.get().is_some_and(|l| l.heavy);
            self.taken = leave(&mut restore);
            return (r, heavy);
        }
        /// Clears the phase's state also on unwind.
        struct Clear;
        impl Drop for Clear {
            fn drop(&mut self) {
                if LIGHT.replace(None).is_some_and(|l| l.heavy) {
                    drop(CONTEXT.with(|c| c.borrow_mut().take()));
                }
            }
        }
        LIGHT.set(Some(light));
        let clear = Clear;
        let r = f();
        std::mem::forget(clear);
        (r, LIGHT.replace(None).is_some_and(|l| l.heavy))
    }

    /// The full state the phase just run made.
    #[cold]
    fn state(&mut self) -> Option<Context> {
        if self.nested {
            return self.taken.take();
        }
        CONTEXT.with(|c| c.borrow_mut().take())
    }
}
