//! What a worker runs: a validated config compiled into lookup structures, plus a
//! generation number. Immutable once built; shared with workers behind an `Arc`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Algorithm, Config};
use crate::balance::Inflight;
use crate::route;

/// One generation of routing state. Workers keep their own mutable state (balancer
/// positions, pools) beside it, never inside it.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Config,
    pub routes: route::Table,
    pub targets: Vec<TargetSpec>,
    pub algorithm: Algorithm,
}

/// A target as workers use it.
#[derive(Debug)]
pub struct TargetSpec {
    pub name: String,
    pub addr: SocketAddr,
    pub authority: String,
    pub path_prefix: String,
    pub weight: u32,
    pub response_timeout: Duration,
    pub rewrite_host: bool,
    /// In-flight requests, one counter per worker (least_connections reads the sum).
    pub inflight: Arc<Inflight>,
}

impl Snapshot {
    /// Compile `config` for `workers` workers.
    pub fn build(config: Config, generation: u64, workers: usize) -> Snapshot {
        let routes = route::Table::new(&config.domains.intercept, &config.domains.exclude);
        let targets = config
            .targets
            .targets
            .iter()
            .map(|t| TargetSpec {
                name: t.name.clone(),
                addr: t.addr,
                authority: t.authority.clone(),
                path_prefix: t.path_prefix.clone(),
                weight: t.weight,
                response_timeout: t.timeout.unwrap_or(config.timeouts.upstream_response),
                rewrite_host: t.rewrite_host,
                inflight: Arc::new(Inflight::new(workers)),
            })
            .collect();
        Snapshot {
            generation,
            algorithm: config.targets.algorithm,
            routes,
            targets,
            config,
        }
    }
}
