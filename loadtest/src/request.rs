//! NATS request/reply: R requesters, each with its own inbox subscription and at most `window`
//! requests outstanding, and S responders in one queue group that echo every request to its
//! reply subject. Measures replies per second and the round trip of each request (a closed
//! loop: a new request goes out when a reply comes in, so this latency is under full load,
//! not at a fixed rate). Every request must get exactly one reply.

use crate::mqtt::timed_out;
use crate::nats::{self, Frame};
use crate::progress::Progress;
use crate::{io_error, run_id, Latency, Measurement, Throughput};
use hdrhistogram::Histogram;
use serde_json::Map;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shape of a request/reply run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requests {
    /// Requests per requester.
    pub requests: u64,
    /// Payload bytes (at least 16: sequence number and send time travel in the payload).
    pub size: usize,
    /// Requester connections.
    pub requesters: usize,
    /// Responder connections, all in one queue group.
    pub responders: usize,
    /// Requests a requester keeps outstanding.
    pub window: u64,
    /// The run gives up after this long.
    pub limit: Duration,
}

/// A requester that gets no reply for this long gives up on the rest.
const REPLY_WAIT: Duration = Duration::from_secs(2);

/// Runs R requesters against S responders.
pub fn request_reply(addr: &str, shape: &Requests) -> Result<Measurement, String> {
    let Requests { requests, size, requesters, responders, window, limit } = *shape;
    let size = size.max(16);
    let window = window.clamp(1, requests.max(1));
    let run = run_id();
    let subject = format!("loadtest.request.{run}");
    let stop = Arc::new(AtomicBool::new(false));
    let mut echoes = Vec::new();
    let mut setup = || -> Result<(), String> {
        for _ in 0..responders {
            let mut stream = nats::connect(addr).map_err(io_error)?;
            stream
                .write_all(format!("SUB {subject} responders 1\r\n").as_bytes())
                .map_err(io_error)?;
            nats::sync(&mut stream).map_err(io_error)?;
            stream.set_read_timeout(Some(Duration::from_millis(100))).map_err(io_error)?;
            let stop = Arc::clone(&stop);
            echoes.push(std::thread::spawn(move || respond(stream, &stop)));
        }
        Ok(())
    };
    let ready = setup();
    let progress =
        Arc::new(Progress::new("request-reply", requests * requesters as u64, "replies"));
    let origin = Instant::now();
    let mut askers = Vec::new();
    let asked = ready.and_then(|()| {
        for r in 0..requesters {
            let inbox = format!("_INBOX.{run}.{r}");
            let mut stream = nats::connect(addr).map_err(io_error)?;
            stream.write_all(format!("SUB {inbox} 1\r\n").as_bytes()).map_err(io_error)?;
            nats::sync(&mut stream).map_err(io_error)?;
            stream.set_read_timeout(Some(Duration::from_millis(100))).map_err(io_error)?;
            let (subject, progress) = (subject.clone(), Arc::clone(&progress));
            let job = Ask { subject, inbox, requests, size, window, origin, limit };
            askers.push(std::thread::spawn(move || job.run(stream, &progress)));
        }
        Ok(())
    });
    let outcomes: Vec<Result<Asked, String>> =
        askers.into_iter().map(|a| a.join().unwrap_or(Err("requester panicked".into()))).collect();
    stop.store(true, Ordering::Release);
    for echo in echoes {
        echo.join().map_err(|_| "responder panicked")??;
    }
    drop(progress);
    asked?;
    let outcomes: Vec<Asked> = outcomes.into_iter().collect::<Result<_, _>>()?;
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    for outcome in &outcomes {
        histogram.add(&outcome.histogram).map_err(|e| e.to_string())?;
    }
    let delivered: u64 = outcomes.iter().map(|o| o.replies).sum();
    let duplicates: u64 = outcomes.iter().map(|o| o.duplicates).sum();
    let last = outcomes.iter().map(|o| o.last.saturating_duration_since(origin)).max();
    let elapsed = last.unwrap_or_default().max(Duration::from_micros(1)).as_secs_f64();
    let mut parameters = Map::new();
    parameters.insert("requesters".into(), requesters.into());
    parameters.insert("responders".into(), responders.into());
    parameters.insert("requests".into(), requests.into());
    parameters.insert("size".into(), size.into());
    parameters.insert("window".into(), window.into());
    Ok(Measurement {
        scenario: "request-reply",
        parameters,
        throughput: Some(Throughput {
            delivered,
            expected: requests * requesters as u64,
            duplicates,
            per_s: delivered as f64 / elapsed,
            unit: "replies/s",
            elapsed_s: elapsed,
        }),
        latency: Some(Latency::of(&histogram)),
        memory: None,
        extra: Map::new(),
    })
}

