//! `dispa replay`: send recorded requests again, to a target, and compare the answers with
//! the recorded ones; or (`--serve`) answer requests with recorded responses, as a mock.
//!
//! Its own process and a client like any other: it never touches a running proxy's
//! workers. One monoio thread drives every connection (docs/BENCHMARKS.md, "Replay").
//! Reading the store ([`source`]) → what is sent ([`request`]) → when and on which
//! connection ([`plan`]) → the exchange ([`client`]) → the comparison ([`diff`]) →
//! the report ([`report`]). The mock is [`mock`]; the command line is [`cli`].

pub mod cli;
pub mod client;
pub mod diff;
pub mod mock;
pub mod plan;
pub mod report;
pub mod request;
pub mod source;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use client::{Connection, Failure, Target};
use diff::{Replayed, Rules};
use plan::{Pace, Plan};
use report::Tally;
use request::HostMode;
use source::{Recorded, Store};

use crate::traffic::Filter;

/// Which records, from where.
#[derive(Debug, Clone)]
pub struct Selection {
    pub store: Store,
    pub filter: Filter,
    pub limit: Option<usize>,
}

impl Selection {
    /// The selected records, oldest first.
    pub fn load(&self) -> Result<Vec<Recorded>, Error> {
        source::load(&self.store, &self.filter, self.limit).map_err(Error)
    }
}

/// A replay to run.
pub struct Options {
    pub selection: Selection,
    pub target: Target,
    /// The target URL as given (for the report).
    pub target_url: String,
    pub pace: Pace,
    /// Start over when done, until `duration` or an interrupt.
    pub repeat: bool,
    pub duration: Option<Duration>,
    pub host: HostMode,
    pub allow_truncated: bool,
    pub rules: Rules,
    pub timeout: Duration,
    pub show: usize,
    pub report: Option<PathBuf>,
    pub max_diff_ratio: Option<f64>,
}

/// Why a replay or mock could not run (exit status 2).
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Body bytes of a replayed response kept for comparing (a recorded body is at most
/// 64 KiB; a longer answer is compared by its length and its first bytes).
const KEEP_BODY: usize = 1 << 20;

/// Run a replay; returns the JSON report (written to `--report` too) and whether it
/// passed `--max-diff-ratio`.
pub fn run(opts: Options) -> Result<(serde_json::Value, bool), Error> {
    let records = opts.selection.load()?;
    let mut tally = Tally {
        selected: records.len() as u64,
        show: opts.show,
        ..Tally::default()
    };
    let mut list = Vec::with_capacity(records.len());
    for r in records {
        match request::skip_reason(&r, opts.allow_truncated) {
            Some(why) => tally.skip(why),
            None => list.push(r),
        }
    }
    let refs: Vec<&Recorded> = list.iter().collect();
    let plan = plan::plan(&refs, opts.pace);
    let stop = stop_flag()?;
    let ctx = Rc::new(Ctx {
        deadline: opts.duration.map(|d| Instant::now() + d),
        list,
        plan,
        target: opts.target.clone(),
        host: opts.host.clone(),
        rules: opts.rules.clone(),
        timeout: opts.timeout,
        pace: opts.pace,
        repeat: opts.repeat,
        tally: RefCell::new(tally),
        stop,
    });
    let driven = ctx.clone();
    let cpu_before = cpu_time();
    on_runtime(move || drive(driven)).map_err(|e| Error(format!("runtime: {e}")))?;
    let mut tally = ctx.tally.take();
    tally.cpu = cpu_time().saturating_sub(cpu_before);
    let report = tally.to_json(&opts.target_url, opts.max_diff_ratio);
    if let Some(path) = &opts.report {
        let text = serde_json::to_string_pretty(&report).expect("a JSON value");
        let written = match path.to_str() {
            Some("-") => {
                println!("{text}");
                Ok(())
            }
            _ => std::fs::write(path, text + "\n"),
        };
        written.map_err(|e| Error(format!("{}: {e}", path.display())))?;
    }
    let passed = report["passed"].as_bool() == Some(true);
    Ok((report, passed))
}

/// CPU time (user and system) the process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct it is given, which lives for the call.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Set on SIGINT or SIGTERM: stop sending, finish what is in flight, report.
fn stop_flag() -> Result<Arc<AtomicBool>, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal exits at once (130), as the proxy's does.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .map_err(|e| Error(e.to_string()))?;
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| Error(e.to_string()))?;
    }
    Ok(stop)
}

/// Run `make()`'s future on a monoio runtime: io_uring where the kernel allows, else
/// epoll.
fn on_runtime<F: std::future::Future>(make: impl FnOnce() -> F) -> std::io::Result<F::Output> {
    match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => Ok(rt.block_on(make())),
        Err(_) => {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()?;
            Ok(rt.block_on(make()))
        }
    }
}

