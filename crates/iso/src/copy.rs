//! The bulk of an image is file data, and the fastest way to get it there is for the kernel to copy
//! it (`copy_file_range`: no trip through user space, and a reflink where the file system can).
//! hadris lays the image out and writes the metadata; it streams file data only through its own
//! 64 KiB read/write loop. So host files enter its tree as placeholders of the same length (files
//! of an in-memory file system whose reads leave the buffer untouched, `placeholder.rs`, so that
//! loop costs next to nothing), the output device drops every byte written into their extents up
//! to the end of each file's last sector (`skip_ranges`), and this module copies the real bytes
//! into the extents hadris reported for each file, on a second thread while the layout is written.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use imager_oci::{Digest, Hasher};

use crate::error::IsoError;

/// File data that is copied after the layout is written: runs of a host file (the whole file,
/// or where an entry lies inside a bigger one: a layer blob, another image), or a file that
/// arrives through the spec's stream.
#[derive(Debug, Clone)]
pub(crate) struct HostFile {
    pub(crate) data: Data,
    pub(crate) len: u64,
    /// The sha256 the bytes must have: they are hashed as they are copied.
    pub(crate) check: Option<Digest>,
}

#[derive(Debug, Clone)]
pub(crate) enum Data {
    /// `(offset, len)` runs of `host`, in file order, adding up to the file's length.
    Runs {
        host: PathBuf,
        runs: Vec<(u64, u64)>,
    },
    /// Bytes the stream hands over under this key.
    Streamed { key: u64 },
}

/// Maps `len` bytes at `logical` (an offset in the file's content) through `runs` to offsets in
/// the host file: `(host offset, len)` pieces in order. Pure.
pub(crate) fn map_runs(runs: &[(u64, u64)], logical: u64, len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut run_start = 0u64;
    let (mut at, end) = (logical, logical + len);
    for &(offset, run_len) in runs {
        let run_end = run_start + run_len;
        if at < run_end && at < end {
            let take = run_end.min(end) - at;
            out.push((offset + (at - run_start), take));
            at += take;
        }
        run_start = run_end;
        if at >= end {
            break;
        }
    }
    out
}

/// One run of file bytes in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Byte offset in the image.
    pub(crate) image_offset: u64,
    /// Byte offset in the host file.
    pub(crate) file_offset: u64,
    pub(crate) len: u64,
}

/// Byte ranges of the image whose writes are dropped: each piece, extended to its sector's end.
/// hadris writes a placeholder's data, whatever its buffer held, and the zeros padding its last
/// sector in whole sectors from the extent's start, so this covers every byte it writes for the
/// file; the padding reads as zeros from the fresh output file anyway.
/// Sorted, and merged where they touch, so the extents of a multi-extent file form one range.
pub(crate) fn skip_ranges(pieces: &[Piece], sector: u64) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = pieces
        .iter()
        .filter(|p| p.len > 0)
        .map(|p| {
            (
                p.image_offset,
                (p.image_offset + p.len).next_multiple_of(sector),
            )
        })
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The parts of `[start, end)` outside the sorted, disjoint `ranges`, as `(start, end)` pairs.
///
/// The copy thread fills the skipped ranges while the layout is being written, so a write that
/// straddles one must not touch its bytes at all: what hadris writes there is a placeholder's
/// stale buffer contents, or the zeros it pads a file's last sector with.
pub(crate) fn uncovered(ranges: &[(u64, u64)], start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    let first = ranges.partition_point(|&(_, e)| e <= start);
    for &(s, e) in &ranges[first..] {
        if s >= end {
            break;
        }
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
        if at >= end {
            break;
        }
    }
    if at < end {
        out.push((at, end));
    }
    out
}

