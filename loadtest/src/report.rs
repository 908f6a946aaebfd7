//! Reporting runs: one `json:` line per run for machines, and a human table at the end.
//! Shapes: `json: {"scenario", "label", "broker", "round", "parameters": {...}, "results": {...}}`
//! with the results of [`Measurement::results`].

use crate::Measurement;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// One run as reported: which broker it ran against, under which label, in which round.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// The broker: its name in `compare`, its address (or `--broker`) otherwise.
    pub broker: String,
    /// What the run is called in tables and charts (`compare`'s scenario name, or the
    /// scenario's own).
    pub label: String,
    /// 1-based round (always 1 outside `compare`).
    pub round: usize,
    /// What it measured.
    pub measurement: Measurement,
}

impl Run {
    /// The run as one JSON object.
    pub fn json(&self) -> Value {
        json!({
            "scenario": self.measurement.scenario,
            "label": self.label,
            "broker": self.broker,
            "round": self.round,
            "parameters": Value::Object(self.measurement.parameters.clone()),
            "results": self.measurement.results(),
        })
    }

    /// The `json: {...}` line.
    pub fn json_line(&self) -> String {
        format!("json: {}", self.json())
    }
}

/// A plain-text table of runs, one line each, columns padded to fit.
pub fn table(runs: &[Run]) -> String {
    let header = [
        "scenario",
        "broker",
        "round",
        "rate",
        "delivered",
        "p50_us",
        "p99_us",
        "p99.9_us",
        "max_us",
        "KiB/conn",
        "parameters",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for run in runs {
        let m = &run.measurement;
        let (rate, delivered) = match &m.throughput {
            Some(t) => {
                let mut delivered = format!("{}/{}", t.delivered, t.expected);
                if t.duplicates > 0 {
                    delivered.push_str(&format!(" +{} dup", t.duplicates));
                }
                (format!("{} {}", rate(t.per_s), t.unit), delivered)
            }
            None => ("-".into(), "-".into()),
        };
        let latency = |f: fn(&crate::Latency) -> u64| {
            m.latency.as_ref().map_or("-".into(), |l| f(l).to_string())
        };
        let memory = m.memory.as_ref().map_or("-".into(), |mem| {
            let rounds: Vec<String> =
                mem.kib_per_connection.iter().map(|k| format!("{k:.1}")).collect();
            format!("{:.2} all-in ({})", mem.total_kib(), rounds.join(", "))
        });
        // Parameters, then further results such as delivered_qos_max.
        let parameters: Vec<String> = m
            .parameters
            .iter()
            .chain(m.extra.iter())
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string)))
            .collect();
        rows.push(vec![
            run.label.clone(),
            run.broker.clone(),
            run.round.to_string(),
            rate,
            delivered,
            latency(|l| l.p50_us),
            latency(|l| l.p99_us),
            latency(|l| l.p999_us),
            latency(|l| l.max_us),
            memory,
            parameters.join(" "),
        ]);
    }
    let columns = header.len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            // Text left, numbers right; the last column is not padded.
            let pad = widths[c].saturating_sub(cell.chars().count());
            if c == columns - 1 {
                line.push_str(cell);
            } else if c < 3 {
                let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
            } else {
                let _ = write!(line, "{}{cell}  ", " ".repeat(pad));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// A rate with a unit prefix: `812`, `45.3 k`, `2.31 M`.
pub fn rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M", per_s / 1e6)
    } else if per_s >= 1e4 {
        format!("{:.1} k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}
