//! Reading Talos image caches: the upstream flat tree nodes consume, and the OCI image layouts
//! caches are shipped in. Every input form is normalized into a flat tree ([`materialize`]), which
//! can then be verified ([`verify_flat`]) and listed ([`list_flat`]). Caches are created from
//! registries by [`create()`], as a flat tree or as an OCI layout wrapping one ([`oci_out`]).
//!
//! The formats are described in docs/image-cache.md. Parsing and planning (references, manifests,
//! platforms, paths, naming the images of a layout) are pure and live apart from the I/O that
//! walks, copies and unpacks; file data is streamed, never read whole (manifests are capped at
//! [`manifest::MAX_MANIFEST_SIZE`]).

pub mod create;
pub mod digest;
pub mod flat;
pub mod layout;
pub mod list;
pub mod manifest;
pub mod oci_out;
mod par;
pub mod reference;
mod slot;
pub mod unpack;
pub mod verify;

use std::path::Path;

pub use create::{CreateError, CreateOptions, CreateProgress, Created, OutputLayout, create};
pub use digest::{Digest, DigestError};
pub use flat::{FlatError, FlatWriter};
/// One platform type for both sides: what a registry's index offers and what a layout holds.
pub use imager_registry::{Platform, PlatformError};
pub use layout::{FlatCache, InputForm, LayoutError, ReadOptions, materialize};
pub use list::{ImageInfo, list_flat};
pub use reference::{ImageName, Reference, ReferenceError};
pub use verify::{Problem, ProblemKind, Severity, VerifyReport, verify_flat};

/// An error of [`verify()`] or [`list()`]: reading the input, or listing the normalized tree.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Flat(#[from] FlatError),
}

/// Verifies any input form: materializes it (an OCI layout's digests are checked while it is
/// converted, and a mismatch there is an error), then verifies the flat tree.
pub fn verify(input: &Path, opts: &ReadOptions, scratch_dir: &Path) -> Result<VerifyReport, Error> {
    let cache = materialize(input, opts, scratch_dir)?;
    Ok(verify_flat(cache.path())?)
}

/// Lists the images of any input form.
pub fn list(input: &Path, opts: &ReadOptions, scratch_dir: &Path) -> Result<Vec<ImageInfo>, Error> {
    let cache = materialize(input, opts, scratch_dir)?;
    Ok(list_flat(cache.path())?)
}
