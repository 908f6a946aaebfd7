//! MQTT clients for the wire-level tests: a raw client over a tokio `TcpStream` that sends
//! hand-built packets (built and read with the crate's own codec), and thin wrappers around
//! rumqttc's 3.1.1 and 5.0 event loops that turn them into "wait for the next X" calls.
//!
//! Every wait has a timeout and panics with what it saw instead, so no test can hang.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use isthmus::protocol::mqtt::codec::{decode, encode};
use isthmus::protocol::mqtt::packet::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::Broker;

/// Default wait for one expected packet or event.
pub const PACKET_TIMEOUT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

/// The largest packet the raw client decodes (the codec wants a bound).
const RAW_MAX_PACKET_BYTES: u32 = 64 << 20;

// ---------------------------------------------------------------------------------------------
// Packet builders
// ---------------------------------------------------------------------------------------------

/// A CONNECT with keep alive 30 s, no will, no credentials, no properties.
pub fn connect_packet(version: Version, client_id: &str, clean_start: bool) -> Connect {
    Connect {
        version,
        clean_start,
        keep_alive_seconds: 30,
        client_id: Bytes::copy_from_slice(client_id.as_bytes()),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

/// A PUBLISH without properties (`packet_id` is ignored at QoS 0).
pub fn publish_packet(topic: &str, qos: QoS, packet_id: u16, payload: &[u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: Bytes::copy_from_slice(topic.as_bytes()),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { packet_id },
        payload: Bytes::copy_from_slice(payload),
        topic_alias: None,
        properties: None,
    }
}

/// PUBACK/PUBREC/PUBREL/PUBCOMP body with reason code 0 and no properties.
pub fn ack(packet_id: u16) -> PubAck {
    PubAck { packet_id, reason_code: ReasonCode::SUCCESS, properties: AckProperties::default() }
}

/// A SUBSCRIBE for one filter with default 5.0 options.
pub fn subscribe_packet(packet_id: u16, filter: &str, qos: QoS) -> Subscribe {
    Subscribe {
        packet_id,
        filters: vec![(
            Bytes::copy_from_slice(filter.as_bytes()),
            SubscriptionOptions::with_qos(qos),
        )],
        properties: SubscribeProperties::default(),
    }
}

/// Encodes `packet` for `version`.
pub fn encoded(packet: &Packet, version: Version) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out);
    out.to_vec()
}

// ---------------------------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------------------------

/// What [`RawMqtt::read_packet`] got.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Returned once per packet read; boxing buys nothing here.
pub enum Read {
    /// One whole packet.
    Packet(Packet),
    /// The peer closed (or reset) the connection.
    Closed,
    /// Nothing complete within the timeout.
    TimedOut,
}

/// An MQTT connection driven packet by packet.
pub struct RawMqtt {
    stream: TcpStream,
    buf: BytesMut,
    /// The version packets are encoded and decoded in (set by [`RawMqtt::handshake`]).
    pub version: Version,
    next_packet_id: u16,
}

impl RawMqtt {
    /// Opens a TCP connection; sends nothing.
    pub async fn connect(addr: &str) -> RawMqtt {
        let stream = TcpStream::connect(addr).await.expect("tcp connect to MQTT listener");
        Self::wrap(stream)
    }

    /// Opens a TCP connection with a tiny kernel receive buffer, so a client that does not
    /// read fills up fast.
    pub async fn connect_small_rcvbuf(addr: &str, bytes: u32) -> RawMqtt {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(addr.parse().expect("addr")).await.expect("tcp connect");
        Self::wrap(stream)
    }

    /// The socket, for a test that reads raw bytes from here on (nothing may be buffered).
    pub fn into_stream(self) -> TcpStream {
        assert!(self.buf.is_empty(), "bytes read but not decoded");
        self.stream
    }

    fn wrap(stream: TcpStream) -> RawMqtt {
        stream.set_nodelay(true).ok();
        RawMqtt { stream, buf: BytesMut::new(), version: Version::V5_0, next_packet_id: 1 }
    }

    /// Connects, sends `connect` and reads the CONNACK, which must have reason code 0.
    pub async fn handshake(addr: &str, connect: Connect) -> (RawMqtt, ConnAck) {
        let mut raw = Self::connect(addr).await;
        raw.version = connect.version;
        let id = String::from_utf8_lossy(&connect.client_id).into_owned();
        raw.send(&Packet::Connect(Box::new(connect))).await;
        let connack = raw.expect_connack().await;
        assert_eq!(connack.reason_code, ReasonCode::SUCCESS, "CONNACK for {id:?}: {connack:?}");
        (raw, connack)
    }

