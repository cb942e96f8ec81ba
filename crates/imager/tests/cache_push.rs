//! `imager cache push` and `imager cache export` as users run them: a cache made by `cache create`
//! pushed into an empty docker-registry (plain HTTP, then TLS with our CA and basic auth), read
//! back by skopeo byte for byte, a second push sending no blob, two registries with one
//! repository path refused unless kept apart, and exported archives: their layout, and a private
//! containerd importing them (`ctr images import`) and running the busybox they hold.

// Test code: a panic with its message is how a failure is reported.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use imager_registry::testing::proxy::FaultProxy;
use imager_registry::testing::tls::{basic_auth_entry, docker_config, htpasswd, make_pki};
use imager_registry::testing::{
    Registry, RegistryOptions, push_image, push_index, skopeo, skopeo_raw, test_image,
};

fn imager(args: &[&str], env_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imager"))
        .args(args)
        .env("DOCKER_CONFIG", env_dir)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A flat cache of `images` (`repo:tag` under `host`), made by `imager cache create`.
fn create(work: &Path, name: &str, refs: &[String]) -> std::path::PathBuf {
    let out = work.join(name);
    let list = refs.join(",");
    let o = imager(
        &[
            "cache",
            "create",
            "--image-cache-path",
            out.to_str().unwrap(),
            "--images",
            &list,
            "--platform",
            "all",
            "--layout",
            "flat",
            "--insecure",
        ],
        work,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    out
}

fn uploads(proxy: &FaultProxy) -> usize {
    proxy
        .seen()
        .iter()
        .filter(|s| s.path.contains("/blobs/uploads/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_byte_exact_rerun_uploads_nothing_and_mirror_config() {
    let work = tempfile::tempdir().unwrap();
    let source = Registry::start(RegistryOptions::default());
    let src = source.host();
    let single = test_image("amd64", 200 << 10);
    push_image(work.path(), &src, "test/one", "v1", &single, None);
    let multi = [test_image("amd64", 64 << 10), test_image("arm64", 64 << 10)];
    let index = push_index(work.path(), &src, "test/multi", "v2", &multi);
    let cache = create(
        work.path(),
        "cache",
        &[format!("{src}/test/one:v1"), format!("{src}/test/multi:v2")],
    );

    let dest = Registry::start(RegistryOptions::default());
    let proxy = FaultProxy::start(dest.addr).await;
    let host = proxy.host();
    let config_dir = work.path().join("mirrors");
    let o = imager(
        &[
            "cache",
            "push",
            cache.to_str().unwrap(),
            &format!("{host}/fleet"),
            "--insecure",
            "--jobs",
            "3",
            "--write-config",
            config_dir.to_str().unwrap(),
        ],
        work.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stderr = text(&o.stderr);
    assert!(
        stderr.contains(&format!(
            "pushed {src}/test/one:v1 -> {host}/fleet/test/one:v1"
        )),
        "{stderr}"
    );
    // Every image reads back byte-exact, the index and each child.
    assert_eq!(
        skopeo_raw(work.path(), &format!("{host}/fleet/test/one:v1"), None),
        single.manifest.bytes
    );
    assert_eq!(
        skopeo_raw(work.path(), &format!("{host}/fleet/test/multi:v2"), None),
        index.bytes
    );
    for child in &multi {
        assert_eq!(
            skopeo_raw(
                work.path(),
                &format!("{host}/fleet/test/multi@{}", child.manifest.digest),
                None
            ),
            child.manifest.bytes
        );
    }
    // skopeo copy --all back out: the same blobs.
    let back = work.path().join("back");
    skopeo(
        work.path(),
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{host}/fleet/test/multi:v2"),
            &format!("oci:{}:x", back.display()),
        ],
    );
    for image in &multi {
        for b in image.blobs() {
            let path = back.join("blobs/sha256").join(&b.digest["sha256:".len()..]);
            assert_eq!(std::fs::read(&path).unwrap(), b.bytes, "{}", b.digest);
        }
    }
    // The mirror configuration, under the path prefix.
    let hosts = std::fs::read_to_string(config_dir.join(&src).join("hosts.toml")).unwrap();
    assert!(
        hosts.contains(&format!("[host.\"http://{host}/v2/fleet\"]")),
        "{hosts}"
    );
    assert!(hosts.contains("override_path = true"), "{hosts}");
    assert!(config_dir.join("talos-registry-mirrors.yaml").is_file());

    // Again: no upload request at all.
    let before = uploads(&proxy);
    assert!(before > 0);
    let o = imager(
        &[
            "cache",
            "push",
            cache.to_str().unwrap(),
            &format!("{host}/fleet"),
            "--insecure",
        ],
        work.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(uploads(&proxy), before, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("0 blobs uploaded"),
        "{}",
        text(&o.stderr)
    );
    // Printed, not written: hosts.toml and the patch on stdout.
    assert!(text(&o.stdout).contains("kind: RegistryMirrorConfig"));

    // Export: an OCI archive naming the images by their original references.
    let tarball = work.path().join("out.tar");
    let o = imager(
        &[
            "cache",
            "export",
            cache.to_str().unwrap(),
            &format!("{src}/test/multi:v2"),
            "--output",
            tarball.to_str().unwrap(),
        ],
        work.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut names = std::collections::HashMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&tarball).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        names.insert(e.path().unwrap().display().to_string(), bytes);
    }
    let index_json: serde_json::Value = serde_json::from_slice(&names["index.json"]).unwrap();
    assert_eq!(index_json["manifests"][0]["digest"], index.digest);
    assert_eq!(
        index_json["manifests"][0]["annotations"]["io.containerd.image.name"],
        format!("{src}/test/multi:v2")
    );
    assert_eq!(
        names[&format!("blobs/sha256/{}", &index.digest["sha256:".len()..])],
        index.bytes
    );
    for image in &multi {
        for b in image.blobs().chain([&image.manifest]) {
            assert_eq!(
                names[&format!("blobs/sha256/{}", &b.digest["sha256:".len()..])],
                b.bytes
            );
        }
    }
}

#[test]
fn push_over_tls_with_basic_auth() {
    let work = tempfile::tempdir().unwrap();
    let source = Registry::start(RegistryOptions::default());
    let src = source.host();
    let image = test_image("amd64", 100 << 10);
    push_image(work.path(), &src, "test/one", "v1", &image, None);
    let cache = create(work.path(), "cache", &[format!("{src}/test/one:v1")]);
    let pki = make_pki(work.path());
    let dest = Registry::start(RegistryOptions {
        tls: Some((pki.cert.clone(), pki.key.clone())),
        htpasswd: Some(htpasswd(work.path(), "pusher", "s3cret")),
        token: None,
    });
    let host = dest.host();
    let creds = work.path().join("creds");
    docker_config(
        &creds,
        &serde_json::json!({"auths": {host.clone(): basic_auth_entry("pusher", "s3cret")}}),
    );
    // Without the CA: refused, naming the image.
    let o = imager(&["cache", "push", cache.to_str().unwrap(), &host], &creds);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("test/one"), "{}", text(&o.stderr));
    // Without credentials: refused with the registry's word.
    let o = imager(
        &[
            "cache",
            "push",
            cache.to_str().unwrap(),
            &host,
            "--ca-file",
            pki.ca.to_str().unwrap(),
        ],
        work.path(),
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("unauthorized"),
        "{}",
        text(&o.stderr)
    );
    let o = imager(
        &[
            "cache",
            "push",
            cache.to_str().unwrap(),
            &host,
            "--ca-file",
            pki.ca.to_str().unwrap(),
        ],
        &creds,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        skopeo_raw(
            work.path(),
            &format!("{host}/test/one:v1"),
            Some("pusher:s3cret")
        ),
        image.manifest.bytes
    );
}

#[test]
fn one_repository_path_from_two_registries_is_refused_unless_kept() {
    let work = tempfile::tempdir().unwrap();
    let a = Registry::start(RegistryOptions::default());
    let b = Registry::start(RegistryOptions::default());
    push_image(
        work.path(),
        &a.host(),
        "org/app",
        "v1",
        &test_image("amd64", 16 << 10),
        None,
    );
    push_image(
        work.path(),
        &b.host(),
        "org/app",
        "v1",
        &test_image("arm64", 16 << 10),
        None,
    );
    let cache = create(
        work.path(),
        "cache",
        &[
            format!("{}/org/app:v1", a.host()),
            format!("{}/org/app:v1", b.host()),
        ],
    );
    let dest = Registry::start(RegistryOptions::default());
    let host = dest.host();
    let o = imager(
        &[
            "cache",
            "push",
            cache.to_str().unwrap(),
            &host,
            "--insecure",
        ],
        work.path(),
    );
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("{}/org/app", a.host()))
            && err.contains(&format!("{}/org/app", b.host()))
            && err.contains("--keep-registry"),
        "{err}"
    );
    let o = imager(
        &[
            "cache",
            "push",
            cache.to_str().unwrap(),
            &host,
            "--insecure",
            "--keep-registry",
        ],
        work.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let kept = format!("{host}/{}/org/app:v1", a.host().replace(':', "-"));
    assert!(!skopeo_raw(work.path(), &kept, None).is_empty());
}

/// Every entry of a tar, by path.
fn tar_entries(path: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    let mut names = std::collections::HashMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        names.insert(e.path().unwrap().display().to_string(), bytes);
    }
    names
}

/// The side-loading path with the real client: a runnable busybox, cached by `cache create` and
/// exported in both formats, is imported by a private containerd (`ctr images import`), listed
/// under its original reference, and run (`ctr run` prints `ok`).
#[test]
fn exported_archives_import_into_containerd_and_run() {
    use imager_registry::testing::containerd::{Containerd, busybox_image, tail};
    use std::time::Duration;

    let containerd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    let source = Registry::start(RegistryOptions::default());
    let src = source.host();
    let busybox = busybox_image();
    push_image(work.path(), &src, "library/busybox", "ok", &busybox, None);
    let reference = format!("{src}/library/busybox:ok");
    let cache = create(work.path(), "cache", std::slice::from_ref(&reference));

    let blob = |d: &str| format!("blobs/sha256/{}", &d["sha256:".len()..]);
    // Imports `archive`, checks `ctr image ls` names `reference` with `digest`, runs it.
    let import_and_run = |archive: &Path, digest: &str, run: &str| {
        let out = containerd.ctr_ok(
            &["images", "import", archive.to_str().unwrap()],
            Duration::from_secs(60),
        );
        assert!(out.contains(&reference), "ctr images import: {out}");
        let listed = containerd.ctr_ok(&["image", "ls"], Duration::from_secs(20));
        let line = listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(reference.as_str()))
            .unwrap_or_else(|| panic!("{reference} not in `ctr image ls`:\n{listed}"));
        assert!(line.contains(digest), "{reference}: {line}");
        // runc keeps container state by namespace and id whichever containerd runs it: tests
        // running at once need ids of their own.
        let id = format!("imager-export-{run}-{}", std::process::id());
        let out = containerd.ctr(&["run", "--rm", &reference, &id], Duration::from_secs(60));
        assert!(
            out.status.success(),
            "ctr run: {}\n{}\ncontainerd log (tail):\n{}",
            out.status,
            text(&out.stderr),
            tail(&containerd.log(), 30)
        );
        assert_eq!(text(&out.stdout), "ok\n");
        containerd.ctr_ok(&["images", "rm", &reference], Duration::from_secs(20));
    };

    // oci-archive: the manifest's own digest.
    let oci = work.path().join("busybox.oci.tar");
    let o = imager(
        &[
            "cache",
            "export",
            cache.to_str().unwrap(),
            &reference,
            "--output",
            oci.to_str().unwrap(),
        ],
        work.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    import_and_run(&oci, &busybox.manifest.digest, "oci");

    // docker-archive: `manifest.json` as `docker load` reads it, every path it names present
    // with the cache's bytes.
    let docker = work.path().join("busybox.docker.tar");
    let o = imager(
        &[
            "cache",
            "export",
            cache.to_str().unwrap(),
            &reference,
            "--output",
            docker.to_str().unwrap(),
            "--format",
            "docker-archive",
        ],
        work.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let names = tar_entries(&docker);
    let manifest: serde_json::Value = serde_json::from_slice(&names["manifest.json"]).unwrap();
    let layers: Vec<String> = busybox.layers.iter().map(|l| blob(&l.digest)).collect();
    assert_eq!(
        manifest,
        serde_json::json!([{
            "Config": blob(&busybox.config.digest),
            "RepoTags": [reference],
            "Layers": layers,
        }])
    );
    for b in busybox.blobs() {
        assert_eq!(names[&blob(&b.digest)], b.bytes, "{}", b.digest);
    }
    import_and_run(&docker, &busybox.manifest.digest, "docker");
}
