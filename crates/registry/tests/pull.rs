//! Pulling from a real distribution registry (Debian's `docker-registry`) over plain HTTP, with
//! images pushed by skopeo: manifests byte-identical to what skopeo reads, blobs verified, index
//! children selected by platform, re-runs resumed.

mod common;

use common::*;
use imager_registry::{
    BlobRequest, ClientConfig, Digest, Error, ImageManifest, ManifestKind, PlatformSelection,
    Reference, media, select_platforms,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_tag_and_by_digest_byte_exact_and_verified() {
    let work = tempfile::tempdir().expect("temp");
    let registry = Registry::start(RegistryOptions::default());
    let host = registry.host();
    let image = test_image("amd64", 256 << 10);
    push_image(work.path(), &host, "test/single", "v1", &image, None);
    let client = client(insecure_config());

    // By tag: exactly the bytes skopeo reads back, and the bytes we pushed.
    let by_tag = client
        .get_manifest(&tagged(&host, "test/single", "v1"))
        .await
        .expect("manifest by tag");
    let skopeo_bytes = skopeo_raw(work.path(), &format!("{host}/test/single:v1"), None);
    assert_eq!(
        by_tag.bytes, skopeo_bytes,
        "manifest differs from skopeo inspect --raw"
    );
    assert_eq!(by_tag.bytes, image.manifest.bytes);
    assert_eq!(by_tag.digest.to_string(), image.manifest.digest);
    assert_eq!(by_tag.media_type, media::OCI_MANIFEST);
    assert_eq!(by_tag.kind(), ManifestKind::Image);

    // By digest, and by tag and digest together.
    let repository = repo(&host, "test/single");
    let by_digest = client
        .get_manifest(&Reference::with_digest(repository.clone(), by_tag.digest))
        .await
        .expect("manifest by digest");
    assert_eq!(by_digest, by_tag);
    let both =
        Reference::with_tag_and_digest(repository.clone(), "v1", by_tag.digest).expect("ref");
    assert_eq!(
        client.get_manifest(&both).await.expect("tag@digest"),
        by_tag
    );

    // A digest that is not the tag's: the registry does not have it.
    let other = Reference::with_digest(repository.clone(), Digest::of(b"not a manifest"));
    let err = client
        .get_manifest(&other)
        .await
        .expect_err("unknown digest");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    // Every blob, concurrently, into a cache-like tree; each file's sha256 is its name.
    let parsed = ImageManifest::parse(&by_tag.media_type, &by_tag.bytes).expect("parse");
    let out = tempfile::tempdir().expect("temp");
    let requests = || {
        parsed.blobs().map(|d| BlobRequest {
            repository: repository.clone(),
            digest: d.digest,
            size: Some(d.size),
            dest: out.path().join(format!("blob/sha256-{}", d.digest.hex())),
        })
    };
    let outcomes = client.fetch_blobs(requests(), 4).await.expect("blobs");
    assert_eq!(outcomes.len(), 3);
    for (o, want) in outcomes.iter().zip(image.blobs()) {
        assert!(o.downloaded);
        let bytes = std::fs::read(&o.path).expect("read blob");
        assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), want.digest);
        assert_eq!(bytes, want.bytes);
        assert_eq!(o.size, want.bytes.len() as u64);
    }
    // Only the three final names: no temporary files left.
    let mut want: Vec<String> = image
        .blobs()
        .map(|b| format!("blob/sha256-{}", b.digest.trim_start_matches("sha256:")))
        .collect();
    want.sort();
    assert_eq!(files_under(out.path()), want);

    // A re-run skips verified files; a damaged one is fetched again.
    let damaged = &outcomes[2].path;
    let mut bytes = std::fs::read(damaged).expect("read");
    bytes[1000] ^= 1;
    std::fs::write(damaged, &bytes).expect("damage");
    let again = client.fetch_blobs(requests(), 4).await.expect("re-run");
    let downloaded: Vec<bool> = again.iter().map(|o| o.downloaded).collect();
    assert_eq!(downloaded, [false, false, true]);
    assert_eq!(std::fs::read(damaged).expect("read"), image.layers[1].bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_with_only_the_amd64_child() {
    let work = tempfile::tempdir().expect("temp");
    let registry = Registry::start(RegistryOptions::default());
    let host = registry.host();
    let amd64 = test_image("amd64", 64 << 10);
    let arm64 = test_image("arm64", 64 << 10);
    let index = push_index(
        work.path(),
        &host,
        "test/multi",
        "v1",
        &[amd64.clone(), arm64.clone()],
    );
    let client = client(insecure_config());
    let repository = repo(&host, "test/multi");

    let top = client
        .get_manifest(&tagged(&host, "test/multi", "v1"))
        .await
        .expect("index");
    assert_eq!(
        top.bytes,
        skopeo_raw(work.path(), &format!("{host}/test/multi:v1"), None)
    );
    assert_eq!(top.bytes, index.bytes);
    assert_eq!(top.kind(), ManifestKind::Index);

    let amd64_only = PlatformSelection::parse(["linux/amd64"]).expect("platform");
    let children = select_platforms(&top.media_type, &top.bytes, &amd64_only).expect("select");
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].digest.to_string(), amd64.manifest.digest);

    let out = tempfile::tempdir().expect("temp");
    let mut requests = Vec::new();
    for child in &children {
        let m = client
            .get_manifest(&Reference::with_digest(repository.clone(), child.digest))
            .await
            .expect("child manifest");
        assert_eq!(m.bytes, amd64.manifest.bytes);
        let parsed = ImageManifest::parse(&m.media_type, &m.bytes).expect("parse child");
        requests.extend(parsed.blobs().map(|d| BlobRequest {
            repository: repository.clone(),
            digest: d.digest,
            size: Some(d.size),
            dest: out.path().join(format!("sha256-{}", d.digest.hex())),
        }));
    }
    client.fetch_blobs(requests, 2).await.expect("blobs");
    let mut want: Vec<String> = amd64
        .blobs()
        .map(|b| format!("sha256-{}", b.digest.trim_start_matches("sha256:")))
        .collect();
    want.sort();
    // The amd64 blobs and none of arm64's.
    assert_eq!(files_under(out.path()), want);
    for b in arm64.blobs() {
        assert!(
            !want
                .iter()
                .any(|w| w.ends_with(b.digest.trim_start_matches("sha256:")))
        );
    }

    let all = select_platforms(&top.media_type, &top.bytes, &PlatformSelection::All).expect("all");
    assert_eq!(all.len(), 2);
    let err = select_platforms(
        &top.media_type,
        &top.bytes,
        &PlatformSelection::parse(["linux/s390x"]).expect("platform"),
    )
    .expect_err("no s390x");
    assert!(
        err.to_string().contains("linux/amd64, linux/arm64"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_things_are_not_found_without_retries() {
    let registry = Registry::start(RegistryOptions::default());
    let proxy = proxy::FaultProxy::start(registry.addr).await;
    let host = proxy.host();
    let client = client(insecure_config());

    let err = client
        .get_manifest(&tagged(&host, "test/nothing", "v1"))
        .await
        .expect_err("no such image");
    let msg = chain(&err);
    assert!(
        msg.starts_with(&format!("not found: {host}/test/nothing:v1: manifest v1")),
        "{msg}"
    );
    // The registry's own words are kept.
    assert!(
        msg.contains("NAME_UNKNOWN") || msg.contains("MANIFEST_UNKNOWN"),
        "{msg}"
    );
    assert_eq!(
        proxy.seen_for("/manifests/").len(),
        1,
        "a 404 must not be retried"
    );

    let out = tempfile::tempdir().expect("temp");
    let digest = Digest::of(b"absent");
    let err = client
        .get_blob(
            &repo(&host, "test/nothing"),
            &digest,
            Some(6),
            &out.path().join("x"),
        )
        .await
        .expect_err("no such blob");
    assert!(
        chain(&err).starts_with(&format!("not found: {host}/test/nothing: blob {digest}")),
        "{}",
        chain(&err)
    );
    assert_eq!(err.status(), Some(404));
    assert!(files_under(out.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_over_the_cap_is_refused() {
    let work = tempfile::tempdir().expect("temp");
    let registry = Registry::start(RegistryOptions::default());
    let host = registry.host();
    push_image(
        work.path(),
        &host,
        "test/big",
        "v1",
        &test_image("amd64", 1024),
        None,
    );
    let small_cap = ClientConfig {
        max_manifest_size: 100,
        ..insecure_config()
    };
    let err = client(small_cap)
        .get_manifest(&tagged(&host, "test/big", "v1"))
        .await
        .expect_err("over the cap");
    assert!(
        matches!(err, Error::ManifestTooLarge { limit: 100, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("{host}/test/big:v1: manifest v1 is larger than the 100-byte manifest limit")
    );
}
