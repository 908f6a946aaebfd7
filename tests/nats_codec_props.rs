//! Property tests for the NATS client codec (`isthmus::protocol::nats::codec`), through its
//! public API only.
//!
//! - Valid ops, encoded as a stream, decode to the same ops: whole, split at every position,
//!   and cut into random pieces; a canonical re-encoding reproduces the stream byte for byte.
//! - Other spellings nats-server accepts (lowercase, tabs, runs of blanks, `\n`-only line ends,
//!   leading zeros, `HPUB` with an empty header block) decode to the same op.
//! - On any bytes: no panic; `Ok(None)` consumes nothing and only while the frame could still
//!   fit the limits; `Ok(Some)` consumes; feeding in pieces changes nothing.
//! - A PUB/HPUB declaring more than `max_payload` is `MaxPayload` as soon as its control line is in.
//! - `encode_msg` output parses (with the small parser below) as MSG/HMSG with the right sizes.

use bytes::{Bytes, BytesMut};
use isthmus::message::Message;
use isthmus::protocol::nats::codec::{self, ClientOp, DecodeError, Limits};
use proptest::prelude::*;
use proptest::sample::Index;

/// Limits for streams of valid ops: roomy enough that no generated op hits them.
const ROOMY: Limits = Limits { max_payload: 4096, max_control_line: 1024 };
/// Tight limits for arbitrary bytes, so the limit paths are reached often.
const TIGHT: Limits = Limits { max_payload: 64, max_control_line: 32 };

// ---------------------------------------------------------------------------------------------
// Generators

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_$-]{1,8}"
}

/// A literal subject: tokens joined by dots.
fn subject() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(token(), 1..4).prop_map(|t| Bytes::from(t.join(".")))
}

/// A subscription filter: tokens or `*`, optionally ending in `>`.
fn filter() -> impl Strategy<Value = Bytes> {
    let part = prop_oneof![3 => token(), 1 => Just("*".to_string())];
    (prop::collection::vec(part, 0..4), any::<bool>()).prop_map(|(mut parts, tail)| {
        if parts.is_empty() || tail {
            parts.push(">".to_string());
        }
        Bytes::from(parts.join("."))
    })
}

fn sid() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        (1u64..100_000).prop_map(|n| Bytes::from(n.to_string())),
        "[A-Za-z0-9]{1,6}".prop_map(Bytes::from),
    ]
}

/// Payload bytes, with `\r`, `\n` and the `\r\n` pair well represented.
fn payload() -> impl Strategy<Value = Bytes> {
    let byte = prop_oneof![
        2 => Just(b'\r'),
        2 => Just(b'\n'),
        1 => Just(b' '),
        3 => b'a'..=b'z',
        2 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..48).prop_map(Bytes::from)
}

/// A header block: `NATS/1.0[ status]\r\n`, `Key: value\r\n`..., `\r\n`.
fn headers() -> impl Strategy<Value = Bytes> {
    let status = prop_oneof![Just(""), Just(" 503"), Just(" 408 Request Timeout")];
    let entry = ("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,16}");
    (status, prop::collection::vec(entry, 0..4)).prop_map(|(status, entries)| {
        let mut block = format!("NATS/1.0{status}\r\n");
        for (key, value) in entries {
            block.push_str(&format!("{key}: {value}\r\n"));
        }
        block.push_str("\r\n");
        Bytes::from(block)
    })
}

fn message() -> impl Strategy<Value = Message> {
    (subject(), prop::option::of(subject()), prop::option::of(headers()), payload()).prop_map(
        |(subject, reply, headers, payload)| Message {
            subject,
            reply: reply.unwrap_or_default(),
            headers: headers.unwrap_or_default(),
            payload,
            meta: Default::default(),
        },
    )
}

