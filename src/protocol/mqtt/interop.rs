//! The rules that make MQTT and NATS one system, as pure functions: which shard is a client
//! id's home, the NATS header block of an MQTT publish, NATS headers as MQTT 5 user properties,
//! and the reply subject that carries an MQTT 5 Correlation Data through a NATS responder.
//!
//! - Header block: `NATS/1.0\r\nNmqtt-Pub:<qos>\r\n` (nats-server's exact form, `server/mqtt.go`
//!   `mqttNewDeliverableMessage`), then one `name: value` line per user property, then `\r\n`.
//!   Without user properties the block is one of three static slices: no allocation.
//! - Headers whose names start with `Nmqtt-` are internal and never become user properties.
//! - Correlation: an MQTT 5 request with Response Topic `r/x` and Correlation Data `cd` reaches
//!   NATS subscribers with reply subject `$MQTT.rsp.<hex(cd)>.r.x`. A NATS publish to such a
//!   subject is routed to `r.x` with `cd` restored, so a plain NATS responder (`msg.respond`)
//!   answers the MQTT requester with the correlation it expects. Correlation Data longer than
//!   [`CORRELATION_IN_REPLY_MAX`] bytes is not carried (the reply is then `r.x` alone).

use bytes::{BufMut, Bytes, BytesMut};

/// Prefix of reply subjects that carry MQTT 5 Correlation Data.
pub const RESPONSE_PREFIX: &[u8] = b"$MQTT.rsp.";

/// Longest Correlation Data carried in a reply subject, in bytes (hex doubles it).
pub const CORRELATION_IN_REPLY_MAX: usize = 128;

const HEADERS_BY_QOS: [&[u8]; 3] = [
    b"NATS/1.0\r\nNmqtt-Pub:0\r\n\r\n",
    b"NATS/1.0\r\nNmqtt-Pub:1\r\n\r\n",
    b"NATS/1.0\r\nNmqtt-Pub:2\r\n\r\n",
];

/// The shard that owns the session of `client_id` among `shards`: FNV-1a, so that every shard
/// computes the same answer without shared state.
pub fn home_shard(client_id: &[u8], shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in client_id {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

/// The NATS header block for an MQTT publish at `qos` with these user properties. Properties
/// a NATS header cannot carry (an empty name, `:` or a line break in the name, a line break in
/// the value) are left out; the second value counts them.
pub fn nats_headers(qos: u8, user_properties: &[(Bytes, Bytes)]) -> (Bytes, usize) {
    let base = HEADERS_BY_QOS[usize::from(qos.min(2))];
    if user_properties.is_empty() {
        return (Bytes::from_static(base), 0);
    }
    let size: usize = user_properties.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut out = BytesMut::with_capacity(base.len() + size);
    out.put_slice(&base[..base.len() - 2]);
    let mut skipped = 0;
    for (name, value) in user_properties {
        let bad_name = name.is_empty() || name.iter().any(|b| matches!(b, b':' | b'\r' | b'\n'));
        if bad_name || value.iter().any(|b| matches!(b, b'\r' | b'\n')) {
            skipped += 1;
            continue;
        }
        out.put_slice(name);
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    (out.freeze(), skipped)
}

/// The headers of a NATS header block as MQTT 5 user properties, in order, as slices of
/// `headers`. The status line, `Nmqtt-` headers, and headers an MQTT string cannot carry (not
/// UTF-8, or over 65,535 bytes) are left out.
pub fn user_properties(headers: &Bytes) -> Vec<(Bytes, Bytes)> {
    let mut found = Vec::new();
    user_properties_into(headers, &mut found);
    found
}

/// [`user_properties`] appended to `found`, for a caller that reuses its vector.
pub fn user_properties_into(headers: &Bytes, found: &mut Vec<(Bytes, Bytes)>) {
    let mut lines = headers.split(|&b| b == b'\n');
    let _status = lines.next();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let name = trim(&line[..colon]);
        let value = trim(&line[colon + 1..]);
        if name.is_empty() || starts_with_ignore_case(name, b"nmqtt-") {
            continue;
        }
        let fits = |s: &[u8]| s.len() <= usize::from(u16::MAX) && std::str::from_utf8(s).is_ok();
        if !fits(name) || !fits(value) {
            continue;
        }
        found.push((headers.slice_ref(name), headers.slice_ref(value)));
    }
}

/// The value of header `name` (case-insensitive) in a NATS header block.
pub fn header_value<'a>(headers: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut lines = headers.split(|&b| b == b'\n');
    let _status = lines.next();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        if trim(&line[..colon]).eq_ignore_ascii_case(name) {
            return Some(trim(&line[colon + 1..]));
        }
    }
    None
}

