//! The checks of a cache that need no data hashed: the names a node looks files up by, and
//! whether each image can be pulled at all. Pure functions over the [`Inventory`] and the
//! manifest bytes, shared by [`crate::verify()`] (which reports what they find among its other
//! problems) and by whatever writes media ([`structure`]: `imager iso`, the coming `metal`),
//! which refuses such a cache before it writes a byte.
//!
//! - **Names**: every file must be where the format puts it, named as the node looks it up
//!   (`blob/sha256-<64 hex>`, `manifests/<registry dir>/<repo>/{reference/<tag>,digest/sha256-<64
//!   hex>}`), the registry directory spelled `host_port_` and in lower case, repository and tag
//!   names valid. A file a node would never find is a mistake, not something to copy silently.
//! - **Images a node cannot pull**: an index (a multi-platform image) none of whose images is
//!   cached. Upstream keeps the whole index and only the requested platforms' children, so an
//!   index whose children are all missing is what a cache made for no platform the index has
//!   looks like (`cache create` refuses to make one; talosctl, or a hand-edited tree, may not).
//!   The node resolves the tag, then fails on every platform.
//! - **What a medium's node will miss** ([`media_findings`]; warnings, or an error when the
//!   caller is strict): an image the caller expects (the installer and Kubernetes images of the
//!   Talos version the medium is for) that the cache does not hold; a `reference/` file whose
//!   bytes match no `digest/` file of its repository (the node cannot resolve the tag); an image
//!   with no cached manifest for the medium's platform, or whose manifest for it names blobs that
//!   are not in `blob/` (upstream copies such a cache to the disk and the pull fails later, on the
//!   node). Blob contents are not read: only their presence counts.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::LayoutError;
use crate::Platform;
use crate::digest::Digest;
use crate::flat::{self, Inventory, RepoDir, StrayKind};
use crate::layout::MAX_NESTING;
use crate::manifest::{self, Manifest};
use crate::model::Cache;
use crate::reference::{Reference, is_tag};
use crate::verify::{Problem, ProblemKind};

/// Everything in `inv` whose name or place breaks the format: files outside it, symlinks and
/// special files, names that are not a digest where one must be, registry, repository and tag
/// names a node cannot look up. Sorted by path.
pub fn name_problems(inv: &Inventory) -> Vec<Problem> {
    let mut out = Vec::new();
    for s in &inv.strays {
        let (kind, detail) = match s.kind {
            StrayKind::Unexpected => (ProblemKind::UnexpectedEntry, "not part of the cache format"),
            StrayKind::Symlink => (
                ProblemKind::NotARegularFile,
                "symbolic link (never followed)",
            ),
            StrayKind::Special => (ProblemKind::NotARegularFile, "not a regular file"),
            StrayKind::NonUtf8Name => (ProblemKind::BadName, "name is not UTF-8"),
            StrayKind::NotADigestName => (ProblemKind::BadName, "name is not sha256-<64 hex>"),
        };
        out.push(Problem::new(kind, &s.path, detail));
    }
    for repo in &inv.repos {
        if let Err(e) = repo.image_name() {
            out.push(Problem::new(
                ProblemKind::BadName,
                &repo.path,
                e.to_string(),
            ));
        } else if flat::registry_dir(&repo.registry) != repo.registry_dir {
            // Older talosctl releases wrote `host:port`; nodes look for `host_port_`.
            out.push(Problem::new(
                ProblemKind::BadName,
                &repo.path,
                format!(
                    "registry directory {:?} must be spelled {:?}",
                    repo.registry_dir,
                    flat::registry_dir(&repo.registry)
                ),
            ));
        }
        for t in &repo.tags {
            if !is_tag(&t.tag) {
                out.push(Problem::new(
                    ProblemKind::BadName,
                    &t.path,
                    format!("{:?} is not a valid tag", t.tag),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path).then(a.kind.cmp(&b.kind)));
    out
}

/// An image a node cannot pull: an index none of whose images is cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnusableImage {
    /// How the image is named: `registry/repository:tag` for each tag that resolves to it, else
    /// `registry/repository@digest`.
    pub names: Vec<String>,
    /// The index's `digest/` file.
    pub index: PathBuf,
    /// The platforms of the images the index lists (attestations left out); a child without
    /// platform is shown by its digest.
    pub platforms: Vec<String>,
    /// The files that belong to this image alone (its tags, its index, cached attestation
    /// manifests and their blobs): what leaving it out of a medium leaves out. Sorted.
    pub files: Vec<PathBuf>,
}

impl fmt::Display for UnusableImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.names.join(", "))?;
        match self.platforms.len() {
            0 => f.write_str("its index lists no image")?,
            n => write!(
                f,
                "none of the {n} images its index lists ({}) is cached",
                self.platforms.join(", ")
            )?,
        }
        f.write_str(", so a node cannot pull it")
    }
}

