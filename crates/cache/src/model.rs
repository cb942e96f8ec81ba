//! The read-only cache model: a cache, whatever form it comes in, is a list of entries — the path
//! in the flat tree, the size, and where the bytes lie — made without copying a byte of data.
//!
//! | form | where an entry's bytes lie |
//! | --- | --- |
//! | flat tree | its own file, from offset 0 |
//! | plain OCI layout (skopeo, oras, crane, regctl) | the layout's `blobs/sha256/<hex>` (manifests and blobs alike) |
//! | oci-wrapped, uncompressed tar layer (ours) | a contiguous run of the layer blob, offsets from the tar headers |
//! | oci-wrapped, gzip layer (upstream's, ours before) | a position in the one decompressed stream of the layer |
//! | ISO 9660 image (`imagecache/`, Rock Ridge names) | the file's extents in the image |
//! | metal disk image (GPT, ext4 partition `IMAGECACHE`, tree at its root) | the file's extents in the image |
//!
//! Every consumer reads through this: `imager iso` copies each entry with `copy_file_range` from
//! where it lies (or streams the gzip layer once, in tar order), `cache verify`/`list` hash and
//! parse in place, registryd sends blobs by `sendfile` from the ISO or the layer blob. Reading any
//! form is linear in its number of entries; memory is proportional to the entries, never to the
//! data.
//!
//! What opening checks: the layout's JSON, the manifests it walks (small; hashed against their
//! descriptors), and that every named file exists with its announced size. What it does not: the
//! content of blobs and of a layer blob read in place (that is a full read of the cache, which is
//! `cache verify`'s job; registryd hashes each blob before serving it). A streamed gzip layer is
//! hashed as it streams and a mismatch fails the read, and so is every file in it named by a
//! digest ([`Cache::read_stream`]): bytes that pass through this process are always checked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::Platform;
use crate::digest::{BUF_SIZE, Digest, HashingReader};
use crate::flat::{self, FlatError, Inventory, Stray, StrayKind};
use crate::layout::{
    Candidate, InputForm, LayoutError, MAX_NESTING, NamedImage, OciLayout, ReadOptions,
    name_descriptors,
};
use crate::manifest::{Descriptor, MAX_MANIFEST_SIZE, Manifest};
use crate::reference::ImageName;
use crate::tar_layer::{self, Compression};

/// One file of the flat tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path in the flat tree (`blob/sha256-…`, `manifests/…`), `/`-separated, relative.
    pub path: String,
    pub size: u64,
    pub location: Location,
}

/// Where an entry's bytes lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `size` contiguous bytes at `offset` of the cache's source file number `source`.
    Range { source: usize, offset: u64 },
    /// Several runs of one source file, in file order: `(offset, len)` (an ISO's multi-extent
    /// file whose extents are not adjacent).
    Extents {
        source: usize,
        extents: Box<[(u64, u64)]>,
    },
    /// The `ordinal`-th file of the cache's compressed layer stream.
    Stream { ordinal: usize },
}

/// A compressed layer read as one stream.
#[derive(Debug)]
struct LayerStream {
    blob: PathBuf,
    descriptor: Descriptor,
    compression: Compression,
    /// Entry index of each file, in stream order.
    order: Vec<usize>,
    /// The decompressed stream's length when listed: reading it again, not a byte more is taken.
    expanded: u64,
}

/// A cache opened in place. See the module documentation.
#[derive(Debug)]
pub struct Cache {
    input: PathBuf,
    form: InputForm,
    /// The files entries point into.
    sources: Vec<PathBuf>,
    /// Sorted by path, each path once.
    entries: Vec<Entry>,
    /// What a flat tree holds that is no regular file or has no UTF-8 name; never read.
    strays: Vec<Stray>,
    stream: Option<LayerStream>,
    /// The manifest files of a compressed layer, kept from the pass that listed it (within
    /// [`KEEP_BUDGET`]), so that reading them does not take another pass over the layer.
    kept: Option<HashMap<String, Vec<u8>>>,
}

/// At most this many bytes of a compressed layer's manifests are kept in memory (real caches
/// hold a few MiB); past it they are read from the stream again when needed.
const KEEP_BUDGET: u64 = 64 << 20;

