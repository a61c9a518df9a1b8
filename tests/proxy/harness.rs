//! Test harness: Dispa started in-process on 127.0.0.1:0, scripted backends on real
//! sockets that record exactly what they received, and raw-byte clients.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dispa::boot::{self, Running};

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Start Dispa with one worker from `toml` (which should bind 127.0.0.1:0).
pub fn proxy(toml: &str) -> Running {
    let cfg = dispa::config::parse(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    boot::start(cfg, Some(1)).expect("start dispa")
}

/// A config intercepting example.com and *.test.com, forwarding to `targets`
/// (name = "b{i}"), with `extra` TOML appended (sections of its own).
pub fn config(targets: &[SocketAddr], algorithm: &str, extra: &str) -> String {
    let mut s = String::from(
        "[server]\nbind = \"127.0.0.1:0\"\n[domains]\nintercept_domains = [\"example.com\", \"*.test.com\"]\nexclude_domains = [\"private.test.com\"]\n",
    );
    for (i, t) in targets.iter().enumerate() {
        s += &format!("[[targets.targets]]\nname = \"b{i}\"\nurl = \"http://{t}\"\n");
    }
    s += &format!("[targets.load_balancing]\ntype = \"{algorithm}\"\n{extra}\n");
    if !extra.contains("[logging]") {
        s += &logging_section(&scratch_dir("records"));
    }
    s
}

/// A fresh directory under the system temp dir.
pub fn scratch_dir(what: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("dispa-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Traffic records into `dir` (files under `dir/logs`, SQLite at `dir/traffic.db`).
pub fn logging_section(dir: &std::path::Path) -> String {
    format!(
        "[logging]\ntype = \"both\"\nflush_interval_ms = 50\n[logging.file]\ndirectory = \"{}\"\n[logging.database]\npath = \"{}\"\n",
        dir.join("logs").display(),
        dir.join("traffic.db").display()
    )
}

/// A request as a backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub conn: usize,
    /// The head exactly as received (request line and fields, up to the blank line).
    pub head: String,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        header_in(&self.head, name)
    }

    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }
}

/// What a backend answers; gets the request and the connection.
pub type Handler = Arc<dyn Fn(&Seen, &mut TcpStream) -> Reply + Send + Sync>;

pub enum Reply {
    /// Keep the connection for the next request.
    KeepAlive,
    /// Close the connection.
    Close,
}

