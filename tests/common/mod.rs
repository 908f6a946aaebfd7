//! Shared harness for the wire-level NATS tests: start a broker process, talk to it with raw
//! bytes or with async-nats.
//!
//! `ISTHMUS_TEST_PEER=nats-server` runs the same tests against Debian's `nats-server` (2.9.10)
//! instead of the isthmus binary, so every assertion can be checked against the reference
//! implementation. `ISTHMUS_TEST_PEER=mosquitto` does the same for the MQTT tests with Debian's
//! `mosquitto` (2.0.x): see [`mqtt_broker`] and [`isthmus_broker`], and [`mqtt`] for the MQTT
//! clients. The MQTT settings in `[mqtt]` are translated for mosquitto where it has an
//! equivalent (`max_packet_bytes`, `receive_maximum`, `max_queued_messages`,
//! `topic_alias_maximum`, `server_keep_alive_s`). The isthmus settings in `extra_toml` (`[nats] max_payload`,
//! `max_control_line`, `max_pending`, `ping_interval_ms`, `ping_max`, `write_deadline_ms`;
//! `[server] name`) are translated into a nats-server config file; other keys are ignored. Shard placement (`client_id % shards`) is
//! meaningless for nats-server, but its client ids count up from 1, so the helpers still work.

#![allow(dead_code)]

pub mod mqtt;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long a broker may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Default wait for a single expected line.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which server the tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The isthmus binary built by cargo (default).
    Isthmus,
    /// Debian's `nats-server`, the reference implementation.
    NatsServer,
    /// Debian's `mosquitto`, the MQTT reference implementation (MQTT tests only).
    Mosquitto,
}

/// Reads `ISTHMUS_TEST_PEER` (unset or `isthmus` -> isthmus; `nats-server` -> nats-server;
/// `mosquitto` -> mosquitto).
pub fn peer() -> Peer {
    match std::env::var("ISTHMUS_TEST_PEER").as_deref() {
        Ok("nats-server") => Peer::NatsServer,
        Ok("mosquitto") => Peer::Mosquitto,
        Ok("") | Ok("isthmus") | Err(_) => Peer::Isthmus,
        Ok(other) => {
            panic!("ISTHMUS_TEST_PEER={other}: expected `isthmus`, `nats-server` or `mosquitto`")
        }
    }
}

/// Starts the broker for a test that speaks MQTT only: isthmus, or mosquitto with
/// `ISTHMUS_TEST_PEER=mosquitto`. With the nats-server peer (which has no MQTT listener here)
/// it prints a note and returns `None`; the test then returns early.
pub fn mqtt_broker(shards: usize, extra_toml: &str) -> Option<Broker> {
    if peer() == Peer::NatsServer {
        eprintln!("note: MQTT test skipped: ISTHMUS_TEST_PEER=nats-server has no MQTT listener");
        return None;
    }
    Some(Broker::start(shards, extra_toml))
}

/// Starts isthmus for a test of isthmus-only behaviour (NATS <-> MQTT interop, isthmus
/// limits). With a reference peer it prints a note naming `why` and returns `None`.
pub fn isthmus_broker(shards: usize, extra_toml: &str, why: &str) -> Option<Broker> {
    if peer() != Peer::Isthmus {
        eprintln!("note: test skipped with ISTHMUS_TEST_PEER={:?}: {why}", peer());
        return None;
    }
    Some(Broker::start(shards, extra_toml))
}

/// A running broker process; killed when dropped.
pub struct Broker {
    /// Port of the NATS client listener (0 for mosquitto, which has none).
    pub port: u16,
    /// Port of the MQTT listener; 0 when the broker reported none (an isthmus binary from
    /// before MQTT, or nats-server).
    pub mqtt_port: u16,
    /// Shard count the broker was started with. For nats-server it is kept as requested so the
    /// `client_id % shards` helpers behave the same.
    pub shards: usize,
    /// Which implementation is running.
    pub peer: Peer,
    child: Child,
    config_path: PathBuf,
}

