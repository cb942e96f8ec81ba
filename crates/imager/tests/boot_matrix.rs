//! The boot matrix: one ISO from `testdata/demo-cache`, booted under SeaBIOS and OVMF, as a CD
//! and as a USB disk. The test node (the assets' initramfs) reports on the serial console what it
//! found; every file it read must match what the host computes from the cache directory.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use imager_boot_test::{Attach, BootConfig, Firmware, boot};

/// Per boot. A boot here takes 10-20 s; the margin covers a loaded 2-core CI machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

struct BuiltIso {
    iso: PathBuf,
    /// `imager.test=<token>`: proves the booted command line came from this very build.
    token_arg: String,
    /// The APPEND words of the ISO's own ISOLINUX config, read back with xorriso.
    append: Vec<String>,
}

/// Builds the ISO once for all four boots (the first caller builds, the others wait).
fn built_iso() -> &'static BuiltIso {
    static BUILT: OnceLock<Result<BuiltIso, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(built) => built,
        Err(e) => panic!("building the boot-matrix ISO failed (see the first failing test): {e}"),
    }
}

fn build() -> Result<BuiltIso, String> {
    let assets = common::real_assets();
    let out = common::fresh_target_dir("boot-matrix");
    let token_arg = common::token_arg();
    let result = common::imager([
        "iso".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--image-cache".as_ref(),
        common::demo_cache().as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
        "--extra-kernel-arg".as_ref(),
        token_arg.as_ref(),
        // A kernel panic reboots at once, which ends QEMU (-no-reboot) instead of hanging.
        "--extra-kernel-arg".as_ref(),
        std::ffi::OsStr::new("panic=-1"),
    ]);
    if !result.status.success() {
        return Err(format!(
            "imager iso failed ({}): {}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        ));
    }
    let iso = out.join("metal-amd64.iso");
    let cfg = out.join("isolinux.cfg");
    common::xorriso_extract(&iso, "/isolinux/isolinux.cfg", &cfg);
    let cfg = std::fs::read_to_string(&cfg).map_err(|e| e.to_string())?;
    Ok(BuiltIso {
        iso,
        token_arg,
        append: common::isolinux_append(&cfg),
    })
}

fn boot_and_check(firmware: Firmware, attach: Attach) {
    let built = built_iso();
    let cfg = BootConfig::image(&built.iso, firmware, attach).with_timeout(BOOT_TIMEOUT);
    let outcome = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let report = &outcome.report;
    let context = || {
        outcome
            .console
            .tail(imager_boot_test::TAIL_LINES)
            .to_string()
    };

    // boot() only succeeds after `start`, `done`, no `error` and an ACPI power-off; say so
    // here too, so this test does not depend on that contract silently.
    assert!(report.started, "no start marker\n{}", context());
    assert!(report.done, "no done marker\n{}", context());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(
        report.unrecognized.is_empty(),
        "garbled node lines: {:?}",
        report.unrecognized
    );

    let cmdline = report
        .cmdline
        .as_deref()
        .unwrap_or_else(|| panic!("no cmdline line\n{}", context()));
    let words = common::without_loader_words(cmdline);
    assert!(
        words.contains(&built.token_arg),
        "{} missing from the booted command line {cmdline:?}",
        built.token_arg
    );
    assert!(
        words.iter().any(|w| w == "console=ttyS0,115200"),
        "{cmdline:?}"
    );
    // BIOS and UEFI must boot the same command line: compare with what the ISO's ISOLINUX
    // config holds (the oracle tests check the systemd-boot entry against that same line).
    assert_eq!(
        words, built.append,
        "booted command line differs from the ISO's ISOLINUX APPEND line"
    );

    assert_eq!(
        report.volumes.len(),
        1,
        "expected one volume line: {:?}",
        report.volumes
    );
    let volume = &report.volumes[0];
    assert_eq!(volume.label, "TALOS_V1_9_0");
    assert_eq!(volume.fs_type, "iso9660");
    match attach {
        Attach::Cdrom => assert!(volume.device.starts_with("/dev/sr"), "{volume:?}"),
        Attach::UsbDisk => assert!(volume.device.starts_with("/dev/sd"), "{volume:?}"),
        Attach::VirtioDisk | Attach::SataDisk => {
            unreachable!("an ISO is booted as a CD or a stick")
        }
    }

    common::assert_reported_demo_cache(&outcome);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn boots_seabios_cdrom() {
    boot_and_check(Firmware::SeaBios, Attach::Cdrom);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn boots_seabios_usb() {
    boot_and_check(Firmware::SeaBios, Attach::UsbDisk);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn boots_ovmf_cdrom() {
    boot_and_check(Firmware::Ovmf, Attach::Cdrom);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn boots_ovmf_usb() {
    boot_and_check(Firmware::Ovmf, Attach::UsbDisk);
}
