//! Services: groups of workloads reached at virtual IPs.

use mesh_proto::workload as pb;

use crate::address::{GatewayAddress, NamespacedHostname, NetworkAddress, PortMapping};
use crate::convert::{self, ConvertError};

/// A Kubernetes Service or ServiceEntry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// FQDN.
    pub hostname: String,
    /// Virtual IPs; empty for headless services.
    pub vips: Vec<NetworkAddress>,
    /// Ports.
    pub ports: Vec<PortMapping>,
    /// Identities to verify instead of each endpoint's own, when set.
    pub subject_alt_names: Vec<String>,
    /// The waypoint all traffic to the service must cross.
    pub waypoint: Option<GatewayAddress>,
    /// How endpoints are picked.
    pub load_balancing: Option<LoadBalancing>,
    /// Address families.
    pub ip_families: IpFamilies,
    /// Wins hostname lookups outside the client's namespace.
    pub canonical: bool,
}

/// Endpoint selection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadBalancing {
    /// Scopes to keep traffic within, most important first.
    pub routing_preference: Vec<Scope>,
    /// How the preferences apply.
    pub mode: LoadBalancingMode,
    /// Whether unhealthy endpoints may be picked.
    pub health_policy: HealthPolicy,
}

/// A locality scope for routing preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Same region.
    Region,
    /// Same zone.
    Zone,
    /// Same subzone.
    Subzone,
    /// Same node.
    Node,
    /// Same cluster.
    Cluster,
    /// Same network.
    Network,
}

/// How routing preferences apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LoadBalancingMode {
    /// Not set: no preference.
    #[default]
    Unspecified,
    /// Only endpoints matching every preference.
    Strict,
    /// Prefer more matching preferences, fall back to fewer.
    Failover,
    /// No selection: connect to the original destination.
    Passthrough,
}

/// Whether unhealthy endpoints may be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HealthPolicy {
    /// Healthy endpoints only.
    #[default]
    OnlyHealthy,
    /// Any endpoint.
    AllowAll,
}

/// Address families a service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IpFamilies {
    /// From its addresses.
    #[default]
    Automatic,
    /// IPv4 only.
    Ipv4Only,
    /// IPv6 only.
    Ipv6Only,
    /// Both.
    Dual,
}

// === impl Service ===

impl Service {
    /// The xDS resource name: `namespace/hostname`.
    pub fn key(&self) -> NamespacedHostname {
        NamespacedHostname { namespace: self.namespace.clone(), hostname: self.hostname.clone() }
    }
}

impl TryFrom<&pb::Service> for Service {
    type Error = ConvertError;

    fn try_from(p: &pb::Service) -> Result<Self, Self::Error> {
        if p.namespace.is_empty() {
            return Err(ConvertError::Missing("service.namespace"));
        }
        if p.hostname.is_empty() {
            return Err(ConvertError::Missing("service.hostname"));
        }
        Ok(Self {
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            hostname: p.hostname.clone(),
            vips: p
                .addresses
                .iter()
                .map(|a| NetworkAddress::from_proto("service.addresses", a))
                .collect::<Result<_, _>>()?,
            ports: p.ports.iter().map(PortMapping::from_proto).collect::<Result<_, _>>()?,
            subject_alt_names: p.subject_alt_names.clone(),
            waypoint: p
                .waypoint
                .as_ref()
                .map(|g| GatewayAddress::from_proto("service.waypoint", g))
                .transpose()?,
            load_balancing: p.load_balancing.as_ref().map(load_balancing_from).transpose()?,
            ip_families: match convert::enumeration("service.ip_families", p.ip_families)? {
                pb::IpFamilies::Automatic => IpFamilies::Automatic,
                pb::IpFamilies::Ipv4Only => IpFamilies::Ipv4Only,
                pb::IpFamilies::Ipv6Only => IpFamilies::Ipv6Only,
                pb::IpFamilies::Dual => IpFamilies::Dual,
            },
            canonical: p.canonical,
        })
    }
}

fn load_balancing_from(p: &pb::LoadBalancing) -> Result<LoadBalancing, ConvertError> {
    use pb::load_balancing::{HealthPolicy as PH, Mode as PM, Scope as PS};
    let routing_preference = p
        .routing_preference
        .iter()
        .map(|v| {
            Ok(match convert::enumeration("load_balancing.routing_preference", *v)? {
                PS::UnspecifiedScope => {
                    return Err(ConvertError::UnknownEnum {
                        field: "load_balancing.routing_preference",
                        value: *v,
                    });
                }
                PS::Region => Scope::Region,
                PS::Zone => Scope::Zone,
                PS::Subzone => Scope::Subzone,
                PS::Node => Scope::Node,
                PS::Cluster => Scope::Cluster,
                PS::Network => Scope::Network,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(LoadBalancing {
        routing_preference,
        mode: match convert::enumeration("load_balancing.mode", p.mode)? {
            PM::UnspecifiedMode => LoadBalancingMode::Unspecified,
            PM::Strict => LoadBalancingMode::Strict,
            PM::Failover => LoadBalancingMode::Failover,
            PM::Passthrough => LoadBalancingMode::Passthrough,
        },
        health_policy: match convert::enumeration("load_balancing.health_policy", p.health_policy)?
        {
            PH::OnlyHealthy => HealthPolicy::OnlyHealthy,
            PH::AllowAll => HealthPolicy::AllowAll,
        },
    })
}

impl From<&Service> for pb::Service {
    fn from(d: &Service) -> Self {
        use pb::load_balancing::{HealthPolicy as PH, Mode as PM, Scope as PS};
        Self {
            name: d.name.clone(),
            namespace: d.namespace.clone(),
            hostname: d.hostname.clone(),
            addresses: d.vips.iter().map(Into::into).collect(),
            ports: d.ports.iter().map(Into::into).collect(),
            subject_alt_names: d.subject_alt_names.clone(),
            waypoint: d.waypoint.as_ref().map(Into::into),
            load_balancing: d.load_balancing.as_ref().map(|lb| pb::LoadBalancing {
                routing_preference: lb
                    .routing_preference
                    .iter()
                    .map(|s| {
                        (match s {
                            Scope::Region => PS::Region,
                            Scope::Zone => PS::Zone,
                            Scope::Subzone => PS::Subzone,
                            Scope::Node => PS::Node,
                            Scope::Cluster => PS::Cluster,
                            Scope::Network => PS::Network,
                        }) as i32
                    })
                    .collect(),
                mode: match lb.mode {
                    LoadBalancingMode::Unspecified => PM::UnspecifiedMode,
                    LoadBalancingMode::Strict => PM::Strict,
                    LoadBalancingMode::Failover => PM::Failover,
                    LoadBalancingMode::Passthrough => PM::Passthrough,
                } as i32,
                health_policy: match lb.health_policy {
                    HealthPolicy::OnlyHealthy => PH::OnlyHealthy,
                    HealthPolicy::AllowAll => PH::AllowAll,
                } as i32,
                dns_connect_strategy: 0,
            }),
            ip_families: match d.ip_families {
                IpFamilies::Automatic => pb::IpFamilies::Automatic,
                IpFamilies::Ipv4Only => pb::IpFamilies::Ipv4Only,
                IpFamilies::Ipv6Only => pb::IpFamilies::Ipv6Only,
                IpFamilies::Dual => pb::IpFamilies::Dual,
            } as i32,
            extensions: Vec::new(),
            canonical: d.canonical,
        }
    }
}
