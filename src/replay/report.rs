//! What a replay found: counts (matched, differed by kind, errors, skipped), the first
//! differences in full, latency of the recording against the replay, as a short table
//! and as a JSON report.

use std::fmt::Write;
use std::time::Duration;

use serde_json::{Value, json};

use super::client::Failure;
use super::diff::{Differences, Kind};
use super::request::Skip;
use super::source::Recorded;
use crate::logging::rollup::Latency;

/// One exchange shown in full.
#[derive(Debug, Clone)]
pub struct Shown {
    pub id: String,
    pub method: String,
    pub url: String,
    pub recorded_status: u16,
    /// `None` when the replay got no response.
    pub replayed_status: Option<u16>,
    pub kinds: Vec<&'static str>,
    pub details: Vec<String>,
}

/// Counts as the replay goes.
#[derive(Debug, Default)]
pub struct Tally {
    pub selected: u64,
    pub skipped: [u64; Skip::ALL.len()],
    pub sent: u64,
    pub matched: u64,
    pub differed: u64,
    pub by_kind: [u64; Kind::ALL.len()],
    pub errors: [u64; Failure::ALL.len()],
    /// Requests sent later than due by more than [`LATE`] (the replay fell behind).
    pub late: u64,
    pub max_lag: Duration,
    /// Durations of the recorded exchanges replayed, and of their replays: histograms
    /// (within 12.5 %), so a long `--loop` does not grow.
    pub recorded_us: Latency,
    pub replayed_us: Latency,
    pub shown: Vec<Shown>,
    /// How many to show in full.
    pub show: usize,
    /// From the first request sent to the last response.
    pub elapsed: Duration,
    /// CPU time the replay used while sending (not reading the store).
    pub cpu: Duration,
    pub passes: u64,
}

/// Lateness counted as falling behind the schedule.
pub const LATE: Duration = Duration::from_millis(10);

impl Tally {
    pub fn skip(&mut self, why: Skip) {
        self.skipped[why as usize] += 1;
    }

    /// A request sent `lag` after it was due.
    pub fn sent_after(&mut self, lag: Duration) {
        if lag > LATE {
            self.late += 1;
        }
        self.max_lag = self.max_lag.max(lag);
    }

