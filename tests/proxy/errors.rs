//! Failover and every status Dispa generates itself.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use super::harness::*;

#[test]
fn failover_to_the_next_target_when_one_refuses() {
    let b = Backend::named("up");
    let down = closed_port();
    let p = proxy(&config(&[down, b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    for _ in 0..4 {
        let r = c.get("example.com", "/");
        assert_eq!((r.status, r.text().as_str()), (200, "up:/"));
    }
    // POST with a body is safe too: nothing was sent to the refusing target.
    c.send(b"POST /p HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(c.read_response(false).status, 200);
    assert_eq!(b.last().body, b"hi");
}

#[test]
fn all_targets_refusing_is_502() {
    let p = proxy(&config(&[closed_port(), closed_port()], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    let r = c.get("example.com", "/");
    assert_eq!(r.status, 502);
    assert!(r.header("content-length").is_some());
    // No body was pending, so the connection stays usable.
    assert_eq!(c.get("example.com", "/").status, 502);
    assert_eq!(p.stats()[0].upstream_connect_failures.get(), 4);
}

#[test]
fn slow_target_is_504() {
    let b = Backend::start(Arc::new(|_: &Seen, _: &mut TcpStream| {
        std::thread::sleep(Duration::from_secs(2));
        Reply::Close
    }));
    let p = proxy(&config(
        &[b.addr],
        "round_robin",
        "[timeouts]\nupstream_response = \"300ms\"\n",
    ));
    let r = get(p.local_addr(), "example.com", "/");
    assert_eq!(r.status, 504);
}

#[test]
fn garbage_from_the_target_is_502_and_the_connection_is_not_reused() {
    let b =
        RawBackend::start(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    assert_eq!(get(p.local_addr(), "example.com", "/").status, 502);
    assert_eq!(get(p.local_addr(), "example.com", "/").status, 502);
    assert_eq!(b.connection_count(), 2);
}

#[test]
fn truncated_response_body_is_never_completed() {
    let b = Backend::start(Arc::new(|_: &Seen, s: &mut TcpStream| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
        Reply::Close
    }));
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let mut all = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c.stream, &mut all);
    let all = String::from_utf8_lossy(&all);
    assert!(all.starts_with("HTTP/1.1 200 OK"), "{all}");
    assert!(
        !all.ends_with("0\r\n\r\n"),
        "a truncated body must not end with the last chunk: {all:?}"
    );
}

fn status_of(p: &dispa::boot::Running, request: &[u8]) -> u16 {
    raw(p.local_addr(), request).status
}

#[test]
fn malformed_requests_are_400_and_never_forwarded() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n",
        b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: example.com\r\nHost: example.com\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: example.com\r\n\r\n",
    ];
    for case in cases {
        let r = raw(p.local_addr(), case);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(case));
        assert_eq!(r.header("connection").as_deref(), Some("close"));
    }
    assert_eq!(b.requests().len(), 0);
}

#[test]
fn bad_chunk_size_is_400() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let r = raw(
        p.local_addr(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 400);
}

#[test]
fn oversized_head_is_431_and_long_target_is_414() {
    let b = Backend::named("b");
    let p = proxy(&config(
        &[b.addr],
        "round_robin",
        "[limits]\nmax_head_bytes = 4096\nmax_uri_bytes = 1024\n",
    ));
    let big = format!(
        "GET / HTTP/1.1\r\nHost: example.com\r\nX-Big: {}\r\n\r\n",
        "a".repeat(5000)
    );
    assert_eq!(status_of(&p, big.as_bytes()), 431);
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "a".repeat(2000)
    );
    assert_eq!(status_of(&p, long.as_bytes()), 414);
    let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: example.com\r\n{many}\r\n");
    assert_eq!(status_of(&p, many.as_bytes()), 431);
    assert_eq!(b.requests().len(), 0);
}

#[test]
fn slow_head_is_408() {
    let b = Backend::named("b");
    let p = proxy(&config(
        &[b.addr],
        "round_robin",
        "[timeouts]\nclient_head = \"300ms\"\n",
    ));
    let mut c = Client::connect(p.local_addr());
    c.send(b"GET / HTTP/1.1\r\nHost: exa");
    let r = c.read_response(false);
    assert_eq!(r.status, 408);
    assert!(c.is_closed());
}

#[test]
fn idle_keep_alive_connection_is_closed_quietly() {
    let b = Backend::named("b");
    let p = proxy(&config(
        &[b.addr],
        "round_robin",
        "[timeouts]\nkeepalive = \"200ms\"\n",
    ));
    let mut c = Client::connect(p.local_addr());
    assert_eq!(c.get("example.com", "/").status, 200);
    let start = std::time::Instant::now();
    assert!(c.is_closed());
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn connect_is_refused_for_method_connect() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    assert_eq!(
        status_of(
            &p,
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
        ),
        405
    );
}

#[test]
fn status_line_without_reason_is_relayed_and_the_worker_survives() {
    let b = Backend::start(Arc::new(|_: &Seen, s: &mut TcpStream| {
        let _ = s.write_all(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok");
        Reply::KeepAlive
    }));
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    for _ in 0..2 {
        let r = c.get("example.com", "/");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
}

/// A backend whose `n`-th request on its first connection gets `script(n)`.
fn scripted(script: fn(usize, &Seen, &mut TcpStream) -> Reply) -> Backend {
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Backend::start(Arc::new(move |req: &Seen, s: &mut TcpStream| {
        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        script(n, req, s)
    }))
}

fn ok(s: &mut TcpStream) -> Reply {
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    Reply::KeepAlive
}

#[test]
fn interim_then_close_is_502_not_a_silent_retry() {
    let b = scripted(|n, _, s| {
        if n == 1 {
            let _ = s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n");
            return Reply::Close;
        }
        ok(s)
    });
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    assert_eq!(c.get("example.com", "/").status, 200);
    c.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(c.read_response(false).status, 103);
    assert_eq!(c.read_response(false).status, 502);
    assert_eq!(
        b.requests().len(),
        2,
        "a request the target began answering is not replayed"
    );
}

#[test]
fn stale_pooled_connection_is_retried_for_get_but_not_for_post() {
    // The target reads the second request on its first connection and closes without a
    // word (a keep-alive race); later connections answer normally.
    let script: fn(usize, &Seen, &mut TcpStream) -> Reply =
        |n, _, s| if n == 1 { Reply::Close } else { ok(s) };
    let b = scripted(script);
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    assert_eq!(c.get("example.com", "/1").status, 200);
    assert_eq!(
        c.get("example.com", "/2").status,
        200,
        "GET is retried on a new connection"
    );
    assert_eq!(b.requests().len(), 3);
    assert_eq!(p.stats()[0].upstream_retries.get(), 1);

    let b = scripted(script);
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    assert_eq!(c.get("example.com", "/1").status, 200);
    c.send(b"POST /2 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(c.read_response(false).status, 502);
    let posts = b
        .requests()
        .iter()
        .filter(|r| r.request_line().starts_with("POST"))
        .count();
    assert_eq!(posts, 1, "a POST must never be sent twice");
}

#[test]
fn truncated_body_to_http10_client_ends_in_a_reset() {
    let b = Backend::start(Arc::new(|_: &Seen, s: &mut TcpStream| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
        Reply::Close
    }));
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n");
    let mut all = Vec::new();
    let res = std::io::Read::read_to_end(&mut c.stream, &mut all);
    assert!(
        res.is_err(),
        "a clean EOF would make the partial body look complete: {all:?}"
    );
}

#[test]
fn error_answer_survives_an_unread_request_body() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(b"POST / HTTP/1.1\r\nHost: not-ours.org\r\nContent-Length: 1000000\r\n\r\n");
    c.send(&vec![b'x'; 100_000]);
    let r = c.read_response(false);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
}

/// Bodies up to 64 KiB are collected before anything is sent (head and body in one
/// write): one arriving in pieces is complete, one that breaks off is a clean 502.
#[test]
fn a_body_arriving_in_pieces_is_whole_and_one_breaking_off_is_a_clean_502() {
    let b = Backend::start(Arc::new(|req: &Seen, s: &mut TcpStream| {
        let body = vec![b'x'; 40_000];
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        let mut all = head.into_bytes();
        all.extend_from_slice(&body);
        let cut = all.len() / 2;
        let _ = s.write_all(&all[..cut]);
        let _ = s.flush();
        std::thread::sleep(Duration::from_millis(50));
        if req.request_line().contains("/break") {
            return Reply::Close;
        }
        let _ = s.write_all(&all[cut..]);
        Reply::KeepAlive
    }));
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    let r = c.get("example.com", "/whole");
    assert_eq!((r.status, r.body.len()), (200, 40_000));
    assert!(r.body.iter().all(|&x| x == b'x'));
    let r = c.get("example.com", "/break");
    assert_eq!(r.status, 502, "{}", r.head);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
}
