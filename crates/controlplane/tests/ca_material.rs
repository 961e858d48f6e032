//! CA key material on disk: kept across restarts, checked when provided.

// Helpers outside #[test] fns panic on broken fixtures, as tests should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use controlplane::ca::{CaMaterial, MaterialError};

#[test]
fn generated_material_is_kept_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = CaMaterial::load_or_generate(dir.path(), "cluster.local").unwrap();
    let second = CaMaterial::load_or_generate(dir.path(), "cluster.local").unwrap();
    assert_eq!(first.cert_pem, second.cert_pem, "the CA keeps its identity across restarts");
    assert_eq!(first.key_pem, second.key_pem);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
    }
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn incomplete_or_mismatched_material_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let material = CaMaterial::generate("cluster.local").unwrap();
    std::fs::write(dir.path().join("ca-cert.pem"), &material.cert_pem).unwrap();
    let err = CaMaterial::load(dir.path()).unwrap_err();
    assert!(matches!(err, MaterialError::Incomplete { missing: "ca-key.pem", .. }), "{err}");

    let other = CaMaterial::generate("cluster.local").unwrap();
    std::fs::write(dir.path().join("ca-key.pem"), &other.key_pem).unwrap();
    std::fs::write(dir.path().join("root-cert.pem"), &material.root_pem).unwrap();
    let err = CaMaterial::load(dir.path()).unwrap_err();
    assert!(matches!(err, MaterialError::Bad { file: "ca-key.pem", .. }), "{err}");
    assert!(err.to_string().contains("does not match"));

    std::fs::write(dir.path().join("ca-key.pem"), "not a key").unwrap();
    let err = CaMaterial::load(dir.path()).unwrap_err();
    assert!(matches!(err, MaterialError::Bad { file: "ca-key.pem", .. }), "{err}");

    std::fs::write(dir.path().join("ca-key.pem"), &material.key_pem).unwrap();
    std::fs::write(dir.path().join("root-cert.pem"), &other.root_pem).unwrap();
    let err = CaMaterial::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("is not signed by"), "{err}");

    assert!(CaMaterial::load(&dir.path().join("empty")).unwrap().is_none());
}
