//! Weighted random choice with a per-worker xorshift generator (no shared RNG state).

use super::Candidates;

#[derive(Debug)]
pub struct Random {
    state: u64,
}

impl Random {
    pub fn new(seed: u64) -> Self {
        // xorshift must not start at 0; mix the seed so that neighbouring seeds diverge.
        Random {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64* (Vigna): fast, good enough to spread load.
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn pick(&mut self, c: &Candidates<'_>) -> Option<usize> {
        let total: u64 = c
            .weights
            .iter()
            .enumerate()
            .filter(|&(i, _)| !(c.excluded)(i))
            .map(|(_, &w)| u64::from(w))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = self.next_u64() % total;
        for (i, &w) in c.weights.iter().enumerate() {
            if (c.excluded)(i) {
                continue;
            }
            let w = u64::from(w);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Balancer, test_support::distribution};
    use crate::balance::Algorithm;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Balancer::new(Algorithm::Random, 3, 7);
        let mut b = Balancer::new(Algorithm::Random, 3, 7);
        assert_eq!(
            distribution(&mut a, &[1, 1, 1], 1000),
            distribution(&mut b, &[1, 1, 1], 1000)
        );
    }

    #[test]
    fn follows_weights_roughly() {
        let mut b = Balancer::new(Algorithm::Random, 2, 42);
        let counts = distribution(&mut b, &[3, 1], 40_000);
        let share = counts[0] as f64 / 40_000.0;
        assert!(
            (0.73..0.77).contains(&share),
            "share of weight-3 target: {share}"
        );
    }
}
