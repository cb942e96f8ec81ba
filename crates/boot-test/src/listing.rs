//! What a cache directory holds, as the host sees it, and how that compares with what a node saw.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Size and content hash of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256.
    pub sha256: String,
}

/// Files keyed by their `/`-separated path relative to the cache root.
pub type Listing = BTreeMap<String, FileDigest>;

/// Reading a host directory failed.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// Walking the tree failed.
    #[error("cannot list {path}: {source}")]
    Walk {
        /// Where the walk failed.
        path: PathBuf,
        /// Why.
        #[source]
        source: walkdir::Error,
    },
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Something other than a directory or regular file: a cache holds neither, and a medium
    /// cannot carry it the same way, so a comparison would mean nothing.
    #[error("{path} is neither a regular file nor a directory")]
    Unsupported {
        /// The entry.
        path: PathBuf,
    },
    /// A name that is not UTF-8 cannot be compared with the node's console lines.
    #[error("{path} has a name that is not UTF-8")]
    NotUtf8 {
        /// The entry.
        path: PathBuf,
    },
}

/// Lists every regular file under `root` with its size and sha256, the way the node reports a
/// cache: paths relative to `root`, `/`-separated.
pub fn expected_listing(root: &Path) -> Result<Listing, ListingError> {
    let mut listing = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.map_err(|source| ListingError::Walk {
            path: source.path().unwrap_or(root).to_path_buf(),
            source,
        })?;
        let file_type = entry.file_type();
        if file_type.is_dir() {
            continue;
        }
        if !file_type.is_file() {
            return Err(ListingError::Unsupported {
                path: entry.path().to_path_buf(),
            });
        }
        let relative = entry
            .path()
            .strip_prefix(root)
            .ok()
            .and_then(|rel| {
                let parts: Option<Vec<&str>> =
                    rel.components().map(|c| c.as_os_str().to_str()).collect();
                parts.map(|p| p.join("/"))
            })
            .ok_or_else(|| ListingError::NotUtf8 {
                path: entry.path().to_path_buf(),
            })?;
        let digest = file_digest(entry.path()).map_err(|source| ListingError::Read {
            path: entry.path().to_path_buf(),
            source,
        })?;
        listing.insert(relative, digest);
    }
    Ok(listing)
}

/// Size and sha256 of one file, streamed (cache files can be many GiB).
pub fn file_digest(path: &Path) -> io::Result<FileDigest> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileDigest {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// The total size of a listing, as the node's `cache ... bytes=` line counts it.
pub fn total_bytes(listing: &Listing) -> u64 {
    listing.values().map(|d| d.size).sum()
}

/// Where two listings disagree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListingDiff {
    /// Expected but not seen.
    pub missing: Vec<String>,
    /// Seen but not expected.
    pub extra: Vec<String>,
    /// Seen with a different size or hash: (path, expected, actual).
    pub changed: Vec<(String, FileDigest, FileDigest)>,
}

impl ListingDiff {
    /// Compares what was expected with what was seen.
    pub fn new(expected: &Listing, actual: &Listing) -> Self {
        let mut diff = Self::default();
        for (path, want) in expected {
            match actual.get(path) {
                None => diff.missing.push(path.clone()),
                Some(got) if got != want => {
                    diff.changed.push((path.clone(), want.clone(), got.clone()))
                }
                Some(_) => {}
            }
        }
        diff.extra = actual
            .keys()
            .filter(|p| !expected.contains_key(*p))
            .cloned()
            .collect();
        diff
    }

    /// True when the listings agree exactly.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for ListingDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "the listings agree");
        }
        for path in &self.missing {
            writeln!(f, "missing: {path}")?;
        }
        for path in &self.extra {
            writeln!(f, "unexpected: {path}")?;
        }
        for (path, want, got) in &self.changed {
            writeln!(
                f,
                "differs: {path}: expected {} bytes sha256 {}, got {} bytes sha256 {}",
                want.size, want.sha256, got.size, got.sha256
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The host's own `sha256sum` (coreutils) is the independent oracle for our hashing.
    fn sha256sum(path: &Path) -> String {
        let out = Command::new("sha256sum")
            .arg(path)
            .output()
            .expect("run sha256sum (coreutils)");
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    }

    #[test]
    fn lists_files_sorted_with_sizes_and_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("manifests/docker.io/library/busybox/reference"))
            .unwrap();
        std::fs::create_dir_all(root.join("blob")).unwrap();
        std::fs::create_dir_all(root.join("empty-dir")).unwrap();
        std::fs::write(root.join("blob/b"), b"abc").unwrap();
        std::fs::write(root.join("blob/a"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(
            root.join("manifests/docker.io/library/busybox/reference/latest"),
            b"",
        )
        .unwrap();

        let listing = expected_listing(root).unwrap();
        let paths: Vec<&str> = listing.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "blob/a",
                "blob/b",
                "manifests/docker.io/library/busybox/reference/latest"
            ]
        );
        for (path, digest) in &listing {
            let host = root.join(path);
            assert_eq!(digest.sha256, sha256sum(&host), "{path}");
            assert_eq!(
                digest.size,
                std::fs::metadata(&host).unwrap().len(),
                "{path}"
            );
        }
        assert_eq!(total_bytes(&listing), (3 << 20) + 3);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();
        let err = expected_listing(dir.path()).unwrap_err();
        assert!(matches!(err, ListingError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("link"), "{err}");
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let err = expected_listing(Path::new("/nonexistent/imager-cache")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/imager-cache"),
            "{err}"
        );
    }

    #[test]
    fn diff_names_every_disagreement() {
        let d = |size, sha: &str| FileDigest {
            size,
            sha256: sha.into(),
        };
        let expected: Listing = [
            ("a".to_string(), d(1, "11")),
            ("b".to_string(), d(2, "22")),
            ("c".to_string(), d(3, "33")),
        ]
        .into();
        let actual: Listing = [
            ("a".to_string(), d(1, "11")),
            ("c".to_string(), d(3, "34")),
            ("z".to_string(), d(0, "00")),
        ]
        .into();
        let diff = ListingDiff::new(&expected, &actual);
        assert_eq!(diff.missing, ["b"]);
        assert_eq!(diff.extra, ["z"]);
        assert_eq!(
            diff.changed,
            vec![("c".to_string(), d(3, "33"), d(3, "34"))]
        );
        let text = diff.to_string();
        assert!(text.contains("missing: b"));
        assert!(text.contains("unexpected: z"));
        assert!(text.contains("differs: c"));
        assert!(ListingDiff::new(&expected, &expected).is_empty());
    }
}
