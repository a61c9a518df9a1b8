//! The `dispa` binary: command line, logging set-up, and the only place that turns errors
//! into exit codes (0 ok, 1 runtime failure, 2 invalid config or usage).
// The worker fence (clippy.toml) applies to src/worker/ only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
// Every unsafe block says why it is sound.
#![warn(clippy::undocumented_unsafe_blocks)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dispa::control::{self, signals};
use dispa::{boot, config, demo, replay, traffic};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "dispa",
    version,
    about = "HTTP traffic-intercepting reverse proxy"
)]
struct Cli {
    /// Config file.
    #[arg(short, long, default_value = "config/config.toml")]
    config: PathBuf,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What only running the proxy (from a config, or the demo) takes.
#[derive(clap::Args, Clone, Copy)]
struct RunArgs {
    /// Worker threads (overrides server.workers; 0 = one per allowed CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Log line format on stderr: "text" for people, "json" (JSON Lines) for shippers.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

/// A config file given after a subcommand (`dispa check -c FILE`), else before it.
#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// Config file (default: config/config.toml).
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config, print a summary, exit 0 (valid) or 2 (invalid).
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run Dispa with two built-in backends on loopback (no config file: -c is refused).
    Demo {
        /// Port for the proxy on 127.0.0.1 (status API and metrics: 8081 and 9090 with the
        /// default 8080, else the next two ports, or free ports when this is 0).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Read the traffic record (the SQLite or PostgreSQL store of [logging.database]).
    Traffic {
        #[command(subcommand)]
        what: TrafficCommand,
        #[command(flatten)]
        config: ConfigArg,
        /// The SQLite file, or a postgres:// URL (password in it or in PGPASSWORD)
        /// (default: the store of [logging.database] in the config).
        #[arg(long, global = true)]
        db: Option<PathBuf>,
        /// Only requests to this host.
        #[arg(long, global = true)]
        host: Option<String>,
        /// Only requests answered with this status.
        #[arg(long, global = true)]
        status: Option<u16>,
        /// Only requests sent to this target.
        #[arg(long, global = true)]
        target: Option<String>,
        /// Only requests of the last DURATION ("15m", "2h", "30s", "1d").
        #[arg(long, global = true)]
        since: Option<String>,
        /// Only requests from this time on (RFC 3339, a date, or Unix milliseconds).
        #[arg(long, global = true, value_name = "TIME")]
        from: Option<String>,
        /// Only requests before this time.
        #[arg(long, global = true, value_name = "TIME")]
        until: Option<String>,
    },
    /// Send recorded requests again to a target and compare the answers with the
    /// recorded ones; or, with --serve, answer with the recorded responses (a mock).
    Replay {
        #[command(flatten)]
        args: Box<replay::cli::Args>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum TrafficCommand {
    /// The latest requests, oldest first.
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Then keep printing new requests as they are recorded (until interrupted).
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Fill a store with made-up records, for measuring queries on a large one.
    Generate {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 1_000_000)]
        records: u64,
        /// Spread over this long before now.
        #[arg(long, default_value = "1d")]
        span: String,
    },
    /// Run SQL on the store, every shard's records in `requests` (see docs/DATABASE.md).
    Sql {
        /// The statement(s); read-only.
        query: String,
    },
    /// Requests, error rate and p50/p99 latency per target (or per domain).
    Summary {
        /// Group by domain (Host) instead of target.
        #[arg(long)]
        by_domain: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let run_args = match &cli.command {
        Some(Command::Demo { run, .. }) => RunArgs {
            workers: run.workers.or(cli.run.workers),
            log_format: run.log_format.or(cli.run.log_format),
        },
        _ => cli.run,
    };
    let config_of = |c: &ConfigArg| c.config.clone().unwrap_or_else(|| cli.config.clone());
    match run_args.log_format.unwrap_or(LogFormat::Text) {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // One object per line, fields at the top level beside timestamp, level, message.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }

    match cli.command {
        Some(Command::Check { config }) => check(&config_of(&config)),
        Some(Command::Demo { port, .. }) => run_demo(port, run_args.workers),
        Some(Command::Traffic {
            what,
            config,
            db,
            host,
            status,
            target,
            since,
            from,
            until,
        }) => {
            let since = match since.as_deref().map(parse_since).transpose() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("--since: {e}");
                    return ExitCode::from(2);
                }
            };
            let time = |flag: &str, t: Option<String>| {
                match t {
                None => Ok(None),
                Some(t) => dispa::clock::parse_time_ms(&t).map(Some).ok_or_else(|| {
                    format!("--{flag}: expected 2026-11-30T10:00:00Z, a date, or Unix milliseconds: {t:?}")
                }),
            }
            };
            let (from_ms, until_ms) = match (time("from", from), time("until", until)) {
                (Ok(f), Ok(u)) => (f, u),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let filter = traffic::Filter {
                host,
                status,
                target,
                since,
                from_ms,
                until_ms,
            };
            run_traffic(&config_of(&config), db, &filter, what)
        }
        Some(Command::Replay { args, config }) => run_replay(*args, &config_of(&config)),
        None => run(&cli.config, run_args.workers),
    }
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(c) => {
            println!("{}: ok", path.display());
            let workers = match c.server.workers {
                0 => "one per CPU".to_string(),
                n => n.to_string(),
            };
            println!("  listen: {} (workers: {workers})", c.server.bind);
            if let Some(tls) = &c.server.tls {
                let certs: Vec<String> = tls
                    .certificates
                    .iter()
                    .map(|(cert, _)| cert.display().to_string())
                    .collect();
                println!("  tls: {} (certificates: {})", tls.bind, certs.join(", "));
            }
            println!("  intercept: {}", c.domains.intercept.join(", "));
            if !c.domains.exclude.is_empty() {
                println!("  exclude: {}", c.domains.exclude.join(", "));
            }
            println!("  balancing: {}", c.targets.algorithm.name());
            for t in &c.targets.targets {
                let tls = match &t.tls {
                    Some(t) if !t.verify => ", https, NOT verified",
                    Some(_) => ", https",
                    None => "",
                };
                println!(
                    "  target {} -> {} (weight {}{tls})",
                    t.name, t.addr, t.weight
                );
            }
            if c.monitoring.enabled {
                println!(
                    "  status API: {}, metrics: {}",
                    c.monitoring.health_bind, c.monitoring.metrics_bind
                );
            }
            // Ports another program holds now: a warning, since a running Dispa (checked
            // before a reload) holds its own.
            let mut ports = vec![("server.bind", c.server.bind)];
            ports.extend(c.server.tls.as_ref().map(|t| ("server.tls.bind", t.bind)));
            if c.monitoring.enabled {
                ports.push(("monitoring.health_bind", c.monitoring.health_bind));
                ports.push(("monitoring.metrics_bind", c.monitoring.metrics_bind));
            }
            for (key, addr) in ports {
                if addr.port() != 0
                    && let Err(e) = std::net::TcpListener::bind(addr)
                    && e.kind() == std::io::ErrorKind::AddrInUse
                {
                    eprintln!(
                        "{}: warning: {key} {addr} is in use now (by another program, or by a running Dispa)",
                        path.display()
                    );
                }
            }
            let problems = dispa::logging::check_writable(&c.logging);
            for p in &problems {
                eprintln!("{}: not writable: {p}", path.display());
            }
            if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

fn run(path: &Path, workers: Option<usize>) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    serve(cfg, workers, Some(path.to_path_buf()), |_, _, _| {})
}

/// Start the workers and the control thread, then wait until a stop signal has drained
/// them. `on_start` gets the proxy's address and the control handle once all are up.
fn serve(
    cfg: config::Config,
    workers: Option<usize>,
    path: Option<PathBuf>,
    on_start: impl FnOnce(SocketAddr, Option<SocketAddr>, &control::Handle),
) -> ExitCode {
    let source = path
        .as_ref()
        .map_or_else(|| "(demo)".to_string(), |p| p.display().to_string());
    let targets: Vec<String> = cfg
        .targets
        .targets
        .iter()
        .map(|t| format!("{}={}", t.name, t.addr))
        .collect();
    let intercept = cfg.domains.intercept.join(",");
    let demo = path.is_none();
    let running = match boot::start(cfg, workers) {
        Ok(running) => running,
        // The demo has no config to change: its port is --port.
        Err(boot::Error::Bind { addr, source }) if demo => {
            tracing::error!(
                "cannot listen on {addr}: {source} (choose another port with `dispa demo --port N`, or --port 0 for free ones)"
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let listen = running.local_addr();
    let tls_listen = running.tls_addr();
    let workers = running.drivers().len();
    let io = running.drivers().first().copied().unwrap_or("");
    if let Err(e) = signals::install() {
        tracing::error!("cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    let control = match control::start(running.into_control(), path) {
        Ok(handle) => handle,
        Err(e) if demo => {
            tracing::error!(
                "{e} (the demo's status API and metrics take the two ports after --port: choose another with `dispa demo --port N`, or --port 0 for free ones)"
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let show = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %listen,
        tls = %show(tls_listen),
        workers,
        io,
        config = source,
        intercept = %intercept,
        targets = %targets.join(","),
        status_api = %show(control.health_addr()),
        metrics = %show(control.metrics_addr()),
        "dispa started"
    );
    control::notify::ready();
    on_start(listen, tls_listen, &control);
    control.join();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn run_demo(port: u16, workers: Option<usize>) -> ExitCode {
    let backends = demo::start_backend("backend1", 0)
        .and_then(|a| Ok((a, demo::start_backend("backend2", 0)?)));
    let (a, b) = match backends {
        Ok(ab) => ab,
        Err(e) => {
            eprintln!("cannot start demo backends: {e}");
            return ExitCode::from(1);
        }
    };
    let bind = SocketAddr::from(([127, 0, 0, 1], port));
    // Beside the demo's records (./data), made anew by each run.
    let dir = PathBuf::from("data");
    let cert = match demo::write_certificate(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "cannot write the demo's certificate in {}: {e}",
                dir.display()
            );
            return ExitCode::from(1);
        }
    };
    let cfg = match config::parse(&demo::config_toml(bind, a, b, &cert)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo config: {e}");
            return ExitCode::from(2);
        }
    };
    serve(cfg, workers, None, |addr, tls, control| {
        let (status, metrics) = (control.health_addr(), control.metrics_addr());
        println!(
            "{}",
            demo::instructions(addr, tls, &cert.0, status, metrics)
        )
    })
}

/// `--since`: the config's duration syntax ("90s", "15m", "2h", "1d").
fn parse_since(s: &str) -> Result<std::time::Duration, String> {
    dispa::config::parse_duration_text(s)
        .ok_or_else(|| format!("expected a number and a unit (ms, s, m, h, d), like 15m: {s:?}"))
}

fn run_traffic(
    config_path: &Path,
    db: Option<PathBuf>,
    filter: &traffic::Filter,
    what: TrafficCommand,
) -> ExitCode {
    let (path, postgres) = match db {
        Some(p) => match p
            .to_str()
            .filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
        {
            Some(url) => (p.clone(), Some(traffic::postgres::from_url(url))),
            None => (p, None),
        },
        None => match config::load(config_path) {
            Ok(c) => (c.logging.database.path, c.logging.database.postgres),
            Err(e) => {
                eprintln!(
                    "{}: {e} (or give the database with --db)",
                    config_path.display()
                );
                return ExitCode::from(2);
            }
        },
    };
    if let Some(store) = postgres {
        return run_traffic_postgres(&store, filter, what);
    }
    // Run a read-only query on the store and print what it gives.
    let query = |run: &dyn Fn(&rusqlite::Connection) -> rusqlite::Result<String>| {
        let out = traffic::open(&path).and_then(|conn| run(&conn));
        print_outcome(out.map_err(|e| format!("{}: {e}", path.display())))
    };
    match what {
        TrafficCommand::Generate { records, span } => generate(&path, records, &span),
        TrafficCommand::Tail {
            lines,
            follow: true,
        } => follow(&path, filter, lines),
        TrafficCommand::Tail { lines, .. } => query(&|c| traffic::tail(c, filter, lines)),
        TrafficCommand::Sql { query: sql } => query(&|c| traffic::sql(c, &sql)),
        TrafficCommand::Summary { by_domain } => {
            let by = if by_domain {
                traffic::By::Domain
            } else {
                traffic::By::Target
            };
            query(&|c| traffic::summary(c, filter, by))
        }
    }
}

/// `dispa traffic generate`.
fn generate(path: &Path, records: u64, span: &str) -> ExitCode {
    let Some(span) = config::parse_duration_text(span) else {
        eprintln!("--span: expected a duration like 1d: {span:?}");
        return ExitCode::from(2);
    };
    match dispa::logging::sqlite::generate(path, records, span) {
        Ok(()) => {
            println!("{}: {records} records", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `dispa traffic tail -f`: until interrupted (or stdout closes).
/// `dispa traffic` on a PostgreSQL store.
fn run_traffic_postgres(
    store: &config::Postgres,
    filter: &traffic::Filter,
    what: TrafficCommand,
) -> ExitCode {
    use traffic::postgres as pg;
    let mut client = match pg::open(store) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let out = match what {
        TrafficCommand::Generate { .. } => {
            eprintln!("traffic generate writes SQLite files only");
            return ExitCode::from(2);
        }
        TrafficCommand::Tail {
            lines,
            follow: true,
        } => pg::follow(&mut client, filter, lines, print_line).map(|()| String::new()),
        TrafficCommand::Tail { lines, .. } => pg::tail(&mut client, filter, lines),
        TrafficCommand::Sql { query } => pg::sql(&mut client, &query),
        TrafficCommand::Summary { by_domain } => {
            let by = if by_domain {
                traffic::By::Domain
            } else {
                traffic::By::Target
            };
            pg::summary(&mut client, filter, by)
        }
    };
    print_outcome(
        out.map_err(|e| format!("{}: {}", store.url, dispa::logging::postgres::describe(&e))),
    )
}

/// What a `dispa traffic` query gave: its text on stdout (exit 0), or the error (exit 1).
fn print_outcome(out: Result<String, String>) -> ExitCode {
    match out {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `tail -f`'s output: one line, flushed at once; false when stdout is gone.
fn print_line(line: &str) -> bool {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_ok()
}

fn follow(path: &Path, filter: &traffic::Filter, lines: usize) -> ExitCode {
    match traffic::follow(path, filter, lines, print_line) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::from(1)
        }
    }
}

/// `dispa replay`: exit 0 (within --max-diff-ratio), 1 (more differed), 2 (could not
/// replay: usage, store, target).
fn run_replay(args: replay::cli::Args, config_path: &Path) -> ExitCode {
    let store = || match config::load(config_path) {
        Ok(c) => Ok(match c.logging.database.postgres {
            Some(pg) => replay::source::Store::Postgres(pg),
            None => replay::source::Store::Sqlite(c.logging.database.path),
        }),
        Err(e) => Err(format!(
            "{}: {e} (or give the store with --db)",
            config_path.display()
        )),
    };
    let mode = match args.into_mode(store) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match mode {
        replay::cli::Mode::Mock(opts) => {
            let served = replay::mock::serve(*opts, |addr, served, left_out| {
                use std::io::Write;
                println!(
                    "serving {served} recorded responses on {addr} ({left_out} records left out: no answer, or a body not kept whole)"
                );
                let _ = std::io::stdout().flush();
            });
            match served {
                Ok(s) => {
                    println!("served {} recorded responses, {} misses", s.hits, s.misses);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        replay::cli::Mode::Replay(opts) => {
            let to_stdout = opts.report.as_deref() == Some(Path::new("-"));
            match replay::run(*opts) {
                Ok((report, passed)) => {
                    let table = replay::report::table(&report);
                    // With the JSON on standard output, the table goes to standard error.
                    if to_stdout {
                        eprint!("{table}");
                    } else {
                        print!("{table}");
                    }
                    if passed {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
