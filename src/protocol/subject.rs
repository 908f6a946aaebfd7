//! NATS subject rules and the translation between MQTT topics and NATS subjects.
//!
//! Owns: what a valid subscription filter and a valid literal subject are (nats-server's
//! `sublist.go` `IsValidSubject`, `IsValidLiteralSubject`), and the pure, allocation-free-when-
//! unchanged mapping between MQTT topic names / topic filters and the router's canonical NATS
//! subjects. Does not own: sessions, `$share`, `$MQTT.` internal prefixes, permissions, or what
//! a session does with a subject that has no MQTT form (it skips the delivery and counts it).
//!
//! The MQTT mapping follows nats-server >= 2.10 (`server/mqtt.go` `mqttToNATSSubjectConversion`,
//! `natsSubjectToMQTTTopic`), level by level:
//!
//! | MQTT level                 | NATS token           | note                                  |
//! |----------------------------|----------------------|---------------------------------------|
//! | `foo` (levels joined `/`)  | `foo` (joined `.`)   |                                       |
//! | empty (`/a`, `a/`, `a//b`) | `/`                  | `/a` -> `/.a`, `a/` -> `a./`          |
//! | `.` inside a level         | `//`                 | `spBv1.0/x` -> `spBv1//0.x`           |
//! | `+` (filters only)         | `*`                  |                                       |
//! | `#` (filters only, last)   | `>`                  | plus a subscription on the parent     |
//! | exactly `*` / `>`          | `/*` / `/>`          | Isthmus only, see below               |
//!
//! Where Isthmus deliberately differs from nats-server (details in `docs/mqtt-subjects.md`):
//! - A level that is exactly `*` or `>` is a literal in MQTT but would become a NATS wildcard
//!   (nats-server publishes MQTT `a/*` as the wildcard subject `a.*`). Isthmus escapes it as
//!   the token `/*` / `/>`, which nats-server's own reverse mapping also turns back into `*`/`>`.
//! - Wildcard placement is checked ([MQTT-4.7.1-2], [MQTT-4.7.1-3]): `a+`, `a/#/b`, `#a` are
//!   refused, where nats-server converts them (`a+` -> `a*`, a literal NATS token).
//! - Subject to topic is fallible: a subject with no MQTT topic that maps back to it (a token
//!   with a bare `/` such as `a/b`, `+`/`#`, NUL, DEL, invalid UTF-8, over 65535 bytes) is an
//!   error, so that every topic we deliver round-trips. nats-server drops the bare `/` (`a/b`
//!   becomes `ab`) and delivers topics MQTT forbids.
//! - `$` topics map like any other; [`is_reserved_for_wildcards`] implements [MQTT-4.7.2-1].

use bytes::BufMut;
use std::borrow::Cow;
use std::fmt;

/// True if `filter` is a valid subscription subject: non-empty tokens separated by `.`, no
/// whitespace, `*` and `>` special only as whole tokens, and `>` only as the last token.
pub fn is_valid_filter(filter: &[u8]) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut tokens = filter.split(|&b| b == b'.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() || token.iter().any(|b| is_space(*b)) {
            return false;
        }
        if token == b">" && tokens.peek().is_some() {
            return false;
        }
    }
    true
}

/// True if `subject` is a valid literal subject: a valid filter without wildcard tokens.
pub fn is_valid_literal(subject: &[u8]) -> bool {
    is_valid_filter(subject) && !subject.split(|&b| b == b'.').any(|t| t == b"*" || t == b">")
}

/// True if `filter` has a wildcard token.
pub fn has_wildcard(filter: &[u8]) -> bool {
    filter.split(|&b| b == b'.').any(|t| t == b"*" || t == b">")
}

/// Longest MQTT topic a UTF-8 string field can carry ([MQTT-1.5.3]).
pub const MQTT_TOPIC_BYTES_MAX: usize = u16::MAX as usize;

