//! Walks the TOML tree into a [`Config`], recording every unknown key and bad value with its
//! dotted path instead of stopping at the first. Defaults live here, next to their keys.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

use super::{
    Algorithm, Capture, Config, DatabaseSink, Domains, FieldError, FileSink, HashKey, HealthCheck,
    IoDriver, Limits, Logging, MAX_CAPTURE_BODY, MAX_SHARDS, Monitoring, Postgres, Rotation,
    Server, Sinks, Target, TargetTls, Targets, Timeouts, TlsListener, Upstream, UringFlags,
};

/// Decode the whole file. Returns `None` only when a required section is missing entirely
/// (the error is recorded); otherwise a config built from values and defaults.
pub(super) fn decode(root: &Table, errors: &mut Vec<FieldError>) -> Option<Config> {
    let mut top = Section::new("", root);
    let (server, seed_timeouts) = server(top.table("server", errors), errors);
    let domains = domains(top.table("domains", errors), errors);
    let targets = targets(top.table("targets", errors), errors);
    let upstream = upstream(top.table("upstream", errors), errors);
    let timeouts = timeouts(top.table("timeouts", errors), seed_timeouts, errors);
    let limits = limits(top.table("limits", errors), errors);
    let monitoring = monitoring(top.table("monitoring", errors), errors);
    let logging = logging(top.table("logging", errors), errors);
    top.finish(errors);
    Some(Config {
        tls: Default::default(),
        server,
        domains: domains?,
        targets: targets?,
        upstream,
        timeouts,
        limits,
        monitoring,
        logging,
    })
}

fn logging(s: Option<Section<'_>>, errors: &mut Vec<FieldError>) -> Logging {
    let mut s = s.unwrap_or_else(|| Section::empty("logging"));
    let enabled = s.bool("enabled", true, errors);
    let choices: [(&[&str], Sinks); 3] = [
        (&["both"], Sinks::Both),
        (&["file"], Sinks::File),
        (&["database"], Sinks::Database),
    ];
    let sinks = s.choice("type", &choices, Sinks::Both, errors);
    // The original dispa's `[logging] retention_days` (both stores) and `rotation = true`.
    let retention = s.uint("retention_days", 0, 0, 36500, errors) as u32;
    let retention_given = s.has("retention_days");
    let rotate = s.bool("rotation", true, errors);
    let mut f = s
        .table("file", errors)
        .unwrap_or_else(|| Section::empty("logging.file"));
    let rotation_default = if rotate {
        Rotation::Hourly
    } else {
        Rotation::Never
    };
    let rotation = match f.get("rotation") {
        Some(Value::Boolean(true)) => Rotation::Hourly,
        Some(Value::Boolean(false)) => Rotation::Never,
        _ => {
            let choices: [(&[&str], Rotation); 3] = [
                (&["hourly"], Rotation::Hourly),
                (&["daily"], Rotation::Daily),
                (&["never", "size"], Rotation::Never),
            ];
            f.choice("rotation", &choices, rotation_default, errors)
        }
    };
    let file_retention = if retention_given { retention } else { 7 };
    let db_retention = if retention_given { retention } else { 30 };
    let file = FileSink {
        directory: f
            .string("directory", errors)
            .unwrap_or_else(|| "logs".into())
            .into(),
        max_file_size: f.uint("max_file_size", 100 << 20, 4096, u64::MAX >> 1, errors),
        rotation,
        retention_days: f.uint("retention_days", file_retention.into(), 0, 36500, errors) as u32,
        max_total_size: f.uint("max_total_size", 0, 0, u64::MAX >> 1, errors),
    };
    f.finish(errors);
    let mut d = s
        .table("database", errors)
        .unwrap_or_else(|| Section::empty("logging.database"));
    let mut postgres = None;
    let path = match d.get_alias("path", "url") {
        None => PathBuf::from("data/traffic.db"),
        Some((key, v)) => match v.as_str() {
            Some(url) if is_postgres_url(url) => {
                postgres = Some(postgres_store(&mut d, key, url, errors));
                PathBuf::new()
            }
            // The seed wrote `url = "sqlite:data/traffic.db"` (also `sqlite://...`).
            Some(p) => {
                let p = p
                    .strip_prefix("sqlite://")
                    .or_else(|| p.strip_prefix("sqlite:"))
                    .unwrap_or(p);
                if p.is_empty() || p.contains("://") {
                    d.error(
                        errors,
                        key,
                        "expected a file path, \"sqlite:PATH\" or \"postgres://USER@HOST:PORT/DB\"",
                    );
                }
                PathBuf::from(p)
            }
            None => {
                d.error(errors, key, "expected a string");
                PathBuf::new()
            }
        },
    };
    if postgres.is_none() {
        for key in ["password_file", "password_env", "instance", "required"] {
            if d.get(key).is_some() {
                d.error(
                    errors,
                    key,
                    "only for a PostgreSQL store (url = \"postgres://...\")",
                );
            }
        }
    }
    let database = DatabaseSink {
        path,
        retention_days: d.uint("retention_days", db_retention.into(), 0, 36500, errors) as u32,
        postgres,
    };
    d.finish(errors);
    let batch_size = s.uint("batch_size", 1024, 1, 1_000_000, errors) as usize;
    let flush_interval = match s.get("flush_interval_ms") {
        None => Duration::from_millis(200),
        Some(_) => Duration::from_millis(s.uint("flush_interval_ms", 200, 1, 3_600_000, errors)),
    };
    let queue_size = s.uint("queue_size", 65536, 16, 16 << 20, errors) as usize;
    let max_backlog = s.uint("max_backlog", 262_144, 0, 64 << 20, errors) as usize;
    let shards = s.uint("shards", 0, 0, MAX_SHARDS as u64, errors) as usize;
    let capture = capture(s.table("capture", errors), errors);
    s.finish(errors);
    Logging {
        enabled,
        sinks,
        file,
        database,
        batch_size,
        flush_interval,
        queue_size,
        max_backlog,
        shards,
        capture,
    }
}

