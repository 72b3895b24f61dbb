//! [`Transport`]: which kind of connection workers use to reach the pool
//! (the byte streams themselves are `link::stream`). No lock.

/// How workers reach the pool. Without the `remote` feature, only
/// [`Transport::Local`] (and only for spawned workers: a `socketpair`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Unix sockets: a `socketpair` for spawned workers, a named local
    /// socket for attaching ones (the default).
    #[default]
    Local,
    /// TCP: the pool listens on
    /// [`listen`](super::ProcessPoolBuilder::listen) and advertises
    /// [`advertise`](super::ProcessPoolBuilder::advertise); workers dial
    /// `tcp://HOST:PORT`. Launchers that start remote workers use it
    /// whatever this says.
    #[cfg(feature = "remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
    Tcp,
}
