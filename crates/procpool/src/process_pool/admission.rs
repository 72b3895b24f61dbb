//! Which connections may run a handshake now: at most [`MAX_PENDING`] at
//! once, and at most [`MAX_PENDING_PER_PEER`] from one network address, so
//! strangers on one host cannot take every slot while a worker from
//! another host waits. Each handshake also has one deadline for the whole
//! of it (`link::handshake`), so a slot is never held for longer than
//! `handshake_timeout`. A connection over either cap is closed at once.
//!
//! # Lock
//!
//! `Admission::counts` (its own mutex, never held with another lock): the
//! accept loop admits, each handshake thread releases its [`Admitted`] on
//! drop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::lock::lock;

/// Most handshakes in progress at once.
pub(crate) const MAX_PENDING: usize = 64;

/// Most handshakes in progress from one network address (local-socket
/// peers, all this user's processes, count only towards [`MAX_PENDING`]).
pub(crate) const MAX_PENDING_PER_PEER: usize = 16;

#[derive(Default)]
struct Counts {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// The handshakes in progress.
#[derive(Clone, Default)]
pub(crate) struct Admission {
    counts: Arc<Mutex<Counts>>,
}

/// One admitted handshake; dropping it frees its place.
pub(crate) struct Admitted {
    counts: Arc<Mutex<Counts>>,
    peer: Option<IpAddr>,
}

/// Why a connection was not admitted, for the log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// [`MAX_PENDING`] handshakes are in progress.
    Full,
    /// [`MAX_PENDING_PER_PEER`] handshakes from this address are.
    PeerFull,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full => write!(f, "{MAX_PENDING} handshakes are in progress"),
            Refused::PeerFull => write!(
                f,
                "{MAX_PENDING_PER_PEER} handshakes from this address are in progress"
            ),
        }
    }
}

impl Admission {
    /// Admits a handshake from `peer` (`None`: a local socket) if both caps
    /// allow it.
    pub(crate) fn admit(&self, peer: Option<IpAddr>) -> Result<Admitted, Refused> {
        let mut c = lock(&self.counts);
        if c.total >= MAX_PENDING {
            return Err(Refused::Full);
        }
        if let Some(ip) = peer {
            let n = c.per_peer.entry(ip).or_insert(0);
            if *n >= MAX_PENDING_PER_PEER {
                return Err(Refused::PeerFull);
            }
            *n += 1;
        }
        c.total += 1;
        Ok(Admitted {
            counts: self.counts.clone(),
            peer,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.total -= 1;
        if let Some(ip) = self.peer
            && let Some(n) = c.per_peer.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                c.per_peer.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_cannot_take_every_place() {
        let a = Admission::default();
        let stranger: IpAddr = [10, 0, 0, 66].into();
        let worker: IpAddr = [10, 0, 0, 7].into();
        let held: Vec<Admitted> = (0..MAX_PENDING_PER_PEER)
            .map(|_| a.admit(Some(stranger)).unwrap())
            .collect();
        assert_eq!(a.admit(Some(stranger)).err(), Some(Refused::PeerFull));
        // Another host still gets in, and so does a local socket.
        let w = a.admit(Some(worker)).unwrap();
        let l = a.admit(None).unwrap();
        drop((w, l));
        // A place freed is a place again.
        drop(held);
        assert!(a.admit(Some(stranger)).is_ok());
        assert!(lock(&a.counts).per_peer.len() <= 1);
    }

    #[test]
    fn the_total_is_capped_across_addresses() {
        let a = Admission::default();
        let held: Vec<Admitted> = (0..MAX_PENDING)
            .map(|i| {
                a.admit(Some([10, 0, (i / 200) as u8, (i % 200) as u8].into()))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            a.admit(Some([10, 9, 9, 9].into())).err(),
            Some(Refused::Full)
        );
        assert_eq!(a.admit(None).err(), Some(Refused::Full));
        drop(held);
        assert_eq!(lock(&a.counts).total, 0);
        assert!(lock(&a.counts).per_peer.is_empty());
    }
}