fn capture(s: Option<Section<'_>>, errors: &mut Vec<FieldError>) -> Capture {
    let mut s = s.unwrap_or_else(|| Section::empty("logging.capture"));
    let mut domains = Vec::new();
    for (i, d) in s
        .strings("domains", errors)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        match normalize_pattern(&d) {
            Ok(p) => domains.push(p),
            Err(reason) => s.error(
                errors,
                &format!("domains[{i}]"),
                &format!("{d:?}: {reason}"),
            ),
        }
    }
    let mut names = |key: &'static str, s: &mut Section<'_>| -> Vec<String> {
        let list = s.strings(key, errors).unwrap_or_default();
        for (i, n) in list.iter().enumerate() {
            if n != "*" && (n.is_empty() || !n.bytes().all(crate::http::parse::is_tchar)) {
                s.error(
                    errors,
                    &format!("{key}[{i}]"),
                    &format!("{n:?}: not a header field name"),
                );
            }
        }
        list.into_iter().map(|n| n.to_ascii_lowercase()).collect()
    };
    let request_headers = names("request_headers", &mut s);
    let response_headers = names("response_headers", &mut s);
    let max_body_bytes = s.uint("max_body_bytes", 0, 0, MAX_CAPTURE_BODY, errors) as usize;
    s.finish(errors);
    Capture {
        domains,
        request_headers,
        response_headers,
        max_body_bytes,
    }
}

fn monitoring(s: Option<Section<'_>>, errors: &mut Vec<FieldError>) -> Monitoring {
    let mut s = s.unwrap_or_else(|| Section::empty("monitoring"));
    let enabled = s.bool("enabled", true, errors);
    let mut addr = |s: &mut Section<'_>, bind: &'static str, port: &'static str, default: u16| {
        let loopback = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        match s.get(bind) {
            Some(v) => match v.as_str().map(str::parse::<SocketAddr>) {
                Some(Ok(a)) => a,
                _ => {
                    s.error(errors, bind, "expected an address like \"127.0.0.1:8081\"");
                    loopback(default)
                }
            },
            None => loopback(s.uint(port, u64::from(default), 0, 65535, errors) as u16),
        }
    };
    let health_bind = addr(&mut s, "health_bind", "health_check_port", 8081);
    let metrics_bind = addr(&mut s, "metrics_bind", "metrics_port", 9090);
    let mut admin_token = s.string("admin_token", errors).filter(|t| !t.is_empty());
    // The token from the environment (containers: `DISPA_ADMIN_TOKEN=... docker compose up`).
    if let Some(var) = s.string("admin_token_env", errors) {
        match std::env::var(&var) {
            Ok(t) if admin_token.is_none() && !t.is_empty() => admin_token = Some(t),
            Ok(_) if admin_token.is_some() => s.error(
                errors,
                "admin_token_env",
                "give the token once: admin_token or admin_token_env",
            ),
            _ => s.error(
                errors,
                "admin_token_env",
                &format!("environment variable {var} is not set (or empty)"),
            ),
        }
    }
    s.finish(errors);
    Monitoring {
        enabled,
        health_bind,
        metrics_bind,
        admin_token,
    }
}

/// The original dispa's timeouts in `[server]`: `keep_alive_timeout` (Dispa's
/// `timeouts.keepalive`) and `request_timeout` (`timeouts.upstream_response`); the
/// `[timeouts]` keys win when both are given.
#[derive(Default)]
struct SeedTimeouts {
    keep_alive: Option<Duration>,
    request: Option<Duration>,
}

