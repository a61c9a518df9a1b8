//! The scheduling class of a thread that drains a queue in batches (the logging thread):
//! a background thread while it keeps up, so that a worker on the same CPU never waits
//! behind a batch, and a normal one as soon as its queue fills, so that it catches up
//! before anything is dropped.
//!
//! A background thread gets almost no CPU while a worker is saturated, so it may not be
//! able to notice its own queue filling: the control thread, a normal thread, checks the
//! queue on every tick and makes it normal again ([`BatchClass::watch`]); without a watcher
//! the thread never leaves the normal class. With the default
//! queue (65,536 records) and the 100 ms tick, that leaves room for ~500k requests/s.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Receiver;

use super::{self as sched, Class, LOGGING_SLICE};

/// The queue fill (a fraction of its capacity) at which the thread becomes normal again,
/// and the one under which it goes back to the background.
const NORMAL_FROM: usize = 8;
const BACKGROUND_UNDER: usize = 32;

pub struct BatchClass<T> {
    /// The logging thread's id while its class may be switched; 0 before it starts, where
    /// classes cannot be switched, once it must stay normal (a stop) and after it ended.
    /// Every class change happens under this lock, so that a change decided on a stale id
    /// cannot land after another (the logging and control threads only, never a worker).
    tid: Mutex<libc::pid_t>,
    /// The records queue, only for its length, and the length it is bounded to.
    queue: Receiver<T>,
    capacity: usize,
    /// A watcher has looked at the queue: only then may the thread go to the background
    /// (a library user running workers without the control thread has no watcher).
    watched: AtomicBool,
    /// `server.scheduler_hints`: off, the thread neither asks for a slice nor leaves the
    /// normal class.
    hints: bool,
}

impl<T> BatchClass<T> {
    pub fn new(queue: Receiver<T>, capacity: usize, hints: bool) -> Self {
        BatchClass {
            tid: Mutex::new(0),
            queue,
            capacity,
            watched: AtomicBool::new(false),
            hints,
        }
    }

    fn over(&self, fraction: usize) -> bool {
        self.queue.len() > self.capacity / fraction
    }

    fn tid(&self) -> std::sync::MutexGuard<'_, libc::pid_t> {
        self.tid
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// On the logging thread, once: ask for the short slice, and find out whether it may
    /// switch classes (it then stays normal until it has caught up). Returns a guard that
    /// forgets the thread's id when the thread ends (also by a panic), so that no class
    /// change can reach another thread that is given the same id later.
    pub fn start(&self) -> Started<'_, T> {
        if !self.hints {
            return Started(self);
        }
        let _ = sched::request_slice(LOGGING_SLICE);
        if sched::can_switch(LOGGING_SLICE) {
            *self.tid() = sched::thread_id();
        } else {
            tracing::info!(
                "the logging thread stays a normal thread: coming back from SCHED_IDLE needs CAP_SYS_NICE or RLIMIT_NICE (systemd: LimitNICE=+0)"
            );
        }
        Started(self)
    }

    /// On the logging thread, after draining its queue: back to the background when the
    /// queue is nearly empty.
    pub fn settle(&self) {
        if !self.watched.load(Ordering::Relaxed) || self.over(BACKGROUND_UNDER) {
            return;
        }
        let tid = self.tid();
        if *tid != 0
            && let Ok((Class::Normal, _)) = sched::current(0)
        {
            let _ = sched::set(0, Class::Background, LOGGING_SLICE);
        }
    }

    /// Normal from now on, for a stop: called by the stopping thread before the workers
    /// drain (nobody watches the queue then) and before the logging thread is asked to
    /// finish (a background thread could wait long for CPU time on a busy machine).
    pub fn stay_normal(&self) {
        let mut tid = self.tid();
        let t = std::mem::take(&mut *tid);
        if t != 0 {
            let _ = sched::set(t, Class::Normal, LOGGING_SLICE);
        }
    }

    /// On the control thread, every tick: a thread falling behind becomes normal.
    /// (Repeated on every tick while the queue stays full.)
    pub fn watch(&self) {
        self.watched.store(true, Ordering::Relaxed);
        if !self.over(NORMAL_FROM) {
            return;
        }
        let tid = self.tid();
        if *tid != 0 {
            let _ = sched::set(*tid, Class::Normal, LOGGING_SLICE);
        }
    }
}

/// Held by the logging thread for its whole life (see [`BatchClass::start`]).
pub struct Started<'p, T>(&'p BatchClass<T>);

impl<T> Drop for Started<'_, T> {
    fn drop(&mut self) {
        *self.0.tid() = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_background_logging_thread_falling_behind_is_made_normal_by_the_watcher() {
        let (tx, rx) = crossbeam_channel::bounded(64);
        let priority = std::sync::Arc::new(BatchClass::new(rx, 64, true));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let p = priority.clone();
        let thread = std::thread::spawn(move || {
            let _started = p.start();
            p.settle();
            // Nobody watches yet: it stays normal.
            assert_eq!(sched::current(0).unwrap().0, Class::Normal);
            p.watch();
            p.settle();
            tid_tx.send(sched::thread_id()).unwrap();
            // Then, on request, settle again (the queue drained) and report.
            while done_rx.recv().is_ok() {
                p.settle();
                tid_tx.send(sched::thread_id()).unwrap();
            }
        });
        let tid = tid_rx.recv().unwrap();
        let class = || sched::current(tid).unwrap().0;
        if *priority.tid() == 0 {
            // No privilege to come back from the background: it never goes there.
            assert_eq!(class(), Class::Normal);
        } else {
            assert_eq!(class(), Class::Background, "an empty queue: background");
            for _ in 0..64 / NORMAL_FROM {
                tx.send(0u8).unwrap();
            }
            priority.watch();
            assert_eq!(
                class(),
                Class::Background,
                "an eighth full: still background"
            );
            tx.send(0u8).unwrap();
            priority.watch();
            assert_eq!(class(), Class::Normal, "over an eighth: normal");
            // Caught up: back to the background.
            while priority.queue.try_recv().is_ok() {}
            done_tx.send(()).unwrap();
            tid_rx.recv().unwrap();
            assert_eq!(class(), Class::Background, "caught up: background again");
            // A stop makes it normal for good, even with an empty queue.
            priority.stay_normal();
            assert_eq!(class(), Class::Normal, "stopping: normal");
            done_tx.send(()).unwrap();
            tid_rx.recv().unwrap();
            assert_eq!(class(), Class::Normal, "stopping: stays normal");
        }
        drop(done_tx);
        thread.join().unwrap();
    }
}
