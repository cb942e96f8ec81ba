//! `imager metal` checked by tools nobody here wrote: `sgdisk` reads the partition table,
//! `fsck.fat` the two FAT file systems, `e2fsck`, `dumpe2fs` and `debugfs` the cache's ext4; the
//! same inputs give the same bytes; bad input leaves nothing under the output's name.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;

fn metal(out: &Path, extra: &[&str]) -> Output {
    let assets = common::real_assets();
    let mut args: Vec<&OsStr> = vec![
        "metal".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--image-cache".as_ref(),
        common::demo_cache().into_os_string().leak(),
        "--output".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    common::imager_with_env(args, &[("SOURCE_DATE_EPOCH", "0")])
}

#[test]
fn sgdisk_fsck_fat_e2fsck_and_debugfs_accept_the_image_and_read_the_cache_back() {
    for (tool, package) in [
        ("sgdisk", "gdisk"),
        ("fsck.fat", "dosfstools"),
        ("e2fsck", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
    ] {
        common::require_tool(tool, package);
    }
    let tmp = common::scratch();
    let out = metal(tmp.path(), &["--out-format", "raw"]);
    common::assert_success(&out, "imager metal");
    let disk = tmp.path().join("metal-amd64.raw");
    let (ok, text) = common::run_tool("sgdisk", &[OsStr::new("-v"), disk.as_os_str()]);
    assert!(ok && text.contains("No problems found"), "{text}");

    let parts: Vec<_> = (1..=5)
        .map(|n| common::sgdisk_partition(&disk, n))
        .collect();
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["EFI", "BIOS", "BOOT", "META", "IMAGECACHE"]);
    assert_eq!(parts[0].type_guid, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[1].type_guid, "21686148-6449-6E6F-744E-656564454649");
    assert_eq!(
        parts[1].attributes, "0000000000000004",
        "BIOS: legacy BIOS bootable"
    );
    for p in &parts[2..] {
        assert_eq!(
            p.type_guid, "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            "{}",
            p.name
        );
    }

    for (i, name) in [(0, "efi"), (2, "boot")] {
        let fat = tmp.path().join(format!("{name}.img"));
        common::extract_partition(&disk, &parts[i], &fat);
        let (ok, text) = common::run_tool("fsck.fat", &[OsStr::new("-n"), fat.as_os_str()]);
        assert!(ok, "fsck.fat -n {name}: {text}");
        std::fs::remove_file(&fat).unwrap();
    }

    let ext4 = format!("{}?offset={}", disk.display(), parts[4].first * 512);
    let (ok, text) = common::run_tool("dumpe2fs", &[OsStr::new("-h"), OsStr::new(&ext4)]);
    assert!(ok, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("Filesystem volume name:") && l.ends_with("IMAGECACHE")),
        "{text}"
    );
    let dump = tmp.path().join("dump");
    common::e2fsck_and_rdump(&ext4, &dump);
    let read_back = common::tree_digests(&dump, &["lost+found"]);
    let want = common::tree_digests(&common::demo_cache(), &[]);
    assert_eq!(read_back, want, "debugfs read back something else");
}

/// The allocated extents of a sparse file and their bytes (holes read as zeros; comparing the
/// data regions is comparing the images).
fn data_regions(path: &Path) -> Vec<(u64, Vec<u8>)> {
    use rustix::fs::{SeekFrom, seek};
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let Ok(start) = seek(&f, SeekFrom::Data(at)) else {
            break;
        };
        let end = seek(&f, SeekFrom::Hole(start)).unwrap().min(len);
        let mut buf = vec![0u8; (end - start) as usize];
        f.read_exact_at(&mut buf, start).unwrap();
        out.push((start, buf));
        at = end;
    }
    out
}

