//! `procpool overhead --html FILE`: the [`Report`] as one self-contained
//! page — inline CSS and SVG charts drawn here, no script, nothing
//! fetched — to look at rather than read: where a task's time goes by
//! payload size (stacked), thread vs process vs a raw socket, and
//! throughput by chunk size.

use std::fmt::Write as _;

use crate::overhead::{RawRow, Report};
use crate::stats::{fmt_bytes, fmt_duration, fmt_rate};

/// The parts of a round trip, in stacking order, with their colours.
const PARTS: [(&str, &str); 5] = [
    ("encode", "#4e79a7"),
    ("decode", "#f28e2b"),
    ("queue", "#bab0ac"),
    ("run", "#59a14f"),
    ("IPC", "#e15759"),
];
const THREAD: &str = "#76b7b2";
const PROCESS: &str = "#e15759";
const RAW: &str = "#9c755f";

/// Escapes text for HTML and SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ns(d: u64) -> String {
    fmt_duration(std::time::Duration::from_nanos(d))
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>procpool overhead</title><style>{CSS}</style></head><body>\
         <h1>Where a task's time goes</h1>\
         <p class=\"meta\">{} · {} logical CPUs{} · {} workers · {} transport{}{} · {:.1} s</p>",
        esc(&r.command),
        r.machine.logical_cpus,
        r.machine
            .cpu_model
            .as_deref()
            .map(|m| format!(" ({})", esc(m)))
            .unwrap_or_default(),
        r.settings.workers,
        esc(&r.settings.transport),
        if r.settings.quick { " · quick" } else { "" },
        if r.settings.release_build {
            ""
        } else {
            " · <b>debug build</b>"
        },
        r.wall_time_s,
    );
    out.push_str(&stacked(r));
    out.push_str(&latency(r));
    out.push_str(&throughput(r));
    if !r.advice.is_empty() {
        out.push_str("<h2>What to do</h2><ul>");
        for a in &r.advice {
            let _ = write!(out, "<li>{}</li>", esc(a));
        }
        out.push_str("</ul>");
    }
    if !r.known_issues.is_empty() {
        out.push_str("<h2>Known issues</h2><ul>");
        for a in &r.known_issues {
            let _ = write!(out, "<li>{}</li>", esc(a));
        }
        out.push_str("</ul>");
    }
    out.push_str("</body></html>\n");
    out
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:960px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px}.meta{color:#666}\
svg{display:block;margin:8px 0}svg text{font:12px system-ui,sans-serif;fill:#222}\
.note{color:#555;font-size:13px}";

/// 100 %-stacked bars: each payload row's process round trip, by part.
fn stacked(r: &Report) -> String {
    let rows: Vec<_> = r
        .payloads
        .iter()
        .filter_map(|p| p.process.as_ref().map(|pl| (p, pl)))
        .collect();
    let mut s = String::from(
        "<h2>Process pool, one task in flight: the round trip by part</h2>\
         <p class=\"note\">Each bar is one payload, 100 % wide; the label on the right is its \
         median round trip.</p>",
    );
    if rows.is_empty() {
        s.push_str("<p>No process measurements in this run.</p>");
        return s;
    }
    let (label_w, bar_w, row_h) = (190.0, 560.0, 26.0);
    let height = 40.0 + row_h * rows.len() as f64;
    let _ = write!(
        s,
        "<svg id=\"stacked\" width=\"880\" height=\"{height}\" viewBox=\"0 0 880 {height}\" \
         role=\"img\" aria-label=\"round trip by part\">"
    );
    // Legend.
    let mut x = label_w;
    for (name, colour) in PARTS {
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"4\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"15\">{name}</text>",
            x + 16.0
        );
        x += 90.0;
    }
    for (i, (p, pl)) in rows.iter().enumerate() {
        let y = 30.0 + row_h * i as f64;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} {}</text>",
            label_w - 8.0,
            y + 15.0,
            fmt_bytes(p.size),
            p.kind.label()
        );
        let parts = [
            pl.encode_ns,
            pl.decode_ns,
            pl.queue_wait_ns,
            pl.run_ns,
            pl.ipc_ns,
        ];
        let total: u64 = parts.iter().sum::<u64>().max(1);
        let mut x = label_w;
        for (part, (name, colour)) in parts.iter().zip(PARTS) {
            let w = bar_w * (*part as f64) / (total as f64);
            if w > 0.0 {
                let _ = write!(
                    s,
                    "<rect x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"{colour}\">\
                     <title>{name}: {} ({:.0} %)</title></rect>",
                    row_h - 6.0,
                    ns(*part),
                    100.0 * (*part as f64) / (total as f64)
                );
            }
            x += w;
        }
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            label_w + bar_w + 8.0,
            y + 15.0,
            ns(pl.median_ns)
        );
    }
    s.push_str("</svg>");
    s
}

