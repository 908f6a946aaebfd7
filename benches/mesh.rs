//! Cross-shard hand-off as the broker does it: two executors pinned to CPUs 0 and 1, envelopes
//! (`Bytes` subject and payload shared by refcount, plus a sid) sent in batches carried as
//! `Vec<Envelope>`, emptied vectors recycled to the producer so steady state allocates nothing.
//!
//! Variants, run interleaved (A B C A B C ...):
//! - `glommio-mesh`: `MeshBuilder::full(2, MESH_CHANNEL_BATCHES)`, `send_to`/`recv_from`, vectors
//!   going home through the same mesh in the reverse direction.
//! - `crossbeam-doorbell`: `crossbeam_channel::bounded`, `try_send`/`try_recv`; the consumer sets
//!   a `sleeping` flag and awaits a byte on a Unix socket, the producer writes that byte only when
//!   it finds the flag set, and yields its task queue and retries when the channel is full.
//! - `glommio-mesh-static` (throughput only, a control): the mesh with `Bytes::from_static`
//!   subject and payload, so no refcount is shared between the cores.
//!
//! Throughput is million messages per second from a start barrier to the last receive; latency
//! is one-way, one envelope at a time, 50 us apart. `cargo bench --bench mesh` takes about a
//! minute and writes tuning/results/mesh-<unix time>.json; `MESH_BENCH_QUICK=1` is a smoke run of
//! about 10 s that only prints. Both print a table and one `json: ` line per measurement.

use bytes::Bytes;
use futures_lite::AsyncReadExt;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers};
use glommio::{GlommioError, LocalExecutorBuilder, Placement, ResourceType};
use isthmus::limits::MESH_CHANNEL_BATCHES;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Registered I/O buffer per executor; small because RLIMIT_MEMLOCK is 8 MiB here and every
/// executor registers it with three rings.
const IO_MEMORY: usize = 512 * 1024;
const BATCHES: [usize; 4] = [1, 16, 64, 256];
const LATENCY_SPACING: Duration = Duration::from_micros(50);
/// Latency messages sent before samples are kept, per run.
const LATENCY_WARMUP: u64 = 200;
const LATENCY_SAMPLES: usize = 10_000;
/// Control row: the mesh with `Bytes::from_static`, to separate the channel's cost from the
/// cost of two cores sharing the `Bytes` refcounts.
const STATIC_CONTROL: &str = "glommio-mesh-static";
/// Copied once per run into refcounted `Bytes`, so every envelope clone and drop touches a
/// refcount shared by both cores, as the broker's slices of a read buffer do.
const SUBJECT: &[u8] = b"sensors.device42.temperature";
const PAYLOAD: &[u8] = &[7u8; 16];

/// What the broker hands to another shard, reduced to its shape.
struct Envelope {
    subject: Bytes,
    payload: Bytes,
    sid: u64,
}

/// What travels in the glommio mesh.
enum Item {
    Batch(Vec<Envelope>),
    Recycle(Vec<Envelope>),
    Done,
}

#[derive(Clone, Copy)]
enum Mode {
    /// As fast as the channel takes them; sid is the sequence number.
    Throughput { messages: u64, batch: usize },
    /// One envelope every `spacing`; sid is the send time in ns since `base`.
    Latency { samples: usize, spacing: Duration, base: Instant },
}

impl Mode {
    fn total(self) -> u64 {
        match self {
            Mode::Throughput { messages, .. } => messages,
            Mode::Latency { samples, .. } => LATENCY_WARMUP + samples as u64,
        }
    }

    fn batch(self) -> usize {
        match self {
            Mode::Throughput { batch, .. } => batch,
            Mode::Latency { .. } => 1,
        }
    }
}

/// One run of one variant.
#[derive(Default)]
struct Run {
    mps: f64,
    /// Sends that found the channel full.
    full_waits: u64,
    /// Doorbell writes (crossbeam variant only).
    rings: u64,
    /// Times the consumer went to wait on the doorbell (crossbeam variant only).
    sleeps: u64,
    /// Times the producer found its pool empty and drained the way home (mesh only).
    drains: u64,
    /// Batch vectors the producer had to allocate because none had come home.
    allocated: u64,
    /// Thread CPU time over wall time, percent.
    producer_cpu: f64,
    consumer_cpu: f64,
    /// Wall time over messages sent, in latency mode.
    spacing_us: f64,
    latencies_ns: Vec<u64>,
}

