//! Compressors for the archive stream, shaped for the kernel's initramfs decoders.

use std::io::{self, Write};

use liblzma::stream::{Check, Stream};
use liblzma::write::XzEncoder;

use crate::Error;

/// How the cpio stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain cpio archive.
    None,
    /// One xz stream with a CRC32 check. `preset` is an xz preset (0..=9, optionally or-ed with
    /// `liblzma::stream::PRESET_EXTREME`).
    Xz { preset: u32 },
    /// One zstd frame at `level` (1..=22), with a content checksum. The kernel unpacks zstd
    /// initramfs images since 5.9.
    Zstd { level: i32 },
}

impl Compression {
    /// xz at preset 6, what `xz` itself defaults to.
    pub const XZ: Self = Self::Xz { preset: 6 };
    /// zstd at level 19, the highest level whose window (8 MiB) keeps decoding memory modest.
    pub const ZSTD: Self = Self::Zstd { level: 19 };
}

/// The compressor in front of the caller's writer.
///
/// `flush` is deliberately a no-op: on an xz encoder it is an `LZMA_SYNC_FLUSH` that ends the
/// current block, on zstd it ends a block too. Nothing in this crate flushes per entry, but the
/// buffering layer above may flush on its own terms, and whatever it does must not cost
/// compression ratio. The stream is completed once, by [`Encoder::finish`].
pub(crate) enum Encoder<W: Write> {
    Plain(W),
    Xz(XzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub(crate) fn new(out: W, compression: Compression) -> Result<Self, Error> {
        Ok(match compression {
            Compression::None => Self::Plain(out),
            Compression::Xz { preset } => {
                // The kernel's xz decoder supports CRC32 or no check; liblzma's default CRC64 makes
                // it refuse the image.
                let stream = Stream::new_easy_encoder(preset, Check::Crc32).map_err(Error::Xz)?;
                Self::Xz(XzEncoder::new_stream(out, stream))
            }
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(out, level).map_err(Error::Zstd)?;
                enc.include_checksum(true).map_err(Error::Zstd)?;
                Self::Zstd(enc)
            }
        })
    }

    /// Ends the compressed stream and flushes the caller's writer once.
    pub(crate) fn finish(self) -> io::Result<W> {
        let mut out = match self {
            Self::Plain(w) => w,
            Self::Xz(enc) => enc.finish()?,
            Self::Zstd(enc) => enc.finish()?,
        };
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Xz(enc) => enc.write(buf),
            Self::Zstd(enc) => enc.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
