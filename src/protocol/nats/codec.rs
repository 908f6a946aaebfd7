//! NATS client protocol codec: bytes from a client -> [`ClientOp`], and the server's replies
//! (INFO, MSG, HMSG, PING, PONG, +OK, -ERR) -> bytes.
//!
//! Pure functions over buffers, no I/O. A frame is checked for completeness and size before
//! anything is built; a PUB whose declared size is over `max_payload` is rejected before its
//! body is buffered. Frames are `Bytes` slices of the read buffer (`split_to().freeze()`), so a
//! routed payload is never copied. Rules follow nats-server's `parser.go`: ops are
//! case-insensitive, arguments are split on spaces and tabs, a line ends in `\n` (optionally
//! preceded by `\r`), a payload is followed by `\r\n`.

use crate::message::{Message, MsgParts};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One operation sent by a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOp {
    /// `CONNECT {json}`; the JSON text.
    Connect(Bytes),
    /// `PUB` or `HPUB` (when `headers` is non-empty).
    Pub(Message),
    /// `SUB <subject> [queue] <sid>`.
    Sub {
        /// Subscription filter.
        subject: Bytes,
        /// Queue group; empty for a plain subscription.
        queue: Bytes,
        /// The client's subscription id.
        sid: Bytes,
    },
    /// `UNSUB <sid> [max]`.
    Unsub {
        /// The client's subscription id.
        sid: Bytes,
        /// Deliveries after which the subscription ends; `None` ends it now.
        max: Option<u64>,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
}

/// Limits the decoder enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest headers + payload, in bytes.
    pub max_payload: u32,
    /// Longest control line, in bytes (without the line end).
    pub max_control_line: u32,
}

/// Why a client's bytes could not be decoded. Every variant closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A control line longer than `max_control_line`.
    MaxControlLine,
    /// A PUB/HPUB declaring more than `max_payload` bytes.
    MaxPayload,
    /// An unknown operation name, or arguments that do not parse.
    UnknownOperation,
}

impl DecodeError {
    /// The `-ERR` text nats-server sends for this error.
    pub fn err_text(self) -> &'static str {
        match self {
            DecodeError::MaxControlLine => "maximum control line exceeded",
            DecodeError::MaxPayload => "Maximum Payload Violation",
            DecodeError::UnknownOperation => "Unknown Protocol Operation",
        }
    }
}

/// Most arguments any client op takes (`HPUB subject reply hdr total`).
const ARGS_MAX: usize = 4;

/// Decodes one op from the front of `buf`, removing its bytes. `Ok(None)` means more bytes are
/// needed; nothing is consumed then.
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<ClientOp>, DecodeError> {
    match peek_pub(buf, limits) {
        Some(at) => Ok(Some(take_pub(buf, &at))),
        None => decode_declined(buf, limits),
    }
}

