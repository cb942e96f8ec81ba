//! The metal image booted: under SeaBIOS (GRUB from the BIOS partition, grub.cfg from BOOT) and
//! OVMF (systemd-boot from EFI), as a virtio and as a SATA disk. The test node finds the
//! `IMAGECACHE` partition by its GPT name, mounts its ext4 and reports every file's sha256; each
//! must match what the host computes from the cache directory.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use imager_boot_test::{Attach, BootConfig, Firmware, boot};

/// Per boot; a loaded 2-core CI machine included.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

struct Built {
    disk: PathBuf,
    token_arg: String,
}

/// Builds the image once for all boots.
fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(built) => built,
        Err(e) => panic!("building the metal image failed (see the first failing test): {e}"),
    }
}

fn build() -> Result<Built, String> {
    let assets = common::real_assets();
    let out = common::fresh_target_dir("metal-boot");
    let token_arg = common::token_arg();
    let result = common::imager([
        "metal".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--image-cache".as_ref(),
        common::demo_cache().as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
        "--out-format".as_ref(),
        "raw".as_ref(),
        "--extra-kernel-arg".as_ref(),
        token_arg.as_ref(),
        "--extra-kernel-arg".as_ref(),
        std::ffi::OsStr::new("panic=-1"),
    ]);
    if !result.status.success() {
        return Err(format!(
            "imager metal failed ({}): {}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        ));
    }
    Ok(Built {
        disk: out.join("metal-amd64.raw"),
        token_arg,
    })
}

fn boot_and_check(firmware: Firmware, attach: Attach) {
    let built = built();
    let cfg = BootConfig::image(&built.disk, firmware, attach).with_timeout(BOOT_TIMEOUT);
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

    // The same command line on both firmwares: GRUB's and systemd-boot's entries were made from
    // one; the token proves it is this build's.
    let cmdline = report.cmdline.as_deref().unwrap_or_default();
    let words = common::without_loader_words(cmdline);
    let want: Vec<String> = [
        "talos.platform=metal",
        "console=tty0",
        "console=ttyS0,115200",
        built.token_arg.as_str(),
        "panic=-1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(words, want, "booted command line {cmdline:?}");

    assert_eq!(report.volumes.len(), 1, "{:?}", report.volumes);
    let volume = &report.volumes[0];
    assert_eq!(volume.label, "IMAGECACHE");
    assert_eq!(volume.fs_type, "ext4");
    let device = match attach {
        Attach::VirtioDisk => "/dev/vda5",
        Attach::SataDisk => "/dev/sda5",
        Attach::Cdrom | Attach::UsbDisk => unreachable!("a metal image is a disk"),
    };
    assert_eq!(volume.device, device);

    common::assert_reported_demo_cache(&outcome);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn metal_boots_seabios_virtio() {
    boot_and_check(Firmware::SeaBios, Attach::VirtioDisk);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn metal_boots_seabios_sata() {
    boot_and_check(Firmware::SeaBios, Attach::SataDisk);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn metal_boots_ovmf_virtio() {
    boot_and_check(Firmware::Ovmf, Attach::VirtioDisk);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn metal_boots_ovmf_sata() {
    boot_and_check(Firmware::Ovmf, Attach::SataDisk);
}
