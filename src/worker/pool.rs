//! Idle upstream connections of one worker, per target. Most recently used first (LIFO) so
//! that a few hot connections stay warm and the rest age out; a connection is handed out
//! only if it has no unread bytes and was not closed by the target.

use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

struct Idle {
    stream: TcpStream,
    since: Instant,
}

pub struct Pool {
    /// The snapshot generation the per-target lists are indexed for.
    generation: Cell<u64>,
    idle: RefCell<Vec<Vec<Idle>>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(generation: u64, targets: usize, max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            generation: Cell::new(generation),
            idle: RefCell::new((0..targets).map(|_| Vec::new()).collect()),
            max_idle,
            idle_timeout,
        }
    }

    /// The freshest usable idle connection to `target`, if any.
    pub fn take(&self, target: usize) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(target)?;
        while let Some(c) = list.pop() {
            if c.since.elapsed() < self.idle_timeout && is_clean(&c.stream) {
                return Some(c.stream);
            }
        }
        None
    }

    /// Start over for a new snapshot: target indices may now mean other targets.
    pub fn reset(&self, generation: u64, targets: usize) {
        self.generation.set(generation);
        *self.idle.borrow_mut() = (0..targets).map(|_| Vec::new()).collect();
    }

    /// Keep `stream` to target `target` of snapshot `generation` for reuse (closing it
    /// when the target already has `max_idle`, or the snapshot has changed since).
    pub fn put(&self, generation: u64, target: usize, stream: TcpStream) {
        if generation != self.generation.get() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        if let Some(list) = idle.get_mut(target)
            && list.len() < self.max_idle
        {
            list.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }

    /// Close connections idle for longer than the idle timeout.
    pub fn evict_expired(&self) {
        let now = Instant::now();
        for list in self.idle.borrow_mut().iter_mut() {
            list.retain(|c| now.duration_since(c.since) < self.idle_timeout);
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().iter().map(Vec::len).sum()
    }
}

/// No unread bytes and not closed: a non-blocking `MSG_PEEK` must find nothing to read.
fn is_clean(stream: &TcpStream) -> bool {
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
