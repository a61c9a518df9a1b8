//! The SQLite sink: WAL mode, one transaction and one cached prepared statement per batch,
//! a schema version with migrations, and retention that deletes old rows in small chunks
//! so the writer is never held up for long. Schema: docs/DATABASE.md.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, ToSql, params};

use super::SinkError;
use super::record::{push_header_pairs, push_ip, push_socket_addr};
use crate::config::DatabaseSink as Settings;
use crate::msg::{ErrorKind, RecordText, TrafficRecord};

/// Each entry migrates from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE requests (
        id              TEXT    NOT NULL,
        ts_ms           INTEGER NOT NULL,
        client          TEXT    NOT NULL,
        worker          INTEGER NOT NULL,
        method          TEXT    NOT NULL,
        scheme          TEXT    NOT NULL,
        host            TEXT    NOT NULL,
        path            TEXT    NOT NULL,
        query           TEXT    NOT NULL,
        version         TEXT    NOT NULL,
        user_agent      TEXT    NOT NULL,
        request_bytes   INTEGER NOT NULL,
        status          INTEGER NOT NULL,
        response_bytes  INTEGER NOT NULL,
        target          TEXT    NOT NULL,
        target_addr     TEXT    NOT NULL,
        duration_us     INTEGER NOT NULL,
        upstream_us     INTEGER,
        upstream_reused INTEGER,
        retries         INTEGER NOT NULL,
        error           TEXT
    );
    CREATE INDEX requests_ts ON requests (ts_ms);
    CREATE INDEX requests_host_ts ON requests (host, ts_ms);
    CREATE INDEX requests_status_ts ON requests (status, ts_ms);
    CREATE INDEX requests_target_ts ON requests (target, ts_ms);
",
    "
    ALTER TABLE requests ADD COLUMN request_headers TEXT;
    ALTER TABLE requests ADD COLUMN response_headers TEXT;
    ALTER TABLE requests ADD COLUMN request_body BLOB;
    ALTER TABLE requests ADD COLUMN response_body BLOB;
",
    // Version 3: per-minute rollups (`super::rollup`), filled from the rows there are.
    super::rollup::SCHEMA,
    // Version 4: the rows keep only their time index. An index costs the logging thread
    // 0.35-0.6 us per record (BENCHMARKS.md, "What one record costs"); a filtered
    // `dispa traffic tail` finds its minutes through the rollups instead.
    "
    DROP INDEX IF EXISTS requests_host_ts;
    DROP INDEX IF EXISTS requests_status_ts;
    DROP INDEX IF EXISTS requests_target_ts;
    CREATE INDEX requests_per_minute_host ON requests_per_minute (host, minute);
    CREATE INDEX requests_per_minute_target ON requests_per_minute (target, minute);
