//! Dispa's configuration: the TOML file read into typed, validated values.
//! `file` walks the TOML tree (collecting every error with its key path), `validate` checks
//! what spans keys, `snapshot` compiles a validated config into what workers run.

mod file;
pub mod snapshot;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::balance::Algorithm;
pub use file::{host_of, parse_duration_text, split_password};

/// The most logging shards: `dispa traffic` attaches every shard's SQLite file to one
/// connection, and Dispa's SQLite is built to allow 125 (`.cargo/config.toml`).
pub const MAX_SHARDS: usize = 125;
pub use snapshot::{Snapshot, TargetSpec};

/// A fully validated configuration. Only [`load`] and [`parse`] build one.
#[derive(Debug, Clone)]
pub struct Config {
    /// What `[server.tls]` and `https://` targets need, read from their PEM files.
    pub tls: TlsMaterial,
    pub server: Server,
    pub domains: Domains,
    pub targets: Targets,
    pub upstream: Upstream,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub monitoring: Monitoring,
    pub logging: Logging,
}

/// `[logging]`: the traffic record (one entry per request), written by the logging thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    pub enabled: bool,
    /// `type`: which sinks get the records.
    pub sinks: Sinks,
    pub file: FileSink,
    pub database: DatabaseSink,
    /// Records per write (a batch is also written after `flush_interval`).
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Capacity of the channel from the workers (records beyond it are dropped and
    /// counted, never waited for). Takes effect at start only.
    pub queue_size: usize,
    /// Records a failing sink keeps waiting to be written (each sink on its own); past it
    /// the oldest are lost, and counted.
    pub max_backlog: usize,
    /// Logging threads, each serving a group of workers with its own queue, files and
    /// SQLite file; 0: one per three workers. At most [`MAX_SHARDS`]. Takes effect at
    /// start only.
    pub shards: usize,
    pub capture: Capture,
}

/// `[logging.capture]`: for requests to these hosts, the record also keeps selected
/// header fields and the first bytes of both bodies (for replay). Off when `domains` is
/// empty (the default).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capture {
    /// Host patterns, as `intercept_domains` (normalized).
    pub domains: Vec<String>,
    /// Lowercase field names kept from requests; `["*"]` keeps all.
    pub request_headers: Vec<String>,
    pub response_headers: Vec<String>,
    /// Bytes kept from the start of each body (0: none).
    pub max_body_bytes: usize,
}

/// Most body bytes a capture keeps per body.
pub const MAX_CAPTURE_BODY: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sinks {
    File,
    Database,
    Both,
}

impl Sinks {
    pub fn file(self) -> bool {
        matches!(self, Sinks::File | Sinks::Both)
    }

    pub fn database(self) -> bool {
        matches!(self, Sinks::Database | Sinks::Both)
    }
}

/// `[logging.file]`: gzip-compressed JSON Lines, rotated by size and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSink {
    pub directory: PathBuf,
    /// Rotate when the current file reaches this many (compressed) bytes.
    pub max_file_size: u64,
    pub rotation: Rotation,
    /// Delete Dispa's files older than this many days (0: keep).
    pub retention_days: u32,
    /// Delete Dispa's oldest files while all of them take more than this (0: no limit).
    pub max_total_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    Hourly,
    Daily,
    Never,
}

/// `[logging.database]`: SQLite (WAL, one transaction per batch), or PostgreSQL when
/// `url` is a `postgres://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSink {
    /// The SQLite file (unused when `postgres` is set).
    pub path: PathBuf,
    /// Delete rows older than this many days (0: keep).
    pub retention_days: u32,
    pub postgres: Option<Postgres>,
}

/// A PostgreSQL store: where, as whom, and which Dispa writes.
#[derive(Clone, PartialEq, Eq)]
pub struct Postgres {
    /// The URL without its password: what logs, errors and /health may show.
    pub url: String,
    /// From the URL, `password_file` or `password_env` (never printed).
    pub password: Option<String>,
    /// The `instance` column of this Dispa's rows (default: the host name).
    pub instance: String,
    /// Refuse to start when the database cannot be reached at start.
    pub required: bool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &self.url)
            .field("instance", &self.instance)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