/// Log-scale bars: thread, process and raw socket medians per payload.
fn latency(r: &Report) -> String {
    let raw_of = |size: u64| {
        r.raw
            .iter()
            .find(|x: &&RawRow| x.size == size)
            .map(|x| x.median_ns)
    };
    let rows: Vec<(String, [Option<u64>; 3])> = r
        .payloads
        .iter()
        .filter(|p| p.thread.is_some() || p.process.is_some())
        .map(|p| {
            (
                format!("{} {}", fmt_bytes(p.size), p.kind.label()),
                [
                    p.thread.as_ref().map(|t| t.median_ns),
                    p.process.as_ref().map(|t| t.median_ns),
                    raw_of(p.size),
                ],
            )
        })
        .collect();
    let mut s = String::from(
        "<h2>Thread vs process vs a raw socket round trip</h2>\
         <p class=\"note\">Median time of one task in flight; log scale.</p>",
    );
    if rows.is_empty() {
        s.push_str("<p>No latency measurements in this run.</p>");
        return s;
    }
    let values: Vec<u64> = rows
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .collect();
    let lo = values.iter().copied().min().unwrap_or(1).max(1) as f64;
    let hi = values.iter().copied().max().unwrap_or(1).max(2) as f64;
    let (lo, hi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let (label_w, bar_w, bar_h, group_h) = (190.0, 560.0, 7.0, 30.0);
    let height = 50.0 + group_h * rows.len() as f64;
    let scale = |v: u64| bar_w * (((v.max(1) as f64).log10() - lo) / (hi - lo)).clamp(0.0, 1.0);
    let _ = write!(
        s,
        "<svg id=\"latency\" width=\"880\" height=\"{height}\" viewBox=\"0 0 880 {height}\" \
         role=\"img\" aria-label=\"latency\">"
    );
    for (i, (name, colour)) in [
        ("thread", THREAD),
        ("process", PROCESS),
        ("raw socket", RAW),
    ]
    .into_iter()
    .enumerate()
    {
        let x = label_w + 110.0 * i as f64;
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"4\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"15\">{name}</text>",
            x + 16.0
        );
    }
    // Decades.
    let mut d = lo;
    while d <= hi {
        let x = label_w + bar_w * (d - lo) / (hi - lo);
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"24\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            height - 16.0,
            height - 4.0,
            ns(10f64.powf(d) as u64)
        );
        d += 1.0;
    }
    for (i, (label, vals)) in rows.iter().enumerate() {
        let y = 28.0 + group_h * i as f64;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            label_w - 8.0,
            y + 15.0,
            esc(label)
        );
        for (j, (v, colour)) in vals.iter().zip([THREAD, PROCESS, RAW]).enumerate() {
            if let Some(v) = v {
                let _ = write!(
                    s,
                    "<rect x=\"{label_w}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar_h}\" \
                     fill=\"{colour}\"><title>{}</title></rect>",
                    y + 2.0 + (bar_h + 1.0) * j as f64,
                    scale(*v),
                    ns(*v)
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// Grouped bars: tasks per second by chunk size, thread and process.
fn throughput(r: &Report) -> String {
    let mut s = String::from(
        "<h2>map throughput by chunk size</h2>\
         <p class=\"note\">Tasks per second of <code>map(Square).chunksize(c)</code>; \
         <i>auto</i>: <code>map(Square)</code> with no chunksize, the map picks.</p>",
    );
    if r.chunksize.is_empty() {
        s.push_str("<p>No chunk size sweep in this run.</p>");
        return s;
    }
    let max = r
        .chunksize
        .iter()
        .map(|c| c.thread.tasks_per_sec.max(c.process.tasks_per_sec))
        .fold(1.0, f64::max);
    let (left, plot_h, group_w) = (80.0, 240.0, 120.0);
    let width = left + group_w * r.chunksize.len() as f64 + 20.0;
    let height = plot_h + 70.0;
    let _ = write!(
        s,
        "<svg id=\"throughput\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"throughput\">"
    );
    for (i, (name, colour)) in [("thread", THREAD), ("process", PROCESS)]
        .into_iter()
        .enumerate()
    {
        let x = left + 110.0 * i as f64;
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"4\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"15\">{name}</text>",
            x + 16.0
        );
    }
    let base = 30.0 + plot_h;
    for k in 0..=4 {
        let v = max * f64::from(k) / 4.0;
        let y = base - plot_h * f64::from(k) / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            width - 10.0,
            left - 6.0,
            y + 4.0,
            fmt_rate(v)
        );
    }
    for (i, c) in r.chunksize.iter().enumerate() {
        let x0 = left + group_w * i as f64 + 20.0;
        for (j, (v, colour)) in [
            (c.thread.tasks_per_sec, THREAD),
            (c.process.tasks_per_sec, PROCESS),
        ]
        .into_iter()
        .enumerate()
        {
            let h = plot_h * v / max;
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"36\" height=\"{h:.1}\" fill=\"{colour}\">\
                 <title>{}</title></rect>",
                x0 + 40.0 * j as f64,
                base - h,
                fmt_rate(v)
            );
        }
        let label = crate::sweep::chunk_label(c.chunksize);
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            x0 + 38.0,
            base + 18.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">chunksize</text></svg>",
        left + (width - left) / 2.0,
        base + 38.0
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overhead::{Kind, Latency, Machine, PayloadRow, ProcessLatency, Settings};
    use crate::sweep::{ChunkRow, Throughput};

    fn report() -> Report {
        let payload = |size: u64, kind: Kind, us: u64| PayloadRow {
            size,
            kind,
            wire_bytes: Some(size + 8),
            thread: Some(Latency {
                reps: 10,
                median_ns: us * 100,
            }),
            process: Some(ProcessLatency {
                reps: 10,
                median_ns: us * 1000,
                cost_total_ns: us * 1000,
                encode_ns: us * 300,
                decode_ns: us * 200,
                ipc_ns: us * 400,
                run_ns: us * 50,
                queue_wait_ns: us * 50,
                serialization_ns: us * 500,
                serialization_share: 0.5,
            }),
            process_vs_raw: Some(1.5),
            process_vs_thread: Some(10.0),
            skipped: None,
        };
        let tp = |per_sec: f64| Throughput {
            tasks: 1000,
            seconds: 1000.0 / per_sec,
            tasks_per_sec: per_sec,
        };
        Report {
            command: "procpool overhead --html <x>".into(),
            machine: Machine {
                logical_cpus: 2,
                cpu_model: Some("Test CPU & <co>".into()),
            },
            settings: Settings {
                workers: 2,
                quick: true,
                transport: "local".into(),
                release_build: true,
            },
            raw: vec![RawRow {
                size: 16,
                reps: 10,
                median_ns: 20_000,
                looking_median_ns: 12_000,
            }],
            payloads: vec![
                payload(16, Kind::Echo, 30),
                payload(1 << 20, Kind::EchoVec, 9000),
            ],
            chunksize: vec![
                ChunkRow {
                    chunksize: 1,
                    thread: tp(200_000.0),
                    process: tp(60_000.0),
                    process_vs_thread: 0.3,
                    local: None,
                    process_vs_local: None,
                },
                ChunkRow {
                    chunksize: 256,
                    thread: tp(900_000.0),
                    process: tp(500_000.0),
                    process_vs_thread: 0.55,
                    local: None,
                    process_vs_local: None,
                },
                ChunkRow {
                    chunksize: crate::sweep::AUTO,
                    thread: tp(950_000.0),
                    process: tp(480_000.0),
                    process_vs_thread: 0.5,
                    local: None,
                    process_vs_local: None,
                },
            ],
            advice: vec!["mark byte fields with serde_bytes".into()],
            known_issues: vec![],
            wall_time_s: 3.2,
        }
    }

    #[test]
    fn the_page_is_self_contained_with_three_charts() {
        let page = render(&report());
        assert!(page.starts_with("<!DOCTYPE html>"));
        for id in ["stacked", "latency", "throughput"] {
            assert!(
                page.contains(&format!("<svg id=\"{id}\"")),
                "chart {id} missing"
            );
        }
        assert!(!page.contains("<script"), "no script");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "nothing fetched"
        );
        // Text from the report is escaped.
        assert!(page.contains("Test CPU &amp; &lt;co&gt;"));
        assert!(page.contains("--html &lt;x&gt;"));
        // Two payload rows, five parts each: ten stacked segments.
        let stacked =
            &page[page.find("id=\"stacked\"").unwrap()..page.find("id=\"latency\"").unwrap()];
        assert_eq!(stacked.matches("<title>").count(), 10);
        // Each stacked bar adds up to the full width (560 px).
        let widths: f64 = stacked
            .split("<rect ")
            .filter(|r| r.contains("height=\"20\""))
            .filter_map(|r| {
                r.split("width=\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .sum();
        assert!((widths - 2.0 * 560.0).abs() < 1.0, "{widths}");
        // Throughput: the larger rate is the full plot height.
        assert!(page.contains("height=\"240.0\""), "tallest bar");
        // The auto row is a group of its own, labelled.
        let throughput = &page[page.find("id=\"throughput\"").unwrap()..];
        assert!(throughput.contains(">auto</text>"), "{throughput}");
        assert!(page.contains("mark byte fields"));
    }
}
