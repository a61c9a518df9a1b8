//! What a worker runs: a validated config compiled into lookup structures, the health of
//! each target, and a generation number. Immutable once built; shared behind an `Arc`.
//! Targets keep their identity (id and in-flight counters) across snapshots through
//! [`Registry`], so pools and counts survive a reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Algorithm, Config, Target};
use crate::balance::Inflight;
use crate::route;

/// One generation of routing state. Workers keep their own mutable state (balancer
/// positions, pools) beside it, never inside it.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Config,
    pub routes: route::Table,
    /// Hosts whose records keep headers and body bytes (`[logging.capture]`), if any.
    pub capture: Option<route::Table>,
    pub targets: Vec<TargetSpec>,
    pub algorithm: Algorithm,
}

/// A target as workers use it: the configured [`Target`] (its fields read through, as
/// `spec.name`) with what the snapshot adds.
#[derive(Debug)]
pub struct TargetSpec {
    pub target: Target,
    /// Stable across snapshots for the same name and address.
    pub id: u64,
    /// `timeout`, else `timeouts.upstream_response`.
    pub response_timeout: Duration,
    /// May receive new requests (healthy, not cooling down after failures, not drained).
    pub available: bool,
    /// In-flight requests, one counter per worker (least_connections reads the sum).
    pub inflight: Arc<Inflight>,
}

impl std::ops::Deref for TargetSpec {
    type Target = Target;

    fn deref(&self) -> &Target {
        &self.target
    }
}

/// Target identities: `(name, address)` → id and in-flight counters, kept by whoever
/// builds snapshots (boot, then the control thread).
#[derive(Debug, Default)]
pub struct Registry {
    known: HashMap<(String, SocketAddr), (u64, Arc<Inflight>)>,
    next_id: u64,
}

impl Registry {
    fn identity(&mut self, name: &str, addr: SocketAddr, workers: usize) -> (u64, Arc<Inflight>) {
        let next = &mut self.next_id;
        self.known
            .entry((name.to_string(), addr))
            .or_insert_with(|| {
                *next += 1;
                (*next, Arc::new(Inflight::new(workers)))
            })
            .clone()
    }
}

impl Snapshot {
    /// Compile `config` for `workers` workers. `available(name, addr)` says whether a target
    /// may take new requests.
    pub fn build(
        config: Config,
        generation: u64,
        workers: usize,
        registry: &mut Registry,
        available: &dyn Fn(&str, SocketAddr) -> bool,
    ) -> Snapshot {
        let routes = route::Table::new(&config.domains.intercept, &config.domains.exclude);
        let capture = &config.logging.capture;
        let capture =
            (!capture.domains.is_empty()).then(|| route::Table::new(&capture.domains, &[]));
        let targets = config
            .targets
            .targets
            .iter()
            .map(|t| {
                let (id, inflight) = registry.identity(&t.name, t.addr, workers);
                TargetSpec {
                    target: t.clone(),
                    id,
                    response_timeout: t.timeout.unwrap_or(config.timeouts.upstream_response),
                    available: available(&t.name, t.addr),
                    inflight,
                }
            })
            .collect();
        Snapshot {
            generation,
            algorithm: config.targets.algorithm,
            routes,
            capture,
            targets,
            config,
        }
    }

    /// Same targets (by id), in the same order, with the same weights and algorithm: a
    /// worker may keep its balancer positions.
    pub fn same_rotation(&self, other: &Snapshot) -> bool {
        self.algorithm == other.algorithm
            && self.targets.len() == other.targets.len()
            && self
                .targets
                .iter()
                .zip(&other.targets)
                .all(|(a, b)| a.id == b.id && a.weight == b.weight)
    }
}
