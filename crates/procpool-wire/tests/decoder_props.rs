//! Decoder properties: on any input, every decoder of the wire crate returns
//! a value or one of its typed errors, never panics, and never allocates past
//! the frame cap; valid messages round-trip.
//!
//! * The bulk of the fuzzing is a seeded xorshift loop (fast in a debug build,
//!   reproducible: a failure names the test, the case and the input bytes).
//!   It starts from valid encodings and mutates them: bit flips, truncation,
//!   junk appended or inserted, duplicated and deleted ranges, length prefixes
//!   overwritten with `u32::MAX`, `cap + 1` and friends, wide bincode varints
//!   spliced in.
//! * `FrameReader` is checked against a reference model of the framing over a
//!   `Cursor` that hands out short reads, `Interrupted` errors and a hard
//!   error at a chosen offset; a counting wrapper proves that a length above
//!   the cap yields `TooLarge` with nothing read past the prefix.
//! * A counting `#[global_allocator]` records, per thread, the largest single
//!   allocation and the peak of live bytes while a decoder runs: the direct
//!   evidence for "never allocates past the cap".
//! * The round trips are proptest strategies over every message type.
//!
//! Regression (the `regression_*` tests): bincode 2 turns a `String` or
//! `serde_bytes` length prefix into `vec![0u8; len]` before checking that
//! the input holds `len` bytes. `codec::decode_prefix` now runs every decode
//! with a limit scaled to its input, so a few header bytes can no longer
//! claim gigabytes. `MASK_WIDE_VARINTS` (off) rewrites the wide-varint
//! markers `0xFC`/`0xFD`, should that ever need isolating again.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;
use std::io::{self, Cursor, ErrorKind, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};

use procpool_wire::codec::{self, CodecError};
use procpool_wire::frame::{FrameError, FrameReader, LEN_BYTES, Outgoing, write_all_frames};
use procpool_wire::handshake::{HANDSHAKE_MAX_FRAME, HandshakeError, Hello, MAGIC, Welcome};
use procpool_wire::message::{
    Header, MessageError, Outcome, TaskHeader, ToParent, ToWorker, WorkerTiming, decode_message,
    encode_message,
};
use proptest::prelude::*;

/// The frame cap the fuzzed bodies live under.
const CAP: u32 = 1 << 20;
/// Peak live bytes one body decoder may hold: the cap (serde preallocates at
/// most 1 MiB for a sequence) plus room for one short string and the error.
const LIVE_BOUND: isize = CAP as isize + (CAP as isize) / 4;
/// See the module docs: rewrite `0xFC`/`0xFD` in decoder inputs while the
/// unchecked-length bug is open.
const MASK_WIDE_VARINTS: bool = false;

const BODY_CASES: u64 = 30_000;
const STREAM_CASES: u64 = 40_000;
const ROUND_TRIP_CASES: u32 = 1_000;
const ANY_BYTES_CASES: u32 = 2_000;

// ---------------------------------------------------------------------------
// Allocation meter.

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK_LIVE: Cell<isize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    // `try_with`: the thread-locals are const-initialised and need no
    // destructor, so this never allocates; during thread teardown it is a
    // no-op.
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(size as isize);
        live.set(now);
        let _ = PEAK_LIVE.try_with(|p| p.set(p.get().max(now)));
    });
}

fn note_dealloc(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().wrapping_sub(size as isize)));
}

/// `System`, plus per-thread bookkeeping of what was asked for.
struct Metered;

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds the `GlobalAlloc` contract; the bookkeeping only touches
// thread-local `Cell`s and never allocates or unwinds.
unsafe impl GlobalAlloc for Metered {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller's `layout` obligations pass straight through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_dealloc(layout.size());
        // SAFETY: `ptr` came from `System` through this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_dealloc(layout.size());
        note_alloc(new_size);
        // SAFETY: as for `dealloc`; `new_size` is the caller's, unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static METERED: Metered = Metered;

#[derive(Debug, Clone, Copy)]
struct Usage {
    /// The largest single allocation (or reallocation target) requested.
    largest: usize,
    /// The peak of bytes allocated minus bytes freed since `meter_start`.
    peak_live: isize,
}

fn meter_start() {
    LARGEST.with(|c| c.set(0));
    LIVE.with(|c| c.set(0));
    PEAK_LIVE.with(|c| c.set(0));
}

fn meter_read() -> Usage {
    Usage {
        largest: LARGEST.with(Cell::get),
        peak_live: PEAK_LIVE.with(Cell::get),
    }
}

fn metered<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    meter_start();
    let out = f();
    (out, meter_read())
}

