//! Response heads: parsing never panics, and what Dispa sends a client re-parses to the
//! same status with the framing Dispa chose, never both Content-Length and
//! Transfer-Encoding.
#![no_main]

use dispa::http::encode::{ClientFraming, client_framing, response_head};
use dispa::http::parse::{Body, parse_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let request_is_head = flags & 1 == 1;
    let client_minor = (flags >> 1) & 1;
    let keep_alive = flags & 4 == 4;
    let Ok(Some(r)) = parse_response(data, request_is_head, 64 * 1024) else {
        return;
    };
    // Dispa adds up to two fields (framing, Connection); re-parsing with its own parser
    // needs that room below the parser's capacity.
    if r.fields.list.len() + 2 > dispa::http::MAX_HEADERS {
        return;
    }
    let framing = client_framing(&r, client_minor);
    let mut out = Vec::new();
    response_head(&mut out, data, &r, framing, client_minor, keep_alive);
    let again = match parse_response(&out, request_is_head, 64 * 1024) {
        Ok(Some(a)) => a,
        other => panic!(
            "sent head does not parse ({other:?}):\n{}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(again.status, r.status);
    assert_eq!(again.head_len, out.len());
    match (framing, again.body) {
        (ClientFraming::Length(n), Body::Length(m)) => assert_eq!(n, m),
        (ClientFraming::Chunked, Body::Chunked) => {}
        (ClientFraming::Close, Body::Close) => {}
        (ClientFraming::None, _) => {}
        // An empty body may read as no body.
        (ClientFraming::Length(0), Body::None) => {}
        (f, b) => panic!("framing {f:?} re-parsed as {b:?}"),
    }
    let lower = out.to_ascii_lowercase();
    let has = |name: &[u8]| lower.windows(name.len()).any(|w| w == name);
    assert!(!(has(b"\r\ncontent-length:") && has(b"\r\ntransfer-encoding:")));
});
