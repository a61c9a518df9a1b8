//! `dispa traffic`: read the traffic store (SQLite here, PostgreSQL in `postgres`) — the latest requests with filters, and
//! a summary per target or domain (requests, error rate, p50/p99 latency).

use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

pub mod postgres;

use rusqlite::{Connection, OpenFlags, params_from_iter, types::Value};

use crate::clock::rfc3339_ms;
use crate::logging::rollup::Latency;
use crate::logging::shard_database_path;

/// Which requests to show.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub host: Option<String>,
    pub status: Option<u16>,
    pub target: Option<String>,
    /// Only requests that started within this long before now.
    pub since: Option<Duration>,
    /// Only requests that started at or after this time, and before `until` (Unix ms).
    pub from_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

impl Filter {
    /// The filter on the rows.
    pub(crate) fn clause(&self) -> (String, Vec<Value>) {
        self.clause_on(false)
    }

    /// The same filter on the per-minute rollups: a status as its class, `since` as whole
    /// minutes.
    fn rollup_clause(&self) -> (String, Vec<Value>) {
        self.clause_on(true)
    }

    fn clause_on(&self, rollups: bool) -> (String, Vec<Value>) {
        let mut sql = String::from(" WHERE 1 = 1");
        let mut args = Vec::new();
        if let Some(h) = &self.host {
            sql += " AND host = ?";
            args.push(Value::Text(h.to_ascii_lowercase()));
        }
        if let Some(s) = self.status {
            let (column, value) = match rollups {
                true => ("status_class", s / 100),
                false => ("status", s),
            };
            sql += &format!(" AND {column} = ?");
            args.push(Value::Integer(i64::from(value)));
        }
        if let Some(t) = &self.target {
            sql += " AND target = ?";
            args.push(Value::Text(t.clone()));
        }
        if let Some(since) = self.since {
            let now = Duration::from_millis(crate::clock::unix_ms());
            let from_ms = now.saturating_sub(since).as_millis() as i64;
            let (column, value) = match rollups {
                true => ("minute", from_ms / 60_000),
                false => ("ts_ms", from_ms),
            };
            sql += &format!(" AND {column} >= ?");
            args.push(Value::Integer(value));
        }
        // A minute's rollup holds requests of the whole minute: the minutes that overlap.
        for (bound, op, ms) in [("from", ">=", self.from_ms), ("until", "<", self.until_ms)] {
            let Some(ms) = ms else { continue };
            let (column, value) = match (rollups, bound) {
                (false, _) => ("ts_ms", ms as i64),
                (true, "from") => ("minute", ms as i64 / 60_000),
                (true, _) => ("minute", (ms as i64 + 59_999) / 60_000),
            };
            sql += &format!(" AND {column} {op} ?");
            args.push(Value::Integer(value));
        }
        (sql, args)
    }
}

