//! `isthmus-loadtest`: a wire-level load generator for NATS and MQTT brokers. It talks to
//! brokers only over TCP, so it drives Isthmus, nats-server and mosquitto the same way. Every
//! run is bounded by a message (or connection) count and a time limit and targets loopback
//! unless told otherwise.
//!
//! Scenarios:
//! - `nats-pubsub`: P publishers -> K subscribers on one subject (1->1, fan-out, fan-in).
//! - `nats-queue`: P publishers -> K subscribers in one queue group; every message must reach
//!   exactly one member.
//! - `nats-request`: R requesters (own inbox, windowed) -> S responders in a queue group;
//!   replies/s and round-trip percentiles.
//! - `nats-latency`, `mqtt-latency`: one message stream at a fixed rate; hdrhistogram
//!   percentiles corrected for coordinated omission (the intended send time is in the payload).
//! - `mqtt-pubsub`: MQTT 3.1.1 at QoS 0, 1 or 2 (PUBACK; PUBREC/PUBREL/PUBCOMP both ways),
//!   publishers with an inflight window.
//! - `mqtt-to-nats`, `nats-to-mqtt`: MQTT publishers on `bench/x` -> NATS subscribers on
//!   `bench.x`, and back (only brokers that bridge the two, e.g. Isthmus and nats-server).
//! - `connection-storm`: N NATS or MQTT handshakes, C at a time; connects/s and percentiles.
//! - `idle-connections`: rounds of N idle connections (pinged on schedule, spread over
//!   127.0.0.x sources); the broker's RSS per connection from `/proc/<pid>/status`.
//! - `compare`: starts Isthmus, nats-server and mosquitto and runs all of the above against
//!   each, in interleaved rounds, with medians and ratios.
//!
//! Against a broker that requires a token, `--token T` (and `--username U`) makes every client
//! send it: the MQTT CONNECT password, the NATS CONNECT `auth_token`.
//!
//! Every run prints a human table and one `json: {...}` line; `--chart FILE.svg` (or `.html`)
//! draws throughput, latency percentiles and memory. Progress bars go to stderr when it is a
//! terminal. A run that loses or duplicates a message exits with status 1.

use clap::{Args, Parser, Subcommand};
use isthmus_loadtest::report::{table, Run};
use isthmus_loadtest::{
    compare, connections, latency, pubsub, request, Credentials, Idle, Measurement, Pace, Protocol,
    Requests, Shape, Storm,
};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "isthmus-loadtest", about = "Wire-level load generator for NATS and MQTT brokers")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Draw the run(s) to this file: SVG, or HTML if it ends in .html (compare: every run).
    #[arg(long, global = true)]
    chart: Option<PathBuf>,
    /// The broker's name in the table, JSON and chart (default: its address; compare names
    /// its own).
    #[arg(long, global = true)]
    broker: Option<String>,
    #[command(flatten)]
    credentials: CredentialArgs,
}

/// What every client presents at CONNECT, for brokers that require a token (Isthmus
/// `[auth.jwt]`: the MQTT password, the NATS `auth_token`). Every scenario but compare.
#[derive(Args)]
struct CredentialArgs {
    /// Token every client sends: MQTT CONNECT password (with --username), NATS CONNECT
    /// `auth_token` (with `user`). Default: none, anonymous clients.
    #[arg(long, global = true)]
    token: Option<String>,
    /// MQTT CONNECT username, NATS CONNECT `user`; only sent with --token.
    #[arg(long, global = true, default_value = "loadtest")]
    username: String,
}

/// Publishers, subscribers, counts: the shape of a publish/subscribe run.
#[derive(Args)]
struct ShapeArgs {
    /// Messages per publisher.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Payload bytes (from 8 up the payload carries a sequence number, so losses and
    /// duplicates are counted exactly).
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscriber connections.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
}

impl ShapeArgs {
    fn shape(&self) -> Shape {
        Shape {
            messages: self.messages,
            size: self.size,
            publishers: self.publishers,
            subscribers: self.subscribers,
            limit: Duration::from_secs(self.timeout_s),
        }
    }
}

