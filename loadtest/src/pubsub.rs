//! Publish/subscribe throughput: P publishers -> K subscribers on one subject or topic, over
//! NATS, MQTT (QoS 0, 1, 2), or across the two (MQTT publishers -> NATS subscribers and back),
//! and NATS queue groups (every message to exactly one member).
//!
//! Every payload starts with its sequence number (publisher index x messages + i, 8 bytes
//! little-endian) when the payload has room for it, so every subscriber keeps a bitmap and the
//! run counts lost and duplicated messages exactly; shorter payloads are only counted.
//! Subscribers stop when they have everything, or once the publishers are done and nothing
//! arrived for [`QUIET`] (QoS 0 may be dropped by design), or at the time limit.

use crate::mqtt::{self, Packet, Publisher};
use crate::nats::{self, Frame};
use crate::progress::Progress;
use crate::{io_error, run_id, Measurement, Throughput};
use serde_json::{json, Map, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many messages, how big, and how many publishers and subscribers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Messages per publisher.
    pub messages: u64,
    /// Payload bytes.
    pub size: usize,
    /// Publisher connections.
    pub publishers: usize,
    /// Subscriber connections.
    pub subscribers: usize,
    /// The run gives up after this long.
    pub limit: Duration,
}

/// NATS publishers -> subscribers on one subject (1->1, fan-out 1->K, fan-in K->1).
pub fn nats_pubsub(addr: &str, shape: &Shape) -> Result<Measurement, String> {
    nats_pubsub_filtered(addr, shape, None)
}

/// [`nats_pubsub`] with the subscribers on `filter` (None: the subject, `loadtest.pubsub`),
/// e.g. a wildcard, which a broker's permissions may treat differently from a literal (Isthmus
/// checks every delivery to a subscription that overlaps a deny rule). The filter must match
/// `loadtest.pubsub`.
pub fn nats_pubsub_filtered(
    addr: &str,
    shape: &Shape,
    filter: Option<&str>,
) -> Result<Measurement, String> {
    let source = Endpoint { protocol: End::Nats, addr, name: b"loadtest.pubsub" };
    let target = Endpoint { name: filter.map_or(source.name, str::as_bytes), ..source };
    let scenario = "nats-pubsub";
    let measured = flow(&Flow { scenario, shape, source, target, queue: None, window: 0 });
    with_filter(measured, filter)
}

/// Records a subscription filter other than the subject in the run's parameters.
fn with_filter(
    measured: Result<Measurement, String>,
    filter: Option<&str>,
) -> Result<Measurement, String> {
    let mut measurement = measured?;
    if let Some(filter) = filter {
        measurement.parameters.insert("subscribe_filter".into(), filter.into());
    }
    Ok(measurement)
}

/// NATS publishers -> K subscribers in one queue group: every message must reach exactly one
/// member (counted across the group; fails on a loss or a duplicate).
pub fn nats_queue(addr: &str, shape: &Shape) -> Result<Measurement, String> {
    let end = Endpoint { protocol: End::Nats, addr, name: b"loadtest.queue" };
    let queue = Some("loadtest");
    flow(&Flow { scenario: "nats-queue", shape, source: end, target: end, queue, window: 0 })
}

/// MQTT 3.1.1 publishers -> subscribers on one topic, publish and subscription at the same QoS
/// (0, 1 or 2). QoS 1 and 2 publishers keep at most `window` publishes uncompleted (None:
/// [`default_window`]); subscribers acknowledge every delivery (PUBACK, or PUBREC and, on
/// PUBREL, PUBCOMP). The broker's per-session queue must hold what a subscriber falls behind
/// by (Isthmus `mqtt.max_queued_messages`, mosquitto `max_queued_messages`): a broker that
/// drops past its queue, as both do by design, shows a lossy run rather than a higher rate.
pub fn mqtt_pubsub(
    addr: &str,
    shape: &Shape,
    qos: u8,
    window: Option<u64>,
) -> Result<Measurement, String> {
    mqtt_pubsub_filtered(addr, shape, qos, window, None)
}

