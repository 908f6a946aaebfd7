//! MQTT 3.1.1 / 5.0 codec: bytes -> [`Packet`] and back.
//!
//! Pure functions over buffers, no I/O. The fixed header is checked first: packet type and
//! flag bits from the first byte, then the Remaining Length; a packet whose total size is over
//! `max_packet_bytes` is rejected before its body is buffered. Only then is the body split off
//! the read buffer (`split_to().freeze()`) and parsed; every string, binary field and payload in
//! the packet is a slice of that frame, never a copy.
//!
//! The codec is stateless and direction-agnostic: it decodes server-to-client packets too, so
//! that encode -> decode round trips can check it. What depends on the session (first packet
//! must be CONNECT, topic aliases, receive maximum, which side may send a property) is the
//! session's job. CONNECT is decoded by its own protocol level, whatever `version` says, so the
//! first packet of a connection can be decoded before the version is known.

use super::packet::{
    AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    Disconnect, DisconnectProperties, Packet, PubAck, Publish, PublishProperties, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscribeProperties, SubscriptionOptions, UnsubAck,
    Unsubscribe, UserProperty, Version, Will, WillProperties,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

/// Largest Remaining Length a four-byte Variable Byte Integer can carry.
pub const REMAINING_LENGTH_MAX: u32 = 268_435_455;

/// Largest fixed header: one type byte and a four-byte Remaining Length.
pub const FIXED_HEADER_BYTES_MAX: usize = 5;

/// Why bytes could not be decoded. Every variant closes the connection; a 5.0 session first
/// sends [`DecodeError::reason_code`] in a DISCONNECT (or CONNACK, if CONNECT failed).
///
/// Where the specification numbers the rule, [`DecodeError::clause`] gives its 5.0 label and
/// [`DecodeError::clause_v3_1_1`] its 3.1.1 label: the two documents number many rules
/// differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A Variable Byte Integer longer than four bytes, or not in its shortest form.
    MalformedVarInt,
    /// A packet larger than the maximum packet size.
    PacketTooLarge,
    /// Packet type 0, or 15 (AUTH) in 3.1.1.
    ReservedPacketType,
    /// Fixed header flag bits other than those the packet type prescribes.
    ReservedFlags,
    /// A field, or the property block, runs past the end of its packet or block.
    Truncated,
    /// Bytes left over after the last field of a packet.
    TrailingBytes,
    /// A UTF-8 string that is not well-formed UTF-8.
    InvalidUtf8,
    /// A UTF-8 string containing U+0000.
    NullCharacter,
    /// CONNECT with a protocol name other than `MQTT` (or `MQIsdp`).
    InvalidProtocolName,
    /// CONNECT with a protocol level other than 4 or 5; MQTT 3.1 (`MQIsdp`, level 3) included.
    /// A session answers a 3.x client with the 3.1.1 CONNACK return code 0x01.
    UnsupportedProtocolVersion,
    /// CONNECT flags with the reserved bit 0 set.
    ConnectReservedFlag,
    /// CONNECT flags with Will QoS or Will Retain set but no Will Flag.
    WillFlagsWithoutWill,
    /// CONNECT flags with Will QoS 3.
    WillQosThree,
    /// 3.1.1 CONNECT with the Password Flag but not the User Name Flag.
    PasswordWithoutUsername,
    /// CONNACK acknowledge flags with bits 7-1 set.
    ConnAckReservedFlags,
    /// PUBLISH with both QoS bits set.
    QosThree,
    /// PUBLISH with DUP set at QoS 0.
    DupAtQosZero,
    /// A PUBLISH Topic Name containing `+` or `#`.
    TopicWildcard,
    /// An empty topic filter, or an empty Topic Name without a 5.0 Topic Alias.
    EmptyTopic,
    /// Packet Identifier 0 where one is required.
    ZeroPacketId,
    /// A property that may appear once appears twice.
    DuplicateProperty,
    /// A property identifier unknown, or not allowed in this packet type.
    InvalidPropertyId,
    /// A property value out of its range (0 where that is not allowed, a flag byte over 1).
    InvalidPropertyValue,
    /// A PUBLISH Topic Alias of 0.
    TopicAliasZero,
    /// CONNECT with Authentication Data but no Authentication Method.
    AuthenticationDataWithoutMethod,
    /// A reason code the packet type does not define.
    InvalidReasonCode,
    /// SUBSCRIBE without a topic filter.
    NoTopicFilters,
    /// UNSUBSCRIBE without a topic filter.
    NoUnsubscribeFilters,
    /// SUBSCRIBE options with reserved bits set (3.1.1: also QoS 3).
    SubscriptionOptionsReserved,
    /// 5.0 SUBSCRIBE options with Maximum QoS 3.
    SubscriptionQosThree,
    /// 5.0 SUBSCRIBE options with Retain Handling 3.
    RetainHandlingThree,
    /// SUBACK, or 5.0 UNSUBACK, without reason codes.
    NoReasonCodes,
}

impl DecodeError {
    /// The 5.0 reason code to close with: 0x81 Malformed Packet, 0x82 Protocol Error, 0x84
    /// Unsupported Protocol Version, 0x90 Topic Name Invalid or 0x95 Packet Too Large.
    pub fn reason_code(self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge => ReasonCode::PACKET_TOO_LARGE,
            InvalidProtocolName | UnsupportedProtocolVersion => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            TopicWildcard => ReasonCode::TOPIC_NAME_INVALID,
            TopicAliasZero => ReasonCode::TOPIC_ALIAS_INVALID,
            EmptyTopic
            | ZeroPacketId
            | DuplicateProperty
            | InvalidPropertyValue
            | NoTopicFilters
            | NoUnsubscribeFilters
            | SubscriptionQosThree
            | RetainHandlingThree
            | AuthenticationDataWithoutMethod => ReasonCode::PROTOCOL_ERROR,
            MalformedVarInt
            | ReservedPacketType
            | ReservedFlags
            | Truncated
            | TrailingBytes
            | InvalidUtf8
            | NullCharacter
            | ConnectReservedFlag
            | WillFlagsWithoutWill
            | WillQosThree
            | PasswordWithoutUsername
            | ConnAckReservedFlags
            | QosThree
            | DupAtQosZero
            | InvalidPropertyId
            | InvalidReasonCode
            | SubscriptionOptionsReserved
            | NoReasonCodes => ReasonCode::MALFORMED_PACKET,
        }
    }

    /// The MQTT 5.0 conformance label of the rule broken, if it has one.
    pub fn clause(self) -> Option<&'static str> {
        use DecodeError::*;
        Some(match self {
            MalformedVarInt => "MQTT-1.5.5-1",
            ReservedFlags => "MQTT-2.1.3-1",
            InvalidUtf8 => "MQTT-1.5.4-1",
            NullCharacter => "MQTT-1.5.4-2",
            InvalidProtocolName => "MQTT-3.1.2-1",
            UnsupportedProtocolVersion => "MQTT-3.1.2-2",
            ConnectReservedFlag => "MQTT-3.1.2-3",
            WillFlagsWithoutWill => "MQTT-3.1.2-11",
            WillQosThree => "MQTT-3.1.2-12",
            QosThree => "MQTT-3.3.1-4",
            DupAtQosZero => "MQTT-3.3.1-2",
            TopicWildcard => "MQTT-3.3.2-2",
            TopicAliasZero => "MQTT-3.3.2-8",
            EmptyTopic => "MQTT-4.7.3-1",
            ZeroPacketId => "MQTT-2.2.1-3",
            NoTopicFilters => "MQTT-3.8.3-2",
            NoUnsubscribeFilters => "MQTT-3.10.3-2",
            SubscriptionOptionsReserved => "MQTT-3.8.3-5",
            _ => return None,
        })
    }

    /// The MQTT 3.1.1 conformance label of the rule broken, if it has one.
    pub fn clause_v3_1_1(self) -> Option<&'static str> {
        use DecodeError::*;
        Some(match self {
            ReservedFlags => "MQTT-2.2.2-2",
            InvalidUtf8 => "MQTT-1.5.3-1",
            NullCharacter => "MQTT-1.5.3-2",
            InvalidProtocolName => "MQTT-3.1.2-1",
            UnsupportedProtocolVersion => "MQTT-3.1.2-2",
            ConnectReservedFlag => "MQTT-3.1.2-3",
            WillFlagsWithoutWill => "MQTT-3.1.2-13",
            WillQosThree => "MQTT-3.1.2-14",
            PasswordWithoutUsername => "MQTT-3.1.2-22",
            QosThree => "MQTT-3.3.1-4",
            DupAtQosZero => "MQTT-3.3.1-2",
            TopicWildcard => "MQTT-3.3.2-2",
            EmptyTopic => "MQTT-4.7.3-1",
            ZeroPacketId => "MQTT-2.3.1-1",
            NoTopicFilters => "MQTT-3.8.3-3",
            NoUnsubscribeFilters => "MQTT-3.10.3-2",
            SubscriptionOptionsReserved => "MQTT-3.8.3-4",
            _ => return None,
        })
    }

    /// What went wrong, in words.
    pub fn text(self) -> &'static str {
        use DecodeError::*;
        match self {
            MalformedVarInt => "variable byte integer too long or not minimal",
            PacketTooLarge => "packet larger than the maximum packet size",
            ReservedPacketType => "reserved packet type",
            ReservedFlags => "fixed header flags not as the packet type prescribes",
            Truncated => "field runs past the end of the packet",
            TrailingBytes => "bytes left after the last field",
            InvalidUtf8 => "string is not well-formed UTF-8",
            NullCharacter => "string contains U+0000",
            InvalidProtocolName => "protocol name is not MQTT",
            UnsupportedProtocolVersion => "unsupported protocol level",
            ConnectReservedFlag => "CONNECT reserved flag set",
            WillFlagsWithoutWill => "Will QoS or Will Retain set without Will Flag",
            WillQosThree => "Will QoS 3",
            PasswordWithoutUsername => "password flag without user name flag",
            ConnAckReservedFlags => "CONNACK reserved acknowledge flags set",
            QosThree => "PUBLISH with QoS 3",
            DupAtQosZero => "PUBLISH with DUP at QoS 0",
            TopicWildcard => "topic name contains a wildcard",
            EmptyTopic => "empty topic",
            ZeroPacketId => "packet identifier 0",
            DuplicateProperty => "property included more than once",
            InvalidPropertyId => "property not valid for this packet type",
            InvalidPropertyValue => "property value out of range",
            TopicAliasZero => "topic alias 0",
            AuthenticationDataWithoutMethod => "authentication data without authentication method",
            InvalidReasonCode => "reason code not valid for this packet type",
            NoTopicFilters => "SUBSCRIBE without topic filters",
            NoUnsubscribeFilters => "UNSUBSCRIBE without topic filters",
            SubscriptionOptionsReserved => "subscription options reserved bits set",
            SubscriptionQosThree => "subscription with maximum QoS 3",
            RetainHandlingThree => "subscription with retain handling 3",
            NoReasonCodes => "acknowledgement without reason codes",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.clause(), self.clause_v3_1_1()) {
            (Some(v5), Some(v3)) if v5 == v3 => write!(f, "[{v5}] {}", self.text()),
            (Some(v5), Some(v3)) => write!(f, "[{v5}, 3.1.1: {v3}] {}", self.text()),
            (Some(v5), None) => write!(f, "[{v5}] {}", self.text()),
            (None, Some(v3)) => write!(f, "[3.1.1: {v3}] {}", self.text()),
            (None, None) => f.write_str(self.text()),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one packet from the front of `buf`, removing its bytes. `Ok(None)` means more bytes
/// are needed; nothing is consumed then. `version` is the connection's protocol version; a
/// CONNECT is decoded by the level it carries instead, so before CONNECT any value will do.
/// `max_packet_bytes` bounds the whole packet, fixed header included (the 5.0 Maximum Packet
/// Size counts the same way).
pub fn decode(
    buf: &mut BytesMut,
    version: Version,
    max_packet_bytes: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let packet_type = first >> 4;
    check_fixed_flags(packet_type, first & 0x0F, version)?;
    let Some((remaining, length_bytes)) = parse_varint(&buf[1..])? else { return Ok(None) };
    let total = 1 + length_bytes + remaining as usize;
    if total > max_packet_bytes as usize {
        return Err(DecodeError::PacketTooLarge);
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    // advance, not slice: a slice would raise and drop the read buffer's reference count once
    // more per packet.
    let mut body = buf.split_to(total).freeze();
    body.advance(1 + length_bytes);
    let packet = decode_body(packet_type, first & 0x0F, body, version)?;
    debug_assert_eq!(packet.packet_type(), packet_type);
    Ok(Some(packet))
}

/// A QoS 0 PUBLISH with no flag set (no DUP, no RETAIN), in 5.0 with no properties, whose
/// topic takes [`decode`]'s common case (ASCII, no NUL, no wildcard), complete at the front of
/// a read buffer: spans of that buffer, found without consuming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishAt {
    /// The topic's span.
    pub topic: (usize, usize),
    /// The payload's span.
    pub payload: (usize, usize),
    /// Bytes of the whole packet.
    pub frame: usize,
}

/// The PUBLISH at the front of `buf` if it is of the kind [`PublishAt`] describes and
/// complete; `None` for anything else, which [`decode`] then reads (to the same packet, an
/// error or a wait for more bytes).
#[inline]
pub fn peek_publish(buf: &[u8], version: Version, max_packet_bytes: u32) -> Option<PublishAt> {
    if *buf.first()? != 0x30 {
        return None;
    }
    let (remaining, length_bytes) = parse_varint(&buf[1..]).ok()??;
    let start = 1 + length_bytes;
    let frame = start + remaining as usize;
    if frame > max_packet_bytes as usize || buf.len() < frame || remaining < 2 {
        return None;
    }
    let topic_len = usize::from(u16::from_be_bytes([buf[start], buf[start + 1]]));
    let topic = (start + 2, start + 2 + topic_len);
    if topic_len == 0 || topic.1 > frame {
        return None;
    }
    // As `Reader::topic_name`: one pass, no early exit, so it vectorises.
    let unusual = buf[topic.0..topic.1]
        .iter()
        .fold(false, |seen, &b| seen | (b == 0 || b == b'+' || b == b'#' || b >= 0x80));
    if unusual {
        return None;
    }
    let mut payload_start = topic.1;
    if version == Version::V5_0 {
        // A property length of 0: one byte.
        if payload_start >= frame || buf[payload_start] != 0 {
            return None;
        }
        payload_start += 1;
    }
    Some(PublishAt { topic, payload: (payload_start, frame), frame })
}

/// Asserts that the PUBLISH [`peek_publish`] found at the front of `data` is the packet
/// [`decode`] reads there: QoS 0, no flags, no alias or properties, the same topic and
/// payload, the same bytes consumed (unit tests and the `mqtt_decode` fuzz target).
#[cfg(any(test, feature = "fuzzing"))]
pub fn check_peek_publish(data: &[u8], version: Version, max: u32, at: &PublishAt) {
    let mut buf = BytesMut::from(data);
    let Ok(Some(Packet::Publish(publish))) = decode(&mut buf, version, max) else {
        panic!("{version:?}: peek_publish found a PUBLISH that decode does not read");
    };
    assert_eq!(publish.qos, QoS::AtMostOnce);
    assert!(!publish.retain && !publish.dup);
    assert!(publish.topic_alias.is_none() && publish.properties.is_none());
    assert_eq!(&publish.topic[..], &data[at.topic.0..at.topic.1]);
    assert_eq!(&publish.payload[..], &data[at.payload.0..at.payload.1]);
    assert_eq!(data.len() - buf.len(), at.frame, "{version:?}: consumed other bytes");
}

/// Appends `packet` encoded for `version` (a CONNECT uses its own `version`). 5.0-only parts
/// are left out in 3.1.1. Acknowledgements, DISCONNECT and AUTH use their short forms when the
/// reason code is 0 and there are no properties.
///
/// # Panics
/// On packets no peer could decode, which are bugs in the caller: a string or binary field over
/// 65,535 bytes, a packet over [`REMAINING_LENGTH_MAX`], AUTH in 3.1.1.
pub fn encode(packet: &Packet, version: Version, out: &mut BytesMut) {
    let version = match packet {
        Packet::Connect(connect) => connect.version,
        _ => version,
    };
    assert!(
        version == Version::V5_0 || !matches!(packet, Packet::Auth(_)),
        "AUTH exists only in MQTT 5.0"
    );
    let mut counter = Counter(0);
    write_body(packet, version, &mut counter);
    let remaining = counter.0;
    assert!(remaining <= REMAINING_LENGTH_MAX as usize, "packet body of {remaining} bytes");
    out.reserve(FIXED_HEADER_BYTES_MAX + remaining);
    let start = out.len();
    out.put_u8(packet.packet_type() << 4 | fixed_flags(packet));
    put_varint(out, remaining as u32);
    let body_start = out.len();
    write_body(packet, version, out);
    debug_assert_eq!(out.len() - body_start, remaining);
    debug_assert!(body_start - start <= FIXED_HEADER_BYTES_MAX);
}

/// The fixed-header fields of a PUBLISH, for [`encode_publish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishHeader {
    /// DUP.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Packet Identifier (0 at QoS 0).
    pub packet_id: u16,
}

