//! The MQTT 3.1.1 side of the wire: packet encoding, CONNECT/CONNACK and SUBSCRIBE/SUBACK, an
//! incremental parser of what a broker sends, and the acknowledgements of QoS 1 and 2 in both
//! directions. Only what the scenarios need; no sessions, no retries.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Appends an MQTT packet: the fixed header byte, the Remaining Length, the body.
pub fn packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    remaining_length(out, first, body.len());
    out.extend_from_slice(body);
}

/// Appends the fixed header of a packet whose body is `length` bytes.
pub fn remaining_length(out: &mut Vec<u8>, first: u8, mut length: usize) {
    out.push(first);
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
}

/// Appends a length-prefixed string.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A 3.1.1 CONNECT with a clean session and the given keep alive; with username and password
/// when [`crate::set_credentials`] gave a token.
pub fn connect_packet(client_id: &str, keep_alive_s: u16) -> Vec<u8> {
    let credentials = crate::credentials();
    let extra = credentials.map_or(0, |c| 4 + c.username.len() + c.token.len());
    let mut body = Vec::with_capacity(12 + client_id.len() + extra);
    string(&mut body, b"MQTT");
    // Clean session; with credentials also the username (0x80) and password (0x40) flags.
    let flags = if credentials.is_some() { 0xC2 } else { 0x02 };
    body.extend_from_slice(&[4, flags]);
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    string(&mut body, client_id.as_bytes());
    if let Some(credentials) = credentials {
        string(&mut body, credentials.username.as_bytes());
        string(&mut body, credentials.token.as_bytes());
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    packet(&mut out, 0x10, &body);
    out
}

/// The CONNACK of an accepted 3.1.1 clean session.
pub const CONNACK: [u8; 4] = [0x20, 2, 0, 0];

/// Connects with a clean session and keep alive 60 s and waits for the CONNACK.
pub fn connect(addr: &str, client_id: &str) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(&connect_packet(client_id, 60))?;
    expect_connack(&mut stream)?;
    Ok(stream)
}

/// Reads the 4-byte CONNACK and fails unless it accepts the connection.
pub fn expect_connack(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack != CONNACK {
        return Err(std::io::Error::other(format!("CONNACK {connack:02x?}")));
    }
    Ok(())
}

/// Subscribes to one filter at `qos` and fails unless the broker grants that QoS (brokers
/// that lack a QoS, such as nats-server 2.9 for QoS 2, grant less).
pub fn subscribe(stream: &mut TcpStream, filter: &[u8], qos: u8) -> Result<(), String> {
    let mut body = vec![0, 1];
    string(&mut body, filter);
    body.push(qos);
    let mut out = Vec::new();
    packet(&mut out, 0x82, &body);
    stream.write_all(&out).map_err(|e| e.to_string())?;
    let mut suback = [0u8; 5];
    stream.read_exact(&mut suback).map_err(|e| format!("waiting for SUBACK: {e}"))?;
    if suback[..4] != [0x90, 3, 0, 1] {
        return Err(format!("SUBACK {suback:02x?}"));
    }
    if suback[4] != qos {
        return Err(format!("broker granted QoS {} for a QoS {qos} subscription", suback[4]));
    }
    Ok(())
}

/// One packet from the broker. Slices borrow the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A delivery.
    Publish {
        /// 0, 1 or 2.
        qos: u8,
        /// 0 at QoS 0.
        packet_id: u16,
        /// The topic name.
        topic: &'a [u8],
        /// The payload.
        payload: &'a [u8],
    },
    /// QoS 1 publish acknowledged.
    PubAck(u16),
    /// QoS 2 publish received (step 1 of 2).
    PubRec(u16),
    /// QoS 2 release (the broker's step 2 towards a subscriber).
    PubRel(u16),
    /// QoS 2 publish complete.
    PubComp(u16),
    /// The answer to PINGREQ.
    PingResp,
    /// Anything else (CONNACK, SUBACK, ...): the fixed header byte.
    Other(u8),
}

