//! `isthmus-loadtest compare`: the same scenarios against Isthmus, nats-server (NATS, and MQTT
//! through its `mqtt` block with JetStream) and mosquitto, in interleaved rounds (A B C A B C
//! ...), so that the noise of a shared machine falls on every broker alike. Prints per-scenario
//! medians and the ratios Isthmus/peer, and with `--out` writes them, with the commit, CPU,
//! kernel and exact command, as a Markdown report.
//!
//! Every broker listens on loopback ports picked for the run; every scenario is bounded by its
//! message count and a time limit. QoS 1 runs need the per-session queue to hold what the
//! subscriber falls behind by, so both MQTT brokers are given a queue of 1,000,000 messages and
//! an inflight window of 64 (mosquitto `max_queued_messages`/`max_inflight_messages`, Isthmus
//! `mqtt.max_queued_messages`/`mqtt.max_inflight`).

use crate::{latency, mqtt_pubsub, pubsub, Latency, Throughput};
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
    /// Multiplies every scenario's message count (e.g. 0.05 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Only scenarios whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// Also write the report as Markdown to this file (e.g. tuning/results/DATE-compare.md).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What a scenario does.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Nats { publishers: usize, subscribers: usize, size: usize, messages: u64 },
    Mqtt { publishers: usize, subscribers: usize, size: usize, messages: u64, qos: u8 },
    NatsLatency { rate: u64, messages: u64, size: usize },
}

/// The scenarios `compare` runs, sized so that a 2-core machine finishes a round of all three
/// brokers in about a minute.
const SCENARIOS: &[(&str, Kind)] = &[
    ("nats 1->1 16B", Kind::Nats { publishers: 1, subscribers: 1, size: 16, messages: 2_000_000 }),
    (
        "nats 1->1 256B",
        Kind::Nats { publishers: 1, subscribers: 1, size: 256, messages: 1_000_000 },
    ),
    ("nats 1->8 16B", Kind::Nats { publishers: 1, subscribers: 8, size: 16, messages: 250_000 }),
    ("nats 8->1 16B", Kind::Nats { publishers: 8, subscribers: 1, size: 16, messages: 250_000 }),
    (
        "mqtt qos0 1->1 16B",
        Kind::Mqtt { publishers: 1, subscribers: 1, size: 16, messages: 1_000_000, qos: 0 },
    ),
    (
        "mqtt qos0 1->1 256B",
        Kind::Mqtt { publishers: 1, subscribers: 1, size: 256, messages: 500_000, qos: 0 },
    ),
    (
        "mqtt qos0 1->8 16B",
        Kind::Mqtt { publishers: 1, subscribers: 8, size: 16, messages: 100_000, qos: 0 },
    ),
    (
        "mqtt qos1 1->1 16B",
        Kind::Mqtt { publishers: 1, subscribers: 1, size: 16, messages: 200_000, qos: 1 },
    ),
    ("nats latency 20k/s", Kind::NatsLatency { rate: 20_000, messages: 40_000, size: 16 }),
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

    fn runs(self, kind: &Kind) -> bool {
        !matches!((self, kind), (Broker::Mosquitto, Kind::Nats { .. } | Kind::NatsLatency { .. }))
    }
}

/// One measurement.
#[derive(Clone, Debug)]
enum Outcome {
    Throughput(Throughput),
    Latency(Latency),
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
        let path =
            std::env::temp_dir().join(format!("isthmus-compare-{}-{name}", std::process::id()));
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
                let outcome = measure(&running, kind);
                if let Outcome::Failed(error) = &outcome {
                    eprintln!("   failed: {error}");
                }
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
    match kind {
        Kind::Nats { publishers, subscribers, size, messages } => {
            Kind::Nats { publishers, subscribers, size, messages: scaled(messages) }
        }
        Kind::Mqtt { publishers, subscribers, size, messages, qos } => {
            Kind::Mqtt { publishers, subscribers, size, messages: scaled(messages), qos }
        }
        Kind::NatsLatency { rate, messages, size } => {
            Kind::NatsLatency { rate, messages: scaled(messages), size }
        }
    }
}

