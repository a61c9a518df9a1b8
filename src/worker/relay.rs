//! Streams a body from one socket to the other with bounded memory: Content-Length,
//! chunked (decoded and re-framed, or de-chunked for HTTP/1.0 clients) and
//! close-delimited. Every read and write has a timeout.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::io::Stream;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::time::timeout;

use crate::http::body::{ChunkError, ChunkedDecoder, LAST_CHUNK, Step, chunk_header};
use crate::io::{ReadBuf, write_vec};

/// Largest read buffer for bodies.
pub const BODY_BUF_MAX: usize = 64 * 1024;

/// Which way a relay broke.
#[derive(Debug)]
pub enum RelayError {
    /// The sending side closed early, failed, or was too slow.
    Read(ReadFailure),
    /// The receiving side failed or was too slow.
    Write,
    /// The body's chunked framing was invalid.
    Framing,
    /// The body grew past the configured limit.
    TooLarge,
}

#[derive(Debug)]
pub enum ReadFailure {
    Eof,
    Timeout,
    Io,
}

/// The bounds of one direction's relay: its timeouts and how many body bytes it may carry.
#[derive(Clone, Copy)]
pub struct Bounds {
    pub read: Duration,
    pub write: Duration,
    /// Body bytes allowed (0: no limit); more end the relay with [`RelayError::TooLarge`].
    pub limit: u64,
}

/// The first bytes of a body, kept for the traffic record (`[logging.capture]`). An
/// unarmed capture keeps nothing and costs one comparison per read.
#[derive(Debug, Default)]
pub struct BodyCapture {
    data: Vec<u8>,
    /// Bytes it may still keep.
    left: usize,
}

impl BodyCapture {
    /// Keep up to `max` bytes of the next body (forgetting the last one).
    pub fn arm(&mut self, max: usize) {
        self.data.clear();
        self.left = max;
    }

    pub fn keep(&mut self, bytes: &[u8]) {
        if self.left > 0 {
            let n = bytes.len().min(self.left);
            self.data.extend_from_slice(&bytes[..n]);
            self.left -= n;
        }
    }

    /// What was kept; the capture is unarmed afterwards.
    pub fn take(&mut self) -> Vec<u8> {
        self.left = 0;
        std::mem::take(&mut self.data)
    }
}

/// Move a whole body of `n` bytes, all in `buf` already, to the end of `out` (to go out in
/// the same write as its head). Returns `n`.
pub fn inline(buf: &mut ReadBuf, n: usize, out: &mut Vec<u8>, capture: &mut BodyCapture) -> u64 {
    let body = &buf.data()[..n];
    out.extend_from_slice(body);
    capture.keep(body);
    buf.consume(n);
    n as u64
}

/// Append `data` to `out` as one chunk when `rechunk`, else as it is.
fn push_data(out: &mut Vec<u8>, data: &[u8], rechunk: bool) {
    if rechunk {
        chunk_header(out, data.len());
    }
    out.extend_from_slice(data);
    if rechunk {
        out.extend_from_slice(b"\r\n");
    }
}

async fn fill(src: &mut Stream, buf: &mut ReadBuf, bounds: Bounds) -> Result<usize, RelayError> {
    match timeout(bounds.read, buf.fill(src, BODY_BUF_MAX)).await {
        Ok(Ok(0)) => Err(RelayError::Read(ReadFailure::Eof)),
        Ok(Ok(n)) => Ok(n),
        Ok(Err(_)) => Err(RelayError::Read(ReadFailure::Io)),
        Err(_) => Err(RelayError::Read(ReadFailure::Timeout)),
    }
}

async fn send_front(
    dst: &mut Stream,
    buf: &mut ReadBuf,
    n: usize,
    bounds: Bounds,
) -> Result<(), RelayError> {
    match timeout(bounds.write, buf.write_front(dst, n)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(RelayError::Write),
    }
}

async fn send_vec(dst: &mut Stream, out: &mut Vec<u8>, bounds: Bounds) -> Result<(), RelayError> {
    match timeout(bounds.write, write_vec(dst, out)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(RelayError::Write),
    }
}

