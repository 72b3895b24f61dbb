//! Greeting a new worker: the pool's half of the handshake (`link::handshake`)
//! with this pool's settings, then the initializer. What comes out is a
//! worker ready for tasks, or the [`StartError`] that says why not. Takes no
//! lock.

use std::time::Duration;

use procpool_wire::Generation;
use procpool_wire::handshake::Hello;
use procpool_wire::message::{ToParent, ToWorker, decode_message, encode_message};

use super::builder::Config;
use super::spawn::StartError;
use crate::link::frames::write_frames;
use crate::link::handshake::{self, Accepted, Opened, Proven, is_timeout};
use crate::link::stream::Stream;

/// The parent's side of the handshake with a worker on an inherited
/// socket, then the initializer. Returns the opened connection and the
/// worker's hello.
pub(crate) fn greet(
    stream: &Stream,
    cfg: &Config,
    index: usize,
    generation: Generation,
) -> Result<(Opened, Hello), StartError> {
    let deadline = handshake::deadline_after(cfg.handshake_timeout);
    let hello = handshake::read_hello(stream, deadline)
        .map_err(|e| StartError::Handshake(format!("{e} (within {:?})", cfg.handshake_timeout)))?;
    handshake::check_hello(stream, &hello).map_err(StartError::Handshake)?;
    let opened = accept(stream, cfg, index, generation, None)?;
    Ok((opened, hello))
}

/// Welcomes a worker whose hello was accepted into slot `index` (one that
/// dialed in brings what it `proven` and the pool's secret), then runs the
/// initializer. Returns the opened connection: the reader for its
/// messages and, on TCP, the sealer for the pool's.
pub(crate) fn accept(
    stream: &Stream,
    cfg: &Config,
    index: usize,
    generation: Generation,
    proven: Option<&Proven>,
) -> Result<Opened, StartError> {
    let hs = |m: String| StartError::Handshake(m);
    let accepted = Accepted {
        worker_id: index as u32,
        generation,
        max_frame: cfg.max_frame,
        #[cfg(feature = "remote")]
        heartbeat_ms: if stream.is_tcp() {
            u32::try_from(cfg.heartbeat.as_millis()).unwrap_or(u32::MAX)
        } else {
            0
        },
        // Only TCP workers beat.
        #[cfg(not(feature = "remote"))]
        heartbeat_ms: 0,
    };
    let (mut reader, mut sealer) = handshake::accept(stream, accepted, proven).map_err(hs)?;
    if let Some(init) = &cfg.init {
        let msg = ToWorker::Init {
            name: init.name.to_owned(),
            fingerprint: init.fingerprint,
            len: init.payload.len() as u32,
        };
        let frame =
            encode_message(&msg, vec![init.payload.clone()]).map_err(|e| hs(e.to_string()))?;
        write_frames(stream, &[frame], sealer.as_mut())
            .map_err(|e| hs(format!("cannot send initializer: {e}")))?;
        stream
            .set_read_timeout(Some(cfg.init_timeout.max(Duration::from_millis(1))))
            .map_err(|e| hs(e.to_string()))?;
        // The worker's first message after the welcome is its InitDone.
        let body = match reader.next_frame() {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err(StartError::Init(
                    "the worker died while running the initializer".into(),
                ));
            }
            Err(e) if is_timeout(&e) => {
                return Err(StartError::Init(format!(
                    "did not finish within the {:?} init timeout",
                    cfg.init_timeout
                )));
            }
            Err(e) => return Err(hs(e.to_string())),
        };
        match decode_message::<ToParent>(body) {
            Ok((ToParent::InitDone { error: None, .. }, _)) => {}
            Ok((ToParent::InitDone { error: Some(m), .. }, _)) => return Err(StartError::Init(m)),
            Ok((other, _)) => {
                return Err(hs(format!("unexpected message during init: {other:?}")));
            }
            Err(e) => return Err(hs(e.to_string())),
        }
    }
    // Over TCP a worker that stays silent past `lost_after` is lost (it
    // sends heartbeats); a local socket closes when its process dies.
    stream
        .set_read_timeout(stream.is_tcp().then_some(cfg.lost_after))
        .map_err(|e| hs(e.to_string()))?;
    Ok((reader, sealer))
}