/// [`mqtt_pubsub`] with the subscribers on `filter` (None: the topic, `loadtest/pubsub`); the
/// filter must match `loadtest/pubsub` (e.g. `loadtest/#`). See [`nats_pubsub_filtered`].
pub fn mqtt_pubsub_filtered(
    addr: &str,
    shape: &Shape,
    qos: u8,
    window: Option<u64>,
    filter: Option<&str>,
) -> Result<Measurement, String> {
    let source =
        Endpoint { protocol: End::Mqtt { qos: qos.min(2) }, addr, name: b"loadtest/pubsub" };
    let target = Endpoint { name: filter.map_or(source.name, str::as_bytes), ..source };
    let window = window.unwrap_or(default_window(qos));
    let scenario = "mqtt-pubsub";
    let measured = flow(&Flow { scenario, shape, source, target, queue: None, window });
    with_filter(measured, filter)
}

/// MQTT publishers on `bench/x` (at `qos`) -> NATS subscribers on `bench.x`.
pub fn mqtt_to_nats(
    mqtt_addr: &str,
    nats_addr: &str,
    shape: &Shape,
    qos: u8,
    window: Option<u64>,
) -> Result<Measurement, String> {
    let source =
        Endpoint { protocol: End::Mqtt { qos: qos.min(2) }, addr: mqtt_addr, name: b"bench/x" };
    let target = Endpoint { protocol: End::Nats, addr: nats_addr, name: b"bench.x" };
    let window = window.unwrap_or(default_window(qos));
    flow(&Flow { scenario: "mqtt-to-nats", shape, source, target, queue: None, window })
}

/// NATS publishers on `bench.x` -> MQTT subscribers on `bench/x` at `qos` (the broker delivers
/// at the subscription's QoS; the subscribers acknowledge).
pub fn nats_to_mqtt(
    nats_addr: &str,
    mqtt_addr: &str,
    shape: &Shape,
    qos: u8,
) -> Result<Measurement, String> {
    let source = Endpoint { protocol: End::Nats, addr: nats_addr, name: b"bench.x" };
    let target =
        Endpoint { protocol: End::Mqtt { qos: qos.min(2) }, addr: mqtt_addr, name: b"bench/x" };
    flow(&Flow { scenario: "nats-to-mqtt", shape, source, target, queue: None, window: 0 })
}

/// The publisher window when none is given: 1000 at QoS 1 (what the earlier results used), 64
/// at QoS 2 (a 3.1.1 client cannot learn the broker's Receive Maximum; Isthmus' default is 256
/// and it closes a connection that has more unreleased).
pub fn default_window(qos: u8) -> u64 {
    if qos >= 2 {
        64
    } else {
        1000
    }
}

/// After the publishers are done, a subscriber that hears nothing for this long stops waiting.
pub const QUIET: Duration = Duration::from_secs(1);

/// Publishes written per `write` call.
const PUBLISH_BURST: u64 = 1000;

/// The protocol at one end of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    Nats,
    Mqtt { qos: u8 },
}

/// One side of a flow: protocol, broker address, subject or topic.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Endpoint<'a> {
    pub protocol: End,
    pub addr: &'a str,
    pub name: &'a [u8],
}

struct Flow<'a> {
    scenario: &'static str,
    shape: &'a Shape,
    source: Endpoint<'a>,
    target: Endpoint<'a>,
    /// A NATS queue group for the subscribers.
    queue: Option<&'a str>,
    /// MQTT QoS 1/2 publishes a publisher leaves uncompleted.
    window: u64,
}

/// Where subscribers stop: `count` (shared by a queue group, one per subscriber otherwise)
/// reaching `target`, the publishers being done and the line quiet, or the time limit.
pub(crate) struct Watch {
    pub start: Instant,
    pub limit: Duration,
    pub published: Arc<AtomicBool>,
}

/// What one subscriber saw.
struct Seen {
    bits: Vec<u64>,
    unique: u64,
    duplicates: u64,
    heard: Received,
}

/// How a subscriber's loop ended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Received {
    /// When the last delivery arrived.
    pub last: Instant,
    /// The highest QoS of the MQTT deliveries (0 for NATS).
    pub qos_max: u8,
}

