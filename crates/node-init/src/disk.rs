//! The node's disk volume for the cache: the `IMAGECACHE` partition, formatted when blank, filled
//! from the medium by upstream's copy rules, then made read-only for serving.
//!
//! Upstream (siderolabs/talos `internal/app/machined/pkg/controllers/cri/image_cache_config.go`)
//! copies the medium's `imagecache/` into the volume's root: directories 0755, regular files only
//! (anything else fails the copy), each file written as `NAME.tmp` and renamed into place, and a
//! file skipped when the destination already exists with the same size. We also `fsync` each file
//! before its rename (upstream does not), so a power cut can leave a `.tmp` behind but never a
//! short file under its final name — the next boot's size check would otherwise take a torn file
//! for a copied one.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::fs::{FallocateFlags, Mode, OFlags};
use rustix::mount::MountFlags;

/// The volume label the formatted file system gets (what `imager metal` and upstream use).
pub const LABEL: &str = "IMAGECACHE";

/// Formats the block device `device` (of `size` bytes) as an empty ext4 labelled [`LABEL`], with
/// our own writer (the `imager-ext4` crate `imager metal` uses): the node carries no mkfs.
///
/// The writer lays down metadata only and relies on everything else reading as zeros (inode
/// tables, bitmaps' tails, the journal), so the device is zeroed first. `fallocate(ZERO_RANGE)` on
/// a block device asks the disk to zero it (virtio's and SCSI's write-zeroes: no data crosses the
/// bus), falling back to the kernel writing zero pages.
pub fn format(device: &str, size: u64) -> Result<u64> {
    let tree = imager_ext4::Tree::new::<&str>(&[]).context("plan an empty ext4")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let options = imager_ext4::Options {
        label: LABEL.to_owned(),
        unix_time: i64::try_from(now.min(u64::from(u32::MAX))).unwrap_or(0),
        size,
    };
    let plan = imager_ext4::Plan::new(tree, &options)
        .with_context(|| format!("plan ext4 for {device} ({size} bytes)"))?;
    let dev = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(device)
        .with_context(|| format!("open {device} to format it"))?;
    rustix::fs::fallocate(
        &dev,
        FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
        0,
        plan.size(),
    )
    .with_context(|| format!("zero {device}"))?;
    plan.write_metadata(&dev, 0)
        .with_context(|| format!("write ext4 on {device}"))?;
    dev.sync_all()
        .with_context(|| format!("sync {device} after formatting"))?;
    Ok(plan.size())
}

/// The size of block device `name` (a `/sys/class/block` name), from sysfs (512-byte units
/// whatever the device's own sector size).
pub fn size_of(name: &str) -> Result<u64> {
    let path = format!("/sys/class/block/{name}/size");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let sectors: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("{path}: not a number: {:?}", text.trim()))?;
    Ok(sectors * 512)
}

/// Mounts ext4 `device` at `target`, read-write.
pub fn mount_rw(device: &str, target: &str) -> Result<()> {
    crate::mount::ensure_dir(target)?;
    rustix::mount::mount(device, target, "ext4", MountFlags::NOATIME, None)
        .with_context(|| format!("mount {device} (ext4) read-write on {target}"))
}

/// Remounts `target` read-only: the kernel writes everything back and marks the file system
/// clean, so a power cut while serving leaves nothing for fsck to repair.
pub fn remount_ro(target: &str) -> Result<()> {
    rustix::mount::mount_remount(target, MountFlags::RDONLY | MountFlags::NOATIME, c"")
        .with_context(|| format!("remount {target} read-only"))
}

/// What [`copy_tree`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyTotals {
    pub copied: u64,
    pub copied_bytes: u64,
    pub skipped: u64,
    pub skipped_bytes: u64,
}

/// One step of the copy, for the console.
pub enum CopyEvent<'a> {
    /// About to copy this file (relative path, size).
    Copying(&'a str, u64),
}

