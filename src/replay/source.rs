//! Where `dispa replay` reads recorded exchanges from: the SQLite store (every shard), a
//! PostgreSQL store, or the gzip JSON Lines files — selected like `dispa traffic`
//! (host, status, target, time range) and returned oldest first, at most `limit`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use rusqlite::{params_from_iter, types::Value};

use crate::config::Postgres;
use crate::traffic::Filter;

/// One recorded exchange, as replay and the mock need it.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub id: String,
    pub ts_ms: i64,
    /// The client connection it came on (`None` in records older than schema 7: each
    /// such request is then a connection of its own).
    pub conn: Option<i64>,
    /// Which Dispa recorded it, in a fleet's PostgreSQL store ('' elsewhere): `conn` is
    /// unique per Dispa.
    pub instance: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub query: String,
    pub user_agent: String,
    /// Status sent to the client (0: none).
    pub status: u16,
    pub duration_us: i64,
    /// Body bytes (decoded) of the request and of the response.
    pub request_bytes: i64,
    pub response_bytes: i64,
    /// `[logging.capture]`'s part: `None` when the host was not captured.
    pub request_headers: Option<Vec<(String, String)>>,
    pub response_headers: Option<Vec<(String, String)>>,
    pub request_body: Option<Vec<u8>>,
    pub response_body: Option<Vec<u8>>,
}

impl Recorded {
    /// The request's body was captured in full (or it had none).
    pub fn request_body_complete(&self) -> bool {
        let kept = self.request_body.as_ref().map_or(0, Vec::len);
        kept as i64 == self.request_bytes
    }

    /// The response's body was captured in full (or it had none).
    pub fn response_body_complete(&self) -> bool {
        let kept = self.response_body.as_ref().map_or(0, Vec::len);
        self.response_body.is_some() && kept as i64 == self.response_bytes
    }

    /// `path?query`, as the request line had it.
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

/// A store to read.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(PathBuf),
    Postgres(Postgres),
    /// A `.jsonl.gz` / `.jsonl` file, or a directory of them (the file sink's).
    Files(PathBuf),
}

impl Store {
    /// A store named on the command line: a postgres:// URL, a directory or JSON Lines
    /// file, else a SQLite file.
    pub fn named(arg: &Path) -> Store {
        let text = arg.to_string_lossy();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Store::Postgres(crate::traffic::postgres::from_url(&text));
        }
        if arg.is_dir() || text.ends_with(".jsonl.gz") || text.ends_with(".jsonl") {
            return Store::Files(arg.to_path_buf());
        }
        Store::Sqlite(arg.to_path_buf())
    }

    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(p) | Store::Files(p) => p.display().to_string(),
            Store::Postgres(p) => p.url.clone(),
        }
    }
}

/// The selected exchanges, oldest first (ties in the order they were written).
pub fn load(store: &Store, filter: &Filter, limit: Option<usize>) -> Result<Vec<Recorded>, String> {
    let at = |e: String| format!("{}: {e}", store.describe());
    match store {
        Store::Sqlite(path) => from_sqlite(path, filter, limit).map_err(|e| at(e.to_string())),
        Store::Postgres(pg) => from_postgres(pg, filter, limit),
        Store::Files(path) => from_files(path, filter, limit).map_err(at),
    }
}

/// The columns read, in [`Recorded`]'s order (`conn` is added by each store).
const COLUMNS: &str = "id, ts_ms, method, host, path, query, user_agent, status, duration_us, \
     request_bytes, response_bytes, request_headers, response_headers, request_body, \
     response_body";

fn from_sqlite(
    path: &Path,
    filter: &Filter,
    limit: Option<usize>,
) -> rusqlite::Result<Vec<Recorded>> {
    let conn = crate::traffic::open(path)?;
    // Files of schema 6 and before have no `conn` (a read-only open does not migrate).
    let has_conn = conn.prepare("SELECT conn FROM requests LIMIT 0").is_ok();
    let conn_column = if has_conn { "conn" } else { "NULL" };
    let (clause, mut args) = filter.clause();
    let sql = format!(
        "SELECT {COLUMNS}, {conn_column} FROM requests{clause} ORDER BY ts_ms, rowid LIMIT ?"
    );
    args.push(Value::Integer(limit.map_or(-1, |n| n as i64)));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        Ok(Recorded {
            id: r.get(0)?,
            ts_ms: r.get(1)?,
            method: r.get(2)?,
            host: r.get(3)?,
            path: r.get(4)?,
            query: r.get(5)?,
            user_agent: r.get(6)?,
            status: r.get(7)?,
            duration_us: r.get(8)?,
            request_bytes: r.get(9)?,
            response_bytes: r.get(10)?,
            request_headers: r.get::<_, Option<String>>(11)?.map(|t| header_pairs(&t)),
            response_headers: r.get::<_, Option<String>>(12)?.map(|t| header_pairs(&t)),
            request_body: r.get(13)?,
            response_body: r.get(14)?,
            conn: r.get(15)?,
            instance: String::new(),
        })
    })?;
    rows.collect()
}

