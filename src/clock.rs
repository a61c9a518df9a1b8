//! Wall-clock time as Dispa writes it: Unix seconds and milliseconds, and RFC 3339 UTC
//! timestamps (no date crate: the civil-from-days conversion is a few lines).

use std::time::{SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch of `t` (zero before it).
fn since_epoch(t: SystemTime) -> std::time::Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

pub fn unix_secs() -> u64 {
    since_epoch(SystemTime::now()).as_secs()
}

pub fn unix_ms() -> u64 {
    since_epoch(SystemTime::now()).as_millis() as u64
}

/// `t` as fractional Unix seconds (the status API's timestamps).
pub fn unix_secs_f64(t: SystemTime) -> f64 {
    since_epoch(t).as_secs_f64()
}

/// `t` as whole Unix seconds.
pub fn secs_of(t: SystemTime) -> u64 {
    since_epoch(t).as_secs()
}
