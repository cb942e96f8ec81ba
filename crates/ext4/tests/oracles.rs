//! What we write, checked by e2fsprogs (`e2fsck -fn`, `dumpe2fs`, `debugfs`) and by the kernel.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use imager_ext4::{Ext4Error, FileData, HostFiles, Options, Plan, Tree, uuid_from_label};
use sha2::{Digest, Sha256};

const EPOCH: i64 = 1_700_000_000;

fn options(size: u64) -> Options {
    Options {
        label: "IMAGECACHE".into(),
        unix_time: EPOCH,
        size,
    }
}

/// Upstream's partition size: the bytes plus 20 %, rounded up to 1 MiB; at least what fits.
fn partition_size(tree: &Tree) -> u64 {
    (tree.bytes() + tree.bytes() / 5)
        .next_multiple_of(1 << 20)
        .max(tree.min_size().next_multiple_of(1 << 20))
}

fn require_tools() {
    for tool in ["e2fsck", "debugfs", "dumpe2fs"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(found, "{tool} is needed (Debian package e2fsprogs)");
    }
}

/// The device name e2fsprogs opens: the file, or the file from a byte offset.
fn device(image: &Path, at: u64) -> String {
    if at == 0 {
        image.display().to_string()
    } else {
        format!("{}?offset={at}", image.display())
    }
}

/// `e2fsck -fn` exits 0 and says nothing beyond its five passes and the summary.
fn assert_fsck_clean(dev: &str) {
    let out = Command::new("e2fsck").arg("-fn").arg(dev).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "e2fsck -fn {dev}:\n{stdout}{stderr}");
    for line in stdout.lines() {
        let expected = line.starts_with("Pass ")
            || (line.starts_with("IMAGECACHE: ")
                && line.contains(" files (")
                && line.ends_with(" blocks"));
        assert!(expected, "e2fsck -fn {dev} says {line:?}:\n{stdout}");
    }
    for line in stderr.lines() {
        assert!(line.starts_with("e2fsck "), "e2fsck -fn {dev}: {line:?}");
    }
}

/// Runs one debugfs request; its stdout. debugfs reports errors on stderr with exit 0, so any
/// stderr line other than its banner fails.
fn debugfs(dev: &str, request: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(dev)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.lines().all(|l| l.starts_with("debugfs ")),
        "debugfs -R {request:?} {dev}: {stderr}"
    );
    out.stdout
}

fn dumpe2fs(dev: &str) -> BTreeMap<String, String> {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(dev)
        .output()
        .unwrap();
    assert!(out.status.success(), "dumpe2fs -h {dev}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn uuid_text(uuid: [u8; 16]) -> String {
    let h: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Bytes of the disk image that the disk holds (it is sparse where nothing was written).
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// A cache-like tree on the host: `blob/` with `n` files of varied sizes (0, around block sizes,
/// up to 20 KB), deep long-named manifest paths, a file at the root.
fn host_tree(root: &Path, n: usize) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    let mut add = |path: String, len: usize, seed: usize| {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i * 31 + seed * 7 + i / 251) as u8)
            .collect();
        let host = root.join(&path);
        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        std::fs::write(&host, &bytes).unwrap();
        files.push((path, len as u64));
    };
    let sizes = [0, 1, 4095, 4096, 4097, 8192, 12345, 20000];
    for i in 0..n {
        add(
            format!("blob/sha256-{:064x}", i * 2_654_435_761),
            sizes[i % sizes.len()] + i % 7,
            i,
        );
    }
    let deep = "manifests/ghcr.io/canonical/k8s-snap/sig-storage/csi-node-driver-registrar";
    for i in 0..20 {
        add(format!("{deep}/digest/sha256-{i:064x}"), 900 + i, i);
        add(format!("{deep}/reference/v2.{i}.0"), 900 + i, i);
    }
    add(
        "manifests/docker.io/library/alpine/reference/3.20".into(),
        0,
        0,
    );
    add("README".into(), 11, 1);
    files
}

