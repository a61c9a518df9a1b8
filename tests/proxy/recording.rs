//! The traffic record: fields, exact counts after a clean stop, gzip validity after
//! SIGKILL, rotation, retention, failing sinks, no drops under load.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use super::harness::*;

/// Every line of every Dispa gzip file in `dir`, in file-name order. Panics on a file
/// that is not valid gzip.
pub(super) fn gz_lines(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.to_string_lossy().ends_with(".jsonl.gz"));
    files.sort();
    let mut lines = Vec::new();
    for f in files {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&f).unwrap())
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{} is not valid gzip: {e}", f.display()));
        lines.extend(text.lines().map(str::to_string));
    }
    lines
}

/// Like [`gz_lines`], but a file may end in a member cut short (the batch being written
/// when the process was killed): the complete lines before it count, and the cut may
/// only be at the very end.
pub(super) fn gz_lines_after_kill(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let mut lines = Vec::new();
    for f in files {
        let mut decoder = flate2::read::MultiGzDecoder::new(std::fs::File::open(&f).unwrap());
        let mut data = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match decoder.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => data.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    assert_eq!(
                        e.kind(),
                        std::io::ErrorKind::UnexpectedEof,
                        "{}: {e}",
                        f.display()
                    );
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&data);
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        lines.extend(complete.lines().map(str::to_string));
    }
    lines
}

/// Rows in the database at `db`; 0 while it or its table does not exist yet (never
/// creates the file: Dispa must be the one to).
pub(super) fn db_count(db: &Path) -> i64 {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE;
    let Ok(conn) = rusqlite::Connection::open_with_flags(db, flags) else {
        return 0;
    };
    conn.query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
        .unwrap_or(0)
}

/// A JSON field's raw value from one line (`"name":value`).
pub(super) fn json_field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + name.len()
        + 3;
    let rest = &line[start..];
    let end = match rest.strip_prefix('"') {
        Some(quoted) => quoted.find('"').map_or(rest.len(), |i| i + 2),
        None => rest.find([',', '}']).unwrap_or(rest.len()),
    };
    rest[..end].trim_matches('"')
}

fn recording_config(targets: &[std::net::SocketAddr], dir: &Path, extra: &str) -> String {
    config(
        targets,
        "round_robin",
        &format!("{extra}{}", logging_section(dir)),
    )
}

