//! Writing an image cache as an OCI image layout (the oci-wrapped form `talosctl images
//! cache-create --layout oci` writes): one image per platform, each with a single layer holding
//! the whole flat tree as an **uncompressed** tar.
//!
//! ```text
//! oci-layout                         {"imageLayoutVersion":"1.0.0"}
//! index.json                         one manifest per platform, `platform` and `ref.name` set
//! blobs/sha256/<layer>               the flat tree as a tar, shared by every platform's image
//! blobs/sha256/<config>, <manifest>  per platform
//! ```
//!
//! Every platform's image carries the same layer (so the layout costs one copy of the tree): the
//! platform only tells a reader which image to take, and a node of any architecture is served
//! from the same tree. Upstream writes only the first requested platform, which is why arm64
//! media could not be built from its caches.
//!
//! The layer is not compressed: the tree is almost entirely compressed layers, and a plain tar
//! keeps every file's bytes contiguous in the layer blob, so a reader copies them at disk speed.
//! Because every file's size is known before its bytes are (the manifests give every blob's size),
//! the tar is laid out up front by a pure function ([`plan_layer`]): each header's and each file's
//! offset. The layer file is then created at its final size, the headers written, and each file's
//! bytes written into its slot, in any order and in parallel ([`LayerFile`]); one sequential pass
//! then hashes it ([`hash_layer`]), which may run while the slots are still being filled
//! ([`Gate`]).
//!
//! Reproducible: entries in sorted order (depth first, each directory's entries by name, a
//! directory before its contents), owner 0, modes 0644/0755, times and the config's `created`
//! from one given epoch, no host names or user names, POSIX ustar headers with PAX records only
//! where ustar cannot hold a value (names over 100 bytes), JSON with sorted keys.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use serde_json::json;

use crate::Platform;
use crate::digest::{BUF_SIZE, Digest, Hasher};
use crate::layout::REF_NAME;
/// The layer's media type is [`OCI_LAYER_TAR`]: a tar without compression.
pub use imager_oci::media::{OCI_CONFIG, OCI_LAYER_TAR};
use imager_oci::media::{OCI_INDEX, OCI_MANIFEST};

/// Tar's unit: headers are one block, file data is padded to whole blocks.
pub const BLOCK: u64 = 512;
/// The end of an archive: two zero blocks.
const TRAILER: u64 = 2 * BLOCK;
/// The longest name a ustar header's `name` field holds; longer ones get a PAX `path` record.
const USTAR_NAME: usize = 100;
/// The largest value of a ustar 12-byte numeric field (11 octal digits); larger sizes and times
/// get a PAX record.
const USTAR_MAX: u64 = 0o777_7777_7777;
/// The name of PAX extended headers (what tar-rs writes; readers never use it as a path).
const PAX_NAME: &str = "././@PaxHeader";

#[derive(Debug, thiserror::Error)]
pub enum OciOutError {
    #[error("reading the cache tree at {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {what} cannot be archived; a cache tree holds only files and directories")]
    NotArchivable { path: PathBuf, what: &'static str },
    #[error("{path}: the name is not UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("{name:?} cannot be a tar entry name (empty, absolute, with `.`, `..` or NUL)")]
    BadName { name: String },
    #[error("{name} is both a file and a directory of the layer")]
    NameConflict { name: String },
    #[error("{path}: {actual} bytes, but {expected} were planned for it in the layer")]
    SizeChanged {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the copy of {expected} in the layer (ending at byte {end}) hashes to {actual}")]
    SlotDigest {
        end: u64,
        expected: Digest,
        actual: Digest,
    },
    #[error("hashing the layer stopped: a slot was never filled")]
    Aborted,
}

/// One entry of the tree, in archive order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Relative, `/`-separated; directories end with `/`.
    pub name: String,
    pub size: u64,
    pub is_dir: bool,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedLayout {
    pub layer: Digest,
    pub layer_size: u64,
    /// The sha256 of the uncompressed tar (the config's `rootfs.diff_ids`): the layer's digest,
    /// since the layer is not compressed.
    pub diff_id: Digest,
    /// Per platform, in `index.json` order: the platform and its image manifest.
    pub images: Vec<(Option<Platform>, Digest)>,
}

/// Lists `root` for the archive: depth first, each directory's entries sorted by name (bytes), a
/// directory before its contents. Symbolic links and special files are refused rather than
/// followed or archived.
pub fn tree_entries(root: &Path) -> Result<Vec<TreeEntry>, OciOutError> {
    let mut out = Vec::new();
    walk(root, "", &mut out)?;
    Ok(out)
}

fn walk(root: &Path, prefix: &str, out: &mut Vec<TreeEntry>) -> Result<(), OciOutError> {
    let dir = root.join(prefix);
    let read_err = |source| OciOutError::Read {
        path: dir.clone(),
        source,
    };
    let mut children = Vec::new();
    for entry in fs::read_dir(&dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| OciOutError::NotUtf8 { path: path.clone() })?;
        // DirEntry::metadata does not follow symlinks.
        let meta = entry.metadata().map_err(|source| OciOutError::Read {
            path: path.clone(),
            source,
        })?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Err(OciOutError::NotArchivable {
                path,
                what: "a symbolic link",
            });
        }
        if !ft.is_dir() && !ft.is_file() {
            return Err(OciOutError::NotArchivable {
                path,
                what: "a special file",
            });
        }
        children.push((name, ft.is_dir(), meta.len()));
    }
    children.sort();
    for (name, is_dir, size) in children {
        let rel = format!("{prefix}{name}");
        if is_dir {
            let dir_name = format!("{rel}/");
            out.push(TreeEntry {
                name: dir_name.clone(),
                size: 0,
                is_dir: true,
            });
            walk(root, &dir_name, out)?;
        } else {
            out.push(TreeEntry {
                name: rel,
                size,
                is_dir: false,
            });
        }
    }
    Ok(())
}

