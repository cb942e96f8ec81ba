//! Bytes a client sends `cache serve`: the request head, then the route (path and query) and the
//! `Range` header in it, everything the server decides before it touches a file. Beyond "no
//! panic": a head ends where it says, routes name only repositories that pass the grammar, and
//! ranges stay inside the blob.
#![no_main]

use http::header::RANGE;
use imager_oci::reference::{check_repository, is_tag};
use imager_registryd::http1::{MAX_HEAD, parse_request};
use imager_registryd::range::ByteRange;
use imager_registryd::route::{ManifestRef, Repo, Route, route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((head, used))) = parse_request(data) else {
        return;
    };
    assert!(used <= data.len() && used <= MAX_HEAD);
    if let Ok(r) = route(&head.method, head.uri.path(), head.uri.query()) {
        let repo = match &r {
            Route::Base | Route::Health => None,
            Route::Manifest { repo, reference } => {
                if let ManifestRef::Tag(t) = reference {
                    assert!(is_tag(t));
                }
                Some(repo)
            }
            Route::Blob { repo, .. } | Route::Tags { repo, .. } => Some(repo),
        };
        if let Some(repo) = repo {
            let path = match repo {
                Repo::Path(p) => p.as_str(),
                Repo::Named(n) => n.repository(),
            };
            assert!(check_repository(path).is_ok(), "{path:?}");
        }
    }
    let range = head.headers.get(RANGE).map(|v| v.as_bytes());
    for len in [0, 1, 4096, u64::MAX] {
        if let ByteRange::Partial { start, end } = ByteRange::parse(range, len) {
            assert!(start <= end && end < len);
        }
    }
});