/// A backend on 127.0.0.1 that parses requests (Content-Length and chunked bodies),
/// records them, and answers with `handler`.
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Backend {
    pub fn start(handler: Handler) -> Backend {
        Backend::start_with(handler, true)
    }

    /// Like [`Backend::start`], but never answers `Expect: 100-continue` (it just waits
    /// for the body, as an HTTP/1.0 server would).
    pub fn ignoring_expect(handler: Handler) -> Backend {
        Backend::start_with(handler, false)
    }

    fn start_with(handler: Handler, auto_continue: bool) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let id = c.fetch_add(1, Ordering::SeqCst);
                let (s, h) = (s.clone(), handler.clone());
                thread::spawn(move || serve(stream, id, s, h, auto_continue));
            }
        });
        Backend {
            addr,
            seen,
            connections,
        }
    }

    /// Answers `200` with body `name:path` and keeps the connection.
    pub fn named(name: &'static str) -> Backend {
        Backend::start(Arc::new(move |req: &Seen, s: &mut TcpStream| {
            let path = req
                .request_line()
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .to_string();
            let body = format!("{name}:{path}");
            // One write: split writes meet Nagle and delayed ACKs (40 ms stalls).
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(response.as_bytes());
            Reply::KeepAlive
        }))
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.requests().pop().expect("backend saw no request")
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(
    mut stream: TcpStream,
    id: usize,
    seen: Arc<Mutex<Vec<Seen>>>,
    handler: Handler,
    auto_continue: bool,
) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_until(&mut stream, &mut buf, |b| {
            find(b, b"\r\n\r\n").map(|i| i + 4)
        }) else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let mut req = Seen {
            conn: id,
            head,
            body: Vec::new(),
        };
        if req.header("transfer-encoding").is_some() {
            match read_chunked(&mut stream, &mut buf) {
                Some(body) => req.body = body,
                None => return,
            }
        } else if let Some(n) = req
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            if auto_continue && req.header("expect").is_some() {
                let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            if read_until(&mut stream, &mut buf, |b| (b.len() >= n).then_some(n)).is_none() {
                return;
            }
            req.body = buf.drain(..n).collect();
        }
        seen.lock().unwrap().push(req.clone());
        if let Reply::Close = handler(&req, &mut stream) {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Read into `buf` until `done(buf)` returns a position; `None` on EOF/error.
pub fn read_until(
    s: &mut impl Read,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> Option<usize>,
) -> Option<usize> {
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(n) = done(buf) {
            return Some(n);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn read_chunked(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = read_until(s, buf, |b| find(b, b"\r\n"))?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&buf[..line_end])
                .ok()?
                .split(';')
                .next()?,
            16,
        )
        .ok()?;
        buf.drain(..line_end + 2);
        if size == 0 {
            let end = read_until(s, buf, |b| find(b, b"\r\n").map(|i| i + 2))?;
            buf.drain(..end);
            return Some(body);
        }
        read_until(s, buf, |b| (b.len() >= size + 2).then_some(0))?;
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// The value of field `name` in a head (status or request line first).
fn header_in(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A raw client connection to Dispa (plain TCP, or TLS: [`tls_client`]).
pub struct Client<S: Read + Write = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        header_in(&self.head, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client::from_stream(stream)
    }
}

impl<S: Read + Write> Client<S> {
    pub fn from_stream(stream: S) -> Client<S> {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// A GET that may fail (no answer within the stream's read timeout): `None`.
    pub fn try_get(&mut self, host: &str, path: &str) -> Option<Response> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.stream.write_all(req.as_bytes()).ok()?;
        read_until(&mut self.stream, &mut self.buf, |b| {
            find(b, b"\r\n\r\n").map(|i| i + 4)
        })?;
        Some(self.read_response(false))
    }

    pub fn send(&mut self, bytes: &[u8]) -> &mut Self {
        self.stream.write_all(bytes).unwrap();
        self
    }

    /// Read one response; `head_request` means no body follows.
    pub fn read_response(&mut self, head_request: bool) -> Response {
        let end = read_until(&mut self.stream, &mut self.buf, |b| {
            find(b, b"\r\n\r\n").map(|i| i + 4)
        })
        .unwrap_or_else(|| {
            panic!(
                "no response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            )
        });
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let status: u16 = head[9..12].parse().unwrap();
        let mut r = Response {
            status,
            head,
            body: Vec::new(),
        };
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return r;
        }
        if r.header("transfer-encoding").is_some() {
            r.body = read_chunked(&mut self.stream, &mut self.buf).expect("chunked body");
        } else if let Some(n) = r
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            read_until(&mut self.stream, &mut self.buf, |b| {
                (b.len() >= n).then_some(n)
            })
            .expect("body");
            r.body = self.buf.drain(..n).collect();
        } else {
            let mut rest = Vec::new();
            let _ = self.stream.read_to_end(&mut rest);
            r.body = std::mem::take(&mut self.buf);
            r.body.extend(rest);
        }
        r
    }

    pub fn get(&mut self, host: &str, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        self.read_response(false)
    }

    /// True when the server closed the connection (EOF or reset, with nothing pending)
    /// within the read timeout; false when data came or the wait timed out.
    pub fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    Client::connect(addr).get(host, path)
}

/// Send raw bytes on a fresh connection and read one response.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    c.send(bytes);
    c.read_response(false)
}

/// Poll `f` until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// The body [`sized_backend`] sends for `/n`: `n` bytes of a repeating alphabet.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A backend that answers `GET /n` with a Content-Length body of [`pattern`]`(n)`.
pub fn sized_backend() -> Backend {
    Backend::start(Arc::new(|seen: &Seen, s: &mut TcpStream| {
        let path = seen.request_line().split(' ').nth(1).unwrap_or("/0");
        let n: usize = path.trim_start_matches('/').parse().unwrap_or(0);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&pattern(n));
        Reply::KeepAlive
    }))
}

/// GET `/n` for each size on one connection (to a [`sized_backend`]): every body exact.
pub fn check_sizes<S: Read + Write>(c: &mut Client<S>, sizes: &[usize]) {
    for &n in sizes {
        let r = c.get("example.com", &format!("/{n}"));
        assert_eq!((r.status, r.body.len()), (200, n));
        assert!(r.body == pattern(n), "body of {n} bytes differs");
    }
}

/// A port on 127.0.0.1 where nothing listens.
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A backend that, on each connection, waits for the end of a head, writes `reply`
/// verbatim, and records every byte it receives on that connection.
pub struct RawBackend {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawBackend {
    pub fn start(reply: &'static [u8]) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let rec = rec.clone();
                let id = {
                    let mut r = rec.lock().unwrap();
                    r.push(Vec::new());
                    r.len() - 1
                };
                thread::spawn(move || {
                    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    let mut replied = false;
                    let mut chunk = [0u8; 65536];
                    loop {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                let mut r = rec.lock().unwrap();
                                r[id].extend_from_slice(&chunk[..n]);
                                if !replied && find(&r[id], b"\r\n\r\n").is_some() {
                                    replied = true;
                                    drop(r);
                                    let _ = stream.write_all(reply);
                                }
                            }
                        }
                    }
                });
            }
        });
        RawBackend { addr, received }
    }

    pub fn connection(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()[i]).into_owned()
    }

    pub fn connection_count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

