//! `imager iso` read back with tools nobody here wrote: xorriso (El Torito, system area, Rock
//! Ridge extraction), isoinfo (volume descriptors), sgdisk (GPT), fsck.fat and mtools (the ESP).
//!
//! These use small stand-in assets (see `common::fake_assets`), so they need the tools but not
//! the boot assets or QEMU; that the medium actually boots is `boot_matrix.rs`'s job.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use imager_boot_test::{ListingDiff, expected_listing};

/// The extra argument every oracle ISO carries.
const EXTRA_ARG: &str = "imager.oracle=yes";
/// GPT type GUID of an EFI system partition, as xorriso prints it (on-disk byte order).
const ESP_TYPE_GUID: &str = "28732ac11ff8d211ba4b00a0c93ec93b";

struct Oracle {
    iso: PathBuf,
    assets: PathBuf,
}

/// One ISO from stand-in assets and the demo cache, shared by the read-only tests below.
fn oracle_iso() -> &'static Oracle {
    static ISO: OnceLock<Oracle> = OnceLock::new();
    ISO.get_or_init(|| {
        // Rebuilt each run in a fixed place: a static is never dropped, so a TempDir would leak.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oracles");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the oracle directory");
        let assets = common::fake_assets(&dir);
        let out = dir.join("out");
        let result = common::imager([
            "iso".as_ref(),
            "--assets".as_ref(),
            assets.as_os_str(),
            "--image-cache".as_ref(),
            common::demo_cache().as_os_str(),
            "--output".as_ref(),
            out.as_os_str(),
            "--extra-kernel-arg".as_ref(),
            OsStr::new(EXTRA_ARG),
        ]);
        common::assert_success(&result, "imager iso");
        Oracle {
            iso: out.join("metal-amd64.iso"),
            assets,
        }
    })
}

/// Builds an ISO from stand-in assets in `dir` with extra `args`; returns the command's output
/// and the output directory.
fn build(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (std::process::Output, PathBuf) {
    let assets = common::fake_assets(dir);
    let out = dir.join("out");
    let mut all: Vec<&OsStr> = vec![
        "iso".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ];
    all.extend(args.iter().map(OsStr::new));
    (common::imager_with_env(all, env), out)
}

fn xorriso_report(iso: &Path) -> String {
    common::require_tool("xorriso", "xorriso");
    let (ok, text) = common::run_tool(
        "xorriso",
        &[
            "-indev".as_ref(),
            iso.as_os_str(),
            "-report_el_torito".as_ref(),
            "plain".as_ref(),
            "-report_system_area".as_ref(),
            "plain".as_ref(),
        ],
    );
    assert!(ok, "xorriso failed:\n{text}");
    text
}

/// The whitespace-separated fields after `<key> :` (or `<key>:`) on every report line with that
/// key.
fn report_rows(report: &str, key: &str) -> Vec<Vec<String>> {
    report
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.split_whitespace().map(str::to_string).collect())
        })
        .collect()
}

fn isoinfo_d(iso: &Path) -> String {
    common::require_tool("isoinfo", "genisoimage");
    let (ok, text) = common::run_tool("isoinfo", &["-d".as_ref(), "-i".as_ref(), iso.as_os_str()]);
    assert!(ok, "isoinfo failed:\n{text}");
    text
}

fn volume_id(iso: &Path) -> String {
    let text = isoinfo_d(iso);
    text.lines()
        .find_map(|l| l.strip_prefix("Volume id: "))
        .unwrap_or_else(|| panic!("no volume id in:\n{text}"))
        .trim()
        .to_string()
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = File::open(path).expect("open the ISO");
    f.seek(SeekFrom::Start(offset)).expect("seek in the ISO");
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).expect("read the ISO");
    buf
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The ESP's (start, size) in 512-byte sectors from xorriso's GPT report.
fn esp_extent(report: &str) -> (u64, u64) {
    let types = report_rows(report, "GPT type GUID");
    let esp: Vec<&String> = types
        .iter()
        .filter(|r| r.get(1).map(String::as_str) == Some(ESP_TYPE_GUID))
        .map(|r| &r[0])
        .collect();
    assert_eq!(
        esp.len(),
        1,
        "expected one EFI system partition in:\n{report}"
    );
    let row = report_rows(report, "GPT start and size")
        .into_iter()
        .find(|r| &r[0] == esp[0])
        .unwrap_or_else(|| panic!("no extent for GPT partition {}:\n{report}", esp[0]));
    (row[1].parse().unwrap(), row[2].parse().unwrap())
}

// ---- El Torito, system area, boot-info table ------------------------------------------------