/// The manifests of one repository, parsed (`None`: unreadable or not a manifest, which is
/// `verify`'s to report, not a reason to call an image unusable).
struct RepoManifests<'a> {
    dir: &'a RepoDir,
    parsed: HashMap<Digest, (&'a Path, Option<Manifest>)>,
}

impl RepoManifests<'_> {
    /// Whether pulling `digest` from this repository can give a node an image.
    fn usable(&self, digest: &Digest, depth: usize) -> bool {
        match self.parsed.get(digest) {
            None => false,
            Some((_, None | Some(Manifest::Image(_)))) => true,
            Some((_, Some(Manifest::Index(index)))) => {
                depth < MAX_NESTING
                    && index
                        .manifests
                        .iter()
                        .any(|c| c.is_runnable() && self.usable(&c.digest, depth + 1))
            }
        }
    }

    /// The cached manifests `digest` reaches (itself included), and the blobs their image
    /// manifests name.
    fn closure(
        &self,
        digest: &Digest,
        manifests: &mut HashSet<Digest>,
        blobs: &mut HashSet<Digest>,
    ) {
        let mut todo = vec![(*digest, 0usize)];
        while let Some((d, depth)) = todo.pop() {
            let Some((_, parsed)) = self.parsed.get(&d) else {
                continue;
            };
            if depth > MAX_NESTING || !manifests.insert(d) {
                continue;
            }
            match parsed {
                Some(Manifest::Index(index)) => {
                    todo.extend(index.manifests.iter().map(|c| (c.digest, depth + 1)));
                }
                Some(Manifest::Image(image)) => blobs.extend(image.blobs().map(|b| b.digest)),
                None => {}
            }
        }
    }
}

/// The images of `inv` no node can pull (see the module documentation), each with the files
/// that belong to it alone. `read` gives the bytes of a manifest or tag file by its path in the
/// tree (`None` when it could not be read). Only top-level manifests count (those no cached
/// index lists): an index nested in a usable one is the outer index's business.
pub fn unusable_images<'a>(
    inv: &Inventory,
    read: &dyn Fn(&str) -> Option<&'a [u8]>,
) -> Vec<UnusableImage> {
    let path_str = |p: &Path| p.to_string_lossy().into_owned();
    let repos: Vec<RepoManifests<'_>> = inv
        .repos
        .iter()
        .map(|dir| RepoManifests {
            dir,
            parsed: dir
                .manifests
                .iter()
                .map(|m| {
                    let parsed = read(&path_str(&m.path)).and_then(|b| manifest::parse(b).ok());
                    (m.digest, (m.path.as_path(), parsed))
                })
                .collect(),
        })
        .collect();

    // Per repository: the unusable roots, and what the usable ones reach.
    let mut unusable: Vec<(usize, Digest)> = Vec::new();
    let mut kept_manifests: HashSet<PathBuf> = HashSet::new();
    let mut kept_blobs: HashSet<Digest> = HashSet::new();
    for (r, repo) in repos.iter().enumerate() {
        let listed: HashSet<Digest> = repo
            .parsed
            .values()
            .filter_map(|(_, m)| match m {
                Some(Manifest::Index(i)) => Some(i.manifests.iter().map(|c| c.digest)),
                _ => None,
            })
            .flatten()
            .collect();
        // Manifests no root reaches (an index loop) are kept: they are not this check's to drop.
        let mut reached = HashSet::new();
        let mut kept = HashSet::new();
        let mut blobs = HashSet::new();
        for m in &repo.dir.manifests {
            if listed.contains(&m.digest) {
                continue;
            }
            let is_index = matches!(
                repo.parsed.get(&m.digest),
                Some((_, Some(Manifest::Index(_))))
            );
            if is_index && !repo.usable(&m.digest, 0) {
                unusable.push((r, m.digest));
                repo.closure(&m.digest, &mut reached, &mut HashSet::new());
            } else {
                repo.closure(&m.digest, &mut kept, &mut blobs);
            }
        }
        for m in &repo.dir.manifests {
            if kept.contains(&m.digest) || !reached.contains(&m.digest) {
                kept_manifests.insert(m.path.clone());
                if let Some((_, Some(Manifest::Image(image)))) = repo.parsed.get(&m.digest) {
                    kept_blobs.extend(image.blobs().map(|b| b.digest));
                }
            }
        }
        kept_blobs.extend(blobs);
    }

    let blob_files: HashMap<Digest, &Path> = inv
        .blobs
        .iter()
        .map(|b| (b.digest, b.path.as_path()))
        .collect();
    let mut out = Vec::new();
    for (r, digest) in unusable {
        let repo = &repos[r];
        let mut files = BTreeSet::new();
        let mut manifests = HashSet::new();
        let mut blobs = HashSet::new();
        repo.closure(&digest, &mut manifests, &mut blobs);
        for d in &manifests {
            if let Some((path, _)) = repo.parsed.get(d)
                && !kept_manifests.contains(*path)
            {
                files.insert(path.to_path_buf());
            }
        }
        for b in blobs.difference(&kept_blobs) {
            if let Some(path) = blob_files.get(b) {
                files.insert(path.to_path_buf());
            }
        }
        let name = format!("{}/{}", repo.dir.registry, repo.dir.repository);
        let mut names = Vec::new();
        for t in &repo.dir.tags {
            if read(&path_str(&t.path)).is_some_and(|b| Digest::of(b) == digest) {
                names.push(format!("{name}:{}", t.tag));
                files.insert(t.path.clone());
            }
        }
        if names.is_empty() {
            names.push(format!("{name}@{digest}"));
        }
        let (index, platforms) = match repo.parsed.get(&digest) {
            Some((path, Some(Manifest::Index(i)))) => (
                path.to_path_buf(),
                i.manifests
                    .iter()
                    .filter(|c| c.is_runnable())
                    .map(|c| match &c.platform {
                        Some(p) => p.to_string(),
                        None => c.digest.to_string(),
                    })
                    .collect(),
            ),
            _ => continue,
        };
        out.push(UnusableImage {
            names,
            index,
            platforms,
            files: files.into_iter().collect(),
        });
    }
    out.sort_by(|a, b| a.names.cmp(&b.names));
    out
}

