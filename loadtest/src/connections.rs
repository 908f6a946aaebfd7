//! Connections rather than messages: a connection storm (handshakes per second and the
//! handshake's latency) and idle connections (the broker's resident memory per connection,
//! read from `/proc/<pid>/status`).
//!
//! A NATS handshake is INFO, CONNECT, PING, PONG; an MQTT one CONNECT, CONNACK. Idle
//! connections are spread over several 127.0.0.x source addresses (bound before connecting),
//! so that tens of thousands of them do not run out of ephemeral ports; the harness answers
//! server PINGs and sends its own PINGREQ (MQTT) or PING (NATS) every half keep alive, so
//! brokers that enforce keep alive keep them. Each connection costs the harness one file
//! descriptor and the broker one: the process limit (`ulimit -n`) bounds N.

use crate::mqtt::{self, timed_out};
use crate::nats;
use crate::progress::Progress;
use crate::{io_error, run_id, Latency, Measurement, Memory, Throughput};
use hdrhistogram::Histogram;
use serde_json::Map;
use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// INFO, CONNECT, PING, PONG.
    Nats,
    /// MQTT 3.1.1 CONNECT, CONNACK.
    Mqtt,
}

impl Protocol {
    /// `nats` or `mqtt`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Nats => "nats",
            Protocol::Mqtt => "mqtt",
        }
    }
}

/// The shape of a connection storm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Storm {
    /// Which handshake.
    pub protocol: Protocol,
    /// Connections in all.
    pub connections: u64,
    /// Connectors working at once, each doing its share one after another.
    pub concurrency: usize,
    /// Keep every connection open until the end (default: close each after its handshake).
    pub keep: bool,
    /// The run gives up after this long.
    pub limit: Duration,
}

/// Opens `connections` connections, `concurrency` at a time; reports handshakes per second and
/// the percentiles of one handshake (connect to CONNACK or PONG).
pub fn storm(addr: &str, shape: &Storm) -> Result<Measurement, String> {
    let Storm { protocol, connections, concurrency, keep, limit } = *shape;
    let concurrency = concurrency.clamp(1, connections.max(1) as usize);
    let run = run_id();
    let progress = Arc::new(Progress::new("connection-storm", connections, "conns"));
    let failures = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let (addr, run) = (addr.to_string(), run.clone());
        let (progress, failures) = (Arc::clone(&progress), Arc::clone(&failures));
        workers.push(std::thread::spawn(move || -> Result<(Histogram<u64>, u64), String> {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
            let mut kept = Vec::new();
            let mut done = 0;
            let mut index = worker as u64;
            while index < connections && start.elapsed() < limit {
                let began = Instant::now();
                match handshake(&addr, protocol, &format!("lt-{run}-storm-{index}"), 60) {
                    Ok(mut stream) => {
                        histogram.saturating_record((began.elapsed().as_micros() as u64).max(1));
                        done += 1;
                        if keep {
                            kept.push(stream);
                        } else if protocol == Protocol::Mqtt {
                            let _ = stream.write_all(&mqtt::DISCONNECT);
                        }
                    }
                    Err(error) => {
                        if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("connection-storm: {error}");
                        }
                    }
                }
                progress.add(1);
                index += concurrency as u64;
            }
            Ok((histogram, done))
        }));
    }
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut delivered = 0;
    for worker in workers {
        let (part, done) = worker.join().map_err(|_| "connector panicked")??;
        histogram.add(&part).map_err(|e| e.to_string())?;
        delivered += done;
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(progress);
    let mut parameters = Map::new();
    parameters.insert("protocol".into(), protocol.name().into());
    parameters.insert("connections".into(), connections.into());
    parameters.insert("concurrency".into(), concurrency.into());
    parameters.insert("keep".into(), keep.into());
    Ok(Measurement {
        scenario: "connection-storm",
        parameters,
        throughput: Some(Throughput {
            delivered,
            expected: connections,
            duplicates: 0,
            per_s: delivered as f64 / elapsed,
            unit: "conns/s",
            elapsed_s: elapsed,
        }),
        latency: (delivered > 0).then(|| Latency::of(&histogram)),
        memory: None,
        extra: Map::new(),
    })
}

/// The shape of an idle-connection run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Idle {
    /// Which handshake.
    pub protocol: Protocol,
    /// Connections opened in each round (all stay open until the end).
    pub connections: u64,
    /// Rounds; the first also pays for one-time growth of the broker's pools.
    pub rounds: usize,
    /// MQTT keep alive in the CONNECT, seconds; the harness pings every half of it.
    pub keep_alive_s: u16,
    /// 127.0.0.x source addresses to spread the connections over (from 127.0.0.2).
    pub sources: u8,
    /// The broker's process id, for its RSS (without one, only the connections are counted).
    pub pid: Option<u32>,
    /// How long to wait after each round before reading the RSS.
    pub settle: Duration,
}

