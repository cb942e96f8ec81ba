//! The newc ("new ASCII", magic `070701`) cpio format, as `init/initramfs.c` in the kernel reads it.
//!
//! Each entry is a 110-byte header of hex fields, the NUL-terminated name padded to a multiple of 4
//! (counting from the start of the archive), then the data padded the same way. The archive ends
//! with an entry named `TRAILER!!!`.

use std::io::{self, Write};

pub(crate) const MAGIC: &[u8; 6] = b"070701";
pub(crate) const HEADER_LEN: usize = 110;
pub(crate) const TRAILER: &str = "TRAILER!!!";

pub(crate) const S_IFDIR: u32 = 0o040_000;
pub(crate) const S_IFREG: u32 = 0o100_000;
pub(crate) const S_IFLNK: u32 = 0o120_000;
pub(crate) const S_IFCHR: u32 = 0o020_000;
/// Permission bits plus setuid/setgid/sticky: everything below the file type.
pub(crate) const PERMISSION_MASK: u32 = 0o7777;

/// The fields of one header that vary between our entries; owner, group and the containing
/// device are always 0 so the archive does not depend on who built it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header<'a> {
    pub ino: u32,
    pub mode: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub name: &'a str,
}

impl Header<'_> {
    /// The 110 header bytes (without the name).
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..6].copy_from_slice(MAGIC);
        // The name size counts the terminating NUL; `ArchivePath` keeps names under PATH_MAX.
        let namesize = u32::try_from(self.name.len() + 1).unwrap_or(u32::MAX);
        let fields = [
            self.ino,
            self.mode,
            0, // uid
            0, // gid
            self.nlink,
            self.mtime,
            self.filesize,
            0, // devmajor of the filesystem holding the file: meaningless in an archive
            0, // devminor
            self.rdev_major,
            self.rdev_minor,
            namesize,
            0, // check: only used by the `070702` CRC variant
        ];
        for (i, value) in fields.into_iter().enumerate() {
            let start = 6 + i * 8;
            write_hex8(&mut out[start..start + 8], value);
        }
        out
    }
}

fn write_hex8(out: &mut [u8], value: u32) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for (i, byte) in out.iter_mut().enumerate() {
        let shift = 28 - 4 * i;
        *byte = DIGITS[((value >> shift) & 0xf) as usize];
    }
}

/// Bytes needed after `offset` to reach the next multiple of 4.
pub(crate) fn pad_len(offset: u64) -> usize {
    ((4 - (offset % 4)) % 4) as usize
}

/// Writes newc entries into `W`, tracking the offset so padding is right without seeking.
///
/// Every write goes through `write_all`, so short writes are retried and a writer that stops
/// accepting data is an error, never a silently truncated archive. It never calls `flush`: over a
/// compressor a flush ends a block, and one per entry would bloat the output.
#[derive(Debug)]
pub(crate) struct NewcWriter<W> {
    inner: W,
    offset: u64,
}

impl<W: Write> NewcWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self { inner, offset: 0 }
    }

    /// Writes a header and its padded name. The caller then writes exactly `filesize` bytes of
    /// data with [`Self::write_data`] and ends the entry with [`Self::pad`].
    pub(crate) fn write_header(&mut self, header: &Header<'_>) -> io::Result<()> {
        self.write_raw(&header.encode())?;
        self.write_raw(header.name.as_bytes())?;
        self.write_raw(&[0])?;
        self.pad()
    }

    pub(crate) fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_raw(data)
    }

    pub(crate) fn pad(&mut self) -> io::Result<()> {
        let n = pad_len(self.offset);
        self.write_raw(&[0u8; 3][..n])
    }

    /// Writes the trailer entry and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.write_header(&Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            rdev_major: 0,
            rdev_minor: 0,
            name: TRAILER,
        })?;
        Ok(self.inner)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = Header {
            ino: 1,
            mode: S_IFCHR | 0o600,
            nlink: 1,
            mtime: 0x1234_abcd,
            filesize: 0,
            rdev_major: 5,
            rdev_minor: 1,
            name: "dev/console",
        };
        let bytes = h.encode();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(
            text,
            concat!(
                "070701", "00000001", "00002180", "00000000", "00000000", "00000001", "1234ABCD",
                "00000000", "00000000", "00000000", "00000005", "00000001", "0000000C", "00000000"
            )
        );
    }

    #[test]
    fn padding_is_relative_to_archive_start() {
        let mut w = NewcWriter::new(Vec::new());
        // 110 + len("ab\0") = 113 -> padded to 116.
        w.write_header(&Header {
            ino: 1,
            mode: S_IFREG | 0o644,
            nlink: 1,
            mtime: 0,
            filesize: 5,
            rdev_major: 0,
            rdev_minor: 0,
            name: "ab",
        })
        .unwrap();
        assert_eq!(w.offset, 116);
        w.write_data(b"hello").unwrap();
        w.pad().unwrap();
        assert_eq!(w.offset, 124);
        let out = w.finish().unwrap();
        // Trailer: 110 + 11 = 121 -> 124 more bytes.
        assert_eq!(out.len(), 124 + 124);
        assert_eq!(&out[124 + 110..124 + 121], b"TRAILER!!!\0");
    }

    #[test]
    fn pad_len_values() {
        assert_eq!(pad_len(0), 0);
        assert_eq!(pad_len(1), 3);
        assert_eq!(pad_len(2), 2);
        assert_eq!(pad_len(3), 1);
        assert_eq!(pad_len(4), 0);
    }
}