fn measure(running: &Running, kind: &Kind) -> Outcome {
    let limit = Duration::from_secs(60);
    let nats = running.nats.map(|a| a.to_string()).unwrap_or_default();
    let mqtt = running.mqtt.to_string();
    let result = match *kind {
        Kind::Nats { publishers, subscribers, size, messages } => {
            pubsub(&nats, messages, size, publishers, subscribers, limit).map(Outcome::Throughput)
        }
        Kind::Mqtt { publishers, subscribers, size, messages, qos } => {
            mqtt_pubsub(&mqtt, messages, size, publishers, subscribers, qos, limit)
                .map(Outcome::Throughput)
        }
        Kind::NatsLatency { rate, messages, size } => {
            latency(&nats, messages, rate, size).map(Outcome::Latency)
        }
    };
    result.unwrap_or_else(Outcome::Failed)
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

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

/// The median of one (scenario, broker): delivered msgs/s, or p99 us for latency; with the
/// number of runs that lost messages or failed.
fn summarize(outcomes: &[Outcome]) -> (Option<f64>, usize, usize) {
    let mut values = Vec::new();
    let (mut lossy, mut failed) = (0, 0);
    for outcome in outcomes {
        match outcome {
            Outcome::Throughput(t) => {
                values.push(t.per_s);
                lossy += usize::from(t.delivered != t.expected);
            }
            Outcome::Latency(l) => values.push(l.p99_us as f64),
            Outcome::Failed(_) => failed += 1,
        }
    }
    (median(values), lossy, failed)
}

fn format_value(value: Option<f64>, latency: bool) -> String {
    match value {
        None => "-".into(),
        Some(v) if latency => format!("{v:.0} us"),
        Some(v) if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
        Some(v) => format!("{:.0} k/s", v / 1e3),
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
    let _ = writeln!(out, "- commit: {}", git_commit());
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
        "- cells: median delivered messages/s (latency: median p99); `(n lossy)`: runs where \
         messages were dropped (QoS 0 by design); `(n failed)`: runs that did not finish"
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
        let latency = matches!(kind, Kind::NatsLatency { .. });
        let mut row = format!("| {name} |");
        let mut medians = BTreeMap::new();
        for broker in brokers {
            let outcomes = results.get(&(index, *broker)).map(Vec::as_slice).unwrap_or(&[]);
            let (value, lossy, failed) = summarize(outcomes);
            medians.insert(*broker, value);
            let mut cell = format_value(value, latency);
            if lossy > 0 {
                cell.push_str(&format!(" ({lossy} lossy)"));
            }
            if failed > 0 {
                cell.push_str(&format!(" ({failed} failed)"));
            }
            row.push_str(&format!(" {cell} |"));
        }
        for broker in brokers.iter().filter(|b| **b != Broker::Isthmus) {
            let ratio = match (medians[&Broker::Isthmus], medians[broker]) {
                // Latency: how many times lower Isthmus's p99 is.
                (Some(ours), Some(theirs)) if latency && ours > 0.0 => {
                    format!("{:.2}x", theirs / ours)
                }
                (Some(ours), Some(theirs)) if !latency && theirs > 0.0 => {
                    format!("{:.2}x", ours / theirs)
                }
                _ => "-".into(),
            };
            row.push_str(&format!(" {ratio} |"));
        }
        let _ = writeln!(out, "{row}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Latency ratios are peer p99 / Isthmus p99 (above 1: Isthmus is lower).");
    let _ = writeln!(out, "\n## Every run\n");
    for ((index, broker), outcomes) in results {
        let runs: Vec<String> = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Throughput(t) if t.delivered == t.expected => format!("{:.0}", t.per_s),
                Outcome::Throughput(t) => {
                    format!("{:.0} ({} of {})", t.per_s, t.delivered, t.expected)
                }
                Outcome::Latency(l) => {
                    format!(
                        "p50 {} / p99 {} / p99.9 {} / max {} us",
                        l.p50_us, l.p99_us, l.p999_us, l.max_us
                    )
                }
                Outcome::Failed(e) => format!("failed: {e}"),
            })
            .collect();
        let _ = writeln!(out, "- {} / {}: {}", scenarios[*index].0, broker.name(), runs.join("; "));
    }
    out
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
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
