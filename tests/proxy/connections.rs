//! Connection handling: keep-alive both ways, pipelining, pooling, upgrade tunnels.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use super::harness::*;

#[test]
fn pipelined_requests_are_answered_in_order() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(
        b"GET /1 HTTP/1.1\r\nHost: example.com\r\n\r\nPOST /2 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    );
    for path in ["/1", "/2", "/3"] {
        assert_eq!(c.read_response(false).text(), format!("b:{path}"));
    }
    assert_eq!(b.requests()[1].body, b"abc");
}

#[test]
fn upstream_connections_are_reused() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    for _ in 0..3 {
        let mut c = Client::connect(p.local_addr());
        for _ in 0..5 {
            assert_eq!(c.get("example.com", "/").status, 200);
        }
    }
    assert_eq!(
        b.connection_count(),
        1,
        "15 sequential requests should share one upstream connection"
    );
    assert!(b.requests().iter().all(|r| r.conn == 0));
    let stats = &p.stats()[0];
    assert_eq!(stats.upstream_reused.get(), 14);
    assert_eq!(stats.upstream_connects.get(), 1);
}

#[test]
fn http10_keep_alive_and_connection_close_are_honoured() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(b"GET /a HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.header("connection").as_deref(), Some("keep-alive"));
    c.send(b"GET /b HTTP/1.0\r\nHost: example.com\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.text(), "b:/b");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(c.is_closed());

    let mut c = Client::connect(p.local_addr());
    c.send(b"GET /c HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(
        c.read_response(false).header("connection").as_deref(),
        Some("close")
    );
    assert!(c.is_closed());
}

#[test]
fn a_pooled_connection_closed_by_the_target_is_not_reused() {
    // The target closes every connection right after answering, without saying so.
    let b = Backend::start(Arc::new(|_: &Seen, s: &mut TcpStream| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        Reply::Close
    }));
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    for _ in 0..5 {
        let r = c.get("example.com", "/");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.connection_count(), 5);
}

#[test]
fn bytes_after_a_complete_response_keep_the_connection_out_of_the_pool() {
    let b = RawBackend::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    assert_eq!(c.get("example.com", "/").text(), "ok");
    assert_eq!(
        c.get("example.com", "/").text(),
        "ok",
        "the smuggled response must never be served"
    );
    assert_eq!(b.connection_count(), 2);
}

/// A target that accepts one connection, checks it asked to upgrade, answers 101 and
/// then hands the socket to `after`.
fn upgrading_target(after: fn(TcpStream)) -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = Vec::new();
        read_until(&mut s, &mut buf, |b| find(b, b"\r\n\r\n")).unwrap();
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        assert!(head.contains("upgrade: websocket"), "{head}");
        assert!(head.contains("connection: upgrade"), "{head}");
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap();
        after(s);
    });
    addr
}

