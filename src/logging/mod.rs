//! The logging thread: the only place that writes traffic to disk. Workers hand it
//! [`TrafficRecord`]s with `try_send` on a bounded channel (a full channel drops the record
//! and counts it; a worker never waits). It batches them (by count and by time) and writes
//! each batch to the file sink, the SQLite sink, or both. A failing sink is logged at a
//! bounded rate, counted, and retried by itself; it never slows the proxy. When every
//! worker has gone (their senders dropped), it writes what it holds and ends.

pub mod file;
pub mod record;
pub mod sqlite;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, TryRecvError};

use crate::config::Logging;
use crate::msg::{Counter, LoggingLink, LoggingMsg, LoggingStats, TrafficRecord};
use crate::sched::BatchClass;

/// How often retention runs, and how long a failed sink rests before it is tried again.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
const RETENTION_AGAIN: Duration = Duration::from_secs(1);
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long the logging thread sleeps between looks at its queue.
const POLL: Duration = Duration::from_millis(5);
/// At most one error line per sink per this period (the rest are counted).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// The running logging thread.
pub struct Logger {
    thread: Option<JoinHandle<()>>,
    link: LoggingLink,
}

impl Logger {
    /// Start the logging thread on `records_rx`. `hints`: `server.scheduler_hints` (see
    /// `crate::sched`).
    pub fn start(
        settings: Logging,
        records_rx: Receiver<TrafficRecord>,
        hints: bool,
    ) -> std::io::Result<Logger> {
        let stats = Arc::new(LoggingStats::default());
        let (control_tx, control_rx) = crossbeam_channel::bounded(4);
        let class = Arc::new(BatchClass::new(
            records_rx.clone(),
            settings.queue_size,
            hints,
        ));
        let link = LoggingLink::new(control_tx, stats.clone(), class.clone());
        let thread = std::thread::Builder::new()
            .name("dispa-logging".into())
            .spawn(move || {
                let _started = class.start();
                let writer = Writer::new(settings, stats, class.clone());
                writer.run(records_rx, control_rx);
            })?;
        Ok(Logger {
            thread: Some(thread),
            link,
        })
    }

    /// What the control thread holds of this logging thread.
    pub fn link(&self) -> &LoggingLink {
        &self.link
    }

    /// Write every record queued so far, then end the thread. Call after the workers have
    /// exited, so that nothing more can be queued.
    pub fn finish(&mut self) {
        if let Some(t) = self.thread.take() {
            self.link.finish();
            let _ = t.join();
        }
    }
}

/// Rate-limits one sink's error lines and paces its retries.
#[derive(Default)]
struct Failing {
    last_logged: Option<Instant>,
    suppressed: u64,
    retry_at: Option<Instant>,
}

impl Failing {
    fn note(&mut self, sink: &str, error: &dyn std::fmt::Display, now: Instant) {
        self.retry_at = Some(now + RETRY_AFTER);
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= ERROR_LOG_EVERY)
        {
            tracing::error!(
                sink,
                suppressed = self.suppressed,
                "traffic record sink failed: {error}"
            );
            self.last_logged = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }

    fn resting(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|t| now < t)
    }

    fn recovered(&mut self, sink: &str) {
        if self.retry_at.take().is_some() {
            tracing::info!(sink, "traffic record sink recovered");
        }
    }
}

/// One sink's counters, for [`SinkCounters::write`].
struct SinkCounters<'a> {
    name: &'static str,
    written: &'a Counter,
    lost: &'a Counter,
    errors: &'a Counter,
}

impl SinkCounters<'_> {
    /// Write `n` records with `write` unless the sink is resting after a failure; count
    /// the outcome either way.
    fn write(
        &self,
        failing: &mut Failing,
        n: u64,
        now: Instant,
        write: impl FnOnce() -> Result<(), String>,
    ) {
        if failing.resting(now) {
            self.lost.add(n);
            return;
        }
        match write() {
            Ok(()) => {
                self.written.add(n);
                failing.recovered(self.name);
            }
            Err(e) => {
                self.errors.inc();
                self.lost.add(n);
                failing.note(self.name, &e, now);
            }
        }
    }
}

