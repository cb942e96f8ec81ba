//! Property tests of what the server parses from clients: request heads ([`http1`]), the paths
//! and queries they carry ([`route`]) and `Range` headers ([`range`]). Whatever the bytes, the
//! parsers answer or refuse, never panic; a head that was written from its parts reads back as
//! them; a route reads back as the request it was written for. The fuzz targets (`fuzz/`,
//! `cargo xtask fuzz`) run the same parsers for longer.

#![allow(clippy::unwrap_used)]

use http::Method;
use http::header::RANGE;
use imager_oci::reference::{check_repository, is_tag};
use imager_oci::{Digest, ImageName};
use imager_registryd::http1::{HeadError, MAX_HEAD, parse_request};
use imager_registryd::range::ByteRange;
use imager_registryd::route::{ManifestRef, Repo, Route, route};
use proptest::prelude::*;

/// 512 cases per property, or `PROPTEST_CASES` when set (for a longer run by hand).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(512),
        ..ProptestConfig::default()
    }
}

/// What any route the server acts on must hold: names that pass the grammar on their own, so
/// that nothing reaching the store can climb out of a root.
fn check_route(r: &Route) -> Result<(), TestCaseError> {
    let repo = match r {
        Route::Base | Route::Health => return Ok(()),
        Route::Manifest { repo, reference } => {
            if let ManifestRef::Tag(t) = reference {
                prop_assert!(is_tag(t), "tag {:?}", t);
            }
            repo
        }
        Route::Blob { repo, .. } => repo,
        Route::Tags { page, repo } => {
            if let Some(last) = &page.last {
                prop_assert!(is_tag(last));
            }
            repo
        }
    };
    let path = match repo {
        Repo::Path(p) => p.as_str(),
        Repo::Named(n) => n.repository(),
    };
    prop_assert!(check_repository(path).is_ok(), "{:?}", path);
    for c in path.split('/') {
        prop_assert!(!c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    }
    Ok(())
}

/// Everything the server does with the bytes of a request before it touches a file.
fn serve_head(buf: &[u8]) -> Result<(), TestCaseError> {
    match parse_request(buf) {
        Ok(Some((head, used))) => {
            prop_assert!(used <= buf.len() && used <= MAX_HEAD);
            // The head ends where it says: read alone, it is the same head.
            let (again, used_again) = parse_request(&buf[..used]).unwrap().unwrap();
            prop_assert_eq!(used_again, used);
            prop_assert_eq!(&again.uri, &head.uri);
            if let Ok(r) = route(&head.method, head.uri.path(), head.uri.query()) {
                check_route(&r)?;
            }
            for len in [0, 1, 1000, u64::MAX] {
                check_range(head.headers.get(RANGE).map(|v| v.as_bytes()), len)?;
            }
        }
        Ok(None) => prop_assert!(buf.len() < MAX_HEAD),
        Err(HeadError::TooLarge | HeadError::Malformed(_)) => {}
    }
    Ok(())
}

fn check_range(header: Option<&[u8]>, len: u64) -> Result<(), TestCaseError> {
    match ByteRange::parse(header, len) {
        ByteRange::Partial { start, end } => prop_assert!(start <= end && end < len),
        ByteRange::Unsatisfiable => prop_assert!(header.is_some()),
        ByteRange::Full => {}
    }
    Ok(())
}

/// Request text made of the pieces registry requests are written with, so that parsing gets
/// far, and of junk.
fn request_like() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        4 => "[a-z0-9]{1,4}",
        2 => Just("/".to_owned()),
        1 => "GET |HEAD |PUT |get |G\0T ",
        1 => "/v2/|manifests|blobs|tags/list|\\?ns=|&n=|&last=|%2F|%2E%2E|%3A|\\.\\.",
        1 => Just(" HTTP/1.1\r\n".to_owned()),
        1 => Just(" HTTP/1.0\r\n".to_owned()),
        1 => "(Host|Range|Connection|Content-Length|Transfer-Encoding|X): ",
        1 => "bytes=[0-9]{0,3}-[0-9]{0,3}|keep-alive|close|chunked|[0-9]{1,3}",
        2 => Just("\r\n".to_owned()),
        1 => "[\\x00-\\x7f]{1,3}|\\PC",
        1 => any::<[u8; 32]>().prop_map(|h| Digest::from_sha256(h).to_string()),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat().into_bytes())
}

