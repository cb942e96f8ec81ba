//! Reading an ext4 file system in place: its label and every regular file's path, size and the
//! byte ranges its data occupies, so a cache on an `IMAGECACHE` partition is read (verified,
//! served, copied) where it lies, without mounting anything.
//!
//! The reader takes nothing on trust: every count, offset and length read from the volume is
//! checked against the volume's size and the structure that holds it before it is used, directory
//! loops and over-deep trees are refused, and anything outside what a cache needs is refused with
//! the reason rather than guessed at: block-mapped (ext2/3) files, inline data, unwritten extents
//! and holes (the bytes would have to be invented), encryption, and a journal that still needs
//! recovery. Symlinks, devices and non-UTF-8 names are refused too: a cache is plain files.
//!
//! The on-disk format (all little-endian), as far as this reader needs it:
//! - the superblock, 1024 bytes at byte 1024: counts, block size (`1024 << s_log_block_size`),
//!   blocks and inodes per group, feature flags, inode size, the volume name;
//! - group descriptors in the block after the superblock's (32 bytes each, or `s_desc_size` with
//!   the 64bit feature), each giving its group's inode table block;
//! - inodes, `s_inode_size` bytes each: mode, size (lo + hi), flags, and in `i_block` (60 bytes) the
//!   root of the extent tree: a 12-byte header (magic 0xF30A, entries, max, depth) then 12-byte
//!   entries, leaves (`logical block, length, physical block`) at depth 0, index entries pointing
//!   at the next level's blocks above;
//! - directories: their data blocks hold records (`inode, rec_len, name_len, file_type, name`);
//!   hashed (htree) directories keep their index inside records a linear reader skips (inode 0,
//!   or the `..` record's length), so every directory is read linearly.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where the superblock starts, and its size.
const SUPERBLOCK_AT: u64 = 1024;
const SUPERBLOCK_LEN: usize = 1024;
const MAGIC: u16 = 0xEF53;
const ROOT_INODE: u32 = 2;

const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_MMP: u32 = 0x100;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
/// What this reader understands; any other incompatible feature changes how the volume must be
/// read, so it is refused by name.
const INCOMPAT_KNOWN: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR;

const INODE_FLAG_EXTENTS: u32 = 0x8_0000;
const INODE_FLAG_INLINE_DATA: u32 = 0x1000_0000;
const INODE_FLAG_ENCRYPT: u32 = 0x800;

const EXTENT_MAGIC: u16 = 0xF30A;
/// The kernel's limit on extent tree depth.
const MAX_EXTENT_DEPTH: u16 = 5;
/// Extent lengths above this mark an unwritten (preallocated, reads as zeros) extent.
const MAX_INIT_EXTENT_LEN: u16 = 32768;

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const S_IFLNK: u16 = 0o120000;

/// Deeper than any cache tree (`manifests/<registry>/<repo…>/reference/<tag>`), shallow enough
/// that a hostile volume cannot make the walk's stack grow without bound.
const MAX_DIR_DEPTH: usize = 64;

/// What went wrong reading an ext4 volume. `path` is the image the volume is in.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: reading at byte {offset}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an ext2/3/4 file system (no superblock magic)", path = path.display())]
    NotExt4 { path: PathBuf },
    #[error("{path}: unsupported ext4 volume: {what}", path = path.display())]
    Unsupported { path: PathBuf, what: String },
    #[error("{path}: damaged ext4 volume: {what}", path = path.display())]
    Corrupt { path: PathBuf, what: String },
}

/// The superblock fields the reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub inodes_count: u32,
    pub inodes_per_group: u32,
    pub inode_size: u16,
    pub desc_size: u16,
    pub incompat: u32,
    pub label: String,
}

