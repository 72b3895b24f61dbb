//! [`SharedBytes`] and [`SharedSlice`]: immutable buffers that reach a
//! locally spawned worker as a sealed memory file instead of as bytes.
//!
//! # Where the bytes go
//!
//! | where the value is serialized | what is written |
//! | --- | --- |
//! | a `ProcessPool` frame to or from a local worker (Unix socket) | a small reference: an index into the descriptors sent with the frame (`SCM_RIGHTS`) and the length; payloads under [`INLINE_MAX`] bytes travel inline |
//! | a `ProcessPool` frame over TCP (remote workers) | the bytes, inline |
//! | anywhere else (serde_json, plain bincode, …) | plain bytes (`SharedBytes`) or a sequence of numbers (`SharedSlice`) |
//!
//! A `ThreadPool` never serializes: the value moves to the worker thread
//! and clones share one buffer (an `Arc`).
//!
//! # How a value knows where it is going: the descriptor sink and source
//!
//! Serde gives a `Serialize` impl no way to ask its serializer where the
//! bytes go, so the pool tells it through a thread-local *context*, set only
//! for the duration of one codec call on the calling thread
//! (`encode_with`, `decode_with`; restored on unwind):
//!
//! * **sink** (encoding a frame for a worker, or a result for the parent):
//!   each shared value copies its bytes once into a memory file, seals it
//!   (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL`) and keeps
//!   it (clones share it, so an echo passes the same file again), pushes
//!   the file on the sink and writes its index. The pool then sends the
//!   sink's descriptors with the frame. A value that already lives in a
//!   sealed file (received from the other side) is not copied at all.
//! * **source** (decoding a frame that came with descriptors): each
//!   reference takes the descriptor at its index, which must be a memory
//!   file carrying all four seals and exactly the referenced length (checked
//!   with `F_GET_SEALS` and `fstat` before anything is mapped), and maps it
//!   read-only. A bad reference makes the decode fail and is reported to the
//!   pool as a protocol error (`TaskError::Protocol`), not as a
//!   decode error of the user's type.
//!
//! One frame carries at most 253 descriptors (Linux's `SCM_MAX_FD`), so
//! one task's input or output may hold at most 253 distinct shared values
//! over [`INLINE_MAX`] bytes (the same value twice is one file): the 254th
//! fails to encode (typed error at submit, or on the future for an
//! output), and a `map` chunk is cut into frames that fit.
//!
//! Both sides count the shared bytes of one payload against the pool's
//! limit (its `max_frame_bytes`): a payload over it fails to encode (typed
//! error at submit, or on the future for an output) and a reference over
//! it is refused before anything is mapped.
//!
//! Because the file is sealed before it leaves the process, neither side
//! can change the bytes after sending them (SEMANTICS 27): writes,
//! `ftruncate` and writable mappings of the file are refused by the kernel.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};

use bytemuck::Pod;
use serde::de::{self, Deserializer};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};

use procpool_wire::fds::MAX_FDS;

use crate::sys::SealedFile;

/// Shared payloads up to this many bytes travel inline even to a local
/// worker: for them a memory file costs more syscalls than the copy.
pub const INLINE_MAX: usize = 16 << 10;

/// Immutable bytes that cross to a local worker process without being
/// copied (a sealed memory file passed with the frame); see the
/// [module docs](self) for where the bytes go.
///
/// `Clone` shares the buffer, `Debug` shows only the length, `==` compares
/// the bytes, and outside a pool it serializes as plain bytes.
///
/// ```
/// use procpool::SharedBytes;
///
/// let blob = SharedBytes::from(vec![7u8; 1 << 20]);
/// let copy = blob.clone(); // shares, never copies
/// assert_eq!(copy.len(), 1 << 20);
/// assert_eq!(&blob[..3], &[7, 7, 7]);
/// assert_eq!(format!("{blob:?}"), "SharedBytes { len: 1048576 }");
/// // Outside a pool: plain bytes.
/// let json = serde_json::to_string(&SharedBytes::copy_from_slice(b"hi")).unwrap();
/// assert_eq!(json, "[104,105]");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SharedBytes(SharedSlice<u8>);