    /// [`RawMqtt::handshake`] with [`connect_packet`].
    pub async fn connect_as(
        addr: &str,
        version: Version,
        client_id: &str,
        clean_start: bool,
    ) -> (RawMqtt, ConnAck) {
        Self::handshake(addr, connect_packet(version, client_id, clean_start)).await
    }

    /// The next packet must be a CONNACK.
    pub async fn expect_connack(&mut self) -> ConnAck {
        match self.expect_packet(PACKET_TIMEOUT).await {
            Packet::ConnAck(connack) => *connack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// A fresh packet identifier (1, 2, ... wrapping past 0).
    pub fn packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Encodes and writes `packet`; panics on a write error.
    pub async fn send(&mut self, packet: &Packet) {
        let bytes = encoded(packet, self.version);
        self.send_bytes(&bytes).await;
    }

    /// Writes raw bytes; panics on a write error.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.try_send_bytes(bytes).await.expect("write to broker");
    }

    /// Writes raw bytes.
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads one packet (server to client) within `timeout`.
    pub async fn read_packet(&mut self, timeout: Duration) -> Read {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match decode(&mut self.buf, self.version, RAW_MAX_PACKET_BYTES) {
                Ok(Some(packet)) => return Read::Packet(packet),
                Ok(None) => {}
                Err(e) => panic!(
                    "broker sent bytes the codec rejects ({e:?}): {:02x?}",
                    &self.buf[..self.buf.len().min(64)]
                ),
            }
            self.buf.reserve(64 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Read::TimedOut,
                Ok(Ok(0)) => {
                    assert!(
                        self.buf.is_empty(),
                        "connection closed inside a packet; left over: {:02x?}",
                        &self.buf[..]
                    );
                    return Read::Closed;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Read::Closed
                }
                Ok(Err(e)) => panic!("read error: {e}"),
            }
        }
    }

    /// The next packet, which must arrive within `timeout`.
    pub async fn expect_packet(&mut self, timeout: Duration) -> Packet {
        match self.read_packet(timeout).await {
            Read::Packet(packet) => packet,
            Read::Closed => panic!("expected a packet, but the connection was closed"),
            Read::TimedOut => panic!("expected a packet within {timeout:?}, got none"),
        }
    }

    /// The next packet that is not a PINGRESP must be a PUBLISH.
    pub async fn expect_publish(&mut self, timeout: Duration) -> Publish {
        loop {
            match self.expect_packet(timeout).await {
                Packet::Publish(publish) => return publish,
                Packet::PingResp => continue,
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
    }

    /// Nothing but PINGRESP may arrive for `quiet`.
    pub async fn expect_nothing(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_packet(left).await {
                Read::TimedOut => return,
                Read::Packet(Packet::PingResp) => continue,
                Read::Packet(packet) => panic!("expected nothing, got {packet:?}"),
                Read::Closed => panic!("expected nothing, but the connection was closed"),
            }
        }
    }

    /// The broker must close the connection within `timeout`; returns the packets that came
    /// before the close.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Vec<Packet> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut packets = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_packet(left).await {
                Read::Packet(packet) => packets.push(packet),
                Read::Closed => return packets,
                Read::TimedOut => {
                    panic!("connection still open after {timeout:?}; packets read: {packets:?}")
                }
            }
        }
    }

    /// The broker must send DISCONNECT with `reason` as its last packet and close.
    pub async fn expect_disconnect(&mut self, reason: u8) -> Disconnect {
        let packets = self.expect_closed(PACKET_TIMEOUT).await;
        match packets.last() {
            Some(Packet::Disconnect(disconnect)) => {
                assert_eq!(
                    disconnect.reason_code,
                    ReasonCode(reason),
                    "DISCONNECT reason code (want 0x{reason:02x}); packets: {packets:?}"
                );
                (**disconnect).clone()
            }
            _ => panic!("expected DISCONNECT 0x{reason:02x} then close, got {packets:?}"),
        }
    }

    /// SUBSCRIBE to one filter and wait for the SUBACK; returns its reason codes.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<ReasonCode> {
        let packet_id = self.packet_id();
        self.send(&Packet::Subscribe(subscribe_packet(packet_id, filter, qos))).await;
        match self.expect_packet(PACKET_TIMEOUT).await {
            Packet::SubAck(suback) => {
                assert_eq!(suback.packet_id, packet_id, "SUBACK packet id");
                suback.reason_codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes and, at QoS 1/2, runs the acknowledgement flow to its end.
    pub async fn publish(&mut self, topic: &str, qos: QoS, payload: &[u8]) {
        let packet_id = self.packet_id();
        self.send(&Packet::Publish(publish_packet(topic, qos, packet_id, payload))).await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.expect_packet(PACKET_TIMEOUT).await {
                Packet::PubAck(puback) => assert_eq!(puback.packet_id, packet_id),
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                match self.expect_packet(PACKET_TIMEOUT).await {
                    Packet::PubRec(pubrec) => assert_eq!(pubrec.packet_id, packet_id),
                    other => panic!("expected PUBREC, got {other:?}"),
                }
                self.send(&Packet::PubRel(ack(packet_id))).await;
                match self.expect_packet(PACKET_TIMEOUT).await {
                    Packet::PubComp(pubcomp) => assert_eq!(pubcomp.packet_id, packet_id),
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
        }
    }

    /// Sends DISCONNECT 0x00 and waits for the broker to close.
    pub async fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Box::new(Disconnect::normal()))).await;
        let _ = tokio::time::timeout(PACKET_TIMEOUT, self.stream.read_buf(&mut self.buf)).await;
    }
}

