//! The `dispa` binary: command line, logging set-up, and the only place that turns errors
//! into exit codes (0 ok, 1 runtime failure, 2 invalid config or usage).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dispa::{boot, config, demo};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "dispa",
    version,
    about = "HTTP traffic-intercepting reverse proxy"
)]
struct Cli {
    /// Config file.
    #[arg(short, long, global = true, default_value = "config/config.toml")]
    config: PathBuf,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Worker threads (overrides server.workers; 0 = one per allowed CPU).
    #[arg(long, global = true)]
    workers: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config, print a summary, exit 0 (valid) or 2 (invalid).
    Check,
    /// Run Dispa with two built-in backends on loopback (no config file needed).
    Demo {
        /// Port for the proxy on 127.0.0.1.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();

    match cli.command {
        Some(Command::Check) => check(&cli.config),
        Some(Command::Demo { port }) => run_demo(port, cli.workers),
        None => run(&cli.config, cli.workers),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(c) => {
            println!("{}: ok", path.display());
            println!(
                "  listen: {} (workers: {})",
                c.server.bind,
                describe_workers(c.server.workers)
            );
            println!("  intercept: {}", c.domains.intercept.join(", "));
            if !c.domains.exclude.is_empty() {
                println!("  exclude: {}", c.domains.exclude.join(", "));
            }
            println!("  balancing: {}", c.targets.algorithm.name());
            for t in &c.targets.targets {
                println!("  target {} -> {} (weight {})", t.name, t.addr, t.weight);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

fn describe_workers(n: usize) -> String {
    if n == 0 {
        "one per CPU".into()
    } else {
        n.to_string()
    }
}

fn run(path: &std::path::Path, workers: Option<usize>) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    serve(cfg, workers, &path.display().to_string(), |_| {})
}

fn serve(
    cfg: config::Config,
    workers: Option<usize>,
    source: &str,
    on_start: impl FnOnce(std::net::SocketAddr),
) -> ExitCode {
    let targets: Vec<String> = cfg
        .targets
        .targets
        .iter()
        .map(|t| format!("{}={}", t.name, t.addr))
        .collect();
    let intercept = cfg.domains.intercept.join(",");
    match boot::start(cfg, workers) {
        Ok(running) => {
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                listen = %running.local_addr(),
                workers = running.drivers().len(),
                io = running.drivers().first().copied().unwrap_or(""),
                config = source,
                intercept = %intercept,
                targets = %targets.join(","),
                "dispa started"
            );
            on_start(running.local_addr());
            running.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
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
    let bind = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = match config::parse(&demo::config_toml(bind, a, b)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo config: {e}");
            return ExitCode::from(2);
        }
    };
    serve(cfg, workers, "(demo)", |addr| {
        println!("{}", demo::instructions(addr))
    })
}