fn server(s: Option<Section<'_>>, errors: &mut Vec<FieldError>) -> (Server, SeedTimeouts) {
    let mut s = s.unwrap_or_else(|| Section::empty("server"));
    let bind = match s.get_alias("bind", "bind_address") {
        Some((key, v)) => match v.as_str().map(str::parse::<SocketAddr>) {
            Some(Ok(addr)) => addr,
            _ => {
                s.error(
                    errors,
                    key,
                    "expected an address like \"0.0.0.0:8080\" or \"[::]:8080\"",
                );
                default_bind()
            }
        },
        None => default_bind(),
    };
    let workers = s.uint("workers", 0, 0, 1024, errors) as usize;
    let drivers: [(&[&str], IoDriver); 3] = [
        (&["auto"], IoDriver::Auto),
        (&["io_uring"], IoDriver::IoUring),
        (&["legacy", "epoll"], IoDriver::Legacy),
    ];
    let io_driver = s.choice("io_driver", &drivers, IoDriver::Auto, errors);
    let mut uring = UringFlags::default();
    let flags = s
        .strings("uring_flags", errors)
        .unwrap_or_else(|| vec!["coop_taskrun".to_string()]);
    for flag in flags {
        match flag.as_str() {
            "coop_taskrun" => uring.coop_taskrun = true,
            "single_issuer" => uring.single_issuer = true,
            "defer_taskrun" => uring.defer_taskrun = true,
            other => s.error(
                errors,
                "uring_flags",
                &format!(
                    "unknown flag {other:?} (known: coop_taskrun, single_issuer, defer_taskrun)"
                ),
            ),
        }
    }
    if uring.defer_taskrun && !uring.single_issuer {
        s.error(
            errors,
            "uring_flags",
            "defer_taskrun requires single_issuer",
        );
    }
    let uring_entries = s.uint("uring_entries", 1024, 8, 32768, errors) as u32;
    let backlog = s.uint("backlog", 4096, 1, 65535, errors) as u32;
    let shutdown_timeout = s.duration("shutdown_timeout", Duration::from_secs(30), errors);
    let scheduler_hints = s.bool("scheduler_hints", true, errors);
    let tls = s.table("tls", errors).map(|t| tls_listener(t, errors));
    let seed = SeedTimeouts {
        keep_alive: s.duration_opt("keep_alive_timeout", errors),
        request: s.duration_opt("request_timeout", errors),
    };
    s.finish(errors);
    let server = Server {
        tls,
        shutdown_timeout,
        scheduler_hints,
        bind,
        workers,
        io_driver,
        uring,
        uring_entries,
        backlog,
    };
    (server, seed)
}

