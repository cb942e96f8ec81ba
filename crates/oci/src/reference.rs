//! Image references: parsing, Docker Hub normalization and validation against the distribution
//! grammar (github.com/distribution/reference), so that every name that reaches a cache, a URL or
//! a file path is safe and canonical. The one table of Docker Hub's names is
//! [`normalize_registry`]; which host a client talks to for `docker.io` is the client's business.
//!
//! ```text
//! alpine                          -> docker.io/library/alpine:latest
//! index.docker.io/user/app        -> docker.io/user/app:latest
//! registry-1.docker.io/user/app   -> docker.io/user/app:latest
//! host:5000/a/b:tag               -> host:5000/a/b:tag
//! name@sha256:<hex>               -> docker.io/library/name@sha256:<hex>   (no tag)
//! name:tag@sha256:<hex>           -> docker.io/library/name:tag@sha256:<hex>
//! ```

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The registry Docker Hub names are normalized to (what containerd passes as `?ns=`).
pub const DOCKER_HUB: &str = "docker.io";
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";
/// The distribution limit on `registry/repository`.
pub const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("image reference is empty")]
    Empty,
    #[error(
        "image reference {input:?}: registry {registry:?} is not a host name with an optional :port (1-65535)"
    )]
    Registry { input: String, registry: String },
    #[error(
        "image reference {input:?}: IPv6 registry addresses are not supported (the cache's directory names cannot carry them)"
    )]
    Ipv6Registry { input: String },
    #[error(
        "image reference {input:?}: registry {registry:?} must be written in lower case ({}): nodes look a cache up by the host exactly as an image names it, and caches keep hosts in lower case",
        registry.to_ascii_lowercase()
    )]
    UppercaseRegistry { input: String, registry: String },
    #[error("image reference {input:?}: repository has an empty path component")]
    EmptyComponent { input: String },
    #[error("image reference {input:?}: repository path component {component:?} is not allowed")]
    DotComponent { input: String, component: String },
    #[error("image reference {input:?}: repository names must be lower case")]
    Uppercase { input: String },
    #[error(
        "image reference {input:?}: repository path component {component:?} is not lower-case letters and digits joined by '.', '_', '__' or dashes"
    )]
    Component { input: String, component: String },
    #[error("image reference {input:?}: name is {len} characters long, more than {NAME_MAX}")]
    TooLong { input: String, len: usize },
    #[error(
        "image reference {input:?}: tag {tag:?} is not 1-128 of letters, digits, '_', '.', '-' (not starting with '.' or '-')"
    )]
    Tag { input: String, tag: String },
    #[error("image reference {input:?}")]
    Digest {
        input: String,
        #[source]
        source: DigestError,
    },
    #[error(
        "{input:?} names an image (registry/repository), but has a tag or digest; give only the name"
    )]
    NotAName { input: String },
}

/// `registry/repository`: where a manifest lives, without tag or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageName {
    registry: String,
    repository: String,
}

/// A normalized image reference: an [`ImageName`], with a tag, a digest, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    name: ImageName,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// The pieces of a reference as written, before defaults.
struct Parts<'a> {
    name: ImageName,
    tag: Option<&'a str>,
    digest: Option<Digest>,
}

fn parse_parts(input: &str) -> Result<Parts<'_>, ReferenceError> {
    if input.is_empty() {
        return Err(ReferenceError::Empty);
    }
    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => {
            let digest = Digest::parse(digest).map_err(|source| ReferenceError::Digest {
                input: input.to_owned(),
                source,
            })?;
            (rest, Some(digest))
        }
        None => (input, None),
    };
    // A ':' after the last '/' starts a tag; one before it is a registry port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        validate_tag(tag).map_err(|()| ReferenceError::Tag {
            input: input.to_owned(),
            tag: tag.to_owned(),
        })?;
    }
    let name = parse_name(input, name)?;
    Ok(Parts { name, tag, digest })
}

