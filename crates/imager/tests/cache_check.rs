//! The cache checked against `--version` before a medium is written (issue 14): the installer
//! image and the Kubernetes bundle of that Talos version, tags that resolve to nothing, blobs
//! missing for the medium's platform. Warnings, or with `--strict` an error that writes nothing.
//! The expected lists are written here from upstream's constants at v1.13.9 (docs/talos-config.md),
//! not from imager's output. Stand-in assets for `imager iso`: no QEMU.

#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use sha2::{Digest as _, Sha256};

/// What a node of Talos v1.13.9 pulls: its installer (`images.DefaultInstallerImage`) and
/// `talosctl image k8s-bundle` at v1.13.9's defaults.
const INSTALLER: &str = "ghcr.io/siderolabs/installer:v1.13.9";
const BUNDLE: &[&str] = &[
    "ghcr.io/siderolabs/flannel:0.28.8",
    "registry.k8s.io/coredns/coredns:v1.14.6",
    "registry.k8s.io/etcd:v3.6.12",
    "registry.k8s.io/pause:3.10.1",
    "registry.k8s.io/kube-apiserver:v1.36.3",
    "registry.k8s.io/kube-controller-manager:v1.36.3",
    "registry.k8s.io/kube-scheduler:v1.36.3",
    "registry.k8s.io/kube-proxy:v1.36.3",
    "ghcr.io/siderolabs/kubelet:v1.36.3",
    "registry.k8s.io/networking/kube-network-policies:v1.1.0",
];

fn sha(bytes: &[u8]) -> String {
    format!("sha256-{}", hex::encode(Sha256::digest(bytes)))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// `registry/repository:tag` split as a flat tree files it (no ports or Hub names here).
fn split(reference: &str) -> (&str, &str) {
    reference.rsplit_once(':').unwrap()
}

/// An image manifest naming a config and a layer, each unique to `reference`.
fn image_manifest(reference: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let config = format!("{{\"config of\":\"{reference}\"}}").into_bytes();
    let layer = format!("layer of {reference}").into_bytes();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{}","size":{}}}]}}"#,
        hex::encode(Sha256::digest(&config)),
        config.len(),
        hex::encode(Sha256::digest(&layer)),
        layer.len()
    )
    .into_bytes();
    (manifest, config, layer)
}

/// Adds `reference` to the flat tree at `root` as upstream caches a multi-platform image for
/// linux/amd64: the index (amd64 and arm64) under its tag, the amd64 image and its blobs.
/// Returns the amd64 image's layer blob.
fn add_image(root: &Path, reference: &str) -> PathBuf {
    let (name, tag) = split(reference);
    let (amd, config, layer) = image_manifest(reference);
    let (arm, ..) = image_manifest(&format!("{reference} arm64"));
    let child = |bytes: &[u8], arch: &str| {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":{},"platform":{{"os":"linux","architecture":"{arch}"}}}}"#,
            hex::encode(Sha256::digest(bytes)),
            bytes.len()
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{},{}]}}"#,
        child(&amd, "amd64"),
        child(&arm, "arm64")
    )
    .into_bytes();
    let repo = root.join("manifests").join(name);
    write(&repo.join("reference").join(tag), &index);
    write(&repo.join("digest").join(sha(&index)), &index);
    write(&repo.join("digest").join(sha(&amd)), &amd);
    write(&root.join("blob").join(sha(&config)), &config);
    let layer_path = root.join("blob").join(sha(&layer));
    write(&layer_path, &layer);
    layer_path
}

/// A cache holding everything a node of Talos v1.13.9 pulls, all but `leave_out`.
fn cache_for_v1_13_9(root: &Path, leave_out: &[&str]) {
    for reference in std::iter::once(&INSTALLER).chain(BUNDLE) {
        if !leave_out.contains(reference) {
            add_image(root, reference);
        }
    }
}