impl Broker {
    /// Starts a broker with `shards` shards; `extra_toml` is isthmus TOML config (may be empty).
    /// Blocks until the broker is ready (at most [`READY_TIMEOUT`]).
    pub fn start(shards: usize, extra_toml: &str) -> Broker {
        let mut table: toml::Table = toml::from_str(extra_toml)
            .unwrap_or_else(|e| panic!("test config is not valid TOML: {e}\n{extra_toml}"));
        match peer() {
            Peer::Isthmus => Self::start_isthmus(shards, &mut table),
            Peer::NatsServer => Self::start_nats_server(shards, &table),
            Peer::Mosquitto => Self::start_mosquitto(shards, &table),
        }
    }

    /// `127.0.0.1:MQTT_PORT`; panics when the broker has no MQTT listener.
    pub fn mqtt_addr(&self) -> String {
        assert_ne!(self.mqtt_port, 0, "{:?} reported no MQTT listener", self.peer);
        format!("127.0.0.1:{}", self.mqtt_port)
    }

    /// True for isthmus, the only peer with both protocols and isthmus' own limits.
    pub fn is_isthmus(&self) -> bool {
        self.peer == Peer::Isthmus
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `nats://127.0.0.1:PORT`, for async-nats.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn start_isthmus(shards: usize, table: &mut toml::Table) -> Broker {
        // Several brokers run at once (tests run in parallel); pinning each one's shard i to
        // CPU i would stack them all on the same cores. A test can still set pin_cores itself.
        let server =
            table.entry("server").or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(server) = server {
            server.entry("pin_cores").or_insert(toml::Value::Boolean(false));
        }
        let text = toml::to_string(table).expect("TOML serialises");
        let config_path = write_temp_config("toml", &text);
        let mut command = Command::new(env!("CARGO_BIN_EXE_isthmus"));
        command.arg("serve").arg("--nats-listen").arg("127.0.0.1:0");
        command.arg("--mqtt-listen").arg("127.0.0.1:0");
        let mut child = command
            .arg("--shards")
            .arg(shards.to_string())
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn isthmus binary");
        let (tx, rx) = mpsc::channel::<(u16, u16)>();
        let stdout = child.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[isthmus stdout] {line}");
                if let Some(ports) = parse_ready_line(&line) {
                    let _ = tx.send(ports);
                }
            }
        });
        forward_stderr(&mut child, "isthmus", None);
        let (port, mqtt_port) = wait_ready(&mut child, &rx, "isthmus");
        Broker { port, mqtt_port, shards, peer: Peer::Isthmus, child, config_path }
    }

    fn start_nats_server(shards: usize, table: &toml::Table) -> Broker {
        let nats = table.get("nats").and_then(|v| v.as_table());
        let int = |key: &str| nats.and_then(|t| t.get(key)).and_then(|v| v.as_integer());
        let mut conf = String::from("host: 127.0.0.1\nport: -1\n");
        if let Some(name) = table.get("server").and_then(|s| s.get("name")).and_then(|v| v.as_str())
        {
            conf.push_str(&format!("server_name: \"{name}\"\n"));
        }
        for key in ["max_payload", "max_control_line", "max_pending", "ping_max"] {
            if let Some(value) = int(key) {
                conf.push_str(&format!("{key}: {value}\n"));
            }
        }
        if let Some(ms) = int("ping_interval_ms") {
            conf.push_str(&format!("ping_interval: \"{ms}ms\"\n"));
        }
        // A slow consumer is only disconnected once nats-server's blocked socket write gives
        // up (write_deadline, 10 s by default), even after it flagged MaxPending; isthmus closes
        // at once. Unless the test sets one, a short deadline keeps the slow-consumer test fast
        // against nats-server.
        let write_deadline_ms = int("write_deadline_ms").unwrap_or(2000);
        conf.push_str(&format!("write_deadline: \"{write_deadline_ms}ms\"\n"));
        let config_path = write_temp_config("conf", &conf);
        let mut child = Command::new("nats-server")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nats-server (apt-get install -y nats-server)");
        let (tx, rx) = mpsc::channel::<u16>();
        forward_stderr(&mut child, "nats-server", Some(tx));
        let port = wait_ready(&mut child, &rx, "nats-server");
        Broker { port, mqtt_port: 0, shards, peer: Peer::NatsServer, child, config_path }
    }

    fn start_mosquitto(shards: usize, table: &toml::Table) -> Broker {
        let mqtt = table.get("mqtt").and_then(|v| v.as_table());
        let int = |key: &str| mqtt.and_then(|t| t.get(key)).and_then(|v| v.as_integer());
        // mosquitto cannot be told to pick a port and report it: take a free one from the
        // kernel and hand it over (a race with another process is possible but unlikely).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
             log_type information\nconnection_messages true\n"
        );
        for (ours, theirs) in [
            ("max_packet_bytes", "max_packet_size"),
            // mosquitto's one inflight limit is also the Receive Maximum it sends in CONNACK.
            ("receive_maximum", "max_inflight_messages"),
            ("max_queued_messages", "max_queued_messages"),
            ("topic_alias_maximum", "max_topic_alias"),
            ("server_keep_alive_s", "max_keepalive"),
        ] {
            if let Some(value) = int(ours) {
                conf.push_str(&format!("{theirs} {value}\n"));
            }
        }
        let config_path = write_temp_config("conf", &conf);
        let mut child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mosquitto (apt-get install -y mosquitto)");
        forward_stderr(&mut child, "mosquitto", None);
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("mosquitto exited before accepting connections: {status}\n{conf}");
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mosquitto did not accept connections within {READY_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { port: 0, mqtt_port: port, shards, peer: Peer::Mosquitto, child, config_path }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// `ready nats=127.0.0.1:P mqtt=127.0.0.1:Q shards=N` -> (P, Q).
fn parse_ready_line(line: &str) -> Option<(u16, u16)> {
    let rest = line.trim().strip_prefix("ready ")?;
    let port = |key: &str| -> Option<u16> {
        let addr = rest.split_whitespace().find_map(|f| f.strip_prefix(key))?;
        addr.rsplit(':').next()?.parse().ok()
    };
    Some((port("nats=")?, port("mqtt=")?))
}

/// Copies the child's stderr into the test's (captured) stderr; with `ready`, also reports the
/// port from nats-server's "Listening for client connections on HOST:PORT" log line.
fn forward_stderr(child: &mut Child, name: &'static str, ready: Option<mpsc::Sender<u16>>) {
    let stderr = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[{name}] {line}");
            if let Some(tx) = &ready {
                if let Some((_, addr)) = line.split_once("Listening for client connections on ") {
                    if let Some(port) = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok())
                    {
                        let _ = tx.send(port);
                    }
                }
            }
        }
    });
}

