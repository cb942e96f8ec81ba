//! Every input form of the same cache materializes into the same flat tree, which verifies clean
//! and lists the same images.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::*;
use imager_cache::{
    InputForm, LayoutError, Platform, ProblemKind, ReadOptions, list, list_flat, materialize,
    verify, verify_flat,
};

fn opts_with_prefix() -> ReadOptions {
    ReadOptions {
        ref_prefix: Some(TOOL_PREFIX.to_owned()),
        ..ReadOptions::default()
    }
}

#[test]
fn every_form_gives_the_same_flat_tree() {
    let fx = Fixture::new();
    let want = fx.flat_files();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");

    let flat = tmp.path().join("flat");
    fx.write_flat(&flat);
    let wrapped = tmp.path().join("wrapped");
    fx.write_oci_wrapped(&wrapped);
    let layout = tmp.path().join("layout");
    fx.write_oci_layout(&layout);

    let opts = opts_with_prefix();
    let c = materialize(&flat, &opts, &scratch).unwrap();
    assert_eq!(c.form(), InputForm::Flat);
    assert_eq!(c.path(), flat, "a flat tree is used in place");
    assert_same_tree(&read_tree(c.path()), &want);

    let c = materialize(&wrapped, &opts, &scratch).unwrap();
    assert_eq!(c.form(), InputForm::OciWrapped);
    assert!(c.path().starts_with(&scratch));
    assert_same_tree(&read_tree(c.path()), &want);
    let kept_dir = c.path().to_owned();
    drop(c);
    assert!(
        !kept_dir.exists(),
        "a converted tree is removed with its FlatCache"
    );

    let c = materialize(&layout, &opts, &scratch).unwrap();
    assert_eq!(c.form(), InputForm::OciLayout);
    assert_same_tree(&read_tree(c.path()), &want);
    let kept = c.keep();
    assert!(kept.join("blob").is_dir(), "keep() leaves the tree on disk");
    fs::remove_dir_all(&kept).unwrap();

    // Nothing was left behind in the scratch directory.
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
}

#[test]
fn verify_passes_on_every_form_with_only_the_expected_warning() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    let forms = [
        (
            "flat",
            Fixture::write_flat as fn(&Fixture, &std::path::Path),
        ),
        ("wrapped", Fixture::write_oci_wrapped),
        ("layout", Fixture::write_oci_layout),
    ];
    for (name, write) in forms {
        let dir = tmp.path().join(name);
        write(&fx, &dir);
        let report = verify(&dir, &opts_with_prefix(), &scratch).unwrap();
        assert!(report.is_ok(), "{name}: {:#?}", report.problems);
        // The app's arm64 child is not cached: a warning, not an error.
        let warnings: Vec<_> = report.warnings().collect();
        assert_eq!(warnings.len(), 1, "{name}: {warnings:#?}");
        assert_eq!(warnings[0].kind, ProblemKind::MissingChildManifest);
        assert!(
            warnings[0].detail.contains("linux/arm64"),
            "{}",
            warnings[0].detail
        );
        assert!(
            warnings[0]
                .path
                .to_str()
                .unwrap()
                .starts_with("manifests/ghcr.io/example/app/digest/")
        );
        assert_eq!(report.repositories, 3);
        assert_eq!(report.tags, 4);
        assert_eq!(report.manifests, 6);
        assert_eq!(report.blobs as usize, fx.blobs.len());
        assert_eq!(
            report.blob_bytes as usize,
            fx.blobs.values().map(Vec::len).sum::<usize>()
        );
    }
}