/// A responder: answers every request with its own payload, one write per read, until `stop`.
fn respond(mut stream: TcpStream, stop: &AtomicBool) -> Result<(), String> {
    let mut buf = vec![0u8; 1 << 20];
    let mut out = Vec::with_capacity(1 << 20);
    let mut pending = 0;
    while !stop.load(Ordering::Acquire) {
        let n = match stream.read(&mut buf[pending..]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if timed_out(&e) => continue,
            Err(e) => return Err(format!("responder: {e}")),
        };
        let end = pending + n;
        let mut at = 0;
        out.clear();
        while let Some((frame, used)) = nats::parse(&buf[at..end])? {
            match frame {
                Frame::Msg { reply: Some(reply), payload, .. } => {
                    nats::publish(&mut out, reply, None, payload);
                }
                Frame::Ping => out.extend_from_slice(b"PONG\r\n"),
                _ => {}
            }
            at += used;
        }
        buf.copy_within(at..end, 0);
        pending = end - at;
        if !out.is_empty() {
            stream.write_all(&out).map_err(|e| format!("responder: {e}"))?;
        }
    }
    Ok(())
}

/// One requester's job.
struct Ask {
    subject: String,
    inbox: String,
    requests: u64,
    size: usize,
    window: u64,
    origin: Instant,
    limit: Duration,
}

/// What one requester measured.
struct Asked {
    histogram: Histogram<u64>,
    replies: u64,
    duplicates: u64,
    last: Instant,
}

impl Ask {
    /// Sends `window` requests, then one more per reply, until every request has its reply.
    fn run(self, mut stream: TcpStream, progress: &Progress) -> Result<Asked, String> {
        let mut histogram =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
        let mut answered = vec![false; self.requests as usize];
        let mut frame = Vec::new();
        nats::publish(
            &mut frame,
            self.subject.as_bytes(),
            Some(self.inbox.as_bytes()),
            &vec![b'x'; self.size],
        );
        let at = frame.len() - self.size - 2;
        let mut out = Vec::with_capacity(frame.len() * self.window as usize);
        let mut sent = 0u64;
        let mut ask = |out: &mut Vec<u8>, sent: &mut u64, n: u64| {
            for _ in 0..n.min(self.requests - *sent) {
                let now = self.origin.elapsed().as_nanos() as u64;
                frame[at..at + 8].copy_from_slice(&sent.to_le_bytes());
                frame[at + 8..at + 16].copy_from_slice(&now.to_le_bytes());
                out.extend_from_slice(&frame);
                *sent += 1;
            }
        };
        ask(&mut out, &mut sent, self.window);
        stream.write_all(&out).map_err(io_error)?;
        let mut buf = vec![0u8; 1 << 20];
        let (mut pending, mut replies, mut duplicates) = (0usize, 0u64, 0u64);
        let mut last = Instant::now();
        while replies < self.requests {
            let n = match stream.read(&mut buf[pending..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if timed_out(&e) => {
                    if last.elapsed() > REPLY_WAIT || self.origin.elapsed() > self.limit {
                        break;
                    }
                    continue;
                }
                Err(e) => return Err(format!("requester: {e}")),
            };
            last = Instant::now();
            let now = self.origin.elapsed().as_nanos() as u64;
            let end = pending + n;
            let mut at_frame = 0;
            let mut new = 0u64;
            out.clear();
            while let Some((frame, used)) = nats::parse(&buf[at_frame..end])? {
                match frame {
                    Frame::Msg { payload, .. } if payload.len() >= 16 => {
                        let seq = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                        let asked = u64::from_le_bytes(payload[8..16].try_into().expect("8"));
                        match answered.get_mut(seq as usize) {
                            Some(seen) if !*seen => {
                                *seen = true;
                                new += 1;
                                histogram
                                    .saturating_record((now.saturating_sub(asked) / 1000).max(1));
                            }
                            _ => duplicates += 1,
                        }
                    }
                    Frame::Ping => out.extend_from_slice(b"PONG\r\n"),
                    _ => {}
                }
                at_frame += used;
            }
            buf.copy_within(at_frame..end, 0);
            pending = end - at_frame;
            replies += new;
            progress.add(new);
            ask(&mut out, &mut sent, new);
            if !out.is_empty() {
                stream.write_all(&out).map_err(io_error)?;
            }
        }
        Ok(Asked { histogram, replies, duplicates, last })
    }
}