/// Open the store at `path` read-only. With several logging shards, their files beside it
/// (`traffic.s1.db`, ...) are attached and a TEMP VIEW `requests` joins them all, so every
/// query sees every record.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let schemas = attach_shards(&conn, path)?;
    if schemas.len() > 1 {
        let union = |select: &str, table: &str| {
            schemas
                .iter()
                .map(|s| format!("SELECT {select} FROM {s}.{table}"))
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        };
        // Each shard's rowid as a column, for ordering ties: the view of schema 5 has it;
        // a file not migrated since has a table, whose rowid is named.
        let rows = schemas
            .iter()
            .map(|s| {
                let is_view = conn
                    .query_row(
                        &format!(
                            "SELECT type = 'view' FROM {s}.sqlite_master WHERE name = 'requests'"
                        ),
                        [],
                        |r| r.get::<_, bool>(0),
                    )
                    .unwrap_or(false);
                let select = if is_view { "*" } else { "rowid AS rowid, *" };
                format!("SELECT {select} FROM {s}.requests")
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        conn.execute_batch(&format!("CREATE TEMP VIEW requests AS {rows}"))?;
        if has_rollups(&conn, &schemas) {
            let minutes = union("*", "requests_per_minute");
            conn.execute_batch(&format!(
                "CREATE TEMP VIEW requests_per_minute AS {minutes}"
            ))?;
        }
    }
    Ok(conn)
}

/// Whether every shard's file has the per-minute rollups (schema version 3: Dispa
/// migrates a file when it opens it to write).
fn has_rollups(conn: &Connection, schemas: &[String]) -> bool {
    schemas.iter().all(|s| {
        conn.query_row(
            &format!("SELECT 1 FROM {s}.sqlite_master WHERE name = 'requests_per_minute'"),
            [],
            |_| Ok(()),
        )
        .is_ok()
    })
}

/// The files of shards 1, 2, ... that exist beside `path` (a shard writes its file only
/// once it has records, so one may be missing while a later one is there).
fn shard_files(path: &Path) -> Vec<(usize, std::path::PathBuf)> {
    (1..crate::config::MAX_SHARDS)
        .map(|index| (index, shard_database_path(path, index)))
        .filter(|(_, p)| p.exists())
        .collect()
}

/// Attach the files of the other shards beside `path`; returns the schema name of every
/// shard, `main` first.
fn attach_shards(conn: &Connection, path: &Path) -> rusqlite::Result<Vec<String>> {
    let mut schemas = vec!["main".to_string()];
    for (index, shard) in shard_files(path) {
        let schema = format!("s{index}");
        conn.execute(
            "ATTACH DATABASE ?1 AS ?2",
            rusqlite::params![shard.to_string_lossy(), schema],
        )?;
        schemas.push(schema);
    }
    Ok(schemas)
}

/// The columns one line of `tail` shows (after the rowid).
const LINE_COLUMNS: &str =
    "rowid, ts_ms, status, method, host, path, query, target, duration_us, id, error";

/// A row of [`LINE_COLUMNS`] as its rowid and its line.
fn line(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String)> {
    let shown = Line {
        ts_ms: r.get(1)?,
        status: r.get(2)?,
        method: r.get(3)?,
        host: r.get(4)?,
        path: r.get(5)?,
        query: r.get(6)?,
        target: r.get(7)?,
        duration_us: r.get(8)?,
        id: r.get(9)?,
        error: r.get(10)?,
    };
    Ok((r.get(0)?, shown.to_string()))
}

/// One request as `dispa traffic tail` prints it, whichever store it came from.
pub(crate) struct Line {
    pub ts_ms: i64,
    pub status: i64,
    pub method: String,
    pub host: String,
    pub path: String,
    pub query: String,
    pub target: String,
    pub duration_us: i64,
    pub id: String,
    pub error: Option<String>,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Line { path, query, .. } = self;
        write!(
            f,
            "{} {} {} {}{path}{}{query} -> {} {:.3}ms id={}",
            rfc3339_ms(self.ts_ms as u64),
            self.status,
            self.method,
            self.host,
            if query.is_empty() { "" } else { "?" },
            if self.target.is_empty() {
                "-"
            } else {
                &self.target
            },
            self.duration_us as f64 / 1000.0,
            self.id,
        )?;
        match &self.error {
            Some(e) => write!(f, " error={e}"),
            None => Ok(()),
        }
    }
}

/// The latest `limit` requests matching `filter`, oldest first, with their rowids.
fn latest(
    conn: &Connection,
    filter: &Filter,
    limit: usize,
) -> rusqlite::Result<Vec<(i64, String)>> {
    let filtered = filter.host.is_some() || filter.target.is_some() || filter.status.is_some();
    if filtered && has_rollups_table(conn) {
        return latest_through_rollups(conn, filter, limit);
    }
    let (clause, mut args) = filter.clause();
    let sql = format!(
        "SELECT {LINE_COLUMNS} FROM requests{clause} ORDER BY ts_ms DESC, rowid DESC LIMIT ?"
    );
    args.push(Value::Integer(limit as i64));
    let mut stmt = conn.prepare(&sql)?;
    let mut lines = stmt
        .query_map(params_from_iter(args), line)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    lines.reverse();
    Ok(lines)
}