/// Appends a PUBLISH built from borrowed parts: the bytes `encode(&Packet::Publish(..))` would
/// write, without building the packet (a broker sends one per delivery, and a `Publish` would
/// cost a refcount on its topic and payload).
///
/// # Panics
/// As [`encode`]: a topic over 65,535 bytes or a packet over [`REMAINING_LENGTH_MAX`].
pub fn encode_publish(
    out: &mut BytesMut,
    version: Version,
    header: PublishHeader,
    topic: &[u8],
    properties: &PublishProperties,
    payload: &[u8],
) {
    let v5 = version == Version::V5_0;
    let mut counter = Counter(0);
    write_publish(&mut counter, v5, topic, header.qos, header.packet_id, properties, &[]);
    put_publish_header(out, header, counter.0 + payload.len());
    write_publish(out, v5, topic, header.qos, header.packet_id, properties, payload);
}

/// [`encode_publish`] for a 3.1.1 session, which has no properties: the fixed header, the
/// topic, the packet id above QoS 0 and the payload, with no property set to build or count
/// (the broker's per-delivery path to 3.1.1 subscribers).
pub fn encode_publish_v3(out: &mut BytesMut, header: PublishHeader, topic: &[u8], payload: &[u8]) {
    let id_bytes = if header.qos == QoS::AtMostOnce { 0 } else { 2 };
    put_publish_header(out, header, 2 + topic.len() + id_bytes + payload.len());
    write_publish(out, false, topic, header.qos, header.packet_id, &NoProperties, payload);
}

/// A PUBLISH's fixed header for a body of `remaining` bytes, with room reserved for the body.
/// Always inlined: as a call it cost the delivery path 7 instructions a message (callgrind of
/// benches/publish_path.rs, MQTT -> MQTT 16 B: 1135 against 1128).
#[inline(always)]
fn put_publish_header(out: &mut BytesMut, header: PublishHeader, remaining: usize) {
    let PublishHeader { dup, qos, retain, .. } = header;
    assert!(remaining <= REMAINING_LENGTH_MAX as usize, "packet body of {remaining} bytes");
    out.reserve(FIXED_HEADER_BYTES_MAX + remaining);
    out.put_u8(3 << 4 | u8::from(dup) << 3 | (qos as u8) << 1 | u8::from(retain));
    put_varint(out, remaining as u32);
}

/// The property set of a 3.1.1 packet: nothing to write.
struct NoProperties;

impl WriteProperties for NoProperties {
    fn write<S: Sink>(&self, _: &mut S) {}
}

// ---------------------------------------------------------------------------------------------
// Fixed header

/// Checks the flag bits of the first byte, which alone identify a stream gone wrong.
fn check_fixed_flags(packet_type: u8, flags: u8, version: Version) -> Result<(), DecodeError> {
    let expected = match packet_type {
        0 => return Err(DecodeError::ReservedPacketType),
        15 if version == Version::V3_1_1 => return Err(DecodeError::ReservedPacketType),
        3 => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::QosThree);
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::DupAtQosZero);
            }
            return Ok(());
        }
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    if flags != expected {
        return Err(DecodeError::ReservedFlags);
    }
    Ok(())
}

fn fixed_flags(packet: &Packet) -> u8 {
    match packet {
        Packet::Publish(publish) => {
            u8::from(publish.dup) << 3 | (publish.qos as u8) << 1 | u8::from(publish.retain)
        }
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    }
}

