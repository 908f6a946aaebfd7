//! The NATS side of a connection: applies decoded client ops to the shard, answering as
//! nats-server does (PROTOCOLS.md §2.3: which errors close and which do not).

use super::{NatsFlags, Routed, Shard};
use crate::auth::{
    AuthError, Authenticator, Credentials, Grant, Protocol as AuthProtocol, SubscribeCheck,
};
use crate::message::MqttProperties;
use crate::protocol::mqtt::interop;
use crate::protocol::nats::codec::{self, ClientOp};
use crate::protocol::nats::connect::{ConnectOptions, Info};
use crate::protocol::subject;
use crate::stats::ShardStats;
use bytes::{Buf, BufMut, BytesMut};
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
    Wait(Routed),
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
        auth_required: shard.identity.auth.as_ref().is_some_and(|a| a.required()),
    };
    let json = serde_json::to_vec(&info).expect("INFO serialises");
    codec::encode_info(out, &json);
}

/// Starts the authentication timeout of a new connection when tokens are checked: CONNECT
/// must come first, within [`AUTH_TIMEOUT`].
pub fn expect_connect(shard: &Shard, slot: u32) {
    if shard.identity.auth.is_some() {
        let deadline = std::time::Instant::now() + AUTH_TIMEOUT;
        shard.with_conn(slot, |c| c.keepalive_deadline = Some(deadline));
    }
}

/// The next op in a NATS reader's buffer for [`handle`], after delivering in place
/// ([`publish_in_place`]) the PUBs ahead of it that allow it; `Ok(None)` when more bytes are
/// needed. Ops and errors are [`codec::decode`]'s.
pub fn next_op(
    shard: &Shard,
    slot: u32,
    buf: &mut BytesMut,
) -> Result<Option<ClientOp>, codec::DecodeError> {
    loop {
        match codec::peek_pub(buf, &shard.limits) {
            Some(at) if publish_in_place(shard, slot, buf, &at) => buf.advance(at.frame),
            Some(at) => return Ok(Some(codec::take_pub(buf, &at))),
            None => return codec::decode_declined(buf, &shard.limits),
        }
    }
}

/// Delivers the PUB `at` at the front of `buf` straight from it, with no `Message` and no
/// reference count taken on the buffer, when the general path would deliver it only to NATS
/// subscriptions on this shard ([`Shard::deliver_in_place`]) and the connection needs nothing
/// else of it (no +OK, no subject check, no MQTT request reply, no permission error).
/// Returns false, having changed nothing but the connection's activity mark, otherwise: the
/// caller then decodes the PUB and hands it to [`handle`].
///
/// Attempts back off while they decline ([`super::InPlaceBackoff`]).
#[inline]
pub fn publish_in_place(shard: &Shard, slot: u32, buf: &[u8], at: &codec::PubAt) -> bool {
    let message = at.parts(buf);
    let attempt = shard.with_conn(slot, |c| {
        c.active = true;
        if !c.in_place.attempt() {
            return None;
        }
        let allowed = match c.grant.as_deref() {
            Some(grant) => grant.permissions.may_publish(message.subject),
            None => shard.identity.auth.is_none(),
        };
        Some((allowed && !c.flags.verbose && !c.flags.pedantic, c.in_place.settled()))
    });
    let Some((plain, settled)) = attempt else { return false };
    let done = plain
        && !message.subject.starts_with(interop::RESPONSE_PREFIX)
        && shard.deliver_in_place(slot, &message);
    if !(done && settled) {
        shard.with_conn(slot, |c| c.in_place.record(done));
    }
    done
}