fn check_usage(what: &str, u: Usage) -> Result<(), String> {
    if u.largest > CAP as usize || u.peak_live > LIVE_BOUND {
        return Err(format!(
            "{what} allocated past the cap: largest single allocation {} bytes, peak live {} bytes (cap {CAP})",
            u.largest, u.peak_live
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Deterministic randomness.

/// xorshift64*: tiny, fast in debug builds, good enough for fuzzing.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.index(xs.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Mostly short lengths, sometimes long ones.
    fn len(&mut self, short: u64, long: u64) -> usize {
        if self.one_in(8) {
            self.below(long + 1) as usize
        } else {
            self.below(short + 1) as usize
        }
    }
}

// ---------------------------------------------------------------------------
// Seeds: valid values, built from the PRNG. `small` keeps every integer below
// 2^16 and every string under 251 bytes, so their encodings hold no 0xFC/0xFD
// marker and survive masking intact.

fn gen_u64(rng: &mut Rng, small: bool) -> u64 {
    let random = rng.next();
    let v = rng.pick(&[
        0,
        1,
        250,
        251,
        255,
        256,
        65_535,
        65_536,
        u64::from(u32::MAX),
        u64::MAX,
        random,
    ]);
    if small { v % 65_536 } else { v }
}

fn gen_u32(rng: &mut Rng, small: bool) -> u32 {
    gen_u64(rng, small) as u32
}

fn gen_string(rng: &mut Rng, small: bool) -> String {
    let n = rng.len(12, if small { 40 } else { 300 });
    (0..n)
        .map(|_| rng.pick(&['a', 'z', '0', ' ', '_', ':', 'é', '∑', '😀', '\0']))
        .collect()
}

fn gen_payload(rng: &mut Rng) -> Vec<u8> {
    let n = rng.len(24, 600);
    rng.bytes(n)
}

fn gen_to_worker(rng: &mut Rng, small: bool) -> (ToWorker, Vec<Vec<u8>>) {
    match rng.below(5) {
        0 => {
            let p = gen_payload(rng);
            let msg = ToWorker::Init {
                name: gen_string(rng, small),
                fingerprint: gen_u64(rng, small),
                len: p.len() as u32,
            };
            (msg, vec![p])
        }
        1 => {
            let n = rng.len(3, 12);
            let mut items = Vec::new();
            let mut payloads = Vec::new();
            for _ in 0..n {
                let p = gen_payload(rng);
                items.push(TaskHeader {
                    id: gen_u64(rng, small),
                    name: gen_string(rng, small).into(),
                    fingerprint: gen_u64(rng, small),
                    len: p.len() as u32,
                    fds: 0,
                    bulk: Vec::new(),
                    items: 0,
                });
                payloads.push(p);
            }
            (ToWorker::Run { items }, payloads)
        }
        2 => (
            ToWorker::Cancel {
                id: gen_u64(rng, small),
            },
            vec![],
        ),
        3 => (
            ToWorker::Shutdown {
                drop_pending: rng.one_in(2),
            },
            vec![],
        ),
        _ => (ToWorker::Wake, vec![]),
    }
}

fn gen_outcome(rng: &mut Rng, small: bool) -> (Outcome, Vec<Vec<u8>>) {
    match rng.below(6) {
        0 => {
            let p = gen_payload(rng);
            (
                Outcome::Ok {
                    len: p.len() as u32,
                    fds: 0,
                    bulk: Vec::new(),
                },
                vec![p],
            )
        }
        1 => {
            let message = gen_string(rng, small);
            let location = if rng.one_in(2) {
                Some(gen_string(rng, small))
            } else {
                None
            };
            (Outcome::Panicked { message, location }, vec![])
        }
        2 => {
            let message = gen_string(rng, small);
            (
                Outcome::Decode {
                    message,
                    worker_type: gen_string(rng, small),
                },
                vec![],
            )
        }
        3 => {
            let message = gen_string(rng, small);
            (
                Outcome::Encode {
                    message,
                    worker_type: gen_string(rng, small),
                },
                vec![],
            )
        }
        4 => (
            Outcome::UnknownTask {
                name: gen_string(rng, small),
            },
            vec![],
        ),
        _ => {
            let worker_input = gen_string(rng, small);
            (
                Outcome::Mismatch {
                    worker_input,
                    worker_output: gen_string(rng, small),
                },
                vec![],
            )
        }
    }
}

fn gen_to_parent(rng: &mut Rng, small: bool) -> (ToParent, Vec<Vec<u8>>) {
    let generation = gen_u32(rng, small);
    match rng.below(5) {
        4 => (ToParent::Heartbeat { generation }, vec![]),
        0 => {
            let error = if rng.one_in(2) {
                Some(gen_string(rng, small))
            } else {
                None
            };
            (ToParent::InitDone { generation, error }, vec![])
        }
        1 => (
            ToParent::Started {
                generation,
                id: gen_u64(rng, small),
            },
            vec![],
        ),
        2 => {
            let id = gen_u64(rng, small);
            let (outcome, payloads) = gen_outcome(rng, small);
            let timing = WorkerTiming {
                queue_ns: gen_u64(rng, small),
                decode_ns: gen_u64(rng, small),
                run_ns: gen_u64(rng, small),
                encode_ns: gen_u64(rng, small),
                peak_rss_bytes: gen_u64(rng, small),
            };
            (
                ToParent::Finished {
                    generation,
                    id,
                    outcome,
                    timing,
                },
                payloads,
            )
        }
        _ => {
            let id = gen_u64(rng, small);
            (
                ToParent::Withdrawn {
                    generation,
                    id,
                    withdrawn: rng.one_in(2),
                },
                vec![],
            )
        }
    }
}

fn gen_hello(rng: &mut Rng, small: bool) -> Hello {
    let mut h = Hello::ours(
        gen_u32(rng, small),
        String::from_utf8_lossy(&gen_payload(rng)).into_owned(),
        rng.next(),
        gen_payload(rng),
    );
    if rng.one_in(4) {
        h.magic = [rng.next() as u8; 8];
    }
    if rng.one_in(4) {
        h.protocol = gen_u32(rng, small);
    }
    if rng.one_in(4) {
        h.build_id = gen_string(rng, small);
    }
    if rng.one_in(2) {
        let n = (rng.next() % 4) as usize;
        let tasks = (0..n)
            .map(|_| procpool_wire::handshake::TaskInfo {
                name: gen_string(rng, small),
                fingerprint: rng.next(),
                input_type: gen_string(rng, small),
            })
            .collect();
        h = h.with_tasks(gen_string(rng, small), tasks);
    }
    if rng.one_in(4) {
        h.refusal = Some(gen_string(rng, small));
    }
    h
}

fn gen_welcome(rng: &mut Rng, small: bool) -> Welcome {
    if rng.one_in(2) {
        Welcome::Accept {
            worker_id: gen_u32(rng, small),
            generation: gen_u32(rng, small),
            max_frame: gen_u32(rng, small),
            heartbeat_ms: gen_u32(rng, small),
            proof: gen_payload(rng),
        }
    } else if rng.one_in(2) {
        Welcome::Challenge {
            nonce: gen_payload(rng),
        }
    } else {
        Welcome::Reject {
            reason: gen_string(rng, small),
        }
    }
}

/// One valid frame of a random kind (or, sometimes, a frame of junk).
fn gen_frame(rng: &mut Rng, small: bool) -> Outgoing {
    let simple = |head: Vec<u8>| Outgoing::new(head, Vec::<Vec<u8>>::new()).unwrap();
    match rng.below(7) {
        0 => {
            let (m, p) = gen_to_worker(rng, small);
            encode_message(&m, p).unwrap()
        }
        1 => {
            let (m, p) = gen_to_parent(rng, small);
            encode_message(&m, p).unwrap()
        }
        2 => simple(codec::encode(&gen_hello(rng, small)).unwrap()),
        3 => simple(codec::encode(&gen_welcome(rng, small)).unwrap()),
        4 => simple(codec::encode(&gen_string(rng, small)).unwrap()),
        5 => {
            let v: Vec<u64> = (0..rng.len(6, 64)).map(|_| gen_u64(rng, small)).collect();
            simple(codec::encode(&v).unwrap())
        }
        _ => {
            let n = rng.len(16, 200);
            simple(rng.bytes(n))
        }
    }
}

fn wire(frames: &[Outgoing]) -> Vec<u8> {
    let mut out = Vec::new();
    write_all_frames(&mut out, frames).unwrap();
    out
}

// ---------------------------------------------------------------------------
// Mutations.

const INTERESTING_BYTES: [u8; 13] = [
    0, 1, 2, 3, 4, 0x7F, 0x80, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF,
];

/// Values to overwrite a length prefix with.
fn length_values(rng: &mut Rng, cap: u32, actual: u32) -> u32 {
    let random = rng.next() as u32;
    rng.pick(&[
        u32::MAX,
        cap.saturating_add(1),
        cap,
        cap.saturating_sub(1),
        1 << 31,
        actual.wrapping_add(1),
        actual.wrapping_sub(1),
        0,
        random,
    ])
}

/// Applies 1..=4 random mutations. `prefixes` are offsets where a frame's
/// length prefix starts (empty for a bare body).
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, prefixes: &[usize], cap: u32) {
    for _ in 0..1 + rng.below(4) {
        let n = bytes.len();
        match rng.below(11) {
            0 if n > 0 => {
                let i = rng.index(n);
                bytes[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.index(n);
                bytes[i] = if rng.one_in(2) {
                    rng.pick(&INTERESTING_BYTES)
                } else {
                    rng.next() as u8
                };
            }
            2 => bytes.truncate(rng.index(n + 1)),
            3 => {
                let k = 1 + rng.index(32);
                bytes.extend(rng.bytes(k));
            }
            4 => {
                let at = rng.index(n + 1);
                let k = 1 + rng.index(16);
                let junk = rng.bytes(k);
                bytes.splice(at..at, junk);
            }
            5 if n > 0 => {
                let start = rng.index(n);
                let end = (start + 1 + rng.index(16)).min(n);
                let dup = bytes[start..end].to_vec();
                let at = rng.index(n + 1);
                bytes.splice(at..at, dup);
            }
            6 if n > 0 => {
                let start = rng.index(n);
                let end = (start + 1 + rng.index(16)).min(n);
                bytes.drain(start..end);
            }
            7 | 8 => {
                // A length prefix (or, in a bare body, four bytes anywhere)
                // overwritten with a huge or off-by-one length.
                let at = if prefixes.is_empty() || rng.one_in(4) {
                    rng.index(n + 1)
                } else {
                    rng.pick(prefixes)
                };
                let actual = bytes
                    .get(at..at + LEN_BYTES)
                    .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
                let v = length_values(rng, cap, actual).to_le_bytes();
                let end = (at + LEN_BYTES).min(n);
                if at <= n {
                    bytes.splice(at..end, v);
                }
            }
            9 => {
                // A wide bincode varint: u16, u32, u64 or u128 marker and its
                // little-endian value, inserted or overwriting.
                let (marker, width) =
                    rng.pick(&[(0xFBu8, 2usize), (0xFC, 4), (0xFD, 8), (0xFE, 16)]);
                let mut v = vec![marker];
                v.extend(rng.bytes(width));
                let at = rng.index(n + 1);
                let end = if rng.one_in(2) {
                    at
                } else {
                    (at + v.len()).min(n)
                };
                bytes.splice(at..end, v);
            }
            _ if n > 1 => {
                let (i, j) = (rng.index(n), rng.index(n));
                bytes.swap(i, j);
            }
            _ => bytes.push(rng.pick(&INTERESTING_BYTES)),
        }
    }
}

/// The varint markers `mask` rewrites: u32 and u64 (see the module docs).
const MASKED: &[u8] = if MASK_WIDE_VARINTS {
    &[0xFC, 0xFD]
} else {
    &[]
};

/// Rewrites the bytes in `markers` (to 0xEC/0xED, one-byte varints).
fn mask_with(bytes: &mut [u8], markers: &[u8]) {
    for b in bytes {
        if markers.contains(b) {
            *b ^= 0x10;
        }
    }
}

fn mask(bytes: &mut [u8]) {
    mask_with(bytes, MASKED);
}

fn hex(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(512).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 512 {
        format!("{shown}… ({} bytes)", bytes.len())
    } else {
        shown
    }
}

/// Runs `case` for `cases` seeds; a returned error or a panic fails the test
/// with the case number and the input.
fn fuzz_loop(
    test: &str,
    seed: u64,
    cases: u64,
    mut case: impl FnMut(&mut Rng) -> Result<(), (String, Vec<u8>)>,
) {
    for i in 0..cases {
        let mut rng = Rng::new(seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03));
        match catch_unwind(AssertUnwindSafe(|| case(&mut rng))) {
            Ok(Ok(())) => {}
            Ok(Err((why, input))) => panic!("{test}: case {i}: {why}\ninput: {}", hex(&input)),
            Err(p) => panic!("{test}: case {i} panicked: {}", codec::panic_message(&*p)),
        }
    }
}

// ---------------------------------------------------------------------------
// Body decoders: the checks run on every fuzzed body.

/// An error from `codec`: `Decode`, or `TrailingBytes` where the caller
/// consumes the whole input. `Panicked` means bincode or std panicked on the
/// input (no user serde code is involved in these types): a failure.
fn check_codec_error(
    what: &str,
    e: &CodecError,
    total: usize,
    whole_input: bool,
) -> Result<(), String> {
    match e {
        CodecError::Decode(_) => Ok(()),
        CodecError::TrailingBytes { consumed, total: t }
            if whole_input && consumed < t && *t == total =>
        {
            Ok(())
        }
        CodecError::Panicked { message, .. } => {
            Err(format!("{what}: the decoder panicked: {message}"))
        }
        other => Err(format!("{what}: unexpected error {other:?}")),
    }
}

fn check_message<H: Header + PartialEq + Debug>(what: &str, body: &[u8]) -> Result<(), String> {
    let (r, usage) = metered(|| decode_message::<H>(body));
    check_usage(what, usage)?;
    match r {
        Ok((header, payloads)) => {
            let lens = header.payload_lens();
            let got: Vec<u32> = payloads.iter().map(|p| p.len() as u32).collect();
            if lens != got {
                return Err(format!("{what}: declared payloads {lens:?}, got {got:?}"));
            }
            let total: usize = payloads.iter().map(|p| p.len()).sum();
            if payloads.concat() != body[body.len() - total..] {
                return Err(format!("{what}: payloads are not the tail of the body"));
            }
            let out = encode_message(&header, payloads.iter().map(|p| p.to_vec()).collect())
                .map_err(|e| format!("{what}: decoded {header:?} does not re-encode: {e}"))?;
            let again = wire(&[out]);
            let (h2, p2) = decode_message::<H>(&again[LEN_BYTES..])
                .map_err(|e| format!("{what}: re-encoded {header:?} does not decode: {e}"))?;
            if h2 != header || p2 != payloads {
                return Err(format!(
                    "{what}: {header:?} changed on a round trip into {h2:?}"
                ));
            }
            Ok(())
        }
        Err(MessageError::Header(e)) => check_codec_error(what, &e, body.len(), false),
        Err(MessageError::PayloadLength { declared, actual }) => {
            if declared == actual || actual >= body.len() as u64 {
                Err(format!(
                    "{what}: bogus PayloadLength {{ declared: {declared}, actual: {actual} }}"
                ))
            } else {
                Ok(())
            }
        }
        Err(other) => Err(format!("{what}: unexpected error {other:?}")),
    }
}

fn check_handshake_error(what: &str, e: &HandshakeError, total: usize) -> Result<(), String> {
    match e {
        HandshakeError::Garbled(c) => check_codec_error(what, c, total, true),
        other => Err(format!("{what}: decode returned {other:?}")),
    }
}

fn check_hello(body: &[u8]) -> Result<(), String> {
    let (r, usage) = metered(|| Hello::decode(body));
    check_usage("Hello::decode", usage)?;
    match r {
        Ok(h) => {
            let text: usize = h
                .tasks
                .iter()
                .map(|t| t.name.len() + t.input_type.len())
                .sum();
            let sizes = MAGIC.len() + h.build_id.len() + h.host.len() + h.nonce.len();
            if sizes + text + h.program.len() > body.len() {
                return Err(format!(
                    "Hello::decode: {h:?} is larger than its {} bytes",
                    body.len()
                ));
            }
            if Hello::decode(&codec::encode(&h).unwrap()).as_ref() != Ok(&h) {
                return Err(format!("Hello::decode: {h:?} does not round-trip"));
            }
            match h.check() {
                Ok(())
                | Err(
                    HandshakeError::NotProcpool
                    | HandshakeError::Protocol { .. }
                    | HandshakeError::Build { .. },
                ) => Ok(()),
                Err(other) => Err(format!("Hello::check returned {other:?}")),
            }
        }
        // A well-formed head of a stranger or another version.
        Err(HandshakeError::NotProcpool | HandshakeError::Protocol { .. }) => Ok(()),
        Err(e) => check_handshake_error("Hello::decode", &e, body.len()),
    }
}

fn check_welcome(body: &[u8]) -> Result<(), String> {
    let (r, usage) = metered(|| Welcome::decode(body));
    check_usage("Welcome::decode", usage)?;
    match r {
        Ok(w) => {
            if Welcome::decode(&codec::encode(&w).unwrap()).as_ref() != Ok(&w) {
                return Err(format!("Welcome::decode: {w:?} does not round-trip"));
            }
            Ok(())
        }
        Err(e) => check_handshake_error("Welcome::decode", &e, body.len()),
    }
}

fn check_string(body: &[u8]) -> Result<(), String> {
    let (r, usage) = metered(|| codec::decode::<String>(body));
    check_usage("decode::<String>", usage)?;
    match r {
        Ok(s) if s.len() < body.len() && codec::encode(&s).unwrap() == body => Ok(()),
        // bincode accepts a non-minimal varint length; the value must still
        // round-trip.
        Ok(s)
            if s.len() < body.len()
                && codec::decode::<String>(&codec::encode(&s).unwrap()) == Ok(s.clone()) =>
        {
            Ok(())
        }
        Ok(s) => Err(format!("decode::<String>: bogus value {s:?}")),
        Err(e) => check_codec_error("decode::<String>", &e, body.len(), true),
    }
}

fn check_vec_u64(body: &[u8]) -> Result<(), String> {
    let (r, usage) = metered(|| codec::decode::<Vec<u64>>(body));
    check_usage("decode::<Vec<u64>>", usage)?;
    match r {
        Ok(v)
            if v.len() < body.len()
                && codec::decode::<Vec<u64>>(&codec::encode(&v).unwrap()) == Ok(v.clone()) =>
        {
            Ok(())
        }
        Ok(v) => Err(format!(
            "decode::<Vec<u64>>: bogus value of {} elements",
            v.len()
        )),
        Err(e) => check_codec_error("decode::<Vec<u64>>", &e, body.len(), true),
    }
}

/// Every body decoder, on one body.
fn check_body(body: &[u8]) -> Result<(), String> {
    check_message::<ToWorker>("decode_message::<ToWorker>", body)?;
    check_message::<ToParent>("decode_message::<ToParent>", body)?;
    check_hello(body)?;
    check_welcome(body)?;
    check_string(body)?;
    check_vec_u64(body)
}

/// A body: a valid frame's body (sometimes left valid), mutated.
fn fuzz_body(rng: &mut Rng, small: bool) -> Vec<u8> {
    let mut body = wire(&[gen_frame(rng, small)]).split_off(LEN_BYTES);
    if !rng.one_in(8) {
        mutate(rng, &mut body, &[], CAP);
    }
    body
}

#[test]
fn body_decoders_survive_mutated_messages() {
    fuzz_loop("body decoders", 0x5EED_B0D1, BODY_CASES, |rng| {
        let mut body = fuzz_body(rng, MASK_WIDE_VARINTS);
        mask(&mut body);
        check_body(&body).map_err(|e| (e, body))
    });
}

#[test]
fn body_decoders_survive_random_bytes() {
    fuzz_loop("random bodies", 0x0DD_BA11, BODY_CASES, |rng| {
        let n = rng.len(12, 300);
        let mut body = rng.bytes(n);
        // Plausible first bytes (small enum tags) reach deeper.
        if let Some(b) = body.first_mut()
            && rng.one_in(2)
        {
            *b %= 6;
        }
        mask(&mut body);
        check_body(&body).map_err(|e| (e, body))
    });
}

// ---------------------------------------------------------------------------
// FrameReader against a model.

/// A cursor that hands out short reads, `Interrupted` errors, and a hard
/// error once it reaches `fail_at`; it counts what it was asked for.
struct Choppy<'a> {
    inner: Cursor<&'a [u8]>,
    rng: Rng,
    max_chunk: u64,
    interrupt_one_in: u64,
    fail_at: Option<usize>,
    /// Bytes handed out.
    delivered: usize,
    /// The largest buffer a read was given.
    largest_request: usize,
}

impl Read for Choppy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.largest_request = self.largest_request.max(buf.len());
        // `ErrorKind` errors carry no box: these allocate nothing.
        if self.interrupt_one_in > 0 && self.rng.one_in(self.interrupt_one_in) {
            return Err(ErrorKind::Interrupted.into());
        }
        let mut room = buf.len();
        if let Some(f) = self.fail_at {
            if self.delivered >= f {
                return Err(ErrorKind::BrokenPipe.into());
            }
            room = room.min(f - self.delivered);
        }
        let chunk = (1 + self.rng.below(self.max_chunk)).min(room as u64) as usize;
        let n = self.inner.read(&mut buf[..chunk])?;
        self.delivered += n;
        Ok(n)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Frame(Vec<u8>),
    End,
    TooLarge { len: u64 },
    Truncated { expected: u64, got: u64 },
    Io,
}

