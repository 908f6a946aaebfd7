//! Starting and stopping the broker: build the shared state, start one pinned glommio executor
//! per shard joined by a channel mesh, report readiness, and stop cleanly on SIGINT/SIGTERM.

use crate::config::Config;
use crate::limits::MESH_CHANNEL_BATCHES;
use crate::shard::mesh::MeshItem;
use crate::shard::{accept, Identity, Shard};
use crate::stats::ShardStats;
use crate::tls::ServerTls;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

/// How the process's allocator hands the calling thread's freed memory back to the kernel now.
static RELEASE_MEMORY: OnceLock<fn()> = OnceLock::new();

/// Tells the shards how to return freed memory to the kernel after a wave of connections went
/// dormant (the `isthmus` binary: mimalloc's `mi_collect(true)` on the shard's thread). Without
/// it (tests with another global allocator, embedders) freed memory stays with the allocator.
/// Only the first call counts.
pub fn set_release_memory(release: fn()) {
    let _ = RELEASE_MEMORY.set(release);
}

/// Runs the hook of [`set_release_memory`] on this thread; false if there is none.
pub(crate) fn release_memory() -> bool {
    match RELEASE_MEMORY.get() {
        Some(release) => {
            release();
            true
        }
        None => false,
    }
}

/// A running broker, for embedding in tests and benchmarks.
pub struct Running {
    /// Process identity (bound address, shutdown flag).
    pub identity: Arc<Identity>,
    /// Each shard's counters.
    pub stats: Vec<Arc<ShardStats>>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    monitor: Option<crate::monitor::Monitor>,
}

impl Running {
    /// The NATS address clients connect to.
    pub fn nats_addr(&self) -> SocketAddr {
        self.identity.nats_addr
    }

    /// The MQTT address clients connect to.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.identity.mqtt_addr
    }

    /// The MQTT-over-TLS address, if `[mqtt.tls]` is configured.
    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.identity.mqtt_tls_addr
    }

    /// The monitoring endpoint's address, if `[monitor] listen` is set.
    pub fn monitor_addr(&self) -> Option<SocketAddr> {
        self.monitor.as_ref().map(crate::monitor::Monitor::addr)
    }

    /// Asks every shard to stop and waits for them.
    pub fn stop(self) {
        if let Some(monitor) = self.monitor {
            monitor.stop();
        }
        self.identity.shutdown.store(true, Ordering::Relaxed);
        for handle in self.handles {
            let _ = handle.join();
        }
    }
}

