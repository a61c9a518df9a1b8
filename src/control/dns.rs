//! Target host names resolved again while Dispa runs (`[targets] resolve_interval`,
//! default 30 s; 0: only when the config loads): a backend container that comes back
//! with a new address is followed without a reload. Lookups run on a short-lived thread
//! of their own (a slow DNS server never holds the control thread, let alone a worker);
//! the control thread collects the answers on its next tick and publishes a snapshot with
//! the new addresses (their targets start with fresh health and pools).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use crossbeam_channel::{Receiver, TryRecvError};

use crate::config::{Config, host_of};

/// A name lookup: `host:port` to its first address (std's resolver; tests give their own).
pub type Lookup = fn(&str) -> Option<SocketAddr>;

pub fn system_lookup(host_port: &str) -> Option<SocketAddr> {
    host_port.to_socket_addrs().ok()?.next()
}

/// What a lookup thread answers: each named target's index and its address (`None`: the
/// lookup failed).
type Found = Vec<(usize, Option<SocketAddr>)>;

pub struct Resolver {
    last: Instant,
    pending: Option<Receiver<Found>>,
    lookup: Lookup,
}

impl Resolver {
    pub fn new(lookup: Lookup) -> Self {
        Resolver {
            last: Instant::now(),
            pending: None,
            lookup,
        }
    }

    /// On every control tick: start lookups when due, and when they have answered,
    /// `config` with the addresses that changed (`None`: nothing changed, or not yet).
    pub fn tick(&mut self, config: &Config, now: Instant) -> Option<Config> {
        if let Some(rx) = &self.pending {
            return match rx.try_recv() {
                Ok(found) => {
                    self.pending = None;
                    changed(config, &found)
                }
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    self.pending = None;
                    None
                }
            };
        }
        let every = config.targets.resolve_interval;
        if every.is_zero() || now.duration_since(self.last) < every {
            return None;
        }
        self.last = now;
        let names: Vec<(usize, String)> = config
            .targets
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| host_of(&t.authority).parse::<std::net::IpAddr>().is_err())
            .map(|(i, t)| (i, format!("{}:{}", host_of(&t.authority), t.addr.port())))
            .collect();
        if names.is_empty() {
            return None;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let lookup = self.lookup;
        let spawned = std::thread::Builder::new()
            .name("dispa-resolve".into())
            .spawn(move || {
                let found = names.iter().map(|(i, hp)| (*i, lookup(hp))).collect();
                let _ = tx.send(found);
            });
        match spawned {
            Ok(_) => self.pending = Some(rx),
            Err(e) => tracing::warn!("cannot start a name lookup thread: {e}"),
        }
        None
    }
}

/// `config` with the looked-up addresses where they differ (a failed lookup keeps the
/// address it had).
fn changed(config: &Config, found: &Found) -> Option<Config> {
    let mut next = config.clone();
    let mut any = false;
    for (i, addr) in found {
        let (Some(addr), Some(t)) = (addr, next.targets.targets.get_mut(*i)) else {
            continue;
        };
        if t.addr != *addr {
            tracing::info!(target = %t.name, from = %t.addr, to = %addr, "target's address changed (DNS)");
            t.addr = *addr;
            any = true;
        }
    }
    any.then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> Config {
        crate::config::parse(
            "[domains]\nintercept_domains = [\"example.com\"]\n\
             [[targets.targets]]\nname = \"named\"\nurl = \"http://localhost:3000\"\n\
             [[targets.targets]]\nname = \"literal\"\nurl = \"http://127.0.0.1:3001\"\n\
             [targets]\nresolve_interval = \"1s\"\n",
        )
        .unwrap()
    }

    fn moved(host_port: &str) -> Option<SocketAddr> {
        assert_eq!(host_port, "localhost:3000", "IP literals are not looked up");
        Some("127.0.0.9:3000".parse().unwrap())
    }

    #[test]
    fn a_name_that_resolves_elsewhere_gives_a_config_with_the_new_address() {
        let c = config();
        let mut r = Resolver::new(moved);
        let start = Instant::now();
        assert!(r.tick(&c, start).is_none(), "not due yet");
        let later = start + Duration::from_secs(2);
        assert!(r.tick(&c, later).is_none(), "lookups started");
        let mut next = None;
        for _ in 0..200 {
            if let Some(n) = r.tick(&c, later) {
                next = Some(n);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let next = next.expect("the lookup answered");
        assert_eq!(
            next.targets.targets[0].addr,
            "127.0.0.9:3000".parse().unwrap()
        );
        assert_eq!(next.targets.targets[1].addr, c.targets.targets[1].addr);
        // Unchanged on the next round: nothing to publish.
        let mut r = Resolver::new(|_| Some("127.0.0.1:3000".parse().unwrap()));
        let c2 = next;
        let mut fake = c2.clone();
        fake.targets.targets[0].addr = "127.0.0.1:3000".parse().unwrap();
        assert!(r.tick(&fake, later).is_none());
        for _ in 0..200 {
            assert!(r.tick(&fake, later).is_none());
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
