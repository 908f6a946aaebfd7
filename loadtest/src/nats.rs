//! The NATS side of the wire: connecting (INFO, CONNECT, PING/PONG), publishing, and an
//! incremental parser of what a server sends (`MSG`, `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`,
//! `INFO`). Only what the scenarios need; no reconnects, no TLS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

/// The CONNECT a loadtest client sends without credentials: no verbose `+OK`, headers allowed
/// (brokers deliver MQTT-originated messages as `HMSG` with an `Nmqtt-Pub` header).
pub const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\n";

/// The CONNECT every loadtest client sends: [`CONNECT`], plus `user` and `auth_token` once
/// [`crate::set_credentials`] gave a token (built once; credentials never change after).
pub fn connect_line() -> &'static [u8] {
    static WITH_CREDENTIALS: OnceLock<Vec<u8>> = OnceLock::new();
    match crate::credentials() {
        None => CONNECT,
        Some(credentials) => WITH_CREDENTIALS.get_or_init(|| {
            let options = serde_json::json!({
                "verbose": false,
                "pedantic": false,
                "headers": true,
                "user": credentials.username,
                "auth_token": credentials.token,
            });
            format!("CONNECT {options}\r\n").into_bytes()
        }),
    }
}

/// Connects, reads INFO and sends CONNECT (no PING: [`sync`] waits for the server when needed).
pub fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let info = read_until(&mut stream, b"\r\n")?;
    if !info.starts_with(b"INFO ") {
        let text = String::from_utf8_lossy(&info);
        return Err(std::io::Error::other(format!("expected INFO, got {text:?}")));
    }
    stream.write_all(connect_line())?;
    Ok(stream)
}

/// Sends PING and reads until PONG: the server has then handled everything sent before. Only
/// for a connection that receives nothing else meanwhile (before subscribing, or a publisher).
pub fn sync(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.write_all(b"PING\r\n")?;
    let seen = read_until(stream, b"PONG\r\n")?;
    if let Some(at) = find(&seen, b"-ERR") {
        let line = seen[at..].split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(std::io::Error::other(String::from_utf8_lossy(line).into_owned()));
    }
    Ok(())
}

/// One frame from the server. Slices borrow the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A delivery (`MSG`, or `HMSG` with its header block skipped).
    Msg {
        /// The subject it was published on.
        subject: &'a [u8],
        /// The subscription it matched.
        sid: &'a [u8],
        /// The reply subject, if the publisher gave one.
        reply: Option<&'a [u8]>,
        /// The payload (headers removed).
        payload: &'a [u8],
    },
    /// The server asks for a PONG.
    Ping,
    /// The answer to our PING.
    Pong,
    /// `+OK`, `INFO` and anything else the scenarios ignore.
    Other,
    /// `-ERR '...'`: the text.
    Err(&'a [u8]),
}

/// Longest control line accepted before the parser calls the stream garbage.
const CONTROL_LINE_BYTES_MAX: usize = 4096;

/// Parses one frame from the start of `buf`: `Ok(None)` until a whole frame is there, else the
/// frame and its length in bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > CONTROL_LINE_BYTES_MAX {
            return Err("NATS control line too long (not a NATS stream?)".into());
        }
        return Ok(None);
    };
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let head = newline + 1;
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let verb = words.next().unwrap_or_default();
    let headers = match verb {
        b"MSG" | b"msg" => false,
        b"HMSG" | b"hmsg" => true,
        b"PING" | b"ping" => return Ok(Some((Frame::Ping, head))),
        b"PONG" | b"pong" => return Ok(Some((Frame::Pong, head))),
        b"-ERR" | b"-err" => return Ok(Some((Frame::Err(line), head))),
        _ => return Ok(Some((Frame::Other, head))),
    };
    let mut fields: [&[u8]; 5] = [&[]; 5];
    let mut count = 0;
    for word in words {
        if count == fields.len() {
            return Err(format!("bad NATS line {:?}", String::from_utf8_lossy(line)));
        }
        fields[count] = word;
        count += 1;
    }
    // MSG subject sid [reply] size; HMSG subject sid [reply] header_size total_size.
    let sizes = if headers { 2 } else { 1 };
    if count < 2 + sizes || count > 3 + sizes {
        return Err(format!("bad NATS line {:?}", String::from_utf8_lossy(line)));
    }
    let reply = (count == 3 + sizes).then_some(fields[2]);
    let total = number(fields[count - 1])?;
    let header_bytes = if headers { number(fields[count - 2])? } else { 0 };
    if header_bytes > total {
        return Err(format!("bad NATS line {:?}", String::from_utf8_lossy(line)));
    }
    let end = head + total + 2;
    if buf.len() < end {
        return Ok(None);
    }
    if buf[end - 2..end] != *b"\r\n" {
        return Err(format!("NATS payload of {total} bytes not followed by CRLF"));
    }
    let payload = &buf[head + header_bytes..head + total];
    Ok(Some((Frame::Msg { subject: fields[0], sid: fields[1], reply, payload }, end)))
}

