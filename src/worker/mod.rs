//! One worker: a thread pinned to a CPU, running one monoio runtime (io_uring, or epoll
//! when the ring cannot be set up) that accepts on its own SO_REUSEPORT listener and owns
//! every connection, pool and balancer position it uses. Nothing here blocks or locks.

mod buf;
mod conn;
mod forward;
mod pool;
mod relay;
pub mod stats;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use monoio::io::Canceller;

use crate::balance::Balancer;
use crate::config::{IoDriver, Snapshot, UringFlags};
use crate::msg::{WorkerMsg, WorkerReady};
use pool::Pool;
pub use stats::WorkerStats;

/// How often a worker looks at its inbox (and ages out idle upstream connections).
const INBOX_POLL: Duration = Duration::from_millis(50);

/// What a worker thread starts from.
pub struct Start {
    pub id: usize,
    pub core: Option<core_affinity::CoreId>,
    pub listener: std::net::TcpListener,
    pub snapshot: Arc<Snapshot>,
    pub inbox_rx: Receiver<WorkerMsg>,
    pub ready_tx: Sender<WorkerReady>,
    pub stats: Arc<WorkerStats>,
}

/// The snapshot a worker currently runs, with the worker's own balancer for it.
pub struct Active {
    pub snapshot: Arc<Snapshot>,
    pub weights: Vec<u32>,
    pub balancer: RefCell<Balancer>,
}

impl Active {
    fn new(snapshot: Arc<Snapshot>, worker_id: usize) -> Self {
        let weights = snapshot.targets.iter().map(|t| t.weight).collect();
        let balancer = Balancer::new(snapshot.algorithm, snapshot.targets.len(), worker_id as u64);
        Active {
            snapshot,
            weights,
            balancer: RefCell::new(balancer),
        }
    }
}

/// State shared by the tasks of one worker (single-threaded: `Rc`, `Cell`, `RefCell`).
pub struct Worker {
    pub id: usize,
    active: RefCell<Rc<Active>>,
    pub pool: Pool,
    pub stats: Arc<WorkerStats>,
    pub stopping: Cell<bool>,
}

impl Worker {
    pub fn active(&self) -> Rc<Active> {
        self.active.borrow().clone()
    }
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
    let server = &start.snapshot.config.server;
    let (driver, flags, entries) = (server.io_driver, server.uring, server.uring_entries);
    if driver != IoDriver::Legacy {
        match uring_runtime(flags, entries) {
            Ok(mut rt) => return rt.block_on(serve(start, "io_uring")),
            Err(e) if driver == IoDriver::IoUring => {
                let reason = format!("io_uring runtime: {e}");
                let _ = start.ready_tx.send(WorkerReady::Failed { id, reason });
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
            let _ = start.ready_tx.send(WorkerReady::Failed { id, reason });
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
        snapshot,
        inbox_rx,
        ready_tx,
        stats,
        ..
    } = start;
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let reason = format!("listener: {e}");
            let _ = ready_tx.send(WorkerReady::Failed { id, reason });
            return;
        }
    };
    let cfg = &snapshot.config;
    let worker = Rc::new(Worker {
        id,
        pool: Pool::new(
            snapshot.generation,
            snapshot.targets.len(),
            if cfg.upstream.keepalive {
                cfg.upstream.max_idle_per_target
            } else {
                0
            },
            cfg.timeouts.upstream_idle,
        ),
        active: RefCell::new(Rc::new(Active::new(snapshot.clone(), id))),
        stats,
        stopping: Cell::new(false),
    });
    let max_connections = cfg.limits.max_connections as u64;
    let _ = ready_tx.send(WorkerReady::Up { id, driver });
    drop(ready_tx);

    let canceller = Canceller::new();
    let accept_cancel = canceller.handle();
    let drain = Rc::new(Cell::new(Duration::ZERO));
    monoio::spawn(inbox(worker.clone(), inbox_rx, canceller, drain.clone()));

    loop {
        match listener.cancelable_accept(accept_cancel.clone()).await {
            Ok((stream, peer)) => {
                worker.stats.accepted.inc();
                if worker.stats.open_connections.get() >= max_connections {
                    continue; // dropped: closed at once, like a full backlog
                }
                // Counted here, not in the task, so that a burst of accepts sees it.
                worker.stats.open_connections.inc();
                monoio::spawn(conn::serve(worker.clone(), stream, peer));
            }
            Err(_) if worker.stopping.get() => break,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::debug!(worker = id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    // In-flight requests finish (up to the drain time); idle keep-alive connections are
    // closed when the runtime drops their tasks.
    let deadline = Instant::now() + drain.get();
    while worker.stats.busy_requests.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls the worker's inbox without blocking; also ages out idle upstream connections.
async fn inbox(
    worker: Rc<Worker>,
    rx: Receiver<WorkerMsg>,
    canceller: Canceller,
    drain: Rc<Cell<Duration>>,
) {
    let mut canceller = Some(canceller);
    let mut last_evict = Instant::now();
    loop {
        monoio::time::sleep(INBOX_POLL).await;
        loop {
            match rx.try_recv() {
                Ok(WorkerMsg::Snapshot(s)) => {
                    worker.pool.reset(s.generation, s.targets.len());
                    *worker.active.borrow_mut() = Rc::new(Active::new(s, worker.id));
                }
                Ok(WorkerMsg::Shutdown { drain: d }) => {
                    drain.set(d);
                    worker.stopping.set(true);
                    if let Some(c) = canceller.take() {
                        c.cancel();
                    }
                    return;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    worker.stopping.set(true);
                    if let Some(c) = canceller.take() {
                        c.cancel();
                    }
                    return;
                }
            }
        }
        if last_evict.elapsed() >= Duration::from_secs(1) {
            worker.pool.evict_expired();
            last_evict = Instant::now();
        }
    }
}
