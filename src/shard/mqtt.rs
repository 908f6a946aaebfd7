//! The MQTT side of a shard: the CONNECT handshake and hand-off to the session's home shard,
//! the per-connection packet loop, and the session operations (deliveries, QoS 1/2 flows,
//! wills, retained messages, expiry) that the fan-out calls.
//!
//! Ownership: a connection is read on the shard that accepted it only until its CONNECT is
//! decoded; then it moves (socket and already-read bytes) to `home_shard(client_id)`, which owns
//! the session, its subscriptions, inflight window and queue. All of a session's state is
//! therefore touched by one thread, and a takeover is a local operation. A publisher whose
//! session ends with it may later move on, session and all, to the shard its messages go to
//! (`Shard::mqtt_may_move`); its home then forwards CONNECTs for that client id there
//! (`Shard::session_shard`) until the session ends.

use super::conn::{read_some, write_loop, Half, ReadWindow, Streak};
use super::mesh::{Adopt, MeshOp, MovedMqtt};
use super::session::{Inflight, Pending, Session, SessionSub, Stage};
use super::stream::{self, adopt_fd, duplicate_fd, Stream};
use super::{Protocol, Routed, Shard};
use crate::auth::{AuthError, Credentials, Grant, Protocol as AuthProtocol, SubscribeCheck};
use crate::limits::DORMANT_RELEASE_MIN;
use crate::message::{Message, Meta, MqttProperties, MsgParts};
use crate::protocol::mqtt::codec::{self, DecodeError};
use crate::protocol::mqtt::interop;
use crate::protocol::mqtt::packet::{
    ConnAck, ConnAckProperties, Connect, Disconnect, DisconnectProperties, Packet, PubAck, Publish,
    PublishProperties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
    Version, Will,
};
use crate::protocol::subject::{self, TopicError};
use crate::router::local::{MqttSub, Subscription};
use crate::stats::ShardStats;
use bytes::{Buf, Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use smallvec::SmallVec;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a shard checks keep-alive deadlines, delayed wills and session expiry.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Bytes of translated subjects a connection's arena holds before it takes a new chunk.
const ARENA_CHUNK_BYTES: usize = 4096;

/// Bytes read per call while waiting for CONNECT.
const CONNECT_READ_BYTES: usize = 4096;

/// How a connection ended, as far as its will is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// DISCONNECT with reason 0x00: the will is discarded.
    Normal,
    /// Anything else: the will is published (after its delay).
    Unclean,
    /// Quiet long enough to go dormant (not an end: see `doze`).
    Doze,
    /// Every message it published lately went to this shard: move there (not an end: see
    /// `move_out`).
    Move(usize),
}

/// Serves a connection accepted on this shard's plaintext MQTT listener: reads CONNECT,
/// refuses what must be refused, then serves it here or hands it to the client id's home shard.
pub async fn serve_accepted(shard: Rc<Shard>, tcp: TcpStream) {
    let started = Instant::now();
    let Some(addr) = prepare(&shard, &tcp) else { return };
    serve_stream(shard, Stream::Plain(tcp), addr, started).await;
}

/// Serves a connection accepted on this shard's MQTT-over-TLS listener: the TLS handshake, then
/// as [`serve_accepted`]. Handshake and CONNECT together get `mqtt.connect_timeout_ms`.
pub async fn serve_accepted_tls(shard: Rc<Shard>, tcp: TcpStream) {
    let started = Instant::now();
    let Some(addr) = prepare(&shard, &tcp) else { return };
    let Some(tls) = shard.identity.mqtt_tls.as_ref() else { return };
    let limit = Duration::from_millis(shard.config.mqtt.connect_timeout_ms);
    match stream::handshake(tcp, Arc::clone(&tls.config), limit).await {
        Ok(stream) => serve_stream(shard, stream, addr, started).await,
        Err((mut tcp, error)) => {
            ShardStats::add(&shard.stats.tls_handshake_failures, 1);
            tracing::debug!(%addr, %error, "MQTT TLS handshake failed");
            let _ = tcp.close().await;
        }
    }
}

/// Socket options every MQTT connection gets; returns the peer address.
fn prepare(shard: &Shard, tcp: &TcpStream) -> Option<SocketAddr> {
    // TCP_NODELAY on every socket: DECISIONS.md §4 (9 vs 441 TLS handshakes/s without it).
    let _ = tcp.set_nodelay(true);
    let deadline = Duration::from_millis(shard.config.nats.write_deadline_ms);
    tcp.set_write_timeout(Some(deadline)).ok()?;
    tcp.peer_addr().ok()
}

async fn serve_stream(shard: Rc<Shard>, mut stream: Stream, addr: SocketAddr, started: Instant) {
    let Some((mut connect, rest)) = read_connect(&shard, &mut stream, started).await else {
        return;
    };
    let version = connect.version;
    if version == Version::V5_0 && connect.properties.authentication_method.is_some() {
        // No enhanced authentication method is offered (yet): 0x8C, as [MQTT-4.12.0-1] asks.
        refuse(&shard, &mut stream, Some((version, ReasonCode::BAD_AUTHENTICATION_METHOD))).await;
        return;
    }
    if let Some(will) = &connect.will {
        if subject::mqtt_topic_to_subject(&will.topic).is_err() {
            let code = match version {
                Version::V5_0 => ReasonCode::TOPIC_NAME_INVALID,
                Version::V3_1_1 => ReasonCode::V3_IDENTIFIER_REJECTED,
            };
            refuse(&shard, &mut stream, Some((version, code))).await;
            return;
        }
    }
    let mut assigned = false;
    if connect.client_id.is_empty() {
        if version == Version::V3_1_1 && !connect.clean_start {
            // [MQTT-3.1.3-8]: a zero-byte client id needs clean session 1 in 3.1.1.
            refuse(&shard, &mut stream, Some((version, ReasonCode::V3_IDENTIFIER_REJECTED))).await;
            return;
        }
        connect.client_id = Bytes::from(format!("isthmus-{:016x}", fastrand::u64(..)));
        assigned = true;
    }
    let grant = match authenticate(&shard, &connect, stream.tls_identity().as_deref()) {
        Ok(grant) => grant,
        Err(code) => {
            ShardStats::add(&shard.stats.auth_refused, 1);
            refuse(&shard, &mut stream, Some((version, code))).await;
            return;
        }
    };
    let home = shard.session_shard(&connect.client_id);
    if home == shard.id {
        // A task of its own: this handshake future is larger than the connection's and would
        // otherwise stay allocated for the connection's life (about 4.7 KiB vs 2.2 KiB).
        glommio::spawn_local(run(shard, stream, addr, connect, assigned, rest, grant)).detach();
        return;
    }
    let adopt = Accepted { stream, addr, connect, assigned, rest, grant };
    hand_off(&shard, adopt, home);
}

/// A connection whose CONNECT was read and accepted, not yet bound to its session.
struct Accepted {
    stream: Stream,
    addr: SocketAddr,
    connect: Box<Connect>,
    assigned: bool,
    rest: BytesMut,
    grant: Option<Box<Grant>>,
}

/// Hands a connection to the shard that holds its session (`Shard::session_shard`).
fn hand_off(shard: &Shard, accepted: Accepted, to: usize) {
    let Accepted { stream, addr, connect, assigned, rest, grant } = accepted;
    match duplicate_fd(stream.tcp()) {
        Ok(fd) => {
            ShardStats::add(&shard.stats.mqtt_handoffs, 1);
            // A TLS session moves with the socket, with any plaintext it decrypted beyond
            // `rest` (what was read out of it after CONNECT).
            let (tcp, tls) = stream.into_parts();
            let adopt = Adopt { fd, tls, addr, connect, assigned, rest: rest.freeze(), grant };
            shard.mesh.push(to, MeshOp::Adopt(Box::new(adopt)));
            shard.mesh.stage_all();
            // Dropping our stream closes our descriptor; the other shard's duplicate keeps the
            // socket open.
            drop(tcp);
        }
        Err(error) => {
            tracing::warn!(%error, "cannot hand an MQTT connection to its session's shard")
        }
    }
}

/// Serves a connection another shard handed over, or passes it on: to the shard its session
/// moved to, or back home when the session it came for has ended here.
pub async fn serve_adopted(shard: Rc<Shard>, adopt: Adopt) {
    let at = shard.session_shard(&adopt.connect.client_id);
    if at != shard.id {
        shard.mesh.push(at, MeshOp::Adopt(Box::new(adopt)));
        shard.mesh.stage_all();
        return;
    }
    let tcp = adopt_fd(adopt.fd);
    let deadline = Duration::from_millis(shard.config.nats.write_deadline_ms);
    if tcp.set_write_timeout(Some(deadline)).is_err() {
        return;
    }
    let stream = Stream::from_parts(tcp, adopt.tls);
    let rest = BytesMut::from(&adopt.rest[..]);
    run(shard, stream, adopt.addr, adopt.connect, adopt.assigned, rest, adopt.grant).await;
}

/// Checks a CONNECT's token (the password) when `[auth.jwt]` is on. `%u` is the verified
/// client certificate's identity over mTLS, else the CONNECT username. `Ok(None)`: the broker
/// is open. The will topic is a publish, so the token must allow it.
fn authenticate(
    shard: &Shard,
    connect: &Connect,
    tls_identity: Option<&str>,
) -> Result<Option<Box<Grant>>, ReasonCode> {
    let Some(auth) = &shard.identity.auth else { return Ok(None) };
    let credentials = Credentials {
        protocol: AuthProtocol::Mqtt,
        token: connect.password.as_deref(),
        client_id: Some(&connect.client_id),
        username: tls_identity.map(str::as_bytes).or(connect.username.as_deref()),
    };
    let code = |error: AuthError| match connect.version {
        Version::V5_0 => ReasonCode(error.mqtt_v5_code()),
        Version::V3_1_1 => ReasonCode(error.mqtt_v3_code()),
    };
    let grant = match auth.authenticate(&credentials, super::unix_now()) {
        Ok(grant) => grant,
        Err(error) => {
            tracing::info!(reason = error.reason(), "MQTT CONNECT refused");
            return Err(code(error));
        }
    };
    if let Some(will) = &connect.will {
        let allowed = subject::mqtt_topic_to_subject(&will.topic).is_ok_and(|subject| {
            publish_allowed(&grant, &subject, will.qos as u8, will.retain, will.payload.len())
        });
        if !allowed {
            tracing::info!("MQTT CONNECT refused: the token does not allow the will topic");
            return Err(code(AuthError::NoPermissions));
        }
    }
    Ok(Some(Box::new(grant)))
}

/// Whether a grant allows this publish: subject, QoS cap, retain and payload size.
fn publish_allowed(grant: &Grant, subject: &[u8], qos: u8, retain: bool, payload: usize) -> bool {
    grant.permissions.may_publish(subject) && within_limits(grant, qos, retain, payload)
}

/// The grant's QoS cap, retain permission and payload limit.
fn within_limits(grant: &Grant, qos: u8, retain: bool, payload: usize) -> bool {
    grant.max_qos.is_none_or(|max| qos <= max)
        && (!retain || grant.retain)
        && grant.max_payload.is_none_or(|max| payload <= max as usize)
}

/// Makes the shard's end of the dormancy socket pair a stream of this executor.
#[allow(unsafe_code)]
fn adopt_unix(pair: std::os::unix::net::UnixStream) -> glommio::net::UnixStream {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: `into_raw_fd` gives up ownership of an open, non-blocking socket; the glommio
    // stream takes it over and is its only owner.
    unsafe { glommio::net::UnixStream::from_raw_fd(pair.into_raw_fd()) }
}

