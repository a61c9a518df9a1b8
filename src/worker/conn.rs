//! One client connection: read a head, answer it (locally or by forwarding it through an
//! exchange), repeat while keep-alive holds. Pipelined requests are answered in order
//! because each is finished before the next head is parsed from the bytes left in the
//! buffer. An idle keep-alive connection parks: it gives its buffers back and waits
//! without a timer (see [`Conn::read_head`]).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::io::Stream;
use monoio::time::{timeout, timeout_at};

use super::client::{BUF_START, Client, TlsInfo};
use super::draft::RecordDraft;
use super::exchange::{Captures, Exchange};
use super::failure::Failure;
use super::outcome::{Next, Outcome};
use super::pool::Permit;
use super::relay;
use super::state::{Current, Worker};
use super::tally::NONE;
use crate::http::host::MAX_HOST_LEN;
use crate::http::parse::{RequestLimits, parse_request};
use crate::http::{Body, RequestError, RequestHead};
use crate::io::ReadBuf;
use crate::io::tls::TlsStream;
use crate::msg::{ErrorKind, TlsHandshake};
use monoio::net::TcpStream;

/// Capacity of the head scratch buffer kept between requests.
const OUT_KEEP: usize = 1024;
/// A keep-alive connection silent for this long gives its buffers back (see `read_head`).
const PARK_AFTER: Duration = Duration::from_secs(1);

/// A client connection and the scratch space its exchanges reuse.
struct Conn {
    worker: Rc<Worker>,
    client: Client,
    /// Bytes read from the current upstream and not yet used.
    ubuf: ReadBuf,
    /// Heads and re-framed body chunks being written.
    out: Vec<u8>,
    /// Body bytes kept for `[logging.capture]` (armed only for captured hosts).
    captures: Captures,
    /// This connection's slot in the worker's `OpenSockets`.
    slot: usize,
}

/// Why reading a head ended without one.
enum NoHead {
    /// Closed, reset, or idle past the keep-alive timeout: close without a word.
    Closed,
    /// Answer this, then close.
    Failed(Failure),
}

/// Serve one client connection until it closes.
///
/// Memory: a connection's task is as large as the largest state of this future, and an
/// idle connection pays for it all the time. So everything larger than the parked wait
/// (the exchange, an active read with its timer, error replies, tunnels, lingering
/// closes) is boxed where it is awaited and exists only while it runs.
pub async fn serve(worker: Rc<Worker>, stream: Stream, peer: SocketAddr) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let slot = worker.open_sockets().borrow_mut().insert(fd);
    let mut conn = Conn {
        worker: worker.clone(),
        client: Client::new(stream, peer.ip(), worker.new_conn_id()),
        ubuf: ReadBuf::with_capacity(0),
        out: Vec::with_capacity(OUT_KEEP),
        captures: Captures::default(),
        slot,
    };
    match conn.run().await {
        Some((upstream, _permit)) => {
            let idle = worker.current().snapshot.config.timeouts.tunnel_idle;
            Box::pin(relay::tunnel(conn.client.stream, upstream, idle)).await;
        }
        None if conn.client.linger => Box::pin(conn.client.lingering_close()).await,
        None => {}
    }
    // Kept until here so that a shutdown also ends tunnels and lingering closes.
    worker.open_sockets().borrow_mut().remove(slot);
    worker.stats.open_connections.dec();
}

/// Serve one TLS client connection: the handshake (within `server.tls.handshake_timeout`,
/// with the TLS config of the snapshot current when it was accepted), then [`serve`].
/// A client refused for its SNI is recorded with the name it asked for.
pub async fn serve_tls(worker: Rc<Worker>, tcp: TcpStream, peer: SocketAddr) {
    let current = worker.current();
    let config = &current.snapshot.config;
    let (Some(tls), Some(listener)) = (config.tls.server.clone(), &config.server.tls) else {
        worker.stats.open_connections.dec();
        return;
    };
    let _ = tcp.set_nodelay(true);
    let started = Instant::now();
    let handshake = TlsStream::accept(tcp, tls);
    let result = Box::pin(timeout(listener.handshake_timeout, handshake)).await;
    let stats = &worker.stats;
    let (kind, refused_sni) = match result {
        Ok(Ok(s)) => {
            worker.count_handshake(started.elapsed());
            let kind = if s.resumed() {
                TlsHandshake::Resumed
            } else {
                TlsHandshake::Full
            };
            stats.tls_handshakes[kind as usize].inc();
            stats.tls_open.inc();
            drop(current);
            serve(worker.clone(), Stream::Tls(Box::new(s)), peer).await;
            stats.tls_open.dec();
            return;
        }
        Ok(Err(e)) if e.refused_sni => (TlsHandshake::RefusedSni, Some(e.sni)),
        Ok(Err(_)) => (TlsHandshake::Failed, None),
        Err(_) => (TlsHandshake::Timeout, None),
    };
    stats.tls_handshakes[kind as usize].inc();
    if let Some(sni) = refused_sni {
        stats.errors[ErrorKind::TlsRefused as usize].inc();
        if config.logging.enabled {
            let o = Outcome {
                error: Some(ErrorKind::TlsRefused),
                ..Outcome::default()
            };
            // TLS, version not negotiated (the record's tls_version is empty).
            let info = TlsInfo {
                sni: sni.map(Into::into),
                version: 1,
            };
            let draft = RecordDraft::unparsed(&worker, Some(&info));
            let no_bodies = || (Vec::new(), Vec::new());
            let from = (peer.ip().to_canonical(), worker.new_conn_id());
            let record = draft.finish(&worker, &current, from, &o, started.elapsed(), no_bodies);
            worker.send_record(record);
        }
    }
    stats.open_connections.dec();
}

