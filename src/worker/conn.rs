//! One client connection: read a head, answer it (locally or by forwarding), repeat while
//! keep-alive holds. Pipelined requests are answered in order because each is finished
//! before the next head is parsed from the bytes left in the buffer.

use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use monoio::time::{timeout, timeout_at};

use super::buf::{ReadBuf, write_vec};
use super::forward::{self, Next};
use super::relay::Tap;
use super::{Active, NONE, Worker, relay};
use crate::http::host::MAX_HOST_LEN;
use crate::http::parse::{RequestLimits, field, parse_request};
use crate::http::{Body, RequestError, RequestHead, canned};
use crate::msg::{Captured, RecordText, TrafficRecord};

/// Initial capacity of a connection's buffers (grown up to the configured limits).
pub const BUF_START: usize = 4 * 1024;
/// Capacity of the head scratch buffer kept between requests.
const OUT_KEEP: usize = 1024;
/// A keep-alive connection silent for this long gives its buffers back (see `read_head`).
const PARK_AFTER: Duration = Duration::from_secs(1);

/// A client connection and the scratch space its exchanges reuse.
pub struct Conn {
    pub worker: Rc<Worker>,
    pub client: TcpStream,
    /// The client's IP as text, for `X-Forwarded-For` (formatted once per connection).
    pub client_ip: Vec<u8>,
    pub peer_ip: std::net::IpAddr,
    /// Bytes read from the client and not yet used.
    pub rbuf: ReadBuf,
    /// Bytes read from the current upstream and not yet used.
    pub ubuf: ReadBuf,
    /// Heads and re-framed body chunks being written.
    pub out: Vec<u8>,
    /// Dispa answered and is closing while the client may still be sending: close
    /// gracefully so that unread bytes do not turn the close into a reset.
    pub linger: bool,
    /// What the current request came to, for the counters.
    pub outcome: Outcome,
    /// The current request's traffic record (when recording is on).
    pub draft: Option<RecordDraft>,
    /// Body bytes kept for `[logging.capture]` (armed only for captured hosts).
    pub request_tap: Tap,
    pub response_tap: Tap,
    /// This connection's slot in the worker's `OpenSockets`.
    slot: usize,
}

/// The result of one request, filled in as it goes.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Status sent to the client (0: none was sent).
    pub status: u16,
    /// Index of the target in the snapshot, or [`NONE`].
    pub target: u32,
    /// From sending the request upstream to the response head.
    pub upstream: Option<Duration>,
    /// Body bytes received from the client and sent to it.
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Whether the upstream connection came from the pool (`None`: no upstream).
    pub reused: Option<bool>,
    pub retries: u8,
    /// Why the request failed, when it did.
    pub error: Option<&'static str>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            status: 0,
            target: NONE,
            upstream: None,
            request_bytes: 0,
            response_bytes: 0,
            reused: None,
            retries: 0,
            error: None,
        }
    }
}

/// The traffic record of the current request, begun when its head was parsed.
pub struct RecordDraft {
    start_ms: u64,
    version_minor: u8,
    text: String,
    ends: [u32; RecordText::COUNT],
    /// Dispa made the id up (the client sent none): it goes upstream as X-Request-Id.
    pub generated_id: bool,
    /// The host is under `[logging.capture]`: headers kept so far (bodies are in the taps).
    pub capture: Option<Box<Captured>>,
}

impl RecordDraft {
    fn push(&mut self, field: RecordText, value: &str) {
        self.text.push_str(value);
        self.ends[field as usize] = self.text.len() as u32;
    }

    /// Push bytes from the wire: as they are when they are UTF-8 (the usual case, no
    /// copy), else with replacement characters.
    fn push_bytes(&mut self, field: RecordText, value: &[u8]) {
        match std::str::from_utf8(value) {
            Ok(s) => self.push(field, s),
            Err(_) => self.push(field, &String::from_utf8_lossy(value)),
        }
    }

    pub fn id(&self) -> &str {
        &self.text[..self.ends[RecordText::Id as usize] as usize]
    }
}

