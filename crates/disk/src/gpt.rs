//! The partition plan and the GPT structures, as bytes (UEFI spec 2.10, chapter 5).
//!
//! On disk, for `n` logical blocks (LBAs) of `s` bytes (512 or 4096):
//!
//! ```text
//! LBA 0              protective MBR: one partition of type 0xEE covering LBA 1.. (at most 2^32-1)
//! LBA 1              primary GPT header (92 bytes, rest of the block zero)
//! LBA 2 ..           partition entry array: 128 entries x 128 bytes = 16 KiB (32 or 4 blocks)
//! first usable LBA   = 2 + entry blocks; partitions start on 1 MiB boundaries from here on
//! ...
//! n-1-entry blocks   backup entry array (the same bytes as the primary one)
//! n-1                backup GPT header (my/alternate LBA swapped, entries LBA pointing just above)
//! ```
//!
//! Every header carries the CRC-32 of the whole entry array (all 128 slots, unused ones zero) and
//! the CRC-32 of its own 92 bytes computed with the header CRC field zeroed.

use std::ops::Range;

use crate::crc32::crc32;
use crate::{DiskError, Guid};

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// Partitions start on this boundary, and a [`PartitionSize::Rest`] partition also ends on one:
/// what sgdisk, parted and upstream's go-blockdevice do (their `2048 * 512`), right for 512-byte
/// and 4 KiB sectors and for the erase blocks of flash media.
pub const ALIGNMENT: u64 = MIB;

/// The entry array has room for this many partitions, as every common tool writes it; fewer
/// would make some readers (older Windows) refuse the table.
pub const MAX_PARTITIONS: usize = 128;

/// A partition name holds at most this many UTF-16 code units (72 bytes).
pub const MAX_NAME_UNITS: usize = 36;

const ENTRY_SIZE: usize = 128;
const ENTRIES_BYTES: usize = MAX_PARTITIONS * ENTRY_SIZE;
const HEADER_SIZE: usize = 92;
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Revision 1.0, the only one defined.
const REVISION: u32 = 0x0001_0000;

/// How big a partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionSize {
    /// Exactly this many bytes, a whole number of sectors.
    Bytes(u64),
    /// From its start up to the last 1 MiB boundary before the backup GPT. Only the last
    /// partition, and only on a disk of an [`DiskSize::Exact`] size.
    Rest,
}

/// One partition to lay out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// The GPT partition name (`PARTLABEL` to Linux); its unique GUID is derived from it.
    pub name: String,
    /// The partition type GUID, e.g. [`crate::EFI_SYSTEM`].
    pub type_guid: Guid,
    /// The 64 attribute bits, e.g. [`crate::LEGACY_BIOS_BOOTABLE`].
    pub attributes: u64,
    /// Its size.
    pub size: PartitionSize,
}

impl PartitionSpec {
    /// A partition without attributes.
    pub fn new(name: impl Into<String>, type_guid: Guid, size: PartitionSize) -> Self {
        Self {
            name: name.into(),
            type_guid,
            attributes: 0,
            size,
        }
    }

    /// Sets the attribute bits.
    pub fn with_attributes(mut self, attributes: u64) -> Self {
        self.attributes = attributes;
        self
    }
}

/// How big the disk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSize {
    /// Exactly this many bytes, a whole number of sectors.
    Exact(u64),
    /// The partitions, then the backup GPT, rounded up to 1 MiB.
    Fit,
}

/// A disk to lay out: partitions in order, one after the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The disk's size.
    pub size: DiskSize,
    /// The logical sector size: 512 or 4096.
    pub sector_size: u32,
    /// The disk GUID.
    pub disk_guid: Guid,
    /// Whether the protective MBR's partition is marked active (boot indicator 0x80). See
    /// docs/decisions.md: off by default, as upstream and the UEFI spec have it.
    pub pmbr_bootable: bool,
    /// The partitions, numbered from 1 in this order.
    pub partitions: Vec<PartitionSpec>,
}

impl DiskSpec {
    /// A disk of 512-byte sectors that fits `partitions`, with the disk GUID upstream gives its
    /// images ([`crate::metal::DISK_LABEL`]) and an inactive protective MBR.
    pub fn new(partitions: Vec<PartitionSpec>) -> Self {
        Self {
            size: DiskSize::Fit,
            sector_size: 512,
            disk_guid: Guid::from_label(crate::metal::DISK_LABEL),
            pmbr_bootable: false,
            partitions,
        }
    }