/// The entries of a layer holding `files` (relative `/`-separated paths and sizes): the files and
/// every directory above them, in archive order, the same order [`tree_entries`] gives for a tree
/// holding these files. A name given twice keeps its last size (as a later write replaces an
/// earlier one in a tree).
pub fn layer_entries<'a>(
    files: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<Vec<TreeEntry>, OciOutError> {
    let mut sizes: BTreeMap<Vec<&'a str>, Option<u64>> = BTreeMap::new();
    for (name, size) in files {
        let parts: Vec<&str> = name.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
        {
            return Err(OciOutError::BadName {
                name: name.to_owned(),
            });
        }
        for depth in 1..parts.len() {
            if let Some(Some(_)) = sizes.insert(parts[..depth].to_vec(), None) {
                return Err(OciOutError::NameConflict {
                    name: parts[..depth].join("/"),
                });
            }
        }
        if let Some(None) = sizes.insert(parts, Some(size)) {
            return Err(OciOutError::NameConflict {
                name: name.to_owned(),
            });
        }
    }
    // Component-wise order is depth first with each directory's entries sorted by name, a
    // directory right before its contents: the order of a walk that sorts each directory.
    Ok(sizes
        .into_iter()
        .map(|(parts, size)| match size {
            Some(size) => TreeEntry {
                name: parts.join("/"),
                size,
                is_dir: false,
            },
            None => TreeEntry {
                name: format!("{}/", parts.join("/")),
                size: 0,
                is_dir: true,
            },
        })
        .collect())
}

/// Where one entry lies in the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSlot {
    /// As in [`TreeEntry::name`].
    pub name: String,
    pub is_dir: bool,
    /// Where its header blocks start.
    pub header_offset: u64,
    /// Its header blocks: one ustar block, preceded by a PAX extended header (a block and its
    /// records) when the name or size does not fit ustar.
    pub header: Vec<u8>,
    /// Where its bytes start (right after the header); they are zero-padded to a whole block.
    pub data_offset: u64,
    pub size: u64,
}

/// The whole layer, laid out before any of its file bytes exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    /// In archive order (by offset).
    pub slots: Vec<LayerSlot>,
    /// The layer's size, the two zero blocks that end the archive included.
    pub len: u64,
}

impl LayerPlan {
    /// The slots that hold file data, in archive order.
    pub fn files(&self) -> impl Iterator<Item = &LayerSlot> {
        self.slots.iter().filter(|s| !s.is_dir)
    }
}

/// Lays out the tar of `entries` (in archive order, as [`tree_entries`] or [`layer_entries`] give
/// them), every entry owned by 0, dated `epoch`, files 0644 and directories 0755. Pure: the same
/// entries and epoch give the same plan, hence the same layer bytes.
pub fn plan_layer(entries: &[TreeEntry], epoch: u64) -> Result<LayerPlan, OciOutError> {
    let mut slots = Vec::with_capacity(entries.len());
    let mut at = 0u64;
    for e in entries {
        let header = entry_header(e, epoch)?;
        let header_offset = at;
        let data_offset = header_offset + header.len() as u64;
        at = data_offset + padded(e.size);
        slots.push(LayerSlot {
            name: e.name.clone(),
            is_dir: e.is_dir,
            header_offset,
            header,
            data_offset,
            size: e.size,
        });
    }
    Ok(LayerPlan {
        slots,
        len: at + TRAILER,
    })
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// The header blocks of one entry.
fn entry_header(e: &TreeEntry, epoch: u64) -> Result<Vec<u8>, OciOutError> {
    let bare = e.name.trim_end_matches('/');
    if bare.is_empty() || bare.starts_with('/') || e.name.contains('\0') {
        return Err(OciOutError::BadName {
            name: e.name.clone(),
        });
    }
    let mut records = Vec::new();
    if e.name.len() > USTAR_NAME {
        records.extend(pax_record("path", &e.name));
    }
    if e.size > USTAR_MAX {
        records.extend(pax_record("size", &e.size.to_string()));
    }
    if epoch > USTAR_MAX {
        records.extend(pax_record("mtime", &epoch.to_string()));
    }
    let (kind, mode) = if e.is_dir {
        (b'5', 0o755)
    } else {
        (b'0', 0o644)
    };
    let name = truncated(&e.name);
    let main = ustar_block(name, mode, e.size, epoch, kind);
    if records.is_empty() {
        return Ok(main.to_vec());
    }
    let mut out = ustar_block(
        PAX_NAME.as_bytes(),
        0o644,
        records.len() as u64,
        epoch,
        b'x',
    )
    .to_vec();
    let records_len = records.len() as u64;
    out.extend(records);
    out.resize(BLOCK as usize + padded(records_len) as usize, 0);
    out.extend(main);
    Ok(out)
}

/// The name as a ustar `name` field holds it: whole, or (a PAX `path` record giving the real one)
/// its first 100 bytes, for readers that do not know PAX.
fn truncated(name: &str) -> &[u8] {
    &name.as_bytes()[..name.len().min(USTAR_NAME)]
}

/// One PAX record, `<len> <key>=<value>\n`, where `<len>` counts the whole record, its own digits
/// included.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + decimal_digits(rest);
    // Adding the digits can add a digit (e.g. 98 + 2 -> 100).
    len = rest + decimal_digits(len);
    format!("{len} {key}={value}\n").into_bytes()
}

