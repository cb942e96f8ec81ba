//! What imager tells a Talos node (issue 14): the image lists of a release for any Kubernetes
//! version, and the machine-config patch `imager iso` prints and writes with `--write-config`.
//! The expected image lists are written from upstream's constants and list code at the named
//! tags (docs/talos-config.md), not from imager's output. Stand-in assets: no QEMU.

#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lines(args: &[&str]) -> Vec<String> {
    let out = common::imager(args);
    common::assert_success(&out, &args.join(" "));
    stdout(&out).lines().map(str::to_owned).collect()
}

// ---- imager images k8s-bundle ---------------------------------------------------------------------

/// Talos v1.13.9 (the default): `talosctl image k8s-bundle` prints flannel, CoreDNS, etcd,
/// pause, the four control-plane images and kubelet tagged `v` + the Kubernetes version, then
/// kube-network-policies; etcd from registry.k8s.io; the defaults are v1.13.9's constants.
#[test]
fn k8s_bundle_v1_33_1_by_talos_v1_13_9_s_rules() {
    assert_eq!(
        lines(&["images", "k8s-bundle", "--k8s-version", "v1.33.1"]),
        [
            "ghcr.io/siderolabs/flannel:0.28.8",
            "registry.k8s.io/coredns/coredns:v1.14.6",
            "registry.k8s.io/etcd:v3.6.12",
            "registry.k8s.io/pause:3.10.1",
            "registry.k8s.io/kube-apiserver:v1.33.1",
            "registry.k8s.io/kube-controller-manager:v1.33.1",
            "registry.k8s.io/kube-scheduler:v1.33.1",
            "registry.k8s.io/kube-proxy:v1.33.1",
            "ghcr.io/siderolabs/kubelet:v1.33.1",
            "registry.k8s.io/networking/kube-network-policies:v1.1.0",
        ]
    );
}

/// Upstream's flag rule: the value parsed tolerantly (`1.36` is `1.36.0`), printed with a `v`
/// exactly when the default has one (flannel's `0.28.8` has none, etcd's `v3.6.12` has).
#[test]
fn k8s_bundle_v1_36_0_with_component_flags() {
    let got = lines(&[
        "images",
        "default",
        "--k8s-version",
        "1.36",
        "--etcd-version",
        "3.6.5",
        "--flannel-version",
        "v0.27.4",
        "--coredns-version",
        "v1.14.2",
        "--kube-network-policies-version",
        "1.0.0",
    ]);
    assert_eq!(
        got,
        [
            "ghcr.io/siderolabs/flannel:0.27.4",
            "registry.k8s.io/coredns/coredns:v1.14.2",
            "registry.k8s.io/etcd:v3.6.5",
            "registry.k8s.io/pause:3.10.1",
            "registry.k8s.io/kube-apiserver:v1.36.0",
            "registry.k8s.io/kube-controller-manager:v1.36.0",
            "registry.k8s.io/kube-scheduler:v1.36.0",
            "registry.k8s.io/kube-proxy:v1.36.0",
            "ghcr.io/siderolabs/kubelet:v1.36.0",
            "registry.k8s.io/networking/kube-network-policies:v1.0.0",
        ]
    );
}

/// Talos v1.10.9: `talosctl images default` printed etcd from gcr.io/etcd-development, the
/// installer of its own version after kubelet, and pause last; no kube-network-policies.
#[test]
fn k8s_bundle_v1_32_4_by_talos_v1_10_9_s_rules() {
    assert_eq!(
        lines(&[
            "images",
            "k8s-bundle",
            "--talos-version",
            "v1.10.9",
            "--k8s-version",
            "v1.32.4",
        ]),
        [
            "ghcr.io/siderolabs/flannel:v0.26.7",
            "registry.k8s.io/coredns/coredns:v1.12.1",
            "gcr.io/etcd-development/etcd:v3.5.26",
            "registry.k8s.io/kube-apiserver:v1.32.4",
            "registry.k8s.io/kube-controller-manager:v1.32.4",
            "registry.k8s.io/kube-scheduler:v1.32.4",
            "registry.k8s.io/kube-proxy:v1.32.4",
            "ghcr.io/siderolabs/kubelet:v1.32.4",
            "ghcr.io/siderolabs/installer:v1.10.9",
            "registry.k8s.io/pause:3.10",
        ]
    );
}

