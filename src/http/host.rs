//! Host names as routing compares them: a `Host` value or absolute-form authority is
//! validated once, when the head is parsed, and kept as the span of its name (port and one
//! trailing dot removed). Lowercasing, the only other step matching needs, copies only when
//! the client sent capitals.

use super::parse::Span;

/// Longest host name accepted (RFC 1035 names are at most 253 octets; IPv6 literals fit too).
pub const MAX_HOST_LEN: usize = 255;

/// The host name of a request: a span of the buffer its head was parsed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostName {
    span: Span,
    /// Already lowercase: matching can borrow the bytes from the buffer as they are.
    lowercase: bool,
}

impl HostName {
    /// Validate the authority at `authority` in `buf`: a name (letters, digits, `-`, `.`,
    /// `_`) or a bracketed IPv6 literal, an optional port of at most 5 digits (empty
    /// allowed, RFC 3986), one trailing dot allowed. `None`: not a valid host.
    pub fn parse(buf: &[u8], authority: Span) -> Option<HostName> {
        let a = authority.of(buf);
        // The name is always a prefix of the authority.
        let name = name_of(a)?;
        let start = authority.start;
        Some(HostName {
            span: Span {
                start,
                end: start + name.len() as u32,
            },
            lowercase: !name.iter().any(u8::is_ascii_uppercase),
        })
    }

    /// The name in lowercase, borrowed from `buf` when it already is, else folded into
    /// `scratch`.
    pub fn as_str<'a>(&self, buf: &'a [u8], scratch: &'a mut [u8; MAX_HOST_LEN]) -> &'a str {
        let name = self.span.of(buf);
        let name = if self.lowercase {
            name
        } else {
            let out = &mut scratch[..name.len()];
            for (o, &b) in out.iter_mut().zip(name) {
                *o = b.to_ascii_lowercase();
            }
            out
        };
        // `parse` accepted ASCII only.
        std::str::from_utf8(name).unwrap_or_default()
    }
}

/// The name at the start of an authority; `None` when the authority is invalid.
fn name_of(authority: &[u8]) -> Option<&[u8]> {
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
    Some(host)
}

/// An empty port (`example.com:`) is allowed by RFC 3986; otherwise 1-5 digits.
fn valid_port(p: &[u8]) -> bool {
    p.len() <= 5 && p.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalize<'o>(authority: &[u8], out: &'o mut [u8; MAX_HOST_LEN]) -> Option<&'o str> {
        let span = Span {
            start: 0,
            end: u32::try_from(authority.len()).ok()?,
        };
        let name = HostName::parse(authority, span)?.span.of(authority);
        let out = &mut out[..name.len()];
        for (o, &b) in out.iter_mut().zip(name) {
            *o = b.to_ascii_lowercase();
        }
        std::str::from_utf8(out).ok()
    }

    fn host(raw: &str) -> Option<String> {
        let mut buf = [0u8; MAX_HOST_LEN];
        normalize(raw.as_bytes(), &mut buf).map(str::to_string)
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

    #[test]
    fn a_name_inside_a_larger_buffer_is_found_at_its_offset() {
        let buf = b"xxHost.Example:80yy";
        let h = HostName::parse(buf, Span { start: 2, end: 17 }).unwrap();
        let mut scratch = [0u8; MAX_HOST_LEN];
        assert_eq!(h.as_str(buf, &mut scratch), "host.example");
        assert!(!h.lowercase);
    }
}
