//! arm64 media (`--arch arm64`), from the real arm64 assets and the demo cache.
//!
//! Read back by tools nobody here wrote: xorriso (the El Torito catalog has one UEFI entry and no
//! BIOS entry), sgdisk, fsck.fat and mtools (the ESP holds `EFI/BOOT/BOOTAA64.EFI` and the arm64
//! command line), e2fsck (the metal image's cache). Then booted under AAVMF in
//! `qemu-system-aarch64 -M virt` (TCG): the ISO as a CD (virtio-scsi) and as a USB stick (xHCI),
//! the metal image as a virtio disk; the node must report every cache file as the host computes it.
//! And an oci-wrapped cache is read for `linux/arm64` (or its only image).

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use imager_boot_test::{Attach, BootConfig, Firmware, boot};

/// Per boot. One takes ~13-20 s of wall time here (AAVMF starts in ~4 s, the kernel reaches the
/// node in ~4 s of guest time); the margin covers a loaded 2-core CI machine without letting a
/// hung guest cost more than a few minutes.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// The arm64 default command line (before the test's own arguments).
const ARM64_DEFAULTS: [&str; 3] = [
    "talos.platform=metal",
    "console=tty0",
    "console=ttyAMA0,115200",
];

/// GPT type GUIDs as sgdisk prints them.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX_FS_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

struct Built {
    iso: PathBuf,
    disk: PathBuf,
    /// `imager.test=<token>`: proves the booted command line came from this very build.
    token_arg: String,
}

/// Builds the ISO and the raw metal image once for every test here (the first caller builds).
fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(built) => built,
        Err(e) => panic!("building the arm64 media failed (see the first failing test): {e}"),
    }
}

