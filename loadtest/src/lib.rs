//! Scenarios of `isthmus-loadtest`, usable from tests: each talks to a broker only over TCP,
//! is bounded by a message count and a time limit, prints a human line and a `json:` line, and
//! returns what it measured ([`Throughput::complete`] turns a lost message into an error).

pub mod compare;

/// What a throughput run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throughput {
    /// Messages the subscribers received, all together.
    pub delivered: u64,
    /// Messages they should have received.
    pub expected: u64,
    /// Delivered messages per second, up to the last delivery.
    pub per_s: f64,
}

impl Throughput {
    /// The run, or an error if any message did not arrive.
    pub fn complete(self) -> Result<Throughput, String> {
        if self.delivered == self.expected {
            Ok(self)
        } else {
            Err(format!("delivered {} of {} messages", self.delivered, self.expected))
        }
    }
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
}

use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut info = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut info)?;
    if !info.starts_with("INFO ") {
        return Err(std::io::Error::other(format!("expected INFO, got {info:?}")));
    }
    stream.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\n")?;
    Ok(stream)
}

/// Sends PING and reads until PONG, discarding anything before it.
fn sync(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.write_all(b"PING\r\n")?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("closed before PONG"));
        }
        if line.starts_with("PONG") {
            return Ok(());
        }
        if line.starts_with("-ERR") {
            return Err(std::io::Error::other(line.trim().to_string()));
        }
    }
}

/// Publishers -> subscribers on one subject; fails unless every subscriber got every message.
pub fn pubsub(
    addr: &str,
    messages: u64,
    size: usize,
    publishers: usize,
    subscribers: usize,
    limit: Duration,
) -> Result<Throughput, String> {
    let subject = "loadtest.pubsub";
    let expected = messages * publishers as u64;
    let frame_len = format!("MSG {subject} 1 {size}\r\n").len() + size + 2;
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let mut stream = connect(addr).map_err(|e| e.to_string())?;
        stream.write_all(format!("SUB {subject} 1\r\n").as_bytes()).map_err(|e| e.to_string())?;
        sync(&mut stream).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
        let received = Arc::clone(&received);
        readers.push(std::thread::spawn(move || -> u64 {
            // Every delivery has the same length, so bytes / frame_len counts messages.
            let mut buf = vec![0u8; 1 << 20];
            let want = expected * frame_len as u64;
            let mut got = 0u64;
            while got < want {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n as u64,
                }
            }
            received.fetch_add(got / frame_len as u64, Ordering::Relaxed);
            got / frame_len as u64
        }));
    }
    let payload = vec![b'x'; size];
    let mut chunk = Vec::new();
    for _ in 0..1000 {
        chunk.extend_from_slice(format!("PUB {subject} {size}\r\n").as_bytes());
        chunk.extend_from_slice(&payload);
        chunk.extend_from_slice(b"\r\n");
    }
    let start = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..publishers {
        let mut stream = connect(addr).map_err(|e| e.to_string())?;
        let chunk = chunk.clone();
        writers.push(std::thread::spawn(move || -> std::io::Result<()> {
            let mut sent = 0;
            while sent < messages {
                let n = (messages - sent).min(1000);
                stream.write_all(&chunk[..chunk.len() / 1000 * n as usize])?;
                sent += n;
            }
            sync(&mut stream)
        }));
    }
    for writer in writers {
        writer.join().map_err(|_| "publisher panicked")?.map_err(|e| e.to_string())?;
    }
    let published = start.elapsed();
    let counts: Vec<u64> = readers.into_iter().map(|r| r.join().unwrap_or(0)).collect();
    let elapsed = start.elapsed();
    let total: u64 = counts.iter().sum();
    Run { scenario: "nats-pubsub", qos: None, publishers, subscribers, messages, size }
        .report(total, elapsed, published)
}

