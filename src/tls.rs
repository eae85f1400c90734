//! rustls configurations, all on the aws-lc-rs provider: the server side
//! (ALPN `h2`, `http/1.1`) and the client side for key fetches and the
//! upstream (web PKI roots plus an optional CA file).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_error(path, e))?;
    parse_certs(&pem, path)
}

/// Every certificate in PEM text read from `path`.
fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate found"));
    }
    Ok(certs)
}

/// The server's certificate and key, replaceable while serving: each new
/// handshake takes the current pair; open connections keep theirs.
#[derive(Debug)]
pub struct ServerCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The files' bytes behind `current`, to tell a real change.
    loaded: Mutex<PemFiles>,
}

impl ServerCert {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let bytes = read_files(cert, key)?;
        let certified = certified_key(&bytes, cert, key)?;
        Ok(Arc::new(Self {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            current: ArcSwap::from_pointee(certified),
            loaded: Mutex::new(bytes),
        }))
    }

    /// Reads the files again; swaps in a new valid pair. `Ok(false)` when
    /// the files did not change. A bad pair keeps the current one.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let bytes = read_files(&self.cert_path, &self.key_path)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if *loaded == bytes {
            return Ok(false);
        }
        let certified = certified_key(&bytes, &self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(certified));
        *loaded = bytes;
        Ok(true)
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The certificate file's and the key file's bytes.
type PemFiles = (Vec<u8>, Vec<u8>);

fn read_files(cert: &Path, key: &Path) -> Result<PemFiles, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| file_error(p, e));
    Ok((read(cert)?, read(key)?))
}

/// A certificate chain and its private key (the files' bytes), checked to
/// belong together.
fn certified_key(pem: &PemFiles, cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = parse_certs(&pem.0, cert)?;
    let private = PrivateKeyDer::from_pem_slice(&pem.1).map_err(|e| file_error(key, e))?;
    let signing = provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| file_error(key, e))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| file_error(key, format!("does not match the certificate: {e}")))?;
    Ok(certified)
}

/// A server config for the main listener, offering HTTP/2 and HTTP/1.1.
pub fn server_config(cert: Arc<ServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client config trusting the web PKI roots plus `ca_file`. ALPN is left
/// empty: the hyper-rustls connector sets it from the enabled versions.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|e| file_error(path, e))?;
        }
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