/// What [`structure`] found.
#[derive(Debug, Clone, Default)]
pub struct Structure {
    /// [`name_problems`], and every `digest/` file whose bytes are not its name (they were read
    /// for this check, so they are checked). Warnings included: nothing outside the format goes
    /// onto a medium.
    pub problems: Vec<Problem>,
    /// [`unusable_images`].
    pub unusable: Vec<UnusableImage>,
    /// The cache's files, for [`Structure::media_findings`].
    inventory: Inventory,
    /// The bytes of the tag and manifest files that could be read, by path.
    bytes: HashMap<String, Vec<u8>>,
}

impl Structure {
    /// [`media_findings`] over the files of the cache that go onto the medium (`left_out` says
    /// which do not: the caller's selection), from the manifests read by [`structure`].
    pub fn media_findings(
        &self,
        expected: &[ExpectedImage],
        platform: &Platform,
        left_out: &dyn Fn(&Path) -> bool,
    ) -> Vec<Finding> {
        let mut inv = self.inventory.clone();
        inv.blobs.retain(|b| !left_out(&b.path));
        for repo in &mut inv.repos {
            repo.tags.retain(|t| !left_out(&t.path));
            repo.manifests.retain(|m| !left_out(&m.path));
        }
        inv.repos
            .retain(|r| !r.tags.is_empty() || !r.manifests.is_empty());
        media_findings(
            &inv,
            &|p| self.bytes.get(p).map(Vec::as_slice),
            expected,
            platform,
        )
    }
}

/// The structural checks of a cache, for a medium: reads its manifests (small; for a
/// compressed layer, kept from opening it) and hashes nothing else.
pub fn structure(cache: &Cache) -> Result<Structure, LayoutError> {
    let inv = cache.inventory();
    let loaded = cache.load(&|e| e.path.starts_with("manifests/"), &|_| false)?;
    let mut problems = name_problems(&inv);
    for m in inv.repos.iter().flat_map(|r| &r.manifests) {
        if let Some(bytes) = loaded.small_bytes(&m.path.to_string_lossy()) {
            let actual = Digest::of(bytes);
            if actual != m.digest {
                problems.push(Problem::new(
                    ProblemKind::ManifestDigestMismatch,
                    &m.path,
                    format!("content hashes to {actual}"),
                ));
            }
        }
    }
    let unusable = unusable_images(&inv, &|p| loaded.small_bytes(p));
    let bytes = inv
        .repos
        .iter()
        .flat_map(|r| {
            r.tags
                .iter()
                .map(|t| &t.path)
                .chain(r.manifests.iter().map(|m| &m.path))
        })
        .filter_map(|p| {
            let p = p.to_string_lossy().into_owned();
            let bytes = loaded.small_bytes(&p)?.to_vec();
            Some((p, bytes))
        })
        .collect();
    Ok(Structure {
        problems,
        unusable,
        inventory: inv,
        bytes,
    })
}

/// Why a medium's node needs an image ([`ExpectedImage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRole {
    /// The installer a node of Talos `talos` installs from when its machine config names none.
    Installer { talos: String },
    /// An image of the Kubernetes bundle of Talos `talos`, whose default Kubernetes is
    /// `kubernetes`.
    Kubernetes { talos: String, kubernetes: String },
}

impl fmt::Display for ImageRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Installer { talos } => write!(
                f,
                "the installer of Talos {talos}, which an air-gapped install pulls"
            ),
            Self::Kubernetes { talos, kubernetes } => write!(
                f,
                "an image of Talos {talos}'s Kubernetes bundle (Kubernetes {kubernetes})"
            ),
        }
    }
}

