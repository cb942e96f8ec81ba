//! How big a file system must be: the geometry `mkext4` lays out for a given block count, and the
//! blocks a tree takes in it. Pure.
//!
//! The formulas mirror what `mkext4` 0.0.3 (pinned) allocates, which in turn mirrors `mke2fs`:
//! per 32768-block group a block bitmap, an inode bitmap and an inode table (one 256-byte inode
//! per 16 KiB of file system, as mke2fs's default `inode_ratio`), packed per 16 groups at the
//! start of the first (flex_bg); a superblock and the group descriptor table in group 0 and, as
//! backups, in groups 1 and the powers of 3, 5 and 7 (sparse_super); a journal sized like mke2fs's
//! (4 MiB to 1 GiB). Everything else is allocated by one cursor that runs up the disk and jumps
//! over that metadata, so nothing is wasted between allocations. The tests check the estimate
//! against the real layout, so a new `mkext4` that allocates differently fails them.

use crate::tree::Tree;

pub(crate) const BLOCK: u64 = 4096;
const BLOCKS_PER_GROUP: u64 = 32768;
/// mke2fs's default bytes per inode.
const INODE_RATIO: u64 = 16384;
const INODES_PER_BLOCK: u64 = BLOCK / 256;
/// The longest extent: 2^15 blocks (128 MiB).
const MAX_EXTENT: u64 = 32768;
/// Extents in a 4 KiB extent tree block (12 bytes each after a 12-byte header, 4-byte tail).
const EXTENTS_PER_BLOCK: u64 = 340;
/// The root of a file's extent tree holds 4 entries in the inode itself.
const IN_INODE_EXTENTS: u64 = 4;
/// `lost+found` gets 4 blocks, as mke2fs makes it (room for entries without allocating, for
/// e2fsck).
const LOST_FOUND_BLOCKS: u64 = 4;
/// Inodes 1 to 10 are reserved, 11 is `lost+found`.
const RESERVED_INODES: u64 = 11;
/// Usable bytes of a directory block: the last 12 hold the checksum tail.
const DIR_BLOCK_USABLE: u64 = BLOCK - 12;
/// An htree root block indexes this many leaves, a second-level node this many.
const HTREE_ROOT_LIMIT: u64 = 507;
const HTREE_NODE_LIMIT: u64 = 510;
/// The largest directory entry: a 255-byte name, padded.
const MAX_REC_LEN: u64 = 264;
/// Block numbers are 32-bit (no `64bit` feature): at most 2^32 - 1 blocks (16 TiB).
pub(crate) const MAX_BLOCKS: u64 = u32::MAX as u64 - 1;
/// The journal may take at most a quarter of the file system; at 4096 blocks (16 MiB) the smallest
/// journal (1024 blocks) fits.
const MIN_BLOCKS: u64 = 4096;

/// The geometry of a file system of `blocks` blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) blocks: u64,
    pub(crate) groups: u64,
    pub(crate) inodes_per_group: u64,
    pub(crate) gdt_blocks: u64,
    pub(crate) journal_blocks: u64,
}

impl Geometry {
    pub(crate) fn new(blocks: u64) -> Self {
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP).max(1);
        let wanted = blocks * BLOCK / INODE_RATIO;
        let inodes_per_group = wanted
            .div_ceil(groups)
            .next_multiple_of(INODES_PER_BLOCK)
            .clamp(INODES_PER_BLOCK, 32768);
        Self {
            blocks,
            groups,
            inodes_per_group,
            gdt_blocks: (groups * 32).div_ceil(BLOCK),
            journal_blocks: journal_blocks(blocks),
        }
    }

    fn itable_blocks(&self) -> u64 {
        self.inodes_per_group / INODES_PER_BLOCK
    }

    pub(crate) fn inodes(&self) -> u64 {
        self.inodes_per_group * self.groups
    }

    /// Blocks that never hold files or directories: superblocks, group descriptors, bitmaps,
    /// inode tables, the journal.
    fn overhead(&self) -> u64 {
        let backups = (1..self.groups).filter(|&g| has_backup(g)).count() as u64;
        (1 + backups) * (1 + self.gdt_blocks)
            + self.groups * (2 + self.itable_blocks())
            + self.journal_blocks
    }
}