fn wait_ready<T>(child: &mut Child, rx: &mpsc::Receiver<T>, name: &str) -> T {
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(port) => port,
        Err(e) => {
            let status = child.try_wait().ok().flatten();
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not report readiness within {READY_TIMEOUT:?} ({e}); exit status: {status:?}");
        }
    }
}

fn write_temp_config(ext: &str, text: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("isthmus-test-{}-{n}-{nanos}.{ext}", std::process::id()));
    std::fs::write(&path, text).expect("write temp config");
    path
}

// ---------------------------------------------------------------------------------------------
// Raw socket client
// ---------------------------------------------------------------------------------------------

/// A NATS connection driven byte by byte.
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server's INFO, parsed.
    pub info: serde_json::Value,
    /// Answer server PINGs inside [`Raw::read_line`] and hide them (default true). Servers ping
    /// idle clients (nats-server 2.9.10 sends its first PING to a client after 2 s even with
    /// the default 2 min interval), which would otherwise break line-by-line expectations.
    pub auto_pong: bool,
}

impl Raw {
    /// Connects and reads INFO; sends nothing.
    pub async fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        Self::greet(stream).await
    }

    /// Connects with a tiny kernel receive buffer, so a client that does not read fills up fast.
    pub async fn connect_small_rcvbuf(addr: &str, bytes: u32) -> Raw {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(addr.parse().expect("addr")).await.expect("tcp connect");
        Self::greet(stream).await
    }

    /// Connects, reads INFO, sends `CONNECT {connect_json}` and checks with PING/PONG that the
    /// server accepted it.
    pub async fn connect_with(addr: &str, connect_json: &str) -> Raw {
        let mut raw = Self::connect(addr).await;
        raw.send(format!("CONNECT {connect_json}\r\nPING\r\n").as_bytes()).await;
        raw.expect_line("PONG", LINE_TIMEOUT).await;
        raw
    }

    /// Connects with `{"verbose":false}` (what real clients send).
    pub async fn connect_quiet(addr: &str) -> Raw {
        Self::connect_with(addr, r#"{"verbose":false,"pedantic":false,"headers":true}"#).await
    }

    async fn greet(stream: TcpStream) -> Raw {
        stream.set_nodelay(true).ok();
        let mut raw =
            Raw { stream, buf: Vec::new(), info: serde_json::Value::Null, auto_pong: true };
        let line = raw.expect_line("INFO ", LINE_TIMEOUT).await;
        raw.info = serde_json::from_str(&line["INFO ".len()..])
            .unwrap_or_else(|e| panic!("INFO is not JSON ({e}): {line}"));
        raw
    }

    /// INFO `client_id`.
    pub fn client_id(&self) -> u64 {
        self.info["client_id"].as_u64().expect("INFO client_id")
    }

    /// Writes all bytes; panics on error.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).await.expect("write to broker");
    }

    /// Writes all bytes.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads the next line (without CRLF). `Ok(None)` = connection closed before a full line.
    pub async fn read_line(&mut self, timeout: Duration) -> Result<Option<String>, &'static str> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).take(pos).collect();
                if self.auto_pong && line == b"PING" {
                    // The server may already be closing us; the caller finds out on its own.
                    let _ = self.try_send(b"PONG\r\n").await;
                    continue;
                }
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            match self.fill(deadline).await {
                Fill::Data => {}
                Fill::Closed => return Ok(None),
                Fill::TimedOut => return Err("timed out"),
            }
        }
    }

    /// Reads exactly `n` bytes (e.g. a payload plus its CRLF).
    pub async fn read_exact(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.buf.len() < n {
            match self.fill(deadline).await {
                Fill::Data => {}
                Fill::Closed => panic!("connection closed while waiting for {n} bytes"),
                Fill::TimedOut => panic!("timed out waiting for {n} bytes"),
            }
        }
        self.buf.drain(..n).collect()
    }

    /// The next line must start with `prefix`; returns the whole line.
    pub async fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        match self.read_line(timeout).await {
            Ok(Some(line)) => {
                assert!(
                    line.starts_with(prefix),
                    "expected a line starting with {prefix:?}, got {line:?}"
                );
                line
            }
            Ok(None) => panic!("expected {prefix:?}, but the connection was closed"),
            Err(e) => panic!("expected {prefix:?}: {e} after {timeout:?}"),
        }
    }

    /// Expects `MSG <subject> <sid> [reply] <n>` followed by `payload`; returns the MSG line.
    pub async fn expect_msg(&mut self, subject: &str, payload: &[u8], timeout: Duration) -> String {
        let line = self.expect_line("MSG ", timeout).await;
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.get(1).copied(), Some(subject), "MSG subject in {line:?}");
        let size: usize = fields.last().unwrap().parse().expect("MSG size");
        assert_eq!(size, payload.len(), "MSG size in {line:?}");
        let body = self.read_exact(size + 2, timeout).await;
        assert_eq!(&body[..size], payload, "payload of {line:?}");
        assert_eq!(&body[size..], b"\r\n", "payload terminator of {line:?}");
        line
    }

    /// The server must close the connection within `timeout`; returns whatever bytes arrived
    /// before the close (already-buffered data included). A reset counts as closed.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.fill(deadline).await {
                Fill::Data => {}
                Fill::Closed => return std::mem::take(&mut self.buf),
                Fill::TimedOut => panic!(
                    "connection still open after {timeout:?}; unread: {:?}",
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(300)])
                ),
            }
        }
    }

    /// Reads until the connection closes, keeping only a count of bytes and the protocol lines
    /// that are not MSG payloads (payloads are skipped by their declared size).
    pub async fn drain_until_closed(&mut self, timeout: Duration) -> Drained {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut drained = Drained::default();
        loop {
            // Consume complete items from the buffer.
            while let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                if line.starts_with("MSG ") {
                    let size: usize = line.split_whitespace().last().unwrap().parse().unwrap();
                    if self.buf.len() < pos + 2 + size + 2 {
                        break;
                    }
                    self.buf.drain(..pos + 2 + size + 2);
                    drained.msgs += 1;
                } else {
                    self.buf.drain(..pos + 2);
                    drained.other_lines.push(line);
                }
            }
            match self.fill(deadline).await {
                Fill::Data => {}
                Fill::Closed => {
                    drained.trailing = std::mem::take(&mut self.buf);
                    return drained;
                }
                Fill::TimedOut => panic!(
                    "connection still open after {timeout:?} ({} MSGs read, lines {:?})",
                    drained.msgs, drained.other_lines
                ),
            }
        }
    }

    async fn fill(&mut self, deadline: tokio::time::Instant) -> Fill {
        // Read straight into the heap buffer: a stack array here overflows the test thread's
        // stack in debug builds (the future is nested several levels deep).
        self.buf.reserve(64 * 1024);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
            Err(_) => Fill::TimedOut,
            Ok(Ok(0)) => Fill::Closed,
            Ok(Ok(_)) => Fill::Data,
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                Fill::Closed
            }
            Ok(Err(e)) => panic!("read error: {e}"),
        }
    }
}

