//! The PostgreSQL store over a real PostgreSQL server (started per test in a temp
//! directory as the unprivileged `postgres` user when run as root; `.ci/run` installs the
//! `postgresql` package): exact counts after a clean stop, the server stopped for 20 s
//! under load, two Dispas writing one database, a wrong password, a migration from the
//! first schema, retention dropping a day partition while rows are written, and
//! `dispa traffic` reading it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::harness::*;

const PASSWORD: &str = "s3cret-pw";

/// A PostgreSQL 15 server of one test: its directory, port and binaries.
pub struct PgServer {
    dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
    });
    found.expect("PostgreSQL server binaries not found: apt-get install postgresql (.ci/run does)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run a PostgreSQL tool as the `postgres` user when we are root (initdb refuses root).
fn as_pg(bin: &Path, tool: &str) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

impl PgServer {
    pub fn start() -> PgServer {
        let bin = pg_bin();
        let dir = scratch_dir("pg");
        std::fs::write(dir.join("pw"), PASSWORD).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let out = as_pg(&bin, "initdb")
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "dispa",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
            ])
            .arg(format!("--pwfile={}", dir.join("pw").display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = PgServer {
            dir,
            port: free_port(),
            bin,
        };
        pg.run_ctl("start");
        pg
    }

    fn run_ctl(&self, what: &str) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut c = as_pg(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-m", "fast"]);
        if what == "start" {
            c.args(["-o", &opts, "-l"]).arg(self.dir.join("log"));
        }
        let out = c.arg(what).output().unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn stop(&self) {
        self.run_ctl("stop");
    }

    pub fn restart(&self) {
        self.run_ctl("start");
    }

    pub fn url(&self, password: &str) -> String {
        format!(
            "postgres://dispa:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// Run `sql` with psql; its rows, unaligned, `|` between columns.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// [`PgServer::psql`] in database `db`.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "dispa",
            ])
            .args(["-d", db, "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn count(&self, sql: &str) -> usize {
        self.psql(sql)
            .parse()
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = as_pg(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Dispa recording only to the PostgreSQL store at `url` as `instance`, with `extra`
/// keys in `[logging.database]`.
fn pg_config(backend: SocketAddr, url: &str, instance: &str, extra: &str) -> String {
    let logging = format!(
        "[logging]\ntype = \"database\"\nflush_interval_ms = 50\n[logging.database]\nurl = \"{url}\"\ninstance = \"{instance}\"\n{extra}"
    );
    config(&[backend], "round_robin", &format!("{MONITORING}{logging}"))
}

fn stop(mut child: Spawned) {
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(15)).expect("dispa did not exit");
    assert_eq!(status.code(), Some(0));
}

fn send(proxy: SocketAddr, n: usize) {
    let mut c = Client::connect(proxy);
    for i in 0..n {
        assert_eq!(c.get("example.com", &format!("/r{i}")).status, 200);
    }
}

#[test]
fn pg_exact_row_count_after_a_clean_stop_and_traffic_reads_it() {
    let pg = PgServer::start();
    let b = Backend::named("b");
    let (child, proxy, _, _) = spawn_binary(&pg_config(b.addr, &pg.url(PASSWORD), "edge-1", ""));
    let senders: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || send(proxy, 250)))
        .collect();
    senders.into_iter().for_each(|t| t.join().unwrap());
    stop(child);
    assert_eq!(pg.count("SELECT count(*) FROM requests"), 1000);
    assert_eq!(
        pg.count("SELECT count(DISTINCT id) FROM requests WHERE instance = 'edge-1'"),
        1000
    );
    let today = pg.psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')");
    let in_today = format!("SELECT count(*) FROM requests_p{today}");
    assert_eq!(pg.count(&in_today), 1000, "rows go to today's partition");
    // The CLI on the same store, password from PGPASSWORD.
    let url = format!("postgres://dispa@127.0.0.1:{}/postgres", pg.port);
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["traffic", "--db", &url])
            .args(args)
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tail = run(&["tail", "-n", "3"]);
    assert_eq!(tail.lines().count(), 3, "{tail}");
    assert!(
        tail.lines()
            .all(|l| l.contains(" 200 GET example.com/r") && l.contains("-> b0")),
        "{tail}"
    );
    let summary = run(&["summary"]);
    assert!(
        summary
            .lines()
            .any(|l| l.starts_with("b0") && l.contains(" 1000 ")),
        "{summary}"
    );
    let sql = run(&[
        "sql",
        "SELECT instance, count(*) FROM requests GROUP BY instance",
    ]);
    assert_eq!(sql.trim(), "instance\tcount\nedge-1\t1000");
}

#[test]
fn pg_stopped_for_20s_under_load_loses_nothing_and_writes_nothing_twice() {
    let pg = PgServer::start();
    let b = Backend::named("b");
    let (child, proxy, status, _) =
        spawn_binary(&pg_config(b.addr, &pg.url(PASSWORD), "edge-1", ""));
    let (running, answered) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (r, a) = (running.clone(), answered.clone());
    // Steady load: about 200 requests a second until told to stop.
    let load = std::thread::spawn(move || {
        let mut c = Client::connect(proxy);
        let mut i = 0;
        while r.load(Ordering::SeqCst) {
            assert_eq!(c.get("example.com", &format!("/r{i}")).status, 200);
            a.fetch_add(1, Ordering::SeqCst);
            i += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    pg.stop();
    let stopped = Instant::now();
    // Recording shows as degraded while the server is down.
    assert!(eventually(Duration::from_secs(10), || {
        call(status, "GET", "/health")
            .text()
            .contains("\"degraded\"")
    }));
    std::thread::sleep(Duration::from_secs(20).saturating_sub(stopped.elapsed()));
    pg.restart();
    std::thread::sleep(Duration::from_secs(3));
    running.store(false, Ordering::SeqCst);
    load.join().unwrap();
    let sent = answered.load(Ordering::SeqCst);
    assert!(sent > 2000, "{sent}");
    // Every record arrives (the backlog holds them while the server is down), once.
    assert!(eventually(Duration::from_secs(20), || {
        pg.count("SELECT count(*) FROM requests") >= sent
    }));
    stop(child);
    assert_eq!(pg.count("SELECT count(*) FROM requests"), sent);
    assert_eq!(pg.count("SELECT count(DISTINCT id) FROM requests"), sent);
}

#[test]
fn pg_two_dispas_write_one_database() {
    let pg = PgServer::start();
    let b = Backend::named("b");
    let url = pg.url(PASSWORD);
    let (one, p1, _, _) = spawn_binary(&pg_config(b.addr, &url, "edge-1", ""));
    let (two, p2, _, _) = spawn_binary(&pg_config(b.addr, &url, "edge-2", ""));
    let t1 = std::thread::spawn(move || send(p1, 300));
    let t2 = std::thread::spawn(move || send(p2, 200));
    t1.join().unwrap();
    t2.join().unwrap();
    stop(one);
    stop(two);
    let by_instance = pg.psql("SELECT instance, count(*) FROM requests GROUP BY 1 ORDER BY 1");
    assert_eq!(by_instance, "edge-1|300\nedge-2|200");
    assert_eq!(
        pg.count("SELECT max(version) FROM dispa_schema_version"),
        dispa::logging::postgres::SCHEMA_VERSION as usize
    );
}

#[test]
fn pg_wrong_password_degrades_recording_without_printing_it_and_required_refuses_to_start() {
    let pg = PgServer::start();
    let b = Backend::named("b");
    let wrong = "not-the-pw-123";
    let (child, proxy, status, _) = spawn_binary(&pg_config(b.addr, &pg.url(wrong), "e", ""));
    assert_eq!(
        get(proxy, "example.com", "/").status,
        200,
        "the proxy serves"
    );
    let health = || call(status, "GET", "/health").text();
    assert!(eventually(Duration::from_secs(5), || health().contains("\"degraded\"")));
    let health = health();
    assert!(
        health.contains("password authentication failed"),
        "{health}"
    );
    assert!(
        health.contains(&format!("127.0.0.1:{}", pg.port)),
        "names the host: {health}"
    );
    assert!(!health.contains(wrong), "{health}");
    drop(child);
    // required = true: a clear error naming the host, and no start.
    let toml = pg_config(b.addr, &pg.url(wrong), "e", "required = true\n");
    let dir = scratch_dir("pg-required");
    std::fs::write(dir.join("d.toml"), toml).unwrap();
    let out = Command::new(BIN)
        .arg("-c")
        .arg(dir.join("d.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", pg.port)), "{err}");
    assert!(!err.contains(wrong), "{err}");
    // `dispa check` tries the connection too.
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(dir.join("d.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("logging.database.url postgres://dispa@127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains(wrong), "{err}");
}

#[test]
fn pg_migrates_a_store_of_the_first_schema() {
    let pg = PgServer::start();
    let first = dispa::logging::postgres::MIGRATIONS[0];
    pg.psql(&format!(
        "CREATE TABLE dispa_schema_version (version integer NOT NULL); {first}; \
         INSERT INTO dispa_schema_version VALUES (1); \
         INSERT INTO requests VALUES ('old', 0, '1.2.3.4', 0, 'GET', 'http', 'example.com', '/', \
           '', 'HTTP/1.1', '', 0, 200, 0, 'b0', '', 5, NULL, NULL, 0, NULL, NULL, NULL, NULL, \
           NULL, NULL, NULL)"
    ));
    let b = Backend::named("b");
    let (child, proxy, _, _) = spawn_binary(&pg_config(b.addr, &pg.url(PASSWORD), "edge-9", ""));
    send(proxy, 10);
    stop(child);
    assert_eq!(
        pg.count("SELECT max(version) FROM dispa_schema_version"),
        dispa::logging::postgres::SCHEMA_VERSION as usize
    );
    assert_eq!(
        pg.psql("SELECT instance FROM requests WHERE id = 'old'"),
        ""
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM requests WHERE instance = 'edge-9'"),
        10
    );
}

#[test]
fn pg_retention_drops_an_old_day_partition_while_rows_are_written() {
    let pg = PgServer::start();
    let b = Backend::named("b");
    let url = pg.url(PASSWORD);
    // A first run makes the schema.
    let (child, proxy, _, _) = spawn_binary(&pg_config(b.addr, &url, "edge-1", ""));
    send(proxy, 5);
    stop(child);
    // A day 40 days ago, with a row in it.
    let day_ms: i64 = 86_400_000;
    let old_day = dispa::clock::unix_ms() as i64 / day_ms - 40;
    let (y, m, d) = dispa::clock::civil_from_days(old_day);
    let name = format!("requests_p{y:04}{m:02}{d:02}");
    pg.psql(&format!(
        "CREATE TABLE {name} PARTITION OF requests FOR VALUES FROM ({}) TO ({}); \
         INSERT INTO requests (id, ts_ms, client, worker, method, scheme, host, path, query, \
           version, user_agent, request_bytes, status, response_bytes, target, target_addr, \
           duration_us, retries) VALUES ('ancient', {}, '1.2.3.4', 0, 'GET', 'http', 'example.com', \
           '/', '', 'HTTP/1.1', '', 0, 200, 0, 'b0', '', 5, 0)",
        old_day * day_ms,
        (old_day + 1) * day_ms,
        old_day * day_ms + 1000
    ));
    let (child, proxy, _, _) =
        spawn_binary(&pg_config(b.addr, &url, "edge-1", "retention_days = 30\n"));
    let sender = std::thread::spawn(move || send(proxy, 400));
    let gone = format!("SELECT count(*) FROM pg_class WHERE relname = '{name}'");
    assert!(
        eventually(Duration::from_secs(10), || pg.count(&gone) == 0),
        "partition kept"
    );
    sender.join().unwrap();
    stop(child);
    assert_eq!(pg.count("SELECT count(*) FROM requests"), 405);
    assert_eq!(
        pg.count("SELECT count(*) FROM requests WHERE id = 'ancient'"),
        0
    );
}

#[test]
fn pg_every_database_md_query_runs_on_a_real_server() {
    let pg = PgServer::start();
    let b = Backend::named("b");
    let toml = pg_config(b.addr, &pg.url(PASSWORD), "edge-1", "");
    let p = proxy(&toml.replace(
        "[monitoring]\nhealth_bind = \"127.0.0.1:0\"\nmetrics_bind = \"127.0.0.1:0\"\n",
        "",
    ));
    for path in ["/a", "/b?x=1", "/a"] {
        assert_eq!(get(p.local_addr(), "example.com", path).status, 200);
    }
    assert_eq!(get(p.local_addr(), "nope.org", "/").status, 404);
    drop(p);
    assert_eq!(pg.count("SELECT count(*) FROM requests"), 4);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/DATABASE.md")).unwrap();
    let blocks: Vec<&str> = doc
        .split("```pgsql\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 2, "{} blocks", blocks.len());
    let mut out = String::new();
    for sql in &blocks {
        out += &pg.psql(sql);
        out.push('\n');
    }
    // The status mix names classes, and the fleet query the instance.
    assert!(out.contains("example.com|2xx|3"), "{out}");
    assert!(out.contains("nope.org|4xx|1"), "{out}");
    assert!(out.contains("edge-1|4"), "{out}");
}

#[test]
fn pg_keeps_captured_headers_and_bodies_byte_for_byte() {
    let pg = PgServer::start();
    let b = Backend::named("b");
    let capture = "[logging.capture]\ndomains = [\"example.com\"]\nrequest_headers = [\"x-a\"]\nresponse_headers = [\"x-backend\"]\nmax_body_bytes = 8\n";
    let toml = format!(
        "{}{capture}",
        pg_config(b.addr, &pg.url(PASSWORD), "edge-1", "")
    );
    let (child, proxy, _, _) = spawn_binary(&toml);
    let body = b"ab\0\xffcd\tefgh";
    let mut c = Client::connect(proxy);
    c.send(
        &[
            format!(
                "POST /up?q=1 HTTP/1.1\r\nHost: example.com\r\nX-A: one\\two\r\nUser-Agent: t\tab\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
            body,
        ]
        .concat(),
    );
    assert_eq!(c.read_response(false).status, 200);
    stop(child);
    let row = pg.psql(
        "SELECT method, path, query, user_agent, request_bytes, request_headers, \
         response_headers, encode(request_body, 'hex'), scheme, tls_version IS NULL, \
         upstream_reused, error IS NULL FROM requests",
    );
    assert_eq!(
        row,
        "POST|/up|q=1|t\tab|11|[[\"X-A\",\"one\\\\two\"]]|[[\"X-Backend\",\"b\"]]|6162\
         00ff63640965|http|t|0|t"
    );
}

/// A batch the database refuses for what it holds (here a character a LATIN1 database
/// cannot store) is counted as lost, and the batches after it are written: it does not
/// stall the sink.
#[test]
fn pg_a_batch_refused_for_its_data_is_counted_lost_and_the_next_ones_go_in() {
    let pg = PgServer::start();
    pg.psql(
        "CREATE DATABASE latin1db ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    let b = Backend::named("b");
    let url = pg.url(PASSWORD).replace("/postgres", "/latin1db");
    let (child, proxy, status, _) = spawn_binary(&pg_config(b.addr, &url, "edge-1", ""));
    let ua = |text: &str| {
        format!("GET /{text} HTTP/1.1\r\nHost: example.com\r\nUser-Agent: {text}\r\n\r\n")
    };
    assert_eq!(raw(proxy, ua("plain").as_bytes()).status, 200);
    let lost = || {
        let h = call(status, "GET", "/health").text();
        h.contains("\"lost_database\":1")
    };
    // Its own batch (flushes every 50 ms), then one the database cannot hold.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(raw(proxy, ua("中文").as_bytes()).status, 200);
    assert!(
        eventually(Duration::from_secs(10), lost),
        "{}",
        call(status, "GET", "/health").text()
    );
    assert_eq!(raw(proxy, ua("after").as_bytes()).status, 200);
    stop(child);
    let agents = "SELECT string_agg(user_agent, ',' ORDER BY ts_ms) FROM requests";
    assert_eq!(pg.psql_in("latin1db", agents), "plain,after");
}

/// `dispa replay` reads a PostgreSQL store: every request sent again, each recorded client
/// connection's requests on one connection in their order.
#[test]
fn pg_replay_sends_the_recorded_requests_again_in_each_connections_order() {
    let pg = PgServer::start();
    let b = Backend::named("b");
    let capture = "[logging.capture]\ndomains = [\"example.com\"]\nrequest_headers = [\"*\"]\nresponse_headers = [\"*\"]\nmax_body_bytes = 65536\n";
    let toml = format!(
        "{}{capture}",
        pg_config(b.addr, &pg.url(PASSWORD), "edge-1", "")
    );
    let (child, proxy, _, _) = spawn_binary(&toml);
    // Three connections, their requests interleaved in time.
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(proxy)).collect();
    for i in 0..10 {
        for (k, c) in clients.iter_mut().enumerate() {
            assert_eq!(c.get("example.com", &format!("/c{k}/{i}")).status, 200);
        }
    }
    drop(clients);
    stop(child);

    let again = Backend::named("b");
    let out = Command::new(BIN)
        .args(["replay", "--db", &pg.url(PASSWORD), "--concurrency", "3"])
        .args(["--compare-header", "x-backend", "--report", "-"])
        .arg("--target")
        .arg(format!("http://{}", again.addr))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sent"], 30, "{report}");
    assert_eq!(report["matched"], 30, "{report}");
    let mut on: std::collections::BTreeMap<String, (usize, Vec<String>)> = Default::default();
    for s in again.requests() {
        let path = s.request_line().split(' ').nth(1).unwrap().to_string();
        let conn = path.split('/').nth(1).unwrap().to_string();
        let entry = on.entry(conn).or_insert((s.conn, Vec::new()));
        assert_eq!(entry.0, s.conn, "{path} on another connection");
        entry.1.push(path);
    }
    for (conn, (_, paths)) in on {
        let want: Vec<String> = (0..10).map(|i| format!("/{conn}/{i}")).collect();
        assert_eq!(paths, want);
    }
}
