//! Starting the embedded SFU from the configuration: where it listens, which address it tells
//! participants to send to, and handing it to signaling with the room topology policy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use signalbox_sfu::SfuHandle;
use signalbox_turn::config::Family;
use tokio::sync::mpsc;

use crate::app::Signaling;
use crate::config::Config;
use crate::host_addr;
use crate::signaling::topology::TopologyPolicy;

/// How long an `auto` room stays on the SFU after dropping below the threshold.
pub const DOWNGRADE_DELAY: Duration = Duration::from_secs(5);

/// The IPs the SFU advertises in its answers, at most one per family it listens on (`listen`;
/// `[::]`, the default, is both), by the rules of [`host_addr::advertised`] with
/// `sfu_external_ip`.
pub fn advertised_ips(
    config: &Config,
    listen: SocketAddr,
    route: impl Fn(Family) -> Option<IpAddr>,
) -> Vec<IpAddr> {
    let ip = listen.ip();
    let families: &[Family] = match ip {
        IpAddr::V6(v6) if v6.is_unspecified() => &[Family::V4, Family::V6],
        _ => &[Family::of(ip)],
    };
    let bind_of = |family| match family {
        Family::V4 if ip.is_ipv6() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        _ => ip,
    };
    let public_ip = host_addr::public_ip(config.public_host.as_deref());
    families
        .iter()
        .filter_map(|&family| {
            host_addr::advertised(
                family,
                bind_of(family),
                &config.sfu.external_ip,
                public_ip,
                &route,
                "the SFU is",
            )
        })
        .collect()
}

/// The running SFU: its handle and the addresses participants reach it on (one per family).
pub struct EmbeddedSfu {
    pub handle: SfuHandle,
    pub advertised: Vec<SocketAddr>,
}

/// Binds the SFU's socket (unless `no_sfu`).
pub async fn start(
    config: &Config,
) -> anyhow::Result<Option<(EmbeddedSfu, mpsc::UnboundedReceiver<signalbox_sfu::Notice>)>> {
    if !config.sfu.enabled {
        return Ok(None);
    }
    signalbox_sfu::init_crypto();
    let mut listen = config.sfu.listen;
    if listen.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && !host_addr::ipv6_available() {
        tracing::warn!("this host has no IPv6: the SFU listens on IPv4 only");
        listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, listen.port()));
    }
    let ips = advertised_ips(config, listen, host_addr::default_route_ip);
    let (tx, rx) = mpsc::unbounded_channel();
    let (handle, _task) = signalbox_sfu::start(listen, &ips, tx)
        .await
        .with_context(|| format!("starting the SFU on udp {listen}"))?;
    let port = handle.local_addr().port();
    let advertised = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
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
        let route = |f| {
            Some(match f {
                Family::V4 => "192.0.2.7".parse().expect("ip"),
                Family::V6 => "2001:db8::7".parse().expect("ip"),
            })
        };
        let ips = |c: &Config, f: &dyn Fn(Family) -> Option<IpAddr>| {
            advertised_ips(c, c.sfu.listen, f)
                .iter()
                .map(|ip| ip.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ips(&config(&[]), &route),
            ["192.0.2.7", "2001:db8::7"],
            "[::] by default: both families' default routes"
        );
        assert_eq!(
            ips(&config(&[("sfu_listen", "127.0.0.1:0")]), &route),
            ["127.0.0.1"]
        );
        assert_eq!(ips(&config(&[("sfu_listen", "[::1]:0")]), &route), ["::1"]);
        assert_eq!(
            ips(&config(&[("sfu_listen", "0.0.0.0:3479")]), &route),
            ["192.0.2.7"]
        );
        assert_eq!(
            ips(&config(&[("public_host", "198.51.100.4")]), &route),
            ["198.51.100.4", "2001:db8::7"]
        );
        assert_eq!(
            ips(
                &config(&[
                    ("sfu_external_ip", "203.0.113.9"),
                    ("sfu_listen", "10.0.0.2:3479")
                ]),
                &route
            ),
            ["203.0.113.9"]
        );
        assert_eq!(
            ips(
                &config(&[("sfu_external_ip", "203.0.113.9,2001:db8::9")]),
                &route
            ),
            ["203.0.113.9", "2001:db8::9"]
        );
        assert_eq!(
            ips(&config(&[]), &|_| None),
            ["127.0.0.1"],
            "no route: IPv4 loopback, no IPv6"
        );
    }
}
