//! GRUB for BIOS installed by this crate, booted: SeaBIOS runs the MBR code, which loads the core
//! image from the BIOS boot partition, which reads `grub/grub.cfg` from the FAT BOOT partition
//! (partition 3) and runs it. The config prints a marker that exists only once GRUB has expanded
//! a variable, so the line cannot come from anything but GRUB executing our grub.cfg.
//!
//! Needs QEMU and `grub/boot.img` + `grub/core.img` from `cargo xtask assets`; ignored by a plain
//! `cargo test`, run by `cargo xtask test` (docs/decisions.md, "Tests that need QEMU").

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use imager_boot_test::{assets_dir, clean_line};
use imager_disk::{
    BIOS_BOOT, DiskSize, DiskSpec, EFI_SYSTEM, GrubBios, LEGACY_BIOS_BOOTABLE, LINUX_FILESYSTEM,
    MIB, PartitionSize, PartitionSpec, metal,
};
use imager_esp::EspSpec;

const GRUB_CFG: &str = "\
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set word=OK
echo \"IMAGER-GRUB-${word} root=${root} prefix=${prefix}\"
halt
";

/// The 64 MiB test disk: the metal layout at test scale, GRUB installed, grub.cfg on BOOT.
fn make_disk(path: &Path) {
    let assets = assets_dir();
    let (boot_img, core_img) = (assets.join("grub/boot.img"), assets.join("grub/core.img"));
    assert!(
        boot_img.is_file() && core_img.is_file(),
        "{} or {} is missing: run `cargo xtask assets` (or point IMAGER_ASSETS at assets that \
         have them)",
        boot_img.display(),
        core_img.display()
    );
    let grub = GrubBios::from_files(&boot_img, &core_img).unwrap();
    let plan = DiskSpec::new(vec![
        PartitionSpec::new(metal::EFI, EFI_SYSTEM, PartitionSize::Bytes(8 * MIB)),
        PartitionSpec::new(
            metal::BIOS,
            BIOS_BOOT,
            PartitionSize::Bytes(metal::BIOS_SIZE),
        )
        .with_attributes(LEGACY_BIOS_BOOTABLE),
        PartitionSpec::new(metal::BOOT, LINUX_FILESYSTEM, PartitionSize::Bytes(8 * MIB)),
        PartitionSpec::new(
            metal::META,
            LINUX_FILESYSTEM,
            PartitionSize::Bytes(metal::META_SIZE),
        ),
        PartitionSpec::new(metal::IMAGECACHE, LINUX_FILESYSTEM, PartitionSize::Rest),
    ])
    .with_size(DiskSize::Exact(64 * MIB))
    .plan()
    .unwrap();
    let boot = plan.partition(metal::BOOT).unwrap();
    assert_eq!(boot.number, metal::BOOT_PARTITION_NUMBER);

    let file = File::create(path).unwrap();
    plan.write_frame(&file, Some(&grub)).unwrap();

    let mut fat = EspSpec::new("BOOT", 1_700_000_000).unwrap();
    fat.add_bytes("grub/grub.cfg", GRUB_CFG).unwrap();
    let fat_path = path.with_extension("boot.fat");
    let fat_len = fat.write(&fat_path).unwrap();
    assert!(fat_len <= boot.len(), "{fat_len} > {}", boot.len());
    file.write_all_at(&std::fs::read(&fat_path).unwrap(), boot.offset())
        .unwrap();
    std::fs::remove_file(fat_path).unwrap();
}

/// Boots `disk` under SeaBIOS with the disk on `device` and returns the console up to GRUB's
/// marker line, or panics with the console when it does not come within the timeout.
fn boot_until_marker(disk: &Path, device: &[&str]) -> String {
    let mut cmd = Command::new("qemu-system-x86_64");
    // As crates/boot-test: TCG (KVM guests spin silently here), nothing but our disk attached.
    cmd.args(["-accel", "tcg", "-machine", "pc", "-m", "128"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-vga",
            "none",
        ])
        .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
        .args(["-boot", "strict=on,menu=off"])
        .arg("-drive")
        .arg(format!(
            "if=none,id=disk,format=raw,snapshot=on,file={}",
            disk.display().to_string().replace(',', ",,")
        ))
        .args(device)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot start qemu-system-x86_64 (Debian qemu-system-x86): {e}")
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if tx.send(clean_line(&line)).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut console = String::new();
    let mut found = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                found = line.contains("IMAGER-GRUB-OK");
                console.push_str(&line);
                console.push('\n');
                if found {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    // GRUB's `halt` powers the machine off; a guest that did not get there is killed.
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        found,
        "no IMAGER-GRUB-OK from GRUB with {device:?}; console:\n{console}"
    );
    console
}

fn require_qemu() {
    let found = Command::new("sh")
        .args(["-c", "command -v qemu-system-x86_64"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "qemu-system-x86_64 is needed: install Debian's qemu-system-x86"
    );
}

#[test]
#[ignore = "boots QEMU; needs the GRUB assets (cargo xtask assets)"]
fn seabios_boots_grub_from_the_bios_partition_and_reads_boot() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    make_disk(&disk);
    for (name, device) in [
        ("ide", &["-device", "ide-hd,drive=disk,bootindex=0"][..]),
        (
            "sata",
            &[
                "-device",
                "ahci,id=ahci",
                "-device",
                "ide-hd,drive=disk,bus=ahci.0,bootindex=0",
            ][..],
        ),
        (
            "virtio",
            &["-device", "virtio-blk-pci,drive=disk,bootindex=0"][..],
        ),
    ] {
        let console = boot_until_marker(&disk, device);
        let marker = console
            .lines()
            .find(|l| l.contains("IMAGER-GRUB-OK"))
            .unwrap();
        // GRUB found partition 3 of the disk it was loaded from, as the core image's prefix says.
        assert!(
            marker.contains("root=hd0,gpt3 prefix=(hd0,gpt3)/grub"),
            "{name}: {marker}"
        );
    }
}
