//! The control thread: health checks, failover, reload, status API, metrics, signals.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::harness::*;

const FAST_CHECKS: &str = "[targets.health_check]\ninterval = \"100ms\"\ntimeout = \"300ms\"\nunhealthy_threshold = 2\nhealthy_threshold = 2\nmax_fails = 0\n";
const NO_CHECKS: &str =
    "[targets.health_check]\nenabled = false\nmax_fails = 1\nfail_timeout = 60\n";

/// The JSON object of target `name` in `/targets`.
fn target_json(d: &Controlled, name: &str) -> String {
    let body = call(d.status, "GET", "/targets").text();
    let start = body
        .find(&format!("{{\"name\":\"{name}\""))
        .unwrap_or_else(|| panic!("{name} not in {body}"));
    let rest = &body[start..];
    let end = rest[1..].find("{\"name\"").map_or(rest.len(), |i| i + 1);
    rest[..end].to_string()
}

fn available(d: &Controlled, name: &str) -> bool {
    target_json(d, name).contains("\"available\":true")
}

fn backend_of(r: &Response) -> String {
    r.header("x-backend").unwrap_or_default()
}

fn health_number(status: SocketAddr, field: &str) -> u64 {
    let body = call(status, "GET", "/health").text();
    let g = body.split(&format!("\"{field}\":")).nth(1).unwrap_or("0");
    g.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

fn generation(status: SocketAddr) -> u64 {
    health_number(status, "generation")
}

/// Wait until every worker runs the snapshot the control thread last published.
fn settled(d: &Controlled) {
    assert!(eventually(Duration::from_secs(3), || {
        health_number(d.status, "applied_generation") == generation(d.status)
    }));
}

#[test]
fn killed_backend_leaves_rotation_within_the_check_window_and_comes_back() {
    let a = KillableBackend::start("a");
    let b = Backend::named("b");
    let d = controlled(&config(
        &[a.addr, b.addr],
        "round_robin",
        &format!("{FAST_CHECKS}{MONITORING}"),
    ));
    assert!(available(&d, "b0"));
    a.kill();
    let killed = Instant::now();
    assert!(eventually(Duration::from_secs(5), || !available(&d, "b0")));
    // interval 100 ms x unhealthy_threshold 2, plus a probe timeout and a control tick.
    assert!(
        killed.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        killed.elapsed()
    );
    assert!(target_json(&d, "b0").contains("health check"));
    settled(&d);
    let mut c = Client::connect(d.proxy);
    for _ in 0..10 {
        assert_eq!(backend_of(&c.get("example.com", "/")), "b");
    }
    a.revive();
    assert!(eventually(Duration::from_secs(5), || available(&d, "b0")));
    settled(&d);
    let seen: Vec<String> = (0..6)
        .map(|_| backend_of(&c.get("example.com", "/")))
        .collect();
    assert!(
        seen.contains(&"a".to_string()) && seen.contains(&"b".to_string()),
        "{seen:?}"
    );
}

#[test]
fn passive_failures_take_a_target_out_at_once() {
    let b = Backend::named("b");
    let d = controlled(&config(
        &[closed_port(), b.addr],
        "round_robin",
        &format!("{NO_CHECKS}{MONITORING}"),
    ));
    let mut c = Client::connect(d.proxy);
    assert_eq!(backend_of(&c.get("example.com", "/")), "b");
    assert!(eventually(Duration::from_secs(2), || !available(&d, "b0")));
    assert!(target_json(&d, "b0").contains("\"cooling_down\":true"));
    settled(&d);
    for _ in 0..10 {
        assert_eq!(c.get("example.com", "/").status, 200);
    }
    let text = call(d.metrics, "GET", "/metrics").text();
    assert_eq!(
        metric(&text, "dispa_upstream_errors_total{kind=\"connect\"}"),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn all_targets_down_is_503_with_retry_after() {
    let d = controlled(&config(
        &[closed_port(), closed_port()],
        "round_robin",
        &format!("{NO_CHECKS}{MONITORING}"),
    ));
    assert_eq!(get(d.proxy, "example.com", "/").status, 502);
    assert!(eventually(Duration::from_secs(2), || call(
        d.status, "GET", "/ready"
    )
    .status
        == 503));
    settled(&d);
    let r = get(d.proxy, "example.com", "/");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after").as_deref(), Some("5"));
}

fn weighted(targets: &[(SocketAddr, u32)]) -> String {
    let mut s = String::from(
        "[server]\nbind = \"127.0.0.1:0\"\n[domains]\nintercept_domains = [\"example.com\"]\n",
    );
    for (i, (addr, w)) in targets.iter().enumerate() {
        s += &format!(
            "[[targets.targets]]\nname = \"t{i}\"\nurl = \"http://{addr}\"\nweight = {w}\n"
        );
    }
    s + "[targets.load_balancing]\ntype = \"weighted\"\n[targets.health_check]\nenabled = false\n"
        + "[logging]\nenabled = false\n"
        + MONITORING
}

fn reload(d: &Controlled, toml: &str) -> Response {
    std::fs::write(&d.path, toml).unwrap();
    call(d.status, "POST", "/reload")
}

#[test]
fn reload_adds_removes_and_reweights_targets() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let d = controlled(&weighted(&[(a.addr, 1)]));
    assert_eq!(backend_of(&get(d.proxy, "example.com", "/")), "a");

    let r = reload(&d, &weighted(&[(a.addr, 3), (b.addr, 1)]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"reloaded\":true"));
    let mut c = Client::connect(d.proxy);
    let picks: Vec<String> = (0..400)
        .map(|_| backend_of(&c.get("example.com", "/")))
        .collect();
    assert_eq!(picks.iter().filter(|p| *p == "a").count(), 300);
    assert_eq!(picks.iter().filter(|p| *p == "b").count(), 100);

    assert_eq!(reload(&d, &weighted(&[(b.addr, 1)])).status, 200);
    for _ in 0..20 {
        assert_eq!(backend_of(&c.get("example.com", "/")), "b");
    }
    assert_eq!(generation(d.status), 3);
}

#[test]
fn invalid_config_is_rejected_while_traffic_continues() {
    let a = Backend::named("a");
    let d = controlled(&weighted(&[(a.addr, 1)]));
    let r = reload(
        &d,
        "[domains]\nintercept_domains = 5\n[[targets.targets]]\nname = \"x\"\nurl = \"ftp://x\"\n",
    );
    assert_eq!(r.status, 400);
    let body = r.text();
    assert!(
        body.contains("domains.intercept_domains") && body.contains("targets.targets[0].url"),
        "{body}"
    );
    assert_eq!(get(d.proxy, "example.com", "/").status, 200);
    assert_eq!(generation(d.status), 1);
    assert!(
        call(d.status, "GET", "/health")
            .text()
            .contains("\"ok\":false")
    );
    let text = call(d.metrics, "GET", "/metrics").text();
    assert_eq!(
        metric(&text, "dispa_config_reloads_total{result=\"failed\"}"),
        Some(1.0)
    );
}

#[test]
fn a_changed_config_file_is_reloaded_by_itself() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let d = controlled(&weighted(&[(a.addr, 1)]));
    std::fs::write(&d.path, weighted(&[(b.addr, 1)])).unwrap();
    assert!(eventually(Duration::from_secs(5), || generation(d.status) == 2));
    settled(&d);
    assert_eq!(backend_of(&get(d.proxy, "example.com", "/")), "b");
}

#[test]
fn hundred_reloads_under_steady_load_fail_no_request() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let d = controlled(&weighted(&[(a.addr, 1), (b.addr, 1)]));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..3)
        .map(|_| {
            let (stop, ok, failed, proxy) = (stop.clone(), ok.clone(), failed.clone(), d.proxy);
            std::thread::spawn(move || {
                let mut c = Client::connect(proxy);
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        c.get("example.com", "/")
                    }));
                    match r {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                        _ => {
                            c = Client::connect(proxy);
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect();
    let variants = [
        weighted(&[(a.addr, 1), (b.addr, 1)]),
        weighted(&[(a.addr, 3), (b.addr, 1)]),
        weighted(&[(a.addr, 1)]),
        weighted(&[(b.addr, 2)]),
    ];
    for i in 0..100 {
        let r = reload(&d, &variants[i % variants.len()]);
        assert_eq!(r.status, 200, "reload {i}: {}", r.text());
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during reloads"
    );
    assert!(
        ok.load(Ordering::SeqCst) > 100,
        "too little load: {}",
        ok.load(Ordering::SeqCst)
    );
}

#[test]
fn status_api_reports_health_readiness_and_targets() {
    let b = Backend::named("b");
    let d = controlled(&config(
        &[b.addr],
        "round_robin",
        &format!("{FAST_CHECKS}{MONITORING}"),
    ));
    for _ in 0..3 {
        get(d.proxy, "example.com", "/");
    }
    let h = call(d.status, "GET", "/health");
    assert_eq!(h.status, 200);
    assert_eq!(
        h.header("content-type").as_deref(),
        Some("application/json")
    );
    for field in [
        "\"status\":\"ok\"",
        "\"version\":",
        "\"uptime_seconds\":",
        "\"workers\":1",
        "\"io_driver\":\"io_uring\"",
        "\"generation\":1",
    ] {
        assert!(h.text().contains(field), "{field} in {}", h.text());
    }
    let r = call(d.status, "GET", "/ready");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "{\"ready\":true,\"available_targets\":1}")
    );
    assert!(eventually(Duration::from_secs(3), || target_json(&d, "b0")
        .contains("\"requests\":3")));
    let t = call(d.status, "GET", "/targets").text();
    for field in [
        "\"url\":\"http://",
        "\"weight\":1",
        "\"healthy\":true",
        "\"in_flight\":0",
        "\"last_check\":{",
        "\"latency_ms\":",
    ] {
        assert!(t.contains(field), "{field} in {t}");
    }
    assert_eq!(call(d.status, "GET", "/nope").status, 404);
    assert_eq!(call(d.status, "GET", "/reload").status, 405);
}