fn decimal_digits(n: usize) -> usize {
    n.to_string().len()
}

/// A POSIX ustar header block. Numbers beyond the field's range are written as 0 (a PAX record
/// carries them).
fn ustar_block(name: &[u8], mode: u32, size: u64, mtime: u64, kind: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], if size > USTAR_MAX { 0 } else { size });
    octal(&mut h[136..148], if mtime > USTAR_MAX { 0 } else { mtime });
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // uname and gname stay empty: no user or host names.
    octal(&mut h[329..337], 0); // devmajor
    octal(&mut h[337..345], 0); // devminor
    // The checksum is summed with its own field as spaces, then written as six octal digits, NUL,
    // space.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    h
}

/// Zero-padded octal filling all but the last byte of `field`, then NUL. The caller keeps `value`
/// within the field.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    let text = text.as_bytes();
    field[..width].copy_from_slice(&text[text.len() - width..]);
    field[width] = 0;
}

// ---------------------------------------------------------------------------------------------
// Writing

/// A layer file being filled: created at its planned size with every header in place, so that
/// each file's bytes can be written into its slot independently ([`LayerFile::write_at`],
/// [`LayerFile::copy_into`], or any writer at [`LayerSlot::data_offset`]). Padding and the
/// trailer are the zeros `set_len` gives. A temp file beside the final name until
/// [`LayerFile::persist`].
#[derive(Debug)]
pub struct LayerFile {
    tmp: imager_staging::StagedFile,
}

impl LayerFile {
    /// Creates `.tmp-layer-XXXX` in `dir` (0644), sized and with the plan's headers written.
    pub fn create(dir: &Path, plan: &LayerPlan) -> Result<Self, OciOutError> {
        let tmp =
            imager_staging::StagedFile::create(dir, ".tmp-layer-", 0o644).map_err(|source| {
                OciOutError::Write {
                    path: dir.to_owned(),
                    source,
                }
            })?;
        let layer = Self { tmp };
        let err = layer.write_err();
        layer.file().set_len(plan.len).map_err(&err)?;
        // Headers of consecutive entries (directories, empty files) are gathered into one write.
        let mut run: Vec<u8> = Vec::new();
        let mut run_at = 0u64;
        for slot in &plan.slots {
            if run_at + run.len() as u64 != slot.header_offset {
                layer.file().write_all_at(&run, run_at).map_err(&err)?;
                run.clear();
                run_at = slot.header_offset;
            }
            run.extend_from_slice(&slot.header);
            if slot.size > 0 {
                layer.file().write_all_at(&run, run_at).map_err(&err)?;
                run.clear();
                run_at = slot.data_offset + padded(slot.size);
            }
        }
        layer.file().write_all_at(&run, run_at).map_err(&err)?;
        Ok(layer)
    }