/// What `next_frame` must return, call after call, and how many bytes of the
/// stream it must have consumed after each.
fn model(stream: &[u8], cap: u32, fail_at: Option<usize>) -> Vec<(Step, usize)> {
    let io_cut = fail_at.is_some_and(|f| f <= stream.len());
    let avail = fail_at.map_or(stream.len(), |f| f.min(stream.len()));
    let mut steps = Vec::new();
    let mut pos = 0;
    loop {
        if pos + LEN_BYTES > avail {
            if io_cut {
                steps.push((Step::Io, avail));
            } else if pos == stream.len() {
                steps.push((Step::End, pos));
            } else {
                let got = (stream.len() - pos) as u64;
                steps.push((
                    Step::Truncated {
                        expected: LEN_BYTES as u64,
                        got,
                    },
                    stream.len(),
                ));
            }
            return steps;
        }
        let len = u32::from_le_bytes(stream[pos..pos + LEN_BYTES].try_into().unwrap());
        pos += LEN_BYTES;
        if len > cap {
            steps.push((Step::TooLarge { len: len.into() }, pos));
            return steps;
        }
        let len = len as usize;
        if pos + len > avail {
            if io_cut {
                steps.push((Step::Io, avail));
            } else {
                let expected = (LEN_BYTES + len) as u64;
                let got = (LEN_BYTES + stream.len() - pos) as u64;
                steps.push((Step::Truncated { expected, got }, stream.len()));
            }
            return steps;
        }
        steps.push((Step::Frame(stream[pos..pos + len].to_vec()), pos + len));
        pos += len;
    }
}

