//! The ceiling of MQTT QoS 0 1->1 on this host: a relay that does only what a broker must
//! (frame the publisher's bytes, forward PUBLISH packets unchanged to the one subscriber,
//! answer PINGREQ) on one blocking thread, with no routing, no copy into an outbound buffer
//! and no executor. `isthmus-loadtest mqtt-pubsub` runs against it as against a broker.
//!
//! Usage: relay-ceiling ADDR BUFSIZE   (prints `ready mqtt=ADDR`; serves pairs until killed)
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// Reads one whole packet (fixed header, remaining length, body) and returns its first byte
/// and body.
fn packet(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    let kind = byte[0];
    let (mut len, mut shift) = (0usize, 0);
    loop {
        stream.read_exact(&mut byte)?;
        len |= ((byte[0] & 0x7f) as usize) << shift;
        shift += 7;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok((kind, body))
}

/// The length of the whole frame at the start of `buf`, when it is all there.
fn frame(buf: &[u8]) -> Option<usize> {
    let (mut len, mut shift) = (0usize, 0);
    for (i, &b) in buf.iter().enumerate().skip(1).take(4) {
        len |= ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            let whole = 1 + i + len;
            return (buf.len() >= whole).then_some(whole);
        }
    }
    None
}

fn serve(listener: &TcpListener, bufsize: usize) -> std::io::Result<()> {
    let (mut sub, _) = listener.accept()?;
    packet(&mut sub)?; // CONNECT
    sub.write_all(&[0x20, 2, 0, 0])?;
    let (_, body) = packet(&mut sub)?; // SUBSCRIBE: packet id, one filter
    sub.write_all(&[0x90, 3, body[0], body[1], 0])?;
    let (mut publisher, _) = listener.accept()?;
    packet(&mut publisher)?;
    publisher.write_all(&[0x20, 2, 0, 0])?;
    let (mut buf, mut filled) = (vec![0u8; bufsize], 0);
    loop {
        let n = publisher.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        // Forward each run of whole PUBLISH frames in one write; answer PINGREQ in between.
        let (mut at, mut run) = (0, 0);
        while let Some(len) = frame(&buf[at..filled]) {
            let kind = buf[at] >> 4;
            if kind != 3 {
                sub.write_all(&buf[run..at])?;
                match kind {
                    12 => publisher.write_all(&[0xd0, 0])?,
                    14 => return Ok(()),
                    _ => {}
                }
                run = at + len;
            }
            at += len;
        }
        sub.write_all(&buf[run..at])?;
        buf.copy_within(at..filled, 0);
        filled -= at;
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0); // a frame larger than the buffer
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listener =
        TcpListener::bind(args.get(1).map_or("127.0.0.1:0", String::as_str)).expect("bind");
    let bufsize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(65536);
    println!("ready mqtt={}", listener.local_addr().expect("address"));
    loop {
        if let Err(e) = serve(&listener, bufsize) {
            eprintln!("pair ended: {e}");
        }
    }
}
