//! Listing a directory of an ISO 9660 image without copying anything out: for each file, where its
//! bytes lie in the image, so that callers can hand those byte ranges to `copy_file_range` or
//! `sendfile` straight from the image.
//!
//! hadris's reader looks every name up with a scan of its directory, which is quadratic in the size
//! of a directory, and an image cache keeps tens of thousands of blobs in one. This reader reads
//! each directory extent once, in one read, and parses it front to back.
//!
//! The parsing (volume descriptor, directory records, SUSP/Rock Ridge entries, the grouping of
//! multi-extent files) is done by pure functions over byte slices; `Reader` does the I/O around
//! them. That split lets the parser be unit-tested with hand-built records.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::IsoError;

/// The only logical block size written in practice (and the sector size of a CD).
pub const BLOCK: u64 = 2048;

/// The volume descriptor set starts at sector 16: the system area comes first.
const DESCRIPTORS_START: u64 = 16;

/// Past this many volume descriptors without a terminator, the image is not sane.
const MAX_DESCRIPTORS: u64 = 64;

/// Directories nested deeper than this below the listed one are refused: no cache needs it, and
/// it bounds the work a hostile image can ask for.
pub const MAX_DEPTH: usize = 64;

/// Continuation areas chained from one record beyond this are refused (a `CE` loop).
const MAX_CONTINUATIONS: usize = 32;

/// A regular file found under the listed directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoFile {
    /// Relative to the listed directory, `/`-separated, Rock Ridge names.
    pub path: String,
    /// Bytes in the file: the sum of the extents' lengths.
    pub size: u64,
    /// Where the file's bytes lie in the image, in file order. Empty for an empty file.
    pub extents: Vec<Extent>,
}

/// A run of bytes of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset in the image.
    pub offset: u64,
    pub len: u64,
}

/// Everything under a directory of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoListing {
    /// The primary volume descriptor's volume identifier, trailing spaces removed.
    pub volume_id: String,
    /// Sorted by path.
    pub files: Vec<IsoFile>,
    /// Relative directory paths, sorted; the listed directory itself is not included.
    pub dirs: Vec<String>,
}

/// What is wrong with an image, or with one entry of it. Wrapped in [`IsoError::Image`], which
/// names the image and the entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("no ISO 9660 primary volume descriptor")]
    NoPrimaryDescriptor,
    #[error("logical block size {0} is not supported (only 2048)")]
    BlockSize(u16),
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error(
        "bytes {start}..{end} lie beyond the end of the image ({len} bytes): the image is truncated or damaged"
    )]
    BeyondEnd { start: u64, end: u64, len: u64 },
    #[error("the image is {len} bytes, but {what} ends at byte {end}: the image is truncated")]
    Truncated {
        len: u64,
        end: u64,
        what: &'static str,
    },
    #[error("the image has a GPT whose backup header is missing at byte {0}: the image is damaged")]
    NoBackupGpt(u64),
    #[error("the directory at block {0} is reached a second time (a directory loop)")]
    Loop(u32),
    #[error("directories are nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("invalid name {name:?}: {reason}")]
    Name { name: String, reason: &'static str },
    #[error("the name appears twice in its directory")]
    Duplicate,
    #[error("it is a symbolic link; only regular files and directories are accepted")]
    Symlink,
    #[error("it is a {0}; only regular files and directories are accepted")]
    NotRegular(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Pure parsing

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// What the reader needs from the primary volume descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Primary {
    pub(crate) volume_id: String,
    /// The volume space size: blocks the volume occupies from the start of the image.
    pub(crate) volume_blocks: u32,
    pub(crate) root_location: u32,
    pub(crate) root_len: u32,
}

/// Kinds of volume descriptor (byte 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Descriptor {
    Primary(Primary),
    Terminator,
    /// Boot record, supplementary (Joliet), partition: not needed here.
    Other,
}

/// Parses one 2048-byte volume descriptor.
pub(crate) fn parse_descriptor(sector: &[u8]) -> Result<Descriptor, ReadError> {
    if sector.len() < BLOCK as usize || &sector[1..6] != b"CD001" {
        return Err(ReadError::Malformed(
            "a volume descriptor lacks the CD001 signature",
        ));
    }
    match sector[0] {
        1 => {}
        255 => return Ok(Descriptor::Terminator),
        _ => return Ok(Descriptor::Other),
    }
    let block = u16::from_le_bytes([sector[128], sector[129]]);
    if u64::from(block) != BLOCK {
        return Err(ReadError::BlockSize(block));
    }
    let volume_id = String::from_utf8_lossy(&sector[40..72])
        .trim_end_matches([' ', '\0'])
        .to_owned();
    let root = parse_record(&sector[156..190])?;
    if root.flags & FLAG_DIR == 0 {
        return Err(ReadError::Malformed(
            "the root directory record is not a directory",
        ));
    }
    Ok(Descriptor::Primary(Primary {
        volume_id,
        volume_blocks: le_u32(sector, 80),
        root_location: root.location,
        root_len: root.data_len,
    }))
}

/// GPTs of hybrid images use 512-byte sectors (what a USB stick has); the primary header is LBA 1.
const GPT_SECTOR: u64 = 512;
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";

/// The LBA of the backup GPT header, if `sector` (LBA 1 of the image) is a GPT header; the backup
/// lies at the end of the disk, so a cut image loses it first.
pub(crate) fn gpt_backup_lba(sector: &[u8]) -> Option<u64> {
    if sector.len() < 40 || &sector[..8] != GPT_SIGNATURE {
        return None;
    }
    let mut alt = [0u8; 8];
    alt.copy_from_slice(&sector[32..40]);
    Some(u64::from_le_bytes(alt))
}

// Bit 0 (hidden) only kept a name out of listings in DOS-era readers: such a file is as real as
// any other, so it is listed.
const FLAG_DIR: u8 = 1 << 1;
const FLAG_ASSOCIATED: u8 = 1 << 2;
const FLAG_MULTI_EXTENT: u8 = 1 << 7;

/// A directory record, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// First logical block of the extent (extended attribute record included).
    pub(crate) location: u32,
    /// Blocks of extended attribute record before the data.
    pub(crate) xattr_blocks: u8,
    pub(crate) data_len: u32,
    pub(crate) flags: u8,
    /// File unit size or interleave gap set: the data is not contiguous.
    pub(crate) interleaved: bool,
    pub(crate) ident: &'a [u8],
    /// The system use area (SUSP entries), before any `SP` skip.
    pub(crate) system_use: &'a [u8],
}

impl Record<'_> {
    fn is_dir(&self) -> bool {
        self.flags & FLAG_DIR != 0
    }

    /// The `.` and `..` records, whose identifiers are the bytes 0 and 1.
    fn is_self_or_parent(&self) -> bool {
        self.ident == [0] || self.ident == [1]
    }

    /// Where the data starts in the image: after the extended attribute record.
    fn data_offset(&self) -> u64 {
        (u64::from(self.location) + u64::from(self.xattr_blocks)) * BLOCK
    }
}

/// Parses one directory record: `rec` is exactly its length byte's worth of bytes.
pub(crate) fn parse_record(rec: &[u8]) -> Result<Record<'_>, ReadError> {
    if rec.len() < 34 || usize::from(rec[0]) != rec.len() {
        return Err(ReadError::Malformed(
            "a directory record is shorter than 34 bytes",
        ));
    }
    let name_len = usize::from(rec[32]);
    if name_len == 0 {
        return Err(ReadError::Malformed("a directory record has an empty name"));
    }
    let name_end = 33 + name_len;
    // The system use area starts on an even offset: a name of even length is followed by a pad byte.
    let su_start = name_end + usize::from(name_len % 2 == 0);
    if name_end > rec.len() {
        return Err(ReadError::Malformed(
            "a directory record's name runs past its end",
        ));
    }
    Ok(Record {
        location: le_u32(rec, 2),
        xattr_blocks: rec[1],
        data_len: le_u32(rec, 10),
        flags: rec[25],
        interleaved: rec[26] != 0 || rec[27] != 0,
        ident: &rec[33..name_end],
        system_use: rec.get(su_start..).unwrap_or(&[]),
    })
}

/// The records of a directory extent, in order. Records never cross a sector boundary; a zero
/// length byte means the rest of the sector is unused.
pub(crate) fn dir_records(extent: &[u8]) -> DirRecords<'_> {
    DirRecords { extent, pos: 0 }
}