/// Parses one packet from the start of `buf`: `Ok(None)` until a whole packet is there, else
/// the packet and its length in bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, String> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let mut length = 0usize;
    let mut at = 1;
    loop {
        let Some(&byte) = buf.get(at) else { return Ok(None) };
        length |= usize::from(byte & 0x7f) << (7 * (at - 1));
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at == 5 {
            return Err("MQTT Remaining Length longer than 4 bytes".into());
        }
    }
    let end = at + length;
    if buf.len() < end {
        return Ok(None);
    }
    let body = &buf[at..end];
    let id = || -> Result<u16, String> {
        match body {
            [high, low, ..] => Ok(u16::from_be_bytes([*high, *low])),
            _ => Err(format!("MQTT packet {first:#04x} without a packet id")),
        }
    };
    let packet = match first >> 4 {
        3 => {
            let qos = (first >> 1) & 3;
            let [high, low, rest @ ..] = body else {
                return Err("PUBLISH without a topic".into());
            };
            let topic_len = usize::from(u16::from_be_bytes([*high, *low]));
            let id_len = if qos > 0 { 2 } else { 0 };
            if rest.len() < topic_len + id_len {
                return Err("PUBLISH shorter than its topic".into());
            }
            let (topic, rest) = rest.split_at(topic_len);
            let packet_id = if qos > 0 { u16::from_be_bytes([rest[0], rest[1]]) } else { 0 };
            Packet::Publish { qos, packet_id, topic, payload: &rest[id_len..] }
        }
        4 => Packet::PubAck(id()?),
        5 => Packet::PubRec(id()?),
        6 => Packet::PubRel(id()?),
        7 => Packet::PubComp(id()?),
        13 => Packet::PingResp,
        _ => Packet::Other(first),
    };
    Ok(Some((packet, end)))
}

/// Appends a 4-byte acknowledgement (`0x40` PUBACK, `0x50` PUBREC, `0x62` PUBREL, `0x70`
/// PUBCOMP).
pub fn ack(out: &mut Vec<u8>, first: u8, packet_id: u16) {
    let [high, low] = packet_id.to_be_bytes();
    out.extend_from_slice(&[first, 2, high, low]);
}

/// PINGREQ.
pub const PINGREQ: [u8; 2] = [0xC0, 0];

/// DISCONNECT.
pub const DISCONNECT: [u8; 2] = [0xE0, 0];

/// The sending half of a publisher connection: writes go through a lock (the acknowledgement
/// thread writes PUBRELs on the same socket), and a thread reads PUBACK (QoS 1) or PUBREC then
/// PUBCOMP (QoS 2), counting completed publishes and waking the publisher.
pub struct Publisher {
    writer: Arc<Mutex<TcpStream>>,
    completed: Arc<AtomicU64>,
    acks: JoinHandle<Result<(), String>>,
}

impl Publisher {
    /// Starts the acknowledgement thread for a publisher that will send `messages` at `qos`,
    /// giving up at `deadline`. The calling thread is the one woken by acknowledgements.
    pub fn start(stream: TcpStream, qos: u8, messages: u64, deadline: Instant) -> Publisher {
        let completed = Arc::new(AtomicU64::new(0));
        let writer = Arc::new(Mutex::new(stream));
        let acks = {
            let completed = Arc::clone(&completed);
            let writer = Arc::clone(&writer);
            let publisher = std::thread::current();
            std::thread::spawn(move || {
                let result = acknowledge(&writer, qos, messages, deadline, &completed, &publisher);
                publisher.unpark();
                result
            })
        };
        Publisher { writer, completed, acks }
    }

    /// Publishes the broker has acknowledged (QoS 1) or completed (QoS 2).
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// Writes whole packets.
    pub fn write(&self, bytes: &[u8]) -> Result<(), String> {
        let mut stream = self.writer.lock().map_err(|_| "publisher writer poisoned")?;
        stream.write_all(bytes).map_err(|e| format!("publishing: {e}"))
    }

