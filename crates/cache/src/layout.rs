//! Reading OCI image layouts for the cache model ([`crate::model`]):
//!
//! - **oci-wrapped**: an OCI image layout whose image(s) have one tar layer holding a flat tree,
//!   as `talosctl images cache-create --layout oci` writes it (one image per platform is also
//!   accepted); the image for the requested platform is read in place.
//! - **oci-layout**: a plain OCI image layout with one or many named images, as `skopeo copy ...
//!   oci:DIR:NAME`, oras, regctl, crane or containerd write it; its manifests and blobs are named
//!   by their flat-tree paths, every manifest's digest and every blob's size checked.
//!
//! What tells the two OCI forms apart is content, not annotations: a layout is oci-wrapped when
//! every image it holds has exactly one layer and that layer's first tar entries are under
//! `blob/` or `manifests/`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Platform;
use crate::digest::Digest;
use crate::flat::{FlatError, read_capped};
use crate::manifest::{self, Descriptor, ImageManifest, Manifest, ManifestError};
use crate::reference::{ImageName, Reference, ReferenceError, is_tag};
use crate::tar_layer;
use crate::tar_layer::LayerReadError;

/// The annotation OCI layouts name images with: a full reference or a bare tag.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd (`ctr export`, nerdctl) names images with: a full reference.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// index.json of a layout with thousands of images is still a few MiB; the cap is only there so a
/// wrong file cannot be read whole.
const MAX_INDEX_JSON: u64 = 64 << 20;
/// Indexes of indexes exist (rarely two levels); deeper is a loop or an attack.
pub(crate) const MAX_NESTING: usize = 8;

/// How to read a cache.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The platform whose image is read from a multi-platform oci-wrapped layout (default
    /// `linux/amd64`). Plain layouts keep every platform present.
    pub platform: Platform,
    /// Registry and repository for images a plain layout names by a bare tag (`latest`), e.g.
    /// `registry.example.com/team/app`; also names images that carry no name at all (by digest).
    pub ref_prefix: Option<String>,
}

/// Which form an input was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputForm {
    Flat,
    OciWrapped,
    OciLayout,
    Iso,
    /// A GPT disk image (`imager metal`'s) whose `IMAGECACHE` partition holds ext4.
    Metal,
}

