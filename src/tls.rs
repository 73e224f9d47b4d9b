//! The rustls server configuration: from PEM files (`--tls-cert`,
//! `--tls-key`) or from a certificate made at start (`--tls-self-signed`,
//! kept in memory). rustls with its ring provider; no OpenSSL. What it
//! reports about a finished handshake goes into the Received header.

use rustls::{ProtocolVersion, ServerConfig, ServerConnection};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::fmt::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::{error, fs, io};

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

/// Why TLS could not be set up (a start error, exit 1). Each names the file.
#[derive(Debug)]
pub enum TlsError {
    Read(PathBuf, io::Error),
    NoCertificate(PathBuf),
    BadPem(PathBuf, pem::Error),
    NoKey(PathBuf),
    /// The key does not fit the certificate, or rustls refuses the pair.
    Rejected {
        cert: PathBuf,
        key: PathBuf,
        why: rustls::Error,
    },
    SelfSigned(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            TlsError::NoCertificate(p) => {
                write!(f, "no PEM certificate in {}", p.display())
            }
            TlsError::BadPem(p, e) => write!(f, "malformed PEM in {}: {e}", p.display()),
            TlsError::NoKey(p) => write!(
                f,
                "no PEM private key (PKCS#8, PKCS#1 or SEC1) in {}",
                p.display()
            ),
            TlsError::Rejected { cert, key, why } => write!(
                f,
                "the key in {} does not fit the certificate in {}: {why}",
                key.display(),
                cert.display()
            ),
            TlsError::SelfSigned(why) => {
                write!(f, "cannot make a self-signed certificate: {why}")
            }
        }
    }
}

impl error::Error for TlsError {
    fn source(&self) -> Option<&(dyn error::Error + 'static)> {
        match self {
            TlsError::Read(_, e) => Some(e),
            TlsError::BadPem(_, e) => Some(e),
            TlsError::Rejected { why, .. } => Some(why),
            _ => None,
        }
    }
}

/// A ready server configuration, and the SHA-256 fingerprint of a
/// self-signed certificate (for the start log).
pub struct Tls {
    pub config: Arc<ServerConfig>,
    pub fingerprint: Option<String>,
}

/// Loads or makes the certificate. `host` is `--hostname`.
pub fn load(source: &Source, host: &str) -> Result<Tls, TlsError> {
    match source {
        Source::Files { cert, key } => {
            let chain = read_chain(cert)?;
            let private = read_key(key)?;
            let config = build(chain, private).map_err(|why| TlsError::Rejected {
                cert: cert.clone(),
                key: key.clone(),
                why,
            })?;
            Ok(Tls {
                config,
                fingerprint: None,
            })
        }
        Source::SelfSigned => self_signed(host),
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path).map_err(|e| TlsError::Read(path.to_path_buf(), e))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem(path.to_path_buf(), e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(|e| TlsError::Read(path.to_path_buf(), e))?;
    // Takes the first PKCS#8, PKCS#1 (RSA) or SEC1 (EC) block.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey(path.to_path_buf()),
        e => TlsError::BadPem(path.to_path_buf(), e),
    })
}

/// TLS 1.2 and 1.3 with rustls' safe defaults, ring provider. rustls
/// checks that the key fits the certificate.
// ring, as the issue asks: no C toolchain (aws-lc) in the build. rustls
// 0.23.48 deprecates it only for lacking post-quantum key exchange.
#[allow(deprecated)]
fn build(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// The names a self-signed certificate is made for.
pub fn self_signed_names(host: &str) -> Vec<String> {
    let mut names = vec![host.to_string()];
    for n in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|h| h.eq_ignore_ascii_case(n)) {
            names.push(n.to_string());
        }
    }
    names
}

fn self_signed(host: &str) -> Result<Tls, TlsError> {
    let bad = |e: rcgen::Error| TlsError::SelfSigned(e.to_string());
    // A host name that is not a valid DNS name (rcgen refuses it) is left
    // out; the certificate still names localhost and the loopback addresses.
    let names: Vec<String> = self_signed_names(host)
        .into_iter()
        .filter(|n| rcgen::CertificateParams::new(vec![n.clone()]).is_ok())
        .collect();
    let mut params = rcgen::CertificateParams::new(names).map_err(bad)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host);
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let cert = params.self_signed(&key).map_err(bad)?;
    let der = cert.der().clone();
    let fingerprint = fingerprint(&der);
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = build(vec![der], private).map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    Ok(Tls {
        config,
        fingerprint: Some(fingerprint),
    })
}

/// SHA-256 of a DER certificate as `AB:CD:...`, as `openssl x509
/// -fingerprint -sha256` prints it.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(95);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// `TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384`, for Received, once the
/// handshake is done.
pub fn describe(conn: &ServerConnection) -> Option<String> {
    let version = match conn.protocol_version()? {
        ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    };
    let suite = conn.negotiated_cipher_suite()?.suite();
    Some(format!("{version} with cipher {suite:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_names_cover_loopback_once() {
        assert_eq!(
            self_signed_names("mx.test"),
            ["mx.test", "localhost", "127.0.0.1", "::1"]
        );
        assert_eq!(
            self_signed_names("localhost"),
            ["localhost", "127.0.0.1", "::1"]
        );
    }

    #[test]
    fn self_signed_config_has_a_fingerprint() {
        let tls = load(&Source::SelfSigned, "mx.test").unwrap();
        let fp = tls.fingerprint.unwrap();
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.split(':').all(|b| b.len() == 2));
        // An odd host name still gives a certificate for the loopback names.
        assert!(load(&Source::SelfSigned, "not a dns name!").is_ok());
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "nothing here\n").unwrap();
        let src = Source::Files {
            cert: missing.clone(),
            key: empty.clone(),
        };
        let e = load(&src, "h").err().unwrap().to_string();
        assert!(e.contains("nope.pem"), "{e}");
        let src = Source::Files {
            cert: empty.clone(),
            key: empty.clone(),
        };
        let e = load(&src, "h").err().unwrap().to_string();
        assert!(
            e.starts_with("no PEM certificate in") && e.contains("empty.pem"),
            "{e}"
        );
    }

    #[test]
    fn files_load_and_a_foreign_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let (cert, key, wrong) = (
            dir.path().join("c.pem"),
            dir.path().join("k.pem"),
            dir.path().join("w.pem"),
        );
        fs::write(&cert, made.cert.pem()).unwrap();
        fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        fs::write(&wrong, other.serialize_pem()).unwrap();
        let ok = Source::Files {
            cert: cert.clone(),
            key,
        };
        assert!(load(&ok, "h").is_ok());
        let bad = Source::Files { cert, key: wrong };
        let e = load(&bad, "h").err().unwrap().to_string();
        assert!(e.contains("w.pem") && e.contains("c.pem"), "{e}");
    }
}
