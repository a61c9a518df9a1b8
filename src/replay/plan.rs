//! When each replayed request goes, and on which connection: the requests of one
//! recorded client connection stay together and in order; the pace is the recorded
//! one scaled by `--speed` (each gap capped by `--max-gap`), a fixed `--rate`, or as
//! fast as `--concurrency` connections go.

use std::time::Duration;

use super::source::Recorded;

/// How fast requests go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// The recorded gaps divided by `speed`, none longer than `max_gap`.
    Recorded { speed: f64, max_gap: Duration },
    /// This many requests a second, evenly spaced.
    Rate(f64),
    /// Back to back on `concurrency` connections.
    Fast { concurrency: usize },
}

/// The schedule of one pass over the selected requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The requests (indexes into the list planned) of each recorded connection, in
    /// order; the connections in the order of their first request.
    pub conns: Vec<Vec<usize>>,
    /// When each request is due, from the start of the pass (all zero when `Fast`).
    pub due: Vec<Duration>,
}

impl Plan {
    /// From the first request's due time to the last's.
    pub fn span(&self) -> Duration {
        self.due.last().copied().unwrap_or_default()
    }
}

/// Plan `requests` (oldest first).
pub fn plan(requests: &[&Recorded], pace: Pace) -> Plan {
    let mut due = Vec::with_capacity(requests.len());
    let mut at = Duration::ZERO;
    for (i, r) in requests.iter().enumerate() {
        match pace {
            Pace::Recorded { speed, max_gap } if i > 0 => {
                let gap_ms = (r.ts_ms - requests[i - 1].ts_ms).max(0) as f64;
                let gap = Duration::try_from_secs_f64(gap_ms / 1000.0 / speed);
                at += gap.unwrap_or(max_gap).min(max_gap);
            }
            Pace::Rate(rate) => {
                // `--rate` is at least 0.001/s (cli.rs): a thousand seconds a request.
                at = Duration::try_from_secs_f64(i as f64 / rate).unwrap_or(Duration::MAX);
            }
            _ => {}
        }
        due.push(at);
    }
    // Records without a connection id (older stores) are each a connection of their own.
    // Ids are per Dispa: a fleet's store tells them apart by instance.
    let mut conns: Vec<Vec<usize>> = Vec::new();
    let mut by_id: std::collections::HashMap<(&str, i64), usize> = std::collections::HashMap::new();
    for (i, r) in requests.iter().enumerate() {
        match r.conn.map(|c| (r.instance.as_str(), c)) {
            Some(id) => match by_id.get(&id) {
                Some(&k) => conns[k].push(i),
                None => {
                    by_id.insert(id, conns.len());
                    conns.push(vec![i]);
                }
            },
            None => conns.push(vec![i]),
        }
    }
    Plan { conns, due }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ts_ms: i64, conn: Option<i64>) -> Recorded {
        Recorded {
            ts_ms,
            conn,
            ..Recorded::default()
        }
    }

    #[test]
    fn recorded_gaps_scale_with_speed_and_are_capped() {
        let r = [
            at(1000, Some(1)),
            at(1100, Some(2)),
            at(1300, Some(1)),
            at(61_300, None),
        ];
        let list: Vec<&Recorded> = r.iter().collect();
        let twice = Pace::Recorded {
            speed: 2.0,
            max_gap: Duration::from_secs(1),
        };
        let p = plan(&list, twice);
        let ms: Vec<u128> = p.due.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 50, 150, 1150]);
        assert_eq!(p.conns, vec![vec![0, 2], vec![1], vec![3]]);
        assert_eq!(p.span(), Duration::from_millis(1150));
        let p = plan(&list, Pace::Rate(4.0));
        let ms: Vec<u128> = p.due.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 250, 500, 750]);
        let p = plan(&list, Pace::Fast { concurrency: 2 });
        assert_eq!(p.span(), Duration::ZERO);
    }
}
