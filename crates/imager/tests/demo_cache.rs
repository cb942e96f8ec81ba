//! `testdata/demo-cache` is what its README says: a flat cache whose names are the sha256 of
//! their bytes and whose manifests point at blobs that are there, with the right sizes.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

fn listing() -> BTreeMap<String, imager_boot_test::FileDigest> {
    imager_boot_test::expected_listing(&common::demo_cache()).expect("list testdata/demo-cache")
}

#[test]
fn every_digest_name_is_the_sha256_of_the_content() {
    let listing = listing();
    let named: Vec<_> = listing
        .iter()
        .filter_map(|(path, d)| Some((path, d, path.rsplit('/').next()?.strip_prefix("sha256-")?)))
        .collect();
    assert!(named.len() >= 6, "{named:?}");
    for (path, digest, hex) in named {
        assert_eq!(hex, digest.sha256, "{path}");
    }
}

#[test]
fn references_are_copies_of_digest_files_and_descriptors_resolve() {
    let root = common::demo_cache();
    let listing = listing();
    let mut references = 0;
    for (path, digest) in &listing {
        let Some((repo, _tag)) = path.split_once("/reference/") else {
            continue;
        };
        references += 1;
        let by_digest = format!("{repo}/digest/sha256-{}", digest.sha256);
        assert!(
            listing.contains_key(&by_digest),
            "{path} has no {by_digest}"
        );
    }
    assert_eq!(references, 2);

    let mut manifests = 0;
    for path in listing.keys().filter(|p| p.contains("/digest/")) {
        let doc: Value = serde_json::from_slice(&std::fs::read(root.join(path)).unwrap())
            .unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
        let repo = path.split("/digest/").next().unwrap();
        match doc["mediaType"].as_str() {
            Some("application/vnd.oci.image.index.v1+json") => {
                let children = doc["manifests"].as_array().unwrap();
                let cached = children
                    .iter()
                    .filter(|c| {
                        let name = c["digest"].as_str().unwrap().replace(':', "-");
                        listing.contains_key(&format!("{repo}/digest/{name}"))
                    })
                    .count();
                // Only the amd64 child is cached; the index still names every platform.
                assert_eq!((children.len(), cached), (2, 1), "{path}");
            }
            Some("application/vnd.oci.image.manifest.v1+json") => {
                manifests += 1;
                let layers = doc["layers"].as_array().unwrap();
                for desc in std::iter::once(&doc["config"]).chain(layers) {
                    let blob = format!(
                        "blob/{}",
                        desc["digest"].as_str().unwrap().replace(':', "-")
                    );
                    let got = listing
                        .get(&blob)
                        .unwrap_or_else(|| panic!("{path}: {blob} missing"));
                    assert_eq!(Some(got.size), desc["size"].as_u64(), "{path}: {blob}");
                }
                check_diff_ids(&root, &doc);
            }
            other => panic!("{path}: unexpected mediaType {other:?}"),
        }
    }
    assert_eq!(manifests, 2);
}

/// A config's `rootfs.diff_ids` is the sha256 of its layer uncompressed, here by `gzip -dc`.
fn check_diff_ids(root: &Path, manifest: &Value) {
    let blob = |d: &Value| {
        root.join("blob")
            .join(d["digest"].as_str().unwrap().replace(':', "-"))
    };
    let config: Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest["config"])).unwrap()).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(diff_ids.len(), layers.len());
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let compressed = std::fs::read(blob(layer)).unwrap();
        let mut gzip = Command::new("gzip")
            .arg("-dc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run gzip");
        gzip.stdin.take().unwrap().write_all(&compressed).unwrap();
        let out = gzip.wait_with_output().unwrap();
        assert!(out.status.success());
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(&out.stdout));
        assert_eq!(diff_id.as_str(), Some(format!("sha256:{sha}").as_str()));
    }
}

#[test]
fn it_has_the_deep_long_name_and_stays_small() {
    let listing = listing();
    let deep = "manifests/ghcr.io/canonical/k8s-snap/sig-storage/csi-node-driver-registrar/digest/";
    let name = listing
        .keys()
        .find_map(|p| p.strip_prefix(deep))
        .expect("the deep manifest");
    assert_eq!(name.len(), 71);
    // Ten levels counting the volume root and the file (the upstream notes' count): `digest/` is
    // the ninth directory level with the root as the first, and ISO 9660 allows only eight.
    assert_eq!(format!("imagecache/{deep}{name}").split('/').count(), 9);
    let total: u64 = listing.values().map(|d| d.size).sum();
    assert!(total < 16 * 1024, "the demo cache grew to {total} bytes");
}
