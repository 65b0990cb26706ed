//! Layered configuration: built-in defaults < TOML file < `SIGNALBOX_*` environment < flags.
//!
//! Every setting is one key with the same name in all layers (`turn_listen` in TOML,
//! `SIGNALBOX_TURN_LISTEN` in the environment, `--turn-listen` on the command line). Layers are
//! merged as raw strings with their source remembered, then parsed once into a typed [`Config`],
//! so a bad value is reported with its key and where it came from. Nothing here reads the process
//! environment or the clock: callers pass them in, which keeps the merge testable.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

/// Where the effective value of a key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "environment {v}"),
            Source::Flag(n) => write!(f, "flag --{n}"),
        }
    }
}

/// One documented configuration key.
pub struct KeySpec {
    pub name: &'static str,
    /// The default as it would be written in TOML; lists are comma-separated here.
    pub default: &'static str,
    pub list: bool,
    pub secret: bool,
    pub doc: &'static str,
}

const fn key(name: &'static str, default: &'static str, doc: &'static str) -> KeySpec {
    KeySpec {
        name,
        default,
        list: false,
        secret: false,
        doc,
    }
}

const fn list(name: &'static str, doc: &'static str) -> KeySpec {
    KeySpec {
        name,
        default: "",
        list: true,
        secret: false,
        doc,
    }
}

/// Every key signalbox understands, in the order `config check` and the packaged config show them.
pub const KEYS: &[KeySpec] = &[
    key("listen", "[::]:8080", "HTTP, WebSocket (/rtc) and Socket.IO listen address; [::] takes IPv6 and IPv4 clients (dual-stack), 0.0.0.0 IPv4 only."),
    key("data_dir", "./signalbox-data", "Directory for the SQLite database and generated secrets."),
    KeySpec { name: "database_url", default: "", list: false, secret: true, doc: "PostgreSQL for lasting state instead of SQLite (postgres://user:password@host:5432/db; no TLS). Empty: SQLite in data_dir." },
    KeySpec { name: "redis_url", default: "", list: false, secret: true, doc: "Redis for cluster mode (redis://[:password@]host:6379[/db]): node registry, presence and deliveries between nodes. Empty: one node." },
    key("node_name", "", "This node's name in a cluster (letters, digits, . _ -). Empty: a random name at each start."),
    key("public_host", "", "Host name or IP put in STUN/TURN URIs and links. Empty: the Host header of each request."),
    key("tls_cert", "", "PEM certificate chain: serve HTTPS on `listen`, which then also takes TURN over TLS and TCP, and TURN over TLS on turn_tls_listen (needs tls_key). Changed files are picked up live."),
    key("tls_key", "", "PEM private key matching tls_cert."),
    list("acme_domains", "Domain names to obtain a certificate for by ACME (e.g. call.example.com): HTTPS, WSS and TURN over TLS then use it, renewed before it expires. Not with tls_cert/tls_key; no wildcards (TLS-ALPN-01 and HTTP-01 cannot validate them)."),
    key("acme_email", "", "Contact e-mail for the ACME account (expiry and policy notices). Empty: no contact."),
    key("acme_directory", "https://acme-v02.api.letsencrypt.org/directory", "ACME directory URL (https). The default is Let's Encrypt's production directory; its staging one is https://acme-staging-v02.api.letsencrypt.org/directory."),
    key("acme_ca_file", "", "PEM bundle of the CAs to trust for the ACME server's own HTTPS (a private ACME server). Empty: the public Web PKI roots."),
    key("acme_http_listen", "", "Plain HTTP listen address (e.g. [::]:80) answering ACME HTTP-01 challenges and redirecting everything else to https with 308. Set: HTTP-01 is used; empty: TLS-ALPN-01 on the HTTPS listener (`listen`, which must then be port 443 to the outside)."),
    key("log_format", "text", "Log format on stderr: text or json."),
    key("log_level", "info", "Log filter (tracing EnvFilter syntax, e.g. info or signalbox=debug)."),
    list("cors_origins", "Origins allowed to call the API from a browser (e.g. https://app.example.com). Empty: same-origin only."),
    key("max_body_bytes", "262144", "Largest accepted REST request body, in bytes (larger: 413)."),
    key("ring_timeout", "45s", "How long a call rings before it becomes missed."),
    key("reconnect_grace", "20s", "How long a dropped connection keeps its calls before they end with reason disconnect."),
    key("max_connections", "50000", "Most signaling connections (/rtc and Socket.IO together) the server holds; more are refused with 429."),
    key("max_connections_per_user", "20", "Most signaling connections one user may hold at once; more are refused with 429."),
    key("socket_rate_per_second", "100", "Messages per second one signaling connection may send, sustained (over it: `rate_limited` errors)."),
    key("socket_rate_burst", "300", "Messages one signaling connection may send in a burst above socket_rate_per_second."),
    key("heartbeat_timeout", "45s", "A signaling connection silent this long is closed and handled as a drop; pings go out every third of it."),
    KeySpec { name: "jwt_secret", default: "", list: false, secret: true, doc: "HS256 secret for bearer tokens (at least 32 characters). Empty: generated into data_dir/jwt-secret on first start." },
    key("token_ttl", "24h", "Lifetime of tokens from POST /api/auth/login and `signalbox token` (unless --ttl)."),
    key("login_rate_per_minute", "10", "Login attempts allowed per client IP per minute (then 429)."),
    KeySpec { name: "trusted_proxies", default: "127.0.0.0/8,::1", list: true, secret: false, doc: "Reverse proxies whose X-Forwarded-For names the real client (for login rate limits). Empty: trust none." },
    key("no_turn", "false", "true: do not run the embedded STUN/TURN relay (use turn_external_urls)."),
    KeySpec { name: "turn_listen", default: "[::]:3478", list: true, secret: false, doc: "STUN/TURN listen addresses, UDP and TCP, at most one per address family: [::]:PORT is both families (0.0.0.0:PORT and [::]:PORT), 0.0.0.0:PORT IPv4 only. Relays are offered in each family listened on." },
    KeySpec { name: "turn_tls_listen", default: "[::]:5349", list: true, secret: false, doc: "TURN over TLS listen addresses of their own (only when TLS is on; `listen` takes TURN over TLS too), like turn_listen." },
    key("turn_default_relay_family", "ipv4", "Relay family of an allocation that names none (browsers never do): ipv4 (RFC 8656), ipv6, or keep (the family the client reached the server over)."),
    key("relay_ports", "49152-65535", "UDP port range for TURN relay sockets, MIN-MAX."),
    list("turn_allow_peer", "CIDRs the relay may send to although they are private or loopback (e.g. 10.0.0.0/8)."),
    KeySpec { name: "turn_secret", default: "", list: true, secret: true, doc: "TURN REST API shared secrets (coturn use-auth-secret); the first signs, all verify. Empty: generated into data_dir/turn-secret." },
    key("turn_realm", "signalbox", "TURN realm."),
    key("turn_credential_ttl", "6h", "Lifetime of TURN credentials handed out by /ice-config."),
    list("turn_external_ip", "Public IPs advertised for relay addresses when the server is behind NAT, at most one per address family (e.g. 203.0.113.5,2001:db8::5)."),
    key("turn_user_quota", "10", "Most simultaneous TURN allocations per user (then 486)."),
    key("turn_total_quota", "1000", "Most simultaneous TURN allocations in total (then 508)."),
    key("turn_max_bitrate", "0", "Per-allocation relay bandwidth cap in bits per second; 0 means none."),
    list("turn_external_urls", "Extra TURN URIs sharing turn_secret (e.g. turn:turn2.example.com:3478), listed in /ice-config."),
    key("no_sfu", "false", "true: do not run the embedded SFU; every room stays a peer-to-peer mesh."),
    key("sfu_listen", "[::]:3479", "SFU media listen address (UDP, and TCP for ICE-TCP), one port for every room participant; [::] takes IPv6 and IPv4 participants, 0.0.0.0 IPv4 only."),
    list("sfu_external_ip", "Public IPs the SFU advertises to participants when the server is behind NAT, at most one per address family."),
    key("sfu_threshold", "3", "Participants from which an `auto` room moves from peer-to-peer to the SFU."),
    list("webhook_urls", "URLs (http:// or https://) that receive every call and room event as a signed JSON POST. Empty: no webhooks."),
    KeySpec { name: "webhook_secret", default: "", list: false, secret: true, doc: "Key of the X-Signalbox-Signature HMAC-SHA256 over each webhook body (at least 16 characters); required with webhook_urls." },
    key("webhook_timeout", "10s", "How long a webhook receiver has to answer an attempt before it counts as failed."),
    key("webhook_max_age", "24h", "Failed webhook attempts are retried (1s, 2s, 4s … at most 5m apart) until the event is this old; then it is marked failed."),
];

