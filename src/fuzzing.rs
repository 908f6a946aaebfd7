//! Entry points for the cargo-fuzz targets under `fuzz/` (feature `fuzzing`). Each one checks
//! properties, not only the absence of panics.

use crate::protocol::nats::codec::{self, ClientOp, Limits};
use crate::protocol::subject::{
    is_reserved_subject, is_valid_filter, is_valid_literal, mqtt_filter_to_subject,
    mqtt_topic_to_subject, subject_to_mqtt_topic,
};
use crate::router::trie::Trie;
use bytes::BytesMut;
use std::borrow::Cow;

const LIMITS: Limits = Limits { max_payload: 4096, max_control_line: 256 };

/// Decodes `data` whole and split at every position the first byte selects, and checks:
/// the same ops come out either way; every op re-encodes to bytes that decode to itself.
pub fn nats_decode(data: &[u8]) {
    let whole = decode_stream(&[data]);
    if let Some(&first) = data.first() {
        let split = usize::from(first) % (data.len() + 1);
        let pieces = decode_stream(&[&data[..split], &data[split..]]);
        assert_eq!(whole, pieces, "split at {split} changed the result");
    }
    if let Some(rest) = data.strip_prefix(b"PUB ") {
        // `pub` in lower case never takes the decoder's fast path for PUB lines: both paths
        // must read the first op alike, errors and bytes consumed included.
        let lower = [&b"pub "[..], rest].concat();
        let once = |input: &[u8]| {
            let mut buf = BytesMut::from(input);
            (codec::decode(&mut buf, &LIMITS), buf.len())
        };
        assert_eq!(once(data), once(&lower), "fast and general PUB parsers differ");
    }
    if let Some(at) = codec::peek_pub(data, &LIMITS) {
        // The reader delivers such a PUB in place: it must be what decode reads, consuming
        // the same bytes.
        let (mut taken, mut decoded) = (BytesMut::from(data), BytesMut::from(data));
        let op = codec::take_pub(&mut taken, &at);
        assert_eq!(Some(&op), decode_one(&mut decoded).as_ref(), "peek/take and decode differ");
        assert_eq!(taken.len(), decoded.len(), "peek/take consumed other bytes");
        assert_eq!(at.frame, data.len() - taken.len());
        let ClientOp::Pub(message) = op else { panic!("peek_pub found a PUB") };
        assert_eq!(at.parts(data), message.parts());
    }
    for op in &whole.0 {
        let mut encoded = BytesMut::new();
        codec::encode_client_op(op, &mut encoded);
        let again = codec::decode(&mut encoded, &LIMITS);
        assert_eq!(again.as_ref().ok().and_then(|o| o.as_ref()), Some(op), "round trip of {op:?}");
        assert!(encoded.is_empty(), "round trip of {op:?} left bytes");
    }
}

/// The first op of `buf`, if it decodes.
fn decode_one(buf: &mut BytesMut) -> Option<ClientOp> {
    codec::decode(buf, &LIMITS).ok().flatten()
}

/// Feeds `pieces` in order, decoding after each; returns the ops and the first error.
pub fn decode_stream(pieces: &[&[u8]]) -> (Vec<ClientOp>, Option<codec::DecodeError>) {
    let mut buf = BytesMut::new();
    let mut ops = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match codec::decode(&mut buf, &LIMITS) {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => break,
                Err(error) => return (ops, Some(error)),
            }
        }
    }
    (ops, None)
}

