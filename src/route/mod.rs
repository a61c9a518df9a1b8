//! Domain interception: which request hosts Dispa forwards. Compiled once per snapshot into
//! hash sets; a lookup costs one probe per label suffix. Pure: no I/O, no allocation per lookup.

use std::collections::HashMap;

/// Longest host name accepted (RFC 1035 names are at most 253 octets; IPv6 literals fit too).
pub const MAX_HOST_LEN: usize = 255;

/// Exact names and `*.suffix` wildcards to intercept, and the same to exclude (exclusions win).
#[derive(Debug, Default)]
pub struct Table {
    intercept: Rules,
    exclude: Rules,
}

/// One list of patterns: exact names and wildcard suffixes, each mapped to its position in
/// the configured list (the "rule" a metric label names).
#[derive(Debug, Default)]
struct Rules {
    patterns: Vec<String>,
    exact: HashMap<Box<str>, u32>,
    wildcard: HashMap<Box<str>, u32>,
}

impl Rules {
    fn new(patterns: &[String]) -> Rules {
        let mut rules = Rules {
            patterns: patterns.to_vec(),
            ..Rules::default()
        };
        for (i, p) in patterns.iter().enumerate() {
            let map = match p.strip_prefix("*.") {
                Some(suffix) => rules.wildcard.entry(suffix.into()),
                None => rules.exact.entry(p.as_str().into()),
            };
            map.or_insert(i as u32);
        }
        rules
    }

    fn find(&self, host: &str) -> Option<u32> {
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        // `*.test.com` matches any host with at least one label before `.test.com`:
        // try every proper suffix that starts after a dot, longest first.
        for (i, &b) in host.as_bytes().iter().enumerate() {
            if b == b'.'
                && i > 0
                && let Some(&r) = self.wildcard.get(&host[i + 1..])
            {
                return Some(r);
            }
        }
        None
    }
}

impl Table {
    /// Patterns must already be normalized (lowercase, no trailing dot), as config does.
    pub fn new(intercept: &[String], exclude: &[String]) -> Table {
        Table {
            intercept: Rules::new(intercept),
            exclude: Rules::new(exclude),
        }
    }

    /// The intercept rule that `host` (normalized by [`normalize_host`]) matches, as an
    /// index into [`Table::rules`]; `None` when it is not intercepted.
    pub fn lookup(&self, host: &str) -> Option<u32> {
        let rule = self.intercept.find(host)?;
        self.exclude.find(host).is_none().then_some(rule)
    }

    /// Whether `host` is intercepted.
    pub fn intercepts(&self, host: &str) -> bool {
        self.lookup(host).is_some()
    }

    /// The intercept patterns, in configured order.
    pub fn rules(&self) -> &[String] {
        &self.intercept.patterns
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
    fn lookup_names_the_rule() {
        let t = table();
        assert_eq!(t.lookup("example.com"), Some(0));
        assert_eq!(t.lookup("x.y.test.com"), Some(1));
        assert_eq!(t.rules()[1], "*.test.com");
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
