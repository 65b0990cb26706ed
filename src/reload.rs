//! Reloading the configuration without a restart (SIGHUP, `systemctl reload`): which changed
//! settings apply live and which need a restart ([`changes`], pure), the settings that live
//! parts of the server read on every use ([`LiveSettings`]), and applying a new configuration
//! to a running server ([`apply`]). Connections stay open throughout.

use std::sync::{Mutex, OnceLock, RwLock};

use axum::http::HeaderValue;

use crate::config::Config;
use crate::http::App;
use crate::secrets;

/// A setting, by its key, and how to read it off a [`Config`] for comparison.
type Key = (&'static str, fn(&Config) -> String);

/// `"key" => field.path` reads `c.field.path`; `"key" => opt?.field` reads `field` inside the
/// `Option` `c.opt` (`None` when it is unset).
macro_rules! keys {
    ($($name:literal => $($field:ident).+ $(?. $($inner:ident).+)?),* $(,)?) => {
        &[$(($name, |c: &Config| format!("{:?}", keys!(@read c, $($field).+ $(?. $($inner).+)?)))),*]
    };
    (@read $c:ident, $($field:ident).+) => { $c.$($field).+ };
    (@read $c:ident, $($field:ident).+ ?. $($inner:ident).+) => {
        $c.$($field).+.as_ref().map(|o| &o.$($inner).+)
    };
}

/// Settings a reload applies to the running server.
const LIVE: &[Key] = keys![
    "cors_origins" => cors_origins,
    "tls_cert" => tls,
    "log_level" => log_level,
    "max_connections" => socket_limits.max_connections,
    "max_connections_per_user" => socket_limits.max_connections_per_user,
    "socket_rate_per_second" => socket_limits.rate_per_second,
    "socket_rate_burst" => socket_limits.rate_burst,
    "turn_secret" => turn.secrets,
    "turn_allow_peer" => turn.allow_peers,
    "webhook_urls" => webhooks.urls,
    "webhook_secret" => webhooks.secret,
    "webhook_max_age" => webhooks.max_age,
];

/// Settings that take effect only after a restart (listeners, storage, timers, ...).
const RESTART: &[Key] = keys![
    "listen" => listen,
    "data_dir" => data_dir,
    "database_url" => database_url,
    "redis_url" => redis_url,
    "node_name" => node_name,
    "public_host" => public_host,
    "acme_domains" => acme?.domains,
    "acme_email" => acme?.email,
    "acme_directory" => acme?.directory,
    "acme_ca_file" => acme?.ca_file,
    "acme_http_listen" => acme?.http_listen,
    "log_format" => log_format,
    "max_body_bytes" => max_body_bytes,
    "ring_timeout" => ring_timeout,
    "reconnect_grace" => reconnect_grace,
    "heartbeat_timeout" => heartbeat_timeout,
    "jwt_secret" => jwt_secret,
    "token_ttl" => token_ttl,
    "login_rate_per_minute" => login_rate_per_minute,
    "trusted_proxies" => trusted_proxies,
    "no_turn" => turn.enabled,
    "turn_listen" => turn.listen,
    "turn_tls_listen" => turn.tls_listen,
    "turn_default_relay_family" => turn.default_relay_family,
    "relay_ports" => turn.relay_ports,
    "turn_realm" => turn.realm,
    "turn_credential_ttl" => turn.credential_ttl,
    "turn_external_ip" => turn.external_ip,
    "turn_user_quota" => turn.user_quota,
    "turn_total_quota" => turn.total_quota,
    "turn_max_bitrate" => turn.max_bitrate,
    "turn_external_urls" => turn.external_urls,
    "no_sfu" => sfu.enabled,
    "sfu_listen" => sfu.listen,
    "sfu_external_ip" => sfu.external_ip,
    "sfu_threshold" => sfu.threshold,
    "webhook_timeout" => webhooks.timeout,
];

/// What a reload found changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Applied to the running server.
    pub live: Vec<&'static str>,
    /// Changed in the file, but in force only after a restart.
    pub restart: Vec<&'static str>,
}

fn changed(keys: &[Key], old: &Config, new: &Config) -> Vec<&'static str> {
    keys.iter()
        .filter(|(_, read)| read(old) != read(new))
        .map(|(name, _)| *name)
        .collect()
}