impl Cache {
    /// Opens any accepted form: a flat tree (a directory with `manifests/` or `blob/`), an OCI
    /// image layout (oci-wrapped or plain), an ISO 9660 image with `imagecache/`, or a GPT disk
    /// image whose `IMAGECACHE` partition holds ext4.
    pub fn open(input: &Path, opts: &ReadOptions) -> Result<Self, LayoutError> {
        Self::open_within(input, opts, u64::MAX)
    }

    /// [`Cache::open`] for a consumer with room for at most `room` bytes of file data: listing a
    /// compressed layer stops, refused, at the first header whose file takes the data declared
    /// past `room`, before its bytes are expanded (forms read in place expand nothing; their
    /// consumer checks their size against its room).
    pub fn open_within(input: &Path, opts: &ReadOptions, room: u64) -> Result<Self, LayoutError> {
        let open_err = |source| LayoutError::Open {
            path: input.to_owned(),
            source,
        };
        let meta = std::fs::metadata(input).map_err(open_err)?;
        if meta.is_file() {
            return open_image(input);
        }
        if !meta.is_dir() {
            return Err(LayoutError::NotACache {
                path: input.to_owned(),
            });
        }
        if !input.join("oci-layout").exists() {
            if input.join(flat::MANIFESTS_DIR).is_dir() || input.join(flat::BLOB_DIR).is_dir() {
                return open_flat(input);
            }
            return Err(LayoutError::NotACache {
                path: input.to_owned(),
            });
        }
        let prefix = match &opts.ref_prefix {
            Some(p) => Some(ImageName::parse(p).map_err(|source| LayoutError::Prefix {
                prefix: p.clone(),
                source: Box::new(source),
            })?),
            None => None,
        };
        let layout = OciLayout::open(input)?;
        match layout.wrapped_candidates()? {
            Some(candidates) => open_wrapped(&layout, &candidates, &opts.platform, room),
            None => {
                let images =
                    name_descriptors(&layout.path, &layout.index.manifests, prefix.as_ref())?;
                open_plain(&layout, &images)
            }
        }
    }

    /// What was opened.
    pub fn input(&self) -> &Path {
        &self.input
    }

    pub fn form(&self) -> InputForm {
        self.form
    }

    /// Every file, sorted by path.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry at `path` (`blob/sha256-…`), in O(log n).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Symlinks, special files and non-UTF-8 names found in a flat tree; never read or copied.
    pub fn strays(&self) -> &[Stray] {
        &self.strays
    }

    /// The bytes of all entries.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// True when entries lie in a compressed stream: they are read by [`Cache::read_stream`],
    /// not one by one.
    pub fn is_streamed(&self) -> bool {
        self.stream.is_some()
    }

    /// The file an entry's bytes lie in and the runs `(offset, len)` they occupy, in file order;
    /// `None` for a streamed entry.
    pub fn pieces(&self, entry: &Entry) -> Option<(&Path, Vec<(u64, u64)>)> {
        match &entry.location {
            Location::Range { source, offset } => {
                Some((&self.sources[*source], vec![(*offset, entry.size)]))
            }
            Location::Extents { source, extents } => {
                Some((&self.sources[*source], extents.to_vec()))
            }
            Location::Stream { .. } => None,
        }
    }

