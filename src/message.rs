//! The routed message: the only type that crosses layers and shards.

use bytes::Bytes;

/// A message as the router sees it. Every field is a `Bytes` slice, usually of the
/// publisher's read buffer, so routing and cross-shard hand-off never copy the payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Literal subject in NATS spelling (`a.b.c`).
    pub subject: Bytes,
    /// Reply subject; empty when the publisher asked for none.
    pub reply: Bytes,
    /// Raw NATS header block (`NATS/1.0\r\n...\r\n\r\n`); empty when there are no headers.
    pub headers: Bytes,
    /// Payload bytes.
    pub payload: Bytes,
}

impl Message {
    /// Bytes this message counts for in `in_bytes`/`out_bytes` (headers plus payload).
    pub fn size(&self) -> usize {
        self.headers.len() + self.payload.len()
    }
}
