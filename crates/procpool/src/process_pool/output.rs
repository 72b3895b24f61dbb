//! Where a spawned worker's stdout and stderr go ([`WorkerOutput`]): the
//! parent's stderr as `[procpool WHO] line` (the default; launchers' output
//! too), the parent's own stdout and stderr unchanged, nowhere, or
//! `tracing` events.
//!
//! What a worker prints is untrusted and unbounded: a task may write a
//! gigabyte without a newline, redraw a progress bar with `\r`, or emit
//! terminal escape sequences. So the forwarder holds at most one piece of
//! [`MAX_PIECE`] bytes: a longer line is cut into pieces, each forwarded
//! on a line (or event) of its own and marked ` [cut]` except the last; and
//! every control character (C0, DEL, C1, but not a tab) and every byte that
//! is not UTF-8 is shown escaped (`\x1b`, `\r`, `\u{9b}`), so nothing a
//! worker prints can move the cursor, clear the screen or retitle the
//! terminal. One thread per process; it owns its buffers and takes only the
//! stderr lock, once per piece.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// Longest piece of a line forwarded at once (bytes as the worker wrote
/// them; escaping may make the forwarded line up to four times longer).
pub(crate) const MAX_PIECE: usize = 4096;

/// What a cut piece ends with.
const CUT: &str = " [cut]";

/// What happens to the output (stdout and stderr) of a worker the pool
/// spawns; [`ProcessPoolBuilder::worker_output`](crate::ProcessPoolBuilder::worker_output).
///
/// ```no_run
/// use procpool::{ProcessPool, WorkerOutput};
///
/// let pool = ProcessPool::builder().worker_output(WorkerOutput::Tracing).build()?;
/// # Ok::<(), procpool::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WorkerOutput {
    /// Each line to the parent's stderr as `[procpool worker N] line` (the
    /// default), cut and escaped as the module docs say: output of several
    /// workers stays readable and cannot drive the terminal.
    #[default]
    Prefixed,
    /// The worker writes straight to the parent's stdout and stderr, as
    /// is (lines of several workers may interleave; escapes pass).
    Inherit,
    /// Thrown away (`/dev/null`).
    Discard,
    /// Each line (or piece) becomes a `tracing` event: target
    /// `procpool::worker::output`, level INFO, the escaped line as its
    /// message, fields `worker.id` and `cut`.
    Tracing,
}

/// Sets `cmd`'s stdin (closed), stdout and stderr for `mode`; returns the
/// read end of the pipe to forward, if any.
pub(crate) fn wire(cmd: &mut Command, mode: WorkerOutput) -> io::Result<Option<io::PipeReader>> {
    cmd.stdin(Stdio::null());
    match mode {
        WorkerOutput::Inherit => {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
            Ok(None)
        }
        WorkerOutput::Discard => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            Ok(None)
        }
        WorkerOutput::Prefixed | WorkerOutput::Tracing => {
            let (out_r, out_w) = io::pipe()?;
            cmd.stdout(out_w.try_clone()?).stderr(out_w);
            Ok(Some(out_r))
        }
    }
}

/// Forwards worker `index`'s pipe as `mode` says, on a thread of its own.
pub(crate) fn forward_worker(r: io::PipeReader, index: usize, mode: WorkerOutput) {
    let who = format!("worker {index}");
    if mode != WorkerOutput::Tracing {
        forward_output(r, who);
        return;
    }
    let spawned = std::thread::Builder::new()
        .name(format!("procpool-out-{who}"))
        .spawn(move || {
            let mut line = String::with_capacity(4 * MAX_PIECE + 64);
            pieces(r, |piece, cut| {
                line.clear();
                escape_into(&mut line, piece);
                tracing::info!(target: "procpool::worker::output", { worker.id = index, cut }, "{line}");
            });
        });
    if let Err(e) = spawned {
        tracing::warn!(target: "procpool::pool", "cannot forward worker output: {e}");
    }
}

/// Forwards a pipe's output to our stderr as `[procpool WHO] piece`, on a
/// thread of its own.
pub(crate) fn forward_output(r: io::PipeReader, who: String) {
    let name = format!("procpool-out-{who}");
    let spawned = std::thread::Builder::new()
        .name(name)
        .spawn(move || forward(r, &who, &mut io::stderr()));
    if let Err(e) = spawned {
        tracing::warn!(target: "procpool::pool", "cannot forward worker output: {e}");
    }
}

