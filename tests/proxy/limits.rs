//! Resource limits over real sockets: body size (413), open connections per worker
//! (503), and what happens to the connections involved.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::harness::*;

#[test]
fn body_over_the_limit_is_413_and_never_forwarded() {
    let b = Backend::named("b");
    let p = proxy(&config(
        &[b.addr],
        "round_robin",
        "[limits]\nmax_body_bytes = 10\n",
    ));
    let r = raw(
        p.local_addr(),
        b"POST /big HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\nhello world",
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    // At the limit is fine.
    let r = raw(
        p.local_addr(),
        b"POST /ok HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\nhelloworld",
    );
    assert_eq!(r.status, 200);
    let seen = b.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request_line(), "POST /ok HTTP/1.1");
}

#[test]
fn chunked_body_growing_past_the_limit_is_413_and_the_target_never_sees_an_end() {
    let b = RawBackend::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let p = proxy(&config(
        &[b.addr],
        "round_robin",
        "[limits]\nmax_body_bytes = 10\n",
    ));
    let r = raw(
        p.local_addr(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n6\r\nworld!\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 413);
    assert!(eventually(Duration::from_secs(5), || b.connection_count() == 1));
    let got = b.connection(0);
    assert!(
        !got.contains("\r\n0\r\n\r\n"),
        "the cut-off body was completed: {got:?}"
    );
}

#[test]
fn connections_over_the_limit_get_503_and_the_others_are_served() {
    let b = Backend::named("b");
    let p = proxy(&config(
        &[b.addr],
        "round_robin",
        "[limits]\nmax_connections = 4\n",
    ));
    let mut held: Vec<Client> = (0..4).map(|_| Client::connect(p.local_addr())).collect();
    // Each held connection is open in the worker once it has answered a request.
    for c in held.iter_mut() {
        assert_eq!(c.get("example.com", "/").status, 200);
    }
    let mut extra = TcpStream::connect(p.local_addr()).unwrap();
    extra.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let mut got = Vec::new();
    let _ = extra.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    assert!(text.contains("Connection: close"), "{text}");
    // The held ones still work, and a slot freed is usable again.
    assert_eq!(held[0].get("example.com", "/again").status, 200);
    drop(held.pop());
    assert!(eventually(Duration::from_secs(5), || {
        let mut c = Client::connect(p.local_addr());
        c.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n");
        c.read_response(false).status == 200
    }));
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    Duration::from_millis((f[0] + f[1]) * 10) // USER_HZ is 100 on Linux
}

#[test]
fn out_of_file_descriptors_backs_off_keeps_serving_and_recovers() {
    if std::process::Command::new("prlimit")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("prlimit (util-linux) not installed; skipping");
        return;
    }
    let b = Backend::named("b");
    let dir = scratch_dir("fds");
    let path = dir.join("fds.toml");
    let toml = config(&[b.addr], "round_robin", "[monitoring]\nenabled = false\n");
    std::fs::write(&path, toml).unwrap();
    // A hard limit of 64 descriptors: Dispa cannot raise it, and about 30 are its own.
    let bin = env!("CARGO_BIN_EXE_dispa");
    let (child, addr, _) = spawn_dispa(&[
        "prlimit",
        "--nofile=64:64",
        bin,
        "-c",
        path.to_str().unwrap(),
        "--workers",
        "1",
    ]);
    let pid = child.0.id();
    let mut served = Client::connect(addr);
    assert_eq!(served.get("example.com", "/").status, 200);
    // Far more connections than descriptors: the rest wait in the listen backlog, which
    // keeps the listener readable; a worker without back-off would spin on EMFILE.
    let held: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    assert!(held.len() >= 60, "only {} connected", held.len());
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_time(pid) - before;
    assert!(
        spent < Duration::from_millis(400),
        "busy while out of descriptors: {spent:?} CPU in 2 s"
    );
    // An open connection keeps being served meanwhile.
    assert_eq!(served.get("example.com", "/during").status, 200);
    drop(held);
    assert!(eventually(Duration::from_secs(10), || {
        TcpStream::connect(addr).is_ok_and(|s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            Client::from_stream(s)
                .try_get("example.com", "/after")
                .is_some_and(|r| r.status == 200)
        })
    }));
}