impl Conn {
    /// Serve requests until the connection closes; returns an upstream connection (and
    /// its place under the target's limit) when the client's connection has become a
    /// tunnel to it.
    async fn run(&mut self) -> Option<(Stream, Permit)> {
        loop {
            let head = match self.read_head(&self.worker.current()).await {
                Ok(head) => head,
                Err(NoHead::Closed) => return None,
                Err(NoHead::Failed(failure)) => {
                    Box::pin(self.refuse_head(failure)).await;
                    return None;
                }
            };
            // The snapshot current when the head was parsed serves the whole request
            // (a keep-alive connection may have waited through a reload).
            let current = self.worker.current();
            self.worker.stats.busy_requests.inc();
            // Boxed: the exchange's state (parsed heads, nested I/O futures; ~16 KiB)
            // exists only while a request is in flight, not for every idle connection.
            let next = Box::pin(self.handle(&current, head)).await;
            self.worker.stats.busy_requests.dec();
            match next {
                Next::KeepAlive if !self.worker.stopping.get() => {}
                Next::KeepAlive | Next::Close => return None,
                Next::Tunnel(upstream, permit) => return Some((upstream, permit)),
            }
            // Between requests a connection keeps only a small read buffer.
            self.ubuf.shrink_if_idle(0);
            self.client.rbuf.shrink_if_idle(BUF_START);
            if self.out.capacity() > OUT_KEEP {
                self.out = Vec::with_capacity(OUT_KEEP);
            }
        }
    }