#[derive(Debug)]
pub(crate) struct DirRecords<'a> {
    extent: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for DirRecords<'a> {
    type Item = Result<Record<'a>, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let sector = BLOCK as usize;
        loop {
            let len = usize::from(*self.extent.get(self.pos)?);
            if len == 0 {
                self.pos = (self.pos / sector + 1) * sector;
                continue;
            }
            let start = self.pos;
            let end = start + len;
            let sector_end = (start / sector + 1) * sector;
            if end > sector_end || end > self.extent.len() {
                self.pos = self.extent.len();
                return Some(Err(ReadError::Malformed(
                    "a directory record crosses a sector boundary",
                )));
            }
            self.pos = end;
            return Some(parse_record(&self.extent[start..end]));
        }
    }
}

/// One SUSP entry: a two-letter signature, a version and its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SuspEntry<'a> {
    pub(crate) sig: [u8; 2],
    /// The whole entry, header included (field offsets in the specs count from its start).
    pub(crate) bytes: &'a [u8],
}

/// The SUSP entries of a system use or continuation area. Trailing bytes too short for an entry,
/// or a zero signature, end the area (writers pad with zeros).
pub(crate) fn susp_entries(area: &[u8]) -> impl Iterator<Item = Result<SuspEntry<'_>, ReadError>> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let rest = area.get(pos..)?;
        if rest.len() < 4 || rest[..2] == [0, 0] {
            return None;
        }
        let len = usize::from(rest[2]);
        if len < 4 || len > rest.len() {
            pos = area.len();
            return Some(Err(ReadError::Malformed(
                "a SUSP entry's length runs past its area",
            )));
        }
        pos += len;
        if rest[..2] == *b"ST" {
            pos = area.len();
        }
        Some(Ok(SuspEntry {
            sig: [rest[0], rest[1]],
            bytes: &rest[..len],
        }))
    })
}

/// The `SP` entry's skip length, when `area` (the system use area of the root's `.` record) starts
/// with one, which is what says that the image uses SUSP (and so, here, Rock Ridge).
pub(crate) fn sp_skip(area: &[u8]) -> Option<usize> {
    match area {
        [b'S', b'P', 7..=255, 1, 0xbe, 0xef, skip, ..] => Some(usize::from(*skip)),
        _ => None,
    }
}

/// A continuation area: `len` bytes at `offset` in block `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Continuation {
    pub(crate) block: u32,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

/// What the Rock Ridge entries of one record say, gathered over its continuation areas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RockRidge {
    /// The `NM` name, pieces joined.
    pub(crate) name: Option<Vec<u8>>,
    /// The last `NM` had the CONTINUE flag: the next one extends the name.
    name_continues: bool,
    /// `NM` with the CURRENT or PARENT flag.
    pub(crate) name_is_dot: bool,
    /// `CL`: the directory was relocated to this block.
    pub(crate) child_link: Option<u32>,
    /// `RE`: this is a relocated directory, reached through a `CL` elsewhere.
    pub(crate) relocated: bool,
    pub(crate) symlink: bool,
    /// File type bits of the `PX` mode.
    pub(crate) mode_type: Option<u32>,
    /// `PN`: a device.
    pub(crate) device: bool,
    /// `ZF`: zisofs-compressed data, not the file's bytes.
    pub(crate) compressed: bool,
}

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

impl RockRidge {
    /// Takes in the entries of one area; returns the continuation area it names, if any.
    pub(crate) fn parse_area(&mut self, area: &[u8]) -> Result<Option<Continuation>, ReadError> {
        let mut next = None;
        for entry in susp_entries(area) {
            let entry = entry?;
            let b = entry.bytes;
            let short = || ReadError::Malformed("a Rock Ridge entry is too short");
            match &entry.sig {
                b"CE" => {
                    if b.len() < 28 {
                        return Err(short());
                    }
                    let ce = Continuation {
                        block: le_u32(b, 4),
                        offset: le_u32(b, 12),
                        len: le_u32(b, 20),
                    };
                    // As Linux requires: an area within one block. It also bounds what one record
                    // can make the reader read.
                    if u64::from(ce.offset) + u64::from(ce.len) > BLOCK {
                        return Err(ReadError::Malformed(
                            "a continuation area (CE) crosses the end of its block",
                        ));
                    }
                    next = Some(ce);
                }
                b"NM" => {
                    let flags = *b.get(4).ok_or_else(short)?;
                    if flags & 0b110 != 0 {
                        self.name_is_dot = true;
                    }
                    let piece = &b[5..];
                    match &mut self.name {
                        Some(name) if self.name_continues => name.extend_from_slice(piece),
                        Some(_) => {
                            return Err(ReadError::Malformed(
                                "two Rock Ridge names (NM) without the CONTINUE flag",
                            ));
                        }
                        None => self.name = Some(piece.to_vec()),
                    }
                    self.name_continues = flags & 1 != 0;
                }
                b"CL" => {
                    if b.len() < 12 {
                        return Err(short());
                    }
                    self.child_link = Some(le_u32(b, 4));
                }
                b"RE" => self.relocated = true,
                b"SL" => self.symlink = true,
                b"PN" => self.device = true,
                b"ZF" => self.compressed = true,
                b"PX" => {
                    if b.len() < 12 {
                        return Err(short());
                    }
                    self.mode_type = Some(le_u32(b, 4) & S_IFMT);
                }
                // SP, ST, ER, ES, PD, RR, TF, PL, SF and the unknown: nothing a listing needs.
                _ => {}
            }
        }
        Ok(next)
    }
}

/// The name ISO 9660 alone gives: the identifier without its `;1` version and without the `.` that
/// ends a name without extension. Case is kept.
pub(crate) fn iso_name(ident: &[u8]) -> &[u8] {
    let base = match ident.iter().rposition(|&b| b == b';') {
        Some(semi) => &ident[..semi],
        None => ident,
    };
    base.strip_suffix(b".").unwrap_or(base)
}

/// Checks a name for use as a path component.
pub(crate) fn check_name(name: &[u8]) -> Result<String, ReadError> {
    let err = |reason| ReadError::Name {
        name: String::from_utf8_lossy(name).into_owned(),
        reason,
    };
    let name = std::str::from_utf8(name).map_err(|_| err("it is not UTF-8"))?;
    match name {
        "" => Err(err("it is empty")),
        "." | ".." => Err(err("it is . or ..")),
        _ if name.contains('/') => Err(err("it contains '/'")),
        _ if name.contains('\0') => Err(err("it contains a NUL byte")),
        _ => Ok(name.to_owned()),
    }
}

/// Consecutive records that form one entry: a multi-extent file is several records with the same
/// identifier, all but the last with the multi-extent flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group<'a> {
    /// The first record: its system use area carries the Rock Ridge name.
    pub(crate) first: Record<'a>,
    /// Non-empty parts only, in file order.
    pub(crate) extents: Vec<Extent>,
    pub(crate) size: u64,
}

/// Groups the records of a directory (`.` and `..` and associated files dropped) into entries.
pub(crate) fn group_records<'a>(
    records: impl IntoIterator<Item = Result<Record<'a>, ReadError>>,
) -> Result<Vec<Group<'a>>, ReadError> {
    let mut groups: Vec<Group<'a>> = Vec::new();
    // The group still waiting for its final record.
    let mut open = false;
    for rec in records {
        let rec = rec?;
        if rec.is_self_or_parent() {
            if open {
                return Err(ReadError::Malformed("a multi-extent file is cut short"));
            }
            continue;
        }
        if rec.flags & FLAG_ASSOCIATED != 0 {
            // Associated files (Mac resource forks and the like) share the name of the file
            // they belong to; they are not files of the tree. One between the parts of a
            // multi-extent file would be malformed, but is harmless to skip.
            continue;
        }
        if rec.is_dir() && rec.flags & FLAG_MULTI_EXTENT != 0 {
            return Err(ReadError::Malformed(
                "a directory record has the multi-extent flag",
            ));
        }
        let extent = Extent {
            offset: rec.data_offset(),
            len: u64::from(rec.data_len),
        };
        match groups.last_mut() {
            Some(group) if open => {
                if group.first.ident != rec.ident || rec.is_dir() {
                    return Err(ReadError::Malformed(
                        "a multi-extent file's parts have different names",
                    ));
                }
                if extent.len > 0 {
                    group.extents.push(extent);
                }
                group.size += extent.len;
            }
            _ => groups.push(Group {
                first: rec,
                extents: if extent.len > 0 && !rec.is_dir() {
                    vec![extent]
                } else {
                    Vec::new()
                },
                size: extent.len,
            }),
        }
        open = rec.flags & FLAG_MULTI_EXTENT != 0;
    }
    if open {
        return Err(ReadError::Malformed("a multi-extent file is cut short"));
    }
    Ok(groups)
}

// ---------------------------------------------------------------------------------------------
// I/O

/// True when the file has an ISO 9660 primary volume descriptor ("CD001" at byte 32769).
pub fn is_iso9660(file: &File) -> io::Result<bool> {
    let mut buf = [0u8; 6];
    match file.read_exact_at(&mut buf, DESCRIPTORS_START * BLOCK) {
        Ok(()) => Ok(buf[0] == 1 && &buf[1..] == b"CD001"),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err),
    }
}