/// An immutable array of plain numbers (`f64`, `u32`, … — any
/// [`bytemuck::Pod`] type) that crosses to a local worker process without
/// being copied, the counterpart of a NumPy array handed to a process pool;
/// see the [module docs](self) for where the bytes go.
///
/// `Clone` shares the buffer, `Debug` shows only the length, `==` compares
/// the elements, and outside a pool it serializes as a sequence of numbers.
/// Over TCP the bytes travel in the sender's byte order.
///
/// ```
/// use procpool::SharedSlice;
///
/// let xs = SharedSlice::<f64>::from(vec![1.5; 1 << 10]);
/// let sum: f64 = xs.iter().sum();
/// assert_eq!(sum, 1536.0);
/// assert_eq!(format!("{xs:?}"), "SharedSlice<f64> { len: 1024 }");
/// let json = serde_json::to_string(&SharedSlice::copy_from_slice(&[1u32, 2])).unwrap();
/// assert_eq!(json, "[1,2]");
/// ```
pub struct SharedSlice<T: Pod> {
    inner: Arc<Inner<T>>,
}

/// One buffer, shared by every clone. Immutable once made, except that the
/// sealed copy of a heap buffer is made (once) on its first trip to a
/// local worker.
struct Inner<T> {
    data: Data<T>,
    /// The sealed memory file holding these bytes: set when the value was
    /// received as one, or on the first send of a heap buffer.
    sealed: OnceLock<Arc<SealedFile>>,
}

enum Data<T> {
    Heap(Vec<T>),
    /// A received, sealed, read-only mapping whose length is a multiple of
    /// `size_of::<T>()` (checked when it was adopted).
    File(Arc<SealedFile>, PhantomData<T>),
}

impl<T: Pod> SharedSlice<T> {
    /// A shared array holding a copy of `items`.
    ///
    /// ```
    /// let xs = procpool::SharedSlice::copy_from_slice(&[1u32, 2, 3]);
    /// assert_eq!(&xs[..], &[1, 2, 3]);
    /// ```
    pub fn copy_from_slice(items: &[T]) -> Self {
        Self::from(items.to_vec())
    }

    /// The number of elements.
    ///
    /// ```
    /// assert_eq!(procpool::SharedSlice::from(vec![0.5f64; 3]).len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there are no elements.
    ///
    /// ```
    /// assert!(procpool::SharedSlice::<f64>::from(vec![]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn as_slice(&self) -> &[T] {
        match &self.inner.data {
            Data::Heap(v) => v,
            Data::File(f, _) if f.bytes().is_empty() => &[],
            // Checked when the file was adopted: page-aligned, whole
            // elements.
            Data::File(f, _) => bytemuck::cast_slice(f.bytes()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self.as_slice())
    }

    /// The sealed memory file holding these bytes, made on first use.
    fn sealed(&self) -> Result<Arc<SealedFile>, SharedError> {
        if let Some(f) = self.inner.sealed.get() {
            return Ok(f.clone());
        }
        let file = Arc::new(
            SealedFile::create(self.as_bytes()).map_err(|e| SharedError::Io(e.to_string()))?,
        );
        // Two threads may race to seal one value: the loser's file is
        // dropped and both use the winner's.
        Ok(self.inner.sealed.get_or_init(|| file).clone())
    }

    fn from_file(file: Arc<SealedFile>) -> Result<Self, SharedError> {
        let bytes = file.bytes();
        if !bytes.is_empty() && bytemuck::try_cast_slice::<u8, T>(bytes).is_err() {
            return Err(SharedError::BadReference(format!(
                "a shared array of {} bytes is not a whole number of {}-byte elements",
                bytes.len(),
                std::mem::size_of::<T>()
            )));
        }
        let sealed = OnceLock::new();
        let _ = sealed.set(file.clone());
        Ok(SharedSlice {
            inner: Arc::new(Inner {
                data: Data::File(file, PhantomData),
                sealed,
            }),
        })
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let size = std::mem::size_of::<T>();
        if size == 0 || !bytes.len().is_multiple_of(size) {
            return Err(format!(
                "{} bytes are not a whole number of {size}-byte elements",
                bytes.len()
            ));
        }
        let mut v = vec![T::zeroed(); bytes.len() / size];
        bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
        Ok(Self::from(v))
    }
}

