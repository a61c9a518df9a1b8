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

/// `t` as Unix milliseconds.
pub fn ms_of(t: SystemTime) -> u64 {
    since_epoch(t).as_millis() as u64
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01 (Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds → (year, month, day, hour, minute, second), UTC.
fn utc(unix_secs: u64) -> (i64, u32, u32, i64, i64, i64) {
    let secs = unix_secs as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    (y, mo, d, rem / 3600, rem / 60 % 60, rem % 60)
}

/// `2026-11-26T05:21:07.123Z`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let mut out = Vec::with_capacity(24);
    push_rfc3339_ms(&mut out, unix_ms);
    String::from_utf8(out).expect("ASCII")
}

/// Append `n` as exactly `width` digits (zero-padded; wider numbers are cut on the left).
fn push_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    for d in digits[..width].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

pub fn push_rfc3339_ms(out: &mut Vec<u8>, unix_ms: u64) {
    let (y, mo, d, h, mi, s) = utc(unix_ms / 1000);
    push_padded(out, y.max(0) as u64, 4);
    for (sep, n) in [
        (b'-', mo as u64),
        (b'-', d as u64),
        (b'T', h as u64),
        (b':', mi as u64),
        (b':', s as u64),
    ] {
        out.push(sep);
        push_padded(out, n, 2);
    }
    out.push(b'.');
    push_padded(out, unix_ms % 1000, 3);
    out.push(b'Z');
}

/// A point in time given on the command line, as Unix milliseconds: Unix milliseconds
/// themselves, a date (`2026-11-30`, midnight UTC), or RFC 3339 (`2026-11-30T10:00:00Z`,
/// `2026-11-30T10:00:00.250+01:00`; a space may stand for the `T`).
pub fn parse_time_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !(1..=12).contains(&mo) {
        return None;
    }
    if !(1..=31).contains(&d) {
        return None;
    }
    let day = days_from_civil(y, mo as u32, d as u32);
    if b.len() == 10 {
        return u64::try_from(day * 86_400_000).ok();
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    let sec = if b.get(16) == Some(&b':') {
        num(17..19)?
    } else {
        return None;
    };
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut at = 19;
    let mut ms = 0;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        let frac = &s[at + 1..at + 1 + digits.min(3)];
        ms = frac.parse::<i64>().ok()? * 10_i64.pow(3 - frac.len() as u32);
        at += 1 + digits;
    }
    let offset_min = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == at + 6 && b[at + 3] == b':' => {
            let m = num(at + 1..at + 3)? * 60 + num(at + 4..at + 6)?;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let secs = day * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    u64::try_from(secs * 1000 + ms).ok()
}

/// `20261126T052107Z`, for file names that sort by time.
pub fn compact_utc(unix_secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc(unix_secs);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_670_066_712), "2026-11-26T05:14:26.712Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(compact_utc(1_795_670_066), "20261126T051426Z");
        for day in [-800_000, -1, 0, 1, 11_016, 20_787, 2_000_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn parses_command_line_times() {
        let at = 1_795_670_066_712;
        assert_eq!(parse_time_ms("1795670066712"), Some(at));
        assert_eq!(parse_time_ms("2026-11-26T05:14:26.712Z"), Some(at));
        assert_eq!(parse_time_ms("2026-11-26 05:14:26.712Z"), Some(at));
        assert_eq!(parse_time_ms("2026-11-26T06:14:26.712+01:00"), Some(at));
        assert_eq!(parse_time_ms("2026-11-26T05:14:26Z"), Some(at - 712));
        assert_eq!(parse_time_ms("2026-11-26T05:14:26.7Z"), Some(at - 12));
        assert_eq!(parse_time_ms("2026-11-26"), Some(at - 18_866_712));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-11-26T05:14Z",
            "2026-11-26T05:14:26",
        ] {
            assert_eq!(parse_time_ms(bad), None, "{bad}");
        }
    }
}
