//! The upstream flat cache tree, the form nodes read from `imagecache/`:
//!
//! ```text
//! blob/sha256-<hex>                                  configs and layers, shared by all repositories
//! manifests/<registry>/<repo>/reference/<tag>        the top-level manifest a tag resolved to
//! manifests/<registry>/<repo>/digest/sha256-<hex>    every cached manifest, named by its digest
//! ```
//!
//! A registry `host:port` is written `host_port_` (upstream's rule, so that the tree can be copied
//! to FAT, which has no `:`). This module knows these paths, enumerates a tree ([`scan`]) and writes
//! into one ([`FlatWriter`]): every file appears atomically (temp file + rename) and only after its
//! bytes were hashed and matched the digest and size they were announced with.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use imager_staging::StagedFile;

use crate::digest::{BUF_SIZE, Digest, Hasher};
use crate::manifest::MAX_MANIFEST_SIZE;
use crate::reference::ImageName;

pub const BLOB_DIR: &str = "blob";
pub const MANIFESTS_DIR: &str = "manifests";
pub const REFERENCE_DIR: &str = "reference";
pub const DIGEST_DIR: &str = "digest";
/// Names of files being written (staged, `imager-staging`); never a digest or a valid tag (tags
/// cannot start with `.`). The registry client's blob temps (`.tmp-blob-`) start the same way.
const TEMP_PREFIX: &str = ".tmp-";

/// The directory name of a registry: `host:port` -> `host_port_`, others unchanged.
pub fn registry_dir(registry: &str) -> String {
    match registry.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => format!("{host}_{port}_"),
        _ => registry.to_owned(),
    }
}

/// The registry a directory name stands for: `host_port_` -> `host:port`. Unambiguous because
/// host names cannot contain `_`.
pub fn registry_from_dir(dir: &str) -> String {
    if let Some(body) = dir.strip_suffix('_')
        && let Some((host, port)) = body.rsplit_once('_')
        && !host.is_empty()
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        return format!("{host}:{port}");
    }
    dir.to_owned()
}

/// The digest a file's path names it by: `blob/sha256-<hex>` and
/// `manifests/<registry>/<repo…>/digest/sha256-<hex>`; `None` for tags and anything else. Such a
/// file's bytes must hash to that digest (a node serves them under it).
pub fn named_digest(path: &str) -> Option<Digest> {
    let parts: Vec<&str> = path.split('/').collect();
    let name = match parts[..] {
        [BLOB_DIR, name] => name,
        [MANIFESTS_DIR, _, _, .., DIGEST_DIR, name] => name,
        _ => return None,
    };
    Digest::from_file_name(name)
}

/// `blob/sha256-<hex>`
pub fn blob_path(digest: &Digest) -> PathBuf {
    Path::new(BLOB_DIR).join(digest.file_name())
}

/// `manifests/<registry dir>/<repository>`
pub fn repo_dir(name: &ImageName) -> PathBuf {
    let mut p = Path::new(MANIFESTS_DIR).join(registry_dir(name.registry()));
    // The repository was validated against the grammar: its '/'-separated components are plain
    // names, never `..` or empty.
    for component in name.repository().split('/') {
        p.push(component);
    }
    p
}

/// `manifests/<registry dir>/<repository>/reference/<tag>`
pub fn tag_path(name: &ImageName, tag: &str) -> PathBuf {
    repo_dir(name).join(REFERENCE_DIR).join(tag)
}

/// `manifests/<registry dir>/<repository>/digest/sha256-<hex>`
pub fn manifest_path(name: &ImageName, digest: &Digest) -> PathBuf {
    repo_dir(name).join(DIGEST_DIR).join(digest.file_name())
}