#[test]
fn list_reports_images_platforms_and_sizes() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    fx.write_flat(tmp.path());
    let images = list_flat(tmp.path()).unwrap();
    assert_lists_the_fixture(&images);

    // busybox: its index, both children, each distinct blob once (base is shared by both).
    let bb = &images[0];
    assert_eq!(bb.digest.to_string(), digest(&fx.images[0].top));
    assert_eq!(bb.media_type, OCI_INDEX);
    let bb_manifests: usize = fx.manifests["docker.io/library/busybox"]
        .values()
        .map(Vec::len)
        .sum();
    let children: Vec<serde_json::Value> = fx.manifests["docker.io/library/busybox"]
        .values()
        .map(|m| serde_json::from_slice::<serde_json::Value>(m).unwrap())
        .filter(|v| v.get("config").is_some())
        .collect();
    let mut blob_digests = std::collections::BTreeSet::new();
    for c in &children {
        blob_digests.insert(c["config"]["digest"].as_str().unwrap().to_owned());
        for l in c["layers"].as_array().unwrap() {
            blob_digests.insert(l["digest"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(blob_digests.len(), 5, "2 configs, base, amd64, arm64");
    let blob_bytes: usize = blob_digests.iter().map(|d| fx.blobs[d].len()).sum();
    assert_eq!(bb.size as usize, bb_manifests + blob_bytes);

    let tool = &images[3];
    assert_eq!(tool.tag.as_deref(), Some("v2"));
    assert_eq!(tool.registry, "registry.example.com:5000");
    assert_eq!(tool.repository, "team/tool");

    // Serializable for --json.
    let json = serde_json::to_value(&images).unwrap();
    assert_eq!(json[1]["reference"], "ghcr.io/example/app:v1");
    assert_eq!(json[1]["media_type"], DOCKER_LIST);
    assert_eq!(json[1]["digest"], digest(&fx.images[1].top));
}

#[test]
fn digest_only_manifests_are_listed_by_digest() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut files = fx.flat_files();
    // Drop the tool's tags: its manifest is now cached by digest only.
    files.retain(|p, _| !p.contains("team/tool/reference/"));
    write_files(tmp.path(), &files);
    let images = list_flat(tmp.path()).unwrap();
    let tool: Vec<_> = images
        .iter()
        .filter(|i| i.repository == "team/tool")
        .collect();
    assert_eq!(tool.len(), 1);
    assert_eq!(tool[0].tag, None);
    assert_eq!(
        tool[0].reference,
        format!(
            "registry.example.com:5000/team/tool@{}",
            digest(&fx.images[2].top)
        )
    );
    // Index children are not listed as images of their own.
    assert_eq!(images.len(), 3);
    assert!(verify_flat(tmp.path()).unwrap().is_ok());
}

#[test]
fn list_works_on_layouts_too() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    fx.write_oci_layout(&layout);
    let from_layout = list(&layout, &opts_with_prefix(), &tmp.path().join("s")).unwrap();
    let flat = tmp.path().join("flat");
    fx.write_flat(&flat);
    assert_eq!(from_layout, list_flat(&flat).unwrap());
}

#[test]
fn wrapped_layout_with_one_image_per_platform() {
    let fx = Fixture::new();
    // An arm64 cache: only the busybox image, a different tree.
    let mut arm_files: BTreeMap<String, Vec<u8>> = fx.flat_files();
    arm_files.retain(|p, _| p.contains("busybox") || p.starts_with("blob/"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wrapped");
    write_wrapped(
        &dir,
        &[
            ("linux/amd64", fx.cache_layer()),
            ("linux/arm64", tar_of_tree(&arm_files)),
        ],
    );
    let scratch = tmp.path().join("scratch");

    let amd = materialize(&dir, &ReadOptions::default(), &scratch).unwrap();
    assert_same_tree(&read_tree(amd.path()), &fx.flat_files());
    let arm_opts = ReadOptions {
        platform: Platform::parse("linux/arm64").unwrap(),
        ..ReadOptions::default()
    };
    let arm = materialize(&dir, &arm_opts, &scratch).unwrap();
    assert_same_tree(&read_tree(arm.path()), &arm_files);

    let s390x = ReadOptions {
        platform: Platform::parse("linux/s390x").unwrap(),
        ..ReadOptions::default()
    };
    let err = materialize(&dir, &s390x, &scratch).unwrap_err();
    assert!(matches!(err, LayoutError::NoPlatform { .. }), "{err}");
    assert!(
        err.to_string().contains("linux/amd64, linux/arm64"),
        "{err}"
    );
}

#[test]
fn single_platform_wrapped_layout_refuses_another_platform() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wrapped");
    write_wrapped(&dir, &[("linux/arm64", fx.cache_layer())]);
    let err = materialize(&dir, &ReadOptions::default(), &tmp.path().join("s")).unwrap_err();
    assert!(matches!(err, LayoutError::NoPlatform { .. }), "{err}");
}

#[test]
fn bare_tags_need_a_prefix() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    fx.write_oci_layout(&layout);
    let scratch = tmp.path().join("scratch");
    let err = materialize(&layout, &ReadOptions::default(), &scratch).unwrap_err();
    assert!(
        matches!(&err, LayoutError::BareTag { tag, .. } if tag == "v2"),
        "{err}"
    );
    let bad = ReadOptions {
        ref_prefix: Some("registry.example.com/Team".to_owned()),
        ..ReadOptions::default()
    };
    let err = materialize(&layout, &bad, &scratch).unwrap_err();
    assert!(matches!(err, LayoutError::Prefix { .. }), "{err}");
    assert_eq!(
        fs::read_dir(&scratch).map_or(0, |d| d.count()),
        0,
        "nothing half-written"
    );
}

#[test]
fn not_a_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("s");
    let err = materialize(tmp.path(), &ReadOptions::default(), &scratch).unwrap_err();
    assert!(matches!(err, LayoutError::NotACache { .. }), "{err}");
    let missing = tmp.path().join("missing");
    let err = materialize(&missing, &ReadOptions::default(), &scratch).unwrap_err();
    assert!(matches!(err, LayoutError::Open { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    let file = tmp.path().join("file");
    fs::write(&file, b"").unwrap();
    let err = materialize(&file, &ReadOptions::default(), &scratch).unwrap_err();
    assert!(matches!(err, LayoutError::Open { .. }), "{err}");
}
