//! The OCI vocabulary every other crate speaks, each defined once: sha256 [`Digest`]s, image
//! references and Docker Hub's names ([`reference`]), [`Platform`]s and choosing an index's
//! children by them, media types ([`media`]), and manifests and indexes parsed from their bytes
//! ([`manifest`]). Pure: no I/O, no network.

pub mod digest;
pub mod manifest;
pub mod media;
pub mod platform;
pub mod reference;

pub use digest::{Digest, DigestError, Hasher};
pub use manifest::{
    Descriptor, ImageManifest, Index, MAX_MANIFEST_SIZE, Manifest, ManifestError, ManifestKind,
};
pub use platform::{Platform, PlatformError, PlatformSelection, SelectError, select_platforms};
pub use reference::{ImageName, Reference, ReferenceError};
