//! The PostgreSQL sink: the traffic record of a fleet of Dispas in one database. Written
//! only by the logging threads (each its own connection), never by a worker.
//!
//! Each batch is one transaction: the rows go in with `COPY … FROM STDIN` (binary format:
//! the server took them as fast as the text format, and writing them cost this thread
//! 0.44–0.66 µs a record instead of 0.73–0.78; docs/BENCHMARKS.md),
//! and the batch's id (instance, boot, shard, sequence number) into `dispa_batches`,
//! whose primary key makes a batch sent again after a lost answer (the connection broke
//! during COMMIT) fail as a whole: it is then known to be in, and nothing is written
//! twice. Rows go to partitions by day (`requests_pYYYYMMDD`, created two days ahead);
//! retention drops whole partitions. Schema changes are migrations under
//! `dispa_schema_version`, run under an advisory lock so that several Dispas starting
//! together do not race.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use postgres::{Client, NoTls};

use super::SinkError;
use super::record::{push_header_pairs, push_ip, push_socket_addr};
use crate::clock::ms_of;
use crate::config::Postgres;
use crate::msg::{RecordText, TrafficRecord};

/// The columns of `requests` as a batch's `COPY` sends them.
const COLUMNS: &str = "id, ts_ms, client, worker, method, scheme, host, path, query, version, \
     user_agent, request_bytes, status, response_bytes, target, target_addr, duration_us, \
     upstream_us, upstream_reused, retries, error, request_headers, response_headers, \
     request_body, response_body, sni, tls_version, instance, conn";

/// Schema versions, in order; version N is `MIGRATIONS[N - 1]` applied.
pub const MIGRATIONS: [&str; 4] = [
    // 1: the rows (the columns of SQLite's `requests` view), partitioned by day on ts_ms,
    // and the batch ids that keep a batch from being written twice.
    "CREATE TABLE requests (
        id               text    NOT NULL,
        ts_ms            bigint  NOT NULL,
        client           text    NOT NULL,
        worker           integer NOT NULL,
        method           text    NOT NULL,
        scheme           text    NOT NULL,
        host             text    NOT NULL,
        path             text    NOT NULL,
        query            text    NOT NULL,
        version          text    NOT NULL,
        user_agent       text    NOT NULL,
        request_bytes    bigint  NOT NULL,
        status           integer NOT NULL,
        response_bytes   bigint  NOT NULL,
        target           text    NOT NULL,
        target_addr      text    NOT NULL,
        duration_us      bigint  NOT NULL,
        upstream_us      bigint,
        upstream_reused  integer,
        retries          integer NOT NULL,
        error            text,
        request_headers  text,
        response_headers text,
        request_body     bytea,
        response_body    bytea,
        sni              text,
        tls_version      text
    ) PARTITION BY RANGE (ts_ms);
    CREATE INDEX requests_ts ON requests (ts_ms);
    CREATE TABLE requests_default PARTITION OF requests DEFAULT;
    CREATE TABLE dispa_batches (
        instance text   NOT NULL,
        boot     bigint NOT NULL,
        shard    integer NOT NULL,
        seq      bigint NOT NULL,
        ts_ms    bigint NOT NULL,
        PRIMARY KEY (instance, boot, shard, seq)
    );",
    // 2: which Dispa wrote each row (for a fleet writing one database).
    "ALTER TABLE requests ADD COLUMN instance text NOT NULL DEFAULT '';
     CREATE INDEX requests_instance_ts ON requests (instance, ts_ms);",
    // 3: retention deletes old batch ids by time.
    "CREATE INDEX dispa_batches_ts ON dispa_batches (ts_ms);",
    // 4: the client connection a request came on (`dispa replay` keeps its order).
    "ALTER TABLE requests ADD COLUMN conn bigint;",
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Any constant: the advisory lock Dispas take to change the schema or the partitions.
const SCHEMA_LOCK: i64 = 0x6469_7370_6121;
/// Partitions exist from today to this many days ahead.
const DAYS_AHEAD: i64 = 2;
const DAY_MS: i64 = 86_400_000;

pub struct PgSink {
    settings: Postgres,
    retention_days: u32,
    client: Option<Client>,
    /// The process (its start and pid) and the logging shard: with the sequence number,
    /// a batch's id in `dispa_batches`.
    boot: i64,
    shard: i32,
    /// The day partitions known to exist (Unix days, inclusive; empty when from > until).
    ready: (i64, i64),
    /// The batch's rows in COPY's binary format (reused).
    text: Vec<u8>,
}

