//! Upstream connections of one worker, per target (by target id, so they survive a
//! reload that keeps the target): the idle ones, and how many are open.
//!
//! Idle connections are kept most recently used first (LIFO) so that a few hot ones stay
//! warm and the rest age out; one is handed out only if it has no unread bytes and was not
//! closed by the target.
//!
//! With `upstream.max_connections_per_target` set, a worker opens at most that many
//! connections to a target (in use and idle together, as HAProxy's server `maxconn`); a
//! request that finds them all busy waits in a queue, first come first served, for one to
//! come back (handed over directly, never parked in between) or to close (its place is
//! handed over). Without the limit, 10,000 clients open a connection per request in flight
//! and all but `max_idle_per_target` are closed again after their response: the churn
//! this queue removes (docs/BENCHMARKS.md, c10000).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::io::Stream;

struct Idle {
    stream: Stream,
    permit: Permit,
    since: Instant,
}

/// One target's connections on this worker.
#[derive(Default)]
struct TargetPool {
    idle: Vec<Idle>,
    gate: Rc<Gate>,
}

/// How many connections to one target are open (in use or idle), its limit, and the
/// requests waiting for one.
#[derive(Default)]
struct Gate {
    open: Cell<usize>,
    /// 0: no limit.
    limit: Cell<usize>,
    waiters: RefCell<VecDeque<Weak<Waiter>>>,
}

impl Gate {
    /// The first request still waiting (one that gave up has dropped its waiter).
    fn next_waiter(&self) -> Option<Rc<Waiter>> {
        let mut waiters = self.waiters.borrow_mut();
        while let Some(w) = waiters.pop_front() {
            if let Some(w) = w.upgrade() {
                return Some(w);
            }
        }
        None
    }

    fn has_room(&self) -> bool {
        let limit = self.limit.get();
        limit == 0 || self.open.get() < limit
    }

    /// More are open than a limit lowered since allows: a closing or returning
    /// connection then frees its place instead of handing it on.
    fn over_limit(&self) -> bool {
        let limit = self.limit.get();
        limit != 0 && self.open.get() > limit
    }

    /// Hand places freed by a raised limit to waiting requests.
    fn admit_waiters(self: &Rc<Self>) {
        while self.has_room() {
            let Some(w) = self.next_waiter() else { return };
            self.open.set(self.open.get() + 1);
            w.grant(Grant::Room(Permit { gate: self.clone() }));
        }
    }
}

/// An open connection's place under its target's limit. Dropped with the connection: the
/// place goes to the first waiting request, or is freed.
pub struct Permit {
    gate: Rc<Gate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let gate = &self.gate;
        let next = if gate.over_limit() {
            None
        } else {
            gate.next_waiter()
        };
        match next {
            Some(w) => w.grant(Grant::Room(Permit { gate: gate.clone() })),
            None => gate.open.set(gate.open.get().saturating_sub(1)),
        }
    }
}

/// What a waiting request is given.
pub enum Grant {
    /// A connection that just finished a response (with its place).
    Conn(Stream, Permit),
    /// A place: open a new connection with it.
    Room(Permit),
}

/// A request waiting for a connection to a target at its limit.
#[derive(Default)]
struct Waiter {
    grant: RefCell<Option<Grant>>,
    waker: RefCell<Option<Waker>>,
}

