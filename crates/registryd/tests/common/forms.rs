//! The same cache in each form `imager cache serve` accepts, made from a flat tree: the tree
//! itself (a live [`Root::Tree`]), a plain OCI layout (skopeo's, oras'), our OCI-wrapped layout
//! (one uncompressed tar layer holding the tree, as `imager cache create --layout oci` writes
//! it), and an ISO with the tree under `imagecache/` (as `imager iso` lays it out); the last
//! three opened in place ([`Root::Cache`]).

use std::path::{Path, PathBuf};

use imager_cache::{Cache, ReadOptions};
use imager_registryd::Root;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Flat,
    OciLayout,
    OciWrapped,
    Iso,
}

impl Form {
    /// The cache of the flat tree `flat` in this form, written under `work` (a directory of the
    /// caller's), as a server root.
    pub fn root(self, flat: &Path, work: &Path) -> Root {
        match self {
            Self::Flat => Root::Tree(flat.to_owned()),
            form => Root::from(open(&form.write(flat, work))),
        }
    }

    /// Writes the form's file or directory for `flat` under `work`; returns its path (`flat`
    /// itself for [`Form::Flat`]).
    pub fn write(self, flat: &Path, work: &Path) -> PathBuf {
        std::fs::create_dir_all(work).unwrap();
        let out = |name: &str| {
            let mut n = 0;
            loop {
                let p = work.join(format!("{name}-{n}"));
                if !p.exists() {
                    return p;
                }
                n += 1;
            }
        };
        match self {
            Self::Flat => flat.to_owned(),
            Self::OciLayout => {
                let dir = out("plain.oci");
                write_plain_layout(flat, &dir);
                dir
            }
            Self::OciWrapped => {
                let dir = out("wrapped.oci");
                let platform = imager_cache::Platform::parse("linux/amd64").unwrap();
                imager_cache::oci_out::write_wrapped_layout(
                    flat,
                    &dir,
                    &[Some(platform)],
                    0,
                    &mut |_| {},
                )
                .unwrap();
                dir
            }
            Self::Iso => {
                let iso = out("cache.iso");
                let mut spec = imager_iso::IsoSpec::new("TALOS_TEST", 0).unwrap();
                spec.add_dir_tree("imagecache", flat).unwrap();
                let file = std::fs::File::create_new(&iso).unwrap();
                spec.write(&file, &iso, &mut |_| {}).unwrap();
                iso
            }
        }
    }
}

/// Opens a cache in place, as `imager cache serve` does.
pub fn open(path: &Path) -> Cache {
    Cache::open(path, &ReadOptions::default())
        .unwrap_or_else(|e| panic!("opening {}: {e:?}", path.display()))
}

/// A plain OCI layout of a flat tree: every blob and manifest file under `blobs/sha256/`, and
/// `index.json` naming each tag by its full reference (`org.opencontainers.image.ref.name`).
pub fn write_plain_layout(flat: &Path, out: &Path) {
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let inventory = imager_cache::flat::scan(flat).unwrap();
    let copy = |rel: &Path, digest: &imager_cache::Digest| {
        let hex = digest.to_string();
        let hex = hex.strip_prefix("sha256:").unwrap();
        let dest = blobs.join(hex);
        if !dest.exists() {
            std::fs::copy(flat.join(rel), dest).unwrap();
        }
    };
    for b in &inventory.blobs {
        copy(&b.path, &b.digest);
    }
    let mut descriptors = Vec::new();
    for repo in &inventory.repos {
        for m in &repo.manifests {
            copy(&m.path, &m.digest);
        }
        for t in &repo.tags {
            let bytes = std::fs::read(flat.join(&t.path)).unwrap();
            let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let media_type = doc["mediaType"]
                .as_str()
                .unwrap_or("application/vnd.oci.image.manifest.v1+json");
            descriptors.push(serde_json::json!({
                "mediaType": media_type,
                "digest": format!("sha256:{}", super::sha256_hex(&bytes)),
                "size": bytes.len(),
                "annotations": {
                    "org.opencontainers.image.ref.name":
                        format!("{}/{}:{}", repo.registry, repo.repository, t.tag),
                },
            }));
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": descriptors,
    });
    std::fs::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Flips one byte of a file in place.
pub fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
}

