//! The `dispa` binary as a user runs it.

use std::process::Command;

use super::harness::*;

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dispa-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_the_shipped_config() {
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/config.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("target backend1"));
}

#[test]
fn check_says_when_the_recording_paths_are_not_writable() {
    let dir = scratch_dir("check-writable");
    let blocker = dir.join("blocker");
    std::fs::write(&blocker, "a file, not a directory").unwrap();
    let logs = blocker.join("logs");
    let db = blocker.join("data/traffic.db");
    let path = write_config(
        "unwritable.toml",
        &format!(
            "[domains]\nintercept_domains = [\"example.com\"]\n[[targets.targets]]\nname = \"a\"\nurl = \"http://127.0.0.1:9\"\n[logging]\ntype = \"both\"\n[logging.file]\ndirectory = \"{}\"\n[logging.database]\npath = \"{}\"\n",
            logs.display(),
            db.display()
        ),
    );
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("logging.file.directory {}", logs.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("logging.database.path {}", db.display())),
        "{err}"
    );
    assert!(err.contains("is not a directory"), "{err}");
}

#[test]
fn check_reports_every_error_with_its_key_path_and_exits_2() {
    let path = write_config(
        "bad.toml",
        "[server]\nbind = \"nope\"\nworkrs = 2\n[domains]\nintercept_domains = [\"a b\"]\n[[targets.targets]]\nname = \"x\"\nurl = \"ftp://h\"\nweight = 0\n",
    );
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // Found in a new user's pass: an invalid target is not also "no target at all".
    assert!(!err.contains("at least one target"), "{err}");
    for key in [
        "server.bind",
        "server.workrs: unknown key",
        "domains.intercept_domains[0]",
        "targets.targets[0].url",
        "targets.targets[0].weight",
    ] {
        assert!(err.contains(key), "missing {key} in:\n{err}");
    }
}

/// The seed README's three examples, verbatim.
#[test]
fn seed_readme_examples_load() {
    let examples = [
        r#"[domains]
intercept_domains = ["example.com", "*.test.com"]

[[targets.targets]]
name = "backend1"
url = "http://192.168.1.100:3000"
weight = 3

[[targets.targets]]
name = "backend2"
url = "http://192.168.1.101:3000"
weight = 2

[targets.load_balancing]
type = "weighted"

[targets.health_check]
enabled = true
interval = 30
"#,
        r#"[domains]
intercept_domains = ["*.local.dev"]

[[targets.targets]]
name = "dev-server"
url = "http://localhost:3000"
"#,
        r#"[domains]
intercept_domains = ["api.myapp.com"]

[[targets.targets]]
name = "prod-server-1"
url = "http://10.0.1.10:8080"
weight = 3

[[targets.targets]]
name = "prod-server-2"
url = "http://10.0.1.11:8080"
weight = 2

[targets.health_check]
enabled = true
interval = 10
"#,
    ];
    for ex in examples {
        if let Err(e) = dispa::config::parse(ex) {
            panic!("{e}\n{ex}");
        }
    }
}

#[test]
fn demo_runs_two_backends_and_spreads_load() {
    let (demo, addr, _, tls) = spawn_dispa_tls(&[BIN, "demo", "--port", "0"]);
    let mut c = Client::connect(addr);
    let a = c.get("example.com", "/").text();
    let b = c.get("api.test.com", "/").text();
    assert!(
        a.contains("backend1") && b.contains("backend2"),
        "{a} / {b}"
    );
    assert_eq!(c.get("test.com", "/").status, 404);
    // HTTPS, verified with the certificate the demo made (the one its curl line names).
    let tls = tls.expect("the demo serves HTTPS");
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", demo.0.id())).unwrap();
    let cert = cwd.join("data/demo.pem");
    let trust = super::tls::client_config(&[&cert]);
    let r = super::tls::tls_client(tls, "api.test.com", &trust).get("api.test.com", "/");
    assert!(r.text().contains("hello from backend"), "{}", r.text());
}