/// Reads `data` as an MQTT topic, an MQTT filter and a NATS subject, and checks: a translated
/// topic is a NATS literal that translates back to the same bytes (borrowed only if unchanged);
/// a translated filter is a NATS filter with a valid parent; a subject with an MQTT form
/// round-trips the other way. Then splits `data` at the first `\0` into a filter and a topic
/// and checks that MQTT matching (reference matcher below) agrees with the router's trie.
pub fn mqtt_subject(data: &[u8]) {
    if let Ok(subject) = mqtt_topic_to_subject(data) {
        assert!(is_valid_literal(&subject), "topic {data:?} gave {subject:?}");
        if let Cow::Borrowed(borrowed) = &subject {
            assert_eq!(*borrowed, data, "a borrowed subject is the input");
        }
        let topic = subject_to_mqtt_topic(&subject).expect("a translated topic has an MQTT form");
        assert_eq!(topic.as_ref(), data, "topic round trip through {subject:?}");
    }
    if let Ok(filter) = mqtt_filter_to_subject(data) {
        assert!(is_valid_filter(&filter.subject), "filter {data:?} gave {:?}", filter.subject);
        if let Some(parent) = filter.parent() {
            assert!(is_valid_filter(parent), "parent of {data:?}");
        }
    }
    if let Ok(topic) = subject_to_mqtt_topic(data) {
        let subject = mqtt_topic_to_subject(&topic).expect("a delivered topic is valid");
        assert_eq!(subject.as_ref(), data, "subject round trip through {topic:?}");
    }
    if let Some(split) = data.iter().position(|&b| b == 0) {
        let (filter, topic) = (&data[..split], &data[split + 1..]);
        if let (Ok(f), Ok(s)) = (mqtt_filter_to_subject(filter), mqtt_topic_to_subject(topic)) {
            let mut trie = Trie::default();
            trie.values_mut(&f.subject).push(());
            if let Some(parent) = f.parent() {
                trie.values_mut(parent).push(());
            }
            let mut matched = false;
            trie.for_each_match(&s, |_| matched = true);
            let nats = matched && !(f.is_reserved_for_wildcards() && is_reserved_subject(&s));
            assert_eq!(mqtt_matches(filter, topic), nats, "filter {filter:?} topic {topic:?}");
        }
    }
}

/// Reference MQTT 3.1.1 matcher (section 4.7), for valid filters and topics.
fn mqtt_matches(filter: &[u8], topic: &[u8]) -> bool {
    let wildcard_first = filter.first().is_some_and(|&b| b == b'+' || b == b'#');
    if wildcard_first && topic.first() == Some(&b'$') {
        return false; // [MQTT-4.7.2-1]
    }
    let mut topic_levels = topic.split(|&b| b == b'/');
    for level in filter.split(|&b| b == b'/') {
        if level == b"#" {
            return true; // also matches the parent level, [MQTT-4.7.1-2]
        }
        match topic_levels.next() {
            Some(topic_level) if level == b"+" || level == topic_level => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Decodes `data` as MQTT 3.1.1 and as 5.0, whole and split at a position the first byte
/// selects, and checks: the same packets and the same error come out either way; `Ok(None)`
/// consumes nothing; every packet re-encodes to bytes that decode to the same packet.
pub fn mqtt_decode(data: &[u8]) {
    use crate::protocol::mqtt::codec::{decode, encode, DecodeError};
    use crate::protocol::mqtt::packet::{Packet, Version};
    const MAX_PACKET_BYTES: u32 = 4096;

    fn decode_pieces(pieces: &[&[u8]], version: Version) -> (Vec<Packet>, Option<DecodeError>) {
        let mut buf = BytesMut::new();
        let mut packets = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                let before = buf.len();
                match decode(&mut buf, version, MAX_PACKET_BYTES) {
                    Ok(Some(packet)) => packets.push(packet),
                    Ok(None) => {
                        assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                        break;
                    }
                    Err(error) => return (packets, Some(error)),
                }
            }
        }
        (packets, None)
    }

    for version in [Version::V3_1_1, Version::V5_0] {
        let whole = decode_pieces(&[data], version);
        if let Some(&first) = data.first() {
            let split = usize::from(first) % (data.len() + 1);
            let pieces = decode_pieces(&[&data[..split], &data[split..]], version);
            assert_eq!(whole, pieces, "{version:?}: split at {split} changed the result");
        }
        if let Some(at) =
            crate::protocol::mqtt::codec::peek_publish(data, version, MAX_PACKET_BYTES)
        {
            // The reader delivers such a PUBLISH in place: it must be what decode reads.
            crate::protocol::mqtt::codec::check_peek_publish(data, version, MAX_PACKET_BYTES, &at);
        }
        for packet in &whole.0 {
            let mut encoded = BytesMut::new();
            encode(packet, version, &mut encoded);
            let again = decode(&mut encoded, version, u32::MAX);
            assert_eq!(again, Ok(Some(packet.clone())), "{version:?}: round trip");
            assert!(encoded.is_empty(), "{version:?}: round trip of {packet:?} left bytes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_subject_seeds() {
        for seed in [
            &b"foo/bar"[..],
            b"/",
            b"//.foo.//",
            b"spBv1.0/group/NBIRTH/node",
            b"a/*/>",
            b"a/b",
            b"foo.*./",
            b"foo/#\0foo",
            b"+/+\0/",
            b"#\0$SYS/x",
            b"$SYS/#\0$SYS/x",
            b"a/+/#\0a/*/b/c",
            b"\xff\0a",
        ] {
            mqtt_subject(seed);
        }
    }
}