/// Starts every shard and returns once all listen, or the first startup error.
pub fn start(config: Config) -> Result<Running, String> {
    config.validate()?;
    let shards = config.shard_count();
    let disabled =
        std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").unwrap_or_default();
    if disabled.trim() == "2" {
        return Err(startup_error("io_uring is disabled on this host"));
    }
    check_memlock(&config, shards);
    let auth = authenticator(&config)?;
    let (nats_addr, nats_reservation) = reserve_port_patiently(config.nats.listen)?;
    let (mqtt_addr, mqtt_reservation) = reserve_port_patiently(config.mqtt.listen)?;
    // Certificates are read once, here: a bad file stops the start instead of failing every
    // handshake.
    let nats_tls =
        config.nats.tls.as_ref().map(|t| ServerTls::from_files(&t.files(config.base_dir())));
    let nats_tls = nats_tls.transpose().map_err(|e| format!("nats.tls: {e}"))?;
    let mqtt_tls =
        config.mqtt.tls.as_ref().map(|t| ServerTls::from_files(&t.files(config.base_dir())));
    let mqtt_tls = mqtt_tls.transpose().map_err(|e| format!("mqtt.tls: {e}"))?;
    let (mqtt_tls_addr, mqtt_tls_reservation) = match &config.mqtt.tls {
        Some(tls) => {
            let (addr, reservation) = reserve_port_patiently(tls.listen)?;
            (Some(addr), Some(reservation))
        }
        None => (None, None),
    };
    let stats: Vec<Arc<ShardStats>> = (0..shards).map(|_| Arc::default()).collect();
    let identity = Arc::new(Identity {
        server_id: server_id(),
        name: config.server.name.clone(),
        nats_addr,
        mqtt_addr,
        mqtt_tls_addr,
        nats_tls,
        mqtt_tls,
        retain_seq: Default::default(),
        shutdown: Default::default(),
        interest_issued: (0..shards).map(|_| std::sync::atomic::AtomicU64::new(0)).collect(),
        auth,
        shard_stats: stats.clone(),
        moves_in_flight: (0..shards).map(|_| std::sync::atomic::AtomicU64::new(0)).collect(),
    });
    let config = Arc::new(config);
    let mesh: MeshBuilder<MeshItem, _> = MeshBuilder::full(shards, MESH_CHANNEL_BATCHES);
    let cpus = allowed_cpus();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::with_capacity(shards);
    for id in 0..shards {
        let placement = if config.server.pin_cores {
            Placement::Fixed(cpus[id % cpus.len()])
        } else {
            Placement::Unbound
        };
        let shard_stats = Arc::clone(&stats[id]);
        let (config, identity, mesh, ready) =
            (Arc::clone(&config), Arc::clone(&identity), mesh.clone(), ready_tx.clone());
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            .io_memory(config.server.io_memory_bytes)
            .spin_before_park(Duration::from_micros(config.server.spin_before_park_us));
        let handle = builder
            .spawn(move || async move {
                let shard = Rc::new(Shard::new(id, shards, config, identity, shard_stats));
                run_shard(shard, mesh, ready).await;
            })
            .map_err(|e| startup_error(&e.to_string()))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..shards {
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                identity.shutdown.store(true, Ordering::Relaxed);
                return Err(error);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Every shard that could not build its executor (io_uring refused, memlock)
                // ended before reporting; their join results say why.
                identity.shutdown.store(true, Ordering::Relaxed);
                let reasons: Vec<String> = handles
                    .into_iter()
                    .filter_map(|handle| handle.join().err().map(|e| e.to_string()))
                    .collect();
                return Err(startup_error(&reasons.join("; ")));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                identity.shutdown.store(true, Ordering::Relaxed);
                return Err(startup_error("a shard did not start within 30 s"));
            }
        }
    }
    // Every shard listens now: the reservations can go.
    drop((nats_reservation, mqtt_reservation, mqtt_tls_reservation));
    let monitor = match config.monitor.listen {
        None => None,
        Some(addr) => {
            match crate::monitor::Monitor::start(addr, Arc::clone(&identity), stats.clone()) {
                Ok(monitor) => Some(monitor),
                Err(error) => {
                    identity.shutdown.store(true, Ordering::Relaxed);
                    for handle in handles {
                        let _ = handle.join();
                    }
                    return Err(startup_error(&error));
                }
            }
        }
    };
    Ok(Running { identity, stats, handles, monitor })
}

/// `isthmus serve`: start, print the ready line, run until SIGINT/SIGTERM, stop.
pub fn run(config: Config) -> Result<(), String> {
    raise_open_files_limit();
    let config_source = config.source.clone();
    let running = start(config)?;
    let shutdown = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&shutdown)).map_err(|e| e.to_string())?;
    }
    // Before the ready line: SIGHUP's default action would end the process.
    let reload = Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(|e| e.to_string())?;
    let shards = running.stats.len();
    tracing::info!(nats = %running.nats_addr(), mqtt = %running.mqtt_addr(), shards, "isthmus is ready");
    {
        // The TLS listener and the monitor, when there are, are appended so the line keeps
        // its form.
        let mut more =
            running.mqtt_tls_addr().map(|a| format!(" mqtt_tls={a}")).unwrap_or_default();
        if let Some(addr) = running.monitor_addr() {
            more.push_str(&format!(" monitor={addr}"));
        }
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "ready nats={} mqtt={} shards={shards}{more}",
            running.nats_addr(),
            running.mqtt_addr()
        );
        let _ = stdout.flush();
    }
    while !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if reload.swap(false, Ordering::Relaxed) {
            reload_keys(&running, config_source.as_deref());
        }
    }
    tracing::info!("shutting down");
    running.stop();
    Ok(())
}

