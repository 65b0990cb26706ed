//! TLS for `turns:`: loads the PEM certificate chain and key named in the config into a rustls
//! acceptor (ring provider, TLS 1.2 and 1.3).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::error::TurnError;

/// Builds the acceptor from PEM files.
pub(crate) fn acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, TurnError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| TurnError::Tls(format!("{}: {e}", cert_path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TurnError::Tls(format!("{}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(TurnError::Tls(format!(
            "{}: no certificate found",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| TurnError::Tls(format!("{}: {e}", key_path.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TurnError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TurnError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
