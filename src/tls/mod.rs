//! TLS for signalbox's own listeners: the certificate they present ([`certs`]), reloaded when
//! its files change ([`files`]), and the HTTPS listener that also takes TURN over TLS and plain
//! TURN over TCP on the same port ([`front`], deciding by [`sniff`]); or the certificate comes
//! from an ACME CA instead of files ([`acme`], answering HTTP-01 on [`http01`]).

pub mod acme;
mod acme_cache;
pub mod certs;
pub mod files;
pub mod front;
mod http01;
mod rewind;
pub mod sniff;

use std::sync::Arc;

use tokio_rustls::rustls::ServerConfig;

use self::certs::{CertError, CertStore};
use self::files::CertFiles;
use crate::config::TlsFiles;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] tokio_rustls::rustls::Error),
}

/// The TLS configurations of every listener, all presenting the certificate of one
/// [`CertStore`], each offering its own ALPN ids.
#[derive(Debug)]
pub struct Tls {
    pub certs: Arc<CertStore>,
    /// Set when the certificate comes from `tls_cert`/`tls_key`.
    pub files: Option<Arc<CertFiles>>,
    http: Arc<ServerConfig>,
    turn: Arc<ServerConfig>,
    any: Arc<ServerConfig>,
    challenge: Arc<ServerConfig>,
}

fn config(certs: &Arc<CertStore>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let mut c = ServerConfig::builder_with_provider(certs::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(certs) as _);
    c.alpn_protocols = alpn.iter().map(|id| id.to_vec()).collect();
    Ok(Arc::new(c))
}

impl Tls {
    /// TLS presenting whatever `certs` resolves (a delegate such as the ACME client's).
    pub fn new(certs: Arc<CertStore>) -> Result<Tls, TlsError> {
        Ok(Tls {
            http: config(&certs, &[sniff::ALPN_HTTP1])?,
            turn: config(&certs, &[sniff::ALPN_TURN])?,
            any: config(&certs, &[])?,
            challenge: config(&certs, &[sniff::ALPN_ACME])?,
            certs,
            files: None,
        })
    }

    /// TLS presenting the certificate in `files`, reloaded when they change.
    pub fn from_files(files: &TlsFiles) -> Result<Tls, TlsError> {
        let certs = CertStore::new();
        let watched = CertFiles::open(Arc::clone(&certs), files.clone())?;
        Ok(Tls {
            files: Some(watched),
            ..Tls::new(certs)?
        })
    }

    /// For the relay's own TLS listener (`turn_tls_listen`): no ALPN required, so TURN clients
    /// that offer none (most do not) or `stun.turn` both connect.
    pub fn relay_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.any)
    }
}
