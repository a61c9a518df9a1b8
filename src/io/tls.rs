//! TLS over a monoio TCP stream, driving rustls directly, and [`Stream`]: a connection
//! that is plain TCP or TLS, used wherever the workers read and write (clients, targets).
//!
//! Why not `monoio-rustls`: Dispa cancels reads and goes on reading the same connection
//! (a parked keep-alive wait, an `Expect: 100-continue` wait: [`crate::io::ReadBuf::fill_before`]),
//! which needs a TLS read whose cancel keeps what was read. Here the only socket read is
//! of ciphertext into the connection's own buffer, and a cancel of it loses nothing:
//! bytes the kernel delivered stay in `rx`, and rustls has taken only whole calls.

use std::io::{self, BufRead, Write};
use std::sync::Arc;

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent,
};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;

/// Ciphertext read per socket read: one full TLS record and its header fit.
const RX_CAP: usize = 17 * 1024;

/// A TLS connection over TCP (see the module header).
pub struct TlsStream {
    tcp: TcpStream,
    conn: rustls::Connection,
    /// Ciphertext read from the socket; `rx[rx_pos..]` is not yet given to rustls.
    rx: Vec<u8>,
    rx_pos: usize,
    /// Ciphertext being written (kept for its capacity).
    tx: Vec<u8>,
    /// The socket reached end of stream.
    eof: bool,
}

/// A server handshake that failed, with the name the client asked for (rustls keeps it
/// even when the handshake failed on it).
#[derive(Debug)]
pub struct HandshakeError {
    pub error: io::Error,
    pub sni: Option<String>,
    /// Dispa refused the SNI (a host it does not intercept).
    pub refused_sni: bool,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    /// The server side of a handshake on `tcp`; the connection once it completed.
    pub async fn accept(
        tcp: TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<Self, HandshakeError> {
        let conn = rustls::ServerConnection::new(config).map_err(|e| HandshakeError {
            error: tls_error(e),
            sni: None,
            refused_sni: false,
        })?;
        let mut s = TlsStream::new(tcp, conn.into());
        match s.handshake().await {
            Ok(()) => Ok(s),
            Err(error) => Err(HandshakeError {
                refused_sni: crate::tls::is_refused_sni(&error),
                sni: s.sni().map(str::to_ascii_lowercase),
                error,
            }),
        }
    }

    /// The client side of a handshake on `tcp` with `name` as SNI and the name checked.
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Self> {
        let conn = rustls::ClientConnection::new(config, name).map_err(tls_error)?;
        let mut s = TlsStream::new(tcp, conn.into());
        s.handshake().await?;
        Ok(s)
    }

    fn new(tcp: TcpStream, mut conn: rustls::Connection) -> Self {
        // rustls would refuse plaintext past 64 KiB waiting to be sent; every write here is
        // flushed before it returns, so what waits is bounded by one write's buffers.
        conn.set_buffer_limit(None);
        TlsStream {
            tcp,
            conn,
            rx: Vec::new(),
            rx_pos: 0,
            tx: Vec::new(),
            eof: false,
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The name the client asked for (server side), if it sent one.
    pub fn sni(&self) -> Option<&str> {
        match &self.conn {
            rustls::Connection::Server(c) => c.server_name(),
            rustls::Connection::Client(_) => None,
        }
    }

    /// 12 or 13 (TLS 1.2 or 1.3).
    pub fn version(&self) -> u8 {
        match self.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => 12,
            _ => 13,
        }
    }

    /// The handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        matches!(
            self.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        )
    }

    async fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            if self.conn.wants_write() {
                self.flush_tls().await?;
            } else if self.eof {
                return Err(io::ErrorKind::UnexpectedEof.into());
            } else {
                self.read_tls(None).await?;
            }
        }
        // Session tickets (TLS 1.3 sends them after the handshake). A client that closed
        // at once has still completed the handshake; its next read will tell.
        let _ = self.flush_tls().await;
        Ok(())
    }

    /// Give rustls what was read (reading the socket first when nothing is waiting) and
    /// process it. A failure sends rustls' alert before it is returned.
    async fn read_tls(&mut self, cancel: Option<CancelHandle>) -> io::Result<()> {
        if self.rx_pos == self.rx.len() && !self.eof {
            let mut buf = std::mem::take(&mut self.rx);
            buf.clear();
            buf.reserve(RX_CAP);
            let (res, buf) = match cancel {
                Some(c) => self.tcp.cancelable_read(buf, c).await,
                None => self.tcp.read(buf).await,
            };
            self.rx = buf;
            self.rx_pos = 0;
            if res? == 0 {
                self.eof = true;
            }
        }
        if self.eof && self.rx_pos == self.rx.len() {
            self.conn.read_tls(&mut &[][..])?;
        }
        while self.rx_pos < self.rx.len() {
            let n = self.conn.read_tls(&mut &self.rx[self.rx_pos..])?;
            self.rx_pos += n;
            if let Err(e) = self.conn.process_new_packets() {
                let _ = self.flush_tls().await;
                return Err(tls_error(e));
            }
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Write everything rustls has to send.
    async fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut tx = std::mem::take(&mut self.tx);
            tx.clear();
            while self.conn.wants_write() {
                self.conn.write_tls(&mut tx)?;
            }
            let (res, tx) = self.tcp.write_all(tx).await;
            self.tx = tx;
            res?;
        }
        Ok(())
    }

    /// Plaintext into `dst` (at most `cap` bytes): what rustls holds, else after reading
    /// more. `Ok(0)` is a clean close (close_notify, or end of stream).
    async fn read_plain(
        &mut self,
        dst: *mut u8,
        cap: usize,
        cancel: Option<CancelHandle>,
    ) -> io::Result<usize> {
        loop {
            let mut reader = self.conn.reader();
            match reader.fill_buf() {
                Ok(chunk) => {
                    let n = chunk.len().min(cap);
                    // SAFETY: `dst` is valid for `cap` bytes (the caller's buffer).
                    unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), dst, n) };
                    reader.consume(n);
                    return Ok(n);
                }
                // A TCP end without close_notify ends an HTTP/1.1 stream as a plain close
                // does: HTTP's own framing tells a truncated message.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            self.read_tls(cancel.clone()).await?;
        }
    }

    async fn write_plain(&mut self, src: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < src.len() {
            let n = self.conn.writer().write(&src[done..])?;
            done += n;
            self.flush_tls().await?;
            if n == 0 {
                break;
            }
        }
        Ok(done)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        let _ = self.flush_tls().await;
        self.tcp.shutdown().await
    }
}

