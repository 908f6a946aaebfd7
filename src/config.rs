//! The TOML configuration tree with every default, and the command-line overrides.
//!
//! `default_config.toml` is the one source of truth for defaults: it is embedded in the binary,
//! printed by `isthmus config --default`, and a test checks that it parses to `Config::default()`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

/// The default configuration file, comments included.
pub const DEFAULT_TOML: &str = include_str!("default_config.toml");

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    pub server: ServerConfig,
    /// The NATS client listener.
    pub nats: NatsConfig,
    /// The MQTT listener and session limits.
    pub mqtt: MqttConfig,
}

/// `[server]`: process-wide settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// INFO `server_name`.
    pub name: String,
    /// Shard count; 0 means one per available core.
    pub shards: usize,
    /// Pin shard i to CPU i (mod CPU count).
    pub pin_cores: bool,
    /// io_uring registered buffer bytes per shard.
    pub io_memory_bytes: usize,
    /// Spin before parking, in microseconds.
    pub spin_before_park_us: u64,
    /// How long the allocator keeps freed memory before it returns it to the kernel, in
    /// milliseconds (-1 = never). Applied by the `isthmus` binary (mimalloc); MIMALLOC_PURGE_DELAY
    /// in the environment wins.
    pub allocator_purge_delay_ms: i64,
    /// Let the allocator use transparent huge pages. Applied by the `isthmus` binary;
    /// MIMALLOC_ALLOW_THP in the environment wins.
    pub allocator_huge_pages: bool,
}

/// `[nats]`: the NATS client listener and its limits.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest headers + payload a client may publish, in bytes.
    pub max_payload: u32,
    /// Longest protocol line, in bytes.
    pub max_control_line: u32,
    /// Unsent bytes per connection before it is a slow consumer.
    pub max_pending: u64,
    /// Server PING interval in milliseconds.
    pub ping_interval_ms: u64,
    /// Unanswered PINGs before the connection is stale.
    pub ping_max: u32,
    /// Longest a single write to a client may block, in milliseconds.
    pub write_deadline_ms: u64,
}

/// `[mqtt]`: the MQTT listener, packet limits and per-session bounds.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest packet accepted from a client, fixed header included (5.0 Maximum Packet Size).
    pub max_packet_bytes: u32,
    /// QoS 2 publishes a client may have unreleased towards the broker (5.0 Receive Maximum).
    pub receive_maximum: u16,
    /// QoS 1/2 deliveries unacknowledged per session; the client's Receive Maximum caps it too.
    pub max_inflight: u16,
    /// QoS 1/2 messages queued per session behind the inflight window; more are dropped and
    /// counted.
    pub max_queued_messages: usize,
    /// Unsent bytes per connection; QoS 0 deliveries beyond this are dropped and counted.
    pub max_pending_bytes: usize,
    /// Topic aliases a 5.0 client may set towards the broker.
    pub topic_alias_maximum: u16,
    /// Longest a session outlives its connection, in seconds; 3.1.1 persistent sessions use it.
    pub max_session_expiry_s: u32,
    /// 0: accept the client's keep alive. Otherwise the most the broker allows; 5.0 clients that
    /// ask for more (or for 0) are told Server Keep Alive.
    pub server_keep_alive_s: u16,
    /// Longest a new connection may take to send CONNECT, in milliseconds.
    pub connect_timeout_ms: u64,
    /// A connection with no traffic either way for this long goes dormant: it gives back its
    /// tasks and buffers and waits in an epoll set until it has input or output (0: never).
    pub dormant_after_ms: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_packet_bytes: 1024 * 1024,
            receive_maximum: 256,
            max_inflight: 64,
            max_queued_messages: 1000,
            max_pending_bytes: 8 * 1024 * 1024,
            topic_alias_maximum: 64,
            max_session_expiry_s: 7 * 24 * 3600,
            server_keep_alive_s: 0,
            connect_timeout_ms: 10_000,
            dormant_after_ms: 2_000,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: "isthmus".to_string(),
            shards: 0,
            pin_cores: true,
            io_memory_bytes: 128 * 1024,
            spin_before_park_us: 0,
            allocator_purge_delay_ms: 10_000,
            allocator_huge_pages: false,
        }
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4222)),
            max_payload: 1024 * 1024,
            max_control_line: 4096,
            max_pending: 64 * 1024 * 1024,
            ping_interval_ms: 120_000,
            ping_max: 2,
            write_deadline_ms: 10_000,
        }
    }
}

impl Config {
    /// Parses a TOML document; keys not given keep their defaults.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        Config::from_toml(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// Checks relations between keys that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.server.shards > crate::limits::SHARDS_MAX {
            return Err(format!("server.shards must be at most {}", crate::limits::SHARDS_MAX));
        }
        if self.nats.max_payload == 0 {
            return Err("nats.max_payload must be positive".into());
        }
        if self.nats.max_control_line < 32 {
            return Err("nats.max_control_line must be at least 32".into());
        }
        if self.nats.ping_interval_ms == 0 {
            return Err("nats.ping_interval_ms must be positive".into());
        }
        if self.nats.write_deadline_ms == 0 {
            return Err("nats.write_deadline_ms must be positive".into());
        }
        if self.nats.max_pending < u64::from(self.nats.max_payload) {
            return Err("nats.max_pending must be at least nats.max_payload".into());
        }
        if self.mqtt.max_packet_bytes < 64
            || self.mqtt.max_packet_bytes > crate::protocol::mqtt::codec::REMAINING_LENGTH_MAX
        {
            return Err("mqtt.max_packet_bytes must be between 64 and 268435455".into());
        }
        if self.mqtt.receive_maximum == 0 || self.mqtt.max_inflight == 0 {
            return Err("mqtt.receive_maximum and mqtt.max_inflight must be positive".into());
        }
        if self.mqtt.connect_timeout_ms == 0 {
            return Err("mqtt.connect_timeout_ms must be positive".into());
        }
        if self.mqtt.listen == self.nats.listen && self.nats.listen.port() != 0 {
            return Err("mqtt.listen and nats.listen must differ".into());
        }
        Ok(())
    }

    /// The shard count to run: the configured one, or one per available core.
    pub fn shard_count(&self) -> usize {
        if self.server.shards > 0 {
            return self.server.shards;
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        cores.min(crate::limits::SHARDS_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_matches_defaults() {
        assert_eq!(Config::from_toml(DEFAULT_TOML).unwrap(), Config::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let config = Config::from_toml("[nats]\nmax_payload = 1000\n").unwrap();
        assert_eq!(config.nats.max_payload, 1000);
        assert_eq!(config.nats.max_control_line, 4096);
        assert_eq!(config.server, ServerConfig::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Config::from_toml("[nats]\nmax_payloads = 1\n").is_err());
        assert!(Config::from_toml("[server]\nshards = 65\n").is_err());
        assert!(Config::from_toml("[nats]\nlisten = \"nope\"\n").is_err());
    }
}
