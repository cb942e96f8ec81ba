//! The images a Talos release pulls, by upstream's rules (`pkg/images` and `talosctl image
//! k8s-bundle` / `talos-bundle`): each reference is a repository of the release joined to a tag
//! derived from a version, so any Kubernetes (or etcd, CoreDNS, flannel) version gives its list.
//!
//! What a release fixes is in [`RELEASES`], one row per Talos minor, each value read from the
//! named upstream tag (docs/talos-config.md): the repositories, the default component versions,
//! the pause image (containerd's sandbox image, not configurable), and the shape of the list.

use imager_oci::Reference;

use crate::version::{ComponentVersionError, Version};

/// `ghcr.io/siderolabs`: where Talos's own images live (`gendata` registry and username).
const SIDEROLABS: &str = "ghcr.io/siderolabs";

/// What one Talos minor release pulls for Kubernetes, and how it lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Talos `major.minor`.
    pub talos: (u64, u64),
    /// The upstream tag every value below was read from (the minor's newest at the time).
    pub source: &'static str,
    /// `constants.DefaultKubernetesVersion` (without `v`; tags get `v` + it).
    pub kubernetes: &'static str,
    /// `constants.EtcdImage`.
    pub etcd_image: &'static str,
    /// `constants.DefaultEtcdVersion`, as upstream writes it (with or without `v`: the tag
    /// keeps that form).
    pub etcd: &'static str,
    /// `constants.DefaultCoreDNSVersion`.
    pub coredns: &'static str,
    /// `constants.FlannelVersion` (the tag of `ghcr.io/siderolabs/flannel`).
    pub flannel: &'static str,
    /// `images.DefaultSandboxImage`: the pause image.
    pub pause: &'static str,
    /// `constants.KubeNetworkPoliciesVersion`, for the releases that run it.
    pub kube_network_policies: Option<&'static str>,
    /// The list also names `ghcr.io/siderolabs/installer:<Talos version>` (`talosctl images
    /// default` up to 1.11).
    pub lists_installer: bool,
    /// The pause image comes right after etcd (1.13 on), else last.
    pub pause_after_etcd: bool,
}

/// Talos minors, oldest first. The newest that is a release (not a pre-release) is the
/// default: [`Release::newest`].
pub const RELEASES: &[Release] = &[
    Release {
        talos: (1, 9),
        source: "v1.9.6",
        kubernetes: "1.32.4",
        etcd_image: "gcr.io/etcd-development/etcd",
        etcd: "v3.5.21",
        coredns: "v1.12.0",
        flannel: "v0.26.5",
        pause: "registry.k8s.io/pause:3.10",
        kube_network_policies: None,
        lists_installer: true,
        pause_after_etcd: false,
    },
    Release {
        talos: (1, 10),
        source: "v1.10.9",
        kubernetes: "1.33.6",
        etcd_image: "gcr.io/etcd-development/etcd",
        etcd: "v3.5.26",
        coredns: "v1.12.1",
        flannel: "v0.26.7",
        pause: "registry.k8s.io/pause:3.10",
        kube_network_policies: None,
        lists_installer: true,
        pause_after_etcd: false,
    },
    Release {
        talos: (1, 11),
        source: "v1.11.6",
        kubernetes: "1.34.1",
        etcd_image: "gcr.io/etcd-development/etcd",
        etcd: "v3.6.5",
        coredns: "v1.12.4",
        flannel: "v0.27.4",
        pause: "registry.k8s.io/pause:3.10",
        kube_network_policies: None,
        lists_installer: true,
        pause_after_etcd: false,
    },
    Release {
        talos: (1, 12),
        source: "v1.12.11",
        kubernetes: "1.35.4",
        etcd_image: "registry.k8s.io/etcd",
        etcd: "v3.6.11",
        coredns: "v1.14.2",
        flannel: "v0.27.4",
        pause: "registry.k8s.io/pause:3.10.1",
        kube_network_policies: None,
        lists_installer: false,
        pause_after_etcd: false,
    },
    Release {
        talos: (1, 13),
        source: "v1.13.9",
        kubernetes: "1.36.3",
        etcd_image: "registry.k8s.io/etcd",
        etcd: "v3.6.12",
        coredns: "v1.14.6",
        flannel: "0.28.8",
        pause: "registry.k8s.io/pause:3.10.1",
        kube_network_policies: Some("v1.1.0"),
        lists_installer: false,
        pause_after_etcd: true,
    },
    Release {
        talos: (1, 14),
        source: "v1.14.0-rc.1",
        kubernetes: "1.37.0-rc.0",
        etcd_image: "registry.k8s.io/etcd",
        etcd: "3.7.1",
        coredns: "v1.14.6",
        flannel: "0.28.9",
        pause: "registry.k8s.io/pause:3.10.2",
        kube_network_policies: Some("v1.1.1"),
        lists_installer: false,
        pause_after_etcd: true,
    },
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImagesError {
    #[error("{flag}: {source}")]
    Version {
        flag: &'static str,
        #[source]
        source: ComponentVersionError,
    },
    #[error(
        "Talos {version}: the image rules known here are those of Talos {known} (read from \
         upstream's releases)"
    )]
    UnknownTalos { version: String, known: String },
    #[error("{flag}: Talos {talos} does not run kube-network-policies (Talos 1.13 and later do)")]
    NoKubeNetworkPolicies { flag: &'static str, talos: String },
    #[error("{flag}: {reference:?} is not a valid image reference: {reason}")]
    Reference {
        flag: &'static str,
        reference: String,
        reason: String,
    },
    #[error("talos-bundle {version:?}: the version must start with v (as upstream's tags do)")]
    NoV { version: String },
    #[error(
        "talos-bundle {version}: upstream's talos-bundle rules cover v{min} (inclusive) to \
         v{max} (exclusive)"
    )]
    TalosBundleRange {
        version: String,
        min: String,
        max: String,
    },
}

