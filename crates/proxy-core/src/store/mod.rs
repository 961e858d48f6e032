//! The workload store: what xDS said about workloads, services and
//! authorization policies, indexed for per-connection lookups.
//!
//! Readers take a cheap read lock per lookup and get `Arc`s back, so a
//! connection never holds the lock while it does I/O. Every applied change
//! bumps a version on a `watch` channel, so tasks (certificate tracking,
//! per-pod proxies) can react to changes.

mod handlers;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use mesh_core::policy::{Authorization, PolicyScope};
use mesh_core::{Address, NamespacedHostname, NetworkMode, PortMapping, Service, Workload};
use tokio::sync::watch;

pub use self::handlers::{AddressHandler, AuthorizationHandler};

/// Workloads, services and policies, with indexes.
#[derive(Debug)]
pub struct WorkloadStore {
    state: RwLock<State>,
    version: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    workloads: HashMap<String, Arc<Workload>>,
    /// (network, ip) → workload uid. Host-network workloads are not indexed:
    /// their address is the node's.
    by_ip: HashMap<(String, IpAddr), String>,
    services: HashMap<NamespacedHostname, Arc<Service>>,
    /// (network, vip) → service.
    by_vip: HashMap<(String, IpAddr), NamespacedHostname>,
    /// hostname → services with it (one per namespace at most, usually one).
    by_hostname: HashMap<String, BTreeSet<NamespacedHostname>>,
    /// service → uids of the workloads that list it.
    endpoints: HashMap<NamespacedHostname, BTreeSet<String>>,
    /// `namespace/name` → policy.
    policies: HashMap<String, Arc<Authorization>>,
}

/// One endpoint of a service: the workload and the ports it maps.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The workload.
    pub workload: Arc<Workload>,
    /// Its port mappings for the service (may be empty: use the service's).
    pub ports: Vec<PortMapping>,
}

/// Sizes, for metrics and the admin endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreCounts {
    /// Workloads.
    pub workloads: usize,
    /// Services.
    pub services: usize,
    /// Policies.
    pub policies: usize,
}

impl Default for WorkloadStore {
    fn default() -> Self {
        Self { state: RwLock::default(), version: watch::Sender::new(0) }
    }
}

