//! The layout: every block of the file system decided, every metadata byte computed, before
//! anything is written. No I/O.

use mkext4::{FsBuilder, InodeHandle, Meta, ROOT};

use crate::error::Ext4Error;
use crate::size::{self, BLOCK};
use crate::tree::{Op, Tree};

/// What the file system is called and stamped with.
#[derive(Debug, Clone)]
pub struct Options {
    /// The volume label (`IMAGECACHE`): 1 to 16 bytes. The UUID and the directory hash seed are
    /// derived from it ([`uuid_from_label`]).
    pub label: String,
    /// Every time in the file system (superblock, inodes): `SOURCE_DATE_EPOCH` or the caller's
    /// choice, 0 to 2^32 - 1.
    pub unix_time: i64,
    /// The bytes the file system may take (the partition's size). A multiple of 4096 is used
    /// whole unless its last block group would be too small to hold its own metadata; then the
    /// file system ends at the previous group (as mke2fs does), at most a few MiB short.
    pub size: u64,
}

/// The file system's UUID (and directory hash seed) for `label`: upstream's label-derived GUID
/// ([`imager_disk::Guid::from_label`], the scheme of its GPT GUIDs and `mkfs.ext4 -U`), so a label
/// names the same UUID on every build. Bytes in RFC 4122 order, as ext4's superblock keeps them.
pub fn uuid_from_label(label: &str) -> [u8; 16] {
    *imager_disk::Guid::from_label(label).as_bytes()
}

/// One run of a file's bytes in the file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Where the run starts in the file.
    pub file_offset: u64,
    /// Where it starts in the file system (add the partition's offset for the disk).
    pub fs_offset: u64,
    pub len: u64,
}

/// A planned file system: the layout of a [`Tree`] under [`Options`].
#[derive(Debug)]
pub struct Plan {
    pub(crate) layout: mkext4::Layout,
    /// Per file, in the caller's order: its path and handle in the layout.
    pub(crate) files: Vec<(Box<str>, InodeHandle)>,
    pub(crate) size: u64,
    uuid: [u8; 16],
}

impl Plan {
    /// Lays `tree` out. Fails if the options are invalid or the files do not fit in
    /// `options.size` ([`Ext4Error::TooSmall`] says how much they need).
    ///
    /// The result depends only on the paths and sizes in `tree` and on `options`: the same inputs
    /// give the same bytes on every machine (within one version of `mkext4`, which is pinned).
    pub fn new(tree: Tree, options: &Options) -> Result<Self, Ext4Error> {
        check_label(&options.label)?;
        let time =
            u32::try_from(options.unix_time).map_err(|_| Ext4Error::Time(options.unix_time))?;
        let blocks = size::fs_blocks(options.size);
        if blocks > size::MAX_BLOCKS {
            return Err(Ext4Error::Size {
                size: options.size,
                reason: "over 16 TiB, the most ext4 holds without the 64bit feature",
            });
        }
        if !size::fits(&tree, blocks) {
            return Err(Ext4Error::TooSmall {
                size: options.size,
                needed: tree.min_size(),
            });
        }

        let uuid = uuid_from_label(&options.label);
        let (layout, files) = lay_out(tree, blocks, uuid, &options.label, time)?;
        Ok(Self {
            layout,
            files,
            size: blocks * BLOCK,
            uuid,
        })
    }

    /// The bytes the file system takes (at most [`Options::size`]).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file system's UUID (also its directory hash seed).
    pub fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// The number of files.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Where the bytes of file `index` (its position in the list given to [`Tree::new`]) go, in
    /// file order: one piece per extent, each up to 128 MiB, contiguous but for the metadata the
    /// allocation jumps over. Empty for an empty file.
    ///
    /// # Panics
    /// If `index` is not a file of the tree.
    pub fn pieces(&self, index: usize) -> Vec<Piece> {
        let mut file_offset = 0;
        self.layout
            .extents(self.files[index].1)
            .into_iter()
            .map(|(fs_offset, len)| {
                let piece = Piece {
                    file_offset,
                    fs_offset,
                    len,
                };
                file_offset += len;
                piece
            })
            .collect()
    }

    /// The path of file `index`.
    ///
    /// # Panics
    /// If `index` is not a file of the tree.
    pub fn path(&self, index: usize) -> &str {
        &self.files[index].0
    }
}