/// [`decode`] of a buffer whose front [`peek_pub`] declined: every op but a complete PUB in
/// the clients' form (for the reader, which peeks first itself).
pub fn decode_declined(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<ClientOp>, DecodeError> {
    let scan = buf.len().min(limits.max_control_line as usize + 2);
    let Some(newline) = memchr::memchr(b'\n', &buf[..scan]) else {
        if buf.len() > limits.max_control_line as usize + 1 {
            return Err(DecodeError::MaxControlLine);
        }
        return Ok(None);
    };
    let line_end = if newline > 0 && buf[newline - 1] == b'\r' { newline - 1 } else { newline };
    if line_end > limits.max_control_line as usize {
        return Err(DecodeError::MaxControlLine);
    }
    let line = &buf[..line_end];
    let head_len = newline + 1;
    let op_end = next_blank(line, 0);
    let op = &line[..op_end];

    if op.eq_ignore_ascii_case(b"PUB") {
        let (args, count) = split_args(line, op_end)?;
        let (subject, reply, size) = match count {
            2 => (args[0], (0, 0), parse_size(line, args[1])?),
            3 => (args[0], args[1], parse_size(line, args[2])?),
            _ => return Err(DecodeError::UnknownOperation),
        };
        return finish_pub(buf, limits, head_len, (subject, reply, size));
    }
    if op.eq_ignore_ascii_case(b"HPUB") {
        let (args, count) = split_args(line, op_end)?;
        let (subject, reply, header_size, total) = match count {
            3 => (args[0], (0, 0), parse_size(line, args[1])?, parse_size(line, args[2])?),
            4 => (args[0], args[1], parse_size(line, args[2])?, parse_size(line, args[3])?),
            _ => return Err(DecodeError::UnknownOperation),
        };
        if header_size > total {
            return Err(DecodeError::UnknownOperation);
        }
        if total > limits.max_payload as usize {
            return Err(DecodeError::MaxPayload);
        }
        if !frame_ready(buf, head_len, total)? {
            return Ok(None);
        }
        let body = head_len + header_size;
        let mut at = 0;
        let subject = cut(buf, &mut at, subject);
        let reply = cut(buf, &mut at, reply);
        let headers = cut(buf, &mut at, (head_len, body));
        let payload = cut(buf, &mut at, (body, head_len + total));
        cut_end(buf, at, head_len + total + 2);
        return Ok(Some(ClientOp::Pub(Message {
            subject,
            reply,
            headers,
            payload,
            meta: Default::default(),
        })));
    }
    if op.eq_ignore_ascii_case(b"SUB") {
        let (args, count) = split_args(line, op_end)?;
        let (subject, queue, sid) = match count {
            2 => (args[0], (0, 0), args[1]),
            3 => (args[0], args[1], args[2]),
            _ => return Err(DecodeError::UnknownOperation),
        };
        let frame = buf.split_to(head_len).freeze();
        return Ok(Some(ClientOp::Sub {
            subject: frame.slice(subject.0..subject.1),
            queue: frame.slice(queue.0..queue.1),
            sid: frame.slice(sid.0..sid.1),
        }));
    }
    if op.eq_ignore_ascii_case(b"UNSUB") {
        let (args, count) = split_args(line, op_end)?;
        let max = match count {
            1 => None,
            2 => Some(parse_size(line, args[1])? as u64),
            _ => return Err(DecodeError::UnknownOperation),
        };
        let sid = args[0];
        let frame = buf.split_to(head_len).freeze();
        return Ok(Some(ClientOp::Unsub { sid: frame.slice(sid.0..sid.1), max }));
    }
    if op.eq_ignore_ascii_case(b"PING") || op.eq_ignore_ascii_case(b"PONG") {
        if line[op_end..].iter().any(|b| !is_blank(*b)) {
            return Err(DecodeError::UnknownOperation);
        }
        let ping = op.eq_ignore_ascii_case(b"PING");
        let _ = buf.split_to(head_len);
        return Ok(Some(if ping { ClientOp::Ping } else { ClientOp::Pong }));
    }
    if op.eq_ignore_ascii_case(b"CONNECT") {
        let start = line[op_end..]
            .iter()
            .position(|b| !is_blank(*b))
            .map(|p| op_end + p)
            .ok_or(DecodeError::UnknownOperation)?;
        let frame = buf.split_to(head_len).freeze();
        return Ok(Some(ClientOp::Connect(frame.slice(start..line_end))));
    }
    Err(DecodeError::UnknownOperation)
}

/// The arguments of a PUB line in the form clients send: `PUB <subject> [reply] <size>`, single
/// spaces, a size of at most 9 digits. `None` for any other line, which the general parser
/// then reads (to the same result, or its error). Split out because the general one, with its
/// op name match and argument array, was a third of a 16 B message's decode (callgrind).
#[inline(always)]
fn simple_pub(line: &[u8]) -> Option<(Span, Span, usize)> {
    if line.len() < 7 || line[..4] != *b"PUB " {
        return None;
    }
    let mut digits_start = line.len();
    let mut size = 0;
    let mut scale = 1;
    while digits_start > 4 && line[digits_start - 1].is_ascii_digit() {
        digits_start -= 1;
        size += scale * usize::from(line[digits_start] - b'0');
        scale *= 10;
        if line.len() - digits_start > 9 {
            return None;
        }
    }
    // The blank before the size, and at least one byte of subject before it.
    if digits_start == line.len() || digits_start < 6 || line[digits_start - 1] != b' ' {
        return None;
    }
    let middle_end = digits_start - 1;
    let blank = next_blank(line, 4);
    if blank == 4 {
        return None;
    }
    if blank == middle_end {
        return Some(((4, middle_end), (0, 0), size));
    }
    // A reply: one more token, with nothing blank in it.
    if blank + 1 >= middle_end || next_blank(line, blank + 1) != middle_end {
        return None;
    }
    Some(((4, blank), (blank + 1, middle_end), size))
}

/// A PUB in the form clients send (`PUB <subject> [reply] <size>`, as [`simple_pub`] reads
/// it), complete with its payload's `\r\n` at the front of a read buffer: spans of that
/// buffer, found without consuming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PubAt {
    /// The subject's span.
    pub subject: Span,
    /// The reply subject's span; empty for none.
    pub reply: Span,
    /// The payload's span.
    pub payload: Span,
    /// Bytes of the whole frame, control line to the payload's `\r\n`.
    pub frame: usize,
}

