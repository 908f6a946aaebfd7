//! Cross-shard hand-off: glommio's channel mesh against crossbeam-channel with an eventfd-style
//! doorbell, both carrying batches of envelopes between two pinned executors, emptied vectors
//! recycled to the producer as the broker does.
//!
//! `cargo bench --bench mesh` (about a minute); `MESH_BENCH_QUICK=1` for a few seconds. Prints a
//! table and `json:` lines; the full run also writes tuning/results/mesh-<unix time>.json.

use bytes::Bytes;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::{LocalExecutorBuilder, Placement};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the broker sends per message: subject and payload shared by refcount, plus a tag.
struct Envelope {
    _subject: Bytes,
    _payload: Bytes,
    _tag: u64,
}

enum Item {
    Batch(Vec<Envelope>),
    Recycle(Vec<Envelope>),
}

const CHANNEL_BATCHES: usize = 64;
const IO_MEMORY: usize = 512 * 1024;

fn executor(cpu: usize) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(Placement::Fixed(cpu)).io_memory(IO_MEMORY)
}

fn fill(batch: &mut Vec<Envelope>, size: usize, subject: &Bytes, payload: &Bytes, base: u64) {
    for i in 0..size {
        batch.push(Envelope {
            _subject: subject.clone(),
            _payload: payload.clone(),
            _tag: base + i as u64,
        });
    }
}

/// Million messages per second through glommio's channel mesh.
fn glommio_mesh(messages: u64, batch: usize) -> f64 {
    let mesh: MeshBuilder<Item, Full> = MeshBuilder::full(2, CHANNEL_BATCHES);
    let producer_mesh = mesh.clone();
    let producer = executor(0)
        .spawn(move || async move {
            let (senders, receivers) = producer_mesh.join().await.expect("mesh join");
            let pool = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Vec<Envelope>>::new()));
            let recycled = std::rc::Rc::clone(&pool);
            glommio::spawn_local(async move {
                while let Ok(Some(Item::Recycle(v))) = receivers.recv_from(1).await {
                    recycled.borrow_mut().push(v);
                }
            })
            .detach();
            let (subject, payload) =
                (Bytes::from_static(b"bench.subject"), Bytes::from(vec![7u8; 16]));
            let start = Instant::now();
            let mut sent = 0;
            while sent < messages {
                let size = batch.min((messages - sent) as usize);
                let mut v = pool.borrow_mut().pop().unwrap_or_else(|| Vec::with_capacity(batch));
                fill(&mut v, size, &subject, &payload, sent);
                sent += size as u64;
                if senders.send_to(1, Item::Batch(v)).await.is_err() {
                    break;
                }
            }
            start
        })
        .expect("producer executor");
    let consumer = executor(1)
        .spawn(move || async move {
            let (senders, receivers) = mesh.join().await.expect("mesh join");
            let mut received = 0;
            while received < messages {
                match receivers.recv_from(0).await {
                    Ok(Some(Item::Batch(mut v))) => {
                        received += v.len() as u64;
                        v.clear();
                        let _ = senders.try_send_to(0, Item::Recycle(v));
                    }
                    _ => break,
                }
            }
            Instant::now()
        })
        .expect("consumer executor");
    let start = producer.join().expect("producer");
    let end = consumer.join().expect("consumer");
    messages as f64 / (end - start).as_secs_f64() / 1e6
}

