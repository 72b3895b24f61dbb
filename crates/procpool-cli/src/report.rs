//! Turning a [`Report`] into text: the tables of `procpool overhead` and the
//! closing advice, computed from the numbers.

use std::fmt::Write as _;
use std::time::Duration;

use crate::overhead::{Kind, PayloadRow, ProcessLatency, Report};
use crate::stats::{fmt_bytes, fmt_duration, fmt_percent, fmt_rate, fmt_ratio};
use crate::sweep::AUTO;

/// Width of wrapped prose.
const WIDTH: usize = 100;

/// A plain text table: a header row and rows, columns padded to fit.
/// Columns listed in `left` are left-aligned, the others right-aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    left: Vec<usize>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| (*s).to_owned()).collect(),
            rows: Vec::new(),
            left: Vec::new(),
        }
    }

    /// Left-aligns the given columns.
    pub fn left(mut self, cols: &[usize]) -> Table {
        self.left = cols.to_vec();
        self
    }

    /// Adds a row. A row with one cell is a note spanning the table.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines of text, each indented by two spaces.
    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in self.rows.iter().filter(|r| r.len() == n) {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = width[i].saturating_sub(c.chars().count());
                s.push_str("  ");
                if self.left.contains(&i) {
                    s.push_str(c);
                    s.extend(std::iter::repeat_n(' ', pad));
                } else {
                    s.extend(std::iter::repeat_n(' ', pad));
                    s.push_str(c);
                }
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(&self.header, &mut out);
        for r in &self.rows {
            if r.len() == n {
                line(r, &mut out);
            } else {
                // A note: starts under the first column that is not a label.
                let indent: usize = width.iter().take(2.min(n)).map(|w| w + 2).sum::<usize>() + 2;
                let _ = writeln!(out, "{}{}", " ".repeat(indent), r.join(" "));
            }
        }
        out
    }
}

