//! GRUB for BIOS (i386-pc) on a GPT disk: what `grub-install` (GRUB's `util/setup.c`) does to a
//! disk with a BIOS boot partition, done on byte buffers.
//!
//! The chain: the BIOS runs the MBR, which is GRUB's `boot.img`; it reads one sector, the first
//! of the core image (`diskboot.img`, put there by `grub-mkimage`), from the LBA stored at
//! `boot.img` offset 0x5C; `diskboot.img` reads the rest of the core image following the blocklist
//! at the end of its own sector. The core image holds the kernel, the modules and the prefix
//! (`(,gpt3)/grub`: partition 3 of the disk the BIOS booted), from where it reads `grub.cfg`.
//!
//! Offsets, from GRUB 2.06 (`include/grub/i386/pc/boot.h`, `include/grub/offsets.h`,
//! `grub-core/boot/i386/pc/boot.S` and `diskboot.S`); they have not changed since GRUB 2.00.

use std::path::Path;

use crate::DiskError;

/// Bytes per sector in GRUB's BIOS boot code (`GRUB_DISK_SECTOR_SIZE`): `boot.img` addresses
/// 512-byte sectors, so a disk of 4 KiB sectors cannot take it.
pub const SECTOR: usize = 512;

/// `GRUB_BOOT_MACHINE_BPB_START` .. `GRUB_BOOT_MACHINE_BPB_END`: where a FAT boot sector keeps
/// its BIOS parameter block. setup.c keeps what the disk has there (`boot.img` uses the area for
/// variables at run time only).
const BPB: std::ops::Range<usize> = 0x03..0x5A;
/// `GRUB_BOOT_MACHINE_KERNEL_SECTOR`: the LBA of the core image's first sector, u64 LE.
pub const KERNEL_SECTOR: usize = 0x5C;
/// `GRUB_BOOT_MACHINE_BOOT_DRIVE`: 0xFF means "the drive the BIOS booted from" (%dl).
const BOOT_DRIVE: usize = 0x64;
/// `GRUB_BOOT_MACHINE_DRIVE_CHECK`: a 2-byte `jmp` over a check that works around BIOSes passing
/// a floppy drive number in %dl when booting a hard disk; setup.c turns it into two NOPs (so the
/// check runs) for anything but floppies.
pub const DRIVE_CHECK: usize = 0x66;
/// `GRUB_BOOT_MACHINE_WINDOWS_NT_MAGIC` .. `GRUB_BOOT_MACHINE_PART_END`: the disk signature, two
/// reserved bytes and the four partition entries, kept from the disk.
const DISK_OWNED: std::ops::Range<usize> = 0x1B8..0x1FE;

/// The blocklist entries (`struct grub_pc_bios_boot_blocklist`: start u64, len u16, segment
/// u16, 12 bytes) sit at the end of the core image's first sector and grow downwards; the first
/// is at 0x1F4. A zero `len` ends the list.
pub const BLOCKLIST: usize = SECTOR - BLOCKLIST_ENTRY;
const BLOCKLIST_ENTRY: usize = 12;
/// `GRUB_BOOT_I386_PC_KERNEL_SEG + (GRUB_DISK_SECTOR_SIZE >> 4)`: the real-mode segment where
/// the sectors after the first are loaded. `grub-mkimage` writes it and asserts it; its presence
/// tells a core image for i386-pc disks (`diskboot.img`) from anything else.
const LOAD_SEGMENT: u16 = 0x0800 + (SECTOR as u16 >> 4);
/// `GRUB_KERNEL_I386_PC_NO_REED_SOLOMON_LENGTH`, relative to the core's second sector: 0xFFFF
/// there means a core image of another GRUB version than its `diskboot.img` (setup.c refuses).
const NO_RS_LENGTH: usize = SECTOR + 0x14;
/// `(0x78000 - GRUB_KERNEL_I386_PC_LINK_ADDR) >> 9`: the core image is loaded below 0x78000
/// from 0x9000 on, so setup.c never embeds more than this many sectors.
pub const MAX_CORE_SECTORS: u64 = (0x78000 - 0x9000) >> 9;