/// Applies one client op.
pub fn handle(shard: &Shard, slot: u32, op: ClientOp) -> Next {
    let (flags, authenticated) = shard.with_conn(slot, |c| {
        c.active = true;
        (c.flags, c.grant.is_some())
    });
    if !authenticated && shard.identity.auth.is_some() && !matches!(op, ClientOp::Connect(_)) {
        // nats-server 2.9 with auth: any op before CONNECT (PING included) closes.
        ShardStats::add(&shard.stats.auth_refused, 1);
        shard.close_with_err(slot, AUTHORIZATION_VIOLATION);
        return Next::Close;
    }
    match op {
        ClientOp::Pub(mut message) => {
            // Only a connection with a grant pays a second borrow for the check.
            if authenticated
                && !shard.with_conn(slot, |c| may_publish(c.grant.as_deref(), &message.subject))
            {
                ShardStats::add(&shard.stats.auth_publish_denied, 1);
                let text = format!(
                    "Permissions Violation for Publish to \"{}\"",
                    printable(&message.subject)
                );
                shard.send(slot, |out| codec::encode_err(out, &text));
                return Next::Continue;
            }
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
            return match shard.publish(slot, &mut message, false) {
                Routed::Done => Next::Continue,
                wait => Next::Wait(wait),
            };
        }
        ClientOp::Sub { subject, queue, sid } => {
            if !subject::is_valid_filter(&subject) {
                shard.send(slot, |out| codec::encode_err(out, "Invalid Subject"));
                return Next::Continue;
            }
            let check = shard.with_conn(slot, |c| {
                c.grant.as_ref().map(|g| g.permissions.may_subscribe(&subject))
            });
            let deny_filter = match check {
                None | Some(SubscribeCheck::Allowed) => false,
                Some(SubscribeCheck::AllowedWithDenyFilter) => true,
                Some(SubscribeCheck::Denied) => {
                    ShardStats::add(&shard.stats.auth_subscribe_denied, 1);
                    let mut text = format!(
                        "Permissions Violation for Subscription to \"{}\"",
                        printable(&subject)
                    );
                    if !queue.is_empty() {
                        text.push_str(&format!(" using queue \"{}\"", printable(&queue)));
                    }
                    shard.send(slot, |out| codec::encode_err(out, &text));
                    return Next::Continue;
                }
            };
            let id = shard.subscribe(slot, sid, subject, queue);
            if deny_filter {
                shard.set_deny_filter(id);
            }
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
                if let Some(auth) = &shard.identity.auth {
                    if !authenticated {
                        let identity = shard.tls_identity(slot);
                        match authenticate(auth, &options, identity.as_deref()) {
                            Ok(grant) => shard.admit(slot, Box::new(grant)),
                            Err(error) => {
                                ShardStats::add(&shard.stats.auth_refused, 1);
                                let addr = shard.with_conn(slot, |c| c.addr);
                                tracing::info!(%addr, reason = error.reason(), "NATS CONNECT refused");
                                shard.close_with_err(slot, AUTHORIZATION_VIOLATION);
                                return Next::Close;
                            }
                        }
                    }
                }
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

/// How long a NATS client has to send CONNECT when auth is on (nats-server 2.9: 2 s, then
/// -ERR 'Authentication Timeout').
const AUTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// nats-server's `-ERR` text for a refused or missing CONNECT.
pub const AUTHORIZATION_VIOLATION: &str = "Authorization Violation";

/// Checks a NATS CONNECT's credentials: the token in `auth_token`, else in `pass`. `%u` is the
/// verified client certificate's identity over mTLS, else `user`.
fn authenticate(
    auth: &Authenticator,
    options: &ConnectOptions,
    tls_identity: Option<&str>,
) -> Result<Grant, AuthError> {
    let token = options.auth_token.as_deref().or(options.pass.as_deref());
    let credentials = Credentials {
        protocol: AuthProtocol::Nats,
        token: token.map(str::as_bytes),
        client_id: None,
        username: tls_identity.or(options.user.as_deref()).map(str::as_bytes),
    };
    auth.authenticate(&credentials, super::unix_now())
}

fn may_publish(grant: Option<&Grant>, subject: &[u8]) -> bool {
    grant.is_none_or(|g| g.permissions.may_publish(subject))
}

/// A subject for an error text: what a client sent, without control characters.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().filter(|c| !c.is_control()).take(256).collect()
}

/// Queues PONG.
pub fn pong(shard: &Shard, slot: u32) {
    shard.send(slot, |out| out.put_slice(b"PONG\r\n"));
}
