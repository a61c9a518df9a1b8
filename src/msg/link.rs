//! The handles the control thread holds on the other threads: each worker's inbox and
//! counters, and each logging thread's control channel, counters and scheduling class.

use std::sync::Arc;

use crossbeam_channel::Sender;

use super::{LoggingStats, TrafficRecord, WorkerMsg, WorkerStats};
use crate::config::Logging;
use crate::sched::BatchClass;

/// One worker, as the control thread reaches it.
#[derive(Clone)]
pub struct WorkerLink {
    pub inbox_tx: Sender<WorkerMsg>,
    pub stats: Arc<WorkerStats>,
}

/// What a logging thread is told besides records.
#[derive(Debug)]
pub enum LoggingMsg {
    /// New settings: write what is batched with the old ones first.
    Settings(Box<Logging>),
    /// Close the current file and database connection; the next batch opens them again
    /// (SIGUSR1: after an operator moved the files away, as for nginx's logs).
    Reopen,
    /// The workers have exited: write everything queued, then end.
    Finish,
}

/// One logging thread, as the control thread (and the stop) reach it.
#[derive(Clone)]
pub struct LoggingLink {
    control_tx: Sender<LoggingMsg>,
    stats: Arc<LoggingStats>,
    class: Arc<BatchClass<TrafficRecord>>,
}

impl LoggingLink {
    pub fn new(
        control_tx: Sender<LoggingMsg>,
        stats: Arc<LoggingStats>,
        class: Arc<BatchClass<TrafficRecord>>,
    ) -> Self {
        LoggingLink {
            control_tx,
            stats,
            class,
        }
    }

    pub fn stats(&self) -> &Arc<LoggingStats> {
        &self.stats
    }

    /// Called by the control thread on every tick: a logging thread falling behind gets
    /// its normal share of the CPU back (see [`BatchClass`]).
    pub fn watch(&self) {
        self.class.watch();
    }

    /// New recording settings: what is batched so far is written first, with the old ones.
    /// Never waits (it is called from the control thread): if the logging thread has
    /// not taken the previous settings yet, these are not applied, and that is logged.
    pub fn reconfigure(&self, settings: Logging) {
        if self
            .control_tx
            .try_send(LoggingMsg::Settings(Box::new(settings)))
            .is_err()
        {
            tracing::warn!("logging thread busy: new recording settings not applied; reload again");
        }
    }

    /// Reopen the files (see [`LoggingMsg::Reopen`]). Never waits.
    pub fn reopen(&self) {
        if self.control_tx.try_send(LoggingMsg::Reopen).is_err() {
            tracing::warn!("logging thread busy: files not reopened; send SIGUSR1 again");
        }
    }

    /// From now on the logging thread stays a normal thread (for a stop: see
    /// [`BatchClass::stay_normal`]).
    pub fn stay_normal(&self) {
        self.class.stay_normal();
    }

    /// Ask the logging thread to write everything queued and end (it stays normal from
    /// now on). Waits only for room in its control channel.
    pub fn finish(&self) {
        self.class.stay_normal();
        let _ = self.control_tx.send(LoggingMsg::Finish);
    }
}
