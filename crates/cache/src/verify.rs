//! Checks a flat tree the way a node will use it: every blob re-hashed, every manifest parsed,
//! every reference resolvable, every descriptor's target present with the announced size.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::check;
use crate::digest::Digest;
use crate::flat::{FlatError, Inventory, RepoDir};
use crate::manifest::{self, MAX_MANIFEST_SIZE, Manifest};
use crate::model::{Cache, Loaded};
use crate::{LayoutError, ReadOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The cache still serves every image it names; something is odd or wasteful.
    Warning,
    /// A node would fail to serve (or would serve wrong bytes for) some image.
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// A file or directory the format has no place for.
    UnexpectedEntry,
    /// A symlink, device, FIFO or socket.
    NotARegularFile,
    /// A registry, repository, tag or digest name that breaks its grammar.
    BadName,
    /// A file that could not be read.
    Unreadable,
    /// `blob/sha256-X` does not hash to X.
    BlobDigestMismatch,
    /// `digest/sha256-X` does not hash to X.
    ManifestDigestMismatch,
    ManifestTooLarge,
    /// Not JSON, or not an index / image manifest.
    ManifestInvalid,
    /// A config or layer of a present image manifest is not in `blob/`.
    MissingBlob,
    /// A present file's size differs from its descriptor's.
    SizeMismatch,
    /// `reference/<tag>` has no `digest/` file with the same content.
    UnknownReferenceDigest,
    /// An index child that is not cached (normal for platforms that were not requested).
    MissingChildManifest,
    /// An index none of whose images is cached: a node resolves its tag, then fails on every
    /// platform ([`crate::check::unusable_images`]).
    NoCachedImage,
    /// A blob no cached manifest names.
    UnreferencedBlob,
    /// No image at all.
    Empty,
}

