//! `isthmus-loadtest compare`: the same scenarios against Isthmus, nats-server (NATS, and MQTT
//! through its `mqtt` block with JetStream) and mosquitto, in interleaved rounds (A B C A B C
//! ...), so that the noise of a shared machine falls on every broker alike. Prints per-scenario
//! medians and the ratios Isthmus/peer, and with `--out` writes them, with the commit, CPU,
//! kernel and exact command, as a Markdown report; `--chart` draws every run.
//!
//! Every broker listens on loopback ports picked for the run; every scenario is bounded by its
//! message count and a time limit. A scenario runs against every broker that speaks its
//! protocols: mosquitto only the MQTT-only ones (no NATS), nats-server and Isthmus everything
//! (nats-server 2.9 has no MQTT QoS 2: it grants QoS 1, and that run fails). QoS 1 and 2 runs
//! need the per-session queue to hold what the subscriber falls behind by, so both MQTT
//! brokers are given a queue of 1,000,000 messages and an inflight window of 64 (mosquitto
//! `max_queued_messages`/`max_inflight_messages`, Isthmus
//! `mqtt.max_queued_messages`/`mqtt.max_inflight`). Idle connections read each broker's RSS
//! from `/proc/<pid>/status` of the process compare started.

use crate::connections::{idle, storm, Idle, Protocol, Storm};
use crate::latency::{mqtt_latency, nats_latency, Pace};
use crate::pubsub::{mqtt_pubsub, mqtt_to_nats, nats_pubsub, nats_queue, nats_to_mqtt, Shape};
use crate::report::Run;
use crate::request::{request_reply, Requests};
use crate::{median, Measurement};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Options of `compare`.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Rounds; each runs every broker once, in turn.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The Isthmus binary.
    #[arg(long, default_value = "target/release/isthmus")]
    pub isthmus: PathBuf,
    /// The nats-server binary (Debian: /usr/sbin/nats-server); "none" leaves it out.
    #[arg(long, default_value = "/usr/sbin/nats-server")]
    pub nats_server: PathBuf,
    /// The mosquitto binary (Debian: /usr/sbin/mosquitto); "none" leaves it out.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    pub mosquitto: PathBuf,
    /// Isthmus shards (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub shards: usize,
    /// Multiplies every scenario's message and connection count (e.g. 0.05 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Only scenarios whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// Also write the report as Markdown to this file (e.g. tuning/results/DATE-compare.md).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also draw every run to this file (SVG, or HTML if it ends in .html): the global
    /// `--chart` on the command line.
    #[arg(skip)]
    pub chart: Option<PathBuf>,
}

/// What a scenario does.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Nats { publishers: usize, subscribers: usize, size: usize, messages: u64 },
    NatsQueue { publishers: usize, subscribers: usize, size: usize, messages: u64 },
    Request { requesters: usize, responders: usize, size: usize, requests: u64, window: u64 },
    Mqtt { publishers: usize, subscribers: usize, size: usize, messages: u64, qos: u8, window: u64 },
    MqttToNats { publishers: usize, subscribers: usize, size: usize, messages: u64, qos: u8 },
    NatsToMqtt { publishers: usize, subscribers: usize, size: usize, messages: u64, qos: u8 },
    NatsLatency { rate: u64, messages: u64, size: usize },
    MqttLatency { rate: u64, messages: u64, size: usize, qos: u8 },
    Storm { protocol: Protocol, connections: u64, concurrency: usize },
    Idle { protocol: Protocol, connections: u64, rounds: usize },
}

impl Kind {
    /// The protocols a broker must speak to run it.
    fn needs_nats(&self) -> bool {
        match self {
            Kind::Mqtt { .. } | Kind::MqttLatency { .. } => false,
            Kind::Storm { protocol, .. } | Kind::Idle { protocol, .. } => {
                *protocol == Protocol::Nats
            }
            _ => true,
        }
    }

    /// What the cell of the summary shows, and which way is better.
    fn metric(&self) -> Metric {
        match self {
            Kind::NatsLatency { .. } | Kind::MqttLatency { .. } => Metric::P99,
            Kind::Idle { .. } => Metric::Memory,
            _ => Metric::Rate,
        }
    }
}

/// The headline number of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    /// Delivered (replies, connections) per second; higher is better.
    Rate,
    /// p99 latency, microseconds; lower is better.
    P99,
    /// KiB of broker RSS per idle connection, all-in (growth over every connection opened);
    /// lower is better.
    Memory,
}