/// Opens `rounds` rounds of `connections` idle connections and keeps them all open and
/// pinged; reports the broker's RSS growth per connection in each round. Fails if the broker
/// closes any of them.
pub fn idle(addr: &str, shape: &Idle) -> Result<Measurement, String> {
    let Idle { protocol, connections, rounds, keep_alive_s, sources, pid, settle } = *shape;
    let target: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let run = run_id();
    let total = connections * rounds as u64;
    let progress = Progress::new("idle-connections", total, "conns");
    let rss_before = pid.map(steady_rss_kib).transpose()?;
    let mut held = Held::new(protocol, keep_alive_s);
    let mut per_round = Vec::new();
    let mut last_rss = rss_before;
    let mut opening = Duration::ZERO;
    let mut opened = 0u64;
    for round in 0..rounds {
        let began = Instant::now();
        let mut index = round as u64 * connections;
        let end = index + connections;
        while index < end {
            let batch = (end - index).min(IDLE_BATCH);
            let mut fresh = Vec::with_capacity(batch as usize);
            for k in index..index + batch {
                let source = Ipv4Addr::new(127, 0, 0, 2 + (k % u64::from(sources.max(1))) as u8);
                let mut stream = connect_from(source, target)?;
                let hello = match protocol {
                    Protocol::Nats => [nats::connect_line(), b"PING\r\n"].concat(),
                    Protocol::Mqtt => {
                        mqtt::connect_packet(&format!("lt-{run}-idle-{k}"), keep_alive_s)
                    }
                };
                stream.write_all(&hello).map_err(io_error)?;
                fresh.push(stream);
            }
            for stream in &mut fresh {
                finish_handshake(stream, protocol)?;
                stream.set_nonblocking(true).map_err(io_error)?;
            }
            opened += batch;
            progress.add(batch);
            held.add(fresh);
            held.service()?;
            index += batch;
        }
        opening += began.elapsed();
        held.hold(settle)?;
        if let (Some(pid), Some(before)) = (pid, last_rss) {
            let now = rss_kib(pid)?;
            per_round.push((now as f64 - before as f64) / connections as f64);
            last_rss = Some(now);
        }
    }
    // The rate of opening connections, without the settling waits.
    let elapsed = opening.as_secs_f64().max(1e-6);
    held.hold(Duration::ZERO)?;
    let open = held.open();
    drop(held);
    drop(progress);
    let mut parameters = Map::new();
    parameters.insert("protocol".into(), protocol.name().into());
    parameters.insert("connections".into(), connections.into());
    parameters.insert("rounds".into(), rounds.into());
    parameters.insert("keep_alive_s".into(), keep_alive_s.into());
    parameters.insert("sources".into(), sources.into());
    parameters.insert("settle_ms".into(), (settle.as_millis() as u64).into());
    let memory = match (rss_before, last_rss) {
        (Some(before), Some(after)) => Some(Memory {
            connections,
            kib_per_connection: per_round,
            rss_before_kib: before,
            rss_after_kib: after,
        }),
        _ => None,
    };
    Ok(Measurement {
        scenario: "idle-connections",
        parameters,
        throughput: Some(Throughput {
            delivered: open,
            expected: opened,
            duplicates: 0,
            per_s: opened as f64 / elapsed,
            unit: "conns/s",
            elapsed_s: elapsed,
        }),
        latency: None,
        memory,
        extra: Map::new(),
    })
}

/// The broker's resident set size, KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{path}: no VmRSS"))
}

/// The broker's RSS once it has stopped moving (within 128 KiB over 250 ms, for at most 5 s):
/// connections closed just before, by an earlier run, are given back to the kernel a while
/// later, and that would show as negative growth per connection.
fn steady_rss_kib(pid: u32) -> Result<u64, String> {
    let mut last = rss_kib(pid)?;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let now = rss_kib(pid)?;
        if now.abs_diff(last) <= 128 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// Idle connections opened before their handshakes are read. Under the broker's listen
/// backlog (mosquitto asks for 100), so no SYN is dropped and retried a second later: with
/// 256, mosquitto took 1,500 connections at 182 per second instead of 20,000.
const IDLE_BATCH: u64 = 64;

/// Connects and completes the handshake; the stream keeps a 10 s read timeout.
fn handshake(
    addr: &str,
    protocol: Protocol,
    client_id: &str,
    keep_alive_s: u16,
) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(io_error)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(io_error)?;
    match protocol {
        Protocol::Nats => {
            let info = nats::read_until(&mut stream, b"\r\n").map_err(io_error)?;
            if !info.starts_with(b"INFO ") {
                return Err(format!("expected INFO, got {:?}", String::from_utf8_lossy(&info)));
            }
            let hello = [nats::connect_line(), b"PING\r\n"].concat();
            stream.write_all(&hello).map_err(io_error)?;
            nats::read_until(&mut stream, b"PONG\r\n").map_err(io_error)?;
        }
        Protocol::Mqtt => {
            stream.write_all(&mqtt::connect_packet(client_id, keep_alive_s)).map_err(io_error)?;
            mqtt::expect_connack(&mut stream).map_err(io_error)?;
        }
    }
    Ok(stream)
}