struct Writer {
    settings: Logging,
    file: file::FileSink,
    db: sqlite::SqliteSink,
    stats: Arc<LoggingStats>,
    file_failing: Failing,
    db_failing: Failing,
    batch: Vec<TrafficRecord>,
    /// The batch being written may pause for the workers (see `SqliteSink::write`).
    yield_cpu: bool,
    class: Arc<BatchClass<TrafficRecord>>,
}

impl Writer {
    fn new(
        settings: Logging,
        stats: Arc<LoggingStats>,
        class: Arc<BatchClass<TrafficRecord>>,
    ) -> Self {
        Writer {
            file: file::FileSink::new(settings.file.clone()),
            db: sqlite::SqliteSink::new(settings.database.clone()),
            batch: Vec::with_capacity(settings.batch_size),
            settings,
            stats,
            yield_cpu: true,
            class,
            file_failing: Failing::default(),
            db_failing: Failing::default(),
        }
    }

    /// Poll instead of blocking on the channel: a receiver blocked in `recv` makes every
    /// worker's `try_send` a futex wake-up and a context switch (measured: most of the
    /// recording cost). Sleeping between drains leaves senders nothing to wake.
    fn run(mut self, records_rx: Receiver<TrafficRecord>, control_rx: Receiver<LoggingMsg>) {
        let mut deadline = Instant::now() + self.settings.flush_interval;
        let mut next_retention = Instant::now();
        loop {
            std::thread::sleep(POLL.min(self.settings.flush_interval));
            let mut finish = false;
            for message in control_rx.try_iter() {
                match message {
                    LoggingMsg::Settings(settings) => {
                        self.drain(&records_rx);
                        self.flush();
                        self.apply(settings);
                        deadline = Instant::now() + self.settings.flush_interval;
                    }
                    LoggingMsg::Finish => finish = true,
                }
            }
            let disconnected = self.drain(&records_rx);
            let now = Instant::now();
            if finish || disconnected {
                break;
            }
            self.class.settle();
            if now >= deadline {
                self.flush();
                deadline = now + self.settings.flush_interval;
            }
            if now >= next_retention {
                // Rows left over (more than a pass deletes): come back soon, not in a minute.
                let behind = self.retention();
                next_retention = now
                    + if behind {
                        RETENTION_AGAIN
                    } else {
                        RETENTION_EVERY
                    };
            }
        }
        self.flush();
    }

