//! The compiled permission matcher a [`Grant`](super::Grant) carries: publish and subscribe
//! allow/deny rules in NATS subject spelling, placeholders already substituted.
//!
//! Owns: turning the token's rule strings into token vectors (once, at authenticate time) and
//! answering "may this client publish to / subscribe to / receive this subject" without
//! allocating. Does not own: JWT parsing, MQTT topic translation (callers pass the canonical
//! NATS subject), or counting denials.
//!
//! Semantics follow nats-server's permissions (`server/client.go` `pubAllowed`,
//! `canSubscribe`): publish is allowed iff some allow rule matches and no deny rule does;
//! subscribe is allowed iff the filter is a subset of some allow rule and not a subset of a
//! deny rule; a filter that merely overlaps a deny rule is allowed, and the deny is applied to
//! each delivered subject ([`Permissions::may_deliver`]).

/// What [`Permissions::may_subscribe`] decided for a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeCheck {
    /// The filter is not inside any allow rule, or lies wholly inside a deny rule.
    Denied,
    /// Every subject the filter matches is allowed.
    Allowed,
    /// The filter overlaps a deny rule: each delivered subject must pass
    /// [`Permissions::may_deliver`].
    AllowedWithDenyFilter,
}

/// Compiled publish and subscribe rules. Plain owned data: `Send`, cheap to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    publish_allow: Vec<Rule>,
    publish_deny: Vec<Rule>,
    subscribe_allow: Vec<Rule>,
    subscribe_deny: Vec<Rule>,
}

impl Permissions {
    /// Everything allowed, nothing denied: anonymous (open) mode.
    pub fn allow_all() -> Permissions {
        Permissions {
            publish_allow: vec![Rule::everything()],
            publish_deny: Vec::new(),
            subscribe_allow: vec![Rule::everything()],
            subscribe_deny: Vec::new(),
        }
    }

    /// Nothing allowed.
    pub fn none() -> Permissions {
        Permissions::default()
    }

    /// True if a publish to the literal subject `subject` is allowed. No allocation. A subject
    /// that is not a valid literal (empty token, `*` or `>` token) is never allowed.
    pub fn may_publish(&self, subject: &[u8]) -> bool {
        if !is_literal(subject) {
            return false;
        }
        self.publish_allow.iter().any(|rule| rule.matches(subject))
            && !self.publish_deny.iter().any(|rule| rule.matches(subject))
    }

    /// Whether a subscription to the NATS filter `filter` is allowed. No allocation.
    pub fn may_subscribe(&self, filter: &[u8]) -> SubscribeCheck {
        if !is_filter(filter) {
            return SubscribeCheck::Denied;
        }
        if !self.subscribe_allow.iter().any(|rule| rule.contains(filter)) {
            return SubscribeCheck::Denied;
        }
        if self.subscribe_deny.iter().any(|rule| rule.contains(filter)) {
            return SubscribeCheck::Denied;
        }
        if self.subscribe_deny.iter().any(|rule| rule.overlaps(filter)) {
            return SubscribeCheck::AllowedWithDenyFilter;
        }
        SubscribeCheck::Allowed
    }

    /// True if no subscribe deny rule matches the literal subject `subject`: a message on it
    /// may be delivered to a subscription that [`may_subscribe`](Self::may_subscribe) allowed
    /// with a deny filter. No allocation.
    pub fn may_deliver(&self, subject: &[u8]) -> bool {
        !self.subscribe_deny.iter().any(|rule| rule.matches(subject))
    }

    /// True if neither publishing nor subscribing is allowed anywhere.
    pub fn grants_nothing(&self) -> bool {
        self.publish_allow.is_empty() && self.subscribe_allow.is_empty()
    }

    /// The compiled rules, each joined back into a NATS subject: publish allow, publish deny,
    /// subscribe allow, subscribe deny. For `isthmus token inspect` and logs.
    pub fn describe(&self) -> [Vec<String>; 4] {
        let join = |rules: &[Rule]| rules.iter().map(Rule::to_subject).collect();
        [
            join(&self.publish_allow),
            join(&self.publish_deny),
            join(&self.subscribe_allow),
            join(&self.subscribe_deny),
        ]
    }
}

