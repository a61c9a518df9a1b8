//! Counters with one writer thread each (a plain load + store, no lock prefix, no shared
//! cache line), read by the control thread: [`WorkerStats`] per worker, [`LoggingStats`] per
//! logging thread; and what a worker reports every 250 ms ([`StatsReport`]).

use std::sync::atomic::{AtomicU64, Ordering};

use super::ErrorKind;

/// A counter with one writer thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn dec(&self) {
        self.add(u64::MAX);
    }

    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    pub accepted: Counter,
    /// Connections answered 503 and closed because `max_connections` were open.
    pub refused_connections: Counter,
    /// Client connections open now.
    pub open_connections: Counter,
    /// Requests between head parsed and response finished, now.
    pub busy_requests: Counter,
    pub requests: Counter,
    /// Responses by class: index 1..=5 for 1xx..5xx.
    pub responses: [Counter; 6],
    pub not_intercepted: Counter,
    pub upstream_connects: Counter,
    pub upstream_connect_failures: Counter,
    pub upstream_reused: Counter,
    pub upstream_retries: Counter,
    /// Requests that waited for a connection to a target at its connection limit.
    pub upstream_queued: Counter,
    pub upgrades: Counter,
    /// Upstream failures after connecting: timeouts, invalid or truncated responses.
    pub upstream_timeouts: Counter,
    pub upstream_bad_responses: Counter,
    /// Requests refused before routing: malformed (400/405/417), over limits (414/431),
    /// too slow (408).
    pub rejected_bad_request: Counter,
    pub rejected_limits: Counter,
    pub rejected_timeout: Counter,
    /// Idle pooled upstream connections (a gauge, refreshed every report).
    pub pool_idle: Counter,
    /// Generation of the snapshot this worker runs new requests on.
    pub generation: Counter,
    /// Traffic records dropped because the logging thread's channel was full.
    pub records_dropped: Counter,
    pub bytes_from_clients: Counter,
    pub bytes_to_clients: Counter,
    /// Keep-alive connections that gave their buffers back (parked), ever.
    pub parked: Counter,
    /// Failed requests by [`ErrorKind`] (indexed by its discriminant).
    pub errors: [Counter; ErrorKind::ALL.len()],
    /// TLS handshakes by [`TlsHandshake`] result.
    pub tls_handshakes: [Counter; TlsHandshake::ALL.len()],
    /// Open TLS client connections.
    pub tls_open: Counter,
}

/// Counters of the logging thread (its only writer).
#[derive(Debug, Default)]
pub struct LoggingStats {
    pub written_file: Counter,
    pub written_database: Counter,
    /// Records a failing sink could not keep (past `logging.max_backlog`, or still
    /// waiting when Dispa stopped).
    pub lost_file: Counter,
    pub lost_database: Counter,
    pub errors_file: Counter,
    pub errors_database: Counter,
    pub batches: Counter,
    /// Records waiting for a failing sink to work again (gauges).
    pub backlog_file: Counter,
    pub backlog_database: Counter,
    /// Why each sink is failing (its last error, naming the operation and the path), or
    /// `None` while it works. Written by the logging thread, read by the status API.
    pub failing: std::sync::Mutex<SinkHealth>,
}

/// What is wrong with each sink, if anything.
#[derive(Debug, Default, Clone)]
pub struct SinkHealth {
    pub file: Option<String>,
    pub database: Option<String>,
}

impl LoggingStats {
    /// A copy of the sinks' health.
    pub fn health(&self) -> SinkHealth {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl WorkerStats {
    pub fn response(&self, status: u16) {
        self.responses[usize::from(status / 100).min(5)].inc();
    }
}

/// Upper bounds (seconds) of the latency histogram buckets; a last bucket is `+Inf`.
/// They reach past the default timeouts (the target's response: 60 s; a tunnel's idle
/// time: 300 s), so a request that waited for a timeout shows where it ended.
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A latency histogram: per-bucket (not cumulative) counts, the last one `+Inf`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub counts: [u64; LATENCY_BUCKETS.len() + 1],
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BUCKETS.partition_point(|&b| b < seconds);
        self.counts[i] += 1;
        self.sum_seconds += seconds;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_seconds += other.sum_seconds;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// One worker's counts since its previous report, labelled by domain rule, target name and
/// status class (`"2xx"`...); an empty domain means not intercepted, an empty target none.
#[derive(Debug, Default)]
pub struct StatsReport {
    pub worker: usize,
    pub requests: Vec<(String, String, u8, u64)>,
    /// By target name ("" for none).
    pub duration: Vec<(String, Histogram)>,
    pub upstream_duration: Vec<(String, Histogram)>,
    /// Client TLS handshakes that completed.
    pub tls_handshake: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let mut h = Histogram::default();
        h.observe(0.0001);
        h.observe(0.0002);
        h.observe(10.0);
        h.observe(400.0);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[LATENCY_BUCKETS.partition_point(|&b| b < 10.0)], 1);
        assert_eq!(h.counts[LATENCY_BUCKETS.len()], 1);
        assert_eq!(h.count(), 4);
    }
}

/// How a client's TLS handshake ended (`dispa_tls_handshakes_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsHandshake {
    /// A full handshake.
    Full,
    /// An abbreviated one: the client resumed a session (ticket).
    Resumed,
    /// The client's SNI names a host Dispa does not intercept.
    RefusedSni,
    /// A protocol error, no shared cipher or version, or the client went away.
    Failed,
    /// Not complete within `server.tls.handshake_timeout`.
    Timeout,
}

impl TlsHandshake {
    pub const ALL: [TlsHandshake; 5] = [
        TlsHandshake::Full,
        TlsHandshake::Resumed,
        TlsHandshake::RefusedSni,
        TlsHandshake::Failed,
        TlsHandshake::Timeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TlsHandshake::Full => "full",
            TlsHandshake::Resumed => "resumed",
            TlsHandshake::RefusedSni => "refused_sni",
            TlsHandshake::Failed => "failed",
            TlsHandshake::Timeout => "timeout",
        }
    }
}