/// Reads until a whole CONNECT is decoded, at most `mqtt.connect_timeout_ms` after `started`.
/// Answers and closes on anything else.
async fn read_connect(
    shard: &Shard,
    stream: &mut Stream,
    started: Instant,
) -> Option<(Box<Connect>, BytesMut)> {
    let limit = Duration::from_millis(shard.config.mqtt.connect_timeout_ms);
    let max = shard.config.mqtt.max_packet_bytes;
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; CONNECT_READ_BYTES];
    loop {
        match codec::decode(&mut buf, Version::V3_1_1, max) {
            Ok(Some(Packet::Connect(connect))) => return Some((connect, buf)),
            Ok(Some(_)) => {
                // [MQTT-3.1.0-1]: the first packet must be CONNECT; close without answering.
                ShardStats::add(&shard.stats.protocol_errors, 1);
                return None;
            }
            Ok(None) => {}
            Err(error) => {
                let level = connect_level(&buf);
                let reply = match error {
                    DecodeError::UnsupportedProtocolVersion | DecodeError::InvalidProtocolName => {
                        // 3.1 (MQIsdp) and unknown levels: the 3.1.1 return code 0x01, which
                        // every version's client understands [MQTT-3.1.2-2].
                        Some((Version::V3_1_1, ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION))
                    }
                    _ if level == Some(5) => Some((Version::V5_0, error.reason_code())),
                    _ => None,
                };
                tracing::debug!(%error, "MQTT CONNECT refused");
                refuse(shard, stream, reply).await;
                return None;
            }
        }
        let left = limit.checked_sub(started.elapsed())?;
        let read = futures_lite::future::or(async { Some(stream.read(&mut chunk).await) }, async {
            glommio::timer::sleep(left).await;
            None
        })
        .await;
        match read {
            // Copied, not read into `buf` directly: `buf` stays the size of what arrived, and
            // the session's client id points into it for as long as the session lives.
            Some(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// The protocol level of a CONNECT at the front of `buf`, if enough of it is there.
fn connect_level(buf: &[u8]) -> Option<u8> {
    let mut i = 1;
    while *buf.get(i)? & 0x80 != 0 {
        i += 1;
    }
    let name_len = usize::from(u16::from_be_bytes([*buf.get(i + 1)?, *buf.get(i + 2)?]));
    buf.get(i + 3 + name_len).copied()
}

fn connack(code: ReasonCode) -> ConnAck {
    ConnAck { session_present: false, reason_code: code, properties: ConnAckProperties::default() }
}

/// Refuses a connection before it has a session: counts it, sends the CONNACK with `reply`'s
/// reason code in `reply`'s version (none if `None`), and closes.
async fn refuse(shard: &Shard, stream: &mut Stream, reply: Option<(Version, ReasonCode)>) {
    ShardStats::add(&shard.stats.protocol_errors, 1);
    if let Some((version, code)) = reply {
        let mut out = BytesMut::new();
        codec::encode(&Packet::ConnAck(Box::new(connack(code))), version, &mut out);
        let _ = stream.write_all(&out).await;
    }
    let _ = stream.close().await;
}

/// What the packet loop of one connection keeps for itself.
#[derive(Debug)]
pub(super) struct ConnState {
    version: Version,
    /// Inbound topic aliases (index = alias - 1), grown as the client sets them.
    aliases: Vec<Option<Bytes>>,
    keep_alive: Option<Duration>,
    /// Session Expiry Interval from CONNECT was 0 (DISCONNECT may then not raise it).
    expiry_was_zero: bool,
    /// Subjects of this connection's publishes.
    subjects: SubjectCache,
    /// Where its publishes went lately (co-location).
    streak: Streak,
    /// When to try the next PUBLISH in place ([`publish_in_place`]); a step is a
    /// [`next_packet`] call.
    in_place: super::InPlaceBackoff,
}

impl ConnState {
    /// The packet loop's state at the start of a connection's tasks (after CONNECT, a wake-up
    /// or a move): nothing cached, no publish streak.
    fn new(
        shard: &Shard,
        version: Version,
        aliases: Vec<Option<Bytes>>,
        keep_alive: Option<Duration>,
        expiry_was_zero: bool,
    ) -> ConnState {
        let subjects = SubjectCache::default();
        let streak = Streak::new(shard, None);
        ConnState {
            version,
            aliases,
            keep_alive,
            expiry_was_zero,
            subjects,
            streak,
            in_place: super::InPlaceBackoff::default(),
        }
    }
}

/// Translates a connection's publish topics, remembering the last one: devices publish to the
/// same few topics over and over, so most publishes cost one comparison instead of a
/// translation.
#[derive(Debug, Default)]
struct SubjectCache {
    /// Room for translated subjects, so that publishes allocate nothing.
    arena: BytesMut,
    /// The last translated topic (a copy: a read-buffer slice would keep that buffer alive).
    topic: Vec<u8>,
    /// Its subject, cut from the arena.
    subject: Option<Bytes>,
    /// Whether the connection's token allows publishing to that subject, once asked (the
    /// grant does not change during a connection).
    allowed: Option<bool>,
    /// `topic` is the last topic, and its subject is itself (nothing to translate).
    itself: bool,
}

impl SubjectCache {
    /// The subject of `topic` if it is the last one translated (or found to need no
    /// translation), borrowed.
    fn cached(&self, topic: &[u8]) -> Option<&[u8]> {
        if self.topic != topic {
            return None;
        }
        if self.itself {
            return Some(&self.topic);
        }
        self.subject.as_deref()
    }

    /// `check(subject)`, remembered while `subject` is the cached one (a device publishing to
    /// one topic pays one token check per connection, not one per message).
    fn allowed(&mut self, subject: &Bytes, check: impl FnOnce(&[u8]) -> bool) -> bool {
        let cached = self.subject.as_ref().is_some_and(|s| s.as_ptr() == subject.as_ptr());
        match (cached, self.allowed) {
            (true, Some(verdict)) => verdict,
            (true, None) => *self.allowed.insert(check(subject)),
            (false, _) => check(subject),
        }
    }

    fn subject(&mut self, topic: &Bytes) -> Result<Bytes, TopicError> {
        if self.topic == topic[..] {
            if let Some(subject) = &self.subject {
                return Ok(subject.clone());
            }
            if self.itself {
                return Ok(topic.clone());
            }
        }
        // Let go of the cached subject first, so the arena can reclaim its chunk.
        self.subject = None;
        self.allowed = None;
        self.itself = false;
        self.topic.clear();
        let (subject, translated) = arena_subject(&mut self.arena, topic)?;
        self.topic.extend_from_slice(topic);
        if translated {
            self.subject = Some(subject.clone());
        } else {
            self.itself = true;
        }
        Ok(subject)
    }
}

async fn run(
    shard: Rc<Shard>,
    stream: Stream,
    addr: SocketAddr,
    connect: Box<Connect>,
    assigned: bool,
    buf: BytesMut,
    grant: Option<Box<Grant>>,
) {
    // The session may have moved away since this task was spawned (checked again here, where
    // nothing waits before the session is attached).
    let at = shard.session_shard(&connect.client_id);
    if at != shard.id {
        hand_off(&shard, Accepted { stream, addr, connect, assigned, rest: buf, grant }, at);
        return;
    }
    let (slot, _cid) = shard.open_conn(addr, Protocol::Mqtt);
    shard.set_stream(slot, &stream);
    let stream = Rc::new(RefCell::new(stream));
    let version = connect.version;
    let (session, present, capped_expiry) = shard.mqtt_attach(slot, &connect, grant);
    let mut keep_alive = connect.keep_alive_seconds;
    let server_max = shard.config.mqtt.server_keep_alive_s;
    let mut server_keep_alive = None;
    if version == Version::V5_0 && server_max > 0 && (keep_alive == 0 || keep_alive > server_max) {
        keep_alive = server_max;
        server_keep_alive = Some(server_max);
    }
    let mut ack = connack(ReasonCode::SUCCESS);
    ack.session_present = present;
    if version == Version::V5_0 {
        let config = &shard.config.mqtt;
        let p = &mut ack.properties;
        p.receive_maximum = Some(config.receive_maximum);
        p.maximum_packet_size = Some(config.max_packet_bytes);
        p.topic_alias_maximum = Some(config.topic_alias_maximum);
        p.assigned_client_identifier = assigned.then(|| connect.client_id.clone());
        p.session_expiry_interval = capped_expiry;
        p.server_keep_alive = server_keep_alive;
    }
    shard.send(slot, |out| codec::encode(&Packet::ConnAck(Box::new(ack)), version, out));
    shard.mqtt_resume(session);
    let state = ConnState::new(
        &shard,
        version,
        Vec::new(),
        (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
        connect.properties.session_expiry_interval.unwrap_or(0) == 0,
    );
    drop(connect);
    if let Some(keep_alive) = state.keep_alive {
        shard.with_conn(slot, |c| c.keepalive_deadline = Some(Instant::now() + keep_alive));
    }
    serve_conn(shard, slot, stream, state, buf).await;
}

/// What a dormant connection keeps: its socket and the packet loop's state, without the
/// subject cache (rebuilt on the next publish).
#[derive(Debug)]
pub struct Sleeper {
    fd: std::os::fd::OwnedFd,
    version: Version,
    expiry_was_zero: bool,
    keep_alive: Option<Duration>,
    aliases: Vec<Option<Bytes>>,
}

/// Runs a connection's writer and packet loop until it ends or goes dormant.
async fn serve_conn(
    shard: Rc<Shard>,
    slot: u32,
    mut stream: Rc<RefCell<Stream>>,
    mut state: ConnState,
    mut buf: BytesMut,
) {
    loop {
        glommio::spawn_local(write_loop(Rc::clone(&shard), slot, Half(Rc::clone(&stream))))
            .detach();
        let exit = read_loop(&shard, slot, &mut state, Half(Rc::clone(&stream)), &mut buf).await;
        let unclean = match exit {
            Exit::Move(target) => match move_out(&shard, slot, stream, state, &buf, target).await {
                Moving::Gone => return,
                Moving::Stayed(kept, kept_state) => {
                    (stream, state) = (kept, kept_state);
                    state.streak.restart();
                    shard.with_conn(slot, |c| c.tasks_alive += 1);
                    continue;
                }
                Moving::Closing => true,
            },
            Exit::Doze => match doze(&shard, slot, stream, state).await {
                Dozed::Dormant => return,
                Dozed::Awake(awake, kept) => {
                    // Output arrived while the writer stopped: carry on with a new writer.
                    (stream, state) = (awake, kept);
                    shard.with_conn(slot, |c| c.tasks_alive += 1);
                    continue;
                }
                // Closing meanwhile: the writer already ended as for any close.
                Dozed::Closing => true,
            },
            exit => exit == Exit::Unclean,
        };
        shard.mqtt_detach(slot, unclean);
        shard.task_done(slot);
        return;
    }
}

/// How an attempt to move to another shard ended. (Returned once per attempt: the size of
/// `Stayed` costs nothing worth a box.)
#[allow(clippy::large_enum_variant)]
enum Moving {
    /// The connection and its session went; this slot is free.
    Gone,
    /// It stays (it changed meanwhile, or the socket could not be handed over): it needs a
    /// writer again.
    Stayed(Rc<RefCell<Stream>>, ConnState),
    /// It is closing.
    Closing,
}

/// Moves MQTT connection `slot` and its session to shard `target`, where its messages go
/// (as `conn::move_out` does for NATS): stops the writer once everything queued is written,
/// syncs with every shard (nothing published here can be overtaken by what it publishes
/// there), checks again that it may move, then sends socket, unread bytes, session and
/// packet-loop state.
async fn move_out(
    shard: &Rc<Shard>,
    slot: u32,
    stream: Rc<RefCell<Stream>>,
    state: ConnState,
    buf: &BytesMut,
    target: usize,
) -> Moving {
    shard.stop_writer(slot, |c| c.moving = true).await;
    if shard.with_conn(slot, |c| {
        c.moving = false;
        c.closing
    }) {
        return Moving::Closing;
    }
    shard.sync_peers(slot).await;
    if !shard.mqtt_may_move(slot, target) {
        return Moving::Stayed(stream, state);
    }
    let (tcp, fd) = match stream::detach(stream) {
        Ok(parts) => parts,
        Err(stream) => return Moving::Stayed(stream, state),
    };
    shard.mqtt_send_away(slot, target, fd, buf.to_vec(), state);
    // Our descriptor closes here; the duplicate keeps the socket open.
    drop(tcp);
    Moving::Gone
}

/// Serves an MQTT connection (slot and session already taken in by `Shard::mqtt_take_in`)
/// that its home shard moved here.
pub async fn serve_moved(shard: Rc<Shard>, slot: u32, moved: MovedMqtt) {
    let MovedMqtt { fd, rest, version, aliases, keep_alive, expiry_was_zero, .. } = moved;
    let tcp = adopt_fd(fd);
    let deadline = Duration::from_millis(shard.config.nats.write_deadline_ms);
    if tcp.set_write_timeout(Some(deadline)).is_err() {
        shard.with_conn(slot, |c| c.tasks_alive = 1);
        shard.mqtt_detach(slot, true);
        shard.task_done(slot);
        return;
    }
    // It never moves again (`Shard::mqtt_may_move`: only from its home shard).
    let state = ConnState::new(&shard, version, aliases, keep_alive, expiry_was_zero);
    let stream = Rc::new(RefCell::new(Stream::Plain(tcp)));
    serve_conn(shard, slot, stream, state, BytesMut::from(&rest[..])).await;
}

/// How an attempt to go dormant ended. (Returned once per attempt, as `Moving`.)
#[allow(clippy::large_enum_variant)]
enum Dozed {
    /// The connection is dormant; its tasks end.
    Dormant,
    /// Output arrived meanwhile (or the socket could not be parked): it stays live.
    Awake(Rc<RefCell<Stream>>, ConnState),
    /// It is closing.
    Closing,
}

/// Lets a quiet connection go dormant: stops its writer, then hands its socket to the shard's
/// epoll set and keeps only a [`Sleeper`]. Never over TLS: the sweeper does not ask TLS
/// connections, whose session state cannot wait in the kernel (docs/tls.md).
async fn doze(shard: &Shard, slot: u32, stream: Rc<RefCell<Stream>>, state: ConnState) -> Dozed {
    shard.stop_writer(slot, |c| c.dozing = true).await;
    let (closing, output) = shard.with_conn(slot, |c| {
        c.dozing = false;
        c.doze_requested = false;
        (c.closing, !c.out.is_empty())
    });
    if closing {
        return Dozed::Closing;
    }
    let Some(dormancy) = shard.dormancy.get() else { return Dozed::Awake(stream, state) };
    if output {
        return Dozed::Awake(stream, state);
    }
    let (stream, fd) = match stream::detach(stream) {
        Ok(parts) => parts,
        Err(stream) => return Dozed::Awake(stream, state),
    };
    // Our descriptor closes here; the duplicate keeps the socket.
    drop(stream);
    let cid = shard.with_conn(slot, |c| c.cid);
    if dormancy
        .watch(std::os::fd::AsRawFd::as_raw_fd(&fd), super::dormant::token(slot, cid))
        .is_err()
    {
        return Dozed::Awake(Rc::new(RefCell::new(Stream::Plain(adopt_fd(fd)))), state);
    }
    let ConnState { version, aliases, keep_alive, expiry_was_zero, .. } = state;
    let sleeper = Sleeper { fd, version, expiry_was_zero, keep_alive, aliases };
    shard.with_conn(slot, |c| {
        c.tasks_alive = 0;
        c.out = BytesMut::new();
        c.dormant = Some(Box::new(sleeper));
    });
    ShardStats::add(&shard.stats.mqtt_dormant, 1);
    shard.dozed_since_release.set(shard.dozed_since_release.get().saturating_add(1));
    Dozed::Dormant
}

/// Wakes the shard's dormant connections as their sockets turn readable (reported by the
/// epoll thread through `pair`) or as output for them arrives (`Shard::to_wake`).
pub async fn dormant_loop(shard: Rc<Shard>, pair: std::os::unix::net::UnixStream) {
    let mut pair = adopt_unix(pair);
    let mut bytes = [0u8; 64];
    let mut pair_open = true;
    loop {
        let local = std::future::poll_fn(|cx| {
            if !shard.to_wake.borrow().is_empty() {
                return std::task::Poll::Ready(true);
            }
            super::set_waker(&mut shard.waker_task.borrow_mut(), cx.waker());
            std::task::Poll::Pending
        });
        if pair_open {
            let poked = async { matches!(pair.read(&mut bytes).await, Ok(n) if n > 0) };
            pair_open = futures_lite::future::or(poked, local).await;
        } else {
            local.await;
        }
        if let Some(dormancy) = shard.dormancy.get() {
            let readable: SmallVec<[u64; 16]> = dormancy.take_woken().collect();
            for token in readable {
                let (slot, cid) = super::dormant::untoken(token);
                let current =
                    shard.conns.borrow().get(slot as usize).is_some_and(|c| {
                        c.cid as u32 == cid && c.dormant.is_some() && !c.wake_queued
                    });
                if current {
                    dormant_input(&shard, dormancy, slot, token);
                }
            }
        }
        let slots = std::mem::take(&mut *shard.to_wake.borrow_mut());
        for slot in slots {
            wake_up(&shard, slot, BytesMut::new());
        }
    }
}

/// Most bytes read from a dormant socket to see whether it only sent PINGREQs.
const DORMANT_READ_BYTES: usize = 128;

/// Input on a dormant connection. Keep-alive PINGREQs, most of what an idle device sends, are
/// answered here and the connection stays dormant (without this every ping woke it: a task
/// pair and buffers for 2 s per keep-alive period). Anything else wakes it, with the bytes
/// already read.
fn dormant_input(shard: &Rc<Shard>, dormancy: &super::dormant::Dormancy, slot: u32, token: u64) {
    use super::dormant::{read_now, write_now, Input};
    let Some((fd, keep_alive)) = shard.conns.borrow().get(slot as usize).and_then(|c| {
        c.dormant.as_ref().map(|s| (std::os::fd::AsRawFd::as_raw_fd(&s.fd), s.keep_alive))
    }) else {
        return;
    };
    let mut bytes = [0u8; DORMANT_READ_BYTES];
    let n = match read_now(fd, &mut bytes) {
        Input::Nothing => {
            if dormancy.rearm(fd, token).is_err() {
                wake_up(shard, slot, BytesMut::new());
            }
            return;
        }
        Input::Closed => return wake_up(shard, slot, BytesMut::new()),
        Input::Bytes(n) => n,
    };
    let read = &bytes[..n];
    if let Some(keep_alive) = keep_alive {
        shard.with_conn(slot, |c| c.keepalive_deadline = Some(Instant::now() + keep_alive));
    }
    let pings = n / 2;
    if n % 2 == 0 && read.chunks(2).all(|p| p == [0xC0, 0x00]) {
        let mut answers = [0u8; DORMANT_READ_BYTES];
        for answer in answers[..n].chunks_mut(2) {
            answer.copy_from_slice(&[0xD0, 0x00]);
        }
        let written = write_now(fd, &answers[..n]);
        ShardStats::add(&shard.stats.mqtt_dormant_pings, pings as u64);
        if written == n && dormancy.rearm(fd, token).is_ok() {
            return;
        }
        // The socket took only part (or re-arming failed): the rest goes the usual way.
        shard.with_conn(slot, |c| c.out.extend_from_slice(&answers[written..n]));
        return wake_up(shard, slot, BytesMut::new());
    }
    wake_up(shard, slot, BytesMut::from(read));
}

/// Gives a dormant connection its socket and tasks back; `buf` holds input already read.
fn wake_up(shard: &Rc<Shard>, slot: u32, buf: BytesMut) {
    let sleeper = {
        let mut conns = shard.conns.borrow_mut();
        let Some(c) = conns.get_mut(slot as usize) else { return };
        c.wake_queued = false;
        let Some(sleeper) = c.dormant.take() else { return };
        c.tasks_alive = 2;
        c.idle_sweeps = 0;
        c.active = true;
        sleeper
    };
    let Sleeper { fd, version, expiry_was_zero, keep_alive, aliases } = *sleeper;
    let state = ConnState::new(shard, version, aliases, keep_alive, expiry_was_zero);
    if let Some(dormancy) = shard.dormancy.get() {
        dormancy.unwatch(std::os::fd::AsRawFd::as_raw_fd(&fd));
    }
    ShardStats::sub(&shard.stats.mqtt_dormant, 1);
    ShardStats::add(&shard.stats.mqtt_woken, 1);
    let stream = adopt_fd(fd);
    let deadline = Duration::from_millis(shard.config.nats.write_deadline_ms);
    let _ = stream.set_write_timeout(Some(deadline));
    let stream = Rc::new(RefCell::new(Stream::Plain(stream)));
    glommio::spawn_local(serve_conn(Rc::clone(shard), slot, stream, state, buf)).detach();
}

async fn read_loop(
    shard: &Shard,
    slot: u32,
    state: &mut ConnState,
    mut reader: Half,
    buf: &mut BytesMut,
) -> Exit {
    let max = shard.config.mqtt.max_packet_bytes;
    let mut window = ReadWindow::default();
    let (mut read, mut full) = (0, false);
    loop {
        // Where this burst's publishes went (co-location); a burst that waited for other
        // shards, or held other packets, tells nothing.
        shard.take_route_mask();
        let mut waited = false;
        loop {
            match next_packet(shard, slot, state, buf, max) {
                // The hot path, without the future `handle` would move the packet into.
                Ok(Some(Packet::Publish(publish))) => {
                    let Some(session) = shard.with_conn(slot, |c| c.session) else {
                        return Exit::Unclean; // taken over
                    };
                    let exit = match on_publish(shard, slot, session, state, publish) {
                        Ok(exit) => exit,
                        Err(wait) => {
                            waited = true;
                            finish_publish(shard, slot, state.version, wait).await
                        }
                    };
                    if let Some(exit) = exit {
                        return exit;
                    }
                }
                Ok(Some(packet)) => {
                    waited = true;
                    if let Some(exit) = handle(shard, slot, state, packet).await {
                        return exit;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%error, "MQTT packet refused");
                    fail(shard, slot, state.version, error.reason_code(), error.text());
                    return Exit::Unclean;
                }
            }
        }
        let mask = shard.take_route_mask();
        shard.mesh.stage_all();
        shard.mesh.wait_for_room().await;
        // NATS subscribers here that fell behind slow this publisher down, as they do NATS
        // publishers (MQTT subscribers bound their own output and never stall anyone).
        shard.wait_for_consumers(super::conn::STALL_BUDGET).await;
        window.give_back_idle(buf);
        if shard.with_conn(slot, |c| c.closing) {
            return Exit::Unclean;
        }
        if !waited {
            if let Some(target) = state.streak.after_burst(mask, shard.id, read, full) {
                if shard.mqtt_may_move(slot, target) {
                    return Exit::Move(target);
                }
                state.streak.restart();
            }
        }
        let offered = window.get();
        match read_some(shard, slot, &mut reader, buf, offered).await {
            Some((n, room)) => {
                (read, full) = (n, offered == crate::limits::READ_CHUNK_BYTES && n == offered);
                window.after_read(n, room);
            }
            None => {
                let (closing, doze) = shard.with_conn(slot, |c| (c.closing, c.doze_requested));
                if closing || !doze {
                    return Exit::Unclean;
                }
                if buf.is_empty() {
                    return Exit::Doze;
                }
                // Half a packet is buffered: not quiet after all.
                shard.with_conn(slot, |c| c.doze_requested = false);
                continue;
            }
        }
        let deadline = state.keep_alive.map(|keep_alive| Instant::now() + keep_alive);
        shard.with_conn(slot, |c| {
            c.active = true;
            if deadline.is_some() {
                c.keepalive_deadline = deadline;
            }
        });
    }
}

/// For the in-process path driver (`shard::path`): attaches connection `slot` to a clean
/// 3.1.1 session of `client_id`, as `run` does after CONNECT; returns the session and the
/// packet loop's state.
pub(super) fn path_attach(shard: &Shard, slot: u32, client_id: &str) -> (u32, ConnState) {
    let connect = Connect {
        version: Version::V3_1_1,
        clean_start: true,
        keep_alive_seconds: 0,
        client_id: Bytes::copy_from_slice(client_id.as_bytes()),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    };
    let (session, _, _) = shard.mqtt_attach(slot, &connect, None);
    shard.mqtt_resume(session);
    (session, ConnState::new(shard, Version::V3_1_1, Vec::new(), None, true))
}

/// For `shard::path`: subscribes session `session` to `filter` at QoS 0.
pub(super) fn path_subscribe(shard: &Shard, session: u32, filter: &str) {
    let filter = Bytes::copy_from_slice(filter.as_bytes());
    let options = crate::protocol::mqtt::packet::SubscriptionOptions::with_qos(QoS::AtMostOnce);
    let subscribed = shard.mqtt_subscribe(session, Version::V3_1_1, &filter, options, 0);
    assert!(subscribed.is_ok(), "path subscription refused");
}

/// For `shard::path`: the reader's hot loop over the packets in `buf` (PUBLISH only).
pub(super) fn path_publish(shard: &Shard, slot: u32, state: &mut ConnState, buf: &mut BytesMut) {
    let max = shard.config.mqtt.max_packet_bytes;
    while let Some(packet) = next_packet(shard, slot, state, buf, max).expect("valid input") {
        let Packet::Publish(publish) = packet else { panic!("the path only publishes") };
        let session = shard.with_conn(slot, |c| c.session).expect("attached");
        match on_publish(shard, slot, session, state, publish) {
            Ok(None) => {}
            _ => panic!("the path's publishes neither wait nor end the connection"),
        }
    }
}

/// The next packet in an MQTT reader's buffer, after delivering in place
/// ([`publish_in_place`]) the PUBLISHes ahead of it that allow it; `Ok(None)` when more bytes
/// are needed. Errors are [`codec::decode`]'s.
fn next_packet(
    shard: &Shard,
    slot: u32,
    state: &mut ConnState,
    buf: &mut BytesMut,
    max: u32,
) -> Result<Option<Packet>, codec::DecodeError> {
    loop {
        if !state.in_place.attempt() {
            // Backing off: not even the peek (decode reads the packet again).
            return codec::decode(buf, state.version, max);
        }
        match codec::peek_publish(buf, state.version, max) {
            Some(at) if publish_in_place(shard, slot, state, buf, &at) => buf.advance(at.frame),
            _ => return codec::decode(buf, state.version, max),
        }
    }
}

/// Delivers the QoS 0 PUBLISH `at` (no RETAIN, no properties) at the front of `buf` straight
/// from it, with no `Message` and no reference count on the buffer, when its topic is the
/// connection's last one (its subject known), the session has no token to check, and every
/// subscriber of the subject is on this shard: a plain NATS subscription, or an MQTT one,
/// which gets a QoS 0 publish at QoS 0 ([`Shard::deliver_in_place`], with the `Nmqtt-Pub`
/// headers of a QoS 0 publish). Returns
/// false, having changed nothing, otherwise: the caller then decodes the PUBLISH. Declines back
/// off ([`super::InPlaceBackoff`]).
fn publish_in_place(
    shard: &Shard,
    slot: u32,
    state: &mut ConnState,
    buf: &[u8],
    at: &codec::PublishAt,
) -> bool {
    let done = match (
        shard.with_conn(slot, |c| c.session),
        state.subjects.cached(&buf[at.topic.0..at.topic.1]),
    ) {
        (Some(session), Some(subject)) if !shard.with_session(session, |s| s.grant.is_some()) => {
            let (headers, _) = interop::nats_headers(0, &[]);
            let message = MsgParts {
                subject,
                reply: &[],
                headers: &headers,
                payload: &buf[at.payload.0..at.payload.1],
                meta: crate::message::MetaParts {
                    from_mqtt: true,
                    qos: 0,
                    retain: false,
                    topic: &buf[at.topic.0..at.topic.1],
                    properties: None,
                    headers: None,
                },
            };
            shard.deliver_in_place(slot, &message)
        }
        _ => false,
    };
    state.in_place.record(done);
    done
}

/// Ends the connection for a protocol violation: 5.0 sends DISCONNECT with `code` and `why`
/// as its Reason String first (allowed whatever Request Problem Information said, §3.14.2.2.3).
fn fail(shard: &Shard, slot: u32, version: Version, code: ReasonCode, why: &'static str) {
    ShardStats::add(&shard.stats.protocol_errors, 1);
    disconnect(shard, slot, version, code, why);
}

/// Sends a 5.0 DISCONNECT (nothing in 3.1.1, which has no server DISCONNECT) and closes.
fn disconnect(shard: &Shard, slot: u32, version: Version, code: ReasonCode, why: &'static str) {
    if version == Version::V5_0 {
        let properties = DisconnectProperties {
            reason_string: Some(Bytes::from_static(why.as_bytes())),
            ..Default::default()
        };
        let disconnect = Disconnect { reason_code: code, properties };
        shard.send(slot, |out| {
            codec::encode(&Packet::Disconnect(Box::new(disconnect)), version, out)
        });
    }
    shard.close(slot);
}

fn send(shard: &Shard, slot: u32, version: Version, packet: Packet) {
    shard.send(slot, |out| codec::encode(&packet, version, out));
}

fn ack(packet_id: u16, reason_code: ReasonCode) -> PubAck {
    PubAck { packet_id, reason_code, properties: Default::default() }
}

/// Applies one packet other than PUBLISH (which `read_loop` routes without an async frame).
/// `Some(exit)` ends the connection.
async fn handle(shard: &Shard, slot: u32, state: &mut ConnState, packet: Packet) -> Option<Exit> {
    let version = state.version;
    let Some(session) = shard.with_conn(slot, |c| c.session) else {
        // Taken over: the session belongs to another connection now.
        return Some(Exit::Unclean);
    };
    match packet {
        Packet::Publish(_) => unreachable!("read_loop handles PUBLISH before calling handle"),
        Packet::PubAck(a) => shard.mqtt_acked(session, a.packet_id, 1),
        Packet::PubRec(a) => {
            let known = shard.mqtt_received(session, a.packet_id, a.reason_code);
            if a.reason_code.0 < 0x80 {
                let code = if known || version == Version::V3_1_1 {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                };
                send(shard, slot, version, Packet::PubRel(ack(a.packet_id, code)));
            }
        }
        Packet::PubComp(a) => shard.mqtt_acked(session, a.packet_id, 2),
        Packet::PubRel(a) => {
            let known = shard.with_session(session, |s| {
                let index = s.incoming_qos2.iter().position(|id| *id == a.packet_id);
                index.map(|i| s.incoming_qos2.swap_remove(i)).is_some()
            });
            let code = if known || version == Version::V3_1_1 {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
            };
            send(shard, slot, version, Packet::PubComp(ack(a.packet_id, code)));
        }
        Packet::Subscribe(subscribe) => {
            return on_subscribe(shard, slot, session, version, subscribe).await
        }
        Packet::Unsubscribe(unsubscribe) => {
            on_unsubscribe(shard, slot, session, version, unsubscribe)
        }
        Packet::PingReq => send(shard, slot, version, Packet::PingResp),
        Packet::Disconnect(disconnect) => {
            if let Some(expiry) = disconnect.properties.session_expiry_interval {
                if state.expiry_was_zero && expiry > 0 {
                    let why = "session expiry raised from 0 at DISCONNECT [MQTT-3.14.2-2]";
                    fail(shard, slot, version, ReasonCode::PROTOCOL_ERROR, why);
                    return Some(Exit::Unclean);
                }
                let capped = expiry.min(shard.config.mqtt.max_session_expiry_s);
                shard.with_session(session, |s| s.expiry_s = capped);
            }
            shard.close(slot);
            return Some(if disconnect.reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE {
                Exit::Unclean
            } else {
                Exit::Normal
            });
        }
        // No authentication method was agreed at CONNECT, so AUTH is a protocol error
        // [MQTT-3.15.0-?]; a second CONNECT is one too [MQTT-3.1.0-2]; the rest only servers send.
        Packet::Auth(_)
        | Packet::Connect(_)
        | Packet::ConnAck(_)
        | Packet::SubAck(_)
        | Packet::UnsubAck(_)
        | Packet::PingResp => {
            let why = match packet {
                Packet::Auth(_) => "AUTH without an authentication method at CONNECT",
                Packet::Connect(_) => "second CONNECT [MQTT-3.1.0-2]",
                _ => "packet only a server may send",
            };
            fail(shard, slot, version, ReasonCode::PROTOCOL_ERROR, why);
            return Some(Exit::Unclean);
        }
    }
    None
}

/// What is left of a publish that must wait for other shards before it is routed.
struct PublishWait {
    routed: Routed,
    session: u32,
    qos: QoS,
    packet_id: u16,
}

/// Waits as a publish's [`PublishWait`] says, routes it and acknowledges it.
async fn finish_publish(
    shard: &Shard,
    slot: u32,
    version: Version,
    wait: Box<PublishWait>,
) -> Option<Exit> {
    shard.publish_after_wait(slot, wait.routed).await;
    if shard.with_conn(slot, |c| c.session) != Some(wait.session) {
        return Some(Exit::Unclean); // taken over while waiting
    }
    acknowledge(shard, slot, version, wait.session, wait.qos, wait.packet_id);
    None
}

fn acknowledge(shard: &Shard, slot: u32, version: Version, session: u32, qos: QoS, id: u16) {
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => {
            send(shard, slot, version, Packet::PubAck(ack(id, ReasonCode::SUCCESS)))
        }
        QoS::ExactlyOnce => {
            shard.with_session(session, |s| s.incoming_qos2.push(id));
            send(shard, slot, version, Packet::PubRec(ack(id, ReasonCode::SUCCESS)));
        }
    }
}

/// Routes a publish; `Err` when it must wait for other shards first ([`finish_publish`]).
/// Not async, so the packet is not moved into a future on the way (those moves of a
/// 232-byte `Packet` showed in perf as `memmove` from `handle` and `on_publish`).
fn on_publish(
    shard: &Shard,
    slot: u32,
    session: u32,
    state: &mut ConnState,
    publish: Publish,
) -> Result<Option<Exit>, Box<PublishWait>> {
    let version = state.version;
    let Publish { qos, retain, topic, packet_id, payload, topic_alias, properties, .. } = publish;
    if properties.as_ref().is_some_and(|p| !p.subscription_identifiers.is_empty()) {
        let why = "subscription identifier in a client PUBLISH [MQTT-3.3.4-6]";
        fail(shard, slot, version, ReasonCode::PROTOCOL_ERROR, why);
        return Ok(Some(Exit::Unclean));
    }
    let topic = match topic_alias {
        Some(alias) => {
            let index = usize::from(alias) - 1;
            if alias > shard.config.mqtt.topic_alias_maximum {
                let why = "topic alias above the Topic Alias Maximum [MQTT-3.3.2-9]";
                fail(shard, slot, version, ReasonCode::TOPIC_ALIAS_INVALID, why);
                return Ok(Some(Exit::Unclean));
            }
            if state.aliases.len() <= index {
                // Grown on use: most connections never set an alias.
                state.aliases.resize(index + 1, None);
            }
            let entry = &mut state.aliases[index];
            if topic.is_empty() {
                match entry {
                    Some(known) => known.clone(),
                    None => {
                        let why = "topic alias used before it was set";
                        fail(shard, slot, version, ReasonCode::PROTOCOL_ERROR, why);
                        return Ok(Some(Exit::Unclean));
                    }
                }
            } else {
                // Kept for the connection's life: copied so no read buffer stays pinned.
                *entry = Some(Bytes::copy_from_slice(&topic));
                topic
            }
        }
        None => topic,
    };
    let qos_bits = qos as u8;
    if qos == QoS::ExactlyOnce {
        let (duplicate, held) = shard.with_session(session, |s| {
            (s.incoming_qos2.contains(&packet_id), s.incoming_qos2.len())
        });
        if duplicate {
            // Routed when first received (the spec's "method B"); answer the resend only.
            send(shard, slot, version, Packet::PubRec(ack(packet_id, ReasonCode::SUCCESS)));
            return Ok(None);
        }
        if held >= usize::from(shard.config.mqtt.receive_maximum) {
            let why = "more unreleased QoS 2 publishes than the Receive Maximum";
            fail(shard, slot, version, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED, why);
            return Ok(Some(Exit::Unclean));
        }
    }
    let subject = match state.subjects.subject(&topic) {
        Ok(subject) => subject,
        Err(error) => {
            ShardStats::add(&shard.stats.mqtt_dropped_bad_topic, 1);
            tracing::debug!(%error, "MQTT publish topic refused");
            // 5.0 can say why (0x90); 3.1.1 acknowledgements carry no code.
            let code = match version {
                Version::V5_0 => ReasonCode::TOPIC_NAME_INVALID,
                Version::V3_1_1 => ReasonCode::SUCCESS,
            };
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    send(shard, slot, version, Packet::PubAck(ack(packet_id, code)))
                }
                QoS::ExactlyOnce => {
                    send(shard, slot, version, Packet::PubRec(ack(packet_id, code)))
                }
            }
            return Ok(None);
        }
    };
    let denied = shard.with_session(session, |s| {
        s.grant.as_ref().is_some_and(|g| {
            let subject_ok = state.subjects.allowed(&subject, |t| g.permissions.may_publish(t));
            !(subject_ok && within_limits(g, qos_bits, retain, payload.len()))
        })
    });
    if denied {
        return Ok(publish_denied(shard, slot, version, qos, packet_id));
    }
    let mut message = mqtt_message(
        topic,
        subject,
        qos_bits,
        retain,
        payload,
        properties.map(|p| {
            let p = *p;
            MessageProperties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.message_expiry_interval,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
            }
        }),
    );
    if retain {
        shard.mqtt_retain(&message);
    }
    match shard.publish(slot, &mut message, false) {
        Routed::Done => {}
        // Boxed: rare (at most one sync per connection per SYNC_COVERS), and it keeps the
        // common return small.
        routed => return Err(Box::new(PublishWait { routed, session, qos, packet_id })),
    }
    acknowledge(shard, slot, version, session, qos, packet_id);
    Ok(None)
}