    /// Wait for a complete head: up to `keepalive` for its first byte, then up to
    /// `client_head` for the rest.
    async fn read_head(&mut self, current: &Current) -> Result<RequestHead, NoHead> {
        let cfg = &current.snapshot.config;
        let limits = RequestLimits {
            max_headers: cfg.limits.max_headers,
            max_uri_bytes: cfg.limits.max_uri_bytes,
        };
        let max_head = cfg.limits.max_head_bytes;
        let too_large = NoHead::Failed(Failure::BadHead(RequestError::HeadTooLarge));
        let mut deadline: Option<Instant> = None;
        loop {
            let rbuf = &mut self.client.rbuf;
            if !rbuf.is_empty() {
                match parse_request(rbuf.data(), &limits) {
                    Ok(Some(head)) if head.head_len > max_head => return Err(too_large),
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) if rbuf.len() >= max_head => return Err(too_large),
                    Ok(None) => {}
                    Err(e) => return Err(NoHead::Failed(Failure::BadHead(e))),
                }
                deadline.get_or_insert_with(|| Instant::now() + cfg.timeouts.client_head);
            }
            if rbuf.is_empty() && deadline.is_none() {
                // Waiting for the next request on a keep-alive connection: read for a
                // while with a buffer; after PARK_AFTER of silence give every buffer back
                // and wait for readability without one, so an idle connection costs ~1 KiB
                // like nginx's instead of its buffers.
                let keepalive = cfg.timeouts.keepalive;
                let park = Instant::now() + PARK_AFTER.min(keepalive);
                let read = rbuf.fill_before(&mut self.client.stream, max_head, park);
                match Box::pin(read).await {
                    Some(Ok(n)) if n > 0 => {
                        self.worker.stats.bytes_from_clients.add(n as u64);
                        continue;
                    }
                    Some(_) => return Err(NoHead::Closed),
                    None if keepalive <= PARK_AFTER => return Err(NoHead::Closed),
                    None if self.park(keepalive - PARK_AFTER).await => continue,
                    None => return Err(NoHead::Closed),
                }
            }
            let read = rbuf.fill(&mut self.client.stream, max_head);
            let res = match deadline {
                None => Box::pin(timeout(cfg.timeouts.keepalive, read)).await,
                Some(d) => Box::pin(timeout_at(d.into(), read)).await,
            };
            match res {
                Ok(Ok(n)) if n > 0 => self.worker.stats.bytes_from_clients.add(n as u64),
                Ok(_) => return Err(NoHead::Closed),
                Err(_) if deadline.is_some() => return Err(NoHead::Failed(Failure::HeadTimeout)),
                Err(_) => return Err(NoHead::Closed),
            }
        }
    }

    /// Give the buffers back and wait for the client to send again, for at most `left`.
    /// No timer: the worker's sweep shuts the socket down at the deadline, which ends this
    /// wait (see `OpenSockets`). Returns whether bytes arrived in time.
    async fn park(&mut self, left: Duration) -> bool {
        self.client.rbuf.release();
        self.out = Vec::new();
        self.worker.stats.parked.inc();
        if self.client.stream.has_buffered() {
            return true; // TLS bytes already read: no wait
        }
        let open = self.worker.open_sockets();
        open.borrow_mut().park(self.slot, Instant::now() + left);
        let woke = self.client.stream.tcp().readable(false).await;
        let expired = !open.borrow_mut().unpark(self.slot);
        woke.is_ok() && !expired
    }

    /// Answer a head that could not be read, count it and record it with what is known.
    async fn refuse_head(&mut self, failure: Failure) {
        let current = self.worker.current();
        let stats = &self.worker.stats;
        stats.requests.inc();
        failure.count(stats);
        let mut outcome = Outcome {
            error: failure.kind(),
            ..Outcome::default()
        };
        let send = current.snapshot.config.timeouts.send;
        outcome.answered(self.client.answer(failure, true, &mut self.out, send).await);
        let worker = &self.worker;
        worker.count_request(&current, (NONE, NONE), outcome.status, Duration::ZERO, None);
        if current.snapshot.config.logging.enabled {
            let draft = RecordDraft::unparsed(worker, self.client.tls.as_ref());
            let from = (self.client.ip, self.client.conn);
            let no_bodies = || (Vec::new(), Vec::new());
            let record = draft.finish(worker, &current, from, &outcome, Duration::ZERO, no_bodies);
            worker.send_record(record);
        }
    }

    /// Answer one request: not intercepted (404, nothing forwarded), over the body limit
    /// (413), or forwarded. Then count it and hand its record over.
    async fn handle(&mut self, current: &Current, head: RequestHead) -> Next {
        let start = Instant::now();
        let worker = &*self.worker;
        worker.stats.requests.inc();
        // The host as matching sees it, found once: routing and the record use the same.
        // (A block: its scratch space is not kept across the awaits below.)
        let (rule, misdirected, mut draft) = {
            let mut scratch = [0u8; MAX_HOST_LEN];
            let data = self.client.rbuf.data();
            let host = head.name.as_str(data, &mut scratch);
            let rule = current.snapshot.routes.lookup(host);
            // Over TLS a request is for the name the handshake was for, nothing else.
            let sni = self.client.tls.as_ref().and_then(|t| t.sni.as_deref());
            let misdirected = sni.is_some_and(|sni| !sni.eq_ignore_ascii_case(host));
            let tls = self.client.tls.as_ref();
            let captures = &mut self.captures;
            let draft = current.snapshot.config.logging.enabled.then(|| {
                let (draft, capture) = RecordDraft::begin(worker, current, &head, data, host, tls);
                captures.request.arm(capture);
                captures.response.arm(capture);
                draft
            });
            (rule, misdirected, draft)
        };
        let mut outcome = Outcome::default();
        let mut ex = Exchange {
            worker,
            current,
            client: &mut self.client,
            ubuf: &mut self.ubuf,
            out: &mut self.out,
            outcome: &mut outcome,
            captures: &mut self.captures,
            record: draft.as_mut(),
        };
        let limit = current.snapshot.config.limits.max_body_bytes;
        let next = match rule {
            // Never forwarded anywhere: Dispa is not an open proxy.
            None => ex.refuse(Failure::NotIntercepted, &head).await,
            Some(_) if misdirected => ex.refuse(Failure::Misdirected, &head).await,
            Some(_) if matches!(head.body, Body::Length(n) if limit > 0 && n > limit) => {
                // Refused before anything is forwarded; the body is left unread.
                ex.refuse(Failure::BodyTooLarge, &head).await
            }
            Some(_) => ex.forward(head).await,
        };
        let total = start.elapsed();
        let rule_target = (rule.unwrap_or(NONE), outcome.target);
        worker.count_request(
            current,
            rule_target,
            outcome.status,
            total,
            outcome.upstream,
        );
        if let Some(draft) = draft {
            let captures = &mut self.captures;
            let bodies = || (captures.request.take(), captures.response.take());
            let from = (self.client.ip, self.client.conn);
            worker.send_record(draft.finish(worker, current, from, &outcome, total, bodies));
        }
        next
    }
}