#[derive(Debug, thiserror::Error)]
pub enum FlatError {
    #[error("creating {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: content is {actual}, not the expected {expected}")]
    DigestMismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("{path}: {actual} bytes, not the expected {expected}")]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: more than the expected {expected} bytes")]
    TooLong { path: PathBuf, expected: u64 },
    #[error("{path}: manifest of {size} bytes is larger than the {MAX_MANIFEST_SIZE}-byte limit")]
    ManifestTooLarge { path: PathBuf, size: u64 },
}

/// A file being written into the tree: bytes go to a temp file beside the destination and are
/// hashed on the way; [`VerifiedFile::commit`] renames it into place only if digest and size
/// match. Dropping it without committing removes the temp file.
#[derive(Debug)]
pub struct VerifiedFile {
    tmp: StagedFile,
    hasher: Hasher,
    expected: Digest,
    expected_size: Option<u64>,
    dest: PathBuf,
}

impl VerifiedFile {
    fn create(
        dest: PathBuf,
        expected: Digest,
        expected_size: Option<u64>,
    ) -> Result<Self, FlatError> {
        let tmp = temp_beside(&dest)?;
        Ok(Self {
            tmp,
            hasher: Hasher::default(),
            expected,
            expected_size,
            dest,
        })
    }

    /// Checks digest and size, then renames the file into place.
    pub fn commit(self) -> Result<u64, FlatError> {
        let (actual, size) = self.hasher.finish();
        check(&self.dest, self.expected, self.expected_size, actual, size)?;
        persist(self.tmp, &self.dest)?;
        Ok(size)
    }
}

impl Write for VerifiedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Refuse the first byte past the announced size rather than store a runaway stream.
        if let Some(limit) = self.expected_size
            && self.hasher.len() + buf.len() as u64 > limit
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than the expected {limit} bytes"),
            ));
        }
        let n = self.tmp.file_mut().write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp.file_mut().flush()
    }
}

fn check(
    path: &Path,
    expected: Digest,
    expected_size: Option<u64>,
    actual: Digest,
    size: u64,
) -> Result<(), FlatError> {
    if let Some(expected_size) = expected_size
        && expected_size != size
    {
        return Err(FlatError::SizeMismatch {
            path: path.to_owned(),
            expected: expected_size,
            actual: size,
        });
    }
    if actual != expected {
        return Err(FlatError::DigestMismatch {
            path: path.to_owned(),
            expected,
            actual,
        });
    }
    Ok(())
}

/// A temp file in the destination's directory (made if missing; same file system, so the rename
/// is atomic), readable like the rest of the tree whatever the umask.
fn temp_beside(dest: &Path) -> Result<StagedFile, FlatError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = StagedFile::create(dir, TEMP_PREFIX, 0o644).map_err(|source| FlatError::Create {
        path: dest.to_owned(),
        source,
    })?;
    tmp.file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(|source| FlatError::Create {
            path: dest.to_owned(),
            source,
        })?;
    Ok(tmp)
}

/// Renames into place, replacing an existing file: every name in the tree is either a digest
/// (same name, same bytes) or a tag (the newest write wins, as in a registry). Not synced: the tree
/// is either scratch space or followed by the caller's own sync before it is published.
fn persist(tmp: StagedFile, dest: &Path) -> Result<(), FlatError> {
    tmp.persist(dest).map_err(|source| FlatError::Write {
        path: dest.to_owned(),
        source,
    })?;
    Ok(())
}

/// Writes a flat tree.
#[derive(Debug, Clone)]
pub struct FlatWriter {
    root: PathBuf,
}