/// A publish the token does not allow: counted and not routed. 5.0 acknowledges QoS 1/2 with
/// 0x87 (Not authorized); 3.1.1 has no negative acknowledgement, so the publish is
/// acknowledged and dropped (as mosquitto and VerneMQ do); with `on_publish_denied =
/// "disconnect"` the connection is closed instead (5.0: DISCONNECT 0x87).
fn publish_denied(
    shard: &Shard,
    slot: u32,
    version: Version,
    qos: QoS,
    packet_id: u16,
) -> Option<Exit> {
    ShardStats::add(&shard.stats.auth_publish_denied, 1);
    if shard.identity.auth.as_ref().is_some_and(|a| a.on_publish_denied_disconnect()) {
        disconnect(
            shard,
            slot,
            version,
            ReasonCode::NOT_AUTHORIZED,
            "publish not allowed by the token",
        );
        return Some(Exit::Unclean);
    }
    let code = match version {
        Version::V5_0 => ReasonCode::NOT_AUTHORIZED,
        Version::V3_1_1 => ReasonCode::SUCCESS,
    };
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => send(shard, slot, version, Packet::PubAck(ack(packet_id, code))),
        QoS::ExactlyOnce => send(shard, slot, version, Packet::PubRec(ack(packet_id, code))),
    }
    None
}

