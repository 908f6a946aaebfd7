//! The HTTP monitoring endpoint: what an operator reads with curl or Prometheus. The broker
//! runs in this process (isthmus only); requests go over real HTTP/1.1 on loopback.

mod common;

use std::time::Duration;

use common::{in_process_toml, nats_options, within};
use futures::StreamExt;
use isthmus::stats::ShardStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEST_LIMIT: Duration = Duration::from_secs(20);

/// One HTTP/1.1 request; returns (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to monitor");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The value of `series` (e.g. `isthmus_in_msgs_total{shard="0"}`) in a /metrics text.
fn series(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn varz_and_metrics_show_traffic_drops_and_connections() {
    if common::peer() != common::Peer::Isthmus {
        eprintln!("note: in-process isthmus test; skipped with ISTHMUS_TEST_PEER set");
        return;
    }
    let running = in_process_toml(2, "[monitor]\nlisten = \"127.0.0.1:0\"\n");
    let monitor = running.monitor_addr().expect("monitor listening");
    within(TEST_LIMIT, async {
        let url = running.nats_addr().to_string();
        let subscriber = nats_options().connect(&url).await.unwrap();
        let mut messages = subscriber.subscribe("mon.x").await.unwrap();
        let publisher = nats_options().connect(&url).await.unwrap();
        common::sync_interest(&subscriber, &publisher).await;
        let before = common::counter(&running, |s| &s.in_msgs);
        for i in 0..100 {
            publisher.publish("mon.x", format!("{i}").into()).await.unwrap();
        }
        publisher.flush().await.unwrap();
        for _ in 0..100 {
            tokio::time::timeout(Duration::from_secs(5), messages.next()).await.unwrap().unwrap();
        }
        // A client that sends garbage is closed and counted as a protocol error.
        let mut bad = tokio::net::TcpStream::connect(&url).await.unwrap();
        bad.write_all(b"CONNECT {}\r\nNONSENSE\r\n").await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut sink)).await;
        assert!(String::from_utf8_lossy(&sink).contains("-ERR"), "the bad client was told");

        // The bad client sees the close before its shard has counted it (tests/run.sh once
        // read 3 connections here), so wait a little for the count.
        let started = std::time::Instant::now();
        let (body, varz) = loop {
            let (status, body) = http(monitor, "GET", "/varz").await;
            assert_eq!(status, 200);
            let varz: serde_json::Value = serde_json::from_str(&body).expect("varz is JSON");
            if varz["connections"] == 2 || started.elapsed() > Duration::from_secs(2) {
                break (body, varz);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(varz["server_id"], subscriber.server_info().server_id.as_str());
        assert_eq!(varz["shard_count"], 2);
        assert_eq!(varz["git_commit"], isthmus::COMMIT, "the build's commit: {body}");
        assert_eq!(varz["shards"].as_array().map(Vec::len), Some(2));
        assert!(varz["in_msgs"].as_u64().unwrap() >= before + 100, "{body}");
        assert!(varz["out_msgs"].as_u64().unwrap() >= 100);
        assert_eq!(varz["connections"], 2, "two clients still connected: {body}");
        assert_eq!(varz["protocol_errors"], 1);
        assert_eq!(varz["slow_consumers"], 0);
        let per_shard: u64 =
            varz["shards"].as_array().unwrap().iter().map(|s| s["in_msgs"].as_u64().unwrap()).sum();
        assert_eq!(per_shard, varz["in_msgs"].as_u64().unwrap());

        let (status, text) = http(monitor, "GET", "/metrics").await;
        assert_eq!(status, 200);
        // Every counter of every shard is exported, with its help and type.
        for field in ShardStats::FIELDS {
            let name = match field.kind {
                isthmus::stats::Kind::counter => format!(
                    "isthmus_{}_total",
                    field.name.strip_prefix("total_").unwrap_or(field.name)
                ),
                isthmus::stats::Kind::gauge => format!("isthmus_{}", field.name),
            };
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} has no TYPE");
            for shard in 0..2 {
                let key = format!("{name}{{shard=\"{shard}\"}}");
                assert!(series(&text, &key).is_some(), "{key} missing");
            }
        }
        let in_msgs: u64 = (0..2)
            .map(|s| series(&text, &format!("isthmus_in_msgs_total{{shard=\"{s}\"}}")).unwrap())
            .sum();
        assert!(in_msgs >= before + 100);
        let errors: u64 = (0..2)
            .map(|s| {
                series(&text, &format!("isthmus_protocol_errors_total{{shard=\"{s}\"}}")).unwrap()
            })
            .sum();
        assert_eq!(errors, 1);

        assert_eq!(http(monitor, "GET", "/healthz").await, (200, "{\"status\":\"ok\"}\n".into()));
        assert_eq!(http(monitor, "GET", "/nope").await.0, 404);
        assert_eq!(http(monitor, "POST", "/varz").await.0, 405);
    })
    .await;
    running.stop();
}

#[test]
fn no_monitor_unless_configured() {
    if common::peer() != common::Peer::Isthmus {
        return;
    }
    let running = in_process_toml(1, "");
    assert_eq!(running.monitor_addr(), None);
    running.stop();
}

/// The `isthmus` binary (whose allocator hook releases memory) returns what traffic freed once
/// a shard has been quiet for half a second, and not before there was traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_releases_memory_once_quiet_after_traffic() {
    if common::peer() != common::Peer::Isthmus {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let toml = format!("[monitor]\nlisten = \"127.0.0.1:{port}\"\n");
    let broker = common::Broker::start(2, &toml);
    let monitor: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let releases = || async {
        let (status, body) = http(monitor, "GET", "/varz").await;
        assert_eq!(status, 200);
        let varz: serde_json::Value = serde_json::from_str(&body).unwrap();
        varz["memory_releases"].as_u64().unwrap()
    };
    within(TEST_LIMIT, async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(releases().await, 0, "nothing to release before any traffic");
        let client = common::nats_connect(&broker).await;
        let mut sub = client.subscribe("quiet.x").await.unwrap();
        client.flush().await.unwrap();
        for i in 0..1000 {
            client.publish("quiet.x", format!("{i}").into()).await.unwrap();
        }
        for _ in 0..1000 {
            tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
        }
        // Half a second without messages (two 250 ms sweeps), then once per quiet spell.
        let mut released = 0;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            released = releases().await;
            if released > 0 {
                break;
            }
        }
        assert!(released >= 1, "no release after the traffic stopped");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(releases().await, released, "one release per quiet spell");
    })
    .await;
}
