//! The Prometheus endpoint. Workers count on their own (plain per-worker counters and
//! 250 ms reports); at scrape time this module sets the `prometheus` crate's metrics in
//! one registry from those totals and encodes them. Metric names live here, once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily};
use prometheus::{
    Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder, process_collector,
};

use super::State;
use crate::msg::{
    Counter, ErrorKind, Histogram, LATENCY_BUCKETS, StatsReport, TlsHandshake, WorkerStats,
};

/// Totals of every worker report received so far.
#[derive(Debug, Default)]
pub struct Totals {
    /// (domain rule, target name, status class) → requests.
    requests: HashMap<(String, String, u8), u64>,
    /// Requests per worker id.
    per_worker: HashMap<usize, u64>,
    /// By target name ("" for none).
    duration: BTreeMap<String, Histogram>,
    upstream_duration: BTreeMap<String, Histogram>,
    tls_handshake: Histogram,
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
        for (target, h) in r.duration {
            self.duration.entry(target).or_default().merge(&h);
        }
        for (target, h) in r.upstream_duration {
            if h.count() > 0 {
                self.upstream_duration.entry(target).or_default().merge(&h);
            }
        }
        self.tls_handshake.merge(&r.tls_handshake);
    }
}

/// Every metric Dispa exports, registered once. The values are totals that workers, the
/// logging thread and the control thread keep themselves, so every scrape sets them anew.
pub struct Metrics {
    registry: Registry,
    counters: Vec<(IntCounterVec, Source)>,
    gauges: Vec<(IntGaugeVec, Source)>,
    latency: LatencyCollector,
}

/// Where a family's samples come from: (label values, value) pairs, read at scrape time.
type Source = fn(&State) -> Vec<(Vec<String>, u64)>;

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let mut counters = Vec::new();
        for (name, help, labels, source) in COUNTERS {
            let vec = IntCounterVec::new(Opts::new(*name, *help), labels).expect("valid metric");
            let _ = registry.register(Box::new(vec.clone()));
            counters.push((vec, *source));
        }
        let mut gauges = Vec::new();
        for (name, help, labels, source) in GAUGES {
            let vec = IntGaugeVec::new(Opts::new(*name, *help), labels).expect("valid metric");
            let _ = registry.register(Box::new(vec.clone()));
            gauges.push((vec, *source));
        }
        let latency = LatencyCollector::new();
        let _ = registry.register(Box::new(latency.clone()));
        let _ = registry.register(Box::new(process_collector::ProcessCollector::for_self()));
        Metrics {
            registry,
            counters,
            gauges,
            latency,
        }
    }

    /// The whole exposition, in Prometheus text format.
    pub fn render(&self, state: &State) -> String {
        for (vec, source) in &self.counters {
            vec.reset();
            for (labels, value) in source(state) {
                let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                vec.with_label_values(&labels).inc_by(value);
            }
        }
        for (vec, source) in &self.gauges {
            vec.reset();
            for (labels, value) in source(state) {
                let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                vec.with_label_values(&labels).set(value as i64);
            }
        }
        self.latency.set(&state.totals);
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("encoding metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Request and upstream latency by target name, and TLS handshake time.
type LatencyTotals = (
    BTreeMap<String, Histogram>,
    BTreeMap<String, Histogram>,
    Histogram,
);

/// The latency histograms: bucket counts summed from worker reports (the crate's own
/// histogram takes single observations, and these were observed on the workers).
#[derive(Clone)]
struct LatencyCollector {
    /// Set before every gather (the control thread only; the lock is never contended):
    /// request and upstream latency by target name, TLS handshakes.
    totals: std::sync::Arc<Mutex<LatencyTotals>>,
    descs: Vec<Desc>,
}

const DURATION: (&str, &str) = (
    "dispa_request_duration_seconds",
    "Time from a complete request head to the end of the response.",
);
const UPSTREAM_DURATION: (&str, &str) = (
    "dispa_upstream_duration_seconds",
    "Time from sending a request to a target to its response head.",
);
const TLS_HANDSHAKE: (&str, &str) = (
    "dispa_tls_handshake_seconds",
    "Time from accepting a TLS client to its completed handshake.",
);

impl LatencyCollector {
    fn new() -> Self {
        let desc = |(name, help): (&str, &str)| {
            Desc::new(name.into(), help.into(), Vec::new(), HashMap::new()).expect("valid name")
        };
        let by_target = |(name, help): (&str, &str)| {
            Desc::new(
                name.into(),
                help.into(),
                vec!["target".into()],
                HashMap::new(),
            )
            .expect("valid name")
        };
        LatencyCollector {
            totals: Default::default(),
            descs: vec![
                by_target(DURATION),
                by_target(UPSTREAM_DURATION),
                desc(TLS_HANDSHAKE),
            ],
        }
    }

    fn set(&self, totals: &Totals) {
        let mut h = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        *h = (
            totals.duration.clone(),
            totals.upstream_duration.clone(),
            totals.tls_handshake.clone(),
        );
    }
}

impl Collector for LatencyCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let h = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let by_target = |m: &BTreeMap<String, Histogram>| -> Vec<proto::Metric> {
            m.iter()
                .map(|(target, hist)| {
                    let mut metric = histogram(hist);
                    let mut label = proto::LabelPair::default();
                    label.set_name("target".into());
                    label.set_value(if target.is_empty() { "none" } else { target }.into());
                    metric.set_label(vec![label]);
                    metric
                })
                .collect()
        };
        [
            (DURATION, by_target(&h.0)),
            (UPSTREAM_DURATION, by_target(&h.1)),
            (TLS_HANDSHAKE, vec![histogram(&h.2)]),
        ]
        .into_iter()
        .map(|((name, help), metrics)| {
            let mut f = MetricFamily::default();
            f.set_name(name.to_string());
            f.set_help(help.to_string());
            f.set_field_type(proto::MetricType::HISTOGRAM);
            f.set_metric(metrics);
            f
        })
        .collect()
    }
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

fn class_label(class: u8) -> String {
    match class {
        1..=5 => format!("{class}xx"),
        _ => "none".to_string(),
    }
}

/// One of the workers' counters.
type WorkerCounter = fn(&WorkerStats) -> u64;

/// One sample without labels: the sum over the workers of one of their counters.
fn workers_sum(state: &State, f: WorkerCounter) -> Vec<(Vec<String>, u64)> {
    vec![(Vec::new(), state.fleet.stats().iter().map(|s| f(s)).sum())]
}

/// Samples with one label, each the sum over the workers of one of their counters.
fn workers_sums(state: &State, parts: &[(&str, WorkerCounter)]) -> Vec<(Vec<String>, u64)> {
    let stats = state.fleet.stats();
    parts
        .iter()
        .map(|(label, f)| (vec![label.to_string()], stats.iter().map(|s| f(s)).sum()))
        .collect()
}

/// Samples with one label per slot of a worker's counter array (`(label, slot)`), each
/// summed over the workers.
fn workers_slots(
    state: &State,
    kinds: &[(&str, usize)],
    slots: fn(&WorkerStats) -> &[Counter],
) -> Vec<(Vec<String>, u64)> {
    let stats = state.fleet.stats();
    kinds
        .iter()
        .map(|(label, i)| {
            let n = stats.iter().map(|w| slots(w)[*i].get()).sum();
            (vec![label.to_string()], n)
        })
        .collect()
}

/// Samples of the logging thread's counters, by sink.
fn by_sink(file: u64, database: u64) -> Vec<(Vec<String>, u64)> {
    vec![
        (vec!["file".into()], file),
        (vec!["database".into()], database),
    ]
}

type Family = (&'static str, &'static str, &'static [&'static str], Source);

