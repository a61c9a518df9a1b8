//! Least connections: the candidate with the fewest in-flight requests relative to its
//! weight (counted across all workers), ties broken round robin.

use super::Candidates;

#[derive(Debug)]
pub struct LeastConn {
    next: usize,
}

impl LeastConn {
    pub fn new(start: usize) -> Self {
        LeastConn { next: start }
    }

    pub fn pick(&mut self, c: &Candidates<'_>, load: &dyn Fn(usize) -> u64) -> Option<usize> {
        let n = c.weights.len();
        let mut best: Option<(usize, u64, u64)> = None;
        // Start at the rotating position so that equal loads are shared in turn.
        for k in 0..n {
            let i = (self.next + k) % n;
            if (c.excluded)(i) {
                continue;
            }
            let (l, w) = (load(i), u64::from(c.weights[i]));
            // l/w < bl/bw without division.
            if best.is_none_or(|(_, bl, bw)| l * bw < bl * w) {
                best = Some((i, l, w));
            }
        }
        let (i, _, _) = best?;
        self.next = i + 1;
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_least_loaded() {
        let mut b = LeastConn::new(0);
        let none = |_: usize| false;
        let c = Candidates {
            weights: &[1, 1, 1],
            names: &[],
            key: 0,
            excluded: &none,
        };
        let loads = [5u64, 2, 9];
        assert_eq!(b.pick(&c, &|i| loads[i]), Some(1));
    }

    #[test]
    fn weight_scales_load() {
        let mut b = LeastConn::new(0);
        let none = |_: usize| false;
        let c = Candidates {
            weights: &[4, 1],
            names: &[],
            key: 0,
            excluded: &none,
        };
        // 6/4 < 2/1
        let loads = [6u64, 2];
        assert_eq!(b.pick(&c, &|i| loads[i]), Some(0));
    }

    #[test]
    fn ties_rotate() {
        let mut b = LeastConn::new(0);
        let none = |_: usize| false;
        let c = Candidates {
            weights: &[1, 1],
            names: &[],
            key: 0,
            excluded: &none,
        };
        let picks: Vec<_> = (0..4).map(|_| b.pick(&c, &|_| 0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }
}
