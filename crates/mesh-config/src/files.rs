//! A directory of Kubernetes YAML as the config source, watched by polling
//! (portable, needs no inotify limits, and a second's delay is fine for a
//! local mesh).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};

use super::last_valid::LastValid;
use super::objects::{BadObject, Documents};
use super::state::ClusterState;

/// What a directory (or the cluster) held at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The objects that parsed.
    pub state: ClusterState,
    /// The ones that did not, and why.
    pub bad: Vec<BadObject>,
    /// Kinds the mesh does not handle (`apiVersion kind`), with a count.
    pub ignored: BTreeMap<String, usize>,
    /// When the source was read (before its files were listed): a change
    /// made before this time is in the snapshot.
    pub read_at: Option<SystemTime>,
}

/// Reads every `*.yaml`, `*.yml` and `*.json` file in `dir` (not
/// recursively, in name order).
pub fn load_dir(dir: &Path) -> Snapshot {
    let read_at = Some(SystemTime::now());
    let mut documents = Documents::default();
    let mut objects = Vec::new();
    let mut bad = Vec::new();
    let files = match list(dir) {
        Ok(files) => files,
        Err(e) => {
            bad.push(BadObject::skipped(
                dir.display().to_string(),
                None,
                format!("cannot read directory: {e}"),
            ));
            return Snapshot { bad, read_at, ..Snapshot::default() };
        }
    };
    for (path, _, _) in files {
        let source = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                documents.read(&text, &source);
                objects.extend(documents.objects.drain(..).map(|o| (o, source.clone())));
            }
            Err(e) => bad.push(BadObject::skipped(source, None, format!("cannot read: {e}"))),
        }
    }
    bad.append(&mut documents.bad);
    let (state, duplicates) = ClusterState::from_objects(objects);
    bad.extend(duplicates);
    Snapshot { state, bad, ignored: documents.ignored, read_at }
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
/// (checked every `interval`), publishing each snapshot, with the last
/// valid version of each broken security object kept in force
/// ([`LastValid`]). Runs until every receiver is dropped.
pub async fn watch_dir(dir: PathBuf, interval: Duration, tx: watch::Sender<Arc<Snapshot>>) {
    let mut last: Option<Fingerprint> = None;
    let mut last_valid = LastValid::default();
    loop {
        let now = list(&dir).ok();
        if now.is_none() || now != last {
            let mut snapshot = load_dir(&dir);
            last_valid.apply(&mut snapshot.state, &mut snapshot.bad);
            for bad in &snapshot.bad {
                warn!(%bad, "object refused");
            }
            if !snapshot.ignored.is_empty() {
                info!(kinds = ?snapshot.ignored, "objects of kinds the mesh does not handle (ignored)");
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
