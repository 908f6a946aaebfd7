//! The core NATS client protocol: codec (bytes <-> ops) and connection options.

pub mod codec;
pub mod connect;
