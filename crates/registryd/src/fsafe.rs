//! Opening files of a cache root without ever leaving it: the relative path is walked one
//! component at a time with `openat(O_NOFOLLOW)`, so a symlink anywhere inside the root (a
//! directory or the file itself) is refused instead of followed, and a `..` or absolute
//! component is refused before any call. The root itself may be a symlink (the operator named
//! it); nothing below it may.
//!
//! Routing already guarantees that names are grammar-checked; this is the second wall, against
//! what is on disk (a tree copied from somewhere else, or tampered with).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, openat, statat};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Not there (or a path component is not a directory): the next root may have it.
    #[error("not found")]
    NotFound,
    #[error("is a symbolic link or passes through one; links in a cache are not followed")]
    Symlink,
    #[error("is not a regular file")]
    NotRegular,
    #[error("is {size} bytes, more than the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("relative path {0:?} has a component other than a plain name")]
    BadPath(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<rustix::io::Errno> for OpenError {
    fn from(e: rustix::io::Errno) -> Self {
        match e {
            rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR => Self::NotFound,
            rustix::io::Errno::LOOP => Self::Symlink,
            e => Self::Io(e.into()),
        }
    }
}

/// The plain names of `rel`, or an error for `..`, `.`, `/` or a prefix.
fn names(rel: &Path) -> Result<Vec<&OsStr>, OpenError> {
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(OpenError::BadPath(rel.display().to_string())),
        })
        .collect()
}

fn open_root(root: &Path) -> Result<OwnedFd, OpenError> {
    Ok(rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory `root/rel`, every component of `rel` without following links.
pub fn open_dir(root: &Path, rel: &Path) -> Result<OwnedFd, OpenError> {
    let mut dir = open_root(root)?;
    for name in names(rel)? {
        dir = match openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // With O_DIRECTORY, a link is "not a directory" rather than ELOOP: tell the two
            // apart, so that a link is reported as one (both are refused).
            Err(rustix::io::Errno::NOTDIR) => {
                return Err(match statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        OpenError::Symlink
                    }
                    _ => OpenError::NotFound,
                });
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(dir)
}

/// Opens the regular file `root/rel` for reading, no component followed if it is a link.
pub fn open_file(root: &Path, rel: &Path) -> Result<File, OpenError> {
    let (last, parent) = match rel.file_name() {
        Some(last) => (last, rel.parent().unwrap_or(Path::new(""))),
        None => return Err(OpenError::BadPath(rel.display().to_string())),
    };
    let dir = open_dir(root, parent)?;
    // NONBLOCK: opening a FIFO planted in the tree must not hang the request; it is then
    // refused as not regular. On regular files the flag changes nothing.
    let fd = openat(
        &dir,
        last,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    let file = File::from(fd);
    if !file.metadata()?.file_type().is_file() {
        return Err(OpenError::NotRegular);
    }
    Ok(file)
}

/// Reads a whole small file (a manifest or tag), refusing one over `limit` bytes without
/// reading it.
pub fn read_small(root: &Path, rel: &Path, limit: u64) -> Result<Vec<u8>, OpenError> {
    let file = open_file(root, rel)?;
    let size = file.metadata()?.len();
    if size > limit {
        return Err(OpenError::TooLarge { size, limit });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // `take`: a file that grows while it is read cannot make this read more than the limit.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(OpenError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// What an entry of a listed directory is. Links and special files are reported as such, never
/// followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Other,
}

/// The UTF-8 names in the directory `root/rel` with their kinds (from `lstat`, since some file
/// systems, ISO 9660 among them, give no type in the directory entry). Names that are not UTF-8
/// cannot be asked for, so they are left out.
pub fn list_dir(root: &Path, rel: &Path) -> Result<Vec<(String, Kind)>, OpenError> {
    let dir = open_dir(root, rel)?;
    let mut out = Vec::new();
    for entry in Dir::read_from(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let kind = match statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => Kind::File,
                FileType::Directory => Kind::Dir,
                _ => Kind::Other,
            },
            // Removed between listing and stat: it is not there.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        out.push((name.to_owned(), kind));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn opens_inside_refuses_links_and_specials() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("blob")).unwrap();
        std::fs::write(r.join("blob/ok"), b"ok").unwrap();
        symlink(outside.path().join("secret"), r.join("blob/link")).unwrap();
        symlink(outside.path(), r.join("linkdir")).unwrap();
        symlink("ok", r.join("blob/rel-link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            r.join("blob/fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();

        assert_eq!(read_small(r, Path::new("blob/ok"), 10).unwrap(), b"ok");
        assert!(matches!(
            open_file(r, Path::new("blob/link")),
            Err(OpenError::Symlink)
        ));
        assert!(matches!(
            open_file(r, Path::new("blob/rel-link")),
            Err(OpenError::Symlink)
        ));
        assert!(matches!(
            open_file(r, Path::new("linkdir/secret")),
            Err(OpenError::Symlink)
        ));
        assert!(matches!(
            open_file(r, Path::new("blob/fifo")),
            Err(OpenError::NotRegular)
        ));
        assert!(matches!(
            open_file(r, Path::new("blob")),
            Err(OpenError::NotRegular)
        ));
        assert!(matches!(
            open_file(r, Path::new("blob/missing")),
            Err(OpenError::NotFound)
        ));
        assert!(matches!(
            open_file(r, Path::new("blob/ok/x")),
            Err(OpenError::NotFound)
        ));
        for bad in [
            "../secret",
            "blob/../blob/ok",
            "/etc/passwd",
            "./blob/ok",
            "",
        ] {
            assert!(
                matches!(open_file(r, Path::new(bad)), Err(OpenError::BadPath(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            read_small(r, Path::new("blob/ok"), 1),
            Err(OpenError::TooLarge { size: 2, limit: 1 })
        ));

        let mut listed = list_dir(r, Path::new("blob")).unwrap();
        listed.sort();
        assert_eq!(
            listed,
            [
                ("fifo".to_owned(), Kind::Other),
                ("link".to_owned(), Kind::Other),
                ("ok".to_owned(), Kind::File),
                ("rel-link".to_owned(), Kind::Other),
            ]
        );
        assert!(matches!(
            list_dir(r, Path::new("linkdir")),
            Err(OpenError::Symlink)
        ));
    }
}