/// The producer's half: builds batches, reusing vectors that came home.
struct Source {
    mode: Mode,
    subject: Bytes,
    payload: Bytes,
    sent: u64,
    allocated: u64,
    next_send: Option<Instant>,
}

impl Source {
    /// `refcounted` false gives `Bytes::from_static`, whose clones touch no shared counter.
    fn new(mode: Mode, refcounted: bool) -> Source {
        let (subject, payload) = if refcounted {
            (Bytes::copy_from_slice(SUBJECT), Bytes::copy_from_slice(PAYLOAD))
        } else {
            (Bytes::from_static(SUBJECT), Bytes::from_static(PAYLOAD))
        };
        Source { mode, subject, payload, sent: 0, allocated: 0, next_send: None }
    }

    fn done(&self) -> bool {
        self.sent >= self.mode.total()
    }

    /// In latency mode, sleeps until the next send slot; a late timer does not bunch sends up.
    ///
    /// A glommio timer this short fires late (the achieved spacing is reported). Spinning
    /// instead is worse: `yield_task_queue_now` with a single task queue returns straight to
    /// the same queue without polling the reactor, so shared channels (the mesh's way home)
    /// and timers go unprocessed until the 100 ms preempt timer fires.
    async fn pace(&mut self) {
        if let Mode::Latency { spacing, .. } = self.mode {
            let now = Instant::now();
            let slot = self.next_send.unwrap_or(now);
            if slot > now {
                glommio::timer::sleep(slot - now).await;
            }
            self.next_send = Some(slot.max(Instant::now()) + spacing);
        }
    }

    fn batch(&mut self, recycled: Option<Vec<Envelope>>) -> Vec<Envelope> {
        let batch = self.mode.batch();
        let mut v = recycled.unwrap_or_else(|| {
            self.allocated += 1;
            Vec::with_capacity(batch)
        });
        debug_assert!(v.is_empty());
        let n = (batch as u64).min(self.mode.total() - self.sent);
        let first = match self.mode {
            Mode::Throughput { .. } => self.sent,
            Mode::Latency { base, .. } => base.elapsed().as_nanos() as u64,
        };
        for i in 0..n {
            v.push(Envelope {
                subject: self.subject.clone(),
                payload: self.payload.clone(),
                sid: first + i,
            });
        }
        self.sent += n;
        v
    }
}

/// The consumer's half: checks order, touches every envelope, drops it, keeps latencies.
struct Sink {
    mode: Mode,
    received: u64,
    bytes: u64,
    latencies_ns: Vec<u64>,
}

impl Sink {
    fn new(mode: Mode) -> Sink {
        let samples = match mode {
            Mode::Latency { samples, .. } => samples,
            Mode::Throughput { .. } => 0,
        };
        Sink { mode, received: 0, bytes: 0, latencies_ns: Vec::with_capacity(samples) }
    }

    /// Empties `batch`; true when the last message has arrived.
    fn take(&mut self, batch: &mut Vec<Envelope>) -> bool {
        let now_ns = match self.mode {
            Mode::Latency { base, .. } => base.elapsed().as_nanos() as u64,
            Mode::Throughput { .. } => 0,
        };
        for envelope in batch.drain(..) {
            match self.mode {
                Mode::Throughput { .. } => assert_eq!(envelope.sid, self.received, "order"),
                Mode::Latency { .. } if self.received >= LATENCY_WARMUP => {
                    self.latencies_ns.push(now_ns.saturating_sub(envelope.sid));
                }
                Mode::Latency { .. } => {}
            }
            self.bytes += (envelope.subject.len() + envelope.payload.len()) as u64;
            self.received += 1;
        }
        self.received == self.mode.total()
    }
}

fn executor(cpu: usize) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(Placement::Fixed(cpu)).io_memory(IO_MEMORY)
}

/// CPU time of the calling thread in ns (first field of /proc/thread-self/schedstat), 0 if
/// unavailable.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse().ok()))
        .unwrap_or(0)
}

