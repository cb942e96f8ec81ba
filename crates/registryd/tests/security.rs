//! Nothing in a request reaches outside the roots, links inside a root are not followed, and
//! the server is read-only over TLS as over plain HTTP. Request lines are written by hand: a
//! client library would normalize `..` and `%2E` away before they reach the server.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::{Fixture, TestServer, copy_tree, get, raw};
use imager_cache::flat::{blob_path, manifest_path, tag_path};

const SECRET: &[u8] = b"TOP-SECRET-CONTENT-OUTSIDE-THE-CACHE";

/// A directory beside the cache with a secret, a blob-like file whose name would be a valid
/// digest, and a whole repository, for links to point at.
fn outside(f: &Fixture) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("secret"), SECRET).unwrap();
    // A fake registry directory: a full copy of the cache's manifests.
    copy_tree(
        &f.root().join("manifests/ghcr.io"),
        &out.path().join("evil"),
    );
    out
}

#[test]
fn traversal_encoding_and_length_tricks_are_refused_before_any_file_access() {
    let f = Fixture::new();
    let _out = outside(&f);
    let s = TestServer::start(&[f.root()]);
    let long_name = format!("/v2/{}/manifests/latest", "a".repeat(254));
    let long_path = format!("/v2/{}manifests/latest", "a/".repeat(600));
    let hex = &f.small.top.digest[7..];
    let upper = format!("/v2/x/blobs/sha256:{}", hex.to_uppercase());
    let dashed = format!("/v2/x/blobs/sha256-{hex}");
    let cases: Vec<(&str, &str)> = vec![
        ("/v2/../../../etc/passwd/manifests/latest", "NAME_INVALID"),
        ("/v2/../secret/manifests/latest", "NAME_INVALID"),
        ("/v2/%2e%2e/%2e%2e/secret/manifests/latest", "NAME_INVALID"),
        ("/v2/%2E%2E/manifests/latest", "NAME_INVALID"),
        ("/v2/a%2F..%2F..%2Fsecret/manifests/latest", "NAME_INVALID"),
        ("/v2/library%2fsmall/manifests/1.0", "NAME_INVALID"),
        ("/v2//secret/manifests/latest", "NAME_INVALID"),
        ("/v2//etc/passwd/manifests/latest", "NAME_INVALID"),
        ("/v2/small%00/manifests/1.0", "NAME_INVALID"),
        ("/v2/small%00.txt/manifests/1.0", "NAME_INVALID"),
        ("/v2/a%5C..%5Csecret/manifests/latest", "NAME_INVALID"),
        ("/v2/Small/manifests/1.0", "NAME_INVALID"),
        (&long_name, "NAME_INVALID"),
        (&long_path, "NAME_INVALID"),
        (
            "/v2/small/manifests/1.0?ns=..%2F..%2Fsecret",
            "NAME_INVALID",
        ),
        ("/v2/small/manifests/1.0?ns=%2Fetc", "NAME_INVALID"),
        ("/v2/small/manifests/1.0?ns=docker.io%00", "NAME_INVALID"),
        ("/v2/small/manifests/..%2F..%2F..%2Fsecret", "NAME_INVALID"),
        ("/v2/small/manifests/%2E%2E", "NAME_INVALID"),
        ("/v2/small/manifests/..", "NAME_INVALID"),
        ("/v2/small/manifests/1.0%00", "NAME_INVALID"),
        ("/v2/small/tags/list?last=..%2F..", "NAME_INVALID"),
        ("/v2/x/blobs/sha256:..%2F..%2Fsecret", "DIGEST_INVALID"),
        ("/v2/x/blobs/..%2F..%2F..%2Fsecret", "DIGEST_INVALID"),
        ("/v2/x/blobs/%2Fetc%2Fpasswd", "DIGEST_INVALID"),
        ("/v2/x/blobs/sha256:", "DIGEST_INVALID"),
        (&upper, "DIGEST_INVALID"),
        (&dashed, "DIGEST_INVALID"),
        ("/v2/x/manifests/sha256:..%2F..%2Fsecret", "DIGEST_INVALID"),
    ];
    for (target, code) in cases {
        let r = get(s.addr, target);
        assert_eq!(r.status, 400, "{target}: {}", r.body_text());
        assert_eq!(r.error_code(), code, "{target}");
        assert!(!r.body.windows(SECRET.len()).any(|w| w == SECRET));
    }
    // A NUL or a space in the request line is refused by the HTTP parser itself.
    for target in [
        &b"/v2/small\0/manifests/1.0"[..],
        b"/v2/sm all/manifests/1.0",
    ] {
        let r = raw(s.addr, "GET", target, &[]);
        assert_eq!(r.status, 400, "{target:?}");
    }
    // Absolute-form targets are routed by their path only.
    let r = get(s.addr, "http://evil.example/v2/../secret/manifests/latest");
    assert_eq!(r.status, 400);
    let r = get(s.addr, "http://evil.example/v2/small/manifests/1.0");
    assert_eq!(r.status, 200);
}