fn frame_case(rng: &mut Rng) -> Result<(), (String, Vec<u8>)> {
    let small = MASK_WIDE_VARINTS;
    let frames: Vec<Outgoing> = (0..1 + rng.below(4))
        .map(|_| gen_frame(rng, small))
        .collect();
    let mut prefixes = Vec::new();
    let mut at = 0;
    for f in &frames {
        prefixes.push(at);
        at += f.wire_len();
    }
    let mut stream = wire(&frames);
    let cap = rng.pick(&[0, 4, 64, 700, 4096, HANDSHAKE_MAX_FRAME, CAP, CAP, CAP]);
    if !rng.one_in(8) {
        mutate(rng, &mut stream, &prefixes, cap);
    }
    let fail_at = if rng.one_in(4) {
        Some(rng.index(stream.len() + 1))
    } else {
        None
    };
    let plain = rng.one_in(3);
    let choppy = Choppy {
        inner: Cursor::new(&stream[..]),
        rng: Rng::new(rng.next()),
        max_chunk: if plain {
            u64::MAX
        } else {
            rng.pick(&[1, 2, 3, 7, 64, 4096])
        },
        interrupt_one_in: if plain { 0 } else { rng.pick(&[0, 2, 5]) },
        fail_at,
        delivered: 0,
        largest_request: 0,
    };
    let expected = model(&stream, cap, fail_at);
    let fail = |why: String| {
        (
            format!("cap {cap}, fail_at {fail_at:?}: {why}"),
            stream.clone(),
        )
    };

    let mut reader = FrameReader::new(choppy, cap);
    for (i, (want, consumed)) in expected.iter().enumerate() {
        meter_start();
        let got = reader.next_frame();
        let usage = meter_read();
        let got = match got {
            Ok(Some(body)) => Step::Frame(body.to_vec()),
            Ok(None) => Step::End,
            Err(FrameError::TooLarge { len, max }) if max == cap => Step::TooLarge { len },
            Err(FrameError::Truncated { expected, got }) => Step::Truncated { expected, got },
            Err(FrameError::Io(e)) if e.kind() == ErrorKind::BrokenPipe => Step::Io,
            Err(other) => return Err(fail(format!("call {i}: unexpected error {other:?}"))),
        };
        if got != *want {
            return Err(fail(format!("call {i}: got {got:?}, model says {want:?}")));
        }
        let src = reader.get_ref();
        if src.delivered != *consumed {
            return Err(fail(format!(
                "call {i} ({want:?}): read {} bytes, model says {consumed}",
                src.delivered
            )));
        }
        if src.largest_request > (cap as usize).max(LEN_BYTES) {
            return Err(fail(format!(
                "asked the socket for {} bytes at once",
                src.largest_request
            )));
        }
        if usage.largest > cap as usize {
            return Err(fail(format!(
                "call {i} allocated {} bytes at once",
                usage.largest
            )));
        }
        if matches!(want, Step::TooLarge { .. }) && usage.largest != 0 {
            return Err(fail(format!(
                "TooLarge after allocating {} bytes",
                usage.largest
            )));
        }
        if let Step::Frame(body) = got
            && rng.one_in(4)
        {
            let mut body = body;
            mask(&mut body);
            check_body(&body).map_err(|e| (e, body))?;
        }
    }
    Ok(())
}