impl PubAt {
    /// The message's parts in `buf`, the buffer this PUB was found in.
    pub fn parts<'a>(&self, buf: &'a [u8]) -> MsgParts<'a> {
        MsgParts {
            subject: &buf[self.subject.0..self.subject.1],
            reply: &buf[self.reply.0..self.reply.1],
            headers: &[],
            payload: &buf[self.payload.0..self.payload.1],
            meta: Default::default(),
        }
    }
}

/// The PUB at the front of `buf` if it is in the simple form (CRLF line end included),
/// within `limits` and complete. `None` for anything else, which [`decode`] then reads (to
/// the same op, or its error, or a wait for more bytes).
#[inline(always)]
pub fn peek_pub(buf: &[u8], limits: &Limits) -> Option<PubAt> {
    let scan = buf.len().min(limits.max_control_line as usize + 2);
    let newline = memchr::memchr(b'\n', &buf[..scan])?;
    if newline == 0 || buf[newline - 1] != b'\r' || newline - 1 > limits.max_control_line as usize {
        return None;
    }
    let (subject, reply, size) = simple_pub(&buf[..newline - 1])?;
    if size > limits.max_payload as usize {
        return None;
    }
    let head_len = newline + 1;
    let frame = head_len + size + 2;
    if buf.len() < frame || buf[frame - 2..frame] != *b"\r\n" {
        return None;
    }
    Some(PubAt { subject, reply, payload: (head_len, head_len + size), frame })
}

/// Removes the PUB `at` ([`peek_pub`] of this buffer) from the front of `buf` and returns it
/// as [`decode`] would have.
#[inline(always)]
pub fn take_pub(buf: &mut BytesMut, at: &PubAt) -> ClientOp {
    let mut pos = 0;
    let subject = cut(buf, &mut pos, at.subject);
    let reply = cut(buf, &mut pos, at.reply);
    let payload = cut(buf, &mut pos, at.payload);
    cut_end(buf, pos, at.frame);
    ClientOp::Pub(Message {
        subject,
        reply,
        headers: Bytes::new(),
        payload,
        meta: Default::default(),
    })
}