    /// A reader of exactly the entry's bytes, for entries not in a stream.
    pub fn open_entry(&self, entry: &Entry) -> io::Result<EntryReader> {
        let Some((path, pieces)) = self.pieces(entry) else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{} lies in a compressed layer, which is read as one stream",
                    entry.path
                ),
            ));
        };
        let file = File::open(path)?;
        Ok(EntryReader {
            file,
            pieces,
            at: 0,
            done: 0,
        })
    }

    /// Reads a manifest-sized entry whole (at most [`MAX_MANIFEST_SIZE`] bytes).
    pub fn read_small(&self, entry: &Entry) -> Result<Vec<u8>, FlatError> {
        let source_path = self
            .pieces(entry)
            .map_or_else(|| self.input.clone(), |(p, _)| p.to_owned());
        if entry.size > MAX_MANIFEST_SIZE {
            return Err(FlatError::ManifestTooLarge {
                path: PathBuf::from(&entry.path),
                size: entry.size,
            });
        }
        let mut bytes = Vec::with_capacity(entry.size as usize);
        self.open_entry(entry)
            .and_then(|mut r| r.read_to_end(&mut bytes))
            .map_err(|source| FlatError::Read {
                path: source_path.join(&entry.path),
                source,
            })?;
        if bytes.len() as u64 != entry.size {
            return Err(FlatError::SizeMismatch {
                path: PathBuf::from(&entry.path),
                expected: entry.size,
                actual: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Hashes an entry that is not in a stream.
    pub fn hash_entry(&self, entry: &Entry, buf: &mut [u8]) -> io::Result<(Digest, u64)> {
        let mut r = HashingReader::new(self.open_entry(entry)?);
        loop {
            if r.read(buf)? == 0 {
                break;
            }
        }
        r.finish()
    }

    /// Reads the compressed layer once, calling `visit` with each entry (in stream order) and a
    /// reader of exactly its bytes; a `visit` that does not read all of them leaves the rest to
    /// be skipped. The layer is hashed as it streams: a digest or size that is not the
    /// descriptor's fails the read (after the visits, which is why consumers write only into a
    /// temp output). So is every file named by a digest (`blob/sha256-…`, `…/digest/sha256-…`),
    /// right after its visit, with [`LayoutError::EntryDigest`] naming it. Nothing happens for a
    /// cache without a stream.
    pub fn read_stream(
        &self,
        visit: &mut dyn FnMut(&Entry, &mut dyn Read) -> io::Result<()>,
    ) -> Result<(), LayoutError> {
        let mut mismatch = None;
        let result = self.stream_entries(&mut |entry, r| {
            let Some(expected) = flat::named_digest(&entry.path) else {
                return visit(entry, r);
            };
            let mut hashing = HashingReader::new(r);
            visit(entry, &mut hashing)?;
            let (actual, _) = hashing.finish()?;
            if actual != expected {
                mismatch = Some((entry.path.clone(), actual));
                return Err(io::Error::other(format!(
                    "{}: the content hashes to {actual}",
                    entry.path
                )));
            }
            Ok(())
        });
        match (result, mismatch, &self.stream) {
            (Err(_), Some((path, actual)), Some(stream)) => Err(LayoutError::EntryDigest {
                input: self.input.clone(),
                layer: stream.blob.clone(),
                path,
                actual,
            }),
            (result, _, _) => result,
        }
    }

    /// [`Cache::read_stream`] without the check of each entry against its name (for readers that
    /// hash the entries themselves and report rather than fail).
    fn stream_entries(
        &self,
        visit: &mut dyn FnMut(&Entry, &mut dyn Read) -> io::Result<()>,
    ) -> Result<(), LayoutError> {
        let Some(stream) = &self.stream else {
            return Ok(());
        };
        let file = File::open(&stream.blob).map_err(|source| FlatError::Read {
            path: stream.blob.clone(),
            source,
        })?;
        let mut ordinal = 0usize;
        // The layer is read again: it may hold what it held when listed, and nothing more.
        let bounds = tar_layer::Bounds {
            data: u64::MAX,
            expanded: stream.expanded,
        };
        let read = tar_layer::read_layer(file, stream.compression, bounds, |tf, r| {
            let Some(&index) = stream.order.get(ordinal) else {
                return Err(io::Error::other(format!(
                    "{}: more files than when it was listed",
                    tf.path
                )));
            };
            ordinal += 1;
            let entry = &self.entries[index];
            if entry.path != tf.path || entry.size != tf.size {
                return Err(io::Error::other(format!(
                    "{}: the layer changed since it was listed",
                    tf.path
                )));
            }
            visit(entry, r)
        })
        .map_err(|source| LayoutError::Layer {
            layer: stream.blob.clone(),
            digest: stream.descriptor.digest,
            source: Box::new(source),
        })?;
        check_blob(&stream.blob, &stream.descriptor, read.digest, read.size)?;
        Ok(())
    }

    /// Reads, in one go however the bytes lie, the whole content of the entries `small` picks
    /// (manifest-sized: capped at [`MAX_MANIFEST_SIZE`]) and the sha256 of those `hash` picks
    /// (random-access entries on every core, a stream in one pass). Results by path; a read that
    /// fails is that path's error, not the call's, except a stream that cannot be read at all.
    pub fn load(
        &self,
        small: &dyn Fn(&Entry) -> bool,
        hash: &(dyn Fn(&Entry) -> bool + Sync),
    ) -> Result<Loaded, LayoutError> {
        let mut loaded = Loaded::default();
        if let Some(kept) = &self.kept
            && self
                .entries
                .iter()
                .all(|e| !hash(e) && (!small(e) || kept.contains_key(&e.path)))
        {
            for e in self.entries.iter().filter(|e| small(e)) {
                loaded
                    .small
                    .insert(e.path.clone(), Ok(kept[&e.path].clone()));
            }
            return Ok(loaded);
        }
        if self.is_streamed() {
            let mut buf = hash_buffer();
            self.stream_entries(&mut |e, r| {
                let want_small = small(e);
                let want_hash = hash(e);
                if !want_small && !want_hash {
                    return Ok(());
                }
                if want_small && e.size > MAX_MANIFEST_SIZE {
                    loaded.small.insert(
                        e.path.clone(),
                        Err(FlatError::ManifestTooLarge {
                            path: PathBuf::from(&e.path),
                            size: e.size,
                        }),
                    );
                }
                let keep = want_small && e.size <= MAX_MANIFEST_SIZE;
                let mut bytes = Vec::new();
                let mut hashing = HashingReader::new(r);
                loop {
                    let n = hashing.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    if keep {
                        bytes.extend_from_slice(&buf[..n]);
                    }
                }
                let (digest, size) = hashing.finish()?;
                if keep {
                    loaded.small.insert(e.path.clone(), Ok(bytes));
                }
                if want_hash {
                    loaded.hashes.insert(e.path.clone(), Ok((digest, size)));
                }
                Ok(())
            })?;
            return Ok(loaded);
        }
        for e in self.entries.iter().filter(|e| small(e)) {
            loaded.small.insert(e.path.clone(), self.read_small(e));
        }
        let to_hash: Vec<&Entry> = self.entries.iter().filter(|e| hash(e)).collect();
        let hashes = crate::par::map(&to_hash, |e| self.hash_entry(e, &mut hash_buffer()));
        for (e, h) in to_hash.into_iter().zip(hashes) {
            loaded.hashes.insert(e.path.clone(), h);
        }
        Ok(loaded)
    }

    /// The entries sorted into the flat tree's structure (repositories, tags, manifests, blobs).
    pub fn inventory(&self) -> Inventory {
        flat::inventory(
            self.entries.iter().map(|e| (e.path.as_str(), e.size)),
            self.strays.clone(),
        )
    }
}

/// What [`Cache::load`] read, by entry path.
#[derive(Debug, Default)]
pub struct Loaded {
    pub small: std::collections::HashMap<String, Result<Vec<u8>, FlatError>>,
    pub hashes: std::collections::HashMap<String, io::Result<(Digest, u64)>>,
}

impl Loaded {
    /// The whole content of a small entry that was read without error.
    pub fn small_bytes(&self, path: &str) -> Option<&[u8]> {
        self.small
            .get(path)
            .and_then(|r| r.as_ref().ok())
            .map(Vec::as_slice)
    }
}

/// Reads an entry's runs in order.
#[derive(Debug)]
pub struct EntryReader {
    file: File,
    pieces: Vec<(u64, u64)>,
    /// Current piece.
    at: usize,
    /// Bytes of the current piece already read.
    done: u64,
}

impl Read for EntryReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(&(offset, len)) = self.pieces.get(self.at) {
            if self.done == len {
                self.at += 1;
                self.done = 0;
                continue;
            }
            let want = buf
                .len()
                .min(usize::try_from(len - self.done).unwrap_or(usize::MAX));
            let n = self.file.read_at(&mut buf[..want], offset + self.done)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ends before the entry does",
                ));
            }
            self.done += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

fn check_blob(path: &Path, desc: &Descriptor, actual: Digest, size: u64) -> Result<(), FlatError> {
    if size != desc.size {
        return Err(FlatError::SizeMismatch {
            path: path.to_owned(),
            expected: desc.size,
            actual: size,
        });
    }
    if actual != desc.digest {
        return Err(FlatError::DigestMismatch {
            path: path.to_owned(),
            expected: desc.digest,
            actual,
        });
    }
    Ok(())
}

/// Sorts entries by path; a path twice is an error naming it.
fn sorted(mut entries: Vec<Entry>, input: &Path) -> Result<Vec<Entry>, LayoutError> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(w) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(LayoutError::DuplicatePath {
            input: input.to_owned(),
            path: w[0].path.clone(),
        });
    }
    Ok(entries)
}