    /// Sets the disk size.
    pub fn with_size(mut self, size: DiskSize) -> Self {
        self.size = size;
        self
    }

    /// Sets the sector size.
    pub fn with_sector_size(mut self, sector_size: u32) -> Self {
        self.sector_size = sector_size;
        self
    }

    /// Sets the disk GUID.
    pub fn with_disk_guid(mut self, guid: Guid) -> Self {
        self.disk_guid = guid;
        self
    }

    /// Marks the protective MBR partition active.
    pub fn with_pmbr_bootable(mut self, bootable: bool) -> Self {
        self.pmbr_bootable = bootable;
        self
    }

    /// Lays the partitions out: each starts on the first 1 MiB boundary after the previous one.
    /// Pure: nothing is read or written.
    pub fn plan(&self) -> Result<DiskPlan, DiskError> {
        let ss = u64::from(self.sector_size);
        if ss != 512 && ss != 4096 {
            return Err(DiskError::SectorSize(self.sector_size));
        }
        if self.partitions.len() > MAX_PARTITIONS {
            return Err(DiskError::TooManyPartitions(self.partitions.len()));
        }
        let entry_blocks = ENTRIES_BYTES as u64 / ss;
        let first_usable = 2 + entry_blocks;
        let align = ALIGNMENT / ss;

        let mut names: Vec<&str> = Vec::new();
        for (i, part) in self.partitions.iter().enumerate() {
            check_name(&part.name)?;
            if names.contains(&part.name.as_str()) {
                return Err(DiskError::DuplicateName(part.name.clone()));
            }
            names.push(&part.name);
            match part.size {
                PartitionSize::Bytes(bytes) if bytes == 0 || bytes % ss != 0 => {
                    return Err(DiskError::PartitionSize {
                        name: part.name.clone(),
                        size: bytes,
                        sector_size: self.sector_size,
                    });
                }
                PartitionSize::Rest if i + 1 != self.partitions.len() => {
                    return Err(DiskError::RestNotLast(part.name.clone()));
                }
                PartitionSize::Rest if self.size == DiskSize::Fit => {
                    return Err(DiskError::RestNeedsDiskSize(part.name.clone()));
                }
                _ => {}
            }
        }

        // Starts and ends of the fixed-size partitions; a Rest partition is counted at its
        // smallest (one alignment unit) to say how big a disk must be.
        let mut bounds = Vec::with_capacity(self.partitions.len());
        let mut next = first_usable;
        for part in &self.partitions {
            let start = next.div_ceil(align) * align;
            let blocks = match part.size {
                PartitionSize::Bytes(bytes) => bytes / ss,
                PartitionSize::Rest => align,
            };
            let end = start.checked_add(blocks - 1).ok_or(DiskError::DiskTooBig)?;
            bounds.push((start, end));
            next = end + 1;
        }
        // The backup array and header follow the last partition.
        let needed_blocks = next
            .checked_add(entry_blocks + 1)
            .ok_or(DiskError::DiskTooBig)?;
        let needed = needed_blocks
            .checked_mul(ss)
            .and_then(|bytes| bytes.checked_next_multiple_of(MIB))
            .ok_or(DiskError::DiskTooBig)?;

        let size = match self.size {
            DiskSize::Fit => needed,
            DiskSize::Exact(size) => {
                if size % ss != 0 {
                    return Err(DiskError::DiskSize {
                        size,
                        sector_size: self.sector_size,
                    });
                }
                if size / ss < needed_blocks {
                    return Err(DiskError::DiskTooSmall { size, needed });
                }
                size
            }
        };
        let blocks = size / ss;
        let last_usable = blocks - entry_blocks - 2;
        if let (Some(last), Some(bound)) = (self.partitions.last(), bounds.last_mut())
            && last.size == PartitionSize::Rest
        {
            // The checks above leave at least one alignment unit for it.
            bound.1 = (last_usable + 1) / align * align - 1;
        }

        let partitions = self
            .partitions
            .iter()
            .zip(bounds)
            .zip(1..)
            .map(|((part, (first_lba, last_lba)), number)| PlannedPartition {
                number,
                name: part.name.clone(),
                type_guid: part.type_guid,
                unique_guid: Guid::from_label(&part.name),
                attributes: part.attributes,
                first_lba,
                last_lba,
                sector_size: self.sector_size,
            })
            .collect();
        Ok(DiskPlan {
            size,
            sector_size: self.sector_size,
            disk_guid: self.disk_guid,
            pmbr_bootable: self.pmbr_bootable,
            first_usable_lba: first_usable,
            last_usable_lba: last_usable,
            partitions,
        })
    }
}