/// Parses a Variable Byte Integer from the front of `bytes`: `(value, length)`, or `None` when
/// `bytes` ends before it does.
fn parse_varint(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value = 0u32;
    for (index, &byte) in bytes.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            // A last byte of 0 after others means the value fitted in fewer bytes.
            if index > 0 && byte == 0 {
                return Err(DecodeError::MalformedVarInt);
            }
            return Ok(Some((value, index + 1)));
        }
    }
    if bytes.len() >= 4 {
        return Err(DecodeError::MalformedVarInt);
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// Decoding bodies

fn decode_body(
    packet_type: u8,
    flags: u8,
    body: Bytes,
    version: Version,
) -> Result<Packet, DecodeError> {
    let mut r = Reader { bytes: body };
    let v5 = version == Version::V5_0;
    let packet = match packet_type {
        1 => Packet::Connect(Box::new(decode_connect(&mut r)?)),
        2 => Packet::ConnAck(Box::new(decode_connack(&mut r, v5)?)),
        3 => Packet::Publish(decode_publish(&mut r, flags, v5)?),
        4 => Packet::PubAck(decode_puback(&mut r, v5, PUBACK_REASONS)?),
        5 => Packet::PubRec(decode_puback(&mut r, v5, PUBACK_REASONS)?),
        6 => Packet::PubRel(decode_puback(&mut r, v5, PUBREL_REASONS)?),
        7 => Packet::PubComp(decode_puback(&mut r, v5, PUBREL_REASONS)?),
        8 => Packet::Subscribe(decode_subscribe(&mut r, v5)?),
        9 => {
            let packet_id = r.packet_id()?;
            let properties = if v5 { r.properties()? } else { AckProperties::default() };
            let allowed = if v5 { SUBACK_REASONS } else { SUBACK_RETURN_CODES };
            let reason_codes = r.reason_codes(allowed)?;
            Packet::SubAck(SubAck { packet_id, reason_codes, properties })
        }
        10 => {
            let packet_id = r.packet_id()?;
            let users: UserProperties = if v5 { r.properties()? } else { Default::default() };
            let mut filters = Vec::new();
            while !r.is_empty() {
                filters.push(r.topic_filter()?);
            }
            if filters.is_empty() {
                return Err(DecodeError::NoUnsubscribeFilters);
            }
            Packet::Unsubscribe(Unsubscribe { packet_id, filters, user_properties: users.0 })
        }
        11 => {
            let packet_id = r.packet_id()?;
            let (properties, reason_codes) = if v5 {
                (r.properties()?, r.reason_codes(UNSUBACK_REASONS)?)
            } else {
                (AckProperties::default(), Vec::new())
            };
            Packet::UnsubAck(UnsubAck { packet_id, reason_codes, properties })
        }
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 if !v5 => Packet::Disconnect(Box::new(Disconnect::normal())),
        14 => {
            let reason_code = r.optional_reason(DISCONNECT_REASONS)?;
            let properties = r.optional_properties()?;
            Packet::Disconnect(Box::new(Disconnect { reason_code, properties }))
        }
        _ => {
            debug_assert_eq!(packet_type, 15);
            let reason_code = r.optional_reason(AUTH_REASONS)?;
            let properties = r.optional_properties()?;
            Packet::Auth(Box::new(Auth { reason_code, properties }))
        }
    };
    r.finish()?;
    Ok(packet)
}

fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.string()?;
    let level = r.u8()?;
    let version = match (&name[..], level) {
        (b"MQTT", 4) => Version::V3_1_1,
        (b"MQTT", 5) => Version::V5_0,
        (b"MQTT", _) | (b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocolVersion),
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let v5 = version == Version::V5_0;
    let flags = r.u8()?;
    if flags & 0b1 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let will_flag = flags & 0b100 != 0;
    let will_qos_bits = (flags >> 3) & 0b11;
    let will_retain = flags & 0b10_0000 != 0;
    let password_flag = flags & 0b100_0000 != 0;
    let username_flag = flags & 0b1000_0000 != 0;
    if !will_flag && (will_qos_bits != 0 || will_retain) {
        return Err(DecodeError::WillFlagsWithoutWill);
    }
    let will_qos = QoS::from_bits(will_qos_bits).ok_or(DecodeError::WillQosThree)?;
    if !v5 && password_flag && !username_flag {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive_seconds = r.u16()?;
    let properties: ConnectProperties = if v5 { r.properties()? } else { Default::default() };
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        return Err(DecodeError::AuthenticationDataWithoutMethod);
    }
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 { r.properties()? } else { WillProperties::default() };
        let topic = r.string()?;
        let payload = r.binary()?;
        Some(Will { topic, payload, qos: will_qos, retain: will_retain, properties })
    } else {
        None
    };
    let username = if username_flag { Some(r.string()?) } else { None };
    let password = if password_flag { Some(r.binary()?) } else { None };
    Ok(Connect {
        version,
        clean_start: flags & 0b10 != 0,
        keep_alive_seconds,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn decode_connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::ConnAckReservedFlags);
    }
    let reason_code = r.reason_code(if v5 { CONNACK_REASONS } else { CONNACK_RETURN_CODES })?;
    let properties = if v5 { r.properties()? } else { ConnAckProperties::default() };
    Ok(ConnAck { session_present: flags == 1, reason_code, properties })
}

fn decode_publish(r: &mut Reader, flags: u8, v5: bool) -> Result<Publish, DecodeError> {
    let qos = QoS::from_bits((flags >> 1) & 0b11).ok_or(DecodeError::QosThree)?;
    let topic = r.topic_name()?;
    let packet_id = if qos == QoS::AtMostOnce { 0 } else { r.packet_id()? };
    let (topic_alias, properties) = if v5 {
        let mut properties: PublishProperties = r.properties()?;
        let alias = properties.topic_alias.take();
        (alias, (properties != PublishProperties::default()).then(|| Box::new(properties)))
    } else {
        (None, None)
    };
    if topic.is_empty() && topic_alias.is_none() {
        return Err(DecodeError::EmptyTopic);
    }
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b1 != 0,
        topic,
        packet_id,
        payload: r.rest(),
        topic_alias,
        properties,
    })
}

fn decode_puback(r: &mut Reader, v5: bool, allowed: &[u8]) -> Result<PubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    if !v5 {
        return Ok(PubAck {
            packet_id,
            reason_code: ReasonCode::SUCCESS,
            properties: AckProperties::default(),
        });
    }
    let reason_code = r.optional_reason(allowed)?;
    let properties = r.optional_properties()?;
    Ok(PubAck { packet_id, reason_code, properties })
}

fn decode_subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if v5 { r.properties()? } else { SubscribeProperties::default() };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.topic_filter()?;
        let options = subscription_options(r.u8()?, v5)?;
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters);
    }
    Ok(Subscribe { packet_id, filters, properties })
}

fn subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
    if byte & reserved != 0 {
        return Err(DecodeError::SubscriptionOptionsReserved);
    }
    let qos = match QoS::from_bits(byte & 0b11) {
        Some(qos) => qos,
        None if v5 => return Err(DecodeError::SubscriptionQosThree),
        None => return Err(DecodeError::SubscriptionOptionsReserved),
    };
    let retain_handling = match (byte >> 4) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendAtNewSubscribe,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::RetainHandlingThree),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0b100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

// Reason codes each packet type may carry (5.0 §3.x; 3.1.1 return codes where they differ).
const CONNACK_RETURN_CODES: &[u8] = &[0, 1, 2, 3, 4, 5];
const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
const SUBACK_RETURN_CODES: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const SUBACK_REASONS: &[u8] =
    &[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2];
const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];

/// A cursor over one packet body (or one property block).
struct Reader {
    bytes: Bytes,
}

/// The rules of a UTF-8 Encoded String [MQTT-1.5.4-1/2]: well-formed, no U+0000.
fn check_string(text: &[u8]) -> Result<(), DecodeError> {
    if std::str::from_utf8(text).is_err() {
        return Err(DecodeError::InvalidUtf8);
    }
    if memchr::memchr(0, text).is_some() {
        return Err(DecodeError::NullCharacter);
    }
    Ok(())
}

impl Reader {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    fn take(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        if len > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(self.bytes.split_to(len))
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.bytes)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let byte = *self.bytes.first().ok_or(DecodeError::Truncated)?;
        self.bytes.advance(1);
        Ok(byte)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let field = self.bytes.get(..2).ok_or(DecodeError::Truncated)?;
        let value = u16::from_be_bytes([field[0], field[1]]);
        self.bytes.advance(2);
        Ok(value)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let field = self.bytes.get(..4).ok_or(DecodeError::Truncated)?;
        let value = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
        self.bytes.advance(4);
        Ok(value)
    }

    fn varint(&mut self) -> Result<u32, DecodeError> {
        let (value, len) = parse_varint(&self.bytes)?.ok_or(DecodeError::Truncated)?;
        self.bytes.advance(len);
        Ok(value)
    }

    /// Binary Data: a two-byte length and that many bytes.
    fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// UTF-8 Encoded String [MQTT-1.5.4-1/2]: well-formed, no U+0000.
    fn string(&mut self) -> Result<Bytes, DecodeError> {
        let text = self.binary()?;
        check_string(&text)?;
        Ok(text)
    }

    /// A PUBLISH Topic Name: a UTF-8 Encoded String without wildcards [MQTT-3.3.2-2]. One
    /// pass over the bytes finds the common case (ASCII, no NUL, no `+`/`#`); anything else
    /// takes [`check_string`] and then the wildcard check, so the error is the same.
    fn topic_name(&mut self) -> Result<Bytes, DecodeError> {
        let text = self.binary()?;
        let unusual = text
            .iter()
            .fold(false, |seen, &b| seen | (b == 0 || b == b'+' || b == b'#' || b >= 0x80));
        if unusual {
            check_string(&text)?;
            if text.iter().any(|&b| b == b'+' || b == b'#') {
                return Err(DecodeError::TopicWildcard);
            }
        }
        Ok(text)
    }

    fn topic_filter(&mut self) -> Result<Bytes, DecodeError> {
        let filter = self.string()?;
        if filter.is_empty() {
            return Err(DecodeError::EmptyTopic);
        }
        Ok(filter)
    }

    fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::ZeroPacketId),
            id => Ok(id),
        }
    }

    fn reason_code(&mut self, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
        let code = self.u8()?;
        if !allowed.contains(&code) {
            return Err(DecodeError::InvalidReasonCode);
        }
        Ok(ReasonCode(code))
    }

    /// A reason code that may be left out (then it is 0x00 Success).
    fn optional_reason(&mut self, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
        if self.is_empty() {
            return Ok(ReasonCode::SUCCESS);
        }
        self.reason_code(allowed)
    }

    /// The rest of the body as reason codes, at least one.
    fn reason_codes(&mut self, allowed: &[u8]) -> Result<Vec<ReasonCode>, DecodeError> {
        let mut codes = Vec::with_capacity(self.bytes.len());
        while !self.is_empty() {
            codes.push(self.reason_code(allowed)?);
        }
        if codes.is_empty() {
            return Err(DecodeError::NoReasonCodes);
        }
        Ok(codes)
    }

    /// A property block: its length, then identifier/value pairs.
    fn properties<P: ReadProperty + Default>(&mut self) -> Result<P, DecodeError> {
        let len = self.varint()?;
        let mut block = Reader { bytes: self.take(len as usize)? };
        let mut properties = P::default();
        while !block.is_empty() {
            let id = block.varint()?;
            properties.read_property(id, &mut block)?;
        }
        Ok(properties)
    }

    /// A property block that may be left out at the end of the packet (then it is empty).
    fn optional_properties<P: ReadProperty + Default>(&mut self) -> Result<P, DecodeError> {
        if self.is_empty() {
            return Ok(P::default());
        }
        self.properties()
    }

    /// A Byte property that is 0 or 1.
    fn flag_byte(&mut self) -> Result<u8, DecodeError> {
        match self.u8()? {
            flag @ (0 | 1) => Ok(flag),
            _ => Err(DecodeError::InvalidPropertyValue),
        }
    }

    fn nonzero_u16(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::InvalidPropertyValue),
            value => Ok(value),
        }
    }

    fn nonzero_u32(&mut self) -> Result<u32, DecodeError> {
        match self.u32()? {
            0 => Err(DecodeError::InvalidPropertyValue),
            value => Ok(value),
        }
    }

    fn subscription_identifier(&mut self) -> Result<u32, DecodeError> {
        match self.varint()? {
            0 => Err(DecodeError::InvalidPropertyValue),
            value => Ok(value),
        }
    }

    fn user_property(&mut self) -> Result<UserProperty, DecodeError> {
        Ok((self.string()?, self.string()?))
    }
}