impl<T: Pod> From<Vec<T>> for SharedSlice<T> {
    fn from(v: Vec<T>) -> Self {
        SharedSlice {
            inner: Arc::new(Inner {
                data: Data::Heap(v),
                sealed: OnceLock::new(),
            }),
        }
    }
}

impl<T: Pod> Clone for SharedSlice<T> {
    fn clone(&self) -> Self {
        SharedSlice {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Pod> std::ops::Deref for SharedSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Pod> AsRef<[T]> for SharedSlice<T> {
    fn as_ref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Pod> fmt::Debug for SharedSlice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SharedSlice<{}> {{ len: {} }}",
            std::any::type_name::<T>(),
            self.len()
        )
    }
}

impl<T: Pod + PartialEq> PartialEq for SharedSlice<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.as_slice() == other.as_slice()
    }
}

impl<T: Pod + Eq> Eq for SharedSlice<T> {}

impl SharedBytes {
    /// Shared bytes holding a copy of `bytes`.
    ///
    /// ```
    /// let b = procpool::SharedBytes::copy_from_slice(b"abc");
    /// assert_eq!(&b[..], b"abc");
    /// ```
    pub fn copy_from_slice(bytes: &[u8]) -> Self {
        SharedBytes(SharedSlice::copy_from_slice(bytes))
    }

    /// The number of bytes.
    ///
    /// ```
    /// assert_eq!(procpool::SharedBytes::from(vec![1, 2]).len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    ///
    /// ```
    /// assert!(procpool::SharedBytes::from(Vec::new()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SharedBytes {
    fn from(v: Vec<u8>) -> Self {
        SharedBytes(SharedSlice::from(v))
    }
}

impl std::ops::Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedBytes {{ len: {} }}", self.len())
    }
}

// ---------------------------------------------------------------------------
// The context: how the pool tells the serde impls where the bytes go.

/// How shared values are written in the frame being encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A local worker: references to sealed memory files passed with the
    /// frame.
    Descriptors,
    /// A remote worker: the bytes, inline.
    Inline,
}

/// Why shared values could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SharedError {
    /// The payload's shared bytes exceed the pool's limit.
    TooLarge {
        /// Shared bytes in the payload (so far).
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The payload holds more shared values in memory files than one
    /// frame can carry descriptors for.
    TooMany {
        /// The most one frame carries.
        limit: usize,
    },
    /// The peer sent a reference that does not name a valid sealed memory
    /// file of the right size: a protocol violation.
    BadReference(String),
    /// A memory file could not be made.
    Io(String),
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharedError::TooLarge { len, limit } => write!(
                f,
                "shared payloads of {len} bytes exceed the pool's {limit}-byte limit \
                 (raise max_frame_bytes if this is a real payload)"
            ),
            SharedError::TooMany { limit } => write!(
                f,
                "more than {limit} shared payloads over {INLINE_MAX} bytes in one task's input or \
                 output: each needs a descriptor and one frame carries at most {limit} (Linux's \
                 SCM_MAX_FD); send fewer, larger ones"
            ),
            SharedError::BadReference(m) => write!(f, "bad shared-payload reference: {m}"),
            SharedError::Io(m) => write!(f, "cannot make a shared memory file: {m}"),
        }
    }
}

/// The encoding side's state: the sealed files the frame must carry.
struct Sink {
    files: Vec<Arc<SealedFile>>,
    limit: u64,
    total: u64,
    error: Option<SharedError>,
}

/// The decoding side's state: the descriptors the frame carried.
struct Source {
    /// Descriptor `i`, until a reference adopts it.
    fds: Vec<Option<OwnedFd>>,
    /// The file adopted from descriptor `i` (a value may be referenced
    /// twice).
    opened: Vec<Option<Arc<SealedFile>>>,
    limit: u64,
    total: u64,
    error: Option<SharedError>,
}

enum Context {
    Encode(Sink),
    Decode(Source),
}

/// Which side runs, as [`LIGHT`] holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Encode,
    Decode,
}

