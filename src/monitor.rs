//! The HTTP monitoring endpoint (`[monitor] listen`): every shard's counters, for people
//! (`/varz`, JSON) and for scrapers (`/metrics`, Prometheus text), and `/healthz`.
//!
//! It runs on one plain thread with `tiny_http` (HTTP is not the broker's core, and a GET-only
//! endpoint gains nothing from a hand-written server), reads the counters with relaxed loads
//! and never touches a shard, so a scrape costs the message path nothing. Counter names and
//! help texts come from [`ShardStats::FIELDS`], so every counter is exported.

use crate::shard::Identity;
use crate::stats::{Kind, ShardStats};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A running endpoint.
pub struct Monitor {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").field("addr", &self.addr).finish()
    }
}

/// What the endpoint reports on.
struct Source {
    identity: Arc<Identity>,
    stats: Vec<Arc<ShardStats>>,
    started: Instant,
    started_unix: u64,
}

impl Monitor {
    /// Binds `addr` and serves until [`Monitor::stop`].
    pub fn start(
        addr: SocketAddr,
        identity: Arc<Identity>,
        stats: Vec<Arc<ShardStats>>,
    ) -> Result<Monitor, String> {
        let server = tiny_http::Server::http(addr)
            .map_err(|error| format!("cannot listen on {addr} (monitor): {error}"))?;
        let addr = server.server_addr().to_ip().ok_or("monitor: not an IP listener")?;
        let server = Arc::new(server);
        let source = Source { identity, stats, started: Instant::now(), started_unix: unix_now() };
        let thread = {
            let server = Arc::clone(&server);
            std::thread::Builder::new()
                .name("isthmus-monitor".into())
                .spawn(move || {
                    for request in server.incoming_requests() {
                        respond(&source, request);
                    }
                })
                .map_err(|error| format!("monitor thread: {error}"))?
        };
        Ok(Monitor { server, addr, thread: Some(thread) })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the thread.
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn respond(source: &Source, request: tiny_http::Request) {
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let get = matches!(request.method(), tiny_http::Method::Get | tiny_http::Method::Head);
    let (status, content_type, body) = match (get, path.as_str()) {
        (false, _) => (405, "text/plain", "only GET\n".to_string()),
        (true, "/varz") => (200, "application/json", varz(source)),
        (true, "/metrics") => (200, "text/plain; version=0.0.4", metrics(source)),
        (true, "/healthz") => (200, "application/json", "{\"status\":\"ok\"}\n".to_string()),
        (true, "/") => (200, "text/plain", "/varz\n/metrics\n/healthz\n".to_string()),
        (true, _) => (404, "text/plain", "not found: try /varz, /metrics or /healthz\n".into()),
    };
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
        .expect("a valid header");
    let response =
        tiny_http::Response::from_string(body).with_status_code(status).with_header(header);
    // A client that hung up gets nothing; nothing else to do about it.
    let _ = request.respond(response);
}

/// `/varz`: the server's identity and every counter summed over the shards (named as in
/// nats-server's `/varz` where it has the same counter: `connections`, `in_msgs`, ...), then
/// the same per shard.
fn varz(source: &Source) -> String {
    let mut totals = serde_json::Map::new();
    let mut shards = Vec::with_capacity(source.stats.len());
    for field in ShardStats::FIELDS {
        let sum: u64 = source.stats.iter().map(|s| ShardStats::get((field.get)(s))).sum();
        totals.insert(field.name.into(), sum.into());
    }
    for stats in &source.stats {
        let mut shard = serde_json::Map::new();
        for field in ShardStats::FIELDS {
            shard.insert(field.name.into(), ShardStats::get((field.get)(stats)).into());
        }
        shards.push(serde_json::Value::Object(shard));
    }
    let identity = &source.identity;
    let mut varz = serde_json::json!({
        "server_id": identity.server_id,
        "server_name": identity.name,
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": crate::COMMIT,
        "nats_listen": identity.nats_addr.to_string(),
        "mqtt_listen": identity.mqtt_addr.to_string(),
        "start_unix": source.started_unix,
        "now_unix": unix_now(),
        "uptime_s": source.started.elapsed().as_secs(),
        "shard_count": source.stats.len(),
    });
    let object = varz.as_object_mut().expect("an object");
    object.extend(totals);
    object.insert("shards".into(), serde_json::Value::Array(shards));
    let mut text = serde_json::to_string_pretty(&varz).expect("JSON");
    text.push('\n');
    text
}

/// `/metrics`: one series per counter and shard, `isthmus_<name>{shard="i"}`; counters end in
/// `_total` (Prometheus' convention), gauges do not.
fn metrics(source: &Source) -> String {
    let mut text = String::with_capacity(16 * 1024);
    for field in ShardStats::FIELDS {
        let (name, kind) = match field.kind {
            Kind::counter => {
                let base = field.name.strip_prefix("total_").unwrap_or(field.name);
                (format!("isthmus_{base}_total"), "counter")
            }
            Kind::gauge => (format!("isthmus_{}", field.name), "gauge"),
        };
        let help: String = field.help.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = writeln!(text, "# HELP {name} {}", help.replace('\\', "\\\\"));
        let _ = writeln!(text, "# TYPE {name} {kind}");
        for (shard, stats) in source.stats.iter().enumerate() {
            let value = ShardStats::get((field.get)(stats));
            let _ = writeln!(text, "{name}{{shard=\"{shard}\"}} {value}");
        }
    }
    let _ = writeln!(text, "# HELP isthmus_uptime_seconds Seconds since the broker started.");
    let _ = writeln!(text, "# TYPE isthmus_uptime_seconds gauge");
    let _ = writeln!(text, "isthmus_uptime_seconds {}", source.started.elapsed().as_secs());
    text
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
