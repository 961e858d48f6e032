//! xDS handlers that fill the workload store.

use std::sync::Arc;

use mesh_core::Address;
use mesh_core::policy::{Action, Authorization, Rule};
use mesh_proto::{security, type_url, workload};
use prost::Message;
use xds::{Handler, Rejected, Update};

use super::WorkloadStore;

/// Applies `istio.workload.Address` resources.
#[derive(Debug, Clone)]
pub struct AddressHandler(pub Arc<WorkloadStore>);

/// Applies `istio.security.Authorization` resources.
#[derive(Debug, Clone)]
pub struct AuthorizationHandler(pub Arc<WorkloadStore>);

impl Handler for AddressHandler {
    fn type_url(&self) -> &str {
        type_url::ADDRESS
    }

    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejected>> {
        for name in &update.removed {
            self.0.remove(name);
        }
        let mut rejected = Vec::new();
        for (name, body) in update.resources {
            let parsed = workload::Address::decode(body.value.as_slice())
                .map_err(|e| format!("not an istio.workload.Address: {e}"))
                .and_then(|p| Address::try_from(&p).map_err(|e| e.to_string()));
            match parsed {
                Ok(address) if address.resource_name() == name => self.0.insert(address),
                Ok(address) => rejected.push(Rejected {
                    reason: format!(
                        "resource name does not match its content ({})",
                        address.resource_name()
                    ),
                    name,
                }),
                Err(reason) => rejected.push(Rejected { name, reason }),
            }
        }
        if rejected.is_empty() { Ok(()) } else { Err(rejected) }
    }
}

/// A policy carrying fields we do not declare (a newer control plane's:
/// protobuf drops them silently, so the re-encoded message is shorter than
/// what arrived) may have conditions we would not check. Read without
/// them it could match more (an ALLOW: allow more) or less (a DENY: deny
/// less), so it fails closed instead: an ALLOW allows nothing, a DENY
/// denies everything it applies to. Control planes encode canonically
/// (Go's and prost's proto3 encoders), so the lengths differ only then.
fn fail_closed_if_unread(mut policy: Authorization, unread_fields: bool) -> Authorization {
    if unread_fields {
        tracing::warn!(
            policy = %policy.key(),
            action = ?policy.action,
            "authorization policy has fields this proxy does not know; enforced fail-closed"
        );
        policy.rules = match policy.action {
            Action::Allow => Vec::new(),
            Action::Deny => vec![Rule::default()],
        };
    }
    policy
}

impl Handler for AuthorizationHandler {
    fn type_url(&self) -> &str {
        type_url::AUTHORIZATION
    }

    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejected>> {
        for name in &update.removed {
            self.0.remove_policy(name);
        }
        let mut rejected = Vec::new();
        for (name, body) in update.resources {
            let parsed = security::Authorization::decode(body.value.as_slice())
                .map_err(|e| format!("not an istio.security.Authorization: {e}"))
                .and_then(|p| {
                    let policy = Authorization::try_from(&p).map_err(|e| e.to_string())?;
                    Ok(fail_closed_if_unread(policy, p.encoded_len() != body.value.len()))
                });
            match parsed {
                Ok(policy) if policy.key() == name => self.0.insert_policy(policy),
                Ok(policy) => rejected.push(Rejected {
                    reason: format!("resource name does not match its content ({})", policy.key()),
                    name,
                }),
                Err(reason) => rejected.push(Rejected { name, reason }),
            }
        }
        if rejected.is_empty() { Ok(()) } else { Err(rejected) }
    }
}