/// Why an MQTT topic, an MQTT filter or a NATS subject could not be translated. Small and
/// `Copy`; [`TopicError::reason`] gives nats-server's wording where nats-server has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicError {
    /// A PUBLISH (or will) topic is empty ([MQTT-4.7.3-1]).
    EmptyTopic,
    /// A SUBSCRIBE or UNSUBSCRIBE filter is empty ([MQTT-4.7.3-1]).
    EmptyFilter,
    /// `+` or `#` in a topic name ([MQTT-3.3.2-2]).
    WildcardInTopic,
    /// `+` not alone in its level, `#` not alone or not last ([MQTT-4.7.1-2], [MQTT-4.7.1-3]).
    WildcardPlacement,
    /// U+0000 in a topic or filter ([MQTT-1.5.3-2]).
    NullCharacter,
    /// Not well-formed UTF-8 ([MQTT-1.5.3-1]).
    InvalidUtf8,
    /// Whitespace or DEL: MQTT allows them, NATS subjects cannot carry them (nats-server rule).
    UnsupportedCharacter,
    /// The translated topic would not fit an MQTT string (65535 bytes).
    TooLong,
    /// A NATS subject with no MQTT topic that maps back to it: an empty or wildcard token, or
    /// a `/` that is not part of the `/`, `//`, `/*`, `/>` escapes.
    NoMqttForm,
}

impl TopicError {
    /// Human-readable text; matches nats-server's error strings where it has one.
    pub fn reason(self) -> &'static str {
        match self {
            TopicError::EmptyTopic => "topic cannot be empty",
            TopicError::EmptyFilter => "topic filter cannot be empty",
            TopicError::WildcardInTopic => "wildcards not allowed in publish's topic",
            TopicError::WildcardPlacement => "wildcard must occupy a whole level, '#' the last",
            TopicError::NullCharacter => "null character not allowed in topic",
            TopicError::InvalidUtf8 => "invalid utf8 for topic",
            TopicError::UnsupportedCharacter => "character not supported for MQTT topics",
            TopicError::TooLong => "topic longer than 65535 bytes",
            TopicError::NoMqttForm => "subject has no MQTT topic form",
        }
    }

    /// The MQTT 3.1.1 conformance clause the error enforces, if it is a spec rule.
    pub fn clause(self) -> Option<&'static str> {
        match self {
            TopicError::EmptyTopic | TopicError::EmptyFilter => Some("MQTT-4.7.3-1"),
            TopicError::WildcardInTopic => Some("MQTT-3.3.2-2"),
            TopicError::WildcardPlacement => Some("MQTT-4.7.1-2"),
            TopicError::NullCharacter => Some("MQTT-1.5.3-2"),
            TopicError::InvalidUtf8 => Some("MQTT-1.5.3-1"),
            TopicError::UnsupportedCharacter | TopicError::TooLong | TopicError::NoMqttForm => None,
        }
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.clause() {
            Some(clause) => write!(f, "[{clause}] {}", self.reason()),
            None => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for TopicError {}

/// The NATS side of one MQTT topic filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterSubject<'a> {
    /// The NATS filter: `foo/+/#` -> `foo.*.>`.
    pub subject: Cow<'a, [u8]>,
}

impl FilterSubject<'_> {
    /// For a filter ending in `/#`, the parent level it also matches ([MQTT-4.7.1-2]:
    /// `sport/#` matches `sport`), which needs a second NATS subscription: `foo.>` -> `foo`.
    /// `None` for `#` alone, which has no parent. Borrowed from `subject`; no allocation.
    pub fn parent(&self) -> Option<&[u8]> {
        self.subject.strip_suffix(b".>")
    }

    /// True if the filter starts with a wildcard; see [`is_reserved_for_wildcards`].
    pub fn is_reserved_for_wildcards(&self) -> bool {
        is_reserved_for_wildcards(&self.subject)
    }
}

/// Translates a PUBLISH (or will) topic name into a literal NATS subject. Returns `topic`
/// itself, borrowed, when it is a single level with nothing to escape.
pub fn mqtt_topic_to_subject(topic: &[u8]) -> Result<Cow<'_, [u8]>, TopicError> {
    if topic.is_empty() {
        return Err(TopicError::EmptyTopic);
    }
    mqtt_to_subject(topic, false)
}