/// `[monitoring]`: the status API and the Prometheus endpoint, served by the control thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitoring {
    pub enabled: bool,
    /// `health_bind` (or the seed's `health_check_port`, meaning 127.0.0.1:PORT).
    pub health_bind: SocketAddr,
    /// `metrics_bind` (or the seed's `metrics_port`).
    pub metrics_bind: SocketAddr,
    /// When set, admin actions (POST) need `Authorization: Bearer <token>` and are accepted
    /// from any address; when not, they are accepted from loopback only.
    pub admin_token: Option<String>,
}

/// TLS configs made from the config's files when it was loaded (see `crate::tls`).
#[derive(Debug, Clone, Default)]
pub struct TlsMaterial {
    /// The `[server.tls]` listener's.
    pub server: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// For `https://` targets that verify (the default) and those with `tls_verify = false`.
    pub verified: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub unverified: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// `[server.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    /// Where every worker listens for TLS with SO_REUSEPORT.
    pub bind: SocketAddr,
    /// (chain, key) PEM files; the first serves clients without SNI.
    pub certificates: Vec<(PathBuf, PathBuf)>,
    /// A client must complete its handshake within this.
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Server {
    /// `[server.tls]`: a TLS listener, when configured.
    pub tls: Option<TlsListener>,
    /// `server.bind` (alias `bind_address`): where every worker listens with SO_REUSEPORT.
    pub bind: SocketAddr,
    /// `server.workers`: worker threads; 0 means one per CPU in the inherited affinity mask.
    pub workers: usize,
    pub io_driver: IoDriver,
    pub uring: UringFlags,
    /// `server.uring_entries`: submission queue size of each worker's ring.
    pub uring_entries: u32,
    /// `server.backlog`: listen(2) backlog of each worker's socket.
    pub backlog: u32,
    /// `server.shutdown_timeout`: how long in-flight requests may run after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// `server.scheduler_hints`: short time slices, a background logging thread and heap
    /// trims (`crate::sched`).
    pub scheduler_hints: bool,
}

/// Which monoio driver a worker builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring, falling back to epoll (with one warning) when the ring cannot be set up.
    Auto,
    /// io_uring only: a worker that cannot set up its ring fails to start.
    IoUring,
    /// epoll only (monoio's legacy driver).
    Legacy,
}

/// io_uring setup flags, passed to monoio's ring builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UringFlags {
    pub coop_taskrun: bool,
    pub single_issuer: bool,
    pub defer_taskrun: bool,
}

#[derive(Debug, Clone)]
pub struct Domains {
    /// Exact names (`example.com`) and wildcards (`*.test.com`), lowercased, no trailing dot.
    pub intercept: Vec<String>,
    /// Same syntax; an excluded host is never intercepted even when `intercept` matches it.
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Targets {
    pub targets: Vec<Target>,
    pub algorithm: Algorithm,
    /// `consistent_hash`: what a request is keyed by, and ε of the load bound.
    pub hash_key: HashKey,
    pub hash_load_factor: f64,
    /// How often target host names are looked up again (0: only when the config loads).
    pub resolve_interval: std::time::Duration,
    pub health_check: HealthCheck,
}

/// What `consistent_hash` keys a request by (`hash_key`); without the header or cookie,
/// by the client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `"client_ip"` (nginx's `ip_hash`, HAProxy's `balance source`).
    ClientIp,
    /// `"header:NAME"` (lowercase).
    Header(String),
    /// `"cookie:NAME"`.
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub url: String,
    /// Resolved once when the config is loaded (workers never resolve names).
    pub addr: SocketAddr,
    /// `host[:port]` of the URL, sent as `Host` when `rewrite_host` is set.
    pub authority: String,
    /// Path of the URL without a trailing slash (`""` for none); prefixed to every request path.
    pub path_prefix: String,
    pub weight: u32,
    /// Per-target override of `timeouts.upstream_response`.
    pub timeout: Option<Duration>,
    pub rewrite_host: bool,
    /// `https://` targets: TLS with SNI and the name checked.
    pub tls: Option<TargetTls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTls {
    /// The URL's host: SNI, and the name the certificate must hold.
    pub server_name: String,
    /// `tls_verify` (default true); false accepts any certificate, with a warning at start.
    pub verify: bool,
}

/// `[targets.health_check]`: active probes run by the control thread, and passive checks
/// from the workers' connect failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub enabled: bool,
    pub interval: Duration,
    pub timeout: Duration,
    pub path: String,
    /// `Host` sent with probes; the target's authority when not set.
    pub host: Option<String>,
    pub expected_status: (u16, u16),
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Passive checks: consecutive connect failures seen by workers that take a target out
    /// of rotation for `fail_timeout` (nginx's max_fails/fail_timeout). 0 disables them.
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

/// `[upstream]`: the per-worker connection pools and failover.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub keepalive: bool,
    pub max_idle_per_target: usize,
    /// Connections a worker opens to one target, in use and idle (0: no limit); beyond
    /// it requests wait up to `timeouts.queue` for one.
    pub max_connections_per_target: usize,
    /// Attempts to connect (each to a different target when there is one) before giving up.
    pub max_tries: u32,
    /// `ca_file`: PEM roots for `https://` targets instead of the system's.
    pub ca_file: Option<PathBuf>,
}

