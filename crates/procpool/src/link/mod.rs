//! The contract between the pool and its workers, and nothing else: what
//! both processes must agree on, below both sides. `process_pool/` (the
//! parent) and `worker/` (the child) each import from here and never from
//! each other. This module knows nothing of pools, slots, registries or
//! tasks.
//!
//! * [`env`](mod@env) — every `PROCPOOL_*` variable and inherited descriptor number.
//! * [`stream`] — the connection: a Unix socket or TCP.
//! * [`frames`] — reading frames off a connection; the buffer-reuse rule.
//! * [`handshake`] — both halves of the handshake that opens a connection.
//! * [`secret`] — the secret's hex form, randomness, tickets, host name.
//! * [`role`] — is this process a worker, its own worker, serving.
//! * [`ring`] — the reply ring (shared memory) a spawned worker's notes
//!   travel in: the worker's writer and the pool's reader.
//!
//! The bytes themselves (frames, messages, the handshake's messages) are
//! the `procpool-wire` crate; this layer is what moves them between two
//! processes.

pub(crate) mod env;
pub(crate) mod frames;
pub(crate) mod handshake;
pub(crate) mod ring;
pub(crate) mod role;
pub(crate) mod secret;
pub(crate) mod stream;