/// Lists `dir` (e.g. `imagecache`; leading and trailing `/` are ignored, an empty path is the
/// root) of the image. `Ok(None)` when the image has no such directory (or it is a file).
/// `image_path` names the image in errors.
///
/// Refused, with an error naming the entry: data or directories beyond the end of the image, a
/// directory reached twice, nesting deeper than [`MAX_DEPTH`], invalid or duplicate names, and
/// anything but regular files and directories under `dir` (symbolic links, devices, zisofs).
pub fn list_dir(
    image: &File,
    image_path: &Path,
    dir: &str,
) -> Result<Option<IsoListing>, IsoError> {
    let mut reader = Reader::open(image, image_path)?;
    let Some(start) = reader.lookup(dir)? else {
        return Ok(None);
    };
    let (mut files, mut dirs) = reader.walk(start)?;
    files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    dirs.sort_unstable();
    Ok(Some(IsoListing {
        volume_id: reader.volume_id,
        files,
        dirs,
    }))
}

/// A directory to read: its extent, and its path in the image (for errors and results).
#[derive(Debug, Clone)]
struct DirRef {
    location: u32,
    len: u32,
    /// Relative to the listed directory.
    rel: String,
    depth: usize,
}

/// An entry of a directory, its Rock Ridge entries resolved.
#[derive(Debug)]
enum Kind {
    File {
        size: u64,
        extents: Vec<Extent>,
    },
    Dir {
        location: u32,
        len: u32,
    },
    /// A `CL` placeholder: the directory lives at this block (in `rr_moved`).
    Moved(u32),
    /// An `RE` directory, listed where its `CL` stands.
    Relocated,
    Refused(ReadError),
}

#[derive(Debug)]
struct Entry {
    name: String,
    kind: Kind,
}

/// The I/O side: reads extents of the image and feeds them to the parsers.
#[derive(Debug)]
struct Reader<'f> {
    file: &'f File,
    path: &'f Path,
    len: u64,
    volume_id: String,
    root: (u32, u32),
    /// `Some(skip)` when the image uses SUSP: bytes to skip at the start of each system use area.
    susp_skip: Option<usize>,
    /// Directory extents read so far: a second visit is a loop.
    visited: HashSet<u32>,
    /// The last block-aligned span read for continuation areas; writers pack the continuation
    /// areas of many records into one block.
    ce_cache: Option<(u64, Vec<u8>)>,
}

impl<'f> Reader<'f> {
    fn open(file: &'f File, path: &'f Path) -> Result<Self, IsoError> {
        let len = file
            .metadata()
            .map_err(|source| IsoError::Input {
                path: path.to_owned(),
                source,
            })?
            .len();
        let mut reader = Self {
            file,
            path,
            len,
            volume_id: String::new(),
            root: (0, 0),
            susp_skip: None,
            visited: HashSet::new(),
            ce_cache: None,
        };
        let mut primary = None;
        for n in DESCRIPTORS_START..DESCRIPTORS_START + MAX_DESCRIPTORS {
            let sector = reader.read(n * BLOCK, BLOCK, "(volume descriptors)")?;
            let parsed =
                parse_descriptor(&sector).map_err(|e| reader.err("(volume descriptors)", e))?;
            match parsed {
                Descriptor::Primary(p) => {
                    primary.get_or_insert(p);
                }
                Descriptor::Terminator => break,
                Descriptor::Other => {}
            }
        }
        let primary = primary
            .ok_or_else(|| reader.err("(volume descriptors)", ReadError::NoPrimaryDescriptor))?;
        reader.check_whole(&primary)?;
        reader.volume_id = primary.volume_id;
        reader.root = (primary.root_location, primary.root_len);

        // SUSP is announced by an `SP` entry at the start of the system use area of the root's
        // `.` record.
        let first = reader.read(u64::from(primary.root_location) * BLOCK, BLOCK, "/")?;
        if let Some(rec) = dir_records(&first).next() {
            let rec = rec.map_err(|e| reader.err("/", e))?;
            reader.susp_skip = sp_skip(rec.system_use);
        }
        Ok(reader)
    }

    /// Refuses an image shorter than its volume, or that has a GPT and lacks its backup header:
    /// a cut copy whose directories and cached files may all lie in the part that is left (the
    /// ESP and the GPT's backup come last) would otherwise pass as whole.
    fn check_whole(&self, primary: &Primary) -> Result<(), IsoError> {
        let volume_end = u64::from(primary.volume_blocks) * BLOCK;
        if self.len < volume_end {
            return Err(self.err(
                "(volume descriptors)",
                ReadError::Truncated {
                    len: self.len,
                    end: volume_end,
                    what: "the volume its primary volume descriptor describes",
                },
            ));
        }
        if self.len < 2 * GPT_SECTOR {
            return Ok(());
        }
        let header = self.read(GPT_SECTOR, GPT_SECTOR, "(GPT)")?;
        let Some(alt) = gpt_backup_lba(&header) else {
            return Ok(());
        };
        let at = alt.saturating_mul(GPT_SECTOR);
        let end = at.saturating_add(GPT_SECTOR);
        if self.len < end {
            return Err(self.err(
                "(GPT)",
                ReadError::Truncated {
                    len: self.len,
                    end,
                    what: "the backup GPT header its primary header points at",
                },
            ));
        }
        let backup = self.read(at, GPT_SECTOR, "(GPT)")?;
        if &backup[..8] != GPT_SIGNATURE {
            return Err(self.err("(GPT)", ReadError::NoBackupGpt(at)));
        }
        Ok(())
    }

    fn err(&self, entry: &str, source: ReadError) -> IsoError {
        IsoError::Image {
            path: self.path.to_owned(),
            entry: entry.to_owned(),
            source,
        }
    }