/// Copies `pieces` of `file` (its runs of a host file, at `path` in the image) into `out`,
/// checking first that the host file still holds them. Reports each copied chunk to `progress`:
/// the image offset it ends at, and its size.
///
/// A file with an expected digest is still copied by the kernel, a chunk at a time, and each
/// chunk is then read back from the output (from the page cache, where it was just written) and
/// hashed, in file order (`pieces` are in file order): what is checked is what landed in the
/// image, a reflinking file system still shares the extents, and on one that copies it measured
/// faster than reading through a buffer, hashing and writing (docs/benchmarks.md). `out` must be
/// open for reading too.
pub(crate) fn copy_pieces(
    path: &str,
    file: &HostFile,
    pieces: &[Piece],
    out: &File,
    out_path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), IsoError> {
    let Data::Runs { host, runs } = &file.data else {
        return Ok(());
    };
    let input_err = |source| IsoError::Input {
        path: host.clone(),
        source,
    };
    let src = File::open(host).map_err(input_err)?;
    let now = src.metadata().map_err(input_err)?.len();
    let needed = runs.iter().map(|(o, l)| o + l).max().unwrap_or(0);
    if now < needed || (runs.len() == 1 && runs[0].0 == 0 && now != file.len) {
        return Err(IsoError::Unsupported {
            path: host.clone(),
            reason: "the file changed size while the image was being written",
        });
    }
    let mut hashing = file.check.map(|_| (Hasher::default(), vec![0u8; BUFFER]));
    for piece in pieces {
        let mut image_offset = piece.image_offset;
        for (host_offset, len) in map_runs(runs, piece.file_offset, piece.len) {
            let part = Piece {
                image_offset,
                file_offset: host_offset,
                len,
            };
            let copied = match &mut hashing {
                Some((hasher, buf)) => copy_and_hash(&src, &part, out, buf, hasher, progress),
                None => copy_range(&src, &part, out, progress),
            };
            copied.map_err(|err| match err {
                CopyError::Read(source) => input_err(source),
                CopyError::Write(source) => IsoError::Output {
                    path: out_path.to_owned(),
                    source,
                },
            })?;
            image_offset += len;
        }
    }
    if let (Some(expected), Some((hasher, _))) = (file.check, hashing) {
        let (actual, _) = hasher.finish();
        if actual != expected {
            return Err(IsoError::Content {
                path: path.to_owned(),
                host: host.clone(),
                expected,
                actual,
            });
        }
    }
    Ok(())
}

/// Copies `piece` a kernel chunk at a time, hashing each chunk from the output after it is
/// copied (while its pages are still cached).
fn copy_and_hash(
    src: &File,
    piece: &Piece,
    out: &File,
    buf: &mut [u8],
    hasher: &mut Hasher,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), CopyError> {
    let mut at = 0;
    while at < piece.len {
        let chunk = Piece {
            image_offset: piece.image_offset + at,
            file_offset: piece.file_offset + at,
            len: (piece.len - at).min(KERNEL_CHUNK),
        };
        copy_range(src, &chunk, out, progress)?;
        let mut done = 0;
        while done < chunk.len {
            let take = (chunk.len - done).min(buf.len() as u64) as usize;
            // A failed read of what was just written is the output's failure.
            out.read_exact_at(&mut buf[..take], chunk.image_offset + done)
                .map_err(CopyError::Write)?;
            hasher.update(&buf[..take]);
            done += take as u64;
        }
        at += chunk.len;
    }
    Ok(())
}

/// Writes a streamed file's bytes, read from `data`, into its `pieces` (in file order). Exactly
/// `len` bytes must come.
pub(crate) fn write_streamed(
    data: &mut dyn io::Read,
    len: u64,
    pieces: &[Piece],
    out: &File,
    buf: &mut [u8],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), CopyError> {
    let mut pieces = pieces.iter();
    let mut current = pieces.next().copied();
    let mut done_in_piece = 0u64;
    let mut left = len;
    while left > 0 {
        let Some(piece) = current else { break };
        if done_in_piece == piece.len {
            current = pieces.next().copied();
            done_in_piece = 0;
            continue;
        }
        let take = (piece.len - done_in_piece).min(buf.len() as u64) as usize;
        let n = data.read(&mut buf[..take]).map_err(CopyError::Read)?;
        if n == 0 {
            return Err(CopyError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stream ended before the file's planned length",
            )));
        }
        let at = piece.image_offset + done_in_piece;
        out.write_all_at(&buf[..n], at).map_err(CopyError::Write)?;
        done_in_piece += n as u64;
        left -= n as u64;
        progress(at + n as u64, n as u64);
    }
    Ok(())
}

pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Larger requests let the kernel batch; 64 MiB keeps progress updates frequent.
const KERNEL_CHUNK: u64 = 64 << 20;
/// The fallback's user-space buffer.
const BUFFER: usize = 1 << 20;

fn copy_range(
    src: &File,
    piece: &Piece,
    out: &File,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), CopyError> {
    let mut off_in = piece.file_offset;
    let mut off_out = piece.image_offset;
    let end_in = piece.file_offset + piece.len;
    while off_in < end_in {
        let want = (end_in - off_in).min(KERNEL_CHUNK) as usize;
        let before = off_in;
        match rustix::fs::copy_file_range(src, Some(&mut off_in), out, Some(&mut off_out), want) {
            Ok(0) => {
                return Err(CopyError::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before its planned length",
                )));
            }
            Ok(n) => progress(off_out, n as u64),
            // Across file systems on old kernels, on special files, or where the kernel has no
            // copy_file_range: copy the rest through a buffer.
            Err(e)
                if matches!(
                    e,
                    rustix::io::Errno::XDEV
                        | rustix::io::Errno::NOSYS
                        | rustix::io::Errno::INVAL
                        | rustix::io::Errno::OPNOTSUPP
                ) && off_in == before =>
            {
                return copy_buffered(src, off_in, out, off_out, end_in - off_in, progress);
            }
            // Where the error belongs is unknowable from the errno; the message says the cause.
            Err(e) => return Err(CopyError::Write(io::Error::from(e))),
        }
    }
    Ok(())
}

