//! Scenarios of `isthmus-loadtest`, usable from tests: each talks to a broker only over TCP,
//! is bounded by a message count and a time limit, prints a human line and a `json:` line, and
//! returns an error if not every message arrived.

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
) -> Result<(), String> {
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
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "scenario  pubs subs msgs/pub size  delivered     elapsed   msgs/s(out)  publish msgs/s"
    );
    println!(
        "nats-pubsub {publishers:>3} {subscribers:>4} {messages:>8} {size:>4} {total:>10} {:>10.3}s {rate:>12.0} {:>14.0}",
        elapsed.as_secs_f64(),
        expected as f64 / published.as_secs_f64()
    );
    println!(
        "json: {{\"scenario\":\"nats-pubsub\",\"publishers\":{publishers},\"subscribers\":{subscribers},\"messages\":{messages},\"size\":{size},\"delivered\":{total},\"expected\":{},\"elapsed_s\":{:.6},\"delivered_per_s\":{rate:.0}}}",
        expected * subscribers as u64,
        elapsed.as_secs_f64()
    );
    if total != expected * subscribers as u64 {
        return Err(format!("delivered {total} of {} messages", expected * subscribers as u64));
    }
    Ok(())
}

/// Paced round-trip latency, corrected for coordinated omission.
pub fn latency(addr: &str, messages: u64, rate: u64, size: usize) -> Result<(), String> {
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
            std::hint::spin_loop();
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
    Ok(())
}