#[test]
fn records_carry_the_request_and_its_outcome() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-fields");
    let p = proxy(&recording_config(&[b.addr], &dir, ""));
    let mut c = Client::connect(p.local_addr());
    c.send(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: Example.com\r\nUser-Agent: tester/1.0\r\nX-Request-Id: client-id-1\r\n\r\n");
    assert_eq!(c.read_response(false).status, 200);
    c.send(b"POST /up HTTP/1.0\r\nHost: a.test.com\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello");
    assert_eq!(c.read_response(false).status, 200);
    assert_eq!(c.get("nope.org", "/x").status, 404);
    let upstream_ids: Vec<Option<String>> = b
        .requests()
        .iter()
        .map(|r| r.header("x-request-id"))
        .collect();
    drop(p); // a clean stop writes everything

    let down = closed_port();
    let dir502 = scratch_dir("rec-502");
    let p = proxy(&recording_config(&[down], &dir502, ""));
    assert_eq!(get(p.local_addr(), "example.com", "/fail").status, 502);
    drop(p);

    let lines = gz_lines(&dir.join("logs"));
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let (get_, post, not_found) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!(json_field(get_, "id"), "client-id-1");
    assert_eq!(json_field(get_, "method"), "GET");
    assert_eq!(json_field(get_, "host"), "example.com");
    assert_eq!(json_field(get_, "path"), "/a/b");
    assert_eq!(json_field(get_, "query"), "x=1&y=2");
    assert_eq!(json_field(get_, "version"), "HTTP/1.1");
    assert_eq!(json_field(get_, "user_agent"), "tester/1.0");
    assert_eq!(json_field(get_, "status"), "200");
    assert_eq!(json_field(get_, "target"), "b0");
    assert_eq!(json_field(get_, "target_addr"), b.addr.to_string());
    assert_eq!(json_field(get_, "client"), "127.0.0.1");
    assert_eq!(json_field(get_, "upstream_reused"), "false");
    assert_eq!(
        json_field(get_, "response_bytes"),
        "b:/a/b?x=1&y=2".len().to_string()
    );
    assert_eq!(json_field(post, "method"), "POST");
    assert_eq!(json_field(post, "request_bytes"), "5");
    assert_eq!(json_field(post, "version"), "HTTP/1.0");
    assert_eq!(json_field(post, "upstream_reused"), "true");
    // Dispa made up an id for the POST and sent it upstream; the client's own went as is.
    assert_eq!(upstream_ids[0].as_deref(), Some("client-id-1"));
    assert_eq!(upstream_ids[1].as_deref(), Some(json_field(post, "id")));
    assert_eq!(json_field(post, "id").len(), 24);
    assert_eq!(json_field(not_found, "status"), "404");
    assert_eq!(json_field(not_found, "target"), "");
    assert_eq!(json_field(not_found, "upstream_us"), "null");
    assert!(json_field(get_, "duration_us").parse::<u64>().unwrap() > 0);
    assert!(json_field(get_, "time").ends_with('Z'));

    let failed = gz_lines(&dir502.join("logs"));
    assert_eq!(failed.len(), 1);
    assert_eq!(json_field(&failed[0], "status"), "502");
    assert_eq!(json_field(&failed[0], "error"), "connect");

    // The same three rows in SQLite.
    let conn = rusqlite::Connection::open(dir.join("traffic.db")).unwrap();
    let rows: Vec<(String, u16, String)> = conn
        .prepare("SELECT id, status, host FROM requests ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0],
        ("client-id-1".to_string(), 200, "example.com".to_string())
    );
    assert_eq!(rows[2].1, 404);
}

#[test]
fn a_clean_stop_writes_every_record_to_both_sinks() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-count");
    // Large batches and a long interval: only the stop can flush them.
    let extra = "";
    let toml = recording_config(&[b.addr], &dir, extra)
        .replace("flush_interval_ms = 50", "flush_interval_ms = 60000");
    let p = proxy(&toml);
    let addr = p.local_addr();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..125 {
                    assert_eq!(c.get("example.com", &format!("/{t}/{i}")).status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(p);
    assert_eq!(gz_lines(&dir.join("logs")).len(), 500);
    assert_eq!(db_count(&dir.join("traffic.db")), 500);
}

#[test]
fn flushed_batches_stay_readable_after_sigkill() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-kill");
    let toml = recording_config(&[b.addr], &dir, "") + "[monitoring]\nenabled = false\n";
    let path = dir.join("dispa.toml");
    std::fs::write(&path, toml).unwrap();
    let bin = env!("CARGO_BIN_EXE_dispa");
    let (mut child, addr, _) = spawn_dispa(&[bin, "-c", path.to_str().unwrap()]);
    let mut c = Client::connect(addr);
    for i in 0..100 {
        assert_eq!(c.get("example.com", &format!("/{i}")).status, 200);
    }
    let logs = dir.join("logs");
    // Read while Dispa writes: a member being written may be seen cut short.
    assert!(eventually(Duration::from_secs(5), || gz_lines_after_kill(
        &logs
    )
    .len()
        == 100));
    // More traffic in flight while the process is killed.
    let more = std::thread::spawn(move || {
        for i in 0..200 {
            if std::panic::catch_unwind(|| get(addr, "example.com", &format!("/more/{i}"))).is_err()
            {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(30));
    child.0.kill().unwrap();
    let _ = child.0.wait();
    let _ = more.join();
    // Nothing flushed is lost; at most the batch being written at the kill is cut.
    let lines = gz_lines_after_kill(&logs);
    assert!(lines.len() >= 100, "{} lines", lines.len());
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("{\"id\":") && l.ends_with('}'))
    );
}

#[test]
fn rotation_by_size_makes_several_valid_files() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-rotate");
    let toml = recording_config(&[b.addr], &dir, "")
        .replace("[logging.file]\n", "[logging.file]\nmax_file_size = 4096\n")
        .replace("type = \"both\"", "type = \"file\"\nbatch_size = 50");
    let p = proxy(&toml);
    let mut c = Client::connect(p.local_addr());
    for i in 0..1000 {
        assert_eq!(c.get("example.com", &format!("/{i}")).status, 200);
    }
    drop(p);
    let files = std::fs::read_dir(dir.join("logs")).unwrap().count();
    assert!(files >= 3, "only {files} files");
    assert_eq!(gz_lines(&dir.join("logs")).len(), 1000);
    assert!(
        !dir.join("traffic.db").exists(),
        "type = file writes no database"
    );
}