/// Splits off and normalizes the registry the way Docker does: the first component is a registry
/// only if it looks like a host (has `.` or `:`, is `localhost`, or has upper case, which no
/// repository may have).
fn parse_name(input: &str, name: &str) -> Result<ImageName, ReferenceError> {
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest.to_owned())
        }
        _ => (DOCKER_HUB, name.to_owned()),
    };
    let registry = normalize_registry(registry);
    let repository = hub_repository(registry, &repository).into_owned();
    validate_registry(registry).map_err(|e| e.into_reference_error(input, registry))?;
    validate_repository(&repository).map_err(|e| e.into_reference_error(input, registry))?;
    let len = registry.len() + 1 + repository.len();
    if len > NAME_MAX {
        return Err(ReferenceError::TooLong {
            input: input.to_owned(),
            len,
        });
    }
    Ok(ImageName {
        registry: registry.to_owned(),
        repository,
    })
}

/// Docker Hub's other host names (`index.docker.io`, the legacy index; `registry-1.docker.io`,
/// its API host) stand for `docker.io`: a cache files Hub images under `docker.io` whichever name
/// a reference used, a server looking one up by registry must spell it the same way, and a client
/// finds Hub credentials under any of them. The only table of Hub's names.
pub fn normalize_registry(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        other => other,
    }
}

/// Docker Hub's official images live under `library/`: `busybox` there is `library/busybox`.
/// Other registries' repositories, and Hub's with a `/`, stay as they are.
pub fn hub_repository<'a>(registry: &str, repository: &'a str) -> Cow<'a, str> {
    if is_docker_hub(registry) && !repository.contains('/') {
        Cow::Owned(format!("library/{repository}"))
    } else {
        Cow::Borrowed(repository)
    }
}

/// Whether `registry` is Docker Hub under any of its names.
pub fn is_docker_hub(registry: &str) -> bool {
    normalize_registry(registry) == DOCKER_HUB
}

/// Why a registry or repository name is refused; the public errors add the input around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameError {
    Registry,
    Ipv6,
    UppercaseRegistry,
    Empty,
    Dot(String),
    Uppercase,
    Component(String),
}

impl NameError {
    fn into_reference_error(self, input: &str, registry: &str) -> ReferenceError {
        let input = input.to_owned();
        match self {
            Self::Registry => ReferenceError::Registry {
                registry: registry.to_owned(),
                input,
            },
            Self::Ipv6 => ReferenceError::Ipv6Registry { input },
            Self::UppercaseRegistry => ReferenceError::UppercaseRegistry {
                input,
                registry: registry.to_owned(),
            },
            Self::Empty => ReferenceError::EmptyComponent { input },
            Self::Dot(component) => ReferenceError::DotComponent { input, component },
            Self::Uppercase => ReferenceError::Uppercase { input },
            Self::Component(component) => ReferenceError::Component { input, component },
        }
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Registry => f.write_str("not a host name with an optional :port"),
            Self::Ipv6 => f.write_str("IPv6 registry addresses are not supported"),
            Self::UppercaseRegistry => f.write_str("registry host names must be lower case"),
            Self::Empty => f.write_str("empty path component"),
            Self::Dot(c) => write!(f, "path component {c:?} is not allowed"),
            Self::Uppercase => f.write_str("repository names must be lower case"),
            Self::Component(c) => write!(f, "path component {c:?} breaks the repository grammar"),
        }
    }
}

