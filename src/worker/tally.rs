//! What a worker counts between two reports to the control thread: requests by (domain
//! rule, target, status class) and the latency histograms. Plain cells: one thread.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::Snapshot;
use crate::msg::{Histogram, StatsReport};

/// Rule or target index meaning "none".
pub const NONE: u32 = u32::MAX;

#[derive(Default)]
pub struct RequestCounts {
    /// By (rule, target, status class), indices of the snapshot the worker runs now.
    requests: HashMap<(u32, u32, u8), u64>,
    /// Requests that finished on an older snapshot than the worker's current one,
    /// labelled already (their indices would mean other names in the current one).
    labelled: Vec<(String, String, u8, u64)>,
    /// Latency by target index of the current snapshot (the last slot: no target).
    duration: Vec<Histogram>,
    upstream_duration: Vec<Histogram>,
    /// Latency of requests that finished on an older snapshot, by target name.
    labelled_latency: Vec<(String, Histogram, Histogram)>,
    tls_handshake: Histogram,
}

impl RequestCounts {
    /// Count one finished request. `rule`/`target` are indices of `snapshot` (or [`NONE`]);
    /// `current` says whether `snapshot` is the one the worker runs now.
    pub fn add(
        &mut self,
        snapshot: &Snapshot,
        current: bool,
        (rule, target): (u32, u32),
        status: u16,
        total: Duration,
        upstream: Option<Duration>,
    ) {
        let class = (status / 100) as u8;
        if current {
            *self.requests.entry((rule, target, class)).or_default() += 1;
            let slots = snapshot.targets.len() + 1;
            if self.duration.len() != slots {
                self.duration.resize(slots, Histogram::default());
                self.upstream_duration.resize(slots, Histogram::default());
            }
            let i = (target as usize).min(slots - 1);
            self.duration[i].observe(total.as_secs_f64());
            if let Some(u) = upstream {
                self.upstream_duration[i].observe(u.as_secs_f64());
            }
        } else {
            let (domain, name) = labels(snapshot, rule, target);
            self.labelled.push((domain, name.clone(), class, 1));
            let (mut d, mut up) = (Histogram::default(), Histogram::default());
            d.observe(total.as_secs_f64());
            if let Some(u) = upstream {
                up.observe(u.as_secs_f64());
            }
            self.labelled_latency.push((name, d, up));
        }
    }

    /// Count one completed client TLS handshake.
    pub fn add_handshake(&mut self, took: Duration) {
        self.tls_handshake.observe(took.as_secs_f64());
    }

    /// Add everything counted into `report`, labelled with `snapshot`'s names (the one the
    /// worker runs now).
    pub fn drain_into(self, report: &mut StatsReport, snapshot: &Snapshot) {
        for ((rule, target, class), n) in self.requests {
            let (domain, target) = labels(snapshot, rule, target);
            report.requests.push((domain, target, class, n));
        }
        report.requests.extend(self.labelled);
        let slots = self
            .duration
            .iter()
            .zip(&self.upstream_duration)
            .enumerate();
        for (i, (d, up)) in slots.filter(|(_, (d, _))| d.count() > 0) {
            let (_, name) = labels(snapshot, NONE, i as u32);
            report.duration.push((name.clone(), d.clone()));
            report.upstream_duration.push((name, up.clone()));
        }
        for (name, d, up) in self.labelled_latency {
            report.duration.push((name.clone(), d));
            report.upstream_duration.push((name, up));
        }
        report.tls_handshake.merge(&self.tls_handshake);
    }
}

/// The domain rule and target name that indices of `snapshot` stand for ("" for none).
fn labels(snapshot: &Snapshot, rule: u32, target: u32) -> (String, String) {
    let domain = snapshot.routes.rules().get(rule as usize).cloned();
    let target = snapshot
        .targets
        .get(target as usize)
        .map(|t| t.name.clone());
    (domain.unwrap_or_default(), target.unwrap_or_default())
}