fn open_flat(root: &Path) -> Result<Cache, LayoutError> {
    let mut sources = Vec::new();
    let mut entries = Vec::new();
    let mut strays = Vec::new();
    for item in walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let item = item.map_err(|err| {
            let at = err.path().unwrap_or(root).to_owned();
            FlatError::Read {
                path: at,
                source: err
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("directory walk failed")),
            }
        })?;
        let rel = item.path().strip_prefix(root).unwrap_or(item.path());
        let kind = item.file_type();
        let Some(rel_str) = rel.to_str() else {
            strays.push(Stray {
                path: rel.to_owned(),
                kind: StrayKind::NonUtf8Name,
            });
            continue;
        };
        if kind.is_dir() {
            continue;
        }
        if kind.is_symlink() || !kind.is_file() {
            strays.push(Stray {
                path: rel.to_owned(),
                kind: if kind.is_symlink() {
                    StrayKind::Symlink
                } else {
                    StrayKind::Special
                },
            });
            continue;
        }
        let size = item
            .metadata()
            .map_err(|err| FlatError::Read {
                path: item.path().to_owned(),
                source: err
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("stat failed")),
            })?
            .len();
        entries.push(Entry {
            path: rel_str.to_owned(),
            size,
            location: Location::Range {
                source: sources.len(),
                offset: 0,
            },
        });
        sources.push(item.path().to_owned());
    }
    Ok(Cache {
        input: root.to_owned(),
        form: InputForm::Flat,
        sources,
        entries: sorted(entries, root)?,
        strays,
        stream: None,
        kept: None,
    })
}

