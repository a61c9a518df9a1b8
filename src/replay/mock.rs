//! `dispa replay --serve ADDR`: answer requests with recorded responses, for tests that
//! must not reach the real backend. A request matches the recordings with its method and
//! path, and (each optional) its query and its body's hash; the matching responses are
//! given in the order they were recorded, over again after the last. A request nothing
//! matches gets 404 with `X-Dispa-Mock: miss`.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::net::{TcpListener, TcpStream};

use super::source::Recorded;
use super::{Error, Selection, on_runtime, stop_flag};
use crate::http::body::{ChunkedDecoder, Step};
use crate::http::canned;
use crate::http::encode::push_u64;
use crate::http::parse::{Body, RequestLimits, is_framing_or_hop_by_hop, parse_request};
use crate::io::{ReadBuf, read_head};

/// What a request is matched on, besides its method and path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Matching {
    pub query: bool,
    pub body: bool,
}

pub struct MockOptions {
    pub selection: Selection,
    pub bind: SocketAddr,
    pub matching: Matching,
    /// Stop after this long (else at SIGINT/SIGTERM).
    pub duration: Option<Duration>,
}

/// What the mock served, when it stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct Served {
    pub hits: u64,
    pub misses: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    method: String,
    path: String,
    query: Option<String>,
    body: Option<u64>,
}

/// The recordings a key answers with, and which is next.
struct Answers {
    responses: Vec<Rc<Vec<u8>>>,
    next: Cell<usize>,
}

