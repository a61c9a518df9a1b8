//! Request smuggling and response splitting, table-driven over real sockets: a raw-byte
//! client, a backend that records exactly what it received, and a canary request after
//! every case. A rejected request must be answered, forward nothing, and close the
//! connection (so the canary pipelined behind it is never read as a request); an accepted
//! one must leave the connection usable for the canary's own answer.

use super::harness::*;

const CANARY: &[u8] = b"GET /canary HTTP/1.1\r\nHost: example.com\r\n\r\n";

/// Requests that must be refused with the given status and never reach a target.
const REJECTED: &[(&str, u16, &[u8])] = &[
    // Content-Length and Transfer-Encoding together, either order.
    ("CL then TE", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE then CL", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    // Content-Length that is not 1*DIGIT, or ambiguous.
    ("CL +5", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: +5\r\n\r\nhello"),
    ("CL -1", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: -1\r\n\r\n"),
    ("CL 0x5", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0x5\r\n\r\nhello"),
    ("CL 5a", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5a\r\n\r\nhello"),
    ("CL empty", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: \r\n\r\n"),
    ("CL overflow", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
    ("CL 1 000", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1 0\r\n\r\nhello"),
    ("two CLs differ", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("CL list differs", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5, 6\r\n\r\nhello!"),
    ("empty CL then valid", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: \r\nContent-Length: 5\r\n\r\nhello"),
    // Field names that are not tokens.
    ("high byte in name", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-\xb0Length: 5\r\n\r\nhello"),
    ("CTL in name", 400, b"GET / HTTP/1.1\r\nHost: example.com\r\nX\x01Y: a\r\n\r\n"),
    ("empty name", 400, b"GET / HTTP/1.1\r\nHost: example.com\r\n: a\r\n\r\n"),
    ("line without colon", 400, b"GET / HTTP/1.1\r\nHost: example.com\r\nFoo\r\n\r\n"),
    ("space before colon", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length : 5\r\n\r\nhello"),
    ("tab before colon", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n"),
    // Transfer-Encoding other than exactly one final `chunked`.
    ("TE chunked, chunked", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ("two TE fields", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE gzip alone", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("TE chunked, gzip", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
    ("TE gzip, chunked", 501, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("TE VT", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n"),
    ("TE FF", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\x0c\r\n\r\n0\r\n\r\n"),
    ("TE NUL", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n"),
    ("TE CR", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chu\rnked\r\n\r\n0\r\n\r\n"),
    ("TE quoted", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n"),
    ("TE high byte", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\xff\r\n\r\n0\r\n\r\n"),
    ("TE obs-fold", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
    ("TE in HTTP/1.0", 400, b"POST / HTTP/1.0\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    // Chunk framing.
    ("chunk size 0x", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
    ("chunk size leading space", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n"),
    ("chunk size underscore", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n_5\r\nhello\r\n0\r\n\r\n"),
    ("chunk size overflow", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n"),
    ("chunk data without CRLF", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
    ("bare CR after chunk size", 400, b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\rhello\r\n0\r\n\r\n"),
    // Field values.
    ("CR in value", 400, b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: a\rb\r\n\r\n"),
    ("NUL in value", 400, b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: a\x00b\r\n\r\n"),
    ("obs-fold", 400, b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: a\r\n b\r\n\r\n"),
    // Host.
    ("no Host in 1.1", 400, b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n"),
    ("two Hosts", 400, b"GET / HTTP/1.1\r\nHost: example.com\r\nHost: example.com\r\n\r\n"),
    ("Host with space", 400, b"GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n"),
    ("Host with userinfo", 400, b"GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n"),
    ("Host with path", 400, b"GET / HTTP/1.1\r\nHost: example.com/x\r\n\r\n"),
    // Request line.
    ("HTTP/1.32", 400, b"GET / HTTP/1.32\r\nHost: example.com\r\n\r\n"),
    ("lowercase version", 400, b"GET / http/1.1\r\nHost: example.com\r\n\r\n"),
    ("HTTP/2.0", 400, b"GET / HTTP/2.0\r\nHost: example.com\r\n\r\n"),
    ("HTTP/0.9", 400, b"GET /\r\n\r\n"),
    ("method not a token", 400, b"G(T / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    ("NUL in target", 400, b"GET /a\x00b HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    ("CTL in target", 400, b"GET /a\x01b HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    ("two spaces", 400, b"GET  / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    ("fragment", 400, b"GET /a#frag HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    ("GET *", 400, b"GET * HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    ("CONNECT", 405, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
];

/// Send every [`REJECTED`] case with the canary pipelined behind it, each on a connection
/// from `connect`; returns what went wrong (also used over TLS, tests/proxy/tls.rs).
pub fn check_rejected<S: std::io::Read + std::io::Write>(
    b: &Backend,
    connect: impl Fn() -> Client<S>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for (name, status, case) in REJECTED {
        let mut c = connect();
        let mut bytes = case.to_vec();
        bytes.extend_from_slice(CANARY);
        c.send(&bytes);
        let r = c.read_response(false);
        if r.status != *status {
            wrong.push(format!("{name}: got {} want {status}", r.status));
        }
        if r.header("connection").as_deref() != Some("close") || !c.is_closed() {
            wrong.push(format!(
                "{name}: connection left open after a refused request"
            ));
        }
        if !b.requests().is_empty() {
            wrong.push(format!("{name}: forwarded {:?}", b.requests()));
            b.seen.lock().unwrap().clear();
        }
    }
    wrong
}

#[test]
fn ambiguous_requests_are_refused_and_nothing_is_forwarded() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let wrong = check_rejected(&b, || Client::connect(p.local_addr()));
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The proxy is still there for well-formed clients.
    assert_eq!(get(p.local_addr(), "example.com", "/after").status, 200);
}

/// Requests that are accepted; the backend must see `forwarded` verbatim as the head's
/// first lines and the canary must then get its own answer on the same connection.
#[test]
fn tolerated_forms_are_normalised_and_keep_framing() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let cases: &[(&str, &[u8], &str, &[u8])] = &[
        (
            "identical CLs collapse",
            b"POST /a HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            "content-length: 5",
            b"hello",
        ),
        (
            "bare LF line endings",
            b"POST /a HTTP/1.1\nHost: example.com\nContent-Length: 5\n\nhello",
            "content-length: 5",
            b"hello",
        ),
        (
            "Connection names Content-Length",
            b"POST /a HTTP/1.1\r\nHost: example.com\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello",
            "content-length: 5",
            b"hello",
        ),
        (
            "trailer fields never frame",
            b"POST /a HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n",
            "transfer-encoding: chunked",
            b"hello",
        ),
        (
            "chunk extension",
            b"POST /a HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"v\"\r\nhello\r\n0\r\n\r\n",
            "transfer-encoding: chunked",
            b"hello",
        ),
    ];
    for (name, case, framing, body) in cases {
        b.seen.lock().unwrap().clear();
        let mut c = Client::connect(p.local_addr());
        c.send(&[*case, CANARY].concat());
        let r = c.read_response(false);
        assert_eq!(r.status, 200, "{name}");
        let canary = c.read_response(false);
        assert_eq!(
            canary.text(),
            "b:/canary",
            "{name}: the canary got someone else's answer"
        );
        let seen = b.requests();
        assert_eq!(seen.len(), 2, "{name}: {seen:#?}");
        let head = seen[0].head.to_ascii_lowercase();
        assert!(head.contains(framing), "{name}: {head}");
        assert!(
            !head.contains("\n\n") && !head.replace("\r\n", "").contains('\n'),
            "{name}: bare LF forwarded: {head:?}"
        );
        assert_eq!(
            head.matches("content-length").count() + head.matches("transfer-encoding").count(),
            1,
            "{name}: {head}"
        );
        assert_eq!(&seen[0].body[..], *body, "{name}");
        assert_eq!(seen[1].request_line(), "GET /canary HTTP/1.1", "{name}");
    }
}

#[test]
fn long_chunk_extension_is_refused() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut req =
        b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5;".to_vec();
    req.extend(std::iter::repeat_n(b'x', 64 * 1024));
    req.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    let mut c = Client::connect(p.local_addr());
    // Dispa may answer and close before the whole line is sent.
    let _ = std::io::Write::write_all(&mut c.stream, &req);
    let r = c.read_response(false);
    assert_eq!(r.status, 400);
}

#[test]
fn connection_named_fields_and_h2c_are_not_forwarded() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let r = raw(
        p.local_addr(),
        b"GET /a HTTP/1.1\r\nHost: example.com\r\nConnection: X-Secret, Upgrade, HTTP2-Settings\r\nX-Secret: 1\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = b.last();
    for name in ["x-secret", "upgrade", "http2-settings"] {
        assert_eq!(seen.header(name), None, "{name} forwarded: {}", seen.head);
    }
}

/// A target that maps `_` to `-` (CGI, WSGI) would read `Transfer_Encoding` as framing:
/// such names never reach it, and the request is framed by its real Content-Length.
#[test]
fn field_names_with_underscores_are_not_forwarded() {
    let b = RawBackend::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let r = raw(
        p.local_addr(),
        b"POST /a HTTP/1.1\r\nHost: example.com\r\nTransfer_Encoding: chunked\r\nContent_Length: 99\r\nX_Custom: 1\r\nX-Kept: 2\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(r.status, 200);
    let whole = eventually(IO_TIMEOUT, || b.connection(0).ends_with("hello"));
    let seen = b.connection(0).to_ascii_lowercase();
    assert!(whole, "{seen}");
    for name in ["transfer_encoding", "content_length", "x_custom"] {
        assert!(!seen.contains(name), "{name} forwarded: {seen}");
    }
    assert!(seen.contains("x-kept: 2\r\n"), "{seen}");
    assert!(seen.ends_with("content-length: 5\r\n\r\nhello"), "{seen}");
}

#[test]
fn absolute_form_for_a_host_not_intercepted_is_never_forwarded() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let r = raw(
        p.local_addr(),
        b"GET http://elsewhere.org/x HTTP/1.1\r\nHost: example.com\r\n\r\n",
    );
    assert_eq!(r.status, 404);
    assert!(b.requests().is_empty());
}

/// Responses whose framing is in doubt: the client gets 502 and the upstream connection
/// is never used again.
const BAD_RESPONSES: &[(&str, &[u8])] = &[
    ("CL and TE", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE and CL", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    ("two CLs differ", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("CL 5a", b"HTTP/1.1 200 OK\r\nContent-Length: 5a\r\n\r\nhello"),
    ("CL +5", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"),
    ("TE quoted", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n"),
    ("TE chunked, chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ("two TE fields", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("garbage status", b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n"),
    ("not HTTP", b"HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ("no version", b"200 OK\r\nContent-Length: 0\r\n\r\n"),
    ("space before colon", b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"),
    ("NUL in value", b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n"),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
    ("bare CR", b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n"),
];

#[test]
fn ambiguous_responses_are_502_and_the_upstream_connection_is_dropped() {
    let mut wrong = Vec::new();
    let huge: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
            "x".repeat(200_000)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    for (name, reply) in BAD_RESPONSES
        .iter()
        .chain([("oversized head", huge)].iter())
    {
        let b = RawBackend::start(reply);
        let p = proxy(&config(&[b.addr], "round_robin", ""));
        let mut c = Client::connect(p.local_addr());
        for round in 0..2 {
            let r = c.get("example.com", "/");
            if r.status != 502 {
                wrong.push(format!("{name}: round {round} got {}", r.status));
                break;
            }
            if r.header("connection").as_deref() == Some("close") {
                c = Client::connect(p.local_addr());
            }
        }
        if b.connection_count() != 2 {
            wrong.push(format!(
                "{name}: {} upstream connections for 2 requests",
                b.connection_count()
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// `reply` answers the first request; what follows it on that upstream connection must
/// never be taken as the answer to a later request.
fn second_request_uses_a_new_upstream(
    reply: &'static [u8],
    first: &[u8],
    want_status: u16,
    want_body: &[u8],
) {
    let b = RawBackend::start(reply);
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(first);
    let is_head = first.starts_with(b"HEAD");
    let r = c.read_response(is_head);
    assert_eq!(r.status, want_status, "{}", r.head);
    assert_eq!(&r.body[..], want_body);
    // The same client connection carries on; the next request gets a fresh upstream.
    c.send(b"GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let _ = c.read_response(false);
    assert_eq!(
        b.connection_count(),
        2,
        "the first upstream connection was reused"
    );
    assert!(
        b.connection(1).starts_with("GET /next "),
        "{}",
        b.connection(1)
    );
}

#[test]
fn bytes_after_a_complete_response_are_discarded() {
    second_request_uses_a_new_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        200,
        b"ok",
    );
}

#[test]
fn body_bytes_on_head_204_and_304_never_reach_the_client() {
    second_request_uses_a_new_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
        b"HEAD / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        200,
        b"",
    );
    second_request_uses_a_new_upstream(
        b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        204,
        b"",
    );
    second_request_uses_a_new_upstream(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\nevil",
        b"GET / HTTP/1.1\r\nHost: example.com\r\nIf-None-Match: \"x\"\r\n\r\n",
        304,
        b"",
    );
}

#[test]
fn interim_response_then_final_reaches_the_client() {
    let b = RawBackend::start(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let interim = c.read_response(false);
    assert_eq!(interim.status, 103);
    let r = c.read_response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}

#[test]
fn invalid_chunk_in_a_response_body_is_never_presented_as_complete() {
    let b = RawBackend::start(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    );
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c.stream, &mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a final chunk was invented: {text:?}"
    );
}
