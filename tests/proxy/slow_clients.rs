//! Slow clients (slowloris heads, trickled bodies) hold many connections open while a
//! normal client keeps being served: success rate and latency of the normal client are
//! measured over real sockets. `scripts/slow-clients.sh` runs the same attacks with
//! `slowhttptest` against the release binary.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::harness::*;

const SLOW: usize = 1000;
const RUN: Duration = Duration::from_secs(6);

/// Open `SLOW` connections that each send `start` and then one byte of `trickle` per
/// second until `RUN` has passed; returns how many were opened.
fn attack(
    addr: SocketAddr,
    start: &'static [u8],
    trickle: &'static [u8],
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut conns: Vec<TcpStream> = Vec::new();
        for _ in 0..SLOW {
            let Ok(mut s) = TcpStream::connect(addr) else {
                break;
            };
            if s.write_all(start).is_err() {
                break;
            }
            s.set_nonblocking(true).unwrap();
            conns.push(s);
        }
        let opened = conns.len();
        let begun = Instant::now();
        let mut i = 0;
        while begun.elapsed() < RUN {
            thread::sleep(Duration::from_secs(1));
            for s in conns.iter_mut() {
                let _ = s.write(&trickle[i % trickle.len()..][..1]);
            }
            i += 1;
        }
        opened
    })
}

/// Requests on fresh connections during the attack: (successes, attempts, p99).
fn measure(addr: SocketAddr) -> (usize, usize, Duration) {
    let begun = Instant::now();
    let mut times = Vec::new();
    let mut ok = 0;
    while begun.elapsed() < RUN - Duration::from_secs(1) {
        let t = Instant::now();
        let good = TcpStream::connect(addr).ok().is_some_and(|s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut c = Client::from_stream(s);
            c.try_get("example.com", "/")
                .is_some_and(|r| r.status == 200)
        });
        times.push(t.elapsed());
        ok += usize::from(good);
        thread::sleep(Duration::from_millis(20));
    }
    times.sort();
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    (ok, times.len(), p99)
}

fn survives(start: &'static [u8], trickle: &'static [u8]) {
    let b = Backend::named("b");
    let p = proxy(&config(&[b.addr], "round_robin", ""));
    let attacker = attack(p.local_addr(), start, trickle);
    thread::sleep(Duration::from_millis(500));
    let (ok, tries, p99) = measure(p.local_addr());
    let opened = attacker.join().unwrap();
    assert!(
        opened >= SLOW * 9 / 10,
        "only {opened} slow connections opened"
    );
    assert!(
        ok * 100 >= tries * 95,
        "{ok} of {tries} served during the attack"
    );
    assert!(p99 < Duration::from_secs(2), "p99 {p99:?}");
}

#[test]
fn slowloris_heads_do_not_starve_other_clients() {
    survives(b"GET / HTTP/1.1\r\nHost: example.com\r\n", b"X-a: b\r\n");
}

#[test]
fn slow_bodies_do_not_starve_other_clients() {
    survives(
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1000000\r\n\r\n",
        b"x",
    );
}