enum Fill {
    Data,
    Closed,
    TimedOut,
}

/// What [`Raw::drain_until_closed`] saw.
#[derive(Debug, Default)]
pub struct Drained {
    /// Complete MSGs.
    pub msgs: usize,
    /// Every other line (`-ERR ...`, `PING`, ...).
    pub other_lines: Vec<String>,
    /// Incomplete bytes left when the connection closed.
    pub trailing: Vec<u8>,
}

// ---------------------------------------------------------------------------------------------
// async-nats helpers
// ---------------------------------------------------------------------------------------------

/// Default async-nats options for tests: a deep subscription channel (async-nats drops messages
/// when it is full, which would make exact counts flaky for the wrong reason).
pub fn nats_options() -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 18)
        .connection_timeout(Duration::from_secs(5))
}

/// Connects with [`nats_options`].
pub async fn nats_connect(broker: &Broker) -> async_nats::Client {
    nats_options().connect(broker.url()).await.expect("async-nats connect")
}

/// Connects with async-nats until a client lands on `shard` (`client_id % shards == shard`).
pub async fn nats_on_shard(broker: &Broker, shard: usize) -> async_nats::Client {
    const TRIES: usize = 64;
    for _ in 0..TRIES {
        let client = nats_connect(broker).await;
        let cid = client.server_info().client_id;
        if cid as usize % broker.shards == shard {
            return client;
        }
        drop(client);
    }
    panic!("no connection landed on shard {shard} of {} in {TRIES} tries", broker.shards);
}