/// Producer's report: start time, CPU used, full waits, rings, drains, allocations.
struct ProducerSide {
    start: Instant,
    cpu_ns: u64,
    full_waits: u64,
    rings: u64,
    /// Times the mesh producer found its pool empty and drained the way home.
    drains: u64,
    allocated: u64,
}

/// Consumer's report: time of the last receive, CPU used, sleeps, what it took.
struct ConsumerSide {
    end: Instant,
    cpu_ns: u64,
    sleeps: u64,
    sink: Sink,
}

fn finish(mode: Mode, p: ProducerSide, c: ConsumerSide) -> Run {
    let wall = c.end.duration_since(p.start).as_secs_f64();
    assert_eq!(c.sink.received, mode.total());
    assert_eq!(c.sink.bytes, mode.total() * (SUBJECT.len() + PAYLOAD.len()) as u64);
    Run {
        mps: mode.total() as f64 / wall / 1e6,
        full_waits: p.full_waits,
        rings: p.rings,
        sleeps: c.sleeps,
        drains: p.drains,
        allocated: p.allocated,
        producer_cpu: p.cpu_ns as f64 / 1e9 / wall * 100.0,
        consumer_cpu: c.cpu_ns as f64 / 1e9 / wall * 100.0,
        spacing_us: wall * 1e6 / mode.total() as f64,
        latencies_ns: c.sink.latencies_ns,
    }
}

/// Takes every vector waiting on the mesh's way home, without waiting.
///
/// Mesh receivers have no `try_recv`, and a task awaiting `recv_from` is woken only by a reactor
/// pass, which a busy executor does not take (`yield_task_queue_now` with one task queue goes
/// straight back to it; a timer shorter than the time to poll it is ready at once). A recycler
/// task therefore let the way home fill up and most vectors be dropped. `poll_once` tries the
/// queue directly; each miss leaves one stale waker in the reactor, woken later for nothing.
async fn drain_home(receivers: &Receivers<Item>, pool: &mut Vec<Vec<Envelope>>) {
    while let Some(item) = futures_lite::future::poll_once(receivers.recv_from(1)).await {
        match item {
            Ok(Some(Item::Recycle(v))) => pool.push(v),
            _ => panic!("unexpected on the way home"),
        }
    }
}

/// Variant A: glommio's channel mesh both ways.
fn mesh_run(mode: Mode, refcounted: bool) -> Run {
    let mesh: MeshBuilder<Item, Full> = MeshBuilder::full(2, MESH_CHANNEL_BATCHES);
    let barrier = Arc::new(Barrier::new(2));
    let (producer_mesh, producer_barrier) = (mesh.clone(), Arc::clone(&barrier));
    let producer = executor(0)
        .spawn(move || async move {
            let (senders, receivers) = producer_mesh.join().await.expect("mesh join");
            let mut pool = Vec::<Vec<Envelope>>::new();
            let mut source = Source::new(mode, refcounted);
            producer_barrier.wait();
            let (start, cpu_start) = (Instant::now(), thread_cpu_ns());
            let (mut full_waits, mut drains) = (0, 0);
            while !source.done() {
                source.pace().await;
                if pool.is_empty() {
                    drains += 1;
                    drain_home(&receivers, &mut pool).await;
                }
                let item = Item::Batch(source.batch(pool.pop()));
                match senders.try_send_to(1, item) {
                    Ok(()) => {}
                    Err(GlommioError::WouldBlock(ResourceType::Channel(item))) => {
                        full_waits += 1;
                        if senders.send_to(1, item).await.is_err() {
                            panic!("consumer hung up");
                        }
                    }
                    Err(error) => panic!("send: {error}"),
                }
            }
            loop {
                match receivers.recv_from(1).await {
                    Ok(Some(Item::Recycle(_))) => {}
                    Ok(Some(Item::Done)) => break,
                    _ => panic!("consumer hung up early"),
                }
            }
            let cpu_ns = thread_cpu_ns() - cpu_start;
            ProducerSide {
                start,
                cpu_ns,
                full_waits,
                rings: 0,
                drains,
                allocated: source.allocated,
            }
        })
        .expect("producer executor");
    let consumer = executor(1)
        .spawn(move || async move {
            let (senders, receivers) = mesh.join().await.expect("mesh join");
            let mut sink = Sink::new(mode);
            barrier.wait();
            let cpu_start = thread_cpu_ns();
            loop {
                match receivers.recv_from(0).await {
                    Ok(Some(Item::Batch(mut v))) => {
                        if sink.take(&mut v) {
                            break;
                        }
                        // Like the broker, a receiver never waits on a send: if the way home is
                        // full the vector is dropped and the producer allocates (counted).
                        let _ = senders.try_send_to(0, Item::Recycle(v));
                    }
                    _ => panic!("producer hung up early"),
                }
            }
            let (end, cpu_ns) = (Instant::now(), thread_cpu_ns() - cpu_start);
            let _ = senders.send_to(0, Item::Done).await;
            ConsumerSide { end, cpu_ns, sleeps: 0, sink }
        })
        .expect("consumer executor");
    let p = producer.join().expect("producer");
    let c = consumer.join().expect("consumer");
    finish(mode, p, c)
}