/// What mosquitto 2.0.11 does where isthmus sends DISCONNECT with a reason code.
#[derive(Clone, Copy)]
pub enum Mosquitto {
    /// The same DISCONNECT.
    Same,
    /// Closes without a DISCONNECT.
    ClosesSilently,
    /// DISCONNECT with another reason code.
    Reason(u8),
}

/// The broker must send DISCONNECT `reason` and close (mosquitto: what `mosquitto` says).
pub async fn expect_v5_close(raw: &mut RawMqtt, broker: &Broker, reason: u8, mosquitto: Mosquitto) {
    if broker.is_isthmus() {
        raw.expect_disconnect(reason).await;
        return;
    }
    match mosquitto {
        Mosquitto::Same => {
            raw.expect_disconnect(reason).await;
        }
        Mosquitto::Reason(theirs) => {
            eprintln!("note: mosquitto sends 0x{theirs:02x} here, the contract 0x{reason:02x}");
            raw.expect_disconnect(theirs).await;
        }
        Mosquitto::ClosesSilently => {
            eprintln!(
                "note: mosquitto closes without DISCONNECT here, the contract sends 0x{reason:02x}"
            );
            let packets = raw.expect_closed(PACKET_TIMEOUT).await;
            assert!(packets.is_empty(), "{packets:?}");
        }
    }
}

/// Checks that the broker still serves MQTT: a fresh subscriber gets a QoS 1 message from a
/// fresh publisher. Call after a misbehaving client.
pub async fn assert_mqtt_healthy(broker: &Broker) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let topic = format!("health/{}/{n}", std::process::id());
    let addr = broker.mqtt_addr();
    let (mut sub, _) =
        RawMqtt::connect_as(&addr, Version::V5_0, &format!("health-sub-{n}"), true).await;
    let codes = sub.subscribe(&topic, QoS::AtLeastOnce).await;
    assert_eq!(codes, vec![ReasonCode::GRANTED_QOS_1]);
    let (mut publisher, _) =
        RawMqtt::connect_as(&addr, Version::V3_1_1, &format!("health-pub-{n}"), true).await;
    publisher.publish(&topic, QoS::AtLeastOnce, b"ok").await;
    let got = sub.expect_publish(PACKET_TIMEOUT).await;
    assert_eq!(got.topic.as_ref(), topic.as_bytes());
    assert_eq!(got.payload.as_ref(), b"ok");
}

// ---------------------------------------------------------------------------------------------
// rumqttc wrappers
// ---------------------------------------------------------------------------------------------