impl PgSink {
    pub fn new(settings: Postgres, retention_days: u32, shard: usize) -> Self {
        PgSink {
            settings,
            retention_days,
            client: None,
            boot: batch_origin(),
            shard: shard as i32,
            ready: (i64::MAX, i64::MIN),
            text: Vec::new(),
        }
    }

    pub fn reconfigure(&mut self, settings: Postgres, retention_days: u32) {
        if settings != self.settings {
            self.reset();
        }
        self.settings = settings;
        self.retention_days = retention_days;
    }

    /// Drop the connection; the next batch connects again.
    pub fn reset(&mut self) {
        self.client = None;
        self.ready = (i64::MAX, i64::MIN);
    }

    fn where_(&self) -> &Path {
        Path::new(&self.settings.url)
    }

    pub fn probe(&mut self) -> Result<(), SinkError> {
        self.client().map(drop)
    }

    fn client(&mut self) -> Result<&mut Client, SinkError> {
        if self.client.is_none() {
            let client = connect(&self.settings).map_err(|e| {
                SinkError::new("connect to", Path::new(&self.settings.url), describe(&e))
            })?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Write batch `seq` in one transaction (nothing when it is in already).
    pub fn write(&mut self, seq: u64, records: &[TrafficRecord]) -> Result<(), SinkError> {
        let Some(newest) = records.iter().map(|r| r.start_ms as i64).max() else {
            return Ok(());
        };
        let oldest = records
            .iter()
            .map(|r| r.start_ms as i64)
            .min()
            .unwrap_or(newest);
        self.ensure_partitions(oldest, newest)?;
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        // The binary format's signature, flags and header extension length.
        text.extend_from_slice(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0");
        for r in records {
            push_row(&mut text, r, &self.settings.instance);
        }
        text.extend_from_slice(&(-1i16).to_be_bytes());
        let id = (
            self.settings.instance.clone(),
            self.boot,
            self.shard,
            seq as i64,
        );
        let url = self.where_().to_path_buf();
        let result = copy_batch(self.client()?, &text, &id, newest);
        self.text = text;
        match result {
            Ok(()) => Ok(()),
            // Sent before, and its COMMIT went through though its answer was lost.
            Err(Failed::Db(e))
                if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) =>
            {
                tracing::debug!(seq, "batch was written before; not again");
                Ok(())
            }
            Err(Failed::Db(e)) => {
                // A data exception (class 22: say a character the database's encoding
                // cannot hold) fails this batch every time; anything else may pass.
                let refused = e.code().is_some_and(|c| c.code().starts_with("22"));
                let mut err = SinkError::new("copy into", &url, describe(&e));
                err.refused = refused;
                Err(err)
            }
            Err(Failed::Io(e)) => Err(SinkError::new("copy into", &url, e)),
        }
    }

    /// Partitions for every day from `oldest` (or today, if earlier) to [`DAYS_AHEAD`]
    /// after `newest` (or today) exist: no row of the batch lands in the default partition
    /// (which would keep its day's partition from being created later).
    fn ensure_partitions(&mut self, oldest: i64, newest: i64) -> Result<(), SinkError> {
        let today = ms_of(SystemTime::now()) as i64 / DAY_MS;
        let from = (oldest / DAY_MS).min(today);
        let until = (newest / DAY_MS).max(today) + DAYS_AHEAD;
        if from >= self.ready.0 && until <= self.ready.1 {
            return Ok(());
        }
        let url = self.where_().to_path_buf();
        let mut ddl = format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK});");
        for day in from..=until {
            ddl += &format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF requests FOR VALUES FROM ({}) TO ({});",
                partition_name(day),
                day * DAY_MS,
                (day + 1) * DAY_MS
            );
        }
        let done = self
            .client()?
            .transaction()
            .and_then(|mut tx| tx.batch_execute(&ddl).and_then(|()| tx.commit()));
        if let Err(e) = done {
            self.reset();
            return Err(SinkError::new("create partitions in", &url, describe(&e)));
        }
        self.ready = (from.min(self.ready.0), until.max(self.ready.1));
        Ok(())
    }

    /// Drop the day partitions wholly older than `retention_days` (and the ids of their
    /// batches). Returns false: one pass does it all.
    pub fn retain(&mut self, now: SystemTime) -> Result<bool, SinkError> {
        if self.retention_days == 0 {
            return Ok(false);
        }
        let cutoff_ms = ms_of(now) as i64 - i64::from(self.retention_days) * DAY_MS;
        let url = self.where_().to_path_buf();
        let fail = |e: postgres::Error| SinkError::new("retention in", &url, describe(&e));
        let client = self.client()?;
        let partitions = client
            .query(
                "SELECT c.relname FROM pg_inherits i \
                 JOIN pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_class p ON p.oid = i.inhparent \
                 WHERE p.relname = 'requests' AND c.relname LIKE 'requests_p%'",
                &[],
            )
            .map_err(fail)?;
        for row in partitions {
            let name: String = row.get(0);
            let Some(day) = name.strip_prefix("requests_p").and_then(day_of_name) else {
                continue;
            };
            if (day + 1) * DAY_MS <= cutoff_ms {
                // DROP locks `requests` itself: behind a long read it would hold every
                // COPY (of every Dispa) queued after it. Give up after 2 s; next minute
                // tries again.
                let dropped = client.transaction().and_then(|mut tx| {
                    tx.batch_execute(&format!(
                        "SET LOCAL lock_timeout = '2s'; DROP TABLE IF EXISTS {name}"
                    ))?;
                    tx.commit()
                });
                match dropped {
                    Ok(()) => {
                        tracing::info!(partition = %name, "traffic partition dropped (retention)")
                    }
                    Err(e) => {
                        tracing::warn!(partition = %name, "retention: not dropped yet: {}", describe(&e));
                        return Ok(false);
                    }
                }
            }
        }
        client
            .execute(
                "DELETE FROM requests_default WHERE ts_ms < $1",
                &[&cutoff_ms],
            )
            .map_err(fail)?;
        client
            .execute("DELETE FROM dispa_batches WHERE ts_ms < $1", &[&cutoff_ms])
            .map_err(fail)?;
        Ok(false)
    }
}

