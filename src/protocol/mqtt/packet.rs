//! MQTT control packets of versions 3.1.1 and 5.0 as plain data.
//!
//! One type serves both versions: the 5.0-only parts (reason codes on acknowledgements,
//! properties, AUTH) are ignored when a packet is encoded as 3.1.1 and come out empty or zero
//! when one is decoded from 3.1.1. Strings and binary fields are `Bytes` slices of the read
//! buffer; strings have been checked to be UTF-8 without U+0000 when they come from the
//! decoder. Field names follow the 5.0 specification (`clean_start`, `reason_code`).

use bytes::Bytes;

/// The protocol versions the codec speaks, by their CONNECT protocol level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1, protocol level 4.
    V3_1_1,
    /// MQTT 5.0, protocol level 5.
    V5_0,
}

impl Version {
    /// The protocol level byte CONNECT carries.
    pub fn level(self) -> u8 {
        match self {
            Version::V3_1_1 => 4,
            Version::V5_0 => 5,
        }
    }
}

/// Quality of service of a message or a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// QoS 0: at most once.
    AtMostOnce = 0,
    /// QoS 1: at least once.
    AtLeastOnce = 1,
    /// QoS 2: exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS with this number, if it is 0, 1 or 2.
    pub fn from_bits(bits: u8) -> Option<QoS> {
        match bits {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A 5.0 reason code (or, in a 3.1.1 CONNACK, the connect return code 0–5). The codec checks
/// that a decoded code is one the packet type may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReasonCode(pub u8);

#[allow(missing_docs)] // The names are the specification's (5.0 §2.4, Table 2-6).
impl ReasonCode {
    pub const SUCCESS: ReasonCode = ReasonCode(0x00);
    pub const GRANTED_QOS_1: ReasonCode = ReasonCode(0x01);
    pub const GRANTED_QOS_2: ReasonCode = ReasonCode(0x02);
    pub const DISCONNECT_WITH_WILL_MESSAGE: ReasonCode = ReasonCode(0x04);
    pub const NO_MATCHING_SUBSCRIBERS: ReasonCode = ReasonCode(0x10);
    pub const NO_SUBSCRIPTION_EXISTED: ReasonCode = ReasonCode(0x11);
    pub const CONTINUE_AUTHENTICATION: ReasonCode = ReasonCode(0x18);
    pub const RE_AUTHENTICATE: ReasonCode = ReasonCode(0x19);
    pub const UNSPECIFIED_ERROR: ReasonCode = ReasonCode(0x80);
    pub const MALFORMED_PACKET: ReasonCode = ReasonCode(0x81);
    pub const PROTOCOL_ERROR: ReasonCode = ReasonCode(0x82);
    pub const IMPLEMENTATION_SPECIFIC_ERROR: ReasonCode = ReasonCode(0x83);
    pub const UNSUPPORTED_PROTOCOL_VERSION: ReasonCode = ReasonCode(0x84);
    pub const CLIENT_IDENTIFIER_NOT_VALID: ReasonCode = ReasonCode(0x85);
    pub const BAD_USER_NAME_OR_PASSWORD: ReasonCode = ReasonCode(0x86);
    pub const NOT_AUTHORIZED: ReasonCode = ReasonCode(0x87);
    pub const SERVER_UNAVAILABLE: ReasonCode = ReasonCode(0x88);
    pub const SERVER_BUSY: ReasonCode = ReasonCode(0x89);
    pub const BANNED: ReasonCode = ReasonCode(0x8A);
    pub const SERVER_SHUTTING_DOWN: ReasonCode = ReasonCode(0x8B);
    pub const BAD_AUTHENTICATION_METHOD: ReasonCode = ReasonCode(0x8C);
    pub const KEEP_ALIVE_TIMEOUT: ReasonCode = ReasonCode(0x8D);
    pub const SESSION_TAKEN_OVER: ReasonCode = ReasonCode(0x8E);
    pub const TOPIC_FILTER_INVALID: ReasonCode = ReasonCode(0x8F);
    pub const TOPIC_NAME_INVALID: ReasonCode = ReasonCode(0x90);
    pub const PACKET_IDENTIFIER_IN_USE: ReasonCode = ReasonCode(0x91);
    pub const PACKET_IDENTIFIER_NOT_FOUND: ReasonCode = ReasonCode(0x92);
    pub const RECEIVE_MAXIMUM_EXCEEDED: ReasonCode = ReasonCode(0x93);
    pub const TOPIC_ALIAS_INVALID: ReasonCode = ReasonCode(0x94);
    pub const PACKET_TOO_LARGE: ReasonCode = ReasonCode(0x95);
    pub const MESSAGE_RATE_TOO_HIGH: ReasonCode = ReasonCode(0x96);
    pub const QUOTA_EXCEEDED: ReasonCode = ReasonCode(0x97);
    pub const ADMINISTRATIVE_ACTION: ReasonCode = ReasonCode(0x98);
    pub const PAYLOAD_FORMAT_INVALID: ReasonCode = ReasonCode(0x99);
    pub const RETAIN_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9A);
    pub const QOS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9B);
    pub const USE_ANOTHER_SERVER: ReasonCode = ReasonCode(0x9C);
    pub const SERVER_MOVED: ReasonCode = ReasonCode(0x9D);
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9E);
    pub const CONNECTION_RATE_EXCEEDED: ReasonCode = ReasonCode(0x9F);
    pub const MAXIMUM_CONNECT_TIME: ReasonCode = ReasonCode(0xA0);
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xA1);
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xA2);

    /// 3.1.1 CONNACK return code 1: the server does not support the requested protocol level.
    pub const V3_UNACCEPTABLE_PROTOCOL_VERSION: ReasonCode = ReasonCode(0x01);
    /// 3.1.1 CONNACK return code 2.
    pub const V3_IDENTIFIER_REJECTED: ReasonCode = ReasonCode(0x02);
    /// 3.1.1 CONNACK return code 3.
    pub const V3_SERVER_UNAVAILABLE: ReasonCode = ReasonCode(0x03);
    /// 3.1.1 CONNACK return code 4.
    pub const V3_BAD_USER_NAME_OR_PASSWORD: ReasonCode = ReasonCode(0x04);
    /// 3.1.1 CONNACK return code 5.
    pub const V3_NOT_AUTHORIZED: ReasonCode = ReasonCode(0x05);
}