fn check_name(name: &str) -> Result<(), DiskError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.encode_utf16().count() > MAX_NAME_UNITS {
        "it is longer than 36 UTF-16 code units"
    } else if name.contains('\0') {
        "it contains a NUL character"
    } else {
        return Ok(());
    };
    Err(DiskError::PartitionName {
        name: name.to_owned(),
        reason,
    })
}

/// A partition as laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPartition {
    /// Its number, from 1 (`sda1`, GRUB's `gpt1`).
    pub number: u32,
    /// The partition name.
    pub name: String,
    /// The partition type GUID.
    pub type_guid: Guid,
    /// The unique partition GUID: [`Guid::from_label`] of the name, as upstream.
    pub unique_guid: Guid,
    /// The attribute bits.
    pub attributes: u64,
    /// The first sector.
    pub first_lba: u64,
    /// The last sector (inclusive, as GPT stores it).
    pub last_lba: u64,
    sector_size: u32,
}

impl PlannedPartition {
    /// The byte offset of its first sector.
    pub fn offset(&self) -> u64 {
        self.first_lba * u64::from(self.sector_size)
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * u64::from(self.sector_size)
    }

    /// Never: a partition has at least one sector. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Its bytes in the image: where a file system is written.
    pub fn range(&self) -> Range<u64> {
        self.offset()..self.offset() + self.len()
    }
}

/// A disk as laid out: where every partition lies, and the bytes of the partition tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    size: u64,
    sector_size: u32,
    disk_guid: Guid,
    pmbr_bootable: bool,
    first_usable_lba: u64,
    last_usable_lba: u64,
    partitions: Vec<PlannedPartition>,
}

impl DiskPlan {
    /// The image size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The logical sector size.
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// The disk GUID.
    pub fn disk_guid(&self) -> Guid {
        self.disk_guid
    }

    /// The first and last LBA that partitions may use.
    pub fn usable_lbas(&self) -> (u64, u64) {
        (self.first_usable_lba, self.last_usable_lba)
    }

    /// The partitions in order.
    pub fn partitions(&self) -> &[PlannedPartition] {
        &self.partitions
    }

    /// The partition named `name`.
    pub fn partition(&self, name: &str) -> Option<&PlannedPartition> {
        self.partitions.iter().find(|p| p.name == name)
    }

    fn blocks(&self) -> u64 {
        self.size / u64::from(self.sector_size)
    }

    fn entry_blocks(&self) -> u64 {
        ENTRIES_BYTES as u64 / u64::from(self.sector_size)
    }