/// Paced round-trip latency, corrected for coordinated omission.
pub fn latency(addr: &str, messages: u64, rate: u64, size: usize) -> Result<Latency, String> {
    let subject = "loadtest.latency";
    let mut subscriber = connect(addr).map_err(|e| e.to_string())?;
    subscriber.write_all(format!("SUB {subject} 1\r\n").as_bytes()).map_err(|e| e.to_string())?;
    sync(&mut subscriber).map_err(|e| e.to_string())?;
    subscriber.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut publisher = connect(addr).map_err(|e| e.to_string())?;
    let origin = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let reader = std::thread::spawn(move || -> Result<Histogram<u64>, String> {
        let mut histogram =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(subscriber);
        let mut line = String::new();
        let mut body = vec![0u8; size + 2];
        for _ in 0..messages {
            line.clear();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            reader.read_exact(&mut body).map_err(|e| e.to_string())?;
            let sent_ns = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
            let now_ns = origin.elapsed().as_nanos() as u64;
            // The intended send time is in the payload, so a stalled broker shows as latency
            // of every message it delayed (coordinated omission corrected at the source).
            histogram.saturating_record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
        }
        Ok(histogram)
    });
    let mut frame = Vec::new();
    for i in 0..messages {
        let intended = interval * i as u32;
        while origin.elapsed() < intended {
            std::thread::yield_now();
        }
        frame.clear();
        frame.extend_from_slice(format!("PUB {subject} {size}\r\n").as_bytes());
        frame.extend_from_slice(&(intended.as_nanos() as u64).to_le_bytes());
        frame.resize(frame.len() + size - 8, b'x');
        frame.extend_from_slice(b"\r\n");
        publisher.write_all(&frame).map_err(|e| e.to_string())?;
    }
    let histogram = reader.join().map_err(|_| "subscriber panicked")??;
    let q = |p: f64| histogram.value_at_quantile(p);
    println!("scenario      rate msgs  p50_us  p99_us p99.9_us  max_us");
    println!(
        "nats-latency {rate:>6} {messages:>5} {:>7} {:>7} {:>8} {:>7}",
        q(0.5),
        q(0.99),
        q(0.999),
        histogram.max()
    );
    println!(
        "json: {{\"scenario\":\"nats-latency\",\"rate\":{rate},\"messages\":{messages},\"size\":{size},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        q(0.5),
        q(0.99),
        q(0.999),
        histogram.max()
    );
    Ok(Latency { p50_us: q(0.5), p99_us: q(0.99), p999_us: q(0.999), max_us: histogram.max() })
}

/// Appends an MQTT packet: the fixed header byte, the Remaining Length, the body.
fn mqtt_packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    out.push(first);
    let mut length = body.len();
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if length == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
}

fn mqtt_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// MQTT 3.1.1 CONNECT (clean session, keep alive 60 s) and its CONNACK.
fn mqtt_connect(addr: &str, client_id: &str) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut body = Vec::new();
    mqtt_string(&mut body, b"MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    mqtt_string(&mut body, client_id.as_bytes());
    let mut packet = Vec::new();
    mqtt_packet(&mut packet, 0x10, &body);
    stream.write_all(&packet)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack != [0x20, 2, 0, 0] {
        return Err(std::io::Error::other(format!("CONNACK {connack:02x?}")));
    }
    Ok(stream)
}

/// Publishes written per `write` call.
const PUBLISH_BURST: u64 = 1000;

/// QoS 1 publishes a loadtest publisher leaves unacknowledged (a client's inflight limit).
const PUBLISH_WINDOW: u64 = 1000;

