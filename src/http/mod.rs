//! The HTTP surface: shared application state, the router with every REST route (documented in
//! OpenAPI by construction: a route exists only through its `#[utoipa::path]`), and the layers
//! around it (CORS, body limit, metrics, JSON errors for everything).

pub mod account;
pub mod admin;
pub mod calls;
pub mod client_ip;
pub mod error;
pub mod extract;
pub mod gate;
pub mod ice;
pub mod ops;
pub mod rooms;
pub mod rtc;
pub mod schema;
pub mod socketio;
pub mod video;
pub mod web;

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Extension, Router};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::Signaling;
use crate::auth::Tokens;
use crate::config::Config;
use crate::error::Error;
use crate::http::gate::ConnectionGate;
use crate::metrics::{Metrics, RequestLabels};
use crate::relay::Relay;
use crate::secrets::Secrets;
use crate::store::Store;

/// Everything handlers share.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub tokens: Tokens,
    pub secrets: Secrets,
    pub metrics: Metrics,
    pub login_limiter: DefaultKeyedRateLimiter<IpAddr>,
    pub signaling: Arc<Signaling>,
    /// Connection caps and per-connection message limits of the socket transports.
    pub gate: Arc<ConnectionGate>,
    /// The embedded STUN/TURN relay, unless `no_turn`.
    pub relay: Option<Arc<Relay>>,
    /// Settings a config reload replaces (CORS origins, TURN secrets).
    pub live: crate::reload::LiveSettings,
    /// TLS of the listeners, when HTTPS is on.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// The HTTPS listener's bound port, which also takes TURN (set once it is bound).
    pub front_port: std::sync::OnceLock<u16>,
}

pub type AppState = Arc<App>;

impl App {
    pub fn new(
        config: Config,
        store: Store,
        secrets: Secrets,
        metrics: Metrics,
        relay: Option<Arc<Relay>>,
        tls: Option<Arc<crate::tls::Tls>>,
    ) -> App {
        let per_minute = std::num::NonZeroU32::new(config.login_rate_per_minute)
            .unwrap_or(std::num::NonZeroU32::MIN);
        App {
            signaling: Signaling::new(store.clone(), config.ring_timeout, config.reconnect_grace),
            gate: ConnectionGate::new(config.socket_limits, metrics.connections.clone()),
            tokens: Tokens::new(&secrets.jwt),
            login_limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            live: crate::reload::LiveSettings::new(&config, secrets.turn.clone()),
            config,
            store,
            secrets,
            metrics,
            relay,
            tls,
            front_port: std::sync::OnceLock::new(),
        }
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        // `/rtc` also takes the token as `?token=`, since browsers cannot set headers there.
        components.add_security_scheme(
            "query_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("token"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "signalbox", description = "Self-hosted video calls: REST API of seeds 000 and 001"),
    modifiers(&BearerAuth),
    components(schemas(schema::ErrorBody, schema::VideoErrorBody))
)]
struct ApiDoc;

/// The REST routes and their OpenAPI description, built from the same declarations (and
/// completed with the standard error answers each operation can give, see [`schema`]).
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(calls::create_call))
        .routes(routes!(calls::history))
        .routes(routes!(calls::get_call))
        .routes(routes!(calls::accept_call))
        .routes(routes!(calls::reject_call))
        .routes(routes!(calls::hangup_call))
        .routes(routes!(calls::mute_audio))
        .routes(routes!(calls::mute_video))
        .routes(routes!(calls::switch_camera))
        .routes(routes!(calls::call_analytics))
        .routes(routes!(calls::post_stats))
        .routes(routes!(rooms::create_room))
        .routes(routes!(rooms::get_room, rooms::delete_room))
        .routes(routes!(rooms::join_room))
        .routes(routes!(rooms::leave_room))
        .routes(routes!(video::create))
        .routes(routes!(video::get))
        .routes(routes!(video::join))
        .routes(routes!(video::end))
        .routes(routes!(ice::get_ice_config))
        .routes(routes!(account::login))
        .routes(routes!(account::me))
        .routes(routes!(admin::live::live))
        .routes(routes!(admin::users::list, admin::users::add))
        .routes(routes!(admin::users::remove))
        .routes(routes!(admin::users::set_password))
        .routes(routes!(admin::quality::quality))
        .routes(routes!(admin::webhooks::webhook_deliveries))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .routes(routes!(rtc::rtc))
        .split_for_parts();
    schema::document_errors(&mut doc);
    (router, doc)
}

/// The complete router with its layers.
pub fn router(app: AppState) -> Router {
    let (routes, doc) = api();
    let doc = Arc::new(doc.to_json().unwrap_or_else(|_| "{}".into()));
    let router = routes
        .fallback(|req: Request| async move {
            match web::asset(req.method(), req.uri()) {
                Some(file) => Ok(file),
                None if req.uri().path().starts_with("/calls") => Err(Error::NotFound("call")),
                None => Err(Error::NotFound("route")),
            }
        })
        // JSON errors first, so seed 000's envelope wraps a JSON error whatever produced it.
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(video::envelope))
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
        .layer(Extension(doc))
        .layer(socketio::layer(app.clone()))
        .layer(middleware::from_fn(socketio::own_request_head))
        .with_state(app.clone());
    // Origins are read on each request, so a config reload changes them; none (the default)
    // allows same-origin use only.
    let live = app.clone();
    router.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                live.live.cors_allows(origin)
            }))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}

/// Counts requests by method, route template and status.
async fn count_requests(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    app.metrics
        .http_requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Whether a response says its body is JSON.
fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let mime = ct.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        })
        .unwrap_or(false)
}

/// Gives error responses that are not ours (axum's bodiless 405, its plain-text rejections such
/// as a path that is not UTF-8) our JSON error shape, keeping their text as the message.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let code = match status.as_u16() {
        400 => "invalid_request",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        _ => "error",
    };
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
