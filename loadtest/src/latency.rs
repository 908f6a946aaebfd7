//! Fixed-rate latency, NATS or MQTT: one publisher sends at `rate` messages per second, one
//! subscriber on another connection records each message's delay in an hdrhistogram. The
//! delay is measured from the message's *intended* send time, which travels in its first 8
//! payload bytes: a broker (or harness) stall shows as latency of every message it delayed,
//! not as a pause in sending (coordinated omission corrected at the source).
//!
//! A warm-up of `warmup` messages at the same rate goes first and is not recorded: on the
//! measurement VM the first few hundred ms of any run across two cores were slow for every
//! broker that parks its threads between messages (Isthmus with 2 shards: p50 270-430 us and
//! a 2.5-3.9 ms maximum over the first 2,000 messages at 20k/s, 13-17 us with 1 shard; see
//! tuning/results/2026-12-01-latency-warmup.md), which is the host waking idle vCPUs, not the
//! steady state the scenario is for.

use crate::mqtt::{self, Publisher};
use crate::nats;
use crate::progress::Progress;
use crate::pubsub::{self, default_window, End, Endpoint, Watch};
use crate::{io_error, run_id, Latency, Measurement, Throughput};
use hdrhistogram::Histogram;
use serde_json::Map;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many messages, how fast, how big.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pace {
    /// Messages to record.
    pub messages: u64,
    /// Messages sent first, at the same rate, and not recorded.
    pub warmup: u64,
    /// Messages per second.
    pub rate: u64,
    /// Payload bytes (at least 8: the intended send time travels in the payload).
    pub size: usize,
    /// The run gives up after this long.
    pub limit: Duration,
    /// Write every recorded message's intended send time and latency to this file.
    pub trace: Option<PathBuf>,
}

/// `--trace`: a header line `start_unix_ns N` (the schedule's origin on the wall clock, to
/// line the file up with `perf record -k realtime`), then one `sent_ns latency_us` line per
/// recorded message, `sent_ns` being its intended send time in ns after the origin.
fn write_trace(path: &Path, origin: Instant, trace: &[(u64, u64)]) -> Result<(), String> {
    let since_origin = origin.elapsed();
    let start_unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .saturating_sub(since_origin)
        .as_nanos();
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "start_unix_ns {start_unix_ns}").map_err(|e| e.to_string())?;
    for (sent_ns, latency_us) in trace {
        writeln!(out, "{sent_ns} {latency_us}").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| format!("{}: {e}", path.display()))
}

/// NATS round trip through the broker at a fixed rate.
pub fn nats_latency(addr: &str, pace: &Pace) -> Result<Measurement, String> {
    let end = Endpoint { protocol: End::Nats, addr, name: b"loadtest.latency" };
    paced("nats-latency", end, pace)
}

/// MQTT 3.1.1 at a fixed rate, publish and subscription at `qos` (0, 1 or 2); the delay is
/// to the delivery of the PUBLISH, not to its acknowledgements.
pub fn mqtt_latency(addr: &str, pace: &Pace, qos: u8) -> Result<Measurement, String> {
    let end = Endpoint { protocol: End::Mqtt { qos: qos.min(2) }, addr, name: b"loadtest/latency" };
    paced("mqtt-latency", end, pace)
}

