//! Pushing into a real distribution registry (Debian's `docker-registry`): blobs monolithic and
//! chunked, HEAD-first skips, cross-repository mounts, an upload cut midway and resumed, manifests
//! byte-exact (read back by skopeo), and the bearer dance with a push scope.

mod common;

use std::path::Path;

use common::token::{SERVICE, TokenServer};
use common::*;
use imager_registry::testing::proxy::{Action, FaultProxy};
use imager_registry::testing::tls::{basic_auth_entry, docker_config};
use imager_registry::{
    BlobPushed, BlobSource, Client, ClientConfig, DockerConfigSource, UploadOptions,
};

/// Writes each blob of `image` into `dir`, returning its source.
fn sources(dir: &Path, image: &TestImage) -> Vec<(Blob, BlobSource)> {
    image
        .blobs()
        .map(|b| {
            let path = dir.join(b.digest.replace(':', "-"));
            std::fs::write(&path, &b.bytes).expect("write blob");
            (b.clone(), BlobSource::file(path, b.bytes.len() as u64))
        })
        .collect()
}

async fn push_all(
    client: &Client,
    host: &str,
    name: &str,
    tag: &str,
    blobs: &[(Blob, BlobSource)],
    image: &TestImage,
    opts: &UploadOptions,
) -> Vec<BlobPushed> {
    let r = repo(host, name);
    let mut out = Vec::new();
    for (b, src) in blobs {
        out.push(
            client
                .push_blob(name, &r, &b.digest(), src, None, opts)
                .await
                .expect("push blob"),
        );
    }
    client
        .put_manifest(
            name,
            &r,
            tag,
            image.manifest.media_type,
            &image.manifest.bytes,
        )
        .await
        .expect("put manifest");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_and_manifests_land_byte_exact_and_a_rerun_sends_nothing() {
    let work = tempfile::tempdir().expect("temp");
    let registry = Registry::start(RegistryOptions::default());
    let host = registry.host();
    let image = test_image("amd64", 300 << 10);
    let blobs = sources(work.path(), &image);
    let client = client(insecure_config());
    // Chunks of 64 KiB: the big layer goes in several PATCHes, the small blobs in one PUT.
    let opts = UploadOptions {
        monolithic_max: 64 << 10,
        chunk_size: 64 << 10,
    };
    let first = push_all(&client, &host, "push/a", "v1", &blobs, &image, &opts).await;
    assert!(
        first
            .iter()
            .all(|p| matches!(p, BlobPushed::Uploaded { .. })),
        "{first:?}"
    );
    assert!(
        first
            .iter()
            .any(|p| matches!(p, BlobPushed::Uploaded { requests, .. } if *requests > 3)),
        "the big layer was chunked: {first:?}"
    );
    assert_eq!(
        skopeo_raw(work.path(), &format!("{host}/push/a:v1"), None),
        image.manifest.bytes
    );
    for (b, _) in &blobs {
        let mut got = Vec::new();
        client
            .get_blob_to_writer(
                &repo(&host, "push/a"),
                &b.digest(),
                Some(b.bytes.len() as u64),
                &mut got,
            )
            .await
            .expect("blob back");
        assert_eq!(got, b.bytes);
    }
    assert_eq!(
        client
            .manifest_digest("push/a", &repo(&host, "push/a"), "v1")
            .await
            .expect("head"),
        Some(image.manifest.digest())
    );

    // Again: every blob is present.
    let again = push_all(&client, &host, "push/a", "v1", &blobs, &image, &opts).await;
    assert!(again.iter().all(|p| *p == BlobPushed::Present), "{again:?}");

    // Another repository: mounted from the first, no byte sent.
    let b = repo(&host, "push/b");
    let (blob, src) = &blobs[1];
    let mounted = client
        .push_blob(
            "push/b",
            &b,
            &blob.digest(),
            src,
            Some(&repo(&host, "push/a")),
            &opts,
        )
        .await
        .expect("mount");
    assert_eq!(mounted, BlobPushed::Mounted);
    assert!(
        client
            .has_blob("push/b", &b, &blob.digest())
            .await
            .expect("head")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_midway_is_resumed() {
    let work = tempfile::tempdir().expect("temp");
    let registry = Registry::start(RegistryOptions::default());
    let proxy = FaultProxy::start(registry.addr).await;
    let host = proxy.host();
    let image = test_image("arm64", 1 << 20);
    let blobs = sources(work.path(), &image);
    let client = client(insecure_config());
    let opts = UploadOptions {
        monolithic_max: 128 << 10,
        chunk_size: 512 << 10,
    };
    // The first two upload bodies are cut after 100 KiB: one chunk of the big layer is
    // resumed from where the registry says the upload stands.
    proxy.inject("/blobs/uploads/", 2, Action::CutUploadAfter(100 << 10));
    let big = blobs
        .iter()
        .find(|(b, _)| b.bytes.len() > 1 << 20)
        .expect("big layer");
    let pushed = client
        .push_blob(
            "push/cut",
            &repo(&host, "push/cut"),
            &big.0.digest(),
            &big.1,
            None,
            &opts,
        )
        .await
        .expect("push despite cuts");
    assert!(matches!(pushed, BlobPushed::Uploaded { .. }), "{pushed:?}");
    let cut: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.fault.is_some())
        .collect();
    assert_eq!(cut.len(), 2, "{cut:?}");
    let mut got = Vec::new();
    client
        .get_blob_to_writer(
            &repo(&host, "push/cut"),
            &big.0.digest(),
            Some(big.0.bytes.len() as u64),
            &mut got,
        )
        .await
        .expect("blob back");
    assert_eq!(got, big.0.bytes);

    // A cut monolithic upload starts over.
    let (small, src) = &blobs[0];
    proxy.inject("/blobs/uploads/", 1, Action::CutUploadAfter(10));
    client
        .push_blob(
            "push/cut",
            &repo(&host, "push/cut"),
            &small.digest(),
            src,
            None,
            &opts,
        )
        .await
        .expect("small push despite a cut");
    assert!(
        client
            .has_blob("push/cut", &repo(&host, "push/cut"), &small.digest())
            .await
            .expect("head")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_source_is_refused_before_commit() {
    let work = tempfile::tempdir().expect("temp");
    let registry = Registry::start(RegistryOptions::default());
    let host = registry.host();
    let image = test_image("amd64", 200 << 10);
    let blobs = sources(work.path(), &image);
    let (big, src) = blobs
        .iter()
        .find(|(b, _)| b.bytes.len() > 200 << 10)
        .expect("big");
    let mut bytes = big.bytes.clone();
    bytes[1000] ^= 1;
    std::fs::write(&src.path, &bytes).expect("corrupt");
    let client = client(insecure_config());
    let opts = UploadOptions {
        monolithic_max: 16 << 10,
        chunk_size: 64 << 10,
    };
    let err = client
        .push_blob(
            "push/bad",
            &repo(&host, "push/bad"),
            &big.digest(),
            src,
            None,
            &opts,
        )
        .await
        .expect_err("corrupt blob");
    let text = chain(&err);
    assert!(text.contains("the cache says"), "{text}");
    assert!(
        !client
            .has_blob("push/bad", &repo(&host, "push/bad"), &big.digest())
            .await
            .expect("head")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_with_push_scope() {
    let work = tempfile::tempdir().expect("temp");
    let tokens = TokenServer::start(work.path(), "pusher", "s3cret", "refresh-me").await;
    let registry = Registry::start(RegistryOptions {
        token: Some((
            tokens.realm.clone(),
            SERVICE.to_owned(),
            common::token::ISSUER.to_owned(),
            tokens.roots.clone(),
        )),
        ..RegistryOptions::default()
    });
    let host = registry.host();
    let image = test_image("amd64", 64 << 10);
    let blobs = sources(work.path(), &image);
    let config = docker_config(
        &work.path().join("cfg"),
        &serde_json::json!({"auths": {host.clone(): basic_auth_entry("pusher", "s3cret")}}),
    );
    let client = client(ClientConfig {
        docker_config: DockerConfigSource::File(config),
        ..insecure_config()
    });
    push_all(
        &client,
        &host,
        "push/tok",
        "v1",
        &blobs,
        &image,
        &UploadOptions::default(),
    )
    .await;
    let scopes: Vec<String> = tokens.asked().into_iter().flat_map(|a| a.scopes).collect();
    assert!(
        scopes.iter().any(|s| s == "repository:push/tok:pull,push"),
        "{scopes:?}"
    );
    assert_eq!(
        skopeo_raw(
            work.path(),
            &format!("{host}/push/tok:v1"),
            Some("pusher:s3cret")
        ),
        image.manifest.bytes
    );
}
