//! Which hosts are intercepted, and that nothing else is ever forwarded.

use super::harness::*;

#[test]
fn exact_and_wildcard_hosts_are_forwarded() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    for host in [
        "example.com",
        "a.test.com",
        "a.b.test.com",
        "EXAMPLE.com:8080",
        "example.com.",
    ] {
        let r = get(p.local_addr(), host, "/x");
        assert_eq!((r.status, r.text()), (200, "b:/x".to_string()), "{host}");
    }
    assert_eq!(b.requests().len(), 5);
}

#[test]
fn wildcard_does_not_match_apex_or_lookalike_and_nothing_is_forwarded() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    for host in [
        "test.com",
        "eviltest.com",
        "example.org",
        "www.example.com",
        "private.test.com",
    ] {
        let r = get(p.local_addr(), host, "/");
        assert_eq!(r.status, 404, "{host}");
        assert_eq!(r.text(), "domain not intercepted\n");
    }
    assert_eq!(
        b.requests().len(),
        0,
        "a host that is not intercepted must never be forwarded"
    );
    assert_eq!(b.connection_count(), 0);
}

#[test]
fn absolute_form_authority_wins_over_host() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let r = raw(
        p.local_addr(),
        b"GET http://example.com/abs?q=1 HTTP/1.1\r\nHost: evil.org\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = b.last();
    assert_eq!(seen.request_line(), "GET /abs?q=1 HTTP/1.1");
    let r = raw(
        p.local_addr(),
        b"GET http://evil.org/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
    );
    assert_eq!(r.status, 404);
    assert_eq!(b.requests().len(), 1);
}

#[test]
fn not_intercepted_keeps_the_connection_alive() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    assert_eq!(c.get("nope.org", "/").status, 404);
    assert_eq!(c.get("example.com", "/").status, 200);
}
