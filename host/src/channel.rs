//! Channel and user names, and the channel patterns that grant subscriptions.
//!
//! Names are 1-128 characters of `A-Z a-z 0-9 _ - . : @`. A pattern is `*` (every channel),
//! an exact name (`news`), or a prefix ending in `.*` (`orders.*` grants `orders.1` and
//! `orders.eu.7`, not `orders` itself).

/// Longest user id or channel name.
pub(crate) const MAX_NAME_LEN: usize = 128;

/// Whether `name` is a valid channel name or user id.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@'))
}

/// Whether `pattern` is a valid channel pattern.
pub(crate) fn valid_pattern(pattern: &str) -> bool {
    pattern == "*" || valid_name(pattern.strip_suffix(".*").unwrap_or(pattern))
}

/// Whether `pattern` grants `channel`.
pub(crate) fn pattern_matches(pattern: &str, channel: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('.') => channel.len() > prefix.len() && channel.starts_with(prefix),
        _ => pattern == channel,
    }
}

/// Whether any of `patterns` grants `channel`.
pub(crate) fn allowed(patterns: &[String], channel: &str) -> bool {
    patterns.iter().any(|p| pattern_matches(p, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("news", "news"));
        assert!(!pattern_matches("news", "news.eu"));
        assert!(pattern_matches("orders.*", "orders.1"));
        assert!(pattern_matches("orders.*", "orders.eu.7"));
        assert!(!pattern_matches("orders.*", "orders"));
        assert!(!pattern_matches("orders.*", "ordersx"));
        assert!(valid_pattern("orders.*"));
        assert!(!valid_pattern("or*ders"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(valid_name("user:42@eu"));
    }
}
