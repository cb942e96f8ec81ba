//! Manifest media types and the few manifest fields the pull needs, parsed from the bytes as served.
//!
//! Only reading is done here: manifests are never re-serialized (their sha256 is their identity), so
//! these types keep just the descriptors needed to walk an image.

use serde::Deserialize;

use crate::reference::{Digest, ReferenceError};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The `Accept` header of a manifest request. Schema 1 is left out on purpose: it is deprecated,
/// signed over a re-serialized form, and a registry that only has schema 1 fails loudly instead of
/// handing us something the cache cannot use.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// What a manifest is, by its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An OCI image index or a Docker manifest list: children per platform.
    Index,
    /// An OCI image manifest or a Docker schema 2 manifest: a config and layers.
    Image,
}

impl ManifestKind {
    pub fn of(media_type: &str) -> Option<Self> {
        match media_type {
            OCI_INDEX | DOCKER_MANIFEST_LIST => Some(Self::Index),
            OCI_MANIFEST | DOCKER_MANIFEST => Some(Self::Image),
            _ => None,
        }
    }
}

/// Why the bytes of a manifest could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid manifest JSON")]
    Json(#[source] serde_json::Error),
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
    #[error("the registry served no media type and the manifest has no mediaType field")]
    NoMediaType,
    #[error("the Content-Type {header:?} disagrees with the manifest's mediaType {body:?}")]
    MediaTypeConflict { header: String, body: String },
    #[error("invalid digest in a descriptor")]
    Digest(#[source] ReferenceError),
    #[error("expected an image manifest, found {0:?}")]
    NotAnImage(String),
    #[error("expected an image index, found {0:?}")]
    NotAnIndex(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaTypeOnly {
    media_type: Option<String>,
}

/// The media type of a served manifest: the `Content-Type` header's type (parameters dropped), or,
/// when the registry sent none or a generic one, the manifest's own `mediaType` field.
///
/// A header and a body that name different known types are refused: one of them lies, and the cache
/// would record the wrong one.
pub fn resolve_media_type(
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<String, ManifestError> {
    let header = content_type
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|ct| !ct.is_empty());
    let body = serde_json::from_slice::<MediaTypeOnly>(bytes)
        .map_err(ManifestError::Json)?
        .media_type;
    let generic = |ct: &str| {
        matches!(
            ct,
            "application/json" | "application/octet-stream" | "text/plain"
        )
    };
    let chosen = match (header, body) {
        (Some(h), Some(b)) if !generic(&h) => {
            if h != b && ManifestKind::of(&b).is_some() {
                return Err(ManifestError::MediaTypeConflict { header: h, body: b });
            }
            h
        }
        (Some(h), None) if !generic(&h) => h,
        (_, Some(b)) => b,
        (_, None) => return Err(ManifestError::NoMediaType),
    };
    if ManifestKind::of(&chosen).is_none() {
        return Err(ManifestError::MediaType(chosen));
    }
    Ok(chosen)
}

/// A content descriptor: what a manifest says about a child manifest, a config or a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<crate::platform::Platform>,
    /// `vnd.docker.reference.type` (buildx marks attestation manifests with it).
    pub reference_type: Option<String>,
    /// Non-empty for foreign layers (Windows base layers): the blob is served from these URLs,
    /// often not by the registry.
    pub urls: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    platform: Option<RawPlatform>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    urls: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct RawPlatform {
    pub(crate) architecture: String,
    pub(crate) os: String,
    #[serde(default)]
    pub(crate) variant: Option<String>,
}

impl TryFrom<RawDescriptor> for Descriptor {
    type Error = ManifestError;
    fn try_from(raw: RawDescriptor) -> Result<Self, ManifestError> {
        let RawDescriptor {
            media_type,
            digest,
            size,
            platform,
            mut annotations,
            urls,
        } = raw;
        Ok(Self {
            media_type,
            digest: Digest::parse(&digest).map_err(ManifestError::Digest)?,
            size,
            platform: platform.map(crate::platform::Platform::from_raw),
            reference_type: annotations.remove("vnd.docker.reference.type"),
            urls,
        })
    }
}

#[derive(Deserialize)]
struct RawImage {
    config: RawDescriptor,
    #[serde(default)]
    layers: Vec<RawDescriptor>,
}

#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    manifests: Vec<RawDescriptor>,
}

/// An image manifest's blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl ImageManifest {
    /// Parses an OCI image manifest or Docker schema 2 manifest of the given media type.
    pub fn parse(media_type: &str, bytes: &[u8]) -> Result<Self, ManifestError> {
        if ManifestKind::of(media_type) != Some(ManifestKind::Image) {
            return Err(ManifestError::NotAnImage(media_type.to_owned()));
        }
        let raw: RawImage = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        Ok(Self {
            config: raw.config.try_into()?,
            layers: raw
                .layers
                .into_iter()
                .map(Descriptor::try_from)
                .collect::<Result<_, _>>()?,
        })
    }

    /// The config then the layers: every blob the image needs.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

/// The children of an image index or Docker manifest list.
pub fn index_children(media_type: &str, bytes: &[u8]) -> Result<Vec<Descriptor>, ManifestError> {
    if ManifestKind::of(media_type) != Some(ManifestKind::Index) {
        return Err(ManifestError::NotAnIndex(media_type.to_owned()));
    }
    let raw: RawIndex = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
    raw.manifests
        .into_iter()
        .map(Descriptor::try_from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn media_type_from_header_or_body() {
        let with = format!(r#"{{"mediaType":"{OCI_MANIFEST}","schemaVersion":2}}"#);
        let without = r#"{"schemaVersion":2}"#;
        // The header wins and its parameters are dropped.
        assert_eq!(
            resolve_media_type(
                Some(&format!("{DOCKER_MANIFEST}; charset=utf-8")),
                without.as_bytes()
            )
            .expect("ok"),
            DOCKER_MANIFEST
        );
        // A generic or missing header falls back to the body.
        for ct in [
            None,
            Some("application/json"),
            Some(""),
            Some("application/octet-stream"),
        ] {
            assert_eq!(
                resolve_media_type(ct, with.as_bytes()).expect("ok"),
                OCI_MANIFEST,
                "{ct:?}"
            );
        }
        assert!(matches!(
            resolve_media_type(Some("application/json"), without.as_bytes()),
            Err(ManifestError::NoMediaType)
        ));
        assert!(matches!(
            resolve_media_type(Some(OCI_INDEX), with.as_bytes()),
            Err(ManifestError::MediaTypeConflict { .. })
        ));
        assert!(matches!(
            resolve_media_type(
                Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
                without.as_bytes()
            ),
            Err(ManifestError::MediaType(_))
        ));
        assert!(matches!(
            resolve_media_type(Some(OCI_MANIFEST), b"<html>"),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn image_manifest_blobs() {
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":10}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":20}},
                      {{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":30,"urls":["https://x/y"]}}]}}"#,
            d('a'),
            d('b'),
            d('c')
        );
        let m = ImageManifest::parse(DOCKER_MANIFEST, bytes.as_bytes()).expect("parses");
        let sizes: Vec<u64> = m.blobs().map(|b| b.size).collect();
        assert_eq!(sizes, [10, 20, 30]);
        assert_eq!(m.layers[1].urls, ["https://x/y"]);
        assert!(matches!(
            ImageManifest::parse(OCI_INDEX, bytes.as_bytes()),
            Err(ManifestError::NotAnImage(_))
        ));
        let bad = bytes.replace(&d('b'), "sha256:nothex");
        assert!(matches!(
            ImageManifest::parse(DOCKER_MANIFEST, bad.as_bytes()),
            Err(ManifestError::Digest(_))
        ));
    }
}