impl ProblemKind {
    pub fn severity(self) -> Severity {
        match self {
            Self::UnexpectedEntry
            | Self::MissingChildManifest
            | Self::UnreferencedBlob
            | Self::Empty => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub kind: ProblemKind,
    /// Relative to the cache root.
    pub path: PathBuf,
    pub detail: String,
}

impl Problem {
    pub(crate) fn new(kind: ProblemKind, path: &Path, detail: impl Into<String>) -> Self {
        Self {
            severity: kind.severity(),
            kind,
            path: path.to_owned(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{sev}: {}: {}", self.path.display(), self.detail)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub repositories: u64,
    pub tags: u64,
    pub manifests: u64,
    pub manifest_bytes: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// No errors (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors().next().is_none()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
    }

    pub fn has(&self, kind: ProblemKind) -> bool {
        self.problems.iter().any(|p| p.kind == kind)
    }

    fn push(&mut self, kind: ProblemKind, path: &Path, detail: impl Into<String>) {
        self.problems.push(Problem::new(kind, path, detail));
    }
}

/// Verifies a flat tree on disk ([`verify`] of the cache opened there).
pub fn verify_flat(root: &Path) -> Result<VerifyReport, LayoutError> {
    verify(&Cache::open(root, &ReadOptions::default())?)
}

/// Verifies a cache in any form, in place: every blob re-hashed (on every core, or in one pass
/// over a compressed layer), every manifest hashed and parsed. Fails only if the cache cannot be
/// read at all; everything wrong inside it is a [`Problem`] in the report.
pub fn verify(cache: &Cache) -> Result<VerifyReport, LayoutError> {
    let inv = cache.inventory();
    let loaded = cache.load(&|e| e.path.starts_with("manifests/"), &|e| {
        e.path.starts_with("blob/")
    })?;
    let mut report = VerifyReport {
        problems: check::name_problems(&inv),
        ..VerifyReport::default()
    };
    // Reported once, as an error, instead of a warning per missing child.
    let unusable = check::unusable_images(&inv, &|p| loaded.small_bytes(p));
    for u in &unusable {
        let detail = u.to_string();
        // The names lead the message; the path says which file.
        report.push(ProblemKind::NoCachedImage, &u.index, detail);
    }
    let unusable: HashSet<&Path> = unusable.iter().map(|u| u.index.as_path()).collect();

    let blobs = check_blobs(&loaded, &inv, &mut report);
    let mut referenced: HashSet<Digest> = HashSet::new();
    for repo in &inv.repos {
        check_repo(
            &loaded,
            repo,
            &blobs,
            &unusable,
            &mut referenced,
            &mut report,
        );
    }
    for b in &inv.blobs {
        if !referenced.contains(&b.digest) {
            report.push(
                ProblemKind::UnreferencedBlob,
                &b.path,
                "no cached image manifest names this blob",
            );
        }
    }
    if inv.repos.is_empty() {
        report.push(
            ProblemKind::Empty,
            Path::new(""),
            "the cache holds no image",
        );
    }
    report.repositories = inv.repos.len() as u64;
    // Errors first, then by path: what to fix first reads first.
    report.problems.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.path.cmp(&b.path))
            .then(a.kind.cmp(&b.kind))
    });
    Ok(report)
}

/// Checks every blob's hash against its name. Returns the sizes of the blobs present, by digest.
fn check_blobs(
    loaded: &Loaded,
    inv: &Inventory,
    report: &mut VerifyReport,
) -> HashMap<Digest, u64> {
    let mut present = HashMap::new();
    for b in &inv.blobs {
        let key = b.path.to_string_lossy();
        match loaded.hashes.get(key.as_ref()) {
            Some(Ok((actual, size))) => {
                report.blobs += 1;
                report.blob_bytes += size;
                if *actual != b.digest {
                    report.push(
                        ProblemKind::BlobDigestMismatch,
                        &b.path,
                        format!("content hashes to {actual}"),
                    );
                }
                present.insert(b.digest, *size);
            }
            Some(Err(e)) => report.push(ProblemKind::Unreadable, &b.path, e.to_string()),
            None => report.push(ProblemKind::Unreadable, &b.path, "not read"),
        }
    }
    present
}

fn check_repo(
    loaded: &Loaded,
    repo: &RepoDir,
    blobs: &HashMap<Digest, u64>,
    unusable: &HashSet<&Path>,
    referenced: &mut HashSet<Digest>,
    report: &mut VerifyReport,
) {
    // Every digest/ file: hashes to its name, parses.
    let mut parsed: BTreeMap<Digest, (&Path, Option<Manifest>)> = BTreeMap::new();
    let mut sizes: HashMap<Digest, u64> = HashMap::new();
    for m in &repo.manifests {
        report.manifests += 1;
        report.manifest_bytes += m.size;
        sizes.insert(m.digest, m.size);
        let bytes = match read_manifest(loaded, &m.path, report) {
            Some(b) => b,
            None => {
                parsed.insert(m.digest, (&m.path, None));
                continue;
            }
        };
        let actual = Digest::of(&bytes);
        if actual != m.digest {
            report.push(
                ProblemKind::ManifestDigestMismatch,
                &m.path,
                format!("content hashes to {actual}"),
            );
        }
        let manifest = match manifest::parse(&bytes) {
            Ok(man) => Some(man),
            Err(e) => {
                report.push(ProblemKind::ManifestInvalid, &m.path, error_chain(&e));
                None
            }
        };
        parsed.insert(m.digest, (&m.path, manifest));
    }

    // Every reference/ file: its bytes are one of the digest/ files (its name is checked with
    // the other names).
    for t in &repo.tags {
        report.tags += 1;
        let Some(bytes) = read_manifest(loaded, &t.path, report) else {
            continue;
        };
        let d = Digest::of(&bytes);
        if !parsed.contains_key(&d) {
            report.push(
                ProblemKind::UnknownReferenceDigest,
                &t.path,
                format!(
                    "resolves to {d}, which has no digest/{} file",
                    d.file_name()
                ),
            );
        }
    }

    // Every manifest's targets.
    for (path, manifest) in parsed.values() {
        match manifest {
            Some(Manifest::Index(index)) => {
                for child in &index.manifests {
                    let platform = child
                        .platform
                        .as_ref()
                        .map_or(String::new(), |p| format!(" ({p})"));
                    match sizes.get(&child.digest) {
                        None if unusable.contains(path) => {}
                        None => report.push(
                            ProblemKind::MissingChildManifest,
                            path,
                            format!("child manifest {}{platform} is not cached", child.digest),
                        ),
                        Some(&size) if size != child.size => report.push(
                            ProblemKind::SizeMismatch,
                            path,
                            format!(
                                "child manifest {}{platform} is {size} bytes, the index says {}",
                                child.digest, child.size
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
            Some(Manifest::Image(image)) => {
                for (i, desc) in image.blobs().enumerate() {
                    referenced.insert(desc.digest);
                    let part = if i == 0 {
                        "config".to_owned()
                    } else {
                        format!("layer {i}")
                    };
                    match blobs.get(&desc.digest) {
                        None => report.push(
                            ProblemKind::MissingBlob,
                            path,
                            format!("{part} {} is not in blob/", desc.digest),
                        ),
                        Some(&size) if size != desc.size => report.push(
                            ProblemKind::SizeMismatch,
                            path,
                            format!(
                                "{part} {} is {size} bytes, the manifest says {}",
                                desc.digest, desc.size
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
            None => {}
        }
    }
}

/// Reads a manifest-sized file, reporting (not failing) when it cannot be.
fn read_manifest(loaded: &Loaded, rel: &Path, report: &mut VerifyReport) -> Option<Vec<u8>> {
    let Some(read) = loaded.small.get(rel.to_string_lossy().as_ref()) else {
        report.push(ProblemKind::Unreadable, rel, "not read");
        return None;
    };
    match read {
        Ok(b) => Some(b.clone()),
        Err(FlatError::ManifestTooLarge { size, .. }) => {
            let size = *size;
            report.push(
                ProblemKind::ManifestTooLarge,
                rel,
                format!("{size} bytes, more than the {MAX_MANIFEST_SIZE}-byte limit"),
            );
            None
        }
        Err(e) => {
            report.push(ProblemKind::Unreadable, rel, error_chain(e));
            None
        }
    }
}

/// An error and its causes on one line, for a report's detail.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