/// sparse_super: groups 1 and the powers of 3, 5 and 7 hold a backup superblock and descriptors.
fn has_backup(g: u64) -> bool {
    fn power_of(mut n: u64, base: u64) -> bool {
        while n.is_multiple_of(base) {
            n /= base;
        }
        n == 1
    }
    g == 1 || (g > 1 && (power_of(g, 3) || power_of(g, 5) || power_of(g, 7)))
}

/// mke2fs's journal size for a file system of `blocks` 4 KiB blocks.
fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        0..32768 => 1024,
        32768..262144 => 4096,
        262144..524288 => 8192,
        524288..4194304 => 16384,
        4194304..8388608 => 32768,
        8388608..16777216 => 65536,
        16777216..33554432 => 131072,
        _ => 262144,
    }
}

/// The blocks of a file system made in `size` bytes: whole blocks, less a last group too small to
/// hold its own metadata and 50 blocks (mke2fs drops such a group the same way; `mkext4` cannot
/// place a flex group's metadata there). The rest of `size` is left unused.
pub(crate) fn fs_blocks(size: u64) -> u64 {
    let mut blocks = size / BLOCK;
    loop {
        let geo = Geometry::new(blocks);
        let rem = blocks % BLOCKS_PER_GROUP;
        if geo.groups > 1 && rem != 0 && rem < 3 + geo.itable_blocks() + geo.gdt_blocks + 50 {
            blocks -= rem;
        } else {
            return blocks;
        }
    }
}

/// Blocks of extent tree outside the inode for data in `blocks` blocks. Extents end at 32768
/// blocks and where the allocation jumps over metadata (at most once per group boundary, and
/// every group keeps at least 16384 blocks free of metadata, so at most once per 16384 blocks).
fn extent_tree_blocks(blocks: u64) -> u64 {
    if blocks == 0 {
        return 0;
    }
    let extents = blocks.div_ceil(MAX_EXTENT) + blocks.div_ceil(16384) + 1;
    if extents <= IN_INODE_EXTENTS {
        return 0;
    }
    let leaves = extents.div_ceil(EXTENTS_PER_BLOCK);
    if leaves <= IN_INODE_EXTENTS {
        leaves
    } else {
        leaves + leaves.div_ceil(EXTENTS_PER_BLOCK)
    }
}

/// Blocks of a directory whose entries take `entry_bytes` (`.` and `..` apart): one block while
/// they fit one (a linear directory), else an htree: a root block, leaves packed full (each at
/// least a block less one entry), and index nodes when the root cannot index every leaf.
fn dir_blocks(entry_bytes: u64) -> u64 {
    if entry_bytes < BLOCK - 24 {
        return 1;
    }
    let leaves = entry_bytes.div_ceil(DIR_BLOCK_USABLE - MAX_REC_LEN);
    let nodes = if leaves > HTREE_ROOT_LIMIT {
        leaves.div_ceil(HTREE_NODE_LIMIT)
    } else {
        0
    };
    1 + leaves + nodes
}

/// The blocks `tree` takes besides the geometry's overhead.
fn content_blocks(tree: &Tree, journal_blocks: u64) -> u64 {
    let mut total = LOST_FOUND_BLOCKS + extent_tree_blocks(journal_blocks);
    for (id, dir) in tree.dirs.iter().enumerate() {
        // The root also lists lost+found.
        let extra = if id == 0 { crate::tree::rec_len(10) } else { 0 };
        let blocks = dir_blocks(dir.entry_bytes + extra);
        total += blocks + extent_tree_blocks(blocks);
    }
    for op in &tree.ops {
        if let crate::tree::Op::File { size, .. } = op {
            let blocks = size.div_ceil(BLOCK);
            total += blocks + extent_tree_blocks(blocks);
        }
    }
    total
}

/// The inodes `tree` uses: the reserved ones, one per directory besides the root, one per file.
fn inodes_needed(tree: &Tree) -> u64 {
    RESERVED_INODES + (tree.dirs.len() as u64 - 1) + tree.files as u64
}

