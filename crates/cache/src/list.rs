//! What a flat tree holds, one row per image: every tag, and every manifest cached by digest only
//! (one that no tag resolves to and no index names).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::digest::Digest;
use crate::flat::{self, RepoDir};
use crate::manifest::{self, Manifest};
use crate::model::Cache;
use crate::{LayoutError, ReadOptions};

/// One image of a cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageInfo {
    /// `registry/repository:tag` or `registry/repository@digest`.
    pub reference: String,
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// The top-level manifest's digest (an index for multi-platform images).
    pub digest: Digest,
    /// Empty when the manifest cannot be read or parsed (`verify` says why).
    pub media_type: String,
    /// Platforms whose image is cached: an index's children present, or a single image's config.
    pub platforms: Vec<String>,
    /// Bytes in the cache for this image: its manifests, configs and layers that are present,
    /// each blob counted once.
    pub size: u64,
}

/// Lists the images of a flat tree on disk ([`list`] of the cache opened there).
pub fn list_flat(root: &Path) -> Result<Vec<ImageInfo>, LayoutError> {
    list(&Cache::open(root, &ReadOptions::default())?)
}

/// Lists the images of a cache in any form, in place. Best effort over a damaged cache: what is
/// missing is left out of platforms and sizes; `verify` reports it.
pub fn list(cache: &Cache) -> Result<Vec<ImageInfo>, LayoutError> {
    let inv = cache.inventory();
    let no_hash = |_: &crate::model::Entry| false;
    let mut files = cache
        .load(&|e| e.path.starts_with("manifests/"), &no_hash)?
        .small;
    // The configs of the cached image manifests (for single-platform images' platforms): a
    // second read, of small blobs only.
    let mut configs = HashSet::new();
    for bytes in files.values().flatten() {
        if let Ok(Manifest::Image(img)) = manifest::parse(bytes) {
            configs.insert(
                flat::blob_path(&img.config.digest)
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    files.extend(cache.load(&|e| configs.contains(&e.path), &no_hash)?.small);
    let read = |p: &Path| -> Option<Vec<u8>> {
        files
            .get(p.to_string_lossy().as_ref())?
            .as_ref()
            .ok()
            .cloned()
    };
    let blob_sizes: HashMap<Digest, u64> = inv.blobs.iter().map(|b| (b.digest, b.size)).collect();
    let mut out = Vec::new();
    for repo in &inv.repos {
        // A repository whose directory names break the grammar cannot be pulled; skip it.
        if repo.image_name().is_err() {
            continue;
        }
        list_repo(&read, repo, &blob_sizes, &mut out);
    }
    out.sort_by(|a, b| {
        (&a.registry, &a.repository, &a.tag, a.digest).cmp(&(
            &b.registry,
            &b.repository,
            &b.tag,
            b.digest,
        ))
    });
    Ok(out)
}

struct Repo<'a> {
    read: &'a dyn Fn(&Path) -> Option<Vec<u8>>,
    dir: &'a RepoDir,
    blob_sizes: &'a HashMap<Digest, u64>,
    manifests: HashMap<Digest, (u64, Option<Manifest>)>,
}

impl Repo<'_> {
    fn manifest(&self, d: &Digest) -> Option<&(u64, Option<Manifest>)> {
        self.manifests.get(d)
    }

    fn info(
        &self,
        tag: Option<&str>,
        digest: Digest,
        own: Option<(u64, Option<Manifest>)>,
    ) -> ImageInfo {
        let entry = own.as_ref().or_else(|| self.manifest(&digest));
        let mut platforms = BTreeSet::new();
        let mut size = 0;
        let mut media_type = String::new();
        let mut seen_blobs = HashSet::new();
        if let Some((len, manifest)) = entry {
            size += len;
            if let Some(m) = manifest {
                media_type = m.media_type().to_owned();
                match m {
                    Manifest::Index(index) => {
                        for child in &index.manifests {
                            let Some((child_len, child_manifest)) = self.manifest(&child.digest)
                            else {
                                continue;
                            };
                            size += child_len;
                            if let Some(Manifest::Image(img)) = child_manifest {
                                size += self.blobs_size(img, &mut seen_blobs);
                            }
                            // buildx attestations are "unknown/unknown": not a platform.
                            if let Some(p) = &child.platform
                                && p.os != "unknown"
                            {
                                platforms.insert(p.to_string());
                            }
                        }
                    }
                    Manifest::Image(img) => {
                        size += self.blobs_size(img, &mut seen_blobs);
                        if let Some(p) = (self.read)(&flat::blob_path(&img.config.digest))
                            .and_then(|b| manifest::config_platform(&b))
                        {
                            platforms.insert(p.to_string());
                        }
                    }
                }
            }
        }
        let registry = self.dir.registry.clone();
        let repository = self.dir.repository.clone();
        let reference = match tag {
            Some(t) => format!("{registry}/{repository}:{t}"),
            None => format!("{registry}/{repository}@{digest}"),
        };
        ImageInfo {
            reference,
            registry,
            repository,
            tag: tag.map(str::to_owned),
            digest,
            media_type,
            platforms: platforms.into_iter().collect(),
            size,
        }
    }

    fn blobs_size(&self, img: &manifest::ImageManifest, seen: &mut HashSet<Digest>) -> u64 {
        img.blobs()
            .filter(|d| seen.insert(d.digest))
            .filter_map(|d| self.blob_sizes.get(&d.digest))
            .sum()
    }
}

fn list_repo(
    read: &dyn Fn(&Path) -> Option<Vec<u8>>,
    dir: &RepoDir,
    blob_sizes: &HashMap<Digest, u64>,
    out: &mut Vec<ImageInfo>,
) {
    let manifests = dir
        .manifests
        .iter()
        .map(|m| {
            let parsed = read(&m.path).and_then(|b| manifest::parse(&b).ok());
            (m.digest, (m.size, parsed))
        })
        .collect();
    let repo = Repo {
        read,
        dir,
        blob_sizes,
        manifests,
    };

    let mut roots_named: HashSet<Digest> = HashSet::new();
    for t in &dir.tags {
        let Some(bytes) = read(&t.path) else {
            continue;
        };
        let digest = Digest::of(&bytes);
        roots_named.insert(digest);
        // A tag whose digest/ file is missing (verify's error) is still listed from its own bytes.
        let own = (!repo.manifests.contains_key(&digest))
            .then(|| (bytes.len() as u64, manifest::parse(&bytes).ok()));
        out.push(repo.info(Some(&t.tag), digest, own));
    }

    let children: HashSet<Digest> = repo
        .manifests
        .values()
        .filter_map(|(_, m)| match m {
            Some(Manifest::Index(i)) => Some(i.manifests.iter().map(|c| c.digest)),
            _ => None,
        })
        .flatten()
        .collect();
    for m in &dir.manifests {
        if !roots_named.contains(&m.digest) && !children.contains(&m.digest) {
            out.push(repo.info(None, m.digest, None));
        }
    }
}