#[test]
fn links_inside_a_root_are_not_followed() {
    let f = Fixture::new();
    let out = outside(&f);
    let small = &f.small;
    let root = f.root();

    // A blob replaced by a link to a file with exactly the right content: still refused, the
    // cache's files must be its own.
    let config = &small.blobs[0];
    let blob = root.join(blob_path(&common::digest(config)));
    let target = out.path().join("config-copy");
    std::fs::rename(&blob, &target).unwrap();
    symlink(&target, &blob).unwrap();
    // A registry directory that is a link to a repository tree outside.
    symlink(out.path().join("evil"), root.join("manifests/evil.io")).unwrap();
    // A tag that is a link to the secret; a tag that links (inside the root) to a manifest.
    let name = &small.name;
    symlink(
        out.path().join("secret"),
        root.join(tag_path(name, "secret")),
    )
    .unwrap();
    symlink(
        root.join(manifest_path(name, &common::digest(&small.top))),
        root.join(tag_path(name, "inside-link")),
    )
    .unwrap();
    // A repository directory that is a link.
    symlink(
        root.join("manifests/docker.io/library/small"),
        root.join("manifests/docker.io/library/alias"),
    )
    .unwrap();

    let s = TestServer::start(&[root]);
    let r = get(s.addr, &format!("/v2/small/blobs/{}", config.digest));
    assert_eq!((r.status, r.error_code().as_str()), (500, "UNKNOWN"));
    assert!(r.body_text().contains(&config.digest), "{}", r.body_text());
    for target in [
        "/v2/team/app/manifests/v1?ns=evil.io",
        "/v2/org/multi/manifests/v2?ns=evil.io",
        "/v2/small/manifests/secret",
        "/v2/small/manifests/inside-link",
        "/v2/alias/manifests/1.0",
        "/v2/alias/manifests/1.0?ns=docker.io",
    ] {
        let r = get(s.addr, target);
        assert_ne!(r.status, 200, "{target}: {}", r.body_text());
        assert!(
            !r.body.windows(SECRET.len()).any(|w| w == SECRET),
            "{target}"
        );
    }
    // Without ns the linked registry is not even a candidate; the real one still answers.
    let r = get(s.addr, "/v2/org/multi/manifests/v2");
    assert_eq!((r.status, &r.body), (200, &f.multi.top.bytes));
    let logs = s.logs();
    assert!(logs.contains("symbolic link"), "{logs}");
    assert!(logs.contains(&config.digest), "{logs}");
    // The listing of tags leaves the links out.
    let r = get(s.addr, "/v2/small/tags/list");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["1.0"]));
    drop(s);

    // With a second root holding a real copy, the link in the first is skipped.
    let good = Fixture::new();
    let s = TestServer::start(&[root, good.root()]);
    let r = get(s.addr, &format!("/v2/small/blobs/{}", config.digest));
    assert_eq!((r.status, &r.body), (200, &config.bytes));
}

