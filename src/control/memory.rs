//! Gives memory freed by parked connections back to the system once every worker is quiet.
//!
//! glibc returns only the top of its heap by itself. A parked keep-alive connection frees
//! its buffers, but they lie between the small allocations of connections that stay (their
//! tasks), so without this every idle connection keeps ~1 KiB more resident
//! (`scripts/idle-memory.sh`, 10,000 connections: 5.6 -> 4.6-5.0 KiB each). `malloc_trim`
//! walks every arena and takes each arena's lock in turn (3.7-13 ms with 10,000
//! connections), so it runs here, on the control thread, and only when for a whole tick no
//! worker served a request and no connection parked (a wave of parking is over), none has
//! a request in flight, at least [`Trim::MIN_PARKED`] connections parked since the last
//! trim, and not more than every [`Trim::EVERY`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::worker::stats::WorkerStats;

pub struct Trim {
    last: Instant,
    requests: u64,
    parked: u64,
    parked_at_last: u64,
}

impl Trim {
    const EVERY: Duration = Duration::from_secs(5);
    const MIN_PARKED: u64 = 64;

    pub fn new() -> Self {
        let now = Instant::now();
        Trim {
            last: now.checked_sub(Self::EVERY).unwrap_or(now),
            requests: 0,
            parked: 0,
            parked_at_last: 0,
        }
    }

    /// Called on every control tick.
    pub fn tick(&mut self, workers: &[Arc<WorkerStats>], now: Instant) {
        let requests: u64 = workers.iter().map(|w| w.requests.get()).sum();
        let busy: u64 = workers.iter().map(|w| w.busy_requests.get()).sum();
        let parked: u64 = workers.iter().map(|w| w.parked.get()).sum();
        let quiet = requests == self.requests && parked == self.parked && busy == 0;
        self.requests = requests;
        self.parked = parked;
        if quiet
            && parked.saturating_sub(self.parked_at_last) >= Self::MIN_PARKED
            && now.duration_since(self.last) >= Self::EVERY
        {
            self.parked_at_last = parked;
            trim();
            self.last = Instant::now();
            tracing::debug!(took = ?self.last.duration_since(now), "returned freed memory");
        }
    }
}

#[cfg(target_env = "gnu")]
fn trim() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(target_env = "gnu"))]
fn trim() {}
