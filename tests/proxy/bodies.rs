//! Bodies both ways: Content-Length, chunked, close-delimited, none; 100-continue.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use super::harness::*;

fn respond(bytes: &'static [u8]) -> Backend {
    Backend::start(Arc::new(move |_: &Seen, s: &mut TcpStream| {
        let _ = s.write_all(bytes);
        Reply::KeepAlive
    }))
}

#[test]
fn chunked_upload_reaches_the_target_reframed() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let r = raw(
        p.local_addr(),
        b"POST /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = b.last();
    assert_eq!(seen.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(seen.body, b"hello world");
}

#[test]
fn content_length_upload_is_forwarded_exactly() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let body = vec![b'x'; 200_000];
    let mut c = Client::connect(p.local_addr());
    c.send(
        format!(
            "PUT /big HTTP/1.1\r\nHost: example.com\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    assert_eq!(c.read_response(false).status, 200);
    let seen = b.last();
    assert_eq!(seen.header("content-length"), Some(body.len().to_string()));
    assert_eq!(seen.body.len(), body.len());
}

/// Bodies up to 64 KiB go out with their head in one write: copied behind it up to 4 KiB,
/// in a vectored write above; both exact, back to back on one connection.
#[test]
fn content_length_downloads_of_every_inline_size_arrive_exact() {
    let sizes = [5usize, 4096, 4097, 16 * 1024, 64 * 1024, 64 * 1024 + 1];
    let b = sized_backend();
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    check_sizes(&mut c, &sizes);
}

#[test]
fn chunked_download_reaches_the_client() {
    let b = respond(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    );
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    let r = c.get("example.com", "/");
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(r.text(), "abcdefg");
    // The connection stays usable.
    assert_eq!(c.get("example.com", "/").text(), "abcdefg");
}

#[test]
fn http10_client_gets_chunked_body_dechunked_and_closed() {
    let b = respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n");
    let mut all = String::new();
    c.stream.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(
        !all.to_ascii_lowercase().contains("transfer-encoding"),
        "{all}"
    );
    assert!(all.contains("Connection: close\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\nabc"), "{all}");
}

#[test]
fn close_delimited_response_is_chunked_to_http11_clients() {
    let b = Backend::start(Arc::new(|_: &Seen, s: &mut TcpStream| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end");
        Reply::Close
    }));
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    let r = c.get("example.com", "/");
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(r.text(), "until the end");
    assert_eq!(c.get("example.com", "/").text(), "until the end");
}

#[test]
fn head_response_carries_no_body_and_the_connection_continues() {
    let b = Backend::start(Arc::new(|req: &Seen, s: &mut TcpStream| {
        if req.request_line().starts_with("HEAD") {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
        } else {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nget");
        }
        Reply::KeepAlive
    }));
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(b"HEAD / HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let r = c.read_response(true);
    assert_eq!(r.header("content-length").as_deref(), Some("100"));
    assert_eq!(c.get("example.com", "/").text(), "get");
}

#[test]
fn no_content_and_not_modified_carry_no_body() {
    for status in ["204 No Content", "304 Not Modified"] {
        let line: &'static str =
            Box::leak(format!("HTTP/1.1 {status}\r\nX-S: 1\r\n\r\n").into_boxed_str());
        let b = respond(line.as_bytes());
        let p = proxy(&config(&[b.addr], "round_robin", ""));
        let mut c = Client::connect(p.local_addr());
        let r = c.get("example.com", "/");
        assert_eq!(r.header("x-s").as_deref(), Some("1"));
        assert!(r.body.is_empty());
        assert_eq!(
            c.get("example.com", "/").header("x-s").as_deref(),
            Some("1"),
            "{status}"
        );
    }
}

#[test]
fn expect_100_continue_is_relayed_before_the_body() {
    // The harness backend answers 100 when it sees Expect, then reads the body.
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(b"POST /e HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = c.read_response(false);
    assert_eq!(interim.status, 100);
    c.send(b"hello");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(b.last().body, b"hello");
    assert_eq!(b.last().header("expect").as_deref(), Some("100-continue"));
}

#[test]
fn expect_refused_by_target_is_final_and_body_never_sent() {
    let b = RawBackend::start(b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 2\r\n\r\nno");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    c.send(b"POST / HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!((r.status, r.text().as_str()), (417, "no"));
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(
        c.is_closed(),
        "the unsent body leaves the connection in doubt: close it"
    );
    let sent = b.connection(0);
    assert!(
        sent.ends_with("\r\n\r\n"),
        "body must not be sent: {sent:?}"
    );
}

#[test]
fn expect_without_an_answer_gets_dispas_own_100() {
    // A target that ignores Expect and just waits for the body (HTTP/1.0 style).
    let b = Backend::ignoring_expect(Arc::new(|_: &Seen, s: &mut TcpStream| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        Reply::KeepAlive
    }));
    let toml = config(
        &[b.addr],
        "round_robin",
        "[timeouts]\nexpect_continue = \"100ms\"\n",
    );
    let p = proxy(&toml);
    let mut c = Client::connect(p.local_addr());
    c.send(b"POST / HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(c.read_response(false).status, 100);
    c.send(b"hi");
    assert_eq!(c.read_response(false).text(), "ok");
    assert_eq!(b.last().body, b"hi");
}

#[test]
fn large_upload_streams_with_bounded_memory() {
    // The binary, so that its RSS is Dispa's alone (tests share this process).
    let b = sink_backend();
    let dir = scratch_dir("upload");
    let path = dir.join("dispa.toml");
    std::fs::write(
        &path,
        config(&[b], "round_robin", "[monitoring]\nenabled = false\n"),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_dispa");
    let (child, addr, _) = spawn_dispa(&[bin, "-c", path.to_str().unwrap(), "--workers", "1"]);
    let pid = child.0.id();
    let total: usize = 256 << 20;
    let rss_before = rss_kib(pid);
    let mut c = Client::connect(addr);
    c.send(
        format!("POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: {total}\r\n\r\n")
            .as_bytes(),
    );
    let chunk = vec![b'z'; 1 << 16];
    let mut peak = rss_before;
    for i in 0..total / chunk.len() {
        c.send(&chunk);
        if i % 64 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    let r = c.read_response(false);
    assert_eq!(
        r.text(),
        total.to_string(),
        "the target must count every byte"
    );
    let growth = peak.saturating_sub(rss_before);
    // A few 64 KiB buffers, not the body.
    assert!(
        growth < 4 * 1024,
        "RSS grew {growth} KiB for a {} MiB upload",
        total >> 20
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// A target that reads a Content-Length body, discards it, and answers with the count.
fn sink_backend() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let end =
                    read_until(&mut s, &mut head, |b| find(b, b"\r\n\r\n").map(|i| i + 4)).unwrap();
                let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap();
                let mut got = head.len() - end;
                let mut buf = vec![0u8; 1 << 16];
                while got < len {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let body = got.to_string();
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

#[test]
fn no_content_never_carries_content_length() {
    let b = respond(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let r = get(p.local_addr(), "example.com", "/");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("content-length"), None);
}

#[test]
fn zero_content_length_is_forwarded() {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let r = raw(
        p.local_addr(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(b.last().header("content-length").as_deref(), Some("0"));
}