/// Every regular file under `root`, relative path -> bytes.
fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap();
            (
                rel.to_str().unwrap().to_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_cache_tree_passes_the_oracles() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = host_tree(&src, 3000);
    let tree = Tree::new(&files).unwrap();
    let size = partition_size(&tree);
    let plan = Plan::new(tree, &options(size)).unwrap();
    assert_eq!(plan.size(), size);

    // As a partition of a disk image: 1 MiB in, with bytes around it that must stay as they are.
    let at = 1 << 20;
    let image = dir.path().join("disk.raw");
    let out = File::create_new(&image).unwrap();
    out.set_len(at + size + (1 << 20)).unwrap();
    out.write_all_at(b"before", at - 6).unwrap();
    out.write_all_at(b"after", at + size).unwrap();
    let mut data = HostFiles::new(files.iter().map(|(p, _)| src.join(p)).collect());
    plan.write(&out, at, &mut data).unwrap();
    let mut around = [0u8; 6];
    out.read_exact_at(&mut around, at - 6).unwrap();
    assert_eq!(&around, b"before");
    out.read_exact_at(&mut around[..5], at + size).unwrap();
    assert_eq!(&around[..5], b"after");
    drop(out);

    let dev = device(&image, at);
    assert_fsck_clean(&dev);

    let sb = dumpe2fs(&dev);
    assert_eq!(sb["Filesystem volume name"], "IMAGECACHE");
    let uuid = uuid_text(uuid_from_label("IMAGECACHE"));
    assert_eq!(sb["Filesystem UUID"], uuid);
    assert_eq!(sb["Directory Hash Seed"], uuid);
    assert_eq!(sb["Block count"], (size / 4096).to_string());
    assert_eq!(sb["Block size"], "4096");
    assert_eq!(sb["Filesystem state"], "clean");
    assert_eq!(sb["Journal inode"], "8");
    let features: Vec<&str> = sb["Filesystem features"].split_whitespace().collect();
    for f in [
        "has_journal",
        "dir_index",
        "filetype",
        "extent",
        "flex_bg",
        "sparse_super",
        "large_file",
        "huge_file",
        "dir_nlink",
        "extra_isize",
        "metadata_csum",
    ] {
        assert!(features.contains(&f), "{f} missing from {features:?}");
    }

    // Every file, byte for byte, and nothing else (lost+found is empty).
    let back = dir.path().join("back");
    std::fs::create_dir(&back).unwrap();
    debugfs(&dev, &format!("rdump / {}", back.display()));
    let mut got = read_tree(&back);
    assert!(back.join("lost+found").is_dir());
    let want = read_tree(&src);
    assert_eq!(got.len(), files.len());
    for (path, bytes) in &want {
        let read = got.remove(path).unwrap_or_else(|| panic!("{path} missing"));
        assert!(read == *bytes, "{path} differs");
    }

    // blob/ is an htree; names, modes and times as planned.
    let htree = String::from_utf8(debugfs(&dev, "htree /blob")).unwrap();
    assert!(htree.contains("Root node dump"), "{htree}");
    let listing = String::from_utf8(debugfs(&dev, "ls -l /blob")).unwrap();
    assert_eq!(
        listing.lines().filter(|l| l.contains("sha256-")).count(),
        3000
    );
    let stat = String::from_utf8(debugfs(&dev, "stat /README")).unwrap();
    assert!(stat.contains("Mode:  0644"), "{stat}");
    assert!(stat.contains(&format!("mtime: {EPOCH:#010x}")), "{stat}");
    let stat = String::from_utf8(debugfs(&dev, "stat /manifests")).unwrap();
    assert!(stat.contains("Type: directory    Mode:  0755"), "{stat}");

    // Sparse: what the disk holds is the files' blocks and the metadata, not the free space.
    let data_blocks: u64 = files.iter().map(|(_, l)| l.next_multiple_of(4096)).sum();
    assert!(
        allocated(&image) < data_blocks + (4 << 20),
        "{} allocated for {data_blocks} of data in {size}",
        allocated(&image)
    );
}

#[test]
fn identical_inputs_give_identical_images() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = host_tree(&src, 300);
    let build = |files: &[(String, u64)], at: u64, label: &str| {
        let tree = Tree::new(files).unwrap();
        let mut opts = options(64 << 20);
        opts.label = label.into();
        let plan = Plan::new(tree, &opts).unwrap();
        let path = dir.path().join("img");
        let _ = std::fs::remove_file(&path);
        let out = File::create_new(&path).unwrap();
        let mut data = HostFiles::new(files.iter().map(|(p, _)| src.join(p)).collect());
        plan.write(&out, at, &mut data).unwrap();
        let mut bytes = vec![0u8; plan.size() as usize];
        out.read_exact_at(&mut bytes, at).unwrap();
        hex::encode(Sha256::digest(&bytes))
    };
    let first = build(&files, 0, "IMAGECACHE");
    let mut reversed = files.clone();
    reversed.reverse();
    assert_eq!(build(&reversed, 0, "IMAGECACHE"), first);
    // The partition's place in the disk changes nothing inside it.
    assert_eq!(build(&files, 3 << 20, "IMAGECACHE"), first);
    // Another label: another UUID and hash seed.
    assert_ne!(build(&files, 0, "OTHER"), first);
    // Another file size: another image.
    let mut other = files.clone();
    other[1].1 -= 1;
    assert_ne!(build(&other, 0, "IMAGECACHE"), first);
}

/// File data made up as it is copied: a pattern for most files, only short markers for the
/// `sparse` ones (the rest of them stays a hole in the image and reads as zeros).
struct Synthetic {
    sparse: Vec<usize>,
    sizes: Vec<u64>,
}

