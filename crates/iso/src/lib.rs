//! Hybrid ISO 9660 images: one file that boots from a CD on BIOS (El Torito no-emulation) and UEFI
//! (El Torito 0xEF entry on a FAT image), and, written raw to a USB stick, through the MBR/GPT in its
//! system area.
//!
//! The layout and encoding is done by `hadris-iso`, pinned to one release and kept behind this
//! module so that its fast-moving API touches nothing else (see docs/decisions.md). What this crate
//! adds: a tree built from host paths with the checks a user needs (no symlinks or special files
//! sneaking into a cache, names that are valid Rock Ridge names), deterministic dates, the OVMF
//! load-size rule for large ESPs, progress reporting, and errors that name the input.
//!
//! The file data is streamed: memory does not grow with the size of the files.

mod copy;
mod device;
mod error;
mod placeholder;
pub mod read;
mod spec;

pub use device::Progress;
pub use error::IsoError;
pub use spec::{BiosBoot, IsoSpec, Stream, WriteReport};