async fn run_shard(
    shard: Rc<Shard>,
    mesh: MeshBuilder<MeshItem, glommio::channels::channel_mesh::Full>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let mut listeners = Vec::new();
    for addr in [shard.identity.nats_addr, shard.identity.mqtt_addr] {
        match listen(addr) {
            Ok(listener) => listeners.push(listener),
            Err(error) => {
                let _ = ready.send(Err(format!("cannot listen on {addr}: {error}")));
                return;
            }
        }
    }
    let mqtt_listener = listeners.pop().expect("two listeners");
    let listener = listeners.pop().expect("two listeners");
    let mqtt_tls_listener = match shard.identity.mqtt_tls_addr {
        None => None,
        Some(addr) => match listen(addr) {
            Ok(listener) => Some(listener),
            Err(error) => {
                let _ = ready.send(Err(format!("cannot listen on {addr}: {error}")));
                return;
            }
        },
    };
    let mut tasks = Vec::new();
    if shard.count > 1 {
        let Ok((senders, mut receivers)) = mesh.join().await else {
            let _ = ready.send(Err("shard mesh could not be joined".into()));
            return;
        };
        let senders = Rc::new(senders);
        for (peer, receiver) in receivers.streams() {
            let shard = Rc::clone(&shard);
            tasks.push(glommio::spawn_local(async move {
                use futures_lite::StreamExt;
                let mut receiver = receiver;
                while let Some(item) = receiver.next().await {
                    match item {
                        MeshItem::Batch(mut ops) => {
                            shard.receive(peer, &mut ops);
                            shard.mesh.recycle(peer, ops);
                            for (slot, moved) in shard.take_mqtt_moved() {
                                let serve =
                                    crate::shard::mqtt::serve_moved(Rc::clone(&shard), slot, moved);
                                glommio::spawn_local(serve).detach();
                            }
                            for adopt in shard.take_adopted() {
                                let serve =
                                    crate::shard::mqtt::serve_adopted(Rc::clone(&shard), adopt);
                                glommio::spawn_local(serve).detach();
                            }
                            for moved in shard.take_moved() {
                                let serve =
                                    crate::shard::conn::serve_moved(Rc::clone(&shard), moved);
                                glommio::spawn_local(serve).detach();
                            }
                            // Consumers here that fell behind slow this peer's producers down
                            // through the mesh (its queue to us fills, its readers pause).
                            shard.wait_for_consumers(crate::shard::conn::STALL_BUDGET).await;
                            // The next batch may be waiting already, and taking it would not
                            // return to the executor: let the writers of this one run first.
                            futures_lite::future::yield_now().await;
                        }
                        MeshItem::Recycle(ops) => shard.mesh.take_home(ops),
                    }
                }
            }));
        }
        for peer in (0..shard.count).filter(|p| *p != shard.id) {
            let (shard, senders) = (Rc::clone(&shard), Rc::clone(&senders));
            tasks.push(glommio::spawn_local(async move {
                loop {
                    let item = shard.mesh.next_item(peer).await;
                    if let MeshItem::Batch(ops) = &item {
                        ShardStats::add(&shard.stats.mesh_batches_out, 1);
                        debug_assert!(!ops.is_empty());
                    }
                    if senders.send_to(peer, item).await.is_err() {
                        return;
                    }
                }
            }));
        }
    }
    let pinger = {
        let shard = Rc::clone(&shard);
        glommio::spawn_local(async move {
            let interval = Duration::from_millis(shard.config.nats.ping_interval_ms);
            loop {
                glommio::timer::sleep(interval).await;
                shard.ping_tick();
            }
        })
    };
    let sweeper = {
        let shard = Rc::clone(&shard);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(crate::shard::mqtt::SWEEP_INTERVAL).await;
                shard.mqtt_sweep();
            }
        })
    };
    let waker = (shard.config.mqtt.dormant_after_ms > 0)
        .then(|| match crate::shard::dormant::Dormancy::start(shard.id) {
            Ok((dormancy, pair)) => {
                shard.set_dormancy(dormancy);
                Some(glommio::spawn_local(crate::shard::mqtt::dormant_loop(
                    Rc::clone(&shard),
                    pair,
                )))
            }
            Err(error) => {
                tracing::warn!(%error, "no dormant MQTT connections on this shard");
                None
            }
        })
        .flatten();
    let mut acceptors = vec![
        glommio::spawn_local(accept::accept_nats(Rc::clone(&shard), listener)),
        glommio::spawn_local(accept::accept_mqtt(Rc::clone(&shard), mqtt_listener)),
    ];
    if let Some(listener) = mqtt_tls_listener {
        acceptors.push(glommio::spawn_local(accept::accept_mqtt_tls(Rc::clone(&shard), listener)));
    }
    let _ = ready.send(Ok(()));
    accept::wait_for_shutdown(&shard).await;
    // Dropping the accept tasks cancels them, which closes the listeners.
    drop(acceptors);
    // Shutdown: stop accepting (the listener is dropped), let writers flush, then end.
    shard.close_all();
    for _ in 0..100 {
        if shard.connection_count() == 0 {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    drop(pinger);
    drop(sweeper);
    drop(waker);
    drop(tasks);
}

/// [`reserve_port`], retried for up to a second while the address is in use. A broker that has
/// just exited can leave its listening sockets open for a few milliseconds: the kernel tears
/// down an io_uring instance, and cancels the accepts pending on those sockets, after the
/// process is gone. A restart right after a stop would otherwise fail (measured: `ss` still
/// showed the old LISTEN sockets after `wait` returned for the old process).
fn reserve_port_patiently(addr: SocketAddr) -> Result<(SocketAddr, socket2::Socket), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        match reserve_port(addr) {
            Err(e)
                if e.ends_with("address already in use")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

/// Resolves port 0 to a free port and checks that nobody else listens on the address, and
/// keeps the port reserved until the shards have bound it. Shards bind with SO_REUSEPORT,
/// which would silently share a port with another process of the same user, so the check binds
/// without it. The returned socket is bound but never listens (so no connection can queue on
/// it); SO_REUSEPORT is set on it only after the exclusive bind, which lets the shards join
/// while any other process's exclusive bind, e.g. a parallel test asking for port 0, is refused
/// until the shards hold the port. Drop it once they do.
fn reserve_port(addr: SocketAddr) -> Result<(SocketAddr, socket2::Socket), String> {
    let failed = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::AddrInUse => format!("cannot listen on {addr}: address already in use"),
        _ => format!("cannot listen on {addr}: {e}"),
    };
    let probe = tcp_socket(addr).map_err(failed)?;
    probe.bind(&addr.into()).map_err(failed)?;
    probe.set_reuse_port(true).map_err(failed)?;
    let bound = probe.local_addr().map_err(failed)?.as_socket().ok_or("not an IP address")?;
    Ok((bound, probe))
}

/// A TCP socket for `addr` with SO_REUSEADDR, as std's `TcpListener` sets it: a port whose
/// old connections are in TIME_WAIT is not "in use".
fn tcp_socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// A shard's listener on `addr`: SO_REUSEPORT (every shard binds the address, the kernel
/// spreads connections) and SO_REUSEADDR, which glommio's `TcpListener::bind` leaves out.
/// Accepted sockets inherit it, and without it the TIME_WAIT sockets a stopped broker leaves
/// behind kept a restarted one off its ports for a minute (tests/cli.rs). Backlog 1024, as
/// glommio's.
#[allow(unsafe_code)]
fn listen(addr: SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = tcp_socket(addr)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that nothing else owns.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// The CPUs this process may run on (`taskset`, cgroup cpusets), in order: shard `i` is pinned
/// to the `i mod n`-th of them. Pinning to ids 0..n-1 instead put shard 0 on CPU 0 under
/// `taskset -c 1` (seen by the tuning measurements, tuning/results/2026-12-01-tuning.md).
#[allow(unsafe_code)]
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bitmask the kernel fills; its size is passed along.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: as above; pid 0 is this thread, whose mask the process started with.
    let ok = unsafe { libc::sched_getaffinity(0, size, &mut set) } == 0;
    let cpus: Vec<usize> = if ok {
        // SAFETY: `set` was filled by the kernel; CPU_ISSET only reads it.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect()
    } else {
        Vec::new()
    };
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        return (0..n).collect();
    }
    cpus
}

