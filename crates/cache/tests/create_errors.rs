//! `cache create` on bad input, against a real registry (through a fault-injecting proxy where the
//! registry itself would behave): each case is a clear error naming the image (and the digest
//! when a blob is wrong), and nothing is left at the output path or beside it.

#![allow(clippy::unwrap_used)]

mod create_support;

use std::path::Path;

use create_support::*;
use imager_cache::create::{parse_image_list, parse_images};
use imager_cache::{CreateError, ReferenceError};
use imager_registry::testing::proxy::Action;
use imager_registry::testing::tls::{basic_auth_entry, docker_config, htpasswd, make_pki};
use imager_registry::testing::{Registry, RegistryOptions, push_image, test_image};
use imager_registry::{ClientConfig, DockerConfigSource, media};

/// Runs a failing create into `<work>/out/cache` and checks nothing was left behind; returns the
/// error and its chain as the CLI prints it.
fn fails(w: &World, opts: &mut imager_cache::CreateOptions) -> (CreateError, String) {
    let parent = w.work.path().join("out");
    std::fs::create_dir_all(&parent).unwrap();
    opts.output = parent.join("cache");
    let err = create(opts).unwrap_err();
    assert_nothing_left(&parent);
    let msg = chain(&err);
    (err, msg)
}

fn assert_nothing_left(parent: &Path) {
    assert_eq!(
        names(parent),
        Vec::<String>::new(),
        "left in {}",
        parent.display()
    );
}

#[test]
fn malformed_references_are_refused_before_any_request() {
    let err = parse_images(["alpine", "ghcr.io/x/../etc"]).unwrap_err();
    assert!(
        matches!(&err, CreateError::Reference(ReferenceError::DotComponent { component, .. }) if component == ".."),
        "{err}"
    );
    assert!(
        chain(&err).contains("\"ghcr.io/x/../etc\""),
        "{}",
        chain(&err)
    );
    for bad in [
        "library/UPPER",
        "a b",
        "alpine:",
        "alpine@sha256:abc",
        "[::1]:5000/x",
    ] {
        let err = parse_images([bad]).unwrap_err();
        assert!(
            chain(&err).contains(&format!("{bad:?}")),
            "{bad}: {}",
            chain(&err)
        );
    }
    let err = parse_image_list("alpine\n# fine\n\nbusybox:1.36\nnot a ref\n").unwrap_err();
    assert_eq!(
        chain(&err),
        "line 5 of the image list: image reference \"not a ref\": repository path component \"not a ref\" is not lower-case letters and digits joined by '.', '_', '__' or dashes"
    );
    // No images at all.
    let w = World::start();
    let mut o = w.options(Path::new("unused"), &[], "linux/amd64");
    let (err, _) = fails(&w, &mut o);
    assert!(matches!(err, CreateError::NoImages));
    assert!(w.take_requests().is_empty());
}