#[test]
fn admin_actions_need_the_token_when_one_is_set() {
    let b = Backend::named("b");
    let toml = config(
        &[b.addr],
        "round_robin",
        &format!("{MONITORING}admin_token = \"s3cret\"\n"),
    );
    let d = controlled(&toml);
    assert_eq!(call(d.status, "POST", "/reload").status, 401);
    let r = raw(d.status, b"POST /reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    // The scheme in any case (RFC 9110 §11.1); a wrong token is named as such.
    let r = raw(d.status, b"POST /reload HTTP/1.1\r\nHost: x\r\nAuthorization: bEARER s3cret\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = raw(d.status, b"POST /reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 401);
    assert!(r.text().contains("invalid token"), "{}", r.text());
    let r = call(d.status, "POST", "/reload");
    assert!(r.text().contains("admin token required"), "{}", r.text());
    // A POST-only action asked with GET: 405, not 404.
    assert_eq!(call(d.status, "GET", "/targets/b0/drain").status, 405);
    assert_eq!(call(d.status, "GET", "/targets/b0/enable").status, 405);
}

/// Load balancers' checks often send HTTP/1.0 without a Host (HAProxy's default
/// `option httpchk`): the status API answers them.
#[test]
fn status_api_answers_http10_checks_without_host() {
    let b = Backend::named("b");
    let d = controlled(&config(&[b.addr], "round_robin", MONITORING));
    let r = raw(d.status, b"GET /ready HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = raw(d.status, b"OPTIONS /health HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 405, "{}", r.text());
}

#[test]
fn drained_target_gets_no_new_requests_until_enabled() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let d = controlled(&config(
        &[a.addr, b.addr],
        "round_robin",
        &format!("{NO_CHECKS}{MONITORING}"),
    ));
    assert_eq!(call(d.status, "POST", "/targets/b0/drain").status, 200);
    let mut c = Client::connect(d.proxy);
    for _ in 0..6 {
        assert_eq!(backend_of(&c.get("example.com", "/")), "b");
    }
    assert_eq!(call(d.status, "POST", "/targets/b0/enable").status, 200);
    let seen: Vec<String> = (0..4)
        .map(|_| backend_of(&c.get("example.com", "/")))
        .collect();
    assert!(seen.contains(&"a".to_string()), "{seen:?}");
    assert_eq!(call(d.status, "POST", "/targets/nope/drain").status, 404);
}