/// Binds to `source` (any port) and connects to `target`.
fn connect_from(source: Ipv4Addr, target: SocketAddr) -> Result<TcpStream, String> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(io_error)?;
    let local = SocketAddr::from((source, 0));
    socket.bind(&local.into()).map_err(|e| format!("bind {local}: {e}"))?;
    socket.connect(&target.into()).map_err(|e| {
        let hint = if e.raw_os_error() == Some(24) { " (raise ulimit -n)" } else { "" };
        format!("connect {target} from {source}: {e}{hint}")
    })?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).map_err(io_error)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(io_error)?;
    Ok(stream)
}

/// Reads the rest of a pipelined handshake: INFO and PONG (NATS), or CONNACK (MQTT).
fn finish_handshake(stream: &mut TcpStream, protocol: Protocol) -> Result<(), String> {
    match protocol {
        Protocol::Nats => {
            let seen = nats::read_until(stream, b"PONG\r\n").map_err(io_error)?;
            if !seen.starts_with(b"INFO ") {
                return Err(format!("expected INFO, got {:?}", String::from_utf8_lossy(&seen)));
            }
            Ok(())
        }
        Protocol::Mqtt => mqtt::expect_connack(stream).map_err(io_error),
    }
}

/// Idle connections held open: drained, answered and pinged on schedule.
struct Held {
    protocol: Protocol,
    streams: Vec<Option<TcpStream>>,
    ping_every: Duration,
    pinged: Instant,
    closed: u64,
}

impl Held {
    fn new(protocol: Protocol, keep_alive_s: u16) -> Held {
        // Every half keep alive: MQTT brokers close after 1.5 keep alives of silence.
        let ping_every = Duration::from_millis(u64::from(keep_alive_s.max(1)) * 500);
        Held { protocol, streams: Vec::new(), ping_every, pinged: Instant::now(), closed: 0 }
    }

    fn add(&mut self, streams: Vec<TcpStream>) {
        self.streams.extend(streams.into_iter().map(Some));
    }

    fn open(&self) -> u64 {
        self.streams.iter().filter(|s| s.is_some()).count() as u64
    }

    /// Services the connections until `wait` has passed (at least once).
    fn hold(&mut self, wait: Duration) -> Result<(), String> {
        let until = Instant::now() + wait;
        loop {
            self.service()?;
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(Duration::from_millis(200)));
        }
    }

    /// One pass: reads whatever arrived (answering a NATS PING), pings everyone when due, and
    /// notes connections the broker closed.
    fn service(&mut self) -> Result<(), String> {
        let ping = self.pinged.elapsed() >= self.ping_every;
        if ping {
            self.pinged = Instant::now();
        }
        let mut buf = [0u8; 512];
        for slot in &mut self.streams {
            let Some(stream) = slot else { continue };
            let mut alive = true;
            let mut answer = false;
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        alive = false;
                        break;
                    }
                    // PINGRESP and PONG are read and dropped; a server PING wants a PONG.
                    Ok(n) => answer |= buf[..n].windows(4).any(|w| w == b"PING"),
                    Err(e) if timed_out(&e) => break,
                    Err(_) => {
                        alive = false;
                        break;
                    }
                }
            }
            let mut out: &[u8] = &[];
            if self.protocol == Protocol::Nats && answer {
                out = b"PONG\r\n";
            }
            if ping {
                out = match self.protocol {
                    Protocol::Nats if answer => b"PONG\r\nPING\r\n",
                    Protocol::Nats => b"PING\r\n",
                    Protocol::Mqtt => &mqtt::PINGREQ,
                };
            }
            // A full send buffer on an idle connection would mean the broker stopped reading.
            if alive && !out.is_empty() && stream.write(out).map_or(true, |n| n < out.len()) {
                alive = false;
            }
            if !alive {
                *slot = None;
                self.closed += 1;
                if self.closed == 1 {
                    eprintln!("idle-connections: the broker closed an idle connection");
                }
            }
        }
        Ok(())
    }
}