/// Translates a SUBSCRIBE or UNSUBSCRIBE topic filter into a NATS filter (`+` -> `*`,
/// `#` -> `>`). Check [`FilterSubject::parent`] for the second subscription `/#` needs.
pub fn mqtt_filter_to_subject(filter: &[u8]) -> Result<FilterSubject<'_>, TopicError> {
    if filter.is_empty() {
        return Err(TopicError::EmptyFilter);
    }
    mqtt_to_subject(filter, true).map(|subject| FilterSubject { subject })
}

/// Translates a literal NATS subject into the MQTT topic delivered to MQTT subscribers: the
/// exact inverse of [`mqtt_topic_to_subject`]. Fails with [`TopicError::NoMqttForm`] (or the
/// character error) when no MQTT topic maps to `subject`; the caller skips that delivery and
/// counts it. Returns `subject` itself, borrowed, when it is one token with nothing to unescape.
pub fn subject_to_mqtt_topic(subject: &[u8]) -> Result<Cow<'_, [u8]>, TopicError> {
    let mut topic = Vec::new();
    if subject_to_mqtt_topic_into(subject, &mut topic)? {
        Ok(Cow::Owned(topic))
    } else {
        Ok(Cow::Borrowed(subject))
    }
}

/// Like [`subject_to_mqtt_topic`], but a translated topic is appended to `out` (so a caller
/// with a reused buffer allocates nothing). Returns `Ok(false)`, writing nothing, when the
/// subject is its own topic. On an error `out` may hold part of a topic: discard it.
pub fn subject_to_mqtt_topic_into(
    subject: &[u8],
    out: &mut impl BufMut,
) -> Result<bool, TopicError> {
    check_characters(subject)?;
    if !subject.contains(&b'/') && !subject.contains(&b'.') {
        return match subject {
            b"" | b"*" | b">" => Err(TopicError::NoMqttForm),
            _ if subject.iter().any(|&b| b == b'+' || b == b'#') => Err(TopicError::NoMqttForm),
            _ if subject.len() > MQTT_TOPIC_BYTES_MAX => Err(TopicError::TooLong),
            _ => Ok(false),
        };
    }
    let mut written = 0;
    for (index, token) in subject.split(|&b| b == b'.').enumerate() {
        if index > 0 {
            out.put_u8(b'/');
            written += 1;
        }
        written += unescape_token(token, out)?;
    }
    if written == 0 {
        // The subject `/`: one empty level, which is the empty (invalid) topic.
        return Err(TopicError::NoMqttForm);
    }
    // Unescaping never lengthens, so a subject this long may still fit; check the result.
    if written > MQTT_TOPIC_BYTES_MAX {
        return Err(TopicError::TooLong);
    }
    Ok(true)
}

/// True if `filter` (a NATS filter made by [`mqtt_filter_to_subject`]) starts with a wildcard:
/// `>`, `*` or `*.…`, i.e. the MQTT filter started with `#` or `+`. Such a subscription must
/// not receive subjects starting with `$` ([MQTT-4.7.2-1]; nats-server
/// `isMQTTReservedSubscription`). `/#` (`/.>`) starts with an empty level, not a wildcard.
pub fn is_reserved_for_wildcards(filter: &[u8]) -> bool {
    matches!(filter, b">" | b"*") || filter.starts_with(b"*.")
}

/// True if `subject` is in the `$` space that wildcard-first MQTT filters never match.
pub fn is_reserved_subject(subject: &[u8]) -> bool {
    subject.first() == Some(&b'$')
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\x0c')
}

/// The shared engine of [`mqtt_topic_to_subject`] and [`mqtt_filter_to_subject`]; `input` is
/// non-empty. Checks everything first, then copies only if some byte or level changes.
fn mqtt_to_subject(input: &[u8], wildcards: bool) -> Result<Cow<'_, [u8]>, TopicError> {
    let Some(size) = translated_size(input, wildcards)? else { return Ok(Cow::Borrowed(input)) };
    let mut subject = Vec::with_capacity(size);
    write_subject(input, &mut subject);
    debug_assert_eq!(subject.len(), size);
    Ok(Cow::Owned(subject))
}

