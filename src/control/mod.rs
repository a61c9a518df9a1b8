//! The control thread: everything that is not on the request path. It owns the running
//! workers, builds and pushes snapshots (on reload, on health changes), runs active health
//! probes and applies passive failures reported by workers, sums worker reports for the
//! metrics, serves the status API and `/metrics`, and stops Dispa gracefully. It runs its
//! own single-threaded monoio runtime (epoll: nothing here is hot) and never touches a
//! request.

mod api;
mod dns;
mod fleet;
mod health;
mod metrics;
pub mod notify;
mod reload;
pub mod signals;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::TryRecvError;

use crate::config::Config;
use crate::msg::{WorkerEvent, WorkerStats};
use fleet::Fleet;
pub use fleet::Parts;

/// How often the control loop looks at worker events, signals and cool-downs.
const TICK: Duration = Duration::from_millis(100);
/// How often the config file is checked for changes.
const FILE_POLL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub enum Error {
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    Thread(std::io::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Bind { what, addr, source } => {
                write!(f, "cannot listen on {addr} for the {what}: {source}")
            }
            Error::Thread(e) => write!(f, "cannot start the control thread: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// The running control thread.
pub struct Handle {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    health_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
}

impl Handle {
    /// Where the status API listens (`None` when monitoring is disabled).
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Ask for a graceful stop (as SIGTERM does); [`Handle::join`] waits for it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Wait until Dispa has stopped.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Everything the control thread's tasks share (one thread: `Rc<RefCell<_>>`).
pub(crate) struct State {
    fleet: Fleet,
    config_path: Option<PathBuf>,
    fingerprint: Option<(std::time::SystemTime, u64, u64)>,
    health: health::HealthTable,
    totals: metrics::Totals,
    reloads_ok: u64,
    reloads_failed: u64,
    last_reload: Option<reload::Outcome>,
    started: Instant,
    all_down: bool,
    metrics: metrics::Metrics,
    dns: dns::Resolver,
}

impl State {
    fn config(&self) -> &Config {
        &self.fleet.snapshot().config
    }

    /// Push a snapshot of `config` with the current health to every worker.
    fn publish(&mut self, config: Config) {
        let now = Instant::now();
        let keys: Vec<health::Key> = config
            .targets
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.addr))
            .collect();
        self.health.retain(&keys, now);
        self.health.configure(&config.targets.health_check, now);
        let health = &self.health;
        let snap = self
            .fleet
            .publish(config, &|name, addr| health.available(name, addr, now));
        let up = snap.targets.iter().filter(|t| t.available).count();
        // Said once per transition, not per request.
        if up == 0 && !self.all_down {
            tracing::warn!("every target is down: answering 503 until one recovers");
        } else if up > 0 && self.all_down {
            tracing::info!(available = up, "targets available again");
        }
        self.all_down = up == 0;
    }

    /// Re-publish the running config because availability changed.
    fn republish(&mut self) {
        let config = self.config().clone();
        self.publish(config);
    }

    /// Reload the config file, with systemd told it began and ended (`notify`).
    fn reload(&mut self, trigger: &str) -> reload::Outcome {
        notify::reloading();
        let outcome = self.reload_now(trigger);
        notify::ready();
        outcome
    }

    /// Reload the config file; every error is logged and kept for the status API.
    fn reload_now(&mut self, trigger: &str) -> reload::Outcome {
        let generation = self.fleet.snapshot().generation;
        let mut outcome = reload::Outcome {
            at: std::time::SystemTime::now(),
            trigger: trigger.to_string(),
            ok: false,
            errors: Vec::new(),
            restart_required: Vec::new(),
            generation,
        };
        let Some(path) = self.config_path.clone() else {
            outcome
                .errors
                .push("Dispa was started without a config file".into());
            self.reloads_failed += 1;
            self.last_reload = Some(outcome.clone());
            return outcome;
        };
        self.fingerprint = reload::fingerprint(&path);
        match reload::load(&path, self.config()) {
            Ok((config, restart)) => {
                for key in &restart {
                    tracing::warn!(key = %key, "changed in the config file, but takes effect only after a restart");
                }
                self.publish(config);
                self.reloads_ok += 1;
                outcome.ok = true;
                outcome.restart_required = restart;
                outcome.generation = self.fleet.snapshot().generation;
                tracing::info!(trigger, generation = outcome.generation, "config reloaded");
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(trigger, "config reload rejected: {e}");
                }
                self.reloads_failed += 1;
                outcome.errors = errors;
            }
        }
        self.last_reload = Some(outcome.clone());
        outcome
    }

    /// The oldest snapshot generation a worker still starts new requests on.
    fn applied_generation(&self) -> u64 {
        self.fleet
            .stats()
            .iter()
            .map(|s| s.generation.get())
            .min()
            .unwrap_or(0)
    }

    /// The target of the current snapshot with this id, as a health key.
    fn key_of(&self, id: u64) -> Option<health::Key> {
        let snap = self.fleet.snapshot();
        snap.targets
            .iter()
            .find(|t| t.id == id)
            .map(|t| (t.name.clone(), t.addr))
    }
}

/// Start the control thread on the `parts` boot started. `config_path` is the file to
/// reload (none for the demo). Binds the status and metrics listeners before returning.
pub fn start(parts: Parts, config_path: Option<PathBuf>) -> Result<Handle, Error> {
    let fleet = Fleet::new(parts);
    let monitoring = fleet.snapshot().config.monitoring.clone();
    let bind = |what, addr| {
        let l = std::net::TcpListener::bind(addr).map_err(|source| Error::Bind {
            what,
            addr,
            source,
        })?;
        l.set_nonblocking(true)
            .map_err(|source| Error::Bind { what, addr, source })?;
        Ok::<_, Error>(l)
    };
    let (api_listener, metrics_listener) = if monitoring.enabled {
        (
            Some(bind("status API", monitoring.health_bind)?),
            Some(bind("metrics endpoint", monitoring.metrics_bind)?),
        )
    } else {
        (None, None)
    };
    let local = |l: &Option<std::net::TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let (health_addr, metrics_addr) = (local(&api_listener), local(&metrics_listener));
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let now = Instant::now();
    let mut health = health::HealthTable::default();
    let keys: Vec<health::Key> = fleet
        .snapshot()
        .targets
        .iter()
        .map(|t| (t.name.clone(), t.addr))
        .collect();
    health.retain(&keys, now);
    let state = State {
        fingerprint: config_path.as_deref().and_then(reload::fingerprint),
        fleet,
        config_path,
        health,
        totals: metrics::Totals::default(),
        reloads_ok: 0,
        reloads_failed: 0,
        last_reload: None,
        started: now,
        all_down: false,
        dns: dns::Resolver::new(dns::system_lookup),
        metrics: metrics::Metrics::new(),
    };
    let thread = std::thread::Builder::new()
        .name("dispa-control".into())
        .spawn(move || {
            let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build();
            match rt {
                Ok(mut rt) => rt.block_on(run(state, stop_flag, api_listener, metrics_listener)),
                Err(e) => tracing::error!("control thread runtime: {e}"),
            }
        })
        .map_err(Error::Thread)?;
    Ok(Handle {
        thread: Some(thread),
        stop,
        health_addr,
        metrics_addr,
    })
}

async fn run(
    state: State,
    stop: Arc<AtomicBool>,
    api_listener: Option<std::net::TcpListener>,
    metrics_listener: Option<std::net::TcpListener>,
) {
    let state = Rc::new(RefCell::new(state));
    for (listener, endpoint) in [
        (api_listener, api::Endpoint::Status),
        (metrics_listener, api::Endpoint::Metrics),
    ] {
        if let Some(l) = listener {
            match monoio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    monoio::spawn(api::serve(l, state.clone(), endpoint));
                }
                Err(e) => tracing::error!("{endpoint:?} listener: {e}"),
            }
        }
    }
    let mut last_file_check = Instant::now();
    let mut trim = crate::sched::HeapTrim::default();
    loop {
        monoio::time::sleep(TICK).await;
        let now = Instant::now();
        let mut changed = false;
        {
            let mut s = state.borrow_mut();
            let s = &mut *s;
            s.fleet.watch_logging();
            if s.config().server.scheduler_hints {
                let stats = s.fleet.stats();
                let sum = |f: fn(&WorkerStats) -> u64| stats.iter().map(|w| f(w)).sum::<u64>();
                let requests = sum(|w| w.requests.get());
                let busy = sum(|w| w.busy_requests.get());
                trim.tick(requests, busy, sum(|w| w.parked.get()), now);
            }
            loop {
                match s.fleet.events().try_recv() {
                    Ok(WorkerEvent::Stats(report)) => s.totals.add(*report),
                    Ok(WorkerEvent::Target { id, ok }) => {
                        let cfg = s.config().targets.health_check.clone();
                        if let Some(key) = s.key_of(id)
                            && let Some((before, after)) = s.health.passive(&key, ok, &cfg, now)
                            && before != after
                        {
                            tracing::warn!(target = %key.0, "taken out of rotation after connection failures");
                            changed = true;
                        }
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            changed |= s.health.expire(now);
        }
        if changed {
            state.borrow_mut().republish();
        }
        {
            let mut guard = state.borrow_mut();
            let s = &mut *guard;
            if let Some(next) = s.dns.tick(&s.fleet.snapshot().config, now) {
                s.publish(next);
            }
        }
        spawn_probes(&state, now);
        if signals::take_reload() {
            state.borrow_mut().reload("SIGHUP");
        }
        if signals::take_reopen() {
            state.borrow().fleet.reopen_logs();
        }
        if last_file_check.elapsed() >= FILE_POLL {
            last_file_check = Instant::now();
            let mut s = state.borrow_mut();
            if let Some(path) = s.config_path.clone() {
                let now_fp = reload::fingerprint(&path);
                let same_content = |a: &Option<(_, u64, u64)>, b: &Option<(_, u64, u64)>| {
                    a.map(|(_, l, h)| (l, h)) == b.map(|(_, l, h)| (l, h))
                };
                if now_fp.is_some() && !same_content(&now_fp, &s.fingerprint) {
                    s.reload("file change");
                }
            }
        }
        if stop.load(Ordering::SeqCst) || signals::stop_requested() {
            break;
        }
    }
    notify::stopping();
    let drain = state.borrow().config().server.shutdown_timeout;
    tracing::info!(
        ?drain,
        "stopping: no new connections, finishing requests in flight"
    );
    state.borrow_mut().fleet.stop(drain);
}

/// Start a probe for every target that is due and not being probed already (a hanging
/// target never stacks probes).
fn spawn_probes(state: &Rc<RefCell<State>>, now: Instant) {
    let (due, cfg) = {
        let mut s = state.borrow_mut();
        let cfg = s.config().targets.health_check.clone();
        if !cfg.enabled {
            return;
        }
        (s.health.due(now), cfg)
    };
    for key in due {
        let (host, addr) = {
            let s = state.borrow();
            let snap = s.fleet.snapshot();
            let Some(t) = snap
                .targets
                .iter()
                .find(|t| t.name == key.0 && t.addr == key.1)
            else {
                continue;
            };
            (
                cfg.host.clone().unwrap_or_else(|| t.authority.clone()),
                t.addr,
            )
        };
        let (state, cfg) = (state.clone(), cfg.clone());
        monoio::spawn(async move {
            let check = health::probe(addr, &host, &cfg).await;
            let ok = check.ok;
            let changed = {
                let mut s = state.borrow_mut();
                s.health.probed(&key, check, &cfg, Instant::now())
            };
            if let Some((before, after)) = changed
                && before != after
            {
                if after {
                    tracing::info!(target = %key.0, "target is healthy again");
                } else {
                    tracing::warn!(target = %key.0, ok, "target failed its health checks");
                }
                state.borrow_mut().republish();
            }
        });
    }
}