impl std::fmt::Display for InputForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Flat => "flat tree",
            Self::OciWrapped => "OCI layout wrapping a flat tree",
            Self::OciLayout => "OCI image layout",
            Self::Iso => "ISO 9660 image",
            Self::Metal => "disk image (IMAGECACHE partition)",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("image cache {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "image cache {path}: not a cache (no oci-layout file, no manifests/ or blob/ directory)"
    )]
    NotACache { path: PathBuf },
    #[error("OCI layout {path}: oci-layout says version {version:?}; only 1.x is supported")]
    LayoutVersion { path: PathBuf, version: String },
    #[error("{path}: {size} bytes, more than the {MAX_INDEX_JSON}-byte limit for index.json")]
    IndexTooLarge { path: PathBuf, size: u64 },
    #[error("OCI layout {path}: invalid JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("OCI layout {path}: {what} {digest}")]
    Manifest {
        path: PathBuf,
        what: String,
        digest: Digest,
        #[source]
        source: Box<ManifestError>,
    },
    #[error("OCI layout {layout}: {what} {digest} is not in blobs/sha256/")]
    MissingBlob {
        layout: PathBuf,
        what: String,
        digest: Digest,
    },
    #[error(
        "OCI layout {layout}: index.json entry {index} ({digest}) has no name (no {REF_NAME} or {CONTAINERD_NAME} annotation); give a ref prefix (registry/repository) to store it by digest"
    )]
    NoName {
        layout: PathBuf,
        index: usize,
        digest: Digest,
    },
    #[error(
        "OCI layout {layout}: index.json entry {index} ({digest}) is named by the bare tag {tag:?}; give a ref prefix (e.g. registry.example.com/team/app) or name it with a full reference"
    )]
    BareTag {
        layout: PathBuf,
        index: usize,
        digest: Digest,
        tag: String,
    },
    #[error("OCI layout {layout}: index.json entry {index} ({digest}) has the name {name:?}")]
    Name {
        layout: PathBuf,
        index: usize,
        digest: Digest,
        name: String,
        #[source]
        source: Box<ReferenceError>,
    },
    #[error("ref prefix {prefix:?}")]
    Prefix {
        prefix: String,
        #[source]
        source: Box<ReferenceError>,
    },
    #[error(
        "OCI layout {layout}: index.json entry {index} is named {reference}, but its digest is {digest}"
    )]
    NameDigest {
        layout: PathBuf,
        index: usize,
        reference: String,
        digest: Digest,
    },
    #[error("OCI layout {layout}: {reference} names two different images, {first} and {second}")]
    DuplicateName {
        layout: PathBuf,
        reference: String,
        first: Digest,
        second: Digest,
    },
    #[error("OCI layout {layout}: no cache image for {wanted}; it has {available}")]
    NoPlatform {
        layout: PathBuf,
        wanted: Platform,
        available: String,
    },
    #[error(
        "OCI layout {layout}: some images are wrapped caches (one layer holding blob/ and manifests/) and some are not; give one or the other"
    )]
    MixedWrapped { layout: PathBuf },
    #[error("OCI layout {layout}: image indexes nest deeper than {MAX_NESTING} levels at {digest}")]
    Nesting { layout: PathBuf, digest: Digest },
    #[error("cache layer {digest} ({layer})")]
    Layer {
        layer: PathBuf,
        digest: Digest,
        #[source]
        source: Box<LayerReadError>,
    },
    #[error(
        "{input}: {path}: its content hashes to {actual}, not the digest its name says (read from {layer})"
    )]
    EntryDigest {
        input: PathBuf,
        layer: PathBuf,
        path: String,
        actual: Digest,
    },
    #[error("{input}: the cache path {path} appears twice")]
    DuplicatePath { input: PathBuf, path: String },
    #[error("image {path}")]
    Iso {
        path: PathBuf,
        #[source]
        source: Box<imager_iso::IsoError>,
    },
    #[error("image {path}: an ISO 9660 image without an imagecache/ directory")]
    NoCacheDir { path: PathBuf },
    #[error("disk image {path}")]
    Gpt {
        path: PathBuf,
        #[source]
        source: Box<imager_disk::read::GptError>,
    },
    #[error("disk image {path}: no partition named IMAGECACHE (partitions: {names})")]
    NoCachePartition { path: PathBuf, names: String },
    #[error("disk image {path}: the IMAGECACHE partition")]
    Ext4 {
        path: PathBuf,
        #[source]
        source: Box<imager_ext4::read::ReadError>,
    },
    #[error(transparent)]
    Flat(#[from] FlatError),
}

impl LayoutError {
    /// For a compressed layer refused by [`crate::Cache::open_within`] for want of room: the file
    /// data declared up to where it stopped, and the room.
    pub fn no_room(&self) -> Option<(u64, u64)> {
        match self {
            Self::Layer { source, .. } => match source.as_ref() {
                LayerReadError::Tar(crate::tar_layer::TarLayerError::NoRoom {
                    declared,
                    room,
                    ..
                }) => Some((*declared, *room)),
                _ => None,
            },
            _ => None,
        }
    }
}

type Result<T, E = LayoutError> = std::result::Result<T, E>;

