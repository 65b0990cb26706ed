//! The plain HTTP listener of `acme_http_listen` (port 80): it answers the CA's HTTP-01
//! challenges at `/.well-known/acme-challenge/{token}` with the key authorization rustls-acme
//! holds for that token, and sends everything else to the same path over https with a 308,
//! so a visitor typing the bare name lands on the HTTPS listener.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rustls_acme::ResolvesServerCertAcme;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone)]
struct Http01 {
    resolver: Arc<ResolvesServerCertAcme>,
    /// The host redirected to when a request names none usable (the first ACME domain).
    fallback_host: String,
    https_port: u16,
}

async fn challenge(State(s): State<Http01>, Path(token): Path<String>) -> Response {
    match s.resolver.get_http_01_key_auth(&token) {
        Some(key_auth) => ([(header::CONTENT_TYPE, "text/plain")], key_auth).into_response(),
        None => (StatusCode::NOT_FOUND, "no such ACME challenge\n").into_response(),
    }
}

/// Where `https://` the request goes: its host without the port, the HTTPS port unless 443.
fn https_location(s: &Http01, headers: &HeaderMap, uri: &Uri) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .map(|a| a.host().to_string())
        .unwrap_or_else(|| s.fallback_host.clone());
    let port = match s.https_port {
        443 => String::new(),
        p => format!(":{p}"),
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("https://{host}{port}{path}")
}

async fn redirect(State(s): State<Http01>, headers: HeaderMap, uri: Uri) -> Response {
    let location = https_location(&s, &headers, &uri);
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, location)],
        "this server speaks HTTPS\n",
    )
        .into_response()
}

/// Serves HTTP-01 on `listener` until `stop` changes.
pub async fn serve(
    listener: TcpListener,
    resolver: Arc<ResolvesServerCertAcme>,
    fallback_host: String,
    https_port: u16,
    mut stop: watch::Receiver<bool>,
) {
    let router = Router::new()
        .route("/.well-known/acme-challenge/{token}", get(challenge))
        .fallback(redirect)
        .with_state(Http01 {
            resolver,
            fallback_host,
            https_port,
        });
    let stopped = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!(error = %e, "the ACME HTTP-01 listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_host_and_path_and_name_the_https_port() {
        let s = |port| Http01 {
            resolver: rustls_acme::AcmeConfig::new(["a.example"])
                .state()
                .resolver(),
            fallback_host: "a.example".into(),
            https_port: port,
        };
        let uri: Uri = "/call?x=1".parse().expect("uri");
        let mut headers = HeaderMap::new();
        assert_eq!(
            https_location(&s(443), &headers, &uri),
            "https://a.example/call?x=1"
        );
        headers.insert(header::HOST, "b.example:80".parse().expect("host"));
        assert_eq!(
            https_location(&s(443), &headers, &uri),
            "https://b.example/call?x=1"
        );
        assert_eq!(
            https_location(&s(8443), &headers, &uri),
            "https://b.example:8443/call?x=1"
        );
    }
}