/// Million messages per second through crossbeam-channel plus a doorbell socket that the
/// producer rings only when the consumer said it was going to sleep.
fn crossbeam_doorbell(messages: u64, batch: usize) -> (f64, u64) {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Envelope>>(CHANNEL_BATCHES);
    let (recycle_tx, recycle_rx) = crossbeam_channel::bounded::<Vec<Envelope>>(CHANNEL_BATCHES * 2);
    let sleeping = Arc::new(AtomicBool::new(false));
    let path = std::env::temp_dir().join(format!("isthmus-mesh-bench-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let consumer_sleeping = Arc::clone(&sleeping);
    let consumer_path = path.clone();
    let consumer = executor(1)
        .spawn(move || async move {
            use futures_lite::AsyncReadExt;
            let listener = glommio::net::UnixListener::bind(&consumer_path).expect("bind doorbell");
            bound_tx.send(()).expect("main waits");
            let mut bell = listener.accept().await.expect("doorbell connects");
            let mut ring = [0u8; 64];
            let mut received = 0;
            while received < messages {
                match rx.try_recv() {
                    Ok(mut v) => {
                        received += v.len() as u64;
                        v.clear();
                        let _ = recycle_tx.try_send(v);
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => {
                        consumer_sleeping.store(true, Ordering::SeqCst);
                        if !rx.is_empty() {
                            consumer_sleeping.store(false, Ordering::SeqCst);
                            continue;
                        }
                        if bell.read(&mut ring).await.unwrap_or(0) == 0 {
                            break;
                        }
                        consumer_sleeping.store(false, Ordering::SeqCst);
                    }
                    Err(crossbeam_channel::TryRecvError::Disconnected) => break,
                }
            }
            Instant::now()
        })
        .expect("consumer executor");
    bound_rx.recv().expect("consumer bound");
    let mut bell = std::os::unix::net::UnixStream::connect(&path).expect("connect doorbell");
    let producer = executor(0)
        .spawn(move || async move {
            let (subject, payload) =
                (Bytes::from_static(b"bench.subject"), Bytes::from(vec![7u8; 16]));
            let start = Instant::now();
            let (mut sent, mut full, mut rings) = (0, 0u64, 0u64);
            while sent < messages {
                let size = batch.min((messages - sent) as usize);
                let mut v = recycle_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(batch));
                fill(&mut v, size, &subject, &payload, sent);
                sent += size as u64;
                loop {
                    match tx.try_send(v) {
                        Ok(()) => break,
                        Err(crossbeam_channel::TrySendError::Full(back)) => {
                            v = back;
                            full += 1;
                            glommio::executor().yield_task_queue_now().await;
                        }
                        Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                            return (start, full, rings)
                        }
                    }
                }
                if sleeping.swap(false, Ordering::SeqCst) {
                    rings += 1;
                    let _ = bell.write_all(&[1]);
                }
            }
            // The consumer may be asleep with the last batch unseen: ring once more.
            let _ = bell.write_all(&[1]);
            (start, full, rings)
        })
        .expect("producer executor");
    let (start, full, _rings) = producer.join().expect("producer");
    let end = consumer.join().expect("consumer");
    let _ = std::fs::remove_file(&path);
    (messages as f64 / (end - start).as_secs_f64() / 1e6, full)
}

fn median_min_max(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[0], samples[samples.len() - 1])
}

fn main() {
    let quick = std::env::var_os("MESH_BENCH_QUICK").is_some();
    let runs = if quick { 1 } else { 5 };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut rows = Vec::new();
    println!("variant             batch  runs  median Mmsg/s  (min - max)   producer full-waits");
    for batch in [1usize, 16, 64, 256] {
        let messages: u64 = match (quick, batch) {
            (true, 1) => 50_000,
            (true, _) => 500_000,
            (false, 1) => 300_000,
            (false, _) => 3_000_000,
        };
        let (mut mesh, mut doorbell, mut full_waits) = (Vec::new(), Vec::new(), 0);
        for _ in 0..runs {
            // Interleaved (A B A B ...) so that drifting background load hits both alike.
            mesh.push(glommio_mesh(messages, batch));
            let (rate, full) = crossbeam_doorbell(messages, batch);
            doorbell.push(rate);
            full_waits += full;
            std::thread::sleep(Duration::from_millis(20));
        }
        for (name, samples, full) in
            [("glommio-mesh", mesh, None), ("crossbeam-doorbell", doorbell, Some(full_waits))]
        {
            let (median, min, max) = median_min_max(samples);
            println!(
                "{name:<19} {batch:>5} {runs:>5}  {median:>12.2}  ({min:.2} - {max:.2})   {}",
                full.map_or("-".to_string(), |f| f.to_string())
            );
            let json = format!(
                "{{\"variant\":\"{name}\",\"batch\":{batch},\"messages\":{messages},\"runs\":{runs},\"median_mmsgs\":{median:.3},\"min\":{min:.3},\"max\":{max:.3}}}"
            );
            println!("json: {json}");
            rows.push(json);
        }
    }
    if !quick {
        write_results(&rows, load.trim());
    }
}

fn write_results(rows: &[String], load: &str) {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let text = format!(
        "{{\"command\":\"cargo bench --bench mesh\",\"commit\":\"{commit}\",\"kernel\":\"{}\",\"cpu\":\"{cpu}\",\"loadavg_at_start\":\"{load}\",\"results\":[{}]}}\n",
        kernel.trim(),
        rows.join(",")
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/results");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("mesh-{now}.json"));
    match std::fs::write(&path, text) {
        Ok(()) => println!("results written to {}", path.display()),
        Err(error) => eprintln!("could not write {}: {error}", path.display()),
    }
}
