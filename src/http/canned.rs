//! The responses Dispa generates itself: small, plain text, always with a length. The one
//! place that decides which status a failure gets is the caller; this only writes bytes.

use super::encode::push_u64;

/// Reason phrases for the statuses Dispa generates (the proxy, the status API, and
/// `dispa replay --serve`, which answers recorded statuses).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        409 => "Conflict",
        410 => "Gone",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Append a complete response with a `text/plain` body `message` plus a newline.
/// `close` adds `Connection: close` (when framing is in doubt or the client asked).
pub fn response(out: &mut Vec<u8>, status: u16, message: &str, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(
        b"\r\nServer: dispa\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ",
    );
    push_u64(out, message.len() as u64 + 1);
    out.extend_from_slice(b"\r\n");
    if status == 503 {
        out.extend_from_slice(b"Retry-After: 5\r\n");
    }
    if status == 405 {
        out.extend_from_slice(b"Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(message.as_bytes());
    out.push(b'\n');
}

/// `100 Continue`, sent by Dispa when the target has not answered an `Expect` in time.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_length_and_close() {
        let mut out = Vec::new();
        response(&mut out, 404, "domain not intercepted", true);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("Content-Length: 23\r\n"));
        assert!(s.contains("Connection: close\r\n"));
        assert!(s.ends_with("\r\n\r\ndomain not intercepted\n"));
    }
}