/// What every connection's task shares (one thread: `Rc` and `RefCell`).
struct Ctx {
    list: Vec<Recorded>,
    plan: Plan,
    target: Target,
    host: HostMode,
    rules: Rules,
    timeout: Duration,
    pace: Pace,
    repeat: bool,
    deadline: Option<Instant>,
    tally: RefCell<Tally>,
    stop: Arc<AtomicBool>,
}

/// How long a wait for a due time goes without looking at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

impl Ctx {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Wait until `due`; false when the replay was stopped meanwhile (a long gap or a
    /// slow `--rate` must not hold a Ctrl-C or `--duration` up).
    async fn wait_until(&self, due: Instant) -> bool {
        loop {
            if self.stopped() {
                return false;
            }
            let now = Instant::now();
            if now >= due {
                return true;
            }
            monoio::time::sleep_until(due.min(now + STOP_CHECK).into()).await;
        }
    }
}

/// Every pass, one after another.
async fn drive(ctx: Rc<Ctx>) {
    let began = Instant::now();
    loop {
        match ctx.pace {
            Pace::Fast { concurrency } => fast_pass(&ctx, concurrency).await,
            _ => timed_pass(&ctx).await,
        }
        ctx.tally.borrow_mut().passes += 1;
        if !ctx.repeat || ctx.stopped() || ctx.list.is_empty() {
            break;
        }
    }
    ctx.tally.borrow_mut().elapsed = began.elapsed();
}

/// Each recorded connection on a connection of its own, opened when its first request
/// is due; every request sent when due (or as soon as the one before it is answered).
async fn timed_pass(ctx: &Rc<Ctx>) {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(ctx.plan.conns.len());
    for k in 0..ctx.plan.conns.len() {
        let first = ctx.plan.conns[k][0];
        if !ctx.wait_until(start + ctx.plan.due[first]).await {
            break;
        }
        let ctx = ctx.clone();
        tasks.push(monoio::spawn(async move {
            let mut conn = None;
            let mut buf = Vec::new();
            for &i in &ctx.plan.conns[k] {
                let due = start + ctx.plan.due[i];
                if !ctx.wait_until(due).await {
                    break;
                }
                ctx.tally.borrow_mut().sent_after(due.elapsed());
                ctx.send(&mut conn, i, &mut buf).await;
            }
        }));
    }
    for t in tasks {
        t.await;
    }
}

/// `concurrency` connections, each taking the next recorded connection's requests and
/// sending them back to back (so at most as many at once as there are recorded
/// connections: each one's order is kept).
async fn fast_pass(ctx: &Rc<Ctx>, concurrency: usize) {
    let next = Rc::new(Cell::new(0usize));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (ctx, next) = (ctx.clone(), next.clone());
        tasks.push(monoio::spawn(async move {
            let mut conn = None;
            let mut buf = Vec::new();
            loop {
                let k = next.get();
                if k >= ctx.plan.conns.len() || ctx.stopped() {
                    break;
                }
                next.set(k + 1);
                for &i in &ctx.plan.conns[k] {
                    if ctx.stopped() {
                        break;
                    }
                    ctx.send(&mut conn, i, &mut buf).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
}

impl Ctx {
    /// Replay request `i` on `conn` (opened or opened again as needed) and count it.
    async fn send(&self, conn: &mut Option<Connection>, i: usize, buf: &mut Vec<u8>) {
        let r = &self.list[i];
        let started = Instant::now();
        let outcome = match monoio::time::timeout(self.timeout, self.exchange(conn, r, buf)).await {
            Ok(Ok(got)) => Ok((
                diff::compare(r, &got, &self.rules),
                got.status,
                started.elapsed(),
            )),
            Ok(Err(f)) => Err(f),
            Err(_) => Err(Failure::Timeout),
        };
        if outcome.is_err() {
            *conn = None;
        }
        self.tally.borrow_mut().add(r, outcome);
    }

    async fn exchange(
        &self,
        conn: &mut Option<Connection>,
        r: &Recorded,
        buf: &mut Vec<u8>,
    ) -> Result<Replayed, Failure> {
        let mut retried = false;
        loop {
            let c = match conn {
                Some(c) => c,
                None => conn.insert(Connection::open(&self.target).await?),
            };
            let reused = c.reused;
            request::encode(r, &self.host, &self.target.authority, buf);
            match c.exchange(buf, r.method == "HEAD", KEEP_BODY).await {
                Ok((got, keep_alive)) => {
                    if !keep_alive {
                        *conn = None;
                    }
                    return Ok(got);
                }
                // A kept connection the target closed meanwhile: once more on a new one.
                Err((Failure::Closed, false)) if reused && !retried => {
                    retried = true;
                    *conn = None;
                }
                Err((f, _)) => return Err(f),
            }
        }
    }
}
