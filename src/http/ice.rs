//! `GET /ice-config`: STUN and TURN URIs for the public host and time-limited TURN REST API
//! credentials (coturn `use-auth-secret` compatible), in both the WebRTC `iceServers` shape and
//! the draft's `{username, password, ttl, uris}`.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::clock::rfc3339;
use crate::config::TurnSettings;
use crate::error::Error;
use crate::http::extract::Auth;
use crate::http::AppState;

/// The host clients should use: the configured public host, else the request's Host header.
pub fn public_host(configured: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(h) = configured {
        return h.to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let host = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']')
            .next()
            .map(|h| format!("[{h}]"))
            .unwrap_or_default()
    } else {
        host.rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(host)
            .to_string()
    };
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if valid {
        host
    } else {
        "localhost".to_string()
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Ports of the embedded relay as clients should dial them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayPorts {
    pub udp: Option<u16>,
    pub tcp: Option<u16>,
    pub tls: Option<u16>,
    /// The HTTPS port, which also takes TURN over TLS (when TLS is on).
    pub front_tls: Option<u16>,
}

/// One entry of WebRTC's `iceServers`: STUN URIs, or TURN URIs with their credentials.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp|tcp`, `turns:host:port?transport=tcp`.
    pub urls: Vec<String>,
    /// TURN REST API username `<unix-expiry>:<userId>` (TURN entries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `base64(HMAC-SHA1(secret, username))` (TURN entries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `GET /ice-config`: WebRTC's `iceServers` plus the TURN REST API draft's fields.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IceConfig {
    pub ice_servers: Vec<IceServer>,
    /// Seconds the credentials are valid.
    #[schema(minimum = 0)]
    pub ttl: u64,
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub username: String,
    pub password: String,
    /// The TURN URIs (the draft's `uris`).
    pub uris: Vec<String>,
}

/// Builds the response for `user` at `now_secs`; `relay` is `None` when the embedded relay is off.
/// The STUN and TURN URIs of a relay on `host` with `ports`.
pub fn relay_uris(host: &str, relay: Option<RelayPorts>) -> (Vec<String>, Vec<String>) {
    let host = bracket(host);
    let mut stun = Vec::new();
    let mut turn_uris = Vec::new();
    if let Some(ports) = relay {
        if let Some(port) = ports.udp {
            stun.push(format!("stun:{host}:{port}"));
            turn_uris.push(format!("turn:{host}:{port}?transport=udp"));
        }
        if let Some(port) = ports.tcp {
            turn_uris.push(format!("turn:{host}:{port}?transport=tcp"));
        }
        if let Some(port) = ports.tls {
            turn_uris.push(format!("turns:{host}:{port}?transport=tcp"));
        }
        if let Some(port) = ports.front_tls.filter(|p| Some(*p) != ports.tls) {
            turn_uris.push(format!("turns:{host}:{port}?transport=tcp"));
        }
    }
    (stun, turn_uris)
}

/// The ICE configuration for `user`: this node's relay first, then the relays of the other
/// live nodes of a cluster (`peers`, as (STUN, TURN) URIs; they share the TURN secret), then
/// `turn_external_urls`.
pub fn ice_config(
    turn: &TurnSettings,
    relay: Option<RelayPorts>,
    peers: &[(Vec<String>, Vec<String>)],
    secret: &[u8],
    user: &str,
    host: &str,
    now_secs: u64,
) -> Value {
    let ttl = turn.credential_ttl.as_secs();
    let cred = signalbox_turn::credentials::mint(secret, user, now_secs, ttl);
    let (mut stun, mut turn_uris) = relay_uris(host, relay);
    fn add_new(to: &mut Vec<String>, uris: &[String]) {
        for uri in uris {
            if !to.contains(uri) {
                to.push(uri.clone());
            }
        }
    }
    for (peer_stun, peer_turn) in peers {
        add_new(&mut stun, peer_stun);
        add_new(&mut turn_uris, peer_turn);
    }
    turn_uris.extend(turn.external_urls.iter().cloned());
    let mut servers = Vec::new();
    if !stun.is_empty() {
        servers.push(IceServer {
            urls: stun,
            username: None,
            credential: None,
        });
    }
    if !turn_uris.is_empty() {
        servers.push(IceServer {
            urls: turn_uris.clone(),
            username: Some(cred.username.clone()),
            credential: Some(cred.password.clone()),
        });
    }
    let expires_ms = i64::try_from(cred.expires_at)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    let config = IceConfig {
        ice_servers: servers,
        ttl,
        expires_at: rfc3339(expires_ms),
        username: cred.username,
        password: cred.password,
        uris: turn_uris,
    };
    serde_json::to_value(&config).unwrap_or(Value::Null)
}

