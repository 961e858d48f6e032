//! The server's resources: per type URL, name → (version, body), plus a
//! bounded log of which names changed at which generation.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use prost_types::Any;
use tokio::sync::watch;

/// Changes kept per type before a slow client falls back to a full diff.
const CHANGE_LOG_LIMIT: usize = 100_000;

/// One stored resource.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// Derived from the content: equal content, equal version, across
    /// restarts too, so a reconnecting client is not resent what it has.
    pub(crate) version: String,
    pub(crate) body: Any,
}

/// A change to apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Add or replace a resource.
    Put {
        /// Type URL.
        type_url: String,
        /// Resource name.
        name: String,
        /// The resource.
        body: Any,
    },
    /// Remove a resource.
    Remove {
        /// Type URL.
        type_url: String,
        /// Resource name.
        name: String,
    },
}

#[derive(Default)]
struct TypeState {
    resources: HashMap<String, Arc<Entry>>,
    /// (generation, name), oldest first.
    log: VecDeque<(u64, String)>,
    /// Generations after this one are all in `log`.
    log_floor: u64,
}

#[derive(Default)]
struct State {
    generation: u64,
    types: HashMap<String, TypeState>,
}

/// Resources served by [`crate::DeltaAdsServer`]. Cheap to clone; clones
/// share the store.
#[derive(Clone)]
pub struct SnapshotStore {
    state: Arc<RwLock<State>>,
    generation: watch::Sender<u64>,
}

/// What changed for one type since a generation.
pub(crate) enum Since {
    /// These names (may repeat, may no longer exist).
    Names(Vec<String>),
    /// The log no longer reaches back that far: compare everything.
    Everything,
}

impl Default for SnapshotStore {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotStore {
    /// An empty store.
    pub fn new() -> Self {
        Self { state: Arc::default(), generation: watch::Sender::new(0) }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies changes as one generation, and wakes every stream once.
    /// Putting a resource with unchanged content is not a change.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) {
        let mut state = self.write();
        let generation = state.generation + 1;
        let mut changed = false;
        for change in changes {
            let (type_url, name, entry) = match change {
                Change::Put { type_url, name, body } => {
                    let entry = Entry { version: version_of(&body), body };
                    (type_url, name, Some(entry))
                }
                Change::Remove { type_url, name } => (type_url, name, None),
            };
            let ts = state.types.entry(type_url).or_default();
            let differs = match (&entry, ts.resources.get(&name)) {
                (Some(new), Some(old)) => new.version != old.version,
                (None, None) => false,
                _ => true,
            };
            if !differs {
                continue;
            }
            match entry {
                Some(e) => ts.resources.insert(name.clone(), Arc::new(e)),
                None => ts.resources.remove(&name),
            };
            ts.log.push_back((generation, name));
            while ts.log.len() > CHANGE_LOG_LIMIT {
                if let Some((g, _)) = ts.log.pop_front() {
                    ts.log_floor = g;
                }
            }
            changed = true;
        }
        if changed {
            state.generation = generation;
            drop(state);
            self.generation.send_replace(generation);
        }
    }

    /// Adds or replaces one resource.
    pub fn put(&self, type_url: &str, name: &str, body: Any) {
        self.apply([Change::Put { type_url: type_url.into(), name: name.into(), body }]);
    }

    /// Removes one resource.
    pub fn remove(&self, type_url: &str, name: &str) {
        self.apply([Change::Remove { type_url: type_url.into(), name: name.into() }]);
    }

    /// Names of the resources of a type.
    pub fn names(&self, type_url: &str) -> Vec<String> {
        self.read()
            .types
            .get(type_url)
            .map(|t| t.resources.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The version of one resource.
    pub fn version(&self, type_url: &str, name: &str) -> Option<String> {
        self.read().types.get(type_url)?.resources.get(name).map(|e| e.version.clone())
    }

    /// The current generation (bumped by every effective change).
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub(crate) fn get(&self, type_url: &str, name: &str) -> Option<Arc<Entry>> {
        self.read().types.get(type_url)?.resources.get(name).cloned()
    }

    /// Every (name, entry) of a type.
    pub(crate) fn all(&self, type_url: &str) -> Vec<(String, Arc<Entry>)> {
        self.read()
            .types
            .get(type_url)
            .map(|t| t.resources.iter().map(|(n, e)| (n.clone(), e.clone())).collect())
            .unwrap_or_default()
    }

    /// Names of a type changed after generation `since`.
    pub(crate) fn changed_since(&self, type_url: &str, since: u64) -> Since {
        let state = self.read();
        let Some(ts) = state.types.get(type_url) else {
            return Since::Names(Vec::new());
        };
        if since < ts.log_floor {
            return Since::Everything;
        }
        // The log is ordered by generation: find the first newer entry.
        let start = ts.log.partition_point(|(g, _)| *g <= since);
        Since::Names(ts.log.iter().skip(start).map(|(_, n)| n.clone()).collect())
    }
}

/// A version that changes exactly when the content does.
fn version_of(body: &Any) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(body.type_url.as_bytes());
    ctx.update(&[0]);
    ctx.update(&body.value);
    ctx.finish().as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(v: &[u8]) -> Any {
        Any { type_url: "t".into(), value: v.to_vec() }
    }

    #[test]
    fn versions_follow_content() {
        let store = SnapshotStore::new();
        store.put("t", "a", any(b"1"));
        let v1 = store.version("t", "a").unwrap();
        let g1 = store.generation();
        store.put("t", "a", any(b"1"));
        assert_eq!(store.generation(), g1, "same content is not a change");
        store.put("t", "a", any(b"2"));
        assert_ne!(store.version("t", "a").unwrap(), v1);
        assert_eq!(store.generation(), g1 + 1);
        store.remove("t", "missing");
        assert_eq!(store.generation(), g1 + 1, "removing nothing is not a change");
    }

    #[test]
    fn change_log_names_what_changed() {
        let store = SnapshotStore::new();
        store.put("t", "a", any(b"1"));
        let g = store.generation();
        store.apply([
            Change::Put { type_url: "t".into(), name: "b".into(), body: any(b"1") },
            Change::Remove { type_url: "t".into(), name: "a".into() },
        ]);
        match store.changed_since("t", g) {
            Since::Names(names) => assert_eq!(names, ["b", "a"]),
            Since::Everything => panic!("log should reach back"),
        }
        match store.changed_since("t", store.generation()) {
            Since::Names(names) => assert!(names.is_empty()),
            Since::Everything => panic!("nothing changed"),
        }
    }
}
