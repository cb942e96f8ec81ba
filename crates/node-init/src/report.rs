//! Walking the image cache and describing each file: path, size, sha256.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The cache's folder on a `TALOS_` medium (Talos' convention).
pub const CACHE_DIR: &str = "imagecache";

/// What mke2fs (and our ext4 writer) put at an ext4 root for fsck; not part of the cache.
const LOST_FOUND: &str = "lost+found";

/// Where the cache tree starts on the mounted volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// `imagecache/` of a `TALOS_` medium.
    Medium,
    /// The root of the `IMAGECACHE` partition, less its `lost+found`.
    Partition,
}

/// Read size for hashing: large enough that the medium, not syscalls, sets the pace.
const HASH_BUF: usize = 1 << 20;

/// One regular file of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFile {
    /// Relative to the cache root (`imagecache/` on a medium), `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Totals for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
}

impl Totals {
    fn add(&mut self, file: &CacheFile) {
        self.files += 1;
        self.bytes += file.size;
    }
}

/// The protocol line for a file (without the common prefix).
pub fn file_line(f: &CacheFile) -> String {
    format!("file {} {} {}", f.path, f.size, hex::encode(f.sha256))
}

/// The protocol summary line (without the common prefix).
pub fn cache_line(t: &Totals) -> String {
    format!("cache files={} bytes={}", t.files, t.bytes)
}

/// Walks the cache tree of the volume mounted at `volume_root` depth-first with each directory's
/// entries in byte order, hands every regular file to `each` as soon as it is hashed, and returns
/// the totals. Anything that is neither a directory nor a regular file (a symlink, a device) is an
/// error: the cache is plain files, and skipping something would make a bad medium look good.
pub fn walk_cache(
    volume_root: &Path,
    root: Root,
    mut each: impl FnMut(&CacheFile),
) -> Result<Totals> {
    let (dir, skip) = match root {
        Root::Medium => (volume_root.join(CACHE_DIR), None),
        Root::Partition => (volume_root.to_path_buf(), Some(LOST_FOUND)),
    };
    let meta = std::fs::symlink_metadata(&dir)
        .with_context(|| format!("{} on the volume", dir.display()))?;
    if !meta.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let mut totals = Totals::default();
    let mut buf = vec![0u8; HASH_BUF];
    walk_dir(&dir, "", skip, &mut buf, &mut |f| {
        totals.add(f);
        each(f);
    })?;
    Ok(totals)
}

/// `skip`: a name left out of this directory (not of its subdirectories).
fn walk_dir(
    dir: &Path,
    rel: &str,
    skip: Option<&str>,
    buf: &mut [u8],
    each: &mut dyn FnMut(&CacheFile),
) -> Result<()> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let name = entry
            .with_context(|| format!("list {}", dir.display()))?
            .file_name();
        if skip.is_some_and(|s| name.as_encoded_bytes() == s.as_bytes()) {
            continue;
        }
        names.push(name);
    }
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = join_rel(rel, &name.to_string_lossy());
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            walk_dir(&path, &rel, None, buf, each)?;
        } else if kind.is_file() {
            let (size, sha256) = hash_file(&path, meta.len(), buf)?;
            each(&CacheFile {
                path: rel,
                size,
                sha256,
            });
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path).unwrap_or_else(|_| PathBuf::from("?"));
            bail!("{rel}: symlink to {} in the cache", target.display());
        } else {
            bail!("{rel}: not a regular file or directory");
        }
    }
    Ok(())
}

fn join_rel(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// sha256 of a file, checking that what was read matches the size the directory entry claims.
fn hash_file(path: &Path, expected: u64, buf: &mut [u8]) -> Result<(u64, [u8; 32])> {
    let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total != expected {
        bail!(
            "{}: read {total} bytes, but its directory entry says {expected}",
            path.display()
        );
    }
    Ok((total, hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let f = CacheFile {
            path: "blob/sha256-ab".into(),
            size: 3,
            sha256: Sha256::digest(b"abc").into(),
        };
        assert_eq!(
            file_line(&f),
            "file blob/sha256-ab 3 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            cache_line(&Totals {
                files: 2,
                bytes: 10
            }),
            "cache files=2 bytes=10"
        );
    }

    #[test]
    fn walks_sorted_and_refuses_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let cache = dir.join(CACHE_DIR);
        std::fs::create_dir_all(cache.join("manifests/docker.io/library/alpine/reference"))
            .unwrap();
        std::fs::create_dir_all(cache.join("blob")).unwrap();
        std::fs::write(cache.join("blob/sha256-b"), b"bb").unwrap();
        std::fs::write(cache.join("blob/sha256-a"), b"a").unwrap();
        std::fs::write(
            cache.join("manifests/docker.io/library/alpine/reference/3.20"),
            b"{}",
        )
        .unwrap();
        let mut seen = Vec::new();
        let totals =
            walk_cache(dir, Root::Medium, |f| seen.push((f.path.clone(), f.size))).unwrap();
        assert_eq!(
            seen,
            [
                ("blob/sha256-a".to_owned(), 1),
                ("blob/sha256-b".to_owned(), 2),
                (
                    "manifests/docker.io/library/alpine/reference/3.20".to_owned(),
                    2
                ),
            ]
        );
        assert_eq!(totals, Totals { files: 3, bytes: 5 });

        std::os::unix::fs::symlink("sha256-a", cache.join("blob/link")).unwrap();
        let err = walk_cache(dir, Root::Medium, |_| {}).unwrap_err();
        assert!(format!("{err:#}").contains("symlink"), "{err:#}");

        std::fs::remove_dir_all(&cache).unwrap();
        assert!(walk_cache(dir, Root::Medium, |_| {}).is_err());
    }

    #[test]
    fn partition_root_skips_only_its_own_lost_found() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("lost+found")).unwrap();
        std::fs::write(dir.join("lost+found/#12"), b"orphan").unwrap();
        std::fs::create_dir_all(dir.join("blob/lost+found")).unwrap();
        std::fs::write(dir.join("blob/lost+found/x"), b"x").unwrap();
        std::fs::write(dir.join("blob/sha256-a"), b"a").unwrap();
        let mut seen = Vec::new();
        let totals = walk_cache(dir, Root::Partition, |f| seen.push(f.path.clone())).unwrap();
        assert_eq!(seen, ["blob/lost+found/x", "blob/sha256-a"]);
        assert_eq!(totals, Totals { files: 2, bytes: 2 });
    }
}