/// CONNECT JSON as real clients write it: async-nats/nats.go compact, nats-py with spaces.
fn connect_json() -> impl Strategy<Value = Bytes> {
    (any::<bool>(), any::<bool>(), "[A-Za-z0-9 _.-]{0,20}", any::<bool>()).prop_map(
        |(verbose, headers, name, spaced)| {
            let (comma, colon) = if spaced { (", ", ": ") } else { (",", ":") };
            let fields = [
                format!("\"verbose\"{colon}{verbose}"),
                format!("\"pedantic\"{colon}false"),
                format!("\"name\"{colon}\"{name}\""),
                format!("\"lang\"{colon}\"rust\""),
                format!("\"protocol\"{colon}1"),
                format!("\"headers\"{colon}{headers}"),
            ];
            Bytes::from(format!("{{{}}}", fields.join(comma)))
        },
    )
}

fn client_op() -> impl Strategy<Value = ClientOp> {
    prop_oneof![
        1 => connect_json().prop_map(ClientOp::Connect),
        4 => message().prop_map(ClientOp::Pub),
        2 => (filter(), prop::option::of(token()), sid()).prop_map(|(subject, queue, sid)| {
            ClientOp::Sub { subject, queue: queue.map(Bytes::from).unwrap_or_default(), sid }
        }),
        2 => (sid(), prop::option::of(0u64..=9_999_999_999)).prop_map(|(sid, max)| {
            ClientOp::Unsub { sid, max }
        }),
        1 => Just(ClientOp::Ping),
        1 => Just(ClientOp::Pong),
    ]
}

fn encode_all(ops: &[ClientOp]) -> BytesMut {
    let mut out = BytesMut::new();
    for op in ops {
        codec::encode_client_op(op, &mut out);
    }
    out
}

/// Bytes that are often almost protocol: fragments of real ops glued together, mutated valid
/// streams, and plain random bytes.
fn messy_bytes() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(&b"PUB "[..]),
        Just(&b"HPUB "[..]),
        Just(&b"SUB "[..]),
        Just(&b"UNSUB "[..]),
        Just(&b"CONNECT "[..]),
        Just(&b"PING"[..]),
        Just(&b"pong"[..]),
        Just(&b"NATS/1.0\r\n"[..]),
        Just(&b" "[..]),
        Just(&b"\t"[..]),
        Just(&b"\r\n"[..]),
        Just(&b"\n"[..]),
        Just(&b"\r"[..]),
        Just(&b"a.b"[..]),
        Just(&b"0"[..]),
        Just(&b"3"[..]),
        Just(&b"12"[..]),
        Just(&b"65"[..]),
        Just(&b"99999999999"[..]),
    ];
    let glued = prop::collection::vec(fragment, 0..24).prop_map(|parts| parts.concat());
    let mutated = (
        prop::collection::vec(client_op(), 1..4),
        prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..3), 1..4),
    )
        .prop_map(|(ops, edits)| {
            let mut bytes = encode_all(&ops).to_vec();
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len() + 1);
                match kind {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => bytes.truncate(i.max(1)),
                }
            }
            bytes
        });
    prop_oneof![
        2 => glued,
        2 => mutated,
        1 => prop::collection::vec(any::<u8>(), 0..128),
    ]
}

// ---------------------------------------------------------------------------------------------
// Decoding with invariant checks

#[derive(Debug, PartialEq)]
struct Outcome {
    ops: Vec<ClientOp>,
    error: Option<DecodeError>,
}

/// Calls `decode` once and checks what every call must satisfy, whatever the input:
/// `Ok(None)` leaves the buffer as it was and only while the frame can still fit the limits;
/// `Ok(Some)` consumes at least one byte.
fn decode_checked(buf: &mut BytesMut, limits: &Limits) -> Result<Option<ClientOp>, DecodeError> {
    let before = buf.clone();
    let result = codec::decode(buf, limits);
    match &result {
        Ok(None) => {
            assert_eq!(&buf[..], &before[..], "Ok(None) consumed or changed bytes");
            let most = limits.max_control_line as usize + 2 + limits.max_payload as usize + 2;
            assert!(
                buf.len() < most,
                "waits with {} bytes buffered, limits allow {most}",
                buf.len()
            );
        }
        Ok(Some(op)) => {
            assert!(buf.len() < before.len(), "{op:?} decoded without consuming");
            assert_eq!(&before[before.len() - buf.len()..], &buf[..], "decode changed the rest");
        }
        Err(_) => {}
    }
    result
}

