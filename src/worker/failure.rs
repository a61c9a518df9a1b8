//! Every way a request ends other than with a relayed response, and every answer Dispa
//! makes itself. Which side failed, the status and text the client gets, the error the
//! record and metrics name, whether the request may be sent again, and which counter
//! counts it are decided here and nowhere else.

use crate::http::RequestError;
use crate::msg::{ErrorKind, WorkerStats};

/// Which side of the proxy a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    /// Dispa itself: no target to send to, too many connections.
    Proxy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    // --- the client's side
    /// A head that cannot be parsed or is over a limit.
    BadHead(RequestError),
    /// The head did not arrive within `timeouts.client_head`.
    HeadTimeout,
    /// The host is not intercepted: nothing is forwarded.
    NotIntercepted,
    /// Over TLS, the Host is not the name the client asked for in its handshake (SNI):
    /// 421, never another domain's target.
    Misdirected,
    /// The body is over `limits.max_body_bytes` (by its Content-Length, or as it grew).
    BodyTooLarge,
    /// The body did not arrive within `timeouts.client_body`.
    BodyTimeout,
    /// The chunked framing of the request body is invalid.
    BadChunkedBody,
    /// The client closed, reset, or stopped reading: nobody to answer.
    ClientGone,
    // --- Dispa's own
    /// Every target is down, drained or cooling down.
    NoTarget,
    /// Over `limits.max_connections`.
    TooManyConnections,
    /// The target was at `upstream.max_connections_per_target` for all of
    /// `timeouts.queue`.
    QueueTimeout,
    // --- the target's side
    ConnectFailed,
    ConnectTimeout,
    /// The TLS handshake with an `https://` target failed (its certificate, most often).
    UpstreamTls,
    /// Writing the request head did not finish within `timeouts.send`.
    SendTimeout,
    /// The target stopped reading the request body and sent no answer.
    StoppedReading,
    /// The connection failed or closed before any response byte. On a pooled connection
    /// the request may be sent again on a new one ([`Failure::retryable`], when the
    /// request allows); otherwise the client gets 502.
    Stale,
    /// No final response head within the target's response timeout.
    ResponseTimeout,
    /// A response head that cannot be parsed.
    BadResponse,
    /// More than 16 interim (1xx) responses before a final one.
    TooManyInterim,
    /// A 101 the client did not ask for.
    UnaskedSwitch,
    /// The target closed after part of a response, before anything reached the client.
    ClosedMidResponse,
    /// The target stalled in a small body Dispa was reading before sending the head.
    StalledMidResponse,
    /// The body broke off after its head reached the client: the client's connection is
    /// reset, so that a truncated body is never taken for a complete one.
    Truncated,
}

impl Failure {
    pub fn side(self) -> Side {
        use Failure::*;
        match self {
            BadHead(_) | HeadTimeout | NotIntercepted | Misdirected | BodyTooLarge
            | BodyTimeout | BadChunkedBody | ClientGone => Side::Client,
            NoTarget | TooManyConnections | QueueTimeout => Side::Proxy,
            ConnectFailed | ConnectTimeout | UpstreamTls | SendTimeout | StoppedReading | Stale
            | ResponseTimeout | BadResponse | TooManyInterim | UnaskedSwitch
            | ClosedMidResponse | StalledMidResponse | Truncated => Side::Upstream,
        }
    }

    /// The status and text Dispa answers with; `None` when the client gets no answer
    /// (it is gone, or a response to it has begun).
    pub fn answer(self) -> Option<(u16, &'static str)> {
        use Failure::*;
        Some(match self {
            BadHead(e) => (e.status(), e.reason()),
            HeadTimeout => (408, "timed out reading the request head"),
            NotIntercepted => (404, "domain not intercepted"),
            Misdirected => (421, "misdirected request: Host is not the TLS server name"),
            BodyTooLarge => (413, "request body too large"),
            BodyTimeout => (408, "timed out reading the request body"),
            BadChunkedBody => (400, "invalid chunked request body"),
            NoTarget => (503, "no target available"),
            TooManyConnections => (503, "too many connections"),
            QueueTimeout => (503, "timed out waiting for a connection to the target"),
            ConnectFailed => (502, "cannot connect to the target"),
            ConnectTimeout => (504, "timed out connecting to the target"),
            UpstreamTls => (502, "TLS handshake with the target failed"),
            SendTimeout => (504, "timed out sending to the target"),
            StoppedReading => (502, "target stopped reading the request"),
            Stale => (502, "target closed the connection"),
            ResponseTimeout => (504, "timed out waiting for the target's response"),
            BadResponse => (502, "invalid response from the target"),
            TooManyInterim => (502, "too many interim responses"),
            UnaskedSwitch => (502, "target switched protocols unasked"),
            ClosedMidResponse => (502, "target closed the connection mid-response"),
            StalledMidResponse => (504, "target stalled mid-response"),
            ClientGone | Truncated => return None,
        })
    }

