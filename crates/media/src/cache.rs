//! What of an image cache goes onto a medium, for every medium (`imager iso`, the coming
//! `metal`): the cache's structure is checked before a byte is written ([`select`]), with the
//! cache crate's checks that `cache verify` reports too ([`imager_cache::check`]).
//!
//! - A file whose name or place breaks the format (a `blob/` name that is not `sha256-<64 hex>`,
//!   an upper-case registry directory, a symlink) is refused: a node would never find it, or it
//!   is not the cache's. A file the format has no place for at all (a `README` beside `blob/`, a
//!   leftover `.tmp-*`: `verify`'s `unexpected-entry` warning) is left out of the medium, and
//!   [`CacheSelection::left_out_files`] says so.
//! - A `digest/` manifest whose bytes are not its name is refused (the manifests are read for
//!   the check anyway).
//! - An image no node can pull (an index none of whose images is cached) is refused, naming it,
//!   unless the caller asks to skip such images: then its files (tags, index, attestations and
//!   the blobs only they use) are left out, and [`CacheSelection::skipped`] says which.
//!
//! - What a node of the medium's Talos version would miss ([`check::media_findings`], over what
//!   goes onto the medium): the installer image of that version and the images of its
//!   Kubernetes bundle ([`expected_images`]: `imager_talos::images`' rules and defaults), tags
//!   whose bytes are no manifest of their repository, an image without a cached manifest for the
//!   medium's platform or whose manifest for it names blobs `blob/` lacks. Warnings
//!   ([`CacheSelection::findings`]), or an error when the caller is strict
//!   ([`MediaCheck::strict`]). When the rules of the version are not known, what is not checked
//!   is said in [`CacheSelection::notes`].
//!
//! Blob contents are not hashed here (that is a full read of the cache): a compressed layer's
//! entries are hashed as they stream ([`imager_cache::Cache::read_stream`]), the others when the
//! caller asks for it while they are copied (`imager iso --verify`).

use std::collections::HashSet;
use std::path::PathBuf;

use imager_cache::check::{self, ExpectedImage, Finding, ImageRole, UnusableImage};
use imager_cache::{Cache, Entry, Platform, Problem, ProblemKind};
use imager_talos::Version;
use imager_talos::images::{self, K8sVersions, Release};

/// Why a cache cannot go onto a medium as it is.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "image cache {path}: {}: {}{}",
        problems[0].path.display(),
        problems[0].detail,
        more(problems.len(), "problems")
    )]
    Structure {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("image cache {path}: {}{}", images[0], more(images.len(), "images"))]
    Unusable {
        path: PathBuf,
        images: Vec<UnusableImage>,
    },
    /// The caller is strict and a node of the medium would miss something.
    #[error(
        "image cache {path}: a node of Talos {version} ({platform}) would miss {}:{}",
        plural(findings.len(), "thing", "things"),
        findings.iter().map(|f| format!("\n  - {f}")).collect::<String>()
    )]
    Incomplete {
        path: PathBuf,
        version: String,
        platform: String,
        findings: Vec<Finding>,
    },
    #[error("reading the image cache {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: Box<imager_cache::LayoutError>,
    },
}

