//! Consistent hashing with bounded load (Mirrokni, Thorup and Zadimoghaddam, 2018; what
//! HAProxy's `hash-balance-factor` does): each target owns points on a ring of 64-bit
//! hashes (100 per unit of weight, placed by the hash of its name and the point's number,
//! so every worker and every Dispa builds the same ring); a request's key (its client
//! address, a header or a cookie) goes to the first target clockwise from the key's hash,
//! unless that target already has more than `(1 + ε)` times the average requests in
//! flight (counted across workers, lock-free), then to the next one on the ring. Removing
//! one of N targets moves only the keys it had (about 1/N); the others stay.

use std::hash::{Hash, Hasher};

use super::Candidates;

/// In-flight requests below which a target always takes its keys (see `pick`).
const MIN_BOUND: u64 = 8;

/// Ring points per unit of weight: enough that 5 equal targets get 20 % ± 3 % each.
const POINTS_PER_WEIGHT: u32 = 100;

#[derive(Debug)]
pub struct ConsistentHash {
    /// (point, target index), sorted by point.
    ring: Vec<(u64, u32)>,
    /// The names' hashes and weights the ring was built for.
    built_for: Vec<(u64, u32)>,
    /// ε: a target takes a request while its in-flight count is within (1 + ε) × average.
    load_factor: f64,
}

/// SipHash with fixed keys (std's `DefaultHasher::new`): the same in every process.
pub fn hash_of(value: impl Hash) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl ConsistentHash {
    pub fn new(load_factor: f64) -> Self {
        ConsistentHash {
            ring: Vec::new(),
            built_for: Vec::new(),
            load_factor,
        }
    }

    fn build(&mut self, names: &[u64], weights: &[u32]) {
        let wanted: Vec<(u64, u32)> = names.iter().copied().zip(weights.iter().copied()).collect();
        if wanted == self.built_for {
            return;
        }
        self.ring.clear();
        for (i, (name, weight)) in wanted.iter().enumerate() {
            for p in 0..weight.max(&1) * POINTS_PER_WEIGHT {
                self.ring.push((hash_of((name, p)), i as u32));
            }
        }
        self.ring.sort_unstable();
        self.built_for = wanted;
    }

    /// The target for `c.key`: the first on the ring that is not excluded and not over
    /// the load bound; when every candidate is over it, the first not excluded.
    pub fn pick(&mut self, c: &Candidates<'_>, load: &dyn Fn(usize) -> u64) -> Option<usize> {
        self.build(c.names, c.weights);
        let candidates: Vec<usize> = (0..c.weights.len()).filter(|&i| !(c.excluded)(i)).collect();
        if candidates.is_empty() || self.ring.is_empty() {
            return None;
        }
        let total: u64 = candidates.iter().map(|&i| load(i)).sum();
        // The bound counts this request too. Below MIN_BOUND in flight a target is never
        // passed over: at low load the bound is a request or two, and a request another
        // worker has just finished (its count not yet given back) would move a client.
        let average = (total + 1) as f64 / candidates.len() as f64;
        let bound = ((average * (1.0 + self.load_factor)).ceil() as u64).max(MIN_BOUND);
        let start = self.ring.partition_point(|&(p, _)| p < c.key);
        let mut first = None;
        let mut seen = vec![false; c.weights.len()];
        for k in 0..self.ring.len() {
            let i = self.ring[(start + k) % self.ring.len()].1 as usize;
            if seen[i] || (c.excluded)(i) {
                continue;
            }
            seen[i] = true;
            first.get_or_insert(i);
            if load(i) < bound {
                return Some(i);
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<u64> {
        (0..n).map(|i| hash_of(format!("backend{i}"))).collect()
    }

    fn pick(b: &mut ConsistentHash, names: &[u64], weights: &[u32], key: u64) -> usize {
        let none = |_: usize| false;
        let c = Candidates {
            weights,
            names,
            key,
            excluded: &none,
        };
        b.pick(&c, &|_| 0).unwrap()
    }

    #[test]
    fn spreads_keys_evenly_and_by_weight() {
        let (n, keys) = (5, 20_000u64);
        let names = names(n);
        let mut b = ConsistentHash::new(0.25);
        let mut counts = vec![0u64; n];
        for k in 0..keys {
            counts[pick(&mut b, &names, &[1; 5], hash_of(k))] += 1;
        }
        for c in &counts {
            let share = *c as f64 / keys as f64;
            assert!((0.15..=0.25).contains(&share), "{counts:?}");
        }
        let mut counts = vec![0u64; 2];
        for k in 0..keys {
            counts[pick(&mut b, &names[..2], &[3, 1], hash_of(k))] += 1;
        }
        let share = counts[0] as f64 / keys as f64;
        assert!((0.70..=0.80).contains(&share), "{counts:?}");
    }

    #[test]
    fn removing_one_of_five_moves_only_its_keys() {
        let names = names(5);
        let mut b = ConsistentHash::new(0.25);
        let keys: Vec<u64> = (0..20_000u64).map(hash_of).collect();
        let before: Vec<u64> = keys
            .iter()
            .map(|&k| names[pick(&mut b, &names, &[1; 5], k)])
            .collect();
        // Target 2 leaves the config: the others keep their names (and ring points).
        let rest: Vec<u64> = names.iter().copied().filter(|&n| n != names[2]).collect();
        let after: Vec<u64> = keys
            .iter()
            .map(|&k| rest[pick(&mut b, &rest, &[1; 4], k)])
            .collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let moved_share = moved as f64 / keys.len() as f64;
        assert!(moved_share <= 0.2 + 0.05, "moved {moved_share}");
        // Every key that moved was the removed target's.
        assert!(
            before
                .iter()
                .zip(&after)
                .all(|(a, b)| a == b || *a == names[2])
        );
    }

    #[test]
    fn a_target_over_the_load_bound_passes_keys_to_the_next() {
        let names = names(3);
        let mut b = ConsistentHash::new(0.25);
        let none = |_: usize| false;
        let key = hash_of("client");
        let c = Candidates {
            weights: &[1, 1, 1],
            names: &names,
            key,
            excluded: &none,
        };
        let home = b.pick(&c, &|_| 0).unwrap();
        // Home has 10 in flight, the others 1: average (12 + 1) / 3, bound 6 (ε = 0.25).
        let busy = move |i: usize| if i == home { 10 } else { 1 };
        let other = b.pick(&c, &busy).unwrap();
        assert_ne!(other, home);
        // Within the bound it stays home.
        let fine = move |i: usize| if i == home { 2 } else { 1 };
        assert_eq!(b.pick(&c, &fine), Some(home));
        // Excluded (down) home: the next on the ring, the same one every time.
        let down = move |i: usize| i == home;
        let c2 = Candidates {
            excluded: &down,
            ..c
        };
        let next = b.pick(&c2, &|_| 0).unwrap();
        assert_ne!(next, home);
        assert_eq!(b.pick(&c2, &|_| 0), Some(next));
    }
}
