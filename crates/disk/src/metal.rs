//! Upstream Talos's metal disk image layout (`imager metal`, amd64, dual boot: the default since
//! Talos 1.10), with upstream's names and sizes. Read from siderolabs/talos:
//! `pkg/machinery/imager/quirks/partitions.go` and `quirks.go` (sizes),
//! `internal/app/machined/pkg/runtime/v1alpha1/bootloader/dual/dual.go` (EFI, BIOS, BOOT),
//! `cmd/installer/pkg/install/install.go` (META, IMAGECACHE, GUIDs), `internal/pkg/partition`
//! (types, attributes), `pkg/imager/profile/{default,output}.go` and `pkg/imager/out.go` (disk
//! size, cache partition size).

use crate::gpt::{DiskSize, DiskSpec, MIB, PartitionSize, PartitionSpec};
use crate::{BIOS_BOOT, EFI_SYSTEM, LEGACY_BIOS_BOOTABLE, LINUX_FILESYSTEM};

/// The label upstream derives its images' disk GUID from (`diskImageLabel`).
pub const DISK_LABEL: &str = "talos-image-disk";

/// Partition names (`constants.*PartitionLabel`).
pub const EFI: &str = "EFI";
/// The BIOS boot partition: GRUB's core image.
pub const BIOS: &str = "BIOS";
/// What GRUB reads on BIOS machines: `grub/grub.cfg`, kernel and initramfs.
pub const BOOT: &str = "BOOT";
/// Talos's key-value store, zeroed.
pub const META: &str = "META";
/// The image cache, ext4; a node finds it by this name.
pub const IMAGECACHE: &str = "IMAGECACHE";

/// EFI in a dual-boot image: `UKIEFISize()` = `GrubEFISize()` 100 MiB + `GrubBIOSSize()` 1 MiB +
/// `GrubBootSize()` 2000 MiB (`dual.go` asks for the UKI size).
pub const EFI_SIZE: u64 = 2101 * MIB;
/// `GrubBIOSSize()`.
pub const BIOS_SIZE: u64 = MIB;
/// `GrubBootSize()` for Talos 1.11 and later (1000 MiB before).
pub const BOOT_SIZE: u64 = 2000 * MIB;
/// `METASize()`.
pub const META_SIZE: u64 = MIB;
/// The disk before the cache: `MinRAWDiskSize` 1246 MiB, + 1000 MiB for the bigger BOOT
/// (`FillDefaults`: `GrubBootSize() - 1000 MiB`), + BIOS and BOOT for dual boot. The image cache
/// partition adds its own size on top (`out.go`); what the partitions leave is free space at the
/// end of the disk.
pub const DISK_SIZE: u64 = 1246 * MIB + (BOOT_SIZE - 1000 * MIB) + BIOS_SIZE + BOOT_SIZE;

/// The disk before the cache when systemd-boot alone boots it (upstream's `sd-boot` bootloader,
/// the one arm64 images get): `MinRAWDiskSize` + the bigger BOOT's 1000 MiB, as above, without
/// the BIOS and BOOT partitions (`FillDefaults` adds those for dual boot only).
pub const SDBOOT_DISK_SIZE: u64 = 1246 * MIB + (BOOT_SIZE - 1000 * MIB);

/// BOOT is partition 3: the GRUB core image made by `cargo xtask assets` reads `grub.cfg` from
/// `(,gpt3)/grub` (upstream's prefix is `(hd0,gpt3)/grub`).
pub const BOOT_PARTITION_NUMBER: u32 = 3;

/// The IMAGECACHE partition for a cache of `cache_bytes` (the sum of its file sizes): + 20 %
/// (integer arithmetic, as upstream's `calculateDirectorySizeWithOverhead`), rounded up to 1 MiB.
pub fn imagecache_size(cache_bytes: u64) -> u64 {
    let with_overhead = cache_bytes.saturating_add(cache_bytes / 5);
    with_overhead.div_ceil(MIB).saturating_mul(MIB)
}

/// The sizes of a metal image; [`MetalSizes::upstream`] gives upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetalSizes {
    /// The EFI system partition.
    pub efi: u64,
    /// The BOOT partition.
    pub boot: u64,
    /// The IMAGECACHE partition, if there is a cache (see [`imagecache_size`]).
    pub imagecache: Option<u64>,
    /// The whole disk.
    pub disk: DiskSize,
    /// Whether BIOS machines boot it too (GRUB's BIOS and BOOT partitions after EFI, upstream's
    /// `dual-boot`); without, EFI is followed by META (upstream's `sd-boot`, as on arm64).
    pub dual_boot: bool,
}

