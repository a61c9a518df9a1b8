//! Target health as the control thread keeps it: active probes (rise/fall thresholds),
//! passive failures reported by workers (a cool-down, like nginx's max_fails /
//! fail_timeout), and operator drains. Entries are keyed by target identity (name and
//! address), so a reload keeps the state of targets that stay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::config::HealthCheck;
use crate::http::parse::parse_response;
use crate::io::{self, HeadError, ReadBuf};

pub type Key = (String, SocketAddr);

/// The last probe of a target.
#[derive(Debug, Clone)]
pub struct Check {
    pub at: SystemTime,
    pub ok: bool,
    /// The status code, or why the probe failed.
    pub detail: String,
    pub latency: Duration,
}

/// The last time a target's availability changed, and why.
#[derive(Debug, Clone)]
pub struct Change {
    pub at: SystemTime,
    pub available: bool,
    pub reason: String,
}

#[derive(Debug)]
pub struct Entry {
    /// The active checks' verdict (targets start healthy).
    pub healthy: bool,
    ok_streak: u32,
    fail_streak: u32,
    pub last_check: Option<Check>,
    pub last_change: Option<Change>,
    /// Consecutive connect failures reported by workers.
    pub passive_failures: u32,
    pub cooldown_until: Option<Instant>,
    /// Put out of rotation by an operator.
    pub drained: bool,
    pub probing: bool,
    pub next_probe: Instant,
    pub checks_ok: u64,
    pub checks_failed: u64,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Entry {
            healthy: true,
            ok_streak: 0,
            fail_streak: 0,
            last_check: None,
            last_change: None,
            passive_failures: 0,
            cooldown_until: None,
            drained: false,
            probing: false,
            next_probe: now,
            checks_ok: 0,
            checks_failed: 0,
        }
    }

    pub fn available(&self, now: Instant) -> bool {
        self.healthy && !self.drained && self.cooldown_until.is_none_or(|t| now >= t)
    }
}

#[derive(Debug, Default)]
pub struct HealthTable {
    entries: HashMap<Key, Entry>,
}

impl HealthTable {
    /// Apply new check settings: with active checks off nothing stays down on their
    /// verdict; a shorter interval brings the next probe forward.
    pub fn configure(&mut self, cfg: &HealthCheck, now: Instant) {
        for e in self.entries.values_mut() {
            if !cfg.enabled {
                e.healthy = true;
                e.ok_streak = 0;
                e.fail_streak = 0;
            }
            e.next_probe = e.next_probe.min(now + cfg.interval);
        }
    }

    /// Keep entries for exactly `keys` (new targets start healthy).
    pub fn retain(&mut self, keys: &[Key], now: Instant) {
        let mut next = HashMap::new();
        for k in keys {
            let e = self.entries.remove(k).unwrap_or_else(|| Entry::new(now));
            next.insert(k.clone(), e);
        }
        self.entries = next;
    }

    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn available(&self, name: &str, addr: SocketAddr, now: Instant) -> bool {
        self.entries
            .get(&(name.to_string(), addr))
            .is_none_or(|e| e.available(now))
    }

    /// Record a probe result; returns the entry's availability before and after.
    pub fn probed(
        &mut self,
        key: &Key,
        check: Check,
        cfg: &HealthCheck,
        now: Instant,
    ) -> Option<(bool, bool)> {
        let e = self.entries.get_mut(key)?;
        let before = e.available(now);
        e.probing = false;
        e.next_probe = now + cfg.interval;
        if check.ok {
            e.checks_ok += 1;
            e.ok_streak += 1;
            e.fail_streak = 0;
            if !e.healthy && e.ok_streak >= cfg.healthy_threshold {
                e.healthy = true;
            }
        } else {
            e.checks_failed += 1;
            e.fail_streak += 1;
            e.ok_streak = 0;
            if e.healthy && e.fail_streak >= cfg.unhealthy_threshold {
                e.healthy = false;
            }
        }
        let reason = format!("health check: {}", check.detail);
        e.last_check = Some(check);
        Some(note_change(e, before, now, &reason))
    }

    /// A worker saw a connect failure (`ok: false`) or a success after failures.
    pub fn passive(
        &mut self,
        key: &Key,
        ok: bool,
        cfg: &HealthCheck,
        now: Instant,
    ) -> Option<(bool, bool)> {
        let e = self.entries.get_mut(key)?;
        let before = e.available(now);
        if ok {
            e.passive_failures = 0;
        } else {
            e.passive_failures += 1;
            if cfg.max_fails > 0 && e.passive_failures >= cfg.max_fails {
                e.cooldown_until = Some(now + cfg.fail_timeout);
                e.passive_failures = 0;
            }
        }
        Some(note_change(
            e,
            before,
            now,
            "connection failures seen by workers",
        ))
    }