",
    // Version 5: narrow rows. The strings that repeat (client, method, host, user agent,
    // target and its address, error) are kept once in `strings` and the rows hold their
    // ids; `requests` becomes a view with the same columns as before, so every query
    // works as it did. A row costs the logging thread ~0.4 us less (BENCHMARKS.md).
    "
    CREATE TABLE strings (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
    CREATE TABLE request_rows (
        id              TEXT    NOT NULL,
        ts_ms           INTEGER NOT NULL,
        client          INTEGER NOT NULL,
        worker          INTEGER NOT NULL,
        method          INTEGER NOT NULL,
        host            INTEGER NOT NULL,
        path            TEXT    NOT NULL,
        query           TEXT    NOT NULL,
        version         INTEGER NOT NULL,
        user_agent      INTEGER NOT NULL,
        request_bytes   INTEGER NOT NULL,
        status          INTEGER NOT NULL,
        response_bytes  INTEGER NOT NULL,
        target          INTEGER NOT NULL,
        target_addr     INTEGER NOT NULL,
        duration_us     INTEGER NOT NULL,
        upstream_us     INTEGER,
        upstream_reused INTEGER,
        retries         INTEGER NOT NULL,
        error           INTEGER,
        request_headers  TEXT,
        response_headers TEXT,
        request_body     BLOB,
        response_body    BLOB
    );
    INSERT OR IGNORE INTO strings (text)
        SELECT client FROM requests UNION SELECT method FROM requests
        UNION SELECT host FROM requests UNION SELECT user_agent FROM requests
        UNION SELECT target FROM requests UNION SELECT target_addr FROM requests
        UNION SELECT error FROM requests WHERE error IS NOT NULL;
    INSERT INTO request_rows
        SELECT r.id, r.ts_ms, c.id, r.worker, m.id, h.id, r.path, r.query,
               CASE r.version WHEN 'HTTP/1.1' THEN 1 WHEN 'HTTP/1.0' THEN 0 ELSE -1 END,
               u.id, r.request_bytes, r.status, r.response_bytes, t.id, a.id, r.duration_us,
               r.upstream_us, r.upstream_reused, r.retries, e.id, r.request_headers,
               r.response_headers, r.request_body, r.response_body
        FROM requests r
        JOIN strings c ON c.text = r.client JOIN strings m ON m.text = r.method
        JOIN strings h ON h.text = r.host JOIN strings u ON u.text = r.user_agent
        JOIN strings t ON t.text = r.target JOIN strings a ON a.text = r.target_addr
        LEFT JOIN strings e ON e.text = r.error
        ORDER BY r.rowid;
    DROP TABLE requests;
    CREATE INDEX request_rows_ts ON request_rows (ts_ms);
    -- Each string looked up only when a query uses its column (a join would be made for
    -- every row of every scan: 6 s instead of 0.8 for an average over 10 million rows).
    CREATE VIEW requests AS
        SELECT r.rowid AS rowid, r.id, r.ts_ms,
               (SELECT text FROM strings WHERE id = r.client) AS client,
               r.worker,
               (SELECT text FROM strings WHERE id = r.method) AS method,
               'http' AS scheme,
               (SELECT text FROM strings WHERE id = r.host) AS host,
               r.path, r.query,
               CASE r.version WHEN 1 THEN 'HTTP/1.1' WHEN 0 THEN 'HTTP/1.0' ELSE '' END
                   AS version,
               (SELECT text FROM strings WHERE id = r.user_agent) AS user_agent,
               r.request_bytes, r.status, r.response_bytes,
               (SELECT text FROM strings WHERE id = r.target) AS target,
               (SELECT text FROM strings WHERE id = r.target_addr) AS target_addr,
               r.duration_us, r.upstream_us, r.upstream_reused, r.retries,
               (SELECT text FROM strings WHERE id = r.error) AS error,
               r.request_headers, r.response_headers, r.request_body, r.response_body
        FROM request_rows r;
",
    // Version 6: TLS (issue 14). `tls` is NULL over plain TCP, else 12 or 13; `sni` the
    // name the client asked for (a `strings` id). The view gains `sni` and
    // `tls_version`, and `scheme` says https for requests that came over TLS.
    "
    ALTER TABLE request_rows ADD COLUMN tls INTEGER;
    ALTER TABLE request_rows ADD COLUMN sni INTEGER;
    DROP VIEW requests;
    CREATE VIEW requests AS
        SELECT r.rowid AS rowid, r.id, r.ts_ms,
               (SELECT text FROM strings WHERE id = r.client) AS client,
               r.worker,
               (SELECT text FROM strings WHERE id = r.method) AS method,
               CASE WHEN r.tls IS NULL THEN 'http' ELSE 'https' END AS scheme,
               (SELECT text FROM strings WHERE id = r.host) AS host,
               r.path, r.query,
               CASE r.version WHEN 1 THEN 'HTTP/1.1' WHEN 0 THEN 'HTTP/1.0' ELSE '' END
                   AS version,
               (SELECT text FROM strings WHERE id = r.user_agent) AS user_agent,
               r.request_bytes, r.status, r.response_bytes,
               (SELECT text FROM strings WHERE id = r.target) AS target,
               (SELECT text FROM strings WHERE id = r.target_addr) AS target_addr,
               r.duration_us, r.upstream_us, r.upstream_reused, r.retries,
               (SELECT text FROM strings WHERE id = r.error) AS error,
               r.request_headers, r.response_headers, r.request_body, r.response_body,
               (SELECT text FROM strings WHERE id = r.sni) AS sni,
               CASE r.tls WHEN 13 THEN 'TLSv1.3' WHEN 12 THEN 'TLSv1.2' END AS tls_version
        FROM request_rows r;
",
    // Version 7: the client connection a request came on (`conn`, issue 18): `dispa
    // replay` keeps the requests of one connection in order on one connection. NULL in
    // rows written before.
    "
    ALTER TABLE request_rows ADD COLUMN conn INTEGER;
    DROP VIEW requests;
    CREATE VIEW requests AS
        SELECT r.rowid AS rowid, r.id, r.ts_ms,
               (SELECT text FROM strings WHERE id = r.client) AS client,
               r.worker,
               (SELECT text FROM strings WHERE id = r.method) AS method,
               CASE WHEN r.tls IS NULL THEN 'http' ELSE 'https' END AS scheme,
               (SELECT text FROM strings WHERE id = r.host) AS host,
               r.path, r.query,
               CASE r.version WHEN 1 THEN 'HTTP/1.1' WHEN 0 THEN 'HTTP/1.0' ELSE '' END
                   AS version,
               (SELECT text FROM strings WHERE id = r.user_agent) AS user_agent,
               r.request_bytes, r.status, r.response_bytes,
               (SELECT text FROM strings WHERE id = r.target) AS target,
               (SELECT text FROM strings WHERE id = r.target_addr) AS target_addr,
               r.duration_us, r.upstream_us, r.upstream_reused, r.retries,
               (SELECT text FROM strings WHERE id = r.error) AS error,
               r.request_headers, r.response_headers, r.request_body, r.response_body,
               (SELECT text FROM strings WHERE id = r.sni) AS sni,
               CASE r.tls WHEN 13 THEN 'TLSv1.3' WHEN 12 THEN 'TLSv1.2' END AS tls_version,
               r.conn
        FROM request_rows r;
",
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The columns of an insert, in the order [`bind_row`] binds them (`scheme` is a constant).
const COLUMNS: &str = "id, ts_ms, client, worker, method, host, path, query, version, user_agent, \
     request_bytes, status, response_bytes, target, target_addr, duration_us, upstream_us, \
     upstream_reused, retries, error, request_headers, response_headers, request_body, \
     response_body, tls, sni, conn";
/// Parameters per row.
const PARAMS: usize = 27;

/// Rows per `INSERT` statement: a statement's setup (cursors on the table and its
/// indexes, the bindings' reset) is paid once for all of them. `OR FAIL` because a
/// multi-row `INSERT` with the default `ABORT` keeps a statement journal to undo its
/// earlier rows, which costs more than the rows (and no row here can violate a
/// constraint). Measured with `sink_cost` (docs/BENCHMARKS.md, "Changes measured").
const ROWS_PER_INSERT: usize = 8;

/// `INSERT INTO request_rows (...) VALUES (...), (...)` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT OR FAIL INTO request_rows ({COLUMNS}) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        let params: Vec<String> = (1..=PARAMS)
            .map(|i| format!("?{}", row * PARAMS + i))
            .collect();
        sql.push_str(&format!("({})", params.join(", ")));
    }
    sql
}

