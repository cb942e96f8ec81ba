//! Manifests and indexes: the fields a cache and a client need, parsed from the bytes as stored
//! or served. Manifests are never re-serialized (their sha256 is their identity): callers keep the
//! bytes, these types only read them.
//!
//! Both families are accepted: OCI (image index, image manifest) and Docker schema 2 (manifest
//! list, image manifest). Docker schema 1 and OCI artifact manifests are refused.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::{Digest, DigestError};
use crate::media::{OCI_INDEX, OCI_MANIFEST, is_image_media_type, is_index_media_type};
use crate::platform::Platform;

/// The largest manifest (or image config) read into memory: 4 MiB, the limit containerd and the
/// distribution registry also use. Real ones are a few KiB; an index with hundreds of platforms
/// stays well under this. Anything larger is refused, not buffered.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// The annotation buildx marks attestation manifests with (`attestation-manifest`).
pub const REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";

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
        if is_index_media_type(media_type) {
            Some(Self::Index)
        } else if is_image_media_type(media_type) {
            Some(Self::Image)
        } else {
            None
        }
    }
}

/// A content descriptor: what a manifest says about a child manifest, a config or a layer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawDescriptor")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<Platform>,
    pub annotations: BTreeMap<String, String>,
    /// Non-empty for foreign layers (Windows base layers): the blob is served from these URLs,
    /// often not by the registry.
    pub urls: Vec<String>,
}

impl Descriptor {
    /// `vnd.docker.reference.type` (buildx marks attestation manifests with it).
    pub fn reference_type(&self) -> Option<&str> {
        self.annotations
            .get(REFERENCE_TYPE_ANNOTATION)
            .map(String::as_str)
    }

