//! The pool's secret and the tickets that name spawned workers: hex
//! encoding (the secret travels in `PROCPOOL_TOKEN` as hex), randomness
//! (`getrandom`: the kernel's `getrandom(2)`), and this host's name (a
//! worker's hello carries it). Takes no lock. Only the host name is
//! needed without the `remote` feature (no secret, no ticket).

#[cfg(feature = "remote")]
use std::io;

/// Lowercase hex of `bytes`.
#[cfg(feature = "remote")]
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lowercase or uppercase hex.
#[cfg(feature = "remote")]
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `n` bytes from the kernel's random source. An error (no randomness to
/// be had) is passed on, never replaced by something guessable.
#[cfg(feature = "remote")]
pub(crate) fn random_bytes(n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; n];
    getrandom::fill(&mut buf).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(buf)
}

/// A random nonzero ticket (0 means "no ticket" on the wire).
#[cfg(feature = "remote")]
pub(crate) fn random_ticket() -> io::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(u64::from_le_bytes(b) | 1)
}

/// This host's name (as `hostname` prints it); only ever shown to people
/// and used as an address to advertise, so an unreadable name is
/// `localhost`.
pub(crate) fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "remote")]
    fn hex_round_trip() {
        let b = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex("0001abff").unwrap(), b);
        assert_eq!(unhex("0001ABFF").unwrap(), b);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    #[cfg(feature = "remote")]
    fn tickets_are_nonzero_and_differ() {
        let (a, b) = (random_ticket().unwrap(), random_ticket().unwrap());
        assert!(a != 0 && b != 0 && a != b);
        assert!(a & 1 == 1 && b & 1 == 1);
    }

    #[test]
    fn host_name_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(host_name(), kernel.trim());
    }
}
