//! The Prometheus endpoint. Workers count on their own (plain per-worker counters and
//! 250 ms reports); this module sums them at scrape time into metric families and encodes
//! them with the `prometheus` crate's text encoder. Metric names live here, once.

use std::collections::HashMap;

use prometheus::core::Collector;
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

use super::State;
use crate::msg::{Histogram, LATENCY_BUCKETS, StatsReport};

/// Totals of every worker report received so far.
#[derive(Debug, Default)]
pub struct Totals {
    /// (domain rule, target name, status class) → requests.
    requests: HashMap<(String, String, u8), u64>,
    /// Requests per worker id.
    per_worker: HashMap<usize, u64>,
    duration: Histogram,
    upstream_duration: Histogram,
}

impl Totals {
    /// Requests answered by target `name` so far.
    pub fn for_target(&self, name: &str) -> u64 {
        self.requests
            .iter()
            .filter(|((_, t, _), _)| t == name)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn add(&mut self, r: StatsReport) {
        let mut n_total = 0;
        for (domain, target, class, n) in r.requests {
            *self.requests.entry((domain, target, class)).or_default() += n;
            n_total += n;
        }
        *self.per_worker.entry(r.worker).or_default() += n_total;
        self.duration.merge(&r.duration);
        self.upstream_duration.merge(&r.upstream_duration);
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name(k.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

fn sample(pairs: &[(&str, &str)], kind: MetricType, value: f64) -> proto::Metric {
    let mut m = proto::Metric::default();
    m.set_label(labels(pairs));
    match kind {
        MetricType::GAUGE => {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        _ => {
            let mut c = proto::Counter::default();
            c.set_value(value);
            m.set_counter(c);
        }
    }
    m
}

fn histogram(h: &Histogram) -> proto::Metric {
    let mut out = proto::Histogram::default();
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
    for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
        cumulative += h.counts[i];
        let mut b = proto::Bucket::default();
        b.set_upper_bound(*bound);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    out.set_bucket(buckets);
    out.set_sample_count(h.count());
    out.set_sample_sum(h.sum_seconds);
    let mut m = proto::Metric::default();
    m.set_histogram(out);
    m
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn class_label(class: u8) -> String {
    match class {
        1..=5 => format!("{class}xx"),
        _ => "none".to_string(),
    }
}

/// The whole exposition, in Prometheus text format.
pub fn render(state: &State) -> String {
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    let t = &state.totals;
    let stats = state.fleet.stats();
    let sum = |f: &dyn Fn(&crate::msg::WorkerStats) -> u64| {
        stats.iter().map(|s| f(s)).sum::<u64>() as f64
    };
    let snap = state.fleet.snapshot();
    let mut fams = Vec::new();

    let mut requests: Vec<_> = t.requests.iter().collect();
    requests.sort();
    let metrics = requests
        .into_iter()
        .map(|((domain, target, class), n)| {
            let domain = if domain.is_empty() {
                "unmatched"
            } else {
                domain
            };
            let target = if target.is_empty() { "none" } else { target };
            let class = class_label(*class);
            let pairs = [
                ("domain", domain),
                ("target", target),
                ("status_class", class.as_str()),
            ];
            sample(&pairs, COUNTER, *n as f64)
        })
        .collect();
    fams.push(family(
        "dispa_requests_total",
        "Requests answered, by matched domain rule, target and status class.",
        COUNTER,
        metrics,
    ));
    fams.push(family(
        "dispa_request_duration_seconds",
        "Time from a complete request head to the end of the response.",
        HISTOGRAM,
        vec![histogram(&t.duration)],
    ));
    fams.push(family(
        "dispa_upstream_duration_seconds",
        "Time from sending a request to a target to its response head.",
        HISTOGRAM,
        vec![histogram(&t.upstream_duration)],
    ));
    let healthy = snap
        .targets
        .iter()
        .map(|tg| {
            sample(
                &[("target", &tg.name)],
                GAUGE,
                f64::from(u8::from(tg.available)),
            )
        })
        .collect();
    fams.push(family(
        "dispa_target_healthy",
        "1 when the target takes new requests (healthy, not cooling down, not drained).",
        GAUGE,
        healthy,
    ));
    let inflight = snap
        .targets
        .iter()
        .map(|tg| sample(&[("target", &tg.name)], GAUGE, tg.inflight.total() as f64))
        .collect();
    fams.push(family(
        "dispa_target_inflight",
        "Requests in flight per target.",
        GAUGE,
        inflight,
    ));
    fams.push(family(
        "dispa_active_connections",
        "Open client connections.",
        GAUGE,
        vec![sample(&[], GAUGE, sum(&|s| s.open_connections.get()))],
    ));
    fams.push(family(
        "dispa_upstream_idle_connections",
        "Idle pooled connections to targets.",
        GAUGE,
        vec![sample(&[], GAUGE, sum(&|s| s.pool_idle.get()))],
    ));
    fams.push(family(
        "dispa_upstream_connections_total",
        "Upstream connections used for requests: newly opened or reused from the pool.",
        COUNTER,
        vec![
            sample(
                &[("result", "new")],
                COUNTER,
                sum(&|s| s.upstream_connects.get()),
            ),
            sample(
                &[("result", "reused")],
                COUNTER,
                sum(&|s| s.upstream_reused.get()),
            ),
        ],
    ));
    fams.push(family(
        "dispa_upstream_errors_total",
        "Upstream failures by kind.",
        COUNTER,
        vec![
            sample(
                &[("kind", "connect")],
                COUNTER,
                sum(&|s| s.upstream_connect_failures.get()),
            ),
            sample(
                &[("kind", "timeout")],
                COUNTER,
                sum(&|s| s.upstream_timeouts.get()),
            ),
            sample(
                &[("kind", "bad_response")],
                COUNTER,
                sum(&|s| s.upstream_bad_responses.get()),
            ),
        ],
    ));
    fams.push(family(
        "dispa_upstream_retries_total",
        "Requests sent again after a reused connection turned out closed.",
        COUNTER,
        vec![sample(&[], COUNTER, sum(&|s| s.upstream_retries.get()))],
    ));
    fams.push(family(
        "dispa_received_bytes_total",
        "Bytes read from clients.",
        COUNTER,
        vec![sample(&[], COUNTER, sum(&|s| s.bytes_from_clients.get()))],
    ));
    fams.push(family(
        "dispa_sent_bytes_total",
        "Bytes written to clients.",
        COUNTER,
        vec![sample(&[], COUNTER, sum(&|s| s.bytes_to_clients.get()))],
    ));
    fams.push(family(
        "dispa_requests_rejected_total",
        "Requests answered by Dispa without forwarding, by reason.",
        COUNTER,
        vec![
            sample(
                &[("reason", "not_intercepted")],
                COUNTER,
                sum(&|s| s.not_intercepted.get()),
            ),
            sample(
                &[("reason", "bad_request")],
                COUNTER,
                sum(&|s| s.rejected_bad_request.get()),
            ),
            sample(
                &[("reason", "limits")],
                COUNTER,
                sum(&|s| s.rejected_limits.get()),
            ),
            sample(
                &[("reason", "timeout")],
                COUNTER,
                sum(&|s| s.rejected_timeout.get()),
            ),
        ],
    ));
    fams.push(family(
        "dispa_connections_refused_total",
        "Client connections answered 503 and closed because limits.max_connections were open.",
        COUNTER,
        vec![sample(&[], COUNTER, sum(&|s| s.refused_connections.get()))],
    ));
    fams.push(family(
        "dispa_upgrades_total",
        "Connections switched to a tunnel after a 101.",
        COUNTER,
        vec![sample(&[], COUNTER, sum(&|s| s.upgrades.get()))],
    ));
    let mut per_worker: Vec<_> = (0..stats.len())
        .map(|w| (w, t.per_worker.get(&w).copied().unwrap_or(0)))
        .collect();
    per_worker.sort();
    fams.push(family(
        "dispa_worker_requests_total",
        "Requests answered per worker (to see imbalance).",
        COUNTER,
        per_worker
            .into_iter()
            .map(|(w, n)| sample(&[("worker", &w.to_string())], COUNTER, n as f64))
            .collect(),
    ));
    let mut checks = Vec::new();
    for tg in &snap.targets {
        if let Some(e) = state.health.get(&(tg.name.clone(), tg.addr)) {
            checks.push(sample(
                &[("target", &tg.name), ("result", "ok")],
                COUNTER,
                e.checks_ok as f64,
            ));
            checks.push(sample(
                &[("target", &tg.name), ("result", "failed")],
                COUNTER,
                e.checks_failed as f64,
            ));
        }
    }
    fams.push(family(
        "dispa_health_checks_total",
        "Active health probes by result.",
        COUNTER,
        checks,
    ));
    fams.push(family(
        "dispa_config_generation",
        "Generation of the configuration the workers run.",
        GAUGE,
        vec![sample(&[], GAUGE, snap.generation as f64)],
    ));
    fams.push(family(
        "dispa_config_reloads_total",
        "Configuration reloads by result.",
        COUNTER,
        vec![
            sample(&[("result", "ok")], COUNTER, state.reloads_ok as f64),
            sample(
                &[("result", "failed")],
                COUNTER,
                state.reloads_failed as f64,
            ),
        ],
    ));
    let ls = state.fleet.logging_stats();
    fams.push(family(
        "dispa_traffic_records_total",
        "Traffic records written, by sink.",
        COUNTER,
        vec![
            sample(&[("sink", "file")], COUNTER, ls.written_file.get() as f64),
            sample(
                &[("sink", "database")],
                COUNTER,
                ls.written_database.get() as f64,
            ),
        ],
    ));
    fams.push(family(
        "dispa_traffic_records_dropped_total",
        "Traffic records dropped because the logging thread's queue was full.",
        COUNTER,
        vec![sample(&[], COUNTER, sum(&|s| s.records_dropped.get()))],
    ));
    fams.push(family(
        "dispa_traffic_records_lost_total",
        "Traffic records a failing sink could not take, by sink.",
        COUNTER,
        vec![
            sample(&[("sink", "file")], COUNTER, ls.lost_file.get() as f64),
            sample(
                &[("sink", "database")],
                COUNTER,
                ls.lost_database.get() as f64,
            ),
        ],
    ));
    fams.push(family(
        "dispa_traffic_sink_errors_total",
        "Failed batch writes, by sink.",
        COUNTER,
        vec![
            sample(&[("sink", "file")], COUNTER, ls.errors_file.get() as f64),
            sample(
                &[("sink", "database")],
                COUNTER,
                ls.errors_database.get() as f64,
            ),
        ],
    ));
    fams.extend(state.process.collect());

    // The text format has no way to show a family without samples.
    fams.retain(|f| !f.get_metric().is_empty());
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&fams, &mut out) {
        tracing::error!("encoding metrics: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}
