//! Reading a GPT partition table (what [`crate::DiskPlan`] writes, or any other tool): which partitions a disk image has, by name, and where they lie,
//! so a metal image's `IMAGECACHE` partition is read in place.
//!
//! Both the header's and the entry array's CRC32 are checked, so a damaged table is refused
//! rather than misread; the backup table is not consulted (an image whose primary table is bad
//! is not one we wrote, and a tool that repairs tables is `sgdisk`'s business).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::Guid;
use crate::crc32::crc32;

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Sector sizes a GPT disk image may have been laid out for.
const SECTOR_SIZES: [u64; 2] = [512, 4096];
/// Entry arrays larger than this are not ones a partitioning tool writes (128 entries of 128
/// bytes is the norm); refusing them bounds what a hostile header can make us read.
const MAX_ENTRIES_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("{path}: reading at byte {offset}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: damaged GPT: {what}", path = path.display())]
    Corrupt { path: PathBuf, what: String },
}

/// One used entry of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as `sgdisk` and the kernel number them.
    pub number: u32,
    pub name: String,
    pub type_guid: Guid,
    /// Byte offset and length in the image.
    pub offset: u64,
    pub len: u64,
}

/// The partitions of the GPT disk image `file` (`path` names it in errors), or `None` when it
/// has no GPT header at LBA 1 for 512- or 4096-byte sectors.
pub fn read_partitions(file: &File, path: &Path) -> Result<Option<Vec<Partition>>, GptError> {
    let size = file
        .metadata()
        .map_err(|source| GptError::Io {
            path: path.to_owned(),
            offset: 0,
            source,
        })?
        .len();
    for sector in SECTOR_SIZES {
        let mut header = [0u8; 92];
        if sector + 92 > size {
            continue;
        }
        read(file, path, sector, &mut header)?;
        if &header[..8] != SIGNATURE {
            continue;
        }
        let corrupt = |what: String| GptError::Corrupt {
            path: path.to_owned(),
            what,
        };
        let table = parse_header(&header, sector, size).map_err(corrupt)?;
        let mut entries = vec![0u8; table.entries_bytes as usize];
        read(file, path, table.entries_at, &mut entries)?;
        let parts = parse_entries(&entries, &table, sector, size).map_err(corrupt)?;
        return Ok(Some(parts));
    }
    Ok(None)
}

/// What the header says of its entry array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub entries_at: u64,
    pub entries_bytes: u64,
    pub entry_size: u64,
    pub entries_crc: u32,
    pub first_usable: u64,
    pub last_usable: u64,
}

/// Checks a GPT header (its first 92 bytes) read at LBA 1 of `sector`-byte sectors of an image
/// of `image_len` bytes. Pure.
pub fn parse_header(h: &[u8; 92], sector: u64, image_len: u64) -> Result<TableInfo, String> {
    let header_size = u64::from(le32(h, 12));
    if header_size != 92 {
        return Err(format!("header size {header_size}"));
    }
    let mut copy = *h;
    copy[16..20].fill(0);
    if crc32(&copy) != le32(h, 16) {
        return Err("header checksum does not match".into());
    }
    if le64(h, 24) != 1 {
        return Err(format!("primary header claims LBA {}", le64(h, 24)));
    }
    let first_usable = le64(h, 40);
    let last_usable = le64(h, 48);
    let entries_lba = le64(h, 72);
    let count = u64::from(le32(h, 80));
    let entry_size = u64::from(le32(h, 84));
    if entry_size < 128 || !entry_size.is_power_of_two() {
        return Err(format!("entry size {entry_size}"));
    }
    let entries_bytes = count * entry_size;
    if entries_bytes > MAX_ENTRIES_BYTES {
        return Err(format!("{count} entries of {entry_size} bytes"));
    }
    let entries_at = entries_lba
        .checked_mul(sector)
        .filter(|at| {
            at.checked_add(entries_bytes)
                .is_some_and(|end| end <= image_len)
        })
        .ok_or_else(|| format!("entries at LBA {entries_lba} lie outside the image"))?;
    if first_usable > last_usable
        || last_usable.saturating_add(1).saturating_mul(sector) > image_len
    {
        return Err(format!(
            "usable LBAs {first_usable}..={last_usable} do not fit in the image"
        ));
    }
    Ok(TableInfo {
        entries_at,
        entries_bytes,
        entry_size,
        entries_crc: le32(h, 88),
        first_usable,
        last_usable,
    })
}

/// The used entries of an entry array. Pure.
pub fn parse_entries(
    entries: &[u8],
    table: &TableInfo,
    sector: u64,
    image_len: u64,
) -> Result<Vec<Partition>, String> {
    if crc32(entries) != table.entries_crc {
        return Err("partition entries checksum does not match".into());
    }
    let mut out = Vec::new();
    for (i, e) in entries.chunks_exact(table.entry_size as usize).enumerate() {
        let raw: [u8; 16] = e[..16].try_into().expect("16 bytes");
        if raw == [0; 16] {
            continue;
        }
        let type_guid = Guid::from_gpt_bytes(raw);
        let (first, last) = (le64(e, 32), le64(e, 40));
        let number = i as u32 + 1;
        if first < table.first_usable || last > table.last_usable || first > last {
            return Err(format!(
                "partition {number} spans LBAs {first}..={last}, outside the usable ones"
            ));
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let name = String::from_utf16(&units)
            .map_err(|_| format!("partition {number}'s name is not UTF-16"))?;
        let (offset, len) = (first * sector, (last - first + 1) * sector);
        debug_assert!(offset + len <= image_len);
        out.push(Partition {
            number,
            name,
            type_guid,
            offset,
            len,
        });
    }
    Ok(out)
}

fn read(file: &File, path: &Path, offset: u64, buf: &mut [u8]) -> Result<(), GptError> {
    file.read_exact_at(buf, offset)
        .map_err(|source| GptError::Io {
            path: path.to_owned(),
            offset,
            source,
        })
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
