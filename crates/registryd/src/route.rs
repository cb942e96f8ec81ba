//! Routing: method, raw path and raw query in, what is asked for out, every name and digest
//! checked against the distribution grammar. Pure: nothing here touches a file, so whatever
//! reaches the store is already a safe path component (no `..`, no `/` inside a component, no
//! NUL, no absolute path, bounded length).
//!
//! The raw path is split on `/` first and each piece percent-decoded after, so an encoded `/`
//! (`%2F`) can never create a path separator; a decoded piece that holds one is refused outright,
//! and an encoded dot (`%2E%2E`) decodes to `..`, which the grammar refuses.

use std::borrow::Cow;

use http::Method;
use imager_oci::reference::{ReferenceError, check_repository, is_tag};
use imager_oci::{Digest, ImageName};
use percent_encoding::percent_decode_str;

use crate::error::{ApiError, ErrorCode};

/// Longest request path considered. A valid one is under 400 bytes (`/v2/` + a 253-byte name +
/// `/manifests/` or `/blobs/` + a 71-byte digest or 128-byte tag); this only stops the parser
/// from working on junk.
pub const MAX_PATH_LEN: usize = 1024;

/// The most tags one `tags/list` page returns, whatever `n` asks for.
pub const MAX_PAGE: usize = 10_000;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check every client starts with.
    Base,
    /// `/healthz`
    Health,
    Manifest {
        repo: Repo,
        reference: ManifestRef,
    },
    Blob {
        repo: Repo,
        digest: Digest,
    },
    Tags {
        repo: Repo,
        page: Page,
    },
}

/// The repository a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repo {
    /// `?ns=<registry>` given (what containerd sends a mirror): exactly this name, Docker Hub
    /// names normalized (`busybox` with `ns=docker.io` is `docker.io/library/busybox`).
    Named(ImageName),
    /// No `ns`: a repository path to look for under the registries of the cache
    /// ([`candidates`]).
    Path(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    Tag(String),
    Digest(Digest),
}

/// `tags/list` pagination (`?n=&last=`), as in the distribution API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub n: Option<usize>,
    pub last: Option<String>,
}

/// Parses a request. Only GET and HEAD exist: anything else (push, delete) is refused before the
/// path is looked at.
pub fn route(method: &Method, path: &str, query: Option<&str>) -> Result<Route, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(ApiError::name_invalid(format!(
            "request path of {} bytes is longer than {MAX_PATH_LEN}",
            path.len()
        )));
    }
    match path {
        "/healthz" => return Ok(Route::Health),
        "/v2" | "/v2/" => return Ok(Route::Base),
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Err(ApiError::no_endpoint(path));
    };
    // Structure is read from the raw pieces (an encoded `manifests` is a name component, not a
    // keyword); only the name and the reference are decoded.
    let pieces: Vec<&str> = rest.split('/').collect();
    let n = pieces.len();
    if n < 3 {
        return Err(ApiError::no_endpoint(path));
    }
    let query = Query::parse(query)?;
    let (name, action, last) = (&pieces[..n - 2], pieces[n - 2], pieces[n - 1]);
    match (action, last) {
        ("tags", "list") => {
            let repo = repo(name, query.ns.as_deref())?;
            let page = query.page()?;
            Ok(Route::Tags { repo, page })
        }
        ("manifests", reference) => {
            let repo = repo(name, query.ns.as_deref())?;
            let reference = manifest_ref(reference)?;
            Ok(Route::Manifest { repo, reference })
        }
        ("blobs", digest) => {
            let repo = repo(name, query.ns.as_deref())?;
            let digest = digest_piece(digest)?;
            Ok(Route::Blob { repo, digest })
        }
        _ => Err(ApiError::no_endpoint(path)),
    }
}

fn decode(piece: &str) -> Option<Cow<'_, str>> {
    percent_decode_str(piece).decode_utf8().ok()
}

