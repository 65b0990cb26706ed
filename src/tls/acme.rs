//! Certificates by ACME (`acme_domains`): rustls-acme obtains the certificate, answers the CA's
//! challenge (TLS-ALPN-01 on the HTTPS listener, or HTTP-01 on `acme_http_listen`), and renews
//! at two thirds of the lifetime; its resolver becomes the [`CertStore`]'s delegate, so every
//! TLS listener presents the new certificate from the next handshake on while open connections
//! keep theirs. A failed order is retried with exponential backoff (rustls-acme's) while a
//! still valid certificate, cached in `<data_dir>/acme/`, keeps serving. One task drives the
//! ACME state until shutdown and logs each step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use rustls_acme::{AcmeConfig, AcmeState, EventError, EventOk, UseChallenge};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::acme_cache::AcmeCache;
use super::certs::{self, CertStore};
use crate::config::AcmeSettings;

/// Why ACME could not start.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("acme_ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("preparing the ACME cache directory {path}: {source}")]
    Cache {
        path: String,
        source: std::io::Error,
    },
    #[error("binding the ACME HTTP-01 listener on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS client configuration: {0}")]
    Rustls(#[from] tokio_rustls::rustls::Error),
}

/// The TLS client configuration for talking to the ACME server, trusting `ca_file`.
fn client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, AcmeError> {
    let bad = |message: String| AcmeError::CaFile {
        path: ca_file.display().to_string(),
        message,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(Arc::new(
        ClientConfig::builder_with_provider(certs::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Starts ACME for `settings`: the cache in `data_dir/acme/`, the resolver as `store`'s
/// delegate, the HTTP-01 listener when configured (redirecting to https on `https_port`), and
/// the task driving it all until `stop` changes.
pub async fn start(
    settings: &AcmeSettings,
    data_dir: &Path,
    store: &CertStore,
    https_port: u16,
    stop: watch::Receiver<bool>,
) -> Result<(), AcmeError> {
    let dir: PathBuf = data_dir.join("acme");
    let cache = AcmeCache::open(dir.clone()).map_err(|source| AcmeError::Cache {
        path: dir.display().to_string(),
        source,
    })?;
    let challenge = match settings.http_listen {
        Some(_) => UseChallenge::Http01,
        None => UseChallenge::TlsAlpn01,
    };
    let mut config = AcmeConfig::new_with_provider(&settings.domains, certs::provider())
        .directory(&settings.directory)
        .contact(settings.email.iter().map(|e| format!("mailto:{e}")))
        .challenge_type(challenge);
    if let Some(ca_file) = &settings.ca_file {
        config = config.client_tls_config(client_config(ca_file)?);
    }
    let state = config.cache(cache.clone()).state();
    let resolver = state.resolver();
    store.set_delegate(resolver.clone());
    if let Some(addr) = settings.http_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AcmeError::Bind { addr, source })?;
        let local = listener.local_addr().unwrap_or(addr);
        tracing::info!(%local, "ACME HTTP-01 listener started (everything else redirects to https)");
        let fallback_host = settings.domains.first().cloned().unwrap_or_default();
        tokio::spawn(super::http01::serve(
            listener,
            resolver,
            fallback_host,
            https_port,
            stop.clone(),
        ));
    }
    tracing::info!(
        domains = %settings.domains.join(","),
        directory = %settings.directory,
        challenge = if settings.http_listen.is_some() { "http-01" } else { "tls-alpn-01" },
        "ACME on: obtaining or loading the certificate"
    );
    tokio::spawn(drive(state, cache, settings.domains.join(","), stop));
    Ok(())
}

/// `unix` as an RFC 3339 time, for the log.
fn rfc3339(unix: Option<i64>) -> String {
    unix.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Polls the ACME state until `stop`, logging every event.
async fn drive(
    mut state: AcmeState<std::io::Error>,
    cache: AcmeCache,
    domains: String,
    mut stop: watch::Receiver<bool>,
) {
    // A new certificate is logged once it is stored (the event that follows), with its expiry.
    let mut fresh = false;
    let mut failures: u32 = 0;
    loop {
        let event = tokio::select! {
            event = state.next() => event,
            _ = stop.changed() => return,
        };
        let Some(event) = event else { return };
        match event {
            Ok(EventOk::DeployedCachedCert) => tracing::info!(
                %domains,
                expires = %rfc3339(cache.last_expiry()),
                "ACME: cached certificate deployed (renewed at 2/3 of its lifetime)"
            ),
            Ok(EventOk::DeployedNewCert) => {
                failures = 0;
                fresh = true;
            }
            Ok(EventOk::CertCacheStore) if fresh => {
                fresh = false;
                tracing::info!(
                    %domains,
                    expires = %rfc3339(cache.last_expiry()),
                    "ACME: new certificate obtained, deployed and saved"
                );
            }
            Ok(EventOk::CertCacheStore) => {}
            Ok(EventOk::AccountCacheStore) => tracing::info!("ACME: account key created and saved"),
            Err(e) => {
                if matches!(e, EventError::Order(_)) {
                    failures += 1;
                }
                if std::mem::take(&mut fresh) {
                    tracing::info!(%domains, "ACME: new certificate obtained and deployed");
                }
                tracing::error!(
                    %domains,
                    consecutive_failures = failures,
                    "ACME: {e} (retried with exponential backoff; a valid certificate keeps serving)"
                );
            }
        }
    }
}
