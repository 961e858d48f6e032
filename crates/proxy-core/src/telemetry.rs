//! What a connection reports: Istio TCP metric labels, response flags and
//! the JSON access-log line. One place maps every failure to its flag.

use std::net::SocketAddr;
use std::time::Duration;

use crate::tcp_metrics::TcpLabels;
use mesh_core::{Identity, Service, Workload};
use serde_json::json;

/// Who reports: the client's ztunnel or the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// The source side.
    Source,
    /// The destination side.
    Destination,
}

/// Why a connection failed, as Envoy-style response flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No route: e.g. a port the service does not declare (`NR`).
    NoRoute,
    /// No healthy upstream (`UH`).
    NoHealthyUpstream,
    /// The upstream could not be connected, or the tunnel failed (`UF`).
    UpstreamConnect,
    /// Refused by authorization policy (`DENY`).
    Denied,
    /// No certificate for the source identity (`UF`, with a log reason).
    NoCertificate,
    /// The destination is one of ztunnel's own listeners in the pod: it
    /// would dial itself until out of descriptors (`NR`, with a log reason).
    OwnPort,
    /// An open connection failed on the upstream side (the application, or
    /// the tunnel on outbound): both sides were reset (`UC`).
    UpstreamTerminated,
    /// An open connection failed on the downstream side (the client, or
    /// the tunnel on inbound): both sides were reset (`DC`).
    DownstreamTerminated,
}

impl Failure {
    /// The `response_flags` label value.
    pub fn flag(self) -> &'static str {
        match self {
            Failure::NoRoute | Failure::OwnPort => "NR",
            Failure::UpstreamTerminated => "UC",
            Failure::DownstreamTerminated => "DC",
            Failure::NoHealthyUpstream => "UH",
            Failure::UpstreamConnect | Failure::NoCertificate => "UF",
            Failure::Denied => "DENY",
        }
    }
}

/// Everything known about one connection, for labels and the log line.
#[derive(Debug, Clone)]
pub struct ConnectionFacts {
    /// Who reports.
    pub reporter: Reporter,
    /// Original source address.
    pub source_addr: SocketAddr,
    /// The source workload, when known.
    pub source: Option<std::sync::Arc<Workload>>,
    /// The source identity (verified on inbound, ours on outbound).
    pub source_identity: Option<Identity>,
    /// Original destination.
    pub destination_addr: SocketAddr,
    /// The workload reached.
    pub destination: Option<std::sync::Arc<Workload>>,
    /// The service addressed.
    pub service: Option<std::sync::Arc<Service>>,
    /// The identity of the destination (expected on outbound).
    pub destination_identity: Option<Identity>,
    /// Where bytes went (an HBONE address or the destination).
    pub upstream: SocketAddr,
    /// Whether mutual TLS protected the connection.
    pub mtls: bool,
}

