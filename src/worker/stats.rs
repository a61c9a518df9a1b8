//! Per-worker counters. Each worker is the only writer of its own [`WorkerStats`] (a plain
//! load + store, no lock prefix, no shared cache line); other threads only read them.

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl WorkerStats {
    pub fn response(&self, status: u16) {
        self.responses[usize::from(status / 100).min(5)].inc();
    }
}
