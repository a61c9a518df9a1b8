//! Reloading the config file: load and validate, keep what needs a restart as it is (and
//! say so), and report the outcome for the status API and the metrics.

use std::path::Path;
use std::time::SystemTime;

use crate::config::{self, Config};

/// The outcome of the last reload attempt.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub at: SystemTime,
    pub trigger: String,
    pub ok: bool,
    /// Every validation error (key path and reason), when it failed.
    pub errors: Vec<String>,
    /// Keys that changed but only take effect after a restart.
    pub restart_required: Vec<String>,
    pub generation: u64,
}

/// Load `path` and merge it with the running config: keys that cannot change live keep
/// their running values and are listed. Errors are every problem found, one per line.
pub fn load(path: &Path, running: &Config) -> Result<(Config, Vec<String>), Vec<String>> {
    let mut next = config::load(path).map_err(|e| match e {
        config::Error::Invalid(list) => list
            .into_iter()
            .map(|f| format!("{}: {}", f.path, f.reason))
            .collect(),
        other => vec![other.to_string()],
    })?;
    let mut restart = Vec::new();
    let (old, new) = (&running.server, &next.server);
    let mut differs = |key: &str, changed: bool| {
        if changed {
            restart.push(key.to_string());
        }
    };
    differs("server.bind", old.bind != new.bind);
    differs("server.workers", old.workers != new.workers);
    differs("server.io_driver", old.io_driver != new.io_driver);
    differs("server.uring_flags", old.uring != new.uring);
    differs(
        "server.uring_entries",
        old.uring_entries != new.uring_entries,
    );
    differs("server.backlog", old.backlog != new.backlog);
    differs(
        "server.scheduler_hints",
        old.scheduler_hints != new.scheduler_hints,
    );
    let (om, nm) = (&running.monitoring, &next.monitoring);
    differs("monitoring.enabled", om.enabled != nm.enabled);
    differs("monitoring.health_bind", om.health_bind != nm.health_bind);
    differs(
        "monitoring.metrics_bind",
        om.metrics_bind != nm.metrics_bind,
    );
    let queue_changed = running.logging.queue_size != next.logging.queue_size;
    differs("logging.queue_size", queue_changed);
    next.logging.queue_size = running.logging.queue_size;
    differs(
        "logging.shards",
        running.logging.shards != next.logging.shards,
    );
    next.logging.shards = running.logging.shards;
    let shutdown_timeout = next.server.shutdown_timeout;
    next.server = running.server.clone();
    next.server.shutdown_timeout = shutdown_timeout;
    let admin_token = next.monitoring.admin_token.clone();
    next.monitoring = running.monitoring.clone();
    next.monitoring.admin_token = admin_token;
    Ok((next, restart))
}

/// What identifies the file's contents cheaply: modification time and length, then a
/// hash of the bytes (so a touch without a change does not reload).
pub fn fingerprint(path: &Path) -> Option<(SystemTime, u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    let bytes = std::fs::read(path).ok()?;
    // FNV-1a: enough to tell two versions of a config file apart.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    Some((meta.modified().ok()?, meta.len(), hash))
}
