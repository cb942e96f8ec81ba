//! The few manifest fields a cache needs, parsed from the bytes as stored. Manifests are never
//! re-serialized (their sha256 is their identity), so these types only read.
//!
//! Both families are accepted: OCI (image index, image manifest) and Docker schema 2 (manifest
//! list, image manifest). Docker schema 1 and OCI artifact manifests are refused.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::Platform;
use crate::digest::Digest;

/// The largest manifest (or image config) read into memory. Real ones are a few KiB; an index
/// with hundreds of platforms stays well under this. Anything larger is refused, not buffered.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

pub fn is_image_media_type(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// A content descriptor: what a manifest says about a blob or child manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
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
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a valid manifest")]
    Json(#[from] serde_json::Error),
    #[error("Docker schema 1 manifests are not supported (deprecated; registries convert on pull)")]
    SchemaV1,
    #[error("media type {0:?} is not an image index, manifest list or image manifest")]
    MediaType(String),
    #[error("{media_type} without {field:?}")]
    MissingField {
        media_type: String,
        field: &'static str,
    },
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// Parses manifest bytes. The media type comes from the manifest's own `mediaType`; OCI allows
/// leaving it out, and then the fields decide (`manifests` -> index, `config` -> image).
pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let raw: Raw = serde_json::from_slice(bytes)?;
    if raw.schema_version == Some(1) {
        return Err(ManifestError::SchemaV1);
    }
    let media_type = match raw.media_type {
        Some(m) => m,
        None if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        None if raw.config.is_some() => OCI_MANIFEST.to_owned(),
        None => return Err(ManifestError::MediaType(String::new())),
    };
    if is_index_media_type(&media_type) {
        let manifests = raw.manifests.ok_or(ManifestError::MissingField {
            media_type: media_type.clone(),
            field: "manifests",
        })?;
        Ok(Manifest::Index(Index {
            media_type,
            manifests,
        }))
    } else if is_image_media_type(&media_type) {
        let config = raw.config.ok_or(ManifestError::MissingField {
            media_type: media_type.clone(),
            field: "config",
        })?;
        Ok(Manifest::Image(ImageManifest {
            media_type,
            config,
            layers: raw.layers.unwrap_or_default(),
        }))
    } else {
        Err(ManifestError::MediaType(media_type))
    }
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
        let err = parse(sha512.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("not a valid manifest"), "{err}");
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
}
