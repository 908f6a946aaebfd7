//! Fixed-rate latency, NATS or MQTT: one publisher sends at `rate` messages per second, one
//! subscriber on another connection records each message's delay in an hdrhistogram. The
//! delay is measured from the message's *intended* send time, which travels in its first 8
//! payload bytes: a broker (or harness) stall shows as latency of every message it delayed,
//! not as a pause in sending (coordinated omission corrected at the source).

use crate::mqtt::{self, Publisher};
use crate::nats;
use crate::progress::Progress;
use crate::pubsub::{self, default_window, End, Endpoint, Watch};
use crate::{io_error, run_id, Latency, Measurement, Throughput};
use hdrhistogram::Histogram;
use serde_json::Map;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many messages, how fast, how big.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    /// Messages to send.
    pub messages: u64,
    /// Messages per second.
    pub rate: u64,
    /// Payload bytes (at least 8: the intended send time travels in the payload).
    pub size: usize,
    /// The run gives up after this long.
    pub limit: Duration,
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
    let Pace { messages, rate, size, limit } = *pace;
    let size = size.max(8);
    let run = run_id();
    let progress = Arc::new(Progress::new(scenario, messages, "msgs"));
    let watch = Arc::new(Watch {
        start: Instant::now(),
        limit,
        published: Arc::new(AtomicBool::new(false)),
    });
    let mut subscriber = pubsub::subscribe(&end, None, &format!("lt-{run}-sub"))?;
    let origin = Instant::now();
    let reader = {
        let (watch, progress) = (Arc::clone(&watch), Arc::clone(&progress));
        let protocol = end.protocol;
        std::thread::spawn(move || -> Result<(Histogram<u64>, u64, u8), String> {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
            let mut count = 0u64;
            let goal = AtomicU64::new(0);
            let received = pubsub::receive(
                &mut subscriber,
                protocol,
                &goal,
                messages,
                &watch,
                &progress,
                |p| {
                    let Some(sent) = p.get(..8) else { return false };
                    let sent_ns = u64::from_le_bytes(sent.try_into().expect("8 bytes"));
                    let now_ns = origin.elapsed().as_nanos() as u64;
                    histogram.saturating_record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
                    count += 1;
                    true
                },
            )?;
            Ok((histogram, count, received.qos_max))
        })
    };
    let sending = send_paced(&end, &run, pace, size, origin);
    watch.published.store(true, std::sync::atomic::Ordering::Release);
    let received = reader.join().map_err(|_| "subscriber panicked")?;
    drop(progress);
    sending?;
    let (histogram, delivered, qos_max) = received?;
    let elapsed = origin.elapsed().as_secs_f64();
    let mut parameters = Map::new();
    parameters.insert("messages".into(), messages.into());
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
        latency: Some(Latency::of(&histogram)),
        memory: None,
        extra: pubsub::delivered_qos(end.protocol, std::iter::once(qos_max)),
    })
}

/// The publisher: message `i` is due at `i / rate` after `origin` and carries that time.
fn send_paced(
    end: &Endpoint,
    run: &str,
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
            let mut stream: TcpStream = nats::connect(end.addr).map_err(io_error)?;
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
            let client_id = format!("lt-{run}-pub");
            let stream = mqtt::connect(end.addr, &client_id).map_err(io_error)?;
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
