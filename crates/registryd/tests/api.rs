//! The distribution API as served over a cache built in the test: routes, headers, ranges,
//! tags, the namespace rules, read-only methods. Requests go over real sockets (reqwest, or
//! request lines written by hand where a client would normalize the URL).

#![allow(clippy::unwrap_used)]

mod common;

use common::{Fixture, TestServer, digest, get, raw};

#[test]
fn base_and_health() {
    let f = Fixture::new();
    let s = TestServer::start(&[f.root()]);
    for target in ["/v2/", "/v2"] {
        let r = get(s.addr, target);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"{}");
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let r = raw(s.addr, "HEAD", b"/v2/", &[]);
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-length"), Some("2"));
    let r = get(s.addr, "/healthz");
    assert_eq!((r.status, r.body_text().as_str()), (200, "ok\n"));
    // Even a 404 says which API this is.
    let r = get(s.addr, "/v2/_catalog");
    assert_eq!((r.status, r.error_code().as_str()), (404, "UNSUPPORTED"));
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

#[test]
fn manifests_by_tag_and_by_digest() {
    let f = Fixture::new();
    let s = TestServer::start(&[f.root()]);
    for img in f.images() {
        let by_tag = format!("/v2/{}/manifests/{}?{}", img.repo(), img.tag, img.ns());
        for target in [
            by_tag.clone(),
            format!(
                "/v2/{}/manifests/{}?{}",
                img.repo(),
                img.top.digest,
                img.ns()
            ),
        ] {
            let r = get(s.addr, &target);
            assert_eq!(r.status, 200, "{target}: {}", r.body_text());
            assert_eq!(r.body, img.top.bytes, "{target}");
            assert_eq!(r.header("content-type"), Some(img.top.media_type));
            assert_eq!(r.header("docker-content-digest"), Some(&*img.top.digest));
            assert_eq!(
                r.header("content-length"),
                Some(&*img.top.bytes.len().to_string())
            );
            // HEAD: the same headers, no body (what containerd resolves with).
            let h = raw(s.addr, "HEAD", target.as_bytes(), &[]);
            assert_eq!(h.status, 200);
            assert!(h.body.is_empty());
            for name in ["content-type", "docker-content-digest", "content-length"] {
                assert_eq!(h.header(name), r.header(name), "{name}");
            }
        }
        // Every child of an index, by digest.
        for m in &img.manifests {
            let r = get(
                s.addr,
                &format!("/v2/{}/manifests/{}?{}", img.repo(), m.digest, img.ns()),
            );
            assert_eq!((r.status, &r.body), (200, &m.bytes));
            assert_eq!(r.header("content-type"), Some(m.media_type));
        }
    }
    // Unknown tag, unknown digest, a registry that does not hold the repository.
    let app = &f.app;
    for target in [
        format!("/v2/team/app/manifests/nope?{}", app.ns()),
        format!("/v2/team/app/manifests/{}?{}", f.small.top.digest, app.ns()),
        "/v2/team/app/manifests/v1?ns=quay.io".to_owned(),
        "/v2/no/such/manifests/v1".to_owned(),
    ] {
        let r = get(s.addr, &target);
        assert_eq!(r.status, 404, "{target}");
        assert_eq!(r.error_code(), "MANIFEST_UNKNOWN", "{target}");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
}

#[test]
fn the_registry_without_ns_is_chosen_in_a_documented_order() {
    let f = Fixture::new();
    let s = TestServer::start(&[f.root()]);
    // team/app is under ghcr.io and registry.example.com: ghcr.io sorts first.
    let r = get(s.addr, "/v2/team/app/manifests/v1");
    assert_eq!(r.body, f.ghcr_app.top.bytes);
    let r = get(s.addr, "/v2/team/app/manifests/v1?ns=registry.example.com");
    assert_eq!(r.body, f.app.top.bytes);
    // Docker Hub names: `small` is `library/small`, with or without ns.
    for target in [
        "/v2/small/manifests/1.0",
        "/v2/library/small/manifests/1.0",
        "/v2/small/manifests/1.0?ns=docker.io",
        "/v2/library/small/manifests/1.0?ns=index.docker.io",
        // A registry as the first path component.
        "/v2/docker.io/library/small/manifests/1.0",
    ] {
        let r = get(s.addr, target);
        assert_eq!((r.status, &r.body), (200, &f.small.top.bytes), "{target}");
    }
    let r = get(s.addr, "/v2/ghcr.io/org/multi/manifests/v2");
    assert_eq!((r.status, &r.body), (200, &f.multi.top.bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_and_byte_ranges() {
    let f = Fixture::new();
    let s = TestServer::start(&[f.root()]);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let big = f.big_blob();
    let len = big.bytes.len();
    let url = s.url(&format!("/v2/team/app/blobs/{}", big.digest));

    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-length"], len.to_string().as_str());
    assert_eq!(h["docker-content-digest"], big.digest.as_str());
    assert_eq!(h["content-type"], "application/octet-stream");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["docker-distribution-api-version"], "registry/2.0");
    let body = r.bytes().await.unwrap();
    assert_eq!(common::sha256_hex(&body), big.digest[7..]);

    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], len.to_string().as_str());
    assert_eq!(head.bytes().await.unwrap().len(), 0);

    let range = |spec: String| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client.get(&url).header("range", spec).send().await.unwrap();
            let status = r.status().as_u16();
            let content_range = r
                .headers()
                .get("content-range")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, content_range, r.bytes().await.unwrap())
        }
    };
    // One range, the open range clients resume with, a suffix.
    let (st, cr, b) = range("bytes=10-19".into()).await;
    assert_eq!(
        (st, cr.as_deref()),
        (206, Some(&*format!("bytes 10-19/{len}")))
    );
    assert_eq!(&b[..], &big.bytes[10..20]);
    let resume = len - 100_000;
    let (st, cr, b) = range(format!("bytes={resume}-")).await;
    assert_eq!(
        (st, cr.as_deref()),
        (206, Some(&*format!("bytes {resume}-{}/{len}", len - 1)))
    );
    assert_eq!(&b[..], &big.bytes[resume..]);
    let (st, _, b) = range("bytes=-7".into()).await;
    assert_eq!((st, &b[..]), (206, &big.bytes[len - 7..]));
    // Past the end: 416 with the size.
    let (st, cr, b) = range(format!("bytes={len}-")).await;
    assert_eq!((st, cr.as_deref()), (416, Some(&*format!("bytes */{len}"))));
    assert!(String::from_utf8_lossy(&b).contains("errors"));
    // Several ranges, or a malformed one: the whole blob.
    for spec in ["bytes=0-1,5-6", "bytes=5-2", "lines=1-2"] {
        let (st, _, b) = range(spec.into()).await;
        assert_eq!((st, b.len()), (200, len), "{spec}");
    }
    // If-Range with another validator: the whole blob; with ours: the range.
    let r = client
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", "\"sha256:other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", format!("\"{}\"", big.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);

    // Blobs are shared by all repositories of the cache, as in the flat tree.
    let r = client
        .get(s.url(&format!("/v2/other/repo/blobs/{}", f.small.blobs[0].digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), f.small.blobs[0].bytes);
    // Unknown blob.
    let missing = format!("sha256:{}", "0".repeat(64));
    let r = client
        .get(s.url(&format!("/v2/team/app/blobs/{missing}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
}

#[test]
fn tags_lists_and_pages() {
    let f = Fixture::new();
    // A second tag for multi, so there is something to page through.
    let w = imager_cache::FlatWriter::create(f.root()).unwrap();
    for tag in ["a", "b", "c"] {
        w.write_tag(&f.multi.name, tag, &f.multi.top.bytes).unwrap();
    }
    let s = TestServer::start(&[f.root()]);
    let tags = |target: &str| {
        let r = get(s.addr, target);
        assert_eq!(r.status, 200, "{target}: {}", r.body_text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let list: Vec<String> = v["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        (list, r.header("link").map(str::to_owned))
    };
    assert_eq!(tags("/v2/org/multi/tags/list").0, ["a", "b", "c", "v2"]);
    let (page, link) = tags("/v2/org/multi/tags/list?ns=ghcr.io&n=2");
    assert_eq!(page, ["a", "b"]);
    let link = link.unwrap();
    assert_eq!(
        link,
        "</v2/org/multi/tags/list?n=2&last=b&ns=ghcr.io>; rel=\"next\""
    );
    let next = link.trim_start_matches('<').split_once('>').unwrap().0;
    let (page, link) = tags(next);
    assert_eq!((page, link), (vec!["c".to_owned(), "v2".to_owned()], None));
    assert_eq!(tags("/v2/small/tags/list").0, ["1.0"]);
    let r = get(s.addr, "/v2/no/such/tags/list");
    assert_eq!((r.status, r.error_code().as_str()), (404, "NAME_UNKNOWN"));
}

#[test]
fn push_and_delete_are_refused_and_change_nothing() {
    let f = Fixture::new();
    let before = imager_registry::testing::files_under(f.root());
    let s = TestServer::start(&[f.root()]);
    let manifest = format!("/v2/team/app/manifests/{}", f.app.top.digest);
    let blob = format!("/v2/team/app/blobs/{}", f.big_blob().digest);
    for (method, target) in [
        ("POST", "/v2/team/app/blobs/uploads/"),
        ("PUT", "/v2/team/app/blobs/uploads/1234?digest=sha256:00"),
        ("PATCH", "/v2/team/app/blobs/uploads/1234"),
        ("PUT", "/v2/team/app/manifests/v1"),
        ("DELETE", manifest.as_str()),
        ("DELETE", blob.as_str()),
        ("OPTIONS", "/v2/"),
    ] {
        let r = raw(
            s.addr,
            method,
            target.as_bytes(),
            &[("content-length", "0")],
        );
        assert_eq!(r.status, 405, "{method} {target}");
        assert_eq!(r.error_code(), "UNSUPPORTED", "{method} {target}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    assert_eq!(imager_registry::testing::files_under(f.root()), before);
    assert_eq!(get(s.addr, &manifest).status, 200);
}

#[test]
fn tags_with_a_digest_that_is_not_in_the_repository_are_not_tags() {
    // Named by digest in another repository only: the digest route is per repository.
    let f = Fixture::new();
    let s = TestServer::start(&[f.root()]);
    let r = get(
        s.addr,
        &format!("/v2/org/multi/manifests/{}?ns=ghcr.io", digest(&f.app.top)),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
}

/// `cache create registry-1.docker.io/library/x` and the same with `index.docker.io` or
/// `docker.io` file the image where the cache's name parsing says; containerd may name Docker
/// Hub by any of these in `?ns=`, and each must find it.
#[test]
fn every_docker_hub_alias_finds_what_the_cache_filed_under_docker_io() {
    let dir = tempfile::tempdir().unwrap();
    let image = imager_registry::testing::test_image("amd64", 4 << 10);
    let mut cached = common::Cached::single("docker.io", "library/x", "1", &image);
    // The name as `cache create` parses the reference it is given.
    cached.name = imager_cache::ImageName::parse("registry-1.docker.io/library/x").unwrap();
    common::write_cache(dir.path(), std::slice::from_ref(&cached));
    let s = TestServer::start(&[dir.path()]);
    for ns in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
        for repo in ["x", "library/x"] {
            let r = get(s.addr, &format!("/v2/{repo}/manifests/1?ns={ns}"));
            assert_eq!(r.status, 200, "{repo}?ns={ns}: {}", r.body_text());
            assert_eq!(r.body, cached.top.bytes);
        }
    }
}