/// The repository: its raw pieces decoded one by one, joined, checked against the grammar; with
/// `ns`, the full name.
fn repo(pieces: &[&str], ns: Option<&str>) -> Result<Repo, ApiError> {
    let mut path = String::new();
    for (i, piece) in pieces.iter().enumerate() {
        let decoded =
            decode(piece).ok_or_else(|| ApiError::name_invalid("repository name is not UTF-8"))?;
        if decoded.contains('/') {
            return Err(ApiError::name_invalid(
                "repository name has a percent-encoded '/'",
            ));
        }
        if i > 0 {
            path.push('/');
        }
        path.push_str(&decoded);
    }
    check_repository(&path).map_err(|e| name_error(&path, &e))?;
    match ns {
        None => Ok(Repo::Path(path)),
        Some(ns) => {
            // Host names are case-insensitive (RFC 4343) and caches keep them in lower case, so
            // `ns=LOCALHOST:5055` is the `localhost_5055_` directory.
            let ns_lower = ns.to_ascii_lowercase();
            let registry = normalize_registry(&ns_lower);
            let repository = hub_repository(registry, &path);
            ImageName::new(registry, &repository)
                .map(Repo::Named)
                .map_err(|e| name_error(&format!("{ns}/{path}"), &e))
        }
    }
}

/// Why a name was refused, in words a client shows its user. The name is quoted through
/// `{:?}`, so control characters in it are escaped, not echoed.
fn name_error(name: &str, e: &ReferenceError) -> ApiError {
    use ReferenceError as E;
    let why = match e {
        E::Empty | E::EmptyComponent { .. } => "has an empty path component".to_owned(),
        E::DotComponent { component, .. } => format!("has the path component {component:?}"),
        E::Uppercase { .. } => "is not lower case".to_owned(),
        E::Component { component, .. } => format!(
            "has the path component {component:?}, which is not lower-case letters and digits \
             joined by '.', '_', '__' or dashes"
        ),
        E::TooLong { len, .. } => format!("is {len} characters long"),
        E::Registry { registry, .. } => {
            format!(
                "has the registry {registry:?}, which is not a host name with an optional :port"
            )
        }
        E::Ipv6Registry { .. } => "has an IPv6 registry, which a cache cannot hold".to_owned(),
        E::UppercaseRegistry { registry, .. } => {
            format!("has the registry {registry:?}, which is not lower case")
        }
        E::Tag { .. } | E::Digest { .. } | E::NotAName { .. } => e.to_string(),
    };
    ApiError::name_invalid(format!("repository name {name:?} {why}"))
}

/// Docker Hub's aliases are `docker.io`, and its official images live under `library/`: the very
/// functions the cache's reference parsing uses, so a `?ns=` finds the directory `cache create`
/// filed the image under, whichever Hub name it was given.
pub use imager_oci::reference::{hub_repository, normalize_registry};

fn manifest_ref(piece: &str) -> Result<ManifestRef, ApiError> {
    let decoded = decode(piece).ok_or_else(|| ApiError::name_invalid("tag is not UTF-8"))?;
    // A tag can hold no ':', so a ':' means a digest.
    if decoded.contains(':') {
        return digest_piece(piece).map(ManifestRef::Digest);
    }
    if is_tag(&decoded) {
        Ok(ManifestRef::Tag(decoded.into_owned()))
    } else {
        Err(ApiError::name_invalid(format!(
            "tag {decoded:?} is not 1-128 of letters, digits, '_', '.', '-' (not starting with '.' or '-')"
        )))
    }
}

fn digest_piece(piece: &str) -> Result<Digest, ApiError> {
    // `:` may come encoded (`%3A`); anything else encoded fails the digest grammar.
    let decoded = decode(piece).ok_or_else(|| ApiError::digest_invalid("digest is not UTF-8"))?;
    Digest::parse(&decoded).map_err(|e| ApiError::digest_invalid(e.to_string()))
}

/// The query parameters this server reads; others are ignored, as registries do.
#[derive(Debug, Default)]
struct Query {
    ns: Option<String>,
    n: Option<String>,
    last: Option<String>,
}