#[test]
fn k8s_bundle_defaults_are_the_newest_release_s() {
    let got = lines(&["images", "k8s-bundle"]);
    assert_eq!(got[4], "registry.k8s.io/kube-apiserver:v1.36.3");
    assert_eq!(got.len(), 10);
    // Talos 1.12: etcd moved to registry.k8s.io, the installer left the list.
    let got = lines(&["images", "k8s-bundle", "--talos-version", "v1.12.11"]);
    assert_eq!(got[2], "registry.k8s.io/etcd:v3.6.11");
    assert_eq!(got[7], "ghcr.io/siderolabs/kubelet:v1.35.4");
    assert_eq!(got[8], "registry.k8s.io/pause:3.10.1");
    assert_eq!(got.len(), 9);
}

#[test]
fn k8s_bundle_refusals_name_the_flag() {
    for (args, needle) in [
        (
            &["--k8s-version", "v1.33.1+build"][..],
            "--k8s-version: \"registry.k8s.io/kube-apiserver:v1.33.1+build\" is not a valid",
        ),
        (&["--etcd-version", "main"][..], "--etcd-version: invalid"),
        (
            &["--talos-version", "v1.8.4"][..],
            "--talos-version: Talos v1.8.4",
        ),
        (
            &["--talos-version", "1.13.9"][..],
            "--talos-version: invalid Talos version",
        ),
        (
            &[
                "--talos-version",
                "v1.12.0",
                "--kube-network-policies-version",
                "v1.1.0",
            ][..],
            "Talos v1.12.0 does not run kube-network-policies",
        ),
    ] {
        let mut all = vec!["images", "k8s-bundle"];
        all.extend_from_slice(args);
        let out = common::imager(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: nothing listed");
    }
}

// ---- imager images talos-bundle -------------------------------------------------------------------

/// `images.ListSourcesFor(tag)`: each `ghcr.io/siderolabs/<name>:<tag>`, the legacy installer
/// only before v1.14.0-alpha.0.
#[test]
fn talos_bundle_by_upstream_s_rules() {
    assert_eq!(
        lines(&["images", "talos-bundle", "v1.12.3"]),
        [
            "ghcr.io/siderolabs/installer:v1.12.3",
            "ghcr.io/siderolabs/installer-base:v1.12.3",
            "ghcr.io/siderolabs/imager:v1.12.3",
            "ghcr.io/siderolabs/talos:v1.12.3",
            "ghcr.io/siderolabs/talosctl-all:v1.12.3",
            "ghcr.io/siderolabs/overlays:v1.12.3",
            "ghcr.io/siderolabs/extensions:v1.12.3",
        ]
    );
    assert_eq!(
        lines(&["images", "talos-bundle", "v1.14.0-rc.1"]),
        [
            "ghcr.io/siderolabs/installer-base:v1.14.0-rc.1",
            "ghcr.io/siderolabs/imager:v1.14.0-rc.1",
            "ghcr.io/siderolabs/talos:v1.14.0-rc.1",
            "ghcr.io/siderolabs/talosctl-all:v1.14.0-rc.1",
            "ghcr.io/siderolabs/overlays:v1.14.0-rc.1",
            "ghcr.io/siderolabs/extensions:v1.14.0-rc.1",
        ]
    );
    assert_eq!(
        lines(&["images", "talos-bundle"])[0],
        "ghcr.io/siderolabs/installer:v1.13.9"
    );
    let out = common::imager(["images", "talos-bundle", "v1.10.9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cover v1.11.0-alpha.0 (inclusive) to v1.15.0 (exclusive)"),
        "{}",
        stderr(&out)
    );
}

// ---- imager iso --write-config --------------------------------------------------------------------

fn iso(dir: &Path, args: &[&OsStr]) -> Output {
    let assets = common::fake_assets(dir);
    let out = dir.join("out");
    let demo = common::demo_cache();
    let mut all: Vec<&OsStr> = vec![
        "iso".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
        "--image-cache".as_ref(),
        demo.as_os_str(),
    ];
    all.extend_from_slice(args);
    common::imager(all)
}

/// The demo cache: two tags (busybox:latest, csi-node-driver-registrar:v2.13.0), and its files'
/// bytes, counted here from the tree itself.
fn demo_facts() -> (usize, u64) {
    let root = common::demo_cache();
    let tags = walkdir::WalkDir::new(&root)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file() && e.path().parent().unwrap().ends_with("reference"))
        .count();
    let bytes = walkdir::WalkDir::new(&root)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum();
    (tags, bytes)
}

