//! The OCI distribution API: the pull side, for building image caches, and the push side
//! ([`Client::push_blob`], [`Client::put_manifest`]), for feeding a fleet's registry from one.
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
mod push;
mod retry;

/// The media types, from the vocabulary crate.
pub use imager_oci::media;

pub use auth::{Challenge, Credentials, parse_challenges};
pub use blob::{BLOB_TEMP_PREFIX, BlobOutcome, BlobRequest, FailedBlob};
pub use client::{
    Client, ClientConfig, DEFAULT_MAX_MANIFEST_SIZE, DockerConfigSource, Manifest, Progress,
};
pub use docker_config::{CredentialError, DockerConfig, Lookup};
pub use error::Error;
/// The vocabulary the client's API speaks, defined in `imager-oci`.
pub use imager_oci::{
    Descriptor, Digest, ImageManifest, ImageName, ManifestError, ManifestKind, Platform,
    PlatformError, PlatformSelection, Reference, ReferenceError, SelectError, select_platforms,
};
pub use push::{BlobPushed, BlobSource, UploadOptions};
pub use retry::RetryPolicy;

#[cfg(feature = "testing")]
pub mod testing;
