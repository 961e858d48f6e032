//! What can be wrong with a protobuf message on its way into the model.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::IdentityError;

/// Why a protobuf message could not become a domain value. Each variant
/// names the field, so a NACK tells the control plane what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// An address field does not hold 4 or 16 bytes.
    #[error("{field}: {len} bytes is not an IP address (need 4 or 16)")]
    BadIp {
        /// The field.
        field: &'static str,
        /// How many bytes it held.
        len: usize,
    },
    /// An enum field holds a value this version does not know.
    #[error("{field}: unknown value {value}")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value.
        value: i32,
    },
    /// A required field is empty or absent.
    #[error("{0} is missing or empty")]
    Missing(&'static str),
    /// A port is 0 where a port is required, or above 65535.
    #[error("{field}: {value} is not a valid port")]
    BadPort {
        /// The field.
        field: &'static str,
        /// The value.
        value: u32,
    },
    /// An IP block's prefix is longer than its address.
    #[error("{field}: prefix /{length} is too long for {address}")]
    BadPrefix {
        /// The field.
        field: &'static str,
        /// The address.
        address: IpAddr,
        /// The prefix length.
        length: u32,
    },
    /// A key that should read `namespace/hostname` does not.
    #[error("{field}: {value:?} is not \"<namespace>/<hostname>\"")]
    BadNamespacedName {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// The workload's identity parts do not form a SPIFFE identity.
    #[error("workload identity is invalid")]
    Identity(#[source] IdentityError),
}

/// Reads 4 or 16 bytes as an IP address.
pub(crate) fn ip_from_bytes(field: &'static str, bytes: &[u8]) -> Result<IpAddr, ConvertError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::V6(Ipv6Addr::from(v6)));
    }
    Err(ConvertError::BadIp { field, len: bytes.len() })
}

/// Writes an IP address as 4 or 16 bytes.
pub(crate) fn ip_to_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Reads a port that must not be 0.
pub(crate) fn port(field: &'static str, value: u32) -> Result<u16, ConvertError> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ConvertError::BadPort { field, value }),
    }
}

/// Reads a port where 0 means "unset".
pub(crate) fn port_or_zero(field: &'static str, value: u32) -> Result<u16, ConvertError> {
    u16::try_from(value).map_err(|_| ConvertError::BadPort { field, value })
}

/// Reads an enum field, naming it when the value is unknown.
pub(crate) fn enumeration<E: TryFrom<i32>>(
    field: &'static str,
    value: i32,
) -> Result<E, ConvertError> {
    E::try_from(value).map_err(|_| ConvertError::UnknownEnum { field, value })
}
