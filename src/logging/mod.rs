//! The logging thread: the only place that writes traffic to disk. Workers hand it
//! [`TrafficRecord`]s with `try_send` on a bounded channel (a full channel drops the record
//! and counts it; a worker never waits). It batches them (by count and by time) and writes
//! each batch to the file sink, the SQLite sink, or both. A failing sink is logged at a
//! bounded rate, counted, and retried by itself; it never slows the proxy. When every
//! worker has gone (their senders dropped), it writes what it holds and ends.

pub mod database;
pub mod file;
pub mod postgres;
pub mod record;
pub mod rollup;
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
/// A sink that keeps failing is tried again after 1, 2, 4, then every 8 s.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(8);
/// How long the logging thread sleeps between looks at its queue.
const POLL: Duration = Duration::from_millis(5);
/// At most one error line per sink per this period (the rest are counted).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Which logging thread of how many: recording capacity grows with the worker count by
/// giving each group of workers a logging thread (a shard) of its own, with its own queue,
/// gzip files and SQLite file. Workers send only to their shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The logging thread's name: `dispa-logging`, then `dispa-logging-1`, ...
    fn thread_name(self) -> String {
        match self.index {
            0 => "dispa-logging".into(),
            k => format!("dispa-logging-{k}"),
        }
    }

    /// `settings` as this shard applies them (its own database path).
    fn settings(self, mut settings: Logging) -> Logging {
        settings.database.path = shard_database_path(&settings.database.path, self.index);
        settings
    }
}

/// Shard `index`'s SQLite file: the configured `path` for shard 0; `traffic.s1.db` beside
/// `traffic.db` for shard 1, and so on (`dispa traffic` reads them all).
pub fn shard_database_path(path: &std::path::Path, index: usize) -> std::path::PathBuf {
    if index == 0 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.s{index}.{}", ext.to_string_lossy()),
        None => format!("{stem}.s{index}"),
    };
    path.with_file_name(name)
}

/// How many logging threads serve `workers` workers when `logging.shards` is 0: one per
/// [`WORKERS_PER_SHARD`] (docs/BENCHMARKS.md, "Recording pipeline").
pub fn default_shards(workers: usize) -> usize {
    workers.div_ceil(WORKERS_PER_SHARD).max(1)
}

/// Workers one logging thread keeps up with at full load: a worker answers up to ~100k
/// small requests/s, and one logging thread writes ~390k records/s to both sinks
/// (`pipeline`, below): three leave it headroom. 2 workers: 1 shard, 8: 3, 16: 6, 64: 22.
pub const WORKERS_PER_SHARD: usize = 3;

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
        shard: Shard,
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
            .name(shard.thread_name())
            .spawn(move || {
                let _started = class.start();
                let writer = Writer::new(settings, stats, class.clone(), shard);
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

/// Why a sink failed: the operation and the file it was done on, and the cause.
#[derive(Debug)]
pub struct SinkError {
    pub op: &'static str,
    pub path: std::path::PathBuf,
    pub cause: String,
    /// The store refused these records for what they hold (not for its own state): the
    /// batch would fail the same way forever, so it is counted as lost and the batches
    /// behind it go on.
    pub refused: bool,
}

impl SinkError {
    pub fn new(op: &'static str, path: &std::path::Path, cause: impl std::fmt::Display) -> Self {
        SinkError {
            op,
            path: path.to_path_buf(),
            cause: cause.to_string(),
            refused: false,
        }
    }
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.cause)
    }
}

/// One sink's batches not written yet (waiting while it fails), its failure pacing and
/// its counters. Batches are shared between the sinks (`Arc`): a batch both sinks still
/// need is held once.
struct Backlog {
    name: &'static str,
    /// Each with its sequence number (a PostgreSQL batch's id).
    batches: std::collections::VecDeque<(u64, Arc<Vec<TrafficRecord>>)>,
    records: usize,
    last_logged: Option<Instant>,
    suppressed: u64,
    /// While failing: when to try again (cleared by a reload, to try at once).
    retry_at: Option<Instant>,
    /// The last write failed.
    failing: bool,
    /// Failures in a row (the back-off).
    failures: u32,
}

