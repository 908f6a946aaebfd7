//! Every loadtest scenario runs against Isthmus with small counts, so the harness cannot rot.
//! Speed is not asserted here: the scenarios themselves fail if a message is lost or
//! duplicated, a request goes unanswered, a handshake fails or an idle connection is cut.

mod common;

use isthmus_loadtest::report::{table, Run};
use isthmus_loadtest::{Idle, Measurement, Pace, Protocol, Requests, Shape, Storm};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

fn broker() -> isthmus::serve::Running {
    // QoS 1/2 runs must not lose messages to the per-session queue bound (see mqtt_pubsub).
    common::in_process(2, "max_queued_messages = 1000000")
}

fn shape(messages: u64, size: usize, publishers: usize, subscribers: usize) -> Shape {
    Shape { messages, size, publishers, subscribers, limit: LIMIT }
}

/// Prints the run as the binary would and fails on any loss.
fn check(result: Result<Measurement, String>) -> Measurement {
    let measurement = result.and_then(Measurement::complete).unwrap();
    let run =
        Run { broker: "isthmus".into(), label: measurement.scenario.into(), round: 1, measurement };
    print!("{}", table(std::slice::from_ref(&run)));
    println!("{}", run.json_line());
    run.measurement
}

#[test]
fn nats_scenarios_deliver_everything() {
    let running = broker();
    let addr = running.nats_addr().to_string();
    check(isthmus_loadtest::nats_pubsub(&addr, &shape(20_000, 16, 1, 1)));
    check(isthmus_loadtest::nats_pubsub(&addr, &shape(5_000, 256, 1, 4)));
    check(isthmus_loadtest::nats_pubsub(&addr, &shape(5_000, 16, 4, 1)));
    check(isthmus_loadtest::nats_pubsub(&addr, &shape(2_000, 4, 1, 1)));
    check(isthmus_loadtest::nats_queue(&addr, &shape(5_000, 16, 2, 3)));
    let requests = Requests {
        requests: 2_000,
        size: 16,
        requesters: 2,
        responders: 2,
        window: 8,
        limit: LIMIT,
    };
    let measured = check(isthmus_loadtest::request_reply(&addr, &requests));
    assert!(measured.latency.is_some());
    let trace = std::env::temp_dir().join(format!("isthmus-trace-{}", std::process::id()));
    let pace = Pace {
        messages: 500,
        warmup: 100,
        rate: 5_000,
        size: 16,
        limit: LIMIT,
        trace: Some(trace.clone()),
    };
    let measured = check(isthmus_loadtest::nats_latency(&addr, &pace));
    let latency = measured.latency.expect("latency");
    // The slowest message is one of the recorded ones: due after the 100 warm-up messages
    // (20 ms at 5,000/s) and before the schedule's end (600 messages, 120 ms).
    let at = latency.max_at_ms.expect("max_at_ms");
    assert!((20..120).contains(&at), "slowest message due at {at} ms");
    // The trace holds the 500 recorded messages, due every 200 us from the 101st on, and
    // the same slowest latency as the histogram (which keeps 3 significant digits).
    let text = std::fs::read_to_string(&trace).unwrap();
    std::fs::remove_file(&trace).unwrap();
    let mut lines = text.lines();
    let start: u128 =
        lines.next().and_then(|l| l.strip_prefix("start_unix_ns ")).unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    assert!(start < now.as_nanos() && now.as_nanos() - start < 60_000_000_000, "start {start}");
    let rows: Vec<(u64, u64)> = lines
        .map(|l| {
            let (sent, latency) = l.split_once(' ').unwrap();
            (sent.parse().unwrap(), latency.parse().unwrap())
        })
        .collect();
    let mut sent: Vec<u64> = rows.iter().map(|r| r.0).collect();
    sent.sort_unstable();
    assert_eq!(sent, (100..600).map(|i| i * 200_000).collect::<Vec<u64>>());
    let slowest = rows.iter().map(|r| r.1).max().unwrap();
    assert!(
        slowest <= latency.max_us && latency.max_us - slowest <= latency.max_us / 500 + 1,
        "trace max {slowest} us, histogram max {} us",
        latency.max_us
    );
    running.stop();
}