/// The values `%c` and `%u` stand for while a rule set is compiled. `None` (or a value that
/// fails [`is_safe_placeholder_value`]) makes rules with that placeholder unusable.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Placeholders<'a> {
    pub client_id: Option<&'a [u8]>,
    pub username: Option<&'a [u8]>,
}

/// One direction's rule strings from the token, as given.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RuleSource<'a> {
    pub allow: &'a [String],
    pub deny: &'a [String],
}

/// Why a rule string from a token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RuleError {
    pub rule: String,
    pub reason: &'static str,
}

/// Compiles publish and subscribe rules with placeholders substituted.
///
/// An allow rule whose placeholder has no safe value is dropped (it never matches). A deny
/// rule whose placeholder has no safe value denies everything in its direction: dropping it
/// would widen access, and the rule was written to deny (fail closed).
pub(crate) fn compile(
    publish: RuleSource<'_>,
    subscribe: RuleSource<'_>,
    values: Placeholders<'_>,
) -> Result<Permissions, RuleError> {
    let (publish_allow, publish_deny) = compile_direction(publish, values)?;
    let (subscribe_allow, subscribe_deny) = compile_direction(subscribe, values)?;
    Ok(Permissions { publish_allow, publish_deny, subscribe_allow, subscribe_deny })
}

/// Checks that `rule` is a well-formed NATS filter whose placeholders are whole tokens. Used by
/// `isthmus token issue` before it signs anything, and by [`compile`].
pub(crate) fn check_rule(rule: &str) -> Result<(), &'static str> {
    let bytes = rule.as_bytes();
    if bytes.is_empty() {
        return Err("empty rule");
    }
    let mut tokens = bytes.split(|b| *b == b'.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return Err("empty token");
        }
        if token.iter().any(|b| is_space(*b) || *b == 0) {
            return Err("whitespace or NUL in a rule");
        }
        if token == b">" && tokens.peek().is_some() {
            return Err("'>' must be the last token");
        }
        if placeholder(token).is_none() && contains_placeholder(token) {
            return Err("a placeholder (%c, %u, ${clientid}, ${username}) must be a whole token");
        }
        if token != b"*" && token != b">" && token.iter().any(|b| *b == b'*' || *b == b'>') {
            return Err("'*' and '>' must be whole tokens");
        }
    }
    Ok(())
}

