//! Creating a cache from registries (`imager cache create`): the images' manifests as served,
//! the requested platforms' children, every config and layer once, verified while streaming; the
//! result as the upstream flat tree or as an OCI layout wrapping it ([`crate::oci_out`]).
//!
//! The steps, each testable on its own:
//! 1. **input** (pure, before any network): the image list ([`parse_images`],
//!    [`parse_image_list`]), the platforms, the output path ([`check_output`]);
//! 2. **resolve** (network): each image's manifest; for an index, the children of the requested
//!    platforms ([`select_platforms`]);
//! 3. **plan** (pure): which manifest and tag files to write, the distinct blobs, which image and
//!    layer each blob is for ([`plan`]), the platforms of the OCI layout ([`layout_platforms`]);
//! 4. **fetch** (network): the blobs, at most `jobs` at a time, each verified as it streams, into
//!    the tree, or for the OCI layout straight into their slots of its layer (laid out before
//!    the first blob arrives, hashed in order behind the downloads, [`crate::oci_out`]), or
//!    through the persistent layer cache;
//! 5. **publish**: everything is built in `<P>.tmp-XXXX` beside the output `P` and renamed over it
//!    at the end; any error removes the temp directory, so `P` is never partial.
//!
//! The registry client (`imager-registry`) has its own small name and digest types that validate
//! only what reaches a URL; the references parsed and normalized here are converted into them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{StreamExt as _, TryStreamExt as _};
use imager_registry::{
    self as registry, BlobRequest, Client, ClientConfig, ManifestKind, PlatformSelection, Progress,
    SelectError, select_platforms,
};
use tokio::io::AsyncWriteExt as _;

use crate::Platform;
use crate::digest::Digest;
use crate::flat::{self, FlatError, FlatWriter};
use crate::manifest::{self, Manifest, ManifestError};
use crate::oci_out::{self, Gate, LayerFile, LayerSlot, OciOutError};
use crate::par;
use crate::reference::{ImageName, Reference, ReferenceError};
use crate::slot::SlotWriter;

/// The default number of blobs downloaded at once (talosctl fetches one at a time).
pub const DEFAULT_JOBS: usize = 4;

/// What `P` becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputLayout {
    /// An OCI image layout, one image per platform, each with the flat tree as its one layer.
    #[default]
    Oci,
    /// The flat tree itself.
    Flat,
}

/// Observes a run, e.g. to draw progress bars. Blob transfers are reported through the registry
/// client's [`Progress`]; every method has an empty default.
pub trait CreateProgress: Progress {
    /// An image's manifests are fetched and its blobs planned.
    fn image_planned(&self, _image: &ImageSummary) {}
    /// Every image is resolved: these distinct blobs go into the cache (downloaded, or verified
    /// copies from the layer cache).
    fn blobs_planned(&self, _blobs: &[PlannedBlob]) {}
    /// The downloads are over and the OCI layer's hashing pass, which runs behind them, goes on:
    /// the layer is `total` bytes. Called from the hashing thread.
    fn layout_started(&self, _total: u64) {}
    /// `done` bytes of the layer hashed so far.
    fn layout_advanced(&self, _done: u64) {}
}

/// How to create a cache.
#[derive(Clone)]
pub struct CreateOptions {
    /// `P`: must not exist unless `force`.
    pub output: PathBuf,
    /// Parsed and normalized references, without duplicates ([`parse_images`]).
    pub images: Vec<Reference>,
    pub platforms: PlatformSelection,
    pub layout: OutputLayout,
    /// Replace an existing cache at `output`.
    pub force: bool,
    /// Blobs downloaded at once (at least 1).
    pub jobs: usize,
    /// A directory of blobs kept across runs (`<dir>/blobs/sha256/<hex>`): looked up (re-hashed)
    /// before downloading, filled by downloads, copied into the output.
    pub layer_cache: Option<PathBuf>,
    /// Connection, credentials and retries; `insecure` is talosctl's `--insecure`.
    pub client: ClientConfig,
    /// Dates the OCI layout's tar entries and configs (`SOURCE_DATE_EPOCH`, else 0).
    pub source_date_epoch: u64,
    pub progress: Option<Arc<dyn CreateProgress>>,
}

impl std::fmt::Debug for CreateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateOptions")
            .field("output", &self.output)
            .field("images", &self.images)
            .field("platforms", &self.platforms)
            .field("layout", &self.layout)
            .field("force", &self.force)
            .field("jobs", &self.jobs)
            .field("layer_cache", &self.layer_cache)
            .field("client", &self.client)
            .field("source_date_epoch", &self.source_date_epoch)
            .finish_non_exhaustive()
    }
}