/// Parses a superblock (the 1024 bytes at byte 1024 of the volume). Pure.
pub fn parse_superblock(sb: &[u8]) -> Result<Superblock, String> {
    if sb.len() < SUPERBLOCK_LEN {
        return Err("superblock truncated".into());
    }
    if le16(sb, 0x38) != MAGIC {
        return Err("no superblock magic".into());
    }
    let log = le32(sb, 0x18);
    if log > 6 {
        return Err(format!("block size 1024 << {log} is out of range"));
    }
    let block_size = 1024u64 << log;
    let incompat = le32(sb, 0x60);
    let wide = incompat & INCOMPAT_64BIT != 0;
    let blocks_count = u64::from(le32(sb, 0x04))
        | if wide {
            u64::from(le32(sb, 0x150)) << 32
        } else {
            0
        };
    let rev = le32(sb, 0x4C);
    let inode_size = if rev == 0 { 128 } else { le16(sb, 0x58) };
    if inode_size < 128 || !inode_size.is_power_of_two() || u64::from(inode_size) > block_size {
        return Err(format!("inode size {inode_size}"));
    }
    let desc_size = if wide { le16(sb, 0xFE) } else { 32 };
    if desc_size < 32 || !desc_size.is_power_of_two() || u64::from(desc_size) > block_size {
        return Err(format!("group descriptor size {desc_size}"));
    }
    let inodes_per_group = le32(sb, 0x28);
    if inodes_per_group == 0 {
        return Err("no inodes per group".into());
    }
    let raw = &sb[0x78..0x88];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Ok(Superblock {
        block_size,
        blocks_count,
        first_data_block: u64::from(le32(sb, 0x14)),
        inodes_count: le32(sb, 0x00),
        inodes_per_group,
        inode_size,
        desc_size,
        incompat,
        label: String::from_utf8_lossy(&raw[..end]).into_owned(),
    })
}

/// One regular file of the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    /// Relative to the volume's root, `/`-separated.
    pub path: String,
    pub size: u64,
    /// The file's data as `(offset, len)` byte runs of the image (the volume's base included), in
    /// file order, adjacent runs merged; their lengths add up to `size`.
    pub extents: Vec<(u64, u64)>,
}

/// The volume's label and its regular files, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub label: String,
    pub files: Vec<ListedFile>,
}

/// Lists every regular file of the ext4 volume that occupies `len` bytes at `base` of `file`
/// (`path` names the image in errors). `skip_root` names entries of the root directory to leave
/// out (`lost+found`).
pub fn list_files(
    file: &File,
    path: &Path,
    base: u64,
    len: u64,
    skip_root: &[&str],
) -> Result<Listing, ReadError> {
    let vol = Volume::open(file, path, base, len)?;
    let mut files = Vec::new();
    let mut stack = vec![ROOT_INODE];
    vol.walk_dir(ROOT_INODE, "", skip_root, &mut stack, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Listing {
        label: vol.sb.label.clone(),
        files,
    })
}

