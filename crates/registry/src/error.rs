//! The client's errors. Each names the image (`registry/repo[:tag][@digest]`) and what was being
//! fetched; the underlying cause is the `source()`, which callers print as a chain.

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::TokenError;
use crate::docker_config::CredentialError;
use imager_oci::{Digest, ManifestError};

/// " (detail)" when there is one: the registry's own words, e.g. `MANIFEST_UNKNOWN: manifest unknown`.
fn fmt_detail(d: &Option<String>) -> String {
    d.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 401 that no credential we have could satisfy.
    #[error("unauthorized: {image}: {what}: {reason}{}", fmt_detail(.detail))]
    Unauthorized {
        image: String,
        what: String,
        reason: String,
        detail: Option<String>,
    },
    /// 403: the credentials were accepted but do not grant access.
    #[error("denied: {image}: {what}: the registry refused access{}", fmt_detail(.detail))]
    Denied {
        image: String,
        what: String,
        detail: Option<String>,
    },
    /// 404: no such repository, tag, manifest or blob.
    #[error("not found: {image}: {what}{}", fmt_detail(.detail))]
    NotFound {
        image: String,
        what: String,
        detail: Option<String>,
    },
    /// Any other status that is not worth retrying.
    #[error("{image}: {what}: the registry answered HTTP {status} for {url}{}", fmt_detail(.detail))]
    Status {
        image: String,
        what: String,
        url: String,
        status: u16,
        detail: Option<String>,
    },
    /// The request could not be made or its answer not read (connection, TLS, timeout).
    #[error("{image}: {what}: request to {url} failed")]
    Transport {
        image: String,
        what: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// An attempt was still waiting for the registry when the request's retry budget
    /// (`RetryPolicy::max_elapsed`) ran out.
    #[error("{image}: {what}: no answer from {url} before the retry budget ran out")]
    OutOfTime {
        image: String,
        what: String,
        url: String,
    },
    /// Transient failures went on past the retry policy; `last` is the final one.
    #[error("{image}: {what}: gave up after {attempts} attempts in {elapsed:.1?}")]
    GaveUp {
        image: String,
        what: String,
        attempts: u32,
        elapsed: Duration,
        #[source]
        last: Box<Error>,
    },
    /// The content's sha256 is not the digest it was asked for or announced with.
    #[error("{image}: {what}: the content's digest is {actual}, but {claimed_by} says {expected}")]
    DigestMismatch {
        image: String,
        what: String,
        // Boxed: two inline sha256s would make every `Result<_, Error>` large.
        expected: Box<Digest>,
        actual: Box<Digest>,
        /// "the reference", "the manifest" or "Docker-Content-Digest".
        claimed_by: &'static str,
    },
    /// The content's length is not the one its descriptor gives.
    #[error("{image}: {what}: {actual} bytes served, but the descriptor says {expected}")]
    SizeMismatch {
        image: String,
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{image}: {what} is larger than the {limit}-byte manifest limit")]
    ManifestTooLarge {
        image: String,
        what: String,
        limit: u64,
    },
    #[error("{image}: {what} cannot be used")]
    Manifest {
        image: String,
        what: String,
        #[source]
        source: ManifestError,
    },
    /// The registry's answer breaks the protocol (e.g. a range we did not ask for).
    #[error("{image}: {what}: {reason}")]
    Protocol {
        image: String,
        what: String,
        reason: String,
    },
    #[error("{image}: {what}: cannot write {target}")]
    Write {
        image: String,
        what: String,
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// A blob to push could not be read from where it lies.
    #[error("{image}: {what}: cannot read {}", path.display())]
    Source {
        image: String,
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{image}: cannot get the credentials for {registry}")]
    Credentials {
        image: String,
        registry: String,
        #[source]
        source: Box<CredentialError>,
    },
    #[error("{image}: the token server {realm} gave an unusable answer")]
    Token {
        image: String,
        realm: String,
        #[source]
        source: TokenError,
    },
    #[error("{image}: the registry asks for authentication this client does not speak: {scheme}")]
    UnsupportedAuth { image: String, scheme: String },
    #[error("cannot read the CA bundle {}", path.display())]
    CaBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA bundle {} holds no usable PEM certificate", path.display())]
    CaBundleParse {
        path: PathBuf,
        #[source]
        source: Option<reqwest::Error>,
    },
    #[error("cannot load the Docker config")]
    DockerConfig(#[source] Box<CredentialError>),
    #[error("cannot set up the HTTP client")]
    HttpClient(#[source] reqwest::Error),
}

impl Error {
    /// The HTTP status the registry answered with, for errors that carry one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { .. } => Some(401),
            Self::Denied { .. } => Some(403),
            Self::NotFound { .. } => Some(404),
            Self::Status { status, .. } => Some(*status),
            Self::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }
}