/// Wraps `text` at `width` columns: the first line starts with `first`,
/// the others with as many spaces.
pub fn wrap(text: &str, first: &str, width: usize) -> String {
    let indent = " ".repeat(first.chars().count());
    let mut out = String::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = indent.clone();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

fn d(ns: u64) -> String {
    fmt_duration(Duration::from_nanos(ns))
}

/// The full text report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "procpool overhead: where a task's time goes");
    let _ = writeln!(out, "command: {}", r.command);
    let _ = writeln!(
        out,
        "machine: {} logical CPU{}, {}",
        r.machine.logical_cpus,
        if r.machine.logical_cpus == 1 { "" } else { "s" },
        r.machine
            .cpu_model
            .as_deref()
            .unwrap_or("CPU model unknown")
    );
    let _ = writeln!(
        out,
        "pools:   ThreadPool and ProcessPool, {} workers each{}; measured in {:.1} s",
        r.settings.workers,
        if r.settings.quick { " (--quick)" } else { "" },
        r.wall_time_s
    );
    let _ = writeln!(out, "process pool transport: {}", r.settings.transport);
    if !r.settings.release_build {
        let _ = writeln!(
            out,
            "warning: this is a debug build; numbers are pessimistic (use cargo run --release)"
        );
    }

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Raw baseline: Unix-socket ping-pong with a child process (u32 length + bytes, no serde)"
    );
    let mut t = Table::new(&["size", "round trip", "looking", "reps"]);
    for row in &r.raw {
        t.row(vec![
            fmt_bytes(row.size),
            d(row.median_ns),
            d(row.looking_median_ns),
            row.reps.to_string(),
        ]);
    }
    out.push_str(&t.render());
    let _ = writeln!(
        out,
        "  round trip: both ends block in read at once (proc/raw divides by this). looking: both\n  \
         ends first look for up to {} (non-blocking reads), as the pool's threads do.",
        d(procpool_baseline::LOOK.as_nanos() as u64),
    );

    let _ = writeln!(out);
    let _ = writeln!(out, "One task in flight, submit -> result, medians");
    let mut t = Table::new(&[
        "size", "task", "wire", "thread", "process", "proc/raw", "encode", "decode", "ipc",
        "queue", "run", "serde %",
    ])
    .left(&[1]);
    let mut last_size = None;
    for row in &r.payloads {
        let size = if last_size == Some(row.size) {
            String::new()
        } else {
            fmt_bytes(row.size)
        };
        last_size = Some(row.size);
        let thread = row.thread.as_ref().map_or("-".into(), |t| d(t.median_ns));
        match (&row.process, &row.skipped) {
            (Some(p), _) => t.row(vec![
                size,
                row.kind.label().into(),
                row.wire_bytes.map_or("-".into(), fmt_bytes),
                thread,
                d(p.median_ns),
                row.process_vs_raw.map_or("-".into(), fmt_ratio),
                d(p.encode_ns),
                d(p.decode_ns),
                d(p.ipc_ns),
                d(p.queue_wait_ns),
                d(p.run_ns),
                fmt_percent(p.serialization_share),
            ]),
            (None, skipped) => {
                let mut cells = vec![size, row.kind.label().into(), "-".into(), thread];
                cells.extend(std::iter::repeat_n("-".to_owned(), 8));
                t.row(cells);
                t.row(vec![format!(
                    "process pool {}",
                    skipped.as_deref().unwrap_or("not measured")
                )]);
            }
        }
    }
    out.push_str(&t.render());
    let _ = writeln!(
        out,
        "  Echo: bytes via serde_bytes; EchoVec: plain Vec<u8>; EchoRecords: Record structs (numbers and"
    );
    let _ = writeln!(out, "  strings), as many as make the size.");
    let _ = writeln!(
        out,
        "  wire: encoded input bytes. proc/raw: process pool over the raw round trip of that size."
    );
    let _ = writeln!(
        out,
        "  encode/decode: input+output, both sides. ipc: sockets and wake-ups. queue: waiting for a"
    );
    let _ = writeln!(
        out,
        "  worker, in the pool and inside it. serde %: encode+decode over the round trip."
    );
    let _ = writeln!(
        out,
        "  Each column is its own median, so the parts need not add up to the round trip."
    );

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "map(Square) throughput by chunksize (tasks/s; the rows take turns, median of {} rounds; \
         auto: no chunksize set)",
        crate::sweep::CHUNK_ROUNDS
    );
    let with_local = r.chunksize.iter().any(|c| c.local.is_some());
    let mut t = if with_local {
        let _ = writeln!(
            out,
            "  process: over {}; local: a process pool of spawned workers, in the same rounds",
            r.settings.transport
        );
        Table::new(&[
            "chunksize",
            "thread",
            "process",
            "process/thread",
            "local",
            "process/local",
        ])
    } else {
        Table::new(&["chunksize", "thread", "process", "process/thread"])
    };
    for c in &r.chunksize {
        let mut row = vec![
            crate::sweep::chunk_label(c.chunksize),
            fmt_rate(c.thread.tasks_per_sec),
            fmt_rate(c.process.tasks_per_sec),
            fmt_ratio(c.process_vs_thread),
        ];
        if with_local {
            row.push(
                c.local
                    .as_ref()
                    .map_or("-".into(), |l| fmt_rate(l.tasks_per_sec)),
            );
            row.push(c.process_vs_local.map_or("-".into(), fmt_ratio));
        }
        t.row(row);
    }
    out.push_str(&t.render());
    let _ = writeln!(
        out,
        "  Rates: each row's median round. Ratios: the median of the rounds' own ratios (the rows\n  \
         of a round run back to back)."
    );

    if !r.known_issues.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Library problems seen in this run");
        for a in &r.known_issues {
            out.push_str(&wrap(a, "  ! ", WIDTH));
        }
    }

    if !r.advice.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "What this means");
        for a in &r.advice {
            out.push_str(&wrap(a, "  * ", WIDTH));
        }
    }
    out
}