impl FlatWriter {
    /// Creates `root/blob` and `root/manifests` (and `root`) if missing.
    pub fn create(root: &Path) -> Result<Self, FlatError> {
        for dir in [BLOB_DIR, MANIFESTS_DIR] {
            let path = root.join(dir);
            // Through staging: the tree is usually inside a staged directory.
            imager_staging::create_dir_all(&path)
                .map_err(|source| FlatError::Create { path, source })?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `blob/sha256-<hex>` exists with the given size (a re-run may skip it; `verify`
    /// re-hashes).
    pub fn has_blob(&self, digest: &Digest, size: u64) -> bool {
        fs::symlink_metadata(self.root.join(blob_path(digest)))
            .is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// A writer for `blob/sha256-<hex>`, for callers that produce bytes themselves (a registry
    /// download): write into it, then [`VerifiedFile::commit`].
    pub fn blob_file(&self, digest: &Digest, size: Option<u64>) -> Result<VerifiedFile, FlatError> {
        VerifiedFile::create(self.root.join(blob_path(digest)), *digest, size)
    }

    /// Streams `reader` into `blob/sha256-<hex>`, checking digest and size.
    pub fn write_blob(
        &self,
        digest: &Digest,
        size: Option<u64>,
        mut reader: impl Read,
    ) -> Result<u64, FlatError> {
        let dest = self.root.join(blob_path(digest));
        let mut out = VerifiedFile::create(dest.clone(), *digest, size)?;
        let mut buf = vec![0u8; BUF_SIZE];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(FlatError::Read { path: dest, source }),
            };
            if let Some(expected) = size
                && out.hasher.len() + n as u64 > expected
            {
                return Err(FlatError::TooLong {
                    path: dest,
                    expected,
                });
            }
            out.write_all(&buf[..n])
                .map_err(|source| FlatError::Write {
                    path: dest.clone(),
                    source,
                })?;
        }
        out.commit()
    }

    /// Copies a local file into `blob/sha256-<hex>`. The kernel copies the bytes
    /// (`copy_file_range`, a reflink where the file system has them), then the copy is hashed:
    /// what is checked is what landed in the tree.
    pub fn copy_blob(&self, digest: &Digest, size: u64, src: &Path) -> Result<u64, FlatError> {
        let dest = self.root.join(blob_path(digest));
        let read_err = |source| FlatError::Read {
            path: src.to_owned(),
            source,
        };
        let mut input = File::open(src).map_err(read_err)?;
        let len = input.metadata().map_err(read_err)?.len();
        if len != size {
            return Err(FlatError::SizeMismatch {
                path: src.to_owned(),
                expected: size,
                actual: len,
            });
        }
        let mut tmp = temp_beside(&dest)?;
        let write_err = |source| FlatError::Write {
            path: dest.clone(),
            source,
        };
        io::copy(&mut input, tmp.file_mut()).map_err(write_err)?;
        tmp.file_mut().rewind().map_err(write_err)?;
        let mut hasher = Hasher::default();
        let mut buf = vec![0u8; BUF_SIZE];
        loop {
            match tmp.file_mut().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(FlatError::Read { path: dest, source }),
            }
        }
        let (actual, copied) = hasher.finish();
        // Names the source: that is where the wrong bytes are.
        check(src, *digest, Some(size), actual, copied)?;
        persist(tmp, &dest)?;
        Ok(copied)
    }

    /// Writes `manifests/<registry>/<repo>/digest/sha256-<hex>`; `bytes` must hash to `digest`.
    pub fn write_manifest(
        &self,
        name: &ImageName,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(), FlatError> {
        let dest = self.root.join(manifest_path(name, digest));
        self.write_small(&dest, bytes, Some(*digest))
    }

    /// Writes `manifests/<registry>/<repo>/reference/<tag>`. The tag is not checked here: `name`
    /// and `tag` come from a parsed [`crate::Reference`].
    pub fn write_tag(&self, name: &ImageName, tag: &str, bytes: &[u8]) -> Result<(), FlatError> {
        let dest = self.root.join(tag_path(name, tag));
        self.write_small(&dest, bytes, None)
    }

    fn write_small(
        &self,
        dest: &Path,
        bytes: &[u8],
        digest: Option<Digest>,
    ) -> Result<(), FlatError> {
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(FlatError::ManifestTooLarge {
                path: dest.to_owned(),
                size: bytes.len() as u64,
            });
        }
        let actual = Digest::of(bytes);
        if let Some(expected) = digest {
            check(dest, expected, None, actual, bytes.len() as u64)?;
        }
        let mut tmp = temp_beside(dest)?;
        tmp.file_mut()
            .write_all(bytes)
            .map_err(|source| FlatError::Write {
                path: dest.to_owned(),
                source,
            })?;
        persist(tmp, dest)
    }
}

/// Reads a manifest-sized file whole, refusing files over [`MAX_MANIFEST_SIZE`] before reading
/// them (and if one grows while being read).
pub(crate) fn read_capped(path: &Path) -> Result<Vec<u8>, FlatError> {
    let read_err = |source| FlatError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    if len > MAX_MANIFEST_SIZE {
        return Err(FlatError::ManifestTooLarge {
            path: path.to_owned(),
            size: len,
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_MANIFEST_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(FlatError::ManifestTooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// What [`scan`] found in a flat tree. Paths are relative to the root.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub blobs: Vec<BlobFile>,
    pub repos: Vec<RepoDir>,
    /// Entries that do not belong in a flat tree; `verify` reports them.
    pub strays: Vec<Stray>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFile {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

/// One repository directory: `manifests/<registry dir>/<repository>/{reference,digest}/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoDir {
    pub path: PathBuf,
    /// The registry's directory name as found.
    pub registry_dir: String,
    /// Decoded from the directory name (`host_port_` -> `host:port`); not yet validated.
    pub registry: String,
    /// `/`-joined directory names; not yet validated.
    pub repository: String,
    pub tags: Vec<TagFile>,
    pub manifests: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFile {
    pub path: PathBuf,
    /// The file name; not yet validated against the tag grammar.
    pub tag: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stray {
    pub path: PathBuf,
    pub kind: StrayKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrayKind {
    /// A file or directory where the format has none.
    Unexpected,
    /// Never followed: a cache's files must be its own.
    Symlink,
    /// A device, FIFO or socket.
    Special,
    /// A name that is not UTF-8 (no reference can name it).
    NonUtf8Name,
    /// Under `blob/` or `digest/`, a name other than `sha256-<64 hex>`.
    NotADigestName,
}

impl RepoDir {
    /// The validated name, or why the directory names are not a valid image name.
    pub fn image_name(&self) -> Result<ImageName, crate::ReferenceError> {
        ImageName::new(&self.registry, &self.repository)
    }
}

/// Enumerates a flat tree on disk without reading file contents. Symlinks are reported, never
/// followed. Fails only if a directory cannot be listed; anything odd inside is a [`Stray`].
pub fn scan(root: &Path) -> Result<Inventory, crate::LayoutError> {
    Ok(crate::Cache::open(root, &crate::ReadOptions::default())?.inventory())
}

/// Sorts a cache's files (flat-tree path and size) into repositories, tags, manifests and blobs;
/// what has no place in the format becomes a [`Stray`]. Pure, linear in the number of files.
///
/// A manifest file is `manifests/<registry dir>/<repository…>/{reference,digest}/<name>`: the
/// last two components say what it is and everything between the registry and them is the
/// repository path, so repositories may nest (`a` and `a/b`) and may even have a component named
/// `reference`.
pub fn inventory<'a>(
    files: impl IntoIterator<Item = (&'a str, u64)>,
    mut strays: Vec<Stray>,
) -> Inventory {
    let mut inv = Inventory::default();
    let mut repos: std::collections::BTreeMap<String, RepoDir> = Default::default();
    for (path, size) in files {
        let parts: Vec<&str> = path.split('/').collect();
        let unexpected = |kind| Stray {
            path: PathBuf::from(path),
            kind,
        };
        match parts[..] {
            [BLOB_DIR, name] => match Digest::from_file_name(name) {
                Some(digest) => inv.blobs.push(BlobFile {
                    path: PathBuf::from(path),
                    digest,
                    size,
                }),
                None => strays.push(unexpected(name_stray(Some(name)))),
            },
            [MANIFESTS_DIR, registry_dir, ref repo @ .., leaf, name]
                if !repo.is_empty() && (leaf == REFERENCE_DIR || leaf == DIGEST_DIR) =>
            {
                if name.starts_with(TEMP_PREFIX) {
                    strays.push(unexpected(StrayKind::Unexpected));
                    continue;
                }
                let digest = if leaf == DIGEST_DIR {
                    match Digest::from_file_name(name) {
                        Some(d) => Some(d),
                        None => {
                            strays.push(unexpected(StrayKind::NotADigestName));
                            continue;
                        }
                    }
                } else {
                    None
                };
                let repository = repo.join("/");
                let dir = format!("{MANIFESTS_DIR}/{registry_dir}/{repository}");
                let entry = repos.entry(dir.clone()).or_insert_with(|| RepoDir {
                    path: PathBuf::from(&dir),
                    registry_dir: registry_dir.to_owned(),
                    registry: registry_from_dir(registry_dir),
                    repository,
                    tags: Vec::new(),
                    manifests: Vec::new(),
                });
                match digest {
                    Some(digest) => entry.manifests.push(ManifestFile {
                        path: PathBuf::from(path),
                        digest,
                        size,
                    }),
                    None => entry.tags.push(TagFile {
                        path: PathBuf::from(path),
                        tag: name.to_owned(),
                        size,
                    }),
                }
            }
            _ => strays.push(unexpected(StrayKind::Unexpected)),
        }
    }
    inv.repos = repos.into_values().collect();
    strays.sort_by(|a, b| a.path.cmp(&b.path));
    inv.strays = strays;
    inv
}

/// A file under `blob/` or `digest/` whose name is not a digest: an interrupted write's temp file
/// (harmless) or a misnamed file (which no node would find).
fn name_stray(name: Option<&str>) -> StrayKind {
    match name {
        Some(n) if n.starts_with(TEMP_PREFIX) => StrayKind::Unexpected,
        _ => StrayKind::NotADigestName,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_ports_use_the_upstream_spelling() {
        assert_eq!(registry_dir("docker.io"), "docker.io");
        assert_eq!(registry_dir("localhost:5000"), "localhost_5000_");
        assert_eq!(
            registry_dir("registry.example.com:443"),
            "registry.example.com_443_"
        );
        for r in ["docker.io", "localhost:5000", "a.b.c:1", "ghcr.io"] {
            assert_eq!(registry_from_dir(&registry_dir(r)), r);
        }
        // Not the port spelling: left as is (and then refused by the registry grammar).
        assert_eq!(registry_from_dir("host_x_"), "host_x_");
        assert_eq!(registry_from_dir("_5000_"), "_5000_");
        assert_eq!(registry_from_dir("host__"), "host__");
    }

    #[test]
    fn digest_names() {
        let d = Digest::of(b"x");
        let f = d.file_name();
        assert_eq!(named_digest(&format!("blob/{f}")), Some(d));
        assert_eq!(
            named_digest(&format!("manifests/r.io/a/digest/{f}")),
            Some(d)
        );
        assert_eq!(
            named_digest(&format!("manifests/r.io/a/b/digest/{f}")),
            Some(d)
        );
        for no in [
            format!("manifests/r.io/a/reference/{f}"),
            format!("manifests/r.io/digest/{f}"),
            format!("blob/x/{f}"),
            "blob/sha256-abc".to_owned(),
            f.clone(),
        ] {
            assert_eq!(named_digest(&no), None, "{no}");
        }
    }

    #[test]
    fn paths() {
        let name = ImageName::parse("localhost:5000/team/app").unwrap();
        let d = Digest::of(b"x");
        assert_eq!(
            tag_path(&name, "v1"),
            Path::new("manifests/localhost_5000_/team/app/reference/v1")
        );
        assert_eq!(
            manifest_path(&name, &d),
            Path::new(&format!(
                "manifests/localhost_5000_/team/app/digest/sha256-{}",
                d.hex()
            ))
        );
        assert_eq!(
            blob_path(&d),
            Path::new(&format!("blob/sha256-{}", d.hex()))
        );
        let hub = ImageName::parse("alpine").unwrap();
        assert_eq!(
            repo_dir(&hub),
            Path::new("manifests/docker.io/library/alpine")
        );
    }

    #[test]
    fn writer_is_atomic_and_checks_digest_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let w = FlatWriter::create(dir.path()).unwrap();
        let data = b"layer bytes".repeat(100_000);
        let d = Digest::of(&data);

        // Wrong size announced: refused, nothing under the final name, no temp file left.
        let err = w.write_blob(&d, Some(10), &data[..]).unwrap_err();
        assert!(
            matches!(err, FlatError::TooLong { expected: 10, .. }),
            "{err}"
        );
        let err = w
            .write_blob(&d, Some(data.len() as u64 + 1), &data[..])
            .unwrap_err();
        assert!(matches!(err, FlatError::SizeMismatch { .. }), "{err}");
        // Wrong digest.
        let other = Digest::of(b"other");
        let err = w.write_blob(&other, None, &data[..]).unwrap_err();
        assert!(
            matches!(err, FlatError::DigestMismatch { actual, .. } if actual == d),
            "{err}"
        );
        assert_eq!(fs::read_dir(dir.path().join(BLOB_DIR)).unwrap().count(), 0);

        assert_eq!(
            w.write_blob(&d, Some(data.len() as u64), &data[..])
                .unwrap(),
            data.len() as u64
        );
        assert_eq!(fs::read(dir.path().join(blob_path(&d))).unwrap(), data);
        assert!(w.has_blob(&d, data.len() as u64));
        assert!(!w.has_blob(&d, 1));
        let mode = fs::metadata(dir.path().join(blob_path(&d)))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn copy_blob_checks_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let w = FlatWriter::create(&dir.path().join("tree")).unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"0123456789").unwrap();
        let d = Digest::of(b"0123456789");
        assert!(matches!(
            w.copy_blob(&d, 9, &src).unwrap_err(),
            FlatError::SizeMismatch {
                expected: 9,
                actual: 10,
                ..
            }
        ));
        let wrong = Digest::of(b"9876543210");
        let err = w.copy_blob(&wrong, 10, &src).unwrap_err();
        assert!(
            matches!(&err, FlatError::DigestMismatch { path, .. } if path == &src),
            "{err}"
        );
        assert_eq!(
            fs::read_dir(dir.path().join("tree/blob")).unwrap().count(),
            0
        );
        assert_eq!(w.copy_blob(&d, 10, &src).unwrap(), 10);
        assert_eq!(
            fs::read(w.root().join(blob_path(&d))).unwrap(),
            b"0123456789"
        );
    }

    #[test]
    fn verified_file_stops_at_the_announced_size() {
        let dir = tempfile::tempdir().unwrap();
        let w = FlatWriter::create(dir.path()).unwrap();
        let d = Digest::of(b"abc");
        let mut f = w.blob_file(&d, Some(3)).unwrap();
        f.write_all(b"ab").unwrap();
        assert!(f.write_all(b"cd").is_err());
        drop(f);
        let mut f = w.blob_file(&d, Some(3)).unwrap();
        f.write_all(b"abc").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(dir.path().join(blob_path(&d))).unwrap(), b"abc");
        assert_eq!(fs::read_dir(dir.path().join(BLOB_DIR)).unwrap().count(), 1);
    }

    #[test]
    fn manifests_are_capped_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let w = FlatWriter::create(dir.path()).unwrap();
        let name = ImageName::parse("alpine").unwrap();
        let big = vec![b' '; MAX_MANIFEST_SIZE as usize + 1];
        assert!(matches!(
            w.write_manifest(&name, &Digest::of(&big), &big)
                .unwrap_err(),
            FlatError::ManifestTooLarge { .. }
        ));
        assert!(matches!(
            w.write_manifest(&name, &Digest::of(b"x"), b"y")
                .unwrap_err(),
            FlatError::DigestMismatch { .. }
        ));
        w.write_manifest(&name, &Digest::of(b"{}"), b"{}").unwrap();
        w.write_tag(&name, "latest", b"{}").unwrap();
        let big_path = dir.path().join("big");
        fs::write(&big_path, &big).unwrap();
        assert!(matches!(
            read_capped(&big_path),
            Err(FlatError::ManifestTooLarge { .. })
        ));
        assert_eq!(
            read_capped(&dir.path().join(tag_path(&name, "latest"))).unwrap(),
            b"{}"
        );
    }

    #[test]
    fn scan_finds_repos_and_strays() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let w = FlatWriter::create(root).unwrap();
        let a = ImageName::parse("localhost:5000/team/app").unwrap();
        let nested = ImageName::parse("localhost:5000/team/app/sub").unwrap();
        // A repository whose last component is named like a leaf directory.
        let digest_repo = ImageName::parse("ghcr.io/x/digest").unwrap();
        let m = br#"{"schemaVersion":2,"manifests":[]}"#;
        let md = Digest::of(m);
        for n in [&a, &nested, &digest_repo] {
            w.write_manifest(n, &md, m).unwrap();
            w.write_tag(n, "v1", m).unwrap();
        }
        w.write_blob(&Digest::of(b"b"), None, &b"b"[..]).unwrap();
        fs::write(root.join("blob/notes.txt"), b"").unwrap();
        fs::write(root.join("blob/.tmp-abc"), b"").unwrap();
        fs::write(root.join("README"), b"").unwrap();
        fs::write(root.join(repo_dir(&a)).join("digest/sha256-short"), b"").unwrap();
        std::os::unix::fs::symlink(
            "/etc/passwd",
            root.join(repo_dir(&a)).join("reference/evil"),
        )
        .unwrap();
        fs::write(root.join(repo_dir(&a)).join("reference/.tmp-1"), b"").unwrap();
        fs::create_dir_all(root.join("manifests/docker.io/library/empty/reference")).unwrap();

        let inv = scan(root).unwrap();
        let names: Vec<String> = inv
            .repos
            .iter()
            .map(|r| format!("{}/{}", r.registry, r.repository))
            .collect();
        assert_eq!(
            names,
            [
                "ghcr.io/x/digest",
                "localhost:5000/team/app",
                "localhost:5000/team/app/sub"
            ]
        );
        for r in &inv.repos {
            assert_eq!(r.tags.len(), 1, "{r:?}");
            assert_eq!(r.manifests.len(), 1, "{r:?}");
            assert_eq!(r.manifests[0].digest, md);
            r.image_name().unwrap();
        }
        assert_eq!(inv.blobs.len(), 1);
        let strays: Vec<(String, StrayKind)> = inv
            .strays
            .iter()
            .map(|s| (s.path.display().to_string(), s.kind))
            .collect();
        assert_eq!(
            strays,
            [
                ("README".to_owned(), StrayKind::Unexpected),
                ("blob/.tmp-abc".to_owned(), StrayKind::Unexpected),
                ("blob/notes.txt".to_owned(), StrayKind::NotADigestName),
                (
                    "manifests/localhost_5000_/team/app/digest/sha256-short".to_owned(),
                    StrayKind::NotADigestName
                ),
                (
                    "manifests/localhost_5000_/team/app/reference/.tmp-1".to_owned(),
                    StrayKind::Unexpected
                ),
                (
                    "manifests/localhost_5000_/team/app/reference/evil".to_owned(),
                    StrayKind::Symlink
                ),
            ]
        );
    }
}
