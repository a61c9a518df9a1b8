//! Faults under load, over real sockets: a target killed while requests flow, and a
//! target that closes idle keep-alive connections sooner than Dispa forgets them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::harness::*;

const CLIENTS: usize = 4;

#[test]
fn killing_a_target_under_load_fails_at_most_the_requests_in_flight_on_it() {
    let a = KillableBackend::start("a");
    let b = Backend::named("b");
    let p = proxy(&config(&[a.addr, b.addr], "round_robin", ""));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let addr = p.local_addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                while !stop.load(Ordering::SeqCst) {
                    match c.try_get("example.com", "/") {
                        Some(r) if r.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                        _ => {
                            c = Client::connect(addr);
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    a.kill();
    let ok_at_kill = ok.load(Ordering::SeqCst);
    thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::SeqCst);
    clients.into_iter().for_each(|t| t.join().unwrap());
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!("target killed under load: {ok} ok, {failed} failed");
    assert!(
        ok > ok_at_kill + 100,
        "traffic stopped after the kill: {ok_at_kill} -> {ok}"
    );
    // Each client has at most one request in flight on the killed target.
    assert!(failed <= CLIENTS, "{failed} failed requests ({ok} ok)");
    // New requests all go to the survivor.
    let mut c = Client::connect(addr);
    for _ in 0..6 {
        assert_eq!(
            c.get("example.com", "/").header("x-backend").as_deref(),
            Some("b")
        );
    }
}

/// A backend that closes a keep-alive connection after `idle` without a request, the
/// way nginx's `keepalive_timeout` or a Node server's does.
fn impatient_backend(idle: Duration) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || serve_until_idle(s, idle));
        }
    });
    (addr, connections)
}

fn serve_until_idle(mut s: TcpStream, idle: Duration) {
    s.set_read_timeout(Some(idle)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            buf.drain(..end + 4);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            continue;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return, // idle timeout: close, as the server decides
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn target_closing_idle_connections_first_causes_no_502() {
    let idle = Duration::from_millis(100);
    let (addr, connections) = impatient_backend(idle);
    let p = proxy(&config(&[addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    let begun = Instant::now();
    let mut statuses = Vec::new();
    let mut i = 0u64;
    // Gaps sweep across the backend's idle timeout, so some requests meet a connection
    // the backend is closing at that very moment.
    while begun.elapsed() < Duration::from_secs(4) {
        statuses.push(c.get("example.com", "/").status);
        thread::sleep(Duration::from_millis(80 + (i * 7) % 45));
        i += 1;
    }
    let bad: Vec<_> = statuses.iter().filter(|&&s| s != 200).collect();
    let n = connections.load(Ordering::SeqCst);
    eprintln!(
        "impatient target: {} requests, {} non-200, {n} upstream connections",
        statuses.len(),
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "{} of {} failed: {bad:?}",
        bad.len(),
        statuses.len()
    );
    // The pool really was reused when the backend allowed it, and dropped when it closed.
    assert!(
        n > 1 && n < statuses.len(),
        "{n} connections for {} requests",
        statuses.len()
    );
}