/// A fixed-rate stream.
#[derive(Args)]
struct PaceArgs {
    /// Messages to record.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Messages per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Send at the rate for this long first, without recording (the first few hundred ms
    /// across cores are slow on VMs that park idle vCPUs).
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
    /// Payload bytes (at least 8: the intended send time travels in the payload).
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
    /// Write each recorded message's intended send time (ns after the run's start) and
    /// latency (µs) to this file, one line each, after a `start_unix_ns N` line: to find
    /// stalls and line them up with `perf record -k realtime` (tuning/README.md).
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
}

impl PaceArgs {
    fn pace(&self) -> Pace {
        Pace {
            messages: self.messages,
            warmup: self.rate * self.warmup_ms / 1000,
            rate: self.rate,
            size: self.size,
            limit: Duration::from_secs(self.timeout_s),
            trace: self.trace.clone(),
        }
    }
}

const NATS: &str = "127.0.0.1:4222";
const MQTT: &str = "127.0.0.1:1883";

#[derive(Subcommand)]
enum Scenario {
    /// NATS publishers -> subscribers on one subject (1->1, fan-out 1->K, fan-in K->1).
    NatsPubsub {
        /// Broker address.
        #[arg(long, default_value = NATS)]
        addr: String,
        #[command(flatten)]
        shape: ShapeArgs,
        /// Subscribe to this filter instead of the subject `loadtest.pubsub` (it must match
        /// it; e.g. `loadtest.>`).
        #[arg(long)]
        subscribe: Option<String>,
    },
    /// NATS publishers -> K subscribers in one queue group: each message exactly once across
    /// the group (fails on a loss or a duplicate).
    NatsQueue {
        /// Broker address.
        #[arg(long, default_value = NATS)]
        addr: String,
        #[command(flatten)]
        shape: ShapeArgs,
    },
    /// NATS request/reply: requesters with their own inboxes and a window of outstanding
    /// requests, responders in one queue group; replies/s and round-trip percentiles.
    NatsRequest {
        /// Broker address.
        #[arg(long, default_value = NATS)]
        addr: String,
        /// Requests per requester.
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        /// Payload bytes (at least 16).
        #[arg(long, default_value_t = 16)]
        size: usize,
        /// Requester connections.
        #[arg(long, default_value_t = 1)]
        requesters: usize,
        /// Responder connections (one queue group).
        #[arg(long, default_value_t = 1)]
        responders: usize,
        /// Outstanding requests per requester.
        #[arg(long, default_value_t = 16)]
        window: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
    /// NATS latency at a fixed rate (publisher and subscriber on separate connections),
    /// corrected for coordinated omission.
    NatsLatency {
        /// Broker address.
        #[arg(long, default_value = NATS)]
        addr: String,
        #[command(flatten)]
        pace: PaceArgs,
    },
    /// MQTT 3.1.1 publishers -> subscribers on one topic, at QoS 0, 1 or 2.
    MqttPubsub {
        /// Broker address.
        #[arg(long, default_value = MQTT)]
        addr: String,
        #[command(flatten)]
        shape: ShapeArgs,
        /// QoS of publishes and subscriptions (0, 1 or 2).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
        /// QoS 1/2 publishes a publisher leaves uncompleted (default 1000 at QoS 1, 64 at 2).
        #[arg(long)]
        inflight: Option<u64>,
        /// Subscribe to this filter instead of the topic `loadtest/pubsub` (it must match it;
        /// e.g. `loadtest/#`).
        #[arg(long)]
        subscribe: Option<String>,
    },
    /// MQTT latency at a fixed rate, corrected for coordinated omission (as nats-latency).
    MqttLatency {
        /// Broker address.
        #[arg(long, default_value = MQTT)]
        addr: String,
        #[command(flatten)]
        pace: PaceArgs,
        /// QoS of the publish and the subscription (0, 1 or 2).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
    },
    /// MQTT publishers on `bench/x` -> NATS subscribers on `bench.x`.
    MqttToNats {
        /// The broker's MQTT address.
        #[arg(long, default_value = MQTT)]
        mqtt_addr: String,
        /// The broker's NATS address.
        #[arg(long, default_value = NATS)]
        nats_addr: String,
        #[command(flatten)]
        shape: ShapeArgs,
        /// QoS of the MQTT publishes (0, 1 or 2).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
        /// QoS 1/2 publishes a publisher leaves uncompleted (default 1000 at QoS 1, 64 at 2).
        #[arg(long)]
        inflight: Option<u64>,
    },
    /// NATS publishers on `bench.x` -> MQTT subscribers on `bench/x`.
    NatsToMqtt {
        /// The broker's NATS address.
        #[arg(long, default_value = NATS)]
        nats_addr: String,
        /// The broker's MQTT address.
        #[arg(long, default_value = MQTT)]
        mqtt_addr: String,
        #[command(flatten)]
        shape: ShapeArgs,
        /// QoS of the MQTT subscriptions (0, 1 or 2).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
    },
    /// N handshakes (NATS INFO/CONNECT/PING/PONG or MQTT CONNECT/CONNACK), C at a time; each
    /// connection closed after its handshake unless --keep.
    ConnectionStorm {
        /// Which handshake.
        #[arg(long, value_enum, default_value_t = Protocol::Mqtt)]
        protocol: Protocol,
        /// Broker address (default: 127.0.0.1:4222 for NATS, :1883 for MQTT).
        #[arg(long)]
        addr: Option<String>,
        /// Connections in all.
        #[arg(long, default_value_t = 10_000)]
        connections: u64,
        /// Connectors at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Keep every connection open until the end (needs one descriptor each).
        #[arg(long)]
        keep: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
    /// Rounds of N idle connections kept open (MQTT keep alive with PINGREQ on schedule;
    /// NATS PINGs answered), spread over 127.0.0.x sources; with --pid, the broker's RSS per
    /// connection in each round (the first also pays for pool growth). The broker and the
    /// harness each need one descriptor per connection: rounds x N must fit `ulimit -n`.
    IdleConnections {
        /// Which handshake.
        #[arg(long, value_enum, default_value_t = Protocol::Mqtt)]
        protocol: Protocol,
        /// Broker address (default: 127.0.0.1:4222 for NATS, :1883 for MQTT).
        #[arg(long)]
        addr: Option<String>,
        /// Connections per round.
        #[arg(long, default_value_t = 2_000)]
        connections: u64,
        /// Rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// MQTT keep alive, seconds (the harness pings every half of it).
        #[arg(long, default_value_t = 60)]
        keepalive_s: u16,
        /// Source addresses 127.0.0.2, .3, ... to spread connections over.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=250))]
        sources: u8,
        /// The broker's process id, to read its VmRSS.
        #[arg(long)]
        pid: Option<u32>,
        /// Wait after each round before reading the RSS, milliseconds.
        #[arg(long, default_value_t = 1000)]
        settle_ms: u64,
    },
    /// Starts Isthmus, nats-server (NATS, and MQTT with JetStream) and mosquitto on loopback,
    /// runs every scenario against each broker that speaks its protocols in interleaved
    /// rounds, prints medians and ratios.
    Compare(compare::Options),
}

fn main() {
    let cli = Cli::parse();
    if let Some(token) = cli.credentials.token {
        if matches!(cli.scenario, Scenario::Compare(_)) {
            eprintln!("isthmus-loadtest: compare starts its own brokers and takes no --token");
            std::process::exit(2);
        }
        let username = cli.credentials.username;
        if let Err(error) = isthmus_loadtest::set_credentials(Credentials { username, token }) {
            eprintln!("isthmus-loadtest: {error}");
            std::process::exit(1);
        }
    }
    let (addr, result) = match cli.scenario {
        Scenario::Compare(mut options) => {
            options.chart = cli.chart;
            if let Err(error) = compare::run(&options) {
                eprintln!("isthmus-loadtest: {error}");
                std::process::exit(1);
            }
            return;
        }
        scenario => run(scenario),
    };
    let measurement = match result {
        Ok(measurement) => measurement,
        Err(error) => {
            eprintln!("isthmus-loadtest: {error}");
            std::process::exit(1);
        }
    };
    let label = measurement.scenario.to_string();
    let run = Run { broker: cli.broker.unwrap_or(addr), label, round: 1, measurement };
    print!("{}", table(std::slice::from_ref(&run)));
    println!("{}", run.json_line());
    if let Some(path) = &cli.chart {
        let title = format!("isthmus-loadtest {} against {}", run.label, run.broker);
        if let Err(error) = isthmus_loadtest::chart::write(path, &title, std::slice::from_ref(&run))
        {
            eprintln!("isthmus-loadtest: {error}");
            std::process::exit(1);
        }
    }
    if let Err(error) = run.measurement.complete() {
        eprintln!("isthmus-loadtest: {error}");
        std::process::exit(1);
    }
}

/// Runs one scenario; returns the broker address it ran against and what it measured.
fn run(scenario: Scenario) -> (String, Result<Measurement, String>) {
    let default_addr = |protocol: Protocol, addr: Option<String>| {
        addr.unwrap_or_else(|| if protocol == Protocol::Nats { NATS } else { MQTT }.to_string())
    };
    match scenario {
        Scenario::NatsPubsub { addr, shape, subscribe } => {
            let result = pubsub::nats_pubsub_filtered(&addr, &shape.shape(), subscribe.as_deref());
            (addr, result)
        }
        Scenario::NatsQueue { addr, shape } => {
            let result = pubsub::nats_queue(&addr, &shape.shape());
            (addr, result)
        }
        Scenario::NatsRequest {
            addr,
            requests,
            size,
            requesters,
            responders,
            window,
            timeout_s,
        } => {
            let limit = Duration::from_secs(timeout_s);
            let shape = Requests { requests, size, requesters, responders, window, limit };
            let result = request::request_reply(&addr, &shape);
            (addr, result)
        }
        Scenario::NatsLatency { addr, pace } => {
            let result = latency::nats_latency(&addr, &pace.pace());
            (addr, result)
        }
        Scenario::MqttPubsub { addr, shape, qos, inflight, subscribe } => {
            let filter = subscribe.as_deref();
            let result = pubsub::mqtt_pubsub_filtered(&addr, &shape.shape(), qos, inflight, filter);
            (addr, result)
        }
        Scenario::MqttLatency { addr, pace, qos } => {
            let result = latency::mqtt_latency(&addr, &pace.pace(), qos);
            (addr, result)
        }
        Scenario::MqttToNats { mqtt_addr, nats_addr, shape, qos, inflight } => {
            let result =
                pubsub::mqtt_to_nats(&mqtt_addr, &nats_addr, &shape.shape(), qos, inflight);
            (format!("{mqtt_addr}+{nats_addr}"), result)
        }
        Scenario::NatsToMqtt { nats_addr, mqtt_addr, shape, qos } => {
            let result = pubsub::nats_to_mqtt(&nats_addr, &mqtt_addr, &shape.shape(), qos);
            (format!("{nats_addr}+{mqtt_addr}"), result)
        }
        Scenario::ConnectionStorm { protocol, addr, connections, concurrency, keep, timeout_s } => {
            let addr = default_addr(protocol, addr);
            let limit = Duration::from_secs(timeout_s);
            let shape = Storm { protocol, connections, concurrency, keep, limit };
            let result = connections::storm(&addr, &shape);
            (addr, result)
        }
        Scenario::IdleConnections {
            protocol,
            addr,
            connections,
            rounds,
            keepalive_s,
            sources,
            pid,
            settle_ms,
        } => {
            let addr = default_addr(protocol, addr);
            let settle = Duration::from_millis(settle_ms);
            let keep_alive_s = keepalive_s;
            let shape = Idle { protocol, connections, rounds, keep_alive_s, sources, pid, settle };
            let result = connections::idle(&addr, &shape);
            (addr, result)
        }
        Scenario::Compare(_) => unreachable!("compare is handled by main"),
    }
}