/// Raw connection (after CONNECT) on `shard`.
pub async fn raw_on_shard(broker: &Broker, shard: usize) -> Raw {
    const TRIES: usize = 64;
    for _ in 0..TRIES {
        let raw = Raw::connect_quiet(&broker.addr()).await;
        if raw.client_id() as usize % broker.shards == shard {
            return raw;
        }
    }
    panic!("no raw connection landed on shard {shard} of {} in {TRIES} tries", broker.shards);
}

/// Waits until subscriptions that `subscriber` made so far are visible to messages that
/// `publisher` publishes.
///
/// `Client::flush` in async-nats 0.38 only flushes the socket buffer; it does not do a
/// PING/PONG round trip, so after `subscribe` + `flush` the server may not have processed the
/// SUB yet (against nats-server 2.9.10 about one in 200 first messages was lost that way). So:
/// subscribe to a fresh inbox subject on the same connection (after the real subscriptions)
/// and publish probes from `publisher` until one arrives. SUBs on one connection take effect
/// in order, so the earlier ones are in place too. Probes use `_INBOX.` subjects; a test
/// subscribed to `>` must ignore them.
pub async fn sync_interest(subscriber: &async_nats::Client, publisher: &async_nats::Client) {
    let subject = subscriber.new_inbox();
    let mut probe = subscriber.subscribe(subject.clone()).await.expect("probe subscribe");
    subscriber.flush().await.expect("flush");
    for _ in 0..400 {
        publisher.publish(subject.clone(), "".into()).await.expect("probe publish");
        publisher.flush().await.expect("flush");
        let got =
            tokio::time::timeout(Duration::from_millis(25), futures::StreamExt::next(&mut probe));
        if let Ok(msg) = got.await {
            msg.expect("probe subscription open");
            probe.unsubscribe().await.expect("probe unsubscribe");
            subscriber.flush().await.expect("flush");
            return;
        }
    }
    panic!("subscription never became visible to the publisher (10 s of probes)");
}