// Property identifiers (5.0 §2.2.2.2, Table 2-4).
const PAYLOAD_FORMAT_INDICATOR: u32 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u32 = 0x02;
const CONTENT_TYPE: u32 = 0x03;
const RESPONSE_TOPIC: u32 = 0x08;
const CORRELATION_DATA: u32 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u32 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u32 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u32 = 0x12;
const SERVER_KEEP_ALIVE: u32 = 0x13;
const AUTHENTICATION_METHOD: u32 = 0x15;
const AUTHENTICATION_DATA: u32 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u32 = 0x17;
const WILL_DELAY_INTERVAL: u32 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u32 = 0x19;
const RESPONSE_INFORMATION: u32 = 0x1A;
const SERVER_REFERENCE: u32 = 0x1C;
const REASON_STRING: u32 = 0x1F;
const RECEIVE_MAXIMUM: u32 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u32 = 0x22;
const TOPIC_ALIAS: u32 = 0x23;
const MAXIMUM_QOS: u32 = 0x24;
const RETAIN_AVAILABLE: u32 = 0x25;
const USER_PROPERTY: u32 = 0x26;
const MAXIMUM_PACKET_SIZE: u32 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u32 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u32 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u32 = 0x2A;

/// A property set that reads the properties its packet type allows.
trait ReadProperty {
    /// Reads the value of property `id` from `r` into `self`. An identifier the packet type
    /// does not allow is a Malformed Packet (5.0 §2.2.2.2).
    fn read_property(&mut self, id: u32, r: &mut Reader) -> Result<(), DecodeError>;
}

/// Stores a repeatable property, keeping the order.
fn push<T>(list: &mut Vec<T>, value: T) -> Result<(), DecodeError> {
    list.push(value);
    Ok(())
}

/// Stores a single-occurrence property: "It is a Protocol Error to include X more than once".
fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty);
    }
    *slot = Some(value);
    Ok(())
}

impl ReadProperty for ConnectProperties {
    fn read_property(&mut self, id: u32, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            SESSION_EXPIRY_INTERVAL => once(&mut self.session_expiry_interval, r.u32()?),
            RECEIVE_MAXIMUM => once(&mut self.receive_maximum, r.nonzero_u16()?),
            MAXIMUM_PACKET_SIZE => once(&mut self.maximum_packet_size, r.nonzero_u32()?),
            TOPIC_ALIAS_MAXIMUM => once(&mut self.topic_alias_maximum, r.u16()?),
            REQUEST_RESPONSE_INFORMATION => {
                once(&mut self.request_response_information, r.flag_byte()?)
            }
            REQUEST_PROBLEM_INFORMATION => {
                once(&mut self.request_problem_information, r.flag_byte()?)
            }
            AUTHENTICATION_METHOD => once(&mut self.authentication_method, r.string()?),
            AUTHENTICATION_DATA => once(&mut self.authentication_data, r.binary()?),
            USER_PROPERTY => push(&mut self.user_properties, r.user_property()?),
            _ => Err(DecodeError::InvalidPropertyId),
        }
    }
}

impl ReadProperty for WillProperties {
    fn read_property(&mut self, id: u32, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            WILL_DELAY_INTERVAL => once(&mut self.will_delay_interval, r.u32()?),
            PAYLOAD_FORMAT_INDICATOR => once(&mut self.payload_format_indicator, r.flag_byte()?),
            MESSAGE_EXPIRY_INTERVAL => once(&mut self.message_expiry_interval, r.u32()?),
            CONTENT_TYPE => once(&mut self.content_type, r.string()?),
            RESPONSE_TOPIC => once(&mut self.response_topic, r.string()?),
            CORRELATION_DATA => once(&mut self.correlation_data, r.binary()?),
            USER_PROPERTY => push(&mut self.user_properties, r.user_property()?),
            _ => Err(DecodeError::InvalidPropertyId),
        }
    }
}

impl ReadProperty for ConnAckProperties {
    fn read_property(&mut self, id: u32, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            SESSION_EXPIRY_INTERVAL => once(&mut self.session_expiry_interval, r.u32()?),
            RECEIVE_MAXIMUM => once(&mut self.receive_maximum, r.nonzero_u16()?),
            MAXIMUM_QOS => once(&mut self.maximum_qos, r.flag_byte()?),
            RETAIN_AVAILABLE => once(&mut self.retain_available, r.flag_byte()?),
            MAXIMUM_PACKET_SIZE => once(&mut self.maximum_packet_size, r.nonzero_u32()?),
            ASSIGNED_CLIENT_IDENTIFIER => once(&mut self.assigned_client_identifier, r.string()?),
            TOPIC_ALIAS_MAXIMUM => once(&mut self.topic_alias_maximum, r.u16()?),
            REASON_STRING => once(&mut self.reason_string, r.string()?),
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                once(&mut self.wildcard_subscription_available, r.flag_byte()?)
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                once(&mut self.subscription_identifiers_available, r.flag_byte()?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                once(&mut self.shared_subscription_available, r.flag_byte()?)
            }
            SERVER_KEEP_ALIVE => once(&mut self.server_keep_alive, r.u16()?),
            RESPONSE_INFORMATION => once(&mut self.response_information, r.string()?),
            SERVER_REFERENCE => once(&mut self.server_reference, r.string()?),
            AUTHENTICATION_METHOD => once(&mut self.authentication_method, r.string()?),
            AUTHENTICATION_DATA => once(&mut self.authentication_data, r.binary()?),
            USER_PROPERTY => push(&mut self.user_properties, r.user_property()?),
            _ => Err(DecodeError::InvalidPropertyId),
        }
    }
}

impl ReadProperty for PublishProperties {
    fn read_property(&mut self, id: u32, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            PAYLOAD_FORMAT_INDICATOR => once(&mut self.payload_format_indicator, r.flag_byte()?),
            MESSAGE_EXPIRY_INTERVAL => once(&mut self.message_expiry_interval, r.u32()?),
            TOPIC_ALIAS => match r.u16()? {
                0 => Err(DecodeError::TopicAliasZero),
                alias => once(&mut self.topic_alias, alias),
            },
            RESPONSE_TOPIC => once(&mut self.response_topic, r.string()?),
            CORRELATION_DATA => once(&mut self.correlation_data, r.binary()?),
            USER_PROPERTY => push(&mut self.user_properties, r.user_property()?),
            SUBSCRIPTION_IDENTIFIER => {
                push(&mut self.subscription_identifiers, r.subscription_identifier()?)
            }
            CONTENT_TYPE => once(&mut self.content_type, r.string()?),
            _ => Err(DecodeError::InvalidPropertyId),
        }
    }
}

impl ReadProperty for AckProperties {
    fn read_property(&mut self, id: u32, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            REASON_STRING => once(&mut self.reason_string, r.string()?),
            USER_PROPERTY => push(&mut self.user_properties, r.user_property()?),
            _ => Err(DecodeError::InvalidPropertyId),
        }
    }
}

impl ReadProperty for SubscribeProperties {
    fn read_property(&mut self, id: u32, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            SUBSCRIPTION_IDENTIFIER => {
                once(&mut self.subscription_identifier, r.subscription_identifier()?)
            }
            USER_PROPERTY => push(&mut self.user_properties, r.user_property()?),
            _ => Err(DecodeError::InvalidPropertyId),
        }
    }
}

/// UNSUBSCRIBE's property block, which holds User Properties only.
#[derive(Default)]
struct UserProperties(Vec<UserProperty>);

impl ReadProperty for UserProperties {
    fn read_property(&mut self, id: u32, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            USER_PROPERTY => push(&mut self.0, r.user_property()?),
            _ => Err(DecodeError::InvalidPropertyId),
        }
    }
}

impl ReadProperty for DisconnectProperties {
    fn read_property(&mut self, id: u32, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            SESSION_EXPIRY_INTERVAL => once(&mut self.session_expiry_interval, r.u32()?),
            REASON_STRING => once(&mut self.reason_string, r.string()?),
            USER_PROPERTY => push(&mut self.user_properties, r.user_property()?),
            SERVER_REFERENCE => once(&mut self.server_reference, r.string()?),
            _ => Err(DecodeError::InvalidPropertyId),
        }
    }
}

impl ReadProperty for AuthProperties {
    fn read_property(&mut self, id: u32, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            AUTHENTICATION_METHOD => once(&mut self.authentication_method, r.string()?),
            AUTHENTICATION_DATA => once(&mut self.authentication_data, r.binary()?),
            REASON_STRING => once(&mut self.reason_string, r.string()?),
            USER_PROPERTY => push(&mut self.user_properties, r.user_property()?),
            _ => Err(DecodeError::InvalidPropertyId),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding bodies

/// Where encoded bytes go: the output buffer, or a counter that sizes a body or property
/// block before its length prefix is written.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.put_slice(bytes);
    }
}

struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