/// The ids of strings already in the file's `strings` table (a cache of it: on a miss the
/// string is added, in the batch's transaction). Forgotten when the file changes, or when
/// a batch fails (its transaction took the new strings back with it).
#[derive(Default)]
struct Strings {
    ids: std::collections::HashMap<Box<str>, i64>,
}

impl Strings {
    /// Strings kept in memory at most (client addresses can be many).
    const MAX: usize = 1 << 20;

    fn id(&mut self, tx: &Connection, text: &str) -> rusqlite::Result<i64> {
        if let Some(&id) = self.ids.get(text) {
            return Ok(id);
        }
        tx.prepare_cached("INSERT OR IGNORE INTO strings (text) VALUES (?1)")?
            .execute([text])?;
        let id = tx
            .prepare_cached("SELECT id FROM strings WHERE text = ?1")?
            .query_row([text], |r| r.get(0))?;
        if self.ids.len() >= Self::MAX {
            self.ids.clear();
        }
        self.ids.insert(text.into(), id);
        Ok(id)
    }
}

/// Text this module formatted itself (addresses, JSON): always UTF-8.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// `path` with `suffix` appended (`traffic.db-wal`).
fn sidecar(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// Where the file with device and inode `id`, open in this process, is now (`None`: it
/// was deleted; an error: this process's open files could not be listed).
fn open_path_of(id: (u64, u64)) -> std::io::Result<Option<std::path::PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    for fd in std::fs::read_dir("/proc/self/fd")? {
        let link = fd?.path();
        if std::fs::metadata(&link).is_ok_and(|m| (m.dev(), m.ino()) == id) {
            let target = std::fs::read_link(&link)?;
            let deleted = target.to_string_lossy().ends_with(" (deleted)");
            return Ok((!deleted).then_some(target));
        }
    }
    Ok(None)
}

