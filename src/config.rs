//! The TOML configuration tree with every default, and the command-line overrides.
//!
//! `default_config.toml` is the one source of truth for defaults: it is embedded in the binary,
//! printed by `isthmus config --default`, and a test checks that it parses to `Config::default()`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Client authentication: JWT keys and what an unauthenticated client may do.
    pub auth: AuthConfig,
    /// The HTTP monitoring endpoint.
    pub monitor: MonitorConfig,
    /// The directory of the file this config was read from; relative paths in the config (key
    /// files) resolve against it. `None` for the defaults or a config parsed from a string
    /// (relative paths then resolve against the current directory).
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    /// The file this config was read from (SIGHUP reads it again for the token keys).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[monitor]`: the HTTP endpoint with the shards' counters (`/varz`, `/metrics`, `/healthz`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Listen address; `None` (the default): no endpoint. Port 0 picks a free port.
    pub listen: Option<SocketAddr>,
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
    /// Move a publishing connection without subscriptions (NATS, or MQTT with a session that
    /// ends with it) to the shard all its messages go to (docs/architecture.md,
    /// "Co-location").
    pub colocate_publishers: bool,
    /// Fastest a publisher may read, in bytes per second over its streak, and still move; 0
    /// (the default): no cap. A cap keeps fast pairs split, as a pipeline over two cores; on
    /// two cores shared with the load generator every full-rate 1->1 pair was faster together
    /// (tuning/results/2026-12-02-yield.md), and at 20k msg/s a split pair had twice the
    /// latency and CPU per message (tuning/results/2026-12-01-colocate.md).
    pub colocate_max_bytes_per_s: u64,
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
    /// `[nats.tls]`: when present, the NATS listener requires TLS (INFO in plaintext with
    /// `tls_required`, then the handshake, then CONNECT), as nats-server does.
    pub tls: Option<NatsTlsConfig>,
}

/// `[nats.tls]`: the certificate of the NATS listener, which then requires TLS.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatsTlsConfig {
    /// Certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// Private key of the leaf certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates, PEM, that client certificates must chain to (mTLS; INFO `tls_verify`).
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: refuse clients without a certificate (default true). False lets
    /// them in unauthenticated, and still verifies a certificate that is sent.
    pub client_cert_required: Option<bool>,
}

/// `[mqtt.tls]`: an MQTT-over-TLS listener, beside the plaintext `mqtt.listen`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// Listen address of the TLS listener (MQTT's registered port is 8883).
    #[serde(default = "MqttTlsConfig::default_listen")]
    pub listen: SocketAddr,
    /// Certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// Private key of the leaf certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates, PEM, that client certificates must chain to (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: refuse clients without a certificate (default true). False lets
    /// them in unauthenticated, and still verifies a certificate that is sent.
    pub client_cert_required: Option<bool>,
}

/// The certificate files of one TLS listener, whichever protocol it serves, with relative
/// paths resolved.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Private key, PEM.
    pub key_file: PathBuf,
    /// Client CA certificates, PEM; `Some` turns on client certificate verification.
    pub client_ca_file: Option<PathBuf>,
    /// Clients must present a certificate (only with `client_ca_file`).
    pub client_cert_required: bool,
}

impl NatsTlsConfig {
    /// The files, relative paths taken from `base_dir` ([`Config::base_dir`]), and the
    /// effective client-certificate rule.
    pub fn files(&self, base_dir: &Path) -> TlsFiles {
        let (cert, key, ca) = (&self.cert_file, &self.key_file, &self.client_ca_file);
        tls_files(base_dir, cert, key, ca, self.client_cert_required)
    }
}

impl MqttTlsConfig {
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8883))
    }

    /// The files, relative paths taken from `base_dir` ([`Config::base_dir`]), and the
    /// effective client-certificate rule.
    pub fn files(&self, base_dir: &Path) -> TlsFiles {
        let (cert, key, ca) = (&self.cert_file, &self.key_file, &self.client_ca_file);
        tls_files(base_dir, cert, key, ca, self.client_cert_required)
    }
}

