//! Property tests for the MQTT topic <-> NATS subject translation
//! (`isthmus::protocol::subject`), through its public API only.
//!
//! - Any valid MQTT topic round-trips topic -> subject -> topic exactly, and the subject is a
//!   valid NATS literal; any subject that has an MQTT form round-trips subject -> topic -> subject.
//! - Every translated filter is a valid NATS filter, its parent (for `/#`) a valid subject.
//! - A topic matches a filter in MQTT semantics (the reference matcher below, with the `$` rule
//!   [MQTT-4.7.2-1]) iff the translated subject matches the translated filter or its parent in
//!   the router's trie, minus `$` subjects for wildcard-first filters.
//! - On arbitrary bytes nothing panics, and results are consistent between the three functions.

use isthmus::protocol::subject::{
    is_reserved_for_wildcards, is_reserved_subject, is_valid_filter, is_valid_literal,
    mqtt_filter_to_subject, mqtt_topic_to_subject, subject_to_mqtt_topic, TopicError,
};
use isthmus::router::trie::Trie;
use proptest::prelude::*;
use std::borrow::Cow;

// ---------------------------------------------------------------------------------------------
// Generators

/// One MQTT topic level, biased to the bytes the mapping treats specially.
fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("*".to_string()),
        Just(">".to_string()),
        Just(".".to_string()),
        Just("$SYS".to_string()),
        "[ab.*>$é_-]{1,4}",
        "[a-z0-9]{1,6}",
    ]
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..6)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a topic is not empty", |t| !t.is_empty())
}

/// A filter level: a topic level or `+`; `#` is appended as the last level only.
fn filter() -> impl Strategy<Value = String> {
    let filter_level = prop_oneof![3 => level(), 1 => Just("+".to_string())];
    (prop::collection::vec(filter_level, 1..6), any::<bool>())
        .prop_map(|(mut levels, multi)| {
            if multi {
                levels.push("#".to_string());
            }
            levels.join("/")
        })
        .prop_filter("a filter is not empty", |f| !f.is_empty())
}

/// Topics and filters over a tiny alphabet, so that matches are frequent.
fn small_level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a".to_string()),
        Just("b".to_string()),
        Just("a.b".to_string()),
        Just("*".to_string()),
        Just("$a".to_string()),
    ]
}

fn small_topic() -> impl Strategy<Value = String> {
    prop::collection::vec(small_level(), 1..4)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a topic is not empty", |t| !t.is_empty())
}

fn small_filter() -> impl Strategy<Value = String> {
    let filter_level = prop_oneof![2 => small_level(), 1 => Just("+".to_string())];
    (prop::collection::vec(filter_level, 0..4), any::<bool>())
        .prop_map(|(mut levels, multi)| {
            if multi || levels.is_empty() {
                levels.push("#".to_string());
            }
            levels.join("/")
        })
        .prop_filter("a filter is not empty", |f| !f.is_empty())
}