/// Like [`latest`] for a filter on host, target or status, which the rows have no index
/// for: the rollups say which minutes hold such requests (newest first), and only those
/// minutes' rows are read, through the time index. Rollups are written at most a second
/// after their rows, so the last second's requests may not show here yet.
fn latest_through_rollups(
    conn: &Connection,
    filter: &Filter,
    limit: usize,
) -> rusqlite::Result<Vec<(i64, String)>> {
    let (clause, args) = filter.rollup_clause();
    let mut sql = format!("SELECT DISTINCT minute FROM requests_per_minute{clause}");
    sql += " ORDER BY minute DESC";
    let minutes: Vec<i64> = conn
        .prepare(&sql)?
        .query_map(params_from_iter(args), |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let (clause, args) = filter.clause();
    let mut rows_sql = conn.prepare(&format!(
        "SELECT {LINE_COLUMNS} FROM requests{clause} AND ts_ms >= ? AND ts_ms < ? \
         ORDER BY ts_ms DESC, rowid DESC LIMIT ?"
    ))?;
    let mut lines = Vec::with_capacity(limit);
    for minute in minutes {
        if lines.len() >= limit {
            break;
        }
        let mut args = args.clone();
        args.push(Value::Integer(minute * 60_000));
        args.push(Value::Integer((minute + 1) * 60_000));
        args.push(Value::Integer((limit - lines.len()) as i64));
        let found = rows_sql
            .query_map(params_from_iter(args), line)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        lines.extend(found);
    }
    lines.reverse();
    Ok(lines)
}

/// Whether the store has the per-minute rollups in every shard: the view `open` made over
/// all of them, or the one file's table when there is one shard. (A shard file Dispa has
/// not opened since version 3 has none; then the rows are read.)
fn has_rollups_table(conn: &Connection) -> bool {
    let found = |sql: &str| conn.query_row(sql, [], |_| Ok(())).is_ok();
    if found("SELECT 1 FROM sqlite_temp_master WHERE name = 'requests_per_minute'") {
        return true;
    }
    let attached = found("SELECT 1 FROM pragma_database_list WHERE name NOT IN ('main', 'temp')");
    !attached && found("SELECT 1 FROM sqlite_master WHERE name = 'requests_per_minute'")
}

/// The latest `limit` requests matching `filter`, oldest first, one line each.
pub fn tail(conn: &Connection, filter: &Filter, limit: usize) -> rusqlite::Result<String> {
    let lines = latest(conn, filter, limit)?;
    Ok(lines
        .into_iter()
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `tail -f`: the latest `limit` requests, then every matching request as it is written
/// (polled every [`FOLLOW_POLL`]), given to `emit` line by line while `emit` returns
/// true. Each shard's file is followed by its own rowids and its identity (device and
/// inode): a file replaced at its path (deleted, rotated) is read from its start, the
/// others go on where they were, and a shard file that appears later is read too.
pub fn follow(
    path: &Path,
    filter: &Filter,
    limit: usize,
    mut emit: impl FnMut(&str) -> bool,
) -> rusqlite::Result<()> {
    let mut conn = open(path)?;
    for (_, l) in latest(&conn, filter, limit)? {
        if !emit(&l) {
            return Ok(());
        }
    }
    // From here on, whatever `since` said, everything new that matches, per shard.
    let filter = Filter {
        since: None,
        ..filter.clone()
    };
    let (clause, args) = filter.clause();
    let mut files = shard_identities(path);
    let mut last: HashMap<String, i64> = newest_rowids(&conn, &files);
    loop {
        std::thread::sleep(FOLLOW_POLL);
        let now = shard_identities(path);
        if now != files {
            // A shard file replaced or new: reopen with every file attached; a replaced
            // or new file is read from its start, the others where they were.
            let Ok(reopened) = open(path) else { continue };
            conn = reopened;
            let id_in = |list: &[(String, Option<(u64, u64)>)], schema: &str| {
                list.iter().find(|(s, _)| s == schema).map(|(_, id)| *id)
            };
            last.retain(|schema, _| id_in(&files, schema) == id_in(&now, schema));
            files = now;
        }
        for (schema, _) in &files {
            let sql = format!(
                "SELECT {LINE_COLUMNS} FROM {schema}.requests{clause} AND rowid > ? ORDER BY rowid"
            );
            let Ok(mut stmt) = conn.prepare_cached(&sql) else {
                continue; // not created yet
            };
            let last = last.entry(schema.clone()).or_insert(0);
            let mut args = args.clone();
            args.push(Value::Integer(*last));
            let rows = stmt
                .query_map(params_from_iter(args), line)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (rowid, l) in rows {
                *last = rowid;
                if !emit(&l) {
                    return Ok(());
                }
            }
        }
    }
}

/// Each shard's schema name (as `open` attaches it) and its file's identity.
fn shard_identities(path: &Path) -> Vec<(String, Option<(u64, u64)>)> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let mut files = vec![("main".to_string(), id(path))];
    files.extend(
        shard_files(path)
            .into_iter()
            .map(|(k, p)| (format!("s{k}"), id(&p))),
    );
    files
}

/// The newest rowid of each shard in `files`.
fn newest_rowids(
    conn: &Connection,
    files: &[(String, Option<(u64, u64)>)],
) -> HashMap<String, i64> {
    files
        .iter()
        .map(|(s, _)| {
            let sql = format!("SELECT coalesce(max(rowid), 0) FROM {s}.requests");
            (
                s.clone(),
                conn.query_row(&sql, [], |r| r.get(0)).unwrap_or(0),
            )
        })
        .collect()
}

/// How often `tail -f` looks for new requests.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Run `query` (one or more read-only statements) and print every row, tab-separated,
/// with a header line per statement: what `sqlite3` gives, with every shard attached.
pub fn sql(conn: &Connection, query: &str) -> rusqlite::Result<String> {
    use rusqlite::fallible_iterator::FallibleIterator;
    use rusqlite::types::ValueRef;
    let mut out = String::new();
    let mut batch = rusqlite::Batch::new(conn, query);
    while let Some(mut stmt) = batch.next()? {
        let columns = stmt.column_count();
        let _ = writeln!(
            out,
            "{}",
            stmt.column_names().collect::<Vec<_>>().join("\t")
        );
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let cells: Vec<String> = (0..columns)
                .map(|i| match row.get_ref(i) {
                    Ok(ValueRef::Null) | Err(_) => String::new(),
                    Ok(ValueRef::Integer(n)) => n.to_string(),
                    Ok(ValueRef::Real(f)) => f.to_string(),
                    Ok(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
                    Ok(ValueRef::Blob(b)) => format!("<{} bytes>", b.len()),
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join("\t"));
        }
    }
    Ok(out)
}

/// Group for [`summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Target,
    Domain,
}

/// Requests, 5xx rate and latency percentiles per group, as an aligned table: from the
/// per-minute rollups (no row is read; `--since` counts whole minutes; percentiles within
/// 12.5 %), or from the rows when filtering by exact status or when the store has no
/// rollups yet.
pub fn summary(conn: &Connection, filter: &Filter, by: By) -> rusqlite::Result<String> {
    if has_rollups_table(conn) && filter.status.is_none() {
        return summary_from_rollups(conn, filter, by);
    }
    summary_from_rows(conn, filter, by)
}

/// A group of [`summary`]: its name, requests, answers that were errors (5xx or none),
/// and latency histogram.
type Group = (String, u64, u64, Latency);

fn summary_from_rollups(conn: &Connection, filter: &Filter, by: By) -> rusqlite::Result<String> {
    let column = match by {
        By::Target => "target",
        By::Domain => "host",
    };
    let (clause, args) = filter.rollup_clause();
    let mut sql = format!(
        "SELECT {column}, status_class, requests, latency FROM requests_per_minute{clause}"
    );
    sql += &format!(" ORDER BY {column}");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, u8>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Vec<u8>>(3)?,
        ))
    })?;
    let mut groups: Vec<Group> = Vec::new();
    for row in rows {
        let (key, class, n, latency) = row?;
        if groups.last().is_none_or(|g| g.0 != key) {
            groups.push((key, 0, 0, Latency::default()));
        }
        let g = groups.last_mut().expect("pushed above");
        g.1 += n as u64;
        g.2 += if class == 5 || class == 0 {
            n as u64
        } else {
            0
        };
        g.3.merge(&Latency::from_blob(&latency));
    }
    let mut out = summary_header(by);
    for (key, requests, errors, latency) in &groups {
        summary_line(
            &mut out,
            key,
            *requests,
            *errors,
            latency.quantile(0.50) / 1000.0,
            latency.quantile(0.99) / 1000.0,
        );
    }
    Ok(out)
}