macro_rules! rumqttc_client {
    ($name:ident) => {
        /// A rumqttc client whose event loop runs on its own task; events are read with
        /// timeouts.
        pub struct $name {
            /// The rumqttc handle (publish, subscribe, ack, disconnect).
            pub client: <$name as Types>::Client,
            events:
                futures::channel::mpsc::UnboundedReceiver<Result<<$name as Types>::Event, String>>,
            held: VecDeque<<$name as Types>::Publish>,
            task: tokio::task::JoinHandle<()>,
        }

        impl $name {
            /// Starts the event loop and waits for the CONNACK, which must accept.
            pub async fn connect(
                options: <$name as Types>::Options,
            ) -> ($name, <$name as Types>::ConnAck) {
                type Pk = <$name as Types>::Packet;
                let (client, mut eventloop) = <$name as Types>::Client::new(options, 1024);
                let (tx, events) = futures::channel::mpsc::unbounded();
                let task = tokio::spawn(async move {
                    loop {
                        match eventloop.poll().await {
                            Ok(event) => {
                                if tx.unbounded_send(Ok(event)).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                let _ = tx.unbounded_send(Err(e.to_string()));
                                return;
                            }
                        }
                    }
                });
                let mut this = $name { client, events, held: VecDeque::new(), task };
                let connack = match this.next_incoming(PACKET_TIMEOUT).await {
                    Pk::ConnAck(connack) => connack,
                    other => panic!("expected CONNACK, got {other:?}"),
                };
                (this, connack)
            }

            /// The next incoming packet (outgoing events are skipped); panics on a
            /// connection error or a timeout.
            pub async fn next_incoming(&mut self, timeout: Duration) -> <$name as Types>::Packet {
                match self.try_next_incoming(timeout).await {
                    Ok(Some(packet)) => packet,
                    Ok(None) => panic!("no packet within {timeout:?}"),
                    Err(e) => panic!("connection error while waiting for a packet: {e}"),
                }
            }

            /// The next incoming packet; `Ok(None)` on timeout, `Err` on a connection error.
            pub async fn try_next_incoming(
                &mut self,
                timeout: Duration,
            ) -> Result<Option<<$name as Types>::Packet>, String> {
                type Ev = <$name as Types>::Event;
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    match tokio::time::timeout_at(deadline, self.events.next()).await {
                        Err(_) => return Ok(None),
                        Ok(None) => return Err("event loop ended".into()),
                        Ok(Some(Err(e))) => return Err(e),
                        Ok(Some(Ok(Ev::Incoming(packet)))) => return Ok(Some(packet)),
                        Ok(Some(Ok(Ev::Outgoing(_)))) => {}
                    }
                }
            }

            /// The next PUBLISH (held ones first); other packets are skipped.
            pub async fn next_publish(&mut self, timeout: Duration) -> <$name as Types>::Publish {
                type Pk = <$name as Types>::Packet;
                if let Some(publish) = self.held.pop_front() {
                    return publish;
                }
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match self.try_next_incoming(left).await {
                        Ok(Some(Pk::Publish(publish))) => return publish,
                        Ok(Some(_)) => {}
                        Ok(None) => panic!("no PUBLISH within {timeout:?}"),
                        Err(e) => panic!("connection error while waiting for PUBLISH: {e}"),
                    }
                }
            }

            /// No PUBLISH may arrive for `quiet`.
            pub async fn expect_no_publish(&mut self, quiet: Duration) {
                type Pk = <$name as Types>::Packet;
                if let Some(publish) = self.held.pop_front() {
                    panic!("expected no PUBLISH, got {publish:?}");
                }
                let deadline = tokio::time::Instant::now() + quiet;
                loop {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match self.try_next_incoming(left).await {
                        Ok(Some(Pk::Publish(publish))) => {
                            panic!("expected no PUBLISH, got {publish:?}")
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => return,
                        Err(e) => panic!("connection error: {e}"),
                    }
                }
            }

            /// Subscribes and waits for the SUBACK (PUBLISHes arriving first are held for
            /// [`Self::next_publish`]).
            pub async fn subscribe(&mut self, filter: &str, qos: u8) -> <$name as Types>::SubAck {
                let qos = <$name as Types>::qos(qos);
                self.client.subscribe(filter, qos).await.expect("queue SUBSCRIBE");
                self.wait_suback().await
            }

            /// Waits for a SUBACK, holding PUBLISHes that arrive first.
            pub async fn wait_suback(&mut self) -> <$name as Types>::SubAck {
                type Pk = <$name as Types>::Packet;
                loop {
                    match self.next_incoming(PACKET_TIMEOUT).await {
                        Pk::SubAck(suback) => return suback,
                        Pk::Publish(publish) => self.held.push_back(publish),
                        _ => {}
                    }
                }
            }

            /// Publishes (queues the request; the event loop sends it).
            pub async fn publish(&self, topic: &str, qos: u8, retain: bool, payload: &[u8]) {
                let qos = <$name as Types>::qos(qos);
                self.client
                    .publish(topic, qos, retain, payload.to_vec())
                    .await
                    .expect("queue PUBLISH");
            }

            /// Waits until the broker has acknowledged `n` outgoing QoS 1/2 publishes
            /// (PUBACK or PUBCOMP), holding PUBLISHes that arrive meanwhile.
            pub async fn wait_acks(&mut self, n: usize) {
                type Pk = <$name as Types>::Packet;
                let mut got = 0;
                while got < n {
                    match self.next_incoming(PACKET_TIMEOUT).await {
                        Pk::PubAck(_) | Pk::PubComp(_) => got += 1,
                        Pk::Publish(publish) => self.held.push_back(publish),
                        _ => {}
                    }
                }
            }

            /// The connection must end (an error from the event loop) within `timeout`;
            /// returns the incoming packets seen before, and the error text.
            pub async fn expect_closed(
                &mut self,
                timeout: Duration,
            ) -> (Vec<<$name as Types>::Packet>, String) {
                let mut seen = Vec::new();
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match self.try_next_incoming(left).await {
                        Ok(Some(packet)) => seen.push(packet),
                        Ok(None) => panic!("still connected after {timeout:?}; saw {seen:?}"),
                        Err(e) => return (seen, e),
                    }
                }
            }

            /// Sends DISCONNECT and waits (briefly) for the event loop to end.
            pub async fn disconnect(mut self) {
                self.client.disconnect().await.expect("queue DISCONNECT");
                let deadline = tokio::time::Instant::now() + PACKET_TIMEOUT;
                while let Ok(Some(Ok(_))) =
                    tokio::time::timeout_at(deadline, self.events.next()).await
                {}
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.task.abort();
            }
        }
    };
}

