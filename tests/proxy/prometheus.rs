//! The shipped Prometheus scrape config (`deploy/prometheus.yml`) and Grafana dashboard
//! (`deploy/grafana/dispa-dashboard.json`) against a real Prometheus server (Debian's
//! `prometheus` package, installed by `.ci/run`): Prometheus on loopback scrapes an
//! in-process Dispa, and every dashboard query is run over the HTTP API. Skipped, with a
//! message, where the `prometheus` binary is missing.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::harness::*;

/// A free loopback port (bound and released; Prometheus binds it right after).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET /api/v1/query?query=...` on Prometheus; the JSON body.
fn query(prometheus: SocketAddr, promql: &str) -> String {
    let mut encoded = String::new();
    for b in promql.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded += &format!("%{b:02X}");
        }
    }
    let request = format!(
        "GET /api/v1/query?query={encoded} HTTP/1.1\r\nHost: {prometheus}\r\nConnection: close\r\n\r\n"
    );
    raw(prometheus, request.as_bytes()).text()
}

/// The PromQL expressions of the dashboard's panels, with `$job` filled in.
fn dashboard_queries() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/dispa-dashboard.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("\"expr\": \""))
        .map(|e| {
            e.trim_end_matches(',')
                .trim_end_matches('"')
                .replace("\\\"", "\"")
                .replace("$job", "dispa")
                .replace("$instance", ".+")
        })
        .collect()
}

#[test]
fn prometheus_scrapes_dispa_with_the_shipped_config_and_the_dashboard_queries_run() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("prometheus not installed (Debian package `prometheus`); skipping");
        return;
    }
    let b = Backend::named("b");
    let d = controlled(&config(&[b.addr], "round_robin", MONITORING));
    let mut c = Client::connect(d.proxy);
    for _ in 0..20 {
        assert_eq!(c.get("example.com", "/").status, 200);
    }
    let dir = scratch_dir("prometheus");
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus.yml"
    ))
    .unwrap();
    assert!(shipped.contains("\"127.0.0.1:9090\"") && shipped.contains("scrape_interval: 15s"));
    // The shipped file, pointed at this Dispa and scraping every second.
    let cfg = shipped
        .replace("\"127.0.0.1:9090\"", &format!("\"{}\"", d.metrics))
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    std::fs::write(dir.join("prometheus.yml"), cfg).unwrap();
    let web = free_port();
    let server = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Spawned(server);
    // Series appear after a scrape or two; rates need two samples.
    let found = eventually(Duration::from_secs(30), || {
        std::net::TcpStream::connect(web).is_ok()
            && query(web, "sum(rate(dispa_requests_total{job=\"dispa\"}[1m]))")
                .contains("\"result\":[{")
    });
    assert!(found, "no Dispa series: {}", query(web, "up"));
    let body = query(
        web,
        "dispa_requests_total{job=\"dispa\",instance=\"dispa-1\"}",
    );
    assert!(body.contains("\"status_class\":\"2xx\""), "{body}");
    assert!(body.contains("\"20\"]"), "20 requests expected: {body}");
    // Every dashboard panel's query is valid PromQL over Dispa's real series.
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{queries:?}");
    let mut empty = Vec::new();
    for q in &queries {
        let body = query(web, q);
        assert!(body.contains("\"status\":\"success\""), "{q}: {body}");
        if !body.contains("\"result\":[{") {
            empty.push(q.clone());
        }
    }
    // Only series that need an event Dispa did not see here (errors, drops) may be empty.
    let may_be_empty = ["errors", "retries", "dropped", "lost", "rejected"];
    let unexpected: Vec<_> = empty
        .iter()
        .filter(|q| !may_be_empty.iter().any(|m| q.contains(m)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "queries without data: {unexpected:#?}"
    );
}
