//! Small numeric helpers: medians, and human-readable durations, sizes and
//! rates for the report.

use std::time::Duration;

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when empty. Sorts a copy, so the caller's order is kept.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The median duration of `values` (zero when empty), nanosecond precision.
pub fn median_duration(values: &[Duration]) -> Duration {
    let ns: Vec<f64> = values.iter().map(|d| d.as_nanos() as f64).collect();
    median(&ns).map_or(Duration::ZERO, |m| Duration::from_nanos(m.round() as u64))
}

/// `value` with about three significant digits.
fn sig3(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// A duration as a person reads it: `840 ns`, `12.3 µs`, `1.24 ms`, `2.10 s`.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{} µs", sig3(ns / 1e3))
    } else if ns < 1_000_000_000.0 {
        format!("{} ms", sig3(ns / 1e6))
    } else {
        format!("{} s", sig3(ns / 1e9))
    }
}

/// A byte count in binary units: `16 B`, `1 KiB`, `1.5 MiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if (value - value.round()).abs() < 0.005 {
        format!("{value:.0} {unit}")
    } else {
        format!("{} {unit}", sig3(value))
    }
}

/// A rate per second: `950/s`, `12.3 k/s`, `1.20 M/s`.
pub fn fmt_rate(per_sec: f64) -> String {
    if per_sec < 1_000.0 {
        format!("{per_sec:.0}/s")
    } else if per_sec < 1_000_000.0 {
        format!("{} k/s", sig3(per_sec / 1e3))
    } else {
        format!("{} M/s", sig3(per_sec / 1e6))
    }
}

/// A ratio: `3.4×`, `0.21×`, `120×`; below 0.1 with two significant
/// digits (`0.0039×`, not `0.00×`).
pub fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        return "-".into();
    }
    if r > 0.0 && r < 0.1 {
        let decimals = (1 - r.log10().floor() as i32).clamp(2, 8) as usize;
        return format!("{r:.decimals$}×");
    }
    format!("{}×", sig3(r))
}

/// A share in percent, no decimals below 100 except under 1 %.
pub fn fmt_percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if !p.is_finite() {
        "-".into()
    } else if p < 1.0 && p > 0.0 {
        format!("{p:.1} %")
    } else {
        format!("{p:.0} %")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        let d = [
            Duration::from_micros(9),
            Duration::from_micros(1),
            Duration::from_micros(5),
        ];
        assert_eq!(median_duration(&d), Duration::from_micros(5));
        assert_eq!(median_duration(&[]), Duration::ZERO);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(Duration::from_nanos(840)), "840 ns");
        assert_eq!(fmt_duration(Duration::from_nanos(12_345)), "12.3 µs");
        assert_eq!(fmt_duration(Duration::from_nanos(1_240_000)), "1.24 ms");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(fmt_duration(Duration::from_millis(2_100)), "2.10 s");
    }

    #[test]
    fn sizes_rates_ratios() {
        assert_eq!(fmt_bytes(16), "16 B");
        assert_eq!(fmt_bytes(1024), "1 KiB");
        assert_eq!(fmt_bytes(64 << 10), "64 KiB");
        assert_eq!(fmt_bytes(1 << 20), "1 MiB");
        assert_eq!(fmt_bytes(16 << 20), "16 MiB");
        assert_eq!(fmt_bytes(1536), "1.50 KiB");
        assert_eq!(fmt_rate(950.0), "950/s");
        assert_eq!(fmt_rate(12_345.0), "12.3 k/s");
        assert_eq!(fmt_rate(1_200_000.0), "1.20 M/s");
        assert_eq!(fmt_ratio(3.44), "3.44×");
        assert_eq!(fmt_ratio(120.4), "120×");
        assert_eq!(fmt_ratio(0.25), "0.25×");
        assert_eq!(fmt_ratio(0.0039), "0.0039×");
        assert_eq!(fmt_ratio(0.05), "0.050×");
        assert_eq!(fmt_ratio(0.0), "0.00×");
        assert_eq!(fmt_ratio(f64::NAN), "-");
        assert_eq!(fmt_percent(0.41), "41 %");
        assert_eq!(fmt_percent(0.004), "0.4 %");
        assert_eq!(fmt_percent(0.0), "0 %");
    }
}