/// What an encode or decode needs to know before it meets a shared value
/// (most frames hold none: their `encode_with` / `decode_with` costs two
/// writes of this `Copy` cell and never touches [`CONTEXT`], whose type
/// has a destructor and so costs a registration check on every access).
#[derive(Debug, Clone, Copy)]
struct Light {
    kind: Kind,
    mode: Mode,
    limit: u64,
    /// [`CONTEXT`] holds this call's state (made by a shared value, or at
    /// once for a decode whose frame carried descriptors). While no call on
    /// this thread has one, `CONTEXT` is `None` and is left alone.
    heavy: bool,
}

impl Light {
    /// The full state, made when the first shared value needs it.
    fn context(self) -> Context {
        match self.kind {
            Kind::Encode => Context::Encode(Sink {
                files: Vec::new(),
                limit: self.limit,
                total: 0,
                error: None,
            }),
            Kind::Decode => Context::Decode(Source {
                fds: Vec::new(),
                opened: Vec::new(),
                limit: self.limit,
                total: 0,
                error: None,
            }),
        }
    }
}

thread_local! {
    /// Set only inside `encode_with` / `decode_with` on this thread.
    static LIGHT: Cell<Option<Light>> = const { Cell::new(None) };
    /// Its state: made by the first shared value that needs it (at once
    /// for a decode whose frame carried descriptors), else `None`.
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Runs `f` on the state of the encode or decode running on this thread,
/// made first if it is not yet; `None` outside one.
fn with_context<R>(f: impl FnOnce(&mut Context) -> R) -> Option<R> {
    let light = LIGHT.get()?;
    if !light.heavy {
        LIGHT.set(Some(Light {
            heavy: true,
            ..light
        }));
    }
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        Some(f(c.get_or_insert_with(|| light.context())))
    })
}

/// Puts the previous encode's or decode's state back, also on unwind.
struct Restore {
    armed: bool,
    light: Option<Light>,
    /// The outer call's state, while this one runs (only if it had one:
    /// boxed, so that the common `None` is one word to move, not a whole
    /// `Context`).
    context: Option<Box<Context>>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.armed {
            leave(self);
        }
    }
}

// Inlined: `light` then stays in registers (built in memory field by field
// and read back whole, it stalled on store forwarding).
#[inline(always)]
fn enter(mut light: Light, context: Option<Context>) -> Restore {
    let outer = LIGHT.get();
    light.heavy = context.is_some();
    // `CONTEXT` is `None` unless the outer call made its state: then (or
    // to put this call's in) it is swapped; else it is not touched.
    let saved = if light.heavy || outer.is_some_and(|l| l.heavy) {
        CONTEXT
            .with(|c| std::mem::replace(&mut *c.borrow_mut(), context))
            .map(Box::new)
    } else {
        None
    };
    LIGHT.set(Some(light));
    Restore {
        armed: true,
        light: outer,
        context: saved,
    }
}

/// Ends the encode or decode `restore` began: the outer one (if any) is
/// back, and this one's state (if it was made) is returned.
#[inline(always)]
fn leave(restore: &mut Restore) -> Option<Context> {
    restore.armed = false;
    let this = LIGHT.replace(restore.light);
    let outer_heavy = restore.light.is_some_and(|l| l.heavy);
    if this.is_some_and(|l| l.heavy) || outer_heavy {
        let outer = restore.context.take().map(|b| *b);
        CONTEXT.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer))
    } else {
        None
    }
}

/// What an encode left behind: the sealed files to send with the frame,
/// in index order, and why shared values failed, if they did.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    pub(crate) files: Vec<Arc<SealedFile>>,
    pub(crate) error: Option<SharedError>,
}

/// Runs `f` (a codec encode) with shared values written for `mode`,
/// counting at most `limit` shared bytes.
#[inline]
pub(crate) fn encode_with<R>(mode: Mode, limit: u64, f: impl FnOnce() -> R) -> (R, Encoded) {
    let light = Light {
        kind: Kind::Encode,
        mode,
        limit,
        heavy: false,
    };
    let mut restore = enter(light, None);
    let r = f();
    let encoded = match leave(&mut restore) {
        Some(Context::Encode(s)) => Encoded {
            files: s.files,
            error: s.error,
        },
        _ => Encoded::default(),
    };
    (r, encoded)
}

