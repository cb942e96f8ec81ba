//! Pushing a cache into a registry (`imager cache push`): every image, or the ones asked for, with
//! its manifest bytes unchanged, `REGISTRY/REPO:TAG` becoming `DEST/REPO:TAG` (the first component
//! replaced, as a containerd mirror asks for it).
//!
//! 1. **plan** (pure, [`plan`]): the destination repository of each cached repository (refusing two
//!    that would land in one), each image's manifests in push order (image manifests, then
//!    indexes, then the tag), and the distinct blobs with the repositories that need them;
//! 2. **blobs** (network): at most `jobs` at a time, each HEAD-checked in every repository that
//!    needs it, uploaded into the first one lacking it and mounted into the others, sent from where
//!    it lies in the cache ([`imager_registry::BlobSource`]);
//! 3. **manifests, then tags**: each HEAD-checked first, so a re-run sends only what is missing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures_util::{StreamExt as _, TryStreamExt as _};
use imager_registry::{
    BlobPushed, BlobSource, Client, ClientConfig, PlatformSelection, UploadOptions,
};

use crate::LayoutError;
use crate::digest::Digest;
use crate::flat::{self, Inventory};
use crate::manifest::{self, Manifest};
use crate::model::Cache;
use crate::reference::{ImageName, Reference};

/// Where images go: `host[:port][/path prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    pub registry: String,
    /// Repositories go under this path (no leading or trailing `/`).
    pub prefix: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    #[error("destination {0:?}: not host[:port][/path prefix] ({1})")]
    Dest(String, String),
    #[error(
        "{first} and {second} would both be pushed to {dest}: give --keep-registry to keep each \
         registry as the first path element under the destination"
    )]
    Collision {
        first: String,
        second: String,
        dest: String,
    },
    #[error("{image}: not in the cache")]
    NotCached { image: String },
    #[error("{image}: {what} is not in the cache")]
    Missing { image: String, what: String },
    #[error("{image}: manifest {digest} cannot be used")]
    Manifest {
        image: String,
        digest: Digest,
        #[source]
        source: manifest::ManifestError,
    },
    #[error("{image}: {what} cannot go to {dest}")]
    Name {
        image: String,
        what: String,
        dest: String,
        #[source]
        source: Box<crate::ReferenceError>,
    },
    #[error(
        "{cache} is {form} whose layer is gzip-compressed: its blobs cannot be sent from where \
         they lie; unpack it first (`imager cache create --layout flat`, or extract the layer)"
    )]
    Streamed { cache: String, form: String },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Registry(#[from] Box<imager_registry::Error>),
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl From<imager_registry::Error> for PushError {
    fn from(e: imager_registry::Error) -> Self {
        Self::Registry(Box::new(e))
    }
}

impl Dest {
    pub fn parse(input: &str) -> Result<Self, PushError> {
        let bad = |why: &str| PushError::Dest(input.to_owned(), why.to_owned());
        let trimmed = input.trim_end_matches('/');
        if trimmed.contains("://") {
            return Err(bad("no scheme: --insecure allows plain HTTP"));
        }
        let (registry, prefix) = match trimmed.split_once('/') {
            Some((r, p)) => (r, Some(p.to_owned())),
            None => (trimmed, None),
        };
        // The registry and the prefix obey the reference grammar: checked through a name.
        let repo = prefix.clone().unwrap_or_else(|| "x".to_owned());
        ImageName::new(registry, &repo).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            registry: registry.to_owned(),
            prefix,
        })
    }
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.prefix {
            Some(p) => write!(f, "{}/{p}", self.registry),
            None => f.write_str(&self.registry),
        }
    }
}

/// A registry as a repository path component: `host:5000` -> `host-5000`.
pub fn registry_component(registry: &str) -> String {
    registry.to_ascii_lowercase().replace(':', "-")
}

/// The path under the destination that `registry`'s repositories go to: the prefix, then the
/// registry itself when kept. Empty: straight under the host.
pub fn dest_path(registry: &str, dest: &Dest, keep_registry: bool) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &dest.prefix {
        parts.push(p.clone());
    }
    if keep_registry {
        parts.push(registry_component(registry));
    }
    parts.join("/")
}

