//! A traffic record as one JSON line (the file sink's format), and UTC time formatting
//! without a date library.

use std::fmt::Write;

use crate::msg::{RecordText, TrafficRecord};

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

/// Unix seconds → (year, month, day, hour, minute, second), UTC.
fn utc(unix_secs: u64) -> (i64, u32, u32, i64, i64, i64) {
    let secs = unix_secs as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    (y, mo, d, rem / 3600, rem / 60 % 60, rem % 60)
}

/// `2026-11-26T05:21:07.123Z`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let (y, mo, d, h, mi, s) = utc(unix_ms / 1000);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        unix_ms % 1000
    )
}

/// `20261126T052107Z`, for file names that sort by time.
pub fn compact_utc(unix_secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc(unix_secs);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `,"key":value`, or `,"key":null`.
fn json_opt(out: &mut String, key: &str, value: Option<impl std::fmt::Display>) {
    let _ = match value {
        Some(v) => write!(out, ",\"{key}\":{v}"),
        None => write!(out, ",\"{key}\":null"),
    };
}

/// Append `r` as one JSON object and a newline.
pub fn json_line(out: &mut String, r: &TrafficRecord) {
    use RecordText::*;
    let version = match r.version_minor {
        0 => "HTTP/1.0",
        1 => "HTTP/1.1",
        _ => "",
    };
    out.push_str("{\"id\":");
    json_str(out, r.field(Id));
    let _ = write!(
        out,
        ",\"time\":\"{}\",\"ts_ms\":{}",
        rfc3339_ms(r.start_ms),
        r.start_ms
    );
    let _ = write!(out, ",\"client\":\"{}\",\"worker\":{}", r.client, r.worker);
    out.push_str(",\"method\":");
    json_str(out, r.field(Method));
    out.push_str(",\"scheme\":\"http\",\"host\":");
    json_str(out, r.field(Host));
    out.push_str(",\"path\":");
    json_str(out, r.field(Path));
    out.push_str(",\"query\":");
    json_str(out, r.field(Query));
    let _ = write!(out, ",\"version\":\"{version}\",\"user_agent\":");
    json_str(out, r.field(UserAgent));
    let _ = write!(
        out,
        ",\"request_bytes\":{},\"status\":{},\"response_bytes\":{},\"target\":",
        r.request_bytes, r.status, r.response_bytes
    );
    json_str(out, r.field(Target));
    match r.target_addr {
        Some(a) => {
            let _ = write!(out, ",\"target_addr\":\"{a}\"");
        }
        None => out.push_str(",\"target_addr\":\"\""),
    }
    let _ = write!(out, ",\"duration_us\":{}", r.duration_us);
    json_opt(out, "upstream_us", r.upstream_us);
    json_opt(out, "upstream_reused", r.reused);
    let _ = write!(out, ",\"retries\":{},\"error\":", r.retries);
    match r.error {
        Some(e) => json_str(out, e),
        None => out.push_str("null"),
    }
    out.push_str("}\n");
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
    }

    #[test]
    fn escapes_strings() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\n\u{1}");
        assert_eq!(s, r#""a\"b\\c\u000a\u0001""#);
    }
}
