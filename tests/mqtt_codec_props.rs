//! Property tests for the MQTT codec (`isthmus::protocol::mqtt::codec`), through its public API
//! only, for both protocol versions.
//!
//! - Valid packets, encoded as a stream, decode to the same packets, and re-encoding those
//!   reproduces the stream byte for byte (our encoding is canonical).
//! - Split anywhere, a stream decodes to the same packets as whole.
//! - On any bytes (arbitrary, or a valid stream with a byte changed): no panic; `Ok(None)`
//!   consumes nothing; `Ok(Some)` consumes; feeding in two pieces gives the same packets and the
//!   same error as feeding whole.
//! - A packet over `max_packet_bytes` is rejected once its fixed header is in.

use bytes::{Bytes, BytesMut};
use isthmus::protocol::mqtt::codec::{self, DecodeError};
use isthmus::protocol::mqtt::packet::{
    AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    Disconnect, DisconnectProperties, Packet, PubAck, Publish, PublishProperties, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscribeProperties, SubscriptionOptions, UnsubAck,
    Unsubscribe, UserProperty, Version, Will, WillProperties,
};
use proptest::prelude::*;

/// Roomy enough that no generated packet hits it.
const MAX: u32 = 1 << 20;
/// Tight, so that arbitrary bytes reach the size check often.
const TIGHT: u32 = 48;

// ---------------------------------------------------------------------------------------------
// Generators

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V3_1_1), Just(Version::V5_0)]
}

/// A UTF-8 string without U+0000, multi-byte characters included.
fn text() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        3 => "[a-z0-9/ _-]{0,6}",
        1 => "[^\u{0}]{0,4}",
    ]
    .prop_map(Bytes::from)
}

/// A Topic Name: non-empty, no wildcards.
fn topic() -> impl Strategy<Value = Bytes> {
    prop_oneof![3 => "[a-z0-9/_-]{1,8}", 1 => "[^\u{0}+#]{1,4}"].prop_map(Bytes::from)
}

/// A topic filter: non-empty (the codec leaves wildcard placement to the session).
fn filter() -> impl Strategy<Value = Bytes> {
    "[a-z0-9/+#]{1,8}".prop_map(Bytes::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from)
}

fn users() -> impl Strategy<Value = Vec<UserProperty>> {
    prop::collection::vec((text(), text()), 0..3)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    prop::option::of(0u8..=1)
}

fn reason(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    prop::sample::select(codes).prop_map(ReasonCode)
}

fn subscription_identifier() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..200, 1u32..=268_435_455]
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (prop::option::of(text()), users()).prop_map(|(reason_string, user_properties)| AckProperties {
        reason_string,
        user_properties,
    })
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        prop::option::of(any::<u32>()),
        prop::option::of(1..=u16::MAX),
        prop::option::of(1..=u32::MAX),
        prop::option::of(any::<u16>()),
        flag(),
        flag(),
        prop::option::of(text()),
        prop::option::of(binary()),
        users(),
    )
        .prop_map(|(expiry, receive, size, alias, response, problem, method, data, users)| {
            ConnectProperties {
                session_expiry_interval: expiry,
                receive_maximum: receive,
                maximum_packet_size: size,
                topic_alias_maximum: alias,
                request_response_information: response,
                request_problem_information: problem,
                // Authentication Data needs a method (5.0 §3.1.2.11.10).
                authentication_data: if method.is_some() { data } else { None },
                authentication_method: method,
                user_properties: users,
            }
        })
}

fn will(v5: bool) -> impl Strategy<Value = Will> {
    let properties = (
        prop::option::of(any::<u32>()),
        flag(),
        prop::option::of(any::<u32>()),
        prop::option::of(text()),
        prop::option::of(topic()),
        prop::option::of(binary()),
        users(),
    )
        .prop_map(move |(delay, format, expiry, content, response, correlation, users)| {
            if !v5 {
                return WillProperties::default();
            }
            WillProperties {
                will_delay_interval: delay,
                payload_format_indicator: format,
                message_expiry_interval: expiry,
                content_type: content,
                response_topic: response,
                correlation_data: correlation,
                user_properties: users,
            }
        });
    (topic(), binary(), qos(), any::<bool>(), properties).prop_map(
        |(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        },
    )
}

fn connect(version: Version) -> impl Strategy<Value = Packet> {
    let v5 = version == Version::V5_0;
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        prop::option::of(will(v5)),
        prop::option::of(text()),
        prop::option::of(binary()),
        connect_properties(),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, props)| {
                // 3.1.1 sends a password only with a user name [MQTT-3.1.2-22].
                let password = if v5 || username.is_some() { password } else { None };
                Packet::Connect(Box::new(Connect {
                    version,
                    clean_start,
                    keep_alive_seconds: keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties: if v5 { props } else { ConnectProperties::default() },
                }))
            },
        )
}

