//! The runner against real QEMU guests: how it judges boots that end well, end badly or hang.
//!
//! The first group needs only QEMU and OVMF. The `kernel_*` tests boot the assets' Debian kernel
//! with a throw-away busybox initramfs that plays the node's console protocol, so the runner is
//! tested independently of the real node init and of any ISO writer.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use imager_boot_test::{
    Attach, BootConfig, BootError, BootFailure, FailedBoot, Firmware, assets_dir, boot,
};

fn failed(result: Result<imager_boot_test::BootOutcome, BootError>) -> Box<FailedBoot> {
    match result {
        Err(BootError::Failed(f)) => f,
        Err(other) => panic!("expected a failed boot, got: {other}"),
        Ok(outcome) => panic!(
            "expected a failed boot, but it succeeded:\n{}",
            outcome.console.text()
        ),
    }
}

/// A 1 MiB image of zeros: no El Torito catalog, no partition table, nothing to boot.
fn blank_image(dir: &Path) -> PathBuf {
    let path = dir.join("blank.img");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    path
}

#[test]
fn seabios_with_nothing_bootable_fails_fast_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BootConfig::image(blank_image(dir.path()), Firmware::SeaBios, Attach::Cdrom)
        .with_timeout(Duration::from_secs(120));
    let f = failed(boot(&cfg));
    match &f.failure {
        BootFailure::Stuck { line } => assert!(line.contains("No bootable device"), "{f}"),
        other => panic!("expected Stuck, got {other:?}\n{f}"),
    }
    // SeaBIOS would otherwise retry after 60 s; the runner must not wait for that.
    assert!(f.elapsed < Duration::from_secs(50), "{f}");
    assert!(f.to_string().contains("No bootable device"));
}

#[test]
fn ovmf_with_nothing_bootable_fails_fast_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BootConfig::image(blank_image(dir.path()), Firmware::Ovmf, Attach::UsbDisk)
        .with_timeout(Duration::from_secs(120));
    let f = failed(boot(&cfg));
    match &f.failure {
        BootFailure::Stuck { line } => assert!(line.contains("EFI Internal Shell"), "{f}"),
        other => panic!("expected Stuck, got {other:?}\n{f}"),
    }
    assert!(f.elapsed < Duration::from_secs(100), "{f}");
}

#[test]
fn a_hung_guest_is_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // -S: the CPU never starts, so the guest never writes or exits.
    let cfg = BootConfig::image(blank_image(dir.path()), Firmware::SeaBios, Attach::Cdrom)
        .with_arg("-S")
        .with_timeout(Duration::from_secs(3));
    let f = failed(boot(&cfg));
    assert_eq!(
        f.failure,
        BootFailure::Timeout {
            after: Duration::from_secs(3),
            done_seen: false
        }
    );
    assert!(f.elapsed >= Duration::from_secs(3), "{f}");
    assert!(f.elapsed < Duration::from_secs(10), "{f}");
    let text = f.to_string();
    assert!(text.contains("timed out after 3 s"), "{text}");
    assert!(text.contains("(the console stayed empty)"), "{text}");
}

#[test]
fn a_qemu_error_is_reported_with_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BootConfig::image(blank_image(dir.path()), Firmware::SeaBios, Attach::Cdrom)
        .with_arg("-no-such-option");
    let f = failed(boot(&cfg));
    assert!(
        matches!(f.failure, BootFailure::QemuFailed { .. }),
        "{:?}",
        f.failure
    );
    assert!(f.stderr.contains("no-such-option"), "{f}");
    assert!(f.to_string().contains("QEMU stderr:"), "{f}");
}

#[test]
fn the_image_file_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let image = blank_image(dir.path());
    let before = std::fs::read(&image).unwrap();
    for attach in [Attach::Cdrom, Attach::UsbDisk] {
        let cfg = BootConfig::image(&image, Firmware::SeaBios, attach);
        let _ = boot(&cfg);
    }
    assert_eq!(std::fs::read(&image).unwrap(), before);
}

// ---- with the assets' kernel and a busybox initramfs ---------------------------------------

const SHA_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

fn kernel() -> PathBuf {
    let kernel = assets_dir().join("vmlinuz");
    assert!(
        kernel.is_file(),
        "{} is missing: run `cargo xtask assets` (or set IMAGER_ASSETS)",
        kernel.display()
    );
    kernel
}