/// What differs between the settings in force (`applied`: the last applied live settings;
/// `started`: the configuration the server started with) and `new`.
pub fn changes(applied: &Config, started: &Config, new: &Config) -> Changes {
    Changes {
        live: changed(LIVE, applied, new),
        restart: changed(RESTART, started, new),
    }
}

/// The settings the server reads on every use, so a reload can replace them.
#[derive(Debug)]
pub struct LiveSettings {
    cors: RwLock<Vec<HeaderValue>>,
    turn_secrets: RwLock<Vec<Vec<u8>>>,
    /// The webhook worker's key and retry policy, once it runs.
    webhooks: OnceLock<crate::webhooks::worker::LiveSettings>,
    /// The configuration whose live settings are in force.
    applied: Mutex<Config>,
}

fn origins(config: &Config) -> Vec<HeaderValue> {
    config
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect()
}

impl LiveSettings {
    pub fn new(config: &Config, turn_secrets: Vec<Vec<u8>>) -> LiveSettings {
        LiveSettings {
            cors: RwLock::new(origins(config)),
            turn_secrets: RwLock::new(turn_secrets),
            webhooks: OnceLock::new(),
            applied: Mutex::new(config.clone()),
        }
    }

    /// Whether a browser on `origin` may call the API (`cors_origins`).
    pub fn cors_allows(&self, origin: &HeaderValue) -> bool {
        self.cors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(origin)
    }

    /// Hands over the running webhook worker's settings, for reloads.
    pub fn attach_webhooks(&self, settings: crate::webhooks::worker::LiveSettings) {
        let _ = self.webhooks.set(settings);
    }

