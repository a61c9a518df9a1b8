//! One worker: a thread pinned to a CPU, running one monoio runtime (io_uring, or epoll
//! when the ring cannot be set up) that accepts on its own SO_REUSEPORT listener and owns
//! every connection, pool and balancer position it uses. Nothing here blocks or locks.
//!
//! - this file: the thread, its runtime, the accept loop and the drain at shutdown;
//! - `state`: what the worker's tasks share; `tally`: counts between reports; `inbox`: the
//!   control thread's messages and periodic chores; `sockets`: open client sockets;
//! - the request path, in the order a request takes it: `conn` (one client connection) →
//!   `exchange` (one proxied exchange: `upstream`, `send`, `respond`) → `relay` (bodies
//!   and tunnels); beside it `client` (the client side of a connection), `failure` (every
//!   answer Dispa makes itself), `draft` (the traffic record of a request), `pool`.
// Nothing here blocks or locks: clippy.toml's disallowed methods and types, allowed
// elsewhere, are errors in this module (under `-D warnings`).
#![warn(clippy::disallowed_methods, clippy::disallowed_types)]

mod client;
mod conn;
mod draft;
mod exchange;
mod failure;
mod inbox;
mod outcome;
mod pool;
mod relay;
mod sockets;
mod state;
mod tally;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use monoio::io::Canceller;

use crate::config::{IoDriver, Snapshot, UringFlags};
use crate::http::canned;
use crate::msg::{RecordSender, WorkerEvent, WorkerMsg, WorkerReady, WorkerStats};
use failure::Failure;
use state::Worker;

/// What a worker thread starts from.
pub struct Start {
    pub id: usize,
    pub core: Option<core_affinity::CoreId>,
    pub listener: std::net::TcpListener,
    /// `[server.tls]`'s listener, when configured.
    pub tls_listener: Option<std::net::TcpListener>,
    pub snapshot: Arc<Snapshot>,
    pub inbox_rx: Receiver<WorkerMsg>,
    pub ready_tx: Sender<WorkerReady>,
    pub events_tx: Sender<WorkerEvent>,
    pub records_tx: RecordSender,
    pub stats: Arc<WorkerStats>,
}

static URING_FALLBACK_WARNED: AtomicBool = AtomicBool::new(false);

/// Run a worker on the current thread until it is told to shut down.
pub fn run(start: Start) {
    let id = start.id;
    if let Some(core) = start.core
        && !core_affinity::set_for_current(core)
    {
        tracing::warn!(
            worker = id,
            core = core.id,
            "could not pin worker to its CPU"
        );
    }
    if start.snapshot.config.server.scheduler_hints
        && let Err(e) = crate::sched::request_slice(crate::sched::WORKER_SLICE)
    {
        tracing::debug!(worker = id, error = %e, "scheduler ignored the worker's slice request");
    }
    let server = &start.snapshot.config.server;
    let (driver, flags, entries) = (server.io_driver, server.uring, server.uring_entries);
    if driver != IoDriver::Legacy {
        match uring_runtime(flags, entries) {
            Ok(mut rt) => return rt.block_on(serve(start, "io_uring")),
            Err(e) if driver == IoDriver::IoUring => {
                let reason = format!("io_uring runtime: {e}");
                let _ = start.ready_tx.try_send(WorkerReady::Failed { id, reason });
                return;
            }
            Err(e) => {
                if !URING_FALLBACK_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        "io_uring is not available here; workers use the epoll driver instead"
                    );
                }
            }
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(serve(start, "epoll")),
        Err(e) => {
            let reason = format!("epoll runtime: {e}");
            let _ = start.ready_tx.try_send(WorkerReady::Failed { id, reason });
        }
    }
}

fn uring_runtime(
    flags: UringFlags,
    entries: u32,
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let mut ring = io_uring::IoUring::builder();
    if flags.coop_taskrun {
        ring.setup_coop_taskrun();
    }
    if flags.single_issuer {
        ring.setup_single_issuer();
    }
    if flags.defer_taskrun {
        ring.setup_defer_taskrun();
    }
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(entries)
        .uring_builder(ring)
        .enable_timer()
        .build()
}

async fn serve(start: Start, driver: &'static str) {
    let Start {
        id,
        listener,
        tls_listener,
        snapshot,
        inbox_rx,
        ready_tx,
        events_tx,
        records_tx,
        stats,
        ..
    } = start;
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let reason = format!("listener: {e}");
            let _ = ready_tx.try_send(WorkerReady::Failed { id, reason });
            return;
        }
    };
    let worker = Rc::new(Worker::new(id, snapshot, stats, events_tx, records_tx));
    let _ = ready_tx.try_send(WorkerReady::Up { id, driver });
    drop(ready_tx);

    let canceller = Canceller::new();
    let accept_cancel = canceller.handle();
    let drain = Rc::new(Cell::new(Duration::ZERO));
    monoio::spawn(inbox::run(
        worker.clone(),
        inbox_rx,
        canceller,
        drain.clone(),
    ));

    if let Some(tls_listener) = tls_listener {
        match monoio::net::TcpListener::from_std(tls_listener) {
            Ok(l) => {
                monoio::spawn(accept(worker.clone(), l, accept_cancel.clone(), true));
            }
            Err(e) => tracing::error!(worker = id, error = %e, "TLS listener"),
        }
    }
    accept(worker.clone(), listener, accept_cancel, false).await;
    // In-flight requests finish (up to the drain time); idle keep-alive connections are
    // closed when the runtime drops their tasks.
    let deadline = Instant::now() + drain.get();
    while worker.stats.busy_requests.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    // What is left is idle (or overdue): close it, and give the tasks a moment to end so
    // that their sockets, pooled connections and record sender are dropped.
    worker.open_sockets().borrow().shutdown_all();
    let deadline = Instant::now() + Duration::from_secs(1);
    while worker.stats.open_connections.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.report();
}

/// Accept connections on `listener` until the worker stops; `tls`: TLS connections.
async fn accept(
    worker: Rc<Worker>,
    listener: monoio::net::TcpListener,
    cancel: monoio::io::CancelHandle,
    tls: bool,
) {
    loop {
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, peer)) => {
                worker.stats.accepted.inc();
                let max_connections = worker.current().snapshot.config.limits.max_connections;
                if worker.stats.open_connections.get() >= max_connections as u64 {
                    // One short answer and close; the write lands in the fresh socket's
                    // empty send buffer, so this task never waits on the client. (A TLS
                    // client is closed: there is no session to answer in.)
                    Failure::TooManyConnections.count(&worker.stats);
                    if !tls {
                        monoio::spawn(refuse(stream));
                    }
                    continue;
                }
                // Counted here, not in the task, so that a burst of accepts sees it.
                worker.stats.open_connections.inc();
                if tls {
                    monoio::spawn(conn::serve_tls(worker.clone(), stream, peer));
                } else {
                    monoio::spawn(conn::serve(worker.clone(), stream.into(), peer));
                }
            }
            Err(_) if worker.stopping.get() => break,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::debug!(worker = worker.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Answer a connection over `limits.max_connections` with 503 and close it.
async fn refuse(mut stream: monoio::net::TcpStream) {
    let mut out = Vec::with_capacity(192);
    if let Some((status, text)) = Failure::TooManyConnections.answer() {
        canned::response(&mut out, status, text, true);
    }
    let _ = monoio::io::AsyncWriteRentExt::write_all(&mut stream, out).await;
}