fn pattern(index: usize, offset: u64) -> u8 {
    let x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64).wrapping_mul(0x2545_F491);
    (x >> 56) as u8
}

/// Where a sparse file gets markers (16 bytes each, apart): 100 bytes into every GiB, across the
/// 4 GiB boundary (where a 32-bit size or block count would wrap; also across a block boundary),
/// and its last 16 bytes.
fn marks(size: u64) -> Vec<u64> {
    let mut marks: Vec<u64> = (100..size - 32).step_by(1 << 30).collect();
    if size > (4 << 30) + 8 {
        marks.push((4 << 30) - 8);
    }
    marks.push(size - 16);
    marks.sort_unstable();
    marks
}

/// The 16 bytes written at `offset`.
fn marker(offset: u64) -> [u8; 16] {
    let mut m = *b"mark:0000000000|";
    m[5..15].copy_from_slice(format!("{:010}", offset % 10_000_000_000).as_bytes());
    m
}

impl FileData for Synthetic {
    fn copy(
        &mut self,
        index: usize,
        file_offset: u64,
        out: &File,
        out_offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let end = file_offset + len;
        if self.sparse.contains(&index) {
            // Each marker byte that falls in this piece.
            for m in marks(self.sizes[index]) {
                for (k, b) in marker(m).iter().enumerate() {
                    let at = m + k as u64;
                    if (file_offset..end).contains(&at) {
                        out.write_all_at(&[*b], out_offset + (at - file_offset))?;
                    }
                }
            }
            return Ok(());
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut at = file_offset;
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(index, at + k as u64);
            }
            out.write_all_at(&buf[..n], out_offset + (at - file_offset))?;
            at += n as u64;
        }
        Ok(())
    }
}

/// The big-file test's files: 4.5 GiB (sparse), 136 MiB (over one 128 MiB extent), a small one.
const SIZES: [u64; 3] = [(9 << 29) + 4097, 136 << 20, 5000];
const NAMES: [&str; 3] = ["blob/huge", "blob/multi-extent", "small"];

/// Reads `len` bytes at `offset` of `path` in the file system: each block's place from
/// `debugfs bmap` (e2fsprogs walking the extent tree), the bytes from the image there.
fn read_via_bmap(dev: &str, image: &File, path: &str, offset: u64, len: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut at = offset;
    while at < offset + len {
        let logical = at / 4096;
        let reply = String::from_utf8(debugfs(dev, &format!("bmap {path} {logical}"))).unwrap();
        let physical: u64 = reply
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bmap: {reply:?}"));
        assert_ne!(physical, 0, "{path}: block {logical} is not mapped");
        let take = (offset + len - at).min(4096 - at % 4096);
        let mut buf = vec![0u8; take as usize];
        image
            .read_exact_at(&mut buf, physical * 4096 + at % 4096)
            .unwrap();
        bytes.extend_from_slice(&buf);
        at += take;
    }
    bytes
}

#[test]
fn a_file_over_4_gib_and_one_of_several_extents_read_back() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(&str, u64)> = NAMES.iter().copied().zip(SIZES).collect();
    let tree = Tree::new(&files).unwrap();
    let size = partition_size(&tree);
    let plan = Plan::new(tree, &options(size)).unwrap();
    assert!(plan.pieces(1).len() >= 2, "{:?}", plan.pieces(1));
    assert!(
        plan.pieces(0).len() > 4,
        "the big file needs an extent tree block"
    );

    let image = dir.path().join("fs.img");
    let out = File::create_new(&image).unwrap();
    let mut data = Synthetic {
        sparse: vec![0],
        sizes: SIZES.to_vec(),
    };
    plan.write(&out, 0, &mut data).unwrap();
    let dev = device(&image, 0);
    assert_fsck_clean(&dev);
    // The image holds the 136 MiB file, the metadata and the markers; the rest is holes.
    assert!(
        allocated(&image) < (200 << 20) + (8 << 20),
        "{}",
        allocated(&image)
    );

    let stat = String::from_utf8(debugfs(&dev, "stat /blob/huge")).unwrap();
    assert!(stat.contains(&format!("Size: {}", SIZES[0])), "{stat}");
    assert!(stat.contains("(ETB0)"), "no extent tree block: {stat}");
    // The big file: each marker where e2fsprogs finds it.
    for m in marks(SIZES[0]) {
        let got = read_via_bmap(&dev, &out, "/blob/huge", m, 16);
        assert_eq!(got, marker(m), "/blob/huge at {m}");
    }
    // The others whole, through debugfs cat.
    for i in 1..3 {
        let got = debugfs(&dev, &format!("cat /{}", NAMES[i]));
        assert_eq!(got.len() as u64, SIZES[i], "{}", NAMES[i]);
        let differs = got
            .iter()
            .enumerate()
            .position(|(k, b)| *b != pattern(i, k as u64));
        assert_eq!(differs, None, "{} differs there", NAMES[i]);
    }
}

