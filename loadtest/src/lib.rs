//! Scenarios of `isthmus-loadtest`, usable from tests. Each talks to a broker only over TCP, is
//! bounded by a message (or connection) count and a time limit, and returns a [`Measurement`];
//! [`Measurement::complete`] turns a lost or duplicated message into an error. Printing (the
//! human table, `json:` lines, charts) is the caller's: see [`report`] and [`chart`].
//!
//! Modules, in reading order: the two wire clients ([`nats`], [`mqtt`]), the scenarios
//! ([`pubsub`], [`latency`], [`request`], [`connections`]), then the outputs ([`progress`],
//! [`report`], [`chart`]) and [`compare`], which runs everything against several brokers.

pub mod chart;
pub mod compare;
pub mod connections;
pub mod latency;
pub mod mqtt;
pub mod nats;
pub mod progress;
pub mod pubsub;
pub mod report;
pub mod request;

pub use connections::{idle, storm, Idle, Protocol, Storm};
pub use latency::{mqtt_latency, nats_latency, Pace};
pub use pubsub::{mqtt_pubsub, mqtt_to_nats, nats_pubsub, nats_queue, nats_to_mqtt, Shape};
pub use request::{request_reply, Requests};

use serde_json::{Map, Value};
use std::sync::OnceLock;

/// What every client of this process presents when it connects, for brokers that require a
/// token: the MQTT CONNECT username and password, the NATS CONNECT `user` and `auth_token`.
/// Process-wide (see [`set_credentials`]) so that every scenario, and the [`Shape`] and other
/// option structs callers build, stay as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// MQTT username, NATS `user`.
    pub username: String,
    /// The token (a JWT for Isthmus): MQTT password, NATS `auth_token`.
    pub token: String,
}

static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();

/// Makes every later connection of this process send `credentials` (set once; without it,
/// clients connect anonymously).
pub fn set_credentials(credentials: Credentials) -> Result<(), String> {
    CREDENTIALS.set(credentials).map_err(|_| "credentials are already set".to_string())
}

/// The credentials connections send, if [`set_credentials`] was called.
pub fn credentials() -> Option<&'static Credentials> {
    CREDENTIALS.get()
}

/// What one run of a scenario measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// The scenario's name, as on the command line (`nats-pubsub`, `mqtt-latency`, ...).
    pub scenario: &'static str,
    /// The options the run used (counts, sizes, QoS, window, ...).
    pub parameters: Map<String, Value>,
    /// Messages (requests, connections) per second, and whether all of them arrived.
    pub throughput: Option<Throughput>,
    /// Latency percentiles, for scenarios that time single messages or handshakes.
    pub latency: Option<Latency>,
    /// The broker's memory per connection, for the idle-connection scenario.
    pub memory: Option<Memory>,
    /// Further results of one scenario, merged into [`Measurement::results`]: e.g.
    /// `delivered_qos_max`, the highest QoS an MQTT subscriber was delivered at (a broker may
    /// deliver below the subscription's QoS, as nats-server does for NATS publishes).
    pub extra: Map<String, Value>,
}

impl Measurement {
    /// The run, or an error if any message was lost or arrived twice.
    pub fn complete(self) -> Result<Measurement, String> {
        match &self.throughput {
            Some(t) if t.delivered != t.expected => Err(format!(
                "{}: delivered {} of {} {}",
                self.scenario,
                t.delivered,
                t.expected,
                t.unit.trim_end_matches("/s")
            )),
            Some(t) if t.duplicates > 0 => {
                Err(format!("{}: {} duplicate deliveries", self.scenario, t.duplicates))
            }
            _ => Ok(self),
        }
    }

    /// Whether some message was lost or duplicated (a run that finished, but not cleanly).
    pub fn lossy(&self) -> bool {
        self.throughput.as_ref().is_some_and(|t| t.delivered != t.expected || t.duplicates > 0)
    }