/// `[timeouts]`, all durations.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    /// How long a request waits for a connection to a target at
    /// `upstream.max_connections_per_target` (default: `connect`).
    pub queue: Duration,
    pub upstream_response: Duration,
    pub upstream_idle: Duration,
    pub client_head: Duration,
    pub client_body: Duration,
    pub keepalive: Duration,
    pub send: Duration,
    pub expect_continue: Duration,
    pub tunnel_idle: Duration,
}

/// `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    /// Request body bytes a client may send (0: no limit); beyond it, 413.
    pub max_body_bytes: u64,
}

/// Why a configuration could not be used.
#[derive(Debug)]
pub enum Error {
    Io {
        path: String,
        source: std::io::Error,
    },
    Syntax {
        message: String,
    },
    /// Every invalid key found, each with its dotted path.
    Invalid(Vec<FieldError>),
}

/// One invalid key: `path` is dotted (`targets.targets[1].url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "cannot read config {path}: {source}"),
            Error::Syntax { message } => write!(f, "config is not valid TOML: {message}"),
            Error::Invalid(errors) => {
                write!(f, "config has {} error(s):", errors.len())?;
                for e in errors {
                    write!(f, "\n  {}: {}", e.path, e.reason)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}

/// Read and validate the file at `path`.
pub fn load(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text)
}

/// Validate TOML text.
pub fn parse(text: &str) -> Result<Config, Error> {
    let table: toml::Table = toml::from_str(text).map_err(|e| Error::Syntax {
        message: e.to_string(),
    })?;
    let mut errors = Vec::new();
    let mut config = file::decode(&table, &mut errors);
    if let Some(config) = &mut config {
        validate::check(config, &mut errors);
        if errors.is_empty() {
            config.tls = tls_material(config, &mut errors);
        }
    }
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(Error::Invalid(errors)),
    }
}

/// Read the certificates and roots the config names (errors carry the key and the file).
fn tls_material(config: &Config, errors: &mut Vec<FieldError>) -> TlsMaterial {
    let mut m = TlsMaterial::default();
    if let Some(listener) = &config.server.tls {
        let mut certificates = Vec::new();
        for (i, (cert, key)) in listener.certificates.iter().enumerate() {
            match crate::tls::load_certificate(cert, key) {
                Ok(c) => certificates.push(c),
                Err(reason) => errors.push(FieldError {
                    path: format!("server.tls.certificates[{i}]"),
                    reason,
                }),
            }
        }
        if !certificates.is_empty() && errors.is_empty() {
            let d = &config.domains;
            match crate::tls::server_config(certificates, &d.intercept, &d.exclude) {
                Ok(c) => m.server = Some(c),
                Err(reason) => errors.push(FieldError {
                    path: "server.tls".into(),
                    reason,
                }),
            }
        }
    }
    let https: Vec<&TargetTls> = config
        .targets
        .targets
        .iter()
        .filter_map(|t| t.tls.as_ref())
        .collect();
    let ca = config.upstream.ca_file.as_deref();
    for verify in [true, false] {
        if !https.iter().any(|t| t.verify == verify) {
            continue;
        }
        match crate::tls::client_config(ca, verify) {
            Ok(c) if verify => m.verified = Some(c),
            Ok(c) => m.unverified = Some(c),
            Err(reason) => errors.push(FieldError {
                path: "upstream.ca_file".into(),
                reason,
            }),
        }
    }
    m
}
