//! The certificate the TLS listeners present: one resolver shared by HTTPS, TURN on the HTTPS
//! port and the relay's own TLS listener, so a renewed or reloaded certificate reaches all of
//! them at once. It serves either a certificate loaded from `tls_cert`/`tls_key` (swapped in
//! live when the files change) or whatever a delegate resolver chooses (the ACME client's,
//! which also answers TLS-ALPN-01 challenges).

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::config::TlsFiles;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("no certificate in {0}")]
    Empty(String),
    #[error("the private key in {path} is not usable: {message}")]
    Key { path: String, message: String },
    #[error("the certificate in {cert} does not match the key in {key}")]
    Mismatch { cert: String, key: String },
}

/// The crypto provider of every TLS configuration here (ring, as the relay uses).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain and its key (PKCS#8, PKCS#1 or SEC1) and checks that they
/// belong together.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, CertError> {
    let cert_path = files.cert.display().to_string();
    let key_path = files.key.display().to_string();
    let read = |path: &Path, e: &dyn std::fmt::Display| CertError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| read(&files.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(&files.cert, &e))?;
    if chain.is_empty() {
        return Err(CertError::Empty(cert_path));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| read(&files.key, &e))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::Key {
            path: key_path.clone(),
            message: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| CertError::Mismatch {
        cert: cert_path,
        key: key_path,
    })?;
    Ok(certified)
}

/// The shared certificate resolver.
#[derive(Default)]
pub struct CertStore {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    delegate: RwLock<Option<Arc<dyn ResolvesServerCert>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl CertStore {
    /// An empty store: handshakes fail until a certificate or a delegate is set.
    pub fn new() -> Arc<CertStore> {
        Arc::new(CertStore::default())
    }

    /// Presents `key` from the next handshake on; connections already open keep theirs.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut current) = self.current.write() {
            *current = Some(key);
        }
    }

    /// Hands every handshake to `resolver` (the ACME client's) from now on.
    pub fn set_delegate(&self, resolver: Arc<dyn ResolvesServerCert>) {
        if let Ok(mut delegate) = self.delegate.write() {
            *delegate = Some(resolver);
        }
    }

    /// The certificate set with [`CertStore::set`], if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let delegate = self.delegate.read().ok().and_then(|d| d.clone());
        match delegate {
            Some(d) => d.resolve(hello),
            None => self.current(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, c.cert.pem()).expect("cert");
        std::fs::write(&files.key, c.signing_key.serialize_pem()).expect("key");
        files
    }

    #[test]
    fn loads_a_matching_pair_and_refuses_a_mismatched_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write_pair(dir.path(), "a.test");
        let b = write_pair(dir.path(), "b.test");
        assert!(load(&a).is_ok());
        let mixed = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        assert!(matches!(load(&mixed), Err(CertError::Mismatch { .. })));
        let missing = TlsFiles {
            cert: dir.path().join("none.crt"),
            key: a.key,
        };
        assert!(matches!(load(&missing), Err(CertError::Read { .. })));
        std::fs::write(&b.cert, "not a pem").expect("write");
        assert!(matches!(load(&b), Err(CertError::Empty(_))));
    }

    #[test]
    fn set_replaces_what_the_store_presents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CertStore::new();
        assert!(store.current().is_none());
        let a = Arc::new(load(&write_pair(dir.path(), "a.test")).expect("a"));
        let b = Arc::new(load(&write_pair(dir.path(), "b.test")).expect("b"));
        store.set(Arc::clone(&a));
        assert_eq!(store.current().expect("a").cert, a.cert);
        store.set(Arc::clone(&b));
        assert_eq!(store.current().expect("b").cert, b.cert);
    }
}
