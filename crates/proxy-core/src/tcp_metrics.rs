//! Istio's TCP metrics, with the names and labels Istio's dashboards query:
//! `istio_tcp_connections_opened_total`, `istio_tcp_connections_closed_total`,
//! `istio_tcp_sent_bytes_total`, `istio_tcp_received_bytes_total`.
//!
//! "Sent" and "received" are from the destination workload's point of
//! view, as in Istio: bytes sent are those the destination sent back.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of every TCP metric.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// `source` (the client's proxy) or `destination` (the server's).
    pub reporter: String,
    /// Source workload (owner) name.
    pub source_workload: String,
    /// Source namespace.
    pub source_workload_namespace: String,
    /// `spiffe://…` of the source.
    pub source_principal: String,
    /// Source canonical service.
    pub source_canonical_service: String,
    /// Source canonical revision.
    pub source_canonical_revision: String,
    /// Destination workload name.
    pub destination_workload: String,
    /// Destination namespace.
    pub destination_workload_namespace: String,
    /// `spiffe://…` of the destination.
    pub destination_principal: String,
    /// Destination canonical service.
    pub destination_canonical_service: String,
    /// Destination canonical revision.
    pub destination_canonical_revision: String,
    /// The service hostname addressed, when a service was.
    pub destination_service: String,
    /// The service's short name.
    pub destination_service_name: String,
    /// The service's namespace.
    pub destination_service_namespace: String,
    /// Always `tcp` here.
    pub request_protocol: String,
    /// `-` or Envoy-style flags (`UF` upstream failure, `DENY`…).
    pub response_flags: String,
    /// `mutual_tls` or `none`.
    pub connection_security_policy: String,
}

/// The four TCP metric families.
#[derive(Debug, Clone, Default)]
pub struct TcpMetrics {
    opened: Family<TcpLabels, Counter>,
    closed: Family<TcpLabels, Counter>,
    sent: Family<TcpLabels, Counter>,
    received: Family<TcpLabels, Counter>,
}

impl TcpMetrics {
    /// Registers the families under the `istio` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let istio = registry.sub_registry_with_prefix("istio");
        istio.register("tcp_connections_opened", "Connections opened", metrics.opened.clone());
        istio.register("tcp_connections_closed", "Connections closed", metrics.closed.clone());
        istio.register("tcp_sent_bytes", "Bytes the destination sent back", metrics.sent.clone());
        istio.register(
            "tcp_received_bytes",
            "Bytes the destination received",
            metrics.received.clone(),
        );
        metrics
    }

    /// Counts an opened connection.
    pub fn opened(&self, labels: &TcpLabels) {
        self.opened.get_or_create(labels).inc();
    }

    /// Counts a closed connection and its bytes.
    pub fn closed(&self, labels: &TcpLabels, to_destination: u64, from_destination: u64) {
        self.closed.get_or_create(labels).inc();
        self.received.get_or_create(labels).inc_by(to_destination);
        self.sent.get_or_create(labels).inc_by(from_destination);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_labels_are_istios() {
        let mut registry = Registry::default();
        let metrics = TcpMetrics::register(&mut registry);
        let labels = TcpLabels {
            reporter: "destination".into(),
            connection_security_policy: "mutual_tls".into(),
            response_flags: "-".into(),
            ..Default::default()
        };
        metrics.opened(&labels);
        metrics.closed(&labels, 10, 20);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for expected in [
            "istio_tcp_connections_opened_total{reporter=\"destination\"",
            "istio_tcp_connections_closed_total{",
            "istio_tcp_received_bytes_total{",
            "istio_tcp_sent_bytes_total{",
            "connection_security_policy=\"mutual_tls\"",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        assert!(text.contains("} 20"), "{text}");
    }
}
