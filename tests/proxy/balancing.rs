//! Each algorithm's distribution, over real connections.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::harness::*;

fn backend_of(r: &Response) -> String {
    r.header("x-backend").unwrap_or_default()
}

#[test]
fn round_robin_alternates_between_two_targets() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let p = proxy(&config(&[a.addr, b.addr], "round_robin", ""));
    let mut c = Client::connect(p.local_addr());
    let seq: Vec<String> = (0..6)
        .map(|_| backend_of(&c.get("example.com", "/")))
        .collect();
    assert_eq!(seq, ["a", "b", "a", "b", "a", "b"]);
}

#[test]
fn weighted_three_to_one_over_400_requests_is_300_100() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let toml = config(&[a.addr, b.addr], "weighted", "").replacen(
        &format!("url = \"http://{}\"\n", a.addr),
        &format!("url = \"http://{}\"\nweight = 3\n", a.addr),
        1,
    );
    let p = proxy(&toml);
    let mut c = Client::connect(p.local_addr());
    let picks: Vec<String> = (0..400)
        .map(|_| backend_of(&c.get("example.com", "/")))
        .collect();
    assert_eq!(picks.iter().filter(|n| *n == "a").count(), 300);
    assert_eq!(picks.iter().filter(|n| *n == "b").count(), 100);
    // Smooth: never more than three a's in a row.
    assert!(!picks.windows(4).any(|w| w.iter().all(|n| n == "a")));
}

#[test]
fn random_uses_both_targets() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let p = proxy(&config(&[a.addr, b.addr], "random", ""));
    let mut c = Client::connect(p.local_addr());
    let picks: Vec<String> = (0..200)
        .map(|_| backend_of(&c.get("example.com", "/")))
        .collect();
    let a_share = picks.iter().filter(|n| *n == "a").count();
    assert!((60..=140).contains(&a_share), "a got {a_share} of 200");
}

#[test]
fn least_connections_avoids_the_busy_target() {
    // Target "slow" holds its response until released; while one request is in flight
    // there, every other request must go to "fast".
    let release = Arc::new(AtomicBool::new(false));
    let r2 = release.clone();
    let slow = Backend::start(Arc::new(move |_: &Seen, s: &mut TcpStream| {
        while !r2.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Backend: slow\r\n\r\nslow");
        Reply::KeepAlive
    }));
    let fast = Backend::named("fast");
    let p = proxy(&config(&[slow.addr, fast.addr], "least_connections", ""));
    let addr = p.local_addr();
    // The first pick with equal loads goes to the first target: the slow one.
    let held = std::thread::spawn(move || get(addr, "example.com", "/held"));
    assert!(eventually(Duration::from_secs(5), || slow.requests().len() == 1));
    let mut c = Client::connect(addr);
    for _ in 0..10 {
        assert_eq!(backend_of(&c.get("example.com", "/")), "fast");
    }
    release.store(true, Ordering::SeqCst);
    assert_eq!(held.join().unwrap().text(), "slow");
}

/// The seed README's production example (weights 3 and 2, no balancer type): the default
/// balancer honours the weights, 60/40 over 100 requests, spread out.
#[test]
fn the_seeds_production_example_splits_60_40_without_a_type() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let toml = format!(
        "[server]\nbind = \"127.0.0.1:0\"\n[domains]\nintercept_domains = [\"api.myapp.com\"]\n\
         [[targets.targets]]\nname = \"prod-server-1\"\nurl = \"http://{}\"\nweight = 3\n\n\
         [[targets.targets]]\nname = \"prod-server-2\"\nurl = \"http://{}\"\nweight = 2\n\n\
         [targets.health_check]\nenabled = true\ninterval = 10\n[logging]\nenabled = false\n",
        a.addr, b.addr
    );
    let p = proxy(&toml);
    let mut c = Client::connect(p.local_addr());
    let picks: Vec<String> = (0..100)
        .map(|_| backend_of(&c.get("api.myapp.com", "/")))
        .collect();
    assert_eq!(picks.iter().filter(|n| *n == "a").count(), 60);
    assert_eq!(picks.iter().filter(|n| *n == "b").count(), 40);
    assert!(
        !picks.windows(3).any(|w| w.iter().all(|n| n == "a")),
        "{picks:?}"
    );
}

/// Sticky sessions (issue 17, point 3): `consistent_hash` keyed by the client's address
/// sends one client to one target whichever worker accepts its connections; keyed by a
/// header, each value sticks and the values spread; the original dispa's
/// `sticky_sessions = true` means the same.
#[test]
fn consistent_hash_sticks_a_client_to_one_target_across_workers() {
    let backends = [
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let start = |toml: &str| {
        let cfg = dispa::config::parse(toml).unwrap_or_else(|e| panic!("{e}"));
        dispa::boot::start(cfg, Some(2)).expect("start dispa")
    };
    // One client address, 40 connections (the kernel spreads them over both workers).
    let by_ip = start(&config(&addrs, "consistent_hash", ""));
    let seen: std::collections::HashSet<String> = (0..40)
        .map(|_| backend_of(&get(by_ip.local_addr(), "example.com", "/")))
        .collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let busy_workers = by_ip
        .stats()
        .iter()
        .filter(|s| s.requests.get() > 0)
        .count();
    assert_eq!(
        busy_workers, 2,
        "both workers served some of the 40 connections"
    );
    // The original's switch means the same.
    let sticky = config(&addrs, "round_robin", "").replace(
        "type = \"round_robin\"",
        "type = \"roundrobin\"\nsticky_sessions = true",
    );
    let p = start(&sticky);
    let seen: std::collections::HashSet<String> = (0..20)
        .map(|_| backend_of(&get(p.local_addr(), "example.com", "/")))
        .collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    // Keyed by a header: each user on its own connections always reaches the same target.
    let by_user = start(&config(
        &addrs,
        "consistent_hash\"\nhash_key = \"header:X-User",
        "",
    ));
    let mut home = std::collections::HashMap::new();
    for round in 0..3 {
        for u in 0..30 {
            let req = format!("GET / HTTP/1.1\r\nHost: example.com\r\nX-User: u{u}\r\n\r\n");
            let target = backend_of(&raw(by_user.local_addr(), req.as_bytes()));
            let first = home.entry(u).or_insert_with(|| target.clone());
            assert_eq!(*first, target, "user {u}, round {round}");
        }
    }
    let used: std::collections::HashSet<&String> = home.values().collect();
    assert_eq!(
        used.len(),
        3,
        "30 users spread over the 3 targets: {home:?}"
    );
}