/// Copies `r` to `out` in pieces; see the module docs. Returns at the end
/// of `r` (or a read error); a write error drops that piece.
fn forward(r: impl io::Read, who: &str, out: &mut impl Write) {
    let mut line = String::with_capacity(4 * MAX_PIECE + 64);
    pieces(r, |piece, cut| emit(&mut line, who, piece, cut, out));
}

/// Calls `each(piece, cut)` for every line of `r`, or every piece of at
/// most [`MAX_PIECE`] bytes of a longer one (`cut`: more of the line
/// follows). Returns at the end of `r` (or a read error).
fn pieces(r: impl io::Read, mut each: impl FnMut(&[u8], bool)) {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut piece: Vec<u8> = Vec::with_capacity(MAX_PIECE);
    loop {
        let buf = match r.fill_buf() {
            Ok([]) | Err(_) => {
                if !piece.is_empty() {
                    each(&piece, false);
                }
                return;
            }
            Ok(buf) => buf,
        };
        let take = buf.len().min(MAX_PIECE - piece.len());
        match buf[..take].iter().position(|&b| b == b'\n') {
            Some(i) => {
                piece.extend_from_slice(&buf[..i]);
                r.consume(i + 1);
                each(&piece, false);
                piece.clear();
            }
            None => {
                piece.extend_from_slice(&buf[..take]);
                r.consume(take);
                if piece.len() == MAX_PIECE {
                    // A newline right after the piece ends the same line.
                    let ends_here = matches!(r.fill_buf(), Ok([b'\n', ..]));
                    if ends_here {
                        r.consume(1);
                    }
                    each(&piece, !ends_here);
                    piece.clear();
                }
            }
        }
    }
}

/// Writes one forwarded line: prefix, the escaped piece, the cut mark.
fn emit(line: &mut String, who: &str, piece: &[u8], cut: bool, out: &mut impl Write) {
    line.clear();
    line.push_str("[procpool ");
    line.push_str(who);
    line.push_str("] ");
    escape_into(line, piece);
    if cut {
        line.push_str(CUT);
    }
    line.push('\n');
    let _ = out.write_all(line.as_bytes());
}

/// Appends `bytes` to `out`, control characters and bytes that are not
/// UTF-8 escaped.
pub(crate) fn escape_into(out: &mut String, bytes: &[u8]) {
    // The common case, printable ASCII, is copied as is.
    if bytes
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t')
    {
        out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
        return;
    }
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\t' => out.push(c),
                '\r' => out.push_str("\\r"),
                c if c.is_control() && (c as u32) < 0x80 => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> String {
        let mut out = Vec::new();
        forward(input, "worker 3", &mut out);
        String::from_utf8(out).expect("the forwarded text is UTF-8")
    }

    #[test]
    fn short_lines_pass_with_their_prefix() {
        assert_eq!(
            run(b"hello\nworld\n"),
            "[procpool worker 3] hello\n[procpool worker 3] world\n"
        );
        assert_eq!(run(b"no newline"), "[procpool worker 3] no newline\n");
        assert_eq!(run(b""), "");
        assert_eq!(run(b"\n"), "[procpool worker 3] \n");
    }

    #[test]
    fn long_lines_are_cut_into_marked_pieces() {
        let mut input = vec![b'a'; MAX_PIECE * 2 + 10];
        input.push(b'\n');
        let out = run(&input);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].ends_with(CUT) && lines[1].ends_with(CUT));
        assert!(!lines[2].ends_with(CUT));
        let total: usize = lines.iter().map(|l| l.matches('a').count()).sum();
        assert_eq!(total, MAX_PIECE * 2 + 10);
        // A line of exactly one piece is not marked as cut.
        let mut exact = vec![b'b'; MAX_PIECE];
        exact.push(b'\n');
        assert_eq!(run(&exact).lines().count(), 1);
        assert!(!run(&exact).contains(CUT));
    }

    #[test]
    fn control_characters_and_bad_bytes_are_escaped() {
        let out = run(b"\x1b[31mred\x07\r50%\tok \xc2\x9b \xff\xfe caf\xc3\xa9\n");
        assert_eq!(
            out,
            "[procpool worker 3] \\x1b[31mred\\x07\\r50%\tok \\u{9b} \\xff\\xfe caf\u{e9}\n"
        );
        assert!(
            !out.trim_end_matches('\n')
                .chars()
                .any(|c| c.is_control() && c != '\t')
        );
    }
}
