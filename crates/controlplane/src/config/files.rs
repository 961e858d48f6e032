//! A directory of Kubernetes YAML as the config source, watched by polling
//! (portable, needs no inotify limits, and a second's delay is fine for a
//! local mesh).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};

use super::objects::{BadObject, parse_documents};
use super::state::ClusterState;

/// What a directory held at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The objects that parsed.
    pub state: ClusterState,
    /// The ones that did not, and why.
    pub bad: Vec<BadObject>,
}

/// Reads every `*.yaml`, `*.yml` and `*.json` file in `dir` (not
/// recursively, in name order).
pub fn load_dir(dir: &Path) -> Snapshot {
    let mut objects = Vec::new();
    let mut bad = Vec::new();
    let files = match list(dir) {
        Ok(files) => files,
        Err(e) => {
            bad.push(BadObject {
                source: dir.display().to_string(),
                object: None,
                reason: format!("cannot read directory: {e}"),
            });
            return Snapshot { state: ClusterState::default(), bad };
        }
    };
    for (path, _, _) in files {
        let source = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let (parsed, errors) = parse_documents(&text, &source);
                objects.extend(parsed.into_iter().map(|o| (o, source.clone())));
                bad.extend(errors);
            }
            Err(e) => {
                bad.push(BadObject { source, object: None, reason: format!("cannot read: {e}") })
            }
        }
    }
    let (state, duplicates) = ClusterState::from_objects(objects);
    bad.extend(duplicates);
    Snapshot { state, bad }
}

type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

fn list(dir: &Path) -> std::io::Result<Fingerprint> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if wanted && path.is_file() {
            let meta = std::fs::metadata(&path)?;
            files.push((path, meta.modified().ok(), meta.len()));
        }
    }
    files.sort();
    Ok(files)
}

/// Loads `dir` now and again whenever a file is added, removed or changed
/// (checked every `interval`), publishing each snapshot. Runs until every
/// receiver is dropped.
pub async fn watch_dir(dir: PathBuf, interval: Duration, tx: watch::Sender<Arc<Snapshot>>) {
    let mut last: Option<Fingerprint> = None;
    loop {
        let now = list(&dir).ok();
        if now.is_none() || now != last {
            let snapshot = load_dir(&dir);
            for bad in &snapshot.bad {
                warn!(%bad, "skipping object");
            }
            info!(dir = %dir.display(), pods = snapshot.state.pods.len(),
                bad = snapshot.bad.len(), "config loaded");
            if tx.send(Arc::new(snapshot)).is_err() {
                return;
            }
            last = now;
        }
        tokio::time::sleep(interval).await;
        if tx.is_closed() {
            return;
        }
    }
}
