//! The pool's secret and the tickets that name spawned workers: hex
//! encoding (the secret travels in `PROCPOOL_TOKEN` as hex), randomness,
//! and this host's name (a worker's hello carries it). Takes no lock.

use std::io::{self, Read};

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lowercase or uppercase hex.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `n` bytes from the kernel's random source.
pub(crate) fn random_bytes(n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// A random nonzero ticket.
pub(crate) fn random_ticket() -> u64 {
    let b = random_bytes(8).unwrap_or_else(|_| std::process::id().to_le_bytes().repeat(2));
    u64::from_le_bytes(b.try_into().expect("8 bytes")) | 1
}

/// This host's name (as `hostname` prints it).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let b = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex("0001abff").unwrap(), b);
        assert_eq!(unhex("0001ABFF").unwrap(), b);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    fn tickets_are_nonzero_and_differ() {
        let (a, b) = (random_ticket(), random_ticket());
        assert!(a != 0 && b != 0 && a != b);
    }
}
