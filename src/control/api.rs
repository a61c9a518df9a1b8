//! The status API (`/health`, `/ready`, `/targets`, `POST /reload`, drains) and the
//! `/metrics` endpoint: a small HTTP/1.1 server, one request per connection. Admin
//! actions (POST) are accepted from loopback only, or from anywhere with the configured
//! bearer token.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use super::json::Object;
use super::{State, metrics};

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
    authorization: Option<String>,
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf: Vec<u8> = Vec::with_capacity(MAX_REQUEST);
    loop {
        let len = buf.len();
        if len == buf.capacity() {
            return None;
        }
        let (res, slice) = stream
            .read(monoio::buf::IoBufMut::slice_mut(buf, len..))
            .await;
        buf = slice.into_inner();
        if !matches!(res, Ok(n) if n > 0) {
            return None;
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let target = req.path.unwrap_or("/");
                let path = target.split('?').next().unwrap_or("/").to_string();
                let authorization = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned());
                return Some(Request {
                    method: req.method.unwrap_or("").to_string(),
                    path,
                    authorization,
                });
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return None,
        }
    }
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
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
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

fn route(
    state: &Rc<RefCell<State>>,
    endpoint: Endpoint,
    req: &Request,
    peer: SocketAddr,
) -> (u16, &'static str, String) {
    let get = req.method == "GET" || req.method == "HEAD";
    let post = req.method == "POST";
    let path = req.path.trim_end_matches('/');
    match (endpoint, path) {
        (Endpoint::Metrics, "/metrics") if get => (
            200,
            prometheus::TEXT_FORMAT,
            metrics::render(&state.borrow()),
        ),
        (Endpoint::Metrics, _) => not_found(),
        (Endpoint::Status, "/health") if get => (200, JSON, health(&state.borrow())),
        (Endpoint::Status, "/ready") if get => {
            let s = state.borrow();
            let up = s
                .fleet
                .snapshot()
                .targets
                .iter()
                .filter(|t| t.available)
                .count();
            let mut body = String::new();
            Object::new(&mut body)
                .bool("ready", up > 0)
                .num("available_targets", up)
                .end();
            (if up > 0 { 200 } else { 503 }, JSON, body)
        }
        (Endpoint::Status, "/targets" | "/status") if get => (200, JSON, targets(&state.borrow())),
        (Endpoint::Status, "/reload") if post => {
            if let Some(denied) = admin_denied(&state.borrow(), req, peer) {
                return denied;
            }
            let outcome = state.borrow_mut().reload("POST /reload");
            let mut body = String::new();
            Object::new(&mut body)
                .bool("reloaded", outcome.ok)
                .num("generation", outcome.generation)
                .strings("errors", &outcome.errors)
                .strings("restart_required", &outcome.restart_required)
                .end();
            (if outcome.ok { 200 } else { 400 }, JSON, body)
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
            let mut body = String::new();
            Object::new(&mut body)
                .str("target", name)
                .bool("drained", drained)
                .end();
            (200, JSON, body)
        }
        (Endpoint::Status, "/health" | "/ready" | "/targets" | "/status" | "/reload") => {
            (405, JSON, r#"{"error":"method not allowed"}"#.into())
        }
        _ => not_found(),
    }
}

fn not_found() -> (u16, &'static str, String) {
    (404, JSON, r#"{"error":"not found"}"#.into())
}

fn admin_denied(
    state: &State,
    req: &Request,
    peer: SocketAddr,
) -> Option<(u16, &'static str, String)> {
    match &state.config().monitoring.admin_token {
        Some(token) => {
            let expected = format!("Bearer {token}");
            (req.authorization.as_deref() != Some(expected.as_str()))
                .then(|| (401, JSON, r#"{"error":"admin token required"}"#.into()))
        }
        None => (!peer.ip().to_canonical().is_loopback()).then(|| {
            (
                403,
                JSON,
                r#"{"error":"admin actions are accepted from loopback only"}"#.into(),
            )
        }),
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn health(s: &State) -> String {
    let snap = s.fleet.snapshot();
    let mut body = String::new();
    let mut o = Object::new(&mut body);
    o.str("status", "ok")
        .str("version", env!("CARGO_PKG_VERSION"))
        .num("uptime_seconds", s.started.elapsed().as_secs())
        .num("workers", s.fleet.drivers().len())
        .str(
            "io_driver",
            s.fleet.drivers().first().copied().unwrap_or(""),
        )
        .num("generation", snap.generation)
        .num("applied_generation", s.applied_generation());
    if let Some(r) = &s.last_reload {
        let mut last = String::new();
        Object::new(&mut last)
            .num("at", unix_seconds(r.at))
            .str("trigger", &r.trigger)
            .bool("ok", r.ok)
            .strings("errors", &r.errors)
            .strings("restart_required", &r.restart_required)
            .end();
        o.raw("last_reload", &last);
    }
    o.end();
    body
}

fn targets(s: &State) -> String {
    let snap = s.fleet.snapshot();
    let now = Instant::now();
    let mut body = String::from("[");
    for (i, t) in snap.targets.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let requests: u64 = s.totals.for_target(&t.name);
        let e = s.health.get(&(t.name.clone(), t.addr));
        let mut o = Object::new(&mut body);
        o.str("name", &t.name)
            .str("url", &t.url)
            .str("address", &t.addr.to_string())
            .num("weight", t.weight)
            .bool("available", t.available)
            .bool("healthy", e.is_none_or(|e| e.healthy))
            .bool("drained", e.is_some_and(|e| e.drained))
            .bool(
                "cooling_down",
                e.is_some_and(|e| e.cooldown_until.is_some_and(|c| now < c)),
            )
            .num("in_flight", t.inflight.total())
            .num("requests", requests)
            .num("checks_failed", e.map_or(0, |e| e.checks_failed));
        match e.and_then(|e| e.last_check.as_ref()) {
            Some(c) => {
                let mut check = String::new();
                Object::new(&mut check)
                    .num("at", unix_seconds(c.at))
                    .bool("ok", c.ok)
                    .str("result", &c.detail)
                    .num("latency_ms", c.latency.as_secs_f64() * 1e3)
                    .end();
                o.raw("last_check", &check);
            }
            None => {
                o.raw("last_check", "null");
            }
        }
        match e.and_then(|e| e.last_change.as_ref()) {
            Some(c) => {
                let mut change = String::new();
                Object::new(&mut change)
                    .num("at", unix_seconds(c.at))
                    .bool("available", c.available)
                    .str("reason", &c.reason)
                    .end();
                o.raw("last_change", &change);
            }
            None => {
                o.raw("last_change", "null");
            }
        }
        o.end();
    }
    body.push(']');
    body
}
