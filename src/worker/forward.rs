//! One proxied exchange: pick a target and get a connection (pooled or new, failing over
//! on connect errors), send the rebuilt head and the body, relay interim responses, the
//! final head and its body, and decide whether each side's connection can be reused.

use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use monoio::time::timeout;

use super::Active;
use super::buf::write_vec;
use super::conn::Conn;
use super::relay::{self, Pace, ReadFailure, RelayError};
use crate::balance::Candidates;
use crate::config::{Config, TargetSpec};
use crate::http::encode::{self, ClientFraming, Forward};
use crate::http::parse::{field, parse_response};
use crate::http::{Body, RequestHead, ResponseHead, canned};
use crate::msg::Captured;

/// Request bodies up to this size that are already buffered go upstream with the head (and
/// can then be sent again on a fresh connection).
const INLINE_BODY: u64 = 16 * 1024;

/// Response bodies up to this size are sent with their head in one write.
const INLINE_RESPONSE: u64 = 64 * 1024;

/// What the connection does after an exchange.
pub enum Next {
    KeepAlive,
    Close,
    /// The target switched protocols: relay bytes both ways on this upstream connection.
    Tunnel(TcpStream),
}

/// How an exchange failed before a final response reached the client.
enum Failure {
    /// A reused connection failed before any response byte: safe to retry on a new one.
    Stale,
    /// Answer the client with this status and close.
    Answer(u16, &'static str),
    /// The client went away or was too slow; `Some` answers it first.
    Client(Option<(u16, &'static str)>),
}

/// Counts the request against its target for `least_connections` while it runs.
struct InflightGuard<'a> {
    target: &'a TargetSpec,
    worker: usize,
}

impl<'a> InflightGuard<'a> {
    fn new(target: &'a TargetSpec, worker: usize) -> Self {
        target.inflight.add(worker, 1);
        InflightGuard { target, worker }
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.target.inflight.add(self.worker, -1);
    }
}

/// The request that was sent: its head, what it asked to upgrade to, and its target.
struct Sent<'a> {
    head: &'a RequestHead,
    upgrade_asked: &'a [u8],
    target: usize,
}

struct Upstream {
    stream: TcpStream,
    reused: bool,
}

pub async fn exchange(conn: &mut Conn, active: &Active, head: RequestHead) -> Next {
    let snap = &active.snapshot;
    let cfg = &snap.config;
    let (idx, up) = match pick_and_connect(conn, active).await {
        Ok(found) => found,
        Err((status, why)) => {
            conn.outcome.error = Some(match status {
                503 => "no_target",
                504 => "connect_timeout",
                _ => "connect",
            });
            // Nothing was sent; the connection survives only if no body is left unread.
            let keep = head.keep_alive && head.body == Body::None;
            conn.rbuf.consume(head.head_len);
            let sent = conn.reply(status, why, !keep).await;
            return if sent && keep {
                Next::KeepAlive
            } else {
                Next::Close
            };
        }
    };
    let target = &snap.targets[idx];
    conn.outcome.target = idx as u32;
    conn.outcome.reused = Some(up.reused);
    let _inflight = InflightGuard::new(target, conn.worker.id);
    let mut up = up;

    conn.out.clear();
    let host_override = target.rewrite_host.then_some(target.authority.as_bytes());
    let fwd = Forward {
        path_prefix: target.path_prefix.as_bytes(),
        host_override,
        client_ip: &conn.client_ip,
        request_id: conn
            .draft
            .as_ref()
            .filter(|d| d.generated_id)
            .map(|d| d.id().as_bytes()),
    };
    encode::request_head(&mut conn.out, conn.rbuf.data(), &head, &fwd);
    // Kept for the 101 answer: the head's bytes are consumed before the response arrives.
    let upgrade_asked = head
        .upgrade
        .map(|i| head.fields.list[i].value.of(conn.rbuf.data()).to_vec())
        .unwrap_or_default();
    conn.rbuf.consume(head.head_len);
    // A small body already in the buffer goes out with the head; then the whole request
    // is in `out` and can be sent again if a reused connection turns out to be stale.
    let mut body_sent = head.body == Body::None;
    if let Body::Length(n) = head.body
        && n <= INLINE_BODY
        && conn.rbuf.len() as u64 >= n
    {
        conn.out.extend_from_slice(&conn.rbuf.data()[..n as usize]);
        conn.request_tap.keep(&conn.rbuf.data()[..n as usize]);
        conn.rbuf.consume(n as usize);
        conn.outcome.request_bytes = n;
        body_sent = true;
    }
    // Replayed only when the whole request is in `out` and sending it twice is harmless.
    let replayable = body_sent && head.idempotent;

    let mut retried = false;
    let sent_at = Instant::now();
    let (response, expect_refused) = loop {
        match send_request(conn, cfg, &mut up, &head, target, body_sent).await {
            Ok(r) => break r,
            Err(Failure::Stale) if up.reused && replayable && !retried => {
                retried = true;
                conn.worker.stats.upstream_retries.inc();
                conn.outcome.retries += 1;
                conn.outcome.reused = Some(false);
                conn.ubuf.consume(conn.ubuf.len());
                match connect(conn, target, cfg.timeouts.connect).await {
                    Ok(stream) => {
                        up = Upstream {
                            stream,
                            reused: false,
                        }
                    }
                    Err((status, why)) => return fail(conn, Failure::Answer(status, why)).await,
                }
            }
            Err(Failure::Stale) => {
                return fail(conn, Failure::Answer(502, "target closed the connection")).await;
            }
            Err(f) => return fail(conn, f).await,
        }
    };
    conn.out.clear();
    conn.outcome.upstream = Some(sent_at.elapsed());
    let sent = Sent {
        head: &head,
        upgrade_asked: &upgrade_asked,
        target: idx,
    };
    respond(conn, active, sent, up, response, expect_refused).await
}

/// Pick a target (excluding ones that already failed) and get a connection to it.
async fn pick_and_connect(
    conn: &mut Conn,
    active: &Active,
) -> Result<(usize, Upstream), (u16, &'static str)> {
    let snap = &active.snapshot;
    let cfg = &snap.config;
    let mut tried: Vec<usize> = Vec::new();
    let mut last = (503, "no target available");
    for _ in 0..cfg.upstream.max_tries {
        let excluded = |i: usize| !snap.targets[i].available || tried.contains(&i);
        let candidates = Candidates {
            weights: &active.weights,
            excluded: &excluded,
        };
        let load = |i: usize| snap.targets[i].inflight.total();
        let Some(idx) = active.balancer.borrow_mut().pick(&candidates, &load) else {
            break;
        };
        if let Some(stream) = conn.worker.pool.take(snap.targets[idx].id) {
            conn.worker.stats.upstream_reused.inc();
            return Ok((
                idx,
                Upstream {
                    stream,
                    reused: true,
                },
            ));
        }
        match connect(conn, &snap.targets[idx], cfg.timeouts.connect).await {
            Ok(stream) => {
                return Ok((
                    idx,
                    Upstream {
                        stream,
                        reused: false,
                    },
                ));
            }
            Err(e) => last = e,
        }
        tried.push(idx);
    }
    Err(last)
}

async fn connect(
    conn: &Conn,
    target: &TargetSpec,
    limit: Duration,
) -> Result<TcpStream, (u16, &'static str)> {
    let stats = &conn.worker.stats;
    stats.upstream_connects.inc();
    let result = timeout(limit, TcpStream::connect_addr(target.addr)).await;
    conn.worker
        .note_target(target.id, matches!(result, Ok(Ok(_))));
    match result {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => {
            stats.upstream_connect_failures.inc();
            tracing::debug!(target = %target.name, error = %e, "connect failed");
            Err((502, "cannot connect to the target"))
        }
        Err(_) => {
            stats.upstream_connect_failures.inc();
            tracing::debug!(target = %target.name, "connect timed out");
            Err((504, "timed out connecting to the target"))
        }
    }
}

/// Interim (1xx) responses accepted before a final one; more is a misbehaving target.
const MAX_INTERIM: u32 = 16;

/// What has been read from the target in this exchange so far, and the limits of the
/// snapshot the request runs on.
struct Reading {
    /// Any response byte arrived: a failure is no longer a stale connection.
    received: bool,
    interims: u32,
    max_head: usize,
    send: Duration,
}

/// Send the head in `conn.out` (kept intact for a retry), then the body, and read up to
/// the final response head. Returns it with `true` when the target answered before the
/// body was sent (a refused `Expect: 100-continue`, or an early answer while it stopped
/// reading), so the client's connection cannot be reused.
async fn send_request(
    conn: &mut Conn,
    cfg: &Config,
    up: &mut Upstream,
    head: &RequestHead,
    target: &TargetSpec,
    body_sent: bool,
) -> Result<(ResponseHead, bool), Failure> {
    let timeouts = &cfg.timeouts;
    let out = std::mem::take(&mut conn.out);
    let write = monoio::io::AsyncWriteRentExt::write_all(&mut up.stream, out);
    let (res, out) = match timeout(timeouts.send, write).await {
        Ok((res, out)) => (res.map(|_| ()), out),
        Err(_) => return Err(Failure::Answer(504, "timed out sending to the target")),
    };
    conn.out = out;
    if res.is_err() {
        return Err(Failure::Stale);
    }
    let mut reading = Reading {
        received: false,
        interims: 0,
        max_head: cfg.limits.max_head_bytes,
        send: timeouts.send,
    };
    let response_deadline = |t: &TargetSpec| Instant::now() + t.response_timeout;
    if body_sent {
        let r = read_final_head(conn, up, head, &mut reading, response_deadline(target)).await?;
        return Ok((r, false));
    }
    if head.expect_continue {
        // Let the target accept or refuse the body before the client sends it. The wait
        // is cancel-safe: after it the same connection is read again.
        let wait = Instant::now() + timeouts.expect_continue;
        match read_head(conn, up, head, &mut reading, wait, true).await? {
            Some(r) if r.status >= 200 || r.status == 101 => return Ok((r, true)),
            Some(r) => conn.ubuf.consume(r.head_len), // a 100, relayed
            None => {
                conn.out.clear();
                conn.out.extend_from_slice(canned::CONTINUE);
                let send = timeout(timeouts.send, write_vec(&mut conn.client, &mut conn.out));
                if !matches!(send.await, Ok(Ok(()))) {
                    return Err(Failure::Client(None));
                }
            }
        }
    }
    let to_up = Pace {
        read: timeouts.client_body,
        write: timeouts.send,
        limit: cfg.limits.max_body_bytes,
    };
    let (client, rbuf, out, tap) = (
        &mut conn.client,
        &mut conn.rbuf,
        &mut conn.out,
        &mut conn.request_tap,
    );
    let sent = match head.body {
        Body::Length(n) => relay::length(client, rbuf, &mut up.stream, n, to_up, tap).await,
        Body::Chunked => relay::chunked(client, rbuf, &mut up.stream, out, true, to_up, tap).await,
        Body::None | Body::Close => Ok(0),
    };
    match sent {
        Ok(n) => {
            conn.worker.stats.bytes_from_clients.add(n);
            conn.outcome.request_bytes = n;
        }
        Err(RelayError::Read(ReadFailure::Timeout)) => {
            let why = "timed out reading the request body";
            return Err(Failure::Client(Some((408, why))));
        }
        Err(RelayError::Read(_)) => return Err(Failure::Client(None)),
        Err(RelayError::Framing) => {
            return Err(Failure::Client(Some((400, "invalid chunked request body"))));
        }
        Err(RelayError::TooLarge) => {
            // The target got a cut-off body on a connection that is now dropped.
            return Err(Failure::Client(Some((413, "request body too large"))));
        }
        Err(RelayError::Write) => {
            // The target stopped reading: it may have answered early (413, 401...).
            let early = Instant::now() + Duration::from_secs(1);
            return match read_final_head(conn, up, head, &mut reading, early).await {
                Ok(r) => Ok((r, true)),
                Err(_) => Err(Failure::Answer(502, "target stopped reading the request")),
            };
        }
    }
    let r = read_final_head(conn, up, head, &mut reading, response_deadline(target)).await?;
    Ok((r, false))
}

/// Read response heads until a final one or a 101, all before `deadline`; interim ones
/// are relayed (see [`read_head`]) and skipped.
async fn read_final_head(
    conn: &mut Conn,
    up: &mut Upstream,
    head: &RequestHead,
    reading: &mut Reading,
    deadline: Instant,
) -> Result<ResponseHead, Failure> {
    loop {
        match read_head(conn, up, head, reading, deadline, false).await? {
            Some(r) if r.status >= 200 || r.status == 101 => return Ok(r),
            Some(r) => conn.ubuf.consume(r.head_len),
            None => {
                let why = "timed out waiting for the target's response";
                return Err(Failure::Answer(504, why));
            }
        }
    }
}

/// Read one response head before `deadline` (`None` when it passed). A 1xx other than
/// 101 is relayed to an HTTP/1.1 client here and returned unconsumed. `keep_on_timeout`
/// makes the wait cancel-safe, for when the connection is read again afterwards.
async fn read_head(
    conn: &mut Conn,
    up: &mut Upstream,
    head: &RequestHead,
    reading: &mut Reading,
    deadline: Instant,
    keep_on_timeout: bool,
) -> Result<Option<ResponseHead>, Failure> {
    let max_head = reading.max_head;
    loop {
        if !conn.ubuf.is_empty() {
            reading.received = true;
            match parse_response(conn.ubuf.data(), head.is_head, max_head) {
                Ok(Some(r)) => {
                    if (100..200).contains(&r.status) && r.status != 101 {
                        reading.interims += 1;
                        if reading.interims > MAX_INTERIM {
                            return Err(Failure::Answer(502, "too many interim responses"));
                        }
                        if head.minor_version == 1 {
                            relay_interim(conn, &r, reading.send).await?;
                        }
                    }
                    return Ok(Some(r));
                }
                Ok(None) => {}
                Err(_) => return Err(Failure::Answer(502, "invalid response from the target")),
            }
        }
        let read = if keep_on_timeout {
            conn.ubuf
                .fill_before(&mut up.stream, max_head, deadline)
                .await
        } else {
            let fill = conn.ubuf.fill(&mut up.stream, max_head);
            monoio::time::timeout_at(deadline.into(), fill).await.ok()
        };
        match read {
            Some(Ok(n)) if n > 0 => {}
            Some(_) if !reading.received => return Err(Failure::Stale),
            Some(_) => {
                let why = "target closed the connection mid-response";
                return Err(Failure::Answer(502, why));
            }
            None => return Ok(None),
        }
    }
}

/// Send an interim head to the client. Written from its own buffer: `conn.out` may still
/// hold the request for a retry.
async fn relay_interim(conn: &mut Conn, r: &ResponseHead, send: Duration) -> Result<(), Failure> {
    let mut interim = Vec::with_capacity(64);
    encode::interim_head(&mut interim, conn.ubuf.data(), r);
    match timeout(send, write_vec(&mut conn.client, &mut interim)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Failure::Client(None)),
    }
}

