//! Load balancing: which target gets the next request. Each worker owns its own
//! [`Balancer`] (no sharing, no locks); only `least_connections` reads shared counters,
//! the lock-free per-worker [`Inflight`] slots. Pure: no I/O, no clock.

mod consistent;
mod inflight;
mod least_conn;
mod random;
mod round_robin;
mod weighted;

pub use consistent::{ConsistentHash, hash_of};
pub use inflight::Inflight;
pub use least_conn::LeastConn;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted::SmoothWeighted;

/// Load-balancing algorithm, `[targets.load_balancing] type` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    /// Smooth weighted round robin (nginx's algorithm).
    Weighted,
    /// Weighted random.
    Random,
    /// Fewest in-flight requests across all workers, relative to weight.
    LeastConnections,
    /// A ring of targets keyed by the client's address, a header or a cookie, with
    /// bounded load (sticky sessions).
    ConsistentHash,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::Weighted => "weighted",
            Algorithm::Random => "random",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::ConsistentHash => "consistent_hash",
        }
    }
}

/// `consistent_hash`'s ε when the config does not say (HAProxy's `hash-balance-factor`
/// 125 is the same bound).
pub const DEFAULT_LOAD_FACTOR: f64 = 0.25;

/// The targets a pick chooses from: weights, in snapshot order, and which are excluded
/// (already tried for this request, or down).
pub struct Candidates<'a> {
    pub weights: &'a [u32],
    /// Hashes of the targets' names (`consistent_hash` places them on its ring by these).
    pub names: &'a [u64],
    /// The request's hash key (`consistent_hash` only).
    pub key: u64,
    pub excluded: &'a dyn Fn(usize) -> bool,
}

/// A worker's balancer for one snapshot.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    Weighted(SmoothWeighted),
    Random(Random),
    LeastConnections(LeastConn),
    ConsistentHash(ConsistentHash),
}

impl Balancer {
    /// `seed` makes `random` (and tie-breaking start points) deterministic in tests; workers
    /// pass their id so that they do not all start on the same target.
    pub fn new(algorithm: Algorithm, targets: usize, seed: u64) -> Balancer {
        Balancer::with_load_factor(algorithm, targets, seed, DEFAULT_LOAD_FACTOR)
    }

    /// As [`Balancer::new`], with `consistent_hash`'s ε.
    pub fn with_load_factor(
        algorithm: Algorithm,
        targets: usize,
        seed: u64,
        load_factor: f64,
    ) -> Balancer {
        match algorithm {
            Algorithm::RoundRobin => Balancer::RoundRobin(RoundRobin::new(seed as usize)),
            Algorithm::Weighted => Balancer::Weighted(SmoothWeighted::new(targets)),
            Algorithm::Random => Balancer::Random(Random::new(seed)),
            Algorithm::LeastConnections => {
                Balancer::LeastConnections(LeastConn::new(seed as usize))
            }
            Algorithm::ConsistentHash => Balancer::ConsistentHash(ConsistentHash::new(load_factor)),
        }
    }

    /// The index of the next target, or `None` when every candidate is excluded.
    /// `load(i)` is target `i`'s in-flight count (only `least_connections` asks).
    pub fn pick(&mut self, c: &Candidates<'_>, load: &dyn Fn(usize) -> u64) -> Option<usize> {
        match self {
            Balancer::RoundRobin(b) => b.pick(c),
            Balancer::Weighted(b) => b.pick(c),
            Balancer::Random(b) => b.pick(c),
            Balancer::LeastConnections(b) => b.pick(c, load),
            Balancer::ConsistentHash(b) => b.pick(c, load),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Pick `n` times from `weights` with nothing excluded; returns picks per target.
    pub fn distribution(b: &mut Balancer, weights: &[u32], n: usize) -> Vec<usize> {
        let mut counts = vec![0; weights.len()];
        let none = |_: usize| false;
        let c = Candidates {
            weights,
            names: &[],
            key: 0,
            excluded: &none,
        };
        for _ in 0..n {
            counts[b.pick(&c, &|_| 0).unwrap()] += 1;
        }
        counts
    }
}