    fn in_image(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// Checks that `len` bytes at `offset` lie within the image.
    fn check_range(&self, offset: u64, len: u64, entry: &str) -> Result<(), IsoError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            end => Err(self.err(
                entry,
                ReadError::BeyondEnd {
                    start: offset,
                    end: end.unwrap_or(u64::MAX),
                    len: self.len,
                },
            )),
        }
    }

    fn read(&self, offset: u64, len: u64, entry: &str) -> Result<Vec<u8>, IsoError> {
        self.check_range(offset, len, entry)?;
        let size = usize::try_from(len).map_err(|_| {
            self.err(
                entry,
                ReadError::Malformed("an extent is too large for memory"),
            )
        })?;
        let mut buf = vec![0u8; size];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|source| IsoError::Input {
                path: self.path.to_owned(),
                source,
            })?;
        Ok(buf)
    }

    /// The bytes of a continuation area.
    fn continuation(
        &mut self,
        ce: Continuation,
        at: &dyn Fn() -> String,
    ) -> Result<Vec<u8>, IsoError> {
        let start = u64::from(ce.block) * BLOCK + u64::from(ce.offset);
        let len = u64::from(ce.len);
        if !self.in_image(start, len) {
            self.check_range(start, len, &at())?;
        }
        let end = start + len;
        if let Some((span, buf)) = &self.ce_cache
            && start >= *span
            && end <= span + buf.len() as u64
        {
            return Ok(buf[(start - span) as usize..(end - span) as usize].to_vec());
        }
        let span = start - start % BLOCK;
        let span_end = end.next_multiple_of(BLOCK).min(self.len);
        let buf = self.read(span, span_end - span, &at())?;
        let bytes = buf[(start - span) as usize..(end - span) as usize].to_vec();
        self.ce_cache = Some((span, buf));
        Ok(bytes)
    }

    /// The Rock Ridge entries of `rec`, continuation areas followed.
    fn rock_ridge(
        &mut self,
        rec: &Record<'_>,
        at: &dyn Fn() -> String,
    ) -> Result<RockRidge, IsoError> {
        let mut rr = RockRidge::default();
        let Some(skip) = self.susp_skip else {
            return Ok(rr);
        };
        let area = rec.system_use.get(skip..).unwrap_or(&[]);
        let mut next = rr.parse_area(area).map_err(|e| self.err(&at(), e))?;
        let mut hops = 0;
        while let Some(ce) = next {
            hops += 1;
            if hops > MAX_CONTINUATIONS {
                return Err(self.err(
                    &at(),
                    ReadError::Malformed("too many chained continuation areas (a CE loop)"),
                ));
            }
            let area = self.continuation(ce, at)?;
            next = rr.parse_area(&area).map_err(|e| self.err(&at(), e))?;
        }
        Ok(rr)
    }

    /// Reads the directory `dir` (`shown` is its path in the image, for errors) into entries.
    fn read_dir(&mut self, location: u32, len: u32, shown: &str) -> Result<Vec<Entry>, IsoError> {
        if !self.visited.insert(location) {
            return Err(self.err(shown, ReadError::Loop(location)));
        }
        let bytes = self.read(u64::from(location) * BLOCK, u64::from(len), shown)?;
        let groups = group_records(dir_records(&bytes)).map_err(|e| self.err(shown, e))?;
        let dir = shown.trim_end_matches('/');
        let mut entries = Vec::with_capacity(groups.len());
        for group in groups {
            let rec = group.first;
            // Entry paths are only formatted for errors: they would be most of the work.
            let iso_at = || format!("{dir}/{}", String::from_utf8_lossy(rec.ident));
            let rr = self.rock_ridge(&rec, &iso_at)?;
            if rr.name_is_dot {
                return Err(self.err(
                    &iso_at(),
                    ReadError::Malformed("a Rock Ridge name is . or .."),
                ));
            }
            let raw = rr.name.as_deref().unwrap_or_else(|| iso_name(rec.ident));
            let name = check_name(raw).map_err(|e| self.err(&iso_at(), e))?;
            let kind = self.kind(&rec, &rr, group, &|| format!("{dir}/{name}"))?;
            entries.push(Entry { name, kind });
        }
        let mut names: HashSet<&str> = HashSet::with_capacity(entries.len());
        for entry in &entries {
            if !names.insert(&entry.name) {
                return Err(self.err(&format!("{dir}/{}", entry.name), ReadError::Duplicate));
            }
        }
        Ok(entries)
    }

    fn kind(
        &self,
        rec: &Record<'_>,
        rr: &RockRidge,
        group: Group<'_>,
        at: &dyn Fn() -> String,
    ) -> Result<Kind, IsoError> {
        let mode = rr.mode_type.filter(|&m| m != 0);
        let refused = if rr.symlink || mode == Some(S_IFLNK) {
            Some(ReadError::Symlink)
        } else if rr.device {
            Some(ReadError::NotRegular("device"))
        } else if rr.compressed {
            Some(ReadError::NotRegular("zisofs-compressed file"))
        } else if rec.interleaved {
            Some(ReadError::NotRegular("interleaved file"))
        } else if mode.is_some_and(|m| m != S_IFREG && m != S_IFDIR) {
            Some(ReadError::NotRegular(
                "special file (FIFO, socket or device)",
            ))
        } else {
            None
        };
        if let Some(why) = refused {
            return Ok(Kind::Refused(why));
        }
        if let Some(block) = rr.child_link {
            return Ok(Kind::Moved(block));
        }
        if rr.relocated {
            return Ok(Kind::Relocated);
        }
        if rec.is_dir() {
            if rec.xattr_blocks != 0 {
                return Err(self.err(
                    &at(),
                    ReadError::Malformed("a directory has an extended attribute record"),
                ));
            }
            return Ok(Kind::Dir {
                location: rec.location,
                len: rec.data_len,
            });
        }
        if mode == Some(S_IFDIR) {
            return Err(self.err(
                &at(),
                ReadError::Malformed("a file record whose Rock Ridge mode is a directory"),
            ));
        }
        for e in &group.extents {
            if !self.in_image(e.offset, e.len) {
                self.check_range(e.offset, e.len, &at())?;
            }
        }
        Ok(Kind::File {
            size: group.size,
            extents: group.extents,
        })
    }

    /// The length of the directory a `CL` points to, from its `.` record.
    fn moved_dir(&self, block: u32, at: &str) -> Result<(u32, u32), IsoError> {
        let first = self.read(u64::from(block) * BLOCK, BLOCK, at)?;
        let rec = dir_records(&first)
            .next()
            .ok_or_else(|| self.err(at, ReadError::Malformed("a relocated directory is empty")))?
            .map_err(|e| self.err(at, e))?;
        if rec.ident != [0] || !rec.is_dir() || rec.location != block {
            return Err(self.err(
                at,
                ReadError::Malformed("a child link (CL) does not point to a directory"),
            ));
        }
        Ok((block, rec.data_len))
    }

    /// Finds the directory `dir` from the root.
    fn lookup(&mut self, dir: &str) -> Result<Option<(u32, u32, String)>, IsoError> {
        let (mut location, mut len) = self.root;
        let mut shown = String::from("/");
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            let entries = self.read_dir(location, len, &shown)?;
            let Some(entry) = entries.into_iter().find(|e| e.name == part) else {
                return Ok(None);
            };
            shown = format!("{}/{part}", shown.trim_end_matches('/'));
            (location, len) = match entry.kind {
                Kind::Dir { location, len } => (location, len),
                Kind::Moved(block) => self.moved_dir(block, &shown)?,
                Kind::File { .. } | Kind::Relocated => return Ok(None),
                Kind::Refused(why) => return Err(self.err(&shown, why)),
            };
        }
        Ok(Some((location, len, shown)))
    }

    /// Lists everything below the directory found by `lookup`.
    fn walk(
        &mut self,
        (location, len, shown): (u32, u32, String),
    ) -> Result<(Vec<IsoFile>, Vec<String>), IsoError> {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        let base = shown.trim_end_matches('/').to_owned();
        let mut stack = vec![DirRef {
            location,
            len,
            rel: String::new(),
            depth: 0,
        }];
        while let Some(d) = stack.pop() {
            let shown = if d.rel.is_empty() {
                shown_or_root(&base)
            } else {
                format!("{base}/{}", d.rel)
            };
            let entries = self.read_dir(d.location, d.len, &shown)?;
            for entry in entries {
                let rel = if d.rel.is_empty() {
                    entry.name
                } else {
                    format!("{}/{}", d.rel, entry.name)
                };
                let at = || format!("{base}/{rel}");
                let (location, len) = match entry.kind {
                    Kind::File { size, extents } => {
                        files.push(IsoFile {
                            path: rel,
                            size,
                            extents,
                        });
                        continue;
                    }
                    Kind::Relocated => continue,
                    Kind::Refused(why) => return Err(self.err(&at(), why)),
                    Kind::Dir { location, len } => (location, len),
                    Kind::Moved(block) => self.moved_dir(block, &at())?,
                };
                if d.depth + 1 > MAX_DEPTH {
                    return Err(self.err(&at(), ReadError::TooDeep));
                }
                dirs.push(rel.clone());
                stack.push(DirRef {
                    location,
                    len,
                    rel,
                    depth: d.depth + 1,
                });
            }
        }
        Ok((files, dirs))
    }
}

fn shown_or_root(base: &str) -> String {
    if base.is_empty() {
        "/".to_owned()
    } else {
        base.to_owned()
    }
}