#[derive(Deserialize)]
struct OciLayoutFile {
    #[serde(rename = "imageLayoutVersion")]
    version: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct IndexJson {
    #[serde(default)]
    pub(crate) manifests: Vec<Descriptor>,
}

pub(crate) struct OciLayout {
    pub(crate) path: PathBuf,
    pub(crate) index: IndexJson,
}

/// An image of a wrapped-cache layout.
pub(crate) struct Candidate {
    pub(crate) platform: Option<Platform>,
    pub(crate) manifest: ImageManifest,
}

impl OciLayout {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let layout_file = path.join("oci-layout");
        let bytes = read_capped(&layout_file)?;
        let v: OciLayoutFile =
            serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json {
                path: layout_file.clone(),
                source,
            })?;
        if !v.version.starts_with("1.") {
            return Err(LayoutError::LayoutVersion {
                path: path.to_owned(),
                version: v.version,
            });
        }
        let index_path = path.join("index.json");
        let len = fs::metadata(&index_path)
            .map_err(|source| FlatError::Read {
                path: index_path.clone(),
                source,
            })?
            .len();
        if len > MAX_INDEX_JSON {
            return Err(LayoutError::IndexTooLarge {
                path: index_path,
                size: len,
            });
        }
        let bytes = fs::read(&index_path).map_err(|source| FlatError::Read {
            path: index_path.clone(),
            source,
        })?;
        let index = serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json {
            path: index_path,
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            index,
        })
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.path.join("blobs/sha256").join(digest.hex())
    }

    pub(crate) fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a manifest blob, checking it against its descriptor.
    pub(crate) fn read_manifest(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(&desc.digest);
        if !path.is_file() {
            return Err(LayoutError::MissingBlob {
                layout: self.path.clone(),
                what: what.to_owned(),
                digest: desc.digest,
            });
        }
        let bytes = read_capped(&path)?;
        if bytes.len() as u64 != desc.size {
            return Err(FlatError::SizeMismatch {
                path,
                expected: desc.size,
                actual: bytes.len() as u64,
            }
            .into());
        }
        let actual = Digest::of(&bytes);
        if actual != desc.digest {
            return Err(FlatError::DigestMismatch {
                path,
                expected: desc.digest,
                actual,
            }
            .into());
        }
        Ok(bytes)
    }

    pub(crate) fn parse(&self, bytes: &[u8], desc: &Descriptor, what: &str) -> Result<Manifest> {
        manifest::parse(bytes).map_err(|source| LayoutError::Manifest {
            path: self.path.clone(),
            what: what.to_owned(),
            digest: desc.digest,
            source: Box::new(source),
        })
    }

    /// The layout's images if it is an oci-wrapped cache, `None` if it is a plain layout.
    pub(crate) fn wrapped_candidates(&self) -> Result<Option<Vec<Candidate>>> {
        let mut images: Vec<(Option<Platform>, Descriptor)> = Vec::new();
        for desc in &self.index.manifests {
            let bytes = self.read_manifest(desc, "manifest")?;
            match self.parse(&bytes, desc, "manifest")? {
                Manifest::Image(_) => images.push((desc.platform.clone(), desc.clone())),
                // An index of per-platform cache images: its present children are the candidates.
                Manifest::Index(index) => {
                    for child in index.manifests {
                        if self.has_blob(&child.digest) {
                            images.push((child.platform.clone(), child));
                        }
                    }
                }
            }
        }
        let mut candidates = Vec::new();
        let mut plain = 0;
        for (platform, desc) in images {
            let bytes = self.read_manifest(&desc, "manifest")?;
            let Manifest::Image(m) = self.parse(&bytes, &desc, "manifest")? else {
                plain += 1;
                continue;
            };
            let wrapped = match &m.layers[..] {
                [layer] => File::open(self.blob_path(&layer.digest))
                    .is_ok_and(tar_layer::looks_like_cache_layer),
                _ => false,
            };
            if wrapped {
                candidates.push(Candidate {
                    platform,
                    manifest: m,
                });
            } else {
                plain += 1;
            }
        }
        match (candidates.is_empty(), plain) {
            (true, _) => Ok(None),
            (false, 0) => Ok(Some(candidates)),
            (false, _) => Err(LayoutError::MixedWrapped {
                layout: self.path.clone(),
            }),
        }
    }

    /// Which candidate holds the cache for `wanted`: the one whose platform matches (the
    /// index.json descriptor's, else its config's), or the only one whatever it says (its content
    /// does not depend on it; upstream fails here with "no OCI image found for arm64").
    pub(crate) fn choose_wrapped(
        &self,
        candidates: &[Candidate],
        wanted: &Platform,
    ) -> Result<usize> {
        let mut platforms = Vec::with_capacity(candidates.len());
        for c in candidates {
            let platform = match &c.platform {
                Some(p) => Some(p.clone()),
                None => self.config_platform(&c.manifest),
            };
            platforms.push(platform);
        }
        choose_platform(&platforms, wanted).map_err(|available| LayoutError::NoPlatform {
            layout: self.path.clone(),
            wanted: wanted.clone(),
            available,
        })
    }

    fn config_platform(&self, m: &ImageManifest) -> Option<Platform> {
        let bytes = read_capped(&self.blob_path(&m.config.digest)).ok()?;
        manifest::config_platform(&bytes)
    }
}

