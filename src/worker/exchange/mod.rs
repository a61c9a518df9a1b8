//! One proxied exchange, in the order it runs: pick a target and get a connection to it
//! (`upstream`), send the rebuilt head and the body and read up to the final response
//! head (`send`), then relay the response and settle both connections (`respond`). A
//! failure before anything was forwarded ends in [`Exchange::refuse`], one after in
//! [`Exchange::fail`]: the two places that count it, name it in the record and answer the
//! client, both from what `Failure` decides.

mod respond;
mod send;
mod upstream;

use std::time::Instant;

use super::client::Client;
use super::draft::RecordDraft;
use super::failure::Failure;
use super::outcome::{Next, Outcome};
use super::relay::{self, BodyCapture};
use super::state::{Current, Worker};
use crate::http::encode::{self, Forward};
use crate::http::{Body, RequestHead};
use crate::io::ReadBuf;
use upstream::InflightGuard;

/// Request bodies up to this size that are already buffered go upstream with the head (and
/// can then be sent again on a fresh connection).
const INLINE_BODY: u64 = 16 * 1024;

/// The body bytes `[logging.capture]` keeps of one request, each way.
#[derive(Default)]
pub struct Captures {
    pub request: BodyCapture,
    pub response: BodyCapture,
}

/// What one exchange works with: borrowed from its connection for the request's duration.
pub struct Exchange<'a> {
    pub worker: &'a Worker,
    /// The snapshot the request runs on (current when its head was parsed).
    pub current: &'a Current,
    pub client: &'a mut Client,
    /// Bytes read from the upstream and not yet used.
    pub ubuf: &'a mut ReadBuf,
    /// Heads and re-framed body chunks being written, either way.
    pub out: &'a mut Vec<u8>,
    pub outcome: &'a mut Outcome,
    pub captures: &'a mut Captures,
    /// The request's traffic record, when recording is on.
    pub record: Option<&'a mut RecordDraft>,
}

impl Exchange<'_> {
    /// Answer `failure` without forwarding anything. The head is consumed; the connection
    /// survives only if no body is left unread.
    pub async fn refuse(&mut self, failure: Failure, head: &RequestHead) -> Next {
        failure.count(&self.worker.stats);
        self.outcome.error = failure.kind();
        let keep = head.keep_alive && head.body == Body::None;
        self.client.rbuf.consume(head.head_len);
        let sent = self.answer(failure, !keep).await;
        Next::keep_if(sent && keep)
    }

    /// End the exchange on `failure` after forwarding began: count it, name it, answer the
    /// client when it has an answer (or reset it when a response to it had begun), close.
    async fn fail(&mut self, failure: Failure) -> Next {
        tracing::debug!(side = ?failure.side(), ?failure, "request failed");
        failure.count(&self.worker.stats);
        self.outcome.error = failure.kind();
        if failure.resets_client() {
            self.client.abort_on_close();
        } else {
            self.answer(failure, true).await;
        }
        Next::Close
    }

    async fn answer(&mut self, failure: Failure, close: bool) -> bool {
        let send = self.current.snapshot.config.timeouts.send;
        let answered = self.client.answer(failure, close, self.out, send).await;
        self.outcome.answered(answered)
    }

    /// Forward the request whose head is at the front of the client's buffer.
    pub async fn forward(&mut self, head: RequestHead) -> Next {
        let targets = &self.current.snapshot.config.targets;
        let key = match targets.algorithm {
            crate::balance::Algorithm::ConsistentHash => {
                let data = self.client.rbuf.data();
                upstream::request_key(&targets.hash_key, &head, data, self.client.ip)
            }
            _ => 0,
        };
        let (idx, mut up) = match upstream::pick_and_connect(self, key).await {
            Ok(found) => found,
            Err(failure) => return self.refuse(failure, &head).await,
        };
        let current = self.current;
        let cfg = &current.snapshot.config;
        let target = &current.snapshot.targets[idx];
        self.outcome.target = idx as u32;
        self.outcome.reused = Some(up.reused);
        let _inflight = InflightGuard::new(target, self.worker.id);

        // Kept for the 101 answer: the head's bytes are consumed before the response arrives.
        let upgrade_asked = head
            .upgrade
            .map(|i| {
                head.fields.list[i]
                    .value
                    .of(self.client.rbuf.data())
                    .to_vec()
            })
            .unwrap_or_default();
        self.encode_request(&head, idx);
        // A small body already in the buffer goes out with the head; then the whole request
        // is in `out` and can be sent again if a reused connection turns out to be stale.
        let mut body_sent = head.body == Body::None;
        if let Body::Length(n) = head.body
            && n <= INLINE_BODY
            && self.client.rbuf.len() as u64 >= n
        {
            let (rbuf, capture) = (&mut self.client.rbuf, &mut self.captures.request);
            self.outcome.request_bytes = relay::inline(rbuf, n as usize, self.out, capture);
            body_sent = true;
        }
        // Sent again only when the whole request is in `out` and sending it twice is harmless.
        let replayable = body_sent && head.idempotent;

        let mut retried = false;
        let sent_at = Instant::now();
        let (response, body_unsent) = loop {
            match send::send_request(self, &mut up, &head, target, body_sent).await {
                Ok(r) => break r,
                Err(f) if f.retryable() && up.reused && replayable && !retried => {
                    retried = true;
                    self.worker.stats.upstream_retries.inc();
                    self.outcome.retries += 1;
                    self.outcome.reused = Some(false);
                    self.ubuf.consume(self.ubuf.len());
                    match upstream::connect(self.worker, target, &cfg.tls, cfg.timeouts.connect)
                        .await
                    {
                        Ok(stream) => {
                            up.stream = stream;
                            up.reused = false;
                        }
                        Err(f) => return self.fail(f).await,
                    }
                }
                Err(f) => return self.fail(f).await,
            }
        };
        self.out.clear();
        self.outcome.upstream = Some(sent_at.elapsed());
        let sent = respond::Sent {
            head: &head,
            upgrade_asked: &upgrade_asked,
            target: idx,
            body_unsent,
        };
        match respond::respond(self, sent, up, response).await {
            Ok(next) => next,
            Err(f) => self.fail(f).await,
        }
    }

    /// Rebuild the head for target `idx` into `out` and consume it from the client's buffer.
    fn encode_request(&mut self, head: &RequestHead, idx: usize) {
        let target = &self.current.snapshot.targets[idx];
        self.out.clear();
        let fwd = Forward {
            path_prefix: target.path_prefix.as_bytes(),
            host_override: target.rewrite_host.then_some(target.authority.as_bytes()),
            client_ip: &self.client.ip_text,
            request_id: self.record.as_ref().and_then(|r| r.generated_id()),
            https: self.client.tls.is_some(),
        };
        encode::request_head(self.out, self.client.rbuf.data(), head, &fwd);
        self.client.rbuf.consume(head.head_len);
    }
}