/// A database moved away while open: its WAL, still at the old path, goes beside it and is
/// checkpointed into it, with the rollups of its rows. (Nothing to move when the WAL went
/// with it.)
fn settle_moved(
    wal: &Path,
    shm: &Path,
    moved: &Path,
    rollups: &super::rollup::Pending,
) -> Result<(), String> {
    if wal.exists() {
        std::fs::rename(wal, sidecar(moved, "-wal")).map_err(|e| format!("move its WAL: {e}"))?;
        let _ = std::fs::remove_file(shm);
    }
    let mut c = Connection::open(moved).map_err(|e| e.to_string())?;
    rollups.write_committed(&mut c).map_err(|e| e.to_string())?;
    c.pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .map_err(|e| e.to_string())
}

/// Device and inode of the file at `path`, if there is one.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// How often the rollups of the rows written are merged into the table.
const ROLLUP_EVERY: Duration = Duration::from_secs(1);

/// Rows inserted between two offers of the CPU to other threads (see [`SqliteSink::write`]).
const YIELD_EVERY: usize = 64;

/// Rows deleted per retention statement, and statements per pass.
const RETENTION_CHUNK: usize = 2000;
const RETENTION_CHUNKS_PER_PASS: usize = 10;

/// Open (creating directories and the file) and migrate to [`SCHEMA_VERSION`].
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    }
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_millis(200))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // WAL + NORMAL: a batch survives a process crash; only an OS crash may lose the last.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Rows and index entries are appended in time order, so a batch touches few pages:
    // a 4 MiB page cache costs the same per record as 32 MiB (sink_cost) and keeps the
    // process small. The WAL is copied back (with its fsyncs) every ~40 MB
    // instead of every 4 MB.
    conn.pragma_update(None, "cache_size", -4000)?;
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidQuery);
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if i == 2 {
            super::rollup::backfill(&tx)?;
        }
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

pub struct SqliteSink {
    settings: Settings,
    conn: Option<Connection>,
    /// Rollups of the rows written, not in the table yet (written every [`ROLLUP_EVERY`],
    /// in the transaction of a batch or by [`SqliteSink::tick`], and by
    /// [`SqliteSink::finish`]).
    rollups: super::rollup::Pending,
    rollups_written: std::time::Instant,
    /// The `strings` ids of the file open now.
    strings: Strings,
    /// Device and inode of the database file opened: when the path no longer names it
    /// (deleted, moved), the next batch opens (and creates) the file at the path again.
    id: (u64, u64),
}

/// Reused buffers for the text a row's columns are formatted into.
#[derive(Default)]
struct RowText {
    client: Vec<u8>,
    target_addr: Vec<u8>,
    request_headers: Vec<u8>,
    response_headers: Vec<u8>,
}

/// Bind record `r` to parameters `at + 1 ..= at + PARAMS` of `insert`, its repeated
/// strings as ids of `strings` (added in `tx` when new).
fn bind_row(
    insert: &mut rusqlite::CachedStatement<'_>,
    at: usize,
    r: &TrafficRecord,
    text: &mut RowText,
    tx: &Connection,
    strings: &mut Strings,
) -> rusqlite::Result<()> {
    use RecordText::*;
    text.client.clear();
    push_ip(&mut text.client, r.client);
    text.target_addr.clear();
    if let Some(a) = r.target_addr {
        push_socket_addr(&mut text.target_addr, a);
    }
    let client = strings.id(tx, ascii(&text.client))?;
    let method = strings.id(tx, r.field(Method))?;
    let host = strings.id(tx, r.field(Host))?;
    let user_agent = strings.id(tx, r.field(UserAgent))?;
    let target = strings.id(tx, r.field(Target))?;
    let target_addr = strings.id(tx, ascii(&text.target_addr))?;
    let error = match r.error {
        Some(e) => Some(strings.id(tx, e.label())?),
        None => None,
    };
    let (tls, sni) = match r.tls {
        0 => (None, None),
        v => (Some(v), Some(strings.id(tx, r.field(Sni))?)),
    };
    let version: i64 = match r.version_minor {
        0 => 0,
        1 => 1,
        _ => -1,
    };
    let capture = r.capture.as_deref();
    if let Some(c) = capture {
        text.request_headers.clear();
        push_header_pairs(&mut text.request_headers, &c.request_headers);
        text.response_headers.clear();
        push_header_pairs(&mut text.response_headers, &c.response_headers);
    }
    let values: [&dyn ToSql; PARAMS] = [
        &r.field(Id),
        &(r.start_ms as i64),
        &client,
        &r.worker,
        &method,
        &host,
        &r.field(Path),
        &r.field(Query),
        &version,
        &user_agent,
        &(r.request_bytes as i64),
        &r.status,
        &(r.response_bytes as i64),
        &target,
        &target_addr,
        &(r.duration_us as i64),
        &r.upstream_us.map(|u| u as i64),
        &r.reused,
        &r.retries,
        &error,
        &capture.map(|_| ascii(&text.request_headers)),
        &capture.map(|_| ascii(&text.response_headers)),
        &capture.map(|c| &c.request_body[..]),
        &capture.map(|c| &c.response_body[..]),
        &tls,
        &sni,
        &(r.conn as i64),
    ];
    for (i, v) in values.into_iter().enumerate() {
        insert.raw_bind_parameter(at + i + 1, v)?;
    }
    Ok(())
}

