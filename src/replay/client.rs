//! The replay's client side on monoio: the target (`http://` or `https://` URL), one
//! connection to it, and one exchange on that connection — the request written at once,
//! the response read by its framing (RFC 9112 §6.3) with the same parser the proxy uses
//! for upstream answers.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use monoio::net::TcpStream;
use rustls::pki_types::ServerName;

use super::diff::Replayed;
use crate::http::body::{ChunkedDecoder, Step};
use crate::http::parse::{Body, parse_response};
use crate::io::tls::TlsStream;
use crate::io::{HeadError, ReadBuf, Stream, read_head, write_vec};

/// Where replayed requests go.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` as the URL gave it (Host with `--host target`).
    pub authority: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl Target {
    /// `http://host[:port]` or `https://host[:port]` (a trailing `/` allowed). The name
    /// is looked up here, once. `insecure`: do not verify an https target's certificate;
    /// `ca`: verify it against this PEM file instead of the system's roots.
    pub fn parse(url: &str, insecure: bool, ca: Option<&Path>) -> Result<Target, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!(
                "{url:?}: expected http://HOST[:PORT] or https://HOST[:PORT]"
            ));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "{url:?}: only a scheme and host[:port] (requests keep their recorded paths)"
            ));
        }
        let default_port = if https { 443 } else { 80 };
        // `[v6]:port`, `[v6]`, `name:port`, `name`.
        let (bare, port) = match authority.strip_prefix('[') {
            Some(r) => match r.split_once(']') {
                Some((h, "")) => (h, None),
                Some((h, p)) => (h, Some(p.strip_prefix(':').unwrap_or(p))),
                None => return Err(format!("{url:?}: missing ]")),
            },
            None => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match port {
            None => default_port,
            Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
        };
        let addr = (bare, port)
            .to_socket_addrs()
            .map_err(|e| format!("{url:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url:?}: no address for {bare}"))?;
        let tls = if https {
            let config = crate::tls::client_config(ca, !insecure)?;
            let name =
                ServerName::try_from(bare.to_string()).map_err(|e| format!("{url:?}: {e}"))?;
            Some((config, name))
        } else {
            None
        };
        Ok(Target {
            addr,
            authority: authority.to_string(),
            tls,
        })
    }
}

/// Why an exchange got no response to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The target could not be connected to (or its TLS handshake failed).
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// The connection closed or failed before a complete response.
    Closed,
    /// The response was malformed.
    BadResponse,
}

impl Failure {
    pub const ALL: [Failure; 4] = [
        Failure::Connect,
        Failure::Timeout,
        Failure::Closed,
        Failure::BadResponse,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Closed => "closed",
            Failure::BadResponse => "bad_response",
        }
    }
}

/// Longest response head read.
const MAX_HEAD: usize = 64 * 1024;
/// Most bytes read at once while a body comes.
const READ_MAX: usize = 256 * 1024;

/// One connection to the target.
pub struct Connection {
    stream: Stream,
    buf: ReadBuf,
    /// It has carried an exchange already (a failure before any answer may be the target
    /// closing an idle connection: worth one more try on a new one).
    pub reused: bool,
}

impl Connection {
    pub async fn open(target: &Target) -> Result<Connection, Failure> {
        let tcp = TcpStream::connect_addr(target.addr)
            .await
            .map_err(|_| Failure::Connect)?;
        let _ = tcp.set_nodelay(true);
        let stream = match &target.tls {
            None => Stream::Plain(tcp),
            Some((config, name)) => {
                let tls = TlsStream::connect(tcp, config.clone(), name.clone())
                    .await
                    .map_err(|_| Failure::Connect)?;
                Stream::Tls(Box::new(tls))
            }
        };
        Ok(Connection {
            stream,
            buf: ReadBuf::with_capacity(16 * 1024),
            reused: false,
        })
    }

