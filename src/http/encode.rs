//! Serializes the heads Dispa sends: the request to a target and the response to a client.
//! Heads are rebuilt from parsed spans, never copied raw, so hop-by-hop and framing fields
//! are always Dispa's own and nothing unvalidated decides how the next hop frames a body.

use super::parse::{Body, Fields, RequestHead, ResponseHead};

/// Append a decimal number without going through `fmt`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_kept(out: &mut Vec<u8>, buf: &[u8], fields: &Fields) {
    for f in fields.kept() {
        push_field(out, f.name.of(buf), f.value.of(buf));
    }
}

/// Where the request goes and who sent it.
pub struct Forward<'a> {
    /// Prefix from the target URL (`/api`), or empty.
    pub path_prefix: &'a [u8],
    /// Replace `Host` with this (the target's authority), or keep the client's.
    pub host_override: Option<&'a [u8]>,
    /// The client's address as text, appended to `X-Forwarded-For`.
    pub client_ip: &'a [u8],
    /// An `X-Request-Id` to add (the client sent none).
    pub request_id: Option<&'a [u8]>,
    /// The request came over TLS (`X-Forwarded-Proto: https`).
    pub https: bool,
}

/// The request head sent upstream (always HTTP/1.1, keep-alive, canonical framing).
pub fn request_head(out: &mut Vec<u8>, buf: &[u8], h: &RequestHead, fwd: &Forward<'_>) {
    out.extend_from_slice(h.method.of(buf));
    out.push(b' ');
    let path = h.path.of(buf);
    if path != b"*" {
        out.extend_from_slice(fwd.path_prefix);
        if path.is_empty() || path[0] == b'?' {
            out.push(b'/');
        }
    }
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    let host = h.host.of(buf);
    out.extend_from_slice(fwd.host_override.unwrap_or(host));
    out.extend_from_slice(b"\r\n");
    push_kept(out, buf, &h.fields);

    out.extend_from_slice(b"X-Forwarded-For: ");
    for (i, f) in h.fields.list.iter().enumerate() {
        if h.xff & (1u128 << i) != 0 {
            let v = f.value.of(buf).trim_ascii();
            if !v.is_empty() {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(fwd.client_ip);
    out.extend_from_slice(if fwd.https {
        b"\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: ".as_slice()
    } else {
        b"\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: "
    });
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");
    if let Some(id) = fwd.request_id {
        push_field(out, b"X-Request-Id", id);
    }
    if h.expect_continue {
        out.extend_from_slice(b"Expect: 100-continue\r\n");
    }
    if let Some(i) = h.upgrade {
        push_field(out, b"Upgrade", h.fields.list[i].value.of(buf));
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    match h.body {
        Body::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Body::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Body::None if h.empty_length => out.extend_from_slice(b"Content-Length: 0\r\n"),
        Body::None | Body::Close => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// How the response body reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    /// No body follows (HEAD, 1xx, 204, 304, or empty).
    None,
    Length(u64),
    /// Chunked to the client (chunked upstream, or close-delimited upstream to an HTTP/1.1 client).
    Chunked,
    /// Raw bytes until Dispa closes the connection (HTTP/1.0 clients).
    Close,
}

/// Decide how the body of `r` is framed for a client speaking HTTP/1.`client_minor`.
pub fn client_framing(r: &ResponseHead, client_minor: u8) -> ClientFraming {
    match r.body {
        Body::None => ClientFraming::None,
        Body::Length(n) => ClientFraming::Length(n),
        Body::Chunked | Body::Close if client_minor == 1 => ClientFraming::Chunked,
        Body::Chunked | Body::Close => ClientFraming::Close,
    }
}

/// The response head sent to the client. `keep_alive`: whether Dispa keeps the client
/// connection open after this response (decided by the caller from both sides).
pub fn response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    r: &ResponseHead,
    framing: ClientFraming,
    client_minor: u8,
    keep_alive: bool,
) {
    push_status_and_fields(out, buf, r);
    match framing {
        ClientFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ClientFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        // A HEAD or 304 answer keeps the length it describes.
        ClientFraming::None => {
            if let Some(n) = r.content_length
                && r.status >= 200
                && r.status != 204
            {
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, n);
                out.extend_from_slice(b"\r\n");
            }
        }
        ClientFraming::Close => {}
    }
    if r.status >= 200 {
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if client_minor == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The `101 Switching Protocols` head: the upstream's fields plus the upgrade pair.
pub fn switching_head(out: &mut Vec<u8>, buf: &[u8], r: &ResponseHead, upgrade: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 101 ");
    out.extend_from_slice(r.reason.of(buf));
    out.extend_from_slice(b"\r\n");
    push_kept(out, buf, &r.fields);
    push_field(out, b"Upgrade", upgrade);
    out.extend_from_slice(b"Connection: upgrade\r\n\r\n");
}

/// An interim (1xx other than 101) head relayed to an HTTP/1.1 client.
pub fn interim_head(out: &mut Vec<u8>, buf: &[u8], r: &ResponseHead) {
    push_status_and_fields(out, buf, r);
    out.extend_from_slice(b"\r\n");
}

/// The status line (always HTTP/1.1: Dispa's own version) and the fields forwarded as
/// they came.
fn push_status_and_fields(out: &mut Vec<u8>, buf: &[u8], r: &ResponseHead) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(r.status));
    out.push(b' ');
    out.extend_from_slice(r.reason.of(buf));
    out.extend_from_slice(b"\r\n");
    push_kept(out, buf, &r.fields);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::{RequestLimits, parse_request, parse_response};

    fn forward(raw: &str, prefix: &str, host: Option<&str>) -> String {
        let limits = RequestLimits {
            max_headers: 100,
            max_uri_bytes: 8192,
        };
        let h = parse_request(raw.as_bytes(), &limits).unwrap().unwrap();
        let mut out = Vec::new();
        let fwd = Forward {
            path_prefix: prefix.as_bytes(),
            host_override: host.map(str::as_bytes),
            client_ip: b"10.9.8.7",
            request_id: None,
            https: false,
        };
        request_head(&mut out, raw.as_bytes(), &h, &fwd);
        String::from_utf8(out).unwrap()
    }

    /// Found by fuzzing: the fields Dispa adds may take a head past the client's field
    /// limit; the forwarded head must still fit the parser's capacity.
    #[test]
    fn forwarded_head_with_the_most_fields_still_parses() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: example.com\r\n");
        for i in 0..99 {
            raw += &format!("X-{i}: v\r\n");
        }
        raw += "\r\n";
        let out = forward(&raw, "", None);
        let limits = RequestLimits {
            max_headers: crate::http::MAX_HEADERS,
            max_uri_bytes: 8192,
        };
        let again = parse_request(out.as_bytes(), &limits).unwrap().unwrap();
        assert!(
            again.fields.list.len() > 100 && again.fields.list.len() <= crate::http::MAX_HEADERS
        );
    }

    #[test]
    fn request_is_rebuilt_without_hop_by_hop_fields() {
        let raw = "POST /x?y HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\nContent-Length: 3\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            forward(raw, "/api", None),
            "POST /api/x?y HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Forwarded-For: 1.1.1.1, 10.9.8.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\nContent-Length: 3\r\n\r\n"
        );
    }

    #[test]
    fn absolute_form_becomes_origin_form_and_host_can_be_rewritten() {
        let raw = "GET http://a.test.com?q HTTP/1.1\r\nHost: other\r\n\r\n";
        assert_eq!(
            forward(raw, "", Some("10.0.0.1:8080")),
            "GET /?q HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nX-Forwarded-For: 10.9.8.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a.test.com\r\n\r\n"
        );
    }

    #[test]
    fn response_to_http10_client_closes_and_dechunks() {
        let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-Hop\r\nX-Hop: 1\r\nServer: t\r\n\r\n";
        let r = parse_response(raw.as_bytes(), false, 16384)
            .unwrap()
            .unwrap();
        let framing = client_framing(&r, 0);
        assert_eq!(framing, ClientFraming::Close);
        let mut out = Vec::new();
        response_head(&mut out, raw.as_bytes(), &r, framing, 0, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: t\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn numbers() {
        let mut out = Vec::new();
        push_u64(&mut out, 0);
        out.push(b' ');
        push_u64(&mut out, u64::MAX);
        assert_eq!(out, b"0 18446744073709551615");
    }
}