fn flow(flow: &Flow) -> Result<Measurement, String> {
    let Shape { messages, size, publishers, subscribers, limit } = *flow.shape;
    let run = run_id();
    let sent = messages * publishers as u64;
    let expected = if flow.queue.is_some() { sent } else { sent * subscribers as u64 };
    let progress = Arc::new(Progress::new(flow.scenario, expected, "msgs"));
    let watch = Arc::new(Watch {
        start: Instant::now(),
        limit,
        published: Arc::new(AtomicBool::new(false)),
    });
    let group = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let mut setup = || -> Result<(), String> {
        for i in 0..subscribers {
            let stream = subscribe(&flow.target, flow.queue, &format!("lt-{run}-sub-{i}"))?;
            let goal = if flow.queue.is_some() { Arc::clone(&group) } else { Arc::default() };
            let (watch, progress) = (Arc::clone(&watch), Arc::clone(&progress));
            let protocol = flow.target.protocol;
            readers.push(std::thread::spawn(move || {
                collect(stream, protocol, sent, &goal, &watch, &progress)
            }));
        }
        Ok(())
    };
    let ready = setup();
    let start = Instant::now();
    let published = ready.and_then(|()| publish_all(flow, &run, start));
    let publish_time = start.elapsed();
    // Set even when publishing failed, so the subscribers stop once the line is quiet.
    watch.published.store(true, Ordering::Release);
    let seen: Vec<Result<Seen, String>> = readers
        .into_iter()
        .map(|r| r.join().unwrap_or(Err("subscriber panicked".into())))
        .collect();
    drop(progress);
    published?;
    let seen: Vec<Seen> = seen.into_iter().collect::<Result<_, _>>()?;
    let (delivered, duplicates) = if flow.queue.is_some() {
        tally_group(&seen, sent, size)
    } else {
        let delivered = seen.iter().map(|s| s.unique.min(sent)).sum();
        let extra: u64 = seen.iter().map(|s| s.unique.saturating_sub(sent)).sum();
        (delivered, seen.iter().map(|s| s.duplicates).sum::<u64>() + extra)
    };
    // Up to the last delivery, so the quiet wait after a lossy run does not count.
    let last = seen.iter().map(|s| s.heard.last.saturating_duration_since(start)).max();
    let elapsed = last.unwrap_or_default().max(publish_time).max(Duration::from_micros(1));
    let mut parameters = Map::new();
    parameters.insert("publishers".into(), publishers.into());
    parameters.insert("subscribers".into(), subscribers.into());
    parameters.insert("messages".into(), messages.into());
    parameters.insert("size".into(), size.into());
    for (key, end) in
        [("publish_qos", flow.source.protocol), ("subscribe_qos", flow.target.protocol)]
    {
        if let End::Mqtt { qos } = end {
            parameters.insert(key.into(), qos.into());
        }
    }
    if let (End::Mqtt { qos: 1.. }, true) = (flow.source.protocol, flow.window > 0) {
        parameters.insert("window".into(), flow.window.into());
    }
    if let Some(queue) = flow.queue {
        parameters.insert("queue".into(), queue.into());
    }
    parameters.insert(
        "publish_msgs_per_s".into(),
        json!((sent as f64 / publish_time.as_secs_f64()) as u64),
    );
    Ok(Measurement {
        scenario: flow.scenario,
        parameters,
        throughput: Some(Throughput {
            delivered,
            expected,
            duplicates,
            per_s: delivered as f64 / elapsed.as_secs_f64(),
            unit: "msgs/s",
            elapsed_s: elapsed.as_secs_f64(),
        }),
        latency: None,
        memory: None,
        extra: delivered_qos(flow.target.protocol, seen.iter().map(|s| s.heard.qos_max)),
    })
}

/// `delivered_qos_max` for MQTT subscribers.
pub(crate) fn delivered_qos(target: End, qos: impl Iterator<Item = u8>) -> Map<String, Value> {
    let mut extra = Map::new();
    if let End::Mqtt { .. } = target {
        extra.insert("delivered_qos_max".into(), qos.max().unwrap_or(0).into());
    }
    extra
}

/// A queue group: the union of the members' bitmaps is what arrived; what two members both
/// got, or one got twice, is duplicated.
fn tally_group(seen: &[Seen], sent: u64, size: usize) -> (u64, u64) {
    let unique: u64 = seen.iter().map(|s| s.unique).sum();
    let repeated: u64 = seen.iter().map(|s| s.duplicates).sum();
    if size < 8 {
        return (unique.min(sent), repeated + unique.saturating_sub(sent));
    }
    let words = seen.first().map_or(0, |s| s.bits.len());
    let union: u64 = (0..words)
        .map(|w| seen.iter().fold(0u64, |acc, s| acc | s.bits[w]).count_ones() as u64)
        .sum();
    (union, repeated + (unique - union))
}