impl CreateOptions {
    /// Defaults as talosctl has them: OCI layout, `linux/amd64`, no force, [`DEFAULT_JOBS`].
    pub fn new(output: PathBuf, images: Vec<Reference>) -> Self {
        Self {
            output,
            images,
            platforms: PlatformSelection::Only(vec![Platform::linux_amd64()]),
            layout: OutputLayout::Oci,
            force: false,
            jobs: DEFAULT_JOBS,
            layer_cache: None,
            client: ClientConfig::default(),
            source_date_epoch: 0,
            progress: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("no images given")]
    NoImages,
    /// A reference given directly (its message names it).
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("line {line} of the image list")]
    ListLine {
        line: usize,
        #[source]
        source: ReferenceError,
    },
    #[error("{path} already exists; give --force to replace it")]
    Exists { path: PathBuf },
    #[error(
        "{path} exists and is not an image cache (no oci-layout, blob/ or manifests/): refusing to replace it"
    )]
    NotACache { path: PathBuf },
    #[error("{path}")]
    Output {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("setting up the registry client")]
    Client(#[source] Box<registry::Error>),
    /// Fetching a top-level manifest (the message names the image and the cause).
    #[error(transparent)]
    Manifest(Box<registry::Error>),
    #[error("{image}")]
    UnknownPlatform {
        image: String,
        #[source]
        source: crate::PlatformError,
    },
    #[error("{image}: its index cannot be read")]
    Index {
        image: String,
        #[source]
        source: registry::ManifestError,
    },
    #[error("{image} ({platform})")]
    ChildManifest {
        image: String,
        platform: String,
        #[source]
        source: Box<registry::Error>,
    },
    #[error(
        "{image} ({platform}): the index gives the manifest {digest} {expected} bytes, the registry served {actual}"
    )]
    ChildSize {
        image: String,
        platform: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error(
        "{image} ({platform}): the child {digest} is itself an index; nested indexes are not supported"
    )]
    NestedIndex {
        image: String,
        platform: String,
        digest: Digest,
    },
    #[error("{image}: {what} {digest}")]
    ManifestInvalid {
        image: String,
        what: String,
        digest: Digest,
        // Boxed: it would make every `Result<_, CreateError>` large.
        #[source]
        source: Box<ManifestError>,
    },
    #[error("blob {digest} is {first} bytes in {first_image} but {second} bytes in {second_image}")]
    BlobSizeConflict {
        digest: Digest,
        first: u64,
        first_image: String,
        second: u64,
        second_image: String,
    },
    #[error("{image}: {what} {digest}")]
    Blob {
        image: String,
        what: String,
        digest: Digest,
        #[source]
        source: Box<registry::Error>,
    },
    #[error("copying {digest} from the layer cache")]
    LayerCache {
        digest: Digest,
        #[source]
        source: FlatError,
    },
    #[error("copying {digest} from the layer cache into the layer")]
    LayerCacheCopy {
        digest: Digest,
        #[source]
        source: OciOutError,
    },
    #[error("writing {digest} into the layer {path}")]
    LayerWrite {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the cache tree")]
    Tree(#[source] FlatError),
    #[error("writing the OCI layout")]
    Layout(#[source] OciOutError),
}

type Result<T, E = CreateError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Input

/// Parses references given one per item (`--images a,b`), trimmed; blank items are skipped,
/// duplicates (after normalization) kept once, in order. A malformed one is an error naming it.
pub fn parse_images<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Vec<Reference>> {
    let mut out = Vec::new();
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        push_unique(&mut out, Reference::parse(item)?);
    }
    Ok(out)
}

/// Parses a newline-separated list (`--images -`): blank lines and `#` comments (whole lines or
/// after a reference) are ignored; an error gives the line number.
pub fn parse_image_list(text: &str) -> Result<Vec<Reference>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line
            .split_once('#')
            .map_or(line, |(before, _)| before)
            .trim();
        if line.is_empty() {
            continue;
        }
        let r = Reference::parse(line).map_err(|source| CreateError::ListLine {
            line: i + 1,
            source,
        })?;
        push_unique(&mut out, r);
    }
    Ok(out)
}

fn push_unique(out: &mut Vec<Reference>, r: Reference) {
    if !out.contains(&r) {
        out.push(r);
    }
}

/// Whether `path` may become the output: it must not exist, unless `force`, and then it must be
/// an image cache (flat tree or OCI layout) or an empty directory, so that a mistyped path does
/// not replace someone's home directory.
pub fn check_output(path: &Path, force: bool) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CreateError::Output {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !force {
        return Err(CreateError::Exists {
            path: path.to_owned(),
        });
    }
    if !meta.is_dir() {
        return Err(CreateError::NotACache {
            path: path.to_owned(),
        });
    }
    let is_cache = path.join("oci-layout").is_file()
        || path.join(flat::BLOB_DIR).is_dir()
        || path.join(flat::MANIFESTS_DIR).is_dir();
    let empty = fs::read_dir(path)
        .map_err(|source| CreateError::Output {
            path: path.to_owned(),
            source,
        })?
        .next()
        .is_none();
    if is_cache || empty {
        Ok(())
    } else {
        Err(CreateError::NotACache {
            path: path.to_owned(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Resolve

/// A manifest as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// An image with the manifests that go into the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    pub reference: Reference,
    /// What the tag (or digest) resolved to: an image manifest or an index.
    pub top: FetchedManifest,
    /// For an index: the children kept, each with its platform from the index.
    pub children: Vec<(Option<Platform>, FetchedManifest)>,
}

async fn resolve_image(
    client: &Client,
    reference: &Reference,
    selection: &PlatformSelection,
) -> Result<ResolvedImage> {
    let image = reference.to_string();
    let top = client
        .get_manifest(reference)
        .await
        .map_err(|e| CreateError::Manifest(Box::new(e)))?;
    let mut children = Vec::new();
    if top.kind() == ManifestKind::Index {
        let chosen =
            select_platforms(&top.media_type, &top.bytes, selection).map_err(|e| match e {
                SelectError::Platform(source) => CreateError::UnknownPlatform {
                    image: image.clone(),
                    source,
                },
                SelectError::Manifest(source) => CreateError::Index {
                    image: image.clone(),
                    source,
                },
            })?;
        for child in chosen {
            let platform = child
                .platform
                .as_ref()
                .map_or_else(|| format!("child {}", child.digest), ToString::to_string);
            let by_digest = Reference::with_digest(reference.name().clone(), child.digest);
            let m = client.get_manifest(&by_digest).await.map_err(|source| {
                CreateError::ChildManifest {
                    image: image.clone(),
                    platform: platform.clone(),
                    source: Box::new(source),
                }
            })?;
            let digest = m.digest;
            if m.bytes.len() as u64 != child.size {
                return Err(CreateError::ChildSize {
                    image,
                    platform,
                    digest,
                    expected: child.size,
                    actual: m.bytes.len() as u64,
                });
            }
            if m.kind() != ManifestKind::Image {
                return Err(CreateError::NestedIndex {
                    image,
                    platform,
                    digest,
                });
            }
            children.push((
                child.platform.clone(),
                FetchedManifest {
                    digest,
                    media_type: m.media_type,
                    bytes: m.bytes,
                },
            ));
        }
    }
    Ok(ResolvedImage {
        reference: reference.clone(),
        top: FetchedManifest {
            digest: top.digest,
            media_type: top.media_type,
            bytes: top.bytes,
        },
        children,
    })
}

// ---------------------------------------------------------------------------------------------
// Plan

/// `manifests/<registry>/<repo>/digest/sha256-<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestWrite<'a> {
    pub name: &'a ImageName,
    pub digest: Digest,
    pub bytes: &'a [u8],
}

/// `manifests/<registry>/<repo>/reference/<tag>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagWrite<'a> {
    pub name: &'a ImageName,
    pub tag: &'a str,
    pub bytes: &'a [u8],
}

/// A distinct blob, with the first image and role it was found in (to name it in errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedBlob {
    pub digest: Digest,
    pub size: u64,
    /// The repository it is fetched from.
    pub repository: ImageName,
    /// `ghcr.io/x/app:v1`
    pub image: String,
    /// `config of the linux/arm64 image`, `layer 2 of the image`
    pub what: String,
}

/// One line of the run's report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageSummary {
    pub reference: String,
    pub digest: Digest,
    /// The platforms kept (an index's chosen children); empty for a single image.
    pub platforms: Vec<String>,
    /// Configs and layers, each once.
    pub blobs: usize,
    pub bytes: u64,
}