/// True if `value` may be substituted for a placeholder: non-empty, and no byte that would
/// split a token, act as a NATS or MQTT wildcard or level separator, or be whitespace/control.
pub(crate) fn is_safe_placeholder_value(value: &[u8]) -> bool {
    !value.is_empty()
        && value.iter().all(|&b| {
            !matches!(b, b'.' | b'*' | b'>' | b'/' | b'+' | b'#')
                && !is_space(b)
                && b >= 0x20
                && b != 0x7f
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placeholder {
    ClientId,
    Username,
}

/// A compiled rule: one entry per NATS token.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    tokens: Box<[Token]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(Box<[u8]>),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more trailing tokens.
    Tail,
}

impl Rule {
    fn everything() -> Rule {
        Rule { tokens: Box::new([Token::Tail]) }
    }

    /// True if the literal `subject` matches this rule.
    fn matches(&self, subject: &[u8]) -> bool {
        let mut subject_tokens = subject.split(|b| *b == b'.');
        for token in self.tokens.iter() {
            let Some(subject_token) = subject_tokens.next() else { return false };
            match token {
                Token::Tail => return true,
                Token::One => {}
                Token::Literal(literal) => {
                    if **literal != *subject_token {
                        return false;
                    }
                }
            }
        }
        subject_tokens.next().is_none()
    }

    /// True if every subject the filter `filter` matches also matches this rule.
    fn contains(&self, filter: &[u8]) -> bool {
        let mut filter_tokens = filter.split(|b| *b == b'.');
        for token in self.tokens.iter() {
            let Some(filter_token) = filter_tokens.next() else { return false };
            match token {
                // The filter has at least one token here, and `>` takes any of them.
                Token::Tail => return true,
                Token::One => {
                    if filter_token == b">" {
                        return false;
                    }
                }
                Token::Literal(literal) => {
                    if **literal != *filter_token {
                        return false;
                    }
                }
            }
        }
        filter_tokens.next().is_none()
    }

    /// True if some subject matches both this rule and the filter `filter`.
    fn overlaps(&self, filter: &[u8]) -> bool {
        let mut filter_tokens = filter.split(|b| *b == b'.');
        for token in self.tokens.iter() {
            let Some(filter_token) = filter_tokens.next() else { return false };
            if filter_token == b">" || *token == Token::Tail {
                return true;
            }
            if let Token::Literal(literal) = token {
                if filter_token != b"*" && **literal != *filter_token {
                    return false;
                }
            }
        }
        filter_tokens.next().is_none()
    }

    fn to_subject(&self) -> String {
        let tokens: Vec<String> = self
            .tokens
            .iter()
            .map(|token| match token {
                Token::Literal(literal) => String::from_utf8_lossy(literal).into_owned(),
                Token::One => "*".to_string(),
                Token::Tail => ">".to_string(),
            })
            .collect();
        tokens.join(".")
    }
}

/// What a placeholder rule turned into.
enum Compiled {
    Rule(Rule),
    /// A placeholder had no safe value.
    Unusable,
}

fn compile_direction(
    source: RuleSource<'_>,
    values: Placeholders<'_>,
) -> Result<(Vec<Rule>, Vec<Rule>), RuleError> {
    let mut allow = Vec::with_capacity(source.allow.len());
    for rule in source.allow {
        if let Compiled::Rule(rule) = compile_rule(rule, values)? {
            allow.push(rule);
        }
    }
    let mut deny = Vec::with_capacity(source.deny.len());
    for rule in source.deny {
        match compile_rule(rule, values)? {
            Compiled::Rule(rule) => deny.push(rule),
            Compiled::Unusable => {
                deny.clear();
                deny.push(Rule::everything());
                allow.clear();
                break;
            }
        }
    }
    Ok((allow, deny))
}

fn compile_rule(rule: &str, values: Placeholders<'_>) -> Result<Compiled, RuleError> {
    check_rule(rule).map_err(|reason| RuleError { rule: rule.to_string(), reason })?;
    let mut tokens = Vec::new();
    for token in rule.as_bytes().split(|b| *b == b'.') {
        let compiled = match (token, placeholder(token)) {
            (_, Some(which)) => {
                let value = match which {
                    Placeholder::ClientId => values.client_id,
                    Placeholder::Username => values.username,
                };
                match value {
                    Some(value) if is_safe_placeholder_value(value) => Token::Literal(value.into()),
                    _ => return Ok(Compiled::Unusable),
                }
            }
            (b"*", None) => Token::One,
            (b">", None) => Token::Tail,
            (literal, None) => Token::Literal(literal.into()),
        };
        tokens.push(compiled);
    }
    Ok(Compiled::Rule(Rule { tokens: tokens.into_boxed_slice() }))
}

fn placeholder(token: &[u8]) -> Option<Placeholder> {
    match token {
        b"%c" | b"${clientid}" => Some(Placeholder::ClientId),
        b"%u" | b"${username}" => Some(Placeholder::Username),
        _ => None,
    }
}

fn contains_placeholder(token: &[u8]) -> bool {
    [&b"%c"[..], b"%u", b"${clientid}", b"${username}"]
        .iter()
        .any(|p| token.windows(p.len()).any(|w| w == *p))
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\x0b' | b'\x0c')
}

/// A literal subject: non-empty tokens, none a wildcard. No allocation.
fn is_literal(subject: &[u8]) -> bool {
    !subject.is_empty()
        && subject.split(|b| *b == b'.').all(|t| !t.is_empty() && t != b"*" && t != b">")
}

/// A valid filter: non-empty tokens, `>` only last. No allocation.
fn is_filter(filter: &[u8]) -> bool {
    let mut tokens = filter.split(|b| *b == b'.').peekable();
    if filter.is_empty() {
        return false;
    }
    while let Some(token) = tokens.next() {
        if token.is_empty() || (token == b">" && tokens.peek().is_some()) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strings(rules: &[&str]) -> Vec<String> {
        rules.iter().map(|r| r.to_string()).collect()
    }

    fn permissions(
        publish: (&[&str], &[&str]),
        subscribe: (&[&str], &[&str]),
        client_id: Option<&str>,
        username: Option<&str>,
    ) -> Permissions {
        let (publish_allow, publish_deny) = (strings(publish.0), strings(publish.1));
        let (subscribe_allow, subscribe_deny) = (strings(subscribe.0), strings(subscribe.1));
        compile(
            RuleSource { allow: &publish_allow, deny: &publish_deny },
            RuleSource { allow: &subscribe_allow, deny: &subscribe_deny },
            Placeholders {
                client_id: client_id.map(str::as_bytes),
                username: username.map(str::as_bytes),
            },
        )
        .unwrap()
    }

    fn publish_only(allow: &[&str], deny: &[&str]) -> Permissions {
        permissions((allow, deny), (&[], &[]), Some("dev1"), Some("alice"))
    }

    fn subscribe_only(allow: &[&str], deny: &[&str]) -> Permissions {
        permissions((&[], &[]), (allow, deny), Some("dev1"), Some("alice"))
    }

    #[test]
    fn publish_uses_nats_wildcards() {
        let p = publish_only(&["a.*.c", "b.>"], &[]);
        assert!(p.may_publish(b"a.x.c"));
        assert!(!p.may_publish(b"a.x.y.c"), "* is one token");
        assert!(!p.may_publish(b"a.c"));
        assert!(p.may_publish(b"b.x"));
        assert!(p.may_publish(b"b.x.y.z"));
        assert!(!p.may_publish(b"b"), "> needs at least one token");
        assert!(!p.may_publish(b"c"));
    }

    #[test]
    fn publish_deny_wins_over_allow() {
        let p = publish_only(&["a.>"], &["a.secret.>"]);
        assert!(p.may_publish(b"a.public"));
        assert!(!p.may_publish(b"a.secret.x"));
        assert!(p.may_publish(b"a.secret"), "deny a.secret.> does not cover a.secret");
    }

    #[test]
    fn publish_to_a_wildcard_or_malformed_subject_is_never_allowed() {
        let p = Permissions::allow_all();
        for subject in [&b"a.*"[..], b"a.>", b">", b"", b"a..b", b".a", b"a."] {
            assert!(!p.may_publish(subject), "{:?}", String::from_utf8_lossy(subject));
        }
        assert!(p.may_publish(b"a.b"));
    }

    #[test]
    fn subscribe_requires_a_subset_of_an_allow_rule() {
        let p = subscribe_only(&["a.>"], &[]);
        assert_eq!(p.may_subscribe(b"a.b.*"), SubscribeCheck::Allowed);
        assert_eq!(p.may_subscribe(b"a.>"), SubscribeCheck::Allowed);
        assert_eq!(p.may_subscribe(b"a.b"), SubscribeCheck::Allowed);
        assert_eq!(p.may_subscribe(b">"), SubscribeCheck::Denied);
        assert_eq!(p.may_subscribe(b"a"), SubscribeCheck::Denied);
        assert_eq!(p.may_subscribe(b"*.b"), SubscribeCheck::Denied);
        let p = subscribe_only(&["a.*"], &[]);
        assert_eq!(p.may_subscribe(b"a.*"), SubscribeCheck::Allowed);
        assert_eq!(p.may_subscribe(b"a.x"), SubscribeCheck::Allowed);
        assert_eq!(p.may_subscribe(b"a.>"), SubscribeCheck::Denied, "a.> reaches a.x.y");
        assert_eq!(p.may_subscribe(b"a.x.y"), SubscribeCheck::Denied);
        assert_eq!(p.may_subscribe(b"a..b"), SubscribeCheck::Denied, "malformed filter");
        assert_eq!(p.may_subscribe(b"a.>.b"), SubscribeCheck::Denied, "malformed filter");
    }

    #[test]
    fn subscribe_deny_subset_denies_and_overlap_filters() {
        let p = subscribe_only(&["broadcast.>"], &["broadcast.secret.>"]);
        assert_eq!(p.may_subscribe(b"broadcast.news"), SubscribeCheck::Allowed);
        assert_eq!(p.may_subscribe(b"broadcast.secret.x"), SubscribeCheck::Denied);
        assert_eq!(p.may_subscribe(b"broadcast.secret.>"), SubscribeCheck::Denied);
        assert_eq!(p.may_subscribe(b"broadcast.>"), SubscribeCheck::AllowedWithDenyFilter);
        assert_eq!(p.may_subscribe(b"broadcast.*.x"), SubscribeCheck::AllowedWithDenyFilter);
        assert_eq!(p.may_subscribe(b"broadcast.*"), SubscribeCheck::Allowed, "one token only");
        assert!(p.may_deliver(b"broadcast.news"));
        assert!(!p.may_deliver(b"broadcast.secret.plans"));
    }

    #[test]
    fn placeholders_are_substituted_as_whole_tokens() {
        let p = permissions(
            (&["devices.%c.>", "cmd.${username}.*.reply"], &[]),
            (&["devices.${clientid}.cmd.>"], &[]),
            Some("dev1"),
            Some("alice"),
        );
        assert!(p.may_publish(b"devices.dev1.temp"));
        assert!(!p.may_publish(b"devices.dev2.temp"));
        assert!(p.may_publish(b"cmd.alice.x.reply"));
        assert!(!p.may_publish(b"cmd.bob.x.reply"));
        assert_eq!(p.may_subscribe(b"devices.dev1.cmd.>"), SubscribeCheck::Allowed);
        assert_eq!(p.may_subscribe(b"devices.*.cmd.>"), SubscribeCheck::Denied);
    }

    #[test]
    fn hostile_placeholder_values_grant_nothing() {
        let hostile = [
            "a.>", "*", ">", "#", "+", "x/y", "a.b", "", " ", "a b", "a\tb", "a\0b", "a\nb", "\x7f",
        ];
        for value in hostile {
            let p = permissions(
                (&["devices.%c.>", "users.%u.>"], &[]),
                (&["devices.%c.>", "users.%u"], &[]),
                Some(value),
                Some(value),
            );
            assert!(p.grants_nothing(), "value {value:?}: {p:?}");
            for subject in [&b"devices.a.b"[..], b"devices.x", b"users.a", b"devices.a.b.c"] {
                assert!(!p.may_publish(subject), "{value:?}");
            }
            assert_eq!(p.may_subscribe(b"devices.>"), SubscribeCheck::Denied, "{value:?}");
            assert_eq!(p.may_subscribe(b">"), SubscribeCheck::Denied, "{value:?}");
        }
    }

    #[test]
    fn missing_placeholder_value_drops_allow_and_fails_closed_on_deny() {
        let p = permissions((&["devices.%c.>", "public.>"], &[]), (&[], &[]), None, None);
        assert!(p.may_publish(b"public.x"), "the rule without %c still works");
        assert!(!p.may_publish(b"devices.x.y"));
        let p = permissions((&["public.>"], &["public.%c.private"]), (&[], &[]), None, None);
        assert!(!p.may_publish(b"public.x"), "an unusable deny rule denies everything");
        assert!(p.grants_nothing());
    }

    #[test]
    fn rules_are_checked() {
        assert!(check_rule("devices.%c.>").is_ok());
        assert!(check_rule("a.*.${username}").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a.>.b", "dev%c.x", "a.b%u", "a b", "a*.b", "a.>x"] {
            assert!(check_rule(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn allow_all_and_none() {
        let all = Permissions::allow_all();
        assert!(all.may_publish(b"any.thing"));
        assert_eq!(all.may_subscribe(b">"), SubscribeCheck::Allowed);
        assert!(!all.grants_nothing());
        let none = Permissions::none();
        assert!(none.grants_nothing());
        assert!(!none.may_publish(b"a"));
        assert_eq!(none.may_subscribe(b"a"), SubscribeCheck::Denied);
    }

    // A reference matcher that follows the NATS definitions literally, over token vectors.
    fn reference_matches(rule: &[&str], subject: &[&str]) -> bool {
        match (rule.split_first(), subject.split_first()) {
            (None, None) => true,
            (Some((&">", _)), Some(_)) => true,
            (Some((&"*", rest)), Some((_, subject_rest))) => reference_matches(rest, subject_rest),
            (Some((literal, rest)), Some((token, subject_rest))) => {
                literal == token && reference_matches(rest, subject_rest)
            }
            _ => false,
        }
    }

    // A subset check by enumeration: every subject of up to `depth` tokens over `alphabet`
    // that the filter (treated as a rule) matches must match the rule.
    fn reference_contains(rule: &[&str], filter: &[&str], alphabet: &[&str]) -> bool {
        let mut subjects: Vec<Vec<&str>> = vec![vec![]];
        let mut all = Vec::new();
        for _ in 0..5 {
            let mut next = Vec::new();
            for subject in &subjects {
                for token in alphabet {
                    let mut longer = subject.clone();
                    longer.push(*token);
                    next.push(longer);
                }
            }
            all.extend(next.iter().cloned());
            subjects = next;
        }
        all.iter().filter(|s| reference_matches(filter, s)).all(|s| reference_matches(rule, s))
    }

    fn rule_strategy() -> impl Strategy<Value = Vec<&'static str>> {
        (prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "*"]), 0..4), any::<bool>())
            .prop_map(|(mut tokens, tail)| {
                if tail || tokens.is_empty() {
                    tokens.push(">");
                }
                tokens
            })
    }

    fn subject_strategy() -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 1..6)
    }

    proptest! {
        #[test]
        fn may_publish_agrees_with_the_reference(
            allow in prop::collection::vec(rule_strategy(), 0..4),
            deny in prop::collection::vec(rule_strategy(), 0..3),
            subject in subject_strategy(),
        ) {
            let allow_strings: Vec<String> = allow.iter().map(|r| r.join(".")).collect();
            let deny_strings: Vec<String> = deny.iter().map(|r| r.join(".")).collect();
            let p = compile(
                RuleSource { allow: &allow_strings, deny: &deny_strings },
                RuleSource::default(),
                Placeholders::default(),
            ).unwrap();
            let expected = allow.iter().any(|r| reference_matches(r, &subject))
                && !deny.iter().any(|r| reference_matches(r, &subject));
            prop_assert_eq!(p.may_publish(subject.join(".").as_bytes()), expected);
        }

        #[test]
        fn subscribe_subset_agrees_with_enumeration(
            rule in rule_strategy(),
            filter in rule_strategy(),
        ) {
            let p = compile(
                RuleSource::default(),
                RuleSource { allow: &[rule.join(".")], deny: &[] },
                Placeholders::default(),
            ).unwrap();
            let allowed = p.may_subscribe(filter.join(".").as_bytes()) != SubscribeCheck::Denied;
            // Enumerating up to 5 tokens over a, b, c, d decides subset for rules of at most
            // 4 tokens: `d` stands for every literal the rule does not name.
            prop_assert_eq!(allowed, reference_contains(&rule, &filter, &["a", "b", "c", "d"]));
        }
    }
}
