//! Relaying the final response: a 101 turns the connection into a tunnel; otherwise the
//! head is rebuilt for the client, a small body goes out with it in one write, a larger
//! one is streamed, and the upstream connection goes back to the pool when it can be used
//! again.

use crate::io::Stream;
use monoio::time::timeout;

use super::Exchange;
use super::upstream::Upstream;
use crate::http::encode::{self, ClientFraming};
use crate::http::parse::field;
use crate::http::{Body, RequestHead, ResponseHead};
use crate::worker::draft::keep_fields;
use crate::worker::failure::Failure;
use crate::worker::outcome::Next;
use crate::worker::pool::Permit;
use crate::worker::relay::{self, Bounds};

/// Response bodies up to this size are sent with their head in one write (each write to
/// the client wakes it; docs/BENCHMARKS.md, "Earlier changes").
const INLINE_RESPONSE: u64 = 64 * 1024;
/// Bodies up to this size are copied behind the head (one buffer, one plain write);
/// larger inline ones go out with the head in a vectored write, without the copy.
const COPY_WITH_HEAD: u64 = 4 * 1024;

/// The request that was sent.
pub struct Sent<'a> {
    pub head: &'a RequestHead,
    /// The client's `Upgrade` value, for the 101 answer.
    pub upgrade_asked: &'a [u8],
    /// Index of the target in the snapshot.
    pub target: usize,
    /// The target answered before the request body was sent: the client's connection
    /// cannot be reused (its body is still on the wire).
    pub body_unsent: bool,
}

pub async fn respond(
    ex: &mut Exchange<'_>,
    req: Sent<'_>,
    up: Upstream,
    r: ResponseHead,
) -> Result<Next, Failure> {
    let Upstream {
        stream: mut upstream,
        permit,
        ..
    } = up;
    if r.status == 101 {
        let tunnel = switch_protocols(ex, &req, upstream, &r).await?;
        return Ok(tunnel.map_or(Next::Close, |s| Next::Tunnel(s, permit)));
    }
    let cfg = &ex.current.snapshot.config;
    let framing = encode::client_framing(&r, req.head.minor_version);
    let client_keep = req.head.keep_alive
        && !req.body_unsent
        && framing != ClientFraming::Close
        && !ex.worker.stopping.get();
    let upstream_keep =
        r.keep_alive && cfg.upstream.keepalive && !req.body_unsent && r.body != Body::Close;
    encode::response_head(
        ex.out,
        ex.ubuf.data(),
        &r,
        framing,
        req.head.minor_version,
        client_keep,
    );
    if let Some(c) = ex.record.as_deref_mut().and_then(|d| d.capture()) {
        let names = &cfg.logging.capture.response_headers;
        keep_fields(&mut c.response_headers, ex.ubuf.data(), &r.fields, names);
    }
    ex.ubuf.consume(r.head_len);
    ex.outcome.status = r.status;

    match r.body {
        Body::Length(n) if n <= INLINE_RESPONSE => {
            read_whole_body(ex, &mut upstream, r.head_len, n, req.target).await?;
            if n <= COPY_WITH_HEAD {
                let capture = &mut ex.captures.response;
                ex.outcome.response_bytes = relay::inline(ex.ubuf, n as usize, ex.out, capture);
                send_head(ex).await?;
            } else {
                send_head_and_body(ex, n).await?;
            }
        }
        Body::None => send_head(ex).await?,
        _ => {
            send_head(ex).await?;
            stream_body(ex, &mut upstream, &r, framing, req.target).await?;
        }
    }
    settle_upstream(ex, upstream, permit, upstream_keep, req.target);
    Ok(Next::keep_if(client_keep))
}

/// A 101: send the switching head (and any bytes that followed it) to the client, and any
/// bytes the client sent early to the target; the connection is then a tunnel to the
/// returned stream (`None`: it ended already).
async fn switch_protocols(
    ex: &mut Exchange<'_>,
    req: &Sent<'_>,
    mut upstream: Stream,
    r: &ResponseHead,
) -> Result<Option<Stream>, Failure> {
    if req.head.upgrade.is_none() {
        return Err(Failure::UnaskedSwitch);
    }
    let buf = ex.ubuf.data();
    // The target's Upgrade value, else the one the client asked for.
    let upgrade = field(buf, &r.fields, b"upgrade").unwrap_or(req.upgrade_asked);
    encode::switching_head(ex.out, buf, r, upgrade);
    ex.ubuf.consume(r.head_len);
    ex.out.extend_from_slice(ex.ubuf.data());
    ex.ubuf.consume(ex.ubuf.len());
    ex.outcome.status = 101;
    ex.worker.stats.upgrades.inc();
    let send = ex.current.snapshot.config.timeouts.send;
    if !ex.client.send(ex.out, send).await {
        return Err(Failure::ClientGone);
    }
    let rbuf = &mut ex.client.rbuf;
    if !rbuf.is_empty() {
        let n = rbuf.len();
        // The client has its 101: it gets no other answer, the connection just ends.
        if !matches!(
            timeout(send, rbuf.write_front(&mut upstream, n)).await,
            Ok(Ok(()))
        ) {
            return Ok(None);
        }
    }
    Ok(Some(upstream))
}