/// Everything to write, decided before any blob is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<'a> {
    pub manifests: Vec<ManifestWrite<'a>>,
    pub tags: Vec<TagWrite<'a>>,
    /// Distinct, in the order first seen.
    pub blobs: Vec<PlannedBlob>,
    pub images: Vec<ImageSummary>,
}

impl Plan<'_> {
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// Decides the tree's files and the blobs to fetch. Pure: parses the fetched image manifests for
/// their configs and layers, keeps each manifest file and each blob once, and refuses a blob that
/// two manifests give different sizes (one of them is wrong, and the size is checked while it
/// streams).
pub fn plan(resolved: &[ResolvedImage]) -> Result<Plan<'_>> {
    let mut out = Plan {
        manifests: Vec::new(),
        tags: Vec::new(),
        blobs: Vec::new(),
        images: Vec::new(),
    };
    let mut seen_manifests: HashSet<(&ImageName, Digest)> = HashSet::new();
    let mut blob_index: HashMap<Digest, usize> = HashMap::new();
    for image in resolved {
        let name = image.reference.name();
        let label = image.reference.to_string();
        let mut manifests: Vec<&FetchedManifest> = vec![&image.top];
        manifests.extend(image.children.iter().map(|(_, m)| m));
        for m in &manifests {
            if seen_manifests.insert((name, m.digest)) {
                out.manifests.push(ManifestWrite {
                    name,
                    digest: m.digest,
                    bytes: &m.bytes,
                });
            }
        }
        if let Some(tag) = image.reference.tag() {
            out.tags.push(TagWrite {
                name,
                tag,
                bytes: &image.top.bytes,
            });
        }
        // The image manifests to read blobs from: the top one, or the chosen children.
        let images: Vec<(Option<String>, &FetchedManifest)> = if image.children.is_empty() {
            vec![(None, &image.top)]
        } else {
            image
                .children
                .iter()
                .map(|(p, m)| (p.as_ref().map(ToString::to_string), m))
                .collect()
        };
        let mut mine: BTreeMap<Digest, u64> = BTreeMap::new();
        for (platform, m) in images {
            let of = match &platform {
                Some(p) => format!("the {p} image"),
                None => "the image".to_owned(),
            };
            let parsed =
                manifest::parse(&m.bytes).map_err(|source| CreateError::ManifestInvalid {
                    image: label.clone(),
                    what: format!("manifest of {of}"),
                    digest: m.digest,
                    source: Box::new(source),
                })?;
            let Manifest::Image(parsed) = parsed else {
                // The registry client's media type said image; the body says index.
                return Err(CreateError::NestedIndex {
                    image: label.clone(),
                    platform: platform.unwrap_or_else(|| "top level".to_owned()),
                    digest: m.digest,
                });
            };
            for (i, blob) in parsed.blobs().enumerate() {
                let what = if i == 0 {
                    format!("config of {of}")
                } else {
                    format!("layer {i} of {of}")
                };
                mine.insert(blob.digest, blob.size);
                match blob_index.get(&blob.digest) {
                    Some(&at) => {
                        let first = &out.blobs[at];
                        if first.size != blob.size {
                            return Err(CreateError::BlobSizeConflict {
                                digest: blob.digest,
                                first: first.size,
                                first_image: first.image.clone(),
                                second: blob.size,
                                second_image: label.clone(),
                            });
                        }
                    }
                    None => {
                        blob_index.insert(blob.digest, out.blobs.len());
                        out.blobs.push(PlannedBlob {
                            digest: blob.digest,
                            size: blob.size,
                            repository: name.clone(),
                            image: label.clone(),
                            what,
                        });
                    }
                }
            }
        }
        out.images.push(ImageSummary {
            reference: label,
            digest: image.top.digest,
            platforms: image
                .children
                .iter()
                .filter_map(|(p, _)| p.as_ref().map(ToString::to_string))
                .collect(),
            blobs: mine.len(),
            bytes: mine.values().sum(),
        });
    }
    Ok(out)
}