impl Backlog {
    fn new(name: &'static str) -> Self {
        Backlog {
            name,
            batches: Default::default(),
            records: 0,
            last_logged: None,
            suppressed: 0,
            retry_at: None,
            failing: false,
            failures: 0,
        }
    }

    fn push(&mut self, seq: u64, batch: Arc<Vec<TrafficRecord>>) {
        self.records += batch.len();
        self.batches.push_back((seq, batch));
    }

    /// Write waiting batches oldest first with `write` (unless resting after a failure;
    /// `now == None`: a last try, rest or not), then keep at most `max` records waiting.
    fn write(
        &mut self,
        c: &SinkCounters<'_>,
        max: usize,
        now: Option<Instant>,
        mut write: impl FnMut(u64, &[TrafficRecord]) -> Result<(), SinkError>,
    ) {
        let resting = now.is_some_and(|now| self.retry_at.is_some_and(|t| now < t));
        while !resting && let Some((seq, batch)) = self.batches.front() {
            match write(*seq, batch) {
                Ok(()) => {
                    c.written.add(batch.len() as u64);
                    self.records -= batch.len();
                    self.batches.pop_front();
                    self.retry_at = None;
                    self.failures = 0;
                    if std::mem::take(&mut self.failing) {
                        tracing::info!(sink = self.name, "traffic record sink recovered");
                        c.set_failing(None);
                    }
                }
                Err(e) if e.refused => {
                    c.errors.inc();
                    tracing::error!(
                        sink = self.name,
                        records = batch.len(),
                        "traffic records refused by the store, counted as lost: {e}"
                    );
                    c.lost.add(batch.len() as u64);
                    self.records -= batch.len();
                    self.batches.pop_front();
                }
                Err(e) => {
                    c.errors.inc();
                    self.note(c, &e, now.unwrap_or_else(Instant::now));
                    break;
                }
            }
        }
        while self.records > max
            && let Some((_, oldest)) = self.batches.pop_front()
        {
            self.records -= oldest.len();
            c.lost.add(oldest.len() as u64);
        }
        c.backlog.set(self.records as u64);
    }

    /// Count what is still waiting as lost (at a stop, after the last try).
    fn give_up(&mut self, c: &SinkCounters<'_>) {
        c.lost.add(self.records as u64);
        self.batches.clear();
        self.records = 0;
        c.backlog.set(0);
    }

    /// Rate-limited error line, the next try in [`RETRY_AFTER`] (doubling up to
    /// [`RETRY_AFTER_MAX`] while it keeps failing), the error for /health.
    fn note(&mut self, c: &SinkCounters<'_>, error: &SinkError, now: Instant) {
        let wait = RETRY_AFTER * 2u32.pow(self.failures.min(3));
        self.failures += 1;
        self.retry_at = Some(now + wait.min(RETRY_AFTER_MAX));
        self.failing = true;
        c.set_failing(Some(error.to_string()));
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= ERROR_LOG_EVERY)
        {
            tracing::error!(
                sink = self.name,
                suppressed = self.suppressed,
                "traffic record sink failed: {error}"
            );
            self.last_logged = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

/// One sink's counters in [`LoggingStats`].
struct SinkCounters<'a> {
    stats: &'a LoggingStats,
    written: &'a Counter,
    lost: &'a Counter,
    errors: &'a Counter,
    backlog: &'a Counter,
    database: bool,
}

impl<'a> SinkCounters<'a> {
    fn file(stats: &'a LoggingStats) -> Self {
        SinkCounters {
            stats,
            written: &stats.written_file,
            lost: &stats.lost_file,
            errors: &stats.errors_file,
            backlog: &stats.backlog_file,
            database: false,
        }
    }

    fn database(stats: &'a LoggingStats) -> Self {
        SinkCounters {
            stats,
            written: &stats.written_database,
            lost: &stats.lost_database,
            errors: &stats.errors_database,
            backlog: &stats.backlog_database,
            database: true,
        }
    }