/// An image the caller expects a cache to hold, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedImage {
    /// `registry/repository:tag` (or `@digest`), as a reference is written.
    pub reference: String,
    pub role: ImageRole,
}

/// Something a node booted from a medium with this cache would miss ([`media_findings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// An expected image is not in the cache (no such tag, or for a digest reference no such
    /// manifest, in its repository).
    MissingImage { reference: String, role: ImageRole },
    /// `reference/<tag>` whose bytes are no `digest/` file of its repository: the node cannot
    /// resolve the tag.
    UnknownReference {
        /// `registry/repository:tag`.
        image: String,
        path: PathBuf,
    },
    /// An index with no cached image for the platform (it lists one that is not cached, or
    /// lists none).
    NoPlatformImage {
        names: Vec<String>,
        platform: String,
        /// The index lists an image for the platform (that image is not cached).
        listed: bool,
    },
    /// The image a node pulls (an index's image for the platform, or a single-image manifest)
    /// names blobs (config or layers) that are not in `blob/`.
    MissingBlobs {
        names: Vec<String>,
        /// The platform the image was picked for from an index; `None` for a single-image
        /// manifest.
        platform: Option<String>,
        /// The image manifest's `digest/` file.
        manifest: PathBuf,
        blobs: Vec<Digest>,
    },
}

impl Finding {
    /// The image the finding is about, as a reference (the first name when several tags name it).
    pub fn image(&self) -> &str {
        match self {
            Self::MissingImage { reference, .. } => reference,
            Self::UnknownReference { image, .. } => image,
            Self::NoPlatformImage { names, .. } | Self::MissingBlobs { names, .. } => {
                names.first().map_or("", String::as_str)
            }
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingImage { reference, role } => {
                write!(f, "{reference} is not in the cache: it is {role}")
            }
            Self::UnknownReference { image, path } => write!(
                f,
                "{image}: its tag file {} matches no digest/ file of the repository, so a node \
                 cannot resolve the tag",
                path.display()
            ),
            Self::NoPlatformImage {
                names,
                platform,
                listed: true,
            } => write!(
                f,
                "{}: its index lists a {platform} image, but that image is not cached",
                names.join(", ")
            ),
            Self::NoPlatformImage {
                names,
                platform,
                listed: false,
            } => write!(
                f,
                "{}: its index has no {platform} image cached or listed",
                names.join(", ")
            ),
            Self::MissingBlobs {
                names,
                platform,
                manifest,
                blobs,
            } => {
                write!(f, "{}: ", names.join(", "))?;
                if let Some(platform) = platform {
                    write!(f, "its {platform} image ")?;
                } else {
                    f.write_str("its image ")?;
                }
                let list: Vec<String> = blobs.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "({}) names {} blob{} missing from blob/ ({}), so a node fails to pull it",
                    manifest.display(),
                    blobs.len(),
                    if blobs.len() == 1 { "" } else { "s" },
                    list.join(", ")
                )
            }
        }
    }
}

/// What an index offers a node of one platform ([`RepoManifests::pick`]).
enum Pick {
    /// This cached image manifest.
    Image(Digest),
    /// A manifest on the way could not be parsed: `verify`'s to report.
    Unreadable,
    /// No cached image for the platform; `listed`: one is listed.
    Missing { listed: bool },
}

impl RepoManifests<'_> {
    /// The image a node of `platform` pulls for `digest` (an index is searched in its order,
    /// nested indexes included, as containerd does).
    fn pick(&self, digest: &Digest, platform: &Platform, depth: usize) -> Pick {
        match self.parsed.get(digest) {
            None => Pick::Missing { listed: false },
            Some((_, None)) => Pick::Unreadable,
            Some((_, Some(Manifest::Image(_)))) => Pick::Image(*digest),
            Some((_, Some(Manifest::Index(index)))) => {
                let mut listed = false;
                if depth >= MAX_NESTING {
                    return Pick::Missing { listed };
                }
                for child in &index.manifests {
                    if !child.is_runnable()
                        || child
                            .platform
                            .as_ref()
                            .is_some_and(|p| !p.matches(platform))
                    {
                        continue;
                    }
                    match self.pick(&child.digest, platform, depth + 1) {
                        Pick::Image(d) => return Pick::Image(d),
                        Pick::Unreadable => return Pick::Unreadable,
                        Pick::Missing { listed: inner } => {
                            listed |= inner
                                || child.platform.is_some()
                                || !self.parsed.contains_key(&child.digest);
                        }
                    }
                }
                Pick::Missing { listed }
            }
        }
    }
}

