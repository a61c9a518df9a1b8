//! The client sockets a worker has open, so that it can close the idle ones itself: at
//! their keep-alive deadline (parked connections have no timer) and on shutdown (a monoio
//! runtime that is dropped does not drop tasks waiting on I/O).

use std::time::{Duration, Instant};

/// Raw fds of open client connections, in slots reused as connections come and go, with
/// the keep-alive deadline of those parked (idle without a buffer, see `conn`).
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
    pub fn shutdown_all(&self) {
        for s in self.slots.iter().flatten() {
            // SAFETY: the fd belongs to a live TcpStream (removed from here before it closes).
            unsafe { libc::shutdown(s.fd, libc::SHUT_RDWR) };
        }
    }

    /// Shut down the parked sockets whose keep-alive deadline has passed.
    pub fn shutdown_expired(&mut self, now: Instant) {
        for s in self.slots.iter_mut().flatten() {
            if s.parked_until.is_some_and(|t| t <= now) {
                s.parked_until = None;
                // SAFETY: as in `shutdown_all`.
                unsafe { libc::shutdown(s.fd, libc::SHUT_RDWR) };
            }
        }
    }
}