fn tls_files(
    base_dir: &Path,
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: &Option<PathBuf>,
    required: Option<bool>,
) -> TlsFiles {
    // `join` keeps an absolute path as it is.
    let client_ca_file = client_ca_file.as_ref().map(|path| base_dir.join(path));
    let client_cert_required = client_ca_file.is_some() && required.unwrap_or(true);
    TlsFiles {
        cert_file: base_dir.join(cert_file),
        key_file: base_dir.join(key_file),
        client_ca_file,
        client_cert_required,
    }
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
    /// TLS connections never go dormant (docs/tls.md).
    pub dormant_after_ms: u64,
    /// `[mqtt.tls]`: an MQTT-over-TLS listener beside the plaintext one.
    pub tls: Option<MqttTlsConfig>,
}

/// `[auth]`: client authentication.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Allow listening on a non-loopback address without `[auth.jwt]`: anyone who can reach
    /// the port may then publish and subscribe to everything.
    pub allow_anonymous: bool,
    /// `[auth.jwt]`: JWT verification; `None` (the default) admits every client.
    pub jwt: Option<JwtConfig>,
}

/// `[auth.jwt]`: how tokens are verified (docs/auth.md).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// A client without a token is refused. When false it is admitted with no permissions.
    pub required: bool,
    /// When set, the token's `aud` must contain it.
    pub audience: Option<String>,
    /// Issuer that tokens must name in `iss`, for keys without their own `issuer`.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_s: u64,
    /// Longest token accepted, in bytes; longer ones are refused before any parsing.
    pub max_token_bytes: usize,
    /// What happens to an MQTT QoS 0 (or 3.1.1) publish the token does not allow.
    pub on_publish_denied: PublishDenied,
    /// The keys tokens may be signed with, chosen by the token's `kid`.
    pub keys: Vec<JwtKeyConfig>,
}

/// `on_publish_denied`: the fate of a denied publish that has no negative acknowledgement.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PublishDenied {
    /// Drop the message and count it; the connection stays.
    #[default]
    Drop,
    /// Close the connection.
    Disconnect,
}