#[test]
fn el_torito_has_a_bios_and_a_uefi_entry() {
    let report = xorriso_report(&oracle_iso().iso);
    let entries = report_rows(&report, "El Torito boot img");
    // Columns: N, platform, bootable, emulation, load segment, hdpt, load size, LBA.
    assert_eq!(entries.len(), 2, "expected two boot entries:\n{report}");
    assert_eq!(entries[0][1..4], ["BIOS", "y", "none"], "{report}");
    assert_eq!(
        entries[0][6], "4",
        "ISOLINUX is loaded 4 sectors at a time:\n{report}"
    );
    assert_eq!(entries[1][1..4], ["UEFI", "y", "none"], "{report}");
    let paths = report_rows(&report, "El Torito img path");
    assert_eq!(paths[0], ["1", "/isolinux/isolinux.bin"], "{report}");
    let cat = report_rows(&report, "El Torito cat path");
    assert_eq!(cat, [["/isolinux/boot.cat"]], "{report}");

    // The UEFI entry must point at the very bytes the GPT calls the ESP: one ESP serves both
    // the CD (El Torito) and the USB-disk (GPT) boot.
    let (esp_start, _) = esp_extent(&report);
    let uefi_lba: u64 = entries[1][7].parse().unwrap();
    assert_eq!(uefi_lba * 4, esp_start, "{report}");
}

#[test]
fn system_area_is_a_hybrid_mbr_and_gpt() {
    let iso = &oracle_iso().iso;
    let report = xorriso_report(iso);
    let summary = report_rows(&report, "System area summary")
        .concat()
        .join(" ");
    assert!(summary.contains("MBR"), "{summary}");
    assert!(summary.contains("GPT"), "{summary}");

    // Columns: N, status, type, start, blocks (512-byte).
    let mbr = report_rows(&report, "MBR partition");
    let (esp_start, esp_size) = esp_extent(&report);
    assert!(
        mbr.iter().any(|r| r[1] == "0x80"),
        "no bootable MBR partition for BIOS USB boot:\n{report}"
    );
    assert!(
        mbr.iter().any(|r| r[2] == "0xef"
            && r[3] == esp_start.to_string()
            && r[4] == esp_size.to_string()),
        "no MBR 0xef partition matching the GPT ESP {esp_start}+{esp_size}:\n{report}"
    );
    let file_sectors = std::fs::metadata(iso).unwrap().len() / 512;
    assert!(
        esp_start + esp_size <= file_sectors,
        "ESP beyond the end of the file"
    );
}

/// ISOLINUX finds the rest of itself through the boot-info table (bytes 8..64 of isolinux.bin,
/// written by the ISO writer): as a CD the BIOS also tells it, but booted from the hybrid MBR
/// (USB stick) the table is all it has, so every field must be right.
#[test]
fn isolinux_boot_info_table_and_hybrid_mbr_pointer_are_filled_in() {
    let oracle = oracle_iso();
    let report = xorriso_report(&oracle.iso);
    let bios = &report_rows(&report, "El Torito boot img")[0];
    let lba: u64 = bios[7].parse().unwrap();
    let original = std::fs::read(oracle.assets.join("isolinux/isolinux.bin")).unwrap();
    let on_disk = read_at(&oracle.iso, lba * 2048, original.len());

    let csum = original[64..]
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .fold(0u32, u32::wrapping_add);
    assert_eq!(
        u32_le(&on_disk, 8),
        16,
        "bi_pvd: LBA of the primary volume descriptor"
    );
    assert_eq!(
        u32_le(&on_disk, 12) as u64,
        lba,
        "bi_file: LBA of isolinux.bin"
    );
    assert_eq!(u32_le(&on_disk, 16) as usize, original.len(), "bi_length");
    assert_eq!(
        u32_le(&on_disk, 20),
        csum,
        "bi_csum: sum of the dwords from byte 64"
    );
    assert_eq!(
        on_disk[..8],
        original[..8],
        "bytes before the table must be untouched"
    );
    assert_eq!(
        on_disk[64..],
        original[64..],
        "bytes after the table must be untouched"
    );

    // The hybrid MBR: isohdpfx's 432 bytes of code, then the 512-byte-sector address of
    // isolinux.bin that the code loads.
    let mbr = read_at(&oracle.iso, 0, 512);
    let code = std::fs::read(oracle.assets.join("isolinux/isohdpfx.bin")).unwrap();
    assert_eq!(mbr[..432], code[..432]);
    assert_eq!(
        u64::from_le_bytes(mbr[432..440].try_into().unwrap()),
        lba * 4,
        "MBR bytes 432..440 must hold isolinux.bin's LBA in 512-byte sectors"
    );
    assert_eq!(mbr[510..], [0x55, 0xaa]);
}

