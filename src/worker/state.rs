//! What the tasks of one worker share (one thread: `Rc`, `Cell`, `RefCell`): the snapshot
//! it runs with its own balancer, its upstream pool, its counters and the channels to the
//! other threads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use super::pool::Pool;
use super::sockets::OpenSockets;
use super::tally::RequestCounts;
use crate::balance::{Balancer, hash_of};
use crate::config::Snapshot;
use crate::msg::{RecordSender, StatsReport, TrafficRecord, WorkerEvent, WorkerStats};

/// The snapshot a worker runs new requests on, with the worker's own balancer for it.
pub struct Current {
    pub snapshot: Arc<Snapshot>,
    pub weights: Vec<u32>,
    /// Hashes of the targets' names (`consistent_hash`'s ring).
    pub names: Vec<u64>,
    pub balancer: RefCell<Balancer>,
}

impl Current {
    pub fn new(snapshot: Arc<Snapshot>, worker_id: usize) -> Self {
        let weights = snapshot.targets.iter().map(|t| t.weight).collect();
        let names = snapshot.targets.iter().map(|t| hash_of(&t.name)).collect();
        let balancer = Current::balancer(&snapshot, worker_id);
        Current {
            snapshot,
            weights,
            names,
            balancer: RefCell::new(balancer),
        }
    }

    fn balancer(snapshot: &Snapshot, worker_id: usize) -> Balancer {
        let factor = snapshot.config.targets.hash_load_factor;
        let n = snapshot.targets.len();
        Balancer::with_load_factor(snapshot.algorithm, n, worker_id as u64, factor)
    }

    /// What replaces this one for `snapshot`: balancer positions carry over when the
    /// rotation is unchanged (a health change), so that the distribution stays smooth.
    fn followed_by(&self, snapshot: Arc<Snapshot>, worker_id: usize) -> Self {
        let mut next = Current::new(snapshot, worker_id);
        if next.snapshot.same_rotation(&self.snapshot) {
            // Requests still running on the old snapshot have picked their targets; a
            // failover pick there works with any balancer state.
            let fresh = Current::balancer(&next.snapshot, worker_id);
            next.balancer = RefCell::new(self.balancer.replace(fresh));
        }
        next
    }
}

/// The pool's limits from a snapshot: idle connections kept per target (none when
/// upstream keep-alive is off), connections open per target (0: no limit), and how long
/// an idle one is kept.
fn pool_limits(snapshot: &Snapshot) -> (usize, usize, Duration) {
    let up = &snapshot.config.upstream;
    let idle = if up.keepalive {
        up.max_idle_per_target
    } else {
        0
    };
    (
        idle,
        up.max_connections_per_target,
        snapshot.config.timeouts.upstream_idle,
    )
}

pub struct Worker {
    pub id: usize,
    current: RefCell<Rc<Current>>,
    pub pool: Pool,
    pub stats: Arc<WorkerStats>,
    pub stopping: Cell<bool>,
    events_tx: Sender<WorkerEvent>,
    counts: RefCell<RequestCounts>,
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
    /// Client connection ids (records' `conn`): the start time and the worker in the
    /// high bits, a counter below (see [`Worker::new_conn_id`]).
    conn_prefix: u64,
    next_conn: Cell<u32>,
}

impl Worker {
    pub fn new(
        id: usize,
        snapshot: Arc<Snapshot>,
        stats: Arc<WorkerStats>,
        events_tx: Sender<WorkerEvent>,
        records_tx: RecordSender,
    ) -> Self {
        let (idle, open, idle_timeout) = pool_limits(&snapshot);
        let pool = Pool::new(idle, open, idle_timeout);
        pool.retain_targets(snapshot.targets.iter().map(|t| t.id));
        stats.generation.set(snapshot.generation);
        let started = crate::clock::unix_secs() as u32;
        Worker {
            id,
            pool,
            current: RefCell::new(Rc::new(Current::new(snapshot, id))),
            stats,
            stopping: Cell::new(false),
            events_tx,
            counts: RefCell::default(),
            unsent: RefCell::default(),
            failures: RefCell::default(),
            records_tx,
            open: RefCell::default(),
            id_prefix: format!("{started:08x}{:02x}", id as u8),
            next_id: Cell::new(0),
            conn_prefix: (u64::from(started & 0x7fff_ffff) << 32) | (u64::from(id as u8) << 24),
            next_conn: Cell::new(0),
        }
    }

    pub fn current(&self) -> Rc<Current> {
        self.current.borrow().clone()
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

    /// A new client connection's id, for its records' `conn` (what `dispa replay` keeps
    /// the order of requests by): the process's start second (31 bits), the worker (8) and
    /// a counter (24 bits; after 16.7 million connections of one worker an id comes
    /// again, hours apart). Positive as an i64, for SQLite and PostgreSQL.
    pub fn new_conn_id(&self) -> u64 {
        let n = self.next_conn.get();
        self.next_conn.set(n.wrapping_add(1));
        self.conn_prefix | u64::from(n & 0xff_ffff)
    }

    /// Hand a record to the logging thread; a full channel drops it (counted).
    pub fn send_record(&self, record: TrafficRecord) {
        if !self.records_tx.try_send(record) {
            self.stats.records_dropped.inc();
        }
    }

    /// Count one finished request for the metrics. `rule`/`target` are indices of
    /// `current`'s snapshot (or `tally::NONE`); `upstream` is the time from sending the
    /// request to the response head.
    pub fn count_request(
        &self,
        current: &Current,
        rule_target: (u32, u32),
        status: u16,
        total: Duration,
        upstream: Option<Duration>,
    ) {
        self.stats.response(status);
        let now = current.snapshot.generation == self.stats.generation.get();
        self.counts
            .borrow_mut()
            .add(&current.snapshot, now, rule_target, status, total, upstream);
    }

    /// Count one completed client TLS handshake (`dispa_tls_handshake_seconds`).
    pub fn count_handshake(&self, took: Duration) {
        self.counts.borrow_mut().add_handshake(took);
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
    pub fn report(&self) {
        let counts = std::mem::take(&mut *self.counts.borrow_mut());
        let mut report = self
            .unsent
            .borrow_mut()
            .take()
            .unwrap_or_else(|| StatsReport {
                worker: self.id,
                ..StatsReport::default()
            });
        counts.drain_into(&mut report, &self.current().snapshot);
        if report.requests.is_empty()
            && report.duration.is_empty()
            && report.tls_handshake.count() == 0
        {
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
    pub fn apply(&self, snapshot: Arc<Snapshot>) {
        // Counts are labelled by the snapshot they were taken under.
        self.report();
        self.pool
            .retain_targets(snapshot.targets.iter().map(|t| t.id));
        let (idle, open, idle_timeout) = pool_limits(&snapshot);
        self.pool.configure(idle, open, idle_timeout);
        let generation = snapshot.generation;
        let next = self.current().followed_by(snapshot, self.id);
        *self.current.borrow_mut() = Rc::new(next);
        self.stats.generation.set(generation);
    }
}