#[test]
fn frame_reader_matches_the_model_on_mutated_streams() {
    fuzz_loop("frame reader", 0x00F4_A3E5, STREAM_CASES, frame_case);
}

#[test]
fn frame_length_over_the_cap_reads_and_allocates_nothing_more() {
    for cap in [0, 16, HANDSHAKE_MAX_FRAME, CAP] {
        for len in [cap + 1, cap * 2 + 1, 1 << 31, u32::MAX] {
            let mut stream = len.to_le_bytes().to_vec();
            stream.extend(vec![0xAB; 4096]);
            let choppy = Choppy {
                inner: Cursor::new(&stream[..]),
                rng: Rng::new(1),
                max_chunk: u64::MAX,
                interrupt_one_in: 0,
                fail_at: None,
                delivered: 0,
                largest_request: 0,
            };
            let mut reader = FrameReader::new(choppy, cap);
            meter_start();
            let r = reader.next_frame().map(|o| o.map(<[u8]>::len));
            let usage = meter_read();
            match r {
                Err(FrameError::TooLarge { len: l, max }) => {
                    assert_eq!((l, max), (u64::from(len), cap));
                }
                other => panic!("cap {cap}, len {len}: expected TooLarge, got {other:?}"),
            }
            assert_eq!(
                reader.get_ref().delivered,
                LEN_BYTES,
                "read past the prefix"
            );
            assert_eq!(
                usage.largest, 0,
                "cap {cap}, len {len}: allocated before refusing"
            );
        }
    }
}