/// Checks that the broker still serves pub/sub: a message published by a fresh async-nats
/// client reaches a fresh subscriber. Call after a misbehaving client.
pub async fn assert_broker_healthy(broker: &Broker) {
    let sub_client = nats_connect(broker).await;
    let pub_client = nats_connect(broker).await;
    let subject = format!("health.{}", sub_client.server_info().client_id);
    let mut sub = sub_client.subscribe(subject.clone()).await.expect("subscribe");
    sync_interest(&sub_client, &pub_client).await;
    pub_client.publish(subject.clone(), "ok".into()).await.expect("publish");
    pub_client.flush().await.expect("flush");
    let msg = tokio::time::timeout(LINE_TIMEOUT, futures::StreamExt::next(&mut sub))
        .await
        .expect("healthy pub/sub within 5 s")
        .expect("subscription open");
    assert_eq!(msg.payload.as_ref(), b"ok");
}

/// Runs `fut` with an overall deadline, so a hang fails the test instead of blocking CI.
pub async fn within<F: std::future::Future>(limit: Duration, fut: F) -> F::Output {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"))
}

/// An Isthmus in this process (so its counters can be read), on loopback ports it picks,
/// unpinned, with `[mqtt]` keys from `mqtt_toml`.
pub fn in_process(shards: usize, mqtt_toml: &str) -> isthmus::serve::Running {
    in_process_toml(shards, &format!("[mqtt]\n{mqtt_toml}"))
}

/// [`in_process`] with a whole TOML document (any table); the NATS and MQTT listeners are
/// still put on free loopback ports.
pub fn in_process_toml(shards: usize, toml: &str) -> isthmus::serve::Running {
    let mut config = isthmus::config::Config::from_toml(toml).expect("test config");
    config.server.shards = shards;
    config.server.pin_cores = false;
    config.nats.listen = "127.0.0.1:0".parse().unwrap();
    config.mqtt.listen = "127.0.0.1:0".parse().unwrap();
    isthmus::serve::start(config).expect("start broker")
}

/// One counter of an in-process broker, summed over its shards.
pub fn counter(
    running: &isthmus::serve::Running,
    field: fn(&isthmus::stats::ShardStats) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    running.stats.iter().map(|s| isthmus::stats::ShardStats::get(field(s))).sum()
}