    pub fn file(&self) -> &File {
        self.tmp.file()
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn write_err(&self) -> impl Fn(io::Error) -> OciOutError + use<> {
        let path = self.path().to_owned();
        move |source| OciOutError::Write {
            path: path.clone(),
            source,
        }
    }

    /// Writes `bytes` (all of the slot's data) into `slot`.
    pub fn write_at(&self, slot: &LayerSlot, bytes: &[u8]) -> Result<(), OciOutError> {
        if bytes.len() as u64 != slot.size {
            return Err(OciOutError::SizeChanged {
                path: PathBuf::from(&slot.name),
                expected: slot.size,
                actual: bytes.len() as u64,
            });
        }
        self.file()
            .write_all_at(bytes, slot.data_offset)
            .map_err(self.write_err())
    }

    /// Copies the file at `src` into `slot` in the kernel (`copy_file_range`: a reflink where
    /// the file system has them, else no trip through user space); through a buffer where the
    /// kernel cannot. `src` must be exactly the slot's size.
    pub fn copy_into(&self, slot: &LayerSlot, src: &Path) -> Result<(), OciOutError> {
        let read_err = |source| OciOutError::Read {
            path: src.to_owned(),
            source,
        };
        let input = File::open(src).map_err(read_err)?;
        let len = input.metadata().map_err(read_err)?.len();
        if len != slot.size {
            return Err(OciOutError::SizeChanged {
                path: src.to_owned(),
                expected: slot.size,
                actual: len,
            });
        }
        copy_range(&input, self.file(), slot.data_offset, slot.size).map_err(|e| match e {
            CopyFailure::Read(source) => read_err(source),
            CopyFailure::Write(source) => (self.write_err())(source),
        })
    }

    /// Names the layer by `digest` in its directory.
    pub fn persist(self, digest: &Digest) -> Result<PathBuf, OciOutError> {
        let dest = self.path().with_file_name(digest.hex());
        self.tmp
            .persist(&dest)
            .map_err(|source| OciOutError::Write {
                path: dest.clone(),
                source,
            })?;
        Ok(dest)
    }
}

enum CopyFailure {
    Read(io::Error),
    Write(io::Error),
}

fn copy_range(src: &File, out: &File, at: u64, len: u64) -> Result<(), CopyFailure> {
    let mut off_in = 0u64;
    let mut off_out = at;
    while off_in < len {
        let want = usize::try_from(len - off_in)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(src, Some(&mut off_in), out, Some(&mut off_out), want) {
            Ok(0) => {
                return Err(CopyFailure::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before its planned length",
                )));
            }
            Ok(_) => {}
            // Across file systems on old kernels, or where the kernel has no copy_file_range.
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::OPNOTSUPP,
            ) => return copy_buffered(src, off_in, out, off_out, len - off_in),
            // The errno does not say which side failed; the message gives the cause.
            Err(e) => return Err(CopyFailure::Write(e.into())),
        }
    }
    Ok(())
}

