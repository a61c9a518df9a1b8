//! Every message that crosses threads. Workers receive [`WorkerMsg`] on their own
//! `crossbeam-channel` and never block on it (they poll with `try_recv`).

use std::sync::Arc;
use std::time::Duration;

use crate::config::Snapshot;

/// From the boot/control side to one worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// Run new requests on this snapshot from now on.
    Snapshot(Arc<Snapshot>),
    /// Stop accepting, let in-flight requests finish (at most `drain`), then exit.
    Shutdown { drain: Duration },
}

/// From a worker to boot once its runtime is up (or could not be built).
#[derive(Debug)]
pub enum WorkerReady {
    Up { id: usize, driver: &'static str },
    Failed { id: usize, reason: String },
}

/// From a worker to the control thread, through one channel shared by all workers
/// (`try_send`: a worker never waits for the control thread).
#[derive(Debug)]
pub enum WorkerEvent {
    /// Counts since the worker's previous report.
    Stats(Box<StatsReport>),
    /// A connection attempt to target `id` failed (`ok: false`), or succeeded after failures.
    Target { id: u64, ok: bool },
}

/// Upper bounds (seconds) of the latency histogram buckets; a last bucket is `+Inf`.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram: per-bucket (not cumulative) counts, the last one `+Inf`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub counts: [u64; LATENCY_BUCKETS.len() + 1],
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BUCKETS.partition_point(|&b| b < seconds);
        self.counts[i] += 1;
        self.sum_seconds += seconds;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_seconds += other.sum_seconds;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// One worker's counts since its previous report, labelled by domain rule, target name and
/// status class (`"2xx"`...); an empty domain means not intercepted, an empty target none.
#[derive(Debug, Default)]
pub struct StatsReport {
    pub worker: usize,
    pub requests: Vec<(String, String, u8, u64)>,
    pub duration: Histogram,
    pub upstream_duration: Histogram,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let mut h = Histogram::default();
        h.observe(0.0001);
        h.observe(0.0002);
        h.observe(10.0);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[LATENCY_BUCKETS.len()], 1);
        assert_eq!(h.count(), 3);
    }

    /// A record with nothing in it, for tests of the queue and its readers.
    pub(crate) fn empty_record() -> TrafficRecord {
        TrafficRecord {
            start_ms: 0,
            client: std::net::Ipv4Addr::LOCALHOST.into(),
            worker: 0,
            version_minor: 1,
            status: 200,
            request_bytes: 0,
            response_bytes: 0,
            duration_us: 0,
            upstream_us: None,
            target_addr: None,
            reused: None,
            retries: 0,
            error: None,
            text: String::new(),
            ends: [0; RecordText::COUNT],
            capture: None,
        }
    }

    #[test]
    fn the_record_queue_refuses_records_beyond_its_capacity_and_takes_more_once_drained() {
        let (tx, rx) = record_queue(3);
        for _ in 0..3 {
            assert!(tx.try_send(empty_record()));
        }
        assert!(!tx.try_send(empty_record()));
        rx.try_recv().unwrap();
        assert!(tx.try_send(empty_record()));
        assert_eq!(rx.len(), 3);
    }
}

/// The sending end of the records queue (see [`record_queue`]).
#[derive(Clone)]
pub struct RecordSender {
    tx: crossbeam_channel::Sender<TrafficRecord>,
    capacity: usize,
}

impl RecordSender {
    /// Queue `record` unless `capacity` records are waiting already (or the logging
    /// thread has gone); returns whether it was queued. Never blocks.
    pub fn try_send(&self, record: TrafficRecord) -> bool {
        self.tx.len() < self.capacity && self.tx.send(record).is_ok()
    }
}

/// The queue from the workers to the logging thread: bounded like a `bounded` channel
/// (several workers may overshoot `capacity` by a record each), but its memory follows
/// what is queued. crossbeam's array channel allocates and touches a slot for every record
/// it could hold (65,536 × 208 bytes: 13 MiB resident from the start, recording on or
/// off); its list channel allocates blocks of 31 as records come and frees them as they
/// are taken.
pub fn record_queue(capacity: usize) -> (RecordSender, crossbeam_channel::Receiver<TrafficRecord>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (RecordSender { tx, capacity }, rx)
}

/// One request as the traffic record keeps it, from a worker to the logging thread. The
/// texts share one allocation: `text[ends[i-1]..ends[i]]` is field `i` of [`RecordText`].
#[derive(Debug, Clone)]
pub struct TrafficRecord {
    /// Start of the request (complete head), Unix milliseconds.
    pub start_ms: u64,
    pub client: std::net::IpAddr,
    pub worker: u16,
    /// 0 or 1 for HTTP/1.0 and HTTP/1.1; `u8::MAX` when the head could not be parsed.
    pub version_minor: u8,
    /// Status sent to the client, 0 when none was.
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub duration_us: u64,
    pub upstream_us: Option<u64>,
    pub target_addr: Option<std::net::SocketAddr>,
    /// The upstream connection came from the pool (`None`: no upstream).
    pub reused: Option<bool>,
    pub retries: u8,
    /// Why the request failed, when it did (`"connect"`, `"timeout"`, ...).
    pub error: Option<&'static str>,
    pub text: String,
    pub ends: [u32; RecordText::COUNT],
    /// Headers and body bytes kept for `[logging.capture]` hosts; `None` otherwise.
    pub capture: Option<Box<Captured>>,
}

/// What `[logging.capture]` keeps of one exchange: selected fields as they were on the
/// wire (name, value; in order, duplicates kept) and the first bytes of both bodies
/// (decoded from chunked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
}

impl Captured {
    /// Keep the fields of `fields` (spans into `buf`) whose names are in `names`
    /// (lowercase; `"*"` keeps all).
    pub fn keep_fields(
        out: &mut Vec<(String, String)>,
        buf: &[u8],
        fields: &crate::http::parse::Fields,
        names: &[String],
    ) {
        let all = names.iter().any(|n| n == "*");
        for f in &fields.list {
            let name = f.name.of(buf);
            if all
                || names
                    .iter()
                    .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
            {
                out.push((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(f.value.of(buf)).into_owned(),
                ));
            }
        }
    }
}

/// The text fields of a [`TrafficRecord`], in storage order.
#[derive(Debug, Clone, Copy)]
pub enum RecordText {
    Id = 0,
    Method,
    Host,
    Path,
    Query,
    UserAgent,
    Target,
}

impl RecordText {
    pub const COUNT: usize = 7;
}

impl TrafficRecord {
    pub fn field(&self, f: RecordText) -> &str {
        let i = f as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}
