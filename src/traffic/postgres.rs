//! `dispa traffic` against a PostgreSQL store (`--db postgres://…`, or the config's
//! `[logging.database] url`): the same lines and tables as from SQLite, computed from
//! the rows (PostgreSQL has no per-minute rollups; its time index and partitions keep a
//! `--since` query to the days it names).

use std::fmt::Write;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, Row};

use super::{By, Filter, Line, summary_header, summary_line};
use crate::config::Postgres;

/// Connect for reading (the schema is left as it is).
pub fn open(store: &Postgres) -> Result<Client, String> {
    crate::logging::postgres::open(store)
        .map_err(|e| format!("{}: {}", store.url, crate::logging::postgres::describe(&e)))
}

/// A store given as a URL on the command line: its password from the URL or `PGPASSWORD`.
pub fn from_url(url: &str) -> Postgres {
    let (redacted, password) = crate::config::split_password(url);
    Postgres {
        url: redacted,
        password: password.or_else(|| std::env::var("PGPASSWORD").ok()),
        instance: String::new(),
        required: false,
    }
}

pub(crate) type Args = Vec<Box<dyn ToSql + Sync>>;

impl Filter {
    pub(crate) fn pg_clause(&self) -> (String, Args) {
        let mut sql = String::from(" WHERE true");
        let mut args: Args = Vec::new();
        let mut arg = |sql: &mut String, column: &str, v: Box<dyn ToSql + Sync>| {
            args.push(v);
            let _ = write!(sql, " AND {column} ${}", args.len());
        };
        if let Some(h) = &self.host {
            arg(&mut sql, "host =", Box::new(h.to_ascii_lowercase()));
        }
        if let Some(s) = self.status {
            arg(&mut sql, "status =", Box::new(i32::from(s)));
        }
        if let Some(t) = &self.target {
            arg(&mut sql, "target =", Box::new(t.clone()));
        }
        if let Some(since) = self.since {
            let now = Duration::from_millis(crate::clock::unix_ms());
            let from_ms = now.saturating_sub(since).as_millis() as i64;
            arg(&mut sql, "ts_ms >=", Box::new(from_ms));
        }
        if let Some(ms) = self.from_ms {
            arg(&mut sql, "ts_ms >=", Box::new(ms as i64));
        }
        if let Some(ms) = self.until_ms {
            arg(&mut sql, "ts_ms <", Box::new(ms as i64));
        }
        (sql, args)
    }
}

pub(crate) fn refs(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a.as_ref()).collect()
}

const LINE_COLUMNS: &str =
    "ts_ms, status, method, host, path, query, target, duration_us, id, error";

/// A row of [`LINE_COLUMNS`] as `dispa traffic tail` prints it (as from SQLite).
fn line(r: &Row) -> String {
    Line {
        ts_ms: r.get(0),
        status: i64::from(r.get::<_, i32>(1)),
        method: r.get(2),
        host: r.get(3),
        path: r.get(4),
        query: r.get(5),
        target: r.get(6),
        duration_us: r.get(7),
        id: r.get(8),
        error: r.get(9),
    }
    .to_string()
}

/// The latest `limit` requests matching `filter`, oldest first, one line each.
pub fn tail(client: &mut Client, filter: &Filter, limit: usize) -> Result<String, postgres::Error> {
    let (clause, mut args) = filter.pg_clause();
    args.push(Box::new(limit as i64));
    let sql = format!(
        "SELECT {LINE_COLUMNS} FROM requests{clause} ORDER BY ts_ms DESC LIMIT ${}",
        args.len()
    );
    let rows = client.query(&sql, &refs(&args))?;
    let mut lines: Vec<String> = rows.iter().map(line).collect();
    lines.reverse();
    Ok(lines.join("\n"))
}

/// `tail -f`: the latest `limit`, then every matching request as it arrives (polled every
/// 250 ms by time, the last minute read again), while `emit` returns true.
pub fn follow(
    client: &mut Client,
    filter: &Filter,
    limit: usize,
    mut emit: impl FnMut(&str) -> bool,
) -> Result<(), postgres::Error> {
    for l in tail(client, filter, limit)?.lines() {
        if !emit(l) {
            return Ok(());
        }
    }
    let filter = Filter {
        since: None,
        ..filter.clone()
    };
    let (clause, args) = filter.pg_clause();
    let sql = format!(
        "SELECT {LINE_COLUMNS}, instance FROM requests{clause} AND ts_ms >= ${} ORDER BY ts_ms",
        args.len() + 1
    );
    // Rows carry their request's start time and arrive with their batch, up to a flush
    // interval (or a sink's retry) later: each poll reads the last LOOK_BACK again and
    // skips what it showed. A row arriving later than that is not shown.
    const LOOK_BACK: i64 = 60_000;
    let mut from: i64 = crate::clock::unix_ms() as i64;
    let mut shown: std::collections::HashSet<(i64, String, String)> = Default::default();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let mut a = refs(&args);
        let since = from - LOOK_BACK;
        a.push(&since);
        for r in client.query(&sql, &a)? {
            let key = (
                r.get::<_, i64>(0),
                r.get::<_, String>(8),
                r.get::<_, String>(10),
            );
            if shown.insert(key) {
                from = from.max(r.get::<_, i64>(0));
                if !emit(&line(&r)) {
                    return Ok(());
                }
            }
        }
        shown.retain(|(ts, _, _)| *ts >= from - LOOK_BACK);
    }
}

/// Requests, 5xx rate and p50/p99 per target or domain, from the rows.
pub fn summary(client: &mut Client, filter: &Filter, by: By) -> Result<String, postgres::Error> {
    let column = match by {
        By::Target => "target",
        By::Domain => "host",
    };
    let (clause, args) = filter.pg_clause();
    let sql = format!(
        "SELECT {column}, count(*), count(*) FILTER (WHERE status >= 500 OR status = 0), \
         percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_us), \
         percentile_disc(0.99) WITHIN GROUP (ORDER BY duration_us) \
         FROM requests{clause} GROUP BY {column} ORDER BY {column}"
    );
    let mut out = summary_header(by);
    for r in client.query(&sql, &refs(&args))? {
        let (p50, p99): (i64, i64) = (r.get(3), r.get(4));
        summary_line(
            &mut out,
            &r.get::<_, String>(0),
            r.get::<_, i64>(1) as u64,
            r.get::<_, i64>(2) as u64,
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
        );
    }
    Ok(out)
}

/// Run `query` (one or more statements) and print every row tab-separated with a header
/// line per statement, as `dispa traffic sql` does on SQLite.
pub fn sql(client: &mut Client, query: &str) -> Result<String, postgres::Error> {
    use postgres::SimpleQueryMessage;
    let mut out = String::new();
    let mut header_done = false;
    for m in client.simple_query(query)? {
        match m {
            SimpleQueryMessage::RowDescription(columns) => {
                let names: Vec<&str> = columns.iter().map(|c| c.name()).collect();
                let _ = writeln!(out, "{}", names.join("\t"));
                header_done = true;
            }
            SimpleQueryMessage::Row(row) => {
                if !header_done {
                    let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
                    let _ = writeln!(out, "{}", names.join("\t"));
                    header_done = true;
                }
                let cells: Vec<&str> = (0..row.len()).map(|i| row.get(i).unwrap_or("")).collect();
                let _ = writeln!(out, "{}", cells.join("\t"));
            }
            SimpleQueryMessage::CommandComplete(_) => header_done = false,
            _ => {}
        }
    }
    Ok(out)
}