/// A connection as the workers use it: plain TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Plain(s)
    }
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.tcp(),
        }
    }

    pub fn tls(&self) -> Option<&TlsStream> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => Some(s),
        }
    }

    /// rustls holds bytes read and not yet taken (a parked wait must not sleep on them).
    pub fn has_buffered(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.rx_pos < s.rx.len(),
        }
    }

    /// Nothing read and not yet taken, ciphertext or decrypted (a pooled connection must
    /// hold no bytes of a response that was not asked for).
    pub fn has_unread(&mut self) -> bool {
        self.has_buffered()
            || match self {
                Stream::Plain(_) => false,
                Stream::Tls(s) => !matches!(s.conn.reader().fill_buf(), Err(_) | Ok([])),
            }
    }
}

impl std::os::fd::AsRawFd for Stream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.tcp().as_raw_fd()
    }
}

async fn tls_read<T: IoBufMut>(
    s: &mut TlsStream,
    mut buf: T,
    cancel: Option<CancelHandle>,
) -> BufResult<usize, T> {
    let res = s
        .read_plain(buf.write_ptr(), buf.bytes_total(), cancel)
        .await;
    if let Ok(n) = res {
        // SAFETY: `read_plain` initialised `n` bytes at `write_ptr`.
        unsafe { buf.set_init(n) };
    }
    (res, buf)
}

async fn tls_readv<T: IoVecBufMut>(
    s: &mut TlsStream,
    mut buf: T,
    cancel: Option<CancelHandle>,
) -> BufResult<usize, T> {
    // SAFETY: the raw buffer points into `buf`, which outlives it here.
    let res = match unsafe { RawBuf::new_from_iovec_mut(&mut buf) } {
        Some(raw) => tls_read(s, raw, cancel).await.0,
        None => Ok(0),
    };
    if let Ok(n) = res {
        // SAFETY: as in `tls_read`.
        unsafe { buf.set_init(n) };
    }
    (res, buf)
}

impl AsyncReadRent for Stream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => tls_read(s, buf, None).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.readv(buf).await,
            Stream::Tls(s) => tls_readv(s, buf, None).await,
        }
    }
}

impl CancelableAsyncReadRent for Stream {
    async fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.cancelable_read(buf, c).await,
            Stream::Tls(s) => tls_read(s, buf, Some(c)).await,
        }
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.cancelable_readv(buf, c).await,
            Stream::Tls(s) => tls_readv(s, buf, Some(c)).await,
        }
    }
}

impl AsyncWriteRent for Stream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.write(buf).await,
            Stream::Tls(s) => {
                // SAFETY: `buf` holds `bytes_init` bytes at `read_ptr` while borrowed here.
                let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
                let res = s.write_plain(src).await;
                (res, buf)
            }
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.writev(buf).await,
            Stream::Tls(s) => {
                // One TLS write of every slice in turn (rustls frames them into records).
                let iov = buf.read_iovec_ptr();
                let mut total = 0;
                for i in 0..buf.read_iovec_len() {
                    // SAFETY: `buf` holds `read_iovec_len` valid iovecs while borrowed here.
                    let v = unsafe { &*iov.add(i) };
                    // SAFETY: each iovec points at `iov_len` readable bytes of `buf`.
                    let src =
                        unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) };
                    if let Err(e) = s.conn.writer().write_all(src) {
                        return (Err(e), buf);
                    }
                    total += v.iov_len;
                }
                let res = s.flush_tls().await.map(|()| total);
                (res, buf)
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush().await,
            Stream::Tls(s) => s.flush_tls().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
        }
    }
}