/// A top-level image of a plain layout, with the name it is stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamedImage {
    pub name: ImageName,
    /// `None`: stored by digest only.
    pub tag: Option<String>,
    pub descriptor: Descriptor,
}

impl std::fmt::Display for NamedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tag {
            Some(tag) => write!(f, "{}:{tag}", self.name),
            None => write!(f, "{}@{}", self.name, self.descriptor.digest),
        }
    }
}

/// Decides the name of every index.json entry of a plain layout. A name that is a valid tag is a
/// bare tag and needs `prefix`; anything else must be a full reference. Pure.
pub(crate) fn name_descriptors(
    layout: &Path,
    descriptors: &[Descriptor],
    prefix: Option<&ImageName>,
) -> Result<Vec<NamedImage>> {
    let mut out: Vec<NamedImage> = Vec::new();
    let mut tags: BTreeMap<(ImageName, String), Digest> = BTreeMap::new();
    for (index, desc) in descriptors.iter().enumerate() {
        let digest = desc.digest;
        // containerd puts the full reference in its own annotation and only the tag in
        // ref.name; prefer the full one.
        let annotated = desc
            .annotations
            .get(CONTAINERD_NAME)
            .or_else(|| desc.annotations.get(REF_NAME))
            .filter(|n| !n.is_empty());
        let (name, tag) = match (annotated, prefix) {
            (None, Some(prefix)) => (prefix.clone(), None),
            (None, None) => {
                return Err(LayoutError::NoName {
                    layout: layout.to_owned(),
                    index,
                    digest,
                });
            }
            (Some(tag), Some(prefix)) if is_tag(tag) => (prefix.clone(), Some(tag.clone())),
            (Some(tag), None) if is_tag(tag) => {
                return Err(LayoutError::BareTag {
                    layout: layout.to_owned(),
                    index,
                    digest,
                    tag: tag.clone(),
                });
            }
            (Some(full), _) => {
                let r = Reference::parse(full).map_err(|source| LayoutError::Name {
                    layout: layout.to_owned(),
                    index,
                    digest,
                    name: full.clone(),
                    source: Box::new(source),
                })?;
                if let Some(d) = r.digest()
                    && *d != digest
                {
                    return Err(LayoutError::NameDigest {
                        layout: layout.to_owned(),
                        index,
                        reference: r.to_string(),
                        digest,
                    });
                }
                (r.name().clone(), r.tag().map(str::to_owned))
            }
        };
        if let Some(tag) = &tag {
            match tags.get(&(name.clone(), tag.clone())) {
                Some(first) if *first != digest => {
                    return Err(LayoutError::DuplicateName {
                        layout: layout.to_owned(),
                        reference: format!("{name}:{tag}"),
                        first: *first,
                        second: digest,
                    });
                }
                Some(_) => continue,
                None => {
                    tags.insert((name.clone(), tag.clone()), digest);
                }
            }
        }
        out.push(NamedImage {
            name,
            tag,
            descriptor: desc.clone(),
        });
    }
    Ok(out)
}