/// Runs `f` (a codec decode) with shared values read for `mode`, from
/// `fds` (the descriptors that came with the payload), counting at most
/// `limit` shared bytes. Descriptors no reference adopted are closed.
#[inline]
pub(crate) fn decode_with<R>(
    mode: Mode,
    fds: Vec<OwnedFd>,
    limit: u64,
    f: impl FnOnce() -> R,
) -> (R, Option<SharedError>) {
    let light = Light {
        kind: Kind::Decode,
        mode,
        limit,
        heavy: false,
    };
    let context = (!fds.is_empty()).then(|| {
        let n = fds.len();
        Context::Decode(Source {
            fds: fds.into_iter().map(Some).collect(),
            opened: (0..n).map(|_| None).collect(),
            limit,
            total: 0,
            error: None,
        })
    });
    let mut restore = enter(light, context);
    let r = f();
    let error = match leave(&mut restore) {
        Some(Context::Decode(s)) => s.error,
        _ => None,
    };
    (r, error)
}

/// The mode of the encode running on this thread, if any.
fn encode_mode() -> Option<Mode> {
    LIGHT
        .get()
        .filter(|l| l.kind == Kind::Encode)
        .map(|l| l.mode)
}

fn decode_mode() -> Option<Mode> {
    LIGHT
        .get()
        .filter(|l| l.kind == Kind::Decode)
        .map(|l| l.mode)
}

/// Records `err` for the caller of `encode_with`/`decode_with` and turns
/// it into serde's error.
fn fail<E>(err: SharedError, custom: impl FnOnce(String) -> E) -> E {
    let text = err.to_string();
    with_context(|c| match c {
        Context::Encode(s) => s.error = s.error.take().or(Some(err)),
        Context::Decode(s) => s.error = s.error.take().or(Some(err)),
    });
    custom(text)
}

/// A shared value's reference in a frame to a local worker.
#[derive(Serialize)]
enum RefOut<'a> {
    File { index: u32, len: u64 },
    Inline(#[serde(with = "serde_bytes")] &'a [u8]),
}