/// Where `source` goes.
pub fn dest_repository(
    source: &ImageName,
    dest: &Dest,
    keep_registry: bool,
) -> Result<ImageName, crate::ReferenceError> {
    let base = dest_path(source.registry(), dest, keep_registry);
    let repo = if base.is_empty() {
        source.repository().to_owned()
    } else {
        format!("{base}/{}", source.repository())
    };
    ImageName::new(&dest.registry, &repo)
}

/// What to push and in which order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub images: Vec<ImagePlan>,
    /// Distinct blobs, each with the repositories that need it.
    pub blobs: Vec<BlobPlan>,
    /// The cached registries pushed, each with its destination path ([`dest_path`]).
    pub registries: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePlan {
    /// The cached reference, for messages.
    pub source: String,
    pub dest: ImageName,
    pub tag: Option<String>,
    pub top: Digest,
    /// Image manifests, then indexes: each after what it names.
    pub manifests: Vec<ManifestPlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPlan {
    pub digest: Digest,
    pub media_type: String,
    /// Its entry in the cache.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobPlan {
    pub digest: Digest,
    pub size: u64,
    pub path: String,
    /// Destination repositories; the first image needing it names it in errors.
    pub repos: Vec<ImageName>,
    pub image: String,
}

/// What to plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Only these images (matched by registry, repository and tag or digest); all when `None`.
    pub images: Option<Vec<Reference>>,
    /// Children of indexes to push; `None`: every cached one.
    pub platforms: Option<PlatformSelection>,
    pub keep_registry: bool,
}

fn keep_child(child: &crate::manifest::Descriptor, sel: Option<&PlatformSelection>) -> bool {
    match sel {
        None | Some(PlatformSelection::All) => true,
        Some(PlatformSelection::Only(wanted)) => child
            .platform
            .as_ref()
            .is_some_and(|p| wanted.iter().any(|w| p.matches(w))),
    }
}