/// Copies the tree at `from` into `to` by upstream's rules (see the module's comment). Walks each
/// directory's entries in byte order, so two runs over the same tree do the same thing.
pub fn copy_tree(
    from: &Path,
    to: &Path,
    each: &mut dyn FnMut(CopyEvent<'_>),
) -> Result<CopyTotals> {
    let mut totals = CopyTotals::default();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = from.join(&rel);
        let mut entries: Vec<(Vec<u8>, fs::DirEntry)> = fs::read_dir(&dir)
            .with_context(|| format!("list {}", dir.display()))?
            .map(|e| {
                e.map(|e| {
                    use std::os::unix::ffi::OsStrExt;
                    (e.file_name().as_bytes().to_vec(), e)
                })
            })
            .collect::<io::Result<_>>()
            .with_context(|| format!("list {}", dir.display()))?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        // Directories are pushed in reverse so they are visited in name order.
        let mut subdirs = Vec::new();
        for (_, entry) in entries {
            let rel_path = rel.join(entry.file_name());
            let src = entry.path();
            let meta =
                fs::symlink_metadata(&src).with_context(|| format!("stat {}", src.display()))?;
            let dst = to.join(&rel_path);
            if meta.is_dir() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&dst)
                    .with_context(|| format!("mkdir {}", dst.display()))?;
                subdirs.push(rel_path);
            } else if meta.is_file() {
                let size = meta.len();
                if fs::metadata(&dst).is_ok_and(|d| d.len() == size) {
                    totals.skipped += 1;
                    totals.skipped_bytes += size;
                    continue;
                }
                each(CopyEvent::Copying(&rel_path.to_string_lossy(), size));
                copy_file(&src, &dst, size)?;
                totals.copied += 1;
                totals.copied_bytes += size;
            } else {
                bail!(
                    "{}: not a regular file or directory ({:?}); a cache holds only those",
                    src.display(),
                    meta.file_type()
                );
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(totals)
}

/// `src` to `dst` through `dst.tmp`: written by the kernel, synced, renamed.
fn copy_file(src: &Path, dst: &Path, size: u64) -> Result<()> {
    let mut tmp = dst.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let input = File::open(src).with_context(|| format!("open {}", src.display()))?;
    let out = rustix::fs::open(
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .with_context(|| format!("create {}", tmp.display()))?;
    let out = File::from(out);
    imager_copy::copy_range(&input, 0, &out, 0, size)
        .with_context(|| format!("copy {} to {}", src.display(), tmp.display()))?;
    out.sync_all()
        .with_context(|| format!("sync {}", tmp.display()))?;
    drop(out);
    fs::rename(&tmp, dst)
        .with_context(|| format!("rename {} to {}", tmp.display(), dst.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, bytes: &[u8]) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn copies_then_skips_by_size_and_redoes_a_torn_copy() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        write(from.path(), "blob/sha256-aa", &[1u8; 5000]);
        write(from.path(), "manifests/r/x/reference/v1", b"{}");
        write(from.path(), "manifests/r/x/digest/sha256-bb", b"{}");

        let mut seen = Vec::new();
        let t = copy_tree(from.path(), to.path(), &mut |CopyEvent::Copying(p, n)| {
            seen.push((p.to_owned(), n));
        })
        .unwrap();
        assert_eq!((t.copied, t.copied_bytes, t.skipped), (3, 5004, 0));
        assert_eq!(seen[0], ("blob/sha256-aa".to_owned(), 5000));
        assert_eq!(
            fs::read(to.path().join("blob/sha256-aa")).unwrap(),
            [1u8; 5000]
        );

        // Again: everything is there with its size.
        let t = copy_tree(from.path(), to.path(), &mut |_| {}).unwrap();
        assert_eq!((t.copied, t.skipped, t.skipped_bytes), (0, 3, 5004));

        // A torn copy: a leftover .tmp and a short file are both redone; the .tmp stays only as
        // a name nothing reads (it is overwritten on the next copy of that file).
        fs::write(to.path().join("blob/sha256-aa"), [1u8; 10]).unwrap();
        fs::write(to.path().join("blob/sha256-aa.tmp"), [9u8; 3]).unwrap();
        let t = copy_tree(from.path(), to.path(), &mut |_| {}).unwrap();
        assert_eq!((t.copied, t.copied_bytes, t.skipped), (1, 5000, 2));
        assert_eq!(
            fs::read(to.path().join("blob/sha256-aa")).unwrap(),
            [1u8; 5000]
        );
        assert!(!to.path().join("blob/sha256-aa.tmp").exists());
    }

    #[test]
    fn refuses_anything_but_files_and_directories() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        write(from.path(), "blob/sha256-aa", b"x");
        std::os::unix::fs::symlink("sha256-aa", from.path().join("blob/link")).unwrap();
        let err = copy_tree(from.path(), to.path(), &mut |_| {}).unwrap_err();
        assert!(format!("{err:#}").contains("blob/link"), "{err:#}");
    }
}
