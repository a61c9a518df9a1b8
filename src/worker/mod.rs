//! One worker: a thread pinned to a CPU, running one monoio runtime (io_uring, or epoll
//! when the ring cannot be set up) that accepts on its own SO_REUSEPORT listener and owns
//! every connection, pool and balancer position it uses. Nothing here blocks or locks.

mod buf;
mod conn;
mod forward;
mod pool;
mod relay;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use monoio::io::Canceller;

use crate::balance::Balancer;
use crate::config::{IoDriver, Snapshot, UringFlags};
use crate::http::canned;
use crate::msg::{
    Histogram, RecordSender, StatsReport, TrafficRecord, WorkerEvent, WorkerMsg, WorkerReady,
    WorkerStats,
};

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
use pool::Pool;

/// How often a worker looks at its inbox (and ages out idle upstream connections).
const INBOX_POLL: Duration = Duration::from_millis(50);
/// How often a worker reports its counts to the control thread.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// What a worker thread starts from.
pub struct Start {
    pub id: usize,
    pub core: Option<core_affinity::CoreId>,
    pub listener: std::net::TcpListener,
    pub snapshot: Arc<Snapshot>,
    pub inbox_rx: Receiver<WorkerMsg>,
    pub ready_tx: Sender<WorkerReady>,
    pub events_tx: Sender<WorkerEvent>,
    pub records_tx: RecordSender,
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

    /// The next snapshot; balancer positions carry over when the rotation is unchanged
    /// (a health change), so that the distribution stays smooth.
    fn succeed(&self, snapshot: Arc<Snapshot>, worker_id: usize) -> Self {
        let mut next = Active::new(snapshot, worker_id);
        if next.snapshot.same_rotation(&self.snapshot) {
            // Requests still running on the old snapshot have picked their targets; a
            // failover pick there works with any balancer state.
            let fresh = Balancer::new(next.snapshot.algorithm, 0, worker_id as u64);
            next.balancer = RefCell::new(self.balancer.replace(fresh));
        }
        next
    }
}

/// What a worker counts between two reports: requests by (domain rule, target index,
/// status class) of the current snapshot, and latency histograms.
#[derive(Default)]
pub struct Tally {
    requests: HashMap<(u32, u32, u8), u64>,
    /// Requests that finished on an older snapshot than the worker's current one,
    /// labelled already (their indices would mean other names in the current one).
    labelled: Vec<(String, String, u8, u64)>,
    duration: Histogram,
    upstream_duration: Histogram,
}

/// The domain rule and target name that indices of `snapshot` stand for ("" for none).
fn labels(snapshot: &Snapshot, rule: u32, target: u32) -> (String, String) {
    let domain = snapshot.routes.rules().get(rule as usize).cloned();
    let target = snapshot
        .targets
        .get(target as usize)
        .map(|t| t.name.clone());
    (domain.unwrap_or_default(), target.unwrap_or_default())
}

/// Idle upstream connections kept per target (none when upstream keep-alive is off).
fn max_idle(snapshot: &Snapshot) -> usize {
    let upstream = &snapshot.config.upstream;
    if upstream.keepalive {
        upstream.max_idle_per_target
    } else {
        0
    }
}

/// Rule or target index meaning "none".
pub const NONE: u32 = u32::MAX;

/// Raw fds of open client connections, in slots reused as connections come and go, with
/// the keep-alive deadline of those parked (idle without a buffer, see `conn::read_head`).
/// Parked connections have no timer of their own (a monoio timer is 640 bytes per
/// connection): the worker's inbox task sweeps this table every [`PARK_SWEEP`] and
/// shuts down the sockets whose deadline has passed, which wakes their tasks.
#[derive(Default)]
pub struct OpenSockets {
    slots: Vec<Option<OpenSocket>>,
    free: Vec<usize>,
}

#[derive(Clone, Copy)]
struct OpenSocket {
    fd: std::os::fd::RawFd,
    parked_until: Option<Instant>,
}

/// How often parked connections past their keep-alive deadline are closed (so the
/// timeout of a parked connection is kept to within this).
pub const PARK_SWEEP: Duration = Duration::from_millis(250);