/// An uncompressed newc initramfs: `/init` (the given busybox script) and a static busybox.
fn busybox_initramfs(dir: &Path, script: &str) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    let data = std::fs::read(busybox).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (install the Debian package busybox-static)",
            busybox.display()
        )
    });
    let mut cpio = Vec::new();
    let mut ino = 1;
    let mut entry = |name: &str, mode: u32, body: &[u8]| {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            body.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        ino += 1;
        cpio.extend_from_slice(header.as_bytes());
        cpio.extend_from_slice(name.as_bytes());
        cpio.push(0);
        while cpio.len() % 4 != 0 {
            cpio.push(0);
        }
        cpio.extend_from_slice(body);
        while cpio.len() % 4 != 0 {
            cpio.push(0);
        }
    };
    entry("bin", 0o040755, b"");
    entry("bin/busybox", 0o100755, &data);
    entry("dev", 0o040755, b"");
    entry("proc", 0o040755, b"");
    entry("init", 0o100755, script.as_bytes());
    entry("TRAILER!!!", 0, b"");
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, cpio).unwrap();
    path
}

/// A busybox `/init` that mounts /proc, runs `body` and ends with `end` (power-off or reboot).
fn script(body: &str, end: &str) -> String {
    format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mount -t proc proc /proc\n\
         P=imager-node-init:\n\
         {body}\n\
         /bin/busybox {end}\n"
    )
}

fn kernel_boot(
    script: &str,
    firmware: Firmware,
    name: &str,
) -> Result<imager_boot_test::BootOutcome, BootError> {
    let dir = tempfile::tempdir().unwrap();
    let initrd = busybox_initramfs(dir.path(), script);
    let cfg = BootConfig::kernel(
        kernel(),
        initrd,
        "console=ttyS0,115200 panic=-1 imager.runner=yes",
        firmware,
    )
    .with_name(name)
    .with_timeout(Duration::from_secs(180));
    boot(&cfg)
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn kernel_a_node_that_reports_and_powers_off_passes() {
    for firmware in [Firmware::SeaBios, Firmware::Ovmf] {
        let body = format!(
            "echo \"$P start\"\n\
             echo \"$P cmdline $(/bin/busybox cat /proc/cmdline)\"\n\
             echo \"$P volume TALOS_V1_9_0 on /dev/sr0 (iso9660)\"\n\
             echo \"$P file blob/sha256-abc 3 {SHA_ABC}\"\n\
             echo \"$P cache files=1 bytes=3\"\n\
             echo \"$P done\""
        );
        let outcome = kernel_boot(&script(&body, "poweroff -f"), firmware, "runner-ok")
            .unwrap_or_else(|e| panic!("{firmware}: {e}"));
        let r = &outcome.report;
        assert!(r.started && r.done);
        assert!(r.cmdline_args().contains(&"imager.runner=yes"), "{r:?}");
        assert_eq!(r.volumes.len(), 1);
        assert_eq!(r.volumes[0].label, "TALOS_V1_9_0");
        assert_eq!(r.files.len(), 1);
        assert_eq!(r.files[0].sha256, SHA_ABC);
        assert!(r.unrecognized.is_empty(), "{:?}", r.unrecognized);
        eprintln!(
            "{firmware}: kernel boot took {:.1} s",
            outcome.elapsed.as_secs_f64()
        );
    }
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn kernel_a_node_error_fails_the_boot_with_its_text() {
    let body = "echo \"$P start\"\necho \"$P error no TALOS_ volume found\"";
    let f = failed(kernel_boot(
        &script(body, "poweroff -f"),
        Firmware::SeaBios,
        "runner-error",
    ));
    assert_eq!(
        f.failure,
        BootFailure::NodeError(vec!["no TALOS_ volume found".into()])
    );
    assert!(f.to_string().contains("no TALOS_ volume found"));
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn kernel_done_followed_by_a_reboot_is_not_a_clean_power_off() {
    let body = "echo \"$P start\"\necho \"$P done\"";
    let f = failed(kernel_boot(
        &script(body, "reboot -f"),
        Firmware::SeaBios,
        "runner-reboot",
    ));
    assert_eq!(
        f.failure,
        BootFailure::NotPoweredOff {
            shutdown: Some("guest-reset".into())
        }
    );
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn kernel_a_panic_is_reported_as_the_cause() {
    // /init exits: the kernel panics ("Attempted to kill init").
    let body = "echo \"$P start\"\nexit 0";
    let f = failed(kernel_boot(
        &script(body, "true"),
        Firmware::SeaBios,
        "runner-panic",
    ));
    match &f.failure {
        BootFailure::Stuck { line } => {
            assert!(line.contains("Kernel panic - not syncing"), "{f}")
        }
        other => panic!("expected Stuck, got {other:?}\n{f}"),
    }
}
