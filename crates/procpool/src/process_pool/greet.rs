//! Greeting a new worker: the pool's half of the handshake (`link::handshake`)
//! with this pool's settings, then the initializer. What comes out is a
//! worker ready for tasks, or the [`StartError`] that says why not. Takes no
//! lock.

use std::time::Duration;

use procpool_wire::Generation;
use procpool_wire::frame::write_all_frames;
use procpool_wire::handshake::Hello;
use procpool_wire::message::{ToParent, ToWorker, decode_message, encode_message};

use super::builder::Config;
use super::spawn::StartError;
use crate::link::frames::SocketReader;
use crate::link::handshake::{self, Accepted, is_timeout};
use crate::link::stream::Stream;

/// The parent's side of the handshake with a worker on an inherited
/// socket, then the initializer. Returns the reader for the worker's
/// messages and its hello.
pub(crate) fn greet(
    stream: &Stream,
    cfg: &Config,
    index: usize,
    generation: Generation,
) -> Result<(SocketReader, Hello), StartError> {
    let (reader, hello) =
        handshake::read_hello(stream, cfg.handshake_timeout).map_err(StartError::Handshake)?;
    handshake::check_hello(stream, &hello).map_err(StartError::Handshake)?;
    let reader = accept(stream, reader, cfg, index, generation)?;
    Ok((reader, hello))
}

/// Welcomes a worker whose hello was accepted into slot `index`, then runs
/// the initializer. Returns the reader for its messages.
pub(crate) fn accept(
    stream: &Stream,
    mut reader: SocketReader,
    cfg: &Config,
    index: usize,
    generation: Generation,
) -> Result<SocketReader, StartError> {
    let hs = |m: String| StartError::Handshake(m);
    let accepted = Accepted {
        worker_id: index as u32,
        generation,
        max_frame: cfg.max_frame,
        heartbeat_ms: if stream.is_tcp() {
            u32::try_from(cfg.heartbeat.as_millis()).unwrap_or(u32::MAX)
        } else {
            0
        },
    };
    handshake::accept(stream, &mut reader, accepted).map_err(hs)?;
    if let Some(init) = &cfg.init {
        let msg = ToWorker::Init {
            name: init.name.to_owned(),
            fingerprint: init.fingerprint,
            len: init.payload.len() as u32,
        };
        let frame =
            encode_message(&msg, vec![init.payload.clone()]).map_err(|e| hs(e.to_string()))?;
        write_all_frames(&mut &*stream, &[frame])
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
    Ok(reader)
}
