//! TLS with rustls, both ways.
//!
//! - Serving: [`ServerTls`] holds the certificate chain and key of
//!   `server.tls_cert` / `server.tls_key` (PEM). Both listeners (relay and
//!   control API) take their handshakes from it; [`ServerTls::reload`]
//!   (SIGHUP) reads the files again and swaps the certificate for new
//!   connections, keeping the old one when the new files are bad.
//! - Dialling: [`client_connector`] trusts the web PKI roots plus the
//!   certificates of `server.tls_roots` (a private CA, a peer's self-signed
//!   certificate). Trust is a process setting: `serve` and `sync` set the
//!   extra roots once at start ([`trust_extra_roots`]), before anything
//!   dials; the sync client, graph forwarding, asset fetches and the HTTP
//!   client all use the same connector.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate, key or root file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("this process already trusts other extra roots (server.tls_roots is one per process)")]
    RootsAlreadySet,
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The certificate and key a listener serves, reloadable.
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl ServerTls {
    /// Reads `cert` (the chain, leaf first) and `key` (PKCS#8, PKCS#1 or
    /// SEC1) and checks that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let config = server_config(cert, key)?;
        Ok(ServerTls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads the files again; new handshakes use them. On error the
    /// certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write() = Arc::new(config);
        Ok(())
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().clone())
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Certificates trusted besides the web PKI roots (`server.tls_roots`).
static EXTRA_ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();

/// The client configuration, built on first use.
static CLIENT: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();

/// Trusts the certificates in `path` as roots, besides the web PKI's.
/// Called at start; an empty path trusts the web PKI only. A second call
/// (several nodes in one process) must name the same certificates.
pub fn trust_extra_roots(path: &str) -> Result<(), TlsError> {
    let certs = match path.trim() {
        "" => Vec::new(),
        path => certificates(Path::new(path))?,
    };
    let held = EXTRA_ROOTS.get_or_init(|| certs.clone());
    match *held == certs {
        true => Ok(()),
        false => Err(TlsError::RootsAlreadySet),
    }
}

/// The connector every outgoing TLS connection uses.
pub fn client_connector() -> Result<tokio_rustls::TlsConnector, String> {
    client_config().map(tokio_rustls::TlsConnector::from)
}

/// The configuration behind [`client_connector`] (the HTTP client takes it
/// by value).
pub fn client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    CLIENT
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            for cert in EXTRA_ROOTS.get().into_iter().flatten() {
                roots.add(cert.clone()).map_err(|e| e.to_string())?;
            }
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
}