/// A 5.0 User Property: a name/value pair of UTF-8 strings. Names may repeat; order is kept.
pub type UserProperty = (Bytes, Bytes);

/// Everything that can follow a CONNECT or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT, client to server. Boxed: large, and sent once per connection.
    Connect(Box<Connect>),
    /// CONNACK, server to client. Boxed: large, and sent once per connection.
    ConnAck(Box<ConnAck>),
    /// PUBLISH, either direction.
    Publish(Publish),
    /// PUBACK: QoS 1 acknowledgement.
    PubAck(PubAck),
    /// PUBREC: QoS 2, part 1.
    PubRec(PubAck),
    /// PUBREL: QoS 2, part 2.
    PubRel(PubAck),
    /// PUBCOMP: QoS 2, part 3.
    PubComp(PubAck),
    /// SUBSCRIBE, client to server.
    Subscribe(Subscribe),
    /// SUBACK, server to client.
    SubAck(SubAck),
    /// UNSUBSCRIBE, client to server.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK, server to client.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT; in 3.1.1 client to server only, with no body. Boxed: sent once per
    /// connection, and inline it would make every packet value 104 bytes.
    Disconnect(Box<Disconnect>),
    /// AUTH, 5.0 only. Boxed: rare, and 128 bytes inline.
    Auth(Box<Auth>),
}

impl Packet {
    /// The control packet type number of the fixed header (1 = CONNECT … 15 = AUTH).
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }
}

/// CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// The protocol level the client asked for; replies are encoded in it.
    pub version: Version,
    /// Clean Start (5.0) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep Alive, in seconds; 0 turns it off.
    pub keep_alive_seconds: u16,
    /// Client Identifier; may be empty.
    pub client_id: Bytes,
    /// The Will Message, when the Will Flag is set.
    pub will: Option<Will>,
    /// User Name, when its flag is set.
    pub username: Option<Bytes>,
    /// Password (binary data), when its flag is set. In 3.1.1 only together with a user name.
    pub password: Option<Bytes>,
    /// 5.0 CONNECT properties.
    pub properties: ConnectProperties,
}

/// 5.0 CONNECT properties (§3.1.2.11).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// Session Expiry Interval (0x11), seconds.
    pub session_expiry_interval: Option<u32>,
    /// Receive Maximum (0x21), never 0.
    pub receive_maximum: Option<u16>,
    /// Maximum Packet Size (0x27), never 0.
    pub maximum_packet_size: Option<u32>,
    /// Topic Alias Maximum (0x22).
    pub topic_alias_maximum: Option<u16>,
    /// Request Response Information (0x19), 0 or 1.
    pub request_response_information: Option<u8>,
    /// Request Problem Information (0x17), 0 or 1.
    pub request_problem_information: Option<u8>,
    /// Authentication Method (0x15).
    pub authentication_method: Option<Bytes>,
    /// Authentication Data (0x16).
    pub authentication_data: Option<Bytes>,
    /// User Properties (0x26), in order.
    pub user_properties: Vec<UserProperty>,
}