#[cfg(test)]
#[path = "read_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IsoSpec;
    use std::path::PathBuf;

    /// A directory record as ECMA-119 lays it out (both-endian fields in full).
    fn rec(location: u32, len: u32, flags: u8, ident: &[u8], su: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; 33];
        r[2..6].copy_from_slice(&location.to_le_bytes());
        r[6..10].copy_from_slice(&location.to_be_bytes());
        r[10..14].copy_from_slice(&len.to_le_bytes());
        r[14..18].copy_from_slice(&len.to_be_bytes());
        r[25] = flags;
        r[28..32].copy_from_slice(&[1, 0, 0, 1]);
        r[32] = ident.len() as u8;
        r.extend_from_slice(ident);
        if ident.len().is_multiple_of(2) {
            r.push(0);
        }
        r.extend_from_slice(su);
        if r.len() % 2 == 1 {
            r.push(0);
        }
        r[0] = r.len() as u8;
        r
    }

    fn susp(sig: &[u8; 2], data: &[u8]) -> Vec<u8> {
        let mut e = vec![sig[0], sig[1], (4 + data.len()) as u8, 1];
        e.extend_from_slice(data);
        e
    }

    fn both32(v: u32) -> Vec<u8> {
        let mut b = v.to_le_bytes().to_vec();
        b.extend_from_slice(&v.to_be_bytes());
        b
    }

    /// A hand-made image: volume descriptors at 16 and 17, then `blocks` written where they say.
    fn synthetic(root: (u32, u32), blocks: &[(u32, Vec<u8>)], total_blocks: u32) -> Vec<u8> {
        let mut img = vec![0u8; total_blocks as usize * BLOCK as usize];
        let pvd = &mut img[16 * 2048..17 * 2048];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[6] = 1;
        pvd[40..72].copy_from_slice(&[b' '; 32]);
        pvd[40..44].copy_from_slice(b"SYNT");
        pvd[128..130].copy_from_slice(&2048u16.to_le_bytes());
        pvd[130..132].copy_from_slice(&2048u16.to_be_bytes());
        pvd[156..190].copy_from_slice(&rec(root.0, root.1, FLAG_DIR, &[0], &[]));
        let term = &mut img[17 * 2048..18 * 2048];
        term[0] = 255;
        term[1..6].copy_from_slice(b"CD001");
        for (block, bytes) in blocks {
            let at = *block as usize * 2048;
            img[at..at + bytes.len()].copy_from_slice(bytes);
        }
        img
    }

    fn dir_extent(location: u32, parent: u32, len: u32, entries: &[Vec<u8>]) -> Vec<u8> {
        let mut d = rec(location, len, FLAG_DIR, &[0], &[]);
        d.extend(rec(parent, 2048, FLAG_DIR, &[1], &[]));
        for e in entries {
            if d.len() % 2048 + e.len() > 2048 {
                d.resize(d.len().next_multiple_of(2048), 0);
            }
            d.extend_from_slice(e);
        }
        d
    }

    fn write_tmp(dir: &Path, name: &str, bytes: &[u8]) -> (File, PathBuf) {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        (File::open(&path).unwrap(), path)
    }

    /// Every extent of every file reads back as the expected content.
    fn check_contents(image: &File, listing: &IsoListing, expected: &[(String, Vec<u8>)]) {
        let got: Vec<&str> = listing.files.iter().map(|f| f.path.as_str()).collect();
        let mut want: Vec<&str> = expected.iter().map(|(p, _)| p.as_str()).collect();
        want.sort_unstable();
        assert_eq!(got, want);
        for (path, data) in expected {
            let file = listing.files.iter().find(|f| &f.path == path).unwrap();
            assert_eq!(file.size, data.len() as u64, "{path}");
            let mut read = Vec::new();
            for e in &file.extents {
                let mut buf = vec![0u8; e.len as usize];
                image.read_exact_at(&mut buf, e.offset).unwrap();
                read.extend(buf);
            }
            assert_eq!(&read, data, "{path}");
        }
    }

    fn content(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|j| (j * 31 + seed * 7) as u8).collect()
    }

    /// Files of awkward sizes, deep directories (relocated by Rock Ridge), long names, and mixed
    /// case, as a host tree.
    fn sample_tree(src: &Path) -> Vec<(String, Vec<u8>)> {
        let deep = "deep/er/and/deeper/than/eight/levels/go/on/and/on";
        let long = format!("{}-long-name", "x".repeat(120));
        std::fs::create_dir_all(src.join(deep)).unwrap();
        std::fs::create_dir_all(src.join("blob")).unwrap();
        let mut expected = Vec::new();
        for (i, len) in [0usize, 1, 2047, 2048, 2049, 300_001]
            .into_iter()
            .enumerate()
        {
            for rel in [
                format!("blob/sha256-{i}"),
                format!("{deep}/File-{i}.Data"),
                format!("blob/{long}-{i}"),
            ] {
                let data = content(len, i + rel.len());
                std::fs::write(src.join(&rel), &data).unwrap();
                expected.push((rel, data));
            }
        }
        expected
    }

    fn sample_dirs() -> Vec<String> {
        let mut dirs = vec!["blob".to_owned()];
        let mut at = String::new();
        for part in "deep/er/and/deeper/than/eight/levels/go/on/and/on".split('/') {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            dirs.push(at.clone());
        }
        dirs.sort();
        dirs
    }

    fn write_spec(spec: &IsoSpec, path: &Path) -> File {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        spec.write(&file, path, &mut |_| {}).unwrap();
        file
    }

    #[test]
    fn lists_an_image_of_our_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let mut expected = sample_tree(&src);
        let mut spec = IsoSpec::new("TEST_VOL", 0).unwrap();
        spec.add_dir_tree("imagecache", &src).unwrap();
        // In-memory files too (another path through the writer).
        for (i, len) in [0usize, 2049, 300_001].into_iter().enumerate() {
            let data = content(len, 100 + i);
            let rel = format!("mem/Mem-{i}");
            spec.add_bytes(&format!("imagecache/{rel}"), data.clone())
                .unwrap();
            expected.push((rel, data));
        }
        spec.add_bytes("outside", b"not listed".to_vec()).unwrap();
        let iso = tmp.path().join("t.iso");
        let image = write_spec(&spec, &iso);
        assert!(is_iso9660(&image).unwrap());

        let listing = list_dir(&image, &iso, "imagecache").unwrap().unwrap();
        assert_eq!(listing.volume_id, "TEST_VOL");
        check_contents(&image, &listing, &expected);
        let mut dirs = sample_dirs();
        dirs.push("mem".to_owned());
        dirs.sort();
        assert_eq!(listing.dirs, dirs);
        for f in &listing.files {
            if f.size == 0 {
                assert!(f.extents.is_empty());
            }
        }

        // The same directory, however it is spelled; a subdirectory; what is not there.
        let again = list_dir(&image, &iso, "/imagecache/").unwrap().unwrap();
        assert_eq!(again, listing);
        let deep = list_dir(
            &image,
            &iso,
            "imagecache/deep/er/and/deeper/than/eight/levels",
        )
        .unwrap()
        .unwrap();
        assert_eq!(deep.dirs, ["go", "go/on", "go/on/and", "go/on/and/on"]);
        assert_eq!(deep.files.len(), 6);
        // Through a relocated directory.
        let moved = list_dir(
            &image,
            &iso,
            "imagecache/deep/er/and/deeper/than/eight/levels/go/on",
        )
        .unwrap()
        .unwrap();
        assert_eq!(moved.dirs, ["and", "and/on"]);
        assert_eq!(moved.files.len(), 6);
        assert!(list_dir(&image, &iso, "nothing").unwrap().is_none());
        assert!(list_dir(&image, &iso, "outside").unwrap().is_none());
        assert!(
            list_dir(&image, &iso, "imagecache/blob/nothing")
                .unwrap()
                .is_none()
        );
        let root = list_dir(&image, &iso, "").unwrap().unwrap();
        // The deep directories were relocated (RRIP); their placeholders in rr_moved are skipped.
        assert!(root.dirs.iter().any(|d| d == "rr_moved"));
        assert!(!root.dirs.iter().any(|d| d.starts_with("rr_moved/")));
        assert!(root.files.iter().any(|f| f.path == "outside"));
        assert_eq!(
            root.files
                .iter()
                .filter(|f| f.path.starts_with("imagecache/"))
                .count(),
            expected.len()
        );
    }

    fn xorriso(src: &Path, iso: &Path, extra: &[&str]) {
        let out = std::process::Command::new("xorriso")
            .args(["-as", "mkisofs", "-R", "-V", "XORRISO_VOL"])
            .args(extra)
            .arg("-o")
            .arg(iso)
            .arg(src)
            .output()
            .expect("xorriso is needed for this test (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn lists_an_image_of_xorriso() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let expected = sample_tree(&src.join("imagecache"));
        std::fs::write(src.join("outside"), b"x").unwrap();
        let iso = tmp.path().join("x.iso");
        xorriso(&src, &iso, &[]);
        let image = File::open(&iso).unwrap();
        assert!(is_iso9660(&image).unwrap());
        let listing = list_dir(&image, &iso, "imagecache").unwrap().unwrap();
        assert_eq!(listing.volume_id, "XORRISO_VOL");
        check_contents(&image, &listing, &expected);
        assert_eq!(listing.dirs, sample_dirs());
    }

    /// genisoimage, with Rock Ridge and, below, without: the ISO 9660 names, as stored.
    #[test]
    fn lists_images_of_genisoimage() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let expected = sample_tree(&src.join("imagecache"));
        let iso = tmp.path().join("g.iso");
        let out = std::process::Command::new("genisoimage")
            .args(["-quiet", "-R", "-V", "GENISO", "-o"])
            .arg(&iso)
            .arg(&src)
            .output()
            .expect("genisoimage is needed for this test");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let image = File::open(&iso).unwrap();
        let listing = list_dir(&image, &iso, "imagecache").unwrap().unwrap();
        assert_eq!(listing.volume_id, "GENISO");
        // genisoimage relocates the deep directories (xorriso, above, does not).
        let root = list_dir(&image, &iso, "").unwrap().unwrap();
        assert!(root.dirs.iter().any(|d| d == "rr_moved"));
        check_contents(&image, &listing, &expected);
        assert_eq!(listing.dirs, sample_dirs());

        let plain = tmp.path().join("plain");
        std::fs::create_dir_all(plain.join("DIR")).unwrap();
        std::fs::write(plain.join("DIR/FILE.TXT"), b"hello").unwrap();
        std::fs::write(plain.join("DIR/NOEXT"), b"").unwrap();
        let out = std::process::Command::new("genisoimage")
            .args(["-quiet", "-o"])
            .arg(&iso)
            .arg(&plain)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let image = File::open(&iso).unwrap();
        let listing = list_dir(&image, &iso, "DIR").unwrap().unwrap();
        let paths: Vec<&str> = listing.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["FILE.TXT", "NOEXT"]);
    }

    #[test]
    fn refuses_symlinks_and_special_files() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("cache/sub")).unwrap();
        std::fs::create_dir_all(src.join("other")).unwrap();
        std::fs::write(src.join("cache/a"), b"a").unwrap();
        std::os::unix::fs::symlink("../a", src.join("cache/sub/link")).unwrap();
        // A symlink outside the listed directory does not matter.
        std::os::unix::fs::symlink("x", src.join("other/link")).unwrap();
        let iso = tmp.path().join("x.iso");
        xorriso(&src, &iso, &[]);
        let image = File::open(&iso).unwrap();
        let err = list_dir(&image, &iso, "cache").unwrap_err();
        match &err {
            IsoError::Image {
                path,
                entry,
                source: ReadError::Symlink,
            } => {
                assert_eq!(path, &iso);
                assert_eq!(entry, "/cache/sub/link");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("/cache/sub/link"), "{err}");
        assert!(list_dir(&image, &iso, "other").is_err());
    }

    /// Sets the primary volume descriptor's volume space size (what a writer that appends
    /// partitions past the volume, as xorriso does, leaves there).
    fn set_volume_blocks(image: &File, blocks: u32) {
        use std::os::unix::fs::FileExt as _;
        image
            .write_all_at(&blocks.to_le_bytes(), 16 * BLOCK + 80)
            .unwrap();
    }

    #[test]
    fn refuses_a_truncated_image() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = IsoSpec::new("TEST", 0).unwrap();
        spec.add_bytes("imagecache/a", vec![1u8; 10]).unwrap();
        spec.add_bytes("imagecache/big", vec![2u8; 300_000])
            .unwrap();
        let iso = tmp.path().join("t.iso");
        let image = write_spec(&spec, &iso);
        let len = image.metadata().unwrap().len();
        let listing = list_dir(&image, &iso, "imagecache").unwrap().unwrap();
        let big = listing.files.iter().find(|f| f.path == "big").unwrap();
        let end = big.extents.last().map(|e| e.offset + e.len).unwrap();

        // Cut anywhere short of the volume's end: the volume descriptor's size says so, even
        // where every file and directory is still whole.
        for cut in [len - BLOCK, end.next_multiple_of(BLOCK), end - 1] {
            image.set_len(cut).unwrap();
            let err = list_dir(&image, &iso, "imagecache").unwrap_err();
            assert!(
                matches!(&err, IsoError::Image { source: ReadError::Truncated { len: l, end: e, .. }, .. } if *l == cut && *e == len),
                "{cut}: {err:?}"
            );
        }
        // A volume size that says less (or nothing): the extents are still checked one by one.
        set_volume_blocks(&image, 0);
        image.set_len(end - 1).unwrap();
        let err = list_dir(&image, &iso, "imagecache").unwrap_err();
        assert!(
            matches!(&err, IsoError::Image { entry, source: ReadError::BeyondEnd { .. }, .. } if entry == "/imagecache/big"),
            "{err:?}"
        );
        // Cut before the directories: refused too, naming a directory.
        image.set_len(16 * BLOCK + 10).unwrap();
        assert!(list_dir(&image, &iso, "imagecache").is_err());
        image.set_len(100).unwrap();
        assert!(!is_iso9660(&image).unwrap());
        assert!(list_dir(&image, &iso, "imagecache").is_err());
    }

    /// A hybrid image's GPT keeps its backup header in the last sector: an image cut anywhere
    /// (even one whose volume descriptor does not cover the appended partitions) loses it.
    #[test]
    fn refuses_a_hybrid_image_without_its_backup_gpt() {
        use std::os::unix::fs::FileExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let esp = tmp.path().join("esp.img");
        std::fs::write(&esp, vec![0u8; 64 * 1024]).unwrap();
        let mut spec = IsoSpec::new("TEST", 0).unwrap();
        spec.add_bytes("imagecache/a", vec![1u8; 10])
            .unwrap()
            .uefi_boot(&esp);
        let iso = tmp.path().join("t.iso");
        let image = write_spec(&spec, &iso);
        let len = image.metadata().unwrap().len();
        let mut lba1 = [0u8; 512];
        image.read_exact_at(&mut lba1, 512).unwrap();
        let alt = gpt_backup_lba(&lba1).expect("a hybrid image has a GPT");
        assert_eq!((alt + 1) * 512, len, "the backup header is the last sector");
        list_dir(&image, &iso, "imagecache").unwrap().unwrap();

        // As if the volume ended before the ESP: only the GPT says where the image ends.
        set_volume_blocks(&image, 20);
        list_dir(&image, &iso, "imagecache").unwrap().unwrap();
        image.set_len(len - 512).unwrap();
        let err = list_dir(&image, &iso, "imagecache").unwrap_err();
        assert!(
            matches!(&err, IsoError::Image { entry, source: ReadError::Truncated { end, .. }, .. } if entry == "(GPT)" && *end == len),
            "{err:?}"
        );
        // Long enough, but the backup header is gone.
        image.set_len(len).unwrap();
        assert!(matches!(
            list_dir(&image, &iso, "imagecache").unwrap_err(),
            IsoError::Image {
                source: ReadError::NoBackupGpt(at),
                ..
            } if at == len - 512
        ));
    }

    #[test]
    fn gpt_headers() {
        let mut h = vec![0u8; 512];
        assert_eq!(gpt_backup_lba(&h), None);
        h[..8].copy_from_slice(b"EFI PART");
        h[32..40].copy_from_slice(&43159u64.to_le_bytes());
        assert_eq!(gpt_backup_lba(&h), Some(43159));
        assert_eq!(gpt_backup_lba(&h[..39]), None);
    }

    #[test]
    fn refuses_a_directory_loop() {
        let tmp = tempfile::tempdir().unwrap();
        // Root at 18 holds SUB (19), whose BACK is the root again.
        let root = dir_extent(18, 18, 2048, &[rec(19, 2048, FLAG_DIR, b"SUB", &[])]);
        let sub = dir_extent(19, 18, 2048, &[rec(18, 2048, FLAG_DIR, b"BACK", &[])]);
        let img = synthetic((18, 2048), &[(18, root), (19, sub)], 20);
        let (image, iso) = write_tmp(tmp.path(), "loop.iso", &img);
        let err = list_dir(&image, &iso, "").unwrap_err();
        assert!(
            matches!(&err, IsoError::Image { entry, source: ReadError::Loop(18), .. } if entry == "/SUB/BACK"),
            "{err:?}"
        );
        // The loop is below the listed directory, whichever it is.
        assert!(list_dir(&image, &iso, "SUB").is_err());
    }

    #[test]
    fn refuses_nesting_deeper_than_the_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let levels = MAX_DEPTH as u32 + 2;
        let blocks: Vec<(u32, Vec<u8>)> = (0..levels)
            .map(|i| {
                let at = 18 + i;
                let child = if i + 1 < levels {
                    vec![rec(at + 1, 2048, FLAG_DIR, b"D", &[])]
                } else {
                    vec![]
                };
                (
                    at,
                    dir_extent(at, at.saturating_sub(1).max(18), 2048, &child),
                )
            })
            .collect();
        let img = synthetic((18, 2048), &blocks, 18 + levels);
        let (image, iso) = write_tmp(tmp.path(), "deep.iso", &img);
        let err = list_dir(&image, &iso, "").unwrap_err();
        assert!(
            matches!(
                &err,
                IsoError::Image {
                    source: ReadError::TooDeep,
                    ..
                }
            ),
            "{err:?}"
        );
        // One level down, it fits.
        let listing = list_dir(&image, &iso, "D").unwrap().unwrap();
        assert_eq!(listing.dirs.len(), MAX_DEPTH);
    }

    /// A multi-extent file (how ISO level 3 stores files of 4 GiB and more), small enough to make
    /// by hand: three records, sizes added up, extents in file order.
    #[test]
    fn lists_a_multi_extent_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = dir_extent(
            18,
            18,
            2048,
            &[
                rec(30, 4096, FLAG_MULTI_EXTENT, b"BIG.;1", &[]),
                rec(20, 2048, FLAG_MULTI_EXTENT, b"BIG.;1", &[]),
                rec(25, 10, 0, b"BIG.;1", &[]),
                rec(0, 0, 0, b"EMPTY.;1", &[]),
                rec(26, 3, FLAG_ASSOCIATED, b"EMPTY.;1", &[]),
            ],
        );
        let mut data = Vec::new();
        let blocks = vec![
            (18, root),
            (30, content(4096, 1)),
            (20, content(2048, 2)),
            (25, content(10, 3)),
        ];
        for (_, b) in &blocks[1..] {
            data.extend_from_slice(b);
        }
        let img = synthetic((18, 2048), &blocks, 32);
        let (image, iso) = write_tmp(tmp.path(), "multi.iso", &img);
        let listing = list_dir(&image, &iso, "/").unwrap().unwrap();
        assert_eq!(listing.volume_id, "SYNT");
        let big = &listing.files[0];
        assert_eq!(big.path, "BIG");
        assert_eq!(
            big.extents,
            [
                Extent {
                    offset: 30 * 2048,
                    len: 4096
                },
                Extent {
                    offset: 20 * 2048,
                    len: 2048
                },
                Extent {
                    offset: 25 * 2048,
                    len: 10
                },
            ]
        );
        check_contents(
            &image,
            &listing,
            &[("BIG".to_owned(), data), ("EMPTY".to_owned(), Vec::new())],
        );
    }

    #[test]
    fn groups_multi_extent_records() {
        let parts = [
            rec(100, 0xffff_f800, FLAG_MULTI_EXTENT, b"F;1", &[]),
            rec(100 + 0x1f_ffff, 4097, 0, b"F;1", &[]),
            rec(7, 1, 0, b"G;1", &[]),
        ];
        let groups = group_records(parts.iter().map(|r| parse_record(r))).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].size, 0xffff_f800 + 4097);
        assert_eq!(groups[0].extents.len(), 2);
        assert_eq!(groups[0].extents[1].offset, (100 + 0x1f_ffff) * 2048);
        assert_eq!(groups[1].size, 1);

        // A part whose name differs, a last part missing, a directory with the flag.
        let bad = [
            rec(1, 1, FLAG_MULTI_EXTENT, b"F;1", &[]),
            rec(2, 1, 0, b"G;1", &[]),
        ];
        assert!(group_records(bad.iter().map(|r| parse_record(r))).is_err());
        let cut = [rec(1, 1, FLAG_MULTI_EXTENT, b"F;1", &[])];
        assert!(group_records(cut.iter().map(|r| parse_record(r))).is_err());
        let dir = [rec(1, 1, FLAG_MULTI_EXTENT | FLAG_DIR, b"D", &[])];
        assert!(group_records(dir.iter().map(|r| parse_record(r))).is_err());
    }

    #[test]
    fn records_skip_to_the_next_sector_after_a_zero_length() {
        let mut extent = Vec::new();
        let mut n = 0;
        while extent.len() + 40 <= 2048 {
            extent.extend(rec(n, 1, 0, format!("F{n:04};1").as_bytes(), &[]));
            n += 1;
        }
        extent.resize(2048, 0);
        extent.extend(rec(999, 1, 0, b"LAST;1", &[]));
        extent.resize(4096, 0);
        let recs: Vec<Record<'_>> = dir_records(&extent).map(Result::unwrap).collect();
        assert_eq!(recs.len(), n as usize + 1);
        assert_eq!(recs.last().unwrap().location, 999);

        // A record that would cross into the next sector is refused.
        let mut bad = Vec::new();
        while bad.len() + 34 <= 2048 {
            bad.extend(rec(1, 1, 0, b"A", &[]));
        }
        bad.extend(rec(1, 1, 0, b"ACROSS;1", &[]));
        bad.resize(4096, 0);
        assert!(dir_records(&bad).any(|r| r.is_err()));
    }

    #[test]
    fn parses_rock_ridge_entries() {
        let mut rr = RockRidge::default();
        let mut area = susp(
            b"PX",
            &[both32(0o100_644), both32(1), both32(0), both32(0)].concat(),
        );
        area.extend(susp(b"NM", b"\x01first-"));
        area.extend(susp(b"CE", &[both32(40), both32(100), both32(64)].concat()));
        area.extend(susp(b"TF", &[0]));
        area.extend([0, 0]);
        let ce = rr.parse_area(&area).unwrap();
        assert_eq!(
            ce,
            Some(Continuation {
                block: 40,
                offset: 100,
                len: 64
            })
        );
        let mut cont = susp(b"NM", b"\x00second");
        cont.extend(susp(b"ST", &[]));
        cont.extend(susp(b"SL", &[0]));
        assert_eq!(rr.parse_area(&cont).unwrap(), None);
        assert_eq!(rr.name.as_deref(), Some(&b"first-second"[..]));
        assert_eq!(rr.mode_type, Some(S_IFREG));
        assert!(!rr.symlink, "entries after ST are not read");

        let mut two = RockRidge::default();
        let names = [susp(b"NM", b"\x00a"), susp(b"NM", b"\x00b")].concat();
        assert!(two.parse_area(&names).is_err());

        let mut links = RockRidge::default();
        let area = [susp(b"CL", &both32(77)), susp(b"SL", &[0, 1, 1, b'x'])].concat();
        links.parse_area(&area).unwrap();
        assert_eq!(links.child_link, Some(77));
        assert!(links.symlink);

        assert!(
            susp_entries(&[b'N', b'M', 200, 1, 0])
                .next()
                .unwrap()
                .is_err()
        );
        assert_eq!(sp_skip(&susp(b"SP", &[0xbe, 0xef, 3])), Some(3));
        assert_eq!(sp_skip(&susp(b"SP", &[0xbe, 0xee, 3])), None);
        assert_eq!(sp_skip(&[]), None);
    }

    #[test]
    fn names() {
        assert_eq!(iso_name(b"FOO.TXT;1"), b"FOO.TXT");
        assert_eq!(iso_name(b"FOO.;1"), b"FOO");
        assert_eq!(iso_name(b"Foo"), b"Foo");
        assert_eq!(check_name(b"sha256-ab").unwrap(), "sha256-ab");
        for bad in [&b"a/b"[..], b"a\0", b".", b"..", b"", b"\xff"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refuses_bad_and_duplicate_names() {
        let tmp = tempfile::tempdir().unwrap();
        let skip_sp = susp(b"SP", &[0xbe, 0xef, 0]);
        let mk = |entries: &[Vec<u8>]| {
            let mut root = rec(18, 2048, FLAG_DIR, &[0], &skip_sp);
            root.extend(rec(18, 2048, FLAG_DIR, &[1], &[]));
            for e in entries {
                root.extend_from_slice(e);
            }
            synthetic((18, 2048), &[(18, root)], 19)
        };
        let cases = [
            (
                vec![rec(0, 0, 0, b"A;1", &susp(b"NM", b"\x00a/b"))],
                "invalid name",
            ),
            (
                vec![
                    rec(0, 0, 0, b"A;1", &susp(b"NM", b"\x00same")),
                    rec(0, 0, 0, b"B;1", &susp(b"NM", b"\x00same")),
                ],
                "twice",
            ),
            (vec![rec(0, 0, 0, b"A;1", &susp(b"NM", b"\x02"))], ". or .."),
            (vec![rec(0, 0, 0, b"A;1", &susp(b"PN", &[0; 16]))], "device"),
        ];
        for (i, (entries, reason)) in cases.into_iter().enumerate() {
            let (image, iso) = write_tmp(tmp.path(), &format!("{i}.iso"), &mk(&entries));
            let err = list_dir(&image, &iso, "").unwrap_err();
            let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
            assert!(chain.contains(reason), "{chain}");
            assert!(chain.contains(&*iso.to_string_lossy()), "{chain}");
        }
        // With SUSP: the Rock Ridge name wins over the ISO 9660 one.
        let (image, iso) = write_tmp(
            tmp.path(),
            "ok.iso",
            &mk(&[rec(0, 0, 0, b"A;1", &susp(b"NM", b"\x00Real-Name"))]),
        );
        let listing = list_dir(&image, &iso, "").unwrap().unwrap();
        assert_eq!(listing.files[0].path, "Real-Name");
    }

    /// Damaged metadata gives an error or a listing, never a panic or a hang: bytes of the
    /// descriptors, directories and continuation areas of a real image, overwritten at random
    /// (a poor man's fuzzer, deterministic).
    #[test]
    fn survives_damaged_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let _ = sample_tree(&src.join("imagecache"));
        let theirs = tmp.path().join("x.iso");
        xorriso(&src, &theirs, &[]);
        let mut spec = IsoSpec::new("TEST", 0).unwrap();
        spec.add_dir_tree("imagecache", &src.join("imagecache"))
            .unwrap();
        let ours = tmp.path().join("t.iso");
        write_spec(&spec, &ours);

        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut outcomes = [0usize; 2];
        for iso in [theirs, ours] {
            let original = std::fs::read(&iso).unwrap();
            // The metadata: everything before the first file's data.
            let listing = list_dir(&File::open(&iso).unwrap(), &iso, "")
                .unwrap()
                .unwrap();
            let meta_end = listing
                .files
                .iter()
                .flat_map(|f| f.extents.iter().map(|e| e.offset))
                .min()
                .unwrap() as usize;
            let damaged = tmp.path().join("damaged.iso");
            for _ in 0..300 {
                let mut bytes = original.clone();
                for _ in 0..1 + rand() % 8 {
                    let at = (16 * 2048 + rand() % (meta_end as u64 - 16 * 2048)) as usize;
                    bytes[at] = rand() as u8;
                }
                std::fs::write(&damaged, &bytes).unwrap();
                let image = File::open(&damaged).unwrap();
                for dir in ["", "imagecache"] {
                    match list_dir(&image, &damaged, dir) {
                        Ok(_) => outcomes[0] += 1,
                        Err(_) => outcomes[1] += 1,
                    }
                }
            }
        }
        // Both outcomes happen: the damage reaches what the reader reads.
        assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    }

    /// An image with `n` tiny files in `imagecache/blob` (file `i` holds `i` in decimal), made
    /// by hand, with Rock Ridge names and every 16th name continued in a continuation area. The
    /// writers are all slow at this: hadris's is quadratic in a directory's size (5 000 entries
    /// take it 20 s to plan and write, 20 000 take 500 s), and xorriso and genisoimage take most
    /// of a minute for 20 000 on a loaded machine.
    pub(super) fn flat_dir_image(dir: &Path, n: usize) -> (File, PathBuf) {
        let sp = susp(b"SP", &[0xbe, 0xef, 0]);
        let mut root = rec(18, 2048, FLAG_DIR, &[0], &sp);
        root.extend(rec(18, 2048, FLAG_DIR, &[1], &[]));
        root.extend(rec(
            19,
            2048,
            FLAG_DIR,
            b"IMAGECACHE",
            &susp(b"NM", b"\0imagecache"),
        ));
        let mut cache = rec(19, 2048, FLAG_DIR, &[0], &[]);
        cache.extend(rec(18, 2048, FLAG_DIR, &[1], &[]));

        // Records of at most 120 bytes: 16 to a sector is a safe count (trailing sectors left
        // empty are skipped). The continuation areas go in one block each 16 records, after the
        // directory; the file data after them.
        let dir_blocks = (n + 2).div_ceil(16) as u32;
        let ce_base = 20 + dir_blocks;
        let ce_blocks = n.div_ceil(16) as u32;
        let data_base = ce_base + ce_blocks;
        cache.extend(rec(
            20,
            dir_blocks * 2048,
            FLAG_DIR,
            b"BLOB",
            &susp(b"NM", b"\0blob"),
        ));
        let mut blob = rec(20, dir_blocks * 2048, FLAG_DIR, &[0], &[]);
        blob.extend(rec(19, 2048, FLAG_DIR, &[1], &[]));
        let mut ces = vec![0u8; ce_blocks as usize * 2048];
        for i in 0..n {
            let name = format!("sha256-{i:064x}");
            let data_len = i.to_string().len() as u32;
            let ident = format!("F{i:07};1");
            let su = if i % 16 == 0 {
                // Split: 20 bytes here, the rest in block `ce_base + i / 16`.
                let mut nm = vec![1];
                nm.extend_from_slice(&name.as_bytes()[..20]);
                let mut su = susp(b"NM", &nm);
                let mut rest = vec![0];
                rest.extend_from_slice(&name.as_bytes()[20..]);
                let area = susp(b"NM", &rest);
                let ce_off = i / 16 * 2048;
                ces[ce_off..ce_off + area.len()].copy_from_slice(&area);
                let block = ce_base + (i / 16) as u32;
                let ce = [both32(block), both32(0), both32(area.len() as u32)].concat();
                su.extend(susp(b"CE", &ce));
                su
            } else {
                let mut nm = vec![0];
                nm.extend_from_slice(name.as_bytes());
                susp(b"NM", &nm)
            };
            let r = rec(data_base + i as u32, data_len, 0, ident.as_bytes(), &su);
            if blob.len() % 2048 + r.len() > 2048 {
                blob.resize(blob.len().next_multiple_of(2048), 0);
            }
            blob.extend(r);
        }
        assert!(blob.len() <= dir_blocks as usize * 2048);
        blob.resize(dir_blocks as usize * 2048, 0);

        let img = synthetic((18, 2048), &[(18, root), (19, cache)], 20);
        let path = dir.join("flat.iso");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all_at(&img, 0).unwrap();
        file.write_all_at(&blob, 20 * 2048).unwrap();
        file.write_all_at(&ces, u64::from(ce_base) * 2048).unwrap();
        for i in 0..n {
            file.write_all_at(
                i.to_string().as_bytes(),
                u64::from(data_base + i as u32) * 2048,
            )
            .unwrap();
        }
        file.set_len(u64::from(data_base + n as u32) * 2048)
            .unwrap();
        (file, path)
    }

    /// One directory of 20 000 entries: the reader must be linear (hadris's reader takes 8.6 s
    /// for 8 000).
    #[test]
    fn lists_a_large_directory_quickly() {
        let n = 20_000;
        let tmp = tempfile::tempdir().unwrap();
        let (image, iso) = flat_dir_image(tmp.path(), n);
        let started = std::time::Instant::now();
        let listing = list_dir(&image, &iso, "imagecache").unwrap().unwrap();
        let took = started.elapsed();
        assert_eq!(listing.files.len(), n);
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        for i in [0, n / 2, n - 1] {
            let path = format!("blob/sha256-{i:064x}");
            let file = &listing.files[listing
                .files
                .binary_search_by(|f| f.path.as_str().cmp(&path))
                .unwrap()];
            let mut buf = vec![0u8; file.size as usize];
            image
                .read_exact_at(&mut buf, file.extents[0].offset)
                .unwrap();
            assert_eq!(buf, i.to_string().as_bytes());
        }
    }
}

