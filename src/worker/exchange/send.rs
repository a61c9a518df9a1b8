//! Sending a request: the head in `out` (kept intact for a retry), the body (waiting for
//! the target's `100 Continue` first when the client asked), then reading response heads
//! up to the final one, relaying interim ones to HTTP/1.1 clients.

use std::time::{Duration, Instant};

use monoio::time::timeout;

use super::Exchange;
use super::upstream::Upstream;
use crate::config::TargetSpec;
use crate::http::parse::parse_response;
use crate::http::{Body, RequestHead, ResponseHead, canned, encode};
use crate::worker::failure::Failure;
use crate::worker::relay::{self, Bounds, ReadFailure, RelayError};

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

/// Send the head in `ex.out` (kept intact for a retry), then the body, and read up to the
/// final response head. Returns it with `true` when the target answered before the body
/// was sent (a refused `Expect: 100-continue`, or an early answer while it stopped
/// reading), so the client's connection cannot be reused.
pub async fn send_request(
    ex: &mut Exchange<'_>,
    up: &mut Upstream,
    head: &RequestHead,
    target: &TargetSpec,
    body_sent: bool,
) -> Result<(ResponseHead, bool), Failure> {
    let cfg = &ex.current.snapshot.config;
    let timeouts = &cfg.timeouts;
    // A chunked body's head goes out with its first data, in one write (each write wakes
    // the target): the chunked relay below sends what `out` holds first.
    let head_with_body = head.body == Body::Chunked && !body_sent && !head.expect_continue;
    if !head_with_body {
        let out = std::mem::take(ex.out);
        let write = monoio::io::AsyncWriteRentExt::write_all(&mut up.stream, out);
        let (res, out) = match timeout(timeouts.send, write).await {
            Ok((res, out)) => (res.map(|_| ()), out),
            Err(_) => return Err(Failure::SendTimeout),
        };
        *ex.out = out;
        if res.is_err() {
            return Err(Failure::Stale);
        }
    }
    let mut reading = Reading {
        received: false,
        interims: 0,
        max_head: cfg.limits.max_head_bytes,
        send: timeouts.send,
    };
    let response_deadline = || Instant::now() + target.response_timeout;
    if body_sent {
        let r = read_final_head(ex, up, head, &mut reading, response_deadline()).await?;
        return Ok((r, false));
    }
    if head.expect_continue {
        // Let the target accept or refuse the body before the client sends it. The wait
        // is cancel-safe: after it the same connection is read again.
        let wait = Instant::now() + timeouts.expect_continue;
        match read_head(ex, up, head, &mut reading, wait, true).await? {
            Some(r) if r.status >= 200 || r.status == 101 => return Ok((r, true)),
            Some(r) => ex.ubuf.consume(r.head_len), // a 100, relayed
            None => {
                ex.out.clear();
                ex.out.extend_from_slice(canned::CONTINUE);
                if !ex.client.send(ex.out, timeouts.send).await {
                    return Err(Failure::ClientGone);
                }
            }
        }
    }
    let to_up = Bounds {
        read: timeouts.client_body,
        write: timeouts.send,
        limit: cfg.limits.max_body_bytes,
    };
    let (client, rbuf) = (&mut ex.client.stream, &mut ex.client.rbuf);
    let capture = &mut ex.captures.request;
    let sent = match head.body {
        Body::Length(n) => relay::length(client, rbuf, &mut up.stream, n, to_up, capture).await,
        Body::Chunked => {
            if !head_with_body {
                ex.out.clear();
            }
            let out = &mut *ex.out;
            relay::chunked(client, rbuf, &mut up.stream, out, true, to_up, capture).await
        }
        Body::None | Body::Close => Ok(0),
    };
    match sent {
        Ok(n) => {
            ex.worker.stats.bytes_from_clients.add(n);
            ex.outcome.request_bytes = n;
        }
        Err(RelayError::Read(ReadFailure::Timeout)) => return Err(Failure::BodyTimeout),
        Err(RelayError::Read(_)) => return Err(Failure::ClientGone),
        Err(RelayError::Framing) => return Err(Failure::BadChunkedBody),
        // The target got a cut-off body on a connection that is now dropped.
        Err(RelayError::TooLarge) => return Err(Failure::BodyTooLarge),
        Err(RelayError::Write) => {
            // The target stopped reading: it may have answered early (413, 401...).
            let early = Instant::now() + Duration::from_secs(1);
            return match read_final_head(ex, up, head, &mut reading, early).await {
                Ok(r) => Ok((r, true)),
                Err(_) => Err(Failure::StoppedReading),
            };
        }
    }
    let r = read_final_head(ex, up, head, &mut reading, response_deadline()).await?;
    Ok((r, false))
}

/// Read response heads until a final one or a 101, all before `deadline`; interim ones
/// are relayed (see [`read_head`]) and skipped.
async fn read_final_head(
    ex: &mut Exchange<'_>,
    up: &mut Upstream,
    head: &RequestHead,
    reading: &mut Reading,
    deadline: Instant,
) -> Result<ResponseHead, Failure> {
    loop {
        match read_head(ex, up, head, reading, deadline, false).await? {
            Some(r) if r.status >= 200 || r.status == 101 => return Ok(r),
            Some(r) => ex.ubuf.consume(r.head_len),
            None => return Err(Failure::ResponseTimeout),
        }
    }
}

/// Read one response head before `deadline` (`None` when it passed). A 1xx other than
/// 101 is relayed to an HTTP/1.1 client here and returned unconsumed. `keep_on_timeout`
/// makes the wait cancel-safe, for when the connection is read again afterwards.
async fn read_head(
    ex: &mut Exchange<'_>,
    up: &mut Upstream,
    head: &RequestHead,
    reading: &mut Reading,
    deadline: Instant,
    keep_on_timeout: bool,
) -> Result<Option<ResponseHead>, Failure> {
    let max_head = reading.max_head;
    loop {
        if !ex.ubuf.is_empty() {
            reading.received = true;
            match parse_response(ex.ubuf.data(), head.is_head, max_head) {
                Ok(Some(r)) => {
                    if (100..200).contains(&r.status) && r.status != 101 {
                        reading.interims += 1;
                        if reading.interims > MAX_INTERIM {
                            return Err(Failure::TooManyInterim);
                        }
                        if head.minor_version == 1 {
                            relay_interim(ex, &r, reading.send).await?;
                        }
                    }
                    return Ok(Some(r));
                }
                Ok(None) => {}
                Err(_) => return Err(Failure::BadResponse),
            }
        }
        let read = if keep_on_timeout {
            ex.ubuf
                .fill_before(&mut up.stream, max_head, deadline)
                .await
        } else {
            let fill = ex.ubuf.fill(&mut up.stream, max_head);
            monoio::time::timeout_at(deadline.into(), fill).await.ok()
        };
        match read {
            Some(Ok(n)) if n > 0 => {}
            Some(_) if !reading.received => return Err(Failure::Stale),
            Some(_) => return Err(Failure::ClosedMidResponse),
            None => return Ok(None),
        }
    }
}

/// Send an interim head to the client. Written from its own buffer: `out` may still hold
/// the request for a retry.
async fn relay_interim(
    ex: &mut Exchange<'_>,
    r: &ResponseHead,
    send: Duration,
) -> Result<(), Failure> {
    let mut interim = Vec::with_capacity(64);
    encode::interim_head(&mut interim, ex.ubuf.data(), r);
    if ex.client.send(&mut interim, send).await {
        Ok(())
    } else {
        Err(Failure::ClientGone)
    }
}