fn write_body<S: Sink>(packet: &Packet, version: Version, s: &mut S) {
    let v5 = version == Version::V5_0;
    match packet {
        Packet::Connect(connect) => write_connect(connect, s),
        Packet::ConnAck(connack) => {
            put_u8(s, u8::from(connack.session_present));
            put_u8(s, connack.reason_code.0);
            if v5 {
                put_properties(s, &connack.properties);
            }
        }
        Packet::Publish(p) => {
            let properties =
                WithAlias { properties: p.properties.as_deref(), alias: p.topic_alias };
            write_publish(s, v5, &p.topic, p.qos, p.packet_id, &properties, &p.payload)
        }
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
            put_u16(s, ack.packet_id);
            let empty = ack.properties.is_empty();
            if v5 && (ack.reason_code != ReasonCode::SUCCESS || !empty) {
                put_u8(s, ack.reason_code.0);
                if !empty {
                    put_properties(s, &ack.properties);
                }
            }
        }
        Packet::Subscribe(subscribe) => {
            put_u16(s, subscribe.packet_id);
            if v5 {
                put_properties(s, &subscribe.properties);
            }
            for (filter, options) in &subscribe.filters {
                put_string(s, filter);
                put_u8(s, options_byte(options, v5));
            }
        }
        Packet::SubAck(suback) => {
            put_u16(s, suback.packet_id);
            if v5 {
                put_properties(s, &suback.properties);
            }
            for code in &suback.reason_codes {
                put_u8(s, code.0);
            }
        }
        Packet::Unsubscribe(unsubscribe) => {
            put_u16(s, unsubscribe.packet_id);
            if v5 {
                put_properties(s, &UserPropertiesRef(&unsubscribe.user_properties));
            }
            for filter in &unsubscribe.filters {
                put_string(s, filter);
            }
        }
        Packet::UnsubAck(unsuback) => {
            put_u16(s, unsuback.packet_id);
            if v5 {
                put_properties(s, &unsuback.properties);
                for code in &unsuback.reason_codes {
                    put_u8(s, code.0);
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(disconnect) => {
            let empty = disconnect.properties.is_empty();
            if v5 && (disconnect.reason_code != ReasonCode::SUCCESS || !empty) {
                put_u8(s, disconnect.reason_code.0);
                if !empty {
                    put_properties(s, &disconnect.properties);
                }
            }
        }
        Packet::Auth(auth) => {
            // Only the form with neither reason code nor properties is spelled out for AUTH
            // (5.0 §3.15.2.1); otherwise both are written, even an empty property block.
            if auth.reason_code != ReasonCode::SUCCESS || !auth.properties.is_empty() {
                put_u8(s, auth.reason_code.0);
                put_properties(s, &auth.properties);
            }
        }
    }
}

fn write_connect<S: Sink>(connect: &Connect, s: &mut S) {
    let v5 = connect.version == Version::V5_0;
    debug_assert!(
        v5 || connect.password.is_none() || connect.username.is_some(),
        "[MQTT-3.1.2-22] 3.1.1 password without user name"
    );
    put_string(s, b"MQTT");
    put_u8(s, connect.version.level());
    let mut flags = u8::from(connect.clean_start) << 1;
    if let Some(will) = &connect.will {
        flags |= 0b100 | (will.qos as u8) << 3 | u8::from(will.retain) << 5;
    }
    flags |= u8::from(connect.password.is_some()) << 6;
    flags |= u8::from(connect.username.is_some()) << 7;
    put_u8(s, flags);
    put_u16(s, connect.keep_alive_seconds);
    if v5 {
        put_properties(s, &connect.properties);
    }
    put_string(s, &connect.client_id);
    if let Some(will) = &connect.will {
        if v5 {
            put_properties(s, &will.properties);
        }
        put_string(s, &will.topic);
        put_binary(s, &will.payload);
    }
    if let Some(username) = &connect.username {
        put_string(s, username);
    }
    if let Some(password) = &connect.password {
        put_binary(s, password);
    }
}

fn options_byte(options: &SubscriptionOptions, v5: bool) -> u8 {
    let mut byte = options.qos as u8;
    if v5 {
        byte |= u8::from(options.no_local) << 2;
        byte |= u8::from(options.retain_as_published) << 3;
        byte |= (options.retain_handling as u8) << 4;
    }
    byte
}

fn put_u8<S: Sink>(s: &mut S, value: u8) {
    s.put(&[value]);
}

fn put_u16<S: Sink>(s: &mut S, value: u16) {
    s.put(&value.to_be_bytes());
}

fn put_u32<S: Sink>(s: &mut S, value: u32) {
    s.put(&value.to_be_bytes());
}

fn put_varint<S: Sink>(s: &mut S, mut value: u32) {
    assert!(value <= REMAINING_LENGTH_MAX, "variable byte integer {value} too large");
    let mut bytes = [0u8; 4];
    let mut len = 0;
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        bytes[len] = byte;
        len += 1;
        if value == 0 {
            break;
        }
    }
    s.put(&bytes[..len]);
}

fn put_binary<S: Sink>(s: &mut S, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("string or binary field over 65,535 bytes");
    put_u16(s, len);
    s.put(bytes);
}

fn put_string<S: Sink>(s: &mut S, text: &[u8]) {
    debug_assert!(std::str::from_utf8(text).is_ok(), "[MQTT-1.5.4-1]");
    put_binary(s, text);
}

fn write_publish<S: Sink, P: WriteProperties>(
    s: &mut S,
    v5: bool,
    topic: &[u8],
    qos: QoS,
    packet_id: u16,
    properties: &P,
    payload: &[u8],
) {
    put_string(s, topic);
    if qos == QoS::AtMostOnce {
        debug_assert_eq!(packet_id, 0, "QoS 0 PUBLISH has no packet id");
    } else {
        debug_assert_ne!(packet_id, 0, "[MQTT-2.2.1-3]");
        put_u16(s, packet_id);
    }
    if v5 {
        put_properties(s, properties);
    }
    s.put(payload);
}

/// A property set that writes its properties, in identifier order.
trait WriteProperties {
    fn write<S: Sink>(&self, s: &mut S);
}

/// Writes a property block: its length, then the properties.
fn put_properties<S: Sink, P: WriteProperties>(s: &mut S, properties: &P) {
    let mut counter = Counter(0);
    properties.write(&mut counter);
    put_varint(s, u32::try_from(counter.0).expect("property block over 4 GiB"));
    properties.write(s);
}

fn property_u8<S: Sink>(s: &mut S, id: u32, value: Option<u8>) {
    if let Some(value) = value {
        put_varint(s, id);
        put_u8(s, value);
    }
}

fn property_u16<S: Sink>(s: &mut S, id: u32, value: Option<u16>) {
    if let Some(value) = value {
        put_varint(s, id);
        put_u16(s, value);
    }
}

fn property_u32<S: Sink>(s: &mut S, id: u32, value: Option<u32>) {
    if let Some(value) = value {
        put_varint(s, id);
        put_u32(s, value);
    }
}

fn property_string<S: Sink>(s: &mut S, id: u32, value: &Option<Bytes>) {
    if let Some(value) = value {
        put_varint(s, id);
        put_string(s, value);
    }
}

fn property_binary<S: Sink>(s: &mut S, id: u32, value: &Option<Bytes>) {
    if let Some(value) = value {
        put_varint(s, id);
        put_binary(s, value);
    }
}

fn property_users<S: Sink>(s: &mut S, users: &[UserProperty]) {
    for (name, value) in users {
        put_varint(s, USER_PROPERTY);
        put_string(s, name);
        put_string(s, value);
    }
}

impl WriteProperties for ConnectProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        property_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        property_string(s, AUTHENTICATION_METHOD, &self.authentication_method);
        property_binary(s, AUTHENTICATION_DATA, &self.authentication_data);
        property_u8(s, REQUEST_PROBLEM_INFORMATION, self.request_problem_information);
        property_u8(s, REQUEST_RESPONSE_INFORMATION, self.request_response_information);
        property_u16(s, RECEIVE_MAXIMUM, self.receive_maximum);
        property_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        property_users(s, &self.user_properties);
        property_u32(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
    }
}

impl WriteProperties for WillProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        property_u8(s, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        property_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        property_string(s, CONTENT_TYPE, &self.content_type);
        property_string(s, RESPONSE_TOPIC, &self.response_topic);
        property_binary(s, CORRELATION_DATA, &self.correlation_data);
        property_u32(s, WILL_DELAY_INTERVAL, self.will_delay_interval);
        property_users(s, &self.user_properties);
    }
}

impl WriteProperties for ConnAckProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        property_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        property_string(s, ASSIGNED_CLIENT_IDENTIFIER, &self.assigned_client_identifier);
        property_u16(s, SERVER_KEEP_ALIVE, self.server_keep_alive);
        property_string(s, AUTHENTICATION_METHOD, &self.authentication_method);
        property_binary(s, AUTHENTICATION_DATA, &self.authentication_data);
        property_string(s, RESPONSE_INFORMATION, &self.response_information);
        property_string(s, SERVER_REFERENCE, &self.server_reference);
        property_string(s, REASON_STRING, &self.reason_string);
        property_u16(s, RECEIVE_MAXIMUM, self.receive_maximum);
        property_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        property_u8(s, MAXIMUM_QOS, self.maximum_qos);
        property_u8(s, RETAIN_AVAILABLE, self.retain_available);
        property_users(s, &self.user_properties);
        property_u32(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        property_u8(s, WILDCARD_SUBSCRIPTION_AVAILABLE, self.wildcard_subscription_available);
        property_u8(s, SUBSCRIPTION_IDENTIFIER_AVAILABLE, self.subscription_identifiers_available);
        property_u8(s, SHARED_SUBSCRIPTION_AVAILABLE, self.shared_subscription_available);
    }
}

impl WriteProperties for PublishProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        WithAlias { properties: Some(self), alias: None }.write(s);
    }
}

/// A [`Publish`]'s properties as written: its own Topic Alias, else the boxed set's.
struct WithAlias<'a> {
    properties: Option<&'a PublishProperties>,
    alias: Option<u16>,
}

impl WriteProperties for WithAlias<'_> {
    fn write<S: Sink>(&self, s: &mut S) {
        let alias = self.alias.or(self.properties.and_then(|p| p.topic_alias));
        let Some(p) = self.properties else {
            property_u16(s, TOPIC_ALIAS, alias);
            return;
        };
        property_u8(s, PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
        property_u32(s, MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
        property_string(s, CONTENT_TYPE, &p.content_type);
        property_string(s, RESPONSE_TOPIC, &p.response_topic);
        property_binary(s, CORRELATION_DATA, &p.correlation_data);
        for &id in &p.subscription_identifiers {
            put_varint(s, SUBSCRIPTION_IDENTIFIER);
            put_varint(s, id);
        }
        property_u16(s, TOPIC_ALIAS, alias);
        property_users(s, &p.user_properties);
    }
}

impl WriteProperties for AckProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        property_string(s, REASON_STRING, &self.reason_string);
        property_users(s, &self.user_properties);
    }
}

impl WriteProperties for SubscribeProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        if let Some(id) = self.subscription_identifier {
            put_varint(s, SUBSCRIPTION_IDENTIFIER);
            put_varint(s, id);
        }
        property_users(s, &self.user_properties);
    }
}

/// UNSUBSCRIBE's User Properties, borrowed for writing.
struct UserPropertiesRef<'a>(&'a [UserProperty]);

impl WriteProperties for UserPropertiesRef<'_> {
    fn write<S: Sink>(&self, s: &mut S) {
        property_users(s, self.0);
    }
}

impl WriteProperties for DisconnectProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        property_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        property_string(s, SERVER_REFERENCE, &self.server_reference);
        property_string(s, REASON_STRING, &self.reason_string);
        property_users(s, &self.user_properties);
    }
}