    /// Waits until fewer than `window` of the `sent` publishes are unacknowledged and returns
    /// how many more may be sent. Parks between acknowledgements instead of spinning: on a
    /// 2-core host a spinning generator takes a core from the broker.
    pub fn wait_window(&self, sent: u64, window: u64, deadline: Instant) -> Result<u64, String> {
        loop {
            let open = window.saturating_sub(sent - self.completed());
            if open > 0 {
                return Ok(open);
            }
            if self.acks.is_finished() {
                return Err("acknowledgements stopped".into());
            }
            if Instant::now() > deadline {
                return Err(format!("timed out with {window} publishes unacknowledged"));
            }
            std::thread::park_timeout(Duration::from_millis(5));
        }
    }

    /// Sends PINGREQ (its PINGRESP says the broker has read everything) and waits for the
    /// acknowledgement thread to see it and every acknowledgement.
    pub fn finish(self) -> Result<(), String> {
        self.write(&PINGREQ)?;
        self.acks.join().map_err(|_| "acknowledgement thread panicked")?
    }
}

/// The acknowledgement loop of a [`Publisher`]: ends once PINGRESP came and, at QoS 1 and 2,
/// every publish completed.
fn acknowledge(
    writer: &Mutex<TcpStream>,
    qos: u8,
    messages: u64,
    deadline: Instant,
    completed: &AtomicU64,
    publisher: &std::thread::Thread,
) -> Result<(), String> {
    let mut reader = writer
        .lock()
        .map_err(|_| "publisher writer poisoned")?
        .try_clone()
        .map_err(|e| e.to_string())?;
    reader.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    let want = if qos == 0 { 0 } else { messages };
    let mut buf = vec![0u8; 64 * 1024];
    let (mut pending, mut done, mut pong) = (0usize, 0u64, false);
    let mut releases = Vec::with_capacity(4096);
    while !(pong && done >= want) {
        let n = match reader.read(&mut buf[pending..]) {
            Ok(0) => {
                return Err(format!("broker closed the publisher after {done} of {want} acks"))
            }
            Ok(n) => n,
            Err(e) if timed_out(&e) => {
                if Instant::now() > deadline {
                    return Err(format!("timed out after {done} of {want} acknowledgements"));
                }
                continue;
            }
            Err(e) => return Err(format!("reading acknowledgements: {e}")),
        };
        let end = pending + n;
        let mut at = 0;
        releases.clear();
        while let Some((packet, used)) = parse(&buf[at..end])? {
            match packet {
                Packet::PubAck(_) if qos == 1 => done += 1,
                Packet::PubRec(id) if qos == 2 => ack(&mut releases, 0x62, id),
                Packet::PubComp(_) if qos == 2 => done += 1,
                Packet::PingResp => pong = true,
                _ => {}
            }
            at += used;
        }
        buf.copy_within(at..end, 0);
        pending = end - at;
        if !releases.is_empty() {
            let mut stream = writer.lock().map_err(|_| "publisher writer poisoned")?;
            stream.write_all(&releases).map_err(|e| format!("sending PUBREL: {e}"))?;
        }
        completed.store(done, Ordering::Release);
        publisher.unpark();
    }
    Ok(())
}

/// Whether a read error is a read timeout (`WouldBlock` or `TimedOut`, by platform).
pub fn timed_out(error: &std::io::Error) -> bool {
    matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_through_the_parser() {
        let mut body = Vec::new();
        string(&mut body, b"a/b");
        body.extend_from_slice(&7u16.to_be_bytes());
        body.extend_from_slice(&[9; 200]);
        let mut out = Vec::new();
        packet(&mut out, 0x34, &body);
        ack(&mut out, 0x62, 7);
        let (first, used) = parse(&out).unwrap().unwrap();
        assert_eq!(
            first,
            Packet::Publish { qos: 2, packet_id: 7, topic: b"a/b", payload: &[9; 200] }
        );
        assert_eq!(parse(&out[used..]).unwrap().unwrap(), (Packet::PubRel(7), 4));
        assert_eq!(parse(&out[..used - 1]).unwrap(), None);
        assert_eq!(parse(&out[..2]).unwrap(), None);
    }

    #[test]
    fn rejects_broken_packets() {
        assert!(parse(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert!(parse(&[0x40, 0]).is_err());
        assert!(parse(&[0x32, 3, 0, 5, b'a']).is_err());
    }
}