impl SqliteSink {
    pub fn new(settings: Settings) -> Self {
        SqliteSink {
            settings,
            conn: None,
            rollups: Default::default(),
            rollups_written: std::time::Instant::now(),
            strings: Strings::default(),
            id: (0, 0),
        }
    }

    pub fn reconfigure(&mut self, settings: Settings) {
        if settings.path != self.settings.path {
            self.reset();
        }
        self.settings = settings;
    }

    /// Close the connection (after an error, or SIGUSR1); the next batch opens it again.
    pub fn reset(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // The next file's `strings` are its own.
        self.strings = Strings::default();
        let path = self.settings.path.clone();
        if file_id(&path) == Some(self.id) {
            // The rollups of its rows go into it; closing checkpoints the WAL, as usual.
            if let Err(e) = self.rollups.write_committed(&mut conn) {
                tracing::warn!(path = %path.display(), "rollups not written: {e}");
            }
            self.rollups.clear();
            return;
        }
        // SQLite neither writes to nor checkpoints a database file that was moved or
        // deleted while open: the rows of the last batches stay in `<path>-wal`, which a
        // new file at `path` would take for its own. Give the WAL (and the rollups of its
        // rows) to the file it belongs to.
        let now_at = open_path_of(self.id);
        drop(conn);
        let (wal, shm) = (sidecar(&path, "-wal"), sidecar(&path, "-shm"));
        let settled = match &now_at {
            Ok(Some(moved)) => {
                tracing::warn!(from = %path.display(), to = %moved.display(), "traffic database moved: its last rows follow it, a new one starts");
                settle_moved(&wal, &shm, moved, &self.rollups)
            }
            Ok(None) => {
                // Deleted: its rows (and their rollups) went with it.
                tracing::warn!(path = %path.display(), "traffic database deleted: creating it again");
                Ok(())
            }
            Err(e) => Err(format!("cannot tell where it went: {e}")),
        };
        self.rollups.clear();
        if let Err(e) = settled {
            tracing::error!(path = %path.display(), "the last rows of the moved traffic database are lost: {e}");
        }
        // Whatever happened, no WAL of the old file may stay where the new one will be.
        for sidecar in [&wal, &shm] {
            if sidecar.exists() && std::fs::remove_file(sidecar).is_err() {
                let aside = format!(
                    "{}.orphaned-{}",
                    sidecar.display(),
                    crate::clock::unix_secs()
                );
                let _ = std::fs::rename(sidecar, aside);
            }
        }
    }

    /// The open connection, opened (and the file created) when there is none or when the
    /// path no longer names the file it has open.
    fn conn(&mut self) -> Result<&mut Connection, SinkError> {
        if self.conn.is_some() && file_id(&self.settings.path) != Some(self.id) {
            self.reset();
        }
        let path = &self.settings.path;
        if self.conn.is_none() {
            let conn = open(path).map_err(|e| SinkError::new("open", path, e))?;
            self.id = file_id(path).unwrap_or_default();
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("opened above"))
    }

