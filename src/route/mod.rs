//! Domain interception: which request hosts Dispa forwards. Compiled once per snapshot into
//! hash sets; a lookup costs one probe per label suffix. Pure: no I/O, no allocation per lookup.

use std::collections::HashSet;

/// Longest host name accepted (RFC 1035 names are at most 253 octets; IPv6 literals fit too).
pub const MAX_HOST_LEN: usize = 255;

/// Exact names and `*.suffix` wildcards to intercept, and the same to exclude (exclusions win).
#[derive(Debug, Default)]
pub struct Table {
    exact: HashSet<Box<str>>,
    wildcard: HashSet<Box<str>>,
    exclude_exact: HashSet<Box<str>>,
    exclude_wildcard: HashSet<Box<str>>,
}

fn split(patterns: &[String]) -> (HashSet<Box<str>>, HashSet<Box<str>>) {
    let mut exact = HashSet::new();
    let mut wildcard = HashSet::new();
    for p in patterns {
        match p.strip_prefix("*.") {
            Some(suffix) => wildcard.insert(suffix.into()),
            None => exact.insert(p.as_str().into()),
        };
    }
    (exact, wildcard)
}

fn matches(exact: &HashSet<Box<str>>, wildcard: &HashSet<Box<str>>, host: &str) -> bool {
    if exact.contains(host) {
        return true;
    }
    if wildcard.is_empty() {
        return false;
    }
    // `*.test.com` matches any host with at least one label before `.test.com`:
    // try every proper suffix that starts after a dot.
    let bytes = host.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'.' && i > 0 && wildcard.contains(&host[i + 1..]) {
            return true;
        }
    }
    false
}

impl Table {
    /// Patterns must already be normalized (lowercase, no trailing dot), as config does.
    pub fn new(intercept: &[String], exclude: &[String]) -> Table {
        let (exact, wildcard) = split(intercept);
        let (exclude_exact, exclude_wildcard) = split(exclude);
        Table {
            exact,
            wildcard,
            exclude_exact,
            exclude_wildcard,
        }
    }

    /// Whether `host` (normalized by [`normalize_host`]) is intercepted.
    pub fn intercepts(&self, host: &str) -> bool {
        matches(&self.exact, &self.wildcard, host)
            && !matches(&self.exclude_exact, &self.exclude_wildcard, host)
    }
}

/// Normalize a `Host` value or absolute-form authority for matching: lowercase, port removed,
/// one trailing dot removed, IPv6 literal kept with its brackets. Writes into `out` (no
/// allocation) and returns the name, or `None` when the value is not a valid host.
pub fn normalize_host<'o>(authority: &[u8], out: &'o mut [u8; MAX_HOST_LEN]) -> Option<&'o str> {
    let host = if authority.first() == Some(&b'[') {
        let end = authority.iter().position(|&b| b == b']')?;
        let rest = &authority[end + 1..];
        if !rest.is_empty() && !valid_port(rest.strip_prefix(b":")?) {
            return None;
        }
        let literal = &authority[..=end];
        if !literal[1..end]
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        literal
    } else {
        let (name, port) = match authority.iter().rposition(|&b| b == b':') {
            Some(i) => (&authority[..i], Some(&authority[i + 1..])),
            None => (authority, None),
        };
        if let Some(port) = port
            && !valid_port(port)
        {
            return None;
        }
        let name = name.strip_suffix(b".").unwrap_or(name);
        if name.is_empty()
            || !name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return None;
        }
        name
    };
    if host.len() > MAX_HOST_LEN {
        return None;
    }
    let out = &mut out[..host.len()];
    for (o, &b) in out.iter_mut().zip(host) {
        *o = b.to_ascii_lowercase();
    }
    // Only ASCII was accepted above.
    std::str::from_utf8(out).ok()
}

/// An empty port (`example.com:`) is allowed by RFC 3986; otherwise 1-5 digits.
fn valid_port(p: &[u8]) -> bool {
    p.len() <= 5 && p.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table::new(
            &["example.com".into(), "*.test.com".into()],
            &["private.test.com".into(), "*.internal.test.com".into()],
        )
    }

    fn host(raw: &str) -> Option<String> {
        let mut buf = [0u8; MAX_HOST_LEN];
        normalize_host(raw.as_bytes(), &mut buf).map(str::to_string)
    }

    #[test]
    fn exact_matches_only_itself() {
        let t = table();
        assert!(t.intercepts("example.com"));
        assert!(!t.intercepts("www.example.com"));
        assert!(!t.intercepts("example.com.evil"));
    }

    #[test]
    fn wildcard_matches_subdomains_at_any_depth() {
        let t = table();
        assert!(t.intercepts("a.test.com"));
        assert!(t.intercepts("a.b.test.com"));
    }

    #[test]
    fn wildcard_does_not_match_apex_or_lookalike() {
        let t = table();
        assert!(!t.intercepts("test.com"));
        assert!(!t.intercepts("eviltest.com"));
        assert!(!t.intercepts(".test.com"));
    }

    #[test]
    fn exclusions_win() {
        let t = table();
        assert!(!t.intercepts("private.test.com"));
        assert!(!t.intercepts("db.internal.test.com"));
        assert!(t.intercepts("internal.test.com"));
    }

    #[test]
    fn host_is_lowercased_port_and_trailing_dot_stripped() {
        assert_eq!(host("Example.COM:8080").as_deref(), Some("example.com"));
        assert_eq!(host("example.com.").as_deref(), Some("example.com"));
        assert_eq!(host("example.com:").as_deref(), Some("example.com"));
        assert_eq!(host("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(host("[FE80::1]").as_deref(), Some("[fe80::1]"));
    }

    #[test]
    fn invalid_hosts_are_rejected() {
        assert_eq!(host(""), None);
        assert_eq!(host("a b.com"), None);
        assert_eq!(host("example.com:80x"), None);
        assert_eq!(host("[::1"), None);
        assert_eq!(host("user@example.com"), None);
        assert_eq!(host(&"a".repeat(300)), None);
    }
}
