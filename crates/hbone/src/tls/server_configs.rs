//! Server TLS configurations shared by every server presenting the same
//! certificate, so that a session won with one of them resumes with the
//! others (tickets are encrypted with keys of one configuration).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mesh_core::Identity;
use rustls::ServerConfig;

use super::{TlsError, server_config, server_config_with_resumption};
use crate::cert::WorkloadCertificate;
use crate::sync::lock;

type ConfigKey = (Identity, Vec<String>);

/// Configurations in use, one per (identity, extra trust domains), each
/// with the certificate it presents. Held weakly: a configuration lives as
/// long as a server uses it.
pub struct ServerConfigs {
    ticket_lifetime: Option<Duration>,
    built: Mutex<HashMap<ConfigKey, (WorkloadCertificate, Weak<ServerConfig>)>>,
}

impl ServerConfigs {
    /// Configurations issuing session tickets valid for `ticket_lifetime`,
    /// or none when `None`.
    pub fn new(ticket_lifetime: Option<Duration>) -> Self {
        Self { ticket_lifetime, built: Mutex::default() }
    }

    /// The configuration presenting `cert` and accepting clients of its
    /// trust domain and `extra_trust_domains`: the one already in use for
    /// this certificate, or a new one (after a rotation, with new ticket
    /// keys: sessions of the old certificate are not resumed).
    pub fn get(
        &self,
        cert: &WorkloadCertificate,
        extra_trust_domains: &[String],
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let key = (cert.identity().clone(), extra_trust_domains.to_vec());
        let mut built = lock(&self.built);
        if let Some((presented, config)) = built.get(&key)
            && presented.is_same(cert)
            && let Some(config) = config.upgrade()
        {
            return Ok(config);
        }
        let config = Arc::new(match self.ticket_lifetime {
            Some(lifetime) => server_config_with_resumption(cert, extra_trust_domains, lifetime)?,
            None => server_config(cert, extra_trust_domains)?,
        });
        built.retain(|_, (_, config)| config.strong_count() > 0);
        built.insert(key, (cert.clone(), Arc::downgrade(&config)));
        Ok(config)
    }
}

impl std::fmt::Debug for ServerConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfigs")
            .field("ticket_lifetime", &self.ticket_lifetime)
            .field("configs", &lock(&self.built).len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::test_certs::self_signed as cert;

    #[test]
    fn servers_of_one_certificate_share_a_configuration() {
        let configs = ServerConfigs::new(Some(Duration::from_secs(60)));
        let web = cert("web");
        let first = configs.get(&web, &[]).unwrap();
        assert!(Arc::ptr_eq(&first, &configs.get(&web, &[]).unwrap()));
        assert!(first.ticketer.enabled());
        assert_eq!(first.send_tls13_tickets, 1);
        let db = configs.get(&cert("db"), &[]).unwrap();
        assert!(!Arc::ptr_eq(&first, &db), "another identity");
        let wider = configs.get(&web, &["other.td".into()]).unwrap();
        assert!(!Arc::ptr_eq(&first, &wider), "other trust domains, other verifier");
    }

    #[test]
    fn a_rotated_certificate_gets_new_ticket_keys() {
        let configs = ServerConfigs::new(Some(Duration::from_secs(60)));
        let before = configs.get(&cert("web"), &[]).unwrap();
        let after = configs.get(&cert("web"), &[]).unwrap();
        assert!(!Arc::ptr_eq(&before, &after));
        assert!(!Arc::ptr_eq(&before.ticketer, &after.ticketer));
    }

    #[test]
    fn unused_configurations_are_forgotten() {
        let configs = ServerConfigs::new(None);
        let web = cert("web");
        let first = configs.get(&web, &[]).unwrap();
        assert!(!first.ticketer.enabled(), "no tickets without a lifetime");
        drop(first);
        let _db = configs.get(&cert("db"), &[]).unwrap();
        assert_eq!(lock(&configs.built).len(), 1, "web's entry went with its last server");
        let _again = configs.get(&web, &[]).unwrap();
        assert_eq!(lock(&configs.built).len(), 2);
    }
}
