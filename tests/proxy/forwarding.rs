//! The request head as the target sees it.

use super::harness::*;

#[test]
fn hop_by_hop_fields_are_removed_and_forwarding_fields_set() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let r = raw(
        p.local_addr(),
        b"GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n\
          Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X\r\n\
          Upgrade: websocket\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\
          X-Forwarded-Host: spoofed\r\nUser-Agent: t/1\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = b.last();
    assert_eq!(seen.request_line(), "GET /p?q=1 HTTP/1.1");
    assert_eq!(seen.header("host").as_deref(), Some("example.com"));
    assert_eq!(seen.header("user-agent").as_deref(), Some("t/1"));
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("example.com")
    );
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert_eq!(
            seen.header(gone),
            None,
            "{gone} must not be forwarded:\n{}",
            seen.head
        );
    }
}

#[test]
fn target_path_prefix_and_host_rewrite() {
    let b = Backend::named("b");
    let toml = config(&[b.addr], "round_robin", "").replace(
        &format!("url = \"http://{}\"\n", b.addr),
        &format!("url = \"http://{}/api/\"\nrewrite_host = true\n", b.addr),
    );
    let p = proxy(&toml);
    assert_eq!(get(p.local_addr(), "a.test.com", "/x?y").status, 200);
    let seen = b.last();
    assert_eq!(seen.request_line(), "GET /api/x?y HTTP/1.1");
    assert_eq!(seen.header("host"), Some(b.addr.to_string()));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("a.test.com")
    );
}

#[test]
fn response_hop_by_hop_fields_are_removed() {
    let b = Backend::start(std::sync::Arc::new(
        |_: &Seen, s: &mut std::net::TcpStream| {
            use std::io::Write;
            let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=3\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
        );
            Reply::KeepAlive
        },
    ));
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let r = get(p.local_addr(), "example.com", "/");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(r.header("x-kept").as_deref(), Some("yes"));
    assert_eq!(r.header("x-internal"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("connection"), None);
}