#[test]
fn workers_are_pinned_within_the_inherited_affinity_mask() {
    if Command::new("taskset").arg("-V").output().is_err() {
        eprintln!("taskset not installed; skipping");
        return;
    }
    let b = Backend::named("b");
    let path = write_config("pin.toml", &config(&[b.addr], "round_robin", ""));
    let path = path.to_str().unwrap();
    let worker_cpus = |argv: &[&str]| -> Vec<String> {
        let (child, _, _) = spawn_dispa(argv);
        let pid = child.0.id();
        let cpus = |tid: &str| -> String {
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap()
                .trim()
                .to_string()
        };
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|e| {
                let tid = e.ok()?.file_name().into_string().ok()?;
                let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
                comm.starts_with("dispa-worker").then(|| cpus(&tid))
            })
            .collect()
    };
    let free = worker_cpus(&[BIN, "-c", path, "--workers", "2"]);
    assert_eq!(free.len(), 2);
    // Each worker is pinned to a single CPU.
    assert!(free.iter().all(|c| !c.contains(['-', ','])), "{free:?}");
    // Under `taskset -c 1` both workers stay on CPU 1 (when this machine has a CPU 1).
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    if online > 1 {
        let pinned = worker_cpus(&["taskset", "-c", "1", BIN, "-c", path, "--workers", "2"]);
        assert_eq!(pinned, ["1", "1"]);
    }
}

