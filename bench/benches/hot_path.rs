//! Micro-benchmarks of what every request runs: the request and response head parsers
//! (bytes/s), the forwarded head encoder, the domain matcher with 10,000 rules (exact and
//! wildcard, hits and misses), each balancer's pick, and the traffic record's JSON line.
// The worker fence (clippy.toml) applies to src/worker/ only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dispa::balance::{Balancer, Candidates};
use dispa::balance::Algorithm;
use dispa::http::encode::{Forward, request_head};
use dispa::http::parse::{RequestLimits, parse_request, parse_response};
use dispa::logging::record::json_line;
use dispa::msg::{RecordText, TrafficRecord};
use dispa::route::Table;

/// A browser-like request head (~500 bytes, 11 fields).
const REQUEST: &[u8] = b"GET /api/v1/items?page=2&sort=name HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\n\
Cookie: session=7f3a9c2e1b5d4f6a8c0e2a4c6e8f0a1b; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Cache-Control: max-age=0\r\n\
X-Forwarded-For: 203.0.113.7\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: nginx/1.22.1\r\n\
Date: Thu, 26 Nov 2026 07:00:00 GMT\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 1234\r\n\
Connection: keep-alive\r\n\
Cache-Control: private, max-age=60\r\n\
ETag: \"5f8c-1234\"\r\n\r\n";

const LIMITS: RequestLimits = RequestLimits {
    max_headers: 100,
    max_uri_bytes: 8192,
};

fn parsers(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    g.bench_function("request head", |b| {
        b.iter(|| parse_request(black_box(REQUEST), &LIMITS).unwrap().unwrap())
    });
    g.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    g.bench_function("response head", |b| {
        b.iter(|| parse_response(black_box(RESPONSE), false, 16384).unwrap().unwrap())
    });
    let head = parse_request(REQUEST, &LIMITS).unwrap().unwrap();
    let fwd = Forward {
        path_prefix: b"",
        host_override: None,
        client_ip: b"198.51.100.23",
        request_id: Some(b"6b07c3740000000000000003"),
    };
    let mut out = Vec::with_capacity(1024);
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    g.bench_function("forwarded head (encode)", |b| {
        b.iter(|| {
            out.clear();
            request_head(&mut out, black_box(REQUEST), &head, &fwd);
        })
    });
    g.finish();
}

fn matcher(c: &mut Criterion) {
    // 10,000 rules: 5,000 exact names and 5,000 wildcards.
    let mut rules = Vec::new();
    for i in 0..5000 {
        rules.push(format!("host{i}.example{}.com", i % 97));
        rules.push(format!("*.svc{i}.test.com"));
    }
    let table = Table::new(&rules, &["private.svc7.test.com".to_string()]);
    let mut g = c.benchmark_group("domain matcher (10,000 rules)");
    for (name, host) in [
        ("exact hit", "host4321.example53.com"),
        ("wildcard hit", "api.eu.svc4321.test.com"),
        ("excluded", "private.svc7.test.com"),
        ("miss", "www.not-intercepted.org"),
    ] {
        g.bench_function(name, |b| b.iter(|| table.lookup(black_box(host))));
    }
    g.finish();
}

fn balancers(c: &mut Criterion) {
    let weights = [5u32, 1, 1, 3, 2, 1, 1, 4];
    let none = |_: usize| false;
    let candidates = Candidates {
        weights: &weights,
        excluded: &none,
    };
    let load = |i: usize| (i as u64 * 7) % 5;
    let mut g = c.benchmark_group("balancer pick (8 targets)");
    for (name, algorithm) in [
        ("round_robin", Algorithm::RoundRobin),
        ("weighted", Algorithm::Weighted),
        ("random", Algorithm::Random),
        ("least_connections", Algorithm::LeastConnections),
    ] {
        let mut balancer = Balancer::new(algorithm, weights.len(), 1);
        g.bench_function(name, |b| b.iter(|| balancer.pick(black_box(&candidates), &load)));
    }
    g.finish();
}

fn record() -> TrafficRecord {
    let mut text = String::new();
    let mut ends = [0u32; RecordText::COUNT];
    for (k, v) in [
        "6b07c3740000000000000003",
        "GET",
        "shop.example.com",
        "/api/v1/items",
        "page=2&sort=name",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "",
        "backend1",
    ]
    .iter()
    .enumerate()
    {
        text.push_str(v);
        ends[k] = text.len() as u32;
    }
    TrafficRecord {
        start_ms: 1_795_670_066_712,
        client: "198.51.100.23".parse().unwrap(),
        conn: 1,
        worker: 0,
        version_minor: 1,
        tls: 0,
        status: 200,
        request_bytes: 0,
        response_bytes: 1234,
        duration_us: 412,
        upstream_us: Some(380),
        target_addr: Some("10.0.1.10:8080".parse().unwrap()),
        reused: Some(true),
        retries: 0,
        error: None,
        text,
        ends,
        capture: None,
    }
}

fn records(c: &mut Criterion) {
    let r = record();
    let mut out = Vec::with_capacity(1024);
    let mut g = c.benchmark_group("traffic record");
    g.bench_function("json line", |b| {
        b.iter(|| {
            out.clear();
            json_line(&mut out, black_box(&r));
        })
    });
    g.bench_function("build on the worker (clone of one record)", |b| {
        b.iter_batched(|| (), |()| black_box(r.clone()), BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(benches, parsers, matcher, balancers, records);
criterion_main!(benches);