/// MQTT 3.1.1 publishers -> subscribers on one topic at QoS 0 or 1 (publish and subscription
/// at the same QoS; QoS 1 publishers keep at most [`PUBLISH_WINDOW`] unacknowledged, QoS 1
/// subscribers acknowledge every delivery). Fails unless every subscriber got every message,
/// so for QoS 1 the broker's per-session queue must hold what the subscriber falls behind by
/// (Isthmus `mqtt.max_queued_messages`, mosquitto `max_queued_messages`): a broker that drops
/// past its queue, as both do by design, fails the run rather than inflating its rate.
pub fn mqtt_pubsub(
    addr: &str,
    messages: u64,
    size: usize,
    publishers: usize,
    subscribers: usize,
    qos: u8,
    limit: Duration,
) -> Result<Throughput, String> {
    let err = |e: std::io::Error| e.to_string();
    let topic = b"loadtest/pubsub";
    let qos = qos.min(1);
    let id_len = if qos == 1 { 2 } else { 0 };
    let expected = messages * publishers as u64;
    // Every delivery has the same length: fixed header, topic, packet id, payload.
    let body_len = 2 + topic.len() + id_len + size;
    let frame_len = {
        let mut probe = Vec::new();
        mqtt_packet(&mut probe, 0x30, &vec![0; body_len]);
        probe.len()
    };
    // Client ids unique per run: nats-server delays a client id that reconnects within a second
    // of its last connection (its "flapper" rule), which would stall back-to-back runs.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run = format!("{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
    // QoS 0 may be dropped by design (a broker that never stalls publishers sheds it): once the
    // publishers are done, a subscriber that hears nothing for QUIET stops waiting.
    let published = Arc::new(std::sync::atomic::AtomicBool::new(false));
    const QUIET: Duration = Duration::from_secs(1);
    let mut readers = Vec::new();
    for i in 0..subscribers {
        let mut stream = mqtt_connect(addr, &format!("lt-{run}-sub-{i}")).map_err(err)?;
        let mut body = vec![0, 1];
        mqtt_string(&mut body, topic);
        body.push(qos);
        let mut packet = Vec::new();
        mqtt_packet(&mut packet, 0x82, &body);
        stream.write_all(&packet).map_err(err)?;
        let mut suback = [0u8; 5];
        stream.read_exact(&mut suback).map_err(err)?;
        if suback[..4] != [0x90, 3, 0, 1] || suback[4] != qos {
            return Err(format!("SUBACK {suback:02x?}"));
        }
        stream.set_read_timeout(Some(Duration::from_millis(100))).map_err(err)?;
        let published = Arc::clone(&published);
        readers.push(std::thread::spawn(move || -> (u64, Instant) {
            let started = Instant::now();
            let mut heard = Instant::now();
            let mut buf = vec![0u8; 1 << 20];
            let mut acks = Vec::with_capacity(64 * 1024);
            let mut writer = stream.try_clone().ok();
            let want = expected * frame_len as u64;
            let (mut got, mut pending) = (0u64, 0usize);
            while got < want {
                let n = match stream.read(&mut buf[pending..]) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        let quiet = published.load(Ordering::Acquire) && heard.elapsed() > QUIET;
                        if quiet || started.elapsed() > limit {
                            break;
                        }
                        continue;
                    }
                    Err(_) => break,
                };
                heard = Instant::now();
                let end = pending + n;
                let whole = end / frame_len * frame_len;
                got += whole as u64 / frame_len as u64 * frame_len as u64;
                if qos == 1 {
                    acks.clear();
                    for frame in buf[..whole].chunks_exact(frame_len) {
                        let id_at = frame_len - size - 2;
                        acks.extend_from_slice(&[0x40, 2, frame[id_at], frame[id_at + 1]]);
                    }
                    if let Some(w) = writer.as_mut() {
                        if w.write_all(&acks).is_err() {
                            writer = None;
                        }
                    }
                }
                buf.copy_within(whole..end, 0);
                pending = end - whole;
            }
            let count = got / frame_len as u64;
            (count, heard)
        }));
    }
    let payload = vec![b'x'; size];
    let start = Instant::now();
    let mut writers = Vec::new();
    for i in 0..publishers {
        let mut stream = mqtt_connect(addr, &format!("lt-{run}-pub-{i}")).map_err(err)?;
        stream.set_read_timeout(Some(limit)).map_err(err)?;
        let payload = payload.clone();
        writers.push(std::thread::spawn(move || -> std::io::Result<()> {
            // QoS 1: at most PUBLISH_WINDOW unacknowledged, as a client's inflight limit does;
            // PUBACKs are counted on another thread. QoS 0: PINGREQ/PINGRESP at the end says
            // the broker read everything.
            let acked = Arc::new(AtomicU64::new(0));
            let mut acker = stream.try_clone()?;
            let acks = {
                let acked = Arc::clone(&acked);
                std::thread::spawn(move || -> std::io::Result<()> {
                    let want = if qos == 1 { messages * 4 + 2 } else { 2 };
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut got = 0u64;
                    while got < want {
                        match acker.read(&mut buf)? {
                            0 => return Err(std::io::Error::other("closed before all acks")),
                            n => got += n as u64,
                        }
                        acked.store(got / 4, Ordering::Release);
                    }
                    Ok(())
                })
            };
            let mut chunk = Vec::with_capacity(PUBLISH_BURST as usize * (body_len + 5));
            let mut sent = 0u64;
            let mut packet_id: u16 = 0;
            while sent < messages {
                let mut n = (messages - sent).min(PUBLISH_BURST);
                if qos == 1 {
                    let open = loop {
                        let open =
                            PUBLISH_WINDOW.saturating_sub(sent - acked.load(Ordering::Acquire));
                        if open > 0 || acks.is_finished() {
                            break open;
                        }
                        std::thread::yield_now();
                    };
                    n = n.min(open.max(1));
                }
                chunk.clear();
                for _ in 0..n {
                    let mut body = Vec::with_capacity(body_len);
                    mqtt_string(&mut body, topic);
                    if qos == 1 {
                        packet_id = packet_id.checked_add(1).unwrap_or(1);
                        body.extend_from_slice(&packet_id.to_be_bytes());
                    }
                    body.extend_from_slice(&payload);
                    mqtt_packet(&mut chunk, 0x30 | (qos << 1), &body);
                }
                stream.write_all(&chunk)?;
                sent += n;
            }
            stream.write_all(&[0xC0, 0])?;
            acks.join().map_err(|_| std::io::Error::other("ack reader panicked"))?
        }));
    }
    for writer in writers {
        writer.join().map_err(|_| "publisher panicked")?.map_err(err)?;
    }
    published.store(true, Ordering::Release);
    let published = start.elapsed();
    let ends: Vec<(u64, Instant)> =
        readers.into_iter().map(|r| r.join().unwrap_or((0, start))).collect();
    // Up to the last delivery, so the quiet wait after a lossy run does not count.
    let elapsed = ends.iter().map(|(_, heard)| heard.saturating_duration_since(start)).max();
    let elapsed = elapsed.unwrap_or_default().max(published);
    let total: u64 = ends.iter().map(|(count, _)| count).sum();
    Run { scenario: "mqtt-pubsub", qos: Some(qos), publishers, subscribers, messages, size }
        .report(total, elapsed, published)
}