/// [`parse`] with a shortcut for the common case of a subscriber: a delivery whose header
/// (everything before the payload) is byte-for-byte the previous one's, as every message of one
/// publisher on one subscription is, is cut without parsing its control line. The harness
/// shares the cores with the broker, so its cost per message shows in the broker's rate.
#[derive(Debug, Default)]
pub struct Parser {
    /// The last delivery's bytes before its payload (`MSG subject sid size\r\n`, or an HMSG
    /// line and its header block).
    prefix: Vec<u8>,
    /// That delivery's payload length.
    payload_bytes: usize,
}

impl Parser {
    /// The next frame at the start of `buf`, as [`parse`] returns it.
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, String> {
        let (head, body) = (self.prefix.len(), self.payload_bytes);
        if head > 0 && buf.len() >= head + body + 2 && buf.starts_with(&self.prefix) {
            let end = head + body;
            if buf[end..end + 2] == *b"\r\n" {
                let payload = &buf[head..end];
                return Ok(Some((
                    Frame::Msg { subject: &[], sid: &[], reply: None, payload },
                    end + 2,
                )));
            }
        }
        let parsed = parse(buf)?;
        if let Some((Frame::Msg { payload, reply: None, .. }, used)) = &parsed {
            self.prefix.clear();
            self.prefix.extend_from_slice(&buf[..used - payload.len() - 2]);
            self.payload_bytes = payload.len();
        }
        Ok(parsed)
    }
}

/// Appends `PUB subject [reply] size\r\npayload\r\n`.
pub fn publish(out: &mut Vec<u8>, subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject);
    if let Some(reply) = reply {
        out.push(b' ');
        out.extend_from_slice(reply);
    }
    out.extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Reads until `end` has been seen and returns everything read; fails if the server sent
/// anything after `end` (it would be lost). Only for handshakes, where the server sends nothing
/// unasked.
pub fn read_until(stream: &mut TcpStream, end: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut seen = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = find(&seen, end) {
            if at + end.len() != seen.len() {
                let extra = String::from_utf8_lossy(&seen[at + end.len()..]);
                return Err(std::io::Error::other(format!("unexpected {extra:?} in a handshake")));
            }
            return Ok(seen);
        }
        if seen.len() > 64 * 1024 {
            return Err(std::io::Error::other("no end of handshake in 64 KiB"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            let text = String::from_utf8_lossy(&seen);
            return Err(std::io::Error::other(format!("closed after {text:?}")));
        }
        seen.extend_from_slice(&chunk[..n]);
    }
}

fn number(digits: &[u8]) -> Result<usize, String> {
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!("bad NATS size {:?}", String::from_utf8_lossy(digits)));
    }
    Ok(digits.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_msg_hmsg_and_control_lines() {
        let buf = b"MSG a.b 1 3\r\nabc\r\nHMSG a.b 2 r.x 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPING\r\n";
        let (frame, used) = parse(buf).unwrap().unwrap();
        assert_eq!(frame, Frame::Msg { subject: b"a.b", sid: b"1", reply: None, payload: b"abc" });
        let rest = &buf[used..];
        let (frame, used2) = parse(rest).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::Msg { subject: b"a.b", sid: b"2", reply: Some(b"r.x"), payload: b"hi" }
        );
        assert_eq!(parse(&rest[used2..]).unwrap().unwrap().0, Frame::Ping);
    }

    #[test]
    fn the_repeat_shortcut_cuts_the_same_frames_as_parse() {
        let buf = b"MSG a.b 1 3\r\nabc\r\nMSG a.b 1 3\r\nxyz\r\nMSG a.b 1 4\r\nwxyz\r\nPING\r\n";
        let mut parser = Parser::default();
        let mut at = 0;
        let mut payloads = Vec::new();
        while let Some((frame, used)) = parser.next(&buf[at..]).unwrap() {
            if let Frame::Msg { payload, .. } = frame {
                payloads.push(payload.to_vec());
            }
            at += used;
        }
        assert_eq!(at, buf.len());
        assert_eq!(payloads, [b"abc".to_vec(), b"xyz".to_vec(), b"wxyz".to_vec()]);
        // A same-looking prefix whose payload does not end in CRLF is parsed the long way.
        let mut parser = Parser::default();
        parser.next(b"MSG a 1 3\r\nabc\r\n").unwrap();
        assert!(parser.next(b"MSG a 1 3\r\nabcd\r\n").is_err());
    }

    #[test]
    fn waits_for_whole_frames_and_rejects_garbage() {
        assert_eq!(parse(b"MSG a 1 3\r\nab").unwrap(), None);
        assert_eq!(parse(b"MSG a 1").unwrap(), None);
        assert!(parse(b"MSG a 1 x\r\n").is_err());
        assert!(parse(b"HMSG a 1 5 3\r\n").is_err());
        assert!(parse(&[b'x'; CONTROL_LINE_BYTES_MAX + 1]).is_err());
    }
}