/// Environment variables that are not keys but are still ours.
const EXTRA_ENV: &[&str] = &["SIGNALBOX_CONFIG"];

fn spec(name: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.name == name)
}

/// The environment variable that sets a key.
pub fn env_name(key: &str) -> String {
    format!("SIGNALBOX_{}", key.to_ascii_uppercase())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Raw {
    One(String),
    Many(Vec<String>),
}

/// A configuration problem: exits with code 2 and names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config key `{key}` (from {origin}): {message}")]
    Invalid {
        key: String,
        origin: Source,
        message: String,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

/// The merged raw layers, before typing.
#[derive(Debug, Clone)]
pub struct Layers {
    values: BTreeMap<&'static str, (Raw, Source)>,
    /// Unknown keys and variables, reported but not fatal.
    pub warnings: Vec<String>,
}

impl Default for Layers {
    fn default() -> Self {
        let values = KEYS
            .iter()
            .map(|k| {
                let raw = if k.list {
                    Raw::Many(split_list(k.default))
                } else {
                    Raw::One(k.default.to_string())
                };
                (k.name, (raw, Source::Default))
            })
            .collect();
        Layers {
            values,
            warnings: Vec::new(),
        }
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

impl Layers {
    /// Reads a TOML file layer.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        self.apply_toml(&text, path)
    }

    /// Applies TOML text as the file layer; `path` only labels the source.
    pub fn apply_toml(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        for (name, value) in table {
            let Some(spec) = spec(&name) else {
                self.warnings.push(format!(
                    "unknown key `{name}` in {} (ignored)",
                    path.display()
                ));
                continue;
            };
            let source = Source::File(path.to_path_buf());
            let bad = |message: String| ConfigError::Invalid {
                key: name.clone(),
                origin: source.clone(),
                message,
            };
            let raw = match (spec.list, value) {
                (true, toml::Value::Array(items)) => Raw::Many(
                    items
                        .into_iter()
                        .map(|v| {
                            scalar_to_string(v)
                                .ok_or_else(|| bad("list items must be strings or numbers".into()))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                (true, toml::Value::String(s)) => Raw::Many(split_list(&s)),
                (true, _) => return Err(bad("expected a list of strings".into())),
                (false, v) => Raw::One(
                    scalar_to_string(v)
                        .ok_or_else(|| bad("expected a string, number or boolean".into()))?,
                ),
            };
            self.values.insert(spec.name, (raw, source));
        }
        Ok(())
    }

    /// Applies `SIGNALBOX_*` variables from the given environment.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(&mut self, vars: I) {
        for (var, value) in vars {
            let Some(rest) = var.strip_prefix("SIGNALBOX_") else {
                continue;
            };
            if EXTRA_ENV.contains(&var.as_str()) {
                continue;
            }
            let name = rest.to_ascii_lowercase();
            match spec(&name) {
                Some(spec) => {
                    let raw = if spec.list {
                        Raw::Many(split_list(&value))
                    } else {
                        Raw::One(value)
                    };
                    self.values.insert(spec.name, (raw, Source::Env(var)));
                }
                None => self
                    .warnings
                    .push(format!("unknown environment variable {var} (ignored)")),
            }
        }
    }

    /// Applies a command-line flag value. Panics in debug builds on a key that does not exist,
    /// which is a programming error in the CLI table, never user input.
    pub fn apply_flag(&mut self, key: &str, flag: &str, value: String) {
        let Some(spec) = spec(key) else {
            debug_assert!(false, "flag for unknown key {key}");
            return;
        };
        self.values
            .insert(spec.name, (Raw::One(value), Source::Flag(flag.to_string())));
    }

    /// Applies a repeatable flag (a list key).
    pub fn apply_flag_list(&mut self, key: &str, flag: &str, values: Vec<String>) {
        let Some(spec) = spec(key) else {
            debug_assert!(false, "flag for unknown key {key}");
            return;
        };
        self.values.insert(
            spec.name,
            (Raw::Many(values), Source::Flag(flag.to_string())),
        );
    }

    fn one(&self, key: &'static str) -> (&str, &Source) {
        match self.values.get(key) {
            Some((Raw::One(s), src)) => (s.as_str(), src),
            Some((Raw::Many(v), src)) => (v.first().map(String::as_str).unwrap_or(""), src),
            None => ("", &Source::Default),
        }
    }

    fn many(&self, key: &'static str) -> (Vec<String>, &Source) {
        match self.values.get(key) {
            Some((Raw::Many(v), src)) => (v.clone(), src),
            Some((Raw::One(s), src)) => (split_list(s), src),
            None => (Vec::new(), &Source::Default),
        }
    }

    /// Parses one scalar key, naming it on failure.
    fn parse<T>(
        &self,
        key: &'static str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let (value, source) = self.one(key);
        f(value.trim()).map_err(|message| ConfigError::Invalid {
            key: key.to_string(),
            origin: source.clone(),
            message,
        })
    }

    fn parse_list<T>(
        &self,
        key: &'static str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        let (values, source) = self.many(key);
        values
            .iter()
            .map(|v| f(v.trim()))
            .collect::<Result<_, _>>()
            .map_err(|message| ConfigError::Invalid {
                key: key.to_string(),
                origin: source.clone(),
                message,
            })
    }

    /// An error for `key` at its current source.
    fn invalid(&self, key: &'static str, message: &str) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            origin: self.one(key).1.clone(),
            message: message.to_string(),
        }
    }

    /// Lines of `key = value  # source` for `config check`, secrets masked.
    pub fn describe(&self) -> Vec<String> {
        KEYS.iter()
            .map(|k| {
                let (value, source) = match self.values.get(k.name) {
                    Some((Raw::One(s), src)) => (toml_quote(s), src.clone()),
                    Some((Raw::Many(v), src)) => (
                        format!(
                            "[{}]",
                            v.iter()
                                .map(|s| toml_quote(s))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        src.clone(),
                    ),
                    None => (String::new(), Source::Default),
                };
                let is_set = !matches!(value.as_str(), "\"\"" | "[]");
                let value = if k.secret && is_set {
                    "\"********\"".to_string()
                } else {
                    value
                };
                format!("{} = {}  # {}", k.name, value, source)
            })
            .collect()
    }
}

fn toml_quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn scalar_to_string(v: toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Certificate and key for HTTPS and TURN over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Certificates obtained and renewed by ACME (`acme_domains`), instead of certificate files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// Lowercase DNS names, no wildcards, at least one.
    pub domains: Vec<String>,
    /// The account's contact, without `mailto:`.
    pub email: Option<String>,
    /// The directory URL (https).
    pub directory: String,
    /// CAs to trust for the ACME server's HTTPS; `None`: the Web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// Where HTTP-01 challenges are answered; `None`: TLS-ALPN-01 on the HTTPS listener.
    pub http_listen: Option<SocketAddr>,
}

/// Settings of the embedded STUN/TURN relay and of `/ice-config`.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    pub enabled: bool,
    /// At most one address per family, `[::]:PORT` already split into both.
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub default_relay_family: signalbox_turn::config::DefaultFamily,
    pub relay_ports: (u16, u16),
    pub allow_peers: Vec<IpNet>,
    /// Configured secrets; empty means "use the generated one".
    pub secrets: Vec<String>,
    pub realm: String,
    pub credential_ttl: Duration,
    /// At most one per family.
    pub external_ip: Vec<IpAddr>,
    pub user_quota: u32,
    pub total_quota: u32,
    pub max_bitrate: Option<u64>,
    pub external_urls: Vec<String>,
}

/// Settings of the embedded SFU for group rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfuSettings {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// At most one per family.
    pub external_ip: Vec<IpAddr>,
    /// Participants from which an `auto` room uses the SFU.
    pub threshold: u32,
}

/// Webhook receivers and their delivery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Empty: webhooks are off.
    pub urls: Vec<String>,
    /// Set whenever `urls` is not empty.
    pub secret: Option<String>,
    pub timeout: Duration,
    pub max_age: Duration,
}

/// Limits that hold on every signaling transport alike (`/rtc` and Socket.IO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketLimits {
    pub max_connections: u32,
    pub max_connections_per_user: u32,
    pub rate_per_second: u32,
    pub rate_burst: u32,
}

/// The typed, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `postgres://…` from `database_url`: lasting state in PostgreSQL; `None`: SQLite in
    /// `data_dir`.
    pub database_url: Option<String>,
    /// `redis://…` from `redis_url`: cluster mode; `None`: one node.
    pub redis_url: Option<String>,
    /// `node_name`, when set (cluster mode picks a random one otherwise).
    pub node_name: Option<String>,
    pub public_host: Option<String>,
    pub tls: Option<TlsFiles>,
    /// Set when `acme_domains` is: the certificate comes from ACME (then `tls` is `None`).
    pub acme: Option<AcmeSettings>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub ring_timeout: Duration,
    pub reconnect_grace: Duration,
    pub heartbeat_timeout: Duration,
    pub socket_limits: SocketLimits,
    /// Configured JWT secret; `None` means "use the generated one".
    pub jwt_secret: Option<String>,
    pub token_ttl: Duration,
    pub login_rate_per_minute: u32,
    pub trusted_proxies: Vec<IpNet>,
    pub turn: TurnSettings,
    pub sfu: SfuSettings,
    pub webhooks: WebhookSettings,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an address like 0.0.0.0:8080 or [::]:8080"))
}