#[test]
fn retention_deletes_only_old_dispa_files() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-retain");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let ten_days_ago = SystemTime::now() - Duration::from_secs(10 * 86_400);
    for name in [
        "dispa-traffic-20200101T000000Z-0001.jsonl.gz",
        "notes.txt",
        "other.jsonl.gz",
    ] {
        let f = std::fs::File::create(logs.join(name)).unwrap();
        f.set_modified(ten_days_ago).unwrap();
    }
    let recent = logs.join("dispa-traffic-20990101T000000Z-0001.jsonl.gz");
    std::fs::File::create(&recent).unwrap();
    let toml = recording_config(&[b.addr], &dir, "")
        .replace("[logging.file]\n", "[logging.file]\nretention_days = 1\n");
    let p = proxy(&toml);
    assert!(eventually(Duration::from_secs(5), || !logs
        .join("dispa-traffic-20200101T000000Z-0001.jsonl.gz")
        .exists()));
    assert!(logs.join("notes.txt").exists());
    assert!(logs.join("other.jsonl.gz").exists());
    assert!(recent.exists());
    drop(p);
}

#[test]
fn a_failing_sink_never_affects_responses_and_keeps_its_records_until_it_recovers() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-fail");
    let logs = dir.join("logs");
    let db_dir = dir.join("db");
    // A file where the directories should be: every write fails, even as root.
    std::fs::write(&logs, "not a directory").unwrap();
    std::fs::write(&db_dir, "not a directory").unwrap();
    let toml = recording_config(&[b.addr], &dir, "").replace(
        &format!("path = \"{}\"", dir.join("traffic.db").display()),
        &format!("path = \"{}\"", db_dir.join("traffic.db").display()),
    );
    let p = proxy(&toml);
    let stats = p.logging_stats().clone();
    let mut c = Client::connect(p.local_addr());
    for _ in 0..20 {
        assert_eq!(c.get("example.com", "/").status, 200);
    }
    assert!(eventually(Duration::from_secs(3), || stats
        .errors_file
        .get()
        > 0
        && stats.errors_database.get() > 0
        && stats.backlog_file.get() == 20
        && stats.backlog_database.get() == 20));
    assert_eq!(stats.lost_file.get() + stats.lost_database.get(), 0);
    // The cause goes away: the sinks pick up again by themselves, waiting records first.
    std::fs::remove_file(&logs).unwrap();
    std::fs::remove_file(&db_dir).unwrap();
    std::fs::create_dir_all(&db_dir).unwrap();
    for _ in 0..10 {
        assert_eq!(c.get("example.com", "/").status, 200);
    }
    assert!(eventually(Duration::from_secs(10), || stats
        .written_file
        .get()
        == 30
        && stats.written_database.get() == 30));
    assert_eq!(stats.backlog_file.get() + stats.backlog_database.get(), 0);
    drop(p);
    assert_eq!(gz_lines(&logs).len(), 30);
    assert_eq!(db_count(&db_dir.join("traffic.db")), 30);
    assert_eq!(stats.lost_file.get() + stats.lost_database.get(), 0);
}