const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
const SUBACK_REASONS: &[u8] =
    &[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2];
const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

fn connack(version: Version) -> impl Strategy<Value = Packet> {
    let first = (
        prop::option::of(any::<u32>()),
        prop::option::of(1..=u16::MAX),
        flag(),
        flag(),
        prop::option::of(1..=u32::MAX),
        prop::option::of(text()),
        prop::option::of(any::<u16>()),
        prop::option::of(text()),
        flag(),
    );
    let second = (
        flag(),
        flag(),
        prop::option::of(any::<u16>()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(binary()),
        users(),
    );
    let codes: &'static [u8] =
        if version == Version::V5_0 { CONNACK_REASONS } else { &[0, 1, 2, 3, 4, 5] };
    (any::<bool>(), reason(codes), first, second).prop_map(move |(present, code, a, b)| {
        let properties = if version == Version::V5_0 {
            ConnAckProperties {
                session_expiry_interval: a.0,
                receive_maximum: a.1,
                maximum_qos: a.2,
                retain_available: a.3,
                maximum_packet_size: a.4,
                assigned_client_identifier: a.5,
                topic_alias_maximum: a.6,
                reason_string: a.7,
                wildcard_subscription_available: a.8,
                subscription_identifiers_available: b.0,
                shared_subscription_available: b.1,
                server_keep_alive: b.2,
                response_information: b.3,
                server_reference: b.4,
                authentication_method: b.5,
                authentication_data: b.6,
                user_properties: b.7,
            }
        } else {
            ConnAckProperties::default()
        };
        Packet::ConnAck(Box::new(ConnAck {
            session_present: present,
            reason_code: code,
            properties,
        }))
    })
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        flag(),
        prop::option::of(any::<u32>()),
        prop::option::of(1..=u16::MAX),
        prop::option::of(topic()),
        prop::option::of(binary()),
        users(),
        prop::collection::vec(subscription_identifier(), 0..3),
        prop::option::of(text()),
    )
        .prop_map(|(format, expiry, alias, response, correlation, users, ids, content)| {
            PublishProperties {
                payload_format_indicator: format,
                message_expiry_interval: expiry,
                topic_alias: alias,
                response_topic: response,
                correlation_data: correlation,
                user_properties: users,
                subscription_identifiers: ids,
                content_type: content,
            }
        })
}

fn publish(version: Version) -> impl Strategy<Value = Packet> {
    let v5 = version == Version::V5_0;
    (qos(), any::<bool>(), any::<bool>(), topic(), packet_id(), binary(), publish_properties())
        .prop_map(move |(qos, dup, retain, topic, id, payload, properties)| {
            let at_most_once = qos == QoS::AtMostOnce;
            // 5.0: a Topic Alias may stand for the whole topic.
            let topic =
                if v5 && properties.topic_alias.is_some() && dup { Bytes::new() } else { topic };
            // The decoder's form: the alias on the packet, the rest boxed when there is any.
            let mut properties = properties;
            let topic_alias = if v5 { properties.topic_alias.take() } else { None };
            let boxed = v5 && properties != PublishProperties::default();
            Packet::Publish(Publish {
                dup: dup && !at_most_once,
                qos,
                retain,
                topic,
                packet_id: if at_most_once { 0 } else { id },
                payload,
                topic_alias,
                properties: boxed.then(|| Box::new(properties)),
            })
        })
}

fn pub_ack(version: Version) -> impl Strategy<Value = Packet> {
    let v5 = version == Version::V5_0;
    (0..4u8, packet_id(), reason(PUBACK_REASONS), reason(PUBREL_REASONS), ack_properties())
        .prop_map(move |(kind, packet_id, puback_code, pubrel_code, properties)| {
            let reason_code = match (v5, kind) {
                (false, _) => ReasonCode::SUCCESS,
                (true, 0 | 1) => puback_code,
                (true, _) => pubrel_code,
            };
            let properties = if v5 { properties } else { AckProperties::default() };
            let ack = PubAck { packet_id, reason_code, properties };
            match kind {
                0 => Packet::PubAck(ack),
                1 => Packet::PubRec(ack),
                2 => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        })
}

fn subscription_options(v5: bool) -> impl Strategy<Value = SubscriptionOptions> {
    let handling = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendAtNewSubscribe),
        Just(RetainHandling::DoNotSend),
    ];
    (qos(), any::<bool>(), any::<bool>(), handling).prop_map(
        move |(qos, no_local, rap, handling)| {
            if !v5 {
                return SubscriptionOptions::with_qos(qos);
            }
            SubscriptionOptions {
                qos,
                no_local,
                retain_as_published: rap,
                retain_handling: handling,
            }
        },
    )
}

