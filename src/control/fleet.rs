//! What the control thread runs: the workers and the logging thread, as boot handed them
//! over ([`Parts`]). It builds every snapshot after the first and sends it to each worker,
//! and it decides when everything stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::config::snapshot::Registry;
use crate::config::{Config, Snapshot};
use crate::msg::{LoggingLink, SinkHealth, WorkerEvent, WorkerLink, WorkerMsg, WorkerStats};

/// The counters of every logging thread, summed at one moment.
#[derive(Debug, Default)]
pub struct LoggingTotals {
    pub written_file: u64,
    pub written_database: u64,
    pub lost_file: u64,
    pub lost_database: u64,
    pub errors_file: u64,
    pub errors_database: u64,
    pub backlog_file: u64,
    pub backlog_database: u64,
    pub health: SinkHealth,
}

/// Everything boot started, handed to the control thread.
pub struct Parts {
    /// The snapshot the workers run, and the target identities it was built with.
    pub snapshot: Arc<Snapshot>,
    pub registry: Registry,
    pub workers: Vec<WorkerLink>,
    /// The I/O driver each worker runs (`io_uring` or `epoll`).
    pub drivers: Vec<&'static str>,
    /// What workers report (stats, passive health).
    pub events_rx: Receiver<WorkerEvent>,
    /// One per logging thread (shard), in shard order.
    pub logging: Vec<LoggingLink>,
    /// Stops the workers (letting requests in flight run up to the drain time), joins
    /// them, then has the logging thread write everything queued.
    pub stop: Box<dyn FnOnce(Duration) + Send>,
}

/// The control thread's view of the running parts.
pub struct Fleet {
    snapshot: Arc<Snapshot>,
    registry: Registry,
    workers: Vec<WorkerLink>,
    stats: Vec<Arc<WorkerStats>>,
    drivers: Vec<&'static str>,
    events_rx: Receiver<WorkerEvent>,
    logging: Vec<LoggingLink>,
    stop: Option<Box<dyn FnOnce(Duration) + Send>>,
}

impl Fleet {
    pub fn new(parts: Parts) -> Self {
        Fleet {
            stats: parts.workers.iter().map(|w| w.stats.clone()).collect(),
            snapshot: parts.snapshot,
            registry: parts.registry,
            workers: parts.workers,
            drivers: parts.drivers,
            events_rx: parts.events_rx,
            logging: parts.logging,
            stop: Some(parts.stop),
        }
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Each worker's counters, by worker id.
    pub fn stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    pub fn drivers(&self) -> &[&'static str] {
        &self.drivers
    }

    /// The logging threads' counters summed, and their sinks' health (each sink's
    /// first error, named by shard when there are several).
    pub fn logging_totals(&self) -> LoggingTotals {
        let mut t = LoggingTotals::default();
        for (k, link) in self.logging.iter().enumerate() {
            let s = link.stats();
            t.written_file += s.written_file.get();
            t.written_database += s.written_database.get();
            t.lost_file += s.lost_file.get();
            t.lost_database += s.lost_database.get();
            t.errors_file += s.errors_file.get();
            t.errors_database += s.errors_database.get();
            t.backlog_file += s.backlog_file.get();
            t.backlog_database += s.backlog_database.get();
            let health = s.health();
            let name = |e: String| match self.logging.len() {
                1 => e,
                _ => format!("shard {k}: {e}"),
            };
            t.health.file = t.health.file.or(health.file.map(name));
            t.health.database = t.health.database.or(health.database.map(name));
        }
        t
    }

    /// Have every logging thread reopen its files (SIGUSR1).
    pub fn reopen_logs(&self) {
        self.logging.iter().for_each(LoggingLink::reopen);
    }

    pub fn watch_logging(&self) {
        self.logging.iter().for_each(LoggingLink::watch);
    }

    pub fn events(&self) -> &Receiver<WorkerEvent> {
        &self.events_rx
    }

    /// Build the next snapshot from `config` (target identities kept by name and address)
    /// and send it to every worker. Returns it.
    pub fn publish(
        &mut self,
        config: Config,
        available: &dyn Fn(&str, SocketAddr) -> bool,
    ) -> Arc<Snapshot> {
        let generation = self.snapshot.generation + 1;
        if config.logging != self.snapshot.config.logging {
            for link in &self.logging {
                link.reconfigure(config.logging.clone());
            }
        }
        let snapshot = Arc::new(Snapshot::build(
            config,
            generation,
            self.workers.len(),
            &mut self.registry,
            available,
        ));
        for w in &self.workers {
            // A worker that has exited no longer needs snapshots.
            let _ = w.inbox_tx.send(WorkerMsg::Snapshot(snapshot.clone()));
        }
        self.snapshot = snapshot.clone();
        snapshot
    }

    /// Stop everything (once): see [`Parts::stop`].
    pub fn stop(&mut self, drain: Duration) {
        if let Some(stop) = self.stop.take() {
            stop(drain);
        }
    }
}
