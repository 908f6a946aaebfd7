//! MQTT 3.1.1 and 5.0: the control packets as types ([`packet`]) and the codec that turns bytes
//! into packets and back ([`codec`]).
//!
//! Owns the wire format only. Session state (packet ids in flight, topic aliases, keepalive,
//! which side may send which packet) and topic filter rules belong to the session, not here:
//! the codec decodes packets from either direction so that it can check itself by round trips.

pub mod codec;
pub mod interop;
pub mod packet;