const COUNTERS: &[Family] = &[
    (
        "dispa_requests_total",
        "Requests answered, by matched domain rule, target and status class.",
        &["domain", "target", "status_class"],
        |s| {
            let t = &s.totals;
            t.requests
                .iter()
                .map(|((domain, target, class), n)| {
                    let domain = if domain.is_empty() {
                        "unmatched"
                    } else {
                        domain
                    };
                    let target = if target.is_empty() { "none" } else { target };
                    (vec![domain.into(), target.into(), class_label(*class)], *n)
                })
                .collect()
        },
    ),
    (
        "dispa_upstream_connections_total",
        "Upstream connections used for requests: newly opened or reused from the pool.",
        &["result"],
        |s| {
            workers_sums(
                s,
                &[
                    ("new", |w| w.upstream_connects.get()),
                    ("reused", |w| w.upstream_reused.get()),
                ],
            )
        },
    ),
    (
        "dispa_upstream_errors_total",
        "Upstream failures by kind.",
        &["kind"],
        |s| {
            workers_sums(
                s,
                &[
                    ("connect", |w| w.upstream_connect_failures.get()),
                    ("timeout", |w| w.upstream_timeouts.get()),
                    ("bad_response", |w| w.upstream_bad_responses.get()),
                ],
            )
        },
    ),
    (
        "dispa_request_errors_total",
        "Failed requests by the error their traffic record names.",
        &["error"],
        |s| {
            workers_slots(s, &ErrorKind::ALL.map(|k| (k.label(), k as usize)), |w| {
                &w.errors
            })
        },
    ),
    (
        "dispa_tls_handshakes_total",
        "TLS handshakes with clients by result (full, resumed, refused_sni, failed, timeout).",
        &["result"],
        |s| {
            let kinds = TlsHandshake::ALL.map(|k| (k.label(), k as usize));
            workers_slots(s, &kinds, |w| &w.tls_handshakes)
        },
    ),
    (
        "dispa_upstream_retries_total",
        "Requests sent again after a reused connection turned out closed.",
        &[],
        |s| workers_sum(s, |w| w.upstream_retries.get()),
    ),
    (
        "dispa_upstream_queued_total",
        "Requests that waited for a connection to a target at upstream.max_connections_per_target.",
        &[],
        |s| workers_sum(s, |w| w.upstream_queued.get()),
    ),
    (
        "dispa_received_bytes_total",
        "Bytes read from clients.",
        &[],
        |s| workers_sum(s, |w| w.bytes_from_clients.get()),
    ),
    (
        "dispa_sent_bytes_total",
        "Bytes written to clients.",
        &[],
        |s| workers_sum(s, |w| w.bytes_to_clients.get()),
    ),
    (
        "dispa_requests_rejected_total",
        "Requests answered by Dispa without forwarding, by reason.",
        &["reason"],
        |s| {
            workers_sums(
                s,
                &[
                    ("not_intercepted", |w| w.not_intercepted.get()),
                    ("bad_request", |w| w.rejected_bad_request.get()),
                    ("limits", |w| w.rejected_limits.get()),
                    ("timeout", |w| w.rejected_timeout.get()),
                ],
            )
        },
    ),
    (
        "dispa_connections_refused_total",
        "Client connections answered 503 and closed because limits.max_connections were open.",
        &[],
        |s| workers_sum(s, |w| w.refused_connections.get()),
    ),
    (
        "dispa_upgrades_total",
        "Connections switched to a tunnel after a 101.",
        &[],
        |s| workers_sum(s, |w| w.upgrades.get()),
    ),
    (
        "dispa_worker_requests_total",
        "Requests answered per worker (to see imbalance).",
        &["worker"],
        |s| {
            (0..s.fleet.stats().len())
                .map(|w| {
                    (
                        vec![w.to_string()],
                        s.totals.per_worker.get(&w).copied().unwrap_or(0),
                    )
                })
                .collect()
        },
    ),
    (
        "dispa_health_checks_total",
        "Active health probes by result.",
        &["target", "result"],
        |s| {
            let mut out = Vec::new();
            for t in &s.fleet.snapshot().targets {
                if let Some(e) = s.health.get(&(t.name.clone(), t.addr)) {
                    out.push((vec![t.name.clone(), "ok".into()], e.checks_ok));
                    out.push((vec![t.name.clone(), "failed".into()], e.checks_failed));
                }
            }
            out
        },
    ),
    (
        "dispa_config_reloads_total",
        "Configuration reloads by result.",
        &["result"],
        |s| {
            vec![
                (vec!["ok".into()], s.reloads_ok),
                (vec!["failed".into()], s.reloads_failed),
            ]
        },
    ),
    (
        "dispa_traffic_records_total",
        "Traffic records written, by sink.",
        &["sink"],
        |s| {
            let l = s.fleet.logging_totals();
            by_sink(l.written_file, l.written_database)
        },
    ),
    (
        "dispa_traffic_records_dropped_total",
        "Traffic records dropped because the logging thread's queue was full.",
        &[],
        |s| workers_sum(s, |w| w.records_dropped.get()),
    ),
    (
        "dispa_traffic_records_lost_total",
        "Traffic records a failing sink could not take, by sink.",
        &["sink"],
        |s| {
            let l = s.fleet.logging_totals();
            by_sink(l.lost_file, l.lost_database)
        },
    ),
    (
        "dispa_traffic_sink_errors_total",
        "Failed batch writes, by sink.",
        &["sink"],
        |s| {
            let l = s.fleet.logging_totals();
            by_sink(l.errors_file, l.errors_database)
        },
    ),
];