/// Whether `tree` fits a file system of exactly `blocks` blocks.
pub(crate) fn fits(tree: &Tree, blocks: u64) -> bool {
    let geo = Geometry::new(blocks);
    (MIN_BLOCKS..=MAX_BLOCKS).contains(&blocks)
        && geo.inodes() >= inodes_needed(tree)
        && geo.overhead() + content_blocks(tree, geo.journal_blocks) <= blocks
}

/// The smallest size, in bytes, whose file system (after [`fs_blocks`]) holds `tree`; past the
/// largest file system, one block more than it (which [`crate::Plan::new`] refuses).
pub(crate) fn min_size(tree: &Tree) -> u64 {
    let inodes = inodes_needed(tree);
    // Start below the answer and grow. What the geometry takes grows with the size, so every
    // size between `blocks` and what `blocks` needs needs at least as much: jumping there skips
    // no answer, and the first size that holds everything is the smallest.
    let mut blocks = MIN_BLOCKS.max(inodes * (INODE_RATIO / BLOCK));
    while blocks <= MAX_BLOCKS {
        let geo = Geometry::new(blocks);
        let need = geo.overhead() + content_blocks(tree, geo.journal_blocks);
        if need > blocks {
            blocks = need;
        } else if geo.inodes() < inodes {
            // Inode tables are whole blocks per group: a few more blocks bring more inodes.
            blocks += (inodes - geo.inodes()) * (INODE_RATIO / BLOCK);
        } else if fs_blocks(blocks * BLOCK) < blocks {
            // The last group would be dropped: grow it to a size that is kept.
            let rem = blocks % BLOCKS_PER_GROUP;
            blocks += 3 + geo.itable_blocks() + geo.gdt_blocks + 50 - rem;
        } else {
            return blocks * BLOCK;
        }
    }
    (MAX_BLOCKS + 1) * BLOCK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_mke2fs() {
        // Values mke2fs 1.47 gives (and mkext4 pins): 512 MiB, 64 GiB.
        let g = Geometry::new(131072);
        assert_eq!((g.groups, g.inodes_per_group), (4, 8192));
        assert_eq!(g.overhead(), 6158);
        let g = Geometry::new(16777216);
        assert_eq!(g.overhead(), 394305);
        // 305000 blocks: 10 groups, 7632 inodes each.
        assert_eq!(Geometry::new(305000).inodes_per_group, 7632);
    }

    #[test]
    fn too_small_last_groups_are_dropped() {
        // 2 GiB + 1 MiB: group 16 would have 256 blocks, less than its inode table.
        assert_eq!(fs_blocks((2048 + 1) << 20), 2048 << 8);
        assert_eq!(fs_blocks((2048 + 3) << 20), (2048 + 3) << 8);
        assert_eq!(fs_blocks(2048 << 20), 2048 << 8);
        // A partial block is not a block.
        assert_eq!(fs_blocks((64 << 20) + 100), 64 << 8);
        // A single group is never dropped.
        assert_eq!(fs_blocks(20 << 20), 20 << 8);
    }

    #[test]
    fn extent_trees_grow_with_the_file() {
        assert_eq!(extent_tree_blocks(0), 0);
        assert_eq!(extent_tree_blocks(1), 0);
        assert_eq!(extent_tree_blocks(32768), 0);
        // Over the 4 extents the inode holds: one leaf.
        assert_eq!(extent_tree_blocks(40000), 1);
        // 4.5 GiB: 1179648 blocks, ~36 extents, one leaf.
        assert_eq!(extent_tree_blocks(1179648), 1);
        // Over 4 leaves (1360 extents) a second level.
        assert_eq!(extent_tree_blocks(20_000_000), 6 + 1);
    }

    #[test]
    fn directories_become_htrees_over_a_block() {
        assert_eq!(dir_blocks(0), 1);
        assert_eq!(dir_blocks(4071), 1);
        assert!(dir_blocks(4072) >= 3);
        // 10000 names of 71 bytes: 80 bytes each, 800000 bytes, ~196 full leaves.
        let blocks = dir_blocks(800_000);
        assert!((197..=215).contains(&blocks), "{blocks}");
    }
}
