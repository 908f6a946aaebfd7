//! Every loadtest scenario runs against Isthmus with small counts, so the harness cannot rot.
//! Speed is not asserted here: the scenarios themselves fail if a message is missing.

use isthmus::config::Config;
use isthmus_loadtest::Throughput;

fn broker(shards: usize) -> isthmus::serve::Running {
    let mut config = Config::default();
    config.server.shards = shards;
    config.server.pin_cores = false;
    config.nats.listen = "127.0.0.1:0".parse().unwrap();
    config.mqtt.listen = "127.0.0.1:0".parse().unwrap();
    isthmus::serve::start(config).unwrap()
}

#[test]
fn nats_scenarios_deliver_everything() {
    let running = broker(2);
    let addr = running.nats_addr().to_string();
    let limit = std::time::Duration::from_secs(30);
    isthmus_loadtest::pubsub(&addr, 20_000, 16, 1, 1, limit)
        .and_then(Throughput::complete)
        .unwrap();
    isthmus_loadtest::pubsub(&addr, 5_000, 256, 1, 4, limit)
        .and_then(Throughput::complete)
        .unwrap();
    isthmus_loadtest::pubsub(&addr, 5_000, 16, 4, 1, limit).and_then(Throughput::complete).unwrap();
    isthmus_loadtest::latency(&addr, 500, 5_000, 16).unwrap();
    running.stop();
}

#[test]
fn mqtt_scenarios_deliver_everything() {
    let mut config = Config::default();
    config.server.shards = 2;
    config.server.pin_cores = false;
    config.nats.listen = "127.0.0.1:0".parse().unwrap();
    config.mqtt.listen = "127.0.0.1:0".parse().unwrap();
    // QoS 1 runs must not lose messages to the per-session queue bound (see mqtt_pubsub).
    config.mqtt.max_queued_messages = 1_000_000;
    let running = isthmus::serve::start(config).unwrap();
    let addr = running.mqtt_addr().to_string();
    let limit = std::time::Duration::from_secs(30);
    isthmus_loadtest::mqtt_pubsub(&addr, 20_000, 16, 1, 1, 0, limit)
        .and_then(Throughput::complete)
        .unwrap();
    isthmus_loadtest::mqtt_pubsub(&addr, 20_000, 16, 1, 1, 1, limit)
        .and_then(Throughput::complete)
        .unwrap();
    isthmus_loadtest::mqtt_pubsub(&addr, 5_000, 256, 1, 4, 1, limit)
        .and_then(Throughput::complete)
        .unwrap();
    isthmus_loadtest::mqtt_pubsub(&addr, 5_000, 16, 4, 1, 0, limit)
        .and_then(Throughput::complete)
        .unwrap();
    running.stop();
}

#[test]
fn compare_runs_every_scenario_against_isthmus() {
    let options = isthmus_loadtest::compare::Options {
        rounds: 1,
        isthmus: env!("CARGO_BIN_EXE_isthmus").into(),
        nats_server: "none".into(),
        mosquitto: "none".into(),
        shards: 2,
        scale: 0.01,
        only: None,
        out: None,
    };
    isthmus_loadtest::compare::run(&options).unwrap();
}