// ---- volume descriptors, Rock Ridge, the cache tree -----------------------------------------

#[test]
fn isoinfo_sees_the_talos_label_and_rock_ridge() {
    let text = isoinfo_d(&oracle_iso().iso);
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    assert!(lines.contains(&"Volume id: TALOS_V1_9_0"), "{text}");
    assert!(lines.contains(&"Volume set id: Talos-v1.9.0"), "{text}");
    assert!(
        lines.contains(&"Rock Ridge signatures version 1 found"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("El Torito VD version 1 found")),
        "{text}"
    );
}

/// The whole cache read back through xorriso's Rock Ridge reader (which follows the relocated
/// deep directories) is the demo cache, byte for byte.
#[test]
fn the_cache_reads_back_whole_through_rock_ridge() {
    let iso = &oracle_iso().iso;
    common::require_tool("xorriso", "xorriso");
    let dir = common::scratch();
    let dest = dir.path().join("imagecache");
    common::xorriso_extract(iso, "/imagecache", &dest);
    let want = expected_listing(&common::demo_cache()).unwrap();
    let got = expected_listing(&dest).unwrap();
    let diff = ListingDiff::new(&want, &got);
    assert!(diff.is_empty(), "{diff}");
    // The long name at depth ten (from the volume root) must be there under its own name.
    let deep = want
        .keys()
        .find(|p| p.contains("csi-node-driver-registrar/digest/"))
        .expect("the demo cache has the deep manifest");
    assert_eq!(deep.rsplit('/').next().unwrap().len(), 71);
    assert!(dest.join(deep).is_file());
}

#[test]
fn the_isolinux_config_boots_the_kernel_with_the_extra_argument() {
    let iso = &oracle_iso().iso;
    let dir = common::scratch();
    let cfg = dir.path().join("isolinux.cfg");
    common::xorriso_extract(iso, "/isolinux/isolinux.cfg", &cfg);
    let append = common::isolinux_append(&std::fs::read_to_string(&cfg).unwrap());
    assert!(
        append.iter().any(|w| w == "console=ttyS0,115200"),
        "{append:?}"
    );
    assert_eq!(
        append.last().map(String::as_str),
        Some(EXTRA_ARG),
        "{append:?}"
    );
}

// ---- GPT and the ESP --------------------------------------------------------------------------

#[test]
fn sgdisk_finds_no_problems() {
    common::require_tool("sgdisk", "gdisk");
    let iso = &oracle_iso().iso;
    let (ok, text) = common::run_tool("sgdisk", &["-v".as_ref(), iso.as_os_str()]);
    assert!(ok, "{text}");
    assert!(text.contains("No problems found."), "{text}");
    let (ok, text) = common::run_tool("sgdisk", &["-p".as_ref(), iso.as_os_str()]);
    assert!(ok, "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().nth(5) == Some("EF00")),
        "no EF00 partition:\n{text}"
    );
}