#[test]
fn metrics_move_with_traffic() {
    let b = Backend::named("b");
    let d = controlled(&config(
        &[b.addr],
        "round_robin",
        &format!("{NO_CHECKS}{MONITORING}"),
    ));
    let series = "dispa_requests_total{domain=\"*.test.com\",status_class=\"2xx\",target=\"b0\"}";
    let mut c = Client::connect(d.proxy);
    for _ in 0..5 {
        assert_eq!(c.get("a.test.com", "/").status, 200);
    }
    assert_eq!(c.get("nope.org", "/").status, 404);
    let scrape = || call(d.metrics, "GET", "/metrics").text();
    assert!(
        eventually(Duration::from_secs(3), || metric(&scrape(), series)
            == Some(5.0)),
        "{}",
        scrape()
    );
    let text = scrape();
    let unmatched =
        "dispa_requests_total{domain=\"unmatched\",status_class=\"4xx\",target=\"none\"}";
    assert_eq!(metric(&text, unmatched), Some(1.0));
    // Latency by target (the 404 had none).
    let count = |series: &str| metric(&text, series);
    assert_eq!(
        count("dispa_request_duration_seconds_count{target=\"b0\"}"),
        Some(5.0)
    );
    assert_eq!(
        count("dispa_request_duration_seconds_count{target=\"none\"}"),
        Some(1.0)
    );
    assert_eq!(
        count("dispa_upstream_duration_seconds_count{target=\"b0\"}"),
        Some(5.0)
    );
    // The buckets reach past the target's default response timeout (60 s).
    for le in ["60", "300"] {
        let bucket = format!("dispa_request_duration_seconds_bucket{{target=\"b0\",le=\"{le}\"}}");
        assert_eq!(metric(&text, &bucket), Some(5.0), "{text}");
    }
    assert_eq!(
        metric(&text, "dispa_target_healthy{target=\"b0\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "dispa_active_connections"), Some(1.0));
    assert_eq!(
        metric(&text, "dispa_upstream_connections_total{result=\"reused\"}"),
        Some(4.0)
    );
    assert_eq!(
        metric(
            &text,
            "dispa_requests_rejected_total{reason=\"not_intercepted\"}"
        ),
        Some(1.0)
    );
    assert_eq!(metric(&text, "dispa_config_generation"), Some(1.0));
    assert!(text.contains("process_resident_memory_bytes"));
    // The exposition is valid for Prometheus (promtool is installed by .ci/run).
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut p) => {
            p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = p.wait_with_output().unwrap();
            let problems = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{problems}");
        }
        Err(_) => eprintln!("promtool not installed: exposition format not checked"),
    }
}