const GAUGES: &[Family] = &[
    (
        "dispa_target_healthy",
        "1 when the target takes new requests (healthy, not cooling down, not drained).",
        &["target"],
        |s| {
            let targets = &s.fleet.snapshot().targets;
            targets
                .iter()
                .map(|t| (vec![t.name.clone()], u64::from(t.available)))
                .collect()
        },
    ),
    (
        "dispa_target_inflight",
        "Requests in flight per target.",
        &["target"],
        |s| {
            let targets = &s.fleet.snapshot().targets;
            targets
                .iter()
                .map(|t| (vec![t.name.clone()], t.inflight.total()))
                .collect()
        },
    ),
    (
        "dispa_traffic_sink_up",
        "1 while the traffic record sink writes, 0 while it fails (see /health for why).",
        &["sink"],
        |s| {
            let h = s.fleet.logging_totals().health;
            by_sink(u64::from(h.file.is_none()), u64::from(h.database.is_none()))
        },
    ),
    (
        "dispa_traffic_records_backlog",
        "Traffic records waiting for a failing sink, by sink.",
        &["sink"],
        |s| {
            let l = s.fleet.logging_totals();
            by_sink(l.backlog_file, l.backlog_database)
        },
    ),
    (
        "dispa_active_connections",
        "Open client connections.",
        &[],
        |s| workers_sum(s, |w| w.open_connections.get()),
    ),
    (
        "dispa_tls_connections",
        "Open client connections over TLS.",
        &[],
        |s| workers_sum(s, |w| w.tls_open.get()),
    ),
    (
        "dispa_upstream_idle_connections",
        "Idle pooled connections to targets.",
        &[],
        |s| workers_sum(s, |w| w.pool_idle.get()),
    ),
    (
        "dispa_config_generation",
        "Generation of the configuration the workers run.",
        &[],
        |s| vec![(Vec::new(), s.fleet.snapshot().generation)],
    ),
];