#[test]
fn the_esp_is_a_clean_fat_with_systemd_boot_and_the_same_command_line() {
    common::require_tool("fsck.fat", "dosfstools");
    common::require_tool("mtype", "mtools");
    let oracle = oracle_iso();
    let report = xorriso_report(&oracle.iso);
    let (start, size) = esp_extent(&report);
    let dir = common::scratch();
    let esp = dir.path().join("esp.img");
    std::fs::write(
        &esp,
        read_at(&oracle.iso, start * 512, (size * 512) as usize),
    )
    .unwrap();

    let (ok, text) = common::run_tool("fsck.fat", &["-n".as_ref(), esp.as_os_str()]);
    assert!(ok, "fsck.fat -n reports problems:\n{text}");

    let esp_file = |path: &str| -> PathBuf {
        let dest = dir
            .path()
            .join(path.trim_start_matches("::/").replace('/', "_"));
        let (ok, text) = common::run_tool(
            "mcopy",
            &[
                "-n".as_ref(),
                "-i".as_ref(),
                esp.as_os_str(),
                path.as_ref(),
                dest.as_os_str(),
            ],
        );
        assert!(ok, "mcopy {path}:\n{text}");
        dest
    };
    let boot = esp_file("::/EFI/BOOT/BOOTX64.EFI");
    assert_eq!(
        common::sha256_file(&boot),
        common::sha256_file(&oracle.assets.join("efi/systemd-bootx64.efi")),
        "BOOTX64.EFI is not the systemd-boot that was given"
    );

    let entries_dir = "::/loader/entries";
    let (ok, listing) = common::run_tool(
        "mdir",
        &[
            "-b".as_ref(),
            "-i".as_ref(),
            esp.as_os_str(),
            entries_dir.as_ref(),
        ],
    );
    assert!(ok, "{listing}");
    let entries: Vec<&str> = listing.lines().filter(|l| l.ends_with(".conf")).collect();
    assert_eq!(entries.len(), 1, "expected one loader entry:\n{listing}");
    let entry = std::fs::read_to_string(esp_file(entries[0])).unwrap();
    let field = |key: &str| -> Vec<String> {
        entry
            .lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map(|rest| rest.trim().to_string())
            .collect()
    };

    // UEFI boots the same kernel and initramfs with the same command line as BIOS.
    let options: Vec<String> = field("options")
        .iter()
        .flat_map(|o| common::without_loader_words(o))
        .collect();
    let cfg = dir.path().join("isolinux.cfg");
    common::xorriso_extract(&oracle.iso, "/isolinux/isolinux.cfg", &cfg);
    let append = common::isolinux_append(&std::fs::read_to_string(&cfg).unwrap());
    assert_eq!(
        options,
        common::without_loader_words(&append.join(" ")),
        "{entry}"
    );

    let linux = field("linux");
    let initrd = field("initrd");
    assert_eq!((linux.len(), initrd.len()), (1, 1), "{entry}");
    for (path, asset) in [(&linux[0], "vmlinuz"), (&initrd[0], "initramfs.xz")] {
        let copy = esp_file(&format!("::{}", path.replace('\\', "/")));
        assert_eq!(
            common::sha256_file(&copy),
            common::sha256_file(&oracle.assets.join(asset)),
            "{path} in the ESP is not the {asset} that was given"
        );
    }
}

// ---- labels -----------------------------------------------------------------------------------

#[test]
fn label_override_names_the_volume() {
    let dir = common::scratch();
    let (out, outdir) = build(dir.path(), &["--label", "TALOS_CUSTOM_1"], &[]);
    common::assert_success(&out, "imager iso --label TALOS_CUSTOM_1");
    assert_eq!(volume_id(&outdir.join("metal-amd64.iso")), "TALOS_CUSTOM_1");
}

#[test]
fn label_follows_the_upstream_rule_for_a_prerelease_version() {
    let dir = common::scratch();
    let (out, outdir) = build(dir.path(), &["--version", "v1.7.6-beta.0"], &[]);
    common::assert_success(&out, "imager iso --version v1.7.6-beta.0");
    let iso = outdir.join("metal-amd64.iso");
    assert_eq!(volume_id(&iso), "TALOS_V1_7_6_BETA_0");
    assert!(
        isoinfo_d(&iso)
            .lines()
            .any(|l| l.trim_end() == "Volume set id: Talos-v1.7.6-beta.0")
    );
}

#[test]
fn invalid_labels_are_refused_and_nothing_is_written() {
    for bad in [
        "bad label!",
        "talos_v1_9_0",
        "NOT_TALOS_1",
        "TALOS_",
        "TALOS_ABCDEFGHIJKLMNOPQRSTUVWXYZ0",
    ] {
        let dir = common::scratch();
        let (out, outdir) = build(dir.path(), &["--label", bad], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--label {bad:?} was accepted");
        assert!(
            stderr.contains(bad),
            "the error does not name {bad:?}:\n{stderr}"
        );
        let left = common::files_under(&outdir);
        assert!(
            left.is_empty(),
            "--label {bad:?} left files behind: {left:?}"
        );
    }
}

// ---- failures leave nothing (or the previous image) behind -------------------------------------

#[test]
fn a_missing_kernel_is_named_and_nothing_is_written() {
    let dir = common::scratch();
    let kernel = dir.path().join("no-such-dir/vmlinuz");
    let kernel_arg = kernel.to_str().unwrap();
    let (out, outdir) = build(dir.path(), &["--kernel", kernel_arg], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing kernel was accepted");
    assert!(
        stderr.contains(kernel_arg),
        "the error does not name the kernel:\n{stderr}"
    );
    let left = common::files_under(&outdir);
    assert!(
        left.is_empty(),
        "a failed build left files behind: {left:?}"
    );
}

#[test]
fn a_failed_build_keeps_the_previous_image() {
    let dir = common::scratch();
    let outdir = dir.path().join("out");
    std::fs::create_dir_all(&outdir).unwrap();
    let previous = outdir.join("metal-amd64.iso");
    std::fs::write(&previous, b"the previous, good image").unwrap();
    let missing_cache = dir.path().join("no-such-cache");
    let (out, _) = build(
        dir.path(),
        &["--image-cache", missing_cache.to_str().unwrap()],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a missing cache directory was accepted"
    );
    assert!(
        stderr.contains(missing_cache.to_str().unwrap()),
        "the error does not name the cache directory:\n{stderr}"
    );
    assert_eq!(
        std::fs::read(&previous).unwrap(),
        b"the previous, good image"
    );
    assert_eq!(common::files_under(&outdir), [previous]);
}

/// The image is an ordinary output file: same permissions as any file this process creates
/// (not the 0600 of a private temporary file), so a web server, libvirt's qemu user or a
/// colleague can read it.
#[test]
fn the_image_gets_ordinary_file_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::scratch();
    let (out, outdir) = build(dir.path(), &[], &[]);
    common::assert_success(&out, "imager iso");
    let reference = outdir.join("reference-file");
    std::fs::write(&reference, b"").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        format!("{:o}", mode(&outdir.join("metal-amd64.iso"))),
        format!("{:o}", mode(&reference))
    );
}