/// Plans a push from a cache's inventory and its manifests' bytes (by entry path). Pure.
pub fn plan(
    inv: &Inventory,
    manifests: &HashMap<String, Vec<u8>>,
    dest: &Dest,
    opts: &PlanOptions,
) -> Result<Plan, PushError> {
    let blob_paths: HashMap<Digest, (&str, u64)> = inv
        .blobs
        .iter()
        .map(|b| (b.digest, (b.path.to_str().unwrap_or_default(), b.size)))
        .collect();
    let mut out = Plan::default();
    // Destination repository -> the cached one sent there.
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    let mut blobs: BTreeMap<Digest, BlobPlan> = BTreeMap::new();
    let mut registries = std::collections::BTreeSet::new();
    let mut wanted_found = vec![false; opts.images.as_ref().map_or(0, Vec::len)];
    for repo in &inv.repos {
        let Ok(source) = repo.image_name() else {
            continue;
        };
        let mut roots: Vec<(Option<String>, Digest, String)> = Vec::new();
        for t in &repo.tags {
            let path = t.path.to_string_lossy().into_owned();
            let Some(bytes) = manifests.get(&path) else {
                continue;
            };
            roots.push((Some(t.tag.clone()), Digest::of(bytes), path));
        }
        if opts.images.is_none() {
            // Manifests cached by digest only that no tag or index names are images too.
            let mut named: HashSet<Digest> = roots.iter().map(|r| r.1).collect();
            for m in &repo.manifests {
                let path = m.path.to_string_lossy().into_owned();
                if let Some(Ok(Manifest::Index(i))) =
                    manifests.get(&path).map(|b| manifest::parse(b))
                {
                    named.extend(i.manifests.iter().map(|c| c.digest));
                }
            }
            for m in &repo.manifests {
                if !named.contains(&m.digest) {
                    roots.push((None, m.digest, m.path.to_string_lossy().into_owned()));
                }
            }
        }
        if let Some(wanted) = &opts.images {
            roots.retain(|(tag, digest, _)| {
                let mut hit = false;
                for (i, w) in wanted.iter().enumerate() {
                    let same = w.name() == &source
                        && (w.digest().is_some_and(|d| d == digest)
                            || (w.digest().is_none() && w.tag() == tag.as_deref()));
                    if same {
                        wanted_found[i] = true;
                        hit = true;
                    }
                }
                hit
            });
        }
        if roots.is_empty() {
            continue;
        }
        let target =
            dest_repository(&source, dest, opts.keep_registry).map_err(|e| PushError::Name {
                image: source.to_string(),
                what: "its repository".into(),
                dest: dest.to_string(),
                source: Box::new(e),
            })?;
        if let Some(first) = claimed.insert(target.to_string(), source.to_string())
            && first != source.to_string()
        {
            return Err(PushError::Collision {
                first,
                second: source.to_string(),
                dest: target.to_string(),
            });
        }
        registries.insert(source.registry().to_owned());
        let digest_path = |d: &Digest| -> String {
            flat::manifest_path(&source, d)
                .to_string_lossy()
                .into_owned()
        };
        for (tag, top, top_path) in roots {
            let image = match &tag {
                Some(t) => format!("{source}:{t}"),
                None => format!("{source}@{top}"),
            };
            let top_bytes = manifests.get(&top_path).ok_or_else(|| PushError::Missing {
                image: image.clone(),
                what: format!("manifest {top}"),
            })?;
            let parse = |digest: Digest, bytes: &[u8]| {
                manifest::parse(bytes).map_err(|source| PushError::Manifest {
                    image: image.clone(),
                    digest,
                    source,
                })
            };
            let top_manifest = parse(top, top_bytes)?;
            let mut images: Vec<(Digest, String, Manifest)> = Vec::new();
            let mut indexes = Vec::new();
            match &top_manifest {
                Manifest::Index(index) => {
                    for child in &index.manifests {
                        let path = digest_path(&child.digest);
                        let Some(bytes) = manifests.get(&path) else {
                            continue;
                        };
                        if !keep_child(child, opts.platforms.as_ref()) {
                            continue;
                        }
                        images.push((child.digest, path, parse(child.digest, bytes)?));
                    }
                    // The top goes under its digest too: a tag file's bytes are the manifest's.
                    let path = if manifests.contains_key(&digest_path(&top)) {
                        digest_path(&top)
                    } else {
                        top_path.clone()
                    };
                    indexes.push(ManifestPlan {
                        digest: top,
                        media_type: top_manifest.media_type().to_owned(),
                        path,
                    });
                }
                Manifest::Image(_) => images.push((top, top_path.clone(), top_manifest.clone())),
            }
            let mut plans = Vec::new();
            for (digest, path, m) in images {
                if let Manifest::Image(img) = &m {
                    for (i, b) in img.blobs().enumerate() {
                        let Some(&(bpath, size)) = blob_paths.get(&b.digest) else {
                            return Err(PushError::Missing {
                                image: image.clone(),
                                what: if i == 0 {
                                    format!("the config {}", b.digest)
                                } else {
                                    format!("layer {i} ({})", b.digest)
                                },
                            });
                        };
                        let entry = blobs.entry(b.digest).or_insert_with(|| BlobPlan {
                            digest: b.digest,
                            size,
                            path: bpath.to_owned(),
                            repos: Vec::new(),
                            image: image.clone(),
                        });
                        if !entry.repos.contains(&target) {
                            entry.repos.push(target.clone());
                        }
                    }
                }
                plans.push(ManifestPlan {
                    digest,
                    media_type: m.media_type().to_owned(),
                    path,
                });
            }
            plans.extend(indexes);
            out.images.push(ImagePlan {
                source: image,
                dest: target.clone(),
                tag,
                top,
                manifests: plans,
            });
        }
    }
    if let Some(wanted) = &opts.images
        && let Some(i) = wanted_found.iter().position(|f| !f)
    {
        return Err(PushError::NotCached {
            image: wanted[i].to_string(),
        });
    }
    out.blobs = blobs.into_values().collect();
    out.registries = registries
        .into_iter()
        .map(|r| {
            let path = dest_path(&r, dest, opts.keep_registry);
            (r, path)
        })
        .collect();
    Ok(out)
}