#[test]
fn iso_prints_the_summary_and_writes_the_patch() {
    let dir = common::scratch();
    let cfg = dir.path().join("cfg");
    let out = iso(
        dir.path(),
        &[
            "--version".as_ref(),
            "v1.14.0".as_ref(),
            "--write-config".as_ref(),
            cfg.as_os_str(),
        ],
    );
    common::assert_success(&out, "imager iso --write-config");
    let (tags, bytes) = demo_facts();
    assert_eq!(tags, 2);
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "image cache: 2 images in 2 repositories, {bytes} bytes ("
        )),
        "{text}"
    );
    let written = std::fs::read_to_string(cfg.join("talos-image-cache.yaml")).unwrap();
    // The file is the patch printed, for this version and this cache.
    assert!(text.contains(&written), "{text}");
    assert!(
        written.contains("kind: ImageCacheConfig\nlocal:\n  enabled: true\n"),
        "{written}"
    );
    assert!(written.contains("name: IMAGECACHE\n"), "{written}");
    assert!(written.contains("  maxSize: 1GiB\n"), "{written}");
    assert!(written.contains(&format!("({bytes} bytes)")), "{written}");
    assert_eq!(
        written,
        imager_talos::image_cache_patch(&imager_talos::Version::parse("v1.14.0").unwrap(), bytes)
            .unwrap()
    );
    assert_eq!(common::files_under(&cfg).len(), 1, "nothing else in DIR");

    // An older release: the v1alpha1 feature flag instead of the document.
    let dir = common::scratch();
    let out = iso(dir.path(), &["--version".as_ref(), "v1.9.0".as_ref()]);
    common::assert_success(&out, "imager iso --version v1.9.0");
    assert!(
        stdout(&out).contains("machine:\n  features:\n    imageCache:\n      localEnabled: true\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn write_config_refusals_come_before_the_medium() {
    // A release without an image cache: nothing to write, and no medium either.
    let dir = common::scratch();
    let cfg = dir.path().join("cfg");
    let out = iso(
        dir.path(),
        &[
            "--version".as_ref(),
            "v1.8.4".as_ref(),
            "--write-config".as_ref(),
            cfg.as_os_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--write-config: Talos v1.8.4 has no image cache"),
        "{}",
        stderr(&out)
    );
    assert!(common::files_under(&dir.path().join("out")).is_empty());
    assert!(!cfg.exists());

    // A file where DIR should be.
    let dir = common::scratch();
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "x").unwrap();
    let out = iso(
        dir.path(),
        &[
            "--version".as_ref(),
            "v1.13.9".as_ref(),
            "--write-config".as_ref(),
            blocker.as_os_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--write-config: writing"),
        "{}",
        stderr(&out)
    );
    assert!(common::files_under(&dir.path().join("out")).is_empty());

    // Without a cache there is nothing to configure.
    let dir = common::scratch();
    let assets = common::fake_assets(dir.path());
    let cfg = dir.path().join("cfg");
    let out = common::imager([
        "iso".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--write-config".as_ref(),
        cfg.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--image-cache"), "{}", stderr(&out));
}