/// A cache in `form` (not [`Form::Flat`]) served in place: every manifest and blob byte-for-byte
/// as the tree has it, over plain HTTP (`sendfile` from the entry's offset) and TLS (pieces read
/// from it), whole and by ranges; then, with a byte of the big blob flipped where it lies in the
/// source file (the layout's blob file, the layer blob, the ISO), that blob falls through to the
/// next root, and with no other root it is a 500.
pub fn serves_blobs_in_place(form: Form) {
    use super::{Fixture, TestServer, digest, get, raw};
    assert_ne!(form, Form::Flat);
    let f = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let path = form.write(f.root(), work.path());
    let cache = open(&path);
    let big = f.big_blob().clone();
    let entry = cache
        .get(&format!("blob/{}", digest(&big).file_name()))
        .expect("the big blob is an entry")
        .clone();
    let (source, runs) = cache.pieces(&entry).expect("not a streamed entry");
    let (source, at) = (source.to_owned(), runs[0].0);

    let s = TestServer::start_roots(vec![Root::from(cache)]);
    for img in f.images() {
        for reference in [img.tag.as_str(), img.top.digest.as_str()] {
            for target in [
                format!("/v2/{}/manifests/{reference}?{}", img.repo(), img.ns()),
                format!(
                    "/v2/{}/{}/manifests/{reference}",
                    img.name.registry(),
                    img.repo()
                ),
            ] {
                let r = get(s.addr, &target);
                assert_eq!(r.status, 200, "{target}: {}", r.body_text());
                assert_eq!(r.body, img.top.bytes, "{target}");
            }
        }
        let r = get(
            s.addr,
            &format!("/v2/{}/tags/list?{}", img.repo(), img.ns()),
        );
        assert_eq!(r.status, 200, "{}", r.body_text());
        let tags: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            tags["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == &*img.tag),
            "{tags}"
        );
        for b in &img.blobs {
            let r = get(s.addr, &format!("/v2/{}/blobs/{}", img.repo(), b.digest));
            assert_eq!(r.status, 200, "{}: {}", b.digest, r.body_text());
            assert!(r.body == b.bytes, "{} differs", b.digest);
        }
    }
    let len = big.bytes.len();
    let target = format!("/v2/{}/blobs/{}", f.app.repo(), big.digest);
    for (range, from, to) in [
        ("bytes=0-0".to_owned(), 0, 0),
        ("bytes=5-1000".to_owned(), 5, 1000),
        (format!("bytes={}-", len - 10), len - 10, len - 1),
        ("bytes=-100".to_owned(), len - 100, len - 1),
        (
            format!("bytes={}-{}", (64 << 10) - 5, (3 << 20) + 7),
            (64 << 10) - 5,
            (3 << 20) + 7,
        ),
    ] {
        let r = raw(s.addr, "GET", target.as_bytes(), &[("Range", &range)]);
        assert_eq!(r.status, 206, "{range}: {}", r.body_text());
        assert!(r.body == big.bytes[from..=to], "{range}: bytes differ");
        let want = format!("bytes {from}-{to}/{len}");
        assert_eq!(r.header("content-range"), Some(want.as_str()));
    }
    let r = raw(s.addr, "HEAD", target.as_bytes(), &[]);
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
    drop(s);

    // TLS: the same bytes through the buffered path.
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = imager_registry::testing::tls::make_pki(pki_dir.path());
    let mut config = imager_registryd::Config::new([Root::from(open(&path))]);
    config.tls = Some(imager_registryd::TlsFiles {
        cert: pki.cert.clone(),
        key: pki.key.clone(),
    });
    let s = TestServer::start_with(config);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let url = format!("https://{}{target}", s.addr);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap() == big.bytes, "differs over TLS");
        let (from, to) = ((64 << 10) - 5, (3 << 20) + 7);
        let r = client
            .get(&url)
            .header("Range", format!("bytes={from}-{to}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert!(
            r.bytes().await.unwrap() == big.bytes[from..=to],
            "range differs over TLS"
        );
    });
    drop(s);

    // Damaged where it lies: the next root serves it; alone, a 500.
    flip_byte(&source, at + 1000);
    let s = TestServer::start_roots(vec![
        Root::from(open(&path)),
        Root::Tree(f.root().to_owned()),
    ]);
    let r = get(s.addr, &target);
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert!(r.body == big.bytes, "the next root's copy differs");
    assert!(
        s.logs().contains("not served from this root"),
        "{}",
        s.logs()
    );
    drop(s);
    let s = TestServer::start_roots(vec![Root::from(open(&path))]);
    let r = get(s.addr, &target);
    assert_eq!(r.status, 500, "{}", r.body_text());
    assert_eq!(r.error_code(), "UNKNOWN");
    assert!(r.body_text().contains(&big.digest), "{}", r.body_text());
    // A range of it is refused too: the whole blob is checked, not the bytes asked for.
    let r = raw(s.addr, "GET", target.as_bytes(), &[("Range", "bytes=0-10")]);
    assert_eq!(r.status, 500);
}
