//! Reading a cache layer (a tar holding a flat tree) in place, without unpacking it.
//!
//! In an uncompressed layer every file's bytes lie contiguous in the blob, so [`index`] only reads
//! headers, jumping from one to the next over the file data, and returns where each file's bytes
//! are. A compressed layer cannot be jumped through; [`walk`] reads its decompressed stream once,
//! handing each file's bytes to a visitor in archive order.
//!
//! Both apply the same rules, so a layer means the same thing however it is read: only regular
//! files and directories under `blob/` and `manifests/`; links, devices, FIFOs, sparse files,
//! unknown entry types, `..`, absolute paths and duplicate paths are refused, each naming the
//! entry. Headers are parsed here rather than by the `tar` crate so that every header is
//! checksummed, sizes are checked against the blob, and a layer cut short is an error rather than a
//! quiet end of the archive. The parsing of a header block ([`parse_header`]) and of a PAX
//! extended header ([`parse_pax`]) is pure, apart from the I/O.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use crate::flat::{BLOB_DIR, MANIFESTS_DIR};

/// The size of a tar header, and the unit file data is padded to.
pub const BLOCK: usize = 512;
const BLOCK_U64: u64 = BLOCK as u64;

/// The most data of long names, long link names and PAX extended headers (local and global) that
/// may come before one entry, together. Names in a cache are a few hundred bytes; the cap keeps a
/// hostile header from making us allocate the size it claims, and a run of such headers from
/// making us expand a compressed stream that no file accounts for.
pub const MAX_META_SIZE: u64 = 1 << 20;

/// The most bytes a layer may hold after its end-of-archive block: record padding (GNU tar pads to
/// 10 KiB records by default; a blocking factor of 2048, the largest in use, to 1 MiB). More is
/// refused, so that a compressed layer cannot make us expand data no header declares.
pub const MAX_TRAILING: u64 = 1 << 20;

/// A regular file of the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarFile {
    /// Normalized: no leading `./` or `/`, no empty or `.` components, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Where the file's first byte is in the (decompressed) tar stream.
    pub data_offset: u64,
}

/// What [`index`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarIndex {
    /// Regular files, in archive order.
    pub files: Vec<TarFile>,
    /// The directories with an entry of their own (normalized, sorted, once each). Both upstream's
    /// writer and ours write one for every directory; parents implied by a file's path alone are
    /// not listed, which keeps this list in proportion to the layer's headers.
    pub dirs: Vec<String>,
}

/// A layer's compression, by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Sniffs the compression from the first bytes of a layer (four are enough).
pub fn sniff(first_bytes: &[u8]) -> Compression {
    if first_bytes.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if first_bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Why an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    ParentDir,
    Absolute,
    NotUtf8,
    /// Top-level name other than `blob` and `manifests` (or a file in place of one of them).
    OutsideCache,
    Symlink,
    HardLink,
    Device,
    Fifo,
    /// A GNU sparse entry, or a PAX header describing a sparse file.
    Sparse,
    /// Any other entry type (vendor extensions, multi-volume parts), by its type byte.
    EntryType(u8),
    /// The same path twice, or a file where a directory is needed.
    Duplicate,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ParentDir => f.write_str("'..' in the path could leave the cache directory"),
            Self::Absolute => f.write_str("absolute paths are refused"),
            Self::NotUtf8 => f.write_str("the name is not UTF-8"),
            Self::OutsideCache => f.write_str("only blob/ and manifests/ belong in a cache layer"),
            Self::Symlink => f.write_str("symbolic links are refused"),
            Self::HardLink => f.write_str("hard links are refused"),
            Self::Device => f.write_str("device nodes are refused"),
            Self::Fifo => f.write_str("FIFOs are refused"),
            Self::Sparse => f.write_str("sparse files are refused"),
            Self::EntryType(t) => write!(f, "entry type {:?} is refused", char::from(*t)),
            Self::Duplicate => f.write_str("the path is already taken by an earlier entry"),
        }
    }
}

/// Where in the layer something went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    /// The offset of the header (for an entry with a long name or PAX header: of its own header,
    /// after those).
    pub offset: u64,
    /// The entry's name, as far as it is known (lossy UTF-8).
    pub entry: Option<String>,
    /// The entry before, for problems that have no name of their own (a truncated header).
    pub previous: Option<String>,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.entry, &self.previous) {
            (Some(e), _) => write!(f, "tar entry {e:?} (header at byte {})", self.offset),
            (None, Some(p)) => write!(f, "tar header at byte {} (after entry {p:?})", self.offset),
            (None, None) => write!(f, "tar header at byte {} (the first)", self.offset),
        }
    }
}