fn from_postgres(
    store: &Postgres,
    filter: &Filter,
    limit: Option<usize>,
) -> Result<Vec<Recorded>, String> {
    let mut client = crate::traffic::postgres::open(store)?;
    let failed =
        |e: postgres::Error| format!("{}: {}", store.url, crate::logging::postgres::describe(&e));
    // A store no Dispa has migrated to version 4 yet has no `conn` (reading does not
    // migrate).
    let has_conn = client
        .query_opt(
            "SELECT 1 FROM information_schema.columns WHERE table_name = 'requests' \
             AND column_name = 'conn' AND table_schema = current_schema()",
            &[],
        )
        .map_err(failed)?
        .is_some();
    let conn_column = if has_conn { "conn" } else { "NULL::bigint" };
    let (clause, mut args) = filter.pg_clause();
    let limit_sql = match limit {
        Some(n) => {
            args.push(Box::new(n as i64));
            format!(" LIMIT ${}", args.len())
        }
        None => String::new(),
    };
    // The instance orders ties: one Dispa's rows of one millisecond in the order written.
    let sql = format!(
        "SELECT {COLUMNS}, {conn_column}, instance FROM requests{clause} \
         ORDER BY ts_ms, instance, id{limit_sql}"
    );
    let rows = client
        .query(&sql, &crate::traffic::postgres::refs(&args))
        .map_err(failed)?;
    Ok(rows
        .iter()
        .map(|r| Recorded {
            id: r.get(0),
            ts_ms: r.get(1),
            method: r.get(2),
            host: r.get(3),
            path: r.get(4),
            query: r.get(5),
            user_agent: r.get(6),
            status: r.get::<_, i32>(7) as u16,
            duration_us: r.get(8),
            request_bytes: r.get(9),
            response_bytes: r.get(10),
            request_headers: r.get::<_, Option<String>>(11).map(|t| header_pairs(&t)),
            response_headers: r.get::<_, Option<String>>(12).map(|t| header_pairs(&t)),
            request_body: r.get(13),
            response_body: r.get(14),
            conn: r.get(15),
            instance: r.get(16),
        })
        .collect())
}

/// `[["Name","value"], ...]` as the stores keep captured fields.
fn header_pairs(text: &str) -> Vec<(String, String)> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Every `.jsonl.gz` / `.jsonl` file at `path` (a directory or one file), by name.
fn jsonl_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".jsonl.gz") || name.ends_with(".jsonl")
        })
        .collect();
    files.sort();
    Ok(files)
}

fn from_files(path: &Path, filter: &Filter, limit: Option<usize>) -> Result<Vec<Recorded>, String> {
    let since_ms = filter
        .since
        .map(|s| crate::clock::unix_ms().saturating_sub(s.as_millis() as u64) as i64);
    let mut found = Vec::new();
    for file in jsonl_files(path)? {
        let opened = std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let reader: Box<dyn std::io::Read> = if file.to_string_lossy().ends_with(".gz") {
            // The file being written ends in an unfinished gzip member: its complete lines
            // are read, the rest is not there yet.
            Box::new(flate2::read::MultiGzDecoder::new(opened))
        } else {
            Box::new(opened)
        };
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let r = from_json(&v);
            let host_ok = filter
                .host
                .as_ref()
                .is_none_or(|h| h.eq_ignore_ascii_case(&r.host));
            let target_ok = filter
                .target
                .as_ref()
                .is_none_or(|t| v["target"].as_str() == Some(t.as_str()));
            let keep = host_ok
                && target_ok
                && filter.status.is_none_or(|s| s == r.status)
                && since_ms.is_none_or(|m| r.ts_ms >= m)
                && filter.from_ms.is_none_or(|m| r.ts_ms >= m as i64)
                && filter.until_ms.is_none_or(|m| r.ts_ms < m as i64);
            if keep {
                found.push(r);
            }
        }
    }
    // Several logging threads write files of their own: one timeline, stable for ties.
    found.sort_by_key(|r| r.ts_ms);
    if let Some(n) = limit {
        found.truncate(n);
    }
    Ok(found)
}

/// A JSON line of the file sink (docs/DATABASE.md, "Files").
fn from_json(v: &serde_json::Value) -> Recorded {
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let int = |k: &str| v[k].as_i64().unwrap_or_default();
    let headers = |k: &str| {
        v[k].as_array().map(|pairs| {
            pairs
                .iter()
                .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string())))
                .collect()
        })
    };
    let body = |k: &str| v[k].as_str().and_then(base64_decode);
    Recorded {
        id: text("id"),
        ts_ms: int("ts_ms"),
        conn: v["conn"].as_i64(),
        instance: String::new(),
        method: text("method"),
        host: text("host"),
        path: text("path"),
        query: text("query"),
        user_agent: text("user_agent"),
        status: int("status") as u16,
        duration_us: int("duration_us"),
        request_bytes: int("request_bytes"),
        response_bytes: int("response_bytes"),
        request_headers: headers("request_headers"),
        response_headers: headers("response_headers"),
        request_body: body("request_body_b64"),
        response_body: body("response_body_b64"),
    }
}

/// Standard base64 with padding (what the file sink writes), `None` when malformed.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for quad in bytes.chunks(4) {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_with_the_sinks_encoder() {
        for len in 0..70 {
            let raw: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let mut encoded = Vec::new();
            crate::logging::record::push_base64(&mut encoded, &raw);
            let text = String::from_utf8(encoded).unwrap();
            assert_eq!(base64_decode(&text), Some(raw), "{len}");
        }
        assert_eq!(base64_decode("Zm9v!A=="), None);
        assert_eq!(base64_decode("Zm9"), None);
    }

    #[test]
    fn stores_are_told_apart_by_their_name() {
        assert!(matches!(
            Store::named(Path::new("postgres://u@h/db")),
            Store::Postgres(_)
        ));
        assert!(matches!(
            Store::named(Path::new("logs/x.jsonl.gz")),
            Store::Files(_)
        ));
        assert!(matches!(
            Store::named(Path::new("data/traffic.db")),
            Store::Sqlite(_)
        ));
    }
}