/// The Will Message of a CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    /// Will Topic.
    pub topic: Bytes,
    /// Will Payload (binary data, at most 65535 bytes).
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// 5.0 Will Properties.
    pub properties: WillProperties,
}

/// 5.0 Will Properties (§3.1.3.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// Will Delay Interval (0x18), seconds.
    pub will_delay_interval: Option<u32>,
    /// Payload Format Indicator (0x01), 0 or 1.
    pub payload_format_indicator: Option<u8>,
    /// Message Expiry Interval (0x02), seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content Type (0x03).
    pub content_type: Option<Bytes>,
    /// Response Topic (0x08).
    pub response_topic: Option<Bytes>,
    /// Correlation Data (0x09).
    pub correlation_data: Option<Bytes>,
    /// User Properties (0x26), in order.
    pub user_properties: Vec<UserProperty>,
}

/// CONNACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// 5.0 Connect Reason Code, or the 3.1.1 connect return code (0–5).
    pub reason_code: ReasonCode,
    /// 5.0 CONNACK properties.
    pub properties: ConnAckProperties,
}

/// 5.0 CONNACK properties (§3.2.2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// Session Expiry Interval (0x11), seconds.
    pub session_expiry_interval: Option<u32>,
    /// Receive Maximum (0x21), never 0.
    pub receive_maximum: Option<u16>,
    /// Maximum QoS (0x24), 0 or 1.
    pub maximum_qos: Option<u8>,
    /// Retain Available (0x25), 0 or 1.
    pub retain_available: Option<u8>,
    /// Maximum Packet Size (0x27), never 0.
    pub maximum_packet_size: Option<u32>,
    /// Assigned Client Identifier (0x12).
    pub assigned_client_identifier: Option<Bytes>,
    /// Topic Alias Maximum (0x22).
    pub topic_alias_maximum: Option<u16>,
    /// Reason String (0x1F).
    pub reason_string: Option<Bytes>,
    /// Wildcard Subscription Available (0x28), 0 or 1.
    pub wildcard_subscription_available: Option<u8>,
    /// Subscription Identifiers Available (0x29), 0 or 1.
    pub subscription_identifiers_available: Option<u8>,
    /// Shared Subscription Available (0x2A), 0 or 1.
    pub shared_subscription_available: Option<u8>,
    /// Server Keep Alive (0x13), seconds.
    pub server_keep_alive: Option<u16>,
    /// Response Information (0x1A).
    pub response_information: Option<Bytes>,
    /// Server Reference (0x1C).
    pub server_reference: Option<Bytes>,
    /// Authentication Method (0x15).
    pub authentication_method: Option<Bytes>,
    /// Authentication Data (0x16).
    pub authentication_data: Option<Bytes>,
    /// User Properties (0x26), in order.
    pub user_properties: Vec<UserProperty>,
}

/// PUBLISH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// DUP: a re-delivery. Never set at QoS 0.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic Name; empty only in 5.0 with a Topic Alias.
    pub topic: Bytes,
    /// Packet Identifier: non-zero at QoS 1 and 2, 0 at QoS 0 (where the wire has none).
    pub packet_id: u16,
    /// Application message.
    pub payload: Bytes,
    /// 5.0 Topic Alias (0x23), never 0. Kept out of `properties` so that a publish with no
    /// other property (the common case, aliases included) allocates nothing.
    pub topic_alias: Option<u16>,
    /// The other 5.0 PUBLISH properties; `None` when there are none. Boxed: they are rare, and
    /// inline they tripled the size of every packet value the reader moves. The decoder never
    /// sets `topic_alias` inside them; the encoder writes `self.topic_alias` when it is set,
    /// else theirs.
    pub properties: Option<Box<PublishProperties>>,
}