/// Called as each image's tag lands.
pub type ImageDone = Arc<dyn Fn(&ImagePlan) + Send + Sync>;

/// How to push.
#[derive(Clone)]
pub struct PushOptions {
    pub dest: Dest,
    pub plan: PlanOptions,
    pub jobs: usize,
    pub client: ClientConfig,
    pub upload: UploadOptions,
    /// Told of each image as its tag lands.
    pub image_done: Option<ImageDone>,
}

impl std::fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field("dest", &self.dest)
            .field("plan", &self.plan)
            .field("jobs", &self.jobs)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    pub plan: Plan,
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    pub mounted: usize,
    pub present: usize,
    pub manifests_put: usize,
    pub tags_put: usize,
    /// `https` or `http`: how the destination was reached.
    pub scheme: Option<&'static str>,
}

/// Plans and pushes the cache. See the module documentation.
pub fn push(cache: &Cache, opts: &PushOptions) -> Result<Pushed, PushError> {
    if cache.is_streamed() {
        return Err(PushError::Streamed {
            cache: cache.input().display().to_string(),
            form: format!("an {}", cache.form()),
        });
    }
    let loaded = cache.load(&|e| e.path.starts_with("manifests/"), &|_| false)?;
    let mut manifests = HashMap::new();
    for (path, bytes) in loaded.small {
        // An unreadable manifest is left out; planning names it if an image needs it.
        if let Ok(b) = bytes {
            manifests.insert(path, b);
        }
    }
    let plan = plan(&cache.inventory(), &manifests, &opts.dest, &opts.plan)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(PushError::Runtime)?;
    runtime.block_on(run(cache, plan, manifests, opts))
}

