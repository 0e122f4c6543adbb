//! TLS from a certificate chain and key in PEM files (rustls with ring).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// A loaded certificate and key.
#[derive(Clone)]
pub struct Tls {
    /// For the Postgres side (tokio-rustls).
    pub server: Arc<rustls::ServerConfig>,
    /// The PEM texts, for tonic's identity and SCRAM channel binding.
    pub cert_pem: Vec<u8>,
    /// The key's PEM text.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// Installs ring as the process's rustls provider (both ring and aws-lc-rs are linked,
/// so rustls cannot choose one itself); a provider already installed is kept.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Tls(format!("{what} {}: {e}", path.display())))?;
    if meta.len() > 1 << 20 {
        return Err(Error::Tls(format!(
            "{what} {}: {} bytes is not a PEM file",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| Error::Tls(format!("{what} {}: {e}", path.display())))
}

impl Tls {
    /// Loads `cert` (a PEM chain, leaf first) and `key` (PKCS#8, PKCS#1 or SEC1 PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Self> {
        install_provider();
        let cert_pem = read(cert, "certificate")?;
        let key_pem = read(key, "key")?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Tls(format!("certificate {}: {e}", cert.display())))?;
        if certs.is_empty() {
            return Err(Error::Tls(format!(
                "certificate {}: no CERTIFICATE block",
                cert.display()
            )));
        }
        let private = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| Error::Tls(format!("key {}: {e}", key.display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, private)
            .map_err(|e| {
                Error::Tls(format!(
                    "{} and {} do not make a usable certificate and key: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
        server.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Tls {
            server: Arc::new(server),
            cert_pem,
            key_pem,
        })
    }
}