/// A structural problem in the tar itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    Checksum {
        stored: u64,
        computed: u64,
    },
    ChecksumField,
    /// The size field (or a PAX `size` record) is not a number.
    Size,
    /// The layer ends inside a header.
    TruncatedHeader,
    /// The layer ends inside an entry's data (a stream; for a blob see [`Self::DataPastEnd`]).
    TruncatedData,
    /// The layer ends at a header boundary, without the end-of-archive zero blocks.
    MissingEnd,
    /// An end-of-archive zero block followed by something else than a second one: readers that
    /// skip zero blocks would see entries we do not.
    LoneZeroBlock,
    DataPastEnd {
        end: u64,
        len: u64,
    },
    /// Long names and PAX extended headers before one entry larger than [`MAX_META_SIZE`].
    MetaTooLarge {
        size: u64,
    },
    /// A directory entry with data: nothing would use it, and no file accounts for it.
    DirectoryData {
        size: u64,
    },
    /// More than [`MAX_TRAILING`] bytes after the end-of-archive block.
    TrailingData,
    Pax(&'static str),
    /// A long name or PAX header is the last entry.
    OrphanMeta,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Checksum { stored, computed } => write!(
                f,
                "header checksum mismatch (stored {stored:#o}, computed {computed:#o})"
            ),
            Self::ChecksumField => f.write_str("the header checksum field is not a number"),
            Self::Size => f.write_str("the size field is not a valid number"),
            Self::TruncatedHeader => f.write_str("the layer ends inside this header"),
            Self::TruncatedData => f.write_str("the layer ends inside this entry's data"),
            Self::MissingEnd => f.write_str("the layer ends without the end-of-archive blocks"),
            Self::LoneZeroBlock => {
                f.write_str("an end-of-archive zero block is followed by more entries")
            }
            Self::DataPastEnd { end, len } => write!(
                f,
                "the entry's data would end at byte {end}, past the end of the layer ({len} bytes)"
            ),
            Self::MetaTooLarge { size } => write!(
                f,
                "{size} bytes of long names and PAX headers for one entry (at most {MAX_META_SIZE} \
                 are read)"
            ),
            Self::DirectoryData { size } => {
                write!(f, "a directory entry with {size} bytes of data")
            }
            Self::TrailingData => write!(
                f,
                "more than {MAX_TRAILING} bytes follow the end-of-archive block"
            ),
            Self::Pax(why) => write!(f, "malformed PAX extended header: {why}"),
            Self::OrphanMeta => {
                f.write_str("a long name or PAX header is not followed by an entry")
            }
        }
    }
}

/// An error of [`index`] or [`walk`]; the caller adds which layer.
#[derive(Debug, thiserror::Error)]
pub enum TarLayerError {
    #[error("{at}: {refusal}")]
    Refused { at: At, refusal: Refusal },
    #[error("{at}: {problem}")]
    Malformed { at: At, problem: Malformed },
    #[error("{at}: reading the layer")]
    Read {
        at: At,
        #[source]
        source: io::Error,
    },
    /// The files declared so far need more room than the reader was given
    /// ([`Bounds::data`]).
    #[error(
        "{at}: the layer's files come to at least {declared} bytes, more than the {room} bytes \
         there is room for"
    )]
    NoRoom { at: At, declared: u64, room: u64 },
}

impl TarLayerError {
    pub fn at(&self) -> &At {
        match self {
            Self::Refused { at, .. }
            | Self::Malformed { at, .. }
            | Self::Read { at, .. }
            | Self::NoRoom { at, .. } => at,
        }
    }
}

/// An error of [`walk`]: the layer's, or the visitor's, passed through as is.
#[derive(Debug, thiserror::Error)]
pub enum WalkError<E> {
    #[error(transparent)]
    Layer(#[from] TarLayerError),
    #[error(transparent)]
    Visit(E),
}

// ---------------------------------------------------------------------------------------------
// Pure parsing.

/// One non-zero header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name, with the ustar prefix applied; before any long name or PAX path.
    pub name: Vec<u8>,
    /// The size field (before any PAX `size`).
    pub size: u64,
    /// The type flag byte.
    pub kind: u8,
}

const NAME: std::ops::Range<usize> = 0..100;
const SIZE: std::ops::Range<usize> = 124..136;
const CHKSUM: std::ops::Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const MAGIC: std::ops::Range<usize> = 257..265;
const PREFIX: std::ops::Range<usize> = 345..500;

/// Parses a header block: `Ok(None)` for a zero block (end of archive). The error carries the
/// name field as it stands, to name the entry in a message.
pub fn parse_header(block: &[u8; BLOCK]) -> Result<Option<Header>, (Malformed, Vec<u8>)> {
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let raw_name = until_nul(&block[NAME]);
    let fail = |m| Err((m, raw_name.to_vec()));
    let Some(stored) = parse_numeric(&block[CHKSUM]) else {
        return fail(Malformed::ChecksumField);
    };
    // The checksum is computed with its own field as spaces; some old writers summed signed
    // bytes, which every reader still accepts.
    let sum_as_spaces = |sum: fn(&[u8]) -> i64| sum(block) - sum(&block[CHKSUM]) + 8 * 32;
    let unsigned = sum_as_spaces(|b| b.iter().map(|&x| i64::from(x)).sum());
    if i64::try_from(stored).ok() != Some(unsigned) {
        let signed = sum_as_spaces(|b| b.iter().map(|&x| i64::from(x as i8)).sum());
        if i64::try_from(stored).ok() != Some(signed) {
            return fail(Malformed::Checksum {
                stored,
                // At most 512 * 255: never negative.
                computed: unsigned.unsigned_abs(),
            });
        }
    }
    let Some(size) = parse_numeric(&block[SIZE]) else {
        return fail(Malformed::Size);
    };
    // Only POSIX ustar has the prefix field; GNU's old format keeps other data there.
    let name = match &block[MAGIC] {
        b"ustar\x0000" => {
            let prefix = until_nul(&block[PREFIX]);
            if prefix.is_empty() {
                raw_name.to_vec()
            } else {
                [prefix, b"/", raw_name].concat()
            }
        }
        _ => raw_name.to_vec(),
    };
    Ok(Some(Header {
        name,
        size,
        kind: block[TYPEFLAG],
    }))
}

fn until_nul(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|&b| b == 0)
        .map_or(field, |n| &field[..n])
}

