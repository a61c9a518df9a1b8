//! In-flight request counts for one target: one cache-line-padded slot per worker. Each
//! worker writes only its own slot (a plain load + store, no lock prefix); readers sum all
//! slots. Exact for a single writer per slot, lock-free for everyone.

use std::sync::atomic::{AtomicU64, Ordering};

#[repr(align(128))]
#[derive(Debug, Default)]
struct Slot(AtomicU64);

#[derive(Debug)]
pub struct Inflight {
    slots: Box<[Slot]>,
}

impl Inflight {
    pub fn new(workers: usize) -> Self {
        Inflight {
            slots: (0..workers.max(1)).map(|_| Slot::default()).collect(),
        }
    }

    /// Only worker `worker` may call this for its slot.
    pub fn add(&self, worker: usize, delta: i64) {
        let slot = &self.slots[worker].0;
        let v = slot.load(Ordering::Relaxed);
        slot.store(v.wrapping_add_signed(delta), Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_across_workers() {
        let f = Inflight::new(3);
        f.add(0, 1);
        f.add(2, 1);
        f.add(2, 1);
        f.add(0, -1);
        assert_eq!(f.total(), 2);
    }
}