impl OpenSockets {
    pub fn insert(&mut self, fd: std::os::fd::RawFd) -> usize {
        let entry = Some(OpenSocket {
            fd,
            parked_until: None,
        });
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = entry;
                i
            }
            None => {
                self.slots.push(entry);
                self.slots.len() - 1
            }
        }
    }

    pub fn remove(&mut self, slot: usize) {
        self.slots[slot] = None;
        self.free.push(slot);
    }

    /// The connection in `slot` waits without a timer until `until`.
    pub fn park(&mut self, slot: usize, until: Instant) {
        if let Some(s) = self.slots.get_mut(slot).and_then(Option::as_mut) {
            s.parked_until = Some(until);
        }
    }

    /// The connection in `slot` woke: returns false when the sweep had already expired it
    /// (and shut its socket down). The sweep decides, not the time the task runs: a
    /// request that arrived before the deadline is served even if the task runs late.
    pub fn unpark(&mut self, slot: usize) -> bool {
        self.slots
            .get_mut(slot)
            .and_then(Option::as_mut)
            .and_then(|s| s.parked_until.take())
            .is_some()
    }

    /// Shut down every socket still open: a task waiting to read one wakes with end of
    /// stream and closes it.
    fn shutdown_all(&self) {
        for s in self.slots.iter().flatten() {
            // SAFETY: the fd belongs to a live TcpStream (removed from here before it closes).
            unsafe { libc::shutdown(s.fd, libc::SHUT_RDWR) };
        }
    }

    /// Shut down the parked sockets whose keep-alive deadline has passed.
    fn shutdown_expired(&mut self, now: Instant) {
        for s in self.slots.iter_mut().flatten() {
            if s.parked_until.is_some_and(|t| t <= now) {
                s.parked_until = None;
                // SAFETY: as in `shutdown_all`.
                unsafe { libc::shutdown(s.fd, libc::SHUT_RDWR) };
            }
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
    events_tx: Sender<WorkerEvent>,
    tally: RefCell<Tally>,
    /// A report the control thread could not take yet (its channel was full).
    unsent: RefCell<Option<StatsReport>>,
    /// Consecutive connect failures per target id, for passive health checks.
    failures: RefCell<HashMap<u64, u32>>,
    records_tx: RecordSender,
    /// Client sockets of open connections, to close the idle ones on shutdown (a
    /// runtime that is dropped does not drop tasks waiting on I/O).
    open: RefCell<OpenSockets>,
    /// Request ids: `<start time><worker>` then a counter, unique across restarts.
    id_prefix: String,
    next_id: Cell<u64>,
}

impl Worker {
    pub fn active(&self) -> Rc<Active> {
        self.active.borrow().clone()
    }

    pub fn open_sockets(&self) -> &RefCell<OpenSockets> {
        &self.open
    }

    /// Append a new request id (24 hex digits) to `out`.
    pub fn write_request_id(&self, out: &mut String) {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        out.push_str(&self.id_prefix);
        for shift in (0..14).rev() {
            out.push(char::from(
                b"0123456789abcdef"[(n >> (shift * 4)) as usize & 15],
            ));
        }
    }

    /// Hand a record to the logging thread; a full channel drops it (counted).
    pub fn send_record(&self, record: TrafficRecord) {
        if !self.records_tx.try_send(record) {
            self.stats.records_dropped.inc();
        }
    }

    /// Count one finished request. `rule`/`target` are indices of the current snapshot
    /// (or [`NONE`]); `upstream` is the time from sending the request to the response head.
    pub fn record(
        &self,
        active: &Active,
        rule: u32,
        target: u32,
        status: u16,
        total: Duration,
        upstream: Option<Duration>,
    ) {
        self.stats.response(status);
        let mut t = self.tally.borrow_mut();
        let class = (status / 100) as u8;
        if active.snapshot.generation == self.stats.generation.get() {
            *t.requests.entry((rule, target, class)).or_default() += 1;
        } else {
            let (domain, target) = labels(&active.snapshot, rule, target);
            t.labelled.push((domain, target, class, 1));
        }
        t.duration.observe(total.as_secs_f64());
        if let Some(u) = upstream {
            t.upstream_duration.observe(u.as_secs_f64());
        }
    }

    /// Passive health: tell the control thread about a failed connection attempt, and
    /// about the first success after failures.
    pub fn note_target(&self, id: u64, ok: bool) {
        let mut failures = self.failures.borrow_mut();
        let n = failures.entry(id).or_default();
        if ok {
            if *n == 0 {
                return;
            }
            *n = 0;
        } else {
            *n += 1;
        }
        let _ = self.events_tx.try_send(WorkerEvent::Target { id, ok });
    }

    /// Send the counts gathered since the last report, labelled with the current
    /// snapshot's names. Never blocks: when the channel is full the report is kept and
    /// merged into the next one.
    fn report(&self) {
        let tally = std::mem::take(&mut *self.tally.borrow_mut());
        let mut report = self
            .unsent
            .borrow_mut()
            .take()
            .unwrap_or_else(|| StatsReport {
                worker: self.id,
                ..StatsReport::default()
            });
        let active = self.active();
        for ((rule, target, class), n) in tally.requests {
            let (domain, target) = labels(&active.snapshot, rule, target);
            report.requests.push((domain, target, class, n));
        }
        report.requests.extend(tally.labelled);
        report.duration.merge(&tally.duration);
        report.upstream_duration.merge(&tally.upstream_duration);
        if report.requests.is_empty() && report.duration.count() == 0 {
            return;
        }
        match self
            .events_tx
            .try_send(WorkerEvent::Stats(Box::new(report)))
        {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(WorkerEvent::Stats(r))) => *self.unsent.borrow_mut() = Some(*r),
            Err(TrySendError::Full(_)) => {}
        }
    }

    /// Switch to a new snapshot (between requests; a request in progress keeps the one it
    /// started with).
    fn apply(&self, snapshot: Arc<Snapshot>) {
        // Counts are labelled by the snapshot they were taken under.
        self.report();
        self.pool
            .retain_targets(snapshot.targets.iter().map(|t| t.id));
        self.pool
            .configure(max_idle(&snapshot), snapshot.config.timeouts.upstream_idle);
        let generation = snapshot.generation;
        let next = self.active().succeed(snapshot, self.id);
        *self.active.borrow_mut() = Rc::new(next);
        self.stats.generation.set(generation);
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
        events_tx,
        records_tx,
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
    let worker = Rc::new(Worker {
        id,
        pool: Pool::new(max_idle(&snapshot), snapshot.config.timeouts.upstream_idle),
        active: RefCell::new(Rc::new(Active::new(snapshot.clone(), id))),
        stats,
        stopping: Cell::new(false),
        events_tx,
        tally: RefCell::default(),
        unsent: RefCell::default(),
        failures: RefCell::default(),
        records_tx,
        open: RefCell::default(),
        id_prefix: format!("{:08x}{:02x}", unix_secs() as u32, id as u8),
        next_id: Cell::new(0),
    });
    worker
        .pool
        .retain_targets(snapshot.targets.iter().map(|t| t.id));
    worker.stats.generation.set(snapshot.generation);
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
                let max_connections = worker.active().snapshot.config.limits.max_connections;
                if worker.stats.open_connections.get() >= max_connections as u64 {
                    // One short answer and close; the write lands in the fresh socket's
                    // empty send buffer, so this task never waits on the client.
                    worker.stats.refused_connections.inc();
                    monoio::spawn(refuse(stream));
                    continue;
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
    // What is left is idle (or overdue): close it, and give the tasks a moment to end so
    // that their sockets, pooled connections and record sender are dropped.
    worker.open.borrow().shutdown_all();
    let deadline = Instant::now() + Duration::from_secs(1);
    while worker.stats.open_connections.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.report();
}

/// Answer a connection over `limits.max_connections` with 503 and close it.
async fn refuse(mut stream: monoio::net::TcpStream) {
    let mut out = Vec::with_capacity(192);
    canned::response(&mut out, 503, "too many connections", true);
    let _ = monoio::io::AsyncWriteRentExt::write_all(&mut stream, out).await;
}

/// Polls the worker's inbox without blocking; also ages out idle upstream connections
/// and closes parked connections past their keep-alive deadline.
async fn inbox(
    worker: Rc<Worker>,
    rx: Receiver<WorkerMsg>,
    canceller: Canceller,
    drain: Rc<Cell<Duration>>,
) {
    let mut canceller = Some(canceller);
    let mut last_evict = Instant::now();
    let mut last_report = Instant::now();
    let mut last_sweep = Instant::now();
    loop {
        monoio::time::sleep(INBOX_POLL).await;
        loop {
            match rx.try_recv() {
                Ok(WorkerMsg::Snapshot(s)) => worker.apply(s),
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
        if last_report.elapsed() >= REPORT_EVERY {
            worker.report();
            worker.stats.pool_idle.set(worker.pool.idle_count() as u64);
            last_report = Instant::now();
        }
        if last_sweep.elapsed() >= PARK_SWEEP {
            last_sweep = Instant::now();
            worker.open.borrow_mut().shutdown_expired(last_sweep);
        }
        if last_evict.elapsed() >= Duration::from_secs(1) {
            worker.pool.evict_expired();
            last_evict = Instant::now();
        }
    }
}