/// Names every manifest and blob of a plain layout's images by its flat-tree path, pointing at
/// the layout's own blob files: each distinct path once.
fn open_plain(layout: &OciLayout, images: &[NamedImage]) -> Result<Cache, LayoutError> {
    let mut namer = Namer {
        layout,
        entries: Vec::new(),
        sources: Vec::new(),
        source_of: BTreeMap::new(),
        paths: HashSet::new(),
    };
    for image in images {
        let what = image.to_string();
        let bytes = layout.read_manifest(&image.descriptor, &what)?;
        namer.manifest_tree(&image.name, &image.descriptor, &bytes, &what, 0)?;
        if let Some(tag) = &image.tag {
            let path = path_str(&flat::tag_path(&image.name, tag));
            namer.add(path, &image.descriptor)?;
        }
    }
    Ok(Cache {
        input: layout.path.clone(),
        form: InputForm::OciLayout,
        entries: sorted(namer.entries, &layout.path)?,
        sources: namer.sources,
        strays: Vec::new(),
        stream: None,
        kept: None,
    })
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

struct Namer<'a> {
    layout: &'a OciLayout,
    entries: Vec<Entry>,
    sources: Vec<PathBuf>,
    source_of: BTreeMap<Digest, usize>,
    paths: HashSet<String>,
}

impl Namer<'_> {
    /// Adds `path` with the bytes of the layout's blob `desc`, checking the blob's size.
    fn add(&mut self, path: String, desc: &Descriptor) -> Result<(), LayoutError> {
        if !self.paths.insert(path.clone()) {
            return Ok(());
        }
        let source = match self.source_of.get(&desc.digest) {
            Some(&s) => s,
            None => {
                let blob = self.layout.blob_path(&desc.digest);
                let size = std::fs::symlink_metadata(&blob)
                    .ok()
                    .filter(std::fs::Metadata::is_file)
                    .map(|m| m.len());
                match size {
                    Some(size) if size == desc.size => {}
                    Some(size) => {
                        return Err(FlatError::SizeMismatch {
                            path: blob,
                            expected: desc.size,
                            actual: size,
                        }
                        .into());
                    }
                    None => {
                        return Err(LayoutError::MissingBlob {
                            layout: self.layout.path.clone(),
                            what: path,
                            digest: desc.digest,
                        });
                    }
                }
                self.sources.push(blob);
                self.source_of.insert(desc.digest, self.sources.len() - 1);
                self.sources.len() - 1
            }
        };
        self.entries.push(Entry {
            path,
            size: desc.size,
            location: Location::Range { source, offset: 0 },
        });
        Ok(())
    }

    fn manifest_tree(
        &mut self,
        name: &ImageName,
        desc: &Descriptor,
        bytes: &[u8],
        what: &str,
        depth: usize,
    ) -> Result<(), LayoutError> {
        let path = path_str(&flat::manifest_path(name, &desc.digest));
        if self.paths.contains(&path) {
            return Ok(());
        }
        if depth > MAX_NESTING {
            return Err(LayoutError::Nesting {
                layout: self.layout.path.clone(),
                digest: desc.digest,
            });
        }
        self.add(path, desc)?;
        match self
            .layout
            .parse(bytes, desc, &format!("manifest of {what}"))?
        {
            Manifest::Index(index) => {
                // Kept whole; only the children the layout holds are named (a layout made for
                // some platforms lacks the others, as a cache does).
                for child in &index.manifests {
                    if !self.layout.has_blob(&child.digest) {
                        continue;
                    }
                    let child_what = match &child.platform {
                        Some(p) => format!("{what} ({p})"),
                        None => format!("{what} (child {})", child.digest),
                    };
                    let child_bytes = self.layout.read_manifest(child, &child_what)?;
                    self.manifest_tree(name, child, &child_bytes, &child_what, depth + 1)?;
                }
            }
            Manifest::Image(m) => {
                for (i, blob) in m.blobs().enumerate() {
                    let part = if i == 0 {
                        "config".to_owned()
                    } else {
                        format!("layer {i}")
                    };
                    let path = path_str(&flat::blob_path(&blob.digest));
                    if self.paths.contains(&path) {
                        continue;
                    }
                    if !self.layout.has_blob(&blob.digest) {
                        return Err(LayoutError::MissingBlob {
                            layout: self.layout.path.clone(),
                            what: format!("{part} of {what}"),
                            digest: blob.digest,
                        });
                    }
                    self.add(path, blob)?;
                }
            }
        }
        Ok(())
    }
}