#[test]
fn sigterm_lets_requests_in_flight_finish_then_exits_0() {
    let slow = Backend::start(Arc::new(|_: &Seen, s: &mut TcpStream| {
        std::thread::sleep(Duration::from_millis(700));
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow");
        Reply::KeepAlive
    }));
    let (mut child, proxy, _status, _) = spawn_binary(&config(
        &[slow.addr],
        "round_robin",
        &format!("{NO_CHECKS}{MONITORING}"),
    ));
    let inflight: Vec<_> = (0..8)
        .map(|i| std::thread::spawn(move || get(proxy, "example.com", &format!("/{i}"))))
        .collect();
    assert!(eventually(Duration::from_secs(5), || slow.requests().len() == 8));
    signal(&child, libc::SIGTERM);
    for t in inflight {
        let r = t.join().unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "slow"));
        assert_eq!(r.header("connection").as_deref(), Some("close"));
    }
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("dispa did not exit");
    assert_eq!(status.code(), Some(0));
    assert!(TcpStream::connect(proxy).is_err());
}

#[test]
fn second_signal_exits_at_once() {
    let stuck = Backend::start(Arc::new(|_: &Seen, _: &mut TcpStream| {
        std::thread::sleep(Duration::from_secs(20));
        Reply::Close
    }));
    let (mut child, proxy, _, _) = spawn_binary(&config(
        &[stuck.addr],
        "round_robin",
        &format!("{NO_CHECKS}{MONITORING}"),
    ));
    std::thread::spawn(move || {
        let _ = std::panic::catch_unwind(|| get(proxy, "example.com", "/"));
    });
    assert!(eventually(Duration::from_secs(5), || stuck
        .requests()
        .len()
        == 1));
    signal(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the first signal waits for the request"
    );
    let sent = Instant::now();
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child, Duration::from_secs(5)).expect("dispa did not exit");
    assert!(sent.elapsed() < Duration::from_secs(2));
    assert_ne!(status.code(), Some(0));
}

