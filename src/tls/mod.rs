//! TLS material, made from the config's PEM files when the config is loaded (on the
//! control thread at start and on reload; never on a worker): the listener's rustls
//! `ServerConfig` and the `ClientConfig`s for `https://` targets. Workers get them ready
//! in the snapshot; a reload with a bad PEM is refused with its path and the old
//! material stays.
//!
//! Choices (docs/CONFIG.md "TLS"): certificates are chosen by SNI among the names in
//! their own subjectAltName (exact names first, then wildcards), the first certificate
//! serves clients without SNI; a client whose SNI names a host Dispa does not intercept
//! is refused in the handshake (alert `access_denied`). Session resumption by tickets
//! (TLS 1.3 and 1.2) from one ticketer for the whole process, so that a resumed client
//! may land on any worker and across reloads; rustls rotates its key every 6 hours.
//! No server-side session cache (it would be a mutex shared by the workers).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::route;

/// Listener and targets use aws-lc-rs (feature `aws-lc`, the default: RSA signatures 1.5x
/// cheaper than ring's, docs/BENCHMARKS.md "HTTPS"), or ring without it.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "aws-lc")]
    return Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    #[cfg(not(feature = "aws-lc"))]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One certificate chain with its key, and the DNS names it holds.
#[derive(Debug)]
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    pub names: Vec<String>,
}

/// An error about the file at `path`, naming it.
fn at(path: &Path, e: &dyn std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// Read a PEM chain (leaf first) and its PEM key. Errors name the file.
pub fn load_certificate(cert: &Path, key: &Path) -> Result<Certificate, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| at(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| at(cert, &e))?;
    let Some(leaf) = chain.first() else {
        return Err(at(cert, &"no certificate in the file"));
    };
    let names = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| at(cert, &e))?
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>();
    if names.is_empty() {
        return Err(at(
            cert,
            &"the certificate holds no DNS name (subjectAltName)",
        ));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| at(key, &e))?;
    let signer = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| at(key, &e))?;
    let certified = CertifiedKey::new(chain, signer);
    if let Err(e) = certified.keys_match() {
        return Err(at(key, &format!("does not match {}: {e}", cert.display())));
    }
    Ok(Certificate {
        key: Arc::new(certified),
        names,
    })
}

/// Certificates by SNI (see the module header).
#[derive(Debug)]
struct BySni {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.test.com` under `test.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    routes: route::Table,
}

impl BySni {
    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = name else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        self.routes.lookup(&name)?;
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        let parent = name.split_once('.').map(|(_, rest)| rest);
        match parent.and_then(|p| self.wildcard.get(p)) {
            Some(k) => Some(k.clone()),
            None => Some(self.default.clone()),
        }
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// The process's ticketer: one for every worker and every reload.
fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, String> {
    static TICKETER: OnceLock<Arc<dyn rustls::server::ProducesTickets>> = OnceLock::new();
    if let Some(t) = TICKETER.get() {
        return Ok(t.clone());
    }
    #[cfg(feature = "aws-lc")]
    let t = rustls::crypto::aws_lc_rs::Ticketer::new();
    #[cfg(not(feature = "aws-lc"))]
    let t = rustls::crypto::ring::Ticketer::new();
    let t = t.map_err(|e| format!("ticketer: {e}"))?;
    Ok(TICKETER.get_or_init(|| t).clone())
}

/// Whether a failed server handshake was Dispa refusing the client's SNI.
pub fn is_refused_sni(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::General(m) if m.contains("certificate chain")))
}

/// The listener's config: `certificates` (the first is the default), refusing names
/// outside `intercept`/`exclude`.
pub fn server_config(
    certificates: Vec<Certificate>,
    intercept: &[String],
    exclude: &[String],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let default = certificates.first().ok_or("no certificate")?.key.clone();
    for c in &certificates {
        for name in &c.names {
            // The first certificate to name a host serves it.
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.entry(parent.to_string()),
                None => exact.entry(name.clone()),
            }
            .or_insert_with(|| c.key.clone());
        }
    }
    let resolver = BySni {
        exact,
        wildcard,
        default,
        routes: route::Table::new(intercept, exclude),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.ticketer = ticketer()?;
    Ok(Arc::new(config))
}

/// The config for `https://` targets: verified against `ca_file` when given, else the
/// system's roots; or, with `verify` false, not verified at all.
pub fn client_config(
    ca_file: Option<&Path>,
    verify: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let mut config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| at(path, &e))? {
                    let cert = cert.map_err(|e| at(path, &e))?;
                    roots.add(cert).map_err(|e| at(path, &e))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
            }
        }
        if roots.is_empty() {
            return Err("no root certificate found to verify https targets".into());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `tls_verify = false`: any certificate is accepted (signatures still checked).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A self-signed certificate for `names` (ECDSA P-256), as PEM (certificate, key): for
/// `dispa demo` and the tests.
pub fn self_signed(names: &[&str]) -> Result<(String, String), String> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    Ok((ck.cert.pem(), ck.key_pair.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dir: &Path, name: &str, names: &[&str]) -> Certificate {
        let (c, k) = self_signed(names).unwrap();
        let (cp, kp) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cp, c).unwrap();
        std::fs::write(&kp, k).unwrap();
        load_certificate(&cp, &kp).unwrap()
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default_and_refuses_hosts_not_intercepted() {
        let dir = std::env::temp_dir().join(format!("dispa-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let default = cert(&dir, "d", &["default.example"]);
        let exact = cert(&dir, "e", &["example.com"]);
        let wild = cert(&dir, "w", &["*.test.com"]);
        let (dk, ek, wk) = (default.key.clone(), exact.key.clone(), wild.key.clone());
        let intercept = [
            "example.com".to_string(),
            "*.test.com".to_string(),
            "other.org".to_string(),
        ];
        let mut exact_map = HashMap::new();
        exact_map.insert("example.com".to_string(), ek.clone());
        let mut wild_map = HashMap::new();
        wild_map.insert("test.com".to_string(), wk.clone());
        let by = BySni {
            exact: exact_map,
            wildcard: wild_map,
            default: dk.clone(),
            routes: route::Table::new(&intercept, &[]),
        };
        assert!(Arc::ptr_eq(&by.pick(Some("EXAMPLE.com")).unwrap(), &ek));
        assert!(Arc::ptr_eq(&by.pick(Some("a.test.com")).unwrap(), &wk));
        assert!(Arc::ptr_eq(&by.pick(Some("other.org")).unwrap(), &dk));
        assert!(Arc::ptr_eq(&by.pick(None).unwrap(), &dk));
        assert!(by.pick(Some("evil.net")).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused_with_its_path() {
        let dir = std::env::temp_dir().join(format!("dispa-tls-mismatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c1, _) = self_signed(&["a.example"]).unwrap();
        let (_, k2) = self_signed(&["b.example"]).unwrap();
        std::fs::write(dir.join("c.pem"), c1).unwrap();
        std::fs::write(dir.join("k.pem"), k2).unwrap();
        let err = load_certificate(&dir.join("c.pem"), &dir.join("k.pem")).unwrap_err();
        assert!(err.contains("k.pem"), "{err}");
        let err = load_certificate(&dir.join("missing.pem"), &dir.join("k.pem")).unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
