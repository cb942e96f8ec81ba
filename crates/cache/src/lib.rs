//! Talos image caches: the upstream flat tree nodes consume, and the OCI image layouts caches
//! are shipped in. Any input form — flat tree, OCI layout (oci-wrapped or plain), a built ISO — is
//! opened in place as one model ([`Cache`]: entries and where their bytes lie), which is then
//! verified ([`verify()`]), listed ([`list()`]), copied onto media or served. Caches are created
//! from registries by [`create()`], as a flat tree or as an OCI layout wrapping one ([`oci_out`]).
//!
//! The formats are described in docs/image-cache.md. Parsing and planning (references, manifests,
//! platforms, paths, naming the images of a layout, tar headers) are pure and live apart from the
//! I/O; file data is streamed or copied by the kernel, never read whole (manifests are capped at
//! [`manifest::MAX_MANIFEST_SIZE`]).

pub mod check;
#[cfg(feature = "registry")]
pub mod create;
pub mod digest;
#[cfg(feature = "registry")]
pub mod export;
pub mod flat;
pub mod layout;
pub mod list;
pub mod model;
pub mod oci_out;
mod par;
#[cfg(feature = "registry")]
pub mod push;
#[cfg(feature = "registry")]
mod slot;
pub mod tar_layer;
pub mod verify;

pub use check::{ExpectedImage, Finding, ImageRole, Structure, UnusableImage};
#[cfg(feature = "registry")]
pub use create::{CreateError, CreateOptions, CreateProgress, Created, OutputLayout, create};
pub use digest::{Digest, DigestError};
pub use flat::{FlatError, FlatWriter};
/// The OCI vocabulary (references, manifests, platforms), defined once in `imager-oci` and
/// re-exported under the paths this crate's users already name.
pub use imager_oci::{Platform, PlatformError, manifest, media, reference};
pub use layout::{InputForm, LayoutError, ReadOptions};
pub use list::{ImageInfo, list, list_flat};
pub use model::{Cache, Entry, Location};
pub use reference::{ImageName, Reference, ReferenceError};
pub use verify::{Problem, ProblemKind, Severity, VerifyReport, verify, verify_flat};