/// Whether the bytes at `base` of `file` carry an ext2/3/4 superblock.
pub fn is_ext4(file: &File, base: u64) -> std::io::Result<bool> {
    let mut magic = [0u8; 2];
    match file.read_exact_at(&mut magic, base + SUPERBLOCK_AT + 0x38) {
        Ok(()) => Ok(u16::from_le_bytes(magic) == MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

struct Volume<'a> {
    file: &'a File,
    path: &'a Path,
    base: u64,
    sb: Superblock,
    /// Where the group descriptor table starts, and how many groups there are.
    desc_table_at: u64,
    groups: u64,
}

/// An inode's fields the reader uses.
struct Inode {
    mode: u16,
    size: u64,
    flags: u32,
    block: [u8; 60],
}

impl<'a> Volume<'a> {
    fn open(file: &'a File, path: &'a Path, base: u64, len: u64) -> Result<Self, ReadError> {
        let mut raw = vec![0u8; SUPERBLOCK_LEN];
        let mut vol = Volume {
            file,
            path,
            base,
            sb: Superblock {
                block_size: 1024,
                blocks_count: 0,
                first_data_block: 0,
                inodes_count: 0,
                inodes_per_group: 1,
                inode_size: 128,
                desc_size: 32,
                incompat: 0,
                label: String::new(),
            },
            desc_table_at: 0,
            groups: 0,
        };
        if len < SUPERBLOCK_AT + SUPERBLOCK_LEN as u64 {
            return Err(ReadError::NotExt4 {
                path: path.to_owned(),
            });
        }
        vol.read(SUPERBLOCK_AT, &mut raw)?;
        if le16(&raw, 0x38) != MAGIC {
            return Err(ReadError::NotExt4 {
                path: path.to_owned(),
            });
        }
        vol.sb = parse_superblock(&raw).map_err(|what| vol.corrupt(what))?;
        let sb = &vol.sb;
        let unknown = sb.incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(vol.unsupported(format!(
                "incompatible features {unknown:#x}{}",
                feature_names(unknown)
            )));
        }
        if sb.incompat & INCOMPAT_RECOVER != 0 {
            return Err(vol.unsupported(
                "its journal needs recovery (it was not unmounted cleanly): run e2fsck on it first"
                    .into(),
            ));
        }
        if sb.incompat & INCOMPAT_EXTENTS == 0 {
            return Err(vol.unsupported("no extents feature (an ext2/ext3 volume)".into()));
        }
        if sb
            .blocks_count
            .checked_mul(sb.block_size)
            .is_none_or(|b| b > len)
        {
            return Err(vol.corrupt(format!(
                "{} blocks of {} bytes do not fit in its {len} bytes",
                sb.blocks_count, sb.block_size
            )));
        }
        let blocks_per_group = le32(&raw, 0x20);
        if blocks_per_group == 0 || sb.first_data_block >= sb.blocks_count.max(1) {
            return Err(vol.corrupt("no blocks per group".into()));
        }
        let groups = (sb.blocks_count - sb.first_data_block).div_ceil(u64::from(blocks_per_group));
        if u64::from(sb.inodes_count) > groups * u64::from(sb.inodes_per_group) {
            return Err(vol.corrupt(format!(
                "{} inodes in {groups} groups of {}",
                sb.inodes_count, sb.inodes_per_group
            )));
        }
        // The descriptor table follows the superblock's block. Descriptors are read when an inode
        // of their group is, so a hostile group count costs nothing up front.
        vol.desc_table_at = (sb.first_data_block + 1) * sb.block_size;
        vol.groups = groups;
        if vol.desc_table_at + groups * u64::from(sb.desc_size) > sb.blocks_count * sb.block_size {
            return Err(vol.corrupt(format!(
                "{groups} group descriptors do not fit in the volume"
            )));
        }
        Ok(vol)
    }

    fn corrupt(&self, what: String) -> ReadError {
        ReadError::Corrupt {
            path: self.path.to_owned(),
            what,
        }
    }

    fn unsupported(&self, what: String) -> ReadError {
        ReadError::Unsupported {
            path: self.path.to_owned(),
            what,
        }
    }

    /// Reads `buf.len()` bytes at `offset` of the volume.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let at = self.base + offset;
        self.file
            .read_exact_at(buf, at)
            .map_err(|source| ReadError::Io {
                path: self.path.to_owned(),
                offset: at,
                source,
            })
    }

    /// The first block of group `group`'s inode table, from its descriptor.
    fn inode_table(&self, group: u64) -> Result<u64, ReadError> {
        if group >= self.groups {
            return Err(self.corrupt(format!("group {group} does not exist")));
        }
        let desc_size = u64::from(self.sb.desc_size);
        let mut d = [0u8; 64];
        let d = &mut d[..desc_size.min(64) as usize];
        self.read(self.desc_table_at + group * desc_size, d)?;
        let hi = if d.len() >= 64 {
            u64::from(le32(d, 0x28)) << 32
        } else {
            0
        };
        let at = u64::from(le32(d, 0x08)) | hi;
        if at >= self.sb.blocks_count {
            return Err(self.corrupt(format!("group {group}'s inode table at block {at}")));
        }
        Ok(at)
    }

    fn inode(&self, ino: u32) -> Result<Inode, ReadError> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(self.corrupt(format!("inode number {ino}")));
        }
        let index = u64::from(ino - 1);
        let group = index / u64::from(self.sb.inodes_per_group);
        let slot = index % u64::from(self.sb.inodes_per_group);
        let table = self.inode_table(group)?;
        let inode_size = u64::from(self.sb.inode_size);
        let at = table * self.sb.block_size + slot * inode_size;
        if at + inode_size > self.sb.blocks_count * self.sb.block_size {
            return Err(self.corrupt(format!("inode {ino} lies past the end of the volume")));
        }
        let mut raw = [0u8; 128];
        self.read(at, &mut raw)?;
        let mut block = [0u8; 60];
        block.copy_from_slice(&raw[0x28..0x64]);
        Ok(Inode {
            mode: le16(&raw, 0x00),
            size: u64::from(le32(&raw, 0x04)) | u64::from(le32(&raw, 0x6C)) << 32,
            flags: le32(&raw, 0x20),
            block,
        })
    }

    /// The data of inode `ino` as byte runs of the volume covering exactly `inode.size` bytes.
    fn data_runs(&self, ino: u32, inode: &Inode) -> Result<Vec<(u64, u64)>, ReadError> {
        if inode.flags & INODE_FLAG_ENCRYPT != 0 {
            return Err(self.unsupported(format!("inode {ino} is encrypted")));
        }
        if inode.flags & INODE_FLAG_INLINE_DATA != 0 {
            return Err(self.unsupported(format!("inode {ino} keeps its data inline")));
        }
        if inode.size == 0 {
            return Ok(Vec::new());
        }
        if inode.flags & INODE_FLAG_EXTENTS == 0 {
            return Err(self.unsupported(format!("inode {ino} uses block maps (ext2/ext3)")));
        }
        let bs = self.sb.block_size;
        let needed = inode.size.div_ceil(bs);
        let mut leaves = Vec::new();
        self.extent_node(ino, &inode.block, MAX_EXTENT_DEPTH + 1, &mut leaves)?;
        // Leaves must cover logical blocks 0..needed in order, without holes.
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut next = 0u64;
        for (logical, len, physical) in leaves {
            if next >= needed {
                break;
            }
            if logical != next {
                return Err(self.unsupported(format!(
                    "inode {ino} has a hole at block {next} (sparse files are not read)"
                )));
            }
            let take = len.min(needed - next);
            let offset = physical * bs;
            match runs.last_mut() {
                Some(last) if last.0 + last.1 == offset => last.1 += take * bs,
                _ => runs.push((offset, take * bs)),
            }
            next += take;
        }
        if next < needed {
            return Err(self.corrupt(format!(
                "inode {ino}: its extents cover {next} of its {needed} blocks"
            )));
        }
        // The last block holds only the file's tail.
        let excess = needed * bs - inode.size;
        if let Some(last) = runs.last_mut() {
            last.1 -= excess;
        }
        Ok(runs)
    }

    /// Collects the leaves under one extent tree node (`node`: a header and its entries) as
    /// `(logical block, length, physical block)`, in logical order.
    fn extent_node(
        &self,
        ino: u32,
        node: &[u8],
        depth_left: u16,
        out: &mut Vec<(u64, u64, u64)>,
    ) -> Result<(), ReadError> {
        let bad = |what: &str| self.corrupt(format!("inode {ino}: extent tree: {what}"));
        if node.len() < 12 || le16(node, 0) != EXTENT_MAGIC {
            return Err(bad("no header magic"));
        }
        let entries = usize::from(le16(node, 2));
        let max = usize::from(le16(node, 4));
        let depth = le16(node, 6);
        if entries > max || 12 + max * 12 > node.len() {
            return Err(bad("more entries than the node holds"));
        }
        if depth >= depth_left {
            return Err(bad("too deep"));
        }
        let mut last_logical = None;
        for i in 0..entries {
            let e = &node[12 + i * 12..][..12];
            let logical = u64::from(le32(e, 0));
            if last_logical.is_some_and(|l| logical <= l) {
                return Err(bad("entries out of order"));
            }
            last_logical = Some(logical);
            if depth == 0 {
                let raw_len = le16(e, 4);
                if raw_len > MAX_INIT_EXTENT_LEN {
                    return Err(self.unsupported(format!(
                        "inode {ino} has an unwritten (preallocated) extent at block {logical}"
                    )));
                }
                let len = u64::from(raw_len);
                let physical = u64::from(le16(e, 6)) << 32 | u64::from(le32(e, 8));
                if len == 0
                    || physical < self.sb.first_data_block
                    || physical
                        .checked_add(len)
                        .is_none_or(|end| end > self.sb.blocks_count)
                {
                    return Err(bad(&format!(
                        "extent of {len} blocks at block {physical} is outside the volume"
                    )));
                }
                out.push((logical, len, physical));
            } else {
                let child = u64::from(le16(e, 8)) << 32 | u64::from(le32(e, 4));
                if child >= self.sb.blocks_count || child < self.sb.first_data_block {
                    return Err(bad(&format!("index block {child} is outside the volume")));
                }
                let mut block = vec![0u8; self.sb.block_size as usize];
                self.read(child * self.sb.block_size, &mut block)?;
                if le16(&block, 6) != depth - 1 {
                    return Err(bad("a child's depth does not follow its parent's"));
                }
                self.extent_node(ino, &block, depth, out)?;
            }
        }
        Ok(())
    }

    /// Walks directory `ino` (at `rel`), adding its regular files and descending into its
    /// subdirectories. `stack` holds the directories being walked, to refuse loops.
    fn walk_dir(
        &self,
        ino: u32,
        rel: &str,
        skip: &[&str],
        stack: &mut Vec<u32>,
        files: &mut Vec<ListedFile>,
    ) -> Result<(), ReadError> {
        if stack.len() > MAX_DIR_DEPTH {
            return Err(self.unsupported(format!("{rel}: directories nested too deep")));
        }
        let dir = self.inode(ino)?;
        if dir.mode & S_IFMT != S_IFDIR {
            return Err(self.corrupt(format!("/{rel}: inode {ino} is not a directory")));
        }
        let runs = self.data_runs(ino, &dir)?;
        let bs = self.sb.block_size as usize;
        let mut block = vec![0u8; bs];
        let mut children = Vec::new();
        for (offset, len) in runs {
            if len % bs as u64 != 0 {
                return Err(self.corrupt(format!("/{rel}: directory size not whole blocks")));
            }
            for b in 0..len / bs as u64 {
                self.read(offset + b * bs as u64, &mut block)?;
                parse_dir_block(&block, self.sb.block_size)
                    .map_err(|what| self.corrupt(format!("/{rel}: directory block {b}: {what}")))?
                    .into_iter()
                    .for_each(|e| children.push(e));
            }
        }
        for entry in children {
            if entry.name == b"." || entry.name == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(&entry.name) else {
                return Err(self.unsupported(format!(
                    "/{rel}: a name that is not UTF-8 ({})",
                    String::from_utf8_lossy(&entry.name)
                )));
            };
            if skip.contains(&name) {
                continue;
            }
            let path = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let inode = self.inode(entry.inode)?;
            match inode.mode & S_IFMT {
                S_IFREG => {
                    let extents = self.data_runs(entry.inode, &inode)?;
                    let extents = extents
                        .into_iter()
                        .map(|(offset, len)| (self.base + offset, len))
                        .collect();
                    files.push(ListedFile {
                        path,
                        size: inode.size,
                        extents,
                    });
                }
                S_IFDIR => {
                    if stack.contains(&entry.inode) {
                        return Err(self.corrupt(format!("/{path}: a directory loop")));
                    }
                    stack.push(entry.inode);
                    self.walk_dir(entry.inode, &path, &[], stack, files)?;
                    stack.pop();
                }
                S_IFLNK => {
                    return Err(self.unsupported(format!("/{path}: a symlink in the cache")));
                }
                _ => {
                    return Err(self.unsupported(format!(
                        "/{path}: not a regular file or directory in the cache"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A directory record that names something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub inode: u32,
    pub name: Vec<u8>,
}

/// The records of one directory block, skipping empty ones (inode 0: deleted entries, htree
/// index nodes, the checksum tail). Pure; errors say what is wrong.
pub fn parse_dir_block(block: &[u8], block_size: u64) -> Result<Vec<DirEntry>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < block.len() {
        if block.len() - at < 8 {
            return Err(format!("a record header cut at byte {at}"));
        }
        let inode = le32(block, at);
        let raw_len = le16(block, at + 4);
        // 64 KiB blocks store a whole-block record's length as 0 or 65535.
        let rec_len = if block_size == 65536 && (raw_len == 0 || raw_len == 65535) {
            65536
        } else {
            usize::from(raw_len)
        };
        let name_len = usize::from(block[at + 6]);
        if rec_len < 8 || rec_len % 4 != 0 || at + rec_len > block.len() {
            return Err(format!("record length {rec_len} at byte {at}"));
        }
        if inode != 0 {
            if name_len == 0 || 8 + name_len > rec_len {
                return Err(format!("name length {name_len} at byte {at}"));
            }
            let name = block[at + 8..at + 8 + name_len].to_vec();
            if name.contains(&b'/') || name.contains(&0) {
                return Err(format!("a name with '/' or NUL at byte {at}"));
            }
            out.push(DirEntry { inode, name });
        }
        at += rec_len;
    }
    Ok(out)
}

fn feature_names(bits: u32) -> String {
    let names: Vec<&str> = [
        (INCOMPAT_JOURNAL_DEV, "journal_dev"),
        (INCOMPAT_META_BG, "meta_bg"),
        (0x1000, "dirdata"),
        (0x8000, "inline_data"),
        (0x10000, "encrypt"),
        (0x20000, "casefold"),
    ]
    .iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, name)| *name)
    .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(inode: u32, rec_len: u16, name: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; usize::from(rec_len)];
        r[0..4].copy_from_slice(&inode.to_le_bytes());
        r[4..6].copy_from_slice(&rec_len.to_le_bytes());
        r[6] = name.len() as u8;
        r[7] = 1;
        r[8..8 + name.len()].copy_from_slice(name);
        r
    }

    #[test]
    fn dir_blocks_skip_empty_records_and_refuse_bad_lengths() {
        let mut block = record(12, 16, b"blob");
        block.extend(record(0, 16, b""));
        block.extend(record(13, 32, b"manifests"));
        let parsed = parse_dir_block(&block, 4096).unwrap();
        assert_eq!(
            parsed,
            [
                DirEntry {
                    inode: 12,
                    name: b"blob".to_vec()
                },
                DirEntry {
                    inode: 13,
                    name: b"manifests".to_vec()
                }
            ]
        );
        let mut past_end = block.clone();
        past_end[36..38].copy_from_slice(&36u16.to_le_bytes());
        assert!(parse_dir_block(&past_end, 4096).is_err());
        let mut zero = block.clone();
        zero[4..6].copy_from_slice(&0u16.to_le_bytes());
        assert!(parse_dir_block(&zero, 4096).is_err());
        let mut long_name = block.clone();
        long_name[6] = 200;
        assert!(parse_dir_block(&long_name, 4096).is_err());
        let mut slash = block;
        slash[9] = b'/';
        assert!(parse_dir_block(&slash, 4096).is_err());
    }

    #[test]
    fn superblock_fields_are_checked() {
        let mut sb = vec![0u8; SUPERBLOCK_LEN];
        sb[0x38..0x3A].copy_from_slice(&MAGIC.to_le_bytes());
        sb[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes());
        sb[0x28..0x2C].copy_from_slice(&8192u32.to_le_bytes());
        sb[0x4C..0x50].copy_from_slice(&1u32.to_le_bytes());
        sb[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes());
        sb[0x78..0x82].copy_from_slice(b"IMAGECACHE");
        let parsed = parse_superblock(&sb).unwrap();
        assert_eq!(parsed.block_size, 4096);
        assert_eq!(parsed.inode_size, 256);
        assert_eq!(parsed.label, "IMAGECACHE");
        let mut big_log = sb.clone();
        big_log[0x18..0x1C].copy_from_slice(&30u32.to_le_bytes());
        assert!(parse_superblock(&big_log).is_err());
        let mut odd_inode = sb.clone();
        odd_inode[0x58..0x5A].copy_from_slice(&300u16.to_le_bytes());
        assert!(parse_superblock(&odd_inode).is_err());
        assert!(parse_superblock(&sb[..100]).is_err());
    }
}