/// The platforms of the OCI layout's images: those requested, in order; for `all`, every platform
/// kept from any index, in the order first seen. Without any (only single-platform images under
/// `all`), one image without a platform, as upstream writes it. Pure.
pub fn layout_platforms(
    selection: &PlatformSelection,
    resolved: &[ResolvedImage],
) -> Vec<Option<Platform>> {
    let platforms: Vec<Platform> = match selection {
        PlatformSelection::Only(list) => list.clone(),
        PlatformSelection::All => {
            let mut seen: Vec<Platform> = Vec::new();
            for (p, _) in resolved.iter().flat_map(|r| &r.children) {
                if let Some(p) = p.clone()
                    && !seen.contains(&p)
                {
                    seen.push(p);
                }
            }
            seen
        }
    };
    if platforms.is_empty() {
        vec![None]
    } else {
        platforms.into_iter().map(Some).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Created {
    pub path: PathBuf,
    pub images: Vec<ImageSummary>,
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Blobs fetched from a registry (the rest were verified copies in the layer cache).
    pub downloaded: usize,
    pub downloaded_bytes: u64,
    /// For the OCI layout: the platform of each image, in `index.json` order.
    pub layout_platforms: Vec<Option<String>>,
}

/// Creates the cache described by `opts`, on the caller's Tokio runtime. Validates the output path
/// first (nothing touches the network if it is taken); on any error the temp directory is removed
/// and `opts.output` is as it was.
///
/// Downloads run as tasks of the caller's runtime; the work around them (laying out and hashing
/// the layer, syncing, renaming) is blocking file I/O, so the whole job runs on the runtime's
/// blocking pool and drives the downloads from there.
pub async fn create(opts: &CreateOptions) -> Result<Created> {
    let handle = tokio::runtime::Handle::current();
    let opts = opts.clone();
    tokio::task::spawn_blocking(move || create_blocking(&opts, &handle))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn create_blocking(opts: &CreateOptions, runtime: &tokio::runtime::Handle) -> Result<Created> {
    if opts.images.is_empty() {
        return Err(CreateError::NoImages);
    }
    check_output(&opts.output, opts.force)?;
    let wanted: Vec<&Reference> = opts.images.iter().collect();
    let mut client_config = opts.client.clone();
    if client_config.progress.is_none()
        && let Some(p) = &opts.progress
    {
        let p: Arc<dyn Progress> = p.clone();
        client_config.progress = Some(p);
    }
    let blob_progress = client_config.progress.clone();
    let client = Client::new(client_config).map_err(|e| CreateError::Client(Box::new(e)))?;
    let jobs = opts.jobs.max(1);
    let progress = opts.progress.as_deref();

    let staging = Staging::new(&opts.output)?;

    let resolved: Vec<ResolvedImage> = runtime.block_on(
        futures_util::stream::iter(wanted)
            .map(|r| resolve_image(&client, r, &opts.platforms))
            .buffered(jobs)
            .try_collect(),
    )?;
    let plan = plan(&resolved)?;
    if let Some(p) = progress {
        for image in &plan.images {
            p.image_planned(image);
        }
        p.blobs_planned(&plan.blobs);
    }

    let platforms = layout_platforms(&opts.platforms, &resolved);
    let fetch = Fetch {
        runtime,
        client: &client,
        plan: &plan,
        layer_cache: opts.layer_cache.as_deref(),
        jobs,
        progress,
        blob_progress,
    };
    let (result_dir, outcomes) = match opts.layout {
        OutputLayout::Flat => {
            let tree = staging.path().join("tree");
            let outcomes = fetch.flat_tree(&tree)?;
            (tree, outcomes)
        }
        OutputLayout::Oci => {
            let out = staging.path().join("layout");
            let outcomes = fetch.oci_layout(&out, &platforms, opts.source_date_epoch)?;
            (out, outcomes)
        }
    };
    staging.publish(&result_dir, &opts.output, opts.force)?;

    let downloaded: Vec<_> = outcomes.iter().filter(|o| o.downloaded).collect();
    Ok(Created {
        path: opts.output.clone(),
        images: plan.images.clone(),
        blobs: plan.blobs.len(),
        blob_bytes: plan.blob_bytes(),
        downloaded: downloaded.len(),
        downloaded_bytes: downloaded.iter().map(|o| o.size).sum(),
        layout_platforms: match opts.layout {
            OutputLayout::Flat => Vec::new(),
            OutputLayout::Oci => platforms
                .iter()
                .map(|p| p.as_ref().map(ToString::to_string))
                .collect(),
        },
    })
}

/// What fetching the blobs needs, whatever the output.
struct Fetch<'a> {
    runtime: &'a tokio::runtime::Handle,
    client: &'a Client,
    plan: &'a Plan<'a>,
    layer_cache: Option<&'a Path>,
    jobs: usize,
    progress: Option<&'a dyn CreateProgress>,
    blob_progress: Option<Arc<dyn Progress>>,
}

impl Fetch<'_> {
    /// The flat tree at `tree`: manifests and tags, then the blobs, downloaded into the tree (or
    /// into the layer cache and copied from there).
    fn flat_tree(&self, tree: &Path) -> Result<Vec<registry::BlobOutcome>> {
        let writer = write_manifests(tree, self.plan)?;
        let outcomes = self.runtime.block_on(fetch_blobs(
            self.client,
            self.plan,
            |d| match self.layer_cache {
                Some(dir) => layer_cache_path(dir, d),
                None => tree.join(flat::blob_path(d)),
            },
            self.jobs,
        ))?;
        if let Some(dir) = self.layer_cache {
            // Copied by the kernel (a reflink where the file system has them), then hashed: what
            // is checked is what landed in the tree.
            par::map(&self.plan.blobs, |b| {
                writer
                    .copy_blob(&b.digest, b.size, &layer_cache_path(dir, &b.digest))
                    .map_err(|source| CreateError::LayerCache {
                        digest: b.digest,
                        source,
                    })
            })
            .into_iter()
            .try_for_each(|r| r.map(drop))?;
        }
        Ok(outcomes)
    }

    /// The OCI layout at `out`, without a flat tree: the layer is laid out from the plan's names
    /// and sizes, created at its final size with its headers, and every file written into its
    /// slot (manifests from memory, blobs streamed by the client or copied from the layer cache),
    /// while a second thread hashes the layer in order behind them. Then configs, manifests,
    /// index.
    fn oci_layout(
        &self,
        out: &Path,
        platforms: &[Option<Platform>],
        epoch: u64,
    ) -> Result<Vec<registry::BlobOutcome>> {
        // Name -> bytes; a later tag file for the same name replaces an earlier one, as in a tree.
        let mut small: BTreeMap<String, &[u8]> = BTreeMap::new();
        for m in &self.plan.manifests {
            small.insert(tree_name(&flat::manifest_path(m.name, &m.digest))?, m.bytes);
        }
        for t in &self.plan.tags {
            small.insert(tree_name(&flat::tag_path(t.name, t.tag))?, t.bytes);
        }
        let blob_names: Vec<String> = self
            .plan
            .blobs
            .iter()
            .map(|b| tree_name(&flat::blob_path(&b.digest)))
            .collect::<Result<_>>()?;
        let files = small
            .iter()
            .map(|(name, bytes)| (name.as_str(), bytes.len() as u64))
            .chain(
                blob_names
                    .iter()
                    .zip(&self.plan.blobs)
                    .map(|(name, b)| (name.as_str(), b.size)),
            );
        let layout_err = CreateError::Layout;
        let entries = oci_out::layer_entries(files).map_err(layout_err)?;
        let layer_plan = oci_out::plan_layer(&entries, epoch).map_err(layout_err)?;
        let slots: HashMap<&str, &LayerSlot> =
            layer_plan.files().map(|s| (s.name.as_str(), s)).collect();
        let slot = |name: &str| {
            slots.get(name).copied().ok_or_else(|| {
                CreateError::Layout(OciOutError::BadName {
                    name: name.to_owned(),
                })
            })
        };
        let blobs_dir = oci_out::layout_blobs_dir(out).map_err(layout_err)?;
        let layer = LayerFile::create(&blobs_dir, &layer_plan).map_err(layout_err)?;
        for (name, bytes) in &small {
            layer.write_at(slot(name)?, bytes).map_err(layout_err)?;
        }
        // In layer order, so that the hashing pass behind them can keep moving.
        let mut blobs: Vec<(&PlannedBlob, &LayerSlot)> = self
            .plan
            .blobs
            .iter()
            .zip(&blob_names)
            .map(|(b, name)| Ok((b, slot(name)?)))
            .collect::<Result<_>>()?;
        blobs.sort_by_key(|(_, s)| s.data_offset);
        let gate = Arc::new(Gate::new(
            blobs.iter().map(|(_, s)| (s.data_offset, s.size)).collect(),
        ));

        let fetched = AtomicBool::new(false);
        let (filled, hashed) = std::thread::scope(|scope| {
            let hashing = scope.spawn(|| {
                let mut started = false;
                oci_out::hash_layer(
                    layer.file(),
                    layer.path(),
                    layer_plan.len,
                    &gate,
                    &mut |done| {
                        // Reported once the downloads' own progress is over.
                        if let Some(p) = self.progress
                            && fetched.load(Ordering::Relaxed)
                        {
                            if !started {
                                p.layout_started(layer_plan.len);
                                started = true;
                            }
                            p.layout_advanced(done);
                        }
                    },
                )
            });
            let filled = {
                // However filling ends (an error, a panic), the hashing pass must not wait for
                // slots that will never be filled.
                let _stop = AbortOnDrop(&gate);
                self.fill_slots(&layer, &blobs, &gate)
            };
            fetched.store(true, Ordering::Relaxed);
            let hashed = hashing
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (filled, hashed)
        });
        let outcomes = filled?;
        let (digest, size) = hashed.map_err(layout_err)?;
        layer.persist(&digest).map_err(layout_err)?;
        oci_out::write_layout_metadata(out, (digest, size), platforms, epoch)
            .map_err(layout_err)?;
        Ok(outcomes)
    }

    /// Fills the blobs' slots: streamed by the client straight into them, or, with a layer cache,
    /// downloaded there (what is missing) and copied into them (checked by the hashing pass).
    fn fill_slots(
        &self,
        layer: &LayerFile,
        blobs: &[(&PlannedBlob, &LayerSlot)],
        gate: &Arc<Gate>,
    ) -> Result<Vec<registry::BlobOutcome>> {
        let Some(dir) = self.layer_cache else {
            let file = layer
                .file()
                .try_clone()
                .map_err(|source| CreateError::Output {
                    path: layer.path().to_owned(),
                    source,
                })?;
            return self.runtime.block_on(fetch_into_slots(
                self.client,
                blobs,
                Arc::new(file),
                layer.path(),
                gate,
                self.jobs,
                self.blob_progress.clone(),
            ));
        };
        let outcomes = self.runtime.block_on(fetch_blobs(
            self.client,
            self.plan,
            |d| layer_cache_path(dir, d),
            self.jobs,
        ))?;
        par::map(blobs, |(b, slot)| {
            layer
                .copy_into(slot, &layer_cache_path(dir, &b.digest))
                .map(|()| gate.fill(slot.data_offset, Some(b.digest)))
                .map_err(|source| CreateError::LayerCacheCopy {
                    digest: b.digest,
                    source,
                })
        })
        .into_iter()
        .collect::<Result<Vec<()>>>()?;
        Ok(outcomes)
    }
}

/// Stops a hashing pass when dropped (a no-op once every slot is filled).
struct AbortOnDrop<'a>(&'a Gate);

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A tree path as a layer entry name (the paths are made of validated names, so UTF-8).
fn tree_name(path: &Path) -> Result<String> {
    path.to_str().map(ToOwned::to_owned).ok_or_else(|| {
        CreateError::Layout(OciOutError::NotUtf8 {
            path: path.to_owned(),
        })
    })
}

