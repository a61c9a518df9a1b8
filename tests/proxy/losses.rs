//! Nothing lost from the traffic record, over the real binary: a file deleted or moved
//! while Dispa runs, SIGUSR1, a database locked by another process, a failing sink that
//! says what failed and where, retention without traffic, failed connects named.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::harness::*;
use super::recording::{db_count, gz_lines, gz_lines_after_kill, json_field};

/// The binary recording to `dir` (files in `dir/logs`, SQLite at `dir/traffic.db`).
fn recording_binary(
    dir: &Path,
    backend: std::net::SocketAddr,
) -> (Spawned, std::net::SocketAddr, std::net::SocketAddr) {
    let toml = config(
        &[backend],
        "round_robin",
        &format!("{MONITORING}{}", logging_section(dir)),
    );
    let (child, proxy, status, _) = spawn_binary(&toml);
    (child, proxy, status)
}

fn requests(proxy: std::net::SocketAddr, n: usize) {
    let mut c = Client::connect(proxy);
    for _ in 0..n {
        assert_eq!(c.get("example.com", "/").status, 200);
    }
}

// Polls read files Dispa may be writing: `gz_lines_after_kill` takes a member cut short
// at the end as not there yet; after a stop every file must be whole (`gz_lines`).

/// Stop with SIGTERM (a clean stop writes everything queued) and wait for the exit.
fn stop(mut child: Spawned) {
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("dispa did not exit");
    assert_eq!(status.code(), Some(0));
}

/// Dispa with its control thread, recording to a `logs` directory where a file stands
/// (every write fails, even as root); returns it and that path.
fn with_unwritable_logs(
    backend: std::net::SocketAddr,
    name: &str,
) -> (Controlled, std::path::PathBuf) {
    let dir = scratch_dir(name);
    let logs = dir.join("logs");
    std::fs::write(&logs, "not a directory").unwrap();
    let d = controlled(&config(
        &[backend],
        "round_robin",
        &format!("{MONITORING}{}", logging_section(&dir)),
    ));
    (d, logs)
}

