//! Choosing an endpoint for one attempt: the load-balancing policy, the
//! connection-pool limit on requests in flight, and outlier ejection
//! (consecutive 5xx). State is kept per service (or subset) and per
//! endpoint; an endpoint's state goes when it leaves the service.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::{LoadBalancer, TrafficPolicy};

/// A place an attempt can go: one workload, on one port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The workload's uid (as in WDS).
    pub uid: Arc<str>,
    /// Its address and the port its service port maps to.
    pub address: SocketAddr,
}

/// Why no endpoint was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// The service has no endpoints.
    #[error("no healthy upstream")]
    NoEndpoints,
    /// `connectionPool` limit reached.
    #[error("upstream overflow: too many requests in flight")]
    Overflow,
}

#[derive(Default)]
struct EndpointState {
    in_flight: Arc<AtomicU32>,
    failures: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
}

#[derive(Default)]
struct Group {
    in_flight: Arc<AtomicU32>,
    next: AtomicUsize,
    endpoints: HashMap<Endpoint, EndpointState>,
    /// The candidates of the last pick: state is reconciled only when they
    /// change, not on every request.
    known: Vec<Endpoint>,
}

/// Balancing state of every service (or subset) the proxy sends to.
#[derive(Default)]
pub struct Balancer {
    groups: Mutex<HashMap<String, Group>>,
}

/// A chosen endpoint; counted in flight until dropped.
#[derive(Debug)]
pub struct Picked {
    /// The endpoint.
    pub endpoint: Endpoint,
    group: String,
    counters: [Arc<AtomicU32>; 2],
}

