//! The NATS side of a connection: applies decoded client ops to the shard, answering as
//! nats-server does (PROTOCOLS.md §2.3: which errors close and which do not).

use super::{NatsFlags, Routed, Shard};
use crate::message::{Message, MqttProperties};
use crate::protocol::mqtt::interop;
use crate::protocol::nats::codec::{self, ClientOp};
use crate::protocol::nats::connect::{ConnectOptions, Info};
use crate::protocol::subject;
use bytes::{BufMut, BytesMut};
use std::sync::Arc;

/// What the connection loop must do after an op.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Go on with the next op.
    Continue,
    /// Answer PONG at the end of the read burst, once every shard applied the interest
    /// changes the connection made.
    Pong,
    /// Wait for other shards (interest in flight, or a sync round trip), then publish again.
    Wait(Routed, Message),
    /// The connection is closing.
    Close,
}

/// Queues the INFO greeting.
pub fn greet(shard: &Shard, slot: u32, cid: u64) {
    let addr = shard.with_conn(slot, |c| c.addr);
    shard.send(slot, |out| encode_info(shard, cid, addr, out));
}

/// Appends the INFO line for connection `cid` from `addr`. With `[nats.tls]` it carries
/// `tls_required` (and `tls_verify` with mTLS): it is then written in plaintext before the
/// handshake, not queued.
pub fn encode_info(shard: &Shard, cid: u64, addr: std::net::SocketAddr, out: &mut BytesMut) {
    let tls = shard.identity.nats_tls.as_ref();
    let info = Info {
        server_id: &shard.identity.server_id,
        server_name: &shard.identity.name,
        version: env!("CARGO_PKG_VERSION"),
        proto: 1,
        go: "isthmus",
        host: shard.identity.nats_addr.ip().to_string(),
        port: shard.identity.nats_addr.port(),
        headers: true,
        tls_required: tls.is_some(),
        tls_verify: tls.is_some_and(|tls| tls.verify_clients),
        max_payload: shard.config.nats.max_payload,
        client_id: cid,
        client_ip: addr.ip().to_string(),
    };
    let json = serde_json::to_vec(&info).expect("INFO serialises");
    codec::encode_info(out, &json);
}

/// Applies one client op.
pub fn handle(shard: &Shard, slot: u32, op: ClientOp) -> Next {
    let flags = shard.with_conn(slot, |c| {
        c.active = true;
        c.flags
    });
    match op {
        ClientOp::Pub(mut message) => {
            if !message.headers.is_empty() && !flags.headers {
                // nats-server 2.9.10 closes without an -ERR ("message headers not supported").
                shard.close(slot);
                return Next::Close;
            }
            if flags.pedantic && !subject::is_valid_literal(&message.subject) {
                // nats-server reports it and still routes the message (matched literally).
                shard.send(slot, |out| codec::encode_err(out, "Invalid Publish Subject"));
            } else if flags.verbose {
                // +OK goes out before any delivery the publish causes, as in nats-server.
                shard.send(slot, |out| out.put_slice(b"+OK\r\n"));
            }
            if let Some((correlation, target)) = interop::parse_reply_subject(&message.subject) {
                // An answer to an MQTT 5 request: route it to the Response Topic with the
                // request's Correlation Data restored (protocol/mqtt/interop.rs).
                message.subject = target;
                message.meta.properties = Some(Arc::new(MqttProperties {
                    correlation_data: Some(correlation),
                    ..Default::default()
                }));
            }
            return match shard.publish(slot, &message, false) {
                Routed::Done => Next::Continue,
                wait => Next::Wait(wait, message),
            };
        }
        ClientOp::Sub { subject, queue, sid } => {
            if !subject::is_valid_filter(&subject) {
                shard.send(slot, |out| codec::encode_err(out, "Invalid Subject"));
                return Next::Continue;
            }
            shard.subscribe(slot, sid, subject, queue);
        }
        ClientOp::Unsub { sid, max } => {
            let id = shard.with_conn(slot, |c| c.sids.as_ref().and_then(|s| s.get(&sid).copied()));
            match (id, max) {
                (Some(id), Some(max)) if max > 0 => shard.set_max(id, max),
                (Some(id), _) => shard.unsubscribe(id),
                (None, _) => {}
            }
        }
        ClientOp::Ping => return Next::Pong,
        ClientOp::Pong => {
            shard.with_conn(slot, |c| c.pings_out = 0);
            return Next::Continue;
        }
        ClientOp::Connect(json) => match ConnectOptions::parse(&json) {
            Ok(options) => {
                let flags = NatsFlags {
                    verbose: options.verbose,
                    pedantic: options.pedantic,
                    echo: options.echo,
                    headers: options.headers,
                    no_responders: options.no_responders,
                };
                shard.with_conn(slot, |c| c.flags = flags);
                if flags.verbose {
                    shard.send(slot, |out| out.put_slice(b"+OK\r\n"));
                }
                return Next::Continue;
            }
            Err(error) => {
                shard.close_with_err(slot, error.err_text());
                return Next::Close;
            }
        },
    }
    if flags.verbose {
        shard.send(slot, |out| out.put_slice(b"+OK\r\n"));
    }
    Next::Continue
}

/// Queues PONG.
pub fn pong(shard: &Shard, slot: u32) {
    shard.send(slot, |out| out.put_slice(b"PONG\r\n"));
}