/// Feeds `pieces` one after the other, decoding as much as possible after each.
fn decode_pieces(pieces: &[&[u8]], limits: &Limits) -> (Outcome, usize) {
    let mut buf = BytesMut::new();
    let mut ops = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match decode_checked(&mut buf, limits) {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => break,
                Err(error) => return (Outcome { ops, error: Some(error) }, buf.len()),
            }
        }
    }
    (Outcome { ops, error: None }, buf.len())
}

fn cut_at<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

// ---------------------------------------------------------------------------------------------
// Other spellings of the same op

/// How to spell an op differently from `encode_client_op`, in ways nats-server also accepts.
#[derive(Clone, Debug)]
struct Spelling {
    /// Per letter of the op name: lowercase it.
    lower: Vec<bool>,
    /// Separators to cycle through between arguments.
    blanks: Vec<&'static str>,
    /// End the control line with `\n` only.
    lf_only: bool,
    /// Add blanks before the line end (not for CONNECT, whose text runs to the line end).
    trailing: Option<&'static str>,
    /// Leading zeros on numbers, as far as the ten digits the decoder reads.
    zeros: usize,
    /// Spell a PUB without headers as `HPUB` with a zero-length header block.
    hpub_empty: bool,
}

fn spelling() -> impl Strategy<Value = Spelling> {
    let blank = prop_oneof![Just(" "), Just("\t"), Just("  "), Just(" \t "), Just("\t\t")];
    (
        prop::collection::vec(any::<bool>(), 7),
        prop::collection::vec(blank.clone(), 1..4),
        any::<bool>(),
        prop::option::of(blank),
        0usize..4,
        any::<bool>(),
    )
        .prop_map(|(lower, blanks, lf_only, trailing, zeros, hpub_empty)| Spelling {
            lower,
            blanks,
            lf_only,
            trailing,
            zeros,
            hpub_empty,
        })
}

fn spell(op: &ClientOp, s: &Spelling) -> Vec<u8> {
    let number = |n: u64| {
        let digits = n.to_string();
        let zeros = s.zeros.min(10usize.saturating_sub(digits.len()));
        format!("{}{digits}", "0".repeat(zeros)).into_bytes()
    };
    let (name, mut args, body): (&str, Vec<Vec<u8>>, Option<Vec<u8>>) = match op {
        ClientOp::Connect(json) => ("CONNECT", vec![json.to_vec()], None),
        ClientOp::Pub(m) => {
            let hpub = !m.headers.is_empty() || s.hpub_empty;
            let mut args = vec![m.subject.to_vec()];
            if !m.reply.is_empty() {
                args.push(m.reply.to_vec());
            }
            if hpub {
                args.push(number(m.headers.len() as u64));
            }
            args.push(number(m.size() as u64));
            let body = [&m.headers[..], &m.payload[..], b"\r\n"].concat();
            (if hpub { "HPUB" } else { "PUB" }, args, Some(body))
        }
        ClientOp::Sub { subject, queue, sid } => {
            let mut args = vec![subject.to_vec()];
            if !queue.is_empty() {
                args.push(queue.to_vec());
            }
            args.push(sid.to_vec());
            ("SUB", args, None)
        }
        ClientOp::Unsub { sid, max } => {
            let mut args = vec![sid.to_vec()];
            args.extend(max.map(number));
            ("UNSUB", args, None)
        }
        ClientOp::Ping => ("PING", vec![], None),
        ClientOp::Pong => ("PONG", vec![], None),
    };
    let mut out: Vec<u8> = name
        .bytes()
        .zip(s.lower.iter().cycle())
        .map(|(b, &lower)| if lower { b.to_ascii_lowercase() } else { b })
        .collect();
    for (i, arg) in args.drain(..).enumerate() {
        out.extend_from_slice(s.blanks[i % s.blanks.len()].as_bytes());
        out.extend_from_slice(&arg);
    }
    if let (Some(trailing), false) = (s.trailing, matches!(op, ClientOp::Connect(_))) {
        out.extend_from_slice(trailing.as_bytes());
    }
    out.extend_from_slice(if s.lf_only { b"\n" } else { b"\r\n" });
    out.extend(body.unwrap_or_default());
    out
}