#[test]
fn mqtt_scenarios_deliver_everything() {
    let running = broker();
    let addr = running.mqtt_addr().to_string();
    for qos in 0..=2 {
        check(isthmus_loadtest::mqtt_pubsub(&addr, &shape(5_000, 16, 1, 1), qos, None));
        check(isthmus_loadtest::mqtt_pubsub(&addr, &shape(1_000, 256, 1, 3), qos, None));
        check(isthmus_loadtest::mqtt_pubsub(&addr, &shape(1_000, 16, 3, 1), qos, Some(16)));
        let pace =
            Pace { messages: 300, warmup: 100, rate: 5_000, size: 16, limit: LIMIT, trace: None };
        check(isthmus_loadtest::mqtt_latency(&addr, &pace, qos));
    }
    running.stop();
}

#[test]
fn cross_protocol_scenarios_deliver_everything() {
    let running = broker();
    let (nats, mqtt) = (running.nats_addr().to_string(), running.mqtt_addr().to_string());
    for qos in 0..=1 {
        check(isthmus_loadtest::mqtt_to_nats(&mqtt, &nats, &shape(3_000, 16, 1, 2), qos, None));
        check(isthmus_loadtest::nats_to_mqtt(&nats, &mqtt, &shape(3_000, 16, 2, 1), qos));
    }
    running.stop();
}

#[test]
fn connection_scenarios_hold_every_connection() {
    let running = broker();
    let pid = Some(std::process::id());
    for (protocol, addr) in
        [(Protocol::Nats, running.nats_addr()), (Protocol::Mqtt, running.mqtt_addr())]
    {
        let addr = addr.to_string();
        for keep in [false, true] {
            let storm = Storm { protocol, connections: 200, concurrency: 4, keep, limit: LIMIT };
            check(isthmus_loadtest::storm(&addr, &storm));
        }
        // A 1 s keep alive and 2 s of rounds: the harness's PINGREQs must keep them open.
        let idle = Idle {
            protocol,
            connections: 100,
            rounds: 2,
            keep_alive_s: 1,
            sources: 3,
            pid,
            settle: Duration::from_millis(1_000),
        };
        let measured = check(isthmus_loadtest::idle(&addr, &idle));
        assert_eq!(measured.memory.map(|m| m.kib_per_connection.len()), Some(2));
    }
    running.stop();
}

#[test]
fn compare_runs_every_scenario_against_isthmus() {
    let chart = std::env::temp_dir().join(format!("loadtest-smoke-{}.svg", std::process::id()));
    let md = chart.with_extension("md");
    let options = isthmus_loadtest::compare::Options {
        rounds: 1,
        isthmus: env!("CARGO_BIN_EXE_isthmus").into(),
        nats_server: "none".into(),
        mosquitto: "none".into(),
        shards: 2,
        scale: 0.01,
        only: None,
        out: Some(md.clone()),
        chart: Some(chart.clone()),
    };
    isthmus_loadtest::compare::run(&options).unwrap();
    // The report names the broker binary's build, not the checkout it was started from.
    let report = std::fs::read_to_string(&md).unwrap();
    let _ = std::fs::remove_file(&md);
    let commit = format!("- commit: {} (of the Isthmus binary", isthmus::COMMIT);
    assert!(report.contains(&commit), "{report}");
    assert!(report.contains(&format!("- brokers: isthmus {}\n", isthmus::VERSION)), "{report}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    let _ = std::fs::remove_file(&chart);
    assert!(svg.starts_with("<svg") && svg.contains("Latency") && svg.contains("idle"));
}
