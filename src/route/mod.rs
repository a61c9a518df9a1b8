//! Domain interception: which request hosts Dispa forwards. Compiled once per snapshot into
//! hash sets; a lookup costs one probe per label suffix. Pure: no I/O, no allocation per lookup.

use std::collections::HashMap;

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

    /// The intercept rule that `host` (normalized: see `http::host`) matches, as an
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table::new(
            &["example.com".into(), "*.test.com".into()],
            &["private.test.com".into(), "*.internal.test.com".into()],
        )
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
}
