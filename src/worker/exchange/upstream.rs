//! Getting a connection to a target: the worker's balancer picks among the targets not yet
//! tried, an idle pooled connection is taken when there is one, else a new one is opened
//! (after a wait in the target's queue when it is at `upstream.max_connections_per_target`);
//! connect failures fail over to the next target, up to `upstream.max_tries`.

use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use monoio::time::{timeout, timeout_at};
use rustls::pki_types::ServerName;

use crate::balance::hash_of;
use crate::config::{HashKey, TargetTls, TlsMaterial};
use crate::http::RequestHead;
use crate::http::parse::field;
use crate::io::Stream;
use crate::io::tls::TlsStream;
use std::net::IpAddr;

use super::Exchange;
use crate::balance::Candidates;
use crate::config::TargetSpec;
use crate::worker::failure::Failure;
use crate::worker::pool::{Admission, Grant, Permit};
use crate::worker::state::Worker;

/// A connection to the target of an exchange.
pub struct Upstream {
    pub stream: Stream,
    /// Its place under the target's connection limit, given back when it closes.
    pub permit: Permit,
    /// It came from the pool: a failure before any response byte may mean it had gone
    /// stale while idle.
    pub reused: bool,
}

/// Counts the request against its target for `least_connections` while it runs.
pub struct InflightGuard<'a> {
    target: &'a TargetSpec,
    worker: usize,
}

impl<'a> InflightGuard<'a> {
    pub fn new(target: &'a TargetSpec, worker: usize) -> Self {
        target.inflight.add(worker, 1);
        InflightGuard { target, worker }
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.target.inflight.add(self.worker, -1);
    }
}

/// Pick a target (excluding ones that already failed) and get a connection to it. When
/// none could be connected to, the outcome names the last target tried (the record then
/// says which target and address refused).
pub async fn pick_and_connect(
    ex: &mut Exchange<'_>,
    key: u64,
) -> Result<(usize, Upstream), Failure> {
    let current = ex.current;
    let snap = &current.snapshot;
    let cfg = &snap.config;
    let mut tried: Vec<usize> = Vec::new();
    let mut last = Failure::NoTarget;
    for _ in 0..cfg.upstream.max_tries {
        let excluded = |i: usize| !snap.targets[i].available || tried.contains(&i);
        let candidates = Candidates {
            weights: &current.weights,
            names: &current.names,
            key,
            excluded: &excluded,
        };
        let load = |i: usize| snap.targets[i].inflight.total();
        let Some(idx) = current.balancer.borrow_mut().pick(&candidates, &load) else {
            break;
        };
        let pool = &ex.worker.pool;
        let id = snap.targets[idx].id;
        if let Some((stream, permit)) = pool.take(id) {
            return Ok((idx, reused(ex.worker, stream, permit)));
        }
        let permit = match pool.admit(id) {
            Admission::Now(permit) => permit,
            Admission::Queued(wait) => {
                ex.worker.stats.upstream_queued.inc();
                match timeout(cfg.timeouts.queue, wait).await {
                    Ok(Grant::Conn(stream, permit)) => {
                        return Ok((idx, reused(ex.worker, stream, permit)));
                    }
                    Ok(Grant::Room(permit)) => permit,
                    Err(_) => {
                        ex.outcome.target = idx as u32;
                        return Err(Failure::QueueTimeout);
                    }
                }
            }
        };
        let target = &snap.targets[idx];
        match connect(ex.worker, target, &cfg.tls, cfg.timeouts.connect).await {
            Ok(stream) => {
                let reused = false;
                return Ok((
                    idx,
                    Upstream {
                        stream,
                        permit,
                        reused,
                    },
                ));
            }
            Err(f) => {
                last = f;
                ex.outcome.target = idx as u32;
            }
        }
        tried.push(idx);
    }
    Err(last)
}

/// A connection that served a request before.
fn reused(worker: &Worker, stream: Stream, permit: Permit) -> Upstream {
    worker.stats.upstream_reused.inc();
    let reused = true;
    Upstream {
        stream,
        permit,
        reused,
    }
}

/// Open a new connection to `target` within `limit` (TCP, and the TLS handshake of an
/// `https://` target); the outcome feeds passive health.
pub async fn connect(
    worker: &Worker,
    target: &TargetSpec,
    tls: &TlsMaterial,
    limit: Duration,
) -> Result<Stream, Failure> {
    let stats = &worker.stats;
    stats.upstream_connects.inc();
    let deadline = Instant::now() + limit;
    let result = match timeout_at(deadline.into(), TcpStream::connect_addr(target.addr)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            match &target.tls {
                None => Ok(Stream::Plain(tcp)),
                Some(t) => handshake(target, t, tls, tcp, deadline).await,
            }
        }
        Ok(Err(e)) => {
            tracing::debug!(target = %target.name, error = %e, "connect failed");
            Err(Failure::ConnectFailed)
        }
        Err(_) => {
            tracing::debug!(target = %target.name, "connect timed out");
            Err(Failure::ConnectTimeout)
        }
    };
    worker.note_target(target.id, result.is_ok());
    if result.is_err() {
        stats.upstream_connect_failures.inc();
    }
    result
}

/// The TLS handshake with an `https://` target, by `deadline`.
async fn handshake(
    target: &TargetSpec,
    t: &TargetTls,
    tls: &TlsMaterial,
    tcp: TcpStream,
    deadline: Instant,
) -> Result<Stream, Failure> {
    let config = if t.verify {
        &tls.verified
    } else {
        &tls.unverified
    };
    let (Some(config), Ok(name)) = (config, ServerName::try_from(t.server_name.clone())) else {
        return Err(Failure::UpstreamTls);
    };
    let handshake = TlsStream::connect(tcp, config.clone(), name);
    match timeout_at(deadline.into(), handshake).await {
        Ok(Ok(s)) => Ok(Stream::Tls(Box::new(s))),
        Ok(Err(e)) => {
            tracing::debug!(target = %target.name, error = %e, "TLS handshake with target failed");
            Err(Failure::UpstreamTls)
        }
        Err(_) => {
            tracing::debug!(target = %target.name, "TLS handshake with target timed out");
            Err(Failure::ConnectTimeout)
        }
    }
}

/// The hash a `consistent_hash` balancer keys this request by: the configured header's
/// or cookie's value, else (and for `client_ip`) the client's address.
pub fn request_key(rule: &HashKey, head: &RequestHead, data: &[u8], client: IpAddr) -> u64 {
    let value = match rule {
        HashKey::ClientIp => None,
        HashKey::Header(name) => field(data, &head.fields, name.as_bytes()),
        HashKey::Cookie(name) => field(data, &head.fields, b"cookie").and_then(|c| {
            c.split(|&b| b == b';').find_map(|pair| {
                let pair = pair.trim_ascii();
                let (n, v) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
                (n == name.as_bytes()).then_some(&v[1..])
            })
        }),
    };
    match value {
        Some(v) => hash_of(v),
        None => hash_of(client),
    }
}