/// A numeric header field: octal digits, optionally led by spaces and ended by spaces or NULs, or
/// GNU's base-256 (the high bit of the first byte set) for values octal cannot hold. Negative
/// base-256 values and anything else are `None`.
pub fn parse_numeric(field: &[u8]) -> Option<u64> {
    let (&first, rest) = field.split_first()?;
    if first & 0x80 != 0 {
        if first & 0x40 != 0 {
            return None;
        }
        let mut value = u64::from(first & 0x3f);
        for &b in rest {
            if value >> 56 != 0 {
                return None;
            }
            value = value << 8 | u64::from(b);
        }
        return Some(value);
    }
    let start = field.iter().position(|&b| b != b' ')?;
    let digits = &field[start..];
    let end = digits
        .iter()
        .position(|&b| !(b'0'..=b'7').contains(&b))
        .unwrap_or(digits.len());
    if end == 0 || !digits[end..].iter().all(|&b| b == b' ' || b == 0) {
        return None;
    }
    digits[..end].iter().try_fold(0u64, |v, &d| {
        v.checked_mul(8)?.checked_add(u64::from(d - b'0'))
    })
}

/// What a PAX extended header says about the next entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pax {
    pub path: Option<Vec<u8>>,
    pub size: Option<u64>,
    /// Any `GNU.sparse.*` record: the entry is a sparse file in disguise.
    pub sparse: bool,
}

/// Parses the records (`<len> <key>=<value>\n`) of a PAX extended header.
pub fn parse_pax(mut data: &[u8]) -> Result<Pax, Malformed> {
    let mut pax = Pax::default();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or(Malformed::Pax("a record without a length"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(Malformed::Pax("a record length is not a number"))?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(Malformed::Pax("a record's length does not match it"));
        }
        let record = &data[space + 1..len - 1];
        data = &data[len..];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or(Malformed::Pax("a record without '='"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            // An empty value cancels the record: the header's own field applies.
            b"path" => pax.path = (!value.is_empty()).then(|| value.to_vec()),
            b"size" if value.is_empty() => pax.size = None,
            b"size" => {
                let size = std::str::from_utf8(value)
                    .ok()
                    .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse().ok())
                    .ok_or(Malformed::Size)?;
                pax.size = Some(size);
            }
            k if k.starts_with(b"GNU.sparse.") => pax.sparse = true,
            _ => {}
        }
    }
    Ok(pax)
}

/// Normalizes an entry's path: `Ok(None)` for the archive root (`.`, `./`).
pub fn normalize(raw: &[u8]) -> Result<Option<String>, Refusal> {
    let s = std::str::from_utf8(raw).map_err(|_| Refusal::NotUtf8)?;
    if s.starts_with('/') {
        return Err(Refusal::Absolute);
    }
    let mut out = String::with_capacity(s.len());
    for component in s.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(Refusal::ParentDir),
            c => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    let top = out.split('/').next().unwrap_or_default();
    if top == BLOB_DIR || top == MANIFESTS_DIR {
        Ok(Some(out))
    } else {
        Err(Refusal::OutsideCache)
    }
}

/// What an entry of a given type flag is to us.
enum Kind {
    File,
    Dir,
    LongName,
    /// A long link name: only links use one, and those are refused when they come.
    LongLink,
    Pax,
    GlobalPax,
    Refused(Refusal),
}

fn kind(flag: u8) -> Kind {
    match flag {
        b'0' | 0 | b'7' => Kind::File,
        b'5' => Kind::Dir,
        b'L' => Kind::LongName,
        b'K' => Kind::LongLink,
        b'x' => Kind::Pax,
        b'g' => Kind::GlobalPax,
        b'1' => Kind::Refused(Refusal::HardLink),
        b'2' => Kind::Refused(Refusal::Symlink),
        b'3' | b'4' => Kind::Refused(Refusal::Device),
        b'6' => Kind::Refused(Refusal::Fifo),
        b'S' => Kind::Refused(Refusal::Sparse),
        other => Kind::Refused(Refusal::EntryType(other)),
    }
}

/// Paths taken so far, as a tree of components: each name is looked at once, component by
/// component, so a hostile layer of deep paths costs time and memory in proportion to its names,
/// not to the square of their depth (as a set of every parent's full path would).
struct Taken {
    /// `nodes[0]` is the root.
    nodes: Vec<Node>,
    /// Paths of directory entries, as given.
    dirs: Vec<String>,
}

struct Node {
    is_dir: bool,
    children: HashMap<Box<str>, usize>,
}

impl Default for Taken {
    fn default() -> Self {
        Self {
            nodes: vec![Node {
                is_dir: true,
                children: HashMap::new(),
            }],
            dirs: Vec::new(),
        }
    }
}

impl Taken {
    /// Records a normalized `path` and its parents (as directories); a file in the way, or
    /// anything but a directory again where a directory is, is a duplicate.
    fn add(&mut self, path: &str, is_dir: bool) -> Result<(), Refusal> {
        let mut at = 0;
        let mut components = path.split('/').peekable();
        while let Some(component) = components.next() {
            let last = components.peek().is_none();
            match self.nodes[at].children.get(component) {
                Some(&child) => {
                    let child_is_dir = self.nodes[child].is_dir;
                    if !child_is_dir || (last && !is_dir) {
                        return Err(Refusal::Duplicate);
                    }
                    at = child;
                }
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(Node {
                        is_dir: !last || is_dir,
                        children: HashMap::new(),
                    });
                    self.nodes[at].children.insert(component.into(), child);
                    at = child;
                }
            }
        }
        if is_dir {
            self.dirs.push(path.to_owned());
        }
        Ok(())
    }

    fn into_dirs(mut self) -> Vec<String> {
        self.dirs.sort_unstable();
        self.dirs.dedup();
        self.dirs
    }
}

// ---------------------------------------------------------------------------------------------
// I/O: one loop over headers, for a blob read at offsets and for a stream read in order.