    /// Move every queued record into the batch, writing full batches; returns whether
    /// every sender is gone.
    fn drain(&mut self, records_rx: &Receiver<TrafficRecord>) -> bool {
        loop {
            match records_rx.try_recv() {
                Ok(record) => {
                    self.batch.push(record);
                    if self.batch.len() >= self.settings.batch_size {
                        // Falling behind (the queue a quarter full): write without yielding
                        // the CPU, or a busy worker would keep it and the queue overflow.
                        self.yield_cpu = records_rx.len() < self.settings.queue_size / 4;
                        self.flush();
                        self.yield_cpu = true;
                    }
                }
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }

    fn apply(&mut self, settings: Logging) {
        self.file.reconfigure(settings.file.clone());
        self.db.reconfigure(settings.database.clone());
        self.file_failing.retry_at = None;
        self.db_failing.retry_at = None;
        self.settings = settings;
    }

    /// Write the batch to every configured sink.
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let now = Instant::now();
        let n = self.batch.len() as u64;
        let sinks = self.settings.sinks;
        let stats = &*self.stats;
        if sinks.file() {
            let (file, batch) = (&mut self.file, &self.batch);
            let sink = SinkCounters {
                name: "file",
                written: &stats.written_file,
                lost: &stats.lost_file,
                errors: &stats.errors_file,
            };
            sink.write(&mut self.file_failing, n, now, || {
                file.write(batch, SystemTime::now())
                    .map_err(|e| e.to_string())
            });
        }
        if sinks.database() {
            let (db, batch) = (&mut self.db, &self.batch);
            let sink = SinkCounters {
                name: "database",
                written: &stats.written_database,
                lost: &stats.lost_database,
                errors: &stats.errors_database,
            };
            let yield_cpu = self.yield_cpu;
            sink.write(&mut self.db_failing, n, now, || {
                match db.write(batch, yield_cpu) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        db.reset();
                        Err(e.to_string())
                    }
                }
            });
        }
        self.stats.batches.inc();
        self.batch.clear();
    }

    /// Apply retention to both sinks; returns whether old rows are still left.
    fn retention(&mut self) -> bool {
        if !self.settings.enabled {
            return false;
        }
        let now = SystemTime::now();
        if self.settings.sinks.file()
            && let Err(e) = self.file.retain(now)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("traffic file retention: {e}");
        }
        if !self.settings.sinks.database() || self.db_failing.resting(Instant::now()) {
            return false;
        }
        match self.db.retain(now) {
            Ok(behind) => behind,
            Err(e) => {
                self.db.reset();
                tracing::warn!("traffic database retention: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use crate::config::{DatabaseSink, FileSink, Rotation};
    use crate::msg::RecordText;

    /// Wall time and this thread's CPU time since it was made: the CPU time is what a
    /// worker sharing the CPU loses; the wall time also counts waits (a checkpoint's
    /// fsync).
    struct Clock(Instant, Duration);

    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to write into.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    impl Clock {
        fn start() -> Self {
            Clock(Instant::now(), thread_cpu())
        }

        fn per(&self, what: &str, n: u32) {
            let (wall, cpu) = (self.0.elapsed() / n, (thread_cpu() - self.1) / n);
            println!("{what}: {cpu:?} CPU ({wall:?} wall) per record");
        }
    }

    fn record(i: u64) -> TrafficRecord {
        let mut text = String::new();
        let mut ends = [0u32; RecordText::COUNT];
        for (k, v) in [
            "6b07c3740000000000000003",
            "GET",
            "example.com",
            "/api/v1/items",
            "page=2",
            "curl/7.88.1",
            "backend1",
        ]
        .iter()
        .enumerate()
        {
            text.push_str(v);
            ends[k] = text.len() as u32;
        }
        TrafficRecord {
            start_ms: 1_795_670_066_712 + i,
            client: "127.0.0.1".parse().unwrap(),
            worker: 0,
            version_minor: 1,
            status: 200,
            request_bytes: 0,
            response_bytes: 5,
            duration_us: 150 + i % 100,
            upstream_us: Some(90),
            target_addr: Some("127.0.0.1:3000".parse().unwrap()),
            reused: Some(true),
            retries: 0,
            error: None,
            text,
            ends,
            capture: None,
        }
    }

    /// Not a test: `cargo test --release --lib sink_cost -- --ignored --nocapture` prints
    /// the CPU time per record of each sink.
    #[test]
    #[ignore]
    fn sink_cost() {
        let dir = std::env::temp_dir().join(format!("dispa-sink-cost-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut records: Vec<TrafficRecord> = (0..1024).map(record).collect();
        // Time moves on between batches, as it does in a run: the time-ordered indexes
        // then grow at their end (repeating times would insert all over them).
        let advance = |records: &mut Vec<TrafficRecord>| {
            for r in records.iter_mut() {
                r.start_ms += 1024;
            }
        };
        let rounds = 200;
        let mut file = file::FileSink::new(FileSink {
            directory: dir.join("logs"),
            max_file_size: 1 << 40,
            rotation: Rotation::Never,
            retention_days: 0,
            max_total_size: 0,
        });
        let n = rounds * records.len() as u32;
        let t = Clock::start();
        for _ in 0..rounds {
            file.write(&records, SystemTime::now()).unwrap();
        }
        t.per("file sink", n);
        let mut db = sqlite::SqliteSink::new(DatabaseSink {
            path: dir.join("t.db"),
            retention_days: 0,
        });
        let t = Clock::start();
        for _ in 0..rounds {
            advance(&mut records);
            db.write(&records, false).unwrap();
        }
        t.per("sqlite sink", n);
        let mut s = Vec::new();
        let t = Clock::start();
        for _ in 0..rounds {
            s.clear();
            for r in &records {
                record::json_line(&mut s, r);
            }
        }
        t.per("json only", n);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
