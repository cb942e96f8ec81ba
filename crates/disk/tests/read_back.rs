//! The GPT reader against tables `sgdisk` wrote, and against our own writer's.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::Command;

use imager_disk::read::{GptError, read_partitions};
use imager_disk::{BIOS_BOOT, metal};

#[test]
fn partitions_sgdisk_wrote_are_found_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk.raw");
    File::create(&disk).unwrap().set_len(64 << 20).unwrap();
    let out = Command::new("sgdisk")
        .args(["-n", "1:0:+8M", "-t", "1:EF00", "-c", "1:EFI"])
        .args(["-n", "2:0:+1M", "-t", "2:EF02", "-c", "2:BIOS"])
        .args(["-n", "3:0:0", "-t", "3:8300", "-c", "3:IMAGECACHE"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = File::open(&disk).unwrap();
    let parts = read_partitions(&f, &disk).unwrap().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["EFI", "BIOS", "IMAGECACHE"]);
    assert_eq!((parts[0].offset, parts[0].len), (1 << 20, 8 << 20));
    assert_eq!(parts[2].number, 3);
    assert_eq!(parts[1].type_guid, BIOS_BOOT);
    // sgdisk leaves the last 33 sectors for the backup table.
    assert_eq!(parts[2].offset + parts[2].len, (64 << 20) - 33 * 512);

    // A flipped byte in the entries is caught by their checksum.
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(b"X", 1024 + 56).unwrap();
    let f = File::open(&disk).unwrap();
    let err = read_partitions(&f, &disk).unwrap_err();
    assert!(matches!(err, GptError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");

    // No GPT at all.
    let plain = tmp.path().join("plain");
    std::fs::write(&plain, vec![0u8; 8192]).unwrap();
    assert!(
        read_partitions(&File::open(&plain).unwrap(), &plain)
            .unwrap()
            .is_none()
    );
}

#[test]
fn our_metal_plan_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("metal.raw");
    let plan = metal::MetalSizes::upstream(Some(metal::imagecache_size(10 << 20)))
        .disk_spec()
        .plan()
        .unwrap();
    let f = File::create(&disk).unwrap();
    plan.write_frame(&f, None).unwrap();
    let f = File::open(&disk).unwrap();
    let parts = read_partitions(&f, &disk).unwrap().unwrap();
    assert_eq!(parts.len(), plan.partitions().len());
    for (read, planned) in parts.iter().zip(plan.partitions()) {
        assert_eq!(read.number, planned.number);
        assert_eq!((read.offset, read.len), (planned.offset(), planned.len()));
    }
    let cache = parts.iter().find(|p| p.name == metal::IMAGECACHE).unwrap();
    assert_eq!(cache.len, metal::imagecache_size(10 << 20));
}