#[test]
fn sighup_reloads_the_config_file() {
    let b = Backend::named("b");
    let (mut child, _, status, _) = spawn_binary(&config(
        &[b.addr],
        "round_robin",
        &format!("{NO_CHECKS}{MONITORING}"),
    ));
    assert_eq!(generation(status), 1);
    // Same contents: only the signal can cause this reload.
    signal(&child, libc::SIGHUP);
    assert!(eventually(Duration::from_secs(3), || generation(status) == 2));
    signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn probes_of_a_hanging_target_never_pile_up() {
    // Accepts and never answers: every probe times out.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang = l.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (o, m) = (open.clone(), most.clone());
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let now = o.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            let o = o.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let _ = std::io::Read::read_to_end(&mut s, &mut Vec::new());
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let b = Backend::named("b");
    let checks = "[targets.health_check]\ninterval = \"50ms\"\ntimeout = \"400ms\"\nunhealthy_threshold = 1\nmax_fails = 0\n";
    let d = controlled(&config(
        &[hang, b.addr],
        "round_robin",
        &format!("{checks}{MONITORING}"),
    ));
    assert!(eventually(Duration::from_secs(3), || !available(&d, "b0")));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "probes stacked up on a hanging target"
    );
    assert!(available(&d, "b1"));
}

#[test]
fn health_and_drains_survive_a_reload_for_targets_that_stay() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let toml = config(
        &[a.addr, b.addr],
        "round_robin",
        &format!("{NO_CHECKS}{MONITORING}"),
    );
    let d = controlled(&toml);
    assert_eq!(call(d.status, "POST", "/targets/b0/drain").status, 200);
    // Reweight both: the targets stay (same names and addresses).
    let reweighted = toml.replace(
        &format!("url = \"http://{}\"\n", b.addr),
        &format!("url = \"http://{}\"\nweight = 5\n", b.addr),
    );
    assert_ne!(reweighted, toml);
    std::fs::write(&d.path, reweighted).unwrap();
    assert_eq!(call(d.status, "POST", "/reload").status, 200);
    let b0 = target_json(&d, "b0");
    assert!(
        b0.contains("\"drained\":true") && b0.contains("\"available\":false"),
        "{b0}"
    );
    assert!(b0.contains("drained by operator"), "{b0}");
    assert!(target_json(&d, "b1").contains("\"weight\":5"));
    let mut c = Client::connect(d.proxy);
    for _ in 0..4 {
        assert_eq!(backend_of(&c.get("example.com", "/")), "b");
    }
}

/// `policy` from /proc of the thread of process `pid` named `name` (0: normal, 5: idle).
fn thread_policy(pid: u32, name: &str) -> Option<u32> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let task = task.ok()?.path();
        if std::fs::read_to_string(task.join("comm")).ok()?.trim() != name {
            continue;
        }
        let sched = std::fs::read_to_string(task.join("sched")).ok()?;
        let line = sched.lines().find(|l| l.starts_with("policy"))?;
        return line.split(':').nth(1)?.trim().parse().ok();
    }
    None
}

#[test]
fn the_logging_thread_writes_in_the_background_while_it_keeps_up() {
    let backend = Backend::named("b");
    let dir = scratch_dir("sched");
    let (child, proxy, _, _) = spawn_binary(&config(
        &[backend.addr],
        "round_robin",
        &format!("{NO_CHECKS}{MONITORING}{}", logging_section(&dir)),
    ));
    assert_eq!(get(proxy, "example.com", "/").status, 200);
    let pid = child.0.id();
    let logging = || thread_policy(pid, "dispa-logging");
    // Coming back from SCHED_IDLE needs CAP_SYS_NICE or RLIMIT_NICE (the test process has
    // what the Dispa it starts has); without it Dispa keeps the logging thread normal.
    if dispa::sched::can_switch(dispa::sched::LOGGING_SLICE) {
        assert!(
            eventually(Duration::from_secs(3), || logging() == Some(5)),
            "logging thread policy {:?}",
            logging()
        );
    } else {
        assert_eq!(logging(), Some(0));
    }
    // Workers, the control thread: normal.
    assert_eq!(thread_policy(pid, "dispa-worker-0"), Some(0));
    assert_eq!(thread_policy(pid, "dispa-control"), Some(0));
}
