//! Plain round robin: each candidate in turn, weights ignored.

use super::Candidates;

#[derive(Debug)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    pub fn new(start: usize) -> Self {
        RoundRobin { next: start }
    }

    pub fn pick(&mut self, c: &Candidates<'_>) -> Option<usize> {
        let n = c.weights.len();
        (0..n)
            .map(|i| (self.next + i) % n)
            .find(|&i| !(c.excluded)(i))
            .inspect(|&i| self.next = i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Balancer, test_support::distribution};
    use super::*;
    use crate::balance::Algorithm;

    #[test]
    fn alternates_between_two_targets() {
        let mut b = RoundRobin::new(0);
        let none = |_: usize| false;
        let c = Candidates {
            weights: &[1, 1],
            excluded: &none,
        };
        let picks: Vec<_> = (0..6).map(|_| b.pick(&c).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn skips_excluded_targets() {
        let mut b = RoundRobin::new(0);
        let skip1 = |i: usize| i == 1;
        let c = Candidates {
            weights: &[1, 1, 1],
            excluded: &skip1,
        };
        let picks: Vec<_> = (0..4).map(|_| b.pick(&c).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        let all = |_: usize| true;
        assert_eq!(
            b.pick(&Candidates {
                weights: &[1, 1, 1],
                excluded: &all
            }),
            None
        );
    }

    #[test]
    fn ignores_weights() {
        let mut b = Balancer::new(Algorithm::RoundRobin, 2, 0);
        assert_eq!(distribution(&mut b, &[3, 1], 400), [200, 200]);
    }
}