/// The rumqttc types each wrapper uses.
pub trait Types {
    /// `AsyncClient`.
    type Client;
    /// `MqttOptions`.
    type Options;
    /// `Event`.
    type Event;
    /// The incoming `Packet` enum.
    type Packet;
    /// `Publish`.
    type Publish;
    /// `ConnAck`.
    type ConnAck;
    /// `SubAck`.
    type SubAck;
    /// `QoS`.
    type QoS;
    /// The QoS with this number (3 and up: 2).
    fn qos(n: u8) -> Self::QoS;
}

impl Types for V4 {
    type Client = rumqttc::AsyncClient;
    type Options = rumqttc::MqttOptions;
    type Event = rumqttc::Event;
    type Packet = rumqttc::Packet;
    type Publish = rumqttc::Publish;
    type ConnAck = rumqttc::ConnAck;
    type SubAck = rumqttc::SubAck;
    type QoS = rumqttc::QoS;
    fn qos(n: u8) -> rumqttc::QoS {
        match n {
            0 => rumqttc::QoS::AtMostOnce,
            1 => rumqttc::QoS::AtLeastOnce,
            _ => rumqttc::QoS::ExactlyOnce,
        }
    }
}

impl Types for V5 {
    type Client = rumqttc::v5::AsyncClient;
    type Options = rumqttc::v5::MqttOptions;
    type Event = rumqttc::v5::Event;
    type Packet = rumqttc::v5::mqttbytes::v5::Packet;
    type Publish = rumqttc::v5::mqttbytes::v5::Publish;
    type ConnAck = rumqttc::v5::mqttbytes::v5::ConnAck;
    type SubAck = rumqttc::v5::mqttbytes::v5::SubAck;
    type QoS = rumqttc::v5::mqttbytes::QoS;
    fn qos(n: u8) -> rumqttc::v5::mqttbytes::QoS {
        match n {
            0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
        }
    }
}

rumqttc_client!(V4);
rumqttc_client!(V5);

/// rumqttc 3.1.1 options: clean session, keep alive 30 s, room for 1 MiB packets.
pub fn v4_options(broker: &Broker, client_id: &str) -> rumqttc::MqttOptions {
    let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", broker.mqtt_port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// rumqttc 5.0 options: clean start, keep alive 30 s.
pub fn v5_options(broker: &Broker, client_id: &str) -> rumqttc::v5::MqttOptions {
    let mut options = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", broker.mqtt_port);
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// A 3.1.1 client with [`v4_options`].
pub async fn v4(broker: &Broker, client_id: &str) -> V4 {
    V4::connect(v4_options(broker, client_id)).await.0
}

/// A 5.0 client with [`v5_options`].
pub async fn v5(broker: &Broker, client_id: &str) -> V5 {
    V5::connect(v5_options(broker, client_id)).await.0
}

/// A client id unique within this test process run (tests share a broker only within one
/// test, but mosquitto-mode runs may reuse ports).
pub fn unique_id(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}
