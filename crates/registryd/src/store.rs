//! Finding what a request names in the roots, and making sure it is what was asked for.
//!
//! Roots are tried in order and the first good copy wins. A copy that is there but wrong (a tag
//! whose bytes are no manifest of the repository, a manifest or blob whose content is not its
//! digest, a blob whose size differs from what the manifests say, a symlink, a special file) is
//! logged and skipped; when no root has a good copy and at least one had a bad one, the answer is
//! a 500 naming the digest, never the bad bytes.
//!
//! Manifests are small (at most 4 MiB, read whole) and hashed on every request. Blobs can be GiB:
//! their size is checked on every request (against the size the manifests give, learned from
//! every manifest read), their content is hashed once per copy per process, and the verdict is
//! kept for that copy (the file's device, inode, size, mtime, ctime, and where in it the blob
//! lies); a replaced or modified file is hashed again. Blobs are then served from the very
//! descriptor that was checked, so a rename between check and read cannot swap the bytes.
//!
//! A [`Root::Tree`] is read through [`fsafe`] on every request. A [`Root::Cache`] was listed
//! when it was opened: a path is found among its entries (a binary search), a manifest is read
//! from the runs it lies in, and a blob is served from the source file (the ISO, the layer blob,
//! the layout's blob file) at the entry's offset. A blob an ISO stores in several separate runs
//! (a multi-extent file whose extents are not adjacent; no writer we know makes one) is
//! answered as damaged in that root rather than served piecewise.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use http::StatusCode;
use imager_cache::flat::{
    DIGEST_DIR, MANIFESTS_DIR, REFERENCE_DIR, blob_path, manifest_path, repo_dir, tag_path,
};
use imager_cache::{Cache, Entry};
use imager_oci::manifest::{self, MAX_MANIFEST_SIZE, Manifest};
use imager_oci::reference::is_tag;
use imager_oci::{Digest, ImageName};
use sha2::Digest as _;
use tokio::sync::{OnceCell, Semaphore};

use crate::error::{ApiError, ErrorCode};
use crate::fsafe::{self, Kind, OpenError};
use crate::pool::IoPool;
use crate::route::{ManifestRef, Repo, candidates};
use crate::{Log, Root};

/// Hashing reads in pieces of this size; one buffer per blob being hashed.
const HASH_BUF: usize = 256 << 10;

/// A manifest found and checked.
#[derive(Debug)]
pub struct ManifestHit {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
}

/// A blob found and checked: the open file it was checked through, and where in it the blob
/// lies (`offset..offset + len`: all of a tree's file; an entry's run of an ISO or a layer blob).
#[derive(Debug)]
pub struct BlobHit {
    pub file: File,
    pub offset: u64,
    pub len: u64,
}

/// Which file a hash verdict is about. A rename (the ISO-to-disk copy writes `name.tmp` and
/// renames) gives a new inode; a write in place changes size, mtime or ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Which bytes a hash verdict is about: a run of a file. Two entries of one ISO are two places
/// of one file, so the file alone would not tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    file: FileId,
    offset: u64,
    len: u64,
}

#[derive(Debug, Clone, Copy)]
struct Verdict {
    place: Place,
    /// What the bytes hashed to.
    actual: Digest,
}

/// Root index and digest; the verdict then says which place it is about.
type VerdictKey = (usize, Digest);

/// Why a root's copy was not served.
enum Miss {
    Absent,
    Damaged(String),
}

impl From<OpenError> for Miss {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::NotFound => Self::Absent,
            e => Self::Damaged(e.to_string()),
        }
    }
}

impl From<io::Error> for Miss {
    fn from(e: io::Error) -> Self {
        Self::Damaged(e.to_string())
    }
}

/// A root as the store reads it.
#[derive(Debug)]
enum Served {
    Tree(PathBuf),
    Cache {
        cache: Arc<Cache>,
        /// The directories under `manifests/` (registries), listed once: they are fixed.
        registry_dirs: Vec<String>,
    },
}