/// A list of IP addresses, at most one per address family.
fn parse_ips_per_family(l: &Layers, key: &'static str) -> Result<Vec<IpAddr>, ConfigError> {
    let ips = l.parse_list(key, |s| {
        s.parse::<IpAddr>()
            .map_err(|_| format!("`{s}` is not an IP address"))
    })?;
    if ips.iter().filter(|ip| ip.is_ipv4()).count() > 1
        || ips.iter().filter(|ip| ip.is_ipv6()).count() > 1
    {
        return Err(l.invalid(key, "at most one IPv4 and one IPv6 address"));
    }
    Ok(ips)
}

/// A list of listen addresses, at most one per address family, where an unspecified IPv6 one
/// (`[::]:PORT`) stands for both families: `0.0.0.0:PORT` and `[::]:PORT`.
fn parse_listen_list(l: &Layers, key: &'static str) -> Result<Vec<SocketAddr>, ConfigError> {
    let given = l.parse_list(key, parse_addr)?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for a in given {
        if a.ip() == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) {
            addrs.push(SocketAddr::from((
                std::net::Ipv4Addr::UNSPECIFIED,
                a.port(),
            )));
        }
        addrs.push(a);
    }
    if addrs.is_empty() {
        return Err(l.invalid(key, "needs at least one address"));
    }
    if addrs.iter().filter(|a| a.is_ipv4()).count() > 1
        || addrs.iter().filter(|a| a.is_ipv6()).count() > 1
    {
        return Err(l.invalid(
            key,
            "at most one address per family ([::]:PORT already means both)",
        ));
    }
    Ok(addrs)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 45s, 10m or 24h ({e})"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("`{s}` is not a boolean (true or false)")),
    }
}

