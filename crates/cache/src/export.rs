//! Image tarballs from a cache (`imager cache export`), for side-loading: `ctr images import`
//! and `docker load` take them.
//!
//! - **oci-archive**: an OCI image layout in a tar: `oci-layout`, `index.json` naming each image by
//!   its original reference (`io.containerd.image.name`, and its tag as
//!   `org.opencontainers.image.ref.name`), and `blobs/sha256/<hex>` holding every manifest, config
//!   and layer with its bytes unchanged (so the digests are the cache's).
//! - **docker-archive**: the same blobs, plus `manifest.json` (`Config`, `RepoTags`, `Layers`) for
//!   one platform image per reference, which is what `docker load` reads.
//!
//! The tar is streamed from the cache (in place; a gzip-compressed cache layer in one pass, in its
//! order), each entry hashed as it passes and checked against its digest, into a temporary file
//! beside the output that is renamed over it only when complete.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use imager_registry::PlatformSelection;
use imager_staging::StagedFile;
use serde_json::json;

use crate::Platform;
use crate::digest::{Digest, Hasher};
use crate::manifest::{self, Manifest};
use crate::model::{Cache, Entry};
use crate::push::{self, Dest, PlanOptions, PushError};
use crate::reference::Reference;

/// The tarball's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    OciArchive,
    DockerArchive,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error(transparent)]
    Plan(#[from] PushError),
    #[error(transparent)]
    Layout(#[from] crate::LayoutError),
    #[error(
        "{image}: no {platform} image in the cache (docker-archive holds one platform per image)"
    )]
    NoPlatform { image: String, platform: String },
    #[error("{path}: the cache's bytes hash to {actual}, not {expected}")]
    Digest {
        path: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no image to export")]
    Empty,
}

/// Writes `images` of `cache` to `output` in `format`. `platform` picks the child of a
/// multi-platform image for docker-archive; an oci-archive holds every cached child.
pub fn export(
    cache: &Cache,
    images: &[Reference],
    format: ExportFormat,
    platform: &Platform,
    output: &Path,
) -> Result<usize, ExportError> {
    if images.is_empty() {
        return Err(ExportError::Empty);
    }
    let loaded = cache.load(&|e| e.path.starts_with("manifests/"), &|_| false)?;
    let manifests: HashMap<String, Vec<u8>> = loaded
        .small
        .into_iter()
        .filter_map(|(p, b)| b.ok().map(|b| (p, b)))
        .collect();
    let platforms = match format {
        ExportFormat::OciArchive => None,
        ExportFormat::DockerArchive => Some(PlatformSelection::Only(vec![platform.clone()])),
    };
    // The push plan, to nowhere: which manifests and blobs each image needs. Registries are kept
    // apart so that two holding the same repository do not collide.
    let plan = push::plan(
        &cache.inventory(),
        &manifests,
        &Dest {
            registry: "export.invalid".into(),
            prefix: None,
        },
        &PlanOptions {
            images: Some(images.to_vec()),
            platforms,
            keep_registry: true,
        },
    )?;
    // Entry path -> digest, for everything the tar holds.
    let mut wanted: Vec<(String, Digest)> = Vec::new();
    let mut seen = HashSet::new();
    let mut index = Vec::new();
    let mut docker = Vec::new();
    for image in &plan.images {
        for m in &image.manifests {
            if seen.insert(m.digest) {
                wanted.push((m.path.clone(), m.digest));
            }
        }
        let top = image.manifests.last().ok_or(ExportError::Empty)?;
        let mut annotations = serde_json::Map::new();
        annotations.insert("io.containerd.image.name".into(), json!(image.source));
        if let Some(tag) = &image.tag {
            annotations.insert("org.opencontainers.image.ref.name".into(), json!(tag));
        }
        index.push(json!({
            "mediaType": top.media_type,
            "digest": top.digest.to_string(),
            "size": manifests.get(&top.path).map_or(0, Vec::len),
            "annotations": annotations,
        }));
        if format == ExportFormat::DockerArchive {
            let img = image
                .manifests
                .iter()
                .find_map(
                    |m| match manifests.get(&m.path).map(|b| manifest::parse(b)) {
                        Some(Ok(Manifest::Image(img))) => Some(img),
                        _ => None,
                    },
                )
                .ok_or_else(|| ExportError::NoPlatform {
                    image: image.source.clone(),
                    platform: platform.to_string(),
                })?;
            let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
            docker.push(json!({
                "Config": blob(&img.config.digest),
                "RepoTags": image.tag.as_ref().map(|_| vec![image.source.clone()]).unwrap_or_default(),
                "Layers": img.layers.iter().map(|l| blob(&l.digest)).collect::<Vec<_>>(),
            }));
        }
    }
    for b in &plan.blobs {
        if seen.insert(b.digest) {
            wanted.push((b.path.clone(), b.digest));
        }
    }
    let write_err = |source| ExportError::Write {
        path: output.to_owned(),
        source,
    };
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let staged = StagedFile::create(dir, ".tmp-export-", 0o644).map_err(write_err)?;
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(
        1 << 20,
        staged.file().try_clone().map_err(write_err)?,
    ));
    append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(write_err)?;
    let digest_of: HashMap<&str, Digest> = wanted.iter().map(|(p, d)| (p.as_str(), *d)).collect();
    let mut mismatch = None;
    {
        let mut put = |entry: &Entry, r: &mut dyn Read| -> io::Result<()> {
            let Some(&digest) = digest_of.get(entry.path.as_str()) else {
                return Ok(());
            };
            let mut hashing = Hashing {
                inner: r,
                hasher: Hasher::default(),
            };
            let mut h = header(entry.size);
            tar.append_data(
                &mut h,
                format!("blobs/sha256/{}", digest.hex()),
                &mut hashing,
            )?;
            let (actual, _) = hashing.hasher.finish();
            if actual != digest && mismatch.is_none() {
                mismatch = Some((entry.path.clone(), digest, actual));
            }
            Ok(())
        };
        if cache.is_streamed() {
            cache.read_stream(&mut put)?;
        } else {
            for (path, _) in &wanted {
                let entry = cache.get(path).ok_or_else(|| PushError::Missing {
                    image: path.clone(),
                    what: "this file".into(),
                })?;
                let mut r = cache
                    .open_entry(entry)
                    .map_err(|source| crate::FlatError::Read {
                        path: cache.input().join(path),
                        source,
                    })
                    .map_err(crate::LayoutError::from)?;
                put(entry, &mut r).map_err(write_err)?;
            }
        }
    }
    if let Some((path, expected, actual)) = mismatch {
        return Err(ExportError::Digest {
            path,
            expected,
            actual,
        });
    }
    let index =
        json!({"schemaVersion": 2, "mediaType": crate::media::OCI_INDEX, "manifests": index});
    append(
        &mut tar,
        "index.json",
        &serde_json::to_vec(&index).unwrap_or_default(),
    )
    .map_err(write_err)?;
    if format == ExportFormat::DockerArchive {
        append(
            &mut tar,
            "manifest.json",
            &serde_json::to_vec(&docker).unwrap_or_default(),
        )
        .map_err(write_err)?;
    }
    let mut out = tar.into_inner().map_err(write_err)?;
    out.flush().map_err(write_err)?;
    staged.file().sync_all().map_err(write_err)?;
    staged.persist(output).map_err(write_err)?;
    Ok(plan.images.len())
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = header(bytes.len() as u64);
    tar.append_data(&mut h, path, bytes)
}

struct Hashing<'a> {
    inner: &'a mut dyn Read,
    hasher: Hasher,
}

impl Read for Hashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
