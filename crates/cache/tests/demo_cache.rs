//! The repository's example cache (testdata/demo-cache, written by an independent Python script)
//! verifies and lists as its README describes.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use imager_cache::{ProblemKind, list_flat, verify_flat};

#[test]
fn demo_cache_verifies_and_lists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/demo-cache");
    let report = verify_flat(&root).unwrap();
    assert!(report.is_ok(), "{:#?}", report.problems);
    // The busybox index names an arm64 child that is deliberately not cached.
    let warnings: Vec<_> = report.warnings().map(|p| p.kind).collect();
    assert_eq!(warnings, [ProblemKind::MissingChildManifest]);

    let images = list_flat(&root).unwrap();
    let refs: Vec<(&str, &[String])> = images
        .iter()
        .map(|i| (i.reference.as_str(), i.platforms.as_slice()))
        .collect();
    assert_eq!(
        refs,
        [
            (
                "docker.io/library/busybox:latest",
                &["linux/amd64".to_owned()][..]
            ),
            (
                "ghcr.io/canonical/k8s-snap/sig-storage/csi-node-driver-registrar:v2.13.0",
                &["linux/amd64".to_owned()][..]
            ),
        ]
    );
}