fn build() -> Result<Built, String> {
    let assets = common::real_assets();
    let out = common::fresh_target_dir("arm64");
    let token_arg = common::token_arg();
    for (command, extra) in [("iso", &[][..]), ("metal", &["--out-format", "raw"][..])] {
        let mut args: Vec<&OsStr> = vec![
            command.as_ref(),
            "--arch".as_ref(),
            "arm64".as_ref(),
            "--assets".as_ref(),
            assets.as_os_str(),
            "--image-cache".as_ref(),
            common::demo_cache().into_os_string().leak(),
            "--output".as_ref(),
            out.as_os_str(),
            "--extra-kernel-arg".as_ref(),
            token_arg.as_ref(),
            // A kernel panic reboots at once, which ends QEMU (-no-reboot) instead of hanging.
            "--extra-kernel-arg".as_ref(),
            "panic=-1".as_ref(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let result = common::imager_with_env(args, &[("SOURCE_DATE_EPOCH", "0")]);
        if !result.status.success() {
            return Err(format!(
                "imager {command} --arch arm64 failed ({}): {}",
                result.status,
                String::from_utf8_lossy(&result.stderr)
            ));
        }
    }
    Ok(Built {
        iso: out.join("metal-arm64.iso"),
        disk: out.join("metal-arm64.raw"),
        token_arg,
    })
}

/// Checks a FAT image with `fsck.fat -n` and returns `mtype` of its systemd-boot entry, after
/// checking that the arm64 removable-media loader is there and the x86-64 one is not.
fn check_esp(fat: &Path) -> String {
    let (ok, text) = common::run_tool("fsck.fat", &[OsStr::new("-n"), fat.as_os_str()]);
    assert!(ok, "fsck.fat -n: {text}");
    let (ok, text) = common::run_tool(
        "mdir",
        &[
            OsStr::new("-i"),
            fat.as_os_str(),
            OsStr::new("-b"),
            OsStr::new("::/EFI/BOOT"),
        ],
    );
    assert!(ok, "mdir: {text}");
    let names: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(names, ["::/EFI/BOOT/BOOTAA64.EFI"], "{text}");
    let (ok, entry) = common::run_tool(
        "mtype",
        &[
            OsStr::new("-i"),
            fat.as_os_str(),
            OsStr::new("::/loader/entries/talos.conf"),
        ],
    );
    assert!(ok, "mtype: {entry}");
    entry
}

/// The `options` line of a systemd-boot entry, split into words.
fn options_words(entry: &str) -> Vec<String> {
    let line = entry
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .unwrap_or_else(|| panic!("no options line in {entry}"));
    line.split_whitespace().map(str::to_owned).collect()
}

fn want_cmdline(built: &Built) -> Vec<String> {
    ARM64_DEFAULTS
        .iter()
        .copied()
        .chain([built.token_arg.as_str(), "panic=-1"])
        .map(str::to_owned)
        .collect()
}

// ---- Oracles ---------------------------------------------------------------------------------

#[test]
fn the_iso_has_one_uefi_el_torito_entry_a_clean_gpt_and_an_arm64_esp() {
    for (tool, package) in [
        ("xorriso", "xorriso"),
        ("sgdisk", "gdisk"),
        ("fsck.fat", "dosfstools"),
        ("mdir", "mtools"),
    ] {
        common::require_tool(tool, package);
    }
    let built = built();
    let (ok, report) = common::run_tool(
        "xorriso",
        &[
            "-indev".as_ref(),
            built.iso.as_os_str(),
            "-report_el_torito".as_ref(),
            "plain".as_ref(),
            "-report_system_area".as_ref(),
            "plain".as_ref(),
        ],
    );
    assert!(ok, "xorriso failed:\n{report}");
    // Columns: N, platform, bootable, emulation, load segment, hdpt, load size, LBA.
    let entries: Vec<Vec<&str>> = report
        .lines()
        .filter_map(|l| l.strip_prefix("El Torito boot img :"))
        .map(|rest| rest.split_whitespace().collect())
        .collect();
    assert_eq!(entries.len(), 1, "expected one boot entry:\n{report}");
    assert_eq!(entries[0][1], "UEFI", "{report}");
    assert_eq!(entries[0][2], "y", "the entry must be bootable:\n{report}");
    assert!(!report.contains("BIOS"), "a BIOS entry on arm64:\n{report}");

    let (ok, text) = common::run_tool("sgdisk", &[OsStr::new("-v"), built.iso.as_os_str()]);
    assert!(ok && text.contains("No problems found"), "{text}");
    // The GPT names the appended ESP; the dd-ed stick boots through it.
    let esp = (1..=3)
        .map(|n| common::sgdisk_partition(&built.iso, n))
        .find(|p| p.type_guid == ESP_TYPE)
        .unwrap_or_else(|| panic!("no EFI system partition in the ISO's GPT"));
    let tmp = common::scratch();
    let fat = tmp.path().join("esp.img");
    common::extract_partition(&built.iso, &esp, &fat);
    let entry = check_esp(&fat);
    assert_eq!(options_words(&entry), want_cmdline(built), "{entry}");
    // No ISOLINUX on arm64.
    let (_, listing) = common::run_tool(
        "xorriso",
        &[
            "-indev".as_ref(),
            built.iso.as_os_str(),
            "-find".as_ref(),
            "/".as_ref(),
            "-maxdepth".as_ref(),
            "1".as_ref(),
        ],
    );
    assert!(!listing.contains("isolinux"), "{listing}");
    assert!(listing.contains("'/imagecache'"), "{listing}");
}

#[test]
fn the_metal_image_is_efi_meta_imagecache_and_every_file_system_is_clean() {
    for (tool, package) in [
        ("sgdisk", "gdisk"),
        ("fsck.fat", "dosfstools"),
        ("mdir", "mtools"),
        ("e2fsck", "e2fsprogs"),
    ] {
        common::require_tool(tool, package);
    }
    let built = built();
    let (ok, text) = common::run_tool("sgdisk", &[OsStr::new("-v"), built.disk.as_os_str()]);
    assert!(ok && text.contains("No problems found"), "{text}");
    let (ok, text) = common::run_tool("sgdisk", &[OsStr::new("-p"), built.disk.as_os_str()]);
    assert!(ok, "{text}");
    let parts: Vec<_> = (1..=3)
        .map(|n| common::sgdisk_partition(&built.disk, n))
        .collect();
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["EFI", "META", "IMAGECACHE"], "{text}");
    // Upstream's sd-boot sizes: EFI 2101 MiB at 1 MiB, META 1 MiB after it.
    assert_eq!(
        (parts[0].first, parts[0].last),
        (2048, 2048 + 2101 * 2048 - 1)
    );
    assert_eq!(parts[1].last - parts[1].first + 1, 2048);
    assert_eq!(parts[0].type_guid, ESP_TYPE);
    for p in &parts[1..] {
        assert_eq!(p.type_guid, LINUX_FS_TYPE, "{}", p.name);
    }

    let tmp = common::scratch();
    let fat = tmp.path().join("efi.img");
    common::extract_partition(&built.disk, &parts[0], &fat);
    let entry = check_esp(&fat);
    assert_eq!(options_words(&entry), want_cmdline(built), "{entry}");
    std::fs::remove_file(&fat).unwrap();

    let ext4 = format!("{}?offset={}", built.disk.display(), parts[2].first * 512);
    let (ok, text) = common::run_tool("e2fsck", &[OsStr::new("-fn"), OsStr::new(&ext4)]);
    assert!(ok, "e2fsck -fn: {text}");
}

/// An oci-wrapped cache (upstream's `--layout oci`) with one image per platform in `platforms`,
/// each holding the demo cache, written under `dir`.
fn wrapped(dir: &Path, platforms: &[&str]) -> PathBuf {
    let out = dir.join(platforms.join("+").replace('/', "-"));
    let platforms: Vec<_> = platforms
        .iter()
        .map(|p| Some(imager_cache::Platform::parse(p).unwrap()))
        .collect();
    imager_cache::oci_out::write_wrapped_layout(
        &common::demo_cache(),
        &out,
        &platforms,
        0,
        &mut |_| {},
    )
    .unwrap();
    out
}

#[test]
fn an_oci_wrapped_cache_is_read_for_linux_arm64_or_its_only_image() {
    let assets = common::real_assets();
    let tmp = common::scratch();
    let iso = |cache: &Path, out: &str| {
        common::imager([
            "iso".as_ref(),
            "--arch".as_ref(),
            "arm64".as_ref(),
            "--assets".as_ref(),
            assets.as_os_str(),
            "--image-cache".as_ref(),
            cache.as_os_str(),
            "--output".as_ref(),
            tmp.path().join(out).as_os_str(),
        ])
    };
    // The arm64 image of a multi-platform cache, and the one image of a single-platform one.
    for platforms in [&["linux/amd64", "linux/arm64"][..], &["linux/amd64"][..]] {
        let out = iso(&wrapped(tmp.path(), platforms), "out");
        common::assert_success(&out, &format!("imager iso --arch arm64 ({platforms:?})"));
    }
    // Several images and none for arm64: refused, naming what there is (an amd64 medium would
    // take the amd64 one, so the lookup was arm64's).
    let out = iso(
        &wrapped(tmp.path(), &["linux/amd64", "linux/riscv64"]),
        "refused",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no cache image for linux/arm64")
            && stderr.contains("linux/amd64, linux/riscv64"),
        "{stderr}"
    );
    assert!(!tmp.path().join("refused/metal-arm64.iso").exists());
}

#[test]
fn images_with_no_arm64_build_are_named_and_still_carried() {
    let assets = common::real_assets();
    let tmp = common::scratch();
    let build = |arch: &str| {
        let out = common::imager([
            "iso".as_ref(),
            "--arch".as_ref(),
            arch.as_ref(),
            "--assets".as_ref(),
            assets.as_os_str(),
            "--image-cache".as_ref(),
            common::demo_cache().as_os_str(),
            "--output".as_ref(),
            tmp.path().as_os_str(),
        ]);
        common::assert_success(&out, &format!("imager iso --arch {arch}"));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The demo cache holds amd64 images only: busybox's index lists an arm64 image it does not
    // cache (the cache check's warning), csi-node-driver-registrar is a single amd64 image.
    let stderr = build("arm64");
    for warning in [
        "warning: docker.io/library/busybox:latest: its index lists a linux/arm64 image, but that \
         image is not cached"
            .to_owned(),
        "warning: ghcr.io/canonical/k8s-snap/sig-storage/csi-node-driver-registrar:v2.13.0: no \
         linux/arm64 image is cached (only linux/amd64), so arm64 nodes"
            .to_owned(),
    ] {
        assert!(stderr.contains(&warning), "{warning:?} not in:\n{stderr}");
        assert_eq!(
            stderr.matches(warning.split(':').nth(1).unwrap()).count(),
            1,
            "{stderr}"
        );
    }
    assert!(!build("amd64").contains("image is cached (only"));
}

// ---- Boots under AAVMF -------------------------------------------------------------------------

fn boot_and_check(image: &Path, attach: Attach) {
    let built = built();
    let cfg = BootConfig::image(image, Firmware::Aavmf, attach).with_timeout(BOOT_TIMEOUT);
    let outcome = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let report = &outcome.report;
    let context = || {
        outcome
            .console
            .tail(imager_boot_test::TAIL_LINES)
            .to_string()
    };
    assert!(
        report.started && report.done,
        "no start/done\n{}",
        context()
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(
        report.unrecognized.is_empty(),
        "garbled node lines: {:?}",
        report.unrecognized
    );

    let cmdline = report.cmdline.as_deref().unwrap_or_default();
    let words = common::without_loader_words(cmdline);
    assert_eq!(
        words,
        want_cmdline(built),
        "booted command line {cmdline:?}"
    );

    assert_eq!(report.volumes.len(), 1, "{:?}", report.volumes);
    let volume = &report.volumes[0];
    match attach {
        Attach::Cdrom | Attach::UsbDisk => {
            assert_eq!(volume.label, "TALOS_V1_9_0");
            assert_eq!(volume.fs_type, "iso9660");
            let prefix = if attach == Attach::Cdrom {
                "/dev/sr"
            } else {
                "/dev/sd"
            };
            assert!(volume.device.starts_with(prefix), "{volume:?}");
        }
        Attach::VirtioDisk => {
            assert_eq!(volume.label, "IMAGECACHE");
            assert_eq!(volume.fs_type, "ext4");
            // EFI, META, IMAGECACHE: the cache is the third partition on arm64.
            assert_eq!(volume.device, "/dev/vda3");
        }
        Attach::SataDisk => unreachable!("not booted on arm64"),
    }

    common::assert_reported_demo_cache(&outcome);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn boots_aavmf_cdrom() {
    boot_and_check(&built().iso, Attach::Cdrom);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn boots_aavmf_usb() {
    boot_and_check(&built().iso, Attach::UsbDisk);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn boots_aavmf_metal_virtio() {
    boot_and_check(&built().disk, Attach::VirtioDisk);
}