/// Raises the soft limit on open descriptors to the hard limit, as nats-server does: every
/// device is a descriptor, and the soft default (often 1024) is far below what a broker host
/// allows. Logs what it got.
#[allow(unsafe_code)]
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let soft = limit.rlim_cur;
    if soft < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            tracing::warn!(soft, hard = limit.rlim_max, "cannot raise the open files limit");
            return;
        }
    }
    tracing::info!(open_files = limit.rlim_cur, "open files limit (one per connection)");
}

/// SIGHUP: reads the config file again and swaps in its `[auth.jwt]` key list (new kids
/// included, every key file re-read). Connections keep the grants they have; other settings
/// need a restart. On any error the old keys stay.
fn reload_keys(running: &Running, source: Option<&std::path::Path>) {
    let Some(auth) = running.identity.auth.as_ref() else {
        tracing::info!("SIGHUP: no [auth.jwt], nothing to reload");
        return;
    };
    let result = match source {
        Some(path) => Config::from_file(path)
            .and_then(|config| auth.reload_keys_from(&config.auth, config.base_dir())),
        None => auth.reload(),
    };
    match result {
        Ok(()) => tracing::info!("SIGHUP: token keys reloaded"),
        Err(error) => tracing::warn!(%error, "SIGHUP: token keys not reloaded; the old ones stay"),
    }
}