fn copy_buffered(
    src: &File,
    mut off_in: u64,
    out: &File,
    mut off_out: u64,
    mut left: u64,
) -> Result<(), CopyFailure> {
    let mut buf = vec![0u8; BUF_SIZE];
    while left > 0 {
        let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        src.read_exact_at(&mut buf[..take], off_in)
            .map_err(CopyFailure::Read)?;
        out.write_all_at(&buf[..take], off_out)
            .map_err(CopyFailure::Write)?;
        off_in += take as u64;
        off_out += take as u64;
        left -= take as u64;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Hashing

/// Which file slots of a layer are filled, for a [`hash_layer`] that runs while they are being
/// filled: it reads the layer in order and waits at each slot until it is marked filled. Headers
/// and any bytes written before hashing starts need no gate.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug)]
struct GateState {
    /// `(data offset, size, filled, digest to check)`, by offset.
    slots: Vec<(u64, u64, bool, Option<Digest>)>,
    aborted: bool,
}

impl Gate {
    /// A gate over `slots` (data offset and size each), none filled yet.
    pub fn new(mut slots: Vec<(u64, u64)>) -> Self {
        // An empty slot has nothing to wait for (and may share its offset with the next header).
        slots.retain(|&(_, size)| size > 0);
        slots.sort_unstable();
        Self {
            state: Mutex::new(GateState {
                slots: slots
                    .into_iter()
                    .map(|(o, s)| (o, s, false, None))
                    .collect(),
                aborted: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// A gate with nothing to wait for.
    pub fn open() -> Self {
        Self::new(Vec::new())
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot at `data_offset` is filled. With `check`, the hashing pass also hashes the slot on
    /// its own and fails unless it is `check` (for bytes that were copied, not verified on the
    /// way in).
    pub fn fill(&self, data_offset: u64, check: Option<Digest>) {
        let mut state = self.lock();
        if let Ok(i) = state.slots.binary_search_by_key(&data_offset, |s| s.0) {
            state.slots[i].2 = true;
            state.slots[i].3 = check;
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Stops the hashing pass: the slots will not all be filled.
    pub fn abort(&self) {
        self.lock().aborted = true;
        self.changed.notify_all();
    }

    /// Waits until slot `i` is filled; its digest to check.
    fn wait(&self, i: usize) -> Result<Option<Digest>, OciOutError> {
        let mut state = self.lock();
        loop {
            if state.slots[i].2 {
                return Ok(state.slots[i].3);
            }
            if state.aborted {
                return Err(OciOutError::Aborted);
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn slot(&self, i: usize) -> Option<(u64, u64)> {
        self.lock().slots.get(i).map(|s| (s.0, s.1))
    }
}

/// Hashes the layer file sequentially, in one pass, waiting at each gated slot until it is filled
/// (so it can run while the slots are being written); returns the layer's digest and size.
/// `progress` is told the bytes hashed so far. Slots filled with a digest to check are hashed on
/// their own too, in the same pass.
pub fn hash_layer(
    layer: &File,
    path: &Path,
    len: u64,
    gate: &Gate,
    progress: &mut dyn FnMut(u64),
) -> Result<(Digest, u64), OciOutError> {
    let read_err = |source| OciOutError::Read {
        path: path.to_owned(),
        source,
    };
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut at = 0u64;
    let mut next = 0usize;
    // The slot being read, if it is being checked: its end, its digest, its own hasher.
    let mut checking: Option<(u64, Digest, Hasher)> = None;
    while at < len {
        let mut until = len;
        if let Some((offset, size)) = gate.slot(next) {
            if at >= offset {
                let check = gate.wait(next)?;
                if let Some(expected) = check
                    && size > 0
                {
                    checking = Some((offset + size, expected, Hasher::default()));
                }
                next += 1;
                continue;
            }
            until = offset;
        }
        let take = usize::try_from(until - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let chunk = &mut buf[..take];
        layer.read_exact_at(chunk, at).map_err(read_err)?;
        hasher.update(chunk);
        if let Some((end, expected, own)) = &mut checking {
            let mine = usize::try_from(end.saturating_sub(at))
                .unwrap_or(usize::MAX)
                .min(take);
            own.update(&chunk[..mine]);
            if at + mine as u64 >= *end {
                let (end, expected, own) = (*end, *expected, std::mem::take(own));
                checking = None;
                let (actual, _) = own.finish();
                if actual != expected {
                    return Err(OciOutError::SlotDigest {
                        end,
                        expected,
                        actual,
                    });
                }
            }
        }
        at += take as u64;
        progress(at);
    }
    Ok(hasher.finish())
}

// ---------------------------------------------------------------------------------------------
// The layout

/// Writes the OCI layout for the flat tree at `tree` into `out` (created if missing, expected
/// empty): the layer, then per platform a config and a manifest, then `index.json` and
/// `oci-layout`. `epoch` dates the tar entries and the configs. `progress` is told the bytes of
/// the layer hashed so far.
pub fn write_wrapped_layout(
    tree: &Path,
    out: &Path,
    platforms: &[Option<Platform>],
    epoch: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<WrappedLayout, OciOutError> {
    let entries = tree_entries(tree)?;
    let plan = plan_layer(&entries, epoch)?;
    let blobs = layout_blobs_dir(out)?;
    let layer = LayerFile::create(&blobs, &plan)?;
    for slot in plan.files() {
        // Exactly the listed size: a file that changed since it was listed fails the copy rather
        // than leave a header that lies.
        layer.copy_into(slot, &tree.join(&slot.name))?;
    }
    let (digest, size) = hash_layer(
        layer.file(),
        layer.path(),
        plan.len,
        &Gate::open(),
        progress,
    )?;
    layer.persist(&digest)?;
    write_layout_metadata(out, (digest, size), platforms, epoch)
}

/// Creates `out/blobs/sha256` (and `out`) and returns it.
pub fn layout_blobs_dir(out: &Path) -> Result<PathBuf, OciOutError> {
    let blobs = out.join("blobs/sha256");
    // Through staging: `out` is inside a staged directory.
    imager_staging::create_dir_all(&blobs).map_err(|source| OciOutError::Write {
        path: blobs.clone(),
        source,
    })?;
    Ok(blobs)
}

/// Completes the layout at `out` whose layer (digest and size) is in place: per platform a config
/// and a manifest, then `index.json` and `oci-layout` (written last: a reader that finds it finds
/// the rest).
pub fn write_layout_metadata(
    out: &Path,
    layer: (Digest, u64),
    platforms: &[Option<Platform>],
    epoch: u64,
) -> Result<WrappedLayout, OciOutError> {
    let blobs = layout_blobs_dir(out)?;
    let (layer, layer_size) = layer;
    // Not compressed: the diff ID is the layer's digest.
    let diff_id = layer;
    let created = rfc3339(epoch);
    let mut images = Vec::new();
    let mut index_entries = Vec::new();
    for platform in platforms {
        let config = config_json(platform.as_ref(), &diff_id, &created);
        let config_digest = write_blob(&blobs, &config)?;
        let manifest = manifest_json((&config_digest, config.len() as u64), (&layer, layer_size));
        let manifest_digest = write_blob(&blobs, &manifest)?;
        index_entries.push((
            platform.clone(),
            manifest_digest,
            manifest.len() as u64,
            ref_name(platform.as_ref()),
        ));
        images.push((platform.clone(), manifest_digest));
    }
    write_file(&out.join("index.json"), &index_json(&index_entries))?;
    write_file(
        &out.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(WrappedLayout {
        layer,
        layer_size,
        diff_id,
        images,
    })
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<Digest, OciOutError> {
    let digest = Digest::of(bytes);
    write_file(&blobs.join(digest.hex()), bytes)?;
    Ok(digest)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OciOutError> {
    fs::write(path, bytes).map_err(|source| OciOutError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The image config: the platform (none for an image without one, as upstream's wrapper has it),
/// the layer's diff ID, the fixed creation time. Keys come out sorted (serde_json's map).
pub fn config_json(platform: Option<&Platform>, diff_id: &Digest, created: &str) -> Vec<u8> {
    let mut config = json!({
        "created": created,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
    });
    if let Some(p) = platform {
        config["os"] = json!(p.os);
        config["architecture"] = json!(p.architecture);
        if let Some(v) = &p.variant {
            config["variant"] = json!(v);
        }
    }
    json_bytes(&config)
}

/// An OCI image manifest with one uncompressed tar layer.
pub fn manifest_json(config: (&Digest, u64), layer: (&Digest, u64)) -> Vec<u8> {
    json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0.to_string(), "size": config.1},
        "layers": [{"mediaType": OCI_LAYER_TAR, "digest": layer.0.to_string(), "size": layer.1}],
    }))
}

/// `index.json`: per image its platform and `org.opencontainers.image.ref.name`.
pub fn index_json(images: &[(Option<Platform>, Digest, u64, String)]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(platform, digest, size, name)| {
            let mut d = json!({
                "mediaType": OCI_MANIFEST,
                "digest": digest.to_string(),
                "size": size,
                "annotations": {REF_NAME: name},
            });
            if let Some(p) = platform {
                d["platform"] = json!(p);
            }
            d
        })
        .collect();
    json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
}

/// The name of a platform's image: a valid tag (`linux-amd64`, `linux-arm64-v8`), so that
/// `skopeo ... oci:PATH:linux-arm64` finds it; `latest` for an image without a platform.
pub fn ref_name(platform: Option<&Platform>) -> String {
    match platform {
        Some(p) => p.to_string().replace('/', "-"),
        None => "latest".to_owned(),
    }
}

fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    // A Value always serializes (its keys are strings).
    serde_json::to_vec(value).unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (UTC), as OCI configs write `created`.
pub fn rfc3339(epoch: u64) -> String {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`,
/// restricted to non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn names_and_json_are_canonical() {
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(ref_name(Some(&arm)), "linux-arm64-v8");
        assert_eq!(ref_name(Some(&Platform::linux_amd64())), "linux-amd64");
        assert_eq!(ref_name(None), "latest");
        assert!(crate::reference::is_tag(&ref_name(Some(&arm))));

        let d = Digest::of(b"tar");
        let config = config_json(Some(&arm), &d, "1970-01-01T00:00:00Z");
        assert_eq!(
            String::from_utf8(config.clone()).unwrap(),
            format!(
                r#"{{"architecture":"arm64","config":{{}},"created":"1970-01-01T00:00:00Z","os":"linux","rootfs":{{"diff_ids":["{d}"],"type":"layers"}},"variant":"v8"}}"#
            )
        );
        assert_eq!(crate::manifest::config_platform(&config), Some(arm.clone()));
        let bare = config_json(None, &d, "x");
        assert_eq!(crate::manifest::config_platform(&bare), None);

        let m = manifest_json((&Digest::of(b"c"), 1), (&d, 3));
        let crate::manifest::Manifest::Image(parsed) = crate::manifest::parse(&m).unwrap() else {
            panic!("not an image manifest");
        };
        assert_eq!(parsed.layers.len(), 1);
        assert_eq!(parsed.layers[0].digest, d);
        assert_eq!(parsed.config.size, 1);

        let index = index_json(&[
            (
                Some(Platform::linux_amd64()),
                Digest::of(b"1"),
                10,
                "linux-amd64".into(),
            ),
            (None, Digest::of(b"2"), 11, "latest".into()),
        ]);
        let crate::manifest::Manifest::Index(parsed) = crate::manifest::parse(&index).unwrap()
        else {
            panic!("not an index");
        };
        assert_eq!(parsed.manifests[0].platform, Some(Platform::linux_amd64()));
        assert_eq!(parsed.manifests[0].annotations[REF_NAME], "linux-amd64");
        assert_eq!(parsed.manifests[1].platform, None);
    }

    #[test]
    fn tree_order_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (path, data) in [
            ("manifests/b/x", &b"12"[..]),
            ("manifests/a.b/y", b"3"),
            ("blob/sha256-2", b""),
            ("blob/sha256-1", b"abcd"),
        ] {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        }
        let names: Vec<(String, u64)> = tree_entries(root)
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.size))
            .collect();
        assert_eq!(
            names,
            [
                ("blob/".to_owned(), 0),
                ("blob/sha256-1".to_owned(), 4),
                ("blob/sha256-2".to_owned(), 0),
                ("manifests/".to_owned(), 0),
                ("manifests/a.b/".to_owned(), 0),
                ("manifests/a.b/y".to_owned(), 1),
                ("manifests/b/".to_owned(), 0),
                ("manifests/b/x".to_owned(), 2),
            ]
        );
        std::os::unix::fs::symlink("/etc/passwd", root.join("blob/evil")).unwrap();
        assert!(matches!(
            tree_entries(root).unwrap_err(),
            OciOutError::NotArchivable { .. }
        ));
    }

    #[test]
    fn layout_is_reproducible_and_unpacks_to_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let long = format!(
            "manifests/ghcr.io/{}/digest/sha256-{}",
            "a/".repeat(60),
            "f".repeat(64)
        );
        for (path, data) in [
            ("blob/sha256-1".to_owned(), b"layer".to_vec()),
            (long.clone(), b"{}".to_vec()),
        ] {
            let p = tree.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        }
        let platforms = [
            Some(Platform::linux_amd64()),
            Some(Platform::parse("linux/arm64").unwrap()),
        ];
        let mut seen = 0;
        let a = write_wrapped_layout(&tree, &dir.path().join("a"), &platforms, 7, &mut |n| {
            seen = n
        })
        .unwrap();
        assert_eq!(seen, a.layer_size, "progress reaches the end of the layer");
        assert_eq!(
            a.diff_id, a.layer,
            "not compressed: the diff ID is the digest"
        );
        let b =
            write_wrapped_layout(&tree, &dir.path().join("b"), &platforms, 7, &mut |_| {}).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.images.len(), 2);
        for f in ["index.json", "oci-layout"] {
            assert_eq!(
                fs::read(dir.path().join("a").join(f)).unwrap(),
                fs::read(dir.path().join("b").join(f)).unwrap()
            );
        }
        // Another epoch: other bytes.
        let c =
            write_wrapped_layout(&tree, &dir.path().join("c"), &platforms, 8, &mut |_| {}).unwrap();
        assert_ne!(a.layer, c.layer);

        // The layer is what the reader accepts, and holds the tree where the index says.
        let layer = dir.path().join("a/blobs/sha256").join(a.layer.hex());
        assert_eq!(fs::metadata(&layer).unwrap().len(), a.layer_size);
        assert!(crate::tar_layer::looks_like_cache_layer(
            File::open(&layer).unwrap()
        ));
        let file = File::open(&layer).unwrap();
        let index = crate::tar_layer::index(&file, a.layer_size).unwrap();
        let bytes_of = |path: &str| {
            // The index gives normalized paths (`a//b` is `a/b`).
            let path = path.replace("//", "/");
            let f = index.files.iter().find(|f| f.path == path).unwrap();
            let mut buf = vec![0u8; f.size as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, f.data_offset).unwrap();
            buf
        };
        assert_eq!(bytes_of(&long), b"{}");
        assert_eq!(bytes_of("blob/sha256-1"), b"layer");
        let mut files: Vec<String> = fs::read_dir(dir.path().join("a/blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        // One layer, two configs, two manifests; no temp file left.
        assert_eq!(files.len(), 5, "{files:?}");
        assert!(
            files
                .iter()
                .all(|f| Digest::parse(&format!("sha256:{f}")).is_ok())
        );
    }

    fn file(name: &str, size: u64) -> TreeEntry {
        TreeEntry {
            name: name.to_owned(),
            size,
            is_dir: false,
        }
    }

    fn directory(name: &str) -> TreeEntry {
        TreeEntry {
            name: name.to_owned(),
            size: 0,
            is_dir: true,
        }
    }

    /// The layer a plan describes, with `data(name)` in each file's slot.
    fn assemble(plan: &LayerPlan, data: impl Fn(&str, u64) -> Vec<u8>) -> Vec<u8> {
        let mut out = vec![0u8; usize::try_from(plan.len).unwrap()];
        for s in &plan.slots {
            let h = usize::try_from(s.header_offset).unwrap();
            out[h..h + s.header.len()].copy_from_slice(&s.header);
            let d = usize::try_from(s.data_offset).unwrap();
            let bytes = data(&s.name, s.size);
            out[d..d + bytes.len()].copy_from_slice(&bytes);
        }
        out
    }

    #[test]
    fn plan_offsets_and_long_names() {
        let long = format!(
            "manifests/ghcr.io/siderolabs/kubelet/digest/sha256-{}",
            "a".repeat(64)
        );
        assert!(long.len() > USTAR_NAME);
        let entries = [
            directory("blob/"),
            file("blob/a", 1),
            file("blob/b", 512),
            file("blob/c", 0),
            file(&long, 3),
        ];
        let plan = plan_layer(&entries, 1_700_000_000).unwrap();
        let at: Vec<(u64, usize, u64)> = plan
            .slots
            .iter()
            .map(|s| (s.header_offset, s.header.len(), s.data_offset))
            .collect();
        assert_eq!(
            at,
            [
                (0, 512, 512),
                (512, 512, 1024),
                (1536, 512, 2048),
                (2560, 512, 3072),
                // A PAX header block, one block of records, then the ustar block.
                (3072, 1536, 4608),
            ]
        );
        assert_eq!(plan.len, 4608 + 512 + 1024);
        assert_eq!(plan, plan_layer(&entries, 1_700_000_000).unwrap(), "pure");

        // An independent reader (tar-rs, which checks every header checksum) sees the entries.
        let bytes = assemble(&plan, |name, size| {
            name.bytes()
                .cycle()
                .take(usize::try_from(size).unwrap())
                .collect()
        });
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            assert_eq!(h.as_ustar().map(|_| ()), Some(()), "POSIX ustar headers");
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.mtime().unwrap(), 1_700_000_000);
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            let expected: Vec<u8> = name.bytes().cycle().take(data.len()).collect();
            assert_eq!(data, expected, "{name}");
            seen.push((name, h.mode().unwrap(), data.len() as u64));
        }
        let expected: Vec<(String, u32, u64)> = entries
            .iter()
            .map(|e| (e.name.clone(), if e.is_dir { 0o755 } else { 0o644 }, e.size))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn pax_records_count_their_own_length() {
        for n in 0..300 {
            let value = "v".repeat(n);
            let record = pax_record("path", &value);
            let text = String::from_utf8(record.clone()).unwrap();
            let (len, rest) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), record.len(), "{text:?}");
            assert_eq!(rest, format!("path={value}\n"));
        }
        // Sizes and times beyond ustar's 11 octal digits go to PAX records too.
        let huge = file("blob/big", USTAR_MAX + 1);
        let header = entry_header(&huge, USTAR_MAX + 2).unwrap();
        let records = String::from_utf8_lossy(&header[512..1024]);
        assert!(
            records.contains(&format!(" size={}\n", USTAR_MAX + 1)),
            "{records}"
        );
        assert!(
            records.contains(&format!(" mtime={}\n", USTAR_MAX + 2)),
            "{records}"
        );
        assert!(matches!(
            plan_layer(&[file("/etc/x", 1)], 0),
            Err(OciOutError::BadName { .. })
        ));
    }

    #[test]
    fn entries_from_names_match_a_tree_walk() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("manifests/b/x", 2u64),
            ("manifests/a.b/y", 1),
            ("manifests/a/z", 3),
            ("blob/sha256-2", 0),
            ("blob/sha256-1", 4),
        ];
        for (path, size) in files {
            let p = dir.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, vec![0u8; usize::try_from(size).unwrap()]).unwrap();
        }
        assert_eq!(
            layer_entries(files).unwrap(),
            tree_entries(dir.path()).unwrap()
        );
        // A name given twice: the last one counts.
        let twice = layer_entries([("blob/x", 1), ("blob/x", 2)]).unwrap();
        assert_eq!(twice, [directory("blob/"), file("blob/x", 2)]);
        for bad in [
            &[("blob/x", 1), ("blob/x/y", 1)][..],
            &[("blob/x/y", 1), ("blob/x", 1)],
        ] {
            assert!(
                matches!(
                    layer_entries(bad.iter().copied()),
                    Err(OciOutError::NameConflict { .. })
                ),
                "{bad:?}"
            );
        }
        for bad in ["", "blob//x", "blob/../x", "./blob"] {
            assert!(matches!(
                layer_entries([(bad, 1)]),
                Err(OciOutError::BadName { .. })
            ));
        }
    }

    #[test]
    fn hashing_waits_for_slots_filled_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<TreeEntry> = std::iter::once(directory("blob/"))
            .chain((0..6).map(|i| file(&format!("blob/{i}"), 300_000 * i + 7)))
            .collect();
        let plan = plan_layer(&entries, 0).unwrap();
        let layer = LayerFile::create(dir.path(), &plan).unwrap();
        let byte = |name: &str| name.as_bytes().get(5).copied().unwrap_or(0);
        let fill = |s: &LayerSlot| vec![byte(&s.name); usize::try_from(s.size).unwrap()];
        let expected = Digest::of(&assemble(&plan, |name, size| {
            vec![byte(name); usize::try_from(size).unwrap()]
        }));
        let gate = Gate::new(plan.files().map(|s| (s.data_offset, s.size)).collect());
        let (digest, size) = std::thread::scope(|scope| {
            let hashing = scope
                .spawn(|| hash_layer(layer.file(), layer.path(), plan.len, &gate, &mut |_| {}));
            // Last first: the pass must wait rather than hash the zeros it would find.
            for slot in plan.files().collect::<Vec<_>>().into_iter().rev() {
                std::thread::sleep(std::time::Duration::from_millis(5));
                layer.write_at(slot, &fill(slot)).unwrap();
                gate.fill(slot.data_offset, Some(Digest::of(&fill(slot))));
            }
            hashing.join().unwrap()
        })
        .unwrap();
        assert_eq!((digest, size), (expected, plan.len));

        // A slot whose copy is wrong is named by the pass; an aborted fill stops it.
        let gate = Gate::new(plan.files().map(|s| (s.data_offset, s.size)).collect());
        for s in plan.files() {
            gate.fill(s.data_offset, Some(Digest::of(b"other")));
        }
        let err = hash_layer(layer.file(), layer.path(), plan.len, &gate, &mut |_| {}).unwrap_err();
        assert!(matches!(err, OciOutError::SlotDigest { .. }), "{err}");
        let gate = Gate::new(plan.files().map(|s| (s.data_offset, s.size)).collect());
        gate.abort();
        let err = hash_layer(layer.file(), layer.path(), plan.len, &gate, &mut |_| {}).unwrap_err();
        assert!(matches!(err, OciOutError::Aborted), "{err}");
    }
}