#[test]
fn special_files_are_not_opened() {
    let f = Fixture::new();
    let blob = &f.small.blobs[1];
    let path = f.root().join(blob_path(&common::digest(blob)));
    std::fs::remove_file(&path).unwrap();
    // A FIFO would block a reader forever; it must be refused without reading.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let s = TestServer::start(&[f.root()]);
    let r = get(s.addr, &format!("/v2/small/blobs/{}", blob.digest));
    assert_eq!(r.status, 500);
    assert!(s.logs().contains("not a regular file"), "{}", s.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_certificate_and_key() {
    let f = Fixture::new();
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = imager_registry::testing::tls::make_pki(pki_dir.path());
    let mut config = imager_registryd::Config::new(vec![f.root().to_owned()]);
    config.tls = Some(imager_registryd::TlsFiles {
        cert: pki.cert.clone(),
        key: pki.key.clone(),
    });
    let s = TestServer::start_with(config);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!("https://{}/v2/small/manifests/1.0?ns=docker.io", s.addr);
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), f.small.top.bytes);
    // A blob of several TLS pieces, whole and as a range crossing a piece boundary (the TLS path
    // copies through buffers; plain HTTP uses sendfile).
    let big = f.big_blob();
    let blob_url = format!(
        "https://{}/v2/{}/blobs/{}",
        s.addr,
        f.app.repo(),
        big.digest()
    );
    let r = client.get(&blob_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.unwrap() == big.bytes,
        "blob bytes differ over TLS"
    );
    let (from, to) = ((64 << 10) - 5, (3 << 20) + 7);
    let r = client
        .get(&blob_url)
        .header("Range", format!("bytes={from}-{to}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(
        r.bytes().await.unwrap() == big.bytes[from..=to],
        "range bytes differ over TLS"
    );
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        plain
            .get(format!("http://{}/v2/", s.addr))
            .send()
            .await
            .is_err()
    );
    // A client that does not trust the certificate is refused by TLS.
    assert!(plain.get(&url).send().await.is_err());

    // skopeo, verifying the certificate against the test CA.
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&pki.ca, certs.join("ca.crt")).unwrap();
    let image = format!("docker://{}/small:1.0", s.host());
    let certs_arg = certs.display().to_string();
    let raw = tokio::task::spawn_blocking({
        let work = work.path().to_owned();
        move || {
            imager_registry::testing::skopeo(
                &work,
                &["inspect", "--raw", "--cert-dir", &certs_arg, &image],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(raw, f.small.top.bytes);
}

#[tokio::test(flavor = "current_thread")]
async fn bad_configurations_are_refused_with_the_cause() {
    let f = Fixture::new();
    let bind = |roots: Vec<&Path>, tls: Option<(&Path, &Path)>| {
        let mut c = imager_registryd::Config::new(roots.iter().map(|p| p.to_path_buf()));
        c.address = "127.0.0.1:0".parse().unwrap();
        c.tls = tls.map(|(cert, key)| imager_registryd::TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
        });
        imager_registryd::Server::bind(c)
    };
    let missing = f.root().join("missing");
    let e = bind(vec![f.root(), &missing], None).await.unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    let file = f.root().join(blob_path(&common::digest(&f.small.top)));
    std::fs::write(&file, b"x").unwrap();
    let e = bind(vec![&file], None).await.unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    assert!(bind(vec![], None).await.is_err());
    let junk = f.root().join("junk.pem");
    std::fs::write(&junk, b"not pem").unwrap();
    let e = bind(vec![f.root()], Some((&junk, &junk)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("junk.pem"), "{e}");
}

/// A client that asks for blobs and reads nothing is disconnected after the write timeout, and
/// the connection slot it held serves the next client. With one slot, the second client's
/// answer can only come once the first connection is gone.
#[test]
fn a_client_that_stops_reading_loses_its_connection_and_its_slot() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let f = Fixture::new();
    let mut config = imager_registryd::Config::new(vec![f.root().to_path_buf()]);
    config.max_connections = 1;
    config.write_timeout = Duration::from_secs(1);
    let s = TestServer::start_with(config);
    let big = f.big_blob();
    // 20 pipelined requests for the 4 MiB blob: far more than the socket buffers hold.
    let target = format!("/v2/{}/blobs/{}", f.app.repo(), big.digest());
    let one = format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n");
    let mut stalled = std::net::TcpStream::connect(s.addr).unwrap();
    stalled.write_all(one.repeat(20).as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    let r = get(s.addr, "/v2/");
    let waited = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        waited >= Duration::from_millis(500),
        "answered after {waited:?}: the stalled client did not hold the only slot"
    );
    assert!(waited < Duration::from_secs(8), "answered after {waited:?}");

    // The stalled connection was cut short: it ends before all 20 answers.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match stalled.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(got < 20 * big.bytes.len(), "read {got} bytes");
}

/// Idle keep-alive connections do not hold a new client off: with every slot taken by a
/// connection waiting for its next request, a new client is answered at once, and the connection
/// idle the longest is the one closed to make room (before: the new client waited for the 30 s
/// header timeout of an idle one).
#[test]
fn idle_keep_alive_connections_make_room_for_a_new_client_longest_idle_first() {
    use std::io::{ErrorKind, Read, Write};
    use std::time::{Duration, Instant};
    const SLOTS: usize = 16;
    let f = Fixture::new();
    let mut config = imager_registryd::Config::new(vec![f.root().to_path_buf()]);
    config.max_connections = SLOTS;
    let s = TestServer::start_with(config);

    // One request each, answered, then idle: oldest first.
    let mut idle = Vec::new();
    for _ in 0..SLOTS {
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        // The answer to GET /v2/ is a head and `{}`.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"\r\n\r\n{}") {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed before its answer");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
        idle.push(c);
        // Each goes idle clearly after the one before.
        std::thread::sleep(Duration::from_millis(20));
    }

    let started = Instant::now();
    let r = get(s.addr, "/v2/");
    let waited = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        waited < Duration::from_secs(2),
        "a new client waited {waited:?} behind {SLOTS} idle connections"
    );

    // The longest-idle connection was closed (end of stream, nothing sent); the others were not.
    let mut buf = [0u8; 64];
    assert_eq!(idle[0].read(&mut buf).unwrap(), 0, "oldest idle still open");
    for (i, c) in idle.iter_mut().enumerate().skip(1) {
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        match c.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("idle connection {i} was closed too: {other:?}"),
        }
    }
}