/// Streams each blob into its slot of the layer, at most `jobs` at a time, in the given (layer)
/// order, each verified by the client as it streams (size as bytes arrive, sha256 at the end) and
/// resumed at the right offset of its slot after a dropped connection. The first failure cancels
/// the rest.
async fn fetch_into_slots(
    client: &Client,
    blobs: &[(&PlannedBlob, &LayerSlot)],
    file: Arc<fs::File>,
    layer_path: &Path,
    gate: &Arc<Gate>,
    jobs: usize,
    progress: Option<Arc<dyn Progress>>,
) -> Result<Vec<registry::BlobOutcome>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (b, slot)) in blobs.iter().enumerate() {
        let repository = b.repository.clone();
        let digest = b.digest;
        let (cache_digest, image, what) = (b.digest, b.image.clone(), b.what.clone());
        let (offset, size) = (slot.data_offset, slot.size);
        let (client, limit, file, gate, progress) = (
            client.clone(),
            limit.clone(),
            file.clone(),
            gate.clone(),
            progress.clone(),
        );
        let path = layer_path.to_owned();
        // Spawned (not just polled together) so that several blobs are hashed on all the
        // runtime's threads.
        tasks.spawn(async move {
            // The semaphore is never closed, so acquiring only waits.
            let _permit = limit.acquire_owned().await;
            if let Some(p) = &progress {
                p.blob_started(&digest, Some(size));
            }
            let mut writer = SlotWriter::new(file, offset, size);
            let streamed = client
                .get_blob_to_writer(&repository, &digest, Some(size), &mut writer)
                .await
                .map_err(|source| CreateError::Blob {
                    image,
                    what,
                    digest: cache_digest,
                    source: Box::new(source),
                })?;
            writer
                .shutdown()
                .await
                .map_err(|source| CreateError::LayerWrite {
                    digest: cache_digest,
                    path: path.clone(),
                    source,
                })?;
            gate.fill(offset, None);
            if let Some(p) = &progress {
                p.blob_finished(&digest, true);
            }
            Ok::<_, CreateError>((
                i,
                registry::BlobOutcome {
                    digest,
                    path,
                    size: streamed,
                    downloaded: true,
                },
            ))
        });
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(e)) => {
                // Abort is asynchronous: wait until every other download is gone before the
                // caller removes the layer.
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                return Err(e);
            }
            Err(join) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Only abort() cancels, and nothing here calls it while joining.
                Err(_) => continue,
            },
        }
    }
    outcomes.sort_by_key(|(i, _)| *i);
    Ok(outcomes.into_iter().map(|(_, o)| o).collect())
}