    /// What the traffic record and `dispa_request_errors_total` call it; `None` for a
    /// request that was answered as intended (a host that is not intercepted).
    pub fn kind(self) -> Option<ErrorKind> {
        use Failure::*;
        Some(match self {
            BadHead(_) | HeadTimeout => ErrorKind::BadRequest,
            NotIntercepted | TooManyConnections => return None,
            BodyTooLarge | BodyTimeout | BadChunkedBody | ClientGone => ErrorKind::Client,
            Misdirected => ErrorKind::Misdirected,
            NoTarget => ErrorKind::NoTarget,
            QueueTimeout => ErrorKind::QueueTimeout,
            ConnectFailed => ErrorKind::Connect,
            UpstreamTls => ErrorKind::UpstreamTls,
            ConnectTimeout => ErrorKind::ConnectTimeout,
            SendTimeout | ResponseTimeout | StalledMidResponse => ErrorKind::Timeout,
            StoppedReading | BadResponse | TooManyInterim | UnaskedSwitch | ClosedMidResponse => {
                ErrorKind::BadResponse
            }
            Stale => ErrorKind::UpstreamClosed,
            Truncated => ErrorKind::Truncated,
        })
    }

    /// Whether the request may be sent again on a new connection (when it is all in hand
    /// and idempotent): only a reused connection that failed before any response byte.
    pub fn retryable(self) -> bool {
        self == Failure::Stale
    }

    /// Whether the client's connection must be reset rather than closed.
    pub fn resets_client(self) -> bool {
        self == Failure::Truncated
    }

    /// Count it in the worker's counters (the error by kind, and the older per-reason
    /// counters `dispa_requests_rejected_total` and `dispa_upstream_errors_total` read).
    pub fn count(self, stats: &WorkerStats) {
        use Failure::*;
        if let Some(kind) = self.kind() {
            stats.errors[kind as usize].inc();
        }
        match self {
            HeadTimeout => stats.rejected_timeout.inc(),
            BadHead(RequestError::HeadTooLarge)
            | BadHead(RequestError::TooManyFields)
            | BadHead(RequestError::UriTooLong)
            | BodyTooLarge => stats.rejected_limits.inc(),
            BadHead(_) => stats.rejected_bad_request.inc(),
            NotIntercepted => stats.not_intercepted.inc(),
            Misdirected => {}
            TooManyConnections => stats.refused_connections.inc(),
            SendTimeout | ResponseTimeout | StalledMidResponse => stats.upstream_timeouts.inc(),
            StoppedReading | Stale | BadResponse | TooManyInterim | UnaskedSwitch
            | ClosedMidResponse => stats.upstream_bad_responses.inc(),
            // Connect failures are counted per attempt, where they happen.
            ConnectFailed | ConnectTimeout | UpstreamTls | NoTarget | QueueTimeout => {}
            BodyTimeout | BadChunkedBody | ClientGone | Truncated => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Failure; 26] = [
        Failure::QueueTimeout,
        Failure::Misdirected,
        Failure::UpstreamTls,
        Failure::TooManyInterim,
        Failure::BadHead(RequestError::UriTooLong),
        Failure::HeadTimeout,
        Failure::NotIntercepted,
        Failure::BodyTooLarge,
        Failure::BodyTimeout,
        Failure::BadChunkedBody,
        Failure::ClientGone,
        Failure::NoTarget,
        Failure::TooManyConnections,
        Failure::ConnectFailed,
        Failure::ConnectTimeout,
        Failure::SendTimeout,
        Failure::StoppedReading,
        Failure::Stale,
        Failure::ResponseTimeout,
        Failure::BadResponse,
        Failure::UnaskedSwitch,
        Failure::ClosedMidResponse,
        Failure::StalledMidResponse,
        Failure::Truncated,
        Failure::BadHead(RequestError::HeadTooLarge),
        Failure::BadHead(RequestError::Malformed("x")),
    ];

    #[test]
    fn upstream_failures_answer_with_gateway_statuses() {
        for f in ALL.iter().filter(|f| f.side() == Side::Upstream) {
            if let Some((status, _)) = f.answer() {
                assert!(status == 502 || status == 504, "{f:?} -> {status}");
            }
        }
    }

    #[test]
    fn client_failures_answer_with_client_statuses_and_name_the_client() {
        for f in ALL.iter().filter(|f| f.side() == Side::Client) {
            if let Some((status, _)) = f.answer() {
                assert!((400..500).contains(&status), "{f:?} -> {status}");
            }
        }
        assert_eq!(Failure::BodyTooLarge.kind(), Some(ErrorKind::Client));
        assert_eq!(Failure::HeadTimeout.answer().unwrap().0, 408);
    }

    #[test]
    fn only_a_stale_pooled_connection_is_retried() {
        let retryable: Vec<_> = ALL.iter().filter(|f| f.retryable()).collect();
        assert_eq!(retryable, [&Failure::Stale]);
    }

    #[test]
    fn each_failure_is_counted_once_by_kind() {
        for f in ALL {
            let stats = WorkerStats::default();
            f.count(&stats);
            let by_kind: u64 = stats.errors.iter().map(|c| c.get()).sum();
            assert_eq!(by_kind, u64::from(f.kind().is_some()), "{f:?}");
        }
    }
}