#[derive(Deserialize)]
enum RefIn {
    File { index: u32, len: u64 },
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// What a shared value decoded as inside a pool frame.
enum Got {
    Bytes(Vec<u8>),
    File(Arc<SealedFile>),
}

/// Writes a shared value inside a pool frame.
fn serialize_in_pool<T: Pod, S: Serializer>(
    mode: Mode,
    v: &SharedSlice<T>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    let bytes = v.as_bytes();
    match mode {
        Mode::Inline => ser.serialize_bytes(bytes),
        Mode::Descriptors if bytes.len() <= INLINE_MAX => RefOut::Inline(bytes).serialize(ser),
        Mode::Descriptors => match push_file(v) {
            Ok(index) => RefOut::File {
                index,
                len: bytes.len() as u64,
            }
            .serialize(ser),
            Err(e) => Err(fail(e, <S::Error as ser::Error>::custom)),
        },
    }
}

/// Adds `v`'s sealed file to the sink (once per file) and returns its index.
fn push_file<T: Pod>(v: &SharedSlice<T>) -> Result<u32, SharedError> {
    let len = v.as_bytes().len() as u64;
    let over = with_context(|c| match c {
        Context::Encode(s) => {
            s.total = s.total.saturating_add(len);
            (s.total > s.limit).then_some(SharedError::TooLarge {
                len: s.total,
                limit: s.limit,
            })
        }
        Context::Decode(_) => None,
    })
    .flatten();
    if let Some(e) = over {
        return Err(e);
    }
    // One frame carries at most `MAX_FDS` descriptors: refuse the next
    // file before making it (a value already in the sink is no new one).
    let full = with_context(|c| match c {
        Context::Encode(s) => {
            s.files.len() >= MAX_FDS
                && v.inner
                    .sealed
                    .get()
                    .is_none_or(|f| !s.files.iter().any(|g| Arc::ptr_eq(f, g)))
        }
        Context::Decode(_) => false,
    })
    .unwrap_or(false);
    if full {
        return Err(SharedError::TooMany { limit: MAX_FDS });
    }
    let file = v.sealed()?;
    with_context(|c| match c {
        Context::Encode(s) => {
            if let Some(i) = s.files.iter().position(|f| Arc::ptr_eq(f, &file)) {
                return Ok(i as u32);
            }
            s.files.push(file);
            Ok((s.files.len() - 1) as u32)
        }
        Context::Decode(_) => Err(SharedError::Io("no encode in progress".into())),
    })
    .unwrap_or_else(|| Err(SharedError::Io("no encode in progress".into())))
}

/// Reads a shared value inside a pool frame.
fn deserialize_in_pool<'de, D: Deserializer<'de>>(mode: Mode, de: D) -> Result<Got, D::Error> {
    match mode {
        Mode::Inline => serde_bytes::ByteBuf::deserialize(de).map(|b| Got::Bytes(b.into_vec())),
        Mode::Descriptors => match RefIn::deserialize(de) {
            Err(e) => Err(e),
            Ok(RefIn::Inline(b)) => Ok(Got::Bytes(b)),
            Ok(RefIn::File { index, len }) => adopt(index, len)
                .map(Got::File)
                .map_err(|e| fail(e, <D::Error as de::Error>::custom)),
        },
    }
}

/// Adopts descriptor `index` of the frame being decoded as a sealed file of
/// `len` bytes.
fn adopt(index: u32, len: u64) -> Result<Arc<SealedFile>, SharedError> {
    with_context(|c| {
        let Context::Decode(s) = c else {
            return Err(SharedError::Io("no decode in progress".into()));
        };
        let i = index as usize;
        if let Some(Some(f)) = s.opened.get(i) {
            if f.bytes().len() as u64 != len {
                return Err(SharedError::BadReference(format!(
                    "descriptor {index} referenced with two lengths"
                )));
            }
            return Ok(f.clone());
        }
        let Some(fd) = s.fds.get_mut(i).and_then(Option::take) else {
            return Err(SharedError::BadReference(format!(
                "reference to descriptor {index}, but the frame carried {}",
                s.fds.len()
            )));
        };
        s.total = s.total.saturating_add(len);
        if s.total > s.limit {
            return Err(SharedError::TooLarge {
                len: s.total,
                limit: s.limit,
            });
        }
        let file = Arc::new(
            SealedFile::open(fd, len, s.limit)
                .map_err(|e| SharedError::BadReference(e.to_string()))?,
        );
        s.opened[i] = Some(file.clone());
        Ok(file)
    })
    .unwrap_or_else(|| Err(SharedError::Io("no decode in progress".into())))
}

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match encode_mode() {
            Some(mode) => serialize_in_pool(mode, &self.0, ser),
            None => ser.serialize_bytes(self),
        }
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let Some(mode) = decode_mode() else {
            return Ok(SharedBytes::from(
                serde_bytes::ByteBuf::deserialize(de)?.into_vec(),
            ));
        };
        let got = deserialize_in_pool(mode, de)?;
        match got {
            Got::Bytes(b) => Ok(SharedBytes::from(b)),
            Got::File(f) => SharedSlice::from_file(f)
                .map(SharedBytes)
                .map_err(|e| fail(e, <D::Error as de::Error>::custom)),
        }
    }
}

impl<T: Pod + Serialize> Serialize for SharedSlice<T> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match encode_mode() {
            Some(mode) => serialize_in_pool(mode, self, ser),
            None => self.as_slice().serialize(ser),
        }
    }
}

impl<'de, T: Pod + Deserialize<'de>> Deserialize<'de> for SharedSlice<T> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let Some(mode) = decode_mode() else {
            return Ok(SharedSlice::from(Vec::<T>::deserialize(de)?));
        };
        let got = deserialize_in_pool(mode, de)?;
        match got {
            Got::Bytes(b) => SharedSlice::from_bytes(&b).map_err(<D::Error as de::Error>::custom),
            Got::File(f) => {
                SharedSlice::from_file(f).map_err(|e| fail(e, <D::Error as de::Error>::custom))
            }
        }
    }
}

mod run;
pub(crate) use run::{DecodeRun, Scope, TaskRun};

#[cfg(test)]
#[path = "shared_tests.rs"]
mod tests;