/// NATS literal subjects with `/` placed anywhere, most of which have no MQTT form.
fn nats_subject() -> impl Strategy<Value = String> {
    prop::collection::vec("[a/$.*>+é]{1,4}", 1..5)
        .prop_map(|tokens| tokens.join("."))
        .prop_filter("a literal subject", |s| is_valid_literal(s.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Reference MQTT matcher (MQTT 3.1.1 section 4.7)

fn mqtt_matches(filter: &str, topic: &str) -> bool {
    // [MQTT-4.7.2-1]: filters starting with a wildcard do not match `$` topics.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let filter: Vec<&str> = filter.split('/').collect();
    let topic: Vec<&str> = topic.split('/').collect();
    levels_match(&filter, &topic)
}

fn levels_match(filter: &[&str], topic: &[&str]) -> bool {
    match (filter.split_first(), topic.split_first()) {
        // `#` matches the parent level and any number of children ([MQTT-4.7.1-2]).
        (Some((&"#", _)), _) => true,
        (None, None) => true,
        (Some((&"+", f)), Some((_, t))) => levels_match(f, t),
        (Some((level, f)), Some((topic_level, t))) => level == topic_level && levels_match(f, t),
        _ => false,
    }
}

/// The NATS side: subscribe the translated filter (and its parent) in a trie, publish the
/// translated topic, apply the `$` rule the MQTT session applies.
fn nats_matches(filter: &str, topic: &str) -> bool {
    let filter = mqtt_filter_to_subject(filter.as_bytes()).expect("generated filters are valid");
    let subject = mqtt_topic_to_subject(topic.as_bytes()).expect("generated topics are valid");
    let mut trie = Trie::default();
    trie.values_mut(&filter.subject).push(0u8);
    if let Some(parent) = filter.parent() {
        trie.values_mut(parent).push(1u8);
    }
    let mut matched = false;
    trie.for_each_match(&subject, |_| matched = true);
    matched && !(filter.is_reserved_for_wildcards() && is_reserved_subject(&subject))
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn topic_round_trips(topic in topic()) {
        let subject = mqtt_topic_to_subject(topic.as_bytes()).expect("valid topic");
        prop_assert!(is_valid_literal(&subject), "{topic:?} -> {:?}", String::from_utf8_lossy(&subject));
        let back = subject_to_mqtt_topic(&subject).expect("a translated topic has an MQTT form");
        prop_assert_eq!(back.as_ref(), topic.as_bytes());
        if let Cow::Borrowed(b) = &subject {
            prop_assert_eq!(*b, topic.as_bytes());
        }
        // A topic read as a filter (no wildcards) is the same subject, with no parent.
        let as_filter = mqtt_filter_to_subject(topic.as_bytes()).expect("valid filter");
        prop_assert_eq!(as_filter.subject.as_ref(), subject.as_ref());
        prop_assert_eq!(as_filter.parent(), None);
        prop_assert_eq!(is_reserved_subject(&subject), topic.starts_with('$'));
    }

    #[test]
    fn filters_are_valid_nats_filters(filter in filter()) {
        let translated = mqtt_filter_to_subject(filter.as_bytes()).expect("valid filter");
        prop_assert!(is_valid_filter(&translated.subject));
        prop_assert_eq!(translated.parent().is_some(), filter.ends_with("/#"));
        if let Some(parent) = translated.parent() {
            prop_assert!(is_valid_filter(parent));
        }
        prop_assert_eq!(
            is_reserved_for_wildcards(&translated.subject),
            filter.starts_with('+') || filter.starts_with('#')
        );
        let has_wildcard = filter.split('/').any(|l| l == "+" || l == "#");
        prop_assert_eq!(
            mqtt_topic_to_subject(filter.as_bytes()).err(),
            has_wildcard.then_some(TopicError::WildcardInTopic)
        );
    }

    #[test]
    fn mqtt_and_nats_matching_agree(filter in small_filter(), topic in small_topic()) {
        prop_assert_eq!(
            mqtt_matches(&filter, &topic),
            nats_matches(&filter, &topic),
            "filter {:?} topic {:?}", filter, topic
        );
    }

    #[test]
    fn subjects_with_an_mqtt_form_round_trip(subject in nats_subject()) {
        if let Ok(topic) = subject_to_mqtt_topic(subject.as_bytes()) {
            prop_assert!(!topic.is_empty());
            prop_assert!(!topic.iter().any(|&b| b == b'+' || b == b'#'));
            let again = mqtt_topic_to_subject(&topic).expect("delivered topics are valid");
            prop_assert_eq!(again.as_ref(), subject.as_bytes());
        }
    }

    #[test]
    fn arbitrary_bytes_are_consistent(data in prop::collection::vec(
        prop_oneof![Just(b'/'), Just(b'.'), Just(b'+'), Just(b'#'), Just(b'*'), Just(b'>'),
                    Just(b'a'), Just(b' '), Just(0u8), Just(0xc3u8), Just(0xa9u8)],
        0..12,
    )) {
        if let Ok(subject) = mqtt_topic_to_subject(&data) {
            prop_assert!(is_valid_literal(&subject));
            let back = subject_to_mqtt_topic(&subject).expect("round trip");
            prop_assert_eq!(back.as_ref(), &data[..]);
        }
        if let Ok(filter) = mqtt_filter_to_subject(&data) {
            prop_assert!(is_valid_filter(&filter.subject));
        }
        if let Ok(topic) = subject_to_mqtt_topic(&data) {
            let again = mqtt_topic_to_subject(&topic).expect("valid");
            prop_assert_eq!(again.as_ref(), &data[..]);
        }
    }
}

#[test]
fn matching_examples_from_nats_server_test_mqtt_sub() {
    // Rows of nats-server `server/mqtt_test.go` `TestMQTTSub` (filter, topic, match).
    for (filter, topic, expected) in [
        ("foo", "foo", true),
        ("foo", "bar", false),
        ("foo/bar", "foo/bar", true),
        ("foo/bar", "foo/baz", false),
        ("/foo/bar", "/foo/bar", true),
        ("/foo/bar", "/foo/baz", false),
        ("foo/+", "foo/bar/baz", false),
        ("foo/+", "foo/bar/", false),
        ("foo/+", "foo/bar", true),
        ("foo/+", "foo/", true),
        ("foo/+", "foo", false),
        ("foo/+", "/foo", false),
        ("foo/#", "foo/bar/baz/", true),
        ("foo/#", "foo/bar/baz", true),
        ("foo/#", "foo/bar/", true),
        ("foo/#", "foo/bar", true),
        ("foo/#", "foo/", true),
        ("foo/#", "foo", true),
        ("foo/#", "/foo", false),
    ] {
        assert_eq!(mqtt_matches(filter, topic), expected, "reference {filter} {topic}");
        assert_eq!(nats_matches(filter, topic), expected, "nats {filter} {topic}");
    }
    // [MQTT-4.7.2-1] examples from the spec.
    assert!(!nats_matches("#", "$SYS/x"));
    assert!(!nats_matches("+/monitor/Clients", "$SYS/monitor/Clients"));
    assert!(nats_matches("$SYS/#", "$SYS/monitor/Clients"));
    assert!(nats_matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
}