/// The rest of a PUB once its line is read: size checks, then the message cut from `buf`.
#[inline(always)]
fn finish_pub(
    buf: &mut BytesMut,
    limits: &Limits,
    head_len: usize,
    (subject, reply, size): (Span, Span, usize),
) -> Result<Option<ClientOp>, DecodeError> {
    if size > limits.max_payload as usize {
        return Err(DecodeError::MaxPayload);
    }
    if !frame_ready(buf, head_len, size)? {
        return Ok(None);
    }
    let mut at = 0;
    let subject = cut(buf, &mut at, subject);
    let reply = cut(buf, &mut at, reply);
    let payload = cut(buf, &mut at, (head_len, head_len + size));
    cut_end(buf, at, head_len + size + 2);
    Ok(Some(ClientOp::Pub(Message {
        subject,
        reply,
        headers: Bytes::new(),
        payload,
        meta: Default::default(),
    })))
}

/// Encodes a client op in its canonical form. `decode(encode(op)) == op` for every op whose
/// fields are valid protocol tokens; the fuzz targets and property tests rely on it.
pub fn encode_client_op(op: &ClientOp, out: &mut BytesMut) {
    match op {
        ClientOp::Connect(json) => {
            out.put_slice(b"CONNECT ");
            out.put_slice(json);
            out.put_slice(b"\r\n");
        }
        ClientOp::Pub(m) => {
            out.put_slice(if m.headers.is_empty() { b"PUB " } else { b"HPUB " });
            out.put_slice(&m.subject);
            if !m.reply.is_empty() {
                out.put_u8(b' ');
                out.put_slice(&m.reply);
            }
            if !m.headers.is_empty() {
                put_number(out, m.headers.len() as u64);
            }
            put_number(out, m.size() as u64);
            out.put_slice(b"\r\n");
            out.put_slice(&m.headers);
            out.put_slice(&m.payload);
            out.put_slice(b"\r\n");
        }
        ClientOp::Sub { subject, queue, sid } => {
            out.put_slice(b"SUB ");
            out.put_slice(subject);
            if !queue.is_empty() {
                out.put_u8(b' ');
                out.put_slice(queue);
            }
            out.put_u8(b' ');
            out.put_slice(sid);
            out.put_slice(b"\r\n");
        }
        ClientOp::Unsub { sid, max } => {
            out.put_slice(b"UNSUB ");
            out.put_slice(sid);
            if let Some(max) = max {
                put_number(out, *max);
            }
            out.put_slice(b"\r\n");
        }
        ClientOp::Ping => out.put_slice(b"PING\r\n"),
        ClientOp::Pong => out.put_slice(b"PONG\r\n"),
    }
}

/// Appends `MSG`/`HMSG` for one delivery. `with_headers` is false for clients that did not
/// announce header support; their copy drops the header block, as nats-server does.
pub fn encode_msg(out: &mut BytesMut, message: &Message, sid: &[u8], with_headers: bool) {
    encode_msg_parts(out, &message.parts(), sid, with_headers);
}

/// [`encode_msg`] from borrowed parts.
#[inline]
pub fn encode_msg_parts(out: &mut BytesMut, message: &MsgParts, sid: &[u8], with_headers: bool) {
    let headers = with_headers && !message.headers.is_empty();
    let payload_len = message.payload.len() + if headers { message.headers.len() } else { 0 };
    out.reserve(message.subject.len() + message.reply.len() + sid.len() + payload_len + 40);
    out.put_slice(if headers { b"HMSG " } else { b"MSG " });
    out.put_slice(message.subject);
    out.put_u8(b' ');
    out.put_slice(sid);
    if !message.reply.is_empty() {
        out.put_u8(b' ');
        out.put_slice(message.reply);
    }
    if headers {
        put_number(out, message.headers.len() as u64);
    }
    put_number(out, payload_len as u64);
    out.put_slice(b"\r\n");
    if headers {
        out.put_slice(message.headers);
    }
    out.put_slice(message.payload);
    out.put_slice(b"\r\n");
}

/// Payloads up to this size are copied into a [`MsgFrame`] with the control line, so a
/// delivery of a small message is three copies; larger ones are copied from the message.
pub const MSG_FRAME_PAYLOAD_MAX: usize = 128;

