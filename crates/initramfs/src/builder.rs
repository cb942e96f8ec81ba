//! Planning an archive (pure, apart from one `stat` per host file) and writing it (streaming).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::compress::{Compression, Encoder};
use crate::newc::{Header, NewcWriter, PERMISSION_MASK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG};
use crate::path::ArchivePath;
use crate::{Error, Result};

/// Copy buffer for host files: large enough to amortize syscalls, small enough to never matter.
const COPY_BUF: usize = 64 * 1024;
/// Between the cpio layer and the compressor, so 110-byte headers do not each reach the encoder
/// (or, uncompressed, the output file) as a separate call.
const OUT_BUF: usize = 64 * 1024;
/// Mode of the directories the builder adds on its own.
const IMPLICIT_DIR_MODE: u32 = 0o755;

#[derive(Debug)]
enum Kind {
    /// `explicit` is false for parents the builder added; adding the same directory explicitly
    /// later then just sets its mode.
    Dir {
        explicit: bool,
    },
    File(Source),
    Symlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
}

#[derive(Debug)]
enum Source {
    /// Read at write time. `size` is what it was when planned; the header is written before the
    /// data, so a file that changes size in between cannot be archived correctly.
    Host {
        path: PathBuf,
        size: u32,
    },
    Bytes(Vec<u8>),
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    /// Permission bits only; the file type comes from `kind`.
    mode: u32,
}

/// Collects the entries of a newc archive, then writes them in a deterministic order.
///
/// Every entry is owned by root (uid/gid 0) and carries the same mtime, so the output depends only
/// on the planned contents. Missing parent directories are added (mode 0755), and entries are
/// emitted sorted by path components, which puts every directory before its contents, as the
/// kernel's unpacker requires.
#[derive(Debug, Default)]
pub struct Builder {
    entries: BTreeMap<ArchivePath, Entry>,
    mtime: u32,
}

impl Builder {
    /// An empty archive with mtime 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the mtime of every entry (seconds since the epoch, e.g. `SOURCE_DATE_EPOCH`).
    pub fn set_mtime(&mut self, mtime: u32) -> &mut Self {
        self.mtime = mtime;
        self
    }