fn summary_header(by: By) -> String {
    format!(
        "{:<32} {:>10} {:>8} {:>10} {:>10}\n",
        match by {
            By::Target => "target",
            By::Domain => "domain",
        },
        "requests",
        "errors",
        "p50 ms",
        "p99 ms"
    )
}

fn summary_line(out: &mut String, key: &str, requests: u64, errors: u64, p50: f64, p99: f64) {
    let name = if key.is_empty() { "(none)" } else { key };
    let _ = writeln!(
        out,
        "{name:<32} {requests:>10} {:>7.1}% {p50:>10.3} {p99:>10.3}",
        errors as f64 * 100.0 / requests.max(1) as f64,
    );
}

fn summary_from_rows(conn: &Connection, filter: &Filter, by: By) -> rusqlite::Result<String> {
    let (clause, args) = filter.clause();
    let column = match by {
        By::Target => "target",
        By::Domain => "host",
    };
    let sql = format!(
        "SELECT {column}, status, duration_us FROM requests{clause} ORDER BY {column}, duration_us"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, u16>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut groups: Vec<(String, Vec<i64>, u64)> = Vec::new();
    for row in rows {
        let (key, status, us) = row?;
        if groups.last().is_none_or(|g| g.0 != key) {
            groups.push((key, Vec::new(), 0));
        }
        let g = groups.last_mut().expect("pushed above");
        g.1.push(us);
        g.2 += u64::from(status >= 500 || status == 0);
    }
    let pct = |sorted: &[i64], p: f64| {
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
    };
    let mut out = summary_header(by);
    for (key, durations, errors) in &groups {
        let n = durations.len() as u64;
        summary_line(
            &mut out,
            key,
            n,
            *errors,
            pct(durations, 0.50),
            pct(durations, 0.99),
        );
    }
    Ok(out)
}