fn subscribe(version: Version) -> impl Strategy<Value = Packet> {
    let v5 = version == Version::V5_0;
    let properties =
        (prop::option::of(subscription_identifier()), users()).prop_map(move |(id, users)| {
            if !v5 {
                return SubscribeProperties::default();
            }
            SubscribeProperties { subscription_identifier: id, user_properties: users }
        });
    (packet_id(), prop::collection::vec((filter(), subscription_options(v5)), 1..4), properties)
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe { packet_id, filters, properties })
        })
}

fn suback(version: Version) -> impl Strategy<Value = Packet> {
    let v5 = version == Version::V5_0;
    let codes: &'static [u8] = if v5 { SUBACK_REASONS } else { &[0x00, 0x01, 0x02, 0x80] };
    (packet_id(), prop::collection::vec(reason(codes), 1..4), ack_properties()).prop_map(
        move |(packet_id, reason_codes, properties)| {
            let properties = if v5 { properties } else { AckProperties::default() };
            Packet::SubAck(SubAck { packet_id, reason_codes, properties })
        },
    )
}

fn unsubscribe(version: Version) -> impl Strategy<Value = Packet> {
    let v5 = version == Version::V5_0;
    (packet_id(), prop::collection::vec(filter(), 1..4), users()).prop_map(
        move |(packet_id, filters, users)| {
            let user_properties = if v5 { users } else { Vec::new() };
            Packet::Unsubscribe(Unsubscribe { packet_id, filters, user_properties })
        },
    )
}

fn unsuback(version: Version) -> impl Strategy<Value = Packet> {
    let v5 = version == Version::V5_0;
    (packet_id(), prop::collection::vec(reason(UNSUBACK_REASONS), 1..4), ack_properties()).prop_map(
        move |(packet_id, codes, properties)| {
            if !v5 {
                let properties = AckProperties::default();
                return Packet::UnsubAck(UnsubAck {
                    packet_id,
                    reason_codes: Vec::new(),
                    properties,
                });
            }
            Packet::UnsubAck(UnsubAck { packet_id, reason_codes: codes, properties })
        },
    )
}

fn disconnect(version: Version) -> impl Strategy<Value = Packet> {
    let v5 = version == Version::V5_0;
    let properties = (
        prop::option::of(any::<u32>()),
        prop::option::of(text()),
        users(),
        prop::option::of(text()),
    )
        .prop_map(|(expiry, reason_string, users, reference)| DisconnectProperties {
            session_expiry_interval: expiry,
            reason_string,
            user_properties: users,
            server_reference: reference,
        });
    (reason(DISCONNECT_REASONS), properties).prop_map(move |(reason_code, properties)| {
        if !v5 {
            return Packet::Disconnect(Box::new(Disconnect::normal()));
        }
        Packet::Disconnect(Box::new(Disconnect { reason_code, properties }))
    })
}

fn auth() -> impl Strategy<Value = Packet> {
    let properties =
        (prop::option::of(text()), prop::option::of(binary()), prop::option::of(text()), users())
            .prop_map(|(method, data, reason_string, users)| AuthProperties {
                authentication_method: method,
                authentication_data: data,
                reason_string,
                user_properties: users,
            });
    (reason(&[0x00, 0x18, 0x19]), properties).prop_map(|(reason_code, properties)| {
        Packet::Auth(Box::new(Auth { reason_code, properties }))
    })
}

