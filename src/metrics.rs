//! Prometheus metrics: HTTP requests, calls and webhook deliveries by status, database latency (and, once the relay
//! runs, TURN counters). One registry per server, no global state, so tests can run many servers.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    /// `rtc` or `socketio`.
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub transport: &'static str,
    /// `per_user` or `total`.
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// What a connection on the HTTPS port spoke: `https`, `turn_tls`, `turn_tcp`,
    /// `acme_challenge` or `refused` (neither TLS nor STUN, or no handshake in time).
    pub protocol: &'static str,
}

/// The signaling connections' metrics, shared with the connection gate.
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    /// Open signaling connections by transport.
    pub open: Family<TransportLabels, Gauge>,
    /// Connections refused by a connection cap.
    pub refused: Family<RefusedLabels, Counter>,
    /// Messages answered `rate_limited`.
    pub rate_limited: Family<TransportLabels, Counter>,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub calls: Family<StatusLabels, Gauge>,
    /// Webhook deliveries in the outbox by status (`pending` is the backlog).
    pub webhook_deliveries: Family<StatusLabels, Gauge>,
    pub connections: ConnectionMetrics,
    /// Connections accepted on the HTTPS port, by what they turned out to speak.
    pub tls_port_connections: Family<ProtocolLabels, Counter>,
}

impl Metrics {
    pub fn new(
        db_latency: Histogram,
        extra: Vec<Box<dyn prometheus_client::collector::Collector>>,
    ) -> Self {
        let mut registry = Registry::with_prefix("signalbox");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        let calls = Family::<StatusLabels, Gauge>::default();
        registry.register("calls", "Calls in the database by status", calls.clone());
        let webhook_deliveries = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries kept in the outbox by status (pending, delivered, failed)",
            webhook_deliveries.clone(),
        );
        registry.register(
            "db_operation_seconds",
            "Time spent per database operation, including waiting for a connection",
            db_latency,
        );
        let connections = ConnectionMetrics::default();
        registry.register(
            "signaling_connections",
            "Open signaling connections by transport",
            connections.open.clone(),
        );
        registry.register(
            "signaling_connections_refused",
            "Signaling connections refused by max_connections or max_connections_per_user",
            connections.refused.clone(),
        );
        registry.register(
            "signaling_rate_limited",
            "Signaling messages answered rate_limited",
            connections.rate_limited.clone(),
        );
        let tls_port_connections = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "tls_port_connections",
            "Connections on the HTTPS port by protocol (https, turn_tls, turn_tcp, acme_challenge, refused)",
            tls_port_connections.clone(),
        );
        for collector in extra {
            registry.register_collector(collector);
        }
        Metrics {
            registry,
            http_requests,
            calls,
            webhook_deliveries,
            connections,
            tls_port_connections,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