async fn fail(conn: &mut Conn, f: Failure) -> Next {
    conn.outcome.error = Some(match f {
        Failure::Answer(504, _) => "timeout",
        Failure::Answer(..) => "bad_response",
        Failure::Client(_) => "client",
        Failure::Stale => "upstream_closed",
    });
    match f {
        Failure::Answer(status, why) => {
            match status {
                504 => conn.worker.stats.upstream_timeouts.inc(),
                _ => conn.worker.stats.upstream_bad_responses.inc(),
            }
            conn.reply(status, why, true).await;
        }
        Failure::Client(Some((status, why))) => {
            conn.reply(status, why, true).await;
        }
        Failure::Stale | Failure::Client(None) => {}
    }
    Next::Close
}

/// Relay the final response (or switch to a tunnel on 101) and settle both connections.
async fn respond(
    conn: &mut Conn,
    active: &Active,
    req: Sent<'_>,
    up: Upstream,
    r: ResponseHead,
    body_unsent: bool,
) -> Next {
    let Sent {
        head,
        upgrade_asked,
        target: idx,
    } = req;
    let cfg = &active.snapshot.config;
    let stats = conn.worker.stats.clone();
    let mut upstream = up.stream;
    if r.status == 101 {
        if head.upgrade.is_none() {
            let unasked = Failure::Answer(502, "target switched protocols unasked");
            return fail(conn, unasked).await;
        }
        let buf = conn.ubuf.data();
        // The target's Upgrade value, else the one the client asked for.
        let upgrade = field(buf, &r.fields, b"upgrade")
            .map_or_else(|| upgrade_asked.to_vec(), <[u8]>::to_vec);
        encode::switching_head(&mut conn.out, buf, &r, &upgrade);
        conn.ubuf.consume(r.head_len);
        conn.out.extend_from_slice(conn.ubuf.data());
        conn.ubuf.consume(conn.ubuf.len());
        conn.outcome.status = 101;
        stats.upgrades.inc();
        let send = cfg.timeouts.send;
        if !matches!(
            timeout(send, write_vec(&mut conn.client, &mut conn.out)).await,
            Ok(Ok(()))
        ) {
            return Next::Close;
        }
        if !conn.rbuf.is_empty() {
            let n = conn.rbuf.len();
            let early = conn.rbuf.write_front(&mut upstream, n);
            if !matches!(timeout(send, early).await, Ok(Ok(()))) {
                return Next::Close;
            }
        }
        return Next::Tunnel(upstream);
    }

    let framing = encode::client_framing(&r, head.minor_version);
    let client_keep = head.keep_alive
        && !body_unsent
        && framing != ClientFraming::Close
        && !conn.worker.stopping.get();
    let mut upstream_keep = r.keep_alive && cfg.upstream.keepalive && !body_unsent;
    encode::response_head(
        &mut conn.out,
        conn.ubuf.data(),
        &r,
        framing,
        head.minor_version,
        client_keep,
    );
    if let Some(c) = conn.draft.as_mut().and_then(|d| d.capture.as_mut()) {
        let names = &cfg.logging.capture.response_headers;
        Captured::keep_fields(&mut c.response_headers, conn.ubuf.data(), &r.fields, names);
    }
    conn.ubuf.consume(r.head_len);
    conn.outcome.status = r.status;

    // A body of at most INLINE_RESPONSE bytes goes out with the head in one write: the
    // rest of it is read first (it has usually arrived). Each write to the client wakes
    // it; on 16 KiB responses, head and body in up to four writes cost 39 µs of proxy CPU
    // per request, one write 14 µs (scripts/bench.sh WORKLOADS=16k).
    if let Body::Length(n) = r.body
        && n <= INLINE_RESPONSE
        && (conn.ubuf.len() as u64) < n
    {
        let wait = active.snapshot.targets[idx].response_timeout;
        let max = r.head_len + n as usize;
        while (conn.ubuf.len() as u64) < n {
            match timeout(wait, conn.ubuf.fill(&mut upstream, max)).await {
                Ok(Ok(k)) if k > 0 => {}
                // Nothing was sent to the client yet: it gets a clean error answer.
                Ok(_) => {
                    conn.out.clear();
                    return fail(conn, Failure::Answer(502, "target closed mid-response")).await;
                }
                Err(_) => {
                    conn.out.clear();
                    return fail(conn, Failure::Answer(504, "target stalled mid-response")).await;
                }
            }
        }
    }
    let mut body_done = r.body == Body::None;
    if let Body::Length(n) = r.body
        && n <= INLINE_RESPONSE
        && conn.ubuf.len() as u64 >= n
    {
        conn.out.extend_from_slice(&conn.ubuf.data()[..n as usize]);
        conn.response_tap.keep(&conn.ubuf.data()[..n as usize]);
        conn.ubuf.consume(n as usize);
        conn.outcome.response_bytes = n;
        body_done = true;
    }
    let sent = conn.out.len() as u64;
    if !matches!(
        timeout(
            cfg.timeouts.send,
            write_vec(&mut conn.client, &mut conn.out)
        )
        .await,
        Ok(Ok(()))
    ) {
        return Next::Close;
    }
    stats.bytes_to_clients.add(sent);

    if !body_done {
        let to_client = Pace {
            read: active.snapshot.targets[idx].response_timeout,
            write: cfg.timeouts.send,
            limit: 0,
        };
        let rechunk = framing == ClientFraming::Chunked;
        let relayed = match r.body {
            Body::Length(n) => {
                relay::length(
                    &mut upstream,
                    &mut conn.ubuf,
                    &mut conn.client,
                    n,
                    to_client,
                    &mut conn.response_tap,
                )
                .await
            }
            Body::Chunked => {
                relay::chunked(
                    &mut upstream,
                    &mut conn.ubuf,
                    &mut conn.client,
                    &mut conn.out,
                    rechunk,
                    to_client,
                    &mut conn.response_tap,
                )
                .await
            }
            Body::Close => {
                upstream_keep = false;
                relay::until_close(
                    &mut upstream,
                    &mut conn.ubuf,
                    &mut conn.client,
                    &mut conn.out,
                    rechunk,
                    to_client,
                    &mut conn.response_tap,
                )
                .await
            }
            Body::None => Ok(0),
        };
        match relayed {
            Ok(n) => {
                stats.bytes_to_clients.add(n);
                conn.outcome.response_bytes = n;
            }
            // A truncated or broken body is never completed for the client: reset it.
            Err(_) => {
                conn.outcome.error = Some("truncated");
                conn.abort_on_close();
                return Next::Close;
            }
        }
    }
    // Bytes after a complete response mean the target is confused: never reuse it.
    if !conn.ubuf.is_empty() {
        upstream_keep = false;
        conn.ubuf.consume(conn.ubuf.len());
    }
    if upstream_keep {
        conn.worker
            .pool
            .put(active.snapshot.targets[idx].id, upstream);
    }
    if client_keep {
        Next::KeepAlive
    } else {
        Next::Close
    }
}