/// Like [`mqtt_topic_to_subject`], but a translated subject is appended to `out` instead of
/// a new vector (so a caller with a reused buffer allocates nothing). Returns `Ok(false)`,
/// writing nothing, when the topic is its own subject.
pub fn mqtt_topic_to_subject_into(topic: &[u8], out: &mut impl BufMut) -> Result<bool, TopicError> {
    if topic.is_empty() {
        return Err(TopicError::EmptyTopic);
    }
    if translated_size(topic, false)?.is_none() {
        return Ok(false);
    }
    write_subject(topic, out);
    Ok(true)
}

/// Checks an MQTT topic or filter; `None` if it is its own subject, else the translated size.
fn translated_size(input: &[u8], wildcards: bool) -> Result<Option<usize>, TopicError> {
    match plain_translated_size(input) {
        Some(size) => Ok(size),
        None => checked_translated_size(input, wildcards),
    }
}

/// [`translated_size`] in one pass for the common topic: printable ASCII without wildcards.
/// `None` for any other input, which the general check then reads. A gateway that publishes
/// to many topics misses the connection's subject cache on every message, and the several
/// passes of the general check were about 1050 instructions of a 3-level topic there
/// (callgrind of benches/publish_path.rs with `rotate`).
fn plain_translated_size(input: &[u8]) -> Option<Option<usize>> {
    let (mut extra, mut slashes, mut level_start) = (0, 0, 0);
    for (i, &b) in input.iter().enumerate() {
        match b {
            b'/' => {
                extra += usize::from(special_level(&input[level_start..i]));
                slashes += 1;
                level_start = i + 1;
            }
            b'.' => extra += 1,
            b'+' | b'#' => return None,
            0x21..=0x7e => {}
            _ => return None,
        }
    }
    extra += usize::from(special_level(&input[level_start..]));
    Some((extra > 0 || slashes > 0).then_some(input.len() + extra))
}

/// A level that is its own NATS token only with a `/` escape: empty, `*` or `>`.
fn special_level(level: &[u8]) -> bool {
    matches!(level, b"" | b"*" | b">")
}

/// [`translated_size`] for any input: characters, wildcards and their placement checked.
fn checked_translated_size(input: &[u8], wildcards: bool) -> Result<Option<usize>, TopicError> {
    debug_assert!(!input.is_empty());
    check_characters(input)?;
    let mut unchanged = true;
    let mut extra = 0;
    let mut levels = input.split(|&b| b == b'/').peekable();
    while let Some(level) = levels.next() {
        if level.iter().any(|&b| b == b'+' || b == b'#') {
            if !wildcards {
                return Err(TopicError::WildcardInTopic);
            }
            let last = levels.peek().is_none();
            if !(level == b"+" || (level == b"#" && last)) {
                return Err(TopicError::WildcardPlacement);
            }
            unchanged = false;
        }
        match level {
            b"" | b"*" | b">" => extra += 1,
            _ => extra += level.iter().filter(|&&b| b == b'.').count(),
        }
    }
    if unchanged && extra == 0 && !input.contains(&b'/') {
        return Ok(None);
    }
    Ok(Some(input.len() + extra))
}

/// Appends the subject of a checked topic or filter.
fn write_subject(input: &[u8], subject: &mut impl BufMut) {
    for (index, level) in input.split(|&b| b == b'/').enumerate() {
        if index > 0 {
            subject.put_u8(b'.');
        }
        escape_level(level, subject);
    }
}

/// Appends the NATS token for one MQTT level (already checked).
fn escape_level(level: &[u8], subject: &mut impl BufMut) {
    match level {
        b"" => subject.put_u8(b'/'),
        b"+" => subject.put_u8(b'*'),
        b"#" => subject.put_u8(b'>'),
        b"*" => subject.put_slice(b"/*"),
        b">" => subject.put_slice(b"/>"),
        _ => {
            // Whole runs between dots: one copy each instead of a bounds-checked push per byte.
            for (index, run) in level.split(|&b| b == b'.').enumerate() {
                if index > 0 {
                    subject.put_slice(b"//");
                }
                subject.put_slice(run);
            }
        }
    }
}

