//! A worker's inbox task: new snapshots and shutdown from the control thread, polled
//! without blocking, and the worker's periodic chores (reports, pool aging, sweeping parked
//! connections past their deadline, collecting its heap when quiet).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use monoio::io::Canceller;

use super::sockets::PARK_SWEEP;
use super::state::Worker;
use crate::msg::WorkerMsg;

/// How often a worker looks at its inbox (and ages out idle upstream connections).
const INBOX_POLL: Duration = Duration::from_millis(50);
/// How often a worker reports its counts to the control thread.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Polls the worker's inbox without blocking; also ages out idle upstream connections
/// and closes parked connections past their keep-alive deadline.
pub async fn run(
    worker: Rc<Worker>,
    rx: Receiver<WorkerMsg>,
    canceller: Canceller,
    drain: Rc<Cell<Duration>>,
) {
    let mut canceller = Some(canceller);
    let mut last_evict = Instant::now();
    let mut last_report = Instant::now();
    let mut last_sweep = Instant::now();
    let mut heap = crate::sched::WorkerHeap::default();
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
            worker
                .open_sockets()
                .borrow_mut()
                .shutdown_expired(last_sweep);
        }
        if last_evict.elapsed() >= Duration::from_secs(1) {
            worker.pool.evict_expired();
            last_evict = Instant::now();
            if worker.current().snapshot.config.server.scheduler_hints {
                let s = &worker.stats;
                heap.tick(s.requests.get(), s.busy_requests.get(), s.parked.get());
            }
        }
    }
}