#[test]
fn frame_at_the_cap_with_no_body_reserves_at_most_the_cap() {
    let mut reader = FrameReader::new(Cursor::new(CAP.to_le_bytes().to_vec()), CAP);
    let (r, usage) = metered(|| reader.next_frame().map(|o| o.map(<[u8]>::len)));
    assert!(
        matches!(r, Err(FrameError::Truncated { expected, got: 4 }) if expected == u64::from(CAP) + 4),
        "{r:?}"
    );
    assert!(usage.largest <= CAP as usize, "{usage:?}");
}

// ---------------------------------------------------------------------------
// Round trips of valid messages (proptest).

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures print a minimal input; no regression file is written
        // outside this directory.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn arb_string() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

fn arb_payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..48)
}

fn arb_to_worker() -> impl Strategy<Value = (ToWorker, Vec<Vec<u8>>)> {
    prop_oneof![
        (arb_string(), any::<u64>(), arb_payload()).prop_map(|(name, fingerprint, p)| {
            (
                ToWorker::Init {
                    name,
                    fingerprint,
                    len: p.len() as u32,
                },
                vec![p],
            )
        }),
        prop::collection::vec(
            (any::<u64>(), arb_string(), any::<u64>(), arb_payload()),
            0..6
        )
        .prop_map(|v| {
            let mut items = Vec::new();
            let mut payloads = Vec::new();
            for (id, name, fingerprint, p) in v {
                items.push(TaskHeader {
                    id,
                    name: name.into(),
                    fingerprint,
                    len: p.len() as u32,
                    fds: 0,
                    bulk: Vec::new(),
                    items: 0,
                });
                payloads.push(p);
            }
            (ToWorker::Run { items }, payloads)
        }),
        any::<u64>().prop_map(|id| (ToWorker::Cancel { id }, vec![])),
        any::<bool>().prop_map(|drop_pending| (ToWorker::Shutdown { drop_pending }, vec![])),
    ]
}

