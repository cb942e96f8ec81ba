//! The reader handles OCI layouts as skopeo writes them (`skopeo copy ... oci:DIR:NAME`), with
//! full references and bare tags as names, a multi-platform index copied with `--all`, and a
//! Docker schema 2 image that skopeo converts to OCI on the way in (skopeo's OCI layouts hold OCI
//! media types only, so that one comes from a `dir:` copy of the image).
//!
//! skopeo is required: scripts/setup.sh installs it. Without it this test fails; it does not skip.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use imager_cache::{Cache, InputForm, ReadOptions, list, verify};

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run skopeo ({e}); install it (Debian package skopeo, scripts/setup.sh)")
        });
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn oci(dir: &Path, name: &str) -> String {
    format!("oci:{}:{name}", dir.display())
}

#[test]
fn reads_layouts_written_by_skopeo() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fx.write_oci_layout(&src);
    let dst = tmp.path().join("dst");

    skopeo(&[
        "copy",
        "--all",
        &oci(&src, "docker.io/library/busybox:1.36"),
        &oci(&dst, "docker.io/library/busybox:1.36"),
    ]);
    for tag in ["v2", "latest"] {
        skopeo(&["copy", &oci(&src, tag), &oci(&dst, tag)]);
    }
    // skopeo's `dir:` transport: manifest.json, blobs named by bare hex, a version file.
    let app_dir = tmp.path().join("app-dir");
    let app_amd64 = fx.manifests["ghcr.io/example/app"]
        .values()
        .find(|m| top_media_type(m) == DOCKER_MANIFEST)
        .unwrap();
    std::fs::create_dir_all(&app_dir).unwrap();
    std::fs::write(app_dir.join("manifest.json"), app_amd64).unwrap();
    std::fs::write(
        app_dir.join("version"),
        "Directory Transport Version: 1.1\n",
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(app_amd64).unwrap();
    let blobs = std::iter::once(&v["config"]).chain(v["layers"].as_array().unwrap());
    for d in blobs {
        let d = d["digest"].as_str().unwrap();
        std::fs::write(app_dir.join(&d["sha256:".len()..]), &fx.blobs[d]).unwrap();
    }
    skopeo(&[
        "copy",
        &format!("dir:{}", app_dir.display()),
        &oci(&dst, "ghcr.io/example/app:v1"),
    ]);

    let opts = ReadOptions {
        ref_prefix: Some(TOOL_PREFIX.to_owned()),
        ..ReadOptions::default()
    };
    let cache = Cache::open(&dst, &opts).unwrap();
    assert_eq!(cache.form(), InputForm::OciLayout);
    let got = cache_files(&cache);

    // busybox's (OCI, --all) and tool's (OCI) manifests, tags and blobs come through byte for
    // byte: the same files as the flat tree the fixture defines. The app's manifest and config
    // are skopeo's conversion to OCI (its layers are checked below).
    let want = fx.flat_files();
    let app_config = fx.manifests["ghcr.io/example/app"]
        .values()
        .map(|m| serde_json::from_slice::<serde_json::Value>(m).unwrap())
        .find_map(|v| {
            v["config"]["digest"]
                .as_str()
                .map(|d| format!("blob/{}", d.replace(':', "-")))
        })
        .unwrap();
    for (path, bytes) in &want {
        if path.contains("example/app") || *path == app_config {
            continue;
        }
        assert!(got.get(path) == Some(bytes), "{path}: missing or different");
    }

    let report = verify(&cache).unwrap();
    assert!(report.is_ok(), "{:#?}", report.problems);
    assert!(report.warnings().next().is_none(), "{:#?}", report.problems);

    let images = list(&cache).unwrap();
    assert_lists_the_fixture(&images);
    // The app: skopeo rewrote the manifest as OCI; its layers are the fixture's (same bytes, same
    // digests).
    let app = &images[1];
    assert_ne!(app.digest.to_string(), digest(&fx.images[1].top));
    assert_eq!(app.media_type, OCI_MANIFEST);
    let app_manifest = &fx.manifests["ghcr.io/example/app"];
    let amd64: serde_json::Value = app_manifest
        .values()
        .map(|m| serde_json::from_slice::<serde_json::Value>(m).unwrap())
        .find(|v| v.get("config").is_some())
        .unwrap();
    for layer in amd64["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        let path = format!("blob/{}", d.replace(':', "-"));
        assert_eq!(got.get(&path), Some(&fx.blobs[d]), "{path}");
    }
}