/// `host[:port]`, host being dot-separated `[a-z0-9]` runs with inner dashes, port one a URL
/// can carry (1-65535). IPv6 literals are refused: the flat tree's directory names cannot carry
/// them.
///
/// Upper case is refused, not folded. The distribution grammar allows it in hosts and DNS ignores
/// it, but a node does not: containerd passes the host as the image names it (`?ns=`) and Talos's
/// registryd looks up `manifests/<that host>/` case-sensitively, so a cache filed under one
/// spelling never serves the other. Caches keep hosts in lower case (what registries and
/// Kubernetes manifests write); a reference spelling one otherwise is an error that names the
/// lower-case spelling, rather than a cache that silently misses (docs/decisions.md).
pub(crate) fn validate_registry(registry: &str) -> Result<(), NameError> {
    if registry.starts_with('[') {
        return Err(NameError::Ipv6);
    }
    if registry.bytes().any(|b| b.is_ascii_uppercase()) {
        // Only if it would otherwise be a valid host, so the message points at the real fault.
        return match validate_registry(&registry.to_ascii_lowercase()) {
            Ok(()) => Err(NameError::UppercaseRegistry),
            Err(e) => Err(e),
        };
    }
    let (host, port) = match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    if let Some(port) = port
        && (port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().map_or(true, |p| p == 0))
    {
        return Err(NameError::Registry);
    }
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    if host.split('.').all(component_ok) {
        Ok(())
    } else {
        Err(NameError::Registry)
    }
}

/// `component('/' component)*`, each `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub(crate) fn validate_repository(repository: &str) -> Result<(), NameError> {
    for component in repository.split('/') {
        validate_component(component)?;
    }
    Ok(())
}

fn validate_component(c: &str) -> Result<(), NameError> {
    if c.is_empty() {
        return Err(NameError::Empty);
    }
    // `.` and `..` fail the grammar anyway; named separately because they are path traversal.
    if c == "." || c == ".." {
        return Err(NameError::Dot(c.to_owned()));
    }
    if c.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(NameError::Uppercase);
    }
    let bad = || NameError::Component(c.to_owned());
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        // A run of alphanumerics ...
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        if i == b.len() {
            return Ok(());
        }
        // ... then one separator: '.', '_', '__' or any number of '-'.
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return Err(bad()),
        }
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(crate) fn validate_tag(tag: &str) -> Result<(), ()> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = tag.as_bytes();
    if !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-')
    {
        Ok(())
    } else {
        Err(())
    }
}

/// Checks a repository path given without its registry (`library/alpine`, `team/app`) against
/// the grammar. For a registry server (crates/registryd), which gets the repository in the URL and
/// the registry, if at all, from elsewhere, and must refuse a bad name before it touches a file.
/// At most [`NAME_MAX`] - 2 characters: the shortest registry and its `/` take the rest of the
/// limit on `registry/repository`.
pub fn check_repository(repository: &str) -> Result<(), ReferenceError> {
    validate_repository(repository).map_err(|e| e.into_reference_error(repository, ""))?;
    if repository.len() > NAME_MAX - 2 {
        return Err(ReferenceError::TooLong {
            input: repository.to_owned(),
            len: repository.len(),
        });
    }
    Ok(())
}

/// Whether `s` is a valid tag: what decides if an OCI layout's `ref.name` is a bare tag.
pub fn is_tag(s: &str) -> bool {
    validate_tag(s).is_ok()
}

impl ImageName {
    /// Parses and normalizes a name without tag or digest (`team/app`, `registry:5000/x/y`).
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let parts = parse_parts(input)?;
        if parts.tag.is_some() || parts.digest.is_some() {
            return Err(ReferenceError::NotAName {
                input: input.to_owned(),
            });
        }
        Ok(parts.name)
    }

    /// Builds a name from a registry and repository as they appear in the flat tree (the registry
    /// already decoded from `host_port_`), checking both against the grammar.
    pub fn new(registry: &str, repository: &str) -> Result<Self, ReferenceError> {
        let input = format!("{registry}/{repository}");
        validate_registry(registry).map_err(|e| e.into_reference_error(&input, registry))?;
        validate_repository(repository).map_err(|e| e.into_reference_error(&input, registry))?;
        if input.len() > NAME_MAX {
            return Err(ReferenceError::TooLong {
                len: input.len(),
                input,
            });
        }
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
        })
    }

    /// `docker.io`, `registry.example.com:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `library/alpine`, `team/app`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// This name with a tag (checked against the tag grammar).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        validate_tag(tag).map_err(|()| ReferenceError::Tag {
            input: format!("{self}:{tag}"),
            tag: tag.to_owned(),
        })?;
        Ok(Reference {
            name: self.clone(),
            tag: Some(tag.to_owned()),
            digest: None,
        })
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