impl Served {
    fn new(root: Root) -> Self {
        match root {
            Root::Tree(path) => Self::Tree(path),
            Root::Cache(cache) => {
                let mut dirs: Vec<String> = under(&cache, MANIFESTS_DIR)
                    .filter_map(|(_, rest)| Some(rest.split_once('/')?.0.to_owned()))
                    .collect();
                dirs.dedup();
                Self::Cache {
                    cache,
                    registry_dirs: dirs,
                }
            }
        }
    }

    fn path(&self) -> &Path {
        match self {
            Self::Tree(path) => path,
            Self::Cache { cache, .. } => cache.input(),
        }
    }

    /// The registry directories under `manifests/`.
    fn registry_dirs(&self) -> Result<Vec<String>, OpenError> {
        match self {
            Self::Tree(root) => Ok(fsafe::list_dir(root, Path::new(MANIFESTS_DIR))?
                .into_iter()
                .filter(|(_, kind)| *kind == Kind::Dir)
                .map(|(name, _)| name)
                .collect()),
            Self::Cache { registry_dirs, .. } => Ok(registry_dirs.clone()),
        }
    }

    /// A whole manifest-sized file, refused over `limit` bytes without reading it.
    fn read_small(&self, rel: &Path, limit: u64) -> Result<Vec<u8>, OpenError> {
        match self {
            Self::Tree(root) => fsafe::read_small(root, rel, limit),
            Self::Cache { cache, .. } => {
                let entry = entry(cache, rel)?;
                if entry.size > limit {
                    return Err(OpenError::TooLarge {
                        size: entry.size,
                        limit,
                    });
                }
                let mut bytes = Vec::with_capacity(entry.size as usize);
                // The reader stops at the entry's end and fails if the source ends before it.
                cache.open_entry(entry)?.read_to_end(&mut bytes)?;
                Ok(bytes)
            }
        }
    }

    /// The size of a file.
    fn len(&self, rel: &Path) -> Result<u64, OpenError> {
        match self {
            Self::Tree(root) => Ok(fsafe::open_file(root, rel)?.metadata()?.len()),
            Self::Cache { cache, .. } => Ok(entry(cache, rel)?.size),
        }
    }

    /// Whether `rel` is a directory (in a cache: whether any entry lies below it).
    fn has_dir(&self, rel: &Path) -> bool {
        match self {
            Self::Tree(root) => fsafe::open_dir(root, rel).is_ok(),
            Self::Cache { cache, .. } => rel
                .to_str()
                .is_some_and(|dir| under(cache, dir).next().is_some()),
        }
    }

    /// The names of the regular files directly in the directory `rel`.
    fn files_in(&self, rel: &Path) -> Result<Vec<String>, OpenError> {
        match self {
            Self::Tree(root) => Ok(fsafe::list_dir(root, rel)?
                .into_iter()
                .filter(|(_, kind)| *kind == Kind::File)
                .map(|(name, _)| name)
                .collect()),
            Self::Cache { cache, .. } => {
                let dir = rel.to_str().ok_or(OpenError::NotFound)?;
                Ok(under(cache, dir)
                    .filter(|(_, rest)| !rest.contains('/'))
                    .map(|(_, rest)| rest.to_owned())
                    .collect())
            }
        }
    }