/// The relay's ports for URIs naming `host`: those of the IPv6 listeners for an IPv6 literal,
/// of the IPv4 ones otherwise (the same ports unless the listen addresses differ, as with
/// port 0 in tests), each falling back to the other family's.
pub fn relay_ports(
    a: &signalbox_turn::LocalAddrs,
    host: &str,
    front_tls: Option<u16>,
) -> RelayPorts {
    let v6 = host
        .trim_matches(['[', ']'])
        .parse::<std::net::Ipv6Addr>()
        .is_ok();
    let pick = |v4: Option<std::net::SocketAddr>, v6_addr: Option<std::net::SocketAddr>| {
        if v6 { v6_addr.or(v4) } else { v4.or(v6_addr) }.map(|a| a.port())
    };
    RelayPorts {
        udp: pick(a.udp, a.udp6),
        tcp: pick(a.tcp, a.tcp6),
        tls: pick(a.tls, a.tls6),
        front_tls,
    }
}

/// ICE servers and TURN credentials for the caller.
#[utoipa::path(get, path = "/ice-config", tag = "ice",
    responses((status = 200, description = "ICE servers and TURN credentials", body = IceConfig)),
    security(("bearer" = [])))]
pub async fn get_ice_config(
    State(app): State<AppState>,
    Auth(me): Auth,
    headers: HeaderMap,
) -> Result<Json<Value>, Error> {
    let host = public_host(app.config.public_host.as_deref(), &headers);
    let secrets = app.live.turn_secrets();
    let secret = secrets
        .first()
        .ok_or_else(|| Error::Internal("no TURN secret".into()))?;
    let now = u64::try_from(crate::clock::now_ms() / 1000).unwrap_or(0);
    let front = app.front_port.get().copied();
    let relay = app
        .relay
        .as_ref()
        .map(|r| relay_ports(&r.addrs, &host, front));
    let peers: Vec<(Vec<String>, Vec<String>)> = app
        .signaling
        .cluster()
        .map(|c| c.peers().into_iter().map(|p| (p.stun, p.turn)).collect())
        .unwrap_or_default();
    Ok(Json(ice_config(
        &app.config.turn,
        relay,
        &peers,
        secret,
        &me.id,
        &host,
        now,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Layers};
    use serde_json::json;

    const PORTS: Option<RelayPorts> = Some(RelayPorts {
        udp: Some(3478),
        tcp: Some(3478),
        tls: Some(5349),
        front_tls: None,
    });

    fn turn() -> TurnSettings {
        Config::from_layers(&Layers::default())
            .expect("defaults")
            .turn
    }

    #[test]
    fn lists_stun_turn_and_credentials() {
        let v = ice_config(
            &turn(),
            PORTS,
            &[],
            b"secret",
            "alice",
            "calls.example.com",
            1_000,
        );
        let servers = v["iceServers"].as_array().expect("array");
        assert_eq!(servers[0]["urls"][0], "stun:calls.example.com:3478");
        assert_eq!(
            servers[1]["urls"][2],
            "turns:calls.example.com:5349?transport=tcp"
        );
        assert_eq!(v["username"], format!("{}:alice", 1_000 + 6 * 3600));
        assert_eq!(
            v["password"],
            signalbox_turn::credentials::password_for(
                b"secret",
                v["username"].as_str().expect("str")
            )
        );
        assert_eq!(servers[1]["credential"], v["password"]);
        assert_eq!(v["ttl"], 6 * 3600);
    }

    #[test]
    fn lists_the_relays_of_other_nodes_after_its_own() {
        let peers = vec![(
            vec!["stun:b.example:3478".to_string()],
            vec!["turn:b.example:3478?transport=udp".to_string()],
        )];
        let v = ice_config(&turn(), PORTS, &peers, b"s", "a", "a.example", 0);
        let stun = &v["iceServers"][0]["urls"];
        assert_eq!(stun[0], "stun:a.example:3478");
        assert_eq!(stun[1], "stun:b.example:3478");
        let uris = v["uris"].as_array().expect("uris");
        assert_eq!(uris[0], "turn:a.example:3478?transport=udp");
        assert_eq!(
            uris.last().and_then(|u| u.as_str()),
            Some("turn:b.example:3478?transport=udp")
        );
        // One credential for every relay: the nodes share the TURN secret.
        assert_eq!(v["iceServers"][1]["credential"], v["password"]);
    }

    #[test]
    fn no_turn_lists_only_external_servers() {
        let mut t = turn();
        assert_eq!(
            ice_config(&t, None, &[], b"s", "a", "h", 0)["iceServers"],
            json!([])
        );
        t.external_urls = vec!["turn:relay.example.net:3478".into()];
        let v = ice_config(&t, None, &[], b"s", "a", "h", 0);
        assert_eq!(
            v["iceServers"][0]["urls"],
            json!(["turn:relay.example.net:3478"])
        );
    }

    #[test]
    fn an_ipv6_host_gets_the_ipv6_listeners_ports() {
        let addr = |s: &str| Some(s.parse().expect("addr"));
        let a = signalbox_turn::LocalAddrs {
            udp: addr("127.0.0.1:4000"),
            tcp: addr("127.0.0.1:4001"),
            tls: None,
            udp6: addr("[::1]:6000"),
            tcp6: None,
            tls6: addr("[::1]:6002"),
        };
        let p = relay_ports(&a, "[::1]", None);
        assert_eq!((p.udp, p.tcp, p.tls), (Some(6000), Some(4001), Some(6002)));
        let p = relay_ports(&a, "calls.example.com", None);
        assert_eq!((p.udp, p.tcp, p.tls), (Some(4000), Some(4001), Some(6002)));
        let v = ice_config(
            &turn(),
            Some(relay_ports(&a, "[::1]", None)),
            &[],
            b"s",
            "a",
            "[::1]",
            0,
        );
        assert_eq!(v["iceServers"][0]["urls"][0], "stun:[::1]:6000");
        assert_eq!(v["uris"][0], "turn:[::1]:6000?transport=udp");
    }

    #[test]
    fn the_https_port_is_listed_as_turns_unless_it_is_the_relays_own_tls_port() {
        let with = |front_tls| RelayPorts {
            front_tls,
            ..PORTS.expect("ports")
        };
        let v = ice_config(
            &turn(),
            Some(with(Some(443))),
            &[],
            b"s",
            "a",
            "h.example",
            0,
        );
        let uris: Vec<&str> = v["uris"]
            .as_array()
            .expect("uris")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            uris,
            [
                "turn:h.example:3478?transport=udp",
                "turn:h.example:3478?transport=tcp",
                "turns:h.example:5349?transport=tcp",
                "turns:h.example:443?transport=tcp",
            ]
        );
        let v = ice_config(
            &turn(),
            Some(with(Some(5349))),
            &[],
            b"s",
            "a",
            "h.example",
            0,
        );
        assert_eq!(v["uris"].as_array().expect("uris").len(), 3, "{v}");
    }

    #[test]
    fn host_comes_from_config_or_header() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "example.org:8080".parse().expect("hv"));
        assert_eq!(public_host(None, &h), "example.org");
        assert_eq!(public_host(Some("pub.example"), &h), "pub.example");
        h.insert(header::HOST, "[::1]:8080".parse().expect("hv"));
        assert_eq!(public_host(None, &h), "[::1]");
        h.insert(header::HOST, "evil/<x>".parse().expect("hv"));
        assert_eq!(public_host(None, &h), "localhost");
    }
}
