//! Scheduling hints for Dispa's threads. On a CPU shared by a worker and the logging
//! thread (which writes a batch for milliseconds at a time), a request must not wait
//! behind the batch:
//! - every thread asks for a short time slice. Linux's EEVDF scheduler (6.12 and later)
//!   gives a task with a shorter slice an earlier deadline and lets it preempt on
//!   wake-up; the slice is a request any thread may make for itself. Older kernels ignore
//!   the field for normal threads.
//! - the logging thread runs as `SCHED_IDLE` (a background class: it gets the CPU only
//!   when no worker wants it, and a waking worker preempts it at once) while it keeps up,
//!   and as a normal thread when its queue fills ([`BatchClass`]). Coming back
//!   from `SCHED_IDLE` needs `CAP_SYS_NICE` or an `RLIMIT_NICE` that allows nice 0 (root
//!   has both; systemd: `LimitNICE=+0`), so [`can_switch`] probes it first and the
//!   background class is used only where both directions work.
//! - a worker gives memory freed by parked connections back to the system when it is
//!   quiet ([`WorkerHeap`]), the control thread what C code freed ([`HeapTrim`]).
//!
//! All of it is behind one switch, `server.scheduler_hints` (on by default): off, no thread
//! asks for a slice, the logging thread stays normal and no heap is collected or trimmed.

mod batch;
mod heap;

pub use batch::{BatchClass, Started};
pub use heap::{HeapTrim, WorkerHeap};

use std::time::Duration;

/// What the workers ask for: short enough that a wake-up preempts a batch writer, long
/// enough that a busy worker is not switched out mid-request (a request takes microseconds).
pub const WORKER_SLICE: Duration = Duration::from_micros(100);

/// What the logging thread asks for: when a worker sharing its CPU is runnable, it waits
/// at most this long for the batch writer to give the CPU back.
pub const LOGGING_SLICE: Duration = Duration::from_micros(100);

/// A thread's scheduling class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `SCHED_OTHER`: shares the CPU fairly.
    Normal,
    /// `SCHED_IDLE`: runs only on CPU time nobody else wants.
    Background,
}

/// `struct sched_attr` of sched_setattr(2), first version (48 bytes).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// The calling thread's id (for [`set`] from another thread).
pub fn thread_id() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Ask for `slice` on the calling thread, keeping its nice value. A thread an operator
/// put in another policy (systemd `CPUSchedulingPolicy=`, `chrt`) is left as it is.
pub fn request_slice(slice: Duration) -> std::io::Result<()> {
    if attr(0)?.policy != libc::SCHED_OTHER as u32 {
        return Ok(());
    }
    set(0, Class::Normal, slice)
}

/// Put thread `tid` (0: the calling thread) in `class` with time slice `slice`; its nice
/// value is kept.
pub fn set(tid: libc::pid_t, class: Class, slice: Duration) -> std::io::Result<()> {
    // SAFETY: getpriority has no memory effects; errno is cleared first because -1 is
    // also a valid nice value, and read right after.
    let (nice, errno) = unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        (nice, *libc::__errno_location())
    };
    if nice == -1 && errno != 0 {
        return Err(std::io::Error::from_raw_os_error(errno));
    }
    let policy = match class {
        Class::Normal => libc::SCHED_OTHER,
        Class::Background => libc::SCHED_IDLE,
    };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: policy as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime: slice.as_nanos() as u64,
        deadline: 0,
        period: 0,
    };
    // SAFETY: a pointer to a fully initialised sched_attr of the size it declares.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether this process's threads may move between the classes both ways. Tried on a
/// thread of its own: where coming back is refused, that thread is left in the
/// background for good, so it must not be one that matters.
pub fn can_switch(slice: Duration) -> bool {
    std::thread::Builder::new()
        .name("dispa-sched-probe".into())
        .spawn(move || {
            set(0, Class::Background, slice).is_ok() && set(0, Class::Normal, slice).is_ok()
        })
        .is_ok_and(|probe| probe.join().unwrap_or(false))
}

/// Thread `tid`'s (0: the calling thread's) class and slice (slice 0: the kernel's
/// default).
pub fn current(tid: libc::pid_t) -> std::io::Result<(Class, Duration)> {
    let attr = attr(tid)?;
    let class = if attr.policy == libc::SCHED_IDLE as u32 {
        Class::Background
    } else {
        Class::Normal
    };
    Ok((class, Duration::from_nanos(attr.runtime)))
}

fn attr(tid: libc::pid_t) -> std::io::Result<SchedAttr> {
    let mut attr = std::mem::MaybeUninit::<SchedAttr>::zeroed();
    // SAFETY: the kernel writes at most `size` bytes into the buffer we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            attr.as_mut_ptr(),
            std::mem::size_of::<SchedAttr>() as u32,
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: zero-initialised, then filled by the kernel.
    Ok(unsafe { attr.assume_init() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_can_ask_for_a_short_slice() {
        std::thread::spawn(|| {
            request_slice(WORKER_SLICE).unwrap();
            let (class, slice) = current(0).unwrap();
            assert_eq!(class, Class::Normal);
            // Kernels before 6.12 keep no slice for normal threads and report 0.
            assert!(slice == WORKER_SLICE || slice.is_zero(), "{slice:?}");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn another_thread_moves_a_thread_between_classes() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            if !can_switch(LOGGING_SLICE) {
                tid_tx.send(None).unwrap();
                return;
            }
            set(0, Class::Background, LOGGING_SLICE).unwrap();
            tid_tx.send(Some(thread_id())).unwrap();
            go_rx.recv().unwrap();
            seen_tx.send(current(0).unwrap().0).unwrap();
        });
        // Without the privilege to come back (not root, RLIMIT_NICE 0) there is nothing
        // to check: Dispa then never uses the background class.
        if let Some(tid) = tid_rx.recv().unwrap() {
            set(tid, Class::Normal, LOGGING_SLICE).unwrap();
            go_tx.send(()).unwrap();
            assert_eq!(seen_rx.recv().unwrap(), Class::Normal);
        }
        t.join().unwrap();
    }
}