/// A piece of a repository name: grammar, traversal, encodings and junk.
fn name_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9]{1,3}",
        2 => "\\.|\\.\\.|%2F|%2f|%2E|%2e%2E|%00|%3A|%ff|%C3%A9|_|__|-|:|A|\\\\",
        1 => "\\PC",
    ]
}

fn digest_like() -> impl Strategy<Value = String> {
    (
        any::<[u8; 32]>(),
        "sha256:|sha256%3A|sha256%3a|sha512:|SHA256:|",
    )
        .prop_map(|(h, alg)| format!("{alg}{}", Digest::from_sha256(h).hex()))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_are_served_or_refused(buf in prop::collection::vec(any::<u8>(), 0..512)) {
        serve_head(&buf)?;
    }

    #[test]
    fn request_like_bytes_are_served_or_refused(buf in request_like()) {
        serve_head(&buf)?;
        let mut full = buf.clone();
        full.extend_from_slice(b"\r\n\r\n");
        serve_head(&full)?;
    }

    /// A head written from its parts reads back as them; every shorter prefix of it is
    /// "not complete yet", never an error or a different head.
    #[test]
    fn heads_read_back(
        method in "GET|HEAD|PUT|DELETE|PATCH",
        path in "/[a-zA-Z0-9/_.~%-]{0,40}",
        query in proptest::option::of("[a-z0-9=&%.-]{0,20}"),
        http11 in any::<bool>(),
        headers in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,12}", "[ -~]{0,20}"), 0..8),
        connection in proptest::option::of("close|keep-alive|Keep-Alive, close|upgrade"),
        content_length in proptest::option::of(0u64..3),
        tail in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let target = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let mut text = format!("{method} {target} HTTP/1.{}\r\n", u8::from(http11));
        let mut all = headers.clone();
        if let Some(c) = &connection {
            all.push(("Connection".to_owned(), c.clone()));
        }
        if let Some(n) = content_length {
            all.push(("Content-Length".to_owned(), n.to_string()));
        }
        for (name, value) in &all {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        let mut buf = text.clone().into_bytes();
        buf.extend_from_slice(&tail);

        let (head, used) = parse_request(&buf).unwrap().unwrap();
        prop_assert_eq!(used, text.len());
        prop_assert_eq!(head.method.as_str(), method.as_str());
        prop_assert_eq!(head.uri.path(), path.as_str());
        prop_assert_eq!(head.uri.query(), query.as_deref());
        prop_assert_eq!(head.headers.len(), all.len());
        for (name, value) in &all {
            // Header values lose the whitespace around them, as HTTP says.
            prop_assert!(
                head.headers.get_all(name.as_str()).iter().any(|v| v.as_bytes() == value.trim().as_bytes()),
                "{}: {:?}", name, value
            );
        }
        let connection_says = |token: &str| {
            all.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("connection")
                    && v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
            })
        };
        prop_assert_eq!(head.keep_alive, if http11 { !connection_says("close") } else { connection_says("keep-alive") });
        let has_body = all.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("transfer-encoding")
                || (n.eq_ignore_ascii_case("content-length") && v.trim() != "0")
        });
        prop_assert_eq!(head.has_body, has_body);
        for cut in 0..text.len() {
            prop_assert!(matches!(parse_request(&buf[..cut]), Ok(None)), "prefix of {} bytes", cut);
        }
    }

    /// A `Range` value of any bytes, against any length: an answer that stays inside the blob.
    #[test]
    fn any_range_stays_inside_the_blob(
        header in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..24),
            "[ ]?bytes=[ ]?[0-9]{0,21}[ ]?-[ ]?[0-9]{0,21}[ ]?(,[0-9]-)?".prop_map(String::into_bytes),
        ],
        len in prop_oneof![0u64..4, 0u64..100_000, Just(u64::MAX)],
    ) {
        check_range(Some(&header), len)?;
    }

    /// The single ranges clients send mean what RFC 9110 says they mean.
    #[test]
    fn single_ranges_mean_what_they_say(
        first in proptest::option::of(0u64..2000),
        last in proptest::option::of(0u64..2000),
        len in 0u64..1500,
    ) {
        let spec = format!(
            "bytes={}-{}",
            first.map(|n| n.to_string()).unwrap_or_default(),
            last.map(|n| n.to_string()).unwrap_or_default()
        );
        let want = match (first, last) {
            (None, None) => ByteRange::Full,
            (None, Some(0)) => ByteRange::Unsatisfiable,
            (None, Some(_)) if len == 0 => ByteRange::Unsatisfiable,
            (None, Some(n)) => ByteRange::Partial { start: len.saturating_sub(n), end: len - 1 },
            (Some(a), Some(b)) if b < a => ByteRange::Full,
            (Some(a), _) if a >= len => ByteRange::Unsatisfiable,
            (Some(a), b) => ByteRange::Partial { start: a, end: b.map_or(len - 1, |b| b.min(len - 1)) },
        };
        prop_assert_eq!(ByteRange::parse(Some(spec.as_bytes()), len), want, "{}", spec);
    }

    /// Any path and query: a route whose names are safe, or an error.
    #[test]
    fn any_path_is_routed_or_refused(
        path in prop_oneof![
            "\\PC{0,60}",
            (
                "/v2/|/v2|/|/v2//|/V2/",
                prop::collection::vec(prop::collection::vec(name_piece(), 0..3).prop_map(|p| p.concat()), 0..4)
                    .prop_map(|p| p.join("/")),
                "/manifests/|/blobs/|/tags/list|/|%2Fmanifests%2F|/manifests",
                prop_oneof![name_piece(), "[A-Za-z0-9_.-]{0,8}", digest_like()],
            )
                .prop_map(|(a, b, c, d)| format!("{a}{b}{c}{d}")),
        ],
        query in proptest::option::of("(ns=|n=|last=|&|[a-zA-Z0-9.:%_-]){0,8}"),
        get in any::<bool>(),
    ) {
        let method = if get { Method::GET } else { Method::HEAD };
        if let Ok(r) = route(&method, &path, query.as_deref()) {
            check_route(&r)?;
        }
        prop_assert!(route(&Method::PUT, &path, query.as_deref()).is_err());
    }

    /// A request written for a repository and a reference routes back to them.
    #[test]
    fn routes_read_back(
        repository in prop::collection::vec("[a-z0-9]{1,4}((\\.|_|__|-{1,2})[a-z0-9]{1,3}){0,1}", 1..4)
            .prop_map(|c| c.join("/")),
        ns in proptest::option::of("[a-z0-9]{1,6}\\.[a-z]{2,3}(:[1-9][0-9]{0,3})?|docker\\.io|index\\.docker\\.io"),
        tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        digest in any::<[u8; 32]>().prop_map(Digest::from_sha256),
        which in 0u8..3,
    ) {
        let query = ns.as_ref().map(|ns| format!("ns={ns}"));
        let repo = match &ns {
            None => Repo::Path(repository.clone()),
            Some(ns) => {
                let registry = imager_oci::reference::normalize_registry(ns);
                let repository = imager_oci::reference::hub_repository(registry, &repository);
                Repo::Named(ImageName::new(registry, &repository).unwrap())
            }
        };
        let (path, want) = match which {
            0 => (
                format!("/v2/{repository}/manifests/{tag}"),
                Route::Manifest { repo, reference: ManifestRef::Tag(tag) },
            ),
            1 => (
                format!("/v2/{repository}/manifests/{digest}"),
                Route::Manifest { repo, reference: ManifestRef::Digest(digest) },
            ),
            _ => (format!("/v2/{repository}/blobs/{digest}"), Route::Blob { repo, digest }),
        };
        prop_assert_eq!(route(&Method::GET, &path, query.as_deref()).unwrap(), want);
    }
}