async fn run(
    cache: &Cache,
    plan: Plan,
    manifests: HashMap<String, Vec<u8>>,
    opts: &PushOptions,
) -> Result<Pushed, PushError> {
    let client = Client::new(opts.client.clone())?;
    let jobs = opts.jobs.max(1);
    let mut sources = Vec::with_capacity(plan.blobs.len());
    for b in &plan.blobs {
        let entry = cache.get(&b.path).ok_or_else(|| PushError::Missing {
            image: b.image.clone(),
            what: format!("blob {}", b.digest),
        })?;
        let (path, pieces) = cache.pieces(entry).ok_or_else(|| PushError::Missing {
            image: b.image.clone(),
            what: format!("blob {}", b.digest),
        })?;
        sources.push(BlobSource {
            path: path.to_owned(),
            pieces,
        });
    }
    let outcomes: Vec<Vec<BlobPushed>> =
        futures_util::stream::iter(plan.blobs.iter().zip(&sources))
            .map(|(b, src)| {
                let client = &client;
                async move {
                    let mut done = Vec::new();
                    let mut holder: Option<&ImageName> = None;
                    for repo in &b.repos {
                        done.push(
                            client
                                .push_blob(&b.image, repo, &b.digest, src, holder, &opts.upload)
                                .await?,
                        );
                        holder = Some(repo);
                    }
                    Ok::<_, PushError>(done)
                }
            })
            .buffer_unordered(jobs)
            .try_collect()
            .await?;
    let mut pushed = Pushed::default();
    for o in outcomes.iter().flatten() {
        match o {
            BlobPushed::Present => pushed.present += 1,
            BlobPushed::Mounted => pushed.mounted += 1,
            BlobPushed::Uploaded { bytes, .. } => {
                pushed.uploaded += 1;
                pushed.uploaded_bytes += bytes;
            }
        }
    }
    let counts: Vec<(usize, usize)> = futures_util::stream::iter(&plan.images)
        .map(|image| {
            let client = &client;
            let manifests = &manifests;
            async move {
                let mut put = 0;
                for m in &image.manifests {
                    let digest = m.digest.to_string();
                    if client
                        .manifest_digest(&image.source, &image.dest, &digest)
                        .await?
                        .is_some()
                    {
                        continue;
                    }
                    let bytes = manifests.get(&m.path).ok_or_else(|| PushError::Missing {
                        image: image.source.clone(),
                        what: format!("manifest {digest}"),
                    })?;
                    client
                        .put_manifest(&image.source, &image.dest, &digest, &m.media_type, bytes)
                        .await?;
                    put += 1;
                }
                let mut tags = 0;
                if let Some(tag) = &image.tag
                    && client
                        .manifest_digest(&image.source, &image.dest, tag)
                        .await?
                        != Some(image.top)
                {
                    let top = image.manifests.last().ok_or_else(|| PushError::Missing {
                        image: image.source.clone(),
                        what: "its manifest".into(),
                    })?;
                    let bytes = manifests.get(&top.path).ok_or_else(|| PushError::Missing {
                        image: image.source.clone(),
                        what: format!("manifest {}", image.top),
                    })?;
                    client
                        .put_manifest(&image.source, &image.dest, tag, &top.media_type, bytes)
                        .await?;
                    tags += 1;
                }
                if let Some(f) = &opts.image_done {
                    f(image);
                }
                Ok::<_, PushError>((put, tags))
            }
        })
        .buffer_unordered(jobs)
        .try_collect()
        .await?;
    for (m, t) in counts {
        pushed.manifests_put += m;
        pushed.tags_put += t;
    }
    pushed.scheme = client.scheme_of(&opts.dest.registry);
    pushed.plan = plan;
    Ok(pushed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn image_bytes(config: &Digest, layer: &Digest) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":3}}]}}"#
        )
        .into_bytes()
    }

    /// A cache holding `repos` (registry, repository, tag): each a one-platform image, or an
    /// amd64+arm64 index when `multi`, all sharing one layer.
    fn cache(repos: &[(&str, &str, &str, bool)]) -> (Inventory, HashMap<String, Vec<u8>>) {
        let config = Digest::of(b"{}");
        let layer = Digest::of(b"abc");
        let mut files: Vec<(String, u64)> = vec![
            (flat::blob_path(&config).to_string_lossy().into_owned(), 2),
            (flat::blob_path(&layer).to_string_lossy().into_owned(), 3),
        ];
        let mut bytes = HashMap::new();
        for (registry, repo, tag, multi) in repos {
            let name = ImageName::new(registry, repo).unwrap();
            let img = image_bytes(&config, &layer);
            let img_d = Digest::of(&img);
            let top = if *multi {
                let idx = format!(
                    r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{img_d}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
                    img.len(),
                    Digest::of(b"not cached")
                )
                .into_bytes();
                let p = flat::manifest_path(&name, &img_d)
                    .to_string_lossy()
                    .into_owned();
                files.push((p.clone(), img.len() as u64));
                bytes.insert(p, img);
                idx
            } else {
                img
            };
            let top_d = Digest::of(&top);
            for p in [
                flat::manifest_path(&name, &top_d),
                flat::tag_path(&name, tag),
            ] {
                let p = p.to_string_lossy().into_owned();
                files.push((p.clone(), top.len() as u64));
                bytes.insert(p, top.clone());
            }
        }
        let inv = flat::inventory(files.iter().map(|(p, s)| (p.as_str(), *s)), Vec::new());
        (inv, bytes)
    }

    #[test]
    fn destinations_parse_and_map() {
        let d = Dest::parse("reg.local:5000/mirror/").unwrap();
        assert_eq!(d.registry, "reg.local:5000");
        assert_eq!(d.prefix.as_deref(), Some("mirror"));
        for bad in ["https://reg", "", "reg/UPPER", "a b"] {
            assert!(Dest::parse(bad).is_err(), "{bad}");
        }
        let src = ImageName::new("docker.io", "library/busybox").unwrap();
        let plain = Dest::parse("reg:5000").unwrap();
        assert_eq!(
            dest_repository(&src, &plain, false).unwrap().to_string(),
            "reg:5000/library/busybox"
        );
        assert_eq!(
            dest_repository(&src, &d, true).unwrap().to_string(),
            "reg.local:5000/mirror/docker.io/library/busybox"
        );
        let k8s = ImageName::new("host:5001", "pause").unwrap();
        assert_eq!(
            dest_repository(&k8s, &plain, true).unwrap().to_string(),
            "reg:5000/host-5001/pause"
        );
    }

    #[test]
    fn order_is_blobs_then_children_then_index_and_blobs_are_shared() {
        let (inv, bytes) = cache(&[
            ("docker.io", "library/a", "1", true),
            ("ghcr.io", "org/b", "2", false),
        ]);
        let dest = Dest::parse("reg:5000").unwrap();
        let p = plan(&inv, &bytes, &dest, &PlanOptions::default()).unwrap();
        assert_eq!(p.images.len(), 2);
        let a = &p.images[0];
        assert_eq!(a.dest.to_string(), "reg:5000/library/a");
        assert_eq!(a.tag.as_deref(), Some("1"));
        // The cached child, then the index; the uncached arm64 child is not pushed.
        assert_eq!(a.manifests.len(), 2);
        assert!(a.manifests[0].media_type.ends_with("manifest.v1+json"));
        assert_eq!(a.manifests[1].digest, a.top);
        // Two blobs, each needed by both repositories (uploaded once, mounted once).
        assert_eq!(p.blobs.len(), 2);
        assert!(p.blobs.iter().all(|b| b.repos.len() == 2));
        assert_eq!(
            p.registries,
            [
                ("docker.io".into(), String::new()),
                ("ghcr.io".into(), String::new())
            ]
        );
    }

    #[test]
    fn the_same_repository_from_two_registries_collides_unless_kept() {
        let (inv, bytes) = cache(&[
            ("docker.io", "org/app", "1", false),
            ("ghcr.io", "org/app", "1", false),
        ]);
        let dest = Dest::parse("reg:5000/m").unwrap();
        let err = plan(&inv, &bytes, &dest, &PlanOptions::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("docker.io/org/app")
                && text.contains("ghcr.io/org/app")
                && text.contains("reg:5000/m/org/app"),
            "{text}"
        );
        let p = plan(
            &inv,
            &bytes,
            &dest,
            &PlanOptions {
                keep_registry: true,
                ..PlanOptions::default()
            },
        )
        .unwrap();
        let dests: Vec<String> = p.images.iter().map(|i| i.dest.to_string()).collect();
        assert_eq!(
            dests,
            ["reg:5000/m/docker.io/org/app", "reg:5000/m/ghcr.io/org/app"]
        );
        assert_eq!(p.registries[1], ("ghcr.io".into(), "m/ghcr.io".into()));
    }

    #[test]
    fn selected_images_and_platforms() {
        let (inv, bytes) = cache(&[
            ("docker.io", "library/a", "1", true),
            ("ghcr.io", "org/b", "2", false),
        ]);
        let dest = Dest::parse("reg:5000").unwrap();
        let only = |refs: &[&str], platforms: Option<&str>| PlanOptions {
            images: Some(refs.iter().map(|r| Reference::parse(r).unwrap()).collect()),
            platforms: platforms.map(|p| PlatformSelection::parse([p]).unwrap()),
            keep_registry: false,
        };
        let p = plan(&inv, &bytes, &dest, &only(&["ghcr.io/org/b:2"], None)).unwrap();
        assert_eq!(p.images.len(), 1);
        assert_eq!(p.images[0].source, "ghcr.io/org/b:2");
        let err = plan(&inv, &bytes, &dest, &only(&["ghcr.io/org/b:3"], None)).unwrap_err();
        assert!(matches!(err, PushError::NotCached { .. }), "{err}");
        // arm64 is not cached and amd64 is filtered out: the index alone.
        let p = plan(
            &inv,
            &bytes,
            &dest,
            &only(&["docker.io/library/a:1"], Some("linux/arm64")),
        )
        .unwrap();
        assert_eq!(p.images[0].manifests.len(), 1);
        assert!(p.blobs.is_empty());
    }
}