/// Writes the plan's manifest and tag files into a new flat tree at `tree`.
fn write_manifests(tree: &Path, plan: &Plan<'_>) -> Result<FlatWriter> {
    let writer = FlatWriter::create(tree).map_err(CreateError::Tree)?;
    for m in &plan.manifests {
        writer
            .write_manifest(m.name, &m.digest, m.bytes)
            .map_err(CreateError::Tree)?;
    }
    for t in &plan.tags {
        writer
            .write_tag(t.name, t.tag, t.bytes)
            .map_err(CreateError::Tree)?;
    }
    Ok(writer)
}

/// Where the layer cache keeps a blob.
fn layer_cache_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(digest.hex())
}

/// Fetches the plan's blobs to `dest(digest)` (the tree's `blob/`, or the layer cache, where
/// verified copies already there are kept, not fetched). A failure names the image and the
/// blob's role in it, not only the repository the client knows.
async fn fetch_blobs(
    client: &Client,
    plan: &Plan<'_>,
    dest: impl Fn(&Digest) -> PathBuf,
    jobs: usize,
) -> Result<Vec<registry::BlobOutcome>> {
    let mut requests = Vec::with_capacity(plan.blobs.len());
    for b in &plan.blobs {
        requests.push(BlobRequest {
            repository: b.repository.clone(),
            digest: b.digest,
            size: Some(b.size),
            dest: dest(&b.digest),
        });
    }
    client
        .fetch_blobs_detailed(requests, jobs)
        .await
        .map_err(|failed| {
            let digest = failed.request.digest;
            let (image, what) = plan.blobs.iter().find(|b| b.digest == digest).map_or_else(
                || (failed.request.repository.to_string(), "blob".to_owned()),
                |b| (b.image.clone(), b.what.clone()),
            );
            CreateError::Blob {
                image,
                what,
                digest,
                source: Box::new(failed.error),
            }
        })
}

// ---------------------------------------------------------------------------------------------
// Publishing

/// `<P>.tmp-XXXX` beside the output (same file system, so the final rename is atomic), and the
/// parent directories this run had to create. Dropped without [`Staging::publish`]: the temp
/// directory is removed, and so are those parents if still empty. The directory is staged
/// (`imager-staging`): locked while it lives, swept by a later run into the same parent if this
/// process is killed, removed on SIGINT/SIGTERM.
struct Staging {
    /// Taken by `publish`.
    dir: Option<imager_staging::StagedDir>,
    path: PathBuf,
    created_parents: Vec<PathBuf>,
}

