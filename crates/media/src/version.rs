//! The Talos version a medium is made for (`--version`). It names the volume (label and volume set
//! identifier) and titles the UEFI boot entry, so only what upstream's version strings look like
//! is accepted: `v` followed by a semantic version, `vMAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`.
//! The grammar (and the order of versions) is `imager_talos::version`'s: one reading of a Talos
//! version for the label, the boot entry and the machine-config documents alike.

pub use imager_talos::version::{MAX_VERSION_LEN, Version, VersionError};

/// Accepts exactly what [`Version::parse`] accepts.
pub fn check_version(version: &str) -> Result<(), VersionError> {
    Version::parse(version).map(drop)
}