impl Release {
    /// The newest row that is a release: the default.
    pub fn newest() -> &'static Release {
        RELEASES
            .iter()
            .rev()
            .find(|r| !r.source.contains('-'))
            .unwrap_or(&RELEASES[0])
    }

    /// The rules of Talos `version`'s minor.
    pub fn for_talos(version: &Version) -> Result<&'static Release, ImagesError> {
        RELEASES
            .iter()
            .find(|r| r.talos == (version.major, version.minor))
            .ok_or_else(|| ImagesError::UnknownTalos {
                version: format!("v{version}"),
                known: known_minors(),
            })
    }

    /// The default Kubernetes version as the `--k8s-version` flag shows it (`v1.36.3`).
    pub fn default_kubernetes(&self) -> String {
        format!("v{}", self.kubernetes)
    }
}

fn known_minors() -> String {
    match (RELEASES.first(), RELEASES.last()) {
        (Some(a), Some(b)) => format!("{}.{} to {}.{}", a.talos.0, a.talos.1, b.talos.0, b.talos.1),
        _ => String::new(),
    }
}

/// Component versions for [`k8s_bundle`]; `None` is the release's default. Each is read as
/// `talosctl` reads its flags ([`Version::parse_tolerant`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K8sVersions {
    pub kubernetes: Option<String>,
    pub etcd: Option<String>,
    pub coredns: Option<String>,
    pub flannel: Option<String>,
    pub kube_network_policies: Option<String>,
}

/// Upstream's tag rule (`flags.Semver`): the value parsed tolerantly and printed canonically,
/// with a `v` exactly when the default has one, whatever the user typed.
fn tag(flag: &'static str, default: &str, value: Option<&str>) -> Result<String, ImagesError> {
    let Some(value) = value else {
        return Ok(default.to_owned());
    };
    let parsed =
        Version::parse_tolerant(value).map_err(|source| ImagesError::Version { flag, source })?;
    let prefix = if default.starts_with('v') { "v" } else { "" };
    Ok(format!("{prefix}{parsed}"))
}

/// `repository:tag`, checked against the reference grammar (build metadata's `+` is not a tag
/// character, for one).
fn reference(flag: &'static str, repository: &str, tag: &str) -> Result<String, ImagesError> {
    let text = format!("{repository}:{tag}");
    Reference::parse(&text).map_err(|e| ImagesError::Reference {
        flag,
        reference: text.clone(),
        reason: e.to_string(),
    })?;
    Ok(text)
}

