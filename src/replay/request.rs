//! A recorded request made into bytes to send again: method, path and query as they were,
//! the captured header fields without the hop-by-hop ones and without what a proxy adds
//! (`X-Forwarded-*`, `Forwarded`), Host kept or rewritten, and the captured body framed
//! anew with `Content-Length`.

use super::source::Recorded;
use crate::http::encode::push_u64;

/// What the replayed requests' Host says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMode {
    /// The recorded Host (the name routing matched).
    Keep,
    /// The target URL's authority.
    Target,
    /// This name.
    Name(String),
}

/// Why a selected record is not replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its body was not captured in full (see `--allow-truncated`).
    TruncatedBody,
    /// The client got no answer (status 0): nothing to compare with.
    NoResponse,
    /// The head could not be parsed: there is no request to send.
    Unparsed,
    /// It was upgraded (101, e.g. a WebSocket): its tunnel was not recorded.
    Upgrade,
}

impl Skip {
    pub const ALL: [Skip; 4] = [
        Skip::TruncatedBody,
        Skip::NoResponse,
        Skip::Unparsed,
        Skip::Upgrade,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Skip::TruncatedBody => "truncated_body",
            Skip::NoResponse => "no_response",
            Skip::Unparsed => "unparsed",
            Skip::Upgrade => "upgrade",
        }
    }
}

/// Whether `r` is replayed; `allow_truncated` sends what was kept of a longer body.
pub fn skip_reason(r: &Recorded, allow_truncated: bool) -> Option<Skip> {
    if r.method.is_empty() {
        Some(Skip::Unparsed)
    } else if r.status == 0 {
        Some(Skip::NoResponse)
    } else if r.status == 101 {
        Some(Skip::Upgrade)
    } else if !allow_truncated && !r.request_body_complete() {
        Some(Skip::TruncatedBody)
    } else {
        None
    }
}

/// Fields a proxy between the client and the target made or consumed: not sent again.
/// (Framing is made anew; `Host` is written first; `Expect` would wait for a 100 the
/// replay does not need.)
fn dropped(name: &str) -> bool {
    const NAMES: [&str; 4] = ["host", "expect", "forwarded", "proxy-authorization"];
    crate::http::parse::is_framing_or_hop_by_hop(name.as_bytes())
        || NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
        || name.len() > 12 && name[..12].eq_ignore_ascii_case("x-forwarded-")
}

/// The names a recorded `Connection` field listed (RFC 9110 §7.6.1: hop-by-hop too).
fn connection_tokens(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .filter(|t| !t.is_empty())
        .collect()
}

/// Methods whose requests carry a `Content-Length` even when empty (RFC 9110 §8.6: a
/// user agent sends one for a method that defines a body).
fn expects_body(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH")
}

/// The request `r` on the wire: `authority` is the target's, for [`HostMode::Target`].
pub fn encode(r: &Recorded, host: &HostMode, authority: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(r.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(if r.path.is_empty() {
        b"/"
    } else {
        r.path.as_bytes()
    });
    if !r.query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(r.query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(match host {
        HostMode::Keep => recorded_host(r).as_bytes(),
        HostMode::Target => authority.as_bytes(),
        HostMode::Name(n) => n.as_bytes(),
    });
    out.extend_from_slice(b"\r\n");
    match &r.request_headers {
        Some(headers) => {
            let listed = connection_tokens(headers);
            for (name, value) in headers {
                if dropped(name) || listed.iter().any(|t| name.eq_ignore_ascii_case(t)) {
                    continue;
                }
                push_field(out, name, value);
            }
        }
        // Not captured: what every record keeps.
        None if !r.user_agent.is_empty() => push_field(out, "User-Agent", &r.user_agent),
        None => {}
    }
    let body = r.request_body.as_deref().unwrap_or_default();
    if !body.is_empty() || expects_body(&r.method) {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// The Host the client sent, when captured (with its port), else the name the record
/// keeps.
fn recorded_host(r: &Recorded) -> &str {
    r.request_headers
        .as_ref()
        .and_then(|h| h.iter().find(|(n, _)| n.eq_ignore_ascii_case("host")))
        .map_or(r.host.as_str(), |(_, v)| v.as_str())
}

/// `name: value` and CRLF; CR and LF inside a recorded value (which Dispa would not have
/// forwarded) are left out rather than sent as a second field.
fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend(value.bytes().filter(|&b| b != b'\r' && b != b'\n'));
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded() -> Recorded {
        Recorded {
            method: "POST".into(),
            host: "api.example.com".into(),
            path: "/v1/items".into(),
            query: "a=1".into(),
            status: 201,
            request_bytes: 4,
            request_headers: Some(
                [
                    ("Host", "API.example.com:8080"),
                    ("Content-Type", "application/json"),
                    ("Transfer-Encoding", "chunked"),
                    ("Connection", "keep-alive, X-Trace"),
                    ("X-Trace", "1"),
                    ("X-Forwarded-For", "10.0.0.1"),
                    ("Expect", "100-continue"),
                    ("Accept", "*/*"),
                    ("Accept", "text/plain"),
                ]
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ),
            request_body: Some(b"{\"a\"".to_vec()),
            ..Recorded::default()
        }
    }

    fn text(r: &Recorded, host: &HostMode) -> String {
        let mut out = Vec::new();
        encode(r, host, "127.0.0.1:9000", &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn sends_captured_fields_without_hop_by_hop_ones_and_frames_the_body_anew() {
        assert_eq!(
            text(&recorded(), &HostMode::Keep),
            "POST /v1/items?a=1 HTTP/1.1\r\nHost: API.example.com:8080\r\n\
             Content-Type: application/json\r\nAccept: */*\r\nAccept: text/plain\r\n\
             Content-Length: 4\r\n\r\n{\"a\""
        );
    }

    #[test]
    fn host_is_kept_or_rewritten() {
        let r = recorded();
        assert!(text(&r, &HostMode::Target).contains("\r\nHost: 127.0.0.1:9000\r\n"));
        let named = HostMode::Name("staging.example.com".into());
        assert!(text(&r, &named).contains("\r\nHost: staging.example.com\r\n"));
        let uncaptured = Recorded {
            request_headers: None,
            user_agent: "curl/8".into(),
            method: "GET".into(),
            request_body: None,
            ..r
        };
        assert_eq!(
            text(&uncaptured, &HostMode::Keep),
            "GET /v1/items?a=1 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8\r\n\r\n"
        );
    }

    #[test]
    fn truncated_bodies_and_unanswered_requests_are_skipped() {
        let mut r = recorded();
        assert_eq!(skip_reason(&r, false), None);
        r.request_bytes = 70_000;
        assert_eq!(skip_reason(&r, false), Some(Skip::TruncatedBody));
        assert_eq!(skip_reason(&r, true), None);
        r.status = 0;
        assert_eq!(skip_reason(&r, true), Some(Skip::NoResponse));
        r.method.clear();
        assert_eq!(skip_reason(&r, true), Some(Skip::Unparsed));
    }
}