#[test]
fn a_missing_source_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::new(&[("blob/a", 10)]).unwrap();
    let plan = Plan::new(tree, &options(32 << 20)).unwrap();
    let out = File::create_new(dir.path().join("img")).unwrap();
    let mut data = HostFiles::new(vec![dir.path().join("nope")]);
    let err = plan.write(&out, 0, &mut data).unwrap_err();
    assert!(
        matches!(&err, Ext4Error::Data { path, .. } if path == "blob/a"),
        "{err}"
    );
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("nope"), "{chain}");
}

/// Why mounting is not possible here, if it is not.
fn cannot_mount() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    let probe = Command::new("mount").arg("--version").output();
    if probe.is_err() {
        return Some("no mount command".into());
    }
    None
}

fn sh(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_kernel_mounts_it_read_write_and_takes_new_files() {
    require_tools();
    if let Some(why) = cannot_mount() {
        eprintln!("skipped: cannot mount ({why})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = host_tree(&src, 1500);
    let tree = Tree::new(&files).unwrap();
    let size = partition_size(&tree) + (64 << 20);
    let plan = Plan::new(tree, &options(size)).unwrap();
    let image = dir.path().join("fs.img");
    let out = File::create_new(&image).unwrap();
    plan.write(
        &out,
        0,
        &mut HostFiles::new(files.iter().map(|(p, _)| src.join(p)).collect()),
    )
    .unwrap();
    drop(out);

    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "ext4", "-o", "loop"])
        .arg(&image)
        .arg(&mnt)
        .output()
        .unwrap();
    if !mounted.status.success() {
        eprintln!(
            "skipped: mount -o loop failed: {}",
            String::from_utf8_lossy(&mounted.stderr).trim()
        );
        return;
    }
    // Unmounted even when an assertion fails, so the temp dir can go.
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let guard = Unmount(mnt.clone());

    // The kernel reads what we wrote (through the htree for blob/).
    for (path, _) in files.iter().step_by(37) {
        assert_eq!(
            std::fs::read(mnt.join(path)).unwrap(),
            std::fs::read(src.join(path)).unwrap(),
            "{path}"
        );
    }
    // A node adds images: many new blobs (splitting full htree leaves), a bigger file, a new
    // directory; and replaces a file as the node's copy does (write NAME.tmp, rename).
    for i in 0..2000 {
        std::fs::write(mnt.join(format!("blob/new-{i:05}")), format!("new {i}")).unwrap();
    }
    std::fs::write(mnt.join("blob/big-new"), vec![7u8; 5 << 20]).unwrap();
    std::fs::create_dir_all(mnt.join("manifests/registry.k8s.io/pause/reference")).unwrap();
    std::fs::write(mnt.join("README.tmp"), b"replaced").unwrap();
    std::fs::rename(mnt.join("README.tmp"), mnt.join("README")).unwrap();
    std::fs::remove_file(mnt.join(&files[5].0)).unwrap();
    sh(&mut Command::new("sync"));
    drop(guard);
    let still = Command::new("findmnt").arg(&mnt).output().unwrap();
    assert!(!still.status.success(), "still mounted");

    let dev = device(&image, 0);
    assert_fsck_clean(&dev);
    assert_eq!(debugfs(&dev, "cat /README"), b"replaced");
    assert_eq!(debugfs(&dev, "cat /blob/new-01999"), b"new 1999");
    let listing = String::from_utf8(debugfs(&dev, "ls /blob")).unwrap();
    assert!(listing.contains("big-new"));
}

#[test]
fn resize2fs_grows_it() {
    // Talos grows its ext4 volumes with e2fsck -f -p, then resize2fs (pkg/makefs/ext4.go).
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = host_tree(&src, 200);
    let tree = Tree::new(&files).unwrap();
    let plan = Plan::new(tree, &options(100 << 20)).unwrap();
    let image = dir.path().join("fs.img");
    let out = File::create_new(&image).unwrap();
    plan.write(
        &out,
        0,
        &mut HostFiles::new(files.iter().map(|(p, _)| src.join(p)).collect()),
    )
    .unwrap();
    out.set_len(3 << 30).unwrap();
    drop(out);
    sh(Command::new("e2fsck").arg("-f").arg("-p").arg(&image));
    sh(Command::new("resize2fs").arg(&image));
    let dev = device(&image, 0);
    assert_fsck_clean(&dev);
    assert_eq!(
        dumpe2fs(&dev)["Block count"],
        ((3u64 << 30) / 4096).to_string()
    );
    assert_eq!(
        debugfs(&dev, "cat /README"),
        std::fs::read(src.join("README")).unwrap()
    );
}