/// `imager iso --version v1.13.9` with stand-in assets from `dir`, the cache `cache`, into
/// `dir/out`, plus `args`.
fn iso(dir: &Path, cache: &Path, args: &[&OsStr]) -> (Output, PathBuf) {
    let assets = common::fake_assets(dir);
    let out = dir.join("out");
    let mut all: Vec<&OsStr> = vec![
        "iso".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
        "--version".as_ref(),
        "v1.13.9".as_ref(),
        "--image-cache".as_ref(),
        cache.as_os_str(),
    ];
    all.extend_from_slice(args);
    (common::imager(all), out)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn warnings(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.contains("warning:"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_cache_with_everything_gives_no_warning() {
    let dir = common::scratch();
    let cache = dir.path().join("cache");
    cache_for_v1_13_9(&cache, &[]);
    let (out, outdir) = iso(dir.path(), &cache, &[]);
    common::assert_success(&out, "imager iso with a complete cache");
    assert_eq!(warnings(&out), Vec::<String>::new(), "{}", stderr(&out));
    assert!(outdir.join("metal-amd64.iso").is_file());
    // --strict has nothing to refuse.
    let (out, _) = iso(dir.path(), &cache, &["--strict".as_ref()]);
    common::assert_success(&out, "imager iso --strict with a complete cache");
    assert_eq!(warnings(&out), Vec::<String>::new(), "{}", stderr(&out));
}

#[test]
fn a_missing_installer_is_a_warning_naming_it() {
    let dir = common::scratch();
    let cache = dir.path().join("cache");
    cache_for_v1_13_9(&cache, &[INSTALLER, "registry.k8s.io/pause:3.10.1"]);
    let (out, outdir) = iso(dir.path(), &cache, &[]);
    common::assert_success(&out, "imager iso without the installer in the cache");
    assert_eq!(
        warnings(&out),
        [
            "imager: warning: ghcr.io/siderolabs/installer:v1.13.9 is not in the cache: it is \
             the installer of Talos v1.13.9, which an air-gapped install pulls",
            "imager: warning: registry.k8s.io/pause:3.10.1 is not in the cache: it is an image \
             of Talos v1.13.9's Kubernetes bundle (Kubernetes v1.36.3)",
        ],
        "{}",
        stderr(&out)
    );
    // Warnings only: the medium is written.
    assert!(outdir.join("metal-amd64.iso").is_file());
}

#[test]
fn strict_refuses_listing_what_is_missing_and_writes_nothing() {
    let dir = common::scratch();
    let cache = dir.path().join("cache");
    cache_for_v1_13_9(&cache, &[INSTALLER, "registry.k8s.io/etcd:v3.6.12"]);
    let cfg = dir.path().join("cfg");
    let (out, outdir) = iso(
        dir.path(),
        &cache,
        &[
            "--strict".as_ref(),
            "--write-config".as_ref(),
            cfg.as_os_str(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needle in [
        "imager: error: --strict",
        "a node of Talos v1.13.9 (linux/amd64) would miss 2 things",
        "\n  - ghcr.io/siderolabs/installer:v1.13.9 is not in the cache",
        "\n  - registry.k8s.io/etcd:v3.6.12 is not in the cache",
    ] {
        assert!(err.contains(needle), "no {needle:?} in:\n{err}");
    }
    assert_eq!(common::files_under(&outdir), Vec::<PathBuf>::new());
    assert_eq!(common::files_under(&cfg), Vec::<PathBuf>::new());
}

#[test]
fn metal_strict_refuses_too() {
    let dir = common::scratch();
    let cache = dir.path().join("cache");
    cache_for_v1_13_9(&cache, &[INSTALLER]);
    let assets = common::real_assets();
    let outdir = dir.path().join("out");
    let out = common::imager([
        "metal".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--image-cache".as_ref(),
        cache.as_os_str(),
        "--output".as_ref(),
        outdir.as_os_str(),
        "--version".as_ref(),
        "v1.13.9".as_ref(),
        "--strict".as_ref(),
    ] as [&OsStr; 10]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--strict"), "{err}");
    assert!(
        err.contains("ghcr.io/siderolabs/installer:v1.13.9 is not in the cache"),
        "{err}"
    );
    assert_eq!(common::files_under(&outdir), Vec::<PathBuf>::new());
}

#[test]
fn a_tag_matching_no_manifest_is_a_warning() {
    let dir = common::scratch();
    let cache = dir.path().join("cache");
    cache_for_v1_13_9(&cache, &[]);
    // A tag file whose bytes are no digest/ file of its repository (a manifest re-serialized
    // by hand, or a copy cut short).
    let tag = cache.join("manifests/registry.k8s.io/kube-proxy/reference/v1.36.3");
    let mut bytes = std::fs::read(&tag).unwrap();
    bytes.extend_from_slice(b"\n");
    std::fs::write(&tag, bytes).unwrap();
    let (out, outdir) = iso(dir.path(), &cache, &[]);
    common::assert_success(&out, "imager iso with a broken tag");
    std::fs::remove_dir_all(&outdir).unwrap();
    assert_eq!(
        warnings(&out),
        [
            "imager: warning: registry.k8s.io/kube-proxy:v1.36.3: its tag file \
             manifests/registry.k8s.io/kube-proxy/reference/v1.36.3 matches no digest/ file of \
             the repository, so a node cannot resolve the tag"
        ],
        "{}",
        stderr(&out)
    );
    let (out, outdir) = iso(dir.path(), &cache, &["--strict".as_ref()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("registry.k8s.io/kube-proxy:v1.36.3: its tag file"));
    assert_eq!(common::files_under(&outdir), Vec::<PathBuf>::new());
}

#[test]
fn a_blob_missing_for_the_platform_is_a_warning() {
    let dir = common::scratch();
    let cache = dir.path().join("cache");
    cache_for_v1_13_9(&cache, &["ghcr.io/siderolabs/kubelet:v1.36.3"]);
    let layer = add_image(&cache, "ghcr.io/siderolabs/kubelet:v1.36.3");
    std::fs::remove_file(&layer).unwrap();
    let (out, _) = iso(dir.path(), &cache, &[]);
    common::assert_success(&out, "imager iso with a layer missing");
    let got = warnings(&out);
    assert_eq!(got.len(), 1, "{}", stderr(&out));
    let layer_digest = layer
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .replace("sha256-", "sha256:");
    assert!(
        got[0].starts_with(
            "imager: warning: ghcr.io/siderolabs/kubelet:v1.36.3: its linux/amd64 image \
             (manifests/ghcr.io/siderolabs/kubelet/digest/sha256-"
        ),
        "{got:?}"
    );
    assert!(
        got[0].ends_with(&format!(
            "names 1 blob missing from blob/ ({layer_digest}), so a node fails to pull it"
        )),
        "{got:?}"
    );
}

/// The demo cache holds neither the installer nor the bundle: each is named, for the default
/// --version (v1.9.0) too.
#[test]
fn the_demo_cache_lacks_the_installer_of_the_default_version() {
    let dir = common::scratch();
    let assets = common::fake_assets(dir.path());
    let outdir = dir.path().join("out");
    let demo = common::demo_cache();
    let out = common::imager([
        "iso".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--output".as_ref(),
        outdir.as_os_str(),
        "--image-cache".as_ref(),
        demo.as_os_str(),
    ] as [&OsStr; 7]);
    common::assert_success(&out, "imager iso with the demo cache");
    let got = warnings(&out);
    assert!(
        got.contains(
            &"imager: warning: ghcr.io/siderolabs/installer:v1.9.0 is not in the cache: it is \
              the installer of Talos v1.9.0, which an air-gapped install pulls"
                .to_owned()
        ),
        "{got:#?}"
    );
    // Talos v1.9's bundle: nine images besides the installer, and nothing about the demo
    // images themselves (their amd64 images and blobs are cached).
    assert_eq!(got.len(), 10, "{got:#?}");
    assert!(
        got.contains(
            &"imager: warning: registry.k8s.io/kube-apiserver:v1.32.4 is not in the cache: it \
              is an image of Talos v1.9.0's Kubernetes bundle (Kubernetes v1.32.4)"
                .to_owned()
        ),
        "{got:#?}"
    );
}
