//! The minimal names the client needs: a registry host, a repository in it, a tag or a digest.
//!
//! This is deliberately not a full reference parser (`alpine` -> `docker.io/library/alpine:latest`
//! lives with the cache crate); it only validates what ends up in a URL path, so that a name can never
//! smuggle `..`, `?` or `#` into a request.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// A content digest. Only `sha256` is supported: it is what every registry serves for manifests and
/// blobs, and what the upstream cache tree names its files by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a name, tag or digest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid digest {0:?}: expected sha256:<64 lower-case hex digits>")]
    Digest(String),
    #[error("unsupported digest algorithm in {0:?}: only sha256 is supported")]
    DigestAlgorithm(String),
    #[error("invalid registry host {0:?}")]
    Registry(String),
    #[error(
        "invalid repository name {0:?}: expected lower-case path components of a-z 0-9 . _ - separated by /"
    )]
    Repository(String),
    #[error("invalid tag {0:?}: expected 1-128 of A-Z a-z 0-9 _ . -, not starting with . or -")]
    Tag(String),
}

impl Digest {
    /// Parses `sha256:<64 lower-case hex>`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(ReferenceError::Digest(s.to_owned()));
        };
        if algorithm != "sha256" {
            // sha512 and friends are legal in the spec but nothing we consume produces them; refusing
            // them by name is clearer than a "digest mismatch" later.
            if !algorithm.is_empty()
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
            {
                return Err(ReferenceError::DigestAlgorithm(s.to_owned()));
            }
            return Err(ReferenceError::Digest(s.to_owned()));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReferenceError::Digest(s.to_owned()));
        }
        Ok(Self {
            hex: hex.to_owned(),
        })
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self::from_sha256(Sha256::digest(data).into())
    }

    /// Wraps a finished sha256.
    pub fn from_sha256(hash: [u8; 32]) -> Self {
        Self {
            hex: hex::encode(hash),
        }
    }

    /// The 64 hex digits, without the algorithm (`sha256-<hex>` file names are built from it).
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl std::str::FromStr for Digest {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A repository on a registry, e.g. `docker.io` + `library/alpine`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository {
    registry: String,
    name: String,
}

impl Repository {
    /// `registry` is the name users write (`docker.io`, `ghcr.io`, `127.0.0.1:5000`); `name` the
    /// repository path in it (`library/alpine`). Both are validated; no normalization is done here
    /// (a Docker Hub short name must already carry its `library/`).
    pub fn new(registry: &str, name: &str) -> Result<Self, ReferenceError> {
        validate_registry(registry)?;
        validate_repository(name)?;
        Ok(Self {
            registry: registry.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The registry as users write it (`docker.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path (`library/alpine`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host the API is reached at: Docker Hub's registry is named `docker.io` but served by
    /// `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

/// A repository plus a tag, a digest, or both (`repo:tag@sha256:...`: the digest is what is fetched,
/// the tag is kept for naming).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    repository: Repository,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    pub fn with_tag(repository: Repository, tag: &str) -> Result<Self, ReferenceError> {
        validate_tag(tag)?;
        Ok(Self {
            repository,
            tag: Some(tag.to_owned()),
            digest: None,
        })
    }

    pub fn with_digest(repository: Repository, digest: Digest) -> Self {
        Self {
            repository,
            tag: None,
            digest: Some(digest),
        }
    }

    pub fn with_tag_and_digest(
        repository: Repository,
        tag: &str,
        digest: Digest,
    ) -> Result<Self, ReferenceError> {
        validate_tag(tag)?;
        Ok(Self {
            repository,
            tag: Some(tag.to_owned()),
            digest: Some(digest),
        })
    }

    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What goes after `/manifests/`: the digest when there is one (it pins the content), else the tag.
    pub(crate) fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            // Every constructor sets one of the two.
            (None, None) => "latest".to_owned(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Docker Hub is named `docker.io` (and historically `index.docker.io`) but its API lives on
/// `registry-1.docker.io`.
pub(crate) fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// Whether `registry` is Docker Hub under any of its names.
pub(crate) fn is_docker_hub(registry: &str) -> bool {
    matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

fn validate_registry(registry: &str) -> Result<(), ReferenceError> {
    let err = || ReferenceError::Registry(registry.to_owned());
    // host, host:port, or [v6]:port; only what can appear in an authority, so that the URL we build
    // has exactly this host.
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(err)?;
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(err());
        }
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':').ok_or_else(err)?)),
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if host.is_empty() {
        return Err(err());
    }
    if !registry.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(err());
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(err());
    }
    Ok(())
}

fn validate_repository(name: &str) -> Result<(), ReferenceError> {
    let err = || ReferenceError::Repository(name.to_owned());
    if name.is_empty() || name.len() > 255 {
        return Err(err());
    }
    for component in name.split('/') {
        // The distribution grammar: alphanumerics joined by single separators (`.`, `_`, `__`, `-`+).
        // Checking "starts and ends alphanumeric, only these characters" rejects `..`, `.`, empty
        // components and anything URL-special, which is what matters for safety.
        let bytes = component.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty()
            || !bytes.first().is_some_and(alnum)
            || !bytes.last().is_some_and(alnum)
            || !bytes
                .iter()
                .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
            || component.contains("..")
        {
            return Err(err());
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::Tag(tag.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digests() {
        let d = Digest::parse(&format!("sha256:{HEX}")).expect("valid digest");
        assert_eq!(d.hex(), HEX);
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        assert_eq!(Digest::of(b""), d);
        assert!(matches!(
            Digest::parse(&format!("sha512:{HEX}{HEX}")),
            Err(ReferenceError::DigestAlgorithm(_))
        ));
        for bad in [
            "",
            HEX,
            "sha256:",
            &format!("sha256:{}", HEX.to_uppercase()),
            &format!("sha256:{HEX}0"),
            &format!("sha256:{}", &HEX[1..]),
            &format!("Sha256:{HEX}"),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn repositories() {
        for ok in [
            "library/alpine",
            "a",
            "a/b/c",
            "my-org/my_repo.x",
            "a__b",
            "a--b",
        ] {
            Repository::new("docker.io", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "", "../x", "a/../b", "a/./b", "a//b", "/a", "a/", "A", "a?b", "a#b", "a b", "a..b",
            "-a", "a-", "a%2e",
        ] {
            assert!(
                Repository::new("docker.io", bad).is_err(),
                "{bad:?} accepted"
            );
        }
        for ok in [
            "docker.io",
            "127.0.0.1:5000",
            "localhost",
            "[::1]:5000",
            "[::1]",
            "reg-1.example.com:443",
        ] {
            Repository::new(ok, "a").unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "a/b",
            "host:",
            "host:0",
            "host:99999",
            "host:x",
            "user@host",
            "[::1",
            "[]:1",
            "a b",
        ] {
            assert!(Repository::new(bad, "a").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn references_and_hosts() {
        let repo = Repository::new("docker.io", "library/alpine").expect("valid");
        assert_eq!(repo.api_host(), "registry-1.docker.io");
        let r = Reference::with_tag(repo.clone(), "3.20").expect("valid");
        assert_eq!(r.to_string(), "docker.io/library/alpine:3.20");
        assert_eq!(r.manifest_reference(), "3.20");
        let d = Digest::of(b"x");
        let r = Reference::with_tag_and_digest(repo.clone(), "3.20", d.clone()).expect("valid");
        assert_eq!(r.manifest_reference(), d.to_string());
        assert_eq!(r.to_string(), format!("docker.io/library/alpine:3.20@{d}"));
        for bad in ["", ".x", "-x", "a:b", "a/b", &"x".repeat(129)] {
            assert!(
                Reference::with_tag(repo.clone(), bad).is_err(),
                "{bad:?} accepted"
            );
        }
        let local = Repository::new("127.0.0.1:5000", "x").expect("valid");
        assert_eq!(local.api_host(), "127.0.0.1:5000");
    }
}
