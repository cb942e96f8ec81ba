//! GPT raw disk images: the partition plan, the protective MBR and both GPT copies, and GRUB's
//! BIOS boot code, all as bytes computed by pure functions; one I/O step writes them into a
//! sparse file.
//!
//! ```no_run
//! use imager_disk::{GrubBios, metal};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let plan = metal::MetalSizes::upstream(Some(metal::imagecache_size(5 << 30)))
//!     .disk_spec()
//!     .plan()?;
//! let grub = GrubBios::from_files("_assets/grub/boot.img".as_ref(), "_assets/grub/core.img".as_ref())?;
//! let file = std::fs::File::create("disk.raw")?;
//! // First: the whole image as holes, then the tables, the MBR code and the core image.
//! plan.write_frame(&file, Some(&grub))?;
//! // Then each file system into its partition's byte range.
//! let boot = plan.partition(metal::BOOT).unwrap().range();
//! # let _ = boot;
//! # Ok(()) }
//! ```
//!
//! Reproducible by construction: no clock, no randomness; every GUID comes from a label
//! ([`Guid::from_label`], as upstream Talos does).

mod crc32;
mod gpt;
pub mod grub;
mod guid;
pub mod metal;
pub mod read;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

pub use gpt::{
    ALIGNMENT, DiskPlan, DiskSize, DiskSpec, MAX_NAME_UNITS, MAX_PARTITIONS, MIB, PartitionSize,
    PartitionSpec, PlannedPartition,
};
pub use grub::GrubBios;
pub use guid::Guid;
use guid::guid;