/// The reply subject for an MQTT 5 request whose Response Topic translates to
/// `response_subject` and that carries `correlation` (see the module notes).
pub fn reply_subject(response_subject: &[u8], correlation: Option<&[u8]>) -> Bytes {
    match correlation {
        Some(data) if !data.is_empty() && data.len() <= CORRELATION_IN_REPLY_MAX => {
            let mut out = BytesMut::with_capacity(
                RESPONSE_PREFIX.len() + data.len() * 2 + 1 + response_subject.len(),
            );
            out.put_slice(RESPONSE_PREFIX);
            for byte in data {
                out.put_u8(HEX[usize::from(byte >> 4)]);
                out.put_u8(HEX[usize::from(byte & 0x0F)]);
            }
            out.put_u8(b'.');
            out.put_slice(response_subject);
            out.freeze()
        }
        _ => Bytes::copy_from_slice(response_subject),
    }
}

/// Splits a subject made by [`reply_subject`] into (correlation data, response subject).
/// `None` for any other subject.
pub fn parse_reply_subject(subject: &Bytes) -> Option<(Bytes, Bytes)> {
    let rest = subject.strip_prefix(RESPONSE_PREFIX)?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    let (hex, target) = (&rest[..dot], &rest[dot + 1..]);
    // The length cap keeps client-made subjects from becoming Correlation Data an MQTT packet
    // cannot carry; such a subject is then routed as it is.
    if hex.is_empty() || hex.len() % 2 != 0 || hex.len() > 2 * CORRELATION_IN_REPLY_MAX {
        return None;
    }
    if target.is_empty() {
        return None;
    }
    let mut data = Vec::with_capacity(hex.len() / 2);
    for pair in hex.chunks(2) {
        data.push(nibble(pair[0])? << 4 | nibble(pair[1])?);
    }
    Some((Bytes::from(data), subject.slice_ref(target)))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&'static str, &'static str)]) -> Vec<(Bytes, Bytes)> {
        pairs.iter().map(|(k, v)| (Bytes::from(*k), Bytes::from(*v))).collect()
    }

    #[test]
    fn header_block_matches_nats_server_and_carries_user_properties() {
        assert_eq!(&nats_headers(1, &[]).0[..], b"NATS/1.0\r\nNmqtt-Pub:1\r\n\r\n");
        let (block, skipped) =
            nats_headers(2, &props(&[("unit", "C"), ("bad:name", "x"), ("site", "a b")]));
        assert_eq!(&block[..], b"NATS/1.0\r\nNmqtt-Pub:2\r\nunit: C\r\nsite: a b\r\n\r\n");
        assert_eq!(skipped, 1);
        assert_eq!(user_properties(&block), props(&[("unit", "C"), ("site", "a b")]));
        assert_eq!(header_value(&block, b"nmqtt-pub"), Some(&b"2"[..]));
    }

    #[test]
    fn nats_headers_become_user_properties_without_status_or_internal_ones() {
        let block = Bytes::from_static(b"NATS/1.0 503\r\nA:1\r\nNmqtt-Pub: 0\r\nB:  two \r\n\r\n");
        assert_eq!(user_properties(&block), props(&[("A", "1"), ("B", "two")]));
    }

    #[test]
    fn correlation_round_trips_through_the_reply_subject() {
        let reply = reply_subject(b"r.x", Some(&[0x00, 0xAB, 0x7f]));
        assert_eq!(&reply[..], b"$MQTT.rsp.00ab7f.r.x");
        let (data, target) = parse_reply_subject(&reply).unwrap();
        assert_eq!(&data[..], &[0x00, 0xAB, 0x7f]);
        assert_eq!(&target[..], b"r.x");
        assert_eq!(&reply_subject(b"r.x", None)[..], b"r.x");
        assert_eq!(&reply_subject(b"r.x", Some(&[1; 200]))[..], b"r.x");
        assert!(parse_reply_subject(&Bytes::from_static(b"$MQTT.rsp.0g.r")).is_none());
        assert!(parse_reply_subject(&Bytes::from_static(b"$MQTT.rsp.00")).is_none());
        assert!(parse_reply_subject(&Bytes::from_static(b"r.x")).is_none());
        let long = format!("$MQTT.rsp.{}.r", "ab".repeat(CORRELATION_IN_REPLY_MAX + 1));
        assert!(parse_reply_subject(&Bytes::from(long)).is_none(), "over the cap");
    }

    #[test]
    fn home_shard_is_stable_and_spreads() {
        assert_eq!(home_shard(b"device-1", 4), home_shard(b"device-1", 4));
        let mut seen = [0u32; 4];
        for i in 0..400 {
            seen[home_shard(format!("client-{i}").as_bytes(), 4)] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
        assert_eq!(home_shard(b"anything", 1), 0);
    }
}