    /// Insert `records` in one transaction; `yield_cpu`: offer the CPU to other threads
    /// every [`YIELD_EVERY`] rows (off when the logging thread is behind).
    pub fn write(&mut self, records: &[TrafficRecord], yield_cpu: bool) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let path = self.settings.path.clone();
        let due = self.rollups_written.elapsed() >= ROLLUP_EVERY;
        self.conn()?;
        let conn = self.conn.as_mut().expect("opened above");
        let strings = &mut self.strings;
        let inserted = Self::insert(
            conn,
            records,
            yield_cpu,
            due.then_some(&self.rollups),
            strings,
        );
        if let Err(e) = inserted {
            // The transaction took the strings it added back with it.
            self.strings = Strings::default();
            return Err(SinkError::new("insert into", &path, e));
        }
        // Only once the rows are in: a batch that failed is counted when it is written.
        if due {
            self.rollups.clear();
            self.rollups_written = std::time::Instant::now();
        }
        self.rollups.add(records);
        Ok(())
    }

    /// Write the rollups not written yet (at a stop).
    pub fn finish(&mut self) -> Result<(), SinkError> {
        if self.rollups.is_empty() {
            return Ok(());
        }
        let path = self.settings.path.clone();
        self.conn()?;
        let conn = self.conn.as_mut().expect("opened above");
        self.rollups
            .write_committed(conn)
            .map_err(|e| SinkError::new("rollups into", &path, e))?;
        self.rollups.clear();
        self.rollups_written = std::time::Instant::now();
        Ok(())
    }

    /// Write the rollups not written yet once [`ROLLUP_EVERY`] has passed since the last
    /// time, also when no batch comes (traffic stopped): `summary` is never more than
    /// about a second behind the rows.
    pub fn tick(&mut self) -> Result<(), SinkError> {
        if self.rollups_written.elapsed() < ROLLUP_EVERY {
            return Ok(());
        }
        self.finish()
    }

    fn insert(
        conn: &mut Connection,
        records: &[TrafficRecord],
        yield_cpu: bool,
        rollups: Option<&super::rollup::Pending>,
        strings: &mut Strings,
    ) -> rusqlite::Result<()> {
        static MANY: OnceLock<String> = OnceLock::new();
        static ONE: OnceLock<String> = OnceLock::new();
        let many = MANY.get_or_init(|| insert_sql(ROWS_PER_INSERT));
        let one = ONE.get_or_init(|| insert_sql(1));
        let tx = conn.transaction()?;
        {
            let mut insert_many = tx.prepare_cached(many)?;
            let mut text = RowText::default();
            let mut chunks = records.chunks_exact(ROWS_PER_INSERT);
            for (i, chunk) in chunks.by_ref().enumerate() {
                if yield_cpu && i > 0 && (i * ROWS_PER_INSERT).is_multiple_of(YIELD_EVERY) {
                    // A batch is ~2 ms of CPU; a worker sharing this CPU would wait for
                    // the scheduler to take it away. Every ~0.1 ms a runnable worker gets
                    // the CPU back; the transaction goes on. (The caller turns this off
                    // when the queue is filling up: then catching up comes first.)
                    std::thread::yield_now();
                }
                for (k, r) in chunk.iter().enumerate() {
                    bind_row(&mut insert_many, k * PARAMS, r, &mut text, &tx, strings)?;
                }
                insert_many.raw_execute()?;
            }
            let mut insert_one = tx.prepare_cached(one)?;
            for r in chunks.remainder() {
                bind_row(&mut insert_one, 0, r, &mut text, &tx, strings)?;
                insert_one.raw_execute()?;
            }
        }
        if let Some(rollups) = rollups {
            rollups.write(&tx)?;
        }
        tx.commit()
    }

    /// Delete rows older than `retention_days`, a chunk at a time; returns whether a
    /// full pass was not enough (call again soon).
    pub fn retain(&mut self, now: SystemTime) -> Result<bool, SinkError> {
        if self.settings.retention_days == 0 {
            return Ok(false);
        }
        let max_age = Duration::from_secs(u64::from(self.settings.retention_days) * 86_400);
        let cutoff = now
            .checked_sub(max_age)
            .map_or(0, |t| crate::clock::ms_of(t) as i64);
        let path = self.settings.path.clone();
        let conn = self.conn()?;
        for _ in 0..RETENTION_CHUNKS_PER_PASS {
            let n = conn
                .execute(
                    "DELETE FROM request_rows WHERE rowid IN \
                     (SELECT rowid FROM request_rows WHERE ts_ms < ?1 ORDER BY ts_ms LIMIT ?2)",
                    params![cutoff, RETENTION_CHUNK as i64],
                )
                .map_err(|e| SinkError::new("retention: delete from", &path, e))?;
            if n < RETENTION_CHUNK {
                conn.execute(
                    "DELETE FROM requests_per_minute WHERE minute < ?1",
                    params![cutoff.div_euclid(60_000)],
                )
                .map_err(|e| SinkError::new("retention: delete rollups from", &path, e))?;
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Fill the store at `path` with `n` made-up records spread over the last `span` (20
/// hosts, 4 targets, 1,000 paths, 2 % 5xx), through this sink in batches of 4,096, rollups
/// included: `dispa traffic generate`, for measuring queries on a large store.
pub fn generate(path: &Path, n: u64, span: Duration) -> Result<(), SinkError> {
    if path.exists() {
        // Never made-up records in a real store.
        return Err(SinkError::new(
            "generate into",
            path,
            "it exists: give a new path",
        ));
    }
    let mut sink = SqliteSink::new(Settings {
        path: path.to_path_buf(),
        retention_days: 0,
        postgres: None,
    });
    let end = crate::clock::unix_ms();
    let start = end.saturating_sub(span.as_millis() as u64);
    let step = (end - start).max(1) as f64 / n.max(1) as f64;
    let mut batch = Vec::with_capacity(4096);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        // xorshift: the same store from run to run.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        batch.push(made_up_record(i, start + (i as f64 * step) as u64, x));
        if batch.len() == 4096 || i + 1 == n {
            // The rollups are written with the batches (at most every second) and at the end.
            sink.write(&batch, false)?;
            batch.clear();
        }
    }
    sink.finish()
}

fn made_up_record(i: u64, ts_ms: u64, x: u64) -> TrafficRecord {
    let mut text = String::with_capacity(128);
    let mut ends = [0u32; RecordText::COUNT];
    let fields = [
        format!("{:08x}00{:014x}", (ts_ms / 1000) as u32, i),
        ["GET", "GET", "GET", "POST"][(x % 4) as usize].to_string(),
        format!("h{}.example.com", x % 20),
        format!("/api/v1/items/{}", (x >> 8) % 1000),
        if x.is_multiple_of(3) {
            format!("page={}", x % 9)
        } else {
            String::new()
        },
        "curl/8.5.0".to_string(),
        String::new(),
        format!("backend{}", (x >> 16) % 4),
    ];
    for (k, v) in fields.iter().enumerate() {
        text.push_str(v);
        ends[k] = text.len() as u32;
    }
    let status = match (x >> 24) % 100 {
        0 | 1 => 502,
        2..=4 => 404,
        _ => 200,
    };
    TrafficRecord {
        start_ms: ts_ms,
        client: std::net::IpAddr::from([10, 0, ((x >> 32) % 256) as u8, ((x >> 40) % 256) as u8]),
        conn: i / 8,
        worker: ((x >> 48) % 4) as u16,
        version_minor: 1,
        tls: 0,
        status,
        request_bytes: 0,
        response_bytes: 512 + (x >> 20) % 4096,
        duration_us: 100 + (x >> 12) % 20_000,
        upstream_us: Some(80 + (x >> 12) % 19_000),
        target_addr: Some(std::net::SocketAddr::from((
            [10, 1, 0, ((x >> 16) % 4) as u8],
            8080,
        ))),
        reused: Some(!x.is_multiple_of(10)),
        retries: 0,
        error: (status == 502).then_some(ErrorKind::Connect),
        text,
        ends,
        capture: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_file_is_migrated_and_keeps_its_rows() {
        let path = std::env::temp_dir().join(format!("dispa-migrate-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO requests (id, ts_ms, client, worker, method, scheme, host, path, query, \
                 version, user_agent, request_bytes, status, response_bytes, target, target_addr, \
                 duration_us, retries) VALUES ('old', 1, '::1', 0, 'GET', 'http', 'a', '/', '', \
                 'HTTP/1.1', '', 0, 200, 0, '', '', 5, 0)",
                [],
            )
            .unwrap();
        }
        let conn = open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let (id, headers): (String, Option<String>) = conn
            .query_row("SELECT id, request_headers FROM requests", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((id.as_str(), headers), ("old", None));
        // Version 3 filled the rollups from the rows that were there.
        let minute: (i64, String, i64, i64) = conn
            .query_row(
                "SELECT minute, host, status_class, requests FROM requests_per_minute",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(minute, (0, "a".to_string(), 2, 1));
        drop(conn);
        // A file from a newer Dispa is refused, not changed.
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(open(&path).is_err());
        let _ = std::fs::remove_file(&path);
    }
}