#[test]
fn json_log_format_writes_one_object_per_line() {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .args(["demo", "--port", "0", "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Spawned(child);
    let line = std::io::BufReader::new(stderr)
        .lines()
        .next()
        .unwrap()
        .unwrap();
    drop(child);
    assert!(
        line.starts_with("{\"timestamp\":\"20") && line.ends_with('}'),
        "{line}"
    );
    for part in [
        "\"level\":\"INFO\"",
        "\"message\":\"dispa started\"",
        "\"listen\":\"127.0.0.1:",
        "\"version\":\"",
        "\"workers\":",
        "\"io\":\"",
        "\"config\":\"(demo)\"",
    ] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
}

#[test]
fn traffic_tail_follow_prints_new_requests_as_they_are_recorded() {
    use std::io::BufRead;
    let b = Backend::named("b");
    let dir = scratch_dir("tail-follow");
    let p = proxy(&config(&[b.addr], "round_robin", &logging_section(&dir)));
    let db = dir.join("traffic.db");
    for i in 0..3 {
        assert_eq!(
            get(p.local_addr(), "example.com", &format!("/old{i}")).status,
            200
        );
    }
    assert!(eventually(std::time::Duration::from_secs(5), || {
        traffic("tail", &db, &[]).lines().count() == 3
    }));
    let mut child = Command::new(BIN)
        .args(["traffic", "tail", "-f", "-n", "2", "--db"])
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _child = Spawned(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let next = || {
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("a line")
    };
    assert!(next().contains("example.com/old1"));
    assert!(next().contains("example.com/old2"));
    for i in 0..3 {
        assert_eq!(
            get(p.local_addr(), "example.com", &format!("/new{i}")).status,
            200
        );
    }
    for i in 0..3 {
        let line = next();
        assert!(
            line.contains(&format!("example.com/new{i} -> b0")),
            "{line}"
        );
    }
}

/// `dispa traffic` attaches every shard file it finds, more than SQLite's default of 10
/// and past a missing one.
#[test]
fn traffic_reads_many_shard_files_past_a_missing_one() {
    let dir = scratch_dir("many-shards");
    let db = dir.join("traffic.db");
    let mut files = vec![db.clone()];
    files.extend((2..=12).map(|k| dir.join(format!("traffic.s{k}.db"))));
    for f in &files {
        let out = Command::new(BIN)
            .args(["traffic", "generate", "-n", "10", "--db"])
            .arg(f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The generator never writes into an existing store.
    let again = Command::new(BIN)
        .args(["traffic", "generate", "-n", "10", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let counts =
        "SELECT count(*) AS n FROM requests; SELECT sum(requests) AS n FROM requests_per_minute";
    assert_eq!(traffic("sql", &db, &[counts]), "n\n120\nn\n120\n");
}

/// CLI edges (issue 17, point 8): each subcommand lists only what it takes, the demo
/// refuses a config file instead of ignoring it, and its "port in use" names --port.
#[test]
fn subcommands_take_only_their_own_options_and_the_demo_names_its_port() {
    let out = |args: &[&str]| std::process::Command::new(BIN).args(args).output().unwrap();
    let help = String::from_utf8_lossy(&out(&["traffic", "--help"]).stdout).into_owned();
    assert!(help.contains("--db") && help.contains("--config"), "{help}");
    assert!(
        !help.contains("--workers") && !help.contains("--log-format"),
        "{help}"
    );
    let refused = out(&["demo", "-c", "config/config.toml"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unexpected argument '-c'"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let busy = std::process::Command::new(BIN)
        .args(["demo", "--port", &port])
        .current_dir(scratch_dir("demo-busy"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(1), "{err}");
    assert!(err.contains("dispa demo --port N"), "{err}");
    assert!(!err.contains("in the config"), "{err}");
}

/// Config errors (issue 17, point 4): all at once, duplicates among them; a bad number
/// or duration shows what was found and what is allowed; the status API on the proxy's
/// own port is an error; a port in use is a warning of `dispa check`.
#[test]
fn check_shows_what_was_found_and_sees_ports_that_collide_or_are_taken() {
    let dir = scratch_dir("check-errors");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nbind = \"127.0.0.1:18789\"\nworkers = -3\nshutdown_timeout = \"5 parsecs\"\n\
         [domains]\nintercept_domains = [\"example.com\"]\n\
         [[targets.targets]]\nname = \"a\"\nurl = \"http://127.0.0.1:3000\"\n\
         [[targets.targets]]\nname = \"a\"\nurl = \"http://127.0.0.1:3001\"\n\
         [monitoring]\nhealth_bind = \"0.0.0.0:18789\"\nmetrics_bind = \"127.0.0.1:0\"\n\
         [timeouts]\nkeepalive = \"1d\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("config has 4 error(s)"), "{err}");
    assert!(
        err.contains("server.workers: expected an integer from 0 to 1024, found -3"),
        "{err}"
    );
    assert!(err.contains("found \"5 parsecs\""), "{err}");
    assert!(err.contains("\"1h\", \"1d\""), "{err}");
    assert!(
        err.contains("targets.targets[1].name: duplicate target name \"a\""),
        "{err}"
    );
    assert!(
        err.contains("monitoring.health_bind: 0.0.0.0:18789 is also server.bind"),
        "{err}"
    );
    // A valid config whose port another program holds: a warning, exit 0.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let ok = dir.join("ok.toml");
    std::fs::write(
        &ok,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n[domains]\nintercept_domains = [\"example.com\"]\n\
             [[targets.targets]]\nname = \"a\"\nurl = \"http://127.0.0.1:3000\"\n\
             [monitoring]\nenabled = false\n[logging]\nenabled = false\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&ok)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "warning: server.bind 127.0.0.1:{port} is in use now"
        )),
        "{err}"
    );
}

/// systemd's `Type=notify` (issue 17, point 6): READY=1 once serving, RELOADING=1 with
/// MONOTONIC_USEC then READY=1 around a reload (SIGHUP), STOPPING=1 at a stop.
#[test]
fn systemd_is_told_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;
    let dir = scratch_dir("notify");
    let sock = dir.join("notify.sock");
    let rx = UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let b = Backend::named("b");
    let path = dir.join("d.toml");
    std::fs::write(&path, config(&[b.addr], "round_robin", MONITORING)).unwrap();
    let child = Command::new(BIN)
        .arg("-c")
        .arg(&path)
        .current_dir(&dir)
        .env("NOTIFY_SOCKET", &sock)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Spawned(child);
    let recv = || {
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(recv().starts_with("READY=1\n"));
    signal(&child, libc::SIGHUP);
    let reloading = recv();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert!(recv().starts_with("READY=1\n"));
    signal(&child, libc::SIGTERM);
    assert!(recv().starts_with("STOPPING=1\n"));
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("exit");
    assert_eq!(status.code(), Some(0));
}

/// Containers (issue 17, point 5, in part): the admin token can come from the environment.
#[test]
fn the_admin_token_can_come_from_the_environment() {
    let b = Backend::named("b");
    let toml = config(
        &[b.addr],
        "round_robin",
        &format!("{MONITORING}admin_token_env = \"DISPA_TEST_TOKEN\"\n"),
    );
    let path = write_config("token-env.toml", &toml);
    let check = |token: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(["check", "-c"])
            .arg(&path)
            .env_remove("DISPA_TEST_TOKEN");
        if let Some(t) = token {
            c.env("DISPA_TEST_TOKEN", t);
        }
        c.output().unwrap()
    };
    let ok = check(Some("s3cret"));
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = check(None);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "monitoring.admin_token_env: environment variable DISPA_TEST_TOKEN is not set"
        ),
        "{err}"
    );
}