/// A backend that can be killed (its port then refuses connections and its open
/// connections close) and revived on the same port. Answers every GET with `name`.
pub struct KillableBackend {
    pub addr: SocketAddr,
    name: &'static str,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

impl KillableBackend {
    pub fn start(name: &'static str) -> KillableBackend {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let b = KillableBackend {
            addr,
            name,
            alive: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        b.revive();
        b
    }

    pub fn revive(&self) {
        let listener = TcpListener::bind(self.addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.alive.store(true, Ordering::SeqCst);
        let (alive, name) = (self.alive.clone(), self.name);
        thread::spawn(move || {
            while alive.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let alive = alive.clone();
                        thread::spawn(move || serve_while(s, name, &alive));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
    }

    /// Stop: new connections are refused and open ones closed.
    pub fn kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
        let addr = self.addr;
        assert!(eventually(Duration::from_secs(5), || TcpStream::connect(
            addr
        )
        .is_err()));
    }
}

impl Drop for KillableBackend {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::SeqCst);
    }
}

fn serve_while(mut s: TcpStream, name: &str, alive: &std::sync::atomic::AtomicBool) {
    let _ = s.set_nonblocking(false);
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while alive.load(Ordering::SeqCst) {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            buf.drain(..end + 4);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\r\n{name}",
                name.len()
            );
            if s.write_all(response.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Dispa with its control thread, from a config file (rewritable for reloads).
pub struct Controlled {
    pub proxy: SocketAddr,
    pub status: SocketAddr,
    pub metrics: SocketAddr,
    pub path: std::path::PathBuf,
    /// Kept so that Dispa runs as long as this value lives.
    _control: dispa::control::Handle,
}

/// `toml` should bind the proxy and both monitoring endpoints on port 0.
pub fn controlled(toml: &str) -> Controlled {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dispa-ctl-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dispa.toml");
    std::fs::write(&path, toml).unwrap();
    let cfg = dispa::config::load(&path).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let running = boot::start(cfg, Some(1)).expect("start dispa");
    let proxy = running.local_addr();
    let control =
        dispa::control::start(running.into_control(), Some(path.clone())).expect("start control");
    Controlled {
        proxy,
        status: control.health_addr().unwrap(),
        metrics: control.metrics_addr().unwrap(),
        path,
        _control: control,
    }
}

/// Monitoring on free ports, for [`controlled`] configs.
pub const MONITORING: &str =
    "[monitoring]\nhealth_bind = \"127.0.0.1:0\"\nmetrics_bind = \"127.0.0.1:0\"\n";

/// `METHOD path` on a fresh connection to an admin/metrics endpoint.
pub fn call(addr: SocketAddr, method: &str, path: &str) -> Response {
    raw(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    )
}

/// A sample's value from a Prometheus text exposition (`name{labels}` exactly as printed).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A process started by a test: killed (and reaped) when dropped.
pub struct Spawned(pub std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `argv` (the dispa binary, possibly behind `taskset`) and wait for its
/// "dispa started" log line; returns the process and the `listen` and `status_api`
/// addresses it logged.
pub fn spawn_dispa(argv: &[&str]) -> (Spawned, SocketAddr, Option<SocketAddr>) {
    let (child, listen, status, _) = spawn_dispa_tls(argv);
    (child, listen, status)
}

/// [`spawn_dispa`], also returning the `tls` address it logged.
pub fn spawn_dispa_tls(
    argv: &[&str],
) -> (Spawned, SocketAddr, Option<SocketAddr>, Option<SocketAddr>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(scratch_dir("cwd"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Killed on drop from here on, also when this function panics.
    let child = Spawned(child);
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let field = |name: &str| -> Option<SocketAddr> {
                let value = line
                    .split(&format!(" {name}="))
                    .nth(1)?
                    .split_whitespace()
                    .next()?;
                value.trim_matches('"').parse().ok()
            };
            if let Some(listen) = field("listen") {
                let _ = tx.send((listen, field("status_api"), field("tls")));
            }
        }
    });
    let (listen, status, tls) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("dispa did not report its address");
    (child, listen, status, tls)
}

pub const BIN: &str = env!("CARGO_BIN_EXE_dispa");

/// The binary, started with `toml`; returns it with the proxy and status addresses.
pub fn spawn_binary(toml: &str) -> (Spawned, SocketAddr, SocketAddr, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "dispa-sig-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dispa.toml");
    std::fs::write(&path, toml).unwrap();
    let (child, listen, status) = spawn_dispa(&[BIN, "-c", path.to_str().unwrap()]);
    (child, listen, status.expect("status API address"), path)
}

pub fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub fn signal(child: &Spawned, sig: i32) {
    // SAFETY: kill(2) on a child process we started and have not reaped.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, sig) }, 0);
}

pub fn wait_exit(child: &mut Spawned, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(s) = child.0.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Run `dispa traffic WHAT --db DB ARGS...` and return what it printed.
pub fn traffic(what: &str, db: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .args(["traffic", what, "--db"])
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
