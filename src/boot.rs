//! Starting and stopping Dispa: binds one SO_REUSEPORT listener per worker, spawns the
//! workers pinned to the CPUs of the inherited affinity mask, and waits until each one's
//! runtime is up. The returned [`Running`] stops everything when dropped.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, bounded};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::snapshot::Registry;
use crate::config::{Config, Snapshot};
use crate::control;
use crate::logging::{self, Logger, Shard};
use crate::msg::{LoggingStats, WorkerLink, WorkerMsg, WorkerReady, WorkerStats};
use crate::worker;

#[derive(Debug)]
pub enum Error {
    /// The listen address is taken (by anything, including another Dispa) or not ours.
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    Thread(std::io::Error),
    Worker {
        id: usize,
        reason: String,
    },
    /// `[logging.database] required = true` and the PostgreSQL store cannot be reached.
    Store(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bind { addr, source } => write!(
                f,
                "cannot listen on {addr}: {source} (change server.bind / bind_address in the config)"
            ),
            Error::Thread(e) => write!(f, "cannot start a worker thread: {e}"),
            Error::Worker { id, reason } => write!(f, "worker {id} failed to start: {reason}"),
            Error::Store(e) => write!(
                f,
                "traffic database required (logging.database.required) but {e}"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Capacity of the channel from all workers to the control thread. Workers report about
/// four times a second; this leaves seconds of slack before a report has to wait.
const EVENTS_CAPACITY: usize = 4096;

/// A started Dispa: its workers and logging thread, until they are handed to the control
/// thread ([`Running::into_control`]) or stopped.
pub struct Running {
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    parts: control::Parts,
}

impl Running {
    /// The proxy's listen address (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `[server.tls]` listens, when configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Each worker's counters, by worker id.
    pub fn stats(&self) -> Vec<Arc<WorkerStats>> {
        self.parts.workers.iter().map(|w| w.stats.clone()).collect()
    }

    /// The I/O driver each worker runs (`io_uring` or `epoll`).
    pub fn drivers(&self) -> &[&'static str] {
        &self.parts.drivers
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.parts.snapshot
    }

    /// The first logging thread's counters (the only one by default up to three workers).
    pub fn logging_stats(&self) -> &Arc<LoggingStats> {
        self.parts.logging[0].stats()
    }

    /// Hand everything to the control thread (`control::start`), which then decides when
    /// it stops.
    pub fn into_control(self) -> control::Parts {
        self.parts
    }

    /// Stop accepting, let in-flight requests finish (up to `drain`), and join the workers;
    /// then the logging thread writes everything queued and ends.
    pub fn shutdown(self, drain: Duration) {
        (self.parts.stop)(drain);
    }
}

/// Stops the workers and then the logging thread, in that order; also when dropped
/// without being asked (a test's `Running` going out of scope).
struct Stopper {
    workers: Vec<(Sender<WorkerMsg>, JoinHandle<()>)>,
    loggers: Vec<Logger>,
}

impl Stopper {
    fn stop(&mut self, drain: Duration) {
        // Nobody watches the records queues while the workers drain.
        for logger in &self.loggers {
            logger.link().stay_normal();
        }
        for (inbox_tx, _) in &self.workers {
            let _ = inbox_tx.send(WorkerMsg::Shutdown { drain });
        }
        for (_, thread) in self.workers.drain(..) {
            let _ = thread.join();
        }
        // The workers' record senders are gone: everything they sent gets written.
        for logger in &mut self.loggers {
            logger.finish();
        }
    }
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(1));
    }
}

/// Raise the soft limit on open files to the hard limit (as HAProxy does by itself):
/// every client and upstream connection is a file, and the usual soft limit of 1024 is far
/// below what one worker holds at high concurrency. Returns the limit now in force.
fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct for this process.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Start the workers for `config`. `workers` overrides `server.workers` when given.
pub fn start(config: Config, workers: Option<usize>) -> Result<Running, Error> {
    let open_files = raise_open_files_limit();
    tracing::debug!(open_files, "open files limit");
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let count = match workers.unwrap_or(config.server.workers) {
        0 => cores.len().max(1),
        n => n,
    };
    let (listeners, local_addr) = bind_listeners(config.server.bind, count, config.server.backlog)?;
    let (tls_listeners, tls_addr) = match &config.server.tls {
        Some(tls) => {
            let (l, addr) = bind_listeners(tls.bind, count, config.server.backlog)?;
            (l.into_iter().map(Some).collect::<Vec<_>>(), Some(addr))
        }
        None => ((0..count).map(|_| None).collect(), None),
    };
    if config
        .targets
        .targets
        .iter()
        .any(|t| t.tls.as_ref().is_some_and(|t| !t.verify))
    {
        tracing::warn!("tls_verify = false: https targets' certificates are not verified");
    }
    let mut registry = Registry::default();
    let snapshot = Arc::new(Snapshot::build(config, 1, count, &mut registry, &|_, _| {
        true
    }));
    let (ready_tx, ready_rx) = bounded(count);
    let (events_tx, events_rx) = bounded(EVENTS_CAPACITY);
    let hints = snapshot.config.server.scheduler_hints;
    let logging_settings = &snapshot.config.logging;
    let shards = match logging_settings.shards {
        0 => logging::default_shards(count),
        n => n,
    }
    .clamp(1, count.min(crate::config::MAX_SHARDS));
    if logging_settings.enabled
        && logging_settings.sinks.database()
        && let Some(pg) = logging_settings
            .database
            .postgres
            .as_ref()
            .filter(|p| p.required)
    {
        logging::postgres::connect(pg).map_err(|e| {
            Error::Store(format!("{}: {}", pg.url, logging::postgres::describe(&e)))
        })?;
    }
    let mut stopper = Stopper {
        workers: Vec::with_capacity(count),
        loggers: Vec::with_capacity(shards),
    };
    let mut records_txs = Vec::with_capacity(shards);
    for index in 0..shards {
        let (records_tx, records_rx) = crate::msg::record_queue(logging_settings.queue_size);
        let shard = Shard {
            index,
            count: shards,
        };
        let logger = Logger::start(logging_settings.clone(), records_rx, hints, shard)
            .map_err(Error::Thread)?;
        stopper.loggers.push(logger);
        records_txs.push(records_tx);
    }
    let logging = stopper.loggers.iter().map(|l| l.link().clone()).collect();
    let mut links = Vec::with_capacity(count);
    for (id, (listener, tls_listener)) in listeners.into_iter().zip(tls_listeners).enumerate() {
        let (inbox_tx, inbox_rx) = bounded(64);
        let stats = Arc::new(WorkerStats::default());
        let start = worker::Start {
            id,
            // Worker i runs on the i-th allowed CPU, wrapping when there are more workers.
            core: (!cores.is_empty()).then(|| cores[id % cores.len()]),
            listener,
            tls_listener,
            snapshot: snapshot.clone(),
            inbox_rx,
            ready_tx: ready_tx.clone(),
            events_tx: events_tx.clone(),
            // Contiguous groups of workers share a logging thread.
            records_tx: records_txs[id * shards / count].clone(),
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("dispa-worker-{id}"))
            .spawn(move || worker::run(start))
            .map_err(Error::Thread)?;
        stopper.workers.push((inbox_tx.clone(), thread));
        links.push(WorkerLink { inbox_tx, stats });
    }
    drop(ready_tx);
    let mut drivers = vec![""; count];
    for _ in 0..count {
        match ready_rx.recv() {
            Ok(WorkerReady::Up { id, driver }) => drivers[id] = driver,
            Ok(WorkerReady::Failed { id, reason }) => return Err(Error::Worker { id, reason }),
            Err(_) => {
                return Err(Error::Worker {
                    id: usize::MAX,
                    reason: "a worker exited during start-up".into(),
                });
            }
        }
    }
    Ok(Running {
        local_addr,
        tls_addr,
        parts: control::Parts {
            snapshot,
            registry,
            workers: links,
            drivers,
            events_rx,
            logging,
            stop: Box::new(move |drain| {
                let mut stopper = stopper;
                stopper.stop(drain);
            }),
        },
    })
}

/// One listener per worker on the same address. A probe bound without SO_REUSEPORT first
/// makes "address in use" an error even when the holder is another SO_REUSEPORT process
/// (which would otherwise silently share the port).
fn bind_listeners(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), Error> {
    let err = |source| Error::Bind { addr, source };
    let domain = Domain::for_address(addr);
    let probe = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    probe.set_reuse_address(true).map_err(err)?;
    probe.bind(&addr.into()).map_err(err)?;
    let local = probe.local_addr().map_err(err)?.as_socket().unwrap_or(addr);
    drop(probe);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
        s.set_reuse_address(true).map_err(err)?;
        s.set_reuse_port(true).map_err(err)?;
        s.set_nonblocking(true).map_err(err)?;
        s.bind(&local.into()).map_err(err)?;
        s.listen(backlog as i32).map_err(err)?;
        out.push(s.into());
    }
    Ok((out, local))
}