/// `[server.tls]`: a TLS listener beside the plain one. Certificates are read later
/// (`super::tls_material`), once every path is known.
fn tls_listener(mut t: Section<'_>, errors: &mut Vec<FieldError>) -> TlsListener {
    let bind = match t.string("bind", errors).map(|b| b.parse::<SocketAddr>()) {
        Some(Ok(addr)) => addr,
        Some(Err(_)) => {
            t.error(errors, "bind", "expected an address like \"0.0.0.0:8443\"");
            SocketAddr::from(([0, 0, 0, 0], 8443))
        }
        None => SocketAddr::from(([0, 0, 0, 0], 8443)),
    };
    let handshake_timeout = t.duration("handshake_timeout", Duration::from_secs(10), errors);
    let mut certificates = Vec::new();
    for mut c in t.tables("certificates", errors) {
        let cert = c.string("cert", errors);
        let key = c.string("key", errors);
        for (name, v) in [("cert", &cert), ("key", &key)] {
            if v.is_none() && !c.has(name) {
                c.error(errors, name, "required: a PEM file");
            }
        }
        c.finish(errors);
        if let (Some(cert), Some(key)) = (cert, key) {
            certificates.push((PathBuf::from(cert), PathBuf::from(key)));
        }
    }
    if !t.has("certificates") {
        t.error(
            errors,
            "certificates",
            "required: at least one [[server.tls.certificates]] with cert and key",
        );
    }
    t.finish(errors);
    TlsListener {
        bind,
        certificates,
        handshake_timeout,
    }
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

fn domains(s: Option<Section<'_>>, errors: &mut Vec<FieldError>) -> Option<Domains> {
    let Some(mut s) = s else {
        errors.push(FieldError {
            path: "domains".into(),
            reason: "missing section: [domains] with intercept_domains is required".into(),
        });
        return None;
    };
    let intercept = match s.strings("intercept_domains", errors) {
        Some(list) => list,
        None => {
            if !s.has("intercept_domains") {
                s.error(
                    errors,
                    "intercept_domains",
                    "required: the domains to intercept",
                );
            }
            Vec::new()
        }
    };
    let exclude = s.strings("exclude_domains", errors).unwrap_or_default();
    // The original dispa's switch: wildcards are always on in Dispa.
    if !s.bool("wildcard_support", true, errors) {
        s.error(
            errors,
            "wildcard_support",
            "wildcards cannot be turned off in Dispa: remove the key and list only exact \
             names in intercept_domains",
        );
    }
    let mut check = |key: &str, list: Vec<String>| -> Vec<String> {
        list.into_iter()
            .enumerate()
            .filter_map(|(i, d)| match normalize_pattern(&d) {
                Ok(p) => Some(p),
                Err(reason) => {
                    s.error(errors, &format!("{key}[{i}]"), &format!("{d:?}: {reason}"));
                    None
                }
            })
            .collect()
    };
    let intercept = check("intercept_domains", intercept);
    let exclude = check("exclude_domains", exclude);
    s.finish(errors);
    Some(Domains { intercept, exclude })
}

/// Lowercase a domain pattern and check its syntax: `name.tld` or `*.name.tld`.
fn normalize_pattern(raw: &str) -> Result<String, &'static str> {
    let p = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = p.strip_prefix("*.").unwrap_or(&p);
    if name.is_empty() {
        return Err("empty domain");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split('.').all(label_ok) {
        return Err(
            "expected \"example.com\" or \"*.example.com\" (letters, digits, '-', '_' per label)",
        );
    }
    Ok(p)
}

fn targets(s: Option<Section<'_>>, errors: &mut Vec<FieldError>) -> Option<Targets> {
    let Some(mut s) = s else {
        errors.push(FieldError {
            path: "targets".into(),
            reason: "missing section: at least one [[targets.targets]] is required".into(),
        });
        return None;
    };
    let list: Vec<Target> = s
        .tables("targets", errors)
        .into_iter()
        .filter_map(|t| target(t, errors))
        .collect();
    if !s.has("targets") {
        s.error(
            errors,
            "targets",
            "required: at least one [[targets.targets]]",
        );
    }
    let algorithm = match s.table("load_balancing", errors) {
        Some(mut lb) => {
            // The original dispa's spellings (`roundrobin`, `leastconnections`, ...) too.
            let choices: [(&[&str], Algorithm); 5] = [
                (&["round_robin", "roundrobin"], Algorithm::RoundRobin),
                (
                    &["weighted", "weighted_round_robin", "weightedroundrobin"],
                    Algorithm::Weighted,
                ),
                (&["random"], Algorithm::Random),
                (
                    &["least_connections", "least_conn", "leastconnections"],
                    Algorithm::LeastConnections,
                ),
                (&["consistent_hash", "hash"], Algorithm::ConsistentHash),
            ];
            let mut a = lb.choice("type", &choices, Algorithm::RoundRobin, errors);
            // The original dispa's switch: sticky by the client's address.
            if lb.bool("sticky_sessions", false, errors) {
                a = Algorithm::ConsistentHash;
            }
            let key = match lb.string("hash_key", errors) {
                None => HashKey::ClientIp,
                Some(k) => {
                    match k.split_once(':') {
                        _ if k == "client_ip" => HashKey::ClientIp,
                        Some(("header", name)) if !name.is_empty() => {
                            HashKey::Header(name.trim().to_ascii_lowercase())
                        }
                        Some(("cookie", name)) if !name.is_empty() => {
                            HashKey::Cookie(name.trim().to_string())
                        }
                        _ => {
                            lb.error(
                            errors,
                            "hash_key",
                            &format!("{k:?}: expected \"client_ip\", \"header:NAME\" or \"cookie:NAME\""),
                        );
                            HashKey::ClientIp
                        }
                    }
                }
            };
            let factor = match lb.get("hash_load_factor") {
                None => crate::balance::DEFAULT_LOAD_FACTOR,
                Some(v) => match v.as_float().or(v.as_integer().map(|i| i as f64)) {
                    Some(f) if (0.0..=10.0).contains(&f) => f,
                    _ => {
                        lb.error(
                            errors,
                            "hash_load_factor",
                            &format!("expected a number from 0 to 10 (ε: a target takes requests up to (1 + ε) × the average in flight), found {}", shown(v)),
                        );
                        crate::balance::DEFAULT_LOAD_FACTOR
                    }
                },
            };
            lb.finish(errors);
            (a, key, factor)
        }
        None => (
            Algorithm::RoundRobin,
            HashKey::ClientIp,
            crate::balance::DEFAULT_LOAD_FACTOR,
        ),
    };
    let (algorithm, hash_key, hash_load_factor) = algorithm;
    let health_check = health_check(s.table("health_check", errors), errors);
    let resolve_interval = s.duration("resolve_interval", Duration::from_secs(30), errors);
    s.finish(errors);
    Some(Targets {
        targets: list,
        algorithm,
        hash_key,
        hash_load_factor,
        resolve_interval,
        health_check,
    })
}

fn target(mut t: Section<'_>, errors: &mut Vec<FieldError>) -> Option<Target> {
    let name = t.string("name", errors);
    if name.is_none() && !t.has("name") {
        t.error(errors, "name", "required");
    }
    let url = t.string("url", errors);
    if url.is_none() && !t.has("url") {
        t.error(errors, "url", "required, e.g. \"http://127.0.0.1:3000\"");
    }
    let weight = t.uint("weight", 1, 1, 1_000_000, errors) as u32;
    let timeout = t.duration_opt("timeout", errors);
    let rewrite_host = t.bool("rewrite_host", false, errors);
    let tls_verify = t.bool("tls_verify", true, errors);
    let parsed = url.as_deref().and_then(|u| match parse_target_url(u) {
        Ok(p) => Some(p),
        Err(reason) => {
            t.error(errors, "url", &format!("{u:?}: {reason}"));
            None
        }
    });
    t.finish(errors);
    let (addr, authority, path_prefix, https) = parsed?;
    let tls = https.then(|| TargetTls {
        server_name: host_of(&authority).to_string(),
        verify: tls_verify,
    });
    Some(Target {
        tls,
        name: name?,
        url: url?,
        addr,
        authority,
        path_prefix,
        weight,
        timeout,
        rewrite_host,
    })
}

/// The host of an authority (`[::1]:8443` → `::1`, `a.example:443` → `a.example`).
pub fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// `http[s]://host[:port][/path]` → (resolved address, authority, path prefix without
/// trailing `/`, whether it is https). Names are resolved here, once, because workers must
/// never block on DNS.
fn parse_target_url(url: &str) -> Result<(SocketAddr, String, String, bool), String> {
    let (rest, https) = if let Some(rest) = url.strip_prefix("http://") {
        (rest, false)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (rest, true)
    } else {
        return Err("expected a URL starting with http:// or https://".into());
    };
    let default_port = if https { 443 } else { 80 };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("expected http://host[:port][/path]".into());
    }
    if path.contains(['?', '#', ' ']) {
        return Err("the path may not contain '?', '#' or spaces".into());
    }
    let with_port = if authority.starts_with('[') {
        if authority.ends_with(']') {
            format!("{authority}:{default_port}")
        } else {
            authority.to_string()
        }
    } else if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolved to no address"))?;
    Ok((
        addr,
        authority.to_string(),
        path.trim_end_matches('/').to_string(),
        https,
    ))
}