impl Drop for Picked {
    fn drop(&mut self) {
        for c in &self.counters {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn hash_of(endpoint: &Endpoint, key: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    endpoint.hash(&mut h);
    h.finish()
}

impl Balancer {
    /// Chooses an endpoint of `group` (a service or subset key) among
    /// `candidates`, by `policy`. `hash` is the request's hash key for the
    /// hashing policies.
    pub fn pick(
        &self,
        group: &str,
        candidates: &[Endpoint],
        policy: &TrafficPolicy,
        hash: Option<u64>,
    ) -> Result<Picked, PickError> {
        if candidates.is_empty() {
            return Err(PickError::NoEndpoints);
        }
        let now = Instant::now();
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let g = groups.entry(group.to_string()).or_default();
        if policy.max_requests > 0 && g.in_flight.load(Ordering::Relaxed) >= policy.max_requests {
            return Err(PickError::Overflow);
        }
        if g.known != candidates {
            let now: std::collections::HashSet<&Endpoint> = candidates.iter().collect();
            g.endpoints.retain(|e, _| now.contains(e));
            for c in candidates {
                g.endpoints.entry(c.clone()).or_default();
            }
            g.known = candidates.to_vec();
        }
        let healthy: Vec<&Endpoint> = candidates
            .iter()
            .filter(|e| g.endpoints.get(*e).and_then(|s| s.ejected_until).is_none_or(|t| t <= now))
            .collect();
        // Every endpoint ejected: use them all (Envoy's panic threshold),
        // rather than refuse a service that may have recovered.
        let pool: Vec<&Endpoint> =
            if healthy.is_empty() { candidates.iter().collect() } else { healthy };
        let chosen = match (&policy.load_balancer, hash) {
            (
                LoadBalancer::HashHeader(_)
                | LoadBalancer::HashCookie(_)
                | LoadBalancer::HashSourceIp,
                Some(key),
            ) => {
                // Rendezvous hashing: a key keeps its endpoint while that
                // endpoint stays, and only its keys move when it goes.
                pool.iter().max_by_key(|e| hash_of(e, key)).copied()
            }
            (LoadBalancer::RoundRobin, _) => {
                Some(pool[g.next.fetch_add(1, Ordering::Relaxed) % pool.len()])
            }
            (LoadBalancer::Random, _) => Some(pool[fastrand::usize(..pool.len())]),
            // Least request (and a hash policy with nothing to hash): the
            // less loaded of two chosen at random.
            _ => {
                let a = pool[fastrand::usize(..pool.len())];
                let b = pool[fastrand::usize(..pool.len())];
                let load = |e: &Endpoint| {
                    g.endpoints.get(e).map_or(0, |s| s.in_flight.load(Ordering::Relaxed))
                };
                Some(if load(b) < load(a) { b } else { a })
            }
        };
        let endpoint = chosen.ok_or(PickError::NoEndpoints)?.clone();
        let per_endpoint =
            g.endpoints.get(&endpoint).map(|s| s.in_flight.clone()).unwrap_or_default();
        per_endpoint.fetch_add(1, Ordering::Relaxed);
        g.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Picked {
            endpoint,
            group: group.to_string(),
            counters: [per_endpoint, g.in_flight.clone()],
        })
    }

    /// Records an attempt's outcome for outlier detection: `failed` for a
    /// 5xx answer or no connection.
    pub fn report(&self, picked: &Picked, failed: bool, policy: &TrafficPolicy) {
        let Some(outlier) = &policy.outlier else { return };
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let Some(g) = groups.get_mut(&picked.group) else { return };
        let now = Instant::now();
        let total = g.endpoints.len().max(1);
        let ejected =
            g.endpoints.values().filter(|s| s.ejected_until.is_some_and(|t| t > now)).count();
        let Some(state) = g.endpoints.get_mut(&picked.endpoint) else { return };
        if !failed {
            state.failures = 0;
            return;
        }
        state.failures += 1;
        let may_eject = (ejected + 1) * 100 <= total * outlier.max_ejection_percent as usize;
        if state.failures >= outlier.consecutive_5xx && may_eject {
            state.ejections = state.ejections.saturating_add(1);
            let factor = state.ejections.min(10);
            state.ejected_until = Some(now + outlier.base_ejection * factor);
            state.failures = 0;
            tracing::info!(endpoint = %picked.endpoint.address, group = %picked.group,
                for_ = ?outlier.base_ejection * factor, "outlier ejected");
        }
    }

    /// Whether `endpoint` of `group` is ejected now (for tests and debug).
    pub fn is_ejected(&self, group: &str, endpoint: &Endpoint) -> bool {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .get(group)
            .and_then(|g| g.endpoints.get(endpoint))
            .and_then(|s| s.ejected_until)
            .is_some_and(|t| t > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::time::Duration;

    use crate::config::Outlier;

    fn endpoints(n: u8) -> Vec<Endpoint> {
        (1..=n)
            .map(|i| Endpoint {
                uid: format!("w{i}").into(),
                address: format!("10.0.0.{i}:80").parse().unwrap(),
            })
            .collect()
    }

    #[test]
    fn round_robin_takes_turns() {
        let b = Balancer::default();
        let eps = endpoints(3);
        let policy =
            TrafficPolicy { load_balancer: LoadBalancer::RoundRobin, ..Default::default() };
        let picks: Vec<_> = (0..6)
            .map(|_| b.pick("s", &eps, &policy, None).unwrap().endpoint.uid.to_string())
            .collect();
        assert_eq!(picks, ["w1", "w2", "w3", "w1", "w2", "w3"]);
    }

    #[test]
    fn hashing_keeps_a_key_on_its_endpoint_and_moves_only_its_keys() {
        let b = Balancer::default();
        let eps = endpoints(4);
        let policy =
            TrafficPolicy { load_balancer: LoadBalancer::HashSourceIp, ..Default::default() };
        let before: Vec<_> = (0..200u64)
            .map(|k| b.pick("s", &eps, &policy, Some(k)).unwrap().endpoint.clone())
            .collect();
        let again: Vec<_> = (0..200u64)
            .map(|k| b.pick("s", &eps, &policy, Some(k)).unwrap().endpoint.clone())
            .collect();
        assert_eq!(before, again);
        let fewer = &eps[..3];
        for (k, was) in before.iter().enumerate() {
            let now = b.pick("s", fewer, &policy, Some(k as u64)).unwrap().endpoint.clone();
            if was != &eps[3] {
                assert_eq!(&now, was, "key {k} moved though its endpoint stayed");
            }
        }
        let spread: std::collections::HashSet<_> = before.iter().collect();
        assert_eq!(spread.len(), 4, "keys spread over every endpoint");
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let b = Balancer::default();
        let eps = endpoints(2);
        let policy = TrafficPolicy::default();
        let busy: Vec<_> =
            (0..20).map(|_| b.pick("s", &eps[..1], &policy, None).unwrap()).collect();
        let picks = (0..50)
            .filter(|_| b.pick("s", &eps, &policy, None).unwrap().endpoint == eps[1])
            .count();
        // Two random choices: the idle endpoint wins unless both draws hit the busy one (1 in 4).
        assert!(picks > 25, "idle endpoint chosen {picks} of 50 times");
        drop(busy);
    }

    #[test]
    fn the_request_limit_overflows_and_frees() {
        let b = Balancer::default();
        let eps = endpoints(2);
        let policy = TrafficPolicy { max_requests: 2, ..Default::default() };
        let first = b.pick("s", &eps, &policy, None).unwrap();
        let _second = b.pick("s", &eps, &policy, None).unwrap();
        assert_eq!(b.pick("s", &eps, &policy, None).unwrap_err(), PickError::Overflow);
        drop(first);
        assert!(b.pick("s", &eps, &policy, None).is_ok());
        assert_eq!(b.pick("s", &[], &policy, None).unwrap_err(), PickError::NoEndpoints);
    }

    #[test]
    fn consecutive_failures_eject_within_the_allowed_share() {
        let b = Balancer::default();
        let eps = endpoints(2);
        let policy = TrafficPolicy {
            load_balancer: LoadBalancer::RoundRobin,
            outlier: Some(Outlier {
                consecutive_5xx: 2,
                base_ejection: Duration::from_secs(60),
                max_ejection_percent: 50,
            }),
            ..Default::default()
        };
        // Round robin: picks alternate w1, w2, w1, ...
        let first = b.pick("s", &eps, &policy, None).unwrap();
        assert_eq!(first.endpoint, eps[0]);
        b.report(&first, true, &policy);
        assert!(!b.is_ejected("s", &eps[0]), "one failure is not enough");
        let other = b.pick("s", &eps, &policy, None).unwrap();
        b.report(&other, false, &policy);
        let again = b.pick("s", &eps, &policy, None).unwrap();
        assert_eq!(again.endpoint, eps[0]);
        b.report(&again, true, &policy);
        assert!(b.is_ejected("s", &eps[0]));
        for _ in 0..10 {
            assert_eq!(
                b.pick("s", &eps, &policy, None).unwrap().endpoint,
                eps[1],
                "ejected endpoint skipped"
            );
        }
        // 50 %: the second endpoint may not be ejected too.
        for _ in 0..4 {
            let p = b.pick("s", &eps, &policy, None).unwrap();
            b.report(&p, true, &policy);
        }
        assert!(!b.is_ejected("s", &eps[1]));
    }
}