/// Appends the MQTT level for one NATS token, or fails if no level maps to it.
fn unescape_token(token: &[u8], topic: &mut impl BufMut) -> Result<usize, TopicError> {
    match token {
        b"/" => return Ok(0),
        b"/*" => {
            topic.put_u8(b'*');
            return Ok(1);
        }
        b"/>" => {
            topic.put_u8(b'>');
            return Ok(1);
        }
        b"" | b"*" | b">" => return Err(TopicError::NoMqttForm),
        _ => {}
    }
    if token.iter().any(|&b| b == b'+' || b == b'#') {
        return Err(TopicError::NoMqttForm);
    }
    // Runs between `/` are copied whole; each `//` becomes `.`, a lone `/` has no MQTT form.
    let mut written = 0;
    let mut rest = token;
    while let Some(slash) = memchr::memchr(b'/', rest) {
        if rest.get(slash + 1) != Some(&b'/') {
            return Err(TopicError::NoMqttForm);
        }
        topic.put_slice(&rest[..slash]);
        topic.put_u8(b'.');
        written += slash + 1;
        rest = &rest[slash + 2..];
    }
    topic.put_slice(rest);
    Ok(written + rest.len())
}

/// The character rules shared by both directions: well-formed UTF-8, no NUL, and none of the
/// bytes nats-server refuses (whitespace would split a NATS control line; DEL is the pivot
/// byte of nats-server's subject tree, kept out for interoperability).
fn check_characters(bytes: &[u8]) -> Result<(), TopicError> {
    if let Some(&b) = bytes.iter().find(|&&b| b == 0 || b == 0x7f || is_space(b)) {
        return Err(if b == 0 {
            TopicError::NullCharacter
        } else {
            TopicError::UnsupportedCharacter
        });
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(TopicError::InvalidUtf8);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_pass_size_agrees_with_the_general_check() {
        // Every string of up to 5 symbols over an alphabet of separators, wildcards, escapes
        // and characters the general check refuses.
        let alphabet: [&[u8]; 10] =
            [b"a", b".", b"/", b"*", b">", b"+", b"#", b" ", "\u{e9}".as_bytes(), b"\x01"];
        let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..5 {
            let longer: Vec<Vec<u8>> = inputs
                .iter()
                .flat_map(|s| alphabet.iter().map(move |a| [&s[..], a].concat()))
                .collect();
            inputs.extend(longer);
            inputs.dedup();
        }
        assert!(inputs.len() > 100_000, "{} inputs", inputs.len());
        for input in inputs.iter().filter(|i| !i.is_empty()) {
            for wildcards in [false, true] {
                let want = checked_translated_size(input, wildcards);
                if let Some(fast) = plain_translated_size(input) {
                    assert_eq!(Ok(fast), want, "{input:?}");
                }
                assert_eq!(translated_size(input, wildcards), want, "{input:?}");
            }
        }
    }

    #[test]
    fn filters() {
        for ok in ["a", "a.b", "*", ">", "a.*.c", "a.>", "a*.b", "a>.b", "$SYS.x", "_INBOX.ab.*"] {
            assert!(is_valid_filter(ok.as_bytes()), "{ok} should be valid");
        }
        for bad in ["", ".", "a.", ".a", "a..b", "a.>.b", "> .a", "a b", "a\tb", ">.a"] {
            assert!(!is_valid_filter(bad.as_bytes()), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn literals() {
        assert!(is_valid_literal(b"a.b.c"));
        assert!(is_valid_literal(b"a*.b"));
        assert!(!is_valid_literal(b"a.*"));
        assert!(!is_valid_literal(b">"));
        assert!(!is_valid_literal(b"a..b"));
        assert!(has_wildcard(b"a.*.c"));
        assert!(!has_wildcard(b"a.b*.c"));
    }

    // Rows of `TestMQTTTopicAndSubjectConversion` and `TestMQTTFilterConversion` in
    // nats-io/nats-server `server/mqtt_test.go` (v2.10+ table, with the `.` -> `//` rows; read
    // at main, 2025). Each topic row also checks the reverse mapping, as the Go test does.
    const NATS_SERVER_TOPIC_ROWS: &[(&str, &str)] = &[
        ("/", "/./"),
        ("//", "/././"),
        ("///", "/./././"),
        ("////", "/././././"),
        ("foo", "foo"),
        ("/foo", "/.foo"),
        ("//foo", "/./.foo"),
        ("///foo", "/././.foo"),
        ("///foo/", "/././.foo./"),
        ("///foo//", "/././.foo././"),
        ("///foo///", "/././.foo./././"),
        ("//.foo.//", "/././/foo//././"),
        ("foo/bar", "foo.bar"),
        ("/foo/bar", "/.foo.bar"),
        ("/foo/bar/", "/.foo.bar./"),
        ("foo/bar/baz", "foo.bar.baz"),
        ("/foo/bar/baz", "/.foo.bar.baz"),
        ("/foo/bar/baz/", "/.foo.bar.baz./"),
        ("bar/", "bar./"),
        ("bar//", "bar././"),
        ("bar///", "bar./././"),
        ("foo//bar", "foo./.bar"),
        ("foo///bar", "foo././.bar"),
        ("foo////bar", "foo./././.bar"),
        (".", "//"),
        ("..", "////"),
        ("...", "//////"),
        ("./", "//./"),
        (".//.", "//././/"),
        ("././.", "//.//.//"),
        ("././/.", "//.//././/"),
        (".foo", "//foo"),
        ("foo.", "foo//"),
        (".foo.", "//foo//"),
        ("foo../bar/", "foo////.bar./"),
        ("foo../bar/.", "foo////.bar.//"),
        ("/foo/", "/.foo./"),
        ("./foo/.", "//.foo.//"),
        ("foo.bar/baz", "foo//bar.baz"),
    ];

    const NATS_SERVER_FILTER_ROWS: &[(&str, &str)] = &[
        ("+", "*"),
        ("/+", "/.*"),
        ("+/", "*./"),
        ("/+/", "/.*./"),
        ("foo/+", "foo.*"),
        ("foo/+/", "foo.*./"),
        ("foo/+/bar", "foo.*.bar"),
        ("foo/+/+", "foo.*.*"),
        ("foo/+/+/", "foo.*.*./"),
        ("foo/+/+/bar", "foo.*.*.bar"),
        ("foo//+", "foo./.*"),
        ("foo//+/", "foo./.*./"),
        ("foo//+//", "foo./.*././"),
        ("foo//+//bar", "foo./.*./.bar"),
        ("foo///+///bar", "foo././.*././.bar"),
        ("foo.bar///+///baz", "foo//bar././.*././.baz"),
        ("#", ">"),
        ("/#", "/.>"),
        ("/foo/#", "/.foo.>"),
        ("foo/#", "foo.>"),
        ("foo//#", "foo./.>"),
        ("foo///#", "foo././.>"),
        ("foo/bar/#", "foo.bar.>"),
        ("foo/bar.baz/#", "foo.bar//baz.>"),
    ];

    fn topic(t: &str) -> Result<Vec<u8>, TopicError> {
        mqtt_topic_to_subject(t.as_bytes()).map(Cow::into_owned)
    }

    fn filter(f: &str) -> Result<Vec<u8>, TopicError> {
        mqtt_filter_to_subject(f.as_bytes()).map(|f| f.subject.into_owned())
    }

    fn back(s: &str) -> Result<Vec<u8>, TopicError> {
        subject_to_mqtt_topic(s.as_bytes()).map(Cow::into_owned)
    }

    #[test]
    fn nats_server_topic_table() {
        for &(mqtt, nats) in NATS_SERVER_TOPIC_ROWS {
            assert_eq!(topic(mqtt), Ok(nats.as_bytes().to_vec()), "topic {mqtt:?}");
            assert!(is_valid_literal(nats.as_bytes()), "{nats:?} is a literal subject");
            assert_eq!(back(nats), Ok(mqtt.as_bytes().to_vec()), "subject {nats:?}");
            // A topic without wildcards is the same subject as a filter.
            assert_eq!(filter(mqtt), Ok(nats.as_bytes().to_vec()), "filter {mqtt:?}");
        }
        // The table's error rows.
        assert_eq!(topic("foo/+"), Err(TopicError::WildcardInTopic));
        assert_eq!(topic("foo/#"), Err(TopicError::WildcardInTopic));
        assert_eq!(topic("foo bar"), Err(TopicError::UnsupportedCharacter));
        assert!(TopicError::WildcardInTopic.reason().contains("wildcards not allowed in publish"));
        assert!(TopicError::UnsupportedCharacter.reason().contains("not supported"));
    }

    #[test]
    fn nats_server_filter_table() {
        for &(mqtt, nats) in NATS_SERVER_FILTER_ROWS {
            assert_eq!(filter(mqtt), Ok(nats.as_bytes().to_vec()), "filter {mqtt:?}");
            assert!(is_valid_filter(nats.as_bytes()), "{nats:?} is a valid filter");
        }
    }

    #[test]
    fn unchanged_input_is_borrowed() {
        for t in ["foo", "$SYS", "a*", "b>", "*x", "é", "spBv1"] {
            assert!(matches!(mqtt_topic_to_subject(t.as_bytes()), Ok(Cow::Borrowed(_))), "{t}");
            let f = mqtt_filter_to_subject(t.as_bytes()).expect("valid filter");
            assert!(matches!(f.subject, Cow::Borrowed(_)), "{t}");
            assert!(matches!(subject_to_mqtt_topic(t.as_bytes()), Ok(Cow::Borrowed(_))), "{t}");
        }
        assert!(matches!(mqtt_topic_to_subject(b"a/b"), Ok(Cow::Owned(_))));
        assert!(matches!(mqtt_topic_to_subject(b"a.b"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn parent_subscription_for_multi_level_wildcard() {
        let parent = |f: &str| {
            mqtt_filter_to_subject(f.as_bytes()).expect("valid").parent().map(<[u8]>::to_vec)
        };
        assert_eq!(parent("foo/#"), Some(b"foo".to_vec()));
        assert_eq!(parent("foo/+/#"), Some(b"foo.*".to_vec()));
        assert_eq!(parent("/#"), Some(b"/".to_vec()));
        assert_eq!(parent("foo.bar/#"), Some(b"foo//bar".to_vec()));
        assert_eq!(parent("#"), None);
        assert_eq!(parent("foo/+"), None);
        assert_eq!(parent("foo/>"), None, "a literal `>` level is escaped, not a wildcard");
    }

    #[test]
    fn reserved_for_wildcards() {
        for (f, reserved) in [
            ("#", true),
            ("+", true),
            ("+/foo", true),
            ("+/#", true),
            ("/#", false),
            ("foo/#", false),
            ("foo/+", false),
            ("$SYS/#", false),
            ("*", false),
        ] {
            let subject = mqtt_filter_to_subject(f.as_bytes()).expect("valid");
            assert_eq!(subject.is_reserved_for_wildcards(), reserved, "{f}");
        }
        assert!(is_reserved_subject(b"$SYS.x"));
        assert!(!is_reserved_subject(b"/.$SYS"));
        assert_eq!(topic("$SYS/x"), Ok(b"$SYS.x".to_vec()));
        assert_eq!(topic("$share/g/t"), Ok(b"$share.g.t".to_vec()));
    }

    #[test]
    fn nats_wildcard_levels_are_escaped() {
        assert_eq!(topic("a/*"), Ok(b"a./*".to_vec()));
        assert_eq!(topic(">"), Ok(b"/>".to_vec()));
        assert_eq!(topic("*/>/*x/>y"), Ok(b"/*./>.*x.>y".to_vec()));
        assert_eq!(filter("a/*/+/>/#"), Ok(b"a./*.*./>.>".to_vec()));
        assert_eq!(back("a./*"), Ok(b"a/*".to_vec()));
        assert_eq!(back("/>"), Ok(b">".to_vec()));
        assert!(is_valid_literal(b"a./*"));
    }

    #[test]
    fn wildcard_placement() {
        for bad in ["a+", "+a", "a/b+/c", "a/#/b", "#/a", "a#", "#a", "a/#b", "++", "##", "+#"] {
            assert_eq!(filter(bad), Err(TopicError::WildcardPlacement), "{bad}");
            assert_eq!(topic(bad), Err(TopicError::WildcardInTopic), "{bad}");
        }
        for good in ["+", "#", "+/+", "+/#", "a/+/b/#", "/+", "+/", "//#"] {
            assert!(filter(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn character_errors() {
        for (input, error) in [
            ("", TopicError::EmptyTopic),
            ("a\0b", TopicError::NullCharacter),
            ("a b", TopicError::UnsupportedCharacter),
            ("a\tb", TopicError::UnsupportedCharacter),
            ("a\nb", TopicError::UnsupportedCharacter),
            ("a\rb", TopicError::UnsupportedCharacter),
            ("a\x0cb", TopicError::UnsupportedCharacter),
            ("a\x7fb", TopicError::UnsupportedCharacter),
        ] {
            assert_eq!(topic(input), Err(error), "{input:?}");
        }
        assert_eq!(filter(""), Err(TopicError::EmptyFilter));
        assert_eq!(filter("a b/#"), Err(TopicError::UnsupportedCharacter));
        assert_eq!(mqtt_topic_to_subject(b"a/\xff"), Err(TopicError::InvalidUtf8));
        assert_eq!(mqtt_topic_to_subject(b"\xc3"), Err(TopicError::InvalidUtf8));
        assert_eq!(mqtt_filter_to_subject(b"+/\xed\xa0\x80"), Err(TopicError::InvalidUtf8));
        assert_eq!(topic("é/ü.x"), Ok("é.ü//x".as_bytes().to_vec()));
    }

    #[test]
    fn subjects_without_mqtt_form() {
        for (subject, error) in [
            ("a/b", TopicError::NoMqttForm),
            ("a.b/c", TopicError::NoMqttForm),
            ("a/", TopicError::NoMqttForm),
            ("///", TopicError::NoMqttForm),
            ("/", TopicError::NoMqttForm),
            ("a.*", TopicError::NoMqttForm),
            ("a.>", TopicError::NoMqttForm),
            (">", TopicError::NoMqttForm),
            ("a..b", TopicError::NoMqttForm),
            ("a.", TopicError::NoMqttForm),
            ("", TopicError::NoMqttForm),
            ("a+", TopicError::NoMqttForm),
            ("a.#", TopicError::NoMqttForm),
            ("a.b c", TopicError::UnsupportedCharacter),
            ("a.\x7f", TopicError::UnsupportedCharacter),
            ("a.\0", TopicError::NullCharacter),
        ] {
            assert_eq!(back(subject), Err(error), "{subject:?}");
        }
        assert_eq!(subject_to_mqtt_topic(b"a.\xff"), Err(TopicError::InvalidUtf8));
        // Subjects with a dollar or unusual bytes that do have a form.
        assert_eq!(back("$SYS.a*.b>"), Ok(b"$SYS/a*/b>".to_vec()));
        assert_eq!(back("_INBOX.x"), Ok(b"_INBOX/x".to_vec()));
    }

    #[test]
    fn topic_length_limit() {
        let long = vec![b'a'; MQTT_TOPIC_BYTES_MAX + 1];
        assert_eq!(subject_to_mqtt_topic(&long), Err(TopicError::TooLong));
        // `//` unescapes to one byte: a subject over the limit can still fit.
        let mut escaped = b"a.".to_vec();
        escaped.extend(std::iter::repeat_n(b'/', 2 * 40_000));
        let unescaped = subject_to_mqtt_topic(&escaped).expect("fits");
        assert_eq!(unescaped.len(), 2 + 40_000);
        assert_eq!(mqtt_topic_to_subject(&unescaped).expect("valid").as_ref(), &escaped[..]);
    }

    #[test]
    fn display_names_the_clause() {
        assert_eq!(
            TopicError::WildcardInTopic.to_string(),
            "[MQTT-3.3.2-2] wildcards not allowed in publish's topic"
        );
        assert_eq!(
            TopicError::UnsupportedCharacter.to_string(),
            "character not supported for MQTT topics"
        );
    }
}
