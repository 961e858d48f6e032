//! Client TLS configurations, built once per source certificate and set of
//! expected destination identities.
//!
//! Building one parses the private key (a scalar multiplication to check
//! it) and allocates the verifier. Pool keys also carry the destination
//! address, and a service's pods share one identity, so keying configs by
//! address would build the same configuration again for every new pod a
//! client reaches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mesh_core::Identity;
use rustls::ClientConfig;

use crate::cert::WorkloadCertificate;
use crate::sync::lock;
use crate::tls::{self, TlsError};

/// Distinct (source, destinations) pairs kept; past this the cache starts
/// over, which costs one rebuild per pair still in use.
const MAX_CONFIGS: usize = 1024;

type ConfigKey = (Identity, Vec<Identity>);

/// Built configurations, each with the certificate it presents. Each also
/// holds the TLS sessions won with it, when resuming: that is what scopes a
/// session to the identities it was verified against.
#[derive(Default)]
pub(super) struct ClientConfigs {
    resume: bool,
    built: Mutex<HashMap<ConfigKey, (WorkloadCertificate, Arc<ClientConfig>)>>,
}

impl ClientConfigs {
    /// Configurations that resume TLS sessions if `resume`.
    pub(super) fn new(resume: bool) -> Self {
        Self { resume, built: Mutex::default() }
    }

    /// The configuration presenting `cert` and accepting only
    /// `destinations` (sorted and deduplicated by the caller), built on
    /// first use and again after the certificate changed.
    pub(super) fn get(
        &self,
        cert: &WorkloadCertificate,
        destinations: &[Identity],
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let key = (cert.identity().clone(), destinations.to_vec());
        let mut built = lock(&self.built);
        if let Some((presented, config)) = built.get(&key)
            && presented.is_same(cert)
        {
            return Ok(config.clone());
        }
        let config = if self.resume {
            tls::client_config_with_resumption(cert, destinations)?
        } else {
            tls::client_config(cert, destinations)?
        };
        let config = Arc::new(config);
        if built.len() >= MAX_CONFIGS && !built.contains_key(&key) {
            built.clear();
        }
        built.insert(key, (cert.clone(), config.clone()));
        Ok(config)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.built).len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::test_certs::{identity, self_signed as cert};

    #[test]
    fn one_config_per_certificate_and_destinations() {
        let configs = ClientConfigs::default();
        let client = cert("client");
        let web = [identity("web")];
        let first = configs.get(&client, &web).unwrap();
        assert!(Arc::ptr_eq(&first, &configs.get(&client, &web).unwrap()), "reused");
        let other = configs.get(&client, &[identity("db")]).unwrap();
        assert!(!Arc::ptr_eq(&first, &other), "other destinations, other verifier");
        assert_eq!(configs.len(), 2);
    }

    #[test]
    fn a_new_certificate_gets_a_new_config() {
        let configs = ClientConfigs::default();
        let web = [identity("web")];
        let before = configs.get(&cert("client"), &web).unwrap();
        let rotated = cert("client");
        let after = configs.get(&rotated, &web).unwrap();
        assert!(!Arc::ptr_eq(&before, &after), "the old certificate is not presented again");
        assert!(Arc::ptr_eq(&after, &configs.get(&rotated, &web).unwrap()));
        assert_eq!(configs.len(), 1);
    }

    #[test]
    fn the_cache_is_bounded() {
        let configs = ClientConfigs::default();
        let client = cert("client");
        for i in 0..=MAX_CONFIGS {
            configs.get(&client, &[identity(&format!("sa-{i}"))]).unwrap();
        }
        assert!(configs.len() <= MAX_CONFIGS, "{}", configs.len());
    }
}