/// The subject of `topic`: `topic` itself when nothing needs translating, else translated
/// into the arena. The arena reclaims its chunk once every subject cut from it is dropped
/// (`BytesMut::reserve` on a unique buffer) and takes a new one only while old subjects are
/// still held (queued messages, other shards), so steady traffic allocates nothing for
/// subjects (tests/alloc_steady_state.rs).
/// The second value says whether it was translated (else it is `topic` itself).
fn arena_subject(arena: &mut BytesMut, topic: &Bytes) -> Result<(Bytes, bool), TopicError> {
    // A translated subject is at most twice as long as its topic (`.` -> `//`).
    let room = 2 * topic.len() + 1;
    if arena.capacity() - arena.len() < room {
        arena.reserve(room.max(ARENA_CHUNK_BYTES));
    }
    if subject::mqtt_topic_to_subject_into(topic, arena)? {
        Ok((arena.split().freeze(), true))
    } else {
        Ok((topic.clone(), false))
    }
}

/// The 5.0 properties a publish or will carries on to subscribers.
struct MessageProperties {
    payload_format_indicator: Option<u8>,
    message_expiry_interval: Option<u32>,
    content_type: Option<Bytes>,
    response_topic: Option<Bytes>,
    correlation_data: Option<Bytes>,
    user_properties: Vec<(Bytes, Bytes)>,
}

/// The routed message for an MQTT publish (or will).
fn mqtt_message(
    topic: Bytes,
    subject: Bytes,
    qos: u8,
    retain: bool,
    payload: Bytes,
    p: Option<MessageProperties>,
) -> Message {
    let Some(p) = p else {
        let (headers, _skipped) = interop::nats_headers(qos, &[]);
        let meta = Meta { from_mqtt: true, qos, retain, topic, properties: None };
        return Message { subject, reply: Bytes::new(), headers, payload, meta };
    };
    let (headers, _skipped) = interop::nats_headers(qos, &p.user_properties);
    let reply = match &p.response_topic {
        Some(response) => match subject::mqtt_topic_to_subject(response) {
            Ok(target) => interop::reply_subject(&target, p.correlation_data.as_deref()),
            Err(_) => Bytes::new(),
        },
        None => Bytes::new(),
    };
    let any = p.payload_format_indicator.is_some()
        || p.message_expiry_interval.is_some()
        || p.content_type.is_some()
        || p.response_topic.is_some()
        || p.correlation_data.is_some()
        || !p.user_properties.is_empty();
    let properties = any.then(|| {
        Arc::new(MqttProperties {
            payload_format_indicator: p.payload_format_indicator,
            expires_at: p
                .message_expiry_interval
                .map(|s| Instant::now() + Duration::from_secs(u64::from(s))),
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
        })
    });
    Message {
        subject,
        reply,
        headers,
        payload,
        meta: Meta { from_mqtt: true, qos, retain, topic, properties },
    }
}