    /// End cool-downs that have run out; returns whether any availability changed.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for e in self.entries.values_mut() {
            if e.cooldown_until.is_some_and(|t| now >= t) {
                e.cooldown_until = None;
                // Unavailable until now because of the cool-down alone.
                if e.healthy && !e.drained {
                    e.last_change = Some(Change {
                        at: SystemTime::now(),
                        available: true,
                        reason: "failure cool-down ended".into(),
                    });
                    changed = true;
                }
            }
        }
        changed
    }

    pub fn set_drained(&mut self, key: &Key, drained: bool, now: Instant) -> Option<(bool, bool)> {
        let e = self.entries.get_mut(key)?;
        let before = e.available(now);
        e.drained = drained;
        let reason = if drained {
            "drained by operator"
        } else {
            "enabled by operator"
        };
        Some(note_change(e, before, now, reason))
    }

    /// Targets due for a probe: marks them as probing.
    pub fn due(&mut self, now: Instant) -> Vec<Key> {
        let mut due = Vec::new();
        for (k, e) in self.entries.iter_mut() {
            if !e.probing && now >= e.next_probe {
                e.probing = true;
                due.push(k.clone());
            }
        }
        due
    }
}

fn note_change(e: &mut Entry, before: bool, now: Instant, reason: &str) -> (bool, bool) {
    let after = e.available(now);
    if before != after {
        e.last_change = Some(Change {
            at: SystemTime::now(),
            available: after,
            reason: reason.to_string(),
        });
    }
    (before, after)
}

/// One HTTP probe: `GET path` with `host`, within `limit`. Ok: the status was expected.
pub async fn probe(addr: SocketAddr, host: &str, cfg: &HealthCheck) -> Check {
    let start = Instant::now();
    let result = monoio::time::timeout(cfg.timeout, request(addr, host, &cfg.path)).await;
    let (ok, detail) = match result {
        Ok(Ok(status)) => {
            let (lo, hi) = cfg.expected_status;
            ((lo..=hi).contains(&status), format!("status {status}"))
        }
        Ok(Err(e)) => (false, e),
        Err(_) => (false, format!("timed out after {:?}", cfg.timeout)),
    };
    Check {
        at: SystemTime::now(),
        ok,
        detail,
        latency: start.elapsed(),
    }
}

/// Longest response head a probe reads.
const MAX_PROBE_HEAD: usize = 16 * 1024;

async fn request(addr: SocketAddr, host: &str, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect_addr(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dispa-health-check\r\nConnection: close\r\n\r\n"
    );
    let (res, _) = stream.write_all(head.into_bytes()).await;
    res.map_err(|e| format!("send: {e}"))?;
    let mut buf = ReadBuf::with_capacity(4096);
    let parse = |b: &[u8]| parse_response(b, false, MAX_PROBE_HEAD);
    match io::read_head(&mut stream, &mut buf, MAX_PROBE_HEAD, parse).await {
        Ok(r) => Ok(r.status),
        Err(HeadError::Closed) => Err("closed before a response".into()),
        Err(e) => Err(format!("response: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HealthCheck {
        HealthCheck {
            enabled: true,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            path: "/".into(),
            host: None,
            expected_status: (200, 399),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            max_fails: 2,
            fail_timeout: Duration::from_secs(10),
        }
    }

    fn check(ok: bool) -> Check {
        Check {
            at: SystemTime::now(),
            ok,
            detail: String::new(),
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn falls_after_threshold_and_rises_after_threshold() {
        let now = Instant::now();
        let key: Key = ("a".into(), "127.0.0.1:1".parse().unwrap());
        let mut b = HealthTable::default();
        b.retain(std::slice::from_ref(&key), now);
        let c = cfg();
        assert_eq!(b.probed(&key, check(false), &c, now), Some((true, true)));
        assert_eq!(b.probed(&key, check(false), &c, now), Some((true, true)));
        assert_eq!(b.probed(&key, check(false), &c, now), Some((true, false)));
        assert_eq!(b.probed(&key, check(true), &c, now), Some((false, false)));
        assert_eq!(b.probed(&key, check(true), &c, now), Some((false, true)));
        assert!(b.get(&key).unwrap().last_change.as_ref().unwrap().available);
    }

    #[test]
    fn passive_failures_cool_down_then_expire() {
        let now = Instant::now();
        let key: Key = ("a".into(), "127.0.0.1:1".parse().unwrap());
        let mut b = HealthTable::default();
        b.retain(std::slice::from_ref(&key), now);
        let c = cfg();
        assert_eq!(b.passive(&key, false, &c, now), Some((true, true)));
        assert_eq!(b.passive(&key, false, &c, now), Some((true, false)));
        assert!(!b.expire(now + Duration::from_secs(5)));
        assert!(b.expire(now + Duration::from_secs(11)));
        assert!(b.available("a", key.1, now + Duration::from_secs(11)));
    }
}