/// Relay exactly `remaining` bytes; bytes beyond them stay in `buf`.
pub async fn length(
    src: &mut Stream,
    buf: &mut ReadBuf,
    dst: &mut Stream,
    mut remaining: u64,
    bounds: Bounds,
    capture: &mut BodyCapture,
) -> Result<u64, RelayError> {
    let total = remaining;
    if remaining > buf.len() as u64 {
        buf.ensure_capacity(remaining.min(BODY_BUF_MAX as u64) as usize);
    }
    loop {
        let n = (buf.len() as u64).min(remaining) as usize;
        if n > 0 {
            capture.keep(&buf.data()[..n]);
            send_front(dst, buf, n, bounds).await?;
            remaining -= n as u64;
        }
        if remaining == 0 {
            return Ok(total);
        }
        fill(src, buf, bounds).await?;
    }
}

/// Relay a chunked body. `rechunk`: re-frame as chunked (else send the bare data, for a
/// close-delimited HTTP/1.0 response). Trailers are dropped. Returns the data bytes.
/// What `out` holds on entry (a request head) is sent with the first data.
pub async fn chunked(
    src: &mut Stream,
    buf: &mut ReadBuf,
    dst: &mut Stream,
    out: &mut Vec<u8>,
    rechunk: bool,
    bounds: Bounds,
    capture: &mut BodyCapture,
) -> Result<u64, RelayError> {
    let mut decoder = ChunkedDecoder::new();
    let mut total = 0u64;
    buf.ensure_capacity(BODY_BUF_MAX);
    loop {
        // Emptied by each send (`write_vec` hands it back cleared).
        let mut pos = 0;
        let mut done = false;
        let data = buf.data();
        while !done {
            match decoder
                .decode(&data[pos..])
                .map_err(|_: ChunkError| RelayError::Framing)?
            {
                Step::Framing(n) => pos += n,
                Step::Data(n) => {
                    push_data(out, &data[pos..pos + n], rechunk);
                    capture.keep(&data[pos..pos + n]);
                    pos += n;
                    total += n as u64;
                    if bounds.limit > 0 && total > bounds.limit {
                        return Err(RelayError::TooLarge);
                    }
                }
                Step::NeedMore => break,
                Step::Done(n) => {
                    pos += n;
                    if rechunk {
                        out.extend_from_slice(LAST_CHUNK);
                    }
                    done = true;
                }
            }
        }
        buf.consume(pos);
        if !out.is_empty() {
            send_vec(dst, out, bounds).await?;
        }
        if done {
            return Ok(total);
        }
        fill(src, buf, bounds).await?;
    }
}

/// Relay until `src` closes. `rechunk`: frame what arrives as chunks (HTTP/1.1 client).
pub async fn until_close(
    src: &mut Stream,
    buf: &mut ReadBuf,
    dst: &mut Stream,
    out: &mut Vec<u8>,
    rechunk: bool,
    bounds: Bounds,
    capture: &mut BodyCapture,
) -> Result<u64, RelayError> {
    let mut total = 0u64;
    buf.ensure_capacity(BODY_BUF_MAX);
    loop {
        let n = buf.len();
        if n > 0 {
            total += n as u64;
            capture.keep(buf.data());
            if rechunk {
                out.clear();
                push_data(out, buf.data(), true);
                buf.consume(n);
                send_vec(dst, out, bounds).await?;
            } else {
                send_front(dst, buf, n, bounds).await?;
            }
        }
        match fill(src, buf, bounds).await {
            Ok(_) => {}
            Err(RelayError::Read(ReadFailure::Eof)) => {
                if rechunk {
                    out.clear();
                    out.extend_from_slice(LAST_CHUNK);
                    send_vec(dst, out, bounds).await?;
                }
                return Ok(total);
            }
            Err(e) => return Err(e),
        }
    }
}