impl Waiter {
    fn grant(&self, grant: Grant) {
        *self.grant.borrow_mut() = Some(grant);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Resolves when the waiting request is given a connection or a place. Dropping it (the
/// queue timeout) leaves the queue; anything granted meanwhile is passed on by its drop.
pub struct Wait(Rc<Waiter>);

impl Future for Wait {
    type Output = Grant;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        if let Some(g) = self.0.grant.borrow_mut().take() {
            return Poll::Ready(g);
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Whether a new connection may be opened now.
pub enum Admission {
    Now(Permit),
    /// The target is at its limit: wait for a connection or a place.
    Queued(Wait),
}

pub struct Pool {
    targets: RefCell<HashMap<u64, TargetPool>>,
    max_idle: Cell<usize>,
    max_open: Cell<usize>,
    idle_timeout: Cell<Duration>,
}

impl Pool {
    pub fn new(max_idle: usize, max_open: usize, idle_timeout: Duration) -> Self {
        Pool {
            targets: RefCell::new(HashMap::new()),
            max_idle: Cell::new(max_idle),
            max_open: Cell::new(max_open),
            idle_timeout: Cell::new(idle_timeout),
        }
    }

    /// New limits (on reload); they apply from the next put, take and eviction; a raised
    /// connection limit admits waiting requests at once.
    pub fn configure(&self, max_idle: usize, max_open: usize, idle_timeout: Duration) {
        self.max_idle.set(max_idle);
        self.max_open.set(max_open);
        self.idle_timeout.set(idle_timeout);
        for t in self.targets.borrow().values() {
            t.gate.limit.set(max_open);
            t.gate.admit_waiters();
        }
    }

    /// The freshest usable idle connection to target `id`, if any.
    pub fn take(&self, id: u64) -> Option<(Stream, Permit)> {
        let mut targets = self.targets.borrow_mut();
        let list = &mut targets.get_mut(&id)?.idle;
        let timeout = self.idle_timeout.get();
        while let Some(mut c) = list.pop() {
            if c.since.elapsed() < timeout && is_clean(&mut c.stream) {
                return Some((c.stream, c.permit));
            }
        }
        None
    }

    /// A place for a new connection to target `id`, now or after a wait. A target no
    /// longer configured (a request still running on an older snapshot) has no limit.
    pub fn admit(&self, id: u64) -> Admission {
        let gate = match self.targets.borrow().get(&id) {
            Some(t) => t.gate.clone(),
            None => Rc::new(Gate::default()),
        };
        if gate.has_room() {
            gate.open.set(gate.open.get() + 1);
            return Admission::Now(Permit { gate });
        }
        let waiter = Rc::new(Waiter::default());
        let mut waiters = gate.waiters.borrow_mut();
        // Requests that gave up stay in the queue until a hand-over reaches them: sweep
        // them out now and then, so a queue that keeps timing out does not grow.
        if waiters.len() >= 64 && waiters.len().is_power_of_two() {
            waiters.retain(|w| w.strong_count() > 0);
        }
        waiters.push_back(Rc::downgrade(&waiter));
        drop(waiters);
        Admission::Queued(Wait(waiter))
    }

    /// Keep `stream` to target `id` for reuse: handed to the first waiting request, else
    /// kept idle, else (the target has `max_idle`, or is no longer configured) closed.
    pub fn put(&self, id: u64, mut stream: Stream, permit: Permit) {
        let gate = &permit.gate;
        // Over a lowered limit: close it (the permit's drop frees its place).
        if gate.over_limit() {
            return;
        }
        if let Some(w) = gate.next_waiter() {
            // As `take` checks a pooled one: bytes or a close already waiting mean it
            // cannot carry another request; the waiter gets its place instead.
            if is_clean(&mut stream) {
                w.grant(Grant::Conn(stream, permit));
            } else {
                drop(stream);
                w.grant(Grant::Room(permit));
            }
            return;
        }
        let mut targets = self.targets.borrow_mut();
        // Only under the gate it was opened under: a target removed and added again has a
        // new gate, and a connection of the old one would count against neither.
        if let Some(t) = targets.get_mut(&id)
            && Rc::ptr_eq(&t.gate, &permit.gate)
            && t.idle.len() < self.max_idle.get()
        {
            t.idle.push(Idle {
                stream,
                permit,
                since: Instant::now(),
            });
        }
        // Otherwise both drop here: the connection closes and its place is freed.
    }

    /// Pool for exactly these targets: lists of targets no longer configured are closed
    /// (their in-flight connections close when they finish), kept targets keep theirs.
    pub fn retain_targets(&self, ids: impl Iterator<Item = u64>) {
        let mut targets = self.targets.borrow_mut();
        let mut next: HashMap<u64, TargetPool> = HashMap::new();
        for id in ids {
            let t = targets.remove(&id).unwrap_or_else(|| {
                let t = TargetPool::default();
                t.gate.limit.set(self.max_open.get());
                t
            });
            next.insert(id, t);
        }
        *targets = next;
    }

    /// Close connections idle for longer than the idle timeout.
    pub fn evict_expired(&self) {
        let now = Instant::now();
        let limit = self.idle_timeout.get();
        for t in self.targets.borrow_mut().values_mut() {
            t.idle.retain(|c| now.duration_since(c.since) < limit);
        }
    }

    pub fn idle_count(&self) -> usize {
        self.targets.borrow().values().map(|t| t.idle.len()).sum()
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