#[test]
fn past_the_backlog_bound_the_oldest_records_are_lost_and_counted() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-bound");
    let logs = dir.join("logs");
    std::fs::write(&logs, "not a directory").unwrap();
    let toml = recording_config(&[b.addr], &dir, "").replace(
        "type = \"both\"\n",
        "type = \"file\"\nmax_backlog = 10\nbatch_size = 5\n",
    );
    let p = proxy(&toml);
    let stats = p.logging_stats().clone();
    let mut c = Client::connect(p.local_addr());
    for _ in 0..25 {
        assert_eq!(c.get("example.com", "/").status, 200);
    }
    assert!(eventually(Duration::from_secs(3), || stats.lost_file.get()
        + stats.backlog_file.get()
        == 25));
    assert!(
        stats.backlog_file.get() <= 10,
        "{}",
        stats.backlog_file.get()
    );
    drop(p);
    // At a clean stop, what a still-failing sink holds is lost, and counted.
    assert_eq!(stats.lost_file.get(), 25);
    assert_eq!(stats.written_file.get(), 0);
}

#[test]
fn sustained_load_drops_no_record() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-load");
    let p = proxy(&recording_config(&[b.addr], &dir, ""));
    let addr = p.local_addr();
    let sent = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let sent = sent.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let end = std::time::Instant::now() + Duration::from_secs(2);
                while std::time::Instant::now() < end {
                    assert_eq!(c.get("example.com", "/").status, 200);
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let dropped = p.stats()[0].records_dropped.get();
    let stats = p.logging_stats().clone();
    drop(p);
    let n = sent.load(Ordering::SeqCst) as u64;
    assert_eq!(dropped, 0);
    assert_eq!(stats.written_file.get(), n);
    assert_eq!(stats.written_database.get(), n);
    assert_eq!(db_count(&dir.join("traffic.db")) as u64, n);
}

#[test]
fn recording_settings_apply_on_reload_without_losing_records() {
    let b = Backend::named("b");
    let (first, second) = (scratch_dir("rec-reload-a"), scratch_dir("rec-reload-b"));
    let base = config(
        &[b.addr],
        "round_robin",
        &format!("{MONITORING}{}", logging_section(&first)),
    );
    let d = controlled(&base);
    let mut c = Client::connect(d.proxy);
    for i in 0..10 {
        assert_eq!(c.get("example.com", &format!("/before/{i}")).status, 200);
    }
    // Files only, into another directory.
    let next = config(
        &[b.addr],
        "round_robin",
        &format!("{MONITORING}{}", logging_section(&second)),
    )
    .replace("type = \"both\"", "type = \"file\"");
    std::fs::write(&d.path, next).unwrap();
    assert_eq!(call(d.status, "POST", "/reload").status, 200);
    for i in 0..10 {
        assert_eq!(c.get("example.com", &format!("/after/{i}")).status, 200);
    }
    drop(c);
    drop(d); // a clean stop
    assert_eq!(gz_lines(&first.join("logs")).len(), 10);
    assert_eq!(db_count(&first.join("traffic.db")), 10);
    let after = gz_lines(&second.join("logs"));
    assert_eq!(after.len(), 10);
    assert!(after.iter().all(|l| l.contains("\"path\":\"/after/")));
    assert!(!second.join("traffic.db").exists());
}

#[test]
fn a_malformed_request_after_a_good_one_is_recorded_on_its_own() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-bad");
    let p = proxy(&recording_config(&[b.addr], &dir, ""));
    let mut c = Client::connect(p.local_addr());
    assert_eq!(c.get("example.com", "/good").status, 200);
    c.send(
        b"GET /bad HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    );
    assert_eq!(c.read_response(false).status, 400);
    drop(p);
    let lines = gz_lines(&dir.join("logs"));
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let bad = &lines[1];
    assert_eq!(json_field(bad, "status"), "400");
    assert_eq!(json_field(bad, "target"), "");
    assert_eq!(json_field(bad, "upstream_us"), "null");
    assert_eq!(json_field(bad, "error"), "bad_request");
}

