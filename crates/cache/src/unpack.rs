//! Unpacking a cache layer (a tar, optionally gzip'd, holding a flat tree) without ever writing
//! outside the target: only regular files and directories under `blob/` and `manifests/` are
//! accepted; `..`, absolute paths, symlinks, hard links, devices, FIFOs, sparse files and
//! duplicate paths are refused, each naming the entry.
//!
//! The target must be a new, empty directory: because nothing in it can be a symlink (none is
//! ever created), a checked relative path cannot lead outside it.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::digest::BUF_SIZE;
use crate::flat::{BLOB_DIR, MANIFESTS_DIR};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("reading the layer (gzip or tar stream)")]
    Read(#[source] io::Error),
    #[error("tar entry {path:?}: {refusal}")]
    Refused { path: String, refusal: Refusal },
    #[error("creating {path}")]
    Create {
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
}

/// Moved to [`crate::tar_layer`], which reads layers in place; kept here for the callers of
/// [`unpack_layer`] until it goes.
pub use crate::tar_layer::Refusal;

/// What was unpacked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub files: u64,
    pub bytes: u64,
}

/// Checks an entry's path (after PAX and GNU long names are applied) and returns it relative to
/// the target; `None` for the archive root itself (`./`).
pub fn checked_path(raw: &[u8]) -> Result<Option<PathBuf>, Refusal> {
    let s = std::str::from_utf8(raw).map_err(|_| Refusal::NotUtf8)?;
    if s.starts_with('/') {
        return Err(Refusal::Absolute);
    }
    let mut out = PathBuf::new();
    for component in s.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(Refusal::ParentDir),
            c => out.push(c),
        }
    }
    match out.components().next() {
        None => Ok(None),
        Some(first) if first.as_os_str() == BLOB_DIR || first.as_os_str() == MANIFESTS_DIR => {
            Ok(Some(out))
        }
        Some(_) => Err(Refusal::OutsideCache),
    }
}

/// Whether `reader` starts with the gzip magic; wraps it in a decoder if so.
fn decompressed<'a, R: Read + 'a>(reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(64 * 1024, reader);
    let head = buffered.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        // Concatenated gzip members are one valid gzip stream.
        Ok(Box::new(MultiGzDecoder::new(buffered)))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Unpacks a (gzip'd or plain) tar holding a flat tree into `target`, which must be empty.
pub fn unpack_layer<R: Read>(reader: R, target: &Path) -> Result<UnpackStats, UnpackError> {
    let stream = decompressed(reader).map_err(UnpackError::Read)?;
    let mut archive = tar::Archive::new(stream);
    let mut stats = UnpackStats::default();
    let mut buf = vec![0u8; BUF_SIZE];
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let raw = entry.path_bytes().into_owned();
        let refused = |refusal| UnpackError::Refused {
            path: String::from_utf8_lossy(&raw).into_owned(),
            refusal,
        };
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        match kind {
            T::Regular | T::Continuous | T::Directory => {}
            // Metadata for the archive as a whole; nothing to write.
            T::XGlobalHeader => continue,
            T::Symlink => return Err(refused(Refusal::Symlink)),
            T::Link => return Err(refused(Refusal::HardLink)),
            T::Char | T::Block => return Err(refused(Refusal::Device)),
            T::Fifo => return Err(refused(Refusal::Fifo)),
            other => return Err(refused(Refusal::EntryType(other.as_byte()))),
        }
        let Some(rel) = checked_path(&raw).map_err(refused)? else {
            continue;
        };
        let path = target.join(&rel);
        if kind == T::Directory {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(refused(Refusal::Duplicate)),
                Err(_) => fs::create_dir_all(&path)
                    .map_err(|source| UnpackError::Create { path, source })?,
            }
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|source| UnpackError::Create {
                path: parent.to_owned(),
                source,
            })?;
        }
        // create_new: a second entry for the same path is refused, not allowed to replace the
        // first (which a reader of the archive listing would not expect).
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(refused(Refusal::Duplicate));
            }
            Err(source) => return Err(UnpackError::Create { path, source }),
        };
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UnpackError::Read(e)),
            };
            file.write_all(&buf[..n])
                .map_err(|source| UnpackError::Write {
                    path: path.clone(),
                    source,
                })?;
            stats.bytes += n as u64;
        }
        stats.files += 1;
    }
    Ok(stats)
}

/// Whether a layer looks like a cache layer: its first entries (after `./`) are under `blob/` or
/// `manifests/`. Reads only the first few headers. Any error means "no".
pub fn looks_like_cache_layer<R: Read>(reader: R) -> bool {
    let Ok(stream) = decompressed(reader) else {
        return false;
    };
    let mut archive = tar::Archive::new(stream);
    let Ok(entries) = archive.entries() else {
        return false;
    };
    for entry in entries.take(4) {
        let Ok(entry) = entry else { return false };
        match checked_path(&entry.path_bytes()) {
            Ok(None) => continue,
            Ok(Some(_)) => return true,
            Err(_) => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules() {
        let ok = |s: &str| checked_path(s.as_bytes()).unwrap().unwrap();
        assert_eq!(ok("blob/sha256-x"), Path::new("blob/sha256-x"));
        assert_eq!(
            ok("./manifests/docker.io/"),
            Path::new("manifests/docker.io")
        );
        assert_eq!(ok("blob//x"), Path::new("blob/x"));
        assert_eq!(checked_path(b"./").unwrap(), None);
        assert_eq!(checked_path(b".").unwrap(), None);
        assert_eq!(checked_path(b"blob/../../etc"), Err(Refusal::ParentDir));
        assert_eq!(checked_path(b"../x"), Err(Refusal::ParentDir));
        assert_eq!(checked_path(b"blob/.."), Err(Refusal::ParentDir));
        assert_eq!(checked_path(b"/blob/x"), Err(Refusal::Absolute));
        assert_eq!(checked_path(b"etc/passwd"), Err(Refusal::OutsideCache));
        assert_eq!(checked_path(b"blobs/x"), Err(Refusal::OutsideCache));
        assert_eq!(checked_path(b"blob\xff"), Err(Refusal::NotUtf8));
    }
}