impl MetalSizes {
    /// Upstream's: EFI 2101 MiB, BOOT 2000 MiB, a disk of [`DISK_SIZE`] + the cache partition.
    pub fn upstream(imagecache: Option<u64>) -> Self {
        Self {
            efi: EFI_SIZE,
            boot: BOOT_SIZE,
            imagecache,
            disk: DiskSize::Exact(DISK_SIZE + imagecache.unwrap_or(0)),
            dual_boot: true,
        }
    }

    /// Upstream's sd-boot layout (arm64): EFI 2101 MiB (`UKIEFISize()`: all boot files live
    /// there), META, and the cache; a disk of [`SDBOOT_DISK_SIZE`] + the cache partition.
    pub fn upstream_sdboot(imagecache: Option<u64>) -> Self {
        Self {
            efi: EFI_SIZE,
            boot: 0,
            imagecache,
            disk: DiskSize::Exact(SDBOOT_DISK_SIZE + imagecache.unwrap_or(0)),
            dual_boot: false,
        }
    }

    /// EFI, BIOS, BOOT, META and, with a cache, IMAGECACHE, in that order; the disk GUID from
    /// [`DISK_LABEL`], every partition GUID from its name, the protective MBR inactive (as
    /// upstream: docs/decisions.md).
    pub fn disk_spec(&self) -> DiskSpec {
        let mut partitions = vec![PartitionSpec::new(
            EFI,
            EFI_SYSTEM,
            PartitionSize::Bytes(self.efi),
        )];
        if self.dual_boot {
            partitions.extend([
                PartitionSpec::new(BIOS, BIOS_BOOT, PartitionSize::Bytes(BIOS_SIZE))
                    .with_attributes(LEGACY_BIOS_BOOTABLE),
                PartitionSpec::new(BOOT, LINUX_FILESYSTEM, PartitionSize::Bytes(self.boot)),
            ]);
        }
        partitions.push(PartitionSpec::new(
            META,
            LINUX_FILESYSTEM,
            PartitionSize::Bytes(META_SIZE),
        ));
        if let Some(size) = self.imagecache {
            partitions.push(PartitionSpec::new(
                IMAGECACHE,
                LINUX_FILESYSTEM,
                PartitionSize::Bytes(size),
            ));
        }
        DiskSpec::new(partitions).with_size(self.disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_layout() {
        let cache = imagecache_size(10 * MIB);
        assert_eq!(cache, 12 * MIB);
        let plan = MetalSizes::upstream(Some(cache))
            .disk_spec()
            .plan()
            .unwrap();
        assert_eq!(DISK_SIZE, 4247 * MIB);
        assert_eq!(plan.size(), 4259 * MIB);
        let got: Vec<_> = plan
            .partitions()
            .iter()
            .map(|p| (p.number, p.name.as_str(), p.offset() / MIB, p.len() / MIB))
            .collect();
        assert_eq!(
            got,
            [
                (1, EFI, 1, 2101),
                (2, BIOS, 2102, 1),
                (BOOT_PARTITION_NUMBER, BOOT, 2103, 2000),
                (4, META, 4103, 1),
                (5, IMAGECACHE, 4104, 12),
            ]
        );
        assert_eq!(plan.partition(BIOS).unwrap().attributes, 1 << 2);
        assert_eq!(
            plan.disk_guid(),
            crate::Guid::from_label("talos-image-disk")
        );
        assert_eq!(
            MetalSizes::upstream(None)
                .disk_spec()
                .plan()
                .unwrap()
                .partitions()
                .len(),
            4
        );
    }

    #[test]
    fn upstream_sdboot_layout() {
        let plan = MetalSizes::upstream_sdboot(Some(12 * MIB))
            .disk_spec()
            .plan()
            .unwrap();
        assert_eq!(SDBOOT_DISK_SIZE, 2246 * MIB);
        assert_eq!(plan.size(), 2258 * MIB);
        let got: Vec<_> = plan
            .partitions()
            .iter()
            .map(|p| (p.number, p.name.as_str(), p.offset() / MIB, p.len() / MIB))
            .collect();
        assert_eq!(
            got,
            [
                (1, EFI, 1, 2101),
                (2, META, 2102, 1),
                (3, IMAGECACHE, 2103, 12)
            ]
        );
    }

    #[test]
    fn cache_partition_size() {
        assert_eq!(imagecache_size(0), 0);
        assert_eq!(imagecache_size(1), MIB);
        // 5 MiB + 20 % is exactly 6 MiB; one byte more rounds up.
        assert_eq!(imagecache_size(5 * MIB), 6 * MIB);
        assert_eq!(imagecache_size(5 * MIB + 5), 7 * MIB);
    }
}
