//! A chart of runs, written by hand as SVG (or SVG inside a small HTML page): throughput per
//! scenario and broker (the median of rounds; each scenario scaled on its own, since units
//! differ), latency percentiles p50/p99/p99.9/max of every run on one log axis, and memory per
//! idle connection.

use crate::median;
use crate::report::{rate, Run};
use std::fmt::Write as _;
use std::path::Path;

/// Writes the chart of `runs` to `path`: HTML if it ends in `.html`, SVG otherwise.
pub fn write(path: &Path, title: &str, runs: &[Run]) -> Result<(), String> {
    let svg = svg(title, runs);
    let html = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("html"));
    let text = if html {
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body style=\"margin:0;background:#fff\">\n{svg}</body></html>\n",
            escape(title)
        )
    } else {
        svg
    };
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The chart as an SVG document.
pub fn svg(title: &str, runs: &[Run]) -> String {
    let brokers = distinct(runs.iter().map(|r| r.broker.as_str()));
    let mut body = String::new();
    let mut y = 40.0;
    let _ = writeln!(
        body,
        r#"<text x="{MARGIN}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        escape(title)
    );
    y = legend(&mut body, y, &brokers);
    y = throughput(&mut body, y, runs, &brokers);
    y = latency(&mut body, y, runs);
    y = memory(&mut body, y, runs, &brokers);
    let height = y + 20.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

const WIDTH: f64 = 1040.0;
const MARGIN: f64 = 16.0;
/// Where bars start: labels go left of it.
const BARS_X: f64 = 300.0;
/// Bar length for the largest value; the value text goes right of the bar.
const BARS_WIDTH: f64 = 520.0;
const BAR_HEIGHT: f64 = 12.0;

/// Broker colours, in order of first appearance.
const COLOURS: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"];
/// p50, p99, p99.9, max.
const PERCENTILE_COLOURS: [&str; 4] = ["#9ecae1", "#4292c6", "#08519c", "#d62728"];

/// Scenarios whose rate is an input, not a result: left out of the throughput panel.
fn paced(run: &Run) -> bool {
    matches!(run.measurement.scenario, "nats-latency" | "mqtt-latency" | "idle-connections")
}

fn legend(out: &mut String, y: f64, brokers: &[&str]) -> f64 {
    let mut x = MARGIN;
    for (i, broker) in brokers.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            y - 10.0,
            COLOURS[i % COLOURS.len()],
            x + 16.0,
            y,
            escape(broker)
        );
        x += 24.0 + 7.0 * broker.len() as f64;
    }
    y + 14.0
}

fn heading(out: &mut String, y: f64, text: &str) -> f64 {
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        y + 28.0,
        escape(text)
    );
    y + 40.0
}

fn throughput(out: &mut String, mut y: f64, runs: &[Run], brokers: &[&str]) -> f64 {
    let rated: Vec<&Run> =
        runs.iter().filter(|r| !paced(r) && r.measurement.throughput.is_some()).collect();
    if rated.is_empty() {
        return y;
    }
    y = heading(out, y, "Throughput (median of rounds; each scenario scaled to its best)");
    for label in distinct(rated.iter().map(|r| r.label.as_str())) {
        let cells: Vec<(usize, f64, &'static str, bool)> = brokers
            .iter()
            .enumerate()
            .filter_map(|(b, broker)| {
                let of: Vec<&&Run> =
                    rated.iter().filter(|r| r.label == label && r.broker == *broker).collect();
                let values =
                    of.iter().filter_map(|r| r.measurement.throughput.map(|t| t.per_s)).collect();
                let unit = of.first()?.measurement.throughput?.unit;
                let lossy = of.iter().any(|r| r.measurement.lossy());
                Some((b, median(values)?, unit, lossy))
            })
            .collect();
        let best = cells.iter().map(|c| c.1).fold(0.0, f64::max);
        let top = y;
        for (b, value, unit, lossy) in &cells {
            let length = if best > 0.0 { value / best * BARS_WIDTH } else { 0.0 };
            let mark = if *lossy { " (lossy)" } else { "" };
            bar(
                out,
                y,
                length,
                COLOURS[b % COLOURS.len()],
                &format!("{} {unit}{mark}", rate(*value)),
            );
            y += BAR_HEIGHT + 2.0;
        }
        label_left(out, (top + y) / 2.0, label);
        y += 8.0;
    }
    y
}

fn latency(out: &mut String, mut y: f64, runs: &[Run]) -> f64 {
    let mut timed: Vec<&Run> = runs.iter().filter(|r| r.measurement.latency.is_some()).collect();
    // Grouped by scenario, then broker, then round, so the brokers of one scenario are adjacent.
    let labels = distinct(runs.iter().map(|r| r.label.as_str()));
    let brokers = distinct(runs.iter().map(|r| r.broker.as_str()));
    let rank = |r: &Run| {
        let label = labels.iter().position(|l| *l == r.label);
        (label, brokers.iter().position(|b| *b == r.broker), r.round)
    };
    timed.sort_by_key(|r| rank(r));
    if timed.is_empty() {
        return y;
    }
    y = heading(out, y, "Latency per run, microseconds (log scale)");
    let mut x = MARGIN;
    for (name, colour) in ["p50", "p99", "p99.9", "max"].iter().zip(PERCENTILE_COLOURS) {
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}">{name}</text>"#,
            y - 10.0,
            x + 16.0,
            y
        );
        x += 64.0;
    }
    y += 10.0;
    let largest =
        timed.iter().filter_map(|r| r.measurement.latency.map(|l| l.max_us)).max().unwrap_or(1);
    let decades = ((largest.max(10) as f64).log10().ceil()).max(1.0);
    let scale = |us: u64| (us.max(1) as f64).log10() / decades * BARS_WIDTH;
    let axis_top = y;
    for run in &timed {
        let l = run.measurement.latency.expect("filtered");
        let top = y;
        for (value, colour) in
            [l.p50_us, l.p99_us, l.p999_us, l.max_us].iter().zip(PERCENTILE_COLOURS)
        {
            let _ = writeln!(
                out,
                r#"<rect x="{BARS_X}" y="{y}" width="{:.1}" height="4" fill="{colour}"/>"#,
                scale(*value).max(1.0)
            );
            y += 4.0;
        }
        let text = format!("{} / {} / {} / {} us", l.p50_us, l.p99_us, l.p999_us, l.max_us);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{text}</text>"#,
            BARS_X + scale(l.max_us) + 6.0,
            top + 12.0
        );
        label_left(out, top + 8.0, &format!("{} · {} · r{}", run.label, run.broker, run.round));
        y += 6.0;
    }
    // Decade grid lines and their labels under the bars.
    for decade in 0..=decades as u32 {
        let x = BARS_X + decade as f64 / decades * BARS_WIDTH;
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{axis_top}" x2="{x}" y2="{y}" stroke="#ccc" stroke-width="0.5"/><text x="{x}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
            y + 12.0,
            10u64.pow(decade)
        );
    }
    y + 18.0
}