    /// The results as a JSON object (the `results` of a `json:` line).
    pub fn results(&self) -> Value {
        let mut results = Map::new();
        if let Some(t) = &self.throughput {
            results.insert("delivered".into(), t.delivered.into());
            results.insert("expected".into(), t.expected.into());
            results.insert("duplicates".into(), t.duplicates.into());
            results.insert("elapsed_s".into(), round(t.elapsed_s, 6).into());
            results.insert("per_s".into(), t.per_s.round().into());
            results.insert("unit".into(), t.unit.into());
        }
        if let Some(l) = &self.latency {
            results.insert("p50_us".into(), l.p50_us.into());
            results.insert("p99_us".into(), l.p99_us.into());
            results.insert("p999_us".into(), l.p999_us.into());
            results.insert("max_us".into(), l.max_us.into());
            if let Some(at) = l.max_at_ms {
                results.insert("max_at_ms".into(), at.into());
            }
        }
        if let Some(m) = &self.memory {
            results.insert("connections_per_round".into(), m.connections.into());
            let rounds: Vec<Value> =
                m.kib_per_connection.iter().map(|k| round(*k, 2).into()).collect();
            results.insert("kib_per_connection".into(), rounds.into());
            results.insert("steady_kib_per_connection".into(), round(m.steady_kib(), 2).into());
            results.insert("total_kib_per_connection".into(), round(m.total_kib(), 2).into());
            results.insert("rss_before_kib".into(), m.rss_before_kib.into());
            results.insert("rss_after_kib".into(), m.rss_after_kib.into());
        }
        results.extend(self.extra.clone());
        Value::Object(results)
    }

    /// The highest QoS MQTT subscribers were delivered at, when it is below what they asked
    /// for (`subscribe_qos` or `qos`).
    pub fn downgraded_qos(&self) -> Option<u64> {
        let asked = self.parameters.get("subscribe_qos").or(self.parameters.get("qos"))?;
        let got = self.extra.get("delivered_qos_max")?.as_u64()?;
        (got < asked.as_u64()?).then_some(got)
    }
}

/// What a throughput run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throughput {
    /// Distinct messages (replies, handshakes) that arrived, all receivers together.
    pub delivered: u64,
    /// How many should have arrived.
    pub expected: u64,
    /// Deliveries of a message that had already arrived (at the same subscriber, or anywhere in
    /// a queue group).
    pub duplicates: u64,
    /// Delivered per second, up to the last delivery.
    pub per_s: f64,
    /// What `per_s` counts: `msgs/s`, `replies/s`, `conns/s`.
    pub unit: &'static str,
    /// Seconds from the first send to the last delivery.
    pub elapsed_s: f64,
}

/// What a latency run measured, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// When the slowest message was due to be sent, ms after the schedule began (warm-up
    /// included), where the scenario knows it: tells a one-off stall at a fixed point of
    /// every run (a timer, a state change) from one that wanders.
    pub max_at_ms: Option<u64>,
}

impl Latency {
    /// The percentiles of a histogram recorded in microseconds.
    pub fn of(histogram: &hdrhistogram::Histogram<u64>) -> Latency {
        let q = |p: f64| histogram.value_at_quantile(p);
        Latency {
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: histogram.max(),
            max_at_ms: None,
        }
    }
}

/// The broker's resident memory growth per idle connection, in rounds of the same size.
#[derive(Clone, Debug, PartialEq)]
pub struct Memory {
    /// Connections opened in each round.
    pub connections: u64,
    /// RSS growth per connection in each round, KiB; the first round also pays for one-time
    /// growth of the broker's pools and heaps.
    pub kib_per_connection: Vec<f64>,
    /// The broker's VmRSS before the first round, KiB.
    pub rss_before_kib: u64,
    /// Its VmRSS after the last round, KiB.
    pub rss_after_kib: u64,
}

impl Memory {
    /// The steady cost: the median of the rounds after the first (the only round if one).
    pub fn steady_kib(&self) -> f64 {
        let later = if self.kib_per_connection.len() > 1 {
            &self.kib_per_connection[1..]
        } else {
            &self.kib_per_connection[..]
        };
        median(later.to_vec()).unwrap_or(0.0)
    }

    /// The all-in cost: the whole RSS growth over every connection opened, one-time growth
    /// included. Brokers that hold more per connection while it is new (Isthmus until its
    /// connections go dormant) show it here and not in [`Memory::steady_kib`].
    pub fn total_kib(&self) -> f64 {
        let opened = self.connections * self.kib_per_connection.len() as u64;
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) / opened.max(1) as f64
    }
}

/// The median of some values (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

/// A run id unique in this process, for client ids, inboxes and subjects: nats-server delays a
/// client id that reconnects within a second of its last connection (its "flapper" rule), which
/// would stall back-to-back runs.
fn run_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RUNS: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed))
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// A string error for `?` on I/O.
fn io_error(error: std::io::Error) -> String {
    error.to_string()
}
