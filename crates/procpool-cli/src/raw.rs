//! The raw baseline of `procpool overhead`: `procpool-baseline`'s echo
//! peer, run as this same binary (`procpool __echo-peer SOCKET`).

use std::io;
use std::process::Command;

pub use procpool_baseline::{EchoPeer, Wait, frame, serve_peer};

/// The hidden subcommand the child runs.
pub const PEER_COMMAND: &str = "__echo-peer";

/// Starts the child and waits for it to connect; both ends wait `wait`'s
/// way.
pub fn start_peer(wait: Wait) -> io::Result<EchoPeer> {
    let exe = std::env::current_exe()?;
    EchoPeer::start_waiting(wait, |socket| {
        let mut cmd = Command::new(&exe);
        cmd.arg(PEER_COMMAND).arg(socket);
        cmd
    })
}

/// One round trip of `frame`, its echo checked byte for byte after the
/// clock stopped; returns the round-trip time.
pub fn round_trip(peer: &mut EchoPeer, frame: &[u8]) -> io::Result<std::time::Duration> {
    let elapsed = peer.round_trip(frame)?;
    if peer.echoed() != &frame[4..] {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the echo peer sent back different bytes",
        ));
    }
    Ok(elapsed)
}
