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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::LayoutError;
use crate::digest::Digest;
use crate::flat::{self, Inventory, RepoDir, StrayKind};
use crate::layout::MAX_NESTING;
use crate::manifest::{self, Manifest};
use crate::model::Cache;
use crate::reference::is_tag;
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
    Ok(Structure { problems, unusable })
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
}