/// Picks the image for `wanted` among images with these platforms; a single image without a
/// platform is taken as it is. Errors with the list of what is available. Pure.
pub(crate) fn choose_platform(
    platforms: &[Option<Platform>],
    wanted: &Platform,
) -> std::result::Result<usize, String> {
    if let Some(i) = platforms
        .iter()
        .position(|p| p.as_ref().is_some_and(|p| p.matches(wanted)))
    {
        return Ok(i);
    }
    if platforms.len() == 1 {
        return Ok(0);
    }
    let available: Vec<String> = platforms
        .iter()
        .map(|p| {
            p.as_ref()
                .map_or("an image without platform".to_owned(), Platform::to_string)
        })
        .collect();
    Err(if available.is_empty() {
        "no images".to_owned()
    } else {
        available.join(", ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(n: u8, annotations: &[(&str, &str)]) -> Descriptor {
        Descriptor {
            media_type: crate::media::OCI_MANIFEST.to_owned(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: None,
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            urls: Vec::new(),
        }
    }

    fn names(descs: &[Descriptor], prefix: Option<&str>) -> Result<Vec<String>> {
        let prefix = prefix.map(|p| ImageName::parse(p).unwrap());
        Ok(name_descriptors(Path::new("L"), descs, prefix.as_ref())?
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    #[test]
    fn full_references_bare_tags_and_prefixes() {
        let descs = [
            desc(1, &[(REF_NAME, "docker.io/library/busybox:1.36")]),
            desc(2, &[(REF_NAME, "alpine:3.19")]),
            desc(
                3,
                &[
                    (REF_NAME, "v1"),
                    (CONTAINERD_NAME, "ghcr.io/example/app:v1"),
                ],
            ),
            desc(4, &[(REF_NAME, "index.docker.io/user/tool")]),
        ];
        assert_eq!(
            names(&descs, None).unwrap(),
            [
                "docker.io/library/busybox:1.36",
                "docker.io/library/alpine:3.19",
                "ghcr.io/example/app:v1",
                "docker.io/user/tool:latest"
            ]
        );

        let bare = [desc(5, &[(REF_NAME, "latest")]), desc(6, &[])];
        let err = names(&bare, None).unwrap_err();
        assert!(
            matches!(&err, LayoutError::BareTag { index: 0, tag, .. } if tag == "latest"),
            "{err}"
        );
        assert!(err.to_string().contains("ref prefix"), "{err}");
        let err = names(&bare[1..], None).unwrap_err();
        assert!(matches!(err, LayoutError::NoName { index: 0, .. }), "{err}");
        assert_eq!(
            names(&bare, Some("registry.example.com:5000/team/app")).unwrap(),
            [
                "registry.example.com:5000/team/app:latest".to_owned(),
                format!("registry.example.com:5000/team/app@{}", Digest::of(&[6]))
            ]
        );
    }

    #[test]
    fn names_must_be_valid_and_consistent() {
        let err = names(&[desc(1, &[(REF_NAME, "ghcr.io/a/../b:v1")])], None).unwrap_err();
        assert!(
            matches!(
                &err,
                LayoutError::Name { source, .. }
                    if matches!(**source, ReferenceError::DotComponent { .. })
            ),
            "{err}"
        );
        let other = Digest::of(b"other");
        let err = names(
            &[desc(1, &[(REF_NAME, &format!("ghcr.io/a:v1@{other}"))])],
            None,
        )
        .unwrap_err();
        assert!(matches!(err, LayoutError::NameDigest { .. }), "{err}");
        let ok = format!("ghcr.io/a:v1@{}", Digest::of(&[1]));
        assert_eq!(
            names(&[desc(1, &[(REF_NAME, &ok)])], None).unwrap(),
            ["ghcr.io/a:v1"]
        );

        let twice = [
            desc(1, &[(REF_NAME, "ghcr.io/a:v1")]),
            desc(1, &[(REF_NAME, "ghcr.io/a:v1")]),
        ];
        assert_eq!(names(&twice, None).unwrap(), ["ghcr.io/a:v1"]);
        let clash = [
            desc(1, &[(REF_NAME, "ghcr.io/a:v1")]),
            desc(2, &[(REF_NAME, "ghcr.io/a:v1")]),
        ];
        assert!(matches!(
            names(&clash, None).unwrap_err(),
            LayoutError::DuplicateName { .. }
        ));
    }

    #[test]
    fn platform_choice() {
        let amd64 = Some(Platform::linux_amd64());
        let arm64 = Some(Platform::parse("linux/arm64/v8").unwrap());
        assert_eq!(
            choose_platform(&[amd64.clone(), arm64.clone()], &Platform::linux_amd64()),
            Ok(0)
        );
        assert_eq!(
            choose_platform(
                &[amd64.clone(), arm64.clone()],
                &Platform::parse("linux/arm64").unwrap()
            ),
            Ok(1)
        );
        assert_eq!(
            choose_platform(&[None], &Platform::parse("linux/arm64").unwrap()),
            Ok(0)
        );
        // One image is taken whatever it says: its tree does not depend on it.
        assert_eq!(
            choose_platform(std::slice::from_ref(&arm64), &Platform::linux_amd64()),
            Ok(0)
        );
        assert_eq!(
            choose_platform(&[None, arm64], &Platform::linux_amd64()),
            Err("an image without platform, linux/arm64/v8".to_owned())
        );
        assert_eq!(
            choose_platform(&[], &Platform::linux_amd64()),
            Err("no images".to_owned())
        );
    }
}