/// GRUB's `boot.img` and core image (`grub-mkimage -O i386-pc`), checked and ready to be
/// patched for the sector the core image goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubBios {
    boot_img: [u8; SECTOR],
    /// Padded with zeros to whole sectors, as setup.c writes it.
    core_img: Vec<u8>,
}

impl GrubBios {
    /// Checks both images: `boot.img` is one sector ending in 0x55AA; the core image starts with
    /// `diskboot.img` (its blocklist segment), is at most [`MAX_CORE_SECTORS`] long, and its
    /// first blocklist entry counts its own remaining sectors (`grub-mkimage` writes that).
    pub fn new(boot_img: &[u8], core_img: &[u8]) -> Result<Self, DiskError> {
        let boot_err = |reason: String| DiskError::GrubBootImage { reason };
        let core_err = |reason: String| DiskError::GrubCoreImage { reason };
        let boot_img: [u8; SECTOR] = boot_img.try_into().map_err(|_| {
            boot_err(format!(
                "it has {} bytes, GRUB's boot.img has {SECTOR}",
                boot_img.len()
            ))
        })?;
        if boot_img[510..] != [0x55, 0xAA] {
            return Err(boot_err(
                "it does not end with the boot signature 0x55AA".into(),
            ));
        }
        if core_img.len() < 2 * SECTOR {
            return Err(core_err(format!(
                "it has {} bytes, less than the two sectors of any core image",
                core_img.len()
            )));
        }
        let sectors = core_img.len().div_ceil(SECTOR) as u64;
        if sectors > MAX_CORE_SECTORS {
            return Err(core_err(format!(
                "it has {sectors} sectors; GRUB loads at most {MAX_CORE_SECTORS} (use fewer modules)"
            )));
        }
        let segment = u16::from_le_bytes([core_img[BLOCKLIST + 10], core_img[BLOCKLIST + 11]]);
        let len = u16::from_le_bytes([core_img[BLOCKLIST + 8], core_img[BLOCKLIST + 9]]);
        if segment != LOAD_SEGMENT || u64::from(len) != sectors - 1 {
            return Err(core_err(format!(
                "its first sector is not GRUB's diskboot.img as grub-mkimage -O i386-pc writes it \
                 (blocklist segment {segment:#06x}, length {len}; expected {LOAD_SEGMENT:#06x}, {})",
                sectors - 1
            )));
        }
        if listed_entries(core_img).is_none() {
            return Err(core_err(
                "the blocklist in its first sector has no terminator".into(),
            ));
        }
        if core_img[NO_RS_LENGTH..NO_RS_LENGTH + 2] == [0xFF, 0xFF] {
            return Err(core_err(
                "its kernel does not match its diskboot.img (GRUB version mismatch)".into(),
            ));
        }
        let mut padded = core_img.to_vec();
        padded.resize(sectors as usize * SECTOR, 0);
        Ok(Self {
            boot_img,
            core_img: padded,
        })
    }