impl Reference {
    /// Parses and normalizes a reference; without tag or digest it means `:latest`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let Parts { name, tag, digest } = parse_parts(input)?;
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Self { name, tag, digest })
    }

    /// `name` with `tag` (checked against the tag grammar).
    pub fn with_tag(name: ImageName, tag: &str) -> Result<Self, ReferenceError> {
        name.with_tag(tag)
    }

    /// `name` pinned to `digest`, without a tag.
    pub fn with_digest(name: ImageName, digest: Digest) -> Self {
        Self {
            name,
            tag: None,
            digest: Some(digest),
        }
    }

    /// `name:tag@digest`: the digest is what is fetched, the tag is kept for naming.
    pub fn with_tag_and_digest(
        name: ImageName,
        tag: &str,
        digest: Digest,
    ) -> Result<Self, ReferenceError> {
        let mut r = name.with_tag(tag)?;
        r.digest = Some(digest);
        Ok(r)
    }

    pub fn name(&self) -> &ImageName {
        &self.name
    }

    pub fn registry(&self) -> &str {
        self.name.registry()
    }

    pub fn repository(&self) -> &str {
        self.name.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn norm(s: &str) -> String {
        Reference::parse(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .to_string()
    }

    #[test]
    fn normalizes_docker_hub() {
        assert_eq!(norm("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(norm("alpine:3.19"), "docker.io/library/alpine:3.19");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("docker.io/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(
            norm("index.docker.io/alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(norm("index.docker.io/user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(
            norm("registry-1.docker.io/alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            norm("registry-1.docker.io/library/x:1"),
            "docker.io/library/x:1"
        );
        assert_eq!(
            norm("docker.io/library/alpine:latest"),
            "docker.io/library/alpine:latest"
        );
    }

    #[test]
    fn keeps_other_registries_and_ports() {
        assert_eq!(norm("host:5000/a/b:tag"), "host:5000/a/b:tag");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(
            norm("ghcr.io/canonical/k8s-snap/sig-storage/csi-node-driver-registrar:v2.13.0"),
            "ghcr.io/canonical/k8s-snap/sig-storage/csi-node-driver-registrar:v2.13.0"
        );
        assert_eq!(
            norm("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        // Upper case in the first component makes it a registry (as Docker decides), which is
        // then refused for its case (see `validate_registry`).
        assert!(matches!(
            Reference::parse("Registry.Local/app"),
            Err(ReferenceError::UppercaseRegistry { registry, .. }) if registry == "Registry.Local"
        ));
        let r = Reference::parse("host:5000/a/b:tag").unwrap();
        assert_eq!(r.registry(), "host:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.digest(), None);
    }

    #[test]
    fn digests_with_and_without_tag() {
        let r = Reference::parse(&format!("alpine@sha256:{HEX}")).unwrap();
        assert_eq!(r.tag(), None, "a digest reference gets no default tag");
        assert_eq!(r.digest().unwrap().hex(), HEX);
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/alpine@sha256:{HEX}")
        );

        let r = Reference::parse(&format!("host:5000/a:v1@sha256:{HEX}")).unwrap();
        assert_eq!(r.registry(), "host:5000");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.to_string(), format!("host:5000/a:v1@sha256:{HEX}"));
    }

    #[test]
    fn separators_follow_the_grammar() {
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "a0.b1_c2__d3-e4", "0"] {
            assert!(validate_component(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "a..b", "a___b", "a_.b", ".a", "a.", "-a", "a-", "_a", "a_", "a+b", "a b",
        ] {
            assert_eq!(
                validate_component(bad),
                Err(NameError::Component(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_traversal_case_and_empty_parts() {
        use ReferenceError as E;
        let err = |s: &str| Reference::parse(s).unwrap_err();
        assert_eq!(err(""), E::Empty);
        assert!(matches!(err("a/../b"), E::DotComponent { component, .. } if component == ".."));
        assert!(matches!(err("host.io/../etc"), E::DotComponent { .. }));
        assert!(
            matches!(err("host.io/./x"), E::DotComponent { component, .. } if component == ".")
        );
        assert!(matches!(err("library/Alpine"), E::Uppercase { .. }));
        assert!(matches!(err("ghcr.io/Org/app"), E::Uppercase { .. }));
        assert!(matches!(err("a//b"), E::EmptyComponent { .. }));
        assert!(matches!(err("/alpine"), E::EmptyComponent { .. }));
        assert!(matches!(err("ghcr.io/"), E::EmptyComponent { .. }));
        assert!(matches!(err("ghcr.io/app/"), E::EmptyComponent { .. }));
        assert!(matches!(err("alpine:"), E::Tag { .. }));
        assert!(matches!(err("alpine:.x"), E::Tag { .. }));
        assert!(matches!(err("alpine:-x"), E::Tag { .. }));
        assert!(matches!(
            err(&format!("alpine:{}", "a".repeat(129))),
            E::Tag { .. }
        ));
        assert!(matches!(err("alpine@"), E::Digest { .. }));
        assert!(matches!(err("alpine@sha256:abc"), E::Digest { .. }));
        assert!(matches!(
            err(&format!("alpine@sha512:{HEX}{HEX}")),
            E::Digest {
                source: DigestError::Algorithm { .. },
                ..
            }
        ));
        assert!(matches!(err("a@b@c"), E::Digest { .. }));
        assert!(matches!(err("ho_st.io/app"), E::Registry { .. }));
        assert!(matches!(err("host.io:/app"), E::Registry { .. }));
        assert!(matches!(err("host.io:80a/app"), E::Registry { .. }));
        assert!(matches!(err("-host.io/app"), E::Registry { .. }));
        assert!(matches!(err("https://host.io/app"), E::Registry { .. }));
        assert!(matches!(err("[::1]:5000/app"), E::Ipv6Registry { .. }));
        assert!(
            matches!(err("LOCALHOST:5055/app"), E::UppercaseRegistry { registry, .. } if registry == "LOCALHOST:5055")
        );
        assert!(matches!(
            err("Ghcr.io/org/app"),
            E::UppercaseRegistry { .. }
        ));
        // The upper case alone makes the first component a host (as Docker reads it).
        assert!(matches!(err("Registry/app"), E::UppercaseRegistry { .. }));
        assert!(
            err("LOCALHOST:5055/app")
                .to_string()
                .contains("(localhost:5055)")
        );
        assert!(matches!(err("HO_ST.io/app"), E::Registry { .. }));
        assert!(matches!(err("a b"), E::Component { .. }));
        let long = format!("host.io/{}", "a".repeat(250));
        assert!(matches!(err(&long), E::TooLong { len: 258, .. }));
    }

    #[test]
    fn errors_name_the_input() {
        let msg = Reference::parse("ghcr.io/x/../y").unwrap_err().to_string();
        assert!(msg.contains("\"ghcr.io/x/../y\""), "{msg}");
        assert!(msg.contains("\"..\""), "{msg}");
    }

    #[test]
    fn repository_paths_alone() {
        assert!(check_repository("library/alpine").is_ok());
        assert!(check_repository("a").is_ok());
        assert!(check_repository(&"a".repeat(253)).is_ok());
        assert!(matches!(
            check_repository(&"a".repeat(254)),
            Err(ReferenceError::TooLong { len: 254, .. })
        ));
        assert!(matches!(
            check_repository("a/../b"),
            Err(ReferenceError::DotComponent { .. })
        ));
        assert!(matches!(
            check_repository("/a"),
            Err(ReferenceError::EmptyComponent { .. })
        ));
        assert!(matches!(
            check_repository("A"),
            Err(ReferenceError::Uppercase { .. })
        ));
        assert!(matches!(
            check_repository("a\0b"),
            Err(ReferenceError::Component { .. })
        ));
    }

    #[test]
    fn tag_grammar() {
        for ok in ["latest", "v1.2.3", "1", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(is_tag(ok), "{ok:?}");
        }
        for bad in ["", ".a", "-a", "a/b", "a:b", "a@b", &"a".repeat(129), "ü"] {
            assert!(!is_tag(bad), "{bad:?}");
        }
    }

    #[test]
    fn image_names_refuse_tags_and_digests() {
        let n = ImageName::parse("registry.example.com/team/app").unwrap();
        assert_eq!(n.to_string(), "registry.example.com/team/app");
        assert_eq!(
            ImageName::parse("app").unwrap().to_string(),
            "docker.io/library/app"
        );
        assert!(matches!(
            ImageName::parse("team/app:v1"),
            Err(ReferenceError::NotAName { .. })
        ));
        assert!(matches!(
            ImageName::parse(&format!("team/app@sha256:{HEX}")),
            Err(ReferenceError::NotAName { .. })
        ));
        let r = n.with_tag("v2").unwrap();
        assert_eq!(r.to_string(), "registry.example.com/team/app:v2");
        assert!(n.with_tag("no/slash").is_err());
    }

    #[test]
    fn image_name_from_tree_parts_is_checked() {
        assert!(ImageName::new("docker.io", "library/alpine").is_ok());
        assert!(ImageName::new("host:5000", "a/b").is_ok());
        assert!(ImageName::new("host_5000_", "a/b").is_err());
        assert!(ImageName::new("docker.io", "a/../b").is_err());
        assert!(ImageName::new("docker.io", "Alpine").is_err());
    }

    #[test]
    fn registries_and_repositories_from_parts() {
        for ok in [
            "library/alpine",
            "a",
            "a/b/c",
            "my-org/my_repo.x",
            "a__b",
            "a--b",
        ] {
            ImageName::new("docker.io", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "", "../x", "a/../b", "a/./b", "a//b", "/a", "a/", "A", "a?b", "a#b", "a b", "a..b",
            "-a", "a-", "a%2e",
        ] {
            assert!(
                ImageName::new("docker.io", bad).is_err(),
                "{bad:?} accepted"
            );
        }
        for ok in [
            "docker.io",
            "127.0.0.1:5000",
            "localhost",
            "reg-1.example.com:443",
            "host:65535",
        ] {
            ImageName::new(ok, "a").unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "a/b",
            "host:",
            "host:0",
            "host:99999",
            "host:65536",
            "host:x",
            "user@host",
            "[::1",
            "[::1]:5000",
            "[]:1",
            "a b",
            "LOCALHOST:5055",
            "Ghcr.io",
        ] {
            assert!(ImageName::new(bad, "a").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn constructors_and_hub_names() {
        let name = ImageName::new("docker.io", "library/alpine").unwrap();
        let r = Reference::with_tag(name.clone(), "3.20").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:3.20");
        let d = Digest::of(b"x");
        let r = Reference::with_tag_and_digest(name.clone(), "3.20", d).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/alpine:3.20@{d}"));
        let r = Reference::with_digest(name.clone(), d);
        assert_eq!((r.tag(), r.digest()), (None, Some(&d)));
        for bad in ["", ".x", "-x", "a:b", "a/b", &"x".repeat(129)] {
            assert!(Reference::with_tag(name.clone(), bad).is_err(), "{bad:?}");
        }
        for hub in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            assert!(is_docker_hub(hub), "{hub}");
            assert_eq!(normalize_registry(hub), DOCKER_HUB);
        }
        assert!(!is_docker_hub("ghcr.io"));
        assert_eq!(hub_repository("docker.io", "busybox"), "library/busybox");
        assert_eq!(
            hub_repository("index.docker.io", "busybox"),
            "library/busybox"
        );
        assert_eq!(hub_repository("docker.io", "team/app"), "team/app");
        assert_eq!(hub_repository("ghcr.io", "app"), "app");
        assert_eq!(normalize_registry("ghcr.io"), "ghcr.io");
        let err = Reference::parse("host.io:0/app").unwrap_err();
        assert!(matches!(err, ReferenceError::Registry { .. }), "{err:?}");
    }
}