/// The shape of a throughput run, for its report.
struct Run {
    scenario: &'static str,
    qos: Option<u8>,
    publishers: usize,
    subscribers: usize,
    messages: u64,
    size: usize,
}

impl Run {
    /// Prints the human line and the `json:` line; fails unless every subscriber got every
    /// message. `elapsed` runs to the last delivery, `published` to the publishers' end.
    fn report(
        &self,
        total: u64,
        elapsed: Duration,
        published: Duration,
    ) -> Result<Throughput, String> {
        let Run { scenario, qos, publishers, subscribers, messages, size } = *self;
        let sent = messages * publishers as u64;
        let expected = sent * subscribers as u64;
        let rate = total as f64 / elapsed.as_secs_f64();
        let qos_column = qos.map_or(String::new(), |q| format!(" {q:>3}"));
        let qos_json = qos.map_or(String::new(), |q| format!("\"qos\":{q},"));
        println!(
            "scenario   {} pubs subs msgs/pub size  delivered     elapsed   msgs/s(out)  publish msgs/s",
            if qos.is_some() { "qos" } else { "" }
        );
        println!(
            "{scenario}{qos_column} {publishers:>4} {subscribers:>4} {messages:>8} {size:>4} {total:>10} {:>10.3}s {rate:>12.0} {:>14.0}",
            elapsed.as_secs_f64(),
            sent as f64 / published.as_secs_f64()
        );
        println!(
            "json: {{\"scenario\":\"{scenario}\",{qos_json}\"publishers\":{publishers},\"subscribers\":{subscribers},\"messages\":{messages},\"size\":{size},\"delivered\":{total},\"expected\":{expected},\"elapsed_s\":{:.6},\"delivered_per_s\":{rate:.0}}}",
            elapsed.as_secs_f64()
        );
        Ok(Throughput { delivered: total, expected, per_s: rate })
    }
}
