//! Every message that crosses threads, and every value two threads share. Workers receive
//! [`WorkerMsg`] on their own `crossbeam-channel` and never block on it (they poll with
//! `try_recv`); what they send ([`WorkerEvent`], [`TrafficRecord`]) goes with `try_send`.
//!
//! - `stats`: counters each thread writes alone and others read, and the reports workers send;
//! - `record`: the traffic record, from a worker to the logging thread;
//! - `queue`: the records queue;
//! - `link`: the handles the control thread holds on the workers and the logging thread.

mod link;
mod queue;
mod record;
mod stats;

pub use link::{LoggingLink, LoggingMsg, WorkerLink};
pub use queue::{RecordSender, record_queue};
pub use record::{Captured, ErrorKind, RecordText, TrafficRecord};
pub use stats::{
    Counter, Histogram, LATENCY_BUCKETS, LoggingStats, SinkHealth, StatsReport, TlsHandshake,
    WorkerStats,
};

use std::sync::Arc;
use std::time::Duration;

use crate::config::Snapshot;

/// From the boot/control side to one worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// Run new requests on this snapshot from now on.
    Snapshot(Arc<Snapshot>),
    /// Stop accepting, let in-flight requests finish (at most `drain`), then exit.
    Shutdown { drain: Duration },
}

/// From a worker to boot once its runtime is up (or could not be built).
#[derive(Debug)]
pub enum WorkerReady {
    Up { id: usize, driver: &'static str },
    Failed { id: usize, reason: String },
}

/// From a worker to the control thread, through one channel shared by all workers
/// (`try_send`: a worker never waits for the control thread).
#[derive(Debug)]
pub enum WorkerEvent {
    /// Counts since the worker's previous report.
    Stats(Box<StatsReport>),
    /// A connection attempt to target `id` failed (`ok: false`), or succeeded after failures.
    Target { id: u64, ok: bool },
}