fn arb_outcome() -> impl Strategy<Value = (Outcome, Vec<Vec<u8>>)> {
    prop_oneof![
        arb_payload().prop_map(|p| (
            Outcome::Ok {
                len: p.len() as u32,
                fds: 0,
                bulk: Vec::new(),
            },
            vec![p]
        )),
        (arb_string(), prop::option::of(arb_string()))
            .prop_map(|(message, location)| (Outcome::Panicked { message, location }, vec![])),
        (arb_string(), arb_string()).prop_map(|(message, worker_type)| (
            Outcome::Decode {
                message,
                worker_type
            },
            vec![]
        )),
        (arb_string(), arb_string()).prop_map(|(message, worker_type)| (
            Outcome::Encode {
                message,
                worker_type
            },
            vec![]
        )),
        arb_string().prop_map(|name| (Outcome::UnknownTask { name }, vec![])),
        (arb_string(), arb_string()).prop_map(|(worker_input, worker_output)| (
            Outcome::Mismatch {
                worker_input,
                worker_output
            },
            vec![]
        )),
    ]
}

fn arb_to_parent() -> impl Strategy<Value = (ToParent, Vec<Vec<u8>>)> {
    prop_oneof![
        (any::<u32>(), prop::option::of(arb_string()))
            .prop_map(|(generation, error)| (ToParent::InitDone { generation, error }, vec![])),
        (any::<u32>(), any::<u64>())
            .prop_map(|(generation, id)| (ToParent::Started { generation, id }, vec![])),
        (any::<u32>(), any::<u64>(), arb_outcome(), any::<[u64; 4]>()).prop_map(
            |(generation, id, (outcome, p), t)| {
                let timing = WorkerTiming {
                    queue_ns: t[0],
                    decode_ns: t[1],
                    run_ns: t[2],
                    encode_ns: t[3],
                    peak_rss_bytes: t[0] ^ t[3],
                };
                (
                    ToParent::Finished {
                        generation,
                        id,
                        outcome,
                        timing,
                    },
                    p,
                )
            }
        ),
        (any::<u32>(), any::<u64>(), any::<bool>()).prop_map(|(generation, id, withdrawn)| (
            ToParent::Withdrawn {
                generation,
                id,
                withdrawn
            },
            vec![]
        )),
        any::<u32>().prop_map(|generation| (ToParent::Heartbeat { generation }, vec![])),
    ]
}

fn arb_hello() -> impl Strategy<Value = Hello> {
    (
        any::<[u8; 8]>(),
        any::<u32>(),
        arb_string(),
        any::<u32>(),
        arb_string(),
        any::<u64>(),
        arb_payload(),
    )
        .prop_map(
            |(magic, protocol, build_id, pid, host, ticket, nonce)| Hello {
                magic,
                protocol,
                build_id,
                pid,
                host,
                ticket,
                nonce,
                program: String::new(),
                tasks: Vec::new(),
                tasks_complete: true,
                refusal: None,
            },
        )
}

fn arb_welcome() -> impl Strategy<Value = Welcome> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            arb_payload()
        )
            .prop_map(|(worker_id, generation, max_frame, heartbeat_ms, proof)| {
                Welcome::Accept {
                    worker_id,
                    generation,
                    max_frame,
                    heartbeat_ms,
                    proof,
                }
            }),
        arb_payload().prop_map(|nonce| Welcome::Challenge { nonce }),
        arb_string().prop_map(|reason| Welcome::Reject { reason }),
    ]
}

/// Encodes the messages as one stream of frames and reads them back.
fn round_trip<H: Header + PartialEq + Debug>(
    msgs: &[(H, Vec<Vec<u8>>)],
) -> Result<(), TestCaseError> {
    let frames: Vec<Outgoing> = msgs
        .iter()
        .map(|(h, p)| encode_message(h, p.clone()).unwrap())
        .collect();
    let bytes = wire(&frames);
    prop_assert_eq!(
        bytes.len(),
        frames.iter().map(Outgoing::wire_len).sum::<usize>()
    );
    let mut reader = FrameReader::new(Cursor::new(bytes), CAP);
    for (h, p) in msgs {
        let body = reader.next_frame().unwrap().expect("a frame per message");
        let ((back, payloads), usage) = metered(|| decode_message::<H>(body).unwrap());
        prop_assert_eq!(&back, h);
        prop_assert_eq!(payloads, p.iter().map(Vec::as_slice).collect::<Vec<_>>());
        prop_assert!(
            usage.largest <= CAP as usize && usage.peak_live <= LIVE_BOUND,
            "{:?}",
            usage
        );
    }
    prop_assert!(reader.next_frame().unwrap().is_none());
    Ok(())
}

proptest! {
    #![proptest_config(config(ROUND_TRIP_CASES))]

    #[test]
    fn to_worker_round_trips(msgs in prop::collection::vec(arb_to_worker(), 1..4)) {
        round_trip(&msgs)?;
    }

    #[test]
    fn to_parent_round_trips(msgs in prop::collection::vec(arb_to_parent(), 1..4)) {
        round_trip(&msgs)?;
    }

    #[test]
    fn handshake_round_trips(hello in arb_hello(), welcome in arb_welcome()) {
        let frames = [
            Outgoing::new(codec::encode(&hello).unwrap(), Vec::<Vec<u8>>::new()).unwrap(),
            Outgoing::new(codec::encode(&welcome).unwrap(), Vec::<Vec<u8>>::new()).unwrap(),
        ];
        let mut reader = FrameReader::new(Cursor::new(wire(&frames)), HANDSHAKE_MAX_FRAME);
        prop_assert_eq!(Hello::decode(reader.next_frame().unwrap().unwrap()), Ok(hello));
        prop_assert_eq!(Welcome::decode(reader.next_frame().unwrap().unwrap()), Ok(welcome));
        prop_assert!(reader.next_frame().unwrap().is_none());
    }

    #[test]
    fn codec_round_trips(s in arb_string(), v in prop::collection::vec(any::<u64>(), 0..40)) {
        prop_assert_eq!(codec::decode::<String>(&codec::encode(&s).unwrap()), Ok(s));
        prop_assert_eq!(codec::decode::<Vec<u64>>(&codec::encode(&v).unwrap()), Ok(v));
    }
}