async fn on_subscribe(
    shard: &Shard,
    slot: u32,
    session: u32,
    version: Version,
    subscribe: Subscribe,
) -> Option<Exit> {
    let identifier = subscribe.properties.subscription_identifier.unwrap_or(0);
    let mut codes = Vec::with_capacity(subscribe.filters.len());
    let mut retained = Vec::new();
    let mut epoch = None;
    for (filter, options) in &subscribe.filters {
        match shard.mqtt_subscribe(session, version, filter, *options, identifier) {
            Ok(done) => {
                codes.push(ReasonCode(done.qos as u8));
                epoch = epoch.max(done.epoch);
                retained.extend(done.retained);
            }
            Err(code) if code == ReasonCode::PROTOCOL_ERROR => {
                let why = "No Local on a shared subscription [MQTT-3.8.3-4]";
                fail(shard, slot, version, code, why);
                return Some(Exit::Unclean);
            }
            Err(code) => codes.push(code),
        }
    }
    // Like a NATS PONG after SUB: the SUBACK leaves once every shard routes to the new
    // subscriptions, so a publish the client triggers after SUBACK is never missed.
    shard.mesh.stage_all();
    if let Some(epoch) = epoch {
        shard.mesh.wait_for_epoch(epoch).await;
        if shard.with_conn(slot, |c| c.session) != Some(session) {
            return Some(Exit::Unclean); // taken over while waiting
        }
    }
    let suback = SubAck {
        packet_id: subscribe.packet_id,
        reason_codes: codes,
        properties: Default::default(),
    };
    send(shard, slot, version, Packet::SubAck(suback));
    for p in retained {
        shard.mqtt_enqueue(session, &p.message, p.qos, p.retain, p.identifier);
    }
    None
}

fn on_unsubscribe(shard: &Shard, slot: u32, session: u32, version: Version, u: Unsubscribe) {
    let codes: Vec<ReasonCode> = u
        .filters
        .iter()
        .map(|filter| {
            if shard.mqtt_unsubscribe(session, filter) {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            }
        })
        .collect();
    let reason_codes = if version == Version::V5_0 { codes } else { Vec::new() };
    let unsuback =
        UnsubAck { packet_id: u.packet_id, reason_codes, properties: Default::default() };
    send(shard, slot, version, Packet::UnsubAck(unsuback));
}

/// What a successful subscribe leaves to do.
struct Subscribed {
    epoch: Option<u64>,
    retained: Vec<Pending>,
    /// The QoS granted: the one asked for, capped by the token's max_qos.
    qos: QoS,
}

/// Buffers reused by every outgoing PUBLISH of a shard, so that a delivery that needs a
/// translated topic, a Subscription Identifier or user properties allocates nothing: each is
/// filled, lent to the packet while it is encoded, and taken back.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// The MQTT topic of the NATS subject in `topic_of`, when `topic_form` is `Translated`.
    topic: BytesMut,
    /// The subject the topic was last worked out for: a shard delivers the same few subjects
    /// over and over, and a translation cost about 1400 instructions a delivery
    /// (`benches/publish_path.rs`, NATS -> MQTT, callgrind) against one comparison.
    topic_of: Vec<u8>,
    topic_form: TopicForm,
    identifiers: Vec<u32>,
    user_properties: Vec<(Bytes, Bytes)>,
}

/// What `Scratch::topic_of` translates to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum TopicForm {
    /// Nothing worked out yet.
    #[default]
    Unknown,
    /// The topic in `Scratch::topic`.
    Translated,
    /// The subject is its own topic.
    Itself,
    /// The subject has no MQTT form.
    None,
}

/// Why a delivery was not written.
enum Skip {
    NoTopic,
    TooLarge,
    Expired,
}

impl Shard {
    /// Runs `f` on a session.
    fn with_session<R>(&self, session: u32, f: impl FnOnce(&mut Session) -> R) -> R {
        f(&mut self.sessions.borrow_mut()[session as usize])
    }

    /// Binds connection `slot` to the session of `connect.client_id`: takes it over from an
    /// older connection, resumes it or starts it anew. Returns (session, session present,
    /// the expiry to report in a 5.0 CONNACK when it was capped).
    fn mqtt_attach(
        &self,
        slot: u32,
        connect: &Connect,
        grant: Option<Box<Grant>>,
    ) -> (u32, bool, Option<u32>) {
        let existing = self.session_ids.borrow().get(&connect.client_id).copied();
        let mut present = false;
        if let Some(index) = existing {
            let old = self.with_session(index, |s| s.conn.take());
            if let Some(old_slot) = old {
                ShardStats::add(&self.stats.mqtt_takeovers, 1);
                self.with_conn(old_slot, |c| c.session = None);
                let (old_version, will) = self.with_session(index, |s| (s.version, s.will.take()));
                let why = "another connection took the client id over";
                disconnect(self, old_slot, old_version, ReasonCode::SESSION_TAKEN_OVER, why);
                // The old connection ended without DISCONNECT, so its will goes out, unless it
                // has a delay and this connection continues the session, which cancels it
                // [MQTT-3.1.3-9]. With clean start the old session ends, which publishes it.
                let delayed = |w: &Will| w.properties.will_delay_interval.unwrap_or(0) > 0;
                if let Some(will) = will.filter(|w| connect.clean_start || !delayed(w)) {
                    self.mqtt_publish_will(&will);
                }
            }
            if connect.clean_start {
                // Ending the old session publishes a will still waiting for its delay.
                self.mqtt_end_session(index, true);
            } else {
                self.with_session(index, |s| {
                    s.will = None;
                    s.will_at = None;
                });
                present = true;
            }
        }
        let index = match (present, existing) {
            (true, Some(index)) => index,
            _ => {
                let session = Session::new(connect.client_id.clone(), connect.version);
                let index = self.sessions.borrow_mut().insert(session) as u32;
                self.session_ids.borrow_mut().insert(connect.client_id.clone(), index);
                ShardStats::add(&self.stats.mqtt_sessions, 1);
                index
            }
        };
        let config = &self.config.mqtt;
        let (expiry, capped) = match connect.version {
            Version::V5_0 => {
                let asked = connect.properties.session_expiry_interval.unwrap_or(0);
                let expiry = asked.min(config.max_session_expiry_s);
                (expiry, (expiry != asked).then_some(expiry))
            }
            Version::V3_1_1 if connect.clean_start => (0, None),
            Version::V3_1_1 => (config.max_session_expiry_s, None),
        };
        self.with_session(index, |s| {
            s.conn = Some(slot);
            s.version = connect.version;
            s.expiry_s = expiry;
            s.expires_at = None;
            s.will = connect.will.as_ref().map(|will| Box::new(detached_will(will)));
            let receive_maximum = connect.properties.receive_maximum.unwrap_or(u16::MAX);
            s.window = usize::from(receive_maximum.min(config.max_inflight));
            s.max_packet = connect.properties.maximum_packet_size.unwrap_or(u32::MAX);
            s.alias_max = connect.properties.topic_alias_maximum.unwrap_or(0);
            s.aliases = None;
        });
        if let Some(at) = grant.as_ref().and_then(|g| g.expires_at) {
            self.expect_expiry(at);
        }
        let checked = grant.is_some();
        self.with_session(index, |s| s.grant = grant);
        if present && checked {
            self.recheck_subscriptions(index);
        }
        self.with_conn(slot, |c| c.session = Some(index));
        self.store.borrow_mut().session_saved(&self.sessions.borrow()[index as usize]);
        (index, present, capped)
    }

    /// A resumed session's stored subscriptions, checked against the token of the connection
    /// that resumed it: those it no longer allows are removed (and counted), those that now
    /// overlap a deny rule filter their deliveries, and queued messages the new token would
    /// not deliver are dropped (counted in `auth_deliveries_denied`).
    fn recheck_subscriptions(&self, index: u32) {
        let filters: Vec<Bytes> = self.with_session(index, |s| s.subs.keys().cloned().collect());
        for filter in filters {
            let mqtt_filter = match filter.strip_prefix(b"$share/") {
                Some(rest) => match rest.iter().position(|&b| b == b'/') {
                    Some(slash) => &rest[slash + 1..],
                    None => continue,
                },
                None => &filter[..],
            };
            let check = match subject::mqtt_filter_to_subject(mqtt_filter) {
                Ok(translated) => self.with_session(index, |s| {
                    s.grant.as_ref().map(|g| g.permissions.may_subscribe(&translated.subject))
                }),
                Err(_) => Some(SubscribeCheck::Denied),
            };
            match check {
                None | Some(SubscribeCheck::Allowed) => {}
                Some(SubscribeCheck::AllowedWithDenyFilter) => {
                    let ids = self.with_session(index, |s| {
                        s.subs.get(&filter[..]).map(|sub| sub.ids.clone())
                    });
                    for id in ids.into_iter().flatten() {
                        self.set_deny_filter(id);
                    }
                }
                Some(SubscribeCheck::Denied) => {
                    ShardStats::add(&self.stats.auth_subscriptions_revoked, 1);
                    tracing::info!(filter = %String::from_utf8_lossy(&filter), "stored subscription no longer allowed by the token: removed");
                    self.mqtt_unsubscribe(index, &filter);
                }
            }
        }
        // Messages queued while the session was offline went through the old token's rules:
        // keep those the new token could subscribe to (as a literal subject) and deliver.
        let dropped = self.with_session(index, |s| {
            let Some(grant) = s.grant.as_ref() else { return 0 };
            let before = s.queue.len();
            s.queue.retain(|p| {
                let subject = &p.message.subject[..];
                grant.permissions.may_subscribe(subject) != SubscribeCheck::Denied
                    && grant.permissions.may_deliver(subject)
            });
            before - s.queue.len()
        });
        ShardStats::add(&self.stats.auth_deliveries_denied, dropped as u64);
    }

    /// Resends what a resumed session left unacknowledged (PUBLISH with DUP, or PUBREL), in
    /// order, then fills the window from the queue.
    fn mqtt_resume(&self, session: u32) {
        let mut sessions = self.sessions.borrow_mut();
        let s = &mut sessions[session as usize];
        let Some(slot) = s.conn else { return };
        let mut conns = self.conns.borrow_mut();
        let conn = &mut conns[slot as usize];
        let mut kept = std::collections::VecDeque::with_capacity(s.inflight.len());
        while let Some(flight) = s.inflight.pop_front() {
            match flight.stage {
                Stage::Released => {
                    let rel = ack(flight.packet_id, ReasonCode::SUCCESS);
                    codec::encode(&Packet::PubRel(rel), s.version, &mut conn.out);
                    kept.push_back(flight);
                }
                Stage::Published => {
                    let p = &flight.pending;
                    match write_publish(
                        &mut conn.out,
                        s,
                        (&p.message.parts(), p.qos, p.retain, p.identifier),
                        flight.packet_id,
                        true,
                        &mut self.mqtt_scratch.borrow_mut(),
                    ) {
                        Ok(()) => kept.push_back(flight),
                        Err(skip) => self.count_skip(skip),
                    }
                }
            }
        }
        s.inflight = kept;
        self.after_append(conn);
        drop(conns);
        self.pump(s);
    }

    /// Detaches connection `slot` from its session when the connection ends. `unclean`: it
    /// ended without a normal DISCONNECT, so the will is published (now or after its delay).
    fn mqtt_detach(&self, slot: u32, unclean: bool) {
        let Some(index) = self.with_conn(slot, |c| c.session.take()) else { return };
        let now = Instant::now();
        let mut deadline = None;
        let (will_now, end) = self.with_session(index, |s| {
            s.conn = None;
            s.aliases = None;
            let will = if unclean { s.will.take() } else { None };
            s.will = None;
            let mut will_now = None;
            if let Some(will) = will {
                let delay = will.properties.will_delay_interval.unwrap_or(0).min(s.expiry_s);
                if delay == 0 {
                    will_now = Some(will);
                } else {
                    let at = now + Duration::from_secs(u64::from(delay));
                    s.will_at = Some(at);
                    deadline = Some(at);
                    s.will = Some(will);
                }
            }
            if s.expiry_s > 0 {
                let at = now + Duration::from_secs(u64::from(s.expiry_s));
                s.expires_at = Some(at);
                deadline = Some(deadline.map_or(at, |d: Instant| d.min(at)));
            }
            (will_now, s.expiry_s == 0)
        });
        if let Some(will) = will_now {
            self.mqtt_publish_will(&will);
        }
        if let Some(at) = deadline {
            let earliest = self.session_deadline.get().map_or(at, |d| d.min(at));
            self.session_deadline.set(Some(earliest));
        }
        if end {
            self.mqtt_end_session(index, false);
        } else {
            // Offline: what waits now may wait long, so it should not pin read buffers.
            self.with_session(index, |s| {
                for pending in s.queue.iter_mut() {
                    pending.message = pending.message.detached();
                }
                for flight in s.inflight.iter_mut() {
                    flight.pending.message = flight.pending.message.detached();
                }
            });
        }
    }

    /// Ends a session: its delayed will goes out, its subscriptions leave the router, and what
    /// it still held is counted as dropped. `replaced`: a new session of the same client id
    /// starts here at once (clean start); otherwise a session that its home shard moved here
    /// tells the home it is gone, so the next CONNECT goes home again.
    fn mqtt_end_session(&self, index: u32, replaced: bool) {
        let session = self.sessions.borrow_mut().remove(index as usize);
        let home = interop::home_shard(&session.client_id, self.count);
        if !replaced && home != self.id {
            self.mesh.push(home, MeshOp::SessionGone { client_id: session.client_id.clone() });
            self.mesh.stage_all();
        }
        ShardStats::sub(&self.stats.mqtt_sessions, 1);
        self.session_ids.borrow_mut().remove(&session.client_id);
        self.store.borrow_mut().session_removed(&session.client_id);
        if let (Some(will), Some(_)) = (&session.will, session.will_at) {
            self.mqtt_publish_will(will);
        }
        let lost = session.queue.len() + session.inflight.len();
        ShardStats::add(&self.stats.mqtt_dropped_session_end, lost as u64);
        for sub in session.subs.values() {
            for id in &sub.ids {
                self.unsubscribe(*id);
            }
        }
    }

