//! A traffic record as one JSON line (the file sink's format). Written by hand, not with
//! serde_json: it runs once per request on the logging thread, and writing straight into
//! the batch buffer measured cheaper (docs/BENCHMARKS.md, "Earlier changes").

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use crate::clock::push_rfc3339_ms;
use crate::http::encode::push_u64;
use crate::msg::{RecordText, TrafficRecord};

/// Append an address as `Display` writes it, with a fast path for IPv4 (most clients).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Append `ip:port`, or `[ip]:port` for IPv6, as `SocketAddr`'s `Display` does.
pub fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            push_ip(out, IpAddr::V4(*a.ip()));
            out.push(b':');
            push_u64(out, u64::from(a.port()));
        }
        SocketAddr::V6(a) => {
            let _ = write!(out, "{a}");
        }
    }
}

pub fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0..0x20 | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        plain = i + 1;
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

/// `,"key":value`, or `,"key":null`.
fn json_opt(out: &mut Vec<u8>, key: &[u8], value: Option<u64>) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\":");
    match value {
        Some(v) => push_u64(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// `,"key":number`.
fn json_num(out: &mut Vec<u8>, key: &[u8], value: u64) {
    json_opt(out, key, Some(value));
}

/// `,"key":"text"`.
fn json_text(out: &mut Vec<u8>, key: &[u8], value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\":");
    json_str(out, value);
}

/// Header fields as a JSON array of `[name, value]` pairs (order and duplicates kept).
pub fn push_header_pairs(out: &mut Vec<u8>, pairs: &[(String, String)]) {
    out.push(b'[');
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        json_str(out, name);
        out.push(b',');
        json_str(out, value);
        out.push(b']');
    }
    out.push(b']');
}

/// Standard base64 with padding (RFC 4648 §4), for body bytes in JSON.
pub fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
}

/// The `version` field's text.
pub fn version_text(r: &TrafficRecord) -> &'static str {
    match r.version_minor {
        0 => "HTTP/1.0",
        1 => "HTTP/1.1",
        _ => "",
    }
}

/// `TLSv1.3` / `TLSv1.2`, as in the SQLite view's `tls_version`.
pub fn tls_version_text(tls: u8) -> &'static str {
    match tls {
        12 => "TLSv1.2",
        13 => "TLSv1.3",
        _ => "",
    }
}

/// Append `r` as one JSON object and a newline. Hand-written rather than through `fmt`:
/// this runs once per request on the logging thread, and `fmt` cost twice as much.
pub fn json_line(out: &mut Vec<u8>, r: &TrafficRecord) {
    use RecordText::*;
    out.extend_from_slice(b"{\"id\":");
    json_str(out, r.field(Id));
    out.extend_from_slice(b",\"time\":\"");
    push_rfc3339_ms(out, r.start_ms);
    out.push(b'"');
    json_num(out, b"ts_ms", r.start_ms);
    out.extend_from_slice(b",\"client\":\"");
    push_ip(out, r.client);
    out.push(b'"');
    json_num(out, b"conn", r.conn);
    json_num(out, b"worker", u64::from(r.worker));
    json_text(out, b"method", r.field(Method));
    out.extend_from_slice(match r.tls {
        0 => b",\"scheme\":\"http\"".as_slice(),
        _ => b",\"scheme\":\"https\"",
    });
    json_text(out, b"host", r.field(Host));
    json_text(out, b"path", r.field(Path));
    json_text(out, b"query", r.field(Query));
    json_text(out, b"version", version_text(r));
    json_text(out, b"user_agent", r.field(UserAgent));
    json_num(out, b"request_bytes", r.request_bytes);
    json_num(out, b"status", u64::from(r.status));
    json_num(out, b"response_bytes", r.response_bytes);
    json_text(out, b"target", r.field(Target));
    out.extend_from_slice(b",\"target_addr\":\"");
    if let Some(a) = r.target_addr {
        push_socket_addr(out, a);
    }
    out.push(b'"');
    json_num(out, b"duration_us", r.duration_us);
    json_opt(out, b"upstream_us", r.upstream_us);
    out.extend_from_slice(b",\"upstream_reused\":");
    out.extend_from_slice(match r.reused {
        Some(true) => b"true",
        Some(false) => b"false",
        None => b"null",
    });
    json_num(out, b"retries", u64::from(r.retries));
    out.extend_from_slice(b",\"error\":");
    match r.error {
        Some(e) => json_str(out, e.label()),
        None => out.extend_from_slice(b"null"),
    }
    if r.tls != 0 {
        json_text(out, b"sni", r.field(RecordText::Sni));
        json_text(out, b"tls_version", tls_version_text(r.tls));
    }
    if let Some(c) = &r.capture {
        out.extend_from_slice(b",\"request_headers\":");
        push_header_pairs(out, &c.request_headers);
        out.extend_from_slice(b",\"response_headers\":");
        push_header_pairs(out, &c.response_headers);
        out.extend_from_slice(b",\"request_body_b64\":\"");
        push_base64(out, &c.request_body);
        out.extend_from_slice(b"\",\"response_body_b64\":\"");
        push_base64(out, &c.response_body);
        out.push(b'"');
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_strings() {
        let mut s = Vec::new();
        json_str(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, r#""a\"b\\c\u000a\u0001é""#.as_bytes());
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            push_base64(&mut out, raw.as_bytes());
            assert_eq!(out, encoded.as_bytes(), "{raw}");
        }
    }

    #[test]
    fn formats_addresses_as_display_does() {
        for text in [
            "127.0.0.1:8080",
            "[::1]:80",
            "[fe80::1%2]:443",
            "10.0.0.255:0",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            let mut out = Vec::new();
            push_socket_addr(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
            let mut out = Vec::new();
            push_ip(&mut out, addr.ip());
            assert_eq!(String::from_utf8(out).unwrap(), addr.ip().to_string());
        }
    }
}