fn packet(version: Version) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        1 => connect(version),
        1 => connack(version),
        3 => publish(version),
        2 => pub_ack(version),
        1 => subscribe(version),
        1 => suback(version),
        1 => unsubscribe(version),
        1 => unsuback(version),
        1 => Just(Packet::PingReq),
        1 => Just(Packet::PingResp),
        1 => disconnect(version),
    ];
    if version == Version::V5_0 {
        prop_oneof![10 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

/// A version and a few packets valid in it.
fn stream() -> impl Strategy<Value = (Version, Vec<Packet>)> {
    version().prop_flat_map(|version| (Just(version), prop::collection::vec(packet(version), 1..5)))
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn encode_all(packets: &[Packet], version: Version) -> BytesMut {
    let mut out = BytesMut::new();
    for packet in packets {
        codec::encode(packet, version, &mut out);
    }
    out
}

type Outcome = (Vec<Packet>, Option<DecodeError>);

/// Feeds `pieces` in order, decoding after each; returns the packets and the first error.
/// Checks on the way that `Ok(None)` consumes nothing and `Ok(Some)` consumes something.
fn decode_pieces(pieces: &[&[u8]], version: Version, max: u32) -> Outcome {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match codec::decode(&mut buf, version, max) {
                Ok(Some(packet)) => {
                    assert!(buf.len() < before.len(), "a packet consumes bytes");
                    packets.push(packet);
                }
                Ok(None) => {
                    assert_eq!(buf, before, "Ok(None) consumed bytes");
                    break;
                }
                Err(error) => return (packets, Some(error)),
            }
        }
    }
    (packets, None)
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The broker's per-delivery encoder writes exactly what encoding the packet writes.
    #[test]
    fn encode_publish_from_parts_matches_encode(
        (version, packet) in version().prop_flat_map(|v| (Just(v), publish(v)))
    ) {
        let Packet::Publish(p) = &packet else { unreachable!("publish() makes PUBLISH") };
        let mut whole = BytesMut::new();
        codec::encode(&packet, version, &mut whole);
        let mut parts = BytesMut::new();
        let header = codec::PublishHeader {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            packet_id: p.packet_id,
        };
        // encode_publish takes the whole set, the alias inside it.
        let mut properties = p.properties.as_deref().cloned().unwrap_or_default();
        properties.topic_alias = p.topic_alias;
        codec::encode_publish(&mut parts, version, header, &p.topic, &properties, &p.payload);
        prop_assert_eq!(&parts, &whole);
        if version == Version::V3_1_1 {
            // The 3.1.1 delivery encoder, which builds no property set, writes the same bytes.
            let mut v3 = BytesMut::new();
            codec::encode_publish_v3(&mut v3, header, &p.topic, &p.payload);
            prop_assert_eq!(&v3, &whole);
        }
    }

    #[test]
    fn encode_then_decode_round_trips((version, packets) in stream()) {
        let encoded = encode_all(&packets, version);
        let (decoded, error) = decode_pieces(&[&encoded], version, MAX);
        prop_assert_eq!(error, None);
        prop_assert_eq!(&decoded, &packets);
        prop_assert_eq!(encode_all(&decoded, version), encoded, "canonical re-encoding");
    }

    #[test]
    fn every_split_point_decodes_the_same((version, packets) in stream()) {
        let encoded = encode_all(&packets, version);
        for split in 0..=encoded.len() {
            let (decoded, error) =
                decode_pieces(&[&encoded[..split], &encoded[split..]], version, MAX);
            prop_assert_eq!(error, None);
            prop_assert_eq!(&decoded, &packets, "split at {}", split);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        version in version(),
        data in prop::collection::vec(any::<u8>(), 0..96),
        split in any::<prop::sample::Index>(),
        max in prop_oneof![Just(TIGHT), Just(MAX)],
    ) {
        let whole = decode_pieces(&[&data], version, max);
        let split = split.index(data.len() + 1);
        let pieces = decode_pieces(&[&data[..split], &data[split..]], version, max);
        prop_assert_eq!(whole, pieces, "split at {}", split);
    }

    #[test]
    fn damaged_streams_never_panic(
        (version, packets) in stream(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        split in any::<prop::sample::Index>(),
    ) {
        let mut encoded = encode_all(&packets, version).to_vec();
        let position = position.index(encoded.len());
        encoded[position] = byte;
        let whole = decode_pieces(&[&encoded], version, MAX);
        let split = split.index(encoded.len() + 1);
        let pieces = decode_pieces(&[&encoded[..split], &encoded[split..]], version, MAX);
        prop_assert_eq!(&whole, &pieces, "split at {}", split);
        // Whatever decodes still encodes to something that decodes to itself.
        for packet in &whole.0 {
            let again = encode_all(std::slice::from_ref(packet), version);
            let (decoded, error) = decode_pieces(&[&again], version, MAX);
            prop_assert_eq!(error, None);
            prop_assert_eq!(&decoded[..], std::slice::from_ref(packet));
        }
    }

    #[test]
    fn too_large_is_rejected_from_the_fixed_header((version, packets) in stream()) {
        for packet in &packets {
            let encoded = encode_all(std::slice::from_ref(packet), version);
            let size = encoded.len() as u32;
            // The fixed header: the type byte and the Remaining Length, up to its last byte.
            let header = 1 + encoded[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
            let mut buf = BytesMut::from(&encoded[..header]);
            if size > 1 {
                prop_assert_eq!(
                    codec::decode(&mut buf, version, size - 1),
                    Err(DecodeError::PacketTooLarge)
                );
            }
            let mut buf = encoded.clone();
            prop_assert!(codec::decode(&mut buf, version, size).unwrap().is_some());
        }
    }
}

/// The fuzz entry point on captured traffic and on arbitrary bytes (`--features fuzzing`).
#[cfg(feature = "fuzzing")]
mod fuzz_entry {
    use proptest::prelude::*;

    #[test]
    fn captured_traffic_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mqtt");
        let mut seeds = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "bin") {
                isthmus::fuzzing::mqtt_decode(&std::fs::read(path).unwrap());
                seeds += 1;
            }
        }
        assert!(seeds >= 5);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..128)) {
            isthmus::fuzzing::mqtt_decode(&data);
        }
    }
}