/// `[[auth.jwt.keys]]`: one verification key (or, with `jwks_file`, a set of them).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// The `kid` tokens name in their header; optional when exactly one key is configured.
    /// For a `jwks_file` each JWK's own `kid` is used instead.
    pub kid: Option<String>,
    /// Header `alg` values this key accepts, e.g. `["EdDSA"]`; all of one family.
    pub algorithms: Vec<String>,
    /// Issuer that tokens signed with this key must name (overrides `[auth.jwt] issuer`).
    pub issuer: Option<String>,
    /// File holding the raw HMAC secret (one trailing newline is ignored).
    pub secret_file: Option<PathBuf>,
    /// PEM file with an EdDSA, ECDSA or RSA public key.
    pub public_key_file: Option<PathBuf>,
    /// JSON Web Key Set file.
    pub jwks_file: Option<PathBuf>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            required: true,
            audience: None,
            issuer: None,
            leeway_s: 30,
            max_token_bytes: 8192,
            on_publish_denied: PublishDenied::Drop,
            keys: Vec::new(),
        }
    }
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
            tls: None,
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
            colocate_publishers: true,
            colocate_max_bytes_per_s: 0,
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
            tls: None,
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

    /// Reads and parses a TOML file; [`Config::base_dir`] becomes the file's directory.
    pub fn from_file(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let mut config =
            Config::from_toml(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        config.base_dir =
            Some(if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir.into() });
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// The directory relative paths in the config resolve against.
    pub fn base_dir(&self) -> &Path {
        self.base_dir.as_deref().unwrap_or(Path::new("."))
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
        if let Some(tls) = &self.mqtt.tls {
            let addr = tls.listen;
            if addr.port() != 0 && (addr == self.mqtt.listen || addr == self.nats.listen) {
                return Err("mqtt.tls.listen must differ from mqtt.listen and nats.listen".into());
            }
        }
        let tls = [
            (
                "mqtt.tls",
                self.mqtt
                    .tls
                    .as_ref()
                    .map(|t| (t.client_ca_file.is_some(), t.client_cert_required)),
            ),
            (
                "nats.tls",
                self.nats
                    .tls
                    .as_ref()
                    .map(|t| (t.client_ca_file.is_some(), t.client_cert_required)),
            ),
        ];
        for (table, files) in tls {
            if let Some((false, Some(true))) = files {
                return Err(format!("{table}.client_cert_required needs {table}.client_ca_file"));
            }
        }
        self.validate_auth()?;
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), String> {
        let Some(jwt) = &self.auth.jwt else {
            let tls = self.mqtt.tls.as_ref().map(|t| t.listen);
            let exposed = [Some(self.nats.listen), Some(self.mqtt.listen), tls]
                .into_iter()
                .flatten()
                .find(|a| !a.ip().is_loopback());
            if let (Some(addr), false) = (exposed, self.auth.allow_anonymous) {
                return Err(format!(
                    "listening on {addr} (not loopback) without [auth.jwt] lets anyone in; \
                     configure [auth.jwt] or set auth.allow_anonymous = true"
                ));
            }
            return Ok(());
        };
        if jwt.keys.is_empty() {
            return Err("auth.jwt needs at least one [[auth.jwt.keys]]".into());
        }
        if jwt.max_token_bytes < 64 {
            return Err("auth.jwt.max_token_bytes must be at least 64".into());
        }
        for (index, key) in jwt.keys.iter().enumerate() {
            let sources = [&key.secret_file, &key.public_key_file, &key.jwks_file];
            if sources.iter().filter(|s| s.is_some()).count() != 1 {
                return Err(format!(
                    "auth.jwt.keys[{index}] needs exactly one of secret_file, public_key_file, \
                     jwks_file"
                ));
            }
            if key.algorithms.is_empty() {
                return Err(format!("auth.jwt.keys[{index}].algorithms must not be empty"));
            }
            if key.kid.is_none() && key.jwks_file.is_none() && jwt.keys.len() > 1 {
                return Err(format!(
                    "auth.jwt.keys[{index}] needs a kid: more than one key is configured"
                ));
            }
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
    fn tls_tables_parse_and_resolve_relative_paths() {
        let text = "[mqtt.tls]\nlisten = \"127.0.0.2:8883\"\ncert_file = \"server.pem\"\n\
                    key_file = \"/etc/isthmus/server.key\"\nclient_ca_file = \"ca.pem\"\n\
                    [nats.tls]\ncert_file = \"n.pem\"\nkey_file = \"n.key\"\n";
        let config = Config::from_toml(text).unwrap();
        let mqtt = config.mqtt.tls.as_ref().unwrap();
        assert_eq!(mqtt.listen, "127.0.0.2:8883".parse().unwrap());
        let files = mqtt.files(Path::new("/conf"));
        assert_eq!(files.cert_file, Path::new("/conf/server.pem"));
        assert_eq!(files.key_file, Path::new("/etc/isthmus/server.key"));
        assert_eq!(files.client_ca_file.as_deref(), Some(Path::new("/conf/ca.pem")));
        assert!(files.client_cert_required, "required by default with a client CA");
        let nats = config.nats.tls.as_ref().unwrap().files(Path::new("/conf"));
        assert_eq!(nats.cert_file, Path::new("/conf/n.pem"));
        assert!(nats.client_ca_file.is_none() && !nats.client_cert_required);
        assert_eq!(config.mqtt.listen, MqttConfig::default().listen, "plaintext listener stays");
    }

    #[test]
    fn tls_mistakes_are_errors() {
        let files = "cert_file = \"c\"\nkey_file = \"k\"\n";
        assert!(Config::from_toml("[mqtt.tls]\ncert_file = \"c\"\n").is_err(), "no key_file");
        assert!(
            Config::from_toml(&format!("[nats.tls]\nlisten = \"127.0.0.1:1\"\n{files}")).is_err()
        );
        let required = format!("[nats.tls]\n{files}client_cert_required = true\n");
        assert!(Config::from_toml(&required).is_err(), "client_cert_required without a CA");
        let clash = format!("[mqtt.tls]\nlisten = \"127.0.0.1:1883\"\n{files}");
        assert!(Config::from_toml(&clash).is_err(), "same address as mqtt.listen");
        let optional =
            format!("[mqtt.tls]\n{files}client_ca_file = \"ca\"\nclient_cert_required = false\n");
        let optional = Config::from_toml(&optional).unwrap();
        assert!(!optional.mqtt.tls.unwrap().files(Path::new(".")).client_cert_required);
    }

    #[test]
    fn tls_listener_on_every_interface_needs_auth_or_anonymous() {
        let files = "cert_file = \"c\"\nkey_file = \"k\"\n";
        let exposed = format!("[mqtt.tls]\nlisten = \"0.0.0.0:8883\"\n{files}");
        assert!(Config::from_toml(&exposed).is_err());
        assert!(Config::from_toml(&format!("{exposed}[auth]\nallow_anonymous = true\n")).is_ok());
    }

    #[test]
    fn auth_section_parses_and_defaults_to_no_auth() {
        assert_eq!(Config::default().auth.jwt, None);
        let config = Config::from_toml(
            "[auth.jwt]\naudience = \"isthmus\"\n[[auth.jwt.keys]]\nkid = \"k1\"\n\
             algorithms = [\"EdDSA\"]\npublic_key_file = \"keys/a.pub.pem\"\n",
        )
        .unwrap();
        let jwt = config.auth.jwt.unwrap();
        assert!(jwt.required);
        assert_eq!(jwt.leeway_s, 30);
        assert_eq!(jwt.max_token_bytes, 8192);
        assert_eq!(jwt.on_publish_denied, PublishDenied::Drop);
        assert_eq!(jwt.audience.as_deref(), Some("isthmus"));
        assert_eq!(jwt.keys[0].public_key_file.as_deref(), Some(Path::new("keys/a.pub.pem")));
    }

    #[test]
    fn auth_relations_are_checked() {
        let key = "[[auth.jwt.keys]]\nalgorithms = [\"HS256\"]\nsecret_file = \"s\"\n";
        assert!(Config::from_toml(&format!("[auth.jwt]\n{key}")).is_ok());
        assert!(Config::from_toml(&format!("[auth.jwt]\n{key}{key}")).is_err(), "two keys, no kid");
        assert!(Config::from_toml("[auth.jwt]\n").is_err(), "no keys");
        let two_sources = "[auth.jwt]\n[[auth.jwt.keys]]\nalgorithms = [\"HS256\"]\n\
                           secret_file = \"s\"\njwks_file = \"j\"\n";
        assert!(Config::from_toml(two_sources).is_err());
        let exposed = "[nats]\nlisten = \"0.0.0.0:4222\"\n";
        assert!(Config::from_toml(exposed).is_err(), "non-loopback without auth");
        assert!(Config::from_toml(&format!("{exposed}[auth]\nallow_anonymous = true\n")).is_ok());
        assert!(Config::from_toml(&format!("{exposed}[auth.jwt]\n{key}")).is_ok());
        assert!(Config::from_toml("[auth.jwt]\non_publish_denied = \"explode\"\n").is_err());
    }

    #[test]
    fn from_file_remembers_its_directory() {
        let dir = std::env::temp_dir().join(format!("isthmus-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("isthmus.toml");
        std::fs::write(&path, "").unwrap();
        assert_eq!(Config::from_file(&path).unwrap().base_dir(), dir.as_path());
        assert_eq!(Config::default().base_dir(), Path::new("."));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Config::from_toml("[nats]\nmax_payloads = 1\n").is_err());
        assert!(Config::from_toml("[server]\nshards = 65\n").is_err());
        assert!(Config::from_toml("[nats]\nlisten = \"nope\"\n").is_err());
    }
}
