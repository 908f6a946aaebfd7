//! Protocol codecs and per-protocol connection state. Nothing here touches a socket or the
//! router: codecs turn bytes into frames and back, sessions turn frames into actions.

pub mod mqtt;
pub mod nats;
pub mod subject;