/// The EFI System partition type.
pub const EFI_SYSTEM: Guid = guid!("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
/// The BIOS boot partition type: where GRUB for BIOS keeps its core image on GPT disks.
pub const BIOS_BOOT: Guid = guid!("21686148-6449-6E6F-744E-656564454649");
/// The Linux filesystem data type; upstream gives it to BOOT, META and IMAGECACHE.
pub const LINUX_FILESYSTEM: Guid = guid!("0FC63DAF-8483-4772-8E79-3D69D8477DE4");

/// GPT attribute bit 2, "legacy BIOS bootable": upstream sets it on the BIOS boot partition.
pub const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// Why a disk image could not be planned or written.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("sector size {0} is not supported: 512 or 4096")]
    SectorSize(u32),
    #[error("{0} partitions do not fit the GPT entry array (at most 128)")]
    TooManyPartitions(usize),
    #[error("invalid partition name {name:?}: {reason}")]
    PartitionName { name: String, reason: &'static str },
    #[error("two partitions are named {0:?}; names must be unique (each names its GUID)")]
    DuplicateName(String),
    #[error(
        "partition {name}: size {size} is not a positive multiple of the sector size {sector_size}"
    )]
    PartitionSize {
        name: String,
        size: u64,
        sector_size: u32,
    },
    #[error("partition {0} takes the rest of the disk, so it must be the last one")]
    RestNotLast(String),
    #[error("partition {0} takes the rest of the disk, so the disk size must be given")]
    RestNeedsDiskSize(String),
    #[error("disk size {size} is not a multiple of the sector size {sector_size}")]
    DiskSize { size: u64, sector_size: u32 },
    #[error("a disk of {size} bytes is too small for these partitions: it needs {needed} bytes")]
    DiskTooSmall { size: u64, needed: u64 },
    #[error("the partitions add up to more bytes than a disk image can have")]
    DiskTooBig,
    #[error("GRUB boot.img: {reason}")]
    GrubBootImage { reason: String },
    #[error("GRUB core image: {reason}")]
    GrubCoreImage { reason: String },
    #[error("{}", path.display())]
    GrubFile {
        path: PathBuf,
        #[source]
        source: Box<DiskError>,
    },
    #[error("GRUB for BIOS needs 512-byte sectors, the disk has {0}")]
    GrubSectorSize(u32),
    #[error("the disk has {0} BIOS boot partitions; GRUB needs exactly one")]
    BiosPartitions(usize),
    #[error(
        "GRUB's core image ({core} bytes) does not fit the BIOS boot partition {name} ({room} bytes)"
    )]
    CoreTooBig { name: String, core: u64, room: u64 },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the {what}")]
    Write {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl DiskPlan {
    /// The one BIOS boot partition, where GRUB's core image goes.
    pub fn bios_boot_partition(&self) -> Result<&PlannedPartition, DiskError> {
        let found: Vec<_> = self
            .partitions()
            .iter()
            .filter(|p| p.type_guid == BIOS_BOOT)
            .collect();
        match found[..] {
            [part] => Ok(part),
            _ => Err(DiskError::BiosPartitions(found.len())),
        }
    }

    /// The start of the disk up to the first usable LBA, with GRUB's boot code in the MBR when
    /// `grub` is given (the core image then goes at the start of the BIOS boot partition), and
    /// the core image itself with where it goes. Pure; [`DiskPlan::write_frame`] writes these.
    pub fn boot_area(&self, grub: Option<&GrubBios>) -> Result<BootArea, DiskError> {
        let mut primary = self.primary_table();
        let core = match grub {
            None => None,
            Some(grub) => {
                if self.sector_size() != grub::SECTOR as u32 {
                    return Err(DiskError::GrubSectorSize(self.sector_size()));
                }
                let bios = self.bios_boot_partition()?;
                if grub.core_len() > bios.len() {
                    return Err(DiskError::CoreTooBig {
                        name: bios.name.clone(),
                        core: grub.core_len(),
                        room: bios.len(),
                    });
                }
                let mut sector0 = [0u8; grub::SECTOR];
                sector0.copy_from_slice(&primary[..grub::SECTOR]);
                primary[..grub::SECTOR].copy_from_slice(&grub.mbr(&sector0, bios.first_lba));
                Some((bios.offset(), grub.core(bios.first_lba)))
            }
        };
        Ok(BootArea { primary, core })
    }

    /// Makes `file` (a regular file) this disk with nothing in its partitions: `size` bytes of holes, the
    /// protective MBR (with GRUB's boot code if `grub` is given), both GPTs and the GRUB core
    /// image. Anything `file` held before is dropped, so call this first and write the file
    /// systems into their partitions' ranges afterwards. What is not written stays a hole
    /// (reads as zeros: META needs nothing).
    pub fn write_frame(&self, file: &File, grub: Option<&GrubBios>) -> Result<(), DiskError> {
        let area = self.boot_area(grub)?;
        let (backup_at, backup) = self.backup_table();
        let write = |what, source| DiskError::Write { what, source };
        file.set_len(0)
            .and_then(|()| file.set_len(self.size()))
            .map_err(|e| write("disk image (setting its size)", e))?;
        file.write_all_at(&area.primary, 0)
            .map_err(|e| write("protective MBR and primary GPT", e))?;
        file.write_all_at(&backup, backup_at)
            .map_err(|e| write("backup GPT", e))?;
        if let Some((offset, core)) = &area.core {
            file.write_all_at(core, *offset)
                .map_err(|e| write("GRUB core image", e))?;
        }
        Ok(())
    }
}

/// The bytes [`DiskPlan::write_frame`] writes at the start of the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArea {
    /// LBA 0 up to the first usable LBA: (boot code +) protective MBR, primary header, entries.
    /// Goes at offset 0.
    pub primary: Vec<u8>,
    /// GRUB's patched core image and its byte offset (the BIOS boot partition's start).
    pub core: Option<(u64, Vec<u8>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grub(core_sectors: usize) -> GrubBios {
        let mut boot = vec![0xB0u8; 512];
        boot[510..].copy_from_slice(&[0x55, 0xAA]);
        let mut core = vec![0xC0u8; core_sectors * 512];
        core[0x1E8..0x200].fill(0);
        core[0x1FC..0x1FE].copy_from_slice(&(core_sectors as u16 - 1).to_le_bytes());
        core[0x1FE..0x200].copy_from_slice(&0x0820u16.to_le_bytes());
        GrubBios::new(&boot, &core).unwrap()
    }

    fn disk(bios_partitions: usize, bios_size: u64) -> DiskSpec {
        let mut parts = vec![PartitionSpec::new(
            "EFI",
            EFI_SYSTEM,
            PartitionSize::Bytes(MIB),
        )];
        for i in 0..bios_partitions {
            parts.push(PartitionSpec::new(
                format!("BIOS{i}"),
                BIOS_BOOT,
                PartitionSize::Bytes(bios_size),
            ));
        }
        DiskSpec::new(parts)
    }

    #[test]
    fn boot_area_puts_grub_in_the_mbr_and_the_core_at_the_bios_partition() {
        let plan = disk(1, MIB).plan().unwrap();
        let plain = plan.boot_area(None).unwrap();
        assert_eq!(plain.primary, plan.primary_table());
        assert_eq!(plain.core, None);

        let area = plan.boot_area(Some(&grub(3))).unwrap();
        let (offset, core) = area.core.unwrap();
        assert_eq!(offset, 2 * MIB);
        // The core's LBA in the MBR, the next sector in the core's blocklist.
        assert_eq!(area.primary[0x5C..0x64], 4096u64.to_le_bytes());
        assert_eq!(core[0x1F4..0x1FC], 4097u64.to_le_bytes());
        assert_eq!(area.primary[..0x03], [0xB0; 3]);
        // Everything from the disk signature on is the plain protective MBR and GPT.
        assert_eq!(area.primary[0x1B8..], plain.primary[0x1B8..]);
    }

    #[test]
    fn grub_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (boot, core) = (dir.path().join("boot.img"), dir.path().join("core.img"));
        let missing = GrubBios::from_files(&boot, &core).unwrap_err();
        assert!(matches!(&missing, DiskError::Read { path, .. } if *path == boot));
        std::fs::write(&boot, [0u8; 100]).unwrap();
        std::fs::write(&core, [0u8; 2048]).unwrap();
        let bad = GrubBios::from_files(&boot, &core).unwrap_err();
        assert!(
            matches!(&bad, DiskError::GrubFile { path, .. } if *path == boot),
            "{bad:?}"
        );
        let mut good_boot = vec![0u8; 512];
        good_boot[510..].copy_from_slice(&[0x55, 0xAA]);
        std::fs::write(&boot, good_boot).unwrap();
        let bad = GrubBios::from_files(&boot, &core).unwrap_err();
        assert!(
            matches!(&bad, DiskError::GrubFile { path, .. } if *path == core),
            "{bad:?}"
        );
        assert!(
            std::error::Error::source(&bad)
                .unwrap()
                .to_string()
                .contains("diskboot.img")
        );
    }

    #[test]
    fn grub_needs_one_bios_partition_that_holds_the_core_and_512_byte_sectors() {
        let grub = grub(3);
        for count in [0, 2] {
            assert!(matches!(
                disk(count, MIB).plan().unwrap().boot_area(Some(&grub)),
                Err(DiskError::BiosPartitions(n)) if n == count
            ));
        }
        assert!(matches!(
            disk(1, 1024).plan().unwrap().boot_area(Some(&grub)),
            Err(DiskError::CoreTooBig {
                core: 1536,
                room: 1024,
                ..
            })
        ));
        assert!(disk(1, 1536).plan().unwrap().boot_area(Some(&grub)).is_ok());
        assert!(matches!(
            disk(1, MIB)
                .with_sector_size(4096)
                .plan()
                .unwrap()
                .boot_area(Some(&grub)),
            Err(DiskError::GrubSectorSize(4096))
        ));
    }
}