#[test]
fn capture_keeps_selected_headers_and_the_first_body_bytes_for_chosen_hosts_only() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-capture");
    let capture = "[logging.capture]\ndomains = [\"example.com\"]\nrequest_headers = [\"Content-Type\", \"x-a\"]\nresponse_headers = [\"x-backend\"]\nmax_body_bytes = 4\n";
    let p = proxy(&recording_config(&[b.addr], &dir, capture));
    let mut c = Client::connect(p.local_addr());
    c.send(b"POST /cap HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\nX-A: 1\r\nX-Other: no\r\nX-A: 2\r\nContent-Length: 11\r\n\r\nhello world");
    assert_eq!(c.read_response(false).text(), "b:/cap");
    c.send(b"POST /chunks HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n4\r\ncdef\r\n0\r\n\r\n");
    assert_eq!(c.read_response(false).status, 200);
    c.send(b"POST /plain HTTP/1.1\r\nHost: a.test.com\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(c.read_response(false).status, 200);
    drop(p);

    let conn = rusqlite::Connection::open(dir.join("traffic.db")).unwrap();
    type Row = (
        Option<String>,
        Option<String>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
    );
    let rows: Vec<Row> = conn
        .prepare("SELECT request_headers, response_headers, request_body, response_body FROM requests ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0],
        (
            Some(r#"[["Content-Type","text/plain"],["X-A","1"],["X-A","2"]]"#.to_string()),
            Some(r#"[["X-Backend","b"]]"#.to_string()),
            Some(b"hell".to_vec()),
            Some(b"b:/c".to_vec()),
        )
    );
    // A chunked body is kept decoded.
    assert_eq!(rows[1].2.as_deref(), Some(&b"abcd"[..]));
    assert_eq!(rows[1].0.as_deref(), Some("[]"));
    // Hosts outside `domains` keep nothing.
    assert_eq!(rows[2], (None, None, None, None));

    let lines = gz_lines(&dir.join("logs"));
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0].contains(
            r#""request_headers":[["Content-Type","text/plain"],["X-A","1"],["X-A","2"]]"#
        ),
        "{}",
        lines[0]
    );
    assert_eq!(json_field(&lines[0], "request_body_b64"), "aGVsbA==");
    assert_eq!(json_field(&lines[0], "response_body_b64"), "YjovYw==");
    assert!(!lines[2].contains("request_headers"), "{}", lines[2]);
}

/// Two workers with two logging shards: each shard writes its own gzip files and SQLite
/// file, nothing is lost at a clean stop, and `dispa traffic` reads every shard.
#[test]
fn two_shards_write_their_own_files_and_traffic_reads_them_all() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-shards");
    let toml =
        recording_config(&[b.addr], &dir, "").replace("[logging]\n", "[logging]\nshards = 2\n");
    let cfg = dispa::config::parse(&toml).expect("config");
    let p = dispa::boot::start(cfg, Some(2)).expect("start");
    // SO_REUSEPORT spreads connections over both workers by their 4-tuple.
    for i in 0..40 {
        assert_eq!(
            get(p.local_addr(), "example.com", &format!("/{i}")).status,
            200
        );
    }
    p.shutdown(Duration::from_secs(5));
    let (db0, db1) = (dir.join("traffic.db"), dir.join("traffic.s1.db"));
    let (n0, n1) = (db_count(&db0), db_count(&db1));
    assert_eq!(n0 + n1, 40);
    assert!(n0 > 0 && n1 > 0, "both shards wrote: {n0} + {n1}");
    let logs = dir.join("logs");
    let names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".s1.jsonl.gz")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| !n.contains(".s1.")), "{names:?}");
    assert_eq!(gz_lines(&logs).len(), 40);
    assert_eq!(traffic("tail", &db0, &["-n", "100"]).lines().count(), 40);
    let summary = traffic("summary", &db0, &[]);
    assert!(
        summary
            .lines()
            .any(|l| l.starts_with("b0") && l.contains(" 40 ")),
        "{summary}"
    );
    // DATABASE.md's queries through `dispa traffic sql` see every shard.
    let query = "SELECT host, (status / 100) || 'xx' AS class, count(*) AS n FROM requests GROUP BY host, class";
    assert_eq!(
        traffic("sql", &db0, &[query]),
        "host\tclass\tn\nexample.com\t2xx\t40\n"
    );
}