/// Where headers come from.
trait Source {
    /// The blob's length, if known up front.
    fn len(&self) -> Option<u64>;
    /// Reads the block at `offset`; returns how many bytes the layer had (less than a block only
    /// at its end).
    fn block(&mut self, offset: u64, buf: &mut [u8; BLOCK]) -> io::Result<usize>;
    /// Reads `len` bytes at `offset`: the data of a long name or PAX header.
    fn read_meta(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Goes on at `offset`, past data not read; `UnexpectedEof` if the layer ends before it.
    fn skip_to(&mut self, offset: u64) -> io::Result<()>;
    /// How many bytes the layer holds from `offset` on, counting no further than `limit + 1`.
    fn rest(&mut self, offset: u64, limit: u64) -> io::Result<u64>;
}

struct Blob<'a> {
    file: &'a File,
    len: u64,
}

impl Source for Blob<'_> {
    fn len(&self) -> Option<u64> {
        Some(self.len)
    }

    fn block(&mut self, offset: u64, buf: &mut [u8; BLOCK]) -> io::Result<usize> {
        // Past `len` is not the layer, even if the file is longer.
        let want = usize::try_from(self.len.saturating_sub(offset).min(BLOCK_U64)).unwrap_or(0);
        let mut got = 0;
        while got < want {
            match self.file.read_at(&mut buf[got..want], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    fn read_meta(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    fn skip_to(&mut self, _offset: u64) -> io::Result<()> {
        Ok(())
    }

    fn rest(&mut self, offset: u64, _limit: u64) -> io::Result<u64> {
        Ok(self.len.saturating_sub(offset))
    }
}

struct Stream<R> {
    inner: R,
    pos: u64,
    /// Set when the layer ended inside a file's data while the visitor read it.
    ended: bool,
    /// A read error met while the visitor read, kept to be reported as the layer's.
    failed: Option<io::Error>,
}

impl<R: Read> Source for Stream<R> {
    fn len(&self) -> Option<u64> {
        None
    }

    fn block(&mut self, offset: u64, buf: &mut [u8; BLOCK]) -> io::Result<usize> {
        debug_assert_eq!(offset, self.pos);
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += got as u64;
        Ok(got)
    }

    fn read_meta(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        debug_assert_eq!(offset, self.pos);
        let mut buf = vec![0; len];
        self.inner.read_exact(&mut buf)?;
        self.pos += len as u64;
        Ok(buf)
    }

    fn skip_to(&mut self, offset: u64) -> io::Result<()> {
        let n = offset.saturating_sub(self.pos);
        let skipped = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        self.pos += skipped;
        if skipped < n {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    fn rest(&mut self, offset: u64, limit: u64) -> io::Result<u64> {
        debug_assert!(offset >= self.pos);
        let want = limit.saturating_add(1);
        let mut buf = [0u8; 8192];
        let mut read = 0u64;
        while read < want {
            let n = usize::try_from(want - read).map_or(buf.len(), |w| w.min(buf.len()));
            match self.inner.read(&mut buf[..n]) {
                Ok(0) => break,
                Ok(n) => read += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // What follows the tar is not the archive: bytes the decompressor cannot make
                // sense of (a gzip stream padded with zeros) end it here, and the blob's digest
                // decides whether they belong (a file that cannot be read fails that too).
                Err(_) => break,
            }
        }
        self.pos += read;
        Ok(read)
    }
}

/// Exactly one file's bytes of a stream: ending early is an error, not a short file.
struct FileData<'a, R> {
    stream: &'a mut Stream<R>,
    remaining: u64,
}

impl<R: Read> Read for FileData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        match self.stream.inner.read(&mut buf[..want]) {
            Ok(0) => {
                self.stream.ended = true;
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the layer ends inside this file",
                ))
            }
            Ok(n) => {
                self.stream.pos += n as u64;
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let kind = e.kind();
                self.stream.failed = Some(e);
                Err(io::Error::new(kind, "reading the layer failed"))
            }
        }
    }
}

fn round_up(n: u64) -> Option<u64> {
    n.checked_add(BLOCK_U64 - 1).map(|n| n & !(BLOCK_U64 - 1))
}