fn memory(out: &mut String, mut y: f64, runs: &[Run], brokers: &[&str]) -> f64 {
    let measured: Vec<&Run> = runs.iter().filter(|r| r.measurement.memory.is_some()).collect();
    if measured.is_empty() {
        return y;
    }
    y = heading(out, y, "Broker memory per idle connection, KiB (steady rounds; median)");
    let value = |r: &Run| r.measurement.memory.as_ref().map(|m| m.total_kib()).unwrap_or(0.0);
    let best = measured.iter().map(|r| value(r)).fold(0.0, f64::max);
    for label in distinct(measured.iter().map(|r| r.label.as_str())) {
        let top = y;
        for (b, broker) in brokers.iter().enumerate() {
            let values: Vec<f64> = measured
                .iter()
                .filter(|r| r.label == label && r.broker == *broker)
                .map(|r| value(r))
                .collect();
            let Some(kib) = median(values) else { continue };
            let length = if best > 0.0 { kib.max(0.0) / best * BARS_WIDTH } else { 0.0 };
            bar(out, y, length, COLOURS[b % COLOURS.len()], &format!("{kib:.2} KiB"));
            y += BAR_HEIGHT + 2.0;
        }
        label_left(out, (top + y) / 2.0, label);
        y += 8.0;
    }
    y
}

fn bar(out: &mut String, y: f64, length: f64, colour: &str, text: &str) {
    let _ = writeln!(
        out,
        r#"<rect x="{BARS_X}" y="{y}" width="{:.1}" height="{BAR_HEIGHT}" fill="{colour}"/><text x="{:.1}" y="{}">{}</text>"#,
        length.max(1.0),
        BARS_X + length + 6.0,
        y + 10.0,
        escape(text)
    );
}

fn label_left(out: &mut String, middle: f64, text: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
        BARS_X - 8.0,
        middle + 4.0,
        escape(text)
    );
}

/// Values in order of first appearance, without repeats.
fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for value in values {
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Latency, Measurement, Throughput};

    #[test]
    fn draws_every_panel_and_escapes_labels() {
        let measurement = Measurement {
            scenario: "nats-pubsub",
            parameters: Default::default(),
            throughput: Some(Throughput {
                delivered: 10,
                expected: 10,
                duplicates: 0,
                per_s: 1e6,
                unit: "msgs/s",
                elapsed_s: 1.0,
            }),
            latency: Some(Latency {
                p50_us: 30,
                p99_us: 90,
                p999_us: 400,
                max_us: 2000,
                max_at_ms: None,
            }),
            memory: None,
            extra: Default::default(),
        };
        let run = Run { broker: "a&b".into(), label: "nats 1->1".into(), round: 1, measurement };
        let svg = svg("t", &[run]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("a&amp;b"));
        assert!(svg.contains("nats 1-&gt;1"));
        assert!(svg.contains("Throughput"));
        assert!(svg.contains("Latency"));
        assert!(!svg.contains("memory per idle"));
    }
}
