//! The output device handed to the layout engine: a plain file written with positioned writes, which
//! also reports progress. hadris writes every block once, in ascending order.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use hadris_io::{Error, ErrorKind, ErrorType};
use hadris_storage::{BlockIndex, BlockSize};

/// ISO 9660 logical sectors; hadris requires a block size that divides it.
const SECTOR: u32 = 2048;

/// Receives the number of image bytes written so far, for a progress bar.
pub trait Progress {
    /// Called after each write with the total number of bytes written.
    fn written(&mut self, bytes: u64);
}

impl<F: FnMut(u64)> Progress for F {
    fn written(&mut self, bytes: u64) {
        self(bytes)
    }
}

pub(crate) struct ImageDevice<'a> {
    file: &'a File,
    /// Sorted byte ranges whose writes are dropped: file data that is copied afterwards
    /// (see `copy.rs`).
    skip: &'a [(u64, u64)],
    /// Bytes of the image written so far (its current end).
    len: u64,
    written: u64,
    /// Bytes copied meanwhile by the data-copy thread, reported together with `written`.
    copied: &'a AtomicU64,
    progress: &'a mut dyn Progress,
}

impl<'a> ImageDevice<'a> {
    pub(crate) fn new(
        file: &'a File,
        skip: &'a [(u64, u64)],
        copied: &'a AtomicU64,
        progress: &'a mut dyn Progress,
    ) -> Self {
        Self {
            file,
            skip,
            len: 0,
            written: 0,
            copied,
            progress,
        }
    }

    /// Counts `bytes` more as written here and reports the total so far.
    pub(crate) fn advance(&mut self, bytes: u64) {
        self.written += bytes;
        self.progress
            .written(self.written + self.copied.load(Ordering::Relaxed));
    }

    fn offset(first: BlockIndex) -> Result<u64, Error<std::io::Error>> {
        first
            .get()
            .checked_mul(u64::from(SECTOR))
            .ok_or(Error::new(ErrorKind::InvalidInput, "block index overflows"))
    }
}

impl ErrorType for ImageDevice<'_> {
    type Error = std::io::Error;
}

impl hadris_storage::sync::BlockDevice for ImageDevice<'_> {
    fn block_size(&self) -> BlockSize {
        const { BlockSize::new(SECTOR).expect("2048 is a valid block size") }
    }

    fn block_count(&self) -> u64 {
        self.len / u64::from(SECTOR)
    }

    // The file grows as it is written, so any planned size fits; a full disk surfaces as the
    // write error it is.
    fn max_block_count(&self) -> u64 {
        u64::MAX / u64::from(SECTOR)
    }

    fn writable(&self) -> bool {
        true
    }

    fn read_blocks(&mut self, first: BlockIndex, buf: &mut [u8]) -> Result<(), Error<Self::Error>> {
        let offset = Self::offset(first)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|err| Error::device(err, "read failed"))
    }

    fn write_blocks(&mut self, first: BlockIndex, buf: &[u8]) -> Result<(), Error<Self::Error>> {
        let offset = Self::offset(first)?;
        let end = offset + buf.len() as u64;
        for (start, stop) in crate::copy::uncovered(self.skip, offset, end) {
            let part = &buf[(start - offset) as usize..(stop - offset) as usize];
            self.file
                .write_all_at(part, start)
                .map_err(|err| Error::device(err, "write failed"))?;
            self.advance(part.len() as u64);
        }
        self.len = self.len.max(end);
        Ok(())
    }
}
