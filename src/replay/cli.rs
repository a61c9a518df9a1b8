//! `dispa replay`'s command line, and what it makes of it: a replay's [`Options`] or a
//! mock's [`MockOptions`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::client::Target;
use super::diff::{BodyMode, JsonPath, Rules};
use super::mock::{Matching, MockOptions};
use super::plan::Pace;
use super::request::HostMode;
use super::source::Store;
use super::{Options, Selection};
use crate::traffic::Filter;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Where to send the requests: http://HOST[:PORT] or https://HOST[:PORT].
    #[arg(long, required_unless_present = "serve")]
    pub target: Option<String>,
    /// Instead of replaying, answer requests on ADDR with the recorded responses (a mock).
    #[arg(long, value_name = "ADDR", conflicts_with = "target")]
    pub serve: Option<SocketAddr>,

    /// The store: a SQLite file, a postgres:// URL, or a directory / .jsonl.gz file of
    /// the file sink (default: the config's [logging.database]).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Only requests to this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only requests that were answered with this status.
    #[arg(long)]
    pub status: Option<u16>,
    /// Only requests that went to this target (its name in the config).
    #[arg(long, value_name = "NAME")]
    pub recorded_target: Option<String>,
    /// Only requests of the last DURATION ("15m", "2h").
    #[arg(long)]
    pub since: Option<String>,
    /// Only requests from this time on (RFC 3339, a date, or Unix milliseconds).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Only requests before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many requests (the oldest that match).
    #[arg(long, short = 'n')]
    pub limit: Option<usize>,

    /// The recorded pace made this many times faster (0.5 = half as fast).
    #[arg(long, conflicts_with_all = ["rate", "concurrency"])]
    pub speed: Option<f64>,
    /// A fixed rate instead: this many requests a second.
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// As fast as possible, on this many connections at once (at most one per recorded
    /// connection: each recorded connection's requests go in order on one).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// No recorded gap longer than this is waited for.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub max_gap: String,
    /// Start over when done, until --duration or Ctrl-C.
    #[arg(long = "loop")]
    pub repeat: bool,
    /// Stop sending after this long (the mock: stop serving).
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,

    /// The Host sent: "keep" (as recorded), "target" (the target URL's), or a name.
    #[arg(long, default_value = "keep", value_name = "keep|target|NAME")]
    pub host_header: String,
    /// Send requests whose body was not captured in full with what was kept (else
    /// they are skipped and counted).
    #[arg(long)]
    pub allow_truncated: bool,
    /// Don't verify an https target's certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Verify an https target's certificate against this PEM file.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Per request: no complete response within this long is an error.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub timeout: String,

    /// Compare this response header field too (repeat for more).
    #[arg(long = "compare-header", value_name = "NAME")]
    pub compare_headers: Vec<String>,
    /// How bodies are compared.
    #[arg(long, value_enum, default_value = "auto")]
    pub body: BodyMode,
    /// A JSON path left out of body comparisons ($.a.b, items[*].id; repeat for more).
    #[arg(long = "ignore-json-path", value_name = "PATH")]
    pub ignore_json_paths: Vec<String>,
    /// Show this many differences in full.
    #[arg(long, default_value_t = 10)]
    pub show: usize,
    /// Write the JSON report to FILE ("-": standard output).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Exit 1 when more than this share of the requests sent differ or fail (0.01 = 1 %).
    #[arg(long, value_name = "RATIO")]
    pub max_diff_ratio: Option<f64>,

    /// The mock: what besides method and path a request is matched on (comma-separated:
    /// query, body; "" for neither).
    #[arg(long = "match", default_value = "query", value_name = "LIST")]
    pub matching: String,
}

/// What to run.
pub enum Mode {
    Replay(Box<Options>),
    Mock(Box<MockOptions>),
}

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    crate::config::parse_duration_text(text)
        .ok_or_else(|| format!("--{flag}: expected a number and a unit (ms, s, m, h, d): {text:?}"))
}

fn time(flag: &str, text: &Option<String>) -> Result<Option<u64>, String> {
    text.as_deref()
        .map(|t| {
            crate::clock::parse_time_ms(t).ok_or_else(|| {
                format!(
                    "--{flag}: expected 2026-11-30T10:00:00Z, a date, or Unix milliseconds: {t:?}"
                )
            })
        })
        .transpose()
}

impl Args {
    /// `store` is where the config says records are when `--db` is not given.
    pub fn into_mode(self, store: impl FnOnce() -> Result<Store, String>) -> Result<Mode, String> {
        let store = match &self.db {
            Some(db) => Store::named(db),
            None => store()?,
        };
        let filter = Filter {
            host: self.host.clone(),
            status: self.status,
            target: self.recorded_target.clone(),
            since: self
                .since
                .as_deref()
                .map(|s| duration("since", s))
                .transpose()?,
            from_ms: time("from", &self.from)?,
            until_ms: time("until", &self.until)?,
        };
        let selection = Selection {
            store,
            filter,
            limit: self.limit,
        };
        let stop_after = self
            .duration
            .as_deref()
            .map(|d| duration("duration", d))
            .transpose()?;
        if let Some(bind) = self.serve {
            let mut matching = Matching::default();
            for part in self
                .matching
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                match part {
                    "query" => matching.query = true,
                    "body" => matching.body = true,
                    other => return Err(format!("--match: {other:?} is not query or body")),
                }
            }
            return Ok(Mode::Mock(Box::new(MockOptions {
                selection,
                bind,
                matching,
                duration: stop_after,
            })));
        }
        let url = self.target.clone().unwrap_or_default();
        let target = Target::parse(&url, self.insecure, self.ca_file.as_deref())?;
        let pace = match (self.speed, self.rate, self.concurrency) {
            (_, _, Some(0)) => return Err("--concurrency: at least 1".into()),
            (_, _, Some(c)) => Pace::Fast { concurrency: c },
            (_, Some(r), _) if (0.001..=1e9).contains(&r) => Pace::Rate(r),
            (_, Some(r), _) => return Err(format!("--rate: from 0.001 to 1e9 a second: {r}")),
            (Some(s), _, _) if !(0.001..=1e6).contains(&s) => {
                return Err(format!("--speed: from 0.001 to 1e6: {s}"));
            }
            (s, _, _) => Pace::Recorded {
                speed: s.unwrap_or(1.0),
                max_gap: duration("max-gap", &self.max_gap)?,
            },
        };
        if self.repeat && stop_after.is_none() {
            tracing::info!("--loop without --duration: replaying until interrupted");
        }
        let host = match self.host_header.as_str() {
            "keep" => HostMode::Keep,
            "target" => HostMode::Target,
            name => HostMode::Name(name.to_string()),
        };
        let ignore = self
            .ignore_json_paths
            .iter()
            .map(|p| {
                p.parse::<JsonPath>()
                    .map_err(|e| format!("--ignore-json-path: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(r) = self.max_diff_ratio.filter(|r| !(0.0..=1.0).contains(r)) {
            return Err(format!("--max-diff-ratio: between 0 and 1: {r}"));
        }
        Ok(Mode::Replay(Box::new(Options {
            selection,
            target,
            target_url: url,
            pace,
            repeat: self.repeat,
            duration: stop_after,
            host,
            allow_truncated: self.allow_truncated,
            rules: Rules {
                headers: self
                    .compare_headers
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                body: self.body,
                ignore,
            },
            timeout: duration("timeout", &self.timeout)?,
            show: self.show,
            report: self.report,
            max_diff_ratio: self.max_diff_ratio,
        })))
    }
}
