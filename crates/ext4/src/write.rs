//! Writing a [`Plan`]: the metadata from the layout, the file data by the caller's [`FileData`]
//! (with `copy_file_range`, by `imager-copy`, in [`HostFiles`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::error::Ext4Error;
use crate::plan::Plan;

/// Where file bytes come from: the caller copies them straight into the output, so they can come
/// from wherever they lie (a file, a run of a layer blob, another image) and move in the kernel.
pub trait FileData {
    /// Writes `len` bytes of file `index` (its position in the list given to
    /// [`crate::Tree::new`]), starting at `file_offset` in the file, into `out` at `out_offset`.
    fn copy(
        &mut self,
        index: usize,
        file_offset: u64,
        out: &File,
        out_offset: u64,
        len: u64,
    ) -> io::Result<()>;
}

impl Plan {
    /// Writes the file system's metadata (superblocks, group descriptors, bitmaps, inodes,
    /// directories, extent trees, the journal's superblock) into `out` at byte `at` (the
    /// partition's offset in a disk image), extending `out` to `at + size()` if it is shorter.
    ///
    /// Nothing else is written: free space, unused inode tables, the journal's body and blocks of
    /// zeros are left as they are, so `out` must read as zeros over `[at, at + size())` (a new
    /// file, or one just extended, or a device zeroed first), and stays sparse there.
    pub fn write_metadata(&self, out: &File, at: u64) -> Result<(), Ext4Error> {
        let meta = out.metadata().map_err(Ext4Error::Output)?;
        // A block device (a node formatting its partition) has the size it has; only an image
        // file grows.
        if meta.is_file() && meta.len() < at + self.size {
            out.set_len(at + self.size).map_err(Ext4Error::Output)?;
        }
        let mut sink = MetadataSink::new(out, at);
        // All metadata goes to the sink while the writer is made (mkext4's contract: every byte
        // that is not file data, before any file data). File data is not given to the writer:
        // the caller copies it into `pieces()`, so the writer is dropped unfinished.
        let writer = self.layout.writer(&mut sink).map_err(|err| match err {
            mkext4::Error::Io(source) => Ext4Error::Output(source),
            other => Ext4Error::Layout(other),
        })?;
        drop(writer);
        sink.flush().map_err(Ext4Error::Output)
    }

    /// Writes the whole file system: [`Plan::write_metadata`], then every file's bytes through
    /// `data`, in the order they lie in the file system (so the output grows forward).
    pub fn write(&self, out: &File, at: u64, data: &mut dyn FileData) -> Result<(), Ext4Error> {
        self.write_metadata(out, at)?;
        let mut order: Vec<(u64, usize)> = (0..self.files.len())
            .filter_map(|i| self.pieces(i).first().map(|p| (p.fs_offset, i)))
            .collect();
        order.sort_unstable();
        for (_, index) in order {
            for piece in self.pieces(index) {
                data.copy(
                    index,
                    piece.file_offset,
                    out,
                    at + piece.fs_offset,
                    piece.len,
                )
                .map_err(|source| Ext4Error::Data {
                    path: self.path(index).to_owned(),
                    source,
                })?;
            }
        }
        Ok(())
    }
}

/// Positioned writes of the metadata, gathered into runs of up to 1 MiB, all-zero blocks left out.
struct MetadataSink<'a> {
    out: &'a File,
    at: u64,
    run: Vec<u8>,
    /// Where `run` starts in the file system.
    run_start: u64,
}

const RUN: usize = 1 << 20;
const CHUNK: usize = 4096;

impl<'a> MetadataSink<'a> {
    fn new(out: &'a File, at: u64) -> Self {
        Self {
            out,
            at,
            run: Vec::with_capacity(RUN),
            run_start: 0,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.run.is_empty() {
            self.out.write_all_at(&self.run, self.at + self.run_start)?;
            self.run.clear();
        }
        Ok(())
    }
}

impl mkext4::RegionSink for MetadataSink<'_> {
    fn data(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut at = offset;
        for chunk in bytes.chunks(CHUNK) {
            if chunk.iter().all(|&b| b == 0) {
                // Reads as zeros already: leave the hole.
                self.flush()?;
            } else {
                if self.run_start + self.run.len() as u64 != at || self.run.len() >= RUN {
                    self.flush()?;
                }
                if self.run.is_empty() {
                    self.run_start = at;
                }
                self.run.extend_from_slice(chunk);
            }
            at += chunk.len() as u64;
        }
        Ok(())
    }

    fn zeros(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        // Free space, unused inode tables, the journal's body: holes in the output.
        Ok(())
    }
}

/// File data from host files, one per file of the tree, copied with `copy_file_range` (in the
/// kernel; a reflink where the file systems allow), or through a buffer where the kernel cannot.
#[derive(Debug)]
pub struct HostFiles {
    paths: Vec<PathBuf>,
    open: Option<(usize, File)>,
}

impl HostFiles {
    /// `paths[i]` holds the bytes of file `i` of the tree.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self { paths, open: None }
    }
}

impl FileData for HostFiles {
    fn copy(
        &mut self,
        index: usize,
        file_offset: u64,
        out: &File,
        out_offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let src = match self.open.take() {
            Some((open, file)) if open == index => &self.open.insert((open, file)).1,
            _ => {
                let path = self.paths.get(index).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("no host file for {index}"))
                })?;
                let file = File::open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                &self.open.insert((index, file)).1
            }
        };
        imager_copy::copy_range(src, file_offset, out, out_offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mkext4::RegionSink;

    #[test]
    fn metadata_runs_are_gathered_and_zero_blocks_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let out = File::create_new(&path).unwrap();
        out.set_len(64 << 10).unwrap();
        let mut sink = MetadataSink::new(&out, 8192);
        let mut block = vec![7u8; 4096];
        sink.data(0, &block).unwrap();
        sink.data(4096, &[0u8; 4096]).unwrap();
        block[0] = 9;
        sink.data(8192, &block).unwrap();
        sink.data(12288, &[1u8; 4096]).unwrap();
        sink.zeros(16384, 4096).unwrap();
        sink.flush().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes[..8192].iter().all(|&b| b == 0));
        assert!(bytes[8192..12288].iter().all(|&b| b == 7));
        assert!(bytes[12288..16384].iter().all(|&b| b == 0));
        assert_eq!(bytes[16384], 9);
        assert!(bytes[20480..24576].iter().all(|&b| b == 1));
        assert!(bytes[24576..].iter().all(|&b| b == 0));
    }

    #[test]
    fn copies_ranges_and_refuses_a_short_source() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        std::fs::write(&src_path, b"abcdefgh").unwrap();
        let out_path = dir.path().join("out");
        let out = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&out_path)
            .unwrap();
        let mut data = HostFiles::new(vec![src_path.clone()]);
        data.copy(0, 2, &out, 10, 4).unwrap();
        data.copy(0, 0, &out, 0, 2).unwrap();
        let bytes = std::fs::read(&out_path).unwrap();
        assert_eq!(&bytes[..2], b"ab");
        assert_eq!(&bytes[10..14], b"cdef");
        let err = data.copy(0, 6, &out, 20, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(data.copy(1, 0, &out, 0, 1).is_err());
    }
}