fn health_check(s: Option<Section<'_>>, errors: &mut Vec<FieldError>) -> HealthCheck {
    let mut s = s.unwrap_or_else(|| Section::empty("targets.health_check"));
    let enabled = s.bool("enabled", true, errors);
    let interval = s.duration("interval", Duration::from_secs(30), errors);
    let timeout = s.duration("timeout", Duration::from_secs(5), errors);
    let path = s.string("path", errors).unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        s.error(errors, "path", "must start with '/'");
    }
    let host = s.string("host", errors);
    let expected_status = match s.get("expected_status") {
        None => (200, 399),
        Some(v) => match status_range(v) {
            Some(r) => r,
            None => {
                s.error(
                    errors,
                    "expected_status",
                    "expected a status like 200 or a range \"200-399\"",
                );
                (200, 399)
            }
        },
    };
    let healthy_threshold = s.uint("healthy_threshold", 2, 1, 100, errors) as u32;
    let unhealthy_threshold = s.uint("unhealthy_threshold", 3, 1, 100, errors) as u32;
    let max_fails = s.uint("max_fails", 3, 0, 1000, errors) as u32;
    let fail_timeout = s.duration("fail_timeout", Duration::from_secs(10), errors);
    s.finish(errors);
    HealthCheck {
        host,
        max_fails,
        fail_timeout,
        enabled,
        interval,
        timeout,
        path,
        expected_status,
        healthy_threshold,
        unhealthy_threshold,
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `[logging.database]` with `url = "postgres://..."`: the URL kept without its password,
/// the password from the URL, `password_file` or `password_env` (one of them).
fn postgres_store(
    d: &mut Section<'_>,
    key: &str,
    url: &str,
    errors: &mut Vec<FieldError>,
) -> Postgres {
    let (redacted, in_url) = split_password(url);
    if let Err(e) = redacted.parse::<postgres::Config>() {
        d.error(errors, key, &format!("not a PostgreSQL URL: {e}"));
    }
    if redacted.contains("password=") {
        d.error(
            errors,
            key,
            "the password goes before the host (postgres://USER:PASSWORD@HOST/DB), in \
             password_file or in password_env, not in the query (it would be shown)",
        );
    }
    let file = d.string("password_file", errors);
    let env = d.string("password_env", errors);
    let given = [in_url.is_some(), file.is_some(), env.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        d.error(
            errors,
            "password_file",
            "give the password once: in the URL, password_file or password_env",
        );
    }
    let password = if let Some(f) = file {
        match std::fs::read_to_string(&f) {
            Ok(p) => Some(p.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => {
                d.error(errors, "password_file", &format!("{f}: {e}"));
                None
            }
        }
    } else if let Some(var) = env {
        match std::env::var(&var) {
            Ok(p) => Some(p),
            Err(_) => {
                d.error(
                    errors,
                    "password_env",
                    &format!("environment variable {var} is not set"),
                );
                None
            }
        }
    } else {
        in_url
    };
    let instance = d.string("instance", errors).unwrap_or_else(host_name);
    Postgres {
        url: redacted,
        password,
        instance,
        required: d.bool("required", false, errors),
    }
}

/// The URL without the password of its user part, and that password (percent-decoded).
pub fn split_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    // The user part ends at the last '@' before the query (a password may hold '/').
    let query = rest.find('?').unwrap_or(rest.len());
    let Some(at) = rest[..query].rfind('@') else {
        return (url.to_string(), None);
    };
    let user_info = &rest[..at];
    let Some((user, password)) = user_info.split_once(':') else {
        return (url.to_string(), None);
    };
    let redacted = format!("{scheme}://{user}@{}", &rest[at + 1..]);
    (redacted, Some(percent_decode(password)))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This machine's host name (the default `instance`).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into a buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    if rc == 0 && end > 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "dispa".to_string()
    }
}