    /// Publishes a will message.
    fn mqtt_publish_will(&self, will: &Will) {
        let Ok(subject) = subject::mqtt_topic_to_subject(&will.topic) else {
            ShardStats::add(&self.stats.mqtt_dropped_bad_topic, 1);
            return;
        };
        let p = &will.properties;
        let message = mqtt_message(
            will.topic.clone(),
            Bytes::copy_from_slice(&subject),
            will.qos as u8,
            will.retain,
            will.payload.clone(),
            Some(MessageProperties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.message_expiry_interval,
                content_type: p.content_type.clone(),
                response_topic: p.response_topic.clone(),
                correlation_data: p.correlation_data.clone(),
                user_properties: p.user_properties.clone(),
            }),
        );
        ShardStats::add(&self.stats.mqtt_wills_published, 1);
        if will.retain {
            self.mqtt_retain(&message);
        }
        self.route(None, message);
        self.mesh.stage_all();
    }

    /// Stores (or, with an empty payload, deletes) a retained message on every shard.
    fn mqtt_retain(&self, message: &Message) {
        let seq = self.identity.retain_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let stored = (!message.payload.is_empty()).then(|| message.detached());
        let subject = stored
            .as_ref()
            .map_or_else(|| Bytes::copy_from_slice(&message.subject), |m| m.subject.clone());
        for peer in (0..self.count).filter(|p| *p != self.id) {
            let op = MeshOp::Retain { subject: subject.clone(), seq, message: stored.clone() };
            self.mesh.push(peer, op);
        }
        self.retained.borrow_mut().apply(subject, seq, stored);
    }

    /// Adds (or replaces) one subscription of a session.
    fn mqtt_subscribe(
        &self,
        index: u32,
        version: Version,
        filter: &Bytes,
        options: crate::protocol::mqtt::packet::SubscriptionOptions,
        identifier: u32,
    ) -> Result<Subscribed, ReasonCode> {
        let invalid = match version {
            Version::V5_0 => ReasonCode::TOPIC_FILTER_INVALID,
            Version::V3_1_1 => ReasonCode::UNSPECIFIED_ERROR,
        };
        let (group, mqtt_filter) = match filter.strip_prefix(b"$share/") {
            Some(rest) => {
                let slash = rest.iter().position(|&b| b == b'/').ok_or(invalid)?;
                let (group, rest) = (&rest[..slash], &rest[slash + 1..]);
                let bad_group = group.is_empty()
                    || group
                        .iter()
                        .any(|&b| matches!(b, b'+' | b'#' | b' ' | b'\t' | b'\r' | b'\n'));
                if bad_group || rest.is_empty() {
                    return Err(invalid);
                }
                if options.no_local {
                    // [MQTT-3.8.3-4]
                    return Err(ReasonCode::PROTOCOL_ERROR);
                }
                (filter.slice_ref(group), filter.slice_ref(rest))
            }
            None => (Bytes::new(), filter.clone()),
        };
        let translated = subject::mqtt_filter_to_subject(&mqtt_filter).map_err(|_| invalid)?;
        let (check, parent_check, max_qos) = self.with_session(index, |s| match &s.grant {
            Some(g) => (
                g.permissions.may_subscribe(&translated.subject),
                translated.parent().map(|p| g.permissions.may_subscribe(p)),
                g.max_qos,
            ),
            None => (SubscribeCheck::Allowed, None, None),
        });
        if check == SubscribeCheck::Denied {
            ShardStats::add(&self.stats.auth_subscribe_denied, 1);
            return Err(match version {
                Version::V5_0 => ReasonCode::NOT_AUTHORIZED,
                Version::V3_1_1 => ReasonCode::UNSPECIFIED_ERROR, // 0x80: Failure
            });
        }
        let mut options = options;
        if let Some(max) = max_qos {
            // The token caps the QoS: the subscription is granted at most that (SUBACK says so).
            options.qos = options.qos.min(QoS::from_bits(max).unwrap_or(QoS::AtMostOnce));
        }
        let nats_filter = Bytes::copy_from_slice(&translated.subject);
        // `a/#` also matches `a`: that second subscription only where the token allows it.
        let parent = translated
            .parent()
            .filter(|_| parent_check != Some(SubscribeCheck::Denied))
            .map(Bytes::copy_from_slice);
        let deny_filter = check == SubscribeCheck::AllowedWithDenyFilter
            || parent_check == Some(SubscribeCheck::AllowedWithDenyFilter);
        let wildcard_first = translated.is_reserved_for_wildcards();
        drop(translated);
        let existed = self.mqtt_unsubscribe(index, filter);
        let sub = MqttSub {
            qos: options.qos as u8,
            no_local: options.no_local,
            retain_as_published: options.retain_as_published,
            identifier,
            wildcard_first,
        };
        let mut ids = SmallVec::new();
        let mut epoch = None;
        for subject in std::iter::once(nats_filter.clone()).chain(parent.clone()) {
            let (id, changed) = self.add_subscription(Subscription {
                conn: index,
                sid: Bytes::new(),
                subject,
                queue: group.clone(),
                max: None,
                delivered: 0,
                mqtt: Some(sub),
                deny_filter,
            });
            ids.push(id);
            epoch = epoch.max(changed);
        }
        let key = Bytes::copy_from_slice(filter);
        self.with_session(index, |s| s.subs.insert(key, SessionSub { ids, options }));
        self.store.borrow_mut().session_saved(&self.sessions.borrow()[index as usize]);
        // Retained messages: not for shared subscriptions (§4.8.2), and per Retain Handling.
        let send_retained = group.is_empty()
            && match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendAtNewSubscribe => !existed,
                RetainHandling::DoNotSend => false,
            };
        let mut retained = Vec::new();
        if send_retained {
            let store = self.retained.borrow();
            for filter in std::iter::once(&nats_filter).chain(parent.as_ref()) {
                for message in store.matching(filter, wildcard_first) {
                    // A deny rule the filter overlaps holds back retained messages too.
                    if deny_filter && !self.mqtt_may_deliver(index, &message.subject) {
                        ShardStats::add(&self.stats.auth_deliveries_denied, 1);
                        continue;
                    }
                    let qos = message.meta.qos.min(sub.qos);
                    retained.push(Pending { message, qos, retain: true, identifier });
                }
            }
        }
        Ok(Subscribed { epoch, retained, qos: options.qos })
    }

    /// Removes one subscription of a session; false if it had none on `filter`.
    fn mqtt_unsubscribe(&self, index: u32, filter: &[u8]) -> bool {
        let Some(sub) = self.with_session(index, |s| s.subs.remove(filter)) else { return false };
        for id in sub.ids {
            self.unsubscribe(id);
        }
        self.store.borrow_mut().session_saved(&self.sessions.borrow()[index as usize]);
        true
    }

    /// The fan-out's entry point: one message for one MQTT subscription of session `index`.
    /// Whether a session's token lets `subject` through its deny rules.
    pub(super) fn mqtt_may_deliver(&self, session: u32, subject: &[u8]) -> bool {
        self.sessions
            .borrow()
            .get(session as usize)
            .and_then(|s| s.grant.as_ref())
            .is_none_or(|g| g.permissions.may_deliver(subject))
    }

    /// One message for one MQTT subscription of session `index`: at the QoS the subscription
    /// gets it, now if that is 0, else through the session's window and queue (which keep a
    /// clone of `message`).
    pub(super) fn deliver_mqtt(
        &self,
        index: u32,
        sub: MqttSub,
        message: &Message,
        origin_session: Option<u32>,
    ) {
        let parts = message.parts();
        let Some(qos) = mqtt_delivery_qos(index, sub, &parts, origin_session) else { return };
        let retain = sub.retain_as_published && message.meta.retain;
        self.mqtt_enqueue(index, message, qos, retain, sub.identifier);
    }

    /// [`Shard::deliver_mqtt`] of a borrowed message, which only a QoS 0 delivery can take:
    /// the caller (`deliver_in_place`) has checked with [`mqtt_delivery_qos`] that every
    /// subscription gets it at QoS 0.
    pub(super) fn deliver_mqtt_qos0(
        &self,
        index: u32,
        sub: MqttSub,
        message: &MsgParts,
        origin_session: Option<u32>,
    ) {
        match mqtt_delivery_qos(index, sub, message, origin_session) {
            Some(0) => {
                let retain = sub.retain_as_published && message.meta.retain;
                self.mqtt_send_qos0(index, message, retain, sub.identifier);
            }
            Some(_) => {
                debug_assert!(false, "a QoS 1/2 delivery of a borrowed message");
                ShardStats::add(&self.stats.mqtt_dropped_qos0, 1);
            }
            None => {}
        }
    }

    /// Writes a QoS 0 delivery now, or drops and counts it if the session is offline or its
    /// connection has `max_pending_bytes` unsent.
    fn mqtt_send_qos0(&self, index: u32, message: &MsgParts, retain: bool, identifier: u32) {
        let mut sessions = self.sessions.borrow_mut();
        let Some(s) = sessions.get_mut(index as usize) else { return };
        let Some(slot) = s.conn else {
            ShardStats::add(&self.stats.mqtt_dropped_qos0, 1);
            return;
        };
        let mut conns = self.conns.borrow_mut();
        let conn = &mut conns[slot as usize];
        if conn.closing || conn.out.len() + conn.writing > self.config.mqtt.max_pending_bytes {
            ShardStats::add(&self.stats.mqtt_dropped_qos0, 1);
            return;
        }
        let scratch = &mut self.mqtt_scratch.borrow_mut();
        match write_publish(&mut conn.out, s, (message, 0, retain, identifier), 0, false, scratch) {
            Ok(()) => {
                self.count_out(message.size());
                self.after_append(conn);
            }
            Err(skip) => self.count_skip(skip),
        }
    }

    /// A delivery at `qos`: QoS 0 is written now ([`Shard::mqtt_send_qos0`]); QoS 1/2 is sent
    /// now if the session's window allows, else queued (bounded), and the message is cloned
    /// (refcounts) to stay inflight or queued.
    fn mqtt_enqueue(&self, index: u32, message: &Message, qos: u8, retain: bool, identifier: u32) {
        let mut sessions = self.sessions.borrow_mut();
        let Some(s) = sessions.get_mut(index as usize) else { return };
        if qos == 0 {
            drop(sessions);
            self.mqtt_send_qos0(index, &message.parts(), retain, identifier);
            return;
        }
        if s.queue.is_empty() && s.window_open() {
            let pending = Pending { message: message.clone(), qos, retain, identifier };
            self.send_inflight(s, pending);
        } else if s.queue.len() < self.config.mqtt.max_queued_messages {
            // An offline session may wait long: copy out of the publisher's read buffer.
            let message = if s.conn.is_none() { message.detached() } else { message.clone() };
            s.queue.push_back(Pending { message, qos, retain, identifier });
        } else {
            ShardStats::add(&self.stats.mqtt_dropped_queue_full, 1);
        }
    }

    /// Writes a QoS 1/2 delivery with a new packet id and keeps it inflight.
    fn send_inflight(&self, s: &mut Session, pending: Pending) {
        let Some(slot) = s.conn else { return };
        let mut conns = self.conns.borrow_mut();
        let conn = &mut conns[slot as usize];
        let packet_id = s.allocate_packet_id();
        let scratch = &mut self.mqtt_scratch.borrow_mut();
        let parts = pending.message.parts();
        let delivery = (&parts, pending.qos, pending.retain, pending.identifier);
        match write_publish(&mut conn.out, s, delivery, packet_id, false, scratch) {
            Ok(()) => {
                self.count_out(pending.message.size());
                self.after_append(conn);
                s.inflight.push_back(Inflight { packet_id, pending, stage: Stage::Published });
            }
            Err(skip) => self.count_skip(skip),
        }
    }

    /// Fills the window from the queue.
    fn pump(&self, s: &mut Session) {
        while s.window_open() {
            let Some(pending) = s.queue.pop_front() else { return };
            if pending.message.expired_now() {
                ShardStats::add(&self.stats.mqtt_dropped_expired, 1);
                continue;
            }
            self.send_inflight(s, pending);
        }
    }

    /// PUBACK (`qos` 1) or PUBCOMP (`qos` 2) for an outgoing delivery.
    fn mqtt_acked(&self, index: u32, packet_id: u16, qos: u8) {
        let mut sessions = self.sessions.borrow_mut();
        let s = &mut sessions[index as usize];
        if let Some(i) = s.inflight_index(packet_id) {
            if s.inflight[i].pending.qos == qos {
                s.inflight.remove(i);
                self.pump(s);
            }
        }
    }

    /// PUBREC for an outgoing QoS 2 delivery. Returns false if the packet id is unknown.
    fn mqtt_received(&self, index: u32, packet_id: u16, code: ReasonCode) -> bool {
        let mut sessions = self.sessions.borrow_mut();
        let s = &mut sessions[index as usize];
        let Some(i) = s.inflight_index(packet_id) else { return false };
        if s.inflight[i].pending.qos != 2 {
            return false;
        }
        if code.0 >= 0x80 {
            // The receiver refused it: the flow ends here (§4.3.3).
            s.inflight.remove(i);
            self.pump(s);
        } else {
            s.inflight[i].stage = Stage::Released;
        }
        true
    }

    /// After [`DORMANT_RELEASE_MIN`] or more connections went dormant, hands what their tasks
    /// and buffers freed back to the kernel now instead of after the allocator's purge delay.
    fn release_dozed_memory(&self) {
        if self.dozed_since_release.get() < DORMANT_RELEASE_MIN {
            return;
        }
        self.dozed_since_release.set(0);
        self.release_memory_now("connections dozed", 0, 0);
    }

    /// Hands this thread's freed memory back to the kernel and counts it.
    fn release_memory_now(&self, why: &str, before: u64, swept: u64) {
        let started = Instant::now();
        if crate::serve::release_memory() {
            self.released_at.set(Some(started));
            ShardStats::add(&self.stats.memory_releases, 1);
            tracing::debug!(
                elapsed_us = started.elapsed().as_micros() as u64,
                before,
                swept,
                "memory released, {why}"
            );
        }
    }

    /// Hands what traffic freed back to the kernel at a moment when few or none wait: once no
    /// shard has carried a message for [`QUIET_RELEASE_SWEEPS`] sweeps after some traffic, or
    /// when the process's traffic over a sweep fell [`TRAFFIC_DROP_FACTOR`] times or more from
    /// one of the two sweeps before that carried at least [`TRAFFIC_BUSY_SWEEP_MIN`] messages (at most once per
    /// [`TRAFFIC_DROP_RELEASE_INTERVAL`]). The whole process counts, not this shard only: a
    /// release on the idle shard of a busy process stalled the busy one too (NATS latency
    /// pairs, once their publisher had moved away: 3.8-10.2 ms, all due 0.5-0.75 s after the
    /// move). Left to the allocator, the purge runs when its delay expires, in whichever shard
    /// allocates then: about 170 `madvise` calls in 10 ms on the shard thread after a
    /// throughput run, which was each 10-11 ms stall of a latency run that followed (strace;
    /// tuning/results/2026-12-01-purge.md). A drop to a lower rate never goes quiet, so
    /// without the drop rule that purge still came, 10 s after the busy spell, in the middle
    /// of the slower traffic (tuning/results/2026-12-03-drop-release.md).
    ///
    /// [`QUIET_RELEASE_SWEEPS`]: crate::limits::QUIET_RELEASE_SWEEPS
    /// [`TRAFFIC_DROP_FACTOR`]: crate::limits::TRAFFIC_DROP_FACTOR
    /// [`TRAFFIC_BUSY_SWEEP_MIN`]: crate::limits::TRAFFIC_BUSY_SWEEP_MIN
    /// [`TRAFFIC_DROP_RELEASE_INTERVAL`]: crate::limits::TRAFFIC_DROP_RELEASE_INTERVAL
    fn release_when_quiet(&self) {
        use crate::limits::{
            QUIET_RELEASE_SWEEPS, TRAFFIC_BUSY_SWEEP_MIN, TRAFFIC_DROP_FACTOR,
            TRAFFIC_DROP_RELEASE_INTERVAL,
        };
        let traffic: u64 = self
            .identity
            .shard_stats
            .iter()
            .map(|stats| {
                ShardStats::get(&stats.in_msgs)
                    + ShardStats::get(&stats.out_msgs)
                    + ShardStats::get(&stats.mesh_msgs_out)
            })
            .sum();
        let swept = traffic.wrapping_sub(self.traffic_seen.replace(traffic));
        // The busier of the two sweeps before: a burst that ends early in a sweep leaves that
        // sweep neither busy nor slow, and the drop shows against the one before it.
        let [last, earlier] = self.swept_traffic.replace([swept, self.swept_traffic.get()[0]]);
        let before = last.max(earlier);
        let mut quiet = if swept == 0 { self.quiet_sweeps.get().saturating_add(1) } else { 0 };
        let why = if quiet == QUIET_RELEASE_SWEEPS {
            "quiet"
        } else if before >= TRAFFIC_BUSY_SWEEP_MIN
            && swept.saturating_mul(TRAFFIC_DROP_FACTOR) <= before
            && self.config.server.allocator_purge_delay_ms > 0
            && self.released_at.get().is_none_or(|at| at.elapsed() >= TRAFFIC_DROP_RELEASE_INTERVAL)
        {
            if swept == 0 {
                // This counts as the quiet spell's release.
                quiet = QUIET_RELEASE_SWEEPS;
            }
            "traffic dropped"
        } else {
            self.quiet_sweeps.set(quiet);
            return;
        };
        self.quiet_sweeps.set(quiet);
        self.release_memory_now(why, before, swept);
    }

    /// Asks MQTT connections with no traffic for `mqtt.dormant_after_ms` to go dormant.
    fn mark_quiet_connections(&self) {
        let after = self.config.mqtt.dormant_after_ms;
        if after == 0 || self.dormancy.get().is_none() {
            return;
        }
        let sweeps = after.div_ceil(SWEEP_INTERVAL.as_millis() as u64).min(u64::from(u16::MAX));
        for (_, c) in self.conns.borrow_mut().iter_mut() {
            if c.protocol != Protocol::Mqtt
                || c.tls
                || c.closing
                || c.dormant.is_some()
                || c.doze_requested
            {
                continue;
            }
            if c.active || c.writing > 0 || !c.out.is_empty() {
                c.active = false;
                c.idle_sweeps = 0;
                continue;
            }
            c.idle_sweeps = c.idle_sweeps.saturating_add(1);
            if u64::from(c.idle_sweeps) >= sweeps {
                c.doze_requested = true;
                super::wake(&mut c.reader);
            }
        }
    }

    /// Closes connections whose token expired: MQTT 5 with DISCONNECT 0xA0 (Maximum connect
    /// time), MQTT 3.1.1 by closing, NATS with -ERR 'User Authentication Expired'. The will is
    /// published (a server-initiated close). Walks the connections only once the earliest
    /// expiry has come.
    fn close_expired_tokens(&self) {
        let now = super::unix_now();
        if self.auth_deadline.get().is_none_or(|at| at > now) {
            return;
        }
        let mut expired: SmallVec<[(u32, Protocol, Option<u32>); 4]> = SmallVec::new();
        let mut next: Option<u64> = None;
        {
            let conns = self.conns.borrow();
            let sessions = self.sessions.borrow();
            for (slot, c) in conns.iter() {
                if c.closing {
                    continue;
                }
                let exp = match c.protocol {
                    Protocol::Nats => c.grant.as_ref().and_then(|g| g.expires_at),
                    Protocol::Mqtt => c
                        .session
                        .and_then(|i| sessions.get(i as usize))
                        .and_then(|s| s.grant.as_ref().and_then(|g| g.expires_at)),
                };
                match exp {
                    Some(at) if at <= now => expired.push((slot as u32, c.protocol, c.session)),
                    Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                    None => {}
                }
            }
        }
        self.auth_deadline.set(next);
        for (slot, protocol, session) in expired {
            ShardStats::add(&self.stats.auth_expired, 1);
            match protocol {
                Protocol::Nats => self.close_with_err(slot, "User Authentication Expired"),
                Protocol::Mqtt => {
                    let version =
                        session.map_or(Version::V3_1_1, |i| self.with_session(i, |s| s.version));
                    let why = "the connection's token expired";
                    disconnect(self, slot, version, ReasonCode::MAXIMUM_CONNECT_TIME, why);
                }
            }
        }
    }

    /// Keep-alive deadlines, delayed wills and session expiry; called every [`SWEEP_INTERVAL`].
    pub fn mqtt_sweep(&self) {
        let now = Instant::now();
        self.release_dozed_memory();
        self.release_when_quiet();
        self.mark_quiet_connections();
        let silent: SmallVec<[u32; 4]> = self
            .conns
            .borrow()
            .iter()
            .filter(|(_, c)| !c.closing && c.keepalive_deadline.is_some_and(|d| d <= now))
            .map(|(slot, _)| slot as u32)
            .collect();
        for slot in silent {
            if self.with_conn(slot, |c| c.protocol) == Protocol::Nats {
                // A NATS connection's deadline is the authentication timeout (nats-server: 2 s).
                ShardStats::add(&self.stats.auth_refused, 1);
                self.close_with_err(slot, "Authentication Timeout");
                continue;
            }
            let version = self
                .with_conn(slot, |c| c.session)
                .map(|index| self.with_session(index, |s| s.version));
            ShardStats::add(&self.stats.stale_connections, 1);
            let why = "no packet within 1.5 x keep alive [MQTT-3.1.2-22]";
            let version = version.unwrap_or(Version::V3_1_1);
            disconnect(self, slot, version, ReasonCode::KEEP_ALIVE_TIMEOUT, why);
        }
        self.close_expired_tokens();
        // Offline sessions are scanned only when the earliest deadline has come, so a shard
        // with many long-lived offline sessions does not walk them all four times a second.
        if self.session_deadline.get().is_none_or(|at| at > now) {
            self.mesh.stage_all();
            return;
        }
        let mut wills = Vec::new();
        let mut ended: SmallVec<[u32; 4]> = SmallVec::new();
        let mut next: Option<Instant> = None;
        for (index, s) in self.sessions.borrow_mut().iter_mut() {
            if s.conn.is_some() {
                continue;
            }
            if s.will_at.is_some_and(|at| at <= now) {
                s.will_at = None;
                wills.extend(s.will.take());
            }
            if s.expires_at.is_some_and(|at| at <= now) {
                ended.push(index as u32);
                continue;
            }
            for at in [s.will_at, s.expires_at].into_iter().flatten() {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        self.session_deadline.set(next);
        for will in wills {
            self.mqtt_publish_will(&will);
        }
        for index in ended {
            self.mqtt_end_session(index, false);
        }
        self.mesh.stage_all();
    }

    /// Connections other shards handed over since the last call.
    pub fn take_adopted(&self) -> Vec<Adopt> {
        std::mem::take(&mut *self.adopted.borrow_mut())
    }

    /// MQTT connections other shards moved here with their sessions since the last call, with
    /// the slot each has here.
    pub fn take_mqtt_moved(&self) -> Vec<(u32, MovedMqtt)> {
        std::mem::take(&mut *self.mqtt_moved_in.borrow_mut())
    }

    /// The shard that holds the session of `client_id` (or would create it): its home shard,
    /// unless the home moved it away with its connection (then where it went), or it is here
    /// although this is not its home (it was moved here).
    pub(super) fn session_shard(&self, client_id: &[u8]) -> usize {
        let home = interop::home_shard(client_id, self.count);
        if home == self.id {
            return self.sessions_away.borrow().get(client_id).copied().unwrap_or(home);
        }
        if self.session_ids.borrow().contains_key(client_id) {
            self.id
        } else {
            home
        }
    }

    /// Takes in a connection and its session that their home shard moved here: the session
    /// joins this shard's, the connection gets a slot bound to it (at once, so that a CONNECT
    /// for the same client id that arrives next finds them), and its writer and reader start
    /// in `serve_moved`. Returns the slot.
    pub(super) fn mqtt_take_in(&self, moved: &mut MovedMqtt) -> u32 {
        let session = moved.session.take().expect("a moved session");
        let client_id = session.client_id.clone();
        let index = self.sessions.borrow_mut().insert(*session) as u32;
        self.session_ids.borrow_mut().insert(client_id, index);
        ShardStats::add(&self.stats.mqtt_sessions, 1);
        let slot = self.insert_conn(moved.addr, Protocol::Mqtt, moved.cid);
        self.move_arrived();
        let deadline = moved.keep_alive.map(|keep_alive| Instant::now() + keep_alive);
        self.with_conn(slot, |c| {
            c.session = Some(index);
            c.keepalive_deadline = deadline;
        });
        self.with_session(index, |s| s.conn = Some(slot));
        let out = std::mem::take(&mut moved.out);
        if !out.is_empty() {
            self.send(slot, |o| o.extend_from_slice(&out));
        }
        slot
    }

    /// A session this shard moved to shard `from` has ended there.
    pub(super) fn mqtt_session_gone(&self, from: usize, client_id: &Bytes) {
        let mut away = self.sessions_away.borrow_mut();
        if away.get(client_id) == Some(&from) {
            away.remove(client_id);
        }
    }

    /// Whether MQTT connection `slot` may move to shard `target` with its session now:
    /// co-location is on, the connection runs over plain TCP, is live and not closing, and
    /// its session is at home here, ends with the connection (expiry 0) and holds nothing but
    /// the connection (no subscriptions, no deliveries in flight or queued, no QoS 2 publish
    /// waiting for PUBREL); and `target` has room (`Shard::target_has_room`).
    pub(super) fn mqtt_may_move(&self, slot: u32, target: usize) -> bool {
        if !self.config.server.colocate_publishers || target == self.id || target >= self.count {
            return false;
        }
        let session = self.with_conn(slot, |c| {
            let live = c.protocol == Protocol::Mqtt && !c.closing && !c.tls && c.dormant.is_none();
            c.session.filter(|_| live)
        });
        let Some(index) = session else { return false };
        let alone = self.with_session(index, |s| {
            s.subs.is_empty()
                && s.inflight.is_empty()
                && s.queue.is_empty()
                && s.incoming_qos2.is_empty()
                && s.expiry_s == 0
                && s.will_at.is_none()
                && interop::home_shard(&s.client_id, self.count) == self.id
        });
        alone && self.target_has_room(target)
    }

    /// Sends MQTT connection `slot` (its writer stopped) and its session to `target`; frees
    /// the slot. Later CONNECTs with its client id are forwarded there
    /// (`Shard::session_shard`) until `target` reports the session gone.
    fn mqtt_send_away(
        &self,
        slot: u32,
        target: usize,
        fd: std::os::fd::OwnedFd,
        rest: Vec<u8>,
        state: ConnState,
    ) {
        let (addr, cid, index, out) = self.with_conn(slot, |c| {
            (c.addr, c.cid, c.session.take().expect("a session"), std::mem::take(&mut c.out))
        });
        let mut session = self.sessions.borrow_mut().remove(index as usize);
        session.conn = None;
        self.session_ids.borrow_mut().remove(&session.client_id);
        ShardStats::sub(&self.stats.mqtt_sessions, 1);
        self.sessions_away.borrow_mut().insert(session.client_id.clone(), target);
        tracing::debug!(cid, from = self.id, to = target, "MQTT connection moved");
        let ConnState { version, aliases, keep_alive, expiry_was_zero, .. } = state;
        let moved = MovedMqtt {
            fd,
            rest,
            addr,
            cid,
            session: Some(Box::new(session)),
            version,
            aliases,
            keep_alive,
            expiry_was_zero,
            out,
        };
        self.mesh.push(target, MeshOp::MoveMqtt(Box::new(moved)));
        self.mesh.stage_all();
        self.identity.moves_in_flight[target].fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.conns.borrow_mut().remove(slot as usize);
        ShardStats::sub(&self.stats.connections, 1);
        ShardStats::add(&self.stats.mqtt_moves, 1);
    }

    fn count_out(&self, size: usize) {
        ShardStats::add(&self.stats.out_msgs, 1);
        ShardStats::add(&self.stats.out_bytes, size as u64);
    }

    fn count_skip(&self, skip: Skip) {
        let counter = match skip {
            Skip::NoTopic => &self.stats.mqtt_dropped_no_topic,
            Skip::TooLarge => &self.stats.mqtt_dropped_too_large,
            Skip::Expired => &self.stats.mqtt_dropped_expired,
        };
        ShardStats::add(counter, 1);
    }
}

/// The QoS at which MQTT subscription `sub` of session `index` gets `message`, or `None` if it
/// does not get it: a `$` subject for a filter that starts with a wildcard [MQTT-4.7.2-1], or
/// the session's own publish under No Local. MQTT publishes go out at min(publish,
/// subscription) QoS; NATS publishes at the subscription's QoS, so NATS services can reach
/// devices reliably (nats-server#6859).
pub(super) fn mqtt_delivery_qos(
    index: u32,
    sub: MqttSub,
    message: &MsgParts,
    origin_session: Option<u32>,
) -> Option<u8> {
    if sub.wildcard_first && subject::is_reserved_subject(message.subject) {
        return None;
    }
    if sub.no_local && origin_session == Some(index) {
        return None;
    }
    Some(if message.meta.from_mqtt { message.meta.qos.min(sub.qos) } else { sub.qos })
}

/// A will kept beyond its CONNECT packet: copied, so no read buffer stays pinned.
fn detached_will(will: &Will) -> Will {
    let copy = |b: &Bytes| Bytes::copy_from_slice(b);
    let mut kept = will.clone();
    kept.topic = copy(&will.topic);
    kept.payload = copy(&will.payload);
    let p = &mut kept.properties;
    p.content_type = p.content_type.as_ref().map(copy);
    p.response_topic = p.response_topic.as_ref().map(copy);
    p.correlation_data = p.correlation_data.as_ref().map(copy);
    p.user_properties = p.user_properties.iter().map(|(k, v)| (copy(k), copy(v))).collect();
    kept
}

/// Encodes one PUBLISH of `message` for session `s` into `out`. Leaves `out` as it was if the
/// delivery must be skipped: no MQTT form for the subject, expired, or over the client's
/// Maximum Packet Size. Borrows everything: no refcount is taken per delivery.
fn write_publish(
    out: &mut BytesMut,
    s: &mut Session,
    delivery: (&MsgParts, u8, bool, u32),
    packet_id: u16,
    dup: bool,
    scratch: &mut Scratch,
) -> Result<(), Skip> {
    let (message, qos, retain, identifier) = delivery;
    // The clock is read only for messages that can expire.
    let expires_at = message.meta.properties.and_then(|p| p.expires_at);
    let now = expires_at.map(|_| Instant::now());
    if let (Some(at), Some(now)) = (expires_at, now) {
        if at <= now {
            return Err(Skip::Expired);
        }
    }
    if message.size() > s.max_packet as usize
        || message.size() + 2 * usize::from(u16::MAX) > codec::REMAINING_LENGTH_MAX as usize
    {
        return Err(Skip::TooLarge);
    }
    let Scratch { topic: translated, topic_of, topic_form, identifiers, user_properties } = scratch;
    let topic: &[u8] = if message.meta.from_mqtt {
        message.meta.topic
    } else {
        if *topic_form == TopicForm::Unknown || topic_of[..] != message.subject[..] {
            translated.clear();
            *topic_form = match subject::subject_to_mqtt_topic_into(message.subject, translated) {
                Ok(true) => TopicForm::Translated,
                Ok(false) => TopicForm::Itself,
                Err(_) => TopicForm::None,
            };
            topic_of.clear();
            topic_of.extend_from_slice(message.subject);
        }
        match topic_form {
            TopicForm::Translated => translated,
            TopicForm::Itself => message.subject,
            TopicForm::None | TopicForm::Unknown => return Err(Skip::NoTopic),
        }
    };
    let header = codec::PublishHeader {
        dup,
        qos: QoS::from_bits(qos).unwrap_or(QoS::AtMostOnce),
        retain,
        packet_id,
    };
    let before = out.len();
    let alias = if s.version == Version::V3_1_1 {
        // No properties, aliases or subscription identifiers to carry.
        codec::encode_publish_v3(out, header, topic, message.payload);
        None
    } else {
        let scratch = (identifiers, user_properties);
        encode_publish_v5(out, s, (message, header, identifier, now), topic, scratch)
    };
    if out.len() - before > s.max_packet as usize {
        out.truncate(before);
        return Err(Skip::TooLarge);
    }
    if let Some((number, false)) = alias {
        s.aliases.get_or_insert_with(Box::default).insert(Bytes::copy_from_slice(topic), number);
    }
    Ok(())
}

/// The 5.0 half of [`write_publish`]: the message's properties, its subscription identifier and
/// a topic alias, built in the session's scratch vectors (given back emptied). Returns the
/// alias used, `(number, already known)`, which the caller records once the packet fits.
fn encode_publish_v5(
    out: &mut BytesMut,
    s: &Session,
    delivery: (&MsgParts, codec::PublishHeader, u32, Option<Instant>),
    topic: &[u8],
    scratch: (&mut Vec<u32>, &mut Vec<(Bytes, Bytes)>),
) -> Option<(u16, bool)> {
    let (message, header, identifier, now) = delivery;
    let (identifiers, user_properties) = scratch;
    let mut properties = PublishProperties {
        subscription_identifiers: std::mem::take(identifiers),
        user_properties: std::mem::take(user_properties),
        ..Default::default()
    };
    if let Some(p) = message.meta.properties {
        properties.payload_format_indicator = p.payload_format_indicator;
        properties.message_expiry_interval = p.expires_at.zip(now).map(|(at, now)| {
            let left = at.saturating_duration_since(now).as_millis();
            u32::try_from(left.div_ceil(1000)).unwrap_or(u32::MAX).max(1)
        });
        properties.content_type = p.content_type.clone();
        properties.response_topic = p.response_topic.clone();
        properties.correlation_data = p.correlation_data.clone();
        properties.user_properties.extend(p.user_properties.iter().cloned());
    }
    if !message.meta.from_mqtt {
        if !message.headers.is_empty() {
            properties.user_properties.clear();
            match message.meta.headers {
                Some(headers) => {
                    interop::user_properties_into(headers, &mut properties.user_properties)
                }
                // Not reached today: borrowed parts with NATS headers come from no path.
                None => interop::user_properties_into(
                    &Bytes::copy_from_slice(message.headers),
                    &mut properties.user_properties,
                ),
            }
        }
        if !message.reply.is_empty() {
            // A reply subject without an MQTT form is not passed on (the request still is).
            if let Ok(response) = subject::subject_to_mqtt_topic(message.reply) {
                properties.response_topic = Some(Bytes::copy_from_slice(&response));
            }
        }
    }
    if identifier != 0 {
        properties.subscription_identifiers.push(identifier);
    }
    let mut alias = None;
    if s.alias_max > 0 {
        let given = s.aliases.as_ref().map_or(0, |a| a.len());
        alias = match s.aliases.as_ref().and_then(|a| a.get(topic)) {
            Some(known) => Some((*known, true)),
            None if given < usize::from(s.alias_max) => Some((given as u16 + 1, false)),
            None => None,
        };
        properties.topic_alias = alias.map(|(a, _)| a);
    }
    let sent_topic: &[u8] = if matches!(alias, Some((_, true))) { b"" } else { topic };
    codec::encode_publish(out, Version::V5_0, header, sent_topic, &properties, message.payload);
    let PublishProperties { mut subscription_identifiers, user_properties: mut users, .. } =
        properties;
    subscription_identifiers.clear();
    users.clear();
    *identifiers = subscription_identifiers;
    *user_properties = users;
    alias
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_level_reads_the_protocol_level() {
        assert_eq!(connect_level(b"\x10\x10\x00\x04MQTT\x05"), Some(5));
        assert_eq!(connect_level(b"\x10\x80\x01\x00\x06MQIsdp\x03"), Some(3));
        assert_eq!(connect_level(b"\x10\x10\x00\x04MQ"), None);
    }

    #[test]
    fn nats_subjects_delivered_in_turn_each_get_their_own_topic() {
        let mut session = Session::new(Bytes::from_static(b"c"), Version::V3_1_1);
        let mut scratch = Scratch::default();
        let cases: [(&'static [u8], Option<&[u8]>); 6] = [
            (b"a.b", Some(b"a/b")),
            (b"a.b", Some(b"a/b")),
            (b"plain", Some(b"plain")),
            (b"a.*", None),
            (b"a.b", Some(b"a/b")),
            (b"x.y.z", Some(b"x/y/z")),
        ];
        for (subject, want) in cases {
            let message = Message {
                subject: Bytes::from_static(subject),
                payload: Bytes::from_static(b"p"),
                ..Default::default()
            };
            let mut out = BytesMut::new();
            let written = write_publish(
                &mut out,
                &mut session,
                (&message.parts(), 0, false, 0),
                0,
                false,
                &mut scratch,
            );
            match want {
                None => assert!(written.is_err() && out.is_empty(), "{subject:?}"),
                Some(topic) => {
                    assert!(written.is_ok(), "{subject:?}");
                    let packet = codec::decode(&mut out, Version::V3_1_1, u32::MAX);
                    let Ok(Some(Packet::Publish(p))) = packet else { panic!("{packet:?}") };
                    assert_eq!(&p.topic[..], topic, "{subject:?}");
                }
            }
        }
    }

    #[test]
    fn arena_reuses_its_chunk() {
        let mut arena = BytesMut::new();
        let (a, _) = arena_subject(&mut arena, &Bytes::from_static(b"a/b")).unwrap();
        let (b, _) = arena_subject(&mut arena, &Bytes::from_static(b"c/d")).unwrap();
        assert_eq!((&a[..], &b[..]), (&b"a.b"[..], &b"c.d"[..]));
        assert_eq!(a.as_ptr() as usize + 3, b.as_ptr() as usize);
        let same = Bytes::from_static(b"plain");
        assert_eq!(arena_subject(&mut arena, &same).unwrap(), (same.clone(), false));
        assert!(arena_subject(&mut arena, &Bytes::from_static(b"a b")).is_err());
    }

    #[test]
    fn subject_cache_remembers_the_last_translated_topic() {
        let mut cache = SubjectCache::default();
        let first = cache.subject(&Bytes::from_static(b"a/b")).unwrap();
        let again = cache.subject(&Bytes::copy_from_slice(b"a/b")).unwrap();
        assert_eq!((&first[..], first.as_ptr()), (&again[..], again.as_ptr()), "a cache hit");
        assert_eq!(&cache.subject(&Bytes::from_static(b"c/d")).unwrap()[..], b"c.d");
        assert_eq!(&cache.subject(&Bytes::from_static(b"plain")).unwrap()[..], b"plain");
        assert_eq!(&cache.subject(&Bytes::from_static(b"c/d")).unwrap()[..], b"c.d");
        assert!(cache.subject(&Bytes::from_static(b"bad topic")).is_err());
    }

    #[test]
    fn subject_cache_remembers_the_publish_verdict_of_its_subject_only() {
        let mut cache = SubjectCache::default();
        let checks = std::cell::Cell::new(0);
        let deny = |_: &[u8]| {
            checks.set(checks.get() + 1);
            false
        };
        let subject = cache.subject(&Bytes::from_static(b"a/b")).unwrap();
        assert!(!cache.allowed(&subject, deny));
        let again = cache.subject(&Bytes::copy_from_slice(b"a/b")).unwrap();
        assert!(!cache.allowed(&again, deny));
        assert_eq!(checks.get(), 1, "the second publish to a/b reused the verdict");
        let other = cache.subject(&Bytes::from_static(b"c/d")).unwrap();
        assert!(cache.allowed(&other, |_| true), "a new topic is checked anew");
        let plain = cache.subject(&Bytes::from_static(b"plain")).unwrap();
        assert!(!cache.allowed(&plain, deny), "an uncached subject is checked every time");
        assert!(!cache.allowed(&plain, deny));
        assert_eq!(checks.get(), 3);
    }
}