/// The one loop: checks every header and calls `on_file` for each regular file, positioned at
/// its data. Returns the directories. Every byte it makes the source read is accounted for by a
/// header: a regular file's declared size (their sum at most `max_data`), at most
/// [`MAX_META_SIZE`] of metadata per entry, and at most [`MAX_TRAILING`] after the end.
fn scan<S: Source, E>(
    src: &mut S,
    max_data: u64,
    mut on_file: impl FnMut(&mut S, &TarFile, u64) -> Result<(), WalkError<E>>,
) -> Result<Vec<String>, WalkError<E>> {
    let mut taken = Taken::default();
    let mut previous: Option<String> = None;
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax = Pax::default();
    // Whether a long name, long link name or PAX header awaits its entry.
    let mut pending = false;
    // Metadata bytes since the last entry, and file data declared so far.
    let mut meta = 0u64;
    let mut data = 0u64;
    let mut offset = 0u64;
    let mut block = [0u8; BLOCK];
    loop {
        let at = |entry: Option<String>, previous: &Option<String>| At {
            offset,
            entry,
            previous: previous.clone(),
        };
        let malformed = |problem, entry: Option<String>, previous: &Option<String>| {
            WalkError::Layer(TarLayerError::Malformed {
                at: at(entry, previous),
                problem,
            })
        };
        let read_err = |source, entry: Option<String>, previous: &Option<String>| {
            WalkError::Layer(TarLayerError::Read {
                at: at(entry, previous),
                source,
            })
        };
        let got = src
            .block(offset, &mut block)
            .map_err(|e| read_err(e, None, &previous))?;
        match got {
            0 => return Err(malformed(Malformed::MissingEnd, None, &previous)),
            BLOCK => {}
            _ => return Err(malformed(Malformed::TruncatedHeader, None, &previous)),
        }
        let header = match parse_header(&block) {
            Ok(Some(h)) => h,
            Ok(None) => {
                if pending {
                    return Err(malformed(Malformed::OrphanMeta, None, &previous));
                }
                // Lenient about a missing (or cut) second zero block, as GNU tar is; not about
                // anything else coming after the first.
                let got = src
                    .block(offset + BLOCK_U64, &mut block)
                    .map_err(|e| read_err(e, None, &previous))?;
                if block[..got].iter().any(|&b| b != 0) {
                    return Err(malformed(Malformed::LoneZeroBlock, None, &previous));
                }
                let end = offset + BLOCK_U64 + got as u64;
                let rest = src
                    .rest(end, MAX_TRAILING)
                    .map_err(|e| read_err(e, None, &previous))?;
                if rest > MAX_TRAILING {
                    return Err(malformed(Malformed::TrailingData, None, &previous));
                }
                return Ok(taken.into_dirs());
            }
            Err((problem, name)) => {
                let name = String::from_utf8_lossy(&name).into_owned();
                return Err(malformed(problem, Some(name), &previous));
            }
        };
        let kind = kind(header.kind);
        let is_meta = matches!(
            kind,
            Kind::LongName | Kind::LongLink | Kind::Pax | Kind::GlobalPax
        );
        // Extensions apply to the next real entry only, not to further extension headers.
        let (raw_name, size) = if is_meta {
            (header.name, header.size)
        } else {
            let name = pax.path.take().or(long_name.take()).unwrap_or(header.name);
            (name, pax.size.take().unwrap_or(header.size))
        };
        let name_of = |raw: &[u8]| Some(String::from_utf8_lossy(raw).into_owned());
        let data_offset = offset + BLOCK_U64;
        let (Some(end), Some(next)) = (
            data_offset.checked_add(size),
            round_up(size).and_then(|s| data_offset.checked_add(s)),
        ) else {
            return Err(malformed(Malformed::Size, name_of(&raw_name), &previous));
        };
        if let Some(len) = src.len()
            && end > len
        {
            let problem = Malformed::DataPastEnd { end, len };
            return Err(malformed(problem, name_of(&raw_name), &previous));
        }
        if is_meta {
            meta = meta.saturating_add(size);
            if meta > MAX_META_SIZE {
                let problem = Malformed::MetaTooLarge { size: meta };
                return Err(malformed(problem, name_of(&raw_name), &previous));
            }
        }
        let read_meta = |src: &mut S| {
            // MAX_META_SIZE fits any usize.
            src.read_meta(data_offset, size as usize)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => {
                        malformed(Malformed::TruncatedData, name_of(&raw_name), &previous)
                    }
                    _ => read_err(e, name_of(&raw_name), &previous),
                })
        };
        let refused = |refusal| {
            WalkError::Layer(TarLayerError::Refused {
                at: at(name_of(&raw_name), &previous),
                refusal,
            })
        };
        match kind {
            Kind::LongName => {
                let data = read_meta(src)?;
                long_name = Some(until_nul(&data).to_vec());
                pending = true;
            }
            Kind::Pax => {
                let data = read_meta(src)?;
                let parsed =
                    parse_pax(&data).map_err(|p| malformed(p, name_of(&raw_name), &previous))?;
                // Records of a second PAX header add to the first's.
                pax.path = parsed.path.or(pax.path.take());
                pax.size = parsed.size.or(pax.size);
                pax.sparse |= parsed.sparse;
                pending = true;
            }
            Kind::LongLink => pending = true,
            Kind::GlobalPax => {}
            Kind::Refused(refusal) => return Err(refused(refusal)),
            Kind::File | Kind::Dir => {
                pending = false;
                meta = 0;
                if std::mem::take(&mut pax.sparse) {
                    return Err(refused(Refusal::Sparse));
                }
                // Old (pre-ustar) archives mark directories only by a trailing slash.
                let is_dir = matches!(kind, Kind::Dir) || raw_name.ends_with(b"/");
                if is_dir && size > 0 {
                    let problem = Malformed::DirectoryData { size };
                    return Err(malformed(problem, name_of(&raw_name), &previous));
                }
                let path = normalize(&raw_name).map_err(refused)?;
                match path {
                    None if is_dir => {}
                    None => return Err(refused(Refusal::OutsideCache)),
                    // `blob` or `manifests` as a file: nothing could be found under it.
                    Some(p) if !is_dir && !p.contains('/') => {
                        return Err(refused(Refusal::OutsideCache));
                    }
                    Some(p) => {
                        taken.add(&p, is_dir).map_err(refused)?;
                        if !is_dir {
                            data = data.saturating_add(size);
                            if data > max_data {
                                return Err(WalkError::Layer(TarLayerError::NoRoom {
                                    at: at(Some(p), &previous),
                                    declared: data,
                                    room: max_data,
                                }));
                            }
                            let file = TarFile {
                                path: p,
                                size,
                                data_offset,
                            };
                            on_file(src, &file, offset)?;
                            previous = Some(file.path);
                        } else {
                            previous = Some(p);
                        }
                    }
                }
            }
        }
        src.skip_to(next).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                malformed(Malformed::TruncatedData, name_of(&raw_name), &previous)
            }
            _ => read_err(e, name_of(&raw_name), &previous),
        })?;
        offset = next;
    }
}

/// Indexes an uncompressed tar held in `file` (the layer blob, `len` bytes) by reading its headers
/// at their offsets, never the file data. Returns the regular files in archive order and the
/// directory entries.
pub fn index(file: &File, len: u64) -> Result<TarIndex, TarLayerError> {
    let mut files = Vec::new();
    let mut src = Blob { file, len };
    let dirs = scan::<_, std::convert::Infallible>(&mut src, u64::MAX, |_, f, _| {
        files.push(f.clone());
        Ok(())
    })
    .map_err(|e| match e {
        WalkError::Layer(e) => e,
        WalkError::Visit(never) => match never {},
    })?;
    Ok(TarIndex { files, dirs })
}

