//! NATS subject rules: what a valid subscription filter and a valid literal subject are.
//!
//! Owns only validation and tokenising; MQTT topic translation will live here too (issue 3).
//! Rules follow nats-server's `sublist.go` (`IsValidSubject`, `IsValidLiteralSubject`).

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

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\x0c')
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