/// Whether `inv` holds the image `reference` names: its repository with that tag (or, for a
/// digest reference, that manifest).
fn holds(inv: &Inventory, reference: &Reference) -> bool {
    inv.repos.iter().any(|repo| {
        repo.image_name().ok().as_ref() == Some(reference.name())
            && match (reference.digest(), reference.tag()) {
                (Some(d), _) => repo.manifests.iter().any(|m| m.digest == *d),
                (None, Some(tag)) => repo.tags.iter().any(|t| t.tag == tag),
                (None, None) => false,
            }
    })
}

/// What a node booted from a medium holding `inv` would miss (see the module documentation):
/// each `expected` image the cache does not hold, each tag that resolves to no manifest, and
/// for each image (what a tag names, and each manifest no cached index lists) the image a node
/// of `platform` pulls, when it is not cached or names blobs `blob/` lacks. `read` gives the
/// bytes of a tag or manifest file by its path (`None`: unreadable, `verify`'s to report).
/// Indexes none of whose images is cached are [`unusable_images`]' and left out here. Pure.
pub fn media_findings<'a>(
    inv: &Inventory,
    read: &dyn Fn(&str) -> Option<&'a [u8]>,
    expected: &[ExpectedImage],
    platform: &Platform,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in expected {
        let held = Reference::parse(&e.reference).is_ok_and(|r| holds(inv, &r));
        if !held {
            out.push(Finding::MissingImage {
                reference: e.reference.clone(),
                role: e.role.clone(),
            });
        }
    }

    let path_str = |p: &Path| p.to_string_lossy().into_owned();
    let blobs: HashSet<Digest> = inv.blobs.iter().map(|b| b.digest).collect();
    let mut images = Vec::new();
    for dir in &inv.repos {
        let repo = RepoManifests {
            dir,
            parsed: dir
                .manifests
                .iter()
                .map(|m| {
                    let parsed = read(&path_str(&m.path)).and_then(|b| manifest::parse(b).ok());
                    (m.digest, (m.path.as_path(), parsed))
                })
                .collect(),
        };
        let name = match dir.image_name() {
            Ok(n) => n.to_string(),
            Err(_) => format!("{}/{}", dir.registry, dir.repository),
        };
        // The images: what each tag names, and each manifest no cached index lists.
        let mut roots: std::collections::BTreeMap<Digest, Vec<String>> = Default::default();
        for t in &dir.tags {
            let Some(bytes) = read(&path_str(&t.path)) else {
                continue;
            };
            let digest = Digest::of(bytes);
            if repo.parsed.contains_key(&digest) {
                roots
                    .entry(digest)
                    .or_default()
                    .push(format!("{name}:{}", t.tag));
            } else {
                out.push(Finding::UnknownReference {
                    image: format!("{name}:{}", t.tag),
                    path: t.path.clone(),
                });
            }
        }
        let listed: HashSet<Digest> = repo
            .parsed
            .values()
            .filter_map(|(_, m)| match m {
                Some(Manifest::Index(i)) => Some(i.manifests.iter().map(|c| c.digest)),
                _ => None,
            })
            .flatten()
            .collect();
        for m in &dir.manifests {
            if !listed.contains(&m.digest) {
                roots.entry(m.digest).or_default();
            }
        }
        for (digest, mut names) in roots {
            if names.is_empty() {
                names.push(format!("{name}@{digest}"));
            }
            let is_index = matches!(
                repo.parsed.get(&digest),
                Some((_, Some(Manifest::Index(_))))
            );
            if is_index && !repo.usable(&digest, 0) {
                continue;
            }
            let image = match repo.pick(&digest, platform, 0) {
                Pick::Image(d) => d,
                Pick::Unreadable => continue,
                Pick::Missing { listed } => {
                    images.push(Finding::NoPlatformImage {
                        names,
                        platform: platform.to_string(),
                        listed,
                    });
                    continue;
                }
            };
            let Some((path, Some(Manifest::Image(manifest)))) = repo.parsed.get(&image) else {
                continue;
            };
            let mut missing: Vec<Digest> = manifest
                .blobs()
                .map(|b| b.digest)
                .filter(|d| !blobs.contains(d))
                .collect();
            missing.sort();
            missing.dedup();
            if !missing.is_empty() {
                images.push(Finding::MissingBlobs {
                    names,
                    platform: is_index.then(|| platform.to_string()),
                    manifest: path.to_path_buf(),
                    blobs: missing,
                });
            }
        }
    }
    images.sort_by(|a, b| a.image().cmp(b.image()));
    out.extend(images);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flat::inventory;
    use std::collections::BTreeMap;

    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";

    fn image(config: &[u8], layer: &[u8]) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{IMAGE}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
            Digest::of(config),
            config.len(),
            Digest::of(layer),
            layer.len()
        )
        .into_bytes()
    }

    fn index(children: &[(&[u8], &str)]) -> Vec<u8> {
        let list: Vec<String> = children
            .iter()
            .map(|(bytes, platform)| {
                let (os, arch) = platform.split_once('/').unwrap();
                format!(
                    r#"{{"mediaType":"{IMAGE}","digest":"{}","size":{},"platform":{{"os":"{os}","architecture":"{arch}"}}}}"#,
                    Digest::of(bytes),
                    bytes.len()
                )
            })
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{INDEX}","manifests":[{}]}}"#,
            list.join(",")
        )
        .into_bytes()
    }

    /// A tree as path -> bytes.
    struct Tree(BTreeMap<String, Vec<u8>>);

    impl Tree {
        fn new() -> Self {
            Self(BTreeMap::new())
        }
        fn blob(&mut self, bytes: &[u8]) -> &mut Self {
            self.0.insert(
                format!("blob/{}", Digest::of(bytes).file_name()),
                bytes.to_vec(),
            );
            self
        }
        fn manifest(&mut self, repo: &str, bytes: &[u8]) -> &mut Self {
            self.0.insert(
                format!("manifests/{repo}/digest/{}", Digest::of(bytes).file_name()),
                bytes.to_vec(),
            );
            self
        }
        fn tag(&mut self, repo: &str, tag: &str, bytes: &[u8]) -> &mut Self {
            self.0
                .insert(format!("manifests/{repo}/reference/{tag}"), bytes.to_vec());
            self
        }
        fn unusable(&self) -> Vec<UnusableImage> {
            let inv = inventory(
                self.0.iter().map(|(p, b)| (p.as_str(), b.len() as u64)),
                vec![],
            );
            unusable_images(&inv, &|p| self.0.get(p).map(Vec::as_slice))
        }
        fn findings(&self, expected: &[ExpectedImage], platform: &str) -> Vec<Finding> {
            let inv = inventory(
                self.0.iter().map(|(p, b)| (p.as_str(), b.len() as u64)),
                vec![],
            );
            media_findings(
                &inv,
                &|p| self.0.get(p).map(Vec::as_slice),
                expected,
                &Platform::parse(platform).unwrap(),
            )
        }
        fn names(&self) -> Vec<(String, ProblemKind)> {
            let inv = inventory(
                self.0.iter().map(|(p, b)| (p.as_str(), b.len() as u64)),
                vec![],
            );
            name_problems(&inv)
                .into_iter()
                .map(|p| (p.path.display().to_string(), p.kind))
                .collect()
        }
    }

    const REPO: &str = "docker.io/library/busybox";

    #[test]
    fn an_index_without_any_cached_image_is_unusable() {
        let (amd, arm) = (image(b"c1", b"l1"), image(b"c2", b"l2"));
        let idx = index(&[(&amd, "linux/amd64"), (&arm, "linux/arm64")]);
        let mut t = Tree::new();
        t.manifest(REPO, &idx)
            .tag(REPO, "latest", &idx)
            .tag(REPO, "1.36", &idx);
        let found = t.unusable();
        assert_eq!(found.len(), 1, "{found:#?}");
        let u = &found[0];
        assert_eq!(
            u.names,
            [
                "docker.io/library/busybox:1.36",
                "docker.io/library/busybox:latest"
            ]
        );
        assert_eq!(u.platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(
            u.index,
            Path::new(&format!(
                "manifests/{REPO}/digest/{}",
                Digest::of(&idx).file_name()
            ))
        );
        assert_eq!(u.files.len(), 3, "{:?}", u.files);
        assert_eq!(
            u.to_string(),
            "docker.io/library/busybox:1.36, docker.io/library/busybox:latest: none of the 2 \
             images its index lists (linux/amd64, linux/arm64) is cached, so a node cannot pull it"
        );

        // One cached child is enough.
        t.manifest(REPO, &amd).blob(b"c1").blob(b"l1");
        assert_eq!(t.unusable(), []);
    }

    #[test]
    fn attestations_and_empty_indexes_do_not_count_as_images() {
        let att = image(b"att-config", b"att-layer");
        let amd = image(b"c1", b"l1");
        let idx = index(&[(&amd, "linux/amd64"), (&att, "unknown/unknown")]);
        let mut t = Tree::new();
        t.manifest(REPO, &idx)
            .tag(REPO, "latest", &idx)
            .manifest(REPO, &att)
            .blob(b"att-config")
            .blob(b"att-layer");
        let found = t.unusable();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].platforms, ["linux/amd64"]);
        // Skipping it leaves out the attestation and its blobs too.
        assert_eq!(found[0].files.len(), 5, "{:?}", found[0].files);

        let empty = index(&[]);
        let mut t = Tree::new();
        t.manifest("ghcr.io/x/y", &empty);
        let found = t.unusable();
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].names,
            [format!("ghcr.io/x/y@{}", Digest::of(&empty))]
        );
        assert!(found[0].to_string().contains("its index lists no image"));
    }

    #[test]
    fn files_shared_with_a_usable_image_stay() {
        // Two tags of one repository: one an index with nothing cached, one a single image;
        // both name the same config blob.
        let other = image(b"shared", b"own-layer");
        let att = image(b"shared", b"att-layer");
        let idx = index(&[
            (&image(b"c9", b"l9"), "linux/arm64"),
            (&att, "unknown/unknown"),
        ]);
        let mut t = Tree::new();
        t.manifest(REPO, &idx)
            .tag(REPO, "multi", &idx)
            .manifest(REPO, &att)
            .manifest(REPO, &other)
            .tag(REPO, "single", &other)
            .blob(b"shared")
            .blob(b"own-layer")
            .blob(b"att-layer");
        let found = t.unusable();
        assert_eq!(found.len(), 1);
        let files: Vec<String> = found[0]
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert!(!files.contains(&format!("blob/{}", Digest::of(b"shared").file_name())));
        assert!(files.contains(&format!("blob/{}", Digest::of(b"att-layer").file_name())));
        assert!(files.contains(&format!("manifests/{REPO}/reference/multi")));
        assert!(!files.contains(&format!("manifests/{REPO}/reference/single")));
        assert_eq!(files.len(), 4, "{files:?}");
    }

    #[test]
    fn nested_and_unparsable_manifests() {
        // An index whose one child is an index with a cached image: usable.
        let amd = image(b"c1", b"l1");
        let inner = index(&[(&amd, "linux/amd64")]);
        let outer = format!(
            r#"{{"schemaVersion":2,"mediaType":"{INDEX}","manifests":[{{"mediaType":"{INDEX}","digest":"{}","size":{}}}]}}"#,
            Digest::of(&inner),
            inner.len()
        )
        .into_bytes();
        let mut t = Tree::new();
        t.manifest(REPO, &outer)
            .manifest(REPO, &inner)
            .manifest(REPO, &amd);
        assert_eq!(t.unusable(), []);
        // Without the image, the outer one is reported (the inner one is its child).
        t.0.retain(|p, _| !p.ends_with(&Digest::of(&amd).file_name()));
        let found = t.unusable();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].names, [format!("{REPO}@{}", Digest::of(&outer))]);
        // Bytes that are not a manifest are verify's to report, not an unusable image.
        let mut t = Tree::new();
        t.manifest(REPO, b"not json");
        assert_eq!(t.unusable(), []);
    }

    #[test]
    fn names_a_node_cannot_look_up() {
        let amd = image(b"c1", b"l1");
        let mut t = Tree::new();
        t.manifest(REPO, &amd)
            .tag("LOCALHOST_5055_/app", "v1", &amd)
            .tag("localhost:5055/app", "v1", &amd)
            .tag(REPO, "bad%tag", &amd)
            .blob(b"c1");
        t.0.insert("blob/notes.txt".into(), vec![]);
        t.0.insert("blob/sha256-abc".into(), vec![]);
        t.0.insert("README".into(), vec![]);
        assert_eq!(
            t.names(),
            [
                ("README".to_owned(), ProblemKind::UnexpectedEntry),
                ("blob/notes.txt".to_owned(), ProblemKind::BadName),
                ("blob/sha256-abc".to_owned(), ProblemKind::BadName),
                (
                    "manifests/LOCALHOST_5055_/app".to_owned(),
                    ProblemKind::BadName
                ),
                (
                    format!("manifests/{REPO}/reference/bad%tag"),
                    ProblemKind::BadName
                ),
                (
                    "manifests/localhost:5055/app".to_owned(),
                    ProblemKind::BadName
                ),
            ]
        );
    }

    fn installer(reference: &str) -> ExpectedImage {
        ExpectedImage {
            reference: reference.to_owned(),
            role: ImageRole::Installer {
                talos: "v1.9.0".to_owned(),
            },
        }
    }

    /// busybox as upstream caches it for linux/amd64: the index of two platforms, the amd64
    /// image and its blobs.
    fn busybox() -> (Tree, Vec<u8>, Vec<u8>) {
        let (amd, arm) = (image(b"c1", b"l1"), image(b"c2", b"l2"));
        let idx = index(&[(&amd, "linux/amd64"), (&arm, "linux/arm64")]);
        let mut t = Tree::new();
        t.manifest(REPO, &idx)
            .tag(REPO, "latest", &idx)
            .manifest(REPO, &amd)
            .blob(b"c1")
            .blob(b"l1");
        (t, amd, arm)
    }

    #[test]
    fn a_complete_cache_has_no_findings() {
        let (t, ..) = busybox();
        // The reference is normalized as a node would: docker.io/library/ for a Hub short name.
        let expected = [installer("busybox:latest"), installer("docker.io/busybox")];
        assert_eq!(t.findings(&expected, "linux/amd64"), []);
    }

    #[test]
    fn an_expected_image_that_is_not_cached_is_named() {
        let (mut t, ..) = busybox();
        let expected = [
            installer("ghcr.io/siderolabs/installer:v1.9.0"),
            installer("docker.io/library/busybox:1.36"),
            installer("docker.io/library/busybox:latest"),
        ];
        let found = t.findings(&expected, "linux/amd64");
        assert_eq!(
            found
                .iter()
                .map(|f| f.image().to_owned())
                .collect::<Vec<_>>(),
            [
                "ghcr.io/siderolabs/installer:v1.9.0",
                "docker.io/library/busybox:1.36"
            ]
        );
        assert_eq!(
            found[0].to_string(),
            "ghcr.io/siderolabs/installer:v1.9.0 is not in the cache: it is the installer of \
             Talos v1.9.0, which an air-gapped install pulls"
        );
        // A digest reference is held when its manifest is.
        let amd = image(b"c1", b"l1");
        let by_digest = format!("docker.io/library/busybox@{}", Digest::of(&amd));
        assert_eq!(t.findings(&[installer(&by_digest)], "linux/amd64"), []);
        t.0.retain(|p, _| !p.ends_with(&Digest::of(&amd).file_name()));
        assert!(matches!(
            t.findings(&[installer(&by_digest)], "linux/amd64")[0],
            Finding::MissingImage { .. }
        ));
    }

    #[test]
    fn a_tag_whose_bytes_are_no_manifest_is_named() {
        let (mut t, ..) = busybox();
        t.tag(REPO, "broken", b"{\"schemaVersion\":2}");
        let found = t.findings(&[], "linux/amd64");
        assert_eq!(
            found,
            [Finding::UnknownReference {
                image: "docker.io/library/busybox:broken".to_owned(),
                path: PathBuf::from(format!("manifests/{REPO}/reference/broken")),
            }]
        );
        assert!(
            found[0]
                .to_string()
                .contains("matches no digest/ file of the repository")
        );
        // The bytes of another repository's manifest do not count.
        let (mut t, amd, _) = busybox();
        t.manifest("ghcr.io/x/y", &amd)
            .tag("ghcr.io/x/z", "v1", &amd);
        assert_eq!(
            t.findings(&[], "linux/amd64")
                .iter()
                .map(Finding::image)
                .collect::<Vec<_>>(),
            ["ghcr.io/x/z:v1"]
        );
    }

    #[test]
    fn blobs_missing_for_the_medium_s_platform_are_named() {
        let (mut t, amd, _) = busybox();
        t.0.remove(&format!("blob/{}", Digest::of(b"l1").file_name()));
        let found = t.findings(&[], "linux/amd64");
        assert_eq!(
            found,
            [Finding::MissingBlobs {
                names: vec!["docker.io/library/busybox:latest".to_owned()],
                platform: Some("linux/amd64".to_owned()),
                manifest: PathBuf::from(format!(
                    "manifests/{REPO}/digest/{}",
                    Digest::of(&amd).file_name()
                )),
                blobs: vec![Digest::of(b"l1")],
            }]
        );
        assert!(
            found[0]
                .to_string()
                .starts_with("docker.io/library/busybox:latest: its linux/amd64 image (manifests/")
        );
        assert!(
            found[0]
                .to_string()
                .contains("names 1 blob missing from blob/")
        );

        // The arm64 image's blobs are another platform's business; its image is not cached
        // for an arm64 medium.
        let (t, ..) = busybox();
        let found = t.findings(&[], "linux/arm64");
        assert_eq!(
            found,
            [Finding::NoPlatformImage {
                names: vec!["docker.io/library/busybox:latest".to_owned()],
                platform: "linux/arm64".to_owned(),
                listed: true,
            }]
        );
        let found = t.findings(&[], "linux/s390x");
        assert!(
            matches!(&found[..], [Finding::NoPlatformImage { listed: false, .. }]),
            "{found:?}"
        );

        // A single-image manifest, untagged: named by its digest, its config missing.
        let single = image(b"own-config", b"l1");
        let mut t = Tree::new();
        t.manifest("ghcr.io/x/y", &single).blob(b"l1");
        let found = t.findings(&[], "linux/amd64");
        assert_eq!(
            found,
            [Finding::MissingBlobs {
                names: vec![format!("ghcr.io/x/y@{}", Digest::of(&single))],
                platform: None,
                manifest: PathBuf::from(format!(
                    "manifests/ghcr.io/x/y/digest/{}",
                    Digest::of(&single).file_name()
                )),
                blobs: vec![Digest::of(b"own-config")],
            }]
        );
    }

    #[test]
    fn unusable_images_are_left_to_their_own_check() {
        let (amd, arm) = (image(b"c1", b"l1"), image(b"c2", b"l2"));
        let idx = index(&[(&amd, "linux/amd64"), (&arm, "linux/arm64")]);
        let mut t = Tree::new();
        t.manifest(REPO, &idx).tag(REPO, "latest", &idx);
        assert_eq!(t.unusable().len(), 1);
        assert_eq!(t.findings(&[], "linux/amd64"), []);
    }
}
