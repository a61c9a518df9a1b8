//! Request heads: parsing never panics, and what Dispa forwards re-parses to the same
//! request with exactly one framing (never both Content-Length and Transfer-Encoding).
#![no_main]

use dispa::http::encode::{Forward, request_head};
use dispa::http::parse::{Body, RequestLimits, parse_request};
use libfuzzer_sys::fuzz_target;

const LIMITS: RequestLimits = RequestLimits {
    max_headers: 100,
    max_uri_bytes: 8192,
};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = parse_request(data, &LIMITS) else {
        return;
    };
    let fwd = Forward {
        path_prefix: b"",
        host_override: None,
        client_ip: b"127.0.0.1",
        request_id: None,
    };
    let mut out = Vec::new();
    request_head(&mut out, data, &head, &fwd);
    // Dispa adds X-Forwarded-* fields: the forwarded head may hold a few more than the
    // client's limit, never more than the parser's capacity.
    let roomy = RequestLimits {
        max_headers: dispa::http::MAX_HEADERS,
        max_uri_bytes: LIMITS.max_uri_bytes + 1,
    };
    let again = match parse_request(&out, &roomy) {
        Ok(Some(h)) => h,
        other => panic!(
            "forwarded head does not parse ({:?}):\n{}",
            other.err().map(|e| e.reason()),
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(again.head_len, out.len());
    assert_eq!(head.method.of(data), again.method.of(&out));
    assert_eq!(head.host.of(data), again.host.of(&out));
    // The path may gain a leading '/' (absolute-form with an empty path).
    let path = head.path.of(data);
    let path_again = again.path.of(&out);
    assert!(path_again == path || (path_again.len() == path.len() + 1 && path_again.ends_with(path)));
    // A message with no body may be forwarded with `Content-Length: 0`.
    match (head.body, again.body) {
        (Body::None, Body::None) | (Body::Chunked, Body::Chunked) => {}
        (Body::Length(a), Body::Length(b)) => assert_eq!(a, b),
        (a, b) => panic!("framing changed: {a:?} -> {b:?}"),
    }
    let lower = out.to_ascii_lowercase();
    let has = |name: &[u8]| lower.windows(name.len()).any(|w| w == name);
    assert!(!(has(b"\r\ncontent-length:") && has(b"\r\ntransfer-encoding:")));
});
