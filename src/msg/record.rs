//! The traffic record: one per request, from a worker to the logging thread.

/// Why a request failed, as records (`error`), metrics (`dispa_request_errors_total`'s
/// `error` label) and docs/DATABASE.md name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No target could be connected to (refused, unreachable).
    Connect,
    /// Connecting to a target took longer than `timeouts.connect`.
    ConnectTimeout,
    /// Every target is down, drained or cooling down.
    NoTarget,
    /// The target did not take the request or answer in time.
    Timeout,
    /// The target's answer was malformed, or it stopped reading or closed mid-response.
    BadResponse,
    /// The target's connection failed or closed before any response byte (a pooled one
    /// is tried again on a new connection when the request allows).
    UpstreamClosed,
    /// The response body broke off after its head was relayed: the client's connection
    /// was reset.
    Truncated,
    /// The client went away, was too slow, or sent a body over the limit or malformed.
    Client,
    /// The request head was malformed, too large or too slow (no head to route).
    BadRequest,
    /// The TLS handshake with an `https://` target failed (certificate, protocol).
    UpstreamTls,
    /// Over TLS, the request's Host was not the connection's SNI (answered 421).
    Misdirected,
    /// A TLS client's SNI named a host Dispa does not intercept: refused in the handshake
    /// (the record's `sni` says which).
    TlsRefused,
    /// The target was at `upstream.max_connections_per_target` and no connection to it
    /// came free within `timeouts.queue` (answered 503).
    QueueTimeout,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::Connect,
        ErrorKind::ConnectTimeout,
        ErrorKind::NoTarget,
        ErrorKind::Timeout,
        ErrorKind::BadResponse,
        ErrorKind::UpstreamClosed,
        ErrorKind::Truncated,
        ErrorKind::Client,
        ErrorKind::BadRequest,
        ErrorKind::UpstreamTls,
        ErrorKind::Misdirected,
        ErrorKind::TlsRefused,
        ErrorKind::QueueTimeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::NoTarget => "no_target",
            ErrorKind::Timeout => "timeout",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::UpstreamClosed => "upstream_closed",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Client => "client",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::UpstreamTls => "upstream_tls",
            ErrorKind::Misdirected => "misdirected",
            ErrorKind::TlsRefused => "tls_refused",
            ErrorKind::QueueTimeout => "queue_timeout",
        }
    }
}

/// One request as the traffic record keeps it, from a worker to the logging thread. The
/// texts share one allocation: `text[ends[i-1]..ends[i]]` is field `i` of [`RecordText`].
#[derive(Debug, Clone)]
pub struct TrafficRecord {
    /// Start of the request (complete head), Unix milliseconds.
    pub start_ms: u64,
    pub client: std::net::IpAddr,
    /// The client connection it came on (unique per process and worker; requests of one
    /// connection share it, in order).
    pub conn: u64,
    pub worker: u16,
    /// 0 or 1 for HTTP/1.0 and HTTP/1.1; `u8::MAX` when the head could not be parsed.
    pub version_minor: u8,
    /// Status sent to the client, 0 when none was.
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub duration_us: u64,
    pub upstream_us: Option<u64>,
    pub target_addr: Option<std::net::SocketAddr>,
    /// The upstream connection came from the pool (`None`: no upstream).
    pub reused: Option<bool>,
    pub retries: u8,
    /// Why the request failed, when it did.
    pub error: Option<ErrorKind>,
    /// 0 over plain TCP; 12 or 13 over TLS 1.2 or 1.3 (then field `Sni` is the name the
    /// client asked for, empty when none).
    pub tls: u8,
    pub text: String,
    pub ends: [u32; RecordText::COUNT],
    /// Headers and body bytes kept for `[logging.capture]` hosts; `None` otherwise.
    pub capture: Option<Box<Captured>>,
}

/// What `[logging.capture]` keeps of one exchange: selected fields as they were on the
/// wire (name, value; in order, duplicates kept) and the first bytes of both bodies
/// (decoded from chunked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
}

/// The text fields of a [`TrafficRecord`], in storage order.
#[derive(Debug, Clone, Copy)]
pub enum RecordText {
    Id = 0,
    Method,
    Host,
    Path,
    Query,
    UserAgent,
    Sni,
    Target,
}

impl RecordText {
    pub const COUNT: usize = 8;
}

impl TrafficRecord {
    pub fn field(&self, f: RecordText) -> &str {
        let i = f as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record with nothing in it, for tests of the queue and its readers.
    pub(crate) fn empty_record() -> TrafficRecord {
        TrafficRecord {
            start_ms: 0,
            client: std::net::Ipv4Addr::LOCALHOST.into(),
            conn: 0,
            worker: 0,
            version_minor: 1,
            status: 200,
            request_bytes: 0,
            response_bytes: 0,
            duration_us: 0,
            upstream_us: None,
            target_addr: None,
            reused: None,
            retries: 0,
            error: None,
            tls: 0,
            text: String::new(),
            ends: [0; RecordText::COUNT],
            capture: None,
        }
    }
}
