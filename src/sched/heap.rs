//! Gives memory freed by parked connections back to the system once every worker is quiet
//! (on the control thread).
//!
//! glibc returns only the top of its heap by itself. A parked keep-alive connection frees
//! its buffers, but they lie between the small allocations of connections that stay (their
//! tasks), so without this every idle connection keeps about a KiB more resident.
//! `malloc_trim` walks every arena and takes each arena's lock in turn (milliseconds with
//! thousands of connections; figures in docs/BENCHMARKS.md, "Changes measured"),
//! so it runs here, on the control thread, and only when for a whole tick no
//! worker served a request and no connection parked (a wave of parking is over), none has
//! a request in flight, at least [`HeapTrim::MIN_PARKED`] connections parked since the last
//! trim, and not more than every [`HeapTrim::EVERY`].

use std::time::{Duration, Instant};

pub struct HeapTrim {
    last: Instant,
    requests: u64,
    parked: u64,
    parked_at_last: u64,
}

impl Default for HeapTrim {
    fn default() -> Self {
        let now = Instant::now();
        HeapTrim {
            last: now.checked_sub(Self::EVERY).unwrap_or(now),
            requests: 0,
            parked: 0,
            parked_at_last: 0,
        }
    }
}

impl HeapTrim {
    const EVERY: Duration = Duration::from_secs(5);
    const MIN_PARKED: u64 = 64;

    /// Called on every control tick with the workers' totals: requests served, requests in
    /// flight now, connections parked.
    pub fn tick(&mut self, requests: u64, busy: u64, parked: u64, now: Instant) {
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
