//! Starting the embedded SFU from the configuration: where it listens, which address it tells
//! participants to send to, and handing it to signaling with the room topology policy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use signalbox_sfu::SfuHandle;
use tokio::sync::mpsc;

use crate::app::Signaling;
use crate::config::Config;
use crate::signaling::topology::TopologyPolicy;

/// How long an `auto` room stays on the SFU after dropping below the threshold.
pub const DOWNGRADE_DELAY: Duration = Duration::from_secs(5);

/// The IP the SFU advertises in its answers:
/// * `sfu_external_ip` set: that (a server behind 1:1 NAT);
/// * the listener has a concrete IP (e.g. 127.0.0.1 in tests): that;
/// * `public_host` is an IP: that;
/// * otherwise the local address of the default route (`fallback`), or loopback without one.
pub fn advertised_ip(config: &Config, fallback: impl FnOnce() -> Option<IpAddr>) -> IpAddr {
    let listen_ip = config.sfu.listen.ip();
    if let Some(external) = config.sfu.external_ip {
        return external;
    }
    if !listen_ip.is_unspecified() {
        return listen_ip;
    }
    if let Some(ip) = config
        .public_host
        .as_deref()
        .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
    {
        return ip;
    }
    fallback().unwrap_or_else(|| {
        tracing::warn!(
            "no default route: the SFU advertises 127.0.0.1 (this machine only); \
             set sfu_external_ip or --public-host for other hosts"
        );
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    })
}

/// The running SFU: its handle and the address participants reach it on.
pub struct EmbeddedSfu {
    pub handle: SfuHandle,
    pub advertised: SocketAddr,
}

/// Binds the SFU's socket (unless `no_sfu`).
pub async fn start(
    config: &Config,
) -> anyhow::Result<Option<(EmbeddedSfu, mpsc::UnboundedReceiver<signalbox_sfu::Notice>)>> {
    if !config.sfu.enabled {
        return Ok(None);
    }
    signalbox_sfu::init_crypto();
    let ip = advertised_ip(config, crate::relay::default_route_ip);
    let (tx, rx) = mpsc::unbounded_channel();
    let (handle, _task) = signalbox_sfu::start(config.sfu.listen, Some(ip), tx)
        .await
        .with_context(|| format!("starting the SFU on udp {}", config.sfu.listen))?;
    let advertised = SocketAddr::new(ip, handle.local_addr().port());
    Ok(Some((EmbeddedSfu { handle, advertised }, rx)))
}

/// Hands the SFU to signaling and starts delivering what it sends participants.
pub fn attach(
    signaling: &Arc<Signaling>,
    config: &Config,
    sfu: &EmbeddedSfu,
    notices: mpsc::UnboundedReceiver<signalbox_sfu::Notice>,
) {
    let policy = TopologyPolicy {
        sfu: true,
        threshold: usize::try_from(config.sfu.threshold).unwrap_or(usize::MAX),
        downgrade_delay: DOWNGRADE_DELAY,
    };
    signaling.attach_sfu(sfu.handle.clone(), policy);
    tokio::spawn(signaling.clone().run_sfu_notices(notices));
}

/// Exports the SFU's totals on each scrape (`signalbox_sfu_*`).
pub struct SfuMetrics(pub SfuHandle);

impl std::fmt::Debug for SfuMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SfuMetrics({})", self.0.local_addr())
    }
}

impl Collector for SfuMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = self.0.traffic();
        let gauges = [
            (
                "sfu_participants",
                "Participants connected to the SFU now",
                t.counters.participants,
            ),
            (
                "sfu_rooms",
                "Rooms with participants on the SFU now",
                t.counters.rooms,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let counters = [
            (
                "sfu_datagrams_received",
                "UDP datagrams the SFU received",
                t.datagrams_in,
            ),
            ("sfu_bytes_received", "Bytes the SFU received", t.bytes_in),
            (
                "sfu_datagrams_sent",
                "UDP datagrams the SFU sent",
                t.datagrams_out,
            ),
            ("sfu_bytes_sent", "Bytes the SFU sent", t.bytes_out),
            (
                "sfu_datagrams_unknown",
                "Datagrams no SFU participant took (dropped)",
                t.datagrams_unknown,
            ),
            (
                "sfu_frames_forwarded",
                "Media frames written to subscribers",
                t.counters.frames_forwarded,
            ),
            (
                "sfu_keyframe_requests",
                "Keyframe requests (PLI/FIR) sent to publishers",
                t.counters.keyframe_requests,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Layers;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let mut l = Layers::default();
        l.apply_env(
            pairs
                .iter()
                .map(|(k, v)| (format!("SIGNALBOX_{}", k.to_uppercase()), v.to_string())),
        );
        Config::from_layers(&l).expect("config")
    }

    #[test]
    fn the_advertised_address_follows_the_config() {
        let route = || Some("192.0.2.7".parse().expect("ip"));
        let ip = |c: &Config| advertised_ip(c, route).to_string();
        assert_eq!(ip(&config(&[])), "192.0.2.7", "the default route's address");
        assert_eq!(ip(&config(&[("sfu_listen", "127.0.0.1:0")])), "127.0.0.1");
        assert_eq!(
            ip(&config(&[("public_host", "198.51.100.4")])),
            "198.51.100.4"
        );
        assert_eq!(
            ip(&config(&[
                ("sfu_external_ip", "203.0.113.9"),
                ("sfu_listen", "10.0.0.2:3479")
            ])),
            "203.0.113.9"
        );
        assert_eq!(
            advertised_ip(&config(&[]), || None).to_string(),
            "127.0.0.1"
        );
    }
}