/// Wait until `n` records are in the gzip files of `logs` and in the database `db`.
fn wait_recorded(logs: &Path, db: &Path, n: usize) {
    assert!(eventually(Duration::from_secs(5), || {
        gz_lines_after_kill(logs).len() == n && db_count(db) == n as i64
    }));
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn records_after_the_files_are_deleted_land_in_new_files() {
    let b = Backend::named("b");
    let dir = scratch_dir("lost-deleted");
    let (logs, db) = (dir.join("logs"), dir.join("traffic.db"));
    let (child, proxy, _) = recording_binary(&dir, b.addr);
    requests(proxy, 30);
    wait_recorded(&logs, &db, 30);
    for f in std::fs::read_dir(&logs).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    // Only the database file, as `rm traffic.db` does: its WAL (with the last rows) must
    // not become the new file's.
    std::fs::remove_file(&db).unwrap();
    requests(proxy, 20);
    stop(child);
    assert_eq!(gz_lines(&logs).len(), 20, "records after the deletion");
    assert_eq!(db_count(&db), 20, "rows after the deletion");
}

#[test]
fn sigusr1_starts_new_files_and_moved_files_keep_their_records() {
    let b = Backend::named("b");
    let dir = scratch_dir("lost-usr1");
    let (logs, db) = (dir.join("logs"), dir.join("traffic.db"));
    let (child, proxy, _) = recording_binary(&dir, b.addr);
    requests(proxy, 10);
    wait_recorded(&logs, &db, 10);
    assert_eq!(files_in(&logs), 1);
    // A rotation tool moves the database away, then tells Dispa.
    let moved = dir.join("traffic.old.db");
    std::fs::rename(&db, &moved).unwrap();
    signal(&child, libc::SIGUSR1);
    // The control thread passes the signal on within ~100 ms: keep sending until the
    // new gzip file appears, then some more.
    let mut sent = 10;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while files_in(&logs) < 2 && std::time::Instant::now() < deadline {
        requests(proxy, 1);
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    requests(proxy, 5);
    sent += 5;
    stop(child);
    assert_eq!(files_in(&logs), 2, "SIGUSR1 starts a new gzip file");
    assert_eq!(gz_lines(&logs).len(), sent);
    // The moved file keeps every row it had (its last ones were still in the WAL at the
    // old path) and the rows written before the reopen; the new one has the rest.
    assert!(db_count(&moved) >= 10, "{}", db_count(&moved));
    assert_eq!(db_count(&moved) + db_count(&db), sent as i64);
}

#[test]
fn records_wait_while_another_process_holds_the_database_lock() {
    let b = Backend::named("b");
    let dir = scratch_dir("lost-locked");
    let (logs, db) = (dir.join("logs"), dir.join("traffic.db"));
    let (child, proxy, status) = recording_binary(&dir, b.addr);
    requests(proxy, 10);
    assert!(eventually(Duration::from_secs(5), || db_count(&db) == 10));
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Traffic for ~4 s while the lock is held.
    for _ in 0..8 {
        requests(proxy, 5);
        std::thread::sleep(Duration::from_millis(500));
    }
    let health = call(status, "GET", "/health").text();
    assert!(health.contains("\"status\":\"degraded\""), "{health}");
    assert!(
        health.contains(&format!("insert into {}", db.display())),
        "the error names the operation and the path: {health}"
    );
    assert!(!health.contains("\"backlog_database\":0"), "{health}");
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    assert!(eventually(Duration::from_secs(10), || db_count(&db) == 50));
    let health = call(status, "GET", "/health").text();
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    stop(child);
    assert_eq!(db_count(&db), 50, "none lost within the bound");
    assert_eq!(gz_lines(&logs).len(), 50);
}

#[test]
fn a_failing_sink_names_the_operation_and_path_in_health_and_metrics() {
    let b = Backend::named("b");
    let (d, logs) = with_unwritable_logs(b.addr, "lost-names");
    requests(d.proxy, 3);
    let expected = format!("create directory {}", logs.display());
    assert!(
        eventually(Duration::from_secs(5), || call(d.status, "GET", "/health")
            .text()
            .contains(&expected)),
        "{}",
        call(d.status, "GET", "/health").text()
    );
    let metrics = call(d.metrics, "GET", "/metrics").text();
    assert!(
        metrics.contains("dispa_traffic_sink_up{sink=\"file\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dispa_traffic_sink_up{sink=\"database\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dispa_traffic_records_backlog{sink=\"file\"} 3"),
        "{metrics}"
    );
}

#[test]
fn retention_runs_without_traffic() {
    let b = Backend::named("b");
    let dir = scratch_dir("lost-retention");
    let (logs, db) = (dir.join("logs"), dir.join("traffic.db"));
    std::fs::create_dir_all(&logs).unwrap();
    let old = logs.join("dispa-traffic-20200101T000000Z-0001.jsonl.gz");
    let f = std::fs::File::create(&old).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(10 * 86_400))
        .unwrap();
    // An old row in an existing database (the schema Dispa makes).
    {
        let toml = config(&[b.addr], "round_robin", &logging_section(&dir));
        let p = proxy(&toml);
        requests(p.local_addr(), 1);
        drop(p);
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute("UPDATE request_rows SET ts_ms = 1000", [])
            .unwrap();
    }
    let toml = config(
        &[b.addr],
        "round_robin",
        &format!("{MONITORING}{}", logging_section(&dir))
            .replace("[logging.file]\n", "[logging.file]\nretention_days = 1\n")
            .replace(
                "[logging.database]\n",
                "[logging.database]\nretention_days = 1\n",
            ),
    );
    let (child, _, _, _) = spawn_binary(&toml);
    assert!(eventually(Duration::from_secs(5), || !old.exists()
        && db_count(&db) == 0));
    stop(child);
}

#[test]
fn a_record_of_a_failed_connect_names_the_target_and_address() {
    let dead = closed_port();
    let dir = scratch_dir("lost-connect");
    let p = proxy(&config(&[dead], "round_robin", &logging_section(&dir)));
    assert_eq!(get(p.local_addr(), "example.com", "/").status, 502);
    drop(p);
    let lines = gz_lines(&dir.join("logs"));
    assert_eq!(lines.len(), 1);
    assert_eq!(json_field(&lines[0], "target"), "b0");
    assert_eq!(json_field(&lines[0], "target_addr"), dead.to_string());
    assert_eq!(json_field(&lines[0], "error"), "connect");
}

#[test]
fn a_sink_that_recovers_after_a_reload_is_healthy_again() {
    let b = Backend::named("b");
    let (d, logs) = with_unwritable_logs(b.addr, "lost-reload");
    requests(d.proxy, 3);
    let degraded = || {
        call(d.status, "GET", "/health")
            .text()
            .contains("\"degraded\"")
    };
    assert!(eventually(Duration::from_secs(5), degraded));
    // A reload while it fails (it clears the rest between tries), then the cause goes.
    assert_eq!(call(d.status, "POST", "/reload").status, 200);
    std::fs::remove_file(&logs).unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        requests(d.proxy, 1);
        !degraded()
    }));
    assert!(gz_lines_after_kill(&logs).len() >= 3);
}
