//! ext4 file systems for the metal image's `IMAGECACHE` partition: a list of files in, a file
//! system a Talos node mounts read-write and adds images to, written into a partition of a disk
//! image without the data ever passing through user space.
//!
//! ```text
//! Tree::new([(path, size)])  check, sort by path, imply directories      (pure)
//! Tree::min_size()           the smallest partition that holds it        (pure)
//! Plan::new(tree, options)   every block placed, every metadata byte     (pure)
//! Plan::pieces(i)            where file i's bytes go: (file offset, fs offset, len)
//! Plan::write(out, at, data) metadata with pwrite, file data by `data` (copy_file_range)
//! ```
//!
//! # The layout engine: `mkext4`
//!
//! The layout and every metadata byte come from `mkext4` 0.0.3 (pinned with `=`: its bytes are
//! stable within one version only). It was chosen after checking the candidates the issue named
//! (docs/decisions.md): it writes what `mke2fs -t ext4` writes in the features that matter
//! here, deterministically, and states its on-disk format in its own `DESIGN.md`; our tests
//! check every image it makes for us with e2fsprogs and the kernel. The format, as written:
//!
//! - 4 KiB blocks, 256-byte inodes, 32768 blocks per group; features `has_journal ext_attr
//!   dir_index filetype extent flex_bg sparse_super large_file huge_file dir_nlink extra_isize
//!   metadata_csum` (mke2fs's ext4 defaults without `64bit`, `resize_inode` and `orphan_file`:
//!   without `64bit` a file system stops at 16 TiB, far above a cache; `resize2fs` still grows
//!   one without `resize_inode`, as a node does, tested).
//! - Every metadata block carries its crc32c (superblock, group descriptors, bitmaps, inodes,
//!   extent blocks, directory blocks and htree nodes), seeded from the UUID.
//! - Group metadata packed per 16 groups (flex_bg); superblock backups in groups 1 and the powers
//!   of 3, 5, 7; a journal sized as mke2fs sizes it (an empty jbd2 log: the node mounts with a
//!   journal, so power loss while it adds images costs no fsck).
//! - Files as extents of up to 128 MiB, placed one after the other in path order, contiguous
//!   but for the group metadata the allocation jumps over; four extents in the inode, more in
//!   extent tree blocks (depth 1, or 2 past 1360 extents). Sizes to 16 TiB (`huge_file`).
//! - Directories that outgrow one block become htrees (half-MD4 hash, seed = the UUID), built in
//!   one pass with full leaves: a lookup among thousands of `blob/` entries reads two blocks.
//! - Inode count as mke2fs's default (one per 16 KiB), 5 % of blocks reserved for root,
//!   `lost+found` with 4 blocks.
//!
//! # Deterministic
//! UUID and directory hash seed from the label ([`uuid_from_label`], upstream's scheme for GPT
//! GUIDs, and what `mke2fs -U <uuid> -E hash_seed=<uuid>` does with it); every time from
//! [`Options::unix_time`]; inode numbers and block placement from the sorted paths. Same files,
//! same options: the same bytes.
//!
//! # Reading
//! [`read`] lists a volume's files with the byte runs their data occupies (our writer's, or
//! `mke2fs -d`'s), so the cache on a metal image's `IMAGECACHE` is read in place.
//!
//! # Sparse, flat in memory, linear
//! Only metadata is written; free space, inode tables past the last inode and the journal's body
//! stay holes. Memory holds the metadata (at the peak about 1.4 KiB per file, plus 64 KiB per GiB
//! of file system for the bitmaps), never file data; time is linear in the number of files (sorting
//! aside).

mod error;
mod plan;
pub mod read;
mod size;
mod tree;
mod write;

pub use error::Ext4Error;
pub use plan::{Options, Piece, Plan, uuid_from_label};
pub use tree::Tree;
pub use write::{FileData, HostFiles};

/// The smallest size, in bytes, of a file system that holds `tree` (a multiple of 4096): what
/// [`Plan::new`] needs at least. The caller sizes the partition (upstream: the cache's bytes plus
/// 20 %, rounded up to 1 MiB) and can check it against this.
pub fn min_size(tree: &Tree) -> u64 {
    tree.min_size()
}