// ---------------------------------------------------------------------------------------------
// A small MSG/HMSG parser, written from the protocol text, to check `encode_msg` against

#[derive(Debug, PartialEq)]
struct Delivery {
    headers_op: bool,
    subject: Vec<u8>,
    sid: Vec<u8>,
    reply: Vec<u8>,
    headers: Vec<u8>,
    payload: Vec<u8>,
}

/// Parses one `MSG <subject> <sid> [reply] <size>\r\n<payload>\r\n` or
/// `HMSG <subject> <sid> [reply] <hdr_size> <total_size>\r\n<headers><payload>\r\n` from the
/// front of `bytes`; returns it and the number of bytes it took.
fn parse_delivery(bytes: &[u8]) -> Result<(Delivery, usize), String> {
    let line_len =
        bytes.windows(2).position(|w| w == b"\r\n").ok_or("control line without \\r\\n")?;
    let line = std::str::from_utf8(&bytes[..line_len]).map_err(|e| e.to_string())?;
    let words: Vec<&str> = line.split(' ').collect();
    if words.iter().any(|w| w.is_empty()) {
        return Err(format!("empty argument in {line:?}"));
    }
    let number = |w: &str| w.parse::<usize>().map_err(|e| format!("{w:?}: {e}"));
    let (headers_op, subject, sid, reply, header_size, total) = match words[..] {
        ["MSG", subject, sid, size] => (false, subject, sid, "", 0, number(size)?),
        ["MSG", subject, sid, reply, size] => (false, subject, sid, reply, 0, number(size)?),
        ["HMSG", subject, sid, h, t] => (true, subject, sid, "", number(h)?, number(t)?),
        ["HMSG", subject, sid, reply, h, t] => (true, subject, sid, reply, number(h)?, number(t)?),
        _ => return Err(format!("not MSG/HMSG: {line:?}")),
    };
    if header_size > total {
        return Err(format!("header size over total in {line:?}"));
    }
    let body = line_len + 2;
    let end = body + total;
    if bytes.len() < end + 2 || &bytes[end..end + 2] != b"\r\n" {
        return Err(format!("body of {line:?} not followed by \\r\\n"));
    }
    let delivery = Delivery {
        headers_op,
        subject: subject.into(),
        sid: sid.into(),
        reply: reply.into(),
        headers: bytes[body..body + header_size].to_vec(),
        payload: bytes[body + header_size..end].to_vec(),
    };
    Ok((delivery, end + 2))
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Encoding a sequence and decoding it whole gives the same ops and consumes everything;
    /// decoded ops re-encode to the very same bytes.
    #[test]
    fn stream_round_trips(ops in prop::collection::vec(client_op(), 1..8)) {
        let bytes = encode_all(&ops);
        let (outcome, left) = decode_pieces(&[&bytes], &ROOMY);
        prop_assert_eq!(&outcome, &Outcome { ops: ops.clone(), error: None });
        prop_assert_eq!(left, 0);
        prop_assert_eq!(encode_all(&outcome.ops), bytes);
    }

    /// Splitting the stream at any single position does not change what is decoded.
    #[test]
    fn any_split_point_gives_the_same_ops(ops in prop::collection::vec(client_op(), 1..6)) {
        let bytes = encode_all(&ops);
        for at in 0..=bytes.len() {
            let (outcome, left) = decode_pieces(&[&bytes[..at], &bytes[at..]], &ROOMY);
            prop_assert_eq!(&outcome.ops, &ops, "split at {}", at);
            prop_assert_eq!(outcome.error, None);
            prop_assert_eq!(left, 0);
        }
    }

    /// Neither does cutting it into many random pieces (down to single bytes).
    #[test]
    fn random_pieces_give_the_same_ops(
        ops in prop::collection::vec(client_op(), 1..8),
        cuts in prop::collection::vec(any::<Index>(), 0..24),
        byte_by_byte in any::<bool>(),
    ) {
        let bytes = encode_all(&ops);
        let pieces: Vec<&[u8]> =
            if byte_by_byte { bytes.chunks(1).collect() } else { cut_at(&bytes, &cuts) };
        let (outcome, left) = decode_pieces(&pieces, &ROOMY);
        prop_assert_eq!(outcome, Outcome { ops, error: None });
        prop_assert_eq!(left, 0);
    }

    /// Every proper prefix of a frame waits (`Ok(None)`, nothing consumed; checked inside
    /// `decode_checked`), and the whole frame decodes.
    #[test]
    fn prefixes_wait(op in client_op()) {
        let bytes = encode_all(std::slice::from_ref(&op));
        for at in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..at]);
            prop_assert_eq!(decode_checked(&mut buf, &ROOMY), Ok(None), "prefix of {}", at);
        }
        let mut buf = bytes;
        prop_assert_eq!(decode_checked(&mut buf, &ROOMY), Ok(Some(op)));
        prop_assert!(buf.is_empty());
    }

    /// Lowercase and mixed-case names, tabs and runs of blanks, `\n`-only line ends, trailing
    /// blanks, leading zeros and `HPUB` with no headers all decode to the same op.
    #[test]
    fn other_spellings_decode_the_same(
        ops_and_spellings in prop::collection::vec((client_op(), spelling()), 1..6),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let bytes: Vec<u8> = ops_and_spellings.iter().flat_map(|(op, s)| spell(op, s)).collect();
        let ops: Vec<ClientOp> = ops_and_spellings.into_iter().map(|(op, _)| op).collect();
        let (outcome, left) = decode_pieces(&cut_at(&bytes, &cuts), &ROOMY);
        prop_assert_eq!(outcome, Outcome { ops, error: None }, "{:?}", String::from_utf8_lossy(&bytes));
        prop_assert_eq!(left, 0);
    }

    /// Any bytes: no panic; each call either decodes (consuming), waits (consuming nothing,
    /// within the limits) or fails; feeding the bytes in pieces gives the same result; every
    /// decoded op re-encodes to bytes that decode back to it.
    #[test]
    fn arbitrary_bytes_are_handled(
        bytes in messy_bytes(),
        cuts in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        for limits in [TIGHT, ROOMY] {
            let (whole, _) = decode_pieces(&[&bytes], &limits);
            let (pieces, _) = decode_pieces(&cut_at(&bytes, &cuts), &limits);
            prop_assert_eq!(&pieces, &whole);
            let (single, _) = decode_pieces(&bytes.chunks(1).collect::<Vec<_>>(), &limits);
            prop_assert_eq!(&single, &whole);
            for op in &whole.ops {
                let mut again = encode_all(std::slice::from_ref(op));
                prop_assert_eq!(codec::decode(&mut again, &limits), Ok(Some(op.clone())));
                prop_assert!(again.is_empty());
            }
        }
    }

    /// A PUB or HPUB declaring more than `max_payload` is refused as soon as its control line
    /// is complete, whatever part of the body has arrived; at exactly `max_payload` it is taken.
    #[test]
    fn oversized_pub_is_refused_from_the_control_line(
        subject in subject(),
        reply in prop::option::of(subject()),
        total in (u64::from(ROOMY.max_payload) + 1)..=9_999_999_999,
        header_share in any::<Index>(),
        hpub in any::<bool>(),
        lf_only in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut line = if hpub { b"HPUB ".to_vec() } else { b"PUB ".to_vec() };
        line.extend_from_slice(&subject);
        if let Some(reply) = &reply {
            line.push(b' ');
            line.extend_from_slice(reply);
        }
        if hpub {
            let header_size = header_share.index(usize::try_from(total).unwrap() + 1);
            line.extend_from_slice(format!(" {header_size}").as_bytes());
        }
        line.extend_from_slice(format!(" {total}").as_bytes());
        line.extend_from_slice(if lf_only { b"\n" } else { b"\r\n" });
        let mut buf = BytesMut::from(&line[..]);
        prop_assert_eq!(codec::decode(&mut buf, &ROOMY), Err(DecodeError::MaxPayload));
        buf = BytesMut::from(&[&line[..], &body[..]].concat()[..]);
        prop_assert_eq!(codec::decode(&mut buf, &ROOMY), Err(DecodeError::MaxPayload));

        let at_limit = ROOMY.max_payload as usize;
        let mut exact = format!("PUB {} {at_limit}\r\n", String::from_utf8_lossy(&subject)).into_bytes();
        exact.resize(exact.len() + at_limit, b'x');
        let mut buf = BytesMut::from(&exact[..]);
        prop_assert_eq!(decode_checked(&mut buf, &ROOMY), Ok(None));
        buf.extend_from_slice(b"\r\n");
        let decoded = decode_checked(&mut buf, &ROOMY);
        prop_assert!(matches!(decoded, Ok(Some(ClientOp::Pub(ref m))) if m.payload.len() == at_limit));
    }

    /// A control line of exactly `max_control_line` bytes (line end not counted) is taken, one
    /// byte more is refused; without its line end, the line waits while it could still fit
    /// (`max + 1` bytes may be the line plus a `\r`) and is refused at `max + 2`.
    #[test]
    fn control_line_limit_is_exact(
        extra in -3i64..=3,
        connect in any::<bool>(),
        lf_only in any::<bool>(),
        fill in "[A-Za-z0-9]{64}",
    ) {
        let max = TIGHT.max_control_line as usize;
        let len = usize::try_from(max as i64 + extra).unwrap();
        let head = if connect { "CONNECT " } else { "SUB a.b " };
        let line = format!("{head}{}", &fill[..len - head.len()]).into_bytes();
        let bytes = [&line[..], if lf_only { b"\n" } else { b"\r\n" }].concat();
        let (outcome, _) = decode_pieces(&[&bytes], &TIGHT);
        if len <= max {
            prop_assert_eq!(outcome.error, None);
            prop_assert_eq!(outcome.ops.len(), 1);
        } else {
            prop_assert_eq!(outcome, Outcome { ops: vec![], error: Some(DecodeError::MaxControlLine) });
        }
        let (single, _) = decode_pieces(&bytes.chunks(1).collect::<Vec<_>>(), &TIGHT);
        prop_assert_eq!(decode_pieces(&[&bytes], &TIGHT).0, single);

        let unterminated = [&line[..], &fill.as_bytes()[..8]].concat();
        let mut buf = BytesMut::from(&unterminated[..max + 1]);
        prop_assert_eq!(decode_checked(&mut buf, &TIGHT), Ok(None));
        let mut buf = BytesMut::from(&unterminated[..max + 2]);
        prop_assert_eq!(decode_checked(&mut buf, &TIGHT), Err(DecodeError::MaxControlLine));
    }

    /// Frames that are broken in their sizes or their body's end are refused: an HPUB whose
    /// header size exceeds its total (from the control line alone, and with a body), and a
    /// PUB/HPUB whose body is not followed by `\r\n`.
    #[test]
    fn broken_frames_are_refused(
        message in message(),
        over in 1usize..16,
        at in 0usize..2,
        byte in any::<u8>(),
    ) {
        let hpub = format!(
            "HPUB {} {} {}\r\n",
            String::from_utf8_lossy(&message.subject),
            message.size() + over,
            message.size(),
        );
        let mut buf = BytesMut::from(hpub.as_bytes());
        prop_assert_eq!(codec::decode(&mut buf, &ROOMY), Err(DecodeError::UnknownOperation));
        buf.extend_from_slice(&[&message.headers[..], &message.payload[..], b"\r\n"].concat());
        buf.extend_from_slice(&vec![b'x'; over]);
        prop_assert_eq!(codec::decode(&mut buf, &ROOMY), Err(DecodeError::UnknownOperation));

        let mut frame = encode_all(&[ClientOp::Pub(message)]).to_vec();
        let trailer = frame.len() - 2 + at;
        prop_assume!(frame[trailer] != byte);
        frame[trailer] = byte;
        let (outcome, _) = decode_pieces(&[&frame], &ROOMY);
        prop_assert_eq!(outcome, Outcome { ops: vec![], error: Some(DecodeError::UnknownOperation) });
    }

    /// `encode_msg` writes MSG (no headers, or a client without header support) or HMSG with
    /// sizes that match what follows; deliveries written back to back parse one by one.
    #[test]
    fn encode_msg_parses_as_msg_or_hmsg(
        deliveries in prop::collection::vec((message(), sid(), any::<bool>()), 1..6),
    ) {
        let mut out = BytesMut::new();
        for (message, sid, with_headers) in &deliveries {
            codec::encode_msg(&mut out, message, sid, *with_headers);
        }
        let mut rest = &out[..];
        for (message, sid, with_headers) in &deliveries {
            let (parsed, used) = parse_delivery(rest).map_err(TestCaseError::fail)?;
            let headers_op = *with_headers && !message.headers.is_empty();
            let expected = Delivery {
                headers_op,
                subject: message.subject.to_vec(),
                sid: sid.to_vec(),
                reply: message.reply.to_vec(),
                headers: if headers_op { message.headers.to_vec() } else { Vec::new() },
                payload: message.payload.to_vec(),
            };
            prop_assert_eq!(parsed, expected);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty(), "{} bytes after the last delivery", rest.len());
    }
}