    fn set_failing(&self, error: Option<String>) {
        let mut health = self.stats.failing.lock().unwrap_or_else(|e| e.into_inner());
        if self.database {
            health.database = error;
        } else {
            health.file = error;
        }
    }
}

struct Writer {
    settings: Logging,
    file: file::FileSink,
    db: database::Database,
    /// The next batch's sequence number.
    next_batch: u64,
    stats: Arc<LoggingStats>,
    file_backlog: Backlog,
    db_backlog: Backlog,
    batch: Vec<TrafficRecord>,
    /// The batch being written may pause for the workers (see `SqliteSink::write`).
    yield_cpu: bool,
    class: Arc<BatchClass<TrafficRecord>>,
    shard: Shard,
}

impl Writer {
    fn new(
        settings: Logging,
        stats: Arc<LoggingStats>,
        class: Arc<BatchClass<TrafficRecord>>,
        shard: Shard,
    ) -> Self {
        let settings = shard.settings(settings);
        Writer {
            file: file::FileSink::new(settings.file.clone(), shard.index, shard.count),
            db: database::Database::new(settings.database.clone(), shard.index),
            next_batch: 0,
            shard,
            batch: Vec::with_capacity(settings.batch_size),
            settings,
            stats,
            yield_cpu: true,
            class,
            file_backlog: Backlog::new("file"),
            db_backlog: Backlog::new("database"),
        }
    }