impl Metric {
    fn of(self, measurement: &Measurement) -> Option<f64> {
        match self {
            Metric::Rate => measurement.throughput.map(|t| t.per_s),
            Metric::P99 => measurement.latency.map(|l| l.p99_us as f64),
            Metric::Memory => measurement.memory.as_ref().map(|m| m.total_kib()),
        }
    }
}

/// The scenarios `compare` runs, sized so that a 2-core machine finishes a round of all three
/// brokers in a few minutes. Names carry what stays fixed under `--scale` (sizes, fan-in/out,
/// windows, rates); the counts, scaled, are in each run's `json:` line. Storms open 2,000
/// connections and idle runs 4 rounds of 4,000 at scale 1 (16,000 sockets in the harness and in
/// the broker: under the 20,000 descriptors a process may open on the development machines).
const SCENARIOS: &[(&str, Kind)] = &[
    // Each on a broker started for it: a broker gives the memory of connections closed by an
    // earlier run back seconds later, which would show as negative growth per connection.
    ("idle nats 4 rounds", Kind::Idle { protocol: Protocol::Nats, connections: 4_000, rounds: 4 }),
    ("idle mqtt 4 rounds", Kind::Idle { protocol: Protocol::Mqtt, connections: 4_000, rounds: 4 }),
    ("nats 1->1 16B", Kind::Nats { publishers: 1, subscribers: 1, size: 16, messages: 2_000_000 }),
    (
        "nats 1->1 256B",
        Kind::Nats { publishers: 1, subscribers: 1, size: 256, messages: 1_000_000 },
    ),
    ("nats 1->8 16B", Kind::Nats { publishers: 1, subscribers: 8, size: 16, messages: 250_000 }),
    ("nats 1->8 256B", Kind::Nats { publishers: 1, subscribers: 8, size: 256, messages: 125_000 }),
    ("nats 8->1 16B", Kind::Nats { publishers: 8, subscribers: 1, size: 16, messages: 250_000 }),
    ("nats 8->1 256B", Kind::Nats { publishers: 8, subscribers: 1, size: 256, messages: 125_000 }),
    (
        "nats queue 1->4 16B",
        Kind::NatsQueue { publishers: 1, subscribers: 4, size: 16, messages: 1_000_000 },
    ),
    (
        "nats request 4x2 w16",
        Kind::Request { requesters: 4, responders: 2, size: 16, requests: 50_000, window: 16 },
    ),
    (
        "mqtt qos0 1->1 16B",
        Kind::Mqtt {
            publishers: 1,
            subscribers: 1,
            size: 16,
            messages: 1_000_000,
            qos: 0,
            window: 0,
        },
    ),
    (
        "mqtt qos0 1->1 256B",
        Kind::Mqtt {
            publishers: 1,
            subscribers: 1,
            size: 256,
            messages: 500_000,
            qos: 0,
            window: 0,
        },
    ),
    (
        "mqtt qos0 1->8 16B",
        Kind::Mqtt {
            publishers: 1,
            subscribers: 8,
            size: 16,
            messages: 100_000,
            qos: 0,
            window: 0,
        },
    ),
    (
        "mqtt qos0 1->8 256B",
        Kind::Mqtt {
            publishers: 1,
            subscribers: 8,
            size: 256,
            messages: 50_000,
            qos: 0,
            window: 0,
        },
    ),
    (
        "mqtt qos0 8->1 16B",
        Kind::Mqtt { publishers: 8, subscribers: 1, size: 16, messages: 50_000, qos: 0, window: 0 },
    ),
    (
        "mqtt qos1 1->1 16B",
        Kind::Mqtt {
            publishers: 1,
            subscribers: 1,
            size: 16,
            messages: 200_000,
            qos: 1,
            window: 1000,
        },
    ),
    (
        "mqtt qos1 1->1 256B",
        Kind::Mqtt {
            publishers: 1,
            subscribers: 1,
            size: 256,
            messages: 200_000,
            qos: 1,
            window: 1000,
        },
    ),
    (
        "mqtt qos2 1->1 16B w64",
        Kind::Mqtt {
            publishers: 1,
            subscribers: 1,
            size: 16,
            messages: 100_000,
            qos: 2,
            window: 64,
        },
    ),
    (
        "mqtt->nats qos0 1->1 16B",
        Kind::MqttToNats { publishers: 1, subscribers: 1, size: 16, messages: 500_000, qos: 0 },
    ),
    (
        "mqtt->nats qos0 1->1 256B",
        Kind::MqttToNats { publishers: 1, subscribers: 1, size: 256, messages: 250_000, qos: 0 },
    ),
    (
        "nats->mqtt qos0 1->1 16B",
        Kind::NatsToMqtt { publishers: 1, subscribers: 1, size: 16, messages: 500_000, qos: 0 },
    ),
    (
        "nats->mqtt qos0 1->1 256B",
        Kind::NatsToMqtt { publishers: 1, subscribers: 1, size: 256, messages: 250_000, qos: 0 },
    ),
    (
        "nats->mqtt qos1 1->1 16B",
        Kind::NatsToMqtt { publishers: 1, subscribers: 1, size: 16, messages: 100_000, qos: 1 },
    ),
    ("nats latency 20k/s", Kind::NatsLatency { rate: 20_000, messages: 40_000, size: 16 }),
    ("nats latency 20k/s 256B", Kind::NatsLatency { rate: 20_000, messages: 40_000, size: 256 }),
    (
        "mqtt latency qos0 20k/s",
        Kind::MqttLatency { rate: 20_000, messages: 40_000, size: 16, qos: 0 },
    ),
    (
        "mqtt latency qos0 20k/s 256B",
        Kind::MqttLatency { rate: 20_000, messages: 40_000, size: 256, qos: 0 },
    ),
    (
        "mqtt latency qos1 20k/s",
        Kind::MqttLatency { rate: 20_000, messages: 40_000, size: 16, qos: 1 },
    ),
    (
        "mqtt latency qos1 20k/s 256B",
        Kind::MqttLatency { rate: 20_000, messages: 40_000, size: 256, qos: 1 },
    ),
    ("nats storm c4", Kind::Storm { protocol: Protocol::Nats, connections: 2_000, concurrency: 4 }),
    ("mqtt storm c4", Kind::Storm { protocol: Protocol::Mqtt, connections: 2_000, concurrency: 4 }),
];