    /// Opens a blob's copy for checking and sending: the file and where in it the blob lies.
    fn open_blob(&self, digest: &Digest) -> Result<(File, Place), Miss> {
        let rel = blob_path(digest);
        match self {
            Self::Tree(root) => {
                let file = fsafe::open_file(root, &rel)?;
                let id = FileId::of(&file.metadata()?);
                let place = Place {
                    file: id,
                    offset: 0,
                    len: id.len,
                };
                Ok((file, place))
            }
            Self::Cache { cache, .. } => {
                let entry = entry(cache, &rel)?;
                let Some((source, runs)) = cache.pieces(entry) else {
                    return Err(Miss::Damaged(
                        "it lies in a compressed layer, which has no random access".to_owned(),
                    ));
                };
                let offset = match runs[..] {
                    [] => 0,
                    [(offset, _)] => offset,
                    _ => {
                        return Err(Miss::Damaged(format!(
                            "it lies in {} separate runs of {}; a blob is served from one run",
                            runs.len(),
                            source.display()
                        )));
                    }
                };
                let file = open_source(source)
                    .map_err(|e| Miss::Damaged(format!("{}: {e}", source.display())))?;
                let id = FileId::of(&file.metadata()?);
                if offset
                    .checked_add(entry.size)
                    .is_none_or(|end| end > id.len)
                {
                    return Err(Miss::Damaged(format!(
                        "{} is {} bytes, too short for its {} bytes at offset {offset}: it \
                         changed since the cache was opened",
                        source.display(),
                        id.len,
                        entry.size
                    )));
                }
                let place = Place {
                    file: id,
                    offset,
                    len: entry.size,
                };
                Ok((file, place))
            }
        }
    }
}

/// The entry at `rel` of a cache.
fn entry<'a>(cache: &'a Cache, rel: &Path) -> Result<&'a Entry, OpenError> {
    rel.to_str()
        .and_then(|p| cache.get(p))
        .ok_or(OpenError::NotFound)
}

/// The entries below the directory `dir` (no trailing `/`), with their paths relative to it.
/// Entries are sorted by path, so those sharing a prefix are one contiguous run.
fn under<'a>(cache: &'a Cache, dir: &str) -> impl Iterator<Item = (&'a Entry, &'a str)> {
    let prefix = format!("{dir}/");
    let entries = cache.entries();
    let start = entries.partition_point(|e| e.path.as_str() < prefix.as_str());
    entries[start..]
        .iter()
        .map_while(move |e| e.path.strip_prefix(&prefix).map(|rest| (e, rest)))
}

/// Opens a cache's source file (an ISO, a layer blob, a layout's blob file). NONBLOCK: a FIFO
/// put where the file was must not hang the request; it is refused as not regular.
fn open_source(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::other("is not a regular file"));
    }
    Ok(file)
}

#[derive(Debug)]
pub struct Store {
    roots: Vec<Served>,
    /// Blob sizes as the manifests read so far give them (config and layers of image manifests).
    sizes: RwLock<HashMap<Digest, u64>>,
    /// Per root and digest, the hash verdict; the cell makes concurrent first requests for one
    /// blob wait for a single hashing instead of each reading the whole copy.
    verdicts: Mutex<HashMap<VerdictKey, Arc<OnceCell<Verdict>>>>,
    /// Hashing is CPU and disk bound: at most one blob per core at a time, on Tokio's blocking
    /// pool (hashing is rare, and would hold an I/O thread for seconds).
    hashing: Semaphore,
    /// Where files are opened and read.
    pool: IoPool,
    log: Log,
}