/// Walks a (decompressed) tar stream once, calling `visit` for each regular file, in archive
/// order, with a reader of exactly its bytes (what the visitor leaves unread is skipped). The
/// same checks as [`index`], except that the stream's length is not known up front: data cut
/// short is [`Malformed::TruncatedData`], even if the visitor's read error is what it returns.
///
/// `stream` is read in blocks of 512 bytes; pass a buffered reader if reads are costly.
pub fn walk<R: Read, E>(
    stream: R,
    visit: impl FnMut(&TarFile, &mut dyn Read) -> Result<(), E>,
) -> Result<(), WalkError<E>> {
    walk_within(stream, u64::MAX, visit)
}

/// [`walk`], refusing ([`TarLayerError::NoRoom`]) a layer whose regular files' declared sizes come
/// to more than `max_data`, at the header that passes it, before its data is read.
pub fn walk_within<R: Read, E>(
    stream: R,
    max_data: u64,
    mut visit: impl FnMut(&TarFile, &mut dyn Read) -> Result<(), E>,
) -> Result<(), WalkError<E>> {
    let mut src = Stream {
        inner: stream,
        pos: 0,
        ended: false,
        failed: None,
    };
    scan(&mut src, max_data, |src, file, offset| {
        let at = || At {
            offset,
            entry: Some(file.path.clone()),
            previous: None,
        };
        let mut data = FileData {
            stream: src,
            remaining: file.size,
        };
        let result = visit(file, &mut data);
        // The layer's own failures come first: the visitor only saw their shadow.
        if let Some(source) = src.failed.take() {
            return Err(WalkError::Layer(TarLayerError::Read { at: at(), source }));
        }
        if src.ended {
            return Err(WalkError::Layer(TarLayerError::Malformed {
                at: at(),
                problem: Malformed::TruncatedData,
            }));
        }
        result.map_err(WalkError::Visit)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar header block with a valid checksum.
    fn block(name: &[u8], size: &[u8], kind: u8) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..name.len()].copy_from_slice(name);
        b[100..108].copy_from_slice(b"0000644\0");
        b[SIZE][..size.len()].copy_from_slice(size);
        b[TYPEFLAG] = kind;
        b[MAGIC].copy_from_slice(b"ustar\x0000");
        set_cksum(&mut b);
        b
    }

    fn set_cksum(b: &mut [u8; BLOCK]) {
        b[CHKSUM].fill(b' ');
        let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
        b[CHKSUM].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"00000000017\0"), Some(15));
        assert_eq!(parse_numeric(b"   17 \0\0\0\0\0\0"), Some(15));
        assert_eq!(parse_numeric(b"17"), Some(15));
        assert_eq!(parse_numeric(b"77777777777\0"), Some(0o77777777777));
        assert_eq!(parse_numeric(b"\0\0\0\0"), None);
        assert_eq!(parse_numeric(b"        "), None);
        assert_eq!(parse_numeric(b""), None);
        assert_eq!(parse_numeric(b"0000008\0"), None);
        assert_eq!(parse_numeric(b"12a\0"), None);
        assert_eq!(parse_numeric(b"12\0a"), None);
        assert_eq!(parse_numeric(b"-1\0"), None);
        // Base-256: 16 GiB, which 11 octal digits cannot hold.
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[7] = 4;
        assert_eq!(parse_numeric(&f), Some(1 << 34));
        f[0] = 0xff;
        assert_eq!(parse_numeric(&f), None, "negative");
        let mut big = [0xffu8; 12];
        big[0] = 0x80;
        assert_eq!(parse_numeric(&big), None, "beyond u64");
        // An octal value beyond u64.
        assert_eq!(parse_numeric(b"7777777777777777777777777"), None);
    }

    #[test]
    fn headers() {
        assert_eq!(parse_header(&[0; BLOCK]), Ok(None));
        let h = parse_header(&block(b"blob/x", b"00000000012\0", b'0'))
            .unwrap()
            .unwrap();
        assert_eq!(
            h,
            Header {
                name: b"blob/x".to_vec(),
                size: 10,
                kind: b'0'
            }
        );

        // The ustar prefix joins the name.
        let mut b = block(b"sha256-x", b"1", b'0');
        b[PREFIX][..4].copy_from_slice(b"blob");
        set_cksum(&mut b);
        assert_eq!(parse_header(&b).unwrap().unwrap().name, b"blob/sha256-x");
        // ... but not in GNU's format, where that space means something else.
        b[MAGIC].copy_from_slice(b"ustar  \0");
        set_cksum(&mut b);
        assert_eq!(parse_header(&b).unwrap().unwrap().name, b"sha256-x");

        // A checksum over signed bytes (old writers) is accepted.
        let mut b = block("blob/\u{e9}".as_bytes(), b"1", b'0');
        let signed: i64 = b
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if CHKSUM.contains(&i) {
                    32
                } else {
                    i64::from(x as i8)
                }
            })
            .sum();
        b[CHKSUM].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        assert!(parse_header(&b).is_ok());

        let mut b = block(b"blob/x", b"1", b'0');
        b[0] = b'c';
        let (m, name) = parse_header(&b).unwrap_err();
        assert!(matches!(m, Malformed::Checksum { .. }), "{m}");
        assert_eq!(name, b"clob/x");

        let mut b = block(b"blob/x", b"1", b'0');
        b[CHKSUM].copy_from_slice(b"zzzzzz\0 ");
        assert_eq!(parse_header(&b).unwrap_err().0, Malformed::ChecksumField);

        let b = block(b"blob/x", b"12x", b'0');
        assert_eq!(
            parse_header(&b).unwrap_err(),
            (Malformed::Size, b"blob/x".to_vec())
        );
    }

    #[test]
    fn pax_records() {
        let rec = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            // The length counts its own digits.
            let mut n = body.len() + 1;
            while n != body.len() + n.to_string().len() {
                n = body.len() + n.to_string().len();
            }
            format!("{n}{body}")
        };
        let data = [
            rec("path", "blob/long"),
            rec("size", "123"),
            rec("mtime", "1.5"),
        ]
        .concat();
        let p = parse_pax(data.as_bytes()).unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"blob/long"[..]));
        assert_eq!(p.size, Some(123));
        assert!(!p.sparse);
        assert!(
            parse_pax(rec("GNU.sparse.major", "1").as_bytes())
                .unwrap()
                .sparse
        );
        assert_eq!(
            parse_pax(rec("size", "12x").as_bytes()),
            Err(Malformed::Size)
        );
        assert_eq!(
            parse_pax(rec("size", "-1").as_bytes()),
            Err(Malformed::Size)
        );
        assert_eq!(parse_pax(rec("path", "").as_bytes()).unwrap().path, None);
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"9 path=x\n").is_ok());
        assert!(parse_pax(b"9 path=xx").is_err());
        assert!(parse_pax(b"3 pa").is_err());
        assert!(parse_pax(b"x path=x\n").is_err());
        assert!(parse_pax(b"7 path\n").is_err());
        assert!(parse_pax(b"path=x\n").is_err());
        assert!(parse_pax(b"1 ").is_err());
        assert_eq!(parse_pax(b""), Ok(Pax::default()));
    }

    #[test]
    fn paths() {
        let ok = |s: &str| normalize(s.as_bytes()).unwrap().unwrap();
        assert_eq!(ok("blob/sha256-x"), "blob/sha256-x");
        assert_eq!(ok("./manifests/docker.io/"), "manifests/docker.io");
        assert_eq!(ok("blob//./x"), "blob/x");
        assert_eq!(normalize(b"./"), Ok(None));
        assert_eq!(normalize(b"."), Ok(None));
        assert_eq!(normalize(b"blob/../../etc"), Err(Refusal::ParentDir));
        assert_eq!(normalize(b"blob/.."), Err(Refusal::ParentDir));
        assert_eq!(normalize(b"/blob/x"), Err(Refusal::Absolute));
        assert_eq!(normalize(b"etc/passwd"), Err(Refusal::OutsideCache));
        assert_eq!(normalize(b"blobs/x"), Err(Refusal::OutsideCache));
        assert_eq!(normalize(b"blob\xff"), Err(Refusal::NotUtf8));
    }

    #[test]
    fn taken_paths() {
        let mut t = Taken::default();
        t.add("blob", true).unwrap();
        t.add("blob/a", false).unwrap();
        t.add("manifests/r/x/reference/t", false).unwrap();
        t.add("manifests/r", true).unwrap();
        assert_eq!(t.add("blob/a", false), Err(Refusal::Duplicate));
        assert_eq!(t.add("blob/a", true), Err(Refusal::Duplicate));
        assert_eq!(t.add("blob/a/b", false), Err(Refusal::Duplicate));
        assert_eq!(t.add("manifests/r", false), Err(Refusal::Duplicate));
        assert_eq!(t.add("manifests/r/x", true), Ok(()));
        assert_eq!(t.add("blob", true), Ok(()));
        assert_eq!(t.into_dirs(), ["blob", "manifests/r", "manifests/r/x"]);
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"blob/x"), Compression::None);
        assert_eq!(sniff(&[]), Compression::None);
    }

    /// Every prefix and every single-byte change of a small valid archive: the parser must
    /// neither panic nor loop, whatever it decides. A cheap stand-in for fuzzing.
    #[test]
    fn mutations_do_not_panic() {
        let mut archive = Vec::new();
        // 22 bytes: 26 in octal.
        archive.extend_from_slice(&block(b"././@LongLink", b"26", b'L'));
        let mut name = b"blob/a-long-name-of-18".to_vec();
        name.resize(BLOCK, 0);
        archive.extend_from_slice(&name);
        archive.extend_from_slice(&block(b"blob/x", b"3", b'0'));
        let mut data = b"abc".to_vec();
        data.resize(BLOCK, 0);
        archive.extend_from_slice(&data);
        archive.extend_from_slice(&[0; 2 * BLOCK]);
        let run = |bytes: &[u8]| {
            let _ = walk(bytes, |_, r| io::copy(r, &mut io::sink()).map(drop));
        };
        let files = std::cell::RefCell::new(Vec::new());
        walk(&archive[..], |f, r| {
            let mut s = String::new();
            r.read_to_string(&mut s)?;
            files.borrow_mut().push((f.path.clone(), s));
            Ok::<_, io::Error>(())
        })
        .unwrap();
        assert_eq!(
            files.into_inner(),
            [("blob/a-long-name-of-18".to_owned(), "abc".to_owned())]
        );
        for cut in 0..archive.len() {
            run(&archive[..cut]);
        }
        // With checksums fixed after the change, or nearly every change would stop there.
        let headers = [0, 2 * BLOCK];
        for i in (0..archive.len()).step_by(3) {
            for v in [0u8, b'0', b'7', b'x', b'L', 0x80, 0xff, b'/', b'.'] {
                let mut m = archive.clone();
                m[i] = v;
                run(&m);
                for h in headers {
                    let b: &mut [u8; BLOCK] = (&mut m[h..h + BLOCK]).try_into().unwrap();
                    set_cksum(b);
                }
                run(&m);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A layer blob read as one stream.

/// Why a layer blob could not be read as a stream.
#[derive(Debug, thiserror::Error)]
pub enum LayerReadError {
    #[error(transparent)]
    Tar(#[from] TarLayerError),
    #[error("tar entry {entry:?}")]
    Visit {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("reading the layer blob")]
    Read(#[source] io::Error),
    #[error(
        "a zstd-compressed layer is not supported; re-create the cache (imager cache create writes an uncompressed layer)"
    )]
    Zstd,
    /// The (decompressed) stream goes on past [`Bounds::expanded`]: the layer is not the one that
    /// was listed.
    #[error("the layer expands past the {limit} bytes it held when it was listed")]
    Grew { limit: u64 },
}

/// Bounds on what reading a layer as a stream may cost, on top of the format's own
/// ([`MAX_META_SIZE`], [`MAX_TRAILING`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The most file data (the sum of the regular files' declared sizes) the caller has room for:
    /// a header declaring more is refused before its data is expanded.
    pub data: u64,
    /// The most bytes the decompressed tar stream may have (what a listing measured).
    pub expanded: u64,
}

impl Bounds {
    /// Only the format's own bounds.
    pub const FORMAT: Self = Self {
        data: u64::MAX,
        expanded: u64::MAX,
    };
}

/// What [`read_layer`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerRead {
    /// The digest and length of the blob's own (compressed) bytes.
    pub digest: crate::Digest,
    pub size: u64,
    /// The length of the decompressed tar stream, up to the last byte read (trailing padding
    /// included).
    pub expanded: u64,
}

/// A reader that stops at `limit` bytes: one more is an error, and marked, so that the caller can
/// tell it from the layer's own failures.
struct Limited<R> {
    inner: R,
    read: u64,
    limit: u64,
    exceeded: bool,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let left = self.limit - self.read;
        // At the limit, one byte more tells an end from a stream that goes on.
        let want = usize::try_from(left).map_or(buf.len(), |l| l.clamp(1, buf.len()));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > left {
            self.exceeded = true;
            return Err(io::Error::other("the layer goes on past its bound"));
        }
        self.read += n as u64;
        Ok(n)
    }
}