/// The brokers, in the order each round runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Broker {
    Isthmus,
    NatsServer,
    Mosquitto,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Isthmus => "isthmus",
            Broker::NatsServer => "nats-server",
            Broker::Mosquitto => "mosquitto",
        }
    }

    /// Mosquitto speaks no NATS; the others speak both protocols.
    fn runs(self, kind: &Kind) -> bool {
        self != Broker::Mosquitto || !kind.needs_nats()
    }
}

/// One measurement.
#[derive(Clone, Debug)]
enum Outcome {
    Done(Measurement),
    Failed(String),
}

/// A broker process started for a round; killed when dropped.
struct Running {
    child: Child,
    nats: Option<SocketAddr>,
    mqtt: SocketAddr,
    _dir: TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM first so a broker can close cleanly, then make sure.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Result<TempDir, String> {
        // Unique per broker started: two of one kind can run at once (see Metric::Memory).
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("isthmus-compare-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `compare`.
pub fn run(options: &Options) -> Result<(), String> {
    let scenarios: Vec<(&str, Kind)> = SCENARIOS
        .iter()
        .filter(|(name, _)| options.only.as_deref().is_none_or(|only| name.contains(only)))
        .map(|(name, kind)| (*name, scale(*kind, options.scale)))
        .collect();
    if scenarios.is_empty() {
        return Err("no scenario matches --only".into());
    }
    let mut brokers = vec![Broker::Isthmus];
    if options.nats_server != Path::new("none") {
        brokers.push(Broker::NatsServer);
    }
    if options.mosquitto != Path::new("none") {
        brokers.push(Broker::Mosquitto);
    }
    let mut results: BTreeMap<(usize, Broker), Vec<Outcome>> = BTreeMap::new();
    let mut runs = Vec::new();
    for round in 1..=options.rounds {
        for &broker in &brokers {
            if !scenarios.iter().any(|(_, kind)| broker.runs(kind)) {
                continue;
            }
            eprintln!("== round {round}/{}: {}", options.rounds, broker.name());
            let running = start(broker, options)?;
            for (index, (name, kind)) in scenarios.iter().enumerate() {
                if !broker.runs(kind) {
                    continue;
                }
                eprintln!("-- {name}");
                let measured = if kind.metric() == Metric::Memory {
                    start(broker, options).and_then(|fresh| measure(&fresh, kind))
                } else {
                    measure(&running, kind)
                };
                let outcome = match measured {
                    Ok(measurement) => {
                        let run = Run {
                            broker: broker.name().into(),
                            label: (*name).into(),
                            round,
                            measurement,
                        };
                        println!("{}", run.json_line());
                        let outcome = Outcome::Done(run.measurement.clone());
                        runs.push(run);
                        outcome
                    }
                    Err(error) => {
                        eprintln!("   failed: {error}");
                        Outcome::Failed(error)
                    }
                };
                results.entry((index, broker)).or_default().push(outcome);
            }
        }
    }
    let report = report(&scenarios, &brokers, &results, options);
    println!("{report}");
    if let Some(path) = &options.out {
        std::fs::write(path, &report).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &options.chart {
        crate::chart::write(path, "isthmus-loadtest compare", &runs)?;
        eprintln!("chart written to {}", path.display());
    }
    // A peer that cannot run a scenario is reported; Isthmus failing one is an error.
    let ours_failed = results
        .iter()
        .filter(|((_, broker), _)| *broker == Broker::Isthmus)
        .flat_map(|(_, outcomes)| outcomes)
        .filter(|o| matches!(o, Outcome::Failed(_)))
        .count();
    if ours_failed > 0 {
        return Err(format!("{ours_failed} Isthmus run(s) failed (see above)"));
    }
    Ok(())
}

fn scale(kind: Kind, by: f64) -> Kind {
    let scaled = |n: u64| ((n as f64 * by) as u64).max(1_000);
    // Below a few hundred, a broker's RSS growth per connection is mostly page-size noise.
    let connections = |n: u64| ((n as f64 * by) as u64).max(500);
    match kind {
        Kind::Nats { publishers, subscribers, size, messages } => {
            Kind::Nats { publishers, subscribers, size, messages: scaled(messages) }
        }
        Kind::NatsQueue { publishers, subscribers, size, messages } => {
            Kind::NatsQueue { publishers, subscribers, size, messages: scaled(messages) }
        }
        Kind::Request { requesters, responders, size, requests, window } => {
            Kind::Request { requesters, responders, size, requests: scaled(requests), window }
        }
        Kind::Mqtt { publishers, subscribers, size, messages, qos, window } => {
            Kind::Mqtt { publishers, subscribers, size, messages: scaled(messages), qos, window }
        }
        Kind::MqttToNats { publishers, subscribers, size, messages, qos } => {
            Kind::MqttToNats { publishers, subscribers, size, messages: scaled(messages), qos }
        }
        Kind::NatsToMqtt { publishers, subscribers, size, messages, qos } => {
            Kind::NatsToMqtt { publishers, subscribers, size, messages: scaled(messages), qos }
        }
        Kind::NatsLatency { rate, messages, size } => {
            Kind::NatsLatency { rate, messages: scaled(messages), size }
        }
        Kind::MqttLatency { rate, messages, size, qos } => {
            Kind::MqttLatency { rate, messages: scaled(messages), size, qos }
        }
        Kind::Storm { protocol, connections: n, concurrency } => {
            Kind::Storm { protocol, connections: connections(n), concurrency }
        }
        Kind::Idle { protocol, connections: n, rounds } => {
            Kind::Idle { protocol, connections: connections(n), rounds }
        }
    }
}

fn measure(running: &Running, kind: &Kind) -> Result<Measurement, String> {
    let limit = Duration::from_secs(60);
    let nats = running.nats.map(|a| a.to_string()).unwrap_or_default();
    let mqtt = running.mqtt.to_string();
    let shape = |publishers, subscribers, size, messages| Shape {
        messages,
        size,
        publishers,
        subscribers,
        limit,
    };
    match *kind {
        Kind::Nats { publishers, subscribers, size, messages } => {
            nats_pubsub(&nats, &shape(publishers, subscribers, size, messages))
        }
        Kind::NatsQueue { publishers, subscribers, size, messages } => {
            nats_queue(&nats, &shape(publishers, subscribers, size, messages))
        }
        Kind::Request { requesters, responders, size, requests, window } => {
            let shape = Requests { requests, size, requesters, responders, window, limit };
            request_reply(&nats, &shape)
        }
        Kind::Mqtt { publishers, subscribers, size, messages, qos, window } => {
            let window = (window > 0).then_some(window);
            mqtt_pubsub(&mqtt, &shape(publishers, subscribers, size, messages), qos, window)
        }
        Kind::MqttToNats { publishers, subscribers, size, messages, qos } => {
            mqtt_to_nats(&mqtt, &nats, &shape(publishers, subscribers, size, messages), qos, None)
        }
        Kind::NatsToMqtt { publishers, subscribers, size, messages, qos } => {
            nats_to_mqtt(&nats, &mqtt, &shape(publishers, subscribers, size, messages), qos)
        }
        Kind::NatsLatency { rate, messages, size } => nats_latency(
            &nats,
            &Pace { messages, warmup: rate / 2, rate, size, limit, trace: None },
        ),
        Kind::MqttLatency { rate, messages, size, qos } => mqtt_latency(
            &mqtt,
            &Pace { messages, warmup: rate / 2, rate, size, limit, trace: None },
            qos,
        ),
        Kind::Storm { protocol, connections, concurrency } => {
            let addr = if protocol == Protocol::Nats { &nats } else { &mqtt };
            storm(addr, &Storm { protocol, connections, concurrency, keep: false, limit })
        }
        Kind::Idle { protocol, connections, rounds } => {
            let addr = if protocol == Protocol::Nats { &nats } else { &mqtt };
            let shape = Idle {
                protocol,
                connections,
                rounds,
                keep_alive_s: 60,
                sources: 4,
                pid: Some(running.child.id()),
                // Longer than Isthmus's mqtt.dormant_after_ms (2 s) plus a sweep, so its quiet
                // connections have gone dormant when the RSS is read; the same wait for all.
                settle: Duration::from_millis(3500),
            };
            idle(addr, &shape)
        }
    }
}

/// A free loopback port (the usual bind-to-0 probe; the broker binds it right after).
fn free_port() -> Result<SocketAddr, String> {
    let probe = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    probe.local_addr().map_err(|e| e.to_string())
}

fn start(broker: Broker, options: &Options) -> Result<Running, String> {
    let dir = TempDir::new(broker.name())?;
    match broker {
        Broker::Isthmus => {
            let config = dir.0.join("isthmus.toml");
            std::fs::write(&config, "[mqtt]\nmax_queued_messages = 1000000\nmax_inflight = 64\n")
                .map_err(|e| e.to_string())?;
            let mut child = Command::new(&options.isthmus)
                .args(["serve", "--nats-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0"])
                .args(["--shards", &options.shards.to_string()])
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("{}: {e}", options.isthmus.display()))?;
            let stdout = child.stdout.take().expect("piped");
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
            let field = |key: &str| -> Option<SocketAddr> {
                line.split_whitespace().find_map(|f| f.strip_prefix(key))?.parse().ok()
            };
            let (Some(nats), Some(mqtt)) = (field("nats="), field("mqtt=")) else {
                let _ = child.kill();
                return Err(format!("isthmus did not print its ready line (got {line:?})"));
            };
            Ok(Running { child, nats: Some(nats), mqtt, _dir: dir })
        }
        Broker::NatsServer => {
            let (nats, mqtt) = (free_port()?, free_port()?);
            let config = dir.0.join("nats-server.conf");
            let text = format!(
                "listen: {nats}\nserver_name: loadtest\njetstream {{ store_dir: \"{}\" }}\nmqtt {{ listen: {mqtt} }}\n",
                dir.0.join("js").display()
            );
            std::fs::write(&config, text).map_err(|e| e.to_string())?;
            let child = spawn_with_config(&options.nats_server, &config)?;
            let running = Running { child, nats: Some(nats), mqtt, _dir: dir };
            wait_listening(&[nats, mqtt])?;
            Ok(running)
        }
        Broker::Mosquitto => {
            let mqtt = free_port()?;
            let config = dir.0.join("mosquitto.conf");
            let text = format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\nmax_inflight_messages 64\n",
                mqtt.port()
            );
            std::fs::write(&config, text).map_err(|e| e.to_string())?;
            let child = spawn_with_config(&options.mosquitto, &config)?;
            let running = Running { child, nats: None, mqtt, _dir: dir };
            wait_listening(&[mqtt])?;
            Ok(running)
        }
    }
}

/// Starts `binary -c config` with no terminal I/O (nats-server and mosquitto take the same flag).
fn spawn_with_config(binary: &Path, config: &Path) -> Result<Child, String> {
    Command::new(binary)
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))
}