/// Variant B: crossbeam-channel both ways, a doorbell socket rung only for a sleeping consumer.
///
/// glommio 0.9 has no safe way to await an fd made elsewhere (`UnixStream::pair` binds both ends
/// to the calling executor and is `!Send`; adopting a std socket needs the unsafe `FromRawFd`),
/// so the consumer listens on a path and the producer connects a plain non-blocking std socket.
fn doorbell_run(mode: Mode, tag: usize) -> Run {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Envelope>>(MESH_CHANNEL_BATCHES);
    let (home_tx, home_rx) = crossbeam_channel::bounded::<Vec<Envelope>>(MESH_CHANNEL_BATCHES * 2);
    let sleeping = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(2));
    let path =
        std::env::temp_dir().join(format!("isthmus-mesh-bench-{}-{tag}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let (consumer_sleeping, consumer_barrier, consumer_path) =
        (Arc::clone(&sleeping), Arc::clone(&barrier), path.clone());
    let consumer = executor(1)
        .spawn(move || async move {
            let listener = glommio::net::UnixListener::bind(&consumer_path).expect("bind doorbell");
            bound_tx.send(()).expect("main waits for the bind");
            let mut bell = listener.accept().await.expect("doorbell connects");
            let mut sink = Sink::new(mode);
            let (mut ring, mut sleeps) = ([0u8; 64], 0);
            consumer_barrier.wait();
            let cpu_start = thread_cpu_ns();
            loop {
                match rx.try_recv() {
                    Ok(mut v) => {
                        if sink.take(&mut v) {
                            break;
                        }
                        // Cannot be full: the producer allocates only when this queue is empty.
                        let _ = home_tx.try_send(v);
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => {
                        consumer_sleeping.store(true, Ordering::SeqCst);
                        // Pairs with the producer's fence: either it sees `sleeping` or we see
                        // its batch.
                        fence(Ordering::SeqCst);
                        if !rx.is_empty() {
                            consumer_sleeping.store(false, Ordering::SeqCst);
                            continue;
                        }
                        sleeps += 1;
                        match bell.read(&mut ring).await {
                            Ok(n) if n > 0 => consumer_sleeping.store(false, Ordering::SeqCst),
                            _ => panic!("doorbell closed"),
                        }
                    }
                    Err(crossbeam_channel::TryRecvError::Disconnected) => panic!("producer gone"),
                }
            }
            let (end, cpu_ns) = (Instant::now(), thread_cpu_ns() - cpu_start);
            ConsumerSide { end, cpu_ns, sleeps, sink }
        })
        .expect("consumer executor");
    bound_rx.recv().expect("consumer bound the doorbell");
    let bell = std::os::unix::net::UnixStream::connect(&path).expect("connect doorbell");
    bell.set_nonblocking(true).expect("non-blocking doorbell");
    let producer = executor(0)
        .spawn(move || async move {
            let mut bell = bell;
            let mut source = Source::new(mode, true);
            barrier.wait();
            let (start, cpu_start) = (Instant::now(), thread_cpu_ns());
            let (mut full_waits, mut rings) = (0, 0);
            while !source.done() {
                source.pace().await;
                let mut v = source.batch(home_rx.try_recv().ok());
                loop {
                    match tx.try_send(v) {
                        Ok(()) => break,
                        Err(crossbeam_channel::TrySendError::Full(back)) => {
                            v = back;
                            full_waits += 1;
                            glommio::executor().yield_task_queue_now().await;
                        }
                        Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                            panic!("consumer gone")
                        }
                    }
                }
                fence(Ordering::SeqCst);
                if sleeping.swap(false, Ordering::SeqCst) {
                    rings += 1;
                    match bell.write(&[1]) {
                        // A full socket buffer means unread rings: the consumer will wake.
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("doorbell: {e}"),
                    }
                }
            }
            let cpu_ns = thread_cpu_ns() - cpu_start;
            ProducerSide {
                start,
                cpu_ns,
                full_waits,
                rings,
                drains: 0,
                allocated: source.allocated,
            }
        })
        .expect("producer executor");
    let p = producer.join().expect("producer");
    let c = consumer.join().expect("consumer");
    let _ = std::fs::remove_file(&path);
    finish(mode, p, c)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn min_max(samples: &[f64]) -> (f64, f64) {
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn throughput_record(name: &str, batch: usize, messages: u64, runs: &[Run]) -> Value {
    let mps: Vec<f64> = runs.iter().map(|r| r.mps).collect();
    let (min, max) = min_max(&mps);
    let median_mps = median(mps);
    let full = median(runs.iter().map(|r| r.full_waits as f64).collect());
    let rings = median(runs.iter().map(|r| r.rings as f64).collect());
    let sleeps = median(runs.iter().map(|r| r.sleeps as f64).collect());
    let drains = median(runs.iter().map(|r| r.drains as f64).collect());
    let allocated = runs.iter().map(|r| r.allocated).max().unwrap_or(0);
    let pcpu = median(runs.iter().map(|r| r.producer_cpu).collect());
    let ccpu = median(runs.iter().map(|r| r.consumer_cpu).collect());
    println!(
        "{name:<19} {batch:>5} {:>4} {median_mps:>8.2} {:>15} {full:>11} {:>11} {allocated:>6} \
         {pcpu:>5.0}/{ccpu:<3.0}",
        runs.len(),
        format!("{min:.2}-{max:.2}"),
        if name.starts_with("glommio-mesh") {
            format!("{drains} drains")
        } else {
            format!("{rings}/{sleeps}")
        },
    );
    json!({
        "kind": "throughput",
        "variant": name,
        "batch": batch,
        "messages": messages,
        "runs": runs.len(),
        "median_mps": round3(median_mps),
        "min": round3(min),
        "max": round3(max),
        "all_mps": runs.iter().map(|r| round3(r.mps)).collect::<Vec<_>>(),
        "full_waits_median": full,
        "rings_median": rings,
        "consumer_sleeps_median": sleeps,
        "producer_drains_median": drains,
        "vecs_allocated_max": allocated,
        "producer_cpu_pct_median": round3(pcpu),
        "consumer_cpu_pct_median": round3(ccpu),
    })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn latency_record(name: &str, runs: &[Run]) -> Value {
    let mut all: Vec<u64> = runs.iter().flat_map(|r| r.latencies_ns.iter().copied()).collect();
    all.sort_unstable();
    let run_p50: Vec<f64> = runs
        .iter()
        .map(|r| {
            let mut s = r.latencies_ns.clone();
            s.sort_unstable();
            percentile(&s, 0.5)
        })
        .collect();
    let (p50_min, p50_max) = min_max(&run_p50);
    let spacing = median(runs.iter().map(|r| r.spacing_us).collect());
    let allocated = runs.iter().map(|r| r.allocated).max().unwrap_or(0);
    let (p50, p90, p99, max) = (
        percentile(&all, 0.5),
        percentile(&all, 0.9),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
    );
    println!(
        "{name:<19} {:>4} {:>7} {spacing:>8.1} {p50:>8.1} {:>13} {p90:>8.1} {p99:>8.1} {max:>9.1} {allocated:>6}",
        runs.len(),
        all.len(),
        format!("{p50_min:.1}-{p50_max:.1}"),
    );
    json!({
        "kind": "latency",
        "variant": name,
        "batch": 1,
        "runs": runs.len(),
        "samples": all.len(),
        "spacing_us_target": LATENCY_SPACING.as_secs_f64() * 1e6,
        "spacing_us_achieved": round3(spacing),
        "p50_us": round3(p50),
        "p90_us": round3(p90),
        "p99_us": round3(p99),
        "max_us": round3(max),
        "run_p50_us_min": round3(p50_min),
        "run_p50_us_max": round3(p50_max),
        "vecs_allocated_max": allocated,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}

fn main() {
    let quick = std::env::var("MESH_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let runs = if quick { 3 } else { 7 };
    let load_before = loadavg();
    let started = Instant::now();
    println!("load average before: {load_before}");
    println!(
        "\nthroughput, M msg/s (median of interleaved runs); full = median sends that found the \
         channel full;\nwakes = doorbell writes/consumer waits, or mesh producer's drains of the way home; vecs = most batch vectors \
         allocated in one run; cpu% = producer/consumer CPU over wall time"
    );
    println!(
        "{:<19} {:>5} {:>4} {:>8} {:>15} {:>11} {:>11} {:>6} {:>9}",
        "variant", "batch", "runs", "median", "min-max", "full", "wakes", "vecs", "cpu%"
    );
    let mut records = Vec::new();
    for batch in BATCHES {
        let messages: u64 = match (quick, batch) {
            (true, 1) => 100_000,
            (true, _) => 1_000_000,
            (false, 1) => 500_000,
            (false, _) => 5_000_000,
        };
        let mode = Mode::Throughput { messages, batch };
        let (mut mesh, mut doorbell, mut control) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            mesh.push(mesh_run(mode, true));
            doorbell.push(doorbell_run(mode, run));
            control.push(mesh_run(mode, false));
            std::thread::sleep(Duration::from_millis(20));
        }
        records.push(throughput_record("glommio-mesh", batch, messages, &mesh));
        records.push(throughput_record("crossbeam-doorbell", batch, messages, &doorbell));
        records.push(throughput_record(STATIC_CONTROL, batch, messages, &control));
    }

    let total_samples = if quick { 2_000 } else { LATENCY_SAMPLES };
    let samples = total_samples.div_ceil(runs);
    println!(
        "\none-way latency of single envelopes, us, {} us apart ({LATENCY_WARMUP} warm-up sends \
         per run dropped)",
        LATENCY_SPACING.as_micros()
    );
    println!(
        "{:<19} {:>4} {:>7} {:>8} {:>8} {:>13} {:>8} {:>8} {:>9} {:>6}",
        "variant", "runs", "samples", "spacing", "p50", "run p50s", "p90", "p99", "max", "vecs"
    );
    let spacing = LATENCY_SPACING;
    let (mut mesh, mut doorbell) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let base = Instant::now();
        mesh.push(mesh_run(Mode::Latency { samples, spacing, base }, true));
        doorbell.push(doorbell_run(Mode::Latency { samples, spacing, base }, run));
        std::thread::sleep(Duration::from_millis(20));
    }
    records.push(latency_record("glommio-mesh", &mesh));
    records.push(latency_record("crossbeam-doorbell", &doorbell));

    let load_after = loadavg();
    println!("\nload average after: {load_after}; {:.1} s", started.elapsed().as_secs_f64());
    for record in &records {
        println!("json: {record}");
    }
    if quick {
        println!("quick run: nothing written to tuning/results");
    } else {
        write_results(records, &load_before, &load_after);
    }
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn write_results(records: Vec<Value>, load_before: &str, load_after: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let commit = command_output("git", &["-C", root, "rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "none".to_string());
    let bench_dirty =
        command_output("git", &["-C", root, "status", "--porcelain", "benches/mesh.rs"])
            .map(|s| !s.is_empty());
    let kernel = command_output("uname", &["-r"]).unwrap_or_default();
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
    let document = json!({
        "bench": "mesh",
        "command": "cargo bench --bench mesh",
        "argv": std::env::args().collect::<Vec<_>>(),
        "unix_time": now,
        "commit": commit,
        "bench_source_modified": bench_dirty,
        "kernel": kernel,
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "channel_batches": MESH_CHANNEL_BATCHES,
        "io_memory": IO_MEMORY,
        "results": records,
    });
    let dir = std::path::Path::new(root).join("tuning/results");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("mesh-{now}.json"));
    let text = serde_json::to_string_pretty(&document).expect("json") + "\n";
    match std::fs::write(&path, text) {
        Ok(()) => println!("results written to {}", path.display()),
        Err(error) => eprintln!("could not write {}: {error}", path.display()),
    }
}