    /// Send `request` (handed back cleared) and read the response, keeping the first
    /// `keep` body bytes. Returns the response and whether the connection may carry
    /// another request. `Err((failure, answered))`: `answered` says response bytes came.
    pub async fn exchange(
        &mut self,
        request: &mut Vec<u8>,
        is_head: bool,
        keep: usize,
    ) -> Result<(Replayed, bool), (Failure, bool)> {
        self.reused = true;
        write_vec(&mut self.stream, request)
            .await
            .map_err(|_| (Failure::Closed, false))?;
        // An interim answer (100 Continue) means the target took the request: not to be
        // sent again.
        let mut interim = false;
        let head = loop {
            let parse = |b: &[u8]| parse_response(b, is_head, MAX_HEAD);
            let head = match read_head(&mut self.stream, &mut self.buf, MAX_HEAD, parse).await {
                Ok(h) => h,
                Err(HeadError::Closed | HeadError::Io(_)) => {
                    return Err((Failure::Closed, interim || !self.buf.is_empty()));
                }
                Err(_) => return Err((Failure::BadResponse, true)),
            };
            // Interim answers (100 Continue, 103 Early Hints) come before the one.
            if (100..200).contains(&head.status) && head.status != 101 {
                self.buf.consume(head.head_len);
                interim = true;
                continue;
            }
            break head;
        };
        let data = self.buf.data();
        let mut got = Replayed {
            status: head.status,
            headers: head
                .fields
                .list
                .iter()
                .map(|f| {
                    (
                        String::from_utf8_lossy(f.name.of(data)).into_owned(),
                        String::from_utf8_lossy(f.value.of(data)).into_owned(),
                    )
                })
                .collect(),
            body: Vec::new(),
            body_len: 0,
        };
        self.buf.consume(head.head_len);
        let keep_alive = head.keep_alive;
        let read = match head.body {
            Body::None => Ok(()),
            Body::Length(n) => self.read_length(n, keep, &mut got).await,
            Body::Chunked => self.read_chunked(keep, &mut got).await,
            Body::Close => self.read_to_close(keep, &mut got).await,
        };
        read.map_err(|f| (f, true))?;
        Ok((got, keep_alive && head.body != Body::Close))
    }

    async fn fill(&mut self) -> Result<(), Failure> {
        match self.buf.fill(&mut self.stream, READ_MAX).await {
            Ok(0) | Err(_) => Err(Failure::Closed),
            Ok(_) => Ok(()),
        }
    }

    async fn read_length(
        &mut self,
        mut left: u64,
        keep: usize,
        got: &mut Replayed,
    ) -> Result<(), Failure> {
        loop {
            let n = (self.buf.len() as u64).min(left) as usize;
            take(got, &self.buf.data()[..n], keep);
            self.buf.consume(n);
            left -= n as u64;
            if left == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    async fn read_chunked(&mut self, keep: usize, got: &mut Replayed) -> Result<(), Failure> {
        let mut decoder = ChunkedDecoder::new();
        loop {
            let data = self.buf.data();
            let mut pos = 0;
            loop {
                match decoder
                    .decode(&data[pos..])
                    .map_err(|_| Failure::BadResponse)?
                {
                    Step::Framing(n) => pos += n,
                    Step::Data(n) => {
                        take(got, &data[pos..pos + n], keep);
                        pos += n;
                    }
                    Step::NeedMore => break,
                    Step::Done(n) => {
                        self.buf.consume(pos + n);
                        return Ok(());
                    }
                }
            }
            self.buf.consume(pos);
            self.fill().await?;
        }
    }

    async fn read_to_close(&mut self, keep: usize, got: &mut Replayed) -> Result<(), Failure> {
        loop {
            let n = self.buf.len();
            take(got, self.buf.data(), keep);
            self.buf.consume(n);
            match self.buf.fill(&mut self.stream, READ_MAX).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(_) => return Err(Failure::Closed),
            }
        }
    }
}

/// Count `bytes` of the body and keep them while fewer than `keep` are kept.
fn take(got: &mut Replayed, bytes: &[u8], keep: usize) {
    got.body_len += bytes.len() as u64;
    let room = keep.saturating_sub(got.body.len());
    got.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_a_scheme_and_an_authority() {
        let t = Target::parse("http://127.0.0.1:18091/", false, None).unwrap();
        assert_eq!(t.addr, "127.0.0.1:18091".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:18091");
        let t = Target::parse("http://[::1]:9", false, None).unwrap();
        assert_eq!(t.addr, "[::1]:9".parse().unwrap());
        assert_eq!(
            Target::parse("http://127.0.0.1", false, None)
                .unwrap()
                .addr
                .port(),
            80
        );
        for bad in [
            "127.0.0.1:80",
            "ftp://x",
            "http://h:x",
            "http://h/v2",
            "http://",
        ] {
            assert!(Target::parse(bad, false, None).is_err(), "{bad}");
        }
    }
}
