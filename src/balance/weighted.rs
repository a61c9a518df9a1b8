//! Smooth weighted round robin (nginx's `ngx_http_upstream_get_peer`): every pick adds each
//! candidate's weight to its current score, takes the highest, and subtracts the total from
//! it. Weights 5:1:1 give `a a b a c a a`, spread out rather than bunched.

use super::Candidates;

#[derive(Debug)]
pub struct SmoothWeighted {
    current: Vec<i64>,
}

impl SmoothWeighted {
    pub fn new(targets: usize) -> Self {
        SmoothWeighted {
            current: vec![0; targets],
        }
    }

    pub fn pick(&mut self, c: &Candidates<'_>) -> Option<usize> {
        if self.current.len() != c.weights.len() {
            self.current = vec![0; c.weights.len()];
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, &w) in c.weights.iter().enumerate() {
            if (c.excluded)(i) {
                continue;
            }
            let w = i64::from(w);
            self.current[i] += w;
            total += w;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.current[best] -= total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Balancer, test_support::distribution};
    use super::*;
    use crate::balance::Algorithm;

    #[test]
    fn five_one_one_is_smooth() {
        let mut b = SmoothWeighted::new(3);
        let none = |_: usize| false;
        let c = Candidates {
            weights: &[5, 1, 1],
            names: &[],
            key: 0,
            excluded: &none,
        };
        let picks: String = (0..7)
            .map(|_| (b'a' + b.pick(&c).unwrap() as u8) as char)
            .collect();
        assert_eq!(picks, "aabacaa");
    }

    #[test]
    fn three_to_one_over_400_is_exact() {
        let mut b = Balancer::new(Algorithm::Weighted, 2, 0);
        assert_eq!(distribution(&mut b, &[3, 1], 400), [300, 100]);
    }

    #[test]
    fn excluded_target_gets_nothing_and_others_keep_ratio() {
        let mut b = SmoothWeighted::new(3);
        let skip0 = |i: usize| i == 0;
        let c = Candidates {
            weights: &[5, 2, 1],
            names: &[],
            key: 0,
            excluded: &skip0,
        };
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[b.pick(&c).unwrap()] += 1;
        }
        assert_eq!(counts, [0, 200, 100]);
    }
}