fn status_range(v: &Value) -> Option<(u16, u16)> {
    let ok = |c: i64| (100..=599).contains(&c);
    match v {
        Value::Integer(c) if ok(*c) => Some((*c as u16, *c as u16)),
        Value::String(s) => {
            let (a, b) = s.split_once('-')?;
            let (a, b): (i64, i64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (ok(a) && ok(b) && a <= b).then_some((a as u16, b as u16))
        }
        _ => None,
    }
}

fn upstream(s: Option<Section<'_>>, errors: &mut Vec<FieldError>) -> Upstream {
    let mut s = s.unwrap_or_else(|| Section::empty("upstream"));
    let u = Upstream {
        keepalive: s.bool("keepalive", true, errors),
        max_idle_per_target: s.uint("max_idle_per_target", 1024, 0, 100_000, errors) as usize,
        max_connections_per_target: s.uint("max_connections_per_target", 0, 0, 1_000_000, errors)
            as usize,
        max_tries: s.uint("max_tries", 3, 1, 100, errors) as u32,
        ca_file: s.string("ca_file", errors).map(PathBuf::from),
    };
    s.finish(errors);
    u
}

fn timeouts(s: Option<Section<'_>>, seed: SeedTimeouts, errors: &mut Vec<FieldError>) -> Timeouts {
    let mut s = s.unwrap_or_else(|| Section::empty("timeouts"));
    let secs = Duration::from_secs;
    let connect = s.duration("connect", secs(5), errors);
    let t = Timeouts {
        connect,
        queue: s.duration("queue", connect, errors),
        upstream_response: s.duration(
            "upstream_response",
            seed.request.unwrap_or(secs(60)),
            errors,
        ),
        upstream_idle: s.duration("upstream_idle", secs(30), errors),
        client_head: s.duration("client_head", secs(30), errors),
        client_body: s.duration("client_body", secs(60), errors),
        keepalive: s.duration("keepalive", seed.keep_alive.unwrap_or(secs(75)), errors),
        send: s.duration("send", secs(60), errors),
        expect_continue: s.duration("expect_continue", secs(1), errors),
        tunnel_idle: s.duration("tunnel_idle", secs(300), errors),
    };
    s.finish(errors);
    t
}

fn limits(s: Option<Section<'_>>, errors: &mut Vec<FieldError>) -> Limits {
    let mut s = s.unwrap_or_else(|| Section::empty("limits"));
    let l = Limits {
        max_head_bytes: s.uint("max_head_bytes", 16 * 1024, 1024, 1024 * 1024, errors) as usize,
        max_uri_bytes: s.uint("max_uri_bytes", 8 * 1024, 64, 1024 * 1024, errors) as usize,
        max_headers: s.uint(
            "max_headers",
            100,
            8,
            crate::http::MAX_HEADERS as u64,
            errors,
        ) as usize,
        max_connections: s.uint("max_connections", 16384, 1, 10_000_000, errors) as usize,
        max_body_bytes: s.uint("max_body_bytes", 0, 0, 1 << 50, errors),
    };
    s.finish(errors);
    l
}

/// One TOML table being read: remembers which keys were asked for so that
/// [`Section::finish`] can report the rest as unknown.
struct Section<'a> {
    path: String,
    table: Option<&'a Table>,
    known: Vec<&'a str>,
}

