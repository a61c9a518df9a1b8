//! The status API (`/health`, `/ready`, `/targets`, `POST /reload`, drains) and the
//! `/metrics` endpoint: a small HTTP/1.1 server, one request per connection. Admin
//! actions (POST) are accepted from loopback only, or from anywhere with the configured
//! bearer token.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::AsyncWriteRentExt;
use monoio::net::{TcpListener, TcpStream};
use serde::Serialize;

use super::State;
use crate::clock;
use crate::http::canned;
use crate::http::parse::{RequestLimits, field, parse_local_request};
use crate::io::{self, ReadBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Status,
    Metrics,
}

const MAX_REQUEST: usize = 16 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, state: Rc<RefCell<State>>, endpoint: Endpoint) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                monoio::spawn(handle(stream, peer, state.clone(), endpoint));
            }
            Err(e) => {
                tracing::debug!(error = %e, "status API accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a request asked for, copied out of the read buffer.
struct Request {
    method: String,
    path: String,
    authorization: Option<Vec<u8>>,
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = ReadBuf::with_capacity(1024);
    let limits = RequestLimits {
        max_headers: 64,
        max_uri_bytes: MAX_REQUEST,
    };
    // Not the proxy's parser: no Host is needed here (HAProxy's default check sends an
    // HTTP/1.0 request without one), and no body is read.
    let parse = |b: &[u8]| parse_local_request(b, &limits);
    let head = io::read_head(stream, &mut buf, MAX_REQUEST, parse)
        .await
        .ok()?;
    let data = buf.data();
    let target = String::from_utf8_lossy(head.target.of(data));
    Some(Request {
        method: String::from_utf8_lossy(head.method.of(data)).into_owned(),
        path: target.split('?').next().unwrap_or("/").to_string(),
        authorization: field(data, &head.fields, b"authorization").map(<[u8]>::to_vec),
    })
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: Rc<RefCell<State>>,
    endpoint: Endpoint,
) {
    let Ok(Some(req)) = monoio::time::timeout(IO_TIMEOUT, read_request(&mut stream)).await else {
        return;
    };
    let (status, content_type, body) = route(&state, endpoint, &req, peer);
    if req.method == "POST" && status == 200 {
        // Answer once every worker runs the new snapshot, so that what the caller sends
        // next already sees the change.
        let target = state.borrow().fleet.snapshot().generation;
        let deadline = Instant::now() + Duration::from_secs(2);
        while state.borrow().applied_generation() < target && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let reason = canned::reason(status);
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if req.method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    let _ = monoio::time::timeout(IO_TIMEOUT, stream.write_all(out)).await;
}

const JSON: &str = "application/json";

type Answer = (u16, &'static str, String);

fn json(status: u16, body: &impl Serialize) -> Answer {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    (status, JSON, text)
}

fn error(status: u16, message: &str) -> Answer {
    json(status, &ErrorBody { error: message })
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

#[derive(Serialize)]
struct Ready {
    ready: bool,
    available_targets: usize,
}

#[derive(Serialize)]
struct Reloaded<'a> {
    reloaded: bool,
    generation: u64,
    errors: &'a [String],
    restart_required: &'a [String],
}

#[derive(Serialize)]
struct Drained<'a> {
    target: &'a str,
    drained: bool,
}

fn route(
    state: &Rc<RefCell<State>>,
    endpoint: Endpoint,
    req: &Request,
    peer: SocketAddr,
) -> Answer {
    let get = req.method == "GET" || req.method == "HEAD";
    let post = req.method == "POST";
    let path = req.path.trim_end_matches('/');
    match (endpoint, path) {
        (Endpoint::Metrics, "/metrics") if get => {
            let s = state.borrow();
            (200, prometheus::TEXT_FORMAT, s.metrics.render(&s))
        }
        (Endpoint::Metrics, _) => not_found(),
        (Endpoint::Status, "/health") if get => json(200, &health(&state.borrow())),
        (Endpoint::Status, "/ready") if get => {
            let s = state.borrow();
            let up = s
                .fleet
                .snapshot()
                .targets
                .iter()
                .filter(|t| t.available)
                .count();
            let body = Ready {
                ready: up > 0,
                available_targets: up,
            };
            json(if up > 0 { 200 } else { 503 }, &body)
        }
        (Endpoint::Status, "/targets" | "/status") if get => json(200, &targets(&state.borrow())),
        (Endpoint::Status, "/reload") if post => {
            if let Some(denied) = admin_denied(&state.borrow(), req, peer) {
                return denied;
            }
            let outcome = state.borrow_mut().reload("POST /reload");
            let body = Reloaded {
                reloaded: outcome.ok,
                generation: outcome.generation,
                errors: &outcome.errors,
                restart_required: &outcome.restart_required,
            };
            json(if outcome.ok { 200 } else { 400 }, &body)
        }
        (Endpoint::Status, p) if post && p.starts_with("/targets/") => {
            if let Some(denied) = admin_denied(&state.borrow(), req, peer) {
                return denied;
            }
            let rest = &p["/targets/".len()..];
            let (name, action) = rest.rsplit_once('/').unwrap_or((rest, ""));
            let drained = match action {
                "drain" => true,
                "enable" => false,
                _ => return not_found(),
            };
            let mut s = state.borrow_mut();
            let key = s
                .fleet
                .snapshot()
                .targets
                .iter()
                .find(|t| t.name == name)
                .map(|t| (t.name.clone(), t.addr));
            let Some(key) = key else {
                return not_found();
            };
            if let Some((before, after)) = s.health.set_drained(&key, drained, Instant::now())
                && before != after
            {
                s.republish();
            }
            let action = if drained { "drained" } else { "enabled" };
            tracing::info!(target = name, %peer, "target {action} through the status API");
            json(
                200,
                &Drained {
                    target: name,
                    drained,
                },
            )
        }
        (Endpoint::Status, "/health" | "/ready" | "/targets" | "/status" | "/reload") => {
            error(405, "method not allowed")
        }
        // The admin actions exist for POST only.
        (Endpoint::Status, p)
            if p.starts_with("/targets/") && (p.ends_with("/drain") || p.ends_with("/enable")) =>
        {
            error(405, "method not allowed: use POST")
        }
        _ => not_found(),
    }
}

fn not_found() -> Answer {
    error(404, "not found")
}

/// An admin action needs the configured bearer token (compared in constant time), or,
/// without one, a request from loopback.
fn admin_denied(state: &State, req: &Request, peer: SocketAddr) -> Option<Answer> {
    match &state.config().monitoring.admin_token {
        Some(token) => {
            let Some(given) = req.authorization.as_deref() else {
                return Some(error(401, "admin token required"));
            };
            // The scheme is case-insensitive (RFC 9110 §11.1); the token is compared in
            // constant time.
            let given = std::str::from_utf8(given).unwrap_or_default().trim();
            let token_given = match given.split_once(' ') {
                Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim_start(),
                _ => {
                    return Some(error(
                        401,
                        "invalid token: expected Authorization: Bearer <token>",
                    ));
                }
            };
            let ok = constant_time_eq::constant_time_eq(token_given.as_bytes(), token.as_bytes());
            (!ok).then(|| error(401, "invalid token"))
        }
        None => (!peer.ip().to_canonical().is_loopback())
            .then(|| error(403, "admin actions are accepted from loopback only")),
    }
}

#[derive(Serialize)]
struct Health<'a> {
    /// `ok`, or `degraded` while a traffic record sink fails.
    status: &'static str,
    version: &'static str,
    uptime_seconds: u64,
    workers: usize,
    io_driver: &'a str,
    generation: u64,
    applied_generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_reload: Option<LastReload<'a>>,
    recording: Recording,
}

/// The traffic record sinks: each one's error while it fails (`null` while it works), and
/// the records waiting for it.
#[derive(Serialize)]
struct Recording {
    file: Option<String>,
    database: Option<String>,
    backlog_file: u64,
    backlog_database: u64,
    dropped: u64,
    lost_file: u64,
    lost_database: u64,
}

#[derive(Serialize)]
struct LastReload<'a> {
    at: f64,
    trigger: &'a str,
    ok: bool,
    errors: &'a [String],
    restart_required: &'a [String],
}

fn health(s: &State) -> Health<'_> {
    let logging = s.fleet.logging_totals();
    let sinks = logging.health.clone();
    let degraded = sinks.file.is_some() || sinks.database.is_some();
    let dropped = s
        .fleet
        .stats()
        .iter()
        .map(|w| w.records_dropped.get())
        .sum();
    Health {
        status: if degraded { "degraded" } else { "ok" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.started.elapsed().as_secs(),
        workers: s.fleet.drivers().len(),
        io_driver: s.fleet.drivers().first().copied().unwrap_or(""),
        generation: s.fleet.snapshot().generation,
        applied_generation: s.applied_generation(),
        last_reload: s.last_reload.as_ref().map(|r| LastReload {
            at: clock::unix_secs_f64(r.at),
            trigger: &r.trigger,
            ok: r.ok,
            errors: &r.errors,
            restart_required: &r.restart_required,
        }),
        recording: Recording {
            file: sinks.file,
            database: sinks.database,
            backlog_file: logging.backlog_file,
            backlog_database: logging.backlog_database,
            dropped,
            lost_file: logging.lost_file,
            lost_database: logging.lost_database,
        },
    }
}

#[derive(Serialize)]
struct TargetStatus<'a> {
    name: &'a str,
    url: &'a str,
    address: String,
    weight: u32,
    available: bool,
    healthy: bool,
    drained: bool,
    cooling_down: bool,
    in_flight: u64,
    requests: u64,
    checks_failed: u64,
    last_check: Option<LastCheck<'a>>,
    last_change: Option<LastChange<'a>>,
}