enum Failed {
    Db(postgres::Error),
    Io(std::io::Error),
}

impl From<postgres::Error> for Failed {
    fn from(e: postgres::Error) -> Self {
        Failed::Db(e)
    }
}

/// One batch's transaction: its rows by `COPY`, its id into `dispa_batches`.
fn copy_batch(
    client: &mut Client,
    text: &[u8],
    id: &(String, i64, i32, i64),
    newest: i64,
) -> Result<(), Failed> {
    let mut tx = client.transaction()?;
    let sql = format!("COPY requests ({COLUMNS}) FROM STDIN (FORMAT binary)");
    let mut copy = tx.copy_in(&sql)?;
    copy.write_all(text).map_err(Failed::Io)?;
    copy.finish()?;
    tx.execute(
        "INSERT INTO dispa_batches (instance, boot, shard, seq, ts_ms) VALUES ($1, $2, $3, $4, $5)",
        &[&id.0, &id.1, &id.2, &id.3, &newest],
    )?;
    tx.commit()?;
    Ok(())
}

/// Connect (within 5 s, TCP keep-alive on so a dead server is noticed) and bring the
/// schema up to date.
pub fn connect(settings: &Postgres) -> Result<Client, postgres::Error> {
    let mut client = open(settings)?;
    migrate(&mut client)?;
    Ok(client)
}

/// Connect without touching the schema (`dispa traffic`, `dispa check`: a read-only
/// standby or a user who may not create tables can still be read).
pub fn open(settings: &Postgres) -> Result<Client, postgres::Error> {
    let mut config: postgres::Config = settings.url.parse()?;
    if let Some(p) = &settings.password {
        config.password(p);
    }
    // No NOTICEs ("already exists, skipping") in Dispa's log or the CLI's output, and no
    // statement that holds the logging thread for more than 30 s; after the URL's own.
    let ours = "-c client_min_messages=warning -c statement_timeout=30000";
    let options = match config.get_options() {
        Some(theirs) if !theirs.is_empty() => format!("{theirs} {ours}"),
        _ => ours.to_string(),
    };
    // A server that went away silently is noticed within ~30 s (TCP keep-alive and
    // TCP_USER_TIMEOUT), not the kernel's ~11 minutes.
    config
        .connect_timeout(Duration::from_secs(5))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(30))
        .options(&options);
    if config.get_application_name().is_none() {
        config.application_name("dispa");
    }
    config.connect(NoTls)
}

/// Apply the migrations the database has not had, under the advisory lock.
pub fn migrate(client: &mut Client) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
         CREATE TABLE IF NOT EXISTS dispa_schema_version (version integer NOT NULL);"
    ))?;
    let version: i64 = tx
        .query_opt("SELECT max(version)::bigint FROM dispa_schema_version", &[])?
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO dispa_schema_version (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )?;
    }
    tx.commit()
}