/// Connects a subscriber and subscribes; returns once the broker has the subscription.
pub(crate) fn subscribe(
    target: &Endpoint,
    queue: Option<&str>,
    client_id: &str,
) -> Result<TcpStream, String> {
    let subject = String::from_utf8_lossy(target.name);
    let stream = match target.protocol {
        End::Nats => {
            let mut stream = nats::connect(target.addr).map_err(io_error)?;
            let line = match queue {
                Some(queue) => format!("SUB {subject} {queue} 1\r\n"),
                None => format!("SUB {subject} 1\r\n"),
            };
            stream.write_all(line.as_bytes()).map_err(io_error)?;
            nats::sync(&mut stream).map_err(io_error)?;
            stream
        }
        End::Mqtt { qos } => {
            let mut stream = mqtt::connect(target.addr, client_id).map_err(io_error)?;
            mqtt::subscribe(&mut stream, target.name, qos)?;
            stream
        }
    };
    stream.set_read_timeout(Some(Duration::from_millis(100))).map_err(io_error)?;
    Ok(stream)
}

/// A subscriber's loop: records every payload's sequence number in a bitmap.
fn collect(
    mut stream: TcpStream,
    protocol: End,
    sent: u64,
    goal: &AtomicU64,
    watch: &Watch,
    progress: &Progress,
) -> Result<Seen, String> {
    let mut seen = Seen {
        bits: vec![0u64; sent.div_ceil(64) as usize],
        unique: 0,
        duplicates: 0,
        heard: Received { last: Instant::now(), qos_max: 0 },
    };
    let heard = receive(&mut stream, protocol, goal, sent, watch, progress, |payload| {
        let Some(seq) = payload.get(..8) else {
            seen.unique += 1;
            return true;
        };
        let seq = u64::from_le_bytes(seq.try_into().expect("8 bytes"));
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        match seen.bits.get_mut(word) {
            Some(w) if *w & bit == 0 && seq < sent => {
                *w |= bit;
                seen.unique += 1;
                true
            }
            _ => {
                seen.duplicates += 1;
                false
            }
        }
    })?;
    seen.heard = heard;
    Ok(seen)
}