#[test]
fn upgrade_becomes_a_tunnel_after_101() {
    // Echo until the client closes.
    let addr = upgrading_target(|mut s| {
        let mut chunk = [0u8; 1024];
        loop {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => s.write_all(&chunk[..n]).unwrap(),
            }
        }
    });
    let p = proxy(&config(&[addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(b"GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let r = c.read_response(true);
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade").as_deref(), Some("websocket"));
    for msg in [&b"ping"[..], b"second frame"] {
        c.stream.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        c.stream.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }
}

#[test]
fn upgrade_refused_by_target_stays_http() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(b"GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(c.read_response(false).text(), "b:/ws");
    assert_eq!(c.get("example.com", "/next").text(), "b:/next");
}

#[test]
fn second_instance_on_the_same_port_is_refused() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let port = p.local_addr().port();
    let toml =
        config(&[b.addr], "round_robin", "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let cfg = dispa::config::parse(&toml).unwrap();
    match dispa::boot::start(cfg, Some(1)) {
        Err(dispa::boot::Error::Bind { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a second Dispa must not share the port"),
    }
}

#[test]
fn legacy_driver_serves_the_same() {
    let b = Backend::named("b");
    let p = proxy(
        &config(&[b.addr], "round_robin", "")
            .replace("[server]\n", "[server]\nio_driver = \"legacy\"\n"),
    );
    assert_eq!(p.drivers(), ["epoll"]);
    let mut c = Client::connect(p.local_addr());
    c.send(b"POST /x HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(c.read_response(false).text(), "b:/x");
    assert_eq!(b.last().body, b"abc");
}

#[test]
fn io_uring_driver_is_used_by_default() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    assert_eq!(p.drivers(), ["io_uring"]);
}

#[test]
fn idle_tunnel_is_closed() {
    // Silent until Dispa closes.
    let addr = upgrading_target(|mut s| {
        let _ = s.read_to_end(&mut Vec::new());
    });
    let p = proxy(&config(
        &[addr],
        "round_robin",
        "[timeouts]\ntunnel_idle = \"300ms\"\n",
    ));
    let mut c = Client::connect(p.local_addr());
    c.send(b"GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(c.read_response(true).status, 101);
    let start = std::time::Instant::now();
    assert!(c.is_closed());
    assert!(start.elapsed() < Duration::from_secs(5));
    let stats = p.stats()[0].clone();
    assert!(eventually(Duration::from_secs(2), || stats
        .open_connections
        .get()
        == 0));
}

#[test]
fn stopping_closes_idle_keep_alive_connections() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    assert_eq!(c.get("example.com", "/").status, 200);
    p.shutdown(Duration::from_secs(1));
    assert!(c.is_closed());
}

/// After a second of silence a keep-alive connection gives its buffers back and waits
/// without one; it still serves the next request, and the keep-alive timeout still ends it.
#[test]
fn a_parked_keep_alive_connection_serves_again_and_still_times_out() {
    let b = Backend::named("b");
    let p = proxy(&config(
        &[b.addr],
        "round_robin",
        "[timeouts]\nkeepalive = 2\n",
    ));
    let mut c = Client::connect(p.local_addr());
    assert_eq!(c.get("example.com", "/one").status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(c.get("example.com", "/two").text(), "b:/two");
    let idle_from = std::time::Instant::now();
    assert!(c.is_closed(), "still open after the keep-alive timeout");
    let waited = idle_from.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(1800)
            && waited < std::time::Duration::from_secs(4),
        "closed after {waited:?}"
    );
}

/// A backend that takes `hold` per request and notes the most requests it had at once;
/// `close` ends each connection after its response.
fn busy_backend(hold: Duration, close: bool) -> (Backend, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen_max = max.clone();
    let b = Backend::start(Arc::new(move |_req: &Seen, s: &mut TcpStream| {
        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(hold);
        now.fetch_sub(1, Ordering::SeqCst);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        if close {
            Reply::Close
        } else {
            Reply::KeepAlive
        }
    }));
    (b, seen_max)
}

/// `n` clients at once, each on its own connection: their statuses and answer texts.
fn concurrent_gets(addr: std::net::SocketAddr, n: usize) -> Vec<(u16, String)> {
    let clients: Vec<_> = (0..n)
        .map(|i| {
            std::thread::spawn(move || {
                let r = Client::connect(addr).get("example.com", &format!("/{i}"));
                (r.status, r.text())
            })
        })
        .collect();
    clients.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn connections_per_target_are_limited_and_requests_queue_for_them() {
    use std::sync::atomic::Ordering;
    let (b, max) = busy_backend(Duration::from_millis(150), false);
    let extra = "[upstream]\nmax_connections_per_target = 2\n";
    let p = proxy(&config(&[b.addr], "round_robin", extra));
    let answers = concurrent_gets(p.local_addr(), 8);
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(b.requests().len(), 8);
    // Eight requests at once over two connections: the rest waited and were handed the
    // connections as they came back.
    assert_eq!(b.connection_count(), 2);
    assert_eq!(max.load(Ordering::SeqCst), 2);
    let stats = &p.stats()[0];
    assert_eq!(stats.upstream_connects.get(), 2);
    assert!(
        stats.upstream_queued.get() >= 6,
        "{}",
        stats.upstream_queued.get()
    );
}

#[test]
fn a_closed_connection_hands_its_place_to_a_waiting_request() {
    use std::sync::atomic::Ordering;
    let (b, max) = busy_backend(Duration::from_millis(100), true);
    let extra = "[upstream]\nmax_connections_per_target = 1\n";
    let p = proxy(&config(&[b.addr], "round_robin", extra));
    let answers = concurrent_gets(p.local_addr(), 4);
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(b.connection_count(), 4);
    assert_eq!(max.load(Ordering::SeqCst), 1);
}

#[test]
fn a_request_queued_past_timeouts_queue_gets_503() {
    let (b, _) = busy_backend(Duration::from_millis(1500), false);
    let extra = "[upstream]\nmax_connections_per_target = 1\n[timeouts]\nqueue = \"200ms\"\n";
    let p = proxy(&config(&[b.addr], "round_robin", extra));
    let mut answers = concurrent_gets(p.local_addr(), 2);
    answers.sort();
    assert_eq!(answers[0].0, 200, "{answers:?}");
    assert_eq!(answers[1].0, 503, "{answers:?}");
    assert!(
        answers[1].1.contains("waiting for a connection"),
        "{answers:?}"
    );
    assert_eq!(b.connection_count(), 1);
    let errors = &p.stats()[0].errors;
    assert_eq!(
        errors[dispa::msg::ErrorKind::QueueTimeout as usize].get(),
        1
    );
}