/// The Kubernetes images Talos `talos` (a version of `release`'s minor) pulls, in upstream's
/// order: `talosctl image k8s-bundle` (`talosctl images default` before 1.12).
pub fn k8s_bundle(
    release: &Release,
    talos: &Version,
    versions: &K8sVersions,
) -> Result<Vec<String>, ImagesError> {
    let k8s = tag(
        "--k8s-version",
        &release.default_kubernetes(),
        versions.kubernetes.as_deref(),
    )?;
    let k8s_image = |repo: &str| reference("--k8s-version", repo, &k8s);
    let flannel = reference(
        "--flannel-version",
        &format!("{SIDEROLABS}/flannel"),
        &tag(
            "--flannel-version",
            release.flannel,
            versions.flannel.as_deref(),
        )?,
    )?;
    let coredns = reference(
        "--coredns-version",
        "registry.k8s.io/coredns/coredns",
        &tag(
            "--coredns-version",
            release.coredns,
            versions.coredns.as_deref(),
        )?,
    )?;
    let etcd = reference(
        "--etcd-version",
        release.etcd_image,
        &tag("--etcd-version", release.etcd, versions.etcd.as_deref())?,
    )?;
    let knp = match (
        release.kube_network_policies,
        &versions.kube_network_policies,
    ) {
        (Some(default), value) => Some(reference(
            "--kube-network-policies-version",
            "registry.k8s.io/networking/kube-network-policies",
            &tag("--kube-network-policies-version", default, value.as_deref())?,
        )?),
        (None, Some(_)) => {
            return Err(ImagesError::NoKubeNetworkPolicies {
                flag: "--kube-network-policies-version",
                talos: format!("v{talos}"),
            });
        }
        (None, None) => None,
    };
    let pause = release.pause.to_owned();
    let mut out = vec![flannel, coredns, etcd];
    if release.pause_after_etcd {
        out.push(pause.clone());
    }
    out.push(k8s_image("registry.k8s.io/kube-apiserver")?);
    out.push(k8s_image("registry.k8s.io/kube-controller-manager")?);
    out.push(k8s_image("registry.k8s.io/kube-scheduler")?);
    out.push(k8s_image("registry.k8s.io/kube-proxy")?);
    out.push(k8s_image(&format!("{SIDEROLABS}/kubelet"))?);
    if release.lists_installer {
        out.push(reference(
            "--talos-version",
            &format!("{SIDEROLABS}/installer"),
            &format!("v{talos}"),
        )?);
    }
    if !release.pause_after_etcd {
        out.push(pause);
    }
    out.extend(knp);
    Ok(out)
}

/// The oldest Talos `talos-bundle` lists (`talosBundleMinimumVersion`).
pub fn talos_bundle_since() -> Version {
    Version::release(1, 11, 0).with_pre(&["alpha", "0"])
}

/// From this release on the bundle leaves out the legacy `installer` image
/// (`talosLegacyInstallerMaximumVersion`).
pub fn installer_until() -> Version {
    Version::release(1, 14, 0).with_pre(&["alpha", "0"])
}

/// `images.DefaultInstallerImageSchematic`: the image factory's schematic of a plain installer
/// (no extensions, no kernel arguments).
pub const DEFAULT_INSTALLER_SCHEMATIC: &str =
    "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

/// `gendata.ImageFactory`: the image factory's registry.
pub const IMAGE_FACTORY: &str = "factory.talos.dev";

/// The installer image a node of Talos `talos` installs from when its machine config names none
/// (`machine.install.image` empty), for the `metal` platform (ISO and disk image alike), by
/// upstream's rule at that release: `ghcr.io/siderolabs/installer:<version>`
/// (`images.DefaultInstallerImage`) before v1.14.0-alpha.0, from then on the image factory's
/// `factory.talos.dev/metal-installer/<default schematic>:<version>` (`images.InstallerImage("metal")`).
/// Either is what an air-gapped install pulls, so the cache must hold it.
pub fn default_installer(talos: &Version) -> Result<String, ImagesError> {
    let tag = format!("v{talos}");
    if talos.at_least(&installer_until()) {
        reference(
            "--version",
            &format!("{IMAGE_FACTORY}/metal-installer/{DEFAULT_INSTALLER_SCHEMATIC}"),
            &tag,
        )
    } else {
        reference("--version", &format!("{SIDEROLABS}/installer"), &tag)
    }
}

