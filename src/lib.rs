//! Isthmus: a thread-per-core message broker on io_uring that speaks the core NATS client
//! protocol, MQTT 3.1.1 and MQTT 5.0 on one subject space.
//!
//! Reading order, following the data:
//! - [`limits`], [`config`]: every bound and every setting.
//! - [`auth`]: JWT verification at connect time and the permission matcher it compiles.
//! - [`message`]: the one type that crosses layers and shards.
//! - [`protocol`]: pure codecs (`protocol::nats::codec`) and subject rules; no I/O.
//! - [`router`]: the per-shard subject trie, match cache and the replicated interest map.
//! - [`shard`]: what one core owns, its connections (`shard::conn`, the only socket code) and
//!   the cross-shard mesh (`shard::mesh`).
//! - [`serve`]: starting executors, readiness, shutdown.
//! - [`stats`]: lock-free per-shard counters.
//! - [`tls`]: rustls configurations of the TLS listeners and client certificate identities.
//! - [`doctor`]: the host settings `isthmus doctor` checks against tuning/README.md.

/// The git commit this binary was built from (`build.rs`), `unknown` outside a checkout.
pub const COMMIT: &str = env!("ISTHMUS_COMMIT");

/// What `isthmus --version` prints after the name: `0.1.0 (4dfc874)` (`/varz` has the two
/// parts as `version` and `git_commit`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ISTHMUS_COMMIT"), ")");

pub mod auth;
pub mod config;
pub mod doctor;
pub mod limits;
pub mod message;
pub mod monitor;
pub mod protocol;
pub mod router;
pub mod serve;
pub mod shard;
pub mod stats;
pub mod tls;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