fn body_hash(body: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

/// The response `r` recorded, as bytes to serve: its status, its captured fields
/// without framing, `Content-Length`, its body (none for HEAD, 204 and 304, which keep
/// a recorded `Content-Length` as it was).
fn recorded_response(r: &Recorded) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + r.response_bytes.max(0) as usize);
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(&mut out, u64::from(r.status));
    out.push(b' ');
    out.extend_from_slice(canned::reason(r.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    let headers = r.response_headers.as_deref().unwrap_or_default();
    for (name, value) in headers
        .iter()
        .filter(|(n, _)| !is_framing_or_hop_by_hop(n.as_bytes()))
    {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodyless = r.method == "HEAD" || r.status == 204 || r.status == 304;
    if bodyless {
        if let Some((_, v)) = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        return out;
    }
    let body = r.response_body.as_deref().unwrap_or_default();
    out.extend_from_slice(b"Content-Length: ");
    push_u64(&mut out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

struct Table {
    answers: HashMap<Key, Answers>,
    matching: Matching,
}

impl Table {
    fn key(&self, method: &str, path: &str, query: &str, body: &[u8]) -> Key {
        Key {
            method: method.to_string(),
            path: path.to_string(),
            query: self.matching.query.then(|| query.to_string()),
            body: self.matching.body.then(|| body_hash(body)),
        }
    }

    fn answer(&self, key: &Key) -> Option<Rc<Vec<u8>>> {
        let a = self.answers.get(key)?;
        let i = a.next.get();
        a.next.set((i + 1) % a.responses.len());
        Some(a.responses[i].clone())
    }
}

/// Load the recordings and serve them until stopped; `ready` is told the address bound
/// and how many recordings are served, before the first request is taken.
pub fn serve(
    opts: MockOptions,
    ready: impl FnOnce(SocketAddr, usize, usize),
) -> Result<Served, Error> {
    let records = opts.selection.load()?;
    let mut table = Table {
        answers: HashMap::new(),
        matching: opts.matching,
    };
    let (mut served, mut left_out) = (0, 0);
    for r in &records {
        // A response must be there whole; a body-matched request must be too.
        let response_whole =
            r.response_body_complete() || (r.response_bytes == 0 && r.response_body.is_none());
        let usable = r.status != 0
            && r.status != 101
            && !r.method.is_empty()
            && response_whole
            && (!opts.matching.body || r.request_body_complete());
        if !usable {
            left_out += 1;
            continue;
        }
        let body = r.request_body.as_deref().unwrap_or_default();
        let key = table.key(&r.method, &r.path, &r.query, body);
        table
            .answers
            .entry(key)
            .or_insert_with(|| Answers {
                responses: Vec::new(),
                next: Cell::new(0),
            })
            .responses
            .push(Rc::new(recorded_response(r)));
        served += 1;
    }
    let listener = std::net::TcpListener::bind(opts.bind)
        .map_err(|e| Error(format!("cannot listen on {}: {e}", opts.bind)))?;
    let bound = listener.local_addr().map_err(|e| Error(e.to_string()))?;
    ready(bound, served, left_out);
    let stop = stop_flag()?;
    let deadline = opts.duration.map(|d| std::time::Instant::now() + d);
    let table = Rc::new(table);
    let stats = Rc::new(Cell::new(Served::default()));
    let counted = stats.clone();
    on_runtime(move || async move {
        let listener = TcpListener::from_std(listener).expect("a bound listener");
        // Accepting runs on its own until the runtime ends (an accept dropped mid-way by
        // a timeout could lose the connection it had taken).
        monoio::spawn(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    monoio::spawn(connection(stream, table.clone(), counted.clone()));
                }
            }
        });
        let stopped = || {
            stop.load(std::sync::atomic::Ordering::Relaxed)
                || deadline.is_some_and(|d| std::time::Instant::now() >= d)
        };
        while !stopped() {
            monoio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .map_err(|e| Error(format!("runtime: {e}")))?;
    Ok(stats.get())
}

const LIMITS: RequestLimits = RequestLimits {
    max_headers: 100,
    max_uri_bytes: 8192,
};
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body read (for its hash).
const MAX_BODY: usize = 64 << 20;

/// Serve one connection's requests until it closes or asks to.
async fn connection(mut stream: TcpStream, table: Rc<Table>, stats: Rc<Cell<Served>>) {
    let _ = stream.set_nodelay(true);
    let mut buf = ReadBuf::with_capacity(16 * 1024);
    loop {
        let parse = |b: &[u8]| parse_request(b, &LIMITS);
        let Ok(head) = read_head(&mut stream, &mut buf, MAX_HEAD, parse).await else {
            return;
        };
        let data = buf.data();
        let method = String::from_utf8_lossy(head.method.of(data)).into_owned();
        let target = String::from_utf8_lossy(head.path.of(data)).into_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let keep_alive = head.keep_alive;
        buf.consume(head.head_len);
        if head.expect_continue {
            let (res, _) = stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
                .await;
            if res.is_err() {
                return;
            }
        }
        let Some(body) = read_body(&mut stream, &mut buf, head.body).await else {
            return;
        };
        let key = table.key(&method, path, query, &body);
        let mut s = stats.get();
        let answer = match table.answer(&key) {
            Some(bytes) => {
                s.hits += 1;
                (*bytes).clone()
            }
            None => {
                s.misses += 1;
                miss(&method, &target, head.is_head)
            }
        };
        stats.set(s);
        let (res, _) = stream.write_all(answer).await;
        if res.is_err() || !keep_alive {
            return;
        }
    }
}

/// The 404 a request nothing matches gets (its head only, for HEAD).
fn miss(method: &str, target: &str, is_head: bool) -> Vec<u8> {
    let body = format!("dispa replay --serve: no recorded response for {method} {target}\n");
    let mut out = format!(
        "HTTP/1.1 404 Not Found\r\nX-Dispa-Mock: miss\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !is_head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// The request body, decoded (`None`: the connection failed or the body was malformed
/// or too large).
async fn read_body(stream: &mut TcpStream, buf: &mut ReadBuf, body: Body) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match body {
        Body::None | Body::Close => {}
        Body::Length(n) => {
            let n = usize::try_from(n).ok().filter(|&n| n <= MAX_BODY)?;
            while buf.len() < n {
                if buf.fill(stream, n).await.ok()? == 0 {
                    return None;
                }
            }
            out.extend_from_slice(&buf.data()[..n]);
            buf.consume(n);
        }
        Body::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            loop {
                let data = buf.data();
                let mut pos = 0;
                loop {
                    match decoder.decode(&data[pos..]).ok()? {
                        Step::Framing(n) => pos += n,
                        Step::Data(n) => {
                            out.extend_from_slice(&data[pos..pos + n]);
                            pos += n;
                            if out.len() > MAX_BODY {
                                return None;
                            }
                        }
                        Step::NeedMore => break,
                        Step::Done(n) => {
                            buf.consume(pos + n);
                            return Some(out);
                        }
                    }
                }
                buf.consume(pos);
                if buf.fill(stream, MAX_HEAD + 64 * 1024).await.ok()? == 0 {
                    return None;
                }
            }
        }
    }
    Some(out)
}
