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
//! every manifest read), their content is hashed once per file per process, and the verdict is
//! kept for that file (device, inode, size, mtime, ctime); a replaced or modified file is hashed
//! again. Blobs are then served from the very descriptor that was checked, so a rename between
//! check and read cannot swap the bytes.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use http::StatusCode;
use imager_cache::flat::{
    DIGEST_DIR, MANIFESTS_DIR, REFERENCE_DIR, blob_path, manifest_path, repo_dir, tag_path,
};
use imager_cache::manifest::{self, MAX_MANIFEST_SIZE, Manifest};
use imager_cache::reference::is_tag;
use imager_cache::{Digest, ImageName};
use sha2::Digest as _;
use tokio::sync::{OnceCell, Semaphore};

use crate::Log;
use crate::error::{ApiError, ErrorCode};
use crate::fsafe::{self, Kind, OpenError};
use crate::pool::IoPool;
use crate::route::{ManifestRef, Repo, candidates};

/// Hashing reads in pieces of this size; one buffer per blob being hashed.
const HASH_BUF: usize = 256 << 10;

/// A manifest found and checked.
#[derive(Debug)]
pub struct ManifestHit {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
}

/// A blob found and checked: the open file it was checked through.
#[derive(Debug)]
pub struct BlobHit {
    pub file: File,
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

#[derive(Debug, Clone, Copy)]
struct Verdict {
    id: FileId,
    /// What the file's content hashed to.
    actual: Digest,
}

/// Root index and digest.
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

#[derive(Debug)]
pub struct Store {
    roots: Vec<PathBuf>,
    /// Blob sizes as the manifests read so far give them (config and layers of image manifests).
    sizes: RwLock<HashMap<Digest, u64>>,
    /// Per root and digest, the hash verdict; the cell makes concurrent first requests for one
    /// blob wait for a single hashing instead of each reading the whole file.
    verdicts: Mutex<HashMap<VerdictKey, Arc<OnceCell<Verdict>>>>,
    /// Hashing is CPU and disk bound: at most one blob per core at a time, on Tokio's blocking
    /// pool (hashing is rare, and would hold an I/O thread for seconds).
    hashing: Semaphore,
    /// Where files are opened and read.
    pool: IoPool,
    log: Log,
}

impl Store {
    pub fn new(roots: Vec<PathBuf>, pool: IoPool, log: Log) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            roots,
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
            self.roots[root].display()
        ));
    }

    /// The names a repository stands for in one root (see [`candidates`]).
    fn names(&self, root: usize, repo: &Repo) -> Vec<ImageName> {
        match repo {
            Repo::Named(name) => vec![name.clone()],
            Repo::Path(path) => {
                match fsafe::list_dir(&self.roots[root], Path::new(MANIFESTS_DIR)) {
                    Ok(entries) => {
                        let dirs: Vec<String> = entries
                            .into_iter()
                            .filter(|(_, kind)| *kind == Kind::Dir)
                            .map(|(name, _)| name)
                            .collect();
                        candidates(path, &dirs)
                    }
                    Err(OpenError::NotFound) => Vec::new(),
                    Err(e) => {
                        self.damaged(root, MANIFESTS_DIR, &e.to_string());
                        Vec::new()
                    }
                }
            }
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
        let dir = &self.roots[root];
        let (bytes, digest) = match reference {
            ManifestRef::Tag(tag) => {
                let bytes = fsafe::read_small(dir, &tag_path(name, tag), MAX_MANIFEST_SIZE)?;
                let digest = Digest::of(&bytes);
                // The tag file must be one of the repository's manifests (its `digest/` file
                // by that digest), or it is a stray or half-written file, not a tag.
                match fsafe::open_file(dir, &manifest_path(name, &digest)) {
                    Ok(f) if f.metadata().map_err(OpenError::Io)?.len() == bytes.len() as u64 => {}
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
                let bytes =
                    fsafe::read_small(dir, &manifest_path(name, digest), MAX_MANIFEST_SIZE)?;
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
        for (i, root) in self.roots.iter().enumerate() {
            let inventory = match imager_cache::flat::scan(root) {
                Ok(inv) => inv,
                Err(e) => {
                    self.damaged(i, "listing the cache", &e.to_string());
                    continue;
                }
            };
            for repo in &inventory.repos {
                for m in &repo.manifests {
                    let Ok(bytes) = fsafe::read_small(root, &m.path, MAX_MANIFEST_SIZE) else {
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
                .run(move || {
                    let file = fsafe::open_file(&this.roots[root], &blob_path(&digest))?;
                    let id = FileId::of(&file.metadata()?);
                    Ok::<_, OpenError>((file, id))
                })
                .await
                .map_err(internal)?;
            let what = format!("blob {digest}");
            let (file, id) = match opened {
                Ok(x) => x,
                Err(OpenError::NotFound) => continue,
                Err(e) => {
                    damaged = true;
                    self.damaged(root, &what, &e.to_string());
                    continue;
                }
            };
            if let Some(expected) = self.expected_size(&digest)
                && expected != id.len
            {
                damaged = true;
                let why = format!("{} bytes, but its manifest says {expected}", id.len);
                self.damaged(root, &what, &why);
                continue;
            }
            match self.content_digest(root, digest, &file, id).await {
                Ok(actual) if actual == digest => return Ok(BlobHit { file, len: id.len }),
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

    /// What the content of this open file hashes to, computed once per file (see [`FileId`]).
    async fn content_digest(
        &self,
        root: usize,
        digest: Digest,
        file: &File,
        id: FileId,
    ) -> io::Result<Digest> {
        if id.len == 0 {
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
                    let actual = self.hash(file).await?;
                    Ok::<_, io::Error>(Verdict { id, actual })
                })
                .await?;
            if verdict.id == id {
                return Ok(verdict.actual);
            }
            let mut map = self.verdicts.lock().map_err(|_| poisoned())?;
            if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                map.remove(&key);
            }
        }
        // Replaced again while being checked: check this one without keeping the verdict.
        self.hash(file).await
    }

    async fn hash(&self, file: &File) -> io::Result<Digest> {
        let _permit = self.hashing.acquire().await.map_err(io::Error::other)?;
        let file = file.try_clone()?;
        tokio::task::spawn_blocking(move || hash_file(&file))
            .await
            .map_err(io::Error::other)?
    }

    /// The tags of a repository, from every root: with `ns`, of that name; without, of the
    /// first name (root order, then registry order) whose repository directory holds a
    /// `reference/` or `digest/` directory; `NAME_UNKNOWN` if no root has the repository.
    pub fn tags(&self, repo: &Repo) -> Result<(ImageName, BTreeSet<String>), ApiError> {
        let has_repo = |root: &Path, name: &ImageName| {
            [REFERENCE_DIR, DIGEST_DIR]
                .iter()
                .any(|leaf| fsafe::open_dir(root, &repo_dir(name).join(leaf)).is_ok())
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
        for (i, root) in self.roots.iter().enumerate() {
            match fsafe::list_dir(root, &dir) {
                Ok(entries) => tags.extend(
                    entries
                        .into_iter()
                        .filter(|(tag, kind)| *kind == Kind::File && is_tag(tag))
                        .map(|(tag, _)| tag),
                ),
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

/// sha256 of a whole file, with positioned reads (the descriptor's offset is left alone).
fn hash_file(file: &File) -> io::Result<Digest> {
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; HASH_BUF];
    let mut pos = 0u64;
    loop {
        match file.read_at(&mut buf, pos) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                pos += n as u64;
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
    fn hash_file_matches_digest_of() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..(HASH_BUF * 2 + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(hash_file(&f).unwrap(), Digest::of(&data));
    }
}