    /// Poll instead of blocking on the channel: a receiver blocked in `recv` makes every
    /// worker's `try_send` a futex wake-up and a context switch (measured: most of the
    /// recording cost). Sleeping between drains leaves senders nothing to wake.
    fn run(mut self, records_rx: Receiver<TrafficRecord>, control_rx: Receiver<LoggingMsg>) {
        let mut deadline = Instant::now() + self.settings.flush_interval;
        let mut next_retention = Instant::now();
        if self.settings.enabled
            && self.settings.sinks.database()
            && let Err(e) = self.db.probe()
        {
            let c = SinkCounters::database(&self.stats);
            self.db_backlog.note(&c, &e, Instant::now());
        }
        loop {
            std::thread::sleep(POLL.min(self.settings.flush_interval));
            let mut finish = false;
            for message in control_rx.try_iter() {
                match message {
                    LoggingMsg::Settings(settings) => {
                        self.drain(&records_rx);
                        self.flush();
                        self.apply(*settings);
                        deadline = Instant::now() + self.settings.flush_interval;
                    }
                    LoggingMsg::Reopen => {
                        self.file.reopen();
                        self.db.reset();
                        tracing::info!("traffic files reopened");
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
            self.rollups_tick(now);
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
        self.write(None);
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
        self.finish_rollups();
        let settings = self.shard.settings(settings);
        // A sink the operator took out: what waits for it will never be written.
        let stats = &*self.stats;
        if !settings.sinks.file() {
            self.file_backlog.give_up(&SinkCounters::file(stats));
            SinkCounters::file(stats).set_failing(None);
        }
        if !settings.sinks.database() {
            self.db_backlog.give_up(&SinkCounters::database(stats));
            SinkCounters::database(stats).set_failing(None);
        }
        self.file.reconfigure(settings.file.clone());
        self.db
            .reconfigure(settings.database.clone(), self.shard.index);
        self.file_backlog.retry_at = None;
        self.db_backlog.retry_at = None;
        self.settings = settings;
    }

    /// Hand the batch to every configured sink and write what each has waiting.
    fn flush(&mut self) {
        self.write(Some(Instant::now()));
    }

    /// `now == None`: the last write before the thread ends (sinks resting after a
    /// failure are tried once more; what they still cannot take is lost, and counted).
    fn write(&mut self, now: Option<Instant>) {
        let sinks = self.settings.sinks;
        if !self.batch.is_empty() {
            let capacity = self.settings.batch_size.min(4096);
            let batch = Arc::new(std::mem::replace(
                &mut self.batch,
                Vec::with_capacity(capacity),
            ));
            let seq = self.next_batch;
            self.next_batch += 1;
            if sinks.file() {
                self.file_backlog.push(seq, batch.clone());
            }
            if sinks.database() {
                self.db_backlog.push(seq, batch);
            }
            self.stats.batches.inc();
        }
        let max = self.settings.max_backlog;
        let stats = &*self.stats;
        let file = &mut self.file;
        self.file_backlog
            .write(&SinkCounters::file(stats), max, now, |_, records| {
                file.write(records, SystemTime::now())
            });
        let (db, yield_cpu) = (&mut self.db, self.yield_cpu);
        self.db_backlog
            .write(&SinkCounters::database(stats), max, now, |seq, records| {
                db.write(seq, records, yield_cpu)
                    .inspect_err(|_| db.reset())
            });
        if now.is_none() {
            self.file_backlog.give_up(&SinkCounters::file(stats));
            self.db_backlog.give_up(&SinkCounters::database(stats));
            self.finish_rollups();
        }
    }

    /// The rollups of rows written, into the database when they are due (not while it
    /// rests after a failure).
    fn rollups_tick(&mut self, now: Instant) {
        let resting = self.db_backlog.retry_at.is_some_and(|t| now < t);
        if self.settings.sinks.database()
            && !resting
            && let Err(e) = self.db.tick()
        {
            tracing::debug!("traffic database {e}");
        }
    }

    /// Write the rollups not written yet into the database their rows are in.
    fn finish_rollups(&mut self) {
        if self.settings.sinks.database()
            && let Err(e) = self.db.finish()
        {
            tracing::warn!("traffic database {e}");
        }
    }

    /// Apply retention to both sinks; returns whether old rows are still left.
    fn retention(&mut self) -> bool {
        if !self.settings.enabled {
            return false;
        }
        let now = SystemTime::now();
        if self.settings.sinks.file()
            && let Err(e) = self.file.retain(now)
        {
            tracing::warn!("traffic file {e}");
        }
        let db_resting = self.db_backlog.retry_at.is_some_and(|t| Instant::now() < t);
        if !self.settings.sinks.database() || db_resting {
            return false;
        }
        match self.db.retain(now) {
            Ok(behind) => behind,
            Err(e) => {
                self.db.reset();
                tracing::warn!("traffic database {e}");
                false
            }
        }
    }
}

/// What would keep the configured sinks from writing, found without writing a record:
/// for `dispa check`. Each problem names the path.
pub fn check_writable(settings: &Logging) -> Vec<String> {
    let mut problems = Vec::new();
    if !settings.enabled {
        return problems;
    }
    if settings.sinks.file() {
        let dir = &settings.file.directory;
        if let Err(e) = writable_dir(dir) {
            problems.push(format!("logging.file.directory {}: {e}", dir.display()));
        }
    }
    if settings.sinks.database()
        && let Some(pg) = &settings.database.postgres
    {
        if let Err(e) = postgres::open(pg) {
            problems.push(format!(
                "logging.database.url {}: {}",
                pg.url,
                postgres::describe(&e)
            ));
        }
    } else if settings.sinks.database() {
        let path = &settings.database.path;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(std::path::Path::new("."));
        let result = writable_dir(dir).and_then(|()| match path.exists() {
            true => std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map(drop),
            false => Ok(()),
        });
        if let Err(e) = result {
            problems.push(format!("logging.database.path {}: {e}", path.display()));
        }
    }
    problems
}

/// `dir` is a directory Dispa can create files in, or could be created: its nearest
/// existing ancestor is a directory that takes a new file (probed with one, removed again).
fn writable_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = std::path::Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            existing.display()
        )));
    }
    let probe = existing.join(format!(".dispa-check-{}", std::process::id()));
    std::fs::File::create(&probe)?;
    std::fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_by_worker_count_and_their_database_files() {
        let shards: Vec<usize> = [1, 2, 3, 4, 8, 16, 64].map(default_shards).to_vec();
        assert_eq!(shards, [1, 1, 1, 2, 3, 6, 22]);
        let path = std::path::Path::new("data/traffic.db");
        assert_eq!(shard_database_path(path, 0), path);
        assert_eq!(
            shard_database_path(path, 2),
            std::path::Path::new("data/traffic.s2.db")
        );
        let bare = std::path::Path::new("records");
        assert_eq!(
            shard_database_path(bare, 1),
            std::path::Path::new("records.s1")
        );
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

    /// CPU time so far of this thread, or of the whole process.
    fn cpu_time(clock: libc::clockid_t) -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to write into.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    fn thread_cpu() -> Duration {
        cpu_time(libc::CLOCK_THREAD_CPUTIME_ID)
    }

    fn process_cpu() -> Duration {
        cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID)
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
            "",
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
            conn: i / 4,
            worker: 0,
            version_minor: 1,
            tls: 0,
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

    /// Time moves on between batches, as it does in a run: the time-ordered indexes then
    /// grow at their end (repeating times would insert all over them).
    fn advance(records: &mut [TrafficRecord]) {
        for r in records.iter_mut() {
            r.start_ms += 1024;
        }
    }

    /// Write `rounds` batches of `records` (time advancing) with the SQLite sink at `path`
    /// and print the cost per record.
    fn time_sqlite_sink(
        path: &std::path::Path,
        records: &mut [TrafficRecord],
        rounds: u32,
        label: &str,
    ) {
        let mut db = sqlite::SqliteSink::new(DatabaseSink {
            path: path.to_path_buf(),
            retention_days: 0,
            postgres: None,
        });
        let t = Clock::start();
        for _ in 0..rounds {
            advance(records);
            db.write(records, false).unwrap();
        }
        t.per(label, rounds * records.len() as u32);
    }

    /// Not a test: `cargo test --release --lib sink_cost -- --ignored --nocapture` prints
    /// the CPU time per record of each sink.
    #[test]
    #[ignore]
    fn sink_cost() {
        let dir = std::env::temp_dir().join(format!("dispa-sink-cost-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut records: Vec<TrafficRecord> = (0..1024).map(record).collect();
        let rounds = 200;
        let mut file = file::FileSink::new(
            FileSink {
                directory: dir.join("logs"),
                max_file_size: 1 << 40,
                rotation: Rotation::Never,
                retention_days: 0,
                max_total_size: 0,
            },
            0,
            1,
        );
        let n = rounds * records.len() as u32;
        let t = Clock::start();
        for _ in 0..rounds {
            file.write(&records, SystemTime::now()).unwrap();
        }
        t.per("file sink", n);
        time_sqlite_sink(&dir.join("t.db"), &mut records, rounds, "sqlite sink");
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

    /// Not a test: `DISPA_PG_URL=postgres://… cargo test --release --lib pg_sink_speed --
    /// --ignored --nocapture` (scripts/pg-speed.sh starts a server for it) sends batches of
    /// 1,024 records to PostgreSQL from this one thread, as a logging thread does, and
    /// prints records per second and this thread's CPU per record.
    #[test]
    #[ignore]
    fn pg_sink_speed() {
        let url = std::env::var("DISPA_PG_URL").expect("DISPA_PG_URL");
        let (redacted, password) = crate::config::split_password(&url);
        let settings = crate::config::Postgres {
            url: redacted,
            password,
            instance: "speed".into(),
            required: false,
        };
        let mut records: Vec<TrafficRecord> = (0..1024).map(record).collect();
        let mut sink = postgres::PgSink::new(settings, 0, 0);
        sink.write(0, &records).unwrap(); // connect, schema, partitions
        let rounds = 500u32;
        let (wall, t) = (Instant::now(), Clock::start());
        for seq in 1..=u64::from(rounds) {
            advance(&mut records);
            sink.write(seq, &records).unwrap();
        }
        let n = rounds * records.len() as u32;
        println!(
            "postgres sink: {:.0} records/s from one thread",
            f64::from(n) / wall.elapsed().as_secs_f64()
        );
        t.per("postgres sink (this thread)", n);
    }

    /// Not a test: `cargo test --release --lib pipeline -- --ignored --nocapture` drives
    /// the real recording path (queues, logging threads, both sinks) from producer threads
    /// that hand over records built beforehand, with 1 and then 2 shards: records per
    /// second (wall) and CPU per record of the logging threads. `PIPELINE_RECORDS` records
    /// per shard (default 400,000).
    #[test]
    #[ignore]
    fn pipeline() {
        let per_shard: usize = std::env::var("PIPELINE_RECORDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(400_000);
        for shards in [1, 2] {
            let dir = std::env::temp_dir()
                .join(format!("dispa-pipeline-{}-{shards}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut settings = crate::config::parse(&format!(
                "[domains]\nintercept_domains = [\"a\"]\n[[targets.targets]]\nname = \"b\"\nurl = \"http://127.0.0.1:9\"\n\
                 [logging]\ntype = \"both\"\nqueue_size = {per_shard}\n\
                 [logging.file]\ndirectory = \"{}\"\n[logging.database]\npath = \"{}\"\n",
                dir.join("logs").display(),
                dir.join("traffic.db").display()
            ))
            .unwrap()
            .logging;
            settings.max_backlog = per_shard;
            let batches: Vec<Vec<TrafficRecord>> = (0..shards)
                .map(|s| {
                    (0..per_shard as u64)
                        .map(|i| record(i * 2 + s as u64))
                        .collect()
                })
                .collect();
            let mut loggers = Vec::new();
            let mut senders = Vec::new();
            let (start, cpu_start) = (Instant::now(), process_cpu());
            for index in 0..shards {
                let (tx, rx) = crate::msg::record_queue(per_shard);
                let shard = Shard {
                    index,
                    count: shards,
                };
                loggers.push(Logger::start(settings.clone(), rx, false, shard).unwrap());
                senders.push(tx);
            }
            let producers: Vec<_> = batches
                .into_iter()
                .zip(senders)
                .map(|(batch, tx)| {
                    std::thread::spawn(move || {
                        for r in batch {
                            assert!(tx.try_send(r), "queue sized for every record");
                        }
                    })
                })
                .collect();
            for p in producers {
                p.join().unwrap();
            }
            for logger in &mut loggers {
                logger.finish();
            }
            let (wall, cpu) = (start.elapsed(), process_cpu() - cpu_start);
            let written: u64 = loggers
                .iter()
                .map(|l| l.link().stats().written_database.get())
                .sum();
            assert_eq!(written as usize, per_shard * shards);
            println!(
                "{shards} shard(s): {written} records in {wall:?}: {:.0} records/s ({:.0} per shard), {:?} process CPU per record (producers included)",
                written as f64 / wall.as_secs_f64(),
                written as f64 / wall.as_secs_f64() / shards as f64,
                cpu / written as u32
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Not a test: `cargo test --release --lib store_cost -- --ignored --nocapture` prints
    /// the CPU per record of narrow SQLite rows (repeated strings interned into a table of
    /// their own, looked up in memory first) with no index, one and four, against the
    /// present sink: what a lighter store would cost.
    #[test]
    #[ignore]
    fn store_cost() {
        use std::collections::HashMap;
        let dir = std::env::temp_dir().join(format!("dispa-store-cost-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let hosts = ["example.com", "api.test.com", "a.test.com", "b.test.com"];
        let mut records: Vec<TrafficRecord> = (0..1024u64)
            .map(|i| {
                let mut r = record(i);
                let mut text = String::new();
                let mut ends = [0u32; RecordText::COUNT];
                let path = format!("/api/v1/items/{}", i % 97);
                for (k, v) in [
                    &format!("6b07c374{i:016x}"),
                    "GET",
                    hosts[i as usize % 4],
                    path.as_str(),
                    "page=2",
                    "curl/7.88.1",
                    "",
                    ["backend1", "backend2"][i as usize % 2],
                ]
                .iter()
                .enumerate()
                {
                    text.push_str(v);
                    ends[k] = text.len() as u32;
                }
                r.text = text;
                r.ends = ends;
                r.client = std::net::IpAddr::from([10, 0, (i % 7) as u8, (i % 200) as u8]);
                r
            })
            .collect();
        let rounds = 200u32;
        let n = rounds * records.len() as u32;
        for (label, indexes) in [
            ("narrow, no index", &[][..]),
            ("narrow, ts index", &["ts_ms"][..]),
            (
                "narrow, 4 indexes",
                &["ts_ms", "host, ts_ms", "status, ts_ms", "target, ts_ms"][..],
            ),
        ] {
            let path = dir.join(format!("{}.db", label.replace([' ', ','], "_")));
            let mut conn = sqlite::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE strings (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
                 CREATE TABLE rows (ts_ms INTEGER NOT NULL, id TEXT NOT NULL, client INTEGER,
                   worker INTEGER, method INTEGER, host INTEGER, path TEXT, query TEXT,
                   version INTEGER, user_agent INTEGER, request_bytes INTEGER, status INTEGER,
                   response_bytes INTEGER, target INTEGER, target_addr INTEGER,
                   duration_us INTEGER, upstream_us INTEGER, upstream_reused INTEGER,
                   retries INTEGER, error INTEGER);",
            )
            .unwrap();
            for (i, cols) in indexes.iter().enumerate() {
                conn.execute_batch(&format!("CREATE INDEX rows_{i} ON rows ({cols})"))
                    .unwrap();
            }
            let mut interned: HashMap<String, i64> = HashMap::new();
            let mut sql = String::from("INSERT INTO rows VALUES ");
            for row in 0..8 {
                if row > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for col in 0..20 {
                    if col > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("?{}", row * 20 + col + 1));
                }
                sql.push(')');
            }
            let t = Clock::start();
            let mut ip = Vec::new();
            for _ in 0..rounds {
                advance(&mut records);
                let tx = conn.transaction().unwrap();
                {
                    let mut intern = |text: &str| -> i64 {
                        if let Some(&id) = interned.get(text) {
                            return id;
                        }
                        tx.execute("INSERT INTO strings (text) VALUES (?1)", [text])
                            .unwrap();
                        let id = tx.last_insert_rowid();
                        interned.insert(text.to_string(), id);
                        id
                    };
                    let mut ids = Vec::with_capacity(records.len() * 6);
                    for r in &records {
                        ip.clear();
                        record::push_ip(&mut ip, r.client);
                        ids.push(intern(std::str::from_utf8(&ip).unwrap()));
                        ids.push(intern(r.field(RecordText::Method)));
                        ids.push(intern(r.field(RecordText::Host)));
                        ids.push(intern(r.field(RecordText::UserAgent)));
                        ids.push(intern(r.field(RecordText::Target)));
                        ids.push(intern("127.0.0.1:3000"));
                    }
                    let mut insert = tx.prepare_cached(&sql).unwrap();
                    for (chunk, idc) in records.chunks(8).zip(ids.chunks(48)) {
                        for (k, r) in chunk.iter().enumerate() {
                            let at = k * 20;
                            let id6 = &idc[k * 6..k * 6 + 6];
                            let values: [&dyn rusqlite::ToSql; 20] = [
                                &(r.start_ms as i64),
                                &r.field(RecordText::Id),
                                &id6[0],
                                &r.worker,
                                &id6[1],
                                &id6[2],
                                &r.field(RecordText::Path),
                                &r.field(RecordText::Query),
                                &r.version_minor,
                                &id6[3],
                                &(r.request_bytes as i64),
                                &r.status,
                                &(r.response_bytes as i64),
                                &id6[4],
                                &id6[5],
                                &(r.duration_us as i64),
                                &r.upstream_us.map(|u| u as i64),
                                &r.reused,
                                &r.retries,
                                &Option::<i64>::None,
                            ];
                            for (i, v) in values.into_iter().enumerate() {
                                insert.raw_bind_parameter(at + i + 1, v).unwrap();
                            }
                        }
                        insert.raw_execute().unwrap();
                    }
                }
                tx.commit().unwrap();
            }
            t.per(label, n);
        }
        time_sqlite_sink(
            &dir.join("present.db"),
            &mut records,
            rounds,
            "present sqlite sink",
        );
        // The present rows with fewer of their indexes.
        let all = [
            "requests_ts",
            "requests_host_ts",
            "requests_status_ts",
            "requests_target_ts",
        ];
        for keep in [&all[..2], &all[..1], &[][..]] {
            let path = dir.join(format!("keep-{}.db", keep.len()));
            let conn = sqlite::open(&path).unwrap();
            for index in all.iter().filter(|i| !keep.contains(i)) {
                conn.execute_batch(&format!("DROP INDEX {index}")).unwrap();
            }
            drop(conn);
            let label = format!("present rows, indexes {keep:?}");
            time_sqlite_sink(&path, &mut records, rounds, &label);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