    /// The protective MBR (LBA 0's first 512 bytes): no boot code, no disk signature, one
    /// partition of type 0xEE from LBA 1 to the end of the disk (capped at 2^32-1 sectors, as
    /// the UEFI spec says for bigger disks).
    pub fn protective_mbr(&self) -> [u8; 512] {
        let mut mbr = [0u8; 512];
        let entry = &mut mbr[446..462];
        entry[0] = if self.pmbr_bootable { 0x80 } else { 0x00 };
        // CHS of LBA 1 (cylinder 0, head 0, sector 2), and the "beyond CHS" end everyone writes.
        entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        entry[4] = 0xEE;
        entry[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        entry[8..12].copy_from_slice(&1u32.to_le_bytes());
        let len = u32::try_from(self.blocks() - 1).unwrap_or(u32::MAX);
        entry[12..16].copy_from_slice(&len.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        mbr
    }

    /// The partition entry array: 128 entries of 128 bytes, unused ones zero.
    pub fn entry_array(&self) -> Vec<u8> {
        let mut array = vec![0u8; ENTRIES_BYTES];
        for (part, entry) in self
            .partitions
            .iter()
            .zip(array.chunks_exact_mut(ENTRY_SIZE))
        {
            entry[0..16].copy_from_slice(&part.type_guid.to_gpt_bytes());
            entry[16..32].copy_from_slice(&part.unique_guid.to_gpt_bytes());
            entry[32..40].copy_from_slice(&part.first_lba.to_le_bytes());
            entry[40..48].copy_from_slice(&part.last_lba.to_le_bytes());
            entry[48..56].copy_from_slice(&part.attributes.to_le_bytes());
            // UTF-16LE, zero-padded; the plan checked that it fits.
            for (unit, slot) in part
                .name
                .encode_utf16()
                .zip(entry[56..128].chunks_exact_mut(2))
            {
                slot.copy_from_slice(&unit.to_le_bytes());
            }
        }
        array
    }

    /// One GPT header in a block of its own. The backup differs from the primary in its own LBA,
    /// the other header's LBA and where its entry array is.
    fn header(&self, backup: bool, entries_crc: u32) -> Vec<u8> {
        let last = self.blocks() - 1;
        let (my_lba, alternate, entries_lba) = if backup {
            (last, 1, last - self.entry_blocks())
        } else {
            (1, last, 2)
        };
        let mut block = vec![0u8; self.sector_size as usize];
        let h = &mut block[..HEADER_SIZE];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        // 16..20: the header's CRC, zero while it is computed; 20..24: reserved, zero.
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable_lba.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable_lba.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_gpt_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(MAX_PARTITIONS as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        block
    }

    /// The start of the disk up to the first usable LBA: protective MBR, primary header, entry
    /// array. Written at offset 0.
    pub fn primary_table(&self) -> Vec<u8> {
        let entries = self.entry_array();
        let ss = self.sector_size as usize;
        let mut out = vec![0u8; self.first_usable_lba as usize * ss];
        out[..512].copy_from_slice(&self.protective_mbr());
        out[ss..2 * ss].copy_from_slice(&self.header(false, crc32(&entries)));
        out[2 * ss..2 * ss + ENTRIES_BYTES].copy_from_slice(&entries);
        out
    }

    /// The end of the disk: the backup entry array then the backup header, and the byte offset
    /// where they go (the last `16 KiB + 1 sector` of the image).
    pub fn backup_table(&self) -> (u64, Vec<u8>) {
        let entries = self.entry_array();
        let mut out = entries.clone();
        out.extend(self.header(true, crc32(&entries)));
        let offset = (self.last_usable_lba + 1) * u64::from(self.sector_size);
        (offset, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BIOS_BOOT, EFI_SYSTEM, LEGACY_BIOS_BOOTABLE, LINUX_FILESYSTEM};

    fn spec(parts: &[(&str, PartitionSize)]) -> DiskSpec {
        DiskSpec::new(
            parts
                .iter()
                .map(|(name, size)| PartitionSpec::new(*name, LINUX_FILESYSTEM, *size))
                .collect(),
        )
    }

    fn le64(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    fn le32(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn partitions_start_on_mib_boundaries_in_order() {
        let plan = spec(&[
            ("A", PartitionSize::Bytes(3 * MIB)),
            ("B", PartitionSize::Bytes(512)),
            ("C", PartitionSize::Bytes(MIB)),
        ])
        .plan()
        .unwrap();
        let got: Vec<_> = plan
            .partitions()
            .iter()
            .map(|p| (p.number, p.first_lba, p.last_lba, p.offset(), p.len()))
            .collect();
        assert_eq!(
            got,
            [
                (1, 2048, 2048 + 6144 - 1, MIB, 3 * MIB),
                (2, 4 * 2048, 4 * 2048, 4 * MIB, 512),
                (3, 5 * 2048, 6 * 2048 - 1, 5 * MIB, MIB),
            ]
        );
        // C ends at 6 MiB; the backup GPT (33 sectors) needs the next MiB.
        assert_eq!(plan.size(), 7 * MIB);
        assert_eq!(plan.usable_lbas(), (34, 7 * 2048 - 34));
        assert_eq!(plan.partition("B").unwrap().range(), 4 * MIB..4 * MIB + 512);
        assert_eq!(plan.partition("D"), None);
    }

    #[test]
    fn rest_ends_on_the_last_mib_boundary_before_the_backup_gpt() {
        let plan = spec(&[("A", PartitionSize::Bytes(MIB)), ("Z", PartitionSize::Rest)])
            .with_size(DiskSize::Exact(64 * MIB))
            .plan()
            .unwrap();
        let z = plan.partition("Z").unwrap();
        assert_eq!(z.range(), 2 * MIB..63 * MIB);
        // An odd size: the backup GPT sits in the last 33 sectors, Z ends on a MiB boundary.
        let plan = spec(&[("Z", PartitionSize::Rest)])
            .with_size(DiskSize::Exact(64 * MIB + 4096))
            .plan()
            .unwrap();
        assert_eq!(plan.partition("Z").unwrap().range(), MIB..63 * MIB);
        assert_eq!(plan.usable_lbas().1, (64 * MIB + 4096) / 512 - 34);
        // Exactly room for the backup GPT after 64 MiB: Z takes it all.
        let plan = spec(&[("Z", PartitionSize::Rest)])
            .with_size(DiskSize::Exact(64 * MIB + 33 * 512))
            .plan()
            .unwrap();
        assert_eq!(plan.partition("Z").unwrap().range(), MIB..64 * MIB);
    }

    #[test]
    fn four_k_sectors() {
        let plan = spec(&[("A", PartitionSize::Bytes(MIB))])
            .with_sector_size(4096)
            .plan()
            .unwrap();
        let a = plan.partition("A").unwrap();
        assert_eq!((a.first_lba, a.last_lba), (256, 511));
        assert_eq!(plan.usable_lbas().0, 6);
        let primary = plan.primary_table();
        assert_eq!(primary.len(), 6 * 4096);
        assert_eq!(&primary[4096..4104], b"EFI PART");
        assert_eq!(le64(&primary, 4096 + 72), 2);
        let (offset, backup) = plan.backup_table();
        assert_eq!(offset + backup.len() as u64, plan.size());
        assert_eq!(backup.len(), 5 * 4096);
    }

    #[test]
    fn bad_specs_are_refused_with_the_cause() {
        let err = |s: DiskSpec| s.plan().unwrap_err().to_string();
        assert!(err(spec(&[("A", PartitionSize::Bytes(1000))])).contains("A"));
        assert!(err(spec(&[("A", PartitionSize::Bytes(0))])).contains("A"));
        assert!(matches!(
            spec(&[("A", PartitionSize::Bytes(MIB)), ("A", PartitionSize::Bytes(MIB))]).plan(),
            Err(DiskError::DuplicateName(name)) if name == "A"
        ));
        assert!(matches!(
            spec(&[("A", PartitionSize::Rest), ("B", PartitionSize::Bytes(MIB))])
                .with_size(DiskSize::Exact(64 * MIB))
                .plan(),
            Err(DiskError::RestNotLast(_))
        ));
        assert!(matches!(
            spec(&[("A", PartitionSize::Rest)]).plan(),
            Err(DiskError::RestNeedsDiskSize(_))
        ));
        assert!(matches!(
            spec(&[("", PartitionSize::Bytes(MIB))]).plan(),
            Err(DiskError::PartitionName { .. })
        ));
        let long = "X".repeat(37);
        assert!(matches!(
            spec(&[(long.as_str(), PartitionSize::Bytes(MIB))]).plan(),
            Err(DiskError::PartitionName { .. })
        ));
        assert!(
            spec(&[(&"X".repeat(36), PartitionSize::Bytes(MIB))])
                .plan()
                .is_ok()
        );
        assert!(matches!(
            spec(&[("A", PartitionSize::Bytes(MIB))])
                .with_sector_size(1024)
                .plan(),
            Err(DiskError::SectorSize(1024))
        ));
        assert!(matches!(
            spec(&[("A", PartitionSize::Bytes(MIB))])
                .with_size(DiskSize::Exact(2 * MIB + 100))
                .plan(),
            Err(DiskError::DiskSize { .. })
        ));
        // 1 MiB gap + 8 MiB + backup GPT do not fit 9 MiB; the error says what would.
        match spec(&[("A", PartitionSize::Bytes(8 * MIB))])
            .with_size(DiskSize::Exact(9 * MIB))
            .plan()
        {
            Err(DiskError::DiskTooSmall { size, needed }) => {
                assert_eq!((size, needed), (9 * MIB, 10 * MIB));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            spec(&[("A", PartitionSize::Bytes(8 * MIB))])
                .with_size(DiskSize::Exact(9 * MIB + 33 * 512))
                .plan()
                .is_ok()
        );
        // A Rest partition needs at least one MiB.
        assert!(matches!(
            spec(&[("A", PartitionSize::Bytes(MIB)), ("Z", PartitionSize::Rest)])
                .with_size(DiskSize::Exact(3 * MIB))
                .plan(),
            Err(DiskError::DiskTooSmall { .. })
        ));
        assert!(matches!(
            spec(&[("A", PartitionSize::Bytes(u64::MAX - 511))]).plan(),
            Err(DiskError::DiskTooBig)
        ));
    }

    #[test]
    fn protective_mbr_bytes() {
        let plan = spec(&[("A", PartitionSize::Bytes(MIB))]).plan().unwrap();
        let mbr = plan.protective_mbr();
        assert!(mbr[..446].iter().all(|&b| b == 0));
        assert_eq!(
            mbr[446..462],
            [
                0x00, 0x00, 0x02, 0x00, 0xEE, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 0xFF, 0x17, 0, 0
            ]
        );
        // ... covering LBA 1 to the end of the 3 MiB disk: 6143 sectors.
        assert_eq!(plan.size(), 3 * MIB);
        assert!(mbr[462..510].iter().all(|&b| b == 0));
        assert_eq!(mbr[510..], [0x55, 0xAA]);
        let active = spec(&[("A", PartitionSize::Bytes(MIB))])
            .with_pmbr_bootable(true)
            .plan()
            .unwrap()
            .protective_mbr();
        assert_eq!(active[446], 0x80);
        assert_eq!(active[447..], mbr[447..]);
        // Beyond 2 TiB the size field saturates.
        let huge = spec(&[("Z", PartitionSize::Rest)])
            .with_size(DiskSize::Exact(3 << 40))
            .plan()
            .unwrap()
            .protective_mbr();
        assert_eq!(huge[458..462], [0xFF; 4]);
    }

    #[test]
    fn headers_and_entries() {
        let plan = DiskSpec::new(vec![
            PartitionSpec::new("EFI", EFI_SYSTEM, PartitionSize::Bytes(MIB)),
            PartitionSpec::new("BIOS", BIOS_BOOT, PartitionSize::Bytes(MIB))
                .with_attributes(LEGACY_BIOS_BOOTABLE),
        ])
        .plan()
        .unwrap();
        let primary = plan.primary_table();
        let (offset, backup) = plan.backup_table();
        assert_eq!(primary.len(), 34 * 512);
        assert_eq!(plan.size(), 4 * MIB);
        assert_eq!(offset, plan.size() - 33 * 512);

        let entries = &primary[1024..1024 + 16384];
        assert_eq!(entries, &backup[..16384]);
        let bios = &entries[128..256];
        assert_eq!(bios[0..16], BIOS_BOOT.to_gpt_bytes());
        assert_eq!(bios[16..32], Guid::from_label("BIOS").to_gpt_bytes());
        assert_eq!((le64(bios, 32), le64(bios, 40)), (4096, 6143));
        assert_eq!(le64(bios, 48), 4);
        assert_eq!(&bios[56..66], b"B\0I\0O\0S\0\0\0");
        assert!(entries[256..].iter().all(|&b| b == 0));

        let primary_header = &primary[512..1024];
        let backup_header = &backup[16384..];
        for (header, my, alternate, entries_lba) in [
            (primary_header, 1, 8191, 2),
            (backup_header, 8191, 1, 8191 - 32),
        ] {
            assert_eq!(&header[..8], b"EFI PART");
            assert_eq!(le32(header, 8), 0x0001_0000);
            assert_eq!(le32(header, 12), 92);
            assert_eq!(le32(header, 20), 0);
            assert_eq!(le64(header, 24), my);
            assert_eq!(le64(header, 32), alternate);
            assert_eq!(le64(header, 40), 34);
            assert_eq!(le64(header, 48), 8191 - 33);
            assert_eq!(header[56..72], plan.disk_guid().to_gpt_bytes());
            assert_eq!(le64(header, 72), entries_lba);
            assert_eq!((le32(header, 80), le32(header, 84)), (128, 128));
            assert_eq!(le32(header, 88), crc32(entries));
            let mut zeroed = header[..92].to_vec();
            zeroed[16..20].fill(0);
            assert_eq!(le32(header, 16), crc32(&zeroed));
            assert!(header[92..].iter().all(|&b| b == 0));
        }
    }
}