fn paced(scenario: &'static str, end: Endpoint, pace: &Pace) -> Result<Measurement, String> {
    let Pace { messages, warmup, rate, size, limit, .. } = *pace;
    let total = warmup + messages;
    // Messages intended before this (nanoseconds after `origin`) are the warm-up.
    let recorded_from = warmup * (1_000_000_000 / rate.max(1));
    let size = size.max(8);
    let run = run_id();
    let progress = Arc::new(Progress::new(scenario, total, "msgs"));
    let watch = Arc::new(Watch {
        start: Instant::now(),
        limit,
        published: Arc::new(AtomicBool::new(false)),
    });
    let mut subscriber = pubsub::subscribe(&end, None, &format!("lt-{run}-sub"))?;
    // The publisher connects before the schedule starts: its handshake is not message latency
    // (counted from `origin`, it showed as a few ms on the first messages of every run).
    let connection = connect_publisher(&end, &run)?;
    let origin = Instant::now();
    let reader = {
        let (watch, progress) = (Arc::clone(&watch), Arc::clone(&progress));
        let trace_path = pace.trace.clone();
        let protocol = end.protocol;
        std::thread::spawn(move || -> Result<(Histogram<u64>, u64, u8, u64), String> {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
            let mut count = 0u64;
            // (latency, intended send time) of the slowest message so far.
            let mut slowest = (0u64, 0u64);
            let mut trace =
                Vec::with_capacity(if trace_path.is_some() { total as usize } else { 0 });
            let goal = AtomicU64::new(0);
            let received =
                pubsub::receive(&mut subscriber, protocol, &goal, total, &watch, &progress, |p| {
                    let Some(sent) = p.get(..8) else { return false };
                    let sent_ns = u64::from_le_bytes(sent.try_into().expect("8 bytes"));
                    if sent_ns < recorded_from {
                        return true;
                    }
                    let now_ns = origin.elapsed().as_nanos() as u64;
                    let latency_us = (now_ns.saturating_sub(sent_ns) / 1000).max(1);
                    histogram.saturating_record(latency_us);
                    if trace_path.is_some() {
                        trace.push((sent_ns, latency_us));
                    }
                    if latency_us > slowest.0 {
                        slowest = (latency_us, sent_ns);
                    }
                    count += 1;
                    true
                })?;
            if let Some(path) = &trace_path {
                write_trace(path, origin, &trace)?;
            }
            Ok((histogram, count, received.qos_max, slowest.1 / 1_000_000))
        })
    };
    let sending =
        send_paced(&end, connection, &Pace { messages: total, trace: None, ..*pace }, size, origin);
    watch.published.store(true, std::sync::atomic::Ordering::Release);
    let received = reader.join().map_err(|_| "subscriber panicked")?;
    drop(progress);
    sending?;
    let (histogram, delivered, qos_max, max_at_ms) = received?;
    // The recorded part of the run: from the first recorded message's intended time.
    let elapsed = (origin.elapsed().as_secs_f64() - recorded_from as f64 / 1e9).max(1e-9);
    let mut parameters = Map::new();
    parameters.insert("messages".into(), messages.into());
    parameters.insert("warmup".into(), warmup.into());
    parameters.insert("rate".into(), rate.into());
    parameters.insert("size".into(), size.into());
    if let End::Mqtt { qos } = end.protocol {
        parameters.insert("qos".into(), qos.into());
    }
    Ok(Measurement {
        scenario,
        parameters,
        throughput: Some(Throughput {
            delivered,
            expected: messages,
            duplicates: 0,
            per_s: delivered as f64 / elapsed,
            unit: "msgs/s",
            elapsed_s: elapsed,
        }),
        latency: Some(Latency { max_at_ms: Some(max_at_ms), ..Latency::of(&histogram) }),
        memory: None,
        extra: pubsub::delivered_qos(end.protocol, std::iter::once(qos_max)),
    })
}

/// The publisher's connection, handshake done.
fn connect_publisher(end: &Endpoint, run: &str) -> Result<TcpStream, String> {
    match end.protocol {
        End::Nats => nats::connect(end.addr).map_err(io_error),
        End::Mqtt { .. } => mqtt::connect(end.addr, &format!("lt-{run}-pub")).map_err(io_error),
    }
}

/// The publisher: message `i` is due at `i / rate` after `origin` and carries that time.
fn send_paced(
    end: &Endpoint,
    stream: TcpStream,
    pace: &Pace,
    size: usize,
    origin: Instant,
) -> Result<(), String> {
    let interval = Duration::from_nanos(1_000_000_000 / pace.rate.max(1));
    let deadline = origin + pace.limit;
    let due = |i: u64| interval * i as u32;
    let wait = |intended: Duration| {
        while origin.elapsed() < intended {
            std::thread::yield_now();
        }
    };
    match end.protocol {
        End::Nats => {
            let mut stream = stream;
            let mut frame = Vec::new();
            nats::publish(&mut frame, end.name, None, &vec![b'x'; size]);
            let at = frame.len() - size - 2;
            for i in 0..pace.messages {
                let intended = due(i);
                wait(intended);
                frame[at..at + 8].copy_from_slice(&(intended.as_nanos() as u64).to_le_bytes());
                stream.write_all(&frame).map_err(io_error)?;
            }
            nats::sync(&mut stream).map_err(io_error)
        }
        End::Mqtt { qos } => {
            let id_len = if qos > 0 { 2 } else { 0 };
            let mut frame = Vec::new();
            mqtt::remaining_length(
                &mut frame,
                0x30 | (qos << 1),
                2 + end.name.len() + id_len + size,
            );
            mqtt::string(&mut frame, end.name);
            let id_at = frame.len();
            frame.resize(id_at + id_len + size, b'x');
            let at = id_at + id_len;
            let publisher = Publisher::start(stream, qos, pace.messages, deadline);
            let window = default_window(qos);
            let mut packet_id = 0u16;
            for i in 0..pace.messages {
                if qos > 0 {
                    // A full window delays the send; the intended time still counts from the
                    // schedule, so the wait shows as latency.
                    publisher.wait_window(i, window, deadline)?;
                    packet_id = packet_id.checked_add(1).unwrap_or(1);
                    frame[id_at..id_at + 2].copy_from_slice(&packet_id.to_be_bytes());
                }
                let intended = due(i);
                wait(intended);
                frame[at..at + 8].copy_from_slice(&(intended.as_nanos() as u64).to_le_bytes());
                publisher.write(&frame)?;
            }
            publisher.finish()
        }
    }
}