/// Reads the layer blob `blob` as one stream: decompressed as `compression` says, walked as a tar
/// ([`walk`], with its checks), `visit` called with each regular file and a reader of exactly its
/// bytes. The blob's own bytes are hashed as they pass (read to the end, past the tar's end
/// blocks and the gzip trailer), so the caller compares the result with the layer's descriptor:
/// one read of the blob, however big.
///
/// What it expands is bounded by the headers (see [`walk`]) and by `bounds`.
pub fn read_layer(
    blob: impl Read,
    compression: Compression,
    bounds: Bounds,
    mut visit: impl FnMut(&TarFile, &mut dyn Read) -> io::Result<()>,
) -> Result<LayerRead, LayerReadError> {
    let mut hashing =
        crate::digest::HashingReader::new(io::BufReader::with_capacity(1 << 20, blob));
    let mut visit = |f: &TarFile, r: &mut dyn Read| {
        visit(f, r).map_err(|source| LayerReadError::Visit {
            entry: f.path.clone(),
            source,
        })
    };
    let stream: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(&mut hashing),
        // The walk reads the decompressed stream to its end (the trailing padding is bounded):
        // the decoder has then taken in every byte of the blob but the gzip trailer's, which
        // `finish` hashes.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut hashing)),
        Compression::Zstd => return Err(LayerReadError::Zstd),
    };
    let mut limited = Limited {
        inner: stream,
        read: 0,
        limit: bounds.expanded,
        exceeded: false,
    };
    let walked = walk_within(&mut limited, bounds.data, &mut visit);
    if limited.exceeded {
        return Err(LayerReadError::Grew {
            limit: bounds.expanded,
        });
    }
    walked.map_err(|e| match e {
        WalkError::Layer(e) => LayerReadError::Tar(e),
        WalkError::Visit(e) => e,
    })?;
    let expanded = limited.read;
    drop(limited);
    let (digest, size) = hashing.finish().map_err(LayerReadError::Read)?;
    Ok(LayerRead {
        digest,
        size,
        expanded,
    })
}

