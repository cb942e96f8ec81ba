//! Archive paths: validated, relative, `/`-separated names as the kernel's unpacker sees them.

use std::cmp::Ordering;
use std::fmt;

use crate::Error;

/// The kernel's unpacker skips entries whose name (with its NUL) exceeds this.
const PATH_MAX: usize = 4096;

/// A validated path inside the archive: relative, non-empty, no `.`/`..`/empty components, no NUL.
///
/// Ordering is component-wise, so a directory sorts immediately before its own contents (a plain
/// string order would put `a-b` between `a` and `a/c`). Either order places parents first, because a
/// path's prefix always sorts before it; the component order additionally keeps each directory's
/// entries contiguous, which makes listings easier to read and diff.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ArchivePath(String);

impl ArchivePath {
    /// Validates `path`. Absolute paths are refused rather than silently made relative, so a caller
    /// who mixes up host and archive paths finds out at planning time.
    pub fn new(path: &str) -> Result<Self, Error> {
        let invalid = |reason: &'static str| Error::InvalidPath {
            path: path.to_owned(),
            reason,
        };
        if path.is_empty() {
            return Err(invalid("empty path"));
        }
        if path.starts_with('/') {
            return Err(invalid("absolute path (archive paths are relative to /)"));
        }
        if path.len() >= PATH_MAX {
            return Err(invalid(
                "longer than the kernel's PATH_MAX (4096 bytes with the NUL)",
            ));
        }
        if path.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        for component in path.split('/') {
            match component {
                "" => return Err(invalid("empty component (`//` or trailing `/`)")),
                "." => return Err(invalid("`.` component")),
                ".." => return Err(invalid("`..` component")),
                _ => {}
            }
        }
        Ok(Self(path.to_owned()))
    }

    /// The path as stored in the archive (no leading `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent directory, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<ArchivePath> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| ArchivePath(parent.to_owned()))
    }

    /// Every ancestor directory, outermost first (`a/b/c` -> `a`, `a/b`).
    pub fn ancestors(&self) -> impl Iterator<Item = ArchivePath> + '_ {
        self.0
            .match_indices('/')
            .map(|(i, _)| ArchivePath(self.0[..i].to_owned()))
    }
}

impl Ord for ArchivePath {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.split('/').cmp(other.0.split('/'))
    }
}

impl PartialOrd for ArchivePath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ArchivePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ArchivePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_relative_paths() {
        for ok in [
            "init",
            "dev/console",
            "lib/modules/6.1.0-56-amd64/kernel/fs/isofs/isofs.ko",
        ] {
            assert_eq!(ArchivePath::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_bad_paths() {
        let long = "a".repeat(PATH_MAX);
        for bad in [
            long.as_str(),
            "",
            "/init",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            "../etc",
            "a/../b",
            "a/..",
            "a\0b",
        ] {
            let err = ArchivePath::new(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidPath { ref path, .. } if path == bad),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn parents_and_ancestors() {
        let p = ArchivePath::new("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        let ancestors: Vec<_> = p.ancestors().map(|a| a.0).collect();
        assert_eq!(ancestors, ["a", "a/b"]);
        assert!(ArchivePath::new("a").unwrap().parent().is_none());
    }

    #[test]
    fn component_order_keeps_directories_together() {
        let mut paths: Vec<_> = ["a-b", "a/c", "a", "a/b/d", "a/b"]
            .into_iter()
            .map(|p| ArchivePath::new(p).unwrap())
            .collect();
        paths.sort();
        let sorted: Vec<_> = paths.iter().map(ArchivePath::as_str).collect();
        assert_eq!(sorted, ["a", "a/b", "a/b/d", "a/c", "a-b"]);
    }
}