fn find(r: &Report, size: u64, kind: Kind) -> Option<&PayloadRow> {
    r.payloads.iter().find(|p| p.size == size && p.kind == kind)
}

fn proc_of(r: &Report, size: u64, kind: Kind) -> Option<&ProcessLatency> {
    find(r, size, kind)?.process.as_ref()
}

/// Conclusions a person can act on, computed from the numbers.
pub fn advice(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let smallest = crate::overhead::SIZES[0];

    // Fixed cost per task.
    if let (Some(p), Some(row), Some(raw)) = (
        proc_of(r, smallest, Kind::Echo),
        find(r, smallest, Kind::Echo),
        r.raw.iter().find(|x| x.size == smallest),
    ) {
        let thread = row.thread.as_ref().map_or(0, |t| t.median_ns);
        // The pool's threads look before they park: its floor is the raw
        // ping-pong that does too (or the blocking one, if that ran faster).
        let floor = raw.looking_median_ns.min(raw.median_ns);
        out.push(format!(
            "Fixed cost: a {} task takes {} from submit to result on the process pool ({} on a \
             thread; the raw socket alone {} when both ends look before they block, as the pool \
             does, {} when they block at once; so the pool adds {}). Waiting on each result, a \
             task must run at least ~{} for that overhead to stay under 10 %.",
            fmt_bytes(smallest),
            d(p.median_ns),
            d(thread),
            d(raw.looking_median_ns),
            d(raw.median_ns),
            d(p.median_ns.saturating_sub(floor)),
            d(p.median_ns.saturating_mul(10)),
        ));
    }

    // Serialization share at 1 MiB.
    let mib = 1u64 << 20;
    if let Some(p) = proc_of(r, mib, Kind::Echo) {
        let mut s = format!(
            "At 1 MiB, serialization is {} of the round trip with serde_bytes",
            fmt_percent(p.serialization_share)
        );
        if let Some(v) = proc_of(r, mib, Kind::EchoVec) {
            let _ = write!(
                s,
                ", {} with a plain Vec<u8>",
                fmt_percent(v.serialization_share)
            );
        }
        if let Some(v) = proc_of(r, mib, Kind::EchoRecords) {
            let _ = write!(s, ", {} with records", fmt_percent(v.serialization_share));
        }
        s.push_str(if p.serialization_share < 0.5 {
            ": with serde_bytes, moving the bytes costs more than serializing them; keep byte \
             fields #[serde(with = \"serde_bytes\")]."
        } else {
            ": serialization dominates even with serde_bytes; send less, or pass a path."
        });
        out.push(s);
    }

    // Vec<u8> vs serde_bytes.
    for size in [64u64 << 10, mib] {
        if let (Some(b), Some(v)) = (
            proc_of(r, size, Kind::Echo),
            proc_of(r, size, Kind::EchoVec),
        ) {
            let x = v.median_ns as f64 / b.median_ns.max(1) as f64;
            let ser = v.serialization_ns as f64 / b.serialization_ns.max(1) as f64;
            out.push(format!(
                "A plain Vec<u8> is {} slower than serde_bytes at {} ({} vs {} per task; serialization \
                 alone {} slower): mark byte fields #[serde(with = \"serde_bytes\")].",
                fmt_ratio(x),
                fmt_bytes(size),
                d(v.median_ns),
                d(b.median_ns),
                fmt_ratio(ser),
            ));
            break;
        }
    }

    // Records vs bytes of the same size.
    if let (Some(b), Some(rec)) = (
        proc_of(r, mib, Kind::Echo),
        proc_of(r, mib, Kind::EchoRecords),
    ) {
        out.push(format!(
            "Structured records cost {} the round trip of raw bytes at 1 MiB ({} vs {}); for bulk \
             numeric data, send flat byte buffers (serde_bytes) and parse in the worker.",
            fmt_ratio(rec.median_ns as f64 / b.median_ns.max(1) as f64),
            d(rec.median_ns),
            d(b.median_ns),
        ));
    }

    // The largest payload measured with serde_bytes, against the raw socket.
    if let Some(row) = r
        .payloads
        .iter()
        .filter(|p| p.kind == Kind::Echo && p.process.is_some())
        .max_by_key(|p| p.size)
        && let (Some(p), Some(x)) = (row.process.as_ref(), row.process_vs_raw)
    {
        let per_mib = p.median_ns as f64 / (row.size as f64 / mib as f64);
        let shared = find(r, row.size, Kind::EchoShared)
            .and_then(|s| Some((s.process.as_ref()?, s.process_vs_raw?)))
            .map(|(s, ratio)| {
                format!(
                    " (measured here: {}, {} the raw round trip)",
                    d(s.median_ns),
                    fmt_ratio(ratio)
                )
            })
            .unwrap_or_default();
        out.push(format!(
            "At {} a task costs {} ({} the raw socket round trip, ~{} per MiB): for payloads this \
             big, use procpool::SharedBytes (or SharedSlice<T> for numbers), which reaches a \
             local worker as a sealed memory file instead of the bytes{shared}.",
            fmt_bytes(row.size),
            d(p.median_ns),
            fmt_ratio(x),
            d(per_mib as u64),
        ));
    }

    // Skipped cells.
    let skipped: Vec<String> = r
        .payloads
        .iter()
        .filter(|p| p.skipped.is_some())
        .map(|p| format!("{} at {}", p.kind.label(), fmt_bytes(p.size)))
        .collect();
    if !skipped.is_empty() {
        out.push(format!(
            "Not measured on the process pool (too slow): {}.",
            skipped.join(", ")
        ));
    }

    // Chunk size (the best fixed one; auto is compared with it below).
    let best_fixed = r
        .chunksize
        .iter()
        .filter(|c| c.chunksize != AUTO)
        .max_by(|a, b| a.process.tasks_per_sec.total_cmp(&b.process.tasks_per_sec));
    if let (Some(auto), Some(best)) = (r.chunksize.iter().find(|c| c.chunksize == AUTO), best_fixed)
    {
        let vs = |a: f64, b: f64| a / b.max(1e-9);
        out.push(format!(
            "With no chunksize (auto chunking) the process pool ran at {} of the best fixed \
             chunksize ({}, {} vs {}); the thread pool at {}.",
            fmt_ratio(vs(auto.process.tasks_per_sec, best.process.tasks_per_sec)),
            best.chunksize,
            fmt_rate(auto.process.tasks_per_sec),
            fmt_rate(best.process.tasks_per_sec),
            fmt_ratio(vs(auto.thread.tasks_per_sec, best_thread_rate(r))),
        ));
    }
    if let Some(c) = r.chunksize.iter().find(|c| c.chunksize == 256)
        && let (Some(local), Some(share)) = (&c.local, c.process_vs_local)
    {
        out.push(format!(
            "Over {} the process pool ran map(Square) at chunksize 256 at {} of a local process \
             pool's rate in the same rounds ({} vs {}).",
            r.settings.transport,
            fmt_ratio(share),
            fmt_rate(c.process.tasks_per_sec),
            fmt_rate(local.tasks_per_sec),
        ));
    }
    if let (Some(one), Some(best)) = (r.chunksize.iter().find(|c| c.chunksize == 1), best_fixed)
        && best.chunksize != 1
    {
        out.push(format!(
            "chunksize {} gives {} the throughput of chunksize 1 on the process pool ({} vs {}); \
             there the process pool runs at {} the thread pool's rate.",
            best.chunksize,
            fmt_ratio(best.process.tasks_per_sec / one.process.tasks_per_sec.max(1e-9)),
            fmt_rate(best.process.tasks_per_sec),
            fmt_rate(one.process.tasks_per_sec),
            fmt_ratio(best.process_vs_thread),
        ));
        let per_task = 1e9 / one.process.tasks_per_sec.max(1e-9);
        out.push(format!(
            "Through map with {} workers and chunksize 1, each task costs ~{} of pool time: \
             tasks should run at least ~{} each for that to stay under 10 %; shorter ones need \
             chunks, which a map given no chunksize picks by itself (or set one near {}).",
            r.settings.workers,
            d(per_task as u64),
            d((per_task * 10.0) as u64),
            best.chunksize,
        ));
    }
    out
}

