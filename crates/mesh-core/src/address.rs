//! Addresses shared by workloads and services: IPs on a network, gateways,
//! `namespace/hostname` names and port mappings.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use mesh_proto::workload as pb;

use crate::convert::{self, ConvertError};

/// An IP on a named network (empty name: the default network).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkAddress {
    /// The network; empty for the default one.
    pub network: String,
    /// The address.
    pub address: IpAddr,
}

/// A service named by namespace and hostname: the key of services in WDS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespacedHostname {
    /// The namespace.
    pub namespace: String,
    /// The FQDN.
    pub hostname: String,
}

/// Where a waypoint or east-west gateway is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GatewayAddress {
    /// By service name or by address.
    pub destination: GatewayDestination,
    /// Its HBONE port (normally 15008).
    pub hbone_port: u16,
}

/// A gateway's name or address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GatewayDestination {
    /// A service, to be resolved to its addresses.
    Hostname(NamespacedHostname),
    /// A fixed address.
    Address(NetworkAddress),
}

/// A service port and the workload port it forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortMapping {
    /// The port clients use (never 0).
    pub service_port: u16,
    /// The port the workload listens on; 0 when not yet known.
    pub target_port: u16,
}

// === impl NamespacedHostname ===

impl fmt::Display for NamespacedHostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.hostname)
    }
}

impl FromStr for NamespacedHostname {
    type Err = ConvertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, host)) if !ns.is_empty() && !host.is_empty() && !host.contains('/') => {
                Ok(Self { namespace: ns.to_string(), hostname: host.to_string() })
            }
            _ => Err(ConvertError::BadNamespacedName { field: "services", value: s.to_string() }),
        }
    }
}

impl TryFrom<&pb::NamespacedHostname> for NamespacedHostname {
    type Error = ConvertError;

    fn try_from(p: &pb::NamespacedHostname) -> Result<Self, Self::Error> {
        if p.namespace.is_empty() {
            return Err(ConvertError::Missing("gateway.hostname.namespace"));
        }
        if p.hostname.is_empty() {
            return Err(ConvertError::Missing("gateway.hostname.hostname"));
        }
        Ok(Self { namespace: p.namespace.clone(), hostname: p.hostname.clone() })
    }
}

impl From<&NamespacedHostname> for pb::NamespacedHostname {
    fn from(d: &NamespacedHostname) -> Self {
        Self { namespace: d.namespace.clone(), hostname: d.hostname.clone() }
    }
}

// === impl NetworkAddress ===

impl NetworkAddress {
    /// Reads a proto network address; `field` names it in errors.
    pub(crate) fn from_proto(
        field: &'static str,
        p: &pb::NetworkAddress,
    ) -> Result<Self, ConvertError> {
        Ok(Self { network: p.network.clone(), address: convert::ip_from_bytes(field, &p.address)? })
    }
}

impl From<&NetworkAddress> for pb::NetworkAddress {
    fn from(d: &NetworkAddress) -> Self {
        Self { network: d.network.clone(), address: convert::ip_to_bytes(&d.address) }
    }
}

// === impl GatewayAddress ===

impl GatewayAddress {
    pub(crate) fn from_proto(
        field: &'static str,
        p: &pb::GatewayAddress,
    ) -> Result<Self, ConvertError> {
        use pb::gateway_address::Destination;
        let destination = match &p.destination {
            Some(Destination::Hostname(h)) => GatewayDestination::Hostname(h.try_into()?),
            Some(Destination::Address(a)) => {
                GatewayDestination::Address(NetworkAddress::from_proto(field, a)?)
            }
            None => return Err(ConvertError::Missing(field)),
        };
        Ok(Self { destination, hbone_port: convert::port(field, p.hbone_mtls_port)? })
    }
}

impl From<&GatewayAddress> for pb::GatewayAddress {
    fn from(d: &GatewayAddress) -> Self {
        use pb::gateway_address::Destination;
        Self {
            destination: Some(match &d.destination {
                GatewayDestination::Hostname(h) => Destination::Hostname(h.into()),
                GatewayDestination::Address(a) => Destination::Address(a.into()),
            }),
            hbone_mtls_port: u32::from(d.hbone_port),
        }
    }
}

// === impl PortMapping ===

impl PortMapping {
    pub(crate) fn from_proto(p: &pb::Port) -> Result<Self, ConvertError> {
        Ok(Self {
            service_port: convert::port("ports.service_port", p.service_port)?,
            target_port: convert::port_or_zero("ports.target_port", p.target_port)?,
        })
    }
}

impl From<&PortMapping> for pb::Port {
    fn from(d: &PortMapping) -> Self {
        Self { service_port: u32::from(d.service_port), target_port: u32::from(d.target_port) }
    }
}
