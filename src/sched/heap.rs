//! Gives memory freed by parked connections back to the system once a worker is quiet.
//!
//! Rust's allocations go to mimalloc (src/lib.rs), which keeps a heap per thread and
//! purges the pages a thread freed (a second after) only when that thread calls into it
//! again: a worker that went quiet after a wave of requests would keep them all. So
//! the worker collects its own heap ([`WorkerHeap`]) once it served nothing for a tick
//! and connections parked since its last collection. (Purging at once on every free
//! instead cost 10–35 % more CPU per request under load; docs/BENCHMARKS.md.)
//!
//! What C code allocates (SQLite, on the logging thread) stays with glibc, which returns
//! only the top of its heap by itself. A parked keep-alive connection frees
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

/// When a worker collects its heap: on its once-a-second chores, when it served no
/// request since the last ones, has none in flight, and at least
/// [`HeapTrim::MIN_PARKED`] connections parked since its last collection.
#[derive(Default)]
pub struct WorkerHeap {
    requests: u64,
    parked_at_last: u64,
}

impl WorkerHeap {
    pub fn tick(&mut self, requests: u64, busy: u64, parked: u64) {
        let quiet = requests == self.requests && busy == 0;
        self.requests = requests;
        if quiet && parked.saturating_sub(self.parked_at_last) >= HeapTrim::MIN_PARKED {
            self.parked_at_last = parked;
            // SAFETY: mi_collect has no preconditions; it works on the calling thread's heap.
            unsafe { libmimalloc_sys::mi_collect(true) };
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