impl Query {
    fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut q = Self::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match &*key {
                "ns" => &mut q.ns,
                "n" => &mut q.n,
                "last" => &mut q.last,
                _ => continue,
            };
            // Two values for one key would leave the answer depending on which one is read.
            if slot.is_some() {
                return Err(ApiError::new(
                    http::StatusCode::BAD_REQUEST,
                    if key == "ns" {
                        ErrorCode::NameInvalid
                    } else {
                        ErrorCode::PaginationNumberInvalid
                    },
                    format!("query parameter {key:?} given twice"),
                ));
            }
            *slot = Some(value.into_owned());
        }
        Ok(q)
    }

    fn page(&self) -> Result<Page, ApiError> {
        let n = match &self.n {
            None => None,
            Some(n) => Some(
                n.parse::<usize>()
                    .ok()
                    .filter(|&n| n <= MAX_PAGE)
                    .ok_or_else(|| {
                        ApiError::new(
                            http::StatusCode::BAD_REQUEST,
                            ErrorCode::PaginationNumberInvalid,
                            format!("n={n:?} is not a number from 0 to {MAX_PAGE}"),
                        )
                    })?,
            ),
        };
        if let Some(last) = &self.last
            && !is_tag(last)
        {
            return Err(ApiError::name_invalid(format!(
                "last={last:?} is not a tag"
            )));
        }
        Ok(Page {
            n,
            last: self.last.clone(),
        })
    }
}