/// 5.0 PUBLISH properties (§3.3.2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Payload Format Indicator (0x01), 0 or 1.
    pub payload_format_indicator: Option<u8>,
    /// Message Expiry Interval (0x02), seconds.
    pub message_expiry_interval: Option<u32>,
    /// Topic Alias (0x23), never 0.
    pub topic_alias: Option<u16>,
    /// Response Topic (0x08).
    pub response_topic: Option<Bytes>,
    /// Correlation Data (0x09).
    pub correlation_data: Option<Bytes>,
    /// User Properties (0x26), in order.
    pub user_properties: Vec<UserProperty>,
    /// Subscription Identifiers (0x0B), 1..=268,435,455 each, in order. Server to client only;
    /// the session rejects them from a client [MQTT-3.3.4-6].
    pub subscription_identifiers: Vec<u32>,
    /// Content Type (0x03).
    pub content_type: Option<Bytes>,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP: the same layout, told apart by [`Packet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubAck {
    /// Packet Identifier, non-zero.
    pub packet_id: u16,
    /// 5.0 reason code; [`ReasonCode::SUCCESS`] in 3.1.1.
    pub reason_code: ReasonCode,
    /// 5.0 properties.
    pub properties: AckProperties,
}

/// The properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckProperties {
    /// Reason String (0x1F).
    pub reason_string: Option<Bytes>,
    /// User Properties (0x26), in order.
    pub user_properties: Vec<UserProperty>,
}

impl AckProperties {
    /// True when there are no properties to send.
    pub fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }
}

/// SUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier, non-zero.
    pub packet_id: u16,
    /// Topic filters and their options, at least one.
    pub filters: Vec<(Bytes, SubscriptionOptions)>,
    /// 5.0 SUBSCRIBE properties.
    pub properties: SubscribeProperties,
}

/// The options byte after each SUBSCRIBE topic filter. In 3.1.1 only `qos` exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local (5.0).
    pub no_local: bool,
    /// Retain As Published (5.0).
    pub retain_as_published: bool,
    /// Retain Handling (5.0).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with this QoS and every 5.0 option at its default.
    pub fn with_qos(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }
}

/// 5.0 Retain Handling subscription option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetainHandling {
    /// 0: send retained messages when subscribing.
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist.
    SendAtNewSubscribe = 1,
    /// 2: never send them.
    DoNotSend = 2,
}

/// 5.0 SUBSCRIBE properties (§3.8.2.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// Subscription Identifier (0x0B), 1..=268,435,455.
    pub subscription_identifier: Option<u32>,
    /// User Properties (0x26), in order.
    pub user_properties: Vec<UserProperty>,
}

/// SUBACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    /// Packet Identifier, non-zero.
    pub packet_id: u16,
    /// One reason code (3.1.1: return code 0, 1, 2 or 0x80) per topic filter, in order.
    pub reason_codes: Vec<ReasonCode>,
    /// 5.0 properties.
    pub properties: AckProperties,
}

/// UNSUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier, non-zero.
    pub packet_id: u16,
    /// Topic filters, at least one.
    pub filters: Vec<Bytes>,
    /// 5.0 User Properties (0x26), the only UNSUBSCRIBE property.
    pub user_properties: Vec<UserProperty>,
}

/// UNSUBACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet Identifier, non-zero.
    pub packet_id: u16,
    /// 5.0: one reason code per topic filter. Empty in 3.1.1, which has none.
    pub reason_codes: Vec<ReasonCode>,
    /// 5.0 properties.
    pub properties: AckProperties,
}

/// DISCONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnect {
    /// 5.0 reason code; [`ReasonCode::SUCCESS`] (normal disconnection) in 3.1.1.
    pub reason_code: ReasonCode,
    /// 5.0 properties.
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A normal disconnection without properties: the only 3.1.1 DISCONNECT.
    pub fn normal() -> Disconnect {
        Disconnect { reason_code: ReasonCode::SUCCESS, properties: DisconnectProperties::default() }
    }
}

/// 5.0 DISCONNECT properties (§3.14.2.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    /// Session Expiry Interval (0x11), seconds.
    pub session_expiry_interval: Option<u32>,
    /// Reason String (0x1F).
    pub reason_string: Option<Bytes>,
    /// User Properties (0x26), in order.
    pub user_properties: Vec<UserProperty>,
    /// Server Reference (0x1C).
    pub server_reference: Option<Bytes>,
}

impl DisconnectProperties {
    /// True when there are no properties to send.
    pub fn is_empty(&self) -> bool {
        self.session_expiry_interval.is_none()
            && self.reason_string.is_none()
            && self.user_properties.is_empty()
            && self.server_reference.is_none()
    }
}

/// AUTH (5.0 only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    /// 0x00 Success, 0x18 Continue authentication or 0x19 Re-authenticate.
    pub reason_code: ReasonCode,
    /// AUTH properties.
    pub properties: AuthProperties,
}

/// 5.0 AUTH properties (§3.15.2.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthProperties {
    /// Authentication Method (0x15).
    pub authentication_method: Option<Bytes>,
    /// Authentication Data (0x16).
    pub authentication_data: Option<Bytes>,
    /// Reason String (0x1F).
    pub reason_string: Option<Bytes>,
    /// User Properties (0x26), in order.
    pub user_properties: Vec<UserProperty>,
}

impl AuthProperties {
    /// True when there are no properties to send.
    pub fn is_empty(&self) -> bool {
        self.authentication_method.is_none()
            && self.authentication_data.is_none()
            && self.reason_string.is_none()
            && self.user_properties.is_empty()
    }
}