/// The thread pool's best rate at a fixed chunksize.
fn best_thread_rate(r: &Report) -> f64 {
    r.chunksize
        .iter()
        .filter(|c| c.chunksize != AUTO)
        .map(|c| c.thread.tasks_per_sec)
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overhead::{Latency, Machine, RawRow, Settings};
    use crate::sweep::{ChunkRow, Throughput};

    #[test]
    fn wrap_breaks_at_words() {
        assert_eq!(wrap("aa bb cc dd", "* ", 8), "* aa bb\n  cc dd\n");
        assert_eq!(wrap("word", "* ", 3), "* word\n");
    }

    #[test]
    fn table_pads_and_aligns() {
        let mut t = Table::new(&["size", "name", "time"]).left(&[1]);
        t.row(vec!["16 B".into(), "Echo".into(), "1 µs".into()]);
        t.row(vec!["1 MiB".into(), "EchoRecords".into(), "120 µs".into()]);
        t.row(vec!["a note".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "   size  name           time");
        assert_eq!(lines[1], "   16 B  Echo           1 µs");
        assert_eq!(lines[2], "  1 MiB  EchoRecords  120 µs");
        assert!(lines[3].ends_with("a note") && lines[3].starts_with("    "));
    }

    fn lat(ns: u64, share: f64) -> ProcessLatency {
        ProcessLatency {
            reps: 10,
            median_ns: ns,
            cost_total_ns: ns,
            encode_ns: (ns as f64 * share / 2.0) as u64,
            decode_ns: (ns as f64 * share / 2.0) as u64,
            ipc_ns: ns / 2,
            run_ns: 100,
            queue_wait_ns: 100,
            serialization_ns: (ns as f64 * share) as u64,
            serialization_share: share,
        }
    }

    fn row(size: u64, kind: Kind, ns: u64, share: f64) -> PayloadRow {
        PayloadRow {
            size,
            kind,
            wire_bytes: Some(size),
            thread: Some(Latency {
                reps: 10,
                median_ns: 5_000,
            }),
            process: Some(lat(ns, share)),
            process_vs_raw: Some(2.0),
            process_vs_thread: Some(ns as f64 / 5_000.0),
            skipped: None,
        }
    }

    fn tp(rate: f64) -> Throughput {
        Throughput {
            tasks: rate as u64,
            seconds: 1.0,
            tasks_per_sec: rate,
        }
    }

    fn sample() -> Report {
        let mib = 1 << 20;
        let mut skipped = row(16 << 20, Kind::EchoVec, 0, 0.0);
        skipped.process = None;
        skipped.skipped = Some("skipped: too slow".into());
        Report {
            command: "procpool overhead".into(),
            machine: Machine {
                logical_cpus: 2,
                cpu_model: Some("Test CPU".into()),
            },
            settings: Settings {
                workers: 2,
                quick: false,
                transport: "local socketpair".into(),
                release_build: true,
            },
            raw: vec![
                RawRow {
                    size: 16,
                    reps: 100,
                    median_ns: 10_000,
                    looking_median_ns: 6_000,
                },
                RawRow {
                    size: mib,
                    reps: 10,
                    median_ns: 200_000,
                    looking_median_ns: 150_000,
                },
            ],
            payloads: vec![
                row(16, Kind::Echo, 40_000, 0.01),
                row(64 << 10, Kind::Echo, 100_000, 0.1),
                row(64 << 10, Kind::EchoVec, 400_000, 0.7),
                row(mib, Kind::Echo, 1_000_000, 0.41),
                row(mib, Kind::EchoVec, 4_000_000, 0.8),
                row(mib, Kind::EchoRecords, 9_000_000, 0.9),
                skipped,
            ],
            chunksize: vec![
                ChunkRow {
                    chunksize: 1,
                    thread: tp(200_000.0),
                    process: tp(50_000.0),
                    process_vs_thread: 0.25,
                    local: None,
                    process_vs_local: None,
                },
                ChunkRow {
                    chunksize: 256,
                    thread: tp(2_000_000.0),
                    process: tp(1_000_000.0),
                    process_vs_thread: 0.5,
                    local: None,
                    process_vs_local: None,
                },
                ChunkRow {
                    chunksize: AUTO,
                    thread: tp(3_000_000.0),
                    process: tp(900_000.0),
                    process_vs_thread: 0.3,
                    local: None,
                    process_vs_local: None,
                },
            ],
            advice: Vec::new(),
            known_issues: Vec::new(),
            wall_time_s: 20.0,
        }
    }

    #[test]
    fn advice_is_computed_from_the_numbers() {
        let a = advice(&sample()).join("\n");
        assert!(
            a.contains("At 1 MiB, serialization is 41 % of the round trip"),
            "{a}"
        );
        assert!(
            a.contains("plain Vec<u8> is 4.00× slower than serde_bytes at 64 KiB"),
            "{a}"
        );
        assert!(
            a.contains("chunksize 256 gives 20.0× the throughput of chunksize 1"),
            "{a}"
        );
        assert!(
            a.contains(
                "auto chunking) the process pool ran at 0.90× of the best fixed chunksize (256"
            ),
            "{a}"
        );
        assert!(a.contains("the thread pool at 1.50×"), "{a}");
        assert!(a.contains("Structured records cost 9.00×"), "{a}");
        assert!(a.contains("EchoVec at 16 MiB"), "{a}");
        // The pool's fixed cost is held against the faster raw ping-pong
        // (here the looking one: 40 µs - 6 µs), never a blocking one the
        // pool beats by looking (which said "the pool adds 0 ns").
        assert!(
            a.contains(
                "the raw socket alone 6.00 µs when both ends look before they block, as the pool \
                 does, 10.0 µs when they block at once; so the pool adds 34.0 µs"
            ),
            "{a}"
        );
    }

    #[test]
    fn the_pool_adds_what_it_costs_over_the_faster_raw_ping_pong() {
        let mut r = sample();
        r.raw[0].looking_median_ns = 12_000;
        let a = advice(&r).join("\n");
        assert!(a.contains("so the pool adds 30.0 µs"), "{a}");
        let text = render(&r);
        assert!(text.contains("looking"), "{text}");
        assert!(text.contains("12.0 µs"), "{text}");
    }

    #[test]
    fn render_has_every_section() {
        let mut r = sample();
        r.advice = advice(&r);
        let text = render(&r);
        for needle in [
            "command: procpool overhead",
            "machine: 2 logical CPUs, Test CPU",
            "Raw baseline",
            "One task in flight",
            "process pool skipped: too slow",
            "map(Square) throughput",
            "What this means",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("process/local"), "{text}");
        assert!(!r.advice.iter().any(|a| a.contains("local process pool")));
    }

    #[test]
    fn a_pool_over_tcp_is_held_against_a_local_one_of_the_same_rounds() {
        let mut r = sample();
        r.settings.transport = "TCP loopback".into();
        for c in &mut r.chunksize {
            let local = c.process.tasks_per_sec * 2.0;
            c.local = Some(Throughput {
                tasks: 1,
                seconds: 1.0,
                tasks_per_sec: local,
            });
            c.process_vs_local = Some(0.5);
        }
        r.advice = advice(&r);
        let a = r.advice.join("\n");
        assert!(
            a.contains(
                "Over TCP loopback the process pool ran map(Square) at chunksize 256 at 0.50× of \
                 a local process pool's rate in the same rounds"
            ),
            "{a}"
        );
        let text = render(&r);
        assert!(text.contains("process/local"), "{text}");
        assert!(
            text.contains("local: a process pool of spawned workers"),
            "{text}"
        );
    }
}