impl Store {
    pub fn new(roots: Vec<Root>, pool: IoPool, log: Log) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            roots: roots.into_iter().map(Served::new).collect(),
            sizes: RwLock::default(),
            verdicts: Mutex::default(),
            hashing: Semaphore::new(cores),
            pool,
            log,
        }
    }

    pub fn pool(&self) -> &IoPool {
        &self.pool
    }

    fn damaged(&self, root: usize, what: &str, why: &str) {
        self.log.line(format!(
            "registryd: root {} ({}): {what}: {why}; not served from this root",
            root + 1,
            self.roots[root].path().display()
        ));
    }

    /// The names a repository stands for in one root (see [`candidates`]).
    fn names(&self, root: usize, repo: &Repo) -> Vec<ImageName> {
        match repo {
            Repo::Named(name) => vec![name.clone()],
            Repo::Path(path) => match self.roots[root].registry_dirs() {
                Ok(dirs) => candidates(path, &dirs),
                Err(OpenError::NotFound) => Vec::new(),
                Err(e) => {
                    self.damaged(root, MANIFESTS_DIR, &e.to_string());
                    Vec::new()
                }
            },
        }
    }

    /// A manifest by tag or digest: the first good copy in root order (and, without `ns`, in
    /// registry order within a root).
    pub fn manifest(&self, repo: &Repo, reference: &ManifestRef) -> Result<ManifestHit, ApiError> {
        let mut damaged = false;
        for root in 0..self.roots.len() {
            for name in self.names(root, repo) {
                match self.manifest_in(root, &name, reference) {
                    Ok((hit, parsed)) => {
                        self.learn_sizes(&parsed);
                        return Ok(hit);
                    }
                    Err(Miss::Absent) => {}
                    Err(Miss::Damaged(why)) => {
                        damaged = true;
                        let what = match reference {
                            ManifestRef::Tag(t) => format!("manifest {name}:{t}"),
                            ManifestRef::Digest(d) => format!("manifest {name}@{d}"),
                        };
                        self.damaged(root, &what, &why);
                    }
                }
            }
        }
        let what = match reference {
            ManifestRef::Tag(t) => format!("tag {t:?}"),
            ManifestRef::Digest(d) => d.to_string(),
        };
        Err(if damaged {
            damaged_everywhere(format!("manifest {what}"))
        } else {
            ApiError::not_found(
                ErrorCode::ManifestUnknown,
                format!(
                    "manifest {what} of {} is not in the image cache",
                    repo_text(repo)
                ),
            )
        })
    }

    fn manifest_in(
        &self,
        root: usize,
        name: &ImageName,
        reference: &ManifestRef,
    ) -> Result<(ManifestHit, Manifest), Miss> {
        let served = &self.roots[root];
        let (bytes, digest) = match reference {
            ManifestRef::Tag(tag) => {
                let bytes = served.read_small(&tag_path(name, tag), MAX_MANIFEST_SIZE)?;
                let digest = Digest::of(&bytes);
                // The tag file must be one of the repository's manifests (its `digest/` file
                // by that digest), or it is a stray or half-written file, not a tag.
                match served.len(&manifest_path(name, &digest)) {
                    Ok(len) if len == bytes.len() as u64 => {}
                    Ok(_) | Err(OpenError::NotFound) => {
                        return Err(Miss::Damaged(format!(
                            "the tag file's content is {digest}, which is not a digest/ file of \
                             the repository"
                        )));
                    }
                    Err(e) => {
                        return Err(Miss::Damaged(format!("digest/ file of {digest}: {e}")));
                    }
                }
                (bytes, digest)
            }
            ManifestRef::Digest(digest) => {
                let bytes = served.read_small(&manifest_path(name, digest), MAX_MANIFEST_SIZE)?;
                let actual = Digest::of(&bytes);
                if actual != *digest {
                    return Err(Miss::Damaged(format!("the file's content is {actual}")));
                }
                (bytes, *digest)
            }
        };
        let parsed = manifest::parse(&bytes).map_err(|e| {
            Miss::Damaged(format!(
                "{digest} is not a manifest this server serves: {e}"
            ))
        })?;
        let hit = ManifestHit {
            media_type: parsed.media_type().to_owned(),
            bytes,
            digest,
        };
        Ok((hit, parsed))
    }

    /// Records the sizes an image manifest gives its config and layers (the first size seen for
    /// a digest stays: a manifest that disagrees describes an image no client could pull).
    fn learn_sizes(&self, parsed: &Manifest) {
        let Manifest::Image(image) = parsed else {
            return;
        };
        let known =
            |sizes: &HashMap<Digest, u64>| image.blobs().all(|d| sizes.contains_key(&d.digest));
        // Most manifests served were seen before: a read lock decides that.
        if self.sizes.read().is_ok_and(|s| known(&s)) {
            return;
        }
        if let Ok(mut sizes) = self.sizes.write() {
            for d in image.blobs() {
                sizes.entry(d.digest).or_insert(d.size);
            }
        }
    }

    /// Reads every manifest of every root once, for the sizes of their blobs: so that the size
    /// check has something to compare with from the first request on, even for a client that
    /// read its manifests from an earlier run of the server. Runs in the background at start.
    pub fn learn_all_sizes(&self) {
        for (i, served) in self.roots.iter().enumerate() {
            let inventory = match served {
                Served::Tree(root) => match imager_cache::flat::scan(root) {
                    Ok(inv) => inv,
                    Err(e) => {
                        self.damaged(i, "listing the cache", &e.to_string());
                        continue;
                    }
                },
                Served::Cache { cache, .. } => cache.inventory(),
            };
            for repo in &inventory.repos {
                for m in &repo.manifests {
                    let Ok(bytes) = served.read_small(&m.path, MAX_MANIFEST_SIZE) else {
                        continue;
                    };
                    if Digest::of(&bytes) != m.digest {
                        continue;
                    }
                    if let Ok(parsed) = manifest::parse(&bytes) {
                        self.learn_sizes(&parsed);
                    }
                }
            }
        }
    }

    fn expected_size(&self, digest: &Digest) -> Option<u64> {
        self.sizes.read().ok()?.get(digest).copied()
    }

    /// A blob: the first root whose copy has the right size and content.
    pub async fn blob(self: &Arc<Self>, digest: Digest) -> Result<BlobHit, ApiError> {
        let mut damaged = false;
        for root in 0..self.roots.len() {
            let this = Arc::clone(self);
            let opened = self
                .pool
                .run(move || this.roots[root].open_blob(&digest))
                .await
                .map_err(internal)?;
            let what = format!("blob {digest}");
            let (file, place) = match opened {
                Ok(x) => x,
                Err(Miss::Absent) => continue,
                Err(Miss::Damaged(why)) => {
                    damaged = true;
                    self.damaged(root, &what, &why);
                    continue;
                }
            };
            if let Some(expected) = self.expected_size(&digest)
                && expected != place.len
            {
                damaged = true;
                let why = format!("{} bytes, but its manifest says {expected}", place.len);
                self.damaged(root, &what, &why);
                continue;
            }
            match self.content_digest(root, digest, &file, place).await {
                Ok(actual) if actual == digest => {
                    return Ok(BlobHit {
                        file,
                        offset: place.offset,
                        len: place.len,
                    });
                }
                Ok(actual) => {
                    damaged = true;
                    self.damaged(root, &what, &format!("the file's content is {actual}"));
                }
                Err(e) => {
                    damaged = true;
                    self.damaged(root, &what, &format!("reading it: {e}"));
                }
            }
        }
        Err(if damaged {
            damaged_everywhere(format!("blob {digest}"))
        } else {
            ApiError::not_found(
                ErrorCode::BlobUnknown,
                format!("blob {digest} is not in the image cache"),
            )
        })
    }

    /// What the blob's bytes at `place` of this open file hash to, computed once per place (see
    /// [`FileId`]).
    async fn content_digest(
        &self,
        root: usize,
        digest: Digest,
        file: &File,
        place: Place,
    ) -> io::Result<Digest> {
        if place.len == 0 {
            return Ok(Digest::of(b""));
        }
        let key = (root, digest);
        // Twice at most: a verdict about a file since replaced is dropped and redone once.
        for _ in 0..2 {
            let cell = {
                let mut map = self.verdicts.lock().map_err(|_| poisoned())?;
                Arc::clone(map.entry(key).or_default())
            };
            let verdict = cell
                .get_or_try_init(|| async {
                    let actual = self.hash(file, place).await?;
                    Ok::<_, io::Error>(Verdict { place, actual })
                })
                .await?;
            if verdict.place == place {
                return Ok(verdict.actual);
            }
            let mut map = self.verdicts.lock().map_err(|_| poisoned())?;
            if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                map.remove(&key);
            }
        }
        // Replaced again while being checked: check this one without keeping the verdict.
        self.hash(file, place).await
    }

    async fn hash(&self, file: &File, place: Place) -> io::Result<Digest> {
        let _permit = self.hashing.acquire().await.map_err(io::Error::other)?;
        let file = file.try_clone()?;
        tokio::task::spawn_blocking(move || hash_range(&file, place.offset, place.len))
            .await
            .map_err(io::Error::other)?
    }

    /// The tags of a repository, from every root: with `ns`, of that name; without, of the
    /// first name (root order, then registry order) whose repository directory holds a
    /// `reference/` or `digest/` directory; `NAME_UNKNOWN` if no root has the repository.
    pub fn tags(&self, repo: &Repo) -> Result<(ImageName, BTreeSet<String>), ApiError> {
        let has_repo = |served: &Served, name: &ImageName| {
            [REFERENCE_DIR, DIGEST_DIR]
                .iter()
                .any(|leaf| served.has_dir(&repo_dir(name).join(leaf)))
        };
        let name = (0..self.roots.len()).find_map(|root| {
            self.names(root, repo)
                .into_iter()
                .find(|name| has_repo(&self.roots[root], name))
        });
        let Some(name) = name else {
            return Err(ApiError::not_found(
                ErrorCode::NameUnknown,
                format!("repository {} is not in the image cache", repo_text(repo)),
            ));
        };
        let mut tags = BTreeSet::new();
        let dir = repo_dir(&name).join(REFERENCE_DIR);
        for (i, served) in self.roots.iter().enumerate() {
            match served.files_in(&dir) {
                Ok(files) => tags.extend(files.into_iter().filter(|tag| is_tag(tag))),
                Err(OpenError::NotFound) => {}
                Err(e) => self.damaged(i, &format!("tags of {name}"), &e.to_string()),
            }
        }
        Ok((name, tags))
    }
}

