//! The WDS resource: an address is a workload or a service.

use mesh_proto::workload as pb;

use crate::convert::ConvertError;
use crate::{Service, Workload};

/// One `istio.workload.Address` resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A workload, named by its uid. (Both kinds are boxed: they are large
    /// and of very different sizes.)
    Workload(Box<Workload>),
    /// A service, named `namespace/hostname`.
    Service(Box<Service>),
}

impl Address {
    /// The xDS resource name.
    pub fn resource_name(&self) -> String {
        match self {
            Address::Workload(w) => w.uid.clone(),
            Address::Service(s) => s.key().to_string(),
        }
    }
}

impl TryFrom<&pb::Address> for Address {
    type Error = ConvertError;

    fn try_from(p: &pb::Address) -> Result<Self, Self::Error> {
        match &p.r#type {
            Some(pb::address::Type::Workload(w)) => Ok(Address::Workload(Box::new(w.try_into()?))),
            Some(pb::address::Type::Service(s)) => Ok(Address::Service(Box::new(s.try_into()?))),
            None => Err(ConvertError::Missing("address.type")),
        }
    }
}

impl From<&Address> for pb::Address {
    fn from(d: &Address) -> Self {
        Self {
            r#type: Some(match d {
                Address::Workload(w) => pb::address::Type::Workload(w.as_ref().into()),
                Address::Service(s) => pb::address::Type::Service(s.as_ref().into()),
            }),
        }
    }
}
