//! Istio's HTTP metrics, with the names and labels Istio's dashboards
//! query: `istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// One side of a request, as the metrics name it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Workload (owner) name.
    pub workload: String,
    /// Namespace.
    pub namespace: String,
    /// `spiffe://…`.
    pub principal: String,
    /// Canonical service.
    pub canonical_service: String,
    /// Canonical revision.
    pub canonical_revision: String,
}

/// Labels of every HTTP metric.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `waypoint` here (`source`/`destination` from a sidecar).
    pub reporter: String,
    /// Source workload.
    pub source_workload: String,
    /// Source namespace.
    pub source_workload_namespace: String,
    /// Source principal.
    pub source_principal: String,
    /// Source canonical service.
    pub source_canonical_service: String,
    /// Source canonical revision.
    pub source_canonical_revision: String,
    /// Destination workload.
    pub destination_workload: String,
    /// Destination namespace.
    pub destination_workload_namespace: String,
    /// Destination principal.
    pub destination_principal: String,
    /// Destination canonical service.
    pub destination_canonical_service: String,
    /// Destination canonical revision.
    pub destination_canonical_revision: String,
    /// The service hostname addressed.
    pub destination_service: String,
    /// Its short name.
    pub destination_service_name: String,
    /// Its namespace.
    pub destination_service_namespace: String,
    /// `http`, `grpc` or `http2`... as Istio: `http` or `grpc`.
    pub request_protocol: String,
    /// The status the client got.
    pub response_code: String,
    /// `-` or Envoy's flags (`NR`, `UF`, `UT`, `UO`, `UH`, `URX`, `FI`, `DI`).
    pub response_flags: String,
    /// `mutual_tls`.
    pub connection_security_policy: String,
}

impl HttpLabels {
    /// Labels from both sides of a request.
    pub fn new(reporter: &str, source: &Peer, destination: &Peer) -> Self {
        Self {
            reporter: reporter.to_string(),
            source_workload: or_unknown(&source.workload),
            source_workload_namespace: or_unknown(&source.namespace),
            source_principal: or_unknown(&source.principal),
            source_canonical_service: or_unknown(&source.canonical_service),
            source_canonical_revision: or_unknown(&source.canonical_revision),
            destination_workload: or_unknown(&destination.workload),
            destination_workload_namespace: or_unknown(&destination.namespace),
            destination_principal: or_unknown(&destination.principal),
            destination_canonical_service: or_unknown(&destination.canonical_service),
            destination_canonical_revision: or_unknown(&destination.canonical_revision),
            connection_security_policy: "mutual_tls".into(),
            ..Default::default()
        }
    }
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() { "unknown".into() } else { s.to_string() }
}

/// The four HTTP metric families.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    duration: Family<HttpLabels, Histogram>,
    request_bytes: Family<HttpLabels, Histogram>,
    response_bytes: Family<HttpLabels, Histogram>,
}

fn duration_buckets() -> Histogram {
    // Istio's default buckets, milliseconds.
    Histogram::new([
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
    ])
}

fn size_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1.0, 10.0, 8))
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_buckets as fn() -> Histogram),
            request_bytes: Family::new_with_constructor(size_buckets as fn() -> Histogram),
            response_bytes: Family::new_with_constructor(size_buckets as fn() -> Histogram),
        }
    }
}

impl HttpMetrics {
    /// Registers the families under the `istio` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let istio = registry.sub_registry_with_prefix("istio");
        istio.register("requests", "Requests", m.requests.clone());
        istio.register("request_duration_milliseconds", "Request duration", m.duration.clone());
        istio.register("request_bytes", "Request body sizes", m.request_bytes.clone());
        istio.register("response_bytes", "Response body sizes", m.response_bytes.clone());
        m
    }

    /// The four series of one label set, to record into without looking
    /// them up again (a connection keeps those of its recent requests).
    pub fn series(&self, labels: &HttpLabels) -> Series {
        Series {
            requests: self.requests.get_or_create(labels).clone(),
            duration: self.duration.get_or_create(labels).clone(),
            request_bytes: self.request_bytes.get_or_create(labels).clone(),
            response_bytes: self.response_bytes.get_or_create(labels).clone(),
        }
    }

    /// Records one finished request.
    pub fn record(
        &self,
        labels: &HttpLabels,
        millis: f64,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        self.series(labels).record(millis, request_bytes, response_bytes);
    }
}

/// One label set's four series (shared handles into the families).
#[derive(Debug, Clone)]
pub struct Series {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl Series {
    /// Records one finished request.
    pub fn record(&self, millis: f64, request_bytes: u64, response_bytes: u64) {
        self.requests.inc();
        self.duration.observe(millis);
        self.request_bytes.observe(request_bytes as f64);
        self.response_bytes.observe(response_bytes as f64);
    }
}