    /// Reads and checks `boot.img` and the core image.
    pub fn from_files(boot_img: &Path, core_img: &Path) -> Result<Self, DiskError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| DiskError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let (boot, core) = (read(boot_img)?, read(core_img)?);
        Self::new(&boot, &core).map_err(|err| DiskError::GrubFile {
            path: match err {
                DiskError::GrubBootImage { .. } => boot_img.to_owned(),
                _ => core_img.to_owned(),
            },
            source: Box::new(err),
        })
    }

    /// The core image's size on disk: whole sectors. It must fit the BIOS boot partition.
    pub fn core_len(&self) -> u64 {
        self.core_img.len() as u64
    }

    /// LBA 0 with GRUB's boot code, as setup.c makes it: `boot.img`, except the BPB area and
    /// bytes 0x1B8..0x1FE (disk signature, partition table) which stay as in `sector0`; the
    /// drive-check jump replaced by NOPs (a hard disk); the boot drive set to "the one booted
    /// from"; the core image's LBA at 0x5C.
    pub fn mbr(&self, sector0: &[u8; SECTOR], core_lba: u64) -> [u8; SECTOR] {
        let mut mbr = self.boot_img;
        mbr[BPB].copy_from_slice(&sector0[BPB]);
        mbr[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
        mbr[DISK_OWNED].copy_from_slice(&sector0[DISK_OWNED]);
        mbr[BOOT_DRIVE] = 0xFF;
        mbr[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
        mbr
    }

    /// The core image to write at `core_lba`, its blocklist pointing at the sectors that follow
    /// its first: one entry (start `core_lba + 1`, all remaining sectors, load segment 0x820),
    /// then a zero terminator. What setup.c writes for a contiguous embedding area without
    /// Reed-Solomon codes (upstream Talos writes the same; the codes only guard against other
    /// tools overwriting the MBR gap, and a BIOS boot partition is not that gap).
    pub fn core(&self, core_lba: u64) -> Vec<u8> {
        let mut core = self.core_img.clone();
        // Clear the old list (grub-mkimage's default start, sector 2), down to its terminator;
        // `new` checked that there is one.
        let old = listed_entries(&core).unwrap_or(0);
        core[BLOCKLIST - old * BLOCKLIST_ENTRY..SECTOR].fill(0);
        let remaining = (core.len() / SECTOR - 1) as u16;
        core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
        core[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&remaining.to_le_bytes());
        core[BLOCKLIST + 10..BLOCKLIST + 12].copy_from_slice(&LOAD_SEGMENT.to_le_bytes());
        core[BLOCKLIST - BLOCKLIST_ENTRY..BLOCKLIST].fill(0);
        core
    }
}

/// How many blocklist entries precede the terminator (an entry of length 0), or `None` when the
/// list runs into the start of the sector without one.
fn listed_entries(core_img: &[u8]) -> Option<usize> {
    (0..=BLOCKLIST / BLOCKLIST_ENTRY).find(|i| {
        let at = BLOCKLIST - i * BLOCKLIST_ENTRY;
        core_img[at + 8..at + 10] == [0, 0]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for boot.img: every byte its offset's low byte, the boot signature at the end.
    fn boot_img() -> Vec<u8> {
        let mut img: Vec<u8> = (0..SECTOR).map(|i| i as u8).collect();
        img[510] = 0x55;
        img[511] = 0xAA;
        img
    }

    /// A stand-in for a core image of `len` bytes whose first sector ends like diskboot.img
    /// after grub-mkimage: start 2, len = remaining sectors, segment 0x820, then a terminator.
    fn core_img(len: usize) -> Vec<u8> {
        let mut img = vec![0xC0u8; len];
        img[BLOCKLIST - BLOCKLIST_ENTRY..SECTOR].fill(0);
        img[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&2u64.to_le_bytes());
        let remaining = (len.div_ceil(SECTOR) - 1) as u16;
        img[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&remaining.to_le_bytes());
        img[BLOCKLIST + 10..SECTOR].copy_from_slice(&0x0820u16.to_le_bytes());
        img
    }

    #[test]
    fn mbr_takes_code_from_boot_img_and_the_table_from_the_disk() {
        let grub = GrubBios::new(&boot_img(), &core_img(3 * SECTOR)).unwrap();
        let mut disk = [0xD1u8; SECTOR];
        disk[0x1B8..0x1BC].copy_from_slice(&[0xAB, 0xCD, 0xEF, 0x01]);
        let mbr = grub.mbr(&disk, 0x0123_4567_89AB_CDEF);
        let boot = boot_img();
        assert_eq!(mbr[..3], boot[..3]);
        assert!(
            mbr[0x03..0x5A].iter().all(|&b| b == 0xD1),
            "BPB from the disk"
        );
        assert_eq!(mbr[0x5A..0x5C], boot[0x5A..0x5C]);
        assert_eq!(
            mbr[0x5C..0x64],
            [0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01]
        );
        assert_eq!(mbr[0x64], 0xFF);
        assert_eq!(mbr[0x65], boot[0x65]);
        assert_eq!(mbr[0x66..0x68], [0x90, 0x90]);
        assert_eq!(mbr[0x68..0x1B8], boot[0x68..0x1B8]);
        assert_eq!(mbr[0x1B8..0x1BC], [0xAB, 0xCD, 0xEF, 0x01]);
        assert!(
            mbr[0x1BC..0x1FE].iter().all(|&b| b == 0xD1),
            "partition table"
        );
        assert_eq!(mbr[0x1FE..], [0x55, 0xAA]);
    }

    #[test]
    fn core_blocklist_points_past_the_first_sector() {
        // 2.5 sectors: padded to 3, two of them loaded by diskboot.
        let grub = GrubBios::new(&boot_img(), &core_img(2 * SECTOR + 256)).unwrap();
        assert_eq!(grub.core_len(), 3 * SECTOR as u64);
        let core = grub.core(4096);
        assert_eq!(core.len(), 3 * SECTOR);
        assert_eq!(core[0x1F4..0x1FC], 4097u64.to_le_bytes());
        assert_eq!(core[0x1FC..0x1FE], [2, 0]);
        assert_eq!(core[0x1FE..0x200], [0x20, 0x08]);
        assert!(core[0x1E8..0x1F4].iter().all(|&b| b == 0), "terminator");
        assert_eq!(core[..0x1E8], core_img(3 * SECTOR)[..0x1E8]);
        assert!(core[2 * SECTOR + 256..].iter().all(|&b| b == 0), "padding");
        assert!(core[SECTOR..2 * SECTOR + 256].iter().all(|&b| b == 0xC0));
    }

    #[test]
    fn a_longer_old_blocklist_is_cleared() {
        let mut img = core_img(4 * SECTOR);
        // Two stale entries below the first, as a core image set up for a fragmented file has.
        img[0x1E8..0x1F4].copy_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x40, 0x08]);
        img[0x1DC..0x1E8].copy_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x60, 0x08]);
        // Their terminator, with a nonzero start that only a whole-entry clear removes.
        img[0x1D0..0x1DC].copy_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let core = GrubBios::new(&boot_img(), &img).unwrap().core(100);
        assert_eq!(core[0x1F4..0x1FC], 101u64.to_le_bytes());
        assert_eq!(core[0x1FC..0x1FE], [3, 0]);
        assert_eq!(core[0x1FE..0x200], [0x20, 0x08]);
        assert!(core[0x1D0..0x1F4].iter().all(|&b| b == 0));
        assert_eq!(core[0x1C4..0x1D0], [0xC0; 12]);
    }

    #[test]
    fn wrong_images_are_refused() {
        let core = core_img(3 * SECTOR);
        let boot_err = |boot: &[u8]| {
            matches!(
                GrubBios::new(boot, &core),
                Err(DiskError::GrubBootImage { .. })
            )
        };
        assert!(boot_err(&boot_img()[..511]));
        let mut unsigned = boot_img();
        unsigned[511] = 0;
        assert!(boot_err(&unsigned));

        let core_err = |core: &[u8]| {
            matches!(
                GrubBios::new(&boot_img(), core),
                Err(DiskError::GrubCoreImage { .. })
            )
        };
        // boot.img passed as the core image.
        assert!(core_err(&boot_img()));
        assert!(core_err(&[0u8; 4 * SECTOR]));
        let mut wrong_len = core.clone();
        wrong_len.extend([0u8; SECTOR]);
        assert!(core_err(&wrong_len));
        let mut endless = core.clone();
        for at in (0..=BLOCKLIST).rev().step_by(BLOCKLIST_ENTRY).skip(1) {
            endless[at + 8] = 1;
        }
        assert!(core_err(&endless));
        let mut mismatch = core.clone();
        mismatch[NO_RS_LENGTH..NO_RS_LENGTH + 2].fill(0xFF);
        assert!(core_err(&mismatch));
        let max = MAX_CORE_SECTORS as usize * SECTOR;
        assert!(GrubBios::new(&boot_img(), &core_img(max)).is_ok());
        assert!(core_err(&core_img(max + 1)));
    }
}