/// Whether a layer blob looks like a cache layer (what tells an oci-wrapped layout from a plain
/// one): its first entry with a name of its own, after directories like `./`, is under `blob/` or
/// `manifests/`. Reads only the start of the layer (decompressing it if need be); any error
/// means "no".
pub fn looks_like_cache_layer(mut blob: impl Read) -> bool {
    let mut head = [0u8; 8];
    let Ok(n) = read_up_to(&mut blob, &mut head) else {
        return false;
    };
    let start = io::Cursor::new(head[..n].to_vec()).chain(blob);
    let mut stream: Box<dyn Read> = match sniff(&head[..n]) {
        Compression::None => Box::new(start),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(start)),
        Compression::Zstd => return false,
    };
    let mut block = [0u8; BLOCK];
    for _ in 0..8 {
        if !matches!(read_up_to(&mut stream, &mut block), Ok(BLOCK)) {
            return false;
        }
        let Ok(Some(header)) = parse_header(&block) else {
            return false;
        };
        match header.kind {
            // Metadata entries (PAX records, GNU long names) precede the entry they name: skip
            // their data and look at that entry's own header.
            b'x' | b'g' | b'L' | b'K' => {
                // The size is bounded before it is rounded up: a hostile one near u64::MAX
                // would overflow. MAX_META_SIZE is a whole number of blocks.
                if header.size > MAX_META_SIZE {
                    return false;
                }
                let skip = header.size.next_multiple_of(BLOCK as u64);
                if io::copy(&mut (&mut stream).take(skip), &mut io::sink()).ok() != Some(skip) {
                    return false;
                }
            }
            _ => match normalize(&header.name) {
                Ok(None) => {}
                Ok(Some(_)) => return true,
                Err(_) => return false,
            },
        }
    }
    false
}

/// Fills `buf` as far as the reader goes.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