/// Reads deliveries (NATS `MSG`/`HMSG`, or MQTT PUBLISH, acknowledged at its QoS) and hands
/// each payload to `deliver`, which says whether it was new. New deliveries are added to `goal`
/// once per read; the loop ends when `goal` reaches `target`, when the publishers are done and
/// nothing arrived for [`QUIET`], at the time limit, or when the broker closes. Returns when
/// the last delivery arrived and the highest QoS delivered.
pub(crate) fn receive(
    stream: &mut TcpStream,
    protocol: End,
    goal: &AtomicU64,
    target: u64,
    watch: &Watch,
    progress: &Progress,
    mut deliver: impl FnMut(&[u8]) -> bool,
) -> Result<Received, String> {
    let mut buf = vec![0u8; 1 << 20];
    let mut out = Vec::with_capacity(64 * 1024);
    let mut pending = 0usize;
    let mut heard = Instant::now();
    let mut parser = nats::Parser::default();
    let mut qos_max = 0u8;
    while goal.load(Ordering::Acquire) < target {
        let n = match stream.read(&mut buf[pending..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if mqtt::timed_out(&e) => {
                let quiet = watch.published.load(Ordering::Acquire) && heard.elapsed() > QUIET;
                if quiet || watch.start.elapsed() > watch.limit {
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        heard = Instant::now();
        let end = pending + n;
        let mut at = 0;
        let mut new = 0u64;
        out.clear();
        match protocol {
            End::Nats => {
                while let Some((frame, used)) = parser.next(&buf[at..end])? {
                    match frame {
                        Frame::Msg { payload, .. } => new += u64::from(deliver(payload)),
                        Frame::Ping => out.extend_from_slice(b"PONG\r\n"),
                        Frame::Err(text) => {
                            eprintln!("subscriber: {}", String::from_utf8_lossy(text));
                        }
                        Frame::Pong | Frame::Other => {}
                    }
                    at += used;
                }
            }
            End::Mqtt { .. } => {
                while let Some((packet, used)) = mqtt::parse(&buf[at..end])? {
                    match packet {
                        Packet::Publish { qos, packet_id, payload, .. } => {
                            new += u64::from(deliver(payload));
                            qos_max = qos_max.max(qos);
                            match qos {
                                1 => mqtt::ack(&mut out, 0x40, packet_id),
                                2 => mqtt::ack(&mut out, 0x50, packet_id),
                                _ => {}
                            }
                        }
                        Packet::PubRel(packet_id) => mqtt::ack(&mut out, 0x70, packet_id),
                        _ => {}
                    }
                    at += used;
                }
            }
        }
        buf.copy_within(at..end, 0);
        pending = end - at;
        if pending == buf.len() {
            return Err("a frame larger than the 1 MiB read buffer".into());
        }
        if !out.is_empty() && stream.write_all(&out).is_err() {
            break;
        }
        goal.fetch_add(new, Ordering::AcqRel);
        progress.add(new);
    }
    Ok(Received { last: heard, qos_max })
}

/// Starts every publisher, waits for them all, and returns the first error.
fn publish_all(flow: &Flow, run: &str, start: Instant) -> Result<(), String> {
    let Shape { messages, size, publishers, limit, .. } = *flow.shape;
    let deadline = start + limit;
    let mut writers = Vec::new();
    for i in 0..publishers {
        let base = i as u64 * messages;
        let name = flow.source.name.to_vec();
        let window = flow.window;
        let job: Box<dyn FnOnce() -> Result<(), String> + Send> = match flow.source.protocol {
            End::Nats => {
                let stream = nats::connect(flow.source.addr).map_err(io_error)?;
                Box::new(move || publish_nats(stream, &name, size, base, messages))
            }
            End::Mqtt { qos } => {
                let client_id = format!("lt-{run}-pub-{i}");
                let stream = mqtt::connect(flow.source.addr, &client_id).map_err(io_error)?;
                Box::new(move || {
                    publish_mqtt(stream, &name, qos, size, base, messages, window, deadline)
                })
            }
        };
        writers.push(std::thread::spawn(job));
    }
    let mut first = Ok(());
    for writer in writers {
        let result = writer.join().unwrap_or(Err("publisher panicked".into()));
        if first.is_ok() {
            first = result;
        }
    }
    first
}

/// Payloads carry their sequence number in the first 8 bytes when there is room.
fn stamp(frame: &mut [u8], at: usize, size: usize, seq: u64) {
    if size >= 8 {
        frame[at..at + 8].copy_from_slice(&seq.to_le_bytes());
    }
}

fn publish_nats(
    mut stream: TcpStream,
    subject: &[u8],
    size: usize,
    base: u64,
    messages: u64,
) -> Result<(), String> {
    let mut frame = Vec::new();
    nats::publish(&mut frame, subject, None, &vec![b'x'; size]);
    let payload_at = frame.len() - size - 2;
    let mut chunk = frame.repeat(PUBLISH_BURST as usize);
    let mut sent = 0;
    while sent < messages {
        let n = (messages - sent).min(PUBLISH_BURST);
        for (k, frame) in chunk.chunks_exact_mut(frame.len()).take(n as usize).enumerate() {
            stamp(frame, payload_at, size, base + sent + k as u64);
        }
        stream.write_all(&chunk[..frame.len() * n as usize]).map_err(io_error)?;
        sent += n;
    }
    nats::sync(&mut stream).map_err(io_error)
}

#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename the fields.
fn publish_mqtt(
    stream: TcpStream,
    topic: &[u8],
    qos: u8,
    size: usize,
    base: u64,
    messages: u64,
    window: u64,
    deadline: Instant,
) -> Result<(), String> {
    let id_len = if qos > 0 { 2 } else { 0 };
    let mut frame = Vec::new();
    mqtt::remaining_length(&mut frame, 0x30 | (qos << 1), 2 + topic.len() + id_len + size);
    mqtt::string(&mut frame, topic);
    let id_at = frame.len();
    frame.resize(id_at + id_len, 0);
    frame.resize(id_at + id_len + size, b'x');
    let payload_at = id_at + id_len;
    let mut chunk = frame.repeat(PUBLISH_BURST as usize);
    let window = window.clamp(1, u64::from(u16::MAX));
    let publisher = Publisher::start(stream, qos, messages, deadline);
    let (mut sent, mut packet_id) = (0u64, 0u16);
    while sent < messages {
        let mut n = (messages - sent).min(PUBLISH_BURST);
        if qos > 0 {
            n = n.min(publisher.wait_window(sent, window, deadline)?);
        }
        for (k, frame) in chunk.chunks_exact_mut(frame.len()).take(n as usize).enumerate() {
            if qos > 0 {
                // Ids cycle through 1..=65535; the window keeps the ones in flight distinct.
                packet_id = packet_id.checked_add(1).unwrap_or(1);
                frame[id_at..id_at + 2].copy_from_slice(&packet_id.to_be_bytes());
            }
            stamp(frame, payload_at, size, base + sent + k as u64);
        }
        publisher.write(&chunk[..frame.len() * n as usize])?;
        sent += n;
    }
    publisher.finish()
}
