//! `isthmus-loadtest`: a wire-level load generator for NATS and MQTT brokers. It talks to brokers only over TCP, so it drives Isthmus and nats-server the
//! same way. Every run is bounded by a message count and a time limit and targets loopback
//! unless told otherwise.

use clap::{Parser, Subcommand};
use isthmus_loadtest::{compare, latency, mqtt_pubsub, pubsub, Throughput};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "isthmus-loadtest", about = "Wire-level load generator for NATS and MQTT brokers")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Publishers -> subscribers throughput on one subject (1->1, fan-out 1->K, fan-in K->1).
    NatsPubsub {
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:4222")]
        addr: String,
        /// Messages per publisher.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Payload bytes.
        #[arg(long, default_value_t = 16)]
        size: usize,
        /// Publisher connections.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Subscriber connections.
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
    /// Round-trip latency at a fixed rate (publisher and subscriber on separate connections),
    /// corrected for coordinated omission.
    NatsLatency {
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:4222")]
        addr: String,
        /// Messages to send.
        #[arg(long, default_value_t = 20_000)]
        messages: u64,
        /// Messages per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Payload bytes (at least 8: the send time travels in the payload).
        #[arg(long, default_value_t = 16)]
        size: usize,
    },
    /// MQTT 3.1.1 publishers -> subscribers throughput on one topic, at QoS 0 or 1.
    MqttPubsub {
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:1883")]
        addr: String,
        /// Messages per publisher.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Payload bytes.
        #[arg(long, default_value_t = 16)]
        size: usize,
        /// Publisher connections.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Subscriber connections.
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
        /// QoS of publishes and subscriptions (0 or 1).
        #[arg(long, default_value_t = 0)]
        qos: u8,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
    /// Starts Isthmus, nats-server (NATS, and MQTT with JetStream) and mosquitto on loopback,
    /// runs the same scenarios against each in interleaved rounds, prints medians and ratios.
    Compare(compare::Options),
}

fn main() {
    let result = match Cli::parse().scenario {
        Scenario::NatsPubsub { addr, messages, size, publishers, subscribers, timeout_s } => {
            let limit = Duration::from_secs(timeout_s);
            pubsub(&addr, messages, size, publishers, subscribers, limit)
                .and_then(Throughput::complete)
                .map(drop)
        }
        Scenario::NatsLatency { addr, messages, rate, size } => {
            latency(&addr, messages, rate, size.max(8)).map(drop)
        }
        Scenario::MqttPubsub { addr, messages, size, publishers, subscribers, qos, timeout_s } => {
            let limit = Duration::from_secs(timeout_s);
            mqtt_pubsub(&addr, messages, size, publishers, subscribers, qos, limit)
                .and_then(Throughput::complete)
                .map(drop)
        }
        Scenario::Compare(options) => compare::run(&options),
    };
    if let Err(error) = result {
        eprintln!("isthmus-loadtest: {error}");
        std::process::exit(1);
    }
}
