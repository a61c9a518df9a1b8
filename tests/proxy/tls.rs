//! HTTPS (issue 14) over real sockets, with certificates made here: SNI selection, refused
//! names, 421, resumption, a certificate reload under load, `https://` targets with good
//! and bad certificates, a stalled handshake, and the smuggling table over TLS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::harness::*;

pub type TlsConn = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A certificate (self-signed, ECDSA P-256) for `names`, written to `dir/<file>.pem|.key`.
fn make_cert(dir: &Path, file: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting the certificates in `roots` (PEM files).
pub fn client_config(roots: &[&Path]) -> Arc<rustls::ClientConfig> {
    client_config_with(roots, rustls::DEFAULT_VERSIONS)
}

fn client_config_with(
    roots: &[&Path],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        for c in CertificateDer::pem_file_iter(r).unwrap() {
            store.add(c.unwrap()).unwrap();
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Connect to `addr` with `sni` and complete the handshake.
fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    cfg: &Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsConn> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

pub fn tls_client(addr: SocketAddr, sni: &str, cfg: &Arc<rustls::ClientConfig>) -> Client<TlsConn> {
    Client::from_stream(tls_connect(addr, sni, cfg).expect("TLS handshake"))
}

/// The DNS names of the certificate the server presented.
fn served_names(s: &TlsConn) -> Vec<String> {
    let leaf = &s.conn.peer_certificates().unwrap()[0];
    webpki::EndEntityCert::try_from(leaf)
        .unwrap()
        .valid_dns_names()
        .map(str::to_string)
        .collect()
}

/// `[server.tls]` on 127.0.0.1:0 with these (cert, key) files, first = default.
fn tls_section(certs: &[&(PathBuf, PathBuf)], extra: &str) -> String {
    let mut s = format!("[server.tls]\nbind = \"127.0.0.1:0\"\n{extra}\n");
    for (c, k) in certs {
        s += &format!(
            "[[server.tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            c.display(),
            k.display()
        );
    }
    s
}

/// Put `section` right after the `[server]` table of a harness config.
fn with_server_section(config: String, section: &str) -> String {
    config.replacen("[domains]", &format!("{section}[domains]"), 1)
}

fn tls_proxy(
    backend: SocketAddr,
    certs: &[&(PathBuf, PathBuf)],
    extra: &str,
) -> (dispa::boot::Running, SocketAddr) {
    let cfg = with_server_section(
        config(&[backend], "round_robin", ""),
        &tls_section(certs, extra),
    );
    let p = proxy(&cfg);
    let addr = p.tls_addr().expect("TLS listener");
    (p, addr)
}

/// Dispa with one certificate for `names`, its backend, and a client config trusting it.
struct OneCert {
    _proxy: dispa::boot::Running,
    addr: SocketAddr,
    b: Backend,
    trust: Arc<rustls::ClientConfig>,
}

fn one_cert(what: &str, names: &[&str], extra: &str) -> OneCert {
    let cert = make_cert(&scratch_dir(what), "c", names, false);
    let b = Backend::named("b");
    let (proxy, addr) = tls_proxy(b.addr, &[&cert], extra);
    let trust = client_config(&[&cert.0]);
    OneCert {
        _proxy: proxy,
        addr,
        b,
        trust,
    }
}

#[test]
fn sni_picks_the_exact_then_the_wildcard_certificate_and_the_default_without_sni() {
    let dir = scratch_dir("tls-sni");
    let default = make_cert(&dir, "default", &["default.example"], false);
    let exact = make_cert(&dir, "exact", &["example.com"], false);
    let wild = make_cert(&dir, "wild", &["*.test.com"], false);
    let b = Backend::named("b");
    let (_p, addr) = tls_proxy(b.addr, &[&default, &exact, &wild], "");
    let trust = client_config(&[&default.0, &exact.0, &wild.0]);

    let mut c = tls_client(addr, "example.com", &trust);
    assert_eq!(served_names(&c.stream), ["example.com"]);
    let r = c.get("example.com", "/x");
    assert_eq!(r.status, 200);
    let seen = b.last();
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));

    let c = tls_client(addr, "a.test.com", &trust);
    assert_eq!(served_names(&c.stream), ["*.test.com"]);

    // No SNI (an IP address as the server name sends none): the first certificate.
    let mut no_sni = (*trust).clone();
    no_sni.enable_sni = false;
    let c = tls_client(addr, "default.example", &Arc::new(no_sni));
    assert_eq!(served_names(&c.stream), ["default.example"]);
}

#[test]
fn tls_12_and_13_both_serve_and_alpn_says_http_1_1() {
    let dir = scratch_dir("tls-versions");
    let cert = make_cert(&dir, "c", &["example.com"], false);
    let b = Backend::named("b");
    let (_p, addr) = tls_proxy(b.addr, &[&cert], "");
    let trust = client_config(&[&cert.0]);
    let mut c = tls_client(addr, "example.com", &trust);
    assert_eq!(
        c.stream.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(c.stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(c.get("example.com", "/").status, 200);
    let tls12 = client_config_with(&[&cert.0], &[&rustls::version::TLS12]);
    let mut c = tls_client(addr, "example.com", &tls12);
    assert_eq!(
        c.stream.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(c.get("example.com", "/").status, 200);
    // A client that offers only h2 is refused (Dispa speaks HTTP/1.1).
    let mut h2 = (*trust).clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    assert!(tls_connect(addr, "example.com", &Arc::new(h2)).is_err());
}

#[test]
fn a_name_that_is_not_intercepted_is_refused_in_the_handshake_and_recorded() {
    let dir = scratch_dir("tls-refused");
    let cert = make_cert(&dir, "c", &["example.com", "evil.net"], false);
    let b = Backend::named("b");
    let records = scratch_dir("tls-refused-records");
    let cfg = config(&[b.addr], "round_robin", &logging_section(&records));
    let p = proxy(&with_server_section(cfg, &tls_section(&[&cert], "")));
    let trust = client_config(&[&cert.0]);
    let Err(err) = tls_connect(p.tls_addr().unwrap(), "evil.net", &trust) else {
        panic!("the handshake for evil.net succeeded");
    };
    assert!(err.to_string().contains("AccessDenied"), "{err}");
    assert!(b.requests().is_empty());
    drop(p); // a clean stop writes every record
    let out = traffic(
        "sql",
        &records.join("traffic.db"),
        &["SELECT scheme, sni, error FROM requests"],
    );
    assert!(
        out.contains("https") && out.contains("evil.net") && out.contains("tls_refused"),
        "{out}"
    );
}

#[test]
fn a_host_outside_the_connections_sni_gets_421_and_nothing_is_forwarded() {
    let OneCert { addr, b, trust, .. } = &one_cert("tls-421", &["example.com", "*.test.com"], "");
    let mut c = tls_client(*addr, "example.com", trust);
    let r = c.get("a.test.com", "/");
    assert_eq!(r.status, 421);
    assert!(b.requests().is_empty());
    // The same connection still serves its own name.
    assert_eq!(c.get("EXAMPLE.com", "/ok").status, 200);
}

#[test]
fn bodies_of_every_size_arrive_exact_over_tls() {
    let b = sized_backend();
    let cert = make_cert(&scratch_dir("tls-bodies"), "c", &["example.com"], false);
    let (_p, addr) = tls_proxy(b.addr, &[&cert], "");
    let mut c = tls_client(addr, "example.com", &client_config(&[&cert.0]));
    check_sizes(&mut c, &[5, 4097, 16 * 1024, 64 * 1024, 300 * 1024]);
}

#[test]
fn a_second_connection_resumes_the_session() {
    let OneCert { addr, trust, .. } = &one_cert("tls-resume", &["example.com"], "");
    let (addr, trust) = (*addr, trust.clone());
    let mut first = tls_client(addr, "example.com", &trust);
    assert_eq!(
        first.stream.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    // Reading a response also reads the session tickets sent after the handshake.
    assert_eq!(first.get("example.com", "/").status, 200);
    let mut second = tls_client(addr, "example.com", &trust);
    assert_eq!(
        second.stream.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    assert_eq!(second.get("example.com", "/").status, 200);
}

#[test]
fn a_reload_swaps_the_certificate_under_load_without_a_failed_request() {
    let dir = scratch_dir("tls-reload");
    let old = make_cert(&dir, "old", &["example.com"], false);
    let new = make_cert(&dir, "new", &["example.com", "new.example.com"], false);
    let b = Backend::named("b");
    let base = format!("{}{MONITORING}", config(&[b.addr], "round_robin", ""));
    // A fixed TLS port: the listener is bound at start and kept across reloads.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let section = |c: &(PathBuf, PathBuf)| {
        format!(
            "[server.tls]\nbind = \"127.0.0.1:{port}\"\n[[server.tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            c.0.display(),
            c.1.display()
        )
    };
    let ctl = controlled(&with_server_section(base.clone(), &section(&old)));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let trust = client_config(&[&old.0, &new.0]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed, trust) = (stop.clone(), ok.clone(), failed.clone(), trust.clone());
        thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                let good = tls_connect(addr, "example.com", &trust)
                    .map(|s| Client::from_stream(s).get("example.com", "/").status == 200)
                    .unwrap_or(false);
                let counter = if good { &ok } else { &failed };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    std::fs::write(&ctl.path, with_server_section(base.clone(), &section(&new))).unwrap();
    assert_eq!(call(ctl.status, "POST", "/reload").status, 200);
    // A fresh client config each time: a resumed session shows the certificate of the
    // session it resumed.
    let swapped = eventually(Duration::from_secs(5), || {
        tls_connect(addr, "example.com", &client_config(&[&old.0, &new.0]))
            .map(|s| served_names(&s).contains(&"new.example.com".to_string()))
            .unwrap_or(false)
    });
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    assert!(swapped, "new handshakes still get the old certificate");
    assert!(ok.load(Ordering::SeqCst) > 10);
    assert_eq!(failed.load(Ordering::SeqCst), 0);

    // A bad PEM is refused with its path; the certificate in use stays.
    let bad = dir.join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let broken = (bad.clone(), new.1.clone());
    std::fs::write(&ctl.path, with_server_section(base, &section(&broken))).unwrap();
    let r = call(ctl.status, "POST", "/reload");
    assert_ne!(r.status, 200);
    assert!(r.text().contains("bad.pem"), "{}", r.text());
    let s = tls_connect(addr, "example.com", &client_config(&[&new.0])).unwrap();
    assert!(served_names(&s).contains(&"new.example.com".to_string()));
}

/// A TLS backend: answers every request with `200 ok` (keep-alive), counting requests.
struct TlsBackend {
    addr: SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl TlsBackend {
    fn start(cert: &(PathBuf, PathBuf)) -> TlsBackend {
        let chain: Vec<_> = CertificateDer::pem_file_iter(&cert.0)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&cert.1).unwrap();
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        thread::spawn(move || {
            for tcp in l.incoming() {
                let Ok(tcp) = tcp else { return };
                let (cfg, seen) = (cfg.clone(), s2.clone());
                thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(cfg).unwrap();
                    let mut s = rustls::StreamOwned::new(conn, tcp);
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) =
                            read_until(&mut s, &mut buf, |b| find(b, b"\r\n\r\n").map(|i| i + 4))
                        else {
                            return;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end);
                        seen.lock().unwrap().push(head);
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(reply).is_err() || s.flush().is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TlsBackend { addr, seen }
    }
}

/// Dispa forwarding example.com to `https://localhost:PORT` (checked against `ca`).
fn https_target_proxy(backend: SocketAddr, ca: &Path, records: &Path) -> dispa::boot::Running {
    let toml = format!(
        "[server]\nbind = \"127.0.0.1:0\"\n[domains]\nintercept_domains = [\"example.com\"]\n\
         [[targets.targets]]\nname = \"tls\"\nurl = \"https://localhost:{}\"\n\
         [targets.health_check]\nenabled = false\n[upstream]\nca_file = \"{}\"\n{}",
        backend.port(),
        ca.display(),
        logging_section(records)
    );
    proxy(&toml)
}

#[test]
fn https_targets_are_verified_pooled_and_a_bad_certificate_is_a_502_with_its_reason() {
    let dir = scratch_dir("tls-targets");
    let good = make_cert(&dir, "good", &["localhost"], false);
    let expired = make_cert(&dir, "expired", &["localhost"], true);
    let wrong = make_cert(&dir, "wrong", &["other.example"], false);
    let records = scratch_dir("tls-targets-records");

    let b = TlsBackend::start(&good);
    let p = https_target_proxy(b.addr, &good.0, &records);
    let mut c = Client::connect(p.local_addr());
    for _ in 0..3 {
        let r = c.get("example.com", "/");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
    assert_eq!(b.seen.lock().unwrap().len(), 3);
    drop(p);

    for (cert, what) in [(&expired, "expired"), (&wrong, "wrong name")] {
        let b = TlsBackend::start(cert);
        let p = https_target_proxy(b.addr, &cert.0, &records);
        let r = get(p.local_addr(), "example.com", "/");
        assert_eq!(r.status, 502, "{what}");
        assert!(b.seen.lock().unwrap().is_empty(), "{what}");
    }
    let out = traffic(
        "sql",
        &records.join("traffic.db"),
        &["SELECT status, error FROM requests ORDER BY ts_ms"],
    );
    assert_eq!(out.matches("upstream_tls").count(), 2, "{out}");
}

#[test]
fn a_client_that_stalls_in_the_handshake_is_closed_and_does_not_hold_the_worker() {
    let t = one_cert(
        "tls-stall",
        &["example.com"],
        "handshake_timeout = \"300ms\"",
    );
    let addr = t.addr;
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Meanwhile others are served.
    let mut c = tls_client(addr, "example.com", &t.trust);
    assert_eq!(c.get("example.com", "/").status, 200);
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let n = stalled.read(&mut byte).unwrap_or(0);
    assert_eq!(n, 0, "the stalled connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn the_smuggling_table_is_refused_the_same_over_tls() {
    let t = one_cert("tls-smuggling", &["example.com"], "");
    let wrong =
        super::smuggling::check_rejected(&t.b, || tls_client(t.addr, "example.com", &t.trust));
    assert!(wrong.is_empty(), "{wrong:#?}");
}
