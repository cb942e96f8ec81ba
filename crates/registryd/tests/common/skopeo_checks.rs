//! skopeo, a client nobody here wrote, pulls from the server: manifests byte-identical to what
//! the upstream registry (Debian's docker-registry) serves, and `skopeo copy --all` into an OCI
//! layout gives the same digests as copying from the upstream registry. Parametrized by the form
//! the cache is served in; the tests are in skopeo.rs and forms.rs.

use std::collections::BTreeSet;
use std::path::Path;

use super::forms::Form;
use super::{TestServer, demo_cache, sha256_hex};
use imager_cache::{CreateOptions, OutputLayout, Reference};
use imager_registry::testing::{
    Registry, RegistryOptions, fast_retry, push_image, push_index, skopeo, skopeo_raw, test_image,
    two_images_sharing_a_layer,
};
use imager_registry::{ClientConfig, DockerConfigSource, PlatformSelection};

/// `skopeo copy` into `oci:<dir>:<tag>`; returns (the layout's top manifest digest, the blob
/// files it holds), after checking that every blob file hashes to its name.
pub fn copy_to_layout(
    work: &Path,
    src: &str,
    dir: &Path,
    extra: &[&str],
) -> (String, BTreeSet<String>) {
    let dest = format!("oci:{}:t", dir.display());
    let mut args = vec![
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--preserve-digests",
    ];
    args.extend(extra);
    args.extend([src, dest.as_str()]);
    skopeo(work, &args);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let top = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let mut blobs = BTreeSet::new();
    for e in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        assert_eq!(sha256_hex(&std::fs::read(e.path()).unwrap()), name);
        blobs.insert(name);
    }
    (top, blobs)
}

/// skopeo reads the repository's demo cache, served in `form`: manifests byte-identical to the
/// tree's, and a copy of an image made only of the cache's blobs.
pub fn skopeo_reads_the_demo_cache(form: Form) {
    let root = demo_cache();
    let work = tempfile::tempdir().unwrap();
    let s = TestServer::start_roots(vec![form.root(&root, &work.path().join("forms"))]);
    let busybox =
        std::fs::read(root.join("manifests/docker.io/library/busybox/reference/latest")).unwrap();
    let csi = "canonical/k8s-snap/sig-storage/csi-node-driver-registrar";
    let csi_bytes =
        std::fs::read(root.join(format!("manifests/ghcr.io/{csi}/reference/v2.13.0"))).unwrap();
    for (image, bytes) in [
        ("library/busybox:latest", &busybox),
        ("busybox", &busybox),
        (
            "ghcr.io/canonical/k8s-snap/sig-storage/csi-node-driver-registrar:v2.13.0",
            &csi_bytes,
        ),
    ] {
        let raw = skopeo_raw(work.path(), &format!("{}/{image}", s.host()), None);
        assert_eq!(&raw, bytes, "{image}");
    }
    // The busybox index names an arm64 child the cache leaves out: copy the amd64 one.
    let (top, blobs) = copy_to_layout(
        work.path(),
        &format!("docker://{}/busybox:latest", s.host()),
        &work.path().join("busybox"),
        &["--override-os", "linux", "--override-arch", "amd64"],
    );
    let amd64 = "e4c93b6652038c1579f2b36f2cb825ee2005cf65deaa0c741ec17ab074b29662";
    let index: serde_json::Value = serde_json::from_slice(&busybox).unwrap();
    assert!(
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["digest"] == format!("sha256:{amd64}")
                && m["platform"]["architecture"] == "amd64"),
        "the fixture changed"
    );
    assert_eq!(top, format!("sha256:{amd64}"));
    for blob in &blobs {
        assert!(
            blob == amd64 || root.join(format!("blob/sha256-{blob}")).is_file(),
            "{blob} is not from the cache"
        );
    }
    let (top, _) = copy_to_layout(
        work.path(),
        &format!("docker://{}/{csi}:v2.13.0", s.host()),
        &work.path().join("csi"),
        &["--all"],
    );
    assert_eq!(top, format!("sha256:{}", sha256_hex(&csi_bytes)));
}

/// A cache made by `cache create` from a registry (Debian's docker-registry), served in `form`:
/// skopeo gets from the server the manifests and digests the registry gave.
pub fn skopeo_gets_what_the_upstream_registry_served(form: Form) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let registry = Registry::start(RegistryOptions::default());
    let host = registry.host();
    let (a, b) = two_images_sharing_a_layer();
    push_image(w, &host, "test/a", "v1", &a, None);
    push_image(w, &host, "test/b", "v1", &b, None);
    push_index(
        w,
        &host,
        "test/multi",
        "v1",
        &[test_image("amd64", 64 << 10), test_image("arm64", 64 << 10)],
    );
    let images = ["test/a:v1", "test/b:v1", "test/multi:v1"];

    // The cache, made by `cache create` from that registry (all platforms, flat tree).
    let cache = w.join("cache");
    let mut o = CreateOptions::new(
        cache.clone(),
        images
            .iter()
            .map(|i| Reference::parse(&format!("{host}/{i}")).unwrap())
            .collect(),
    );
    o.platforms = PlatformSelection::parse(["all"]).unwrap();
    o.layout = OutputLayout::Flat;
    o.client = ClientConfig {
        insecure: true,
        docker_config: DockerConfigSource::None,
        retry: fast_retry(),
        ..ClientConfig::default()
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(imager_cache::create(&o))
        .unwrap();

    let s = TestServer::start_roots(vec![form.root(&cache, &w.join("forms"))]);
    for i in images {
        let upstream = skopeo_raw(w, &format!("{host}/{i}"), None);
        // No ns: the registry is found under manifests/ (`127.0.0.1_PORT_`).
        let ours = skopeo_raw(w, &format!("{}/{i}", s.host()), None);
        assert_eq!(ours, upstream, "{i}");
        let tag = i.replace([':', '/'], "-");
        let from_upstream = copy_to_layout(
            w,
            &format!("docker://{host}/{i}"),
            &w.join(format!("up-{tag}")),
            &["--all"],
        );
        let from_ours = copy_to_layout(
            w,
            &format!("docker://{}/{i}", s.host()),
            &w.join(format!("ours-{tag}")),
            &["--all"],
        );
        assert_eq!(from_ours, from_upstream, "{i}");
    }
}
