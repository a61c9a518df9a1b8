//! Every message that crosses threads. Workers receive [`WorkerMsg`] on their own
//! `crossbeam-channel` and never block on it (they poll with `try_recv`).

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