    /// The TURN REST secrets in force (the first signs).
    pub fn turn_secrets(&self) -> Vec<Vec<u8>> {
        self.turn_secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Applies the live settings of `new` to the running server; returns what changed. Nothing is
/// applied when a setting cannot be (a bad log filter, the database refusing the new webhook
/// receivers): the old ones stay in force. Reloads run one at a time (one SIGHUP task).
pub async fn apply(app: &App, new: &Config) -> Result<Changes, String> {
    let live = &app.live;
    let mut changes = {
        let applied = live.applied.lock().unwrap_or_else(|p| p.into_inner());
        changes(&applied, &app.config, new)
    };
    // Certificate files are read again on every reload, changed or not (a renewal replaces
    // them in place). Turning HTTPS on or off needs a restart (listeners change).
    let cert_files = app.tls.as_ref().and_then(|t| t.files.as_ref());
    let cert_reload = match (cert_files, &new.tls) {
        (Some(files), Some(paths)) => Some((files, paths)),
        _ => {
            if let Some(i) = changes.live.iter().position(|k| *k == "tls_cert") {
                changes.live.remove(i);
                changes.restart.push("tls_cert");
            }
            None
        }
    };
    if changes.live.is_empty() {
        if let Some((files, paths)) = cert_reload {
            files.reload(paths).map_err(|e| format!("tls_cert: {e}"))?;
        }
        return Ok(changes);
    }
    let is_changed = |key: &str| changes.live.contains(&key);
    // Everything that can fail first, so a refused reload changes nothing. The certificate
    // reload comes after the checks: it is in force the moment it succeeds.
    if is_changed("log_level") {
        tracing_subscriber::EnvFilter::try_new(&new.log_level)
            .map_err(|e| format!("log_level: {e}"))?;
    }
    // Only a changed `turn_secret` is resolved again (an empty one reads the generated file).
    let turn_secrets = if is_changed("turn_secret") {
        let resolved = secrets::resolve(
            &app.config.data_dir,
            app.config.jwt_secret.as_deref(),
            &new.turn.secrets,
        )
        .map_err(|e| format!("turn_secret: {e}"))?;
        Some(resolved.turn)
    } else {
        None
    };
    if let Some((files, paths)) = cert_reload {
        files.reload(paths).map_err(|e| format!("tls_cert: {e}"))?;
    }
    if is_changed("webhook_urls") {
        let urls = new.webhooks.urls.clone();
        let failed = app
            .store
            .reload_webhook_endpoints(urls)
            .await
            .map_err(|e| format!("webhook_urls: {e}"))?;
        if failed > 0 {
            tracing::warn!(
                failed,
                "pending webhook deliveries to URLs no longer in webhook_urls were marked failed"
            );
        }
    }

    if is_changed("log_level") && !crate::logging::set_level(&new.log_level)? {
        tracing::info!("log_level not changed: RUST_LOG is set and wins");
    }
    *live.cors.write().unwrap_or_else(|p| p.into_inner()) = origins(new);
    app.gate.set_limits(new.socket_limits);
    if let Some(turn_secrets) = turn_secrets {
        if let Some(relay) = &app.relay {
            relay.set_secrets(turn_secrets.clone());
        }
        *live.turn_secrets.write().unwrap_or_else(|p| p.into_inner()) = turn_secrets;
    }
    if let (true, Some(relay)) = (is_changed("turn_allow_peer"), &app.relay) {
        relay.set_allowed_peers(new.turn.allow_peers.clone());
    }
    app.signaling.set_webhooks_on(!new.webhooks.urls.is_empty());
    if let Some(hooks) = live.webhooks.get() {
        let secret = new.webhooks.secret.as_ref().map(|s| s.as_bytes().to_vec());
        hooks.set(
            secret.unwrap_or_default(),
            crate::webhooks::RetryPolicy {
                max_age: new.webhooks.max_age,
                ..Default::default()
            },
        );
    }
    *live.applied.lock().unwrap_or_else(|p| p.into_inner()) = new.clone();
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Layers;

    fn config(env: &[(&str, &str)]) -> Config {
        let mut l = Layers::default();
        l.apply_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::from_layers(&l).expect("config")
    }

    #[test]
    fn changed_settings_are_sorted_into_live_and_restart() {
        let old = config(&[]);
        assert_eq!(changes(&old, &old, &old), Changes::default());
        let new = config(&[
            ("SIGNALBOX_CORS_ORIGINS", "https://app.example"),
            ("SIGNALBOX_MAX_CONNECTIONS_PER_USER", "3"),
            ("SIGNALBOX_TURN_SECRET", "a-new-secret-of-some-length"),
            ("SIGNALBOX_LISTEN", "127.0.0.1:9000"),
            ("SIGNALBOX_RING_TIMEOUT", "10s"),
        ]);
        let c = changes(&old, &old, &new);
        assert_eq!(
            c.live,
            ["cors_origins", "max_connections_per_user", "turn_secret"]
        );
        assert_eq!(c.restart, ["listen", "ring_timeout"]);
        // Once applied, the live ones are no news; the restart ones stay pending.
        let c = changes(&new, &old, &new);
        assert!(c.live.is_empty());
        assert_eq!(c.restart, ["listen", "ring_timeout"]);
    }

    #[test]
    fn acme_settings_need_a_restart_and_are_named_one_by_one() {
        let off = config(&[]);
        let on = config(&[("SIGNALBOX_ACME_DOMAINS", "call.example.com")]);
        let c = changes(&off, &off, &on);
        assert!(c.live.is_empty());
        // Turning ACME on sets all of its settings (from nothing to their defaults).
        assert_eq!(c.restart.first(), Some(&"acme_domains"));
        assert!(c.restart.iter().all(|k| k.starts_with("acme_")), "{c:?}");
        let mailed = config(&[
            ("SIGNALBOX_ACME_DOMAINS", "call.example.com"),
            ("SIGNALBOX_ACME_EMAIL", "admin@example.com"),
        ]);
        assert_eq!(changes(&on, &on, &mailed).restart, ["acme_email"]);
    }

    #[test]
    fn every_key_is_either_live_or_needs_a_restart() {
        let mut named: Vec<&str> = LIVE.iter().chain(RESTART).map(|(n, _)| *n).collect();
        named.sort_unstable();
        for key in crate::config::KEYS {
            // Settings a running server never reads again: secrets resolved at start are
            // covered by their own keys; tls_key goes with tls_cert.
            if key.name == "tls_key" {
                continue;
            }
            assert!(
                named.binary_search(&key.name).is_ok(),
                "{} is neither live nor restart-only",
                key.name
            );
        }
    }
}
