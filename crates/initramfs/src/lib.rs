//! Deterministic newc cpio initramfs writer with xz (CRC32) or zstd compression, and modules.dep resolution.
//!
//! ```no_run
//! # fn main() -> Result<(), imager_initramfs::Error> {
//! use imager_initramfs::{Builder, Compression};
//!
//! let mut b = Builder::new();
//! b.file("init", "target/node-init", 0o755)?
//!     .char_device("dev/console", 5, 1, 0o600)?
//!     .dir("proc", 0o755)?;
//! let out = std::fs::File::create("initramfs.xz").map_err(imager_initramfs::Error::Write)?;
//! b.write(out, Compression::XZ)?;
//! # Ok(())
//! # }
//! ```

mod builder;
mod compress;
pub mod modules;
mod newc;
mod path;

use std::io;
use std::path::PathBuf;

pub use builder::Builder;
pub use compress::Compression;

/// Errors from planning or writing an archive.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid archive path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{path} is already in the archive")]
    Duplicate { path: String },
    #[error("cannot add {path}: {parent} is not a directory")]
    ParentNotDirectory { path: String, parent: String },
    #[error("invalid symlink target {target:?} for {path}")]
    InvalidSymlinkTarget { path: String, target: String },
    #[error("{path} is {size} bytes; newc entries are limited to 4 GiB")]
    TooLarge { path: String, size: u64 },
    #[error("{}: not a regular file", path.display())]
    NotRegularFile { path: PathBuf },
    #[error("stat {}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} changed size while the archive was written (planned {planned} bytes, now {})",
        path.display(),
        now.map_or_else(|| "unknown".to_owned(), |n| format!("{n} bytes"))
    )]
    SizeChanged {
        path: PathBuf,
        planned: u64,
        now: Option<u64>,
    },
    #[error("set up the xz encoder")]
    Xz(#[source] liblzma::stream::Error),
    #[error("set up the zstd encoder")]
    Zstd(#[source] io::Error),
    #[error("write the archive")]
    Write(#[source] io::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
