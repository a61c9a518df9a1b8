//! The client's side of a connection: its socket, the bytes read from it and not yet
//! used, and how it is answered and closed. Both the connection loop (`conn`) and an
//! exchange (`exchange`) use it; it knows neither.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::io::Stream;
use monoio::time::{timeout, timeout_at};

use super::failure::Failure;
use crate::http::canned;
use crate::io::{ReadBuf, write_vec};

/// Initial capacity of a connection's read buffer (grown up to the configured limits).
pub const BUF_START: usize = 4 * 1024;

/// An answer Dispa made itself.
pub struct Answered {
    pub status: u16,
    pub body_bytes: u64,
    /// It was written completely.
    pub sent: bool,
}

/// What a TLS connection's handshake settled, for 421 checks and records.
pub struct TlsInfo {
    /// The name the client asked for (lowercase), if it sent one.
    pub sni: Option<Box<str>>,
    /// 12 or 13.
    pub version: u8,
}

pub struct Client {
    pub stream: Stream,
    /// Set when the connection is TLS.
    pub tls: Option<TlsInfo>,
    /// Bytes read from the client and not yet used.
    pub rbuf: ReadBuf,
    /// The client's IP, and as text for `X-Forwarded-For` (formatted once per connection).
    pub ip: IpAddr,
    pub ip_text: Vec<u8>,
    /// This connection's id in the traffic record (`Worker::new_conn_id`).
    pub conn: u64,
    /// Dispa answered and is closing while the client may still be sending: close
    /// gracefully so that unread bytes do not turn the close into a reset.
    pub linger: bool,
}

impl Client {
    pub fn new(stream: Stream, ip: IpAddr, conn: u64) -> Self {
        // A TLS connection had it set before its handshake.
        if let Stream::Plain(tcp) = &stream {
            let _ = tcp.set_nodelay(true);
        }
        let ip = ip.to_canonical();
        let tls = stream.tls().map(|t| TlsInfo {
            sni: t.sni().map(|s| s.to_ascii_lowercase().into()),
            version: t.version(),
        });
        Client {
            tls,
            stream,
            rbuf: ReadBuf::with_capacity(BUF_START),
            ip,
            ip_text: ip.to_string().into_bytes(),
            conn,
            linger: false,
        }
    }

    /// Write all of `out` within `send`; returns whether it was written.
    pub async fn send(&mut self, out: &mut Vec<u8>, send: Duration) -> bool {
        matches!(
            timeout(send, write_vec(&mut self.stream, out)).await,
            Ok(Ok(()))
        )
    }

    /// Answer `failure` (`None` when it has no answer) through the scratch buffer `out`;
    /// `close` adds `Connection: close` and a lingering close.
    pub async fn answer(
        &mut self,
        failure: Failure,
        close: bool,
        out: &mut Vec<u8>,
        send: Duration,
    ) -> Option<Answered> {
        let (status, text) = failure.answer()?;
        self.linger |= close;
        out.clear();
        canned::response(out, status, text, close);
        Some(Answered {
            status,
            body_bytes: text.len() as u64 + 1,
            sent: self.send(out, send).await,
        })
    }

    /// Make the coming close a reset, so that a client reading until close never takes a
    /// truncated body for a complete one.
    pub fn abort_on_close(&self) {
        use std::os::fd::{AsRawFd, BorrowedFd};
        // SAFETY: the fd is `self.stream`'s, open for as long as this borrow lives.
        let fd = unsafe { BorrowedFd::borrow_raw(self.stream.as_raw_fd()) };
        let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
    }

    /// Half-close, then read and drop what the client still sends (at most 64 KiB, 1 s),
    /// so that the response is not destroyed by a reset.
    pub async fn lingering_close(&mut self) {
        let _ = monoio::io::AsyncWriteRent::shutdown(&mut self.stream).await;
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut drained = 0;
        while drained < 64 * 1024 {
            self.rbuf.consume(self.rbuf.len());
            let read = self.rbuf.fill(&mut self.stream, BUF_START);
            match timeout_at(deadline.into(), read).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => return,
            }
        }
    }
}