#[test]
fn the_same_inputs_give_the_same_image_and_the_zst_holds_it() {
    common::require_tool("zstd", "zstd");
    let tmp = common::scratch();
    let (a, b, z) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("z"),
    );
    for dir in [&a, &b] {
        common::assert_success(&metal(dir, &["--out-format", "raw"]), "imager metal");
    }
    common::assert_success(&metal(&z, &[]), "imager metal (zst)");
    let raw = a.join("metal-amd64.raw");
    let regions = data_regions(&raw);
    assert!(!regions.is_empty());
    assert!(
        regions == data_regions(&b.join("metal-amd64.raw")),
        "two builds differ"
    );
    // The default output is upstream's: zstd of the same bytes.
    let zst = z.join("metal-amd64.raw.zst");
    let out = std::process::Command::new("zstd")
        .args(["-d", "-q", "-o"])
        .arg(tmp.path().join("unpacked.raw"))
        .arg(&zst)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unpacked = tmp.path().join("unpacked.raw");
    assert_eq!(
        std::fs::metadata(&unpacked).unwrap().len(),
        std::fs::metadata(&raw).unwrap().len()
    );
    // zstd -d writes holes for zeros, so its data regions are a subset of ours: compare bytes.
    let unpacked_file = File::open(&unpacked).unwrap();
    for (start, bytes) in &regions {
        let mut got = vec![0u8; bytes.len()];
        unpacked_file.read_exact_at(&mut got, *start).unwrap();
        assert!(&got == bytes, "the .zst differs at byte {start}");
    }
    assert!(
        z.read_dir().unwrap().count() == 1,
        "only the .zst is left in {}",
        z.display()
    );
}

#[test]
fn bad_input_is_named_and_leaves_nothing() {
    let tmp = common::scratch();
    let check = |out: &Output, dir: &PathBuf, needle: &str| {
        assert!(!out.status.success(), "accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{needle:?} not in: {err}");
        let left: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "left behind in {}: {left:?}",
            dir.display()
        );
    };
    let dir = tmp.path().join("small");
    check(&metal(&dir, &["--disk-size", "100M"]), &dir, "--disk-size");
    let dir = tmp.path().join("fmt");
    check(
        &metal(&dir, &["--out-format", "qcow2"]),
        &dir,
        "--out-format",
    );
    let dir = tmp.path().join("arg");
    check(
        &metal(&dir, &["--extra-kernel-arg", "x=$root"]),
        &dir,
        "--extra-kernel-arg",
    );
    // Assets without GRUB: the missing file is named.
    let assets = tmp.path().join("assets");
    std::fs::create_dir(&assets).unwrap();
    for f in imager_boot_test::ASSET_FILES {
        if !f.starts_with("grub/") {
            let to = assets.join(f);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(common::real_assets().join(f), &to).unwrap();
        }
    }
    let dir = tmp.path().join("nogrub");
    let out = common::imager_with_env(
        [
            OsStr::new("metal"),
            OsStr::new("--assets"),
            assets.as_os_str(),
            OsStr::new("--output"),
            dir.as_os_str(),
        ],
        &[],
    );
    check(&out, &dir, "grub/boot.img");
}

#[test]
fn verify_refuses_a_blob_whose_bytes_are_not_its_name() {
    let tmp = common::scratch();
    let cache = tmp.path().join("cache");
    for src in common::files_under(&common::demo_cache()) {
        let rel = src.strip_prefix(common::demo_cache()).unwrap();
        let to = cache.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&src, &to).unwrap();
    }
    let blob = common::files_under(&cache.join("blob"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let assets = common::real_assets();
    let run = |dir: &Path, verify: bool| {
        let mut args: Vec<&OsStr> = vec![
            "metal".as_ref(),
            "--assets".as_ref(),
            assets.as_os_str(),
            "--image-cache".as_ref(),
            cache.as_os_str(),
            "--out-format".as_ref(),
            "raw".as_ref(),
            "--output".as_ref(),
            dir.as_os_str(),
        ];
        if verify {
            args.push("--verify".as_ref());
        }
        common::imager(args)
    };
    // Without --verify the kernel copies the bytes as they are (`cache verify` would say).
    common::assert_success(&run(&tmp.path().join("plain"), false), "imager metal");
    let dir = tmp.path().join("checked");
    let out = run(&dir, true);
    assert!(!out.status.success(), "--verify accepted a corrupt blob");
    let err = String::from_utf8_lossy(&out.stderr);
    let name = blob.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "{name} not named in: {err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "left behind");
}