impl WriteProperties for AuthProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        property_string(s, AUTHENTICATION_METHOD, &self.authentication_method);
        property_binary(s, AUTHENTICATION_DATA, &self.authentication_data);
        property_string(s, REASON_STRING, &self.reason_string);
        property_users(s, &self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    //! Byte vectors are written out from the field layouts of the 5.0 and 3.1.1 specifications
    //! (chapters 2 and 3); `tests/data/mqtt` holds captured mosquitto traffic.
    use super::*;
    use crate::protocol::mqtt::packet::UserProperty;

    const V3: Version = Version::V3_1_1;
    const V5: Version = Version::V5_0;
    const MAX: u32 = 1 << 20;

    /// What the reader delivers in place is what `decode` reads; the rest goes to `decode`.
    #[test]
    fn peek_publish_finds_only_plain_qos0_publishes() {
        let plain = |version: Version, topic: &str, payload: &[u8]| {
            let publish = Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: Bytes::copy_from_slice(topic.as_bytes()),
                packet_id: 0,
                payload: Bytes::copy_from_slice(payload),
                topic_alias: None,
                properties: None,
            };
            let mut out = BytesMut::new();
            encode(&Packet::Publish(publish), version, &mut out);
            out.to_vec()
        };
        for version in [V3, V5] {
            for (topic, payload) in [("a/b", &b"hello"[..]), ("x", b""), ("a.b/c d", &[0u8; 300])] {
                let mut bytes = plain(version, topic, payload);
                let at = peek_publish(&bytes, version, MAX).expect("a plain QoS 0 publish");
                check_peek_publish(&bytes, version, MAX, &at);
                // More bytes after it change nothing; fewer make it wait for decode.
                bytes.extend_from_slice(&[0xC0, 0x00]);
                assert_eq!(peek_publish(&bytes, version, MAX), Some(at));
                assert_eq!(peek_publish(&bytes[..at.frame - 1], version, MAX), None);
                assert_eq!(peek_publish(&bytes[..at.frame], version, at.frame as u32 - 1), None);
            }
            let declined = |bytes: &[u8]| assert_eq!(peek_publish(bytes, version, MAX), None);
            let base = plain(version, "a/b", b"x");
            for flags in [0x31u8, 0x32, 0x34, 0x38] {
                // RETAIN, QoS 1, QoS 2, DUP: the general path's.
                let mut other = base.clone();
                other[0] = flags;
                declined(&other);
            }
            for topic in ["a/+", "a/#", "caf\u{e9}", "a\u{0}b"] {
                declined(&plain(version, topic, b"x"));
            }
        }
        // 5.0 with a property (Payload Format Indicator 1) is the general path's.
        let with_property = [0x30, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x02, 0x01, 0x01, b'x'];
        assert!(matches!(decoded(&with_property, V5), Packet::Publish(_)));
        assert_eq!(peek_publish(&with_property, V5, MAX), None);
    }

    /// Decodes `bytes` as exactly one packet, checks that every shorter prefix asks for more
    /// bytes without consuming any, and that encoding the packet gives `bytes` back.
    fn canonical(bytes: &[u8], version: Version) -> Packet {
        let packet = decoded(bytes, version);
        let mut out = BytesMut::new();
        encode(&packet, version, &mut out);
        assert_eq!(&out[..], bytes, "re-encoding {packet:?}");
        packet
    }

    /// Decodes `bytes` as exactly one packet (not necessarily in canonical form).
    fn decoded(bytes: &[u8], version: Version) -> Packet {
        for len in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..len]);
            assert_eq!(decode(&mut buf, version, MAX), Ok(None), "prefix of {len}");
            assert_eq!(buf.len(), len);
        }
        let mut buf = BytesMut::from(bytes);
        let packet = decode(&mut buf, version, MAX).unwrap().unwrap();
        assert!(buf.is_empty());
        packet
    }

    fn error(bytes: &[u8], version: Version) -> DecodeError {
        decode(&mut BytesMut::from(bytes), version, MAX).unwrap_err()
    }

    fn b(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn user(name: &str, value: &str) -> UserProperty {
        (b(name), b(value))
    }

    #[test]
    fn variable_byte_integer_examples() {
        // 5.0 §1.5.5, Table 1-1: the boundaries of each length.
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for &(value, bytes) in cases {
            assert_eq!(parse_varint(bytes), Ok(Some((value, bytes.len()))));
            let mut out = BytesMut::new();
            put_varint(&mut out, value);
            assert_eq!(&out[..], bytes);
        }
        assert_eq!(parse_varint(&[0x80, 0x80]), Ok(None));
        assert_eq!(
            parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::MalformedVarInt)
        );
        assert_eq!(parse_varint(&[0x80, 0x00]), Err(DecodeError::MalformedVarInt));
        assert_eq!(parse_varint(&[0xFF, 0x80, 0x00]), Err(DecodeError::MalformedVarInt));
        // In the fixed header, a fifth length byte is rejected as soon as it could exist.
        assert_eq!(error(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], V3), DecodeError::MalformedVarInt);
    }

    #[test]
    fn connect_v3_minimal() {
        let bytes = b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc";
        let Packet::Connect(connect) = canonical(bytes, V5) else { panic!() };
        assert_eq!(connect.version, V3, "CONNECT carries its own version");
        assert!(connect.clean_start);
        assert_eq!(connect.keep_alive_seconds, 60);
        assert_eq!(&connect.client_id[..], b"abc");
        assert_eq!((connect.will, connect.username, connect.password), (None, None, None));
    }

    #[test]
    fn connect_v3_will_user_password() {
        // Flags 0xEE: user name, password, will retain, will QoS 1, will, clean session.
        let bytes = b"\x10\x1b\x00\x04MQTT\x04\xee\x00\x0a\x00\x02id\x00\x01t\x00\x02hi\
                      \x00\x01u\x00\x01p";
        let Packet::Connect(connect) = canonical(bytes, V3) else { panic!() };
        let will = connect.will.clone().unwrap();
        assert_eq!((&will.topic[..], &will.payload[..]), (&b"t"[..], &b"hi"[..]));
        assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, true));
        assert_eq!(connect.username, Some(b("u")));
        assert_eq!(connect.password, Some(b("p")));
        assert_eq!(connect.keep_alive_seconds, 10);
    }

    #[test]
    fn connect_v5_properties_and_will_properties() {
        let bytes = b"\x10\x26\x00\x04MQTT\x05\x06\x00\x3c\
                      \x08\x11\x00\x00\x00\x0a\x21\x00\x14\
                      \x00\x01c\
                      \x07\x01\x01\x18\x00\x00\x00\x05\
                      \x00\x01w\x00\x03bye";
        let Packet::Connect(connect) = canonical(bytes, V3) else { panic!() };
        assert_eq!(connect.version, V5);
        assert_eq!(connect.properties.session_expiry_interval, Some(10));
        assert_eq!(connect.properties.receive_maximum, Some(20));
        let will = connect.will.unwrap();
        assert_eq!(will.properties.payload_format_indicator, Some(1));
        assert_eq!(will.properties.will_delay_interval, Some(5));
        assert_eq!(&will.payload[..], b"bye");
    }

    #[test]
    fn connect_errors() {
        // MQTT 3.1 (`MQIsdp`, level 3): the session answers CONNACK 0x01.
        let v31 = b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01c";
        assert_eq!(error(v31, V3), DecodeError::UnsupportedProtocolVersion);
        assert_eq!(error(v31, V3).reason_code(), ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
        let level6 = b"\x10\x0d\x00\x04MQTT\x06\x02\x00\x3c\x00\x01c";
        assert_eq!(error(level6, V3), DecodeError::UnsupportedProtocolVersion);
        let name = b"\x10\x0d\x00\x04MQTX\x04\x02\x00\x3c\x00\x01c";
        assert_eq!(error(name, V3), DecodeError::InvalidProtocolName);
        let cases: &[(u8, DecodeError)] = &[
            (0x03, DecodeError::ConnectReservedFlag),
            (0x08, DecodeError::WillFlagsWithoutWill),
            (0x20, DecodeError::WillFlagsWithoutWill),
            (0x1C, DecodeError::WillQosThree),
            (0x42, DecodeError::PasswordWithoutUsername),
        ];
        for &(flags, expected) in cases {
            let bytes =
                [b"\x10\x0d\x00\x04MQTT\x04".as_slice(), &[flags], b"\x00\x3c\x00\x01c"].concat();
            assert_eq!(error(&bytes, V3), expected, "flags {flags:#04x}");
        }
        // 5.0 allows a password without a user name.
        let Packet::Connect(connect) =
            canonical(b"\x10\x11\x00\x04MQTT\x05\x42\x00\x3c\x00\x00\x01c\x00\x01p", V5)
        else {
            panic!()
        };
        assert_eq!((connect.username, connect.password), (None, Some(b("p"))));
        // A property twice, a property CONNECT does not allow, a value out of range.
        let twice = b"\x10\x16\x00\x04MQTT\x05\x02\x00\x3c\x08\x21\x00\x01\x21\x00\x02\x00\x03abc";
        assert_eq!(error(twice, V5), DecodeError::DuplicateProperty);
        let topic_alias = b"\x10\x13\x00\x04MQTT\x05\x02\x00\x3c\x03\x23\x00\x01\x00\x03abc";
        assert_eq!(error(topic_alias, V5), DecodeError::InvalidPropertyId);
        let zero = b"\x10\x13\x00\x04MQTT\x05\x02\x00\x3c\x03\x21\x00\x00\x00\x03abc";
        assert_eq!(error(zero, V5), DecodeError::InvalidPropertyValue);
        let flag = b"\x10\x12\x00\x04MQTT\x05\x02\x00\x3c\x02\x17\x02\x00\x03abc";
        assert_eq!(error(flag, V5), DecodeError::InvalidPropertyValue);
        let data = b"\x10\x14\x00\x04MQTT\x05\x02\x00\x3c\x04\x16\x00\x01z\x00\x03abc";
        assert_eq!(error(data, V5), DecodeError::AuthenticationDataWithoutMethod);
        // A property block longer than the packet.
        let long = b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x09\x00\x03abc";
        assert_eq!(error(long, V5), DecodeError::Truncated);
        // Fields after the last one.
        let trailing = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abcX";
        assert_eq!(error(trailing, V3), DecodeError::TrailingBytes);
    }

    #[test]
    fn connack() {
        let Packet::ConnAck(connack) = canonical(b"\x20\x02\x01\x00", V3) else { panic!() };
        assert!(connack.session_present);
        assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
        let Packet::ConnAck(connack) = canonical(b"\x20\x02\x00\x01", V3) else { panic!() };
        assert_eq!(connack.reason_code, ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION);
        assert_eq!(error(b"\x20\x02\x00\x06", V3), DecodeError::InvalidReasonCode);
        assert_eq!(error(b"\x20\x02\x02\x00", V3), DecodeError::ConnAckReservedFlags);
        canonical(b"\x20\x03\x00\x00\x00", V5);
        let bytes = b"\x20\x0c\x00\x00\x09\x12\x00\x01x\x22\x00\x0a\x24\x01";
        let Packet::ConnAck(connack) = canonical(bytes, V5) else { panic!() };
        assert_eq!(connack.properties.assigned_client_identifier, Some(b("x")));
        assert_eq!(connack.properties.topic_alias_maximum, Some(10));
        assert_eq!(connack.properties.maximum_qos, Some(1));
        let Packet::ConnAck(connack) = canonical(b"\x20\x03\x00\x84\x00", V5) else { panic!() };
        assert_eq!(connack.reason_code, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(error(b"\x20\x03\x00\x01\x00", V5), DecodeError::InvalidReasonCode);
    }

    #[test]
    fn publish_v3() {
        let Packet::Publish(publish) = canonical(b"\x30\x0a\x00\x03a/bhello", V3) else { panic!() };
        assert_eq!((publish.qos, publish.packet_id, publish.dup), (QoS::AtMostOnce, 0, false));
        assert_eq!((&publish.topic[..], &publish.payload[..]), (&b"a/b"[..], &b"hello"[..]));
        // DUP, QoS 1, RETAIN; an empty payload.
        let Packet::Publish(publish) = canonical(b"\x3b\x07\x00\x03a/b\x12\x34", V3) else {
            panic!()
        };
        assert_eq!((publish.qos, publish.packet_id), (QoS::AtLeastOnce, 0x1234));
        assert!(publish.dup && publish.retain && publish.payload.is_empty());
        let Packet::Publish(publish) = canonical(b"\x34\x08\x00\x01a\x00\x01xyz", V3) else {
            panic!()
        };
        assert_eq!(publish.qos, QoS::ExactlyOnce);
        // A non-ASCII topic takes the full UTF-8 check and passes it.
        let Packet::Publish(publish) = canonical(b"\x30\x06\x00\x04\xc3\xa9/x", V3) else {
            panic!()
        };
        assert_eq!(&publish.topic[..], "é/x".as_bytes());
    }

    #[test]
    fn publish_errors() {
        assert_eq!(error(b"\x36", V3), DecodeError::QosThree);
        assert_eq!(error(b"\x38", V5), DecodeError::DupAtQosZero);
        assert_eq!(error(b"\x32\x05\x00\x01a\x00\x00", V3), DecodeError::ZeroPacketId);
        assert_eq!(error(b"\x30\x03\x00\x01+", V3), DecodeError::TopicWildcard);
        assert_eq!(error(b"\x30\x05\x00\x03a/#", V3), DecodeError::TopicWildcard);
        assert_eq!(error(b"\x30\x02\x00\x00", V3), DecodeError::EmptyTopic);
        assert_eq!(error(b"\x30\x03\x00\x00\x00", V5), DecodeError::EmptyTopic);
        assert_eq!(error(b"\x30\x04\x00\x02\xc3\x28", V3), DecodeError::InvalidUtf8);
        assert_eq!(error(b"\x30\x05\x00\x03\xed\xa0\x80", V3), DecodeError::InvalidUtf8);
        assert_eq!(error(b"\x30\x04\x00\x02a\x00", V3), DecodeError::NullCharacter);
        // Several faults: the string's own checks come before the wildcard one.
        assert_eq!(error(b"\x30\x05\x00\x03+\xc3\x28", V3), DecodeError::InvalidUtf8);
        assert_eq!(error(b"\x30\x04\x00\x02#\x00", V3), DecodeError::NullCharacter);
        assert_eq!(error(b"\x30\x05\x00\x03\xc3\xa9#", V3), DecodeError::TopicWildcard);
        assert_eq!(error(b"\x30\x03\x00\x02a", V3), DecodeError::Truncated);
        // Subscription Identifier 0; a property PUBLISH does not allow.
        assert_eq!(error(b"\x30\x06\x00\x01a\x02\x0b\x00", V5), DecodeError::InvalidPropertyValue);
        assert_eq!(error(b"\x30\x06\x00\x01a\x02\x24\x01", V5), DecodeError::InvalidPropertyId);
        let alias_zero = error(b"\x30\x07\x00\x01a\x03\x23\x00\x00", V5);
        assert_eq!(alias_zero, DecodeError::TopicAliasZero);
        assert_eq!(alias_zero.reason_code(), ReasonCode::TOPIC_ALIAS_INVALID);
    }

    #[test]
    fn publish_v5_properties() {
        let bytes = b"\x32\x34\x00\x03a/b\x00\x07\x2a\
                      \x01\x01\
                      \x02\x00\x00\x00\x3c\
                      \x03\x00\x01j\
                      \x08\x00\x01r\
                      \x09\x00\x02\x01\x02\
                      \x0b\x01\x0b\x80\x01\
                      \x23\x00\x05\
                      \x26\x00\x01k\x00\x01v\x26\x00\x01k\x00\x01w\
                      hi";
        let Packet::Publish(publish) = canonical(bytes, V5) else { panic!() };
        let properties = publish.properties.as_deref().expect("properties");
        assert_eq!(properties.payload_format_indicator, Some(1));
        assert_eq!(properties.message_expiry_interval, Some(60));
        assert_eq!(properties.content_type, Some(b("j")));
        assert_eq!(properties.response_topic, Some(b("r")));
        assert_eq!(properties.correlation_data, Some(Bytes::from_static(b"\x01\x02")));
        assert_eq!(properties.subscription_identifiers, vec![1, 128]);
        // The alias is the packet's own field, never in the boxed set.
        assert_eq!((publish.topic_alias, properties.topic_alias), (Some(5), None));
        assert_eq!(properties.user_properties, vec![user("k", "v"), user("k", "w")]);
        assert_eq!((&publish.payload[..], publish.packet_id), (&b"hi"[..], 7));
        // An empty topic with a Topic Alias is fine in 5.0.
        let Packet::Publish(publish) = canonical(b"\x30\x06\x00\x00\x03\x23\x00\x05", V5) else {
            panic!()
        };
        assert!(publish.topic.is_empty() && publish.payload.is_empty());
        // Only an alias: nothing boxed.
        assert_eq!((publish.topic_alias, publish.properties), (Some(5), None));
        // Any single-occurrence property twice is a Protocol Error.
        let twice = b"\x30\x0a\x00\x01a\x06\x03\x00\x00\x03\x00\x00";
        assert_eq!(error(twice, V5), DecodeError::DuplicateProperty);
        assert_eq!(error(twice, V5).reason_code(), ReasonCode::PROTOCOL_ERROR);
    }

    #[test]
    fn publish_acknowledgements() {
        for (first, packet_type) in [(0x40, 4), (0x50, 5), (0x62, 6), (0x70, 7)] {
            let bytes = [first, 0x02, 0x00, 0x07];
            let packet = canonical(&bytes, V3);
            assert_eq!(packet.packet_type(), packet_type);
            assert_eq!(canonical(&bytes, V5), packet);
            assert_eq!(error(&[first, 0x02, 0x00, 0x00], V3), DecodeError::ZeroPacketId);
            assert_eq!(error(&[first, 0x03, 0x00, 0x07, 0x00], V3), DecodeError::TrailingBytes);
        }
        assert_eq!(error(b"\x60\x02\x00\x07", V3), DecodeError::ReservedFlags);
        assert_eq!(error(b"\x42\x02\x00\x07", V3), DecodeError::ReservedFlags);
        // 5.0: reason code without properties; then with them.
        let Packet::PubAck(ack) = canonical(b"\x40\x03\x00\x07\x10", V5) else { panic!() };
        assert_eq!(ack.reason_code, ReasonCode::NO_MATCHING_SUBSCRIBERS);
        let Packet::PubAck(ack) = decoded(b"\x40\x04\x00\x07\x10\x00", V5) else { panic!() };
        assert_eq!((ack.reason_code.0, ack.properties.is_empty()), (0x10, true));
        let Packet::PubComp(ack) =
            canonical(b"\x70\x0d\x00\x07\x92\x09\x1f\x00\x01x\x26\x00\x00\x00\x00", V5)
        else {
            panic!()
        };
        assert_eq!(ack.reason_code, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
        assert_eq!(ack.properties.reason_string, Some(b("x")));
        assert_eq!(ack.properties.user_properties, vec![user("", "")]);
        assert_eq!(error(b"\x40\x03\x00\x07\x92", V5), DecodeError::InvalidReasonCode);
        assert_eq!(error(b"\x62\x03\x00\x07\x10", V5), DecodeError::InvalidReasonCode);
    }

    #[test]
    fn subscribe_v3() {
        let bytes = b"\x82\x0c\x00\x0a\x00\x03a/+\x01\x00\x01#\x02";
        let Packet::Subscribe(subscribe) = canonical(bytes, V3) else { panic!() };
        assert_eq!(subscribe.packet_id, 10);
        assert_eq!(
            subscribe.filters,
            vec![
                (b("a/+"), SubscriptionOptions::with_qos(QoS::AtLeastOnce)),
                (b("#"), SubscriptionOptions::with_qos(QoS::ExactlyOnce)),
            ]
        );
        assert_eq!(error(b"\x82\x02\x00\x0a", V3), DecodeError::NoTopicFilters);
        assert_eq!(error(b"\x80\x06\x00\x0a\x00\x01a\x00", V3), DecodeError::ReservedFlags);
        assert_eq!(
            error(b"\x82\x06\x00\x0a\x00\x01a\x03", V3),
            DecodeError::SubscriptionOptionsReserved
        );
        assert_eq!(
            error(b"\x82\x06\x00\x0a\x00\x01a\x04", V3),
            DecodeError::SubscriptionOptionsReserved
        );
        assert_eq!(error(b"\x82\x05\x00\x0a\x00\x00\x00", V3), DecodeError::EmptyTopic);
        assert_eq!(error(b"\x82\x05\x00\x0a\x00\x01a", V3), DecodeError::Truncated);
        assert_eq!(error(b"\x82\x06\x00\x00\x00\x01a\x00", V3), DecodeError::ZeroPacketId);
    }

    #[test]
    fn subscribe_v5() {
        // Subscription Identifier 5; options 0x2D = QoS 1, No Local, Retain As Published,
        // Retain Handling 2.
        let bytes = b"\x82\x0b\x00\x0a\x02\x0b\x05\x00\x03a/+\x2d";
        let Packet::Subscribe(subscribe) = canonical(bytes, V5) else { panic!() };
        assert_eq!(subscribe.properties.subscription_identifier, Some(5));
        let options = subscribe.filters[0].1;
        assert_eq!(options.qos, QoS::AtLeastOnce);
        assert!(options.no_local && options.retain_as_published);
        assert_eq!(options.retain_handling, RetainHandling::DoNotSend);
        assert_eq!(error(b"\x82\x03\x00\x0a\x00", V5), DecodeError::NoTopicFilters);
        let options = |byte: u8| error(&[0x82, 0x07, 0x00, 0x0a, 0x00, 0x00, 0x01, b'a', byte], V5);
        assert_eq!(options(0x40), DecodeError::SubscriptionOptionsReserved);
        assert_eq!(options(0x03), DecodeError::SubscriptionQosThree);
        assert_eq!(options(0x30), DecodeError::RetainHandlingThree);
        let twice = b"\x82\x0b\x00\x0a\x04\x0b\x05\x0b\x06\x00\x01a\x00";
        assert_eq!(error(twice, V5), DecodeError::DuplicateProperty);
    }

    #[test]
    fn suback() {
        let Packet::SubAck(suback) = canonical(b"\x90\x04\x00\x0a\x01\x80", V3) else { panic!() };
        assert_eq!(suback.reason_codes, vec![ReasonCode(1), ReasonCode(0x80)]);
        assert_eq!(error(b"\x90\x03\x00\x0a\x87", V3), DecodeError::InvalidReasonCode);
        assert_eq!(error(b"\x90\x02\x00\x0a", V3), DecodeError::NoReasonCodes);
        let Packet::SubAck(suback) = canonical(b"\x90\x05\x00\x0a\x00\x87\xa2", V5) else {
            panic!()
        };
        assert_eq!(suback.reason_codes, vec![ReasonCode(0x87), ReasonCode(0xA2)]);
    }

    #[test]
    fn unsubscribe_and_unsuback() {
        let Packet::Unsubscribe(unsubscribe) = canonical(b"\xa2\x05\x00\x0b\x00\x01a", V3) else {
            panic!()
        };
        assert_eq!((unsubscribe.packet_id, unsubscribe.filters.clone()), (11, vec![b("a")]));
        canonical(b"\xa2\x06\x00\x0b\x00\x00\x01a", V5);
        assert_eq!(error(b"\xa2\x02\x00\x0b", V3), DecodeError::NoUnsubscribeFilters);
        assert_eq!(error(b"\xa2\x03\x00\x0b\x00", V5), DecodeError::NoUnsubscribeFilters);
        assert_eq!(
            error(b"\xa2\x08\x00\x0b\x02\x1f\x00\x00\x01a", V5),
            DecodeError::InvalidPropertyId
        );
        let Packet::UnsubAck(unsuback) = canonical(b"\xb0\x02\x00\x0b", V3) else { panic!() };
        assert!(unsuback.reason_codes.is_empty());
        let Packet::UnsubAck(unsuback) = canonical(b"\xb0\x04\x00\x0b\x00\x11", V5) else {
            panic!()
        };
        assert_eq!(unsuback.reason_codes, vec![ReasonCode::NO_SUBSCRIPTION_EXISTED]);
        assert_eq!(error(b"\xb0\x03\x00\x0b\x00", V5), DecodeError::NoReasonCodes);
        assert_eq!(error(b"\xb0\x03\x00\x0b\x00", V3), DecodeError::TrailingBytes);
    }

    #[test]
    fn ping_disconnect_auth() {
        for version in [V3, V5] {
            assert_eq!(canonical(b"\xc0\x00", version), Packet::PingReq);
            assert_eq!(canonical(b"\xd0\x00", version), Packet::PingResp);
            let normal = Packet::Disconnect(Box::new(Disconnect::normal()));
            assert_eq!(canonical(b"\xe0\x00", version), normal);
            assert_eq!(error(b"\xc0\x01\x00", version), DecodeError::TrailingBytes);
            assert_eq!(error(b"\xc1", version), DecodeError::ReservedFlags);
            assert_eq!(error(b"\x00", version), DecodeError::ReservedPacketType);
        }
        assert_eq!(error(b"\xe0\x01\x04", V3), DecodeError::TrailingBytes);
        let Packet::Disconnect(disconnect) = canonical(b"\xe0\x01\x04", V5) else { panic!() };
        assert_eq!(disconnect.reason_code, ReasonCode::DISCONNECT_WITH_WILL_MESSAGE);
        let bytes = b"\xe0\x0b\x9c\x09\x11\x00\x00\x00\x1e\x1c\x00\x01s";
        let Packet::Disconnect(disconnect) = canonical(bytes, V5) else { panic!() };
        assert_eq!(disconnect.reason_code, ReasonCode::USE_ANOTHER_SERVER);
        assert_eq!(disconnect.properties.session_expiry_interval, Some(30));
        assert_eq!(disconnect.properties.server_reference, Some(b("s")));
        assert_eq!(error(b"\xe0\x01\x01", V5), DecodeError::InvalidReasonCode);
        // AUTH is 5.0 only.
        assert_eq!(error(b"\xf0\x00", V3), DecodeError::ReservedPacketType);
        let Packet::Auth(auth) = canonical(b"\xf0\x00", V5) else { panic!() };
        assert_eq!(auth.reason_code, ReasonCode::SUCCESS);
        let bytes = b"\xf0\x0c\x18\x0a\x15\x00\x02m1\x16\x00\x02\xff\x00";
        let Packet::Auth(auth) = canonical(bytes, V5) else { panic!() };
        assert_eq!(auth.reason_code, ReasonCode::CONTINUE_AUTHENTICATION);
        assert_eq!(auth.properties.authentication_method, Some(b("m1")));
        assert_eq!(auth.properties.authentication_data, Some(Bytes::from_static(b"\xff\x00")));
        let Packet::Auth(auth) = decoded(b"\xf0\x01\x19", V5) else { panic!() };
        assert_eq!(auth.reason_code, ReasonCode::RE_AUTHENTICATE);
        assert_eq!(error(b"\xf0\x01\x04", V5), DecodeError::InvalidReasonCode);
    }

    #[test]
    fn too_large_is_rejected_from_the_fixed_header() {
        // Remaining Length 2,097,151 with only the fixed header buffered.
        let mut buf = BytesMut::from(&b"\x30\xff\xff\x7f"[..]);
        assert_eq!(decode(&mut buf, V3, 1024), Err(DecodeError::PacketTooLarge));
        assert_eq!(DecodeError::PacketTooLarge.reason_code(), ReasonCode::PACKET_TOO_LARGE);
        // The limit counts the whole packet: 2 header bytes + 10 body bytes.
        let packet = b"\x30\x0a\x00\x03a/bhello";
        assert!(decode(&mut BytesMut::from(&packet[..]), V3, 12).unwrap().is_some());
        assert_eq!(
            decode(&mut BytesMut::from(&packet[..]), V3, 11),
            Err(DecodeError::PacketTooLarge)
        );
    }

    #[test]
    fn several_packets_in_one_buffer() {
        let mut buf = BytesMut::from(&b"\xc0\x00\x30\x03\x00\x01ahi\xe0"[..]);
        assert_eq!(decode(&mut buf, V3, MAX), Ok(Some(Packet::PingReq)));
        assert!(matches!(decode(&mut buf, V3, MAX), Ok(Some(Packet::Publish(_)))));
        assert_eq!(&buf[..], b"hi\xe0");
        // "hi" is no valid start: 0x68 is PUBREC (type 6) with flags 8.
        assert_eq!(decode(&mut buf, V3, MAX), Err(DecodeError::ReservedFlags));
    }

    /// Decodes a captured stream with `version` (CONNECT decodes by its own level).
    fn decode_capture(bytes: &[u8], version: Version) -> Vec<Packet> {
        let mut buf = BytesMut::from(bytes);
        let mut packets = Vec::new();
        while let Some(packet) = decode(&mut buf, version, MAX).unwrap() {
            let mut again = BytesMut::new();
            encode(&packet, version, &mut again);
            assert_eq!(decode(&mut again, version, MAX), Ok(Some(packet.clone())));
            packets.push(packet);
        }
        assert!(buf.is_empty());
        packets
    }

    #[test]
    fn captured_mosquitto_pub_v311() {
        let bytes = include_bytes!("../../../tests/data/mqtt/mosquitto_pub_v311_qos1_will.bin");
        let packets = decode_capture(bytes, V3);
        let [Packet::Connect(connect), Packet::Publish(publish), Packet::Disconnect(_)] =
            &packets[..]
        else {
            panic!("{packets:?}")
        };
        assert_eq!((connect.version, connect.keep_alive_seconds), (V3, 30));
        assert_eq!(&connect.client_id[..], b"isthmus-capture");
        let will = connect.will.as_ref().unwrap();
        assert_eq!((&will.topic[..], &will.payload[..]), (&b"will/t"[..], &b"bye"[..]));
        assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, true));
        assert_eq!(
            (connect.username.clone(), connect.password.clone()),
            (Some(b("user")), Some(b("pass")))
        );
        assert_eq!((publish.qos, publish.retain, publish.packet_id), (QoS::AtLeastOnce, true, 1));
        assert_eq!((&publish.topic[..], &publish.payload[..]), (&b"a/b"[..], &b"hello"[..]));
        // 3.1.1 has one form per packet: our encoding is mosquitto's, byte for byte.
        let mut out = BytesMut::new();
        for packet in &packets {
            encode(packet, V3, &mut out);
        }
        assert_eq!(&out[..], &bytes[..]);
    }

    #[test]
    fn captured_mosquitto_pub_v5() {
        let bytes = include_bytes!("../../../tests/data/mqtt/mosquitto_pub_v5_qos2_properties.bin");
        let packets = decode_capture(bytes, V5);
        let [Packet::Connect(connect), Packet::Publish(publish), Packet::PubRel(pubrel), Packet::Disconnect(disconnect)] =
            &packets[..]
        else {
            panic!("{packets:?}")
        };
        assert_eq!(connect.version, V5);
        assert_eq!(connect.properties.session_expiry_interval, Some(30));
        assert_eq!(connect.properties.receive_maximum, Some(10));
        assert_eq!((publish.qos, publish.packet_id), (QoS::ExactlyOnce, 1));
        let properties = publish.properties.as_deref().expect("properties");
        assert_eq!(properties.message_expiry_interval, Some(60));
        assert_eq!(properties.user_properties, vec![user("k", "v"), user("k", "w")]);
        assert_eq!(properties.content_type, Some(b("text/plain")));
        assert_eq!(properties.response_topic, Some(b("r/t")));
        assert_eq!(properties.correlation_data, Some(b("abc")));
        assert_eq!(properties.payload_format_indicator, Some(1));
        assert_eq!((pubrel.packet_id, pubrel.reason_code), (1, ReasonCode::SUCCESS));
        assert_eq!(**disconnect, Disconnect::normal());
    }

    #[test]
    fn captured_mosquitto_will_properties_and_disconnect_reason() {
        let bytes = include_bytes!("../../../tests/data/mqtt/mosquitto_pub_v5_will_properties.bin");
        let packets = decode_capture(bytes, V5);
        let [Packet::Connect(connect), Packet::Publish(_), Packet::Disconnect(disconnect)] =
            &packets[..]
        else {
            panic!("{packets:?}")
        };
        assert_eq!(connect.properties.user_properties, vec![user("ck", "cv")]);
        assert_eq!(connect.properties.maximum_packet_size, Some(1000));
        let will = connect.will.as_ref().unwrap();
        assert_eq!(
            (&will.topic[..], &will.payload[..], will.qos),
            (&b"will/t"[..], &b"bye"[..], QoS::ExactlyOnce)
        );
        assert_eq!(will.properties.will_delay_interval, Some(5));
        assert_eq!(will.properties.content_type, Some(b("text/plain")));
        assert_eq!(will.properties.user_properties, vec![user("wk", "wv")]);
        assert_eq!(disconnect.reason_code, ReasonCode::SUCCESS);
        assert_eq!(disconnect.properties.reason_string, Some(b("bye")));
    }

    #[test]
    fn captured_mosquitto_sub() {
        let bytes = include_bytes!("../../../tests/data/mqtt/mosquitto_sub_v5_subscribe.bin");
        let packets = decode_capture(bytes, V5);
        let [Packet::Connect(connect), Packet::Subscribe(subscribe), Packet::Disconnect(_)] =
            &packets[..]
        else {
            panic!("{packets:?}")
        };
        assert_eq!(connect.properties.receive_maximum, Some(20));
        assert_eq!(subscribe.properties.subscription_identifier, Some(7));
        assert_eq!(subscribe.properties.user_properties, vec![user("s", "t")]);
        let options = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
        assert_eq!(subscribe.filters, vec![(b("a/+"), options), (b("b/#"), options)]);

        let bytes = include_bytes!("../../../tests/data/mqtt/mosquitto_sub_v311_subscribe.bin");
        let packets = decode_capture(bytes, V3);
        let [Packet::Connect(connect), Packet::Subscribe(subscribe), Packet::Disconnect(_)] =
            &packets[..]
        else {
            panic!("{packets:?}")
        };
        assert!(!connect.clean_start);
        let options = SubscriptionOptions::with_qos(QoS::ExactlyOnce);
        assert_eq!(subscribe.filters, vec![(b("a/+"), options), (b("b/#"), options)]);
    }

    #[test]
    fn captured_mqtt_3_1_connect_is_unsupported() {
        let bytes = include_bytes!("../../../tests/data/mqtt/mosquitto_pub_v31_connect.bin");
        let error = decode(&mut BytesMut::from(&bytes[..]), V3, MAX).unwrap_err();
        assert_eq!(error, DecodeError::UnsupportedProtocolVersion);
    }

    #[test]
    fn errors_name_their_clause() {
        assert_eq!(
            DecodeError::ReservedFlags.to_string(),
            "[MQTT-2.1.3-1, 3.1.1: MQTT-2.2.2-2] fixed header flags not as the packet type prescribes"
        );
        assert_eq!(DecodeError::QosThree.to_string(), "[MQTT-3.3.1-4] PUBLISH with QoS 3");
        assert_eq!(DecodeError::Truncated.to_string(), "field runs past the end of the packet");
        assert_eq!(DecodeError::NoTopicFilters.clause(), Some("MQTT-3.8.3-2"));
        assert_eq!(DecodeError::NoTopicFilters.clause_v3_1_1(), Some("MQTT-3.8.3-3"));
        assert_eq!(DecodeError::Truncated.reason_code(), ReasonCode::MALFORMED_PACKET);
    }
}