/// The names a repository path without `ns` may stand for in one root, in the order they are
/// tried: the path under each registry directory of `manifests/`, sorted by directory name
/// (byte order, so `docker.io` < `gcr.io` < `ghcr.io` < `quay.io` < `registry.k8s.io`), Docker
/// Hub names normalized; then, if the first component looks like a host (has a `.`, or is
/// `localhost`), that host as the registry and the rest as the repository, so
/// `127.0.0.1:3172/ghcr.io/org/app` works as a reference. Directory names that are no valid
/// registry are skipped.
pub fn candidates(path: &str, registry_dirs: &[String]) -> Vec<ImageName> {
    let mut dirs: Vec<&String> = registry_dirs.iter().collect();
    dirs.sort();
    let mut out: Vec<ImageName> = Vec::new();
    let mut push = |name: ImageName| {
        if !out.contains(&name) {
            out.push(name);
        }
    };
    for dir in dirs {
        let registry = imager_cache::flat::registry_from_dir(dir);
        if let Ok(name) = ImageName::new(&registry, &hub_repository(&registry, path)) {
            push(name);
        }
    }
    if let Some((first, rest)) = path.split_once('/')
        && (first.contains('.') || first == "localhost")
    {
        let registry = normalize_registry(first);
        if let Ok(name) = ImageName::new(registry, &hub_repository(registry, rest)) {
            push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn get(path: &str) -> Result<Route, ApiError> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        route(&Method::GET, path, query)
    }

    fn code(path: &str) -> ErrorCode {
        match get(path) {
            Ok(r) => panic!("{path:?} was accepted: {r:?}"),
            Err(e) => e.code,
        }
    }

    fn named(registry: &str, repo: &str) -> Repo {
        Repo::Named(ImageName::new(registry, repo).unwrap())
    }

    #[test]
    fn base_health_and_methods() {
        assert_eq!(get("/v2/").unwrap(), Route::Base);
        assert_eq!(get("/v2").unwrap(), Route::Base);
        assert_eq!(get("/healthz").unwrap(), Route::Health);
        assert_eq!(route(&Method::HEAD, "/v2/", None).unwrap(), Route::Base);
        for m in [
            Method::PUT,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            let e = route(&m, "/v2/a/blobs/uploads/", None).unwrap_err();
            assert_eq!(e.status, http::StatusCode::METHOD_NOT_ALLOWED, "{m}");
            assert_eq!(e.code, ErrorCode::Unsupported);
            let e = route(&m, "/v2/a/manifests/latest", None).unwrap_err();
            assert_eq!(e.status, http::StatusCode::METHOD_NOT_ALLOWED, "{m}");
        }
        for p in [
            "/",
            "/v1/",
            "/v2/_catalog",
            "/v2/a/b",
            "/etc/passwd",
            "/v2/a/manifests",
        ] {
            let e = get(p).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (http::StatusCode::NOT_FOUND, ErrorCode::Unsupported),
                "{p}"
            );
        }
    }

    #[test]
    fn manifests_blobs_tags() {
        assert_eq!(
            get("/v2/library/busybox/manifests/latest?ns=docker.io").unwrap(),
            Route::Manifest {
                repo: named("docker.io", "library/busybox"),
                reference: ManifestRef::Tag("latest".into()),
            }
        );
        assert_eq!(
            get(&format!("/v2/a/b/c/manifests/sha256:{HEX}")).unwrap(),
            Route::Manifest {
                repo: Repo::Path("a/b/c".into()),
                reference: ManifestRef::Digest(Digest::parse(&format!("sha256:{HEX}")).unwrap()),
            }
        );
        // An encoded ':' in a digest is still that digest.
        assert_eq!(
            get(&format!("/v2/x/blobs/sha256%3A{HEX}")).unwrap(),
            Route::Blob {
                repo: Repo::Path("x".into()),
                digest: Digest::parse(&format!("sha256:{HEX}")).unwrap(),
            }
        );
        assert_eq!(
            get("/v2/team/app/tags/list?n=10&last=v1").unwrap(),
            Route::Tags {
                repo: Repo::Path("team/app".into()),
                page: Page {
                    n: Some(10),
                    last: Some("v1".into())
                },
            }
        );
        // A repository may have components named like the keywords; the last ones decide.
        assert_eq!(
            get("/v2/manifests/blobs/manifests/v1").unwrap(),
            Route::Manifest {
                repo: Repo::Path("manifests/blobs".into()),
                reference: ManifestRef::Tag("v1".into()),
            }
        );
    }

    #[test]
    fn ns_selects_and_normalizes_the_registry() {
        let repo_of = |p: &str| match get(p).unwrap() {
            Route::Manifest { repo, .. } => repo,
            r => panic!("{r:?}"),
        };
        assert_eq!(
            repo_of("/v2/busybox/manifests/1?ns=docker.io"),
            named("docker.io", "library/busybox")
        );
        assert_eq!(
            repo_of("/v2/busybox/manifests/1?ns=index.docker.io"),
            named("docker.io", "library/busybox")
        );
        assert_eq!(
            repo_of("/v2/busybox/manifests/1?ns=registry-1.docker.io"),
            named("docker.io", "library/busybox")
        );
        // Host names in any case find the lower-case directory the cache keeps.
        assert_eq!(
            repo_of("/v2/team/app/manifests/1?ns=LOCALHOST:5055"),
            named("localhost:5055", "team/app")
        );
        assert_eq!(
            repo_of("/v2/busybox/manifests/1?ns=Docker.IO"),
            named("docker.io", "library/busybox")
        );
        // Where the cache files a Hub image given by any of its names.
        for hub in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            let cached = ImageName::parse(&format!("{hub}/library/x")).unwrap();
            assert_eq!(
                repo_of(&format!("/v2/x/manifests/1?ns={hub}")),
                Repo::Named(cached),
                "{hub}"
            );
        }
        assert_eq!(
            repo_of("/v2/pause/manifests/3.10?ns=registry.k8s.io"),
            named("registry.k8s.io", "pause")
        );
        assert_eq!(
            repo_of("/v2/a/manifests/1?ns=host%3A5000&other=x"),
            named("host:5000", "a")
        );
        assert_eq!(
            code("/v2/a/manifests/1?ns=bad_host"),
            ErrorCode::NameInvalid
        );
        assert_eq!(
            code("/v2/a/manifests/1?ns=..%2F..%2Fetc"),
            ErrorCode::NameInvalid
        );
        assert_eq!(code("/v2/a/manifests/1?ns="), ErrorCode::NameInvalid);
        assert_eq!(code("/v2/a/manifests/1?ns=%00"), ErrorCode::NameInvalid);
        assert_eq!(code("/v2/a/manifests/1?ns=[::1]"), ErrorCode::NameInvalid);
        assert_eq!(
            code("/v2/a/manifests/1?ns=docker.io&ns=ghcr.io"),
            ErrorCode::NameInvalid
        );
    }

    #[test]
    fn traversal_and_encoding_tricks_are_refused() {
        for p in [
            "/v2/../manifests/latest",
            "/v2/a/../b/manifests/latest",
            "/v2/./a/manifests/latest",
            "/v2/%2E%2E/manifests/latest",
            "/v2/%2e%2e/etc/manifests/latest",
            "/v2/a/%2E/manifests/latest",
            "/v2/a%2F..%2F..%2Fetc/manifests/latest",
            "/v2/library%2Fbusybox/manifests/latest",
            "/v2/a%2fb/blobs/sha256:x",
            "/v2//etc/passwd/manifests/latest",
            "/v2//manifests/latest",
            "/v2/a//b/manifests/latest",
            "/v2/a%00/manifests/latest",
            "/v2/a%00b/manifests/latest",
            "/v2/a\0b/manifests/latest",
            "/v2/%ff/manifests/latest",
            "/v2/a%5C..%5Cb/manifests/latest",
            "/v2/A/manifests/latest",
            "/v2/a:b/manifests/latest",
            "/v2/a/b%20/manifests/latest",
        ] {
            assert_eq!(code(p), ErrorCode::NameInvalid, "{p}");
        }
        // Over-long names, and over-long paths before any parsing.
        let long = format!("/v2/{}/manifests/latest", "a".repeat(254));
        assert_eq!(code(&long), ErrorCode::NameInvalid);
        let ok = format!("/v2/{}/manifests/latest", "a".repeat(253));
        assert!(get(&ok).is_ok());
        let longer = format!("/v2/{}/manifests/latest", "a/".repeat(600));
        let e = get(&longer).unwrap_err();
        assert!(e.message.contains("longer than"), "{e}");
        // With ns, the limit is on registry/repository.
        let e = get(&format!("/v2/{}/manifests/x?ns=ghcr.io", "a".repeat(250))).unwrap_err();
        assert_eq!(e.code, ErrorCode::NameInvalid);
    }

    #[test]
    fn bad_tags_and_digests() {
        for p in [
            "/v2/a/manifests/..",
            "/v2/a/manifests/.x",
            "/v2/a/manifests/-x",
            "/v2/a/manifests/",
            "/v2/a/manifests/%2E%2E",
            "/v2/a/manifests/a%2Fb",
            "/v2/a/manifests/a%00",
        ] {
            assert_eq!(code(p), ErrorCode::NameInvalid, "{p}");
        }
        assert_eq!(
            code(&format!("/v2/a/manifests/{}", "t".repeat(129))),
            ErrorCode::NameInvalid
        );
        for p in [
            "/v2/a/blobs/sha256:abc".to_owned(),
            "/v2/a/blobs/".to_owned(),
            "/v2/a/blobs/..".to_owned(),
            "/v2/a/blobs/uploads".to_owned(),
            format!("/v2/a/blobs/sha256:{}", HEX.to_uppercase()),
            format!("/v2/a/blobs/sha512:{HEX}{HEX}"),
            format!("/v2/a/blobs/sha256:{HEX}%00"),
            format!("/v2/a/blobs/sha256:..%2F{}", &HEX[3..]),
            format!("/v2/a/blobs/sha256-{HEX}"),
            format!("/v2/a/manifests/sha256:{}", &HEX[1..]),
        ] {
            assert_eq!(code(&p), ErrorCode::DigestInvalid, "{p}");
        }
    }

    #[test]
    fn pagination_is_checked() {
        assert_eq!(
            code("/v2/a/tags/list?n=x"),
            ErrorCode::PaginationNumberInvalid
        );
        assert_eq!(
            code("/v2/a/tags/list?n=-1"),
            ErrorCode::PaginationNumberInvalid
        );
        assert_eq!(
            code("/v2/a/tags/list?n=99999999999999999999999"),
            ErrorCode::PaginationNumberInvalid
        );
        assert_eq!(code("/v2/a/tags/list?last=..%2F"), ErrorCode::NameInvalid);
        // Pagination is ignored where it means nothing.
        assert!(get("/v2/a/manifests/v1?n=x").is_ok());
    }

    #[test]
    fn candidates_are_sorted_and_hub_normalized() {
        let dirs: Vec<String> = [
            "registry.k8s.io",
            "ghcr.io",
            "docker.io",
            "host_5000_",
            "bad_dir",
        ]
        .map(String::from)
        .to_vec();
        let names: Vec<String> = candidates("pause", &dirs)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "docker.io/library/pause",
                "ghcr.io/pause",
                "host:5000/pause",
                "registry.k8s.io/pause"
            ]
        );
        // A host-like first component is also tried as the registry, after the directories.
        let names: Vec<String> = candidates("ghcr.io/org/app", &["docker.io".to_owned()])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["docker.io/ghcr.io/org/app", "ghcr.io/org/app"]);
        let names: Vec<String> = candidates("docker.io/busybox", &[])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["docker.io/library/busybox"]);
        assert!(candidates("app", &[]).is_empty());
    }
}
