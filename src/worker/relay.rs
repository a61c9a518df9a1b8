//! Streams a body from one socket to the other with bounded memory: Content-Length,
//! chunked (decoded and re-framed, or de-chunked for HTTP/1.0 clients) and
//! close-delimited. Every read and write has a timeout.

use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::timeout;

use super::buf::{ReadBuf, write_vec};
use crate::http::body::{ChunkError, ChunkedDecoder, LAST_CHUNK, Step, chunk_header};

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
}

#[derive(Debug)]
pub enum ReadFailure {
    Eof,
    Timeout,
    Io,
}

/// Timeouts for one direction.
#[derive(Clone, Copy)]
pub struct Pace {
    pub read: Duration,
    pub write: Duration,
}

async fn fill(src: &mut TcpStream, buf: &mut ReadBuf, pace: Pace) -> Result<usize, RelayError> {
    match timeout(pace.read, buf.fill(src, BODY_BUF_MAX)).await {
        Ok(Ok(0)) => Err(RelayError::Read(ReadFailure::Eof)),
        Ok(Ok(n)) => Ok(n),
        Ok(Err(_)) => Err(RelayError::Read(ReadFailure::Io)),
        Err(_) => Err(RelayError::Read(ReadFailure::Timeout)),
    }
}

async fn send_front(
    dst: &mut TcpStream,
    buf: &mut ReadBuf,
    n: usize,
    pace: Pace,
) -> Result<(), RelayError> {
    match timeout(pace.write, buf.write_front(dst, n)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(RelayError::Write),
    }
}

async fn send_vec(dst: &mut TcpStream, out: &mut Vec<u8>, pace: Pace) -> Result<(), RelayError> {
    match timeout(pace.write, write_vec(dst, out)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(RelayError::Write),
    }
}

/// Relay exactly `remaining` bytes; bytes beyond them stay in `buf`.
pub async fn length(
    src: &mut TcpStream,
    buf: &mut ReadBuf,
    dst: &mut TcpStream,
    mut remaining: u64,
    pace: Pace,
) -> Result<u64, RelayError> {
    let total = remaining;
    loop {
        let n = (buf.len() as u64).min(remaining) as usize;
        if n > 0 {
            send_front(dst, buf, n, pace).await?;
            remaining -= n as u64;
        }
        if remaining == 0 {
            return Ok(total);
        }
        fill(src, buf, pace).await?;
    }
}

/// Relay a chunked body. `rechunk`: re-frame as chunked (else send the bare data, for a
/// close-delimited HTTP/1.0 response). Trailers are dropped. Returns the data bytes.
pub async fn chunked(
    src: &mut TcpStream,
    buf: &mut ReadBuf,
    dst: &mut TcpStream,
    out: &mut Vec<u8>,
    rechunk: bool,
    pace: Pace,
) -> Result<u64, RelayError> {
    let mut decoder = ChunkedDecoder::new();
    let mut total = 0u64;
    loop {
        out.clear();
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
                    if rechunk {
                        chunk_header(out, n);
                    }
                    out.extend_from_slice(&data[pos..pos + n]);
                    if rechunk {
                        out.extend_from_slice(b"\r\n");
                    }
                    pos += n;
                    total += n as u64;
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
            send_vec(dst, out, pace).await?;
        }
        if done {
            return Ok(total);
        }
        fill(src, buf, pace).await?;
    }
}

/// Relay until `src` closes. `rechunk`: frame what arrives as chunks (HTTP/1.1 client).
pub async fn until_close(
    src: &mut TcpStream,
    buf: &mut ReadBuf,
    dst: &mut TcpStream,
    out: &mut Vec<u8>,
    rechunk: bool,
    pace: Pace,
) -> Result<u64, RelayError> {
    let mut total = 0u64;
    loop {
        let n = buf.len();
        if n > 0 {
            total += n as u64;
            if rechunk {
                out.clear();
                chunk_header(out, n);
                out.extend_from_slice(buf.data());
                out.extend_from_slice(b"\r\n");
                buf.consume(n);
                send_vec(dst, out, pace).await?;
            } else {
                send_front(dst, buf, n, pace).await?;
            }
        }
        match fill(src, buf, pace).await {
            Ok(_) => {}
            Err(RelayError::Read(ReadFailure::Eof)) => {
                if rechunk {
                    out.clear();
                    out.extend_from_slice(LAST_CHUNK);
                    send_vec(dst, out, pace).await?;
                }
                return Ok(total);
            }
            Err(e) => return Err(e),
        }
    }
}

/// After a `101`: copy bytes both ways until each side closes its half.
pub async fn tunnel(client: TcpStream, upstream: TcpStream) {
    use monoio::io::{AsyncWriteRent, Splitable};
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = async {
        let _ = monoio::io::copy(&mut cr, &mut uw).await;
        let _ = uw.shutdown().await;
    };
    let down = async {
        let _ = monoio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    monoio::join!(up, down);
}