impl<'a> Section<'a> {
    fn new(path: &str, table: &'a Table) -> Self {
        Section {
            path: path.to_string(),
            table: Some(table),
            known: Vec::new(),
        }
    }

    fn empty(path: &str) -> Self {
        Section {
            path: path.to_string(),
            table: None,
            known: Vec::new(),
        }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    fn error(&self, errors: &mut Vec<FieldError>, key: &str, reason: &str) {
        errors.push(FieldError {
            path: self.key_path(key),
            reason: reason.to_string(),
        });
    }

    fn has(&self, key: &str) -> bool {
        self.table.is_some_and(|t| t.contains_key(key))
    }

    fn get(&mut self, key: &'a str) -> Option<&'a Value> {
        self.known.push(key);
        self.table?.get(key)
    }

    /// A key with an accepted alias; returns the spelling that was used.
    fn get_alias(&mut self, key: &'a str, alias: &'a str) -> Option<(&'a str, &'a Value)> {
        match (self.get(key), self.get(alias)) {
            (Some(v), _) => Some((key, v)),
            (None, Some(v)) => Some((alias, v)),
            (None, None) => None,
        }
    }

    fn typed<T>(
        &mut self,
        key: &'a str,
        errors: &mut Vec<FieldError>,
        expected: &str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let v = self.get(key)?;
        let out = f(v);
        if out.is_none() {
            self.error(
                errors,
                key,
                &format!("expected {expected}, found {}", shown(v)),
            );
        }
        out
    }

    fn string(&mut self, key: &'a str, errors: &mut Vec<FieldError>) -> Option<String> {
        self.typed(key, errors, "a string", |v| v.as_str().map(str::to_string))
    }

    fn bool(&mut self, key: &'a str, default: bool, errors: &mut Vec<FieldError>) -> bool {
        self.typed(key, errors, "true or false", Value::as_bool)
            .unwrap_or(default)
    }

    fn uint(
        &mut self,
        key: &'a str,
        default: u64,
        min: u64,
        max: u64,
        errors: &mut Vec<FieldError>,
    ) -> u64 {
        let expected = format!("an integer from {min} to {max}");
        self.typed(key, errors, &expected, |v| {
            v.as_integer()
                .and_then(|i| u64::try_from(i).ok())
                .filter(|i| (min..=max).contains(i))
        })
        .unwrap_or(default)
    }

    fn strings(&mut self, key: &'a str, errors: &mut Vec<FieldError>) -> Option<Vec<String>> {
        self.typed(key, errors, "an array of strings", |v| {
            v.as_array()?
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect()
        })
    }

    fn duration_opt(&mut self, key: &'a str, errors: &mut Vec<FieldError>) -> Option<Duration> {
        self.typed(
            key,
            errors,
            "a duration: seconds as a number, or a number with a unit: \"500ms\", \"5s\", \"2m\", \"1h\", \"1d\"",
            parse_duration,
        )
    }

    fn duration(
        &mut self,
        key: &'a str,
        default: Duration,
        errors: &mut Vec<FieldError>,
    ) -> Duration {
        self.duration_opt(key, errors).unwrap_or(default)
    }

    fn table(&mut self, key: &'a str, errors: &mut Vec<FieldError>) -> Option<Section<'a>> {
        let path = self.key_path(key);
        self.typed(key, errors, "a table", Value::as_table)
            .map(|t| Section::new(&path, t))
    }

    /// An array of tables (`[[key]]`), each section named `key[i]`.
    fn tables(&mut self, key: &'a str, errors: &mut Vec<FieldError>) -> Vec<Section<'a>> {
        let path = self.key_path(key);
        let Some(items) = self.typed(key, errors, "an array of tables", Value::as_array) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_table() {
                Some(t) => out.push(Section::new(&format!("{path}[{i}]"), t)),
                None => errors.push(FieldError {
                    path: format!("{path}[{i}]"),
                    reason: "expected a table".into(),
                }),
            }
        }
        out
    }

    fn finish(self, errors: &mut Vec<FieldError>) {
        let Some(table) = self.table else { return };
        for key in table.keys() {
            if !self.known.contains(&key.as_str()) {
                let reason = match did_you_mean(key, &self.known) {
                    Some(k) => format!("unknown key (did you mean `{k}`?)"),
                    None => "unknown key".to_string(),
                };
                self.error(errors, key, &reason);
            }
        }
    }

    /// A string key naming one of `choices` (each with the spellings it accepts, the first
    /// being Dispa's own); anything else is an error that lists them and suggests the
    /// closest.
    fn choice<T: Copy>(
        &mut self,
        key: &'a str,
        choices: &[(&[&str], T)],
        default: T,
        errors: &mut Vec<FieldError>,
    ) -> T {
        let Some(given) = self.string(key, errors) else {
            return default;
        };
        if let Some((_, v)) = choices
            .iter()
            .find(|(names, _)| names.contains(&given.as_str()))
        {
            return *v;
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| n[0]).collect();
        let all: Vec<&str> = choices
            .iter()
            .flat_map(|(n, _)| n.iter().copied())
            .collect();
        let list = names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let hint = did_you_mean(&given, &all)
            .map(|k| {
                let own = choices
                    .iter()
                    .find(|(n, _)| n.contains(&k))
                    .map_or(k, |(n, _)| n[0]);
                format!(" (did you mean {own:?}?)")
            })
            .unwrap_or_default();
        self.error(
            errors,
            key,
            &format!("{given:?} is not one of {list}{hint}"),
        );
        default
    }
}

/// A value as an error shows it: a scalar as written (`-3`, `"5 parsecs"`), a table or
/// array by its type.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() <= 60 => format!("{s:?}"),
        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Datetime(_) => {
            v.to_string()
        }
        other => other.type_str().to_string(),
    }
}

/// The known name closest to `given` (at most 2 edits, ignoring case, `_` and `-`), if any.
fn did_you_mean<'k>(given: &str, known: &[&'k str]) -> Option<&'k str> {
    let norm = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let g = norm(given);
    known
        .iter()
        .map(|k| (edit_distance(&g, &norm(k)), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(prev + usize::from(ca != cb));
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Seconds as an integer or float, or a string in [`parse_duration_text`]'s syntax.
fn parse_duration(v: &Value) -> Option<Duration> {
    match v {
        Value::Integer(i) if *i >= 0 => Some(Duration::from_secs(*i as u64)),
        Value::Float(f) if f.is_finite() && *f >= 0.0 => Some(Duration::from_secs_f64(*f)),
        Value::String(s) => parse_duration_text(s),
        _ => None,
    }
}

/// The one duration syntax, in the config and on the command line (`--since`): a number
/// of seconds, or a number with a unit `ms`, `s`, `m`, `h` or `d` (`250ms`, `1.5s`, `15m`,
/// `1d`).
pub fn parse_duration_text(text: &str) -> Option<Duration> {
    let s = text.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_postgres_password_is_taken_out_of_the_url() {
        let split = |u: &str| super::split_password(u);
        assert_eq!(
            split("postgres://u:p%40ss@h:5432/db"),
            ("postgres://u@h:5432/db".into(), Some("p@ss".into()))
        );
        // A '/' or '@' in the password: the user part ends at the last '@'.
        assert_eq!(
            split("postgres://u:p/ss@w@h/db?sslmode=disable"),
            (
                "postgres://u@h/db?sslmode=disable".into(),
                Some("p/ss@w".into())
            )
        );
        assert_eq!(
            split("postgres://u@h/db"),
            ("postgres://u@h/db".into(), None)
        );
        assert_eq!(split("postgres://h/db"), ("postgres://h/db".into(), None));
    }

    use super::*;

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(
            parse_duration(&Value::Integer(30)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_duration(&Value::Float(0.5)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration(&"250ms".into()),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_duration(&"2m".into()), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_duration(&"1d".into()),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_duration(&"90".into()), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration(&"5 parsecs".into()), None);
        assert_eq!(parse_duration(&Value::Integer(-1)), None);
    }

    #[test]
    fn target_url_keeps_prefix_and_defaults_port() {
        let (addr, auth, prefix, https) = parse_target_url("http://127.0.0.1/api/").unwrap();
        assert_eq!(addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(auth, "127.0.0.1");
        assert_eq!(prefix, "/api");
        assert!(!https);
        let (addr, _, prefix, _) = parse_target_url("http://[::1]:3000").unwrap();
        assert_eq!(addr, "[::1]:3000".parse().unwrap());
        assert_eq!(prefix, "");
        let (addr, auth, _, https) = parse_target_url("https://127.0.0.1").unwrap();
        assert_eq!(addr, "127.0.0.1:443".parse().unwrap());
        assert!(https);
        assert_eq!(host_of(&auth), "127.0.0.1");
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("a.example:443"), "a.example");
        assert!(parse_target_url("ftp://x").is_err());
    }

    #[test]
    fn patterns_are_lowercased_and_checked() {
        assert_eq!(normalize_pattern("*.Test.COM.").unwrap(), "*.test.com");
        assert!(normalize_pattern("*").is_err());
        assert!(normalize_pattern("a b.com").is_err());
        assert!(normalize_pattern("*.*.com").is_err());
    }
}