impl WorkloadStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Changes every time the store changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    // === writes ===

    /// Inserts or replaces a workload or service.
    pub fn insert(&self, address: Address) {
        let mut state = self.write();
        match address {
            Address::Workload(w) => state.insert_workload(Arc::from(w)),
            Address::Service(s) => state.insert_service(Arc::from(s)),
        }
        drop(state);
        self.bump();
    }

    /// Removes the workload or service with this xDS resource name (a
    /// workload uid or `namespace/hostname`). Unknown names are ignored.
    pub fn remove(&self, name: &str) {
        let mut state = self.write();
        if !state.remove_workload(name)
            && let Some((namespace, hostname)) = name.split_once('/')
        {
            let key = NamespacedHostname {
                namespace: namespace.to_string(),
                hostname: hostname.to_string(),
            };
            state.remove_service(&key);
        }
        drop(state);
        self.bump();
    }

    /// Inserts or replaces a policy.
    pub fn insert_policy(&self, policy: Authorization) {
        self.write().policies.insert(policy.key(), Arc::new(policy));
        self.bump();
    }

    /// Removes a policy by `namespace/name`.
    pub fn remove_policy(&self, key: &str) {
        self.write().policies.remove(key);
        self.bump();
    }

    // === reads ===

    /// A workload by uid.
    pub fn workload(&self, uid: &str) -> Option<Arc<Workload>> {
        self.read().workloads.get(uid).cloned()
    }

    /// The workload that owns `ip` on `network`.
    pub fn workload_by_ip(&self, network: &str, ip: IpAddr) -> Option<Arc<Workload>> {
        let state = self.read();
        let uid = state.by_ip.get(&(network.to_string(), ip))?;
        state.workloads.get(uid).cloned()
    }

    /// The service with virtual IP `ip` on `network`.
    pub fn service_by_vip(&self, network: &str, ip: IpAddr) -> Option<Arc<Service>> {
        let state = self.read();
        let key = state.by_vip.get(&(network.to_string(), ip))?;
        state.services.get(key).cloned()
    }

    /// A service by `namespace/hostname`.
    pub fn service(&self, key: &NamespacedHostname) -> Option<Arc<Service>> {
        self.read().services.get(key).cloned()
    }

    /// Services with this hostname (any namespace), in a stable order.
    pub fn services_by_hostname(&self, hostname: &str) -> Vec<Arc<Service>> {
        let state = self.read();
        let Some(keys) = state.by_hostname.get(hostname) else { return Vec::new() };
        keys.iter().filter_map(|k| state.services.get(k).cloned()).collect()
    }

    /// The workloads behind a service, in uid order.
    pub fn endpoints(&self, service: &NamespacedHostname) -> Vec<Endpoint> {
        let state = self.read();
        let Some(uids) = state.endpoints.get(service) else { return Vec::new() };
        uids.iter()
            .filter_map(|uid| state.workloads.get(uid))
            .map(|w| Endpoint {
                ports: w.services.get(service).cloned().unwrap_or_default(),
                workload: w.clone(),
            })
            .collect()
    }

    /// The policies that apply to `workload`: global ones, its namespace's,
    /// and those it lists by name. Ordered by key, for stable decisions.
    pub fn policies_for(&self, workload: &Workload) -> Vec<Arc<Authorization>> {
        let state = self.read();
        let mut out: Vec<(&String, &Arc<Authorization>)> = state
            .policies
            .iter()
            .filter(|(key, p)| match p.scope {
                PolicyScope::Global => true,
                PolicyScope::Namespace => p.namespace == workload.namespace,
                PolicyScope::WorkloadSelector => {
                    workload.authorization_policies.iter().any(|n| n == *key)
                }
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out.into_iter().map(|(_, p)| p.clone()).collect()
    }

    /// Every workload, in uid order (admin endpoint).
    pub fn workloads(&self) -> Vec<Arc<Workload>> {
        let state = self.read();
        let mut all: Vec<_> = state.workloads.values().cloned().collect();
        all.sort_by(|a, b| a.uid.cmp(&b.uid));
        all
    }

    /// Every service, in key order (admin endpoint).
    pub fn services(&self) -> Vec<Arc<Service>> {
        let state = self.read();
        let mut all: Vec<_> = state.services.values().cloned().collect();
        all.sort_by_key(|s| s.key());
        all
    }

    /// Every policy, in key order (admin endpoint).
    pub fn policies(&self) -> Vec<Arc<Authorization>> {
        let state = self.read();
        let mut all: Vec<_> = state.policies.iter().collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.into_iter().map(|(_, p)| p.clone()).collect()
    }

    /// How much is stored.
    pub fn counts(&self) -> StoreCounts {
        let state = self.read();
        StoreCounts {
            workloads: state.workloads.len(),
            services: state.services.len(),
            policies: state.policies.len(),
        }
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    // A panic while holding the lock cannot leave the indexes half-written
    // in a way later readers would trip over (each update is a few map
    // operations), so a poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl State ===

impl State {
    fn insert_workload(&mut self, workload: Arc<Workload>) {
        self.remove_workload(&workload.uid);
        if workload.network_mode == NetworkMode::Standard {
            for ip in &workload.addresses {
                self.by_ip.insert((workload.network.clone(), *ip), workload.uid.clone());
            }
        }
        for service in workload.services.keys() {
            self.endpoints.entry(service.clone()).or_default().insert(workload.uid.clone());
        }
        self.workloads.insert(workload.uid.clone(), workload);
    }

    /// Returns whether a workload was removed.
    fn remove_workload(&mut self, uid: &str) -> bool {
        let Some(old) = self.workloads.remove(uid) else { return false };
        for ip in &old.addresses {
            let key = (old.network.clone(), *ip);
            if self.by_ip.get(&key).is_some_and(|u| u == uid) {
                self.by_ip.remove(&key);
            }
        }
        for service in old.services.keys() {
            if let Some(uids) = self.endpoints.get_mut(service) {
                uids.remove(uid);
                if uids.is_empty() {
                    self.endpoints.remove(service);
                }
            }
        }
        true
    }

    fn insert_service(&mut self, service: Arc<Service>) {
        let key = service.key();
        self.remove_service(&key);
        for vip in &service.vips {
            self.by_vip.insert((vip.network.clone(), vip.address), key.clone());
        }
        self.by_hostname.entry(service.hostname.clone()).or_default().insert(key.clone());
        self.services.insert(key, service);
    }

    fn remove_service(&mut self, key: &NamespacedHostname) {
        let Some(old) = self.services.remove(key) else { return };
        for vip in &old.vips {
            let index = (vip.network.clone(), vip.address);
            if self.by_vip.get(&index) == Some(key) {
                self.by_vip.remove(&index);
            }
        }
        if let Some(keys) = self.by_hostname.get_mut(&old.hostname) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_hostname.remove(&old.hostname);
            }
        }
    }
}