fn more(n: usize, what: &str) -> String {
    match n {
        0 | 1 => String::new(),
        n => format!(
            " (and {} more {what}: `imager cache verify` lists them)",
            n - 1
        ),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What the cache is checked against: the medium's Talos version and platform.
#[derive(Debug, Clone)]
pub struct MediaCheck {
    /// The Talos version the medium is for (`v1.9.0`).
    pub version: String,
    /// The platform of the medium's nodes (`linux/amd64`).
    pub platform: Platform,
    /// Refuse the cache ([`CacheError::Incomplete`]) when a node would miss something, instead
    /// of saying so in [`CacheSelection::findings`].
    pub strict: bool,
}

/// The images a node of Talos `version` pulls that a cache for it must hold: the installer it
/// installs from when its machine config names none ([`images::default_installer`]) and the
/// Kubernetes bundle of the release at its defaults ([`images::k8s_bundle`], the table of
/// `imager_talos::images::RELEASES`). What cannot be derived for this version is said in the
/// notes, not guessed.
pub fn expected_images(version: &str) -> (Vec<ExpectedImage>, Vec<String>) {
    let mut expected = Vec::new();
    let mut notes = Vec::new();
    let talos = match Version::parse(version) {
        Ok(v) => v,
        Err(err) => {
            notes.push(format!("the cache is not checked against --version: {err}"));
            return (expected, notes);
        }
    };
    let installer = match images::default_installer(&talos) {
        Ok(reference) => {
            expected.push(ExpectedImage {
                reference: reference.clone(),
                role: ImageRole::Installer {
                    talos: version.to_owned(),
                },
            });
            Some(reference)
        }
        Err(err) => {
            notes.push(format!("the installer image is not checked: {err}"));
            None
        }
    };
    let bundle = Release::for_talos(&talos).and_then(|release| {
        Ok((
            release,
            images::k8s_bundle(release, &talos, &K8sVersions::default())?,
        ))
    });
    match bundle {
        Ok((release, list)) => {
            for reference in list {
                // Up to Talos 1.11 the bundle lists the installer too.
                if installer.as_deref() == Some(reference.as_str()) {
                    continue;
                }
                expected.push(ExpectedImage {
                    reference,
                    role: ImageRole::Kubernetes {
                        talos: version.to_owned(),
                        kubernetes: release.default_kubernetes(),
                    },
                });
            }
        }
        Err(err) => notes.push(format!("the Kubernetes images are not checked: {err}")),
    }
    (expected, notes)
}

/// The entries of a cache that go onto a medium.
#[derive(Debug, Clone, Default)]
pub struct CacheSelection {
    left_out: HashSet<String>,
    /// Images left out because no node could pull them.
    pub skipped: Vec<UnusableImage>,
    /// Files left out because the format has no place for them.
    pub left_out_files: Vec<Problem>,
    /// What a node of the medium would miss (the caller was not strict).
    pub findings: Vec<Finding>,
    /// What was not checked, and why ([`expected_images`]).
    pub notes: Vec<String>,
}

impl CacheSelection {
    /// Whether `entry` goes onto the medium.
    pub fn includes(&self, entry: &Entry) -> bool {
        !self.left_out.contains(&entry.path)
    }
}

/// Checks `cache` for a medium (see the module documentation) and says what goes onto it.
pub fn select(
    cache: &Cache,
    skip_unusable: bool,
    media: &MediaCheck,
) -> Result<CacheSelection, CacheError> {
    let path = cache.input().to_owned();
    let mut structure = check::structure(cache).map_err(|source| CacheError::Read {
        path: path.clone(),
        source: Box::new(source),
    })?;
    let (strays, errors): (Vec<Problem>, Vec<Problem>) = std::mem::take(&mut structure.problems)
        .into_iter()
        .partition(|p| p.kind == ProblemKind::UnexpectedEntry);
    if !errors.is_empty() {
        return Err(CacheError::Structure {
            path,
            problems: errors,
        });
    }
    if !structure.unusable.is_empty() && !skip_unusable {
        return Err(CacheError::Unusable {
            path,
            images: structure.unusable,
        });
    }
    let left_out: HashSet<String> = structure
        .unusable
        .iter()
        .flat_map(|u| &u.files)
        .chain(strays.iter().map(|p| &p.path))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let (expected, notes) = expected_images(&media.version);
    let findings = structure.media_findings(&expected, &media.platform, &|p| {
        left_out.contains(p.to_string_lossy().as_ref())
    });
    if media.strict && !findings.is_empty() {
        return Err(CacheError::Incomplete {
            path,
            version: media.version.clone(),
            platform: media.platform.to_string(),
            findings,
        });
    }
    Ok(CacheSelection {
        left_out,
        skipped: std::mem::take(&mut structure.unusable),
        left_out_files: strays,
        findings,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn references(version: &str) -> Vec<String> {
        expected_images(version)
            .0
            .into_iter()
            .map(|e| e.reference)
            .collect()
    }

    #[test]
    fn the_installer_and_the_bundle_once_each() {
        // Talos 1.10's bundle lists the installer itself: it is expected once, as the installer.
        let (expected, notes) = expected_images("v1.10.9");
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            expected[0].reference,
            "ghcr.io/siderolabs/installer:v1.10.9"
        );
        assert!(matches!(expected[0].role, ImageRole::Installer { .. }));
        assert_eq!(
            references("v1.10.9")
                .iter()
                .filter(|r| r.contains("/installer:"))
                .count(),
            1
        );
        assert_eq!(expected.len(), 10);
        assert!(expected[1..].iter().all(|e| e.role
            == ImageRole::Kubernetes {
                talos: "v1.10.9".to_owned(),
                kubernetes: "v1.33.6".to_owned()
            }));
        let v1_13 = references("v1.13.9");
        assert_eq!(v1_13[0], "ghcr.io/siderolabs/installer:v1.13.9");
        assert!(v1_13.contains(&"registry.k8s.io/kube-apiserver:v1.36.3".to_owned()));
        assert_eq!(v1_13.len(), 11);
    }

    #[test]
    fn what_cannot_be_derived_is_a_note() {
        // No bundle rules before Talos 1.9: the installer is still checked.
        let (expected, notes) = expected_images("v1.8.4");
        assert_eq!(
            expected.iter().map(|e| &e.reference).collect::<Vec<_>>(),
            ["ghcr.io/siderolabs/installer:v1.8.4"]
        );
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("Kubernetes images are not checked"),
            "{notes:?}"
        );
        let (expected, notes) = expected_images("v1.9.0+dirty");
        assert!(expected.is_empty());
        assert_eq!(notes.len(), 2, "{notes:?}");
    }
}