fn parse_number<T>(s: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let n: T = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    if n < min || n > max {
        return Err(format!("{n} is outside {min}..={max}"));
    }
    Ok(n)
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not a range like 49152-65535"))?;
    let lo: u16 = lo
        .trim()
        .parse()
        .map_err(|_| format!("`{lo}` is not a port"))?;
    let hi: u16 = hi
        .trim()
        .parse()
        .map_err(|_| format!("`{hi}` is not a port"))?;
    if lo == 0 || lo > hi {
        return Err(format!("`{s}` must be MIN-MAX with 1 <= MIN <= MAX"));
    }
    Ok((lo, hi))
}

fn parse_origin(s: &str) -> Result<String, String> {
    let ok = (s.starts_with("http://") || s.starts_with("https://"))
        && !s.trim_end_matches('/').contains(['?', '#', ' '])
        && s.split("://").nth(1).is_some_and(|h| !h.is_empty());
    if ok {
        Ok(s.trim_end_matches('/').to_string())
    } else {
        Err(format!(
            "`{s}` is not an origin like https://app.example.com"
        ))
    }
}

/// `database_url`: empty, or a `postgres://` (or `postgresql://`) URL with a host. The message
/// never repeats the value: it may carry a password.
fn parse_database_url(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| format!("is not a URL like postgres://user:password@host:5432/db: {why}");
    let url = reqwest::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(bad("the scheme must be postgres or postgresql"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(Some(s.to_string()))
}

/// `redis_url`: empty, or a `redis://` (or `rediss://`) URL with a host. The message never
/// repeats the value: it may carry a password.
fn parse_redis_url(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| format!("is not a URL like redis://host:6379: {why}");
    let url = reqwest::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "redis" {
        return Err(bad(
            "the scheme must be redis (TLS to Redis is not supported yet)",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(Some(s.to_string()))
}

/// `node_name`: empty, or up to 64 letters, digits, `.`, `_` and `-` (it is part of Redis keys
/// and channel names).
fn parse_node_name(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let ok = s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(Some(s.to_string()))
    } else {
        Err(format!(
            "`{s}` is not a node name: at most 64 letters, digits, `.`, `_` and `-`"
        ))
    }
}

fn parse_webhook_url(s: &str) -> Result<String, String> {
    let bad =
        |why: &str| format!("`{s}` is not a webhook URL like https://app.example.com/hooks: {why}");
    let url = reqwest::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(bad("credentials and #fragments are not allowed"));
    }
    Ok(url.to_string())
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{s}` is not a CIDR like 10.0.0.0/8 or an IP address"))
}

fn parse_turn_url(s: &str) -> Result<String, String> {
    if ["turn:", "turns:", "stun:"]
        .iter()
        .any(|p| s.starts_with(p))
        && s.len() > 6
    {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a TURN URI like turn:turn.example.com:3478"
        ))
    }
}

/// A name an ACME CA can validate by TLS-ALPN-01 or HTTP-01: a DNS name, no wildcard, no IP.
fn parse_acme_domain(s: &str) -> Result<String, String> {
    let name = s.trim_end_matches('.').to_ascii_lowercase();
    if name.starts_with("*.") || name.contains('*') {
        return Err(format!(
            "`{s}` is a wildcard: TLS-ALPN-01 and HTTP-01 cannot validate wildcards (they need              DNS-01); list each name"
        ));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "`{s}` is an IP address: ACME here needs a DNS name"
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("`{s}` is not a DNS name like call.example.com"));
    }
    Ok(name)
}

fn parse_email(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let s = s.strip_prefix("mailto:").unwrap_or(s);
    let valid = s.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && domain.contains('.')
    }) && !s
        .contains(|c: char| c.is_whitespace() || c.is_control() || "<>,;:\"".contains(c));
    if valid {
        Ok(Some(s.to_string()))
    } else {
        Err(format!(
            "`{s}` is not an e-mail address like admin@example.com"
        ))
    }
}

fn parse_https_url(s: &str) -> Result<String, String> {
    let bad = |why: &str| format!("`{s}` is not an https:// directory URL: {why}");
    let url = reqwest::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "https" {
        return Err(bad("the scheme must be https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(s.to_string())
}

/// The ACME settings, when `acme_domains` is set; refused together with certificate files.
fn parse_acme(l: &Layers, tls: Option<&TlsFiles>) -> Result<Option<AcmeSettings>, ConfigError> {
    let domains = l.parse_list("acme_domains", parse_acme_domain)?;
    let email = l.parse("acme_email", parse_email)?;
    let directory = l.parse("acme_directory", parse_https_url)?;
    let ca_file = l.parse("acme_ca_file", |s| Ok(non_empty(s).map(PathBuf::from)))?;
    let http_listen = l.parse("acme_http_listen", |s| match s {
        "" => Ok(None),
        s => parse_addr(s).map(Some),
    })?;
    if domains.is_empty() {
        return Ok(None);
    }
    if tls.is_some() {
        return Err(l.invalid(
            "acme_domains",
            "acme_domains and tls_cert/tls_key are both set: the certificate comes either from \
             ACME or from files; remove one",
        ));
    }
    Ok(Some(AcmeSettings {
        domains,
        email,
        directory,
        ca_file,
        http_listen,
    }))
}

impl Config {
    /// Types and validates merged layers.
    pub fn from_layers(l: &Layers) -> Result<Config, ConfigError> {
        let tls_cert = l.parse("tls_cert", |s| Ok(non_empty(s)))?;
        let tls_key = l.parse("tls_key", |s| Ok(non_empty(s)))?;
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(l.invalid("tls_key", "tls_cert is set but tls_key is not"))
            }
            (None, Some(_)) => {
                return Err(l.invalid("tls_cert", "tls_key is set but tls_cert is not"))
            }
        };
        let acme = parse_acme(l, tls.as_ref())?;
        let jwt_secret = l.parse("jwt_secret", |s| match s {
            "" => Ok(None),
            s if s.len() < 32 => Err(format!(
                "must be at least 32 characters (got {}); leave empty to generate one",
                s.len()
            )),
            s => Ok(Some(s.to_string())),
        })?;
        let secrets = l.parse_list("turn_secret", |s| {
            if s.len() < 16 {
                Err("each TURN secret must be at least 16 characters".into())
            } else {
                Ok(s.to_string())
            }
        })?;
        let redis_url = l.parse("redis_url", parse_redis_url)?;
        if redis_url.is_some() {
            // Every node must accept the others' tokens and TURN credentials: secrets
            // generated into each node's own data_dir would differ.
            if jwt_secret.is_none() {
                return Err(l.invalid(
                    "jwt_secret",
                    "redis_url (cluster mode) needs jwt_secret set, the same on every node",
                ));
            }
            if secrets.is_empty() {
                return Err(l.invalid(
                    "turn_secret",
                    "redis_url (cluster mode) needs turn_secret set, the same on every node",
                ));
            }
        }
        let webhook_urls = l.parse_list("webhook_urls", parse_webhook_url)?;
        let webhook_secret = l.parse("webhook_secret", |s| match s {
            "" => Ok(None),
            s if s.len() < 16 => Err(format!("must be at least 16 characters (got {})", s.len())),
            s => Ok(Some(s.to_string())),
        })?;
        if !webhook_urls.is_empty() && webhook_secret.is_none() {
            return Err(l.invalid(
                "webhook_secret",
                "webhook_urls is set but webhook_secret is not: receivers need it to check signatures",
            ));
        }
        Ok(Config {
            listen: l.parse("listen", parse_addr)?,
            data_dir: l.parse("data_dir", |s| {
                non_empty(s)
                    .map(PathBuf::from)
                    .ok_or_else(|| "must not be empty".to_string())
            })?,
            database_url: l.parse("database_url", parse_database_url)?,
            redis_url,
            node_name: l.parse("node_name", parse_node_name)?,
            public_host: l.parse("public_host", |s| {
                if s.contains(['/', ' ', '?', '#']) {
                    Err(format!("`{s}` is not a host name or IP address"))
                } else {
                    Ok(non_empty(s))
                }
            })?,
            tls,
            acme,
            log_format: l.parse("log_format", |s| match s {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err(format!("`{s}` must be text or json")),
            })?,
            log_level: l.parse("log_level", |s| {
                tracing_subscriber::EnvFilter::try_new(s)
                    .map(|_| s.to_string())
                    .map_err(|e| format!("`{s}` is not a log filter: {e}"))
            })?,
            cors_origins: l.parse_list("cors_origins", parse_origin)?,
            max_body_bytes: l.parse("max_body_bytes", |s| parse_number(s, 1024, 64 << 20))?,
            ring_timeout: l.parse("ring_timeout", parse_duration)?,
            reconnect_grace: l.parse("reconnect_grace", parse_duration)?,
            heartbeat_timeout: l.parse("heartbeat_timeout", |s| {
                let d = parse_duration(s)?;
                if d < Duration::from_secs(3) {
                    return Err("must be at least 3s".into());
                }
                Ok(d)
            })?,
            socket_limits: SocketLimits {
                max_connections: l.parse("max_connections", |s| parse_number(s, 1, 10_000_000))?,
                max_connections_per_user: l
                    .parse("max_connections_per_user", |s| parse_number(s, 1, 100_000))?,
                rate_per_second: l
                    .parse("socket_rate_per_second", |s| parse_number(s, 1, 1_000_000))?,
                rate_burst: l.parse("socket_rate_burst", |s| parse_number(s, 1, 1_000_000))?,
            },
            jwt_secret,
            token_ttl: l.parse("token_ttl", parse_duration)?,
            login_rate_per_minute: l
                .parse("login_rate_per_minute", |s| parse_number(s, 1, 10_000))?,
            trusted_proxies: l.parse_list("trusted_proxies", parse_cidr)?,
            turn: TurnSettings {
                enabled: !l.parse("no_turn", parse_bool)?,
                listen: parse_listen_list(l, "turn_listen")?,
                tls_listen: parse_listen_list(l, "turn_tls_listen")?,
                default_relay_family: l.parse("turn_default_relay_family", |s| {
                    signalbox_turn::config::DefaultFamily::parse(s)
                        .ok_or_else(|| format!("`{s}` is not one of ipv4, ipv6, keep"))
                })?,
                relay_ports: l.parse("relay_ports", parse_port_range)?,
                allow_peers: l.parse_list("turn_allow_peer", parse_cidr)?,
                secrets,
                realm: l.parse("turn_realm", |s| {
                    if s.is_empty() || s.len() > 127 || !s.is_ascii() {
                        Err("must be 1 to 127 ASCII characters".into())
                    } else {
                        Ok(s.to_string())
                    }
                })?,
                credential_ttl: l.parse("turn_credential_ttl", parse_duration)?,
                external_ip: parse_ips_per_family(l, "turn_external_ip")?,
                user_quota: l.parse("turn_user_quota", |s| parse_number(s, 1, 100_000))?,
                total_quota: l.parse("turn_total_quota", |s| parse_number(s, 1, 10_000_000))?,
                max_bitrate: l.parse("turn_max_bitrate", |s| {
                    parse_number::<u64>(s, 0, u64::MAX).map(|n| (n > 0).then_some(n))
                })?,
                external_urls: l.parse_list("turn_external_urls", parse_turn_url)?,
            },
            sfu: SfuSettings {
                enabled: !l.parse("no_sfu", parse_bool)?,
                listen: l.parse("sfu_listen", parse_addr)?,
                external_ip: parse_ips_per_family(l, "sfu_external_ip")?,
                threshold: l.parse("sfu_threshold", |s| parse_number(s, 2, 1000))?,
            },
            webhooks: WebhookSettings {
                urls: webhook_urls,
                secret: webhook_secret,
                timeout: l.parse("webhook_timeout", parse_duration)?,
                max_age: l.parse("webhook_max_age", parse_duration)?,
            },
        })
    }
}

/// The commented TOML file documenting every key with its default (packaged as
/// `/etc/signalbox/signalbox.toml`).
pub fn template() -> String {
    let mut out = String::from(
        "# signalbox configuration. Every key is shown with its built-in default, commented out.\n\
         # Precedence: built-in defaults < this file < SIGNALBOX_* environment < command-line flags.\n\
         # `signalbox config check --config FILE` validates a file and prints the effective values.\n",
    );
    for k in KEYS {
        out.push('\n');
        out.push_str(&format!("# {}\n", k.doc));
        out.push_str(&format!("# Environment: {}\n", env_name(k.name)));
        let value = if k.list {
            format!(
                "[{}]",
                split_list(k.default)
                    .iter()
                    .map(|s| toml_quote(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if matches!(k.default, "true" | "false") || k.default.parse::<u64>().is_ok() {
            k.default.to_string()
        } else {
            toml_quote(k.default)
        };
        out.push_str(&format!("#{} = {}\n", k.name, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_match_design() {
        let c = Config::from_layers(&Layers::default()).expect("defaults parse");
        // Dual-stack (issue #16): [::] takes IPv4 clients too; TURN binds each family.
        assert_eq!(c.listen, "[::]:8080".parse().expect("addr"));
        assert_eq!(c.turn.listen.len(), 2);
        assert!(c.turn.listen.iter().all(|a| a.port() == 3478));
        assert!(c.turn.tls_listen.iter().all(|a| a.port() == 5349));
        assert_eq!(c.turn.relay_ports, (49152, 65535));
        assert_eq!(c.data_dir, PathBuf::from("./signalbox-data"));
        assert_eq!(c.ring_timeout, Duration::from_secs(45));
        assert_eq!(c.reconnect_grace, Duration::from_secs(20));
        assert!(c.turn.enabled);
        assert!(c.sfu.enabled);
        assert_eq!(c.sfu.listen, "[::]:3479".parse().expect("addr"));
        assert_eq!(c.sfu.threshold, 3);
        assert!(c.sfu.external_ip.is_empty());
        assert!(c.tls.is_none());
        assert!(c.cors_origins.is_empty());
    }

    #[test]
    fn layers_apply_in_order_file_env_flag() {
        let mut l = Layers::default();
        l.apply_toml(
            "listen = \"127.0.0.1:1\"\nring_timeout = \"10s\"\nturn_user_quota = 3",
            Path::new("a.toml"),
        )
        .expect("toml");
        l.apply_env(env(&[
            ("SIGNALBOX_LISTEN", "127.0.0.1:2"),
            ("PATH", "/bin"),
        ]));
        let c = Config::from_layers(&l).expect("valid");
        assert_eq!(c.listen.port(), 2, "env beats file");
        assert_eq!(
            c.ring_timeout,
            Duration::from_secs(10),
            "file beats default"
        );
        assert_eq!(c.turn.user_quota, 3);
        l.apply_flag("listen", "listen", "127.0.0.1:3".into());
        assert_eq!(
            Config::from_layers(&l).expect("valid").listen.port(),
            3,
            "flag beats env"
        );
        assert!(l.warnings.is_empty());
    }

    #[test]
    fn unknown_keys_and_variables_are_reported() {
        let mut l = Layers::default();
        l.apply_toml("lisen = \"x\"", Path::new("a.toml"))
            .expect("toml");
        l.apply_env(env(&[
            ("SIGNALBOX_TRUN_LISTEN", "x"),
            ("SIGNALBOX_CONFIG", "/x"),
        ]));
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
        assert!(l.warnings[0].contains("lisen"));
        assert!(l.warnings[1].contains("SIGNALBOX_TRUN_LISTEN"));
    }

    #[test]
    fn bad_values_name_the_key_and_source() {
        let mut l = Layers::default();
        l.apply_env(env(&[("SIGNALBOX_RELAY_PORTS", "9000-8000")]));
        let err = Config::from_layers(&l).expect_err("bad range").to_string();
        assert!(
            err.contains("relay_ports") && err.contains("SIGNALBOX_RELAY_PORTS"),
            "{err}"
        );

        let mut l = Layers::default();
        l.apply_toml("ring_timeout = \"soon\"", Path::new("c.toml"))
            .expect("toml");
        let err = Config::from_layers(&l)
            .expect_err("bad duration")
            .to_string();
        assert!(
            err.contains("ring_timeout") && err.contains("c.toml"),
            "{err}"
        );

        let mut l = Layers::default();
        l.apply_flag_list(
            "turn_allow_peer",
            "turn-allow-peer",
            vec!["300.0.0.0/8".into()],
        );
        let err = Config::from_layers(&l).expect_err("bad cidr").to_string();
        assert!(err.contains("turn_allow_peer"), "{err}");

        let mut l = Layers::default();
        l.apply_flag("tls_cert", "tls-cert", "/x.pem".into());
        let err = Config::from_layers(&l)
            .expect_err("cert without key")
            .to_string();
        assert!(err.contains("tls_key"), "{err}");

        let mut l = Layers::default();
        l.apply_env(env(&[("SIGNALBOX_JWT_SECRET", "short")]));
        let err = Config::from_layers(&l)
            .expect_err("short secret")
            .to_string();
        assert!(
            err.contains("jwt_secret") && !err.contains("short`"),
            "{err}"
        );
    }

    #[test]
    fn lists_come_from_arrays_commas_and_repeated_flags() {
        let mut l = Layers::default();
        l.apply_toml(
            "turn_allow_peer = [\"127.0.0.0/8\", \"10.1.2.3\"]",
            Path::new("a.toml"),
        )
        .expect("toml");
        let c = Config::from_layers(&l).expect("valid");
        assert_eq!(c.turn.allow_peers.len(), 2);
        l.apply_env(env(&[(
            "SIGNALBOX_CORS_ORIGINS",
            "https://a.example, http://b.example:3000/",
        )]));
        let c = Config::from_layers(&l).expect("valid");
        assert_eq!(
            c.cors_origins,
            vec!["https://a.example", "http://b.example:3000"]
        );
    }

    #[test]
    fn webhook_urls_are_checked_and_need_a_secret() {
        let mut l = Layers::default();
        l.apply_env(env(&[(
            "SIGNALBOX_WEBHOOK_URLS",
            "https://a.example/hook, http://127.0.0.1:9/x",
        )]));
        let err = Config::from_layers(&l).expect_err("no secret").to_string();
        assert!(err.contains("webhook_secret"), "{err}");
        l.apply_env(env(&[("SIGNALBOX_WEBHOOK_SECRET", "0123456789abcdef")]));
        let c = Config::from_layers(&l).expect("valid");
        assert_eq!(
            c.webhooks.urls,
            ["https://a.example/hook", "http://127.0.0.1:9/x"]
        );
        assert_eq!(c.webhooks.timeout, Duration::from_secs(10));
        assert_eq!(c.webhooks.max_age, Duration::from_secs(24 * 3600));
        for bad in [
            "ftp://a.example/x",
            "not a url",
            "http://",
            "https://u:p@a.example/",
        ] {
            let mut l = Layers::default();
            l.apply_flag_list("webhook_urls", "webhook-url", vec![bad.into()]);
            l.apply_env(env(&[("SIGNALBOX_WEBHOOK_SECRET", "0123456789abcdef")]));
            let err = Config::from_layers(&l).expect_err(bad).to_string();
            assert!(
                err.contains("webhook_urls") && err.contains("--webhook-url"),
                "{bad}: {err}"
            );
        }
        let lines = {
            let mut l = Layers::default();
            l.apply_env(env(&[(
                "SIGNALBOX_WEBHOOK_SECRET",
                "0123456789abcdef-hidden",
            )]));
            l.describe().join("\n")
        };
        assert!(!lines.contains("hidden"), "{lines}");
    }

    #[test]
    fn acme_settings_are_typed_checked_and_exclusive_with_certificate_files() {
        let c = Config::from_layers(&Layers::default()).expect("defaults");
        assert!(c.acme.is_none());
        let mut l = Layers::default();
        l.apply_env(env(&[
            (
                "SIGNALBOX_ACME_DOMAINS",
                "Call.Example.com, turn.example.com.",
            ),
            ("SIGNALBOX_ACME_EMAIL", "admin@example.com"),
            ("SIGNALBOX_ACME_HTTP_LISTEN", "[::]:80"),
        ]));
        let acme = Config::from_layers(&l)
            .expect("valid")
            .acme
            .expect("acme on");
        assert_eq!(acme.domains, ["call.example.com", "turn.example.com"]);
        assert_eq!(acme.email.as_deref(), Some("admin@example.com"));
        assert_eq!(
            acme.directory,
            "https://acme-v02.api.letsencrypt.org/directory"
        );
        assert_eq!(acme.ca_file, None);
        assert_eq!(acme.http_listen, Some("[::]:80".parse().expect("addr")));

        l.apply_flag("tls_cert", "tls-cert", "/x.pem".into());
        l.apply_flag("tls_key", "tls-key", "/x.key".into());
        let err = Config::from_layers(&l).expect_err("both").to_string();
        assert!(
            err.contains("acme_domains") && err.contains("tls_cert"),
            "{err}"
        );

        for (key, bad) in [
            ("SIGNALBOX_ACME_DOMAINS", "*.example.com"),
            ("SIGNALBOX_ACME_DOMAINS", "203.0.113.5"),
            ("SIGNALBOX_ACME_DOMAINS", "bad_name.example.com"),
            ("SIGNALBOX_ACME_DOMAINS", "-x.example.com"),
            ("SIGNALBOX_ACME_EMAIL", "not-an-address"),
            ("SIGNALBOX_ACME_EMAIL", "a@b@example.com"),
            ("SIGNALBOX_ACME_DIRECTORY", "http://ca.example/dir"),
            ("SIGNALBOX_ACME_DIRECTORY", "not a url"),
            ("SIGNALBOX_ACME_HTTP_LISTEN", "port 80"),
        ] {
            let mut l = Layers::default();
            l.apply_env(env(&[("SIGNALBOX_ACME_DOMAINS", "call.example.com")]));
            l.apply_env(env(&[(key, bad)]));
            let err = Config::from_layers(&l).expect_err(bad).to_string();
            let name = key.trim_start_matches("SIGNALBOX_").to_ascii_lowercase();
            assert!(err.contains(&name), "{bad}: {err}");
        }
        let mut l = Layers::default();
        l.apply_env(env(&[("SIGNALBOX_ACME_DOMAINS", "*.example.com")]));
        let err = Config::from_layers(&l).expect_err("wildcard").to_string();
        assert!(err.contains("wildcard"), "{err}");
    }

    #[test]
    fn describe_masks_secrets() {
        let mut l = Layers::default();
        l.apply_env(env(&[(
            "SIGNALBOX_JWT_SECRET",
            "0123456789abcdef0123456789abcdef-secret",
        )]));
        let lines = l.describe().join("\n");
        assert!(lines.contains("jwt_secret = \"********\""), "{lines}");
        assert!(!lines.contains("0123456789abcdef"));
    }

    #[test]
    fn cluster_mode_needs_shared_secrets_and_a_redis_url() {
        let mut l = Layers::default();
        l.apply_env(env(&[("SIGNALBOX_REDIS_URL", "redis://127.0.0.1:6379")]));
        let err = Config::from_layers(&l)
            .expect_err("no jwt_secret")
            .to_string();
        assert!(
            err.contains("jwt_secret") && err.contains("redis_url"),
            "{err}"
        );
        l.apply_env(env(&[("SIGNALBOX_JWT_SECRET", &"j".repeat(32))]));
        let err = Config::from_layers(&l)
            .expect_err("no turn_secret")
            .to_string();
        assert!(err.contains("turn_secret"), "{err}");
        l.apply_env(env(&[("SIGNALBOX_TURN_SECRET", &"t".repeat(16))]));
        let c = Config::from_layers(&l).expect("cluster config");
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        for bad in ["http://x.example", "redis:nohost", "nonsense"] {
            let mut l = Layers::default();
            l.apply_env(env(&[("SIGNALBOX_REDIS_URL", bad)]));
            let err = Config::from_layers(&l).expect_err(bad).to_string();
            assert!(
                err.contains("redis_url") && !err.contains(bad),
                "{bad}: {err}"
            );
        }
        for (name, ok) in [
            ("node-1.a_b", true),
            ("", true),
            ("bad name", false),
            ("a:b", false),
        ] {
            let mut l = Layers::default();
            l.apply_env(env(&[("SIGNALBOX_NODE_NAME", name)]));
            assert_eq!(Config::from_layers(&l).is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn database_url_is_postgres_only_and_never_shown() {
        let mut l = Layers::default();
        assert_eq!(Config::from_layers(&l).expect("default").database_url, None);
        let url = "postgres://signalbox:hunter2-pass@db.example:5432/signalbox";
        l.apply_env(env(&[("SIGNALBOX_DATABASE_URL", url)]));
        assert_eq!(
            Config::from_layers(&l)
                .expect("postgres")
                .database_url
                .as_deref(),
            Some(url)
        );
        let lines = l.describe().join("\n");
        assert!(lines.contains("database_url = \"********\""), "{lines}");
        assert!(!lines.contains("hunter2"), "{lines}");
        for bad in [
            "mysql://u:hunter2@db/x",
            "sqlite:///var/lib/x.db",
            "postgres://",
            "not a url",
        ] {
            let mut l = Layers::default();
            l.apply_env(env(&[("SIGNALBOX_DATABASE_URL", bad)]));
            let err = Config::from_layers(&l).expect_err(bad).to_string();
            assert!(err.contains("database_url"), "{bad}: {err}");
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
    }

    #[test]
    fn template_documents_every_key_and_parses_as_defaults() {
        let t = template();
        for k in KEYS {
            assert!(t.contains(&format!("#{} = ", k.name)), "{} missing", k.name);
        }
        // Uncommenting every line yields a valid file equal to the defaults.
        let uncommented: String = t
            .lines()
            .filter(|l| l.starts_with('#') && l.contains(" = ") && !l.starts_with("# "))
            .map(|l| format!("{}\n", &l[1..]))
            .collect();
        let mut l = Layers::default();
        l.apply_toml(&uncommented, Path::new("t.toml"))
            .expect("template parses");
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        Config::from_layers(&l).expect("template defaults valid");
    }
}