fn wait_listening(addrs: &[SocketAddr]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    for addr in addrs {
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err(format!("nothing listens on {addr} after 20 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// The median of one (scenario, broker), with the notes its cell needs: runs that lost or
/// duplicated messages, runs that failed, and the QoS the broker delivered at if lower than
/// the subscription's.
fn summarize(metric: Metric, outcomes: &[Outcome]) -> (Option<f64>, String) {
    let mut values = Vec::new();
    let (mut lossy, mut failed, mut downgraded) = (0, 0, None);
    for outcome in outcomes {
        match outcome {
            Outcome::Done(measurement) => {
                values.extend(metric.of(measurement));
                lossy += usize::from(measurement.lossy());
                downgraded = downgraded.or(measurement.downgraded_qos());
            }
            Outcome::Failed(_) => failed += 1,
        }
    }
    let mut notes = String::new();
    if let Some(qos) = downgraded {
        notes.push_str(&format!(" (delivered at QoS {qos})"));
    }
    if lossy > 0 {
        notes.push_str(&format!(" ({lossy} lossy)"));
    }
    if failed > 0 {
        notes.push_str(&format!(" ({failed} failed)"));
    }
    (median(values), notes)
}

fn format_value(value: Option<f64>, metric: Metric) -> String {
    match (value, metric) {
        (None, _) => "-".into(),
        (Some(v), Metric::P99) => format!("{v:.0} us"),
        (Some(v), Metric::Memory) => format!("{v:.2} KiB"),
        (Some(v), Metric::Rate) if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
        (Some(v), Metric::Rate) if v >= 1e4 => format!("{:.0} k/s", v / 1e3),
        (Some(v), Metric::Rate) => format!("{:.1} k/s", v / 1e3),
    }
}

fn report(
    scenarios: &[(&str, Kind)],
    brokers: &[Broker],
    results: &BTreeMap<(usize, Broker), Vec<Outcome>>,
    options: &Options,
) -> String {
    let mut out = String::new();
    let command: Vec<String> = std::env::args().collect();
    let _ = writeln!(out, "# isthmus-loadtest compare");
    let _ = writeln!(out);
    let _ = writeln!(out, "- command: `{}`", command.join(" "));
    let isthmus = binary_version(&options.isthmus, "--version");
    let _ = writeln!(
        out,
        "- commit: {} (of the Isthmus binary, from its `--version`; loadtest built at {})",
        version_commit(&isthmus).unwrap_or("unknown"),
        env!("ISTHMUS_COMMIT")
    );
    let mut versions = vec![isthmus];
    if brokers.contains(&Broker::NatsServer) {
        versions.push(binary_version(&options.nats_server, "--version"));
    }
    if brokers.contains(&Broker::Mosquitto) {
        versions.push(binary_version(&options.mosquitto, "-h"));
    }
    let _ = writeln!(out, "- brokers: {}", versions.join("; "));
    let _ = writeln!(out, "- host: {}, kernel {}", cpu(), kernel());
    let _ = writeln!(
        out,
        "- rounds: {} interleaved ({}); Isthmus shards: {}; loadtest and brokers share the cores",
        options.rounds,
        brokers.iter().map(|b| b.name()).collect::<Vec<_>>().join(", "),
        if options.shards == 0 { "one per core".to_string() } else { options.shards.to_string() }
    );
    let _ = writeln!(
        out,
        "- cells: median delivered messages/s (request: replies/s; storm: connections/s; \
         latency: median p99; idle: broker RSS growth over every connection opened, per \
         connection, after a 3.5 s settle); `(n lossy)`: \
         runs where messages were dropped (QoS 0 by design) or duplicated; `(n failed)`: runs \
         that did not finish; `(delivered at QoS n)`: the broker delivered below the \
         subscription's QoS"
    );
    let _ = writeln!(out);
    let mut header = String::from("| scenario |");
    let mut rule = String::from("|---|");
    for broker in brokers {
        header.push_str(&format!(" {} |", broker.name()));
        rule.push_str("---|");
    }
    for broker in brokers.iter().filter(|b| **b != Broker::Isthmus) {
        header.push_str(&format!(" isthmus/{} |", broker.name()));
        rule.push_str("---|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for (index, (name, kind)) in scenarios.iter().enumerate() {
        let metric = kind.metric();
        let mut row = format!("| {name} |");
        let mut medians = BTreeMap::new();
        for broker in brokers {
            if !broker.runs(kind) {
                medians.insert(*broker, None);
                row.push_str(" n/a |");
                continue;
            }
            let outcomes = results.get(&(index, *broker)).map(Vec::as_slice).unwrap_or(&[]);
            let (value, notes) = summarize(metric, outcomes);
            medians.insert(*broker, value);
            row.push_str(&format!(" {}{notes} |", format_value(value, metric)));
        }
        for broker in brokers.iter().filter(|b| **b != Broker::Isthmus) {
            let ratio = match (medians[&Broker::Isthmus], medians[broker]) {
                // Latency and memory: how many times lower Isthmus's number is.
                (Some(ours), Some(theirs)) if metric != Metric::Rate && ours > 0.0 => {
                    format!("{:.2}x", theirs / ours)
                }
                (Some(ours), Some(theirs)) if metric == Metric::Rate && theirs > 0.0 => {
                    format!("{:.2}x", ours / theirs)
                }
                _ => "-".into(),
            };
            row.push_str(&format!(" {ratio} |"));
        }
        let _ = writeln!(out, "{row}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Latency and memory ratios are peer / Isthmus (above 1: Isthmus is lower). n/a: the \
         broker does not speak a protocol of the scenario."
    );
    let _ = writeln!(out, "\n## Every run\n");
    for ((index, broker), outcomes) in results {
        let runs: Vec<String> = outcomes.iter().map(describe).collect();
        let _ = writeln!(out, "- {} / {}: {}", scenarios[*index].0, broker.name(), runs.join("; "));
    }
    out
}

/// One run in a few words: rate (and losses), latency percentiles, memory per round.
fn describe(outcome: &Outcome) -> String {
    let m = match outcome {
        Outcome::Done(m) => m,
        Outcome::Failed(e) => return format!("failed: {e}"),
    };
    let mut parts = Vec::new();
    if let Some(t) = &m.throughput {
        let mut part = format!("{:.0} {}", t.per_s, t.unit);
        if t.delivered != t.expected {
            part.push_str(&format!(" ({} of {})", t.delivered, t.expected));
        }
        if t.duplicates > 0 {
            part.push_str(&format!(" ({} duplicates)", t.duplicates));
        }
        if let Some(qos) = m.downgraded_qos() {
            part.push_str(&format!(" (delivered at QoS {qos})"));
        }
        parts.push(part);
    }
    if let Some(l) = &m.latency {
        let at = l.max_at_ms.map(|ms| format!(" (due at {ms} ms)")).unwrap_or_default();
        parts.push(format!(
            "p50 {} / p99 {} / p99.9 {} / max {} us{at}",
            l.p50_us, l.p99_us, l.p999_us, l.max_us
        ));
    }
    if let Some(memory) = &m.memory {
        let rounds: Vec<String> =
            memory.kib_per_connection.iter().map(|k| format!("{k:.2}")).collect();
        parts.push(format!(
            "KiB/connection all-in {:.2}, by round {}",
            memory.total_kib(),
            rounds.join(", ")
        ));
    }
    parts.join(", ")
}

/// The first line `binary flag` prints (nats-server and isthmus: `--version`; mosquitto
/// has none and prints its version atop `-h`, which exits non-zero), or `binary (version
/// unknown)`.
pub fn binary_version(binary: &Path, flag: &str) -> String {
    Command::new(binary)
        .arg(flag)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .filter(|line| !line.trim().is_empty())
        .unwrap_or_else(|| format!("{} (version unknown)", binary.display()))
}

/// The commit in an `isthmus --version` line: `isthmus 0.1.0 (4dfc874)` gives `4dfc874`;
/// `None` for a line without one (`binary_version`'s `... (version unknown)` included).
pub fn version_commit(version: &str) -> Option<&str> {
    let (_, rest) = version.trim_end().rsplit_once('(')?;
    rest.strip_suffix(')')
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric()))
}

fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{model}, {cores} cores")
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_is_read_from_a_version_line_and_only_from_one() {
        assert_eq!(version_commit("isthmus 0.1.0 (4dfc874)\n"), Some("4dfc874"));
        assert_eq!(version_commit("isthmus 0.1.0 (unknown)"), Some("unknown"));
        assert_eq!(version_commit("nats-server: v2.9.10"), None);
        let missing = binary_version(Path::new("/nonexistent/isthmus"), "--version");
        assert_eq!(missing, "/nonexistent/isthmus (version unknown)");
        assert_eq!(version_commit(&missing), None);
    }
}