/// `dispa traffic summary` reads the per-minute rollups; with `--status` it reads rows:
/// both count the same requests.
#[test]
fn summary_from_rollups_counts_what_the_rows_hold() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-rollups");
    let p = proxy(&recording_config(&[b.addr], &dir, ""));
    for i in 0..25 {
        let host = if i % 5 == 0 {
            "a.test.com"
        } else {
            "example.com"
        };
        assert_eq!(get(p.local_addr(), host, "/").status, 200);
    }
    assert_eq!(get(p.local_addr(), "nope.org", "/").status, 404);
    drop(p);
    let db = dir.join("traffic.db");
    let summary = |args: &[&str]| traffic("summary", &db, &[&["--by-domain"], args].concat());
    let rollups = summary(&["--since", "1h"]);
    let count = |text: &str, name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(count(&rollups, "example.com"), 20, "{rollups}");
    assert_eq!(count(&rollups, "a.test.com"), 5, "{rollups}");
    assert_eq!(count(&rollups, "nope.org"), 1, "{rollups}");
    let rows = summary(&["--status", "200"]);
    assert_eq!(count(&rows, "example.com"), 20, "{rows}");
    let minutes: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT sum(requests) FROM requests_per_minute", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(minutes, 26);
}

/// A filtered `tail` finds its rows through the rollups' minutes (the rows have no index
/// on host or status): the newest matching requests, oldest first.
#[test]
fn filtered_tail_finds_the_newest_matching_requests() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-tail-filter");
    let p = proxy(&recording_config(&[b.addr], &dir, ""));
    for i in 0..30 {
        let host = if i % 10 == 0 {
            "a.test.com"
        } else {
            "example.com"
        };
        assert_eq!(get(p.local_addr(), host, &format!("/{i}")).status, 200);
    }
    assert_eq!(get(p.local_addr(), "nope.org", "/x").status, 404);
    drop(p);
    let tail = |args: &[&str]| traffic("tail", &dir.join("traffic.db"), args);
    let lines: Vec<String> = tail(&["--host", "a.test.com", "-n", "2"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("a.test.com/10 "), "{lines:?}");
    assert!(lines[1].contains("a.test.com/20 "), "{lines:?}");
    let missing = tail(&["--status", "404"]);
    assert_eq!(missing.lines().count(), 1, "{missing}");
    assert!(missing.contains("nope.org/x"), "{missing}");
    assert_eq!(tail(&["--host", "none.example"]).trim(), "");
}

/// The rollups follow their rows within about a second also when traffic stops (no later
/// batch carries them).
#[test]
fn rollups_follow_their_rows_without_more_traffic() {
    let b = Backend::named("b");
    let dir = scratch_dir("rec-rollup-tick");
    let p = proxy(&recording_config(&[b.addr], &dir, ""));
    for _ in 0..5 {
        assert_eq!(get(p.local_addr(), "example.com", "/").status, 200);
    }
    let db = dir.join("traffic.db");
    let rolled_up = || {
        rusqlite::Connection::open(&db)
            .and_then(|c| {
                c.query_row(
                    "SELECT coalesce(sum(requests), 0) FROM requests_per_minute",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(5), || rolled_up() == 5),
        "{}",
        rolled_up()
    );
    drop(p);
}