impl Staging {
    fn new(output: &Path) -> Result<Self> {
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| CreateError::Output {
                path: output.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a directory name"),
            })?;
        let parent = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut created_parents = Vec::new();
        let mut missing = Some(parent.as_path());
        while let Some(dir) = missing
            && !dir.exists()
        {
            created_parents.push(dir.to_owned());
            missing = dir.parent();
        }
        let mut staging = Self {
            dir: None,
            path: PathBuf::new(),
            created_parents,
        };
        // From here on, an error drops `staging`, which removes the parents it created.
        fs::create_dir_all(&parent).map_err(|source| CreateError::Output {
            path: parent.clone(),
            source,
        })?;
        let dir = imager_staging::StagedDir::create(&parent, &format!("{name}.tmp-")).map_err(
            |source| CreateError::Output {
                path: parent.clone(),
                source,
            },
        )?;
        staging.path = dir.path().to_owned();
        staging.dir = Some(dir);
        Ok(staging)
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs `result` (inside the temp directory) and renames it to `output`: atomically next to
    /// nothing, or, with `force`, exchanged with what is there, which is then removed.
    fn publish(mut self, result: &Path, output: &Path, force: bool) -> Result<()> {
        let out_err = |path: &Path| {
            let path = path.to_owned();
            move |source| CreateError::Output { path, source }
        };
        sync_tree(result).map_err(out_err(result))?;
        // Not while the signal cleanup removes the staged tree (it would go on removing what is
        // renamed to `output` meanwhile).
        let replaced = imager_staging::publishing(|| match rename_noreplace(result, output) {
            Ok(()) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !force {
                    return Err(CreateError::Exists {
                        path: output.to_owned(),
                    });
                }
                // Checked again: it may have been created since the run started.
                check_output(output, true)?;
                exchange(result, output).map_err(out_err(output))?;
                Ok(true)
            }
            Err(e) => Err(out_err(output)(e)),
        })?;
        if let Some(parent) = output.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(out_err(parent))?;
        }
        // Published: the parents stay. The old cache (now at `result`) goes with the temp dir.
        self.created_parents.clear();
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            dir.close().map_err(|source| CreateError::Output {
                path: if replaced { result.to_owned() } else { path },
                source,
            })?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        drop(self.dir.take());
        // Deepest first; remove_dir only removes empty directories, so nothing that appeared
        // there meanwhile is lost.
        for dir in &self.created_parents {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Flushes the file system holding `dir` (one call for the whole tree; a cache is written once
/// and published, so everything in it must be on disk before its name appears).
fn sync_tree(dir: &Path) -> io::Result<()> {
    let f = fs::File::open(dir)?;
    rustix::fs::syncfs(&f).map_err(io::Error::from)
}

/// `rename(from, to)` that fails with `AlreadyExists` instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            // A file system without RENAME_NOREPLACE: check, then rename (a plain rename would
            // only replace an empty directory, never a cache).
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
}

/// Swaps `a` and `b` atomically (`RENAME_EXCHANGE`); where the file system cannot, moves `b`
/// aside to `a`'s sibling first (a moment without `b`, but never a partial `b`).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            let aside = a.with_extension("old");
            fs::rename(b, &aside)?;
            fs::rename(a, b)?;
            fs::rename(&aside, a)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn image_lists() {
        let list = "# images\n\nalpine\n  ghcr.io/x/app:v1  # the app\nalpine:latest\n\n";
        assert_eq!(
            parse_image_list(list).unwrap(),
            [r("docker.io/library/alpine:latest"), r("ghcr.io/x/app:v1")]
        );
        let err = parse_image_list("alpine\n\nghcr.io/x/../y\n").unwrap_err();
        assert!(
            matches!(err, CreateError::ListLine { line: 3, .. }),
            "{err}"
        );
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(
            chain.contains("line 3") && chain.contains("\"..\""),
            "{chain}"
        );

        assert_eq!(
            parse_images(["alpine", " ", "busybox:1.36", "alpine"]).unwrap(),
            [r("alpine"), r("busybox:1.36")]
        );
        let err = parse_images(["alpine", "Bad/Name"]).unwrap_err();
        assert!(err.to_string().contains("\"Bad/Name\""), "{err}");
        assert!(parse_images(std::iter::empty()).unwrap().is_empty());
    }

    fn fetched(json: String) -> FetchedManifest {
        FetchedManifest {
            digest: Digest::of(json.as_bytes()),
            media_type: String::new(),
            bytes: json.into_bytes(),
        }
    }

    fn desc(d: &Digest, size: u64) -> String {
        format!(r#"{{"mediaType":"x","digest":"{d}","size":{size}}}"#)
    }

    fn image_manifest(config: (&Digest, u64), layers: &[(&Digest, u64)]) -> FetchedManifest {
        let layers: Vec<String> = layers.iter().map(|(d, s)| desc(d, *s)).collect();
        fetched(format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[{}]}}"#,
            crate::media::OCI_MANIFEST,
            desc(config.0, config.1),
            layers.join(",")
        ))
    }

    fn platform(s: &str) -> Option<Platform> {
        Some(Platform::parse(s).unwrap())
    }

    #[test]
    fn plan_shares_blobs_and_names_them() {
        let (shared, c1, c2, l1, l2) = (
            Digest::of(b"shared"),
            Digest::of(b"c1"),
            Digest::of(b"c2"),
            Digest::of(b"l1"),
            Digest::of(b"l2"),
        );
        let a = ResolvedImage {
            reference: r("ghcr.io/x/a:v1"),
            top: image_manifest((&c1, 10), &[(&shared, 100), (&l1, 50)]),
            children: vec![],
        };
        let amd = image_manifest((&c1, 10), &[(&shared, 100)]);
        let arm = image_manifest((&c2, 11), &[(&shared, 100), (&l2, 70)]);
        let index = fetched(format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#,
            crate::media::OCI_INDEX
        ));
        let b = ResolvedImage {
            reference: r(&format!("ghcr.io/x/b:v2@{}", index.digest)),
            top: index.clone(),
            children: vec![
                (platform("linux/amd64"), amd.clone()),
                (platform("linux/arm64"), arm.clone()),
            ],
        };
        let by_digest = ResolvedImage {
            reference: r(&format!("ghcr.io/x/a@{}", a.top.digest)),
            top: a.top.clone(),
            children: vec![],
        };
        let resolved = [a.clone(), b, by_digest];
        let p = plan(&resolved).unwrap();
        let blobs: Vec<(Digest, &str, &str)> = p
            .blobs
            .iter()
            .map(|b| (b.digest, b.image.as_str(), b.what.as_str()))
            .collect();
        let b_name = format!("ghcr.io/x/b:v2@{}", index.digest);
        assert_eq!(
            blobs,
            [
                (c1, "ghcr.io/x/a:v1", "config of the image"),
                (shared, "ghcr.io/x/a:v1", "layer 1 of the image"),
                (l1, "ghcr.io/x/a:v1", "layer 2 of the image"),
                (c2, b_name.as_str(), "config of the linux/arm64 image"),
                (l2, b_name.as_str(), "layer 2 of the linux/arm64 image"),
            ]
        );
        assert_eq!(p.blob_bytes(), 10 + 100 + 50 + 11 + 70);
        // a's manifest once although two references name it; b's index and both children.
        let manifests: Vec<(String, Digest)> = p
            .manifests
            .iter()
            .map(|m| (m.name.to_string(), m.digest))
            .collect();
        assert_eq!(
            manifests,
            [
                ("ghcr.io/x/a".to_owned(), a.top.digest),
                ("ghcr.io/x/b".to_owned(), index.digest),
                ("ghcr.io/x/b".to_owned(), amd.digest),
                ("ghcr.io/x/b".to_owned(), arm.digest),
            ]
        );
        // Tags for the tagged references only; b's tag file holds the index.
        let tags: Vec<(String, &str, Digest)> = p
            .tags
            .iter()
            .map(|t| (t.name.to_string(), t.tag, Digest::of(t.bytes)))
            .collect();
        assert_eq!(
            tags,
            [
                ("ghcr.io/x/a".to_owned(), "v1", a.top.digest),
                ("ghcr.io/x/b".to_owned(), "v2", index.digest),
            ]
        );
        assert_eq!(p.images[1].platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(p.images[1].blobs, 4);
        assert_eq!(p.images[1].bytes, 10 + 100 + 11 + 70);
    }

    #[test]
    fn plan_refuses_bad_manifests_and_size_conflicts() {
        let l = Digest::of(b"l");
        let c = Digest::of(b"c");
        let one = ResolvedImage {
            reference: r("ghcr.io/x/a:v1"),
            top: image_manifest((&c, 1), &[(&l, 5)]),
            children: vec![],
        };
        let other = ResolvedImage {
            reference: r("ghcr.io/x/b:v1"),
            top: image_manifest((&c, 1), &[(&l, 6)]),
            children: vec![],
        };
        let resolved = [one.clone(), other];
        let err = plan(&resolved).unwrap_err();
        assert!(
            matches!(
                &err,
                CreateError::BlobSizeConflict {
                    first: 5,
                    second: 6,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("ghcr.io/x/b:v1"), "{err}");
        let broken = ResolvedImage {
            reference: r("ghcr.io/x/c:v1"),
            top: fetched("{not json".to_owned()),
            children: vec![],
        };
        let resolved = [broken];
        let err = plan(&resolved).unwrap_err();
        assert!(matches!(err, CreateError::ManifestInvalid { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("ghcr.io/x/c:v1: manifest of the image sha256:")
        );
    }

    #[test]
    fn layout_platforms_follow_the_request() {
        let child = |p: &str| (platform(p), fetched("{}".to_owned()));
        let resolved = [
            ResolvedImage {
                reference: r("a"),
                top: fetched("{}".to_owned()),
                children: vec![child("linux/arm64"), child("linux/amd64")],
            },
            ResolvedImage {
                reference: r("b"),
                top: fetched("{}".to_owned()),
                children: vec![child("linux/amd64"), child("linux/arm/v7")],
            },
        ];
        let names = |sel: &PlatformSelection, res: &[ResolvedImage]| -> Vec<String> {
            layout_platforms(sel, res)
                .iter()
                .map(|p| p.as_ref().map_or("-".to_owned(), ToString::to_string))
                .collect()
        };
        let only = PlatformSelection::parse(["linux/amd64,linux/arm64"]).unwrap();
        assert_eq!(names(&only, &resolved), ["linux/amd64", "linux/arm64"]);
        assert_eq!(
            names(&PlatformSelection::All, &resolved),
            ["linux/arm64", "linux/amd64", "linux/arm/v7"]
        );
        assert_eq!(names(&PlatformSelection::All, &[]), ["-"]);
    }

    #[test]
    fn output_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cache");
        check_output(&p, false).unwrap();
        fs::create_dir(&p).unwrap();
        assert!(matches!(
            check_output(&p, false),
            Err(CreateError::Exists { .. })
        ));
        // Empty, or a cache: replaceable with force.
        check_output(&p, true).unwrap();
        fs::create_dir(p.join("blob")).unwrap();
        check_output(&p, true).unwrap();
        // Anything else is not replaced, even with force.
        let home = dir.path().join("home");
        fs::create_dir(&home).unwrap();
        fs::write(home.join(".bashrc"), b"").unwrap();
        assert!(matches!(
            check_output(&home, true),
            Err(CreateError::NotACache { .. })
        ));
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            check_output(&file, true),
            Err(CreateError::NotACache { .. })
        ));
    }

    #[test]
    fn staging_publishes_atomically_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new/deeper/cache");
        // Dropped without publishing: the temp dir and the parents it made are gone.
        let s = Staging::new(&out).unwrap();
        assert!(s.path().starts_with(dir.path().join("new/deeper")));
        assert!(
            s.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cache.tmp-")
        );
        drop(s);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

        // Published next to nothing.
        let s = Staging::new(&out).unwrap();
        let result = s.path().join("tree");
        fs::create_dir_all(result.join("blob")).unwrap();
        fs::write(result.join("blob/one"), b"1").unwrap();
        s.publish(&result, &out, false).unwrap();
        assert_eq!(fs::read(out.join("blob/one")).unwrap(), b"1");
        let parent = dir.path().join("new/deeper");
        assert_eq!(
            fs::read_dir(&parent).unwrap().count(),
            1,
            "no temp dir left"
        );

        // Over an existing cache: refused without force, exchanged with it.
        let s = Staging::new(&out).unwrap();
        let result = s.path().join("tree");
        fs::create_dir_all(result.join("blob")).unwrap();
        fs::write(result.join("blob/two"), b"2").unwrap();
        let err = s.publish(&result, &out, false).unwrap_err();
        assert!(matches!(err, CreateError::Exists { .. }), "{err}");
        assert_eq!(fs::read_dir(&parent).unwrap().count(), 1);
        let s = Staging::new(&out).unwrap();
        let result = s.path().join("tree");
        fs::create_dir_all(result.join("blob")).unwrap();
        fs::write(result.join("blob/two"), b"2").unwrap();
        s.publish(&result, &out, true).unwrap();
        assert!(!out.join("blob/one").exists());
        assert_eq!(fs::read(out.join("blob/two")).unwrap(), b"2");
        assert_eq!(fs::read_dir(&parent).unwrap().count(), 1);
    }
}