/// Loads `[auth.jwt]`. Without it the broker is open: `Config::validate` allows that on
/// loopback, or elsewhere with `auth.allow_anonymous`; say so at startup.
fn authenticator(config: &Config) -> Result<Option<crate::auth::Authenticator>, String> {
    if config.auth.jwt.is_some() {
        let auth = crate::auth::Authenticator::from_config(&config.auth, config.base_dir())
            .map_err(|e| format!("[auth.jwt]: {e}"))?;
        return Ok(Some(auth));
    }
    let exposed = [config.nats.listen, config.mqtt.listen].iter().any(|a| !a.ip().is_loopback());
    if exposed {
        tracing::warn!("auth.allow_anonymous and no [auth.jwt]: the broker is open to any client");
    } else {
        tracing::info!(
            "no [auth.jwt]: the broker is open to any client (it listens on loopback only)"
        );
    }
    Ok(None)
}

fn check_memlock(config: &Config, shards: usize) {
    // glommio registers io_memory with three rings per executor (DECISIONS.md §5); on
    // transparent huge pages each registration is charged whole 2 MiB pages.
    let huge_pages = std::env::var("MIMALLOC_ALLOW_THP")
        .map_or(config.server.allocator_huge_pages, |v| {
            !["0", "false", "off", "no"].contains(&v.as_str())
        });
    let needs = crate::doctor::Needs { shards, ..crate::doctor::Needs::new(config, 0) };
    let needed = needs.memlock_bytes(huge_pages.then_some(2 << 20));
    if let Some(limit) = memlock_limit() {
        if limit < needed {
            tracing::warn!(
                limit,
                needed,
                huge_pages,
                "RLIMIT_MEMLOCK is below what io_uring buffer registration needs; glommio falls back \
                 to unregistered buffers (sockets unaffected). Raise it with LimitMEMLOCK=, lower \
                 server.io_memory_bytes, or keep server.allocator_huge_pages off"
            );
        }
    }
}

fn memlock_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max locked memory"))?;
    let soft = line.split_whitespace().nth(3)?;
    soft.parse().ok()
}

fn startup_error(detail: &str) -> String {
    let disabled =
        std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").unwrap_or_default();
    let mut text = format!("cannot start shard executors: {detail}");
    if disabled.trim() != "0" && !disabled.is_empty() {
        text.push_str(&format!(
            " (kernel.io_uring_disabled = {}; set it to 0, see tuning/README.md)",
            disabled.trim()
        ));
    }
    text
}

fn server_id() -> String {
    // nats-server ids are 56 characters of base32; clients only display them.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut id = String::from("N");
    for _ in 0..55 {
        id.push(ALPHABET[fastrand::usize(..ALPHABET.len())] as char);
    }
    id
}
