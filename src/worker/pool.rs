//! Idle upstream connections of one worker, per target (by target id, so they survive a
//! reload that keeps the target). Most recently used first (LIFO) so that a few hot
//! connections stay warm and the rest age out; a connection is handed out only if it has
//! no unread bytes and was not closed by the target.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::io::Stream;

struct Idle {
    stream: Stream,
    since: Instant,
}

pub struct Pool {
    idle: RefCell<HashMap<u64, Vec<Idle>>>,
    max_idle: Cell<usize>,
    idle_timeout: Cell<Duration>,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: RefCell::new(HashMap::new()),
            max_idle: Cell::new(max_idle),
            idle_timeout: Cell::new(idle_timeout),
        }
    }

    /// New limits (on reload); they apply from the next put, take and eviction.
    pub fn configure(&self, max_idle: usize, idle_timeout: Duration) {
        self.max_idle.set(max_idle);
        self.idle_timeout.set(idle_timeout);
    }

    /// The freshest usable idle connection to target `id`, if any.
    pub fn take(&self, id: u64) -> Option<Stream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&id)?;
        while let Some(mut c) = list.pop() {
            if c.since.elapsed() < self.idle_timeout.get() && is_clean(&mut c.stream) {
                return Some(c.stream);
            }
        }
        None
    }

    /// Keep `stream` to target `id` for reuse (closing it when the target already has
    /// `max_idle`, or is no longer configured).
    pub fn put(&self, id: u64, stream: Stream) {
        let mut idle = self.idle.borrow_mut();
        if let Some(list) = idle.get_mut(&id)
            && list.len() < self.max_idle.get()
        {
            list.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }

    /// Pool for exactly these targets: lists of targets no longer configured are closed
    /// (their in-flight connections close when they finish), kept targets keep theirs.
    pub fn retain_targets(&self, ids: impl Iterator<Item = u64>) {
        let mut idle = self.idle.borrow_mut();
        let mut next: HashMap<u64, Vec<Idle>> = HashMap::new();
        for id in ids {
            next.insert(id, idle.remove(&id).unwrap_or_default());
        }
        *idle = next;
    }

    /// Close connections idle for longer than the idle timeout.
    pub fn evict_expired(&self) {
        let now = Instant::now();
        let limit = self.idle_timeout.get();
        for list in self.idle.borrow_mut().values_mut() {
            list.retain(|c| now.duration_since(c.since) < limit);
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}

/// No unread bytes and not closed: a non-blocking `MSG_PEEK` must find nothing to read
/// (and TLS must hold nothing read either).
fn is_clean(stream: &mut Stream) -> bool {
    if stream.has_unread() {
        return false;
    }
    let mut byte = 0u8;
    // SAFETY: recv into a valid 1-byte buffer on a socket fd we own; MSG_PEEK consumes nothing.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && {
        let err = std::io::Error::last_os_error().raw_os_error();
        err == Some(libc::EAGAIN) || err == Some(libc::EWOULDBLOCK)
    }
}