/// The error as PostgreSQL gave it (with its code), else the client's text: never the
/// password, which neither holds.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn partition_name(day: i64) -> String {
    let (y, m, d) = crate::clock::civil_from_days(day);
    format!("requests_p{y:04}{m:02}{d:02}")
}

/// `YYYYMMDD` as Unix days.
fn day_of_name(s: &str) -> Option<i64> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (
        s[..4].parse().ok()?,
        s[4..6].parse().ok()?,
        s[6..].parse().ok()?,
    );
    Some(crate::clock::days_from_civil(y, m, d))
}

/// This process in batch ids: its start (Unix ms) times 2^22, plus its pid (two Dispas on
/// one host, of one `instance`, started in the same millisecond still differ).
fn batch_origin() -> i64 {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let ms = ms_of(SystemTime::now()) as i64;
        (ms << 22) | i64::from(std::process::id() & 0x3f_ffff)
    })
}

/// One row of `COPY … FROM STDIN (FORMAT binary)`: the field count, then each field as
/// its length (-1: NULL) and its bytes (text as UTF-8, integers big-endian).
fn push_row(out: &mut Vec<u8>, r: &TrafficRecord, instance: &str) {
    use RecordText::*;
    fn text(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as i32).to_be_bytes());
        out.extend_from_slice(s);
    }
    fn i8b(out: &mut Vec<u8>, n: i64) {
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&n.to_be_bytes());
    }
    fn i4b(out: &mut Vec<u8>, n: i32) {
        out.extend_from_slice(&4i32.to_be_bytes());
        out.extend_from_slice(&n.to_be_bytes());
    }
    fn null(out: &mut Vec<u8>) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
    }
    /// A field whose bytes are written by `fill`, its length filled in after.
    fn framed(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        fill(out);
        let len = (out.len() - at - 4) as i32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&29i16.to_be_bytes());
    text(out, r.field(Id).as_bytes());
    i8b(out, r.start_ms as i64);
    framed(out, |o| push_ip(o, r.client));
    i4b(out, i32::from(r.worker));
    text(out, r.field(Method).as_bytes());
    text(out, if r.tls == 0 { b"http" } else { b"https" });
    text(out, r.field(Host).as_bytes());
    text(out, r.field(Path).as_bytes());
    text(out, r.field(Query).as_bytes());
    text(
        out,
        match r.version_minor {
            1 => b"HTTP/1.1".as_slice(),
            0 => b"HTTP/1.0",
            _ => b"",
        },
    );
    text(out, r.field(UserAgent).as_bytes());
    i8b(out, r.request_bytes as i64);
    i4b(out, i32::from(r.status));
    i8b(out, r.response_bytes as i64);
    text(out, r.field(Target).as_bytes());
    framed(out, |o| {
        if let Some(a) = r.target_addr {
            push_socket_addr(o, a);
        }
    });
    i8b(out, r.duration_us as i64);
    match r.upstream_us {
        Some(u) => i8b(out, u as i64),
        None => null(out),
    }
    match r.reused {
        Some(b) => i4b(out, i32::from(b)),
        None => null(out),
    }
    i4b(out, i32::from(r.retries));
    match r.error {
        Some(e) => text(out, e.label().as_bytes()),
        None => null(out),
    }
    let capture = r.capture.as_deref();
    for pairs in [
        capture.map(|c| &c.request_headers),
        capture.map(|c| &c.response_headers),
    ] {
        match pairs {
            Some(p) => framed(out, |o| push_header_pairs(o, p)),
            None => null(out),
        }
    }
    for body in [
        capture.map(|c| &c.request_body),
        capture.map(|c| &c.response_body),
    ] {
        match body {
            Some(b) => text(out, b),
            None => null(out),
        }
    }
    match r.tls {
        0 => null(out),
        _ => text(out, r.field(Sni).as_bytes()),
    }
    match r.tls {
        13 => text(out, b"TLSv1.3"),
        12 => text(out, b"TLSv1.2"),
        _ => null(out),
    }
    text(out, instance.as_bytes());
    i8b(out, r.conn as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_are_days() {
        let day = crate::clock::days_from_civil(2026, 11, 30);
        assert_eq!(partition_name(day), "requests_p20261130");
        assert_eq!(day_of_name("20261130"), Some(day));
        assert_eq!(day_of_name("2026113x"), None);
    }
}