proptest! {
    #![proptest_config(config(ANY_BYTES_CASES))]

    /// Shrinkable twin of the xorshift fuzz: arbitrary bytes into every body
    /// decoder.
    #[test]
    fn any_bytes_into_body_decoders(mut body in prop::collection::vec(any::<u8>(), 0..64)) {
        mask(&mut body);
        if let Err(e) = check_body(&body) {
            return Err(TestCaseError::fail(e));
        }
    }
}

// ---------------------------------------------------------------------------
// The open bug: unchecked length prefixes inside bincode.

/// A bincode varint announcing `len` as a u32 (marker 0xFC).
fn varint_u32(len: u32) -> Vec<u8> {
    let mut v = vec![0xFC];
    v.extend(len.to_le_bytes());
    v
}

/// A decoder under test: `true` if it refused the body.
type Refuses = fn(&[u8]) -> bool;

/// Bodies of a few bytes whose string/bytes length prefix claims 256 MiB,
/// each with the decoder it targets: the decoder should refuse them without
/// allocating past the cap. (A claim of 2^40 makes the allocation fail and
/// aborts the process; one above `isize::MAX` panics with "capacity
/// overflow".)
fn claims_256_mib() -> Vec<(&'static str, Vec<u8>, Refuses)> {
    let claim = varint_u32(256 << 20);
    let with = |prefix: &[u8]| [prefix, &claim[..]].concat();
    let mut hello = MAGIC.to_vec();
    hello.push(1); // protocol
    let string: Refuses = |b| codec::decode::<String>(b).is_err();
    let to_worker: Refuses = |b| decode_message::<ToWorker>(b).is_err();
    let to_parent: Refuses = |b| decode_message::<ToParent>(b).is_err();
    let hello_d: Refuses = |b| Hello::decode(b).is_err();
    let welcome: Refuses = |b| Welcome::decode(b).is_err();
    vec![
        ("codec::decode::<String>", claim.clone(), string),
        (
            "decode_message::<ToWorker> (Init.name)",
            with(&[0]),
            to_worker,
        ),
        (
            "decode_message::<ToWorker> (Run.items[0].name)",
            with(&[1, 1, 7]),
            to_worker,
        ),
        (
            "decode_message::<ToParent> (InitDone.error)",
            with(&[0, 3, 1]),
            to_parent,
        ),
        (
            "decode_message::<ToParent> (Finished.outcome.message)",
            with(&[2, 3, 9, 1]),
            to_parent,
        ),
        ("Hello::decode (build_id)", with(&hello), hello_d),
        (
            "Hello::decode (token)",
            [&hello[..], &[0, 42], &claim[..]].concat(),
            hello_d,
        ),
        ("Welcome::decode (Reject.reason)", with(&[1]), welcome),
    ]
}

#[test]
fn regression_length_prefix_allocates_past_the_cap() {
    let mut failures = Vec::new();
    for (what, body, refuses) in claims_256_mib() {
        // The handshake path exactly as a pool runs it: the frame passes the
        // 64 KiB handshake cap, then the body is decoded.
        let stream = wire(&[Outgoing::new(body.clone(), Vec::<Vec<u8>>::new()).unwrap()]);
        let mut reader = FrameReader::new(Cursor::new(stream), HANDSHAKE_MAX_FRAME);
        let frame = reader.next_frame().unwrap().unwrap();
        let (refused, usage) = metered(|| refuses(frame));
        assert!(refused, "{what}: accepted {}", hex(&body));
        if usage.largest > HANDSHAKE_MAX_FRAME as usize {
            failures.push(format!(
                "{what}: {}-byte body {} -> one allocation of {} bytes",
                body.len(),
                hex(&body),
                usage.largest
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "allocations past the {HANDSHAKE_MAX_FRAME}-byte frame cap:\n{}",
        failures.join("\n")
    );
}

#[test]
fn regression_huge_length_prefix_panics_in_bincode() {
    let mut body = vec![0xFD];
    body.extend(u64::MAX.to_le_bytes());
    let r = codec::decode::<String>(&body);
    assert!(matches!(r, Err(CodecError::Decode(_))), "{r:?}");
    let version = procpool_wire::PROTOCOL_VERSION as u8;
    let hello = [&MAGIC[..], &[version], &body[..]].concat();
    let r = Hello::decode(&hello);
    assert!(
        matches!(r, Err(HandshakeError::Garbled(CodecError::Decode(_)))),
        "{r:?}"
    );
}

#[test]
fn regression_fuzz_with_u32_lengths() {
    fuzz_loop(
        "body decoders, u32 varints unmasked",
        0x5EED_B0D1,
        BODY_CASES,
        |rng| {
            let mut body = fuzz_body(rng, true);
            // Only the u64 marker is rewritten: a u32 claim (at most 4 GiB) is
            // lazily zeroed memory and fails the allocation check cleanly, where
            // a u64 claim beyond RAM would abort the whole test process.
            mask_with(&mut body, &[0xFD]);
            check_body(&body).map_err(|e| (e, body))
        },
    );
}
