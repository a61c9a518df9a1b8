//! Round robin, weighted as nginx's and HAProxy's are: with equal weights each candidate
//! in turn (from a start that differs per worker); with different weights the smooth
//! weighted order (`weighted`), so weights 3 and 2 give 60/40 whichever type is named.

use super::{Candidates, SmoothWeighted};

#[derive(Debug)]
pub struct RoundRobin {
    next: usize,
    weighted: SmoothWeighted,
}

impl RoundRobin {
    pub fn new(start: usize) -> Self {
        RoundRobin {
            next: start,
            weighted: SmoothWeighted::new(0),
        }
    }

    pub fn pick(&mut self, c: &Candidates<'_>) -> Option<usize> {
        if c.weights.windows(2).any(|w| w[0] != w[1]) {
            return self.weighted.pick(c);
        }
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
            names: &[],
            key: 0,
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
            names: &[],
            key: 0,
            excluded: &skip1,
        };
        let picks: Vec<_> = (0..4).map(|_| b.pick(&c).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        let all = |_: usize| true;
        assert_eq!(
            b.pick(&Candidates {
                weights: &[1, 1, 1],
                names: &[],
                key: 0,
                excluded: &all
            }),
            None
        );
    }

    #[test]
    fn honours_weights_smoothly() {
        let mut b = Balancer::new(Algorithm::RoundRobin, 2, 0);
        assert_eq!(distribution(&mut b, &[3, 1], 400), [300, 100]);
        let mut b = RoundRobin::new(0);
        let none = |_: usize| false;
        let c = Candidates {
            weights: &[3, 2],
            names: &[],
            key: 0,
            excluded: &none,
        };
        let picks: Vec<_> = (0..5).map(|_| b.pick(&c).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 1, 0], "spread out, not bunched");
    }
}
