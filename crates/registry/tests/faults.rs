//! A fault-injecting proxy in front of a real registry: dropped and stalled connections, 503/429,
//! corrupted and truncated blobs. Retries must end in a verified blob; bad content must end in a
//! clear error with nothing under the final name.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{Action, FaultProxy};
use common::*;
use imager_registry::{BlobRequest, ClientConfig, Error, Reference, RetryPolicy};

const BIG: usize = 2 << 20;

struct Setup {
    _work: tempfile::TempDir,
    _registry: Registry,
    proxy: FaultProxy,
    image: TestImage,
    out: tempfile::TempDir,
}

async fn setup() -> Setup {
    let work = tempfile::tempdir().expect("temp");
    let registry = Registry::start(RegistryOptions::default());
    let image = test_image("amd64", BIG);
    push_image(
        work.path(),
        &registry.host(),
        "test/faults",
        "v1",
        &image,
        None,
    );
    let proxy = FaultProxy::start(registry.addr).await;
    Setup {
        _work: work,
        _registry: registry,
        proxy,
        image,
        out: tempfile::tempdir().expect("temp"),
    }
}

impl Setup {
    fn big(&self) -> &Blob {
        &self.image.layers[1]
    }
    fn big_hex(&self) -> String {
        self.big().digest.trim_start_matches("sha256:").to_owned()
    }
    fn dest(&self) -> std::path::PathBuf {
        self.out
            .path()
            .join("blob")
            .join(format!("sha256-{}", self.big_hex()))
    }
    async fn get_big(&self, config: ClientConfig) -> Result<imager_registry::BlobOutcome, Error> {
        client(config)
            .get_blob(
                &repo(&self.proxy.host(), "test/faults"),
                &self.big().digest(),
                Some(self.big().bytes.len() as u64),
                &self.dest(),
            )
            .await
    }
    fn assert_big_in_place(&self) {
        let bytes = std::fs::read(self.dest()).expect("blob in place");
        assert_eq!(bytes.len(), self.big().bytes.len());
        assert!(bytes == self.big().bytes, "blob content differs");
        assert_eq!(
            files_under(self.out.path()),
            [format!("blob/sha256-{}", self.big_hex())]
        );
    }
    fn assert_nothing_written(&self) {
        assert_eq!(files_under(self.out.path()), Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_mid_blob_resumes_with_range() {
    let s = setup().await;
    s.proxy.inject(&s.big_hex(), 1, Action::DropAfter(300_000));
    let outcome = s
        .get_big(insecure_config())
        .await
        .expect("retried to success");
    assert!(outcome.downloaded);
    s.assert_big_in_place();
    let seen = s.proxy.seen_for(&s.big_hex());
    let ranges: Vec<Option<&str>> = seen.iter().map(|r| r.range.as_deref()).collect();
    // The second request continues where the cut left off.
    assert_eq!(ranges, [None, Some("bytes=300000-")], "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_ignoring_range_is_restarted_and_hash_stays_right() {
    let s = setup().await;
    s.proxy.inject(&s.big_hex(), 1, Action::DropAfter(500_000));
    // The resumed request reaches the registry without its Range: a full 200 comes back, whose
    // first 500000 bytes must be skipped, not hashed twice.
    s.proxy.inject(&s.big_hex(), 1, Action::StripRange);
    s.get_big(insecure_config())
        .await
        .expect("restarted to success");
    s.assert_big_in_place();
    assert_eq!(s.proxy.seen_for(&s.big_hex()).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_keeps_dropping_completes_while_it_makes_progress() {
    let s = setup().await;
    // Six cuts, more than max_attempts (4): each attempt moves the blob forward, which starts a
    // new failure streak, so the transfer still completes.
    s.proxy
        .inject(&s.big_hex(), 6, Action::DropAfter(256 << 10));
    s.get_big(insecure_config()).await.expect("completed");
    s.assert_big_in_place();
    assert_eq!(s.proxy.seen_for(&s.big_hex()).len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connection_times_out_and_resumes() {
    let s = setup().await;
    s.proxy.inject(&s.big_hex(), 1, Action::StallAfter(100_000));
    let config = ClientConfig {
        read_timeout: Duration::from_millis(300),
        ..insecure_config()
    };
    let started = Instant::now();
    s.get_big(config).await.expect("resumed after the stall");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    s.assert_big_in_place();
    let seen = s.proxy.seen_for(&s.big_hex());
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].range.as_deref(), Some("bytes=100000-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_503_once_then_success() {
    let s = setup().await;
    s.proxy.inject("/manifests/", 1, Action::Status(503, None));
    s.proxy.inject(&s.big_hex(), 1, Action::Status(503, None));
    let host = s.proxy.host();
    let m = client(insecure_config())
        .get_manifest(&tagged(&host, "test/faults", "v1"))
        .await
        .expect("manifest after a 503");
    assert_eq!(m.bytes, s.image.manifest.bytes);
    s.get_big(insecure_config())
        .await
        .expect("blob after a 503");
    s.assert_big_in_place();
    assert_eq!(s.proxy.seen_for("/manifests/").len(), 2);
    assert_eq!(s.proxy.seen_for(&s.big_hex()).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_429_honours_retry_after() {
    let s = setup().await;
    s.proxy
        .inject("/manifests/", 1, Action::Status(429, Some("1")));
    let config = ClientConfig {
        retry: RetryPolicy {
            max_backoff: Duration::from_secs(5),
            ..fast_retry()
        },
        ..insecure_config()
    };
    let started = Instant::now();
    client(config)
        .get_manifest(&tagged(&s.proxy.host(), "test/faults", "v1"))
        .await
        .expect("manifest after a 429");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After: 1 not honoured: {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_503_gives_up_with_a_clear_error() {
    let s = setup().await;
    s.proxy
        .inject(&s.big_hex(), usize::MAX, Action::Status(503, None));
    let err = s
        .get_big(insecure_config())
        .await
        .expect_err("never succeeds");
    let msg = chain(&err);
    let image = format!("{}/test/faults", s.proxy.host());
    assert!(
        msg.starts_with(&format!(
            "{image}: blob {}: gave up after 4 attempts in ",
            s.big().digest
        )),
        "{msg}"
    );
    assert!(msg.contains("the registry answered HTTP 503"), "{msg}");
    assert_eq!(err.status(), Some(503));
    assert_eq!(s.proxy.seen_for(&s.big_hex()).len(), 4);
    s.assert_nothing_written();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_is_refused_and_nothing_is_left() {
    let s = setup().await;
    s.proxy
        .inject(&s.big_hex(), usize::MAX, Action::Corrupt(BIG / 2));
    let err = s.get_big(insecure_config()).await.expect_err("corrupt");
    let Error::DigestMismatch {
        image,
        expected,
        actual,
        ..
    } = &err
    else {
        panic!("not a digest mismatch: {err:?}");
    };
    assert_eq!(image, &format!("{}/test/faults", s.proxy.host()));
    assert_eq!(expected.to_string(), s.big().digest);
    assert_ne!(actual, expected);
    assert!(err.to_string().contains(&s.big().digest), "{err}");
    // Not retried: the registry serves what it has.
    assert_eq!(s.proxy.seen_for(&s.big_hex()).len(), 1);
    s.assert_nothing_written();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_blob_is_refused_and_nothing_is_left() {
    let s = setup().await;
    s.proxy
        .inject(&s.big_hex(), usize::MAX, Action::Truncate(1000));
    let err = s.get_big(insecure_config()).await.expect_err("truncated");
    assert!(
        matches!(err, Error::SizeMismatch { actual: 1000, expected, .. } if expected == s.big().bytes.len() as u64),
        "{err:?}"
    );
    assert!(err.to_string().contains(&s.big().digest), "{err}");
    s.assert_nothing_written();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_manifest_is_refused() {
    let s = setup().await;
    s.proxy
        .inject("/manifests/", usize::MAX, Action::Corrupt(10));
    let host = s.proxy.host();
    let c = client(insecure_config());
    // By tag: only the registry's Docker-Content-Digest can catch it.
    let err = c
        .get_manifest(&tagged(&host, "test/faults", "v1"))
        .await
        .expect_err("corrupt by tag");
    assert!(
        matches!(
            err,
            Error::DigestMismatch {
                claimed_by: "Docker-Content-Digest",
                ..
            }
        ),
        "{err:?}"
    );
    // By digest: the reference itself.
    let digest = s.image.manifest.digest();
    let err = c
        .get_manifest(&Reference::with_digest(repo(&host, "test/faults"), digest))
        .await
        .expect_err("corrupt by digest");
    assert!(
        matches!(
            err,
            Error::DigestMismatch {
                claimed_by: "the reference",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&digest.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_blob_fails_the_batch_without_leftovers() {
    let s = setup().await;
    s.proxy.inject(&s.big_hex(), usize::MAX, Action::Corrupt(0));
    let repository = repo(&s.proxy.host(), "test/faults");
    let requests: Vec<BlobRequest> = s
        .image
        .blobs()
        .chain(s.image.blobs()) // duplicates: fetched once
        .map(|b| BlobRequest {
            repository: repository.clone(),
            digest: b.digest(),
            size: Some(b.bytes.len() as u64),
            dest: s
                .out
                .path()
                .join(format!("sha256-{}", b.digest.trim_start_matches("sha256:"))),
        })
        .collect();
    let err = client(insecure_config())
        .fetch_blobs(requests, 3)
        .await
        .expect_err("one is corrupt");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    let left = files_under(s.out.path());
    assert!(
        !left.iter().any(|f| f.contains(".tmp-")),
        "temporary files left: {left:?}"
    );
    assert!(
        !left.iter().any(|f| f.contains(&s.big_hex())),
        "corrupt blob kept: {left:?}"
    );
    // Every distinct digest was asked for at most once.
    for b in s.image.blobs() {
        let hex = b.digest.trim_start_matches("sha256:");
        assert!(s.proxy.seen_for(hex).len() <= 1, "{hex} fetched twice");
    }
}