/// Declares `tree` to mkext4 in a file system of `blocks` blocks and seals it.
#[allow(clippy::type_complexity)]
fn lay_out(
    tree: Tree,
    blocks: u64,
    uuid: [u8; 16],
    label: &str,
    time: u32,
) -> Result<(mkext4::Layout, Vec<(Box<str>, InodeHandle)>), Ext4Error> {
    let mut opts = mkext4::Options::new(blocks * BLOCK, uuid, i64::from(time));
    // mke2fs -E hash_seed=<uuid>: the directory hash seed is the UUID's bytes (mkext4's default,
    // set here so that the image does not depend on that default).
    opts.hash_seed = mkext4::dirhash::seed_from_uuid(&uuid);
    opts.label = Some(label.to_owned());
    let mut builder = FsBuilder::new(opts).map_err(Ext4Error::Layout)?;
    let stamp = (i64::from(time), 0);
    builder
        .set_meta(ROOT, Meta::new(0o755, 0, 0, stamp))
        .map_err(Ext4Error::Layout)?;

    let mut dirs = Vec::with_capacity(tree.dirs.len());
    dirs.push(ROOT);
    let mut files: Vec<Option<(Box<str>, InodeHandle)>> = Vec::new();
    files.resize_with(tree.files, || None);
    for op in tree.ops {
        match op {
            Op::Dir { parent, name } => {
                let handle = builder
                    .mkdir(dirs[parent as usize], &name, Meta::new(0o755, 0, 0, stamp))
                    .map_err(Ext4Error::Layout)?;
                dirs.push(handle);
            }
            Op::File {
                parent,
                path,
                name_at,
                size,
                index,
            } => {
                let handle = builder
                    .file(
                        dirs[parent as usize],
                        &path[name_at..],
                        Meta::new(0o644, 0, 0, stamp),
                        size,
                    )
                    .map_err(Ext4Error::Layout)?;
                files[index] = Some((path, handle));
            }
        }
    }
    let layout = builder.seal().map_err(Ext4Error::Layout)?;
    // Tree::new gives every index in 0..files exactly one Op::File.
    Ok((layout, files.into_iter().flatten().collect()))
}