/// Read the rest of a body of `n` bytes into the upstream buffer (it has usually arrived
/// with the head). Nothing was sent to the client yet: a failure gets a clean answer.
async fn read_whole_body(
    ex: &mut Exchange<'_>,
    upstream: &mut Stream,
    head_len: usize,
    n: u64,
    target: usize,
) -> Result<(), Failure> {
    let wait = ex.current.snapshot.targets[target].response_timeout;
    let max = head_len + n as usize;
    // Room for the whole body at once: the buffer would otherwise grow by doubling from
    // 4 KiB, a read (and a copy of what it holds) per step.
    ex.ubuf.ensure_capacity(n as usize);
    while (ex.ubuf.len() as u64) < n {
        match timeout(wait, ex.ubuf.fill(upstream, max)).await {
            Ok(Ok(k)) if k > 0 => {}
            Ok(_) => return Err(Failure::ClosedMidResponse),
            Err(_) => return Err(Failure::StalledMidResponse),
        }
    }
    Ok(())
}

/// Write the head in `out` and the `n` body bytes at the front of the upstream buffer to
/// the client in one vectored write (a copy of the body into `out` cost 6 % of the CPU of
/// 16 KiB responses, perf in docs/BENCHMARKS.md).
async fn send_head_and_body(ex: &mut Exchange<'_>, n: u64) -> Result<(), Failure> {
    let n_bytes = n as usize;
    ex.captures.response.keep(&ex.ubuf.data()[..n_bytes]);
    let sent = ex.out.len() as u64 + n;
    let send = ex.current.snapshot.config.timeouts.send;
    let write = ex
        .ubuf
        .write_front_after(&mut ex.client.stream, ex.out, n_bytes);
    if !matches!(timeout(send, write).await, Ok(Ok(()))) {
        return Err(Failure::ClientGone);
    }
    ex.outcome.response_bytes = n;
    ex.worker.stats.bytes_to_clients.add(sent);
    Ok(())
}

/// Write what `out` holds (the head, and the body when it was small) to the client.
async fn send_head(ex: &mut Exchange<'_>) -> Result<(), Failure> {
    let sent = ex.out.len() as u64;
    let send = ex.current.snapshot.config.timeouts.send;
    if !ex.client.send(ex.out, send).await {
        return Err(Failure::ClientGone);
    }
    ex.worker.stats.bytes_to_clients.add(sent);
    Ok(())
}

/// Stream a body after its head: re-chunked for HTTP/1.1 clients when it was chunked or
/// close-delimited, bare for HTTP/1.0 ones. A body that breaks off is never completed.
async fn stream_body(
    ex: &mut Exchange<'_>,
    upstream: &mut Stream,
    r: &ResponseHead,
    framing: ClientFraming,
    target: usize,
) -> Result<(), Failure> {
    let bounds = Bounds {
        read: ex.current.snapshot.targets[target].response_timeout,
        write: ex.current.snapshot.config.timeouts.send,
        limit: 0,
    };
    let rechunk = framing == ClientFraming::Chunked;
    let (buf, client) = (&mut *ex.ubuf, &mut ex.client.stream);
    let (out, capture) = (&mut *ex.out, &mut ex.captures.response);
    let relayed = match r.body {
        Body::Length(n) => relay::length(upstream, buf, client, n, bounds, capture).await,
        Body::Chunked => relay::chunked(upstream, buf, client, out, rechunk, bounds, capture).await,
        Body::Close => {
            relay::until_close(upstream, buf, client, out, rechunk, bounds, capture).await
        }
        Body::None => Ok(0),
    };
    let n = relayed.map_err(|_| Failure::Truncated)?;
    ex.worker.stats.bytes_to_clients.add(n);
    ex.outcome.response_bytes = n;
    Ok(())
}

/// Put the upstream connection back in the pool when it can carry another request: the
/// target allows it and nothing follows the response (bytes after a complete response
/// mean the target is confused).
fn settle_upstream(
    ex: &mut Exchange<'_>,
    upstream: Stream,
    permit: Permit,
    keep: bool,
    target: usize,
) {
    let clean = ex.ubuf.is_empty();
    ex.ubuf.consume(ex.ubuf.len());
    if keep && clean {
        let id = ex.current.snapshot.targets[target].id;
        ex.worker.pool.put(id, upstream, permit);
    }
}