// ---- reproducibility ----------------------------------------------------------------------------

/// Copies `src` to `dst` and stamps every file and directory with `mtime`, as a fresh checkout
/// on another machine would.
fn copy_with_mtime(src: &Path, dst: &Path, mtime: std::time::SystemTime) {
    for entry in walkdir::WalkDir::new(src) {
        let entry = entry.unwrap();
        let target = dst.join(entry.path().strip_prefix(src).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            File::options()
                .write(true)
                .open(&target)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        }
    }
}

#[test]
fn source_date_epoch_makes_the_image_byte_reproducible() {
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let a_dir = common::scratch();
    let (out, a) = build(
        a_dir.path(),
        &["--image-cache", common::demo_cache().to_str().unwrap()],
        &epoch,
    );
    common::assert_success(&out, "first build");

    // Same inputs from another place with other file times, built later.
    let b_dir = common::scratch();
    let cache = b_dir.path().join("cache");
    copy_with_mtime(
        &common::demo_cache(),
        &cache,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000),
    );
    let (out, b) = build(
        b_dir.path(),
        &["--image-cache", cache.to_str().unwrap()],
        &epoch,
    );
    common::assert_success(&out, "second build");

    let a_iso = a.join("metal-amd64.iso");
    let b_iso = b.join("metal-amd64.iso");
    assert_eq!(
        common::sha256_file(&a_iso),
        common::sha256_file(&b_iso),
        "two builds with the same SOURCE_DATE_EPOCH differ"
    );

    let c_dir = common::scratch();
    let (out, c) = build(
        c_dir.path(),
        &["--image-cache", common::demo_cache().to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", "1700000001")],
    );
    common::assert_success(&out, "third build");
    assert_ne!(
        common::sha256_file(&a_iso),
        common::sha256_file(&c.join("metal-amd64.iso")),
        "SOURCE_DATE_EPOCH does not reach the image"
    );
}

#[test]
fn source_date_epoch_must_be_a_number() {
    let dir = common::scratch();
    let (out, outdir) = build(dir.path(), &[], &[("SOURCE_DATE_EPOCH", "yesterday")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SOURCE_DATE_EPOCH"));
    assert!(common::files_under(&outdir).is_empty());
}

/// The shared oracle ISO must list exactly the demo cache under /imagecache and the boot files,
/// seen by isoinfo's own Rock Ridge reader (which shows relocated deep directories where they
/// are stored; the name set is what it can check).
#[test]
fn isoinfo_rock_ridge_names_are_the_cache_names() {
    common::require_tool("isoinfo", "genisoimage");
    let iso = &oracle_iso().iso;
    let (ok, text) = common::run_tool(
        "isoinfo",
        &["-R".as_ref(), "-f".as_ref(), "-i".as_ref(), iso.as_os_str()],
    );
    assert!(ok, "{text}");
    let names: BTreeSet<&str> = text.lines().filter_map(|l| l.rsplit('/').next()).collect();
    for path in expected_listing(&common::demo_cache()).unwrap().keys() {
        let name = path.rsplit('/').next().unwrap();
        assert!(
            names.contains(name),
            "{name} not found by isoinfo -R:\n{text}"
        );
    }
    for boot_file in [
        "isolinux.bin",
        "ldlinux.c32",
        "isolinux.cfg",
        "vmlinuz",
        "initramfs.xz",
    ] {
        assert!(names.contains(boot_file), "{boot_file} missing:\n{text}");
    }
}