/// Messages with payloads on both sides of `MSG_FRAME_PAYLOAD_MAX`, long subjects and replies,
/// and now and then a header block.
fn framed_message() -> impl Strategy<Value = Message> {
    let subject = "[a-z]{1,90}(\\.[a-z]{1,40}){0,2}".prop_map(Bytes::from);
    let reply = prop::option::of("[A-Z_]{1,80}".prop_map(Bytes::from));
    let payload = prop::collection::vec(any::<u8>(), 0..260).prop_map(Bytes::from);
    let headers = prop::option::weighted(0.1, headers());
    (subject, reply, headers, payload).prop_map(|(subject, reply, headers, payload)| Message {
        subject,
        reply: reply.unwrap_or_default(),
        headers: headers.unwrap_or_default(),
        payload,
        meta: Default::default(),
    })
}

proptest! {
    /// One `MsgFrame` composing message after message writes, for every sid, exactly what
    /// `encode_msg_parts` writes; it declines a message with a header block and keeps the
    /// composition it held.
    #[test]
    fn a_msg_frame_encodes_as_encode_msg_parts(
        messages in prop::collection::vec(framed_message(), 1..5),
        sids in prop::collection::vec(sid(), 1..4),
        with_headers in any::<bool>(),
    ) {
        let mut frame = codec::MsgFrame::default();
        for message in &messages {
            let parts = message.parts();
            let before = frame.id();
            let Some(id) = frame.compose(&parts) else {
                prop_assert!(!message.headers.is_empty(), "declined a message without headers");
                prop_assert_eq!(frame.id(), before);
                continue;
            };
            prop_assert!(message.headers.is_empty(), "composed a message with headers");
            prop_assert!(id > before && id == frame.id());
            let (mut framed, mut plain) = (BytesMut::new(), BytesMut::new());
            for sid in &sids {
                frame.encode(&mut framed, sid, &message.payload);
                codec::encode_msg_parts(&mut plain, &parts, sid, with_headers);
            }
            prop_assert_eq!(&framed[..], &plain[..]);
        }
    }
}

/// The small parser agrees with the codec's own fixed example, so a bug in it cannot hide one
/// in `encode_msg`.
#[test]
fn delivery_parser_reads_known_frames() {
    let frames = b"HMSG a.b 9 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\nMSG a.b 9 2\r\nhi\r\n";
    let (first, used) = parse_delivery(frames).unwrap();
    assert!(first.headers_op);
    assert_eq!(
        (first.reply.as_slice(), first.headers.as_slice()),
        (&b"r"[..], &b"NATS/1.0\r\n\r\n"[..])
    );
    let (second, rest) = parse_delivery(&frames[used..]).unwrap();
    assert_eq!((second.headers_op, second.payload.as_slice()), (false, &b"hi"[..]));
    assert_eq!(used + rest, frames.len());
    assert!(parse_delivery(b"MSG a 1 3\r\nhi\r\n").is_err());
    assert!(parse_delivery(b"MSG a  1 2\r\nhi\r\n").is_err());
    assert!(parse_delivery(b"HMSG a 1 5 2\r\nhello\r\n").is_err());
}