fn check_label(label: &str) -> Result<(), Ext4Error> {
    let reason = if label.is_empty() {
        "empty"
    } else if label.len() > 16 {
        "longer than 16 bytes"
    } else if label.contains('\0') {
        "holds a NUL byte"
    } else {
        return Ok(());
    };
    Err(Ext4Error::Label {
        label: label.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(size: u64) -> Options {
        Options {
            label: "IMAGECACHE".into(),
            unix_time: 1_700_000_000,
            size,
        }
    }

    #[test]
    fn uuid_is_upstreams_guid_from_label() {
        // Python: sha256(b"\0" * 16 + b"IMAGECACHE"), first 16 bytes, version 8, RFC variant.
        let hex: String = uuid_from_label("IMAGECACHE")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "3b5449bcc21f80098b5118945967f8df");
        assert_ne!(uuid_from_label("IMAGECACHE"), uuid_from_label("IMAGECACH"));
    }

    #[test]
    fn pieces_cover_each_file_in_order() {
        let tree = Tree::new(&[("big", 300 << 20), ("a/small", 10), ("empty", 0)]).unwrap();
        let plan = Plan::new(tree, &options(1 << 30)).unwrap();
        let big = plan.pieces(0);
        assert!(big.len() >= 3, "{big:?}");
        let mut at = 0;
        for p in &big {
            assert_eq!(p.file_offset, at);
            assert_eq!(p.fs_offset % BLOCK, 0);
            assert!(p.len <= 128 << 20);
            at += p.len;
        }
        assert_eq!(at, 300 << 20);
        assert_eq!(plan.pieces(1).len(), 1);
        assert_eq!(plan.pieces(1)[0].len, 10);
        assert!(plan.pieces(2).is_empty());
        assert_eq!(plan.path(1), "a/small");
        // Data lies after the metadata and inside the file system.
        for i in 0..2 {
            for p in plan.pieces(i) {
                assert!(p.fs_offset > 0 && p.fs_offset + p.len <= plan.size());
            }
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let tree = || Tree::new(&[("f", 1)]).unwrap();
        let mut o = options(64 << 20);
        o.label = "A_LABEL_OVER_16_BYTES".into();
        assert!(matches!(
            Plan::new(tree(), &o),
            Err(Ext4Error::Label { .. })
        ));
        o.label = String::new();
        assert!(matches!(
            Plan::new(tree(), &o),
            Err(Ext4Error::Label { .. })
        ));
        let mut o = options(64 << 20);
        o.unix_time = -1;
        assert!(matches!(Plan::new(tree(), &o), Err(Ext4Error::Time(-1))));
        o.unix_time = 1 << 32;
        assert!(matches!(Plan::new(tree(), &o), Err(Ext4Error::Time(_))));
        assert!(matches!(
            Plan::new(tree(), &options(17 << 40)),
            Err(Ext4Error::Size { .. })
        ));
    }

    #[test]
    fn too_small_says_what_is_needed() {
        let tree = || Tree::new(&[("f", 100 << 20)]).unwrap();
        let needed = tree().min_size();
        let err = Plan::new(tree(), &options(needed - BLOCK)).unwrap_err();
        assert!(
            matches!(err, Ext4Error::TooSmall { size, needed: n } if size == needed - BLOCK && n == needed),
            "{err}"
        );
        assert!(Plan::new(tree(), &options(needed)).is_ok());
    }

    #[test]
    fn every_size_near_group_boundaries_lays_out() {
        // The sizes upstream's rule gives (whole MiB) around the ends of groups and flex groups.
        let sizes = (16..48)
            .chain(120..136)
            .chain(2040..2064)
            .chain(4090..4100)
            .chain(6140..6150);
        for mib in sizes {
            let tree = Tree::new(&[("d/f", 5), ("g", 70000)]).unwrap();
            let plan = Plan::new(tree, &options(mib << 20));
            assert!(plan.is_ok(), "{mib} MiB: {:?}", plan.err());
        }
    }

    #[test]
    fn a_size_just_past_a_flex_group_is_used_up_to_it() {
        // 2 GiB + 1 MiB leaves a 256-block 17th group, too small for its inode table.
        let plan = Plan::new(Tree::new(&[("f", 5)]).unwrap(), &options(2049 << 20)).unwrap();
        assert_eq!(plan.size(), 2048 << 20);
        let plan = Plan::new(Tree::new(&[("f", 5)]).unwrap(), &options(2051 << 20)).unwrap();
        assert_eq!(plan.size(), 2051 << 20);
    }

    /// Whether mkext4 lays `files` out in exactly `blocks` blocks (no estimate in the way).
    fn lays_out(files: &[(String, u64)], blocks: u64) -> bool {
        let tree = Tree::new(files).unwrap();
        lay_out(tree, blocks, [1; 16], "T", 0).is_ok()
    }

    #[test]
    fn min_size_is_enough_and_tight() {
        let name = |i: usize| format!("blob/sha256-{i:064x}");
        let cases: Vec<(&str, Vec<(String, u64)>)> = vec![
            ("empty", vec![]),
            ("one byte", vec![("f".into(), 1)]),
            (
                "3000 small files in one directory",
                (0..3000)
                    .map(|i| (name(i), 1 + (i as u64 * 97) % 9000))
                    .collect(),
            ),
            (
                "deep paths",
                (0..200)
                    .map(|i| (format!("m/r{}/a/b/c/d/e/f/g/h/{i}", i % 7), 4096))
                    .collect(),
            ),
            (
                "large files",
                vec![
                    ("a".into(), 300 << 20),
                    ("b".into(), (4 << 30) + 12345),
                    ("c".into(), 1 << 20),
                ],
            ),
            (
                "many tiny files (inode-bound)",
                (0..20000).map(|i| (name(i), 10)).collect(),
            ),
        ];
        for (what, files) in cases {
            let min = Tree::new(&files).unwrap().min_size();
            assert_eq!(min % BLOCK, 0, "{what}");
            let blocks = min / BLOCK;
            assert!(lays_out(&files, blocks), "{what}: {min} is not enough");
            // Not more than 1 % + 1 MiB over what the layout needs.
            let slack = blocks / 100 + 256;
            if blocks > 4096 + slack {
                assert!(
                    !lays_out(&files, blocks - slack),
                    "{what}: {min} is loose: {} blocks less also fit",
                    slack
                );
            }
            // Plan::new takes exactly that size and every larger one.
            for extra in [0, BLOCK, 1 << 20, 3 << 20, 97 << 20] {
                let tree = Tree::new(&files).unwrap();
                assert!(
                    Plan::new(tree, &options(min + extra)).is_ok(),
                    "{what} +{extra}"
                );
            }
        }
    }
}
