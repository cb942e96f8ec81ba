//! The forms read through the ISO reader (`imager_iso::read`) and the tar-layer reader
//! (`imager_cache::tar_layer`): an ISO with the cache under `imagecache/`, our OCI-wrapped layout
//! (an uncompressed tar layer, files contiguous in it), and upstream's gzip-wrapped layout, which
//! cannot be served in place and is refused at start. Every test here needs those readers; with
//! the stubs a branch may carry, they fail opening the cache.

#![allow(clippy::unwrap_used)]

mod common;

/// The cache crate's own fixtures, for an upstream-style (gzip) oci-wrapped layout.
#[path = "../../cache/tests/common/mod.rs"]
mod cache_fixture;

use common::containerd_checks::containerd_pulls_every_cached_image_and_runs_one;
use common::forms::{Form, open, serves_blobs_in_place};
use common::skopeo_checks::{
    skopeo_gets_what_the_upstream_registry_served, skopeo_reads_the_demo_cache,
};
use imager_registryd::{Config, Root, ServeError, Server};

#[test]
fn an_iso_is_served_in_place() {
    serves_blobs_in_place(Form::Iso);
}

#[test]
fn an_oci_wrapped_layout_is_served_in_place() {
    serves_blobs_in_place(Form::OciWrapped);
}

#[test]
fn skopeo_reads_the_demo_cache_iso() {
    skopeo_reads_the_demo_cache(Form::Iso);
}

#[test]
fn skopeo_reads_the_demo_cache_oci_wrapped() {
    skopeo_reads_the_demo_cache(Form::OciWrapped);
}

#[test]
fn skopeo_gets_from_the_server_what_the_upstream_registry_served_iso() {
    skopeo_gets_what_the_upstream_registry_served(Form::Iso);
}

#[test]
fn skopeo_gets_from_the_server_what_the_upstream_registry_served_oci_wrapped() {
    skopeo_gets_what_the_upstream_registry_served(Form::OciWrapped);
}

#[test]
fn containerd_pulls_every_cached_image_through_the_mirror_and_runs_one_iso() {
    containerd_pulls_every_cached_image_and_runs_one(Form::Iso);
}

#[test]
fn containerd_pulls_every_cached_image_through_the_mirror_and_runs_one_oci_wrapped() {
    containerd_pulls_every_cached_image_and_runs_one(Form::OciWrapped);
}

/// Upstream's `cache-create --layout oci` gzips the layer: its files can only be read in one
/// pass, so the server refuses it at start, naming it, saying why and what to do.
#[tokio::test]
async fn a_gzip_wrapped_cache_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("upstream.oci");
    cache_fixture::Fixture::new().write_oci_wrapped(&layout);
    let cache = open(&layout);
    assert!(cache.is_streamed());
    let mut config = Config::new([Root::from(cache)]);
    config.address = "127.0.0.1:0".parse().unwrap();
    let err = Server::bind(config).await.unwrap_err();
    assert!(
        matches!(&err, ServeError::Streamed(p) if *p == layout),
        "{err:?}"
    );
    let text = err.to_string();
    for words in [
        layout.display().to_string().as_str(),
        "compressed",
        "no random access",
        "imager cache create",
        "--layout flat",
    ] {
        assert!(text.contains(words), "{words:?} not in: {text}");
    }
}