fn open_wrapped(
    layout: &OciLayout,
    candidates: &[Candidate],
    wanted: &Platform,
    room: u64,
) -> Result<Cache, LayoutError> {
    let chosen = layout.choose_wrapped(candidates, wanted)?;
    let layer = candidates[chosen].manifest.layers[0].clone();
    let blob = layout.blob_path(&layer.digest);
    let layer_err = |source| LayoutError::Layer {
        layer: blob.clone(),
        digest: layer.digest,
        source: Box::new(source),
    };
    let file = File::open(&blob).map_err(|source| FlatError::Read {
        path: blob.clone(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| FlatError::Read {
            path: blob.clone(),
            source,
        })?
        .len();
    if len != layer.size {
        return Err(FlatError::SizeMismatch {
            path: blob,
            expected: layer.size,
            actual: len,
        }
        .into());
    }
    let mut head = [0u8; 8];
    let n = file
        .read_at(&mut head, 0)
        .map_err(|source| FlatError::Read {
            path: blob.clone(),
            source,
        })?;
    let compression = tar_layer::sniff(&head[..n]);
    let (entries, stream, kept) = match compression {
        Compression::None => {
            let index = tar_layer::index(&file, len).map_err(|e| layer_err(e.into()))?;
            let entries = index
                .files
                .into_iter()
                .map(|f| Entry {
                    path: f.path,
                    size: f.size,
                    location: Location::Range {
                        source: 0,
                        offset: f.data_offset,
                    },
                })
                .collect();
            (sorted(entries, &blob)?, None, None)
        }
        compression => {
            // Listing a compressed layer is one pass over it (hashed on the way); the data is
            // read again, once, by whoever consumes it.
            let mut listed = Vec::new();
            let bounds = tar_layer::Bounds {
                data: room,
                ..tar_layer::Bounds::FORMAT
            };
            let mut kept = Some(HashMap::new());
            let mut kept_bytes = 0u64;
            let read = tar_layer::read_layer(file, compression, bounds, |tf, r| {
                if let Some(map) = &mut kept
                    && tf.path.starts_with("manifests/")
                {
                    kept_bytes += tf.size;
                    if tf.size > MAX_MANIFEST_SIZE || kept_bytes > KEEP_BUDGET {
                        kept = None;
                    } else {
                        let mut bytes = Vec::with_capacity(tf.size as usize);
                        r.read_to_end(&mut bytes)?;
                        map.insert(tf.path.clone(), bytes);
                    }
                }
                listed.push(Entry {
                    path: tf.path.clone(),
                    size: tf.size,
                    location: Location::Stream {
                        ordinal: listed.len(),
                    },
                });
                Ok(())
            })
            .map_err(layer_err)?;
            check_blob(&blob, &layer, read.digest, read.size)?;
            let entries = sorted(listed, &blob)?;
            let mut order = vec![0; entries.len()];
            for (i, e) in entries.iter().enumerate() {
                if let Location::Stream { ordinal } = e.location {
                    order[ordinal] = i;
                }
            }
            let stream = LayerStream {
                blob: blob.clone(),
                descriptor: layer.clone(),
                compression,
                order,
                expanded: read.expanded,
            };
            (entries, Some(stream), kept)
        }
    };
    Ok(Cache {
        input: layout.path.clone(),
        form: InputForm::OciWrapped,
        sources: vec![blob],
        entries,
        strays: Vec::new(),
        stream,
        kept,
    })
}

/// The directory of an image that holds the cache.
pub const ISO_CACHE_DIR: &str = "imagecache";

/// A file: an ISO 9660 image (a hybrid ISO has a GPT too, so that is tried first), or a GPT disk
/// image with an `IMAGECACHE` partition.
fn open_image(path: &Path) -> Result<Cache, LayoutError> {
    let read_err = |source| LayoutError::Open {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    if imager_iso::read::is_iso9660(&file).map_err(read_err)? {
        return open_iso(path, &file);
    }
    let partitions = imager_disk::read::read_partitions(&file, path)
        .map_err(|source| LayoutError::Gpt {
            path: path.to_owned(),
            source: Box::new(source),
        })?
        .ok_or_else(|| LayoutError::NotACache {
            path: path.to_owned(),
        })?;
    open_metal(path, &file, &partitions)
}

/// The partition a metal image keeps its cache on, and the name a Talos node finds it by.
pub const METAL_CACHE_PARTITION: &str = "IMAGECACHE";

/// What the ext4 root holds besides the cache tree.
const EXT4_LOST_FOUND: &str = "lost+found";

fn open_metal(
    path: &Path,
    file: &File,
    partitions: &[imager_disk::read::Partition],
) -> Result<Cache, LayoutError> {
    let part = partitions
        .iter()
        .find(|p| p.name == METAL_CACHE_PARTITION)
        .ok_or_else(|| LayoutError::NoCachePartition {
            path: path.to_owned(),
            names: partitions
                .iter()
                .map(|p| format!("{:?}", p.name))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let listing =
        imager_ext4::read::list_files(file, path, part.offset, part.len, &[EXT4_LOST_FOUND])
            .map_err(|source| LayoutError::Ext4 {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
    let entries = listing
        .files
        .into_iter()
        .map(|f| Entry {
            path: f.path,
            size: f.size,
            location: runs_location(f.extents),
        })
        .collect();
    Ok(Cache {
        input: path.to_owned(),
        form: InputForm::Metal,
        sources: vec![path.to_owned()],
        entries: sorted(entries, path)?,
        strays: Vec::new(),
        stream: None,
        kept: None,
    })
}

/// The location of a file whose bytes are `runs` of source 0, in file order.
fn runs_location(runs: Vec<(u64, u64)>) -> Location {
    match runs[..] {
        [] => Location::Range {
            source: 0,
            offset: 0,
        },
        [(offset, _)] => Location::Range { source: 0, offset },
        _ => Location::Extents {
            source: 0,
            extents: runs.into_boxed_slice(),
        },
    }
}

fn open_iso(path: &Path, file: &File) -> Result<Cache, LayoutError> {
    let listing = imager_iso::read::list_dir(file, path, ISO_CACHE_DIR)
        .map_err(|source| LayoutError::Iso {
            path: path.to_owned(),
            source: Box::new(source),
        })?
        .ok_or_else(|| LayoutError::NoCacheDir {
            path: path.to_owned(),
        })?;
    let entries = listing
        .files
        .into_iter()
        .map(|f| {
            // Adjacent extents (what writers produce for files of 4 GiB and more) are one run.
            let mut runs: Vec<(u64, u64)> = Vec::with_capacity(f.extents.len());
            for e in &f.extents {
                match runs.last_mut() {
                    Some(last) if last.0 + last.1 == e.offset => last.1 += e.len,
                    _ => runs.push((e.offset, e.len)),
                }
            }
            Entry {
                path: f.path,
                size: f.size,
                location: runs_location(runs),
            }
        })
        .collect();
    Ok(Cache {
        input: path.to_owned(),
        form: InputForm::Iso,
        sources: vec![path.to_owned()],
        entries: sorted(entries, path)?,
        strays: Vec::new(),
        stream: None,
        kept: None,
    })
}

/// Hashes buffers of this size.
pub(crate) fn hash_buffer() -> Vec<u8> {
    vec![0u8; BUF_SIZE]
}