/// After a `101`: copy bytes both ways. Each side's end of stream is passed on as a
/// half-close; the tunnel ends when both directions have ended, or when no byte has
/// moved either way for `idle`.
pub async fn tunnel(client: Stream, upstream: Stream, idle: Duration) {
    use monoio::io::Splitable;
    let (client, upstream) = match (client, upstream) {
        (Stream::Plain(c), Stream::Plain(u)) => (c, u),
        (c, u) => return tunnel_tls(c, u, idle).await,
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let activity = Cell::new(Instant::now());
    monoio::join!(
        pump(&mut cr, &mut uw, &activity, idle),
        pump(&mut ur, &mut cw, &activity, idle)
    );
}

/// A tunnel where a side speaks TLS: one TLS session cannot be read and written from two
/// tasks, so one task waits for either side, cancels the other read (which keeps what it
/// had read) and writes what came. A write holds up reading both sides while it lasts.
async fn tunnel_tls(mut a: Stream, mut b: Stream, idle: Duration) {
    use crate::io::is_cancelled;
    use monoio::io::Canceller;
    const MAX: usize = 16 * 1024;
    let mut abuf = ReadBuf::with_capacity(MAX);
    let mut bbuf = ReadBuf::with_capacity(MAX);
    let (mut a_open, mut b_open) = (true, true);
    let mut last = Instant::now();
    while a_open || b_open {
        let (ca, cb) = (Canceller::new(), Canceller::new());
        let (ra, rb) = {
            let mut fa = std::pin::pin!(abuf.fill_cancelable(&mut a, MAX, ca.handle()));
            let mut fb = std::pin::pin!(bbuf.fill_cancelable(&mut b, MAX, cb.handle()));
            let idle_end = monoio::time::sleep_until((last + idle).into());
            match (a_open, b_open) {
                (true, true) => monoio::select! {
                    r = &mut fa => { let _ = cb.cancel(); (Some(r), Some(fb.await)) }
                    r = &mut fb => { let _ = ca.cancel(); (Some(fa.await), Some(r)) }
                    _ = idle_end => { let _ = ca.cancel(); let _ = cb.cancel(); (Some(fa.await), Some(fb.await)) }
                },
                (true, false) => monoio::select! {
                    r = &mut fa => (Some(r), None),
                    _ = idle_end => { let _ = ca.cancel(); (Some(fa.await), None) }
                },
                _ => monoio::select! {
                    r = &mut fb => (None, Some(r)),
                    _ = idle_end => { let _ = cb.cancel(); (None, Some(fb.await)) }
                },
            }
        };
        let mut moved = false;
        for (res, open, buf, dst) in [
            (ra, &mut a_open, &mut abuf, &mut b),
            (rb, &mut b_open, &mut bbuf, &mut a),
        ] {
            match res {
                Some(Err(e)) if is_cancelled(&e) => {}
                None => {}
                Some(Ok(n)) if n > 0 => {
                    moved = true;
                    let len = buf.len();
                    let write = timeout(idle, buf.write_front(dst, len));
                    if !matches!(write.await, Ok(Ok(()))) {
                        return;
                    }
                }
                Some(_) => {
                    // End of stream or an error: pass the end on as a half-close.
                    *open = false;
                    let _ = dst.shutdown().await;
                }
            }
        }
        if moved {
            last = Instant::now();
        } else if last.elapsed() >= idle {
            break;
        }
    }
}

async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(
    r: &mut R,
    w: &mut W,
    activity: &Cell<Instant>,
    idle: Duration,
) {
    const TUNNEL_BUF: usize = 16 * 1024;
    let mut buf = Vec::with_capacity(TUNNEL_BUF);
    loop {
        match timeout(idle, r.read(buf)).await {
            Err(_) => {
                // This direction was quiet; the tunnel lives while the other one is not.
                if activity.get().elapsed() >= idle {
                    break;
                }
                buf = Vec::with_capacity(TUNNEL_BUF); // the old one went with the cancelled read
            }
            Ok((Ok(0), _)) | Ok((Err(_), _)) => break,
            Ok((Ok(_), data)) => {
                activity.set(Instant::now());
                match timeout(idle, w.write_all(data)).await {
                    Ok((Ok(_), mut data)) => {
                        data.clear();
                        buf = data;
                    }
                    _ => break,
                }
            }
        }
    }
    let _ = w.shutdown().await;
}