/// A MSG (no header block) composed once for many subscribers: everything but the sid, so
/// each delivery is three copies (`MSG <subject> `, the sid, the rest) instead of nine writes
/// and a number formatted again (`encode_msg_parts`). In NATS 1->8 at 16 B the encode was 200
/// of the 435 instructions of a delivery (callgrind, `benches/publish_path.rs` `fan8`). Each
/// shard keeps one and composes every fan-out's message into it, so its buffer is reused: no
/// allocation once it has grown to the longest control line.
#[derive(Debug, Default)]
pub struct MsgFrame {
    /// `bytes[..head]` is `MSG <subject> `, `bytes[head..]` what follows the sid: ` [reply
    /// ]<size>\r\n`, then the payload and `\r\n` if `folded`.
    bytes: Vec<u8>,
    head: usize,
    folded: bool,
    /// Which composition it holds: 1, 2, ... (0: none yet).
    id: u64,
}

impl MsgFrame {
    /// Composes `message` and returns the composition's id, or `None` (and keeps what it
    /// held) if it has a header block: HMSG or MSG then depends on each subscriber's `headers`.
    pub fn compose(&mut self, message: &MsgParts) -> Option<u64> {
        if !message.headers.is_empty() {
            return None;
        }
        self.id += 1;
        let bytes = &mut self.bytes;
        bytes.clear();
        bytes.extend_from_slice(b"MSG ");
        bytes.extend_from_slice(message.subject);
        bytes.push(b' ');
        self.head = bytes.len();
        if !message.reply.is_empty() {
            bytes.push(b' ');
            bytes.extend_from_slice(message.reply);
        }
        bytes.push(b' ');
        bytes.extend_from_slice(itoa::Buffer::new().format(message.payload.len()).as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.folded = message.payload.len() <= MSG_FRAME_PAYLOAD_MAX;
        if self.folded {
            bytes.extend_from_slice(message.payload);
            bytes.extend_from_slice(b"\r\n");
        }
        Some(self.id)
    }

    /// The id of the composition it holds.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Appends the MSG of the composed message, whose payload is `payload`, for subscription
    /// `sid`: what `encode_msg_parts` writes for it.
    #[inline]
    pub fn encode(&self, out: &mut BytesMut, sid: &[u8], payload: &[u8]) {
        let rest = if self.folded { 0 } else { payload.len() + 2 };
        out.reserve(self.bytes.len() + sid.len() + rest);
        out.extend_from_slice(&self.bytes[..self.head]);
        out.extend_from_slice(sid);
        out.extend_from_slice(&self.bytes[self.head..]);
        if !self.folded {
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Appends `-ERR '<text>'`.
pub fn encode_err(out: &mut BytesMut, text: &str) {
    out.put_slice(b"-ERR '");
    out.put_slice(text.as_bytes());
    out.put_slice(b"'\r\n");
}

/// Appends `INFO <json>`.
pub fn encode_info(out: &mut BytesMut, json: &[u8]) {
    out.put_slice(b"INFO ");
    out.put_slice(json);
    out.put_slice(b"\r\n");
}

/// The header block of a no-responders status message (nats-server 2.9 form).
pub const NO_RESPONDERS_HEADERS: &[u8] = b"NATS/1.0 503\r\n\r\n";

fn put_number(out: &mut BytesMut, n: u64) {
    let mut text = itoa::Buffer::new();
    out.put_u8(b' ');
    out.put_slice(text.format(n).as_bytes());
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A byte range of a buffer: start, end.
pub type Span = (usize, usize);

/// Splits the arguments after the op name into spans of `line`.
fn split_args(line: &[u8], from: usize) -> Result<([Span; ARGS_MAX], usize), DecodeError> {
    let mut args = [(0, 0); ARGS_MAX];
    let mut count = 0;
    let mut i = from;
    while i < line.len() {
        if is_blank(line[i]) {
            i += 1;
            continue;
        }
        let start = i;
        i = next_blank(line, i);
        if count == ARGS_MAX {
            return Err(DecodeError::UnknownOperation);
        }
        args[count] = (start, i);
        count += 1;
    }
    Ok((args, count))
}

/// The index of the first space or tab in `line` at or after `from`, else `line.len()`.
/// Eight bytes at a time: a byte-by-byte scan of a PUB line was 320 of the 2200 instructions a
/// 16 B message cost in `benches/publish_path.rs` (callgrind).
#[inline]
fn next_blank(line: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(word) = line.get(i..i + 8) {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let (space, tab) = (word ^ (ONES * u64::from(b' ')), word ^ (ONES * u64::from(b'\t')));
        // A zero byte of `space` or `tab` is a blank. The lowest flag set is exact (a byte
        // above the first zero may be flagged falsely, through the borrow, never one below).
        let zeros = (space.wrapping_sub(ONES) & !space | tab.wrapping_sub(ONES) & !tab) & HIGHS;
        if zeros != 0 {
            return i + (zeros.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < line.len() && !is_blank(line[i]) {
        i += 1;
    }
    i
}

fn parse_size(line: &[u8], span: Span) -> Result<usize, DecodeError> {
    let digits = &line[span.0..span.1];
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(DecodeError::UnknownOperation);
    }
    Ok(digits.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0')))
}

/// True once a control line of `head_len` bytes, its `size`-byte body and the body's `\r\n`
/// are all in `buf`; until then makes room for the rest and returns false.
fn frame_ready(buf: &mut BytesMut, head_len: usize, size: usize) -> Result<bool, DecodeError> {
    let total = head_len + size + 2;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(false);
    }
    if &buf[total - 2..total] != b"\r\n" {
        return Err(DecodeError::UnknownOperation);
    }
    Ok(true)
}

/// Cuts the part `span` of the frame at the front of `buf` (of which `at` bytes are already
/// gone) straight from the read buffer: one reference count for a non-empty part, none for
/// an empty one. A frame sliced into parts would take one more for itself and give it back at
/// once (two atomic operations per message that this saves). Parts are cut in ascending order.
#[inline(always)]
fn cut(buf: &mut BytesMut, at: &mut usize, span: Span) -> Bytes {
    let (start, end) = span;
    if start == end {
        return Bytes::new();
    }
    debug_assert!(*at <= start && start < end);
    buf.advance(start - *at);
    *at = end;
    buf.split_to(end - start).freeze()
}

/// Drops the rest of a `total`-byte frame after its parts were cut.
#[inline(always)]
fn cut_end(buf: &mut BytesMut, at: usize, total: usize) {
    buf.advance(total - at);
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_payload: 1024, max_control_line: 64 };

    fn decode_all(input: &[u8]) -> Result<Vec<ClientOp>, DecodeError> {
        let mut buf = BytesMut::from(input);
        let mut ops = Vec::new();
        while let Some(op) = decode(&mut buf, &LIMITS)? {
            ops.push(op);
        }
        Ok(ops)
    }

    #[test]
    fn next_blank_finds_the_first_space_or_tab_at_every_position() {
        for len in 0..40 {
            for blank in [None, Some(b' '), Some(b'\t')] {
                for at in 0..len.max(1) {
                    // Bytes next to the blanks' values (0x1f, 0x21, 0x08, 0x0a) and high bytes,
                    // to catch a borrow that flags a byte too low.
                    let mut line: Vec<u8> =
                        (0..len).map(|i| [b'a', 0x1f, 0x21, 0x08, 0x0a, 0xa0][i % 6]).collect();
                    if let (Some(b), true) = (blank, at < len) {
                        line[at] = b;
                        if at + 3 < len {
                            line[at + 3] = b' ';
                        }
                    }
                    for from in 0..=len {
                        let want = (from..len).find(|i| is_blank(line[*i])).unwrap_or(len);
                        assert_eq!(next_blank(&line, from), want, "{line:?} from {from}");
                    }
                }
            }
        }
    }

    #[test]
    fn pub_lines_read_the_same_by_the_fast_and_the_general_parser() {
        // `pub` in lower case always takes the general parser; `PUB` takes the fast one when
        // it can. Both must agree on every line, errors included.
        let lines = [
            "a 0",
            "a 5",
            "a.b 5",
            "a r 5",
            "a r 05",
            "a  5",
            "a\t5",
            "a r\t5",
            "a\tr 5",
            "a r  5",
            " a 5",
            "a 5 ",
            "a r s 5",
            "a",
            "5",
            "a x5",
            "a 5x",
            "a 123456789",
            "a 1234567890",
            "a 12345678901",
            "a r 999999999",
            "a -1",
            "ab.cd.ef rep.ly 3",
            "a\t\t5",
            "a r \t5",
        ];
        let limits = Limits { max_payload: 1 << 30, max_control_line: 64 };
        for line in lines {
            for payload in ["", "hello", "abc"] {
                let decode = |op: &str| {
                    let mut buf =
                        BytesMut::from(format!("{op} {line}\r\n{payload}\r\n").as_bytes());
                    let result = decode(&mut buf, &limits);
                    (result, buf.len())
                };
                assert_eq!(decode("PUB"), decode("pub"), "PUB {line:?} with {payload:?}");
            }
        }
    }

    /// What the reader delivers in place must be what `decode` would have read: the same
    /// op, the same bytes consumed. Anything `peek_pub` declines goes to `decode` unchanged.
    #[test]
    fn peek_and_take_agree_with_decode() {
        let limits = Limits { max_payload: 16, max_control_line: 32 };
        let cases: &[(&[u8], bool)] = &[
            (b"PUB a 5\r\nhello\r\n", true),
            (b"PUB a.b r.s 3\r\nabc\r\nPING\r\n", true),
            (b"PUB a 0\r\n\r\n", true),
            (b"PUB a 16\r\n0123456789abcdef\r\n", true),
            (b"PUB a 5\r\nhello\r", false), // incomplete
            (b"PUB a 5\r\nhel", false),     // incomplete
            (b"PUB a 5\nhello\r\n", false), // bare LF line end: decode's
            (b"PUB a 5\r\nhelloXY", false), // no CRLF after the payload: decode's error
            (b"PUB a 17\r\n0123456789abcdefg\r\n", false), // over max_payload
            (b"pub a 5\r\nhello\r\n", false), // lower case: general parser
            (b"PUB a  5\r\nhello\r\n", false), // two blanks: general parser
            (b"HPUB a 2 7\r\nh\r\nhello\r\n", false),
            (b"PUB a.very.long.subject.over.the.control.line 1\r\nx\r\n", false),
        ];
        for (input, found) in cases {
            let at = peek_pub(input, &limits);
            assert_eq!(at.is_some(), *found, "{:?}", String::from_utf8_lossy(input));
            let Some(at) = at else { continue };
            let (mut taken, mut decoded) = (BytesMut::from(*input), BytesMut::from(*input));
            let op = take_pub(&mut taken, &at);
            assert_eq!(Some(op.clone()), decode(&mut decoded, &limits).unwrap());
            assert_eq!(taken, decoded, "bytes left");
            assert_eq!(at.frame, input.len() - taken.len());
            let ClientOp::Pub(message) = op else { panic!("not a PUB") };
            assert_eq!(at.parts(input), message.parts());
        }
    }

    #[test]
    fn pub_sub_unsub_ping() {
        let ops = decode_all(
            b"PUB a.b 5\r\nhello\r\npub a.b _INBOX.1  2\r\nhi\r\nSUB a.* q 7\r\nsub > 8\r\n\
              UNSUB 7\r\nunsub 8 10\r\nPING\r\npong\n",
        )
        .unwrap();
        assert_eq!(ops.len(), 8);
        let ClientOp::Pub(m) = &ops[0] else { panic!("{:?}", ops[0]) };
        assert_eq!(
            (&m.subject[..], &m.reply[..], &m.payload[..]),
            (&b"a.b"[..], &b""[..], &b"hello"[..])
        );
        let ClientOp::Pub(m) = &ops[1] else { panic!() };
        assert_eq!(&m.reply[..], b"_INBOX.1");
        assert_eq!(
            ops[2],
            ClientOp::Sub { subject: "a.*".into(), queue: "q".into(), sid: "7".into() }
        );
        assert_eq!(
            ops[3],
            ClientOp::Sub { subject: ">".into(), queue: "".into(), sid: "8".into() }
        );
        assert_eq!(ops[4], ClientOp::Unsub { sid: "7".into(), max: None });
        assert_eq!(ops[5], ClientOp::Unsub { sid: "8".into(), max: Some(10) });
        assert_eq!(ops[6], ClientOp::Ping);
        assert_eq!(ops[7], ClientOp::Pong);
    }

    #[test]
    fn hpub_splits_headers() {
        let ops = decode_all(b"HPUB s r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n").unwrap();
        let ClientOp::Pub(m) = &ops[0] else { panic!() };
        assert_eq!(&m.headers[..], b"NATS/1.0\r\n\r\n");
        assert_eq!(&m.payload[..], b"hi");
        assert_eq!(&m.reply[..], b"r");
        assert_eq!(decode_all(b"HPUB s 5 4\r\nNATS/\r\n"), Err(DecodeError::UnknownOperation));
    }

    #[test]
    fn connect_keeps_json_with_spaces() {
        let ops = decode_all(b"CONNECT {\"verbose\": false, \"name\": \"a b\"}\r\n").unwrap();
        assert_eq!(ops[0], ClientOp::Connect("{\"verbose\": false, \"name\": \"a b\"}".into()));
    }

    #[test]
    fn incomplete_input_waits_and_consumes_nothing() {
        for partial in [&b"PU"[..], b"PUB a 5\r\nhel", b"PUB a 5\r\nhello\r", b"SUB a 1"] {
            let mut buf = BytesMut::from(partial);
            assert_eq!(decode(&mut buf, &LIMITS), Ok(None));
            assert_eq!(&buf[..], partial);
        }
    }

    #[test]
    fn limits_are_enforced_before_buffering() {
        let mut buf = BytesMut::from(&b"PUB a 1025\r\n"[..]);
        assert_eq!(decode(&mut buf, &LIMITS), Err(DecodeError::MaxPayload));
        let mut long = BytesMut::from(&[b'x'; 70][..]);
        assert_eq!(decode(&mut long, &LIMITS), Err(DecodeError::MaxControlLine));
        let mut long_line = BytesMut::from(
            &b"SUB aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 1\r\n"[..],
        );
        assert_eq!(decode(&mut long_line, &LIMITS), Err(DecodeError::MaxControlLine));
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &b"FOO\r\n"[..],
            b"PUB a\r\n",
            b"PUB a b c d\r\n",
            b"PUB a x\r\n",
            b"PUB a 2\r\nhiXX",
            b"SUB a\r\n",
            b"UNSUB\r\n",
            b"PING x\r\n",
            b"CONNECT\r\n",
        ] {
            assert_eq!(
                decode_all(bad),
                Err(DecodeError::UnknownOperation),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn msg_encoding() {
        let m = Message {
            subject: "a.b".into(),
            reply: "r".into(),
            headers: "NATS/1.0\r\n\r\n".into(),
            payload: "hi".into(),
            meta: Default::default(),
        };
        let mut out = BytesMut::new();
        encode_msg(&mut out, &m, b"9", true);
        encode_msg(&mut out, &m, b"9", false);
        assert_eq!(
            &out[..],
            &b"HMSG a.b 9 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\nMSG a.b 9 r 2\r\nhi\r\n"[..]
        );
    }
}
