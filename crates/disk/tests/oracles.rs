//! Disk images read back by tools nobody here wrote: sgdisk (GPT fdisk) checks both tables and
//! their CRCs, and lists what each partition entry holds; blkid reads the disk GUID.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use imager_disk::{
    BIOS_BOOT, DiskPlan, DiskSize, DiskSpec, EFI_SYSTEM, GrubBios, Guid, LEGACY_BIOS_BOOTABLE,
    LINUX_FILESYSTEM, MIB, PartitionSize, PartitionSpec, metal,
};

/// Panics with the Debian package to install when `tool` is not on PATH.
fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is needed as an independent oracle: install the Debian package {package}"
    );
}

fn run(program: &str, args: &[&str], image: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(image)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

/// The metal layout at test scale: EFI and BOOT of 8 MiB, the cache taking the rest of 64 MiB.
fn small_metal() -> DiskPlan {
    DiskSpec::new(vec![
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
    .unwrap()
}

/// GRUB images with the shape `GrubBios` checks (the boot test uses the real ones): boot code
/// that is all 0xB0, a 40-sector core image.
fn stand_in_grub() -> GrubBios {
    let mut boot = vec![0xB0u8; 512];
    boot[510..].copy_from_slice(&[0x55, 0xAA]);
    let mut core = vec![0xC0u8; 40 * 512];
    core[0x1E8..0x200].fill(0);
    core[0x1F4..0x1FC].copy_from_slice(&2u64.to_le_bytes());
    core[0x1FC..0x1FE].copy_from_slice(&39u16.to_le_bytes());
    core[0x1FE..0x200].copy_from_slice(&0x0820u16.to_le_bytes());
    GrubBios::new(&boot, &core).unwrap()
}

fn write(plan: &DiskPlan, path: &Path, grub: Option<&GrubBios>) {
    let file = File::create(path).unwrap();
    plan.write_frame(&file, grub).unwrap();
}

/// `Key: value` lines of `sgdisk -i N`.
fn field<'a>(info: &'a str, key: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{info}"))
        .trim()
}

#[test]
fn sgdisk_reads_back_every_entry() {
    require_tool("sgdisk", "gdisk");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    let plan = small_metal();
    write(&plan, &image, Some(&stand_in_grub()));

    let verify = run("sgdisk", &["-v"], &image);
    assert!(verify.contains("No problems found."), "{verify}");

    let table = run("sgdisk", &["-p"], &image);
    let disk_guid = Guid::from_label("talos-image-disk").to_string();
    assert!(
        table.contains(&format!(
            "Disk identifier (GUID): {}",
            disk_guid.to_uppercase()
        )),
        "{table}"
    );
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first().is_some_and(|n| n.parse::<u32>().is_ok()))
        .collect();
    let got: Vec<(&str, &str, &str, &str, &str)> = rows
        .iter()
        .map(|w| (w[0], w[1], w[2], w[5], w[6]))
        .collect();
    assert_eq!(
        got,
        [
            ("1", "2048", "18431", "EF00", "EFI"),
            ("2", "18432", "20479", "EF02", "BIOS"),
            ("3", "20480", "36863", "8300", "BOOT"),
            ("4", "36864", "38911", "8300", "META"),
            // The rest up to 63 MiB: the backup GPT takes the disk's last 33 sectors.
            ("5", "38912", "129023", "8300", "IMAGECACHE"),
        ],
        "{table}"
    );

    for part in plan.partitions() {
        let info = run("sgdisk", &["-i", &part.number.to_string()], &image);
        let type_code = field(&info, "Partition GUID code");
        assert!(
            type_code.starts_with(&part.type_guid.to_string().to_uppercase()),
            "{info}"
        );
        assert_eq!(
            field(&info, "Partition unique GUID"),
            Guid::from_label(&part.name).to_string().to_uppercase()
        );
        assert!(
            field(&info, "First sector").starts_with(&format!("{} ", part.first_lba)),
            "{info}"
        );
        assert!(
            field(&info, "Last sector").starts_with(&format!("{} ", part.last_lba)),
            "{info}"
        );
        let attributes = if part.name == metal::BIOS { 4 } else { 0 };
        assert_eq!(
            field(&info, "Attribute flags"),
            format!("{attributes:016X}"),
            "{info}"
        );
        assert_eq!(field(&info, "Partition name"), format!("'{}'", part.name));
    }
    // Upstream's own test vectors, through sgdisk's eyes.
    let efi = run("sgdisk", &["-i", "1"], &image);
    assert_eq!(
        field(&efi, "Partition unique GUID"),
        "BCA5174B-0118-8A6A-AF0B-2C6E1585ACAE"
    );
}

#[test]
fn blkid_sees_the_disk_guid() {
    require_tool("blkid", "util-linux");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    write(&small_metal(), &image, None);
    let probe = run("blkid", &["-p", "-o", "export"], &image);
    assert!(probe.contains("PTTYPE=gpt"), "{probe}");
    assert!(
        probe.contains(&format!("PTUUID={}", Guid::from_label(metal::DISK_LABEL))),
        "{probe}"
    );
}

#[test]
fn images_are_reproducible_and_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.raw"), dir.path().join("b.raw"));
    let plan = small_metal();
    write(&plan, &a, Some(&stand_in_grub()));
    // Over an older, bigger image full of data: write_frame starts from holes.
    std::fs::write(&b, vec![0xEEu8; 70 << 20]).unwrap();
    write(&plan, &b, Some(&stand_in_grub()));
    let (bytes_a, bytes_b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(bytes_a.len() as u64, 64 * MIB);
    assert!(bytes_a == bytes_b, "two writes of one plan differ");
    // The MBR, the two tables and the 20 KiB core image are all that is written.
    let allocated = std::fs::metadata(&a).unwrap().blocks() * 512;
    assert!(allocated <= 256 << 10, "{allocated} bytes allocated");
    // The core image sits at the start of BIOS; the stand-in MBR code came in, the table stayed.
    let bios = plan.partition(metal::BIOS).unwrap().offset() as usize;
    assert_eq!(bytes_a[bios..bios + 0x1E8], [0xC0; 0x1E8]);
    assert_eq!(bytes_a[0x5A], 0xB0);
    assert_eq!(bytes_a[0x1C2], 0xEE);
}

#[test]
fn disks_over_2_tib_are_clean_too() {
    require_tool("sgdisk", "gdisk");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("big.raw");
    let plan = DiskSpec::new(vec![
        PartitionSpec::new(metal::EFI, EFI_SYSTEM, PartitionSize::Bytes(8 * MIB)),
        PartitionSpec::new(metal::IMAGECACHE, LINUX_FILESYSTEM, PartitionSize::Rest),
    ])
    .with_size(DiskSize::Exact(3 << 40))
    .plan()
    .unwrap();
    write(&plan, &image, None);
    let verify = run("sgdisk", &["-v"], &image);
    assert!(verify.contains("No problems found."), "{verify}");
    let info = run("sgdisk", &["-i", "2"], &image);
    // The last whole MiB before the backup GPT.
    let last = (3u64 << 40) / 512 - 2048 - 1;
    assert!(
        field(&info, "Last sector").starts_with(&format!("{last} ")),
        "{info}"
    );
}
