//! Boots media in QEMU (SeaBIOS/OVMF, CD/USB) and reads the serial console.
//!
//! The test node (`crates/node-init`) reports what it found on the console (protocol in
//! `docs/architecture.md`); [`boot`] runs one guest to its power-off and returns the parsed
//! [`NodeReport`], and [`expected_listing`] says what the node should have seen in a cache
//! directory, so tests compare the node's view with the host's.
//!
//! Environment variables:
//! - `IMAGER_ASSETS`: the boot assets directory for [`assets_dir`] (else `<repo>/_assets`).
//! - `IMAGER_BOOT_LOG_DIR`: save every boot's raw console as `<dir>/<name>.log`.
//! - `IMAGER_BOOT_ECHO`: echo console lines to stderr as they arrive (any value but `0`).
//! - `IMAGER_BOOT_JOBS`: how many guests may run at once in one process (default: the number
//!   of cores); a boot's timeout starts when it gets its slot.
//!
//! ```no_run
//! use imager_boot_test::{Attach, BootConfig, Firmware, ListingDiff, boot, expected_listing};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let outcome = boot(&BootConfig::image("_out/metal-amd64.iso", Firmware::Ovmf, Attach::UsbDisk))?;
//! let want = expected_listing("testdata/demo-cache".as_ref())?;
//! let diff = ListingDiff::new(&want, &outcome.report.listing()?);
//! assert!(diff.is_empty(), "{diff}");
//! # Ok(()) }
//! ```

mod assets;
mod console;
mod listing;
mod qemu;
mod report;
pub mod slots;

pub use assets::{ASSET_FILES, ASSETS_ENV, MissingAssets, assets_dir, check_assets, repo_root};
pub use console::{Console, TAIL_LINES, Tail, clean_line};
pub use listing::{
    FileDigest, Listing, ListingDiff, ListingError, expected_listing, file_digest, total_bytes,
};
pub use qemu::{
    Attach, BootConfig, BootError, BootFailure, BootOutcome, ECHO_ENV, FailedBoot, Firmware, Guest,
    LOG_DIR_ENV, Media, OVMF_CODE, OVMF_VARS, boot, boot_controlled, boot_with,
};
pub use report::{
    CacheSummary, CopySummary, DuplicateFile, MARKER, NodeReport, ReportedFile, Volume,
};