    /// The outcome of replaying `r`.
    pub fn add(&mut self, r: &Recorded, outcome: Result<(Differences, u16, Duration), Failure>) {
        self.sent += 1;
        self.recorded_us.add(r.duration_us.max(0) as u64);
        let shown = |kinds: Vec<&'static str>, replayed_status, details| Shown {
            id: r.id.clone(),
            method: r.method.clone(),
            url: format!("{}{}", r.host, r.target()),
            recorded_status: r.status,
            replayed_status,
            kinds,
            details,
        };
        match outcome {
            Ok((d, _, took)) if d.kinds.is_empty() => {
                self.matched += 1;
                self.replayed_us.add(took.as_micros() as u64);
            }
            Ok((d, status, took)) => {
                self.differed += 1;
                self.replayed_us.add(took.as_micros() as u64);
                for k in &d.kinds {
                    self.by_kind[*k as usize] += 1;
                }
                if self.shown.len() < self.show {
                    let kinds = d.kinds.iter().map(|k| k.label()).collect();
                    self.shown.push(shown(kinds, Some(status), d.details));
                }
            }
            Err(f) => {
                self.errors[f as usize] += 1;
                if self.shown.len() < self.show {
                    let detail = format!("error: {} (no response to compare)", f.label());
                    self.shown.push(shown(vec!["error"], None, vec![detail]));
                }
            }
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// The share of requests sent that differed or got no response (1 when nothing was
    /// sent: a gate must not pass on nothing).
    pub fn diff_ratio(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        (self.differed + self.error_count()) as f64 / self.sent as f64
    }

    /// The JSON report (docs/USER_MANUAL.md, "Replay").
    pub fn to_json(&mut self, target: &str, gate: Option<f64>) -> Value {
        let latency = |h: &Latency| {
            let ms = |q| (h.0.iter().any(|&c| c > 0)).then(|| h.quantile(q) / 1000.0);
            json!({ "p50_ms": ms(0.50), "p99_ms": ms(0.99) })
        };
        let labelled = |labels: &mut dyn Iterator<Item = &'static str>, counts: &[u64]| {
            labels
                .zip(counts)
                .map(|(l, n)| (l.to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
        };
        let secs = self.elapsed.as_secs_f64();
        json!({
            "target": target,
            "selected": self.selected,
            "passes": self.passes,
            "sent": self.sent,
            "matched": self.matched,
            "differed": self.differed,
            "differed_by_kind": labelled(&mut Kind::ALL.iter().map(|k| k.label()), &self.by_kind),
            "errors": self.error_count(),
            "errors_by_kind": labelled(&mut Failure::ALL.iter().map(|f| f.label()), &self.errors),
            "skipped": labelled(&mut Skip::ALL.iter().map(|s| s.label()), &self.skipped),
            "diff_ratio": self.diff_ratio(),
            "max_diff_ratio": gate,
            "passed": gate.is_none_or(|g| self.diff_ratio() <= g),
            "elapsed_s": secs,
            "requests_per_s": self.sent as f64 / secs.max(1e-9),
            "cpu_s": self.cpu.as_secs_f64(),
            "late": self.late,
            "max_lag_ms": self.max_lag.as_secs_f64() * 1000.0,
            "latency": {
                "recorded": latency(&self.recorded_us),
                "replayed": latency(&self.replayed_us),
            },
            "differences": self.shown.iter().map(|s| json!({
                "id": s.id,
                "method": s.method,
                "url": s.url,
                "recorded_status": s.recorded_status,
                "replayed_status": s.replayed_status,
                "kinds": s.kinds,
                "details": s.details,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The short table of a report made by [`Tally::to_json`].
pub fn table(report: &Value) -> String {
    let mut out = String::new();
    let n = |k: &str| report[k].as_u64().unwrap_or(0);
    let pairs = |k: &str| {
        report[k]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| v.as_u64() != Some(0))
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let with = |s: String| if s.is_empty() { s } else { format!(" ({s})") };
    let _ = writeln!(
        out,
        "replayed to {}",
        report["target"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        out,
        "  sent      {:>9}   of {} selected, {} pass(es), {:.1} s, {:.0} req/s",
        n("sent"),
        n("selected"),
        n("passes"),
        report["elapsed_s"].as_f64().unwrap_or(0.0),
        report["requests_per_s"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(out, "  matched   {:>9}", n("matched"));
    let _ = writeln!(
        out,
        "  differed  {:>9}{}",
        n("differed"),
        with(pairs("differed_by_kind"))
    );
    let _ = writeln!(
        out,
        "  errors    {:>9}{}",
        n("errors"),
        with(pairs("errors_by_kind"))
    );
    let skipped: u64 = report["skipped"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    let _ = writeln!(out, "  skipped   {skipped:>9}{}", with(pairs("skipped")));
    if n("late") > 0 {
        let _ = writeln!(
            out,
            "  late      {:>9}   (behind schedule by up to {:.0} ms)",
            n("late"),
            report["max_lag_ms"].as_f64().unwrap_or(0.0)
        );
    }
    let ms = |side: &str, q: &str| {
        report["latency"][side][q]
            .as_f64()
            .map_or("-".to_string(), |v| format!("{v:.3}"))
    };
    let _ = writeln!(out, "  latency ms     p50        p99");
    for side in ["recorded", "replayed"] {
        let _ = writeln!(
            out,
            "    {side:<9} {:>8} {:>10}",
            ms(side, "p50_ms"),
            ms(side, "p99_ms")
        );
    }
    let ratio = report["diff_ratio"].as_f64().unwrap_or(0.0);
    let _ = match report["max_diff_ratio"].as_f64() {
        Some(g) => writeln!(
            out,
            "  diff ratio {ratio:.4} (max {g}): {}",
            if report["passed"].as_bool() == Some(true) {
                "pass"
            } else {
                "FAIL"
            }
        ),
        None => writeln!(out, "  diff ratio {ratio:.4}"),
    };
    if let Some(list) = report["differences"].as_array().filter(|l| !l.is_empty()) {
        let _ = writeln!(out, "first {} difference(s):", list.len());
        for d in list {
            let replayed = d["replayed_status"]
                .as_u64()
                .map_or("-".to_string(), |s| s.to_string());
            let _ = writeln!(
                out,
                "  {} {} {} (id {}): {} -> {}",
                d["method"].as_str().unwrap_or(""),
                d["url"].as_str().unwrap_or(""),
                d["kinds"]
                    .as_array()
                    .map(|k| k
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("+"))
                    .unwrap_or_default(),
                d["id"].as_str().unwrap_or(""),
                d["recorded_status"],
                replayed
            );
            for line in d["details"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "      {}", line.as_str().unwrap_or(""));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_sent_fails_a_gate() {
        let mut t = Tally::default();
        let report = t.to_json("http://127.0.0.1:1", Some(0.5));
        assert_eq!(report["passed"], false);
        assert_eq!(
            report["latency"]["replayed"]["p50_ms"],
            serde_json::Value::Null
        );
        let mut t = Tally::default();
        assert_eq!(t.to_json("http://127.0.0.1:1", None)["passed"], true);
    }
}
