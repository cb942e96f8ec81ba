//! The pull side of the OCI distribution API, for building image caches.
//!
//! - [`Client::get_manifest`]: a manifest or index, byte-exact, verified against its digest.
//! - [`Client::get_blob`] / [`Client::fetch_blobs`]: blobs streamed to disk while hashed, renamed into
//!   place only once verified, resumed after dropped connections, fetched concurrently.
//! - [`select_platforms`]: which children of an index to fetch.
//! - Authentication: anonymous, basic, and bearer tokens (the `WWW-Authenticate` dance), with
//!   credentials from the Docker config and its credential helpers.
//!
//! The design and its limits are described in `docs/registry-client.md`.

mod auth;
mod blob;
mod client;
mod docker_config;
mod error;
pub mod media;
mod platform;
mod reference;
mod retry;

pub use auth::{Challenge, Credentials, parse_challenges};
pub use blob::{BlobOutcome, BlobRequest, FailedBlob};
pub use client::{
    Client, ClientConfig, DEFAULT_MAX_MANIFEST_SIZE, DockerConfigSource, Manifest, Progress,
};
pub use docker_config::{CredentialError, DockerConfig, Lookup};
pub use error::Error;
pub use media::{Descriptor, ImageManifest, ManifestError, ManifestKind};
pub use platform::{Platform, PlatformError, PlatformSelection, SelectError, select_platforms};
pub use reference::{Digest, Reference, ReferenceError, Repository};
pub use retry::RetryPolicy;

#[cfg(feature = "testing")]
pub mod testing;