/// The images a Talos release is built and installed from, `talosctl image talos-bundle
/// VERSION` without the extensions and overlays (which upstream looks up in a registry):
/// installer (before 1.14), installer-base, imager, talos, talosctl-all, and the overlays and
/// extensions manifests, each `ghcr.io/siderolabs/<name>:VERSION`. `version` is the text as
/// given (`v1.13.9`); upstream's range applies: from v1.11.0-alpha.0 up to the minor after the
/// newest known release.
pub fn talos_bundle(version: &str) -> Result<Vec<String>, ImagesError> {
    if !version.starts_with('v') {
        return Err(ImagesError::NoV {
            version: version.to_owned(),
        });
    }
    let parsed = Version::parse_tolerant(version).map_err(|source| ImagesError::Version {
        flag: "talos-bundle VERSION",
        source,
    })?;
    let newest = RELEASES.last().map_or((1, 0), |r| r.talos);
    let max = Version::release(newest.0, newest.1 + 1, 0);
    let min = talos_bundle_since();
    if !parsed.at_least(&min) || parsed.at_least(&max) {
        return Err(ImagesError::TalosBundleRange {
            version: version.to_owned(),
            min: min.to_string(),
            max: max.to_string(),
        });
    }
    let mut names = Vec::new();
    if !parsed.at_least(&installer_until()) {
        names.push("installer");
    }
    names.extend([
        "installer-base",
        "imager",
        "talos",
        "talosctl-all",
        "overlays",
        "extensions",
    ]);
    names
        .into_iter()
        .map(|name| {
            reference(
                "talos-bundle VERSION",
                &format!("{SIDEROLABS}/{name}"),
                version,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rows_are_in_order_and_the_default_is_a_release() {
        for pair in RELEASES.windows(2) {
            assert!(pair[0].talos < pair[1].talos);
        }
        assert_eq!(Release::newest().source, "v1.13.9");
        for r in RELEASES {
            let v = Version::parse(r.source).unwrap();
            assert_eq!(
                (v.major, v.minor),
                r.talos,
                "{} is of its row's minor",
                r.source
            );
            // Every default gives valid references.
            k8s_bundle(r, &v, &K8sVersions::default()).unwrap();
        }
    }

    #[test]
    fn tags_follow_the_default_s_v() {
        assert_eq!(tag("f", "v1.36.3", Some("1.33.1")).unwrap(), "v1.33.1");
        assert_eq!(tag("f", "v1.36.3", Some("v1.33")).unwrap(), "v1.33.0");
        assert_eq!(tag("f", "0.28.8", Some("v0.27.4")).unwrap(), "0.27.4");
        assert_eq!(tag("f", "3.7.1", None).unwrap(), "3.7.1");
        assert!(matches!(
            tag("--etcd-version", "v3.6.12", Some("latest")),
            Err(ImagesError::Version {
                flag: "--etcd-version",
                ..
            })
        ));
    }

    #[test]
    fn unknown_talos_and_bad_tags_are_named() {
        assert_eq!(
            Release::for_talos(&Version::parse("v1.8.4").unwrap())
                .unwrap_err()
                .to_string(),
            "Talos v1.8.4: the image rules known here are those of Talos 1.9 to 1.14 (read from \
             upstream's releases)"
        );
        let r = Release::newest();
        let v = Version::parse(r.source).unwrap();
        let err = k8s_bundle(
            r,
            &v,
            &K8sVersions {
                kubernetes: Some("1.33.1+build".to_owned()),
                ..K8sVersions::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ImagesError::Reference {
                    flag: "--k8s-version",
                    ..
                }
            ),
            "{err}"
        );
        let old = Release::for_talos(&Version::parse("v1.12.0").unwrap()).unwrap();
        let err = k8s_bundle(
            old,
            &Version::parse("v1.12.0").unwrap(),
            &K8sVersions {
                kube_network_policies: Some("v1.1.0".to_owned()),
                ..K8sVersions::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--kube-network-policies-version: Talos v1.12.0 does not run kube-network-policies \
             (Talos 1.13 and later do)"
        );
    }

    #[test]
    fn the_default_installer_moved_to_the_factory_in_1_14() {
        let v = |s: &str| Version::parse(s).unwrap();
        assert_eq!(
            default_installer(&v("v1.9.0")).unwrap(),
            "ghcr.io/siderolabs/installer:v1.9.0"
        );
        assert_eq!(
            default_installer(&v("v1.13.9")).unwrap(),
            "ghcr.io/siderolabs/installer:v1.13.9"
        );
        assert_eq!(
            default_installer(&v("v1.14.0-alpha.0")).unwrap(),
            "factory.talos.dev/metal-installer/\
             376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba:v1.14.0-alpha.0"
        );
        // Build metadata is not a tag character: no reference can name that installer.
        assert!(matches!(
            default_installer(&v("v1.9.0+dirty")),
            Err(ImagesError::Reference { .. })
        ));
    }

    #[test]
    fn talos_bundle_range_and_installer() {
        assert_eq!(
            talos_bundle("v1.13.9").unwrap()[0],
            "ghcr.io/siderolabs/installer:v1.13.9"
        );
        assert_eq!(talos_bundle("v1.13.9").unwrap().len(), 7);
        assert_eq!(
            talos_bundle("v1.14.0-alpha.0").unwrap()[0],
            "ghcr.io/siderolabs/installer-base:v1.14.0-alpha.0"
        );
        assert_eq!(
            talos_bundle("v1.11.0-alpha.0").unwrap()[0],
            "ghcr.io/siderolabs/installer:v1.11.0-alpha.0"
        );
        // Upstream's bound is the release after: its pre-releases are still below it.
        talos_bundle("v1.15.0-alpha.0").unwrap();
        for bad in ["v1.10.9", "v1.15.0", "v2.0.0"] {
            assert!(
                matches!(talos_bundle(bad), Err(ImagesError::TalosBundleRange { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            talos_bundle("1.13.9"),
            Err(ImagesError::NoV { .. })
        ));
        assert!(matches!(
            talos_bundle("vx"),
            Err(ImagesError::Version { .. })
        ));
    }
}
