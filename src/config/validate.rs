//! Checks that span several keys (the per-key checks live in `file`).

use std::collections::HashSet;

use super::{Config, FieldError};

pub(super) fn check(config: &Config, errors: &mut Vec<FieldError>) {
    // Targets that failed their own checks are already reported (and left out of the list).
    let invalid_targets = errors
        .iter()
        .any(|e| e.path.starts_with("targets.targets["));
    let mut err = |path: String, reason: String| errors.push(FieldError { path, reason });
    if config.domains.intercept.is_empty() {
        err(
            "domains.intercept_domains".into(),
            "must list at least one domain; Dispa forwards nothing else".into(),
        );
    }
    let targets = &config.targets.targets;
    if targets.is_empty() && !invalid_targets {
        err(
            "targets.targets".into(),
            "at least one target is required".into(),
        );
    }
    let mut names = HashSet::new();
    for (i, t) in targets.iter().enumerate() {
        if t.name.is_empty() {
            err(
                format!("targets.targets[{i}].name"),
                "must not be empty".into(),
            );
        }
        if !names.insert(t.name.as_str()) {
            err(
                format!("targets.targets[{i}].name"),
                format!("duplicate target name {:?}", t.name),
            );
        }
        if t.addr == config.server.bind {
            err(
                format!("targets.targets[{i}].url"),
                "points at Dispa's own listen address (a forwarding loop)".into(),
            );
        }
    }
    let m = &config.monitoring;
    let bind = config.server.bind;
    if m.enabled {
        for (key, addr) in [
            ("health_bind", m.health_bind),
            ("metrics_bind", m.metrics_bind),
        ] {
            if addr.port() != 0 && addr.port() == bind.port() && same_host(addr, bind) {
                err(
                    format!("monitoring.{key}"),
                    format!(
                        "{addr} is also server.bind: give the status API and metrics ports of their own"
                    ),
                );
            }
        }
    }
    if m.enabled && m.health_bind == m.metrics_bind && m.health_bind.port() != 0 {
        err(
            "monitoring.metrics_bind".into(),
            "must differ from monitoring.health_bind".into(),
        );
    }
    let l = &config.limits;
    if l.max_uri_bytes > l.max_head_bytes {
        err(
            "limits.max_uri_bytes".into(),
            format!(
                "must not exceed limits.max_head_bytes ({})",
                l.max_head_bytes
            ),
        );
    }
}

/// Two listen addresses that would collide: the same IP, or either the unspecified one.
fn same_host(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}
