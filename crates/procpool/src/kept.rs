//! A value kept whole until its frame is written, so that its large byte
//! strings go from the value straight to the socket (the *bulk* strings of
//! `procpool_wire::bulk`): a task's input in the parent (from `submit`
//! until its result, as a retry sends it again) and a task's output in the
//! worker (until its result is written). Neither side copies those bytes.

use std::io;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

use procpool_wire::bulk::{Bulk, BulkSource};
use procpool_wire::codec;

use crate::lock::lock;
use crate::shared::{self, Mode};

/// `value`, whose first encoding (for a connection in `mode`, with at
/// most `limit` shared bytes) put bulk strings at `spots`.
pub(crate) struct Kept<T> {
    /// Behind a lock only to be `Sync` (a task need not be): one writer
    /// encodes it at a time anyway.
    value: Mutex<T>,
    spots: Vec<Bulk>,
    mode: Mode,
    limit: u64,
    /// Why a second encoding did not match the first, once one did not.
    refused: OnceLock<String>,
}

impl<T> Kept<T> {
    pub(crate) fn new(value: T, spots: Vec<Bulk>, mode: Mode, limit: u64) -> Kept<T> {
        Kept {
            value: Mutex::new(value),
            spots,
            mode,
            limit,
            refused: OnceLock::new(),
        }
    }

    /// The value back (a submit refused after encoding returns its task).
    pub(crate) fn into_inner(self) -> T {
        self.value.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Serialize + Send> BulkSource for Kept<T> {
    fn spots(&self) -> &[Bulk] {
        &self.spots
    }

    /// The second encoding runs with shared values written as the first
    /// (a shared value is a reference again, not its bytes inline); the
    /// memory files it lists are the first encoding's, already sent.
    fn write_bulk(&self, write: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let value = lock(&self.value);
        let (written, _) = shared::encode_with(self.mode, self.limit, || {
            codec::write_bulk(&*value, &self.spots, write)
        });
        if let Err(e) = &written
            && e.kind() == io::ErrorKind::InvalidData
        {
            let _ = self.refused.set(e.to_string());
        }
        written
    }

    fn refused(&self) -> Option<String> {
        self.refused.get().cloned()
    }
}