fn repo_text(repo: &Repo) -> String {
    match repo {
        Repo::Named(name) => name.to_string(),
        Repo::Path(path) => format!("{path:?}"),
    }
}

fn damaged_everywhere(what: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unknown,
        format!(
            "{what} is damaged in every root of the image cache that has it (see the server log)"
        ),
    )
}

pub fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unknown,
        format!("internal error: {e}"),
    )
}

fn poisoned() -> io::Error {
    io::Error::other("a lock was poisoned by a panic")
}

/// sha256 of `len` bytes of a file from `offset`, with positioned reads (the descriptor's
/// offset is left alone); a file that ends before them is an error, not a shorter hash.
fn hash_range(file: &File, offset: u64, len: u64) -> io::Result<Digest> {
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; HASH_BUF];
    let mut done = 0u64;
    while done < len {
        let want = buf
            .len()
            .min(usize::try_from(len - done).unwrap_or(usize::MAX));
        match file.read_at(&mut buf[..want], offset + done) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                hasher.update(&buf[..n]);
                done += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // `Digest` is built from its text form: imager-cache keeps the bytes private.
    Digest::parse(&format!("sha256:{}", hex::encode(hasher.finalize()))).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hash_range_matches_digest_of() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..(HASH_BUF * 2 + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let len = data.len() as u64;
        assert_eq!(hash_range(&f, 0, len).unwrap(), Digest::of(&data));
        assert_eq!(
            hash_range(&f, 5, HASH_BUF as u64 + 3).unwrap(),
            Digest::of(&data[5..HASH_BUF + 8])
        );
        let past = hash_range(&f, 1, len).unwrap_err();
        assert_eq!(past.kind(), io::ErrorKind::UnexpectedEof);
    }
}