/// A client's X-Request-Id is kept when it is short visible ASCII.
fn usable_request_id(v: &[u8]) -> Option<&str> {
    let ok = !v.is_empty() && v.len() <= 128 && v.iter().all(|&b| b.is_ascii_graphic());
    if ok {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why reading a head ended without one.
enum NoHead {
    /// Closed, reset, or idle timeout with nothing pending: close quietly.
    Quiet,
    /// Answer with this status, then close.
    Reply(u16, &'static str),
}

/// Serve one client connection until it closes.
///
/// Memory: a connection's task is as large as the largest state of this future, and an
/// idle connection pays for it all the time. So everything larger than the parked wait
/// (the exchange, an active read with its timer, error replies, tunnels, lingering
/// closes) is boxed where it is awaited and exists only while it runs.
pub async fn serve(worker: Rc<Worker>, client: TcpStream, peer: SocketAddr) {
    let _ = client.set_nodelay(true);
    let mut client_ip = Vec::with_capacity(40);
    let _ = write!(client_ip, "{}", peer.ip().to_canonical());
    let slot = worker
        .open_sockets()
        .borrow_mut()
        .insert(std::os::fd::AsRawFd::as_raw_fd(&client));
    let mut conn = Conn {
        worker: worker.clone(),
        client,
        client_ip,
        peer_ip: peer.ip().to_canonical(),
        rbuf: ReadBuf::with_capacity(BUF_START),
        ubuf: ReadBuf::with_capacity(0),
        out: Vec::with_capacity(1024),
        linger: false,
        outcome: Outcome::default(),
        draft: None,
        request_tap: Tap::default(),
        response_tap: Tap::default(),
        slot,
    };
    let upgraded = conn.run().await;
    match upgraded {
        Some(upstream) => {
            let idle = worker.active().snapshot.config.timeouts.tunnel_idle;
            Box::pin(relay::tunnel(conn.client, upstream, idle)).await;
        }
        None if conn.linger => Box::pin(conn.lingering_close()).await,
        None => {}
    }
    // Kept until here so that a shutdown also ends tunnels and lingering closes.
    worker.open_sockets().borrow_mut().remove(slot);
    worker.stats.open_connections.dec();
}

impl Conn {
    /// Serve requests until the connection closes; returns an upstream connection when
    /// the client's connection has become a tunnel to it.
    async fn run(&mut self) -> Option<TcpStream> {
        loop {
            let head = match self.read_head(&self.worker.active()).await {
                Ok(head) => head,
                Err(NoHead::Quiet) => return None,
                Err(NoHead::Reply(status, why)) => {
                    // Nothing of the previous request on this connection may leak in.
                    self.outcome = Outcome::default();
                    let stats = &self.worker.stats;
                    stats.requests.inc();
                    match status {
                        408 => stats.rejected_timeout.inc(),
                        414 | 431 => stats.rejected_limits.inc(),
                        _ => stats.rejected_bad_request.inc(),
                    }
                    let _ = Box::pin(self.reply(status, why, true)).await;
                    let active = self.worker.active();
                    self.worker
                        .record(&active, NONE, NONE, status, Duration::ZERO, None);
                    // Recorded too, with what is known: no head could be read.
                    if self.worker.active().snapshot.config.logging.enabled {
                        let mut draft = self.new_draft(u8::MAX);
                        self.worker.write_request_id(&mut draft.text);
                        draft.ends[RecordText::Id as usize] = draft.text.len() as u32;
                        for f in [RecordText::Method, RecordText::Host, RecordText::Path] {
                            draft.push(f, "");
                        }
                        for f in [RecordText::Query, RecordText::UserAgent] {
                            draft.push(f, "");
                        }
                        self.draft = Some(draft);
                        self.outcome.error = Some("bad_request");
                        self.finish_record(&self.worker.active(), Duration::ZERO);
                    }
                    return None;
                }
            };
            // The snapshot current when the head was parsed serves the whole request
            // (a keep-alive connection may have waited through a reload).
            let active = self.worker.active();
            self.worker.stats.busy_requests.inc();
            // Boxed: the exchange's state (parsed heads, nested I/O futures; ~16 KiB)
            // exists only while a request is in flight, not for every idle connection.
            let next = Box::pin(self.handle(&active, head)).await;
            self.worker.stats.busy_requests.dec();
            match next {
                Next::KeepAlive if !self.worker.stopping.get() => {}
                Next::KeepAlive | Next::Close => return None,
                Next::Tunnel(upstream) => return Some(upstream),
            }
            // Between requests a connection keeps only a small read buffer.
            self.ubuf.shrink_if_idle(0);
            self.rbuf.shrink_if_idle(BUF_START);
            if self.out.capacity() > OUT_KEEP {
                self.out = Vec::with_capacity(OUT_KEEP);
            }
        }
    }

    /// Wait for a complete head: up to `keepalive` for its first byte, then up to
    /// `client_head` for the rest.
    async fn read_head(&mut self, active: &Active) -> Result<RequestHead, NoHead> {
        let cfg = &active.snapshot.config;
        let limits = RequestLimits {
            max_headers: cfg.limits.max_headers,
            max_uri_bytes: cfg.limits.max_uri_bytes,
        };
        let max_head = cfg.limits.max_head_bytes;
        let mut deadline: Option<Instant> = None;
        loop {
            if !self.rbuf.is_empty() {
                match parse_request(self.rbuf.data(), &limits) {
                    Ok(Some(head)) if head.head_len > max_head => {
                        let e = RequestError::HeadTooLarge;
                        return Err(NoHead::Reply(e.status(), e.reason()));
                    }
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) if self.rbuf.len() >= max_head => {
                        let e = RequestError::HeadTooLarge;
                        return Err(NoHead::Reply(e.status(), e.reason()));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(NoHead::Reply(e.status(), e.reason())),
                }
                deadline.get_or_insert_with(|| Instant::now() + cfg.timeouts.client_head);
            }
            if self.rbuf.is_empty() && deadline.is_none() {
                // Waiting for the next request on a keep-alive connection: read for a
                // while with a buffer; after PARK_AFTER of silence give every buffer back
                // and wait for readability without one, so an idle connection costs ~1 KiB
                // like nginx's instead of its buffers.
                let keepalive = cfg.timeouts.keepalive;
                let park = Instant::now() + PARK_AFTER.min(keepalive);
                let read = self.rbuf.fill_before(&mut self.client, max_head, park);
                match Box::pin(read).await {
                    Some(Ok(n)) if n > 0 => {
                        self.worker.stats.bytes_from_clients.add(n as u64);
                        continue;
                    }
                    Some(_) => return Err(NoHead::Quiet),
                    None if keepalive <= PARK_AFTER => return Err(NoHead::Quiet),
                    None => {
                        self.rbuf.release();
                        self.out = Vec::new();
                        self.worker.stats.parked.inc();
                        // No timer: the worker's sweep shuts the socket down at the
                        // deadline, which ends this wait (see `OpenSockets`).
                        let until = Instant::now() + (keepalive - PARK_AFTER);
                        let open = self.worker.open_sockets();
                        open.borrow_mut().park(self.slot, until);
                        let woke = self.client.readable(false).await;
                        let expired = !open.borrow_mut().unpark(self.slot);
                        match woke {
                            Ok(()) if !expired => continue,
                            _ => return Err(NoHead::Quiet),
                        }
                    }
                }
            }
            let read = self.rbuf.fill(&mut self.client, max_head);
            let res = match deadline {
                None => Box::pin(timeout(cfg.timeouts.keepalive, read)).await,
                Some(d) => Box::pin(timeout_at(d.into(), read)).await,
            };
            match res {
                Ok(Ok(n)) if n > 0 => self.worker.stats.bytes_from_clients.add(n as u64),
                Ok(_) => return Err(NoHead::Quiet),
                Err(_) if deadline.is_some() => {
                    return Err(NoHead::Reply(408, "timed out reading the request head"));
                }
                Err(_) => return Err(NoHead::Quiet),
            }
        }
    }

    /// Answer one request.
    async fn handle(&mut self, active: &Active, head: RequestHead) -> Next {
        let start = Instant::now();
        self.outcome = Outcome::default();
        let rule = {
            let mut scratch = [0u8; MAX_HOST_LEN];
            let host = head.name.as_str(self.rbuf.data(), &mut scratch);
            active.snapshot.routes.lookup(host)
        };
        self.worker.stats.requests.inc();
        if active.snapshot.config.logging.enabled {
            self.begin_record(active, &head);
        }
        let limit = active.snapshot.config.limits.max_body_bytes;
        let next = match rule {
            Some(_) if matches!(head.body, Body::Length(n) if limit > 0 && n > limit) => {
                // Refused before anything is forwarded; the body is left unread.
                self.outcome.error = Some("client");
                self.worker.stats.rejected_limits.inc();
                self.rbuf.consume(head.head_len);
                self.reply(413, "request body too large", true).await;
                Next::Close
            }
            Some(_) => forward::exchange(self, active, head).await,
            None => {
                // Never forwarded anywhere: Dispa is not an open proxy.
                self.worker.stats.not_intercepted.inc();
                let keep = head.keep_alive && head.body == Body::None;
                self.rbuf.consume(head.head_len);
                let sent = self.reply(404, "domain not intercepted", !keep).await;
                if sent && keep {
                    Next::KeepAlive
                } else {
                    Next::Close
                }
            }
        };
        let o = self.outcome;
        let total = start.elapsed();
        self.worker.record(
            active,
            rule.unwrap_or(NONE),
            o.target,
            o.status,
            total,
            o.upstream,
        );
        self.finish_record(active, total);
        next
    }

    fn new_draft(&self, version_minor: u8) -> RecordDraft {
        RecordDraft {
            start_ms: unix_ms(),
            version_minor,
            text: String::with_capacity(160),
            ends: [0; RecordText::COUNT],
            generated_id: false,
            capture: None,
        }
    }

    /// Copy what the record needs from the head while it is still in the buffer.
    fn begin_record(&mut self, active: &Active, head: &RequestHead) {
        let data = self.rbuf.data();
        let mut scratch = [0u8; MAX_HOST_LEN];
        let host = head.name.as_str(data, &mut scratch);
        let mut draft = self.new_draft(head.minor_version);
        match field(data, &head.fields, b"x-request-id").and_then(usable_request_id) {
            Some(id) => draft.push(RecordText::Id, id),
            None => {
                self.worker.write_request_id(&mut draft.text);
                draft.ends[RecordText::Id as usize] = draft.text.len() as u32;
                draft.generated_id = true;
            }
        }
        draft.push_bytes(RecordText::Method, head.method.of(data));
        // The normalized host: what matching used.
        draft.push(RecordText::Host, host);
        let target = head.path.of(data);
        let (path, query) = match target.iter().position(|&b| b == b'?') {
            Some(i) => (&target[..i], &target[i + 1..]),
            None => (target, &b""[..]),
        };
        draft.push_bytes(RecordText::Path, path);
        draft.push_bytes(RecordText::Query, query);
        let ua = field(data, &head.fields, b"user-agent").unwrap_or_default();
        draft.push_bytes(RecordText::UserAgent, ua);
        let captured = active
            .snapshot
            .capture
            .as_ref()
            .is_some_and(|c| c.intercepts(host));
        let room = if captured {
            let settings = &active.snapshot.config.logging.capture;
            let mut c = Box::<Captured>::default();
            Captured::keep_fields(
                &mut c.request_headers,
                data,
                &head.fields,
                &settings.request_headers,
            );
            draft.capture = Some(c);
            settings.max_body_bytes
        } else {
            0
        };
        self.request_tap.arm(room);
        self.response_tap.arm(room);
        self.draft = Some(draft);
    }

    /// Complete the record with the outcome and hand it to the logging thread.
    fn finish_record(&mut self, active: &Active, total: Duration) {
        let Some(mut d) = self.draft.take() else {
            return;
        };
        let o = self.outcome;
        let target = active.snapshot.targets.get(o.target as usize);
        d.push(RecordText::Target, target.map_or("", |t| t.name.as_str()));
        self.worker.send_record(TrafficRecord {
            start_ms: d.start_ms,
            client: self.peer_ip,
            worker: self.worker.id as u16,
            version_minor: d.version_minor,
            status: o.status,
            request_bytes: o.request_bytes,
            response_bytes: o.response_bytes,
            duration_us: total.as_micros() as u64,
            upstream_us: o.upstream.map(|u| u.as_micros() as u64),
            target_addr: target.map(|t| t.addr),
            reused: o.reused,
            retries: o.retries,
            error: o.error,
            text: d.text,
            ends: d.ends,
            capture: d.capture.map(|mut c| {
                c.request_body = self.request_tap.take();
                c.response_body = self.response_tap.take();
                c
            }),
        });
    }

    /// Half-close, then read and drop what the client still sends (at most 64 KiB, 1 s),
    /// so that the response is not destroyed by a reset.
    async fn lingering_close(&mut self) {
        let _ = monoio::io::AsyncWriteRent::shutdown(&mut self.client).await;
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut drained = 0;
        while drained < 64 * 1024 {
            self.rbuf.consume(self.rbuf.len());
            match timeout_at(deadline.into(), self.rbuf.fill(&mut self.client, BUF_START)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => return,
            }
        }
    }

    /// Make the coming close a reset, so that a client reading until close never takes a
    /// truncated body for a complete one.
    pub fn abort_on_close(&self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket fd we own, with a correctly sized `linger`.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.client),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }

    /// Send a generated response; returns whether it was written.
    pub async fn reply(&mut self, status: u16, message: &str, close: bool) -> bool {
        self.linger |= close;
        self.outcome.status = status;
        self.outcome.response_bytes = message.len() as u64 + 1;
        self.out.clear();
        canned::response(&mut self.out, status, message, close);
        let send = self.worker.active().snapshot.config.timeouts.send;
        matches!(
            timeout(send, write_vec(&mut self.client, &mut self.out)).await,
            Ok(Ok(()))
        )
    }
}