#[derive(Serialize)]
struct LastCheck<'a> {
    at: f64,
    ok: bool,
    result: &'a str,
    latency_ms: f64,
}

#[derive(Serialize)]
struct LastChange<'a> {
    at: f64,
    available: bool,
    reason: &'a str,
}

fn targets(s: &State) -> Vec<TargetStatus<'_>> {
    let now = Instant::now();
    let snap = s.fleet.snapshot();
    snap.targets
        .iter()
        .map(|t| {
            let e = s.health.get(&(t.name.clone(), t.addr));
            TargetStatus {
                name: &t.name,
                url: &t.url,
                address: t.addr.to_string(),
                weight: t.weight,
                available: t.available,
                healthy: e.is_none_or(|e| e.healthy),
                drained: e.is_some_and(|e| e.drained),
                cooling_down: e.is_some_and(|e| e.cooldown_until.is_some_and(|c| now < c)),
                in_flight: t.inflight.total(),
                requests: s.totals.for_target(&t.name),
                checks_failed: e.map_or(0, |e| e.checks_failed),
                last_check: e.and_then(|e| e.last_check.as_ref()).map(|c| LastCheck {
                    at: clock::unix_secs_f64(c.at),
                    ok: c.ok,
                    result: &c.detail,
                    latency_ms: c.latency.as_secs_f64() * 1e3,
                }),
                last_change: e.and_then(|e| e.last_change.as_ref()).map(|c| LastChange {
                    at: clock::unix_secs_f64(c.at),
                    available: c.available,
                    reason: &c.reason,
                }),
            }
        })
        .collect()
}