fn copy_buffered(
    src: &File,
    mut off_in: u64,
    out: &File,
    mut off_out: u64,
    mut left: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), CopyError> {
    let mut buf = vec![0u8; BUFFER];
    while left > 0 {
        let take = left.min(BUFFER as u64) as usize;
        src.read_exact_at(&mut buf[..take], off_in)
            .map_err(CopyError::Read)?;
        out.write_all_at(&buf[..take], off_out)
            .map_err(CopyError::Write)?;
        off_in += take as u64;
        off_out += take as u64;
        left -= take as u64;
        progress(off_out, take as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_map_logical_ranges_to_host_offsets() {
        let runs = [(100, 10), (500, 5), (1000, 20)];
        assert_eq!(
            map_runs(&runs, 0, 35),
            vec![(100, 10), (500, 5), (1000, 20)]
        );
        assert_eq!(map_runs(&runs, 8, 4), vec![(108, 2), (500, 2)]);
        assert_eq!(map_runs(&runs, 15, 3), vec![(1000, 3)]);
        assert_eq!(map_runs(&[(7, 4)], 1, 2), vec![(8, 2)]);
        assert!(map_runs(&runs, 0, 0).is_empty());
    }

    #[test]
    fn streamed_bytes_land_in_their_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("out");
        let out = File::create(&out_path).unwrap();
        let pieces = [
            Piece {
                image_offset: 20,
                file_offset: 0,
                len: 3,
            },
            Piece {
                image_offset: 4,
                file_offset: 3,
                len: 5,
            },
        ];
        let mut buf = [0u8; 2];
        let mut n = 0;
        write_streamed(
            &mut &b"abcdefgh"[..],
            8,
            &pieces,
            &out,
            &mut buf,
            &mut |_, k| n += k,
        )
        .unwrap_or_else(|_| panic!("write failed"));
        assert_eq!(n, 8);
        let bytes = std::fs::read(&out_path).unwrap();
        assert_eq!(&bytes[20..23], b"abc");
        assert_eq!(&bytes[4..9], b"defgh");
        // A stream that ends early is an error, not a short file.
        assert!(
            write_streamed(&mut &b"ab"[..], 8, &pieces, &out, &mut buf, &mut |_, _| {}).is_err()
        );
    }

    #[test]
    fn ranges_cover_whole_sectors_and_merge() {
        let pieces = [
            Piece {
                image_offset: 4096,
                file_offset: 0,
                len: 100,
            },
            Piece {
                image_offset: 8192,
                file_offset: 0,
                len: 4096,
            },
            // The second extent of the same file, right after the first.
            Piece {
                image_offset: 12288,
                file_offset: 4096,
                len: 10,
            },
            Piece {
                image_offset: 20480,
                file_offset: 0,
                len: 0,
            },
        ];
        let ranges = skip_ranges(&pieces, 2048);
        assert_eq!(ranges, vec![(4096, 6144), (8192, 14336)]);
        assert_eq!(uncovered(&ranges, 4096, 6144), vec![]);
        assert_eq!(uncovered(&ranges, 8192, 14336), vec![]);
        assert_eq!(uncovered(&ranges, 6144, 8192), vec![(6144, 8192)]);
        assert_eq!(uncovered(&ranges, 0, 4096), vec![(0, 4096)]);
        // A write straddling skipped ranges writes only what lies between and around them.
        assert_eq!(
            uncovered(&ranges, 2048, 16384),
            vec![(2048, 4096), (6144, 8192), (14336, 16384)]
        );
        assert_eq!(uncovered(&ranges, 5000, 9000), vec![(6144, 8192)]);
        assert_eq!(uncovered(&[], 0, 2048), vec![(0, 2048)]);
    }

    #[test]
    fn copies_pieces_at_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        std::fs::write(&src_path, b"abcdefgh").unwrap();
        let out_path = dir.path().join("out");
        let out = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&out_path)
            .unwrap();
        let file = HostFile {
            data: Data::Runs {
                host: src_path.clone(),
                runs: vec![(0, 8)],
            },
            len: 8,
            check: None,
        };
        let pieces = [
            Piece {
                image_offset: 10,
                file_offset: 0,
                len: 4,
            },
            Piece {
                image_offset: 2,
                file_offset: 4,
                len: 4,
            },
        ];
        let mut done = 0;
        copy_pieces("f", &file, &pieces, &out, &out_path, &mut |_, n| done += n).unwrap();
        assert_eq!(done, 8);
        let bytes = std::fs::read(&out_path).unwrap();
        assert_eq!(&bytes[2..6], b"efgh");
        assert_eq!(&bytes[10..14], b"abcd");
        // With an expected digest the bytes are hashed as they landed, in file order, across
        // runs of the host file and pieces of the image.
        let mut checked = HostFile {
            data: Data::Runs {
                host: src_path.clone(),
                runs: vec![(4, 4), (0, 4)],
            },
            len: 8,
            check: Some(Digest::of(b"efghabcd")),
        };
        let out2_path = dir.path().join("out2");
        let out2 = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&out2_path)
            .unwrap();
        let pieces = [
            Piece {
                image_offset: 0,
                file_offset: 0,
                len: 3,
            },
            Piece {
                image_offset: 100,
                file_offset: 3,
                len: 5,
            },
        ];
        let mut done = 0;
        copy_pieces("f", &checked, &pieces, &out2, &out2_path, &mut |_, n| {
            done += n
        })
        .unwrap();
        assert_eq!(done, 8);
        let bytes = std::fs::read(&out2_path).unwrap();
        assert_eq!(
            (&bytes[..3], &bytes[100..105]),
            (&b"efg"[..], &b"habcd"[..])
        );
        checked.check = Some(Digest::of(b"abcdefgh"));
        let err =
            copy_pieces("x/f", &checked, &pieces, &out2, &out2_path, &mut |_, _| {}).unwrap_err();
        assert!(
            matches!(&err, IsoError::Content { path, actual, .. } if path == "x/f" && *actual == Digest::of(b"efghabcd")),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("x/f: its bytes"), "{err}");

        // A source that changed size is refused rather than copied short.
        std::fs::write(&src_path, b"abc").unwrap();
        assert!(copy_pieces("f", &file, &pieces, &out, &out_path, &mut |_, _| {}).is_err());
    }
}