    /// Whether this index child is an image a node can run: not a buildx attestation manifest
    /// (marked by annotation, or by the platform `unknown/unknown`).
    pub fn is_runnable(&self) -> bool {
        self.reference_type() != Some("attestation-manifest")
            && self
                .platform
                .as_ref()
                .is_none_or(|p| p.os != "unknown" && p.architecture != "unknown")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    urls: Vec<String>,
}

impl TryFrom<RawDescriptor> for Descriptor {
    type Error = ManifestError;
    fn try_from(raw: RawDescriptor) -> Result<Self, ManifestError> {
        let RawDescriptor {
            media_type,
            digest,
            size,
            platform,
            annotations,
            urls,
        } = raw;
        Ok(Self {
            media_type,
            digest: Digest::parse(&digest).map_err(ManifestError::Digest)?,
            size,
            platform,
            annotations,
            urls,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Index(Index),
    Image(ImageManifest),
}

/// An OCI image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

/// An OCI or Docker schema 2 image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl ImageManifest {
    /// Parses an image manifest served as `media_type` (see [`parse_as`]); an index is refused.
    pub fn parse(media_type: &str, bytes: &[u8]) -> Result<Self, ManifestError> {
        if ManifestKind::of(media_type) != Some(ManifestKind::Image) {
            return Err(ManifestError::NotAnImage(media_type.to_owned()));
        }
        match parse_as(media_type, bytes)? {
            Manifest::Image(m) => Ok(m),
            Manifest::Index(i) => Err(ManifestError::NotAnImage(i.media_type)),
        }
    }

    /// The config, then the layers: every blob the image needs.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

impl Manifest {
    pub fn media_type(&self) -> &str {
        match self {
            Self::Index(i) => &i.media_type,
            Self::Image(m) => &m.media_type,
        }
    }

    pub fn kind(&self) -> ManifestKind {
        match self {
            Self::Index(_) => ManifestKind::Index,
            Self::Image(_) => ManifestKind::Image,
        }
    }
}

/// Why the bytes of a manifest could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a valid manifest")]
    Json(#[source] serde_json::Error),
    #[error("Docker schema 1 manifests are not supported (deprecated; registries convert on pull)")]
    SchemaV1,
    #[error("media type {0:?} is not an image index, manifest list or image manifest")]
    MediaType(String),
    #[error(
        "the manifest has no media type: none was served, it has no mediaType field, and neither manifests nor config"
    )]
    NoMediaType,
    #[error("the Content-Type {header:?} disagrees with the manifest's mediaType {body:?}")]
    MediaTypeConflict { header: String, body: String },
    #[error("{media_type} without {field:?}")]
    MissingField {
        media_type: String,
        field: &'static str,
    },
    #[error("invalid digest in a descriptor")]
    Digest(#[source] DigestError),
    #[error("expected an image manifest, found {0:?}")]
    NotAnImage(String),
    #[error("expected an image index, found {0:?}")]
    NotAnIndex(String),
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
}

/// Parses manifest bytes as stored. The media type comes from the manifest's own `mediaType`;
/// OCI allows leaving it out, and then the fields decide (`manifests` -> index, `config` -> image).
pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    parse_raw(None, bytes)
}

/// Parses manifest bytes served as `media_type` (from [`resolve_media_type`]). A `mediaType` in
/// the body that names another known type is refused: one of the two lies.
pub fn parse_as(media_type: &str, bytes: &[u8]) -> Result<Manifest, ManifestError> {
    parse_raw(Some(media_type), bytes)
}

fn parse_raw(served: Option<&str>, bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
    if raw.schema_version == Some(1) {
        return Err(ManifestError::SchemaV1);
    }
    let media_type = match (served, raw.media_type) {
        (Some(header), Some(body)) if header != body && ManifestKind::of(&body).is_some() => {
            return Err(ManifestError::MediaTypeConflict {
                header: header.to_owned(),
                body,
            });
        }
        (Some(header), _) => header.to_owned(),
        (None, Some(m)) => m,
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) if raw.config.is_some() => OCI_MANIFEST.to_owned(),
        (None, None) => return Err(ManifestError::NoMediaType),
    };
    let descriptors = |raw: Vec<RawDescriptor>| -> Result<Vec<Descriptor>, ManifestError> {
        raw.into_iter().map(Descriptor::try_from).collect()
    };
    if is_index_media_type(&media_type) {
        let manifests = raw.manifests.ok_or(ManifestError::MissingField {
            media_type: media_type.clone(),
            field: "manifests",
        })?;
        Ok(Manifest::Index(Index {
            media_type,
            manifests: descriptors(manifests)?,
        }))
    } else if is_image_media_type(&media_type) {
        let config = raw.config.ok_or(ManifestError::MissingField {
            media_type: media_type.clone(),
            field: "config",
        })?;
        Ok(Manifest::Image(ImageManifest {
            media_type,
            config: config.try_into()?,
            layers: descriptors(raw.layers.unwrap_or_default())?,
        }))
    } else {
        Err(ManifestError::MediaType(media_type))
    }
}

/// The children of an image index or Docker manifest list served as `media_type`.
pub fn index_children(media_type: &str, bytes: &[u8]) -> Result<Vec<Descriptor>, ManifestError> {
    if ManifestKind::of(media_type) != Some(ManifestKind::Index) {
        return Err(ManifestError::NotAnIndex(media_type.to_owned()));
    }
    match parse_as(media_type, bytes)? {
        Manifest::Index(i) => Ok(i.manifests),
        Manifest::Image(m) => Err(ManifestError::NotAnIndex(m.media_type)),
    }
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

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    variant: Option<String>,
}

/// The platform an image config declares, if it declares one (OCI configs must; artifacts and
/// the config of upstream's cache wrapper leave it empty).
pub fn config_platform(bytes: &[u8]) -> Option<Platform> {
    let raw: RawConfig = serde_json::from_slice(bytes).ok()?;
    match (raw.os, raw.architecture) {
        (Some(os), Some(arch)) if !os.is_empty() && !arch.is_empty() => Some(Platform {
            os,
            architecture: arch,
            variant: raw.variant.filter(|v| !v.is_empty()),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST};

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    #[test]
    fn oci_index_with_platforms() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":10,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":11,"platform":{{"os":"linux","architecture":"arm64","variant":"v8","os.features":["x"]}},"annotations":{{"a":"b"}}}}]}}"#,
            d(1),
            d(2)
        );
        let Manifest::Index(i) = parse(json.as_bytes()).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(i.media_type, OCI_INDEX);
        assert_eq!(i.manifests.len(), 2);
        assert_eq!(i.manifests[1].size, 11);
        assert_eq!(
            i.manifests[1].platform.as_ref().unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert_eq!(i.manifests[1].annotations["a"], "b");
    }

    #[test]
    fn docker_schema2_manifest() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
               "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":5}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":7}}]}}"#,
            d(3),
            d(4)
        );
        let Manifest::Image(m) = parse(json.as_bytes()).unwrap() else {
            panic!("not an image")
        };
        let blobs: Vec<u64> = m.blobs().map(|b| b.size).collect();
        assert_eq!(blobs, [5, 7]);
    }

    #[test]
    fn media_type_inferred_when_absent() {
        let index = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(
            matches!(parse(index.as_bytes()).unwrap(), Manifest::Index(i) if i.media_type == OCI_INDEX)
        );
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":1}},"layers":[]}}"#,
            d(5)
        );
        assert!(
            matches!(parse(image.as_bytes()).unwrap(), Manifest::Image(m) if m.media_type == OCI_MANIFEST)
        );
    }

    #[test]
    fn refuses_what_cannot_be_cached() {
        assert!(matches!(parse(b"{").unwrap_err(), ManifestError::Json(_)));
        assert!(matches!(
            parse(br#"{"schemaVersion":1,"fsLayers":[]}"#).unwrap_err(),
            ManifestError::SchemaV1
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.artifact.manifest.v1+json"}"#)
                .unwrap_err(),
            ManifestError::MediaType(m) if m.contains("artifact")
        ));
        assert!(matches!(
            parse(format!(r#"{{"mediaType":"{OCI_INDEX}"}}"#).as_bytes()).unwrap_err(),
            ManifestError::MissingField {
                field: "manifests",
                ..
            }
        ));
        let sha512 = format!(
            r#"{{"config":{{"digest":"sha512:{}","size":1}}}}"#,
            "0".repeat(128)
        );
        assert!(matches!(
            parse(sha512.as_bytes()).unwrap_err(),
            ManifestError::Digest(DigestError::Algorithm { .. })
        ));
        let negative = format!(r#"{{"config":{{"digest":"{}","size":-1}}}}"#, d(1));
        assert!(parse(negative.as_bytes()).is_err());
    }

    #[test]
    fn config_platform_reads_os_and_architecture() {
        assert_eq!(
            config_platform(br#"{"os":"linux","architecture":"arm64","variant":"v8","rootfs":{}}"#)
                .unwrap()
                .to_string(),
            "linux/arm64/v8"
        );
        assert_eq!(config_platform(br#"{"os":"","architecture":""}"#), None);
        assert_eq!(config_platform(b"not json"), None);
    }

    fn dc(c: char) -> String {
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
            dc('a'),
            dc('b'),
            dc('c')
        );
        let m = ImageManifest::parse(DOCKER_MANIFEST, bytes.as_bytes()).expect("parses");
        let sizes: Vec<u64> = m.blobs().map(|b| b.size).collect();
        assert_eq!(sizes, [10, 20, 30]);
        assert_eq!(m.layers[1].urls, ["https://x/y"]);
        assert!(matches!(
            ImageManifest::parse(OCI_INDEX, bytes.as_bytes()),
            Err(ManifestError::NotAnImage(_))
        ));
        let bad = bytes.replace(&dc('b'), "sha256:nothex");
        assert!(matches!(
            ImageManifest::parse(DOCKER_MANIFEST, bad.as_bytes()),
            Err(ManifestError::Digest(_))
        ));
    }

    #[test]
    fn served_media_type_decides_and_must_agree_with_the_body() {
        let body = format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","config":{{"digest":"{}","size":1}}}}"#,
            d(1)
        );
        assert!(matches!(
            parse_as(OCI_INDEX, body.as_bytes()),
            Err(ManifestError::MediaTypeConflict { .. })
        ));
        let bare = format!(r#"{{"config":{{"digest":"{}","size":1}}}}"#, d(1));
        assert!(
            matches!(parse_as(DOCKER_MANIFEST, bare.as_bytes()).unwrap(), Manifest::Image(m) if m.media_type == DOCKER_MANIFEST)
        );
        assert!(matches!(
            index_children(DOCKER_MANIFEST_LIST, br#"{"schemaVersion":2}"#),
            Err(ManifestError::MissingField {
                field: "manifests",
                ..
            })
        ));
        let attestation = format!(
            r#"{{"manifests":[{{"digest":"{}","size":1,"annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#,
            d(2)
        );
        let children = index_children(OCI_INDEX, attestation.as_bytes()).unwrap();
        assert_eq!(children[0].reference_type(), Some("attestation-manifest"));
        assert!(matches!(parse(b"{}"), Err(ManifestError::NoMediaType)));
    }
}