/// W3C `baggage` describing a source workload with Istio's keys, sent
/// with a CONNECT to a waypoint so its metrics can name the client
/// (`k8s.cluster.name`, `k8s.namespace.name`, `k8s.<kind>.name`,
/// `service.name`, `service.version`). Values are percent-encoded where
/// W3C baggage requires it.
pub fn source_baggage(w: &mesh_core::Workload) -> String {
    let kind = match w.workload_type {
        mesh_core::WorkloadType::Deployment => "deployment",
        mesh_core::WorkloadType::CronJob => "cronjob",
        mesh_core::WorkloadType::Pod => "pod",
        mesh_core::WorkloadType::Job => "job",
    };
    let encode = |v: &str| -> String {
        v.bytes()
            .map(|b| match b {
                b'!' | b'#'..=b'+' | b'-'..=b':' | b'<'..=b'[' | b']'..=b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    [
        ("k8s.cluster.name", w.cluster_id.as_str()),
        ("k8s.namespace.name", w.namespace.as_str()),
        (&*format!("k8s.{kind}.name"), w.workload_name.as_str()),
        ("service.name", w.canonical_name.as_str()),
        ("service.version", w.canonical_revision.as_str()),
    ]
    .iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("{k}={}", encode(v)))
    .collect::<Vec<_>>()
    .join(",")
}

impl ConnectionFacts {
    /// Istio's label set for this connection.
    pub fn labels(&self, failure: Option<Failure>) -> TcpLabels {
        let src = self.source.as_deref();
        let dst = self.destination.as_deref();
        let svc = self.service.as_deref();
        TcpLabels {
            reporter: match self.reporter {
                Reporter::Source => "source",
                Reporter::Destination => "destination",
            }
            .into(),
            source_workload: src.map_or_else(unknown, |w| w.workload_name.clone()),
            source_workload_namespace: src.map_or_else(unknown, |w| w.namespace.clone()),
            source_principal: self
                .source_identity
                .as_ref()
                .map_or_else(unknown, Identity::to_string),
            source_canonical_service: src.map_or_else(unknown, |w| w.canonical_name.clone()),
            source_canonical_revision: src.map_or_else(unknown, |w| w.canonical_revision.clone()),
            destination_workload: dst.map_or_else(unknown, |w| w.workload_name.clone()),
            destination_workload_namespace: dst.map_or_else(unknown, |w| w.namespace.clone()),
            destination_principal: self
                .destination_identity
                .as_ref()
                .map_or_else(unknown, Identity::to_string),
            destination_canonical_service: dst.map_or_else(unknown, |w| w.canonical_name.clone()),
            destination_canonical_revision: dst
                .map_or_else(unknown, |w| w.canonical_revision.clone()),
            destination_service: svc.map_or_else(unknown, |s| s.hostname.clone()),
            destination_service_name: svc.map_or_else(unknown, |s| s.name.clone()),
            destination_service_namespace: svc.map_or_else(unknown, |s| s.namespace.clone()),
            request_protocol: "tcp".into(),
            response_flags: failure.map_or("-", Failure::flag).into(),
            connection_security_policy: if self.mtls { "mutual_tls" } else { "none" }.into(),
        }
    }

    /// The access-log line, one JSON object.
    pub fn log_line(
        &self,
        to_destination: u64,
        from_destination: u64,
        duration: Duration,
        failure: Option<(Failure, &str)>,
    ) -> String {
        let name = |w: &Option<std::sync::Arc<Workload>>| {
            w.as_ref().map(|w| format!("{}/{}", w.namespace, w.name))
        };
        json!({
            "reporter": match self.reporter { Reporter::Source => "source", Reporter::Destination => "destination" },
            "src.addr": self.source_addr.to_string(),
            "src.workload": name(&self.source),
            "src.identity": self.source_identity.as_ref().map(Identity::to_string),
            "dst.addr": self.destination_addr.to_string(),
            "dst.service": self.service.as_ref().map(|s| s.hostname.clone()),
            "dst.workload": name(&self.destination),
            "dst.identity": self.destination_identity.as_ref().map(Identity::to_string),
            "upstream": self.upstream.to_string(),
            "protocol": if self.mtls { "HBONE" } else { "TCP" },
            "bytes_received": to_destination,
            "bytes_sent": from_destination,
            "duration_ms": duration.as_millis() as u64,
            "response_flags": failure.map_or("-", |(f, _)| f.flag()),
            "error": failure.map(|(_, reason)| reason.to_string()),
        })
        .to_string()
    }
}

fn unknown() -> String {
    "unknown".into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_failure_has_its_flag() {
        let table = [
            (Failure::NoRoute, "NR"),
            (Failure::NoHealthyUpstream, "UH"),
            (Failure::UpstreamConnect, "UF"),
            (Failure::NoCertificate, "UF"),
            (Failure::Denied, "DENY"),
        ];
        for (failure, flag) in table {
            assert_eq!(failure.flag(), flag);
        }
    }

    #[test]
    fn labels_and_log_line_carry_identities() {
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let facts = ConnectionFacts {
            reporter: Reporter::Destination,
            source_addr: addr,
            source: None,
            source_identity: Some(Identity::new("cluster.local", "a", "sleep").unwrap()),
            destination_addr: addr,
            destination: None,
            service: None,
            destination_identity: None,
            upstream: addr,
            mtls: true,
        };
        let labels = facts.labels(Some(Failure::Denied));
        assert_eq!(labels.reporter, "destination");
        assert_eq!(labels.source_principal, "spiffe://cluster.local/ns/a/sa/sleep");
        assert_eq!(labels.destination_workload, "unknown");
        assert_eq!(labels.response_flags, "DENY");
        assert_eq!(labels.connection_security_policy, "mutual_tls");
        let line: serde_json::Value = serde_json::from_str(&facts.log_line(
            3,
            4,
            Duration::from_millis(5),
            Some((Failure::Denied, "policy apps/deny")),
        ))
        .unwrap();
        assert_eq!(line["src.identity"], "spiffe://cluster.local/ns/a/sa/sleep");
        assert_eq!(line["bytes_received"], 3);
        assert_eq!(line["error"], "policy apps/deny");
    }
}