/// By hand: `IMAGER_ISO_ENTRIES=100000 IMAGER_ISO_WRITER=hand cargo test -p imager-iso --release
/// read::measure -- --ignored --nocapture` prints how long each step takes for one directory of
/// that many files. The image is written by hadris through `IsoSpec`, or by hand with
/// `IMAGER_ISO_WRITER=hand`; `IMAGER_ISO_IMAGE=x.iso` lists `imagecache` of an existing image.
#[cfg(test)]
mod measure {
    use super::*;
    use crate::IsoSpec;
    use std::path::PathBuf;
    use std::time::Instant;

    #[test]
    #[ignore = "a measurement, run by hand"]
    fn measure_one_large_directory() {
        // A measurement, not a check: `cargo xtask test` runs ignored tests too, and building a
        // large image takes minutes. It runs only when asked for by its variables.
        let Some(n) = std::env::var("IMAGER_ISO_ENTRIES")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        else {
            eprintln!(
                "set IMAGER_ISO_ENTRIES (and IMAGER_ISO_WRITER=hand or IMAGER_ISO_IMAGE) to measure"
            );
            return;
        };
        if let Some(iso) = std::env::var_os("IMAGER_ISO_IMAGE") {
            let iso = PathBuf::from(iso);
            let file = File::open(&iso).unwrap();
            let t = Instant::now();
            let listing = list_dir(&file, &iso, "imagecache").unwrap().unwrap();
            eprintln!("list_dir {:?}: {} files", t.elapsed(), listing.files.len());
            return;
        }
        if std::env::var("IMAGER_ISO_WRITER").as_deref() == Ok("hand") {
            let t = Instant::now();
            let tmp = tempfile::tempdir().unwrap();
            let (file, iso) = super::tests::flat_dir_image(tmp.path(), n);
            eprintln!("{n} entries: image made by hand {:?}", t.elapsed());
            let t = Instant::now();
            let listing = list_dir(&file, &iso, "imagecache").unwrap().unwrap();
            eprintln!("list_dir {:?}", t.elapsed());
            assert_eq!(listing.files.len(), n);
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let mut spec = IsoSpec::new("TEST", 0).unwrap();
        for i in 0..n {
            // Digest-like names, as real caches have: zero-padded counters share their first
            // characters, which makes the writer's short-name de-duplication quadratic.
            let name = {
                use sha2::Digest as _;
                hex::encode(sha2::Sha256::digest(i.to_le_bytes()))
            };
            spec.add_bytes(&format!("imagecache/blob/sha256-{name}"), i.to_string())
                .unwrap();
        }
        eprintln!("{n} entries: add_bytes {:?}", t.elapsed());
        let t = Instant::now();
        let size = spec.planned_size().unwrap();
        eprintln!("plan {:?} ({size} bytes)", t.elapsed());
        let iso = tmp.path().join("big.iso");
        let t = Instant::now();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&iso)
            .unwrap();
        spec.write(&file, &iso, &mut |_| {}).unwrap();
        eprintln!("write {:?}", t.elapsed());
        let t = Instant::now();
        let listing = list_dir(&file, &iso, "imagecache").unwrap().unwrap();
        eprintln!("list_dir {:?}", t.elapsed());
        assert_eq!(listing.files.len(), n);
    }
}
