//! `imager images default`: the images a Talos cluster of a given Kubernetes version pulls, one per
//! line, ready for `imager cache create --images=-`.

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Print the default image list for a Kubernetes version, one reference per line.
    Default(DefaultArgs),
}

#[derive(Debug, Args)]
pub struct DefaultArgs {
    /// Kubernetes version (vX.Y.Z) [default: the newest supported one, at its .0 release].
    #[arg(long, value_name = "vX.Y.Z")]
    k8s_version: Option<String>,
}

pub fn run(cmd: ImagesCommand) -> Result<()> {
    match cmd {
        ImagesCommand::Default(args) => {
            let version = args
                .k8s_version
                .unwrap_or_else(|| default_version().to_owned());
            for image in default_images(&version)? {
                println!("{image}");
            }
            Ok(())
        }
    }
}

/// What a Talos node of one Kubernetes minor runs besides the Kubernetes components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Release {
    minor: u32,
    /// `gcr.io/etcd-development/etcd` tag: Talos runs upstream etcd images, not kubeadm's
    /// `registry.k8s.io/etcd` builds (`EtcdImage`, `DefaultEtcdVersion` in Talos's
    /// `pkg/machinery/constants`).
    etcd: &'static str,
    /// `registry.k8s.io/coredns/coredns` tag (`DefaultCoreDNSVersion`).
    coredns: &'static str,
    /// `registry.k8s.io/pause` tag: the CRI sandbox image.
    pause: &'static str,
    /// `ghcr.io/siderolabs/flannel` tag: Talos's default CNI.
    flannel: &'static str,
}

/// Per Kubernetes 1.x minor, the versions of the Talos release whose default it is. Only rows
/// checked against that Talos release's constants belong here: a wrong tag means a node in an air
/// gap fails to pull. Kubernetes 1.33 is Talos 1.10's default (etcd v3.5.21 and CoreDNS v1.12.1
/// read from its constants; pause and flannel from its release notes). Newest last; extend it with
/// each Talos release.
const RELEASES: &[Release] = &[Release {
    minor: 33,
    etcd: "v3.5.21",
    coredns: "v1.12.1",
    pause: "3.10",
    flannel: "v0.26.7",
}];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImagesError {
    #[error("Kubernetes version {0:?} is not vMAJOR.MINOR.PATCH (e.g. v1.32.3)")]
    Malformed(String),
    #[error("Kubernetes version {version} is not supported; supported: {supported}")]
    Unsupported { version: String, supported: String },
}

/// The newest supported minor at its `.0` release: the table knows minors, not the latest patch.
fn default_version() -> String {
    let newest = RELEASES.last().map_or(0, |r| r.minor);
    format!("v1.{newest}.0")
}

/// The default images for Kubernetes `version` (`v1.32.3`, or `1.32.3`; a pre-release suffix such
/// as `-rc.1` is kept in the tags): API server, controller manager, scheduler, proxy, kubelet,
/// etcd, CoreDNS, pause, flannel. Pure.
pub fn default_images(version: &str) -> Result<Vec<String>, ImagesError> {
    let malformed = || ImagesError::Malformed(version.to_owned());
    let bare = version.strip_prefix('v').unwrap_or(version);
    let (core, pre) = match bare.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (bare, None),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    let [major, minor, patch] = numbers[..] else {
        return Err(malformed());
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let (Some(major), Some(minor), Some(_)) = (number(major), number(minor), number(patch)) else {
        return Err(malformed());
    };
    // A pre-release part ends up in tags: the tag grammar's characters only.
    if pre.is_some_and(|p| {
        p.is_empty()
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    }) {
        return Err(malformed());
    }
    let release = RELEASES
        .iter()
        .find(|r| major == 1 && r.minor == minor)
        .ok_or_else(|| ImagesError::Unsupported {
            version: version.to_owned(),
            supported: RELEASES
                .iter()
                .map(|r| format!("1.{}", r.minor))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let tag = format!("v{bare}");
    Ok(vec![
        format!("registry.k8s.io/kube-apiserver:{tag}"),
        format!("registry.k8s.io/kube-controller-manager:{tag}"),
        format!("registry.k8s.io/kube-scheduler:{tag}"),
        format!("registry.k8s.io/kube-proxy:{tag}"),
        format!("ghcr.io/siderolabs/kubelet:{tag}"),
        format!("gcr.io/etcd-development/etcd:{}", release.etcd),
        format!("registry.k8s.io/coredns/coredns:{}", release.coredns),
        format!("registry.k8s.io/pause:{}", release.pause),
        format!("ghcr.io/siderolabs/flannel:{}", release.flannel),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_for_a_version() {
        assert_eq!(
            default_images("v1.33.1").unwrap(),
            [
                "registry.k8s.io/kube-apiserver:v1.33.1",
                "registry.k8s.io/kube-controller-manager:v1.33.1",
                "registry.k8s.io/kube-scheduler:v1.33.1",
                "registry.k8s.io/kube-proxy:v1.33.1",
                "ghcr.io/siderolabs/kubelet:v1.33.1",
                "gcr.io/etcd-development/etcd:v3.5.21",
                "registry.k8s.io/coredns/coredns:v1.12.1",
                "registry.k8s.io/pause:3.10",
                "ghcr.io/siderolabs/flannel:v0.26.7",
            ]
        );
        // Without the `v`, and a pre-release.
        assert_eq!(
            default_images("1.33.0").unwrap()[0],
            "registry.k8s.io/kube-apiserver:v1.33.0"
        );
        assert_eq!(
            default_images("v1.33.0-rc.1").unwrap()[4],
            "ghcr.io/siderolabs/kubelet:v1.33.0-rc.1"
        );
    }

    #[test]
    fn every_listed_image_is_a_valid_reference() {
        for r in RELEASES {
            for image in default_images(&format!("v1.{}.0", r.minor)).unwrap() {
                let parsed = imager_cache::Reference::parse(&image)
                    .unwrap_or_else(|e| panic!("{image}: {e}"));
                assert_eq!(parsed.to_string(), image, "already normalized");
            }
        }
    }

    #[test]
    fn default_is_the_newest() {
        assert_eq!(default_version(), "v1.33.0");
        assert!(default_images(&default_version()).is_ok());
        let minors: Vec<u32> = RELEASES.iter().map(|r| r.minor).collect();
        let mut sorted = minors.clone();
        sorted.sort_unstable();
        assert_eq!(minors, sorted, "the table is in order, newest last");
    }

    #[test]
    fn unknown_and_malformed_versions() {
        assert_eq!(
            default_images("v1.29.5").unwrap_err().to_string(),
            "Kubernetes version v1.29.5 is not supported; supported: 1.33"
        );
        assert!(matches!(
            default_images("v2.32.0"),
            Err(ImagesError::Unsupported { .. })
        ));
        for bad in [
            "",
            "v1.32",
            "1.32.x",
            "v1.32.0.1",
            "latest",
            "v1.32.0-",
            "v1.32.0-a/b",
            "v+1.32.0",
        ] {
            assert!(
                matches!(default_images(bad), Err(ImagesError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