    /// Adds a directory. Adding one the builder already created as a parent sets its mode.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        let path = self.prepare(path)?;
        match self.entries.get_mut(&path) {
            Some(Entry {
                kind: Kind::Dir { explicit },
                mode: old_mode,
            }) if !*explicit => {
                *explicit = true;
                *old_mode = mode & PERMISSION_MASK;
                Ok(self)
            }
            Some(_) => Err(Error::Duplicate {
                path: path.to_string(),
            }),
            None => self.insert(path, Kind::Dir { explicit: true }, mode),
        }
    }

    /// Adds a regular file whose contents are read from `host` when the archive is written.
    ///
    /// `host` is `stat`ed now: it must be a regular file (symlinks are followed) under 4 GiB, the
    /// limit of the newc size field.
    pub fn file(&mut self, path: &str, host: impl AsRef<Path>, mode: u32) -> Result<&mut Self> {
        let path = self.prepare(path)?;
        self.check_free(&path)?;
        let host = host.as_ref();
        let meta = std::fs::metadata(host).map_err(|source| Error::Stat {
            path: host.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Err(Error::NotRegularFile {
                path: host.to_owned(),
            });
        }
        let size = u32::try_from(meta.len()).map_err(|_| Error::TooLarge {
            path: path.to_string(),
            size: meta.len(),
        })?;
        let source = Source::Host {
            path: host.to_owned(),
            size,
        };
        self.insert(path, Kind::File(source), mode)
    }

    /// Adds a regular file with the given contents.
    pub fn file_bytes(
        &mut self,
        path: &str,
        contents: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Result<&mut Self> {
        let path = self.prepare(path)?;
        self.check_free(&path)?;
        let contents = contents.into();
        check_size(&path, contents.len())?;
        self.insert(path, Kind::File(Source::Bytes(contents)), mode)
    }

    /// Adds a symbolic link pointing at `target` (stored verbatim, absolute or relative).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let path = self.prepare(path)?;
        self.check_free(&path)?;
        if target.is_empty() || target.contains('\0') {
            return Err(Error::InvalidSymlinkTarget {
                path: path.to_string(),
                target: target.to_owned(),
            });
        }
        check_size(&path, target.len())?;
        self.insert(path, Kind::Symlink(target.to_owned()), 0o777)
    }

    /// Adds a character device node (e.g. `dev/console`, 5:1). Archives carry device numbers, so
    /// no privilege is needed to build one; the kernel creates the node when unpacking.
    pub fn char_device(
        &mut self,
        path: &str,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> Result<&mut Self> {
        let path = self.prepare(path)?;
        self.check_free(&path)?;
        self.insert(path, Kind::CharDevice { major, minor }, mode)
    }

    /// The planned entries in the order they will be written.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(ArchivePath::as_str)
    }

    /// Number of planned entries (without the trailer).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing has been planned.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the archive, compressed as asked, into `out` and returns it once the compressed
    /// stream is complete and `out` has been flushed (syncing a file is left to the caller).
    ///
    /// Host files are streamed through a fixed buffer. One whose size no longer matches the plan
    /// is an error: a header already promised the old size.
    pub fn write<W: Write>(&self, out: W, compression: Compression) -> Result<W> {
        let encoder = Encoder::new(out, compression)?;
        let mut cpio = NewcWriter::new(BufWriter::with_capacity(OUT_BUF, encoder));
        let nlinks = self.dir_nlinks();
        let mut buf = vec![0u8; COPY_BUF];

        // Inodes only need to be distinct (the unpacker uses them to spot hard links among files
        // with nlink > 1); numbering in write order keeps them deterministic.
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (type_bits, nlink, filesize, rdev) = match &entry.kind {
                Kind::Dir { .. } => (S_IFDIR, nlinks.get(path).copied().unwrap_or(2), 0, (0, 0)),
                Kind::File(Source::Host { size, .. }) => (S_IFREG, 1, *size, (0, 0)),
                Kind::File(Source::Bytes(b)) => (S_IFREG, 1, len_u32(b.len()), (0, 0)),
                Kind::Symlink(target) => (S_IFLNK, 1, len_u32(target.len()), (0, 0)),
                Kind::CharDevice { major, minor } => (S_IFCHR, 1, 0, (*major, *minor)),
            };
            cpio.write_header(&Header {
                ino,
                mode: type_bits | entry.mode,
                nlink,
                mtime: self.mtime,
                filesize,
                rdev_major: rdev.0,
                rdev_minor: rdev.1,
                name: path.as_str(),
            })
            .map_err(Error::Write)?;
            match &entry.kind {
                Kind::File(Source::Host { path: host, size }) => {
                    copy_host_file(host, u64::from(*size), &mut cpio, &mut buf)?;
                }
                Kind::File(Source::Bytes(b)) => cpio.write_data(b).map_err(Error::Write)?,
                Kind::Symlink(target) => {
                    cpio.write_data(target.as_bytes()).map_err(Error::Write)?
                }
                Kind::Dir { .. } | Kind::CharDevice { .. } => {}
            }
            cpio.pad().map_err(Error::Write)?;
        }

        let buffered = cpio.finish().map_err(Error::Write)?;
        let encoder = buffered
            .into_inner()
            .map_err(|e| Error::Write(e.into_error()))?;
        encoder.finish().map_err(Error::Write)
    }

    /// Validates `path` and checks that every ancestor it already has is a directory. Nothing is
    /// inserted here, so a refused entry leaves the plan as it was.
    fn prepare(&self, path: &str) -> Result<ArchivePath> {
        let path = ArchivePath::new(path)?;
        for ancestor in path.ancestors() {
            match self.entries.get(&ancestor) {
                None
                | Some(Entry {
                    kind: Kind::Dir { .. },
                    ..
                }) => {}
                Some(_) => {
                    return Err(Error::ParentNotDirectory {
                        path: path.to_string(),
                        parent: ancestor.to_string(),
                    });
                }
            }
        }
        Ok(path)
    }

    fn check_free(&self, path: &ArchivePath) -> Result<()> {
        if self.entries.contains_key(path) {
            return Err(Error::Duplicate {
                path: path.to_string(),
            });
        }
        Ok(())
    }

    /// Inserts a prepared entry and the parents it is missing.
    fn insert(&mut self, path: ArchivePath, kind: Kind, mode: u32) -> Result<&mut Self> {
        for ancestor in path.ancestors() {
            self.entries.entry(ancestor).or_insert(Entry {
                kind: Kind::Dir { explicit: false },
                mode: IMPLICIT_DIR_MODE,
            });
        }
        let entry = Entry {
            kind,
            mode: mode & PERMISSION_MASK,
        };
        self.entries.insert(path, entry);
        Ok(self)
    }

    /// A directory's link count: its own entry, its `.`, and each subdirectory's `..`.
    fn dir_nlinks(&self) -> BTreeMap<&ArchivePath, u32> {
        let mut nlinks: BTreeMap<&ArchivePath, u32> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.kind, Kind::Dir { .. }))
            .map(|(p, _)| (p, 2))
            .collect();
        for (path, entry) in &self.entries {
            if let (Kind::Dir { .. }, Some(parent)) = (&entry.kind, path.parent())
                && let Some(n) = nlinks.get_mut(&parent)
            {
                *n += 1;
            }
        }
        nlinks
    }
}

fn check_size(path: &ArchivePath, len: usize) -> Result<()> {
    if u32::try_from(len).is_err() {
        return Err(Error::TooLarge {
            path: path.to_string(),
            size: len as u64,
        });
    }
    Ok(())
}

/// Only called on lengths `check_size` accepted when planning.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Streams exactly `planned` bytes of `host` into the archive and checks nothing follows.
fn copy_host_file<W: Write>(
    host: &Path,
    planned: u64,
    cpio: &mut NewcWriter<W>,
    buf: &mut [u8],
) -> Result<()> {
    let read_err = |source| Error::Read {
        path: host.to_owned(),
        source,
    };
    let mut file = File::open(host).map_err(read_err)?;
    let size_changed = |file: &File| Error::SizeChanged {
        path: host.to_owned(),
        planned,
        now: file.metadata().map(|m| m.len()).ok(),
    };
    let mut left = planned;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => return Err(size_changed(&file)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        cpio.write_data(&buf[..n]).map_err(Error::Write)?;
        left -= n as u64;
    }
    // A file that grew would otherwise be silently cut at the planned size.
    loop {
        match file.read(&mut buf[..1]) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(size_changed(&file)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        }
    }
}
