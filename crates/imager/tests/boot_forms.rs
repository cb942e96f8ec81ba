//! An ISO built from each input form of the image cache boots, and the node reads the same cache
//! from it: the demo cache given as upstream's oci-wrapped layout, and as a plain OCI image layout
//! (the form skopeo, oras and crane write). The flat form is the boot matrix's own input.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use imager_boot_test::{Attach, BootConfig, Firmware, ListingDiff, boot, expected_listing};
use sha2::{Digest as _, Sha256};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// The oci-wrapped form: one image whose single (uncompressed) tar layer holds the flat tree.
fn wrapped_layout(out: &Path) {
    imager_cache::oci_out::write_wrapped_layout(
        &common::demo_cache(),
        out,
        &[Some(imager_cache::Platform::linux_amd64())],
        0,
        &mut |_| {},
    )
    .unwrap();
}

/// A plain OCI image layout: every manifest and blob of the demo cache under `blobs/sha256/`, and
/// `index.json` naming each tagged image with `org.opencontainers.image.ref.name`, as
/// `skopeo copy ... oci:DIR:REF` does.
fn plain_layout(out: &Path) {
    let cache = common::demo_cache();
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for file in common::files_under(&cache) {
        let name = file.file_name().unwrap().to_str().unwrap();
        if let Some(hex) = name.strip_prefix("sha256-") {
            std::fs::copy(cache.join(&file), blobs.join(hex)).unwrap();
        }
    }
    let mut manifests = Vec::new();
    for (repo, tag) in [
        ("docker.io/library/busybox", "latest"),
        (
            "ghcr.io/canonical/k8s-snap/sig-storage/csi-node-driver-registrar",
            "v2.13.0",
        ),
    ] {
        let bytes = std::fs::read(cache.join(format!("manifests/{repo}/reference/{tag}"))).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        manifests.push(serde_json::json!({
            "mediaType": json["mediaType"],
            "digest": format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            "size": bytes.len(),
            "annotations": { "org.opencontainers.image.ref.name": format!("{repo}:{tag}") },
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    std::fs::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn build_and_boot(form: &str, make: fn(&Path)) {
    let assets = common::real_assets();
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("boot-form-{form}"));
    let _ = std::fs::remove_dir_all(&work);
    let layout = work.join("cache.oci");
    make(&layout);
    let out = work.join("out");
    let result = common::imager([
        "iso".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--image-cache".as_ref(),
        layout.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
        "--extra-kernel-arg".as_ref(),
        std::ffi::OsStr::new("panic=-1"),
    ]);
    common::assert_success(&result, &format!("imager iso from the {form} layout"));
    // The converted tree was scratch in the output directory: only the ISO may be left there.
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("metal-amd64.iso")],
        "{left:?}"
    );

    let cfg = BootConfig::image(
        out.join("metal-amd64.iso"),
        Firmware::SeaBios,
        Attach::Cdrom,
    )
    .with_timeout(BOOT_TIMEOUT)
    .with_name(format!("{form}-seabios-cdrom"));
    let outcome = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let report = &outcome.report;
    assert!(report.done && report.errors.is_empty(), "{report:?}");
    assert_eq!(report.volumes.len(), 1, "{:?}", report.volumes);
    assert_eq!(report.volumes[0].label, "TALOS_V1_9_0");

    // Every form must put the very same flat tree on the medium.
    let expected = expected_listing(&common::demo_cache()).unwrap();
    let seen = report.listing().unwrap_or_else(|e| panic!("{e}"));
    let diff = ListingDiff::new(&expected, &seen);
    assert!(
        diff.is_empty(),
        "the node's cache from the {form} layout differs from testdata/demo-cache:\n{diff}"
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn boots_from_an_oci_wrapped_cache() {
    build_and_boot("wrapped", wrapped_layout);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn boots_from_a_plain_oci_layout() {
    build_and_boot("plain", plain_layout);
}