#[test]
fn registry_refusals_and_bad_content_name_the_image() {
    let w = World::start();
    let host = w.host();

    // An unknown platform: the available ones are listed; no blob was fetched.
    w.take_requests();
    let mut o = w.options(
        Path::new(""),
        &["test/a:v1", "test/multi:v1"],
        "linux/s390x",
    );
    let (err, msg) = fails(&w, &mut o);
    assert!(matches!(err, CreateError::UnknownPlatform { .. }), "{msg}");
    assert_eq!(
        msg,
        format!(
            "{host}/test/multi:v1: the index has no linux/s390x image; it has: linux/amd64, linux/arm64"
        )
    );
    assert!(w.take_blob_gets().is_empty());

    // 404: a tag the registry does not have.
    let mut o = w.options(Path::new(""), &["test/a:v1", "test/a:nope"], "linux/amd64");
    let (_, msg) = fails(&w, &mut o);
    assert!(
        msg.starts_with(&format!("not found: {host}/test/a:nope: manifest nope")),
        "{msg}"
    );

    // 403 from the registry.
    w.proxy
        .inject("/test/b/manifests/", 1, Action::Status(403, None));
    let mut o = w.options(Path::new(""), &["test/b:v1"], "linux/amd64");
    let (_, msg) = fails(&w, &mut o);
    assert!(
        msg.starts_with(&format!("denied: {host}/test/b:v1: manifest v1")),
        "{msg}"
    );

    // A blob whose bytes are not its digest. With a layer cache: it keeps no partial file.
    let layers = w.work.path().join("layers");
    let a_own = &w.a.layers[1];
    w.proxy.inject(&hex(a_own), 1, Action::Corrupt(5));
    let mut o = w.options(Path::new(""), &["test/a:v1"], "linux/amd64");
    o.layer_cache = Some(layers.clone());
    let (err, msg) = fails(&w, &mut o);
    assert!(matches!(err, CreateError::Blob { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!(
            "{host}/test/a:v1: layer 2 of the image {}: {host}/test/a: blob {}: the content's digest is sha256:",
            a_own.digest, a_own.digest
        )),
        "{msg}"
    );
    assert!(
        names(&layers.join("blobs/sha256"))
            .iter()
            .all(|n| n != &hex(a_own) && !n.contains("tmp")),
        "{:?}",
        names(&layers.join("blobs/sha256"))
    );

    // A truncated blob (the registry announces and sends fewer bytes than the descriptor).
    let b_own = &w.b.layers[1];
    w.proxy.inject(&hex(b_own), 1, Action::Truncate(1000));
    let mut o = w.options(Path::new(""), &["test/b:v1"], "linux/amd64");
    let (_, msg) = fails(&w, &mut o);
    assert!(
        msg.starts_with(&format!(
            "{host}/test/b:v1: layer 2 of the image {}",
            b_own.digest
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with(&format!(
            "1000 bytes served, but the descriptor says {}",
            b_own.bytes.len()
        )),
        "{msg}"
    );

    // A manifest over the 4 MiB cap (the registry itself refuses to store one; a hostile or
    // broken one could serve it).
    let huge = format!(
        r#"{{"schemaVersion":2,"annotations":{{"x":"{}"}}}}"#,
        "x".repeat(5 << 20)
    );
    w.proxy.inject(
        "/test/a/manifests/v1",
        1,
        Action::Respond(media::OCI_MANIFEST, huge.into_bytes()),
    );
    let mut o = w.options(Path::new(""), &["test/a:v1"], "linux/amd64");
    let (_, msg) = fails(&w, &mut o);
    assert_eq!(
        msg,
        format!("{host}/test/a:v1: manifest v1 is larger than the 4194304-byte manifest limit")
    );

    // After all that, the same request works: the faults were the registry's, not state of ours.
    let mut o = w.options(Path::new(""), &["test/a:v1", "test/b:v1"], "linux/amd64");
    o.output = w.work.path().join("out/cache");
    create(&o).unwrap();
}

#[test]
fn credentials_unauthorized_and_missing_helper() {
    let work = tempfile::tempdir().unwrap();
    let pki = make_pki(work.path());
    let registry = Registry::start(RegistryOptions {
        tls: Some((pki.cert.clone(), pki.key.clone())),
        htpasswd: Some(htpasswd(work.path(), "puller", "s3cret")),
        token: None,
    });
    let host = registry.host();
    let image = test_image("amd64", 16 << 10);
    push_image(
        work.path(),
        &host,
        "test/private",
        "v1",
        &image,
        Some("puller:s3cret"),
    );
    let parent = work.path().join("out");
    std::fs::create_dir_all(&parent).unwrap();
    let opts = |config: serde_json::Value, name: &str| {
        let mut o = imager_cache::CreateOptions::new(
            parent.join("cache"),
            parse_images([format!("{host}/test/private:v1").as_str()]).unwrap(),
        );
        o.layout = imager_cache::OutputLayout::Flat;
        o.client = ClientConfig {
            // Our CA is not trusted: --insecure, as a user of a self-signed registry would.
            insecure: true,
            docker_config: DockerConfigSource::File(docker_config(
                &work.path().join(name),
                &config,
            )),
            retry: imager_registry::testing::fast_retry(),
            ..ClientConfig::default()
        };
        o
    };

    // No credentials: 401, naming the image and saying what is missing.
    let err = create(&opts(serde_json::json!({}), "none")).unwrap_err();
    assert_nothing_left(&parent);
    let msg = chain(&err);
    assert!(
        msg.starts_with(&format!(
            "unauthorized: {host}/test/private:v1: manifest v1: "
        )),
        "{msg}"
    );
    assert!(msg.contains("there are no credentials for"), "{msg}");

    // A credential helper that is not installed.
    let err = create(&opts(
        serde_json::json!({"credHelpers": {host.clone(): "imager-test-not-installed"}}),
        "helper",
    ))
    .unwrap_err();
    assert_nothing_left(&parent);
    assert_eq!(
        chain(&err),
        format!(
            "{host}/test/private:v1: cannot get the credentials for {host}: credential helper \
             docker-credential-imager-test-not-installed (configured for {host}) is not installed or not on PATH"
        )
    );

    // The right credentials: the cache is made.
    let ok = opts(
        serde_json::json!({"auths": {host.clone(): basic_auth_entry("puller", "s3cret")}}),
        "good",
    );
    let created = create(&ok).unwrap();
    assert_eq!(created.blobs, 3);
    assert!(
        imager_cache::verify_flat(&parent.join("cache"))
            .unwrap()
            .is_ok()
    );
}
